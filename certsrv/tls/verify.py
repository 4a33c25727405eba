"""
Client chain verification, one path for every place a chain is judged, and its log events.

OpenSSL judges chain, signatures, validity, basic constraints and the TLS client purpose;
``ClientVerifier.judge`` takes each of its steps and adds certsrv's checks (key
usage, CA as client, time by the injected clock, depth, pins, known revocation). The
handshake feeds it from OpenSSL's verify callback; ``verify_chain`` feeds it the same steps
for a chain a trusted proxy forwarded and for an open connection after a reload. It never
turns OpenSSL's failure into success, except for one case: a self-signed leaf whose SHA-256
fingerprint is pinned (OpenSSL still checks its validity and purpose afterwards).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from cryptography import x509
from OpenSSL import SSL, crypto
from twisted.internet.interfaces import IAddress, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from certsrv._compat import X509_V_OK, set_store_purpose_client, verify_error_text
from certsrv.access.policy import Claims, Decision, Policy
from certsrv.exceptions import ConfigurationError, Reason, RejectedCertificate
from certsrv.revocation.decision import Plan, Revocation, Status, Verdict
from certsrv.tls.observer import NULL_OBSERVER, Observer
from certsrv.x509.certs import describe, sha256_hex, unreadable
from certsrv.x509.identity import ClientIdentity
from certsrv.x509.policies import (
    DEFAULT_POLICIES,
    PolicyRefusal,
    PolicySettings,
    valid_policies,
)

if TYPE_CHECKING:
    from certsrv.tls.context import TLSSettings

__all__ = [
    "AllowedTypes",
    "ClientVerifier",
    "ConnectionState",
    "parse_pin",
]

_log = Logger(namespace="certsrv.tls")
_ACCEPTED = ("accepted client certificate {subject} (issuer {issuer}, serial {serial}, "
             "sha256 {sha256}) from {peer}")

# OpenSSL X509_V_ERR_* codes and what they mean to a client.
DEPTH_ZERO_SELF_SIGNED = 18
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
    """OpenSSL's text for an X509_V_ERR_* code."""
    return verify_error_text(errno)


# The X509_V_ERR_* code a refusal of certsrv's own is reported with: OpenSSL turns it into
# the TLS alert the client sees (certificate_revoked, certificate_expired, ...).
_ALERT_ERRORS: dict[Reason, int] = {
    Reason.REVOKED: 23,  # certificate_revoked
    Reason.EXPIRED: 10,  # certificate_expired
    Reason.NOT_YET_VALID: 9,  # bad_certificate
    Reason.MALFORMED: 28,  # bad_certificate
    Reason.BAD_KEY_USAGE: 26,  # unsupported_certificate
    Reason.CA_AS_CLIENT: 26,
    Reason.SELF_SIGNED_NOT_ALLOWED: 18,  # unknown_ca
    Reason.NOT_PINNED: 18,
    Reason.UNKNOWN_CA: 20,
    Reason.CHAIN_TOO_LONG: 22,
    Reason.INVALID_POLICY: 42,  # X509_V_ERR_INVALID_POLICY_EXTENSION: bad_certificate
    Reason.NO_ACCEPTABLE_POLICY: 43,  # X509_V_ERR_NO_EXPLICIT_POLICY: bad_certificate
    Reason.REVOCATION_UNKNOWN: 75,  # certificate_unknown
    Reason.CRL_UNAVAILABLE: 75,
    Reason.CRL_EXPIRED: 75,
}
_UNSPECIFIED = 1  # internal_error
# Revocation verdict reasons that name a CRL problem more precisely than "unknown".
_UNKNOWN_REASONS = {"crl_unavailable": Reason.CRL_UNAVAILABLE,
                    "crl_expired": Reason.CRL_EXPIRED}


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


# Certificates (and identities) a verifier remembers before it starts afresh: bounds the
# memory a stream of distinct client certificates can take.
_MEMO_SIZE = 4096


class _Parsed:
    """A certificate the handshake met, parsed once per verifier (its DER is the key): what
    depends only on the certificate, not on the clock or the connection."""

    __slots__ = ("cert", "leaf_problem", "not_after", "not_before")

    def __init__(self, cert: x509.Certificate) -> None:
        self.cert = cert
        self.not_before = cert.not_valid_before_utc.timestamp()
        self.not_after = cert.not_valid_after_utc.timestamp()
        # The end-entity checks' outcome once asked (False: not yet): None (they pass) or
        # the refusal's reason and detail (a RejectedCertificate is per connection).
        self.leaf_problem: tuple[Reason, str] | None | bool = False


class ConnectionState:
    """What verification learnt about one client: of a TLS connection, or forwarded."""

    __slots__ = ("access_memo", "chain", "chain_not_after", "claims", "identity", "leaf",
                 "pinned", "policies", "rejection", "revocation", "revocation_memo", "verifier",
                 "warnings")

    def __init__(self) -> None:
        self.warnings: list[str] = []
        self.chain: dict[int, x509.Certificate] = {}
        self.revocation: Plan = ()
        self.revocation_memo: tuple[Verdict, float] | None = None
        self.claims: Claims | None = None
        # The access decision of the last request and its log event's fields:
        # (policy, method, path, decision, fields).
        self.access_memo: tuple[Policy, bytes, bytes, Decision, dict[str, Any]] | None = None
        self.leaf: x509.Certificate | None = None
        self.chain_not_after: float | None = None
        self.pinned = False
        self.policies: frozenset[str] = frozenset()
        self.rejection: RejectedCertificate | None = None
        self.identity: ClientIdentity | None = None
        # The verifier (configuration) the chain was verified under: another re-verifies it.
        self.verifier: ClientVerifier | None = None

    def reject(self, rejection: RejectedCertificate) -> None:
        """Remember the first reason this connection's certificate was refused."""
        if self.rejection is None:
            self.rejection = rejection

    def adopt(self, other: ConnectionState) -> None:
        """Take over ``other``'s verdict: the same chain, verified under a newer verifier."""
        for name in self.__slots__:
            setattr(self, name, getattr(other, name))


def fill_store(store: crypto.X509Store, settings: TLSSettings, allowed_types: AllowedTypes
               ) -> None:
    """The trust store of client chains: the CAs, and the TLS client purpose."""
    trusted = settings.roots if allowed_types.chained else ()
    # Intermediates in the store only help build chains: OpenSSL still demands a
    # self-signed root from the store at the top (no PARTIAL_CHAIN flag is set).
    for cert in (*trusted, *(settings.intermediates if trusted else ())):
        store.add_cert(crypto.X509.from_cryptography(cert))
    set_store_purpose_client(store)


class ClientVerifier:
    """Verifies client chains (in the handshake, forwarded, after a reload) and logs it.

    It holds the trust configuration chains are verified under (allowed types, pins,
    revocation sources, access rules, the TLS settings' CAs and depth); a reload builds a new
    one, and ``certsrv.tls.context.Current`` holds the one in force.
    """

    def __init__(
        self,
        clock: IReactorTime,
        allowed_types: AllowedTypes = AllowedTypes.CHAINED,
        pins: Iterable[str] = (),
        fail_open: bool = False,
        revocation: Revocation | None = None,
        access: Policy | None = None,
        settings: TLSSettings | None = None,
        log_accepted: bool = True,
        policies: PolicySettings = DEFAULT_POLICIES,
    ) -> None:
        self.access = access
        self.policies = policies
        self.clock = clock
        self.allowed_types = allowed_types
        self.pins = frozenset(pins)
        self.fail_open = fail_open
        self.log_accepted = log_accepted
        self.revocation = revocation
        self._store: crypto.X509Store | None = None
        self.settings = settings
        # Per verifier (so per CA set and configuration): certificates by DER, identities.
        self._parsed: dict[bytes, _Parsed] = {}
        self._identities: dict[tuple[x509.Certificate, float | None, frozenset[str]],
                               ClientIdentity] = {}
        self._plans: dict[tuple[tuple[int, x509.Certificate], ...], Plan] = {}
        self._policy_outcomes: dict[tuple[x509.Certificate, ...],
                                    frozenset[str] | PolicyRefusal] = {}

    def attach(self, settings: TLSSettings) -> None:
        """Remember the TLS settings this verifier serves with (their CAs and depth)."""
        self.settings = settings
        self._store = None

    def verify_callback(self, connection: SSL.Connection, cert: crypto.X509, errno: int,
                        depth: int, ok: bool) -> int:
        """OpenSSL's verify callback (see ``_compat.set_verify``); never raises."""
        state: ConnectionState | None = None
        try:
            state = connection.get_app_data().certsrv_state
            return self.judge(state, cert, errno, depth, ok)
        except BaseException:
            _log.failure("unexpected error while verifying a client certificate")
            if state is not None:
                state.reject(RejectedCertificate(Reason.INTERNAL_ERROR, "see the server log"))
            return _UNSPECIFIED

    def judge(self, state: ConnectionState, cert: crypto.X509 | x509.Certificate, errno: int,
              depth: int, ok: bool) -> int:
        """One step of chain verification, as OpenSSL reports it: X509_V_OK to go on, or the
        X509_V_ERR_* code (and so the TLS alert) of the refusal recorded in ``state``."""
        state.verifier = self
        parsed: _Parsed | None = None
        if isinstance(cert, crypto.X509):
            try:
                parsed = self._parse(cert)
            except Exception as e:  # OpenSSL accepted what cryptography cannot load
                return self._refuse(state, RejectedCertificate(
                    Reason.MALFORMED, f"certificate cannot be parsed ({e.__class__.__name__})",
                    None, depth))
            cert = parsed.cert
        if not ok:
            if errno == DEPTH_ZERO_SELF_SIGNED and depth == 0:
                return self._self_signed(state, cert)
            reason = OPENSSL_REASONS.get(errno, Reason.MALFORMED)
            state.reject(RejectedCertificate(reason, openssl_text(errno), cert, depth))
            return errno
        settings = self.settings
        if settings is not None and depth > settings.verify_depth + 1:
            return self._refuse(state, RejectedCertificate(
                Reason.CHAIN_TOO_LONG, "longer than --verify-depth", cert, depth))
        if parsed is None:
            parsed = _Parsed(cert)
        rejection = self._leaf_rejection(parsed) if depth == 0 else None
        if rejection is None:
            rejection = self._time_rejection(cert, parsed.not_before, parsed.not_after)
        if rejection is not None:
            rejection.depth = depth
            return self._refuse(state, rejection)
        not_after = parsed.not_after
        if state.chain_not_after is None or not_after < state.chain_not_after:
            state.chain_not_after = not_after
        state.chain[depth] = cert
        if depth > 0:
            return X509_V_OK
        rejection = self._policies(state)
        if rejection is not None:
            return self._refuse(state, rejection)
        if self.revocation is not None and not state.pinned:
            rejection = self._revocation_known(state)
            if rejection is not None:
                return self._refuse(state, rejection)
        state.leaf = cert
        return X509_V_OK

    def _parse(self, cert: crypto.X509) -> _Parsed:
        """``cert`` as cryptography's certificate, parsed once while this verifier is in force."""
        der = crypto.dump_certificate(crypto.FILETYPE_ASN1, cert)
        parsed = self._parsed.get(der)
        if parsed is None:
            parsed = _Parsed(x509.load_der_x509_certificate(der))
            if len(self._parsed) >= _MEMO_SIZE:
                self._parsed.clear()
            self._parsed[der] = parsed
        return parsed

    def _leaf_rejection(self, parsed: _Parsed) -> RejectedCertificate | None:
        problem = parsed.leaf_problem
        if problem is False:
            rejection = self._leaf_checks(parsed.cert)
            problem = parsed.leaf_problem = (
                None if rejection is None else (rejection.reason, rejection.detail))
        if not isinstance(problem, tuple):
            return None
        return RejectedCertificate(problem[0], problem[1], parsed.cert)

    def _refuse(self, state: ConnectionState, rejection: RejectedCertificate) -> int:
        state.reject(rejection)
        return _ALERT_ERRORS.get(rejection.reason, _UNSPECIFIED)

    def _policies(self, state: ConnectionState) -> RejectedCertificate | None:
        # RFC 5280 certificate policies over the whole verified path, its top (the trust
        # anchor) left out; a pinned leaf is the path, so it gets no policy it does not
        # carry. Not OpenSSL's policy checking: with CRLs it checks their issuers' paths too,
        # and refuses valid chains.
        depths = sorted(state.chain, reverse=True)
        path = ((state.chain[0],) if state.pinned
                else tuple(state.chain[d] for d in depths[1:]))
        # The outcome depends only on the path (and this verifier's settings).
        outcome = self._policy_outcomes.get(path)
        if outcome is None:
            outcome = valid_policies(path, self.policies)
            if len(self._policy_outcomes) >= _MEMO_SIZE:
                self._policy_outcomes.clear()
            self._policy_outcomes[path] = outcome
        if isinstance(outcome, PolicyRefusal):
            reason = Reason.INVALID_POLICY if outcome.invalid else Reason.NO_ACCEPTABLE_POLICY
            return RejectedCertificate(reason, outcome.detail, state.chain.get(outcome.depth),
                                       outcome.depth)
        state.policies = outcome
        return None

    def _revocation_known(self, state: ConnectionState) -> RejectedCertificate | None:
        # Only cached answers: the handshake cannot wait for a responder. An undecided
        # status is decided by the gate before the first request reaches the application.
        assert self.revocation is not None
        # What to ask depends only on the chain (and this verifier's sources).
        key = tuple(state.chain.items())
        plan = self._plans.get(key)
        if plan is None:
            plan = self.revocation.plan(state.chain)
            if len(self._plans) >= _MEMO_SIZE:
                self._plans.clear()
            self._plans[key] = plan
        state.revocation = plan
        if not plan:
            return None
        verdict, until = self.revocation.lookup_until(plan)
        if verdict is None:
            return None
        state.revocation_memo = verdict, until
        return self.revocation_refusal(verdict, state.chain.get(0), state.warnings)

    def revocation_refusal(self, verdict: Verdict, cert: x509.Certificate | None,
                           warnings: list[str] | None = None) -> RejectedCertificate | None:
        """The refusal a revocation decision calls for under --revocation-fail, or None."""
        if verdict.revoked:
            return RejectedCertificate(Reason.REVOKED, _with_source(verdict.detail, verdict),
                                       cert, verdict.depth)
        if verdict.status is Status.GOOD:
            if verdict.detail and warnings is not None:
                _log.info("revocation status of {subject}: good from {source}; {detail}",
                          subject=verdict.subject, source=verdict.source,
                          detail=verdict.detail, reason="revocation_fallback")
            return None
        detail = _with_source(f"{verdict.reason}: {verdict.detail}", verdict)
        if self.fail_open:
            if warnings is not None:
                warnings.append(detail)
            return None
        reason = _UNKNOWN_REASONS.get(verdict.reason, Reason.REVOCATION_UNKNOWN)
        return RejectedCertificate(reason, detail, cert, verdict.depth)

    def verify_chain(self, leaf: x509.Certificate, chain: Sequence[x509.Certificate]
                     ) -> ConnectionState | RejectedCertificate:
        """Verify a chain outside a handshake (forwarded, or after a reload), step by step
        through ``judge`` exactly as the handshake does; the client's state, or why not."""
        state = ConnectionState()
        try:
            verified = self._openssl_chain(leaf, chain)
        except crypto.X509StoreContextError as e:
            errno, depth = int(e.errors[0]), int(e.errors[1])
            failed = e.certificate if e.certificate is not None else leaf
            if self.judge(state, failed, errno, depth, False) != X509_V_OK:
                assert state.rejection is not None
                return state.rejection
            # A pinned self-signed leaf: OpenSSL checks the rest with it as its own anchor.
            try:
                verified = self._openssl_chain(leaf, (), anchor=leaf)
            except crypto.X509StoreContextError as e:
                errno, depth = int(e.errors[0]), int(e.errors[1])
                self.judge(state, leaf, errno, depth, False)
                assert state.rejection is not None
                return state.rejection
        for depth in range(len(verified) - 1, -1, -1):
            if self.judge(state, verified[depth], X509_V_OK, depth, True) != X509_V_OK:
                assert state.rejection is not None
                return state.rejection
        self._complete(state)
        return state

    def _openssl_chain(self, leaf: x509.Certificate, chain: Sequence[x509.Certificate],
                       anchor: x509.Certificate | None = None) -> list[x509.Certificate]:
        store: crypto.X509Store | None
        if anchor is not None:
            store = crypto.X509Store()
            store.add_cert(crypto.X509.from_cryptography(anchor))
            set_store_purpose_client(store)
        else:
            store = self._store
            if store is None:
                assert self.settings is not None, "attach() the TLS settings first"
                store = self._store = crypto.X509Store()
                fill_store(store, self.settings, self.allowed_types)
        context = crypto.X509StoreContext(
            store, crypto.X509.from_cryptography(leaf),
            [crypto.X509.from_cryptography(c) for c in chain])
        return [c.to_cryptography() for c in context.get_verified_chain()]

    def _self_signed(self, state: ConnectionState, cert: x509.Certificate) -> int:
        """Accept a self-signed leaf only when allowed and pinned; otherwise refuse."""
        if not self.allowed_types.self_signed:
            reason = Reason.SELF_SIGNED_NOT_ALLOWED
        elif sha256_hex(cert) not in self.pins:
            reason = Reason.NOT_PINNED
        else:
            state.pinned = True
            return X509_V_OK
        state.reject(RejectedCertificate(reason, "self-signed certificate", cert, 0))
        return DEPTH_ZERO_SELF_SIGNED

    def check_leaf(self, cert: x509.Certificate) -> RejectedCertificate | None:
        """The end-entity checks OpenSSL leaves to us: usage, CA flag, time by our clock."""
        return self._leaf_checks(cert) or self.check_time(cert)

    def _leaf_checks(self, cert: x509.Certificate) -> RejectedCertificate | None:
        """The end-entity checks that depend only on the certificate: usage, CA flag."""
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
        return None

    def check_time(self, cert: x509.Certificate) -> RejectedCertificate | None:
        """Whether ``cert`` is inside its validity period by the injected clock."""
        return self._time_rejection(cert, cert.not_valid_before_utc.timestamp(),
                                    cert.not_valid_after_utc.timestamp())

    def _time_rejection(self, cert: x509.Certificate, not_before: float, not_after: float
                        ) -> RejectedCertificate | None:
        now = self.clock.seconds()
        if now < not_before:
            return RejectedCertificate(Reason.NOT_YET_VALID, "by the server clock", cert)
        if now > not_after:
            return RejectedCertificate(Reason.EXPIRED, "by the server clock", cert)
        return None

    def _complete(self, state: ConnectionState) -> None:
        leaf = state.leaf
        assert leaf is not None
        # The valid policies belong to the chain, not the leaf: part of the key.
        key = (leaf, state.chain_not_after, state.policies)
        identity = self._identities.get(key)
        if identity is None:
            identity = ClientIdentity.from_certificate(leaf, state.chain_not_after,
                                                       state.policies)
            if len(self._identities) >= _MEMO_SIZE:
                self._identities.clear()
            self._identities[key] = identity
        state.identity = identity

    def handshake_completed(self, state: ConnectionState, peer: IAddress | None,
                            observer: Observer = NULL_OBSERVER) -> None:
        """Turn a finished handshake into the connection's identity; log and report it."""
        if state.leaf is None:
            _log.info("TLS connection from {peer} without a client certificate",
                      decision="anonymous", reason=Reason.NO_CERTIFICATE.value,
                      peer=peer_text(peer))
            observer.anonymous()
            return
        self._complete(state)
        identity = state.identity
        assert identity is not None
        revocation = self.revocation
        if revocation is not None and state.revocation and state.revocation_memo is None:
            revocation.check(state.revocation)  # warm the cache before the first request
        # With log_accepted off the event is still emitted (structured log observers see
        # it) but has no text, so the text log skips it: like nginx's access_log off.
        _log.info(
            _ACCEPTED if self.log_accepted else None,
            decision="accepted", reason=None, peer=peer_text(peer),
            subject=identity.subject, issuer=identity.issuer, serial=identity.serial,
            sha256=identity.sha256, pinned=state.pinned,
        )
        observer.accepted()
        for warning in state.warnings:
            _log.warn("accepted {subject} although its revocation status is unknown "
                      "(--revocation-fail open): {problem}", decision="accepted",
                      reason=Reason.REVOCATION_UNKNOWN.value, subject=identity.subject,
                      sha256=identity.sha256, peer=peer_text(peer), problem=warning)
            observer.accepted(Reason.REVOCATION_UNKNOWN.value)

    def handshake_failed(self, state: ConnectionState, peer: IAddress | None,
                         reason: Failure, observer: Observer = NULL_OBSERVER) -> None:
        """Log and report why a handshake that never completed failed: our refusal, or the
        client's."""
        rejection = state.rejection
        if rejection is None:
            rejection = _from_ssl_failure(reason)
            if rejection is None:
                return  # the peer went away before sending anything worth judging
        observer.rejected(rejection.reason.value)
        if rejection.certificate is not None:
            log_rejection(rejection, peer)
            return
        # No certificate to name: log_rejection's event, worded for what happened. An alert
        # in OpenSSL's error text was *received*: the client ended the handshake.
        alerts = [part.split(" alert ", 1)[1] for part in rejection.detail.split("; ")
                  if rejection.reason is Reason.HANDSHAKE_FAILED and " alert " in part]
        about_our_certificate = ("bad certificate", "unsupported certificate",
                                 "certificate revoked", "certificate expired",
                                 "certificate unknown", "unknown ca")
        if alerts and alerts[0] in about_our_certificate:
            text = ("client {peer} refused the server's certificate (it sent the TLS alert "
                    "{alert}); check the CA it trusts against --cert's chain")
        elif alerts:
            text = "client {peer} ended the TLS handshake with the alert {alert}"
        elif rejection.reason is Reason.NO_CERTIFICATE:
            text = "rejected client {peer}: no client certificate was presented"
        elif rejection.reason is Reason.HANDSHAKE_FAILED:
            text = "TLS handshake with {peer} failed: {detail}"
        else:
            text = "rejected client certificate from {peer}: {reason}{detail_text}"
        detail = f" ({rejection.detail})" if rejection.detail else ""
        _log.warn(
            text, decision="rejected", stage="handshake", reason=rejection.reason.value,
            detail=rejection.detail, detail_text=detail, peer=peer_text(peer),
            depth=rejection.depth, alert=alerts[0] if alerts else None,
            refused_by="client" if alerts else "server", **describe(None),
        )


def _with_source(detail: str, verdict: Verdict) -> str:
    return f"{detail} [{verdict.source}]" if verdict.source else detail


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
