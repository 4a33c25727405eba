"""The authenticated client identity, parsed once per connection from its certificate."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.x509.oid import ExtensionOID, NameOID

from certsrv.x509.certs import sha256_hex

__all__ = ["ClientIdentity"]


@dataclass(frozen=True)
class ClientIdentity:
    """What a verified client certificate says about its holder (ASP.NET's claims)."""

    subject: str
    issuer: str
    serial: str
    not_before: float
    not_after: float
    sha256: str
    common_name: str | None = None
    dns: tuple[str, ...] = ()
    emails: tuple[str, ...] = ()
    uris: tuple[str, ...] = ()
    ips: tuple[str, ...] = ()
    valid_until: float = 0.0
    policies: frozenset[str] = frozenset()
    certificate: x509.Certificate | None = field(default=None, repr=False, compare=False)

    @classmethod
    def from_certificate(
        cls, certificate: x509.Certificate, chain_not_after: float | None = None,
        policies: frozenset[str] = frozenset(),
    ) -> ClientIdentity:
        """Read the identity out of a (verified) certificate; ``policies`` are its chain's
        valid certificate policies (``certsrv.x509.policies``)."""
        try:
            san = certificate.extensions.get_extension_for_oid(
                ExtensionOID.SUBJECT_ALTERNATIVE_NAME
            ).value
        except x509.ExtensionNotFound:
            dns: list[str] = []
            emails: list[str] = []
            uris: list[str] = []
            ips: list[str] = []
        else:
            assert isinstance(san, x509.SubjectAlternativeName)
            dns = san.get_values_for_type(x509.DNSName)
            emails = san.get_values_for_type(x509.RFC822Name)
            uris = san.get_values_for_type(x509.UniformResourceIdentifier)
            ips = [str(ip) for ip in san.get_values_for_type(x509.IPAddress)
                   if isinstance(ip, ipaddress.IPv4Address | ipaddress.IPv6Address)]
        cns = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        common_name = cns[0].value if cns else None
        not_after = certificate.not_valid_after_utc.timestamp()
        return cls(
            subject=certificate.subject.rfc4514_string(),
            issuer=certificate.issuer.rfc4514_string(),
            serial=format(certificate.serial_number, "x"),
            not_before=certificate.not_valid_before_utc.timestamp(),
            not_after=not_after,
            sha256=sha256_hex(certificate),
            common_name=common_name if isinstance(common_name, str) else None,
            dns=tuple(dns),
            emails=tuple(emails),
            uris=tuple(uris),
            ips=tuple(ips),
            valid_until=min(not_after, chain_not_after) if chain_not_after else not_after,
            policies=frozenset(policies),
            certificate=certificate,
        )

    @property
    def spiffe_id(self) -> str | None:
        """The SPIFFE ID (the one ``spiffe://`` URI SAN), if any."""
        spiffe = [u for u in self.uris if u.lower().startswith("spiffe://")]
        return spiffe[0] if len(spiffe) == 1 else None

    def as_json(self) -> dict[str, Any]:
        """The identity as a JSON-ready dict; times as RFC 3339 UTC strings."""
        import datetime

        def stamp(seconds: float) -> str:
            when = datetime.datetime.fromtimestamp(seconds, datetime.UTC)
            return when.strftime("%Y-%m-%dT%H:%M:%SZ")

        return {
            "subject": self.subject,
            "issuer": self.issuer,
            "serial": self.serial,
            "not_before": stamp(self.not_before),
            "not_after": stamp(self.not_after),
            "sha256": self.sha256,
            "common_name": self.common_name,
            "san": {
                "dns": list(self.dns),
                "email": list(self.emails),
                "uri": list(self.uris),
                "ip": list(self.ips),
            },
            "spiffe_id": self.spiffe_id,
            "policies": sorted(self.policies),
        }
