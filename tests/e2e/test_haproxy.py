"""Real HAProxy (docs/haproxy.cfg, TCP mode, PROXY protocol v2) in front of two real
``twistd certsrv`` nodes: balancing, the client's address, refusals, and a rolling restart."""

from __future__ import annotations

import json
import re
import signal
from typing import Any

from twisted.internet import defer, endpoints, reactor, task
from twisted.trial.unittest import TestCase

from tests._servers import (
    HEALTH,
    FrontNode,
    HAProxyFront,
    Peer,
    low_port,
    run,
    spawn,
    status_of,
    tcp_exchange,
    twistd_argv,
    wait_listening,
)
from tests._support import (
    Files,
    client_cert_header,
    client_tls_options,
    proxy_certs,
    request_bytes,
    shared_pki,
    write_pem,
)

# The clients' own addresses: HAProxy connects to the nodes from 127.0.0.1.
CLIENT = "127.0.0.2"
TRUSTED = "127.0.0.3"  # a --trusted-proxy: a TLS-terminating proxy behind HAProxy
METRICS = b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"


def served(node: FrontNode, client: str = "") -> int:
    """Requests for /secure in ``node``'s access log (from ``client``, if given)."""
    address = re.escape(client) if client else '[^"]+'
    pattern = rf'^\S+ \[[^]]*\] "{address}" .*"GET /secure '
    return len(re.findall(pattern, node.text, re.MULTILINE))


class HAProxyTests(HAProxyFront):
    """Two nodes behind HAProxy; ``--trusted-proxy`` names the client's address, not HAProxy's."""

    FORWARDING = ("--forwarded-cert", "rfc9440", "--trusted-proxy", f"{TRUSTED}/32")
    NODE_ARGS = (*FORWARDING, "--proxy-protocol-from", "127.0.0.1/32")  # HAProxy's address

    async def status_and_json(self, *extra: str, cert: Any = None) -> tuple[int, Any]:
        out, err, code = await self.curl(self.port, cert or self.pki.client, *extra)
        self.assertEqual(code, 0, err)
        body, _, status = out.rpartition(b"\n")
        return int(status), json.loads(body)

    @defer.inlineCallbacks
    def test_requests_spread_over_both_nodes(self) -> Any:
        """Round robin: new connections go to each node in turn, both verify the client."""
        for _ in range(6):
            status, document = yield defer.ensureDeferred(self.status_and_json())
            self.assertEqual((status, document["common_name"]), (200, "alice"))
        self.assertEqual([served(node) for node in self.nodes], [3, 3])

    @defer.inlineCallbacks
    def test_client_address_from_proxy_header(self) -> Any:
        """certsrv logs the client's address (127.0.0.2), never HAProxy's (127.0.0.1)."""
        for _ in range(2):
            status, _ = yield defer.ensureDeferred(self.status_and_json("--interface", CLIENT))
            self.assertEqual(status, 200)
        self.assertEqual([served(node, CLIENT) for node in self.nodes], [1, 1])
        self.assertEqual([served(node, "127.0.0.1") for node in self.nodes], [0, 0])

    @defer.inlineCallbacks
    def test_trusted_proxy_judged_by_client_address(self) -> Any:
        """A certificate forwarded in Client-Cert counts from 127.0.0.3 (trusted) only: the
        decision uses the address in the PROXY header, although every connection comes from
        HAProxy at 127.0.0.1."""
        certs = proxy_certs()
        name, value = client_cert_header(certs["user"])
        header = f"{name.decode()}: {value.decode()}"
        for _ in range(2):  # once on each node
            status, trusted = yield defer.ensureDeferred(self.status_and_json(
                "--interface", TRUSTED, "-H", header, cert=certs["proxy"]))
            self.assertEqual((status, trusted["common_name"]), (200, "carol"))
            status, untrusted = yield defer.ensureDeferred(self.status_and_json(
                "--interface", CLIENT, "-H", header, cert=certs["proxy"]))
            self.assertEqual((status, untrusted["common_name"]), (200, "edge-proxy"))

    @defer.inlineCallbacks
    def test_no_certificate_refused_as_directly(self) -> Any:
        """Without a certificate, openssl and curl see the same TLS alert through HAProxy as
        from certsrv directly, and the node logs the client's address."""
        direct = self.certsrv(*self.FORWARDING)
        for version in ("-tls1_3", "-tls1_2"):
            seen = []
            for port in (self.port, direct):
                out, err, _ = yield run(
                    ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername",
                     "localhost", "-CAfile", self.files.ca, "-ign_eof", version],
                    b"GET /secure HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                alerts = re.findall(rb"alert ([a-z ]+?)(?=:|$)", err, re.MULTILINE)
                self.assertTrue(alerts, err)
                self.assertNotIn(b"HTTP/1.1 200", out)
                seen.append(alerts)
            self.assertEqual(seen[0], seen[1])
        curl = []
        for port in (self.port, direct):
            out, err, code = yield self.curl(port, None, "--interface", CLIENT)
            curl.append((code, re.sub(rb"\d{4,5}", b"PORT", err)))
        self.assertEqual(curl[0], curl[1])
        self.assertNotEqual(curl[0][0], 0)
        self.assertIn(b"alert certificate required", curl[0][1])
        text = "".join(node.text for node in self.nodes)
        self.assertRegex(text, rf"rejected client {re.escape(CLIENT)}:\d+: no client "
                               "certificate was presented")

    @defer.inlineCallbacks
    def test_connection_without_proxy_header(self) -> Any:
        """A TLS client reaching a node's haproxy: listener directly is closed at once, with a
        log line saying why, and counted in /metrics."""
        node = self.nodes[0]
        out, err, code = yield self.curl(node.port, self.pki.client)
        self.assertNotEqual(code, 0)
        self.assertEqual(out.rpartition(b"\n")[2], b"000")
        self.assertIn("did not begin with a PROXY protocol header (it began with a TLS "
                      "ClientHello", node.text)
        # A plain-text request, too: its first bytes are quoted.
        yield tcp_exchange(node.port, b"GET / HTTP/1.1\r\n\r\n")
        self.assertIn("(it began with b'GET / HTTP/1.1\\r\\n')", node.text)
        metrics = yield tcp_exchange(node.metrics, METRICS)
        self.assertIn(b'certsrv_handshakes_total{decision="rejected",reason="bad_proxy_header"}'
                      b" 2.0", metrics)

    @defer.inlineCallbacks
    def test_spoofed_proxy_header_refused(self) -> Any:
        """A client reaching a node directly (from 127.0.0.2, not HAProxy's 127.0.0.1) with
        its own PROXY header claiming the --trusted-proxy address, and someone else's
        certificate in Client-Cert, is closed before its header is read: only
        --proxy-protocol-from peers may send one."""
        node = self.nodes[0]
        certs = proxy_certs()
        name, value = client_cert_header(certs["user"])
        request = request_bytes(accept="application/json").replace(
            b"\r\n\r\n", b"\r\n" + name + b": " + value + b"\r\n\r\n")
        spoofer = _ProxyHeaderClient(
            f"PROXY TCP4 {TRUSTED} 127.0.0.1 40000 {node.port}\r\n".encode(),
            client_tls_options(shared_pki(), certs["proxy"]), request)
        yield endpoints.connectProtocol(endpoints.TCP4ClientEndpoint(
            reactor, "127.0.0.1", node.port, bindAddress=(CLIENT, 0)), spoofer)
        received = yield spoofer.done
        self.assertEqual(received, b"")
        for _ in range(100):  # the node's log line arrives through a pipe
            if "only --proxy-protocol-from" in node.text:
                break
            yield task.deferLater(reactor, 0.05, lambda: None)
        self.assertRegex(node.text, rf"closed a connection from {re.escape(CLIENT)}:\d+ on "
                                    "--listen haproxy:tcp:.*: only --proxy-protocol-from "
                                    "addresses may send a PROXY protocol header")
        self.assertNotIn("carol", node.text)

    @defer.inlineCallbacks
    def test_rolling_restart_of_one_node(self) -> Any:
        """SIGTERM a node under steady load: /healthz turns 503 at once, HAProxy takes it out
        while it still serves, it drains and exits 0, starts again and gets traffic back;
        no request fails."""
        node = self.nodes[0]
        results: list[tuple[int, int, bytes]] = []
        loading = True

        async def client() -> None:
            while loading:
                out, err, code = await self.curl(self.port, self.pki.client)
                results.append((code, int(out.rpartition(b"\n")[2] or 0), err))

        clients = [defer.ensureDeferred(client()) for _ in range(3)]
        yield task.deferLater(reactor, 0.5, lambda: None)
        old = node.child
        node.process.signalProcess(signal.SIGTERM)
        yield task.deferLater(reactor, 0.2, lambda: None)
        health = yield tcp_exchange(node.metrics, HEALTH)
        self.assertEqual(status_of(health), 503)
        yield defer.ensureDeferred(self.wait_state(node, "DOWN"))
        self.assertFalse(old.ended.called, "the node stopped before HAProxy took it out")
        code = yield old.ended
        self.assertEqual(code, 0, old.text)
        before = served(node)
        self.start_node(node)
        yield defer.ensureDeferred(self.wait_state(node, "UP"))
        for _ in range(100):  # traffic returns: the restarted node answers requests again
            if served(node) > before:
                break
            yield task.deferLater(reactor, 0.05, lambda: None)
        loading = False
        yield defer.gatherResults(clients)
        failed = [r for r in results if r[:2] != (0, 200)]
        self.assertEqual(failed, [])
        self.assertGreater(len(results), 20)
        self.assertGreater(served(node), before, "no traffic returned to the restarted node")
        self.assertIn("stopping in 2.0 s: /healthz answers 503", old.text)


class _ProxyHeaderClient(Peer):
    """Sends its own PROXY ``header``, then TLS with ``options``, then ``request``."""

    def __init__(self, header: bytes, options: Any, request: bytes) -> None:
        super().__init__()
        self.header, self.options, self.request = header, options, request

    def connectionMade(self) -> None:
        transport: Any = self.transport
        transport.write(self.header)
        transport.startTLS(self.options)
        transport.write(self.request)


class WorkersTests(TestCase):
    """``--workers`` under a ``haproxy:`` listener: every worker reads the PROXY header
    (curl's ``--haproxy-protocol`` sends a v1 header, as HAProxy's ``send-proxy`` does)."""

    timeout = 90

    @defer.inlineCallbacks
    def test_workers_read_the_header(self) -> Any:
        files = Files(self.mktemp())
        port, metrics = low_port(), low_port()
        _, child = spawn(self, twistd_argv(
            "certsrv", "--workers", "2", "--listen", f"haproxy:tcp:{port}:interface=127.0.0.1",
            "--metrics", f"tcp:{metrics}", *files.argv()))
        yield defer.ensureDeferred(wait_listening(metrics + 1, child))
        client = shared_pki().client
        cert = write_pem(files.dir, "client.pem", client.chain_pem())
        key = write_pem(files.dir, "client.key", client.private_key_pem(), 0o600)
        curl = ["curl", "-sS", "--max-time", "20", "--cacert", files.ca, "--cert", cert,
                "--key", key, "--resolve", f"localhost:{port}:127.0.0.1",
                f"https://localhost:{port}/secure"]
        for _ in range(4):
            out, err, code = yield run([*curl, "--haproxy-protocol"])
            self.assertEqual((code, out.startswith(b"Client certificate accepted")), (0, True),
                             err)
        _, err, code = yield run(curl)
        self.assertNotEqual(code, 0)
        for _ in range(50):
            if "did not begin with a PROXY protocol header" in child.text:
                break
            yield task.deferLater(reactor, 0.1, lambda: None)
        self.assertRegex(child.text, r"worker \d.*closed a connection from 127\.0\.0\.1:\d+ on "
                                     r"--listen haproxy:tcp:")
