"""
The one cache of the network revocation sources: bounded, de-duplicated, refreshed ahead.

OCSP caches an answer per certificate, CRL fetching a verified CRL per distribution point
and issuer; both go through ``RefreshingCache``, which owns every rule about time:

- an answer is used until it expires, and the cache holds at most ``size`` of them (the
  least recently used go first);
- in the last fifth of an answer's lifetime (at most a minute early) the first lookup
  starts a fetch in the background and still gets the held answer, so a client in use never
  waits for a source once its status is known;
- every lookup of a key whose fetch is in flight joins that fetch;
- a failed fetch never replaces an answer still in force: the answer is kept and asked for
  again ``retry`` seconds later. With no such answer the failure itself is cached for
  ``retry`` seconds, so a source that is down is not asked on every handshake.

The cache never blocks: ``lookup_until`` reads it (the TLS verify callback may call it) and
``get`` returns a Deferred.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure

__all__ = ["Fetched", "RefreshingCache"]

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


@dataclass(frozen=True)
class Fetched(Generic[V]):
    """What one fetch found: an answer valid until ``expires``, or (``expires`` None) a
    failure, ``value`` then saying why."""

    value: V
    expires: float | None = None


class _Entry(Generic[V]):
    __slots__ = ("expires", "failed", "refresh_at", "stored", "value")

    def __init__(self, value: V, failed: bool, expires: float, refresh_at: float,
                 stored: float) -> None:
        self.value = value
        self.failed = failed
        self.expires = expires
        self.refresh_at = refresh_at
        self.stored = stored


class RefreshingCache(Generic[K, V]):
    """Answers per key, each fetched once however many ask, refreshed before they expire.

    The ``fetch`` given to ``lookup_until`` and ``get`` takes no arguments and returns a
    Deferred ``Fetched``; ``broken`` turns a fetch that failed unexpectedly (a bug, not a
    source problem) into the value its waiters get, which is never cached.
    """

    def __init__(self, clock: IReactorTime, size: int, retry: float,
                 broken: Callable[[Failure], V]) -> None:
        self.clock = clock
        self.size = size
        self.retry = retry
        self.broken = broken
        self.hits = 0  # lookups answered from the cache (read by the metrics)
        self._entries: OrderedDict[K, _Entry[V]] = OrderedDict()
        self._inflight: dict[K, list[defer.Deferred[V]]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def lookup_until(self, key: K, fetch: Callable[[], defer.Deferred[Fetched[V]]]
                     ) -> tuple[V, float] | None:
        """The value in force and the time until which it holds (now, when a refresh is due:
        it is started in the background); None when nothing is in force."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        now = self.clock.seconds()
        if now >= entry.expires:
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        if now >= entry.refresh_at:
            if key not in self._inflight:
                self._start(key, fetch, [])
            return entry.value, now  # a refresh is due: ask again next time
        return entry.value, entry.refresh_at

    def get(self, key: K, fetch: Callable[[], defer.Deferred[Fetched[V]]]
            ) -> defer.Deferred[V]:
        """The value: in force, joined to the fetch in flight, or fetched."""
        found = self.lookup_until(key, fetch)
        if found is not None:
            return defer.succeed(found[0])
        waiter: defer.Deferred[V] = defer.Deferred()
        waiters = self._inflight.get(key)
        if waiters is not None:
            waiters.append(waiter)
        else:
            self._start(key, fetch, [waiter])
        return waiter

    def held(self, key: K) -> V | None:
        """The last answer stored for ``key``, even expired; None if the last fetch failed."""
        entry = self._entries.get(key)
        return entry.value if entry is not None and not entry.failed else None

    def store(self, key: K, value: V, expires: float, failed: bool = False) -> V:
        """Keep ``value`` until ``expires``, to be refreshed in the last fifth of that time."""
        now = self.clock.seconds()
        lifetime = max(expires - now, 0.0)
        refresh_at = expires - min(lifetime / 5, 60.0)
        self._entries[key] = _Entry(value, failed, expires, refresh_at, now)
        self._entries.move_to_end(key)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)
        return value

    def forget(self) -> None:
        """Drop every cached answer; fetches in flight still complete."""
        self._entries.clear()

    def oldest_age(self) -> float:
        """Seconds since the oldest answer still in force was fetched (0: none is)."""
        now = self.clock.seconds()
        stored = [e.stored for e in self._entries.values() if not e.failed and now < e.expires]
        return now - min(stored) if stored else 0.0

    def _start(self, key: K, fetch: Callable[[], defer.Deferred[Fetched[V]]],
               waiters: list[defer.Deferred[V]]) -> None:
        self._inflight[key] = waiters
        kept = defer.maybeDeferred(fetch).addCallback(self._keep, key)
        kept.addErrback(self.broken).addCallback(self._settle, key)

    def _keep(self, fetched: Fetched[V], key: K) -> V:
        if fetched.expires is not None:
            return self.store(key, fetched.value, fetched.expires)
        now = self.clock.seconds()
        entry = self._entries.get(key)
        if entry is not None and not entry.failed and now < entry.expires:
            entry.refresh_at = now + self.retry  # keep the answer in force, ask again later
            return entry.value
        return self.store(key, fetched.value, now + self.retry, failed=True)

    def _settle(self, value: V, key: K) -> None:
        for waiter in self._inflight.pop(key, []):
            waiter.callback(value)


# Told of every responder query or CRL download: (source, outcome, seconds it took).
LookupObserver = Callable[[str, str, float], None]


def _unobserved(source: str, outcome: str, seconds: float) -> None:
    """Nobody counts lookups."""


class CachingSource(Generic[K, V]):
    """What every cached revocation source shares: its scope, its cache and their counts."""

    cache: RefreshingCache[K, V]
    settings: Any  # the source's settings; their ``mode`` is the source's scope
    # Set by whoever counts lookups (the server's metrics); called, never read from logs.
    on_lookup: LookupObserver = staticmethod(_unobserved)

    @property
    def mode(self) -> Any:
        """Whether the leaf alone or the whole chain is checked."""
        return self.settings.mode

    @property
    def hits(self) -> int:
        """Lookups answered from the cache."""
        return self.cache.hits

    def oldest_age(self) -> float:
        """Seconds since the oldest answer in force was fetched (``RefreshingCache``)."""
        return self.cache.oldest_age()

    def __len__(self) -> int:
        return len(self.cache)
