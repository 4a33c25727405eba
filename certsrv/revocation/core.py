"""
OCSP status for client certificates: a bounded cache, de-duplicated lookups, background refresh.

The TLS verify callback runs inside OpenSSL and must not wait, so it only reads the cache
(``lookup``). Everything that talks to a responder returns a Deferred (``check``) and never
fails: a responder that is down, slow, or answers something untrustworthy yields an UNKNOWN
verdict carrying the reason, and the caller applies ``--revocation-fail``.
"""

from __future__ import annotations

import datetime
import enum
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.x509.oid import AuthorityInformationAccessOID
from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from certsrv.exceptions import ConfigurationError, OCSPError
from certsrv.revocation.ocsp import (
    CertID,
    CertStatus,
    NoncePolicy,
    build_request,
    cert_id_key,
    new_nonce,
)
from certsrv.revocation.ocsp import verify_response as _verify_response
from certsrv.x509.certs import describe

__all__ = [
    "Fetcher",
    "OCSPChecker",
    "OCSPMode",
    "OCSPSettings",
    "Plan",
    "Revocation",
    "Status",
    "Verdict",
    "check_responder_url",
]

_log = Logger(namespace="certsrv.ocsp")

Fetcher = Callable[[str, bytes], "defer.Deferred[bytes]"]


class OCSPMode(enum.Enum):
    """Which certificates of a client's chain are checked with OCSP."""

    OFF = "off"
    LEAF = "leaf"
    CHAIN = "chain"


class Status(enum.Enum):
    """What certsrv concluded about one certificate."""

    GOOD = "good"
    REVOKED = "revoked"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class Verdict:
    """A revocation verdict with a stable reason code and a human detail."""

    status: Status
    reason: str
    detail: str = ""
    subject: str = ""
    source: str = ""
    depth: int = 0  # where the certificate sits in the chain decided on (0: the client)

    @property
    def revoked(self) -> bool:
        """Whether the certificate is known to be revoked."""
        return self.status is Status.REVOKED

    @property
    def authoritative(self) -> bool:
        """A source's own answer (not "nothing to ask": no responder, no distribution point)."""
        return self.status is not Status.GOOD or self.reason == "good"


@dataclass(frozen=True)
class OCSPSettings:
    """How OCSP is used; the values of the ``--ocsp*`` options."""

    mode: OCSPMode = OCSPMode.OFF
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
        return self.mode is not OCSPMode.OFF


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
_UNREACHABLE = frozenset({"responder_down", "timeout", "http_status", "too_large", "bad_url"})
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


class _Entry:
    __slots__ = ("expires", "refresh_at", "verdict")

    def __init__(self, verdict: Verdict, expires: float, refresh_at: float) -> None:
        self.verdict = verdict
        self.expires = expires
        self.refresh_at = refresh_at


Pair = tuple[x509.Certificate, x509.Certificate, CertID]


class CombinedLookups:
    """Lookups over several certificates, for a checker that has ``lookup_until`` and ``check``.

    ``lookup_until`` gives a cached verdict with the time until which it cannot change (its
    entry's refresh time): a connection may keep using it until then without asking again.
    """

    def lookup_until(self, pair: Any) -> tuple[Verdict, float] | None:
        raise NotImplementedError

    def check(self, pair: Any) -> defer.Deferred[Verdict]:
        raise NotImplementedError

    def lookup(self, pair: Any) -> Verdict | None:
        """The cached verdict, if still fresh; starts a background refresh when it is due."""
        found = self.lookup_until(pair)
        return found[0] if found is not None else None

    def lookup_all_until(self, pairs: Sequence[Any]) -> tuple[Verdict, float] | None:
        """The combined cached verdict of several certificates and how long it holds."""
        verdicts = []
        until = float("inf")
        for pair in pairs:
            found = self.lookup_until(pair)
            if found is None:
                return None
            verdicts.append(found[0])
            until = min(until, found[1])
        return combine(verdicts), until

    def lookup_all(self, pairs: Sequence[Any]) -> Verdict | None:
        """The combined cached verdict of several certificates, or None if any is missing."""
        found = self.lookup_all_until(pairs)
        return found[0] if found is not None else None

    def check_all(self, pairs: Sequence[Any]) -> defer.Deferred[Verdict]:
        """The combined verdict of several certificates, asking for what is not cached."""
        waits = [self.check(pair) for pair in pairs]
        gathered: defer.Deferred[list[Verdict]] = defer.gatherResults(waits)
        return gathered.addCallback(combine)


class OCSPChecker(CombinedLookups):
    """Looks up OCSP status through ``fetch``, caching verified answers until they go stale."""

    def __init__(self, settings: OCSPSettings, clock: IReactorTime, fetch: Fetcher) -> None:
        self.settings = settings
        self.clock = clock
        self.fetch = fetch
        self._cache: OrderedDict[CertID, _Entry] = OrderedDict()
        self._inflight: dict[CertID, list[defer.Deferred[Verdict]]] = {}
        # The issuer half of a CertID is the same for every certificate of one CA.
        self._issuer_hashes: dict[x509.Certificate, tuple[bytes, bytes]] = {}
        self.queries = 0
        self.hits = 0

    @property
    def mode(self) -> OCSPMode:
        """Whether the leaf alone or the whole chain is checked."""
        return self.settings.mode

    def pair(self, cert: x509.Certificate, issuer: x509.Certificate) -> Pair | None:
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

    def lookup_until(self, pair: Pair) -> tuple[Verdict, float] | None:
        """The cached verdict and its refresh time; starts a background refresh when due."""
        entry = self._cache.get(pair[2])
        if entry is None:
            return None
        now = self.clock.seconds()
        if now >= entry.expires:
            return None
        self._cache.move_to_end(pair[2])
        self.hits += 1
        if now >= entry.refresh_at:
            if pair[2] not in self._inflight:
                self.check(pair, refresh=True)
            return entry.verdict, now  # a refresh is due: ask again on the next request
        return entry.verdict, entry.refresh_at

    def check(self, pair: Pair, refresh: bool = False  # type: ignore[override]
              ) -> defer.Deferred[Verdict]:
        """The verdict for one certificate: cached, joined to a lookup in flight, or fetched."""
        if not refresh:
            cached = self.lookup(pair)
            if cached is not None:
                return defer.succeed(cached)
        waiter: defer.Deferred[Verdict] = defer.Deferred()
        waiters = self._inflight.get(pair[2])
        if waiters is not None:
            waiters.append(waiter)
            return waiter
        self._inflight[pair[2]] = [waiter]
        self._query(pair).addBoth(self._settle, pair)
        return waiter

    def _settle(self, result: Verdict | Failure, pair: Pair) -> None:
        if isinstance(result, Failure):  # a bug, not a responder problem: never cache it
            _log.failure("OCSP lookup failed unexpectedly", result)
            verdict = Verdict(Status.UNKNOWN, "internal_error", str(result.value), source="ocsp")
        else:
            verdict = result
        for waiter in self._inflight.pop(pair[2], []):
            waiter.callback(verdict)

    @defer.inlineCallbacks
    def _query(self, pair: Pair) -> Any:
        cert, issuer, cert_id = pair
        subject = describe(cert)["subject"] or ""
        urls = [self.settings.responder] if self.settings.responder else responder_urls(cert)
        if not urls:
            if self.settings.require:
                verdict = Verdict(Status.UNKNOWN, "no_responder",
                                  "the certificate names no OCSP responder", subject, "ocsp")
            else:
                verdict = Verdict(Status.GOOD, "no_responder",
                                  "the certificate names no OCSP responder", subject, "ocsp")
            self._store(cert_id, verdict, self.clock.seconds() + self.settings.max_age)
            return verdict
        nonce = new_nonce() if self.settings.nonce != "off" else None
        request = build_request(cert, issuer, nonce)
        self.queries += 1
        failure: OCSPError | None = None
        for url in urls:
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
            except OCSPError as e:
                failure = e
                _log.warn("OCSP status of {subject} unknown: {reason} ({detail}) from {url}",
                          subject=subject, reason=e.reason, detail=e.detail, url=url,
                          outcome="unknown", seconds=self.clock.seconds() - started)
                if e.reason in _UNREACHABLE:
                    continue  # the certificate may name another responder
                break
            verdict = _verdict_of(status.status, subject, status.revocation_reason)
            self._store(cert_id, verdict, self._expiry(status.this_update, status.next_update,
                                                       now))
            _log.info("OCSP status of {subject}: {status} from {url}", subject=subject,
                      status=verdict.status.value, url=url, outcome=verdict.status.value,
                      seconds=now - started)
            return verdict
        assert failure is not None
        now = self.clock.seconds()
        held = self._cache.get(cert_id)
        if held is not None and now < held.expires:
            # A failed refresh keeps the answer still in force, and tries again a little later.
            held.refresh_at = now + self.settings.unknown_ttl
            return held.verdict
        verdict = Verdict(Status.UNKNOWN, failure.reason, failure.detail, subject, "ocsp")
        self._store(cert_id, verdict, now + self.settings.unknown_ttl)
        return verdict

    def forget(self) -> None:
        """Drop every cached answer; lookups in flight still complete."""
        self._cache.clear()

    def _expiry(self, this_update: datetime.datetime, next_update: datetime.datetime | None,
                now: float) -> float:
        if next_update is not None:
            until = next_update.timestamp()
        else:
            until = this_update.timestamp() + self.settings.default_validity
        return min(until, now + self.settings.max_age)

    def _store(self, cert_id: CertID, verdict: Verdict, expires: float) -> None:
        now = self.clock.seconds()
        lifetime = max(expires - now, 0.0)
        # Refresh ahead of expiry (the last fifth of the lifetime, at most a minute early) so
        # active clients never wait for a responder once their status is known.
        refresh_at = expires - min(lifetime / 5, 60.0)
        self._cache[cert_id] = _Entry(verdict, expires, refresh_at)
        self._cache.move_to_end(cert_id)
        while len(self._cache) > self.settings.cache_size:
            self._cache.popitem(last=False)

    def __len__(self) -> int:
        return len(self._cache)


def _verdict_of(status: CertStatus, subject: str,
                reason: x509.ReasonFlags | None) -> Verdict:
    if status is CertStatus.GOOD:
        return Verdict(Status.GOOD, "good", "", subject, "ocsp")
    if status is CertStatus.REVOKED:
        detail = f"revoked ({reason.value})" if reason is not None else "revoked"
        return Verdict(Status.REVOKED, "revoked", detail, subject, "ocsp")
    return Verdict(Status.UNKNOWN, "responder_unknown",
                   "the responder does not know the certificate", subject, "ocsp")


def combine(verdicts: Sequence[Verdict]) -> Verdict:
    """Revoked beats unknown beats good (one source's answers for several certificates)."""
    for status in (Status.REVOKED, Status.UNKNOWN):
        for verdict in verdicts:
            if verdict.status is status:
                return verdict
    return verdicts[0] if verdicts else Verdict(Status.GOOD, "not_checked")


class Checker(Protocol):
    """A revocation source: CRL files, CRLs fetched from distribution points, or OCSP."""

    @property
    def mode(self) -> OCSPMode: ...

    def pair(self, cert: x509.Certificate, issuer: x509.Certificate) -> Any | None: ...

    def lookup_until(self, pair: Any) -> tuple[Verdict, float] | None: ...

    def check(self, pair: Any) -> defer.Deferred[Verdict]: ...


# (source, what to ask it, depth of the certificate in the chain: 0 is the client).
Plan = tuple[tuple[Checker, Any, int], ...]


def decide(answers: Sequence[tuple[int, Verdict | None]]) -> Verdict | None:
    """One certificate chain's status from every source's answer (None: not answered yet).

    Per certificate (RFC 5280 6.3; Java's PKIXRevocationChecker falls back the same way):
    revoked by any source is revoked; good from at least one authoritative source and
    revoked by none is good; unknown only when no source could answer. The chain is revoked
    if any certificate is, unknown if any is, else good. None: the answer depends on a
    source that has not answered yet.
    """
    by_depth: dict[int, list[Verdict | None]] = {}
    for depth, verdict in answers:
        if verdict is not None and verdict.revoked:
            return replace(verdict, depth=depth) if depth else verdict
        by_depth.setdefault(depth, []).append(verdict)
    unknown: Verdict | None = None
    good: Verdict | None = None
    for depth, verdicts in by_depth.items():
        if None in verdicts:
            return None
        known = [v for v in verdicts if v is not None]
        authority = next((v for v in known if v.status is Status.GOOD and v.authoritative),
                         None)
        failed = next((v for v in known if v.status is Status.UNKNOWN), None)
        if authority is not None:
            if good is None and failed is not None:
                # Say which source decided, and which could not answer.
                good = replace(authority, detail=f"{failed.source} could not answer "
                                                 f"({failed.reason})")
            good = good or authority
            continue
        if failed is not None and unknown is None:
            unknown = replace(failed, depth=depth) if depth else failed
        else:
            good = good or (known[0] if known else None)
    return unknown or good or Verdict(Status.GOOD, "not_checked")


class Revocation:
    """Every revocation source consulted for a certificate chain, decided as one."""

    def __init__(self, checkers: Sequence[Checker]) -> None:
        self.checkers = tuple(checkers)

    def plan(self, chain: dict[int, x509.Certificate]) -> Plan:
        """What to ask each source about a chain given by depth (0 = the client)."""
        plan = []
        for checker in self.checkers:
            last = len(chain) - 1 if checker.mode is OCSPMode.CHAIN else 1
            for depth in range(0, last):
                if depth + 1 in chain:
                    pair = checker.pair(chain[depth], chain[depth + 1])
                    if pair is not None:
                        plan.append((checker, pair, depth))
        return tuple(plan)

    def lookup_until(self, plan: Plan) -> tuple[Verdict | None, float]:
        """The decision from cached answers (None: it needs an answer not cached yet), and
        the time until which it cannot change."""
        answers: list[tuple[int, Verdict | None]] = []
        until = float("inf")
        for checker, pair, depth in plan:
            found = checker.lookup_until(pair)
            if found is None:
                answers.append((depth, None))
            else:
                answers.append((depth, found[0]))
                until = min(until, found[1])
        return decide(answers), until

    def check(self, plan: Plan) -> defer.Deferred[Verdict]:
        """The decision, asking every source that has no fresh answer."""
        waits = [checker.check(pair) for checker, pair, _ in plan]
        gathered: defer.Deferred[list[Verdict]] = defer.gatherResults(waits)

        def decided(verdicts: list[Verdict]) -> Verdict:
            verdict = decide([(depth, v) for (_, _, depth), v in zip(plan, verdicts,
                                                                      strict=True)])
            assert verdict is not None
            return verdict
        return gathered.addCallback(decided)

    def forget(self) -> None:
        """Drop every cached answer: the next use asks again (SIGHUP does this)."""
        for checker in self.checkers:
            clear = getattr(checker, "forget", None)
            if clear is not None:
                clear()
