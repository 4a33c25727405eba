"""certsrv.revocation.ocsp (requests, responses, verification) and certsrv.pki.responder."""

# trial's assertion methods are untyped.
# mypy: disable-error-code="no-untyped-call"

from __future__ import annotations

import base64
import datetime
import os
import shutil
import socket
from pathlib import Path
from typing import Literal, cast
from urllib.parse import quote

import treq
from cryptography import x509
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID, SignatureAlgorithmOID
from twisted.internet import reactor
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.utils import getProcessOutputAndValue
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.http_headers import Headers
from twisted.web.server import Site

from certsrv.exceptions import OCSPError
from certsrv.pki import (
    CertificateAuthority,
    IssuedCertificate,
    KeyType,
    generate_key,
    self_signed_client,
)
from certsrv.pki.responder import OCSPResource
from certsrv.revocation import ocsp as _ocsp
from certsrv.revocation.ocsp import (
    CertID,
    CertStatus,
    OCSPStatus,
    SingleStatus,
    build_request,
    build_response,
    build_unsuccessful,
    cert_id_key,
    new_nonce,
    verify_response,
)
from tests._support import DAY, HOUR
from tests._support import FIXED_NOW as NOW
from tests._support import fixed_ca as _ca
from tests._support import fixed_client as _client
from tests._support import status_table as _status_table

MINUTE = datetime.timedelta(minutes=1)
OPENSSL = shutil.which("openssl")
RESPONDER_IDS: tuple[Literal["key", "name"], ...] = ("key", "name")
_OCSP_REQUEST_HEADERS = Headers({b"Content-Type": [b"application/ocsp-request"]})


def _single(
    cert: x509.Certificate,
    issuer: x509.Certificate,
    status: CertStatus = CertStatus.GOOD,
    *,
    this_update: datetime.datetime = NOW - 5 * MINUTE,
    next_update: datetime.datetime | None = NOW + HOUR,
    revocation_time: datetime.datetime | None = None,
    reason: x509.ReasonFlags | None = None,
) -> SingleStatus:
    return SingleStatus(cert_id_key(cert, issuer), status, this_update, next_update,
                        revocation_time, reason)


def _verify(
    der: bytes,
    cert: x509.Certificate,
    issuer: x509.Certificate,
    *,
    now: datetime.datetime = NOW,
    nonce: bytes | None = None,
    nonce_policy: _ocsp.NoncePolicy = "prefer",
) -> OCSPStatus:
    return verify_response(der, cert, issuer, now=now, nonce=nonce, nonce_policy=nonce_policy,
                           skew=5 * MINUTE, default_validity=HOUR)


def _flip_last_byte_of(der: bytes, part: bytes) -> bytes:
    """Return ``der`` with the last byte of the only occurrence of ``part`` changed."""
    assert der.count(part) == 1, "the part to tamper with must occur exactly once"
    at = der.index(part) + len(part) - 1
    return der[:at] + bytes((der[at] ^ 0x01,)) + der[at + 1:]


def _serial_bytes(serial: int) -> bytes:
    return serial.to_bytes(serial.bit_length() // 8 + 1, "big")


class RequestTests(SynchronousTestCase):
    """build_request, new_nonce and cert_id_key."""

    def test_request_carries_sha1_cert_id_and_nonce(self) -> None:
        """The request names the certificate by a SHA-1 CertID and carries the nonce."""
        client, ca = _client(), _ca()
        request = ocsp.load_der_ocsp_request(
            build_request(client.certificate, ca.certificate, b"n" * 16))
        self.assertEqual(request.hash_algorithm.name, "sha1")
        self.assertEqual(
            CertID(request.issuer_name_hash, request.issuer_key_hash, request.serial_number),
            cert_id_key(client.certificate, ca.certificate),
        )
        nonce = request.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce
        self.assertEqual(nonce, b"n" * 16)

    def test_request_without_nonce(self) -> None:
        """Without a nonce the request has no extensions."""
        request = ocsp.load_der_ocsp_request(
            build_request(_client().certificate, _ca().certificate, None))
        self.assertEqual(len(request.extensions), 0)

    def test_nonce_length_is_checked(self) -> None:
        """RFC 8954 nonces have 1 to 32 bytes."""
        for nonce in (b"", b"x" * 33):
            self.assertRaises(ValueError, build_request, _client().certificate,
                              _ca().certificate, nonce)

    def test_new_nonce(self) -> None:
        """Nonces are 16 random bytes."""
        first, second = new_nonce(), new_nonce()
        self.assertEqual(len(first), 16)
        self.assertNotEqual(first, second)

    def test_cert_id_key(self) -> None:
        """The key is hashable, stable, and differs between certificates and issuers."""
        ca, client = _ca(), _client()
        key = cert_id_key(client.certificate, ca.certificate)
        cache = {key: "x"}
        self.assertEqual(cache[cert_id_key(client.certificate, ca.certificate)], "x")
        self.assertEqual(key.serial_number, client.serial_number)
        self.assertEqual(len(key.issuer_name_hash), 20)
        other = _client(name="other")
        self.assertNotEqual(key, cert_id_key(other.certificate, ca.certificate))
        same_name = CertificateAuthority.create("Test CA", now=NOW)
        self.assertNotEqual(key, cert_id_key(client.certificate, same_name.certificate))


class AcceptTests(SynchronousTestCase):
    """Responses that must be accepted, and what they say."""

    def setUp(self) -> None:
        self.ca = _ca()
        self.client = _client()

    def _issuer_signed(self, *statuses: SingleStatus, **kwargs: object) -> bytes:
        return build_response(list(statuses), self.ca.certificate, self.ca.private_key,
                              produced_at=NOW - MINUTE, **kwargs)  # type: ignore[arg-type]

    def test_good(self) -> None:
        """A GOOD response signed by the issuer is accepted with its times."""
        der = self._issuer_signed(_single(self.client.certificate, self.ca.certificate))
        status = _verify(der, self.client.certificate, self.ca.certificate)
        self.assertEqual(status, OCSPStatus(CertStatus.GOOD, NOW - 5 * MINUTE, NOW + HOUR,
                                            None, None, NOW - MINUTE))

    def test_revoked(self) -> None:
        """A REVOKED response gives the revocation time and reason."""
        der = self._issuer_signed(_single(
            self.client.certificate, self.ca.certificate, CertStatus.REVOKED,
            revocation_time=NOW - DAY, reason=x509.ReasonFlags.key_compromise))
        status = _verify(der, self.client.certificate, self.ca.certificate)
        self.assertEqual(status.status, CertStatus.REVOKED)
        self.assertEqual(status.revocation_time, NOW - DAY)
        self.assertEqual(status.revocation_reason, x509.ReasonFlags.key_compromise)

    def test_unknown(self) -> None:
        """UNKNOWN is the responder's word, returned rather than raised."""
        der = self._issuer_signed(
            _single(self.client.certificate, self.ca.certificate, CertStatus.UNKNOWN))
        status = _verify(der, self.client.certificate, self.ca.certificate)
        self.assertEqual(status.status, CertStatus.UNKNOWN)

    def test_delegated_responder(self) -> None:
        """A responder certificate of the issuer with OCSPSigning may sign, by key or name."""
        responder = self.ca.issue_ocsp_responder(now=NOW)
        for responder_id in RESPONDER_IDS:
            der = build_response(
                [_single(self.client.certificate, self.ca.certificate)],
                responder.certificate, responder.private_key, produced_at=NOW,
                certificates=[responder.certificate], responder_id=responder_id)
            status = _verify(der, self.client.certificate, self.ca.certificate)
            self.assertEqual(status.status, CertStatus.GOOD)

    def test_delegated_responder_among_other_certificates(self) -> None:
        """The responder certificate is found by responder ID among unrelated certificates."""
        responder = self.ca.issue_ocsp_responder(now=NOW)
        unrelated = _ca(name="Unrelated CA").issue_ocsp_responder(now=NOW)
        der = build_response(
            [_single(self.client.certificate, self.ca.certificate)],
            responder.certificate, responder.private_key, produced_at=NOW,
            certificates=[unrelated.certificate, responder.certificate])
        self.assertEqual(_verify(der, self.client.certificate, self.ca.certificate).status,
                         CertStatus.GOOD)

    def test_signature_algorithms(self) -> None:
        """ECDSA, RSA PKCS#1 v1.5, RSA-PSS (its parameters honoured) and Ed25519 verify."""
        cases = [
            (KeyType.ECDSA_P256, "sha256", False, SignatureAlgorithmOID.ECDSA_WITH_SHA256),
            (KeyType.ECDSA_P256, "sha384", False, SignatureAlgorithmOID.ECDSA_WITH_SHA384),
            (KeyType.RSA_2048, "sha256", False, SignatureAlgorithmOID.RSA_WITH_SHA256),
            (KeyType.RSA_2048, "sha256", True, SignatureAlgorithmOID.RSASSA_PSS),
            # PSS with SHA-384 and a 48-byte salt only verifies if the parameters are read.
            (KeyType.RSA_2048, "sha384", True, SignatureAlgorithmOID.RSASSA_PSS),
            (KeyType.ED25519, "sha256", False, SignatureAlgorithmOID.ED25519),
        ]
        for key_type, hash_name, pss, oid in cases:
            ca, client = _ca(key_type), _client(key_type)
            der = build_response([_single(client.certificate, ca.certificate)], ca.certificate,
                                 ca.private_key, produced_at=NOW, hash_algorithm=hash_name,
                                 rsa_pss=pss)
            self.assertEqual(ocsp.load_der_ocsp_response(der).signature_algorithm_oid, oid)
            status = _verify(der, client.certificate, ca.certificate)
            self.assertEqual(status.status, CertStatus.GOOD, (key_type, hash_name, pss))

    def test_rsa_delegated_responder(self) -> None:
        """An RSA responder certificate under an ECDSA issuer may sign with PSS."""
        responder = self.ca.issue_ocsp_responder(now=NOW, key_type=KeyType.RSA_2048)
        der = build_response([_single(self.client.certificate, self.ca.certificate)],
                             responder.certificate, responder.private_key, produced_at=NOW,
                             certificates=[responder.certificate], rsa_pss=True)
        self.assertEqual(_verify(der, self.client.certificate, self.ca.certificate).status,
                         CertStatus.GOOD)

    def test_our_single_response_among_several(self) -> None:
        """Of several single responses, the one with our CertID is used."""
        others = [_client(name=f"other{i}").certificate for i in range(2)]
        der = self._issuer_signed(
            _single(others[0], self.ca.certificate),
            _single(self.client.certificate, self.ca.certificate, CertStatus.REVOKED,
                    revocation_time=NOW - DAY),
            _single(others[1], self.ca.certificate, CertStatus.UNKNOWN),
        )
        self.assertEqual(len(list(ocsp.load_der_ocsp_response(der).responses)), 3)
        status = _verify(der, self.client.certificate, self.ca.certificate)
        self.assertEqual(status.status, CertStatus.REVOKED)
        self.assertEqual(_verify(der, others[1], self.ca.certificate).status, CertStatus.UNKNOWN)

    def test_nonce_policies(self) -> None:
        """Matching nonces pass; 'prefer' accepts none; 'off' ignores a wrong one."""
        single = _single(self.client.certificate, self.ca.certificate)
        with_nonce = self._issuer_signed(single, nonce=b"a" * 16)
        without = self._issuer_signed(single)
        cert, issuer = self.client.certificate, self.ca.certificate
        _verify(with_nonce, cert, issuer, nonce=b"a" * 16, nonce_policy="require")
        _verify(with_nonce, cert, issuer, nonce=b"a" * 16, nonce_policy="prefer")
        _verify(with_nonce, cert, issuer, nonce=None, nonce_policy="prefer")
        _verify(without, cert, issuer, nonce=b"a" * 16, nonce_policy="prefer")
        _verify(with_nonce, cert, issuer, nonce=b"b" * 16, nonce_policy="off")
        _verify(without, cert, issuer, nonce=b"b" * 16, nonce_policy="off")

    def test_clock_skew_is_tolerated(self) -> None:
        """thisUpdate slightly ahead and nextUpdate slightly past are within the skew."""
        der = self._issuer_signed(_single(self.client.certificate, self.ca.certificate,
                                          this_update=NOW + 4 * MINUTE,
                                          next_update=NOW + HOUR))
        _verify(der, self.client.certificate, self.ca.certificate)
        der = self._issuer_signed(_single(self.client.certificate, self.ca.certificate,
                                          this_update=NOW - HOUR, next_update=NOW - 4 * MINUTE))
        _verify(der, self.client.certificate, self.ca.certificate)

    def test_no_next_update_recent(self) -> None:
        """Without nextUpdate a response within default_validity is accepted."""
        der = self._issuer_signed(_single(self.client.certificate, self.ca.certificate,
                                          this_update=NOW - 50 * MINUTE, next_update=None))
        status = _verify(der, self.client.certificate, self.ca.certificate)
        self.assertIsNone(status.next_update)

    def test_caller_errors(self) -> None:
        """A naive ``now`` or 'require' without a nonce is the caller's bug."""
        der = self._issuer_signed(_single(self.client.certificate, self.ca.certificate))
        self.assertRaises(ValueError, _verify, der, self.client.certificate,
                          self.ca.certificate, now=NOW.replace(tzinfo=None))
        self.assertRaises(ValueError, _verify, der, self.client.certificate,
                          self.ca.certificate, nonce=None, nonce_policy="require")


class RejectTests(SynchronousTestCase):
    """Forged, tampered, mismatched, stale and unsuccessful responses raise OCSPError."""

    def setUp(self) -> None:
        self.ca = _ca()
        self.client = _client()
        self.single = _single(self.client.certificate, self.ca.certificate)

    def _assert_rejected(self, der: bytes, reason: str, **kwargs: object) -> OCSPError:
        error = self.assertRaises(OCSPError, _verify, der, self.client.certificate,
                                  self.ca.certificate, **kwargs)
        self.assertEqual(error.reason, reason, str(error))
        return error

    def _delegated(self, responder: IssuedCertificate, **kwargs: object) -> bytes:
        return build_response([self.single], responder.certificate, responder.private_key,
                              produced_at=NOW, certificates=[responder.certificate],
                              **kwargs)  # type: ignore[arg-type]

    def test_unrelated_key_claiming_the_issuer(self) -> None:
        """A response naming the issuer as responder but signed by another key: bad_signature."""
        for responder_id in RESPONDER_IDS:
            der = build_response([self.single], self.ca.certificate, generate_key(),
                                 produced_at=NOW, responder_id=responder_id)
            self._assert_rejected(der, "bad_signature")

    def test_unrelated_self_signed_responder(self) -> None:
        """A self-signed responder certificate with OCSPSigning: unauthorized_signer."""
        rogue = self_signed_client("Rogue responder", now=NOW,
                                   extended_key_usage=(ExtendedKeyUsageOID.OCSP_SIGNING,))
        self._assert_rejected(self._delegated(rogue), "unauthorized_signer")

    def test_responder_without_ocsp_signing(self) -> None:
        """A certificate of the issuer without id-kp-OCSPSigning may not sign."""
        for usages in ((ExtendedKeyUsageOID.CLIENT_AUTH,), None,
                       (ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE,)):
            responder = self.ca.issue_ocsp_responder(now=NOW, extended_key_usage=usages)
            self._assert_rejected(self._delegated(responder), "unauthorized_signer")

    def test_responder_key_usage_without_digital_signature(self) -> None:
        """A responder whose key usage forbids signatures may not sign."""
        usage = x509.KeyUsage(False, True, False, False, False, False, False, False, False)
        responder = self.ca.issue_ocsp_responder(now=NOW, key_usage=usage)
        self._assert_rejected(self._delegated(responder), "unauthorized_signer")

    def test_responder_from_another_ca(self) -> None:
        """A proper OCSP responder certificate of another CA may not sign for ours."""
        other = _ca(name="Other CA").issue_ocsp_responder(now=NOW)
        self._assert_rejected(self._delegated(other), "unauthorized_signer")

    def test_responder_from_a_ca_with_the_same_name(self) -> None:
        """The issuer's name is not enough: the responder certificate must verify."""
        impostor = CertificateAuthority.create("Test CA", now=NOW).issue_ocsp_responder(now=NOW)
        self._assert_rejected(self._delegated(impostor), "unauthorized_signer")

    def test_responder_from_an_intermediate(self) -> None:
        """A responder issued by a CA below the issuer is not issued directly by it."""
        below = self.ca.intermediate("Below", now=NOW).issue_ocsp_responder(now=NOW)
        self._assert_rejected(self._delegated(below), "unauthorized_signer")

    def test_responder_certificate_not_included(self) -> None:
        """A delegated responder must include its certificate."""
        responder = self.ca.issue_ocsp_responder(now=NOW)
        der = build_response([self.single], responder.certificate, responder.private_key,
                             produced_at=NOW)
        self._assert_rejected(der, "unauthorized_signer")

    def test_responder_expired_or_not_yet_valid(self) -> None:
        """The responder certificate must be valid at ``now``, give or take the skew."""
        expired = self.ca.issue_ocsp_responder(not_before=NOW - 10 * DAY,
                                               not_after=NOW - HOUR)
        self._assert_rejected(self._delegated(expired), "signer_not_valid")
        future = self.ca.issue_ocsp_responder(not_before=NOW + HOUR, not_after=NOW + 10 * DAY)
        self._assert_rejected(self._delegated(future), "signer_not_valid")

    def test_responder_certificate_with_another_key(self) -> None:
        """Signed by a key other than the included responder certificate's: bad_signature."""
        responder = self.ca.issue_ocsp_responder(now=NOW)
        der = build_response([self.single], responder.certificate, generate_key(),
                             produced_at=NOW, certificates=[responder.certificate])
        self._assert_rejected(der, "bad_signature")

    def test_tampered_signature(self) -> None:
        """One flipped bit in the signature: bad_signature, for every key type."""
        for key_type, pss in ((KeyType.ECDSA_P256, False), (KeyType.RSA_2048, False),
                              (KeyType.RSA_2048, True), (KeyType.ED25519, False)):
            ca, client = _ca(key_type), _client(key_type)
            der = build_response([_single(client.certificate, ca.certificate)], ca.certificate,
                                 ca.private_key, produced_at=NOW, rsa_pss=pss)
            signature = ocsp.load_der_ocsp_response(der).signature
            error = self.assertRaises(OCSPError, _verify, _flip_last_byte_of(der, signature),
                                      client.certificate, ca.certificate)
            self.assertEqual(error.reason, "bad_signature", (key_type, pss))

    def test_tampered_response_data(self) -> None:
        """A changed serial or status inside the signed data: bad_signature."""
        der = build_response([self.single], self.ca.certificate, self.ca.private_key,
                             produced_at=NOW)
        serial = _serial_bytes(self.client.serial_number)
        tampered = _flip_last_byte_of(der, serial)
        parsed = ocsp.load_der_ocsp_response(tampered)
        self.assertEqual(parsed.serial_number, self.client.serial_number ^ 0x01)
        error = self.assertRaises(OCSPError, _verify, tampered, self.client.certificate,
                                  self.ca.certificate)
        self.assertEqual(error.reason, "bad_signature")
        # good [0] NULL turned into unknown [2] NULL right after the serial.
        at = der.index(serial + b"\x80\x00") + len(serial)
        unknown = der[:at] + b"\x82" + der[at + 1:]
        self.assertEqual(ocsp.load_der_ocsp_response(unknown).certificate_status,
                         ocsp.OCSPCertStatus.UNKNOWN)
        error = self.assertRaises(OCSPError, _verify, unknown, self.client.certificate,
                                  self.ca.certificate)
        self.assertEqual(error.reason, "bad_signature")

    def test_tampered_pss_parameters(self) -> None:
        """The PSS salt length comes from the (unsigned) parameters; changing it fails."""
        ca, client = _ca(KeyType.RSA_2048), _client(KeyType.RSA_2048)
        der = build_response([_single(client.certificate, ca.certificate)], ca.certificate,
                             ca.private_key, produced_at=NOW, rsa_pss=True)
        salt = bytes.fromhex("a203020120")  # [2] INTEGER 32
        error = self.assertRaises(OCSPError, _verify, _flip_last_byte_of(der, salt),
                                  client.certificate, ca.certificate)
        self.assertEqual(error.reason, "bad_signature")

    def test_weak_signature_hash(self) -> None:
        """SHA-1 signatures are refused."""
        der = build_response([self.single], self.ca.certificate, self.ca.private_key,
                             produced_at=NOW, hash_algorithm="sha1")
        self._assert_rejected(der, "bad_signature")

    def test_response_for_another_certificate(self) -> None:
        """A valid response about someone else: cert_id_mismatch."""
        other = _client(name="other0")
        der = build_response([_single(other.certificate, self.ca.certificate)],
                             self.ca.certificate, self.ca.private_key, produced_at=NOW)
        self._assert_rejected(der, "cert_id_mismatch")

    def test_same_serial_other_issuer_or_hash(self) -> None:
        """Our serial under another issuer's hashes, or a SHA-256 CertID: cert_id_mismatch."""
        ours = cert_id_key(self.client.certificate, self.ca.certificate)
        impostor = CertificateAuthority.create("Test CA", now=NOW)
        wrong_key = cert_id_key(self.client.certificate, impostor.certificate)
        sha256 = cert_id_key(self.client.certificate, self.ca.certificate, "sha256")
        self.assertEqual(wrong_key.issuer_name_hash, ours.issuer_name_hash)
        for cert_id in (wrong_key, sha256):
            single = SingleStatus(cert_id, CertStatus.GOOD, NOW, NOW + HOUR)
            der = build_response([single], self.ca.certificate, self.ca.private_key,
                                 produced_at=NOW)
            self._assert_rejected(der, "cert_id_mismatch")

    def test_our_cert_id_twice(self) -> None:
        """Two single responses for our CertID are ambiguous: cert_id_mismatch."""
        revoked = _single(self.client.certificate, self.ca.certificate, CertStatus.REVOKED,
                          revocation_time=NOW - DAY)
        der = build_response([self.single, revoked], self.ca.certificate,
                             self.ca.private_key, produced_at=NOW)
        self._assert_rejected(der, "cert_id_mismatch")

    def test_stale(self) -> None:
        """nextUpdate further in the past than the skew: stale."""
        der = build_response(
            [_single(self.client.certificate, self.ca.certificate, this_update=NOW - DAY,
                     next_update=NOW - 6 * MINUTE)],
            self.ca.certificate, self.ca.private_key, produced_at=NOW - DAY)
        self._assert_rejected(der, "stale")

    def test_this_update_in_the_future(self) -> None:
        """thisUpdate beyond now plus the skew: not_yet_valid."""
        der = build_response(
            [_single(self.client.certificate, self.ca.certificate, this_update=NOW + 6 * MINUTE,
                     next_update=NOW + HOUR)],
            self.ca.certificate, self.ca.private_key, produced_at=NOW)
        self._assert_rejected(der, "not_yet_valid")

    def test_no_next_update_and_too_old(self) -> None:
        """Without nextUpdate, thisUpdate older than default_validity: stale."""
        der = build_response(
            [_single(self.client.certificate, self.ca.certificate,
                     this_update=NOW - 2 * HOUR, next_update=None)],
            self.ca.certificate, self.ca.private_key, produced_at=NOW - 2 * HOUR)
        self._assert_rejected(der, "stale")

    def test_wrong_nonce(self) -> None:
        """A nonce other than ours: nonce_mismatch under 'prefer' and 'require'."""
        der = build_response([self.single], self.ca.certificate, self.ca.private_key,
                             produced_at=NOW, nonce=b"b" * 16)
        for policy in ("prefer", "require"):
            self._assert_rejected(der, "nonce_mismatch", nonce=b"a" * 16, nonce_policy=policy)

    def test_missing_nonce_when_required(self) -> None:
        """No nonce under 'require': nonce_missing."""
        der = build_response([self.single], self.ca.certificate, self.ca.private_key,
                             produced_at=NOW)
        self._assert_rejected(der, "nonce_missing", nonce=b"a" * 16, nonce_policy="require")

    def test_garbage(self) -> None:
        """Bytes that are not an OCSP response: malformed."""
        good = build_response([self.single], self.ca.certificate, self.ca.private_key,
                              produced_at=NOW)
        for der in (b"", b"garbage", good[:-1], good + b"\x00", b"\x30\x03\x0a\x01\x00"):
            self._assert_rejected(der, "malformed")

    def test_unsuccessful(self) -> None:
        """Every non-successful response status: unsuccessful, naming the status."""
        for status in (ocsp.OCSPResponseStatus.TRY_LATER, ocsp.OCSPResponseStatus.UNAUTHORIZED,
                       ocsp.OCSPResponseStatus.MALFORMED_REQUEST,
                       ocsp.OCSPResponseStatus.INTERNAL_ERROR,
                       ocsp.OCSPResponseStatus.SIG_REQUIRED):
            error = self._assert_rejected(build_unsuccessful(status), "unsuccessful")
            self.assertIn(status.name, error.detail)


class _Server(ProcessProtocol):
    """An ``openssl ocsp`` responder process: ``ready`` once it listens, ``ended`` at exit."""

    def __init__(self) -> None:
        self.ready: Deferred[None] = Deferred()
        self.ended: Deferred[None] = Deferred()
        self.output = b""

    def outReceived(self, data: bytes) -> None:
        self._saw(data)

    def errReceived(self, data: bytes) -> None:
        self._saw(data)

    def _saw(self, data: bytes) -> None:
        self.output += data
        if not self.ready.called and b"ACCEPT" in self.output:
            self.ready.callback(None)

    def processEnded(self, reason: Failure) -> None:
        if not self.ready.called:
            self.ready.errback(RuntimeError(f"openssl ocsp exited: {self.output!r}"))
        self.ended.callback(None)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def _openssl_time(when: datetime.datetime) -> str:
    return when.astimezone(datetime.UTC).strftime("%y%m%d%H%M%SZ")


def _openssl_serial(serial: int) -> str:
    text = f"{serial:X}"
    return "0" + text if len(text) % 2 else text


class OpenSSLInteropTests(TestCase):
    """Cross-checks with the real ``openssl ocsp``, in both directions, over 127.0.0.1."""

    if OPENSSL is None:
        skip = "the openssl command is not installed"

    def setUp(self) -> None:
        # openssl checks times against the real clock, so these certificates are made now.
        self.ca = CertificateAuthority.create("Interop CA")
        self.responder = self.ca.issue_ocsp_responder()
        self.good = self.ca.issue_client("good")
        self.revoked = self.ca.issue_client("revoked")
        self.unknown = self.ca.issue_client("unknown")
        self.revoked_at = datetime.datetime.now(datetime.UTC).replace(microsecond=0) - DAY
        self.dir = Path(self.mktemp())
        self.dir.mkdir()
        (self.dir / "ca.pem").write_bytes(self.ca.certificate_pem())
        self.responder.write(self.dir / "ocsp.pem", self.dir / "ocsp.key")
        for name in ("good", "revoked", "unknown"):
            cert: IssuedCertificate = getattr(self, name)
            (self.dir / f"{name}.pem").write_bytes(cert.certificate_pem())

    async def _openssl(self, *args: str) -> tuple[str, str]:
        assert OPENSSL is not None
        out, err, code = await getProcessOutputAndValue(  # type: ignore[no-untyped-call]
            OPENSSL, args, env=dict(os.environ), reactor=reactor)
        self.assertEqual(code, 0, err)
        return out.decode(), err.decode()

    def _serve(self) -> str:
        table = _status_table(self.good, self.revoked, self.revoked_at)
        resource = OCSPResource(self.ca.certificate, self.responder.certificate,
                                self.responder.private_key, table.get, reactor)
        port = reactor.listenTCP(0, Site(resource), interface="127.0.0.1")  # type: ignore[arg-type]
        self.addCleanup(port.stopListening)
        return f"http://127.0.0.1:{cast(IPv4Address, port.getHost()).port}"

    async def test_openssl_client_against_resource(self) -> None:
        """``openssl ocsp -url`` verifies our responder's answers: good, revoked, unknown."""
        url = self._serve()
        ca = str(self.dir / "ca.pem")
        for name in ("good", "revoked", "unknown"):
            out, err = await self._openssl(
                "ocsp", "-issuer", ca, "-cert", str(self.dir / f"{name}.pem"), "-url", url,
                "-CAfile", ca, "-resp_text")
            self.assertIn(f"{name}.pem: {name}\n", out)
            self.assertIn("Response verify OK", err)
            self.assertIn("OCSP Nonce", out)

    async def test_treq_against_resource(self) -> None:
        """POST and GET through a real Site and HTTP client."""
        url = self._serve()
        nonce = new_nonce()
        der = build_request(self.revoked.certificate, self.ca.certificate, nonce)
        response = await treq.post(url, data=der, persistent=False,
                                   headers=_OCSP_REQUEST_HEADERS)
        self.assertEqual(response.code, 200)
        body = await treq.content(response)
        status = verify_response(body, self.revoked.certificate, self.ca.certificate,
                                 now=datetime.datetime.now(datetime.UTC), nonce=nonce,
                                 nonce_policy="require", skew=MINUTE, default_validity=HOUR)
        self.assertEqual((status.status, status.revocation_time),
                         (CertStatus.REVOKED, self.revoked_at))
        path = quote(base64.b64encode(build_request(self.good.certificate,
                                                    self.ca.certificate, None)), safe="")
        response = await treq.get(f"{url}/{path}", persistent=False)
        body = await treq.content(response)
        status = verify_response(body, self.good.certificate, self.ca.certificate,
                                 now=datetime.datetime.now(datetime.UTC), nonce=None,
                                 nonce_policy="off", skew=MINUTE, default_validity=HOUR)
        self.assertEqual(status.status, CertStatus.GOOD)

    async def test_openssl_verifies_built_responses(self) -> None:
        """``openssl ocsp -respin`` accepts our multi-response, PSS and Ed25519 responses."""
        now = datetime.datetime.now(datetime.UTC)
        for key_type, pss in ((KeyType.ECDSA_P256, False), (KeyType.RSA_2048, False),
                              (KeyType.RSA_2048, True), (KeyType.ED25519, False)):
            ca = CertificateAuthority.create(f"Interop {key_type.value}", key_type=key_type)
            client, other = ca.issue_client("client"), ca.issue_client("other")
            # openssl wants every CertID of a response to name the same issuer.
            der = build_response(
                [_single(other.certificate, ca.certificate, this_update=now),
                 _single(client.certificate, ca.certificate, CertStatus.REVOKED,
                         this_update=now, next_update=now + HOUR, revocation_time=now - DAY)],
                ca.certificate, ca.private_key, produced_at=now, rsa_pss=pss)
            (self.dir / "issuer.pem").write_bytes(ca.certificate_pem())
            (self.dir / "client.pem").write_bytes(client.certificate_pem())
            (self.dir / "response.der").write_bytes(der)
            issuer = str(self.dir / "issuer.pem")
            out, err = await self._openssl(
                "ocsp", "-respin", str(self.dir / "response.der"), "-issuer", issuer,
                "-cert", str(self.dir / "client.pem"), "-CAfile", issuer, "-no_nonce",
                "-resp_text")
            self.assertIn("client.pem: revoked\n", out, (key_type, pss))
            self.assertIn("Response verify OK", err)
            if pss:
                self.assertIn("rsassaPss", out)

    async def test_resource_client_against_openssl_responder(self) -> None:
        """``openssl ocsp -index`` answers our requests; verify_response accepts them."""
        revoked_at = _openssl_time(self.revoked_at)
        lines = [
            f"V\t{_openssl_time(self.good.certificate.not_valid_after_utc)}\t\t"
            f"{_openssl_serial(self.good.serial_number)}\tunknown\t/CN=good",
            f"R\t{_openssl_time(self.revoked.certificate.not_valid_after_utc)}\t"
            f"{revoked_at},keyCompromise\t{_openssl_serial(self.revoked.serial_number)}"
            "\tunknown\t/CN=revoked",
        ]
        (self.dir / "index.txt").write_text("\n".join(lines) + "\n")
        port = _free_port()
        server = _Server()
        assert OPENSSL is not None
        process = reactor.spawnProcess(
            server, OPENSSL,
            [OPENSSL, "ocsp", "-index", str(self.dir / "index.txt"), "-port", str(port),
             "-rsigner", str(self.dir / "ocsp.pem"), "-rkey", str(self.dir / "ocsp.key"),
             "-CA", str(self.dir / "ca.pem"), "-nrequest", "3", "-nmin", "10"],
            env=dict(os.environ))

        async def stop() -> None:
            if not server.ended.called:
                process.signalProcess("KILL")
            await server.ended

        self.addCleanup(stop)
        await server.ready
        url = f"http://127.0.0.1:{port}/"
        expected = [(self.good, CertStatus.GOOD), (self.revoked, CertStatus.REVOKED),
                    (self.unknown, CertStatus.UNKNOWN)]
        for cert, want in expected:
            nonce = new_nonce()
            response = await treq.post(
                url, data=build_request(cert.certificate, self.ca.certificate, nonce),
                headers=_OCSP_REQUEST_HEADERS, persistent=False)
            body = await treq.content(response)
            status = verify_response(body, cert.certificate, self.ca.certificate,
                                     now=datetime.datetime.now(datetime.UTC), nonce=nonce,
                                     nonce_policy="require", skew=MINUTE, default_validity=HOUR)
            self.assertEqual(status.status, want)
            self.assertIsNotNone(status.next_update)
            if want is CertStatus.REVOKED:
                self.assertEqual(status.revocation_time, self.revoked_at)
                self.assertEqual(status.revocation_reason, x509.ReasonFlags.key_compromise)
