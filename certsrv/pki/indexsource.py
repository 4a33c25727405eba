"""The development PKI's own index as a revocation source, for the services it runs itself."""

from __future__ import annotations

import datetime

from cryptography import x509
from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime

from certsrv.pki.index import EntryStatus
from certsrv.pki.store import PKIStore
from certsrv.revocation.decision import Scope, Status, Verdict

__all__ = ["IndexSource"]

SOURCE = "pki-index"


class IndexSource:
    """Answers from ``index.json`` as it is at each lookup (re-read when it changes), so a
    ``certsrv-pki revoke`` counts from the next handshake or request; a serial of the CA
    that the index does not list is unknown."""

    mode = Scope.LEAF

    def __init__(self, store: PKIStore, clock: IReactorTime) -> None:
        self.store = store
        self.clock = clock

    def pair(self, cert: x509.Certificate, issuer: x509.Certificate
             ) -> tuple[int, str] | None:
        """The serial and subject of a certificate this PKI's CA issued; None for others."""
        if issuer != self.store.ca.certificate:
            return None
        return cert.serial_number, cert.subject.rfc4514_string()

    def lookup_until(self, pair: tuple[int, str]) -> tuple[Verdict, float]:
        """The index's answer now; it may change at any moment, so it holds until now."""
        serial, subject = pair
        now = self.clock.seconds()
        record = self.store.status_of(serial, datetime.datetime.fromtimestamp(now, datetime.UTC))
        if record.status is EntryStatus.REVOKED:
            reason = record.reason.value if record.reason is not None else "unspecified"
            return Verdict(Status.REVOKED, "revoked", f"revoked ({reason}) in the PKI index",
                           subject, SOURCE), now
        if record.status is EntryStatus.UNKNOWN:
            return Verdict(Status.UNKNOWN, "not_in_index", f"serial {serial:X} is not in the "
                           "PKI index", subject, SOURCE), now
        return Verdict(Status.GOOD, "good", "", subject, SOURCE), now

    def check(self, pair: tuple[int, str]) -> defer.Deferred[Verdict]:
        """The same answer as ``lookup_until``, as a Deferred."""
        return defer.succeed(self.lookup_until(pair)[0])
