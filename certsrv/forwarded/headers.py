"""
Client certificates forwarded by a TLS-terminating proxy: reading the headers, and whose to read.

Only certificates are taken from the headers; certsrv validates them itself (chain, validity,
key usage, revocation, policy). A proxy's verdicts (Envoy's ``Hash``/``Subject``/``URI``/``DNS``,
nginx's ``$ssl_client_verify``, ...) are never read. Everything malformed raises
ForwardedCertError, whose ``reason`` is a stable code; nothing else escapes the parser.

Formats, as the proxies write them:

``rfc9440``
    ``Client-Cert`` is one RFC 8941 Byte Sequence ``:BASE64-DER:``; a second header line or a
    list of several members is ``multiple_values``. ``Client-Cert-Chain`` is an RFC 8941 List
    of Byte Sequences in TLS order, without the leaf; several lines are joined as one list.
    Parameters are parsed and ignored, missing ``=`` padding is accepted (RFC 8941 4.2.7).
``nginx``
    The header (default ``X-SSL-Client-Cert``) holds ``$ssl_client_escaped_cert``: the leaf's
    PEM, percent-encoded. Only ``%XX`` is decoded; ``+`` stays ``+`` (nginx escapes ``+`` as
    ``%2B``, and ``+`` is a base64 character, so form-decoding it to a space would corrupt
    certificates). Whitespace inside the PEM body is ignored, so the deprecated
    ``$ssl_client_cert`` (raw PEM, lines continued with a tab, which Twisted unfolds to spaces)
    is accepted too. An optional chain header holds intermediates the same way (nginx itself
    has no chain variable; other proxies may provide one).
``xfcc``
    Envoy's ``x-forwarded-client-cert``: elements separated by ``,`` (one per proxy hop), each
    ``key=value`` pairs separated by ``;``; values optionally double-quoted with ``\\``
    escapes; keys case-insensitive. Only ``Cert`` (the leaf) and ``Chain`` (leaf first, then
    the rest) are read, from the LAST element: the one the nearest proxy - the trusted peer -
    added. Earlier elements describe hops certsrv cannot vouch for. Envoy writes ``URI`` and
    ``DNS`` values unquoted, so a client certificate with a crafted SAN could smuggle ``,`` or
    ``;`` and forge a trailing element or a ``Cert`` field; such layouts are rejected as
    ``ambiguous`` (a ``Cert``/``Chain`` after a ``URI``/``DNS`` field, or an element before the
    last one that ends in a ``URI``/``DNS`` field). Configure Envoy with
    ``forward_client_cert_details: SANITIZE_SET`` and ``set_current_client_cert_details``
    ``cert: true`` (and/or ``chain: true``) only.
"""

from __future__ import annotations

import binascii
import enum
import ipaddress
import re
import urllib.parse
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Protocol, runtime_checkable

from cryptography import x509

from certsrv.exceptions import CertsrvError, ConfigurationError, ForwardedReason

__all__ = [
    "ALL_FORWARDED_HEADERS",
    "DEFAULT_MAX_CERTIFICATES",
    "DEFAULT_MAX_HEADER_BYTES",
    "FORWARDED_HEADERS",
    "ForwardedCertConfig",
    "ForwardedCertError",
    "ForwardedChain",
    "ForwardedFormat",
    "HeaderSource",
    "TrustedProxies",
    "forwarded_headers",
    "parse_forwarded",
]

DEFAULT_MAX_HEADER_BYTES = 32 * 1024
DEFAULT_MAX_CERTIFICATES = 8


class ForwardedFormat(enum.StrEnum):
    """The header formats in which proxies forward a client certificate."""

    RFC9440 = "rfc9440"
    NGINX = "nginx"
    XFCC = "xfcc"

    @classmethod
    def parse(cls, text: str) -> ForwardedFormat:
        """Return the format named by ``text`` or raise ConfigurationError naming the choices."""
        for member in cls:
            if member.value == text.strip().lower():
                return member
        names = ", ".join(m.value for m in cls)
        raise ConfigurationError("--forwarded-cert",
                                 f"unknown format {text!r}; expected one of: {names}")


class ForwardedCertError(CertsrvError):
    """Forwarded certificate headers are malformed; ``reason`` is a stable code."""

    def __init__(self, reason: ForwardedReason, detail: str = "") -> None:
        super().__init__(reason, detail)
        self.reason = reason
        self.detail = detail

    def __str__(self) -> str:
        return f"{self.reason}: {self.detail}" if self.detail else str(self.reason)


@dataclass(frozen=True)
class ForwardedChain:
    """A forwarded client certificate and the certificates sent after it, in TLS order."""

    leaf: x509.Certificate
    chain: tuple[x509.Certificate, ...] = ()

    @property
    def certificates(self) -> tuple[x509.Certificate, ...]:
        """The leaf followed by the chain."""
        return (self.leaf, *self.chain)


@runtime_checkable
class _RawHeaders(Protocol):
    def getRawHeaders(self, name: bytes) -> Sequence[bytes] | None: ...


HeaderSource = (Mapping[bytes, Sequence[bytes]]
                | Callable[[bytes], Sequence[bytes] | None]
                | _RawHeaders)

_DEFAULT_HEADER: Mapping[ForwardedFormat, bytes] = MappingProxyType({
    ForwardedFormat.RFC9440: b"client-cert",
    ForwardedFormat.NGINX: b"x-ssl-client-cert",
    ForwardedFormat.XFCC: b"x-forwarded-client-cert",
})
_DEFAULT_CHAIN_HEADER: Mapping[ForwardedFormat, bytes | None] = MappingProxyType({
    ForwardedFormat.RFC9440: b"client-cert-chain",
    ForwardedFormat.NGINX: None,
    ForwardedFormat.XFCC: None,
})

FORWARDED_HEADERS: Mapping[ForwardedFormat, frozenset[bytes]] = MappingProxyType({
    fmt: frozenset(n for n in (_DEFAULT_HEADER[fmt], _DEFAULT_CHAIN_HEADER[fmt]) if n)
    for fmt in ForwardedFormat
})
# Every format's default names: what to strip from untrusted peers even with forwarding off.
ALL_FORWARDED_HEADERS = frozenset(n for names in FORWARDED_HEADERS.values() for n in names)

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


def _header_name(name: str | bytes, source: str) -> bytes:
    text = name.decode("latin-1") if isinstance(name, bytes) else name
    if not _TOKEN.fullmatch(text):
        raise ConfigurationError(source, f"{text!r} is not a valid HTTP header name")
    return text.lower().encode("ascii")


def forwarded_headers(format: ForwardedFormat | str, header_name: str | bytes | None = None,
                      chain_header_name: str | bytes | None = None) -> frozenset[bytes]:
    """Lowercase names to strip from untrusted peers: every format's defaults and these."""
    config = ForwardedCertConfig.create(format, header_name, chain_header_name)
    return config.strip_headers


@dataclass(frozen=True)
class ForwardedCertConfig:
    """Which forwarded-certificate format to read, under which header names and limits."""

    format: ForwardedFormat
    header_name: bytes
    chain_header_name: bytes | None = None
    max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES
    max_certificates: int = DEFAULT_MAX_CERTIFICATES

    @classmethod
    def create(
        cls,
        format: ForwardedFormat | str,
        header_name: str | bytes | None = None,
        chain_header_name: str | bytes | None = None,
        *,
        max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES,
        max_certificates: int = DEFAULT_MAX_CERTIFICATES,
    ) -> ForwardedCertConfig:
        """Check and normalise the settings; unusable ones raise ConfigurationError."""
        fmt = format if isinstance(format, ForwardedFormat) else ForwardedFormat.parse(format)
        name = (_header_name(header_name, "--forwarded-cert-header") if header_name is not None
                else _DEFAULT_HEADER[fmt])
        chain: bytes | None = _DEFAULT_CHAIN_HEADER[fmt]
        if chain_header_name is not None:
            if fmt is ForwardedFormat.XFCC:
                raise ConfigurationError("--forwarded-cert-chain-header",
                                         "xfcc carries the chain in its Chain= field; "
                                         "a chain header does not apply")
            chain = _header_name(chain_header_name, "--forwarded-cert-chain-header")
        if chain == name:
            raise ConfigurationError("--forwarded-cert-chain-header",
                                     f"{name.decode()!r} is already the certificate header")
        if max_header_bytes < 1 or max_certificates < 1:
            raise ValueError("max_header_bytes and max_certificates must be positive")
        return cls(fmt, name, chain, max_header_bytes, max_certificates)

    @property
    def strip_headers(self) -> frozenset[bytes]:
        """Lowercase header names to remove from requests whose peer is not a trusted proxy."""
        return ALL_FORWARDED_HEADERS | {n for n in (self.header_name, self.chain_header_name) if n}

    def parse(self, headers: HeaderSource) -> ForwardedChain | None:
        """The forwarded certificate, None when no header is present; ForwardedCertError if bad."""
        get = _getter(headers)
        leaf_values = list(get(self.header_name))
        chain_values = list(get(self.chain_header_name)) if self.chain_header_name else []
        if not leaf_values and not chain_values:
            return None
        size = sum(len(v) for v in (*leaf_values, *chain_values))
        if size > self.max_header_bytes:
            raise _error(ForwardedReason.TOO_LARGE,
                         f"{size} bytes of forwarded certificate headers; at most "
                         f"{self.max_header_bytes} are allowed")
        if not leaf_values:
            raise _error(ForwardedReason.MISSING_CERTIFICATE,
                         f"{_show(self.chain_header_name)} is present without "
                         f"{_show(self.header_name)}")
        what = _show(self.header_name)
        if self.format is ForwardedFormat.RFC9440:
            return _parse_rfc9440(leaf_values, chain_values, what,
                                  _show(self.chain_header_name), self.max_certificates)
        if self.format is ForwardedFormat.NGINX:
            return _parse_nginx(leaf_values, chain_values, what,
                                _show(self.chain_header_name), self.max_certificates)
        return _parse_xfcc(leaf_values, what, self.max_certificates)


def parse_forwarded(
    format: ForwardedFormat | str,
    headers: HeaderSource,
    header_name: str | bytes | None = None,
    *,
    chain_header_name: str | bytes | None = None,
    max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES,
    max_certificates: int = DEFAULT_MAX_CERTIFICATES,
) -> ForwardedChain | None:
    """The forwarded certificate, None when no header is present; ForwardedCertError if bad."""
    config = ForwardedCertConfig.create(format, header_name, chain_header_name,
                                        max_header_bytes=max_header_bytes,
                                        max_certificates=max_certificates)
    return config.parse(headers)


def _getter(headers: HeaderSource) -> Callable[[bytes], Sequence[bytes]]:
    if isinstance(headers, Mapping):
        lowered: dict[bytes, list[bytes]] = {}
        for key, values in headers.items():
            lowered.setdefault(key.lower(), []).extend(values)
        return lambda name: lowered.get(name, [])
    lookup = headers.getRawHeaders if isinstance(headers, _RawHeaders) else headers
    return lambda name: lookup(name) or []


def _error(reason: ForwardedReason, detail: str) -> ForwardedCertError:
    return ForwardedCertError(reason, detail)


def _show(name: bytes | None) -> str:
    return (name or b"").decode("latin-1")


# --- RFC 9440 / RFC 8941 -------------------------------------------------------------------

_SF_BARE_ITEM = (
    r'(?:-?[0-9]{1,15}(?:\.[0-9]{1,3})?'                 # integer, decimal
    r'|"[\x20\x21\x23-\x5b\x5d-\x7e]*(?:\\["\\][\x20\x21\x23-\x5b\x5d-\x7e]*)*"'  # string
    r"|[A-Za-z*][!#$%&'*+\-.^_`|~0-9A-Za-z:/]*"          # token
    r'|:[A-Za-z0-9+/=]*:'                                # byte sequence
    r'|\?[01]'                                           # boolean
    r'|@-?[0-9]{1,15}'                                   # date (RFC 9651)
    r'|%"(?:[\x20\x21\x23\x24\x26-\x7e]|%[0-9a-f]{2})*")'  # display string (RFC 9651)
)
_SF_BYTES_MEMBER = re.compile(
    rf":([A-Za-z0-9+/=]*):(?:;[ ]*[a-z*][a-z0-9_\-.*]*(?:={_SF_BARE_ITEM})?)*")
_OWS = re.compile(r"[ \t]*")


def _skip(pattern: re.Pattern[str], text: str, pos: int) -> int:
    match = pattern.match(text, pos)
    return match.end() if match else pos


def _sf_byte_sequences(text: str, what: str) -> list[str]:
    """The base64 text of each member of an RFC 8941 List of Byte Sequences."""
    members: list[str] = []
    pos, end = 0, len(text)
    pos = _skip(_OWS, text, pos)
    while pos < end:
        match = _SF_BYTES_MEMBER.match(text, pos)
        if match is None:
            raise _error(ForwardedReason.BAD_ENCODING,
                         f"{what}: not an RFC 8941 byte sequence at offset {pos}")
        members.append(match.group(1))
        pos = _skip(_OWS, text, match.end())
        if pos == end:
            break
        if text[pos] != ",":
            raise _error(ForwardedReason.BAD_ENCODING,
                         f"{what}: unexpected character at offset {pos}")
        pos = _skip(_OWS, text, pos + 1)
        if pos == end:
            raise _error(ForwardedReason.BAD_ENCODING, f"{what}: trailing comma")
    return members


def _sf_decode(b64: str, what: str) -> bytes:
    # RFC 8941 4.2.7: tolerate missing padding and non-zero pad bits, nothing else.
    data = b64.rstrip("=")
    if len(b64) - len(data) > 2 or len(data) % 4 == 1:
        raise _error(ForwardedReason.BAD_ENCODING, f"{what}: invalid base64 length or padding")
    try:
        return binascii.a2b_base64(data + "=" * (-len(data) % 4), strict_mode=True)
    except binascii.Error as e:
        raise _error(ForwardedReason.BAD_ENCODING, f"{what}: invalid base64 ({e})") from None


def _parse_rfc9440(leaf_values: list[bytes], chain_values: list[bytes], what: str,
                   chain_what: str, limit: int) -> ForwardedChain:
    if len(leaf_values) > 1:
        raise _error(ForwardedReason.MULTIPLE_VALUES,
                     f"{what} appears {len(leaf_values)} times; it takes one value")
    leaf_members = _sf_byte_sequences(leaf_values[0].decode("latin-1"), what)
    if len(leaf_members) > 1:
        raise _error(ForwardedReason.MULTIPLE_VALUES,
                     f"{what} holds a list of {len(leaf_members)}; it takes one byte sequence")
    if not leaf_members or not leaf_members[0]:
        raise _error(ForwardedReason.EMPTY_VALUE, f"{what} is empty")
    chain_members = _sf_byte_sequences(", ".join(v.decode("latin-1") for v in chain_values),
                                       chain_what) if chain_values else []
    _check_count(1 + len(chain_members), limit)
    leaf = _load_der(_sf_decode(leaf_members[0], what), what)
    chain = tuple(_load_der(_sf_decode(m, chain_what), f"{chain_what}[{i}]")
                  for i, m in enumerate(chain_members))
    return ForwardedChain(leaf, chain)


# --- PEM, percent-encoding (nginx and Envoy) ---------------------------------------------

_BAD_PERCENT = re.compile(rb"%(?![0-9A-Fa-f]{2})")
_PEM_WHITESPACE = " \t\r\n"
_PEM_LABEL = re.compile(r"[A-Z0-9][A-Z0-9 ]{0,40}")
_BEGIN = "-----BEGIN "
_DASHES = "-----"


def _percent_decode(value: bytes, what: str) -> str:
    """Decode ``%XX`` escapes only (``+`` is kept) and require ASCII."""
    if _BAD_PERCENT.search(value):
        raise _error(ForwardedReason.BAD_ENCODING, f"{what}: malformed percent-escape")
    try:
        return urllib.parse.unquote_to_bytes(value).decode("ascii")
    except UnicodeDecodeError:
        raise _error(ForwardedReason.BAD_ENCODING,
                     f"{what}: not ASCII after percent-decoding") from None


def _pem_bodies(text: str, what: str) -> list[str]:
    """The base64 bodies of the CERTIFICATE blocks in ``text``; nothing else may be there."""
    bodies: list[str] = []
    pos = 0
    while True:
        begin = text.find(_BEGIN, pos)
        if text[pos:begin if begin >= 0 else len(text)].strip(_PEM_WHITESPACE):
            raise _error(ForwardedReason.BAD_ENCODING, f"{what}: text outside a PEM block")
        if begin < 0:
            return bodies
        label_end = text.find(_DASHES, begin + len(_BEGIN))
        label = text[begin + len(_BEGIN):label_end]
        if label_end < 0 or not _PEM_LABEL.fullmatch(label):
            raise _error(ForwardedReason.BAD_ENCODING, f"{what}: malformed PEM header")
        end_marker = f"-----END {label}-----"
        end = text.find(end_marker, label_end + len(_DASHES))
        if end < 0:
            raise _error(ForwardedReason.BAD_ENCODING,
                         f"{what}: PEM block has no END line (truncated?)")
        if label != "CERTIFICATE":
            raise _error(ForwardedReason.NOT_A_CERTIFICATE,
                         f"{what}: a PEM {label!r} block where a certificate was expected")
        bodies.append(text[label_end + len(_DASHES):end])
        pos = end + len(end_marker)


def _pem_decode(body: str, what: str) -> bytes:
    compact = "".join(body.split())
    try:
        return binascii.a2b_base64(compact, strict_mode=True)
    except binascii.Error as e:
        raise _error(ForwardedReason.BAD_ENCODING,
                     f"{what}: invalid base64 in PEM block ({e})") from None


def _one_pem(text: str, what: str) -> str:
    bodies = _pem_bodies(text, what)
    if not bodies:
        raise _error(ForwardedReason.EMPTY_VALUE, f"{what} holds no certificate")
    if len(bodies) > 1:
        raise _error(ForwardedReason.MULTIPLE_CERTIFICATES,
                     f"{what} holds {len(bodies)} certificates; it takes one")
    return bodies[0]


def _parse_nginx(leaf_values: list[bytes], chain_values: list[bytes], what: str,
                 chain_what: str, limit: int) -> ForwardedChain:
    for values, name in ((leaf_values, what), (chain_values, chain_what)):
        if len(values) > 1:
            raise _error(ForwardedReason.MULTIPLE_VALUES,
                         f"{name} appears {len(values)} times; it takes one value")
    leaf_body = _one_pem(_percent_decode(leaf_values[0], what), what)
    chain_bodies = _pem_bodies(_percent_decode(chain_values[0], chain_what),
                               chain_what) if chain_values else []
    _check_count(1 + len(chain_bodies), limit)
    leaf = _load_der(_pem_decode(leaf_body, what), what)
    chain = tuple(_load_der(_pem_decode(b, chain_what), f"{chain_what}[{i}]")
                  for i, b in enumerate(chain_bodies))
    return ForwardedChain(leaf, chain)


# --- Envoy x-forwarded-client-cert -------------------------------------------------------

_XFCC_PAIR = re.compile(
    r"[ \t]*([!#$%&'*+\-.^_`|~0-9A-Za-z]+)="
    r'(?:"([^"\\]*(?:\\.[^"\\]*)*)"|([^",;]*))[ \t]*', re.DOTALL)
_XFCC_EMPTY = re.compile(r"[ \t,]*")
_UNESCAPE = re.compile(r"\\(.)", re.DOTALL)
_SAN_KEYS = frozenset({"uri", "dns"})
_CERT_KEYS = frozenset({"cert", "chain"})


def _xfcc_elements(text: str, what: str) -> list[list[tuple[str, str]]]:
    """The elements of an XFCC value, each a list of (lowercase key, unquoted value)."""
    elements: list[list[tuple[str, str]]] = []
    pos, end = 0, len(text)
    while True:
        pos = _skip(_XFCC_EMPTY, text, pos)
        if pos == end:
            return elements
        element: list[tuple[str, str]] = []
        while True:
            match = _XFCC_PAIR.match(text, pos)
            if match is None:
                raise _error(ForwardedReason.BAD_ENCODING,
                             f"{what}: malformed key=value pair at offset {pos}")
            if match.end() < end and text[match.end()] == '"':
                raise _error(ForwardedReason.BAD_ENCODING,
                             f"{what}: misplaced or unterminated quote at offset {match.end()}")
            key, quoted, bare = match.groups()
            value = _UNESCAPE.sub(r"\1", quoted) if quoted is not None else bare.strip(" \t")
            element.append((key.lower(), value))
            pos = match.end()
            if pos == end or text[pos] == ",":
                break
            if text[pos] != ";":
                raise _error(ForwardedReason.BAD_ENCODING,
                             f"{what}: unexpected character at offset {pos}")
            pos += 1
        elements.append(element)


def _parse_xfcc(values: list[bytes], what: str, limit: int) -> ForwardedChain:
    elements = _xfcc_elements(",".join(v.decode("latin-1") for v in values), what)
    if not elements:
        raise _error(ForwardedReason.EMPTY_VALUE, f"{what} is empty")
    if any(e[-1][0] in _SAN_KEYS for e in elements[:-1]):
        raise _error(ForwardedReason.AMBIGUOUS,
                     f"{what}: an element before the last ends in a URI/DNS field, which "
                     "Envoy writes unquoted: a crafted SAN may have split the element")
    nearest = elements[-1]
    after_san = False
    for key, _ in nearest:
        after_san = after_san or key in _SAN_KEYS
        if after_san and key in _CERT_KEYS:
            raise _error(ForwardedReason.AMBIGUOUS,
                         f"{what}: a {key} field follows a URI/DNS field, which Envoy never "
                         "writes; it may have been smuggled in through a SAN")
    found: dict[str, list[str]] = {k: [v for key, v in nearest if key == k] for k in _CERT_KEYS}
    for key, found_values in found.items():
        if len(found_values) > 1:
            raise _error(ForwardedReason.MULTIPLE_VALUES,
                         f"{what}: {len(found_values)} {key} fields in one element")
    cert_text = found["cert"][0] if found["cert"] else None
    chain_text = found["chain"][0] if found["chain"] else None
    if cert_text is None and chain_text is None:
        raise _error(ForwardedReason.MISSING_CERTIFICATE,
                     f"{what}: the nearest element has no Cert or Chain field")
    leaf_body = (_one_pem(_percent_decode(cert_text.encode("latin-1"), f"{what} Cert"),
                          f"{what} Cert") if cert_text is not None else None)
    chain_bodies: list[str] = []
    if chain_text is not None:
        chain_bodies = _pem_bodies(_percent_decode(chain_text.encode("latin-1"),
                                                   f"{what} Chain"), f"{what} Chain")
        if not chain_bodies:
            raise _error(ForwardedReason.EMPTY_VALUE, f"{what}: the Chain field is empty")
    _check_count(max(1, len(chain_bodies)), limit)
    chain_ders = [_pem_decode(b, f"{what} Chain") for b in chain_bodies]
    leaf_der = _pem_decode(leaf_body, f"{what} Cert") if leaf_body is not None else chain_ders[0]
    if chain_ders and chain_ders[0] != leaf_der:
        raise _error(ForwardedReason.LEAF_MISMATCH,
                     f"{what}: the Chain field does not start with the Cert field's certificate")
    leaf = _load_der(leaf_der, f"{what} Cert" if leaf_body is not None else f"{what} Chain[0]")
    chain = tuple(_load_der(d, f"{what} Chain[{i}]") for i, d in enumerate(chain_ders) if i)
    return ForwardedChain(leaf, chain)


# --- certificates ------------------------------------------------------------------------

def _check_count(count: int, limit: int) -> None:
    if count > limit:
        raise _error(ForwardedReason.TOO_MANY_CERTIFICATES,
                     f"{count} certificates forwarded; at most {limit} are allowed")


def _load_der(der: bytes, what: str) -> x509.Certificate:
    """Parse ``der`` fully (fields cryptography parses lazily too), or raise not_a_certificate."""
    if not der:
        raise _error(ForwardedReason.NOT_A_CERTIFICATE, f"{what}: no data")
    try:
        certificate = x509.load_der_x509_certificate(der)
        _ = (certificate.subject, certificate.issuer, certificate.extensions,
             certificate.not_valid_before_utc, certificate.not_valid_after_utc)
        certificate.public_key()
    except Exception as e:  # a native parser fed untrusted bytes: any failure is the data's
        raise _error(ForwardedReason.NOT_A_CERTIFICATE,
                     f"{what}: not a valid X.509 certificate ({_brief(e)})") from None
    return certificate


def _brief(error: BaseException) -> str:
    text = str(error) or type(error).__name__
    return text if len(text) <= 120 else text[:117] + "..."


# --- trusted proxies ---------------------------------------------------------------------

_Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_Address = ipaddress.IPv4Address | ipaddress.IPv6Address
_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")


class TrustedProxies:
    """The networks whose peers may forward client certificates in headers."""

    def __init__(self, cidrs: Iterable[str]) -> None:
        values = [cidrs] if isinstance(cidrs, str) else cidrs
        self.networks: tuple[_Network, ...] = tuple(_parse_network(c) for c in values)

    def contains(self, host: str) -> bool:
        """Whether ``host`` (an IP literal; IPv4-mapped IPv6 counts as IPv4) is trusted."""
        address = _parse_address(host)
        return address is not None and any(address in net for net in self.networks)

    def __repr__(self) -> str:
        return f"TrustedProxies({[str(n) for n in self.networks]!r})"


def _parse_network(text: str) -> _Network:
    value = text.strip()
    if not value:
        raise ConfigurationError("--trusted-proxy", "an empty value is not an IP network")
    try:
        network: _Network = ipaddress.ip_network(value)
    except ValueError as e:
        try:
            loose = ipaddress.ip_network(value, strict=False)
        except ValueError:
            raise ConfigurationError("--trusted-proxy",
                                     f"{text!r} is not an IP address or CIDR network ({e})"
                                     ) from None
        raise ConfigurationError("--trusted-proxy",
                                 f"{text!r} has host bits set; did you mean {loose}?") from None
    if isinstance(network, ipaddress.IPv6Network) and network.subnet_of(_MAPPED):
        base = int(network.network_address) & 0xFFFFFFFF
        return ipaddress.IPv4Network((base, network.prefixlen - 96))
    return network


def _parse_address(host: str) -> _Address | None:
    text = host.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    try:
        address: _Address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address
