"""certsrv.server.reload: files replaced on disk (CRLs, the server's certificate and key, CAs,
pins, policy) take effect on new connections without a restart; a bad state never does."""

from __future__ import annotations

import os
from typing import Any

from cryptography import x509
from twisted.internet import defer
from twisted.trial.unittest import SynchronousTestCase

from certsrv import testing
from certsrv.pki import CertificateAuthority, IssuedCertificate
from certsrv.server.build import build_site
from certsrv.server.config import ServerConfig
from certsrv.server.metrics import Metrics
from certsrv.server.reload import Reloader
from certsrv.testing import CertificateFactory
from certsrv.tls.context import Current, ServerTLS, TLSFactory
from tests._support import (
    DAY,
    Exchange,
    HTTPClientProtocol,
    captured_events,
    client_tls_options,
    clock_at_now,
    crl_pem,
    exchange,
    make_server_factory,
    policy_text,
    request_bytes,
    shared_pki,
    utcnow,
    write_pem,
)


class CRLReloadTests(SynchronousTestCase):
    """A CRL replaced on disk takes effect on new connections without a restart."""

    def test_replaced_crl_takes_effect_and_bad_one_is_refused(self) -> None:
        pki = shared_pki()
        directory = self.mktemp()
        crl_path = write_pem(directory, "crl.pem", crl_pem(pki.root))
        config = ServerConfig(
            cert=write_pem(directory, "server.pem", pki.server.chain_pem()),
            key=write_pem(directory, "server.key", pki.server.private_key_pem(), 0o600),
            ca=(write_pem(directory, "ca.pem", pki.root.certificate_pem()),), crls=(crl_path,))
        clock = clock_at_now()
        settings, verifier = config.load(clock)
        factory = make_server_factory(settings, verifier=verifier)
        tls: ServerTLS = factory.tls
        metrics = Metrics()
        reloader = Reloader(config, tls.current, clock, interval=5, observer=metrics)
        reloader.startService()
        self.addCleanup(reloader.stopService)
        victim = pki.root.issue_client("soon-revoked")

        self.assertEqual(exchange(factory, client_tls_options(pki, victim)).status, 200)
        write_pem(directory, "crl.pem", crl_pem(pki.root, victim, crl_number=2))
        os.utime(crl_path, ns=(1, 10**18))  # a different mtime, even within one tick
        clock.advance(5)
        self.assertEqual(reloader.reloads, 1)
        self.assertIsNot(tls.verifier, verifier, "the reload put a new verifier in force")
        result = exchange(factory, client_tls_options(pki, victim))
        self.assertIsNone(result.status)
        self.assertIn("certificate revoked", result.client_error)

        impostor = CertificateAuthority.create("Test Root CA", organization="certsrv")
        forged = CertificateAuthority(pki.root.certificate, impostor.private_key)
        write_pem(directory, "crl.pem", crl_pem(forged))
        os.utime(crl_path, ns=(1, 2 * 10**18))
        with captured_events("certsrv.reload") as events:
            clock.advance(5)
        self.assertEqual([e["reason"] for e in events], ["reload_refused"])
        self.assertEqual(reloader.reloads, 1)
        for result in ("ok", "refused"):
            self.assertEqual(metrics.registry.get_sample_value(
                "certsrv_reloads_total", {"result": result}), 1.0)
        result = exchange(factory, client_tls_options(pki, victim))
        self.assertIn("certificate revoked", result.client_error, "the old CRL stays")
        self.assertEqual(exchange(factory, client_tls_options(pki, pki.client)).status, 200)


class _Seeing(HTTPClientProtocol):
    """A client that remembers the certificate the server showed."""

    shown: x509.Certificate | None = None

    def dataReceived(self, data: bytes) -> None:
        if self.shown is None:
            self.shown = self.transport.getPeerCertificate().to_cryptography()
        super().dataReceived(data)


class _Served:
    """A server whose certificate and key live in a Kubernetes-style secret volume
    (``tls.crt -> ..data/tls.crt``), with a CA file, pins file and policy beside them,
    watched every 5 s on the test's clock."""

    def __init__(self, case: SynchronousTestCase, **config: Any) -> None:
        self.pki = shared_pki()
        self.dir = case.mktemp()
        self.secret = os.path.join(self.dir, "secret")
        self.stamps = 0
        self.publish(self.pki.server)
        self.ca = write_pem(self.dir, "ca.pem", self.pki.root.certificate_pem())
        self.config = ServerConfig(cert=os.path.join(self.secret, "tls.crt"),
                                   key=os.path.join(self.secret, "tls.key"), ca=(self.ca,),
                                   **config)
        self.clock = clock_at_now()
        current = Current(*self.config.load(self.clock))
        # The TLS layer and the site read the same configuration in force, as in the server.
        self.factory = TLSFactory(ServerTLS(current), build_site(current))
        self.metrics = Metrics()
        self.reloader = Reloader(self.config, current, self.clock, interval=5,
                                 observer=self.metrics)
        self.reloader.startService()
        case.addCleanup(self.reloader.stopService)

    def publish(self, cert: IssuedCertificate | None = None, *, key: bytes | None = None,
                crt: bytes | None = None, key_mode: int = 0o600) -> None:
        """Swap the secret as the kubelet does: a new timestamped directory, ``..data_tmp``
        pointing at it, renamed over ``..data``."""
        self.stamps += 1
        stamp = f"..2026_11_29_10_00_{self.stamps:02}.{self.stamps}"
        files = {"tls.crt": crt if crt is not None else cert.chain_pem(),  # type: ignore[union-attr]
                 "tls.key": key if key is not None else cert.private_key_pem()}  # type: ignore[union-attr]
        for name, data in files.items():
            write_pem(os.path.join(self.secret, stamp), name, data, key_mode)
        os.symlink(stamp, os.path.join(self.secret, "..data_tmp"))
        os.rename(os.path.join(self.secret, "..data_tmp"), os.path.join(self.secret, "..data"))
        for name in files:
            link = os.path.join(self.secret, name)
            if not os.path.islink(link):
                os.symlink(os.path.join("..data", name), link)

    def look(self) -> list[dict[str, Any]]:
        """Let one watch interval pass; the reload events it brought."""
        with captured_events("certsrv.reload") as events:
            self.clock.advance(5)
        return events

    def served(self, client: IssuedCertificate | None = None
               ) -> tuple[int | None, x509.Certificate]:
        """A new connection's status and the server certificate it was shown."""
        seeing = _Seeing(request_bytes())
        server_tls = testing.connect_in_memory(
            self.factory, client_tls_options(self.pki, client or self.pki.client), seeing)
        assert seeing.shown is not None
        return Exchange(seeing, server_tls).status, seeing.shown

    def refusals(self) -> float | None:
        return self.metrics.registry.get_sample_value("certsrv_reloads_total",
                                                      {"result": "refused"})


class RotationTests(SynchronousTestCase):
    """The server's certificate and key, CAs, pins and policy, rotated by files."""

    def test_kubelet_swap_rotates_the_server_certificate(self) -> None:
        served = _Served(self)
        self.assertEqual(served.served(), (200, served.pki.server.certificate))
        self.assertEqual(served.look(), [], "nothing changed, nothing reloaded")
        rotated = served.pki.root.server()
        served.publish(rotated)
        events = served.look()
        self.assertEqual([e["reason"] for e in events], ["reloaded"])
        self.assertIn("tls.crt, ", events[0]["why"])
        self.assertEqual(served.served(), (200, rotated.certificate))
        self.assertEqual(served.look(), [], "the new files are the ones in force")
        self.assertEqual(served.reloader.reloads, 1)

    def test_mismatched_pair_is_refused_once_and_retried(self) -> None:
        served = _Served(self)
        old = served.pki.server
        rotated = served.pki.root.server()
        # A writer that renames the certificate in first and the key a moment later (and
        # lets others read the key: the load warns before it finds the mismatch).
        served.publish(crt=rotated.chain_pem(), key=old.private_key_pem(), key_mode=0o644)
        with captured_events("certsrv.config") as warnings:
            events = served.look()
            later = [served.look(), served.look()]
        self.assertEqual([e["reason"] for e in events], ["reload_refused"])
        self.assertIn("private key does not match", events[0]["error"])
        self.assertEqual(later, [[], []], "logged once per state")
        self.assertEqual([e["reason"] for e in warnings], ["key_exposed"],
                         "the same files are not loaded again at each look")
        self.assertEqual(served.served(), (200, old.certificate), "never served")
        self.assertEqual(served.refusals(), 1.0)
        served.publish(rotated)
        self.assertEqual([e["reason"] for e in served.look()], ["reloaded"])
        self.assertEqual(served.served(), (200, rotated.certificate))

    def test_truncated_certificate_is_refused_until_complete(self) -> None:
        served = _Served(self)
        rotated = served.pki.root.server()
        pem = rotated.chain_pem()
        served.publish(crt=pem[: len(pem) // 2], key=rotated.private_key_pem())
        events = served.look()
        self.assertEqual([e["reason"] for e in events], ["reload_refused"])
        self.assertEqual(events[0]["source"], served.config.cert)
        self.assertEqual(served.served(), (200, served.pki.server.certificate))
        served.publish(crt=pem[: len(pem) - 40], key=rotated.private_key_pem())
        self.assertEqual([e["reason"] for e in served.look()], ["reload_refused"],
                         "another broken state is logged again")
        self.assertEqual(served.refusals(), 2.0)
        served.publish(rotated)
        self.assertEqual([e["reason"] for e in served.look()], ["reloaded"])
        self.assertEqual(served.served(), (200, rotated.certificate))

    def test_refused_state_is_retried_without_a_change(self) -> None:
        served = _Served(self)
        soon = served.pki.root.server(not_before=utcnow() + DAY / 24 / 60)
        served.publish(soon)
        events = served.look()
        self.assertEqual([e["reason"] for e in events], ["reload_refused"])
        self.assertIn("not valid before", events[0]["error"])
        served.clock.advance(60)  # the files stay as they are; the clock reaches notBefore
        self.assertEqual(served.reloader.reloads, 1)
        # (No handshake: the client would judge the certificate by the wall clock.)
        self.assertEqual(served.factory.tls.settings.certificate, soon.certificate)

    def test_touch_reloads_nothing(self) -> None:
        served = _Served(self)
        verifier = served.factory.tls.verifier
        os.utime(served.ca, ns=(1, 10**18))
        os.utime(served.config.key, ns=(1, 10**18))
        self.assertEqual(served.look(), [])
        self.assertIs(served.factory.tls.verifier, verifier)

    def test_ca_rotation(self) -> None:
        served = _Served(self)
        new_ca = CertificateFactory.create("Rotated Root CA")
        carol = new_ca.client("carol")
        keep_alive = b"GET /secure HTTP/1.1\r\nHost: localhost\r\n\r\n"
        alice = HTTPClientProtocol(keep_alive)
        alice_tls, _, pump = testing.open_in_memory(
            served.factory, client_tls_options(served.pki, served.pki.client), alice)
        self.assertTrue(alice.received.startswith(b"HTTP/1.1 200 "))
        refused = exchange(served.factory, client_tls_options(served.pki, carol))
        self.assertIn("unknown ca", refused.client_error, "not trusted yet")
        write_pem(served.dir, "ca.pem", new_ca.certificate_pem())
        self.assertEqual([e["reason"] for e in served.look()], ["reloaded"])
        self.assertEqual(served.served(carol)[0], 200)
        refused = exchange(served.factory, client_tls_options(served.pki, served.pki.client))
        self.assertIsNone(refused.status, "a client of the removed CA is refused")
        self.assertIn("unknown ca", refused.client_error)
        alice.received = b""
        alice_tls.write(keep_alive)
        pump.flush()
        self.assertTrue(alice.received.startswith(b"HTTP/1.1 403 "),
                        "an open connection is judged again at its next request")
        self.assertIn(b"unknown_ca", alice.received)

    def test_pins_and_policy_files_are_watched(self) -> None:
        pki = shared_pki()
        directory = self.mktemp()
        pins = write_pem(directory, "pins.txt", pki.client.fingerprint.encode())
        policy = write_pem(directory, "policy.toml", policy_text("alice").encode())
        served = _Served(self, pins_file=pins, policy=policy)
        write_pem(directory, "pins.txt", f"{pki.client.fingerprint}\n{'ab' * 32}\n".encode())
        self.assertEqual([e["reason"] for e in served.look()], ["reloaded"])
        self.assertIn("ab" * 32, served.factory.tls.verifier.pins)
        write_pem(directory, "policy.toml", policy_text("operator").encode())
        self.assertEqual([e["reason"] for e in served.look()], ["reloaded"])
        write_pem(directory, "policy.toml", b"[[rule]]\nname = 1\n")
        events = served.look()
        self.assertEqual([e["reason"] for e in events], ["reload_refused"])
        self.assertEqual(events[0]["source"].split(":")[0], policy)


class OffloadTests(SynchronousTestCase):
    """The disk work goes through ``offload`` (a thread, in the server); the load after it."""

    def test_looks_and_sighup_reads_are_offloaded(self) -> None:
        pki = shared_pki()
        files = pki.files(self.mktemp())
        config = ServerConfig(cert=files.cert, key=files.key, ca=(files.ca,))
        clock = clock_at_now()
        settings, verifier = config.load(clock)
        factory = make_server_factory(settings, verifier=verifier)
        pending: list[tuple[defer.Deferred[Any], Any]] = []

        def offload(work: Any) -> defer.Deferred[Any]:
            waiting: defer.Deferred[Any] = defer.Deferred()
            pending.append((waiting, work))
            return waiting

        reloader = Reloader(config, factory.tls.current, clock, interval=5, offload=offload)
        reloader.startService()
        self.addCleanup(reloader.stopService)
        write_pem(os.path.dirname(files.ca), "ca.pem", pki.other_root.certificate_pem())
        clock.advance(5)
        clock.advance(5)
        self.assertEqual(len(pending), 1, "one look at a time")
        sighup = reloader.refresh("SIGHUP")
        waiting, work = pending.pop()
        waiting.callback(work())
        self.assertEqual(reloader.reloads, 1)
        self.assertEqual(len(pending), 1, "the SIGHUP read waited for the look")
        waiting, work = pending.pop()
        waiting.callback(work())
        self.assertTrue(self.successResultOf(sighup))
        self.assertEqual(reloader.reloads, 2)
