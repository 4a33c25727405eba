"""
An OCSP responder (RFC 6960) for the certificates of one issuer, as a Twisted web resource.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import hashlib
from collections.abc import Callable
from typing import NamedTuple, Protocol
from urllib.parse import unquote_to_bytes

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.x509 import ocsp
from twisted.logger import Logger
from twisted.web.http import datetimeToString
from twisted.web.resource import Resource
from twisted.web.server import Request

from certsrv.revocation.ocsp import (
    MAX_NONCE_LENGTH,
    CertID,
    CertStatus,
    SigningKey,
    SingleStatus,
    build_response,
    build_unsuccessful,
    cert_id_key,
)

__all__ = [
    "DEFAULT_VALIDITY",
    "MAX_REQUEST_SIZE",
    "OCSPResource",
    "ReactorTime",
    "StatusLookup",
    "StatusRecord",
]

StatusRecord = tuple[CertStatus, datetime.datetime | None, x509.ReasonFlags | None]
StatusLookup = Callable[[int], StatusRecord | None]

MAX_REQUEST_SIZE = 64 * 1024
# Short, so that a server holding a "good" answer learns of a revocation within minutes.
DEFAULT_VALIDITY = datetime.timedelta(minutes=5)
_REQUEST_TYPE = b"application/ocsp-request"
_RESPONSE_TYPE = b"application/ocsp-response"
_HASH_NAMES = ("sha1", "sha224", "sha256", "sha384", "sha512")


class _Answer(NamedTuple):
    """A DER OCSP response, with its producedAt and nextUpdate if it is a signed answer."""

    body: bytes
    produced_at: datetime.datetime | None = None
    next_update: datetime.datetime | None = None


class ReactorTime(Protocol):
    """The part of ``IReactorTime`` the responder uses."""

    def seconds(self) -> float:
        """Return the current time, seconds since the epoch."""


class OCSPResource(Resource):
    """Answers OCSP POST and GET (RFC 6960 appendix A) requests about one issuer's certificates."""

    isLeaf = True
    _log = Logger()

    def __init__(
        self,
        issuer: x509.Certificate,
        responder_cert: x509.Certificate,
        responder_key: SigningKey,
        status_of: StatusLookup,
        clock: ReactorTime,
        validity: datetime.timedelta = DEFAULT_VALIDITY,
        max_request_size: int = MAX_REQUEST_SIZE,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self._responder_cert = responder_cert
        self._responder_key = responder_key
        self._status_of = status_of
        self._clock = clock
        self._validity = validity
        self._max_request_size = max_request_size
        # CertID issuer hashes per algorithm; the serial is irrelevant here.
        self._issuer_ids = {
            name: cert_id_key(issuer, issuer, name)[:2] for name in _HASH_NAMES
        }

    def render_POST(self, request: Request) -> bytes:
        """Answer the DER request in the body."""
        content_type = request.getHeader(b"content-type")
        if content_type is not None and \
                content_type.split(b";")[0].strip().lower() != _REQUEST_TYPE:
            request.setResponseCode(415)
            return b""
        assert request.content is not None
        body = request.content.read(self._max_request_size + 1)
        if len(body) > self._max_request_size:
            request.setResponseCode(413)
            return b""
        request.responseHeaders.setRawHeaders(b"content-type", [_RESPONSE_TYPE])
        return self._answer(body).body

    def render_GET(self, request: Request) -> bytes:
        """Answer the base64, URL-encoded DER request that forms the rest of the path."""
        # Site has unquoted each segment already; again is harmless, base64 has no "%".
        encoded = unquote_to_bytes(b"/".join(request.postpath or []))
        if len(encoded) > self._max_request_size * 2:
            request.setResponseCode(414)
            return b""
        try:
            body = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            body = b""
        answer = self._answer(body)
        headers = request.responseHeaders
        headers.setRawHeaders(b"content-type", [_RESPONSE_TYPE])
        if answer.produced_at is None or answer.next_update is None:
            headers.setRawHeaders(b"cache-control", [b"no-store"])
            return answer.body
        # RFC 5019 section 6.2: HTTP caches may keep a signed answer until its nextUpdate.
        expires = answer.next_update.timestamp()
        max_age = max(0, int(expires - self._clock.seconds()))
        headers.setRawHeaders(b"cache-control", [
            f"max-age={max_age}, public, no-transform, must-revalidate".encode()])
        headers.setRawHeaders(b"expires", [datetimeToString(expires)])
        headers.setRawHeaders(b"last-modified",
                              [datetimeToString(answer.produced_at.timestamp())])
        headers.setRawHeaders(b"etag", [b'"' + hashlib.sha256(answer.body).hexdigest().encode()
                                        + b'"'])
        return answer.body

    def respond(self, request_der: bytes) -> bytes:
        """Return the DER response to the DER ``request_der``."""
        return self._answer(request_der).body

    def _answer(self, request_der: bytes) -> _Answer:
        """The response to ``request_der``, with the times an HTTP cache needs."""
        try:
            request = ocsp.load_der_ocsp_request(request_der)
            nonce = _nonce_of(request)
            serial = request.serial_number
            issuer_hashes = (request.issuer_name_hash, request.issuer_key_hash)
        except Exception as e:  # ValueError, DuplicateExtension, NotImplementedError, ...
            self._log.info("malformed OCSP request: {error}", error=f"{e.__class__.__name__}: {e}")
            return _Answer(build_unsuccessful(ocsp.OCSPResponseStatus.MALFORMED_REQUEST))
        try:
            algorithm = request.hash_algorithm.name
        except UnsupportedAlgorithm:
            algorithm = "unsupported"
        if self._issuer_ids.get(algorithm) != issuer_hashes:
            return _Answer(build_unsuccessful(ocsp.OCSPResponseStatus.UNAUTHORIZED))
        try:
            return self._sign(CertID(*issuer_hashes, serial, algorithm), nonce)
        except Exception:
            self._log.failure("OCSP status lookup for serial {serial:#x} failed", serial=serial)
            return _Answer(build_unsuccessful(ocsp.OCSPResponseStatus.INTERNAL_ERROR))

    def _sign(self, cert_id: CertID, nonce: bytes | None) -> _Answer:
        now = datetime.datetime.fromtimestamp(int(self._clock.seconds()), datetime.UTC)
        record = self._status_of(cert_id.serial_number)
        status, revoked_at, reason = record or (CertStatus.UNKNOWN, None, None)
        next_update = now + self._validity
        single = SingleStatus(cert_id, status, now, next_update,
                              revoked_at if status is CertStatus.REVOKED else None,
                              reason if status is CertStatus.REVOKED else None)
        body = build_response(
            [single],
            self._responder_cert,
            self._responder_key,
            produced_at=now,
            nonce=nonce,
            certificates=[self._responder_cert],
        )
        return _Answer(body, now, next_update)


def _nonce_of(request: ocsp.OCSPRequest) -> bytes | None:
    """Return the request's nonce; raise ValueError for one RFC 8954 forbids."""
    try:
        nonce = request.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce
    except x509.ExtensionNotFound:
        return None
    if not 1 <= len(nonce) <= MAX_NONCE_LENGTH:
        raise ValueError(f"nonce of {len(nonce)} bytes")
    return nonce
