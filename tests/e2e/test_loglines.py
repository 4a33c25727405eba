"""Log lines say what happened: no ``None`` for a missing certificate, and who refused whom."""

from __future__ import annotations

from typing import Any

from OpenSSL import SSL
from twisted.internet.address import IPv4Address
from twisted.internet.ssl import (
    Certificate,
    PrivateCertificate,
    TLSVersion,
    optionsForClientTLS,
)
from twisted.logger import formatEvent
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from certsrv.server import options as _tap
from certsrv.tls.verify import ConnectionState
from tests._support import Files as _Files
from tests._support import (
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

PEER = IPv4Address("TCP", "127.0.0.1", 5000)


def _texts(events: list[dict[str, Any]]) -> list[str]:
    return [formatEvent(event) for event in events]


class HandshakeLineTests(SynchronousTestCase):
    """The handshake's log line for a refusal that names no certificate."""

    def setUp(self) -> None:
        self.pki = shared_pki()
        parsed = options(_Files(self.mktemp()).argv())
        self.factory, _ = pieces(_tap.makeService(parsed))
        self.verifier = parsed.verifier

    def connect(self, client_options: Any) -> list[dict[str, Any]]:
        with captured_events() as events:
            exchange(self.factory, client_options, request_bytes())
        return [e for e in events if e.get("decision") == "rejected"]

    def test_no_certificate(self) -> None:
        [event] = self.connect(client_tls_options(self.pki, None))
        [text] = _texts([event])
        self.assertTrue(text.startswith("rejected client "), text)
        self.assertTrue(text.endswith(": no client certificate was presented"), text)
        self.assertNotIn("None", text)
        self.assertEqual((event["reason"], event["refused_by"]), ("no_certificate", "server"))

    def test_client_refuses_server_certificate(self) -> None:
        """A client that does not trust our CA: its alert is its verdict on our certificate."""
        alice = self.pki.client
        for version in (TLSVersion.TLSv1_2, TLSVersion.TLSv1_3):
            client = optionsForClientTLS(
                "localhost",
                trustRoot=Certificate.loadPEM(self.pki.other_root.certificate_pem()),
                clientCertificate=PrivateCertificate.loadPEM(
                    alice.certificate_pem() + alice.private_key_pem()),
                extraCertificateOptions={"lowerMaximumSecurityTo": version,
                                         "raiseMinimumTo": version},
            )
            [event] = self.connect(client)
            [text] = _texts([event])
            self.assertIn("refused the server's certificate (it sent the TLS alert unknown ca)",
                          text, version)
            self.assertNotIn("rejected client certificate", text)
            self.assertNotIn("None", text)
            self.assertEqual((event["refused_by"], event["alert"], event["reason"]),
                             ("client", "unknown ca", "handshake_failed"))

    def test_other_alert(self) -> None:
        """An alert about something else: the client ended the handshake."""
        error = SSL.Error([("SSL routines", "", "tlsv1 alert protocol version")])
        with captured_events() as events:
            self.verifier.handshake_failed(ConnectionState(), PEER, Failure(error))
        self.assertEqual(_texts(events),
                         ["client 127.0.0.1:5000 ended the TLS handshake with the alert "
                          "protocol version"])

    def test_not_tls(self) -> None:
        error = SSL.Error([("SSL routines", "", "wrong version number")])
        with captured_events() as events:
            self.verifier.handshake_failed(ConnectionState(), PEER, Failure(error))
        [event] = events
        self.assertEqual(formatEvent(event),
                         "TLS handshake with 127.0.0.1:5000 failed: wrong version number")
        self.assertEqual((event["reason"], event["refused_by"]), ("handshake_failed", "server"))

    def test_rejected_certificate_is_named(self) -> None:
        """A certificate we refused is still logged with its subject."""
        [event] = self.connect(client_tls_options(self.pki, self.pki.client_cert("unknown_ca")))
        self.assertIn("subject CN=mallory", formatEvent(event))


class AccessLineTests(SynchronousTestCase):
    """The access-policy line names the client, or says it is anonymous."""

    def test_anonymous(self) -> None:
        files = _Files(self.mktemp())
        policy = write_pem(files.dir, "policy.toml", policy_text("operator").encode())
        parsed = options(files.argv("--client-cert", "optional", "--policy", policy,
                                    "--app", "tests._support.policy_app"))
        factory, _ = pieces(_tap.makeService(parsed))
        pki = shared_pki()
        with captured_events("certsrv.policy") as events:
            exchange(factory, client_tls_options(pki, None), request_bytes("/health"))
            exchange(factory, client_tls_options(pki, pki.client), request_bytes("/health"))
        self.assertEqual(_texts(events), [
            "GET /health: allowed by health for anonymous (no certificate)",
            "GET /health: allowed by health for CN=alice",
        ])
        self.assertIsNone(events[0]["subject"])

    def test_access_log_off(self) -> None:
        """With --access-log off a request let through is an event without text (no line per
        request); a denied one is still written."""
        files = _Files(self.mktemp())
        policy = write_pem(files.dir, "policy.toml", policy_text("operator").encode())
        parsed = options(files.argv("--client-cert", "optional", "--policy", policy,
                                    "--access-log", "off", "--app", "tests._support.policy_app"))
        factory, _ = pieces(_tap.makeService(parsed))
        pki = shared_pki()
        with captured_events("certsrv.policy") as events:
            exchange(factory, client_tls_options(pki, pki.client), request_bytes("/health"))
            exchange(factory, client_tls_options(pki, pki.client), request_bytes("/admin"))
        self.assertEqual([e["policy_allowed"] for e in events], [True, False])
        self.assertIsNone(events[0]["log_format"])
        self.assertEqual(formatEvent(events[1]), "GET /admin: denied by admin for CN=alice")
