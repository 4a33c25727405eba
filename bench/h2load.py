"""An HTTP/2 load generator that presents a client certificate (Debian's h2load cannot).

python bench/h2load.py --port P --ca CA --cert CERT --key KEY [--procs 2 --conns 4
--streams 16 --duration 5]: ``--procs`` processes each open ``--conns`` TLS connections
(ALPN h2, the client certificate), keep ``--streams`` ``GET /secure`` streams in flight on
each, and count the responses. Like keepalive.c it prints ``READY <connections>``, waits
for a line on stdin, runs for ``--duration`` seconds and prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import selectors
import socket
import ssl
import sys
import time
from typing import Any

import h2.config
import h2.connection
import h2.events

REQUEST = [(":method", "GET"), (":path", "/secure"), (":scheme", "https"),
           (":authority", "localhost")]


class Connection:
    """One h2 connection keeping ``streams`` requests in flight."""

    def __init__(self, args: argparse.Namespace, context: ssl.SSLContext) -> None:
        raw = socket.create_connection(("127.0.0.1", args.port))
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = context.wrap_socket(raw, server_hostname="localhost")
        if self.sock.selected_alpn_protocol() != "h2":
            raise SystemExit(f"the server did not pick h2 ({self.sock.selected_alpn_protocol()})")
        self.h2 = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        self.h2.initiate_connection()
        self.h2.increment_flow_control_window(2**30)
        self.sock.sendall(self.h2.data_to_send())
        self.sock.setblocking(False)
        self.streams = args.streams
        self.status: dict[int, bytes] = {}
        self.ok = self.non200 = 0
        self.running = False

    def start(self) -> None:
        self.running = True
        for _ in range(self.streams):
            self._request()
        self._send()

    def _request(self) -> None:
        stream_id = self.h2.get_next_available_stream_id()
        self.h2.send_headers(stream_id, REQUEST, end_stream=True)
        self.status[stream_id] = b""

    def _send(self) -> None:
        data = self.h2.data_to_send()
        if data:
            self.sock.setblocking(True)
            self.sock.sendall(data)
            self.sock.setblocking(False)

    def readable(self) -> bool:
        """Read what is there; False when the connection is gone."""
        try:
            data = self.sock.recv(65536)
        except (ssl.SSLWantReadError, BlockingIOError):
            return True
        if not data:
            return False
        for event in self.h2.receive_data(data):
            if isinstance(event, h2.events.ResponseReceived):
                self.status[event.stream_id] = dict(event.headers).get(b":status", b"")
            elif isinstance(event, h2.events.DataReceived):
                self.h2.acknowledge_received_data(event.flow_controlled_length,
                                                  event.stream_id)
            elif isinstance(event, h2.events.StreamEnded):
                if self.status.pop(event.stream_id, b"") == b"200":
                    self.ok += 1
                else:
                    self.non200 += 1
                if self.running:
                    self._request()
            elif isinstance(event, (h2.events.StreamReset, h2.events.ConnectionTerminated)):
                return False
        self._send()
        return True


def worker(args: argparse.Namespace, ready: Any, go: Any, results: Any) -> None:
    context = ssl.create_default_context(cafile=args.ca)
    context.load_cert_chain(args.cert, args.key)
    context.set_alpn_protocols(["h2"])
    conns = [Connection(args, context) for _ in range(args.conns)]
    ready.put(len(conns))
    go.wait()
    selector = selectors.DefaultSelector()
    for c in conns:
        selector.register(c.sock, selectors.EVENT_READ, c)
        c.start()
    errors = 0
    deadline = time.monotonic() + args.duration
    while time.monotonic() < deadline and selector.get_map():
        for key, _ in selector.select(0.2):
            conn: Connection = key.data
            if not conn.readable():
                errors += 1
                selector.unregister(conn.sock)
    results.put({"ok": sum(c.ok for c in conns), "non200": sum(c.non200 for c in conns),
                 "errors": errors})


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    for name in ("--ca", "--cert", "--key"):
        p.add_argument(name, required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--procs", type=int, default=2)
    p.add_argument("--conns", type=int, default=4, help="connections per process")
    p.add_argument("--streams", type=int, default=16, help="streams in flight per connection")
    p.add_argument("--duration", type=float, default=5.0)
    args = p.parse_args()
    ready, results = multiprocessing.Queue(), multiprocessing.Queue()
    go = multiprocessing.Event()
    procs = [multiprocessing.Process(target=worker, args=(args, ready, go, results))
             for _ in range(args.procs)]
    for proc in procs:
        proc.start()
    opened = sum(ready.get(timeout=120) for _ in procs)
    print(f"READY {opened}", flush=True)
    sys.stdin.readline()
    start = time.monotonic()
    go.set()
    totals = {"ok": 0, "non200": 0, "errors": 0}
    for _ in procs:
        for key, value in results.get(timeout=args.duration + 120).items():
            totals[key] += value
    window = time.monotonic() - start
    for proc in procs:
        proc.join(30)
    print(json.dumps({"mode": "h2", "conns": opened, "streams": args.streams,
                      "window_s": round(window, 4), "responses_200": totals["ok"],
                      "non200": totals["non200"], "errors": totals["errors"],
                      "rps": round(totals["ok"] / window, 2)}), flush=True)


if __name__ == "__main__":
    main()
