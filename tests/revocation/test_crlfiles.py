"""Revocation by CRL: in the handshake, with fail-closed/open, and reloaded while running."""

from __future__ import annotations

import datetime
import os
import signal
import sys
from collections.abc import Callable, Sequence
from functools import cache
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.serialization import Encoding, pkcs12
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import defer, reactor
from twisted.internet.task import Clock
from twisted.logger import Logger
from twisted.trial.unittest import SynchronousTestCase, TestCase

from certsrv.exceptions import ConfigurationError, Reason, RejectedCertificate
from certsrv.pki import CertificateAuthority, IssuedCertificate
from certsrv.revocation.crlfiles import CRLFiles, load_crl_files
from certsrv.revocation.decision import Revocation, Scope, Status, Verdict
from certsrv.server.config import ServerConfig
from certsrv.testing import CertificateFactory
from tests._servers import Collect as _Collect
from tests._servers import run
from tests._support import (
    DAY,
    captured_events,
    client_tls_options,
    clock_at_now,
    crl_pem,
    exchange,
    make_server_factory,
    shared_pki,
    utcnow,
    write_pem,
)


@cache
def _scoped_crl_der() -> bytes:
    """An indirect CRL of the shared root (signed once: hypothesis needs the same bytes)."""
    return CertificateFactory.wrap(shared_pki().root).scoped_crl(
        [(5, x509.ReasonFlags.key_compromise, None)], number=3,
        idp=x509.IssuingDistributionPoint(None, None, False, False, None, True, False),
    ).public_bytes(Encoding.DER)


class CRLHandshakeTests(SynchronousTestCase):
    """A CRL in the trust store decides inside the handshake."""

    def setUp(self) -> None:
        self.pki = shared_pki()
        self.dir = self.mktemp()
        self.ca = write_pem(self.dir, "ca.pem", self.pki.root.certificate_pem())
        self.inter = write_pem(self.dir, "inter.pem", self.pki.intermediate.certificate_pem())
        self.cert = write_pem(self.dir, "server.pem", self.pki.server.chain_pem())
        self.key = write_pem(self.dir, "server.key", self.pki.server.private_key_pem(), 0o600)

    def config(self, *crls: bytes, **kwargs: Any) -> ServerConfig:
        paths = tuple(write_pem(self.dir, f"crl{i}.pem", data) for i, data in enumerate(crls))
        return ServerConfig(cert=self.cert, key=self.key, ca=(self.ca,),
                            intermediates=(self.inter,), crls=paths, **kwargs)

    def connect(self, config: ServerConfig, cert: IssuedCertificate):  # type: ignore[no-untyped-def]
        clock = clock_at_now()
        settings, verifier = config.load(clock)
        factory = make_server_factory(settings, verifier=verifier)
        with captured_events() as events:
            result = exchange(factory, client_tls_options(self.pki, cert))
        return result, [e for e in events if e.get("decision")]

    def test_revoked_rejected_good_accepted(self) -> None:
        revoked = self.pki.root.issue_client("revoked")
        config = self.config(crl_pem(self.pki.root, revoked))
        result, events = self.connect(config, revoked)
        self.assertIsNone(result.status)
        self.assertIn("certificate revoked", result.client_error)
        self.assertEqual([e["reason"] for e in events], [Reason.REVOKED.value])
        result, events = self.connect(config, self.pki.client)
        self.assertEqual(result.status, 200)

    def test_missing_crl_for_issuer_closed_and_open(self) -> None:
        """Leaf issued by the intermediate, but only the root published a CRL."""
        cert = self.pki.client_cert("via_intermediate")
        result, events = self.connect(self.config(crl_pem(self.pki.root)), cert)
        self.assertIsNone(result.status)
        self.assertEqual([e["reason"] for e in events], [Reason.CRL_UNAVAILABLE.value])
        result, events = self.connect(self.config(crl_pem(self.pki.root), fail_open=True), cert)
        self.assertEqual(result.status, 200)
        self.assertEqual([e["reason"] for e in events],
                         [None, Reason.REVOCATION_UNKNOWN.value])

    def test_expired_crl_closed_and_open(self) -> None:
        now = utcnow()
        stale = crl_pem(self.pki.root, last_update=now - 10 * DAY, next_update=now - DAY)
        with captured_events("certsrv.config") as config_events:
            result, events = self.connect(self.config(stale), self.pki.client)
        self.assertIsNone(result.status)
        self.assertEqual([e["reason"] for e in events], [Reason.CRL_EXPIRED.value])
        self.assertEqual([e["reason"] for e in config_events], ["crl_expired"])
        result, events = self.connect(self.config(stale, fail_open=True), self.pki.client)
        self.assertEqual(result.status, 200)
        self.assertEqual(events[-1]["reason"], Reason.REVOCATION_UNKNOWN.value)

    def test_expired_crl_still_revokes_listed_certificates(self) -> None:
        now = utcnow()
        revoked = self.pki.root.issue_client("revoked-stale")
        stale = crl_pem(self.pki.root, revoked, last_update=now - 10 * DAY,
                        next_update=now - DAY)
        result, events = self.connect(self.config(stale, fail_open=True), revoked)
        self.assertIsNone(result.status)
        self.assertEqual([e["reason"] for e in events], [Reason.REVOKED.value])

    def test_chain_check_covers_intermediate(self) -> None:
        cert = self.pki.client_cert("via_intermediate")
        root_crl = crl_pem(self.pki.root, self.pki.intermediate.certificate)
        inter_crl = crl_pem(self.pki.intermediate)
        result, _ = self.connect(self.config(root_crl, inter_crl), cert)
        self.assertEqual(result.status, 200, "leaf mode only looks at the leaf's issuer")
        result, events = self.connect(self.config(root_crl, inter_crl, crl_check_chain=True),
                                      cert)
        self.assertIsNone(result.status)
        self.assertEqual([e["reason"] for e in events], [Reason.REVOKED.value])
        self.assertEqual(events[0]["depth"], 1)

    def test_bad_crl_signature_refused(self) -> None:
        forged = CertificateAuthority.load(
            self.pki.root.certificate, self.pki.root.private_key)
        impostor = CertificateAuthority.create("Test Root CA", organization="certsrv")
        object.__setattr__(forged, "private_key", impostor.private_key)
        config = self.config(crl_pem(forged))
        error = self.assertRaises(ConfigurationError, config.load, clock_at_now())
        self.assertIn("signature does not verify", str(error))

    def test_crl_of_unknown_issuer_ignored(self) -> None:
        """An extra CRL from an issuer certsrv does not trust is ignored with a warning
        (PKITS 4.4.7); the trusted CA's own CRL still decides."""
        revoked = self.pki.root.issue_client("revoked-with-extra")
        config = self.config(crl_pem(self.pki.other_root), crl_pem(self.pki.root, revoked))
        with captured_events("certsrv.config") as warnings:
            config.load(clock_at_now())
        self.assertEqual([e["reason"] for e in warnings], ["crl_unknown_issuer"])
        result, events = self.connect(config, revoked)
        self.assertIn("certificate revoked", result.client_error)
        self.assertEqual(self.connect(config, self.pki.client)[0].status, 200)

    def test_crl_of_an_intermediate_the_client_sends(self) -> None:
        """A CRL signed by an intermediate known only from client chains (not given with
        --intermediates) applies to chains whose intermediate signed it."""
        revoked = self.pki.intermediate.issue_client("revoked-by-inter")
        good = self.pki.intermediate.issue_client("good-by-inter")
        paths = [write_pem(self.dir, "inter-crl.pem", crl_pem(self.pki.intermediate, revoked)),
                 write_pem(self.dir, "root-crl.pem", crl_pem(self.pki.root))]
        config = ServerConfig(cert=self.cert, key=self.key, ca=(self.ca,), crls=tuple(paths))
        result, events = self.connect(config, revoked)
        self.assertIn("certificate revoked", result.client_error)
        self.assertEqual(self.connect(config, good)[0].status, 200)
        # Signed by another key under the same name: it does not apply, so the intermediate
        # has no CRL (not: "good" is revoked).
        impostor = CertificateAuthority.create("Test Intermediate CA")
        write_pem(self.dir, "inter-crl.pem", crl_pem(impostor, good))
        result, events = self.connect(config, good)
        self.assertIn("certificate unknown", result.client_error)
        self.assertEqual([e["reason"] for e in events], [Reason.CRL_UNAVAILABLE.value])

    def test_delta_crl_revokes_in_the_handshake_and_when_forwarded(self) -> None:
        """A delta CRL revoking a certificate its base does not list: refused in the
        handshake (certificate_revoked) and by the forwarded-certificate path; a hold in the
        base lifted by the delta's removeFromCRL admits the client (PKITS 4.15.4, 4.15.5)."""
        root = CertificateFactory.wrap(self.pki.root)
        revoked, held = root.client("delta-revoked"), root.client("held-then-released")
        base = root.scoped_crl([(held, x509.ReasonFlags.certificate_hold, None)], number=4)
        delta = root.scoped_crl([(revoked, x509.ReasonFlags.key_compromise, None),
                                 (held, x509.ReasonFlags.remove_from_crl, None)],
                                number=5, delta_of=4)
        config = self.config(base.public_bytes(Encoding.PEM), delta.public_bytes(Encoding.PEM))
        result, events = self.connect(config, revoked)
        self.assertIn("certificate revoked", result.client_error)
        self.assertEqual([e["reason"] for e in events], [Reason.REVOKED.value])
        self.assertEqual(self.connect(config, held)[0].status, 200)
        _, verifier = config.load(clock_at_now())
        rejection = verifier.verify_chain(revoked.certificate, ())
        assert isinstance(rejection, RejectedCertificate)
        self.assertEqual(rejection.reason, Reason.REVOKED)
        self.assertIn("crl1.pem", rejection.detail)
        self.assertNotIsInstance(verifier.verify_chain(held.certificate, ()),
                                 RejectedCertificate)
        # Without its delta the base alone keeps the held certificate out.
        result, _ = self.connect(self.config(base.public_bytes(Encoding.PEM)), held)
        self.assertIn("certificate revoked", result.client_error)

    def test_delta_without_base_ignored_with_an_event(self) -> None:
        root = CertificateFactory.wrap(self.pki.root)
        revoked = root.client("delta-without-base")
        delta = root.scoped_crl([(revoked, x509.ReasonFlags.key_compromise, None)],
                                number=9, delta_of=8)
        config = self.config(crl_pem(self.pki.root), delta.public_bytes(Encoding.PEM))
        with captured_events("certsrv.config") as warnings:
            config.load(clock_at_now())
        self.assertEqual([e["reason"] for e in warnings], ["crl_delta_unmatched"])
        self.assertEqual(self.connect(config, revoked)[0].status, 200)
        # A delta alone answers nothing (PKITS 4.15.1).
        result, events = self.connect(self.config(delta.public_bytes(Encoding.PEM)),
                                      self.pki.client)
        self.assertEqual([e["reason"] for e in events], [Reason.CRL_UNAVAILABLE.value])

    def test_bad_crl_ignored_when_its_issuer_has_another(self) -> None:
        """A CRL that does not verify stops startup only when its CA is left without a
        usable CRL; beside a good one it is ignored with a warning."""
        impostor = CertificateFactory.wrap(self.pki.root)
        object.__setattr__(impostor, "private_key",
                           CertificateAuthority.create("x").private_key)
        revoked = self.pki.root.issue_client("listed-only-by-impostor")
        config = self.config(crl_pem(impostor, revoked), crl_pem(self.pki.root))
        with captured_events("certsrv.config") as warnings:
            config.load(clock_at_now())
        self.assertEqual([e["reason"] for e in warnings], ["crl_bad_signature"])
        self.assertEqual(self.connect(config, revoked)[0].status, 200)

    def test_indirect_crl_of_a_configured_crl_issuer(self) -> None:
        """A client certificate naming a cRLIssuer is judged by that issuer's indirect CRL
        (the issuer's certificate given with --intermediates, with cRLSign)."""
        root = CertificateFactory.wrap(self.pki.root)
        crl_issuer = root.intermediate("Test CRL Issuer")
        inter_path = write_pem(self.dir, "inter-and-crl-issuer.pem",
                               self.pki.intermediate.certificate_pem()
                               + crl_issuer.certificate_pem())
        points = x509.CRLDistributionPoints([x509.DistributionPoint(
            None, None, None, [x509.DirectoryName(crl_issuer.certificate.subject)])])
        revoked = root.client("indirectly-revoked", extensions=((points, False),))
        good = root.client("indirectly-good", extensions=((points, False),))
        indirect = crl_issuer.scoped_crl(
            [(revoked, x509.ReasonFlags.key_compromise, self.pki.root.certificate.subject)],
            idp=x509.IssuingDistributionPoint(None, None, False, False, None, True, False))
        paths = (write_pem(self.dir, "indirect.pem", indirect.public_bytes(Encoding.PEM)),)
        config = ServerConfig(cert=self.cert, key=self.key, ca=(self.ca,),
                              intermediates=(inter_path,), crls=paths)
        result, events = self.connect(config, revoked)
        self.assertIn("certificate revoked", result.client_error)
        self.assertEqual(self.connect(config, good)[0].status, 200)
        result, events = self.connect(config, self.pki.client)
        self.assertEqual([e["reason"] for e in events], [Reason.CRL_UNAVAILABLE.value],
                         "the indirect CRL does not cover certificates not naming it")

    @settings(max_examples=40, deadline=None)
    @given(st.data())
    def test_damaged_crl_files_never_crash_loading(self, data: st.DataObject) -> None:
        """Loading a damaged CRL file stops startup with a ConfigurationError, or the file
        loads (and then answers), never anything else."""
        der = bytearray(_scoped_crl_der())
        for _ in range(data.draw(st.integers(1, 4))):
            der[data.draw(st.integers(0, len(der) - 1))] = data.draw(st.integers(0, 255))
        path = write_pem(self.dir, "damaged.crl", bytes(der))
        try:
            crls = load_crl_files([path], [self.pki.root.certificate], [], 0.0,
                                  Logger("certsrv.test"))
        except ConfigurationError:
            return
        files = CRLFiles(crls, Scope.CHAIN, clock_at_now())
        files.lookup_until(files.pair(self.pki.client.certificate, self.pki.root.certificate))

    def test_crl_of_an_intermediate_without_a_path_loads(self) -> None:
        """An --intermediates certificate that does not chain to a --ca (another PKI's) may
        still have its CRL: only a CRL signer for others needs a path of its own."""
        orphan = CertificateFactory.wrap(self.pki.other_root).intermediate("Orphan CA")
        config = ServerConfig(
            cert=self.cert, key=self.key, ca=(self.ca,),
            intermediates=(write_pem(self.dir, "orphan.pem", orphan.certificate_pem()),),
            crls=(write_pem(self.dir, "orphan-crl.pem", crl_pem(orphan)),))
        with captured_events("certsrv.config") as warnings:
            config.load(clock_at_now())
        self.assertEqual(warnings, [])

    def test_garbage_crl_refused(self) -> None:
        config = self.config(b"-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n")
        self.assertRaises(ConfigurationError, config.load, clock_at_now())


# --- PKITS (NIST Public Key Interoperability Test Suite) at the revocation layer ---------------
# Each case: (number, expected valid, end entity, the other certificates, its CRLs besides the
# trust anchor's), from the PKITS description. Every certificate but the trust anchor is given
# as if with --intermediates; the chain is the end entity's path to the trust anchor, checked
# with --crl-check chain. A few invalid cases fail path validation, not revocation (OpenSSL's
# part): they are listed in PKITS_PATH_FAILURES and expected GOOD here.
PKITS_CRL_CASES: tuple[tuple[str, bool, str, tuple[str, ...], tuple[str, ...]], ...] = (
    ("4.4.1", False, "InvalidMissingCRLTest1EE",
     ("NoCRLCACert",),
     ()),
    ("4.4.2", False, "InvalidRevokedCATest2EE",
     ("GoodCACert", "RevokedsubCACert"),
     ("GoodCACRL", "RevokedsubCACRL")),
    ("4.4.3", False, "InvalidRevokedEETest3EE",
     ("GoodCACert",),
     ("GoodCACRL",)),
    ("4.4.4", False, "InvalidBadCRLSignatureTest4EE",
     ("BadCRLSignatureCACert",),
     ("BadCRLSignatureCACRL",)),
    ("4.4.5", False, "InvalidBadCRLIssuerNameTest5EE",
     ("BadCRLIssuerNameCACert",),
     ("BadCRLIssuerNameCACRL",)),
    ("4.4.6", False, "InvalidWrongCRLTest6EE",
     ("WrongCRLCACert",),
     ("WrongCRLCACRL",)),
    ("4.4.7", True, "ValidTwoCRLsTest7EE",
     ("TwoCRLsCACert",),
     ("TwoCRLsCAGoodCRL", "TwoCRLsCABadCRL")),
    ("4.4.8", False, "InvalidUnknownCRLEntryExtensionTest8EE",
     ("UnknownCRLEntryExtensionCACert",),
     ("UnknownCRLEntryExtensionCACRL",)),
    ("4.4.9", False, "InvalidUnknownCRLExtensionTest9EE",
     ("UnknownCRLExtensionCACert",),
     ("UnknownCRLExtensionCACRL",)),
    ("4.4.10", False, "InvalidUnknownCRLExtensionTest10EE",
     ("UnknownCRLExtensionCACert",),
     ("UnknownCRLExtensionCACRL",)),
    ("4.4.11", False, "InvalidOldCRLnextUpdateTest11EE",
     ("OldCRLnextUpdateCACert",),
     ("OldCRLnextUpdateCACRL",)),
    ("4.4.12", False, "Invalidpre2000CRLnextUpdateTest12EE",
     ("pre2000CRLnextUpdateCACert",),
     ("pre2000CRLnextUpdateCACRL",)),
    ("4.4.13", True, "ValidGeneralizedTimeCRLnextUpdateTest13EE",
     ("GeneralizedTimeCRLnextUpdateCACert",),
     ("GeneralizedTimeCRLnextUpdateCACRL",)),
    ("4.4.14", True, "ValidNegativeSerialNumberTest14EE",
     ("NegativeSerialNumberCACert",),
     ("NegativeSerialNumberCACRL",)),
    ("4.4.15", False, "InvalidNegativeSerialNumberTest15EE",
     ("NegativeSerialNumberCACert",),
     ("NegativeSerialNumberCACRL",)),
    ("4.4.16", True, "ValidLongSerialNumberTest16EE",
     ("LongSerialNumberCACert",),
     ("LongSerialNumberCACRL",)),
    ("4.4.17", True, "ValidLongSerialNumberTest17EE",
     ("LongSerialNumberCACert",),
     ("LongSerialNumberCACRL",)),
    ("4.4.18", False, "InvalidLongSerialNumberTest18EE",
     ("LongSerialNumberCACert",),
     ("LongSerialNumberCACRL",)),
    ("4.4.19", True, "ValidSeparateCertificateandCRLKeysTest19EE",
     ("SeparateCertificateandCRLKeysCertificateSigningCACert",
      "SeparateCertificateandCRLKeysCRLSigningCert"),
     ("SeparateCertificateandCRLKeysCRL",)),
    ("4.4.20", False, "InvalidSeparateCertificateandCRLKeysTest20EE",
     ("SeparateCertificateandCRLKeysCertificateSigningCACert",
      "SeparateCertificateandCRLKeysCRLSigningCert"),
     ("SeparateCertificateandCRLKeysCRL",)),
    ("4.4.21", False, "InvalidSeparateCertificateandCRLKeysTest21EE",
     ("SeparateCertificateandCRLKeysCA2CertificateSigningCACert",
      "SeparateCertificateandCRLKeysCA2CRLSigningCert"),
     ("SeparateCertificateandCRLKeysCA2CRL",)),
    ("4.5.1", True, "ValidBasicSelfIssuedOldWithNewTest1EE",
     ("BasicSelfIssuedNewKeyCACert", "BasicSelfIssuedNewKeyOldWithNewCACert"),
     ("BasicSelfIssuedNewKeyCACRL",)),
    ("4.5.2", False, "InvalidBasicSelfIssuedOldWithNewTest2EE",
     ("BasicSelfIssuedNewKeyCACert", "BasicSelfIssuedNewKeyOldWithNewCACert"),
     ("BasicSelfIssuedNewKeyCACRL",)),
    ("4.5.3", True, "ValidBasicSelfIssuedNewWithOldTest3EE",
     ("BasicSelfIssuedOldKeyCACert", "BasicSelfIssuedOldKeyNewWithOldCACert"),
     ("BasicSelfIssuedOldKeySelfIssuedCertCRL", "BasicSelfIssuedOldKeyCACRL")),
    ("4.5.4", True, "ValidBasicSelfIssuedNewWithOldTest4EE",
     ("BasicSelfIssuedOldKeyCACert", "BasicSelfIssuedOldKeyNewWithOldCACert"),
     ("BasicSelfIssuedOldKeySelfIssuedCertCRL", "BasicSelfIssuedOldKeyCACRL")),
    ("4.5.5", False, "InvalidBasicSelfIssuedNewWithOldTest5EE",
     ("BasicSelfIssuedOldKeyCACert", "BasicSelfIssuedOldKeyNewWithOldCACert"),
     ("BasicSelfIssuedOldKeySelfIssuedCertCRL", "BasicSelfIssuedOldKeyCACRL")),
    ("4.5.6", True, "ValidBasicSelfIssuedCRLSigningKeyTest6EE",
     ("BasicSelfIssuedCRLSigningKeyCACert", "BasicSelfIssuedCRLSigningKeyCRLCert"),
     ("BasicSelfIssuedCRLSigningKeyCRLCertCRL", "BasicSelfIssuedCRLSigningKeyCACRL")),
    ("4.5.7", False, "InvalidBasicSelfIssuedCRLSigningKeyTest7EE",
     ("BasicSelfIssuedCRLSigningKeyCACert", "BasicSelfIssuedCRLSigningKeyCRLCert"),
     ("BasicSelfIssuedCRLSigningKeyCRLCertCRL", "BasicSelfIssuedCRLSigningKeyCACRL")),
    ("4.5.8", False, "InvalidBasicSelfIssuedCRLSigningKeyTest8EE",
     ("BasicSelfIssuedCRLSigningKeyCACert", "BasicSelfIssuedCRLSigningKeyCRLCert"),
     ("BasicSelfIssuedCRLSigningKeyCRLCertCRL", "BasicSelfIssuedCRLSigningKeyCACRL")),
    ("4.14.1", True, "ValiddistributionPointTest1EE",
     ("distributionPoint1CACert",),
     ("distributionPoint1CACRL",)),
    ("4.14.2", False, "InvaliddistributionPointTest2EE",
     ("distributionPoint1CACert",),
     ("distributionPoint1CACRL",)),
    ("4.14.3", False, "InvaliddistributionPointTest3EE",
     ("distributionPoint1CACert",),
     ("distributionPoint1CACRL",)),
    ("4.14.4", True, "ValiddistributionPointTest4EE",
     ("distributionPoint1CACert",),
     ("distributionPoint1CACRL",)),
    ("4.14.5", True, "ValiddistributionPointTest5EE",
     ("distributionPoint2CACert",),
     ("distributionPoint2CACRL",)),
    ("4.14.6", False, "InvaliddistributionPointTest6EE",
     ("distributionPoint2CACert",),
     ("distributionPoint2CACRL",)),
    ("4.14.7", True, "ValiddistributionPointTest7EE",
     ("distributionPoint2CACert",),
     ("distributionPoint2CACRL",)),
    ("4.14.8", False, "InvaliddistributionPointTest8EE",
     ("distributionPoint2CACert",),
     ("distributionPoint2CACRL",)),
    ("4.14.9", False, "InvaliddistributionPointTest9EE",
     ("distributionPoint2CACert",),
     ("distributionPoint2CACRL",)),
    ("4.14.10", True, "ValidNoissuingDistributionPointTest10EE",
     ("NoissuingDistributionPointCACert",),
     ("NoissuingDistributionPointCACRL",)),
    ("4.14.11", False, "InvalidonlyContainsUserCertsTest11EE",
     ("onlyContainsUserCertsCACert",),
     ("onlyContainsUserCertsCACRL",)),
    ("4.14.12", False, "InvalidonlyContainsCACertsTest12EE",
     ("onlyContainsCACertsCACert",),
     ("onlyContainsCACertsCACRL",)),
    ("4.14.13", True, "ValidonlyContainsCACertsTest13EE",
     ("onlyContainsCACertsCACert",),
     ("onlyContainsCACertsCACRL",)),
    ("4.14.14", False, "InvalidonlyContainsAttributeCertsTest14EE",
     ("onlyContainsAttributeCertsCACert",),
     ("onlyContainsAttributeCertsCACRL",)),
    ("4.14.15", False, "InvalidonlySomeReasonsTest15EE",
     ("onlySomeReasonsCA1Cert",),
     ("onlySomeReasonsCA1compromiseCRL", "onlySomeReasonsCA1otherreasonsCRL")),
    ("4.14.16", False, "InvalidonlySomeReasonsTest16EE",
     ("onlySomeReasonsCA1Cert",),
     ("onlySomeReasonsCA1compromiseCRL", "onlySomeReasonsCA1otherreasonsCRL")),
    ("4.14.17", False, "InvalidonlySomeReasonsTest17EE",
     ("onlySomeReasonsCA2Cert",),
     ("onlySomeReasonsCA2CRL1", "onlySomeReasonsCA2CRL2")),
    ("4.14.18", True, "ValidonlySomeReasonsTest18EE",
     ("onlySomeReasonsCA3Cert",),
     ("onlySomeReasonsCA3compromiseCRL", "onlySomeReasonsCA3otherreasonsCRL")),
    ("4.14.19", True, "ValidonlySomeReasonsTest19EE",
     ("onlySomeReasonsCA4Cert",),
     ("onlySomeReasonsCA4compromiseCRL", "onlySomeReasonsCA4otherreasonsCRL")),
    ("4.14.20", False, "InvalidonlySomeReasonsTest20EE",
     ("onlySomeReasonsCA4Cert",),
     ("onlySomeReasonsCA4compromiseCRL", "onlySomeReasonsCA4otherreasonsCRL")),
    ("4.14.21", False, "InvalidonlySomeReasonsTest21EE",
     ("onlySomeReasonsCA4Cert",),
     ("onlySomeReasonsCA4compromiseCRL", "onlySomeReasonsCA4otherreasonsCRL")),
    ("4.14.22", True, "ValidIDPwithindirectCRLTest22EE",
     ("indirectCRLCA1Cert",),
     ("indirectCRLCA1CRL",)),
    ("4.14.23", False, "InvalidIDPwithindirectCRLTest23EE",
     ("indirectCRLCA1Cert",),
     ("indirectCRLCA1CRL",)),
    ("4.14.24", True, "ValidIDPwithindirectCRLTest24EE",
     ("indirectCRLCA2Cert", "indirectCRLCA1Cert"),
     ("indirectCRLCA1CRL",)),
    ("4.14.25", True, "ValidIDPwithindirectCRLTest25EE",
     ("indirectCRLCA2Cert", "indirectCRLCA1Cert"),
     ("indirectCRLCA1CRL",)),
    ("4.14.26", False, "InvalidIDPwithindirectCRLTest26EE",
     ("indirectCRLCA2Cert", "indirectCRLCA1Cert"),
     ("indirectCRLCA1CRL",)),
    ("4.14.27", False, "InvalidcRLIssuerTest27EE",
     ("indirectCRLCA2Cert", "GoodCACert"),
     ("GoodCACRL",)),
    ("4.14.28", True, "ValidcRLIssuerTest28EE",
     ("indirectCRLCA3Cert", "indirectCRLCA3cRLIssuerCert"),
     ("indirectCRLCA3CRL", "indirectCRLCA3cRLIssuerCRL")),
    ("4.14.29", True, "ValidcRLIssuerTest29EE",
     ("indirectCRLCA3Cert", "indirectCRLCA3cRLIssuerCert"),
     ("indirectCRLCA3CRL", "indirectCRLCA3cRLIssuerCRL")),
    ("4.14.30", True, "ValidcRLIssuerTest30EE",
     ("indirectCRLCA4Cert", "indirectCRLCA4cRLIssuerCert"),
     ("indirectCRLCA4cRLIssuerCRL",)),
    ("4.14.31", False, "InvalidcRLIssuerTest31EE",
     ("indirectCRLCA5Cert", "indirectCRLCA6Cert"),
     ("indirectCRLCA5CRL",)),
    ("4.14.32", False, "InvalidcRLIssuerTest32EE",
     ("indirectCRLCA5Cert", "indirectCRLCA6Cert"),
     ("indirectCRLCA5CRL",)),
    ("4.14.33", True, "ValidcRLIssuerTest33EE",
     ("indirectCRLCA5Cert", "indirectCRLCA6Cert"),
     ("indirectCRLCA5CRL",)),
    ("4.14.34", False, "InvalidcRLIssuerTest34EE",
     ("indirectCRLCA5Cert",),
     ("indirectCRLCA5CRL",)),
    ("4.14.35", False, "InvalidcRLIssuerTest35EE",
     ("indirectCRLCA5Cert",),
     ("indirectCRLCA5CRL",)),
    ("4.15.1", False, "InvaliddeltaCRLIndicatorNoBaseTest1EE",
     ("deltaCRLIndicatorNoBaseCACert",),
     ("deltaCRLIndicatorNoBaseCACRL",)),
    ("4.15.2", True, "ValiddeltaCRLTest2EE",
     ("deltaCRLCA1Cert",),
     ("deltaCRLCA1CRL", "deltaCRLCA1deltaCRL")),
    ("4.15.3", False, "InvaliddeltaCRLTest3EE",
     ("deltaCRLCA1Cert",),
     ("deltaCRLCA1CRL", "deltaCRLCA1deltaCRL")),
    ("4.15.4", False, "InvaliddeltaCRLTest4EE",
     ("deltaCRLCA1Cert",),
     ("deltaCRLCA1CRL", "deltaCRLCA1deltaCRL")),
    ("4.15.5", True, "ValiddeltaCRLTest5EE",
     ("deltaCRLCA1Cert",),
     ("deltaCRLCA1CRL", "deltaCRLCA1deltaCRL")),
    ("4.15.6", False, "InvaliddeltaCRLTest6EE",
     ("deltaCRLCA1Cert",),
     ("deltaCRLCA1CRL", "deltaCRLCA1deltaCRL")),
    ("4.15.7", True, "ValiddeltaCRLTest7EE",
     ("deltaCRLCA1Cert",),
     ("deltaCRLCA1CRL", "deltaCRLCA1deltaCRL")),
    ("4.15.8", True, "ValiddeltaCRLTest8EE",
     ("deltaCRLCA2Cert",),
     ("deltaCRLCA2CRL", "deltaCRLCA2deltaCRL")),
    ("4.15.9", False, "InvaliddeltaCRLTest9EE",
     ("deltaCRLCA2Cert",),
     ("deltaCRLCA2CRL", "deltaCRLCA2deltaCRL")),
    ("4.15.10", False, "InvaliddeltaCRLTest10EE",
     ("deltaCRLCA3Cert",),
     ("deltaCRLCA3CRL", "deltaCRLCA3deltaCRL")),
)
PKITS_PATH_FAILURES = frozenset({"4.5.8"})  # signed by a key without keyCertSign
# The only CRL of a configured CA does not verify: startup stops (with the CA met only in
# client chains, the CRL is kept and never applies).
PKITS_LOAD_REFUSED = frozenset({"4.4.4"})
PKITS_TIME = datetime.datetime(2026, 6, 1, tzinfo=datetime.UTC).timestamp()
_YEAR = datetime.timedelta(days=365)


def _pkits_clock() -> Clock:
    """A clock inside the PKITS certificates' validity (2010 to 2030)."""
    clock = Clock()
    clock.advance(PKITS_TIME)
    return clock


def _pkits(kind: str, name: str) -> str:
    import cryptography_vectors

    return os.path.join(os.path.dirname(cryptography_vectors.__file__), "x509", "PKITS_data",
                        kind, name)


def _pkits_cert(name: str) -> x509.Certificate:
    with open(_pkits("certs", f"{name}.crt"), "rb") as f:
        return x509.load_der_x509_certificate(f.read())


def _path(leaf: x509.Certificate, others: Sequence[x509.Certificate],
          anchor: x509.Certificate) -> dict[int, x509.Certificate]:
    """The leaf's path up to the anchor, by name and signature."""
    chain = {0: leaf}
    cert = leaf
    while cert != anchor:
        for candidate in (anchor, *others):
            if candidate != cert and candidate.subject == cert.issuer:
                try:
                    cert.verify_directly_issued_by(candidate)
                except (ValueError, TypeError, InvalidSignature):
                    continue
                chain[len(chain)] = cert = candidate
                break
        else:
            raise AssertionError(f"no issuer for {cert.subject.rfc4514_string()}")
    return chain


def pkits_verdict(leaf: str, others: Sequence[str], crls: Sequence[str],
                  mode: Scope = Scope.CHAIN, configured: bool = True) -> Verdict:
    """What the --crl files decide of a PKITS path; ``configured``: the certificates other
    than the end entity are given with --intermediates (else only the client sends them)."""
    anchor = _pkits_cert("TrustAnchorRootCertificate")
    certs = [_pkits_cert(name) for name in others]
    paths = [_pkits("crls", f"{name}.crl") for name in ("TrustAnchorRootCRL", *crls)]
    with captured_events("certsrv.test"):
        loaded = load_crl_files(paths, [anchor], certs if configured else [], PKITS_TIME,
                                Logger("certsrv.test"))
    revocation = Revocation([CRLFiles(loaded, mode, _pkits_clock())])
    verdict, _ = revocation.lookup_until(revocation.plan(
        _path(_pkits_cert(leaf), certs, anchor)))
    assert verdict is not None
    return verdict


def _pkits_test(number: str, valid: bool, leaf: str, others: tuple[str, ...],
                crls: tuple[str, ...]) -> Callable[[SynchronousTestCase], None]:
    def test(self: SynchronousTestCase) -> None:
        if number in PKITS_LOAD_REFUSED:
            self.assertRaises(ConfigurationError, pkits_verdict, leaf, others, crls)
            verdict = pkits_verdict(leaf, others, crls, configured=False)
            self.assertEqual(verdict.status, Status.UNKNOWN)
            return
        verdict = pkits_verdict(leaf, others, crls)
        expected = Status.GOOD if valid or number in PKITS_PATH_FAILURES else None
        if expected is Status.GOOD:
            self.assertEqual(verdict.status, Status.GOOD, f"{number}: {verdict}")
        else:
            self.assertNotEqual(verdict.status, Status.GOOD, f"{number}: {verdict}")
    test.__doc__ = f"PKITS {number} ({'valid' if valid else 'invalid'}) at the CRL layer."
    return test


class PKITSRevocationTests(SynchronousTestCase):
    """The PKITS CRL cases (4.4, 4.5, 4.14, 4.15) give the expected verdict."""

    for _case in PKITS_CRL_CASES:
        locals()["test_" + _case[0].replace(".", "_")] = _pkits_test(*_case)
    del _case

    def test_revoked_and_unknown_reasons(self) -> None:
        """Invalid cases fail for the reason PKITS describes: revoked, or no usable CRL."""
        expected = {
            "4.4.2": "revoked", "4.4.3": "revoked", "4.4.4": "crl_unavailable",
            "4.4.7": "good", "4.4.11": "crl_expired", "4.4.20": "revoked",
            "4.4.21": "crl_unavailable", "4.14.15": "revoked", "4.14.16": "revoked",
            "4.14.17": "crl_unavailable", "4.14.26": "crl_unavailable", "4.14.31": "revoked",
            "4.14.32": "revoked", "4.14.34": "revoked", "4.15.1": "crl_unavailable",
            "4.15.3": "revoked", "4.15.4": "revoked", "4.15.6": "revoked",
            "4.15.9": "revoked", "4.15.10": "crl_expired",
        }
        cases = {case[0]: case for case in PKITS_CRL_CASES}
        found = {number: pkits_verdict(*cases[number][2:],
                                       configured=number not in PKITS_LOAD_REFUSED).reason
                 for number in expected}
        self.assertEqual(found, expected)

    def test_signers_on_the_verified_path_need_no_configuration(self) -> None:
        """With only the trust anchor configured (the client sends the rest), a CRL signer
        on the verified path still counts (4.5.1: the CA's new key signs CRLs for its old
        one); a signer off the path must be configured, else those cases fail closed."""
        outside = {"4.4.19", "4.5.4", "4.5.6", "4.14.24", "4.14.25", "4.14.28", "4.14.29",
                   "4.14.30", "4.14.33"}
        for number, valid, leaf, others, crls in PKITS_CRL_CASES:
            status = pkits_verdict(leaf, others, crls, configured=False).status
            if number in outside:
                self.assertEqual(status, Status.UNKNOWN, number)
            else:
                good = valid or number in PKITS_PATH_FAILURES
                self.assertEqual(status is Status.GOOD, good, number)

    def test_leaf_mode_tolerates_unknown_signer_status(self) -> None:
        """With --crl-check leaf, a CRL signer's own status need not be known, but a revoked
        signer still voids its CRL (4.4.21)."""
        cases = {case[0]: case for case in PKITS_CRL_CASES}
        _, _, leaf, others, crls = cases["4.4.19"]
        self.assertEqual(pkits_verdict(leaf, others, crls, Scope.LEAF).status, Status.GOOD)
        _, _, leaf, others, crls = cases["4.4.21"]
        self.assertEqual(pkits_verdict(leaf, others, crls, Scope.LEAF).status, Status.UNKNOWN)


class PKITSHandshakeTests(SynchronousTestCase):
    """PKITS CRL cases through a whole in-memory handshake: the server configured with the
    trust anchor as --ca, the other certificates as --intermediates, the case's CRLs as
    --crl and --crl-check chain; the end entity presents its PKITS key."""

    def setUp(self) -> None:
        self.pki = shared_pki()
        self.dir = self.mktemp()
        # The PKITS certificates expire at the end of 2030: the server's clock is fixed
        # inside their validity, and the server's own certificate valid then.
        start = datetime.datetime.fromtimestamp(PKITS_TIME, datetime.UTC) - _YEAR
        server = CertificateFactory.wrap(self.pki.root).server(not_before=start,
                                                                not_after=start + 10 * _YEAR)
        self.cert = write_pem(self.dir, "server.pem", server.chain_pem())
        self.key = write_pem(self.dir, "server.key", server.private_key_pem(), 0o600)

    def handshake(self, number: str) -> tuple[int | None, list[Any]]:
        _, _, leaf, others, crls = next(c for c in PKITS_CRL_CASES if c[0] == number)
        pem = b"".join(_pkits_cert(n).public_bytes(Encoding.PEM) for n in others)
        config = ServerConfig(
            cert=self.cert, key=self.key,
            ca=(write_pem(self.dir, "ta.pem", _pkits_cert(
                "TrustAnchorRootCertificate").public_bytes(Encoding.PEM)),),
            intermediates=(write_pem(self.dir, f"{number}.pem", pem),),
            crls=tuple(_pkits("crls", f"{n}.crl") for n in ("TrustAnchorRootCRL", *crls)),
            crl_check_chain=True)
        with open(_pkits("pkcs12", f"{leaf}.p12"), "rb") as f:
            key, cert, _ = pkcs12.load_key_and_certificates(f.read(), b"password")
        assert key is not None and cert is not None
        settings, verifier = config.load(_pkits_clock())
        with captured_events() as events:
            result = exchange(make_server_factory(settings, verifier=verifier),
                              client_tls_options(self.pki, IssuedCertificate(cert, key)))
        return result.status, [e["reason"] for e in events if e.get("decision")]

    def test_cases(self) -> None:
        """Delta (4.15.4 revoked by the delta, 4.15.5 a hold lifted), separate CRL key
        (4.4.19, 4.4.21), indirect CRLs (4.14.24, 4.14.31), reasons (4.14.19, 4.14.20)."""
        expected = {"4.15.4": "revoked", "4.15.5": None, "4.4.19": None,
                    "4.4.21": "crl_unavailable", "4.14.24": None, "4.14.31": "revoked",
                    "4.14.19": None, "4.14.20": "revoked", "4.14.29": None}
        found = {}
        for number in expected:
            status, reasons = self.handshake(number)
            found[number] = reasons[-1] if reasons else "no event"
            self.assertEqual(status == 200, expected[number] is None, (number, reasons))
        self.assertEqual(found, expected)


class SighupTests(TestCase):
    """A real twistd process re-reads its CRL on SIGHUP; openssl and curl see the change."""

    timeout = 60

    @defer.inlineCallbacks
    def test_sighup_reloads_crl(self) -> Any:
        from tests._servers import low_port as _free_port

        pki = shared_pki()
        directory = self.mktemp()
        ca = write_pem(directory, "ca.pem", pki.root.certificate_pem())
        crl_path = write_pem(directory, "crl.pem", crl_pem(pki.root))
        victim = pki.root.issue_client("sighup-victim")
        cert = write_pem(directory, "victim.pem", victim.chain_pem())
        key = write_pem(directory, "victim.key", victim.private_key_pem(), 0o600)
        port = _free_port()
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
        argv = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "-n",
                "--pidfile=", "certsrv", "--listen", f"tcp:{port}:interface=127.0.0.1",
                "--cert", write_pem(directory, "server.pem", pki.server.chain_pem()),
                "--key", write_pem(directory, "server.key", pki.server.private_key_pem(), 0o600),
                "--ca", ca, "--crl", crl_path, "--watch-interval", "0"]
        done: defer.Deferred[tuple[bytes, bytes, int]] = defer.Deferred()
        process = reactor.spawnProcess(_Collect(b"", done), argv[0], argv,  # type: ignore[attr-defined]
                                       env=env)

        def stop() -> defer.Deferred[Any]:
            if process.pid is not None:
                process.signalProcess(signal.SIGTERM)
            return done

        self.addCleanup(stop)
        # TLS 1.2: the server's alert arrives inside the handshake, where curl reads it.
        curl = ["curl", "-sS", "-v", "--tls-max", "1.2", "--retry", "20", "--retry-connrefused",
                "--retry-delay", "1", "--max-time", "30", "--cacert", ca, "--cert", cert,
                "--key", key,
                "--resolve", f"localhost:{port}:127.0.0.1", f"https://localhost:{port}/secure"]
        out, err, code = yield run(curl)
        self.assertEqual(code, 0, err)
        write_pem(directory, "crl.pem", crl_pem(pki.root, victim, crl_number=2))
        process.signalProcess(signal.SIGHUP)
        for _ in range(50):
            out, err, code = yield run(curl)
            if code != 0:
                break
        self.assertIn(b"certificate revoked", err)
        server_out, server_err, _ = yield stop()
        log = server_out + server_err
        self.assertIn(b"configuration reloaded (SIGHUP)", log)
        self.assertIn(b"revoked", log)
        self.assertNotIn(b"Traceback", log)
