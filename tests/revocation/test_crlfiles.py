"""Revocation by CRL: in the handshake, with fail-closed/open, and reloaded while running."""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

from twisted.internet import defer, reactor
from twisted.trial.unittest import SynchronousTestCase, TestCase

from certsrv.exceptions import ConfigurationError, Reason
from certsrv.pki import CertificateAuthority, IssuedCertificate
from certsrv.server.config import ServerConfig
from tests._servers import Collect as _Collect
from tests._servers import run
from tests._support import (
    DAY,
    captured_events,
    client_tls_options,
    clock_at_now,
    crl_pem,
    exchange,
    make_server_factory,
    shared_pki,
    utcnow,
    write_pem,
)


class CRLHandshakeTests(SynchronousTestCase):
    """A CRL in the trust store decides inside the handshake."""

    def setUp(self) -> None:
        self.pki = shared_pki()
        self.dir = self.mktemp()
        self.ca = write_pem(self.dir, "ca.pem", self.pki.root.certificate_pem())
        self.inter = write_pem(self.dir, "inter.pem", self.pki.intermediate.certificate_pem())
        self.cert = write_pem(self.dir, "server.pem", self.pki.server.chain_pem())
        self.key = write_pem(self.dir, "server.key", self.pki.server.private_key_pem(), 0o600)

    def config(self, *crls: bytes, **kwargs: Any) -> ServerConfig:
        paths = tuple(write_pem(self.dir, f"crl{i}.pem", data) for i, data in enumerate(crls))
        return ServerConfig(cert=self.cert, key=self.key, ca=(self.ca,),
                            intermediates=(self.inter,), crls=paths, **kwargs)

    def connect(self, config: ServerConfig, cert: IssuedCertificate):  # type: ignore[no-untyped-def]
        clock = clock_at_now()
        settings, verifier = config.load(clock)
        factory = make_server_factory(settings, verifier=verifier)
        with captured_events() as events:
            result = exchange(factory, client_tls_options(self.pki, cert))
        return result, [e for e in events if e.get("decision")]

    def test_revoked_rejected_good_accepted(self) -> None:
        revoked = self.pki.root.issue_client("revoked")
        config = self.config(crl_pem(self.pki.root, revoked))
        result, events = self.connect(config, revoked)
        self.assertIsNone(result.status)
        self.assertIn("certificate revoked", result.client_error)
        self.assertEqual([e["reason"] for e in events], [Reason.REVOKED.value])
        result, events = self.connect(config, self.pki.client)
        self.assertEqual(result.status, 200)

    def test_missing_crl_for_issuer_closed_and_open(self) -> None:
        """Leaf issued by the intermediate, but only the root published a CRL."""
        cert = self.pki.client_cert("via_intermediate")
        result, events = self.connect(self.config(crl_pem(self.pki.root)), cert)
        self.assertIsNone(result.status)
        self.assertEqual([e["reason"] for e in events], [Reason.CRL_UNAVAILABLE.value])
        result, events = self.connect(self.config(crl_pem(self.pki.root), fail_open=True), cert)
        self.assertEqual(result.status, 200)
        self.assertEqual([e["reason"] for e in events],
                         [None, Reason.REVOCATION_UNKNOWN.value])

    def test_expired_crl_closed_and_open(self) -> None:
        now = utcnow()
        stale = crl_pem(self.pki.root, last_update=now - 10 * DAY, next_update=now - DAY)
        with captured_events("certsrv.config") as config_events:
            result, events = self.connect(self.config(stale), self.pki.client)
        self.assertIsNone(result.status)
        self.assertEqual([e["reason"] for e in events], [Reason.CRL_EXPIRED.value])
        self.assertEqual([e["reason"] for e in config_events], ["crl_expired"])
        result, events = self.connect(self.config(stale, fail_open=True), self.pki.client)
        self.assertEqual(result.status, 200)
        self.assertEqual(events[-1]["reason"], Reason.REVOCATION_UNKNOWN.value)

    def test_expired_crl_still_revokes_listed_certificates(self) -> None:
        now = utcnow()
        revoked = self.pki.root.issue_client("revoked-stale")
        stale = crl_pem(self.pki.root, revoked, last_update=now - 10 * DAY,
                        next_update=now - DAY)
        result, events = self.connect(self.config(stale, fail_open=True), revoked)
        self.assertIsNone(result.status)
        self.assertEqual([e["reason"] for e in events], [Reason.REVOKED.value])

    def test_chain_check_covers_intermediate(self) -> None:
        cert = self.pki.client_cert("via_intermediate")
        root_crl = crl_pem(self.pki.root, self.pki.intermediate.certificate)
        inter_crl = crl_pem(self.pki.intermediate)
        result, _ = self.connect(self.config(root_crl, inter_crl), cert)
        self.assertEqual(result.status, 200, "leaf mode only looks at the leaf's issuer")
        result, events = self.connect(self.config(root_crl, inter_crl, crl_check_chain=True),
                                      cert)
        self.assertIsNone(result.status)
        self.assertEqual([e["reason"] for e in events], [Reason.REVOKED.value])
        self.assertEqual(events[0]["depth"], 1)

    def test_bad_crl_signature_refused(self) -> None:
        forged = CertificateAuthority.load(
            self.pki.root.certificate, self.pki.root.private_key)
        impostor = CertificateAuthority.create("Test Root CA", organization="certsrv")
        object.__setattr__(forged, "private_key", impostor.private_key)
        config = self.config(crl_pem(forged))
        error = self.assertRaises(ConfigurationError, config.load, clock_at_now())
        self.assertIn("signature does not verify", str(error))

    def test_crl_of_unknown_issuer_ignored(self) -> None:
        """An extra CRL from an issuer certsrv does not trust is ignored with a warning
        (PKITS 4.4.7); the trusted CA's own CRL still decides."""
        revoked = self.pki.root.issue_client("revoked-with-extra")
        config = self.config(crl_pem(self.pki.other_root), crl_pem(self.pki.root, revoked))
        with captured_events("certsrv.config") as warnings:
            config.load(clock_at_now())
        self.assertEqual([e["reason"] for e in warnings], ["crl_unknown_issuer"])
        result, events = self.connect(config, revoked)
        self.assertIn("certificate revoked", result.client_error)
        self.assertEqual(self.connect(config, self.pki.client)[0].status, 200)

    def test_crl_of_an_intermediate_the_client_sends(self) -> None:
        """A CRL signed by an intermediate known only from client chains (not given with
        --intermediates) applies to chains whose intermediate signed it."""
        revoked = self.pki.intermediate.issue_client("revoked-by-inter")
        good = self.pki.intermediate.issue_client("good-by-inter")
        paths = [write_pem(self.dir, "inter-crl.pem", crl_pem(self.pki.intermediate, revoked)),
                 write_pem(self.dir, "root-crl.pem", crl_pem(self.pki.root))]
        config = ServerConfig(cert=self.cert, key=self.key, ca=(self.ca,), crls=tuple(paths))
        result, events = self.connect(config, revoked)
        self.assertIn("certificate revoked", result.client_error)
        self.assertEqual(self.connect(config, good)[0].status, 200)
        # Signed by another key under the same name: it does not apply, so the intermediate
        # has no CRL (not: "good" is revoked).
        impostor = CertificateAuthority.create("Test Intermediate CA")
        write_pem(self.dir, "inter-crl.pem", crl_pem(impostor, good))
        result, events = self.connect(config, good)
        self.assertIn("certificate unknown", result.client_error)
        self.assertEqual([e["reason"] for e in events], [Reason.CRL_UNAVAILABLE.value])

    def test_garbage_crl_refused(self) -> None:
        config = self.config(b"-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n")
        self.assertRaises(ConfigurationError, config.load, clock_at_now())


class SighupTests(TestCase):
    """A real twistd process re-reads its CRL on SIGHUP; openssl and curl see the change."""

    timeout = 60

    @defer.inlineCallbacks
    def test_sighup_reloads_crl(self) -> Any:
        from tests._servers import low_port as _free_port

        pki = shared_pki()
        directory = self.mktemp()
        ca = write_pem(directory, "ca.pem", pki.root.certificate_pem())
        crl_path = write_pem(directory, "crl.pem", crl_pem(pki.root))
        victim = pki.root.issue_client("sighup-victim")
        cert = write_pem(directory, "victim.pem", victim.chain_pem())
        key = write_pem(directory, "victim.key", victim.private_key_pem(), 0o600)
        port = _free_port()
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
        argv = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "-n",
                "--pidfile=", "certsrv", "--listen", f"tcp:{port}:interface=127.0.0.1",
                "--cert", write_pem(directory, "server.pem", pki.server.chain_pem()),
                "--key", write_pem(directory, "server.key", pki.server.private_key_pem(), 0o600),
                "--ca", ca, "--crl", crl_path, "--watch-interval", "0"]
        done: defer.Deferred[tuple[bytes, bytes, int]] = defer.Deferred()
        process = reactor.spawnProcess(_Collect(b"", done), argv[0], argv,  # type: ignore[attr-defined]
                                       env=env)

        def stop() -> defer.Deferred[Any]:
            if process.pid is not None:
                process.signalProcess(signal.SIGTERM)
            return done

        self.addCleanup(stop)
        # TLS 1.2: the server's alert arrives inside the handshake, where curl reads it.
        curl = ["curl", "-sS", "-v", "--tls-max", "1.2", "--retry", "20", "--retry-connrefused",
                "--retry-delay", "1", "--max-time", "30", "--cacert", ca, "--cert", cert,
                "--key", key,
                "--resolve", f"localhost:{port}:127.0.0.1", f"https://localhost:{port}/secure"]
        out, err, code = yield run(curl)
        self.assertEqual(code, 0, err)
        write_pem(directory, "crl.pem", crl_pem(pki.root, victim, crl_number=2))
        process.signalProcess(signal.SIGHUP)
        for _ in range(50):
            out, err, code = yield run(curl)
            if code != 0:
                break
        self.assertIn(b"certificate revoked", err)
        server_out, server_err, _ = yield stop()
        log = server_out + server_err
        self.assertIn(b"configuration reloaded (SIGHUP)", log)
        self.assertIn(b"revoked", log)
        self.assertNotIn(b"Traceback", log)
