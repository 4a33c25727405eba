"""Loading certificates and keys from files, with one-line errors naming the file."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from certsrv.exceptions import ConfigurationError

# The private keys certsrv uses and issues.
PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey

__all__ = [
    "PrivateKey",
    "exposed_mode",
    "describe",
    "keys_match",
    "load_certificates",
    "load_private_key",
    "read_file",
    "reading_from",
    "unreadable",
]

_PEM_CERT = b"-----BEGIN CERTIFICATE-----"


# The files a reload read off the reactor thread, if ``read_file`` is to answer from them.
_SNAPSHOT: ContextVar[Mapping[str, bytes | OSError] | None] = ContextVar("snapshot",
                                                                         default=None)


@contextmanager
def reading_from(files: Mapping[str, bytes | OSError]) -> Iterator[None]:
    """Within the block, ``read_file`` answers from ``files`` (contents, or the error reading
    them) instead of the disk; reading a file not among them is an error."""
    token = _SNAPSHOT.set(files)
    try:
        yield
    finally:
        _SNAPSHOT.reset(token)


def read_file(path: str, what: str) -> bytes:
    """Read ``path`` or raise ConfigurationError saying why it cannot be read."""
    files = _SNAPSHOT.get()
    try:
        if files is None:
            return Path(path).read_bytes()
        if path not in files:
            raise LookupError(f"{path} was read but is not among the watched files")
        found = files[path]
        if isinstance(found, OSError):
            raise found
        return found
    except OSError as e:
        raise _unreadable(path, what, e) from None


def _unreadable(path: str, what: str, error: OSError) -> ConfigurationError:
    if isinstance(error, FileNotFoundError):
        return ConfigurationError(path, f"{what} file does not exist")
    if isinstance(error, IsADirectoryError):
        return ConfigurationError(path, f"{what} file is a directory")
    if isinstance(error, PermissionError):
        return ConfigurationError(path, f"{what} file is not readable (permission denied)")
    return ConfigurationError(path, f"cannot read {what} file: {error.strerror}")


def load_certificates(path: str, what: str = "certificate") -> list[x509.Certificate]:
    """Load every certificate in a PEM bundle or a single DER file; at least one is required."""
    data = read_file(path, what)
    try:
        if _PEM_CERT in data:
            certs = x509.load_pem_x509_certificates(data)
        elif data.startswith(b"\x30"):
            certs = [x509.load_der_x509_certificate(data)]
        else:
            certs = []
    except Exception as e:  # ValueError, but also x509.InvalidVersion and friends
        raise ConfigurationError(path, f"{what} file holds a malformed certificate ({e})"
                                 ) from None
    if not certs:
        raise ConfigurationError(path, f"{what} file contains no certificate "
                                       "(expected PEM or DER)")
    return certs


def load_private_key(path: str) -> PrivateKey:
    """Load an unencrypted PEM or DER private key (EC, RSA or Ed25519)."""
    data = read_file(path, "private key")
    try:
        if b"-----BEGIN" in data:
            key = serialization.load_pem_private_key(data, password=None)
        else:
            key = serialization.load_der_private_key(data, password=None)
    except TypeError:
        raise ConfigurationError(path, "private key is encrypted; certsrv needs it unencrypted"
                                 ) from None
    except ValueError:
        raise ConfigurationError(path, "file is not a valid unencrypted PEM or DER private key"
                                 ) from None
    except Exception as e:  # cryptography raises UnsupportedAlgorithm for odd key types
        raise ConfigurationError(path, f"unsupported private key: {e}") from None
    return key  # type: ignore[return-value]


def keys_match(certificate: x509.Certificate, key: PrivateKey) -> bool:
    """Whether ``key`` is the private half of ``certificate``'s public key."""
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    return bool(certificate.public_key().public_bytes(der, spki)
                == key.public_key().public_bytes(der, spki))


def describe(certificate: x509.Certificate | None) -> dict[str, str | None]:
    """Subject, issuer, serial and fingerprint for a log event; never raises, whatever a
    hostile certificate holds (unreadable fields show as ``<unreadable>``)."""
    if certificate is None:
        return {"subject": None, "issuer": None, "serial": None, "sha256": None}
    fields: dict[str, str | None] = {}
    readers = {
        "subject": lambda: certificate.subject.rfc4514_string(),
        "issuer": lambda: certificate.issuer.rfc4514_string(),
        "serial": lambda: format(certificate.serial_number, "x"),
        "sha256": lambda: sha256_hex(certificate),
    }
    for name, read in readers.items():
        try:
            fields[name] = read()
        except Exception:
            fields[name] = "<unreadable>"
    return fields


def unreadable(certificate: x509.Certificate) -> str | None:
    """What of the certificate's names and extensions cannot be parsed, if anything."""
    try:
        certificate.subject.rfc4514_string()
    except Exception as e:
        return f"unreadable subject ({e.__class__.__name__})"
    try:
        certificate.issuer.rfc4514_string()
    except Exception as e:
        return f"unreadable issuer ({e.__class__.__name__})"
    try:
        len(certificate.extensions)
    except Exception as e:
        return f"unreadable extensions ({e.__class__.__name__}: {e})"
    return None


def sha256_hex(certificate: x509.Certificate) -> str:
    """The SHA-256 fingerprint, lowercase hex without separators."""
    return certificate.fingerprint(hashes.SHA256()).hex()


def exposed_mode(path: str) -> int | None:
    """The permission bits of a key file others may read (group/other bits set), or None."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    return stat.S_IMODE(mode) if mode & 0o077 else None
