"""SIGTERM drains a real ``twistd certsrv``: responses in flight reach curl whole, then exit 0."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
from typing import Any

from twisted.internet import defer, endpoints, protocol, reactor, task
from twisted.internet.error import ConnectionDone, ConnectionRefusedError
from twisted.logger import Logger
from twisted.trial.unittest import SkipTest, TestCase
from twisted.web import resource, server

from certsrv.server.lifecycle import Drainer
from tests._h2client import H2Client, connect_h2, h2_options
from tests._servers import HEALTH as _HEALTH
from tests._servers import low_port as _free_port
from tests._servers import run, spawn, twistd_argv, wait_listening
from tests._servers import status_of as _status
from tests._servers import tcp_exchange as _exchange
from tests._support import Hold as _Hold
from tests._support import (
    HTTPClientProtocol,
    client_tls_options,
    make_server_factory,
    shared_pki,
    write_pem,
)

# The slow answer comes this long after its request; SIGTERM is sent about a second in.
SLOW_SECONDS = 2.5
# More than the socket buffers hold: the server must keep writing after the request finished.
BODY = b"".join(b"%07d\n" % i for i in range(32768))
_BEGUN = "slow request begun in pid"
_log = Logger(namespace="tests.drain")


class _Slow(resource.Resource):
    """``/slow`` answers BODY after SLOW_SECONDS; any other path answers at once."""

    isLeaf = True

    def render_GET(self, request: server.Request) -> Any:
        request.setHeader(b"content-type", b"application/octet-stream")
        if request.path != b"/slow":
            return b"quick\n"
        _log.info(_BEGUN + " {pid}", pid=os.getpid())

        def answer() -> None:
            request.write(BODY)
            request.finish()

        call = reactor.callLater(SLOW_SECONDS, answer)  # type: ignore[attr-defined]
        request.notifyFinish().addErrback(lambda _: call.cancel() if call.active() else None)
        return server.NOT_DONE_YET


slow_app = _Slow()


def _sleep(seconds: float) -> defer.Deferred[None]:
    return task.deferLater(reactor, seconds, lambda: None)  # type: ignore[arg-type]


def _free_pair() -> int:
    """A free port below 32768 whose next port is free too (the metrics of two workers)."""
    for _ in range(100):
        port = _free_port()
        if _bindable(port + 1):
            return port
    raise RuntimeError("no two free consecutive ports")


def _bindable(port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


class DrainTests(TestCase):
    """SIGTERM during a slow request: the answer arrives whole, then the process exits 0."""

    timeout = 60

    def setUp(self) -> None:
        if shutil.which("curl") is None:
            raise SkipTest("curl is not installed")
        self.pki = shared_pki()
        self.dir = os.path.abspath(self.mktemp())
        self.ca = write_pem(self.dir, "ca.pem", self.pki.root.certificate_pem())
        self.cert = write_pem(self.dir, "client.pem", self.pki.client.chain_pem())
        self.key = write_pem(self.dir, "client.key", self.pki.client.private_key_pem(), 0o600)
        self.curls = 0

    async def start(self, *extra: str, workers: int = 1) -> None:
        """A real ``twistd certsrv`` serving ``slow_app``, with --metrics (one port a worker)."""
        self.port, self.metrics = _free_port(), _free_pair()
        argv = twistd_argv(
            "certsrv", "--listen", f"tcp:{self.port}:interface=127.0.0.1",
            "--cert", write_pem(self.dir, "server.pem", self.pki.server.chain_pem()),
            "--key", write_pem(self.dir, "server.key", self.pki.server.private_key_pem(), 0o600),
            "--ca", self.ca, "--app", "tests.e2e.test_drain.slow_app",
            "--metrics", f"tcp:{self.metrics}", "--workers", str(workers), *extra)
        self.process, self.child = spawn(self, argv, cwd=self.dir)
        await wait_listening(self.port, self.child)
        for index in range(workers):
            await wait_listening(self.metrics + index, self.child)

    def curl(self, *flags: str) -> defer.Deferred[tuple[str, bytes, str, int]]:
        """GET /slow with the client certificate: (headers, body, errors, exit code)."""
        self.curls += 1
        body = os.path.join(self.dir, f"body-{self.curls}")
        running = run(["curl", "-sS", "--max-time", "30", "--cacert", self.ca, "--cert",
                       self.cert, "--key", self.key, "--resolve",
                       f"localhost:{self.port}:127.0.0.1", "-D", "-", "-o", body, *flags,
                       f"https://localhost:{self.port}/slow"])

        def result(done: tuple[bytes, bytes, int]) -> tuple[str, bytes, str, int]:
            out, err, code = done
            received = b""
            if os.path.exists(body):
                with open(body, "rb") as f:
                    received = f.read()
            return out.decode(errors="replace"), received, err.decode(errors="replace"), code

        return running.addCallback(result)

    async def begun(self, count: int) -> list[str]:
        """Wait until ``count`` slow requests reached the application; the pids serving them."""
        for _ in range(400):
            pids = re.findall(_BEGUN + r" (\d+)", self.child.text)
            if len(pids) >= count:
                return pids
            if self.child.ended.called:
                break
            await _sleep(0.05)
        raise AssertionError(f"{count} slow requests never began: {self.child.text}")

    async def refused(self) -> bool:
        """Whether a new connection to the TLS port is refused."""
        try:
            peer = await endpoints.connectProtocol(
                endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", self.port),
                protocol.Protocol())
        except ConnectionRefusedError:
            return True
        peer.transport.loseConnection()
        return False

    async def while_draining(self, workers: int = 1) -> None:
        """New connections are refused and /healthz answers 503, while still draining."""
        for _ in range(200):
            if await self.refused():
                break
            await _sleep(0.02)
        else:
            raise AssertionError(f"still accepting connections: {self.child.text}")
        for index in range(workers):
            health = await _exchange(self.metrics + index, _HEALTH)
            self.assertEqual(_status(health), 503, health)
        self.assertFalse(self.child.ended.called, "checked while the drain still runs")

    def assertAnswered(self, answer: tuple[str, bytes, str, int], status_line: str) -> None:
        headers, body, err, code = answer
        self.assertEqual(code, 0, err)
        self.assertTrue(headers.startswith(status_line), headers)
        self.assertEqual(len(body), len(BODY))
        self.assertEqual(body, BODY)

    async def sigterm_during_slow_request(self, *flags: str, again: bool = False
                                          ) -> tuple[str, bytes, str, int]:
        """Start a slow request, SIGTERM about a second in, check the drain, await curl."""
        await self.start()
        sent = reactor.seconds()  # type: ignore[attr-defined]
        answer = self.curl(*flags)
        await self.begun(1)
        await _sleep(max(0.0, sent + 1.0 - reactor.seconds()))  # type: ignore[attr-defined]
        self.process.signalProcess("TERM")
        await self.while_draining()
        if again:
            self.process.signalProcess("TERM")
        result = await answer
        self.assertEqual(await self.child.ended, 0, self.child.text)
        # On 1 connection, or 2 if a probe of while_draining came before the signal was handled.
        self.assertRegex(self.child.text, "draining 1 requests in flight on [12] connections")
        self.assertIn("drained: every connection closed", self.child.text)
        self.assertNotIn("Traceback", self.child.text)
        return result

    async def test_http11(self) -> None:
        """HTTP/1.1: the whole 200 with ``Connection: close``, and its access-log line."""
        answer = await self.sigterm_during_slow_request("--http1.1", again=True)
        self.assertAnswered(answer, "HTTP/1.1 200")
        self.assertIn("\r\nConnection: close\r\n", answer[0])
        self.assertIn(f'"GET /slow HTTP/1.1" 200 {len(BODY)}', self.child.text)
        # A second SIGTERM while draining changes nothing (and logs no traceback).
        self.assertIn("SIGTERM again: already stopping", self.child.text)

    async def test_http2(self) -> None:
        """HTTP/2: the whole 200 on its stream, and its access-log line."""
        answer = await self.sigterm_during_slow_request("--http2")
        self.assertAnswered(answer, "HTTP/2 200")
        self.assertIn(f'"GET /slow HTTP/2" 200 {len(BODY)}', self.child.text)

    async def test_idle_connections_do_not_hold_the_drain(self) -> None:
        """Kept-alive idle connections (HTTP/1.1 and HTTP/2) are closed, well within 30 s."""
        await self.start("--drain-timeout", "30")
        tls = endpoints.wrapClientTLS(client_tls_options(self.pki, self.pki.client),
                                      endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1",
                                                                   self.port))
        http11 = HTTPClientProtocol(b"GET /quick HTTP/1.1\r\nHost: localhost\r\n\r\n")
        await endpoints.connectProtocol(tls, http11)
        self.addCleanup(lambda: None if http11.lost else http11.transport.abortConnection())
        http2 = await connect_h2(self.port, h2_options(self.pki, self.pki.client))
        self.addCleanup(lambda: None if http2.closed else http2.transport.abortConnection())
        stream = http2.request(path=b"/quick")
        await http2.when(lambda: http2.streams[stream].ended)
        self.assertEqual((http2.streams[stream].status, http2.streams[stream].body),
                         (200, b"quick\n"))
        for _ in range(200):
            if http11.received.endswith(b"\r\n\r\nquick\n"):
                break
            await _sleep(0.02)
        self.assertTrue(http11.received.startswith(b"HTTP/1.1 200"), http11.received)
        self.assertIsNone(http11.lost, "kept alive")
        self.process.signalProcess("TERM")
        self.assertEqual(await self.child.ended, 0, self.child.text)
        self.assertIn("draining 0 requests in flight on 2 connections", self.child.text)
        self.assertIn("drained: every connection closed", self.child.text)
        self.assertNotIn("drain timeout", self.child.text)
        assert http11.lost is not None
        self.assertTrue(http11.lost.check(ConnectionDone), http11.lost)  # TLS close_notify
        self.assertEqual((http2.terminated, http2.closed), (0, True))  # GOAWAY NO_ERROR

    async def test_drain_timeout(self) -> None:
        """Past --drain-timeout the request is cut off, and the exit is still orderly."""
        await self.start("--drain-timeout", "0.5")
        answer = self.curl("--http1.1")
        await self.begun(1)
        self.process.signalProcess("TERM")
        self.assertEqual(await self.child.ended, 0, self.child.text)
        _, body, _, code = await answer
        self.assertNotEqual(code, 0)
        self.assertEqual(body, b"")
        self.assertIn("drain timeout: 1 requests in flight on 1 connections are cut off",
                      self.child.text)
        self.assertIn("Server Shut Down.", self.child.text)
        self.assertNotIn("Traceback", self.child.text)

    async def test_workers(self) -> None:
        """``--workers 2``: SIGTERM to the supervisor drains both workers, then it exits 0."""
        await self.start(workers=2)
        workers = set(re.findall(r"worker \d started \(pid (\d+)\)", self.child.text))
        self.assertEqual(len(workers), 2, self.child.text)
        sent = reactor.seconds()  # type: ignore[attr-defined]
        answers = []
        # The kernel spreads connections over the workers: ask until both serve one.
        for version in ["1.1", "2"] * 5:
            answers.append((version, self.curl(f"--http{version}")))
            pids = await self.begun(len(answers))
            if len(answers) >= 2 and set(pids) == workers:
                break
        self.assertEqual(set(pids), workers)
        await _sleep(max(0.0, sent + 1.0 - reactor.seconds()))  # type: ignore[attr-defined]
        self.process.signalProcess("TERM")
        for pid in workers:  # as systemd does to every process of the unit
            os.kill(int(pid), signal.SIGTERM)
        await self.while_draining(workers=2)
        for version, answer in answers:
            self.assertAnswered(await answer, f"HTTP/{version} 200")
        self.assertEqual(await self.child.ended, 0, self.child.text)
        self.assertEqual(self.child.text.count('"GET /slow HTTP/'), len(answers), self.child.text)
        self.assertEqual(self.child.text.count("drained: every connection closed"), 2)
        self.assertNotIn("ReactorNotRunning", self.child.text)
        self.assertEqual(self.child.text.count("Server Shut Down."), 3)
        self.assertIn("worker 0 stopped", self.child.text)
        self.assertIn("worker 1 stopped", self.child.text)
        self.assertNotIn("Traceback", self.child.text)


_GOAWAY = 0x7
_REFUSED_STREAM = 0x7


class _GoawayWatcher(H2Client):
    """An HTTP/2 client that records GOAWAY frames instead of giving them to ``h2``."""

    # h2 closes its connection state on a GOAWAY and then rejects the responses still due on
    # the streams the GOAWAY lets finish; nghttp2 (curl) reads them, as RFC 9113 section 6.8 says.

    def __init__(self) -> None:
        super().__init__()
        self.goaways: list[int] = []
        self._frames = b""

    def dataReceived(self, data: bytes) -> None:
        self._frames += data
        passed = b""
        while len(self._frames) >= 9:
            end = 9 + int.from_bytes(self._frames[:3], "big")
            if len(self._frames) < end:
                break
            frame, self._frames = self._frames[:end], self._frames[end:]
            if frame[3] == _GOAWAY:
                self.goaways.append(int.from_bytes(frame[9:13], "big") & 0x7FFFFFFF)
            else:
                passed += frame
        if passed:
            super().dataReceived(passed)
        self._wake()


class HTTP2GoawayTests(TestCase):
    """The two GOAWAYs of a drain: streams sent before the second are served, later refused."""

    timeout = 30

    async def test_two_goaways(self) -> None:
        pki = shared_pki()
        app = _Hold()
        factory = make_server_factory(pki.settings(), clock=reactor,  # type: ignore[arg-type]
                                      http2=True, app=app)
        drainer = Drainer(factory.wrappedFactory, reactor, timeout=30,  # type: ignore[arg-type]
                          grace=1.0)
        drainer.startService()
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")  # type: ignore[attr-defined]
        self.addCleanup(port.stopListening)
        client = _GoawayWatcher()
        endpoint = endpoints.wrapClientTLS(h2_options(pki, pki.client),
                                           endpoints.TCP4ClientEndpoint(
                                               reactor, "127.0.0.1", port.getHost().port))
        await endpoints.connectProtocol(endpoint, client)
        self.addCleanup(lambda: None if client.closed else client.transport.abortConnection())
        first = client.request(path=b"/x")
        await self.held(app, 1)

        stopped = drainer.stopService()
        await client.when(lambda: len(client.goaways) == 1)
        self.assertEqual(client.goaways, [2**31 - 1])  # no stream refused yet
        on_its_way = client.request(path=b"/x")
        await self.held(app, 2)
        await client.when(lambda: len(client.goaways) == 2)
        self.assertEqual(client.goaways[1], on_its_way)  # the last stream served
        late = client.request(path=b"/x")
        await client.wait_for_pong()  # the server has read the late stream by now
        self.assertEqual(client.streams[late].reset, _REFUSED_STREAM)
        self.assertEqual(len(app.held), 2, "a refused stream never reaches the application")

        self.assertFalse(stopped.called)
        for request in app.held:
            request.write(b"done")
            request.finish()
        await stopped
        for stream in (first, on_its_way):
            self.assertEqual((client.streams[stream].status, client.streams[stream].body,
                              client.streams[stream].ended), (200, b"done", True))
        await client.when(lambda: client.closed)

    async def held(self, app: _Hold, count: int) -> None:
        """Wait until the application holds ``count`` requests."""
        for _ in range(500):
            if len(app.held) >= count:
                return
            await _sleep(0.01)
        raise AssertionError(f"{len(app.held)} requests held, not {count}")
