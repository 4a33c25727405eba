"""
EST re-enrollment (RFC 7030) for the development PKI: ``cacerts`` and ``simplereenroll``.

``Enrollment`` decides (no HTTP, no TLS: the tests call it directly); ``est_tree`` serves it
under ``/.well-known/est/`` behind certsrv's gate: ``cacerts`` is public, ``simplereenroll``
needs the client certificate being renewed, verified, unexpired and not revoked by the
index before the request reaches ``Enrollment``. Bodies are base64 DER both ways (RFC 7030
section 4, RFC 8951).
"""

from __future__ import annotations

import base64
import collections
import datetime
import hashlib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.hazmat.primitives.serialization import pkcs7
from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web import http, resource, server

from certsrv.exceptions import EnrollmentReason, EnrollmentRefused, PKIError
from certsrv.pki import CertifiablePublicKey, fingerprint
from certsrv.pki.index import serial_hex
from certsrv.pki.indexsource import Offload, inline
from certsrv.pki.store import PKIStore
from certsrv.web.gate import protect
from certsrv.web.site import identity_of, refuse

__all__ = [
    "CERTS_ONLY",
    "DEFAULT_MAX_RENEWALS",
    "MAX_CSR_BYTES",
    "PKCS7_TYPE",
    "PKCS10_TYPE",
    "Answer",
    "Enrollment",
    "STATUS",
    "certs_only",
    "est_tree",
    "read_request",
]

PKCS10_TYPE = b"application/pkcs10"
PKCS7_TYPE = b"application/pkcs7-mime"
CERTS_ONLY = PKCS7_TYPE + b"; smime-type=certs-only"
# A P-256 or RSA-4096 CSR in base64 is 0.5-2 KiB; the site's body limit is this too.
MAX_CSR_BYTES = 16 * 1024
DEFAULT_MAX_RENEWALS = 3
RENEWAL_WINDOW = 3600.0
_MIN_RSA_BITS = 2048
_log = Logger(namespace="certsrv.est")


# The HTTP status of each refusal: the request's fault (400, 413, 415), the certificate's
# (403), the hourly limit (429, with Retry-After), the CA's (500).
STATUS: dict[EnrollmentReason, int] = {
    EnrollmentReason.WRONG_CONTENT_TYPE: http.UNSUPPORTED_MEDIA_TYPE,
    EnrollmentReason.BODY_TOO_LARGE: http.REQUEST_ENTITY_TOO_LARGE,
    EnrollmentReason.BAD_CSR: http.BAD_REQUEST,
    EnrollmentReason.BAD_CSR_SIGNATURE: http.BAD_REQUEST,
    EnrollmentReason.UNSUPPORTED_KEY: http.BAD_REQUEST,
    EnrollmentReason.SUBJECT_MISMATCH: http.BAD_REQUEST,
    EnrollmentReason.SAN_MISMATCH: http.BAD_REQUEST,
    EnrollmentReason.KEY_REUSED: http.BAD_REQUEST,
    EnrollmentReason.UNKNOWN_CERTIFICATE: http.FORBIDDEN,
    EnrollmentReason.SUPERSEDED: http.FORBIDDEN,
    EnrollmentReason.REVOKED: http.FORBIDDEN,
    EnrollmentReason.TOO_MANY_RENEWALS: 429,
    EnrollmentReason.NOT_ISSUED: http.INTERNAL_SERVER_ERROR,
}


@dataclass(frozen=True)
class Answer:
    """The outcome of a re-enrollment: the new certificate, or a refusal (and Retry-After)."""

    certificate: x509.Certificate | None = None
    refusal: EnrollmentReason | None = None
    detail: str = ""
    retry_after: int | None = None
    headers: dict[bytes, bytes] = field(default_factory=dict)


def certs_only(certificates: list[x509.Certificate]) -> bytes:
    """A base64 (76-column lines) degenerate PKCS#7 SignedData holding ``certificates``."""
    der = pkcs7.serialize_certificates(certificates, serialization.Encoding.DER)
    return base64.encodebytes(der)


def _key_sha256(public_key: CertificatePublicKeyTypes) -> str:
    return hashlib.sha256(public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)).hexdigest()


def _sans(extensions: x509.Extensions) -> frozenset[x509.GeneralName]:
    try:
        names = extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return frozenset()
    return frozenset(names)


_Names = tuple[x509.Name, frozenset[x509.GeneralName]]


def _names(certificate: x509.Certificate) -> _Names:
    """What every renewal of ``certificate`` keeps: its subject and SANs."""
    return certificate.subject, _sans(certificate.extensions)


def _media_type(content_type: bytes | None) -> bytes:
    return (content_type or b"").split(b";")[0].strip().lower()


class Enrollment:
    """Re-enrolls client certificates of ``store`` (RFC 7030 simplereenroll), at most
    ``max_renewals`` times per subject and SANs per hour, with the validity of the certificate
    renewed (or ``validity``). What needs the disk (the index, issuing) runs in ``offload``
    (a thread pool in the service); everything else in the caller's thread."""

    def __init__(self, store: PKIStore, clock: IReactorTime, *,
                 max_renewals: int = DEFAULT_MAX_RENEWALS,
                 validity: datetime.timedelta | None = None, offload: Offload = inline) -> None:
        self.store = store
        self.ca_certificate = store.ca.certificate
        self.clock = clock
        self.max_renewals = max_renewals
        self.validity = validity
        self.offload = offload
        # Counted by name, not by serial: each successor's fresh count would let a client
        # renew its renewals without end.
        self._renewals: dict[_Names, collections.deque[float]] = {}

    def cacerts(self) -> bytes:
        """The CA certificates (the explicit trust anchor), base64 PKCS#7 certs-only."""
        return certs_only([self.ca_certificate])

    def reenroll(self, current: x509.Certificate, content_type: bytes | None,
                 body: bytes) -> defer.Deferred[Answer]:
        """Certify the new key in ``body`` for the holder of ``current``, or say why not."""
        csr = read_request(content_type, body)
        if isinstance(csr, Answer):
            return defer.succeed(csr)
        problem = _compare(current, csr) or self._rate(_names(current))
        if problem is not None:
            return defer.succeed(problem)
        public_key = csr.public_key()
        assert isinstance(public_key, CertifiablePublicKey)
        stamp = self.clock.seconds()
        self._renewals.setdefault(_names(current), collections.deque()).append(stamp)
        now = datetime.datetime.fromtimestamp(stamp, datetime.UTC)
        path, validity = self.store.path, self.validity
        issuing = self.offload(lambda: _issue(path, current, public_key, validity, now))
        return issuing.addCallback(self._issued, current, stamp)

    def _issued(self, answer: Answer, current: x509.Certificate, stamp: float) -> Answer:
        """Log the new certificate; a refusal gives its renewal back to the hourly count."""
        new = answer.certificate
        if new is None:
            recent = self._renewals.get(_names(current))
            if recent is not None and stamp in recent:
                recent.remove(stamp)
            if answer.refusal is EnrollmentReason.NOT_ISSUED:
                _log.error("EST re-enrollment of serial {serial} failed: {error}",
                           serial=serial_hex(current.serial_number), error=answer.detail,
                           reason="not_issued")
            return answer
        _log.info("EST re-enrollment: issued serial {new} for {subject} (was {old}), "
                  "valid until {not_after}", new=serial_hex(new.serial_number),
                  old=serial_hex(current.serial_number), subject=current.subject.rfc4514_string(),
                  not_after=new.not_valid_after_utc.isoformat(), reason="reenrolled",
                  decision="accepted")
        return answer

    def _rate(self, names: _Names) -> Answer | None:
        """A refusal with Retry-After if ``names`` were renewed ``max_renewals`` times within
        the last hour, else None."""
        now = self.clock.seconds()
        recent = self._renewals.get(names)
        if recent is None:
            return None
        while recent and recent[0] <= now - RENEWAL_WINDOW:
            recent.popleft()
        if not recent:
            del self._renewals[names]
            return None
        if len(recent) < self.max_renewals:
            return None
        # Rounded first: a float clock would turn 3420.0000001 s into 3421.
        wait = max(1, math.ceil(round(recent[0] + RENEWAL_WINDOW - now, 3)))
        return Answer(refusal=EnrollmentReason.TOO_MANY_RENEWALS, retry_after=wait,
                      detail=f"{len(recent)} renewals in the last hour; retry in {wait} s")


def read_request(content_type: bytes | None, body: bytes
                 ) -> x509.CertificateSigningRequest | Answer:
    """The request in ``body``, checked for type, size, signature and key; or a refusal."""
    if _media_type(content_type) != PKCS10_TYPE:
        return Answer(refusal=EnrollmentReason.WRONG_CONTENT_TYPE,
                      detail=f"Content-Type {_media_type(content_type).decode('latin-1')!r}")
    if len(body) > MAX_CSR_BYTES:
        return Answer(refusal=EnrollmentReason.BODY_TOO_LARGE, detail=f"{len(body)} bytes")
    csr = _parse(body)
    if isinstance(csr, Answer):
        return csr
    public_key = csr.public_key()
    if not _certifiable(public_key):
        return Answer(refusal=EnrollmentReason.UNSUPPORTED_KEY, detail=type(public_key).__name__)
    return csr


def _compare(current: x509.Certificate, csr: x509.CertificateSigningRequest) -> Answer | None:
    """A refusal if ``csr`` names other names than ``current`` or keeps its key."""
    if csr.subject != current.subject:
        return Answer(refusal=EnrollmentReason.SUBJECT_MISMATCH,
                      detail=f"{csr.subject.rfc4514_string()!r}, not "
                             f"{current.subject.rfc4514_string()!r}")
    if _sans(csr.extensions) != _sans(current.extensions):
        return Answer(refusal=EnrollmentReason.SAN_MISMATCH)
    if _key_sha256(csr.public_key()) == _key_sha256(current.public_key()):
        return Answer(refusal=EnrollmentReason.KEY_REUSED, detail="the current certificate's key")
    return None


def _issue(path: Path, current: x509.Certificate, public_key: CertifiablePublicKey,
           validity: datetime.timedelta | None, now: datetime.datetime) -> Answer:
    """Check ``current`` and the key against the index and issue (blocking: off the reactor)."""
    try:
        store = PKIStore.open(path)
        entry = store.entry_of(current.serial_number)
        if entry is None or entry.fingerprint != fingerprint(current):
            return Answer(refusal=EnrollmentReason.UNKNOWN_CERTIFICATE,
                          detail=f"serial {serial_hex(current.serial_number)}")
        _, certificate = store.reenroll(current.serial_number, public_key, validity=validity,
                                        now=now)
    except EnrollmentRefused as e:
        return Answer(refusal=e.reason, detail=e.detail)
    except (PKIError, ValueError, OSError) as e:
        return Answer(refusal=EnrollmentReason.NOT_ISSUED, detail=str(e))
    return Answer(certificate=certificate)


def _certifiable(public_key: object) -> bool:
    if isinstance(public_key, rsa.RSAPublicKey):
        return public_key.key_size >= _MIN_RSA_BITS
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        return isinstance(public_key.curve, ec.SECP256R1 | ec.SECP384R1 | ec.SECP521R1)
    return isinstance(public_key, CertifiablePublicKey)


def _parse(body: bytes) -> x509.CertificateSigningRequest | Answer:
    """The CSR in a base64 body (line breaks allowed), readable, with a valid self-signature."""
    try:
        der = base64.b64decode(b"".join(body.split()), validate=True)
        csr = x509.load_der_x509_csr(der)
        # Read now what is compared later: a malformed part is a malformed request.
        _ = csr.subject, csr.public_key(), _sans(csr.extensions)
    except Exception as e:  # binascii.Error, ValueError, InvalidVersion, UnsupportedAlgorithm...
        return Answer(refusal=EnrollmentReason.BAD_CSR, detail=f"{type(e).__name__}: {e}"[:200])
    try:
        signed = csr.is_signature_valid
    except Exception as e:  # an algorithm cryptography cannot check
        return Answer(refusal=EnrollmentReason.BAD_CSR_SIGNATURE, detail=str(e)[:200])
    if not signed:
        return Answer(refusal=EnrollmentReason.BAD_CSR_SIGNATURE)
    return csr


def _refused(request: server.Request, answer: Answer, current: x509.Certificate) -> bytes:
    """Log the refusal and answer with its status (and Retry-After)."""
    refusal = answer.refusal
    assert refusal is not None
    _log.warn("EST re-enrollment refused for {subject} (serial {serial}): {sentence}"
              "{detail}", subject=current.subject.rfc4514_string(),
              serial=serial_hex(current.serial_number),
              sentence=refusal.sentence, detail=f" ({answer.detail})" if answer.detail else "",
              reason=refusal.value, status=STATUS[refusal], decision="rejected",
              peer=str(request.getClientAddress()))
    if answer.retry_after is not None:
        request.setHeader(b"retry-after", str(answer.retry_after).encode())
    return refuse(request, refusal.value, refusal.sentence, answer.detail,
                  status=STATUS[refusal])


class _CACerts(resource.Resource):
    """``GET /.well-known/est/cacerts``: the CA certificate, for anyone (RFC 7030 4.1)."""

    isLeaf = True

    def __init__(self, enrollment: Enrollment) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self._enrollment = enrollment

    def render_GET(self, request: server.Request) -> bytes:
        """The CA certificate as base64 PKCS#7 certs-only."""
        request.setHeader(b"content-type", PKCS7_TYPE)
        request.setHeader(b"content-transfer-encoding", b"base64")
        return self._enrollment.cacerts()


class _SimpleReenroll(resource.Resource):
    """``POST /.well-known/est/simplereenroll`` (RFC 7030 4.2.2), behind ``protect``."""

    isLeaf = True

    def __init__(self, enrollment: Enrollment) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self._enrollment = enrollment

    def render_POST(self, request: server.Request) -> Any:
        """The new certificate as base64 PKCS#7 certs-only, or a refusal with its status."""
        identity = identity_of(request)
        current = identity.certificate if identity is not None else None
        if current is None:  # protect() let it through: never without a certificate
            return refuse(request, "no_certificate", "a client certificate is required")
        assert request.content is not None
        body = request.content.read(MAX_CSR_BYTES + 1)
        gone: list[bool] = []
        request.notifyFinish().addErrback(lambda _: gone.append(True))

        def reply(answer: Answer) -> None:
            if not gone:  # else the client went away meanwhile
                body = _reply(request, answer, current)
                request.setHeader(b"content-length", b"%d" % len(body))
                request.write(body)
                request.finish()

        answering = self._enrollment.reenroll(current, request.getHeader(b"content-type"), body)
        answering.addCallback(reply).addErrback(
            lambda failure: None if gone else request.processingFailed(failure))
        return server.NOT_DONE_YET


def _reply(request: server.Request, answer: Answer, current: x509.Certificate) -> bytes:
    if answer.certificate is None:
        return _refused(request, answer, current)
    request.setHeader(b"content-type", CERTS_ONLY)
    request.setHeader(b"content-transfer-encoding", b"base64")
    return certs_only([answer.certificate])


def est_tree(enrollment: Enrollment) -> resource.Resource:
    """``/.well-known/est/cacerts`` (public) and ``/.well-known/est/simplereenroll``
    (client certificate required); serve it behind a ``Gate`` that does not require one."""
    est = resource.Resource()  # type: ignore[no-untyped-call]
    est.putChild(b"cacerts", _CACerts(enrollment))
    est.putChild(b"simplereenroll", protect(_SimpleReenroll(enrollment)))
    well_known = resource.Resource()  # type: ignore[no-untyped-call]
    well_known.putChild(b"est", est)
    root = resource.Resource()  # type: ignore[no-untyped-call]
    root.putChild(b".well-known", well_known)
    return root
