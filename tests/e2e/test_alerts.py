"""certsrv's own refusals carry precise TLS alerts (issue 12, item 3), as clients see them.

Against a certsrv built from the plugin's options and listening on 127.0.0.1: ``openssl
s_client`` and ``curl`` (TLS 1.2 and 1.3) see the alert, and ``certsrv-client`` explains it.
In memory, with a controlled clock: validity judged by the server's clock, not OpenSSL's.
"""

from __future__ import annotations

import datetime
import os
import sys
import time
from typing import Any, cast

from cryptography import x509
from twisted.internet import defer, reactor
from twisted.internet.address import IPv4Address
from twisted.internet.ssl import TLSVersion
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.server import Site

from certsrv.client.http import explain
from certsrv.exceptions import Reason
from certsrv.pki import CertificateAuthority, IssuedCertificate, self_signed_client
from certsrv.server import options as _tap
from certsrv.testing import FakeOCSPResponder
from tests._servers import Listener as _Listener
from tests._servers import run
from tests._support import (
    DAY,
    Exchange,
    captured_events,
    client_tls_options,
    crl_pem,
    exchange,
    make_server_factory,
    options,
    pieces,
    shared_pki,
    utcnow,
    write_pem,
)
from tests._support import Files as _Files

# The s_client and curl arguments that pin each TLS version. With TLS 1.3 the client's
# handshake is over before the server judges its certificate: curl then writes its request
# (over HTTP/2, several frames) and reads the alert. The server keeps the connection
# half-open after a refusal (certsrv.tls.context.LINGER) so those writes meet no reset first.
VERSIONS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "1.2": (("-tls1_2",), ("--tlsv1.2", "--tls-max", "1.2")),
    "1.3": (("-tls1_3",), ("--tlsv1.3", "-v")),
}
# In memory: the client's highest version (None: as high as both go, TLS 1.3).
MAX_TLS: dict[str, TLSVersion | None] = {"1.2": TLSVersion.TLSv1_2, "1.3": None}


def _no_digital_signature() -> x509.KeyUsage:
    """keyUsage keyAgreement only: OpenSSL's client purpose allows it, certsrv does not."""
    return x509.KeyUsage(
        digital_signature=False, content_commitment=False, key_encipherment=False,
        data_encipherment=False, key_agreement=True, key_cert_sign=False, crl_sign=False,
        encipher_only=False, decipher_only=False)


class _Certsrv(_Listener):
    """A certsrv built from ``twistd certsrv`` options on 127.0.0.1, and its clients."""

    def setUp(self) -> None:
        super().setUp()
        self.server_files = _Files(self.dir)
        self.env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))

    def certsrv(self, *argv: str) -> int:
        """A server configured with ``argv`` (its default tree, /secure); its port."""
        factory, _ = pieces(_tap.makeService(options(self.server_files.argv(*argv), reactor)))
        return self.listen_on_loopback(factory)

    def listen_on_loopback(self, factory: Any) -> int:
        """Serve ``factory`` on 127.0.0.1 until the test ends; the port."""
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")  # type: ignore[attr-defined]
        self.addCleanup(port.stopListening)
        return cast(IPv4Address, port.getHost()).port

    def crl(self, name: str, *revoked: IssuedCertificate, **kwargs: Any) -> str:
        """A CRL file of the shared root listing ``revoked``."""
        return write_pem(self.dir, name, crl_pem(self.pki.root, *revoked, **kwargs))

    @defer.inlineCallbacks
    def assertRefused(self, port: int, cert: IssuedCertificate, alert: str, reason: Reason
                      ) -> Any:
        """s_client and curl, TLS 1.2 and 1.3: the handshake ends with ``alert`` and no HTTP
        answer, and the server logged ``reason`` for each of the four connections."""
        with captured_events() as events:
            for version, (s_client_args, curl_args) in VERSIONS.items():
                out, err, _ = yield self.s_client(port, cert, *s_client_args)
                text = (out + err).decode(errors="replace")
                self.assertIn(f"alert {alert}", text, f"s_client TLS {version}: {text}")
                self.assertNotIn(b"HTTP/1.1", out, f"s_client TLS {version}: {text}")
                self.assertIn(f"TLSv{version}", text)
                out, err, code = yield self.curl(port, cert, *curl_args)
                text = (out + err).decode(errors="replace")
                self.assertNotEqual(code, 0, f"curl TLS {version}: {text}")
                complaint = [line for line in err.decode(errors="replace").splitlines()
                             if line.startswith("curl: (")]
                self.assertIn(f"alert {alert}", "".join(complaint), f"curl TLS {version}: {text}")
                if version == "1.3":
                    self.assertIn("SSL connection using TLSv1.3", text)
        reasons = [e["reason"] for e in events if e.get("decision") == "rejected"]
        self.assertEqual(reasons, [reason.value] * 4)

    @defer.inlineCallbacks
    def assertStatus(self, port: int, cert: IssuedCertificate, status: int) -> Any:
        """curl gets an HTTP answer with ``status``."""
        out, err, code = yield self.curl(port, cert)
        self.assertEqual((code, out.rsplit(b"\n", 1)[-1]), (0, str(status).encode()),
                         (out + err).decode(errors="replace"))

    @defer.inlineCallbacks
    def certsrv_client(self, port: int, cert: IssuedCertificate) -> Any:
        """Run ``certsrv-client`` presenting ``cert``; (its stderr, its exit status)."""
        path, key = self.files(cert, "certsrv-client")
        out, err, code = yield run(
            [sys.executable, "-m", "certsrv.client.cli", f"https://127.0.0.1:{port}/secure",
             "--cert", path, "--key", key, "--ca", self.ca, "--timeout", "20"], env=self.env)
        self.assertNotIn(b"Traceback", out + err)
        return err.decode(errors="replace"), code


class RefusalAlertTests(_Certsrv):
    """Each refusal of certsrv's own reaches s_client and curl as its own alert."""

    @defer.inlineCallbacks
    def test_no_application_protocol(self) -> Any:
        """RFC 7301 3.2: no ALPN protocol in common is no_application_protocol (not Twisted's
        internal_error); a client offering http/1.0 alone is served, as nginx serves it."""
        port = self.certsrv()
        with captured_events() as events:
            out, err, _ = yield self.s_client(port, self.pki.client, "-alpn", "foo,h3")
        text = (out + err).decode(errors="replace")
        self.assertIn("alert no application protocol", text)
        self.assertNotIn("HTTP/1.1", text)
        rejected = [e for e in events if e.get("decision") == "rejected"]
        self.assertEqual([e["reason"] for e in rejected], ["handshake_failed"])
        self.assertIn("no application protocol in common: the client offered b'foo', b'h3'",
                      rejected[0]["detail"])
        out, err, code = yield self.curl(port, self.pki.client, "--http1.0", "-i")
        self.assertTrue(out.startswith(b"HTTP/1.0 200 OK\r\n"), out + err)
        out, err, code = yield self.curl(port, self.pki.client, "--http1.1", "-i")
        self.assertTrue(out.startswith(b"HTTP/1.1 200 OK\r\n"), out + err)

    @defer.inlineCallbacks
    def test_revoked_by_crl_file(self) -> Any:
        revoked = self.pki.root.issue_client("crl-revoked")
        port = self.certsrv("--crl", self.crl("revoked.crl", revoked))
        yield self.assertRefused(port, revoked, "certificate revoked", Reason.REVOKED)
        yield self.assertStatus(port, self.pki.client, 200)

    @defer.inlineCallbacks
    def test_ca_certificate_as_client(self) -> Any:
        inter = self.pki.intermediate
        ca_cert = IssuedCertificate(inter.certificate, inter.private_key)
        port = self.certsrv()
        yield self.assertRefused(port, ca_cert, "unsupported certificate", Reason.CA_AS_CLIENT)

    @defer.inlineCallbacks
    def test_key_usage_without_digital_signature(self) -> Any:
        cert = self.pki.root.issue_client("no-ds", key_usage=_no_digital_signature())
        port = self.certsrv()
        yield self.assertRefused(port, cert, "unsupported certificate", Reason.BAD_KEY_USAGE)

    @defer.inlineCallbacks
    def test_server_auth_only_eku(self) -> Any:
        port = self.certsrv()
        yield self.assertRefused(port, self.pki.client_cert("server_auth_only"),
                                 "unsupported certificate", Reason.BAD_KEY_USAGE)

    @defer.inlineCallbacks
    def test_self_signed_unpinned_or_not_allowed(self) -> Any:
        cert = self_signed_client("unpinned")
        other = self_signed_client("pinned").fingerprint
        port = self.certsrv("--allowed-types", "all", "--pin", other)
        yield self.assertRefused(port, cert, "unknown ca", Reason.NOT_PINNED)
        port = self.certsrv()
        yield self.assertRefused(port, cert, "unknown ca", Reason.SELF_SIGNED_NOT_ALLOWED)

    @defer.inlineCallbacks
    def test_revocation_unknown_expired_crl(self) -> Any:
        """An expired CRL that does not list the certificate decides nothing: with the default
        --revocation-fail closed the client is refused with certificate_unknown."""
        now = utcnow()
        crl = self.crl("expired.crl", last_update=now - 10 * DAY, next_update=now - DAY)
        port = self.certsrv("--crl", crl)
        yield self.assertRefused(port, self.pki.client, "certificate unknown",
                                 Reason.CRL_EXPIRED)
        port = self.certsrv("--crl", crl, "--revocation-fail", "open")
        yield self.assertStatus(port, self.pki.client, 200)


class OCSPRevokedTests(_Certsrv):
    """An OCSP "revoked": a 403 while the answer is fetched, then refused in the handshake."""

    def responder(self, revoked: IssuedCertificate) -> str:
        """A real OCSP responder for the shared root on 127.0.0.1; its URL."""
        ocsp = FakeOCSPResponder(self.pki.root, clock=reactor, default="unknown")
        ocsp.revoke(revoked, at=utcnow() - DAY)
        ocsp.good(self.pki.client)
        return f"http://127.0.0.1:{self.listen_on_loopback(Site(ocsp.resource()))}/"

    @defer.inlineCallbacks
    def test_revoked_403_then_certificate_revoked(self) -> Any:
        revoked = self.pki.root.issue_client("ocsp-revoked")
        port = self.certsrv("--ocsp-responder", self.responder(revoked))
        yield self.assertStatus(port, self.pki.client, 200)
        out, err, code = yield self.curl(port, revoked, "-H", "Accept: application/json")
        self.assertEqual(out.rsplit(b"\n", 1)[-1], b"403", err)
        self.assertIn(b'"revoked"', out)
        # The answer is cached now: every later connection is refused in the handshake.
        yield self.assertRefused(port, revoked, "certificate revoked", Reason.REVOKED)
        err_text, status = yield self.certsrv_client(port, revoked)
        self.assertEqual(status, 2, err_text)
        self.assertIn("has been revoked", err_text)


class ClientExplanationTests(_Certsrv):
    """``certsrv-client`` exits 2 with a sentence naming the real cause of each alert."""

    @defer.inlineCallbacks
    def check(self, port: int, cert: IssuedCertificate, alert: str, *words: str) -> Any:
        err, status = yield self.certsrv_client(port, cert)
        self.assertEqual(status, 2, err)
        self.assertTrue(err.startswith("certsrv-client: "), err)
        self.assertNotIn("internal error", err)
        for word in (f"({alert})", *words):
            self.assertIn(word, err)

    @defer.inlineCallbacks
    def test_revoked(self) -> Any:
        revoked = self.pki.root.issue_client("crl-revoked")
        port = self.certsrv("--crl", self.crl("revoked.crl", revoked))
        yield self.check(port, revoked, "certificate revoked", "has been revoked")

    @defer.inlineCallbacks
    def test_unsupported_certificate(self) -> Any:
        cert = self.pki.root.issue_client("no-ds", key_usage=_no_digital_signature())
        yield self.check(self.certsrv(), cert, "unsupported certificate", "key usage",
                         "client authentication")

    @defer.inlineCallbacks
    def test_certificate_unknown(self) -> Any:
        now = utcnow()
        crl = self.crl("expired.crl", last_update=now - 10 * DAY, next_update=now - DAY)
        yield self.check(self.certsrv("--crl", crl), self.pki.client, "certificate unknown",
                         "revocation status")


class ServerClockTests(SynchronousTestCase):
    """Validity by the server's injected clock, while OpenSSL's wall clock finds the
    certificate valid: certificate_expired after it, bad_certificate before it."""

    def setUp(self) -> None:
        self.pki = shared_pki()
        now = utcnow()
        # A CA valid long before and after, so only the leaf's validity is in question.
        self.ca = CertificateAuthority.create("Clock Test CA", not_before=now - 30 * DAY)
        self.leaf = self.ca.issue_client("clocked", not_before=now - DAY, not_after=now + DAY)

    def connect(self, offset: datetime.timedelta, version: str) -> tuple[Exchange, list[str]]:
        """One request in memory, the server's clock ``offset`` from the wall clock; the
        exchange and the reasons the server logged for its refusals."""
        clock = Clock()
        clock.advance(time.time() + offset.total_seconds())
        factory = make_server_factory(self.pki.settings(roots=(self.ca.certificate,)),
                                      clock=clock)
        with captured_events() as events:
            result = exchange(factory, client_tls_options(self.pki, self.leaf,
                                                          max_tls=MAX_TLS[version]))
        return result, [e["reason"] for e in events if e.get("decision") == "rejected"]

    def check(self, offset: datetime.timedelta, alert: str, reason: Reason, words: str
              ) -> None:
        for version in MAX_TLS:
            result, reasons = self.connect(offset, version)
            self.assertIsNone(result.status, (version, result.client.received))
            self.assertIn(f"alert {alert}", result.client_error, version)
            self.assertEqual(reasons, [reason.value], version)
            assert result.client.lost is not None
            sentence = explain(result.client.lost, sent_certificate=True).sentence
            self.assertIn(words, sentence, version)
            self.assertIn(f"({alert})", sentence, version)

    def test_valid_by_both_clocks(self) -> None:
        for version in MAX_TLS:
            result, reasons = self.connect(datetime.timedelta(0), version)
            self.assertEqual((result.status, reasons), (200, []), version)

    def test_expired_by_server_clock(self) -> None:
        self.check(2 * DAY, "certificate expired", Reason.EXPIRED, "has expired")

    def test_not_yet_valid_by_server_clock(self) -> None:
        self.check(-2 * DAY, "bad certificate", Reason.NOT_YET_VALID, "not valid yet")


class PolicyAlertTests(_Certsrv):
    """A chain valid under none of the --policy-oid policies (with --require-explicit-policy)
    is refused with certificate_unknown, as OpenSSL's own policy checking would; a chain
    under an accepted policy gets through, with the policy in its identity."""

    P1, P2 = "2.16.840.1.101.3.2.1.48.1", "2.16.840.1.101.3.2.1.48.2"

    @defer.inlineCallbacks
    def test_policy_accepted_and_refused(self) -> Any:
        from certsrv.testing import CertificateFactory, policy_extensions

        ca = CertificateFactory.wrap(self.pki.root).intermediate(
            "Policy CA", extensions=policy_extensions([self.P1, self.P2]))
        accepted = ca.client("p1", extensions=policy_extensions([self.P1]))
        refused = ca.client("p2", extensions=policy_extensions([self.P2]))
        port = self.certsrv("--policy-oid", self.P1, "--require-explicit-policy")
        yield self.assertStatus(port, accepted, 200)
        out, err, code = yield self.curl(port, accepted, "-H", "Accept: application/json")
        self.assertEqual(code, 0, (out + err).decode(errors="replace"))
        self.assertIn(f'"policies": [\n    "{self.P1}"\n  ]'.encode(), out)
        yield self.assertRefused(port, refused, "certificate unknown",
                                 Reason.NO_ACCEPTABLE_POLICY)
