"""certsrv.web.limits: what one peer may cost, on HTTP/1.1 and on HTTP/2."""

from __future__ import annotations

import shutil
from typing import Any

import h2.errors
import h2.settings
from twisted.internet import defer, endpoints, protocol, reactor, task
from twisted.test.iosim import connectedServerAndClient
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase
from twisted.web import resource, server

from certsrv.testing import open_in_memory
from certsrv.web.limits import LimitedSite, Limits
from tests._h2client import H2Client, connect_h2, h2_options
from tests._servers import Peer
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
        from tests._support import HTTPClientProtocol

        pki = shared_pki()
        clock = clock_at_now()
        factory = make_server_factory(pki.settings(), clock=clock,
                                      limits=Limits(idle_timeout=30))
        http = HTTPClientProtocol(b"GET /secure HTTP/1.1\r\nHost: localhost\r\n\r\n")
        _, _, pump = open_in_memory(factory, client_tls_options(pki, pki.client), http)
        self.assertTrue(http.received.startswith(b"HTTP/1.1 200"))
        with captured_events() as events:
            clock.advance(20)  # past the 10 s handshake timeout: a finished handshake stays
            pump.flush()
        self.assertIsNone(http.lost)
        self.assertEqual(events, [])
        clock.advance(11)
        pump.flush()
        self.assertIsNotNone(http.lost)


def _connect(port: int, peer: Peer, tls: Any = None) -> defer.Deferred[Any]:
    endpoint: Any = endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", port)
    if tls is not None:
        endpoint = endpoints.wrapClientTLS(tls, endpoint)
    return endpoints.connectProtocol(endpoint, peer)


class ConnectionLimitTests(TestCase):
    """Beyond ``max_connections`` new connections are refused; existing ones are untouched."""

    timeout = 30

    async def test_refused_beyond_limit(self) -> None:
        pki = shared_pki()
        factory = make_server_factory(pki.settings(), clock=reactor,  # type: ignore[arg-type]
                                      limits=Limits(max_connections=2))
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")  # type: ignore[attr-defined]
        self.addCleanup(port.stopListening)
        number = port.getHost().port
        holders = [Peer(), Peer()]  # open, in the TLS handshake, holding both places
        for holder in holders:
            await _connect(number, holder)
        tls = client_tls_options(pki, pki.client)
        refused = Peer(REQUEST)
        with captured_events("certsrv.limits") as events:
            await _connect(number, refused, tls)
            self.assertEqual(await refused.done, b"")
        self.assertEqual([e["reason"] for e in events], ["max_connections"])
        self.assertFalse(any(holder.done.called for holder in holders))
        holders[0].transport.loseConnection()
        await holders[0].done
        admitted = Peer(REQUEST)
        await _connect(number, admitted, tls)
        self.assertTrue((await admitted.done).startswith(b"HTTP/1.1 200 "))
        holders[1].transport.loseConnection()
        await holders[1].done


REQUEST = b"GET /secure HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"


class _BodyType(resource.Resource):
    """Answers a POST with the type of ``request.content`` and the body's length."""

    isLeaf = True

    def render_POST(self, request: server.Request) -> bytes:
        assert request.content is not None
        return f"{type(request.content).__name__} {len(request.content.read())}".encode()


class RequestLimitTests(SynchronousTestCase):
    """Oversized headers and bodies get a clean 4xx, never a traceback."""

    def run_request(self, request: bytes, limits: Limits, app: Any = None) -> Any:
        pki = shared_pki()
        factory = make_server_factory(pki.settings(), limits=limits, app=app)
        return exchange(factory, client_tls_options(pki, pki.client), request)

    def test_too_many_headers(self) -> None:
        headers = b"".join(b"X-%d: y\r\n" % i for i in range(11))
        request = b"GET /secure HTTP/1.1\r\nHost: localhost\r\n" + headers + b"\r\n"
        with captured_events("certsrv.limits") as events:
            result = self.run_request(request, Limits(max_headers=11))
        self.assertEqual(result.status, 431)
        self.assertIn(b"\r\nServer: certsrv\r\n", result.client.received)
        self.assertEqual([e["reason"] for e in events], ["too_many_headers"])
        self.assertEqual(self.run_request(
            request.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n"),
            Limits(max_headers=13)).status, 200)

    def test_header_bytes(self) -> None:
        request = (b"GET /secure HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nX-Big: "
                   + b"a" * 3000 + b"\r\n\r\n")
        self.assertEqual(self.run_request(request, Limits(max_header_bytes=2048)).status, 431)
        many = b"".join(b"X-%d: %s\r\n" % (i, b"a" * 200) for i in range(12))
        request = b"GET /secure HTTP/1.1\r\nHost: localhost\r\n" + many + b"\r\n"
        self.assertEqual(self.run_request(request, Limits(max_header_bytes=2048)).status, 431)
        self.assertEqual(self.run_request(request, Limits(max_header_bytes=4096)).status, 200)

    def test_whole_heads_at_the_limits(self) -> None:
        """A head arriving whole is held to the limits to the byte and the field: 100 header
        bytes and 3 fields admit exactly this one, and one byte or one field more is 431."""
        head = b"GET /secure HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nX: "
        # Counted as the server does: the request line and field lines, without CRLFs.
        size = len(head) - 6
        request = head + b"a" * (100 - size) + b"\r\n\r\n"
        self.assertEqual(self.run_request(request, Limits(max_header_bytes=100)).status, 200)
        self.assertEqual(self.run_request(request, Limits(max_header_bytes=99)).status, 431)
        self.assertEqual(self.run_request(request, Limits(max_headers=3)).status, 200)
        self.assertEqual(self.run_request(request, Limits(max_headers=2)).status, 431)

    def test_pipelined_after_a_whole_head(self) -> None:
        """The request after one whose head arrived whole, in the same read, is checked line
        by line again: over the limit, it is refused."""
        first = b"GET /secure HTTP/1.1\r\nHost: localhost\r\n\r\n"
        headers = b"".join(b"X-%d: y\r\n" % i for i in range(11))
        second = b"GET /secure HTTP/1.1\r\nHost: localhost\r\n" + headers + b"\r\n"
        received = self.run_request(first + second, Limits(max_headers=11)).client.received
        self.assertTrue(received.startswith(b"HTTP/1.1 200 "), received[:40])
        self.assertIn(b"accepted\nsubject: CN=alice\nHTTP/1.1 431 ", received)
        # A bare CR in the second head: 400, though the first head had none.
        second = b"GET /secure HTTP/1.1\r\nHost: localhost\r\nX: a\rb\r\n\r\n"
        received = self.run_request(first + second, Limits()).client.received
        self.assertTrue(received.startswith(b"HTTP/1.1 200 "), received[:40])
        self.assertIn(b"accepted\nsubject: CN=alice\nHTTP/1.1 400 ", received)

    def test_bare_lf_in_a_whole_head(self) -> None:
        """A head with a bare LF among CRLFs is split at every LF, as any head is."""
        request = (b"GET /secure HTTP/1.1\r\nHost: localhost\nConnection: close\r\n"
                   b"X-Big: " + b"a" * 3000 + b"\r\n\r\n")
        self.assertEqual(self.run_request(request, Limits(max_header_bytes=2048)).status, 431)
        request = b"GET /secure HTTP/1.1\r\nHost: localhost\nConnection: close\r\n\r\n"
        self.assertEqual(self.run_request(request, Limits()).status, 200)

    def test_line_longer_than_the_limit(self) -> None:
        """A single line over the limit, not even ended, is refused as it grows."""
        request = b"GET /" + b"a" * 70_000  # no CRLF
        result = self.run_request(request, Limits(max_header_bytes=32_768))
        self.assertEqual(result.status, 431)

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
        request = (b"POST /secure HTTP/1.1\r\nHost: localhost\r\nExpect: 100-continue\r\n"
                   b"Content-Length: 999999999\r\n\r\n")  # and no body follows
        result = self.run_request(request, Limits(max_body_bytes=1000))
        self.assertEqual(result.status, 413)
        self.assertNotIn(b"100 Continue", result.client.received)

    def test_chunked_body_refused_as_it_arrives(self) -> None:
        """Past the limit, a chunked body is refused at once: no need to wait for its end."""
        request = (b"POST /secure HTTP/1.1\r\nHost: localhost\r\n"
                   b"Transfer-Encoding: chunked\r\n\r\n1388\r\n" + b"x" * 5000 + b"\r\n")
        with captured_events("certsrv.limits") as events:
            result = self.run_request(request, Limits(max_body_bytes=1000))
        self.assertEqual(result.status, 413)
        self.assertEqual([e["reason"] for e in events], ["body_too_large"])

    def test_body_within_limit(self) -> None:
        request = (b"POST /secure HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
                   b"Content-Length: 10\r\n\r\n0123456789")
        # /secure answers GET; a POST that fits is routed (and refused as 405), not cut.
        self.assertEqual(self.run_request(request, Limits(max_body_bytes=1000)).status, 405)

    def test_bodies_stay_in_memory(self) -> None:
        """Large and chunked bodies within the limit are BytesIO (twisted.web uses temp files)."""
        body = b"x" * 500_000
        for framing, payload in (
                (b"Content-Length: 500000\r\n", body),
                (b"Transfer-Encoding: chunked\r\n", b"7a120\r\n" + body + b"\r\n0\r\n\r\n")):
            request = (b"POST / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
                       + framing + b"\r\n" + payload)
            result = self.run_request(request, Limits(), app=_BodyType())
            self.assertEqual((result.status, result.body), (200, b"BytesIO 500000"))


class ServerNameTests(SynchronousTestCase):
    """Every limited site answers as certsrv, not as Twisted's name and version."""

    def test_plain_resource(self) -> None:
        from twisted.internet.address import IPv4Address
        from twisted.internet.testing import StringTransport

        root = resource.Resource()
        root.putChild(b"x", _BodyType())
        site = LimitedSite(root, reactor=task.Clock())
        channel = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 1))
        transport = StringTransport()
        channel.makeConnection(transport)
        channel.dataReceived(b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n"
                             b"GET /nothing HTTP/1.1\r\nHost: a\r\n\r\n")
        received = transport.value()
        self.assertEqual(received.count(b"\r\nServer: certsrv\r\n"), 2)
        self.assertNotIn(b"Twisted", received)
        channel.connectionLost(None)  # type: ignore[arg-type]


class RequestTimeoutTests(SynchronousTestCase):
    """A request must arrive in time, however steadily a slow peer trickles it: 408."""

    def open(self, first: bytes, limits: Limits) -> tuple[Any, Any, Any]:
        """A TLS connection in memory that sent ``first``: the client, the clock, the pump."""
        from tests._support import HTTPClientProtocol

        pki = shared_pki()
        clock = clock_at_now()
        factory = make_server_factory(pki.settings(), clock=clock, limits=limits)
        http = HTTPClientProtocol(first)
        _, _, pump = open_in_memory(factory, client_tls_options(pki, pki.client), http)
        return http, clock, pump

    def trickle(self, http: Any, clock: Any, pump: Any, pieces: list[bytes], every: float
                ) -> None:
        """Send one piece every ``every`` seconds."""
        for piece in pieces:
            clock.advance(every)
            pump.flush()
            http.transport.write(piece)
            pump.flush()

    def test_slow_headers(self) -> None:
        limits = Limits(header_timeout=20, idle_timeout=60)
        http, clock, pump = self.open(b"GET /secure HTTP/1.1\r\n", limits)
        with captured_events("certsrv.limits") as events:
            self.trickle(http, clock, pump, [b"X-%d: y\r\n" % i for i in range(3)], 5)
            clock.advance(4)
            pump.flush()
            self.assertEqual(http.received, b"")
            clock.advance(1)
            pump.flush()
        self.assertTrue(http.received.startswith(b"HTTP/1.1 408 "), http.received)
        self.assertEqual([e["reason"] for e in events], ["request_timeout"])

    def test_slow_body(self) -> None:
        limits = Limits(body_timeout=30, idle_timeout=60)
        http, clock, pump = self.open(b"POST /secure HTTP/1.1\r\nHost: localhost\r\n"
                                      b"Content-Length: 100\r\n\r\n", limits)
        self.trickle(http, clock, pump, [b"x"] * 5, 5)
        clock.advance(4)
        pump.flush()
        self.assertEqual(http.received, b"")
        clock.advance(1)
        pump.flush()
        self.assertTrue(http.received.startswith(b"HTTP/1.1 408 "), http.received)

    def test_idle_keepalive_is_not_a_slow_request(self) -> None:
        """The header timeout starts at a request's first byte, not when the last one ended."""
        request = b"GET /secure HTTP/1.1\r\nHost: localhost\r\n\r\n"
        http, clock, pump = self.open(request, Limits(header_timeout=20, idle_timeout=60))
        self.assertEqual(http.received.count(b"HTTP/1.1 200 "), 1, http.received)
        self.trickle(http, clock, pump, [request], 40)
        self.assertEqual(http.received.count(b"HTTP/1.1 200 "), 2, http.received)
        self.assertIsNone(http.lost)


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
        from tests._servers import REQUEST, run

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
        from tests._servers import REQUEST, run

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


_NO_ERROR = int(h2.errors.ErrorCodes.NO_ERROR)


class H2LimitTests(TestCase):
    """Every refusal over HTTP/2 has its status, and the connection goes on serving."""

    timeout = 30

    async def connect(self, limits: Limits | None = None) -> H2Client:
        """A certsrv TLS listener on 127.0.0.1 with ``limits``, and an h2 client of it."""
        pki = shared_pki()
        factory = make_server_factory(pki.settings(), clock=reactor,  # type: ignore[arg-type]
                                      http2=True, limits=limits or Limits())
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")  # type: ignore[attr-defined]
        self.addCleanup(port.stopListening)
        client = await connect_h2(port.getHost().port, h2_options(pki, pki.client))
        self.addCleanup(self.disconnect, client)
        return client

    async def disconnect(self, client: H2Client) -> None:
        if not client.closed and client.transport is not None:
            client.transport.abortConnection()
            await client.when(lambda: client.closed)

    async def get(self, client: H2Client, extra: list[tuple[bytes, bytes]] | None = None) -> int:
        """GET /secure on ``client``; the status."""
        stream_id = client.request(extra=extra or [])
        await client.when(lambda: client.streams[stream_id].ended or
                          client.streams[stream_id].reset is not None)
        status = client.streams[stream_id].status
        assert status is not None
        return status

    async def test_settings_advertise_the_limits(self) -> None:
        """The preface carries MAX_CONCURRENT_STREAMS and MAX_HEADER_LIST_SIZE from the limits."""
        limits = Limits(max_streams=7, max_header_bytes=4096, max_headers=20)
        client = await self.connect(limits)
        codes = h2.settings.SettingCodes
        self.assertEqual(client.settings[codes.MAX_CONCURRENT_STREAMS], 7)
        self.assertEqual(client.settings[codes.MAX_HEADER_LIST_SIZE], limits.hpack_bound)
        self.assertEqual(await self.get(client), 200)

    async def test_too_many_headers(self) -> None:
        """101 header fields: 431 on the stream; 100 pass; the connection stays usable."""
        client = await self.connect(Limits(max_headers=100))
        fields = [(b"x-%d" % i, b"y") for i in range(101)]
        with captured_events("certsrv.limits") as events:
            self.assertEqual(await self.get(client, fields), 431)
        self.assertEqual([e["reason"] for e in events], ["too_many_headers"])
        self.assertEqual(await self.get(client, fields[:100]), 200)
        self.assertIsNone(client.terminated)

    async def test_header_bytes(self) -> None:
        """A header section over the byte limit: 431; far over it: GOAWAY ENHANCE_YOUR_CALM."""
        limits = Limits(max_header_bytes=16_384)
        client = await self.connect(limits)
        self.assertEqual(await self.get(client, [(b"x-big", b"a" * 17_000)]), 431)
        self.assertEqual(await self.get(client, [(b"x-big", b"a" * 16_000)]), 200)
        client.request(extra=[(b"x-big", b"a" * 60_000)])  # the 60 KB header of issue 9
        await client.when(lambda: client.terminated is not None)
        self.assertEqual(client.terminated, h2.errors.ErrorCodes.ENHANCE_YOUR_CALM)
        client = await self.connect(limits)
        client.request(extra=[(b"x-%d" % i, b"y") for i in range(1000)])
        await client.when(lambda: client.terminated is not None)
        self.assertEqual(client.terminated, h2.errors.ErrorCodes.ENHANCE_YOUR_CALM)

    async def test_declared_body_too_large(self) -> None:
        """A content-length over the limit: 413 before any body; reset after body_timeout."""
        client = await self.connect(Limits(max_body_bytes=1000, body_timeout=0.5))
        stream_id = client.request(b"POST", extra=[(b"content-length", b"200000000")],
                                   end=False)
        stream = client.streams[stream_id]
        await client.when(lambda: stream.ended)
        self.assertEqual(stream.status, 413)
        self.assertIn(b"larger than 1000 bytes", stream.body)
        # The client never sends the body: the stream is reset, without error, in time.
        await client.when(lambda: stream.reset is not None)
        self.assertEqual(stream.reset, _NO_ERROR)
        self.assertEqual(await self.get(client), 200)

    async def test_body_too_large_as_it_arrives(self) -> None:
        """An undeclared body is refused once past the limit; what follows is dropped."""
        client = await self.connect(Limits(max_body_bytes=1000))
        stream_id = client.request(b"POST", end=False)
        stream = client.streams[stream_id]
        client.send(stream_id, b"x" * 600)
        await client.wait_for_pong()
        self.assertIsNone(stream.status)
        client.send(stream_id, b"x" * 600)
        await client.when(lambda: stream.ended)
        self.assertEqual(stream.status, 413)
        # Well past both flow-control windows: the dropped data is acknowledged.
        client.send(stream_id, b"x" * 300_000, end=True)
        await client.when(lambda: client.sent_all(stream_id))
        await client.wait_for_pong()
        self.assertIsNone(stream.reset)
        self.assertEqual(await self.get(client), 200)
        self.assertIsNone(client.terminated)

    async def test_body_within_limit(self) -> None:
        """A body within the limit reaches the resource (405: /secure answers GET only)."""
        client = await self.connect(Limits(max_body_bytes=200_000))
        stream_id = client.request(b"POST", extra=[(b"content-length", b"150000")], end=False)
        client.send(stream_id, b"x" * 150_000, end=True)
        await client.when(lambda: client.streams[stream_id].ended)
        self.assertEqual(client.streams[stream_id].status, 405)

    async def test_body_timeout(self) -> None:
        """A body that does not arrive within body_timeout: 408, then RST_STREAM(NO_ERROR)."""
        client = await self.connect(Limits(body_timeout=0.5))
        stream_id = client.request(b"POST", end=False)
        client.send(stream_id, b"x" * 10)
        stream = client.streams[stream_id]
        with captured_events("certsrv.limits") as events:
            await client.when(lambda: stream.reset is not None)
        self.assertEqual((stream.status, stream.reset), (408, _NO_ERROR))
        self.assertEqual([e["reason"] for e in events], ["request_timeout"])
        self.assertEqual(await self.get(client), 200)

    async def test_concurrent_streams(self) -> None:
        """Streams beyond MAX_CONCURRENT_STREAMS: GOAWAY PROTOCOL_ERROR (h2 enforces it)."""
        client = await self.connect(Limits(max_streams=3))
        # Make the client ignore the server's limit, as a hostile peer would.
        remote = client.conn.remote_settings
        remote[h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS] = 1000
        remote.acknowledge()
        for _ in range(3):
            client.send(client.request(b"POST", end=False), b"x")
        await client.wait_for_pong()
        self.assertIsNone(client.terminated)
        client.request(b"POST", end=False)
        await client.when(lambda: client.terminated is not None)
        self.assertEqual(client.terminated, h2.errors.ErrorCodes.PROTOCOL_ERROR)

    async def test_ping_does_not_keep_an_idle_connection(self) -> None:
        """PING frames are not requests: the idle timeout closes the connection regardless."""
        client = await self.connect(Limits(idle_timeout=1))
        self.assertEqual(await self.get(client), 200)
        pinging = task.LoopingCall(client.ping)
        pinging.start(0.2)
        self.addCleanup(lambda: pinging.stop() if pinging.running else None)
        await client.when(lambda: client.closed or client.terminated is not None)
        self.assertTrue(client.closed or client.terminated == _NO_ERROR)



class LeanProcessTests(SynchronousTestCase):
    """LimitedRequest.process_lean answers as twisted.web's ``process`` does, as certsrv."""

    def answer(self, root: resource.Resource, head: bytes, when: float = 0.0) -> bytes:
        from twisted.internet.testing import StringTransport

        clock = task.Clock()
        clock.advance(when)
        site = LimitedSite(root, reactor=clock)
        channel = site.buildProtocol(None)
        transport = StringTransport()
        channel.makeConnection(transport)
        channel.dataReceived(head)
        value: bytes = transport.value()
        return value

    def test_server_and_date_once(self) -> None:
        received = self.answer(_Text(), b"GET / HTTP/1.1\r\nHost: h\r\n\r\n", 1_795_000_000)
        head = received.split(b"\r\n\r\n")[0].lower()
        self.assertEqual(head.count(b"\r\nserver: "), 1)
        self.assertIn(b"\r\nserver: certsrv\r\n", head)
        # The date of the site's clock (RFC 9110 5.6.7), not of the machine's.
        self.assertIn(b"\r\ndate: wed, 18 nov 2026 11:06:40 gmt\r\n", head)

    def test_options_star(self) -> None:
        received = self.answer(_Text(), b"OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n")
        self.assertTrue(received.startswith(b"HTTP/1.1 200 OK\r\n"), received)

    def test_encoding_resource(self) -> None:
        import zlib

        root = resource.EncodingResourceWrapper(_Text(), [server.GzipEncoderFactory()])
        received = self.answer(root, b"GET / HTTP/1.1\r\nHost: h\r\nAccept-Encoding: gzip\r\n"
                                     b"Connection: close\r\n\r\n")
        head, _, body = received.partition(b"\r\n\r\n")
        self.assertIn(b"Content-Encoding: gzip", head)
        chunks, data = [], body
        while True:  # the chunked body, decoded
            size, _, data = data.partition(b"\r\n")
            if int(size, 16) == 0:
                break
            chunks.append(data[:int(size, 16)])
            data = data[int(size, 16) + 2:]
        self.assertEqual(zlib.decompress(b"".join(chunks), 16 + zlib.MAX_WBITS), b"text\n")


class _Text(resource.Resource):
    isLeaf = True

    def render_GET(self, request: server.Request) -> bytes:
        return b"text\n"
