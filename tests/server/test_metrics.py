"""certsrv.server.metrics: Prometheus counters and /healthz, fed by the observer seam."""

from __future__ import annotations

import datetime
from typing import Any

import treq
from twisted.internet import defer, reactor
from twisted.trial.unittest import SynchronousTestCase, TestCase

from certsrv.server.metrics import Metrics, admin_site, count_lookups
from certsrv.tls.verify import ClientVerifier
from certsrv.web.limits import Limits
from tests._support import (
    captured_events,
    client_tls_options,
    clock_at_now,
    exchange,
    make_server_factory,
    shared_pki,
)


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


    def test_revocation_cache_age(self) -> None:
        """The age of the oldest OCSP answer in force: 0 before any, growing with the clock,
        back to 0 once it is refreshed."""
        from certsrv.revocation.decision import Scope
        from certsrv.revocation.ocspcheck import OCSPChecker, OCSPSettings
        from certsrv.server.metrics import CacheCollector
        from certsrv.testing import FakeOCSPResponder

        pki = shared_pki()
        clock = clock_at_now()
        responder = FakeOCSPResponder(pki.root, clock=clock,
                                      validity=datetime.timedelta(hours=1))
        checker = OCSPChecker(OCSPSettings(mode=Scope.LEAF, responder="http://127.0.0.1:9/",
                                           max_age=600), clock, responder)
        metrics = Metrics()
        metrics.collect_from(CacheCollector(lambda: [checker]))
        count_lookups(metrics, [checker])

        def age() -> float | None:
            return metrics.registry.get_sample_value(
                "certsrv_revocation_cache_oldest_age_seconds", {"source": "ocsp"})

        self.assertEqual(age(), 0.0)
        pair = checker.pair(pki.client.certificate, pki.root.certificate)
        assert pair is not None
        self.successResultOf(checker.check(pair))
        clock.advance(100)
        self.assertEqual(age(), 100.0)
        self.assertEqual(metrics.registry.get_sample_value(
            "certsrv_revocation_cache_entries", {"source": "ocsp"}), 1.0)
        clock.advance(460)  # its last minute of 600 s: refreshed ahead on the next use
        checker.lookup_until(pair)
        self.assertEqual(age(), 0.0)
        self.assertEqual(metrics.registry.get_sample_value(
            "certsrv_revocation_lookups_total", {"source": "ocsp", "outcome": "good"}), 2.0)
        clock.advance(50)
        self.assertIsNotNone(checker.lookup_until(pair))
        self.assertEqual(age(), 50.0)
        clock.advance(1000)  # past its expiry: nothing in force
        self.assertEqual(age(), 0.0)


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


class RefusalMetricsTests(SynchronousTestCase):
    """Limit refusals count as request rejections by reason; turned-away connections do not."""

    def test_counted(self) -> None:
        pki = shared_pki()
        factory = make_server_factory(pki.settings(), limits=Limits(max_body_bytes=1000,
                                                                    max_headers=5))
        site = factory.wrappedFactory
        site.observer = metrics = Metrics()
        large = b"POST /secure HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5000\r\n\r\n"
        many = (b"GET /secure HTTP/1.1\r\nHost: localhost\r\n"
                + b"".join(b"X-%d: y\r\n" % i for i in range(6)) + b"\r\n")
        for request, status in ((large, 413), (large, 413), (many, 431)):
            self.assertEqual(exchange(factory, client_tls_options(pki, pki.client),
                                      request).status, status)
        site.limits = Limits(max_connections=0)
        self.assertIsNone(factory.buildProtocol(None))  # turned away
        value = metrics.registry.get_sample_value
        self.assertEqual(value("certsrv_request_rejections_total",
                               {"reason": "body_too_large"}), 2.0)
        self.assertEqual(value("certsrv_request_rejections_total",
                               {"reason": "too_many_headers"}), 1.0)
        self.assertIsNone(value("certsrv_request_rejections_total",
                                {"reason": "max_connections"}))

