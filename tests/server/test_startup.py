"""Startup errors in-process: twistd's subcommand path, option wording, listening, --help."""

from __future__ import annotations

import errno
import io
import sys
from typing import Any

from twisted.application.app import ServerOptions
from twisted.internet import protocol
from twisted.internet.error import CannotListenError
from twisted.logger import LogLevel, formatEventAsClassicLogText, globalLogPublisher
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase, TestCase

from certsrv.server import options as _tap
from certsrv.server.startup import Listener, StartupFailed, WorkerTag, cannot_listen
from tests._servers import SEE
from tests._servers import listening_socket as _listening_socket
from tests._servers import low_port as _free_port
from tests._support import Files as _Files
from tests._support import captured_events, clock_at_now


def twistd_exit(argv: list[str]) -> str:
    """What twistd exits with while parsing ``argv``: SystemExit's message."""
    config = ServerOptions()
    try:
        config.parseOptions(argv)
    except SystemExit as e:
        return str(e.code)
    raise AssertionError(f"twistd accepted {argv}")


class TwistdPathTests(SynchronousTestCase):
    """Under twistd (the plugin's options have a parent) an error is one line, then see:."""

    def setUp(self) -> None:
        self.files = _Files(self.mktemp())

    def test_usage_error(self) -> None:
        self.assertEqual(twistd_exit(["certsrv", *self.files.argv("--http2", "yes")]),
                         f"certsrv: --http2 must be one of on, off (got 'yes')\n{SEE}")

    def test_configuration_error(self) -> None:
        self.assertEqual(twistd_exit(["certsrv", "--cert", "/nonexistent/server.pem"]),
                         "certsrv: /nonexistent/server.pem: server certificate file does not "
                         f"exist\n{SEE}")

    def test_ocsp(self) -> None:
        self.assertEqual(twistd_exit(["certsrv-ocsp", "--validity", "0"]),
                         "certsrv-ocsp: --validity: invalid duration '0': must be at least "
                         "1 second\nsee: twistd certsrv-ocsp --help")

    def test_worker_lines_are_tagged(self) -> None:
        """A worker (--worker-index under twistd) tags its log events with its number."""
        config = ServerOptions()
        config.parseOptions(["certsrv", *self.files.argv("--worker-index", "2")])
        options = config.subOptions
        assert isinstance(options, _tap.Options) and options.log_tag is not None
        self.addCleanup(globalLogPublisher.removeObserver, options.log_tag)
        with captured_events("certsrv.test") as events:
            globalLogPublisher({"log_namespace": "certsrv.test", "log_level": LogLevel.info,
                                "log_format": "hello", "log_time": 0.0})
        self.assertEqual(events[0]["log_system"], "worker 2 certsrv.test#info")


class LibraryPathTests(SynchronousTestCase):
    """Without twistd, errors are raised, worded to name the option."""

    def setUp(self) -> None:
        self.files = _Files(self.mktemp())

    def usage_error(self, *argv: str) -> str:
        options = _tap.Options()
        options.clock = clock_at_now()
        error = self.assertRaises(usage.UsageError, options.parseOptions,
                                  self.files.argv(*argv))
        return str(error)

    def test_numbers(self) -> None:
        self.assertEqual(self.usage_error("--max-connections", "lots"),
                         "--max-connections must be a whole number, not 'lots'")
        self.assertEqual(self.usage_error("--idle-timeout", "soon"),
                         "--idle-timeout must be a number, not 'soon'")
        self.assertEqual(self.usage_error("--idle-timeout", "nan"),
                         "--idle-timeout must be a finite number, not 'nan'")

    def test_getopt_messages(self) -> None:
        self.assertEqual(self.usage_error("--bogus"), "unknown option --bogus")
        self.assertEqual(self.usage_error("--ocsp-require=yes"), "--ocsp-require takes no value")
        self.assertEqual(self.usage_error("stray"),
                         "unexpected argument 'stray' (options start with --)")

    def test_help_hides_worker_index(self) -> None:
        """--worker-index is the supervisor's business: parsed, but not in --help."""
        text = str(_tap.Options())
        self.assertNotIn("worker-index", text)
        self.assertIn("--workers=", text)
        self.assertIn("--app-path=", text)
        options = _tap.Options()
        options.clock = clock_at_now()
        options.parseOptions(self.files.argv("--worker-index", "1"))
        self.assertEqual(options["worker-index"], 1)
        self.assertNotIn("worker-index", str(options))


class ListenerTests(TestCase):
    """An address in use stops startup with one line on stderr and one in the log."""

    def test_port_in_use(self) -> None:
        port = _free_port()
        self.addCleanup(_listening_socket(port).close)
        stderr = io.StringIO()
        listen = f"tcp:{port}:interface=127.0.0.1"
        listener = Listener("certsrv", "--listen", listen, protocol.Factory(), stderr=stderr)
        self.patch(sys, "excepthook", sys.excepthook)
        with captured_events("certsrv.startup") as events:
            with self.assertRaises(StartupFailed) as caught:
                listener.privilegedStartService()
        line = f"--listen {listen}: port {port} on 127.0.0.1 is already in use by another process"
        self.assertEqual(str(caught.exception), line)
        self.assertEqual(stderr.getvalue(), f"certsrv: {line}\n{SEE}\n")
        self.assertEqual([(e["reason"], e["problem"]) for e in events], [("cannot_listen", line)])

    def test_no_traceback(self) -> None:
        """twistd re-raises StartupFailed (after removing its pid file): nothing more printed."""
        port = _free_port()
        self.addCleanup(_listening_socket(port).close)
        printed: list[type[BaseException]] = []
        self.patch(sys, "excepthook", lambda kind, value, tb: printed.append(kind))
        listener = Listener("certsrv", "--listen", f"tcp:{port}:interface=127.0.0.1",
                            protocol.Factory(), stderr=io.StringIO())
        for _ in range(2):  # the hook is installed once
            failure = self.assertRaises(StartupFailed, listener.privilegedStartService)
            sys.excepthook(StartupFailed, failure, None)
        sys.excepthook(KeyError, KeyError("x"), None)
        self.assertEqual(printed, [KeyError])

    def test_free_port(self) -> None:
        """A free address listens as strports.service would."""
        listener = Listener("certsrv", "--listen", "tcp:0:interface=127.0.0.1",
                            protocol.Factory())
        listener.privilegedStartService()
        listener.startService()
        self.addCleanup(listener.stopService)
        self.assertTrue(listener.running)

    def test_wording(self) -> None:
        def error(code: int, interface: str = "") -> CannotListenError:
            return CannotListenError(interface, 80, OSError(code, "system text"))

        self.assertEqual(cannot_listen(error(errno.EADDRINUSE)),
                         "port 80 on all interfaces is already in use by another process")
        self.assertIn("permission denied", cannot_listen(error(errno.EACCES)))
        self.assertIn("10.9.9.9 is not an address of this machine",
                      cannot_listen(error(errno.EADDRNOTAVAIL, "10.9.9.9")))
        self.assertEqual(cannot_listen(error(errno.EINVAL)),
                         "cannot listen on port 80 on all interfaces: system text")


class WorkerTagTests(SynchronousTestCase):
    """``worker N`` leads the bracketed system of every text log line of a worker."""

    def test_text(self) -> None:
        tag = WorkerTag(3)
        new: dict[str, Any] = {"log_namespace": "certsrv.tls", "log_level": LogLevel.warn,
                               "log_format": "rejected", "log_time": 0.0}
        legacy: dict[str, Any] = {"log_system": "-", "log_format": "Site starting",
                                  "log_time": 0.0}
        for event in (new, legacy):
            tag(event)
            tag(event)  # a buffered event is replayed when logging begins: tagged once
        self.assertIn("[worker 3 certsrv.tls#warn] rejected", formatEventAsClassicLogText(new))
        self.assertIn("[worker 3] Site starting", formatEventAsClassicLogText(legacy))
