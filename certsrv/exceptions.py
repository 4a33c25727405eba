"""
Errors are data: every failure certsrv reports carries a stable reason code and its subject.

The reason codes form one vocabulary, the ``StrEnum``s here (``Reason``, ``AccessReason``,
``ForwardedReason``, ``LimitReason``, ``RevocationProblem``): stable log and metric labels,
each with its sentence. docs/reasons.rst lists every code, where it appears (TLS alert,
HTTP status, log event, metric) and what it means.
"""

from __future__ import annotations

import enum

from cryptography import x509

__all__ = [
    "AccessReason",
    "CRLError",
    "CertsrvError",
    "ConfigurationError",
    "EnrollmentReason",
    "EnrollmentRefused",
    "ForwardedReason",
    "LimitReason",
    "OCSPError",
    "PKIError",
    "Reason",
    "RejectedCertificate",
    "RevocationError",
    "RevocationProblem",
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
    NO_ACCEPTABLE_POLICY = "no_acceptable_policy"
    INVALID_POLICY = "invalid_policy"
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
    Reason.NO_ACCEPTABLE_POLICY: "the certificate chain is valid under none of the certificate "
                                 "policies the server requires",
    Reason.INVALID_POLICY: "a certificate policy extension in the chain is invalid",
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


# --- Revocation sources: why an OCSP response or a fetched CRL could not be used ---------


class RevocationProblem(enum.StrEnum):
    """Why a revocation source gave no usable answer (``RevocationError.reason``).

    The values are stable log and metric labels, and the ``reason`` of an unknown revocation
    verdict. The first five say nothing about the certificate (another responder may still
    answer); the others mean the answer itself cannot be trusted or used.
    """

    RESPONDER_DOWN = "responder_down"  # the connection failed or broke off
    TIMEOUT = "timeout"  # no complete answer within the timeout
    HTTP_STATUS = "http_status"  # an HTTP status other than 200 (redirects are not followed)
    TOO_LARGE = "too_large"  # the body exceeds the size limit
    BAD_URL = "bad_url"  # not a plain http:// URL with a host
    MALFORMED = "malformed"  # the response, the CRL or a certificate extension does not parse
    UNSUCCESSFUL = "unsuccessful"  # an OCSP responseStatus other than successful
    UNAUTHORIZED_SIGNER = "unauthorized_signer"  # signed by neither the CA nor its delegate
    SIGNER_NOT_VALID = "signer_not_valid"  # the delegated responder certificate is not valid now
    BAD_SIGNATURE = "bad_signature"  # the signature does not verify, or its algorithm is weak
    CERT_ID_MISMATCH = "cert_id_mismatch"  # the OCSP response is about another certificate
    NOT_YET_VALID = "not_yet_valid"  # thisUpdate or lastUpdate lies in the future
    STALE = "stale"  # past nextUpdate, or too old
    NONCE_MISSING = "nonce_missing"  # a nonce was required but the response has none
    NONCE_MISMATCH = "nonce_mismatch"  # the response nonce is not the one sent
    WRONG_ISSUER = "wrong_issuer"  # the CRL is not issued (or may not be signed) by the CA
    WRONG_SCOPE = "wrong_scope"  # the CRL does not cover the certificate or its point
    UNSUPPORTED = "unsupported"  # a delta, indirect or partial CRL; unknown critical extension
    ROLLBACK = "rollback"  # the CRL is older than the one already held


class RevocationError(CertsrvError):
    """A revocation source's answer cannot be had, trusted or used; ``reason`` says why."""

    def __init__(self, reason: RevocationProblem, detail: str = "") -> None:
        try:
            reason = RevocationProblem(reason)
        except ValueError:
            pass  # a code from outside the vocabulary is kept as given
        super().__init__(reason, detail)
        self.reason = reason
        self.detail = detail

    def __str__(self) -> str:
        return f"{self.reason}: {self.detail}" if self.detail else str(self.reason)


class OCSPError(RevocationError):
    """An OCSP response cannot be had, trusted or used; ``reason`` is a stable code."""


class CRLError(RevocationError):
    """A CRL from a distribution point cannot be had, trusted or used; ``reason`` says why."""


# --- end of the revocation block ----------------------------------------------------------


class PKIError(CertsrvError):
    """A dev-PKI operation cannot be carried out (unknown name, existing directory, ...)."""


# --- Requests: why the gate let a request through or refused it, before the application ---


class AccessReason(enum.StrEnum):
    """Why the gate let a request through or refused it: the ``--policy`` rules and the
    request's view (its method and path); the values are stable log and metric labels."""

    PUBLIC = "public"
    ALLOWED = "allowed"
    NO_CERTIFICATE = "no_certificate"
    NOT_ALLOWED = "not_allowed"
    NO_RULE = "no_rule"
    BAD_PATH = "bad_path"
    BAD_METHOD = "bad_method"
    INTERNAL_ERROR = "internal_error"
    MISCONFIGURED = "misconfigured"

    @property
    def sentence(self) -> str:
        """A short explanation a person understands, fit for a 403 body."""
        return _ACCESS_SENTENCES[self]


_ACCESS_SENTENCES: dict[AccessReason, str] = {
    AccessReason.PUBLIC: "the path is public",
    AccessReason.ALLOWED: "the client certificate is allowed on this path",
    AccessReason.NO_CERTIFICATE: "this path requires a client certificate",
    AccessReason.NOT_ALLOWED: "the client certificate is not allowed on this path",
    AccessReason.NO_RULE: "no access rule covers this path and method",
    AccessReason.BAD_PATH: "the request path is ambiguous (empty, '.' or '..' segments, or an "
                           "encoded '/', '\\' or ';')",
    AccessReason.BAD_METHOD: "the request method is not an upper-case token",
    AccessReason.INTERNAL_ERROR: "the server failed while checking access",
    AccessReason.MISCONFIGURED: "this resource must be served by certsrv",
}


# --- Forwarded certificates: why a trusted proxy's certificate headers were refused -------


class ForwardedReason(enum.StrEnum):
    """Why forwarded certificate headers were refused; the values are stable codes."""

    BAD_ENCODING = "bad_encoding"
    TOO_LARGE = "too_large"
    MULTIPLE_VALUES = "multiple_values"
    MULTIPLE_CERTIFICATES = "multiple_certificates"
    NOT_A_CERTIFICATE = "not_a_certificate"
    TOO_MANY_CERTIFICATES = "too_many_certificates"
    EMPTY_VALUE = "empty_value"
    MISSING_CERTIFICATE = "missing_certificate"
    LEAF_MISMATCH = "leaf_mismatch"
    AMBIGUOUS = "ambiguous"

    @property
    def sentence(self) -> str:
        """A short explanation a person understands."""
        return _FORWARDED_SENTENCES[self]


_FORWARDED_SENTENCES: dict[ForwardedReason, str] = {
    ForwardedReason.BAD_ENCODING: "a forwarded certificate header is not correctly encoded",
    ForwardedReason.TOO_LARGE: "the forwarded certificate headers are larger than allowed",
    ForwardedReason.MULTIPLE_VALUES: "a forwarded certificate header that takes one value "
                                     "has several",
    ForwardedReason.MULTIPLE_CERTIFICATES: "a field that takes one certificate holds several",
    ForwardedReason.NOT_A_CERTIFICATE: "forwarded data is not an X.509 certificate",
    ForwardedReason.TOO_MANY_CERTIFICATES: "the forwarded chain has more certificates than "
                                           "allowed",
    ForwardedReason.EMPTY_VALUE: "a forwarded certificate header is present but empty",
    ForwardedReason.MISSING_CERTIFICATE: "the forwarded headers carry no client certificate",
    ForwardedReason.LEAF_MISMATCH: "the forwarded chain does not start with the forwarded "
                                   "certificate",
    ForwardedReason.AMBIGUOUS: "the forwarded certificate header can be read more than one way",
}


# --- EST: why the development PKI refused a re-enrollment ---------------------------------


class EnrollmentReason(enum.StrEnum):
    """Why the development PKI's EST service refused to re-enroll a client certificate
    (``certsrv.pki.est``); the values are stable log labels and refusal body codes."""

    WRONG_CONTENT_TYPE = "wrong_content_type"
    BODY_TOO_LARGE = "body_too_large"
    BAD_CSR = "bad_csr"
    BAD_CSR_SIGNATURE = "bad_csr_signature"
    UNSUPPORTED_KEY = "unsupported_key"
    SUBJECT_MISMATCH = "subject_mismatch"
    SAN_MISMATCH = "san_mismatch"
    KEY_REUSED = "key_reused"
    UNKNOWN_CERTIFICATE = "unknown_certificate"
    SUPERSEDED = "superseded"
    REVOKED = "revoked"
    TOO_MANY_RENEWALS = "too_many_renewals"
    NOT_ISSUED = "not_issued"

    @property
    def sentence(self) -> str:
        """A short explanation a person understands."""
        return _ENROLLMENT_SENTENCES[self]


_ENROLLMENT_SENTENCES: dict[EnrollmentReason, str] = {
    EnrollmentReason.WRONG_CONTENT_TYPE: "the body must be a base64 PKCS#10 request "
                                         "(application/pkcs10)",
    EnrollmentReason.BODY_TOO_LARGE: "the certificate request is too large",
    EnrollmentReason.BAD_CSR: "the body is not a base64 DER PKCS#10 request",
    EnrollmentReason.BAD_CSR_SIGNATURE: "the request's signature does not verify with its "
                                        "own key",
    EnrollmentReason.UNSUPPORTED_KEY: "the new key must be ECDSA P-256/P-384/P-521, RSA of "
                                      "2048 bits or more, or Ed25519",
    EnrollmentReason.SUBJECT_MISMATCH: "the request's subject differs from the certificate "
                                       "being renewed",
    EnrollmentReason.SAN_MISMATCH: "the request's subjectAltName differs from the "
                                   "certificate being renewed",
    EnrollmentReason.KEY_REUSED: "the request's key is already certified; renewal needs a "
                                 "new key",
    EnrollmentReason.UNKNOWN_CERTIFICATE: "the client certificate is not a client "
                                          "certificate in this PKI's index",
    EnrollmentReason.SUPERSEDED: "the PKI has issued a newer certificate of this name with "
                                 "its own key; renew that one",
    EnrollmentReason.REVOKED: "this certificate, or one issued after it for the same name, "
                              "is revoked",
    EnrollmentReason.TOO_MANY_RENEWALS: "this certificate was renewed too often in the last "
                                        "hour",
    EnrollmentReason.NOT_ISSUED: "the CA could not issue the certificate",
}


class EnrollmentRefused(PKIError):
    """The PKI refuses a re-enrollment for ``reason``; ``detail`` says which certificate."""

    def __init__(self, reason: EnrollmentReason, detail: str) -> None:
        super().__init__(reason, detail)
        self.reason = reason
        self.detail = detail

    def __str__(self) -> str:
        return f"{self.reason.sentence} ({self.detail})"


# --- Limits: why a listener refused a connection or a request for what it would cost ------


class LimitReason(enum.StrEnum):
    """Why a listener's limits refused a connection or a request (the limit options); the
    values are stable log and metric labels."""

    HANDSHAKE_TIMEOUT = "handshake_timeout"
    REQUEST_TIMEOUT = "request_timeout"
    BAD_REQUEST = "bad_request"
    HEADERS_TOO_LARGE = "headers_too_large"
    TOO_MANY_HEADERS = "too_many_headers"
    BODY_TOO_LARGE = "body_too_large"
    MAX_CONNECTIONS = "max_connections"
    BAD_PROXY_HEADER = "bad_proxy_header"

    @property
    def sentence(self) -> str:
        """A short explanation a person understands."""
        return _LIMIT_SENTENCES[self]


_LIMIT_SENTENCES: dict[LimitReason, str] = {
    LimitReason.HANDSHAKE_TIMEOUT: "the TLS handshake did not complete within "
                                   "--handshake-timeout",
    LimitReason.REQUEST_TIMEOUT: "the request's headers or body did not arrive within "
                                 "--header-timeout or --body-timeout",
    LimitReason.BAD_REQUEST: "the request is not valid HTTP/1.1 (a bare CR, a malformed line, "
                             "field or length, a method, transfer coding or version not "
                             "served)",
    LimitReason.HEADERS_TOO_LARGE: "the request line and headers are larger than "
                                   "--max-header-bytes",
    LimitReason.TOO_MANY_HEADERS: "the request has more header fields than --max-headers",
    LimitReason.BODY_TOO_LARGE: "the request body is larger than --max-body-bytes",
    LimitReason.MAX_CONNECTIONS: "the listener already holds --max-connections connections",
    LimitReason.BAD_PROXY_HEADER: "the connection to a haproxy: listener did not begin with "
                                  "a PROXY protocol header",
}
