"""Renewal over EST: when, the request, the answer, the files, and AutoRenewal on a test clock."""

from __future__ import annotations

import base64
import datetime
import os
import shutil
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from certsrv.client.http import http_client, load_client_credentials
from certsrv.client.renew import (
    AutoRenewal,
    RenewalError,
    Renewed,
    accept,
    due,
    new_key_like,
    read_certs_only,
    reenrollment_request,
    renew_at,
    replace_pair,
    simplereenroll_url,
)
from certsrv.exceptions import ConfigurationError
from certsrv.pki import CertificateAuthority
from certsrv.pki.est import STATUS, Enrollment, certs_only
from certsrv.pki.store import PKIStore
from tests._support import captured_events

HOUR = 3600.0


def _csr_of(body: bytes) -> x509.CertificateSigningRequest:
    return x509.load_der_x509_csr(base64.b64decode(b"".join(body.split())))


class TimingTests(SynchronousTestCase):
    """When a certificate is due for renewal."""

    def test_the_last_third_by_default(self) -> None:
        start = datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC)
        issued = CertificateAuthority.create(now=start).issue_client(
            "c", not_before=start, not_after=start + datetime.timedelta(hours=9))
        at = renew_at(issued.certificate)
        self.assertEqual(at, (start + datetime.timedelta(hours=6)).timestamp())
        self.assertFalse(due(issued.certificate, at - 1))
        self.assertTrue(due(issued.certificate, at))
        self.assertEqual(renew_at(issued.certificate, 0.5),
                         (start + datetime.timedelta(hours=4.5)).timestamp())


class RequestTests(SynchronousTestCase):
    """The key and the request sent."""

    def test_new_key_of_the_same_kind(self) -> None:
        p384 = ec.generate_private_key(ec.SECP384R1()).public_key()
        self.assertIsInstance(new_key_like(p384).curve, ec.SECP384R1)  # type: ignore[union-attr]
        rsa3072 = rsa.generate_private_key(public_exponent=65537, key_size=3072).public_key()
        self.assertEqual(new_key_like(rsa3072).key_size, 3072)  # type: ignore[union-attr]
        ed = ed25519.Ed25519PrivateKey.generate().public_key()
        self.assertIsInstance(new_key_like(ed), ed25519.Ed25519PrivateKey)
        self.assertIsInstance(new_key_like(object()).curve, ec.SECP256R1)  # type: ignore[union-attr]

    def test_request_carries_the_subject_and_sans(self) -> None:
        issued = CertificateAuthority.create().issue_client(
            "svc", uris=["spiffe://example.org/svc"], emails=["svc@example.org"])
        key = ec.generate_private_key(ec.SECP256R1())
        csr = _csr_of(reenrollment_request(issued.certificate, key))
        self.assertTrue(csr.is_signature_valid)
        self.assertEqual(csr.subject, issued.certificate.subject)
        self.assertEqual(csr.public_key(), key.public_key())
        self.assertEqual(
            csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value,
            issued.certificate.extensions.get_extension_for_class(
                x509.SubjectAlternativeName).value)

    def test_url(self) -> None:
        expected = "https://127.0.0.1:8443/.well-known/est/simplereenroll"
        for url in ("https://127.0.0.1:8443", "https://127.0.0.1:8443/", expected):
            self.assertEqual(simplereenroll_url(url), expected)
        for url in ("http://127.0.0.1:8443", "127.0.0.1:8443"):
            self.assertRaises(ValueError, simplereenroll_url, url)


class AnswerTests(SynchronousTestCase):
    """What the client accepts from the EST server."""

    def setUp(self) -> None:
        self.ca = CertificateAuthority.create()
        self.current = self.ca.issue_client("alice").certificate
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.now = datetime.datetime.now(datetime.UTC).timestamp()

    def test_the_certificate_for_the_new_key(self) -> None:
        new = self.ca.certify(self.current, self.key.public_key())
        renewed = accept(self.current, self.key, read_certs_only(certs_only([new])),
                         self.now, [self.ca.certificate])
        self.assertEqual(renewed.certificate, new)
        self.assertNotIn("PRIVATE", repr(renewed))

    def test_refused_answers(self) -> None:
        for body in (b"", b"not base64!", base64.b64encode(b"\x30\x00")):
            self.assertRaises(RenewalError, read_certs_only, body)
        other_key = self.ca.certify(self.current, ec.generate_private_key(
            ec.SECP256R1()).public_key())
        other_subject = self.ca.issue_client("mallory", private_key=self.key).certificate
        other_issuer = CertificateAuthority.create("Other").certify(self.current,
                                                                    self.key.public_key())
        for certificate in (other_key, other_subject, other_issuer):
            self.assertRaises(RenewalError, accept, self.current, self.key, [certificate],
                              self.now)

    def test_signed_by_another_key_with_the_issuer_name(self) -> None:
        # A hostile EST server's CA named like the real one: the names all match.
        rogue = CertificateAuthority.create("certsrv development CA")
        self.assertEqual(rogue.certificate.subject, self.ca.certificate.subject)
        forged = rogue.certify(self.current, self.key.public_key())
        with self.assertRaises(RenewalError) as caught:
            accept(self.current, self.key, [forged], self.now, [self.ca.certificate])
        self.assertIn("signature", str(caught.exception))
        # A rogue issuer certificate sent along is no issuer of the current certificate.
        self.assertRaises(RenewalError, accept, self.current, self.key,
                          [forged, rogue.certificate], self.now, [self.ca.certificate])

    def test_expired_or_not_yet_valid(self) -> None:
        day = datetime.timedelta(days=1)
        start = datetime.datetime.fromtimestamp(self.now, datetime.UTC)
        for now, message in ((start - 2 * day, "expired"), (start + 2 * day, "not valid before")):
            new = self.ca.certify(self.current, self.key.public_key(), now=now, validity=day)
            with self.assertRaises(RenewalError) as caught:
                accept(self.current, self.key, [new], self.now, [self.ca.certificate])
            self.assertIn(message, str(caught.exception))


class HostileAnswerTests(SynchronousTestCase):
    """Whatever the EST server sends, certificates or RenewalError, never another exception."""

    @settings(max_examples=300, deadline=None)
    @given(st.binary(max_size=4096))
    def test_arbitrary_answers(self, body: bytes) -> None:
        for candidate in (body, base64.b64encode(body)):
            try:
                certificates = read_certs_only(candidate)
            except RenewalError:
                continue
            self.assertTrue(certificates)

    @settings(max_examples=300, deadline=None)
    @given(st.binary(min_size=1, max_size=16), st.integers(0, 600))
    def test_damaged_answers(self, junk: bytes, where: int) -> None:
        ca = _shared_ca()
        der = base64.b64decode(certs_only([ca.certificate]))
        where %= len(der)
        damaged = der[:where] + junk + der[where + len(junk):]
        try:
            read_certs_only(base64.b64encode(damaged))
        except RenewalError:
            pass


_CA: list[CertificateAuthority] = []


def _shared_ca() -> CertificateAuthority:
    if not _CA:
        _CA.append(CertificateAuthority.create())
    return _CA[0]


class FilesTests(SynchronousTestCase):
    """Replacing the certificate and key files."""

    def setUp(self) -> None:
        self.directory = Path(tempfile.mkdtemp())
        self.addCleanup(shutil.rmtree, self.directory)
        ca = CertificateAuthority.create()
        current = ca.issue_client("alice")
        current.write(self.directory / "c.pem", self.directory / "c.key")
        key = ec.generate_private_key(ec.SECP256R1())
        self.renewed = Renewed(ca.certify(current.certificate, key.public_key()), (), key)

    def test_two_files(self) -> None:
        replace_pair(self.renewed, self.directory / "c.pem", self.directory / "c.key")
        credentials = load_client_credentials(self.directory / "c.pem", self.directory / "c.key")
        self.assertEqual(credentials.certificate, self.renewed.certificate)
        self.assertEqual(stat.S_IMODE(os.stat(self.directory / "c.key").st_mode), 0o600)
        self.assertEqual(stat.S_IMODE(os.stat(self.directory / "c.pem").st_mode), 0o644)
        self.assertEqual(sorted(p.name for p in self.directory.iterdir()), ["c.key", "c.pem"])

    def test_one_combined_file(self) -> None:
        replace_pair(self.renewed, self.directory / "both.pem")
        credentials = load_client_credentials(self.directory / "both.pem")
        self.assertEqual(credentials.certificate, self.renewed.certificate)
        self.assertEqual(stat.S_IMODE(os.stat(self.directory / "both.pem").st_mode), 0o600)

    def test_a_failed_write_leaves_the_old_pair(self) -> None:
        before = (self.directory / "c.pem").read_bytes(), (self.directory / "c.key").read_bytes()
        self.assertRaises(OSError, replace_pair, self.renewed, self.directory / "c.pem",
                          self.directory / "missing" / "c.key")
        after = (self.directory / "c.pem").read_bytes(), (self.directory / "c.key").read_bytes()
        self.assertEqual(before, after)
        self.assertEqual(sorted(p.name for p in self.directory.iterdir()), ["c.key", "c.pem"])


class AutoRenewalTests(SynchronousTestCase):
    """AutoRenewal against the dev PKI's Enrollment, in memory, on a test clock."""

    def setUp(self) -> None:
        self.directory = Path(tempfile.mkdtemp())
        self.addCleanup(shutil.rmtree, self.directory)
        self.clock = Clock()
        self.clock.advance(datetime.datetime.now(datetime.UTC).timestamp())
        store = PKIStore.init(self.directory / "pki")
        self.ca = store.ca.certificate
        self.cert_path, self.key_path = self.directory / "c.pem", self.directory / "c.key"
        shutil.copy(self.directory / "pki" / "client.pem", self.cert_path)
        shutil.copy(self.directory / "pki" / "client.key", self.key_path)
        self.enrollment = Enrollment(store, self.clock, validity=datetime.timedelta(hours=9))
        self.in_use = load_client_credentials(self.cert_path, self.key_path).certificate
        self.answers: list[tuple[int, bytes | None, bytes]] = []
        self.posted = 0
        self.renewal = AutoRenewal(current=lambda: self.in_use, post=self.post,
                                   adopt=self.adopt, cert_path=self.cert_path,
                                   key_path=self.key_path, clock=self.clock)

    async def post(self, body: bytes) -> tuple[int, bytes | None, bytes]:
        self.posted += 1
        return self.answer(body)

    def answer(self, body: bytes) -> tuple[int, bytes | None, bytes]:
        if self.answers:
            return self.answers.pop(0)
        answer = self.successResultOf(
            self.enrollment.reenroll(self.in_use, b"application/pkcs10", body))
        if answer.certificate is None:
            assert answer.refusal is not None
            return STATUS[answer.refusal], None, answer.refusal.value.encode()
        return 200, None, certs_only([answer.certificate])

    def adopt(self, renewed: Renewed) -> None:
        self.in_use = renewed.certificate

    def test_not_before_it_is_due(self) -> None:
        self.clock.advance(renew_at(self.in_use) - self.clock.seconds() - 1)
        self.renewal.poke()
        self.assertEqual(self.posted, 0)

    def test_renews_when_due_and_replaces_the_files(self) -> None:
        first = self.in_use
        self.clock.advance(renew_at(first) - self.clock.seconds())
        with captured_events("certsrv.client") as events:
            self.renewal.poke()
        self.assertEqual((self.posted, self.renewal.renewals), (1, 1))
        self.assertNotEqual(self.in_use, first)
        on_disk = load_client_credentials(self.cert_path, self.key_path)
        self.assertEqual(on_disk.certificate, self.in_use)
        self.assertEqual([e["reason"] for e in events], ["renewed"])
        self.assertEqual(int(events[0]["serial"], 16), self.in_use.serial_number)
        self.assertEqual(len(events[0]["serial"]) % 2, 0, "as certsrv-pki list shows it")
        self.assertEqual(events[0]["not_after"], self.in_use.not_valid_after_utc.isoformat())
        # The successor is valid 9 hours (the server's choice): not due again for 6.
        self.renewal.poke()
        self.assertEqual(self.posted, 1)
        self.clock.advance(6 * HOUR)
        self.renewal.poke()
        self.assertEqual(self.renewal.renewals, 2)

    def test_a_refusal_waits_for_retry_after(self) -> None:
        self.answers.append((429, b"120", b"too_many_renewals"))
        self.clock.advance(renew_at(self.in_use) - self.clock.seconds())
        failed = self.failureResultOf(self.renewal.renew(), RenewalError)
        self.assertIn("429", str(failed.value))
        self.assertEqual(self.renewal.failures, 1)
        self.clock.advance(119)
        self.renewal.poke()
        self.assertEqual(self.posted, 1)
        self.clock.advance(1)
        self.renewal.poke()
        self.assertEqual((self.posted, self.renewal.renewals), (2, 1))

    def test_a_forged_answer_leaves_the_files(self) -> None:
        rogue = CertificateAuthority.create("certsrv development CA")
        before = self.cert_path.read_bytes(), self.key_path.read_bytes()

        async def hostile(body: bytes) -> tuple[int, bytes | None, bytes]:
            key = _csr_of(body).public_key()
            return 200, None, certs_only([rogue.certify(self.in_use, key)])  # type: ignore[arg-type]

        renewal = AutoRenewal(current=lambda: self.in_use, post=hostile, adopt=self.adopt,
                              cert_path=self.cert_path, key_path=self.key_path,
                              clock=self.clock, issuers=[self.ca])
        self.failureResultOf(renewal.renew(), RenewalError)
        self.assertEqual((self.cert_path.read_bytes(), self.key_path.read_bytes()), before)

    def test_renewals_under_way_are_joined(self) -> None:
        waiting: defer.Deferred[tuple[int, bytes | None, bytes]] = defer.Deferred()

        async def slow(body: bytes) -> tuple[int, bytes | None, bytes]:
            self.posted += 1
            await waiting
            return self.answer(body)

        self.renewal._post = slow
        first, second = self.renewal.renew(), self.renewal.renew()
        self.clock.advance(renew_at(self.in_use) - self.clock.seconds())
        self.renewal.poke()
        self.assertEqual(self.posted, 1)
        waiting.callback((0, None, b""))
        self.assertEqual(self.successResultOf(first), self.successResultOf(second))

    def test_keeps_the_chain_and_writes_through_the_offload(self) -> None:
        intermediate = CertificateAuthority.create("Some intermediate").certificate
        writes: list[object] = []

        async def offload(work: Callable[[], None]) -> None:
            writes.append(work)
            work()

        renewal = AutoRenewal(current=lambda: self.in_use, post=self.post, adopt=self.adopt,
                              cert_path=self.cert_path, key_path=self.key_path,
                              clock=self.clock, chain=lambda: (intermediate,), offload=offload)
        renewed = self.successResultOf(renewal.renew())
        self.assertEqual(renewed.chain, (intermediate,))
        self.assertEqual(len(writes), 1)
        on_disk = load_client_credentials(self.cert_path, self.key_path)
        self.assertEqual(on_disk.chain, (intermediate,))

    def test_bad_fraction(self) -> None:
        for fraction in (0.0, 1.0, -1.0):
            self.assertRaises(ValueError, AutoRenewal, current=lambda: self.in_use,
                              post=self.post, adopt=self.adopt, cert_path=self.cert_path,
                              key_path=None, clock=self.clock, fraction=fraction)


class HTTPClientTests(SynchronousTestCase):
    """``http_client(renew_url=...)``."""

    def test_needs_files(self) -> None:
        issued = CertificateAuthority.create().issue_client("alice")
        pem = issued.chain_pem() + issued.private_key_pem()
        self.assertRaises(ConfigurationError, http_client, Clock(), cert=pem, key=None,
                          ca=None, renew_url="https://127.0.0.1:8443")

    def test_refused_for_encrypted_keys_and_pkcs12(self) -> None:
        """Renewal writes a plain PEM key: never in place of an encrypted key or a PKCS#12."""
        directory = Path(tempfile.mkdtemp())
        self.addCleanup(shutil.rmtree, directory)
        issued = CertificateAuthority.create().issue_client("alice")
        key = issued.private_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret passphrase"))
        (directory / "c.pem").write_bytes(issued.chain_pem())
        (directory / "c.key").write_bytes(key)
        (directory / "c.p12").write_bytes(pkcs12.serialize_key_and_certificates(
            b"alice", issued.private_key, issued.certificate, None,  # type: ignore[arg-type]
            serialization.NoEncryption()))
        for cert, key_path, passphrase in ((directory / "c.pem", directory / "c.key",
                                            b"secret passphrase"),
                                           (directory / "c.p12", None, None)):
            error = self.assertRaises(ConfigurationError, http_client, Clock(), cert=cert,
                                      key=key_path, ca=None, passphrase=passphrase,
                                      renew_url="https://127.0.0.1:8443")
            self.assertIn("automatic renewal writes the new key as plain PEM", str(error))
        self.assertEqual((directory / "c.key").read_bytes(), key, "nothing written")

    def test_no_renewal_without_a_url(self) -> None:
        directory = Path(tempfile.mkdtemp())
        self.addCleanup(shutil.rmtree, directory)
        CertificateAuthority.create().issue_client("alice").write(directory / "c.pem",
                                                                  directory / "c.key")
        client = http_client(Clock(), cert=directory / "c.pem", key=directory / "c.key",
                             ca=None)
        self.assertIsNone(client.renewal)  # type: ignore[attr-defined]

