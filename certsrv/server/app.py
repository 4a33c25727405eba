"""``protected_site``: any twisted.web application served with ``twistd certsrv``'s checks."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from twisted.python import usage
from twisted.web import resource

from certsrv.exceptions import ConfigurationError
from certsrv.server.build import build_site
from certsrv.server.options import Options
from certsrv.tls.context import ServerTLS, TLSFactory

__all__ = ["protected_site"]


def protected_site(app: resource.IResource, argv: Sequence[str] = (), *,
                   clock: Any = None) -> Any:
    """A TLS protocol factory serving ``app`` with ``twistd certsrv``'s options (``argv``).

    Listen with it on any stream endpoint, e.g. ``TCP4ServerEndpoint(reactor, 8443)``.
    An unusable option or file raises ``ConfigurationError``.
    """
    options = Options()
    options.clock = clock
    try:
        options.parseOptions(list(argv))
    except usage.UsageError as e:
        raise ConfigurationError("argv", str(e)) from None
    site = build_site(options.verifier, app=app, http2=options.config.http2,
                      limits=options.limits, forwarded=options.forwarded)
    return TLSFactory(ServerTLS(options.settings, options.verifier), site)
