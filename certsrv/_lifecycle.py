"""Operating the server over time: graceful draining on stop, and certificate-expiry warnings."""

from __future__ import annotations

import signal
from typing import Any

from cryptography import x509
from twisted.application import service
from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from certsrv._tls import ServerTLS
from certsrv._web import CertsrvSite

__all__ = ["Drainer", "ExpiryWatch", "exit_zero_on_sigterm"]

_log = Logger(namespace="certsrv.lifecycle")
DAY = 86400.0


def exit_zero_on_sigterm(reactor: Any) -> None:
    """Make a SIGTERM stop end with status 0 once shutdown has run its course."""

    def clear() -> None:
        # twistd re-raises the signal that stopped the reactor, so a SIGTERM stop would end
        # with status 143; after an orderly drain, SIGTERM is the normal way to stop.
        if getattr(reactor, "_exitSignal", None) == signal.SIGTERM:
            reactor._exitSignal = None

    reactor.addSystemEventTrigger("after", "shutdown", clear)


class Drainer(service.Service):
    """On stop, lets requests in flight finish, up to ``timeout`` seconds."""

    def __init__(self, site: CertsrvSite, clock: IReactorTime, timeout: float,
                 reactor: Any = None) -> None:
        self.site = site
        self.clock = clock
        self.timeout = timeout
        self.reactor = reactor

    def startService(self) -> None:
        super().startService()
        if self.reactor is not None:
            exit_zero_on_sigterm(self.reactor)

    def stopService(self) -> defer.Deferred[None] | None:
        super().stopService()
        self.site.draining = True
        waiting = self.site.inflight
        if waiting == 0:
            return None
        _log.info("draining {count} requests in flight (up to {timeout} s)", count=waiting,
                  timeout=self.timeout, reason="draining")
        done = self.site.when_idle()
        done.addTimeout(self.timeout, self.clock)

        def timed_out(failure: Any) -> None:
            failure.trap(defer.TimeoutError)
            _log.warn("drain timeout: {count} requests still in flight are cut off",
                      count=self.site.inflight, reason="drain_timeout")

        done.addErrback(timed_out)
        return done


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
