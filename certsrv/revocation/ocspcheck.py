"""
OCSP as a revocation source: responder URLs, verified answers, cached and refreshed ahead.

``OCSPChecker`` asks the ``--ocsp-responder`` or the responders a certificate names in its
Authority Information Access, verifies the answer (``certsrv.revocation.ocsp``) and keeps
it in the shared cache (``certsrv.revocation.cache``) until it goes stale. A responder that
is down, slow, or answers something untrustworthy yields an UNKNOWN verdict carrying the
``RevocationProblem``.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.x509.oid import AuthorityInformationAccessOID
from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from certsrv.exceptions import ConfigurationError, RevocationError, RevocationProblem
from certsrv.revocation.cache import CachingSource, Fetched, RefreshingCache
from certsrv.revocation.decision import Scope, Status, Verdict
from certsrv.revocation.ocsp import (
    CertID,
    CertStatus,
    NoncePolicy,
    OCSPStatus,
    build_request,
    cert_id_key,
    new_nonce,
)
from certsrv.revocation.ocsp import verify_response as _verify_response
from certsrv.x509.certs import describe

__all__ = [
    "Fetcher",
    "OCSPChecker",
    "OCSPPair",
    "OCSPSettings",
    "check_responder_url",
    "responder_urls",
]

_log = Logger(namespace="certsrv.ocsp")

Fetcher = Callable[[str, bytes], "defer.Deferred[bytes]"]
OCSPPair = tuple[x509.Certificate, x509.Certificate, CertID]


@dataclass(frozen=True)
class OCSPSettings:
    """How OCSP is used; the values of the ``--ocsp*`` options."""

    mode: Scope = Scope.OFF
    responder: str | None = None
    require: bool = False
    timeout: float = 5.0
    nonce: NoncePolicy = "prefer"
    skew: float = 300.0
    max_age: float = 3600.0
    default_validity: float = 300.0
    unknown_ttl: float = 10.0
    cache_size: int = 10_000
    max_response_bytes: int = 64 * 1024

    @property
    def enabled(self) -> bool:
        """Whether any OCSP lookups happen at all."""
        return self.mode is not Scope.OFF


def check_responder_url(url: str, source: str = "--ocsp-responder") -> str:
    """Accept only plain ``http://host[:port]/path`` URLs, as RFC 6960 responders use."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise ConfigurationError(source, f"{url!r} is not a valid URL") from None
    if parts.scheme != "http" or not parts.hostname:
        raise ConfigurationError(source, f"{url!r} is not an http:// URL with a host")
    if parts.username or parts.password:
        raise ConfigurationError(source, f"{url!r} carries credentials")
    del port
    return url


# Failures that say nothing about the certificate: another responder may still answer.
_UNREACHABLE = frozenset({RevocationProblem.RESPONDER_DOWN, RevocationProblem.TIMEOUT,
                          RevocationProblem.HTTP_STATUS, RevocationProblem.TOO_LARGE,
                          RevocationProblem.BAD_URL})
_usable_urls: dict[str, bool] = {}


def _usable(url: str) -> bool:
    # Certificates of one CA name the same few URLs: check each once, not per handshake.
    usable = _usable_urls.get(url)
    if usable is None:
        try:
            check_responder_url(url, "AIA")
            usable = True
        except ConfigurationError:
            usable = False
        if len(_usable_urls) < 1024:
            _usable_urls[url] = usable
    return usable


def responder_urls(cert: x509.Certificate) -> list[str]:
    """The http:// OCSP responder URLs in the certificate's Authority Information Access."""
    try:
        aia = cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    except x509.ExtensionNotFound:
        return []
    urls = []
    for description in aia:
        if (description.access_method == AuthorityInformationAccessOID.OCSP
                and isinstance(description.access_location, x509.UniformResourceIdentifier)):
            url = description.access_location.value
            if _usable(url):
                urls.append(url)
    return urls


class OCSPChecker(CachingSource[CertID, Verdict]):
    """Looks up OCSP status through ``fetch``, caching verified answers until they go stale."""

    def __init__(self, settings: OCSPSettings, clock: IReactorTime, fetch: Fetcher) -> None:
        self.settings = settings
        self.clock = clock
        self.fetch = fetch
        self.cache: RefreshingCache[CertID, Verdict] = RefreshingCache(
            clock, settings.cache_size, settings.unknown_ttl, self._broken)
        # The issuer half of a CertID is the same for every certificate of one CA.
        self._issuer_hashes: dict[x509.Certificate, tuple[bytes, bytes]] = {}

    def pair(self, cert: x509.Certificate, issuer: x509.Certificate) -> OCSPPair | None:
        """The (certificate, issuer, CertID) triple of one lookup; None: nothing to ask."""
        if not self.settings.responder and not self.settings.require \
                and not responder_urls(cert):
            return None
        hashes = self._issuer_hashes.get(issuer)
        if hashes is None:
            if len(self._issuer_hashes) >= 256:
                self._issuer_hashes.clear()
            hashes = cert_id_key(issuer, issuer)[:2]
            self._issuer_hashes[issuer] = hashes
        return cert, issuer, CertID(hashes[0], hashes[1], cert.serial_number)

    def lookup_until(self, pair: OCSPPair) -> tuple[Verdict, float] | None:
        """The cached verdict and its refresh time; starts a background refresh when due."""
        return self.cache.lookup_until(pair[2], lambda: self._query(pair))

    def check(self, pair: OCSPPair) -> defer.Deferred[Verdict]:
        """The verdict for one certificate: cached, joined to a lookup in flight, or fetched."""
        return self.cache.get(pair[2], lambda: self._query(pair))

    def forget(self) -> None:
        """Drop every cached answer; lookups in flight still complete."""
        self.cache.forget()

    def _broken(self, failure: Failure) -> Verdict:
        # A bug, not a responder problem: the cache never keeps this verdict.
        _log.failure("OCSP lookup failed unexpectedly", failure)
        return Verdict(Status.UNKNOWN, "internal_error", str(failure.value), source="ocsp")

    @defer.inlineCallbacks
    def _query(self, pair: OCSPPair) -> Any:
        cert, issuer, _ = pair
        subject = describe(cert)["subject"] or ""
        urls = [self.settings.responder] if self.settings.responder else responder_urls(cert)
        if not urls:
            status = Status.UNKNOWN if self.settings.require else Status.GOOD
            return Fetched(Verdict(status, "no_responder",
                                   "the certificate names no OCSP responder", subject, "ocsp"),
                           self.clock.seconds() + self.settings.max_age)
        nonce = new_nonce() if self.settings.nonce != "off" else None
        request = build_request(cert, issuer, nonce)
        failure: RevocationError | None = None
        for url in urls:
            try:
                fetched = yield self._ask(url, request, pair, nonce, subject)
            except RevocationError as e:
                failure = e
                if e.reason in _UNREACHABLE:
                    continue  # the certificate may name another responder
                break
            return fetched
        assert failure is not None
        return Fetched(Verdict(Status.UNKNOWN, failure.reason, failure.detail, subject, "ocsp"))

    @defer.inlineCallbacks
    def _ask(self, url: str, request: bytes, pair: OCSPPair, nonce: bytes | None,
             subject: str) -> Any:
        """One responder's verified answer, or the RevocationError saying why there is none."""
        cert, issuer, _ = pair
        started = self.clock.seconds()
        try:
            der = yield self.fetch(url, request)
            now = self.clock.seconds()
            status = _verify_response(
                der, cert, issuer,
                now=datetime.datetime.fromtimestamp(now, datetime.UTC),
                nonce=nonce, nonce_policy=self.settings.nonce,
                skew=datetime.timedelta(seconds=self.settings.skew),
                default_validity=datetime.timedelta(seconds=self.settings.default_validity),
            )
        except RevocationError as e:
            seconds = self.clock.seconds() - started
            _log.warn("OCSP status of {subject} unknown: {reason} ({detail}) from {url}",
                      subject=subject, reason=e.reason, detail=e.detail, url=url,
                      outcome="unknown", seconds=seconds)
            self.on_lookup("ocsp", "unknown", seconds)
            raise
        verdict = _verdict_of(status.status, subject, status.revocation_reason)
        _log.info("OCSP status of {subject}: {status} from {url}", subject=subject,
                  status=verdict.status.value, url=url, outcome=verdict.status.value,
                  seconds=now - started)
        self.on_lookup("ocsp", verdict.status.value, now - started)
        return Fetched(verdict, self._expiry(status, now))

    def _expiry(self, status: OCSPStatus, now: float) -> float:
        if status.next_update is not None:
            until = status.next_update.timestamp()
        else:
            until = status.this_update.timestamp() + self.settings.default_validity
        return min(until, now + self.settings.max_age)


def _verdict_of(status: CertStatus, subject: str,
                reason: x509.ReasonFlags | None) -> Verdict:
    if status is CertStatus.GOOD:
        return Verdict(Status.GOOD, "good", "", subject, "ocsp")
    if status is CertStatus.REVOKED:
        detail = f"revoked ({reason.value})" if reason is not None else "revoked"
        return Verdict(Status.REVOKED, "revoked", detail, subject, "ocsp")
    return Verdict(Status.UNKNOWN, "responder_unknown",
                   "the responder does not know the certificate", subject, "ocsp")
