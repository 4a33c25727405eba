"""``protected_site``: any twisted.web application served with ``twistd certsrv``'s checks."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from twisted.internet.interfaces import IReactorTime
from twisted.python import usage
from twisted.web import resource

from certsrv.exceptions import ConfigurationError
from certsrv.forwarded.trust import Forwarding
from certsrv.revocation.decision import Revocation
from certsrv.server.build import build_site, revocation_for
from certsrv.server.config import ServerConfig
from certsrv.server.options import Options
from certsrv.tls.context import Current, ServerTLS, TLSFactory
from certsrv.web.limits import Limits

__all__ = ["protected_site"]


def protected_site(app: resource.IResource, config: ServerConfig | Sequence[str] = (), *,
                   limits: Limits | None = None, forwarded: Forwarding | None = None,
                   clock: Any = None, require_certificate: bool = True,
                   revocation: Revocation | None = None) -> Any:
    """A TLS protocol factory serving ``app`` behind certsrv's checks.

    ``config`` is a ``ServerConfig`` (the server certificate and key, CAs, pins, revocation,
    ``--policy`` file, ...), with ``limits`` (default: the defaults of the limit options)
    and ``forwarded`` (certificates forwarded by a trusted proxy; default: none) beside it.
    As a convenience it may instead be ``twistd certsrv``'s command-line arguments, e.g.
    ``["--ca", "ca.pem", "--cert", "server.pem", "--key", "server.key"]``, which give the
    limits and forwarding too (``limits`` and ``forwarded``, when given, take precedence).

    Listen with it on any stream endpoint, e.g. ``TCP4ServerEndpoint(reactor, 8443)``.
    An unusable option or file raises ``ConfigurationError``.

    Without ``require_certificate`` (and with ``--client-cert optional``), requests without
    a certificate reach ``app``, which protects what needs one with ``certsrv.protect``.
    ``revocation``, with a ``ServerConfig``, replaces the network sources the configuration
    names (OCSP, fetched CRLs) by these.
    """
    if isinstance(config, ServerConfig):
        current = _load(config, clock, revocation)
    else:
        options = _parse(config, clock)
        config, current = options.config, Current(options.settings, options.verifier)
        limits = limits if limits is not None else options.limits
        forwarded = forwarded if forwarded is not None else options.forwarded
    site = build_site(current, app=app, http2=config.http2, limits=limits, forwarded=forwarded,
                      require_certificate=require_certificate)
    return TLSFactory(ServerTLS(current), site)


def _load(config: ServerConfig, clock: IReactorTime | None,
          revocation: Revocation | None) -> Current:
    """Read and check every file ``config`` names: the configuration to serve."""
    from twisted.internet import reactor

    clock = clock if clock is not None else reactor  # type: ignore[assignment]
    assert clock is not None
    if revocation is None:
        revocation = revocation_for(config, clock, reactor)
    settings, verifier = config.load(clock, revocation)
    return Current(settings, verifier)


def _parse(argv: Sequence[str], clock: IReactorTime | None) -> Options:
    """``twistd certsrv``'s options parsed from ``argv``; a usage error as ConfigurationError."""
    options = Options()
    options.clock = clock
    try:
        options.parseOptions(list(argv))
    except usage.UsageError as e:
        raise ConfigurationError("argv", str(e)) from None
    return options
