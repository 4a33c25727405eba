"""The server's TLS context: certificate, trust store, verify mode, and the connection creator."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

from cryptography import x509
from OpenSSL import SSL, crypto
from twisted.internet.interfaces import (
    IAddress,
    IDelayedCall,
    IOpenSSLServerConnectionCreator,
    IProtocol,
    IProtocolFactory,
    IProtocolNegotiationFactory,
    IReactorCore,
    IReactorTime,
)
from twisted.internet.protocol import connectionDone
from twisted.internet.ssl import AcceptableCiphers, CertificateOptions, TLSVersion
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory, TLSMemoryBIOProtocol
from twisted.python.failure import Failure
from zope.interface import implementer

from certsrv._compat import (
    send_now,
    set_groups,
    set_verify,
    tls_finish_without_closing,
    tls_flush_receive,
    tls_handshake_done,
    tls_pending_output,
)
from certsrv.exceptions import ConfigurationError
from certsrv.tls.verify import ClientVerifier, ConnectionState, fill_store
from certsrv.x509.certs import PrivateKey, keys_match

__all__ = ["ClientCertMode", "Current", "ServerTLS", "TLSFactory", "TLSSettings", "build_context"]


class ClientCertMode(enum.Enum):
    """Whether the handshake demands a client certificate."""

    REQUIRE = "require"
    OPTIONAL = "optional"


@dataclass(frozen=True)
class TLSSettings:
    """Everything needed to build the server's TLS context; validated on construction."""

    certificate: x509.Certificate
    private_key: PrivateKey
    chain: tuple[x509.Certificate, ...] = ()
    roots: tuple[x509.Certificate, ...] = ()
    intermediates: tuple[x509.Certificate, ...] = ()
    client_cert: ClientCertMode = ClientCertMode.REQUIRE
    verify_depth: int = 4
    min_tls: str = "1.2"

    def __post_init__(self) -> None:
        if not keys_match(self.certificate, self.private_key):
            raise ConfigurationError("--key", "the private key does not match the server "
                                              "certificate")
        if self.min_tls not in _TLS_VERSIONS:
            raise ConfigurationError("--min-tls", f"{self.min_tls!r} is not one of 1.2, 1.3")
        if not 0 <= self.verify_depth <= 32:
            raise ConfigurationError("--verify-depth", "must be between 0 and 32")


_TLS_VERSIONS = {"1.2": TLSVersion.TLSv1_2, "1.3": TLSVersion.TLSv1_3}
# Mozilla's "intermediate" TLS 1.2 suites with forward secrecy and AEAD only (TLS 1.3 suites
# are AEAD by definition and configured separately by OpenSSL). No DHE: no DH parameters.
_CIPHERS = AcceptableCiphers.fromOpenSSLCipherString(
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"
)
# Key-exchange groups of Mozilla's "intermediate" profile, in preference order.
_GROUPS = b"X25519:P-256:P-384"
_log = Logger(namespace="certsrv.tls")
# Seconds a refused handshake's connection stays half-open for the client to read the alert.
LINGER = 2.0


def _set_groups(ctx: SSL.Context) -> None:
    try:
        set_groups(ctx, _GROUPS)
    except Exception as e:  # keep OpenSSL's default groups rather than fail to start
        _log.warn("cannot restrict TLS key-exchange groups to {groups}: {error}",
                  groups=_GROUPS.decode(), error=str(e))


class NoApplicationProtocol(SSL.Error):
    """ALPN found no protocol in common with the client (RFC 7301 3.2)."""


def _select_alpn(connection: SSL.Connection, offered: list[bytes]) -> bytes:
    """The first of the site's protocols the client offers; http/1.0 (answered as HTTP/1.x,
    as nginx does) for a client offering that alone; else the no_application_protocol alert
    (raised here, OpenSSL sends it), not Twisted's internal_error."""
    protocol: Any = connection.get_app_data()
    site = IProtocolNegotiationFactory(protocol.factory.wrappedFactory, None)
    ours = list(site.acceptableProtocols()) if site is not None else [b"http/1.1"]
    for name in (*ours, b"http/1.0"):
        if name in offered:
            return name
    raise NoApplicationProtocol("no application protocol in common: the client offered "
                                + ", ".join(repr(p) for p in offered))


def build_context(settings: TLSSettings, verifier: ClientVerifier) -> SSL.Context:
    """A fresh, fully configured server context; never mutated after the first connection."""
    options = CertificateOptions(
        acceptableCiphers=_CIPHERS,
        privateKey=crypto.PKey.from_cryptography_key(settings.private_key),
        certificate=crypto.X509.from_cryptography(settings.certificate),
        extraCertChain=[crypto.X509.from_cryptography(c) for c in settings.chain],
        raiseMinimumTo=_TLS_VERSIONS[settings.min_tls],
        # No resumption: a resumed session would skip the verify callback (see README).
        enableSessions=False,
        enableSessionTickets=False,
    )
    ctx = options.getContext()
    ctx.set_options(SSL.OP_NO_RENEGOTIATION | SSL.OP_NO_COMPRESSION)
    ctx.set_alpn_select_callback(_select_alpn)
    _set_groups(ctx)
    mode = SSL.VERIFY_PEER | SSL.VERIFY_CLIENT_ONCE
    if settings.client_cert is ClientCertMode.REQUIRE:
        mode |= SSL.VERIFY_FAIL_IF_NO_PEER_CERT
    set_verify(ctx, mode, verifier.verify_callback)
    ctx.set_verify_depth(settings.verify_depth)
    store = ctx.get_cert_store()
    assert store is not None
    fill_store(store, settings, verifier.allowed_types)
    # The CertificateRequest names the acceptable issuers so clients pick the right cert.
    trusted = settings.roots if verifier.allowed_types.chained else ()
    for cert in (*trusted, *(settings.intermediates if trusted else ())):
        ctx.add_client_ca(cert)
    return ctx


class Current:
    """The configuration in force, held in one place: the TLS settings, the client verifier
    serving with them, and the SSL context built from both.

    The connection creator (``ServerTLS``) and the site (``certsrv.web.site.CertsrvSite``)
    both read it, so a reload swaps it here, once (``replace``), and both see the new one.
    A site built from a bare verifier (without TLS settings) holds one with no context.
    """

    settings: TLSSettings | None
    verifier: ClientVerifier
    context: SSL.Context | None

    def __init__(self, settings: TLSSettings | None, verifier: ClientVerifier) -> None:
        self.settings, self.verifier, self.context = None, verifier, None
        if settings is not None:
            self.replace(settings, verifier)

    @property
    def clock(self) -> IReactorTime:
        """The clock the verifier judges time by."""
        return self.verifier.clock

    def replace(self, settings: TLSSettings, verifier: ClientVerifier | None = None) -> None:
        """Put ``settings`` (and ``verifier``) in force, with a new context built from them;
        connections in flight keep the old context. Raises, changing nothing, if the
        context cannot be built."""
        verifier = verifier or self.verifier
        verifier.attach(settings)
        context = build_context(settings, verifier)
        self.settings, self.verifier, self.context = settings, verifier, context


@implementer(IOpenSSLServerConnectionCreator)
class ServerTLS:
    """Creates server connections from the context in force (``current``)."""

    def __init__(self, current: Current | TLSSettings,
                 verifier: ClientVerifier | None = None) -> None:
        if not isinstance(current, Current):
            assert verifier is not None, "ServerTLS(settings, verifier) or ServerTLS(current)"
            current = Current(current, verifier)
        assert current.context is not None, "a Current without TLS settings cannot serve TLS"
        self.current = current

    @property
    def settings(self) -> TLSSettings:
        """The TLS settings in force."""
        assert self.current.settings is not None
        return self.current.settings

    @property
    def verifier(self) -> ClientVerifier:
        """The client verifier in force."""
        return self.current.verifier

    @property
    def clock(self) -> IReactorTime:
        """The clock the verifier judges time by."""
        return self.current.clock

    def reload(self, settings: TLSSettings, verifier: ClientVerifier | None = None) -> None:
        """Build a new context; connections in flight keep the old one (``Current.replace``)."""
        self.current.replace(settings, verifier)

    def serverConnectionForTLS(self, protocol: object) -> SSL.Connection:
        """A new server-side connection from the context in force."""
        context = self.current.context
        assert context is not None
        return SSL.Connection(context, None)


class _TLSProtocol(TLSMemoryBIOProtocol):  # type: ignore[misc]
    """Twisted's TLS transport, carrying what certsrv learnt about the connection's client.

    Small writes are gathered into one TLS write, as Twisted's ``BufferingTLSTransport``
    does. Those made while received bytes are processed (the answers to the requests in
    them) go out with those of every other connection read in the same reactor turn, at the
    start of the next (``TurnFlusher``), or at the end of the read under a clock that has no
    turns; writes made at other times (an answer that waited) at the next turn. TLS records
    go to the socket at once when nothing else waits there (``send_now``).
    """

    _BATCH_BYTES = 64_000

    def __init__(self, factory: TLSMemoryBIOFactory, wrapped: IProtocol, *args: Any,
                 **kwargs: Any) -> None:
        super().__init__(factory, wrapped, *args, **kwargs)
        # Twisted points the SSL.Connection's app data at this object, so the verify
        # callback finds the state through it.
        self.certsrv_state = ConnectionState()
        self._host: IAddress | None = None
        self._linger: IDelayedCall | None = None
        self._closing = False
        self._out: list[bytes] = []
        self._out_bytes = 0
        self._receiving = False
        self._out_call: IDelayedCall | None = None
        self.flush_waiting = False  # in the factory's TurnFlusher

    def write(self, data: bytes) -> None:
        """Gather ``data``; sent after the received bytes are processed, or next turn."""
        if self._closing:
            return
        self._out.append(bytes(data))
        self._out_bytes += len(data)
        if self._out_bytes > self._BATCH_BYTES:
            self._send_out()
        elif not self._receiving and self._out_call is None:
            clock = cast("TLSFactory", self.factory).tls.clock
            self._out_call = clock.callLater(0, self._send_later)

    def writeSequence(self, data: Any) -> None:
        """Gather the concatenated ``data``."""
        self.write(b"".join(data))

    def _send_later(self) -> None:
        self._out_call = None
        self._send_out()

    def send_gathered(self) -> None:
        """Hand what was gathered to TLS now (the TurnFlusher's call)."""
        self._send_out()

    def _send_out(self) -> None:
        """Hand what was gathered to TLS as one write."""
        out = self._out
        if out:
            data = out[0] if len(out) == 1 else b"".join(out)
            out.clear()
            self._out_bytes = 0
            super().write(data)

    def loseConnection(self) -> None:
        """Send what was gathered, then close."""
        self._send_out()
        super().loseConnection()

    # An override of a private method: listed in _compat.TLS_TRANSPORT_OVERRIDES.
    def _tlsShutdownFinished(self, reason: Failure | None) -> None:
        transport: Any = self.transport
        if (reason is None or tls_handshake_done(self) or self._linger is not None
                or self._closing or transport is None):
            super()._tlsShutdownFinished(reason)
            return
        # Refused in the handshake. Closing at once would make a TLS 1.3 client, which
        # writes right after its Finished, meet a connection reset before it reads the
        # alert: flush the alert, close our sending side only, drop what still comes, and
        # close when the client does (or after LINGER seconds).
        tls_finish_without_closing(self, reason)
        clock = cast("TLSFactory", self.factory).tls.clock
        self._linger = clock.callLater(LINGER, transport.loseConnection)
        transport.loseWriteConnection()

    # Overrides of private methods: listed in _compat.TLS_TRANSPORT_OVERRIDES.
    def _shutdownTLS(self) -> None:
        if not self.disconnecting:
            # The client's close_notify, read with requests: their answers go before ours.
            self._send_out()
        super()._shutdownTLS()

    def _flushReceiveBIO(self) -> None:
        tls_flush_receive(self, to_the_end=self._closing)  # closing: connectionLost reads

    def _flushSendBIO(self) -> None:
        data = tls_pending_output(self)
        if data and self.transport is not None:
            send_now(self.transport, data)

    def dataReceived(self, data: bytes) -> None:
        """Feed TLS, unless the handshake was refused: then the bytes are dropped. What the
        application writes meanwhile is sent once, at the end."""
        if self._linger is not None:
            return
        if self._receiving:  # re-entered (a test's loopback): the outer call sends
            super().dataReceived(data)
            return
        self._receiving = True
        try:
            super().dataReceived(data)
        finally:
            self._receiving = False
        flusher = cast("TLSFactory", self.factory).flusher
        if flusher is None or not self._out:
            self._send_out()
        else:
            flusher.add(self)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """The connection is gone; stop waiting for it to close, drop what was unsent."""
        self._send_out()
        self._closing = True
        if self._linger is not None and self._linger.active():
            self._linger.cancel()
        if self._out_call is not None and self._out_call.active():
            self._out_call.cancel()
        self._out_call = None
        super().connectionLost(reason)

    def getHost(self) -> IAddress:
        """The local address, asked of the kernel once (twisted.web asks on every request)."""
        if self._host is None:
            self._host = super().getHost()
        return self._host


class TurnFlusher:
    """Sends the answers connections gathered while reading, all together, at the start of
    the reactor's next turn: after every connection ready in this turn has been read.

    On loopback (and for a peer's CPU anywhere) that is one wake-up of the peer per batch
    rather than per answer: with 64 busy connections, a third more requests per CPU-second
    than sending each at the end of its read; one connection pays a timer call per turn.
    """

    def __init__(self, clock: IReactorTime) -> None:
        self.clock = clock
        self._waiting: list[_TLSProtocol] = []
        self._call: IDelayedCall | None = None

    def add(self, protocol: _TLSProtocol) -> None:
        """Send what ``protocol`` gathered at the next turn (once, however often added)."""
        if not protocol.flush_waiting:
            protocol.flush_waiting = True
            self._waiting.append(protocol)
            if self._call is None:
                self._call = self.clock.callLater(0, self.flush)

    def flush(self) -> None:
        """Send what every waiting connection gathered, in the order they were read."""
        self._call = None
        waiting, self._waiting = self._waiting, []
        for protocol in waiting:
            protocol.flush_waiting = False
            protocol.send_gathered()


class TLSFactory(TLSMemoryBIOFactory):  # type: ignore[misc]
    """Wraps a site in server-side TLS using ``ServerTLS``."""

    protocol = _TLSProtocol

    def __init__(self, tls: ServerTLS, wrapped: IProtocolFactory) -> None:
        super().__init__(tls, False, wrapped, clock=tls.clock)
        self.tls = tls
        # Answers wait for the turn's end only where there are turns: under a reactor. A
        # clock that only tells time (a test's Clock) gets them at the end of each read.
        self.flusher = TurnFlusher(tls.clock) if IReactorCore.providedBy(tls.clock) else None

    def buildProtocol(self, addr: IAddress | None) -> TLSMemoryBIOProtocol | None:  # type: ignore[override]
        """A new connection, unless the site refuses it (its --max-connections)."""
        wrapped = self.wrappedFactory.buildProtocol(addr)
        if wrapped is None:
            return None  # closes the new connection at once
        return self.protocol(self, wrapped)


def chain_problems(chain: Sequence[x509.Certificate]) -> list[str]:
    """Obvious ordering mistakes in a certificate file that should carry leaf then chain."""
    problems = []
    for child, parent in zip(chain, chain[1:], strict=False):
        if child.issuer != parent.subject:
            problems.append(f"certificate {child.subject.rfc4514_string()!r} is not issued by "
                            f"the next one in the file ({parent.subject.rfc4514_string()!r})")
    return problems
