"""certsrv.revocation.decision: ``decide`` combines every source's answer for a chain."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from certsrv.revocation.decision import Revocation, Scope, Status, Verdict, decide

GOOD = Verdict(Status.GOOD, "good", source="ocsp")
REVOKED = Verdict(Status.REVOKED, "revoked", source="crl")
UNKNOWN = Verdict(Status.UNKNOWN, "responder_unreachable", source="ocsp")
NOTHING = Verdict(Status.GOOD, "no_responder", source="ocsp")  # nothing to ask: not authoritative


class DecideTests(SynchronousTestCase):
    """Revoked by any wins; good from an authority beats unknown; unknown beats nothing."""

    def test_revoked_by_any(self) -> None:
        verdict = decide([(0, GOOD), (1, REVOKED)])
        assert verdict is not None
        self.assertEqual((verdict.status, verdict.depth), (Status.REVOKED, 1))

    def test_good_from_one_authority_despite_unknown(self) -> None:
        verdict = decide([(0, UNKNOWN), (0, GOOD)])
        assert verdict is not None
        self.assertIs(verdict.status, Status.GOOD)
        self.assertIn("could not answer", verdict.detail)

    def test_unknown_only_when_nobody_answered(self) -> None:
        verdict = decide([(0, UNKNOWN), (0, NOTHING)])
        assert verdict is not None
        self.assertIs(verdict.status, Status.UNKNOWN)

    def test_pending_and_empty(self) -> None:
        self.assertIsNone(decide([(0, GOOD), (1, None)]))
        self.assertEqual(decide([]), Verdict(Status.GOOD, "not_checked"))
        self.assertFalse(NOTHING.authoritative)
        self.assertTrue(GOOD.authoritative and UNKNOWN.authoritative)

    @settings(max_examples=200, derandomize=True)
    @given(st.lists(st.tuples(st.integers(0, 2),
                              st.sampled_from([GOOD, REVOKED, UNKNOWN, NOTHING])),
                    max_size=6))
    def test_revoked_iff_any_source_says_so(self, answers: list[tuple[int, Verdict]]) -> None:
        verdict = decide(answers)
        assert verdict is not None
        self.assertEqual(verdict.revoked, any(v.revoked for _, v in answers))
        if not verdict.revoked and verdict.status is Status.GOOD:
            # every certificate has a good answer, or nothing to ask, never only unknown
            for depth in {d for d, _ in answers}:
                said = [v for d, v in answers if d == depth]
                self.assertTrue(any(v.status is Status.GOOD for v in said), answers)


class _Source:
    """A source recording what ``Revocation.plan`` asks it about."""

    def __init__(self, mode: Scope) -> None:
        self.mode = mode

    def pair(self, cert: object, issuer: object) -> object:
        return ("pair", cert, issuer)


class _ChainSource(_Source):
    """A source that looks above the issuer (as the CRL files do, for CRL signers)."""

    def pair_in_chain(self, chain: dict[int, object], depth: int) -> object:
        return ("chain", depth, tuple(chain[d] for d in range(depth + 2, len(chain))))


class PlanTests(SynchronousTestCase):
    """What each source is asked about a chain: the leaf, or every certificate but the top."""

    def test_pairs_and_pairs_in_chain(self) -> None:
        chain: Any = {0: "leaf", 1: "inter", 2: "root"}
        plain, above = _Source(Scope.CHAIN), _ChainSource(Scope.LEAF)
        plan = Revocation([plain, above]).plan(chain)  # type: ignore[list-item]
        self.assertEqual([(pair, depth) for _, pair, depth in plan], [
            (("pair", "leaf", "inter"), 0), (("pair", "inter", "root"), 1),
            (("chain", 0, ("root",)), 0)])
