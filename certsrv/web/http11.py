"""HTTP/1.1 parsed by llhttp (``httptools``), answered through twisted.web's ``Request``."""

from __future__ import annotations

import re
from collections import deque
from functools import partial
from typing import Any

import httptools
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.protocol import connectionDone
from twisted.python.failure import Failure
from twisted.web import http
from twisted.web.http import HTTPChannel
from twisted.web.http_headers import Headers

from certsrv._compat import network_producer
from certsrv.exceptions import LimitReason
from certsrv.web.bounds import SERVER_NAME, Limits, log_refusal, response_text

__all__ = ["HTTP11Channel"]

# Requests received while an earlier one is answered are queued (pipelining); past these
# bounds the connection stops reading until the queue is answered.
_QUEUE_BYTES = 0x10000
_QUEUE_DEPTH = 32
_BARE_CR = "bare CR in the request line or a header field"
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+ ")


class _Stop(Exception):
    """Raised in a parser callback: the connection reads no further request."""


class _Message:
    """One request as the parser delivers it, until twisted.web's ``Request`` takes it."""

    __slots__ = ("body", "body_bytes", "complete", "expect_continue", "fields", "head_done",
                 "length", "method", "persistent", "refusal", "remaining", "request", "url",
                 "version")

    def __init__(self) -> None:
        self.url: list[bytes] = []
        self.fields: list[tuple[bytes, bytes]] = []
        self.method = b""
        self.version = b"HTTP/1.1"
        self.head_done = False
        self.complete = False
        self.persistent = True
        self.expect_continue = False
        self.length: int | None = 0
        self.remaining: int | None = None  # body bytes still to come, when counted
        self.body: list[bytes] = []
        self.body_bytes = 0
        self.request: Any = None
        self.refusal: tuple[int, LimitReason, str] | None = None


def _refusal(status: int, reason: LimitReason, message: str) -> _Message:
    message_ = _Message()
    message_.refusal = (status, reason, message)
    return message_


class HTTP11Channel(HTTPChannel):
    """HTTP/1.1 under limits: header count and bytes (431), body (413), deadlines (408).

    llhttp parses; each request becomes a twisted.web ``Request`` when the ones before it
    are answered, so applications see what twisted.web's own channel gives them.
    """

    def __init__(self, limits: Limits) -> None:
        super().__init__()
        self.limits = limits
        self._max_header_bytes = limits.max_header_bytes
        self._max_headers = limits.max_headers
        # A head still incomplete after this many bytes is refused even before its fields
        # end (llhttp keeps a field's partial value in memory).
        self._head_backstop = 2 * limits.max_header_bytes + 65_536
        self._parser = httptools.HttpRequestParser(self)
        # RFC 9112 2.2: a bare LF may end a line (nginx and Apache take it; TLS test suites
        # send "GET / HTTP/1.0\n\n"); llhttp takes it in fields, the request line is mended.
        # The version is checked here (a later HTTP/1.x is answered as 1.1, RFC 9110 2.5).
        self._parser.set_dangerous_leniencies(lenient_optional_cr_before_lf=True,
                                              lenient_version=True)
        self._parsing: _Message | None = None
        self._queue: deque[_Message] = deque()
        self._queued_bytes = 0
        self._head_bytes = 0
        self._head_raw = 0
        self._in_head = False
        self._after_cr = False
        self._handling = False
        self._advancing = False
        self._paused = False  # reading stopped until the queue is answered
        self._write_blocked = False  # reading stopped until the transport's buffer drains
        self._stopped = False  # no further request is read (refused, or not persistent)
        self._refused = False
        self._draining = False
        self._phase: str | None = None  # "headers" or "body" while a request arrives
        self._deadline: IDelayedCall | None = None
        self._abort: IDelayedCall | None = None
        self._peer: Any = None
        # A request has been received whole: idle from then on means kept alive.
        self.answered = False

    @property
    def idle(self) -> bool:
        """No request in progress, not even a part of one."""
        return not self.requests and not self._queue and self._parsing is None

    # -- what arrives ----------------------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        if self._stopped:
            return
        if self._parsing is not None or data.strip(b"\r\n"):
            self.resetTimeout()  # not for empty lines between requests (llhttp skips them)
        try:
            if data.count(b"\n") != data.count(b"\r\n"):
                self._feed_bare_lf(data)
            else:
                self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            pass  # the request was answered as any other and is the last (see on_headers)
        except httptools.HttpParserError as error:
            self._parse_error(error, data)
        self._after_cr = data[-1:] == b"\r"
        if self._in_head and not self._stopped:
            self._head_raw += len(data)
            if self._head_raw > self._head_backstop:
                self._too_large()
        if self._phase is not None and self._deadline is None and not self._stopped:
            # Armed only for a request still incomplete after the data that began its
            # phase, so a request arriving whole costs no timer.
            timeout = (self.limits.header_timeout if self._phase == "headers"
                       else self.limits.body_timeout)
            self._deadline = self.callLater(timeout, partial(self._expired, self._phase))

    def _feed_bare_lf(self, data: bytes) -> None:
        """Feed a read holding a bare LF: lines of a head end in CRLF for llhttp, a body
        passes as sent (split at its end when its length is known)."""
        feed = self._parser.feed_data
        lone_lf_ends_crlf = self._after_cr
        while data and not self._stopped:
            message = self._parsing
            if message is not None and message.remaining is not None:
                piece, data = data[:message.remaining], data[message.remaining:]
            else:
                end = data.find(b"\n") + 1 or len(data)
                piece, data = data[:end], data[end:]
                if ((message is None or not message.head_done) and piece[-1:] == b"\n"
                        and piece[-2:-1] != b"\r" and not (lone_lf_ends_crlf and piece == b"\n")):
                    piece = piece[:-1] + b"\r\n"
            lone_lf_ends_crlf = False
            feed(piece)

    def _parse_error(self, error: httptools.HttpParserError, data: bytes) -> None:
        cause = error.__context__
        if isinstance(cause, _Stop) or self._stopped:
            return  # refused already, or data after the last request: dropped
        if cause is not None and isinstance(error, httptools.HttpParserCallbackError):
            raise cause
        if isinstance(error, httptools.HttpParserInvalidMethodError) and _TOKEN.match(data):
            # RFC 9110 9.1: a method not recognized (methods are case-sensitive) is 501.
            self._refuse_in_turn(501, LimitReason.BAD_REQUEST, "request method not implemented")
            return
        bare_cr = data.count(b"\r") != data.count(b"\r\n")
        self._refuse_in_turn(400, LimitReason.BAD_REQUEST,
                             _BARE_CR if bare_cr else f"malformed request: {error}")

    # -- llhttp's callbacks ----------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self._stopped:
            raise _Stop()
        self._parsing = _Message()
        self._head_bytes = self._head_raw = 0
        self._in_head = True
        self._phase = "headers"

    def on_url(self, url: bytes) -> None:
        message = self._parsing
        assert message is not None
        message.url.append(url)
        self._head_bytes += len(url)
        if self._head_bytes > self._max_header_bytes:
            self._too_large()
            raise _Stop()

    def on_header(self, name: bytes, value: bytes) -> None:
        message = self._parsing
        assert message is not None
        # Counted as the lines are sent (name, ": ", value), without their CRLF.
        self._head_bytes += len(name) + 2 + len(value)
        if value and value[-1] in b" \t":
            value = value.rstrip(b" \t")  # llhttp strips leading whitespace only
        if not message.head_done:  # a trailer field is counted, then discarded (as by Twisted)
            message.fields.append((name, value))
        if len(message.fields) > self._max_headers:
            self._refuse_in_turn(431, LimitReason.TOO_MANY_HEADERS,
                                 f"more than {self.limits.max_headers} header fields")
            raise _Stop()
        if self._head_bytes > self._max_header_bytes:
            self._too_large()
            raise _Stop()
        if message.head_done:
            return
        size = len(name)
        if size == 10 and name.lower() == b"connection":
            if b"close" in _tokens(value):
                message.persistent = False
        elif size == 6 and name.lower() == b"expect":
            message.expect_continue = value.lower() == b"100-continue"
        elif size == 17 and name.lower() == b"transfer-encoding":
            if value.lower() != b"chunked":  # llhttp has checked chunked comes last
                self._refuse_in_turn(501, LimitReason.BAD_REQUEST,
                                     "a transfer coding other than chunked")
                raise _Stop()

    def on_headers_complete(self) -> None:
        message = self._parsing
        assert message is not None
        parser = self._parser
        method = parser.get_method()
        version = parser.get_http_version()
        self._head_bytes += len(method) + 10  # the request line: METHOD SP url SP HTTP/x.y
        if self._head_bytes > self._max_header_bytes:
            self._too_large()
            raise _Stop()
        if version == "1.1":
            message.version = b"HTTP/1.1"
        elif version == "1.0":
            message.version = b"HTTP/1.0"
            message.persistent = False
        elif version[:2] == "1.":
            message.version = b"HTTP/1.1"  # RFC 9110 2.5: a later 1.x is answered as 1.1
        else:
            self._refuse_in_turn(505, LimitReason.BAD_REQUEST, f"HTTP/{version} is not served")
            raise _Stop()
        message.method = method
        message.head_done = True
        self._in_head = False
        if parser.should_upgrade():
            # CONNECT and Upgrade are answered as plain requests and end the connection:
            # llhttp reads no body after them, another parser might.
            message.persistent = False
        message.length = _content_length(message.fields)
        message.remaining = message.length or None
        self._phase = "body" if message.length != 0 else None
        self._cancel_deadline()
        if not self.requests and not self._queue and not self._write_blocked:
            self._open(message)
        else:
            # Behind another, or while the peer does not read its answers: waits its turn
            # (so a read of many small requests cannot heap up answers nobody takes).
            self._enqueue(message)

    def on_chunk_header(self) -> None:
        # Until data follows, this may be the last chunk, whose trailer fields llhttp buffers
        # as it does a head's: the backstop counts them (the head's fields are counted too).
        self._in_head = True
        self._head_raw = 0

    def on_body(self, data: bytes) -> None:
        message = self._parsing
        assert message is not None
        if self._stopped:
            raise _Stop()
        self._in_head = False
        if message.remaining is not None:
            message.remaining -= len(data)
        if message.request is not None:
            message.request.handleContentChunk(data)
        else:
            message.body_bytes += len(data)
            self._queued_bytes += len(data)
            if message.body_bytes <= self.limits.max_body_bytes:
                message.body.append(data)
            self._maybe_pause()

    def on_message_complete(self) -> None:
        message = self._parsing
        assert message is not None
        if self._stopped:
            raise _Stop()
        self._parsing = None
        self._phase = None
        self._in_head = False
        self._cancel_deadline()
        message.complete = True
        if not message.persistent:
            self._stopped = True  # what follows the last request is not read
        if message.request is not None and not self._handling:
            self._dispatch(message)

    # -- requests, in turn -----------------------------------------------------------------

    def _open(self, message: _Message) -> None:
        """Hand ``message`` to a new twisted.web ``Request``: now the request in progress."""
        request = self.requestFactory(self)
        self.requests.append(request)
        message.request = request
        add = request.requestHeaders.addRawHeader
        for name, value in message.fields:
            add(name, value)
        request.parseCookies()
        # Persistence as parsed (version, Connection tokens, upgrade), unless draining.
        self.persistent = message.persistent and not self._draining
        if not self.persistent and (self._draining or message.version == b"HTTP/1.1"):
            request.responseHeaders.setRawHeaders(b"connection", [b"close"])
        length = message.length
        if ((length is not None and length > self.limits.max_body_bytes)
                or message.body_bytes > self.limits.max_body_bytes):
            self.refuse_body()  # before the body, and before any 100 Continue
            return
        request.gotLength(length)
        if message.expect_continue and message.version == b"HTTP/1.1" and not message.complete:
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")  # type: ignore[union-attr]
        for chunk in message.body:
            request.handleContentChunk(chunk)
        message.body = []

    def _dispatch(self, message: _Message) -> None:
        self._handling = True
        self.answered = True
        message.request.requestReceived(message.method, b"".join(message.url),
                                        message.version)

    def _enqueue(self, message: _Message) -> None:
        self._queue.append(message)
        self._queued_bytes += self._head_bytes
        self._maybe_pause()

    def _maybe_pause(self) -> None:
        if not self._paused and (len(self._queue) > _QUEUE_DEPTH
                                 or self._queued_bytes > _QUEUE_BYTES):
            self._paused = True
            network_producer(self).pauseProducing()

    def requestDone(self, request: Any) -> None:
        if not self.requests or request is not self.requests[0]:
            raise TypeError("requestDone for a request not in progress")
        del self.requests[0]
        self._handling = False
        if not self.persistent:
            self._queue.clear()
            self.loseConnection()
            return
        self._advance()

    def _advance(self) -> None:
        """Open the next queued request, and dispatch those already whole, in order."""
        if self._advancing:
            return  # a request dispatched below finished at once: the loop goes on
        self._advancing = True
        try:
            while (self._queue and not self.requests and not self._refused
                   and not self._write_blocked):
                message = self._queue.popleft()
                self._queued_bytes -= message.body_bytes
                if message.refusal is not None:
                    self._refuse(*message.refusal)
                    break
                self._open(message)
                if message.complete and self.requests and not self._refused:
                    self._dispatch(message)
        finally:
            self._advancing = False
        if not self._queue:
            self._queued_bytes = 0
            if self._paused:
                self._paused = False
                if not self._write_blocked:
                    network_producer(self).resumeProducing()

    def pauseProducing(self) -> None:
        self._write_blocked = True  # the transport's buffer is full: reading stops too
        super().pauseProducing()

    def resumeProducing(self) -> None:
        self._write_blocked = False
        super().resumeProducing()
        if self._paused:
            network_producer(self).pauseProducing()  # reading still waits for the queue
        if not self.requests and self.transport is not None:
            self._advance()  # requests queued while the peer was not reading

    def getPeer(self) -> Any:
        """The peer's address, asked of the transport once (each request asks for it)."""
        if self._peer is None:
            self._peer = super().getPeer()
        return self._peer

    def writeHeaders(self, version: bytes, code: bytes, reason: bytes, headers: Any) -> None:
        """The status line and fields, as twisted.web writes them, in one write."""
        if not isinstance(headers, Headers):
            super().writeHeaders(version, code, reason, headers)
            return
        lines = [b"%s %s %s\r\n" % (version, code, reason)]
        for name, values in headers.getAllRawHeaders():
            for value in values:
                lines.append(b"%s: %s\r\n" % (name, value))
        lines.append(b"\r\n")
        self.transport.write(b"".join(lines))  # type: ignore[union-attr]

    # -- persistence, deadlines, refusals --------------------------------------------------

    def drain(self) -> None:
        """Close the connection gracefully: at once when kept alive idle, else once answered."""
        self._draining = True
        for request in self.requests:
            if not request.startedWriting:
                request.responseHeaders.setRawHeaders(b"connection", [b"close"])
        if self.requests:
            self.persistent = False
        elif self.idle and self.answered:
            self.loseConnection()

    def timeoutConnection(self) -> None:
        if not self.idle:
            # Idle means no request: one being answered keeps the connection (one timer
            # per connection, re-armed here, rather than one per request), one arriving
            # has its own deadline.
            self.setTimeout(self.timeOut)
            return
        super().timeoutConnection()

    def refuse_body(self) -> None:
        """The body of the request being received is over the limit: answer 413 and close."""
        self._refuse(413, LimitReason.BODY_TOO_LARGE,
                     f"request body larger than {self.limits.max_body_bytes} bytes")

    def _too_large(self) -> None:
        self._refuse_in_turn(431, LimitReason.HEADERS_TOO_LARGE, "request line and headers "
                             f"larger than {self.limits.max_header_bytes} bytes")

    def _refuse_in_turn(self, status: int, reason: LimitReason, message: str) -> None:
        """Refuse the request being parsed once those before it are answered."""
        if not (self._handling or self._queue):
            self._refuse(status, reason, message)
            return
        if self._queue and self._queue[-1] is self._parsing:
            self._queue.pop()  # its head was queued: the refusal answers it instead
        self._queue.append(_refusal(status, reason, message))
        self._stopped = True
        self._phase = None
        self._cancel_deadline()

    def _expired(self, phase: str) -> None:
        self._deadline = None
        seconds = self.limits.header_timeout if phase == "headers" else self.limits.body_timeout
        if self._handling or self._queue:
            # An earlier request is still answered (and reading may be paused for it): the
            # refusal would go out before its answer, so this request gets more time.
            self._deadline = self.callLater(seconds, partial(self._expired, phase))
            return
        self._refuse(408, LimitReason.REQUEST_TIMEOUT,
                     f"request {phase} not received within {seconds} s")

    def _cancel_deadline(self) -> None:
        if self._deadline is not None:
            if self._deadline.active():
                self._deadline.cancel()
            self._deadline = None

    def _refuse(self, status: int, reason: LimitReason, message: str) -> None:
        self._stopped = True
        if self._refused or self.transport is None:
            return
        self._refused = True
        self._queue.clear()
        self._phase = None
        self._cancel_deadline()
        log_refusal(self, self.transport.getPeer(), status, reason, message)
        body = response_text(status, message)
        self.transport.write(
            b"HTTP/1.1 %d %s\r\nConnection: close\r\nServer: %s\r\n"
            b"Content-Type: text/plain; charset=utf-8\r\nContent-Length: %d\r\n\r\n%s"
            % (status, http.RESPONSES.get(status, b"Error"), SERVER_NAME, len(body), body))
        self.loseConnection()

    def loseConnection(self) -> None:
        """Close once what is written is sent; a peer that never completes the close (TLS
        close_notify, or reading at all) is cut off after ``abortTimeout`` seconds."""
        self._stopped = True
        self._phase = None
        self._cancel_deadline()  # nothing is written after the close
        super().loseConnection()
        transport: Any = self.transport
        if self._abort is None and transport is not None:
            self._abort = self.callLater(self.abortTimeout, transport.abortConnection)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._stopped = True
        self._queue.clear()
        self._cancel_deadline()
        if self._abort is not None and self._abort.active():
            self._abort.cancel()
        self._abort = None
        super().connectionLost(reason)


def _tokens(value: bytes) -> list[bytes]:
    """The lowercased tokens of a field value, split at commas and whitespace."""
    return value.lower().replace(b",", b" ").split()


def _content_length(fields: list[tuple[bytes, bytes]]) -> int | None:
    """The body length the fields declare (llhttp has validated them); None for chunked."""
    length = 0
    for name, value in fields:
        size = len(name)
        if size == 17 and name.lower() == b"transfer-encoding":
            return None
        if size == 14 and name.lower() == b"content-length":
            length = int(value)
    return length
