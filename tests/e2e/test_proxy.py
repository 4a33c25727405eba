"""Client certificates forwarded by a TLS-terminating proxy: in process, and behind real nginx."""

from __future__ import annotations

import base64
import json
import shutil
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from twisted.internet import defer, protocol, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol, wrapClientTLS
from twisted.python.failure import Failure
from twisted.trial.unittest import SkipTest

from certsrv.pki import IssuedCertificate
from tests._servers import NginxFront, run
from tests._servers import ProxyServers as _Servers
from tests._support import (
    DAY,
    Exchange,
    HTTPClientProtocol,
    captured_events,
    client_cert_header,
    client_tls_options,
    der_b64,
    nginx_header,
    shared_pki,
    utcnow,
    write_pem,
)
from tests._support import proxy_certs as _certs


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
