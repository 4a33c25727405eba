"""
``--workers N``: N server processes on one port, supervised by the parent.

Each worker is a full ``twistd certsrv`` with its own reactor, listening on its own socket with
SO_REUSEPORT so that the kernel spreads connections evenly across them. The parent accepts
nothing: it holds a bound (not listening) socket per port so a port already in use is reported
at once, restarts workers that die, and forwards SIGHUP (reload) and SIGTERM (graceful stop).
"""

from __future__ import annotations

import os
import signal
import socket
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from twisted.application import service
from twisted.internet import defer, protocol
from twisted.internet.interfaces import IListeningPort, IProtocolFactory
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python import usage

__all__ = [
    "ParentWatch",
    "ReadyNotice",
    "ReusePortService",
    "Supervisor",
    "TCPAddress",
    "parse_tcp",
    "worker_argv",
]

_log = Logger(namespace="certsrv.workers")


@dataclass(frozen=True)
class TCPAddress:
    """Where a worker listens: a tcp: or tcp6: endpoint description, parsed."""

    family: socket.AddressFamily
    interface: str
    port: int
    backlog: int = 128

    def socket(self, listen: bool) -> socket.socket:
        """A SO_REUSEPORT socket bound to the address (listening, or only reserving it)."""
        sock = socket.socket(self.family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if self.family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind((self.interface, self.port))
            if listen:
                sock.listen(self.backlog)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        return sock


def _split(description: str) -> list[str]:
    parts, current, escaped = [], "", False
    for char in description:
        if escaped:
            current += char
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == ":":
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return parts


def parse_tcp(description: str) -> TCPAddress:
    """Parse ``tcp:PORT[:interface=X][:backlog=N]`` (or ``tcp6:``); other kinds are refused."""
    parts = _split(description)
    kind = parts[0].lower()
    if kind not in ("tcp", "tcp6") or len(parts) < 2:
        raise usage.UsageError(f"--workers needs tcp: or tcp6: listen descriptions, not "
                               f"{description!r}")
    family = socket.AF_INET6 if kind == "tcp6" else socket.AF_INET
    options = {"interface": "::" if kind == "tcp6" else "0.0.0.0", "backlog": "128"}
    positional = []
    for part in parts[1:]:
        key, sep, value = part.partition("=")
        if sep:
            if key not in options:
                raise usage.UsageError(f"--listen {description}: unknown parameter {key!r}")
            options[key] = value
        else:
            positional.append(part)
    try:
        port = int(positional[0])
        backlog = int(options["backlog"])
    except (IndexError, ValueError):
        raise usage.UsageError(f"--listen {description}: needs a numeric port") from None
    if len(positional) > 1 or not 0 <= port <= 65535:
        raise usage.UsageError(f"--listen {description}: bad port")
    return TCPAddress(family, options["interface"], port, backlog)


class ReusePortService(service.Service):
    """Listens on ``address`` with SO_REUSEPORT, serving ``factory`` (inside a worker)."""

    def __init__(self, address: TCPAddress, factory: IProtocolFactory, reactor: Any) -> None:
        self.address = address
        self.factory = factory
        self.reactor = reactor
        self.port: IListeningPort | None = None

    def startService(self) -> None:
        super().startService()
        sock = self.address.socket(listen=True)
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


class ParentWatch(service.Service):
    """Stops a worker whose supervisor has gone (it would otherwise serve unsupervised)."""

    def __init__(self, reactor: Any, interval: float = 1.0) -> None:
        self.reactor = reactor
        self.interval = interval
        self.supervisor_pid = os.getppid()
        self._loop: LoopingCall | None = None

    def startService(self) -> None:
        super().startService()
        self._loop = LoopingCall(self.check)
        self._loop.clock = self.reactor
        self._loop.start(self.interval, now=False)

    def stopService(self) -> None:
        super().stopService()
        if self._loop is not None and self._loop.running:
            self._loop.stop()

    def check(self) -> None:
        """Stop the reactor once the parent process is no longer ours."""
        if os.getppid() != self.supervisor_pid:
            _log.warn("the supervisor (pid {pid}) is gone; this worker stops",
                      pid=self.supervisor_pid, reason="orphaned")
            self.reactor.stop()


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
        self.restarts = 0
        self._reserved: list[socket.socket] = []
        self._previous_hup: Any = None

    def startService(self) -> None:
        super().startService()
        # Reserve each port (bound, not listening): a port in use fails here, once.
        for address in self.addresses:
            self._reserved.append(address.socket(listen=False))
        for index in range(self.count):
            self._spawn(index)
        self._previous_hup = signal.signal(
            signal.SIGHUP, lambda signum, frame: self.reactor.callFromThread(self.reload))
        from certsrv._lifecycle import exit_zero_on_sigterm

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
            return
        self.restarts += 1
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
