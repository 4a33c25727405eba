"""OCSP in the server: the cache, the non-blocking gate, fail closed/open, and real responders."""

from __future__ import annotations

import datetime
import os
import shutil
import socket
from typing import Any

from cryptography import x509
from cryptography.x509 import ocsp as crypto_ocsp
from twisted.internet import defer, protocol, reactor
from twisted.internet.task import Clock
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.test.iosim import connectedServerAndClient
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase

from certsrv.exceptions import OCSPError, Reason
from certsrv.pki import CertificateAuthority, IssuedCertificate
from certsrv.revocation.decision import Revocation, Scope, Status, Verdict
from certsrv.revocation.ocsp import CertStatus, SingleStatus, build_response, build_unsuccessful
from certsrv.revocation.ocspcheck import OCSPChecker, OCSPSettings
from certsrv.revocation.ocspfetch import HTTPFetcher
from certsrv.tls.verify import ClientVerifier
from certsrv.web.site import Limits
from tests._support import (
    HTTPClientProtocol,
    captured_events,
    client_tls_options,
    clock_at_now,
    exchange,
    make_server_factory,
    shared_pki,
)

URL = "http://127.0.0.1:9/ocsp"


class FakeResponder:
    """An OCSP responder in memory: answers per serial, or misbehaves as told."""

    def __init__(self, ca: CertificateAuthority, clock: Clock) -> None:
        self.ca = ca
        self.clock = clock
        self.signer = ca.issue_ocsp_responder()
        self.statuses: dict[int, CertStatus] = {}
        self.behaviour = "answer"
        self.calls: list[str] = []
        self.pending: list[defer.Deferred[bytes]] = []
        self.next_update: datetime.timedelta | None = datetime.timedelta(minutes=10)
        self.signer_override: IssuedCertificate | None = None

    def now(self) -> datetime.datetime:
        return datetime.datetime.fromtimestamp(self.clock.seconds(), datetime.UTC)

    def answer(self, request_der: bytes, serial_offset: int = 0) -> bytes:
        request = crypto_ocsp.load_der_ocsp_request(request_der)
        nonce = None
        for extension in request.extensions:
            if isinstance(extension.value, x509.OCSPNonce):
                nonce = extension.value.nonce
        cert_id = cert_id_key_from_request(request, serial_offset)
        status = self.statuses.get(request.serial_number, CertStatus.GOOD)
        now = self.now()
        signer = self.signer_override or self.signer
        single = SingleStatus(cert_id, status, now - datetime.timedelta(seconds=1),
                              now + self.next_update if self.next_update else None,
                              now - datetime.timedelta(days=1) if status is CertStatus.REVOKED
                              else None, x509.ReasonFlags.key_compromise
                              if status is CertStatus.REVOKED else None)
        included = [] if signer.certificate == self.ca.certificate else [signer.certificate]
        return build_response([single], signer.certificate, signer.private_key, produced_at=now,
                              nonce=nonce, certificates=included)

    def __call__(self, url: str, request: bytes) -> defer.Deferred[bytes]:
        self.calls.append(url)
        behaviour = self.behaviour
        if behaviour == "answer":
            return defer.succeed(self.answer(request))
        if behaviour == "slow":
            d: defer.Deferred[bytes] = defer.Deferred()
            self.pending.append(d)
            return d
        if behaviour == "down":
            return defer.fail(OCSPError("responder_down", "connection refused"))
        if behaviour == "garbage":
            return defer.succeed(b"\x30\x03garbage")
        if behaviour == "try_later":
            return defer.succeed(build_unsuccessful(crypto_ocsp.OCSPResponseStatus.TRY_LATER))
        if behaviour == "other_cert":
            return defer.succeed(self.answer(request, serial_offset=1))
        if behaviour == "tampered":
            # Signed by the issuer itself and carrying no certificates, so the signature
            # is the last thing in the DER: flip a bit inside it.
            self.signer_override = IssuedCertificate(self.ca.certificate, self.ca.private_key)
            der = bytearray(self.answer(request))
            der[-5] ^= 0x01
            return defer.succeed(bytes(der))
        raise AssertionError(behaviour)

    def release(self) -> None:
        """Answer every request that was held back."""
        pending, self.pending = self.pending, []
        for d in pending:
            d.callback(self.answer(self._last_request))

    _last_request = b""


def cert_id_key_from_request(request: crypto_ocsp.OCSPRequest, serial_offset: int) -> Any:
    from certsrv.revocation.ocsp import CertID

    return CertID(request.issuer_name_hash, request.issuer_key_hash,
                  request.serial_number + serial_offset, request.hash_algorithm.name)


def checker_for(pki: Any, clock: Clock, **settings: Any) -> tuple[OCSPChecker, FakeResponder]:
    responder = FakeResponder(pki.root, clock)
    settings.setdefault("mode", Scope.LEAF)
    settings.setdefault("responder", URL)
    return OCSPChecker(OCSPSettings(**settings), clock, responder), responder


def cached(checker: Any, pair: Any) -> Verdict | None:
    """The checker's cached verdict (``lookup_until`` without its time), None if none."""
    found = checker.lookup_until(pair)
    return found[0] if found is not None else None


class CheckerTests(SynchronousTestCase):
    """The cache: verified answers only, until nextUpdate, de-duplicated, refreshed early."""

    def setUp(self) -> None:
        self.pki = shared_pki()
        self.clock = clock_at_now()
        self.checker, self.responder = checker_for(self.pki, self.clock)
        self.pair = self.checker.pair(self.pki.client.certificate, self.pki.root.certificate)

    def test_good_then_cached(self) -> None:
        self.assertIsNone(cached(self.checker, self.pair))
        verdict = self.successResultOf(self.checker.check(self.pair))
        self.assertEqual(verdict.status, Status.GOOD)
        self.assertEqual(cached(self.checker, self.pair), verdict)
        self.successResultOf(self.checker.check(self.pair))
        self.assertEqual(len(self.responder.calls), 1)

    def test_revoked(self) -> None:
        self.responder.statuses[self.pki.client.serial_number] = CertStatus.REVOKED
        verdict = self.successResultOf(self.checker.check(self.pair))
        self.assertTrue(verdict.revoked)
        self.assertIn("keyCompromise", verdict.detail)

    def test_a_thousand_clients_one_query(self) -> None:
        self.responder.behaviour = "slow"
        self.responder._last_request = self._request()
        waits = [self.checker.check(self.pair) for _ in range(1000)]
        self.assertEqual(len(self.responder.calls), 1)
        self.responder.release()
        self.assertEqual({self.successResultOf(w).status for w in waits}, {Status.GOOD})
        self.assertEqual(len(self.responder.calls), 1)

    def _request(self) -> bytes:
        from certsrv.revocation.ocsp import build_request

        return build_request(self.pki.client.certificate, self.pki.root.certificate, None)

    def test_expires_at_next_update(self) -> None:
        self.successResultOf(self.checker.check(self.pair))
        self.clock.advance(10 * 60 + 1)
        self.assertIsNone(cached(self.checker, self.pair))

    def test_max_age_caps_the_cache(self) -> None:
        checker, responder = checker_for(self.pki, self.clock, max_age=30)
        self.successResultOf(checker.check(self.pair))
        self.clock.advance(31)
        self.assertIsNone(cached(checker, self.pair))

    def test_refreshed_in_the_background_before_expiry(self) -> None:
        self.successResultOf(self.checker.check(self.pair))
        self.clock.advance(10 * 60 - 30)  # inside the last minute: due for refresh
        self.assertEqual(cached(self.checker, self.pair).status, Status.GOOD)
        self.assertEqual(len(self.responder.calls), 2)
        self.clock.advance(60)  # the first answer has expired, the refreshed one has not
        self.assertEqual(cached(self.checker, self.pair).status, Status.GOOD)

    def test_no_next_update_gets_short_default(self) -> None:
        self.responder.next_update = None
        checker, _ = checker_for(self.pki, self.clock, default_validity=60)
        checker.fetch = self.responder
        self.successResultOf(checker.check(self.pair))
        self.clock.advance(61)
        self.assertIsNone(cached(checker, self.pair))

    def test_untrustworthy_answers_are_unknown(self) -> None:
        for behaviour, reason in (("down", "responder_down"), ("garbage", "malformed"),
                                  ("try_later", "unsuccessful"),
                                  ("other_cert", "cert_id_mismatch"),
                                  ("tampered", "bad_signature")):
            checker, responder = checker_for(self.pki, self.clock)
            responder.behaviour = behaviour
            verdict = self.successResultOf(checker.check(self.pair))
            self.assertEqual((verdict.status, verdict.reason), (Status.UNKNOWN, reason),
                             behaviour)

    def test_unrelated_signer_is_unknown(self) -> None:
        self.responder.signer_override = CertificateAuthority.create(
            "Test Root CA", organization="certsrv").issue_ocsp_responder()
        verdict = self.successResultOf(self.checker.check(self.pair))
        self.assertEqual((verdict.status, verdict.reason),
                         (Status.UNKNOWN, "unauthorized_signer"))

    def test_responder_without_ocsp_signing_is_unknown(self) -> None:
        self.responder.signer_override = self.pki.root.issue_client("not-a-responder")
        verdict = self.successResultOf(self.checker.check(self.pair))
        self.assertEqual(verdict.reason, "unauthorized_signer")

    def test_unknown_is_cached_briefly(self) -> None:
        self.responder.behaviour = "down"
        self.successResultOf(self.checker.check(self.pair))
        self.assertEqual(cached(self.checker, self.pair).status, Status.UNKNOWN)
        self.clock.advance(11)
        self.assertIsNone(cached(self.checker, self.pair))

    def test_cache_is_bounded(self) -> None:
        checker, _ = checker_for(self.pki, self.clock, cache_size=3)
        for i in range(5):
            cert = self.pki.root.issue_client(f"c{i}")
            self.successResultOf(checker.check(checker.pair(cert.certificate,
                                                            self.pki.root.certificate)))
        self.assertEqual(len(checker), 3)

    def test_no_responder_named(self) -> None:
        checker = OCSPChecker(OCSPSettings(mode=Scope.LEAF), self.clock, self.responder)
        self.assertEqual(self.successResultOf(checker.check(self.pair)).status, Status.GOOD)
        strict = OCSPChecker(OCSPSettings(mode=Scope.LEAF, require=True), self.clock,
                             self.responder)
        self.assertEqual(self.successResultOf(strict.check(self.pair)).status, Status.UNKNOWN)
        self.assertEqual(self.responder.calls, [])

    def test_next_aia_url_when_first_responder_is_down(self) -> None:
        cert = self.pki.root.issue_client("two-responders", extra_extensions=((
            x509.AuthorityInformationAccess([
                x509.AccessDescription(x509.oid.AuthorityInformationAccessOID.OCSP,
                                       x509.UniformResourceIdentifier(url))
                for url in ("http://127.0.0.1:1/down", "http://127.0.0.1:2/up")]), False),),
            with_aia=False)
        calls: list[str] = []

        def fetch(url: str, request: bytes) -> defer.Deferred[bytes]:
            calls.append(url)
            if url.endswith("/down"):
                return defer.fail(OCSPError("responder_down", "connection refused"))
            return defer.succeed(self.responder.answer(request))

        checker = OCSPChecker(OCSPSettings(mode=Scope.LEAF), self.clock, fetch)
        pair = checker.pair(cert.certificate, self.pki.root.certificate)
        self.assertEqual(self.successResultOf(checker.check(pair)).status, Status.GOOD)
        self.assertEqual(calls, ["http://127.0.0.1:1/down", "http://127.0.0.1:2/up"])

    def test_failed_refresh_keeps_the_answer_in_force(self) -> None:
        self.successResultOf(self.checker.check(self.pair))
        self.responder.behaviour = "down"
        self.clock.advance(10 * 60 - 30)  # refresh due; the responder is now down
        self.assertEqual(cached(self.checker, self.pair).status, Status.GOOD)
        self.assertEqual(cached(self.checker, self.pair).status, Status.GOOD, "still in force")
        self.clock.advance(31)  # past nextUpdate: nothing valid is left
        self.assertIsNone(cached(self.checker, self.pair))

    def test_aia_url_is_used(self) -> None:
        ca = CertificateAuthority.load(self.pki.root.certificate, self.pki.root.private_key,
                                       ocsp_url="http://127.0.0.1:8888/")
        cert = ca.issue_client("aia")
        checker = OCSPChecker(OCSPSettings(mode=Scope.LEAF), self.clock, self.responder)
        self.successResultOf(checker.check(checker.pair(cert.certificate, ca.certificate)))
        self.assertEqual(self.responder.calls, ["http://127.0.0.1:8888/"])


class ServerTests(SynchronousTestCase):
    """The server rejects what OCSP says is revoked, at the handshake or per request."""

    def setUp(self) -> None:
        self.pki = shared_pki()
        self.clock = clock_at_now()

    def server(self, fail_open: bool = False, **settings: Any) -> tuple[Any, FakeResponder]:
        checker, responder = checker_for(self.pki, self.clock, **settings)
        verifier = ClientVerifier(self.clock, fail_open=fail_open,
                                  revocation=Revocation([checker]))
        # The idle timeout runs on the same clock: keep it out of the way.
        return make_server_factory(self.pki.settings(), verifier=verifier,
                                   limits=Limits(idle_timeout=10**9)), responder

    def test_good(self) -> None:
        factory, responder = self.server()
        self.assertEqual(exchange(factory, client_tls_options(self.pki, self.pki.client)).status,
                         200)
        self.assertEqual(len(responder.calls), 1)

    def test_revoked_cold_cache_403_then_handshake_rejected(self) -> None:
        factory, responder = self.server()
        victim = self.pki.root.issue_client("ocsp-revoked")
        responder.statuses[victim.serial_number] = CertStatus.REVOKED
        with captured_events() as events:
            result = exchange(factory, client_tls_options(self.pki, victim))
        self.assertEqual(result.status, 403)
        self.assertIn(b"revoked", result.body)
        self.assertEqual([e["reason"] for e in events if e.get("decision") == "rejected"],
                         [Reason.REVOKED.value])
        with captured_events() as events:
            result = exchange(factory, client_tls_options(self.pki, victim))
        self.assertIsNone(result.status)
        self.assertEqual([e["reason"] for e in events if e.get("decision") == "rejected"],
                         [Reason.REVOKED.value])
        self.assertEqual(len(responder.calls), 1)

    def test_unknown_fail_closed_and_open(self) -> None:
        for fail_open, status in ((False, 403), (True, 200)):
            factory, responder = self.server(fail_open=fail_open)
            responder.behaviour = "down"
            with captured_events() as events:
                result = exchange(factory, client_tls_options(self.pki, self.pki.client))
            self.assertEqual(result.status, status)
            reasons = [e["reason"] for e in events if e.get("decision")]
            self.assertIn(Reason.REVOCATION_UNKNOWN.value, reasons)

    def test_chain_mode_covers_intermediate(self) -> None:
        factory, responder = self.server(mode=Scope.CHAIN)
        responder.ca = self.pki.root
        cert = self.pki.client_cert("via_intermediate")
        # The intermediate's status comes from the root's responder; the leaf's from the
        # intermediate's: one fake answers both, signing as the right issuer.
        inter_responder = FakeResponder(self.pki.intermediate, self.clock)

        def fetch(url: str, request: bytes) -> defer.Deferred[bytes]:
            parsed = crypto_ocsp.load_der_ocsp_request(request)
            if parsed.serial_number == cert.serial_number:
                return inter_responder(url, request)
            return responder(url, request)

        verifier = factory.tls.verifier
        verifier.revocation.checkers[0].fetch = fetch
        responder.statuses[self.pki.intermediate.certificate.serial_number] = CertStatus.REVOKED
        result = exchange(factory, client_tls_options(self.pki, cert))
        self.assertEqual(result.status, 403)
        self.assertEqual(len(responder.calls) + len(inter_responder.calls), 2)

    def test_revoked_while_connection_open(self) -> None:
        factory, responder = self.server()
        victim = self.pki.root.issue_client("keepalive-victim")
        http, client, pump = self.open(factory, victim)
        self.assertTrue(http.received.startswith(b"HTTP/1.1 200"), http.received)
        responder.statuses[victim.serial_number] = CertStatus.REVOKED
        http.received = b""
        client.write(KEEPALIVE)
        pump.flush()
        self.assertTrue(http.received.startswith(b"HTTP/1.1 200"), "still cached as good")
        self.clock.advance(11 * 60)  # past nextUpdate: the next request asks again
        http.received = b""
        client.write(KEEPALIVE)
        pump.flush()
        self.assertTrue(http.received.startswith(b"HTTP/1.1 403"), http.received)
        self.assertIn(b"revoked", http.received)

    def test_slow_responder_holds_only_its_own_request(self) -> None:
        factory, responder = self.server()
        responder.behaviour = "slow"
        waiting = self.pki.root.issue_client("slow-one")
        responder._last_request = self._request_for(waiting)
        http_a, client_a, pump_a = self.open(factory, waiting)
        self.assertEqual(http_a.received, b"", "held until the responder answers")
        # Another client, whose status is already known, is served meanwhile.
        other = self.pki.root.issue_client("cached-one")
        checker = factory.tls.verifier.revocation.checkers[0]
        checker.cache.store(checker.pair(other.certificate, self.pki.root.certificate)[2],
                            checker_verdict_good(), self.clock.seconds() + 600)
        http_b, client_b, pump_b = self.open(factory, other)
        self.assertTrue(http_b.received.startswith(b"HTTP/1.1 200"), http_b.received)
        responder.release()
        pump_a.flush()
        self.assertTrue(http_a.received.startswith(b"HTTP/1.1 200"), http_a.received)

    def test_slow_responder_times_out_to_unknown(self) -> None:
        # The fetcher's own timeout is covered over real TCP below; here the checker's
        # verdict for a responder failing with a timeout is what matters.
        factory, responder = self.server()
        responder.behaviour = "slow"
        victim = self.pki.root.issue_client("timeout-one")
        http, client, pump = self.open(factory, victim)
        self.assertEqual(http.received, b"")
        for d in responder.pending:
            d.errback(OCSPError("timeout", "no answer within 5 s"))
        pump.flush()
        self.assertTrue(http.received.startswith(b"HTTP/1.1 403"), http.received)
        self.assertIn(b"revocation_unknown", http.received)

    def _request_for(self, cert: IssuedCertificate) -> bytes:
        from certsrv.revocation.ocsp import build_request

        return build_request(cert.certificate, self.pki.root.certificate, None)

    def open(self, factory: Any, cert: IssuedCertificate) -> tuple[HTTPClientProtocol, Any, Any]:
        http = HTTPClientProtocol(KEEPALIVE)
        client_factory = TLSMemoryBIOFactory(client_tls_options(self.pki, cert), True,
                                             protocol.Factory.forProtocol(lambda: http),
                                             clock=self.clock)
        client, _, pump = connectedServerAndClient(
            lambda: factory.buildProtocol(None), lambda: client_factory.buildProtocol(None),
            greet=False, clock=self.clock)
        pump.flush()
        self.addCleanup(lambda: (client.loseConnection(), pump.flush()))
        return http, client, pump


KEEPALIVE = b"GET /secure HTTP/1.1\r\nHost: localhost\r\n\r\n"


def checker_verdict_good() -> Any:
    return Verdict(Status.GOOD, "good")


class ShutdownTests(SynchronousTestCase):
    """The fetchers' idle connections are closed when the server stops."""

    def test_fetchers_closed_when_the_server_stops(self) -> None:
        from certsrv.server.options import _CloseAtStop, makeService
        from tests._support import Files, options

        parsed = options(Files(self.mktemp()).argv("--ocsp-responder", URL,
                                                   "--crl-fetch", "on"))
        revocation = parsed.revocation
        assert revocation is not None
        self.assertEqual([type(f).__name__ for f in revocation.fetchers],
                         ["HTTPFetcher", "CRLFetcher"])
        closed: list[Any] = []
        for fetcher in revocation.fetchers:
            self.patch(fetcher, "close",
                       lambda f=fetcher: closed.append(f) or defer.succeed(None))
        closers = [child for child in makeService(parsed) if isinstance(child, _CloseAtStop)]
        self.assertEqual(len(closers), 1)
        closers[0].startService()
        self.successResultOf(defer.maybeDeferred(closers[0].stopService))
        self.assertEqual(closed, list(revocation.fetchers))


class OpenSSLResponderTests(TestCase):
    """certsrv's server, end to end over TCP, against an ``openssl ocsp`` responder."""

    timeout = 60

    @defer.inlineCallbacks
    def test_good_and_revoked(self) -> Any:
        if shutil.which("openssl") is None:
            raise SkipTest("openssl is not installed")
        from tests._servers import Collect as _Collect
        from tests._servers import run
        from tests._support import write_pem

        pki = shared_pki()
        directory = self.mktemp()
        good = pki.root.issue_client("openssl-good")
        revoked = pki.root.issue_client("openssl-revoked")
        signer = pki.root.issue_ocsp_responder()
        expiry = "301231235959Z"
        when = datetime.datetime.now(datetime.UTC).strftime("%y%m%d%H%M%SZ")
        index = (f"V\t{expiry}\t\t{good.serial_number:X}\tunknown\t/CN=openssl-good\n"
                 f"R\t{expiry}\t{when}\t{revoked.serial_number:X}\tunknown\t"
                 "/CN=openssl-revoked\n")
        os.makedirs(directory)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        done: defer.Deferred[Any] = defer.Deferred()
        argv = ["openssl", "ocsp", "-index", write_pem(directory, "index.txt", index.encode()),
                "-port", str(port), "-rsigner",
                write_pem(directory, "ocsp.pem", signer.certificate_pem()),
                "-rkey", write_pem(directory, "ocsp.key", signer.private_key_pem(), 0o600),
                "-CA", write_pem(directory, "ca.pem", pki.root.certificate_pem()),
                "-nrequest", "2", "-nmin", "5"]
        collector = _Collect(b"", done)
        process = reactor.spawnProcess(collector, shutil.which("openssl"), argv)  # type: ignore[attr-defined]

        def stop() -> Any:
            if process.pid is not None:
                process.signalProcess("KILL")
            return done

        self.addCleanup(stop)
        fetcher = HTTPFetcher(reactor, reactor, timeout=5)
        self.addCleanup(fetcher.close)
        checker = OCSPChecker(OCSPSettings(mode=Scope.LEAF,
                                           responder=f"http://127.0.0.1:{port}/"),
                              reactor, fetcher)
        verifier = ClientVerifier(reactor, revocation=Revocation([checker]))
        factory = make_server_factory(pki.settings(), verifier=verifier)
        listening = reactor.listenTCP(0, factory, interface="127.0.0.1")  # type: ignore[attr-defined]
        self.addCleanup(listening.stopListening)
        server_port = listening.getHost().port
        ca = os.path.join(directory, "ca.pem")
        for _ in range(200):  # wait until the responder listens (a probe would use it up)
            if b"waiting for OCSP client connections" in collector.out + collector.err:
                break
            yield deferLater(0.05)
        results = {}
        for name, cert in (("good", good), ("revoked", revoked)):
            cert_path = write_pem(directory, f"{name}.pem", cert.chain_pem())
            key_path = write_pem(directory, f"{name}.key", cert.private_key_pem(), 0o600)
            out, err, code = yield run([
                "curl", "-sS", "--max-time", "10", "--cacert", ca, "--cert", cert_path,
                "--key", key_path, "--resolve", f"localhost:{server_port}:127.0.0.1",
                "-w", "\n%{http_code}", f"https://localhost:{server_port}/secure"])
            results[name] = out.rsplit(b"\n", 1)[-1]
        self.assertEqual(results, {"good": b"200", "revoked": b"403"})


def deferLater(seconds: float) -> defer.Deferred[None]:
    from twisted.internet import task

    return task.deferLater(reactor, seconds, lambda: None)


class HTTP2Tests(TestCase):
    """The gate works the same on HTTP/2 streams as on HTTP/1.1 (curl --http2 / --http1.1)."""

    timeout = 30

    @defer.inlineCallbacks
    def test_revoked_and_good_over_both_protocols(self) -> Any:
        if shutil.which("curl") is None:
            raise SkipTest("curl is not installed")
        from tests._servers import run
        from tests._support import write_pem

        pki = shared_pki()
        clock = Clock()
        clock.advance(reactor.seconds())  # type: ignore[attr-defined]
        responder = FakeResponder(pki.root, clock)
        checker = OCSPChecker(OCSPSettings(mode=Scope.LEAF, responder=URL), reactor, responder)
        verifier = ClientVerifier(reactor, revocation=Revocation([checker]))
        factory = make_server_factory(pki.settings(), verifier=verifier, http2=True)
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")  # type: ignore[attr-defined]
        self.addCleanup(port.stopListening)
        number = port.getHost().port
        directory = self.mktemp()
        ca = write_pem(directory, "ca.pem", pki.root.certificate_pem())
        seen = {}
        for flag in ("--http2", "--http1.1"):
            # A fresh victim per protocol: once its revocation is cached, the next handshake
            # is refused before any HTTP is spoken.
            victim = pki.root.issue_client(f"h2-victim{flag}")
            responder.statuses[victim.serial_number] = CertStatus.REVOKED
            for name, cert in (("good", pki.client), ("revoked", victim)):
                cert_path = write_pem(directory, f"{name}.pem", cert.chain_pem())
                key_path = write_pem(directory, f"{name}.key", cert.private_key_pem(), 0o600)
                out, err, code = yield run([
                    "curl", "-sS", flag, "--max-time", "10", "--cacert", ca, "--cert",
                    cert_path, "--key", key_path, "-H", "Accept: application/json",
                    "--resolve", f"localhost:{number}:127.0.0.1", "-w",
                    "\n%{http_version} %{http_code}", f"https://localhost:{number}/secure"])
                seen[(name, flag)] = out.rsplit(b"\n", 1)[-1].decode()
        self.assertEqual(seen, {("good", "--http2"): "2 200", ("good", "--http1.1"): "1.1 200",
                                ("revoked", "--http2"): "2 403",
                                ("revoked", "--http1.1"): "1.1 403"})
