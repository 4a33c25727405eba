"""The development PKI's own index as a revocation source, for the services it runs itself."""

from __future__ import annotations

import datetime
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography import x509
from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from certsrv.pki.index import Entry, EntryStatus, serial_hex
from certsrv.pki.store import PKIStore
from certsrv.revocation.decision import Scope, Status, Verdict

__all__ = ["DEFAULT_INTERVAL", "IndexSource", "Offload", "inline"]

SOURCE = "pki-index"
# How old the copy of the index answered from may be: a revocation counts within this.
DEFAULT_INTERVAL = 1.0
_log = Logger(namespace="certsrv.est")

Snapshot = dict[int, Entry]
# Runs blocking work (reading the index) away from the reactor: a thread pool in the service.
Offload = Callable[[Callable[[], Any]], defer.Deferred[Any]]


def inline(work: Callable[[], Any]) -> defer.Deferred[Any]:
    """Run ``work`` now (tests, and callers that may block)."""
    return defer.maybeDeferred(work)


class IndexSource:
    """Answers from a copy of ``index.json`` at most ``interval`` seconds old, read by
    ``offload`` (never in the reactor when that is a thread pool), so a ``certsrv-pki
    revoke`` counts within ``interval`` seconds; a serial of the CA that the index does not
    list is unknown."""

    mode = Scope.LEAF

    def __init__(self, store: PKIStore, clock: IReactorTime, *,
                 interval: float = DEFAULT_INTERVAL, offload: Offload = inline) -> None:
        self.path = store.path
        self.issuer = store.ca.certificate
        self.clock = clock
        self.interval = interval
        self._offload = offload
        self._snapshot: Snapshot | None = None
        self._until = 0.0
        self._reads = 0  # reads begun so far
        self._copy = 0  # the number of the read that gave the copy in use
        self._misses: dict[int, int] = {}  # serials not in a copy: reads begun by then
        self._loading: defer.Deferred[None] | None = None
        self._problem = ""

    def pair(self, cert: x509.Certificate, issuer: x509.Certificate
             ) -> tuple[int, str] | None:
        """The serial and subject of a certificate this PKI's CA issued; None for others."""
        if issuer != self.issuer:
            return None
        return cert.serial_number, cert.subject.rfc4514_string()

    def lookup_until(self, pair: tuple[int, str]) -> tuple[Verdict, float] | None:
        """The answer of the copy read less than ``interval`` ago, until it is that old;
        None (and a fresh copy on its way) when there is none."""
        if self._snapshot is None or self.clock.seconds() >= self._until:
            self._refresh()
            if self._snapshot is None or self.clock.seconds() >= self._until:
                return None
        if pair[0] not in self._snapshot and self._copy <= self._missed(pair[0]):
            # Perhaps issued since the copy was read: read again before calling it unknown.
            self._refresh()
            if self._copy <= self._missed(pair[0]):
                return None
        return self._verdict(pair), self._until

    def forget(self) -> None:
        """Read the index again at the next lookup."""
        self._until = 0.0

    def _missed(self, serial: int) -> int:
        """How many reads had begun when ``serial`` was first missing from a copy."""
        if len(self._misses) >= 1024:
            self._misses.clear()
        return self._misses.setdefault(serial, self._reads)

    def check(self, pair: tuple[int, str]) -> defer.Deferred[Verdict]:
        """The answer from a fresh enough copy, reading one if need be."""
        found = self.lookup_until(pair)
        if found is not None:
            return defer.succeed(found[0])
        if self._loading is None:  # the read failed already
            return defer.succeed(self._after_load(pair))
        waiting: defer.Deferred[Verdict] = defer.Deferred()
        self._loading.addBoth(lambda _: waiting.callback(self._after_load(pair)))
        return waiting

    def _after_load(self, pair: tuple[int, str]) -> Verdict:
        if self._snapshot is None or self._problem:
            serial, subject = pair
            return Verdict(Status.UNKNOWN, "index_unreadable", self._problem, subject, SOURCE)
        return self._verdict(pair)

    def _refresh(self) -> None:
        """Start reading the index unless a read is under way."""
        if self._loading is not None:
            return
        path = self.path
        started = self.clock.seconds()
        self._reads += 1
        number = self._reads
        loading = self._offload(lambda: _read(path))
        self._loading = loading
        loading.addCallbacks(lambda snapshot: self._loaded(snapshot, started, number),
                             self._failed)
        if loading.called:  # read inline
            self._loading = None

    def _loaded(self, snapshot: Snapshot, started: float, number: int) -> None:
        self._snapshot, self._until, self._problem = snapshot, started + self.interval, ""
        self._copy = number
        self._loading = None

    def _failed(self, failure: Failure) -> None:
        self._problem = f"cannot read {self.path / 'index.json'}: {failure.getErrorMessage()}"
        _log.error("{problem}", problem=self._problem, reason="index_unreadable")
        self._loading = None

    def _verdict(self, pair: tuple[int, str]) -> Verdict:
        serial, subject = pair
        assert self._snapshot is not None
        entry = self._snapshot.get(serial)
        if entry is None:
            return Verdict(Status.UNKNOWN, "not_in_index",
                           f"serial {serial_hex(serial)} is not in the PKI index", subject,
                           SOURCE)
        now = datetime.datetime.fromtimestamp(self.clock.seconds(), datetime.UTC)
        record = entry.revocation_status(now)
        if record.status is EntryStatus.REVOKED:
            reason = record.reason.value if record.reason is not None else "unspecified"
            return Verdict(Status.REVOKED, "revoked", f"revoked ({reason}) in the PKI index",
                           subject, SOURCE)
        return Verdict(Status.GOOD, "good", "", subject, SOURCE)


def _read(path: Path) -> Snapshot:
    """Every entry of the index in ``path``, by serial (blocking: run it off the reactor)."""
    return {entry.serial: entry for entry in PKIStore.open(path).entries()}
