"""certsrv.tls.context: the configuration in force, held once."""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from certsrv.server.build import build_site
from certsrv.tls.context import Current, ServerTLS
from certsrv.tls.verify import ClientVerifier
from tests._support import (
    clock_at_now,
    shared_pki,
)


class CurrentTests(SynchronousTestCase):
    """The configuration in force is held once: the TLS layer and the site read one
    ``Current``, so replacing it there (a reload) changes both."""

    def test_one_replacement_for_both(self) -> None:
        pki = shared_pki()
        clock = clock_at_now()
        current = Current(pki.settings(), ClientVerifier(clock))
        tls, site = ServerTLS(current), build_site(current)
        newer = ClientVerifier(clock)
        settings = pki.settings()
        current.replace(settings, newer)
        self.assertIs(tls.verifier, newer)
        self.assertIs(site.verifier, newer)
        self.assertIs(tls.settings, settings)
        self.assertIs(newer.settings, settings)



class BatchTests(SynchronousTestCase):
    """The responses to what one read brought leave at the end of that read, together, with
    no timer; a write at any other time waits for the next reactor turn, gathered."""

    def test_pipelined_responses_without_a_reactor_turn(self) -> None:
        from certsrv.testing import open_in_memory
        from certsrv.web.site import Limits
        from tests._support import HTTPClientProtocol, client_tls_options, make_server_factory

        pki = shared_pki()
        clock = clock_at_now()
        factory = make_server_factory(pki.settings(), clock=clock,
                                      limits=Limits(idle_timeout=10**9))
        keepalive = b"GET /secure HTTP/1.1\r\nHost: localhost\r\n\r\n"
        http = HTTPClientProtocol(keepalive)
        client, server, pump = open_in_memory(factory, client_tls_options(pki, pki.client), http)
        self.assertEqual(http.received.count(b"HTTP/1.1 200"), 1)
        http.received = b""
        timers = len(clock.getDelayedCalls())
        client.write(keepalive * 2)
        clock.advance(0)  # the client's TLS transport gathers its writes for a turn
        pump.flush(advanceClock=False)
        self.assertEqual(http.received.count(b"HTTP/1.1 200"), 2, http.received)
        self.assertEqual(len(clock.getDelayedCalls()), timers)
        server.write(b"a")
        server.write(b"b")
        pump.flush(advanceClock=False)
        self.assertFalse(http.received.endswith(b"ab"))
        pump.flush()
        self.assertTrue(http.received.endswith(b"ab"), http.received)
        client.loseConnection()
        pump.flush()


class TurnFlusherTests(SynchronousTestCase):
    """Under a reactor, the answers of every connection read in one turn leave together at
    the start of the next; under a clock without turns, at the end of each read."""

    class _Gathering:
        def __init__(self, name: str, sent: list[str]) -> None:
            self.name, self.sent, self.flush_waiting = name, sent, False

        def send_gathered(self) -> None:
            self.sent.append(self.name)

    def test_one_call_per_turn_in_read_order(self) -> None:
        from twisted.internet.task import Clock

        from certsrv.tls.context import TurnFlusher

        clock = Clock()
        flusher = TurnFlusher(clock)
        sent: list[str] = []
        first, second = self._Gathering("first", sent), self._Gathering("second", sent)
        for protocol in (first, second, first):
            flusher.add(protocol)  # type: ignore[arg-type]
        self.assertEqual((sent, len(clock.getDelayedCalls())), ([], 1))
        clock.advance(0)
        self.assertEqual(sent, ["first", "second"])
        self.assertFalse(first.flush_waiting or second.flush_waiting)
        flusher.add(first)  # type: ignore[arg-type]
        clock.advance(0)
        self.assertEqual(sent, ["first", "second", "first"])

    def test_only_under_a_reactor(self) -> None:
        from twisted.internet import reactor

        from certsrv.tls.context import TLSFactory, TurnFlusher

        pki = shared_pki()
        site = build_site(ClientVerifier(clock_at_now()))
        with_clock = TLSFactory(ServerTLS(pki.settings(), ClientVerifier(clock_at_now())), site)
        self.assertIsNone(with_clock.flusher)
        with_reactor = TLSFactory(ServerTLS(pki.settings(), ClientVerifier(reactor)), site)
        self.assertIsInstance(with_reactor.flusher, TurnFlusher)


class CloseNotifyTests(SynchronousTestCase):
    """A client's close_notify ends what it sends, not what it is owed."""

    def test_answer_to_a_request_read_with_the_close_notify(self) -> None:
        """A request and the client's close_notify in one read (TLS half-close, as Go's
        CloseWrite does): the answer goes out before the server's own close_notify."""
        from certsrv.testing import open_in_memory
        from tests._support import HTTPClientProtocol, client_tls_options, make_server_factory

        pki = shared_pki()
        clock = clock_at_now()
        factory = make_server_factory(pki.settings(), clock=clock)
        http = HTTPClientProtocol(b"")
        client, _, pump = open_in_memory(factory, client_tls_options(pki, pki.client), http)
        client.write(b"GET /secure HTTP/1.1\r\nHost: localhost\r\n\r\n")
        client.loseConnection()  # the request, then close_notify: one read for the server
        pump.flush()
        self.assertTrue(http.received.startswith(b"HTTP/1.1 200 OK\r\n"), http.received)
        self.assertIn(b"CN=alice", http.received)


    def test_close_without_close_notify_is_a_truncation(self) -> None:
        """A peer gone without close_notify is a connection lost, not closed cleanly (the last
        read asks OpenSSL, which sees the unexpected EOF, as Twisted's own loop does)."""
        from twisted.internet.error import ConnectionLost

        from certsrv.testing import open_in_memory
        from tests._support import HTTPClientProtocol, client_tls_options, make_server_factory

        pki = shared_pki()
        factory = make_server_factory(pki.settings(), clock=clock_at_now())
        client, server, pump = open_in_memory(factory, client_tls_options(pki, pki.client),
                                              HTTPClientProtocol(b""))
        reasons: list[Any] = []
        channel = server.wrappedProtocol
        lost = channel.connectionLost
        channel.connectionLost = lambda reason: (reasons.append(reason), lost(reason))
        client.transport.loseConnection()  # TCP closed, no close_notify
        pump.flush()
        self.assertEqual(len(reasons), 1)
        self.assertTrue(reasons[0].check(ConnectionLost), reasons[0])


def _named_roots(count: int) -> tuple[Any, ...]:
    """``count`` self-signed CA certificates with long names (one key: only names count)."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    roots = []
    for i in range(count):
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"Extra root {i}"),
                          *(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "u" * 60)
                            for _ in range(10))])
        roots.append(x509.CertificateBuilder().subject_name(name).issuer_name(name)
                     .public_key(key.public_key()).serial_number(i + 1)
                     .not_valid_before(now - datetime.timedelta(days=1))
                     .not_valid_after(now + datetime.timedelta(days=1))
                     .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
                     .sign(key, hashes.SHA256()))
    return tuple(roots)


class LargeFlightTests(SynchronousTestCase):
    """The server's handshake flight leaves whole, however large."""

    def test_certificate_request_naming_many_cas(self) -> None:
        """CA names beyond 32 KiB in the CertificateRequest: sent in full, not left in
        OpenSSL until the client (which waits for them) sends something."""
        import dataclasses

        from certsrv.testing import open_in_memory
        from tests._support import HTTPClientProtocol, client_tls_options, make_server_factory

        pki = shared_pki()
        extra = _named_roots(60)
        self.assertGreater(sum(len(c.subject.public_bytes()) for c in extra), 2**15)
        settings = pki.settings()
        settings = dataclasses.replace(settings, roots=settings.roots + extra)
        factory = make_server_factory(settings, clock=clock_at_now())
        http = HTTPClientProtocol(b"GET /secure HTTP/1.1\r\nHost: localhost\r\n"
                                  b"Connection: close\r\n\r\n")
        open_in_memory(factory, client_tls_options(pki, pki.client), http)
        self.assertTrue(http.received.startswith(b"HTTP/1.1 200 OK\r\n"), http.received)
