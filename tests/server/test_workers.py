"""``--workers``: several server processes on one port, supervised by the parent."""

from __future__ import annotations

import os
import re
import signal
import sys
from typing import Any

from twisted.internet import defer, reactor, task
from twisted.trial.unittest import TestCase

from certsrv.server.endpoints import check_free, parse_tcp
from certsrv.server.workers import worker_argv
from tests._servers import Collect as _Collect
from tests._servers import alive, low_port, run, spawn, twistd_argv, twistd_env, wait_listening
from tests._support import shared_pki, write_pem


class SupervisorTests(TestCase):
    """A real ``twistd certsrv --workers 2``: serves, restarts, forwards SIGHUP and SIGTERM."""

    timeout = 90

    @defer.inlineCallbacks
    def test_workers(self) -> Any:
        pki = shared_pki()
        directory = self.mktemp()
        ca = write_pem(directory, "ca.pem", pki.root.certificate_pem())
        cert = write_pem(directory, "client.pem", pki.client.chain_pem())
        key = write_pem(directory, "client.key", pki.client.private_key_pem(), 0o600)
        port = low_port()
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
        argv = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "-n",
                "--pidfile=", "certsrv", "--workers", "2",
                "--listen", f"tcp:{port}:interface=127.0.0.1",
                "--cert", write_pem(directory, "server.pem", pki.server.chain_pem()),
                "--key", write_pem(directory, "server.key", pki.server.private_key_pem(), 0o600),
                "--ca", ca, "--drain-timeout", "2"]
        done: defer.Deferred[tuple[bytes, bytes, int]] = defer.Deferred()
        collector = _Collect(b"", done)
        process = reactor.spawnProcess(collector, argv[0], argv, env=env)  # type: ignore[attr-defined]

        def stop() -> Any:
            if process.pid is not None:
                process.signalProcess("KILL")
            return done

        self.addCleanup(stop)
        curl = ["curl", "-sS", "--retry", "20", "--retry-connrefused", "--retry-delay", "1",
                "--max-time", "30", "--cacert", ca, "--cert", cert, "--key", key,
                "--resolve", f"localhost:{port}:127.0.0.1", f"https://localhost:{port}/secure"]
        for _ in range(4):
            out, err, code = yield run(curl)
            self.assertEqual(code, 0, err)
        log = lambda: (collector.out + collector.err).decode(errors="replace")  # noqa: E731
        pids = re.findall(r"worker (\d) started \(pid (\d+)\)", log())
        self.assertEqual(sorted(i for i, _ in pids), ["0", "1"])
        os.kill(int(dict(pids)["0"]), signal.SIGKILL)
        for _ in range(300):
            if len(re.findall(r"worker 0 started", log())) == 2:
                break
            yield task.deferLater(reactor, 0.1, lambda: None)
        self.assertIn("worker 0 exited", log())
        self.assertEqual(len(re.findall(r"worker 0 started", log())), 2, log())
        out, err, code = yield run(curl)
        self.assertEqual(code, 0, err)
        process.signalProcess("HUP")
        for _ in range(100):
            if log().count("configuration reloaded (SIGHUP)") == 2:
                break
            yield task.deferLater(reactor, 0.1, lambda: None)
        self.assertEqual(log().count("configuration reloaded (SIGHUP)"), 2, log())
        process.signalProcess("TERM")
        _, _, exit_code = yield done
        self.assertEqual(exit_code, 0)
        self.assertEqual(log().count("Server Shut Down."), 3)
        self.assertNotIn("Traceback", log())


class _Files:
    """Server and client certificates for a real server, written to ``directory``."""

    def __init__(self, directory: str) -> None:
        pki = shared_pki()
        self.ca = write_pem(directory, "ca.pem", pki.root.certificate_pem())
        self.client = write_pem(directory, "client.pem", pki.client.chain_pem())
        self.key = write_pem(directory, "client.key", pki.client.private_key_pem(), 0o600)
        self.server = write_pem(directory, "server.pem", pki.server.chain_pem())
        self.server_key = write_pem(directory, "server.key", pki.server.private_key_pem(),
                                    0o600)

    def certsrv(self, port: int, *extra: str) -> list[str]:
        """The plugin arguments of a server on 127.0.0.1:``port``."""
        return ["certsrv", "--listen", f"tcp:{port}:interface=127.0.0.1", "--cert", self.server,
                "--key", self.server_key, "--ca", self.ca, *extra]


class OrphanTests(TestCase):
    """Workers never outlive their supervisor, and a second server never joins a port."""

    timeout = 120

    @defer.inlineCallbacks
    def test_supervisor_killed(self) -> Any:
        """kill -9 the supervisor: its workers stop; meanwhile a second server is refused."""
        files = _Files(os.path.abspath(self.mktemp()))
        port = low_port()
        process, child = spawn(self, twistd_argv(*files.certsrv(port, "--workers", "2")))
        yield defer.ensureDeferred(wait_listening(port, child))
        for _ in range(300):
            pids = [int(p) for p in re.findall(r"worker \d started \(pid (\d+)\)", child.text)]
            if len(pids) == 2:
                break
            yield task.deferLater(reactor, 0.1, lambda: None)
        self.assertEqual(len(pids), 2, child.text)
        # A second supervisor on the same port: one line, status 1.
        argv = twistd_argv(*files.certsrv(port, "--workers", "2"))
        _, err, code = yield run(argv, env=twistd_env())
        self.assertEqual(code, 1, err)
        self.assertEqual(err.decode(), f"certsrv: --listen tcp:{port}:interface=127.0.0.1: "
                                       f"port {port} on 127.0.0.1 is already in use by "
                                       "another process (another certsrv, or workers left "
                                       "by one)\nsee: twistd certsrv --help\n")
        # A single process (no SO_REUSEPORT) is refused by the kernel.
        out, err, code = yield run(twistd_argv(*files.certsrv(port)), env=twistd_env())
        self.assertEqual(code, 1)
        self.assertIn(b"is already in use by another process\nsee: twistd certsrv --help", err)
        process.signalProcess("KILL")
        yield child.ended  # once the workers, which share its output pipes, are gone too
        for _ in range(100):  # a worker may still be finishing its exit (threads joined)
            if not any(alive(pid) for pid in pids):
                break
            yield task.deferLater(reactor, 0.1, lambda: None)
        self.assertFalse([pid for pid in pids if alive(pid)])
        self.assertEqual(child.text.count("the supervisor is gone; this worker stops"), 2,
                         child.text)
        check_free(parse_tcp(f"tcp:{port}:interface=127.0.0.1"))

    @defer.inlineCallbacks
    def test_supervisor_gone_before_the_worker_started(self) -> Any:
        """A worker whose supervisor pipe is already closed when it starts stops at once."""
        files = _Files(os.path.abspath(self.mktemp()))
        port = low_port()
        argv = worker_argv(files.certsrv(port)[1:]) + ["--worker-index", "0"]
        process, child = spawn(self, argv)
        process.closeStdin()  # the supervisor's end of the pipe: as if it had died
        code = yield child.ended
        self.assertEqual(code, 0, child.text)
        self.assertIn("the supervisor is gone; this worker stops", child.text)
