"""Turning file names and option values into checked TLS settings (used at start and reload)."""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from cryptography import x509
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from certsrv.access.policy import Policy, load_policy
from certsrv.exceptions import ConfigurationError
from certsrv.revocation.crlfetch import CRLFetchSettings
from certsrv.revocation.crlfiles import CRLFiles, FileCRL, load_crl_files
from certsrv.revocation.decision import Checker, Revocation, Scope
from certsrv.revocation.ocspcheck import OCSPSettings
from certsrv.tls.context import ClientCertMode, TLSSettings, chain_problems
from certsrv.tls.verify import AllowedTypes, ClientVerifier, parse_pin
from certsrv.x509.certs import (
    PrivateKey,
    exposed_mode,
    is_pkcs12,
    load_certificates,
    load_private_key,
    parse_certificates,
    parse_pkcs12,
    read_file,
    reading_from,
)
from certsrv.x509.passphrase import Passphrase
from certsrv.x509.policies import PolicySettings

# ClientCertMode: the type of ServerConfig.client_cert, for callers above the tls layer.
__all__ = ["DEFAULT_KEY", "ClientCertMode", "ServerConfig", "load_pins"]

DEFAULT_KEY = "certs/server.key"

_log = Logger(namespace="certsrv.config")


@dataclass(frozen=True)
class ServerConfig:
    """The file names and values a server is configured with; ``load`` reads and checks them."""

    cert: str
    key: str | None  # None: DEFAULT_KEY, or the key in a PKCS#12 ``cert``
    ca: tuple[str, ...] = ()
    intermediates: tuple[str, ...] = ()
    pins: tuple[str, ...] = ()
    pins_file: str | None = None
    client_cert: ClientCertMode = ClientCertMode.REQUIRE
    allowed_types: AllowedTypes = AllowedTypes.CHAINED
    verify_depth: int = 4
    min_tls: str = "1.2"
    http2: bool = True
    crls: tuple[str, ...] = ()
    crl_check_chain: bool = False
    fail_open: bool = False
    ocsp: OCSPSettings = OCSPSettings()
    policy: str | None = None
    crl_fetch: CRLFetchSettings = CRLFetchSettings()
    log_accepted: bool = True
    # Decrypts an encrypted key or PKCS#12 file: how to read the files, not what they say.
    passphrase: Passphrase | None = field(default=None, compare=False)
    policies: PolicySettings = PolicySettings()

    def key_files(self) -> tuple[str, ...]:
        """The key file (DEFAULT_KEY when none is named, though a PKCS#12 ``cert`` leaves it
        unread) and the passphrase file, if any: what ``load`` reads besides ``cert``."""
        key = self.key or DEFAULT_KEY
        source = self.passphrase.path if self.passphrase is not None else None
        return (key,) if source is None else (key, source)

    def files(self) -> tuple[str, ...]:
        """Every file ``load`` reads, once each: what the reloader watches."""
        named = (self.cert, *self.key_files(), *(self.ca if self.allowed_types.chained else ()),
                 *self.intermediates, *self.crls,
                 *(p for p in (self.pins_file, self.policy) if p is not None))
        return tuple(dict.fromkeys(named))

    def load(self, clock: IReactorTime, revocation: Revocation | None = None,
             files: Mapping[str, bytes | OSError] | None = None
             ) -> tuple[TLSSettings, ClientVerifier]:
        """Read every file, check it, and build the settings and the verifier; or raise.

        ``revocation`` holds the network sources (OCSP, fetched CRLs), kept across reloads;
        the ``--crl`` files are read here, each time. ``files`` (keyed by ``files()``) holds
        their contents as already read, instead of the disk."""
        if files is None:
            return self._load(clock, revocation)
        with reading_from(files):
            return self._load(clock, revocation)

    def _load(self, clock: IReactorTime, revocation: Revocation | None
              ) -> tuple[TLSSettings, ClientVerifier]:
        now = clock.seconds()
        chain, key = self._load_server_identity(now)
        roots = tuple(self._load_roots(now))
        intermediates = tuple(c for path in self.intermediates
                              for c in _load_cas(path, "intermediates", now, root=False))
        pins = self._load_pins()
        crls = tuple(self._load_crls(roots, intermediates, now))
        settings = self._settings(chain, key, roots, intermediates)
        access = self._load_access()
        sources: list[Checker] = []
        if self.crls:  # even if every file was ignored: then no issuer has a CRL
            mode = Scope.CHAIN if self.crl_check_chain else Scope.LEAF
            sources.append(CRLFiles(crls, mode, clock))
        if revocation is not None:
            sources.extend(revocation.checkers)
        verifier = ClientVerifier(clock, self.allowed_types, frozenset(pins),
                                  fail_open=self.fail_open,
                                  revocation=Revocation(sources) if sources else None,
                                  access=access, settings=settings,
                                  log_accepted=self.log_accepted, policies=self.policies)
        return settings, verifier

    def _load_server_identity(self, now: float) -> tuple[list[x509.Certificate], PrivateKey]:
        """The server certificate, its chain and its key: from ``cert`` and ``key``, or all
        three from ``cert`` when it is a PKCS#12 file."""
        data = read_file(self.cert, "server certificate")
        if self.passphrase is not None and self.passphrase.path is not None:
            _warn_if_exposed(self.passphrase.path, "the passphrase of the server's private key")
        if not is_pkcs12(data):
            key_path = self.key or DEFAULT_KEY
            chain = self._checked_chain(parse_certificates(self.cert, data, "server certificate"),
                                        now)
            key = load_private_key(key_path, self.passphrase)
            _warn_if_exposed(key_path)
            return chain, key
        if self.key is not None:
            raise ConfigurationError(self.key, f"{self.cert} (--cert) is a PKCS#12 file, which "
                                               "holds the key; give no --key")
        bundle = parse_pkcs12(self.cert, data, self.passphrase)
        _warn_if_exposed(self.cert)
        chain = self._checked_chain([bundle.certificate, *bundle.chain], now)
        return chain, bundle.key  # type: ignore[return-value]

    def _checked_chain(self, chain: list[x509.Certificate], now: float
                       ) -> list[x509.Certificate]:
        """The server certificate and its chain, in order and valid now."""
        problems = chain_problems(chain)
        if problems:
            raise ConfigurationError(self.cert, problems[0])
        leaf = chain[0]
        if now > leaf.not_valid_after_utc.timestamp():
            raise ConfigurationError(self.cert, "the server certificate expired on "
                                                f"{_day(leaf.not_valid_after_utc)}")
        if now < leaf.not_valid_before_utc.timestamp():
            raise ConfigurationError(self.cert, "the server certificate is not valid before "
                                                f"{_day(leaf.not_valid_before_utc)}")
        return chain

    def _load_pins(self) -> set[str]:
        pins = set(self.pins)
        if self.pins_file is not None:
            pins |= load_pins(self.pins_file)
        if self.allowed_types.self_signed and not pins:
            raise ConfigurationError("--allowed-types", f"{self.allowed_types.value} accepts "
                                     "self-signed certificates only when pinned: give --pin or "
                                     "--pins")
        return pins

    def _settings(self, chain: Sequence[x509.Certificate], key: PrivateKey,
                  roots: tuple[x509.Certificate, ...],
                  intermediates: tuple[x509.Certificate, ...]) -> TLSSettings:
        try:
            return TLSSettings(
                certificate=chain[0],
                private_key=key,
                chain=tuple(chain[1:]),
                roots=roots,
                intermediates=intermediates,
                client_cert=self.client_cert,
                verify_depth=self.verify_depth,
                min_tls=self.min_tls,
            )
        except ConfigurationError as e:
            if e.source == "--key":
                raise ConfigurationError(self.key or self.cert, e.problem) from None
            raise

    def _load_access(self) -> Policy | None:
        """The ``--policy`` access rules, if any."""
        if self.policy is None:
            return None
        access = load_policy(self.policy)
        if self.client_cert is ClientCertMode.REQUIRE:
            public = [r.name for r in access.rules if r.public]
            if public:
                _log.warn("{path}: public rules {rules} admit requests without a certificate, "
                          "but --client-cert require lets no such client connect; use "
                          "--client-cert optional", path=self.policy, rules=public)
        return access

    def _load_crls(self, roots: Sequence[x509.Certificate],
                   intermediates: Sequence[x509.Certificate], now: float) -> list[FileCRL]:
        crls = load_crl_files(self.crls, roots, intermediates, now, _log)
        for crl in crls:
            expires = crl.index.next_update
            if expires is not None and now > expires:
                _log.error("{path}: CRL of {issuer} is past its nextUpdate ({day}); "
                           "certificates it covers are {outcome} until a fresh CRL arrives",
                           path=crl.path, issuer=crl.crl.issuer.rfc4514_string(),
                           day=_day(crl.crl.next_update_utc),  # type: ignore[arg-type]
                           outcome="accepted (--revocation-fail open)" if self.fail_open
                           else "rejected (--revocation-fail closed)",
                           reason="crl_expired")
        return crls

    def _load_roots(self, now: float) -> list[x509.Certificate]:
        if not self.allowed_types.chained:
            return []
        if not self.ca:
            raise ConfigurationError("--ca", "no trusted CA given; certsrv needs --ca FILE to "
                                             "validate client certificates")
        return [c for path in self.ca for c in _load_cas(path, "CA", now, root=True)]


def _load_cas(path: str, what: str, now: float, *, root: bool) -> list[x509.Certificate]:
    certs = load_certificates(path, what)
    usable = []
    for cert in certs:
        name = cert.subject.rfc4514_string()
        try:
            constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        except x509.ExtensionNotFound:
            constraints = None
        if constraints is not None and not constraints.ca:
            raise ConfigurationError(path, f"{name!r} is not a CA certificate "
                                           "(basicConstraints CA=false)")
        if root and cert.issuer != cert.subject:
            _log.warn("{path}: {name!r} is not self-signed; OpenSSL only anchors chains at "
                      "self-signed roots, so pass it with --intermediates and add its root",
                      path=path, name=name)
        if now > cert.not_valid_after_utc.timestamp():
            _log.warn("{path}: {what} {name!r} expired on {day}; certificates chaining to it "
                      "will be rejected", path=path, what=what, name=name,
                      day=_day(cert.not_valid_after_utc))
        usable.append(cert)
    return usable


def _warn_if_exposed(path: str, what: str = "the server's private key") -> None:
    mode = exposed_mode(path)
    if mode is not None:
        _log.warn("{path}: {what} is readable by other users (mode {mode}); chmod 600 it",
                  path=path, what=what, mode=oct(mode), reason="key_exposed")


def load_pins(path: str) -> set[str]:
    """Read pinned fingerprints: one hex SHA-256 per line (# comments), or PEM certificates."""
    data = read_file(path, "pins")
    if b"-----BEGIN CERTIFICATE-----" in data:
        from certsrv.x509.certs import sha256_hex

        return {sha256_hex(c) for c in load_certificates(path, "pins")}
    pins = set()
    for number, raw in enumerate(data.decode("utf-8", "replace").splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if line:
            pins.add(parse_pin(line, f"{path}:{number}"))
    if not pins:
        raise ConfigurationError(path, "pins file contains no fingerprint")
    return pins


def parse_pins(values: Sequence[str]) -> tuple[str, ...]:
    """Normalise ``--pin`` values."""
    return tuple(parse_pin(v) for v in values)


def _day(moment: datetime.datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")
