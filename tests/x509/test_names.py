"""certsrv.x509.names: distinguished names compared as RFC 5280 §7.1 asks."""

from __future__ import annotations

import re
import string

from cryptography import x509
from cryptography.x509.oid import NameOID
from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from certsrv.x509.names import canonical, canonical_der, canonical_general


def _name(common_name: str, organization: str = "Test Certificates 2011") -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


_TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")),
                min_size=1, max_size=20).filter(lambda t: t.strip())


class CanonicalTests(SynchronousTestCase):
    """Case and runs of spaces do not tell names apart; values do (string types: PKITS 4.3.10
    in tests/e2e/test_pkits.py)."""

    def test_case_and_spaces(self) -> None:
        self.assertEqual(canonical_der(_name("Good     CA", " Test  Certificates 2011 ")),
                         canonical_der(_name("good ca")))

    def test_different_values_stay_different(self) -> None:
        self.assertNotEqual(canonical_der(_name("Good CA")), canonical_der(_name("Good CA2")))
        self.assertNotEqual(canonical_der(_name("Good CA")), canonical_der(_name("GoodCA")))

    def test_order_of_attributes_matters(self) -> None:
        name = _name("a")
        self.assertNotEqual(canonical(name), canonical(x509.Name(list(reversed(name.rdns)))))

    def test_directory_names_only(self) -> None:
        dns = x509.DNSName("Example.COM")
        self.assertIs(canonical_general(dns), dns)
        self.assertEqual(canonical_general(x509.DirectoryName(_name("GOOD CA"))),
                         x509.DirectoryName(canonical(_name("good ca"))))

    def test_unicode_is_not_folded(self) -> None:
        """Only ASCII case and spaces, as OpenSSL: the Kelvin sign is not "k", nor U+00A0 a
        space, so two CAs cannot be made to share a name that way."""
        self.assertNotEqual(canonical_der(_name("\u212aey CA")), canonical_der(_name("key ca")))
        self.assertNotEqual(canonical_der(_name("Good\u00a0CA")), canonical_der(_name("good ca")))
        self.assertNotEqual(canonical_der(_name("ÉCOLE CA")), canonical_der(_name("école ca")))
        self.assertEqual(canonical_der(_name("ÉCOLE CA")), canonical_der(_name("École ca")))

    @given(_TEXT, st.sampled_from(["upper", "lower"]), st.integers(1, 4))
    def test_ascii_variants_match(self, text: str, case: str, spaces: int) -> None:
        """Any ASCII case change and any run of ASCII spaces between words: the same name."""
        ascii_case = str.maketrans(string.ascii_lowercase, string.ascii_uppercase) \
            if case == "upper" else str.maketrans(string.ascii_uppercase,
                                                  string.ascii_lowercase)
        words = re.split(r"[ \t\n\r\f\v]+", text.strip(" \t\n\r\f\v"))
        variant = "\t" + (" " * spaces).join(words).translate(ascii_case) + "  "
        self.assertEqual(canonical_der(_name(text)), canonical_der(_name(variant)))

    @given(_TEXT)
    def test_idempotent(self, text: str) -> None:
        once = canonical(_name(text))
        self.assertEqual(canonical(once).public_bytes(), once.public_bytes())
