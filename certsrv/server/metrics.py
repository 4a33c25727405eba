"""
Prometheus metrics and health, fed by certsrv's own structured log events.

Every decision certsrv makes is already one structured event (``decision``, ``reason``,
``outcome``, ...); counting those events keeps the metrics and the log in agreement and adds
no instrumentation to the hot paths beyond the event itself.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.twisted import MetricsResource
from twisted.application import service
from twisted.logger import ILogObserver, LogPublisher, globalLogPublisher
from twisted.web import resource, server
from zope.interface import implementer

from certsrv.web.limits import LimitedSite, Limits

__all__ = ["ADMIN_MAX_CONNECTIONS", "Metrics", "MetricsService", "admin_limits", "admin_site"]

# A scraper and a health checker need a few connections; a flood of the admin port must not
# take the file descriptors the TLS listener needs.
ADMIN_MAX_CONNECTIONS = 32
# /metrics and /healthz take no request body.
ADMIN_MAX_BODY_BYTES = 4096

_REVOCATION_SOURCES = {"certsrv.ocsp": "ocsp", "certsrv.crl": "crl"}


@implementer(ILogObserver)
class Metrics:
    """The server's counters, histograms and gauges, kept in their own registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.handshakes = Counter("certsrv_handshakes", "TLS handshakes by decision and reason",
                                  ["decision", "reason"], registry=r)
        self.rejections = Counter("certsrv_request_rejections",
                                  "Requests refused after the handshake, by reason",
                                  ["reason"], registry=r)
        self.requests = Counter("certsrv_requests", "HTTP requests by status code",
                                ["status"], registry=r)
        self.access = Counter("certsrv_access_decisions", "Access-policy decisions by verdict",
                              ["verdict"], registry=r)
        self.lookups = Counter("certsrv_revocation_lookups",
                               "OCSP queries and CRL downloads by source and outcome",
                               ["source", "outcome"], registry=r)
        self.latency = Histogram("certsrv_revocation_responder_seconds",
                                 "Time an OCSP responder or CRL distribution point took",
                                 ["source"], registry=r,
                                 buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5,
                                          10))
        self.reloads = Counter("certsrv_reloads", "Configuration reloads by result",
                               ["result"], registry=r)

    def __call__(self, event: dict[str, Any]) -> None:
        """Count one log event (an ILogObserver); never raises."""
        try:
            self._count(event)
        except Exception:  # a metrics bug must never break logging
            pass

    def _count(self, event: dict[str, Any]) -> None:
        namespace = event.get("log_namespace")
        if namespace == "certsrv.tls":
            decision = event.get("decision")
            if decision is None:
                return
            reason = str(event.get("reason") or "none")
            if event.get("stage") == "request":
                if decision == "rejected":
                    self.rejections.labels(reason).inc()
            else:
                self.handshakes.labels(decision, reason).inc()
        elif namespace in _REVOCATION_SOURCES:
            outcome = event.get("outcome")
            if outcome is None:
                return
            source = _REVOCATION_SOURCES[namespace]
            self.lookups.labels(source, str(outcome)).inc()
            seconds = event.get("seconds")
            if isinstance(seconds, int | float):
                self.latency.labels(source).observe(seconds)
        elif namespace == "certsrv.limits":
            refusal = event.get("reason")
            if refusal is not None and refusal != "max_connections":
                self.rejections.labels(str(refusal)).inc()
        elif namespace == "certsrv.policy":
            self.access.labels(str(event.get("policy_reason"))).inc()
        elif namespace == "certsrv.reload":
            outcome = event.get("reason")
            if outcome == "reloaded":
                self.reloads.labels("ok").inc()
            elif outcome == "reload_refused":
                self.reloads.labels("refused").inc()

    def request_finished(self, status: int) -> None:
        """Count one answered request."""
        self.requests.labels(str(status)).inc()

    def gauge(self, name: str, documentation: str, value: Callable[[], float]) -> None:
        """A gauge computed at scrape time."""
        Gauge(name, documentation, registry=self.registry).set_function(value)

    def collect_from(self, collector: Collector) -> None:
        """Add a custom collector (e.g. revocation cache statistics)."""
        self.registry.register(collector)


class CacheCollector(Collector):
    """Entries and hits of the revocation caches, read at scrape time."""

    def __init__(self, checkers: Callable[[], Iterable[Any]]) -> None:
        self.checkers = checkers

    def collect(self) -> Iterable[GaugeMetricFamily]:
        entries = GaugeMetricFamily("certsrv_revocation_cache_entries",
                                    "Answers held in the revocation caches", labels=["source"])
        hits = GaugeMetricFamily("certsrv_revocation_cache_hits",
                                 "Lookups answered from the revocation caches",
                                 labels=["source"])
        for checker in self.checkers():
            source = "crl" if type(checker).__name__.startswith("CRL") else "ocsp"
            entries.add_metric([source], len(checker))
            hits.add_metric([source], getattr(checker, "hits", 0))
        yield entries
        yield hits


class MetricsService(service.Service):
    """Feeds log events to the metrics while running."""

    def __init__(self, metrics: Metrics, publisher: LogPublisher | None = None) -> None:
        self.metrics = metrics
        self.publisher = publisher or globalLogPublisher

    def startService(self) -> None:
        super().startService()
        self.publisher.addObserver(self.metrics)

    def stopService(self) -> None:
        super().stopService()
        self.publisher.removeObserver(self.metrics)


class _Health(resource.Resource):
    isLeaf = True

    def __init__(self, ready: Callable[[], bool]) -> None:
        super().__init__()
        self.ready = ready

    def render_GET(self, request: server.Request) -> bytes:
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        request.setHeader(b"cache-control", b"no-store")
        if self.ready():
            return b"ok\n"
        request.setResponseCode(503)
        return b"not ready\n"


def admin_limits(limits: Limits) -> Limits:
    """The main listener's limits, with the admin listener's smaller connection and body caps."""
    return dataclasses.replace(
        limits, max_connections=min(limits.max_connections, ADMIN_MAX_CONNECTIONS),
        max_body_bytes=min(limits.max_body_bytes, ADMIN_MAX_BODY_BYTES))


def admin_site(metrics: Metrics, ready: Callable[[], bool], limits: Limits | None = None
               ) -> LimitedSite:
    """The admin listener's site: ``/metrics`` (Prometheus text format) and ``/healthz``."""
    root = resource.Resource()
    root.putChild(b"metrics", MetricsResource(registry=metrics.registry))
    root.putChild(b"healthz", _Health(ready))
    return LimitedSite(root, limits=admin_limits(limits or Limits()), name="--metrics")
