"""The --metrics listener and certsrv-ocsp under the TLS listener's limits, as real processes."""

from __future__ import annotations

import os
import shutil

from twisted.internet import reactor, task
from twisted.trial.unittest import SkipTest, TestCase

from certsrv.pki import service as _ocsptap
from certsrv.pki.store import PKIStore
from certsrv.server.metrics import ADMIN_MAX_CONNECTIONS
from certsrv.web.limits import Limits
from tests._h2client import connect_h2, h2_options
from tests._servers import HEALTH as _HEALTH
from tests._servers import Peer as _Peer
from tests._servers import connect as _connect
from tests._servers import fds, files, listening, low_port, run, spawn, twistd_argv, wait_listening
from tests._servers import status_of as _status
from tests._servers import tcp_exchange as _exchange
from tests._support import (
    shared_pki,
    write_pem,
)

_CHUNKED_POST = (b"POST %s HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n"
                 b"400\r\n" + b"x" * 1024 + b"\r\n")


async def _body_refused_without_a_file(case: TestCase, pid: int, port: int, path: bytes,
                                       probe: bytes, limit: int) -> None:
    """A 200 MB body is refused with 413; one in progress leaves no temporary file."""
    declared = await _exchange(port, b"POST %s HTTP/1.1\r\nHost: localhost\r\n"
                                     b"Content-Length: 209715200\r\n\r\n" % path)
    case.assertEqual(_status(declared), 413, declared)
    before = files(pid)
    pending = await _connect(port, _Peer(_CHUNKED_POST % path))
    # A full request on another connection: the server has read the pending one by now.
    await _exchange(port, probe)
    case.assertEqual(files(pid), before)
    case.assertEqual([n for n in fds(pid) if "(deleted)" in n], [])
    pending.transport.write(b"%x\r\n" % (limit + 1) + b"x" * (limit + 1) + b"\r\n")
    refused = await pending.done
    case.assertEqual(_status(refused), 413, refused)
    case.assertEqual(files(pid), before)


class MetricsListenerTests(TestCase):
    """``--metrics`` shares the limits of the TLS listener; flooding it spares the TLS one."""

    timeout = 90

    async def start(self, *extra: str, nofile: int | None = None) -> None:
        """A real ``twistd certsrv`` with --metrics on a loopback port given without interface."""
        if shutil.which("curl") is None:
            raise SkipTest("curl is not installed")
        pki = shared_pki()
        directory = os.path.abspath(self.mktemp())
        self.ca = write_pem(directory, "ca.pem", pki.root.certificate_pem())
        self.client = write_pem(directory, "client.pem", pki.client.chain_pem())
        self.key = write_pem(directory, "client.key", pki.client.private_key_pem(), 0o600)
        self.port, self.metrics = low_port(), low_port()
        argv = twistd_argv(
            "certsrv", "--listen", f"tcp:{self.port}:interface=127.0.0.1",
            "--cert", write_pem(directory, "server.pem", pki.server.chain_pem()),
            "--key", write_pem(directory, "server.key", pki.server.private_key_pem(), 0o600),
            "--ca", self.ca, "--metrics", f"tcp:{self.metrics}", *extra, nofile=nofile)
        self.process, self.child = spawn(self, argv, cwd=directory)
        await wait_listening(self.port, self.child)
        await wait_listening(self.metrics, self.child)

    async def mtls(self, *flags: str) -> tuple[str, str]:
        """``curl`` /secure with the client certificate: (HTTP version and status, errors)."""
        out, err, _ = await run([
            "curl", "-sS", "--max-time", "20", "--cacert", self.ca, "--cert", self.client,
            "--key", self.key, "--resolve", f"localhost:{self.port}:127.0.0.1", "-o",
            "/dev/null", "-w", "%{http_version} %{http_code}", *flags,
            f"https://localhost:{self.port}/secure"])
        return out.decode(), err.decode()

    async def test_flooded_metrics_port_spares_the_tls_listener(self) -> None:
        """300 connections held on the metrics port of a server with 256 descriptors."""
        await self.start(nofile=256)
        flood = [await _connect(self.metrics, _Peer()) for _ in range(300)]
        self.addCleanup(self.close_all, flood)
        # Connections past the admin listener's cap are closed at once, with no answer (the
        # probe of wait_listening may still hold a place for a moment).
        for _ in range(200):
            held = [p for p in flood if not p.done.called]
            if len(held) <= ADMIN_MAX_CONNECTIONS:
                break
            await task.deferLater(reactor, 0.05, lambda: None)
        self.assertIn(len(held), (ADMIN_MAX_CONNECTIONS - 1, ADMIN_MAX_CONNECTIONS))
        self.assertTrue(all(p.received == b"" for p in flood if p.done.called))
        self.assertEqual(await self.mtls("--http1.1"), ("1.1 200", ""))
        self.assertEqual(await self.mtls("--http2"), ("2 200", ""))
        self.assertEqual(await _exchange(self.metrics, _HEALTH), b"")  # still full
        await self.close_all(flood)
        response = await _exchange(self.metrics, _HEALTH)
        self.assertEqual(_status(response), 200, response)
        self.assertIn("refusing --metrics connections", self.child.text)

    async def close_all(self, peers: list[_Peer]) -> None:
        for peer in peers:
            if not peer.done.called:
                peer.transport.loseConnection()
                await peer.done

    async def test_metrics_limits(self) -> None:
        """Bodies, headers and slow senders on the metrics port; its address and Server header."""
        await self.start("--header-timeout", "1", "--max-headers", "20")
        # --metrics tcp:PORT listens on loopback only.
        self.assertEqual(listening(self.process.pid, self.metrics), ["0100007F"])
        health = await _exchange(self.metrics, _HEALTH)
        self.assertEqual(_status(health), 200)
        self.assertIn(b"\r\nServer: certsrv\r\n", health)
        self.assertNotIn(b"TwistedWeb", health)
        await _body_refused_without_a_file(self, self.process.pid, self.metrics, b"/metrics",
                                           _HEALTH, 4096)
        many = b"".join(b"X-%d: y\r\n" % i for i in range(21))
        response = await _exchange(self.metrics, b"GET /healthz HTTP/1.1\r\n" + many + b"\r\n")
        self.assertEqual(_status(response), 431, response)
        # One header byte every 0.2 s: cut off by the header timeout, not kept alive.
        slow = await _connect(self.metrics, _Peer(b"GET /healthz HTTP/1.1\r\n"))
        sending = task.LoopingCall(lambda: slow.transport.write(b"X"))
        sending.start(0.2)
        self.addCleanup(lambda: sending.stop() if sending.running else None)
        response = await slow.done
        sending.stop()
        self.assertEqual(_status(response), 408, response)

    async def test_unauthenticated_http2_streams_cost_no_descriptor(self) -> None:
        """Unfinished bodies over HTTP/2 and HTTP/1.1 from a peer with no certificate."""
        await self.start("--client-cert", "optional")
        pid = self.process.pid
        pki = shared_pki()
        client = await connect_h2(self.port, h2_options(pki, None))
        self.addCleanup(lambda: client.transport.abortConnection())
        await client.wait_for_pong()
        before = fds(pid)
        for _ in range(50):
            client.send(client.request(b"POST", end=False), b"x" * 100)
        await client.wait_for_pong()
        self.assertEqual(sorted(fds(pid)), sorted(before))
        # HTTP/1.1 over TLS, chunked and unfinished: the connection's socket, nothing else.
        out, err = await self.mtls("--http1.1", "-H", "Transfer-Encoding: chunked",
                                   "--data-binary", "@/dev/null")
        self.assertEqual(out, "1.1 405", err)
        self.assertEqual([n for n in fds(pid) if "(deleted)" in n], [])


class OCSPListenerTests(TestCase):
    """``twistd certsrv-ocsp`` is a limited site too."""

    timeout = 60

    def setUp(self) -> None:
        self.dir = os.path.abspath(self.mktemp())
        PKIStore.init(self.dir)

    async def test_real_process(self) -> None:
        """A 200 MB POST is refused without a temporary file; no Twisted Server header."""
        port = low_port()
        argv = twistd_argv("certsrv-ocsp", "--pki", self.dir, "--listen",
                           f"tcp:{port}:interface=127.0.0.1")
        process, child = spawn(self, argv, cwd=self.dir)
        await wait_listening(port, child)
        probe = b"GET /nothing HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
        answer = await _exchange(port, probe)
        self.assertIn(b"\r\nServer: certsrv\r\n", answer)
        await _body_refused_without_a_file(self, process.pid, port, b"/", probe,
                                           _ocsptap.OCSP_LIMITS.max_body_bytes)

    async def test_connections_and_timeouts(self) -> None:
        """The responder's site caps connections and cuts off a slow sender."""
        options = _ocsptap.Options()
        options.clock = reactor  # type: ignore[assignment]
        options.parseOptions(["--pki", self.dir])
        site = _ocsptap.make_site(options, Limits(max_connections=2, header_timeout=0.5))
        port = reactor.listenTCP(0, site, interface="127.0.0.1")  # type: ignore[attr-defined]
        self.addCleanup(port.stopListening)
        number = port.getHost().port
        held = [await _connect(number, _Peer()), await _connect(number, _Peer())]
        self.assertEqual(await _exchange(number, b"GET / HTTP/1.1\r\n\r\n"), b"")
        held[0].data = b""
        held[0].transport.write(b"GET / HTTP/1.1\r\n")  # and never the rest
        self.assertEqual(_status(await held[0].done), 408)
        held[1].transport.loseConnection()
        await held[1].done
