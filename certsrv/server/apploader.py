"""``--app``: the twisted.web resource, Klein app or factory named by a dotted path."""

from __future__ import annotations

import importlib.util
from typing import Any

from twisted.python import usage
from twisted.python.reflect import namedAny
from twisted.web import resource

__all__ = ["load_app"]


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
