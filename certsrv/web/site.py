"""twisted.web glue: the site whose channels report handshakes, ``/secure``, and identity lookup."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IDelayedCall, IHandshakeListener
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import http, resource, server
from twisted.web.iweb import IRequest
from zope.interface import implementer

from certsrv._compat import http2_stream_connection, http_channel
from certsrv.exceptions import LimitReason, Reason
from certsrv.forwarded.trust import Forwarding
from certsrv.tls.context import Current
from certsrv.tls.verify import ClientVerifier, ConnectionState, peer_text
from certsrv.web.limits import LimitedChannel, LimitedRequest, LimitedSite, Limits
from certsrv.x509.identity import ClientIdentity

__all__ = ["CertsrvSite", "Limits", "SecureResource", "identity_of", "root_resource"]


_log = Logger(namespace="certsrv.tls")


def _state_of_transport(transport: Any) -> ConnectionState | None:
    return getattr(transport, "certsrv_state", None)


def connection_state(request: IRequest) -> ConnectionState | None:
    """The TLS connection state behind ``request``, on HTTP/1.1 and HTTP/2 alike."""
    channel = getattr(request, "channel", None)
    transport = getattr(channel, "transport", None)
    if transport is None:
        # HTTP/2 streams have no transport; their connection does (twisted/twisted#9270).
        transport = getattr(http2_stream_connection(channel), "transport", None)
    return getattr(transport, "certsrv_state", None)


_FORWARDED = "_certsrv_forwarded_identity"
# On a request's channel: (identity, /secure's text body for it).
_SECURE_TEXT = "_certsrv_secure_text"


def set_forwarded_identity(request: IRequest, identity: ClientIdentity | None) -> None:
    """Record the identity a trusted proxy forwarded (None: it forwarded none)."""
    setattr(request, _FORWARDED, identity)


def identity_of(request: IRequest) -> ClientIdentity | None:
    """The verified client identity of ``request``, or None if it has none.

    That is the certificate of the request's TLS connection, or, for a request that came
    through a trusted proxy (``--forwarded-cert``), the certificate the proxy forwarded
    and certsrv validated; never the proxy's own.
    """
    forwarded = getattr(request, _FORWARDED, request)
    if forwarded is not request:
        return forwarded  # type: ignore[return-value]
    # connection_state, inline for HTTP/1.1 (an HTTP/2 stream has no transport).
    channel = getattr(request, "channel", None)
    state = getattr(getattr(channel, "transport", None), "certsrv_state", None)
    if state is None:
        state = connection_state(request)
    return state.identity if state is not None else None


@implementer(IHandshakeListener)
class _Channel(LimitedChannel):
    """An HTTP channel that tells the verifier when its TLS handshake completes or fails."""

    _handshake_done = False
    _handshake_deadline: IDelayedCall | None = None
    limited_site: CertsrvSite

    def makeConnection(self, transport: Any) -> None:
        # A peer that opens a connection and stalls the handshake is cut off.
        site = self.limited_site
        self._handshake_deadline = site.current.clock.callLater(
            site.limits.handshake_timeout, self._handshake_expired, transport)
        super().makeConnection(transport)

    def _handshake_expired(self, transport: Any) -> None:
        self._handshake_deadline = None
        _log.info("TLS handshake from {peer} did not complete within {seconds} s",
                  peer=peer_text(transport.getPeer()),
                  seconds=self.limited_site.limits.handshake_timeout,
                  decision="rejected", reason=LimitReason.HANDSHAKE_TIMEOUT.value)
        self.limited_site.observer.rejected(LimitReason.HANDSHAKE_TIMEOUT.value)
        transport.abortConnection()

    def _cancel_deadline(self) -> None:
        if self._handshake_deadline is not None:
            if self._handshake_deadline.active():
                self._handshake_deadline.cancel()
            self._handshake_deadline = None

    def handshakeCompleted(self) -> None:
        self._handshake_done = True
        self._cancel_deadline()
        transport = http_channel(self).transport
        state = _state_of_transport(transport)
        if state is not None and transport is not None:
            site = self.limited_site
            site.verifier.handshake_completed(state, transport.getPeer(), site.observer)

    def connectionLost(self, reason: Failure) -> None:
        self._cancel_deadline()
        if not self._handshake_done:
            transport = http_channel(self).transport
            state = _state_of_transport(transport)
            if state is not None and transport is not None:
                site = self.limited_site
                site.verifier.handshake_failed(state, transport.getPeer(), reason, site.observer)
        super().connectionLost(reason)


class _Request(LimitedRequest):
    """A request of a certsrv site: limited, and counted in flight for draining."""

    _counted: CertsrvSite | None = None

    def _uncount(self) -> None:
        site, self._counted = self._counted, None
        if site is not None:
            site.inflight -= 1

    def finish(self) -> None:
        server.Request.finish(self)
        site, self._counted = self._counted, None  # _uncount, inline (once per request)
        if site is not None:
            site.inflight -= 1

    def connectionLost(self, reason: Failure) -> None:
        super().connectionLost(reason)
        self._uncount()

    def process(self) -> None:
        site: CertsrvSite = self.channel.site  # type: ignore[attr-defined]
        # Counted in flight until finished or lost (reported when draining on SIGTERM); hooked
        # directly rather than through notifyFinish, which costs a Deferred per request.
        site.inflight += 1
        self._counted = site
        if self._too_large:
            LimitedRequest.process(self)
        else:
            self.process_lean()


class CertsrvSite(LimitedSite):
    """A Site whose connections report their TLS decisions to the verifier in force.

    ``current`` is the configuration in force, shared with the TLS connection creator
    (``ServerTLS``) so that a reload replaces it for both at once; given a bare verifier, the
    site holds it alone. ``observer`` (from ``LimitedSite``) hears every decision.
    """

    requestFactory = _Request
    channel_class = _Channel

    def __init__(self, root: resource.IResource, current: Current | ClientVerifier,
                 *, http2: bool = True, limits: Limits | None = None,
                 forwarded: Forwarding | None = None, **kwargs: Any) -> None:
        self.current = current if isinstance(current, Current) else Current(None, current)
        self.forwarded = forwarded
        # Idle timeouts run on the injected clock.
        kwargs.setdefault("reactor", self.current.clock)
        super().__init__(root, limits=limits, name="HTTPS", **kwargs)
        self.http2 = http2
        self.access_log = True
        self.inflight = 0

    @property
    def verifier(self) -> ClientVerifier:
        """The client verifier in force (``current.verifier``): a reload replaces it."""
        return self.current.verifier

    def log(self, request: server.Request) -> None:  # type: ignore[override]
        """Report the answered request; the access log line stays Twisted's."""
        self.observer.request_finished(request.code)
        if self.access_log:
            super().log(request)

    def acceptableProtocols(self) -> list[bytes]:
        """The ALPN protocols offered: h2 (when enabled and installed), then http/1.1."""
        protocols = list(super().acceptableProtocols())
        return protocols if self.http2 else [p for p in protocols if p != b"h2"]


class SecureResource(resource.Resource):
    """``/secure``: 200 with the client's identity, 403 when the connection has none."""

    def getChild(self, path: bytes, request: server.Request) -> resource.IResource:
        """Nothing lives below ``/secure``."""
        return resource.NoResource()

    def render_GET(self, request: server.Request) -> bytes:
        identity = identity_of(request)
        if identity is None:
            return forbidden(request, Reason.NO_CERTIFICATE)
        if b"application/json" in (request.getHeader(b"accept") or b""):
            return _body(request, identity.as_json, "")
        # The text body, made once per connection and identity (what _body does for text).
        channel = request.channel
        memo = getattr(channel, _SECURE_TEXT, None)
        if memo is None or memo[0] is not identity:
            memo = (identity, f"Client certificate accepted\nsubject: {identity.subject}\n"
                    .encode())
            setattr(channel, _SECURE_TEXT, memo)
        headers = request.responseHeaders
        headers.setRawHeaders(b"cache-control", [b"no-store"])
        headers.setRawHeaders(b"content-type", [b"text/plain; charset=utf-8"])
        body: bytes = memo[1]
        return body

    render_HEAD = render_GET


def forbidden(request: server.Request, reason: Reason, detail: str = "") -> bytes:
    """A 403 body naming the reason, as JSON when the client asked for it."""
    return refuse(request, reason.value, reason.sentence, detail)


def refuse(request: server.Request, code: str, message: str, detail: str = "",
           status: int = http.FORBIDDEN) -> bytes:
    """An error body with a stable reason code and a sentence, as JSON when asked for."""
    request.setResponseCode(status)
    document = {"error": http.RESPONSES.get(status, b"error").decode().lower(),
                "reason": code, "message": message}
    if detail:
        document["detail"] = detail
    return _body(request, document, f"{http.RESPONSES.get(status, b'Error').decode()}: "
                                    f"{message} ({code})\n")


def _body(request: server.Request, document: dict[str, Any] | Callable[[], dict[str, Any]],
          text: str) -> bytes:
    request.setHeader(b"cache-control", b"no-store")
    if b"application/json" in (request.getHeader(b"accept") or b""):
        request.setHeader(b"content-type", b"application/json")
        if callable(document):  # built only when asked for
            document = document()
        return json.dumps(document, indent=2).encode() + b"\n"
    request.setHeader(b"content-type", b"text/plain; charset=utf-8")
    return text.encode()


def root_resource() -> resource.Resource:
    """The default tree: ``/secure`` and 404 for everything else."""
    root = resource.Resource()
    root.putChild(b"secure", SecureResource())
    return root
