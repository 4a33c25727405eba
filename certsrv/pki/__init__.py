"""
The development PKI: a CA, its store and CLI, and its OCSP responder.

Owns: this module (``CertificateAuthority``, ``IssuedCertificate``, keys, atomic writes),
``index`` (the index of issued certificates, ``index.json`` and its OpenSSL mirror),
``store`` (the PKI directory: issuing, renewing, revoking), ``cli`` (``certsrv-pki``),
``responder`` (OCSP answers), ``est`` (EST re-enrollment), ``indexsource`` (the index as a
revocation source) and ``service`` (``twistd certsrv-ocsp``, alias ``certsrv-pki-service``).
Nothing in the server stack imports it.
May import: ``certsrv.x509``, ``certsrv.revocation``, ``certsrv.web``, ``certsrv.server``.

A small X.509 PKI for development and tests: CAs, client and server certificates, CRLs.

Modelled on trustme: every certificate is made in memory with an explicit validity
window, so tests control time; nothing here touches the disk except the ``write*``
helpers, which replace files atomically and create private key files with mode 0600.
"""

from __future__ import annotations

import datetime
import enum
import ipaddress
import os
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import idna
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from certsrv.x509.certs import PrivateKey

__all__ = [
    "DEFAULT_VALIDITY",
    "CertifiablePublicKey",
    "CertificateAuthority",
    "IssuedCertificate",
    "KeyType",
    "P12_KDF_ROUNDS",
    "PrivateKey",
    "encrypted_key_pem",
    "fingerprint",
    "generate_key",
    "pkcs12_bytes",
    "self_signed_client",
    "validate_host",
    "write_atomic",
    "write_private_key",
]


DEFAULT_VALIDITY = datetime.timedelta(days=365)
# The public keys the PKI certifies for a key it did not generate (EST re-enrollment).
CertifiablePublicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey | ed25519.Ed25519PublicKey
_BACKDATE = datetime.timedelta(minutes=5)
_CA_VALIDITY = datetime.timedelta(days=3650)


class KeyType(enum.Enum):
    """The kinds of key the PKI can generate."""

    ECDSA_P256 = "ecdsa"
    RSA_2048 = "rsa"
    RSA_3072 = "rsa3072"
    ED25519 = "ed25519"

    @classmethod
    def parse(cls, text: str) -> KeyType:
        """Return the key type named by ``text`` (``ecdsa``, ``rsa``, ``rsa3072``, ``ed25519``)."""
        for member in cls:
            if member.value == text.lower():
                return member
        names = ", ".join(m.value for m in cls)
        raise ValueError(f"unknown key type {text!r}; expected one of: {names}")


def generate_key(key_type: KeyType = KeyType.ECDSA_P256) -> PrivateKey:
    """Generate a fresh private key of ``key_type``."""
    if key_type is KeyType.ECDSA_P256:
        return ec.generate_private_key(ec.SECP256R1())
    if key_type is KeyType.RSA_2048:
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if key_type is KeyType.RSA_3072:
        return rsa.generate_private_key(public_exponent=65537, key_size=3072)
    return ed25519.Ed25519PrivateKey.generate()


def _hash_for(key: PrivateKey) -> hashes.SHA256 | None:
    # Ed25519 signs without a separate digest.
    return None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()


def fingerprint(certificate: x509.Certificate) -> str:
    """Return the certificate's SHA-256 fingerprint as lowercase hex without separators."""
    return certificate.fingerprint(hashes.SHA256()).hex()


def _utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _window(
    now: datetime.datetime | None,
    not_before: datetime.datetime | None,
    not_after: datetime.datetime | None,
    validity: datetime.timedelta,
) -> tuple[datetime.datetime, datetime.datetime]:
    base = now or _utcnow()
    start = not_before if not_before is not None else base - _BACKDATE
    end = not_after if not_after is not None else base + validity
    if end <= start:
        raise ValueError(f"not_after ({end.isoformat()}) must be later than not_before "
                         f"({start.isoformat()})")
    return start, end


def _name(common_name: str, organization: str | None = None) -> x509.Name:
    if not common_name:
        raise ValueError("common_name must not be empty")
    attributes = []
    if organization:
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attributes)


def _general_names(
    dns: Iterable[str] = (),
    ips: Iterable[str] = (),
    emails: Iterable[str] = (),
    uris: Iterable[str] = (),
) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
    names += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    names += [x509.RFC822Name(e) for e in emails]
    names += [x509.UniformResourceIdentifier(u) for u in uris]
    return names


_CN_MAX = 64  # ub-common-name, RFC 5280
_HOST_MAX = 253
_LABEL_MAX = 63
_LABEL_CHARACTERS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_")


def validate_host(host: str) -> str:
    """Return ``host`` if a server certificate may name it (host name, wildcard, IP), else raise."""
    problem = _host_problem(host)
    if problem is not None:
        raise ValueError(f"invalid host name {host!r}: {problem}")
    return host


def _host_problem(host: str) -> str | None:
    """What makes ``host`` unfit for a server certificate's SAN, or None if nothing does."""
    if not host:
        return "it is empty"
    for position, character in enumerate(host, 1):
        if character.isspace() or not character.isprintable():
            return f"character {position} ({character!r}) is a space or control character"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        if isinstance(address, ipaddress.IPv6Address) and address.scope_id is not None:
            return "an IPv6 zone index ('%...') cannot go in a certificate"
        return None
    if host.startswith("[") and host.endswith("]"):
        return "write an IPv6 address without brackets"
    if not host.isascii():
        return _idna_hint(host)
    if host.endswith("."):
        return "it ends with a dot; leave the trailing dot out"
    if len(host) > _HOST_MAX:
        return f"it is {len(host)} characters long; the limit is {_HOST_MAX}"
    labels = host.split(".")
    if "*" in host:
        if host.count("*") > 1:
            return "it has more than one wildcard; only the whole left-most label may be '*'"
        if labels[0] != "*":
            return "a wildcard must be the whole left-most label, as in '*.example.org'"
        if len(labels) < 3:
            return "a wildcard needs at least two labels after it, as in '*.example.org'"
        labels = labels[1:]
    for label in labels:
        problem = _label_problem(label)
        if problem is not None:
            return problem
    if labels[-1].isdigit():
        return (f"its last label {labels[-1]!r} is all digits: neither a host name nor an IP "
                "address (write IP addresses in full, e.g. 127.0.0.1)")
    return None


def _label_problem(label: str) -> str | None:
    if not label:
        return "it has an empty label (a leading dot or two dots in a row)"
    if len(label) > _LABEL_MAX:
        return f"label {label!r} is {len(label)} characters long; the limit is {_LABEL_MAX}"
    for character in label:
        if character not in _LABEL_CHARACTERS:
            return (f"label {label!r} contains {character!r}; host names hold only letters, "
                    "digits, '-' and '_'")
    if label.startswith("-") or label.endswith("-"):
        return f"label {label!r} starts or ends with '-'"
    if label.lower().startswith("xn--"):
        try:
            idna.decode(label.lower())
        except (idna.IDNAError, UnicodeError):
            return f"label {label!r} is not a valid IDNA A-label (punycode)"
    return None


def _idna_hint(host: str) -> str:
    try:
        encoded = ".".join(
            label if label.isascii() else idna.encode(label, uts46=True).decode("ascii")
            for label in host.split(".")
        )
    except (idna.IDNAError, UnicodeError):
        encoded = ""
    if not encoded or _host_problem(encoded) is not None:
        return "it is not ASCII and has no valid IDNA form"
    return f"it is not ASCII; give its IDNA form {encoded!r}"


def split_hosts(hosts: Iterable[str]) -> tuple[list[str], list[str]]:
    """Split host names from IP address literals."""
    dns: list[str] = []
    ips: list[str] = []
    for host in hosts:
        try:
            ipaddress.ip_address(host)
        except ValueError:
            dns.append(host)
        else:
            ips.append(host)
    return dns, ips


def _self_issued(name: x509.Name, key: PrivateKey, start: datetime.datetime,
                 end: datetime.datetime) -> x509.CertificateBuilder:
    """A builder for a certificate that names itself as issuer and holds ``key``."""
    return (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(_random_serial())
            .not_valid_before(start).not_valid_after(end))


def _random_serial() -> int:
    return x509.random_serial_number()


@dataclass(frozen=True)
class IssuedCertificate:
    """A certificate, its private key, and the intermediates between it and its root."""

    certificate: x509.Certificate
    private_key: PrivateKey
    chain: tuple[x509.Certificate, ...] = ()

    @property
    def fingerprint(self) -> str:
        """The certificate's SHA-256 fingerprint, lowercase hex."""
        return fingerprint(self.certificate)

    @property
    def serial_number(self) -> int:
        """The certificate's serial number."""
        return self.certificate.serial_number

    def certificate_pem(self) -> bytes:
        """The certificate alone, PEM."""
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    def chain_pem(self) -> bytes:
        """The certificate followed by its intermediates, PEM: what a peer should send."""
        return b"".join(
            c.public_bytes(serialization.Encoding.PEM) for c in (self.certificate, *self.chain)
        )

    def private_key_pem(self, passphrase: bytes | None = None) -> bytes:
        """The private key, PKCS#8 PEM: unencrypted, or encrypted with ``passphrase``."""
        if passphrase is not None:
            return encrypted_key_pem(self.private_key, passphrase)
        return self.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def write(self, cert_path: str | os.PathLike[str], key_path: str | os.PathLike[str]) -> None:
        """Replace ``cert_path`` with the chain (PEM) and ``key_path`` with the key (PEM, 0600)."""
        write_atomic(cert_path, self.chain_pem())
        write_private_key(key_path, self.private_key_pem())


# PBKDF2-HMAC-SHA256 rounds for a PKCS#12 file's key and certificates (~70 ms to open here).
P12_KDF_ROUNDS = 200_000


def encrypted_key_pem(key: PrivateKey, passphrase: bytes) -> bytes:
    """``key`` as encrypted PKCS#8 PEM (PBES2: PBKDF2-HMAC-SHA256, AES-256-CBC), which
    ``openssl pkey`` and every TLS library read."""
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.BestAvailableEncryption(passphrase))


def pkcs12_bytes(name: str, key: PrivateKey, certificate: x509.Certificate,
                 chain: Sequence[x509.Certificate], passphrase: bytes) -> bytes:
    """A PKCS#12 file of ``key``, ``certificate`` (friendly name ``name``) and ``chain``:
    key and certificates under PBES2 (PBKDF2-HMAC-SHA256, AES-256-CBC), an HMAC-SHA256 MAC."""
    encryption = (serialization.PrivateFormat.PKCS12.encryption_builder()
                  .kdf_rounds(P12_KDF_ROUNDS)
                  .key_cert_algorithm(pkcs12.PBES.PBESv2SHA256AndAES256CBC)
                  .hmac_hash(hashes.SHA256())
                  .build(passphrase))
    return pkcs12.serialize_key_and_certificates(name.encode("utf-8"), key, certificate,
                                                 list(chain), encryption)


def write_private_key(path: str | os.PathLike[str], pem: bytes) -> None:
    """Replace ``path`` with ``pem`` in a new file never readable by others, even briefly."""
    write_atomic(path, pem, private=True)


def write_atomic(path: str | os.PathLike[str], data: bytes, *, private: bool = False) -> None:
    """Replace ``path`` with a new file holding ``data`` (0600 if ``private``), by rename."""
    # A new file in the same directory, made with O_EXCL|O_NOFOLLOW, then renamed over the
    # target: a symlink planted at ``path`` is replaced, never followed, and whoever could open
    # an existing file there keeps no access to the new contents.
    target = Path(path)
    mode = 0o600 if private else 0o644
    temporary = target.with_name(f".{target.name[:64]}.{secrets.token_hex(8)}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(temporary, flags, mode)
    try:
        try:
            if private:
                os.fchmod(fd, mode)  # exactly 0600, whatever the umask
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


@dataclass(frozen=True)
class CertificateAuthority:
    """A CA that can issue client, server, OCSP-responder and intermediate certificates."""

    certificate: x509.Certificate
    private_key: PrivateKey
    chain: tuple[x509.Certificate, ...] = ()  # intermediates above this CA, root excluded
    ocsp_url: str | None = field(default=None, compare=False)
    crl_url: str | None = field(default=None, compare=False)

    @classmethod
    def create(
        cls,
        common_name: str = "certsrv development CA",
        *,
        organization: str | None = "certsrv",
        key_type: KeyType = KeyType.ECDSA_P256,
        now: datetime.datetime | None = None,
        not_before: datetime.datetime | None = None,
        not_after: datetime.datetime | None = None,
        path_length: int | None = None,
        ocsp_url: str | None = None,
        crl_url: str | None = None,
    ) -> CertificateAuthority:
        """Create a self-signed root CA."""
        key = generate_key(key_type)
        start, end = _window(now, not_before, not_after, _CA_VALIDITY)
        name = _name(common_name, organization)
        builder = _ca_extensions(_self_issued(name, key, start, end), key, key, path_length)
        cert = builder.sign(key, _hash_for(key))
        return cls(cert, key, (), ocsp_url, crl_url)

    @classmethod
    def load(
        cls,
        certificate: x509.Certificate,
        private_key: PrivateKey,
        chain: Sequence[x509.Certificate] = (),
        *,
        ocsp_url: str | None = None,
        crl_url: str | None = None,
    ) -> CertificateAuthority:
        """Wrap an existing CA certificate and key, checking that they belong together."""
        if _public_der(certificate.public_key()) != _public_der(private_key.public_key()):
            raise ValueError("the CA private key does not match the CA certificate")
        return cls(certificate, private_key, tuple(chain), ocsp_url, crl_url)

    def certificate_pem(self) -> bytes:
        """The CA certificate, PEM."""
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    def private_key_pem(self) -> bytes:
        """The CA private key, unencrypted PKCS#8 PEM."""
        return IssuedCertificate(self.certificate, self.private_key).private_key_pem()

    def intermediate(
        self,
        common_name: str,
        *,
        organization: str | None = "certsrv",
        key_type: KeyType = KeyType.ECDSA_P256,
        now: datetime.datetime | None = None,
        not_before: datetime.datetime | None = None,
        not_after: datetime.datetime | None = None,
        path_length: int | None = 0,
        ocsp_url: str | None = None,
        crl_url: str | None = None,
        extra_extensions: Sequence[tuple[x509.ExtensionType, bool]] = (),
    ) -> CertificateAuthority:
        """Issue an intermediate CA below this one."""
        key = generate_key(key_type)
        start, end = _window(now, not_before, not_after, _CA_VALIDITY)
        builder = self._builder(_name(common_name, organization), key, start, end)
        builder = _ca_extensions(builder, key, self.private_key, path_length)
        for extension, critical in extra_extensions:
            builder = builder.add_extension(extension, critical)
        cert = builder.sign(self.private_key, _hash_for(self.private_key))
        return CertificateAuthority(cert, key, self._issued_chain(), ocsp_url, crl_url)

    @property
    def is_root(self) -> bool:
        """Whether this CA is self-issued (a trust anchor)."""
        return self.certificate.issuer == self.certificate.subject

    def issue(
        self,
        common_name: str | None,
        *,
        organization: str | None = None,
        key_type: KeyType = KeyType.ECDSA_P256,
        private_key: PrivateKey | None = None,
        now: datetime.datetime | None = None,
        not_before: datetime.datetime | None = None,
        not_after: datetime.datetime | None = None,
        dns: Iterable[str] = (),
        ips: Iterable[str] = (),
        emails: Iterable[str] = (),
        uris: Iterable[str] = (),
        extended_key_usage: Sequence[x509.ObjectIdentifier] | None = (
            ExtendedKeyUsageOID.CLIENT_AUTH,
        ),
        key_usage: x509.KeyUsage | None = None,
        serial_number: int | None = None,
        extra_extensions: Sequence[tuple[x509.ExtensionType, bool]] = (),
        validity: datetime.timedelta = DEFAULT_VALIDITY,
        with_aia: bool = True,
    ) -> IssuedCertificate:
        """
        Issue an end-entity certificate.

        ``extended_key_usage=None`` omits the extension; ``key_usage=None`` gives
        digitalSignature (plus keyEncipherment for RSA keys).
        """
        key = private_key if private_key is not None else generate_key(key_type)
        start, end = _window(now, not_before, not_after, validity)
        subject = _name(common_name, organization) if common_name else x509.Name([])
        sans = _general_names(dns, ips, emails, uris)
        if not common_name and not sans:
            raise ValueError("a certificate needs a common_name or at least one SAN")
        builder = self._builder(subject, key, start, end, serial_number)
        # RFC 5280 4.2.1.6: the subjectAltName is critical when the subject is empty.
        builder = _leaf_extensions(builder, key, self.private_key, key_usage or
                                   _leaf_key_usage(key), extended_key_usage, sans,
                                   critical_sans=not common_name)
        if with_aia:
            builder = self._revocation_pointers(builder)
        for extension, critical in extra_extensions:
            builder = builder.add_extension(extension, critical)
        cert = builder.sign(self.private_key, _hash_for(self.private_key))
        return IssuedCertificate(cert, key, self._issued_chain())

    def certify(self, template: x509.Certificate, public_key: CertifiablePublicKey, *,
                now: datetime.datetime | None = None,
                validity: datetime.timedelta = DEFAULT_VALIDITY) -> x509.Certificate:
        """A new certificate for ``public_key`` with ``template``'s subject, SANs and EKU.

        It ends ``validity`` after ``now``, or when this CA's own certificate does if sooner.
        """
        start, end = _window(now, None, None, validity)
        end = min(end, self.certificate.not_valid_after_utc)
        if end <= start:
            raise ValueError("the CA certificate expires before the new certificate would start")
        builder = (
            x509.CertificateBuilder().subject_name(template.subject)
            .issuer_name(self.certificate.subject).public_key(public_key)
            .serial_number(_random_serial()).not_valid_before(start).not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), True)
            .add_extension(_leaf_key_usage(public_key), True)
        )
        for kind in (x509.ExtendedKeyUsage, x509.SubjectAlternativeName):
            try:
                extension = template.extensions.get_extension_for_class(kind)
            except x509.ExtensionNotFound:
                continue
            builder = builder.add_extension(extension.value, extension.critical)
        builder = (
            builder.add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                self.private_key.public_key()), False)
        )
        return self._revocation_pointers(builder).sign(self.private_key,
                                                       _hash_for(self.private_key))

    def issue_client(self, common_name: str, **kwargs: object) -> IssuedCertificate:
        """Issue a client certificate (EKU clientAuth)."""
        kwargs.setdefault("extended_key_usage", (ExtendedKeyUsageOID.CLIENT_AUTH,))
        return self.issue(common_name, **kwargs)  # type: ignore[arg-type]

    def issue_server(self, *hosts: str, **kwargs: object) -> IssuedCertificate:
        """Issue a server certificate for ``hosts`` (unchecked, see validate_host; serverAuth)."""
        if not hosts:
            raise ValueError("issue_server needs at least one host name or IP address")
        dns, ips = split_hosts(hosts)
        kwargs.setdefault("extended_key_usage", (ExtendedKeyUsageOID.SERVER_AUTH,))
        # A common name holds at most 64 characters; a longer host name goes in the SAN only.
        kwargs.setdefault("common_name", hosts[0] if len(hosts[0]) <= _CN_MAX else None)
        common_name = kwargs.pop("common_name")
        return self.issue(common_name, dns=dns, ips=ips, **kwargs)  # type: ignore[arg-type]

    def issue_ocsp_responder(self, common_name: str = "certsrv OCSP responder",
                             **kwargs: object) -> IssuedCertificate:
        """Issue a delegated OCSP responder certificate (id-kp-OCSPSigning, ocsp-nocheck)."""
        kwargs.setdefault("extended_key_usage", (ExtendedKeyUsageOID.OCSP_SIGNING,))
        kwargs.setdefault("extra_extensions", ((x509.OCSPNoCheck(), False),))
        kwargs.setdefault("with_aia", False)
        return self.issue(common_name, **kwargs)  # type: ignore[arg-type]

    def crl(
        self,
        revoked: Iterable[tuple[int, datetime.datetime, x509.ReasonFlags | None]] = (),
        *,
        now: datetime.datetime | None = None,
        last_update: datetime.datetime | None = None,
        next_update: datetime.datetime | None = None,
        crl_number: int = 1,
    ) -> x509.CertificateRevocationList:
        """Sign a CRL listing ``revoked`` as (serial, revocation time, reason) triples."""
        base = now or _utcnow()
        start = last_update if last_update is not None else base - _BACKDATE
        end = next_update if next_update is not None else base + datetime.timedelta(days=7)
        if end <= start:
            raise ValueError("next_update must be later than last_update")
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self.certificate.subject)
            .last_update(start)
            .next_update(end)
            .add_extension(x509.CRLNumber(crl_number), False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.private_key.public_key()),
                False,
            )
        )
        for serial, when, reason in revoked:
            entry = x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(when)
            if reason is not None and reason is not x509.ReasonFlags.unspecified:
                entry = entry.add_extension(x509.CRLReason(reason), False)
            builder = builder.add_revoked_certificate(entry.build())
        return builder.sign(self.private_key, _hash_for(self.private_key))

    def _issued_chain(self) -> tuple[x509.Certificate, ...]:
        # What a certificate issued here sends after itself: the intermediates, never the root.
        return () if self.is_root else (self.certificate, *self.chain)

    def _builder(
        self,
        subject: x509.Name,
        key: PrivateKey,
        start: datetime.datetime,
        end: datetime.datetime,
        serial_number: int | None = None,
    ) -> x509.CertificateBuilder:
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.certificate.subject)
            .public_key(key.public_key())
            .serial_number(serial_number if serial_number is not None else _random_serial())
            .not_valid_before(start)
            .not_valid_after(end)
        )

    def _revocation_pointers(self, builder: x509.CertificateBuilder) -> x509.CertificateBuilder:
        if self.ocsp_url:
            builder = builder.add_extension(
                x509.AuthorityInformationAccess([
                    x509.AccessDescription(
                        x509.oid.AuthorityInformationAccessOID.OCSP,
                        x509.UniformResourceIdentifier(self.ocsp_url),
                    )
                ]),
                False,
            )
        if self.crl_url:
            builder = builder.add_extension(
                x509.CRLDistributionPoints([
                    x509.DistributionPoint(
                        [x509.UniformResourceIdentifier(self.crl_url)], None, None, None
                    )
                ]),
                False,
            )
        return builder


def _public_der(public_key: object) -> bytes:
    return public_key.public_bytes(  # type: ignore[attr-defined,no-any-return]
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _leaf_key_usage(key: PrivateKey | CertifiablePublicKey) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=isinstance(key, rsa.RSAPrivateKey | rsa.RSAPublicKey),
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )


def _leaf_extensions(
    builder: x509.CertificateBuilder,
    key: PrivateKey,
    issuer_key: PrivateKey,
    key_usage: x509.KeyUsage,
    extended_key_usage: Sequence[x509.ObjectIdentifier] | None,
    sans: list[x509.GeneralName],
    *,
    critical_sans: bool,
) -> x509.CertificateBuilder:
    """An end-entity certificate's constraints, key usages, names and key identifiers."""
    builder = builder.add_extension(x509.BasicConstraints(ca=False, path_length=None), True)
    builder = builder.add_extension(key_usage, True)
    if extended_key_usage is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage(list(extended_key_usage)), False)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical_sans)
    return (
        builder.add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), False
        )
    )


def _ca_extensions(
    builder: x509.CertificateBuilder,
    key: PrivateKey,
    issuer_key: PrivateKey,
    path_length: int | None,
) -> x509.CertificateBuilder:
    return (
        builder.add_extension(x509.BasicConstraints(ca=True, path_length=path_length), True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), False
        )
    )


def self_signed_client(
    common_name: str,
    *,
    key_type: KeyType = KeyType.ECDSA_P256,
    now: datetime.datetime | None = None,
    not_before: datetime.datetime | None = None,
    not_after: datetime.datetime | None = None,
    extended_key_usage: Sequence[x509.ObjectIdentifier] | None = (
        ExtendedKeyUsageOID.CLIENT_AUTH,
    ),
    dns: Iterable[str] = (),
    emails: Iterable[str] = (),
    uris: Iterable[str] = (),
) -> IssuedCertificate:
    """Make a self-signed (not CA) client certificate, for pinning by fingerprint."""
    key = generate_key(key_type)
    start, end = _window(now, not_before, not_after, DEFAULT_VALIDITY)
    name = _name(common_name)
    builder = (
        _self_issued(name, key, start, end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), True)
        .add_extension(_leaf_key_usage(key), True)
    )
    if extended_key_usage is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage(list(extended_key_usage)), False)
    sans = _general_names(dns, (), emails, uris)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), False)
    cert = builder.sign(key, _hash_for(key))
    return IssuedCertificate(cert, key, ())
