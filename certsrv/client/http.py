"""
A treq client that presents a client certificate, and plain-language explanations of rejections.

treq has no ``cert=`` argument: the certificate goes into the TLS options an
``IPolicyForHTTPS`` hands to the ``Agent``.  When a server rejects the certificate, treq
raises a ``ResponseNeverReceived`` (or ``ResponseFailed``) wrapping an ``OpenSSL.SSL.Error``
that names a TLS alert; :func:`explain` turns that into a sentence and a stable code
(``trusted=`` names the CAs the client trusted, for "not issued by ...").

Where :func:`http_client`'s client differs from treq's own:

- it checks the server's name itself and fails closed: Twisted's check lets through
  certificates ``service_identity`` cannot parse (no subjectAltName, a ``*`` pattern); an IP
  address in the URL matches IP address entries only;
- it follows no redirect unless ``follow_redirects=True`` (or ``allow_redirects=True`` on a
  request), and then never to anything but https, and to another origin without the client
  certificate, cookies or the caller's headers (Accept, Accept-Language, User-Agent
  excepted); a 303, or a 301/302 answering POST, becomes a GET; ``browser_like_redirects``
  is ignored;
- it asks for no compressed body and decodes none;
- unless ``unbuffered=True``, it reads the body before the response is returned, at most
  ``max_response_size`` bytes, all within ``timeout`` seconds (default 30; a request's
  ``timeout=None`` means none).
"""

from __future__ import annotations

import base64
import enum
import html
import ipaddress
import json
import os
import re
import string
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from http.cookiejar import CookieJar
from typing import Any, cast

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from hyperlink import DecodedURL, EncodedURL
from OpenSSL import SSL, crypto
from service_identity import VerificationError
from treq.auth import UnknownAuthConfig
from treq.client import HTTPClient
from twisted.internet import defer, error, threads
from twisted.internet.interfaces import (
    IOpenSSLClientConnectionCreator,
    IPushProducer,
    IReactorTime,
)
from twisted.internet.protocol import Protocol, connectionDone
from twisted.internet.ssl import (
    Certificate,
    optionsForClientTLS,
    platformTrust,
    trustRootFromCertificates,
)
from twisted.logger import Logger
from twisted.python.components import proxyForInterface
from twisted.python.failure import Failure
from twisted.web.client import Agent, CookieAgent, HTTPConnectionPool, ResponseDone
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgent, IBodyProducer, IPolicyForHTTPS, IResponse
from zope.interface import implementer  # type: ignore[import-untyped]

# treq's request() always adds gzip decoding and cannot be told not to; the client below
# re-assembles the request from the same helpers treq itself uses.
from certsrv._compat import (
    TREQ_NO_JSON,
    IOpenSSLTrustRoot,
    TreqResponse,
    treq_agent,
    treq_cookiejar,
    treq_merge_cookies,
    treq_query_params,
    treq_request_body,
    treq_request_headers,
    treq_scoped_cookiejar,
)
from certsrv.client.renew import (
    DEFAULT_FRACTION,
    PKCS10_TYPE,
    AutoRenewal,
    Renewed,
    simplereenroll_url,
)
from certsrv.exceptions import CertsrvError, ConfigurationError, Reason
from certsrv.x509.certs import (
    exposed_mode,
    is_pkcs12,
    parse_pkcs12,
    parse_private_key,
    read_file,
)
from certsrv.x509.passphrase import Passphrase

__all__ = [
    "ClientTLSPolicy",
    "ClientCredentials",
    "KeyPassphrase",
    "Explanation",
    "HTTPStatusError",
    "RedirectRefused",
    "ResponseTooLarge",
    "ServerCertificateRejected",
    "ServerIdentityError",
    "Source",
    "check_server_identity",
    "client_tls_policy",
    "explain",
    "http_client",
    "load_ca_certificates",
    "load_client_credentials",
    "printable",
    "raise_for_status",
]

Source = str | os.PathLike[str] | bytes
"""A file path (``str`` or path-like), or the file's contents (``bytes``, PEM or DER)."""

KeyPassphrase = Passphrase | bytes | None
"""What decrypts an encrypted key or PKCS#12 file: the passphrase, or where to read it."""

_ClientKey = (
    ec.EllipticCurvePrivateKey
    | rsa.RSAPrivateKey
    | ed25519.Ed25519PrivateKey
    | ed448.Ed448PrivateKey
)
_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----.*?-----END \1-----\r?\n?", re.DOTALL)
_MAX_REASON = 300
_REASON_INPUT = 64 * 1024  # bytes of an error body looked at for the server's reason
_ERROR_BODY_LIMIT = 1024 * 1024  # bytes of an error body kept by raise_for_status
_DISCARD_LIMIT = 64 * 1024  # bytes of a redirect's body read before closing the connection
DEFAULT_TIMEOUT = 30.0
DEFAULT_MAX_RESPONSE_SIZE = 64 * 1024 * 1024
DEFAULT_MAX_REDIRECTS = 10

_log = Logger(namespace="certsrv.client")


# -- Text from the server, made safe to print ------------------------------------------------

_ESC = "\x1b"
_STRING_STARTERS = frozenset("]P_^X")  # ESC ] (OSC), ESC P (DCS), ESC _ (APC), ESC ^, ESC X
_C1_STRINGS = frozenset("\x90\x98\x9d\x9e\x9f")
_BIDI = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


class _State(enum.Enum):
    """Where printable() is: in text, or inside an escape sequence of some kind."""

    TEXT = 0
    ESCAPE = 1
    INTERMEDIATE = 2
    CSI = 3
    STRING = 4
    STRING_ESCAPE = 5


def printable(text: str, *, lines: bool = False) -> str:
    """Drop terminal escape sequences and control characters from text a server sent."""
    if (text.replace("\n", "").replace("\t", "") if lines else text).isprintable():
        return text  # nothing to remove (isprintable is False for every character below)
    out: list[str] = []
    state = _State.TEXT
    # One state machine step per character, so the cost is linear in the text's length.
    for ch in text:
        if state is not _State.TEXT:
            state, consumed = _in_sequence(state, ch)
            if consumed:
                continue
        started = _SEQUENCE_STARTS.get(ch)
        if started is not None:
            state = started
        else:
            out.append(_kept(ch, lines))
    return "".join(out)


# The characters that begin an escape sequence, and the state each begins.
_SEQUENCE_STARTS = {_ESC: _State.ESCAPE, "\x9b": _State.CSI,
                    **{ch: _State.STRING for ch in _C1_STRINGS}}


def _in_sequence(state: _State, ch: str) -> tuple[_State, bool]:
    """The state after ``ch`` inside an escape sequence, and whether ``ch`` was part of it
    (if not, it ended a control sequence and is judged as text)."""
    if state is _State.STRING:
        if ch == _ESC:
            return _State.STRING_ESCAPE, True
        return (_State.TEXT if ch in ("\x07", "\x9c") else state), True
    if state is _State.STRING_ESCAPE:
        return (_State.TEXT if ch == "\\" else _State.STRING), True
    if state is _State.ESCAPE:
        if ch == "[":
            return _State.CSI, True
        if ch in _STRING_STARTERS:
            return _State.STRING, True
        if " " <= ch <= "/":
            return _State.INTERMEDIATE, True
        return (state if ch == _ESC else _State.TEXT), True
    if state is _State.INTERMEDIATE:
        return (state if " " <= ch <= "/" else _State.TEXT), True
    # CSI: parameter and intermediate bytes, then a final byte; anything else ends it.
    if " " <= ch <= "?":
        return state, True
    return _State.TEXT, "@" <= ch <= "~"


def _kept(ch: str, lines: bool) -> str:
    """What a character outside escape sequences becomes: itself, a space, or nothing."""
    if lines and ch in "\n\t":
        return ch
    if lines and ch in "\u2028\u2029":
        return "\n"
    if ch in _BIDI:
        return ""
    if ch.isprintable() or (lines and not _is_control(ch)):
        return ch
    return " " if ch.isspace() else ""


def _is_control(ch: str) -> bool:
    """C0, DEL and C1 control characters."""
    return ch < " " or "\x7f" <= ch <= "\x9f"


def _one_line(text: str, limit: int = _MAX_REASON) -> str:
    """Safe to print, whitespace collapsed, at most ``limit`` characters."""
    text = " ".join(printable(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


# -- Loading the client's credentials --------------------------------------------------------


@dataclass(frozen=True)
class ClientCredentials:
    """A client certificate, its private key, and the intermediates sent after it."""

    certificate: x509.Certificate
    private_key: _ClientKey
    chain: tuple[x509.Certificate, ...] = ()

    def __repr__(self) -> str:
        """Name the certificate's subject; never show the key."""
        subject = self.certificate.subject.rfc4514_string()
        return f"ClientCredentials({subject!r}, chain={len(self.chain)})"


def _read(source: Source, what: str) -> tuple[str, bytes]:
    """Return a name for ``source`` and its bytes, or raise ConfigurationError naming the file."""
    if isinstance(source, bytes):
        return f"<{what}>", source
    path = os.fspath(source)
    return path, read_file(path, what)


def _certificates(name: str, data: bytes, what: str) -> list[x509.Certificate]:
    """Parse every certificate in PEM ``data`` (or one DER certificate), in order."""
    if b"-----BEGIN" in data:
        blocks = [m.group(0) for m in _PEM_BLOCK.finditer(data)
                  if m.group(1) in (b"CERTIFICATE", b"X509 CERTIFICATE")]
        if not blocks:
            raise ConfigurationError(name, f"no certificate found in the {what} file")
        try:
            return [x509.load_pem_x509_certificate(block) for block in blocks]
        except ValueError:
            problem = f"the {what} file holds a malformed certificate"
            raise ConfigurationError(name, problem) from None
    try:
        return [x509.load_der_x509_certificate(data)]
    except ValueError:
        raise ConfigurationError(name, f"the {what} file is not a PEM or DER certificate") from None


def _private_key(name: str, data: bytes, passphrase: Passphrase | None) -> _ClientKey | None:
    """Parse the private key in ``data`` (PEM or DER, encrypted or not); None if PEM
    ``data`` holds no key."""
    if b"-----BEGIN" in data:
        blocks = [m.group(0) for m in _PEM_BLOCK.finditer(data)
                  if m.group(1).endswith(b"PRIVATE KEY")]
        if not blocks:
            return None
        data = blocks[0]
    key = parse_private_key(name, data, passphrase)
    if not isinstance(key, _ClientKey):
        raise ConfigurationError(name, f"unsupported private key type {type(key).__name__}")
    return key


def _public_der(key: object) -> bytes:
    """Return the SubjectPublicKeyInfo DER of a public key."""
    return key.public_bytes(  # type: ignore[attr-defined,no-any-return]
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _warn_if_exposed(source: Source, what: str = "the client's private key") -> None:
    """Log a warning when the file holding the private key (or its passphrase) is open to
    other users."""
    if isinstance(source, bytes):
        return
    path = os.fspath(source)
    mode = exposed_mode(path)
    if mode is not None:
        _log.warn("{path}: {what} is readable by other users (mode {mode}); chmod 600 it",
                  path=path, what=what, mode=oct(mode), reason="key_exposed")


def _passphrase(passphrase: KeyPassphrase) -> Passphrase | None:
    if isinstance(passphrase, bytes):
        return Passphrase.from_value(passphrase)
    return passphrase


def _from_pkcs12(name: str, data: bytes, key: Source | None, passphrase: Passphrase | None
                 ) -> tuple[list[x509.Certificate], _ClientKey]:
    """The certificate, chain and key of a PKCS#12 client certificate file."""
    if key is not None:
        raise ConfigurationError(name, "this PKCS#12 file holds the private key; give no "
                                       "separate key")
    bundle = parse_pkcs12(name, data, passphrase)
    if not isinstance(bundle.key, _ClientKey):
        raise ConfigurationError(name, "unsupported private key type "
                                       f"{type(bundle.key).__name__}")
    return [bundle.certificate, *bundle.chain], bundle.key


def load_client_credentials(
    cert: Source, key: Source | None = None, intermediates: Source | None = None,
    passphrase: KeyPassphrase = None,
) -> ClientCredentials:
    """Load a client certificate (leaf first, then its chain), its key, and extra intermediates.

    ``cert`` may be a PKCS#12 file holding all three (told by its content); ``passphrase``
    decrypts it or an encrypted key, and is read only if one is encrypted."""
    source = _passphrase(passphrase)
    if source is not None and source.path is not None:
        _warn_if_exposed(source.path, "the passphrase of the client's private key")
    cert_name, cert_data = _read(cert, "client certificate")
    private_key: _ClientKey | None
    if is_pkcs12(cert_data):
        certificates, p12_key = _from_pkcs12(cert_name, cert_data, key, source)
        _warn_if_exposed(cert)
        key_name, private_key = cert_name, p12_key
    elif key is None:
        certificates = _certificates(cert_name, cert_data, "client certificate")
        key_name, private_key = cert_name, _private_key(cert_name, cert_data, source)
        if private_key is None:
            problem = "no private key given, and none in the certificate file"
            raise ConfigurationError(cert_name, problem)
        _warn_if_exposed(cert)
    else:
        certificates = _certificates(cert_name, cert_data, "client certificate")
        key_name, key_data = _read(key, "private key")
        private_key = _private_key(key_name, key_data, source)
        if private_key is None:
            raise ConfigurationError(key_name, "no private key found in the private key file")
        _warn_if_exposed(key)
    leaf, chain = certificates[0], certificates[1:]
    public = _public_der(private_key.public_key())
    if _public_der(leaf.public_key()) != public:
        problem = "private key does not match the certificate"
        if any(_public_der(c.public_key()) == public for c in chain):
            problem += " (it matches a later one: put the client certificate first in the file)"
        raise ConfigurationError(key_name, problem)
    if intermediates is not None:
        chain += _certificates(*_read(intermediates, "intermediate certificates"),
                               "intermediate certificates")
    unique: list[x509.Certificate] = []
    for certificate in chain:
        if certificate != leaf and certificate not in unique:
            unique.append(certificate)
    return ClientCredentials(leaf, private_key, tuple(unique))


def load_ca_certificates(ca: Source) -> list[x509.Certificate]:
    """Load the CA certificates that the server's certificate must chain to."""
    name, data = _read(ca, "CA certificate")
    return _certificates(name, data, "CA certificate")


def _ca_certificates(ca: Source | Sequence[x509.Certificate] | None
                     ) -> Sequence[x509.Certificate]:
    """The certificates of ``ca``: loaded from a source, or as given; none for None."""
    if ca is None:
        return ()
    if isinstance(ca, Sequence) and not isinstance(ca, (str, bytes)):
        return ca
    return load_ca_certificates(ca)


def _trust_root(ca: Source | Sequence[x509.Certificate] | None) -> IOpenSSLTrustRoot:
    """Turn CA certificates into a Twisted trust root; None means the platform's CAs."""
    if ca is None:
        return platformTrust()  # type: ignore[no-untyped-call,no-any-return]
    certificates = _ca_certificates(ca)
    anchors = [Certificate(crypto.X509.from_cryptography(c))  # type: ignore[no-untyped-call]
               for c in certificates]
    return trustRootFromCertificates(anchors)  # type: ignore[no-untyped-call,no-any-return]


# -- The server's certificate, judged by this client -----------------------------------------


class ServerIdentityError(CertsrvError):
    """This client refused the server: its certificate does not name the host in the URL."""

    def __init__(self, host: str, problem: str) -> None:
        super().__init__(host, problem)
        self.host = host
        self.problem = problem

    def __str__(self) -> str:
        return f"the server's certificate is not valid for {self.host}: {self.problem}"


# OpenSSL's X509_V_ERR_* codes -> what they mean for the server's certificate; None: untrusted.
_VERIFY_ERRORS: dict[int, str | None] = {
    2: None, 18: None, 19: None, 20: None, 21: None, 27: None,
    7: "a signature in its chain does not verify",
    9: "it is not valid yet",
    10: "it has expired",
    22: "its chain is too long",
    23: "it has been revoked",
    24: "an issuer in its chain is not a CA",
    25: "its chain is longer than an issuer allows",
    26: "it is not meant for TLS servers (extended key usage)",
    28: "it is not trusted for TLS servers",
}


class ServerCertificateRejected(CertsrvError):
    """This client refused the server: OpenSSL found its certificate chain invalid."""

    def __init__(self, errno: int, depth: int) -> None:
        super().__init__(errno, depth)
        self.errno = errno
        self.depth = depth

    @property
    def untrusted(self) -> bool:
        """Whether the chain ends at no trusted CA (rather than being invalid otherwise)."""
        return self.errno in _VERIFY_ERRORS and _VERIFY_ERRORS[self.errno] is None

    def problem(self, trusted: str = "a CA this client trusts") -> str:
        """What is wrong with the certificate, in words."""
        if self.untrusted:
            return f"it was not issued by {trusted}"
        known = _VERIFY_ERRORS.get(self.errno)
        if known is None:
            return f"it is not valid (OpenSSL verify error {self.errno})"
        if self.depth > 0 and self.errno in (9, 10):
            return known.replace("it ", "an issuer certificate in its chain ", 1)
        return known

    def __str__(self) -> str:
        return f"the server's certificate was rejected: {self.problem()}"


_ASCII_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)
_LABEL = frozenset(string.ascii_lowercase + string.digits + "-_")
_HEX = frozenset(string.hexdigits)


def _numeric_label(label: str) -> bool:
    """A label an URL parser reads as part of an IPv4 address (``127.1``, ``0x7f.1``)."""
    if label.startswith("0x"):
        return set(label[2:]) <= _HEX
    return label.isdigit()


def _labels(name: str) -> list[str] | None:
    """The lowercase labels of a DNS host name, or None if ``name`` is not one."""
    if name.endswith("."):
        name = name[:-1]
    if not name or len(name) > 253 or not name.isascii():
        return None
    labels = name.translate(_ASCII_LOWER).split(".")
    for label in labels:
        if not 0 < len(label) <= 63 or not set(label) <= _LABEL:
            return None
    return None if _numeric_label(labels[-1]) else labels


def _ip_address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The IP address ``host`` is a literal for, or None."""
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _dns_matches(pattern: str, reference: list[str]) -> bool:
    """RFC 6125 matching: exact, or ``*`` as the whole leftmost label over 2+ fixed labels."""
    labels = _labels(pattern[2:]) if pattern.startswith("*.") else _labels(pattern)
    if labels is None:
        return False
    if pattern.startswith("*."):
        return len(labels) >= 2 and len(reference) == len(labels) + 1 and reference[1:] == labels
    return labels == reference


def _listed(names: x509.SubjectAlternativeName) -> str:
    """The DNS names and IP addresses of a subjectAltName, shortened, safe to print."""
    entries = [f"DNS:{n}" for n in names.get_values_for_type(x509.DNSName)]
    entries += [f"IP:{a}" for a in names.get_values_for_type(x509.IPAddress)]
    if not entries:
        return "it names no DNS name or IP address"
    shown = ", ".join(entries[:5]) + (f" and {len(entries) - 5} more" if len(entries) > 5 else "")
    return _one_line(f"it names {shown}", 200)


def check_server_identity(certificate: x509.Certificate, host: str) -> None:
    """Raise ServerIdentityError unless a subjectAltName of ``certificate`` names ``host``."""
    address = _ip_address(host)
    reference = None if address is not None else _labels(host)
    if address is None and reference is None:
        raise ServerIdentityError(host, "the URL's host is neither a DNS name nor an IP address")
    try:
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        raise ServerIdentityError(
            host, "it has no subjectAltName (a name only in the subject's CN is not accepted)"
        ) from None
    if address is not None:
        # An IP address matches IP address entries only, never a DNS entry spelling it.
        if any(type(value) is type(address) and value == address
               for value in names.get_values_for_type(x509.IPAddress)):
            return
        if any(_ip_address(name) == address for name in names.get_values_for_type(x509.DNSName)):
            raise ServerIdentityError(host, f"it has {address} as a DNS name, which does not "
                                            "match an IP address (that needs an IP entry)")
    elif reference is not None and any(
            _dns_matches(pattern, reference)
            for pattern in names.get_values_for_type(x509.DNSName)):
        return
    raise ServerIdentityError(host, _listed(names))


_VerifyCallback = Callable[[SSL.Connection, crypto.X509, int, int, int], bool]


def _verify_callback(tls_protocol: Any, host: str) -> _VerifyCallback:
    """OpenSSL's verdict on the chain, then this client's check of the name; fails closed."""
    holder = [tls_protocol]  # dropped after the verdict, as Twisted's own callback does

    def refuse(problem: CertsrvError) -> bool:
        if holder:
            try:
                holder.pop().failVerification(Failure(problem))
            except Exception:
                pass  # the handshake fails anyway; only the explanation is lost
        return False

    def callback(connection: SSL.Connection, certificate: crypto.X509, errno: int,
                 depth: int, ok: int) -> bool:
        try:
            if not ok:
                return refuse(ServerCertificateRejected(errno, depth))
            if depth != 0:
                return True
            check_server_identity(certificate.to_cryptography(), host)
        except ServerIdentityError as problem:
            return refuse(problem)
        except BaseException as problem:  # noqa: B036 - any failure is a refusal
            return refuse(ServerIdentityError(
                host, f"its certificate could not be checked ({type(problem).__name__})"))
        holder.clear()
        return True

    return callback


@implementer(IOpenSSLClientConnectionCreator)
class _IdentityCheckingCreator:
    """Twisted's client TLS options, with the verify callback replaced by this client's own."""

    def __init__(self, options: IOpenSSLClientConnectionCreator, host: str) -> None:
        self._options = options
        self._host = host

    def clientConnectionForTLS(self, tlsProtocol: Any) -> SSL.Connection:
        """Make the connection; the server's name is checked in the verify callback."""
        connection = self._options.clientConnectionForTLS(tlsProtocol)
        connection.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT,
                              _verify_callback(tlsProtocol, self._host))
        return connection


@implementer(IPolicyForHTTPS)
class ClientTLSPolicy:
    """Verify the server against ``trust_root`` and present ``credentials`` (if any) to it."""

    def __init__(
        self, credentials: ClientCredentials | None, trust_root: IOpenSSLTrustRoot
    ) -> None:
        self.credentials = credentials
        self.trust_root = trust_root
        self._creators: dict[tuple[bytes, int], IOpenSSLClientConnectionCreator] = {}

    def use(self, credentials: ClientCredentials) -> None:
        """Present ``credentials`` on every connection made from now on."""
        self.credentials = credentials
        self._creators = {}

    def creatorForNetloc(self, hostname: bytes, port: int) -> IOpenSSLClientConnectionCreator:
        """Return the TLS connection creator for ``hostname:port``, one per netloc."""
        creator = self._creators.get((hostname, port))
        if creator is None:
            host = hostname.decode("ascii")
            options = optionsForClientTLS(
                host,
                trustRoot=self.trust_root,
                extraCertificateOptions=self._certificate_options(),
            )
            creator = _IdentityCheckingCreator(options, host)
            self._creators[hostname, port] = creator
        return creator

    def _certificate_options(self) -> dict[str, Any]:
        # Same effect as optionsForClientTLS(clientCertificate=PrivateCertificate(...)), but
        # with cryptography objects, which pyOpenSSL takes without a DeprecationWarning.
        if self.credentials is None:
            return {}
        return {
            "privateKey": self.credentials.private_key,
            "certificate": self.credentials.certificate,
            "extraCertChain": list(self.credentials.chain),
        }


def client_tls_policy(
    cert_path_or_pem: Source | None,
    key: Source | None,
    ca: Source | Sequence[x509.Certificate] | None,
    intermediates: Source | None = None,
    passphrase: KeyPassphrase = None,
) -> ClientTLSPolicy:
    """Build the HTTPS policy presenting this client certificate; ``ca`` None trusts the system.

    ``cert_path_or_pem`` may be a PKCS#12 file; ``passphrase`` decrypts it or the key."""
    if cert_path_or_pem is None:
        if key is not None or intermediates is not None:
            problem = "a private key or chain was given without a certificate"
            raise ConfigurationError("<client certificate>", problem)
        credentials = None
    else:
        credentials = load_client_credentials(cert_path_or_pem, key, intermediates, passphrase)
    return ClientTLSPolicy(credentials, _trust_root(ca))


# -- Requests: bounded bodies, no compression, redirects only when asked and only safely --------


class RedirectRefused(CertsrvError):
    """This client refused to follow a redirect (to plain HTTP, too many, ...)."""

    def __init__(self, source: str, target: str, problem: str) -> None:
        super().__init__(source, target, problem)
        self.source = source
        self.target = target
        self.problem = problem

    def __str__(self) -> str:
        return _one_line(f"refused to follow the redirect to {self.target}: {self.problem}", 500)


class ResponseTooLarge(CertsrvError):
    """The response body is longer than the client's ``max_response_size``."""

    def __init__(self, limit: int) -> None:
        super().__init__(limit)
        self.limit = limit

    def __str__(self) -> str:
        return f"the response body is larger than {self.limit} bytes"


@implementer(IPushProducer)
class _Finished:
    """The producer of a body that has already been read: nothing to pause or stop."""

    def pauseProducing(self) -> None:
        """Nothing to pause."""

    def resumeProducing(self) -> None:
        """Nothing to resume."""

    def stopProducing(self) -> None:
        """Nothing to stop."""


def _stop(transport: object) -> None:
    """Stop the producer a response body is delivered with (closing the connection)."""
    if transport is not None:
        cast(IPushProducer, transport).stopProducing()


class _BodyReader(Protocol):
    """Collect a body up to ``limit`` bytes; beyond it, close the connection and fail or cut."""

    def __init__(self, limit: int | None, truncate: bool = False) -> None:
        self.limit = limit
        self.truncate = truncate
        self.chunks: list[bytes] = []
        self.size = 0
        self.finished: defer.Deferred[tuple[bytes, Failure]] = defer.Deferred(self._cancel)

    def _cancel(self, _: object) -> None:
        _stop(self.transport)

    def dataReceived(self, data: bytes) -> None:
        """Keep ``data`` unless the limit is passed."""
        if self.finished.called:
            return
        if self.limit is not None and self.size + len(data) > self.limit:
            self.chunks.append(data[: self.limit - self.size])
            self.size = self.limit
            _stop(self.transport)
            if self.truncate:
                self.finished.callback((b"".join(self.chunks), Failure(ResponseDone())))
            else:
                self.finished.errback(ResponseTooLarge(self.limit))
            return
        self.size += len(data)
        self.chunks.append(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """The body is complete, or the connection failed."""
        if self.finished.called:
            return
        if reason.check(ResponseDone, PotentialDataLoss):
            self.finished.callback((b"".join(self.chunks), reason))
        else:
            self.finished.errback(reason)


class _ReadResponse(proxyForInterface(IResponse)):  # type: ignore[misc]
    """A response whose body was read in full; ``deliverBody`` replays it."""

    def __init__(self, original: IResponse, body: bytes, end: Failure) -> None:
        self.original = original
        self._body = body
        self._end = end

    def deliverBody(self, protocol: Any) -> None:
        """Hand the stored body to ``protocol``."""
        protocol.makeConnection(_Finished())
        if self._body:
            protocol.dataReceived(self._body)
        protocol.connectionLost(self._end)


async def _read_body(response: IResponse, limit: int | None, truncate: bool = False) -> bytes:
    """Read the body, at most ``limit`` bytes (ResponseTooLarge beyond, or cut if truncate)."""
    reader = _BodyReader(limit, truncate)
    response.deliverBody(reader)
    body, _ = await reader.finished
    return body


async def _buffered(response: IResponse, limit: int | None) -> IResponse:
    """The response with its body read (at most ``limit`` bytes), replayable."""
    reader = _BodyReader(limit)
    response.deliverBody(reader)
    body, end = await reader.finished
    return _ReadResponse(response, body, end)


class _Discard(Protocol):
    """Drop a redirect's body; close the connection if it is long."""

    size = 0

    def dataReceived(self, data: bytes) -> None:
        """Count and drop."""
        self.size += len(data)
        if self.size > _DISCARD_LIMIT:
            _stop(self.transport)


_REDIRECTS = frozenset({301, 302, 303, 307, 308})
# Headers a request keeps when a redirect leads to another origin; all others are dropped.
_PORTABLE_HEADERS = frozenset({b"accept", b"accept-language", b"user-agent"})
_BODY_HEADERS = (b"content-type", b"content-length", b"content-encoding", b"transfer-encoding")


def _parse_url(url: Any) -> EncodedURL:
    """treq's URL handling: text, bytes or hyperlink URLs."""
    if isinstance(url, DecodedURL):
        return url.encoded_url
    if isinstance(url, EncodedURL):
        return url
    if isinstance(url, str):
        return EncodedURL.from_text(url)
    return EncodedURL.from_text(url.decode("ascii"))


def _uri(url: EncodedURL) -> bytes:
    """The URL as an Agent takes it."""
    return url.to_uri().to_text().encode("ascii")  # type: ignore[no-any-return]


def _origin(url: EncodedURL) -> tuple[str, str, int | None]:
    """Scheme, host and port: what a redirect may not change and keep the credentials."""
    return url.scheme.lower(), url.host.lower(), url.port


def _redirect_target(url: EncodedURL, location: bytes) -> EncodedURL:
    """Resolve ``location`` against ``url``; refuse anything but an https URL."""
    source = url.to_text()
    shown = location.decode("latin-1")[:200]
    try:
        target = EncodedURL.from_text(urllib.parse.urljoin(source, location.decode("ascii")
                                                          .strip()))
    except ValueError:  # UnicodeDecodeError and hyperlink's URLParseError are ValueErrors
        raise RedirectRefused(source, shown, "its Location is not a valid URL") from None
    scheme = target.scheme.lower()
    if scheme != "https":
        problem = ("it leaves HTTPS for plain HTTP" if scheme == "http"
                   else f"its scheme is {scheme or 'missing'}, not https")
        raise RedirectRefused(source, target.to_text(), problem)
    if not target.host:
        raise RedirectRefused(source, target.to_text(), "it names no host")
    if _ip_address(target.host) is None and _labels(target.host) is None:
        raise RedirectRefused(source, target.to_text(), "its host is not a valid host name")
    if target.userinfo:
        raise RedirectRefused(source, target.to_text(), "it carries a user name or password")
    return target


def _portable(headers: Headers) -> Headers:
    """Only the caller's headers that carry nothing secret."""
    kept = Headers()
    for name, values in headers.getAllRawHeaders():
        if name.lower() in _PORTABLE_HEADERS:
            kept.setRawHeaders(name, values)
    return kept


def _basic_auth(auth: Any) -> bytes:
    """treq's ``auth=(user, password)``, as an Authorization header value."""
    if not isinstance(auth, tuple) or len(auth) != 2:
        raise UnknownAuthConfig(auth)
    user, password = (v if isinstance(v, bytes) else str(v).encode("utf-8") for v in auth)
    return b"Basic " + base64.b64encode(user + b":" + password)


class _Default(enum.Enum):
    """The client's own setting, for a request argument left out."""

    CLIENT = 0


class _CertsrvHTTPClient(HTTPClient):
    """treq's HTTPClient without gzip, with a timeout and a size limit, following no redirects."""

    def __init__(
        self,
        agent: IAgent,
        stranger: Callable[[], IAgent],
        reactor: Any,
        *,
        follow_redirects: bool,
        max_redirects: int,
        timeout: float | None,
        max_response_size: int | None,
    ) -> None:
        super().__init__(agent)
        self._stranger_factory = stranger
        self._stranger: IAgent | None = None
        self._reactor = reactor
        self._follow_redirects = follow_redirects
        self._max_redirects = max_redirects
        self._timeout = timeout
        self._max_response_size = max_response_size
        self.renewal: AutoRenewal | None = None

    def request(
        self,
        method: str,
        url: Any,
        *,
        params: Any = None,
        headers: Any = None,
        data: Any = None,
        files: Any = None,
        json: Any = TREQ_NO_JSON,
        auth: Any = None,
        cookies: Any = None,
        allow_redirects: bool | None = None,
        browser_like_redirects: bool = False,
        unbuffered: bool = False,
        reactor: Any = None,
        timeout: float | None | _Default = _Default.CLIENT,
        _stacklevel: int = 2,  # listed in _compat.TREQ_REQUEST_PARAMETERS
    ) -> defer.Deferred[TreqResponse]:
        """Send a request as treq does, with the differences in the module's docstring."""
        if self.renewal is not None:
            self.renewal.poke()  # a renewal due starts in the background
        method_ = method.encode("ascii").upper()
        parsed = _parse_url(url)
        if params:
            parsed = parsed.replace(query=parsed.query + tuple(treq_query_params(params)))
        request_headers = treq_request_headers(self, headers, _stacklevel + 1).copy()
        body, content_type = treq_request_body(self, data, files, json, _stacklevel + 1)
        if content_type is not None:
            request_headers.setRawHeaders(b"Content-Type", [content_type])
        if auth:
            request_headers.setRawHeaders(b"Authorization", [_basic_auth(auth)])
        if not isinstance(cookies, CookieJar):
            cookies = treq_scoped_cookiejar(parsed, cookies)
        treq_merge_cookies(treq_cookiejar(self), cookies)
        follow = self._follow_redirects if allow_redirects is None else allow_redirects
        exchange = defer.Deferred.fromCoroutine(
            self._exchange(method_, parsed, request_headers, body, follow, unbuffered))
        seconds = self._timeout if isinstance(timeout, _Default) else timeout
        if seconds:
            exchange.addTimeout(seconds, reactor or self._reactor)
        return exchange.addCallback(TreqResponse, treq_cookiejar(self))

    def _stranger_agent(self) -> IAgent:
        """The agent for other origins: no client certificate, no cookies."""
        if self._stranger is None:
            self._stranger = self._stranger_factory()
        return self._stranger

    async def _exchange(self, method: bytes, url: EncodedURL, headers: Headers,
                        body: IBodyProducer | None, follow: bool, unbuffered: bool
                        ) -> IResponse:
        """Send the request; follow redirects if asked; read the body unless unbuffered."""
        agent: IAgent = CookieAgent(  # type: ignore[no-untyped-call]
            treq_agent(self), treq_cookiejar(self))
        origin: tuple[str, str, int | None] | None = _origin(url)
        response: IResponse = await agent.request(method, _uri(url), headers, body)
        hops = 0
        while follow and response.code in _REDIRECTS:
            locations = response.headers.getRawHeaders(b"location")
            if not locations:
                break
            discard = _Discard()
            response.deliverBody(discard)  # a redirect's own body is never wanted
            try:
                target = _redirect_target(url, locations[0])
                hops += 1
                if hops > self._max_redirects:
                    raise RedirectRefused(url.to_text(), target.to_text(),
                                          f"more than {self._max_redirects} redirects")
                method, body, headers = _redirected_request(
                    response.code, method, body, headers, url.to_text(), target.to_text())
            except RedirectRefused:
                _stop(discard.transport)  # nothing more is wanted from this connection
                raise
            if _origin(target) != origin:
                # Another origin gets neither the client certificate, nor cookies, nor the
                # caller's headers; once they are left behind they stay behind.
                origin = None
                agent = self._stranger_agent()
                headers = _portable(headers)
            previous = response
            response = await agent.request(method, _uri(target), headers, body)
            response.setPreviousResponse(previous)
            url = target
        if unbuffered:
            return response
        return await _buffered(response, self._max_response_size)


def _redirected_request(code: int, method: bytes, body: IBodyProducer | None, headers: Headers,
                        source: str, target: str
                        ) -> tuple[bytes, IBodyProducer | None, Headers]:
    """The method, body and headers to follow a redirect with: a 303, or a 301/302 answering
    POST, becomes a GET (a HEAD stays a HEAD) without the body; any other redirect of a
    request with a body is refused (the body cannot be sent again)."""
    if code == 303 or (code in (301, 302) and method == b"POST"):
        headers = headers.copy()
        for name in _BODY_HEADERS:
            headers.removeHeader(name)
        return (b"HEAD" if method == b"HEAD" else b"GET"), None, headers
    if body is not None:
        raise RedirectRefused(source, target, "the request body cannot be sent again")
    return method, body, headers


def http_client(
    reactor: Any,
    *,
    cert: Source | None,
    key: Source | None,
    ca: Source | Sequence[x509.Certificate] | None,
    intermediates: Source | None = None,
    pool: HTTPConnectionPool | None = None,
    follow_redirects: bool = False,
    max_redirects: int = DEFAULT_MAX_REDIRECTS,
    timeout: float | None = DEFAULT_TIMEOUT,
    max_response_size: int | None = DEFAULT_MAX_RESPONSE_SIZE,
    passphrase: KeyPassphrase = None,
    renew_url: str | None = None,
    renew_fraction: float = DEFAULT_FRACTION,
    clock: IReactorTime | None = None,
) -> HTTPClient:
    """Return a treq client that presents ``cert`` and trusts servers issued by ``ca``.

    ``cert`` may be a PKCS#12 file (then ``key`` is None); ``passphrase`` (bytes, or a
    ``certsrv.x509.passphrase.Passphrase`` naming where to read it) decrypts it or ``key``.
    With ``renew_url`` (an EST server, e.g. ``twistd certsrv-pki-service --est``), the
    client renews its certificate there once less than ``renew_fraction`` of its validity
    is left by ``clock`` (default: the reactor), replacing the ``cert`` and ``key`` files
    (see ``certsrv.client.renew``); ``client.renewal`` tells how it went.
    """
    policy = client_tls_policy(cert, key, ca, intermediates, passphrase)
    agent = Agent(reactor, contextFactory=policy, pool=pool)  # type: ignore[no-untyped-call]

    def stranger() -> IAgent:
        anonymous = ClientTLSPolicy(None, policy.trust_root)
        return Agent(reactor, contextFactory=anonymous)  # type: ignore[no-any-return]

    client = _CertsrvHTTPClient(agent, stranger, reactor, follow_redirects=follow_redirects,
                                max_redirects=max_redirects, timeout=timeout,
                                max_response_size=max_response_size)
    if renew_url is not None:
        _refuse_protected_renewal(cert, passphrase)
        client.renewal = _auto_renewal(client, policy, renew_url, cert, key, pool, reactor,
                                       clock or reactor, renew_fraction, _ca_certificates(ca))
    return client


def _refuse_protected_renewal(cert: Source | None, passphrase: KeyPassphrase) -> None:
    """Renewal writes a plain PEM key: never over an encrypted key or a PKCS#12 file."""
    pkcs12 = isinstance(cert, str | os.PathLike) and is_pkcs12(
        read_file(os.fspath(cert), "certificate"))
    if passphrase is not None or pkcs12:
        raise ConfigurationError(str(cert), "automatic renewal writes the new key as plain "
                                 "PEM, so it is not offered for an encrypted key or a PKCS#12 "
                                 "file: renew those with certsrv-pki")


def _auto_renewal(client: _CertsrvHTTPClient, policy: ClientTLSPolicy, url: str,
                  cert: Source | None, key: Source | None, pool: HTTPConnectionPool | None,
                  reactor: Any, clock: IReactorTime, fraction: float,
                  issuers: Sequence[x509.Certificate]) -> AutoRenewal:
    """Renewal of the certificate ``client`` presents, at ``url``, into its files."""
    if cert is None or isinstance(cert, bytes) or isinstance(key, bytes):
        raise ConfigurationError("<client certificate>", "renewal replaces the certificate "
                                 "and key files: give them as paths, not bytes")
    target = simplereenroll_url(url)

    async def post(body: bytes) -> tuple[int, bytes | None, bytes]:
        response = await client.post(target, data=body,
                                     headers=Headers({b"content-type": [PKCS10_TYPE]}))
        retry_after = response.headers.getRawHeaders(b"retry-after")
        return response.code, retry_after[0] if retry_after else None, await response.content()

    def adopt(renewed: Renewed) -> None:
        policy.use(ClientCredentials(renewed.certificate, renewed.key, renewed.chain))
        if pool is not None:
            pool.closeCachedConnections()  # idle connections still present the old one

    def current() -> x509.Certificate:
        assert policy.credentials is not None
        return policy.credentials.certificate

    def chain() -> tuple[x509.Certificate, ...]:
        assert policy.credentials is not None
        return policy.credentials.chain

    return AutoRenewal(current=current, post=post, adopt=adopt, cert_path=cert, key_path=key,
                       clock=clock, fraction=fraction, chain=chain, offload=_in_thread(reactor),
                       issuers=issuers)


def _in_thread(reactor: Any) -> Callable[[Callable[[], None]], defer.Deferred[None]] | None:
    """Run file writes in ``reactor``'s thread pool, if it has one (test reactors do not)."""
    if not hasattr(reactor, "getThreadPool"):
        return None
    return lambda work: threads.deferToThreadPool(reactor, reactor.getThreadPool(), work)


class HTTPStatusError(CertsrvError):
    """The server answered with a status other than 2xx; ``body`` is what it said."""

    def __init__(self, code: int, phrase: str, body: bytes = b"", content_type: str = "") -> None:
        super().__init__(code, phrase, body, content_type)
        self.code = code
        self.phrase = phrase
        self.body = body
        self.content_type = content_type

    def __str__(self) -> str:
        return f"{self.code} {_one_line(self.phrase, 100)}".rstrip()


async def _checked(response: IResponse) -> IResponse:
    if 200 <= response.code < 300:
        return response
    body = await _read_body(response, _ERROR_BODY_LIMIT, truncate=True)
    types = response.headers.getRawHeaders(b"content-type") or [b""]
    raise HTTPStatusError(response.code, response.phrase.decode("latin-1"), body,
                          types[0].decode("latin-1"))


def raise_for_status(response: IResponse) -> defer.Deferred[IResponse]:
    """Pass a 2xx response through; otherwise read the body (1 MiB at most), HTTPStatusError."""
    return defer.Deferred.fromCoroutine(_checked(response))


# -- Explanations ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Explanation:
    """Why a request failed: a stable ``code``, a ``sentence`` for people, the raw ``detail``."""

    code: str
    sentence: str
    reason: Reason | None = None  # the server-side Reason the alert corresponds to, if any
    detail: str = ""
    http_status: int | None = None

    def __str__(self) -> str:
        return self.sentence


_REJECTED = "the server rejected the client certificate"
_CLIENT_REJECTED = "this client rejected the server"
_TRUSTED = "a CA this client trusts"

# TLS alert (as OpenSSL words it) -> (code, sentence, Reason), for alerts the server sent.
_ALERTS: dict[str, tuple[str, str, Reason | None]] = {
    "certificate required": (
        "no_certificate", "the server rejected the connection: it requires a client certificate",
        Reason.NO_CERTIFICATE),
    "unknown ca": (
        "unknown_ca",
        f"{_REJECTED}: it was not issued by a CA the server trusts (unknown CA)",
        Reason.UNKNOWN_CA),
    "certificate expired": (
        "expired", f"{_REJECTED}: it has expired (certificate expired)", Reason.EXPIRED),
    "certificate revoked": (
        "revoked", f"{_REJECTED}: it has been revoked (certificate revoked)", Reason.REVOKED),
    "unsupported certificate": (
        "bad_key_usage",
        f"{_REJECTED}: its key usage or extended key usage does not allow client "
        "authentication (unsupported certificate)",
        Reason.BAD_KEY_USAGE),
    "bad certificate": (
        "bad_certificate", f"{_REJECTED}: it is malformed or not valid yet (bad certificate)",
        None),
    "decrypt error": (
        "bad_signature", f"{_REJECTED}: a signature in its chain does not verify (decrypt error)",
        Reason.BAD_SIGNATURE),
    "certificate unknown": (
        "certificate_unknown",
        f"{_REJECTED}: it could not establish the certificate's status, such as its revocation "
        "status, or the chain has no certificate policy it accepts (certificate unknown)",
        Reason.REVOCATION_UNKNOWN),
    "access denied": ("access_denied", f"{_REJECTED}: access denied", None),
    "internal error": (
        "internal_error", f"{_REJECTED}: a check on the server side failed (internal error)",
        Reason.INTERNAL_ERROR),
    "protocol version": (
        "protocol_version",
        "the server rejected the connection: no TLS version is acceptable to both sides "
        "(protocol version)",
        None),
}
_NO_CERT_TLS12 = (
    "no_certificate",
    "the server rejected the connection: it requires a client certificate (handshake failure)",
    Reason.NO_CERTIFICATE,
)
_ALERT = re.compile(r"(?:sslv3|tlsv1|tlsv13|tls) alert ([a-z ]+)")
_NOT_TLS = ("wrong version number", "packet length too long", "record layer failure",
            "unknown protocol", "http request")


def _causes(
    thing: BaseException | Failure, seen: set[int] | None = None
) -> Iterator[BaseException]:
    """Yield ``thing`` and every exception it wraps, depth first."""
    seen = set() if seen is None else seen
    exc = thing.value if isinstance(thing, Failure) else thing
    if not isinstance(exc, BaseException) or id(exc) in seen:
        return
    seen.add(id(exc))
    yield exc
    nested: list[BaseException | Failure] = []
    reasons = getattr(exc, "reasons", None)  # twisted.web._newclient._WrapperException
    if isinstance(reasons, list):
        nested += [r for r in reasons if isinstance(r, (Failure, BaseException))]
    nested += [a for a in exc.args if isinstance(a, (Failure, BaseException))]
    nested += [c for c in (exc.__cause__, exc.__context__) if c is not None]
    for inner in nested:
        yield from _causes(inner, seen)


def _mismatch_sentence(exc: VerificationError) -> str:
    names: list[str] = []
    for mismatch in exc.errors:
        service_id = mismatch.mismatched_id
        value = getattr(service_id, "hostname", None) or getattr(service_id, "ip", None)
        if isinstance(value, bytes):
            value = value.decode("ascii", "replace")
        if value is not None:
            names.append(_one_line(str(value), 100))
    target = f" {', '.join(names)}" if names else " the host in the URL"
    return f"{_CLIENT_REJECTED}: its certificate is not valid for{target} (server name mismatch)"


def _identity_sentence(exc: ServerIdentityError) -> str:
    """The sentence for a server certificate that does not name the URL's host."""
    host = _one_line(exc.host, 100)
    problem = _one_line(exc.problem, 250)
    if problem.startswith("it names "):  # a plain mismatch: the names are in ``detail``
        return f"{_CLIENT_REJECTED}: its certificate is not valid for {host} (server name mismatch)"
    return (f"{_CLIENT_REJECTED}: its certificate is not valid for {host}: {problem} "
            "(server name mismatch)")


def _explain_tls(exc: SSL.Error, sent_certificate: bool | None, trusted: str) -> Explanation:
    text = str(exc).lower()
    match = _ALERT.search(text)
    if match:
        alert = match.group(1).strip()
        if alert in _ALERTS:
            code, sentence, reason = _ALERTS[alert]
        elif alert == "handshake failure" and sent_certificate is not True:
            code, sentence, reason = _NO_CERT_TLS12
        else:
            code, sentence, reason = (
                "handshake_failed", f"the server ended the TLS handshake ({alert})",
                Reason.HANDSHAKE_FAILED)
        return Explanation(code, sentence, reason, str(exc))
    if "certificate verify failed" in text:
        return Explanation(
            "server_untrusted",
            f"{_CLIENT_REJECTED}: its certificate was not issued by {trusted}, or is not valid "
            "(certificate verify failed)",
            None, str(exc))
    if any(marker in text for marker in _NOT_TLS):
        return Explanation(
            "not_tls",
            "the server did not answer with TLS: check that the URL's port serves HTTPS",
            None, str(exc))
    if "unexpected eof" in text:
        return _closed(str(exc))
    return Explanation("tls_error", f"the TLS connection failed ({text})",
                       Reason.HANDSHAKE_FAILED, str(exc))


def _closed(detail: str) -> Explanation:
    return Explanation(
        "connection_closed",
        "the server closed the connection without answering (it may have rejected the client "
        "certificate without saying why)",
        None, detail)


_HIDDEN_ELEMENTS = frozenset({"script", "style", "title"})
_NAME_CHARACTERS = frozenset(string.ascii_lowercase + string.digits)


def _html_text(text: str) -> str:
    """The text of an HTML page without its tags, scripts, styles and title; linear time."""
    lowered = text.translate(_ASCII_LOWER)  # same length as ``text``, unlike str.lower()
    parts: list[str] = []
    position = 0
    # Every search starts where the previous one ended, so each character is looked at a
    # bounded number of times (no regular expression, no backtracking).
    while True:
        start = text.find("<", position)
        if start < 0:
            parts.append(text[position:])
            break
        parts.append(text[position:start])
        end = text.find(">", start + 1)
        if end < 0:
            break  # an unterminated tag: the rest is markup
        name_end = start + 1
        while name_end < end and lowered[name_end] in _NAME_CHARACTERS:
            name_end += 1
        name = lowered[start + 1:name_end]
        parts.append(" ")
        position = end + 1
        if name in _HIDDEN_ELEMENTS:
            close = lowered.find("</" + name, position)
            if close < 0:
                break
            end = lowered.find(">", close)
            if end < 0:
                break
            position = end + 1
    return html.unescape("".join(parts))


_REASON_VALUES = frozenset(r.value for r in Reason)


def _server_reason(body: bytes, content_type: str) -> str:
    """The server's explanation in an error body (JSON, HTML or text): one safe short line."""
    text = body[:_REASON_INPUT].decode("utf-8", "replace").strip()
    if not text:
        return ""
    if "json" in content_type or text.startswith("{"):
        try:
            document = json.loads(text)
        except (ValueError, RecursionError):
            document = None
        if isinstance(document, dict):
            for field in ("sentence", "message", "detail", "reason", "error"):
                value = document.get(field)
                if isinstance(value, str) and value:
                    if field == "reason" and value in _REASON_VALUES:
                        return Reason(value).sentence
                    return _one_line(value)
    if "html" in content_type or text.startswith("<"):
        text = _html_text(text)
    return _one_line(text)


def _explain_status(exc: HTTPStatusError) -> Explanation:
    reason = _server_reason(exc.body, exc.content_type)
    phrase = _one_line(exc.phrase, 100)
    if phrase and reason.lower().startswith(f"{phrase.lower()}:"):
        reason = reason[len(phrase) + 1:].strip()  # "Forbidden: ..." after "403 Forbidden"
    status = f"{exc.code} {phrase}".rstrip()
    if exc.code == 403:
        code, sentence = "forbidden", f"the server refused the request ({status})"
    elif exc.code == 401:
        code = "unauthorized"
        sentence = f"the server did not accept the client's identity ({status})"
    else:
        code, sentence = "http_error", f"the server answered {status}"
    if reason and reason.lower() not in status.lower():
        sentence = f"{sentence}: {reason}"
    return Explanation(code, sentence, None, reason, exc.code)


def _explain_own(exc: BaseException, trusted: str) -> Explanation | None:
    """This client's own verdicts: configuration, the server's certificate, redirects, size."""
    if isinstance(exc, HTTPStatusError):
        return _explain_status(exc)
    if isinstance(exc, ConfigurationError):
        return Explanation("configuration", str(exc), None, str(exc))
    if isinstance(exc, ServerIdentityError):
        return Explanation("server_name_mismatch", _identity_sentence(exc), None,
                           _one_line(str(exc), 500))
    if isinstance(exc, ServerCertificateRejected):
        return Explanation("server_untrusted",
                           f"{_CLIENT_REJECTED}'s certificate: {exc.problem(trusted)}",
                           None, f"OpenSSL verify error {exc.errno} at depth {exc.depth}")
    if isinstance(exc, RedirectRefused):
        return Explanation("redirect_refused", f"this client {exc}", None,
                           _one_line(exc.source, 500))
    if isinstance(exc, ResponseTooLarge):
        return Explanation("response_too_large",
                           f"this client stopped reading: {exc}", None, str(exc))
    return None


def _explain_unreachable(causes: list[BaseException]) -> Explanation | None:
    """A server that refused the connection, a name that did not resolve, or no answer."""
    for exc in causes:
        detail = f"{type(exc).__name__}: {exc}"
        if isinstance(exc, error.ConnectionRefusedError):
            return Explanation("connection_refused",
                               "the server refused the connection (is it running on that port?)",
                               None, detail)
        if isinstance(exc, error.DNSLookupError):
            return Explanation("unknown_host", "the server's host name could not be resolved",
                               None, detail)
        if isinstance(exc, (error.TimeoutError, defer.TimeoutError, defer.CancelledError,
                            error.ConnectingCancelledError, TimeoutError)):
            return Explanation("timeout", "the server did not answer in time (timeout)",
                               None, detail)
    return None


def _explain_lost(causes: list[BaseException]) -> Explanation | None:
    """A connection the server closed, or one that failed otherwise."""
    for exc in causes:
        detail = f"{type(exc).__name__}: {exc}"
        if isinstance(exc, (error.ConnectionLost, error.ConnectionDone)):
            return _closed(detail)
        if isinstance(exc, error.ConnectError):
            return Explanation("connection_failed",
                               f"could not connect to the server ({_one_line(str(exc))})",
                               None, detail)
    return None


def explain(
    failure_or_exception: BaseException | Failure, *, sent_certificate: bool | None = None,
    trusted: str | None = None,
) -> Explanation:
    """Explain a failed request (TLS alert, server identity, network, HTTP status) in a sentence."""
    trusted = trusted or _TRUSTED
    causes = list(_causes(failure_or_exception))
    for exc in causes:
        own = _explain_own(exc, trusted)
        if own is not None:
            return own
    # A check of the server's name comes first: it also makes OpenSSL fail the handshake,
    # with a less helpful "certificate verify failed".
    for exc in causes:
        if isinstance(exc, VerificationError):
            return Explanation("server_name_mismatch", _mismatch_sentence(exc), None, repr(exc))
    tls_errors = [exc for exc in causes if isinstance(exc, SSL.Error)]
    explained = [_explain_tls(exc, sent_certificate, trusted) for exc in tls_errors]
    for explanation in explained:
        if explanation.code not in ("tls_error", "connection_closed"):
            return explanation
    unreachable = _explain_unreachable(causes)
    if unreachable is not None:
        return unreachable
    if explained:
        return explained[0]
    lost = _explain_lost(causes)
    if lost is not None:
        return lost
    top = causes[0] if causes else failure_or_exception
    return Explanation("unknown", f"the request failed ({type(top).__name__}: "
                                  f"{_one_line(str(top))})", None, repr(top))
