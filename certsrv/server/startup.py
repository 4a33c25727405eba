"""Startup errors of certsrv's twistd plugins: one line naming the option and the problem."""

from __future__ import annotations

import errno
import math
import re
import sys
from collections.abc import Callable
from typing import Any, ClassVar, TextIO

from twisted.application import internet
from twisted.internet import endpoints
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IProtocolFactory
from twisted.logger import ILogObserver, LogEvent, Logger
from twisted.python import usage
from zope.interface import implementer

from certsrv._compat import raise_listen_errors
from certsrv.exceptions import ConfigurationError

__all__ = [
    "Listener",
    "PluginOptions",
    "StartupFailed",
    "WorkerTag",
    "cannot_listen",
    "check_endpoint",
    "named_coercions",
    "startup_error",
]

_log = Logger(namespace="certsrv.startup")


def startup_error(prog: str, problem: str) -> str:
    """What stops startup: ``prog: problem``, then a line saying where the options are."""
    return f"{prog}: {problem}\nsee: twistd {prog} --help"


# getopt's messages (through usage.Options), and what they say here.
_GETOPT = [
    (re.compile(r"option (-\S+) not recognized"), r"unknown option \1"),
    (re.compile(r"option (-\S+) requires argument"), r"\1 needs a value"),
    (re.compile(r"option (-\S+) must not have an argument"), r"\1 takes no value"),
    (re.compile(r"option (-\S+) not a unique prefix"), r"\1 is the start of several options"),
]


def _reworded(message: str) -> str:
    """A getopt message in certsrv's words (``unknown option --x``); others as they are."""
    for pattern, replacement in _GETOPT:
        if pattern.fullmatch(message):
            return pattern.sub(replacement, message)
    return message


class PluginOptions(usage.Options):
    """A twistd plugin's options: under twistd an error is one line, not the usage text."""

    prog: ClassVar[str] = "certsrv"

    def parseOptions(self, options: list[str] | None = None) -> None:
        """Parse; under twistd (a parent is set) errors exit with one line, else raise."""
        try:
            super().parseOptions(options)
        except (usage.UsageError, ConfigurationError) as e:
            error = usage.UsageError(_reworded(str(e))) if isinstance(e, usage.UsageError) else e
            if self.parent is None:
                raise error from None  # a library caller (protected_site, tests) handles it
            # twistd prints its whole usage text for a UsageError; SystemExit skips that.
            raise SystemExit(startup_error(self.prog, str(error))) from None

    def parseArgs(self, *args: str) -> None:
        """Refuse positional arguments, naming the first."""
        if args:
            raise usage.UsageError(f"unexpected argument {args[0]!r} (options start with --)")


def _named(name: str, coerce: Callable[[str], Any]) -> Callable[[str], Any]:
    """``coerce``, raising a UsageError that names ``--name`` when the value is unusable."""

    def coerced(value: str) -> Any:
        try:
            result = coerce(value)
        except ValueError as e:
            if coerce is int:
                raise usage.UsageError(f"--{name} must be a whole number, not {value!r}") from None
            if coerce is float:
                raise usage.UsageError(f"--{name} must be a number, not {value!r}") from None
            raise usage.UsageError(f"--{name}: {e}") from None
        if isinstance(result, float) and not math.isfinite(result):
            raise usage.UsageError(f"--{name} must be a finite number, not {value!r}")
        return result

    coerced.coerceDoc = getattr(coerce, "coerceDoc", "")  # type: ignore[attr-defined]
    return coerced


def named_coercions(parameters: list[list[Any]]) -> list[list[Any]]:
    """``optParameters`` whose type errors name the option, not "Parameter type enforcement"."""
    for parameter in parameters:
        if len(parameter) > 4 and parameter[4] is not None:
            parameter[4] = _named(parameter[0], parameter[4])
    return parameters


def check_endpoint(option: str, description: str) -> None:
    """Raise UsageError unless ``description`` is a server endpoint Twisted can parse."""
    from twisted.internet import reactor

    try:
        endpoints.serverFromString(reactor, description)
    except (ValueError, TypeError, KeyError, IndexError, OSError) as e:
        problem = str(e) or e.__class__.__name__
        raise usage.UsageError(f"{option} {description}: not a server endpoint ({problem})"
                               ) from None


def cannot_listen(error: CannotListenError) -> str:
    """Why listening failed, in words: the port, the interface and what the system said."""
    cause = error.socketError
    code = getattr(cause, "errno", None)
    where = f"port {error.port} on {error.interface or 'all interfaces'}"
    if code == errno.EADDRINUSE:
        return f"{where} is already in use by another process"
    if code == errno.EACCES:
        return f"{where}: permission denied (ports below 1024 need root or CAP_NET_BIND_SERVICE)"
    if code == errno.EADDRNOTAVAIL:
        return f"{where}: {error.interface} is not an address of this machine"
    text = getattr(cause, "strerror", None) or str(cause)
    return f"cannot listen on {where}: {text}"


class StartupFailed(Exception):
    """Startup stopped for a reason already reported in one line; no traceback follows."""


def _quiet_excepthook(previous: Callable[..., Any]) -> Callable[..., Any]:
    """``previous``, except that an uncaught StartupFailed ends the process silently."""

    def hook(kind: type[BaseException], value: BaseException, traceback: Any) -> None:
        if not isinstance(value, StartupFailed):
            previous(kind, value, traceback)

    hook.quiet = True  # type: ignore[attr-defined]
    return hook


class Listener(internet.StreamServerEndpointService):
    """Listens on an endpoint; an address it cannot listen on stops startup in one line."""

    def __init__(self, prog: str, option: str, description: str, factory: IProtocolFactory,
                 reactor: Any = None, stderr: TextIO | None = None,
                 endpoint: str | None = None) -> None:
        # ``endpoint``: what to listen on when ``factory`` already does part of the
        # description's work (a haproxy: description's PROXY header); messages name both.
        if reactor is None:
            from twisted.internet import reactor
        super().__init__(endpoints.serverFromString(reactor, endpoint or description), factory)
        # As strports.service does: listen() failing makes privilegedStartService raise.
        raise_listen_errors(self)
        self.prog = prog
        self.option = option
        self.description = description
        self.stderr = stderr

    def privilegedStartService(self) -> None:
        """Listen; when that fails, log it, write it to stderr and stop startup (exit 1)."""
        try:
            super().privilegedStartService()
        except CannotListenError as e:
            problem = f"{self.option} {self.description}: {cannot_listen(e)}"
            _log.error("{problem}", problem=problem, reason="cannot_listen")
            # twistd sends sys.stderr to the log by now; the person starting it reads the
            # process's own standard error (what twistd itself writes to when daemonizing).
            stream = self.stderr if self.stderr is not None else sys.__stderr__
            if stream is not None:
                stream.write(startup_error(self.prog, problem) + "\n")
                stream.flush()
            # Not SystemExit: twistd must see an Exception to remove its pid file and, when
            # daemonizing, to tell the waiting parent (which otherwise waits forever). It then
            # re-raises it; the hook keeps Python from printing a traceback, exit status 1.
            if not getattr(sys.excepthook, "quiet", False):
                sys.excepthook = _quiet_excepthook(sys.excepthook)
            raise StartupFailed(problem) from None


@implementer(ILogObserver)
class WorkerTag:
    """Marks each log event's system as coming from worker ``index`` (a log observer)."""

    def __init__(self, index: int) -> None:
        self.prefix = f"worker {index}"

    def __call__(self, event: LogEvent) -> None:
        """Prefix ``log_system`` (the ``[...]`` of a text log line) with ``worker N``."""
        system = event.get("log_system")
        if isinstance(system, str) and (system + " ").startswith(self.prefix + " "):
            return  # a buffered event replayed when logging begins
        if system is None:
            level = event.get("log_level")
            system = f"{event.get('log_namespace', '-')}#{getattr(level, 'name', '-')}"
        event["log_system"] = self.prefix if system == "-" else f"{self.prefix} {system}"
