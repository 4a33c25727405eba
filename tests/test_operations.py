"""Operations: Prometheus metrics and health, graceful draining, certificate-expiry warnings."""

from __future__ import annotations

import datetime
from typing import Any

import treq
from twisted.internet import defer, reactor
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase

from certsrv.pki import CertificateAuthority
from certsrv.server.lifecycle import Drainer, ExpiryWatch
from certsrv.server.metrics import Metrics, admin_site, count_lookups
from certsrv.tls.context import ServerTLS
from certsrv.tls.verify import ClientVerifier
from tests._support import (
    DAY,
    captured_events,
    client_tls_options,
    clock_at_now,
    exchange,
    make_server_factory,
    shared_pki,
    utcnow,
)
from tests._support import Hold as _Hold


class MetricsTests(TestCase):
    """Decisions show up as Prometheus counters on the admin listener; /healthz answers."""

    timeout = 30

    @defer.inlineCallbacks
    def test_scrape(self) -> Any:
        """Handshakes and requests are counted as the site reports them: no log feed."""
        pki = shared_pki()
        metrics = Metrics()
        factory = make_server_factory(pki.settings())
        factory.wrappedFactory.observer = metrics
        self.assertEqual(exchange(factory, client_tls_options(pki, pki.client)).status, 200)
        exchange(factory, client_tls_options(pki, pki.client_cert("expired")))
        exchange(factory, client_tls_options(pki, None))
        ready = [True]
        port = reactor.listenTCP(  # type: ignore[attr-defined]
            0, admin_site(metrics, lambda: ready[0]), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        base = f"http://127.0.0.1:{port.getHost().port}"
        response = yield treq.get(f"{base}/metrics", persistent=False)
        text = (yield response.text()).splitlines()
        for line in ('certsrv_handshakes_total{decision="accepted",reason="none"} 1.0',
                     'certsrv_handshakes_total{decision="rejected",reason="expired"} 1.0',
                     'certsrv_handshakes_total{decision="rejected",reason="no_certificate"} 1.0',
                     'certsrv_requests_total{status="200"} 1.0'):
            self.assertIn(line, text)
        response = yield treq.get(f"{base}/healthz", persistent=False)
        self.assertEqual((response.code, (yield response.text())), (200, "ok\n"))
        ready[0] = False
        response = yield treq.get(f"{base}/healthz", persistent=False)
        self.assertEqual(response.code, 503)
        yield treq.content(response)

    def test_counts_reported_decisions_and_revocation_events(self) -> None:
        metrics = Metrics()
        metrics.revocation_lookup("ocsp", "good", 0.02)
        metrics.revocation_lookup("crl", "unknown", 5.0)
        metrics.reload_refused()
        metrics.request_refused("revoked")
        metrics.access_decided("not_allowed")
        value = metrics.registry.get_sample_value
        self.assertEqual(value("certsrv_revocation_lookups_total",
                               {"source": "ocsp", "outcome": "good"}), 1.0)
        self.assertEqual(value("certsrv_revocation_responder_seconds_count",
                               {"source": "crl"}), 1.0)
        self.assertEqual(value("certsrv_reloads_total", {"result": "refused"}), 1.0)
        self.assertEqual(value("certsrv_request_rejections_total", {"reason": "revoked"}), 1.0)
        self.assertEqual(value("certsrv_access_decisions_total", {"verdict": "not_allowed"}),
                         1.0)
        metrics.revocation_lookup("ocsp", "good", "soon")  # type: ignore[arg-type]
        metrics.handshakes = None  # type: ignore[assignment]
        metrics.accepted()  # a metrics bug never breaks a handshake

    def test_log_events_are_not_counted(self) -> None:
        """Decisions and lookups are counted when reported, never from log events: a renamed
        log field cannot stop a counter, and an event alone cannot start one."""
        from twisted.logger import Logger

        metrics = Metrics()
        Logger(namespace="certsrv.tls").warn("x", decision="rejected", reason="expired")
        Logger(namespace="certsrv.reload").info("x", reason="reloaded")
        Logger(namespace="certsrv.ocsp").info("x", outcome="good", seconds=1.0)
        for name, labels in (("certsrv_handshakes_total",
                              {"decision": "rejected", "reason": "expired"}),
                             ("certsrv_reloads_total", {"result": "ok"}),
                             ("certsrv_revocation_lookups_total",
                              {"source": "ocsp", "outcome": "good"})):
            self.assertIsNone(metrics.registry.get_sample_value(name, labels))

    def test_revocation_sources_report_their_lookups(self) -> None:
        """An OCSP query is counted by the checker reporting it (a fake responder here)."""
        from certsrv.revocation.decision import Scope
        from certsrv.revocation.ocspcheck import OCSPChecker, OCSPSettings
        from certsrv.testing import FakeOCSPResponder

        pki = shared_pki()
        responder = FakeOCSPResponder(pki.root)
        checker = OCSPChecker(OCSPSettings(mode=Scope.LEAF, responder="http://127.0.0.1:9/"),
                              clock_at_now(), responder)
        metrics = Metrics()
        count_lookups(metrics, [checker])
        pair = checker.pair(pki.client.certificate, pki.root.certificate)
        assert pair is not None
        self.successResultOf(checker.check(pair))
        self.assertEqual(metrics.registry.get_sample_value(
            "certsrv_revocation_lookups_total", {"source": "ocsp", "outcome": "good"}), 1.0)


_GET = b"GET /x HTTP/1.1\r\nHost: localhost\r\n\r\n"


class DrainTests(SynchronousTestCase):
    """On stop, connections close gracefully once answered, up to the drain timeout."""

    def setUp(self) -> None:
        self.pki = shared_pki()
        self.clock = clock_at_now()
        self.app = _Hold()
        verifier = ClientVerifier(self.clock)
        self.factory = make_server_factory(self.pki.settings(), verifier=verifier, app=self.app)
        self.site = self.factory.wrappedFactory
        self.drainer = Drainer(self.site, self.clock, timeout=30, grace=1.0)
        self.drainer.startService()

    def connect(self, request: bytes = _GET) -> tuple[Any, Any]:
        """A client connection over TLS in memory that sends ``request``; (client, pump)."""
        from certsrv.testing import open_in_memory
        from tests._support import HTTPClientProtocol

        http = HTTPClientProtocol(request)
        _, _, pump = open_in_memory(self.factory, client_tls_options(self.pki, self.pki.client),
                                    http)
        return http, pump

    def answer(self, pump: Any) -> None:
        """Answer the request the application holds."""
        request = self.app.held.pop()
        request.write(b"done")
        request.finish()
        pump.flush()

    def test_waits_for_the_response_to_be_written(self) -> None:
        http, pump = self.connect()
        self.assertEqual((self.site.inflight, self.site.connections), (1, 1))
        with captured_events("certsrv.lifecycle") as events:
            stopped = self.drainer.stopService()
            self.assertNoResult(stopped)
            request = self.app.held.pop()
            request.write(b"done")
            request.finish()
            # Finished, but not yet written to the client: still draining.
            self.assertNoResult(stopped)
            pump.flush()
            self.successResultOf(stopped)
        self.assertTrue(http.received.startswith(b"HTTP/1.1 200"), http.received)
        self.assertIn(b"\r\nConnection: close\r\n", http.received)
        self.assertTrue(http.received.endswith(b"4\r\ndone\r\n0\r\n\r\n"), http.received)
        self.assertIsNotNone(http.lost)
        self.assertEqual([e["reason"] for e in events], ["draining", "drained"])

    def test_idle_kept_alive_connection_closes_at_once(self) -> None:
        http, pump = self.connect()
        self.answer(pump)
        self.assertIn(b"\r\ndone\r\n", http.received)
        self.assertIsNone(http.lost, "kept alive")
        stopped = self.drainer.stopService()
        pump.flush()
        self.successResultOf(stopped)
        self.assertIsNotNone(http.lost)

    def test_new_connection_has_a_grace_to_begin_its_request(self) -> None:
        http, pump = self.connect(b"")
        stopped = self.drainer.stopService()
        self.clock.advance(0.5)
        http.transport.write(_GET)
        pump.flush()
        self.answer(pump)
        self.successResultOf(stopped)
        self.assertTrue(http.received.startswith(b"HTTP/1.1 200"), http.received)
        self.assertIn(b"\r\nConnection: close\r\n", http.received)

    def test_new_connection_sending_nothing_closes_after_the_grace(self) -> None:
        http, pump = self.connect(b"")
        stopped = self.drainer.stopService()
        pump.flush()
        self.assertNoResult(stopped)
        self.clock.advance(1.0)
        pump.flush()
        self.successResultOf(stopped)
        self.assertEqual(http.received, b"")

    def test_gives_up_after_timeout(self) -> None:
        self.connect()
        with captured_events("certsrv.lifecycle") as events:
            stopped = self.drainer.stopService()
            self.clock.advance(31)
        self.successResultOf(stopped)
        self.assertEqual([e["reason"] for e in events], ["draining", "drain_timeout"])

    def test_idle_server_stops_at_once(self) -> None:
        with captured_events("certsrv.lifecycle") as events:
            self.successResultOf(self.drainer.stopService())
        self.assertEqual(events, [])

    def test_children_stop_after_the_drain(self) -> None:
        from twisted.application import service

        child = service.Service()
        child.setServiceParent(self.drainer)  # started with its running parent
        _, pump = self.connect()
        stopped = self.drainer.stopService()
        self.assertTrue(child.running, "the --metrics listener answers while draining")
        self.answer(pump)
        self.successResultOf(stopped)
        self.assertFalse(child.running)


class ExpiryTests(SynchronousTestCase):
    """Warnings at start and daily when fewer than 30 days remain."""

    def test_warns_for_soon_expiring_server_certificate(self) -> None:
        pki = shared_pki()
        now = utcnow()
        soon = pki.root.issue_server("localhost", not_after=now + 10 * DAY)
        settings = pki.settings()
        settings = type(settings)(certificate=soon.certificate, private_key=soon.private_key,
                                  roots=settings.roots)
        clock = Clock()
        clock.advance(now.timestamp())
        watch = ExpiryWatch(ServerTLS(settings, ClientVerifier(clock)), clock)
        with captured_events("certsrv.lifecycle") as events:
            watch.startService()
        self.addCleanup(watch.stopService)
        self.assertEqual([e["subject"] for e in events], ["CN=localhost"])
        self.assertLess(events[0]["days"], 10.01)
        with captured_events("certsrv.lifecycle") as events:
            clock.advance(86400)
        self.assertEqual(len(events), 1, "checked again a day later")

    def test_quiet_when_far_from_expiry(self) -> None:
        pki = shared_pki()
        clock = clock_at_now()
        ca = CertificateAuthority.create(not_after=utcnow() + datetime.timedelta(days=3000))
        del ca
        watch = ExpiryWatch(ServerTLS(pki.settings(), ClientVerifier(clock)), clock)
        self.assertEqual(watch.check(), [])


class QuietAcceptTests(SynchronousTestCase):
    """``--log-accepted off``: the accepted event is still emitted, only without text."""

    def test_event_without_text(self) -> None:
        from twisted.logger import formatEvent

        pki = shared_pki()
        verifier = ClientVerifier(clock_at_now())
        verifier.log_accepted = False
        factory = make_server_factory(pki.settings(), verifier=verifier)
        metrics = Metrics()
        factory.wrappedFactory.observer = metrics
        with captured_events() as events:
            self.assertEqual(exchange(factory, client_tls_options(pki, pki.client)).status, 200)
        [event] = [e for e in events if e.get("decision") == "accepted"]
        self.assertIsNone(event["log_format"])
        self.assertEqual(formatEvent(event), "")
        self.assertEqual(event["subject"], "CN=alice")
        self.assertEqual(metrics.registry.get_sample_value(
            "certsrv_handshakes_total", {"decision": "accepted", "reason": "none"}), 1.0)
