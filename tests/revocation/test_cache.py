"""The one cache of the network revocation sources, on its own (OCSP and CRL fetching use it)."""

from __future__ import annotations

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from certsrv.revocation.cache import Fetched, RefreshingCache


class Source:
    """Answers fetches when told, counting them."""

    def __init__(self) -> None:
        self.pending: list[defer.Deferred[Fetched[str]]] = []

    def __call__(self) -> defer.Deferred[Fetched[str]]:
        self.pending.append(defer.Deferred())
        return self.pending[-1]

    def answer(self, value: str, expires: float | None) -> None:
        self.pending.pop(0).callback(Fetched(value, expires))


def broken(failure: Failure) -> str:
    return f"broken: {failure.getErrorMessage()}"


class RefreshingCacheTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.source = Source()
        self.cache: RefreshingCache[str, str] = RefreshingCache(self.clock, 2, 10.0, broken)

    def test_one_fetch_for_every_waiter(self) -> None:
        waits = [self.cache.get("k", self.source) for _ in range(3)]
        self.assertEqual(len(self.source.pending), 1)
        self.source.answer("good", 100.0)
        self.assertEqual([self.successResultOf(w) for w in waits], ["good"] * 3)
        self.assertEqual(self.cache.lookup_until("k", self.source), ("good", 80.0))
        self.assertEqual(self.cache.hits, 1)

    def test_oldest_age(self) -> None:
        """Seconds since the oldest answer in force was fetched; failures and expired answers
        do not count, a failed refresh leaves the age growing."""
        self.assertEqual(self.cache.oldest_age(), 0.0)
        self.cache.get("a", self.source)
        self.source.answer("good", 100.0)
        self.clock.advance(30)
        self.cache.get("b", self.source)
        self.source.answer("down", None)  # a failure, cached for the retry time
        self.assertEqual(self.cache.oldest_age(), 30.0)
        self.clock.advance(55)
        self.cache.lookup_until("a", self.source)  # refresh due: started in the background
        self.source.answer("refresh failed", None)
        self.assertEqual(self.cache.oldest_age(), 85.0)
        self.clock.advance(20)  # "a" expired at 100
        self.assertEqual(self.cache.oldest_age(), 0.0)

    def test_refreshed_ahead_in_the_last_fifth(self) -> None:
        self.cache.get("k", self.source)
        self.source.answer("old", 100.0)
        self.clock.advance(81)
        self.assertEqual(self.cache.lookup_until("k", self.source), ("old", 81.0))
        self.assertEqual(len(self.source.pending), 1, "a refresh started in the background")
        self.cache.lookup_until("k", self.source)
        self.assertEqual(len(self.source.pending), 1, "and joined, not repeated")
        self.source.answer("new", 300.0)
        self.assertEqual(self.cache.lookup_until("k", self.source)[0], "new")

    def test_failed_refresh_keeps_the_answer_in_force(self) -> None:
        self.cache.get("k", self.source)
        self.source.answer("good", 100.0)
        self.clock.advance(85)
        self.cache.lookup_until("k", self.source)
        self.source.answer("down", None)
        self.assertEqual(self.cache.lookup_until("k", self.source), ("good", 95.0))
        self.clock.advance(15)  # expired: nothing is in force, the failure is not the answer
        self.assertIsNone(self.cache.lookup_until("k", self.source))
        self.assertEqual(self.cache.held("k"), "good", "the last answer, for rollback checks")

    def test_failure_cached_for_retry_seconds(self) -> None:
        wait = self.cache.get("k", self.source)
        self.source.answer("down", None)
        self.assertEqual(self.successResultOf(wait), "down")
        self.assertIsNone(self.cache.held("k"))
        self.clock.advance(9)
        self.assertEqual(self.cache.lookup_until("k", self.source)[0], "down")
        self.clock.advance(1)
        self.assertIsNone(self.cache.lookup_until("k", self.source))

    def test_unexpected_error_not_cached(self) -> None:
        wait = self.cache.get("k", lambda: defer.fail(RuntimeError("bug")))
        self.assertEqual(self.successResultOf(wait), "broken: bug")
        self.assertEqual(len(self.cache), 0)

    def test_bounded_least_recently_used_first(self) -> None:
        for key in ("a", "b"):
            self.cache.store(key, key, 100.0)
        self.cache.lookup_until("a", self.source)
        self.cache.store("c", "c", 100.0)
        self.assertEqual((self.cache.held("a"), self.cache.held("b"), len(self.cache)),
                         ("a", None, 2))

    def test_forget(self) -> None:
        self.cache.store("a", "a", 100.0)
        self.cache.forget()
        self.assertIsNone(self.cache.lookup_until("a", self.source))
