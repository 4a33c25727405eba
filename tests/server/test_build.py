"""certsrv.server.build: the site behind the gate, serving the default tree or an app."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase
from twisted.web import static

from certsrv.server.build import build_site
from certsrv.testing import clock_at_now
from certsrv.tls.verify import ClientVerifier
from certsrv.web.gate import Gate
from certsrv.web.limits import Limits
from tests._support import client_tls_options, exchange, make_server_factory, shared_pki


class BuildSiteTests(SynchronousTestCase):
    """Every request passes the gate; HTTP/2 is offered only when asked for."""

    def test_gate_and_protocols(self) -> None:
        verifier = ClientVerifier(clock_at_now())
        site = build_site(verifier, http2=False, limits=Limits(max_headers=7))
        self.assertIsInstance(site.resource, Gate)
        self.assertNotIn(b"h2", site.acceptableProtocols())
        self.assertEqual(site.limits.max_headers, 7)
        self.assertIn(b"h2", build_site(verifier).acceptableProtocols())

    def test_app_behind_the_gate(self) -> None:
        pki = shared_pki()
        app = static.Data(b"the app\n", "text/plain")
        app.isLeaf = True
        factory = make_server_factory(pki.settings(), app=app)
        self.assertEqual(exchange(factory, client_tls_options(pki, pki.client)).body,
                         b"the app\n")
        self.assertIsNone(exchange(factory, client_tls_options(pki, None)).status)  # no cert
