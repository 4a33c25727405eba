"""HTTP/2 under the same limits as HTTP/1.1, through real TLS sockets and the ``h2`` package."""

from __future__ import annotations

import h2.errors
import h2.settings
from twisted.internet import reactor, task
from twisted.trial.unittest import TestCase

from certsrv.web.limits import Limits
from tests._h2client import H2Client, connect_h2, h2_options
from tests._support import captured_events, make_server_factory, shared_pki

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

