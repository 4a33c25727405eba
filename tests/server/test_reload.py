"""certsrv.server.reload: a CRL replaced on disk takes effect on new connections, no restart."""

from __future__ import annotations

import os

from twisted.trial.unittest import SynchronousTestCase

from certsrv.pki import CertificateAuthority
from certsrv.server.config import ServerConfig
from certsrv.server.metrics import Metrics
from certsrv.server.reload import Reloader
from certsrv.tls.context import ServerTLS
from tests._support import (
    captured_events,
    client_tls_options,
    clock_at_now,
    crl_pem,
    exchange,
    make_server_factory,
    shared_pki,
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

