"""certsrv.tls.context: the configuration in force, held once."""

from __future__ import annotations

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

