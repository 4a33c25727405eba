"""What HAProxy in TCP mode adds: certsrv direct vs behind HAProxy, measured with ab.

    python bench/haproxy_overhead.py [--requests 3000] [--concurrency 16]

Starts one ``twistd certsrv`` node listening on ``tcp:`` and one on ``haproxy:tcp:`` behind
HAProxy (docs/haproxy.cfg, with only that node), both with ``--access-log off
--log-accepted off``, then runs ``ab -E client.pem -n N -c C`` against each: a new
connection and a full mTLS handshake per request (ab's keep-alive is HTTP/1.0's, which
twisted.web does not do). Prints requests per second and the CPU time certsrv and HAProxy
each spent per request (from /proc): the CPU times are the figures to compare, the rates
depend on what else the machine runs. HAProxy logs every connection (docs/haproxy.cfg's
``option tcplog``), which is part of its cost.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from rolling_restart import (  # noqa: E402
    HAPROXY,
    Node,
    low_port,
    render_haproxy,
    server_states,
    wait_for,
)

from certsrv.pki import CertificateAuthority  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of process ``pid``."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def ab(port: int, client: Path, requests: int, concurrency: int) -> float:
    """Requests per second ``ab`` measured; fails on any failed or non-2xx request."""
    argv = ["ab", "-q", "-E", str(client), "-n", str(requests), "-c", str(concurrency),
            f"https://127.0.0.1:{port}/secure"]
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    failed = int(re.search(r"Failed requests:\s+(\d+)", out).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx responses:\s+(\d+)", out)
    if failed or non2xx:
        raise SystemExit(f"ab: {failed} failed requests\n{out}")
    return float(re.search(r"Requests per second:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    if not os.access(HAPROXY, os.X_OK) or shutil.which("ab") is None:
        print("needs haproxy and ab: apt-get install haproxy apache2-utils")
        return 2
    work = Path(tempfile.mkdtemp(prefix="certsrv-haproxy-overhead-"))
    ca = CertificateAuthority.create("overhead CA")
    (work / "ca.pem").write_bytes(ca.certificate_pem())
    ca.issue_server("localhost", "127.0.0.1").write(work / "server.pem", work / "server.key")
    client = ca.issue_client("ab")
    combined = work / "client-combined.pem"
    fd = os.open(combined, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(client.chain_pem() + client.private_key_pem())

    direct, proxied = Node(1, work, proxied=False), Node(2, work)
    for node in (direct, proxied):
        node.extra = ["--access-log", "off"]
        node.start()
    # docs/haproxy.cfg has two server lines: both name the proxied node here.
    twin = Node(2, work)
    twin.number, twin.port, twin.metrics = 1, proxied.port, proxied.metrics
    listen = low_port()
    haproxy = subprocess.Popen([HAPROXY, "-db", *render_haproxy(work, listen, [twin, proxied])],
                               stdout=open(work / "haproxy.log", "wb"),
                               stderr=subprocess.STDOUT)
    try:
        sock = work / "admin.sock"
        wait_for(lambda: sock.exists() and set(server_states(sock).values()) == {"UP"},
                 "the node UP in HAProxy")
        time.sleep(1)
        print(f"{args.requests} requests, ab -c {args.concurrency}")
        for name, port in (("direct", direct.port), ("via haproxy", listen)):
            node = direct if name == "direct" else proxied
            assert node.process is not None
            before = cpu_seconds(node.process.pid), cpu_seconds(haproxy.pid)
            rate = ab(port, combined, args.requests, args.concurrency)
            after = cpu_seconds(node.process.pid), cpu_seconds(haproxy.pid)
            node_ms = (after[0] - before[0]) * 1000 / args.requests
            proxy_ms = (after[1] - before[1]) * 1000 / args.requests
            print(f"  {name:12} {rate:8.0f} req/s   certsrv {node_ms:.3f} CPU-ms/req   "
                  f"haproxy {proxy_ms:.3f} CPU-ms/req")
        return 0
    finally:
        for node in (direct, proxied):
            if node.process is not None and node.process.poll() is None:
                node.stop()
        haproxy.terminate()
        haproxy.wait()


if __name__ == "__main__":
    raise SystemExit(main())
