"""CRLs fetched from distribution points: verification, the per-URL cache, the HTTP fetcher."""

from __future__ import annotations

import datetime
import socket
from collections.abc import Callable
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from twisted.internet import defer, reactor
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web import resource, server

from certsrv.exceptions import CRLError, Reason
from certsrv.pki import CertificateAuthority, IssuedCertificate
from certsrv.revocation.crlfetch import (
    CRLChecker,
    CRLFetcher,
    CRLFetchSettings,
    VerifiedCRL,
    distribution_point,
)
from certsrv.revocation.decision import Revocation, Scope, Status, Verdict
from certsrv.revocation.ocsp import _children, _one, _tlv
from certsrv.testing import CertificateFactory
from certsrv.tls.verify import ClientVerifier
from certsrv.web.site import Limits
from tests._support import (
    captured_events,
    client_tls_options,
    clock_at_now,
    exchange,
    make_server_factory,
    serve_http,
    shared_pki,
)

ROOT_URL = "http://127.0.0.1:9/root.crl"
DELTA_URL = "http://127.0.0.1:9/root-delta.crl"
INTER_URL = "http://127.0.0.1:9/inter.crl"
MINUTE = datetime.timedelta(minutes=1)

Entries = list[tuple[int, datetime.datetime, x509.ReasonFlags | None]]


def der(crl: x509.CertificateRevocationList) -> bytes:
    return crl.public_bytes(serialization.Encoding.DER)


def build_crl(ca: CertificateAuthority, now: datetime.datetime,
              extensions: tuple[x509.ExtensionType, ...] = (), critical: bool = True) -> bytes:
    """A CRL with extensions ``CertificateAuthority.crl`` cannot add."""
    builder = (x509.CertificateRevocationListBuilder().issuer_name(ca.certificate.subject)
               .last_update(now - MINUTE).next_update(now + 10 * MINUTE))
    for extension in extensions:
        builder = builder.add_extension(extension, critical)
    return der(builder.sign(ca.private_key, hashes.SHA256()))


def without_next_update(ca: CertificateAuthority, crl: x509.CertificateRevocationList) -> bytes:
    """``crl`` re-signed with its nextUpdate removed (cryptography cannot build one)."""
    tbs_items = _children(_one(crl.tbs_certlist_bytes).content)
    times = [i for i, item in enumerate(tbs_items) if item.tag in (0x17, 0x18)]
    del tbs_items[times[1]]
    tbs = _tlv(0x30, b"".join(item.raw for item in tbs_items))
    algorithm = _children(_one(der(crl)).content)[1]
    assert isinstance(ca.private_key, ec.EllipticCurvePrivateKey)
    signature = ca.private_key.sign(tbs, ec.ECDSA(hashes.SHA256()))
    return _tlv(0x30, tbs + algorithm.raw + _tlv(0x03, b"\x00" + signature))


def intermediate_with_dp(root: CertificateAuthority, url: str) -> CertificateAuthority:
    """An intermediate CA whose certificate points at ``url`` (``pki.intermediate`` cannot)."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "CDP Intermediate")]))
        .issuer_name(root.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - 5 * MINUTE)
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), True)
        .add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False, False),
                       True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
            root.private_key.public_key()), False)  # type: ignore[arg-type]
        .add_extension(x509.CRLDistributionPoints([
            x509.DistributionPoint([x509.UniformResourceIdentifier(url)], None, None, None)]),
            False)
        .sign(root.private_key, hashes.SHA256())  # type: ignore[arg-type]
    )
    return CertificateAuthority.load(cert, key, crl_url=INTER_URL)


def with_points(*points: x509.DistributionPoint) -> Any:
    return ((x509.CRLDistributionPoints(list(points)), False),)


def uri_point(*urls: str) -> x509.DistributionPoint:
    return x509.DistributionPoint([x509.UniformResourceIdentifier(u) for u in urls], None, None,
                                  None)


class FakeDistributionPoints:
    """CRL distribution points in memory: fresh CRLs per URL, or misbehaviour as told."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.signers: dict[str, CertificateAuthority] = {}
        self.revoked: dict[str, Entries] = {}
        self.next_update: datetime.timedelta = 10 * MINUTE
        self.last_update: datetime.timedelta = -MINUTE
        self.behaviour = "answer"
        self.body: Callable[[str], bytes] | None = None
        self.calls: list[str] = []
        self.pending: list[tuple[str, defer.Deferred[bytes]]] = []

    def serve(self, url: str, signer: CertificateAuthority) -> None:
        self.signers[url] = signer
        self.revoked.setdefault(url, [])

    def revoke(self, url: str, cert: IssuedCertificate | x509.Certificate,
               reason: x509.ReasonFlags | None = x509.ReasonFlags.key_compromise) -> None:
        serial = cert.serial_number
        self.revoked[url].append((serial, self.now() - datetime.timedelta(days=1), reason))

    def now(self) -> datetime.datetime:
        return datetime.datetime.fromtimestamp(self.clock.seconds(), datetime.UTC)

    def crl(self, url: str, signer: CertificateAuthority | None = None
            ) -> x509.CertificateRevocationList:
        now = self.now()
        return (signer or self.signers[url]).crl(
            self.revoked[url], last_update=now + self.last_update,
            next_update=now + self.next_update)

    def __call__(self, url: str) -> defer.Deferred[bytes]:
        self.calls.append(url)
        if self.behaviour == "answer":
            return defer.succeed(self.body(url) if self.body else der(self.crl(url)))
        if self.behaviour == "slow":
            d: defer.Deferred[bytes] = defer.Deferred()
            self.pending.append((url, d))
            return d
        return defer.fail(CRLError(self.behaviour, "as told"))

    def release(self) -> None:
        pending, self.pending = self.pending, []
        for url, d in pending:
            d.callback(der(self.crl(url)))


def make_checker(clock: Clock, points: FakeDistributionPoints, **settings: Any) -> CRLChecker:
    settings.setdefault("mode", Scope.LEAF)
    return CRLChecker(CRLFetchSettings(**settings), clock, points)


def cached(checker: Any, pair: Any) -> Verdict | None:
    """The checker's cached verdict (``lookup_until`` without its time), None if none."""
    found = checker.lookup_until(pair)
    return found[0] if found is not None else None


class CheckerTests(SynchronousTestCase):
    """The cache: verified CRLs only, per URL, until nextUpdate, de-duplicated, refreshed."""

    def setUp(self) -> None:
        self.pki = shared_pki()
        self.clock = clock_at_now()
        self.root = CertificateAuthority.load(self.pki.root.certificate,
                                              self.pki.root.private_key, crl_url=ROOT_URL)
        self.points = FakeDistributionPoints(self.clock)
        self.points.serve(ROOT_URL, self.root)
        self.checker = make_checker(self.clock, self.points)
        self.alice = self.root.issue_client("crl-alice")
        self.pair = self.checker.pair(self.alice.certificate, self.root.certificate)

    def pair_of(self, cert: IssuedCertificate, issuer: CertificateAuthority | None = None,
                checker: CRLChecker | None = None) -> Any:
        return (checker if checker is not None else self.checker).pair(cert.certificate,
                                              (issuer or self.root).certificate)

    def verdict(self, pair: Any = None, checker: CRLChecker | None = None) -> Any:
        checker = checker if checker is not None else self.checker
        return self.successResultOf(checker.check(pair or self.pair))

    def test_distribution_point(self) -> None:
        self.assertEqual(distribution_point(self.alice.certificate), ROOT_URL)
        self.assertIsNone(distribution_point(self.pki.client.certificate))

    def test_good_then_cached(self) -> None:
        self.assertIsNone(cached(self.checker, self.pair))
        verdict = self.verdict()
        self.assertEqual((verdict.status, verdict.reason), (Status.GOOD, "good"))
        self.assertEqual(verdict.subject, "CN=crl-alice")
        self.assertEqual(cached(self.checker, self.pair), verdict)
        self.verdict()
        self.assertEqual(self.points.calls, [ROOT_URL])

    def test_revoked(self) -> None:
        self.points.revoke(ROOT_URL, self.alice)
        verdict = self.verdict()
        self.assertTrue(verdict.revoked)
        self.assertEqual(verdict.detail, "revoked (keyCompromise)")
        self.assertEqual(cached(self.checker, self.pair), verdict)

    def test_revoked_without_reason(self) -> None:
        self.points.revoke(ROOT_URL, self.alice, reason=None)
        verdict = self.verdict()
        self.assertEqual((verdict.status, verdict.detail), (Status.REVOKED, "revoked"))

    def test_one_fetch_for_many_certificates(self) -> None:
        certs = [self.root.issue_client(f"sharing-{i}") for i in range(5)]
        self.points.revoke(ROOT_URL, certs[2])
        statuses = [self.verdict(self.pair_of(cert)).status for cert in certs]
        self.assertEqual(statuses, [Status.GOOD, Status.GOOD, Status.REVOKED, Status.GOOD,
                                    Status.GOOD])
        self.assertEqual(self.points.calls, [ROOT_URL])
        self.assertEqual(len(self.checker), 1)
        fresh_pair = self.pair_of(self.root.issue_client("sharing-late"))
        self.assertEqual(cached(self.checker, fresh_pair).status, Status.GOOD)

    def test_a_thousand_lookups_one_fetch(self) -> None:
        self.points.behaviour = "slow"
        certs = [self.root.issue_client(f"crowd-{i}") for i in range(4)]
        self.points.revoke(ROOT_URL, certs[3])
        waits = [self.checker.check(self.pair_of(certs[i % 4])) for i in range(1000)]
        self.assertEqual(len(self.points.calls), 1)
        self.assertNoResult(waits[0])
        self.points.release()
        statuses = [self.successResultOf(w).status for w in waits]
        self.assertEqual(statuses.count(Status.REVOKED), 250)
        self.assertEqual(statuses.count(Status.GOOD), 750)
        self.assertEqual(len(self.points.calls), 1)

    def test_decided_together(self) -> None:
        bad = self.root.issue_client("combined-bad")
        self.points.revoke(ROOT_URL, bad)
        revocation = Revocation([self.checker])
        plan = ((self.checker, self.pair, 0), (self.checker, self.pair_of(bad), 0))
        self.assertIsNone(revocation.lookup_until(plan)[0])
        verdict = self.successResultOf(revocation.check(plan))
        self.assertEqual((verdict.status, verdict.subject), (Status.REVOKED, "CN=combined-bad"))
        self.assertEqual(revocation.lookup_until(plan)[0], verdict)
        self.assertEqual(len(self.points.calls), 1)

    def test_expires_at_next_update(self) -> None:
        self.verdict()
        self.clock.advance(10 * 60 - 61)
        self.assertIsNotNone(cached(self.checker, self.pair))
        self.assertEqual(len(self.points.calls), 1, "not yet due for refresh")
        self.clock.advance(62)
        self.assertIsNone(cached(self.checker, self.pair))

    def test_max_age_caps_the_cache(self) -> None:
        checker = make_checker(self.clock, self.points, max_age=30)
        self.verdict(checker=checker)
        self.clock.advance(31)
        self.assertIsNone(cached(checker, self.pair))

    def test_refreshed_in_the_background_before_expiry(self) -> None:
        self.verdict()
        self.points.revoke(ROOT_URL, self.alice)
        self.clock.advance(10 * 60 - 30)  # inside the last minute: due for refresh
        self.assertEqual(cached(self.checker, self.pair).status, Status.GOOD, "the held CRL")
        self.assertEqual(len(self.points.calls), 2)
        self.clock.advance(60)  # the first CRL has expired, the refreshed one has not
        self.assertEqual(cached(self.checker, self.pair).status, Status.REVOKED)
        self.assertEqual(len(self.points.calls), 2)

    def test_failed_refresh_keeps_the_crl_in_force(self) -> None:
        self.verdict()
        self.points.behaviour = "responder_down"
        self.clock.advance(10 * 60 - 50)
        self.assertEqual(cached(self.checker, self.pair).status, Status.GOOD)
        self.assertEqual(len(self.points.calls), 2)
        self.clock.advance(10)  # retried only after unknown_ttl
        self.assertEqual(cached(self.checker, self.pair).status, Status.GOOD)
        self.assertEqual(len(self.points.calls), 2)
        self.clock.advance(21)
        self.assertEqual(cached(self.checker, self.pair).status, Status.GOOD)
        self.assertEqual(len(self.points.calls), 3)
        self.clock.advance(20)  # past nextUpdate with no fresh CRL: unknown
        self.assertIsNone(cached(self.checker, self.pair))
        verdict = self.verdict()
        self.assertEqual((verdict.status, verdict.reason), (Status.UNKNOWN, "responder_down"))

    def test_failures_cached_briefly(self) -> None:
        self.points.behaviour = "responder_down"
        verdict = self.verdict()
        self.assertEqual((verdict.status, verdict.reason), (Status.UNKNOWN, "responder_down"))
        self.assertEqual(verdict.subject, "CN=crl-alice")
        self.verdict()
        self.verdict(self.pair_of(self.root.issue_client("another-while-down")))
        self.assertEqual(len(self.points.calls), 1, "a down point is not hammered")
        self.points.behaviour = "answer"
        self.clock.advance(31)
        self.assertEqual(self.verdict().status, Status.GOOD)
        self.assertEqual(len(self.points.calls), 2)

    def test_fetch_errors_are_unknown(self) -> None:
        for reason in ("timeout", "responder_down", "http_status", "too_large"):
            self.points.behaviour = reason
            verdict = self.verdict(checker=make_checker(self.clock, self.points))
            self.assertEqual((verdict.status, verdict.reason), (Status.UNKNOWN, reason))

    def untrusted(self, body: Callable[[str], bytes], **settings: Any) -> Any:
        self.points.body = body
        return self.verdict(checker=make_checker(self.clock, self.points, **settings))

    def test_bad_signature(self) -> None:
        impostor = CertificateAuthority.create("Test Root CA")  # same name, another key
        self.assertEqual(impostor.certificate.subject, self.root.certificate.subject)
        verdict = self.untrusted(lambda url: der(self.points.crl(url, impostor)))
        self.assertEqual((verdict.status, verdict.reason), (Status.UNKNOWN, "bad_signature"))

    def test_tampered(self) -> None:
        def tampered(url: str) -> bytes:
            data = bytearray(der(self.points.crl(url)))
            data[-5] ^= 0x01
            return bytes(data)

        self.assertIn(self.untrusted(tampered).reason, ("bad_signature", "malformed"))

    def test_wrong_issuer(self) -> None:
        verdict = self.untrusted(lambda url: der(self.points.crl(url, self.pki.other_root)))
        self.assertEqual((verdict.status, verdict.reason), (Status.UNKNOWN, "wrong_issuer"))

    def test_stale(self) -> None:
        self.points.last_update = -datetime.timedelta(days=2)
        self.points.next_update = -datetime.timedelta(seconds=301)
        verdict = self.verdict()
        self.assertEqual((verdict.status, verdict.reason), (Status.UNKNOWN, "stale"))

    def test_past_next_update_inside_the_skew(self) -> None:
        self.points.last_update = -datetime.timedelta(days=2)
        self.points.next_update = -datetime.timedelta(seconds=100)
        self.assertEqual(self.verdict().status, Status.GOOD)
        self.clock.advance(31)  # used briefly, then asked for again
        self.assertIsNone(cached(self.checker, self.pair))

    def test_not_yet_valid(self) -> None:
        self.points.last_update = datetime.timedelta(seconds=301)
        self.points.next_update = datetime.timedelta(days=1)
        verdict = self.verdict()
        self.assertEqual((verdict.status, verdict.reason), (Status.UNKNOWN, "not_yet_valid"))
        self.points.last_update = datetime.timedelta(seconds=200)
        self.clock.advance(31)
        self.assertEqual(self.verdict().status, Status.GOOD, "inside the skew")

    def test_garbage(self) -> None:
        for body in (b"", b"\x30\x03garbage", b"<html>not found</html>",
                     b"-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n"):
            verdict = self.untrusted(lambda url, body=body: body)  # type: ignore[misc]
            self.assertEqual((verdict.status, verdict.reason), (Status.UNKNOWN, "malformed"),
                             body)

    def test_pem_accepted(self) -> None:
        self.points.revoke(ROOT_URL, self.alice)
        verdict = self.untrusted(
            lambda url: self.points.crl(url).public_bytes(serialization.Encoding.PEM))
        self.assertEqual(verdict.status, Status.REVOKED)

    def test_no_next_update_gets_short_default(self) -> None:
        self.points.revoke(ROOT_URL, self.alice)
        checker = make_checker(self.clock, self.points, default_validity=60)
        self.points.body = lambda url: without_next_update(self.root, self.points.crl(url))
        self.assertEqual(self.verdict(checker=checker).status, Status.REVOKED)
        self.clock.advance(45)
        self.assertEqual(cached(checker, self.pair).status, Status.REVOKED)
        self.clock.advance(16)
        self.assertIsNone(cached(checker, self.pair))

    def test_no_distribution_point(self) -> None:
        # Nothing to ask unless a distribution point is required.
        self.assertIsNone(self.checker.pair(self.pki.client.certificate,
                                            self.pki.root.certificate))
        strict = make_checker(self.clock, self.points, require=True)
        pair = strict.pair(self.pki.client.certificate, self.pki.root.certificate)
        verdict = self.verdict(pair, checker=strict)
        self.assertEqual((verdict.status, verdict.reason), (Status.UNKNOWN, "no_crl_dp"))
        self.assertEqual(cached(strict, pair), verdict)
        self.assertEqual(self.points.calls, [])

    def test_unusable_distribution_points_are_ignored(self) -> None:
        relative = x509.DistributionPoint(None, x509.RelativeDistinguishedName(
            [x509.NameAttribute(NameOID.COMMON_NAME, "crl")]), None, None)
        partial = x509.DistributionPoint([x509.UniformResourceIdentifier(ROOT_URL)], None,
                                         frozenset([x509.ReasonFlags.key_compromise]), None)
        for points in ([uri_point("ldap://ldap.example/cn=crl")],
                       [uri_point("https://127.0.0.1/x.crl")], [uri_point("file:///etc/x.crl")],
                       [uri_point("http://user:pw@127.0.0.1/x.crl")], [relative], [partial]):
            cert = self.pki.root.issue_client("odd-dp", extra_extensions=with_points(*points))
            self.assertIsNone(distribution_point(cert.certificate), points)
            self.assertIsNone(self.checker.pair(cert.certificate, self.pki.root.certificate))
        self.assertEqual(self.points.calls, [])
        cert = self.pki.root.issue_client("mixed-dp", extra_extensions=with_points(
            relative, uri_point("ldap://ldap.example/cn=crl", ROOT_URL), uri_point(INTER_URL)))
        self.assertEqual(distribution_point(cert.certificate), ROOT_URL)

    def test_chain_mode_covers_intermediate(self) -> None:
        inter = intermediate_with_dp(self.root, ROOT_URL)
        self.points.serve(INTER_URL, inter)
        bob = inter.issue_client("crl-bob")
        chain = {0: bob.certificate, 1: inter.certificate, 2: self.root.certificate}
        revocation = Revocation([make_checker(self.clock, self.points, mode=Scope.CHAIN)])
        verdict = self.successResultOf(revocation.check(revocation.plan(chain)))
        self.assertEqual(verdict.status, Status.GOOD)
        self.assertEqual(sorted(self.points.calls), [INTER_URL, ROOT_URL])
        self.points.revoke(ROOT_URL, inter.certificate, x509.ReasonFlags.ca_compromise)
        fresh = Revocation([make_checker(self.clock, self.points, mode=Scope.CHAIN)])
        verdict = self.successResultOf(fresh.check(fresh.plan(chain)))
        self.assertEqual((verdict.status, verdict.subject, verdict.detail),
                         (Status.REVOKED, "CN=CDP Intermediate", "revoked (cACompromise)"))

    def test_same_url_other_issuer_is_not_shared(self) -> None:
        other = CertificateAuthority.load(self.pki.other_root.certificate,
                                          self.pki.other_root.private_key, crl_url=ROOT_URL)
        mallory = other.issue_client("mallory")
        self.assertEqual(self.verdict().status, Status.GOOD)
        verdict = self.verdict(self.pair_of(mallory, other))
        self.assertEqual((verdict.status, verdict.reason), (Status.UNKNOWN, "wrong_issuer"))
        self.assertEqual(len(self.points.calls), 2)
        self.assertEqual(cached(self.checker, self.pair).status, Status.GOOD)

    def test_cache_is_bounded(self) -> None:
        checker = make_checker(self.clock, self.points, cache_size=2)
        for i in range(3):
            url = f"http://127.0.0.1:9/{i}.crl"
            self.points.serve(url, self.root)
            ca = CertificateAuthority.load(self.root.certificate, self.root.private_key,
                                           crl_url=url)
            self.verdict(self.pair_of(ca.issue_client(f"lru-{i}"), checker=checker),
                         checker=checker)
        self.assertEqual(len(checker), 2)

    def test_rollback_refused(self) -> None:
        old = der(self.points.crl(ROOT_URL))  # from before alice was revoked
        self.clock.advance(5)
        self.points.revoke(ROOT_URL, self.alice)
        self.assertEqual(self.verdict().status, Status.REVOKED)
        self.points.body = lambda url: old
        self.clock.advance(10 * 60 - 40)  # the refresh gets the older CRL and keeps the newer
        self.assertEqual(cached(self.checker, self.pair).status, Status.REVOKED)
        self.clock.advance(31)
        self.assertEqual(cached(self.checker, self.pair).status, Status.REVOKED)
        self.assertEqual(len(self.points.calls), 3)

    def test_scope(self) -> None:
        now = self.points.now()
        ca_only = x509.IssuingDistributionPoint(None, None, False, True, None, False, False)
        self.points.body = lambda url: build_crl(self.root, now, (ca_only,))
        verdict = self.verdict()
        self.assertEqual((verdict.status, verdict.reason), (Status.UNKNOWN, "wrong_scope"))
        inter = intermediate_with_dp(self.root, ROOT_URL)
        self.assertEqual(self.verdict(self.checker.pair(inter.certificate,
                                                        self.root.certificate)).status,
                         Status.GOOD)
        elsewhere = x509.IssuingDistributionPoint(
            [x509.UniformResourceIdentifier("http://127.0.0.1:9/other.crl")], None, False,
            False, None, False, False)
        here = x509.IssuingDistributionPoint([x509.UniformResourceIdentifier(ROOT_URL)], None,
                                             True, False, None, False, False)
        for extension, reason in ((elsewhere, "wrong_scope"), (here, "good"),
                                  (x509.DeltaCRLIndicator(1), "unsupported")):
            verdict = self.untrusted(lambda url, e=extension: build_crl(  # type: ignore[misc]
                self.root, now, (e,)))
            self.assertEqual(verdict.reason, reason, extension)

    def delta_setup(self, *, freshest_in: str = "crl") -> tuple[Any, Any]:
        """A complete CRL at ROOT_URL (number 4, holding ``held``) and its delta CRL at
        DELTA_URL, named by the CRL's freshestCRL or by the certificate's."""
        factory = CertificateFactory.wrap(self.root)
        freshest = [x509.DistributionPoint([x509.UniformResourceIdentifier(DELTA_URL)], None,
                                           None, None)]
        extensions = (((x509.FreshestCRL(freshest), False),) if freshest_in == "cert"
                      else ())
        held = factory.client("held", extensions=extensions)
        revoked = factory.client("revoked-in-delta", extensions=extensions)
        self.delta_entries: list[Any] = [(held, x509.ReasonFlags.remove_from_crl, None),
                                         (revoked, x509.ReasonFlags.key_compromise, None)]
        self.delta_base = 4

        def body(url: str) -> bytes:
            if url == DELTA_URL:
                return der(factory.scoped_crl(self.delta_entries, number=5,
                                              delta_of=self.delta_base))
            return der(factory.scoped_crl(
                [(held, x509.ReasonFlags.certificate_hold, None)], number=4,
                freshest=freshest if freshest_in == "crl" else ()))
        self.points.body = body
        return held, revoked

    def test_delta_from_freshest_crl(self) -> None:
        """The delta CRL at the complete CRL's freshestCRL point revokes, and lifts holds
        (removeFromCRL); it is fetched once and cached like the complete CRL."""
        held, revoked = self.delta_setup()
        self.assertEqual(self.verdict(self.pair_of(held)).status, Status.GOOD)
        verdict = self.verdict(self.pair_of(revoked))
        self.assertEqual((verdict.status, verdict.detail),
                         (Status.REVOKED, "revoked (keyCompromise)"))
        self.assertEqual(cached(self.checker, self.pair_of(revoked)), verdict)
        self.assertEqual(self.verdict(self.pair).status, Status.GOOD)
        self.assertEqual(self.points.calls, [ROOT_URL, DELTA_URL])

    def test_delta_from_the_certificate(self) -> None:
        held, revoked = self.delta_setup(freshest_in="cert")
        self.assertEqual(self.verdict(self.pair_of(revoked)).status, Status.REVOKED)
        self.assertEqual(self.verdict(self.pair).status, Status.GOOD,
                         "no freshestCRL anywhere: the complete CRL alone")
        self.assertEqual(self.points.calls, [ROOT_URL, DELTA_URL])

    def test_delta_unavailable(self) -> None:
        """Without its delta nobody is known good, but the complete CRL still revokes."""
        held, revoked = self.delta_setup()
        body = self.points.body
        assert body is not None
        self.points.body = lambda url: b"junk" if url == DELTA_URL else body(url)
        verdict = self.verdict(self.pair_of(revoked))
        self.assertEqual((verdict.status, verdict.reason), (Status.UNKNOWN, "malformed"))
        self.assertIn("delta CRL", verdict.detail)
        self.assertEqual(self.verdict(self.pair_of(held)).status, Status.REVOKED)

    def test_delta_of_another_base_is_ignored(self) -> None:
        held, revoked = self.delta_setup()
        self.delta_base = 5  # needs a complete CRL numbered 5 or more; ours is 4
        with captured_events("certsrv.crl") as events:
            self.assertEqual(self.verdict(self.pair_of(revoked)).status, Status.GOOD)
            self.assertEqual(self.verdict(self.pair_of(held)).status, Status.REVOKED)
        self.assertEqual([e["reason"] for e in events if e.get("reason")],
                         ["crl_delta_unmatched"])

    def test_freshest_point_serving_a_complete_crl(self) -> None:
        held, revoked = self.delta_setup()
        body = self.points.body
        assert body is not None
        self.points.body = lambda url: body(ROOT_URL)
        verdict = self.verdict(self.pair_of(revoked))
        self.assertEqual((verdict.status, verdict.reason), (Status.UNKNOWN, "unsupported"))

    def test_offloaded_verification(self) -> None:
        jobs: list[Callable[[], VerifiedCRL]] = []
        done: list[defer.Deferred[VerifiedCRL]] = []

        def offload(job: Callable[[], VerifiedCRL]) -> defer.Deferred[VerifiedCRL]:
            jobs.append(job)
            done.append(defer.Deferred())
            return done[-1]

        checker = CRLChecker(CRLFetchSettings(mode=Scope.LEAF), self.clock, self.points,
                             offload)
        wait = checker.check(self.pair)
        self.assertNoResult(wait)
        self.assertIsNone(cached(checker, self.pair))
        done[0].callback(jobs[0]())
        self.assertEqual(self.successResultOf(wait).status, Status.GOOD)

    def test_unexpected_error_is_unknown_and_not_cached(self) -> None:
        def broken(job: Callable[[], VerifiedCRL]) -> defer.Deferred[VerifiedCRL]:
            raise RuntimeError("bug")

        checker = CRLChecker(CRLFetchSettings(mode=Scope.LEAF), self.clock, self.points,
                             broken)
        verdict = self.verdict(checker=checker)
        self.assertEqual((verdict.status, verdict.reason), (Status.UNKNOWN, "internal_error"))
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertIsNone(cached(checker, self.pair))


class ServerTests(SynchronousTestCase):
    """The checker is a revocation source of the server like the OCSP checker."""

    def setUp(self) -> None:
        self.pki = shared_pki()
        self.clock = clock_at_now()
        self.root = CertificateAuthority.load(self.pki.root.certificate,
                                              self.pki.root.private_key, crl_url=ROOT_URL)
        self.points = FakeDistributionPoints(self.clock)
        self.points.serve(ROOT_URL, self.root)

    def server(self, **settings: Any) -> Any:
        verifier = ClientVerifier(
            self.clock, revocation=Revocation([make_checker(self.clock, self.points,
                                                            **settings)]))
        # The idle timeout runs on the same clock: keep it out of the way.
        return make_server_factory(self.pki.settings(), verifier=verifier,
                                   limits=Limits(idle_timeout=10**9))

    def test_revoked_cold_cache_403_then_handshake_rejected(self) -> None:
        factory = self.server()
        victim = self.root.issue_client("crl-server-victim")
        self.points.revoke(ROOT_URL, victim)
        with captured_events() as events:
            result = exchange(factory, client_tls_options(self.pki, victim))
        self.assertEqual(result.status, 403)
        self.assertIn(b"revoked", result.body)
        self.assertIn(Reason.REVOKED.value,
                      [e["reason"] for e in events if e.get("decision") == "rejected"])
        result = exchange(factory, client_tls_options(self.pki, victim))
        self.assertIsNone(result.status)
        good = exchange(factory, client_tls_options(self.pki,
                                                    self.root.issue_client("crl-server-ok")))
        self.assertEqual(good.status, 200)
        self.assertEqual(self.points.calls, [ROOT_URL])

    def test_chain_mode_rejects_revoked_intermediate(self) -> None:
        factory = self.server(mode=Scope.CHAIN)
        inter = intermediate_with_dp(self.root, ROOT_URL)
        self.points.serve(INTER_URL, inter)
        bob = inter.issue_client("crl-server-bob")
        self.assertEqual(exchange(factory, client_tls_options(self.pki, bob)).status, 200)
        self.points.revoke(ROOT_URL, inter.certificate, x509.ReasonFlags.ca_compromise)
        self.clock.advance(10 * 60 + 1)
        result = exchange(factory, client_tls_options(self.pki, bob))
        self.assertEqual(result.status, 403)
        self.assertIn(b"revoked", result.body)
        self.assertEqual(sorted(self.points.calls), [INTER_URL, INTER_URL, ROOT_URL, ROOT_URL])


class _Hang(resource.Resource):
    isLeaf = True

    def render_GET(self, request: server.Request) -> Any:
        return server.NOT_DONE_YET


class _Fixed(resource.Resource):
    isLeaf = True

    def __init__(self, code: int, body: bytes, chunked: bool = False) -> None:
        super().__init__()
        self.code, self.body, self.chunked = code, body, chunked
        self.requests: list[server.Request] = []

    def render_GET(self, request: server.Request) -> Any:
        self.requests.append(request)
        request.setResponseCode(self.code)
        if self.code in (301, 302):
            request.setHeader(b"Location", b"http://127.0.0.1:9/elsewhere.crl")
        if not self.chunked:
            return self.body
        for start in range(0, len(self.body), 4096):
            request.write(self.body[start:start + 4096])
        request.finish()
        return server.NOT_DONE_YET


class FetcherTests(TestCase):
    """The fetcher over real TCP on 127.0.0.1: down, slow, HTTP errors, size limit, CRLs."""

    timeout = 30

    def setUp(self) -> None:
        self.pki = shared_pki()
        self.fetcher = CRLFetcher(reactor, reactor, timeout=0.5, max_bytes=8192)
        self.addCleanup(self.fetcher.close)

    def serve(self, root: resource.Resource) -> str:
        return serve_http(self, root) + "x.crl"

    @defer.inlineCallbacks
    def assertFetchFails(self, url: str, reason: str) -> Any:
        failure = yield self.assertFailure(self.fetcher(url), CRLError)
        self.assertEqual(failure.reason, reason)

    def test_down(self) -> Any:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        return self.assertFetchFails(f"http://127.0.0.1:{port}/x.crl", "responder_down")

    def test_slow(self) -> Any:
        return self.assertFetchFails(self.serve(_Hang()), "timeout")

    def test_http_500(self) -> Any:
        return self.assertFetchFails(self.serve(_Fixed(500, b"oops")), "http_status")

    def test_redirect_not_followed(self) -> Any:
        return self.assertFetchFails(self.serve(_Fixed(302, b"")), "http_status")

    def test_too_large(self) -> Any:
        return self.assertFetchFails(self.serve(_Fixed(200, b"x" * 10_000)), "too_large")

    def test_too_large_without_length(self) -> Any:
        return self.assertFetchFails(self.serve(_Fixed(200, b"x" * 100_000, chunked=True)),
                                     "too_large")

    def test_only_plain_http(self) -> Any:
        return self.assertFetchFails("https://127.0.0.1:9/x.crl", "bad_url")

    @defer.inlineCallbacks
    def test_crl_over_tcp(self) -> Any:
        """A real CRL through the fetcher and the checker: good, then revoked."""
        served = _Fixed(200, b"", chunked=True)
        url = self.serve(served)
        root = CertificateAuthority.load(self.pki.root.certificate, self.pki.root.private_key,
                                         crl_url=url)
        good, victim = root.issue_client("tcp-good"), root.issue_client("tcp-victim")
        now = datetime.datetime.now(datetime.UTC)
        served.body = der(root.crl([(victim.serial_number, now, None)]))
        checker = CRLChecker(CRLFetchSettings(mode=Scope.LEAF), reactor,
                             CRLFetcher(reactor, reactor, timeout=5))
        self.addCleanup(checker.fetch.close)  # type: ignore[attr-defined]
        verdict = yield checker.check(checker.pair(good.certificate, root.certificate))
        self.assertEqual(verdict.status, Status.GOOD)
        verdict = yield checker.check(checker.pair(victim.certificate, root.certificate))
        self.assertEqual(verdict.status, Status.REVOKED)
        self.assertEqual(len(served.requests), 1)
        self.assertEqual(served.requests[0].method, b"GET")
