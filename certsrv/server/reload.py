"""Reloading configuration without a restart: on SIGHUP, and when a CRL file changes."""

from __future__ import annotations

import os
import signal
import threading
from typing import Any

from twisted.application import service
from twisted.internet.interfaces import IReactorFromThreads, IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from certsrv.exceptions import ConfigurationError
from certsrv.revocation.decision import Revocation
from certsrv.server.config import ServerConfig
from certsrv.tls.context import Current
from certsrv.tls.observer import NULL_OBSERVER, Observer

__all__ = ["Reloader"]

_log = Logger(namespace="certsrv.reload")


def _mtime(path: str) -> float | None:
    try:
        return os.stat(path).st_mtime_ns / 1e9
    except OSError:
        return None


class Reloader(service.Service):
    """Re-reads every file on SIGHUP and the CRLs when they change; a bad file changes nothing.

    A good reload replaces the configuration in force (``current``: the TLS settings and
    the verifier), which the TLS connection creator and the site both read.
    """

    def __init__(
        self,
        config: ServerConfig,
        current: Current,
        clock: IReactorTime,
        interval: float = 5.0,
        reactor: IReactorFromThreads | None = None,
        revocation: Revocation | None = None,
        observer: Observer = NULL_OBSERVER,
    ) -> None:
        self.revocation = revocation
        self.config = config
        self.current = current
        self.observer = observer
        self.clock = clock
        self.interval = interval
        self.reactor = reactor
        self.reloads = 0
        self._seen = self._crl_mtimes()
        self._loop: LoopingCall | None = None
        self._previous_handler: Any = None

    def startService(self) -> None:
        super().startService()
        if self.interval > 0 and self.config.crls:
            self._loop = LoopingCall(self.check_crls)
            self._loop.clock = self.clock
            self._loop.start(self.interval, now=False)
        if self.reactor is not None and threading.current_thread() is threading.main_thread():
            reactor = self.reactor
            self._previous_handler = signal.signal(
                signal.SIGHUP,
                lambda signum, frame: reactor.callFromThread(self.reload, "SIGHUP"),
            )

    def stopService(self) -> None:
        super().stopService()
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        if self._previous_handler is not None:
            signal.signal(signal.SIGHUP, self._previous_handler)
            self._previous_handler = None

    def _crl_mtimes(self) -> dict[str, float | None]:
        return {path: _mtime(path) for path in self.config.crls}

    def check_crls(self) -> None:
        """Reload when any CRL file's modification time changed since the last look."""
        seen = self._crl_mtimes()
        if seen != self._seen:
            self._seen = seen
            self.reload("CRL file changed")

    def reload(self, why: str) -> bool:
        """Build a new TLS context from the files as they are now; keep the old one on error."""
        try:
            settings, verifier = self.config.load(self.clock, self.revocation)
            if why == "SIGHUP" and self.revocation is not None:
                # An operator who revoked a certificate and sent SIGHUP wants it seen now.
                self.revocation.forget()
            self.current.replace(settings, verifier)
        except ConfigurationError as e:
            _log.error("reload ({why}) refused, the running configuration stays: {error}",
                       why=why, error=str(e), reason="reload_refused", source=e.source)
            self.observer.reload_refused()
            return False
        except Exception:
            _log.failure("reload ({why}) failed, the running configuration stays", why=why)
            return False
        self.reloads += 1
        self.observer.reloaded()
        _log.info("configuration reloaded ({why}); open connections use it from their next "
                  "request", why=why,
                  reason="reloaded", crls=len(self.config.crls))
        return True
