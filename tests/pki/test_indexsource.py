"""The PKI index as a revocation source."""

from __future__ import annotations

import datetime
import shutil
import tempfile
from pathlib import Path

from cryptography import x509
from twisted.trial.unittest import SynchronousTestCase

from certsrv.pki.indexsource import IndexSource
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

    def test_good_then_revoked_by_another_process(self) -> None:
        pair = self.source.pair(self.client, self.store.ca.certificate)
        assert pair is not None
        verdict, until = self.source.lookup_until(pair)
        self.assertIs(verdict.status, Status.GOOD)
        self.assertEqual(until, self.clock.seconds(), "an answer that can change any moment")
        PKIStore.open(self.store.path).revoke("client", x509.ReasonFlags.key_compromise)
        verdict = self.successResultOf(self.source.check(pair))
        self.assertIs(verdict.status, Status.REVOKED)
        self.assertIn("keyCompromise", verdict.detail)

    def test_serial_not_in_the_index_is_unknown(self) -> None:
        stray = self.store.ca.issue_client("stray").certificate
        pair = self.source.pair(stray, self.store.ca.certificate)
        assert pair is not None
        self.assertIs(self.source.lookup_until(pair)[0].status, Status.UNKNOWN)

    def test_other_issuers_are_not_asked_about(self) -> None:
        self.assertIsNone(self.source.pair(self.client, self.client))

    def test_one_decision_with_the_other_sources(self) -> None:
        revocation = Revocation([self.source])
        plan = revocation.plan({0: self.client, 1: self.store.ca.certificate})
        self.assertEqual(len(plan), 1)
        self.store.revoke("client", now=datetime.datetime.now(datetime.UTC))
        verdict, _ = revocation.lookup_until(plan)
        assert verdict is not None
        self.assertTrue(verdict.revoked)
