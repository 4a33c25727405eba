"""Certificate revocation lists given as files: loading and checking them before use."""

from __future__ import annotations

from collections.abc import Sequence

from cryptography import x509

from certsrv._certs import read_file
from certsrv.exceptions import ConfigurationError

__all__ = ["check_crl", "load_crl"]


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
                return issuer
        except (TypeError, ValueError):
            continue
    raise ConfigurationError(path, "CRL signature does not verify with its issuer's key")


def next_update(crl: x509.CertificateRevocationList) -> float | None:
    """The CRL's nextUpdate as POSIX seconds, if it has one."""
    moment = crl.next_update_utc
    return moment.timestamp() if moment is not None else None
