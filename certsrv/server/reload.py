"""Reloading configuration without a restart: when a file it is read from changes, and on SIGHUP.

Every ``--watch-interval`` seconds the reloader looks at the files ``ServerConfig.files()``
names (``certsrv.server.watch``: ``stat`` calls, off the reactor thread); when one changed it
reads them all and puts them in force. Files that do not load (a half-written file, a
certificate with the old key) are refused, logged once, and the running configuration
stays; they are tried again when a file changes, and at every look while the problem is the
server certificate (one not valid yet becomes valid as they are; its check comes first, so
a retry repeats no warning).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from typing import Any

from twisted.application import service
from twisted.internet import defer, threads
from twisted.internet.interfaces import IReactorFromThreads, IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from certsrv.exceptions import ConfigurationError
from certsrv.revocation.decision import Revocation
from certsrv.server import watch
from certsrv.server.config import ServerConfig
from certsrv.server.watch import Snapshot
from certsrv.tls.context import Current
from certsrv.tls.observer import NULL_OBSERVER, Observer

__all__ = ["Offload", "Reloader", "in_threads"]

_log = Logger(namespace="certsrv.reload")

# Runs disk work somewhere (a thread) and gives its result.
Offload = Callable[[Callable[[], Any]], "defer.Deferred[Any]"]


def _inline(work: Callable[[], Any]) -> defer.Deferred[Any]:
    return defer.maybeDeferred(work)


def in_threads(reactor: Any) -> Offload:
    """Run the disk work in the reactor's thread pool."""
    return lambda work: threads.deferToThreadPool(reactor, reactor.getThreadPool(), work)


class Reloader(service.Service):
    """Re-reads the configuration's files when they change and on SIGHUP; a bad file changes
    nothing.

    A good reload replaces the configuration in force (``current``: the TLS settings and
    the verifier), which the TLS connection creator and the site both read. ``files`` is
    what the configuration in force was loaded from (default: the files as they are now);
    ``offload`` runs the disk work (default: at once, in the caller's thread).
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
        offload: Offload = _inline,
        files: Snapshot | None = None,
    ) -> None:
        self.revocation = revocation
        self.config = config
        self.current = current
        self.observer = observer
        self.clock = clock
        self.interval = interval
        self.reactor = reactor
        self.offload = offload
        self.reloads = 0
        self.paths = config.files()
        # The files of the configuration in force, and the files as last read.
        self.in_force = files if files is not None else watch.take(self.paths)
        self.seen = self.in_force
        self._refused: tuple[object, ...] | None = None
        self._retry = False
        # One look or reload at a time, so an older snapshot never replaces a newer one.
        self._lock = defer.DeferredLock()
        self._loop: LoopingCall | None = None
        self._previous_handler: Any = None

    def startService(self) -> None:
        super().startService()
        if self.interval > 0:
            self._loop = LoopingCall(self.check)
            self._loop.clock = self.clock
            self._loop.start(self.interval, now=False)
        if self.reactor is not None and threading.current_thread() is threading.main_thread():
            reactor = self.reactor
            self._previous_handler = signal.signal(
                signal.SIGHUP,
                lambda signum, frame: reactor.callFromThread(self.refresh, "SIGHUP"),
            )

    def stopService(self) -> None:
        super().stopService()
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        if self._previous_handler is not None:
            signal.signal(signal.SIGHUP, self._previous_handler)
            self._previous_handler = None

    def check(self) -> defer.Deferred[bool | None]:
        """One look at the files; a reload if their contents changed (None: they did not)."""
        return self._lock.run(self._check)

    def _check(self) -> defer.Deferred[bool | None]:
        known = self.seen
        looked = self.offload(lambda: watch.scan(known))
        return looked.addCallbacks(self._consider, self._failed, errbackArgs=("look",))

    def _consider(self, snapshot: Snapshot | None) -> bool | None:
        news: list[str] = []  # files whose contents differ from the last read
        if snapshot is not None:
            news, self.seen = snapshot.differing(self.seen), snapshot
        changed = self.seen.differing(self.in_force)
        if not changed:
            # The contents in force (touched, rewritten alike, put back): remember their stat.
            self.in_force, self._refused, self._retry = self.seen, None, False
            return None
        if not (news or self._retry) or not self.running:
            return None
        return self.apply(self.seen, f"{', '.join(changed)} changed")

    def refresh(self, why: str = "SIGHUP") -> defer.Deferred[bool]:
        """Read every file (with ``offload``) and put them in force, changed or not."""
        def reload() -> defer.Deferred[bool]:
            read = self.offload(lambda: watch.take(self.paths))
            return read.addCallbacks(self.apply, self._failed, (why,), errbackArgs=(why,))
        return self._lock.run(reload)

    def reload(self, why: str) -> bool:
        """Read every file now, in this thread, and put them in force if they load."""
        return self.apply(watch.take(self.paths), why)

    def apply(self, snapshot: Snapshot, why: str) -> bool:
        """Build a new configuration from ``snapshot``; keep the old one on error."""
        self.seen = snapshot
        try:
            settings, verifier = self.config.load(self.clock, self.revocation,
                                                  snapshot.contents)
            if why == "SIGHUP" and self.revocation is not None:
                # An operator who revoked a certificate and sent SIGHUP wants it seen now.
                self.revocation.forget()
            self.current.replace(settings, verifier)
        except ConfigurationError as e:
            self._retry = e.source == self.config.cert
            if self._first_refusal(snapshot, why, str(e)):
                _log.error("reload ({why}) refused, the running configuration stays until the "
                           "files load: {error}", why=why, error=str(e),
                           reason="reload_refused", source=e.source)
                self.observer.reload_refused()
            return False
        except Exception:
            self._retry = False
            if self._first_refusal(snapshot, why, Failure().getErrorMessage()):
                _log.failure("reload ({why}) failed, the running configuration stays", why=why)
            return False
        self.in_force, self._refused, self._retry = snapshot, None, False
        self.reloads += 1
        self.observer.reloaded()
        _log.info("configuration reloaded ({why}); open connections use it from their next "
                  "request", why=why, reason="reloaded", crls=len(self.config.crls))
        return True

    def _first_refusal(self, snapshot: Snapshot, why: str, error: str) -> bool:
        """Whether this refusal is news: files and error not already refused (SIGHUP always
        is: the operator asked)."""
        key = (tuple(sorted(snapshot.digests.items())), error)
        news = key != self._refused or why == "SIGHUP"
        self._refused = key
        return news

    def _failed(self, failure: Failure, why: str) -> bool:
        _log.failure("reading the configuration's files ({why}) failed", failure, why=why)
        return False
