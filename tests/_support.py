"""Shared test fixtures, in one place: the PKI (certsrv.testing's), servers in memory, files and
options of ``twistd certsrv``, the certificates of the access and proxy tests, and the DER
mutator, inputs and contracts of the hostile-input tests and fuzz/fuzz_targets.py.
Real processes and peers on 127.0.0.1 are in ``tests._servers``."""

from __future__ import annotations

import base64
import contextlib
import datetime
import functools
import io
import json
import linecache
import os
import select
import shutil
import socket
import subprocess
import time
import traceback
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Protocol

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.x509 import ocsp
from twisted.application.service import IService
from twisted.internet import protocol
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SkipTest, SynchronousTestCase
from twisted.web import resource, server

from certsrv import identity_of, testing
from certsrv.exceptions import ConfigurationError, OCSPError
from certsrv.pki import CertificateAuthority, IssuedCertificate, KeyType, PrivateKey
from certsrv.pki.cli import main as pki_main
from certsrv.pki.responder import OCSPResource, StatusRecord
from certsrv.pki.store import PKIStore
from certsrv.revocation.crlfetch import CRLError, verify_crl
from certsrv.revocation.ocsp import (
    CertStatus,
    OCSPStatus,
    SingleStatus,
    build_request,
    build_response,
    cert_id_key,
    verify_response,
)
from certsrv.server.build import build_site
from certsrv.server.options import Options
from certsrv.server.reload import Reloader
from certsrv.testing import CertificateFactory, ServerFiles, TestPKI, clock_at_now
from certsrv.tls.context import ServerTLS, TLSFactory, TLSSettings
from certsrv.tls.verify import AllowedTypes, ClientVerifier

DAY = datetime.timedelta(days=1)


def utcnow() -> datetime.datetime:
    """The wall clock, which OpenSSL judges validity by."""
    return datetime.datetime.now(datetime.UTC)


# The PKI of the tests is certsrv.testing's: a root ("Test Root CA"), an intermediate, a
# server certificate, alice's client certificate, an unrelated root, and ``client_cert(kind)``
# for each kind of client certificate certsrv refuses.
PKI = TestPKI


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
    verifier: ClientVerifier | None = None,
    http2: bool = False,
    app: Any = None,
    limits: Any = None,
) -> TLSFactory:
    """A certsrv TLS factory serving the default resource tree behind the gate."""
    if verifier is None:
        verifier = ClientVerifier(clock or clock_at_now(), allowed_types, pins)
    site = build_site(verifier, app=app, http2=http2, limits=limits)
    return TLSFactory(ServerTLS(settings, verifier), site)


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
    return testing.client_tls_options([pki.root.certificate], cert, send_chain=send_chain,
                                      max_tls=max_tls)


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
    server_tls = testing.connect_in_memory(server_factory, client_options, http)
    return Exchange(http, server_tls)


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


# --- files and options of ``twistd certsrv`` ---------------------------------------------------


class Files(ServerFiles):
    """The shared PKI's server certificate (``cert``), key (``key``) and root (``ca``) written
    to ``directory``; ``argv(*extra)`` names them."""

    def __init__(self, directory: str) -> None:
        super().__init__(shared_pki(), directory)


def options(argv: list[str], clock: IReactorTime | None = None) -> Options:
    """``twistd certsrv`` options parsed from ``argv``, judging time by ``clock``."""
    parsed = Options()
    parsed.clock = clock if clock is not None else clock_at_now()
    parsed.parseOptions(argv)
    return parsed


def pieces(service: IService) -> tuple[TLSFactory, Reloader]:
    """The TLS factory of the (first) listener and the reloader of a ``makeService`` tree."""
    factories = [child.factory for child in service  # type: ignore[attr-defined]
                 if isinstance(getattr(child, "factory", None), TLSFactory)]
    reloaders = [child for child in service if isinstance(child, Reloader)]  # type: ignore[attr-defined]
    return factories[0], reloaders[0]


def crl_pem(ca: CertificateAuthority, *revoked: IssuedCertificate | x509.Certificate,
            **kwargs: Any) -> bytes:
    """A CRL of ``ca`` (PEM) revoking ``revoked`` a day ago for key compromise."""
    return CertificateFactory.wrap(ca).crl_pem(*revoked, **kwargs)


# --- the certificates and policy of the access tests -------------------------------------------


@cache
def access_certs() -> dict[str, IssuedCertificate]:
    """Clients of the ``--policy`` tests, by name."""
    root = shared_pki().root
    return {
        "alice": shared_pki().client,  # CN=alice, spiffe://example.org/ns/a/sa/alice
        "clerk": root.issue_client("clerk", organization="Example Payments"),
        "workload": root.issue_client(
            "payments-api", uris=["spiffe://example.org/ns/payments/sa/api"]),
        "operator": root.issue_client("operator"),
        "nearly": root.issue_client(  # the right trust domain, another namespace
            "ledger", organization="Example Ledger",
            uris=["spiffe://example.org/ns/paymentsx/sa/api"]),
    }


def policy_text(admin: str) -> str:
    """The policy of these tests, admitting the certificate named ``admin`` to /admin."""
    return f"""
[[rule]]
name = "health"
path = "/health"
methods = ["GET"]
public = true

[[rule]]
name = "payments"
path = "/api/payments"
[rule.allow]
subject = {{ O = "Example Payments" }}
spiffe = ["spiffe://example.org/ns/payments/*"]

[[rule]]
name = "admin"
path = "/admin"
[rule.allow]
sha256 = ["{access_certs()[admin].fingerprint}"]
"""


class Echo(resource.Resource):
    """Every path: 200 naming the path and the client's identity (``-`` without one)."""

    isLeaf = True

    def render(self, request: server.Request) -> bytes:
        identity = identity_of(request)
        who = identity.subject if identity is not None else "-"
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return f"path={request.path.decode()} who={who}\n".encode()


class Counting(resource.Resource):
    """Counts the requests that reach it and names their client."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.reached = 0

    def render_GET(self, request: server.Request) -> bytes:
        self.reached += 1
        identity = identity_of(request)
        return f"private for {identity.subject if identity else None}\n".encode()


def reason_of(result: Exchange) -> str | None:
    try:
        return str(json.loads(result.body)["reason"])
    except (ValueError, KeyError):
        return None


def policy_app() -> resource.IResource:
    """The application behind the policy (``--app tests._support.policy_app``)."""
    return Echo()


class Hold(resource.Resource):
    """Holds every GET unanswered (in ``held``) until the test answers it."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.held: list[server.Request] = []

    def render_GET(self, request: server.Request) -> Any:
        self.held.append(request)
        return server.NOT_DONE_YET


# --- certificates forwarded by a proxy ---------------------------------------------------------


@cache
def proxy_certs() -> dict[str, IssuedCertificate]:
    """The proxy and the clients of the forwarding tests, by name."""
    pki = shared_pki()
    return {
        "proxy": pki.root.issue_client("edge-proxy", organization="Example Edge"),
        "user": pki.root.issue_client("carol", organization="Example Users"),
        "revoked": pki.root.issue_client("dave-revoked"),
        "bob": pki.client_cert("via_intermediate"),
        "expired": pki.client_cert("expired"),
        "unknown_ca": pki.client_cert("unknown_ca"),
        "server_auth_only": pki.client_cert("server_auth_only"),
        "self_signed": pki.client_cert("self_signed"),
    }


def der_b64(cert: x509.Certificate) -> bytes:
    """The certificate's DER, base64."""
    return base64.b64encode(cert.public_bytes(serialization.Encoding.DER))


def client_cert_header(issued: IssuedCertificate) -> tuple[bytes, bytes]:
    """RFC 9440 ``Client-Cert``: the leaf as a Structured Field Byte Sequence."""
    return b"Client-Cert", b":" + der_b64(issued.certificate) + b":"


def nginx_header(issued: IssuedCertificate) -> tuple[bytes, bytes]:
    """``X-SSL-Client-Cert`` as nginx's ``$ssl_client_escaped_cert`` writes it."""
    return b"X-SSL-Client-Cert", urllib.parse.quote(
        issued.certificate_pem().decode(), safe="").encode()


# === hostile input: shared by tests/e2e/test_hostile.py and fuzz/fuzz_targets.py =============

HOUR = datetime.timedelta(hours=1)


# --- product bugs test_hostile found, tolerated by its property tests until fixed ------------

@dataclass(frozen=True)
class Raised:
    """An exception, and the innermost certsrv frame it passed through."""

    error: BaseException
    function: str
    line: str  # that frame's source line


def raised(error: BaseException | Failure) -> Raised:
    """Where in certsrv ``error`` (or a logged Failure's exception) came from."""
    if isinstance(error, Failure):
        frames = [(name, path, line) for name, path, line, *_ in error.frames]
        value = error.value
        assert value is not None
    else:
        value = error
        frames = [(f.name, f.filename, f.lineno or 0)
                  for f in traceback.extract_tb(error.__traceback__)]
    for name, path, line in reversed(frames):
        if f"{os.sep}certsrv{os.sep}" in path:
            return Raised(value, name, linecache.getline(path, line).strip())
    return Raised(value, "", "")


# --- DER mutation, driven by hypothesis (test_hostile) or a random generator (fuzz) ----------

class Choices(Protocol):
    """Where a mutator gets its decisions: hypothesis draws, or ``random.Random``."""

    def integer(self, low: int, high: int) -> int:
        """An integer in [low, high]."""

    def blob(self, max_size: int) -> bytes:
        """Up to ``max_size`` bytes."""


@dataclass
class Node:
    """One DER TLV; ``children`` when its content parses as DER (constructed, or wrapping)."""

    tag: int
    content: bytes
    children: list[Node] | None = None
    bit_string: bool = False  # the children follow a BIT STRING's unused-bits byte


_MAX_DEPTH = 24


def der_parse(data: bytes, depth: int = 0) -> list[Node] | None:
    """Split ``data`` into TLVs (one-byte tags, minimal definite lengths), or None."""
    nodes: list[Node] = []
    pos = 0
    while pos < len(data):
        if pos + 2 > len(data) or data[pos] & 0x1F == 0x1F:
            return None
        tag, first, start = data[pos], data[pos + 1], pos + 2
        if first < 0x80:
            length = first
        else:
            count = first & 0x7F
            if not 1 <= count <= 4 or start + count > len(data) or data[start] == 0:
                return None
            length = int.from_bytes(data[start:start + count], "big")
            if length < 0x80:
                return None
            start += count
        end = start + length
        if end > len(data):
            return None
        node = Node(tag, data[start:end])
        if depth < _MAX_DEPTH and node.content:
            if tag & 0x20 or tag == 0x04:
                node.children = der_parse(node.content, depth + 1)
            elif tag == 0x03 and node.content[0] == 0 and len(node.content) > 2:
                node.children = der_parse(node.content[1:], depth + 1)
                node.bit_string = node.children is not None
        nodes.append(node)
        pos = end
    return nodes


def der_tlv(tag: int, content: bytes) -> bytes:
    """One DER TLV."""
    length = len(content)
    if length < 0x80:
        return bytes((tag, length)) + content
    size = (length.bit_length() + 7) // 8
    return bytes((tag, 0x80 | size)) + length.to_bytes(size, "big") + content


def der_encode(nodes: list[Node]) -> bytes:
    """The DER of ``nodes``, lengths recomputed."""
    out = []
    for node in nodes:
        content = node.content
        if node.children is not None:
            content = (b"\x00" if node.bit_string else b"") + der_encode(node.children)
        out.append(der_tlv(node.tag, content))
    return b"".join(out)


def der_flatten(nodes: list[Node], into: list[tuple[list[Node], Node]]) -> None:
    """Every node of the tree with the list holding it, depth first, into ``into``."""
    for node in nodes:
        into.append((nodes, node))
        if node.children is not None:
            der_flatten(node.children, into)


_TAGS = (0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x0A, 0x0C, 0x13, 0x16, 0x17, 0x18, 0x1E,
         0x30, 0x31, 0x80, 0x81, 0x82, 0xA0, 0xA1, 0xA2, 0xA3)
_VALUES = (b"", b"\x00", b"\x01", b"\x7f", b"\x80", b"\xff", b"\xff\x80", b"\x00\x80",
           b"\xff" * 9, b"\x00" * 33, b"\x05\x00", b"\x06\x00", b"\x30\x00", b"\x02\x01\x05")


def der_copy(node: Node) -> Node:
    """A deep copy of ``node``."""
    # Re-encoding and re-parsing gives a deep copy (the encoding always parses).
    parsed = der_parse(der_encode([node]))
    assert parsed is not None
    return parsed[0]


def mutate_der(data: bytes, choices: Choices, rounds: int = 1) -> bytes:
    """``data`` with ``rounds`` structural changes (values, tags, nodes) and fixed lengths.

    The simplest choices (what hypothesis shrinks towards) change one value deep in the
    tree; restructuring the outer layers comes later in the order.
    """
    for _ in range(rounds):
        tree = der_parse(data)
        if not tree:
            return mutate_bytes(data, choices, 1)
        flat: list[tuple[list[Node], Node]] = []
        der_flatten(tree, flat)
        siblings, node = flat[len(flat) - 1 - choices.integer(0, len(flat) - 1)]
        op = choices.integer(0, 8)
        if op == 0:
            content = bytearray(node.content or b"\x00")
            if node.children is not None:
                content = bytearray((b"\x00" if node.bit_string else b"")
                                    + der_encode(node.children))
            index = choices.integer(0, len(content) - 1)
            content[index] ^= 1 << choices.integer(0, 7)
            node.content, node.children = bytes(content), None
        elif op == 1:
            node.content, node.children = _VALUES[choices.integer(0, len(_VALUES) - 1)], None
        elif op == 2:
            node.content, node.children = choices.blob(48), None
        elif op == 3:
            node.tag = _TAGS[choices.integer(0, len(_TAGS) - 1)]
        elif op == 4:
            siblings.remove(node)
        elif op == 5:
            siblings.insert(siblings.index(node), der_copy(node))
        elif op == 6:
            other = der_copy(flat[choices.integer(0, len(flat) - 1)][1])
            node.tag, node.content = other.tag, other.content
            node.children, node.bit_string = other.children, other.bit_string
        elif op == 7:
            value = node.content
            if node.children is not None:
                value = (b"\x00" if node.bit_string else b"") + der_encode(node.children)
            node.content = (value * choices.integer(2, 64))[:65536]
            node.children = None
        else:
            index = siblings.index(node)
            other_index = choices.integer(0, len(siblings) - 1)
            siblings[index], siblings[other_index] = siblings[other_index], node
        data = der_encode(tree)
    return data


def mutate_bytes(data: bytes, choices: Choices, rounds: int = 1) -> bytes:
    """``data`` with ``rounds`` of bit flips, byte replacements, insertions, deletions, cuts."""
    buffer = bytearray(data)
    for _ in range(rounds):
        op = choices.integer(0, 4)
        if op == 4 or not buffer:
            buffer[choices.integer(0, len(buffer)):choices.integer(0, len(buffer))] = \
                choices.blob(16)
        elif op == 0:
            buffer[choices.integer(0, len(buffer) - 1)] ^= 1 << choices.integer(0, 7)
        elif op == 1:
            buffer[choices.integer(0, len(buffer) - 1)] = choices.integer(0, 255)
        elif op == 2:
            start = choices.integer(0, len(buffer) - 1)
            del buffer[start:start + choices.integer(1, 16)]
        else:
            del buffer[choices.integer(0, len(buffer)):]
    return bytes(buffer)


def mutate(data: bytes, choices: Choices) -> bytes:
    """One to three mutations, structural or byte-level."""
    rounds = choices.integer(1, 3)
    if choices.integer(0, 2):
        return mutate_der(data, choices, rounds)
    return mutate_bytes(data, choices, rounds)


# --- re-signing: mutated contents behind a valid signature -----------------------------------

def sign_like(key: PrivateKey, data: bytes, pss: bool = False) -> bytes:
    """A signature over ``data`` as certsrv.pki and the test responders make them."""
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key.sign(data)
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return key.sign(data, ec.ECDSA(hashes.SHA256(), deterministic_signing=True))
    assert isinstance(key, rsa.RSAPrivateKey)
    pad = padding.PSS(padding.MGF1(hashes.SHA256()), 32) if pss else padding.PKCS1v15()
    return key.sign(data, pad, hashes.SHA256())


def _resign_signed(signed: Node, key: PrivateKey, choices: Choices, pss: bool) -> None:
    """Mutate the first child (the to-be-signed part) of a SIGNED{} SEQUENCE; sign again."""
    children = signed.children
    assert children is not None and len(children) >= 3
    tbs = mutate_der(der_encode(children[:1]), choices, choices.integer(1, 3))
    signature = sign_like(key, tbs, pss)
    signed.content = (tbs + der_encode(children[1:2]) + der_tlv(0x03, b"\x00" + signature)
                      + der_encode(children[3:]))
    signed.children = None


def resign(der: bytes, key: PrivateKey, choices: Choices, pss: bool = False) -> bytes:
    """A certificate or CRL with mutated TBS contents and a signature that verifies."""
    tree = der_parse(der)
    assert tree is not None
    _resign_signed(tree[0], key, choices, pss)
    return der_encode(tree)


def resign_ocsp(der: bytes, key: PrivateKey, choices: Choices, pss: bool = False) -> bytes:
    """An OCSP response with mutated tbsResponseData and a signature that verifies."""
    tree = der_parse(der)
    assert tree is not None
    # OCSPResponse { status, [0] { SEQUENCE { OID, OCTET STRING { BasicOCSPResponse } } } }
    response_bytes = tree[0].children[1].children[0]  # type: ignore[index]
    basic = response_bytes.children[1].children[0]  # type: ignore[index]
    _resign_signed(basic, key, choices, pss)
    return der_encode(tree)


# --- valid inputs of every parser, to mutate ------------------------------------------------

def der_of(cert: x509.Certificate) -> bytes:
    """The certificate's DER."""
    return cert.public_bytes(serialization.Encoding.DER)


def pem_armour(label: str, der: bytes) -> bytes:
    """``der`` as PEM under ``label``."""
    body = base64.encodebytes(der)
    return f"-----BEGIN {label}-----\n".encode() + body + f"-----END {label}-----\n".encode()


@dataclass(frozen=True)
class OCSPCase:
    """A valid response about ``cert`` and what verifying it needs; ``key`` signed it."""

    der: bytes
    cert: x509.Certificate
    issuer: x509.Certificate
    nonce: bytes | None
    key: PrivateKey
    pss: bool = False


@dataclass(frozen=True)
class Fixtures:
    """Everything the parsers are fed: valid inputs to mutate and what checks them."""

    now: datetime.datetime
    ca: CertificateAuthority
    leaf: IssuedCertificate
    responder: IssuedCertificate
    ocsp_cases: tuple[OCSPCase, ...]
    ocsp_requests: tuple[bytes, ...]
    certificates: tuple[bytes, ...]
    keys: tuple[bytes, ...]
    crl: bytes

    def responder_resource(self) -> OCSPResource:
        """An OCSP responder for ``ca``'s certificates, on a clock at ``now``."""
        clock = Clock()
        clock.advance(self.now.timestamp())
        revoked: StatusRecord = (CertStatus.REVOKED, self.now - HOUR,
                                 x509.ReasonFlags.key_compromise)
        leaf_serial = self.leaf.serial_number
        return OCSPResource(self.ca.certificate, self.responder.certificate,
                            self.responder.private_key,
                            lambda serial: revoked if serial == leaf_serial else None, clock)


@functools.cache
def fixtures() -> Fixtures:
    """Made once per process: keys are cheap, not free."""
    now = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    cases: list[OCSPCase] = []
    ca = leaf = responder = None
    for key_type in (KeyType.ECDSA_P256, KeyType.RSA_2048, KeyType.ED25519):
        root = CertificateAuthority.create(f"OCSP Root {key_type.value}", key_type=key_type)
        client = root.issue_client("alice", key_type=KeyType.ECDSA_P256)
        delegate = root.issue_ocsp_responder(key_type=key_type)
        cert_id = cert_id_key(client.certificate, root.certificate)
        pss = key_type is KeyType.RSA_2048
        good = SingleStatus(cert_id, CertStatus.GOOD, now - HOUR, now + HOUR)
        revoked = SingleStatus(cert_id, CertStatus.REVOKED, now - HOUR, now + HOUR, now - 2 * HOUR,
                               x509.ReasonFlags.key_compromise)
        nonce = b"n" * 16
        cases.append(OCSPCase(
            build_response([good], root.certificate, root.private_key, produced_at=now,
                           nonce=nonce, rsa_pss=pss),
            client.certificate, root.certificate, nonce, root.private_key, pss))
        cases.append(OCSPCase(
            build_response([revoked], delegate.certificate, delegate.private_key,
                           produced_at=now, certificates=[delegate.certificate],
                           responder_id="name"),
            client.certificate, root.certificate, None, delegate.private_key))
        if ca is None:
            ca, leaf, responder = root, client, delegate
    assert ca is not None and leaf is not None and responder is not None
    sha256_request = (ocsp.OCSPRequestBuilder()
                      .add_certificate(leaf.certificate, ca.certificate, hashes.SHA256())
                      .build().public_bytes(serialization.Encoding.DER))
    requests = (build_request(leaf.certificate, ca.certificate, b"r" * 16),
                build_request(leaf.certificate, ca.certificate, None), sha256_request)
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    pkcs8 = serialization.PrivateFormat.PKCS8
    none = serialization.NoEncryption()
    keys = tuple(k.private_bytes(serialization.Encoding.DER, pkcs8, none)
                 for k in (leaf.private_key, rsa_key, ed25519.Ed25519PrivateKey.generate()))
    keys += (rsa_key.private_bytes(serialization.Encoding.DER,
                                   serialization.PrivateFormat.TraditionalOpenSSL, none),)
    crl = ca.crl([(leaf.serial_number, now - HOUR, x509.ReasonFlags.key_compromise),
                  (7, now - HOUR, None)])
    return Fixtures(now, ca, leaf, responder, tuple(cases), requests,
                    (der_of(ca.certificate), der_of(leaf.certificate),
                     der_of(responder.certificate)),
                    keys, crl.public_bytes(serialization.Encoding.DER))


# --- the contracts, shared with the fuzz targets ---------------------------------------------

def check_verify_response(case: OCSPCase, der: bytes) -> None:
    """verify_response returns a status or raises OCSPError; anything else propagates."""
    try:
        status = verify_response(der, case.cert, case.issuer, now=fixtures().now,
                                 nonce=case.nonce)
    except OCSPError:
        return
    assert isinstance(status, OCSPStatus)


def check_respond(resource: OCSPResource, der: bytes) -> None:
    """respond returns a parseable OCSP response; a parse failure propagates as ValueError."""
    answer = resource.respond(der)
    assert isinstance(answer, bytes)
    ocsp.load_der_ocsp_response(answer)


def check_load(path: str, data: bytes, load: Callable[[str], object]) -> None:
    """A loader succeeds or raises ConfigurationError on ``data`` written to ``path``."""
    with open(path, "wb") as f:
        f.write(data)
    try:
        load(path)
    except ConfigurationError:
        pass


def check_verify_crl(data: bytes) -> None:
    """verify_crl returns a VerifiedCRL or raises CRLError."""
    f = fixtures()
    try:
        verify_crl(data, f.ca.certificate, "http://127.0.0.1/ca.crl", f.now.timestamp(), 300.0)
    except CRLError:
        pass


# === OCSP: CAs at a fixed time, and a responder's status table ===========================

FIXED_NOW = datetime.datetime(2030, 6, 1, 12, 0, tzinfo=datetime.UTC)


@functools.cache
def fixed_ca(key_type: KeyType = KeyType.ECDSA_P256, name: str = "Test CA") -> CertificateAuthority:
    # Keys are the slow part (RSA); share CAs between tests, they are never mutated.
    return CertificateAuthority.create(name, key_type=key_type, now=FIXED_NOW)


@functools.cache
def fixed_client(key_type: KeyType = KeyType.ECDSA_P256, name: str = "client") -> IssuedCertificate:
    return fixed_ca(key_type).issue_client(name, now=FIXED_NOW)


def status_table(good: IssuedCertificate, revoked: IssuedCertificate,
                  when: datetime.datetime) -> dict[int, StatusRecord]:
    return {
        good.serial_number: (CertStatus.GOOD, None, None),
        revoked.serial_number: (CertStatus.REVOKED, when, x509.ReasonFlags.superseded),
    }


# === the development PKI on disk (certsrv.pki.store, certsrv.pki.cli) ===================

_OPENSSL = shutil.which("openssl")


class PKIStoreCase(SynchronousTestCase):
    """A development PKI on disk, openssl against it, and the certsrv-pki command in-process."""


    def make_pki(self, **kwargs: object) -> tuple[Path, PKIStore]:
        directory = Path(self.mktemp()).resolve()
        return directory, PKIStore.init(directory, **kwargs)

    def openssl(self, *args: str) -> subprocess.CompletedProcess[str]:
        if _OPENSSL is None:
            raise SkipTest("the openssl command is not installed")
        return subprocess.run([_OPENSSL, *args], capture_output=True, text=True, timeout=20)

    def query(self, directory: Path, cert: str) -> str:
        """Start a one-request ``openssl ocsp`` responder and ask it about ``cert``."""
        if _OPENSSL is None:
            raise SkipTest("the openssl command is not installed")
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        responder = subprocess.Popen(
            [_OPENSSL, "ocsp", "-index", str(directory / "index.txt"), "-port", str(port),
             "-rsigner", str(directory / "ocsp.pem"), "-rkey", str(directory / "ocsp.key"),
             "-CA", str(directory / "ca.pem"), "-nrequest", "1"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        self.addCleanup(self._stop, responder)
        assert responder.stdout is not None
        # The responder prints "ACCEPT [::]:PORT PID=..." once it listens.
        output = b""
        deadline = time.monotonic() + 10
        while b"ACCEPT" not in output:
            remaining = deadline - time.monotonic()
            ready, _, _ = select.select([responder.stdout], [], [], max(remaining, 0))
            chunk = os.read(responder.stdout.fileno(), 4096) if ready else b""
            if not chunk:
                self.fail(f"openssl ocsp did not start: {output!r}")
            output += chunk
        result = self.openssl("ocsp", "-issuer", str(directory / "ca.pem"),
                              "-cert", str(directory / cert), "-url", f"http://127.0.0.1:{port}",
                              "-CAfile", str(directory / "ca.pem"), "-resp_text")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("Response verify OK", result.stderr)
        return result.stdout

    def _stop(self, process: subprocess.Popen[bytes]) -> None:
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=10)

    def run_cli(self, *argv: str) -> tuple[int, str, str]:
        """Run ``certsrv-pki`` in this process; return its exit status, stdout and stderr."""
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = pki_main(list(argv))
        return code, out.getvalue(), err.getvalue()

    def assertVerifies(self, directory: Path, cert: str, purpose: str) -> None:
        result = self.openssl("verify", "-CAfile", str(directory / "ca.pem"), "-purpose",
                              purpose, str(directory / cert))
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        self.assertIn(": OK", result.stdout)
