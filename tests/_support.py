"""Shared test fixtures: a PKI made at test time, servers in memory and on 127.0.0.1."""

from __future__ import annotations

import datetime
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from cryptography.x509.oid import ExtendedKeyUsageOID
from twisted.internet import protocol
from twisted.internet.ssl import Certificate, PrivateCertificate, optionsForClientTLS
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from twisted.test.iosim import connectedServerAndClient

from certsrv.pki import CertificateAuthority, IssuedCertificate, self_signed_client
from certsrv.server.build import build_site
from certsrv.tls.context import ServerTLS, TLSFactory, TLSSettings
from certsrv.tls.verify import AllowedTypes, ClientCertificatePolicy

DAY = datetime.timedelta(days=1)


def utcnow() -> datetime.datetime:
    """The wall clock, which OpenSSL judges validity by."""
    return datetime.datetime.now(datetime.UTC)


def clock_at_now() -> Clock:
    """A test clock set to the wall clock's current time."""
    clock = Clock()
    clock.advance(time.time())
    return clock


@dataclass
class PKI:
    """A root, an intermediate, a server certificate and a set of client certificates."""

    root: CertificateAuthority = field(default_factory=lambda: CertificateAuthority.create(
        "Test Root CA"))
    other_root: CertificateAuthority = field(default_factory=lambda: CertificateAuthority.create(
        "Unrelated Root CA"))

    def __post_init__(self) -> None:
        self.intermediate = self.root.intermediate("Test Intermediate CA")
        self.server = self.root.issue_server("localhost", "127.0.0.1")
        self.client = self.root.issue_client("alice", emails=["alice@example.org"],
                                             uris=["spiffe://example.org/ns/a/sa/alice"])

    def client_cert(self, kind: str) -> IssuedCertificate:
        """A client certificate of a named kind (see the code for the kinds)."""
        now = utcnow()
        if kind == "valid":
            return self.client
        if kind == "expired":
            return self.root.issue_client("expired", not_before=now - 10 * DAY,
                                          not_after=now - DAY)
        if kind == "not_yet_valid":
            return self.root.issue_client("future", not_before=now + DAY,
                                          not_after=now + 10 * DAY)
        if kind == "unknown_ca":
            return self.other_root.issue_client("mallory")
        if kind == "server_auth_only":
            return self.root.issue_client("svc", extended_key_usage=(
                ExtendedKeyUsageOID.SERVER_AUTH,))
        if kind == "via_intermediate":
            return self.intermediate.issue_client("bob")
        if kind == "self_signed":
            return self_signed_client("selfie")
        raise ValueError(kind)

    def settings(self, **kwargs: Any) -> TLSSettings:
        """Server TLS settings trusting ``root``."""
        kwargs.setdefault("roots", (self.root.certificate,))
        return TLSSettings(certificate=self.server.certificate,
                           private_key=self.server.private_key, **kwargs)


_shared: list[PKI] = []


def shared_pki() -> PKI:
    """One PKI per test run: making keys is cheap, but not free."""
    if not _shared:
        _shared.append(PKI())
    return _shared[0]


def make_server_factory(
    settings: TLSSettings,
    clock: Clock | None = None,
    allowed_types: AllowedTypes = AllowedTypes.CHAINED,
    pins: frozenset[str] = frozenset(),
    policy: ClientCertificatePolicy | None = None,
    http2: bool = False,
    app: Any = None,
    limits: Any = None,
) -> TLSFactory:
    """A certsrv TLS factory serving the default resource tree behind the gate."""
    if policy is None:
        policy = ClientCertificatePolicy(clock or clock_at_now(), allowed_types, pins)
    site = build_site(policy, app=app, http2=http2, limits=limits)
    return TLSFactory(ServerTLS(settings, policy), site)


class HTTPClientProtocol(protocol.Protocol):
    """Sends one request when connected and keeps everything it receives."""

    def __init__(self, request: bytes) -> None:
        self.request = request
        self.received = b""
        self.lost: Failure | None = None

    def connectionMade(self) -> None:
        self.transport.write(self.request)

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        self.lost = reason


def request_bytes(path: str = "/secure", accept: str | None = None) -> bytes:
    """An HTTP/1.1 request that closes the connection after its response."""
    lines = [f"GET {path} HTTP/1.1", "Host: localhost", "Connection: close"]
    if accept:
        lines.append(f"Accept: {accept}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def client_tls_options(pki: PKI, cert: IssuedCertificate | None, *, send_chain: bool = True,
                       max_tls: Any = None) -> Any:
    """Client TLS options presenting ``cert`` (and its chain) and trusting ``pki.root``."""
    extra: dict[str, Any] = {}
    client_cert = None
    if cert is not None:
        client_cert = PrivateCertificate.loadPEM(cert.certificate_pem() + cert.private_key_pem())
        if send_chain and cert.chain:
            extra["extraCertChain"] = [
                Certificate.loadPEM(IssuedCertificate(c, cert.private_key).certificate_pem()
                                    ).original for c in cert.chain]
    if max_tls is not None:
        extra["lowerMaximumSecurityTo"] = max_tls
    return optionsForClientTLS(
        "localhost",
        trustRoot=Certificate.loadPEM(pki.root.certificate_pem()),
        clientCertificate=client_cert,
        extraCertificateOptions=extra or None,
    )


@dataclass
class Exchange:
    """The outcome of one in-memory connection."""

    client: HTTPClientProtocol
    server_tls: Any

    @property
    def status(self) -> int | None:
        """The HTTP status the client received, if any."""
        if not self.client.received.startswith(b"HTTP/1.1 "):
            return None
        return int(self.client.received.split(b" ", 2)[1])

    @property
    def body(self) -> bytes:
        """The response body."""
        return self.client.received.partition(b"\r\n\r\n")[2]

    @property
    def client_error(self) -> str:
        """The text of the client's connection-lost reason (the alert, on a rejection)."""
        return str(self.client.lost.value) if self.client.lost is not None else ""


def exchange(server_factory: TLSFactory, client_options: Any, request: bytes | None = None
             ) -> Exchange:
    """Run one full TLS connection and HTTP request in memory."""
    http = HTTPClientProtocol(request if request is not None else request_bytes())
    clock = server_factory.tls.clock
    client_factory = TLSMemoryBIOFactory(client_options, True,
                                         protocol.Factory.forProtocol(lambda: http), clock=clock)
    client, server, pump = connectedServerAndClient(
        lambda: server_factory.buildProtocol(None),
        lambda: client_factory.buildProtocol(None),
        greet=False,
        clock=clock,
    )
    pump.flush()
    # iosim does not deliver the final close unless asked; finish the exchange.
    for _ in range(5):
        if http.lost is not None:
            break
        client.transport.loseConnection()
        server.transport.loseConnection()
        pump.flush()
    return Exchange(http, server)


@contextmanager
def captured_events(namespace: str = "certsrv.tls") -> Iterator[list[dict[str, Any]]]:
    """Collect the structured log events of ``namespace`` emitted inside the block."""
    events: list[dict[str, Any]] = []

    def observer(event: dict[str, Any]) -> None:
        if event.get("log_namespace") == namespace:
            events.append(event)

    globalLogPublisher.addObserver(observer)
    try:
        yield events
    finally:
        globalLogPublisher.removeObserver(observer)


def write_pem(directory: str, name: str, data: bytes, mode: int = 0o644) -> str:
    """Write ``data`` into ``directory/name`` and return the path."""
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, name)
    with open(path, "wb") as f:
        f.write(data)
    os.chmod(path, mode)
    return path


def serve_http(case: Any, root: Any) -> str:
    """Serve ``root`` over plain HTTP on 127.0.0.1 for one test; return its base URL."""
    from twisted.internet import reactor
    from twisted.web import server

    site = server.Site(root)
    site.noisy = False
    port = reactor.listenTCP(0, site, interface="127.0.0.1")  # type: ignore[attr-defined]
    case.addCleanup(port.stopListening)
    return f"http://127.0.0.1:{port.getHost().port}/"
