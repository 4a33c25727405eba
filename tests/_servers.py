"""Real server processes for tests: free low ports, twistd children, their file descriptors."""

from __future__ import annotations

import os
import random
import socket
import sys
from typing import Any

from twisted.internet import defer, endpoints, protocol, reactor, task
from twisted.internet.error import ProcessExitedAlready
from twisted.python.failure import Failure

import certsrv

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(certsrv.__file__)))


def low_port() -> int:
    """A port below the ephemeral range (32768) that nothing on 127.0.0.1 uses now."""
    for _ in range(200):
        port = random.randrange(20_000, 32_000)
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port below 32768")


def twistd_argv(*argv: str, nofile: int | None = None) -> list[str]:
    """The command line of ``twistd -n`` with ``argv`` (under ``prlimit --nofile`` if given)."""
    command = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "-n",
               "--pidfile=", *argv]
    if nofile is not None:
        command = ["/usr/bin/prlimit", f"--nofile={nofile}:{nofile}", "--", *command]
    return command


def twistd_env() -> dict[str, str]:
    """An environment in which twistd finds this checkout's plugins."""
    path = [_REPO, *(p for p in sys.path if p)]
    return dict(os.environ, PYTHONPATH=os.pathsep.join(path))


class Twistd(protocol.ProcessProtocol):
    """A child process whose output is kept; ``ended`` fires with its exit code."""

    def __init__(self) -> None:
        self.output = b""
        self.ended: defer.Deferred[int | None] = defer.Deferred()

    def outReceived(self, data: bytes) -> None:
        self.output += data

    def errReceived(self, data: bytes) -> None:
        self.output += data

    def processEnded(self, reason: Failure) -> None:
        self.ended.callback(getattr(reason.value, "exitCode", None))

    @property
    def text(self) -> str:
        """The output so far, decoded."""
        return self.output.decode(errors="replace")


def spawn(case: Any, argv: list[str], cwd: str | None = None) -> tuple[Any, Twistd]:
    """Start ``argv``; the test's cleanup kills it if it is still running."""
    child = Twistd()
    process = reactor.spawnProcess(child, argv[0], argv,  # type: ignore[attr-defined]
                                   env=twistd_env(), path=cwd)

    async def stop() -> None:
        try:
            process.signalProcess("KILL")
        except ProcessExitedAlready:
            pass
        await child.ended

    case.addCleanup(stop)
    return process, child


async def wait_listening(port: int, child: Twistd, tries: int = 300) -> None:
    """Poll until 127.0.0.1:``port`` accepts connections (fails if the child exited)."""
    for _ in range(tries):
        if child.ended.called:
            raise AssertionError(f"the server exited: {child.text}")
        try:
            connected = await endpoints.connectProtocol(
                endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", port), protocol.Protocol())
        except Exception:
            await task.deferLater(reactor, 0.1, lambda: None)
            continue
        connected.transport.loseConnection()
        return
    raise AssertionError(f"nothing listens on {port}: {child.text}")


def fds(pid: int) -> list[str]:
    """What the open file descriptors of process ``pid`` point to."""
    names = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            names.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except OSError:
            pass  # closed meanwhile
    return names


def files(pid: int) -> list[str]:
    """The regular files (temporary ones included) process ``pid`` holds open."""
    return [n for n in fds(pid) if n.startswith("/") and not n.startswith(("/dev/", "/proc/"))]


def alive(pid: int) -> bool:
    """Whether ``pid`` is a running process (not gone, not a zombie)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def listening(pid: int, port: int) -> list[str]:
    """The local addresses (hex, as in /proc/net/tcp) on which ``pid`` listens on ``port``."""
    found = []
    for table in ("tcp", "tcp6"):
        with open(f"/proc/{pid}/net/{table}") as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                address, state = fields[1], fields[3]
                if state == "0A" and int(address.rsplit(":", 1)[1], 16) == port:
                    found.append(address.rsplit(":", 1)[0])
    return found
