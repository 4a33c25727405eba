"""certsrv.forwarded.verify: forwarded chains verified like handshakes, verdicts kept briefly."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from certsrv.exceptions import RejectedCertificate
from certsrv.forwarded.verify import ForwardedVerifier
from certsrv.testing import clock_at_now
from certsrv.tls.context import ServerTLS
from certsrv.tls.verify import ClientVerifier, ConnectionState
from tests._support import shared_pki


class ForwardedVerifierTests(SynchronousTestCase):
    """The verifier's chain check decides; its verdict is cached for ``cache_seconds``."""

    def setUp(self) -> None:
        self.pki = shared_pki()
        self.clock = clock_at_now()
        self.verifier = ClientVerifier(self.clock)
        ServerTLS(self.pki.settings(), self.verifier)  # attaches the TLS settings
        self.forwarded = ForwardedVerifier(self.verifier, cache_size=2, cache_seconds=60)

    def test_accepted_and_cached(self) -> None:
        client = self.pki.client
        first = self.forwarded.verify(client.certificate, client.chain)
        self.assertIsInstance(first, ConnectionState)
        self.assertIs(self.forwarded.verify(client.certificate, client.chain), first)
        self.clock.advance(61)
        self.assertIsNot(self.forwarded.verify(client.certificate, client.chain), first)

    def test_rejected_and_bounded(self) -> None:
        stranger = self.pki.client_cert("unknown_ca")
        self.assertIsInstance(self.forwarded.verify(stranger.certificate, stranger.chain),
                              RejectedCertificate)
        for kind in ("valid", "via_intermediate", "expired"):
            issued = self.pki.client_cert(kind)
            self.forwarded.verify(issued.certificate, issued.chain)
        self.assertLessEqual(len(self.forwarded._cache), 2)
