"""
The private internals of pyOpenSSL, Twisted and treq that certsrv relies on, in one place.

No other certsrv module touches a private name of those libraries: each goes through a name
defined here, and each has a test in ``tests/test_compat.py`` that fails loudly, naming the
internal and the library to look at, when an upgrade removes or changes it.  Where a certsrv
class overrides a private method (a subclass must keep the name), the names it overrides are
listed here (``*_OVERRIDES``) and the tests check them against the installed versions.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, KeysView
from http.cookiejar import CookieJar
from typing import Any

from OpenSSL import SSL, crypto
from OpenSSL._util import ffi as _ffi
from OpenSSL._util import lib as _lib
from treq._types import _NOTHING
from treq.client import (
    HTTPClient,
    _coerced_query_params,
    _merge_cookies,
    _scoped_cookiejar_from_dict,
)
from treq.response import _Response
from twisted.internet import tcp
from twisted.internet._sslverify import IOpenSSLTrustRoot
from twisted.protocols.haproxy._wrapper import HAProxyProtocolWrapper, HAProxyWrappingFactory
from twisted.protocols.policies import ProtocolWrapper
from twisted.python.failure import Failure
from twisted.web._http2 import H2Connection
from twisted.web.http import _GenericHTTPChannelProtocol
from twisted.web.resource import _IEncodingResource

__all__ = [
    "HTTP2_CONNECTION_OVERRIDES",
    "TLS_TRANSPORT_OVERRIDES",
    "TREQ_NO_JSON",
    "TREQ_REQUEST_PARAMETERS",
    "X509_V_OK",
    "GenericHTTPChannelProtocol",
    "H2Connection",
    "IOpenSSLTrustRoot",
    "ProxyProtocolWrapper",
    "ProxyWrappingFactory",
    "TreqResponse",
    "VerifyCallback",
    "clear_exit_signal",
    "exit_signal",
    "http2_consumer_blocked",
    "http2_still_producing",
    "http2_stream_connection",
    "http2_stream_request",
    "http2_write_control_data",
    "header_names",
    "http_channel",
    "http_negotiated_protocol",
    "preset_response_headers",
    "proxy_header_read",
    "network_producer",
    "raise_listen_errors",
    "send_now",
    "set_groups",
    "set_store_purpose_client",
    "set_verify",
    "switch_to_http2",
    "tls_finish_without_closing",
    "tls_flush_receive",
    "tls_handshake_done",
    "tls_pending_output",
    "treq_agent",
    "treq_cookiejar",
    "treq_merge_cookies",
    "treq_query_params",
    "treq_request_body",
    "treq_request_headers",
    "treq_scoped_cookiejar",
    "use_resource_encoder",
    "verify_error_text",
]


# -- pyOpenSSL and its OpenSSL binding ------------------------------------------------------

X509_V_OK = 0
# X509_V_ERR_UNSPECIFIED: what a callback that fails unexpectedly reports.
_UNSPECIFIED = 1

# ``(connection, certificate, errno, depth, ok) -> error``: X509_V_OK accepts the certificate
# at this depth; any other X509_V_ERR_* code refuses it, and OpenSSL sends the TLS alert
# that code maps to (certificate_revoked for X509_V_ERR_CERT_REVOKED, and so on).
VerifyCallback = Callable[[SSL.Connection, crypto.X509, int, int, bool], int]


def _binding() -> tuple[Any, Any]:
    from OpenSSL._util import ffi, lib

    return ffi, lib


def set_verify(ctx: SSL.Context, mode: int, callback: VerifyCallback) -> None:
    """``SSL_CTX_set_verify`` with a callback that chooses the verify error (and so the alert).

    pyOpenSSL's ``Context.set_verify`` passes no ``X509_STORE_CTX``, so its callbacks can
    only accept or refuse, and a refusal of a certificate OpenSSL found good becomes an
    ``internal_error`` alert.
    """
    ffi, lib = _binding()
    index = lib.SSL_get_ex_data_X509_STORE_CTX_idx()

    def wrapper(ok: int, store_ctx: Any) -> int:
        try:
            x509 = lib.X509_STORE_CTX_get_current_cert(store_ctx)
            lib.X509_up_ref(x509)
            cert = crypto.X509._from_raw_x509_ptr(x509)
            errno = lib.X509_STORE_CTX_get_error(store_ctx)
            depth = lib.X509_STORE_CTX_get_error_depth(store_ctx)
            connection = SSL.Connection._reverse_mapping[  # type: ignore[attr-defined]
                lib.X509_STORE_CTX_get_ex_data(store_ctx, index)]
            error = callback(connection, cert, errno, depth, bool(ok))
        except BaseException:  # the callback never raises; this is the last line of defence
            error = _UNSPECIFIED
        lib.X509_STORE_CTX_set_error(store_ctx, error)
        return 1 if error == X509_V_OK else 0

    handle = ffi.callback("int (*)(int, X509_STORE_CTX *)", wrapper)
    # The context must keep the cffi callback alive for as long as OpenSSL may call it.
    ctx._certsrv_verify = handle  # type: ignore[attr-defined]
    lib.SSL_CTX_set_verify(ctx._context, mode, handle)  # type: ignore[attr-defined]


def set_store_purpose_client(store: crypto.X509Store) -> None:
    """Verify chains in ``store`` for the TLS client purpose, as a TLS server does."""
    _, lib = _binding()
    if lib.X509_STORE_set_purpose(store._store, lib.X509_PURPOSE_SSL_CLIENT) != 1:  # type: ignore[attr-defined]
        raise RuntimeError("X509_STORE_set_purpose refused the ssl_client purpose")


def set_groups(ctx: SSL.Context, groups: bytes) -> None:
    """Limit the key-exchange groups (pyOpenSSL has no public call for it)."""
    _, lib = _binding()
    if lib.SSL_CTX_set1_curves_list(ctx._context, groups) != 1:  # type: ignore[attr-defined]
        raise ValueError("SSL_CTX_set1_curves_list refused the list")


def verify_error_text(errno: int) -> str:
    """OpenSSL's text for an X509_V_ERR_* code (the public API has no such lookup)."""
    try:
        ffi, lib = _binding()
        return str(ffi.string(lib.X509_verify_cert_error_string(errno)).decode("ascii"))
    except Exception:
        return f"X509 verify error {errno}"


# -- Twisted: the TLS transport (twisted.protocols.tls) -------------------------------------

# The private methods of TLSMemoryBIOProtocol that certsrv.tls.context._TLSProtocol overrides.
TLS_TRANSPORT_OVERRIDES = ("_tlsShutdownFinished", "_shutdownTLS", "_flushSendBIO",
                           "_flushReceiveBIO")


def tls_handshake_done(protocol: Any) -> bool:
    """Whether the TLS handshake of ``protocol`` (a TLSMemoryBIOProtocol) has completed."""
    return bool(protocol._handshakeDone)


def tls_finish_without_closing(protocol: Any, reason: Any) -> None:
    """Twisted's ``_tlsShutdownFinished`` up to closing the transport: record ``reason``
    (unless one is already), stop TLS, and send what OpenSSL still holds (such as an alert)."""
    if protocol._reason is None:
        protocol._reason = reason
    protocol._lostTLSConnection = True
    protocol._flushSendBIO()


def tls_pending_output(protocol: Any) -> bytes:
    """All OpenSSL has for the peer; b"" when nothing, asked without the WantReadError an
    empty read raises. (Twisted's ``_flushSendBIO`` takes 32 KiB: a larger handshake flight,
    such as a CertificateRequest naming many CAs, would wait for the client, which waits
    for it.)"""
    connection = protocol._tlsConnection
    pending = _bio_pending(connection._from_ssl)
    if not pending:
        return b""
    data: bytes = connection.bio_read(pending)
    return data


def tls_flush_receive(protocol: Any, to_the_end: bool = False) -> None:
    """Twisted's ``TLSMemoryBIOProtocol._flushReceiveBIO``, asking OpenSSL for plaintext only
    while it holds input not yet read (Twisted's loop ends on a WantReadError: an exception
    per read). ``to_the_end`` (the connection is lost): read until OpenSSL says why it ends,
    so a close without close_notify is reported as the truncation it is."""
    connection = protocol._tlsConnection
    received = connection._into_ssl
    while not protocol._lostTLSConnection:
        if not to_the_end and not connection.pending() and not _bio_pending(received):
            break
        try:
            data = connection.recv(2**15)
        except SSL.WantReadError:
            break
        except SSL.ZeroReturnError:
            protocol._shutdownTLS()
            protocol._tlsShutdownFinished(None)
        except SSL.Error:
            protocol._tlsShutdownFinished(Failure())
        else:
            if not protocol._aborted:
                ProtocolWrapper.dataReceived(protocol, data)
    protocol._flushSendBIO()


def _bio_pending(bio: Any) -> int:
    """The bytes a memory BIO holds (BIO_get_mem_data, the only length query pyOpenSSL's
    bindings have)."""
    pending: int = _lib.BIO_get_mem_data(bio, _ffi.NULL)
    return pending


def send_now(transport: Any, data: bytes) -> None:
    """Write ``data`` to a TCP transport, sending at once what the socket takes when nothing
    else waits to be sent (no EPOLLOUT registration and wake-up for it); the rest, and any
    other transport, through ``write``."""
    if (isinstance(transport, tcp.Connection) and not transport.dataBuffer
            and not transport._tempDataLen and transport.connected
            and not transport._writeDisconnected and not transport.disconnecting):
        sent = transport.writeSomeData(data)
        if isinstance(sent, int) and sent > 0:
            if sent == len(data):
                return
            data = data[sent:]
    transport.write(data)  # queued: also where an error found by writeSomeData is handled


# -- Twisted: HTTP/1.1 and HTTP/2 (twisted.web.http, twisted.web._http2) --------------------

# The connection that starts as HTTP/1.1 and becomes HTTP/2 when ALPN picks h2.
GenericHTTPChannelProtocol = _GenericHTTPChannelProtocol

# The private methods of H2Connection that certsrv.web.limits.LimitedH2Connection overrides.
HTTP2_CONNECTION_OVERRIDES = (
    "_requestReceived",
    "_requestDataReceived",
    "_requestEnded",
    "_requestAborted",
    "_requestDone",
)


def header_names(headers: Any) -> KeysView[bytes]:
    """The names present in a twisted.web ``Headers``, as it keeps them (the names
    ``getAllRawHeaders`` yields): a view of its private dict, so asking costs no call."""
    names: KeysView[bytes] = headers._rawHeaders.keys()
    return names


def preset_response_headers(headers: Any, server: bytes, date: bytes) -> None:
    """Set a fresh response's Server and Date fields as ``setHeader`` would, in one step
    (``Headers._rawHeaders``, keyed by the canonical names ``setRawHeaders`` makes)."""
    raw: dict[bytes, list[bytes]] = headers._rawHeaders
    raw[b"Server"] = [server]
    raw[b"Date"] = [date]


def use_resource_encoder(request: Any, found: Any) -> None:
    """What twisted.web's ``Request.process`` does with a resource that encodes its
    responses (``resource._IEncodingResource``): keep its encoder on the request."""
    if _IEncodingResource.providedBy(found):
        encoder = found.getEncoder(request)
        if encoder is not None:
            request._encoder = encoder


def network_producer(channel: Any) -> Any:
    """The transport's producer an HTTPChannel pauses and resumes to stop and resume reading
    (``HTTPChannel._networkProducer``, set by its ``connectionMade``)."""
    return channel._networkProducer


def http_channel(protocol: Any) -> Any:
    """The channel a GenericHTTPChannelProtocol speaks through: HTTPChannel or H2Connection."""
    return protocol._channel


def http_negotiated_protocol(protocol: Any) -> bytes | None:
    """The protocol a GenericHTTPChannelProtocol settled on; None until its first data."""
    negotiated: bytes | None = protocol._negotiatedProtocol
    return negotiated


def switch_to_http2(protocol: Any, connection: Any, timeout: float | None) -> None:
    """Twisted's own switch of ``protocol`` to HTTP/2, to ``connection`` instead of a plain
    H2Connection (``_GenericHTTPChannelProtocol.dataReceived`` when ALPN picked h2)."""
    old = protocol._channel
    producer = old._networkProducer
    producer.unregisterProducer()
    old.setTimeout(None)
    connection.requestFactory = old.requestFactory
    connection.site = old.site
    connection.factory = old.factory
    connection.timeOut = timeout
    connection.callLater = old.callLater
    protocol._channel = connection
    protocol._negotiatedProtocol = b"h2"
    connection.makeConnection(old.transport)
    producer.registerProducer(connection, True)


def http2_write_control_data(connection: H2Connection) -> None:
    """Send what h2 has queued on ``connection`` besides stream data (SETTINGS, RST, ...)."""
    connection._tryToWriteControlData()


def http2_still_producing(connection: H2Connection) -> bool:
    """Whether ``connection`` may still write (False once it stopped producing)."""
    return bool(connection._stillProducing)


def http2_consumer_blocked(connection: H2Connection) -> Any:
    """The Deferred that fires when the transport of ``connection`` takes data again, or None."""
    return connection._consumerBlocked


def http2_stream_request(stream: object) -> Any:
    """The request an HTTP/2 stream (``twisted.web._http2.H2Stream``) carries; None if none."""
    return getattr(stream, "_request", None)


def http2_stream_connection(stream: object) -> Any:
    """The H2Connection an HTTP/2 stream (a request's ``channel``) belongs to; None for any
    other channel (HTTP/2 streams have no transport of their own: twisted/twisted#9270)."""
    return getattr(stream, "_conn", None)


# -- Twisted: the reactor and services ------------------------------------------------------


def exit_signal(reactor: Any) -> int | None:
    """The signal that stopped ``reactor``, which twistd re-raises when it exits; or None."""
    signum: int | None = getattr(reactor, "_exitSignal", None)
    return signum


def clear_exit_signal(reactor: Any) -> None:
    """Make twistd exit normally although a signal stopped ``reactor``."""
    reactor._exitSignal = None


def raise_listen_errors(service: Any) -> None:
    """Make a StreamServerEndpointService's ``privilegedStartService`` raise when it cannot
    listen, rather than log the error (as ``strports.service`` does)."""
    service._raiseSynchronously = True


# -- Twisted: the PROXY protocol (twisted.protocols.haproxy) --------------------------------

# What ``haproxy:`` endpoints wrap a factory in; the package exports only ``proxyEndpoint``.
ProxyProtocolWrapper = HAProxyProtocolWrapper
ProxyWrappingFactory = HAProxyWrappingFactory


def proxy_header_read(wrapper: Any) -> bool:
    """Whether a ProxyProtocolWrapper has read its connection's whole PROXY header."""
    return wrapper._proxyInfo is not None


# -- treq ------------------------------------------------------------------------------------

# The ``json=`` default of treq's requests: "no JSON body" (None is a JSON value).
TREQ_NO_JSON: Any = _NOTHING
# What treq's HTTPClient.request returns: the response, with cookies and treq's helpers.
TreqResponse = _Response
# The private parameters of treq's HTTPClient.request that an override must accept (its
# get(), post(), ... pass them).
TREQ_REQUEST_PARAMETERS = ("_stacklevel",)


def treq_query_params(params: Any) -> Iterator[tuple[str, str]]:
    """``params=`` as treq encodes it: percent-encoded (name, value) pairs."""
    return _coerced_query_params(params)


def treq_scoped_cookiejar(url: Any, cookies: Any) -> CookieJar:
    """``cookies=`` (a dict or None) as treq turns it into a jar scoped to ``url``'s origin."""
    return _scoped_cookiejar_from_dict(url, cookies)


def treq_merge_cookies(jar: Any, cookies: CookieJar) -> None:
    """Add ``cookies`` to ``jar``, as treq does with a request's cookies."""
    _merge_cookies(jar, cookies)


def treq_request_headers(client: HTTPClient, headers: Any, stacklevel: int) -> Any:
    """``headers=`` as treq's ``client`` turns it into Headers."""
    return client._request_headers(headers, stacklevel + 1)


def treq_request_body(client: HTTPClient, data: Any, files: Any, json: Any,
                      stacklevel: int) -> tuple[Any, bytes | None]:
    """``data=``, ``files=`` and ``json=`` as treq's ``client`` turns them into a body
    producer and its Content-Type."""
    return client._request_body(data, files, json, stacklevel=stacklevel + 1)


def treq_agent(client: HTTPClient) -> Any:
    """The Agent a treq HTTPClient sends its requests through."""
    return client._agent


def treq_cookiejar(client: HTTPClient) -> Any:
    """The cookie jar of a treq HTTPClient."""
    return client._cookiejar
