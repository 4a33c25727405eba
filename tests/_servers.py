"""Real servers and peers for tests: free low ports, twistd and nginx children, their file
descriptors, commands such as openssl and curl, certsrv listeners on 127.0.0.1."""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import socket
import sys
import tempfile
from typing import Any

from twisted.internet import defer, endpoints, protocol, reactor, task
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.error import ConnectError, ProcessExitedAlready
from twisted.internet.task import deferLater
from twisted.python.failure import Failure
from twisted.trial.unittest import SkipTest, TestCase
from twisted.web import resource, server

import certsrv
from certsrv import identity_of, protected_site
from certsrv.pki import IssuedCertificate
from certsrv.server.options import makeService
from tests._support import (
    Files,
    make_server_factory,
    options,
    pieces,
    proxy_certs,
    shared_pki,
    write_pem,
)

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(certsrv.__file__)))


def low_port() -> int:
    """A port below the ephemeral range (32768) that nothing on 127.0.0.1 uses now."""
    for _ in range(200):
        port = random.randrange(20_000, 32_000)
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port below 32768")


def twistd_argv(*argv: str, nofile: int | None = None) -> list[str]:
    """The command line of ``twistd -n`` with ``argv`` (under ``prlimit --nofile`` if given)."""
    command = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "-n",
               "--pidfile=", *argv]
    if nofile is not None:
        command = ["/usr/bin/prlimit", f"--nofile={nofile}:{nofile}", "--", *command]
    return command


def twistd_env() -> dict[str, str]:
    """An environment in which twistd finds this checkout's plugins."""
    path = [_REPO, *(p for p in sys.path if p)]
    return dict(os.environ, PYTHONPATH=os.pathsep.join(path))


class Twistd(protocol.ProcessProtocol):
    """A child process whose output is kept; ``ended`` fires with its exit code."""

    def __init__(self) -> None:
        self.output = b""
        self.ended: defer.Deferred[int | None] = defer.Deferred()

    def outReceived(self, data: bytes) -> None:
        self.output += data

    def errReceived(self, data: bytes) -> None:
        self.output += data

    def processEnded(self, reason: Failure) -> None:
        self.ended.callback(getattr(reason.value, "exitCode", None))

    @property
    def text(self) -> str:
        """The output so far, decoded."""
        return self.output.decode(errors="replace")


def spawn(case: Any, argv: list[str], cwd: str | None = None) -> tuple[Any, Twistd]:
    """Start ``argv``; the test's cleanup kills it if it is still running."""
    child = Twistd()
    process = reactor.spawnProcess(child, argv[0], argv,  # type: ignore[attr-defined]
                                   env=twistd_env(), path=cwd)

    async def stop() -> None:
        try:
            process.signalProcess("KILL")
        except ProcessExitedAlready:
            pass
        await child.ended

    case.addCleanup(stop)
    return process, child


async def wait_listening(port: int, child: Twistd, tries: int = 300) -> None:
    """Poll until 127.0.0.1:``port`` accepts connections (fails if the child exited)."""
    for _ in range(tries):
        if child.ended.called:
            raise AssertionError(f"the server exited: {child.text}")
        try:
            connected = await endpoints.connectProtocol(
                endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", port), protocol.Protocol())
        except Exception:
            await task.deferLater(reactor, 0.1, lambda: None)
            continue
        connected.transport.loseConnection()
        return
    raise AssertionError(f"nothing listens on {port}: {child.text}")


def fds(pid: int) -> list[str]:
    """What the open file descriptors of process ``pid`` point to."""
    names = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            names.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except OSError:
            pass  # closed meanwhile
    return names


def files(pid: int) -> list[str]:
    """The regular files (temporary ones included) process ``pid`` holds open."""
    return [n for n in fds(pid) if n.startswith("/") and not n.startswith(("/dev/", "/proc/"))]


def alive(pid: int) -> bool:
    """Whether ``pid`` is a running process (not gone, not a zombie)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def listening(pid: int, port: int) -> list[str]:
    """The local addresses (hex, as in /proc/net/tcp) on which ``pid`` listens on ``port``."""
    found = []
    for table in ("tcp", "tcp6"):
        with open(f"/proc/{pid}/net/{table}") as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                address, state = fields[1], fields[3]
                if state == "0A" and int(address.rsplit(":", 1)[1], 16) == port:
                    found.append(address.rsplit(":", 1)[0])
    return found


# --- commands and peers on 127.0.0.1 -----------------------------------------------------------

REQUEST = b"GET /secure HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
HEALTH = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
SEE = "see: twistd certsrv --help"


class Collect(protocol.ProcessProtocol):
    """Writes ``stdin`` to a child, keeps its output; ``done`` fires (stdout, stderr, code)."""

    def __init__(self, stdin: bytes, done: defer.Deferred[tuple[bytes, bytes, int]]) -> None:
        self.stdin, self.done, self.out, self.err = stdin, done, b"", b""

    def connectionMade(self) -> None:
        self.transport.write(self.stdin)
        self.transport.closeStdin()

    def outReceived(self, data: bytes) -> None:
        self.out += data

    def errReceived(self, data: bytes) -> None:
        self.err += data

    def processEnded(self, reason: Any) -> None:
        self.done.callback((self.out, self.err, reason.value.exitCode))


def run(args: list[str], stdin: bytes = b"", env: dict[str, str] | None = None
        ) -> defer.Deferred[tuple[bytes, bytes, int]]:
    """Run a command without blocking the reactor; fire with (stdout, stderr, exit code)."""
    done: defer.Deferred[tuple[bytes, bytes, int]] = defer.Deferred()
    if env is None:
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    executable = shutil.which(args[0], path=env.get("PATH")) or args[0]
    reactor.spawnProcess(Collect(stdin, done), executable, args,  # type: ignore[attr-defined]
                         env=env)
    return done


def listening_socket(port: int) -> socket.socket:
    """Another process's stand-in: a socket listening on 127.0.0.1:``port``."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", port))
    sock.listen()
    return sock


class Peer(protocol.Protocol):
    """Sends ``data`` once connected; ``done`` fires with what came back when the peer closes."""

    def __init__(self, data: bytes = b"") -> None:
        self.data = data
        self.received = b""
        self.done: defer.Deferred[bytes] = defer.Deferred()

    def connectionMade(self) -> None:
        if self.data:
            self.transport.write(self.data)

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Any = None) -> None:
        self.done.callback(self.received)


async def connect(port: int, peer: Peer) -> Peer:
    """``peer`` connected over plain TCP to 127.0.0.1:``port``."""
    await endpoints.connectProtocol(
        endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", port), peer)
    return peer


async def tcp_exchange(port: int, request: bytes) -> bytes:
    """Send ``request`` on a new connection to 127.0.0.1:``port``; all that came back."""
    return await (await connect(port, Peer(request))).done


def status_of(response: bytes) -> int:
    """The status of an HTTP/1.1 response, 0 if it is none."""
    return int(response.split(b" ", 2)[1]) if response.startswith(b"HTTP/1.1 ") else 0


# --- certsrv listeners for openssl, curl and nginx ---------------------------------------------


class Listener(TestCase):
    """Starts a certsrv listener on 127.0.0.1 for each test; openssl and curl as clients."""

    timeout = 60

    def setUp(self) -> None:
        for tool in ("openssl", "curl"):
            if shutil.which(tool) is None:
                raise SkipTest(f"{tool} is not installed")
        self.pki = shared_pki()
        self.dir = self.mktemp()
        self.ca = write_pem(self.dir, "ca.pem", self.pki.root.certificate_pem())

    def listen(self, **kwargs: Any) -> int:
        """Start a server with ``kwargs`` for its settings/verifier; return its port."""
        settings = self.pki.settings(**kwargs.pop("settings", {}))
        factory = make_server_factory(settings, clock=reactor, **kwargs)  # type: ignore[arg-type]
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")  # type: ignore[attr-defined]
        self.addCleanup(port.stopListening)
        return int(port.getHost().port)

    def files(self, cert: IssuedCertificate, name: str, with_chain: bool = True) -> tuple[str, str]:
        """Write ``cert`` (with or without its chain) and its key for the CLI tools."""
        pem = cert.chain_pem() if with_chain else cert.certificate_pem()
        return (write_pem(self.dir, f"{name}.pem", pem),
                write_pem(self.dir, f"{name}.key", cert.private_key_pem(), 0o600))

    def s_client(self, port: int, cert: IssuedCertificate | None, *extra: str,
                 with_chain: bool = True) -> defer.Deferred[tuple[bytes, bytes, int]]:
        args = ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername",
                "localhost", "-CAfile", self.ca, "-verify_return_error", "-ign_eof", *extra]
        if cert is not None:
            path, key = self.files(cert, "s_client", with_chain=False)
            args += ["-cert", path, "-key", key]
            if with_chain and cert.chain:
                # s_client sends only the first certificate of -cert; the rest goes here.
                chain = b"".join(IssuedCertificate(c, cert.private_key).certificate_pem()
                                 for c in cert.chain)
                args += ["-cert_chain", write_pem(self.dir, "s_client-chain.pem", chain)]
        return run(args, REQUEST)

    def curl(self, port: int, cert: IssuedCertificate | None, *extra: str,
             with_chain: bool = True) -> defer.Deferred[tuple[bytes, bytes, int]]:
        args = ["curl", "-sS", "--max-time", "20", "--cacert", self.ca, "-w",
                "\n%{http_code}", *extra]
        if cert is not None:
            path, key = self.files(cert, "curl", with_chain)
            args += ["--cert", path, "--key", key]
        return run([*args, f"https://localhost:{port}/secure", "--resolve",
                    f"localhost:{port}:127.0.0.1"])


DOCS = os.path.join(_REPO, "docs")
NGINX_TEMPLATE = os.path.join(DOCS, "nginx-front.conf")
FORWARDED_NAMES = ("client-cert", "client-cert-chain", "x-ssl-client-cert",
                   "x-forwarded-client-cert")


class HeaderEcho(resource.Resource):
    """What the application sees: the identity and the forwarded-certificate headers."""

    isLeaf = True

    def render_GET(self, request: server.Request) -> bytes:
        identity = identity_of(request)
        seen = {name: [v.decode("latin-1") for v in request.requestHeaders.getRawHeaders(
            name, [])] for name in FORWARDED_NAMES if request.requestHeaders.hasHeader(name)}
        request.setHeader(b"content-type", b"application/json")
        return json.dumps({"subject": identity.subject if identity else None,
                           "forwarded_headers": seen}).encode()


class ProxyServers(TestCase):
    """certsrv listeners on 127.0.0.1, configured with the plugin's options."""

    timeout = 60

    def setUp(self) -> None:
        self.files = Files(self.mktemp())
        self.pki = shared_pki()

    def listen_factory(self, factory: Any) -> int:
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")  # type: ignore[attr-defined]
        self.addCleanup(port.stopListening)
        return int(port.getHost().port)

    def certsrv(self, *argv: str) -> int:
        """``twistd certsrv`` with ``argv`` (its default tree, /secure); the port."""
        factory, _ = pieces(makeService(options(self.files.argv(*argv), reactor)))
        return self.listen_factory(factory)

    def echo(self, *argv: str) -> int:
        """``protected_site`` serving ``HeaderEcho`` with ``argv``; the port."""
        return self.listen_factory(protected_site(HeaderEcho(), self.files.argv(*argv),
                                                  clock=reactor))



def nginx_binary() -> str | None:
    """nginx's path, if it is installed (it often lives in /usr/sbin, off a user PATH)."""
    found = shutil.which("nginx")
    if found is None and os.access("/usr/sbin/nginx", os.X_OK):
        found = "/usr/sbin/nginx"
    return found


def render_nginx_conf(listen: str, certsrv_address: str, certs: str) -> str:
    """docs/nginx-front.conf with its placeholders filled in."""
    with open(NGINX_TEMPLATE, encoding="utf-8") as f:
        text = f.read()
    values = {"NGINX_LISTEN": listen, "CERTSRV_ADDRESS": certsrv_address, "CERTS": certs}
    for name, value in values.items():
        text = text.replace("${" + name + "}", value)
    left = re.findall(r"\$\{[A-Z_]+\}", text)
    if left:
        raise AssertionError(f"unknown placeholders in {NGINX_TEMPLATE}: {left}")
    return text


class _Probe(protocol.Protocol):
    def __init__(self) -> None:
        self.closed: defer.Deferred[None] = defer.Deferred()

    def connectionMade(self) -> None:
        self.transport.loseConnection()

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        self.closed.callback(None)


class NginxFront(ProxyServers):
    """Real nginx terminates mutual TLS with docs/nginx-front.conf and forwards to certsrv."""

    def setUp(self) -> None:
        super().setUp()
        binary = nginx_binary()
        if binary is None:
            raise SkipTest("nginx not installed (Debian package nginx-light; .ci/run installs it)")
        self.nginx = binary
        for tool in ("curl",):
            if shutil.which(tool) is None:
                raise SkipTest(f"{tool} is not installed")
        self.certsrv_port = self.certsrv("--forwarded-cert", "nginx",
                                         "--trusted-proxy", "127.0.0.1")
        return self.start_nginx()

    @defer.inlineCallbacks
    def start_nginx(self) -> Any:
        prefix = os.path.abspath(os.path.join(self.files.dir, "nginx"))
        os.makedirs(prefix)
        proxy = proxy_certs()["proxy"]
        for name, data, mode in (
            ("server.pem", self.pki.server.chain_pem(), 0o644),
            ("server.key", self.pki.server.private_key_pem(), 0o600),
            ("client-ca.pem", self.pki.root.certificate_pem(), 0o644),
            ("proxy.pem", proxy.chain_pem(), 0o644),
            ("proxy.key", proxy.private_key_pem(), 0o600),
            ("certsrv-ca.pem", self.pki.root.certificate_pem(), 0o644),
        ):
            write_pem(prefix, name, data, mode)
        self.port = low_port()
        conf = write_pem(prefix, "nginx.conf", render_nginx_conf(
            f"127.0.0.1:{self.port}", f"127.0.0.1:{self.certsrv_port}", prefix).encode())
        self.prefix = prefix
        self.ended: defer.Deferred[tuple[bytes, bytes, int]] = defer.Deferred()
        argv = [self.nginx, "-p", prefix + "/", "-c", conf, "-g", "daemon off;"]
        process = reactor.spawnProcess(  # type: ignore[attr-defined]
            Collect(b"", self.ended), argv[0], argv,
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")})
        self.addCleanup(self.stop_nginx, process)
        yield self.wait_until_listening()

    def stop_nginx(self, process: Any) -> defer.Deferred[Any]:
        try:
            process.signalProcess(signal.SIGTERM)
        except ProcessExitedAlready:
            pass
        return self.ended

    def nginx_log(self) -> str:
        try:
            with open(os.path.join(self.prefix, "error.log"), encoding="utf-8") as f:
                return f.read()
        except OSError:
            return ""

    @defer.inlineCallbacks
    def wait_until_listening(self) -> Any:
        """Connect until nginx accepts (it has no readiness signal); fail if it exits."""
        deadline = reactor.seconds() + 20  # type: ignore[attr-defined]
        while True:
            if self.ended.called:
                out, err, code = yield self.ended
                self.fail(f"nginx exited with {code}: {(out + err).decode(errors='replace')}"
                          f"\n{self.nginx_log()}")
            probe = _Probe()
            try:
                yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", self.port),
                                      probe)
            except ConnectError:
                if reactor.seconds() > deadline:  # type: ignore[attr-defined]
                    self.fail(f"nginx did not listen on {self.port}\n{self.nginx_log()}")
                yield deferLater(reactor, 0.02, lambda: None)
                continue
            yield probe.closed
            return

    def curl(self, port: int, cert: IssuedCertificate | None, *extra: str
             ) -> defer.Deferred[tuple[bytes, bytes, int]]:
        args = ["curl", "-sS", "--max-time", "20", "--cacert", self.files.ca,
                "-H", "Accept: application/json", "-w", "\n%{http_code}", *extra]
        if cert is not None:
            name = cert.fingerprint[:16]
            args += ["--cert", write_pem(self.files.dir, f"{name}.pem", cert.chain_pem()),
                     "--key", write_pem(self.files.dir, f"{name}.key", cert.private_key_pem(),
                                        0o600)]
        return run([*args, "--resolve", f"localhost:{port}:127.0.0.1",
                    f"https://localhost:{port}/secure"])

    @defer.inlineCallbacks
    def answer(self, port: int, cert: IssuedCertificate | None, *extra: str) -> Any:
        out, err, code = yield self.curl(port, cert, *extra)
        self.assertEqual(code, 0, f"{err!r}\n{self.nginx_log()}")
        body, _, status = out.rpartition(b"\n")
        try:
            return int(status), json.loads(body)
        except ValueError:
            self.fail(f"not JSON: {out!r}\n{self.nginx_log()}")


# --- HAProxy in front of certsrv nodes ---------------------------------------------------------

HAPROXY_TEMPLATE = os.path.join(DOCS, "haproxy.cfg")


def haproxy_binary() -> str | None:
    """haproxy's path, if it is installed (Debian puts it in /usr/sbin, off a user PATH)."""
    found = shutil.which("haproxy")
    if found is None and os.access("/usr/sbin/haproxy", os.X_OK):
        found = "/usr/sbin/haproxy"
    return found


def render_haproxy_cfg(values: dict[str, str]) -> str:
    """docs/haproxy.cfg with its placeholders filled in."""
    with open(HAPROXY_TEMPLATE, encoding="utf-8") as f:
        text = f.read()
    for name, value in values.items():
        text = text.replace("${" + name + "}", value)
    left = re.findall(r"\$\{[A-Z0-9_]+\}", text)
    if left:
        raise AssertionError(f"unknown placeholders in {HAPROXY_TEMPLATE}: {left}")
    return text


class FrontNode:
    """One ``twistd certsrv`` node behind HAProxy: its ports, and its current process."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.port, self.metrics = low_port(), low_port()
        self.process: Any = None
        self.child = Twistd()
        self.runs: list[Twistd] = []

    @property
    def text(self) -> str:
        """The output of every run of the node so far."""
        return "".join(run.text for run in self.runs)


class HAProxyFront(ProxyServers):
    """Real HAProxy with docs/haproxy.cfg (TCP mode, send-proxy-v2) in front of two ``twistd
    certsrv`` nodes listening on ``haproxy:tcp:`` with ``--metrics`` and ``--drain-delay``; a
    stats socket (a second config file) tells what HAProxy thinks of each node."""

    timeout = 120
    # Longer than docs/haproxy.cfg's check interval (1 s) plus the check's own time.
    DRAIN_DELAY = 2.0
    NODE_ARGS: tuple[str, ...] = ()

    def setUp(self) -> Any:
        super().setUp()
        binary = haproxy_binary()
        if binary is None:
            raise SkipTest("haproxy not installed (Debian package haproxy; .ci/run installs it)")
        for tool in ("curl", "openssl"):
            if shutil.which(tool) is None:
                raise SkipTest(f"{tool} is not installed")
        self.haproxy = binary
        self.nodes = [FrontNode("node1"), FrontNode("node2")]
        return defer.ensureDeferred(self._start())

    async def _start(self) -> None:
        for node in self.nodes:
            self.start_node(node)
        for node in self.nodes:
            await wait_listening(node.metrics, node.child)
        self.port = low_port()
        prefix = os.path.abspath(os.path.join(self.files.dir, "haproxy"))
        os.makedirs(prefix)
        values = {"HAPROXY_LISTEN": f"127.0.0.1:{self.port}"}
        for i, node in enumerate(self.nodes, 1):
            values[f"NODE{i}"] = f"127.0.0.1:{node.port}"
            values[f"NODE{i}_METRICS"] = str(node.metrics)
        conf = write_pem(prefix, "haproxy.cfg", render_haproxy_cfg(values).encode())
        # A UNIX socket path has at most 107 bytes (HAProxy: 97); the test's directory is deeper.
        sockets = tempfile.mkdtemp(prefix="certsrv-haproxy-")
        self.addCleanup(shutil.rmtree, sockets, True)
        self.stats_socket = os.path.join(sockets, "admin.sock")
        stats = write_pem(prefix, "stats.cfg",
                          f"global\n    stats socket {self.stats_socket} mode 600\n".encode())
        _, self.haproxy_child = spawn(self, [self.haproxy, "-db", "-f", conf, "-f", stats])
        for node in self.nodes:
            await self.wait_state(node, "UP")

    def start_node(self, node: FrontNode) -> None:
        """Start (or start again) ``node``'s twistd process."""
        argv = twistd_argv(
            "certsrv", "--listen", f"haproxy:tcp:{node.port}:interface=127.0.0.1",
            "--metrics", f"tcp:{node.metrics}", "--drain-delay", str(self.DRAIN_DELAY),
            *self.files.argv(*self.NODE_ARGS))
        node.process, node.child = spawn(self, argv)
        node.runs.append(node.child)

    async def states(self) -> dict[str, str]:
        """HAProxy's status of each node (UP, DOWN, ``UP 1/2`` while rising, ...)."""
        peer = Peer(b"show stat\n")
        await endpoints.connectProtocol(
            endpoints.UNIXClientEndpoint(reactor, self.stats_socket), peer)
        found = {}
        for line in (await peer.done).decode().splitlines():
            fields = line.split(",")
            if len(fields) > 17 and fields[0] == "certsrv_nodes":
                found[fields[1]] = fields[17]
        return found

    async def wait_state(self, node: FrontNode, state: str, seconds: float = 30) -> None:
        """Poll the stats socket until HAProxy gives ``node`` the status ``state``."""
        deadline = reactor.seconds() + seconds  # type: ignore[attr-defined]
        seen: dict[str, str] = {}
        while reactor.seconds() < deadline:  # type: ignore[attr-defined]
            if self.haproxy_child.ended.called:
                self.fail(f"haproxy exited: {self.haproxy_child.text}")
            try:
                seen = await self.states()
            except (ConnectError, OSError):
                seen = {}
            if seen.get(node.name) == state:
                return
            await task.deferLater(reactor, 0.05, lambda: None)
        self.fail(f"HAProxy never had {node.name} {state} (last: {seen}):\n"
                  f"{self.haproxy_child.text[-3000:]}")

    def curl(self, port: int, cert: IssuedCertificate | None, *extra: str
             ) -> defer.Deferred[tuple[bytes, bytes, int]]:
        """curl GET /secure on 127.0.0.1:``port`` (JSON), presenting ``cert`` if given."""
        args = ["curl", "-sS", "--max-time", "20", "--cacert", self.files.ca,
                "-H", "Accept: application/json", "-w", "\n%{http_code}", *extra]
        if cert is not None:
            # Written once: concurrent curls must not read a file being rewritten.
            name = os.path.join(self.files.dir, cert.fingerprint[:16])
            if not os.path.exists(name + ".key"):
                write_pem(self.files.dir, f"{cert.fingerprint[:16]}.pem", cert.chain_pem())
                write_pem(self.files.dir, f"{cert.fingerprint[:16]}.key",
                          cert.private_key_pem(), 0o600)
            args += ["--cert", name + ".pem", "--key", name + ".key"]
        return run([*args, "--resolve", f"localhost:{port}:127.0.0.1",
                    f"https://localhost:{port}/secure"])
