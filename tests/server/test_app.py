"""certsrv.server.app: ``protected_site`` from a ServerConfig (or argv); ConfigurationError."""

from __future__ import annotations

from typing import Any

from cryptography import x509
from twisted.internet import defer
from twisted.trial.unittest import SynchronousTestCase
from twisted.web import resource, static

import certsrv
from certsrv.revocation.decision import Revocation, Scope, Status, Verdict
from certsrv.server.config import ServerConfig
from certsrv.tls.context import ClientCertMode
from certsrv.web.site import Limits
from tests._support import Counting as _Counting
from tests._support import Files as _Files
from tests._support import (
    client_tls_options,
    clock_at_now,
    exchange,
    options,
    request_bytes,
    shared_pki,
)


class ProtectedSiteErrorTests(SynchronousTestCase):
    """``protected_site`` raises the exported ConfigurationError, never SystemExit."""

    def setUp(self) -> None:
        self.files = _Files(self.mktemp())

    def test_missing_file(self) -> None:
        missing = self.files.dir + "/missing.pem"
        argv = ["--cert", missing, "--key", self.files.key, "--ca", self.files.ca]
        with self.assertRaises(certsrv.ConfigurationError) as caught:
            certsrv.protected_site(static.Data(b"x", "text/plain"), argv)
        self.assertEqual(caught.exception.source, missing)
        self.assertIn("does not exist", caught.exception.problem)

    def test_bad_option(self) -> None:
        with self.assertRaises(certsrv.ConfigurationError) as caught:
            certsrv.protected_site(static.Data(b"x", "text/plain"),
                                   self.files.argv("--http2", "yes"))
        self.assertEqual(str(caught.exception),
                         "argv: --http2 must be one of on, off (got 'yes')")


class ProtectedSiteConfigTests(SynchronousTestCase):
    """``protected_site`` from a ``ServerConfig``: the real path; argv is a convenience."""

    def setUp(self) -> None:
        self.pki = shared_pki()
        self.files = _Files(self.mktemp())
        self.app = _Counting()

    def config(self, **values: Any) -> ServerConfig:
        return ServerConfig(cert=self.files.cert, key=self.files.key, ca=(self.files.ca,),
                            **values)

    def test_serves_a_config(self) -> None:
        factory = certsrv.protected_site(self.app, self.config(), limits=Limits(max_headers=5),
                                         clock=clock_at_now())
        self.assertEqual(exchange(factory, client_tls_options(self.pki, self.pki.client),
                                  request_bytes("/")).body, b"private for CN=alice\n")
        self.assertIsNone(exchange(factory, client_tls_options(self.pki, None)).status)
        site = factory.wrappedFactory
        self.assertEqual(site.limits.max_headers, 5)
        self.assertIs(site.current, factory.tls.current, "one configuration in force")

    def test_argv_describes_the_same_config(self) -> None:
        argv = self.files.argv("--client-cert", "optional", "--max-headers", "7")
        parsed = options(argv)
        self.assertEqual(parsed.server_config(), parsed.config)
        self.assertEqual(parsed.config, self.config(client_cert=ClientCertMode.OPTIONAL,
                                                    ocsp=parsed.config.ocsp))
        factory = certsrv.protected_site(self.app, argv, clock=clock_at_now())
        self.assertEqual(factory.wrappedFactory.limits.max_headers, 7)
        self.assertEqual(exchange(factory, client_tls_options(self.pki, None),
                                  request_bytes("/")).status, 403)

    def test_unusable_config(self) -> None:
        with self.assertRaises(certsrv.ConfigurationError) as caught:
            certsrv.protected_site(self.app, self.config(verify_depth=99), clock=clock_at_now())
        self.assertEqual(caught.exception.source, "--verify-depth")


    def test_certificate_optional_where_the_app_says(self) -> None:
        root = resource.Resource()
        root.putChild(b"public", static.Data(b"public\n", "text/plain"))
        root.putChild(b"private", certsrv.protect(self.app))
        factory = certsrv.protected_site(
            root, self.config(client_cert=ClientCertMode.OPTIONAL), clock=clock_at_now(),
            require_certificate=False)
        anonymous = client_tls_options(self.pki, None)
        self.assertEqual(exchange(factory, anonymous, request_bytes("/public")).body,
                         b"public\n")
        self.assertEqual(exchange(factory, anonymous, request_bytes("/private")).status, 403)
        self.assertEqual(exchange(factory, client_tls_options(self.pki, self.pki.client),
                                  request_bytes("/private")).status, 200)

    def test_revocation_sources_given(self) -> None:
        revoked = Revocation([_RevokeEverything()])
        factory = certsrv.protected_site(self.app, self.config(), clock=clock_at_now(),
                                         revocation=revoked)
        result = exchange(factory, client_tls_options(self.pki, self.pki.client),
                          request_bytes("/"))
        self.assertIsNone(result.status)
        self.assertIn("certificate revoked", result.client_error)


class _RevokeEverything:
    """A revocation source that says every client certificate is revoked."""

    mode = Scope.LEAF

    def pair(self, cert: x509.Certificate, issuer: x509.Certificate) -> int:
        return cert.serial_number

    def lookup_until(self, pair: int) -> tuple[Verdict, float]:
        return Verdict(Status.REVOKED, "revoked", "by the test", "", "test"), float("inf")

    def check(self, pair: int) -> defer.Deferred[Verdict]:
        return defer.succeed(self.lookup_until(pair)[0])
