"""
One revocation decision over every source: verdicts, the source interface, the rule.

A source (``Checker``: CRL files, CRLs fetched from distribution points, OCSP) answers
per certificate. ``Revocation`` plans what to ask each source about a chain, reads the
cached answers without waiting (``lookup_until``, for the TLS verify callback) or asks for
the missing ones (``check``, a Deferred that never fails: a source that cannot answer gives
an UNKNOWN verdict carrying the reason, and the caller applies ``--revocation-fail``), and
``decide`` combines the answers into one verdict.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

from cryptography import x509
from twisted.internet import defer

__all__ = ["Checker", "Closable", "Plan", "Revocation", "Scope", "Status", "Verdict", "decide"]


class Scope(enum.Enum):
    """Which certificates of a client's chain a revocation source is asked about."""

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
    """A revocation verdict with a stable reason code and a human detail.

    ``reason`` is ``good`` or ``revoked``; for an UNKNOWN verdict the
    ``certsrv.exceptions.RevocationProblem`` that kept the source from answering, or what
    the source lacks (``no_responder``, ``no_crl_dp``, ``crl_unavailable``, ...).
    """

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


class Checker(Protocol):
    """A revocation source: CRL files, CRLs fetched from distribution points, or OCSP.

    ``pair`` is what to ask about a certificate and its issuer (None: nothing to ask);
    ``lookup_until`` gives the cached verdict and the time until which it cannot change (a
    connection may keep using it until then), or None when there is none yet; ``check``
    gives the verdict, asking the source if need be. A source that caches answers also has
    ``forget()``, which ``Revocation.forget`` calls.
    """

    @property
    def mode(self) -> Scope: ...

    def pair(self, cert: x509.Certificate, issuer: x509.Certificate) -> Any | None: ...

    def lookup_until(self, pair: Any) -> tuple[Verdict, float] | None: ...

    def check(self, pair: Any) -> defer.Deferred[Verdict]: ...


class Closable(Protocol):
    """Something holding connections to drop at shutdown (the bounded HTTP fetchers)."""

    def close(self) -> defer.Deferred[Any]: ...


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
    """Every revocation source consulted for a certificate chain, decided as one.

    ``fetchers`` are what the sources fetch through; ``close`` drops their connections
    (at shutdown).
    """

    def __init__(self, checkers: Sequence[Checker], fetchers: Sequence[Closable] = ()) -> None:
        self.checkers = tuple(checkers)
        self.fetchers = tuple(fetchers)

    def plan(self, chain: dict[int, x509.Certificate]) -> Plan:
        """What to ask each source about a chain given by depth (0 = the client)."""
        plan = []
        for checker in self.checkers:
            last = len(chain) - 1 if checker.mode is Scope.CHAIN else 1
            # A source that looks further up the chain than the issuer (CRL files: for CRL
            # signers) says so with ``pair_in_chain``.
            in_chain = getattr(checker, "pair_in_chain", None)
            for depth in range(0, last):
                if depth + 1 in chain:
                    pair = (in_chain(chain, depth) if in_chain is not None
                            else checker.pair(chain[depth], chain[depth + 1]))
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

    def close(self) -> defer.Deferred[None]:
        """Drop the fetchers' idle connections to responders and distribution points."""
        closing: defer.Deferred[list[Any]] = defer.gatherResults(
            [fetcher.close() for fetcher in self.fetchers])
        return closing.addCallback(lambda _: None)
