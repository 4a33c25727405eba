"""The ``twistd certsrv`` plugin: options, startup errors, and one real twistd process."""

from __future__ import annotations

import getpass
import os
import signal
import sys
from typing import Any

from twisted.application.service import IServiceMaker, MultiService
from twisted.internet import defer, reactor
from twisted.internet.task import deferLater
from twisted.plugin import getPlugins
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase, TestCase

from certsrv.exceptions import ConfigurationError
from certsrv.pki import CertificateAuthority, self_signed_client
from certsrv.server import options as _tap
from certsrv.tls.context import ClientCertMode
from certsrv.tls.verify import AllowedTypes
from certsrv.x509 import passphrase
from tests._servers import (
    SEE,
    run,
)
from tests._servers import listening_socket as _listening_socket
from tests._servers import low_port as _free_port
from tests._support import (
    DAY,
    shared_pki,
    utcnow,
    write_pem,
)
from tests._support import Files as _Files
from tests._support import options as parse


class OptionsTests(SynchronousTestCase):
    """Options become checked settings, and bad ones stop startup with one clear line."""

    def setUp(self) -> None:
        self.files = _Files(self.mktemp())

    def assertStartupError(self, argv: list[str], *fragments: str) -> None:
        """A library caller gets ConfigurationError (twistd makes it one line, exit 1)."""
        with self.assertRaises(ConfigurationError) as caught:
            parse(argv)
        message = str(caught.exception)
        self.assertNotIn("\n", message)
        for fragment in fragments:
            self.assertIn(fragment, message)

    def test_plugin_is_discoverable(self) -> None:
        import twisted.plugins

        names = [p.tapname for p in getPlugins(IServiceMaker, twisted.plugins)]
        self.assertIn("certsrv", names)

    def test_defaults(self) -> None:
        options = parse(self.files.argv())
        self.assertEqual(options["listen"], ["tcp:8443"])
        self.assertEqual(options.settings.client_cert, ClientCertMode.REQUIRE)
        self.assertEqual(options.verifier.allowed_types, AllowedTypes.CHAINED)
        self.assertEqual(options.settings.roots, (shared_pki().root.certificate,))
        self.assertEqual(options.settings.min_tls, "1.2")

    def test_policy_options(self) -> None:
        """The RFC 5280 policy inputs: default anyPolicy and nothing inhibited or required."""
        from certsrv.x509.policies import ANY_POLICY, PolicySettings

        self.assertEqual(parse(self.files.argv()).verifier.policies, PolicySettings())
        options = parse(self.files.argv(
            "--policy-oid", "2.16.840.1.101.3.2.1.48.1", "--policy-oid", "1.2.03",
            "--require-explicit-policy", "--inhibit-policy-mapping", "--inhibit-any-policy"))
        self.assertEqual(options.verifier.policies, PolicySettings(
            frozenset({"2.16.840.1.101.3.2.1.48.1", "1.2.3"}), True, True, True))
        self.assertEqual(options.config.policies.initial - {ANY_POLICY}, {
            "2.16.840.1.101.3.2.1.48.1", "1.2.3"})
        for bad in ("anyPolicy", "1", "4.1"):
            with self.assertRaises(usage.UsageError) as caught:
                parse(self.files.argv("--policy-oid", bad))
            self.assertIn("--policy-oid", str(caught.exception))

    def test_make_service_listens_on_each_endpoint(self) -> None:
        options = parse(self.files.argv("--listen", "tcp:0:interface=127.0.0.1",
                                        "--listen", "tcp:0:interface=127.0.0.1"))
        service = _tap.makeService(options)
        self.assertIsInstance(service, MultiService)
        kinds = sorted(type(child).__name__ for child in service)
        self.assertEqual(kinds, ["Drainer", "ExpiryWatch", "Listener", "Listener", "Reloader",
                                 "_CloseAtStop"])

    def test_haproxy_listener_and_drain_delay(self) -> None:
        """A haproxy: --listen reads the PROXY header itself (its factory wraps the TLS one);
        --drain-delay is the node's delay before stopping."""
        from certsrv.server.endpoints import ProxyHeaderFactory
        from certsrv.server.lifecycle import Lingering

        options = parse(self.files.argv("--listen", "haproxy:tcp:0:interface=127.0.0.1",
                                        "--drain-delay", "2.5"))
        service = _tap.makeService(options)
        self.assertIsInstance(service, Lingering)
        self.assertEqual(service.delay, 2.5)  # type: ignore[attr-defined]
        [listener] = [child for child in service if type(child).__name__ == "Listener"]
        self.assertIsInstance(listener.factory, ProxyHeaderFactory)  # type: ignore[attr-defined]
        self.assertEqual(listener.description, "haproxy:tcp:0:interface=127.0.0.1")  # type: ignore[attr-defined]
        self.assertRaises(usage.UsageError, parse, self.files.argv("--drain-delay", "-1"))
        workers = parse(self.files.argv("--listen", "haproxy:tcp:8443:interface=127.0.0.1",
                                        "--workers", "2"))
        self.assertEqual([(a.interface, a.port) for a in workers.addresses],
                         [("127.0.0.1", 8443)])

    def test_proxy_protocol_from(self) -> None:
        """--proxy-protocol-from limits who may open a haproxy: listener's connections; a
        --trusted-proxy judged by a PROXY header needs it or --trusted-proxy-cert."""
        from certsrv.server.endpoints import ProxyHeaderFactory

        listen = ("--listen", "haproxy:tcp:0:interface=127.0.0.1")
        forward = ("--forwarded-cert", "rfc9440", "--trusted-proxy", "10.0.0.9")
        options = parse(self.files.argv(*listen, *forward, "--proxy-protocol-from", "10.0.0.0/24"))
        [listener] = [child for child in _tap.makeService(options)
                      if type(child).__name__ == "Listener"]
        factory = listener.factory  # type: ignore[attr-defined]
        self.assertIsInstance(factory, ProxyHeaderFactory)
        self.assertTrue(factory.senders.contains("10.0.0.200"))
        self.assertFalse(factory.senders.contains("10.0.1.1"))
        with self.assertRaises(usage.UsageError) as caught:
            parse(self.files.argv(*listen, *forward))
        self.assertIn("give --proxy-protocol-from (the balancers' addresses) or "
                      "--trusted-proxy-cert", str(caught.exception))
        pinned = parse(self.files.argv(*listen, *forward, "--trusted-proxy-cert", "ab" * 32))
        self.assertIsNone(pinned.proxy_senders)
        with self.assertRaises(usage.UsageError) as caught:
            parse(self.files.argv("--proxy-protocol-from", "10.0.0.1"))
        self.assertIn("has no effect without a haproxy: --listen", str(caught.exception))
        self.assertRaises(usage.UsageError, parse,
                          self.files.argv(*listen, "--proxy-protocol-from", "nope"))

    def test_unrestricted_proxy_header_warns(self) -> None:
        """A haproxy: listener open to any sender of PROXY headers is allowed, with a warning."""
        from tests._support import captured_events

        listen = ("--listen", "haproxy:tcp:0:interface=127.0.0.1")
        with captured_events("certsrv.options") as events:
            parse(self.files.argv(*listen))
        self.assertEqual([e["reason"] for e in events], ["proxy_sender_unrestricted"])
        with captured_events("certsrv.options") as events:
            parse(self.files.argv(*listen, "--proxy-protocol-from", "127.0.0.1"))
            parse(self.files.argv())
        self.assertEqual(events, [])

    def test_values(self) -> None:
        options = parse(self.files.argv("--client-cert", "optional", "--verify-depth", "2",
                                        "--min-tls", "1.3", "--http2", "off"))
        self.assertEqual(options.settings.client_cert, ClientCertMode.OPTIONAL)
        self.assertEqual(options.settings.verify_depth, 2)
        self.assertEqual(options.settings.min_tls, "1.3")
        self.assertFalse(options.config.http2)

    def test_bad_choices_are_usage_errors(self) -> None:
        for argv in (["--client-cert", "maybe"], ["--allowed-types", "any"],
                     ["--min-tls", "1.1"], ["--http2", "yes"], ["--listen", "ssl:8443"],
                     ["--verify-depth", "x"]):
            self.assertRaises(usage.UsageError, parse, self.files.argv(*argv))

    def test_missing_certificate(self) -> None:
        missing = os.path.join(self.files.dir, "nope.pem")
        argv = self.files.argv()
        argv[1] = missing
        self.assertStartupError(argv, missing, "does not exist")

    def test_key_not_matching(self) -> None:
        other = write_pem(self.files.dir, "other.key",
                          shared_pki().client.private_key_pem(), 0o600)
        argv = self.files.argv()
        argv[3] = other
        self.assertStartupError(argv, other, "does not match")

    def test_garbage_key(self) -> None:
        bad = write_pem(self.files.dir, "bad.key", b"not a key")
        argv = self.files.argv()
        argv[3] = bad
        self.assertStartupError(argv, bad, "private key")

    def test_ca_file_without_certificate(self) -> None:
        empty = write_pem(self.files.dir, "empty.pem", b"# nothing here\n")
        self.assertStartupError(self.files.argv("--ca", empty), empty, "no certificate")

    def test_ca_file_with_leaf(self) -> None:
        leaf = write_pem(self.files.dir, "leaf.pem", shared_pki().client.certificate_pem())
        argv = ["--cert", self.files.cert, "--key", self.files.key, "--ca", leaf]
        self.assertStartupError(argv, leaf, "not a CA")

    def test_no_ca(self) -> None:
        argv = ["--cert", self.files.cert, "--key", self.files.key, "--ca",
                os.path.join(self.files.dir, "absent.pem")]
        self.assertStartupError(argv, "absent.pem", "does not exist")

    def test_expired_server_certificate(self) -> None:
        now = utcnow()
        old = CertificateAuthority.create().issue_server(
            "localhost", not_before=now - 10 * DAY, not_after=now - DAY)
        cert = write_pem(self.files.dir, "old.pem", old.certificate_pem())
        key = write_pem(self.files.dir, "old.key", old.private_key_pem(), 0o600)
        self.assertStartupError(["--cert", cert, "--key", key, "--ca", self.files.ca],
                                cert, "expired")

    def test_self_signed_needs_pins(self) -> None:
        self.assertStartupError(self.files.argv("--allowed-types", "all"), "--pin")

    def test_bad_pin(self) -> None:
        self.assertStartupError(self.files.argv("--allowed-types", "all", "--pin", "abc"),
                                "--pin", "not a SHA-256 fingerprint")

    def test_pins(self) -> None:
        cert = self_signed_client("pinned")
        colons = ":".join(cert.fingerprint[i:i + 2] for i in range(0, 64, 2)).upper()
        options = parse(self.files.argv("--allowed-types", "all", "--pin", colons))
        self.assertEqual(options.verifier.pins, frozenset({cert.fingerprint}))
        listing = write_pem(self.files.dir, "pins.txt",
                            f"# pinned\n{cert.fingerprint}  # device 1\n".encode())
        options = parse(self.files.argv("--allowed-types", "selfsigned", "--pins", listing))
        self.assertEqual(options.verifier.pins, frozenset({cert.fingerprint}))
        self.assertEqual(options.settings.roots, ())
        certs = write_pem(self.files.dir, "pins.pem", cert.certificate_pem())
        options = parse(self.files.argv("--allowed-types", "all", "--pins", certs))
        self.assertEqual(options.verifier.pins, frozenset({cert.fingerprint}))
        bad = write_pem(self.files.dir, "bad-pins.txt", b"zz\n")
        self.assertStartupError(self.files.argv("--allowed-types", "all", "--pins", bad),
                                "bad-pins.txt:1")


class TwistdTests(TestCase):
    """A real ``twistd -n certsrv`` process serves curl, and refuses bad config cleanly."""

    timeout = 60

    def setUp(self) -> None:
        self.files = _Files(self.mktemp())
        self.env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))

    def twistd(self, *argv: str) -> list[str]:
        return [sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
                "-n", "--pidfile=", "certsrv", *argv]

    @defer.inlineCallbacks
    def test_serves_curl(self) -> Any:
        port = _free_port()
        pki = shared_pki()
        client = write_pem(self.files.dir, "client.pem", pki.client.chain_pem())
        key = write_pem(self.files.dir, "client.key", pki.client.private_key_pem(), 0o600)
        from tests._servers import Collect as _Collect

        done: defer.Deferred[tuple[bytes, bytes, int]] = defer.Deferred()
        argv = self.twistd(*self.files.argv("--listen", f"tcp:{port}:interface=127.0.0.1"))
        process = reactor.spawnProcess(_Collect(b"", done), argv[0], argv,  # type: ignore[attr-defined]
                                       env=self.env)

        def stop() -> defer.Deferred[Any]:
            if process.pid is not None:
                process.signalProcess(signal.SIGTERM)
            return done

        self.addCleanup(stop)
        curl = ["curl", "-sS", "--retry", "20", "--retry-connrefused", "--retry-delay", "1",
                "--max-time", "30", "--cacert", self.files.ca, "--cert", client, "--key", key,
                "--resolve", f"localhost:{port}:127.0.0.1", f"https://localhost:{port}/secure"]
        out, err, code = yield run(curl)
        self.assertEqual(code, 0, err)
        self.assertIn(b"Client certificate accepted", out)
        server_out, server_err, exit_code = yield stop()
        self.assertEqual(exit_code, 0, "SIGTERM is a graceful stop")
        self.assertIn(b"accepted client certificate CN=alice", server_out + server_err)
        self.assertNotIn(b"Traceback", server_out + server_err)


class StartupErrorTests(TestCase):
    """A real ``twistd -n certsrv`` that cannot start says why in one line, then ``see:``."""

    timeout = 60

    def setUp(self) -> None:
        self.files = _Files(self.mktemp())
        self.env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))

    async def refused(self, argv: list[str], *fragments: str) -> tuple[str, str]:
        """Run twistd with ``argv``: exit status 1, stderr one line naming ``fragments``
        then the ``see:`` line, and no traceback; (stdout, the line)."""
        command = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
                   "-n", "--pidfile=", "certsrv", *argv]
        out, err, code = await run(command, env=self.env)
        self.assertEqual(code, 1, (out, err))
        self.assertNotIn(b"Traceback", out + err)
        lines = err.decode().splitlines()
        self.assertEqual(len(lines), 2, err)
        line, see = lines
        self.assertTrue(line.startswith("certsrv: "), line)
        for fragment in fragments:
            self.assertIn(fragment, line)
        self.assertEqual(see, SEE)
        return out.decode(), line

    async def test_port_in_use(self) -> None:
        """Single process: the listen fails at startup; one log line, no traceback."""
        port = _free_port()
        self.addCleanup(_listening_socket(port).close)
        listen = f"tcp:{port}:interface=127.0.0.1"
        out, line = await self.refused(self.files.argv("--listen", listen))
        self.assertEqual(line, f"certsrv: --listen {listen}: port {port} on 127.0.0.1 is "
                               "already in use by another process")
        logged = [entry for entry in out.splitlines() if "already in use" in entry]
        self.assertEqual(len(logged), 1, out)
        self.assertIn("[certsrv.startup#error]", logged[0])

    async def test_port_in_use_daemon(self) -> None:
        """Daemonizing: twistd's parent reports it and exits 1; the log has the one line."""
        port = _free_port()
        self.addCleanup(_listening_socket(port).close)
        listen = f"tcp:{port}:interface=127.0.0.1"
        directory = os.path.abspath(self.files.dir)
        pidfile, logfile = os.path.join(directory, "twistd.pid"), os.path.join(directory, "log")
        command = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
                   f"--pidfile={pidfile}", f"--logfile={logfile}", "certsrv",
                   *self.files.argv("--listen", listen)]
        out, err, code = await run(command, env=self.env)
        self.assertEqual(code, 1, (out, err))
        self.assertIn(f"StartupFailed: --listen {listen}: port {port}".encode(), err)
        # The daemonized child removes its pid file after telling the parent, which may
        # already have exited: give it a moment.
        for _ in range(100):
            if not os.path.exists(pidfile):
                break
            await deferLater(reactor, 0.05, lambda: None)
        self.assertFalse(os.path.exists(pidfile), "twistd did not remove its pid file")
        with open(logfile) as f:
            log = f.read()
        self.assertNotIn("Traceback", log)
        self.assertEqual(len([line for line in log.splitlines() if "already in use" in line]),
                         1, log)

    async def test_port_in_use_with_workers(self) -> None:
        """--workers 2: the supervisor refuses before starting any worker."""
        port = _free_port()
        self.addCleanup(_listening_socket(port).close)
        listen = f"tcp:{port}:interface=127.0.0.1"
        out, _ = await self.refused(self.files.argv("--listen", listen, "--workers", "2"),
                                    f"certsrv: --listen {listen}: port {port} on 127.0.0.1 "
                                    "is already in use by another process")
        self.assertEqual(out, "")

    async def test_metrics_port_in_use(self) -> None:
        """--metrics is named when its port is the busy one."""
        port = _free_port()
        self.addCleanup(_listening_socket(port).close)
        metrics = f"tcp:{port}:interface=127.0.0.1"
        await self.refused(self.files.argv("--listen", "tcp:0:interface=127.0.0.1",
                                           "--metrics", metrics),
                           f"certsrv: --metrics {metrics}: port {port} on 127.0.0.1 is "
                           "already in use")

    async def test_bad_choice(self) -> None:
        out, line = await self.refused(self.files.argv("--http2", "yes"))
        self.assertEqual(line, "certsrv: --http2 must be one of on, off (got 'yes')")
        self.assertEqual(out, "")

    async def test_bad_worker_count(self) -> None:
        _, line = await self.refused(self.files.argv("--workers", "two"))
        self.assertEqual(line, "certsrv: --workers must be a positive number or auto, "
                               "not 'two'")

    async def test_bad_number(self) -> None:
        _, line = await self.refused(self.files.argv("--max-connections", "lots"))
        self.assertEqual(line, "certsrv: --max-connections must be a whole number, not 'lots'")

    async def test_app_not_importable(self) -> None:
        name = "no_such_module_for_certsrv.app"
        await self.refused(self.files.argv("--app", name), f"certsrv: --app {name}: cannot "
                           "import it", "--app-path")

    async def test_unknown_option(self) -> None:
        _, line = await self.refused(self.files.argv("--bogus"))
        self.assertEqual(line, "certsrv: unknown option --bogus")

    async def test_bad_endpoint(self) -> None:
        await self.refused(self.files.argv("--listen", "tcp:eighty"),
                           "certsrv: --listen tcp:eighty: not a server endpoint")

    async def test_missing_certificate(self) -> None:
        missing = os.path.join(self.files.dir, "missing.pem")
        out, line = await self.refused(["--cert", missing, "--key", self.files.key,
                                        "--ca", self.files.ca])
        self.assertEqual(line, f"certsrv: {missing}: server certificate file does not exist")
        self.assertEqual(out, "")


class KeyModeTests(SynchronousTestCase):
    """A server key readable by others is reported at startup."""

    def test_warns_for_exposed_key(self) -> None:
        from tests._support import captured_events

        files = _Files(self.mktemp())
        os.chmod(files.key, 0o644)
        with captured_events("certsrv.config") as events:
            parse(files.argv())
        self.assertEqual([e["reason"] for e in events], ["key_exposed"])
        os.chmod(files.key, 0o600)
        with captured_events("certsrv.config") as events:
            parse(files.argv())
        self.assertEqual(events, [])


class OptionTests(SynchronousTestCase):
    """The limit and --metrics options of ``twistd certsrv``."""

    def test_options(self) -> None:
        from twisted.python import usage

        from tests._support import Files as _Files
        from tests._support import options as parse

        files = _Files(self.mktemp())
        options = parse(files.argv("--metrics", "tcp:9100", "--header-timeout", "5",
                                   "--body-timeout", "7"))
        self.assertEqual(options["metrics"], "tcp:9100:interface=127.0.0.1")
        self.assertEqual((options.limits.header_timeout, options.limits.body_timeout), (5, 7))
        for name in ("--header-timeout", "--body-timeout"):
            self.assertRaises(usage.UsageError, parse, files.argv(name, "0"))



class KeyPassphraseTests(SynchronousTestCase):
    """--key-passphrase-env and --key-passphrase-file; a terminal prompt at startup only."""

    def setUp(self) -> None:
        self.files = _Files(self.mktemp())
        self.secret = "correct horse battery"
        write_pem(self.files.dir, "server.key",
                  shared_pki().server.private_key_pem(self.secret.encode()), 0o600)
        self.patch(passphrase, "interactive", lambda: False)

    def test_env_and_file(self) -> None:
        os.environ["CERTSRV_TEST_KEY_PW"] = self.secret
        self.addCleanup(os.environ.pop, "CERTSRV_TEST_KEY_PW")
        options = parse(self.files.argv("--key-passphrase-env", "CERTSRV_TEST_KEY_PW"))
        self.assertEqual(options.settings.certificate, shared_pki().server.certificate)
        path = write_pem(self.files.dir, "pw", self.secret.encode(), 0o600)
        options = parse(self.files.argv("--key-passphrase-file", path))
        self.assertEqual(repr(options.config.passphrase), f"<Passphrase from file {path}>")
        self.assertRaises(usage.UsageError, parse, self.files.argv(
            "--key-passphrase-file", path, "--key-passphrase-env", "X"))

    def test_no_terminal_names_the_options(self) -> None:
        with self.assertRaises(ConfigurationError) as caught:
            parse(self.files.argv())
        self.assertEqual(str(caught.exception),
                         f"{self.files.key}: the key is encrypted and there is no terminal to "
                         "ask on for its passphrase: give --key-passphrase-env NAME or "
                         "--key-passphrase-file PATH")
        with self.assertRaises(ConfigurationError) as caught:
            parse(self.files.argv("--workers", "2"))
        self.assertIn("no passphrase was given: give --key-passphrase-env NAME or "
                      "--key-passphrase-file PATH (every worker reads it)",
                      str(caught.exception))

    def test_prompt_once_kept_for_reloads(self) -> None:
        self.patch(passphrase, "interactive", lambda: True)
        asked: list[str] = []

        def ask(prompt: str) -> str:
            asked.append(prompt)
            return self.secret

        self.patch(getpass, "getpass", ask)
        options = parse(self.files.argv())
        self.assertEqual(asked, [f"Passphrase for {self.files.key}: "])
        options.config.load(options.clock)  # a reload: the answer is kept
        self.assertEqual(len(asked), 1)
        self.assertNotIn(self.secret, repr(options.config))

    def test_prompt_never_after_startup(self) -> None:
        """A key encrypted after an unprompted start fails the reload; it never prompts."""
        self.patch(passphrase, "interactive", lambda: True)
        self.patch(getpass, "getpass", self.fail)
        write_pem(self.files.dir, "server.key", shared_pki().server.private_key_pem(), 0o600)
        options = parse(self.files.argv())
        write_pem(self.files.dir, "server.key",
                  shared_pki().server.private_key_pem(self.secret.encode()), 0o600)
        with self.assertRaises(ConfigurationError) as caught:
            options.config.load(options.clock)
        self.assertIn("(the key was not encrypted at startup, so no passphrase was asked)",
                      str(caught.exception))
