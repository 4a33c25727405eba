"""
``--workers N``: N server processes on one port, supervised by the parent.

Each worker is a full ``twistd certsrv`` with its own reactor, listening on its own socket with
SO_REUSEPORT so that the kernel spreads connections evenly across them. The parent accepts
nothing: it refuses to start when another process already uses a port, holds a bound (not
listening) socket per port, restarts workers that die, and forwards SIGHUP (reload) and SIGTERM
(graceful stop). Each worker watches a pipe from the supervisor: when the supervisor is gone,
however it went and even if it went before the worker started, the pipe reads end-of-file and
the worker stops, so workers of an old configuration never share the port with a new one.
"""

from __future__ import annotations

import os
import signal
import socket
import stat
import sys
from collections.abc import Callable, Sequence
from typing import Any

from twisted.application import service
from twisted.internet import defer, fdesc, protocol
from twisted.internet.error import ProcessDone, ReactorNotRunning
from twisted.internet.interfaces import IListeningPort, IProtocolFactory, IReadDescriptor
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from certsrv.server.endpoints import TCPAddress, check_free

__all__ = [
    "ParentWatch",
    "ReadyNotice",
    "ReusePortService",
    "Supervisor",
    "worker_argv",
]

_log = Logger(namespace="certsrv.workers")


class ReusePortService(service.Service):
    """Listens on ``address`` (with SO_REUSEPORT when shared), serving ``factory`` (in a worker)."""

    def __init__(self, address: TCPAddress, factory: IProtocolFactory, reactor: Any,
                 share: bool = True) -> None:
        self.address = address
        self.factory = factory
        self.reactor = reactor
        self.share = share
        self.port: IListeningPort | None = None

    def startService(self) -> None:
        super().startService()
        sock = self.address.socket(listen=True, share=self.share)
        try:
            self.port = self.reactor.adoptStreamPort(sock.fileno(), self.address.family,
                                                     self.factory)
        finally:
            sock.close()  # the reactor holds its own duplicate of the descriptor

    def stopService(self) -> defer.Deferred[Any] | None:
        super().stopService()
        if self.port is not None:
            port, self.port = self.port, None
            stopped: defer.Deferred[Any] = defer.maybeDeferred(port.stopListening)
            return stopped
        return None


@implementer(IReadDescriptor)
class _PipeReader:
    """Reads (and discards) a pipe until end-of-file, then calls ``gone``."""

    def __init__(self, fd: int, gone: Callable[[], None]) -> None:
        self.fd = fd
        self.gone = gone

    def fileno(self) -> int:
        return self.fd

    def doRead(self) -> Any:
        return fdesc.readFromFD(self.fd, lambda data: None)

    def connectionLost(self, reason: Failure) -> None:
        self.gone()

    def logPrefix(self) -> str:
        return "supervisor-pipe"


SUPERVISOR_FD = 0


class ParentWatch(service.Service):
    """Stops a worker whose supervisor has gone (it would otherwise serve unsupervised)."""

    def __init__(self, reactor: Any, fd: int = SUPERVISOR_FD) -> None:
        self.reactor = reactor
        self.fd = fd
        self._reader: _PipeReader | None = None

    def startService(self) -> None:
        super().startService()
        # The supervisor holds the only writing end of the worker's standard input: the
        # kernel closes it when the supervisor exits, even by SIGKILL, even before now.
        try:
            is_pipe = stat.S_ISFIFO(os.fstat(self.fd).st_mode)
        except OSError:
            is_pipe = False
        if not is_pipe:
            _log.warn("standard input is not a pipe from a supervisor: this worker will not "
                      "notice when its supervisor stops", reason="not_supervised")
            return
        fdesc.setNonBlocking(self.fd)
        self._reader = _PipeReader(self.fd, self._gone)
        self.reactor.addReader(self._reader)

    def stopService(self) -> None:
        super().stopService()
        reader, self._reader = self._reader, None
        if reader is not None:
            self.reactor.removeReader(reader)

    def _gone(self) -> None:
        if self._reader is None:
            return
        self._reader = None
        _log.warn("the supervisor is gone; this worker stops", reason="orphaned")
        try:
            self.reactor.stop()
        except ReactorNotRunning:
            pass  # already stopping


READY_FD = 3


class ReadyNotice(service.Service):
    """Tells the supervisor (on fd 3) that this worker runs and handles SIGHUP."""

    def __init__(self, reactor: Any) -> None:
        self.reactor = reactor

    def startService(self) -> None:
        super().startService()
        self.reactor.callWhenRunning(self._notify)

    def _notify(self) -> None:
        try:
            os.write(READY_FD, b"ready\n")
            os.close(READY_FD)
        except OSError:
            pass  # not started by a supervisor


class _Worker(protocol.ProcessProtocol):
    def __init__(self, supervisor: Supervisor, index: int) -> None:
        self.supervisor = supervisor
        self.index = index
        self.ended: defer.Deferred[None] = defer.Deferred()
        self.started_at = supervisor.reactor.seconds()
        self.ready = False
        self.reload_pending = False

    def childDataReceived(self, fd: int, data: bytes) -> None:
        if fd == READY_FD and b"ready" in data and not self.ready:
            self.ready = True
            if self.reload_pending:
                self.reload_pending = False
                if self.transport is not None:
                    self.transport.signalProcess("HUP")

    def processEnded(self, reason: Any) -> None:
        self.ended.callback(None)
        self.supervisor.ended(self, reason)


class Supervisor(service.Service):
    """Runs ``count`` workers from ``argv`` and keeps them running until stopped."""

    def __init__(self, count: int, argv: Sequence[str], addresses: Sequence[TCPAddress],
                 reactor: Any, stop_timeout: float = 35.0, env: dict[str, str] | None = None
                 ) -> None:
        self.count = count
        self.argv = list(argv)
        self.addresses = list(addresses)
        self.reactor = reactor
        self.stop_timeout = stop_timeout
        self.env = env if env is not None else dict(os.environ)
        self.workers: dict[int, tuple[Any, _Worker]] = {}
        self._reserved: list[socket.socket] = []
        self._previous_hup: Any = None

    def startService(self) -> None:
        super().startService()
        # Reserve each port (bound, not listening): a port in use fails here, once.
        for address in self.addresses:
            check_free(address)
            self._reserved.append(address.socket(listen=False))
        for index in range(self.count):
            self._spawn(index)
        self._previous_hup = signal.signal(
            signal.SIGHUP, lambda signum, frame: self.reactor.callFromThread(self.reload))
        from certsrv.server.lifecycle import exit_zero_on_sigterm

        exit_zero_on_sigterm(self.reactor)

    def _spawn(self, index: int) -> None:
        argv = [*self.argv, "--worker-index", str(index)]
        worker = _Worker(self, index)
        # Workers write their log straight to the parent's stdout and stderr.
        process = self.reactor.spawnProcess(worker, argv[0], argv, env=self.env,
                                            childFDs={0: "w", 1: 1, 2: 2, READY_FD: "r"})
        self.workers[index] = (process, worker)
        _log.info("worker {index} started (pid {pid})", index=index, pid=process.pid,
                  reason="worker_started")

    def ended(self, worker: _Worker, reason: Any) -> None:
        """A worker exited: restart it unless the supervisor is stopping."""
        current = self.workers.get(worker.index)
        if current is None or current[1] is not worker:
            return
        del self.workers[worker.index]
        if not self.running:
            if reason.check(ProcessDone):
                _log.info("worker {index} stopped", index=worker.index, reason="worker_stopped")
            else:
                _log.warn("worker {index} did not stop cleanly ({why})", index=worker.index,
                          why=str(reason.value), reason="worker_stop_failed")
            return
        quick = self.reactor.seconds() - worker.started_at < 10
        delay = 5.0 if quick else 0.5  # a worker failing at once is not restarted in a loop
        _log.warn("worker {index} exited ({why}); restarting in {delay} s", index=worker.index,
                  why=str(reason.value), delay=delay, reason="worker_restarted")
        self.reactor.callLater(delay, self._respawn, worker.index)

    def _respawn(self, index: int) -> None:
        if self.running and index not in self.workers:
            self._spawn(index)

    def reload(self) -> None:
        """Forward SIGHUP to every worker (one still starting gets it once it is ready)."""
        _log.info("forwarding SIGHUP to {count} workers", count=len(self.workers))
        for process, worker in self.workers.values():
            if worker.ready:
                process.signalProcess("HUP")
            else:
                worker.reload_pending = True

    def stopService(self) -> defer.Deferred[Any]:
        super().stopService()
        if self._previous_hup is not None:
            signal.signal(signal.SIGHUP, self._previous_hup)
            self._previous_hup = None
        for sock in self._reserved:
            sock.close()
        self._reserved = []
        waits = []
        for process, worker in list(self.workers.values()):
            try:
                process.signalProcess("TERM")
            except Exception:
                continue
            waits.append(worker.ended)

        def kill_stragglers() -> None:
            for process, _ in list(self.workers.values()):
                try:
                    process.signalProcess("KILL")
                except Exception:
                    pass

        deadline = self.reactor.callLater(self.stop_timeout, kill_stragglers)
        done = defer.DeferredList(waits)

        def finished(result: Any) -> Any:
            if deadline.active():
                deadline.cancel()
            return result

        return done.addBoth(finished)


def worker_argv(plugin_argv: Sequence[str]) -> list[str]:
    """The command line of a worker: this twistd plugin's arguments without ``--workers``."""
    kept: list[str] = []
    skip = False
    for arg in plugin_argv:
        if skip:
            skip = False
            continue
        if arg == "--workers":
            skip = True
            continue
        if arg.startswith("--workers="):
            continue
        kept.append(arg)
    return [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "-n",
            "--pidfile=", "certsrv", *kept]
