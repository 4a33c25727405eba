"""Certificate revocation lists given as files (``--crl``): loading, checking, and answering.

The files are a revocation source like OCSP and fetched CRLs (``Revocation`` decides over
all of them); OpenSSL itself is given no CRL, so the handshake, forwarded certificates and
every later request are judged by the same code against the current files. The files may
hold complete CRLs, delta CRLs, CRLs of one distribution point or of some reasons only, and
indirect CRLs; what each says of a certificate is ``crlscope``'s (RFC 5280 6.3.3), and a
certificate is good only once current CRLs covering every reason say so.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from OpenSSL import crypto
from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from certsrv.exceptions import ConfigurationError
from certsrv.revocation.crlscope import (
    ALL_REASONS,
    CertFacts,
    IndexedCRL,
    delta_fits,
    interim_reasons,
    listing,
    may_sign_crls,
    revocation_detail,
    unusable,
)
from certsrv.revocation.decision import Scope, Status, Verdict
from certsrv.x509.certs import read_file
from certsrv.x509.names import canonical, canonical_der

__all__ = ["CRLFiles", "FileCRL", "Signer", "load_crl", "load_crl_files", "next_update"]

SOURCE = "crl-file"
_INF = float("inf")


def load_crl(path: str) -> x509.CertificateRevocationList:
    """Load a PEM or DER CRL."""
    data = read_file(path, "CRL")
    try:
        if b"-----BEGIN X509 CRL-----" in data:
            crl = x509.load_pem_x509_crl(data)
        elif data.startswith(b"\x30"):
            crl = x509.load_der_x509_crl(data)
        else:
            raise ConfigurationError(path, "CRL file contains no CRL (expected PEM or DER)")
        # Parsed lazily: read now what every later step reads.
        crl.issuer, crl.last_update_utc, crl.next_update_utc  # noqa: B018
    except ConfigurationError:
        raise
    except Exception as e:  # ValueError, but also x509.InvalidVersion and friends
        raise ConfigurationError(path, f"CRL file holds a malformed CRL ({e})") from None
    return crl


def next_update(crl: x509.CertificateRevocationList) -> float | None:
    """The CRL's nextUpdate as POSIX seconds, if it has one."""
    moment = crl.next_update_utc
    return moment.timestamp() if moment is not None else None


def _spki(cert: x509.Certificate) -> bytes:
    return cert.public_key().public_bytes(serialization.Encoding.DER,
                                          serialization.PublicFormat.SubjectPublicKeyInfo)


def _verifies(crl: x509.CertificateRevocationList, cert: x509.Certificate) -> bool:
    try:
        return bool(crl.is_signature_valid(cert.public_key()))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False


@dataclass(frozen=True, eq=False)
class Signer:
    """A configured certificate whose key signed a CRL, and its path to a trust anchor."""

    cert: x509.Certificate
    path: tuple[x509.Certificate, ...]  # the signer first, the trust anchor last


@dataclass(frozen=True, eq=False)
class FileCRL:
    """One checked CRL file, indexed for lookups."""

    path: str
    index: IndexedCRL
    # Configured signers (--ca, --intermediates) with a path to a --ca: they vouch for
    # certificates they did not issue. The issuer in a client's chain is asked at lookup.
    signers: tuple[Signer, ...] = ()

    @property
    def crl(self) -> x509.CertificateRevocationList:
        """The parsed CRL."""
        return self.index.crl

    @classmethod
    def of(cls, path: str, crl: x509.CertificateRevocationList,
           signers: Sequence[Signer] = ()) -> FileCRL:
        """Index ``crl`` (a ValueError for a malformed extension or entry)."""
        return cls(path, IndexedCRL.index(crl), tuple(signers))


def certified_path(cert: x509.Certificate, anchors: Sequence[x509.Certificate],
                   intermediates: Sequence[x509.Certificate], now: float
                   ) -> tuple[x509.Certificate, ...] | None:
    """``cert``'s path to one of ``anchors`` as OpenSSL validates it at ``now``, or None."""
    if cert in anchors:
        return (cert,)
    store = crypto.X509Store()
    for anchor in anchors:
        store.add_cert(crypto.X509.from_cryptography(anchor))
    store.set_time(datetime.datetime.fromtimestamp(now, datetime.UTC))
    context = crypto.X509StoreContext(store, crypto.X509.from_cryptography(cert),
                                      [crypto.X509.from_cryptography(c) for c in intermediates])
    try:
        return tuple(c.to_cryptography() for c in context.get_verified_chain())
    except crypto.X509StoreContextError:
        return None


def load_crl_files(paths: Sequence[str], anchors: Sequence[x509.Certificate],
                   intermediates: Sequence[x509.Certificate], now: float, log: Logger
                   ) -> list[FileCRL]:
    """Load and check the ``--crl`` files; log what is ignored, raise what stops startup.

    A CRL signed by none of the configured certificates of its issuer's name (with cRLSign)
    stops startup unless another file gives that issuer a usable CRL (then it is ignored
    with a warning);
    a CRL of an issuer certsrv does not know is kept for chains whose issuer signed it.
    """
    known = (*anchors, *intermediates)
    loaded: list[FileCRL] = []
    refused: list[tuple[str, x509.CertificateRevocationList, str]] = []
    for path in paths:
        crl = load_crl(path)
        problem = unusable(crl)
        if problem is not None:
            log.warn("{path}: {problem} is not supported; the file is ignored",
                     path=path, problem=problem, reason="crl_ignored")
            continue
        named = [c for c in known if canonical(c.subject) == canonical(crl.issuer)]
        signed = [c for c in named if _verifies(crl, c) and may_sign_crls(c)]
        if named and not signed:
            refused.append((path, crl, _refusal(crl, named)))
            continue
        if not named:
            log.warn("{path}: CRL issuer {issuer!r} is none of the trusted CAs or "
                     "intermediates; the CRL applies only to chains whose issuer of that "
                     "name signed it", path=path, issuer=crl.issuer.rfc4514_string(),
                     reason="crl_unknown_issuer")
        # As the issuer of a client chain it needs no path here (the chain has one); as a
        # CRL signer for another certificate, it does.
        signers = [Signer(cert, certified) for cert in signed
                   if (certified := certified_path(cert, anchors, intermediates, now))]
        try:
            loaded.append(FileCRL.of(path, crl, signers))
        except ValueError as e:
            raise ConfigurationError(path, f"CRL has a malformed entry ({e})") from None
    for path, crl, problem in refused:
        if not any(f.index.issuer == canonical_der(crl.issuer) and not f.index.is_delta
                   for f in loaded):
            raise ConfigurationError(path, problem)
        log.warn("{path}: {problem}; the file is ignored ({issuer} has another CRL)",
                 path=path, problem=problem, issuer=crl.issuer.rfc4514_string(),
                 reason="crl_bad_signature")
    return _with_bases(loaded, log)


def _refusal(crl: x509.CertificateRevocationList, named: Sequence[x509.Certificate]) -> str:
    if any(_verifies(crl, c) for c in named):
        return "the CRL issuer's keyUsage lacks cRLSign"
    return "CRL signature does not verify with its issuer's key"


def _with_bases(loaded: list[FileCRL], log: Logger) -> list[FileCRL]:
    """Drop the delta CRLs that update none of the complete CRLs (with a warning)."""
    complete = [f for f in loaded if not f.index.is_delta]
    kept = []
    for crl in loaded:
        if crl.index.is_delta and not any(delta_fits(b.index, crl.index) for b in complete):
            log.warn("{path}: delta CRL of {issuer} (base CRL number {base}) matches no "
                     "complete CRL given; the file is ignored", path=crl.path,
                     issuer=crl.crl.issuer.rfc4514_string(), base=crl.index.delta_base,
                     reason="crl_delta_unmatched")
            continue
        kept.append(crl)
    return kept


# (certificate, its issuer, the verified chain above the issuer).
FilesPair = tuple[x509.Certificate, x509.Certificate, tuple[x509.Certificate, ...]]


class _Unknown:
    """Why no CRL could vouch for a certificate (the first reason met wins)."""

    __slots__ = ("detail", "reason", "until")

    def __init__(self) -> None:
        self.reason = ""
        self.detail = ""
        self.until = _INF

    def note(self, reason: str, detail: str, until: float = _INF) -> None:
        if not self.reason:
            self.reason, self.detail = reason, detail
        self.until = min(self.until, until)


class CRLFiles:
    """The ``--crl`` files as a revocation source: every answer comes from memory."""

    def __init__(self, crls: Sequence[FileCRL], mode: Scope, clock: IReactorTime) -> None:
        self.crls = tuple(crls)
        self.mode = mode
        self.clock = clock
        self._by_name: dict[bytes, list[FileCRL]] = {}
        self._deltas: dict[int, list[FileCRL]] = {}
        complete = [c for c in self.crls if not c.index.is_delta]
        for crl in sorted(complete, key=lambda c: c.index.this_update, reverse=True):
            self._by_name.setdefault(crl.index.issuer, []).append(crl)
        for base in complete:
            fitting = [d for d in self.crls if delta_fits(base.index, d.index)]
            if fitting:
                self._deltas[id(base)] = sorted(fitting, key=lambda d: d.index.number or 0,
                                                reverse=True)
        self._keys: dict[x509.Certificate, bytes] = {}
        self._read: dict[x509.Certificate, CertFacts] = {}
        # Whether a CRL verifies with a key: (id of the FileCRL, the key's SPKI DER).
        self._signed: dict[tuple[int, bytes], bool] = {}

    def pair(self, cert: x509.Certificate, issuer: x509.Certificate) -> FilesPair:
        """Every certificate is asked about: with CRL files, each issuer needs a CRL."""
        return cert, issuer, ()

    def pair_in_chain(self, chain: dict[int, x509.Certificate], depth: int) -> FilesPair:
        """The certificate at ``depth`` of a verified chain, its issuer, and the chain above
        its issuer (certificates there may have signed CRLs for it)."""
        above = []
        for up in range(depth + 2, len(chain)):
            if up not in chain:
                break
            above.append(chain[up])
        return chain[depth], chain[depth + 1], tuple(above)

    def lookup_until(self, pair: FilesPair) -> tuple[Verdict, float]:
        """What the CRLs say of the certificate now, and until when that holds."""
        cert, issuer, above = pair
        return self._status(cert, issuer, above, self.clock.seconds(), frozenset())

    def check(self, pair: FilesPair) -> defer.Deferred[Verdict]:
        """The same answer as ``lookup_until``, as a Deferred."""
        return defer.succeed(self.lookup_until(pair)[0])

    def _facts(self, cert: x509.Certificate) -> CertFacts:
        facts = self._read.get(cert)
        if facts is None:
            if len(self._read) >= 1024:
                self._read.clear()
            facts = self._read[cert] = CertFacts.of(cert)
        return facts

    def _candidates(self, cert: CertFacts) -> list[FileCRL]:
        names = [cert.issuer_der, *cert.crl_issuers]
        if len(names) == 1:
            return self._by_name.get(names[0], [])
        seen: dict[int, FileCRL] = {}
        for name in dict.fromkeys(names):
            for crl in self._by_name.get(name, ()):
                seen.setdefault(id(crl), crl)
        return list(seen.values())

    def _status(self, cert: x509.Certificate, issuer: x509.Certificate,
                above: tuple[x509.Certificate, ...], now: float,
                busy: frozenset[x509.Certificate]) -> tuple[Verdict, float]:
        """RFC 5280 6.3.3 over every CRL file: revoked by any, good once all reasons are
        covered by current CRLs. ``above``: the verified chain above the issuer; ``busy``:
        CRL signers whose own status is being found."""
        facts = self._facts(cert)
        covered: set[x509.ReasonFlags] = set()
        until = _INF
        unknown = _Unknown()
        for crl in self._candidates(facts):
            reasons = interim_reasons(crl.index, facts)
            if reasons is None:
                continue
            key = self._signer_key(crl, issuer, above, now, busy, unknown)
            if key is None:
                continue
            delta = self._delta(crl, key)
            if listing(crl.index, delta.index if delta is not None else None, facts):
                listed = delta if delta is not None and _in(delta.index, facts) else crl
                detail = revocation_detail(listed.crl, facts.serial)
                return Verdict(Status.REVOKED, "revoked", f"{detail} in {listed.path}",
                               cert.subject.rfc4514_string(), SOURCE), _INF
            stale = next((c for c in (crl, delta) if c is not None
                          and not c.index.current(now)), None)
            if stale is not None:
                if now < stale.index.this_update:
                    unknown.note("crl_not_yet_valid", f"{stale.path} is not valid yet",
                                 stale.index.this_update)
                else:
                    unknown.note("crl_expired", f"{stale.path} is past its nextUpdate")
                continue
            covered |= reasons
            for current in (crl, delta):
                if current is not None and current.index.next_update is not None:
                    until = min(until, current.index.next_update)
        subject = cert.subject.rfc4514_string()
        if covered >= ALL_REASONS:
            return Verdict(Status.GOOD, "good", "", subject, SOURCE), until
        if covered:
            unknown.note("crl_unavailable", "the CRL files cover only some revocation "
                                            "reasons for it")
        unknown.note("crl_unavailable", f"no CRL file of {facts.issuer.rfc4514_string()!r} "
                                        "covers it")
        return Verdict(Status.UNKNOWN, unknown.reason, unknown.detail, subject, SOURCE), \
            unknown.until

    def _delta(self, crl: FileCRL, key: bytes) -> FileCRL | None:
        """The newest delta CRL updating ``crl`` and signed with the same key."""
        for delta in self._deltas.get(id(crl), ()):
            if self._signed_with(delta, key):
                return delta
        return None

    def _signer_key(self, crl: FileCRL, issuer: x509.Certificate,
                    above: tuple[x509.Certificate, ...], now: float,
                    busy: frozenset[x509.Certificate], unknown: _Unknown) -> bytes | None:
        """The key ``crl`` verifies with if its signer may vouch for the certificate now:
        the certificate's own issuer, or a configured signer or one further up the verified
        chain whose path holds (6.3.3 (f))."""
        if crl.index.issuer == self._facts(issuer).subject_der:
            key = self._key(issuer)
            if self._signed_with(crl, key) and self._facts(issuer).crl_sign:
                return key
        signers = list(crl.signers)
        for up, cert in enumerate(above):
            if crl.index.issuer == self._facts(cert).subject_der \
                    and self._facts(cert).crl_sign and self._signed_with(crl, self._key(cert)):
                signers.append(Signer(cert, above[up:]))
        for signer in signers:
            problem = self._signer_problem(signer, now, busy)
            if problem is None:
                return self._key(signer.cert)
            unknown.note("crl_unavailable", f"{crl.path}: {problem}")
        return None

    def _signer_problem(self, signer: Signer, now: float,
                        busy: frozenset[x509.Certificate]) -> str | None:
        """Why ``signer`` cannot vouch now (expired, or revoked on its path), or None."""
        if signer.cert in busy:
            return None  # its status is being found: a CRL may cover its own signer
        inside = busy | {signer.cert}
        path = signer.path
        for depth, cert in enumerate(path[:-1]):
            if not (cert.not_valid_before_utc.timestamp() <= now
                    <= cert.not_valid_after_utc.timestamp()):
                return f"the CRL signer's path holds {cert.subject.rfc4514_string()!r}, " \
                       "outside its validity"
            verdict, _ = self._status(cert, path[depth + 1], path[depth + 2:], now, inside)
            if verdict.revoked:
                return (f"the CRL signer's path holds {cert.subject.rfc4514_string()!r}, "
                        f"which is revoked ({verdict.detail})")
            if verdict.status is Status.UNKNOWN and self.mode is Scope.CHAIN:
                return (f"the revocation status of {cert.subject.rfc4514_string()!r} on the "
                        f"CRL signer's path is unknown ({verdict.reason})")
        return None

    def _key(self, cert: x509.Certificate) -> bytes:
        key = self._keys.get(cert)
        if key is None:
            if len(self._keys) >= 256:
                self._keys.clear()
            key = self._keys[cert] = _spki(cert)
        return key

    def _signed_with(self, crl: FileCRL, key: bytes) -> bool:
        memo = (id(crl), key)
        signed = self._signed.get(memo)
        if signed is None:
            signed = any(self._key(s.cert) == key for s in crl.signers)
            if not signed:
                try:
                    public = serialization.load_der_public_key(key)
                    signed = bool(crl.crl.is_signature_valid(public))  # type: ignore[arg-type]
                except (TypeError, ValueError):
                    signed = False
            if len(self._signed) >= 1024:
                self._signed.clear()
            self._signed[memo] = signed
        return signed


def _in(crl: IndexedCRL, cert: CertFacts) -> bool:
    return cert.serial in crl.revoked.get(cert.issuer_der, ())
