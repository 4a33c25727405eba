"""A small HTTP/2 client over real TLS sockets, built on the ``h2`` package, for limit tests."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.exceptions
from twisted.internet import defer, endpoints, protocol, reactor
from twisted.python.failure import Failure

from certsrv.pki import IssuedCertificate
from certsrv.testing import client_tls_options
from tests._support import PKI


@dataclass
class Stream:
    """What the server sent on one stream."""

    status: int | None = None
    headers: dict[bytes, bytes] = field(default_factory=dict)
    body: bytes = b""
    ended: bool = False
    reset: int | None = None


class H2Client(protocol.Protocol):
    """Speaks HTTP/2 over its transport and records every stream and connection event."""

    def __init__(self) -> None:
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(
            client_side=True, header_encoding=None))
        self.streams: dict[int, Stream] = {}
        self.settings: dict[int, int] = {}
        self.terminated: int | None = None
        self.closed = False
        self.pongs = 0
        self._waiters: list[tuple[Callable[[], bool], defer.Deferred[None]]] = []
        self._pending: dict[int, bytes] = {}
        self._end_after: set[int] = set()

    def connectionMade(self) -> None:
        self.conn.initiate_connection()
        self.flush()

    def flush(self) -> None:
        """Write whatever h2 has queued."""
        data = self.conn.data_to_send()
        if data and self.transport is not None and not self.closed:
            self.transport.write(data)

    def dataReceived(self, data: bytes) -> None:
        try:
            events = self.conn.receive_data(data)
        except h2.exceptions.ProtocolError:
            events = []
        for event in events:
            self._record(event)
        self._send_pending()
        self.flush()
        self._wake()

    def _record(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.ResponseReceived):
            stream = self.streams.setdefault(event.stream_id, Stream())
            stream.headers = {bytes(k): bytes(v) for k, v in event.headers}
            stream.status = int(stream.headers[b":status"])
        elif isinstance(event, h2.events.DataReceived):
            self.streams.setdefault(event.stream_id, Stream()).body += event.data
            self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        elif isinstance(event, h2.events.StreamEnded):
            self.streams.setdefault(event.stream_id, Stream()).ended = True
        elif isinstance(event, h2.events.StreamReset):
            self.streams.setdefault(event.stream_id, Stream()).reset = int(event.error_code)
        elif isinstance(event, h2.events.RemoteSettingsChanged):
            for code, change in event.changed_settings.items():
                self.settings[int(code)] = change.new_value
        elif isinstance(event, h2.events.ConnectionTerminated):
            self.terminated = int(event.error_code)
        elif isinstance(event, h2.events.PingAckReceived):
            self.pongs += 1

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        self.closed = True
        self._wake()

    def _wake(self) -> None:
        for waiter in list(self._waiters):
            predicate, done = waiter
            if waiter in self._waiters and (predicate() or self.closed):
                self._waiters.remove(waiter)
                done.callback(None)

    def when(self, predicate: Callable[[], bool]) -> defer.Deferred[None]:
        """Fires once ``predicate()`` holds (or the connection is gone)."""
        done: defer.Deferred[None] = defer.Deferred()
        self._waiters.append((predicate, done))
        self._wake()
        return done

    def request(self, method: bytes = b"GET", path: bytes = b"/secure",
                extra: Sequence[tuple[bytes, bytes]] = (), end: bool = True) -> int:
        """Open a stream with a request's headers; return its id."""
        stream_id = self.conn.get_next_available_stream_id()
        headers = [(b":method", method), (b":path", path), (b":scheme", b"https"),
                   (b":authority", b"localhost"), *extra]
        self.conn.send_headers(stream_id, headers, end_stream=end)
        self.streams[stream_id] = Stream()
        self.flush()
        return stream_id

    def send(self, stream_id: int, data: bytes, end: bool = False) -> None:
        """Send body bytes as flow control allows (the rest when the server opens windows)."""
        self._pending[stream_id] = self._pending.get(stream_id, b"") + data
        if end:
            self._end_after.add(stream_id)
        self._send_pending()
        self.flush()

    def sent_all(self, stream_id: int) -> bool:
        """Whether everything given to ``send`` for the stream went out."""
        return not self._pending.get(stream_id)

    def _send_pending(self) -> None:
        for stream_id, data in list(self._pending.items()):
            try:
                while data:
                    window = min(self.conn.local_flow_control_window(stream_id),
                                 self.conn.max_outbound_frame_size)
                    if window <= 0:
                        break
                    self.conn.send_data(stream_id, data[:window])
                    data = data[window:]
                if not data and stream_id in self._end_after:
                    self._end_after.discard(stream_id)
                    self.conn.end_stream(stream_id)
            except h2.exceptions.ProtocolError:
                data = b""  # the server closed the stream
            self._pending[stream_id] = data

    def ping(self) -> None:
        """Send a PING."""
        self.conn.ping(os.urandom(8))
        self.flush()

    def wait_for_pong(self) -> defer.Deferred[None]:
        """A PING round trip: the server has read everything sent before it."""
        seen = self.pongs
        self.ping()
        return self.when(lambda: self.pongs > seen)


def h2_options(pki: PKI, cert: IssuedCertificate | None) -> Any:
    """Client TLS options offering only h2, presenting ``cert`` (without its chain) if given."""
    return client_tls_options([pki.root.certificate], cert, send_chain=False, alpn=[b"h2"])


async def connect_h2(port: int, options: Any, host: str = "127.0.0.1") -> H2Client:
    """An HTTP/2 connection to ``host``:``port`` whose server SETTINGS have arrived."""
    client = H2Client()
    endpoint = endpoints.wrapClientTLS(options, endpoints.TCP4ClientEndpoint(
        reactor, host, port))
    await endpoints.connectProtocol(endpoint, client)
    await client.when(lambda: bool(client.settings))
    return client
