"""certsrv.server.endpoints: listening descriptions, shared ports, loopback defaults."""

from __future__ import annotations

import socket
import sys
from typing import Any

from twisted.internet import protocol
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from certsrv.server.endpoints import (
    PortInUse,
    ProxyHeaderFactory,
    check_free,
    loopback_by_default,
    parse_tcp,
    proxy_senders,
    split_proxy,
)
from certsrv.server.workers import worker_argv
from tests._servers import low_port
from tests._support import captured_events


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



class _Recorder(protocol.Protocol):
    def __init__(self) -> None:
        self.received = b""

    def dataReceived(self, data: bytes) -> None:
        self.received += data


class _Observer:
    def __init__(self) -> None:
        self.rejections: list[str] = []

    def rejected(self, reason: str) -> None:
        self.rejections.append(reason)


class ProxyHeaderTests(SynchronousTestCase):
    """``haproxy:`` listeners: the client's address from the PROXY header, and a connection
    without one closed, logged and counted."""

    V1 = b"PROXY TCP4 192.0.2.7 127.0.0.1 51000 8443\r\n"

    def connect(self, limit: int | None = None, senders: list[str] | None = None,
                peer_host: str = "127.0.0.1") -> tuple[Any, Any, _Observer, StringTransport]:
        """A connection from ``peer_host`` to a ProxyHeaderFactory (``limit``: most
        connections it takes; ``senders``: its --proxy-protocol-from)."""
        inner = protocol.Factory.forProtocol(_Recorder)
        if limit is not None:
            build = inner.buildProtocol
            inner.buildProtocol = lambda addr: build(addr) if limit else None  # type: ignore
        observer = _Observer()
        factory = ProxyHeaderFactory(inner, "haproxy:tcp:8443",  # type: ignore[arg-type]
                                     lambda: observer,  # type: ignore[arg-type,return-value]
                                     proxy_senders(senders or []))
        peer = IPv4Address("TCP", peer_host, 40000)
        wrapper = factory.buildProtocol(peer)
        transport = StringTransport(peerAddress=peer)
        if wrapper is not None:
            wrapper.makeConnection(transport)
        return wrapper, factory, observer, transport

    def test_split(self) -> None:
        self.assertEqual(split_proxy("haproxy:tcp:8443:interface=127.0.0.1"),
                         (True, "tcp:8443:interface=127.0.0.1"))
        self.assertEqual(split_proxy("HAProxy:tcp6:8443"), (True, "tcp6:8443"))
        self.assertEqual(split_proxy("tcp:8443"), (False, "tcp:8443"))
        self.assertEqual(parse_tcp(split_proxy("haproxy:tcp:8443")[1]).port, 8443)

    def test_client_address_from_header(self) -> None:
        wrapper, _, observer, transport = self.connect()
        with captured_events("certsrv.limits") as events:
            wrapper.dataReceived(self.V1[:10])
            wrapper.dataReceived(self.V1[10:] + b"\x16\x03\x01hello")
            wrapper.dataReceived(b" more")
        self.assertEqual(wrapper.wrappedProtocol.received, b"\x16\x03\x01hello more")
        self.assertEqual((wrapper.getPeer().host, wrapper.getPeer().port), ("192.0.2.7", 51000))
        self.assertFalse(transport.disconnecting)
        self.assertEqual((events, observer.rejections), ([], []))

    def test_tls_without_header(self) -> None:
        wrapper, _, observer, transport = self.connect()
        with captured_events("certsrv.limits") as events:
            wrapper.dataReceived(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"r" * 32)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(wrapper.wrappedProtocol.received, b"")
        self.assertEqual(observer.rejections, ["bad_proxy_header"])
        [event] = events
        self.assertEqual((event["reason"], event["peer"], event["listener"]),
                         ("bad_proxy_header", "127.0.0.1:40000", "haproxy:tcp:8443"))
        self.assertIn("TLS ClientHello", event["hint"])

    def test_malformed_header(self) -> None:
        wrapper, _, observer, transport = self.connect()
        with captured_events("certsrv.limits") as events:
            wrapper.dataReceived(b"PROXY TCP4 not-an-address\r\n")
        self.assertTrue(transport.disconnecting)
        self.assertEqual(observer.rejections, ["bad_proxy_header"])
        self.assertEqual(events[0]["hint"], repr(b"PROXY TCP4 not-a"))

    def test_refused_by_the_wrapped_factory(self) -> None:
        wrapper, *_ = self.connect(limit=0)
        self.assertIsNone(wrapper)

    def test_header_from_an_allowed_sender(self) -> None:
        """With --proxy-protocol-from, a balancer's connection reads its header as before."""
        wrapper, _, observer, _ = self.connect(senders=["10.0.0.0/24", "127.0.0.1"])
        wrapper.dataReceived(self.V1 + b"\x16")
        self.assertEqual(wrapper.getPeer().host, "192.0.2.7")
        self.assertEqual(observer.rejections, [])

    def test_header_from_another_peer_refused(self) -> None:
        """A peer outside --proxy-protocol-from could claim any address (a --trusted-proxy's):
        its connection is closed before a byte is read, logged and counted."""
        with captured_events("certsrv.limits") as events:
            wrapper, _, observer, _ = self.connect(senders=["10.0.0.5"], peer_host="10.0.0.6")
        self.assertIsNone(wrapper)
        self.assertEqual(observer.rejections, ["bad_proxy_header"])
        [event] = events
        self.assertEqual((event["reason"], event["peer"]), ("bad_proxy_header", "10.0.0.6:40000"))
        self.assertIn("only --proxy-protocol-from addresses", event["log_format"])

    def test_senders_checked(self) -> None:
        self.assertIsNone(proxy_senders([]))
        with self.assertRaises(usage.UsageError) as caught:
            proxy_senders(["10.0.0.1/8"])
        self.assertEqual(str(caught.exception),
                         "--proxy-protocol-from: '10.0.0.1/8' has host bits set; did you mean "
                         "10.0.0.0/8?")
