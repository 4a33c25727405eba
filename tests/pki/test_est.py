"""EST re-enrollment: each refusal with its status, and the same through TLS in memory."""

from __future__ import annotations

import base64
import datetime
import shutil
import tempfile
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs7
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import defer
from twisted.trial.unittest import SynchronousTestCase

from certsrv.exceptions import EnrollmentReason
from certsrv.pki import CertificateAuthority, IssuedCertificate
from certsrv.pki.est import (
    DEFAULT_MAX_RENEWALS,
    MAX_CSR_BYTES,
    RENEWAL_WINDOW,
    STATUS,
    Answer,
    Enrollment,
)
from certsrv.pki.index import EntryStatus
from certsrv.pki.service import make_est_factory
from certsrv.pki.store import PKIStore
from certsrv.testing import client_tls_options
from tests._support import Exchange, captured_events, clock_at_now, exchange, mutate

_PATH = "/.well-known/est/simplereenroll"


def csr(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey, subject: x509.Name,
        sans: list[x509.GeneralName] | None = None) -> bytes:
    """A base64 DER PKCS#10 request for ``key``."""
    builder = x509.CertificateSigningRequestBuilder().subject_name(subject)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), False)
    der = builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)
    return base64.encodebytes(der)


def certificates_in(body: bytes) -> list[x509.Certificate]:
    """The certificates of a base64 PKCS#7 certs-only body."""
    return pkcs7.load_der_pkcs7_certificates(base64.b64decode(b"".join(body.split())))


def post(path: str, body: bytes, content_type: str = "application/pkcs10") -> bytes:
    """An HTTP/1.1 POST that closes the connection after its response."""
    head = (f"POST {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
            f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n")
    return head.encode() + body


class EnrollmentCase(SynchronousTestCase):
    """A fresh PKI directory, its client certificate and an Enrollment on a test clock."""

    def setUp(self) -> None:
        self.directory = Path(tempfile.mkdtemp())
        self.addCleanup(shutil.rmtree, self.directory)
        self.clock = clock_at_now()
        self.store = PKIStore.init(self.directory / "pki", now=self.now())
        self.enrollment = Enrollment(self.store, self.clock)
        self.client = self.issued("client")

    def now(self) -> datetime.datetime:
        return datetime.datetime.fromtimestamp(self.clock.seconds(), datetime.UTC)

    def issued(self, name: str) -> IssuedCertificate:
        """The certificate and key of ``name`` as the store wrote them."""
        stem = self.store.path / self.store.find(name).path.removesuffix(".pem")
        certificate = x509.load_pem_x509_certificate((stem.with_suffix(".pem")).read_bytes())
        key = serialization.load_pem_private_key((stem.with_suffix(".key")).read_bytes(), None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        return IssuedCertificate(certificate, key)

    def reenroll(self, body: bytes, current: x509.Certificate | None = None,
                 content_type: bytes | None = b"application/pkcs10") -> Answer:
        return self.successResultOf(
            self.enrollment.reenroll(current or self.client.certificate, content_type, body))

    def new_csr(self, subject: x509.Name | None = None) -> bytes:
        return csr(ec.generate_private_key(ec.SECP256R1()),
                   subject or self.client.certificate.subject)

    def assertRefused(self, answer: Answer, refusal: EnrollmentReason, status: int) -> None:
        self.assertIsNone(answer.certificate)
        self.assertIs(answer.refusal, refusal)
        self.assertEqual(STATUS[refusal], status)


class ReenrollTests(EnrollmentCase):
    """What a re-enrollment issues, and everything it refuses."""

    def test_issues_the_same_names_for_the_new_key(self) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        with captured_events("certsrv.est") as events:
            answer = self.reenroll(csr(key, self.client.certificate.subject))
        new = answer.certificate
        assert new is not None
        old = self.client.certificate
        self.assertEqual(new.subject, old.subject)
        self.assertEqual(new.public_key().public_numbers(), key.public_key().public_numbers())
        self.assertNotEqual(new.serial_number, old.serial_number)
        self.assertEqual(new.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value,
                         old.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
        new.verify_directly_issued_by(self.store.ca.certificate)
        # The lifetime of the certificate renewed, counted from now.
        lifetime = old.not_valid_after_utc - old.not_valid_before_utc
        self.assertEqual(new.not_valid_after_utc - new.not_valid_before_utc, lifetime)
        entry = self.store.find("client")
        self.assertEqual((entry.serial, entry.status, entry.key_path),
                         (new.serial_number, EntryStatus.VALID, None))
        self.assertEqual(self.store.entry_of(old.serial_number).status,  # type: ignore[union-attr]
                         EntryStatus.SUPERSEDED)
        self.assertEqual(x509.load_pem_x509_certificate(
            (self.store.path / entry.path).read_bytes()), new)
        self.assertFalse((self.store.path / "client.key").exists(), "the old key stays behind")
        self.assertEqual([e["reason"] for e in events], ["reenrolled"])
        self.assertEqual(events[0]["new"], entry.serial_hex)

    def test_keeps_the_subject_alternative_names(self) -> None:
        self.store.issue_client("svc", uris=["spiffe://example.org/svc"],
                                emails=["svc@example.org"], now=self.now())
        svc = self.issued("svc")
        sans = list(svc.certificate.extensions.get_extension_for_class(
            x509.SubjectAlternativeName).value)
        answer = self.reenroll(csr(ec.generate_private_key(ec.SECP256R1()),
                                   svc.certificate.subject, sans), svc.certificate)
        assert answer.certificate is not None
        self.assertEqual(set(answer.certificate.extensions.get_extension_for_class(
            x509.SubjectAlternativeName).value), set(sans))

    def test_validity_option_and_short_lived(self) -> None:
        enrollment = Enrollment(self.store, self.clock, validity=datetime.timedelta(hours=8))
        answer = self.successResultOf(enrollment.reenroll(
            self.client.certificate, b"application/pkcs10", self.new_csr()))
        assert answer.certificate is not None
        end = answer.certificate.not_valid_after_utc
        self.assertEqual(end, self.now().replace(microsecond=0) + datetime.timedelta(hours=8))

    def test_lifetime_is_never_rounded_up(self) -> None:
        entry = self.store.issue_client("brief", validity=datetime.timedelta(hours=36),
                                        now=self.now())
        current = x509.load_pem_x509_certificate((self.store.path / entry.path).read_bytes())
        for _ in range(2):
            new = self.reenroll(self.new_csr(current.subject), current).certificate
            assert new is not None
            self.assertEqual(new.not_valid_after_utc,
                             self.now().replace(microsecond=0) + datetime.timedelta(hours=36))
            current = new

    def test_renewed_twice_from_the_successor(self) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        first = self.reenroll(csr(key, self.client.certificate.subject)).certificate
        assert first is not None
        second = self.reenroll(self.new_csr(), first).certificate
        assert second is not None
        self.assertEqual(self.store.find("client").serial, second.serial_number)

    def test_wrong_content_type(self) -> None:
        for content_type in (b"application/x-www-form-urlencoded", None, b"text/plain"):
            self.assertRefused(self.reenroll(self.new_csr(), content_type=content_type),
                               EnrollmentReason.WRONG_CONTENT_TYPE, 415)
        answer = self.reenroll(self.new_csr(), content_type=b"Application/PKCS10; x=1")
        self.assertIsNotNone(answer.certificate, "parameters and case do not matter")

    def test_body_too_large(self) -> None:
        self.assertRefused(self.reenroll(b"A" * (MAX_CSR_BYTES + 1)),
                           EnrollmentReason.BODY_TOO_LARGE, 413)

    def test_not_base64_or_not_a_csr(self) -> None:
        for body in (b"not base64!", base64.b64encode(b"\x30\x03\x02\x01\x01"), b"",
                     base64.b64encode(self.client.certificate.public_bytes(
                         serialization.Encoding.DER))):
            self.assertRefused(self.reenroll(body), EnrollmentReason.BAD_CSR, 400)

    def test_bad_signature(self) -> None:
        der = bytearray(base64.b64decode(self.new_csr()))
        der[-1] ^= 0x01
        self.assertRefused(self.reenroll(base64.b64encode(bytes(der))),
                           EnrollmentReason.BAD_CSR_SIGNATURE, 400)

    def test_subject_differs(self) -> None:
        other = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "admin")])
        self.assertRefused(self.reenroll(self.new_csr(other)), EnrollmentReason.SUBJECT_MISMATCH,
                           400)
        self.assertEqual(self.store.find("client").serial, self.client.certificate.serial_number)

    def test_sans_differ(self) -> None:
        body = csr(ec.generate_private_key(ec.SECP256R1()), self.client.certificate.subject,
                   [x509.DNSName("admin.example.org")])
        self.assertRefused(self.reenroll(body), EnrollmentReason.SAN_MISMATCH, 400)

    def test_current_key_reused(self) -> None:
        body = csr(self.client.private_key, self.client.certificate.subject)  # type: ignore[arg-type]
        self.assertRefused(self.reenroll(body), EnrollmentReason.KEY_REUSED, 400)

    def test_key_of_another_certificate_reused(self) -> None:
        server = self.issued("server")
        body = csr(server.private_key, self.client.certificate.subject)  # type: ignore[arg-type]
        self.assertRefused(self.reenroll(body), EnrollmentReason.KEY_REUSED, 400)

    def test_one_new_key_is_certified_once(self) -> None:
        """The same new key twice (e.g. two requests racing): decided under the PKI lock."""
        key = ec.generate_private_key(ec.SECP256R1())
        first = self.reenroll(csr(key, self.client.certificate.subject)).certificate
        assert first is not None
        # The original asks again (its answer "lost"), with the key its successor holds.
        answer = self.reenroll(csr(key, self.client.certificate.subject))
        self.assertRefused(answer, EnrollmentReason.KEY_REUSED, 400)
        self.assertIn(f"{first.serial_number:X}", answer.detail.upper())

    def test_weak_key(self) -> None:
        weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
        self.assertRefused(self.reenroll(csr(weak, self.client.certificate.subject)),
                           EnrollmentReason.UNSUPPORTED_KEY, 400)

    def test_certificate_not_in_the_index(self) -> None:
        stray = self.store.ca.issue_client("client")
        answer = self.reenroll(self.new_csr(), stray.certificate)
        self.assertRefused(answer, EnrollmentReason.UNKNOWN_CERTIFICATE, 403)

    def test_superseded_by_a_renewal_in_the_pki(self) -> None:
        self.store.renew("client", now=self.now())
        key_file = self.store.path / "client.key"
        before = key_file.read_bytes()
        self.assertRefused(self.reenroll(self.new_csr()), EnrollmentReason.SUPERSEDED, 403)
        self.assertEqual(key_file.read_bytes(), before, "the PKI's files stay as they were")

    def test_renewal_in_the_pki_while_the_request_is_checked(self) -> None:
        # `certsrv-pki renew` between the checks and the issuing: decided under the PKI lock.
        renewed: list[int] = []
        entry_of = PKIStore.entry_of

        def renew_meanwhile(store: PKIStore, serial: int) -> object:
            renewed.append(PKIStore.open(store.path).renew("client", now=self.now()).serial)
            return entry_of(store, serial)

        self.patch(PKIStore, "entry_of", renew_meanwhile)
        self.assertRefused(self.reenroll(self.new_csr()), EnrollmentReason.SUPERSEDED, 403)
        self.assertTrue((self.store.path / "client.key").exists(), "the renewal's key stays")
        self.assertEqual(self.store.find("client").serial, renewed[0])
        self.assertEqual(self.store.find("client").status, EntryStatus.VALID)

    def test_superseded_over_est_may_ask_again(self) -> None:
        lost = self.reenroll(self.new_csr()).certificate
        assert lost is not None
        again = self.reenroll(self.new_csr()).certificate
        self.assertIsNotNone(again, "the answer was lost")
        # One valid successor, never two: the one whose answer was lost is revoked.
        replaced = self.store.entry_of(lost.serial_number)
        assert replaced is not None
        self.assertEqual((replaced.status, replaced.revocation_reason),
                         (EntryStatus.REVOKED, x509.ReasonFlags.superseded))
        crl = x509.load_pem_x509_crl((self.store.path / "crl.pem").read_bytes())
        self.assertIsNotNone(crl.get_revoked_certificate_by_serial_number(lost.serial_number))
        self.assertIsNotNone(self.reenroll(self.new_csr()).certificate, "lost twice")

    def test_superseded_by_a_successor_in_use_refused(self) -> None:
        received = self.reenroll(self.new_csr()).certificate
        assert received is not None
        newest = self.reenroll(self.new_csr(), received).certificate  # it was received
        assert newest is not None
        answer = self.reenroll(self.new_csr())  # the original again: a fork
        self.assertRefused(answer, EnrollmentReason.SUPERSEDED, 403)
        self.assertEqual(self.store.find("client").serial, newest.serial_number)
        self.assertEqual(self.store.find("client").status, EntryStatus.VALID)

    def test_revoked_certificate_refused_while_the_gate_still_admits_it(self) -> None:
        # The gate's copy of the index may be a second old: the issuing step reads it anew.
        self.store.revoke("client", "keyCompromise", now=self.now())
        answer = self.reenroll(self.new_csr())
        self.assertRefused(answer, EnrollmentReason.REVOKED, 403)
        self.assertEqual(self.store.find("client").serial, self.client.certificate.serial_number)

    def test_predecessor_of_a_revoked_certificate_refused(self) -> None:
        first = self.reenroll(self.new_csr()).certificate
        assert first is not None
        self.store.revoke(first.serial_number, "keyCompromise", now=self.now())  # ``first`` only
        answer = self.reenroll(self.new_csr())  # the superseded, unexpired original
        self.assertRefused(answer, EnrollmentReason.REVOKED, 403)
        self.assertIn(f"{first.serial_number:X}", answer.detail.upper())
        self.assertEqual(self.store.find("client").serial, first.serial_number)
        self.assertRefused(self.reenroll(self.new_csr(), first), EnrollmentReason.REVOKED, 403)

    def test_revoking_the_name_revokes_the_superseded_original(self) -> None:
        """``revoke NAME``: a renewal's predecessor, still unexpired, is revoked with it."""
        first = self.reenroll(self.new_csr()).certificate
        assert first is not None
        self.store.revoke("client", "cessationOfOperation", now=self.now())
        for serial in (self.client.certificate.serial_number, first.serial_number):
            self.assertEqual(self.store.find(serial).status, EntryStatus.REVOKED)

    def test_too_many_renewals_per_hour(self) -> None:
        for _ in range(DEFAULT_MAX_RENEWALS):
            self.assertIsNotNone(self.reenroll(self.new_csr()).certificate)
            self.clock.advance(60)
        answer = self.reenroll(self.new_csr())
        self.assertRefused(answer, EnrollmentReason.TOO_MANY_RENEWALS, 429)
        expected = RENEWAL_WINDOW - 60 * DEFAULT_MAX_RENEWALS
        self.assertEqual(answer.retry_after, expected)
        self.clock.advance(expected)
        self.assertIsNotNone(self.reenroll(self.new_csr()).certificate)

    def test_renewing_the_renewals_counts_against_the_same_limit(self) -> None:
        current = self.client.certificate
        for _ in range(DEFAULT_MAX_RENEWALS):
            new = self.reenroll(self.new_csr(), current).certificate
            assert new is not None
            current = new
        self.assertRefused(self.reenroll(self.new_csr(), current),
                           EnrollmentReason.TOO_MANY_RENEWALS, 429)
        self.assertEqual(self.store.find("client").serial, current.serial_number)
        other = self.store.issue_client("alice", now=self.now())
        alice = x509.load_pem_x509_certificate((self.store.path / other.path).read_bytes())
        self.assertIsNotNone(self.reenroll(self.new_csr(alice.subject), alice).certificate,
                             "another name has a count of its own")

    def test_refusals_do_not_count_against_the_limit(self) -> None:
        server_key = self.issued("server").private_key
        for _ in range(DEFAULT_MAX_RENEWALS + 2):
            self.reenroll(b"junk")
            # Refused after the index was read: its place in the count is given back.
            self.reenroll(csr(server_key, self.client.certificate.subject))  # type: ignore[arg-type]
        self.assertIsNotNone(self.reenroll(self.new_csr()).certificate)

    def test_issuing_waits_for_the_offload(self) -> None:
        pending: list[tuple[defer.Deferred[object], object]] = []

        def later(work: object) -> defer.Deferred[object]:
            waiting: defer.Deferred[object] = defer.Deferred()
            pending.append((waiting, work))
            return waiting

        enrollment = Enrollment(self.store, self.clock, offload=later)
        answering = enrollment.reenroll(self.client.certificate, b"application/pkcs10",
                                        self.new_csr())
        self.assertNoResult(answering)
        self.assertEqual(self.store.find("client").serial, self.client.certificate.serial_number)
        waiting, work = pending.pop()
        waiting.callback(work())  # type: ignore[operator]
        self.assertIsNotNone(self.successResultOf(answering).certificate)

    def test_cacerts(self) -> None:
        self.assertEqual(certificates_in(self.enrollment.cacerts()),
                         [self.store.ca.certificate])


class DrawChoices:
    """The mutator's choices drawn by hypothesis, so that failures shrink."""

    def __init__(self, data: st.DataObject) -> None:
        self._data = data

    def integer(self, low: int, high: int) -> int:
        return self._data.draw(st.integers(low, high))

    def blob(self, max_size: int) -> bytes:
        return self._data.draw(st.binary(max_size=max_size))


class HostileRequestTests(EnrollmentCase):
    """Whatever the body, an answer: a certificate or a refusal, never an exception."""

    def check(self, body: bytes) -> None:
        answer = self.reenroll(body)
        if answer.certificate is None:
            self.assertIn(answer.refusal, set(EnrollmentReason) - {EnrollmentReason.NOT_ISSUED})
        else:
            self.assertEqual(answer.certificate.subject, self.client.certificate.subject)

    @settings(max_examples=200, deadline=None)
    @given(st.binary(max_size=2048))
    def test_arbitrary_bytes(self, body: bytes) -> None:
        self.check(body)
        self.check(base64.b64encode(body))

    @settings(max_examples=200, deadline=None)
    @given(st.data())
    def test_mutated_requests(self, data: st.DataObject) -> None:
        if not hasattr(self, "der"):
            self.der = base64.b64decode(self.new_csr())
        self.check(base64.encodebytes(mutate(self.der, DrawChoices(data))))


class OverTLSTests(EnrollmentCase):
    """The EST tree behind certsrv's gate, through real TLS handshakes in memory."""

    def setUp(self) -> None:
        super().setUp()
        self.factory = make_est_factory(self.enrollment, self.clock)

    def send(self, certificate: IssuedCertificate | None, request: bytes) -> Exchange:
        options = client_tls_options([self.store.ca.certificate], certificate)
        return exchange(self.factory, options, request)

    def test_cacerts_is_public(self) -> None:
        result = self.send(None, b"GET /.well-known/est/cacerts HTTP/1.1\r\nHost: localhost\r\n"
                                 b"Connection: close\r\n\r\n")
        self.assertEqual(result.status, 200)
        self.assertIn(b"Content-Type: application/pkcs7-mime",
                      result.client.received)
        self.assertEqual(certificates_in(result.body),
                         [self.store.ca.certificate])

    def test_reenroll(self) -> None:
        result = self.send(self.client, post(_PATH, self.new_csr()))
        self.assertEqual(result.status, 200)
        self.assertIn(b"smime-type=certs-only", result.client.received)
        [new] = certificates_in(result.body)
        self.assertEqual(self.store.find("client").serial, new.serial_number)

    def test_no_certificate(self) -> None:
        result = self.send(None, post(_PATH, self.new_csr()))
        self.assertEqual(result.status, 403)
        self.assertIn(b"no_certificate", result.body)
        self.assertEqual(self.store.find("client").serial, self.client.certificate.serial_number)

    def test_revoked_certificate_refused_in_the_handshake(self) -> None:
        PKIStore.open(self.store.path).revoke("client", now=self.now())
        with captured_events("certsrv.tls") as events:
            result = self.send(self.client, post(_PATH, self.new_csr()))
        self.assertIsNone(result.status)
        self.assertIn("revoked", [e.get("reason") for e in events])

    def test_expired_certificate_refused(self) -> None:
        self.clock.advance(400 * 86400)
        with captured_events("certsrv.tls") as events:
            result = self.send(self.client, post(_PATH, self.new_csr()))
        self.assertIsNone(result.status)
        self.assertIn("expired", [e.get("reason") for e in events])
        self.assertEqual(self.store.find("client").serial, self.client.certificate.serial_number)

    def test_refusal_has_status_reason_and_event(self) -> None:
        other = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "admin")])
        with captured_events("certsrv.est") as events:
            result = self.send(self.client, post(_PATH, self.new_csr(other)))
        self.assertEqual(result.status, 400)
        self.assertIn(b"subject_mismatch", result.body)
        self.assertEqual([(e["reason"], e["status"]) for e in events],
                         [("subject_mismatch", 400)])

    def test_too_many_renewals_says_when_to_retry(self) -> None:
        enrollment = Enrollment(self.store, self.clock, max_renewals=1)
        self.factory = make_est_factory(enrollment, self.clock)
        self.assertEqual(self.send(self.client, post(_PATH, self.new_csr())).status, 200)
        result = self.send(self.client, post(_PATH, self.new_csr()))
        self.assertEqual(result.status, 429)
        self.assertIn(b"Retry-After: 3600", result.client.received)

    def test_wrong_content_type_and_method(self) -> None:
        result = self.send(self.client, post(_PATH, self.new_csr(), "text/plain"))
        self.assertEqual(result.status, 415)
        result = self.send(self.client, f"GET {_PATH} HTTP/1.1\r\nHost: localhost\r\n"
                                        "Connection: close\r\n\r\n".encode())
        self.assertEqual(result.status, 405)

    def test_body_over_the_listener_limit(self) -> None:
        result = self.send(self.client, post(_PATH, b"A" * (MAX_CSR_BYTES + 1)))
        self.assertEqual(result.status, 413)


class CertifyTests(SynchronousTestCase):
    """``CertificateAuthority.certify``: a key the CA did not generate, named as before."""

    def test_copies_the_names_and_usages(self) -> None:
        ca = CertificateAuthority.create()
        template = ca.issue(None, uris=["spiffe://example.org/svc"]).certificate
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        new = ca.certify(template, key.public_key())
        self.assertEqual(new.subject, template.subject)
        for kind in (x509.SubjectAlternativeName, x509.ExtendedKeyUsage):
            self.assertEqual(new.extensions.get_extension_for_class(kind),
                             template.extensions.get_extension_for_class(kind))
        self.assertTrue(new.extensions.get_extension_for_class(
            x509.SubjectAlternativeName).critical, "critical with an empty subject")
        self.assertTrue(new.extensions.get_extension_for_class(
            x509.KeyUsage).value.key_encipherment)
        new.verify_directly_issued_by(ca.certificate)

    def test_never_outlives_the_ca(self) -> None:
        start = datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC)
        ca = CertificateAuthority.create(now=start, not_after=start + datetime.timedelta(days=2))
        template = ca.issue_client("alice", now=start).certificate
        key = ec.generate_private_key(ec.SECP256R1()).public_key()
        new = ca.certify(template, key, now=start, validity=datetime.timedelta(days=30))
        self.assertEqual(new.not_valid_after_utc, ca.certificate.not_valid_after_utc)
        self.assertRaises(ValueError, ca.certify, template, key,
                          now=start + datetime.timedelta(days=3))
