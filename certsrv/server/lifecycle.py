"""Operating the server over time: graceful draining on stop, and certificate-expiry warnings."""

from __future__ import annotations

import signal
from collections.abc import Callable
from typing import Any

from cryptography import x509
from twisted.application import service
from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall, deferLater
from twisted.logger import Logger

from certsrv._compat import clear_exit_signal, exit_signal
from certsrv.tls.context import ServerTLS
from certsrv.web.site import CertsrvSite

__all__ = ["Drainer", "ExpiryWatch", "Lingering", "exit_zero_on_sigterm"]

_log = Logger(namespace="certsrv.lifecycle")
DAY = 86400.0
# Seconds a connection that has not begun a request when the drain starts has to begin one
# (a request already on its way is answered, not refused); for HTTP/2, the time between the
# two GOAWAY frames.
DRAIN_GRACE = 1.0


def exit_zero_on_sigterm(reactor: Any) -> None:
    """Make a SIGTERM stop end with status 0, and a SIGTERM while stopping harmless."""
    stopping = False

    def stopped() -> None:
        nonlocal stopping
        stopping = True

    def guard_sigterm() -> None:
        # Another SIGTERM while stopping (systemd signals every process of a unit, and the
        # supervisor forwards its own) would make Twisted log a ReactorNotRunning traceback.
        twisted_handler = signal.getsignal(signal.SIGTERM)
        if not callable(twisted_handler):
            return  # the reactor runs without signal handlers
        handler: Callable[[int, Any], Any] = twisted_handler

        def stop_once(signum: int, frame: Any) -> None:
            if stopping:
                reactor.callFromThread(_log.info, "SIGTERM again: already stopping",
                                       reason="stopping")
            else:
                stopped()
                handler(signum, frame)

        signal.signal(signal.SIGTERM, stop_once)

    def clear() -> None:
        # twistd re-raises the signal that stopped the reactor, so a SIGTERM stop would end
        # with status 143; after an orderly drain, SIGTERM is the normal way to stop.
        if exit_signal(reactor) == signal.SIGTERM:
            clear_exit_signal(reactor)

    reactor.callWhenRunning(guard_sigterm)  # Twisted's handlers are installed by then
    reactor.addSystemEventTrigger("before", "shutdown", stopped)
    reactor.addSystemEventTrigger("after", "shutdown", clear)


class Lingering(service.MultiService):
    """A node's services, stopped ``delay`` seconds after being told to stop."""

    # ``running`` turns False at once, so /healthz answers 503, while the listeners still
    # accept and serve: a load balancer's health check takes the node out before new
    # connections would be refused (--drain-delay). Then the children stop, the drain first.

    def __init__(self, clock: IReactorTime, delay: float = 0.0) -> None:
        super().__init__()
        self.clock = clock
        self.delay = delay

    def stopService(self) -> defer.Deferred[Any]:
        if self.delay <= 0 or not self.running:
            return super().stopService()  # type: ignore[no-any-return]
        service.Service.stopService(self)
        _log.info("stopping in {delay} s: /healthz answers 503, new connections are still "
                  "served meanwhile", delay=self.delay, reason="draining")
        later = deferLater(self.clock, self.delay, lambda: None)
        return later.addCallback(lambda _: service.MultiService.stopService(self))


class Drainer(service.MultiService):
    """On stop, closes the site's connections gracefully, then stops its children."""

    # The listeners, its siblings, stop at once. Idle connections close at once, the others
    # once their responses are written; past ``timeout`` the rest are cut off. Only then do its
    # children (the --metrics listener, whose /healthz says 503 meanwhile) stop.

    def __init__(self, site: CertsrvSite, clock: IReactorTime, timeout: float,
                 reactor: Any = None, grace: float = DRAIN_GRACE) -> None:
        super().__init__()
        self.site = site
        self.clock = clock
        self.timeout = timeout
        self.reactor = reactor
        self.grace = grace

    def startService(self) -> None:
        # One more user of the site than its listeners, released once drained: the last
        # listener stopping would otherwise stop the site and close its access log.
        self.site.doStart()
        super().startService()
        if self.reactor is not None:
            exit_zero_on_sigterm(self.reactor)

    def stopService(self) -> defer.Deferred[Any]:
        service.Service.stopService(self)  # the children stop after the drain
        drained = self._drain()
        drained.addCallback(self._after_drain)
        return drained

    def _drain(self) -> defer.Deferred[None]:
        site = self.site
        connections, requests = site.connections, site.inflight
        site.drain(self.grace)
        if connections == 0:
            return defer.succeed(None)
        _log.info("draining {requests} requests in flight on {connections} connections (up to "
                  "{timeout} s)", requests=requests, connections=connections,
                  timeout=self.timeout, reason="draining")
        started = self.clock.seconds()
        closed = site.when_closed()
        closed.addTimeout(self.timeout, self.clock)

        def drained(_: None) -> None:
            _log.info("drained: every connection closed after {seconds:.1f} s",
                      seconds=self.clock.seconds() - started, reason="drained")

        def timed_out(failure: Any) -> None:
            failure.trap(defer.TimeoutError)
            _log.warn("drain timeout: {requests} requests in flight on {connections} "
                      "connections are cut off", requests=site.inflight,
                      connections=site.connections, reason="drain_timeout")
            site.abort()

        return closed.addCallbacks(drained, timed_out)

    def _after_drain(self, _: None) -> defer.Deferred[Any]:
        self.site.doStop()
        stopping = [defer.maybeDeferred(child.stopService) for child in reversed(list(self))]
        return defer.DeferredList(stopping)


class ExpiryWatch(service.Service):
    """Warns at start and daily when the server certificate or a CA nears its expiry."""

    def __init__(self, tls: ServerTLS, clock: IReactorTime, warn_days: float = 30.0) -> None:
        self.tls = tls
        self.clock = clock
        self.warn_days = warn_days
        self._loop: LoopingCall | None = None

    def startService(self) -> None:
        super().startService()
        self._loop = LoopingCall(self.check)
        self._loop.clock = self.clock
        self._loop.start(DAY, now=True)

    def stopService(self) -> None:
        super().stopService()
        if self._loop is not None and self._loop.running:
            self._loop.stop()

    def check(self) -> list[str]:
        """Log one warning per certificate expiring within ``warn_days``; return their names."""
        settings = self.tls.settings
        named: list[tuple[str, x509.Certificate]] = [("server certificate", settings.certificate)]
        named += [("server chain certificate", c) for c in settings.chain]
        named += [("trusted CA", c) for c in settings.roots]
        named += [("intermediate CA", c) for c in settings.intermediates]
        now = self.clock.seconds()
        warned = []
        for what, cert in named:
            left = (cert.not_valid_after_utc.timestamp() - now) / DAY
            if left < self.warn_days:
                subject = cert.subject.rfc4514_string()
                _log.warn("{what} {subject} expires in {days:.1f} days", what=what,
                          subject=subject, days=left, reason="certificate_expiring")
                warned.append(subject)
        return warned
