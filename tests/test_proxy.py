"""Client certificates forwarded by a TLS-terminating proxy: in process, and behind real nginx."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import signal
import urllib.parse
from functools import cache
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from twisted.internet import defer, protocol, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol, wrapClientTLS
from twisted.internet.error import ConnectError, ProcessExitedAlready
from twisted.internet.task import deferLater
from twisted.python.failure import Failure
from twisted.trial.unittest import SkipTest, TestCase
from twisted.web import resource, server

from certsrv import identity_of, protected_site
from certsrv.pki import IssuedCertificate
from certsrv.server import options as _tap
from tests._support import (
    DAY,
    Exchange,
    HTTPClientProtocol,
    captured_events,
    client_tls_options,
    shared_pki,
    utcnow,
    write_pem,
)
from tests.test_access import options, pieces
from tests.test_interop import _Collect, run
from tests.test_plugin import _Files, _free_port

DOCS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs")
NGINX_TEMPLATE = os.path.join(DOCS, "nginx-front.conf")
FORWARDED_NAMES = ("client-cert", "client-cert-chain", "x-ssl-client-cert",
                   "x-forwarded-client-cert")


@cache
def _certs() -> dict[str, IssuedCertificate]:
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
    return base64.b64encode(cert.public_bytes(serialization.Encoding.DER))


def client_cert_header(issued: IssuedCertificate) -> tuple[bytes, bytes]:
    """RFC 9440 ``Client-Cert``: the leaf as a Structured Field Byte Sequence."""
    return b"Client-Cert", b":" + der_b64(issued.certificate) + b":"


def nginx_header(issued: IssuedCertificate) -> tuple[bytes, bytes]:
    """``X-SSL-Client-Cert`` as nginx's ``$ssl_client_escaped_cert`` writes it."""
    return b"X-SSL-Client-Cert", urllib.parse.quote(
        issued.certificate_pem().decode(), safe="").encode()


class _Response(HTTPClientProtocol):
    """Sends one request, keeps the response, and fires ``done`` when the connection ends."""

    def __init__(self, request: bytes) -> None:
        super().__init__(request)
        self.done: defer.Deferred[None] = defer.Deferred()

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        super().connectionLost(reason)
        self.done.callback(None)


@defer.inlineCallbacks
def fetch(port: int, cert: IssuedCertificate | None, path: str = "/secure",
          headers: tuple[tuple[bytes, bytes], ...] = ()) -> Any:
    """One HTTP/1.1 request over TLS from 127.0.0.1, presenting ``cert``; an Exchange."""
    lines = [f"GET {path} HTTP/1.1".encode(), b"Host: localhost", b"Connection: close",
             b"Accept: application/json"]
    lines += [name + b": " + value for name, value in headers]
    client = _Response(b"\r\n".join(lines) + b"\r\n\r\n")
    endpoint = wrapClientTLS(client_tls_options(shared_pki(), cert),
                             TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=10))
    yield connectProtocol(endpoint, client)
    yield client.done
    return Exchange(client, None)


def document(result: Exchange) -> dict[str, Any]:
    """The JSON body of a response."""
    try:
        return json.loads(result.body)  # type: ignore[no-any-return]
    except ValueError:
        raise AssertionError(f"not JSON: {result.client.received!r}") from None


class _HeaderEcho(resource.Resource):
    """What the application sees: the identity and the forwarded-certificate headers."""

    isLeaf = True

    def render_GET(self, request: server.Request) -> bytes:
        identity = identity_of(request)
        seen = {name: [v.decode("latin-1") for v in request.requestHeaders.getRawHeaders(
            name, [])] for name in FORWARDED_NAMES if request.requestHeaders.hasHeader(name)}
        request.setHeader(b"content-type", b"application/json")
        return json.dumps({"subject": identity.subject if identity else None,
                           "forwarded_headers": seen}).encode()


class _Servers(TestCase):
    """certsrv listeners on 127.0.0.1, configured with the plugin's options."""

    timeout = 60

    def setUp(self) -> None:
        self.files = _Files(self.mktemp())
        self.pki = shared_pki()

    def listen_factory(self, factory: Any) -> int:
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")  # type: ignore[attr-defined]
        self.addCleanup(port.stopListening)
        return int(port.getHost().port)

    def certsrv(self, *argv: str) -> int:
        """``twistd certsrv`` with ``argv`` (its default tree, /secure); the port."""
        factory, _ = pieces(_tap.makeService(options(self.files.argv(*argv), reactor)))
        return self.listen_factory(factory)

    def echo(self, *argv: str) -> int:
        """``protected_site`` serving ``_HeaderEcho`` with ``argv``; the port."""
        return self.listen_factory(protected_site(_HeaderEcho(), self.files.argv(*argv),
                                                  clock=reactor))


class TrustedProxyTests(_Servers):
    """127.0.0.1 is a trusted proxy: it authenticates itself, and forwards its client's
    certificate, which certsrv validates and uses instead of the proxy's."""

    FORWARDING = ("--forwarded-cert", "rfc9440", "--trusted-proxy", "127.0.0.1/32")

    @defer.inlineCallbacks
    def forwarded(self, who: str, *extra: tuple[bytes, bytes], port: int | None = None,
                  path: str = "/secure") -> Any:
        """A request from the proxy forwarding ``who``'s certificate."""
        if port is None:
            port = self.certsrv(*self.FORWARDING)
        headers = (client_cert_header(_certs()[who]), *extra)
        result = yield fetch(port, _certs()["proxy"], path, headers)
        return result

    @defer.inlineCallbacks
    def test_forwarded_identity_not_the_proxys(self) -> Any:
        with captured_events() as events:
            result = yield self.forwarded("user")
        self.assertEqual(result.status, 200, result.client.received)
        identity = document(result)
        self.assertEqual(identity["subject"], "CN=carol,O=Example Users")
        self.assertEqual(identity["sha256"], _certs()["user"].fingerprint)
        self.assertNotIn(b"edge-proxy", result.body)
        # The proxy's own connection was accepted by the handshake, and that is all it is.
        accepted = [e["subject"] for e in events if e.get("decision") == "accepted"]
        self.assertEqual(accepted, ["CN=edge-proxy,O=Example Edge"])

    @defer.inlineCallbacks
    def test_forwarded_chain(self) -> Any:
        port = self.certsrv(*self.FORWARDING)
        bob = _certs()["bob"]
        chain = (b"Client-Cert-Chain", b":" + der_b64(bob.chain[0]) + b":")
        result = yield self.forwarded("bob", chain, port=port)
        self.assertEqual(result.status, 200, result.client.received)
        self.assertEqual(document(result)["subject"], "CN=bob")
        # Without its intermediate, the chain does not reach a trusted root.
        result = yield self.forwarded("bob", port=port)
        self.assertEqual((result.status, document(result)["reason"]), (403, "unknown_ca"))

    @defer.inlineCallbacks
    def test_forwarded_certificates_are_validated(self) -> Any:
        port = self.certsrv(*self.FORWARDING)
        for who, reason in (("expired", "expired"), ("unknown_ca", "unknown_ca"),
                            ("server_auth_only", "bad_key_usage"),
                            ("self_signed", "self_signed_not_allowed")):
            with captured_events() as events:
                result = yield self.forwarded(who, port=port)
            self.assertEqual(result.status, 403, (who, result.client.received))
            self.assertEqual(document(result)["reason"], reason, who)
            rejected = [e for e in events if e.get("decision") == "rejected"]
            self.assertEqual([(e["reason"], e.get("forwarded")) for e in rejected],
                             [(reason, True)], who)
            self.assertEqual(rejected[0]["sha256"], _certs()[who].fingerprint)

    @defer.inlineCallbacks
    def test_forwarded_revoked_by_crl(self) -> Any:
        revoked = _certs()["revoked"]
        crl = self.pki.root.crl([(revoked.serial_number, utcnow() - DAY,
                                  x509.ReasonFlags.key_compromise)])
        path = write_pem(self.files.dir, "root.crl",
                         crl.public_bytes(serialization.Encoding.PEM))
        port = self.certsrv(*self.FORWARDING, "--crl", path)
        result = yield self.forwarded("revoked", port=port)
        self.assertEqual((result.status, document(result)["reason"]), (403, "revoked"))
        result = yield self.forwarded("user", port=port)
        self.assertEqual(result.status, 200, result.client.received)

    @defer.inlineCallbacks
    def test_malformed_headers_are_400(self) -> Any:
        port = self.certsrv(*self.FORWARDING)
        user = client_cert_header(_certs()["user"])
        for headers, reason in (
            (((b"Client-Cert", b":not base64!:"),), "bad_encoding"),
            (((b"Client-Cert", b"MIIB"),), "bad_encoding"),
            (((b"Client-Cert", b":" + base64.b64encode(b"hello") + b":"),),
             "not_a_certificate"),
            ((user, user), "multiple_values"),
            (((b"Client-Cert-Chain", user[1]),), "missing_certificate"),
        ):
            result = yield fetch(port, _certs()["proxy"], "/secure", headers)
            self.assertEqual(result.status, 400, (headers, result.client.received))
            body = document(result)
            self.assertEqual((body["error"], body["reason"]), ("bad request", reason), headers)

    @defer.inlineCallbacks
    def test_no_header_means_no_certificate(self) -> Any:
        port = self.certsrv(*self.FORWARDING)
        result = yield fetch(port, _certs()["proxy"])
        self.assertEqual((result.status, document(result)["reason"]), (403, "no_certificate"))
        self.assertNotIn(b"edge-proxy", result.body)

    @defer.inlineCallbacks
    def test_application_sees_the_user_and_no_headers(self) -> Any:
        port = self.echo(*self.FORWARDING)
        result = yield self.forwarded(
            "user", (b"X-SSL-Client-Cert", b"ignored"), (b"X-Forwarded-Client-Cert", b"x=y"),
            port=port, path="/app")
        self.assertEqual(result.status, 200, result.client.received)
        self.assertEqual(document(result), {"subject": "CN=carol,O=Example Users",
                                            "forwarded_headers": {}})
        result = yield fetch(port, _certs()["proxy"], "/app")
        self.assertEqual((result.status, document(result)["reason"]), (403, "no_certificate"))

    @defer.inlineCallbacks
    def test_policy_judges_the_forwarded_certificate(self) -> Any:
        policy = write_pem(self.files.dir, "policy.toml", b"""
[[rule]]
name = "users"
path = "/secure"
[rule.allow]
subject = { O = "Example Users" }
""")
        port = self.certsrv(*self.FORWARDING, "--policy", policy)
        with captured_events("certsrv.policy") as events:
            result = yield self.forwarded("user", port=port)
            self.assertEqual(result.status, 200, result.client.received)
            # The proxy's own certificate (O=Example Edge) would not match; nor counts.
            result = yield fetch(port, _certs()["proxy"])
            self.assertEqual((result.status, document(result)["reason"]),
                             (403, "no_certificate"))
            result = yield self.forwarded("bob", (b"Client-Cert-Chain", b":" + der_b64(
                _certs()["bob"].chain[0]) + b":"), port=port)
            self.assertEqual((result.status, document(result)["reason"]), (403, "not_allowed"))
        self.assertEqual([(e["policy_reason"], e["subject"]) for e in events],
                         [("allowed", "CN=carol,O=Example Users"), ("no_certificate", None),
                          ("not_allowed", "CN=bob")])

    @defer.inlineCallbacks
    def test_forwarded_over_http2(self) -> Any:
        """A proxy speaking HTTP/2 to certsrv (as Envoy can): curl plays it."""
        if shutil.which("curl") is None:
            raise SkipTest("curl is not installed")
        port = self.certsrv(*self.FORWARDING)
        proxy = _certs()["proxy"]
        name, value = client_cert_header(_certs()["user"])
        out, err, code = yield run([
            "curl", "-sS", "--http2", "--max-time", "20", "--cacert", self.files.ca,
            "--cert", write_pem(self.files.dir, "proxy.pem", proxy.chain_pem()),
            "--key", write_pem(self.files.dir, "proxy.key", proxy.private_key_pem(), 0o600),
            "-H", f"{name.decode()}: {value.decode()}", "-H", "Accept: application/json",
            "-w", "\n%{http_version} %{http_code}", "--resolve", f"localhost:{port}:127.0.0.1",
            f"https://localhost:{port}/secure"])
        self.assertEqual(code, 0, err)
        body, _, status = out.rpartition(b"\n")
        self.assertEqual(status, b"2 200", out)
        self.assertEqual(json.loads(body)["subject"], "CN=carol,O=Example Users")


class UntrustedPeerTests(_Servers):
    """127.0.0.1 is not a trusted proxy: its forwarded-certificate headers are removed, and
    its own certificate is the identity."""

    FORWARDING = ("--forwarded-cert", "rfc9440", "--trusted-proxy", "10.0.0.0/8")

    @defer.inlineCallbacks
    def test_headers_stripped_identity_is_the_connections(self) -> Any:
        port = self.echo(*self.FORWARDING)
        user = _certs()["user"]
        headers = (client_cert_header(user),
                   (b"Client-Cert-Chain", b":" + der_b64(self.pki.root.certificate) + b":"),
                   nginx_header(user), (b"X-Forwarded-Client-Cert", b"Cert=x"))
        result = yield fetch(port, self.pki.client, "/app", headers)
        self.assertEqual(result.status, 200, result.client.received)
        self.assertEqual(document(result), {"subject": "CN=alice", "forwarded_headers": {}})

    @defer.inlineCallbacks
    def test_malformed_headers_ignored(self) -> Any:
        port = self.certsrv(*self.FORWARDING)
        result = yield fetch(port, self.pki.client, "/secure",
                             ((b"Client-Cert", b":not base64!:"),))
        self.assertEqual(result.status, 200, result.client.received)
        self.assertEqual(document(result)["subject"], "CN=alice")

    @defer.inlineCallbacks
    def test_headers_stripped_without_forwarding_configured(self) -> Any:
        port = self.echo()
        result = yield fetch(port, self.pki.client, "/app",
                             (client_cert_header(_certs()["user"]),
                              nginx_header(_certs()["user"])))
        self.assertEqual(document(result), {"subject": "CN=alice", "forwarded_headers": {}})


def nginx_binary() -> str | None:
    found = shutil.which("nginx")
    if found is None and os.access("/usr/sbin/nginx", os.X_OK):
        found = "/usr/sbin/nginx"
    return found


def render_nginx_conf(listen: str, certsrv_address: str, certs: str) -> str:
    """docs/nginx-front.conf with its placeholders filled in."""
    with open(NGINX_TEMPLATE, encoding="utf-8") as f:
        text = f.read()
    values = {"NGINX_LISTEN": listen, "CERTSRV_ADDRESS": certsrv_address, "CERTS": certs}
    for name, value in values.items():
        text = text.replace("${" + name + "}", value)
    left = re.findall(r"\$\{[A-Z_]+\}", text)
    if left:
        raise AssertionError(f"unknown placeholders in {NGINX_TEMPLATE}: {left}")
    return text


class _Probe(protocol.Protocol):
    def __init__(self) -> None:
        self.closed: defer.Deferred[None] = defer.Deferred()

    def connectionMade(self) -> None:
        self.transport.loseConnection()

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        self.closed.callback(None)


class NginxFront(_Servers):
    """Real nginx terminates mutual TLS with docs/nginx-front.conf and forwards to certsrv."""

    def setUp(self) -> None:
        super().setUp()
        binary = nginx_binary()
        if binary is None:
            raise SkipTest("nginx not installed (Debian package nginx-light; .ci/run installs it)")
        self.nginx = binary
        for tool in ("curl",):
            if shutil.which(tool) is None:
                raise SkipTest(f"{tool} is not installed")
        self.certsrv_port = self.certsrv("--forwarded-cert", "nginx",
                                         "--trusted-proxy", "127.0.0.1")
        return self.start_nginx()

    @defer.inlineCallbacks
    def start_nginx(self) -> Any:
        prefix = os.path.abspath(os.path.join(self.files.dir, "nginx"))
        os.makedirs(prefix)
        proxy = _certs()["proxy"]
        for name, data, mode in (
            ("server.pem", self.pki.server.chain_pem(), 0o644),
            ("server.key", self.pki.server.private_key_pem(), 0o600),
            ("client-ca.pem", self.pki.root.certificate_pem(), 0o644),
            ("proxy.pem", proxy.chain_pem(), 0o644),
            ("proxy.key", proxy.private_key_pem(), 0o600),
            ("certsrv-ca.pem", self.pki.root.certificate_pem(), 0o644),
        ):
            write_pem(prefix, name, data, mode)
        self.port = _free_port()
        conf = write_pem(prefix, "nginx.conf", render_nginx_conf(
            f"127.0.0.1:{self.port}", f"127.0.0.1:{self.certsrv_port}", prefix).encode())
        self.prefix = prefix
        self.ended: defer.Deferred[tuple[bytes, bytes, int]] = defer.Deferred()
        argv = [self.nginx, "-p", prefix + "/", "-c", conf, "-g", "daemon off;"]
        process = reactor.spawnProcess(  # type: ignore[attr-defined]
            _Collect(b"", self.ended), argv[0], argv,
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")})
        self.addCleanup(self.stop_nginx, process)
        yield self.wait_until_listening()

    def stop_nginx(self, process: Any) -> defer.Deferred[Any]:
        try:
            process.signalProcess(signal.SIGTERM)
        except ProcessExitedAlready:
            pass
        return self.ended

    def nginx_log(self) -> str:
        try:
            with open(os.path.join(self.prefix, "error.log"), encoding="utf-8") as f:
                return f.read()
        except OSError:
            return ""

    @defer.inlineCallbacks
    def wait_until_listening(self) -> Any:
        """Connect until nginx accepts (it has no readiness signal); fail if it exits."""
        deadline = reactor.seconds() + 20  # type: ignore[attr-defined]
        while True:
            if self.ended.called:
                out, err, code = yield self.ended
                self.fail(f"nginx exited with {code}: {(out + err).decode(errors='replace')}"
                          f"\n{self.nginx_log()}")
            probe = _Probe()
            try:
                yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", self.port),
                                      probe)
            except ConnectError:
                if reactor.seconds() > deadline:  # type: ignore[attr-defined]
                    self.fail(f"nginx did not listen on {self.port}\n{self.nginx_log()}")
                yield deferLater(reactor, 0.02, lambda: None)
                continue
            yield probe.closed
            return

    def curl(self, port: int, cert: IssuedCertificate | None, *extra: str
             ) -> defer.Deferred[tuple[bytes, bytes, int]]:
        args = ["curl", "-sS", "--max-time", "20", "--cacert", self.files.ca,
                "-H", "Accept: application/json", "-w", "\n%{http_code}", *extra]
        if cert is not None:
            name = cert.fingerprint[:16]
            args += ["--cert", write_pem(self.files.dir, f"{name}.pem", cert.chain_pem()),
                     "--key", write_pem(self.files.dir, f"{name}.key", cert.private_key_pem(),
                                        0o600)]
        return run([*args, "--resolve", f"localhost:{port}:127.0.0.1",
                    f"https://localhost:{port}/secure"])

    @defer.inlineCallbacks
    def answer(self, port: int, cert: IssuedCertificate | None, *extra: str) -> Any:
        out, err, code = yield self.curl(port, cert, *extra)
        self.assertEqual(code, 0, f"{err!r}\n{self.nginx_log()}")
        body, _, status = out.rpartition(b"\n")
        try:
            return int(status), json.loads(body)
        except ValueError:
            self.fail(f"not JSON: {out!r}\n{self.nginx_log()}")



class NginxTests(NginxFront):
    """The identities nginx forwards, and what it refuses itself."""

    @defer.inlineCallbacks
    def test_user_identity_through_nginx(self) -> Any:
        user = _certs()["user"]
        with captured_events() as events:
            status, body = yield self.answer(self.port, user)
        self.assertEqual(status, 200, body)
        self.assertEqual(body["subject"], "CN=carol,O=Example Users")
        self.assertEqual(body["sha256"], user.fingerprint)
        # certsrv's TLS peer was nginx, authenticated by its proxy certificate.
        self.assertIn("CN=edge-proxy,O=Example Edge",
                      [e["subject"] for e in events if e.get("decision") == "accepted"])
        # A certificate from an intermediate: nginx forwards the leaf only, so certsrv
        # needs the intermediate from --intermediates (not given here).
        status, body = yield self.answer(self.port, _certs()["bob"])
        self.assertEqual((status, body["reason"]), (403, "unknown_ca"))

    @defer.inlineCallbacks
    def test_unknown_ca_passed_by_nginx_rejected_by_certsrv(self) -> Any:
        with captured_events() as events:
            status, body = yield self.answer(self.port, _certs()["unknown_ca"])
        self.assertEqual((status, body["reason"]), (403, "unknown_ca"))
        rejected = [e for e in events if e.get("decision") == "rejected"]
        self.assertEqual([(e["reason"], e.get("forwarded"), e["subject"]) for e in rejected],
                         [("unknown_ca", True, "CN=mallory")])

    @defer.inlineCallbacks
    def test_expired_refused_by_nginx_itself(self) -> Any:
        """As docs/nginx-front.conf says: optional_no_ca still checks everything but the
        issuer, so an expired certificate gets nginx's 400 and never reaches certsrv."""
        with captured_events() as events:
            out, err, code = yield self.curl(self.port, _certs()["expired"])
        self.assertEqual(code, 0, err)
        self.assertTrue(out.endswith(b"\n400"), out)
        self.assertIn(b"The SSL certificate error", out)
        self.assertEqual([e for e in events if e.get("forwarded")], [])

    @defer.inlineCallbacks
    def test_no_certificate_and_forged_header_through_nginx(self) -> Any:
        forged = "X-SSL-Client-Cert: " + nginx_header(_certs()["user"])[1].decode()
        status, body = yield self.answer(self.port, None, "-H", forged)
        self.assertEqual((status, body["reason"]), (403, "no_certificate"))

    @defer.inlineCallbacks
    def test_forged_header_from_untrusted_peer_has_no_effect(self) -> Any:
        forged = "X-SSL-Client-Cert: " + nginx_header(_certs()["user"])[1].decode()
        untrusted = self.certsrv("--forwarded-cert", "nginx", "--trusted-proxy", "10.0.0.0/8")
        status, body = yield self.answer(untrusted, self.pki.client, "-H", forged)
        self.assertEqual(status, 200, body)
        self.assertEqual(body["subject"], "CN=alice")
        # The header is well formed: from a trusted peer (here, anyone on 127.0.0.1) it
        # would have decided the identity. Hence: trust only the proxy's own address.
        status, body = yield self.answer(self.certsrv_port, self.pki.client, "-H", forged)
        self.assertEqual((status, body["subject"]), (200, "CN=carol,O=Example Users"))
