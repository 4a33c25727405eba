"""
Errors are data: every failure certsrv reports carries a stable reason code and its subject.
"""

from __future__ import annotations

import enum

from cryptography import x509

__all__ = [
    "CertsrvError",
    "ConfigurationError",
    "OCSPError",
    "PKIError",
    "Reason",
    "RejectedCertificate",
]


class Reason(enum.StrEnum):
    """Why a client certificate was rejected; the values are stable log and metric labels."""

    NO_CERTIFICATE = "no_certificate"
    UNKNOWN_CA = "unknown_ca"
    EXPIRED = "expired"
    NOT_YET_VALID = "not_yet_valid"
    BAD_KEY_USAGE = "bad_key_usage"
    BAD_SIGNATURE = "bad_signature"
    INVALID_CA = "invalid_ca"
    PATH_LENGTH_EXCEEDED = "path_length_exceeded"
    CHAIN_TOO_LONG = "chain_too_long"
    SELF_SIGNED_NOT_ALLOWED = "self_signed_not_allowed"
    NOT_PINNED = "not_pinned"
    CA_AS_CLIENT = "ca_as_client"
    REVOKED = "revoked"
    REVOCATION_UNKNOWN = "revocation_unknown"
    CRL_UNAVAILABLE = "crl_unavailable"
    CRL_EXPIRED = "crl_expired"
    MALFORMED = "malformed"
    HANDSHAKE_FAILED = "handshake_failed"
    INTERNAL_ERROR = "internal_error"

    @property
    def sentence(self) -> str:
        """A short explanation a person understands."""
        return _SENTENCES[self]


_SENTENCES: dict[Reason, str] = {
    Reason.NO_CERTIFICATE: "no client certificate was presented",
    Reason.UNKNOWN_CA: "the certificate was not issued by a trusted certificate authority",
    Reason.EXPIRED: "the certificate has expired",
    Reason.NOT_YET_VALID: "the certificate is not valid yet",
    Reason.BAD_KEY_USAGE: "the certificate is not allowed to be used for client authentication",
    Reason.BAD_SIGNATURE: "a signature in the certificate chain does not verify",
    Reason.INVALID_CA: "an issuer in the chain is not a certificate authority",
    Reason.PATH_LENGTH_EXCEEDED: "the chain exceeds a CA's path length constraint",
    Reason.CHAIN_TOO_LONG: "the certificate chain is longer than the server allows",
    Reason.SELF_SIGNED_NOT_ALLOWED: "self-signed client certificates are not accepted",
    Reason.NOT_PINNED: "the self-signed certificate's fingerprint is not pinned",
    Reason.CA_AS_CLIENT: "a CA certificate cannot be used as a client certificate",
    Reason.REVOKED: "the certificate has been revoked",
    Reason.REVOCATION_UNKNOWN: "the certificate's revocation status could not be determined",
    Reason.CRL_UNAVAILABLE: "no valid revocation list is available for the issuer",
    Reason.CRL_EXPIRED: "the issuer's revocation list has expired",
    Reason.MALFORMED: "the certificate is malformed",
    Reason.HANDSHAKE_FAILED: "the TLS handshake failed",
    Reason.INTERNAL_ERROR: "the server failed while checking the certificate",
}


class CertsrvError(Exception):
    """Base class of everything certsrv raises on purpose."""


class ConfigurationError(CertsrvError):
    """A configuration file or value is unusable; ``str()`` is one line naming both."""

    def __init__(self, source: str, problem: str) -> None:
        super().__init__(source, problem)
        self.source = source
        self.problem = problem

    def __str__(self) -> str:
        return f"{self.source}: {self.problem}"


class RejectedCertificate(CertsrvError):
    """A client certificate failed validation."""

    def __init__(
        self,
        reason: Reason,
        detail: str = "",
        certificate: x509.Certificate | None = None,
        depth: int = 0,
    ) -> None:
        super().__init__(reason, detail, certificate, depth)
        self.reason = reason
        self.detail = detail
        self.certificate = certificate
        self.depth = depth

    def __str__(self) -> str:
        return f"{self.reason.sentence} ({self.detail})" if self.detail else self.reason.sentence


class OCSPError(CertsrvError):
    """An OCSP response cannot be trusted or used; ``reason`` is a stable code."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(reason, detail)
        self.reason = reason
        self.detail = detail

    def __str__(self) -> str:
        return f"{self.reason}: {self.detail}" if self.detail else self.reason


class PKIError(CertsrvError):
    """A dev-PKI operation cannot be carried out (unknown name, existing directory, ...)."""
