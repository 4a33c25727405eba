"""certsrv.server.endpoints: listening descriptions, shared ports, loopback defaults."""

from __future__ import annotations

import socket
import sys

from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from certsrv.server.endpoints import PortInUse, check_free, loopback_by_default, parse_tcp
from certsrv.server.workers import worker_argv
from tests._servers import low_port


class ParseTests(SynchronousTestCase):
    """Only tcp:/tcp6: descriptions can be shared by workers."""

    def test_tcp(self) -> None:
        address = parse_tcp("tcp:8443:interface=127.0.0.1:backlog=50")
        self.assertEqual((address.family, address.interface, address.port, address.backlog),
                         (socket.AF_INET, "127.0.0.1", 8443, 50))
        address = parse_tcp("tcp6:8443:interface=\\:\\:1")
        self.assertEqual((address.family, address.interface), (socket.AF_INET6, "::1"))

    def test_refused(self) -> None:
        for description in ("unix:/tmp/x", "systemd:domain=INET:index=0", "tcp:x",
                            "tcp:1:2", "tcp:8443:colour=blue", "tcp:70000"):
            self.assertRaises(usage.UsageError, parse_tcp, description)

    def test_worker_argv_drops_workers(self) -> None:
        argv = worker_argv(["--workers", "2", "--ca", "x.pem", "--workers=auto", "--key", "k"])
        self.assertEqual(argv[-5:], ["certsrv", "--ca", "x.pem", "--key", "k"])
        self.assertEqual(argv[0], sys.executable)


class PortInUseTests(SynchronousTestCase):
    """A port another process listens on, even with SO_REUSEPORT, is reported as in use."""

    def test_check_free(self) -> None:
        address = parse_tcp(f"tcp:{low_port()}:interface=127.0.0.1")
        check_free(address)
        other = address.socket(listen=True)  # as a worker of another supervisor listens
        try:
            with self.assertRaises(PortInUse) as caught:
                check_free(address)
            self.assertIn(f"port {address.port} on 127.0.0.1 is already in use",
                          str(caught.exception))
        finally:
            other.close()
        check_free(address)


class LoopbackDefaultTests(SynchronousTestCase):
    """``--metrics tcp:PORT`` names no interface: loopback, not every interface."""

    def test_rewrite(self) -> None:
        cases = {"tcp:9100": "tcp:9100:interface=127.0.0.1",
                 "tcp:port=9100:backlog=5": "tcp:port=9100:backlog=5:interface=127.0.0.1",
                 "tcp6:9100": "tcp6:9100:interface=\\:\\:1",
                 "tcp:9100:interface=0.0.0.0": "tcp:9100:interface=0.0.0.0",
                 "unix:/run/certsrv.sock": "unix:/run/certsrv.sock"}
        for given, expected in cases.items():
            self.assertEqual(loopback_by_default(given), expected)

