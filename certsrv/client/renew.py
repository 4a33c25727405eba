"""
Renewing a client certificate by EST re-enrollment (RFC 7030 4.2.2): when, what to send,
what came back, and replacing the files.

A new key of the current key's type is made here and never leaves the process except into
the key file (mode 0600). The request carries the current certificate's subject and
subjectAltName unchanged, as RFC 7030 requires of a re-enrollment.

Replacing two files cannot be one atomic step. A combined file (certificate and key in one
PEM, the same path given for both) is replaced by a single rename: readers see the old pair
or the new one. With two files, both new files are written and synced first, then renamed
key first, certificate second; a reader in the microseconds between the renames reads a new
key with the old certificate. certsrv's loaders check that key and certificate match and
refuse such a pair (``http_client`` keeps the pair it has; the server's reload keeps the
running one and tries again), so they never use a mismatched pair; other readers should
retry on a mismatch, or use a combined file.
"""

from __future__ import annotations

import base64
import datetime
import os
import secrets
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import pkcs7
from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from certsrv.exceptions import CertsrvError

__all__ = [
    "CLOCK_SKEW",
    "DEFAULT_FRACTION",
    "DEFAULT_RETRY",
    "AutoRenewal",
    "Post",
    "EST_PATH",
    "PKCS10_TYPE",
    "RenewalError",
    "Renewed",
    "due",
    "new_key_like",
    "read_certs_only",
    "reenrollment_request",
    "renew_at",
    "replace_pair",
    "simplereenroll_url",
    "validate_fraction",
]

# Renew once less than this fraction of the certificate's validity remains.
DEFAULT_FRACTION = 1 / 3
EST_PATH = "/.well-known/est/simplereenroll"
PKCS10_TYPE = b"application/pkcs10"
_MAX_RESPONSE = 256 * 1024
# Seconds before trying again after a failed renewal (unless the server says Retry-After).
DEFAULT_RETRY = 60.0
# How far in the future a new certificate may start (the EST server's clock may be ahead).
CLOCK_SKEW = 300.0
_log = Logger(namespace="certsrv.client")

NewKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey


class RenewalError(CertsrvError):
    """A renewal failed: the server refused, or its answer was unusable."""

    def __init__(self, problem: str, retry_after: float | None = None) -> None:
        super().__init__(problem, retry_after)
        self.problem = problem
        self.retry_after = retry_after

    def __str__(self) -> str:
        return self.problem


@dataclass(frozen=True)
class Renewed:
    """A renewal that succeeded: the new certificate, the chain after it, and the new key."""

    certificate: x509.Certificate
    chain: tuple[x509.Certificate, ...]
    key: NewKey

    @property
    def serial(self) -> str:
        """The new certificate's serial number as OpenSSL and certsrv-pki show it: upper-case
        hex, an even number of digits."""
        digits = f"{self.certificate.serial_number:X}"
        return digits if len(digits) % 2 == 0 else "0" + digits

    @property
    def not_after(self) -> datetime.datetime:
        """When the new certificate expires."""
        return self.certificate.not_valid_after_utc

    def __repr__(self) -> str:
        """Name the certificate; never show the key."""
        return f"Renewed(serial={self.serial}, not_after={self.not_after.isoformat()})"


def validate_fraction(fraction: float) -> float:
    """``fraction`` if it is between 0 and 1 (exclusive), else ValueError."""
    if not 0 < fraction < 1:
        raise ValueError(f"the renewal fraction must be between 0 and 1, not {fraction!r}")
    return fraction


def renew_at(certificate: x509.Certificate, fraction: float = DEFAULT_FRACTION) -> float:
    """The time (seconds since the epoch) from which less than ``fraction`` of the
    certificate's validity remains."""
    start = certificate.not_valid_before_utc.timestamp()
    end = certificate.not_valid_after_utc.timestamp()
    return end - fraction * (end - start)


def due(certificate: x509.Certificate, now: float, fraction: float = DEFAULT_FRACTION) -> bool:
    """Whether less than ``fraction`` of the certificate's validity remains at ``now``."""
    return now >= renew_at(certificate, fraction)


def new_key_like(public_key: object) -> NewKey:
    """A new private key of ``public_key``'s type and size (ECDSA P-256 for other types)."""
    if isinstance(public_key, rsa.RSAPublicKey):
        return rsa.generate_private_key(public_exponent=65537,
                                        key_size=max(2048, public_key.key_size))
    if isinstance(public_key, ed25519.Ed25519PublicKey):
        return ed25519.Ed25519PrivateKey.generate()
    if isinstance(public_key, ec.EllipticCurvePublicKey) and isinstance(
            public_key.curve, ec.SECP384R1 | ec.SECP521R1):
        return ec.generate_private_key(public_key.curve)
    return ec.generate_private_key(ec.SECP256R1())


def reenrollment_request(certificate: x509.Certificate, key: NewKey) -> bytes:
    """The base64 DER PKCS#10 request for ``key`` with ``certificate``'s subject and SANs."""
    builder = x509.CertificateSigningRequestBuilder().subject_name(certificate.subject)
    try:
        sans = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        pass
    else:
        builder = builder.add_extension(sans.value, sans.critical)
    digest = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    csr = builder.sign(key, digest)
    return base64.encodebytes(csr.public_bytes(serialization.Encoding.DER))


def simplereenroll_url(url: str) -> str:
    """The simplereenroll URL of the EST server at ``url`` (its base, or the full URL)."""
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.netloc:
        raise ValueError(f"the EST URL {url!r} must be an https:// URL")
    path = parts.path.rstrip("/")
    if not path.endswith("/simplereenroll"):
        path += EST_PATH
    return urlunsplit((parts.scheme, parts.netloc, path, "", ""))


def read_certs_only(body: bytes) -> list[x509.Certificate]:
    """The certificates in a base64 PKCS#7 certs-only body (RFC 7030 4.2.3)."""
    if len(body) > _MAX_RESPONSE:
        raise RenewalError(f"the EST answer is over {_MAX_RESPONSE} bytes")
    try:
        der = base64.b64decode(b"".join(body.split()), validate=True)
        certificates = pkcs7.load_der_pkcs7_certificates(der)
    except Exception as e:  # binascii.Error, ValueError, UnsupportedAlgorithm...
        raise RenewalError(f"the EST answer is not base64 PKCS#7 certs-only ({e})") from None
    if not certificates:
        raise RenewalError("the EST answer holds no certificate")
    return certificates


def accept(current: x509.Certificate, key: NewKey, certificates: Sequence[x509.Certificate],
           now: float, issuers: Sequence[x509.Certificate] = ()) -> Renewed:
    """The renewal the EST answer gives, checked: a certificate for ``key`` with the current
    subject and SANs, valid at ``now``, by the current issuer (its signature checked with the
    key that signed the current certificate, if that certificate is in ``issuers`` or the
    answer); RenewalError otherwise: the files in use are then left as they are."""
    public = _spki(key.public_key())
    try:
        leaf = next((c for c in certificates if _spki(c.public_key()) == public), None)
        if leaf is None:
            raise RenewalError("the EST answer holds no certificate for the new key")
        same_names = leaf.subject == current.subject and _sans(leaf) == _sans(current)
    except (ValueError, UnsupportedAlgorithm) as e:  # a certificate cryptography cannot read
        raise RenewalError(f"the EST answer holds an unreadable certificate ({e})") from None
    if not same_names:
        raise RenewalError("the new certificate's subject or subjectAltName differs from the "
                           "current one")
    if leaf.issuer != current.issuer:
        raise RenewalError("the new certificate has another issuer than the current one")
    _check_validity(leaf, now)
    _check_signature(leaf, current, [*certificates, *issuers])
    chain = tuple(c for c in certificates if c is not leaf)
    return Renewed(leaf, chain, key)


def _check_validity(leaf: x509.Certificate, now: float) -> None:
    """RenewalError unless ``leaf`` is valid at ``now`` (within the allowed clock skew)."""
    if leaf.not_valid_after_utc.timestamp() <= now:
        raise RenewalError("the new certificate expired on "
                           f"{leaf.not_valid_after_utc:%Y-%m-%d %H:%M:%S} UTC")
    if leaf.not_valid_before_utc.timestamp() > now + CLOCK_SKEW:
        raise RenewalError(f"the new certificate is not valid before "
                           f"{leaf.not_valid_before_utc:%Y-%m-%d %H:%M:%S} UTC")


def _check_signature(leaf: x509.Certificate, current: x509.Certificate,
                     candidates: Sequence[x509.Certificate]) -> None:
    """RenewalError unless ``leaf`` is signed by the certificate among ``candidates`` that
    signed ``current`` (none known: nothing to check it with)."""
    for issuer in candidates:
        if issuer.subject != current.issuer or not _signed_by(current, issuer):
            continue
        if not _signed_by(leaf, issuer):
            raise RenewalError("the new certificate's signature does not verify with the key "
                               "of the CA that issued the current one")
        return


def _signed_by(certificate: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        certificate.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True


def _spki(public_key: Any) -> bytes:
    return public_key.public_bytes(  # type: ignore[no-any-return]
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _sans(certificate: x509.Certificate) -> frozenset[x509.GeneralName]:
    try:
        return frozenset(certificate.extensions.get_extension_for_class(
            x509.SubjectAlternativeName).value)
    except x509.ExtensionNotFound:
        return frozenset()


def key_pem(key: NewKey) -> bytes:
    """The key as unencrypted PKCS#8 PEM."""
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def replace_pair(renewed: Renewed, cert_path: str | os.PathLike[str],
                 key_path: str | os.PathLike[str] | None = None) -> None:
    """Replace the certificate file (new certificate, then its chain) and the key file (0600);
    one file holding both when ``key_path`` is None or the same path (see the module)."""
    certificates = b"".join(c.public_bytes(serialization.Encoding.PEM)
                            for c in (renewed.certificate, *renewed.chain))
    cert_file = Path(cert_path)
    if key_path is None or os.path.abspath(key_path) == os.path.abspath(cert_file):
        _rename(_written(cert_file, key_pem(renewed.key) + certificates, private=True), cert_file)
        _sync_directory(cert_file.parent)
        return
    key_file = Path(key_path)
    new_key = _written(key_file, key_pem(renewed.key), private=True)
    try:
        new_cert = _written(cert_file, certificates, private=False)
    except BaseException:
        new_key.unlink(missing_ok=True)
        raise
    # Both are on disk before either is renamed: the window is two renames long.
    _rename(new_key, key_file)
    _rename(new_cert, cert_file)
    for directory in {key_file.parent, cert_file.parent}:
        _sync_directory(directory)


def _written(target: Path, data: bytes, *, private: bool) -> Path:
    """A new synced file beside ``target`` holding ``data`` (0600 if private, else 0644)."""
    temporary = target.with_name(f".{target.name[:64]}.{secrets.token_hex(8)}.tmp")
    mode = 0o600 if private else 0o644
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(temporary, flags, mode)
    try:
        os.fchmod(fd, mode)  # exactly, whatever the umask
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        temporary.unlink(missing_ok=True)
        raise
    os.close(fd)
    return temporary


def _rename(temporary: Path, target: Path) -> None:
    try:
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def _sync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# Sends a body to the simplereenroll URL with the current certificate: (status, Retry-After
# header or None, body).
Post = Callable[[bytes], Awaitable[tuple[int, bytes | None, bytes]]]


class AutoRenewal:
    """Renews a client certificate over EST once less than ``fraction`` of its validity is
    left (by ``clock``), without holding up requests: ``poke`` before each request starts a
    renewal in the background when one is due; ``adopt`` then puts the new pair in use."""

    def __init__(self, *, current: Callable[[], x509.Certificate], post: Post,
                 adopt: Callable[[Renewed], None], cert_path: str | os.PathLike[str],
                 key_path: str | os.PathLike[str] | None, clock: IReactorTime,
                 fraction: float = DEFAULT_FRACTION, retry: float = DEFAULT_RETRY,
                 chain: Callable[[], Sequence[x509.Certificate]] = tuple,
                 offload: Callable[[Callable[[], None]], Awaitable[None]] | None = None,
                 issuers: Sequence[x509.Certificate] = ()) -> None:
        """``chain``: the intermediates in use, kept when the answer has none; ``offload``
        writes the files away from the reactor (a thread pool; default: at once);
        ``issuers``: CA certificates that may have issued the client's (its trusted CAs), to
        check the new certificate's signature with."""
        self._current = current
        self._chain = chain
        self._offload = offload
        self._post = post
        self.issuers = tuple(issuers)
        self._adopt = adopt
        self.cert_path = cert_path
        self.key_path = key_path
        self.clock = clock
        self.fraction = validate_fraction(fraction)
        self.retry = retry
        self.renewals = 0
        self.failures = 0
        self.renewing = False
        self._waiters: list[defer.Deferred[Renewed]] = []
        self._retry_at = 0.0

    @property
    def certificate(self) -> x509.Certificate:
        """The certificate in use now."""
        return self._current()

    def poke(self) -> None:
        """Start a renewal if one is due and none is under way or waiting to retry."""
        now = self.clock.seconds()
        if not self.renewing and now >= self._retry_at and \
                due(self._current(), now, self.fraction):
            self.renew().addErrback(lambda _: None)  # _finished logs it

    def renew(self) -> defer.Deferred[Renewed]:
        """Renew now, or join the renewal under way: the new certificate, or RenewalError."""
        waiter: defer.Deferred[Renewed] = defer.Deferred()
        self._waiters.append(waiter)
        if not self.renewing:
            self.renewing = True  # before the coroutine runs: its own request pokes
            started = defer.Deferred.fromCoroutine(self._renew(self._current()))
            started.addBoth(self._finished)
        return waiter

    async def _renew(self, current: x509.Certificate) -> Renewed:
        key = new_key_like(current.public_key())
        status, retry_after, body = await self._post(reenrollment_request(current, key))
        if status != 200:
            raise RenewalError(f"the EST server answered {status}: "
                               f"{body[:300].decode('utf-8', 'replace').strip()}",
                               _seconds(retry_after))
        renewed = accept(current, key, read_certs_only(body), self.clock.seconds(),
                         (*self._chain(), *self.issuers))
        if not renewed.chain:
            renewed = replace(renewed, chain=tuple(self._chain()))
        cert_path, key_path = self.cert_path, self.key_path
        if self._offload is None:
            replace_pair(renewed, cert_path, key_path)
        else:
            await self._offload(lambda: replace_pair(renewed, cert_path, key_path))
        self._adopt(renewed)
        return renewed

    def _finished(self, result: Renewed | Failure) -> None:
        self.renewing = False
        waiters, self._waiters = self._waiters, []
        self._report(result)
        for waiter in waiters:
            if isinstance(result, Failure):
                waiter.errback(result)
            else:
                waiter.callback(result)

    def _report(self, result: Renewed | Failure) -> None:
        if isinstance(result, Failure):
            self.failures += 1
            delay = self.retry
            error = result.value
            if isinstance(error, RenewalError) and error.retry_after is not None:
                delay = max(delay, error.retry_after)
            self._retry_at = self.clock.seconds() + delay
            _log.warn("renewing the client certificate {path} failed, next try in {delay} s: "
                      "{problem}", path=os.fspath(self.cert_path), delay=round(delay),
                      problem=str(result.value), reason="renewal_failed")
            return
        self.renewals += 1
        _log.info("renewed the client certificate {path}: serial {serial}, valid until "
                  "{not_after}", path=os.fspath(self.cert_path), serial=result.serial,
                  not_after=result.not_after.isoformat(), reason="renewed")


def _seconds(retry_after: bytes | None) -> float | None:
    """A Retry-After given in seconds (an HTTP date is not used here)."""
    try:
        return float(int(retry_after)) if retry_after is not None else None
    except ValueError:
        return None
