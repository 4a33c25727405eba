"""certsrv.pki.responder: OCSPResource answers, checked by ``verify_response``."""

from __future__ import annotations

import base64
import datetime
import io
from urllib.parse import quote

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.test.requesthelper import DummyRequest

from certsrv.pki import (
    IssuedCertificate,
)
from certsrv.pki.responder import OCSPResource, StatusRecord
from certsrv.revocation import ocsp as _ocsp
from certsrv.revocation.ocsp import (
    CertStatus,
    OCSPStatus,
    build_request,
    new_nonce,
    verify_response,
)
from tests._support import DAY, HOUR
from tests._support import FIXED_NOW as NOW
from tests._support import fixed_ca as _ca
from tests._support import fixed_client as _client
from tests._support import status_table as _status_table

MINUTE = datetime.timedelta(minutes=1)


class ResponderTests(SynchronousTestCase):
    """OCSPResource driven in-process with DummyRequest, its answers checked by verify_response."""

    def setUp(self) -> None:
        self.ca = _ca()
        self.good = _client()
        self.revoked = _client(name="revoked")
        self.unknown = _client(name="unknown")
        self.responder = self.ca.issue_ocsp_responder(now=NOW)
        self.clock = Clock()
        self.clock.advance(NOW.timestamp())
        table = _status_table(self.good, self.revoked, NOW - DAY)
        self.resource = OCSPResource(self.ca.certificate, self.responder.certificate,
                                     self.responder.private_key, table.get, self.clock,
                                     validity=2 * HOUR)

    def _render(self, request: DummyRequest) -> tuple[int, bytes, bytes]:
        body = self.resource.render(request)
        content_type = request.responseHeaders.getRawHeaders(b"content-type", [b""])[0]
        return request.responseCode or 200, content_type, body

    def _post(self, body: bytes,
              content_type: bytes = b"application/ocsp-request") -> tuple[int, bytes, bytes]:
        request = DummyRequest([b""])
        request.method = b"POST"
        request.content = io.BytesIO(body)  # type: ignore[attr-defined]
        request.requestHeaders.setRawHeaders(b"content-type", [content_type])
        return self._render(request)

    def _get(self, postpath: list[bytes]) -> tuple[int, bytes, bytes]:
        request = DummyRequest(postpath)
        request.method = b"GET"
        return self._render(request)

    def _ask(self, cert: IssuedCertificate, nonce: bytes | None = b"N" * 16) -> OCSPStatus:
        code, content_type, body = self._post(
            build_request(cert.certificate, self.ca.certificate, nonce))
        self.assertEqual((code, content_type), (200, b"application/ocsp-response"))
        return verify_response(body, cert.certificate, self.ca.certificate, now=NOW,
                               nonce=nonce, nonce_policy="require" if nonce else "off",
                               skew=MINUTE, default_validity=HOUR)

    def _response_status(self, body: bytes) -> ocsp.OCSPResponseStatus:
        return ocsp.load_der_ocsp_response(body).response_status

    def test_post_good_revoked_unknown(self) -> None:
        """POST answers good, revoked (with time and reason) and unknown, echoing the nonce."""
        good = self._ask(self.good)
        self.assertEqual((good.status, good.this_update, good.next_update, good.produced_at),
                         (CertStatus.GOOD, NOW, NOW + 2 * HOUR, NOW))
        revoked = self._ask(self.revoked)
        self.assertEqual((revoked.status, revoked.revocation_time, revoked.revocation_reason),
                         (CertStatus.REVOKED, NOW - DAY, x509.ReasonFlags.superseded))
        self.assertEqual(self._ask(self.unknown).status, CertStatus.UNKNOWN)

    def test_without_nonce(self) -> None:
        """A request without a nonce gets a response without one."""
        self.assertEqual(self._ask(self.good, nonce=None).status, CertStatus.GOOD)

    def test_clock_drives_the_times(self) -> None:
        """thisUpdate follows the clock."""
        self.clock.advance(3600)
        code, _type, body = self._post(
            build_request(self.good.certificate, self.ca.certificate, None))
        self.assertEqual(ocsp.load_der_ocsp_response(body).this_update_utc, NOW + HOUR)

    def test_get(self) -> None:
        """GET takes the URL-encoded base64 request from the path, slashes and all."""
        for _attempt in range(200):
            nonce = new_nonce()
            der = build_request(self.revoked.certificate, self.ca.certificate, nonce)
            encoded = base64.b64encode(der)
            if b"/" in encoded and b"+" in encoded:
                break
        for postpath in (encoded.split(b"/"), [quote(encoded, safe="").encode()]):
            code, content_type, body = self._get(postpath)
            self.assertEqual((code, content_type), (200, b"application/ocsp-response"))
            status = verify_response(body, self.revoked.certificate, self.ca.certificate,
                                     now=NOW, nonce=nonce, nonce_policy="require",
                                     skew=MINUTE, default_validity=HOUR)
            self.assertEqual(status.status, CertStatus.REVOKED)

    def test_malformed(self) -> None:
        """Garbage, bad base64 or an empty GET: malformedRequest, HTTP 200, no traceback."""
        for code, _type, body in (self._post(b"garbage"), self._post(b""),
                                  self._get([b"!!notbase64"]), self._get([b""])):
            self.assertEqual(code, 200)
            self.assertEqual(self._response_status(body),
                             ocsp.OCSPResponseStatus.MALFORMED_REQUEST)

    def test_two_certificates_in_one_request(self) -> None:
        """A request for two certificates is answered malformedRequest."""
        der = build_request(self.good.certificate, self.ca.certificate, None)
        tbs = _ocsp._one(_ocsp._one(der).content)
        request_list = _ocsp._one(tbs.content)
        doubled = _ocsp._tlv(0x30, request_list.content * 2)
        two = _ocsp._tlv(0x30, _ocsp._tlv(0x30, doubled))
        self.assertRaises(NotImplementedError, ocsp.load_der_ocsp_request, two)
        self.assertEqual(self._response_status(self._post(two)[2]),
                         ocsp.OCSPResponseStatus.MALFORMED_REQUEST)

    def test_oversized_nonce(self) -> None:
        """A nonce longer than RFC 8954's 32 bytes: malformedRequest."""
        request = (ocsp.OCSPRequestBuilder()
                   .add_certificate(self.good.certificate, self.ca.certificate, hashes.SHA1())
                   .add_extension(x509.OCSPNonce(b"x" * 33), False).build())
        body = self._post(request.public_bytes(serialization.Encoding.DER))[2]
        self.assertEqual(self._response_status(body), ocsp.OCSPResponseStatus.MALFORMED_REQUEST)

    def test_another_issuer(self) -> None:
        """A request about another CA's certificate: unauthorized."""
        other = _ca(name="Other CA")
        stranger = other.issue_client("stranger", now=NOW)
        body = self._post(build_request(stranger.certificate, other.certificate, None))[2]
        self.assertEqual(self._response_status(body), ocsp.OCSPResponseStatus.UNAUTHORIZED)

    def test_sha256_cert_id_is_echoed(self) -> None:
        """A SHA-256 CertID is answered with the same CertID."""
        request = (ocsp.OCSPRequestBuilder()
                   .add_certificate(self.good.certificate, self.ca.certificate, hashes.SHA256())
                   .build())
        body = self._post(request.public_bytes(serialization.Encoding.DER))[2]
        response = ocsp.load_der_ocsp_response(body)
        self.assertEqual(response.hash_algorithm.name, "sha256")
        self.assertEqual(response.issuer_key_hash, request.issuer_key_hash)
        self.assertEqual(response.serial_number, self.good.serial_number)
        self.assertEqual(response.certificate_status, ocsp.OCSPCertStatus.GOOD)

    def test_body_too_large(self) -> None:
        """More than 64 KiB: 413."""
        self.assertEqual(self._post(b"\x30" * (64 * 1024 + 1))[0], 413)

    def test_wrong_content_type(self) -> None:
        """A body declared as something else: 415."""
        der = build_request(self.good.certificate, self.ca.certificate, None)
        self.assertEqual(self._post(der, b"text/plain")[0], 415)
        self.assertEqual(self._post(der, b"application/ocsp-request; x=y")[0], 200)

    def test_lookup_failure(self) -> None:
        """A failing status lookup: internalError, logged."""
        def fail(serial: int) -> StatusRecord | None:
            raise RuntimeError("database down")

        self.resource = OCSPResource(self.ca.certificate, self.responder.certificate,
                                     self.responder.private_key, fail, self.clock)
        body = self._post(build_request(self.good.certificate, self.ca.certificate, None))[2]
        self.assertEqual(self._response_status(body), ocsp.OCSPResponseStatus.INTERNAL_ERROR)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

