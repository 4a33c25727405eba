"""
What one CRL says of one certificate under RFC 5280 6.3.3: scope, reasons, deltas, indirect entries.

``IndexedCRL`` is a parsed CRL indexed for lookups (its entries per certificate issuer, so an
indirect CRL's ``certificateIssuer`` entries count for that issuer only); ``interim_reasons``
is 6.3.3 (b) and (d): whether a CRL's issuer and issuing distribution point cover a
certificate, and for which revocation reasons; ``delta_fits`` pairs a delta CRL with the
complete CRL it updates (5.2.4); ``listing`` reads a certificate's entry, the delta first.
Signatures and signers are checked by the sources (``crlfiles``, ``crlfetch``), not here.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from cryptography import x509

from certsrv.x509.names import canonical, canonical_der, canonical_general

__all__ = [
    "ALL_REASONS",
    "CertFacts",
    "IndexedCRL",
    "delta_fits",
    "interim_reasons",
    "is_ca",
    "listing",
    "may_sign_crls",
    "revocation_detail",
    "unknown_entry_extension",
    "unusable",
]

# The reasons of a ReasonFlags bit string (RFC 5280 4.2.1.13); a certificate is "good" only
# once CRLs covering all of them were consulted (6.3.3 (k), reasons_mask).
ALL_REASONS: frozenset[x509.ReasonFlags] = frozenset({
    x509.ReasonFlags.key_compromise, x509.ReasonFlags.ca_compromise,
    x509.ReasonFlags.affiliation_changed, x509.ReasonFlags.superseded,
    x509.ReasonFlags.cessation_of_operation, x509.ReasonFlags.certificate_hold,
    x509.ReasonFlags.privilege_withdrawn, x509.ReasonFlags.aa_compromise,
})
_REMOVE = x509.ReasonFlags.remove_from_crl


@dataclass(frozen=True, eq=False)
class IndexedCRL:
    """A parsed CRL with its entries indexed by (certificate issuer, serial number)."""

    crl: x509.CertificateRevocationList
    issuer: bytes  # the CRL issuer's name, DER
    number: int | None
    delta_base: int | None  # BaseCRLNumber: None for a complete CRL
    idp: x509.IssuingDistributionPoint | None
    freshest: tuple[x509.DistributionPoint, ...]
    this_update: float
    next_update: float | None
    # Serial numbers listed per issuer (DER name); removeFromCRL entries apart (deltas).
    revoked: dict[bytes, frozenset[int]] = field(repr=False)
    removed: dict[bytes, frozenset[int]] = field(repr=False)

    @classmethod
    def index(cls, crl: x509.CertificateRevocationList) -> IndexedCRL:
        """Index ``crl``: ValueError for a malformed extension or entry."""
        extensions = crl.extensions
        number = base = None
        idp = None
        freshest: tuple[x509.DistributionPoint, ...] = ()
        for extension in extensions:
            value = extension.value
            if isinstance(value, x509.CRLNumber):
                number = value.crl_number
            elif isinstance(value, x509.DeltaCRLIndicator):
                base = value.crl_number
            elif isinstance(value, x509.IssuingDistributionPoint):
                idp = value
            elif isinstance(value, x509.FreshestCRL):
                freshest = tuple(value)
        issuer = canonical_der(crl.issuer)
        if base is None and (idp is None or not idp.indirect_crl):
            # A complete CRL of one issuer: every entry revokes, whatever its extensions.
            revoked = {issuer: frozenset(entry.serial_number for entry in crl)}
            removed: dict[bytes, frozenset[int]] = {}
        else:
            revoked, removed = _entries(crl, idp is not None and idp.indirect_crl)
        next_moment = crl.next_update_utc
        return cls(crl, issuer, number, base, idp, freshest, crl.last_update_utc.timestamp(),
                   next_moment.timestamp() if next_moment is not None else None,
                   revoked, removed)

    @property
    def is_delta(self) -> bool:
        """Whether this is a delta CRL (it has a deltaCRLIndicator)."""
        return self.delta_base is not None

    def current(self, now: float) -> bool:
        """Whether ``now`` lies between thisUpdate and nextUpdate."""
        return self.this_update <= now and (self.next_update is None or now <= self.next_update)


def _entries(crl: x509.CertificateRevocationList, indirect: bool
             ) -> tuple[dict[bytes, frozenset[int]], dict[bytes, frozenset[int]]]:
    revoked: dict[bytes, set[int]] = {}
    removed: dict[bytes, set[int]] = {}
    issuers = [canonical_der(crl.issuer)]
    for entry in crl:
        reason = None
        for extension in entry.extensions:
            value = extension.value
            if isinstance(value, x509.CRLReason):
                reason = value.reason
            elif isinstance(value, x509.CertificateIssuer) and indirect:
                # Carried forward to the following entries (5.3.3).
                issuers = [canonical_der(name) for name in
                           value.get_values_for_type(x509.DirectoryName)]
        into = removed if reason is _REMOVE else revoked
        for issuer in issuers:
            into.setdefault(issuer, set()).add(entry.serial_number)
    return ({k: frozenset(v) for k, v in revoked.items()},
            {k: frozenset(v) for k, v in removed.items()})


def unusable(crl: x509.CertificateRevocationList) -> str | None:
    """Why certsrv can never use ``crl`` (RFC 5280 5.2, 5.3), or None."""
    try:
        for extension in crl.extensions:
            if isinstance(extension.value, x509.UnrecognizedExtension) and extension.critical:
                return f"unknown critical extension {extension.oid.dotted_string}"
            value = extension.value
            if isinstance(value, x509.IssuingDistributionPoint) and \
                    value.only_contains_attribute_certs:
                return "a CRL for attribute certificates"
        return unknown_entry_extension(crl)
    except ValueError as e:
        return f"unreadable extensions ({e})"


def unknown_entry_extension(crl: x509.CertificateRevocationList) -> str | None:
    """Why an entry of ``crl`` makes it unusable (an unknown critical extension), or None."""
    # Parsing every entry's extensions is slow (about 15 us an entry); a critical extension
    # is DER-encoded with the BOOLEAN TRUE 01 01 ff, so without more of those than the CRL's
    # own critical extensions no entry has one.
    critical = sum(1 for extension in crl.extensions if extension.critical)
    if crl.tbs_certlist_bytes.count(b"\x01\x01\xff") <= critical:
        return None
    for entry in crl:
        for extension in entry.extensions:
            if isinstance(extension.value, x509.UnrecognizedExtension) and extension.critical:
                return ("an entry with the unknown critical extension "
                        f"{extension.oid.dotted_string}")
    return None


def is_ca(cert: x509.Certificate) -> bool:
    """Whether ``cert`` is a CA certificate (basicConstraints cA)."""
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except (x509.ExtensionNotFound, ValueError):
        return False


@dataclass(frozen=True, eq=False)
class CertFacts:
    """What CRL processing reads of a certificate, read once."""

    issuer: x509.Name
    issuer_der: bytes
    subject_der: bytes
    serial: int
    points: tuple[x509.DistributionPoint, ...] | None  # cRLDistributionPoints, if any
    ca: bool
    crl_sign: bool  # whether its key may sign CRLs (no keyUsage, or one with cRLSign)

    @classmethod
    def of(cls, cert: x509.Certificate) -> CertFacts:
        """Read ``cert``'s issuer, serial number, distribution points and CA flag."""
        return cls(canonical(cert.issuer), canonical_der(cert.issuer), canonical_der(cert.subject),
                   cert.serial_number, _points(cert), is_ca(cert), may_sign_crls(cert))

    @property
    def crl_issuers(self) -> list[bytes]:
        """The names (DER) of the CRL issuers its distribution points name."""
        return [canonical_der(name.value) for point in self.points or ()
                for name in point.crl_issuer or () if isinstance(name, x509.DirectoryName)]


def may_sign_crls(cert: x509.Certificate) -> bool:
    """Whether ``cert``'s key usage allows signing CRLs (no keyUsage allows everything)."""
    try:
        return bool(cert.extensions.get_extension_for_class(x509.KeyUsage).value.crl_sign)
    except x509.ExtensionNotFound:
        return True
    except ValueError:
        return False


def _points(cert: x509.Certificate) -> tuple[x509.DistributionPoint, ...] | None:
    try:
        return tuple(cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value)
    except x509.ExtensionNotFound:
        return None
    except ValueError:
        return ()  # unreadable: no distribution point matches


def _full_names(full: Iterable[x509.GeneralName] | None,
                relative: x509.RelativeDistinguishedName | None,
                issuer: x509.Name) -> set[x509.GeneralName]:
    if full is not None:
        return {canonical_general(name) for name in full}
    if relative is not None:  # nameRelativeToCRLIssuer: appended to the CRL issuer's name
        return {x509.DirectoryName(canonical(x509.Name([*issuer.rdns, relative])))}
    return set()


def interim_reasons(crl: IndexedCRL, cert: CertFacts
                    ) -> frozenset[x509.ReasonFlags] | None:
    """The reasons ``crl`` can say ``cert`` is revoked for (6.3.3 (b), (d)), or None when the
    certificate is outside its scope. The signer is not checked here."""
    idp = crl.idp
    if idp is not None:
        if idp.only_contains_attribute_certs:
            return None
        if (idp.only_contains_user_certs and cert.ca) or (idp.only_contains_ca_certs
                                                           and not cert.ca):
            return None
    if idp is None and cert.points is None:
        return ALL_REASONS if crl.issuer == cert.issuer_der else None
    crl_issuer = canonical(crl.crl.issuer)
    idp_names = (_full_names(idp.full_name, idp.relative_name, crl_issuer)
                 if idp is not None else set())
    indirect = idp is not None and idp.indirect_crl
    points = cert.points
    if points is None:
        # No distribution points: only a direct CRL of the issuer without a named point.
        if crl_issuer != cert.issuer or idp_names:
            return None
        return _reasons(idp, None)
    found: set[x509.ReasonFlags] = set()
    for point in points:
        reasons = _point_reasons(crl, cert, point, idp_names, indirect)
        if reasons is not None:
            found |= reasons
    return frozenset(found) if found else None


def _point_reasons(crl: IndexedCRL, cert: CertFacts, point: x509.DistributionPoint,
                   idp_names: set[x509.GeneralName], indirect: bool
                   ) -> frozenset[x509.ReasonFlags] | None:
    crl_issuer = canonical(crl.crl.issuer)
    if point.crl_issuer is not None:
        named = {canonical(n.value) for n in point.crl_issuer
                 if isinstance(n, x509.DirectoryName)}
        if not indirect or crl_issuer not in named:
            return None
        point_issuer = crl_issuer
    else:
        if crl_issuer != cert.issuer:
            return None
        point_issuer = cert.issuer
    if idp_names:
        if point.full_name is not None or point.relative_name is not None:
            wanted = _full_names(point.full_name, point.relative_name, point_issuer)
        else:
            wanted = {canonical_general(n) for n in point.crl_issuer or ()
                      if isinstance(n, x509.DirectoryName)}
        if wanted.isdisjoint(idp_names):
            return None
    return _reasons(crl.idp, point)


def _reasons(idp: x509.IssuingDistributionPoint | None,
             point: x509.DistributionPoint | None) -> frozenset[x509.ReasonFlags] | None:
    reasons = ALL_REASONS
    if idp is not None and idp.only_some_reasons is not None:
        reasons = reasons & idp.only_some_reasons
    if point is not None and point.reasons is not None:
        reasons = reasons & point.reasons
    return reasons or None


def delta_fits(base: IndexedCRL, delta: IndexedCRL) -> bool:
    """Whether ``delta`` updates the complete CRL ``base`` (5.2.4, 6.3.3 (c)): the same issuer
    and scope, a base at least as new as the delta's BaseCRLNumber, and a newer delta."""
    # A delta without a CRL number (5.2.3 demands one) cannot be shown newer than the base:
    # an old one would lift the holds of every later base (removeFromCRL).
    if delta.delta_base is None or delta.number is None or base.is_delta or base.number is None:
        return False
    if delta.issuer != base.issuer or delta.idp != base.idp:
        return False
    return base.number >= delta.delta_base and delta.number > base.number


def listing(crl: IndexedCRL, delta: IndexedCRL | None, cert: CertFacts) -> bool:
    """Whether ``cert`` is revoked by ``crl`` updated by ``delta`` (6.3.3 (i), (j)): listed in
    the delta (not as removeFromCRL), or listed in the complete CRL and not removed since."""
    issuer = cert.issuer_der
    serial = cert.serial
    if delta is not None:
        if serial in delta.revoked.get(issuer, ()):
            return True
        if serial in delta.removed.get(issuer, ()):
            return False
    return serial in crl.revoked.get(issuer, ())


def revocation_detail(crl: x509.CertificateRevocationList, serial: int) -> str:
    """'revoked', with the entry's reason code when it has one."""
    try:
        entry = crl.get_revoked_certificate_by_serial_number(serial)
    except ValueError:  # a negative serial number (PKITS 4.4.15): no lookup by it
        entry = next((e for e in crl if e.serial_number == serial), None)
    if entry is None:
        return "revoked"
    try:
        reason = entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
    except (x509.ExtensionNotFound, ValueError):
        return "revoked"
    return f"revoked ({reason.value})"
