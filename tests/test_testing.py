"""``certsrv.testing``: the certificate factory, the in-memory server, the fake OCSP responder,
and the example of docs/testing.rst, run as written."""

from __future__ import annotations

import datetime
import importlib.util
import os
import re
import sys

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID
from twisted.trial import reporter, runner
from twisted.trial.unittest import SynchronousTestCase
from twisted.web import resource, server

from certsrv import identity_of
from certsrv.exceptions import ConfigurationError
from certsrv.revocation.ocsp import CertStatus, build_request, verify_response
from certsrv.testing import (
    CertificateFactory,
    FakeOCSPResponder,
    MemoryServer,
    TestPKI,
)
from tests._support import shared_pki

_DOCS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs")
JSON = [("Accept", "application/json")]


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


class _WhoAmI(resource.Resource):
    """Answers the client's subject, the method and the body it sent."""

    isLeaf = True

    def render(self, request: server.Request) -> bytes:
        identity = identity_of(request)
        assert request.content is not None
        body = request.content.read()
        who = identity.subject if identity is not None else "-"
        request.setHeader(b"x-who", who.encode())
        return f"{request.method.decode()} {who} {len(body)}".encode()


class CertificateFactoryTests(SynchronousTestCase):
    """Validity, key usage, extended key usage and SANs, chosen by keyword."""

    def setUp(self) -> None:
        self.root = shared_pki().root

    def test_validity(self) -> None:
        now = _now()
        expired = self.root.client("old", expired=True).certificate
        self.assertLess(expired.not_valid_after_utc, now)
        future = self.root.client("new", not_yet_valid=True).certificate
        self.assertGreater(future.not_valid_before_utc, now)
        short = self.root.client("short", valid_for=datetime.timedelta(hours=1)).certificate
        self.assertLess(short.not_valid_after_utc, now + datetime.timedelta(hours=2))
        start = now - datetime.timedelta(days=3)
        end = now + datetime.timedelta(days=3)
        window = self.root.client("window", not_before=start, not_after=end).certificate
        self.assertEqual((window.not_valid_before_utc, window.not_valid_after_utc),
                         (start.replace(microsecond=0), end.replace(microsecond=0)))
        with self.assertRaises(ValueError):
            self.root.client("both", expired=True, not_yet_valid=True)

    def test_usages_and_names(self) -> None:
        cert = self.root.client(
            "svc", key_usage={"digital_signature", "key_agreement"},
            extended_key_usage=(ExtendedKeyUsageOID.SERVER_AUTH,), dns=["svc.example"],
            ips=["192.0.2.1"], emails=["svc@example.org"],
            uris=["spiffe://example.org/ns/a/sa/svc"]).certificate
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
        self.assertTrue(usage.digital_signature and usage.key_agreement)
        self.assertFalse(usage.key_encipherment)
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        self.assertEqual(list(eku), [ExtendedKeyUsageOID.SERVER_AUTH])
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        self.assertEqual(san.get_values_for_type(x509.DNSName), ["svc.example"])
        self.assertEqual(san.get_values_for_type(x509.UniformResourceIdentifier),
                         ["spiffe://example.org/ns/a/sa/svc"])
        bare = self.root.client("bare", extended_key_usage=None).certificate
        with self.assertRaises(x509.ExtensionNotFound):
            bare.extensions.get_extension_for_class(x509.ExtendedKeyUsage)
        with self.assertRaises(ValueError):
            self.root.client("typo", key_usage={"digital_signatures"})

    def test_policy_extensions(self) -> None:
        """Certificate policy extensions on intermediates and clients, as RFC 5280 has them."""
        from certsrv.testing import policy_extensions
        from certsrv.x509.policies import policy_mappings

        p1, p2 = "1.3.6.1.4.1.99999.1", "1.3.6.1.4.1.99999.2"
        self.assertEqual(policy_extensions(), [])
        ca = self.root.intermediate("Policy CA", extensions=policy_extensions(
            [p1], mappings=[(p1, p2)], require_explicit=0, inhibit_mapping=1, inhibit_any=2))
        cert = ca.certificate
        policies = cert.extensions.get_extension_for_class(x509.CertificatePolicies).value
        self.assertEqual([p.policy_identifier.dotted_string for p in policies], [p1])
        self.assertEqual(policy_mappings(cert), [(p1, p2)])
        constraints = cert.extensions.get_extension_for_class(x509.PolicyConstraints)
        self.assertEqual((constraints.value.require_explicit_policy,
                          constraints.value.inhibit_policy_mapping, constraints.critical),
                         (0, 1, True))
        inhibit = cert.extensions.get_extension_for_class(x509.InhibitAnyPolicy).value
        self.assertEqual(inhibit.skip_certs, 2)
        leaf = ca.client("p2", extensions=policy_extensions([p2])).certificate
        self.assertEqual(leaf.extensions.get_extension_for_class(
            x509.CertificatePolicies).value[0].policy_identifier.dotted_string, p2)

    def test_server_intermediate_crl(self) -> None:
        server_cert = self.root.server().certificate
        san = server_cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        self.assertEqual(san.get_values_for_type(x509.DNSName), ["localhost"])
        intermediate = self.root.intermediate("Sub CA")
        self.assertIsInstance(intermediate, CertificateFactory)
        leaf = intermediate.client("bob")
        self.assertEqual(leaf.chain, (intermediate.certificate,))
        crl = x509.load_pem_x509_crl(self.root.crl_pem(leaf, 12345))
        self.assertEqual(sorted(r.serial_number for r in crl),
                         sorted([leaf.serial_number, 12345]))
        wrapped = CertificateFactory.wrap(intermediate)
        self.assertEqual(wrapped.certificate, intermediate.certificate)

    def test_pki_kinds(self) -> None:
        pki = shared_pki()
        self.assertIsInstance(pki, TestPKI)
        for kind in TestPKI.KINDS:
            self.assertTrue(pki.client_cert(kind).certificate)
        with self.assertRaises(ValueError):
            pki.client_cert("nonsense")
        files = pki.files(self.mktemp())
        self.assertEqual(files.argv("--x"), ["--cert", files.cert, "--key", files.key,
                                             "--ca", files.ca, "--x"])
        self.assertEqual(os.stat(files.key).st_mode & 0o777, 0o600)


class MemoryServerTests(SynchronousTestCase):
    """A certsrv site in memory, and the client each request chooses."""

    def setUp(self) -> None:
        self.pki = shared_pki()
        self.server = MemoryServer.protecting(_WhoAmI(), self.pki)

    def test_accepted(self) -> None:
        response = self.server.request("POST", "/x", client=self.pki.client, body=b"12345",
                                       headers=[("X-Extra", "1")])
        self.assertEqual((response.status, response.body), (200, b"POST CN=alice 5"))
        self.assertEqual(response.header("x-who"), "CN=alice")
        self.assertIsNone(response.alert)
        self.assertIsNone(response.error)
        self.assertTrue(response.raw.startswith(b"HTTP/1.1 200 "))

    def test_http2(self) -> None:
        response = self.server.request("POST", "/x", client=self.pki.client, http2=True,
                                       body=b"y" * 100_000)
        self.assertEqual((response.status, response.body, response.http_version),
                         (200, b"POST CN=alice 100000", "HTTP/2"))
        self.assertEqual(response.header("x-who"), "CN=alice")

    def test_refusals_carry_the_alert(self) -> None:
        expected = {"expired": "certificate expired", "not_yet_valid": "bad certificate",
                    "unknown_ca": "unknown ca", "server_auth_only": "unsupported certificate",
                    "self_signed": "unknown ca"}
        for kind, alert in expected.items():
            response = self.server.get("/", client=self.pki.client_cert(kind))
            self.assertEqual((response.status, response.alert), (None, alert), kind)
        self.assertEqual(self.server.get("/").alert, "certificate required")
        chained = self.pki.client_cert("via_intermediate")
        self.assertEqual(self.server.get("/", client=chained).status, 200)
        self.assertEqual(self.server.get("/", client=chained, send_chain=False).alert,
                         "unknown ca")

    def test_options_and_the_default_site(self) -> None:
        site = MemoryServer.protecting(None, self.pki, "--client-cert", "optional")
        response = site.get("/secure", headers=JSON)
        self.assertEqual((response.status, response.json()["reason"]), (403, "no_certificate"))
        self.assertIn(b"subject: CN=alice", site.get("/secure", client=self.pki.client).body)
        raw = site.send(b"GET /secure HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
                        client=self.pki.client)
        self.assertEqual(raw.status, 200)
        with self.assertRaises(ConfigurationError):
            MemoryServer.protecting(None, self.pki, "--client-cert", "sometimes")

    def test_time_is_the_servers_clock(self) -> None:
        self.server.clock.advance(400 * 24 * 3600)
        self.assertEqual(self.server.get("/", client=self.pki.client).alert,
                         "certificate expired")


class FakeOCSPResponderTests(SynchronousTestCase):
    """Signed answers per serial, in memory or as a resource."""

    def setUp(self) -> None:
        self.pki = shared_pki()
        self.ocsp = FakeOCSPResponder(self.pki.root)

    def status(self, cert: x509.Certificate) -> CertStatus:
        request = build_request(cert, self.pki.root.certificate, b"n" * 16)
        answer = self.successResultOf(self.ocsp("http://ocsp.example/", request))
        return verify_response(answer, cert, self.pki.root.certificate, now=_now(),
                               nonce=b"n" * 16).status

    def test_statuses(self) -> None:
        good, revoked, unknown = (self.pki.root.client(n) for n in ("g", "r", "u"))
        self.ocsp.revoke(revoked)
        self.ocsp.unknown(unknown)
        self.assertEqual([self.status(c.certificate) for c in (good, revoked, unknown)],
                         [CertStatus.GOOD, CertStatus.REVOKED, CertStatus.UNKNOWN])
        strict = FakeOCSPResponder(self.pki.root, default="unknown", signer=self.ocsp.signer)
        strict.good(good.serial_number)
        self.ocsp = strict
        self.assertEqual(self.status(good.certificate), CertStatus.GOOD)
        self.assertEqual(self.status(revoked.certificate), CertStatus.UNKNOWN)
        self.assertIsInstance(strict.resource(), resource.Resource)

    def test_in_front_of_a_server(self) -> None:
        victim = self.pki.root.client("victim")
        self.ocsp.revoke(victim)
        site = MemoryServer.protecting(_WhoAmI(), self.pki, "--ocsp-responder",
                                       "http://ocsp.example/", ocsp=self.ocsp)
        self.assertEqual(site.get("/", client=self.pki.client).status, 200)
        self.assertEqual(site.get("/", client=victim, headers=JSON).json()["reason"], "revoked")
        self.assertEqual(site.get("/", client=victim).alert, "certificate revoked")
        self.ocsp.down = True
        newcomer = self.pki.root.client("newcomer")
        response = site.get("/", client=newcomer, headers=JSON)
        self.assertEqual((response.status, response.json()["reason"]),
                         (403, "revocation_unknown"))
        self.assertEqual(len(self.ocsp.calls), 3)

    def test_ocsp_off(self) -> None:
        with self.assertRaises(ConfigurationError):
            MemoryServer.protecting(_WhoAmI(), self.pki, "--ocsp", "off", ocsp=self.ocsp)


class DocumentationTests(SynchronousTestCase):
    """docs/testing.rst's example runs as written, and passes."""

    def test_example(self) -> None:
        with open(os.path.join(_DOCS, "testing.rst"), encoding="utf-8") as f:
            text = f.read()
        block = re.search(r"\.\. code-block:: python\n    :name: test_hello\.py\n\n(.*?)\n\S",
                          text, re.S)
        assert block is not None
        code = "\n".join(line[4:] for line in block.group(1).splitlines())
        path = os.path.join(self.mktemp() + "-example", "test_hello.py")
        os.makedirs(os.path.dirname(path))
        with open(path, "w", encoding="utf-8") as f:
            f.write(code)
        spec = importlib.util.spec_from_file_location("certsrv_docs_test_hello", path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        self.addCleanup(sys.modules.pop, "certsrv_docs_test_hello", None)
        sys.modules["certsrv_docs_test_hello"] = module
        spec.loader.exec_module(module)
        suite = runner.TestLoader().loadModule(module)
        result = reporter.TestResult()
        suite.run(result)
        self.assertEqual((result.errors, result.failures), ([], []))
        self.assertEqual(result.successes, suite.countTestCases())
        self.assertGreaterEqual(result.successes, 4)
