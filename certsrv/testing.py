"""
Helpers for testing an application protected by certsrv, and certsrv itself, in memory.

Owns: the test certificate factory (``CertificateFactory``, ``TestPKI``, ``ServerFiles``),
the in-memory mutual-TLS client and server (``MemoryServer``, ``Response``,
``open_in_memory``, ``connect_in_memory``, ``client_tls_options``) and a fake OCSP responder
(``FakeOCSPResponder``). Nothing here opens a socket or waits: connections run over
``twisted.test.iosim``, and the server judges time by a clock the test controls.
May import: every certsrv layer (``certsrv.x509`` to ``certsrv.server``, ``certsrv.pki``,
``certsrv.client``); nothing in certsrv imports it.

A minimal test (see docs/testing.rst)::

    pki = TestPKI()
    server = MemoryServer.protecting(MyResource(), pki)
    assert server.get("/", client=pki.client).status == 200
    assert server.get("/", client=pki.client_cert("expired")).alert == "certificate expired"
"""

from __future__ import annotations

import datetime
import json
import os
import re
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import h2.config
import h2.connection
import h2.events
import h2.exceptions
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID
from twisted.internet import defer, protocol
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IReactorTime
from twisted.internet.ssl import (
    Certificate,
    PrivateCertificate,
    optionsForClientTLS,
    trustRootFromCertificates,
)
from twisted.internet.task import Clock
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python import usage
from twisted.python.failure import Failure
from twisted.test.iosim import IOPump, connectedServerAndClient
from twisted.web import resource
from twisted.web.http_headers import Headers
from twisted.web.server import Request

from certsrv.exceptions import ConfigurationError, OCSPError, RevocationProblem
from certsrv.pki import (
    CertificateAuthority,
    IssuedCertificate,
    KeyType,
    self_signed_client,
    write_atomic,
    write_private_key,
)
from certsrv.pki.responder import OCSPResource, ReactorTime, StatusRecord
from certsrv.revocation.ocsp import CertStatus
from certsrv.revocation.ocspcheck import Fetcher, OCSPChecker
from certsrv.server.options import Options, makeService
from certsrv.tls.context import TLSFactory, TLSSettings

__all__ = [
    "CertificateFactory",
    "FakeOCSPResponder",
    "MemoryServer",
    "Response",
    "ServerFiles",
    "TestPKI",
    "client_tls_options",
    "clock_at_now",
    "connect_in_memory",
    "open_in_memory",
    "policy_extensions",
]

_DAY = datetime.timedelta(days=1)
_KEY_USAGES = ("digital_signature", "content_commitment", "key_encipherment",
               "data_encipherment", "key_agreement", "key_cert_sign", "crl_sign",
               "encipher_only", "decipher_only")
KeyUsageSpec = x509.KeyUsage | Iterable[str] | None
Revokable = IssuedCertificate | x509.Certificate | int


def clock_at_now() -> Clock:
    """A ``Clock`` set to the wall clock's time now (OpenSSL judges validity by the wall clock)."""
    clock = Clock()
    clock.advance(time.time())
    return clock


# --- certificates ------------------------------------------------------------------------------


def _key_usage(spec: KeyUsageSpec) -> x509.KeyUsage | None:
    """A KeyUsage extension from the names of the usages it allows (``"digital_signature"``...)."""
    if spec is None or isinstance(spec, x509.KeyUsage):
        return spec
    names = set(spec)
    unknown = sorted(names - set(_KEY_USAGES))
    if unknown:
        raise ValueError(f"unknown key usage {unknown[0]!r}; expected some of {_KEY_USAGES}")
    return x509.KeyUsage(**{name: name in names for name in _KEY_USAGES})


def _validity(expired: bool, not_yet_valid: bool, not_before: datetime.datetime | None,
              not_after: datetime.datetime | None) -> dict[str, Any]:
    """The validity window asked for: explicit dates, or expired / not yet valid by days."""
    if expired and not_yet_valid:
        raise ValueError("a certificate cannot be both expired and not yet valid")
    now = datetime.datetime.now(datetime.UTC)
    if expired:
        not_before, not_after = not_before or now - 10 * _DAY, not_after or now - _DAY
    elif not_yet_valid:
        not_before, not_after = not_before or now + _DAY, not_after or now + 10 * _DAY
    return {"not_before": not_before, "not_after": not_after}


class CertificateFactory(CertificateAuthority):
    """A ``CertificateAuthority`` issuing with chosen validity, key usages and SANs."""

    @classmethod
    def create(cls, common_name: str = "certsrv test CA", **kwargs: Any) -> CertificateFactory:
        """A new self-signed root CA (``CertificateAuthority.create``'s keywords)."""
        return cls.wrap(CertificateAuthority.create(common_name, **kwargs))

    @classmethod
    def wrap(cls, ca: CertificateAuthority) -> CertificateFactory:
        """The factory issuing from an existing CA."""
        return cls(ca.certificate, ca.private_key, ca.chain, ca.ocsp_url, ca.crl_url)

    def client(
        self,
        common_name: str | None = "alice",
        *,
        organization: str | None = None,
        expired: bool = False,
        not_yet_valid: bool = False,
        not_before: datetime.datetime | None = None,
        not_after: datetime.datetime | None = None,
        valid_for: datetime.timedelta = datetime.timedelta(days=365),
        key_usage: KeyUsageSpec = None,
        extended_key_usage: Sequence[x509.ObjectIdentifier] | None = (
            ExtendedKeyUsageOID.CLIENT_AUTH,),
        dns: Iterable[str] = (),
        ips: Iterable[str] = (),
        emails: Iterable[str] = (),
        uris: Iterable[str] = (),
        key_type: KeyType = KeyType.ECDSA_P256,
        serial_number: int | None = None,
        extensions: Sequence[tuple[x509.ExtensionType, bool]] = (),
    ) -> IssuedCertificate:
        """A client certificate (EKU clientAuth, KU digitalSignature unless told otherwise);
        ``extensions``: more (extension, critical) pairs, added as they are (e.g. CRL
        distribution points, or ``policy_extensions``)."""
        return self.issue(
            common_name, organization=organization, validity=valid_for,
            key_usage=_key_usage(key_usage), extended_key_usage=extended_key_usage, dns=dns,
            ips=ips, emails=emails, uris=uris, key_type=key_type, serial_number=serial_number,
            extra_extensions=extensions,
            **_validity(expired, not_yet_valid, not_before, not_after))

    def server(
        self,
        *hosts: str,
        expired: bool = False,
        not_yet_valid: bool = False,
        not_before: datetime.datetime | None = None,
        not_after: datetime.datetime | None = None,
        valid_for: datetime.timedelta = datetime.timedelta(days=365),
        key_usage: KeyUsageSpec = None,
        extended_key_usage: Sequence[x509.ObjectIdentifier] | None = (
            ExtendedKeyUsageOID.SERVER_AUTH,),
        key_type: KeyType = KeyType.ECDSA_P256,
    ) -> IssuedCertificate:
        """A server certificate for ``hosts`` (default localhost and 127.0.0.1; EKU serverAuth)."""
        return self.issue_server(
            *(hosts or ("localhost", "127.0.0.1")), validity=valid_for,
            key_usage=_key_usage(key_usage), extended_key_usage=extended_key_usage,
            key_type=key_type, **_validity(expired, not_yet_valid, not_before, not_after))

    def intermediate(self, common_name: str, *,
                     extensions: Sequence[tuple[x509.ExtensionType, bool]] = (),
                     **kwargs: Any) -> CertificateFactory:
        """An intermediate CA below this one (``CertificateAuthority.intermediate``'s keywords;
        ``extensions`` added as they are, see ``policy_extensions``)."""
        return self.wrap(super().intermediate(common_name, extra_extensions=extensions,
                                              **kwargs))

    def ocsp_responder(self, common_name: str = "certsrv OCSP responder",
                       **kwargs: Any) -> IssuedCertificate:
        """A delegated OCSP responder certificate (id-kp-OCSPSigning, ocsp-nocheck)."""
        return self.issue_ocsp_responder(common_name, **kwargs)

    def crl_pem(
        self,
        *revoked: Revokable,
        revoked_at: datetime.datetime | None = None,
        reason: x509.ReasonFlags | None = x509.ReasonFlags.key_compromise,
        **kwargs: Any,
    ) -> bytes:
        """A CRL (PEM) revoking certificates or serial numbers (a day ago unless ``revoked_at``)."""
        when = revoked_at or datetime.datetime.now(datetime.UTC) - _DAY
        entries = [(_serial(item), when, reason) for item in revoked]
        return self.crl(entries, **kwargs).public_bytes(Encoding.PEM)


    def scoped_crl(
        self,
        entries: Iterable[CRLEntry] = (),
        *,
        number: int = 1,
        delta_of: int | None = None,
        idp: x509.IssuingDistributionPoint | None = None,
        freshest: Sequence[x509.DistributionPoint] = (),
        last_update: datetime.datetime | None = None,
        next_update: datetime.datetime | None = None,
        signed_by: CertificateAuthority | None = None,
    ) -> x509.CertificateRevocationList:
        """A CRL of this CA with RFC 5280's scoping: a delta of CRL number ``delta_of``, an
        issuing distribution point (indirect, some reasons, one point), freshestCRL, entries
        as (serial or certificate, reason, certificateIssuer name or None), signed with
        ``signed_by``'s key (another key of this CA, or an indirect CRL's issuer)."""
        now = datetime.datetime.now(datetime.UTC)
        builder = (x509.CertificateRevocationListBuilder()
                   .issuer_name(self.certificate.subject)
                   .last_update(last_update or now - _DAY)
                   .next_update(next_update or now + 7 * _DAY)
                   .add_extension(x509.CRLNumber(number), False))
        if delta_of is not None:
            builder = builder.add_extension(x509.DeltaCRLIndicator(delta_of), True)
        if idp is not None:
            builder = builder.add_extension(idp, True)
        if freshest:
            builder = builder.add_extension(x509.FreshestCRL(list(freshest)), False)
        for item, reason, issuer in entries:
            entry = (x509.RevokedCertificateBuilder().serial_number(_serial(item))
                     .revocation_date(now - _DAY))
            if reason is not None:
                entry = entry.add_extension(x509.CRLReason(reason), False)
            if issuer is not None:
                entry = entry.add_extension(
                    x509.CertificateIssuer([x509.DirectoryName(issuer)]), True)
            builder = builder.add_revoked_certificate(entry.build())
        key = (signed_by or self).private_key
        return builder.sign(key, None if isinstance(key, (ed25519.Ed25519PrivateKey,))
                            else hashes.SHA256())  # type: ignore[arg-type]


# A CRL entry for ``CertificateFactory.scoped_crl``: what, why, and (indirect CRLs) whose.
CRLEntry = tuple["Revokable", "x509.ReasonFlags | None", "x509.Name | None"]


def policy_extensions(
    policies: Iterable[str] | None = None,
    *,
    mappings: Iterable[tuple[str, str]] = (),
    require_explicit: int | None = None,
    inhibit_mapping: int | None = None,
    inhibit_any: int | None = None,
) -> list[tuple[x509.ExtensionType, bool]]:
    """Certificate policy extensions (RFC 5280 4.2.1.4-5, 4.2.1.11, 4.2.1.14) for
    ``CertificateFactory.client`` and ``intermediate``: certificatePolicies (None: none),
    policyMappings (issuerDomainPolicy, subjectDomainPolicy), policyConstraints and
    inhibitAnyPolicy, each left out unless given."""
    found: list[tuple[x509.ExtensionType, bool]] = []
    if policies is not None:
        found.append((x509.CertificatePolicies([
            x509.PolicyInformation(x509.ObjectIdentifier(oid), None) for oid in policies]),
            False))
    pairs = list(mappings)
    if pairs:
        found.append((x509.UnrecognizedExtension(ExtensionOID.POLICY_MAPPINGS,
                                                 _policy_mappings_der(pairs)), True))
    if require_explicit is not None or inhibit_mapping is not None:
        found.append((x509.PolicyConstraints(require_explicit, inhibit_mapping), True))
    if inhibit_any is not None:
        found.append((x509.InhibitAnyPolicy(inhibit_any), True))
    return found


def _policy_mappings_der(pairs: list[tuple[str, str]]) -> bytes:
    def tlv(tag: int, content: bytes) -> bytes:
        n = len(content)
        length = bytes([n]) if n < 0x80 else bytes([0x80 | (n.bit_length() + 7) // 8]) \
            + n.to_bytes((n.bit_length() + 7) // 8, "big")
        return bytes([tag]) + length + content

    def oid(text: str) -> bytes:
        arcs = [int(a) for a in text.split(".")]
        out = b""
        for arc in [40 * arcs[0] + arcs[1], *arcs[2:]]:
            chunk = [arc & 0x7F]
            while arc > 0x7F:
                arc >>= 7
                chunk.append(0x80 | arc & 0x7F)
            out += bytes(reversed(chunk))
        return tlv(0x06, out)

    return tlv(0x30, b"".join(tlv(0x30, oid(a) + oid(b)) for a, b in pairs))


def _serial(item: Revokable) -> int:
    return item if isinstance(item, int) else item.serial_number


class TestPKI:
    """A root and intermediate, server and client (alice) certificates, an unrelated root."""

    __test__ = False  # not a test case, whatever test collectors think of the name
    KINDS = ("valid", "expired", "not_yet_valid", "unknown_ca", "server_auth_only",
             "via_intermediate", "self_signed")

    def __init__(self, *, hosts: Sequence[str] = ("localhost", "127.0.0.1")) -> None:
        self.root = CertificateFactory.create("Test Root CA")
        self.other_root = CertificateFactory.create("Unrelated Root CA")
        self.intermediate = self.root.intermediate("Test Intermediate CA")
        self.server = self.root.server(*hosts)
        self.client = self.root.client("alice", emails=["alice@example.org"],
                                       uris=["spiffe://example.org/ns/a/sa/alice"])

    def client_cert(self, kind: str) -> IssuedCertificate:
        """A client certificate of a kind in ``KINDS`` (all but valid, via_intermediate refused)."""
        if kind == "valid":
            return self.client
        if kind == "expired":
            return self.root.client("expired", expired=True)
        if kind == "not_yet_valid":
            return self.root.client("future", not_yet_valid=True)
        if kind == "unknown_ca":
            return self.other_root.client("mallory")
        if kind == "server_auth_only":
            return self.root.client("svc", extended_key_usage=(ExtendedKeyUsageOID.SERVER_AUTH,))
        if kind == "via_intermediate":
            return self.intermediate.client("bob")
        if kind == "self_signed":
            return self_signed_client("selfie")
        raise ValueError(f"unknown kind {kind!r}; expected one of {self.KINDS}")

    def settings(self, **kwargs: Any) -> TLSSettings:
        """Server TLS settings with ``server``'s certificate, trusting ``root`` unless told."""
        kwargs.setdefault("roots", (self.root.certificate,))
        return TLSSettings(certificate=self.server.certificate,
                           private_key=self.server.private_key, **kwargs)

    def files(self, directory: str) -> ServerFiles:
        """Write the server certificate, its key and the root to ``directory``."""
        return ServerFiles(self, directory)


class ServerFiles:
    """A PKI's server certificate (``cert``), key (``key``) and root (``ca``) in ``dir``."""

    def __init__(self, pki: TestPKI, directory: str) -> None:
        os.makedirs(directory, exist_ok=True)
        self.dir = directory
        self.ca = os.path.join(directory, "ca.pem")
        self.cert = os.path.join(directory, "server.pem")
        self.key = os.path.join(directory, "server.key")
        write_atomic(self.ca, pki.root.certificate_pem())
        write_atomic(self.cert, pki.server.chain_pem())
        write_private_key(self.key, pki.server.private_key_pem())

    def argv(self, *extra: str) -> list[str]:
        """``--cert``, ``--key`` and ``--ca`` naming these files, then ``extra``."""
        return ["--cert", self.cert, "--key", self.key, "--ca", self.ca, *extra]


# --- the in-memory client and server -----------------------------------------------------------


def client_tls_options(
    trust: Iterable[x509.Certificate],
    certificate: IssuedCertificate | None = None,
    *,
    hostname: str = "localhost",
    send_chain: bool = True,
    max_tls: Any = None,
    alpn: Sequence[bytes] | None = None,
) -> Any:
    """Client TLS options trusting ``trust``, presenting ``certificate`` (None: none)."""
    extra: dict[str, Any] = {}
    client_cert = None
    if certificate is not None:
        client_cert = PrivateCertificate.loadPEM(certificate.certificate_pem()
                                                 + certificate.private_key_pem())
        if send_chain and certificate.chain:
            extra["extraCertChain"] = [Certificate.loadPEM(_pem(c)).original
                                       for c in certificate.chain]
    if max_tls is not None:
        extra["lowerMaximumSecurityTo"] = max_tls
    roots = trustRootFromCertificates([Certificate.loadPEM(_pem(c)) for c in trust])
    return optionsForClientTLS(hostname, trustRoot=roots, clientCertificate=client_cert,
                               extraCertificateOptions=extra or None,
                               acceptableProtocols=list(alpn) if alpn else None)


def _pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(Encoding.PEM)


def open_in_memory(factory: TLSFactory, client_options: Any, client: protocol.Protocol
                   ) -> tuple[Any, Any, IOPump]:
    """``client``'s TLS connection to ``factory`` in memory: (client side, server side, pump)."""
    # Flushed once: the handshake and what the client sent at once are through. Advance the
    # server's clock (factory.tls.clock) and flush the pump to go on.
    clock: Any = factory.tls.clock
    client_factory = TLSMemoryBIOFactory(client_options, True,
                                         protocol.Factory.forProtocol(lambda: client),
                                         clock=clock)
    client_tls, server_tls, pump = connectedServerAndClient(
        lambda: factory.buildProtocol(None), lambda: client_factory.buildProtocol(None),
        greet=False, clock=clock)
    pump.flush()
    return client_tls, server_tls, pump


def connect_in_memory(factory: TLSFactory, client_options: Any, client: protocol.Protocol,
                      *, run_reactor_calls: bool = False) -> Any:
    """Run ``client``'s TLS connection to ``factory`` in memory to its end; the server side."""
    # run_reactor_calls: also run the global reactor's calls as they fall due, for server code
    # that schedules work there rather than on the server's clock (Twisted's HTTP/2).
    client_tls, server_tls, pump = open_in_memory(factory, client_options, client)
    if run_reactor_calls:
        _run_reactor_calls(pump, client)
    # iosim does not deliver the final close unless asked: finish the exchange.
    for _ in range(5):
        if getattr(client, "lost", None) is not None:
            break
        client_tls.transport.loseConnection()  # type: ignore[union-attr]
        server_tls.transport.loseConnection()  # type: ignore[union-attr]
        pump.flush()
    return server_tls


def _run_reactor_calls(pump: Any, client: protocol.Protocol) -> None:
    from twisted.internet import reactor

    for _ in range(1000):
        now = reactor.seconds()  # type: ignore[attr-defined]
        due = [c for c in reactor.getDelayedCalls()  # type: ignore[attr-defined]
               if c.getTime() <= now]
        if not due or getattr(client, "lost", None) is not None:
            return
        reactor.runUntilCurrent()  # type: ignore[attr-defined]
        pump.flush()


_ALERT = re.compile(r"(?:sslv3|tlsv1|tlsv13|tls) alert ([a-z ]+)")


@dataclass(frozen=True)
class Response:
    """An HTTP response, or (``status`` None) a connection refused with a TLS ``alert``."""

    status: int | None
    headers: Headers = field(default_factory=Headers)
    body: bytes = b""
    error: str | None = None  # how the connection ended, unless cleanly
    raw: bytes = b""  # the bytes received over HTTP/1.1
    http_version: str = "HTTP/1.1"

    @property
    def alert(self) -> str | None:
        """The TLS alert the client received, as OpenSSL names it (``"certificate revoked"``)."""
        match = _ALERT.search(self.error or "")
        return match.group(1).strip() if match else None

    def header(self, name: str) -> str | None:
        """The first value of the response header ``name``, or None."""
        values = self.headers.getRawHeaders(name.encode("latin-1"))
        return values[0].decode("latin-1") if values else None

    def json(self) -> Any:
        """The body, parsed as JSON (certsrv's refusals, with ``Accept: application/json``)."""
        return json.loads(self.body)


class _HTTP11Client(protocol.Protocol):
    """Sends its bytes once connected and keeps everything it receives."""

    def __init__(self, request: bytes) -> None:
        self.request = request
        self.received = b""
        self.lost: Failure | None = None

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.write(self.request)

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        self.lost = reason


def _dechunk(data: bytes) -> bytes:
    body = b""
    while data:
        size_line, _, rest = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0] or b"0", 16)
        if size == 0:
            break
        body, data = body + rest[:size], rest[size + 2:]
    return body


def _parse_http11(raw: bytes) -> tuple[int | None, Headers, bytes]:
    head, separator, rest = raw.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    if not separator or not lines[0].startswith(b"HTTP/1.") or len(lines[0].split()) < 2:
        return None, Headers(), b""
    headers = Headers()
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers.addRawHeader(name.strip(), value.strip())
    encoding = b",".join(headers.getRawHeaders(b"transfer-encoding", [])).lower()
    length = headers.getRawHeaders(b"content-length")
    if b"chunked" in encoding:
        rest = _dechunk(rest)
    elif length:
        rest = rest[:int(length[0])]
    return int(lines[0].split()[1]), headers, rest


def _ended(lost: Failure | None) -> str | None:
    if lost is None or lost.check(ConnectionDone):
        return None
    return str(lost.value)


class _H2Client(protocol.Protocol):
    """Speaks HTTP/2: one request on stream 1, then closes once its response has ended."""

    def __init__(self, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(
            client_side=True, header_encoding=None))
        self.request_headers, self.pending = headers, body
        self.status: int | None = None
        self.headers = Headers()
        self.body = b""
        self.problem: str | None = None
        self.ended = False  # the response arrived in full
        self.lost: Failure | None = None

    def connectionMade(self) -> None:
        self.conn.initiate_connection()
        self.conn.send_headers(1, self.request_headers, end_stream=not self.pending)
        self._send_body()

    def _send_body(self) -> None:
        try:
            while self.pending:
                window = min(self.conn.local_flow_control_window(1),
                             self.conn.max_outbound_frame_size)
                if window <= 0:
                    break
                chunk, self.pending = self.pending[:window], self.pending[window:]
                self.conn.send_data(1, chunk, end_stream=not self.pending)
        except h2.exceptions.ProtocolError:
            self.pending = b""  # the server closed the stream
        assert self.transport is not None
        self.transport.write(self.conn.data_to_send())

    def dataReceived(self, data: bytes) -> None:
        done = False
        try:
            events = self.conn.receive_data(data)
        except h2.exceptions.ProtocolError as e:
            events, done, self.problem = [], True, f"HTTP/2 protocol error: {e}"
        for event in events:
            done = self._record(event) or done
        self._send_body()
        if done:
            assert self.transport is not None
            self.transport.loseConnection()

    def _record(self, event: h2.events.Event) -> bool:
        """Record one event; whether the exchange is over."""
        if isinstance(event, h2.events.ResponseReceived):
            for name, value in event.headers or ():
                if bytes(name) == b":status":
                    self.status = int(value)
                else:
                    self.headers.addRawHeader(bytes(name), bytes(value))
        elif isinstance(event, h2.events.DataReceived):
            self.body += event.data or b""
            self.conn.acknowledge_received_data(event.flow_controlled_length or 0,
                                                event.stream_id or 1)
        elif isinstance(event, h2.events.StreamReset):
            self.problem = f"stream reset by the server (error code {event.error_code})"
            return True
        elif isinstance(event, h2.events.ConnectionTerminated):
            self.problem = f"connection terminated by the server (GOAWAY {event.error_code})"
            return True
        elif isinstance(event, h2.events.StreamEnded):
            self.ended = True
            return True
        return False

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        self.lost = reason


class MemoryServer:
    """A certsrv server in memory; each request is a new connection with a chosen client."""

    def __init__(self, factory: TLSFactory, trust: Iterable[x509.Certificate], *,
                 hostname: str = "localhost") -> None:
        self.factory = factory
        self.trust = tuple(trust)
        self.hostname = hostname

    @classmethod
    def protecting(cls, app: resource.IResource | None, pki: TestPKI, *argv: str,
                   clock: IReactorTime | None = None,
                   ocsp: Fetcher | None = None) -> MemoryServer:
        """``app`` (None: ``/secure`` or ``--app``) served as ``twistd certsrv`` with ``argv``."""
        # On pki's server certificate and root; OCSP lookups go to ``ocsp`` when given.
        options = Options()
        options.clock = clock if clock is not None else clock_at_now()
        with tempfile.TemporaryDirectory(prefix="certsrv-testing-") as directory:
            try:
                options.parseOptions(pki.files(directory).argv(*argv))
            except usage.UsageError as e:
                raise ConfigurationError("argv", str(e)) from None
        if app is not None:
            options.app = app
        if ocsp is not None:
            _route_ocsp(options, ocsp)
        service = makeService(options)
        factories = [child.factory for child in service  # type: ignore[attr-defined]
                     if isinstance(getattr(child, "factory", None), TLSFactory)]
        return cls(factories[0], [pki.root.certificate])

    @property
    def clock(self) -> IReactorTime:
        """The clock the server judges time by (a ``Clock``: advance it to move time)."""
        return self.factory.tls.clock

    def request(
        self,
        method: str = "GET",
        path: str = "/",
        *,
        client: IssuedCertificate | None = None,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
        http2: bool = False,
        send_chain: bool = True,
    ) -> Response:
        """One request on a new connection presenting ``client``, over HTTP/1.1 or HTTP/2."""
        if http2:
            return self._h2(method, path, client, list(headers), body, send_chain)
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self.hostname}",
                 *(f"{name}: {value}" for name, value in headers), "Connection: close"]
        if body:
            lines.append(f"Content-Length: {len(body)}")
        data = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
        return self.send(data, client=client, send_chain=send_chain)

    def get(self, path: str = "/", **kwargs: Any) -> Response:
        """A GET request (``request``'s keywords)."""
        return self.request("GET", path, **kwargs)

    def send(self, data: bytes, *, client: IssuedCertificate | None = None,
             send_chain: bool = True) -> Response:
        """Send raw HTTP/1.1 bytes on a new connection; the response, parsed."""
        peer = _HTTP11Client(data)
        connect_in_memory(self.factory, self._options(client, send_chain, None), peer)
        status, headers, response_body = _parse_http11(peer.received)
        return Response(status, headers, response_body, _ended(peer.lost), peer.received)

    def _h2(self, method: str, path: str, client: IssuedCertificate | None,
            headers: list[tuple[str, str]], body: bytes, send_chain: bool) -> Response:
        pseudo = [(b":method", method.encode()), (b":path", path.encode("latin-1")),
                  (b":scheme", b"https"), (b":authority", self.hostname.encode())]
        extra = [(n.lower().encode("latin-1"), v.encode("latin-1")) for n, v in headers]
        peer = _H2Client(pseudo + extra, body)
        connect_in_memory(self.factory, self._options(client, send_chain, [b"h2"]), peer,
                          run_reactor_calls=True)
        error = peer.problem or (None if peer.ended else _ended(peer.lost))
        return Response(peer.status, peer.headers, peer.body, error, b"", "HTTP/2")

    def _options(self, client: IssuedCertificate | None, send_chain: bool,
                 alpn: Sequence[bytes] | None) -> Any:
        return client_tls_options(self.trust, client, hostname=self.hostname,
                                  send_chain=send_chain, alpn=alpn)


def _route_ocsp(options: Options, fetch: Fetcher) -> None:
    """Send the OCSP lookups of parsed options to ``fetch`` instead of over HTTP."""
    checkers = [c for c in (options.revocation.checkers if options.revocation else ())
                if isinstance(c, OCSPChecker)]
    if not checkers:
        raise ConfigurationError("ocsp", "OCSP is off (--ocsp off): nothing to answer")
    for checker in checkers:
        checker.fetch = fetch


# --- a fake OCSP responder ---------------------------------------------------------------------


class _WallClock:
    """The wall clock, for a responder whose answers should be fresh now."""

    def seconds(self) -> float:
        return time.time()


class _ClosingOCSPResource(OCSPResource):
    """Answers with ``Connection: close``: an HTTP client keeps no connection open."""

    def render(self, request: Request) -> bytes:
        request.setHeader(b"connection", b"close")
        return super().render(request)  # type: ignore[no-any-return]


class FakeOCSPResponder:
    """A signed OCSP responder for one CA: good, revoked or unknown per serial number."""

    def __init__(self, ca: CertificateAuthority, *, clock: ReactorTime | None = None,
                 default: Literal["good", "unknown"] = "good",
                 validity: datetime.timedelta = datetime.timedelta(minutes=5),
                 signer: IssuedCertificate | None = None) -> None:
        self.ca = ca
        self.signer = signer if signer is not None else ca.issue_ocsp_responder()
        self.default = default
        self.down = False  # True: every lookup fails as if the responder were unreachable
        self.calls: list[str] = []  # the URLs asked, in order
        self._records: dict[int, StatusRecord] = {}
        self._resource = _ClosingOCSPResource(
            ca.certificate, self.signer.certificate, self.signer.private_key, self._status_of,
            clock if clock is not None else _WallClock(), validity)

    def good(self, *certificates: Revokable) -> None:
        """Answer "good" for these certificates (or serial numbers)."""
        for item in certificates:
            self._records[_serial(item)] = (CertStatus.GOOD, None, None)

    def revoke(self, *certificates: Revokable, at: datetime.datetime | None = None,
               reason: x509.ReasonFlags | None = x509.ReasonFlags.key_compromise) -> None:
        """Answer "revoked" (``at``, default a day ago, for ``reason``) for these."""
        when = at or datetime.datetime.now(datetime.UTC) - _DAY
        for item in certificates:
            self._records[_serial(item)] = (CertStatus.REVOKED, when, reason)

    def unknown(self, *certificates: Revokable) -> None:
        """Answer "unknown" for these."""
        for item in certificates:
            self._records[_serial(item)] = (CertStatus.UNKNOWN, None, None)

    def _status_of(self, serial: int) -> StatusRecord | None:
        record = self._records.get(serial)
        if record is None and self.default == "good":
            return CertStatus.GOOD, None, None
        return record

    def respond(self, request: bytes) -> bytes:
        """The DER OCSP response to the DER OCSP ``request``."""
        return self._resource.respond(request)

    def __call__(self, url: str, request: bytes) -> defer.Deferred[bytes]:
        """Answer ``request`` as if fetched from ``url`` (certsrv's ``Fetcher`` signature)."""
        self.calls.append(url)
        if self.down:
            return defer.fail(OCSPError(RevocationProblem.RESPONDER_DOWN,
                                        f"{url}: the fake responder is down"))
        return defer.succeed(self.respond(request))

    def resource(self) -> resource.IResource:
        """The responder as a twisted.web resource (POST and GET, RFC 6960 appendix A)."""
        return self._resource

