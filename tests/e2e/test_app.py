"""Protecting any twisted.web application: Klein, ``--app``, ``protected_site``, ``protect``."""

from __future__ import annotations

import json
import shutil
from typing import Any

from twisted.internet import defer, reactor
from twisted.logger import globalLogPublisher
from twisted.python import usage
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase
from twisted.web import resource, server

import certsrv
from certsrv.pki import IssuedCertificate
from certsrv.server import options as _tap
from tests._servers import run
from tests._support import (
    Exchange,
    client_tls_options,
    exchange,
    options,
    pieces,
    request_bytes,
    shared_pki,
    write_pem,
)
from tests._support import Files as _Files
from tests._support import reason_of as _reason


def _make_klein_app() -> Any:
    """A Klein app whose routes answer with the client's common name; None without Klein."""
    try:
        from klein import Klein
    except ImportError:
        return None
    app = Klein()

    @app.route("/whoami")
    def whoami(request: server.Request) -> str:
        identity = certsrv.identity_of(request)
        if identity is None:  # unreachable behind the gate; say so loudly if it ever happens
            request.setResponseCode(500)
            return "reached without an identity\n"
        return f"{identity.common_name}\n"

    @app.route("/hello/<name>", methods=["GET", "POST"])
    def hello(request: server.Request, name: str) -> str:
        identity = certsrv.identity_of(request)
        assert identity is not None
        return f"hello {name}, from {identity.common_name}\n"

    return app


klein_app = _make_klein_app()
NOT_AN_APP = 42


def broken_factory() -> resource.IResource:
    """An ``--app`` factory that fails."""
    raise RuntimeError("database unreachable")


def _need_klein() -> None:
    if klein_app is None:
        raise SkipTest("klein is not installed (it is in the 'test' extra: pip install -e .[test])")


def _body(result: Exchange) -> bytes:
    """The response body, de-chunked (Klein streams its responses with chunked encoding)."""
    head = result.client.received.partition(b"\r\n\r\n")[0].lower()
    if b"transfer-encoding: chunked" not in head:
        return result.body
    rest, body = result.body, b""
    while True:
        size, _, rest = rest.partition(b"\r\n")
        length = int(size.split(b";")[0], 16)
        if length == 0:
            return body
        body, rest = body + rest[:length], rest[length + 2:]


class KleinCurlTests(TestCase):
    """A Klein app behind ``protected_site`` on 127.0.0.1, with curl as the client."""

    timeout = 60

    def setUp(self) -> None:
        _need_klein()
        if shutil.which("curl") is None:
            raise SkipTest("curl is not installed")
        self.files = _Files(self.mktemp())
        self.pki = shared_pki()

    def listen(self, *argv: str) -> int:
        factory = certsrv.protected_site(klein_app.resource(), self.files.argv(*argv),
                                         clock=reactor)
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")  # type: ignore[attr-defined]
        self.addCleanup(port.stopListening)
        return int(port.getHost().port)

    def next_decision(self) -> defer.Deferred[dict[str, Any]]:
        """The server's next handshake decision event.

        curl's message for a refused handshake depends on when it notices the alert, and
        the server logs a failed handshake once the connection is gone, possibly after curl
        has exited: so the test waits for the server's event rather than reading curl's.
        """
        decided: defer.Deferred[dict[str, Any]] = defer.Deferred()

        def observe(event: dict[str, Any]) -> None:
            if (event.get("log_namespace") == "certsrv.tls" and "decision" in event
                    and not decided.called):
                decided.callback(event)

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)
        return decided

    def curl(self, port: int, path: str, cert: IssuedCertificate | None, *extra: str
             ) -> defer.Deferred[tuple[bytes, bytes, int]]:
        args = ["curl", "-sS", "--max-time", "20", "--cacert", self.files.ca,
                "-w", "\n%{http_version} %{http_code}", *extra]
        if cert is not None:
            args += ["--cert", write_pem(self.files.dir, "c.pem", cert.chain_pem()),
                     "--key", write_pem(self.files.dir, "c.key", cert.private_key_pem(), 0o600)]
        return run([*args, "--resolve", f"localhost:{port}:127.0.0.1",
                    f"https://localhost:{port}{path}"])

    @defer.inlineCallbacks
    def test_valid_certificate_reaches_the_routes(self) -> Any:
        port = self.listen()
        for version, shown in (("--http1.1", "1.1"), ("--http2", "2")):
            out, err, code = yield self.curl(port, "/whoami", self.pki.client, version)
            self.assertEqual(code, 0, err)
            self.assertEqual(out, f"alice\n\n{shown} 200".encode())
        bob = self.pki.client_cert("via_intermediate")
        out, err, code = yield self.curl(port, "/hello/world", bob, "-X", "POST", "--http1.1")
        self.assertEqual(code, 0, err)
        self.assertEqual(out, b"hello world, from bob\n\n1.1 200")
        out, err, code = yield self.curl(port, "/nowhere", bob)
        self.assertEqual(out.rsplit(b" ", 1)[-1], b"404", out)

    @defer.inlineCallbacks
    def test_no_certificate_handshake_refused(self) -> Any:
        port = self.listen()
        decided = self.next_decision()
        out, err, code = yield self.curl(port, "/whoami", None)
        self.assertNotEqual(code, 0, out)
        self.assertNotIn(b"200", out)
        event = yield decided
        self.assertEqual((event["decision"], event["reason"]), ("rejected", "no_certificate"))

    @defer.inlineCallbacks
    def test_bad_certificate_handshake_refused(self) -> Any:
        port = self.listen()
        decided = self.next_decision()
        out, err, code = yield self.curl(port, "/whoami", self.pki.client_cert("expired"))
        self.assertNotEqual(code, 0, out)
        self.assertNotIn(b"200", out)
        event = yield decided
        self.assertEqual((event["decision"], event["reason"]), ("rejected", "expired"))

    @defer.inlineCallbacks
    def test_no_certificate_optional_is_403(self) -> Any:
        port = self.listen("--client-cert", "optional")
        out, err, code = yield self.curl(port, "/whoami", None, "-H", "Accept: application/json")
        self.assertEqual(code, 0, err)
        body, _, status = out.rpartition(b"\n")
        self.assertEqual(status, b"2 403")
        self.assertEqual(json.loads(body)["reason"], "no_certificate")
        out, err, code = yield self.curl(port, "/whoami", self.pki.client)
        self.assertEqual(out, b"alice\n\n2 200")


class AppOptionTests(SynchronousTestCase):
    """``--app DOTTED.NAME`` through the plugin's options and ``makeService``."""

    def setUp(self) -> None:
        self.files = _Files(self.mktemp())
        self.pki = shared_pki()

    def test_klein_app_by_name(self) -> None:
        _need_klein()
        parsed = options(self.files.argv("--client-cert", "optional",
                                         "--app", "tests.e2e.test_app.klein_app"))
        factory, _ = pieces(_tap.makeService(parsed))
        result = exchange(factory, client_tls_options(self.pki, self.pki.client),
                          request_bytes("/whoami"))
        self.assertEqual((result.status, _body(result)), (200, b"alice\n"))
        result = exchange(factory, client_tls_options(self.pki, None),
                          request_bytes("/whoami", accept="application/json"))
        self.assertEqual((result.status, _reason(result)), (403, "no_certificate"))
        # /secure is certsrv's default tree, which --app replaces.
        result = exchange(factory, client_tls_options(self.pki, self.pki.client),
                          request_bytes("/secure"))
        self.assertEqual(result.status, 404)

    def test_factory_by_name(self) -> None:
        parsed = options(self.files.argv("--app", "tests._support.policy_app"))
        factory, _ = pieces(_tap.makeService(parsed))
        result = exchange(factory, client_tls_options(self.pki, self.pki.client),
                          request_bytes("/anything"))
        self.assertEqual(result.status, 200)
        self.assertIn(b"who=CN=alice", result.body)

    def test_bad_names_are_usage_errors(self) -> None:
        for name, fragment in (
            ("tests.e2e.test_app.no_such_app", "cannot import"),
            ("no_such_module_for_certsrv.app", "cannot import"),
            ("tests.e2e.test_app.NOT_AN_APP", "not a twisted.web resource"),
            ("tests.e2e.test_app.broken_factory", "database unreachable"),
        ):
            with self.assertRaises(usage.UsageError) as caught:
                options(self.files.argv("--app", name))
            message = str(caught.exception)
            self.assertTrue(message.startswith(f"--app {name}: "), message)
            self.assertIn(fragment, message)
            self.assertNotIn("\n", message)


    def test_app_path(self) -> None:
        """--app-path DIR puts DIR first on sys.path, so --app finds a module there."""
        import os
        import sys

        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        name = "certsrv_app_path_probe"
        with open(os.path.join(directory, f"{name}.py"), "w") as f:
            f.write("from twisted.web import static\n"
                    "app = static.Data(b'from --app-path\\n', 'text/plain')\n"
                    "app.isLeaf = True\n")
        self.addCleanup(sys.modules.pop, name, None)
        self.addCleanup(lambda: sys.path.remove(directory) if directory in sys.path else None)
        with self.assertRaises(usage.UsageError) as caught:
            options(self.files.argv("--app", f"{name}.app"))
        self.assertIn("--app-path", str(caught.exception))
        parsed = options(self.files.argv("--app-path", directory, "--app", f"{name}.app"))
        self.assertEqual(sys.path[0], directory)
        factory, _ = pieces(_tap.makeService(parsed))
        result = exchange(factory, client_tls_options(self.pki, self.pki.client),
                          request_bytes("/"))
        self.assertEqual((result.status, result.body), (200, b"from --app-path\n"))

    def test_app_path_must_be_a_directory(self) -> None:
        with self.assertRaises(usage.UsageError) as caught:
            options(self.files.argv("--app-path", "/nonexistent/dir"))
        self.assertEqual(str(caught.exception), "--app-path /nonexistent/dir: not a directory")


