"""certsrv.web.http11: HTTP/1.1 parsed by llhttp, answered through twisted.web's Request.

In memory over a StringTransport (the TLS side is tested elsewhere): what applications see,
pipelining in order, the refusals, and a differential check against twisted.web's own
HTTPChannel on generated requests cut at arbitrary points.
"""

from __future__ import annotations

import re
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import task
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase
from twisted.web import http, resource, server

from certsrv.web.http11 import HTTP11Channel
from certsrv.web.limits import LimitedSite, Limits


class _Record(resource.Resource):
    """Answers every request with what it received; ``hold`` keeps them unanswered."""

    isLeaf = True

    def __init__(self, hold: bool = False) -> None:
        super().__init__()
        self.hold = hold
        self.seen: list[tuple[bytes, bytes, bytes, list[tuple[bytes, bytes]], bytes]] = []
        self.held: list[server.Request] = []

    def render(self, request: server.Request) -> Any:
        assert request.content is not None
        body = request.content.read()
        headers = sorted((n.lower(), v) for n, vs in request.requestHeaders.getAllRawHeaders()
                         for v in vs)
        assert request.method is not None and request.uri is not None
        self.seen.append((request.method, request.uri, request.clientproto, headers, body))
        answer = b"%s %s %d\n" % (request.method, request.uri, len(body))
        request.setHeader(b"content-type", b"text/plain")
        if self.hold:
            self.held.append(request)
            request.write(answer)
            return server.NOT_DONE_YET
        return answer


def _connect(root: resource.Resource, limits: Limits | None = None,
             clock: task.Clock | None = None) -> tuple[Any, StringTransport]:
    """A connection to a site serving ``root``, its timers on ``clock`` (a new one if None)."""
    clock = clock or task.Clock()
    site = LimitedSite(root, limits=limits or Limits(), reactor=clock)
    channel = site.buildProtocol(None)
    channel.callLater = clock.callLater
    transport = StringTransport()
    channel.makeConnection(transport)
    return channel, transport


def _statuses(received: bytes) -> list[int]:
    return [int(m) for m in re.findall(rb"HTTP/1\.[01] (\d{3}) ", received)]


def _exchange(data: bytes | list[bytes], root: resource.Resource | None = None,
              limits: Limits | None = None) -> tuple[bytes, StringTransport]:
    channel, transport = _connect(root or _Record(), limits)
    for piece in [data] if isinstance(data, bytes) else data:
        channel.dataReceived(piece)
    return transport.value(), transport


class RequestTests(SynchronousTestCase):
    """What an application sees and what the peer gets back."""

    def test_keepalive_requests(self) -> None:
        root = _Record()
        received, transport = _exchange(
            b"GET /a?x=1 HTTP/1.1\r\nHost: h\r\n\r\nGET /b HTTP/1.1\r\nHost: h\r\n\r\n", root)
        self.assertEqual(_statuses(received), [200, 200])
        self.assertEqual([s[1] for s in root.seen], [b"/a?x=1", b"/b"])
        self.assertFalse(transport.disconnecting)

    def test_connection_close_and_http10(self) -> None:
        for head in (b"GET / HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, close\r\n\r\n",
                     b"GET / HTTP/1.0\r\n\r\n"):
            root = _Record()
            received, transport = _exchange(head + b"GET /after HTTP/1.1\r\nHost: h\r\n\r\n",
                                            root)
            self.assertEqual(_statuses(received), [200], received)
            self.assertEqual(len(root.seen), 1)  # what follows the last request is not read
            self.assertTrue(transport.disconnecting)
        self.assertIn(b"HTTP/1.1 200 OK", _exchange(
            b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")[0])

    def test_bodies(self) -> None:
        root = _Record()
        received, _ = _exchange([
            b"POST /cl HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhe", b"llo",
            b"POST /chunked HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"3\r\nabc\r\n2;ext=1\r\nde\r\n0\r\nX-Trailer: t\r\n\r\n"], root)
        self.assertEqual(_statuses(received), [200, 200])
        self.assertEqual([s[4] for s in root.seen], [b"hello", b"abcde"])

    def test_head(self) -> None:
        received, _ = _exchange(b"HEAD / HTTP/1.1\r\nHost: h\r\n\r\n")
        self.assertTrue(received.startswith(b"HTTP/1.1 200 OK\r\n"), received)
        self.assertTrue(received.endswith(b"\r\n\r\n"), received)  # no body

    def test_expect_continue(self) -> None:
        root = _Record()
        channel, transport = _connect(root)
        channel.dataReceived(b"POST / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\n"
                             b"Content-Length: 4\r\n\r\n")
        self.assertEqual(transport.value(), b"HTTP/1.1 100 Continue\r\n\r\n")
        channel.dataReceived(b"body")
        self.assertEqual(_statuses(transport.value()), [100, 200])
        self.assertEqual(root.seen[0][4], b"body")

    def test_expect_continue_too_large(self) -> None:
        """Refused before the body is asked for: no 100 Continue."""
        received, transport = _exchange(
            b"POST / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 99\r\n\r\n",
            limits=Limits(max_body_bytes=10))
        self.assertEqual(_statuses(received), [413])
        self.assertTrue(transport.disconnecting)

    def test_bare_lf_pipelined_with_bodies(self) -> None:
        root = _Record()
        received, _ = _exchange(
            b"POST /a HTTP/1.1\nHost: h\nContent-Length: 9\n\nab\ncd\nGET\n"
            b"GET /b HTTP/1.1\nHost: h\n\n", root)
        self.assertEqual(_statuses(received), [200, 200], received)
        self.assertEqual([(s[1], s[4]) for s in root.seen],
                         [(b"/a", b"ab\ncd\nGET"), (b"/b", b"")])

    def test_crlf_split_across_reads(self) -> None:
        root = _Record()
        received, _ = _exchange([b"GET /a HTTP/1.1\r", b"\nHost: h\r", b"\n\r", b"\n"], root)
        self.assertEqual(_statuses(received), [200], received)


class PipeliningTests(SynchronousTestCase):
    """Requests that arrive while one is answered wait for it, in order."""

    def test_answered_in_order(self) -> None:
        root = _Record(hold=True)
        channel, transport = _connect(root)
        channel.dataReceived(b"".join(b"GET /%d HTTP/1.1\r\nHost: h\r\n\r\n" % i
                                      for i in range(3)))
        self.assertEqual([s[1] for s in root.seen], [b"/0"])  # the others wait
        for index in range(3):
            root.held[index].finish()
        self.assertEqual([s[1] for s in root.seen], [b"/0", b"/1", b"/2"])
        bodies = re.findall(rb"GET (/\d) 0", transport.value())
        self.assertEqual(bodies, [b"/0", b"/1", b"/2"])

    def test_queue_bound_stops_reading(self) -> None:
        root = _Record(hold=True)
        channel, transport = _connect(root)
        channel.dataReceived(b"GET /0 HTTP/1.1\r\nHost: h\r\n\r\n")
        channel.dataReceived(b"".join(b"GET /%d HTTP/1.1\r\nHost: h\r\n\r\n" % i
                                      for i in range(1, 60)))
        self.assertEqual(transport.producerState, "paused")
        while len(root.held) < 60:
            root.held[-1].finish()
        self.assertEqual(transport.producerState, "producing")
        root.held[-1].finish()
        self.assertEqual(_statuses(transport.value()), [200] * 60)

    def test_not_answered_while_the_peer_does_not_read(self) -> None:
        """Requests arriving while the transport's buffer is full wait, unanswered, until it
        drains: a read of many small requests cannot heap up answers nobody takes."""
        root = _Record()
        channel, transport = _connect(root)
        channel.dataReceived(b"GET /0 HTTP/1.1\r\nHost: h\r\n\r\n")
        transport.producer.pauseProducing()  # as TCP does when its buffer is full
        channel.dataReceived(b"".join(b"GET /%d HTTP/1.1\r\nHost: h\r\n\r\n" % i
                                      for i in range(1, 6)))
        self.assertEqual([s[1] for s in root.seen], [b"/0"])
        transport.producer.resumeProducing()
        self.assertEqual([s[1] for s in root.seen], [b"/%d" % i for i in range(6)])
        self.assertEqual(_statuses(transport.value()), [200] * 6)

    def test_refusal_waits_for_earlier_answers(self) -> None:
        """A malformed request after a held one is refused after it is answered."""
        root = _Record(hold=True)
        channel, transport = _connect(root)
        channel.dataReceived(b"GET /0 HTTP/1.1\r\nHost: h\r\n\r\n"
                             b"GET /1 HTTP/1.1\r\nHost: h\r\n\r\n"
                             b"GET /2 HTTP/1.1\r\nBad Name: x\r\n\r\n")
        self.assertNotIn(b"400", transport.value())
        root.held[0].finish()
        root.held[1].finish()
        self.assertEqual(_statuses(transport.value()), [200, 200, 400])
        self.assertTrue(transport.disconnecting)

    def test_trailer_fields_are_not_headers(self) -> None:
        """Trailer fields are discarded, whether the request waited in the queue or not."""
        chunked = (b"POST /1 HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                   b"1\r\na\r\n0\r\nX-SSL-Client-Cert: forged\r\nHost: other\r\n"
                   b"Connection: close\r\n\r\n")
        for hold in (False, True):
            root = _Record(hold=hold)
            channel, transport = _connect(root)
            channel.dataReceived(b"GET /0 HTTP/1.1\r\nHost: h\r\n\r\n" + chunked)
            while hold and len(root.held) < 2:
                root.held[-1].finish()
            self.assertEqual(root.seen[1][3], [(b"host", b"h"), (b"transfer-encoding", b"chunked")])
            self.assertEqual(root.seen[1][4], b"a")
            self.assertFalse(transport.disconnecting)

    def test_transport_flow_control_keeps_the_queue_bound(self) -> None:
        """The transport's buffer draining does not resume reading past the queue bound, nor
        the queue being answered while the transport's buffer is full."""
        root = _Record(hold=True)
        channel, transport = _connect(root)
        channel.dataReceived(b"".join(b"GET /%d HTTP/1.1\r\nHost: h\r\n\r\n" % i
                                      for i in range(40)))
        self.assertEqual(transport.producerState, "paused")
        transport.producer.pauseProducing()  # the transport's buffer fills, then drains
        transport.producer.resumeProducing()
        self.assertEqual(transport.producerState, "paused")
        transport.producer.pauseProducing()
        root.held[-1].finish()
        self.assertEqual(len(root.held), 1)  # the next waits for the buffer to drain
        self.assertEqual(transport.producerState, "paused")
        transport.producer.resumeProducing()
        while len(root.held) < 40:
            root.held[-1].finish()
        root.held[-1].finish()
        self.assertEqual(transport.producerState, "producing")  # the queue is answered
        self.assertEqual(_statuses(transport.value()), [200] * 40)

    def test_queued_body_over_the_limit(self) -> None:
        root = _Record(hold=True)
        channel, transport = _connect(root, Limits(max_body_bytes=10))
        channel.dataReceived(b"GET /0 HTTP/1.1\r\nHost: h\r\n\r\n"
                             b"POST /1 HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                             b"10\r\n0123456789abcdef\r\n0\r\n\r\n")
        root.held[0].finish()
        self.assertEqual(_statuses(transport.value()), [200, 413])
        self.assertEqual(len(root.seen), 1)


class RefusalTests(SynchronousTestCase):
    """Requests llhttp or the limits refuse, each with its status, before any application."""

    def assert_refused(self, data: bytes, status: int, limits: Limits | None = None) -> bytes:
        root = _Record()
        received, transport = _exchange(data, root, limits)
        self.assertEqual(_statuses(received), [status], received)
        self.assertEqual(root.seen, [])
        self.assertTrue(transport.disconnecting)
        return received

    def test_malformed(self) -> None:
        for head in (b"G@T / HTTP/1.1\r\nHost: h\r\n\r\n",
                     b"GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n folded\r\n\r\n",
                     b"GET / HTTP/1.1\r\nHost: h\r\nBad Name: x\r\n\r\n",
                     b"GET / HTTP/1.1\r\nHost: h\r\nX: a\x00b\r\n\r\n",
                     b"GET /\xff HTTP/1.1\r\nHost: h\r\n\r\n",
                     b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
                     b"POST / HTTP/1.1\r\nContent-Length: +1\r\n\r\na",
                     b"POST / HTTP/1.1\r\nContent-Length: 3\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
                     b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"):
            self.assert_refused(head, 400)

    def test_unknown_methods(self) -> None:
        """Methods are case-sensitive: one llhttp does not know is not implemented."""
        for method in (b"get", b"PoST", b"FROB"):
            self.assert_refused(method + b" / HTTP/1.1\r\nHost: h\r\n\r\n", 501)

    def test_bare_cr(self) -> None:
        received = self.assert_refused(b"GET / HTTP/1.1\r\nHost: h\rX: 1\r\n\r\n", 400)
        self.assertIn(b"bare CR", received)

    def test_transfer_codings_and_versions(self) -> None:
        self.assert_refused(b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
                            b"0\r\n\r\n", 501)
        self.assert_refused(b"GET / HTTP/2.0\r\nHost: h\r\n\r\n", 505)
        self.assert_refused(b"GET /\r\n\r\n", 505)

    def test_later_minor_version_answered_as_11(self) -> None:
        received, _ = _exchange(b"GET / HTTP/1.7\r\nHost: h\r\n\r\n")
        self.assertTrue(received.startswith(b"HTTP/1.1 200 OK"), received)

    def test_upgrade_ends_the_connection(self) -> None:
        """A body after CONNECT or Upgrade is never read as a request (llhttp skips it)."""
        smuggled = b"GET /smuggled HTTP/1.1\r\nHost: h\r\n\r\n"
        for head in (b"POST / HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: x\r\n"
                     b"Content-Length: %d\r\n\r\n" % len(smuggled),
                     b"CONNECT h:443 HTTP/1.1\r\nHost: h:443\r\n\r\n"):
            root = _Record()
            received, transport = _exchange(head + smuggled, root)
            self.assertEqual(_statuses(received), [200], received)
            self.assertNotIn(b"/smuggled", b"".join(s[1] for s in root.seen))
            self.assertTrue(transport.disconnecting)

    def test_head_never_ending(self) -> None:
        """A field value that never ends is refused once the head passes the backstop."""
        channel, transport = _connect(_Record(), Limits(max_header_bytes=1024))
        channel.dataReceived(b"GET / HTTP/1.1\r\nX: ")
        for _ in range(100):
            channel.dataReceived(b"a" * 1000)
        self.assertEqual(_statuses(transport.value()), [431])
        self.assertTrue(transport.disconnecting)


    def test_trailer_never_ending(self) -> None:
        """A trailer field that never ends is refused like a head's, at the backstop; a large
        chunk of data is not a trailer."""
        limits = Limits(max_header_bytes=1024)
        channel, transport = _connect(_Record(), limits)
        channel.dataReceived(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n"
                             b"\r\n1\r\na\r\n0\r\nX: ")
        for _ in range(100):
            channel.dataReceived(b"a" * 1000)
        self.assertEqual(_statuses(transport.value()), [431])
        self.assertTrue(transport.disconnecting)
        channel, transport = _connect(_Record(), limits)
        channel.dataReceived(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n"
                             b"\r\n30d40\r\n")
        for _ in range(200):
            channel.dataReceived(b"a" * 1000)
        channel.dataReceived(b"\r\n0\r\nX: 1\r\n\r\n")
        self.assertEqual(_statuses(transport.value()), [200])


class TimeoutTests(SynchronousTestCase):
    """The idle timeout counts from the last answer, not while a request is answered."""

    def test_not_while_answering(self) -> None:
        clock = task.Clock()
        root = _Record(hold=True)
        channel, transport = _connect(root, Limits(idle_timeout=10), clock)
        channel.dataReceived(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        clock.advance(25)
        self.assertFalse(transport.disconnecting)
        root.held[0].finish()
        clock.pump([5] * 4)
        self.assertTrue(transport.disconnecting)


    def test_deadline_waits_for_earlier_answer(self) -> None:
        """A pipelined request incomplete past its deadline is refused after the answer
        before it, never inside it."""
        clock = task.Clock()
        root = _Record(hold=True)
        channel, transport = _connect(root, Limits(header_timeout=20), clock)
        channel.dataReceived(b"GET /0 HTTP/1.1\r\nHost: h\r\n\r\nGET /1 HTTP/1.1\r\nHo")
        clock.advance(45)
        self.assertEqual(_statuses(transport.value()), [200])
        self.assertFalse(transport.disconnecting)
        root.held[0].finish()
        self.assertTrue(transport.value().endswith(b"\r\n0\r\n\r\n"))
        clock.advance(20)
        self.assertEqual(_statuses(transport.value()), [200, 408])
        self.assertTrue(transport.disconnecting)
        self.assertEqual(len(root.seen), 1)

    def test_empty_lines_do_not_keep_alive(self) -> None:
        clock = task.Clock()
        channel, transport = _connect(_Record(), Limits(idle_timeout=10), clock)
        channel.dataReceived(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        for _ in range(3):
            clock.advance(4)
            channel.dataReceived(b"\r\n")
        self.assertTrue(transport.disconnecting)


# -- differential: twisted.web's own HTTPChannel and this one see the same requests ----------

_token = st.text("abcdefghijklmnopqrstuvwxyz-", min_size=1, max_size=12).map(str.encode)
_value = st.binary(max_size=30).map(
    lambda b: bytes(c for c in b if 0x21 <= c <= 0x7E or c == 0x20).strip())
_path = st.lists(st.text("abcdefghij0123456789-._~%", max_size=8), max_size=4).map(
    lambda parts: ("/" + "/".join(parts)).encode())
_RESERVED = {b"content-length", b"transfer-encoding", b"connection", b"expect", b"host",
             b"upgrade", b"cookie"}


@st.composite
def _requests(draw: st.DrawFn) -> bytes:
    method = draw(st.sampled_from([b"GET", b"POST", b"PUT", b"DELETE", b"OPTIONS"]))
    fields = [(n, v) for n, v in draw(st.lists(st.tuples(_token, _value), max_size=6))
              if n not in _RESERVED]
    body = draw(st.binary(max_size=40)) if method in (b"POST", b"PUT") else b""
    head = b"%s %s HTTP/1.1\r\nHost: h\r\n" % (method, draw(_path))
    head += b"".join(b"%s: %s\r\n" % field for field in fields)
    if body and draw(st.booleans()):
        sizes = draw(st.lists(st.integers(1, 9), min_size=1, max_size=4))
        chunks, rest = [], body
        for size in sizes:
            chunks.append(b"%x\r\n%s\r\n" % (len(rest[:size]), rest[:size]))
            rest = rest[size:]
            if not rest:
                break
        if rest:
            chunks.append(b"%x\r\n%s\r\n" % (len(rest), rest))
        return head + b"Transfer-Encoding: chunked\r\n\r\n" + b"".join(chunks) + b"0\r\n\r\n"
    if body or method in (b"POST", b"PUT"):
        head += b"Content-Length: %d\r\n" % len(body)
    return head + b"\r\n" + body


def _cut(data: bytes, points: list[int]) -> list[bytes]:
    points = sorted({p % (len(data) + 1) for p in points})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


def _twisted_sees(data: list[bytes]) -> list[Any]:
    root = _Record()
    channel = http.HTTPChannel()
    channel.callLater = task.Clock().callLater  # type: ignore[method-assign]
    channel.requestFactory = server.Request  # type: ignore[assignment]
    channel.site = server.Site(root)  # type: ignore[attr-defined]
    channel.makeConnection(StringTransport())
    for piece in data:
        channel.dataReceived(piece)
    return root.seen


class DifferentialTests(SynchronousTestCase):
    """Generated valid requests, pipelined and cut anywhere: both channels agree."""

    @settings(max_examples=150, deadline=None)
    @given(st.lists(_requests(), min_size=1, max_size=4), st.lists(st.integers(0, 10_000),
                                                                  max_size=6))
    def test_same_requests(self, requests: list[bytes], cuts: list[int]) -> None:
        data = _cut(b"".join(requests), cuts)
        root = _Record()
        channel, transport = _connect(root)
        for piece in data:
            channel.dataReceived(piece)
        self.assertEqual(root.seen, _twisted_sees(data))
        self.assertEqual(len(root.seen), len(requests))
        self.assertEqual(_statuses(transport.value()), [200] * len(requests))

    @settings(max_examples=200, deadline=None)
    @given(st.binary(max_size=200), st.lists(st.integers(0, 300), max_size=4))
    def test_arbitrary_bytes(self, data: bytes, cuts: list[int]) -> None:
        """Never an exception; every answer is a whole HTTP/1.1 response."""
        channel, transport = _connect(_Record())
        for piece in _cut(b"GET / HTTP/1.1\r\nHost: h\r\n" + data, cuts):
            channel.dataReceived(piece)
        for status in _statuses(transport.value()):
            self.assertIn(status, (200, 400, 404, 405, 413, 431, 501, 505))


class ChannelTests(SynchronousTestCase):
    def test_is_twisted_channel(self) -> None:
        """Request objects reach the channel API they expect (twisted.web's HTTPChannel)."""
        self.assertTrue(issubclass(HTTP11Channel, http.HTTPChannel))
