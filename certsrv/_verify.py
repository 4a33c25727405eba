"""
The client-certificate policy applied inside the TLS handshake, and its logged decisions.

OpenSSL judges chain, signatures, validity, basic constraints and the clientAuth purpose
(so its precise alerts reach the client); the callback here only adds checks on top and
never turns OpenSSL's failure into success, except for one case: a self-signed leaf whose
SHA-256 fingerprint is pinned (OpenSSL still checks its validity and purpose afterwards).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from cryptography import x509
from OpenSSL import SSL, crypto
from twisted.internet.interfaces import IAddress, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from certsrv._certs import describe, sha256_hex, unreadable
from certsrv._identity import ClientIdentity
from certsrv._policy import Claims, Policy
from certsrv._revocation import Plan, Revocation, Verdict
from certsrv.exceptions import ConfigurationError, Reason, RejectedCertificate

if TYPE_CHECKING:
    from certsrv._forwardverify import ForwardedVerifier
    from certsrv._tls import TLSSettings

__all__ = [
    "AllowedTypes",
    "ClientCertificatePolicy",
    "ConnectionState",
    "parse_pin",
]

_log = Logger(namespace="certsrv.tls")
_ACCEPTED = ("accepted client certificate {subject} (issuer {issuer}, serial {serial}, "
             "sha256 {sha256}) from {peer}")

# OpenSSL X509_V_ERR_* codes and what they mean to a client.
DEPTH_ZERO_SELF_SIGNED = 18
# Revocation status unknown through a CRL problem (none for the issuer, not yet valid,
# expired): rejected under --revocation-fail closed, accepted with a warning under open.
CRL_STATUS_UNKNOWN = frozenset({3, 11, 12})
OPENSSL_REASONS: dict[int, Reason] = {
    2: Reason.UNKNOWN_CA,
    3: Reason.CRL_UNAVAILABLE,
    4: Reason.BAD_SIGNATURE,
    6: Reason.MALFORMED,
    7: Reason.BAD_SIGNATURE,
    8: Reason.CRL_UNAVAILABLE,
    9: Reason.NOT_YET_VALID,
    10: Reason.EXPIRED,
    11: Reason.CRL_UNAVAILABLE,
    12: Reason.CRL_EXPIRED,
    13: Reason.MALFORMED,
    14: Reason.MALFORMED,
    19: Reason.UNKNOWN_CA,
    20: Reason.UNKNOWN_CA,
    21: Reason.UNKNOWN_CA,
    22: Reason.CHAIN_TOO_LONG,
    23: Reason.REVOKED,
    24: Reason.INVALID_CA,
    25: Reason.PATH_LENGTH_EXCEEDED,
    26: Reason.BAD_KEY_USAGE,
    27: Reason.UNKNOWN_CA,
    28: Reason.UNKNOWN_CA,
    32: Reason.INVALID_CA,
    33: Reason.CRL_UNAVAILABLE,
    34: Reason.MALFORMED,
    35: Reason.CRL_UNAVAILABLE,
    37: Reason.INVALID_CA,
    39: Reason.BAD_KEY_USAGE,
}


def openssl_text(errno: int) -> str:
    try:
        from OpenSSL._util import ffi, lib  # the public API has no errno-to-text lookup

        return str(ffi.string(lib.X509_verify_cert_error_string(errno)).decode("ascii"))
    except Exception:
        return f"X509 verify error {errno}"


class AllowedTypes(enum.Enum):
    """Which client certificates may authenticate (ASP.NET's AllowedCertificateTypes)."""

    CHAINED = "chained"
    SELF_SIGNED = "selfsigned"
    ALL = "all"

    @property
    def chained(self) -> bool:
        """Whether certificates chaining to a trusted CA are allowed."""
        return self is not AllowedTypes.SELF_SIGNED

    @property
    def self_signed(self) -> bool:
        """Whether pinned self-signed certificates are allowed."""
        return self is not AllowedTypes.CHAINED


def parse_pin(text: str, source: str = "--pin") -> str:
    """Normalise a SHA-256 fingerprint (hex, colons allowed) to lowercase hex."""
    pin = text.strip().replace(":", "").lower()
    if len(pin) != 64 or any(c not in "0123456789abcdef" for c in pin):
        raise ConfigurationError(source, f"{text.strip()!r} is not a SHA-256 fingerprint "
                                         "(64 hex digits, colons allowed)")
    return pin


class ConnectionState:
    """What the handshake learnt about one connection's client; held by its TLS transport."""

    __slots__ = ("chain", "chain_not_after", "claims", "identity", "leaf", "pinned",
                 "rejection", "revocation", "revocation_memo", "warnings")

    def __init__(self) -> None:
        self.warnings: list[str] = []
        self.chain: dict[int, x509.Certificate] = {}
        self.revocation: Plan = ()
        self.revocation_memo: tuple[Verdict, float] | None = None
        self.claims: Claims | None = None
        self.leaf: x509.Certificate | None = None
        self.chain_not_after: float | None = None
        self.pinned = False
        self.rejection: RejectedCertificate | None = None
        self.identity: ClientIdentity | None = None

    def reject(self, rejection: RejectedCertificate) -> None:
        """Remember the first reason this connection's certificate was refused."""
        if self.rejection is None:
            self.rejection = rejection


class ClientCertificatePolicy:
    """Checks a client certificate during the handshake and logs each decision."""

    def __init__(
        self,
        clock: IReactorTime,
        allowed_types: AllowedTypes = AllowedTypes.CHAINED,
        pins: Iterable[str] = (),
        fail_open: bool = False,
        revocation: Revocation | None = None,
        access: Policy | None = None,
    ) -> None:
        self.access = access
        self.clock = clock
        self.allowed_types = allowed_types
        self.pins = frozenset(pins)
        self.fail_open = fail_open
        self.log_accepted = True
        self.revocation = revocation
        self._forwarded: ForwardedVerifier | None = None
        self.settings: TLSSettings | None = None

    def attach(self, settings: TLSSettings) -> None:
        """Remember the TLS settings this policy serves with (for forwarded certificates)."""
        self.settings = settings
        self._forwarded = None

    def forwarded_verifier(self) -> ForwardedVerifier:
        """Validates forwarded chains against the same trust store as the handshake."""
        from certsrv._forwardverify import ForwardedVerifier

        if self._forwarded is None:
            assert self.settings is not None, "attach() the TLS settings first"
            self._forwarded = ForwardedVerifier(self, self.settings)
        return self._forwarded

    def verify_callback(
        self, connection: SSL.Connection, cert: crypto.X509, errno: int, depth: int, ok: int
    ) -> bool:
        """The context-level OpenSSL verify callback; never raises."""
        state: ConnectionState | None = None
        try:
            state = connection.get_app_data().certsrv_state
            try:
                parsed = cert.to_cryptography()
            except Exception as e:  # OpenSSL accepted what cryptography cannot load
                state.reject(RejectedCertificate(
                    Reason.MALFORMED, f"certificate cannot be parsed ({e.__class__.__name__})",
                    None, depth))
                return False
            return self._verify(state, parsed, errno, depth, bool(ok))
        except BaseException:
            _log.failure("unexpected error while verifying a client certificate")
            if state is not None:
                state.reject(RejectedCertificate(Reason.INTERNAL_ERROR, "see the server log"))
            return False

    def _verify(
        self, state: ConnectionState, cert: x509.Certificate, errno: int, depth: int, ok: bool
    ) -> bool:
        if not ok:
            if errno == DEPTH_ZERO_SELF_SIGNED and depth == 0:
                return self.self_signed(state, cert)
            if errno in CRL_STATUS_UNKNOWN and self.fail_open:
                state.warnings.append(f"depth {depth}: {openssl_text(errno)}")
                return True
            reason = OPENSSL_REASONS.get(errno, Reason.MALFORMED)
            state.reject(RejectedCertificate(reason, openssl_text(errno), cert, depth))
            return False
        not_after = cert.not_valid_after_utc.timestamp()
        if state.chain_not_after is None or not_after < state.chain_not_after:
            state.chain_not_after = not_after
        state.chain[depth] = cert
        if depth > 0:
            return True
        rejection = self.check_leaf(cert)
        if rejection is None and self.revocation is not None and not state.pinned:
            rejection = self._known_revoked(state)
        if rejection is not None:
            state.reject(rejection)
            return False
        state.leaf = cert
        return True

    def _known_revoked(self, state: ConnectionState) -> RejectedCertificate | None:
        # Only the cache is consulted here: the handshake cannot wait for a responder.
        assert self.revocation is not None
        plan = state.revocation = self.revocation.plan(state.chain)
        if not plan:
            return None
        # The combined cached verdict (remembered for the connection's first requests), or,
        # while some source has no answer yet, any source that already knows of a revocation.
        found = state.revocation_memo = self.revocation.lookup_until(plan)
        verdict = found[0] if found is not None else self.revocation.known_revoked(plan)
        if verdict is None or not verdict.revoked:
            return None
        return RejectedCertificate(Reason.REVOKED, verdict.detail, state.chain.get(0))

    def self_signed(self, state: ConnectionState, cert: x509.Certificate) -> bool:
        """Accept a self-signed leaf only when allowed and pinned; otherwise record why not."""
        if not self.allowed_types.self_signed:
            reason = Reason.SELF_SIGNED_NOT_ALLOWED
        elif sha256_hex(cert) not in self.pins:
            reason = Reason.NOT_PINNED
        else:
            state.pinned = True
            return True
        state.reject(RejectedCertificate(reason, "self-signed certificate", cert, 0))
        return False

    def check_leaf(self, cert: x509.Certificate) -> RejectedCertificate | None:
        """The end-entity checks OpenSSL leaves to us: usage, CA flag, time by our clock."""
        problem = unreadable(cert)
        if problem is not None:
            return RejectedCertificate(Reason.MALFORMED, problem, cert)
        extensions = cert.extensions
        try:
            constraints = extensions.get_extension_for_class(x509.BasicConstraints).value
        except x509.ExtensionNotFound:
            pass
        else:
            if constraints.ca:
                return RejectedCertificate(Reason.CA_AS_CLIENT, "basicConstraints CA=true", cert)
        try:
            usage = extensions.get_extension_for_class(x509.KeyUsage).value
        except x509.ExtensionNotFound:
            pass
        else:
            if not usage.digital_signature:
                return RejectedCertificate(Reason.BAD_KEY_USAGE,
                                           "keyUsage lacks digitalSignature", cert)
        try:
            eku = extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        except x509.ExtensionNotFound:
            pass
        else:
            if x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH not in eku:
                return RejectedCertificate(Reason.BAD_KEY_USAGE,
                                           "extendedKeyUsage lacks clientAuth", cert)
        return self.check_time(cert)

    def check_time(self, cert: x509.Certificate) -> RejectedCertificate | None:
        """Whether ``cert`` is inside its validity period by the injected clock."""
        now = self.clock.seconds()
        if now < cert.not_valid_before_utc.timestamp():
            return RejectedCertificate(Reason.NOT_YET_VALID, "by the server clock", cert)
        if now > cert.not_valid_after_utc.timestamp():
            return RejectedCertificate(Reason.EXPIRED, "by the server clock", cert)
        return None

    def handshake_completed(self, state: ConnectionState, peer: IAddress | None) -> None:
        """Turn a finished handshake into the connection's identity, and log the decision."""
        if state.leaf is None:
            _log.info("TLS connection from {peer} without a client certificate",
                      decision="anonymous", reason=Reason.NO_CERTIFICATE.value,
                      peer=peer_text(peer))
            return
        identity = ClientIdentity.from_certificate(state.leaf, state.chain_not_after)
        state.identity = identity
        state.chain = {}
        revocation = self.revocation
        if revocation is not None and state.revocation and state.revocation_memo is None:
            revocation.check(state.revocation)  # warm the cache before the first request
        # With log_accepted off the event is still emitted (metrics and other observers see
        # it) but has no text, so the text log skips it: like nginx's access_log off.
        _log.info(
            _ACCEPTED if self.log_accepted else None,
            decision="accepted", reason=None, peer=peer_text(peer),
            subject=identity.subject, issuer=identity.issuer, serial=identity.serial,
            sha256=identity.sha256, pinned=state.pinned,
        )
        for warning in state.warnings:
            _log.warn("accepted {subject} although its revocation status is unknown "
                      "(--revocation-fail open): {problem}", decision="accepted",
                      reason=Reason.REVOCATION_UNKNOWN.value, subject=identity.subject,
                      sha256=identity.sha256, peer=peer_text(peer), problem=warning)

    def handshake_failed(self, state: ConnectionState, peer: IAddress | None,
                         reason: Failure) -> None:
        """Log why a handshake that never completed was refused."""
        rejection = state.rejection
        if rejection is None:
            rejection = _from_ssl_failure(reason)
            if rejection is None:
                return  # the peer went away before sending anything worth judging
        log_rejection(rejection, peer)


def log_rejection(rejection: RejectedCertificate, peer: IAddress | None,
                  stage: str = "handshake", **extra: Any) -> None:
    """Emit the one structured event for a refused client certificate."""
    detail = f" ({rejection.detail})" if rejection.detail else ""
    _log.warn(
        "rejected client certificate from {peer}: {reason}{detail_text}; subject {subject}",
        decision="rejected", stage=stage, reason=rejection.reason.value,
        detail=rejection.detail, detail_text=detail,
        peer=peer_text(peer), depth=rejection.depth,
        **describe(rejection.certificate), **extra,
    )


def _from_ssl_failure(reason: Failure) -> RejectedCertificate | None:
    if not reason.check(SSL.Error):
        return None
    error = reason.value
    assert error is not None
    if "peer did not return a certificate" in str(error):
        return RejectedCertificate(Reason.NO_CERTIFICATE)
    return RejectedCertificate(Reason.HANDSHAKE_FAILED, _ssl_error_text(error))


def _ssl_error_text(error: BaseException) -> str:
    args = error.args[0] if error.args else None
    if isinstance(args, list) and args and isinstance(args[0], tuple):
        return "; ".join(str(item[-1]) for item in args)
    return str(error)


def peer_text(peer: IAddress | None) -> str:
    """An address as host:port ([host]:port for IPv6)."""
    host = getattr(peer, "host", None)
    port = getattr(peer, "port", None)
    if host is None:
        return str(peer)
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
