"""
The private internals certsrv relies on, all reached through ``certsrv._compat``, are there.

Each test checks one group of internals against the installed pyOpenSSL, Twisted and treq,
and fails with a message naming the internal, the library and its version: an upgrade
changed it, and ``certsrv/_compat.py`` (and what it says relies on it) needs updating before
that version can be used.  The tests also check that the private methods certsrv's subclasses
override are the ones ``_compat`` lists, and that no other name of theirs collides with a
private name of the class they extend.
"""

from __future__ import annotations

import ast
import importlib
import importlib.metadata
import inspect
import pathlib
import signal
import socket
import textwrap
from collections.abc import Callable, Iterator
from http.cookiejar import CookieJar
from typing import Any

from cryptography.x509.oid import ExtendedKeyUsageOID
from hyperlink import EncodedURL
from OpenSSL import SSL, crypto
from twisted.internet import defer, protocol
from twisted.internet.error import CannotListenError
from twisted.internet.ssl import CertificateOptions, optionsForClientTLS
from twisted.internet.testing import StringTransport
from twisted.protocols.tls import TLSMemoryBIOFactory, TLSMemoryBIOProtocol
from twisted.python.failure import Failure
from twisted.test.iosim import connectedServerAndClient
from twisted.trial.unittest import SynchronousTestCase
from twisted.web import http
from twisted.web.http_headers import Headers

from certsrv import _compat
from certsrv.pki import CertificateAuthority, IssuedCertificate

_VERSIONS = {library: importlib.metadata.version(library)
             for library in ("pyOpenSSL", "Twisted", "treq")}
_X509_V_ERR_CERT_REVOKED = 23


class _CompatTestCase(SynchronousTestCase):
    """``need``: a failure that names the internal, its library, and what depends on it."""

    def need(self, condition: object, internal: str, library: str, user: str) -> None:
        """Fail unless ``condition``: ``internal`` of ``library`` changed; ``user`` breaks."""
        if not condition:
            self.fail(f"{internal} is gone or changed in {library} {_VERSIONS[library]}: "
                      f"certsrv/_compat.py ({user}) needs updating for this {library}")

    def need_attribute(self, owner: Any, name: str, library: str, user: str) -> Any:
        """``owner.name``, failing loudly when it is gone."""
        label = f"{getattr(owner, '__module__', '')}.{getattr(owner, '__qualname__', owner)}"
        self.need(hasattr(owner, name), f"{label.strip('.')}.{name}", library, user)
        return getattr(owner, name)

    def need_import(self, module: str, name: str, library: str, user: str) -> Any:
        """``module.name``, failing loudly when the module or the name is gone."""
        try:
            found = importlib.import_module(module)
        except ImportError:
            found = None
        self.need(found is not None and hasattr(found, name), f"{module}.{name}", library, user)
        return getattr(found, name)


def _defined_names(cls: type) -> set[str]:
    """The private names ``cls``'s own source defines: methods, class attributes, and
    attributes its methods assign on ``self``."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0]
    assert isinstance(body, ast.ClassDef)
    names: set[str] = set()
    for node in body.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names |= {t.id for t in node.targets if isinstance(t, ast.Name)}
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    for node in ast.walk(body):
        targets = (node.targets if isinstance(node, ast.Assign)
                   else [node.target] if isinstance(node, ast.AnnAssign | ast.AugAssign) else [])
        for target in targets:
            for part in ast.walk(target):
                if (isinstance(part, ast.Attribute) and isinstance(part.value, ast.Name)
                        and part.value.id == "self"):
                    names.add(part.attr)
    return {name for name in names if name.startswith("_") and not name.startswith("__")}


def _private_names(base: type, instance: object) -> set[str]:
    """The private names of a third-party class: its (and its bases') and an instance's."""
    names = set(dir(base)) | set(vars(instance))
    return {name for name in names if name.startswith("_") and not name.startswith("__")}


def _assigned_attributes(function: Callable[..., Any], target: str) -> set[str]:
    """The attributes ``function`` assigns on the expression spelled ``target``."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(function)))
    return {node.attr for node in ast.walk(tree)
            if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store)
            and ast.unparse(node.value) == target}


class OverrideTests(_CompatTestCase):
    """certsrv's subclasses override exactly the private names ``_compat`` lists."""

    def check(self, cls: type, base: type, instance: object, listed: tuple[str, ...],
              library: str) -> None:
        """The private names ``cls`` shares with ``base`` are ``listed``, and ``base`` has them."""
        shared = _defined_names(cls) & _private_names(base, instance)
        for name in listed:
            self.need(callable(getattr(base, name, None)), f"{base.__module__}."
                      f"{base.__qualname__}.{name}", library, f"{cls.__qualname__} overrides it")
        unlisted = shared - set(listed)
        self.assertEqual(unlisted, set(), f"{cls.__qualname__} uses private names of "
                         f"{base.__qualname__} ({library} {_VERSIONS[library]}) that "
                         "certsrv/_compat.py does not list: rename them, or list and check them")

    def test_tls_transport(self) -> None:
        from twisted.protocols.tls import TLSMemoryBIOProtocol

        from certsrv.tls.context import _TLSProtocol

        factory = TLSMemoryBIOFactory(CertificateOptions(), False, protocol.Factory())
        instance = TLSMemoryBIOProtocol(factory, protocol.Protocol())
        self.check(_TLSProtocol, TLSMemoryBIOProtocol, instance,
                   _compat.TLS_TRANSPORT_OVERRIDES, "Twisted")
        shutdown = inspect.signature(TLSMemoryBIOProtocol._tlsShutdownFinished)
        self.need(list(shutdown.parameters) == ["self", "reason"],
                  "the signature of TLSMemoryBIOProtocol._tlsShutdownFinished", "Twisted",
                  "certsrv.tls.context._TLSProtocol overrides it")

    def test_http2_connection(self) -> None:
        from certsrv.web.limits import LimitedH2Connection

        self.assertTrue(issubclass(LimitedH2Connection, _compat.H2Connection))
        self.check(LimitedH2Connection, _compat.H2Connection, _compat.H2Connection(),
                   _compat.HTTP2_CONNECTION_OVERRIDES, "Twisted")
        for name in _compat.HTTP2_CONNECTION_OVERRIDES:
            parameters = list(inspect.signature(getattr(_compat.H2Connection, name)).parameters)
            self.need(len(parameters) == 2, f"the signature of H2Connection.{name}", "Twisted",
                      "certsrv.web.limits.LimitedH2Connection overrides it")

    def test_http_channels(self) -> None:
        from certsrv.web.http11 import HTTP11Channel
        from certsrv.web.limits import LimitedChannel
        from certsrv.web.site import _Channel

        generic = _compat.GenericHTTPChannelProtocol
        for cls in (LimitedChannel, _Channel):
            self.check(cls, generic, generic(http.HTTPChannel()), (), "Twisted")
        self.check(HTTP11Channel, http.HTTPChannel, http.HTTPChannel(), (), "Twisted")

    def test_requests(self) -> None:
        from twisted.web import resource, server

        from certsrv.web.limits import LimitedRequest
        from certsrv.web.site import _Request

        channel = http.HTTPChannel()
        channel.site = server.Site(resource.Resource())
        channel.makeConnection(StringTransport())
        instance = server.Request(channel)
        for cls in (LimitedRequest, _Request):
            self.check(cls, server.Request, instance, (), "Twisted")

    def test_listener(self) -> None:
        from twisted.application.internet import StreamServerEndpointService

        from certsrv.server.startup import Listener

        instance = StreamServerEndpointService(None, None)
        self.check(Listener, StreamServerEndpointService, instance, (), "Twisted")

    def test_proxy_header_protocol(self) -> None:
        from certsrv.server.endpoints import ProxyHeaderFactory, _ProxyHeaderProtocol

        instance = _compat.ProxyProtocolWrapper(
            _compat.ProxyWrappingFactory(protocol.Factory()), protocol.Protocol())
        self.check(_ProxyHeaderProtocol, _compat.ProxyProtocolWrapper, instance, (), "Twisted")
        self.check(ProxyHeaderFactory, _compat.ProxyWrappingFactory,
                   _compat.ProxyWrappingFactory(protocol.Factory()), (), "Twisted")

    def test_treq_client(self) -> None:
        from treq.client import HTTPClient

        from certsrv.client.http import _CertsrvHTTPClient

        self.check(_CertsrvHTTPClient, HTTPClient, HTTPClient(None), (), "treq")
        ours = inspect.signature(_CertsrvHTTPClient.request).parameters
        theirs = inspect.signature(HTTPClient.request).parameters
        for name in _compat.TREQ_REQUEST_PARAMETERS:
            self.need(name in theirs, f"the {name} parameter of treq.client.HTTPClient.request",
                      "treq", "certsrv.client.http._CertsrvHTTPClient.request accepts it")
            self.assertIn(name, ours)


# -- pyOpenSSL and its OpenSSL binding ------------------------------------------------------

_BINDING = (
    "SSL_get_ex_data_X509_STORE_CTX_idx", "X509_STORE_CTX_get_current_cert", "X509_up_ref",
    "X509_STORE_CTX_get_error", "X509_STORE_CTX_get_error_depth",
    "X509_STORE_CTX_get_ex_data", "X509_STORE_CTX_set_error", "SSL_CTX_set_verify",
    "X509_STORE_set_purpose", "X509_PURPOSE_SSL_CLIENT", "SSL_CTX_set1_curves_list",
    "X509_verify_cert_error_string",
)


def _pki() -> tuple[CertificateAuthority, IssuedCertificate, IssuedCertificate]:
    ca = CertificateAuthority.create()
    return ca, ca.issue_server("localhost"), ca.issue_client(
        "alice", extended_key_usage=(ExtendedKeyUsageOID.CLIENT_AUTH,))


def _context(issued: IssuedCertificate) -> SSL.Context:
    ctx = SSL.Context(SSL.TLS_METHOD)
    ctx.set_max_proto_version(SSL.TLS1_2_VERSION)  # the client reads the alert in do_handshake
    ctx.use_certificate(crypto.X509.from_cryptography(issued.certificate))
    ctx.use_privatekey(crypto.PKey.from_cryptography_key(issued.private_key))
    return ctx


def _handshake(server: SSL.Connection, client: SSL.Connection) -> dict[str, str]:
    """Run a handshake in memory; the error each side met, by side."""
    errors: dict[str, str] = {}
    for _ in range(10):
        for name, side, peer in (("client", client, server), ("server", server, client)):
            if name not in errors:
                try:
                    side.do_handshake()
                except SSL.WantReadError:
                    pass
                except SSL.Error as e:
                    errors[name] = str(e)
            try:
                peer.bio_write(side.bio_read(65536))
            except SSL.WantReadError:
                pass
    return errors


class OpenSSLTests(_CompatTestCase):
    """set_verify, set_store_purpose_client, set_groups and verify_error_text."""

    def test_binding(self) -> None:
        ffi, lib = self.need_import("OpenSSL._util", "ffi", "pyOpenSSL", "every function"), \
            self.need_import("OpenSSL._util", "lib", "pyOpenSSL", "every function")
        self.assertTrue(callable(ffi.callback))
        for name in _BINDING:
            self.need_attribute(lib, name, "pyOpenSSL", "set_verify, set_store_purpose_client, "
                                "set_groups, verify_error_text")

    def test_private_names(self) -> None:
        user = "set_verify, set_groups, set_store_purpose_client"
        self.need(callable(getattr(crypto.X509, "_from_raw_x509_ptr", None)),
                  "OpenSSL.crypto.X509._from_raw_x509_ptr", "pyOpenSSL", "set_verify")
        self.need_attribute(SSL.Connection, "_reverse_mapping", "pyOpenSSL", "set_verify")
        self.need_attribute(SSL.Context(SSL.TLS_METHOD), "_context", "pyOpenSSL", user)
        self.need_attribute(crypto.X509Store(), "_store", "pyOpenSSL", user)

    def test_set_verify_chooses_the_alert(self) -> None:
        """The callback sees the connection and each certificate; its error is the alert."""
        ca, server_cert, client_cert = _pki()
        seen: list[tuple[object, str, int, bool]] = []
        server_ctx = _context(server_cert)
        store = server_ctx.get_cert_store()
        assert store is not None
        store.add_cert(crypto.X509.from_cryptography(ca.certificate))

        def callback(connection: SSL.Connection, cert: crypto.X509, errno: int, depth: int,
                     ok: bool) -> int:
            seen.append((connection, cert.get_subject().CN or "", depth, ok))
            return _X509_V_ERR_CERT_REVOKED if depth == 0 else _compat.X509_V_OK

        _compat.set_verify(server_ctx, SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT,
                           callback)
        server = SSL.Connection(server_ctx, None)
        server.set_accept_state()
        client = SSL.Connection(_context(client_cert), None)
        client.set_connect_state()
        errors = _handshake(server, client)
        self.need(seen and all(entry[0] is server for entry in seen),
                  "the verify callback's view of the connection (SSL.Connection._reverse_"
                  "mapping, X509_STORE_CTX_get_ex_data)", "pyOpenSSL", "set_verify")
        self.assertEqual([(cn, depth, ok) for _, cn, depth, ok in seen],
                         [("certsrv development CA", 1, True), ("alice", 0, True)])
        self.need("certificate revoked" in errors.get("client", ""),
                  "the verify error a set_verify callback sets (X509_STORE_CTX_set_error)",
                  "pyOpenSSL", "set_verify")

    def test_set_store_purpose_client(self) -> None:
        _compat.set_store_purpose_client(crypto.X509Store())

    def test_set_groups(self) -> None:
        ctx = SSL.Context(SSL.TLS_METHOD)
        _compat.set_groups(ctx, b"X25519:P-256:P-384")
        self.assertRaises(ValueError, _compat.set_groups, ctx, b"no-such-group")

    def test_verify_error_text(self) -> None:
        self.need(_compat.verify_error_text(10) == "certificate has expired",
                  "OpenSSL._util.lib.X509_verify_cert_error_string", "pyOpenSSL",
                  "verify_error_text")


# -- Twisted: the TLS transport ---------------------------------------------------------------


class _FlushReceive(TLSMemoryBIOProtocol):
    def _flushReceiveBIO(self) -> None:
        _compat.tls_flush_receive(self)


def _tls_pair(greet: bool = True, flush_receive: bool = False) -> tuple[Any, Any, Any]:
    """A server and a client TLS protocol connected in memory, and the pump between them
    (``greet``: the handshake has run; ``flush_receive``: the server reads with
    ``tls_flush_receive``)."""
    ca, server_cert, _ = _pki()
    server_options = CertificateOptions(
        privateKey=crypto.PKey.from_cryptography_key(server_cert.private_key),
        certificate=crypto.X509.from_cryptography(server_cert.certificate))
    from twisted.internet.ssl import Certificate

    trust = Certificate(crypto.X509.from_cryptography(ca.certificate))
    server = TLSMemoryBIOFactory(server_options, False,
                                 protocol.Factory.forProtocol(protocol.Protocol))
    if flush_receive:
        server.protocol = _FlushReceive
    client = TLSMemoryBIOFactory(optionsForClientTLS("localhost", trust), True,
                                 protocol.Factory.forProtocol(protocol.Protocol))
    # connectedServerAndClient returns the client first.
    client_side, server_side, pump = connectedServerAndClient(
        lambda: server.buildProtocol(None), lambda: client.buildProtocol(None), greet=greet)
    return server_side, client_side, pump


class TwistedTLSTests(_CompatTestCase):
    """tls_handshake_done, tls_finish_without_closing, and the app data verify.py reads."""

    def test_handshake_done(self) -> None:
        from twisted.protocols.tls import TLSMemoryBIOProtocol

        user = "tls_handshake_done"
        self.need(TLSMemoryBIOProtocol.__dict__.get("_handshakeDone", None) is False,
                  "TLSMemoryBIOProtocol._handshakeDone", "Twisted", user)
        server, _, pump = _tls_pair(greet=False)
        handshaking = _compat.tls_handshake_done(server)
        pump.flush()
        self.need(not handshaking and _compat.tls_handshake_done(server),
                  "TLSMemoryBIOProtocol._handshakeDone", "Twisted", user)

    def test_app_data_is_the_protocol(self) -> None:
        """certsrv.tls.verify finds a connection's state through its SSL app data."""
        server, _, _ = _tls_pair()
        self.need(server.getHandle().get_app_data() is server,
                  "the SSL.Connection app data twisted.protocols._tls_legacy sets (the "
                  "TLSMemoryBIOProtocol)", "Twisted", "certsrv.tls.verify's verify callback")

    def test_finish_without_closing(self) -> None:
        from twisted.protocols.tls import TLSMemoryBIOProtocol

        user = "tls_finish_without_closing, from certsrv.tls.context._TLSProtocol"
        steps = set(TLSMemoryBIOProtocol._tlsShutdownFinished.__code__.co_names)
        for name in ("_reason", "_lostTLSConnection", "_flushSendBIO"):
            self.need(name in steps, f"TLSMemoryBIOProtocol._tlsShutdownFinished's use of "
                      f"{name}", "Twisted", user)
        server, _, _ = _tls_pair()
        reason = Failure(ValueError("refused"))
        _compat.tls_finish_without_closing(server, reason)
        self.need(server._reason is reason and server._lostTLSConnection is True,
                  "TLSMemoryBIOProtocol._reason and _lostTLSConnection", "Twisted", user)
        _compat.tls_finish_without_closing(server, Failure(ValueError("later")))
        self.assertIs(server._reason, reason)


    def test_pending_output(self) -> None:
        from twisted.protocols.tls import TLSMemoryBIOProtocol

        user = "tls_pending_output, from certsrv.tls.context._TLSProtocol._flushSendBIO"
        steps = set(TLSMemoryBIOProtocol._flushSendBIO.__code__.co_names)
        for name in ("_tlsConnection", "bio_read", "write"):
            self.need(name in steps, f"TLSMemoryBIOProtocol._flushSendBIO's use of {name}",
                      "Twisted", user)
        server, _, pump = _tls_pair(greet=False)
        pump.flush()
        self.assertEqual(_compat.tls_pending_output(server), b"")  # all sent already
        server.getHandle().send(b"x")  # a record for the peer, left in the BIO
        self.assertGreater(len(_compat.tls_pending_output(server)), 1)
        self.assertEqual(_compat.tls_pending_output(server), b"")
        for _ in range(3):  # records beyond Twisted's 32 KiB read: all taken at once
            server.getHandle().send(b"x" * 2**14)
        self.assertGreater(len(_compat.tls_pending_output(server)), 3 * 2**14)
        self.assertEqual(_compat.tls_pending_output(server), b"")


    def test_flush_receive(self) -> None:
        """tls_flush_receive mirrors Twisted's loop, and delivers every record it holds."""
        from twisted.protocols.tls import TLSMemoryBIOProtocol

        user = "tls_flush_receive, from certsrv.tls.context._TLSProtocol._flushReceiveBIO"
        steps = set(TLSMemoryBIOProtocol._flushReceiveBIO.__code__.co_names)
        for name in ("_lostTLSConnection", "_tlsConnection", "recv", "WantReadError",
                     "ZeroReturnError", "_shutdownTLS", "_tlsShutdownFinished", "_aborted",
                     "dataReceived", "_flushSendBIO"):
            self.need(name in steps, f"TLSMemoryBIOProtocol._flushReceiveBIO's use of {name}",
                      "Twisted", user)
        server, client, pump = _tls_pair(flush_receive=True)
        self.need(hasattr(server.getHandle(), "_into_ssl"), "SSL.Connection._into_ssl",
                  "pyOpenSSL", user)
        received: list[bytes] = []
        server.wrappedProtocol.dataReceived = received.append
        data = b"a" * 40_000 + b"b"  # four records, arriving in one read
        sent = 0
        while sent < len(data):  # partial writes: a record per send
            sent += client.getHandle().send(data[sent:sent + 40_000])
        while chunk := _compat.tls_pending_output(client):
            client.transport.write(chunk)
        pump.flush()
        self.assertEqual(b"".join(received), b"a" * 40_000 + b"b")
        self.assertGreater(len(received), 2)

    def test_flush_receive_odd_records(self) -> None:
        """Through tls_flush_receive: data read with the client's Finished, and one-byte
        records arriving a byte at a time, all delivered as they complete."""
        server, client, pump = _tls_pair(greet=False, flush_receive=True)
        received: list[bytes] = []
        server.wrappedProtocol.dataReceived = received.append
        # Held until the handshake is done, then sent with the client's Finished (one read);
        # written past BufferingTLSTransport's aggregation, which waits for a reactor turn.
        TLSMemoryBIOProtocol.write(client, b"first")
        pump.flush()
        self.assertTrue(_compat.tls_handshake_done(server))
        self.assertEqual(received, [b"first"])
        stream = b""
        for byte in b"0123456789":
            client.getHandle().send(bytes([byte]))
            stream += _compat.tls_pending_output(client)
        for i in range(len(stream)):
            server.dataReceived(stream[i:i + 1])
        self.assertEqual(b"".join(received), b"first0123456789")
        self.assertEqual(len(received), 11)

    def test_bio_pending(self) -> None:
        connection = SSL.Connection(SSL.Context(SSL.TLS_METHOD), None)
        self.need(_compat._bio_pending(connection._into_ssl) == 0, "BIO_get_mem_data",
                  "pyOpenSSL (cryptography's bindings)", "tls_flush_receive")
        connection.bio_write(b"12345")
        self.assertEqual(_compat._bio_pending(connection._into_ssl), 5)


class SendNowTests(_CompatTestCase):
    """send_now: a TCP transport's private buffer state, and writeSomeData."""

    def connection(self) -> tuple[Any, socket.socket]:
        from twisted.internet import reactor, tcp

        ours, theirs = socket.socketpair()
        ours.setblocking(False)
        self.addCleanup(theirs.close)
        self.addCleanup(ours.close)
        connection = tcp.Connection(ours, protocol.Protocol(), reactor)
        connection.connected = 1
        self.addCleanup(connection.stopWriting)
        for name in ("dataBuffer", "_tempDataLen", "_writeDisconnected", "disconnecting"):
            self.need(hasattr(connection, name), f"tcp.Connection.{name}", "Twisted",
                      "send_now")
        return connection, theirs

    def test_sent_at_once(self) -> None:
        from twisted.internet import reactor

        connection, peer = self.connection()
        _compat.send_now(connection, b"hello")
        self.assertEqual(peer.recv(100), b"hello")
        self.assertNotIn(connection, reactor.getWriters())

    def test_rest_queued(self) -> None:
        """What the socket does not take waits in the transport, in order."""
        from twisted.internet import reactor

        connection, peer = self.connection()
        big = bytes(range(256)) * 40_000
        _compat.send_now(connection, big)
        self.assertIn(connection, reactor.getWriters())
        _compat.send_now(connection, b"after")  # queued behind, not sent before
        self.assertGreater(connection._tempDataLen, 0)
        received = peer.recv(1 << 20)
        self.assertEqual(received, big[:len(received)])


# -- Twisted: the PROXY protocol ---------------------------------------------------------------


class TwistedProxyProtocolTests(_CompatTestCase):
    """The PROXY header wrapper haproxy: endpoints use, and whether it has read the header."""

    def test_wrapper_classes(self) -> None:
        user = "ProxyProtocolWrapper, ProxyWrappingFactory (certsrv.server.endpoints)"
        wrapper = self.need_import("twisted.protocols.haproxy._wrapper",
                                   "HAProxyProtocolWrapper", "Twisted", user)
        factory = self.need_import("twisted.protocols.haproxy._wrapper",
                                   "HAProxyWrappingFactory", "Twisted", user)
        self.assertIs(_compat.ProxyProtocolWrapper, wrapper)
        self.assertIs(_compat.ProxyWrappingFactory, factory)
        self.need(factory.protocol is wrapper, "HAProxyWrappingFactory.protocol", "Twisted",
                  user)

    def test_proxy_header_read(self) -> None:
        user = "proxy_header_read (certsrv.server.endpoints)"
        received: list[bytes] = []

        class Inner(protocol.Protocol):
            def dataReceived(self, data: bytes) -> None:
                received.append(data)

        for header in (b"PROXY TCP4 192.0.2.7 127.0.0.1 51000 8443\r\n",
                       b"\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x0c\xc0\x00\x02\x07"
                       b"\x7f\x00\x00\x01\xc7\x38\x20\xfb"):
            wrapper = _compat.ProxyProtocolWrapper(
                _compat.ProxyWrappingFactory(protocol.Factory()), Inner())
            wrapper.makeConnection(StringTransport())
            self.need(not _compat.proxy_header_read(wrapper),
                      "HAProxyProtocolWrapper._proxyInfo (None before the header)", "Twisted",
                      user)
            wrapper.dataReceived(header + b"data")
            self.need(_compat.proxy_header_read(wrapper) and received[-1] == b"data"
                      and wrapper.getPeer().host == "192.0.2.7",
                      "HAProxyProtocolWrapper._proxyInfo (set once the header is read)",
                      "Twisted", user)
        wrapper = _compat.ProxyProtocolWrapper(
            _compat.ProxyWrappingFactory(protocol.Factory()), Inner())
        transport = StringTransport()
        wrapper.makeConnection(transport)
        wrapper.dataReceived(b"\x16\x03\x01 not a PROXY header")
        self.need(transport.disconnecting and wrapper.disconnecting
                  and not _compat.proxy_header_read(wrapper),
                  "HAProxyProtocolWrapper's closing of a connection without a header "
                  "(loseConnection)", "Twisted", user)


# -- Twisted: HTTP/1.1 and HTTP/2 -------------------------------------------------------------


class TwistedHTTPTests(_CompatTestCase):
    """The generic channel, the switch to HTTP/2, and H2Connection's and H2Stream's state."""

    def test_generic_channel(self) -> None:
        generic = self.need_import("twisted.web.http", "_GenericHTTPChannelProtocol", "Twisted",
                                   "GenericHTTPChannelProtocol")
        inner = http.HTTPChannel()
        channel = generic(inner)
        self.need(getattr(channel, "_channel", None) is inner,
                  "_GenericHTTPChannelProtocol._channel", "Twisted", "http_channel")
        self.need(hasattr(generic, "_negotiatedProtocol"),
                  "_GenericHTTPChannelProtocol._negotiatedProtocol", "Twisted",
                  "http_negotiated_protocol")
        self.assertIs(_compat.http_channel(channel), inner)
        self.assertIsNone(_compat.http_negotiated_protocol(channel))

    def test_header_names(self) -> None:
        from twisted.web.http_headers import Headers

        headers = Headers({b"x-forwarded-client-cert": [b"a"], b"Host": [b"b"]})
        self.need(isinstance(getattr(headers, "_rawHeaders", None), dict),
                  "Headers._rawHeaders", "Twisted", "header_names")
        names = _compat.header_names(headers)
        self.assertEqual(set(names), {n for n, _ in headers.getAllRawHeaders()})
        headers.removeHeader(b"host")
        self.assertEqual(set(names), {b"X-Forwarded-Client-Cert"})

    def test_preset_response_headers(self) -> None:
        headers = Headers()
        self.need(isinstance(getattr(headers, "_rawHeaders", None), dict),
                  "Headers._rawHeaders", "Twisted", "preset_response_headers")
        _compat.preset_response_headers(headers, b"certsrv", b"Sun, 29 Nov 2026 00:00:00 GMT")
        expected = Headers()
        expected.setRawHeaders(b"server", [b"certsrv"])
        expected.setRawHeaders(b"date", [b"Sun, 29 Nov 2026 00:00:00 GMT"])
        self.need(list(headers.getAllRawHeaders()) == list(expected.getAllRawHeaders()),
                  "the canonical names Headers keeps (b'Server', b'Date')", "Twisted",
                  "preset_response_headers")
        headers.setRawHeaders(b"SERVER", [b"other"])
        self.assertEqual(headers.getRawHeaders(b"server"), [b"other"])

    def test_use_resource_encoder(self) -> None:
        from twisted.web import resource, server

        user = "use_resource_encoder, from certsrv.web.limits.LimitedRequest.process_lean"
        steps = set(server.Request.process.__code__.co_names)
        for name in ("_IEncodingResource", "getEncoder", "_encoder"):
            self.need(name in steps, f"twisted.web's Request.process's use of {name}",
                      "Twisted", user)
        channel = http.HTTPChannel()
        channel.site = server.Site(resource.Resource())
        channel.makeConnection(StringTransport())
        request = server.Request(channel)
        request.requestHeaders.setRawHeaders(b"accept-encoding", [b"gzip"])
        wrapped = resource.EncodingResourceWrapper(resource.Resource(),
                                                   [server.GzipEncoderFactory()])
        _compat.use_resource_encoder(request, resource.Resource())
        self.assertIsNone(request._encoder)
        _compat.use_resource_encoder(request, wrapped)
        self.need(request._encoder is not None, "Request._encoder", "Twisted", user)

    def test_network_producer(self) -> None:
        channel = http.HTTPChannel()
        transport = StringTransport()
        channel.makeConnection(transport)
        self.need(getattr(channel, "_networkProducer", None) is not None,
                  "HTTPChannel._networkProducer", "Twisted", "network_producer")
        _compat.network_producer(channel).pauseProducing()
        self.assertEqual(transport.producerState, "paused")

    def test_switch_does_what_twisted_does(self) -> None:
        """Twisted's own switch sets the same attributes on the new channel as ours."""
        source = _compat.GenericHTTPChannelProtocol.dataReceived
        theirs = _assigned_attributes(source, "self._channel")
        ours = _assigned_attributes(_compat.switch_to_http2, "connection")
        self.need(theirs == ours, "what _GenericHTTPChannelProtocol.dataReceived sets on the "
                  f"H2Connection it switches to ({sorted(theirs)})", "Twisted",
                  "switch_to_http2")
        names = set(source.__code__.co_names)
        for name in ("_networkProducer", "unregisterProducer", "setTimeout", "makeConnection",
                     "registerProducer", "_negotiatedProtocol", "H2Connection"):
            self.need(name in names, f"_GenericHTTPChannelProtocol.dataReceived's use of {name}",
                      "Twisted", "switch_to_http2")

    def test_switch_to_http2(self) -> None:
        channel = _compat.GenericHTTPChannelProtocol(http.HTTPChannel())
        channel.requestFactory = http.Request
        channel.site = site = object()
        channel.factory = None
        transport = StringTransport()
        channel.makeConnection(transport)
        self.need(hasattr(_compat.http_channel(channel), "_networkProducer"),
                  "HTTPChannel._networkProducer", "Twisted", "switch_to_http2")
        connection = _compat.H2Connection()
        _compat.switch_to_http2(channel, connection, 7.0)
        self.assertIs(_compat.http_channel(channel), connection)
        self.assertEqual(_compat.http_negotiated_protocol(channel), b"h2")
        self.assertIs(connection.transport, transport)
        self.assertIs(transport.producer, connection)
        self.assertIs(connection.requestFactory, http.Request)
        self.assertIs(connection.site, site)
        self.assertEqual(connection.timeOut, 7.0)
        connection.connectionLost(Failure(ValueError("done")))

    def test_http2_connection(self) -> None:
        self.need_import("twisted.web._http2", "H2Connection", "Twisted", "H2Connection")
        connection = _compat.H2Connection()
        for name in ("_tryToWriteControlData", "resetTimeout", "openStreamWindow"):
            self.need(callable(getattr(connection, name, None)), f"H2Connection.{name}",
                      "Twisted", "http2_write_control_data, certsrv.web.limits")
        self.need(getattr(connection, "_stillProducing", None) is True,
                  "H2Connection._stillProducing", "Twisted", "http2_still_producing")
        self.need(hasattr(connection, "_consumerBlocked"), "H2Connection._consumerBlocked",
                  "Twisted", "http2_consumer_blocked")
        self.assertTrue(_compat.http2_still_producing(connection))
        self.assertIsNone(_compat.http2_consumer_blocked(connection))
        connection.makeConnection(StringTransport())
        _compat.http2_write_control_data(connection)
        connection.connectionLost(Failure(ValueError("done")))
        self.assertFalse(_compat.http2_still_producing(connection))

    def test_http2_stream(self) -> None:
        stream_class = self.need_import("twisted.web._http2", "H2Stream", "Twisted",
                                        "http2_stream_request, http2_stream_connection")
        connection = _compat.H2Connection()
        connection.makeConnection(StringTransport())
        self.addCleanup(connection.connectionLost, Failure(ValueError("done")))
        made: list[object] = []

        def request_factory(channel: object, queued: bool) -> http.Request:
            made.append(http.Request(channel, queued))  # type: ignore[arg-type]
            return made[-1]  # type: ignore[return-value]

        headers = [(b":method", b"GET"), (b":path", b"/"), (b":scheme", b"https"),
                   (b":authority", b"localhost")]
        stream = stream_class(1, connection, headers, request_factory, None, None)
        self.need(_compat.http2_stream_request(stream) is made[0], "H2Stream._request",
                  "Twisted", "http2_stream_request, certsrv.web.limits")
        self.need(_compat.http2_stream_connection(stream) is connection, "H2Stream._conn",
                  "Twisted", "http2_stream_connection, certsrv.web.site.connection_state")
        self.assertIsNone(_compat.http2_stream_request(None))
        self.assertIsNone(_compat.http2_stream_connection(http.HTTPChannel()))


# -- Twisted: the reactor and services --------------------------------------------------------


class TwistedReactorTests(_CompatTestCase):
    """The exit signal twistd re-raises, and services that raise when they cannot listen."""

    def test_exit_signal(self) -> None:
        from twisted.application.app import ApplicationRunner
        from twisted.internet.base import ReactorBase

        user = "exit_signal, clear_exit_signal (certsrv.server.lifecycle.exit_zero_on_sigterm)"
        self.need(ReactorBase.__dict__.get("_exitSignal", 0) is None,
                  "ReactorBase._exitSignal", "Twisted", user)
        self.need("_exitSignal" in ReactorBase.sigTerm.__code__.co_names,
                  "ReactorBase.sigTerm's _exitSignal", "Twisted", user)
        self.need("_exitSignal" in ApplicationRunner.startReactor.__code__.co_names,
                  "twistd's reading of reactor._exitSignal", "Twisted", user)

        class Reactor:
            _exitSignal = None

            def sigTerm(self, number: int) -> None:
                ReactorBase.sigTerm(self, number)  # type: ignore[arg-type]

            def callFromThread(self, f: Callable[[], object]) -> None:
                pass

            def stop(self) -> None:
                pass

        reactor = Reactor()
        self.assertIsNone(_compat.exit_signal(reactor))
        reactor.sigTerm(signal.SIGTERM)
        self.assertEqual(_compat.exit_signal(reactor), signal.SIGTERM)
        _compat.clear_exit_signal(reactor)
        self.assertIsNone(_compat.exit_signal(reactor))
        self.assertIsNone(_compat.exit_signal(object()))

    def test_raise_listen_errors(self) -> None:
        from twisted.application.internet import StreamServerEndpointService

        user = "raise_listen_errors (certsrv.server.startup.Listener)"
        self.need(StreamServerEndpointService.__dict__.get("_raiseSynchronously") is False,
                  "StreamServerEndpointService._raiseSynchronously", "Twisted", user)

        class Refusing:
            def listen(self, factory: object) -> defer.Deferred[None]:
                return defer.fail(CannotListenError("127.0.0.1", 1, OSError("in use")))

        service = StreamServerEndpointService(Refusing(), protocol.Factory())
        _compat.raise_listen_errors(service)
        raised = False
        try:
            service.privilegedStartService()
        except CannotListenError:
            raised = True
        self.need(raised, "StreamServerEndpointService._raiseSynchronously", "Twisted", user)


# -- Twisted: TLS client trust, and treq ------------------------------------------------------


class ClientTests(_CompatTestCase):
    """IOpenSSLTrustRoot, and the treq helpers certsrv's client re-assembles requests from."""

    def test_trust_root_interface(self) -> None:
        from twisted.internet.ssl import platformTrust

        interface = self.need_import("twisted.internet._sslverify", "IOpenSSLTrustRoot",
                                     "Twisted", "IOpenSSLTrustRoot, certsrv.client.http")
        self.assertTrue(interface.providedBy(platformTrust()))

    def test_treq_names(self) -> None:
        user = "certsrv.client.http._CertsrvHTTPClient"
        for module, name in (("treq._types", "_NOTHING"), ("treq.response", "_Response"),
                             ("treq.client", "_coerced_query_params"),
                             ("treq.client", "_scoped_cookiejar_from_dict"),
                             ("treq.client", "_merge_cookies")):
            self.need_import(module, name, "treq", user)

    def test_treq_helpers(self) -> None:
        from treq.client import HTTPClient
        from treq.cookies import IndexableCookieJar

        self.assertEqual(list(_compat.treq_query_params({"a": ["1 2", "3"]})),
                         [("a", "1+2"), ("a", "3")])
        url = EncodedURL.from_text("https://example.org/")
        scoped = _compat.treq_scoped_cookiejar(url, {"session": "x"})
        self.assertIsInstance(scoped, CookieJar)
        jar = IndexableCookieJar()
        _compat.treq_merge_cookies(jar, scoped)
        self.assertEqual([c.name for c in jar], ["session"])
        agent = object()
        client = HTTPClient(agent)  # type: ignore[arg-type]
        for name in ("_agent", "_cookiejar", "_request_headers", "_request_body"):
            self.need_attribute(client, name, "treq", "treq_agent, treq_cookiejar, "
                                "treq_request_headers, treq_request_body")
        self.assertIs(_compat.treq_agent(client), agent)
        self.assertIsInstance(_compat.treq_cookiejar(client), CookieJar)
        headers = _compat.treq_request_headers(client, {"accept": "text/plain"}, 1)
        self.assertIsInstance(headers, Headers)
        self.assertEqual(headers.getRawHeaders(b"accept"), [b"text/plain"])
        self.assertEqual(_compat.treq_request_body(client, None, None, _compat.TREQ_NO_JSON, 1),
                         (None, None))
        _, content_type = _compat.treq_request_body(client, None, None, {"a": 1}, 1)
        self.assertEqual(content_type, b"application/json; charset=UTF-8")

    def test_treq_response(self) -> None:
        from twisted.web.iweb import IResponse

        class Original:
            code = 204

        response = _compat.TreqResponse(Original(), CookieJar())
        self.need(IResponse.providedBy(response) and response.code == 204,
                  "treq.response._Response(original, cookiejar)", "treq",
                  "certsrv.client.http._CertsrvHTTPClient.request")


# -- Nothing else reaches for them -----------------------------------------------------------

_THIRD_PARTY = ("OpenSSL", "twisted", "treq", "h2", "hyperframe", "cryptography",
                "service_identity", "zope")


def _private_imports(tree: ast.Module) -> Iterator[str]:
    """The private third-party modules and names a module imports."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
            names: list[str] = []
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            modules, names = [node.module], [alias.name for alias in node.names]
        else:
            continue
        for module in modules:
            if module.split(".")[0] not in _THIRD_PARTY:
                continue
            private = [part for part in module.split(".") if part.startswith("_")]
            private += [name for name in names if name.startswith("_")]
            if private:
                yield f"{module}: {', '.join(private)}"


def _super_calls(tree: ast.Module) -> Iterator[str]:
    """The private methods a module calls through ``super()``."""
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and node.attr.startswith("_")
                and not node.attr.startswith("__") and isinstance(node.value, ast.Call)
                and ast.unparse(node.value.func) == "super"):
            yield node.attr


class OnlyCompatTests(SynchronousTestCase):
    """No certsrv module but ``_compat`` imports a private module or name of a library, and
    the private methods reached through ``super()`` are the overrides ``_compat`` lists."""

    def test_no_private_imports_elsewhere(self) -> None:
        package = pathlib.Path(_compat.__file__).parent
        found = []
        for path in sorted(package.rglob("*.py")):
            if path.name == "_compat.py" and path.parent == package:
                continue
            found += [f"{path.relative_to(package.parent)}: {use}"
                      for use in _private_imports(ast.parse(path.read_text()))]
        self.assertEqual(found, [])

    def test_super_calls_are_listed_overrides(self) -> None:
        package = pathlib.Path(_compat.__file__).parent
        listed = {*_compat.TLS_TRANSPORT_OVERRIDES, *_compat.HTTP2_CONNECTION_OVERRIDES}
        found = [f"{path.relative_to(package.parent)}: super().{name}"
                 for path in sorted(package.rglob("*.py"))
                 for name in _super_calls(ast.parse(path.read_text())) if name not in listed]
        self.assertEqual(found, [])
