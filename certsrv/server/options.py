"""``twistd certsrv``: the plugin's options and the service they describe."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from twisted.application import service
from twisted.internet import defer
from twisted.internet.interfaces import IProtocolFactory, IReactorTime
from twisted.logger import Logger
from twisted.python import usage
from twisted.web import resource

from certsrv.forwarded.headers import TrustedProxies
from certsrv.forwarded.trust import Forwarding, forwarding
from certsrv.revocation.crlfetch import CRLFetchSettings
from certsrv.revocation.decision import Revocation, Scope
from certsrv.revocation.ocspcheck import OCSPSettings, check_responder_url
from certsrv.server.apploader import load_app
from certsrv.server.build import build_site, revocation_for
from certsrv.server.config import ServerConfig, parse_pins
from certsrv.server.endpoints import (
    PortInUse,
    ProxyHeaderFactory,
    TCPAddress,
    check_free,
    loopback_by_default,
    parse_tcp,
    proxy_senders,
    split_proxy,
)
from certsrv.server.lifecycle import Drainer, ExpiryWatch, Lingering
from certsrv.server.metrics import (
    CacheCollector,
    Metrics,
    admin_site,
    count_lookups,
)
from certsrv.server.reload import Reloader, in_threads
from certsrv.server.startup import (
    Listener,
    PluginOptions,
    WorkerTag,
    check_endpoint,
    named_coercions,
    startup_error,
)
from certsrv.server.watch import Snapshot, take
from certsrv.server.workers import (
    ParentWatch,
    ReadyNotice,
    ReusePortService,
    Supervisor,
    worker_argv,
)
from certsrv.tls.context import ClientCertMode, Current, ServerTLS, TLSFactory, TLSSettings
from certsrv.tls.verify import AllowedTypes, ClientVerifier
from certsrv.web.site import Limits
from certsrv.x509.passphrase import Passphrase
from certsrv.x509.policies import ANY_POLICY, PolicySettings, check_oid

__all__ = ["Options", "makeService"]

_log = Logger(namespace="certsrv.options")

_PASSPHRASE_HINT = "give --key-passphrase-env NAME or --key-passphrase-file PATH"


def _choice(name: str, value: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise usage.UsageError(f"--{name} must be one of {', '.join(choices)} (got {value!r})")
    return value


class Options(PluginOptions):
    """Options of ``twistd certsrv``."""

    prog = "certsrv"
    synopsis = "[options]"
    longdesc = (
        "Serve /secure over HTTPS to clients that present a valid X.509 certificate. "
        "Chain, validity period and key usage are checked on every full handshake; TLS "
        "session resumption is off so no connection skips validation. A self-signed client "
        "certificate is only ever accepted when --allowed-types admits it AND its SHA-256 "
        "fingerprint is pinned with --pin or --pins."
    )
    optParameters: list[list[Any]] = named_coercions([
        ["cert", None, "certs/server.pem",
         "The server's certificate (PEM), optionally followed by its chain; or a PKCS#12 "
         "file (.p12/.pfx, told by its content) holding certificate, chain and key."],
        ["key", None, None,
         "The server's private key: PEM or DER, encrypted or not (default: certs/server.key; "
         "none with a PKCS#12 --cert)."],
        ["key-passphrase-env", None, None,
         "Read the passphrase of an encrypted --key (or PKCS#12 --cert) from this environment "
         "variable, again at each reload."],
        ["key-passphrase-file", None, None,
         "Read that passphrase from the first line of this file, again at each reload. "
         "Without either, twistd asks on the terminal at startup (not with --workers, not "
         "without a terminal) and keeps the answer in memory for reloads."],
        ["client-cert", None, "require",
         "require: the handshake fails without a valid client certificate; optional: it "
         "completes without one (a certificate sent is still fully validated) and /secure "
         "answers 403."],
        ["allowed-types", None, "chained",
         "chained: certificates issued by a --ca root; selfsigned: only pinned self-signed "
         "certificates; all: both. Self-signed certificates always need a pin."],
        ["policy", None, None,
         "A TOML file of access rules: which certificates may reach which paths (see "
         "docs/policy-example.toml). Default deny once given; re-read on SIGHUP."],
        ["pins", None, None,
         "A file of pinned SHA-256 fingerprints (one hex value per line, # comments) or of "
         "PEM certificates whose fingerprints are pinned."],
        ["verify-depth", None, 4, "Most intermediate CAs allowed between client and root.",
         int],
        ["handshake-timeout", None, 10.0,
         "Seconds a peer has to complete the TLS handshake.", float],
        ["idle-timeout", None, 60.0, "Seconds an idle keep-alive connection stays open.", float],
        ["header-timeout", None, 20.0,
         "Seconds a client has to send a request line and headers, from their first byte "
         "(then 408 and close).", float],
        ["body-timeout", None, 60.0,
         "Seconds a client has to send a request body in full (then 408).", float],
        ["max-connections", None, 10_000,
         "Most connections held at once; beyond it new ones are closed at once.", int],
        ["max-header-bytes", None, 16_384, "Largest request line plus headers, in bytes.", int],
        ["max-headers", None, 100, "Most header lines in one request.", int],
        ["max-body-bytes", None, 1_048_576,
         "Largest request body, held in memory; a larger one gets 413 and is never stored.",
         int],
        ["workers", None, "1",
         "Server processes sharing the listening port(s): a number, or auto for one per CPU "
         "core. The parent supervises them: restarts a crashed worker, forwards SIGHUP and "
         "SIGTERM. Needs tcp:/tcp6: --listen descriptions; with --metrics, worker i serves "
         "its metrics on the --metrics port + i."],
        # Internal (the supervisor gives it to its workers), so not listed by --help.
        ["worker-index", None, None, "(internal) this process is worker number N.", int],
        ["access-log", None, "on",
         "on: one combined-format access log line per request, and a certsrv.policy line "
         "for each request --policy lets through; off: neither (both are still emitted as "
         "events; refusals are always written)."],
        ["log-accepted", None, "on",
         "on: a log line for every accepted client certificate; off: the accepted event is "
         "still emitted (metrics count it) but not written as text. Rejections are always "
         "written."],
        ["drain-timeout", None, 30.0,
         "On SIGTERM, seconds to let requests in flight finish before exiting.", float],
        ["drain-delay", None, 0.0,
         "On SIGTERM, seconds during which /healthz already answers 503 but new connections "
         "are still accepted and served, before the drain begins: time for a load "
         "balancer's health check to take the node out (more than its check interval).",
         float],
        ["metrics", None, None,
         "An admin endpoint serving Prometheus /metrics and /healthz over plain HTTP, e.g. "
         "tcp:9100. A tcp: endpoint without interface= listens on 127.0.0.1 only (tcp6: on "
         "::1); add interface=0.0.0.0 to expose it. Same limits as --listen, at most 32 "
         "connections."],
        ["watch-interval", None, 5.0,
         "Seconds between looks at the configuration's files (--cert, --key, --ca, "
         "--intermediates, --crl, --pins, --policy); a changed one reloads them all "
         "(0: only on SIGHUP, which also drops cached revocation answers).", float],
        ["min-tls", None, "1.2", "Lowest TLS version accepted: 1.2 or 1.3."],
        ["http2", None, "on", "on: offer HTTP/2 (ALPN h2) besides HTTP/1.1; off: HTTP/1.1 only."],
        ["crl-check", None, "leaf",
         "With --crl: leaf checks the client certificate only; chain checks every CA too "
         "(each issuer then needs a CRL)."],
        ["crl-fetch", None, "off",
         "on: also fetch CRLs from the http:// CRL distribution points of validated client "
         "certificates (their chain too with --crl-check chain), cached until nextUpdate and "
         "refreshed ahead; never blocking, same --revocation-fail rules as OCSP."],
        ["crl-fetch-timeout", None, 10.0, "Seconds to wait for a CRL download.", float],
        ["ocsp", None, "leaf",
         "off; leaf: ask the OCSP responder named in the client certificate (or "
         "--ocsp-responder) about it; chain: about every CA of its chain too. Lookups never "
         "block: a request waits for the answer, other clients do not."],
        ["ocsp-responder", None, None, "An http:// OCSP responder URL to use instead of the "
         "certificates' Authority Information Access."],
        ["ocsp-timeout", None, 5.0, "Seconds to wait for an OCSP responder.", float],
        ["ocsp-nonce", None, "prefer",
         "off; prefer: send a nonce, and a nonce in the answer must match; require: the "
         "answer must carry the matching nonce."],
        ["ocsp-skew", None, 300.0, "Seconds of clock skew allowed for OCSP thisUpdate and "
         "nextUpdate.", float],
        ["ocsp-max-age", None, 3600.0, "Longest time an OCSP answer is cached, in seconds "
         "(it is also never used past its nextUpdate).", float],
        ["app", None, None,
         "Serve this twisted.web resource instead of /secure, given by dotted name: an "
         "IResource, a Klein app, or a callable returning either (as twistd web --class). "
         "Its module is imported from PYTHONPATH or an --app-path directory. "
         "Only requests with a verified certificate (or admitted by --policy) reach it."],
        ["forwarded-cert", None, None,
         "Accept the client certificate from a TLS-terminating proxy in --trusted-proxy, "
         "in this format: rfc9440 (Client-Cert headers), nginx ($ssl_client_escaped_cert) or "
         "xfcc (Envoy). certsrv validates it itself; from other peers the headers are removed."],
        ["forwarded-cert-header", None, None,
         "The header carrying the certificate, when not the format's usual one."],
        ["revocation-fail", None, "closed",
         "When revocation status cannot be learnt (no valid CRL for an issuer, an expired CRL, "
         "OCSP responder down): closed rejects the client, open admits it and logs a warning."],
    ])

    optFlags: list[list[Any]] = [
        ["ocsp-require", None, "Treat a certificate naming no OCSP responder as status "
         "unknown (see --revocation-fail) instead of accepting it."],
        ["require-explicit-policy", None, "Refuse a client chain that is valid under none of "
         "the --policy-oid policies (RFC 5280 initial-explicit-policy)."],
        ["inhibit-policy-mapping", None, "Ignore the CAs' policy mappings (RFC 5280 "
         "initial-policy-mapping-inhibit)."],
        ["inhibit-any-policy", None, "Do not let a CA's anyPolicy stand for every policy (RFC "
         "5280 initial-any-policy-inhibit)."],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["listen"] = []
        self["ca"] = []
        self["intermediates"] = []
        self["pin"] = []
        self["crl"] = []
        self["policy-oid"] = []
        self["trusted-proxy"] = []
        self["trusted-proxy-cert"] = []
        self["proxy-protocol-from"] = []
        self["app-path"] = []
        self.clock: IReactorTime | None = None
        self.log_tag: WorkerTag | None = None

    def getUsage(self, width: int | None = None) -> str:
        """The --help text, without the internal --worker-index."""
        every = self.longOpt
        self.longOpt = [name for name in every if name != "worker-index="]
        try:
            return super().getUsage(width)
        finally:
            self.longOpt = every

    def opt_listen(self, description: str) -> None:
        """An endpoint to listen on, e.g. tcp:8443 (repeatable; default tcp:8443); TLS is ours."""
        if description.split(":", 1)[0].lower() in ("ssl", "tls", "le", "lets"):
            raise usage.UsageError(
                "--listen takes a plain endpoint such as tcp:8443 (certsrv adds TLS itself; "
                "Twisted's ssl: endpoints cannot require client certificates)")
        check_endpoint("--listen", description)
        self["listen"].append(description)

    def opt_app_path(self, directory: str) -> None:
        """A directory to import --app from: put before sys.path (repeatable; first wins)."""
        if not os.path.isdir(directory):
            raise usage.UsageError(f"--app-path {directory}: not a directory")
        self["app-path"].append(os.path.abspath(directory))

    def opt_ca(self, path: str) -> None:
        """A PEM file of trusted root CA certificates (repeatable; default certs/ca.pem)."""
        self["ca"].append(path)

    def opt_intermediates(self, path: str) -> None:
        """A PEM file of untrusted intermediate CAs used to complete client chains."""
        self["intermediates"].append(path)

    def opt_crl(self, path: str) -> None:
        """A CRL file (PEM/DER) of a trusted CA (repeatable; re-read on change and SIGHUP)."""
        self["crl"].append(path)

    def opt_policy_oid(self, oid: str) -> None:
        """A certificate policy OID client chains are accepted under (repeatable; default
        anyPolicy: all; RFC 5280 user-initial-policy-set)."""
        try:
            self["policy-oid"].append(check_oid(oid))
        except ValueError as e:
            raise usage.UsageError(f"--policy-oid: {e}") from None

    def opt_trusted_proxy(self, cidr: str) -> None:
        """A proxy address or CIDR whose --forwarded-cert certificates count (repeatable)."""
        self["trusted-proxy"].append(cidr)

    def opt_trusted_proxy_cert(self, fingerprint: str) -> None:
        """SHA-256 of a certificate a trusted proxy must authenticate with (repeatable)."""
        self["trusted-proxy-cert"].append(fingerprint)

    def opt_proxy_protocol_from(self, cidr: str) -> None:
        """A balancer's address or CIDR: only these peers may open a haproxy: --listen
        connection (its PROXY header names the client); repeatable, default any peer."""
        self["proxy-protocol-from"].append(cidr)

    def opt_pin(self, fingerprint: str) -> None:
        """Pin a self-signed client certificate by SHA-256 fingerprint (hex; repeatable)."""
        self["pin"].append(fingerprint)

    config: ServerConfig
    settings: TLSSettings
    verifier: ClientVerifier
    revocation: Revocation | None
    files: Snapshot
    limits: Limits
    forwarded: Forwarding | None
    proxy_senders: TrustedProxies | None
    app: resource.IResource | None
    workers: int
    addresses: list[TCPAddress]
    argv: list[str]

    def parseOptions(self, options: list[str] | None = None) -> None:
        """Parse, remembering the arguments (workers are started with the same ones)."""
        self.argv = list(options) if options is not None else sys.argv[1:]
        super().parseOptions(options)
        if self.parent is not None and self["worker-index"] is not None:
            # A worker under twistd: its log lines say which worker wrote them.
            from twisted.logger import globalLogPublisher

            self.log_tag = WorkerTag(self["worker-index"])
            globalLogPublisher.addObserver(self.log_tag)

    def postOptions(self) -> None:
        """Check values, then load and check every file; a problem stops startup."""
        self._check_values()
        self.limits = self._limits()
        self._check_listeners()
        self._check_operations()
        self._check_revocation()
        if not self["listen"]:
            self["listen"] = ["tcp:8443"]
        # A ConfigurationError raised here reaches the caller; under twistd,
        # PluginOptions.parseOptions turns it into one line and exit status 1.
        self.config = self.server_config()
        self._load(self.config)
        self.config = self._settle_passphrase(self.config)
        self.forwarded = forwarding(self["forwarded-cert"], self["forwarded-cert-header"],
                                    self["trusted-proxy"], self["trusted-proxy-cert"])
        self._check_proxy_senders()
        for directory in reversed(self["app-path"]):
            if directory in sys.path:
                sys.path.remove(directory)
            sys.path.insert(0, directory)
        self.app = load_app(self["app"]) if self["app"] is not None else None

    def _check_proxy_senders(self) -> None:
        """--proxy-protocol-from needs a haproxy: listener; a --trusted-proxy judged by a
        PROXY header needs it (or --trusted-proxy-cert): a peer could claim its address."""
        self.proxy_senders = proxy_senders(self["proxy-protocol-from"])
        proxied = any(split_proxy(d)[0] for d in self["listen"])
        if self.proxy_senders is not None and not proxied:
            raise usage.UsageError("--proxy-protocol-from has no effect without a haproxy: "
                                   "--listen")
        forwarded = self.forwarded
        if proxied and forwarded is not None and self.proxy_senders is None \
                and not forwarded.proxy_certificates:
            raise usage.UsageError(
                "--trusted-proxy on a haproxy: --listen trusts the address a PROXY header "
                "claims, and any peer reaching that port can send one: give "
                "--proxy-protocol-from (the balancers' addresses) or --trusted-proxy-cert")
        if proxied and self.proxy_senders is None:
            _log.warn("a haproxy: --listen without --proxy-protocol-from takes the client "
                      "address from any peer's PROXY header: anyone who reaches the port can "
                      "put any address in the logs; give --proxy-protocol-from (the "
                      "balancers' addresses)", reason="proxy_sender_unrestricted")

    def _check_values(self) -> None:
        """The choices of TLS and revocation options, and the limits' positive values."""
        _choice("client-cert", self["client-cert"], ("require", "optional"))
        _choice("allowed-types", self["allowed-types"], ("chained", "selfsigned", "all"))
        _choice("min-tls", self["min-tls"], ("1.2", "1.3"))
        _choice("http2", self["http2"], ("on", "off"))
        _choice("crl-check", self["crl-check"], ("leaf", "chain"))
        _choice("revocation-fail", self["revocation-fail"], ("closed", "open"))
        for name in ("handshake-timeout", "idle-timeout", "header-timeout", "body-timeout",
                     "max-connections", "max-header-bytes", "max-headers", "max-body-bytes"):
            if self[name] <= 0:
                raise usage.UsageError(f"--{name} must be positive")

    def _limits(self) -> Limits:
        return Limits(
            handshake_timeout=self["handshake-timeout"], idle_timeout=self["idle-timeout"],
            header_timeout=self["header-timeout"], body_timeout=self["body-timeout"],
            max_connections=self["max-connections"], max_header_bytes=self["max-header-bytes"],
            max_headers=self["max-headers"], max_body_bytes=self["max-body-bytes"])

    def _check_listeners(self) -> None:
        """--metrics (loopback unless told otherwise) and --workers with their addresses."""
        if self["metrics"]:
            self["metrics"] = loopback_by_default(self["metrics"])
            check_endpoint("--metrics", self["metrics"])
        workers = self["workers"]
        if workers == "auto":
            self.workers = os.cpu_count() or 1
        elif workers.isdigit() and int(workers) >= 1:
            self.workers = int(workers)
        else:
            raise usage.UsageError(f"--workers must be a positive number or auto, not {workers!r}")
        if self.workers > 1:
            self.addresses = [parse_tcp(split_proxy(d)[1])
                              for d in (self["listen"] or ["tcp:8443"])]
            if self["metrics"]:
                parse_tcp(self["metrics"])

    def _check_operations(self) -> None:
        _choice("access-log", self["access-log"], ("on", "off"))
        _choice("log-accepted", self["log-accepted"], ("on", "off"))
        for name in ("drain-timeout", "drain-delay"):
            if self[name] < 0:
                raise usage.UsageError(f"--{name} must not be negative")
        if self["watch-interval"] < 0:
            raise usage.UsageError("--watch-interval must not be negative")

    def _check_revocation(self) -> None:
        _choice("ocsp", self["ocsp"], ("off", "leaf", "chain"))
        _choice("crl-fetch", self["crl-fetch"], ("on", "off"))
        if self["crl-fetch-timeout"] <= 0:
            raise usage.UsageError("--crl-fetch-timeout must be positive")
        _choice("ocsp-nonce", self["ocsp-nonce"], ("off", "prefer", "require"))
        for name in ("ocsp-timeout", "ocsp-max-age"):
            if self[name] <= 0:
                raise usage.UsageError(f"--{name} must be positive")
        if self["ocsp-skew"] < 0:
            raise usage.UsageError("--ocsp-skew must not be negative")

    def server_config(self) -> ServerConfig:
        """The ``ServerConfig`` these options describe: what ``protected_site`` serves and
        a reload reads again. Call it once the options are parsed."""
        allowed = AllowedTypes(self["allowed-types"])
        return ServerConfig(
            cert=self["cert"],
            key=self["key"],
            ca=tuple(self["ca"] or (["certs/ca.pem"] if allowed.chained else [])),
            intermediates=tuple(self["intermediates"]),
            pins=parse_pins(self["pin"]),
            pins_file=self["pins"],
            client_cert=ClientCertMode(self["client-cert"]),
            allowed_types=allowed,
            verify_depth=self["verify-depth"],
            min_tls=self["min-tls"],
            http2=self["http2"] == "on",
            crls=tuple(self["crl"]),
            policy=self["policy"],
            crl_check_chain=self["crl-check"] == "chain",
            fail_open=self["revocation-fail"] == "open",
            ocsp=self._ocsp_settings(),
            crl_fetch=CRLFetchSettings(
                mode=(Scope.OFF if self["crl-fetch"] == "off" else
                      Scope.CHAIN if self["crl-check"] == "chain" else Scope.LEAF),
                timeout=self["crl-fetch-timeout"],
            ),
            log_accepted=self["log-accepted"] == "on",
            passphrase=self._passphrase(),
            policies=self._policy_settings(),
        )

    def _policy_settings(self) -> PolicySettings:
        return PolicySettings(
            initial=frozenset(self["policy-oid"] or (ANY_POLICY,)),
            require_explicit=bool(self["require-explicit-policy"]),
            inhibit_mapping=bool(self["inhibit-policy-mapping"]),
            inhibit_any=bool(self["inhibit-any-policy"]),
        )

    def _passphrase(self) -> Passphrase:
        """Where an encrypted key's passphrase comes from: never the command line itself."""
        env, path = self["key-passphrase-env"], self["key-passphrase-file"]
        if env is not None and path is not None:
            raise usage.UsageError("give --key-passphrase-env or --key-passphrase-file, not both")
        if env is not None:
            return Passphrase.from_env(env)
        if path is not None:
            return Passphrase.from_file(path)
        if getattr(self, "workers", 1) > 1:
            return Passphrase.missing(_PASSPHRASE_HINT + " (every worker reads it)")
        return Passphrase.prompt(_PASSPHRASE_HINT)

    @staticmethod
    def _settle_passphrase(config: ServerConfig) -> ServerConfig:
        """After startup, never prompt again: a reload must not block on the terminal."""
        source = config.passphrase
        if source is None or not source.prompts or source.asked:
            return config
        return replace(config, passphrase=Passphrase.missing(
            _PASSPHRASE_HINT + " (the key was not encrypted at startup, so no passphrase "
            "was asked)"))

    def _ocsp_settings(self) -> OCSPSettings:
        return OCSPSettings(
            mode=Scope(self["ocsp"]),
            responder=(check_responder_url(self["ocsp-responder"])
                       if self["ocsp-responder"] else None),
            require=bool(self["ocsp-require"]),
            timeout=self["ocsp-timeout"],
            nonce=self["ocsp-nonce"],
            skew=self["ocsp-skew"],
            max_age=self["ocsp-max-age"],
        )

    def _load(self, config: ServerConfig) -> None:
        """Read and check every file: the TLS settings, the verifier, the revocation sources."""
        if self.clock is None:
            from twisted.internet import reactor

            self.clock = reactor  # type: ignore[assignment]
        assert self.clock is not None
        from twisted.internet import reactor as default_reactor

        self.revocation = revocation_for(config, self.clock, default_reactor)
        # What the files held when loaded: the reloader's starting point.
        self.files = take(config.files())
        self.settings, self.verifier = config.load(self.clock, self.revocation,
                                                   self.files.contents)


def makeService(config: Options) -> service.IService:
    """One TLS listener per --listen, all serving the same site, and the reloader."""
    from twisted.internet import reactor

    if config.workers > 1 and config["worker-index"] is None:
        return _supervisor(config, reactor)
    clock = config.clock
    assert clock is not None
    # The configuration in force, in one place: a reload replaces it for TLS and site alike.
    current = Current(config.settings, config.verifier)
    tls = ServerTLS(current)
    site = build_site(current, app=config.app, http2=config.config.http2,
                      limits=config.limits, forwarded=config.forwarded)
    site.access_log = config["access-log"] == "on"
    metrics = Metrics() if config["metrics"] else None
    if metrics is not None:
        site.observer = metrics
    parent = Lingering(clock, config["drain-delay"])
    index = config["worker-index"]
    if index is not None:
        ParentWatch(reactor).setServiceParent(parent)
        ReadyNotice(reactor).setServiceParent(parent)
    for description in config["listen"]:
        proxied, endpoint = split_proxy(description)
        factory: IProtocolFactory = TLSFactory(tls, site)
        if proxied:
            factory = ProxyHeaderFactory(factory, description, lambda: site.observer,
                                         config.proxy_senders)
        if index is None:
            # Listener: an address in use stops startup with one line, no traceback.
            Listener("certsrv", "--listen", description, factory,
                     endpoint=endpoint).setServiceParent(parent)
        else:
            ReusePortService(parse_tcp(endpoint), factory, reactor).setServiceParent(parent)
    Reloader(config.config, current, clock, config["watch-interval"],
             reactor=reactor,  # type: ignore[arg-type]
             revocation=config.revocation, observer=site.observer,
             offload=in_threads(reactor), files=config.files).setServiceParent(parent)
    if config.revocation is not None:
        _CloseAtStop(config.revocation).setServiceParent(parent)
    ExpiryWatch(tls, clock).setServiceParent(parent)
    # The --metrics listener and feed are the drainer's children: they outlive the drain.
    drainer = Drainer(site, clock, config["drain-timeout"], reactor)
    drainer.setServiceParent(parent)
    if metrics is not None:
        _serve_metrics(config, metrics, tls, drainer, reactor,
                       ready=lambda: bool(parent.running and drainer.running))
    return parent


def _supervisor(config: Options, reactor: Any) -> service.IService:
    """The parent of --workers processes: it starts, watches and stops them."""
    _refuse_ports_in_use(config)
    parent = service.MultiService()
    Supervisor(config.workers, worker_argv(config.argv), config.addresses, reactor,
               stop_timeout=config["drain-delay"] + config["drain-timeout"] + 5
               ).setServiceParent(parent)
    return parent


def _serve_metrics(config: Options, metrics: Metrics, tls: ServerTLS, drainer: Drainer,
                   reactor: Any, ready: Callable[[], bool]) -> None:
    """The --metrics listener (/metrics, /healthz) and its gauges, under ``drainer``."""
    clock = tls.clock
    metrics.gauge("certsrv_server_certificate_expiry_seconds",
                  "Seconds until the server certificate expires",
                  lambda: tls.settings.certificate.not_valid_after_utc.timestamp()
                  - clock.seconds())
    revocation = config.revocation
    metrics.collect_from(CacheCollector(
        lambda: revocation.checkers if revocation is not None else ()))
    count_lookups(metrics, revocation.checkers if revocation is not None else ())
    # /healthz answers 503 from the moment the node is told to stop (before --drain-delay).
    admin = admin_site(metrics, ready, config.limits)
    index = config["worker-index"]
    if index is None:
        Listener("certsrv", "--metrics", config["metrics"], admin).setServiceParent(drainer)
    else:
        address = parse_tcp(config["metrics"])
        address = TCPAddress(address.family, address.interface, address.port + index,
                             address.backlog)
        # Not shared: each worker has its own metrics port.
        ReusePortService(address, admin, reactor, share=False).setServiceParent(drainer)


class _CloseAtStop(service.Service):
    """Closes the revocation fetchers' idle connections when the server stops."""

    def __init__(self, revocation: Revocation) -> None:
        self.revocation = revocation

    def stopService(self) -> defer.Deferred[None]:
        super().stopService()
        return self.revocation.close()


def _refuse_ports_in_use(config: Options) -> None:
    """Stop startup with one line when another process listens on a tcp port to be used."""
    wanted = [("--listen", d, 0) for d in config["listen"]]
    if config["metrics"]:
        wanted += [("--metrics", config["metrics"], i) for i in range(config.workers)]
    for option, description, offset in wanted:
        try:
            address = parse_tcp(split_proxy(description)[1])
        except usage.UsageError:
            continue  # not a tcp: description; its endpoint reports its own errors
        if address.port == 0:
            continue
        address = TCPAddress(address.family, address.interface, address.port + offset,
                             address.backlog)
        try:
            check_free(address)
        except PortInUse as e:
            raise SystemExit(startup_error("certsrv", f"{option} {description}: {e}")) from None
