# mypy: disallow-untyped-calls=False
"""
Tests for certsrv.client.http and certsrv-client, against a small mutual-TLS server on 127.0.0.1.
"""

from __future__ import annotations

import datetime
import io
import json
import os
import sys
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any, cast

from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from OpenSSL import SSL, crypto
from service_identity import VerificationError
from treq.content import content
from twisted.internet import defer, error
from twisted.internet import reactor as _reactor
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.ssl import (
    Certificate,
    CertificateOptions,
    TLSVersion,
    trustRootFromCertificates,
)
from twisted.internet.utils import getProcessOutputAndValue
from twisted.protocols.policies import WrappingFactory
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase
from twisted.web.client import HTTPConnectionPool, ResponseFailed, ResponseNeverReceived
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from certsrv.client.cli import main
from certsrv.client.http import (
    Explanation,
    HTTPStatusError,
    client_tls_policy,
    explain,
    http_client,
    raise_for_status,
)
from certsrv.exceptions import ConfigurationError, Reason
from certsrv.pki import (
    CertificateAuthority,
    IssuedCertificate,
    encrypted_key_pem,
    pkcs12_bytes,
    self_signed_client,
)
from certsrv.x509.passphrase import Passphrase

reactor: Any = _reactor  # the global reactor, untyped for mypy
_REPO = Path(__file__).resolve().parents[2]
_PAST = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=30)
_FORBIDDEN = "CN=alice is not on the allow list"

NO_CERTIFICATE = "the server rejected the connection: it requires a client certificate"
UNKNOWN_CA = ("the server rejected the client certificate: it was not issued by a CA the "
              "server trusts (unknown CA)")
EXPIRED = "the server rejected the client certificate: it has expired (certificate expired)"
FORBIDDEN = "the server refused the request (403 Forbidden)"
BAD_KEY_USAGE = ("the server rejected the client certificate: its key usage or extended key "
                 "usage does not allow client authentication (unsupported certificate)")


class _PKI:
    """Every certificate the tests use, made once."""

    def __init__(self) -> None:
        self.root = CertificateAuthority.create("certsrv test root")
        self.other = CertificateAuthority.create("some other root")
        self.intermediate = self.root.intermediate("certsrv test intermediate")
        self.server = self.root.issue_server("localhost", "127.0.0.1")
        self.elsewhere = self.root.issue_server("elsewhere.example")
        self.alice = self.root.issue_client("alice")
        self.mallory = self.other.issue_client("mallory")
        self.expired = self.root.issue_client(
            "old", not_before=_PAST - datetime.timedelta(days=30), not_after=_PAST)
        self.server_only = self.root.issue_client(
            "server-only", extended_key_usage=(ExtendedKeyUsageOID.SERVER_AUTH,))
        self.chained = self.intermediate.issue_client("carol")
        self.revoked = self.root.issue_client("revoked")
        self.crl = self.root.crl([(self.revoked.serial_number, _PAST, None)])


@cache
def _pki() -> _PKI:
    return _PKI()


class _PeerName(Resource):
    """Answer with the client certificate's CN; ``/forbidden`` answers 403 with a reason."""

    isLeaf = True

    def render(self, request: Request) -> bytes:
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        if request.path == b"/forbidden":
            request.setResponseCode(403)
            return f"{_FORBIDDEN}\n".encode()
        peer = request.transport.getPeerCertificate().to_cryptography()  # type: ignore[union-attr]
        names = peer.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        return f"{names[0].value!s}\n".encode()


def _track(test: TestCase, factory: WrappingFactory[Any]) -> None:
    """At cleanup, close the server side of every connection and wait until it is gone."""

    async def close() -> None:
        lost: list[defer.Deferred[None]] = []
        for protocol in list(factory.protocols):
            done: defer.Deferred[None] = defer.Deferred()
            lost.append(done)
            original = protocol.connectionLost

            def connection_lost(reason: Failure, original: Any = original,
                                done: defer.Deferred[None] = done) -> None:
                original(reason)
                done.callback(None)

            protocol.connectionLost = connection_lost
            protocol.transport.abortConnection()
        await defer.gatherResults(lost)

    test.addCleanup(lambda: defer.Deferred.fromCoroutine(close()))


def _listen(
    test: TestCase,
    version: Any = TLSVersion.TLSv1_3,
    server: IssuedCertificate | None = None,
    configure: Callable[[SSL.Context], None] | None = None,
) -> int:
    """Serve _PeerName over mutual TLS on 127.0.0.1, trusting the test root; return the port."""
    pki = _pki()
    identity = server or pki.server
    options = CertificateOptions(
        privateKey=identity.private_key,  # type: ignore[arg-type]
        certificate=identity.certificate,  # type: ignore[arg-type]
        trustRoot=trustRootFromCertificates(
            [Certificate(crypto.X509.from_cryptography(pki.root.certificate))]),
        raiseMinimumTo=version,
        lowerMaximumSecurityTo=version,
    )
    if configure is not None:
        configure(options.getContext())
    factory = TLSMemoryBIOFactory(options, False, Site(_PeerName()))  # type: ignore[arg-type]
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")
    test.addCleanup(port.stopListening)
    _track(test, factory)
    return int(port.getHost().port)


def _silent(test: TestCase) -> int:
    """Accept TCP connections and never answer; return the port."""
    factory = WrappingFactory(Factory.forProtocol(Protocol))
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")
    test.addCleanup(port.stopListening)
    _track(test, factory)
    return int(port.getHost().port)


def _client(test: TestCase, identity: IssuedCertificate | None,
            ca: CertificateAuthority | None = None, **kwargs: Any) -> Any:
    """A certsrv http_client presenting ``identity`` (leaf+chain), with a pool closed at cleanup."""
    pool = HTTPConnectionPool(reactor)
    test.addCleanup(pool.closeCachedConnections)
    kwargs.setdefault("cert", identity.chain_pem() if identity else None)
    kwargs.setdefault("key", identity.private_key_pem() if identity else None)
    return http_client(reactor, ca=(ca or _pki().root).certificate_pem(), pool=pool, **kwargs)


async def _get_text(client: Any, url: str) -> tuple[int, str]:
    response = await client.get(url)
    return response.code, (await response.text("utf-8"))


async def _rejection(client: Any, url: str, **kwargs: Any) -> Explanation:
    """Expect the request to fail; return the failure explained."""
    try:
        response = await client.get(url)
    except Exception as failure:
        return explain(failure, **kwargs)
    raise AssertionError(f"expected a rejection, got HTTP {response.code}")


class _HandshakeTests:
    """Acceptance and rejection by the server, for one TLS version (set by subclasses)."""

    version: Any

    def url(self, path: str = "/") -> str:
        """Start a server for this test; return its URL."""
        return f"https://127.0.0.1:{_listen(cast(TestCase, self), self.version)}{path}"

    def client(self, identity: IssuedCertificate | None) -> Any:
        """A client presenting ``identity``, cleaned up after this test."""
        return _client(cast(TestCase, self), identity)

    async def test_valid_certificate(self) -> None:
        """A certificate from the trusted root is accepted; the server sees its CN."""
        code, text = await _get_text(self.client(_pki().alice), self.url())
        assert (code, text) == (200, "alice\n"), (code, text)

    async def test_no_certificate(self) -> None:
        """Without a client certificate the handshake is rejected, explained as such."""
        explanation = await _rejection(self.client(None), self.url())
        assert explanation.code == "no_certificate", explanation
        assert explanation.sentence.startswith(NO_CERTIFICATE), explanation
        assert explanation.reason is Reason.NO_CERTIFICATE

    async def test_unknown_ca(self) -> None:
        """A certificate from another CA is rejected with unknown_ca."""
        explanation = await _rejection(self.client(_pki().mallory), self.url())
        assert (explanation.code, explanation.sentence) == ("unknown_ca", UNKNOWN_CA), explanation
        assert explanation.reason is Reason.UNKNOWN_CA

    async def test_expired(self) -> None:
        """An expired certificate is rejected with certificate_expired."""
        explanation = await _rejection(self.client(_pki().expired), self.url())
        assert (explanation.code, explanation.sentence) == ("expired", EXPIRED), explanation

    async def test_server_auth_only(self) -> None:
        """A certificate without the clientAuth EKU is rejected as unsupported."""
        explanation = await _rejection(self.client(_pki().server_only), self.url())
        assert explanation.code == "bad_key_usage", explanation
        assert explanation.sentence == BAD_KEY_USAGE

    async def test_intermediate_sent_by_client(self) -> None:
        """The client sends leaf+intermediate; the server, trusting only the root, accepts."""
        code, text = await _get_text(self.client(_pki().chained), self.url())
        assert (code, text) == (200, "carol\n"), (code, text)


class TLS12Tests(_HandshakeTests, TestCase):
    """The server speaks only TLS 1.2: rejections arrive during the handshake."""

    version = TLSVersion.TLSv1_2


class TLS13Tests(_HandshakeTests, TestCase):
    """The server speaks only TLS 1.3: rejections arrive while reading the response."""

    version = TLSVersion.TLSv1_3


class ChainAndServerTests(TestCase):
    """Chains, the server's identity as this client checks it, and other server verdicts."""

    async def test_intermediates_argument(self) -> None:
        """An intermediate given separately is sent after the leaf."""
        pki = _pki()
        client = _client(self, None, cert=pki.chained.certificate_pem(),
                         key=pki.chained.private_key_pem(),
                         intermediates=pki.intermediate.certificate_pem())
        code, text = await _get_text(client, f"https://127.0.0.1:{_listen(self)}/")
        assert (code, text) == (200, "carol\n")

    async def test_missing_intermediate(self) -> None:
        """Without its intermediate, a chained certificate is rejected with unknown_ca."""
        pki = _pki()
        client = _client(self, None, cert=pki.chained.certificate_pem(),
                         key=pki.chained.private_key_pem())
        explanation = await _rejection(client, f"https://127.0.0.1:{_listen(self)}/")
        assert explanation.code == "unknown_ca"

    async def test_key_inside_certificate_file(self) -> None:
        """With no key argument, the key is taken from the certificate file."""
        alice = _pki().alice
        client = _client(self, None, cert=alice.chain_pem() + alice.private_key_pem(), key=None)
        code, text = await _get_text(client, f"https://localhost:{_listen(self)}/")
        assert (code, text) == (200, "alice\n")

    async def test_files(self) -> None:
        """Certificates and keys are read from paths as well as from bytes."""
        directory = Path(self.mktemp())
        directory.mkdir()
        _pki().alice.write(directory / "alice.pem", directory / "alice.key")
        (directory / "ca.pem").write_bytes(_pki().root.certificate_pem())
        pool = HTTPConnectionPool(reactor)
        self.addCleanup(pool.closeCachedConnections)
        client = http_client(reactor, cert=directory / "alice.pem",
                             key=str(directory / "alice.key"), ca=directory / "ca.pem", pool=pool)
        code, text = await _get_text(client, f"https://localhost:{_listen(self)}/")
        assert (code, text) == (200, "alice\n")

    async def test_server_name_mismatch(self) -> None:
        """A server certificate for another name is rejected by this client."""
        port = _listen(self, server=_pki().elsewhere)
        explanation = await _rejection(_client(self, _pki().alice), f"https://127.0.0.1:{port}/")
        assert explanation.code == "server_name_mismatch", explanation
        assert explanation.sentence == ("this client rejected the server: its certificate is "
                                        "not valid for 127.0.0.1 (server name mismatch)")

    async def test_server_untrusted(self) -> None:
        """A server certificate not issued by --ca is rejected by this client."""
        client = _client(self, _pki().alice, ca=_pki().other)
        explanation = await _rejection(client, f"https://127.0.0.1:{_listen(self)}/")
        assert explanation.code == "server_untrusted", explanation
        assert explanation.sentence == ("this client rejected the server's certificate: it was "
                                        "not issued by a CA this client trusts"), explanation

    async def test_revoked(self) -> None:
        """A certificate on the server's CRL is rejected as revoked."""
        def configure(context: SSL.Context) -> None:
            store = context.get_cert_store()
            assert store is not None
            store.add_crl(_pki().crl)
            store.set_flags(crypto.X509StoreFlags.CRL_CHECK)

        port = _listen(self, configure=configure)
        explanation = await _rejection(_client(self, _pki().revoked), f"https://127.0.0.1:{port}/")
        assert explanation.code == "revoked", explanation
        assert explanation.reason is Reason.REVOKED

    async def test_internal_error(self) -> None:
        """A server-side check that fails a good certificate shows as internal_error."""
        def refuse(connection: SSL.Connection, certificate: crypto.X509, errno: int,
                   depth: int, ok: int) -> bool:
            return bool(ok) and depth > 0

        def configure(context: SSL.Context) -> None:
            context.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT, refuse)

        port = _listen(self, configure=configure)
        explanation = await _rejection(_client(self, _pki().alice), f"https://127.0.0.1:{port}/")
        assert explanation.code == "internal_error", explanation

    async def test_connection_refused(self) -> None:
        """Nothing listening: connection_refused."""
        port = reactor.listenTCP(0, Factory(), interface="127.0.0.1")
        number = port.getHost().port
        await port.stopListening()
        explanation = await _rejection(_client(self, _pki().alice), f"https://127.0.0.1:{number}/")
        assert explanation.code == "connection_refused", explanation

    async def test_timeout(self) -> None:
        """A server that never answers: timeout."""
        request = _client(self, _pki().alice).get(f"https://127.0.0.1:{_silent(self)}/")
        request.addTimeout(0.3, reactor)
        try:
            await request
        except Exception as failure:
            explanation = explain(failure)
        else:
            raise AssertionError("expected a timeout")
        assert explanation.code == "timeout", explanation

    async def test_forbidden(self) -> None:
        """A 403 answer is explained with the server's reason from the body."""
        client = _client(self, _pki().alice)
        response = await client.get(f"https://127.0.0.1:{_listen(self)}/forbidden")
        try:
            await raise_for_status(response)
        except HTTPStatusError as status:
            explanation = explain(status)
        else:
            raise AssertionError("expected HTTPStatusError")
        assert explanation.code == "forbidden"
        assert explanation.http_status == 403
        assert explanation.sentence == f"{FORBIDDEN}: {_FORBIDDEN}"

    async def test_ok_passes_status_check(self) -> None:
        """raise_for_status passes a 2xx response through."""
        response = await _client(self, _pki().alice).get(f"https://127.0.0.1:{_listen(self)}/")
        assert (await raise_for_status(response)) is response
        assert (await content(response)) == b"alice\n"


class LoadingTests(TestCase):
    """Bad local files are ConfigurationErrors naming the file; keys never leak into messages."""

    def setUp(self) -> None:
        self.directory = Path(self.mktemp())
        self.directory.mkdir()
        self.ca = _pki().root.certificate_pem()

    def problem(self, cert: Any, key: Any, ca: Any = None) -> ConfigurationError:
        try:
            client_tls_policy(cert, key, ca or self.ca)
        except ConfigurationError as problem:
            return problem
        raise AssertionError("expected ConfigurationError")

    def test_mismatched_key(self) -> None:
        """A key that is not the certificate's is refused, naming the key file."""
        key = self.directory / "other.key"
        key.write_bytes(_pki().mallory.private_key_pem())
        problem = self.problem(_pki().alice.chain_pem(), key)
        assert (problem.source, problem.problem) == (
            str(key), "private key does not match the certificate")

    def test_leaf_not_first(self) -> None:
        """A chain file with the leaf last is refused with a hint."""
        chained = _pki().chained
        cert = _pki().intermediate.certificate_pem() + chained.certificate_pem()
        problem = self.problem(cert, chained.private_key_pem())
        assert problem.problem.startswith("private key does not match the certificate (")
        assert "first" in problem.problem

    def test_missing_file(self) -> None:
        """A missing certificate file is named."""
        path = str(self.directory / "absent.pem")
        problem = self.problem(path, _pki().alice.private_key_pem())
        assert problem.source == path and "does not exist" in problem.problem

    def test_garbage_certificate(self) -> None:
        """A file that is no certificate is named."""
        path = self.directory / "garbage.pem"
        path.write_bytes(b"hello, I am not a certificate\n")
        problem = self.problem(path, _pki().alice.private_key_pem())
        assert problem.source == str(path), problem

    def test_garbage_ca(self) -> None:
        """A CA file without certificates is named."""
        path = self.directory / "ca.pem"
        path.write_bytes(_pki().alice.private_key_pem())
        problem = self.problem(_pki().alice.chain_pem(), _pki().alice.private_key_pem(), path)
        assert problem.source == str(path) and "no certificate" in problem.problem

    def test_damaged_key_not_echoed(self) -> None:
        """A damaged key is refused without quoting any of it."""
        pem = _pki().alice.private_key_pem()
        lines = pem.splitlines()
        damaged = b"\n".join([lines[0], lines[1][:20] + b"!!!" + lines[1][23:], *lines[2:]])
        key = self.directory / "damaged.key"
        key.write_bytes(damaged)
        problem = self.problem(_pki().alice.chain_pem(), key)
        assert problem.source == str(key)
        for line in lines[1:-1]:
            assert line.decode()[:16] not in str(problem)

    def test_unreadable_key(self) -> None:
        """A key path that cannot be read as a file is named."""
        problem = self.problem(_pki().alice.chain_pem(), self.directory)
        assert (problem.source, problem.problem) == (
            str(self.directory), "private key file is a directory")

    def test_self_signed_is_loaded(self) -> None:
        """A self-signed client certificate loads (the server decides whether to pin it)."""
        identity = self_signed_client("pinned")
        policy = client_tls_policy(identity.certificate_pem(), identity.private_key_pem(), self.ca)
        assert policy.credentials is not None
        assert "PRIVATE" not in repr(policy.credentials)


def _tls_failure(text: str, wrapper: type[Exception] = ResponseNeverReceived) -> Exception:
    """What treq raises when OpenSSL reports ``text``."""
    return wrapper([Failure(SSL.Error([("SSL routines", "", text)]))])


class ExplainTests(TestCase):
    """explain() on failures that are awkward to produce with a live server."""

    def test_alerts(self) -> None:
        """Each alert the server may send has its code."""
        cases = {
            "tlsv13 alert certificate required": "no_certificate",
            "sslv3 alert handshake failure": "no_certificate",
            "tlsv1 alert unknown ca": "unknown_ca",
            "tls alert certificate expired": "expired",
            "sslv3 alert certificate revoked": "revoked",
            "tls alert unsupported certificate": "bad_key_usage",
            "sslv3 alert bad certificate": "bad_certificate",
            "tlsv1 alert internal error": "internal_error",
            "tlsv1 alert decrypt error": "bad_signature",
            "tlsv1 alert protocol version": "protocol_version",
            "tlsv1 alert no application protocol": "handshake_failed",
            "certificate verify failed": "server_untrusted",
            "wrong version number": "not_tls",
        }
        for text, code in cases.items():
            for wrapper in (ResponseNeverReceived, ResponseFailed):
                assert explain(_tls_failure(text, wrapper)).code == code, (text, wrapper)
            assert explain(Failure(_tls_failure(text))).code == code, text

    def test_handshake_failure_with_certificate(self) -> None:
        """A handshake failure after presenting a certificate is not blamed on its absence."""
        explanation = explain(_tls_failure("sslv3 alert handshake failure"), sent_certificate=True)
        assert explanation.code == "handshake_failed"

    def test_connection_lost(self) -> None:
        """A bare connection loss during the exchange is connection_closed."""
        lost = ResponseNeverReceived([Failure(error.ConnectionLost())])
        assert explain(lost).code == "connection_closed"

    def test_mismatch_from_verification_error(self) -> None:
        """service_identity's VerificationError wins over the generic verify failure."""
        from service_identity.exceptions import DNSMismatch
        from service_identity.hazmat import DNS_ID

        mismatch = VerificationError(errors=[DNSMismatch(mismatched_id=DNS_ID("api.example"))])
        failure = ResponseNeverReceived([Failure(mismatch)])
        explanation = explain(failure)
        assert explanation.code == "server_name_mismatch"
        assert "api.example" in explanation.sentence

    def test_timeouts(self) -> None:
        """Cancellation and timeouts are timeout."""
        for exc in (defer.TimeoutError(), error.TimeoutError(), defer.CancelledError(),
                    ResponseNeverReceived([Failure(defer.CancelledError())])):
            assert explain(exc).code == "timeout", exc

    def test_json_reason(self) -> None:
        """A JSON body's reason code is turned into certsrv's sentence."""
        status = HTTPStatusError(403, "Forbidden", b'{"reason": "not_pinned"}', "application/json")
        assert explain(status).sentence == (
            f"{FORBIDDEN}: {Reason.NOT_PINNED.sentence}")

    def test_certsrv_bodies(self) -> None:
        """certsrv's own 403 bodies, text and JSON, give the same sentence."""
        sentence = f"{FORBIDDEN}: {Reason.EXPIRED.sentence}"
        text = f"Forbidden: {Reason.EXPIRED.sentence} (expired)\n".encode()
        document = json.dumps({"error": "forbidden", "reason": "expired",
                               "message": Reason.EXPIRED.sentence}).encode()
        assert explain(HTTPStatusError(403, "Forbidden", text, "text/plain")).sentence == (
            f"{sentence} (expired)")
        assert explain(HTTPStatusError(403, "Forbidden", document,
                                       "application/json")).sentence == sentence

    def test_html_reason(self) -> None:
        """Twisted's HTML error pages are reduced to their text."""
        body = (b"\n<html>\n  <head><title>404 - No Such Resource</title></head>\n  <body>\n"
                b"    <h1>No Such Resource</h1>\n    <p>No such child resource.</p>\n"
                b"  </body>\n</html>\n")
        explanation = explain(HTTPStatusError(404, "Not Found", body, "text/html"))
        assert explanation.code == "http_error"
        assert explanation.sentence == (
            "the server answered 404 Not Found: No Such Resource No such child resource.")

    def test_unknown(self) -> None:
        """Anything else still gets a sentence."""
        explanation = explain(ValueError("odd"))
        assert explanation.code == "unknown" and "odd" in explanation.sentence


class CommandLineTests(TestCase):
    """certsrv-client in a subprocess, against the in-test server."""

    def setUp(self) -> None:
        self.directory = Path(self.mktemp())
        self.directory.mkdir()
        pki = _pki()
        (self.directory / "ca.pem").write_bytes(pki.root.certificate_pem())
        for name in ("alice", "mallory"):
            identity: IssuedCertificate = getattr(pki, name)
            identity.write(self.directory / f"{name}.pem", self.directory / f"{name}.key")

    async def run_client(self, *args: str) -> tuple[str, str, int]:
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            [str(_REPO), *filter(None, [os.environ.get("PYTHONPATH")])]))
        out, err, code = await getProcessOutputAndValue(
            sys.executable, ["-m", "certsrv.client.cli", *args], env=env, path=str(self.directory))
        assert b"Traceback" not in err, err
        return out.decode(), err.decode(), code

    def identity(self, name: str = "alice") -> list[str]:
        return ["--cert", f"{name}.pem", "--key", f"{name}.key", "--ca", "ca.pem"]

    async def test_ok(self) -> None:
        """2xx: status line and body on stdout, exit 0."""
        url = f"https://localhost:{_listen(self)}/"
        out, err, code = await self.run_client(url, *self.identity())
        assert (out, err, code) == ("HTTP/1.1 200 OK\nalice\n", "", 0), (out, err, code)

    async def test_json(self) -> None:
        """--json prints one JSON object."""
        url = f"https://127.0.0.1:{_listen(self)}/"
        out, err, code = await self.run_client(url, *self.identity(), "--json",
                                               "--header", "X-Test: 1")
        document = json.loads(out)
        assert (document["status"], document["body"], code) == (200, "alice\n", 0), out

    async def test_forbidden(self) -> None:
        """An HTTP error status: exit 1, the server's reason on stderr."""
        url = f"https://127.0.0.1:{_listen(self)}/forbidden"
        out, err, code = await self.run_client(url, *self.identity())
        assert code == 1, (out, err, code)
        assert out.startswith("HTTP/1.1 403 Forbidden\n"), out
        assert err == f"certsrv-client: {FORBIDDEN}: {_FORBIDDEN}\n"

    async def test_unknown_ca(self) -> None:
        """A rejected certificate: exit 2 and one sentence on stderr."""
        url = f"https://127.0.0.1:{_listen(self)}/"
        out, err, code = await self.run_client(url, *self.identity("mallory"))
        assert (out, err, code) == ("", f"certsrv-client: {UNKNOWN_CA}\n", 2), (out, err, code)

    async def test_mismatched_key(self) -> None:
        """A key that does not match: exit 2 with the ConfigurationError line."""
        out, err, code = await self.run_client(
            "https://127.0.0.1:1/", "--cert", "alice.pem", "--key", "mallory.key", "--ca", "ca.pem")
        assert (out, err, code) == (
            "", "certsrv-client: mallory.key: private key does not match the certificate\n", 2)

    async def test_timeout(self) -> None:
        """No answer within --timeout: exit 2."""
        url = f"https://127.0.0.1:{_silent(self)}/"
        out, err, code = await self.run_client(url, *self.identity(), "--timeout", "0.5")
        assert (code, err) == (2, "certsrv-client: the server did not answer in time (timeout)\n")

    def test_usage_errors(self) -> None:
        """Plain http:// and a missing --cert are refused with exit 2, without a reactor."""
        stderr = io.StringIO()
        self.patch(sys, "stderr", stderr)
        assert main(["http://127.0.0.1/", "--cert", "a.pem"]) == 2
        assert main(["https://127.0.0.1/"]) == 2
        assert "https://" in stderr.getvalue() and "--cert" in stderr.getvalue()


_PASSPHRASE = b"correct horse battery"


class SafeAtRestTests(TestCase):
    """A PKCS#12 file or an encrypted key, decrypted with the passphrase given as bytes or
    as a source; refusals name the file and never the passphrase."""

    def setUp(self) -> None:
        alice = _pki().alice
        self.p12 = pkcs12_bytes("alice", alice.private_key, alice.certificate,
                                [_pki().root.certificate], _PASSPHRASE)
        self.encrypted = encrypted_key_pem(alice.private_key, _PASSPHRASE)

    async def test_pkcs12_and_encrypted_key(self) -> None:
        url = f"https://localhost:{_listen(self)}/"
        for kwargs in ({"cert": self.p12, "key": None, "passphrase": _PASSPHRASE},
                       {"cert": _pki().alice.chain_pem(), "key": self.encrypted,
                        "passphrase": Passphrase.from_env("PW", {"PW": _PASSPHRASE.decode()})},
                       {"cert": _pki().alice.chain_pem() + self.encrypted, "key": None,
                        "passphrase": _PASSPHRASE}):
            client = _client(self, None, **kwargs)
            assert await _get_text(client, url) == (200, "alice\n"), kwargs

    def test_pkcs12_chain_is_sent(self) -> None:
        chained = _pki().chained
        p12 = pkcs12_bytes("carol", chained.private_key, chained.certificate,
                           [_pki().intermediate.certificate], _PASSPHRASE)
        credentials = client_tls_policy(p12, None, _pki().root.certificate_pem(),
                                        passphrase=_PASSPHRASE).credentials
        assert credentials is not None
        assert credentials.chain == (_pki().intermediate.certificate,)

    def test_refusals(self) -> None:
        ca = _pki().root.certificate_pem()
        cases = [
            ((self.p12, _pki().alice.private_key_pem(), b"x" * 8),
             "this PKCS#12 file holds the private key; give no separate key"),
            ((self.p12, None, b"wrong passphrase"),
             "the passphrase from the caller does not decrypt this PKCS#12 file (or it is "
             "damaged)"),
            ((_pki().alice.chain_pem(), self.encrypted, b"wrong passphrase"),
             "the passphrase from the caller does not decrypt this key"),
            ((_pki().alice.chain_pem(), self.encrypted, None),
             "the key is encrypted and no passphrase was given"),
        ]
        for (cert, key, passphrase), message in cases:
            with self.assertRaises(ConfigurationError) as caught:
                client_tls_policy(cert, key, ca, passphrase=passphrase)
            assert caught.exception.problem == message, caught.exception
            assert b"wrong passphrase".decode() not in str(caught.exception)
