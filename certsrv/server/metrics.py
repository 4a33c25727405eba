"""
Prometheus metrics and health, fed through the ``Observer`` interface the components call.

The verifier, the site, the gate, the limits and the reloader report each decision to
``Metrics`` by calling it (``certsrv.tls.observer.Observer``), beside the log event they
write for people: renaming a log field cannot stop a counter. The revocation sources report
each responder query and CRL download through their ``on_lookup`` (``count_lookups``).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Iterable
from typing import Any, ParamSpec

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.twisted import MetricsResource
from twisted.web import resource, server

from certsrv.web.limits import LimitedSite, Limits

__all__ = ["ADMIN_MAX_CONNECTIONS", "Metrics", "admin_limits", "admin_site", "count_lookups"]

# A scraper and a health checker need a few connections; a flood of the admin port must not
# take the file descriptors the TLS listener needs.
ADMIN_MAX_CONNECTIONS = 32
# /metrics and /healthz take no request body.
ADMIN_MAX_BODY_BYTES = 4096

_P = ParamSpec("_P")


def _never_raises(count: Callable[_P, None]) -> Callable[_P, None]:
    """A counting method that swallows its own errors: a metrics bug must never break a
    handshake, a request or a reload."""

    @functools.wraps(count)
    def guarded(*args: _P.args, **kwargs: _P.kwargs) -> None:
        try:
            count(*args, **kwargs)
        except Exception:
            pass

    return guarded


class Metrics:
    """The server's counters, histograms and gauges, kept in their own registry; an
    ``Observer`` (``certsrv.tls.observer``) of every decision."""

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

    # The Observer interface: one method per decision, each a labelled count.

    @_never_raises
    def accepted(self, reason: str | None = None) -> None:
        """Count an accepted handshake (``reason``: a problem it was accepted despite)."""
        self.handshakes.labels("accepted", reason or "none").inc()

    @_never_raises
    def anonymous(self) -> None:
        """Count a handshake completed without a client certificate."""
        self.handshakes.labels("anonymous", "no_certificate").inc()

    @_never_raises
    def rejected(self, reason: str) -> None:
        """Count a refused handshake by reason."""
        self.handshakes.labels("rejected", reason).inc()

    @_never_raises
    def request_refused(self, reason: str) -> None:
        """Count a request refused after the handshake, by reason."""
        self.rejections.labels(reason).inc()

    @_never_raises
    def access_decided(self, reason: str) -> None:
        """Count an access decision by its reason."""
        self.access.labels(reason).inc()

    @_never_raises
    def request_finished(self, status: int) -> None:
        """Count one answered request."""
        self.requests.labels(str(status)).inc()

    @_never_raises
    def reloaded(self) -> None:
        """Count a reload that put a new configuration in force."""
        self.reloads.labels("ok").inc()

    @_never_raises
    def reload_refused(self) -> None:
        """Count a reload refused for an unusable file."""
        self.reloads.labels("refused").inc()

    @_never_raises
    def revocation_lookup(self, source: str, outcome: str, seconds: float | None) -> None:
        """Count an OCSP query or CRL download (``source``: ocsp or crl) and its duration."""
        self.lookups.labels(source, outcome).inc()
        if seconds is not None:
            self.latency.labels(source).observe(seconds)

    def gauge(self, name: str, documentation: str, value: Callable[[], float]) -> None:
        """A gauge computed at scrape time."""
        Gauge(name, documentation, registry=self.registry).set_function(value)

    def collect_from(self, collector: Collector) -> None:
        """Add a custom collector (e.g. revocation cache statistics)."""
        self.registry.register(collector)


class CacheCollector(Collector):
    """Entries, hits and the oldest answer's age of the revocation caches, read at scrape
    time."""

    def __init__(self, checkers: Callable[[], Iterable[Any]]) -> None:
        self.checkers = checkers

    def collect(self) -> Iterable[GaugeMetricFamily]:
        entries = GaugeMetricFamily("certsrv_revocation_cache_entries",
                                    "Answers held in the revocation caches", labels=["source"])
        hits = GaugeMetricFamily("certsrv_revocation_cache_hits",
                                 "Lookups answered from the revocation caches",
                                 labels=["source"])
        # Each node fetches on its own: this age is how far behind the responders (or the
        # other nodes) this one may be for some certificate (docs/revocation.rst).
        age = GaugeMetricFamily("certsrv_revocation_cache_oldest_age_seconds",
                                "Seconds since the oldest revocation answer still in force "
                                "was fetched (0: none)", labels=["source"])
        for checker in self.checkers():
            source = "crl" if type(checker).__name__.startswith("CRL") else "ocsp"
            entries.add_metric([source], len(checker))
            hits.add_metric([source], getattr(checker, "hits", 0))
            oldest = getattr(checker, "oldest_age", None)
            age.add_metric([source], oldest() if oldest is not None else 0.0)
        yield entries
        yield hits
        yield age


def count_lookups(metrics: Metrics, checkers: Iterable[Any]) -> None:
    """Have each revocation source report its responder queries and CRL downloads."""
    for checker in checkers:
        checker.on_lookup = metrics.revocation_lookup


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
    site = LimitedSite(root, limits=admin_limits(limits or Limits()), name="--metrics")
    site.observer = metrics  # its limit refusals count too
    return site
