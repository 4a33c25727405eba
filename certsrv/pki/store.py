"""
A development PKI kept in a directory: a CA, the certificates it issued, an index, a CRL.

The index (``index.json`` and its OpenSSL mirror ``index.txt``) is ``certsrv.pki.index``;
this module issues, renews and revokes, and keeps the files in step.  Every file is
replaced atomically (temporary file, then rename), private keys are written with mode
0600 and directories are made with mode 0700.  Every method that needs the current time
takes an optional ``now``.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import hashlib
import ipaddress
import json
import os
import re
import urllib.parse
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from stat import S_IMODE, S_ISVTX, S_IWOTH
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID

from certsrv.exceptions import EnrollmentReason, EnrollmentRefused, PKIError
from certsrv.pki import (
    _BACKDATE,
    CertifiablePublicKey,
    CertificateAuthority,
    IssuedCertificate,
    KeyType,
    PrivateKey,
    encrypted_key_pem,
    fingerprint,
    pkcs12_bytes,
    validate_host,
    write_atomic,
)
from certsrv.pki.index import (
    _UNKNOWN,
    FORMAT_VERSION,
    INDEX,
    INDEX_TXT,
    REVOCATION_REASONS,
    Entry,
    EntryStatus,
    Index,
    Kind,
    RevocationStatus,
    _aware,
    _iso,
    _json_bytes,
    _reading,
    openssl_subject,
    parse_reason,
    parse_serial,
    serial_hex,
    validate_name,
)
from certsrv.x509.certs import parse_private_key
from certsrv.x509.passphrase import Passphrase

__all__ = [
    "CA_CERT",
    "CA_KEY",
    "CONFIG",
    "CRL",
    "DEFAULT_CRL_DAYS",
    "DEFAULT_DAYS",
    "DEFAULT_OCSP_VALIDITY",
    "INDEX",
    "INDEX_ATTR",
    "INDEX_TXT",
    "REVOCATION_REASONS",
    "Entry",
    "EntryStatus",
    "Kind",
    "PKIStore",
    "RevocationStatus",
    "parse_duration",
    "parse_reason",
    "parse_serial",
    "validate_name",
]

CA_CERT = "ca.pem"
CA_KEY = "ca.key"
CONFIG = "pki.json"
INDEX_ATTR = "index.txt.attr"
CRL = "crl.pem"
CLIENTS_DIR = "clients"
SERVERS_DIR = "servers"
NEWCERTS_DIR = "newcerts"
_LOCK = ".pki.lock"

DEFAULT_DAYS = 365
DEFAULT_CRL_DAYS = 7
# How long the dev OCSP responder's answers are valid, hence the longest a server may keep
# using a "good" answer after `revoke`.
DEFAULT_OCSP_VALIDITY = datetime.timedelta(minutes=5)
SERVER_HOSTS = ("localhost", "127.0.0.1", "::1")
MAX_VALIDITY = datetime.timedelta(days=36500)

# Everything `init` writes at the top level; `init` refuses to run while any of them exists.
_TOP_LEVEL = (
    CA_CERT, CA_KEY, CONFIG, INDEX, INDEX_TXT, INDEX_ATTR, CRL,
    "server.pem", "server.key", "client.pem", "client.key", "ocsp.pem", "ocsp.key",
)
# What a finished `init` leaves (crl.pem is written last).
_COMPLETE = (CA_CERT, CA_KEY, CONFIG, INDEX, INDEX_TXT, INDEX_ATTR, CRL)
_DURATION_RE = re.compile(r"([0-9]{1,12})([smhd]?)", re.ASCII)
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str, *, bare_unit: str | None = None) -> datetime.timedelta:
    """Parse a validity such as ``90s``, ``10m``, ``8h`` or ``30d`` (a bare number: bare_unit)."""
    match = _DURATION_RE.fullmatch(text)
    if match is None:
        raise ValueError(f"invalid duration {text!r}: expected a whole number and a unit "
                         "(s, m, h or d), e.g. 90s, 10m, 8h, 30d")
    number, unit = match.groups()
    if not unit:
        if bare_unit is None:
            raise ValueError(f"invalid duration {text!r}: add a unit (s, m, h or d), "
                             f"e.g. {number}d")
        unit = bare_unit
    seconds = int(number) * _UNIT_SECONDS[unit]
    if seconds < 1:
        raise ValueError(f"invalid duration {text!r}: must be at least 1 second")
    if seconds > MAX_VALIDITY.total_seconds():
        raise ValueError(f"invalid duration {text!r}: must be at most {MAX_VALIDITY.days} days")
    return datetime.timedelta(seconds=seconds)


class PKIStore:
    """A CA, its issued certificates, their index and the CRL, kept in one directory."""

    def __init__(self, path: Path, config: dict[str, Any]) -> None:
        """Wrap an existing PKI directory; use ``PKIStore.open`` or ``PKIStore.init``."""
        self.path = path
        self.key_type = KeyType.parse(str(config.get("key_type", KeyType.ECDSA_P256.value)))
        self.ocsp_url: str | None = config.get("ocsp_url")
        self.crl_url: str | None = config.get("crl_url")
        self._ca: CertificateAuthority | None = None
        self._index = Index(path)

    # -- creating and opening --------------------------------------------------------------

    @classmethod
    def init(
        cls,
        path: str | os.PathLike[str],
        *,
        key_type: KeyType = KeyType.ECDSA_P256,
        ocsp_url: str | None = None,
        crl_url: str | None = None,
        force: bool = False,
        now: datetime.datetime | None = None,
        ca_common_name: str = "certsrv development CA",
        server_hosts: Sequence[str] = SERVER_HOSTS,
        client_validity: datetime.timedelta | None = None,
    ) -> PKIStore:
        """Create a PKI in ``path``: CA, server, client and OCSP responder certs, index, CRL."""
        store, _ = cls._init(
            Path(path), key_type=key_type, ocsp_url=ocsp_url, crl_url=crl_url, force=force,
            now=now, ca_common_name=ca_common_name, server_hosts=server_hosts, reuse=False,
            client_validity=client_validity,
        )
        return store

    @classmethod
    def open_or_init(
        cls,
        path: str | os.PathLike[str],
        *,
        key_type: KeyType | None = None,
        ocsp_url: str | None = None,
        crl_url: str | None = None,
        force: bool = False,
        now: datetime.datetime | None = None,
        ca_common_name: str = "certsrv development CA",
        server_hosts: Sequence[str] = SERVER_HOSTS,
        client_validity: datetime.timedelta | None = None,
    ) -> tuple[PKIStore, bool]:
        """Reuse the complete PKI in ``path``, else create one; the flag says if it was created."""
        return cls._init(
            Path(path), key_type=key_type, ocsp_url=ocsp_url, crl_url=crl_url, force=force,
            now=now, ca_common_name=ca_common_name, server_hosts=server_hosts, reuse=True,
            client_validity=client_validity,
        )

    @classmethod
    def _init(
        cls,
        root: Path,
        *,
        key_type: KeyType | None,
        ocsp_url: str | None,
        crl_url: str | None,
        force: bool,
        now: datetime.datetime | None,
        ca_common_name: str,
        server_hosts: Sequence[str],
        reuse: bool,
        client_validity: datetime.timedelta | None = None,
    ) -> tuple[PKIStore, bool]:
        lifetime = _validity(None, client_validity)
        _check_init(root, ocsp_url, crl_url, server_hosts)
        store = cls(root, _config(key_type or KeyType.ECDSA_P256, ocsp_url, crl_url))
        # Decide under the lock: of two concurrent inits, the second sees the first's PKI.
        with store._locked():
            existing = [name for name in _TOP_LEVEL if os.path.lexists(root / name)]
            if existing and not force:
                if reuse:
                    return cls._reuse(root, key_type, ocsp_url, crl_url), False
                shown = ", ".join(existing[:3]) + (", ..." if len(existing) > 3 else "")
                raise PKIError(f"{root} already holds a PKI ({shown}); refusing to overwrite "
                               "it without --force")
            if force:
                store._remove_generated()
            store._create(now, ca_common_name, server_hosts, lifetime)
        return store, True

    @classmethod
    def _reuse(cls, root: Path, key_type: KeyType | None, ocsp_url: str | None,
               crl_url: str | None) -> PKIStore:
        """Open the PKI in ``root`` for init; PKIError if it is half-made or made otherwise."""
        replace_hint = f"`certsrv-pki init --force {root}` replaces it"
        missing = [name for name in _COMPLETE if not os.path.lexists(root / name)]
        if missing:
            raise PKIError(f"{root} holds an incomplete PKI (missing {', '.join(missing)}); "
                           f"{replace_hint}")
        try:
            store = cls.open(root)
            _ = store.ca
        except PKIError as e:
            raise PKIError(f"{root} holds a damaged PKI ({e}); {replace_hint}") from None
        asked = (("key type", key_type.value if key_type else None, store.key_type.value),
                 ("OCSP URL", ocsp_url, store.ocsp_url), ("CRL URL", crl_url, store.crl_url))
        for what, wanted, actual in asked:
            if wanted is not None and wanted != actual:
                have = repr(actual) if actual is not None else "none"
                raise PKIError(f"{root} already holds a PKI with {what} {have}, not "
                               f"{wanted!r}; {replace_hint}")
        return store

    def _create(self, now: datetime.datetime | None, ca_common_name: str,
                server_hosts: Sequence[str], client_validity: datetime.timedelta) -> None:
        """Write a new CA and its first certificates; the caller holds the lock."""
        root, key_type = self.path, self.key_type
        now = _aware(now)
        ca = CertificateAuthority.create(
            ca_common_name, key_type=key_type, now=now, ocsp_url=self.ocsp_url,
            crl_url=self.crl_url,
        )
        _write_atomic(root / CA_KEY, ca.private_key_pem(), private=True)
        _write_atomic(root / CA_CERT, ca.certificate_pem())
        _write_atomic(root / CONFIG, _json_bytes(_config(key_type, self.ocsp_url, self.crl_url)))
        _write_atomic(root / INDEX_ATTR, b"unique_subject = no\n")
        self._ca = ca
        self._index.set([], 0)
        self._index.crl_expires_by = None
        validity = datetime.timedelta(days=DEFAULT_DAYS)
        for name, kind, path_stem, issued in (
            ("server", Kind.SERVER, "server",
             ca.issue_server(*server_hosts, key_type=key_type, now=now, validity=validity)),
            ("client", Kind.CLIENT, "client",
             ca.issue_client("client", key_type=key_type, now=now, validity=client_validity)),
            ("ocsp", Kind.OCSP, "ocsp",
             ca.issue_ocsp_responder(key_type=key_type, now=now, validity=validity)),
        ):
            self._record(name, kind, path_stem, issued)
        self._write_crl(now, DEFAULT_CRL_DAYS)

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> PKIStore:
        """Open the PKI in ``path``; raises PKIError naming the directory if it is not one."""
        root = Path(path)
        if not root.is_dir():
            raise PKIError(
                f"{root}: no such directory; create a PKI with `certsrv-pki init {root}`"
            )
        missing = [name for name in (CA_CERT, CA_KEY, CONFIG, INDEX) if not (root / name).exists()]
        if missing:
            raise PKIError(
                f"{root} is not a certsrv PKI directory (missing {', '.join(missing)}); "
                f"create one with `certsrv-pki init {root}`"
            )
        config = _read_json(root / CONFIG)
        if not isinstance(config, dict):
            raise PKIError(f"{root / CONFIG}: expected a JSON object")
        if config.get("version") != FORMAT_VERSION:
            raise PKIError(f"{root / CONFIG}: unsupported format version {config.get('version')!r}")
        try:
            store = cls(root, config)
        except ValueError as e:
            raise PKIError(f"{root / CONFIG}: {e}") from None
        store._index.refresh()
        return store

    # -- reading -----------------------------------------------------------------------------

    @property
    def ca(self) -> CertificateAuthority:
        """The CA, loaded from ``ca.pem`` and ``ca.key`` on first use."""
        if self._ca is None:
            certificate = _load_certificate(self.path / CA_CERT)
            key = _load_private_key(self.path / CA_KEY)
            try:
                self._ca = CertificateAuthority.load(
                    certificate, key, ocsp_url=self.ocsp_url, crl_url=self.crl_url
                )
            except ValueError as e:
                raise PKIError(f"{self.path / CA_KEY}: {e}") from None
        return self._ca

    @property
    def crl_number(self) -> int:
        """The number of the most recently written CRL."""
        self._index.refresh()
        return self._index.crl_number

    def entries(self) -> list[Entry]:
        """Every certificate in the index, oldest first."""
        self._index.refresh()
        return list(self._index.entries)

    def find(self, name_or_serial: str | int) -> Entry:
        """The current certificate named ``name_or_serial``, or the one with that hex serial."""
        self._index.refresh()
        return self._index.find(name_or_serial)

    def status_of(self, serial: int, now: datetime.datetime | None = None) -> RevocationStatus:
        """What the index says about ``serial``; re-reads index.json only when it changed."""
        self._index.refresh()
        entry = self._index.by_serial.get(serial)
        return entry.revocation_status(now) if entry is not None else _UNKNOWN

    def same_key(self, entry: Entry) -> list[Entry]:
        """The other certificates in the index that certify ``entry``'s public key."""
        self._index.refresh()
        key = self._key_hash(entry)
        return [other for other in self._index.entries
                if other.serial != entry.serial and self._key_hash(other) == key]

    @property
    def crl_expires_by(self) -> datetime.datetime | None:
        """The latest nextUpdate of any CRL written here: a server may hold one until then."""
        self._index.refresh()
        return self._index.crl_expires_by

    # -- issuing ----------------------------------------------------------------------------

    def issue_client(
        self,
        name: str,
        *,
        emails: Iterable[str] = (),
        uris: Iterable[str] = (),
        dns: Iterable[str] = (),
        days: int | None = None,
        validity: datetime.timedelta | None = None,
        key_type: KeyType | None = None,
        now: datetime.datetime | None = None,
        passphrase: Passphrase | None = None,
    ) -> Entry:
        """Issue a client certificate ``clients/NAME.pem`` with CN=NAME and the given SANs;
        with ``passphrase``, its key file is encrypted."""
        validate_name(name)
        uris = list(uris)
        for uri in uris:
            _check_uri(uri)
        dns = list(dns)
        for host in dns:
            _check_client_dns(host)
        lifetime = _validity(days, validity)
        with self._locked():
            self._index.refresh()
            stem = self._stem_for(name, Kind.CLIENT, now)
            issued = self.ca.issue_client(
                name, emails=list(emails), uris=uris, dns=dns,
                key_type=key_type or self.key_type, now=_aware(now), validity=lifetime,
            )
            entry = self._record(name, Kind.CLIENT, stem, issued, passphrase)
            self._index.save()
        return entry

    def issue_server(
        self,
        hosts: Sequence[str],
        *,
        name: str | None = None,
        days: int | None = None,
        validity: datetime.timedelta | None = None,
        key_type: KeyType | None = None,
        now: datetime.datetime | None = None,
        passphrase: Passphrase | None = None,
    ) -> Entry:
        """Issue a server certificate ``servers/NAME.pem`` for ``hosts`` (NAME: first host);
        with ``passphrase``, its key file is encrypted."""
        if not hosts:
            raise ValueError("a server certificate needs at least one host name or IP address")
        for host in hosts:
            validate_host(host)
        if name is None:
            try:
                name = validate_name(hosts[0])
            except ValueError:
                raise ValueError(
                    f"{hosts[0]!r} cannot be used as a file name; choose one with --name"
                ) from None
        validate_name(name)
        lifetime = _validity(days, validity)
        with self._locked():
            self._index.refresh()
            stem = self._stem_for(name, Kind.SERVER, now)
            issued = self.ca.issue_server(
                *hosts, key_type=key_type or self.key_type, now=_aware(now), validity=lifetime
            )
            entry = self._record(name, Kind.SERVER, stem, issued, passphrase)
            self._index.save()
        return entry

    def renew(
        self,
        name: str,
        *,
        days: int | None = None,
        validity: datetime.timedelta | None = None,
        keep_key: bool = False,
        now: datetime.datetime | None = None,
        passphrase: Passphrase | None = None,
        encrypt_key: bool = False,
    ) -> Entry:
        """Re-issue the current certificate ``name`` with the same subject, SANs and kind.

        ``passphrase`` decrypts a kept key that is encrypted and, with ``encrypt_key``,
        encrypts the key file written."""
        if encrypt_key and passphrase is None:
            raise ValueError("encrypting the key needs a passphrase")
        if days is not None or validity is not None:
            lifetime: datetime.timedelta | None = _validity(days, validity)
        else:
            lifetime = None
        with self._locked():
            self._index.refresh()
            old = self._index.current(name)
            if old is None:
                raise PKIError(f"{self.path / INDEX}: no certificate named {name!r}")
            cert_file = self.path / old.path
            certificate = _load_certificate(cert_file)
            key = None
            if keep_key:
                self._refuse_compromised(_key_sha256(certificate), f"the key of {cert_file}")
                if not old.key_path:
                    raise PKIError(f"{cert_file}: its private key is no longer in the store")
                key = _load_private_key(self.path / old.key_path, passphrase)
            if lifetime is None:
                lifetime = _lifetime_of(certificate)
            issued = _reissue(self.ca, old.kind, certificate, key, lifetime, _aware(now))
            entry = self._record(name, old.kind, _stem(old.path), issued,
                                 passphrase if encrypt_key else None)
            self._index.save()
        return entry

    def export(
        self,
        name: str,
        passphrase: Passphrase,
        *,
        p12: str | os.PathLike[str] | None = None,
        key: str | os.PathLike[str] | None = None,
        key_passphrase: Passphrase | None = None,
    ) -> Entry:
        """Write the current certificate ``name`` with its key and the CA chain to ``p12``
        (PKCS#12), and/or its key alone to ``key`` (encrypted PEM): both mode 0600, both
        encrypted with ``passphrase``. ``key_passphrase`` (default: ``passphrase``) decrypts
        the stored key if it is encrypted."""
        if p12 is None and key is None:
            raise ValueError("nothing to export: give a PKCS#12 file, a key file, or both")
        self._index.refresh()
        entry = self._index.current(name)
        if entry is None:
            raise PKIError(f"{self.path / INDEX}: no certificate named {name!r}")
        if entry.status is EntryStatus.REVOKED:
            raise PKIError(f"{name!r} (serial {entry.serial_hex}) is revoked; renew it first")
        if not entry.key_path:
            raise PKIError(f"{self.path / entry.path}: its private key is no longer in the store")
        private = _load_private_key(self.path / entry.key_path, key_passphrase or passphrase)
        chain = _load_chain(self.path / entry.path)
        secret = passphrase.read(f"the export of {name!r}")
        if p12 is not None:
            cas = [*chain[1:]]
            root = _load_certificate(self.path / CA_CERT)
            if root not in cas and root != chain[0]:
                cas.append(root)
            _write_atomic(Path(p12), pkcs12_bytes(name, private, chain[0], cas, secret),
                          private=True)
        if key is not None:
            _write_atomic(Path(key), encrypted_key_pem(private, secret), private=True)
        return entry
    def reenroll(
        self,
        serial: int,
        public_key: CertifiablePublicKey,
        *,
        validity: datetime.timedelta | None = None,
        now: datetime.datetime | None = None,
    ) -> tuple[Entry, x509.Certificate]:
        """Certify ``public_key`` as the successor of client certificate ``serial`` (EST).

        Same subject, SANs and EKU; the validity of the certificate renewed unless
        ``validity`` is given. The key stays with the client: ``NAME.pem`` gets the new
        certificate and the store's ``NAME.key``, which held the old key, is removed.
        """
        lifetime = _validity(None, validity) if validity is not None else None
        with self._locked():
            self._index.refresh()
            old = self._index.by_serial.get(serial)
            if old is None or old.kind is not Kind.CLIENT:
                raise PKIError(f"{self.path / INDEX}: no client certificate with serial "
                               f"{serial_hex(serial)}")
            current = self._index.current(old.name)
            assert current is not None  # a name's newest entry is always current
            self._refuse_revoked_line(old)
            replaced = self._replaced_successor(old, current, _aware(now))
            archived = self.path / archive_path(old)
            template = _load_certificate(archived if archived.exists() else self.path / old.path)
            certificate = self.ca.certify(template, public_key, now=_aware(now),
                                          validity=lifetime or _exact_lifetime(template))
            key_sha256 = _key_sha256(certificate)
            self._refuse_compromised(key_sha256, f"the new key of {old.name!r}")
            self._refuse_known_key(key_sha256)
            stem = _stem(current.path)
            entry = replace(_new_entry(old.name, Kind.CLIENT, stem, certificate, key_sha256),
                            key_path=None)
            pem = certificate.public_bytes(serialization.Encoding.PEM)
            _write_atomic(self.path / archive_path(entry), pem)
            _write_atomic(self.path / entry.path, pem)  # the store's CA is a root
            (self.path / f"{stem}.key").unlink(missing_ok=True)
            self._index.replace(current, _superseded(replaced or current, entry))
            self._index.add(entry)
            if replaced is not None:
                self._write_crl(now, DEFAULT_CRL_DAYS)  # also saves the index
            else:
                self._index.save()
        return entry, certificate

    def _replaced_successor(self, old: Entry, current: Entry, now: datetime.datetime
                            ) -> Entry | None:
        """None if ``old`` is its name's current certificate. Else that current certificate,
        revoked (superseded), if it is ``old``'s successor (or follows it through successors
        so replaced): its answer was lost, or another holder of ``old``'s key asks; either
        way one successor stays valid, never two. EnrollmentRefused if a valid certificate
        came between."""
        if current.serial == old.serial:
            return None
        if current.key_path is not None:
            # Renewed by hand in the PKI, whose files hold the successor's key: leave them be.
            raise EnrollmentRefused(EnrollmentReason.SUPERSEDED, f"by serial {current.serial_hex}")
        between = self._index.by_serial.get(old.superseded_by or 0)
        while between is not None and between.serial != current.serial:
            if not _replaced(between):
                raise EnrollmentRefused(EnrollmentReason.SUPERSEDED,
                                        f"serial {old.serial_hex} was renewed as "
                                        f"{between.serial_hex}, itself renewed since")
            between = self._index.by_serial.get(between.superseded_by or 0)
        return _revoked(current, _revocation_time(now), x509.ReasonFlags.superseded)

    def _refuse_revoked_line(self, entry: Entry) -> None:
        """Raise EnrollmentRefused if ``entry`` or a later certificate of its name is revoked
        (but for successors replaced after a lost answer): revoking a name's newest
        certificate must also stop its predecessors from renewing."""
        seen: set[int] = set()
        successor: Entry | None = entry
        while successor is not None and successor.serial not in seen:
            if successor.status is EntryStatus.REVOKED and not _replaced(successor):
                later = "" if successor is entry else f", issued after {entry.serial_hex}"
                raise EnrollmentRefused(EnrollmentReason.REVOKED,
                                        f"serial {successor.serial_hex}{later}")
            seen.add(successor.serial)
            following = successor.superseded_by
            successor = self._index.by_serial.get(following) if following is not None else None

    def entry_of(self, serial: int) -> Entry | None:
        """The index entry of ``serial``, or None."""
        self._index.refresh()
        return self._index.by_serial.get(serial)

    def _refuse_known_key(self, key_sha256: str) -> None:
        """Raise EnrollmentRefused if a certificate in the index already certifies this key
        (under the PKI lock: two requests for one new key cannot both be issued)."""
        other = next((e for e in self._index.entries if self._key_hash(e) == key_sha256), None)
        if other is not None:
            raise EnrollmentRefused(EnrollmentReason.KEY_REUSED,
                                    f"the key of certificate {other.serial_hex}")

    # -- revoking ---------------------------------------------------------------------------

    def revoke(
        self,
        name_or_serial: str | int,
        reason: x509.ReasonFlags | str = x509.ReasonFlags.unspecified,
        when: datetime.datetime | None = None,
        *,
        crl_days: int = DEFAULT_CRL_DAYS,
        now: datetime.datetime | None = None,
    ) -> Entry:
        """Revoke a certificate at ``when`` (default now) and rewrite ``crl.pem``.

        By name, every earlier certificate of the name still valid (superseded by a renewal)
        is revoked too; by serial, that one certificate. keyCompromise revokes every
        certificate of the same public key too (see same_key), and marks the key so that it
        is never certified again.
        """
        reason = parse_reason(reason)
        revoked_at = _revocation_time(when if when is not None else now)
        _days(crl_days, what="CRL validity")
        with self._locked():
            self._index.refresh()
            old = self._index.find(name_or_serial)
            self._refuse_revoked(old, reason)
            targets = self._revoked_with(old, reason)
            if isinstance(name_or_serial, str) and self._index.current(name_or_serial) is old:
                targets += self._valid_predecessors(old, revoked_at)
            for target in targets:
                if target.revocation_reason is not x509.ReasonFlags.key_compromise:
                    self._index.replace(target, _revoked(target, revoked_at, reason))
            self._write_crl(now, crl_days)  # also saves the index
            return self._index.by_serial[old.serial]

    def write_crl(
        self, *, days: int = DEFAULT_CRL_DAYS, now: datetime.datetime | None = None
    ) -> x509.CertificateRevocationList:
        """Sign and write a fresh ``crl.pem`` from the index, with the next CRL number."""
        _days(days, what="CRL validity")
        with self._locked():
            self._index.refresh()
            return self._write_crl(now, days)

    def _refuse_revoked(self, entry: Entry, reason: x509.ReasonFlags) -> None:
        """Raise PKIError if ``entry`` is revoked already (unless its key leaked since)."""
        # A certificate revoked for another reason may still learn that its key leaked.
        compromise = reason is x509.ReasonFlags.key_compromise
        if entry.status is EntryStatus.REVOKED and (
            not compromise or entry.revocation_reason is x509.ReasonFlags.key_compromise
        ):
            assert entry.revoked_at is not None
            raise PKIError(
                f"{self.path / INDEX}: certificate {entry.name!r} (serial {entry.serial_hex}) "
                f"was already revoked at {_iso(entry.revoked_at)}"
            )

    def _valid_predecessors(self, entry: Entry, at: datetime.datetime) -> list[Entry]:
        """The earlier certificates of ``entry``'s name still valid at ``at``: superseded,
        but their keys are still with whoever held them (a renewal does not revoke)."""
        return [other for other in self._index.entries
                if other.name == entry.name and other is not entry
                and other.status is EntryStatus.SUPERSEDED and other.not_after > at]

    def _revoked_with(self, entry: Entry, reason: x509.ReasonFlags) -> list[Entry]:
        """``entry``, and for keyCompromise every other certificate of its key."""
        targets = [entry]
        if reason is x509.ReasonFlags.key_compromise:
            key = self._key_hash(entry)
            targets += [other for other in self._index.entries
                        if other is not entry and self._key_hash(other) == key]
        return targets

    # -- internals --------------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(self.path / _LOCK, flags, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _stem_for(self, name: str, kind: Kind, now: datetime.datetime | None) -> str:
        """The path (without suffix) a new certificate ``name`` goes to; checks for clashes."""
        current = self._index.current(name)
        if current is None:
            directory = CLIENTS_DIR if kind is Kind.CLIENT else SERVERS_DIR
            return f"{directory}/{name}"
        if current.kind is not kind:
            raise PKIError(
                f"{self.path / INDEX}: {name!r} is already the name of a {current.kind.value} "
                "certificate; choose another name"
            )
        if current.status_at(now) is EntryStatus.VALID:
            raise PKIError(
                f"{self.path / INDEX}: a valid certificate named {name!r} already exists "
                f"({current.path}, serial {current.serial_hex}); renew or revoke it instead"
            )
        return _stem(current.path)

    def _key_hash(self, entry: Entry) -> str:
        """The SHA-256 of ``entry``'s public key, from the index or (old indexes) its file."""
        if entry.key_sha256 is not None:
            return entry.key_sha256
        archived = self.path / archive_path(entry)
        path = archived if archived.exists() else self.path / entry.path
        return _key_sha256(_load_certificate(path))

    def _refuse_compromised(self, key_sha256: str, what: str) -> None:
        """Raise PKIError if a certificate of this key was revoked for keyCompromise."""
        for entry in self._index.entries:
            if entry.revocation_reason is x509.ReasonFlags.key_compromise and \
                    self._key_hash(entry) == key_sha256:
                raise PKIError(
                    f"{self.path / INDEX}: refusing to certify {what}: that key was revoked "
                    f"for keyCompromise (certificate {entry.name!r}, serial {entry.serial_hex}); "
                    "renew without --keep-key to get a new key"
                )

    def _record(self, name: str, kind: Kind, stem: str, issued: IssuedCertificate,
                passphrase: Passphrase | None = None) -> Entry:
        """Write ``issued`` to ``stem``.pem/.key (encrypted with ``passphrase`` if given) and
        newcerts/, and add it to the index."""
        certificate = issued.certificate
        key_sha256 = _key_sha256(certificate)
        self._refuse_compromised(key_sha256, f"the key of the new {kind.value} certificate "
                                             f"{name!r}")
        entry = _new_entry(name, kind, stem, certificate, key_sha256)
        _make_private_dir((self.path / stem).parent)
        _make_private_dir(self.path / NEWCERTS_DIR)
        _write_atomic(self.path / archive_path(entry), issued.certificate_pem())
        secret = passphrase.read(f"{stem}.key") if passphrase is not None else None
        _write_atomic(self.path / f"{stem}.key", issued.private_key_pem(secret), private=True)
        _write_atomic(self.path / entry.path, issued.chain_pem())
        previous = self._index.current(name)
        if previous is not None:
            self._index.replace(previous, _superseded(previous, entry))
        self._index.add(entry)
        return entry

    def _write_crl(
        self, now: datetime.datetime | None, days: int
    ) -> x509.CertificateRevocationList:
        now = _aware(now)
        next_update = now + datetime.timedelta(days=days)
        index = self._index
        index.crl_number += 1
        if index.crl_expires_by is None or next_update > index.crl_expires_by:
            index.crl_expires_by = next_update
        # Persist the number before the CRL: a crash may skip a number but never reuse one.
        index.save()
        crl = self.ca.crl(
            [
                (entry.serial, entry.revoked_at, entry.revocation_reason)
                for entry in index.entries
                if entry.status is EntryStatus.REVOKED and entry.revoked_at is not None
            ],
            now=now,
            next_update=next_update,
            crl_number=index.crl_number,
        )
        _write_atomic(self.path / CRL, crl.public_bytes(serialization.Encoding.PEM))
        return crl

    def _remove_generated(self) -> None:
        for name in _TOP_LEVEL:
            (self.path / name).unlink(missing_ok=True)
        for directory in (CLIENTS_DIR, SERVERS_DIR, NEWCERTS_DIR):
            for suffix in ("*.pem", "*.key"):
                for file in (self.path / directory).glob(suffix):
                    file.unlink()


def archive_path(entry: Entry) -> str:
    """Where the certificate of ``entry`` is kept once a successor takes its file name."""
    return f"{NEWCERTS_DIR}/{entry.serial_hex}.pem"


def _new_entry(name: str, kind: Kind, stem: str, certificate: x509.Certificate,
               key_sha256: str) -> Entry:
    """The index entry of a certificate just issued and kept at ``stem``.pem and .key."""
    return Entry(
        serial=certificate.serial_number,
        name=name,
        kind=kind,
        subject=openssl_subject(certificate.subject),
        not_before=certificate.not_valid_before_utc,
        not_after=certificate.not_valid_after_utc,
        status=EntryStatus.VALID,
        path=f"{stem}.pem",
        key_path=f"{stem}.key",
        fingerprint=fingerprint(certificate),
        key_sha256=key_sha256,
    )


def _superseded(previous: Entry, successor: Entry) -> Entry:
    """``previous`` once ``successor`` takes its name: archived, its key file handed on."""
    status = (EntryStatus.REVOKED if previous.status is EntryStatus.REVOKED
              else EntryStatus.SUPERSEDED)
    return replace(previous, status=status, superseded_by=successor.serial,
                   path=archive_path(previous), key_path=None)


def _replaced(entry: Entry) -> bool:
    """Whether ``entry`` was revoked as superseded and has a successor: a re-enrollment's
    answer that was asked for again (see PKIStore.reenroll)."""
    return (entry.status is EntryStatus.REVOKED and entry.superseded_by is not None
            and entry.revocation_reason is x509.ReasonFlags.superseded)


def _revocation_time(when: datetime.datetime | None) -> datetime.datetime:
    """``when`` (default now) to the second; ValueError from 2050 on."""
    revoked_at = _aware(when).replace(microsecond=0)
    if revoked_at.year >= 2050:
        # index.txt holds revocation dates as UTCTime only, as `openssl ca` does.
        raise ValueError(f"revocation time {_iso(revoked_at)} is not before 2050")
    return revoked_at


def _revoked(entry: Entry, at: datetime.datetime, reason: x509.ReasonFlags) -> Entry:
    """``entry`` revoked for ``reason`` at ``at``, or at its earlier revocation time."""
    if entry.status is EntryStatus.REVOKED and entry.revoked_at is not None:
        at = min(at, entry.revoked_at)
    return replace(entry, status=EntryStatus.REVOKED, revoked_at=at, revocation_reason=reason)


def _reissue(
    ca: CertificateAuthority,
    kind: Kind,
    certificate: x509.Certificate,
    key: PrivateKey | None,
    validity: datetime.timedelta,
    now: datetime.datetime,
) -> IssuedCertificate:
    """A new certificate like ``certificate``: same subject, SANs and kind."""
    common_name = _attribute(certificate.subject, NameOID.COMMON_NAME)
    organization = _attribute(certificate.subject, NameOID.ORGANIZATION_NAME)
    try:
        sans = certificate.extensions.get_extension_for_class(
            x509.SubjectAlternativeName
        ).value
    except x509.ExtensionNotFound:
        sans = x509.SubjectAlternativeName([])
    dns = sans.get_values_for_type(x509.DNSName)
    ips = [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)]
    options: dict[str, object] = {
        "organization": organization,
        "now": now,
        "validity": validity,
        "private_key": key,
        "key_type": _key_type_of(certificate),
    }
    if kind is Kind.SERVER:
        for host in dns:
            validate_host(host)  # one issued before names were checked is not renewed
        return ca.issue_server(*dns, *ips, common_name=common_name, **options)
    if kind is Kind.OCSP:
        return ca.issue_ocsp_responder(common_name or "certsrv OCSP responder", **options)
    return ca.issue_client(
        common_name or "", dns=dns, ips=ips,
        emails=sans.get_values_for_type(x509.RFC822Name),
        uris=sans.get_values_for_type(x509.UniformResourceIdentifier), **options,
    )


_write_atomic = write_atomic


def _make_private_dir(path: Path) -> None:
    """Create ``path`` and its missing parents with mode 0700, whatever the umask."""
    missing = []
    current = path
    while not os.path.lexists(current) and current != current.parent:
        missing.append(current)
        current = current.parent
    for directory in reversed(missing):
        try:
            os.mkdir(directory, 0o700)
        except FileExistsError:
            if not directory.is_dir():
                raise
            continue  # made concurrently, by another certsrv-pki
        os.chmod(directory, 0o700)  # a umask such as 0o200 would leave it unusable
    if not path.is_dir():
        raise PKIError(f"{path}: exists and is not a directory")


def _check_init(root: Path, ocsp_url: str | None, crl_url: str | None,
                server_hosts: Sequence[str]) -> None:
    """Check what ``init`` was asked for, and make ``root`` (mode 0700) if it is missing."""
    for label, url in (("OCSP", ocsp_url), ("CRL", crl_url)):
        if url is not None:
            _check_url(label, url)
    for host in server_hosts:
        validate_host(host)
    if root.exists() and not root.is_dir():
        raise PKIError(f"{root}: exists and is not a directory")
    _make_private_dir(root)
    _check_not_shared(root)


def _config(key_type: KeyType, ocsp_url: str | None, crl_url: str | None) -> dict[str, Any]:
    """The contents of ``pki.json``."""
    return {
        "version": FORMAT_VERSION,
        "key_type": key_type.value,
        "ocsp_url": ocsp_url,
        "crl_url": crl_url,
    }


def _check_not_shared(path: Path) -> None:
    """Refuse a directory where other users could replace files (world-writable, not sticky)."""
    mode = path.stat().st_mode
    if mode & S_IWOTH and not mode & S_ISVTX:
        raise PKIError(f"{path}: writable by every user (mode {S_IMODE(mode):04o}), who "
                       f"could replace the CA; `chmod 700 {path}` or choose another directory")


def _read_json(path: Path) -> object:
    with _reading(path):
        raw = path.read_bytes()
    try:
        return json.loads(raw)
    except ValueError as e:
        raise PKIError(f"{path}: not valid JSON ({e})") from None


def _load_certificate(path: Path) -> x509.Certificate:
    with _reading(path):
        raw = path.read_bytes()
    try:
        return x509.load_pem_x509_certificate(raw)
    except ValueError:
        raise PKIError(f"{path}: not a PEM certificate") from None


def _load_chain(path: Path) -> list[x509.Certificate]:
    with _reading(path):
        raw = path.read_bytes()
    try:
        return x509.load_pem_x509_certificates(raw)
    except ValueError:
        raise PKIError(f"{path}: not a PEM certificate") from None


def _load_private_key(path: Path, passphrase: Passphrase | None = None) -> PrivateKey:
    with _reading(path):
        raw = path.read_bytes()
    key = parse_private_key(str(path), raw, passphrase)
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
                      | ed25519.Ed25519PrivateKey):
        raise PKIError(f"{path}: unsupported private key type {type(key).__name__}")
    return key


def _key_type_of(certificate: x509.Certificate) -> KeyType:
    public_key = certificate.public_key()
    if isinstance(public_key, rsa.RSAPublicKey):
        return KeyType.RSA_3072 if public_key.key_size >= 3072 else KeyType.RSA_2048
    if isinstance(public_key, ed25519.Ed25519PublicKey):
        return KeyType.ED25519
    return KeyType.ECDSA_P256


def _attribute(name: x509.Name, oid: x509.ObjectIdentifier) -> str | None:
    values = name.get_attributes_for_oid(oid)
    return str(values[0].value) if values else None


def _stem(path: str) -> str:
    return path.removesuffix(".pem")


def _key_sha256(certificate: x509.Certificate) -> str:
    return hashlib.sha256(certificate.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )).hexdigest()


def _validity(days: int | None, validity: datetime.timedelta | None) -> datetime.timedelta:
    """The validity that ``days`` or ``validity`` (not both) asks for; default a year."""
    if validity is None:
        return _days(DEFAULT_DAYS if days is None else days)
    if days is not None:
        raise ValueError("give the validity as days or as a duration, not both")
    if not isinstance(validity, datetime.timedelta) or \
            not datetime.timedelta(seconds=1) <= validity <= MAX_VALIDITY:
        raise ValueError(f"validity must be from 1 second to {MAX_VALIDITY.days} days, "
                         f"not {validity!r}")
    return validity


def _lifetime_of(certificate: x509.Certificate) -> datetime.timedelta:
    """The validity ``certificate`` was issued with: whole days, or seconds if under a day."""
    lifetime = certificate.not_valid_after_utc - certificate.not_valid_before_utc
    if lifetime > _BACKDATE:
        lifetime -= _BACKDATE  # issue() starts certificates a little before ``now``
    if lifetime >= datetime.timedelta(days=1):
        return datetime.timedelta(days=round(lifetime / datetime.timedelta(days=1)))
    return datetime.timedelta(seconds=max(1, round(lifetime.total_seconds())))


def _exact_lifetime(certificate: x509.Certificate) -> datetime.timedelta:
    """The validity ``certificate`` was issued with, to the second and never rounded up (a
    36-hour certificate renewed as two days would grow with each renewal's rounding)."""
    lifetime = certificate.not_valid_after_utc - certificate.not_valid_before_utc
    if lifetime > _BACKDATE:
        lifetime -= _BACKDATE
    return datetime.timedelta(seconds=max(1, int(lifetime.total_seconds())))


def _check_client_dns(host: str) -> None:
    """Refuse a dNSName SAN for a client certificate that names no single host."""
    validate_host(host)
    if "*" in host:
        raise ValueError(f"invalid DNS name {host!r}: a client certificate names one host, "
                         "not a wildcard")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return
    raise ValueError(f"invalid DNS name {host!r}: an IP address is no DNS name")


def _days(days: int, *, what: str = "validity") -> datetime.timedelta:
    if isinstance(days, bool) or not isinstance(days, int) or days < 1:
        raise ValueError(f"{what} must be a positive whole number of days, not {days!r}")
    return datetime.timedelta(days=days)


def _check_url(label: str, url: str) -> None:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"{label} URL {url!r} must be an absolute http:// or https:// URL")


def _check_uri(uri: str) -> None:
    parts = urllib.parse.urlsplit(uri)
    if not parts.scheme or not (parts.netloc or parts.path):
        raise ValueError(f"URI SAN {uri!r} is not an absolute URI (e.g. spiffe://example.org/svc)")


