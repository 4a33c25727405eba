"""Certificate revocation lists given as files (``--crl``): loading, checking, and answering.

The files are a revocation source like OCSP and fetched CRLs (``Revocation`` decides over
all of them); OpenSSL itself is given no CRL, so the handshake, forwarded certificates and
every later request are judged by the same code against the current files.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime

from certsrv.exceptions import ConfigurationError
from certsrv.revocation.decision import Scope, Status, Verdict
from certsrv.x509.certs import read_file

__all__ = ["CRLFiles", "FileCRL", "check_crl", "load_crl", "next_update"]

SOURCE = "crl-file"


def load_crl(path: str) -> x509.CertificateRevocationList:
    """Load a PEM or DER CRL."""
    data = read_file(path, "CRL")
    try:
        if b"-----BEGIN X509 CRL-----" in data:
            return x509.load_pem_x509_crl(data)
        if data.startswith(b"\x30"):
            return x509.load_der_x509_crl(data)
    except Exception as e:  # ValueError, but also x509.InvalidVersion and friends
        raise ConfigurationError(path, f"CRL file holds a malformed CRL ({e})") from None
    raise ConfigurationError(path, "CRL file contains no CRL (expected PEM or DER)")


def check_crl(
    path: str, crl: x509.CertificateRevocationList, issuers: Sequence[x509.Certificate]
) -> x509.Certificate:
    """Return the trusted CA that signed ``crl``, or raise if none did."""
    named = [c for c in issuers if c.subject == crl.issuer]
    if not named:
        raise ConfigurationError(path, f"CRL issuer {crl.issuer.rfc4514_string()!r} is not "
                                       "one of the trusted CAs or intermediates")
    for issuer in named:
        try:
            if crl.is_signature_valid(issuer.public_key()):  # type: ignore[arg-type]
                if not _may_sign_crls(issuer):
                    raise ConfigurationError(path, "the CRL issuer's keyUsage lacks cRLSign")
                return issuer
        except (TypeError, ValueError):
            continue
    raise ConfigurationError(path, "CRL signature does not verify with its issuer's key")


def unsupported(crl: x509.CertificateRevocationList) -> str | None:
    """Why certsrv cannot use ``crl`` as a complete CRL of its issuer, or None."""
    try:
        extensions = crl.extensions
        for extension in extensions:
            if isinstance(extension.value, x509.UnrecognizedExtension) and extension.critical:
                return f"unknown critical extension {extension.oid.dotted_string}"
            if isinstance(extension.value, x509.DeltaCRLIndicator):
                return "a delta CRL"
        try:
            idp = extensions.get_extension_for_class(x509.IssuingDistributionPoint).value
        except x509.ExtensionNotFound:
            return None
    except ValueError as e:
        return f"unreadable extensions ({e})"
    if idp.indirect_crl:
        return "an indirect CRL"
    if idp.only_some_reasons is not None:
        return "a CRL for some revocation reasons only"
    if idp.only_contains_attribute_certs:
        return "a CRL for attribute certificates"
    return None


def next_update(crl: x509.CertificateRevocationList) -> float | None:
    """The CRL's nextUpdate as POSIX seconds, if it has one."""
    moment = crl.next_update_utc
    return moment.timestamp() if moment is not None else None


def _may_sign_crls(issuer: x509.Certificate) -> bool:
    try:
        return bool(issuer.extensions.get_extension_for_class(x509.KeyUsage).value.crl_sign)
    except x509.ExtensionNotFound:
        return True


def _key_of(cert: x509.Certificate) -> tuple[bytes, bytes]:
    # A CRL covers the certificates whose issuer has its issuer's name and key.
    return (cert.subject.public_bytes(),
            cert.public_key().public_bytes(serialization.Encoding.DER,
                                           serialization.PublicFormat.SubjectPublicKeyInfo))


@dataclass(frozen=True, eq=False)
class FileCRL:
    """One checked CRL file, indexed for lookups."""

    path: str
    crl: x509.CertificateRevocationList
    issuer: x509.Certificate | None  # None: signed by a CA met only in client chains
    revoked: frozenset[int]
    this_update: float
    next_update: float | None
    scope: x509.IssuingDistributionPoint | None

    @classmethod
    def index(cls, path: str, crl: x509.CertificateRevocationList,
              issuer: x509.Certificate | None) -> FileCRL:
        """Index a CRL ``check_crl`` accepted (a ValueError for a malformed entry)."""
        try:
            scope = crl.extensions.get_extension_for_class(x509.IssuingDistributionPoint).value
        except x509.ExtensionNotFound:
            scope = None
        return cls(path, crl, issuer, frozenset(e.serial_number for e in crl),
                   crl.last_update_utc.timestamp(), next_update(crl), scope)

    def covers(self, cert: x509.Certificate) -> bool:
        """Whether this CRL's scope includes ``cert`` (RFC 5280 6.3.3 (b))."""
        scope = self.scope
        if scope is None:
            return True
        is_ca = _is_ca(cert)
        if (scope.only_contains_user_certs and is_ca) or (scope.only_contains_ca_certs
                                                          and not is_ca):
            return False
        if scope.full_name is None:
            return True
        wanted = set(scope.full_name)
        points = _distribution_points(cert)
        if points is None:  # no CRL distribution points: the issuer is the implied one
            return x509.DirectoryName(cert.issuer) in wanted
        return any(not wanted.isdisjoint(p) for p in points)

    def verdict(self, cert: x509.Certificate, now: float) -> tuple[Verdict, float]:
        """What this CRL says of ``cert`` now, and until when that holds."""
        subject = cert.subject.rfc4514_string()
        if cert.serial_number in self.revoked:
            detail = _revocation_detail(self.crl, cert.serial_number)
            return Verdict(Status.REVOKED, "revoked", f"{detail} in {self.path}", subject,
                           SOURCE), float("inf")
        if now < self.this_update:
            return Verdict(Status.UNKNOWN, "crl_not_yet_valid",
                           f"{self.path} is not valid yet", subject, SOURCE), self.this_update
        if self.next_update is not None and now > self.next_update:
            return Verdict(Status.UNKNOWN, "crl_expired", f"{self.path} is past its "
                           "nextUpdate", subject, SOURCE), float("inf")
        until = self.next_update if self.next_update is not None else float("inf")
        return Verdict(Status.GOOD, "good", "", subject, SOURCE), until


class CRLFiles:
    """The ``--crl`` files as a revocation source: every answer comes from memory."""

    def __init__(self, crls: Sequence[FileCRL], mode: Scope, clock: IReactorTime) -> None:
        self.crls = tuple(crls)
        self.mode = mode
        self.clock = clock
        self._by_name: dict[bytes, list[FileCRL]] = {}
        for crl in sorted(self.crls, key=lambda c: c.this_update, reverse=True):
            self._by_name.setdefault(crl.crl.issuer.public_bytes(), []).append(crl)
        self._keys: dict[x509.Certificate, tuple[bytes, bytes]] = {}
        # Whether a CRL of an issuer met only in client chains verifies with an issuer's key.
        self._signed: dict[tuple[int, bytes], bool] = {}

    def pair(self, cert: x509.Certificate, issuer: x509.Certificate
             ) -> tuple[x509.Certificate, x509.Certificate]:
        """Every certificate is asked about: with CRL files, each issuer needs a CRL."""
        return cert, issuer

    def lookup_until(self, pair: tuple[x509.Certificate, x509.Certificate]
                     ) -> tuple[Verdict, float]:
        """The newest applicable CRL's answer (a listing in any applicable CRL revokes)."""
        cert, issuer = pair
        key = self._keys.get(issuer)
        if key is None:
            if len(self._keys) >= 256:
                self._keys.clear()
            key = self._keys[issuer] = _key_of(issuer)
        applicable = [c for c in self._by_name.get(key[0], ())
                      if self._signed_by(c, issuer, key) and c.covers(cert)]
        if not applicable:
            return Verdict(Status.UNKNOWN, "crl_unavailable", "no CRL file of "
                           f"{issuer.subject.rfc4514_string()!r} covers it",
                           cert.subject.rfc4514_string(), SOURCE), float("inf")
        now = self.clock.seconds()
        for crl in applicable[1:]:
            listed = crl.verdict(cert, now)
            if listed[0].revoked:
                return listed
        return applicable[0].verdict(cert, now)

    def _signed_by(self, crl: FileCRL, issuer: x509.Certificate, key: tuple[bytes, bytes]
                   ) -> bool:
        if crl.issuer is not None:
            return crl.issuer is issuer or _key_of(crl.issuer) == key
        memo = (id(crl), key[1])
        signed = self._signed.get(memo)
        if signed is None:
            try:
                signed = bool(crl.crl.is_signature_valid(issuer.public_key())  # type: ignore[arg-type]
                              ) and _may_sign_crls(issuer)
            except (TypeError, ValueError):
                signed = False
            if len(self._signed) >= 1024:
                self._signed.clear()
            self._signed[memo] = signed
        return signed

    def check(self, pair: tuple[x509.Certificate, x509.Certificate]
              ) -> defer.Deferred[Verdict]:
        """The same answer as ``lookup_until``, as a Deferred."""
        return defer.succeed(self.lookup_until(pair)[0])


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except (x509.ExtensionNotFound, ValueError):
        return False


def _distribution_points(cert: x509.Certificate) -> list[set[x509.GeneralName]] | None:
    try:
        points = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    except x509.ExtensionNotFound:
        return None
    return [set(p.full_name) for p in points if p.full_name is not None]


def _revocation_detail(crl: x509.CertificateRevocationList, serial: int) -> str:
    entry = crl.get_revoked_certificate_by_serial_number(serial)
    if entry is None:
        return "revoked"
    try:
        reason = entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
    except (x509.ExtensionNotFound, ValueError):
        return "revoked"
    return f"revoked ({reason.value})"
