"""
OCSP (RFC 6960) requests, responses and their verification; pure: no I/O, time is a parameter.

``cryptography.x509.ocsp`` parses responses but verifies nothing: a forged, wrongly delegated
or tampered response parses as SUCCESSFUL/GOOD. Everything that makes a response trustworthy
(signer, signature, CertID, freshness, nonce) is checked here.
"""

from __future__ import annotations

import datetime
import enum
import hmac
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, NamedTuple

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID, OCSPExtensionOID, SignatureAlgorithmOID

from certsrv.exceptions import OCSPError, RevocationProblem

__all__ = [
    "MAX_NONCE_LENGTH",
    "CertID",
    "CertStatus",
    "NoncePolicy",
    "OCSPStatus",
    "SigningKey",
    "SingleStatus",
    "build_request",
    "build_response",
    "build_unsuccessful",
    "cert_id_key",
    "new_nonce",
    "verify_response",
]

NoncePolicy = Literal["off", "prefer", "require"]
SigningKey = (
    ec.EllipticCurvePrivateKey
    | rsa.RSAPrivateKey
    | ed25519.Ed25519PrivateKey
    | ed448.Ed448PrivateKey
)
_PublicKey = (
    ec.EllipticCurvePublicKey | rsa.RSAPublicKey | ed25519.Ed25519PublicKey | ed448.Ed448PublicKey
)

MAX_NONCE_LENGTH = 32  # RFC 8954
_NONCE_LENGTH = 16

_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "sha1": hashes.SHA1,
    "sha224": hashes.SHA224,
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}
# SHA-1 is fine for CertID hashes (RFC 6960 requires it) but not for signatures.
_SIGNATURE_HASHES = frozenset(("sha224", "sha256", "sha384", "sha512"))
_HASH_OIDS = {
    "sha1": "1.3.14.3.2.26",
    "sha224": "2.16.840.1.101.3.4.2.4",
    "sha256": "2.16.840.1.101.3.4.2.1",
    "sha384": "2.16.840.1.101.3.4.2.2",
    "sha512": "2.16.840.1.101.3.4.2.3",
}
_MGF1_OID = "1.2.840.113549.1.1.8"
_BASIC_RESPONSE_OID = "1.3.6.1.5.5.7.48.1.1"
_NONCE_OID = OCSPExtensionOID.NONCE.dotted_string
_RSA_SIGNATURES = {
    "sha1": SignatureAlgorithmOID.RSA_WITH_SHA1,
    "sha224": SignatureAlgorithmOID.RSA_WITH_SHA224,
    "sha256": SignatureAlgorithmOID.RSA_WITH_SHA256,
    "sha384": SignatureAlgorithmOID.RSA_WITH_SHA384,
    "sha512": SignatureAlgorithmOID.RSA_WITH_SHA512,
}
_ECDSA_SIGNATURES = {
    "sha1": SignatureAlgorithmOID.ECDSA_WITH_SHA1,
    "sha224": SignatureAlgorithmOID.ECDSA_WITH_SHA224,
    "sha256": SignatureAlgorithmOID.ECDSA_WITH_SHA256,
    "sha384": SignatureAlgorithmOID.ECDSA_WITH_SHA384,
    "sha512": SignatureAlgorithmOID.ECDSA_WITH_SHA512,
}
_CRL_REASONS = {
    x509.ReasonFlags.unspecified: 0,
    x509.ReasonFlags.key_compromise: 1,
    x509.ReasonFlags.ca_compromise: 2,
    x509.ReasonFlags.affiliation_changed: 3,
    x509.ReasonFlags.superseded: 4,
    x509.ReasonFlags.cessation_of_operation: 5,
    x509.ReasonFlags.certificate_hold: 6,
    x509.ReasonFlags.remove_from_crl: 8,
    x509.ReasonFlags.privilege_withdrawn: 9,
    x509.ReasonFlags.aa_compromise: 10,
}

_SEQUENCE = 0x30


class CertStatus(enum.StrEnum):
    """A certificate's status as the responder states it."""

    GOOD = "good"
    REVOKED = "revoked"
    UNKNOWN = "unknown"


_FROM_OCSP = {
    ocsp.OCSPCertStatus.GOOD: CertStatus.GOOD,
    ocsp.OCSPCertStatus.REVOKED: CertStatus.REVOKED,
    ocsp.OCSPCertStatus.UNKNOWN: CertStatus.UNKNOWN,
}


class CertID(NamedTuple):
    """An OCSP CertID; hashable, so usable as a cache key."""

    issuer_name_hash: bytes
    issuer_key_hash: bytes
    serial_number: int
    hash_algorithm: str = "sha1"


@dataclass(frozen=True)
class OCSPStatus:
    """What a verified OCSP response says about one certificate."""

    status: CertStatus
    this_update: datetime.datetime
    next_update: datetime.datetime | None
    revocation_time: datetime.datetime | None
    revocation_reason: x509.ReasonFlags | None
    produced_at: datetime.datetime


@dataclass(frozen=True)
class SingleStatus:
    """One SingleResponse to put in a response built by ``build_response``."""

    cert_id: CertID
    status: CertStatus
    this_update: datetime.datetime
    next_update: datetime.datetime | None
    revocation_time: datetime.datetime | None = None
    revocation_reason: x509.ReasonFlags | None = None


def new_nonce() -> bytes:
    """Return a fresh random 16-byte nonce."""
    return os.urandom(_NONCE_LENGTH)


def cert_id_key(
    cert: x509.Certificate, issuer: x509.Certificate, hash_algorithm: str = "sha1"
) -> CertID:
    """Return the CertID of ``cert`` issued by ``issuer`` (SHA-1 unless told otherwise)."""
    algorithm = _hash(hash_algorithm)
    return CertID(
        _digest(algorithm, issuer.subject.public_bytes()),
        _digest(algorithm, _public_key_bits(issuer)),
        cert.serial_number,
        algorithm.name,
    )


def build_request(cert: x509.Certificate, issuer: x509.Certificate, nonce: bytes | None) -> bytes:
    """Return a DER OCSP request for ``cert`` with a SHA-1 CertID, carrying ``nonce`` if given."""
    builder = ocsp.OCSPRequestBuilder().add_certificate(cert, issuer, hashes.SHA1())
    if nonce is not None:
        if not 1 <= len(nonce) <= MAX_NONCE_LENGTH:
            raise ValueError(f"a nonce has 1 to {MAX_NONCE_LENGTH} bytes, not {len(nonce)}")
        builder = builder.add_extension(x509.OCSPNonce(nonce), critical=False)
    return builder.build().public_bytes(serialization.Encoding.DER)


def verify_response(
    der: bytes,
    cert: x509.Certificate,
    issuer: x509.Certificate,
    *,
    now: datetime.datetime,
    nonce: bytes | None,
    nonce_policy: NoncePolicy = "prefer",
    skew: datetime.timedelta = datetime.timedelta(minutes=5),
    default_validity: datetime.timedelta = datetime.timedelta(hours=1),
) -> OCSPStatus:
    """Return what the DER response says about ``cert``; raise OCSPError if it is not trusted."""
    if now.tzinfo is None:
        raise ValueError("now must be an aware datetime")
    if nonce_policy == "require" and nonce is None:
        raise ValueError("nonce_policy 'require' needs the nonce that was sent")
    response = _load(der)
    try:
        signer = _signer_key(response, issuer, now, skew)
        _check_signature(response, der, signer)
        _check_extensions(response)
        single = _single_for(response, cert_id_key(cert, issuer))
        this_update = single.this_update_utc
        next_update = single.next_update_utc
        status = OCSPStatus(
            _FROM_OCSP[single.certificate_status],
            this_update,
            next_update,
            single.revocation_time_utc,
            single.revocation_reason,
            response.produced_at_utc,
        )
        received_nonce = _nonce_of(response)
    except OCSPError:
        raise
    except Exception as e:  # ValueError, TypeError, DuplicateExtension, UnsupportedAlgorithm...
        raise OCSPError(RevocationProblem.MALFORMED, f"{e.__class__.__name__}: {e}") from e
    _check_freshness(this_update, next_update, now, skew, default_validity)
    _check_nonce(received_nonce, nonce, nonce_policy)
    return status


def build_response(
    statuses: Sequence[SingleStatus],
    responder_cert: x509.Certificate,
    responder_key: SigningKey,
    *,
    produced_at: datetime.datetime,
    nonce: bytes | None = None,
    certificates: Sequence[x509.Certificate] = (),
    responder_id: Literal["key", "name"] = "key",
    hash_algorithm: str = "sha256",
    rsa_pss: bool = False,
) -> bytes:
    """Return a SUCCESSFUL response of ``statuses``, signed as told and checking nothing."""
    # Nothing is checked (key against certificate, CertID, hash strength) so that tests can
    # forge. Encoded by hand: cryptography's builder takes one SingleResponse, insists that
    # the key matches the responder certificate, stamps producedAt with the wall clock, and
    # cannot sign with RSA-PSS.
    if not statuses:
        raise ValueError("a response needs at least one SingleStatus")
    algorithm = _hash(hash_algorithm)
    if responder_id == "key":
        responder = _tlv(0xA2, _tlv(0x04, _digest(hashes.SHA1(), _public_key_bits(responder_cert))))
    else:
        responder = _tlv(0xA1, responder_cert.subject.public_bytes())
    fields = (
        responder
        + _generalized_time(produced_at)
        + _tlv(_SEQUENCE, b"".join(_single_response(status) for status in statuses))
    )
    if nonce is not None:
        extension = _tlv(_SEQUENCE, _oid_tlv(_NONCE_OID) + _tlv(0x04, _tlv(0x04, nonce)))
        fields += _tlv(0xA1, _tlv(_SEQUENCE, extension))
    tbs = _tlv(_SEQUENCE, fields)
    basic = tbs + _signature_algorithm_id(responder_key, algorithm, rsa_pss)
    basic += _tlv(0x03, b"\x00" + _sign(responder_key, tbs, algorithm, rsa_pss))
    if certificates:
        ders = b"".join(c.public_bytes(serialization.Encoding.DER) for c in certificates)
        basic += _tlv(0xA0, _tlv(_SEQUENCE, ders))
    response_bytes = _tlv(_SEQUENCE, _oid_tlv(_BASIC_RESPONSE_OID)
                          + _tlv(0x04, _tlv(_SEQUENCE, basic)))
    return _tlv(_SEQUENCE, _tlv(0x0A, b"\x00") + _tlv(0xA0, response_bytes))


def build_unsuccessful(status: ocsp.OCSPResponseStatus) -> bytes:
    """Return the DER of a response with only the (non-successful) ``status``."""
    response = ocsp.OCSPResponseBuilder.build_unsuccessful(status)
    return response.public_bytes(serialization.Encoding.DER)


# -- verification ---------------------------------------------------------------------------


def _load(der: bytes) -> ocsp.OCSPResponse:
    try:
        response = ocsp.load_der_ocsp_response(der)
    except Exception as e:
        raise OCSPError(RevocationProblem.MALFORMED, f"not an OCSP response: {e}") from e
    if response.response_status is not ocsp.OCSPResponseStatus.SUCCESSFUL:
        raise OCSPError(RevocationProblem.UNSUCCESSFUL,
                        f"response status {response.response_status.name}")
    return response


def _signer_key(
    response: ocsp.OCSPResponse,
    issuer: x509.Certificate,
    now: datetime.datetime,
    skew: datetime.timedelta,
) -> _PublicKey:
    if _is_responder(response, issuer):
        return _usable_key(issuer)
    candidates = [c for c in response.certificates if _is_responder(response, c)]
    if not candidates:
        raise OCSPError(RevocationProblem.UNAUTHORIZED_SIGNER,
                        "the responder is neither the issuer nor an included certificate")
    first_error: OCSPError | None = None
    for candidate in candidates:
        try:
            _check_delegate(candidate, issuer, now, skew)
            return _usable_key(candidate)
        except OCSPError as e:
            first_error = first_error or e
    assert first_error is not None
    raise first_error


def _is_responder(response: ocsp.OCSPResponse, cert: x509.Certificate) -> bool:
    name = response.responder_name
    if name is not None:
        return name == cert.subject
    key_hash = response.responder_key_hash
    return key_hash is not None and hmac.compare_digest(
        key_hash, _digest(hashes.SHA1(), _public_key_bits(cert))
    )


def _check_delegate(
    responder: x509.Certificate,
    issuer: x509.Certificate,
    now: datetime.datetime,
    skew: datetime.timedelta,
) -> None:
    subject = responder.subject.rfc4514_string()
    try:
        responder.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm) as e:
        raise OCSPError(RevocationProblem.UNAUTHORIZED_SIGNER,
                        f"responder {subject} is not issued by the certificate's issuer") from e
    try:
        usages = responder.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        usages = x509.ExtendedKeyUsage([])
    if ExtendedKeyUsageOID.OCSP_SIGNING not in usages:
        raise OCSPError(RevocationProblem.UNAUTHORIZED_SIGNER,
                        f"responder {subject} lacks id-kp-OCSPSigning")
    try:
        key_usage = responder.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        pass
    else:
        if not key_usage.digital_signature:
            raise OCSPError(RevocationProblem.UNAUTHORIZED_SIGNER,
                            f"responder {subject} key usage lacks digitalSignature")
    if not responder.not_valid_before_utc - skew <= now <= responder.not_valid_after_utc + skew:
        raise OCSPError(
            RevocationProblem.SIGNER_NOT_VALID,
            f"responder {subject} is valid from {responder.not_valid_before_utc.isoformat()} "
            f"to {responder.not_valid_after_utc.isoformat()}, not at {now.isoformat()}",
        )


def _usable_key(cert: x509.Certificate) -> _PublicKey:
    key = cert.public_key()
    if not isinstance(key, _PublicKey):
        raise OCSPError(RevocationProblem.BAD_SIGNATURE,
                        f"unsupported signer key {type(key).__name__}")
    return key


def _check_signature(response: ocsp.OCSPResponse, der: bytes, key: _PublicKey) -> None:
    oid = response.signature_algorithm_oid
    tbs = response.tbs_response_bytes
    signature = response.signature
    try:
        if isinstance(key, rsa.RSAPublicKey) and oid == SignatureAlgorithmOID.RSASSA_PSS:
            algorithm, pss = _pss_parameters(der)
            key.verify(signature, tbs, pss, algorithm)
        elif isinstance(key, rsa.RSAPublicKey) and oid in _RSA_SIGNATURES.values():
            key.verify(signature, tbs, padding.PKCS1v15(), _signature_hash(response))
        elif isinstance(key, ec.EllipticCurvePublicKey) and oid in _ECDSA_SIGNATURES.values():
            key.verify(signature, tbs, ec.ECDSA(_signature_hash(response)))
        elif isinstance(key, ed25519.Ed25519PublicKey) and oid == SignatureAlgorithmOID.ED25519:
            key.verify(signature, tbs)
        elif isinstance(key, ed448.Ed448PublicKey) and oid == SignatureAlgorithmOID.ED448:
            key.verify(signature, tbs)
        else:
            raise OCSPError(
                RevocationProblem.BAD_SIGNATURE,
                f"signature algorithm {oid.dotted_string} is not accepted for a "
                f"{type(key).__name__}",
            )
    except InvalidSignature as e:
        raise OCSPError(RevocationProblem.BAD_SIGNATURE,
                        "the response signature does not verify") from e


def _signature_hash(response: ocsp.OCSPResponse) -> hashes.HashAlgorithm:
    try:
        algorithm = response.signature_hash_algorithm
    except UnsupportedAlgorithm as e:
        raise OCSPError(RevocationProblem.BAD_SIGNATURE, str(e)) from e
    if algorithm is None or algorithm.name not in _SIGNATURE_HASHES:
        raise OCSPError(RevocationProblem.BAD_SIGNATURE,
                        "the signature hash is missing or too weak")
    return algorithm


def _pss_parameters(der: bytes) -> tuple[hashes.HashAlgorithm, padding.PSS]:
    """Return the hash and padding named by the RSASSA-PSS-params of the response signature."""
    try:
        _status, wrapped = _children(_one(der).content)
        _type, basic_octets = _children(_one(wrapped.content).content)
        algorithm_id = _children(_one(basic_octets.content).content)[1]
        _oid, params = _children(algorithm_id.content)
        if params.tag != _SEQUENCE:
            raise ValueError("RSASSA-PSS parameters are not a SEQUENCE")
        algorithm: hashes.HashAlgorithm = hashes.SHA1()
        mgf_algorithm: hashes.HashAlgorithm = hashes.SHA1()
        salt_length = 20
        for field in _children(params.content):
            if field.tag == 0xA0:
                algorithm = _hash_from_algorithm_id(field.content)
            elif field.tag == 0xA1:
                mgf_oid, mgf_params = _children(_one(field.content).content)
                if mgf_oid.raw != _oid_tlv(_MGF1_OID):
                    raise ValueError("mask generation function is not MGF1")
                mgf_algorithm = _hash_from_algorithm_id(mgf_params.raw)
            elif field.tag == 0xA2:
                salt_length = _integer(_one(field.content))
            elif field.tag == 0xA3:
                if _integer(_one(field.content)) != 1:
                    raise ValueError("RSASSA-PSS trailer field is not 1")
            else:
                raise ValueError(f"unexpected RSASSA-PSS field {field.tag:#x}")
    except ValueError as e:
        raise OCSPError(RevocationProblem.BAD_SIGNATURE,
                        f"unusable RSASSA-PSS parameters: {e}") from e
    if algorithm.name not in _SIGNATURE_HASHES or mgf_algorithm.name not in _SIGNATURE_HASHES:
        raise OCSPError(RevocationProblem.BAD_SIGNATURE, "the RSASSA-PSS hash is too weak")
    if salt_length < 0:
        raise OCSPError(RevocationProblem.BAD_SIGNATURE, "negative RSASSA-PSS salt length")
    return algorithm, padding.PSS(padding.MGF1(mgf_algorithm), salt_length)


def _hash_from_algorithm_id(der: bytes) -> hashes.HashAlgorithm:
    fields = _children(_one(der).content)
    for name, dotted in _HASH_OIDS.items():
        if fields and fields[0].raw == _oid_tlv(dotted):
            return _HASHES[name]()
    raise ValueError("unknown hash algorithm")


def _check_extensions(response: ocsp.OCSPResponse) -> None:
    for extension in response.extensions:
        if extension.critical and extension.oid != OCSPExtensionOID.NONCE:
            raise ValueError(f"unrecognised critical extension {extension.oid.dotted_string}")


def _single_for(response: ocsp.OCSPResponse, wanted: CertID) -> ocsp.OCSPSingleResponse:
    matches = []
    for single in response.responses:
        try:
            algorithm = single.hash_algorithm.name
        except UnsupportedAlgorithm:
            continue
        found = CertID(single.issuer_name_hash, single.issuer_key_hash, single.serial_number,
                       algorithm)
        if found == wanted:
            matches.append(single)
    if len(matches) != 1:
        raise OCSPError(
            RevocationProblem.CERT_ID_MISMATCH,
            f"{len(matches)} single responses match serial {wanted.serial_number:#x}",
        )
    return matches[0]


def _check_freshness(
    this_update: datetime.datetime,
    next_update: datetime.datetime | None,
    now: datetime.datetime,
    skew: datetime.timedelta,
    default_validity: datetime.timedelta,
) -> None:
    if this_update > now + skew:
        raise OCSPError(RevocationProblem.NOT_YET_VALID,
                        f"thisUpdate {this_update.isoformat()} is in the future")
    if next_update is not None:
        if next_update < now - skew:
            raise OCSPError(RevocationProblem.STALE,
                            f"nextUpdate {next_update.isoformat()} has passed")
    elif this_update < now - default_validity - skew:
        raise OCSPError(RevocationProblem.STALE,
                        f"thisUpdate {this_update.isoformat()} is too old and "
                        "there is no nextUpdate")


def _nonce_of(response: ocsp.OCSPResponse) -> bytes | None:
    try:
        return response.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce
    except x509.ExtensionNotFound:
        return None


def _check_nonce(received: bytes | None, sent: bytes | None, policy: NoncePolicy) -> None:
    if policy == "off":
        return
    if received is None:
        if policy == "require":
            raise OCSPError(RevocationProblem.NONCE_MISSING, "the response carries no nonce")
        return
    # Under "prefer" with no nonce sent there is nothing to compare a returned one with.
    if sent is not None and not hmac.compare_digest(received, sent):
        raise OCSPError(RevocationProblem.NONCE_MISMATCH, "the response nonce is not the one sent")


# -- building -------------------------------------------------------------------------------


def _single_response(status: SingleStatus) -> bytes:
    cert_id = status.cert_id
    body = _tlv(
        _SEQUENCE,
        _tlv(_SEQUENCE, _oid_tlv(_HASH_OIDS[_hash(cert_id.hash_algorithm).name]) + b"\x05\x00")
        + _tlv(0x04, cert_id.issuer_name_hash)
        + _tlv(0x04, cert_id.issuer_key_hash)
        + _integer_tlv(cert_id.serial_number),
    )
    if status.status is CertStatus.GOOD:
        body += b"\x80\x00"
    elif status.status is CertStatus.UNKNOWN:
        body += b"\x82\x00"
    else:
        if status.revocation_time is None:
            raise ValueError("a revoked status needs a revocation_time")
        info = _generalized_time(status.revocation_time)
        if status.revocation_reason is not None:
            reason = _CRL_REASONS[status.revocation_reason]
            info += _tlv(0xA0, _tlv(0x0A, bytes((reason,))))
        body += _tlv(0xA1, info)
    body += _generalized_time(status.this_update)
    if status.next_update is not None:
        body += _tlv(0xA0, _generalized_time(status.next_update))
    return _tlv(_SEQUENCE, body)


def _signature_algorithm_id(
    key: SigningKey, algorithm: hashes.HashAlgorithm, rsa_pss: bool
) -> bytes:
    if rsa_pss:
        if not isinstance(key, rsa.RSAPrivateKey):
            raise ValueError("rsa_pss needs an RSA key")
        return _pss_algorithm_id(algorithm)
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return _tlv(_SEQUENCE, _oid_tlv(SignatureAlgorithmOID.ED25519.dotted_string))
    if isinstance(key, ed448.Ed448PrivateKey):
        return _tlv(_SEQUENCE, _oid_tlv(SignatureAlgorithmOID.ED448.dotted_string))
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return _tlv(_SEQUENCE, _oid_tlv(_ECDSA_SIGNATURES[algorithm.name].dotted_string))
    return _tlv(_SEQUENCE, _oid_tlv(_RSA_SIGNATURES[algorithm.name].dotted_string) + b"\x05\x00")


def _sign(key: SigningKey, data: bytes, algorithm: hashes.HashAlgorithm, rsa_pss: bool) -> bytes:
    if isinstance(key, ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey):
        return key.sign(data)
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return key.sign(data, ec.ECDSA(algorithm))
    pad = (padding.PSS(padding.MGF1(algorithm), algorithm.digest_size) if rsa_pss
           else padding.PKCS1v15())
    return key.sign(data, pad, algorithm)


def _pss_algorithm_id(algorithm: hashes.HashAlgorithm) -> bytes:
    hash_id = _tlv(_SEQUENCE, _oid_tlv(_HASH_OIDS[algorithm.name]) + b"\x05\x00")
    params = (
        _tlv(0xA0, hash_id)
        + _tlv(0xA1, _tlv(_SEQUENCE, _oid_tlv(_MGF1_OID) + hash_id))
        + _tlv(0xA2, _integer_tlv(algorithm.digest_size))
    )
    return _tlv(_SEQUENCE, _oid_tlv(SignatureAlgorithmOID.RSASSA_PSS.dotted_string)
                + _tlv(_SEQUENCE, params))


# -- hashing and a little DER ----------------------------------------------------------------


def _hash(name: str) -> hashes.HashAlgorithm:
    try:
        return _HASHES[name]()
    except KeyError:
        raise ValueError(f"unsupported hash algorithm {name!r}") from None


def _digest(algorithm: hashes.HashAlgorithm, data: bytes) -> bytes:
    digest = hashes.Hash(algorithm)
    digest.update(data)
    return digest.finalize()


def _public_key_bits(cert: x509.Certificate) -> bytes:
    """The subjectPublicKey BIT STRING value, which CertID and responder key hashes cover."""
    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    bit_string = _children(_one(spki).content)[1]
    return bit_string.content[1:]


class _TLV(NamedTuple):
    tag: int
    raw: bytes
    content: bytes


def _children(data: bytes) -> list[_TLV]:
    """Split concatenated DER TLVs (single-byte tags, definite lengths)."""
    items = []
    pos = 0
    while pos < len(data):
        if pos + 2 > len(data) or data[pos] & 0x1F == 0x1F:
            raise ValueError("unsupported or truncated DER tag")
        first = data[pos + 1]
        start = pos + 2
        if first < 0x80:
            length = first
        else:
            count = first & 0x7F
            if not 1 <= count <= 4 or start + count > len(data):
                raise ValueError("unsupported DER length")
            length = int.from_bytes(data[start:start + count], "big")
            start += count
        end = start + length
        if end > len(data):
            raise ValueError("truncated DER value")
        items.append(_TLV(data[pos], data[pos:end], data[start:end]))
        pos = end
    return items


def _one(data: bytes) -> _TLV:
    items = _children(data)
    if len(items) != 1:
        raise ValueError(f"expected one DER value, found {len(items)}")
    return items[0]


def _tlv(tag: int, content: bytes) -> bytes:
    length = len(content)
    if length < 0x80:
        return bytes((tag, length)) + content
    size = (length.bit_length() + 7) // 8
    return bytes((tag, 0x80 | size)) + length.to_bytes(size, "big") + content


def _integer(item: _TLV) -> int:
    if item.tag != 0x02 or not item.content:
        raise ValueError("expected an INTEGER")
    return int.from_bytes(item.content, "big", signed=True)


def _integer_tlv(value: int) -> bytes:
    # Minimal two's complement: -128 is 0x80, not 0xff80; 128 is 0x0080.
    bits = value.bit_length() if value >= 0 else (~value).bit_length()
    return _tlv(0x02, value.to_bytes(bits // 8 + 1, "big", signed=True))


def _oid_tlv(dotted: str) -> bytes:
    arcs = [int(arc) for arc in dotted.split(".")]
    body = bytearray()
    for arc in [arcs[0] * 40 + arcs[1], *arcs[2:]]:
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        body += bytes(reversed(chunk))
    return _tlv(0x06, bytes(body))


def _generalized_time(when: datetime.datetime) -> bytes:
    if when.tzinfo is None:
        raise ValueError("times must be aware datetimes")
    text = when.astimezone(datetime.UTC).strftime("%Y%m%d%H%M%SZ")
    return _tlv(0x18, text.encode("ascii"))
