"""Rolling restart under load: two certsrv nodes behind HAProxy, each restarted in turn.

    python bench/rolling_restart.py [--clients 8] [--per-connection 20] [--steady 3]

Starts two ``twistd certsrv`` nodes on 127.0.0.1 (``--listen haproxy:tcp:...``, ``--metrics``,
``--drain-delay``) and HAProxy with docs/haproxy.cfg in front, then runs ``--clients``
threads that each send GET /secure back to back through HAProxy over keep-alive mTLS
connections (a new connection every ``--per-connection`` requests, so new handshakes and
new balancing decisions happen throughout). After ``--steady`` seconds it restarts node 1
(SIGTERM, waits for exit status 0, starts it again, waits until HAProxy has it UP again),
then node 2, then runs ``--steady`` seconds more. Prints requests sent, failed requests, and
what each node served; exits 1 on any failed request or a node exiting non-zero.

A request on a reused keep-alive connection that the server closed before answering (the
idle connection closed when the drain began) is sent again on a new connection, as HTTP
clients do for idempotent requests (RFC 9112, section 9.3.1); these are counted as retried,
not failed. Any other error, and any status but 200, is a failure.
"""

from __future__ import annotations

import argparse
import http.client
import os
import random
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from certsrv.pki import CertificateAuthority  # noqa: E402

HAPROXY = "/usr/sbin/haproxy"
DRAIN_DELAY = 3.0  # > the check interval of docs/haproxy.cfg (1 s) plus the check's time


def low_port() -> int:
    """A free port below the ephemeral range (TIME_WAIT sockets cannot take it)."""
    while True:
        port = random.randrange(20_000, 32_000)
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port


class Node:
    """One ``twistd certsrv`` node, restartable; its output appended to ``node<N>.log``."""

    def __init__(self, number: int, work: Path, proxied: bool = True) -> None:
        self.number = number
        self.work = work
        self.kind = "haproxy:tcp" if proxied else "tcp"
        self.port, self.metrics = low_port(), low_port()
        self.log = work / f"node{number}.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.extra: list[str] = []

    def start(self) -> None:
        w = self.work
        argv = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "-n",
                "--pidfile=", "certsrv",
                "--listen", f"{self.kind}:{self.port}:interface=127.0.0.1",
                "--metrics", f"tcp:{self.metrics}:interface=127.0.0.1",
                "--drain-delay", str(DRAIN_DELAY), "--drain-timeout", "20",
                "--cert", str(w / "server.pem"), "--key", str(w / "server.key"),
                "--ca", str(w / "ca.pem"), "--log-accepted", "off", *self.extra]
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        with open(self.log, "ab") as out:
            self.process = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)

    def stop(self, timeout: float = 60) -> int | None:
        """SIGTERM and wait; the exit status (None if it had to be killed)."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            return None

    def served(self) -> int:
        """Requests for /secure in the node's access log, over all its runs."""
        return self.log.read_text(errors="replace").count('"GET /secure HTTP/1.1" 200')


def render_haproxy(work: Path, listen: int, nodes: list[Node]) -> list[str]:
    """docs/haproxy.cfg filled in, and a second file adding a stats socket; the -f args."""
    text = (ROOT / "docs" / "haproxy.cfg").read_text()
    values = {"HAPROXY_LISTEN": f"127.0.0.1:{listen}"}
    for node in nodes:
        values[f"NODE{node.number}"] = f"127.0.0.1:{node.port}"
        values[f"NODE{node.number}_METRICS"] = str(node.metrics)
    for name, value in values.items():
        text = text.replace("${" + name + "}", value)
    (work / "haproxy.cfg").write_text(text)
    (work / "stats.cfg").write_text(f"global\n    stats socket {work / 'admin.sock'} mode 600\n")
    return ["-f", str(work / "haproxy.cfg"), "-f", str(work / "stats.cfg")]


def server_states(sock_path: Path) -> dict[str, str]:
    """HAProxy's view of each server of the backend: name -> status (UP, DOWN, ...)."""
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(str(sock_path))
        s.sendall(b"show stat\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    states = {}
    for line in data.decode().splitlines():
        fields = line.split(",")
        if len(fields) > 17 and fields[0] == "certsrv_nodes" and fields[1].startswith("node"):
            states[fields[1]] = fields[17]
    return states


def wait_for(condition: object, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.05)


class Load:
    """``clients`` threads sending GET /secure through HAProxy until stopped."""

    def __init__(self, port: int, context: ssl.SSLContext, clients: int,
                 per_connection: int) -> None:
        self.port, self.context, self.per_connection = port, context, per_connection
        self.counts = {"requests": 0, "failures": 0, "retried": 0}
        self.errors: list[str] = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self.client) for _ in range(clients)]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def stop(self) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(timeout=30)

    def count(self, key: str, error: str | None = None) -> None:
        with self.lock:
            self.counts[key] += 1
            if error is not None and len(self.errors) < 50:
                self.errors.append(error)

    def client(self) -> None:
        connection: http.client.HTTPSConnection | None = None
        used = 0
        while not self.stopping.is_set():
            if connection is None or used >= self.per_connection:
                if connection is not None:
                    connection.close()
                connection, used = self.connect(), 0
            reused = used > 0 and connection.sock is not None
            try:
                status = self.get(connection)
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError) as e:
                connection.close()
                if not reused:
                    self.count("requests")
                    self.count("failures", f"{type(e).__name__}: {e}")
                    connection = None
                    continue
                # Closed before answering, on a reused connection: send it again.
                self.count("retried")
                connection, used = self.connect(), 0
                try:
                    status = self.get(connection)
                except Exception as e2:  # every failure counts, whatever it is
                    self.count("requests")
                    self.count("failures", f"{type(e2).__name__} (after retry): {e2}")
                    connection = None
                    continue
            except Exception as e:
                self.count("requests")
                self.count("failures", f"{type(e).__name__}: {e}")
                connection.close()
                connection = None
                continue
            used += 1
            self.count("requests")
            if status != 200:
                self.count("failures", f"HTTP {status}")
        if connection is not None:
            connection.close()

    def connect(self) -> http.client.HTTPSConnection:
        return http.client.HTTPSConnection("localhost", self.port, context=self.context,
                                           timeout=20)

    @staticmethod
    def get(connection: http.client.HTTPSConnection) -> int:
        connection.request("GET", "/secure")
        response = connection.getresponse()
        response.read()
        return response.status


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--per-connection", type=int, default=20)
    parser.add_argument("--steady", type=float, default=3.0)
    args = parser.parse_args()
    if not os.access(HAPROXY, os.X_OK):
        print(f"{HAPROXY} not found: apt-get install haproxy")
        return 2

    work = Path(tempfile.mkdtemp(prefix="certsrv-rolling-"))
    ca = CertificateAuthority.create("rolling restart CA")
    (work / "ca.pem").write_bytes(ca.certificate_pem())
    ca.issue_server("localhost", "127.0.0.1").write(work / "server.pem", work / "server.key")
    ca.issue_client("loadgen").write(work / "client.pem", work / "client.key")
    context = ssl.create_default_context(cafile=str(work / "ca.pem"))
    context.load_cert_chain(str(work / "client.pem"), str(work / "client.key"))

    nodes = [Node(1, work), Node(2, work)]
    listen = low_port()
    haproxy = None
    codes: list[int | None] = []
    try:
        for node in nodes:
            node.start()
        haproxy = subprocess.Popen([HAPROXY, "-db", *render_haproxy(work, listen, nodes)],
                                   stdout=open(work / "haproxy.log", "wb"),
                                   stderr=subprocess.STDOUT)
        sock = work / "admin.sock"
        wait_for(lambda: sock.exists() and set(server_states(sock).values()) == {"UP"},
                 "both nodes UP in HAProxy")
        load = Load(listen, context, args.clients, args.per_connection)
        began = time.monotonic()
        load.start()
        time.sleep(args.steady)
        for node in nodes:
            name = f"node{node.number}"
            stopped = time.monotonic()
            wait_for_down = threading.Thread(target=wait_for, args=(
                lambda n=name: server_states(sock).get(n) != "UP", f"{name} DOWN"))
            wait_for_down.start()
            codes.append(node.stop())
            wait_for_down.join()
            node.start()
            wait_for(lambda n=name: server_states(sock).get(n) == "UP", f"{name} UP again")
            print(f"{name}: exit status {codes[-1]}, back in service "
                  f"{time.monotonic() - stopped:.1f} s after SIGTERM")
            time.sleep(1.0)
        time.sleep(args.steady)
        load.stop()
        took = time.monotonic() - began
        counts = load.counts
        print(f"requests {counts['requests']}, failed {counts['failures']}, retried on a "
              f"closed keep-alive connection {counts['retried']}; {args.clients} clients, "
              f"{took:.1f} s; served: " + ", ".join(f"node{n.number} {n.served()}"
                                                     for n in nodes))
        for error in load.errors[:10]:
            print("  failure:", error)
        return 1 if counts["failures"] or any(code != 0 for code in codes) else 0
    finally:
        for node in nodes:
            if node.process is not None and node.process.poll() is None:
                node.stop()
        if haproxy is not None:
            haproxy.terminate()
            haproxy.wait()
        print("logs:", work)


if __name__ == "__main__":
    raise SystemExit(main())
