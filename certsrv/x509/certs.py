"""Loading certificates and keys from files, with one-line errors naming the file.

This is the one loader of private keys: PEM or DER, encrypted or not, and PKCS#12 files
(told apart by their content), the passphrase read from a ``Passphrase`` only when needed."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.hazmat.primitives.serialization import pkcs12

from certsrv.exceptions import ConfigurationError

if TYPE_CHECKING:
    from certsrv.x509.passphrase import Passphrase

# The private keys certsrv uses and issues.
PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey

__all__ = [
    "KeyBundle",
    "PrivateKey",
    "exposed_mode",
    "describe",
    "is_pkcs12",
    "keys_match",
    "load_certificates",
    "load_private_key",
    "parse_certificates",
    "parse_pkcs12",
    "parse_private_key",
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
    return parse_certificates(path, read_file(path, what), what)


def parse_certificates(name: str, data: bytes, what: str = "certificate"
                       ) -> list[x509.Certificate]:
    """Every certificate in PEM ``data``, or its one DER certificate; at least one."""
    try:
        if _PEM_CERT in data:
            certs = x509.load_pem_x509_certificates(data)
        elif data.startswith(b"\x30"):
            certs = [x509.load_der_x509_certificate(data)]
        else:
            certs = []
    except Exception as e:  # ValueError, but also x509.InvalidVersion and friends
        raise ConfigurationError(name, f"{what} file holds a malformed certificate ({e})"
                                 ) from None
    if not certs:
        raise ConfigurationError(name, f"{what} file contains no certificate "
                                       "(expected PEM or DER)")
    return certs


@dataclass(frozen=True)
class KeyBundle:
    """What a PKCS#12 file holds: a private key, its certificate, and the chain after it."""

    key: PrivateKeyTypes
    certificate: x509.Certificate
    chain: tuple[x509.Certificate, ...] = ()

    def __repr__(self) -> str:
        """Name the certificate's subject; never show the key."""
        return f"KeyBundle({self.certificate.subject.rfc4514_string()!r}, chain={len(self.chain)})"


def is_pkcs12(data: bytes) -> bool:
    """Whether ``data`` looks like a PKCS#12 file: a DER (or BER) SEQUENCE whose first
    element is INTEGER 3 (a certificate starts with a SEQUENCE, a key with 0, 1 or one)."""
    if len(data) < 5 or data[0] != 0x30:
        return False
    first = data[1]
    header = 2 if first <= 0x80 else 2 + (first & 0x7F)  # 0x80: BER's indefinite length
    return data[header:header + 3] == b"\x02\x01\x03"


def load_private_key(path: str, passphrase: Passphrase | None = None) -> PrivateKey:
    """Load a private key (EC, RSA or Ed25519): PEM or DER, encrypted or not, or the key in
    a PKCS#12 file; ``passphrase`` is read only if the file is encrypted."""
    data = read_file(path, "private key")
    return parse_private_key(path, data, passphrase)  # type: ignore[return-value]


def parse_private_key(name: str, data: bytes, passphrase: Passphrase | None
                      ) -> PrivateKeyTypes:
    """The private key in PEM or DER ``data`` or in PKCS#12 ``data``, decrypted with
    ``passphrase`` if encrypted."""
    if is_pkcs12(data):
        return parse_pkcs12(name, data, passphrase).key
    pem = b"-----BEGIN" in data
    load = serialization.load_pem_private_key if pem else serialization.load_der_private_key
    try:
        return load(data, password=None)
    except TypeError:
        pass  # encrypted: the passphrase is needed
    except ValueError:
        kind = "PEM" if pem else "DER"
        raise ConfigurationError(name, f"file is not a valid {kind} private key") from None
    except Exception as e:  # cryptography raises UnsupportedAlgorithm for odd key types
        raise ConfigurationError(name, f"unsupported private key: {e}") from None
    secret = _passphrase_for(name, passphrase)
    try:
        return load(data, password=secret)
    except (ValueError, TypeError):
        # Never repeat the library's message, nor anything derived from the passphrase.
        assert passphrase is not None
        raise ConfigurationError(name, f"the passphrase from {passphrase.source} does not "
                                       "decrypt this key") from None
    except Exception as e:
        raise ConfigurationError(name, f"unsupported private key: {type(e).__name__}") from None


def parse_pkcs12(name: str, data: bytes, passphrase: Passphrase | None) -> KeyBundle:
    """The key, its certificate and the chain in PKCS#12 ``data`` (decrypted if needed)."""
    loaded = _open_pkcs12(name, data, None) or _open_pkcs12(name, data, b"")
    if loaded is None:
        loaded = _open_pkcs12(name, data, _passphrase_for(name, passphrase))
    if loaded is None:
        assert passphrase is not None
        raise ConfigurationError(name, f"the passphrase from {passphrase.source} does not "
                                       "decrypt this PKCS#12 file (or it is damaged)")
    if loaded.key is None:
        raise ConfigurationError(name, "the PKCS#12 file holds no private key")
    certificates = [c.certificate for c in
                    ([loaded.cert] if loaded.cert is not None else []) + loaded.additional_certs]
    leaf = next((c for c in certificates if keys_match(c, loaded.key)), None)
    if leaf is None:
        raise ConfigurationError(name, "the PKCS#12 file holds no certificate for its private key")
    return KeyBundle(loaded.key, leaf, _chain_after(leaf, [c for c in certificates if c != leaf]))


def _open_pkcs12(name: str, data: bytes, password: bytes | None
                 ) -> pkcs12.PKCS12KeyAndCertificates | None:
    """The contents of a PKCS#12 file, or None if ``password`` does not open it (an
    unencrypted file opens with None, some tools' "no password" is the empty one)."""
    try:
        return pkcs12.load_pkcs12(data, password)
    except ValueError:
        return None
    except Exception as e:
        raise ConfigurationError(name, f"unsupported PKCS#12 file ({type(e).__name__})"
                                 ) from None


def _chain_after(leaf: x509.Certificate, others: Sequence[x509.Certificate]
                 ) -> tuple[x509.Certificate, ...]:
    """Those of ``others`` that chain ``leaf`` to its root, in order; unlinked ones are left out."""
    rest = list(others)
    chain: list[x509.Certificate] = []
    current = leaf
    while True:
        issuer = next((c for c in rest if c.subject == current.issuer and c != current), None)
        if issuer is None or current.issuer == current.subject:
            break
        chain.append(issuer)
        rest.remove(issuer)
        current = issuer
    return tuple(chain)


def _passphrase_for(name: str, passphrase: Passphrase | None) -> bytes:
    if passphrase is None:
        raise ConfigurationError(name, "the key is encrypted and no passphrase was given")
    return passphrase.read(name)


def keys_match(certificate: x509.Certificate, key: PrivateKey | PrivateKeyTypes) -> bool:
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
