# mypy: disallow-untyped-calls=False
"""
The client's own defences: the server's name checked by this client (against a real
``openssl s_server``), redirects, bounded bodies and parsing, text from the server made safe
to print, and the warning about a private key readable by others.
"""

from __future__ import annotations

import datetime
import inspect
import io
import ipaddress
import itertools
import json
import os
import random
import shutil
import socket
import sys
import zlib
from collections.abc import Callable, Iterable
from functools import cache
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from OpenSSL import SSL, crypto
from twisted.internet import defer
from twisted.internet import reactor as _reactor
from twisted.internet.address import IPv4Address
from twisted.internet.interfaces import (
    IHostnameResolver,
    IHostResolution,
    IReactorPluggableNameResolver,
    IReactorTCP,
    IReactorTime,
)
from twisted.internet.protocol import Factory, ProcessProtocol, Protocol
from twisted.internet.ssl import Certificate, CertificateOptions, trustRootFromCertificates
from twisted.internet.task import deferLater
from twisted.internet.utils import getProcessOutputAndValue
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase
from twisted.web.client import HTTPConnectionPool
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, GzipEncoderFactory, Request, Site
from zope.interface import directlyProvides, implementer

from certsrv.client import http as client_module
from certsrv.client.cli import _Output
from certsrv.client.http import (
    DEFAULT_TIMEOUT,
    RedirectRefused,
    ServerIdentityError,
    check_server_identity,
    explain,
    http_client,
    printable,
    raise_for_status,
)
from certsrv.pki import CertificateAuthority, IssuedCertificate
from tests._support import captured_events

reactor: Any = _reactor
_REPO = Path(__file__).resolve().parents[2]
_NOW = datetime.datetime.now(datetime.UTC)
PROPERTY = settings(max_examples=200, deadline=None, database=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
_SECRET_HEADERS = {b"authorization": b"Bearer s3cret-token", b"x-api-key": b"k3y-value",
                   b"cookie": b"session=c00kie"}


# -- Certificates made at test time --------------------------------------------------------


def _server_certificate(ca: CertificateAuthority, common_name: str,
                        names: list[x509.GeneralName] | None,
                        not_after: datetime.datetime | None = None) -> IssuedCertificate:
    """A serverAuth certificate built directly (certsrv-pki refuses the odd names used here)."""
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_NOW - datetime.timedelta(days=2))
        .not_valid_after(not_after or _NOW + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
    )
    if names is not None:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), False)
    return IssuedCertificate(builder.sign(ca.private_key, hashes.SHA256()), key)


def _dns(*names: str) -> list[x509.GeneralName]:
    return [x509.DNSName(n) for n in names]


def _ip(*addresses: str) -> list[x509.GeneralName]:
    return [x509.IPAddress(ipaddress.ip_address(a)) for a in addresses]


class _PKI:
    """A root, a client (alice), and server certificates good and bad."""

    def __init__(self) -> None:
        self.root = CertificateAuthority.create("client security test root")
        self.other = CertificateAuthority.create("some other root")
        self.alice = self.root.issue_client("alice")
        self.good = _server_certificate(self.root, "127.0.0.1", _ip("127.0.0.1"))
        self.expired = _server_certificate(self.root, "127.0.0.1", _ip("127.0.0.1"),
                                           not_after=_NOW - datetime.timedelta(days=1))
        # The four certificates of the review: Twisted's check let all of them through.
        self.offending = {
            "cn_only": _server_certificate(self.root, "127.0.0.1", None),
            "double_wildcard": _server_certificate(self.root, "evil", _dns("*.*.evil.example")),
            "bare_wildcard": _server_certificate(self.root, "evil", _dns("*")),
            "dns_ip": _server_certificate(self.root, "127.0.0.1", _dns("127.0.0.1")),
        }
        self.cn_only_name = _server_certificate(self.root, "api.example", None)
        self.wildcard = _server_certificate(self.root, "good", _dns("*.good.example"))


@cache
def _pki() -> _PKI:
    return _PKI()


def _files(test: TestCase, **named: IssuedCertificate) -> Path:
    """Write ca.pem and ``NAME.pem``/``NAME.key`` for each certificate; return the directory."""
    directory = Path(test.mktemp())
    directory.mkdir()
    (directory / "ca.pem").write_bytes(_pki().root.certificate_pem())
    (directory / "other-ca.pem").write_bytes(_pki().other.certificate_pem())
    for name, issued in named.items():
        issued.write(directory / f"{name}.pem", directory / f"{name}.key")
    return directory


# -- An openssl s_server that requires a client certificate ------------------------------------


class _Recorder(ProcessProtocol):
    """Keep everything a child process writes; know when it ended."""

    def __init__(self) -> None:
        self.out = b""
        self.err = b""
        self.ended = False
        self.done: defer.Deferred[None] = defer.Deferred()

    def outReceived(self, data: bytes) -> None:
        self.out += data

    def errReceived(self, data: bytes) -> None:
        self.err += data

    def processEnded(self, reason: Failure) -> None:
        self.ended = True
        self.done.callback(None)


async def _until(condition: Callable[[], bool], what: str, tries: int = 400) -> None:
    """Poll ``condition`` every 25 ms; fail after ``tries`` polls."""
    for _ in range(tries):
        if condition():
            return
        await deferLater(reactor, 0.025, lambda: None)
    raise AssertionError(f"gave up waiting for {what}")


def _free_ports() -> Iterable[int]:
    """Ports below the ephemeral range that are free right now, in random order."""
    candidates = list(range(20000, 32000))
    random.shuffle(candidates)
    for port in candidates:
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        yield port


async def _stop(transport: Any, recorder: _Recorder) -> None:
    """Stop a process this test started, by its own handle, and wait for it to end."""
    if not recorder.ended:
        transport.signalProcess("TERM")
    await recorder.done


class SServer:
    """``openssl s_server`` on 127.0.0.1 presenting ``identity``; it requires a client cert."""

    def __init__(self, test: TestCase, identity: IssuedCertificate, *args: str) -> None:
        self.test = test
        self.directory = _files(test, server=identity)
        self.args = args
        self.recorder = _Recorder()
        self.port = 0
        self.transport: Any = None

    async def start(self) -> SServer:
        """Start on a free port (trying another if the port was taken meanwhile)."""
        openssl = shutil.which("openssl")
        if openssl is None:
            raise SkipTest("openssl is not installed")
        for port in itertools.islice(_free_ports(), 5):
            recorder = _Recorder()
            # Not -www: s_server prints what it receives, and sends what its stdin gets.
            transport = reactor.spawnProcess(recorder, openssl, [
                openssl, "s_server", "-accept", f"127.0.0.1:{port}", "-cert", "server.pem",
                "-key", "server.key", "-CAfile", "ca.pem", "-Verify", "3",
                "-verify_return_error", "-ign_eof", *self.args,
            ], env={"PATH": os.environ.get("PATH", "")}, path=str(self.directory))
            self.test.addCleanup(_stop, transport, recorder)

            def started(r: _Recorder = recorder) -> bool:
                return b"ACCEPT" in r.out or r.ended

            await _until(started, "s_server to start")
            if not recorder.ended:
                self.recorder, self.transport, self.port = recorder, transport, port
                return self
        raise AssertionError(f"s_server did not start: {recorder.err!r}")

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}/"

    def url_for(self, host: str) -> str:
        return f"https://{host}:{self.port}/"

    async def connection_over(self) -> None:
        """Wait until s_server has finished with the (refused) connection."""
        await _until(lambda: b"ERROR" in self.recorder.err or self.recorder.ended,
                     "s_server to see the connection end")

    def saw_client_certificate(self) -> bool:
        """Whether the client's certificate reached s_server."""
        seen = self.recorder.out + self.recorder.err
        return b"CN = alice" in seen or b"Client certificate" in seen

    def saw_request(self) -> bool:
        """Whether any HTTP request bytes reached s_server."""
        return b"GET " in self.recorder.out or b"HTTP/1.1" in self.recorder.out

    def answer(self, response: bytes) -> None:
        """Send ``response`` to the connected client (s_server relays its stdin)."""
        self.transport.write(response)


@implementer(IHostResolution)
class _Resolution:
    def __init__(self, name: str) -> None:
        self.name = name

    def cancel(self) -> None:
        """Nothing to cancel."""


@implementer(IHostnameResolver)
class _Loopback:
    """Resolve every name to 127.0.0.1, so certificates can be tried under any DNS name."""

    def resolveHostName(self, resolutionReceiver: Any, hostName: str, portNumber: int = 0,
                        addressTypes: Any = None, transportSemantics: str = "TCP") -> Any:
        resolution = _Resolution(hostName)
        resolutionReceiver.resolutionBegan(resolution)
        resolutionReceiver.addressResolved(IPv4Address("TCP", "127.0.0.1", portNumber))
        resolutionReceiver.resolutionComplete()
        return resolution


class _LoopbackReactor:
    """The global reactor, but every host name resolves to 127.0.0.1."""

    def __init__(self) -> None:
        self.nameResolver = _Loopback()
        directlyProvides(self, IReactorTCP, IReactorTime, IReactorPluggableNameResolver)

    def __getattr__(self, name: str) -> Any:
        return getattr(reactor, name)


def _client(test: TestCase, identity: IssuedCertificate | None = None, *,
            via: Any = None, **kwargs: Any) -> Any:
    """certsrv's http_client presenting alice, trusting the test root; pool closed at cleanup."""
    pool = HTTPConnectionPool(reactor)

    async def close() -> None:
        # A connection whose redirect was refused returns to the pool a turn later.
        await deferLater(reactor, 0, lambda: None)
        await pool.closeCachedConnections()

    test.addCleanup(lambda: defer.Deferred.fromCoroutine(close()))
    identity = identity or _pki().alice
    kwargs.setdefault("ca", _pki().root.certificate_pem())
    return http_client(via or reactor, cert=identity.chain_pem(),
                       key=identity.private_key_pem(), pool=pool, **kwargs)


async def _refusal(request: defer.Deferred[Any], **kwargs: Any) -> Any:
    """Expect ``request`` to fail; return the failure explained."""
    try:
        response = await request
    except Exception as failure:
        return explain(failure, **kwargs)
    raise AssertionError(f"expected a refusal, got HTTP {response.code}")


def _cli_env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(_REPO), *filter(None, [os.environ.get("PYTHONPATH")])]))


async def _run_cli(directory: Path, *args: str) -> tuple[str, str, int]:
    """Run certsrv-client in ``directory``; never a traceback."""
    out, err, code = await getProcessOutputAndValue(
        sys.executable, ["-m", "certsrv.client.cli", *args], env=_cli_env(),
        path=str(directory))
    assert b"Traceback" not in err, err
    return out.decode("utf-8", "replace"), err.decode("utf-8", "replace"), code


_ALICE = ("--cert", "alice.pem", "--key", "alice.key")


class ServerIdentityOpenSSLTests(TestCase):
    """Finding 1: certificates Twisted's check let through are refused before anything is sent."""

    async def assert_refused_before_sending(self, name: str, host: str = "127.0.0.1",
                                            *s_server_args: str) -> Any:
        """http_client refuses ``name``'s certificate at ``host``; s_server got nothing."""
        server = await SServer(self, _pki().offending[name], *s_server_args).start()
        via = None if host == "127.0.0.1" else _LoopbackReactor()
        explanation = await _refusal(_client(self, via=via).get(server.url_for(host)))
        await server.connection_over()
        assert explanation.code == "server_name_mismatch", explanation
        assert explanation.sentence.startswith(
            f"this client rejected the server: its certificate is not valid for {host}"), (
            explanation)
        assert not server.saw_client_certificate(), server.recorder.err
        assert not server.saw_request(), server.recorder.out
        return explanation

    async def test_cn_only_by_ip(self) -> None:
        """A certificate without subjectAltName (CN=127.0.0.1) is refused at 127.0.0.1."""
        await self.assert_refused_before_sending("cn_only")

    async def test_cn_only_by_ip_tls12(self) -> None:
        """The same over TLS 1.2, where the client's certificate would follow the server's."""
        await self.assert_refused_before_sending("cn_only", "127.0.0.1", "-tls1_2")

    async def test_double_wildcard_by_ip(self) -> None:
        """A ``*.*.evil.example`` certificate is refused at 127.0.0.1."""
        await self.assert_refused_before_sending("double_wildcard")

    async def test_bare_wildcard_by_ip(self) -> None:
        """A ``*`` certificate is refused at 127.0.0.1."""
        await self.assert_refused_before_sending("bare_wildcard")

    async def test_dns_san_spelling_the_ip(self) -> None:
        """A DNS entry ``127.0.0.1`` does not match the IP address 127.0.0.1."""
        explanation = await self.assert_refused_before_sending("dns_ip")
        assert explanation.sentence == (
            "this client rejected the server: its certificate is not valid for 127.0.0.1: it "
            "has 127.0.0.1 as a DNS name, which does not match an IP address (that needs an IP "
            "entry) (server name mismatch)"), explanation

    async def test_double_wildcard_by_name(self) -> None:
        """``*.*.evil.example`` does not match a.b.evil.example (one wildcard, leftmost only)."""
        await self.assert_refused_before_sending("double_wildcard", "a.b.evil.example")

    async def test_bare_wildcard_by_name(self) -> None:
        """``*`` matches no name at all."""
        await self.assert_refused_before_sending("bare_wildcard", "anything.example")

    async def test_cn_only_by_name(self) -> None:
        """The subject's CN is not a name: CN=api.example does not make it valid for api.example."""
        server = await SServer(self, _pki().cn_only_name).start()
        request = _client(self, via=_LoopbackReactor()).get(server.url_for("api.example"))
        explanation = await _refusal(request)
        await server.connection_over()
        assert explanation.code == "server_name_mismatch", explanation
        assert "no subjectAltName" in explanation.sentence, explanation
        assert not server.saw_client_certificate() and not server.saw_request()

    async def exchange_with(self, server: SServer, url: str, via: Any = None) -> None:
        """A request that s_server answers with 200; the certificate and request arrived."""
        request = _client(self, via=via).get(url)
        await _until(server.saw_request, "the request to reach s_server")
        server.answer(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n")
        response = await request
        assert (response.code, await response.content()) == (200, b"ok\n")
        assert server.saw_client_certificate(), server.recorder.err

    async def test_control_ip(self) -> None:
        """The harness sees a certificate and a request when the server's name is right."""
        server = await SServer(self, _pki().good).start()
        await self.exchange_with(server, server.url)

    async def test_control_wildcard(self) -> None:
        """A proper wildcard (``*.good.example``) still matches api.good.example."""
        server = await SServer(self, _pki().wildcard).start()
        await self.exchange_with(server, server.url_for("api.good.example"), _LoopbackReactor())


class ServerIdentityCommandLineTests(TestCase):
    """Finding 1 through certsrv-client: exit 2, one sentence, nothing sent."""

    async def assert_cli_refuses(self, name: str) -> None:
        server = await SServer(self, _pki().offending[name]).start()
        directory = _files(self, alice=_pki().alice)
        out, err, code = await _run_cli(directory, server.url, *_ALICE, "--ca", "ca.pem",
                                        "--timeout", "20")
        await server.connection_over()
        assert (out, code) == ("", 2), (out, err, code)
        assert err.startswith("certsrv-client: this client rejected the server: its "
                              "certificate is not valid for 127.0.0.1"), err
        assert err.count("\n") == 1, err
        assert not server.saw_client_certificate(), server.recorder.err
        assert not server.saw_request(), server.recorder.out

    async def test_cn_only(self) -> None:
        """No subjectAltName."""
        await self.assert_cli_refuses("cn_only")

    async def test_double_wildcard(self) -> None:
        """``*.*.evil.example``."""
        await self.assert_cli_refuses("double_wildcard")

    async def test_bare_wildcard(self) -> None:
        """``*``."""
        await self.assert_cli_refuses("bare_wildcard")

    async def test_dns_san_spelling_the_ip(self) -> None:
        """DNS ``127.0.0.1`` at https://127.0.0.1."""
        await self.assert_cli_refuses("dns_ip")


class CheckServerIdentityTests(SynchronousTestCase):
    """check_server_identity, the rules themselves."""

    def check(self, names: list[x509.GeneralName] | None, host: str) -> bool:
        certificate = _server_certificate(_pki().root, "x", names).certificate
        try:
            check_server_identity(certificate, host)
        except ServerIdentityError:
            return False
        return True

    def test_matches(self) -> None:
        """Exact names (any case, trailing dot), IP entries, one leftmost wildcard label."""
        assert self.check(_dns("api.example"), "api.example")
        assert self.check(_dns("API.Example"), "api.EXAMPLE.")
        assert self.check(_dns("*.good.example"), "x.good.example")
        assert self.check(_ip("127.0.0.1"), "127.0.0.1")
        assert self.check(_ip("::1"), "::1")
        assert self.check(_ip("::1"), "[::1]")
        assert self.check(_dns("other.example", "api.example"), "api.example")

    def test_refusals(self) -> None:
        """Everything the review found, and the neighbouring cases."""
        refused = [
            (None, "127.0.0.1"), (None, "x"),
            (_dns("127.0.0.1"), "127.0.0.1"), (_dns("::1"), "::1"),
            (_dns("*"), "x"), (_dns("*"), "a.b"),
            (_dns("*.*.evil.example"), "a.b.evil.example"),
            (_dns("*.example"), "a.example"),  # a wildcard needs two fixed labels
            (_dns("*.good.example"), "good.example"),
            (_dns("*.good.example"), "a.b.good.example"),
            (_dns("f*.good.example"), "foo.good.example"),
            (_dns("api.*.example"), "api.x.example"),
            (_dns("*.good.example"), "127.0.0.1"),
            (_ip("127.0.0.1"), "localhost"),
            (_ip("127.0.0.2"), "127.0.0.1"),
            (_ip("::ffff:127.0.0.1"), "127.0.0.1"),
            (_dns("127.1"), "127.1"),  # read as an IPv4 address by URL parsers
            (_dns("api.example"), "api.example.evil"),
            (_dns("api.example\x00.evil"), "api.example"),
            (_dns("api example"), "api example"),
        ]
        for names, host in refused:
            assert not self.check(names, host), (names, host)

    def test_mismatch_message_is_safe(self) -> None:
        """Names from the certificate are shown without control characters."""
        certificate = _server_certificate(_pki().root, "x", _dns("a\x1b]0;owned\x07.example")
                                          ).certificate
        try:
            check_server_identity(certificate, "api.example")
        except ServerIdentityError as problem:
            assert "\x1b" not in str(explain(problem)) and "\x07" not in str(explain(problem))
        else:
            raise AssertionError("expected a refusal")

    @PROPERTY
    @given(st.lists(st.text(alphabet=st.characters(codec="ascii"), min_size=1, max_size=30),
                    min_size=1, max_size=4),
           st.ip_addresses())
    def test_ip_never_matches_dns_entries(self, names: list[str], address: Any) -> None:
        """Whatever DNS entries a certificate holds, an IP host matches none of them."""
        assert not self.check(_dns(*names), str(address))

    @PROPERTY
    @given(st.from_regex(r"[a-z0-9]{1,10}(\.[a-z0-9]{1,10}){0,3}\.[a-z]{2,6}", fullmatch=True),
           st.from_regex(r"[a-z*]{0,3}\*[a-z*]{0,3}", fullmatch=True))
    def test_wildcards_other_than_a_whole_label_never_match(self, host: str, label: str
                                                             ) -> None:
        """``*`` matches only as the whole leftmost label: ``f*``, ``**``, ``*x`` never do."""
        first, _, rest = host.partition(".")
        pattern = f"{label}.{rest}"
        if label == "*" and rest.count(".") >= 1:
            assert self.check(_dns(pattern), host)
        else:
            assert not self.check(_dns(pattern), host)

    def test_failure_in_the_check_fails_closed(self) -> None:
        """An exception inside the verify callback is a refusal, not a pass."""
        failed: list[Failure] = []

        class Protocol:
            def failVerification(self, reason: Failure) -> None:
                failed.append(reason)

        class Broken:
            def to_cryptography(self) -> Any:
                raise ValueError("unparseable")

        callback = client_module._verify_callback(Protocol(), "api.example")
        assert callback(None, Broken(), 0, 0, 1) is False  # type: ignore[arg-type]
        assert isinstance(failed[0].value, ServerIdentityError), failed
        assert "could not be checked" in str(failed[0].value)
        again = client_module._verify_callback(Protocol(), "api.example")
        assert again(None, Broken(), 20, 1, 0) is False  # type: ignore[arg-type]


# -- In-test HTTPS servers (Twisted) -----------------------------------------------------------


class _Seen:
    """What the servers of one test received."""

    def __init__(self) -> None:
        self.requests: list[tuple[bytes, bytes, dict[bytes, list[bytes]], bool]] = []


def _record(seen: _Seen, request: Request) -> None:
    certificate = None
    transport = request.channel.transport if request.channel else None
    getter = getattr(transport, "getPeerCertificate", None)
    if getter is not None:
        certificate = getter()
    headers = {k.lower(): list(v) for k, v in request.requestHeaders.getAllRawHeaders()}
    seen.requests.append((request.method, request.uri, headers, certificate is not None))


class _Scripted(Resource):
    """Answer each path with a function of the request."""

    isLeaf = True

    def __init__(self, seen: _Seen, routes: dict[bytes, Callable[[Request], bytes | int]]
                 ) -> None:
        super().__init__()
        self.seen = seen
        self.routes = routes

    def render(self, request: Request) -> bytes | int:
        _record(self.seen, request)
        route = self.routes.get(request.path)
        if route is None:
            request.setResponseCode(404)
            return b"no such route\n"
        return route(request)


def _redirect(location: bytes, code: int = 302) -> Callable[[Request], bytes]:
    def answer(request: Request) -> bytes:
        request.setResponseCode(code)
        request.setHeader(b"location", location)
        return b"moved\n"
    return answer


def _text(body: bytes, code: int = 200, content_type: bytes = b"text/plain",
          phrase: bytes | None = None) -> Callable[[Request], bytes]:
    def answer(request: Request) -> bytes:
        request.setResponseCode(code, phrase)
        request.setHeader(b"content-type", content_type)
        return body
    return answer


def _serve(test: TestCase, resource: Resource, identity: IssuedCertificate | None = None,
           require_client: bool = True) -> int:
    """Serve ``resource`` over TLS on 127.0.0.1; with or without requiring a client cert."""
    identity = identity or _pki().good
    options = CertificateOptions(
        privateKey=identity.private_key,  # type: ignore[arg-type]
        certificate=identity.certificate,  # type: ignore[arg-type]
        trustRoot=trustRootFromCertificates(
            [Certificate(crypto.X509.from_cryptography(_pki().root.certificate))]),
    )
    if not require_client:
        options.getContext().set_verify(SSL.VERIFY_PEER, lambda *args: True)
    site = Site(resource)
    site.noisy = False
    factory = TLSMemoryBIOFactory(options, False, site)  # type: ignore[arg-type]
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")
    test.addCleanup(port.stopListening)
    return int(port.getHost().port)


class _TrapFactory(Factory):
    """A plain TCP listener that records that anything connected, and what it sent."""

    def __init__(self) -> None:
        self.connections = 0
        self.received = b""

    def buildProtocol(self, addr: Any) -> Protocol:
        factory = self

        class Trap(Protocol):
            def connectionMade(self) -> None:
                factory.connections += 1

            def dataReceived(self, data: bytes) -> None:
                factory.received += data

        return Trap()


def _trap(test: TestCase) -> tuple[int, _TrapFactory]:
    factory = _TrapFactory()
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")
    test.addCleanup(port.stopListening)
    return int(port.getHost().port), factory


class RedirectTests(TestCase):
    """Finding 5: no redirects by default; when asked, never to http, nothing secret elsewhere."""

    def setUp(self) -> None:
        self.seen = _Seen()
        self.trap_port, self.trap = _trap(self)
        self.plain = f"http://127.0.0.1:{self.trap_port}/stolen".encode()

    def serve(self, routes: dict[bytes, Callable[[Request], bytes | int]], **kwargs: Any) -> str:
        return f"https://127.0.0.1:{_serve(self, _Scripted(self.seen, routes), **kwargs)}"

    def assert_trap_empty(self) -> None:
        assert (self.trap.connections, self.trap.received) == (0, b""), self.trap.received

    async def test_not_followed_by_default(self) -> None:
        """The 302 itself is the answer; nothing goes to the plain-HTTP address."""
        base = self.serve({b"/": _redirect(self.plain)})
        response = await _client(self).get(base + "/", headers=_SECRET_HEADERS)
        assert response.code == 302
        assert response.headers.getRawHeaders(b"location") == [self.plain]
        self.assert_trap_empty()

    async def test_downgrade_refused_when_following(self) -> None:
        """With follow_redirects, a redirect to http:// is refused; nothing reaches it."""
        base = self.serve({b"/": _redirect(self.plain)})
        client = _client(self, follow_redirects=True)
        explanation = await _refusal(client.get(base + "/", headers=_SECRET_HEADERS))
        assert explanation.code == "redirect_refused", explanation
        assert "plain HTTP" in explanation.sentence, explanation
        self.assert_trap_empty()

    async def test_downgrade_refused_per_request(self) -> None:
        """``allow_redirects=True`` on one request obeys the same rules."""
        base = self.serve({b"/": _redirect(self.plain, 307)})
        try:
            await _client(self).get(base + "/", allow_redirects=True)
        except RedirectRefused as refused:
            assert refused.target.startswith("http://127.0.0.1:"), refused
        else:
            raise AssertionError("expected RedirectRefused")
        self.assert_trap_empty()

    async def test_other_origin_gets_nothing_secret(self) -> None:
        """To another origin: no Authorization, API key, cookies, or client certificate."""
        other = self.serve({b"/landing": _text(b"landed\n")}, require_client=False)
        base = self.serve({b"/": _redirect(f"{other}/landing".encode())})
        client = _client(self, follow_redirects=True)
        headers = {**_SECRET_HEADERS, b"accept": b"text/plain"}
        response = await client.get(base + "/", headers=headers, cookies={"jar": "crumb"},
                                    auth=("alice", "pa55word"))
        assert (response.code, await response.content()) == (200, b"landed\n")
        (_, _, first, first_cert), (_, uri, second, second_cert) = self.seen.requests
        assert first[b"x-api-key"] == [b"k3y-value"] and first_cert
        assert uri == b"/landing"
        for name in (b"authorization", b"x-api-key", b"cookie"):
            assert name not in second, (name, second)
        assert second[b"accept"] == [b"text/plain"]
        assert not second_cert, "the client certificate went to another origin"
        assert response.previousResponse.code == 302

    async def test_same_origin_keeps_headers(self) -> None:
        """A redirect within the origin is followed with the caller's headers."""
        base = self.serve({b"/": _redirect(b"/next", 308), b"/next": _text(b"next\n")})
        response = await _client(self, follow_redirects=True).get(
            base + "/", headers={b"x-api-key": b"k3y-value"})
        assert (response.code, await response.content()) == (200, b"next\n")
        assert [r[2][b"x-api-key"] for r in self.seen.requests] == [[b"k3y-value"]] * 2

    async def test_no_credentials_back_after_leaving(self) -> None:
        """A chain that leaves the origin and returns does not regain the credentials."""
        base_port = _serve(self, _Scripted(self.seen, {
            b"/": lambda r: _redirect(self.bounce)(r),
            b"/back": _text(b"back\n")}), require_client=False)
        base = f"https://127.0.0.1:{base_port}"
        bouncer = self.serve({b"/bounce": _redirect(f"{base}/back".encode())},
                             require_client=False)
        self.bounce = f"{bouncer}/bounce".encode()
        response = await _client(self, follow_redirects=True).get(
            base + "/", headers={b"x-api-key": b"k3y-value"})
        assert response.code == 200
        assert [(r[1], b"x-api-key" in r[2], r[3]) for r in self.seen.requests] == [
            (b"/", True, True), (b"/bounce", False, False), (b"/back", False, False)]

    async def test_unusable_locations(self) -> None:
        """Other schemes, user names, hostless and undecodable Locations are all refused."""
        cases = {
            b"/ftp": (b"ftp://127.0.0.1/file", "its scheme is ftp, not https"),
            b"/js": (b"javascript:alert(1)", "its scheme is javascript, not https"),
            b"/user": (b"https://alice:pw@127.0.0.1:1/", "it carries a user name or password"),
            b"/hostless": (b"https://:1/x", "it names no host"),
            b"/badhost": (b"https://ex%00ample/", "its host is not a valid host name"),
            b"/ipv6": (b"https://[::1/", "its Location is not a valid URL"),
            b"/bytes": (b"https://\xff.example/", "its Location is not a valid URL"),
        }
        base = self.serve({path: _redirect(location) for path, (location, _) in cases.items()})
        client = _client(self, follow_redirects=True)
        for path, (_, problem) in cases.items():
            explanation = await _refusal(client.get(base + path.decode()))
            assert explanation.code == "redirect_refused", (path, explanation)
            assert explanation.sentence.endswith(problem), (path, explanation)
        assert len(self.seen.requests) == len(cases)

    async def test_too_many(self) -> None:
        """A loop ends at max_redirects."""
        base = self.serve({b"/loop": _redirect(b"/loop")})
        client = _client(self, follow_redirects=True, max_redirects=3)
        explanation = await _refusal(client.get(base + "/loop"))
        assert explanation.code == "redirect_refused"
        assert "more than 3 redirects" in explanation.sentence
        assert len(self.seen.requests) == 4

    async def test_body_not_resent(self) -> None:
        """A 307 to a POST with a body is refused rather than replayed or dropped."""
        base = self.serve({b"/": _redirect(b"/elsewhere", 307)})
        client = _client(self, follow_redirects=True)
        explanation = await _refusal(client.post(base + "/", data=b"payload"))
        assert explanation.code == "redirect_refused"
        assert "body" in explanation.sentence
        assert [r[1] for r in self.seen.requests] == [b"/"]

    async def test_see_other_becomes_get(self) -> None:
        """A 303 after a POST is followed with GET and no body."""
        base = self.serve({b"/": _redirect(b"/result", 303), b"/result": _text(b"done\n")})
        response = await _client(self, follow_redirects=True).post(base + "/", data=b"payload")
        assert (response.code, await response.content()) == (200, b"done\n")
        assert [r[0] for r in self.seen.requests] == [b"POST", b"GET"]

    async def test_cli_does_not_follow(self) -> None:
        """certsrv-client prints the 302 and exits 1; the http:// address gets nothing."""
        base = self.serve({b"/": _redirect(self.plain)})
        directory = _files(self, alice=_pki().alice)
        out, err, code = await _run_cli(directory, base + "/", *_ALICE, "--ca", "ca.pem",
                                        "--header", "X-API-Key: k3y-value")
        assert code == 1 and out.startswith("HTTP/1.1 302 Found\n"), (out, err)
        self.assert_trap_empty()


# -- Finding 7: bounded memory and CPU, safe text ----------------------------------------------


def _bomb(size: int) -> bytes:
    """A gzip body that inflates to ``size`` zero bytes."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    chunk = bytes(1024 * 1024)
    parts = [compressor.compress(chunk) for _ in range(size // len(chunk))]
    return b"".join(parts) + compressor.flush()


class BoundedTests(TestCase):
    """No gzip asked for or inflated; body, reason and timeout bounded."""

    def setUp(self) -> None:
        self.seen = _Seen()

    def serve(self, routes: dict[bytes, Callable[[Request], bytes | int]]) -> str:
        return f"https://127.0.0.1:{_serve(self, _Scripted(self.seen, routes))}"

    async def test_gzip_bomb_not_inflated(self) -> None:
        """No Accept-Encoding is sent; an unasked-for gzip body comes back as sent, not inflated."""
        bomb = _bomb(256 * 1024 * 1024)

        def answer(request: Request) -> bytes:
            request.setHeader(b"content-encoding", b"gzip")
            request.setHeader(b"content-type", b"text/plain")
            return bomb

        base = self.serve({b"/": answer})
        response = await _client(self).get(base + "/")
        body = await response.content()
        assert body == bomb and len(body) < 1024 * 1024, len(body)
        assert response.headers.getRawHeaders(b"content-encoding") == [b"gzip"]
        assert b"accept-encoding" not in self.seen.requests[0][2]

    async def test_body_limit(self) -> None:
        """A body beyond max_response_size fails with ResponseTooLarge, explained."""
        base = self.serve({b"/": _text(b"x" * (3 * 1024 * 1024))})
        client = _client(self, max_response_size=1024 * 1024)
        explanation = await _refusal(client.get(base + "/"))
        assert explanation.code == "response_too_large", explanation
        assert "1048576 bytes" in explanation.sentence
        small = await _client(self, max_response_size=1024 * 1024).get(base + "/missing")
        assert small.code == 404

    async def test_error_body_read_bounded(self) -> None:
        """raise_for_status keeps at most 1 MiB of an error body, even unbuffered."""
        base = self.serve({b"/": _text(b"e" * (3 * 1024 * 1024), 500)})
        response = await _client(self).get(base + "/", unbuffered=True)
        try:
            await raise_for_status(response)
        except client_module.HTTPStatusError as status:
            assert len(status.body) == 1024 * 1024, len(status.body)
        else:
            raise AssertionError("expected HTTPStatusError")

    async def test_default_timeout_covers_the_body(self) -> None:
        """The library has a default timeout, and it covers a body that never ends."""
        assert inspect.signature(http_client).parameters["timeout"].default == DEFAULT_TIMEOUT
        assert DEFAULT_TIMEOUT == 30.0

        stalled: list[Request] = []

        def stall(request: Request) -> int:
            stalled.append(request)
            request.setHeader(b"content-length", b"100")
            request.write(b"partial")
            return NOT_DONE_YET

        def abort() -> None:
            for request in stalled:
                transport: Any = request.channel.transport if request.channel else None
                if transport is not None:
                    transport.abortConnection()

        base = self.serve({b"/": stall})
        self.addCleanup(abort)
        explanation = await _refusal(_client(self, timeout=0.5).get(base + "/"))
        assert explanation.code == "timeout", explanation

    async def test_script_flood_cli(self) -> None:
        """224 KB of ``<script`` in a 403 page: the CLI answers with a short, bounded reason."""
        flood = b"<p>denied by policy</p>" + b"<script" * (224 * 1024 // 7)
        base = self.serve({b"/": _text(flood, 403, b"text/html")})
        directory = _files(self, alice=_pki().alice)
        out, err, code = await _run_cli(directory, base + "/", *_ALICE, "--ca", "ca.pem",
                                        "--timeout", "60")
        assert code == 1, (err, code)
        assert err == ("certsrv-client: the server refused the request (403 Forbidden): "
                       "denied by policy\n"), err

    async def test_escape_sequences_from_server(self) -> None:
        """Escape sequences in the reason phrase and body never reach stderr or the JSON."""
        nasty = "\x1b]0;owned\x07\x1b[2J\u009b31mdenied\x1b[0m\rfake line\x08\x08".encode()
        base = self.serve({b"/": _text(nasty, 403, b"text/plain; charset=utf-8",
                                       phrase=b"Forbidden\x1b[5m")})
        directory = _files(self, alice=_pki().alice)
        out, err, code = await _run_cli(directory, base + "/", *_ALICE, "--ca", "ca.pem")
        assert code == 1
        assert err == ("certsrv-client: the server refused the request (403 Forbidden): "
                       "denied fake line\n"), repr(err)
        assert out.startswith("HTTP/1.1 403 Forbidden\n"), repr(out)
        json_out, json_err, _ = await _run_cli(directory, base + "/", *_ALICE, "--ca",
                                               "ca.pem", "--json")
        assert not any(ch in json_out.rstrip("\n") for ch in "\x1b\x07\x08\r\x9b\n"), (
            repr(json_out))
        assert json.loads(json_out)["reason"] == "Forbidden\x1b[5m"
        assert "\x1b" not in json_err

    async def test_json_has_no_invented_content_encoding(self) -> None:
        """``--json`` shows only headers the server sent: no empty content-encoding (issue 12)."""
        from twisted.web.resource import EncodingResourceWrapper

        routes: dict[bytes, Callable[[Request], bytes | int]] = {b"/": _text(b"hello\n")}
        plain = _serve(self, _Scripted(self.seen, routes))
        # A server that compresses only when asked: nothing asks, so nothing is compressed.
        compressing = _serve(self, EncodingResourceWrapper(_Scripted(self.seen, routes),
                                                           [GzipEncoderFactory()]))
        directory = _files(self, alice=_pki().alice)
        for port in (plain, compressing):
            out, err, code = await _run_cli(directory, f"https://127.0.0.1:{port}/", *_ALICE,
                                            "--ca", "ca.pem", "--json")
            document = json.loads(out)
            assert (document["status"], document["body"], code) == (200, "hello\n", 0), out
            assert "content-encoding" not in document["headers"], document["headers"]


class ReasonParsingTests(SynchronousTestCase):
    """The reason extracted from an error body: linear by construction, short, printable."""

    def test_no_regular_expression(self) -> None:
        """The HTML reduction is a forward scan with str.find, not a backtracking regex."""
        source = (inspect.getsource(client_module._html_text)
                  + inspect.getsource(client_module._server_reason))
        assert "re." not in source and "regex" not in source

    def test_input_is_capped(self) -> None:
        """At most _REASON_INPUT bytes of a body are parsed, however long the body."""
        seen: list[int] = []
        original = client_module._html_text

        def recording(text: str) -> str:
            seen.append(len(text))
            return original(text)

        self.patch(client_module, "_html_text", recording)
        body = b"<p>why</p>" + b"<script" * 1_000_000
        assert client_module._server_reason(body, "text/html") == "why"
        assert seen and max(seen) <= client_module._REASON_INPUT, seen

    def test_script_flood(self) -> None:
        """The flood of the review gives the text before it, cut at the first open tag."""
        assert client_module._server_reason(b"<b>no</b>" + b"<script" * 32768, "text/html") == "no"
        assert client_module._server_reason(b"<script>" * 32768 + b"hi", "text/html") == ""

    def test_nested_json(self) -> None:
        """A deeply nested JSON body does not raise (RecursionError is caught)."""
        assert client_module._server_reason(b"[" * 60000, "application/json").startswith("[[[")

    def test_html(self) -> None:
        """Tags go, entities are decoded, scripts, styles and titles are skipped."""
        body = (b"<html><head><title>T</title><style>p{}</style></head><body><SCRIPT x=1>"
                b"evil()</script ><p>a &amp; b</p></body></html>")
        assert client_module._server_reason(body, "text/html") == "a & b"

    @PROPERTY
    @given(st.binary(max_size=4096), st.sampled_from(["text/html", "application/json",
                                                       "text/plain", ""]))
    def test_any_body(self, body: bytes, content_type: str) -> None:
        """Any body gives one printable line of at most _MAX_REASON characters."""
        reason = client_module._server_reason(body, content_type)
        assert len(reason) <= client_module._MAX_REASON
        assert reason == "" or reason.isprintable(), repr(reason)

    @PROPERTY
    @given(st.text(max_size=2000))
    def test_any_text(self, text: str) -> None:
        """Any text, HTML or not: printable, and idempotent."""
        for content_type in ("text/html", "text/plain"):
            reason = client_module._server_reason(text.encode("utf-8"), content_type)
            assert reason == "" or reason.isprintable(), repr(reason)
        assert printable(printable(text)) == printable(text)

    @PROPERTY
    @given(st.text(alphabet=st.characters(blacklist_characters="<>&"), max_size=500),
           st.from_regex(r"[A-Za-z][A-Za-z ]{0,40}[A-Za-z]", fullmatch=True))
    def test_reason_found_behind_scripts(self, junk: str, reason: str) -> None:
        """Whatever a script holds, the paragraph after it is the reason."""
        body = f"<html><script>{junk}</script><p>{reason}</p></html>".encode()
        assert client_module._server_reason(body, "text/html") == " ".join(reason.split())


class PrintableTests(SynchronousTestCase):
    """printable(): escape sequences and control characters removed, in one pass."""

    def test_sequences(self) -> None:
        """CSI, OSC (BEL or ST), 8-bit CSI, other ESC sequences, C0/C1, bidi overrides."""
        assert printable("a\x1b[31mred\x1b[0m b") == "ared b"
        assert printable("\x1b]0;title\x07t\x1b]8;;http://x\x1b\\link") == "tlink"
        assert printable("\x9b2Jx\x9d0;t\x9cy") == "xy"
        assert printable("\x1b(Bz\x1bcq") == "zq"
        assert printable("a\x00b\x7fc\x85d") == "abc d"  # NEL is a line break
        assert printable("ab\u202ecba\u2066") == "abcba"
        assert printable("one\ntwo\tthree\r") == "one two three "
        assert printable("one\ntwo\r\n", lines=True) == "one\ntwo \n"

    @PROPERTY
    @given(st.text(max_size=500))
    def test_nothing_active_remains(self, text: str) -> None:
        """No ESC, no C0/C1 control, no DEL is left (lines mode keeps only \\n and \\t)."""
        for lines in (False, True):
            result = printable(text, lines=lines)
            controls = [ch for ch in result if ch < " " or "\x7f" <= ch <= "\x9f"]
            assert set(controls) <= ({"\n", "\t"} if lines else set()), (repr(result))

    def test_terminal_body(self) -> None:
        """A body printed to a terminal loses its escape sequences; piped, it stays as sent."""

        class Terminal(io.BytesIO):
            def isatty(self) -> bool:
                return True

        class FakeResponse:
            version = (b"HTTP", 1, 1)
            code = 200
            phrase = b"OK\x1b[8m"

            class headers:  # noqa: N801
                @staticmethod
                def getRawHeaders(name: Any) -> None:
                    return None

        body = b"line\x1b[2J\n\x1b]0;x\x07two\n"
        terminal, pipe = Terminal(), io.BytesIO()
        _Output(terminal, io.StringIO(), False).response(FakeResponse(), body)  # type: ignore
        _Output(pipe, io.StringIO(), False).response(FakeResponse(), body)  # type: ignore
        assert terminal.getvalue() == b"HTTP/1.1 200 OK\nline\ntwo\n"
        assert pipe.getvalue() == b"HTTP/1.1 200 OK\n" + body

    def test_json_output(self) -> None:
        """--json: a body nested too deeply to parse is shown as text; controls are escaped."""
        from certsrv.client.cli import _json_body, _json_line

        assert _json_body(b"[" * 100_000, "application/json") == "[" * 100_000
        line = _json_line({"body": "a\x1b[2J\x9b\u202e\u2028b", "name": "caf\u00e9"})
        assert line.endswith(b"\n") and line[:-1].decode("ascii").isprintable(), line
        assert json.loads(line)["body"] == "a\x1b[2J\x9b\u202e\u2028b"
        assert _json_line({"name": "caf\u00e9"}) == '{"name": "caf\u00e9"}\n'.encode()

    def test_status_error_str(self) -> None:
        """HTTPStatusError's text carries no control characters from the phrase."""
        assert str(client_module.HTTPStatusError(403, "No\x1b[2J way")) == "403 No way"


# -- Issue 12 item 7: the client's verdicts explained as its own -------------------------------


class ClientVerdictTests(TestCase):
    """A server certificate this client refuses is explained as this client's verdict."""

    async def test_without_ca_no_blame_on_ca_option(self) -> None:
        """No --ca: the sentence names the system's CAs, not "the CA given with --ca"."""
        port = _serve(self, _Scripted(_Seen(), {b"/": _text(b"hi\n")}))
        directory = _files(self, alice=_pki().alice)
        out, err, code = await _run_cli(directory, f"https://127.0.0.1:{port}/", *_ALICE)
        assert code == 2
        assert err == ("certsrv-client: this client rejected the server's certificate: it was "
                       "not issued by a CA the system trusts (no --ca was given)\n"), err

    async def test_with_other_ca(self) -> None:
        """--ca naming another CA: the sentence names that file."""
        port = _serve(self, _Scripted(_Seen(), {b"/": _text(b"hi\n")}))
        directory = _files(self, alice=_pki().alice)
        out, err, code = await _run_cli(directory, f"https://127.0.0.1:{port}/", *_ALICE,
                                        "--ca", "other-ca.pem")
        assert code == 2
        assert err == ("certsrv-client: this client rejected the server's certificate: it was "
                       "not issued by the CA in other-ca.pem (--ca)\n"), err

    async def test_expired_server_certificate(self) -> None:
        """An expired server certificate: this client's verdict, not the server's."""
        port = _serve(self, _Scripted(_Seen(), {b"/": _text(b"hi\n")}), _pki().expired)
        explanation = await _refusal(_client(self).get(f"https://127.0.0.1:{port}/"))
        assert (explanation.code, explanation.sentence) == (
            "server_untrusted", "this client rejected the server's certificate: it has expired")


# -- Finding 9: the key file's mode --------------------------------------------------------------


class KeyModeTests(TestCase):
    """A private key readable by other users is reported: a log event, a line from the CLI."""

    def setUp(self) -> None:
        self.directory = _files(self, alice=_pki().alice)
        self.ca = _pki().root.certificate_pem()

    def load(self, **kwargs: Any) -> list[dict[str, Any]]:
        with captured_events("certsrv.client") as events:
            client_module.client_tls_policy(ca=self.ca, **kwargs)
        return events

    def test_library_event(self) -> None:
        """Mode 0644 gives one key_exposed event naming the file; 0600 and bytes give none."""
        key = self.directory / "alice.key"
        cert = self.directory / "alice.pem"
        os.chmod(key, 0o644)
        events = self.load(cert_path_or_pem=cert, key=key)
        assert [(e["reason"], e["path"], e["mode"]) for e in events] == [
            ("key_exposed", str(key), "0o644")], events
        os.chmod(key, 0o600)
        assert self.load(cert_path_or_pem=cert, key=key) == []
        assert self.load(cert_path_or_pem=cert.read_bytes(), key=key.read_bytes()) == []

    def test_library_event_key_in_certificate_file(self) -> None:
        """A key inside a group-readable certificate file is reported too."""
        both = self.directory / "both.pem"
        both.write_bytes(_pki().alice.chain_pem() + _pki().alice.private_key_pem())
        os.chmod(both, 0o640)
        events = self.load(cert_path_or_pem=both, key=None)
        assert [e["reason"] for e in events] == ["key_exposed"]

    async def test_cli_warns_once(self) -> None:
        """certsrv-client prints one warning line and still makes the request."""
        port = _serve(self, _Scripted(_Seen(), {b"/": _text(b"hi\n")}))
        os.chmod(self.directory / "alice.key", 0o644)
        out, err, code = await _run_cli(self.directory, f"https://127.0.0.1:{port}/", *_ALICE,
                                        "--ca", "ca.pem")
        assert (out, code) == ("HTTP/1.1 200 OK\nhi\n", 0), (out, err)
        assert err == ("certsrv-client: warning: alice.key: the client's private key is "
                       "readable by other users (mode 0o644); chmod 600 it\n"), err
        key_text = _pki().alice.private_key_pem().decode()
        assert all(line not in err for line in key_text.splitlines()[1:-1])
        os.chmod(self.directory / "alice.key", 0o600)
        out, err, code = await _run_cli(self.directory, f"https://127.0.0.1:{port}/", *_ALICE,
                                        "--ca", "ca.pem")
        assert (err, code) == ("", 0), err

