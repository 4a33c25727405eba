"""Protecting any twisted.web application: the gate as a public wrapper, and ``--app``."""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from typing import Any

from twisted.python import usage
from twisted.python.reflect import namedAny
from twisted.web import resource

from certsrv.exceptions import ConfigurationError

__all__ = ["load_app", "protect", "protected_site"]


def protect(app: resource.IResource) -> resource.IResource:
    """``app`` behind certsrv's gate: only requests with a verified, unexpired, unrevoked
    client certificate (or admitted as public by the access policy) reach it.

    The result must be served by a certsrv site (``protected_site`` or ``twistd certsrv``),
    whose TLS layer does the verification; ``certsrv.identity_of(request)`` then gives the
    client's identity inside ``app``.
    """
    from certsrv._gate import Gate

    return Gate(app, require_identity=True)


def _as_resource(thing: Any) -> resource.IResource | None:
    if resource.IResource.providedBy(thing):
        return thing  # type: ignore[no-any-return]
    make = getattr(thing, "resource", None)  # a Klein app
    if callable(make):
        made = make()
        if resource.IResource.providedBy(made):
            return made  # type: ignore[no-any-return]
    return None


def _path_hint(name: str) -> str:
    """Where to put ``name``'s top-level module, when Python cannot find it."""
    top = name.split(".")[0]
    try:
        found = not top.isidentifier() or importlib.util.find_spec(top) is not None
    except (ImportError, ValueError):
        found = False
    if found:
        return ""
    return f"; no module {top!r} on sys.path: give its directory with --app-path (or PYTHONPATH)"


def load_app(name: str) -> resource.IResource:
    """The resource named by a dotted path: an IResource, a Klein app, or a factory of one."""
    try:
        thing = namedAny(name)
    except Exception as e:
        raise usage.UsageError(f"--app {name}: cannot import it ({e.__class__.__name__}: {e})"
                               f"{_path_hint(name)}") from None
    found = _as_resource(thing)
    if found is None and callable(thing) and not isinstance(thing, type(resource)):
        try:
            found = _as_resource(thing())
        except Exception as e:
            raise usage.UsageError(f"--app {name}: calling it failed ({e})") from None
    if found is None:
        raise usage.UsageError(f"--app {name}: not a twisted.web resource, a Klein app, or a "
                               "callable returning one")
    return found


def protected_site(app: resource.IResource, argv: Sequence[str] = (), *,
                   clock: Any = None) -> Any:
    """A TLS protocol factory serving ``app`` with ``twistd certsrv``'s options (``argv``).

    Listen with it on any stream endpoint, e.g. ``TCP4ServerEndpoint(reactor, 8443)``.
    An unusable option or file raises ``ConfigurationError``.
    """
    from certsrv._server import build_site
    from certsrv._tap import Options
    from certsrv._tls import ServerTLS, TLSFactory

    options = Options()
    options.clock = clock
    try:
        options.parseOptions(list(argv))
    except usage.UsageError as e:
        raise ConfigurationError("argv", str(e)) from None
    site = build_site(options.verifier, app=app, http2=options.config.http2,
                      limits=options.limits, forwarded=options.forwarded)
    return TLSFactory(ServerTLS(options.settings, options.verifier), site)
