"""
A treq client that presents a client certificate, and plain-language explanations of rejections.

treq has no ``cert=`` argument: the certificate goes into the TLS options an
``IPolicyForHTTPS`` hands to the ``Agent``.  When a server rejects the certificate, treq
raises a ``ResponseNeverReceived`` (or ``ResponseFailed``) wrapping an ``OpenSSL.SSL.Error``
that names a TLS alert; :func:`explain` turns that into a sentence and a stable code.
"""

from __future__ import annotations

import html
import json
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from OpenSSL import SSL, crypto
from service_identity import VerificationError
from treq.client import HTTPClient
from treq.content import content
from twisted.internet import defer, error
from twisted.internet._sslverify import IOpenSSLTrustRoot
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from twisted.internet.ssl import (
    Certificate,
    optionsForClientTLS,
    platformTrust,
    trustRootFromCertificates,
)
from twisted.python.failure import Failure
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.iweb import IPolicyForHTTPS, IResponse
from zope.interface import implementer  # type: ignore[import-untyped]

from certsrv._certs import read_file
from certsrv.exceptions import CertsrvError, ConfigurationError, Reason

__all__ = [
    "ClientTLSPolicy",
    "ClientCredentials",
    "Explanation",
    "HTTPStatusError",
    "Source",
    "client_tls_policy",
    "explain",
    "http_client",
    "load_ca_certificates",
    "load_client_credentials",
    "raise_for_status",
]

Source = str | os.PathLike[str] | bytes
"""A file path (``str`` or path-like), or the file's contents (``bytes``, PEM or DER)."""

_ClientKey = (
    ec.EllipticCurvePrivateKey
    | rsa.RSAPrivateKey
    | ed25519.Ed25519PrivateKey
    | ed448.Ed448PrivateKey
)
_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----.*?-----END \1-----\r?\n?", re.DOTALL)
_MAX_REASON = 300


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


def _private_key(name: str, data: bytes) -> _ClientKey | None:
    """Parse the private key in ``data`` (PEM or DER); None if PEM ``data`` holds no key."""
    if b"-----BEGIN" in data:
        blocks = [m.group(0) for m in _PEM_BLOCK.finditer(data)
                  if m.group(1).endswith(b"PRIVATE KEY")]
        if not blocks:
            return None
        data = blocks[0]
        load = serialization.load_pem_private_key
    else:
        load = serialization.load_der_private_key
    try:
        key = load(data, password=None)
    except TypeError:
        # Raised when the key is encrypted and no password was given.
        problem = "the private key is encrypted; give an unencrypted key"
        raise ConfigurationError(name, problem) from None
    except Exception:
        # Never repeat the library's message: keep key material out of errors.
        raise ConfigurationError(name, "not a readable private key (PEM or DER)") from None
    if not isinstance(key, _ClientKey):
        raise ConfigurationError(name, f"unsupported private key type {type(key).__name__}")
    return key


def _public_der(key: object) -> bytes:
    """Return the SubjectPublicKeyInfo DER of a public key."""
    return key.public_bytes(  # type: ignore[attr-defined,no-any-return]
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def load_client_credentials(
    cert: Source, key: Source | None = None, intermediates: Source | None = None
) -> ClientCredentials:
    """Load a client certificate (leaf first, then its chain), its key, and extra intermediates."""
    cert_name, cert_data = _read(cert, "client certificate")
    certificates = _certificates(cert_name, cert_data, "client certificate")
    if key is None:
        key_name, private_key = cert_name, _private_key(cert_name, cert_data)
        if private_key is None:
            problem = "no private key given, and none in the certificate file"
            raise ConfigurationError(cert_name, problem)
    else:
        key_name, key_data = _read(key, "private key")
        private_key = _private_key(key_name, key_data)
        if private_key is None:
            raise ConfigurationError(key_name, "no private key found in the private key file")
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


def _trust_root(ca: Source | Sequence[x509.Certificate] | None) -> IOpenSSLTrustRoot:
    """Turn CA certificates into a Twisted trust root; None means the platform's CAs."""
    if ca is None:
        return platformTrust()  # type: ignore[no-untyped-call,no-any-return]
    certificates = ca if isinstance(ca, Sequence) and not isinstance(ca, (str, bytes)) else (
        load_ca_certificates(ca))
    anchors = [Certificate(crypto.X509.from_cryptography(c))  # type: ignore[no-untyped-call]
               for c in certificates]
    return trustRootFromCertificates(anchors)  # type: ignore[no-untyped-call,no-any-return]


@implementer(IPolicyForHTTPS)
class ClientTLSPolicy:
    """Verify the server against ``trust_root`` and present ``credentials`` (if any) to it."""

    def __init__(
        self, credentials: ClientCredentials | None, trust_root: IOpenSSLTrustRoot
    ) -> None:
        self.credentials = credentials
        self.trust_root = trust_root
        self._creators: dict[tuple[bytes, int], IOpenSSLClientConnectionCreator] = {}

    def creatorForNetloc(self, hostname: bytes, port: int) -> IOpenSSLClientConnectionCreator:
        """Return the TLS connection creator for ``hostname:port``, one per netloc."""
        creator = self._creators.get((hostname, port))
        if creator is None:
            creator = optionsForClientTLS(
                hostname.decode("ascii"),
                trustRoot=self.trust_root,
                extraCertificateOptions=self._certificate_options(),
            )
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
) -> ClientTLSPolicy:
    """Build the HTTPS policy presenting this client certificate; ``ca`` None trusts the system."""
    if cert_path_or_pem is None:
        if key is not None or intermediates is not None:
            problem = "a private key or chain was given without a certificate"
            raise ConfigurationError("<client certificate>", problem)
        credentials = None
    else:
        credentials = load_client_credentials(cert_path_or_pem, key, intermediates)
    return ClientTLSPolicy(credentials, _trust_root(ca))


def http_client(
    reactor: Any,
    *,
    cert: Source | None,
    key: Source | None,
    ca: Source | Sequence[x509.Certificate] | None,
    intermediates: Source | None = None,
    pool: HTTPConnectionPool | None = None,
) -> HTTPClient:
    """Return a treq client that presents ``cert`` and trusts servers issued by ``ca``."""
    policy = client_tls_policy(cert, key, ca, intermediates)
    agent = Agent(reactor, contextFactory=policy, pool=pool)  # type: ignore[no-untyped-call]
    return HTTPClient(agent)  # type: ignore[arg-type]  # Agent implements IAgent


class HTTPStatusError(CertsrvError):
    """The server answered with a status other than 2xx; ``body`` is what it said."""

    def __init__(self, code: int, phrase: str, body: bytes = b"", content_type: str = "") -> None:
        super().__init__(code, phrase, body, content_type)
        self.code = code
        self.phrase = phrase
        self.body = body
        self.content_type = content_type

    def __str__(self) -> str:
        return f"{self.code} {self.phrase}".rstrip()


async def _checked(response: IResponse) -> IResponse:
    if 200 <= response.code < 300:
        return response
    body = await content(response)
    types = response.headers.getRawHeaders(b"content-type") or [b""]
    raise HTTPStatusError(response.code, response.phrase.decode("latin-1"), body,
                          types[0].decode("latin-1"))


def raise_for_status(response: IResponse) -> defer.Deferred[IResponse]:
    """Pass a 2xx response through; otherwise read the body and fail with HTTPStatusError."""
    return defer.Deferred.fromCoroutine(_checked(response))


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
        "certificate_unknown", f"{_REJECTED} (certificate unknown)", None),
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
            names.append(str(value))
    target = f" {', '.join(names)}" if names else " the host in the URL"
    return (f"this client rejected the server: its certificate is not valid for{target} "
            "(server name mismatch)")


def _explain_tls(exc: SSL.Error, sent_certificate: bool | None) -> Explanation:
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
            "this client rejected the server: its certificate was not issued by the CA given "
            "with --ca, or is not valid (certificate verify failed)",
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


def _server_reason(body: bytes, content_type: str) -> str:
    """Extract the server's explanation from an error body: JSON, HTML or plain text."""
    text = body.decode("utf-8", "replace").strip()
    if not text:
        return ""
    if "json" in content_type or text.startswith("{"):
        try:
            document = json.loads(text)
        except ValueError:
            document = None
        if isinstance(document, dict):
            for field in ("sentence", "message", "detail", "reason", "error"):
                value = document.get(field)
                if isinstance(value, str) and value:
                    if field == "reason" and value in {r.value for r in Reason}:
                        return Reason(value).sentence
                    return value[:_MAX_REASON]
    if "html" in content_type or text.startswith("<"):
        text = re.sub(r"(?is)<(script|style|title)\b.*?</\1>", " ", text)
        text = html.unescape(re.sub(r"<[^>]*>", " ", text))
    text = " ".join(text.split())
    return text if len(text) <= _MAX_REASON else text[: _MAX_REASON - 3] + "..."


def _explain_status(exc: HTTPStatusError) -> Explanation:
    reason = _server_reason(exc.body, exc.content_type)
    if exc.phrase and reason.lower().startswith(f"{exc.phrase.lower()}:"):
        reason = reason[len(exc.phrase) + 1:].strip()  # "Forbidden: ..." after "403 Forbidden"
    status = f"{exc.code} {exc.phrase}".rstrip()
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


def explain(
    failure_or_exception: BaseException | Failure, *, sent_certificate: bool | None = None
) -> Explanation:
    """Explain a failed request (TLS alert, server identity, network, HTTP status) in a sentence."""
    causes = list(_causes(failure_or_exception))
    for exc in causes:
        if isinstance(exc, HTTPStatusError):
            return _explain_status(exc)
        if isinstance(exc, ConfigurationError):
            return Explanation("configuration", str(exc), None, str(exc))
    # Our own check of the server's name comes first: it also makes OpenSSL fail the
    # handshake, with a less helpful "certificate verify failed".
    for exc in causes:
        if isinstance(exc, VerificationError):
            return Explanation("server_name_mismatch", _mismatch_sentence(exc), None, repr(exc))
    tls_errors = [exc for exc in causes if isinstance(exc, SSL.Error)]
    explained = [_explain_tls(exc, sent_certificate) for exc in tls_errors]
    for explanation in explained:
        if explanation.code not in ("tls_error", "connection_closed"):
            return explanation
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
    if explained:
        return explained[0]
    for exc in causes:
        detail = f"{type(exc).__name__}: {exc}"
        if isinstance(exc, (error.ConnectionLost, error.ConnectionDone)):
            return _closed(detail)
        if isinstance(exc, error.ConnectError):
            return Explanation("connection_failed", f"could not connect to the server ({exc})",
                               None, detail)
    top = causes[0] if causes else failure_or_exception
    return Explanation("unknown", f"the request failed ({type(top).__name__}: {top})", None,
                       repr(top))
