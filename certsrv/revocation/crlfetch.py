"""
CRLs fetched from the certificates' CRL Distribution Points: verified, cached per URL, refreshed.

``CRLChecker`` is a revocation source (``certsrv.revocation.decision.Checker``) like the
OCSP checker, and keeps its CRLs in the same cache (``certsrv.revocation.cache``). Pairs
are only ever made from chains OpenSSL has already validated, so every URL fetched was put
there by a trusted CA, never chosen by the client.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from certsrv.exceptions import CRLError, RevocationError, RevocationProblem
from certsrv.revocation.cache import CachingSource, Fetched, RefreshingCache
from certsrv.revocation.crlscope import (
    CertFacts,
    IndexedCRL,
    delta_fits,
    is_ca,
    listing,
    revocation_detail,
    unknown_entry_extension,
)
from certsrv.revocation.decision import Scope, Status, Verdict
from certsrv.revocation.http import BoundedFetcher, usable_url
from certsrv.x509.certs import describe
from certsrv.x509.names import canonical_der

__all__ = [
    "CRLAnswer",
    "CRLChecker",
    "CRLFetch",
    "CRLFetchSettings",
    "CRLFetcher",
    "CRLPair",
    "VerifiedCRL",
    "distribution_point",
    "verify_crl",
]

_log = Logger(namespace="certsrv.crl")

CRLFetch = Callable[[str], "defer.Deferred[bytes]"]
CacheKey = tuple[str, bytes]  # (distribution point URL, SHA-256 of the issuer certificate)
CRLPair = tuple[x509.Certificate, x509.Certificate, CacheKey | None]


@dataclass(frozen=True)
class CRLFetchSettings:
    """How CRLs are fetched and cached; the values of the ``--crl-fetch*`` options."""

    mode: Scope = Scope.OFF
    require: bool = False
    timeout: float = 10.0
    max_bytes: int = 10 * 1024 * 1024
    max_age: float = 24 * 3600.0
    default_validity: float = 300.0
    unknown_ttl: float = 30.0
    cache_size: int = 64
    skew: float = 300.0

    @property
    def enabled(self) -> bool:
        """Whether any CRLs are fetched at all."""
        return self.mode is not Scope.OFF


def delta_point(extensions: x509.Extensions) -> str | None:
    """The first plain http:// URL of a freshestCRL extension (where delta CRLs are)."""
    try:
        points = extensions.get_extension_for_class(x509.FreshestCRL).value
    except (x509.ExtensionNotFound, ValueError):
        return None
    for point in points:
        if point.crl_issuer is not None or point.reasons is not None:
            continue
        for name in point.full_name or ():
            if isinstance(name, x509.UniformResourceIdentifier) and usable_url(name.value):
                return name.value
    return None


def distribution_point(cert: x509.Certificate) -> str | None:
    """The first plain http:// full-name URL among the certificate's CRL Distribution Points."""
    try:
        points = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    except x509.ExtensionNotFound:
        return None
    except Exception as e:
        raise CRLError(RevocationProblem.MALFORMED,
                       f"unreadable certificate extensions ({e})") from None
    for point in points:
        # A point limited to some reasons, or served by another CRL issuer (an indirect
        # CRL), cannot alone say a certificate is not revoked.
        if point.full_name is None or point.reasons is not None or point.crl_issuer is not None:
            continue
        for name in point.full_name:
            if isinstance(name, x509.UniformResourceIdentifier) and usable_url(name.value):
                return name.value
    return None


@dataclass(frozen=True, eq=False)
class VerifiedCRL:
    """A CRL that parsed, names and is signed by the expected issuer, and is current."""

    crl: x509.CertificateRevocationList
    revoked: frozenset[int]
    last_update: float
    next_update: float | None
    only_user_certs: bool = False
    only_ca_certs: bool = False
    index: IndexedCRL | None = None  # for deltas: numbers, scope, removeFromCRL entries
    freshest: str | None = None  # where its delta CRLs are (freshestCRL), if anywhere


def verify_crl(data: bytes, issuer: x509.Certificate, url: str, now: float,
               skew: float, delta: bool = False) -> VerifiedCRL:
    """Parse ``data`` (DER or PEM) and check it as ``issuer``'s CRL at ``url`` (a delta CRL
    if ``delta``: from a freshestCRL point); CRLError if not."""
    try:
        return _verify_crl(data, issuer, url, now, skew, delta)
    except CRLError:
        raise
    except Exception as e:  # anything cryptography raises on hostile input
        raise CRLError(RevocationProblem.MALFORMED,
                       f"{url}: unusable CRL ({e.__class__.__name__}: {e})"
                       ) from None


def _verify_crl(data: bytes, issuer: x509.Certificate, url: str, now: float,
                skew: float, delta: bool) -> VerifiedCRL:
    try:
        if b"-----BEGIN X509 CRL-----" in data:
            crl = x509.load_pem_x509_crl(data)
        else:
            crl = x509.load_der_x509_crl(data)
        crl_issuer = crl.issuer
        last_moment = crl.last_update_utc
        next_moment = crl.next_update_utc
        extensions = crl.extensions
    except ValueError as e:
        raise CRLError(RevocationProblem.MALFORMED, f"{url} does not hold a CRL ({e})") from None
    if canonical_der(crl_issuer) != canonical_der(issuer.subject):
        raise CRLError(RevocationProblem.WRONG_ISSUER, f"CRL from {url} is issued by "
                                                       f"{crl_issuer.rfc4514_string()!r}, not "
                                                       f"{issuer.subject.rfc4514_string()!r}")
    _check_crl_sign(issuer, url)
    try:
        signed = crl.is_signature_valid(issuer.public_key())  # type: ignore[arg-type]
    except (TypeError, ValueError) as e:
        raise CRLError(RevocationProblem.BAD_SIGNATURE, f"CRL from {url}: {e}") from None
    if not signed:
        raise CRLError(RevocationProblem.BAD_SIGNATURE,
                       f"CRL from {url} does not verify with the key of "
                       f"{issuer.subject.rfc4514_string()!r}")
    last_update = last_moment.timestamp()
    if last_update > now + skew:
        raise CRLError(RevocationProblem.NOT_YET_VALID, f"CRL from {url} has lastUpdate "
                                                        f"{last_moment.isoformat()}, in the future")
    next_update = None
    if next_moment is not None:
        next_update = next_moment.timestamp()
        if next_update < now - skew:
            raise CRLError(RevocationProblem.STALE, f"CRL from {url} expired at nextUpdate "
                                                    f"{next_moment.isoformat()}")
    only_user, only_ca = _check_scope(extensions, url, delta)
    problem = unknown_entry_extension(crl)
    if problem is not None:
        raise CRLError(RevocationProblem.UNSUPPORTED, f"CRL from {url} has {problem}")
    try:
        index = IndexedCRL.index(crl)
    except ValueError as e:
        raise CRLError(RevocationProblem.MALFORMED,
                       f"CRL from {url} has a malformed entry ({e})") from None
    revoked = index.revoked.get(canonical_der(crl_issuer), frozenset())
    return VerifiedCRL(crl, revoked, last_update, next_update, only_user, only_ca, index,
                       delta_point(extensions))


def _check_crl_sign(issuer: x509.Certificate, url: str) -> None:
    try:
        usage = issuer.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return
    if not usage.crl_sign:
        raise CRLError(RevocationProblem.WRONG_ISSUER,
                       f"CRL from {url}: the issuer's keyUsage lacks cRLSign")


def _check_scope(extensions: x509.Extensions, url: str, delta: bool) -> tuple[bool, bool]:
    """Refuse CRLs that cannot be complete for certificates pointing at ``url`` (RFC 5280);
    a delta CRL (``delta``) is in the scope of its complete CRL, checked when combined."""
    is_delta = False
    for extension in extensions:
        if isinstance(extension.value, x509.UnrecognizedExtension) and extension.critical:
            raise CRLError(RevocationProblem.UNSUPPORTED,
                           f"CRL from {url} has an unknown critical extension "
                           f"{extension.oid.dotted_string}")
        is_delta = is_delta or isinstance(extension.value, x509.DeltaCRLIndicator)
    if is_delta != delta:
        raise CRLError(RevocationProblem.UNSUPPORTED,
                       f"{url} serves a delta CRL" if is_delta else
                       f"{url} (a freshestCRL point) serves no delta CRL")
    try:
        idp = extensions.get_extension_for_class(x509.IssuingDistributionPoint).value
    except x509.ExtensionNotFound:
        return False, False
    if idp.indirect_crl or idp.only_some_reasons is not None:
        raise CRLError(RevocationProblem.UNSUPPORTED,
                       f"CRL from {url} is indirect or covers only some reasons")
    if idp.only_contains_attribute_certs:
        raise CRLError(RevocationProblem.WRONG_SCOPE,
                       f"CRL from {url} covers only attribute certificates")
    if not delta and idp.full_name is not None and not any(
            isinstance(name, x509.UniformResourceIdentifier) and name.value == url
            for name in idp.full_name):
        raise CRLError(RevocationProblem.WRONG_SCOPE,
                       f"CRL from {url} names another distribution point")
    return idp.only_contains_user_certs, idp.only_contains_ca_certs


Offload = Callable[[Callable[[], VerifiedCRL]], "defer.Deferred[VerifiedCRL]"]
_MALFORMED: CacheKey = ("", b"")  # the key of a certificate whose extensions do not parse
_DELTA = "delta "  # before a freshestCRL URL in a cache key


class CRLAnswer:
    """What the cache holds for one distribution point: a verified CRL, or why there is none."""

    __slots__ = ("crl", "failure", "reasons", "unmatched")

    def __init__(self, crl: VerifiedCRL | None, failure: tuple[str, str] | None = None
                 ) -> None:
        self.crl = crl
        self.failure = failure
        self.reasons: dict[int, str] = {}
        self.unmatched: set[int] = set()  # complete CRLs (ids) this delta was logged as not fitting

    def verdict(self, cert: x509.Certificate, delta: CRLAnswer | None = None) -> Verdict:
        """What this answer says of ``cert``, updated by ``delta`` (the answer of the
        freshestCRL point; None: there is none)."""
        subject = cert.subject.rfc4514_string()
        if self.crl is None:
            reason, detail = self.failure or ("internal_error", "")
            return Verdict(Status.UNKNOWN, reason, detail, subject, "crl-fetch")
        crl = self.crl
        if crl.only_user_certs or crl.only_ca_certs:
            ca = is_ca(cert)
            if (crl.only_user_certs and ca) or (crl.only_ca_certs and not ca):
                return Verdict(Status.UNKNOWN, "wrong_scope",
                               "the CRL does not cover this kind of certificate", subject,
                               "crl-fetch")
        serial = cert.serial_number
        if delta is not None:
            return self._with_delta(cert, delta)
        if serial not in crl.revoked:
            return Verdict(Status.GOOD, "good", "", subject, "crl-fetch")
        if serial not in self.reasons:
            # Found once per revoked serial: the entry scan is linear, the set above is not.
            self.reasons[serial] = revocation_detail(crl.crl, serial)
        detail = self.reasons[serial]
        return Verdict(Status.REVOKED, "revoked", detail, subject, "crl-fetch")


    def _with_delta(self, cert: x509.Certificate, delta: CRLAnswer) -> Verdict:
        subject = cert.subject.rfc4514_string()
        assert self.crl is not None and self.crl.index is not None
        base = self.crl.index
        listed_in_base = cert.serial_number in self.crl.revoked
        if delta.crl is None or delta.crl.index is None:
            if listed_in_base:
                return self.verdict(cert)
            reason, detail = delta.failure or ("internal_error", "")
            return Verdict(Status.UNKNOWN, reason, f"delta CRL: {detail}", subject, "crl-fetch")
        if not delta_fits(base, delta.crl.index):
            if id(base) not in delta.unmatched:
                delta.unmatched.add(id(base))
                _log.warn("delta CRL of {issuer} (base CRL number {base}) does not update the "
                          "complete CRL held (number {number}); the complete CRL alone decides",
                          issuer=base.crl.issuer.rfc4514_string(),
                          base=delta.crl.index.delta_base, number=base.number,
                          reason="crl_delta_unmatched")
            return self.verdict(cert)
        if listing(base, delta.crl.index, CertFacts.of(cert)):
            source = delta.crl if cert.serial_number in delta.crl.revoked else self.crl
            detail = revocation_detail(source.crl, cert.serial_number)
            return Verdict(Status.REVOKED, "revoked", detail, subject, "crl-fetch")
        return Verdict(Status.GOOD, "good", "", subject, "crl-fetch")


def _inline(work: Callable[[], VerifiedCRL]) -> defer.Deferred[VerifiedCRL]:
    return defer.execute(work)


class CRLChecker(CachingSource[CacheKey, "CRLAnswer"]):
    """Looks up revocation in CRLs fetched through ``fetch``, cached per distribution point."""

    def __init__(self, settings: CRLFetchSettings, clock: IReactorTime, fetch: CRLFetch,
                 offload: Offload = _inline) -> None:
        self.settings = settings
        self.clock = clock
        self.fetch = fetch
        # Parsing, verifying and indexing a large CRL takes CPU (about 0.2 s for 200,000
        # entries): ``offload`` may run it in a thread instead of on the reactor.
        self.offload = offload
        self.cache: RefreshingCache[CacheKey, CRLAnswer] = RefreshingCache(
            clock, settings.cache_size, settings.unknown_ttl, self._broken)

    def pair(self, cert: x509.Certificate, issuer: x509.Certificate) -> CRLPair | None:
        """The (certificate, issuer, cache key) of one lookup (validated chains only); None:
        the certificate names no distribution point and none is required."""
        try:
            url = distribution_point(cert)
        except CRLError:
            return cert, issuer, _MALFORMED
        if url is None:
            return (cert, issuer, None) if self.settings.require else None
        return cert, issuer, (url, issuer.fingerprint(hashes.SHA256()))

    def lookup_until(self, pair: CRLPair) -> tuple[Verdict, float] | None:
        """The verdict from a current cached CRL and its refresh time; starts a background
        refresh when it is due."""
        cert, issuer, key = pair
        if key is None or key is _MALFORMED:
            return self._without_point(cert, key), float("inf")
        found = self.cache.lookup_until(key, lambda: self._query(key, issuer))
        if found is None:
            return None
        answer, until = found
        delta_key = self._delta_key(cert, answer, key)
        if delta_key is None:
            return answer.verdict(cert), until
        delta = self.cache.lookup_until(delta_key,
                                        lambda: self._query(delta_key, issuer, delta=True))
        if delta is None:
            return None
        return answer.verdict(cert, delta[0]), min(until, delta[1])

    def check(self, pair: CRLPair) -> defer.Deferred[Verdict]:
        """The verdict for one certificate: cached, joined to a fetch in flight, or fetched."""
        cert, issuer, key = pair
        if key is None or key is _MALFORMED:
            return defer.succeed(self._without_point(cert, key))
        answer = self.cache.get(key, lambda: self._query(key, issuer))

        def with_delta(answer: CRLAnswer) -> defer.Deferred[Verdict]:
            delta_key = self._delta_key(cert, answer, key)
            if delta_key is None:
                return defer.succeed(answer.verdict(cert))
            delta = self.cache.get(delta_key,
                                   lambda: self._query(delta_key, issuer, delta=True))
            return delta.addCallback(lambda found: answer.verdict(cert, found))
        return answer.addCallback(with_delta)

    def _delta_key(self, cert: x509.Certificate, answer: CRLAnswer, key: CacheKey
                   ) -> CacheKey | None:
        """Where the delta CRL updating ``answer``'s CRL is (the certificate's freshestCRL,
        else the CRL's), as a cache key; None: no delta to fetch."""
        if answer.crl is None:
            return None
        try:
            url = delta_point(cert.extensions) or answer.crl.freshest
        except ValueError:
            url = answer.crl.freshest
        return (_DELTA + url, key[1]) if url is not None else None

    def forget(self) -> None:
        """Drop every cached answer; lookups in flight still complete."""
        self.cache.forget()

    def _without_point(self, cert: x509.Certificate, key: CacheKey | None) -> Verdict:
        if key is _MALFORMED:
            return Verdict(Status.UNKNOWN, "malformed", "unreadable CRL distribution points",
                           describe(cert)["subject"] or "", "crl-fetch")
        status = Status.UNKNOWN if self.settings.require else Status.GOOD
        return Verdict(status, "no_crl_dp", "the certificate names no http CRL distribution "
                       "point", cert.subject.rfc4514_string(), "crl-fetch")

    def _broken(self, failure: Failure) -> CRLAnswer:
        # A bug, not a distribution point problem: the cache never keeps this answer.
        _log.failure("CRL fetch failed unexpectedly", failure)
        return CRLAnswer(None, ("internal_error", str(failure.value)))

    @defer.inlineCallbacks
    def _query(self, key: CacheKey, issuer: x509.Certificate, delta: bool = False) -> Any:
        url = key[0].removeprefix(_DELTA)
        settings = self.settings
        started = self.clock.seconds()
        try:
            data = yield self.fetch(url)
            now = self.clock.seconds()
            verified = yield self.offload(
                lambda: verify_crl(data, issuer, url, now, settings.skew, delta))
            held = self.cache.held(key)
            if (held is not None and held.crl is not None
                    and verified.last_update < held.crl.last_update):
                raise CRLError(RevocationProblem.ROLLBACK,
                               f"{url} served a CRL older than the one held")
        except RevocationError as e:
            seconds = self.clock.seconds() - started
            _log.warn("CRL from {url} unusable: {reason} ({detail})", url=url, reason=e.reason,
                      detail=e.detail, outcome="unknown", seconds=seconds)
            self.on_lookup("crl", "unknown", seconds)
            return Fetched(CRLAnswer(None, (e.reason, e.detail)))
        expires = self._expiry(verified, now)
        _log.info("CRL of {issuer} from {url}: {count} revoked, cached for {ttl:.0f} s",
                  issuer=issuer.subject.rfc4514_string(), url=url, count=len(verified.revoked),
                  ttl=expires - now, outcome="good", seconds=now - started)
        self.on_lookup("crl", "good", now - started)
        return Fetched(CRLAnswer(verified), expires)

    def _expiry(self, verified: VerifiedCRL, now: float) -> float:
        settings = self.settings
        if verified.next_update is None:
            until = now + settings.default_validity
        else:
            until = verified.next_update
        expires = min(until, now + settings.max_age)
        if expires <= now and verified.next_update is not None:
            # Past nextUpdate but inside the skew: use it briefly rather than refetch at once.
            expires = min(now + settings.unknown_ttl, verified.next_update + settings.skew)
        return expires


class CRLFetcher(BoundedFetcher):
    """GETs CRLs over plain http through the bounded fetcher."""

    def __init__(self, reactor: Any, clock: IReactorTime, timeout: float,
                 max_bytes: int = 10 * 1024 * 1024) -> None:
        super().__init__(reactor, clock, timeout, max_bytes, "CRL", error=CRLError)

    def __call__(self, url: str) -> defer.Deferred[bytes]:
        """The response body, or a CRLError failure saying why there is none."""
        return self.fetch(b"GET", url, {
            b"Accept": [b"application/pkix-crl, application/x-pkcs7-crl, */*"]})
