"""The one gate, from outside: one view of the request, one verification, one revocation decision.

Each finding of the security review (issue "One gate") has its regression test here, at the
level it was found: real TLS over 127.0.0.1 with curl, Python's ``ssl`` and the ``h2``
package, a Klein app, and real nginx in front.
"""

from __future__ import annotations

import json
import socket
import ssl
from functools import cache
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet import defer, reactor, threads
from twisted.internet.task import deferLater
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase
from twisted.web import resource, server

from certsrv import identity_of
from certsrv.access.policy import Claims, parse_policy
from certsrv.pki import CertificateAuthority, IssuedCertificate
from certsrv.server import options as _tap
from certsrv.server.reload import Reloader
from tests._servers import NginxFront, run
from tests._support import (
    DAY,
    captured_events,
    client_tls_options,
    crl_pem,
    exchange,
    make_server_factory,
    options,
    pieces,
    shared_pki,
    utcnow,
    write_pem,
)
from tests._support import Files as _Files
from tests._support import proxy_certs as _certs

# --- the application behind the gate: it records what it was dispatched ----------------------

RECEIVED: list[tuple[bytes, tuple[bytes, ...]]] = []


class _Recorder(resource.Resource):
    """Any path: records the method and the segments twisted.web dispatched."""

    isLeaf = True

    def render(self, request: server.Request) -> bytes:
        RECEIVED.append((request.method, tuple(request.prepath + request.postpath)))
        identity = identity_of(request)
        request.setHeader(b"content-type", b"application/json")
        return json.dumps({"subject": identity.subject if identity else None,
                           "segments": [s.decode("latin-1") for s in request.prepath
                                        + request.postpath]}).encode()


def recording_app() -> resource.IResource:
    """``--app tests.e2e.test_gate.recording_app``: ``/public`` and ``/admin`` record requests."""
    root = resource.Resource()
    root.putChild(b"public", _Recorder())
    root.putChild(b"admin", _Recorder())
    root.putChild(b"", _Recorder())
    return root


def _make_klein() -> Any:
    try:
        from klein import Klein
    except ImportError:
        return None
    app = Klein()

    @app.route("/admin/delete", methods=["POST"])
    def delete(request: server.Request) -> bytes:
        RECEIVED.append((request.method, (b"admin", b"delete")))
        return b"deleted\n"

    return app


klein_delete = _make_klein()

POLICY = """
[[rule]]
name = "public"
path = "/public"
public = true

[[rule]]
name = "admin-post"
path = "/admin"
methods = ["POST"]
[rule.allow]
subject = { CN = "admin" }

[[rule]]
name = "everything"
path = "/"
[rule.allow]
subject = { CN = "admin" }
"""


@cache
def _people() -> dict[str, IssuedCertificate]:
    root = shared_pki().root
    return {"admin": root.issue_client("admin"), "carol": root.issue_client("carol")}


# --- blocking clients, run in threads while the reactor serves -------------------------------


class _Client:
    """A TLS client socket from Python's ``ssl``: HTTP/1.1 keep-alive or HTTP/2."""

    def __init__(self, files: _Files, port: int, cert: IssuedCertificate | None,
                 alpn: str = "http/1.1") -> None:
        context = ssl.create_default_context(cafile=files.ca)
        if cert is not None:
            name = cert.fingerprint[:16]
            context.load_cert_chain(
                write_pem(files.dir, f"{name}.pem", cert.chain_pem()),
                write_pem(files.dir, f"{name}.key", cert.private_key_pem(), 0o600))
        context.set_alpn_protocols([alpn])
        raw = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.sock = context.wrap_socket(raw, server_hostname="localhost")
        self.buffer = b""
        self.h2: Any = None

    def request(self, method: str, target: str, body: bytes = b"") -> tuple[int, bytes]:
        """One HTTP/1.1 request on the kept-alive connection; status and body."""
        head = (f"{method} {target} HTTP/1.1\r\nHost: localhost\r\n"
                f"Accept: application/json\r\nContent-Length: {len(body)}\r\n\r\n")
        self.sock.sendall(head.encode("latin-1") + body)
        while b"\r\n\r\n" not in self.buffer:
            self._read()
        head_bytes, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        lines = head_bytes.split(b"\r\n")
        status = int(lines[0].split()[1])
        fields = {name.strip().lower(): value.strip()
                  for name, _, value in (line.partition(b":") for line in lines[1:])}
        if fields.get(b"transfer-encoding") == b"chunked":
            return status, self._chunked()
        length = int(fields.get(b"content-length", b"0"))
        while len(self.buffer) < length:
            self._read()
        body_bytes, self.buffer = self.buffer[:length], self.buffer[length:]
        return status, body_bytes

    def _chunked(self) -> bytes:
        body = b""
        while True:
            while b"\r\n" not in self.buffer:
                self._read()
            size_line, _, self.buffer = self.buffer.partition(b"\r\n")
            size = int(size_line.split(b";")[0], 16)
            while len(self.buffer) < size + 2:
                self._read()
            body, self.buffer = body + self.buffer[:size], self.buffer[size + 2:]
            if size == 0:
                return body

    def h2_request(self, method: str, target: str) -> tuple[int, bytes]:
        """One HTTP/2 request (a new stream on the same connection); status and body."""
        from h2.config import H2Configuration
        from h2.connection import H2Connection
        from h2.events import DataReceived, ResponseReceived, StreamEnded, StreamReset

        if self.h2 is None:
            self.h2 = H2Connection(H2Configuration(
                client_side=True, validate_outbound_headers=False,
                normalize_outbound_headers=False))
            self.h2.initiate_connection()
        conn = self.h2
        stream = conn.get_next_available_stream_id()
        conn.send_headers(stream, [(":method", method), (":path", target),
                                   (":scheme", "https"), (":authority", "localhost"),
                                   ("accept", "application/json")], end_stream=True)
        self.sock.sendall(conn.data_to_send())
        status, body = 0, b""
        while True:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("the server closed the HTTP/2 connection")
            for event in conn.receive_data(data):
                if isinstance(event, ResponseReceived) and event.stream_id == stream:
                    status = int(dict(event.headers)[b":status"])
                elif isinstance(event, DataReceived) and event.stream_id == stream:
                    body += event.data
                    conn.acknowledge_received_data(event.flow_controlled_length, stream)
                elif isinstance(event, StreamReset) and event.stream_id == stream:
                    raise ConnectionError(f"stream reset: {event.error_code}")
                elif isinstance(event, StreamEnded) and event.stream_id == stream:
                    self.sock.sendall(conn.data_to_send())
                    return status, body
            self.sock.sendall(conn.data_to_send())

    def _read(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError(f"closed by the server; unread: {self.buffer!r}")
        self.buffer += data

    def close(self) -> None:
        self.sock.close()


def _reason(body: bytes) -> str | None:
    try:
        return str(json.loads(body)["reason"])
    except (ValueError, KeyError):
        return None


class _Served(TestCase):
    """A certsrv built from the plugin's options, listening on 127.0.0.1."""

    timeout = 60

    def setUp(self) -> None:
        self.files = _Files(self.mktemp())
        self.pki = shared_pki()
        del RECEIVED[:]

    def serve(self, *argv: str) -> tuple[int, Reloader]:
        factory, reloader = pieces(_tap.makeService(options(self.files.argv(*argv),
                                                            reactor)))
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")  # type: ignore[attr-defined]
        self.addCleanup(port.stopListening)
        return int(port.getHost().port), reloader

    def client(self, port: int, cert: IssuedCertificate | None, alpn: str = "http/1.1"
               ) -> defer.Deferred[_Client]:
        connecting: defer.Deferred[_Client] = threads.deferToThread(
            _Client, self.files, port, cert, alpn)

        def remember(client: _Client) -> _Client:
            self.addCleanup(client.close)
            return client
        return connecting.addCallback(remember)

    def policy_argv(self) -> tuple[str, ...]:
        path = write_pem(self.files.dir, "policy.toml", POLICY.encode())
        return ("--client-cert", "optional", "--policy", path,
                "--app", "tests.e2e.test_gate.recording_app")


# --- finding 1 and 2: one view of the request ------------------------------------------------


class RequestViewTests(_Served):
    """What the policy decides on is what the resource tree receives, on both protocols."""

    @defer.inlineCallbacks
    def test_fragment_cannot_smuggle_a_path_http11(self) -> Any:
        port, _ = self.serve(*self.policy_argv())
        client = yield self.client(port, None)
        status, body = yield threads.deferToThread(
            client.request, "GET", "/public#/../admin/secret")
        self.assertEqual((status, _reason(body)), (400, "bad_path"))
        status, body = yield threads.deferToThread(client.request, "GET", "/public/x")
        self.assertEqual(status, 200, body)
        self.assertEqual(RECEIVED, [(b"GET", (b"public", b"x"))])

    @defer.inlineCallbacks
    def test_fragment_cannot_smuggle_a_path_http2(self) -> Any:
        port, _ = self.serve(*self.policy_argv())
        client = yield self.client(port, None, alpn="h2")
        for target in ("/public#/../admin/secret", "/public%23/../admin", "/public/../admin",
                       "/public/%2e%2e/admin", "/public%2fadmin"):
            status, body = yield threads.deferToThread(client.h2_request, "GET", target)
            self.assertEqual((status, _reason(body)), (400, "bad_path"), target)
        status, body = yield threads.deferToThread(client.h2_request, "GET", "/admin/secret")
        self.assertEqual((status, _reason(body)), (403, "no_certificate"))
        self.assertEqual(RECEIVED, [])

    @defer.inlineCallbacks
    def test_lowercase_method_is_400_not_a_bypass(self) -> Any:
        """``curl -X post`` against a Klein POST route whose rule needs CN=admin."""
        if klein_delete is None:
            raise SkipTest("klein is not installed (it is in the 'test' extra)")
        policy = write_pem(self.files.dir, "policy.toml", POLICY.encode())
        port, _ = self.serve("--client-cert", "optional", "--policy", policy,
                             "--app", "tests.e2e.test_gate.klein_delete")
        base = ["curl", "-sS", "--max-time", "20", "--cacert", self.files.ca,
                "-H", "Accept: application/json", "-w", "\n%{http_code}",
                "--resolve", f"localhost:{port}:127.0.0.1",
                f"https://localhost:{port}/admin/delete"]
        for method, status, reason in (("post", 400, "bad_method"), ("Post", 400, "bad_method"),
                                       ("POST", 403, "no_certificate")):
            out, err, code = yield run([*base[:1], "-X", method, *base[1:]])
            self.assertEqual(code, 0, err)
            body, _, got = out.rpartition(b"\n")
            self.assertEqual((int(got), _reason(body)), (status, reason), method)
        self.assertEqual(RECEIVED, [])
        admin = _people()["admin"]
        name = admin.fingerprint[:16]
        out, err, code = yield run([
            *base[:1], "-X", "POST",
            "--cert", write_pem(self.files.dir, f"{name}.pem", admin.chain_pem()),
            "--key", write_pem(self.files.dir, f"{name}.key", admin.private_key_pem(), 0o600),
            *base[1:]])
        self.assertTrue(out.endswith(b"\n200"), (out, err))
        self.assertEqual(RECEIVED, [(b"POST", (b"admin", b"delete"))])


_SEGMENT = st.sampled_from([
    "public", "admin", "x", "", ".", "..", "%2e", "%2E%2e", "%2f", "%2F", "#", "%23", ";",
    "%3b", "%00", "%5c", "\\", "a%20b", "caf%C3%A9", "%", "%zz", "?q=1", "a?b=/..",
])


@cache
def _view_server() -> Any:
    """One in-memory certsrv with the policy and the recording app (hypothesis reuses it)."""
    files = _Files(_view_dir())
    path = write_pem(files.dir, "policy.toml", POLICY.encode())
    parsed = options(files.argv("--client-cert", "optional", "--policy", path,
                                "--app", "tests.e2e.test_gate.recording_app"))
    return parsed


@cache
def _view_dir() -> str:
    import tempfile

    return tempfile.mkdtemp(prefix="certsrv-view-")


class RequestViewPropertyTests(SynchronousTestCase):
    """Differential: for generated targets and methods, the rule the policy applied is the
    one an independent reading of the dispatched segments calls for, and nothing ambiguous
    is dispatched at all."""

    @settings(max_examples=150, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(segments=st.lists(_SEGMENT, min_size=0, max_size=5),
           method=st.sampled_from(["GET", "POST", "get", "post", "PoST", "DELETE"]),
           who=st.sampled_from([None, "admin", "carol"]))
    def test_policy_decides_on_what_is_dispatched_http11(
            self, segments: list[str], method: str, who: str | None) -> None:
        target = "/" + "/".join(segments)
        parsed = _view_server()
        factory = make_server_factory(parsed.settings, verifier=parsed.verifier,
                                      app=parsed.app)
        del RECEIVED[:]
        cert = _people()[who] if who else None
        request = (f"{method} {target} HTTP/1.1\r\nHost: localhost\r\n"
                   "Accept: application/json\r\nConnection: close\r\n\r\n").encode("latin-1")
        with captured_events("certsrv.policy") as events:
            result = exchange(factory, client_tls_options(shared_pki(), cert), request)
        self.check(target, method, result.status, events)

    @settings(max_examples=100, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(segments=st.lists(_SEGMENT, min_size=0, max_size=5),
           method=st.sampled_from(["GET", "POST", "get", "post", "PoST", "DELETE"]),
           who=st.sampled_from([None, "admin", "carol"]))
    def test_policy_decides_on_what_is_dispatched_http2(
            self, segments: list[str], method: str, who: str | None) -> None:
        from certsrv.testing import MemoryServer

        target = "/" + "/".join(segments)
        parsed = _view_server()
        factory = make_server_factory(parsed.settings, verifier=parsed.verifier,
                                      app=parsed.app, http2=True)
        del RECEIVED[:]
        cert = _people()[who] if who else None
        server = MemoryServer(factory, [shared_pki().root.certificate])
        with captured_events("certsrv.policy") as events:
            response = server.request(method, target, client=cert, http2=True,
                                      headers=[("accept", "application/json")])
        self.check(target, method, response.status, events)

    def check(self, target: str, method: str, status: int | None,
              events: list[dict[str, Any]]) -> None:
        """The decision logged, the status answered, and what the app received agree."""
        decided = [e for e in events if "policy_reason" in e]
        if status == 501:
            # HTTP/1.1: a method llhttp does not know (methods are case-sensitive) is refused
            # by the parser, before any policy or application.
            self.assertNotIn(method, ("GET", "POST", "DELETE"))
            self.assertEqual((RECEIVED, decided), ([], []), target)
            return
        self.assertEqual(len(decided), 1, (target, status))
        if status == 400:
            self.assertEqual(RECEIVED, [], target)
            self.assertIn(decided[0]["policy_reason"], ("bad_path", "bad_method"))
            return
        rule = decided[0]["policy_rule"]
        if not RECEIVED:
            self.assertIn(status, (403, 404), target)
            return
        got_method, got = RECEIVED[0]
        self.assertEqual(got_method, method.encode())
        self.assertEqual(status, 200, target)
        # Independently: which rule do the dispatched segments fall under?
        first = got[0] if got else b""
        expected = ("public" if first == b"public" else
                    "admin-post" if first == b"admin" and method == "POST" else "everything")
        self.assertEqual(rule, expected, (target, got))
        for segment in got[:-1]:
            self.assertNotIn(segment, (b"", b".", b".."), target)
        for segment in got:
            for bad in (b"/", b"\\", b";", b"\x00", b"#"):
                self.assertNotIn(bad, segment, target)


# --- findings 5 and 6: one revocation decision, on every request, against current files ---


class ReloadReachesOpenConnectionsTests(_Served):
    """A reload (CRL, CA, pins) reaches keep-alive HTTP/1.1 and HTTP/2 connections."""

    def crl_argv(self, *revoked: IssuedCertificate) -> tuple[str, ...]:
        self.crl = write_pem(self.files.dir, "crl.pem", crl_pem(self.pki.root, *revoked))
        return ("--crl", self.crl)

    @defer.inlineCallbacks
    def check_revoked_on_next_request(self, alpn: str) -> Any:
        carol = _people()["carol"]
        port, reloader = self.serve(*self.crl_argv())
        client = yield self.client(port, carol, alpn=alpn)
        ask = client.request if alpn == "http/1.1" else client.h2_request
        status, body = yield threads.deferToThread(ask, "GET", "/secure")
        self.assertEqual(status, 200, body)
        write_pem(self.files.dir, "crl.pem", crl_pem(self.pki.root, carol))
        with captured_events() as events:
            self.assertTrue(reloader.reload("CRL file changed"))
            status, body = yield threads.deferToThread(ask, "GET", "/secure")
        self.assertEqual((status, _reason(body)), (403, "revoked"), body)
        rejected = [e for e in events if e.get("decision") == "rejected"]
        self.assertEqual([(e["reason"], e["stage"]) for e in rejected],
                         [("revoked", "request")])

    def test_crl_change_reaches_keepalive_http11(self) -> Any:
        return self.check_revoked_on_next_request("http/1.1")

    def test_crl_change_reaches_open_http2(self) -> Any:
        return self.check_revoked_on_next_request("h2")

    @defer.inlineCallbacks
    def test_ca_removed_on_reload(self) -> Any:
        other = CertificateAuthority.create("Second Root CA")
        second = write_pem(self.files.dir, "second.pem", other.certificate_pem())
        port, reloader = self.serve("--ca", second)
        client = yield self.client(port, other.issue_client("dora"))
        status, _ = yield threads.deferToThread(client.request, "GET", "/secure")
        self.assertEqual(status, 200)
        write_pem(self.files.dir, "second.pem", CertificateAuthority.create(
            "Replacement Root CA").certificate_pem())
        self.assertTrue(reloader.reload("SIGHUP"))
        status, body = yield threads.deferToThread(client.request, "GET", "/secure")
        self.assertEqual((status, _reason(body)), (403, "unknown_ca"), body)
        # Clients of the CA still configured go on working on their open connections.
        alice = yield self.client(port, self.pki.client)
        status, _ = yield threads.deferToThread(alice.request, "GET", "/secure")
        self.assertEqual(status, 200)

    @defer.inlineCallbacks
    def test_pin_removed_on_reload(self) -> Any:
        selfie = self.pki.client_cert("self_signed")
        pins = write_pem(self.files.dir, "pins.txt", f"{selfie.fingerprint}\n".encode())
        port, reloader = self.serve("--allowed-types", "all", "--pins", pins)
        client = yield self.client(port, selfie)
        status, _ = yield threads.deferToThread(client.request, "GET", "/secure")
        self.assertEqual(status, 200)
        write_pem(self.files.dir, "pins.txt", f"{'ab' * 32}\n".encode())
        self.assertTrue(reloader.reload("SIGHUP"))
        status, body = yield threads.deferToThread(client.request, "GET", "/secure")
        self.assertEqual((status, _reason(body)), (403, "not_pinned"), body)


class OneRevocationDecisionTests(_Served):
    """Every source decides together: revoked by any, good from any authority, unknown only
    when no source could answer (finding 6)."""

    def setUp(self) -> None:
        super().setUp()
        # A responder that is down: nothing listens on this port.
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            down = s.getsockname()[1]
        self.ca = CertificateAuthority.create("OCSP-down Root CA",
                                              ocsp_url=f"http://127.0.0.1:{down}/")
        self.ca_file = write_pem(self.files.dir, "ocsp-ca.pem", self.ca.certificate_pem())

    @defer.inlineCallbacks
    def test_current_crl_good_and_responder_down_is_good(self) -> Any:
        erin = self.ca.issue_client("erin")
        crl = write_pem(self.files.dir, "crl.pem", crl_pem(self.ca))
        port, _ = self.serve("--ca", self.ca_file, "--crl", crl)
        client = yield self.client(port, erin)
        with captured_events() as events:
            status, body = yield threads.deferToThread(client.request, "GET", "/secure")
        self.assertEqual(status, 200, body)
        decided = [e for e in events if e.get("reason") == "revocation_fallback"]
        self.assertEqual([(e["source"], e["subject"]) for e in decided],
                         [("crl-file", "CN=erin")])
        self.assertIn("ocsp could not answer", decided[0]["detail"])

    @defer.inlineCallbacks
    def test_listed_in_crl_and_responder_down_is_revoked(self) -> Any:
        frank = self.ca.issue_client("frank")
        crl = write_pem(self.files.dir, "crl.pem", crl_pem(self.ca, frank))
        port, _ = self.serve("--ca", self.ca_file, "--crl", crl)
        # TLS 1.2: the alert comes inside the handshake, where curl reports it.
        out, err, code = yield run(["curl", "-sS", "-v", "--tls-max", "1.2", "--max-time", "20",
                                    "--cacert", self.files.ca,
                                    "--cert", write_pem(self.files.dir, "f.pem",
                                                        frank.chain_pem()),
                                    "--key", write_pem(self.files.dir, "f.key",
                                                       frank.private_key_pem(), 0o600),
                                    "--resolve", f"localhost:{port}:127.0.0.1",
                                    f"https://localhost:{port}/secure"])
        self.assertNotEqual(code, 0)
        self.assertIn(b"alert certificate revoked", err)

    @defer.inlineCallbacks
    def test_no_source_answers_is_unknown(self) -> Any:
        grace = self.ca.issue_client("grace")
        port, _ = self.serve("--ca", self.ca_file)
        client = yield self.client(port, grace)
        status, body = yield threads.deferToThread(client.request, "GET", "/secure")
        self.assertEqual((status, _reason(body)), (403, "revocation_unknown"), body)


# --- finding 7: IA5 names compare in ASCII only ----------------------------------------------


def _with_raw_dns(ca: CertificateAuthority, name: str) -> IssuedCertificate:
    encoded = name.encode("utf-8")
    general_name = b"\x82" + bytes([len(encoded)]) + encoded
    san = b"\x30" + bytes([len(general_name)]) + general_name
    return ca.issue_client("kube", extra_extensions=[(x509.UnrecognizedExtension(
        ExtensionOID.SUBJECT_ALTERNATIVE_NAME, san), False)])


class UnicodeFoldingTests(SynchronousTestCase):
    """A CA-issued DNS SAN with U+212A KELVIN SIGN does not match ``kube.svc.example.org``."""

    def test_kelvin_sign_matches_nothing(self) -> None:
        pki = shared_pki()
        kelvin = _with_raw_dns(pki.root, "\u212aube.svc.example.org")
        plain = _with_raw_dns(pki.root, "Kube.svc.example.org")
        rules = parse_policy('[[rule]]\npath = "/"\n[rule.allow]\n'
                             'dns = ["kube.svc.example.org"]\n', "p.toml")
        from certsrv.x509.identity import ClientIdentity

        with captured_events("certsrv.policy") as events:
            claims = Claims(ClientIdentity.from_certificate(kelvin.certificate))
        self.assertEqual(claims.dns, frozenset())
        self.assertEqual([e["reason"] for e in events], ["non_ascii_san"])
        self.assertEqual(rules.decide("/x", "GET", claims).reason, "not_allowed")
        plain_claims = Claims(ClientIdentity.from_certificate(plain.certificate))
        self.assertEqual(rules.decide("/x", "GET", plain_claims).reason, "allowed")

    def test_policy_refuses_non_ascii_names(self) -> None:
        from certsrv.exceptions import ConfigurationError

        for key, value in (("dns", "\u212aube.example.org"), ("email", "a@\u212a.example"),
                           ("uri", "urn:\u212a")):
            with self.assertRaises(ConfigurationError, msg=key):
                parse_policy(f'[[rule]]\npath = "/"\n[rule.allow]\n{key} = ["{value}"]\n',
                             "p.toml")


# --- findings 1, 3 and 9 behind real nginx ----------------------------------------------------


def _intermediate_with_eku(root: CertificateAuthority, name: str,
                           usages: list[x509.ObjectIdentifier]) -> CertificateAuthority:
    """An intermediate CA of ``root`` carrying an extendedKeyUsage extension."""
    plain = root.intermediate(name)
    cert = plain.certificate
    builder = (x509.CertificateBuilder().subject_name(cert.subject).issuer_name(cert.issuer)
               .public_key(cert.public_key()).serial_number(cert.serial_number)
               .not_valid_before(cert.not_valid_before_utc)
               .not_valid_after(cert.not_valid_after_utc))
    for extension in cert.extensions:
        builder = builder.add_extension(extension.value, extension.critical)
    builder = builder.add_extension(x509.ExtendedKeyUsage(usages), False)
    signed = builder.sign(root.private_key, hashes.SHA256())  # type: ignore[arg-type]
    return CertificateAuthority(signed, plain.private_key, plain.chain)


class NginxFrontGateTests(NginxFront):
    """docs/nginx-front.conf in front of certsrv with a policy, an app, and a pinned proxy."""

    def setUp(self) -> Any:
        del RECEIVED[:]
        self.bad_intermediate = _intermediate_with_eku(
            shared_pki().root, "Server-only Intermediate CA", [ExtendedKeyUsageOID.SERVER_AUTH])
        return super().setUp()

    def certsrv(self, *argv: str) -> int:
        if "--forwarded-cert" in argv and "--app" not in argv:
            policy = POLICY.replace('CN = "admin"', 'CN = "carol", O = "Example Users"')
            path = write_pem(self.files.dir, "policy.toml", policy.encode())
            inter = write_pem(self.files.dir, "bad-inter.pem",
                              self.bad_intermediate.certificate_pem())
            argv = (*argv, "--policy", path, "--app", "tests.e2e.test_gate.recording_app",
                    "--intermediates", inter,
                    "--trusted-proxy-cert", _certs()["proxy"].fingerprint)
        return super().certsrv(*argv)

    @defer.inlineCallbacks
    def fetch(self, target: str, cert: IssuedCertificate | None, port: int | None = None
              ) -> Any:
        args = ["curl", "-sS", "--max-time", "20", "--cacert", self.files.ca,
                "-H", "Accept: application/json", "-w", "\n%{http_code}",
                "--request-target", target]
        if cert is not None:
            name = cert.fingerprint[:16]
            args += ["--cert", write_pem(self.files.dir, f"{name}.pem",
                                         cert.certificate_pem()),
                     "--key", write_pem(self.files.dir, f"{name}.key", cert.private_key_pem(),
                                        0o600)]
        port = port or self.port
        out, err, code = yield run([*args, "--resolve", f"localhost:{port}:127.0.0.1",
                                    f"https://localhost:{port}/"])
        self.assertEqual(code, 0, f"{err!r}\n{self.nginx_log()}")
        body, _, status = out.rpartition(b"\n")
        return int(status), body

    @defer.inlineCallbacks
    def test_fragment_through_nginx(self) -> Any:
        status, body = yield self.fetch("/public#/../admin/secret", None)
        self.assertEqual((status, _reason(body)), (400, "bad_path"), body)
        status, body = yield self.fetch("/public/ok", None)
        self.assertEqual(status, 200, body)
        self.assertEqual(RECEIVED, [(b"GET", (b"public", b"ok"))])

    @defer.inlineCallbacks
    def test_intermediate_without_client_purpose_through_nginx(self) -> Any:
        """Finding 3: refused forwarded exactly as directly (OpenSSL's ssl_client purpose)."""
        leaf = self.bad_intermediate.issue_client("carol", organization="Example Users")
        with captured_events() as events:
            status, body = yield self.fetch("/admin/x", leaf)
        self.assertEqual((status, _reason(body)), (403, "bad_key_usage"), body)
        self.assertEqual([(e["reason"], e.get("forwarded")) for e in events
                          if e.get("decision") == "rejected"], [("bad_key_usage", True)])
        # Directly, with the intermediate, the handshake refuses it for the same reason.
        direct = self.certsrv("--intermediates", write_pem(
            self.files.dir, "bad-inter.pem", self.bad_intermediate.certificate_pem()))
        out, err, code = yield run([
            "curl", "-sS", "-v", "--tls-max", "1.2", "--max-time", "20",
            "--cacert", self.files.ca,
            "--cert", write_pem(self.files.dir, "bad.pem", leaf.chain_pem()),
            "--key", write_pem(self.files.dir, "bad.key", leaf.private_key_pem(), 0o600),
            "--resolve", f"localhost:{direct}:127.0.0.1", f"https://localhost:{direct}/secure"])
        self.assertNotEqual(code, 0)
        self.assertIn(b"alert unsupported certificate", err)
        self.assertEqual(RECEIVED, [])

    @defer.inlineCallbacks
    def test_pinned_proxy_forwards_others_do_not(self) -> Any:
        """Finding 9: the forwarding peer must be at a trusted address *and* authenticate
        with a --trusted-proxy-cert certificate."""
        user = _certs()["user"]
        status, body = yield self.fetch("/admin/x", user)
        self.assertEqual(status, 200, body)
        self.assertEqual(json.loads(body)["subject"], "CN=carol,O=Example Users")
        # Another local process with an accepted certificate, from the trusted address:
        # its forwarded header is ignored and its own identity counts.
        from tests._support import nginx_header

        forged = "X-SSL-Client-Cert: " + nginx_header(user)[1].decode()
        alice = self.pki.client
        with captured_events() as events:
            out, err, code = yield run([
                "curl", "-sS", "--max-time", "20", "--cacert", self.files.ca,
                "-H", "Accept: application/json", "-H", forged, "-w", "\n%{http_code}",
                "--cert", write_pem(self.files.dir, "alice.pem", alice.chain_pem()),
                "--key", write_pem(self.files.dir, "alice.key", alice.private_key_pem(),
                                   0o600),
                "--resolve", f"localhost:{self.certsrv_port}:127.0.0.1",
                f"https://localhost:{self.certsrv_port}/admin/x"])
        self.assertEqual(code, 0, err)
        body, _, got = out.rpartition(b"\n")
        self.assertEqual((int(got), _reason(body)), (403, "not_allowed"), body)
        self.assertIn("untrusted_proxy", [e.get("reason") for e in events])


class ForwardedRevocationTests(_Served):
    """Finding 4: forwarded, an expired CRL listing the serial stays revoked under open."""

    @defer.inlineCallbacks
    def test_expired_crl_still_revokes_forwarded(self) -> Any:
        from tests._support import client_cert_header

        henry = self.pki.root.issue_client("henry")
        now = utcnow()
        stale = write_pem(self.files.dir, "stale.pem", crl_pem(
            self.pki.root, henry, last_update=now - 10 * DAY, next_update=now - DAY))
        port, _ = self.serve("--crl", stale, "--revocation-fail", "open",
                             "--forwarded-cert", "rfc9440", "--trusted-proxy", "127.0.0.1")
        proxy = yield self.client(port, self.pki.client)
        name, value = client_cert_header(henry)
        proxy.sock.sendall(b"GET /secure HTTP/1.1\r\nHost: localhost\r\n"
                           b"Accept: application/json\r\n" + name + b": " + value + b"\r\n\r\n")
        status, body = yield threads.deferToThread(_read_one, proxy)
        self.assertEqual((status, _reason(body)), (403, "revoked"), body)


def _read_one(client: _Client) -> tuple[int, bytes]:
    """One response (Content-Length framed) off the connection, consumed from its buffer."""
    while b"\r\n\r\n" not in client.buffer:
        client._read()
    head, _, client.buffer = client.buffer.partition(b"\r\n\r\n")
    length = int(next(line.split(b":", 1)[1] for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length")))
    while len(client.buffer) < length:
        client._read()
    body, client.buffer = client.buffer[:length], client.buffer[length:]
    return int(head.split()[1]), body


class PromptRevocationTests(_Served):
    """Issue "what a new user meets" 2: SIGHUP drops cached OCSP answers, so a revocation
    reaches the server at once instead of when the cached "good" answer expires."""

    @defer.inlineCallbacks
    def test_sighup_drops_cached_ocsp_answers(self) -> Any:
        from twisted.web.server import Site

        from certsrv.testing import FakeOCSPResponder

        carol = _people()["carol"]
        ocsp = FakeOCSPResponder(self.pki.root, clock=reactor, default="unknown")
        ocsp.good(carol)
        listening = reactor.listenTCP(0, Site(ocsp.resource()),  # type: ignore[attr-defined]
                                      interface="127.0.0.1")
        self.addCleanup(listening.stopListening)
        url = f"http://127.0.0.1:{listening.getHost().port}/"
        port, reloader = self.serve("--ocsp-responder", url)
        client = yield self.client(port, carol)
        status, body = yield threads.deferToThread(client.request, "GET", "/secure")
        self.assertEqual(status, 200, body)
        ocsp.revoke(carol, at=utcnow() - DAY, reason=None)
        # The "good" answer is cached: a revocation alone is not seen yet.
        status, body = yield threads.deferToThread(client.request, "GET", "/secure")
        self.assertEqual(status, 200, body)
        self.assertTrue(reloader.reload("SIGHUP"))
        status, body = yield threads.deferToThread(client.request, "GET", "/secure")
        self.assertEqual((status, _reason(body)), (403, "revoked"), body)


class TrustedProxyOwnCertificateTests(_Served):
    """A trusted proxy vouches for others only while its own certificate would admit it:
    re-verified after a reload, valid by the clock, not revoked (found by review)."""

    def forward(self, proxy: _Client, who: IssuedCertificate) -> tuple[int, bytes]:
        from tests._support import client_cert_header

        name, value = client_cert_header(who)
        proxy.sock.sendall(b"GET /secure HTTP/1.1\r\nHost: localhost\r\n"
                           b"Accept: application/json\r\n" + name + b": " + value + b"\r\n\r\n")
        return _read_one(proxy)

    def argv(self, proxy: IssuedCertificate, *extra: str) -> tuple[str, ...]:
        return ("--forwarded-cert", "rfc9440", "--trusted-proxy", "127.0.0.1",
                "--trusted-proxy-cert", proxy.fingerprint, *extra)

    @defer.inlineCallbacks
    def test_proxy_revoked_by_a_reloaded_crl(self) -> Any:
        proxy_cert = self.pki.root.issue_client("edge-proxy-crl")
        crl = write_pem(self.files.dir, "crl.pem", crl_pem(self.pki.root))
        port, reloader = self.serve(*self.argv(proxy_cert, "--crl", crl))
        proxy = yield self.client(port, proxy_cert)
        status, body = yield threads.deferToThread(self.forward, proxy, self.pki.client)
        self.assertEqual((status, json.loads(body)["subject"]), (200, "CN=alice"), body)
        write_pem(self.files.dir, "crl.pem", crl_pem(self.pki.root, proxy_cert))
        self.assertTrue(reloader.reload("CRL file changed"))
        status, body = yield threads.deferToThread(self.forward, proxy, self.pki.client)
        self.assertEqual((status, _reason(body)), (403, "revoked"), body)

    @defer.inlineCallbacks
    def test_proxy_revoked_by_ocsp_before_its_status_was_cached(self) -> Any:
        from twisted.web.server import Site

        from certsrv.testing import FakeOCSPResponder

        proxy_cert = self.pki.root.issue_client("edge-proxy-ocsp")
        ocsp = FakeOCSPResponder(self.pki.root, clock=reactor)
        ocsp.revoke(proxy_cert, at=utcnow() - DAY, reason=None)
        listening = reactor.listenTCP(0, Site(ocsp.resource()),  # type: ignore[attr-defined]
                                      interface="127.0.0.1")
        self.addCleanup(listening.stopListening)
        url = f"http://127.0.0.1:{listening.getHost().port}/"
        port, _ = self.serve(*self.argv(proxy_cert, "--ocsp-responder", url))
        proxy = yield self.client(port, proxy_cert)
        status, body = yield threads.deferToThread(self.forward, proxy, self.pki.client)
        self.assertEqual((status, _reason(body)), (403, "revoked"), body)
        # A proxy in good standing forwards as before.
        good_cert = self.pki.root.issue_client("edge-proxy-good")
        port, _ = self.serve(*self.argv(good_cert, "--ocsp-responder", url))
        good = yield self.client(port, good_cert)
        status, body = yield threads.deferToThread(self.forward, good, self.pki.client)
        self.assertEqual((status, json.loads(body)["subject"]), (200, "CN=alice"), body)


class ClosedConnectionTests(_Served):
    """A connection answered with ``Connection: close`` whose peer never completes the TLS
    close cannot hold a ``--max-connections`` slot (found by review)."""

    @defer.inlineCallbacks
    def test_peer_that_never_closes_is_cut_off(self) -> Any:
        from certsrv.web.http11 import HTTP11Channel

        self.patch(HTTP11Channel, "abortTimeout", 0.5)
        factory, _ = pieces(_tap.makeService(options(self.files.argv(), reactor)))
        listening = reactor.listenTCP(0, factory, interface="127.0.0.1")  # type: ignore[attr-defined]
        self.addCleanup(listening.stopListening)
        site = factory.wrappedFactory
        client = yield self.client(listening.getHost().port, self.pki.client)
        client.sock.sendall(b"GET /secure HTTP/1.1\r\nHost: localhost\r\n"
                            b"Connection: close\r\n\r\n")
        status, _ = yield threads.deferToThread(_read_one, client)
        self.assertEqual(status, 200)
        # The client neither answers the server's close_notify nor closes its socket.
        for _ in range(60):
            if site.connections == 0:
                break
            yield deferLater(reactor, 0.05, lambda: None)
        self.assertEqual(site.connections, 0)
