"""``twistd certsrv-ocsp`` (or ``certsrv-pki-service``): the development PKI's OCSP responder,
answering from its index, and with ``--est``, its EST re-enrollment service over mutual TLS."""

from __future__ import annotations

import datetime
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID
from twisted.application import service
from twisted.internet import threads
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python import usage

from certsrv.exceptions import ConfigurationError, PKIError
from certsrv.pki.est import DEFAULT_MAX_RENEWALS, MAX_CSR_BYTES, Enrollment, est_tree
from certsrv.pki.indexsource import IndexSource
from certsrv.pki.responder import OCSPResource, StatusLookup, StatusRecord
from certsrv.pki.store import CA_CERT, DEFAULT_OCSP_VALIDITY, PKIStore, parse_duration
from certsrv.revocation.decision import Revocation
from certsrv.revocation.ocsp import CertStatus, SigningKey
from certsrv.server.app import protected_site
from certsrv.server.config import ClientCertMode, ServerConfig
from certsrv.server.startup import Listener, PluginOptions, check_endpoint, named_coercions
from certsrv.web.limits import LimitedSite, Limits
from certsrv.x509.certs import keys_match, load_certificates, load_private_key

__all__ = [
    "DEFAULT_LISTEN",
    "DEFAULT_PKI",
    "DEFAULT_VALIDITY",
    "RESPONDER_CERT",
    "RESPONDER_KEY",
    "Options",
    "Responder",
    "index_lookup",
    "load_responder",
    "makeService",
    "make_resource",
    "make_est_factory",
]

PROG = "certsrv-ocsp"
DEFAULT_PKI = "certs"
DEFAULT_LISTEN = "tcp:8080:interface=127.0.0.1"
DEFAULT_VALIDITY = int(DEFAULT_OCSP_VALIDITY.total_seconds())
RESPONDER_CERT = "ocsp.pem"
RESPONDER_KEY = "ocsp.key"
EST_CERT = "server.pem"
EST_KEY = "server.key"

_SIGNING_KEYS = (
    ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey, ed25519.Ed25519PrivateKey,
    ed448.Ed448PrivateKey,
)
_log = Logger(namespace="certsrv.ocsp")


@dataclass(frozen=True)
class Responder:
    """What the responder answers with: the PKI, its CA certificate, the signing cert and key."""

    store: PKIStore
    issuer: x509.Certificate
    certificate: x509.Certificate
    key: SigningKey


def load_responder(directory: str, now: datetime.datetime) -> Responder:
    """Open the PKI in ``directory`` and its delegated responder; raise ConfigurationError."""
    try:
        store = PKIStore.open(directory)
    except PKIError as e:
        raise ConfigurationError(directory, _without_prefix(str(e), directory)) from None
    root = Path(directory)
    issuer_file = str(root / CA_CERT)
    cert_file = str(root / RESPONDER_CERT)
    key_file = str(root / RESPONDER_KEY)
    issuer = load_certificates(issuer_file, "CA certificate")[0]
    certificate = load_certificates(cert_file, "OCSP responder certificate")[0]
    key = load_private_key(key_file)
    if not isinstance(key, _SIGNING_KEYS):
        raise ConfigurationError(key_file, f"unsupported signing key {type(key).__name__}")
    if not keys_match(certificate, key):
        raise ConfigurationError(key_file, f"does not match the certificate in {cert_file}")
    _check_delegation(cert_file, certificate, issuer, issuer_file, now)
    return Responder(store, issuer, certificate, key)


def _without_prefix(message: str, directory: str) -> str:
    """``message`` without a leading ``directory: `` (PKIError already names the path)."""
    prefix = f"{Path(directory)}: "
    return message[len(prefix):] if message.startswith(prefix) else message


def _check_delegation(cert_file: str, certificate: x509.Certificate,
                      issuer: x509.Certificate, issuer_file: str,
                      now: datetime.datetime) -> None:
    """Raise ConfigurationError unless ``certificate`` may sign OCSP answers for ``issuer``."""
    try:
        certificate.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        raise ConfigurationError(cert_file, f"not issued by the CA in {issuer_file}; "
                                            "clients would reject its answers") from None
    try:
        usages = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        usages = x509.ExtendedKeyUsage([])
    if ExtendedKeyUsageOID.OCSP_SIGNING not in usages:
        raise ConfigurationError(cert_file, "lacks the id-kp-OCSPSigning extended key usage")
    start, end = certificate.not_valid_before_utc, certificate.not_valid_after_utc
    if not start <= now <= end:
        state = "expired on" if now > end else "is not valid before"
        day = (end if now > end else start).strftime("%Y-%m-%d %H:%M:%S UTC")
        raise ConfigurationError(cert_file, f"OCSP responder certificate {state} {day}; "
                                            "run `certsrv-pki renew ocsp`")


def index_lookup(store: PKIStore, clock: IReactorTime) -> StatusLookup:
    """A status lookup answering from ``store``'s index as it is at each call."""

    def status_of(serial: int) -> StatusRecord:
        now = datetime.datetime.fromtimestamp(clock.seconds(), datetime.UTC)
        record = store.status_of(serial, now)
        return CertStatus(record.ocsp_status), record.revocation_time, record.reason

    return status_of


def _optional_duration(text: str) -> datetime.timedelta:
    """Parse --est-validity: a duration such as 8h or 30d."""
    return parse_duration(text)


_optional_duration.coerceDoc = "A duration such as 8h or 30d."  # type: ignore[attr-defined]


def _seconds(text: str) -> int:
    """Parse --validity: seconds, or a duration such as 90s, 5m, 1h."""
    return int(parse_duration(text, bare_unit="s").total_seconds())


_seconds.coerceDoc = "Seconds, or a duration such as 90s, 5m, 1h."  # type: ignore[attr-defined]


def make_resource(config: Options) -> OCSPResource:
    """The OCSP resource that ``config`` describes."""
    responder: Responder = config["responder"]
    clock = config.clock
    assert clock is not None
    return OCSPResource(
        responder.issuer, responder.certificate, responder.key,
        index_lookup(responder.store, clock), clock,
        validity=datetime.timedelta(seconds=config["validity"]),
    )


class Options(PluginOptions):
    """Options of ``twistd certsrv-ocsp``."""

    prog = PROG

    synopsis = ("[--pki DIR] [--listen ENDPOINT]... [--validity DURATION] [--est ENDPOINT]... "
                "[--est-max-renewals N] [--est-validity DURATION]")
    longdesc = (
        "Answer OCSP requests (RFC 6960, POST and GET) about the certificates of a "
        "certsrv-pki directory, at the root path, so that certificates issued after "
        "`certsrv-pki init --ocsp-url http://127.0.0.1:8080/` point here. Answers are signed "
        "with the directory's delegated responder (ocsp.pem, ocsp.key) and come from its "
        "index.json, which is re-read whenever it changes: `certsrv-pki revoke` takes effect "
        "on the next request, without a restart; a server that cached a 'good' answer sees "
        "the revocation when that answer expires (--validity, 5 minutes by default). GET "
        "answers carry Cache-Control and Expires (RFC 5019). Serials not in the index are "
        "'unknown'. "
        "Restart after `certsrv-pki renew ocsp` or `init --force`. The default --listen is "
        "loopback only; --listen tcp:8080 serves every interface. "
        "With --est tcp:PORT:interface=127.0.0.1, it also serves EST (RFC 7030) over TLS with "
        "the directory's server.pem: /.well-known/est/cacerts to anyone, and "
        "/.well-known/est/simplereenroll to a client presenting its current certificate "
        "(issued by the CA, unexpired, not revoked in index.json), which gets a certificate "
        "for a new key with the same subject and SANs."
    )
    optParameters: list[list[Any]] = named_coercions([
        ["pki", None, DEFAULT_PKI,
         "The certsrv-pki directory (ca.pem, index.json, ocsp.pem, ocsp.key)."],
        ["validity", None, DEFAULT_VALIDITY,
         "From thisUpdate to nextUpdate in each answer: how long servers may keep using it, "
         "so how late they may learn of a revocation.", _seconds],
        ["est-max-renewals", None, DEFAULT_MAX_RENEWALS,
         "EST re-enrollments allowed per subject and SANs per hour; more get 429 with "
         "Retry-After.", int],
        ["est-validity", None, None,
         "Validity of certificates EST issues (default: that of the certificate renewed), "
         "e.g. 8h.", _optional_duration],
    ])

    def __init__(self) -> None:
        super().__init__()
        self["listen"] = []
        self["est"] = []
        self.clock: IReactorTime | None = None
        self.est: Any = None  # the EST listeners' TLS factory

    def opt_listen(self, description: str) -> None:
        """Plain-HTTP endpoint to listen on; repeatable (default tcp:8080:interface=127.0.0.1)."""
        check_endpoint("--listen", description)
        self["listen"].append(description)

    def opt_est(self, description: str) -> None:
        """TCP endpoint to serve EST on over TLS; repeatable (e.g. tcp:8443:interface=127.0.0.1)."""
        if description.split(":", 1)[0] in ("ssl", "tls"):
            raise usage.UsageError(f"--est {description}: give a tcp: endpoint; certsrv adds "
                                   "TLS itself (ssl: endpoints cannot ask for client "
                                   "certificates)")
        check_endpoint("--est", description)
        self["est"].append(description)

    def postOptions(self) -> None:
        """Check values, then open the PKI and its responder; a problem stops startup."""
        if self["validity"] < 1:
            raise usage.UsageError("--validity must be at least 1 second")
        if self["est-max-renewals"] < 1:
            raise usage.UsageError("--est-max-renewals must be at least 1")
        if not self["listen"]:
            self["listen"] = [DEFAULT_LISTEN]
        if self.clock is None:
            from twisted.internet import reactor

            self.clock = reactor  # type: ignore[assignment]
        assert self.clock is not None
        now = datetime.datetime.fromtimestamp(self.clock.seconds(), datetime.UTC)
        # A ConfigurationError reaches the caller; under twistd it becomes one line, exit 1.
        self["responder"] = load_responder(self["pki"], now)
        if self["est"]:
            enrollment = Enrollment(self["responder"].store, self.clock,
                                    max_renewals=self["est-max-renewals"],
                                    validity=self["est-validity"], offload=in_thread)
            self.est = make_est_factory(enrollment, self.clock)


# A CSR is a few hundred bytes; the EST listener takes no more than one of the largest.
EST_LIMITS = Limits(max_body_bytes=MAX_CSR_BYTES, max_connections=1_000)


def make_est_factory(enrollment: Enrollment, clock: IReactorTime) -> Any:
    """The EST listeners' TLS factory: ``est_tree`` behind certsrv's gate, with the PKI's
    server certificate, its CA, client certificates optional (``cacerts`` is public) and
    revocation decided by the index; a ConfigurationError if a file is unusable."""
    root = enrollment.store.path
    config = ServerConfig(cert=str(root / EST_CERT), key=str(root / EST_KEY),
                          ca=(str(root / CA_CERT),), client_cert=ClientCertMode.OPTIONAL)
    return protected_site(est_tree(enrollment), config, limits=EST_LIMITS, clock=clock,
                          require_certificate=False,
                          revocation=Revocation([IndexSource(enrollment.store, clock,
                                                             offload=enrollment.offload)]))


def in_thread(work: Callable[[], Any]) -> Deferred[Any]:
    """Run ``work`` (reading or writing the PKI directory) in the reactor's thread pool."""
    from twisted.internet import reactor

    return threads.deferToThreadPool(reactor, reactor.getThreadPool(),  # type: ignore[attr-defined,arg-type]
                                     work)


class _Announcement(service.Service):
    """Logs, once the service starts, what the responder answers for and how."""

    def __init__(self, config: Options) -> None:
        self._config = config

    def startService(self) -> None:
        """Log the issuer, the responder, the index and the validity."""
        super().startService()
        responder: Responder = self._config["responder"]
        _log.info(
            "answering OCSP requests for {issuer} from {index}, signed by {responder}, "
            "valid {validity} s",
            issuer=responder.issuer.subject.rfc4514_string(),
            index=str(responder.store.path / "index.json"),
            responder=responder.certificate.subject.rfc4514_string(),
            validity=self._config["validity"],
        )


# The limits of certsrv's own listeners; an OCSP request is a few hundred bytes.
OCSP_LIMITS = Limits(max_body_bytes=65_536, max_connections=1_000)


def make_site(config: Options, limits: Limits = OCSP_LIMITS) -> LimitedSite:
    """The responder's site: the OCSP resource under certsrv's listener limits."""
    return LimitedSite(make_resource(config), limits=limits, name="OCSP")


def makeService(config: Options) -> service.IService:
    """One plain-HTTP listener per --listen, all serving the same OCSP resource at ``/``."""
    site = make_site(config)
    parent = service.MultiService()
    _Announcement(config).setServiceParent(parent)
    for description in config["listen"]:
        Listener(PROG, "--listen", description, site).setServiceParent(parent)
    for description in config["est"]:
        Listener(PROG, "--est", description, config.est).setServiceParent(parent)
    return parent
