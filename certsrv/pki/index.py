"""
The index of the certificates a development CA issued, and the two files that hold it.

``index.json`` is the source of truth; ``index.txt`` mirrors it in the OpenSSL ``ca``
database format so that ``openssl ocsp -index`` can serve the same PKI.  ``Index`` reads
the first again only when it changed, and writes both atomically; ``Entry`` is one
certificate in it.
"""

from __future__ import annotations

import contextlib
import datetime
import enum
import json
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from cryptography import x509
from cryptography.x509.oid import NameOID

from certsrv.exceptions import PKIError
from certsrv.pki import write_atomic

__all__ = [
    "FORMAT_VERSION",
    "INDEX",
    "INDEX_TXT",
    "REVOCATION_REASONS",
    "Entry",
    "EntryStatus",
    "Index",
    "Kind",
    "RevocationStatus",
    "openssl_subject",
    "parse_reason",
    "parse_serial",
    "serial_hex",
    "validate_name",
]

INDEX = "index.json"
INDEX_TXT = "index.txt"
# The version of the index and of the PKI's configuration file.
FORMAT_VERSION = 1
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")  # would break the tab-separated index.txt
_SHA256_RE = re.compile(r"[0-9a-f]{64}", re.ASCII)

# The reasons both a CRL and the OpenSSL index can carry, spelled as in RFC 5280 / cryptography.
REVOCATION_REASONS: tuple[x509.ReasonFlags, ...] = (
    x509.ReasonFlags.unspecified,
    x509.ReasonFlags.key_compromise,
    x509.ReasonFlags.ca_compromise,
    x509.ReasonFlags.affiliation_changed,
    x509.ReasonFlags.superseded,
    x509.ReasonFlags.cessation_of_operation,
    x509.ReasonFlags.certificate_hold,
)
# OpenSSL's `ca` spells cACompromise with a capital C.
_OPENSSL_REASON = {reason: reason.value for reason in REVOCATION_REASONS} | {
    x509.ReasonFlags.ca_compromise: "CACompromise",
}

_SHORT_NAMES = {
    NameOID.COUNTRY_NAME: "C",
    NameOID.STATE_OR_PROVINCE_NAME: "ST",
    NameOID.LOCALITY_NAME: "L",
    NameOID.ORGANIZATION_NAME: "O",
    NameOID.ORGANIZATIONAL_UNIT_NAME: "OU",
    NameOID.COMMON_NAME: "CN",
    NameOID.EMAIL_ADDRESS: "emailAddress",
    NameOID.SERIAL_NUMBER: "serialNumber",
    NameOID.DOMAIN_COMPONENT: "DC",
    NameOID.USER_ID: "UID",
}


class Kind(enum.StrEnum):
    """What a certificate in the store is for."""

    CLIENT = "client"
    SERVER = "server"
    OCSP = "ocsp"


class EntryStatus(enum.StrEnum):
    """The lifecycle state of a certificate, as ``list`` shows it."""

    VALID = "valid"
    EXPIRED = "expired"
    REVOKED = "revoked"
    SUPERSEDED = "superseded"
    UNKNOWN = "unknown"


class RevocationStatus(NamedTuple):
    """What the index says about one serial number; OCSP "good" is anything not revoked."""

    status: EntryStatus
    revocation_time: datetime.datetime | None
    reason: x509.ReasonFlags | None

    @property
    def ocsp_status(self) -> str:
        """The OCSP certificate status: ``good``, ``revoked`` or ``unknown``."""
        if self.status is EntryStatus.REVOKED:
            return "revoked"
        return "unknown" if self.status is EntryStatus.UNKNOWN else "good"


_UNKNOWN = RevocationStatus(EntryStatus.UNKNOWN, None, None)


@dataclass(frozen=True)
class Entry:
    """One certificate the CA issued, as recorded in ``index.json``."""

    serial: int
    name: str
    kind: Kind
    subject: str  # OpenSSL one-line form, e.g. /O=certsrv/CN=alice
    not_before: datetime.datetime
    not_after: datetime.datetime
    status: EntryStatus  # as stored: VALID, REVOKED or SUPERSEDED; see status_at() for EXPIRED
    path: str  # relative to the PKI directory; always holds exactly this certificate
    fingerprint: str
    key_path: str | None = None  # None once the key file belongs to a successor
    revoked_at: datetime.datetime | None = None
    revocation_reason: x509.ReasonFlags | None = None
    superseded_by: int | None = None
    key_sha256: str | None = None  # SHA-256 of the SubjectPublicKeyInfo; None in old indexes

    @property
    def serial_hex(self) -> str:
        """The serial number as upper-case hex with an even number of digits."""
        return serial_hex(self.serial)

    @property
    def is_current(self) -> bool:
        """Whether this is the newest certificate of its name."""
        return self.superseded_by is None

    def status_at(self, now: datetime.datetime | None = None) -> EntryStatus:
        """The status at ``now``: revoked, then expired, then superseded, else valid."""
        if self.status is EntryStatus.REVOKED:
            return EntryStatus.REVOKED
        if _aware(now) > self.not_after:
            return EntryStatus.EXPIRED
        return self.status

    def revocation_status(self, now: datetime.datetime | None = None) -> RevocationStatus:
        """The (status, revocation time, reason) triple for this certificate at ``now``."""
        return RevocationStatus(self.status_at(now), self.revoked_at, self.revocation_reason)

    def to_json(self) -> dict[str, Any]:
        """The JSON object stored in ``index.json``."""
        return {
            "serial": self.serial_hex,
            "name": self.name,
            "kind": self.kind.value,
            "subject": self.subject,
            "not_before": _iso(self.not_before),
            "not_after": _iso(self.not_after),
            "status": self.status.value,
            "revoked_at": _iso(self.revoked_at) if self.revoked_at else None,
            "revocation_reason": self.revocation_reason.value if self.revocation_reason else None,
            "superseded_by": serial_hex(self.superseded_by) if self.superseded_by else None,
            "path": self.path,
            "key_path": self.key_path,
            "fingerprint": self.fingerprint,
            "key_sha256": self.key_sha256,
        }

    @classmethod
    def from_json(cls, data: object) -> Entry:
        """Parse one ``index.json`` entry; raises ValueError saying what is wrong."""
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        status = EntryStatus(_string(data, "status"))
        if status not in (EntryStatus.VALID, EntryStatus.REVOKED, EntryStatus.SUPERSEDED):
            raise ValueError(f"status {status.value!r} cannot be stored")
        revoked_at = _optional(data, "revoked_at")
        reason = _optional(data, "revocation_reason")
        superseded_by = _optional(data, "superseded_by")
        key_sha256 = _optional(data, "key_sha256")
        if key_sha256 is not None and not _SHA256_RE.fullmatch(key_sha256):
            raise ValueError("'key_sha256' must be 64 lower-case hex digits")
        entry = cls(
            serial=parse_serial(_string(data, "serial")),
            name=validate_name(_string(data, "name")),
            kind=Kind(_string(data, "kind")),
            subject=_string(data, "subject"),
            not_before=_parse_time(_string(data, "not_before")),
            not_after=_parse_time(_string(data, "not_after")),
            status=status,
            path=_string(data, "path"),
            key_path=_optional(data, "key_path"),
            fingerprint=_string(data, "fingerprint"),
            revoked_at=_parse_time(revoked_at) if revoked_at else None,
            revocation_reason=parse_reason(reason) if reason else None,
            superseded_by=parse_serial(superseded_by) if superseded_by else None,
            key_sha256=key_sha256,
        )
        if status is EntryStatus.REVOKED and entry.revoked_at is None:
            raise ValueError("status is 'revoked' but 'revoked_at' is missing")
        return entry


def validate_name(name: str) -> str:
    """Return ``name`` if it is a safe file name for a certificate, else raise ValueError."""
    if not _NAME_RE.fullmatch(name):
        raise ValueError(
            f"invalid certificate name {name!r}: use 1-64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return name


def parse_serial(text: str) -> int:
    """Parse a hex serial number (``0x`` prefix and ``:`` separators allowed)."""
    cleaned = text.strip().replace(":", "")
    if cleaned.lower().startswith("0x"):
        cleaned = cleaned[2:]
    if not cleaned or not all(c in "0123456789abcdefABCDEF" for c in cleaned):
        raise ValueError(f"invalid serial number {text!r}: expected hexadecimal digits")
    return int(cleaned, 16)


def serial_hex(serial: int) -> str:
    """Format ``serial`` as OpenSSL does: upper-case hex, an even number of digits."""
    digits = format(serial, "X")
    return digits if len(digits) % 2 == 0 else "0" + digits


def parse_reason(reason: x509.ReasonFlags | str) -> x509.ReasonFlags:
    """Return the revocation reason named by ``reason`` (case-insensitive), else ValueError."""
    if isinstance(reason, x509.ReasonFlags):
        if reason in REVOCATION_REASONS:
            return reason
        text = reason.value
    else:
        text = reason
        for candidate in REVOCATION_REASONS:
            if candidate.value.lower() == text.lower():
                return candidate
    names = ", ".join(r.value for r in REVOCATION_REASONS)
    raise ValueError(f"unknown revocation reason {text!r}; expected one of: {names}")


def openssl_subject(name: x509.Name) -> str:
    """Render ``name`` in OpenSSL's one-line form, e.g. ``/O=certsrv/CN=alice``."""
    parts = []
    for rdn in name.rdns:
        attributes = []
        for attribute in rdn:
            key = _SHORT_NAMES.get(attribute.oid, attribute.oid.dotted_string)
            value = attribute.value if isinstance(attribute.value, str) else attribute.value.hex()
            attributes.append(f"{key}={_CONTROL.sub(' ', value)}")
        parts.append("/" + "+".join(attributes))
    return "".join(parts) or "/"

class Index:
    """The certificates in ``index.json`` of a PKI directory, the number of its latest CRL,
    and when the latest CRL written expires.

    ``refresh`` reads the file again only when it changed (its inode, modification time or
    size); ``save`` writes it and its mirror ``index.txt``.  The store holds its lock around
    every refresh, change and save that belong together.
    """

    def __init__(self, directory: Path) -> None:
        self.path = directory / INDEX
        self.entries: list[Entry] = []
        self.by_serial: dict[int, Entry] = {}
        self.crl_number = 0
        # The latest nextUpdate of any CRL written: until then a server may hold an old CRL.
        self.crl_expires_by: datetime.datetime | None = None
        self._stamp: tuple[int, int, int] | None = None

    def refresh(self) -> None:
        """Read ``index.json`` again if it changed since it was last read or written."""
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            raise PKIError(f"{self.path}: missing; is {self.path.parent} a certsrv PKI "
                           "directory?") from None
        if _stamp(stat) == self._stamp:
            return
        with _reading(self.path):
            with self.path.open("rb") as f:
                stat = os.fstat(f.fileno())
                raw = f.read()
        entries, crl_number, expires_by = _parse_index(self.path, raw)
        self.set(entries, crl_number)
        self.crl_expires_by = expires_by
        self._stamp = _stamp(stat)

    def save(self) -> None:
        """Write ``index.json`` and ``index.txt`` (each atomically)."""
        document = {
            "version": FORMAT_VERSION,
            "crl_number": self.crl_number,
            "crl_expires_by": _iso(self.crl_expires_by) if self.crl_expires_by else None,
            "certificates": [entry.to_json() for entry in self.entries],
        }
        write_atomic(self.path, _json_bytes(document))
        write_atomic(self.path.parent / INDEX_TXT, _openssl_index(self.entries))
        self._stamp = _stamp(self.path.stat())

    def set(self, entries: list[Entry], crl_number: int) -> None:
        """Hold ``entries`` and ``crl_number`` (not saved)."""
        self.entries = entries
        self.by_serial = {entry.serial: entry for entry in entries}
        self.crl_number = crl_number

    def add(self, entry: Entry) -> None:
        """Add ``entry`` at the end (not saved)."""
        self.set([*self.entries, entry], self.crl_number)

    def replace(self, old: Entry, new: Entry) -> None:
        """Put ``new`` where ``old`` is (not saved)."""
        self.set([new if entry is old else entry for entry in self.entries], self.crl_number)

    def current(self, name: str) -> Entry | None:
        """The newest certificate named ``name``, unless a successor replaced it."""
        for entry in reversed(self.entries):
            if entry.name == name and entry.is_current:
                return entry
        return None

    def find(self, name_or_serial: str | int) -> Entry:
        """The current certificate named ``name_or_serial``, or the one with that serial."""
        if isinstance(name_or_serial, str):
            entry = self.current(name_or_serial)
            if entry is not None:
                return entry
            try:
                serial = parse_serial(name_or_serial)
            except ValueError:
                raise PKIError(f"{self.path}: no certificate named {name_or_serial!r}") from None
        else:
            serial = name_or_serial
        found = self.by_serial.get(serial)
        if found is None:
            raise PKIError(
                f"{self.path}: no certificate named or with serial {name_or_serial!r}"
            )
        return found


def _stamp(stat: os.stat_result) -> tuple[int, int, int]:
    return stat.st_ino, stat.st_mtime_ns, stat.st_size


def _parse_index(path: Path, raw: bytes) -> tuple[list[Entry], int, datetime.datetime | None]:
    """The entries, the CRL number and the CRL expiry ``index.json`` holds; PKIError if it
    is not a valid index."""
    try:
        data = json.loads(raw)
    except ValueError as e:
        raise PKIError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(data, dict) or not isinstance(data.get("certificates"), list):
        raise PKIError(f"{path}: expected an object with a 'certificates' list")
    crl_number = data.get("crl_number", 0)
    if not isinstance(crl_number, int) or isinstance(crl_number, bool) or crl_number < 0:
        raise PKIError(f"{path}: 'crl_number' must be a non-negative integer")
    crl_expires_by = data.get("crl_expires_by")
    try:
        expires_by = _parse_time(crl_expires_by) if crl_expires_by else None
    except (TypeError, ValueError):
        raise PKIError(f"{path}: 'crl_expires_by' must be a timestamp") from None
    entries = []
    for position, item in enumerate(data["certificates"], 1):
        try:
            entries.append(Entry.from_json(item))
        except ValueError as e:
            raise PKIError(f"{path}: certificate entry {position}: {e}") from None
    return entries, crl_number, expires_by


def _openssl_index(entries: Iterable[Entry]) -> bytes:
    lines = []
    for entry in entries:
        revocation = ""
        if entry.status is EntryStatus.REVOKED and entry.revoked_at is not None:
            flag = "R"
            revocation = _openssl_time(entry.revoked_at, utc_only=True)
            reason = entry.revocation_reason
            if reason is not None and reason is not x509.ReasonFlags.unspecified:
                revocation += "," + _OPENSSL_REASON[reason]
        else:
            # Expired certificates stay "V": `openssl ocsp` (3.0) answers an "E" line with a
            # response that holds no status at all, which clients reject; "good" is correct.
            flag = "V"
        fields = (flag, _openssl_time(entry.not_after), revocation, entry.serial_hex,
                  "unknown", entry.subject)
        lines.append("\t".join(fields) + "\n")
    return "".join(lines).encode()


def _openssl_time(when: datetime.datetime, *, utc_only: bool = False) -> str:
    # UTCTime before 2050, GeneralizedTime from then on, as `openssl ca` writes them.
    when = when.astimezone(datetime.UTC)
    if when.year < 2050 or utc_only:  # revoke() refuses revocation times from 2050 on
        return when.strftime("%y%m%d%H%M%SZ")
    return when.strftime("%Y%m%d%H%M%SZ")


@contextlib.contextmanager
def _reading(path: Path) -> Iterator[None]:
    try:
        yield
    except FileNotFoundError:
        raise PKIError(f"{path}: missing") from None
    except OSError as e:
        raise PKIError(f"{path}: cannot read it ({e.strerror or e})") from None


def _json_bytes(document: object) -> bytes:
    return (json.dumps(document, indent=2) + "\n").encode()


def _aware(now: datetime.datetime | None) -> datetime.datetime:
    if now is None:
        return datetime.datetime.now(datetime.UTC)
    return now if now.tzinfo is not None else now.replace(tzinfo=datetime.UTC)


def _iso(when: datetime.datetime) -> str:
    return when.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_time(text: str) -> datetime.datetime:
    try:
        parsed = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"invalid timestamp {text!r}") from None
    return _aware(parsed)


def _string(data: dict[str, Any], key: str) -> str:
    if key not in data:
        raise ValueError(f"missing {key!r}")
    value = data[key]
    if not isinstance(value, str):
        raise ValueError(f"{key!r} must be a string")
    return value


def _optional(data: dict[str, Any], key: str) -> str | None:
    value = data.get(key)
    if value is not None and not isinstance(value, str):
        raise ValueError(f"{key!r} must be a string or null")
    return value
