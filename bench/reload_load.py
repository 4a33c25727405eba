"""Reload under load: steady keep-alive mTLS traffic while certsrv reloads, counting failures.

    python bench/reload_load.py [--seconds 20] [--clients 8] [--reload-every 0.5]

Starts certsrv on 127.0.0.1 with a fresh PKI, runs ``--clients`` threads that each send GET
/secure back to back over keep-alive connections (reconnecting every 50 requests, so new
handshakes happen throughout), and meanwhile sends SIGHUP every ``--reload-every`` seconds,
rotating the server certificate (a new one from the same CA) and rewriting the CRL before
every other reload. Prints requests made, failures, and reloads; exits 1 on any failure.
"""

from __future__ import annotations

import argparse
import http.client
import os
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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def client_thread(port: int, context: ssl.SSLContext, stop: threading.Event,
                  counts: dict[str, int], errors: list[str], lock: threading.Lock) -> None:
    connection: http.client.HTTPSConnection | None = None
    made = 0
    while not stop.is_set():
        try:
            if connection is None or made % 50 == 0:
                if connection is not None:
                    connection.close()
                connection = http.client.HTTPSConnection("localhost", port, context=context,
                                                         timeout=10)
            connection.request("GET", "/secure")
            response = connection.getresponse()
            body = response.read()
            made += 1
            with lock:
                counts["requests"] += 1
                if response.status != 200:
                    counts["failures"] += 1
                    errors.append(f"HTTP {response.status}: {body[:100]!r}")
        except Exception as e:  # every failure counts, whatever it is
            with lock:
                counts["requests"] += 1
                counts["failures"] += 1
                errors.append(f"{type(e).__name__}: {e}")
            connection = None
    if connection is not None:
        connection.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--reload-every", type=float, default=0.5)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="certsrv-reload-"))
    ca = CertificateAuthority.create("reload test CA")
    (work / "ca.pem").write_bytes(ca.certificate_pem())
    ca.issue_server("localhost", "127.0.0.1").write(work / "server.pem", work / "server.key")
    client = ca.issue_client("loadgen")
    client.write(work / "client.pem", work / "client.key")
    (work / "crl.pem").write_bytes(ca.crl().public_bytes(
        __import__("cryptography.hazmat.primitives.serialization",
                   fromlist=["Encoding"]).Encoding.PEM))
    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    server = subprocess.Popen(
        [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "-n",
         "--pidfile=", "certsrv", "--listen", f"tcp:{port}:interface=127.0.0.1",
         "--cert", str(work / "server.pem"), "--key", str(work / "server.key"),
         "--ca", str(work / "ca.pem"), "--crl", str(work / "crl.pem"),
         "--watch-interval", "0", "--access-log", "off"],
        env=env, stdout=open(work / "server.log", "wb"), stderr=subprocess.STDOUT)
    try:
        context = ssl.create_default_context(cafile=str(work / "ca.pem"))
        context.load_cert_chain(str(work / "client.pem"), str(work / "client.key"))
        deadline = time.monotonic() + 30
        while True:
            try:
                probe = http.client.HTTPSConnection("localhost", port, context=context, timeout=2)
                probe.request("GET", "/secure")
                if probe.getresponse().status == 200:
                    probe.close()
                    break
            except OSError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                print("certsrv did not start; see", work / "server.log")
                return 1
            time.sleep(0.2)

        counts = {"requests": 0, "failures": 0}
        errors: list[str] = []
        lock = threading.Lock()
        stop = threading.Event()
        threads = [threading.Thread(target=client_thread,
                                    args=(port, context, stop, counts, errors, lock))
                   for _ in range(args.clients)]
        for thread in threads:
            thread.start()
        reloads = 0
        end = time.monotonic() + args.seconds
        while time.monotonic() < end:
            time.sleep(args.reload_every)
            if reloads % 2 == 0:
                # Rotate the server certificate and rewrite the CRL, then reload.
                fresh = ca.issue_server("localhost", "127.0.0.1")
                fresh.write(work / "server.pem.new", work / "server.key.new")
                os.replace(work / "server.key.new", work / "server.key")
                os.replace(work / "server.pem.new", work / "server.pem")
            server.send_signal(signal.SIGHUP)
            reloads += 1
        stop.set()
        for thread in threads:
            thread.join(timeout=20)
        log = (work / "server.log").read_text(errors="replace")
        applied = log.count("configuration reloaded (SIGHUP)")
        refused = log.count("reload (SIGHUP) refused")
        print(f"requests {counts['requests']}, failures {counts['failures']}, "
              f"SIGHUPs sent {reloads}, reloads applied {applied}, refused {refused}, "
              f"clients {args.clients}, {args.seconds:g} s")
        for error in errors[:10]:
            print("  failure:", error)
        return 1 if counts["failures"] or "Traceback" in log else 0
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=40)
        except subprocess.TimeoutExpired:
            server.kill()


if __name__ == "__main__":
    raise SystemExit(main())
