"""What one peer may cost any listener certsrv opens, over HTTP/1.1 and HTTP/2 alike."""

from __future__ import annotations

import io
from functools import partial
from typing import IO, Any
from urllib.parse import unquote_to_bytes as unquote

import h2.errors
import h2.events
import h2.exceptions
import h2.settings
from hyperframe.frame import GoAwayFrame
from twisted.internet import defer
from twisted.internet.error import ConnectionLost
from twisted.internet.interfaces import IAddress, IDelayedCall
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import http, resource, server

from certsrv._compat import (
    GenericHTTPChannelProtocol,
    H2Connection,
    http2_consumer_blocked,
    http2_still_producing,
    http2_stream_request,
    http2_write_control_data,
    http_channel,
    http_negotiated_protocol,
    preset_response_headers,
    switch_to_http2,
    use_resource_encoder,
)
from certsrv.exceptions import LimitReason
from certsrv.tls.observer import NULL_OBSERVER, Observer
from certsrv.web.bounds import SERVER_NAME, Limits, log_refusal, response_text
from certsrv.web.http11 import HTTP11Channel

__all__ = ["SERVER_NAME", "LimitedChannel", "LimitedRequest", "LimitedSite", "Limits"]

# The largest HTTP/2 stream id: a GOAWAY naming it refuses nothing already sent.
_ANY_STREAM = 2**31 - 1
_log = Logger(namespace="certsrv.limits")


class LimitedRequest(server.Request):
    """A request whose body is kept in memory up to the limit; excess is discarded, not kept."""

    _body_bytes = 0
    _too_large = False

    @property
    def limits(self) -> Limits:
        """The limits of the site serving this request."""
        site: LimitedSite = self.channel.site  # type: ignore[attr-defined]
        return site.limits

    def gotLength(self, length: int | None) -> None:
        if length and length > self.limits.max_body_bytes:
            self._too_large = True
            length = 0
        super().gotLength(length)

    def handleContentChunk(self, data: bytes) -> None:
        if self._too_large:
            return
        self._body_bytes += len(data)
        if self._body_bytes > self.limits.max_body_bytes:
            self._too_large = True
            assert self.content is not None
            self.content.seek(0)
            self.content.truncate()
            # HTTP/1.1 refuses at once; HTTP/2 checks the flag after each DATA frame.
            refuse = getattr(self.channel, "refuse_body", None)
            if refuse is not None:
                refuse()
            return
        super().handleContentChunk(data)

    def process(self) -> None:
        if self._too_large:
            self._refuse_too_large()
        else:
            self.process_lean()

    def process_lean(self) -> None:
        """twisted.web's ``Request.process``, the Server and Date fields set in one step (the
        date made once a second) rather than by two ``setHeader`` calls and a re-set."""
        site: LimitedSite = self.channel.site  # type: ignore[attr-defined]
        self.site = site
        preset_response_headers(self.responseHeaders, SERVER_NAME, _http_date(site.reactor))
        self.prepath = []
        self.postpath = list(map(unquote, self.path[1:].split(b"/")))
        if self.path == b"*":
            server.Request.process(self)  # twisted.web's own answer to OPTIONS *
            return
        try:
            found = site.getResourceFor(self)
            use_resource_encoder(self, found)
            self.render(found)
        except BaseException:
            self.processingFailed(Failure())

    def _refuse_too_large(self) -> None:
        self.site = self.channel.site  # type: ignore[attr-defined]
        self.setResponseCode(http.REQUEST_ENTITY_TOO_LARGE)
        self.setHeader(b"server", SERVER_NAME)
        self.setHeader(b"connection", b"close")
        self.setHeader(b"content-type", b"text/plain; charset=utf-8")
        self.write(response_text(413, self._body_message()))
        self.finish()

    def _body_message(self) -> str:
        return f"request body larger than {self.limits.max_body_bytes} bytes"


class LimitedH2Connection(H2Connection):
    """HTTP/2 under the same limits, answered per stream, plus a bound on concurrent streams.

    Its ``_request*`` methods override H2Connection's private ones (listed in
    ``_compat.HTTP2_CONNECTION_OVERRIDES``).
    """

    def __init__(self, limits: Limits, reactor: Any = None) -> None:
        # The site's clock (the reactor, or a test's Clock) runs its timers.
        super().__init__(reactor)
        self.limits = limits
        # Advertised in the connection preface and enforced by h2 (beyond them: GOAWAY).
        self.conn.local_settings = h2.settings.Settings(client=False, initial_values={
            h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: limits.max_streams,
            h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: limits.hpack_bound,
        })
        self.conn.decoder.max_header_list_size = limits.hpack_bound
        self._deadlines: dict[int, IDelayedCall] = {}
        self._receiving = False
        self._progress = False
        self._draining = False
        self._drain_call: IDelayedCall | None = None
        self._last_stream: int | None = None  # set by the final GOAWAY of a drain
        self._drain_closing = False

    def drain(self, grace: float) -> None:
        """GOAWAY, answer the streams begun, then close (RFC 9113 section 6.8)."""
        if self._draining:
            return
        self._draining = True
        # A first GOAWAY naming any stream stops new ones without refusing a request already
        # on its way; the final one, a grace later, names the last stream that will be served.
        self._goaway(_ANY_STREAM)
        self._drain_call = self.callLater(grace, self._final_goaway)

    def _final_goaway(self) -> None:
        self._drain_call = None
        self._last_stream = self.conn.highest_inbound_stream_id
        self._goaway(self._last_stream)
        if not self.streams:
            self._close_drained()

    def _goaway(self, last_stream_id: int) -> None:
        # h2's close_connection would forbid sending on the streams still to be answered, so
        # the frame is written here, after whatever h2 has queued.
        http2_write_control_data(self)
        if self.transport is not None and http2_still_producing(self):
            self.transport.write(GoAwayFrame(stream_id=0, last_stream_id=last_stream_id,
                                             error_code=h2.errors.ErrorCodes.NO_ERROR
                                             ).serialize())

    def _close_drained(self) -> None:
        """Close once the responses written so far are handed to the transport."""
        if self._drain_closing or not http2_still_producing(self) or self.transport is None:
            return
        blocked = http2_consumer_blocked(self)
        if blocked is not None:
            # Control frames wait behind a full transport; close after they are written.
            blocked.addCallback(lambda _: self._close_drained())
            return
        self._drain_closing = True
        transport: Any = self.transport
        # The TLS transport closes only once its producer (this connection) is gone.
        transport.unregisterProducer()
        transport.loseConnection()

    def dataReceived(self, data: bytes) -> None:
        self._receiving, self._progress = True, False
        try:
            super().dataReceived(data)
        finally:
            self._receiving = False
        if self._progress:
            super().resetTimeout()

    def resetTimeout(self) -> None:
        # Twisted resets the idle timer on every frame received; only progress counts here.
        if not self._receiving:
            super().resetTimeout()

    def _requestReceived(self, event: h2.events.RequestReceived) -> None:
        self._progress = True
        stream_id = event.stream_id
        if self._last_stream is not None and stream_id > self._last_stream:
            # Opened after the final GOAWAY: refused unprocessed, so the client may retry it.
            self.conn.reset_stream(stream_id, h2.errors.ErrorCodes.REFUSED_STREAM)
            http2_write_control_data(self)
            return
        fields = event.headers
        count = sum(1 for name, _ in fields if not name.startswith(b":"))
        size = sum(len(name) + len(value) + 2 for name, value in fields)
        if size > self.limits.max_header_bytes:
            self._refuse(stream_id, 431, LimitReason.HEADERS_TOO_LARGE,
                         f"header fields larger than {self.limits.max_header_bytes} bytes")
            return
        if count > self.limits.max_headers:
            self._refuse(stream_id, 431, LimitReason.TOO_MANY_HEADERS,
                         f"more than {self.limits.max_headers} header fields")
            return
        super()._requestReceived(event)
        if self._too_large(stream_id):
            self._refuse_body(stream_id)
        elif event.stream_ended is None:
            self._deadlines[stream_id] = self.callLater(
                self.limits.body_timeout, partial(self._expired, stream_id))

    def _requestDataReceived(self, event: h2.events.DataReceived) -> None:
        self._progress = True
        if event.stream_id not in self.streams:
            # A stream already refused: give the connection window back.
            self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            return
        super()._requestDataReceived(event)
        if self._too_large(event.stream_id):
            self._refuse_body(event.stream_id)

    def _requestEnded(self, event: h2.events.StreamEnded) -> None:
        self._progress = True
        self._cancel_deadline(event.stream_id)
        if event.stream_id in self.streams:
            super()._requestEnded(event)

    def _requestAborted(self, event: h2.events.StreamReset) -> None:
        self._cancel_deadline(event.stream_id)
        if event.stream_id in self.streams:
            super()._requestAborted(event)

    def _requestDone(self, streamID: int) -> None:
        self._cancel_deadline(streamID)
        super()._requestDone(streamID)
        if self._last_stream is not None and not self.streams:
            self._close_drained()

    def _too_large(self, stream_id: int) -> bool:
        request = http2_stream_request(self.streams.get(stream_id))
        return bool(getattr(request, "_too_large", False))

    def _refuse_body(self, stream_id: int) -> None:
        self._refuse(stream_id, 413, LimitReason.BODY_TOO_LARGE,
                     f"request body larger than {self.limits.max_body_bytes} bytes")

    def _expired(self, stream_id: int) -> None:
        self._deadlines.pop(stream_id, None)
        self._refuse(stream_id, 408, LimitReason.REQUEST_TIMEOUT,
                     f"request body not received within {self.limits.body_timeout} s")

    def _cancel_deadline(self, stream_id: int) -> None:
        deadline = self._deadlines.pop(stream_id, None)
        if deadline is not None and deadline.active():
            deadline.cancel()

    def _refuse(self, stream_id: int, status: int, reason: LimitReason, message: str) -> None:
        """Answer ``status`` on the stream and forget it; what the peer still sends is dropped."""
        log_refusal(self, self.getPeer(), status, reason, message)
        body = response_text(status, message)
        try:
            fits = self.conn.local_flow_control_window(stream_id) >= len(body)
            headers = [(b":status", b"%d" % status), (b"server", SERVER_NAME),
                       (b"content-type", b"text/plain; charset=utf-8")]
            if fits:
                headers.append((b"content-length", b"%d" % len(body)))
            self.conn.send_headers(stream_id, headers, end_stream=not fits)
            if fits:
                self.conn.send_data(stream_id, body, end_stream=True)
        except h2.exceptions.ProtocolError:
            pass  # the stream closed meanwhile
        if stream_id in self.streams:
            self.streams[stream_id].connectionLost(Failure(ConnectionLost(message)))
            self._requestDone(stream_id)
        stream = self.conn.streams.get(stream_id)
        if stream is not None and not stream.closed:
            # A peer still sending gets to finish, its data discarded, until body_timeout:
            # clients such as curl 7.88 drop the answer on an early RST_STREAM(NO_ERROR).
            if status == http.REQUEST_TIMEOUT:
                self._reset(stream_id)
            else:
                self._deadlines[stream_id] = self.callLater(
                    self.limits.body_timeout, partial(self._reset, stream_id))
        http2_write_control_data(self)

    def _reset(self, stream_id: int) -> None:
        self._deadlines.pop(stream_id, None)
        try:
            self.conn.reset_stream(stream_id, h2.errors.ErrorCodes.NO_ERROR)
        except h2.exceptions.ProtocolError:
            pass  # already closed
        http2_write_control_data(self)

    def connectionLost(self, reason: Failure = connectionDone, *args: Any, **kwargs: Any
                       ) -> None:
        for stream_id in list(self._deadlines):
            self._cancel_deadline(stream_id)
        if self._drain_call is not None and self._drain_call.active():
            self._drain_call.cancel()
        self._drain_call = None
        super().connectionLost(reason, *args, **kwargs)


class LimitedChannel(GenericHTTPChannelProtocol):  # type: ignore[misc]
    """A connection of a ``LimitedSite``: HTTP/1.1, or HTTP/2 when ALPN picks h2."""

    limited_site: LimitedSite
    _drain_grace: float | None = None
    _grace_call: IDelayedCall | None = None
    _settled_channel: Any = None

    @classmethod
    def build(cls, site: LimitedSite) -> LimitedChannel:
        """A channel for one new connection to ``site``."""
        channel = cls(HTTP11Channel(site.limits))
        channel.limited_site = site
        return channel

    def makeConnection(self, transport: Any) -> None:
        site = self.limited_site
        site.channels.add(self)
        http_channel(self).makeConnection(transport)
        if site.draining:
            self.drain(site.drain_grace)

    def connectionLost(self, reason: Failure) -> None:
        if self._grace_call is not None and self._grace_call.active():
            self._grace_call.cancel()
        self._grace_call = None
        try:
            http_channel(self).connectionLost(reason)
        finally:
            self.limited_site.channel_closed(self)

    def drain(self, grace: float) -> None:
        """Close gracefully: idle kept-alive connections at once, others once answered."""
        # A connection that has not begun a request yet (new, or still in its handshake) has
        # ``grace`` seconds to begin one; HTTP/2 gets ``grace`` between its two GOAWAYs.
        if self._drain_grace is not None:
            return
        self._drain_grace = grace
        inner = http_channel(self)
        if isinstance(inner, LimitedH2Connection):
            inner.drain(grace)
        elif isinstance(inner, HTTP11Channel):
            inner.drain()
            if inner.idle and not inner.answered:
                self._grace_call = inner.callLater(grace, self._grace_over)

    def _grace_over(self) -> None:
        self._grace_call = None
        inner = http_channel(self)
        if isinstance(inner, HTTP11Channel) and inner.idle:
            inner.loseConnection()

    def abort(self) -> None:
        """Cut the connection off at once."""
        transport: Any = http_channel(self).transport
        if transport is not None:
            transport.abortConnection()

    def dataReceived(self, data: bytes) -> None:
        settled = self._settled_channel
        if settled is not None:  # the protocol is settled: straight to its channel
            settled.dataReceived(data)
            return
        negotiated = getattr(http_channel(self).transport, "negotiatedProtocol", None)
        if http_negotiated_protocol(self) is None and negotiated == b"h2":
            self._switch_to_h2()
        elif negotiated == b"http/1.0":  # HTTP/1.x, which Twisted's own switch does not take
            self._settled_channel = http_channel(self)
            self._settled_channel.dataReceived(data)
            return
        super().dataReceived(data)
        if http_negotiated_protocol(self) is not None:
            self._settled_channel = http_channel(self)

    def _switch_to_h2(self) -> None:
        # Twisted's own switch, with our H2 connection class (see _compat.switch_to_http2).
        connection = LimitedH2Connection(self.limited_site.limits,
                                         getattr(self.limited_site, "reactor", None))
        switch_to_http2(self, connection, self.limited_site.timeOut)
        if self._drain_grace is not None:
            connection.drain(self._drain_grace)


_date: list[Any] = [None, b""]


def _http_date(clock: Any) -> bytes:
    """The Date field for now on ``clock``, made once a second."""
    second = int(clock.seconds())
    if _date[0] != second:
        _date[:] = [second, http.datetimeToString(second)]
    date: bytes = _date[1]
    return date


def _build_channel(site: LimitedSite) -> LimitedChannel:
    return site.channel_class.build(site)


class LimitedSite(server.Site):
    """A Site under ``limits``: bounded connections, headers, bodies (in memory) and time."""

    protocol = _build_channel  # type: ignore[assignment]
    requestFactory = LimitedRequest
    channel_class: type[LimitedChannel] = LimitedChannel
    displayTracebacks = False

    def __init__(self, root: resource.IResource, *, limits: Limits | None = None,
                 name: str = "HTTP", **kwargs: Any) -> None:
        self.limits = limits or Limits()
        self.name = name
        kwargs.setdefault("timeout", self.limits.idle_timeout)
        super().__init__(root, **kwargs)
        self.channels: set[LimitedChannel] = set()
        self.draining = False
        self.drain_grace = 0.0
        self._closed: list[defer.Deferred[None]] = []
        self._turned_away = 0
        # Hears every decision (refusals here; handshakes and requests in a certsrv site).
        self.observer: Observer = NULL_OBSERVER

    @property
    def connections(self) -> int:
        """How many connections the site holds."""
        return len(self.channels)

    def channel_closed(self, channel: LimitedChannel) -> None:
        """A connection has closed (its data written, or cut off)."""
        self.channels.discard(channel)
        if not self.channels:
            waiting, self._closed = self._closed, []
            for waiter in waiting:
                if not waiter.called:  # not given up on (cancelled) meanwhile
                    waiter.callback(None)

    def drain(self, grace: float) -> None:
        """Close every connection gracefully, and each new one too (see LimitedChannel.drain)."""
        self.draining = True
        self.drain_grace = grace
        for channel in list(self.channels):
            channel.drain(grace)

    def when_closed(self) -> defer.Deferred[None]:
        """Fires once the site holds no connection."""
        if not self.channels:
            return defer.succeed(None)
        waiter: defer.Deferred[None] = defer.Deferred()
        self._closed.append(waiter)
        return waiter

    def abort(self) -> None:
        """Cut every connection off at once."""
        for channel in list(self.channels):
            channel.abort()

    def buildProtocol(self, addr: IAddress | None) -> Any:
        """A new connection, unless the site already holds ``max_connections``."""
        if self.connections >= self.limits.max_connections:
            # Returning None closes the new connection at once; existing ones are untouched.
            self._turned_away += 1
            if self._turned_away == 1 or self._turned_away % 1000 == 0:
                _log.warn("refusing {listener} connections from {peer}: {count} open, the "
                          "maximum; {refused} refused so far", listener=self.name,
                          peer=str(addr), count=self.connections, refused=self._turned_away,
                          reason=LimitReason.MAX_CONNECTIONS.value)
            return None
        return super().buildProtocol(addr)

    def getResourceFor(self, request: server.Request) -> resource.IResource:
        """The resource for ``request``."""
        # server.Site.getResourceFor, without its frame.
        request.site = self
        request.sitepath = list(request.prepath or ())  # type: ignore[attr-defined]
        return resource.getChildForRequest(self.resource, request)

    def getContentFile(self, length: int | None) -> IO[bytes]:
        """Request bodies stay in memory (within ``max_body_bytes``), never in a file."""
        return io.BytesIO()
