"""certsrv.web.gate: ``protect`` guards one branch of an open tree; the gate's refusals."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase
from twisted.web import resource, static

import certsrv
from certsrv.pki import IssuedCertificate
from certsrv.tls.context import ServerTLS, TLSFactory
from certsrv.web.site import CertsrvSite
from tests._support import Counting as _Counting
from tests._support import (
    Exchange,
    client_tls_options,
    exchange,
    options,
    request_bytes,
    shared_pki,
)
from tests._support import Files as _Files
from tests._support import reason_of as _reason


class ProtectTests(SynchronousTestCase):
    """``certsrv.protect`` guards one branch of an otherwise open twisted.web tree."""

    def setUp(self) -> None:
        self.pki = shared_pki()
        self.private = _Counting()
        tree = resource.Resource()
        tree.putChild(b"public", static.Data(b"open to all\n", "text/plain"))
        tree.putChild(b"private", certsrv.protect(self.private))
        # The plain tree, served by certsrv's site and TLS layer with no gate of its own
        # in front of it: only protect() stands between a client and self.private.
        parsed = options(_Files(self.mktemp()).argv("--client-cert", "optional"))
        site = CertsrvSite(tree, parsed.verifier, limits=parsed.limits)
        self.factory = TLSFactory(ServerTLS(parsed.settings, parsed.verifier), site)

    def get(self, path: str, cert: IssuedCertificate | None) -> Exchange:
        return exchange(self.factory, client_tls_options(self.pki, cert),
                        request_bytes(path, accept="application/json"))

    def test_open_branch_needs_no_certificate(self) -> None:
        result = self.get("/public", None)
        self.assertEqual((result.status, result.body), (200, b"open to all\n"))

    def test_protected_branch_without_certificate(self) -> None:
        for path in ("/private", "/private/deeper"):
            result = self.get(path, None)
            self.assertEqual((result.status, _reason(result)), (403, "no_certificate"), path)
        self.assertEqual(self.private.reached, 0)

    def test_protected_branch_with_certificate(self) -> None:
        result = self.get("/private/deeper", self.pki.client)
        self.assertEqual(result.status, 200)
        self.assertEqual(result.body, b"private for CN=alice\n")
        self.assertEqual(self.private.reached, 1)

    def test_rejected_certificate_never_connects(self) -> None:
        result = self.get("/private", self.pki.client_cert("unknown_ca"))
        self.assertIsNone(result.status)
        self.assertIn("unknown ca", result.client_error)
        self.assertEqual(self.private.reached, 0)

