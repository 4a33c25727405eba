"""Validating a certificate chain forwarded by a trusted proxy, as the handshake would."""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from OpenSSL import crypto
from twisted.logger import Logger

from certsrv._identity import ClientIdentity
from certsrv._policy import Claims
from certsrv._revocation import Plan, Verdict
from certsrv._tls import TLSSettings
from certsrv._verify import (
    CRL_STATUS_UNKNOWN,
    DEPTH_ZERO_SELF_SIGNED,
    OPENSSL_REASONS,
    ClientCertificatePolicy,
    ConnectionState,
    openssl_text,
)
from certsrv.exceptions import Reason, RejectedCertificate

__all__ = ["ForwardedClient", "ForwardedVerifier"]

_log = Logger(namespace="certsrv.tls")


class ForwardedVerifier:
    """Validates a certificate chain a trusted proxy forwarded, as the handshake would have."""

    def __init__(self, policy: ClientCertificatePolicy, settings: TLSSettings,
                 cache_size: int = 1024, cache_seconds: float = 60.0) -> None:
        self.policy = policy
        self.settings = settings
        self.cache_size = cache_size
        self.cache_seconds = cache_seconds
        self._cache: OrderedDict[bytes, tuple[float, ForwardedClient | RejectedCertificate]]
        self._cache = OrderedDict()
        self._stores: dict[bool, crypto.X509Store] = {}

    def _store(self, with_crls: bool) -> crypto.X509Store:
        store = self._stores.get(with_crls)
        if store is None:
            store = crypto.X509Store()
            settings = self.settings
            trusted = settings.roots if self.policy.allowed_types.chained else ()
            for cert in (*trusted, *(settings.intermediates if trusted else ())):
                store.add_cert(crypto.X509.from_cryptography(cert))
            if with_crls and settings.crls:
                for crl in settings.crls:
                    store.add_crl(crl)
                flags = crypto.X509StoreFlags.CRL_CHECK
                if settings.crl_check_chain:
                    flags |= crypto.X509StoreFlags.CRL_CHECK_ALL
                store.set_flags(flags)
            self._stores[with_crls] = store
        return store

    def verify(self, leaf: x509.Certificate, chain: Sequence[x509.Certificate]
               ) -> ForwardedClient | RejectedCertificate:
        """The forwarded client's identity and revocation plan, or why it is refused."""
        key = hashlib.sha256(b"".join(c.fingerprint(hashes.SHA256())
                                      for c in (leaf, *chain))).digest()
        now = self.policy.clock.seconds()
        cached = self._cache.get(key)
        if cached is not None and cached[0] > now:
            self._cache.move_to_end(key)
            return cached[1]
        try:
            result = self._verify(leaf, chain)
        except Exception as e:  # never let a hostile certificate become a 500
            _log.failure("unexpected error while verifying a forwarded certificate")
            result = RejectedCertificate(Reason.INTERNAL_ERROR, str(e.__class__.__name__), leaf)
        self._cache[key] = (now + self.cache_seconds, result)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return result

    def _verify(self, leaf: x509.Certificate, chain: Sequence[x509.Certificate]
                ) -> ForwardedClient | RejectedCertificate:
        warnings: list[str] = []
        pinned = False
        try:
            verified = self._verified_chain(leaf, chain, with_crls=True)
        except crypto.X509StoreContextError as e:
            errno, depth = int(e.errors[0]), int(e.errors[1])
            failed = e.certificate.to_cryptography() if e.certificate is not None else leaf
            if errno == DEPTH_ZERO_SELF_SIGNED and depth == 0:
                state = ConnectionState()
                if not self.policy.self_signed(state, leaf):
                    assert state.rejection is not None
                    return state.rejection
                pinned, verified = True, [leaf]
            elif errno in CRL_STATUS_UNKNOWN and self.policy.fail_open:
                warnings.append(f"depth {depth}: {openssl_text(errno)}")
                verified = self._verified_chain(leaf, chain, with_crls=False)
            else:
                reason = OPENSSL_REASONS.get(errno, Reason.MALFORMED)
                return RejectedCertificate(reason, openssl_text(errno), failed, depth)
        if len(verified) - 2 > self.settings.verify_depth:
            return RejectedCertificate(Reason.CHAIN_TOO_LONG, "longer than --verify-depth", leaf)
        for depth, cert in enumerate(verified):
            rejection = (self.policy.check_leaf(cert) if depth == 0
                         else self.policy.check_time(cert))
            if rejection is not None:
                rejection.depth = depth
                return rejection
        plan: Plan = ()
        revocation = self.policy.revocation
        if revocation is not None and not pinned:
            plan = revocation.plan(dict(enumerate(verified)))
            known = revocation.known_revoked(plan)
            if known is not None:
                return RejectedCertificate(Reason.REVOKED, known.detail, leaf)
        chain_not_after = min(c.not_valid_after_utc.timestamp() for c in verified)
        identity = ClientIdentity.from_certificate(leaf, chain_not_after)
        return ForwardedClient(identity, plan, tuple(warnings))

    def _verified_chain(self, leaf: x509.Certificate, chain: Sequence[x509.Certificate],
                        with_crls: bool) -> list[x509.Certificate]:
        context = crypto.X509StoreContext(
            self._store(with_crls), crypto.X509.from_cryptography(leaf),
            [crypto.X509.from_cryptography(c) for c in chain])
        return [c.to_cryptography() for c in context.get_verified_chain()]


class ForwardedClient:
    """A forwarded certificate that passed validation: who it is, and what to ask about it."""

    __slots__ = ("claims", "identity", "revocation", "revocation_memo", "warnings")

    def __init__(self, identity: ClientIdentity, revocation: Plan,
                 warnings: tuple[str, ...] = ()) -> None:
        self.identity = identity
        self.revocation = revocation
        self.revocation_memo: tuple[Verdict, float] | None = None
        self.warnings = warnings
        self.claims: Claims | None = None
