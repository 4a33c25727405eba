"""RFC 5280 6.3.3 per CRL: scopes, reasons, deltas and indirect entries, on generated CRLs."""

from __future__ import annotations

import datetime
from functools import cache

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from certsrv.revocation.crlscope import (
    ALL_REASONS,
    CertFacts,
    IndexedCRL,
    delta_fits,
    interim_reasons,
    listing,
    revocation_detail,
    unusable,
)
from certsrv.testing import CertificateFactory
from certsrv.x509.names import canonical_der

R = x509.ReasonFlags
COMPROMISE = frozenset({R.key_compromise, R.ca_compromise})


@cache
def ca() -> CertificateFactory:
    """One CA for every test here."""
    return CertificateFactory.create("crlscope CA")


@cache
def other() -> CertificateFactory:
    """A second CA: the issuer of indirect CRLs."""
    return CertificateFactory.create("crlscope CRL issuer")


def name(text: str) -> x509.Name:
    """A one-CN name."""
    return x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, text)])


def point(*, full: str | None = None, relative: str | None = None,
          crl_issuer: x509.Name | None = None,
          reasons: frozenset[x509.ReasonFlags] | None = None) -> x509.DistributionPoint:
    """A distribution point naming a directory name, an RDN, or only its CRL issuer."""
    return x509.DistributionPoint(
        [x509.DirectoryName(name(full))] if full else None,
        x509.RelativeDistinguishedName([x509.NameAttribute(x509.NameOID.COMMON_NAME,
                                                           relative)]) if relative else None,
        reasons, [x509.DirectoryName(crl_issuer)] if crl_issuer else None)


def client(*points: x509.DistributionPoint, serial: int | None = None) -> CertFacts:
    """A client certificate of ``ca()`` with these CRL distribution points, as read."""
    extensions = ((x509.CRLDistributionPoints(list(points)), False),) if points else ()
    return CertFacts.of(
        ca().client("scoped", serial_number=serial, extensions=extensions).certificate)


def idp(*, full: str | None = None, relative: str | None = None, indirect: bool = False,
        reasons: frozenset[x509.ReasonFlags] | None = None, users: bool = False,
        cas: bool = False) -> x509.IssuingDistributionPoint:
    """An issuing distribution point."""
    return x509.IssuingDistributionPoint(
        [x509.DirectoryName(name(full))] if full else None,
        x509.RelativeDistinguishedName([x509.NameAttribute(x509.NameOID.COMMON_NAME,
                                                           relative)]) if relative else None,
        users, cas, reasons, indirect, False)


class ScopeTests(SynchronousTestCase):
    """Whether a CRL covers a certificate, and for which reasons (6.3.3 (b), (d))."""

    def test_plain_crl_covers_everything_of_its_issuer(self) -> None:
        crl = IndexedCRL.index(ca().scoped_crl())
        self.assertEqual(interim_reasons(crl, client()), ALL_REASONS)
        self.assertEqual(interim_reasons(crl, client(point(full="anywhere"))), ALL_REASONS)
        self.assertIsNone(interim_reasons(IndexedCRL.index(other().scoped_crl()), client()))

    def test_distribution_point_names_must_match(self) -> None:
        crl = IndexedCRL.index(ca().scoped_crl(idp=idp(full="CRL1")))
        self.assertEqual(interim_reasons(crl, client(point(full="CRL1"))), ALL_REASONS)
        self.assertIsNone(interim_reasons(crl, client(point(full="CRL2"))))
        self.assertIsNone(interim_reasons(crl, client()), "no DP: not in a partitioned CRL")

    def test_relative_names_are_relative_to_the_crl_issuer(self) -> None:
        relative = IndexedCRL.index(ca().scoped_crl(idp=idp(relative="part 1")))
        self.assertEqual(interim_reasons(relative, client(point(relative="part 1"))),
                         ALL_REASONS)
        self.assertIsNone(interim_reasons(relative, client(point(relative="part 2"))))
        full = x509.Name([*ca().certificate.subject.rdns, x509.RelativeDistinguishedName(
            [x509.NameAttribute(x509.NameOID.COMMON_NAME, "part 1")])])
        cert = client(x509.DistributionPoint([x509.DirectoryName(full)], None, None, None))
        self.assertEqual(interim_reasons(relative, cert), ALL_REASONS)

    def test_user_and_ca_only(self) -> None:
        users = IndexedCRL.index(ca().scoped_crl(idp=idp(users=True)))
        cas = IndexedCRL.index(ca().scoped_crl(idp=idp(cas=True)))
        self.assertEqual(interim_reasons(users, client()), ALL_REASONS)
        self.assertIsNone(interim_reasons(cas, client()))
        sub = CertFacts.of(ca().intermediate("crlscope sub CA").certificate)
        self.assertIsNone(interim_reasons(users, sub))
        self.assertEqual(interim_reasons(cas, sub), ALL_REASONS)

    def test_some_reasons_intersect(self) -> None:
        crl = IndexedCRL.index(ca().scoped_crl(idp=idp(reasons=COMPROMISE)))
        self.assertEqual(interim_reasons(crl, client()), COMPROMISE)
        cert = client(point(full="x", reasons=frozenset({R.key_compromise, R.superseded})))
        self.assertEqual(interim_reasons(crl, cert), {R.key_compromise})
        cert = client(point(full="x", reasons=frozenset({R.superseded})))
        self.assertIsNone(interim_reasons(crl, cert))

    def test_indirect_crl_needs_the_crl_issuer_named(self) -> None:
        indirect = IndexedCRL.index(other().scoped_crl(idp=idp(indirect=True)))
        issuer = other().certificate.subject
        self.assertEqual(interim_reasons(indirect, client(point(crl_issuer=issuer))),
                         ALL_REASONS)
        self.assertIsNone(interim_reasons(indirect, client()))
        self.assertIsNone(interim_reasons(indirect, client(point(crl_issuer=name("x")))))
        direct = IndexedCRL.index(other().scoped_crl())
        self.assertIsNone(interim_reasons(direct, client(point(crl_issuer=issuer))),
                          "a CRL without indirectCRL speaks for its issuer only")

    def test_attribute_certificate_crls_and_unknown_critical_extensions(self) -> None:
        attributes = x509.IssuingDistributionPoint(None, None, False, False, None, False, True)
        self.assertEqual(unusable(ca().scoped_crl(idp=attributes)),
                         "a CRL for attribute certificates")
        self.assertIsNone(unusable(ca().scoped_crl(idp=idp(indirect=True))))


    def test_unknown_critical_entry_extension(self) -> None:
        """An entry with an unknown critical extension voids the CRL (PKITS 4.4.8); known
        critical ones (certificateIssuer) and non-critical ones do not."""
        def crl_with(critical: bool) -> x509.CertificateRevocationList:
            now = datetime.datetime.now(datetime.UTC)
            entry = (x509.RevokedCertificateBuilder().serial_number(7).revocation_date(now)
                     .add_extension(x509.UnrecognizedExtension(
                         x509.ObjectIdentifier("1.3.6.1.4.1.99999.1"), b"\x05\x00"),
                         critical).build())
            return (x509.CertificateRevocationListBuilder()
                    .issuer_name(ca().certificate.subject).last_update(now)
                    .next_update(now + datetime.timedelta(days=1))
                    .add_revoked_certificate(entry)
                    .sign(ca().private_key, hashes.SHA256()))
        self.assertEqual(unusable(crl_with(True)), "an entry with the unknown critical "
                                                   "extension 1.3.6.1.4.1.99999.1")
        self.assertIsNone(unusable(crl_with(False)))
        self.assertIsNone(unusable(other().scoped_crl(
            [(1, R.key_compromise, ca().certificate.subject)] * 3, idp=idp(indirect=True))))


class DeltaTests(SynchronousTestCase):
    """Deltas update the complete CRL they name (5.2.4, 6.3.3 (c), (i))."""

    def test_delta_fits_only_its_base(self) -> None:
        base = IndexedCRL.index(ca().scoped_crl(number=5))
        self.assertTrue(delta_fits(base, IndexedCRL.index(ca().scoped_crl(number=6,
                                                                           delta_of=5))))
        self.assertTrue(delta_fits(base, IndexedCRL.index(ca().scoped_crl(number=7,
                                                                           delta_of=3))))
        for delta in (ca().scoped_crl(number=7, delta_of=6),  # needs a newer base
                      ca().scoped_crl(number=5, delta_of=5),  # not newer than the base
                      ca().scoped_crl(number=6, delta_of=5, idp=idp(users=True)),
                      other().scoped_crl(number=6, delta_of=5)):
            self.assertFalse(delta_fits(base, IndexedCRL.index(delta)), delta.extensions)
        self.assertFalse(delta_fits(IndexedCRL.index(ca().scoped_crl(number=6, delta_of=5)),
                                    IndexedCRL.index(ca().scoped_crl(number=7, delta_of=5))))

    def test_delta_without_number_fits_no_base(self) -> None:
        """A delta CRL without a CRL number cannot be shown newer than a base: an old one
        (on disk, or replayed at a freshestCRL URL) would lift a later base's hold."""
        held = client(serial=21)
        base = IndexedCRL.index(ca().scoped_crl([(held.serial, R.certificate_hold, None)],
                                                number=3))
        now = datetime.datetime.now(datetime.UTC)
        entry = (x509.RevokedCertificateBuilder().serial_number(held.serial)
                 .revocation_date(now).add_extension(x509.CRLReason(R.remove_from_crl), False)
                 .build())
        unnumbered = (x509.CertificateRevocationListBuilder()
                      .issuer_name(ca().certificate.subject).last_update(now)
                      .next_update(now + datetime.timedelta(days=1))
                      .add_extension(x509.DeltaCRLIndicator(1), True)
                      .add_revoked_certificate(entry).sign(ca().private_key, hashes.SHA256()))
        delta = IndexedCRL.index(unnumbered)
        self.assertTrue(delta.is_delta)
        self.assertFalse(delta_fits(base, delta))
        self.assertTrue(listing(base, None, held))

    def test_remove_from_crl_lifts_a_hold_and_the_delta_revokes(self) -> None:
        held, fresh, kept = client(serial=11), client(serial=12), client(serial=13)
        base = IndexedCRL.index(ca().scoped_crl(
            [(held.serial, R.certificate_hold, None), (kept.serial, R.key_compromise, None)],
            number=1))
        delta = IndexedCRL.index(ca().scoped_crl(
            [(held.serial, R.remove_from_crl, None), (fresh.serial, R.key_compromise, None)],
            number=2, delta_of=1))
        self.assertTrue(listing(base, None, held))
        self.assertFalse(listing(base, delta, held))
        self.assertFalse(listing(base, None, fresh))
        self.assertTrue(listing(base, delta, fresh))
        self.assertTrue(listing(base, delta, kept))
        self.assertEqual(revocation_detail(delta.crl, 12), "revoked (keyCompromise)")


# One entry of an indirect CRL: a serial number and, maybe, a new certificateIssuer.
_ENTRIES = st.lists(st.tuples(st.integers(1, 40), st.sampled_from([None, "ca", "other"])),
                    max_size=12, unique_by=lambda e: e[0])


class IndirectTests(SynchronousTestCase):
    """An indirect CRL's entries belong to the last certificateIssuer named (5.3.3)."""

    @settings(max_examples=25, deadline=None)
    @given(_ENTRIES)
    def test_certificate_issuer_carries_forward(
            self, entries: list[tuple[int, str | None]]) -> None:
        issuers = {"ca": ca().certificate.subject, "other": other().certificate.subject}
        crl = IndexedCRL.index(other().scoped_crl(
            [(serial, R.key_compromise, issuers[who] if who else None)
             for serial, who in entries], idp=idp(indirect=True)))
        owner = "other"
        expected: dict[str, set[int]] = {"ca": set(), "other": set()}
        for serial, who in entries:
            owner = who or owner
            expected[owner].add(serial)
        self.assertEqual({who: set(crl.revoked.get(canonical_der(issuers[who]), ()))
                          for who in issuers}, expected)

    def test_a_direct_crl_ignores_certificate_issuer(self) -> None:
        crl = IndexedCRL.index(ca().scoped_crl(
            [(3, R.key_compromise, other().certificate.subject)]))
        self.assertEqual(crl.revoked, {canonical_der(ca().certificate.subject): {3}})
