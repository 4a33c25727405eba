"""The PKI index as a revocation source."""

from __future__ import annotations

import datetime
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from cryptography import x509
from twisted.internet import defer
from twisted.trial.unittest import SynchronousTestCase

from certsrv.pki.indexsource import DEFAULT_INTERVAL, IndexSource
from certsrv.pki.store import PKIStore
from certsrv.revocation.decision import Revocation, Status
from tests._support import clock_at_now


class IndexSourceTests(SynchronousTestCase):
    """Answers from the index as it is at each lookup."""

    def setUp(self) -> None:
        directory = Path(tempfile.mkdtemp())
        self.addCleanup(shutil.rmtree, directory)
        self.clock = clock_at_now()
        self.store = PKIStore.init(directory / "pki")
        self.client = x509.load_pem_x509_certificate((directory / "pki" / "client.pem")
                                                     .read_bytes())
        self.source = IndexSource(self.store, self.clock)

    def test_revoked_by_another_process_counts_within_the_interval(self) -> None:
        pair = self.source.pair(self.client, self.store.ca.certificate)
        assert pair is not None
        found = self.source.lookup_until(pair)
        assert found is not None
        self.assertIs(found[0].status, Status.GOOD)
        self.assertEqual(found[1], self.clock.seconds() + DEFAULT_INTERVAL)
        PKIStore.open(self.store.path).revoke("client", x509.ReasonFlags.key_compromise)
        self.assertIs(self.successResultOf(self.source.check(pair)).status, Status.GOOD)
        self.clock.advance(DEFAULT_INTERVAL)
        verdict = self.successResultOf(self.source.check(pair))
        self.assertIs(verdict.status, Status.REVOKED)
        self.assertIn("keyCompromise", verdict.detail)

    def test_reads_off_the_reactor_and_waits_for_the_copy(self) -> None:
        reads: list[tuple[defer.Deferred[object], object]] = []

        def later(work: object) -> defer.Deferred[object]:
            waiting: defer.Deferred[object] = defer.Deferred()
            reads.append((waiting, work))
            return waiting

        source = IndexSource(self.store, self.clock, offload=later)
        pair = source.pair(self.client, self.store.ca.certificate)
        assert pair is not None
        self.assertIsNone(source.lookup_until(pair), "no copy yet: the handshake cannot say")
        first, second = source.check(pair), source.check(pair)
        self.assertNoResult(first)
        self.assertEqual(len(reads), 1, "one read for all who wait")
        waiting, work = reads.pop()
        waiting.callback(work())  # type: ignore[operator]
        self.assertIs(self.successResultOf(first).status, Status.GOOD)
        self.assertIs(self.successResultOf(second).status, Status.GOOD)

    def test_unreadable_index_is_unknown(self) -> None:
        (self.store.path / "index.json").write_text("{")
        pair = self.source.pair(self.client, self.store.ca.certificate)
        assert pair is not None
        verdict = self.successResultOf(self.source.check(pair))
        self.assertEqual((verdict.status, verdict.reason), (Status.UNKNOWN, "index_unreadable"))

    def test_serial_not_in_the_index_is_unknown(self) -> None:
        reads: list[object] = []

        def counted(work: Callable[[], object]) -> defer.Deferred[object]:
            reads.append(work)
            return defer.maybeDeferred(work)

        source = IndexSource(self.store, self.clock, offload=counted)
        stray = self.store.ca.issue_client("stray").certificate
        pair = source.pair(stray, self.store.ca.certificate)
        assert pair is not None
        for _ in range(3):
            found = source.lookup_until(pair)
            assert found is not None
            self.assertIs(found[0].status, Status.UNKNOWN)
        self.assertEqual(len(reads), 2, "one read for the copy, one more for the miss")

    def test_other_issuers_are_not_asked_about(self) -> None:
        self.assertIsNone(self.source.pair(self.client, self.client))

    def test_one_decision_with_the_other_sources(self) -> None:
        revocation = Revocation([self.source])
        plan = revocation.plan({0: self.client, 1: self.store.ca.certificate})
        self.assertEqual(len(plan), 1)
        self.store.revoke("client", now=datetime.datetime.now(datetime.UTC))
        self.clock.advance(DEFAULT_INTERVAL)
        verdict, _ = revocation.lookup_until(plan)
        assert verdict is not None
        self.assertTrue(verdict.revoked)

    def test_a_certificate_issued_since_the_copy_is_known(self) -> None:
        pair = self.source.pair(self.client, self.store.ca.certificate)
        assert pair is not None
        self.assertIsNotNone(self.source.lookup_until(pair))  # the copy is read now
        PKIStore.open(self.store.path).issue_client("fresh")
        fresh = x509.load_pem_x509_certificate(
            (self.store.path / "clients" / "fresh.pem").read_bytes())
        found = self.source.lookup_until((fresh.serial_number, "CN=fresh"))
        assert found is not None
        self.assertIs(found[0].status, Status.GOOD)
