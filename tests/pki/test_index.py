"""certsrv.pki.index: names, serial numbers and revocation reasons as the index records them."""

from __future__ import annotations

from cryptography import x509
from twisted.trial.unittest import SynchronousTestCase

from certsrv.pki.index import parse_reason, parse_serial, serial_hex, validate_name


class ParsingTests(SynchronousTestCase):
    """What users type is checked before anything touches the index."""

    def test_names(self) -> None:
        for good in ("alice", "web-1", "a.b_c"):
            self.assertEqual(validate_name(good), good)
        for bad in ("", "../ca", ".hidden", "a/b", "x" * 65, "caf\u00e9"):
            self.assertRaises(ValueError, validate_name, bad)

    def test_serials_round_trip(self) -> None:
        self.assertEqual(parse_serial("0x0A:FF"), 0x0AFF)
        self.assertEqual(serial_hex(0xAFF), "0AFF")  # OpenSSL's even number of digits
        for serial in (1, 0xFF, 0x1234567, 2**159 - 1):
            self.assertEqual(parse_serial(serial_hex(serial)), serial)
        for bad in ("", "0x", "xyz", "12 34"):
            self.assertRaises(ValueError, parse_serial, bad)

    def test_reasons(self) -> None:
        self.assertIs(parse_reason("KeyCompromise"), x509.ReasonFlags.key_compromise)
        self.assertIs(parse_reason(x509.ReasonFlags.superseded), x509.ReasonFlags.superseded)
        error = self.assertRaises(ValueError, parse_reason, "because")
        self.assertIn("keyCompromise", str(error))
