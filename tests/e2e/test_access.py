"""``--policy``: access rules end to end, through real TLS handshakes, reloads and curl."""

from __future__ import annotations

import json
import os
import shutil
from typing import Any

from twisted.internet import defer, reactor
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase

from certsrv.exceptions import ConfigurationError
from certsrv.server import options as _tap
from tests._servers import run
from tests._support import (
    Exchange,
    captured_events,
    client_tls_options,
    exchange,
    options,
    pieces,
    policy_text,
    request_bytes,
    shared_pki,
    write_pem,
)
from tests._support import Files as _Files
from tests._support import access_certs as _certs


def reason_of(result: Exchange) -> str | None:
    """The reason code of a JSON error body, None for any other body."""
    try:
        return str(json.loads(result.body)["reason"])
    except (ValueError, KeyError):
        return None


class PolicyTests(SynchronousTestCase):
    """The rules decide per request, after the handshake; each decision is logged once."""

    def setUp(self) -> None:
        self.files = _Files(self.mktemp())
        self.policy = write_pem(self.files.dir, "policy.toml", policy_text("operator").encode())
        parsed = options(self.files.argv("--client-cert", "optional", "--policy", self.policy,
                                         "--app", "tests._support.policy_app"))
        self.factory, self.reloader = pieces(_tap.makeService(parsed))
        self.pki = shared_pki()

    def get(self, who: str | None, path: str, method: str = "GET"
            ) -> tuple[Exchange, list[dict[str, Any]]]:
        """One request over a fresh connection; the response and the policy's log events."""
        cert = _certs()[who] if who is not None else None
        request = request_bytes(path, accept="application/json")
        if method != "GET":
            request = request.replace(b"GET ", f"{method} ".encode(), 1)
        with captured_events("certsrv.policy") as events:
            result = exchange(self.factory, client_tls_options(self.pki, cert), request)
        return result, events

    def check(self, who: str | None, path: str, status: int, reason: str, rule: str | None,
              method: str = "GET") -> Exchange:
        result, events = self.get(who, path, method)
        label = f"{method} {path} by {who}: {result.client.received[:400]!r}"
        self.assertEqual(result.status, status, label)
        if status in (400, 403):
            self.assertEqual(reason_of(result), reason, label)
        self.assertEqual(len(events), 1, label)
        event = events[0]
        self.assertEqual(event["policy_rule"], rule, label)
        self.assertEqual(event["policy_reason"], reason, label)
        self.assertEqual(event["policy_allowed"], status == 200, label)
        self.assertEqual(event["path"], path.split("?")[0])
        self.assertEqual(event["method"], method)
        cert = _certs()[who] if who is not None else None
        self.assertEqual(event["sha256"], cert.fingerprint if cert is not None else None)
        if rule is not None:
            self.assertIn(rule, event["log_format"].format(**event))
        return result

    def test_public_path_without_certificate(self) -> None:
        result = self.check(None, "/health", 200, "public", "health")
        self.assertIn(b"path=/health who=-", result.body)

    def test_public_path_with_certificate(self) -> None:
        result = self.check("alice", "/health/deep?x=1", 200, "public", "health")
        self.assertIn(b"who=CN=alice", result.body)

    def test_public_rule_covers_only_its_methods(self) -> None:
        self.check(None, "/health", 403, "no_rule", None, method="POST")

    def test_protected_path_without_certificate(self) -> None:
        self.check(None, "/api/payments", 403, "no_certificate", "payments")
        self.check(None, "/admin", 403, "no_certificate", "admin")

    def test_allowed_by_subject(self) -> None:
        result = self.check("clerk", "/api/payments/invoices", 200, "allowed", "payments")
        self.assertIn(b"who=CN=clerk,O=Example Payments", result.body)

    def test_allowed_by_spiffe_pattern(self) -> None:
        result = self.check("workload", "/api/payments", 200, "allowed", "payments")
        self.assertIn(b"who=CN=payments-api", result.body)

    def test_allowed_by_fingerprint(self) -> None:
        self.check("operator", "/admin/users", 200, "allowed", "admin")

    def test_other_certificates_not_allowed(self) -> None:
        self.check("alice", "/api/payments", 403, "not_allowed", "payments")
        self.check("nearly", "/api/payments", 403, "not_allowed", "payments")
        self.check("clerk", "/admin", 403, "not_allowed", "admin")
        self.check("workload", "/admin", 403, "not_allowed", "admin")

    def test_prefixes_are_whole_segments(self) -> None:
        self.check("clerk", "/api/paymentsx", 403, "no_rule", None)
        self.check("operator", "/administrator", 403, "no_rule", None)

    def test_unlisted_path(self) -> None:
        self.check("operator", "/other", 403, "no_rule", None)
        self.check(None, "/", 403, "no_rule", None)

    def test_keepalive_decides_every_request(self) -> None:
        """On one connection every request is decided and logged, per path, and a reloaded
        policy decides the next request."""
        from certsrv.testing import open_in_memory
        from tests._support import HTTPClientProtocol

        def request(path: str) -> bytes:
            return f"GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode()

        http = HTTPClientProtocol(request("/admin"))
        with captured_events("certsrv.policy") as events:
            client, _, pump = open_in_memory(
                self.factory, client_tls_options(self.pki, _certs()["alice"]), http)
            for path in ("/admin", "/health", "/admin"):
                client.write(request(path))
                pump.flush()
        self.assertEqual([(e["path"], e["policy_allowed"]) for e in events],
                         [("/admin", False), ("/admin", False), ("/health", True),
                          ("/admin", False)])
        self.assertEqual(http.received.count(b"HTTP/1.1 403"), 3)
        write_pem(self.files.dir, "policy.toml", policy_text("alice").encode())
        self.assertTrue(self.reloader.reload("SIGHUP"))
        http.received = b""
        with captured_events("certsrv.policy") as events:
            client.write(request("/admin"))
            pump.flush()
        self.assertEqual([e["policy_allowed"] for e in events], [True])
        self.assertTrue(http.received.startswith(b"HTTP/1.1 200"), http.received)
        client.loseConnection()
        pump.flush()

    def test_ambiguous_path(self) -> None:
        self.check("operator", "/health/../admin", 400, "bad_path", None)

    def test_reload_takes_effect_and_bad_policy_is_refused(self) -> None:
        self.check("alice", "/admin", 403, "not_allowed", "admin")
        write_pem(self.files.dir, "policy.toml", policy_text("alice").encode())
        with captured_events("certsrv.reload") as events:
            self.assertTrue(self.reloader.reload("SIGHUP"))
        self.assertEqual([e["reason"] for e in events], ["reloaded"])
        self.check("alice", "/admin", 200, "allowed", "admin")
        self.check("operator", "/admin", 403, "not_allowed", "admin")

        broken = policy_text("operator") + '\n[[rule]]\npath = "/x"\nallowed = { any = true }\n'
        write_pem(self.files.dir, "policy.toml", broken.encode())
        with captured_events("certsrv.reload") as events:
            self.assertFalse(self.reloader.reload("SIGHUP"))
        self.assertEqual([e["reason"] for e in events], ["reload_refused"])
        self.assertTrue(events[0]["source"].startswith(self.policy + ":"), events[0])
        self.assertIn("allowed", events[0]["error"])
        # The policy loaded last stays in force.
        self.check("alice", "/admin", 200, "allowed", "admin")
        self.check("operator", "/admin", 403, "not_allowed", "admin")

        os.remove(self.policy)
        with captured_events("certsrv.reload") as events:
            self.assertFalse(self.reloader.reload("SIGHUP"))
        self.assertEqual([e["reason"] for e in events], ["reload_refused"])
        self.check("alice", "/admin", 200, "allowed", "admin")


class StartupTests(SynchronousTestCase):
    """A bad policy stops startup with one line naming the file (and line)."""

    def setUp(self) -> None:
        self.files = _Files(self.mktemp())

    def refused(self, text: bytes | None, *fragments: str) -> None:
        path = os.path.join(self.files.dir, "policy.toml")
        if text is not None:
            write_pem(self.files.dir, "policy.toml", text)
        with self.assertRaises(ConfigurationError) as caught:
            options(self.files.argv("--policy", path))
        message = str(caught.exception)
        self.assertTrue(message.startswith(path), message)
        self.assertNotIn("\n", message)
        for fragment in fragments:
            self.assertIn(fragment, message)

    def test_missing_file(self) -> None:
        self.refused(None)

    def test_invalid_toml(self) -> None:
        self.refused(b"[[rule]\npath = '/x'\n")

    def test_unknown_key(self) -> None:
        self.refused(b'[[rule]]\npath = "/x"\npublic = true\nowner = "me"\n',
                     "policy.toml:4", "owner")

    def test_unreachable_rule(self) -> None:
        self.refused(b'[[rule]]\npath = "/api"\npublic = true\n\n'
                     b'[[rule]]\npath = "/api/x"\n[rule.allow]\nany = true\n', "policy.toml:5")

    def test_good_policy_loads(self) -> None:
        path = write_pem(self.files.dir, "policy.toml", policy_text("operator").encode())
        parsed = options(self.files.argv("--client-cert", "optional", "--policy", path))
        access = parsed.verifier.access
        assert access is not None
        self.assertEqual([r.name for r in access.rules], ["health", "payments", "admin"])


class CurlHTTP2Tests(TestCase):
    """curl over HTTP/2: the same rules decide for each stream."""

    timeout = 60

    def setUp(self) -> None:
        if shutil.which("curl") is None:
            raise SkipTest("curl is not installed")
        self.files = _Files(self.mktemp())
        policy = write_pem(self.files.dir, "policy.toml", policy_text("operator").encode())
        parsed = options(self.files.argv("--client-cert", "optional", "--policy", policy,
                                         "--app", "tests._support.policy_app"), reactor)
        factory, _ = pieces(_tap.makeService(parsed))
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")  # type: ignore[attr-defined]
        self.addCleanup(port.stopListening)
        self.port = port.getHost().port

    @defer.inlineCallbacks
    def curl(self, who: str, path: str) -> Any:
        cert = _certs()[who]
        pem = write_pem(self.files.dir, f"{who}.pem", cert.chain_pem())
        key = write_pem(self.files.dir, f"{who}.key", cert.private_key_pem(), 0o600)
        with captured_events("certsrv.policy") as events:
            out, err, code = yield run([
                "curl", "-sS", "--http2", "--max-time", "20", "--cacert", self.files.ca,
                "--cert", pem, "--key", key, "-H", "Accept: application/json",
                "-w", "\n%{http_version} %{http_code}",
                "--resolve", f"localhost:{self.port}:127.0.0.1",
                f"https://localhost:{self.port}{path}"])
        self.assertEqual(code, 0, err)
        body, _, status = out.rpartition(b"\n")
        return body, status.decode(), events

    @defer.inlineCallbacks
    def test_denied_over_http2(self) -> Any:
        body, status, events = yield self.curl("clerk", "/admin")
        self.assertEqual(status, "2 403", body)
        self.assertEqual(json.loads(body)["reason"], "not_allowed")
        self.assertEqual([(e["policy_rule"], e["policy_reason"]) for e in events],
                         [("admin", "not_allowed")])

    @defer.inlineCallbacks
    def test_allowed_over_http2(self) -> Any:
        body, status, events = yield self.curl("operator", "/admin")
        self.assertEqual(status, "2 200", body)
        self.assertIn(b"path=/admin who=CN=operator", body)
        self.assertEqual([(e["policy_rule"], e["policy_reason"]) for e in events],
                         [("admin", "allowed")])
