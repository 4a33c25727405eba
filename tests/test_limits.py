"""What one peer may cost: handshake and idle timeouts, connection, header and body limits."""

from __future__ import annotations

import shutil
from typing import Any

from twisted.internet import defer, protocol, reactor
from twisted.test.iosim import connectedServerAndClient
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase

from certsrv._web import Limits
from tests._support import (
    captured_events,
    client_tls_options,
    clock_at_now,
    exchange,
    make_server_factory,
    shared_pki,
    write_pem,
)


class _Silent(protocol.Protocol):
    lost = False

    def connectionLost(self, reason: Any = None) -> None:
        self.lost = True


class TimeoutTests(SynchronousTestCase):
    """Stalled handshakes and idle connections are cut off by the injected clock."""

    def test_stalled_handshake(self) -> None:
        clock = clock_at_now()
        factory = make_server_factory(shared_pki().settings(), clock=clock,
                                      limits=Limits(handshake_timeout=10))
        silent = _Silent()
        with captured_events() as events:
            _, server, pump = connectedServerAndClient(
                lambda: factory.buildProtocol(None), lambda: silent, greet=False, clock=clock)
            pump.flush()
            clock.advance(9)
            pump.flush()
            self.assertFalse(silent.lost)
            clock.advance(2)
            pump.flush()
        self.assertTrue(silent.lost)
        self.assertEqual([e["reason"] for e in events], ["handshake_timeout"])

    def test_idle_keepalive_connection_closed(self) -> None:
        from twisted.protocols.tls import TLSMemoryBIOFactory

        from tests._support import HTTPClientProtocol

        pki = shared_pki()
        clock = clock_at_now()
        factory = make_server_factory(pki.settings(), clock=clock,
                                      limits=Limits(idle_timeout=30))
        http = HTTPClientProtocol(b"GET /secure HTTP/1.1\r\nHost: localhost\r\n\r\n")
        client_factory = TLSMemoryBIOFactory(client_tls_options(pki, pki.client), True,
                                             protocol.Factory.forProtocol(lambda: http),
                                             clock=clock)
        _, _, pump = connectedServerAndClient(
            lambda: factory.buildProtocol(None), lambda: client_factory.buildProtocol(None),
            greet=False, clock=clock)
        pump.flush()
        self.assertTrue(http.received.startswith(b"HTTP/1.1 200"))
        with captured_events() as events:
            clock.advance(20)  # past the 10 s handshake timeout: a finished handshake stays
            pump.flush()
        self.assertIsNone(http.lost)
        self.assertEqual(events, [])
        clock.advance(11)
        pump.flush()
        self.assertIsNotNone(http.lost)


class ConnectionLimitTests(SynchronousTestCase):
    """Beyond ``max_connections`` new connections are refused; existing ones are untouched."""

    def test_refused_beyond_limit(self) -> None:
        factory = make_server_factory(shared_pki().settings(), limits=Limits(max_connections=2))
        first = factory.buildProtocol(None)
        second = factory.buildProtocol(None)
        for p in (first, second):
            factory.registerProtocol(p)
        with captured_events() as events:
            self.assertIsNone(factory.buildProtocol(None))
        self.assertEqual([e["reason"] for e in events], ["max_connections"])
        factory.unregisterProtocol(first)
        self.assertIsNotNone(factory.buildProtocol(None))


class RequestLimitTests(SynchronousTestCase):
    """Oversized headers and bodies get a clean 4xx, never a traceback."""

    def run_request(self, request: bytes, limits: Limits) -> Any:
        pki = shared_pki()
        factory = make_server_factory(pki.settings(), limits=limits)
        return exchange(factory, client_tls_options(pki, pki.client), request)

    def test_too_many_headers(self) -> None:
        headers = b"".join(b"X-%d: y\r\n" % i for i in range(20))
        request = b"GET /secure HTTP/1.1\r\nHost: localhost\r\n" + headers + b"\r\n"
        self.assertEqual(self.run_request(request, Limits(max_headers=10)).status, 400)
        self.assertEqual(self.run_request(
            request.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n"),
            Limits(max_headers=50)).status, 200)

    def test_header_bytes(self) -> None:
        request = (b"GET /secure HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nX-Big: "
                   + b"a" * 3000 + b"\r\n\r\n")
        self.assertEqual(self.run_request(request, Limits(max_header_bytes=2048)).status, 400)

    def test_body_too_large(self) -> None:
        for declared in (True, False):
            body = b"x" * 5000
            framing = (b"Content-Length: 5000\r\n" if declared
                       else b"Transfer-Encoding: chunked\r\n")
            payload = body if declared else b"1388\r\n" + body + b"\r\n0\r\n\r\n"
            request = (b"POST /secure HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
                       + framing + b"\r\n" + payload)
            result = self.run_request(request, Limits(max_body_bytes=1000))
            self.assertEqual(result.status, 413, declared)

    def test_declared_body_too_large_refused_before_it_arrives(self) -> None:
        request = (b"POST /secure HTTP/1.1\r\nHost: localhost\r\n"
                   b"Content-Length: 999999999\r\n\r\n")  # and no body follows
        result = self.run_request(request, Limits(max_body_bytes=1000))
        self.assertEqual(result.status, 413)

    def test_body_within_limit(self) -> None:
        request = (b"POST /secure HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
                   b"Content-Length: 10\r\n\r\n0123456789")
        # /secure answers GET; a POST that fits is routed (and refused as 405), not cut.
        self.assertEqual(self.run_request(request, Limits(max_body_bytes=1000)).status, 405)


class CipherTests(TestCase):
    """TLS 1.2 offers only forward-secret AEAD suites (Mozilla 'intermediate')."""

    timeout = 30

    def s_client(self) -> list[str]:
        """An ``openssl s_client`` command line for a certsrv started on 127.0.0.1."""
        if shutil.which("openssl") is None:
            raise SkipTest("openssl is not installed")
        pki = shared_pki()
        port = reactor.listenTCP(  # type: ignore[attr-defined]
            0, make_server_factory(pki.settings(), clock=reactor), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        directory = self.mktemp()
        ca = write_pem(directory, "ca.pem", pki.root.certificate_pem())
        cert = write_pem(directory, "c.pem", pki.client.certificate_pem())
        key = write_pem(directory, "c.key", pki.client.private_key_pem(), 0o600)
        return ["openssl", "s_client", "-connect", f"127.0.0.1:{port.getHost().port}",
                "-CAfile", ca, "-cert", cert, "-key", key, "-ign_eof"]

    @defer.inlineCallbacks
    def test_non_aead_suite_refused(self) -> Any:
        from tests.test_interop import REQUEST, run

        base = [*self.s_client(), "-tls1_2"]
        for cipher, ok in (("ECDHE-ECDSA-AES128-SHA", False), ("ECDHE-ECDSA-AES256-SHA384",
                                                                 False),
                           ("ECDHE-ECDSA-AES128-GCM-SHA256", True),
                           ("ECDHE-ECDSA-CHACHA20-POLY1305", True)):
            out, err, _ = yield run([*base, "-cipher", cipher], REQUEST)
            self.assertEqual(b"HTTP/1.1 200" in out, ok, (cipher, err[-300:]))

    @defer.inlineCallbacks
    def test_key_exchange_groups(self) -> Any:
        """Only X25519, P-256 and P-384 (Mozilla 'intermediate'); X448 and P-521 refused."""
        from tests.test_interop import REQUEST, run

        base = self.s_client()
        for group, ok in (("X25519", True), ("P-256", True), ("P-384", True),
                          ("X448", False), ("P-521", False)):
            out, err, _ = yield run([*base, "-tls1_3", "-groups", group], REQUEST)
            self.assertEqual(b"HTTP/1.1 200" in out, ok, (group, err[-300:]))
        # TLS 1.2 ties the groups to the ECDSA certificate's curve (P-256), so offer it too
        # and see which group the server picks for the key exchange.
        out, err, _ = yield run([*base, "-tls1_2", "-groups", "X448:P-521:P-256"], REQUEST)
        self.assertIn(b"HTTP/1.1 200", out, err[-300:])
        self.assertIn(b"Server Temp Key: ECDH, prime256v1", out)
