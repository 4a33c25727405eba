"""certsrv.server.lifecycle: graceful draining on stop, certificate-expiry warnings."""

from __future__ import annotations

import datetime
from typing import Any

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from certsrv.pki import CertificateAuthority
from certsrv.server.lifecycle import Drainer, ExpiryWatch, Lingering
from certsrv.tls.context import ServerTLS
from certsrv.tls.verify import ClientVerifier
from tests._support import (
    DAY,
    captured_events,
    client_tls_options,
    clock_at_now,
    make_server_factory,
    shared_pki,
    utcnow,
)
from tests._support import Hold as _Hold

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


class LingeringTests(SynchronousTestCase):
    """--drain-delay: told to stop, the node says so at once and stops its children later."""

    def node(self, delay: float) -> tuple[Clock, Lingering, Any]:
        from twisted.application import service

        clock = Clock()
        node = Lingering(clock, delay)
        listener = service.Service()
        listener.setServiceParent(node)
        node.startService()
        return clock, node, listener

    def test_children_stop_after_the_delay(self) -> None:
        clock, node, listener = self.node(2.5)
        with captured_events("certsrv.lifecycle") as events:
            stopped = node.stopService()
        self.assertFalse(node.running, "/healthz must answer 503 from the start")
        self.assertTrue(listener.running, "the listeners serve during the delay")
        self.assertEqual([e["reason"] for e in events], ["draining"])
        clock.advance(2.4)
        self.assertNoResult(stopped)
        self.assertTrue(listener.running)
        clock.advance(0.1)
        self.successResultOf(stopped)
        self.assertFalse(listener.running)

    def test_no_delay_stops_at_once(self) -> None:
        _, node, listener = self.node(0)
        with captured_events("certsrv.lifecycle") as events:
            self.successResultOf(node.stopService())
        self.assertFalse(listener.running)
        self.assertEqual(events, [])


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

