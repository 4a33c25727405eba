#!/usr/bin/env python3
"""
Benchmark certsrv against nginx: mutual-TLS handshakes, keep-alive requests, CPU and memory.

    python bench/bench.py [--quick] [--rounds N] [--out FILE] [--key-type ecdsa|rsa]
                          [--certsrv-args "..."] [--variant NAME="extra certsrv args" ...]
                          [--baseline NAME="certsrv args"] [--ocsp-responder] [--profile]

See bench/README.rst for what is measured and how to read the table. Only the standard
library and the repository's own dependencies are used; the load generators are
``openssl s_time``, ``ab`` and ``bench/keepalive.c`` (built with gcc into a temporary
directory at start-up).
"""

from __future__ import annotations

import argparse
import atexit
import datetime
import functools
import json
import os
import platform
import re
import resource
import select
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

CLK_TCK = os.sysconf("SC_CLK_TCK")
SERVER_CORE, LOAD_CORE = 0, 1
NGINX = "nginx"
UVICORN = "uvicorn"
BARE = "bare"  # bench/bare_twisted.py: twisted.web doing mTLS with no checks
PEERS = (NGINX, UVICORN, BARE)
BASELINE = "certsrv"


def which(tool: str) -> str | None:
    """``shutil.which``, also looking in the sbin directories (nginx lives in /usr/sbin)."""
    found = shutil.which(tool)
    if found is None:
        for d in ("/usr/sbin", "/usr/local/sbin", "/sbin"):
            if os.access(os.path.join(d, tool), os.X_OK):
                return os.path.join(d, tool)
    return found


def note(message: str) -> None:
    """Progress and warnings go to stderr; stdout carries only the final table."""
    print(f"[bench] {message}", file=sys.stderr, flush=True)


class BenchError(Exception):
    """A failure that stops the benchmark with a clear message."""


# --------------------------------------------------------------------------- children

_children: list[subprocess.Popen[Any]] = []


def _die_with_parent() -> None:
    """In the child: get SIGTERM if the harness dies without cleaning up (SIGKILL)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def spawn(cmd: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
    """Start a child in its own process group (so it and its children can be stopped)."""
    proc = subprocess.Popen(list(cmd), start_new_session=True, preexec_fn=_die_with_parent,
                            **kwargs)
    _children.append(proc)
    return proc


def stop_process(proc: subprocess.Popen[Any], grace: float = 5.0) -> None:
    """SIGTERM the child's process group, then SIGKILL it after ``grace`` seconds."""
    if proc.poll() is None:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                proc.wait(timeout=grace)
                break
            except subprocess.TimeoutExpired:
                continue
    else:
        # The leader is gone; make sure nothing it started lingers in its group.
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream is not None:
            try:
                stream.close()
            except OSError:
                pass
    if proc in _children:
        _children.remove(proc)


def stop_all_children() -> None:
    for proc in reversed(list(_children)):
        stop_process(proc, grace=2.0)


def _on_signal(signum: int, frame: Any) -> None:
    raise SystemExit(f"interrupted by signal {signum}")


def run_tool(cmd: Sequence[str], timeout: float, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """Run a short-lived child to completion (bounded in time), capturing its output."""
    proc = spawn(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        stop_process(proc)
        raise BenchError(
            f"{cmd[0]} did not finish within {timeout:.0f}s: {shlex.join(cmd)}") from None
    finally:
        if proc in _children and proc.poll() is not None:
            _children.remove(proc)
    return subprocess.CompletedProcess(list(cmd), proc.returncode, out, err)


class LineReader:
    """Reads lines from a child's stdout with a deadline (no blocking forever)."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        self.proc = proc
        self.fd = proc.stdout.fileno()
        self.buf = b""

    def readline(self, timeout: float, what: str) -> str:
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BenchError(f"timed out after {timeout:.0f}s waiting for {what}")
            ready, _, _ = select.select([self.fd], [], [], left)
            if ready:
                chunk = os.read(self.fd, 65536)
                if not chunk:
                    raise BenchError(f"the load generator exited before {what} "
                                     f"(exit status {self.proc.wait(5)})")
                self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line.decode()


# --------------------------------------------------------------------------- /proc

def _stat_fields(pid: int) -> list[str]:
    with open(f"/proc/{pid}/stat") as f:
        text = f.read()
    # The command name (field 2) may contain spaces and parentheses.
    return text[text.rindex(")") + 2:].split()


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = int(_stat_fields(int(entry))[1])
            except (OSError, ValueError, IndexError):
                continue
            parents.setdefault(ppid, []).append(int(entry))
    tree, todo = [], [pid]
    while todo:
        p = todo.pop()
        tree.append(p)
        todo.extend(parents.get(p, ()))
    return tree


def cpu_times(pid: int, tree: bool = True) -> tuple[float, float]:
    """(user, system) CPU seconds of ``pid`` (all threads), its live descendants and its
    reaped children."""
    user = system = 0
    for i, p in enumerate(process_tree(pid) if tree else [pid]):
        try:
            f = _stat_fields(p)
        except OSError:
            continue
        # Fields 14..17 of /proc/PID/stat (utime stime cutime cstime) are at 11..14 here.
        user += int(f[11])
        system += int(f[12])
        if i == 0:
            user += int(f[13])
            system += int(f[14])
    return user / CLK_TCK, system / CLK_TCK


def cpu_seconds(pid: int, tree: bool = True) -> float:
    return sum(cpu_times(pid, tree))


def memory_kib(pid: int, field: str) -> int:
    """Sum of a /proc/PID/status field (VmRSS, VmHWM) over the process tree, in KiB."""
    total = 0
    for p in process_tree(pid):
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith(field + ":"):
                        total += int(line.split()[1])
        except OSError:
            continue
    return total


def core_times() -> dict[int, tuple[float, float]]:
    """(busy, steal) seconds of each CPU core since boot, from /proc/stat.

    Busy excludes idle and iowait and includes steal: time the hypervisor gave this
    virtual CPU's slot to someone else, which also inflates the CPU time of whatever
    process was running on it.
    """
    times = {}
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("cpu") and line[3].isdigit():
                name, *values = line.split()
                v = [int(x) for x in values]
                steal = v[7] if len(v) > 7 else 0
                times[int(name[3:])] = ((sum(v[:8]) - v[3] - v[4]) / CLK_TCK, steal / CLK_TCK)
    return times


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def other_cpu_seconds(exclude: set[int]) -> tuple[float, float]:
    """CPU time of every process outside ``exclude``: (user processes, kernel threads).

    utime+stime+cutime+cstime summed over all processes: a process that exits during the
    window moves its time into its parent's cutime, so differences of these sums count
    each CPU-second once (as long as its parent lives).
    """
    user = kernel = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in exclude:
            continue
        try:
            f = _stat_fields(int(entry))
        except OSError:
            continue
        ticks = int(f[11]) + int(f[12]) + int(f[13]) + int(f[14])
        if entry == "2" or f[1] == "2":  # kthreadd and its kernel threads
            kernel += ticks
        else:
            user += ticks
    return user / CLK_TCK, kernel / CLK_TCK


def others_busy_share(exclude: set[int], seconds: float) -> float:
    """Share of one core used by processes outside ``exclude`` over ``seconds``."""
    before = other_cpu_seconds(exclude)[0]
    time.sleep(seconds)
    return (other_cpu_seconds(exclude)[0] - before) / seconds


_quiet_budget = {"left": 0.0}


def wait_for_quiet(server_pid: int | None, what: str, threshold: float = 0.10) -> dict[str, Any]:
    """Before a run, wait (within the --wait-quiet budget) while other processes on the
    machine (other engineers' test runs, say) keep a CPU busy."""
    exclude = {os.getpid()}
    if server_pid:
        exclude.update(process_tree(server_pid))
    waited = 0.0
    share = others_busy_share(exclude, 0.3)
    announced = False
    while share > threshold and _quiet_budget["left"] > 0:
        if not announced:
            note(f"    waiting before {what}: other processes use {share:.0%} of a core "
                 f"(budget {_quiet_budget['left']:.0f}s left)")
            announced = True
        share = others_busy_share(exclude, 1.0)
        waited += 1.0
        _quiet_budget["left"] -= 1.0
    if share > threshold:
        note(f"    measuring {what} although other processes use {share:.0%} of a core")
    return {"waited_s": waited, "others_share_before": share}


class Meter:
    """Server CPU, load-generator CPU and everybody else's CPU over one measured window."""

    def __init__(self, server_pid: int, generator_pid: int | None = None,
                 generator_tree: bool = False) -> None:
        self.server_pid = server_pid
        self.generator_pid = generator_pid
        self.generator_tree = generator_tree  # the generator has worker processes

    def _sample(self) -> dict[str, Any]:
        server_user, server_system = cpu_times(self.server_pid)
        tree = process_tree(self.server_pid)
        exclude = {os.getpid(), *tree}
        if self.generator_pid:
            exclude.add(self.generator_pid)
            if self.generator_tree:
                exclude.update(process_tree(self.generator_pid))
        other_user, other_kernel = other_cpu_seconds(exclude)
        return {
            "t": time.monotonic(),
            "server_user": server_user,
            "server": server_user + server_system,
            "generator": (cpu_seconds(self.generator_pid, tree=self.generator_tree)
                          if self.generator_pid else children_cpu()),
            "other_user": other_user,
            "other_kernel": other_kernel,
            "cores": core_times(),
            # Every server process (the --workers parent and each worker; nginx's master
            # and worker) on its own, all threads included (the root's figure also holds
            # the children it reaped).
            "processes": {p: cpu_seconds(p, tree=False) for p in tree},
        }

    def start(self) -> None:
        self.before = self._sample()

    def stop(self) -> dict[str, Any]:
        after = self._sample()
        b = self.before
        wall = after["t"] - b["t"]

        def delta(key: str) -> float:
            return max(0.0, float(after[key] - b[key]))

        server, generator = delta("server"), delta("generator")
        server_user = delta("server_user")
        other_user, other_kernel = delta("other_user"), delta("other_kernel")
        cores = {c: [a - z for a, z in zip(after["cores"][c], b["cores"].get(c, (0.0, 0.0)),
                                            strict=True)]
                 for c in after["cores"]}
        per_process = {str(p): max(0.0, after["processes"].get(p, 0.0) - b["processes"].get(p, 0.0))
                       for p in after["processes"]}
        return {"wall_s": wall, "server_cpu_s": server, "generator_cpu_s": generator,
                "server_processes": len(after["processes"]),
                "server_cpu_s_by_pid": per_process,
                "server_user_s": server_user, "server_system_s": max(0.0, server - server_user),
                "server_cpu_share": server / wall if wall else 0.0,
                "generator_cpu_share": generator / wall if wall else 0.0,
                # Everybody else: other engineers' processes (a disturbed measurement if
                # large) and kernel threads (ksoftirqd may carry some of our network work).
                "other_processes_cpu_s": other_user, "kernel_threads_cpu_s": other_kernel,
                "other_processes_cpu_share": other_user / wall if wall else 0.0,
                "core_busy_s": {str(c): v[0] for c, v in cores.items()},
                "core_steal_s": {str(c): v[1] for c, v in cores.items()},
                "steal_share": sum(v[1] for v in cores.values()) / wall if wall else 0.0}


# --------------------------------------------------------------------------- setup

PINNED = False


def pin(core: int) -> list[str]:
    """A taskset prefix pinning a command to ``core`` (empty when pinning is off)."""
    return ["taskset", "-c", str(core)] if PINNED else []


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, proc: subprocess.Popen[Any], timeout: float,
                  describe_failure: Callable[[], str]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"the server exited with status {proc.returncode} before "
                             f"listening on port {port}\n{describe_failure()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise BenchError(f"nothing listened on port {port} within {timeout:.0f}s\n"
                     f"{describe_failure()}")


def tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError as e:
        return f"(cannot read {path}: {e})"
    return "\n".join(f"    | {line}" for line in text[-lines:])


def raise_nofile(wanted: int) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, wanted))
            return wanted
        except (ValueError, OSError):
            wanted = hard
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def _describe_key(key: Any) -> str:
    curve = getattr(key, "curve", None)
    if curve is not None:
        return f"ECDSA {curve.name}"
    size = getattr(key, "key_size", None)
    return f"RSA-{size}" if size else type(key).__name__


class PKI:
    """A fresh CA, server certificate and client certificate in ``directory``."""

    def __init__(self, directory: Path, key_type: str) -> None:
        from certsrv.pki import CertificateAuthority, KeyType

        kt = {"ecdsa": KeyType.ECDSA_P256, "rsa": KeyType.RSA_2048}[key_type]
        ca = CertificateAuthority.create("certsrv bench CA", key_type=kt)
        self.ca = directory / "ca.pem"
        self.ca.write_bytes(ca.certificate_pem())
        self.server_cert, self.server_key = directory / "server.pem", directory / "server.key"
        server = ca.issue_server("localhost", "127.0.0.1", key_type=kt)
        server.write(self.server_cert, self.server_key)
        client = ca.issue_client("bench-client", key_type=kt)
        self.client_cert, self.client_key = directory / "client.pem", directory / "client.key"
        client.write(self.client_cert, self.client_key)
        self.description = {name: _describe_key(c.private_key) for name, c in
                            (("ca", ca), ("server", server), ("client", client))}
        # ab wants the certificate and its key in one file (-E).
        self.client_combined = directory / "client-combined.pem"
        fd = os.open(self.client_combined, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(client.chain_pem() + client.private_key_pem())


class CertsrvPKI(PKI):
    """A PKI made by ``certsrv-pki init --ocsp-url`` (from the certsrv tree under test), so
    that the client certificate names the OCSP responder that ``twistd certsrv-ocsp``
    serves for it (Authority Information Access)."""

    def __init__(self, directory: Path, key_type: str, ocsp_url: str, source: Path) -> None:
        from cryptography import x509
        from cryptography.hazmat.primitives.serialization import load_pem_private_key
        from cryptography.x509.oid import AuthorityInformationAccessOID

        self.dir = directory / "pki"
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(source), env.get("PYTHONPATH")]))
        result = run_tool([sys.executable, "-m", "certsrv.pki.cli", "init", str(self.dir),
                           "--key-type", key_type, "--ocsp-url", ocsp_url],
                          timeout=120, env=env, cwd=directory)
        if result.returncode != 0:
            raise BenchError(f"certsrv-pki init failed (exit {result.returncode}):\n"
                             f"{(result.stdout + result.stderr).strip()[-1500:]}")
        self.ca = self.dir / "ca.pem"
        self.server_cert, self.server_key = self.dir / "server.pem", self.dir / "server.key"
        self.client_cert, self.client_key = self.dir / "client.pem", self.dir / "client.key"
        client = x509.load_pem_x509_certificate(self.client_cert.read_bytes())
        try:
            aia = client.extensions.get_extension_for_class(x509.AuthorityInformationAccess)
            urls = [d.access_location.value for d in aia.value
                    if d.access_method == AuthorityInformationAccessOID.OCSP]
        except x509.ExtensionNotFound:
            urls = []
        if ocsp_url not in urls:
            raise BenchError(f"certsrv-pki made a client certificate that does not name "
                             f"{ocsp_url} as its OCSP responder (AIA: {urls})")
        self.description = {
            name: _describe_key(load_pem_private_key((self.dir / f"{name}.key").read_bytes(),
                                                     None))
            for name in ("ca", "server", "client")}
        self.description["made_by"] = f"certsrv-pki init --ocsp-url {ocsp_url}"
        self.client_combined = directory / "client-combined.pem"
        fd = os.open(self.client_combined, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(self.client_cert.read_bytes() + self.client_key.read_bytes())


def build_keepalive(directory: Path) -> Path | None:
    source = HERE / "keepalive.c"
    binary = directory / "keepalive"
    if not which("gcc"):
        note("gcc not found: keep-alive and idle-connection tests are skipped")
        return None
    cmd = ["gcc", "-O2", "-Wall", "-o", str(binary), str(source), "-lssl", "-lcrypto"]
    result = run_tool(cmd, timeout=120)
    if result.returncode != 0:
        note("building keepalive.c failed (is libssl-dev installed?); keep-alive and "
             f"idle-connection tests are skipped:\n{result.stderr.strip()}")
        return None
    return binary


# --------------------------------------------------------------------------- servers

class Server:
    kind = ""
    speaks_h2 = True  # offers h2 through ALPN (the HTTP/2 test runs against it)

    def __init__(self, name: str, work: Path, pki: PKI) -> None:
        self.name = name
        self.work = work
        self.pki = pki
        self.port = 0
        self.proc: subprocess.Popen[Any] | None = None
        self.log = work / f"{name}.log"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def command(self) -> list[str]:
        raise NotImplementedError

    def environment(self) -> dict[str, str]:
        return dict(os.environ)

    def log_tail(self) -> str:
        return f"last lines of {self.log}:\n{tail(self.log)}"

    core = SERVER_CORE

    def start(self) -> None:
        self.port = self.port or free_port()
        cmd = pin(self.core) + self.command()
        self.log_offset = self.log.stat().st_size if self.log.exists() else 0
        with open(self.log, "ab") as log:
            log.write(f"\n==== {datetime.datetime.now().isoformat()} {shlex.join(cmd)}\n".encode())
            log.flush()
            self.proc = spawn(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                              cwd=self.work, env=self.environment())
        try:
            wait_for_port(self.port, self.proc, 30, self.log_tail)
            self.wait_for_listeners(30)
        except BenchError as e:
            self.stop()
            raise BenchError(f"{self.name} did not start: {e}") from None

    def wait_for_listeners(self, timeout: float) -> None:
        """Servers with several listening processes wait here until all of them listen."""

    def log_since_start(self) -> str:
        """What the server logged since its last start."""
        try:
            with open(self.log, "rb") as f:
                f.seek(self.log_offset)
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None
        self.port = 0


def listening_sockets(port: int) -> int:
    """How many sockets listen on ``port`` (several with SO_REUSEPORT), from /proc/net."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    fields = line.split()
                    # local_address is ADDR:PORT in hex; state 0A is LISTEN.
                    if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                        count += 1
        except (OSError, StopIteration, IndexError, ValueError):
            continue
    return count


def certsrv_workers(args: Sequence[str]) -> int:
    """The --workers count in a certsrv argument list (1 without it; auto = CPU count)."""
    value = "1"
    for i, a in enumerate(args):
        if a == "--workers" and i + 1 < len(args):
            value = args[i + 1]
        elif a.startswith("--workers="):
            value = a.split("=", 1)[1]
    if value == "auto":
        return os.cpu_count() or 1
    try:
        return max(1, int(value))
    except ValueError:
        return 1


def tree_fingerprint(source: Path) -> str:
    """A hash of certsrv's code in ``source`` (certsrv/ and twisted/plugins/), taken as a
    server starts: in a tree that others edit, rounds can otherwise run different code
    without anyone noticing."""
    import hashlib

    digest = hashlib.sha256()
    for sub in ("certsrv", "twisted/plugins"):
        for f in sorted((source / sub).rglob("*.py")):
            try:
                digest.update(str(f.relative_to(source)).encode() + b"\0" + f.read_bytes())
            except OSError:
                continue
    return digest.hexdigest()[:16]


class Certsrv(Server):
    kind = "certsrv"

    def __init__(self, name: str, work: Path, pki: PKI, extra_args: Sequence[str],
                 source: Path = REPO) -> None:
        super().__init__(name, work, pki)
        self.extra_args = list(extra_args)
        self.source = source
        self.workers = certsrv_workers(self.extra_args)
        self.tree = ""

    def start(self) -> None:
        self.tree = tree_fingerprint(self.source)
        super().start()

    def wait_for_listeners(self, timeout: float) -> None:
        # With --workers N the parent only reserves the port; each worker listens on its own
        # SO_REUSEPORT socket. Measuring before all N listen would load fewer workers.
        if self.workers <= 1:
            return
        deadline = time.monotonic() + timeout
        while listening_sockets(self.port) < self.workers:
            if time.monotonic() > deadline:
                raise BenchError(f"only {listening_sockets(self.port)} of {self.workers} "
                                 f"workers listen on port {self.port}\n{self.log_tail()}")
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise BenchError(f"certsrv exited with status {self.proc.returncode}\n"
                                 f"{self.log_tail()}")
            time.sleep(0.1)

    def command(self) -> list[str]:
        twistd = [sys.executable, "-c",
                  "import sys; from twisted.scripts.twistd import run; "
                  "sys.argv[0] = 'twistd'; run()"]
        return twistd + [
            "-n", "--pidfile=", "certsrv",
            "--listen", f"tcp:{self.port}:interface=127.0.0.1",
            "--ca", str(self.pki.ca), "--cert", str(self.pki.server_cert),
            "--key", str(self.pki.server_key), *self.extra_args,
        ]

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(self.source),
                                                          env.get("PYTHONPATH")]))
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        return env


NGINX_CONF = """\
worker_processes 1;
worker_rlimit_nofile {nofile};
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{
    worker_connections 10000;
}}
http {{
    access_log off;
    keepalive_requests 1000000;
    keepalive_timeout 600s;
    client_body_temp_path {prefix}/tmp/body;
    proxy_temp_path {prefix}/tmp/proxy;
    fastcgi_temp_path {prefix}/tmp/fastcgi;
    uwsgi_temp_path {prefix}/tmp/uwsgi;
    scgi_temp_path {prefix}/tmp/scgi;
    server {{
        listen 127.0.0.1:{port} ssl http2;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_client_certificate {ca};
        ssl_verify_client on;
        ssl_verify_depth 4;
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_session_tickets off;
        ssl_session_cache off;
        location /secure {{
            return 200 "Client certificate accepted\\n";
        }}
    }}
}}
"""


class Uvicorn(Server):
    """uvicorn (uvloop + httptools) serving bench/uvicorn_app.py with a required client
    certificate (``--ssl-cert-reqs 2``): what a Python user would otherwise pick."""

    kind = "uvicorn"
    speaks_h2 = False  # not with httptools

    def command(self) -> list[str]:
        return [sys.executable, "-m", "uvicorn", "--app-dir", str(HERE), "uvicorn_app:app",
                "--host", "127.0.0.1", "--port", str(self.port),
                "--ssl-certfile", str(self.pki.server_cert),
                "--ssl-keyfile", str(self.pki.server_key),
                "--ssl-ca-certs", str(self.pki.ca), "--ssl-cert-reqs", "2",
                "--loop", "uvloop", "--http", "httptools", "--no-access-log",
                "--log-level", "warning", "--timeout-keep-alive", "600",
                "--backlog", "2048"]


class BareTwisted(Server):
    """bench/bare_twisted.py: twisted.web's HTTP/1.1 over Twisted's TLS with OpenSSL's own
    client-certificate verification and nothing else (the floor under certsrv)."""

    kind = "bare"

    def command(self) -> list[str]:
        return [sys.executable, str(HERE / "bare_twisted.py"), str(self.port),
                str(self.pki.ca), str(self.pki.server_cert), str(self.pki.server_key)]


def peer_available(name: str) -> str | None:
    """Why the peer ``name`` cannot run here (None: it can)."""
    if name == NGINX:
        return None if which("nginx") else ("nginx is not installed: the nginx columns are "
                                            "skipped (bench/run installs nginx-light)")
    if name == UVICORN:
        try:
            import httptools  # noqa: F401
            import uvicorn  # noqa: F401
            import uvloop  # noqa: F401
        except ImportError:
            return ("uvicorn[standard] is not installed in $PYTHON: the uvicorn columns are "
                    "skipped (pip install -r bench/requirements.txt)")
    return None


def policy_file(directory: Path, pki: PKI, rules: int) -> Path:
    """A ``--policy`` file of ``rules`` rules whose last one admits the bench client to
    /secure by its subject CN; the others cover other paths, so every request is matched
    against all of them (the first rule that matches decides)."""
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    client = x509.load_pem_x509_certificate(pki.client_cert.read_bytes())
    cn = client.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    text = []
    for n in range(1, rules):
        text.append(f'[[rule]]\nname = "other-{n}"\npath = "/other/{n}"\n'
                    f'methods = ["GET", "POST"]\n[rule.allow]\n'
                    f'subject = {{ CN = "someone-{n}", O = "Elsewhere" }}\n')
    text.append(f'[[rule]]\nname = "secure"\npath = "/secure"\nmethods = ["GET"]\n'
                f'[rule.allow]\nsubject = {{ CN = {json.dumps(str(cn))} }}\n')
    path = directory / f"policy-{rules}.toml"
    path.write_text("\n".join(text))
    return path


class OCSPResponder(Server):
    """``twistd certsrv-ocsp`` serving the CertsrvPKI's directory, for the whole run."""

    kind = "certsrv-ocsp"
    core = LOAD_CORE  # load-generator side: it is not part of the server measured
    REQUEST_LINE = re.compile(r'"(?:POST|GET) /\S* HTTP/1\.[01]" ')

    def __init__(self, work: Path, pki: CertsrvPKI, port: int, source: Path) -> None:
        super().__init__("certsrv-ocsp", work, pki)
        self.port = port
        self.source = source
        self.pki_dir = pki.dir

    def command(self) -> list[str]:
        return [sys.executable, "-c",
                "import sys; from twisted.scripts.twistd import run; "
                "sys.argv[0] = 'twistd'; run()",
                "-n", "--pidfile=", "certsrv-ocsp", "--pki", str(self.pki_dir),
                "--listen", f"tcp:{self.port}:interface=127.0.0.1"]

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(self.source),
                                                          env.get("PYTHONPATH")]))
        return env

    def requests(self) -> int:
        """OCSP requests answered so far: the access-log lines twisted.web wrote."""
        time.sleep(0.2)  # let a request in flight be logged
        return len(self.REQUEST_LINE.findall(self.log_since_start()))


def ocsp_events(text: str) -> int:
    """certsrv's ``certsrv.ocsp`` events for finished responder lookups (good, revoked or
    unknown: one per query it sent)."""
    return len(re.findall(r"\[certsrv\.ocsp#\w+\] OCSP status of ", text))


class Nginx(Server):
    kind = "nginx"

    def __init__(self, name: str, work: Path, pki: PKI, nofile: int) -> None:
        super().__init__(name, work, pki)
        self.prefix = work / "nginx"
        self.nofile = nofile
        self.log = self.prefix / "error.log"

    def command(self) -> list[str]:
        (self.prefix / "tmp").mkdir(parents=True, exist_ok=True)
        (self.prefix / "conf").mkdir(exist_ok=True)
        (self.prefix / "conf" / "nginx.conf").write_text(NGINX_CONF.format(
            prefix=self.prefix, port=self.port, cert=self.pki.server_cert,
            key=self.pki.server_key, ca=self.pki.ca, nofile=self.nofile))
        return [which("nginx") or "nginx", "-p", f"{self.prefix}/", "-c", "conf/nginx.conf",
                "-g", "daemon off;"]

    def start(self) -> None:
        self.prefix.mkdir(parents=True, exist_ok=True)
        super().start()


# --------------------------------------------------------------------------- measurements

class Bench:
    def __init__(self, args: argparse.Namespace, pki: PKI, keepalive: Path | None,
                 responder: OCSPResponder | None = None) -> None:
        self.args = args
        self.pki = pki
        self.keepalive = keepalive
        self.responder = responder
        self.curl = which("curl")
        self.ab = which("ab")
        self.openssl = which("openssl")

    # -- sanity

    def check_200(self, server: Server) -> dict[str, Any]:
        """One curl request must get 200 and the expected body before anything is measured."""
        if not self.curl:
            note("curl not found: skipping the pre-flight 200 check")
            return {"checked": False}
        cmd = [self.curl, "-sS", "--http1.1", "--max-time", "10",
               "--cacert", str(self.pki.ca), "--cert", str(self.pki.client_cert),
               "--key", str(self.pki.client_key), "-o", "-", "-w", "\n%{http_code}",
               f"https://127.0.0.1:{server.port}/secure"]
        result = run_tool(cmd, timeout=20)
        body, _, code = result.stdout.rpartition("\n")
        if result.returncode != 0 or code != "200" or "Client certificate accepted" not in body:
            raise BenchError(f"{server.name}: the pre-flight curl request did not get 200 "
                             f"(curl exit {result.returncode}, HTTP {code!r}): "
                             f"{result.stderr.strip() or body.strip()}\n{server.log_tail()}")
        return {"checked": True, "status": 200, "body_bytes": len(body)}

    # -- keepalive.c

    def _keepalive_cmd(self, server: Server, mode: str, conns: int, duration: float,
                       hold: float) -> list[str]:
        assert self.keepalive is not None
        return pin(LOAD_CORE) + [
            str(self.keepalive), "--mode", mode, "--port", str(server.port),
            "--ca", str(self.pki.ca), "--cert", str(self.pki.client_cert),
            "--key", str(self.pki.client_key), "--conns", str(conns),
            "--duration", str(duration), "--hold", str(hold), "--open-parallel", "32",
            "--setup-timeout", "120", "--max-requests", str(self.args.max_requests),
        ]

    def _spawn_keepalive(self, cmd: list[str]) -> tuple[subprocess.Popen[bytes], Path]:
        # stderr goes to a file: a pipe nobody reads could fill up and stall the generator.
        err_path = self.pki.ca.parent / "keepalive.stderr"
        with open(err_path, "wb") as err:
            proc = spawn(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err)
        return proc, err_path

    def keepalive_load(self, server: Server, conns: int, duration: float,
                       record: bool = True) -> dict[str, Any]:
        cmd = self._keepalive_cmd(server, "load", conns, duration, hold=60)
        proc, err_path = self._spawn_keepalive(cmd)
        try:
            reader = LineReader(proc)
            ready = reader.readline(150, "the connections to be ready")
            meter = Meter(server.pid, proc.pid)
            meter.start()
            assert proc.stdin is not None
            proc.stdin.write(b"GO\n")
            proc.stdin.flush()
            line = reader.readline(duration + 60, "the keep-alive result")
            cpu = meter.stop()
            proc.stdin.close()
            proc.wait(30)
            stderr = err_path.read_text(errors="replace")
        except BenchError as e:
            raise BenchError(f"{server.name}: keepalive x{conns}: {e}\n"
                             f"{err_path.read_text(errors='replace')[-1000:]}") from None
        finally:
            stop_process(proc)
        result: dict[str, Any] = json.loads(line)
        result.update(cpu)
        result["ready_line"] = ready
        if stderr.strip():
            result["stderr"] = stderr.strip()[-2000:]
        if result["ready"] < conns:
            raise BenchError(f"{server.name}: only {result['ready']} of {conns} keep-alive "
                             f"connections could be set up: {stderr.strip()[-500:]}")
        # Rates use the generator's own window and the server CPU over that window.
        n = result["responses_200"]
        result["rate"] = result["rps"]
        result["per_server_cpu_s"] = n / cpu["server_cpu_s"] if cpu["server_cpu_s"] else None
        result["ok"] = result["non200"] == 0 and result["errors"] == 0
        if not result["ok"] and record:
            note(f"{server.name}: keep-alive x{conns}: {result['non200']} non-200 responses, "
                 f"{result['errors']} connection errors")
        return result

    def idle_connections(self, server: Server, count: int) -> dict[str, Any]:
        time.sleep(0.5)
        rss_before = memory_kib(server.pid, "VmRSS")
        cmd = self._keepalive_cmd(server, "idle", count, 0, hold=300)
        proc, err_path = self._spawn_keepalive(cmd)
        try:
            reader = LineReader(proc)
            meter = Meter(server.pid, proc.pid)
            meter.start()
            ready_line = reader.readline(180, f"{count} idle connections")
            opening = meter.stop()
            _, ready, setup_s = ready_line.split()
            time.sleep(1.0)  # let the server finish any work for the last connections
            rss_held = memory_kib(server.pid, "VmRSS")
            assert proc.stdin is not None
            proc.stdin.close()
            line = reader.readline(60, "the idle-connection result")
            proc.wait(30)
            stderr = err_path.read_text(errors="replace")
        except BenchError as e:
            raise BenchError(f"{server.name}: idle connections: {e}\n"
                             f"{err_path.read_text(errors='replace')[-1000:]}") from None
        finally:
            stop_process(proc)
        time.sleep(1.0)
        rss_after_close = memory_kib(server.pid, "VmRSS")
        result: dict[str, Any] = json.loads(line)
        n = int(ready)
        result.update({
            "rss_before_kib": rss_before, "rss_held_kib": rss_held,
            "rss_after_close_kib": rss_after_close,
            "rss_per_conn_kib": (rss_held - rss_before) / n if n else None,
            "open_s": float(setup_s), "open_rate": n / float(setup_s) if n else 0.0,
            "opening_cpu": opening,
        })
        if n < count:
            note(f"{server.name}: only {n} of {count} idle connections were established: "
                 f"{stderr.strip()[-500:]}")
        if result.get("dropped_while_idle"):
            note(f"{server.name}: the server closed {result['dropped_while_idle']} idle "
                 "connections while they were held")
        return result

    # -- HTTP/2: bench/h2load.py

    def h2_load(self, server: Server, duration: int) -> dict[str, Any]:
        """HTTP/2 requests over 8 connections (2 generator processes x 4), 16 streams in
        flight on each, every connection with the client certificate."""
        cmd = pin(LOAD_CORE) + [
            sys.executable, str(HERE / "h2load.py"), "--port", str(server.port),
            "--ca", str(self.pki.ca), "--cert", str(self.pki.client_cert),
            "--key", str(self.pki.client_key), "--procs", "2", "--conns", "4",
            "--streams", "16", "--duration", str(duration)]
        err_path = self.pki.ca.parent / "h2load.stderr"
        with open(err_path, "wb") as err:
            proc = spawn(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err)
        try:
            reader = LineReader(proc)
            ready = reader.readline(150, "the HTTP/2 connections to be ready")
            meter = Meter(server.pid, proc.pid, generator_tree=True)
            meter.start()
            assert proc.stdin is not None
            proc.stdin.write(b"GO\n")
            proc.stdin.flush()
            line = reader.readline(duration + 150, "the HTTP/2 result")
            cpu = meter.stop()
            proc.wait(30)
        except BenchError as e:
            raise BenchError(f"{server.name}: h2load: {e}\n"
                             f"{err_path.read_text(errors='replace')[-1000:]}") from None
        finally:
            stop_process(proc)
        result: dict[str, Any] = json.loads(line)
        result.update(cpu)
        result["ready_line"] = ready
        n = result["responses_200"]
        result["rate"] = result["rps"]
        result["per_server_cpu_s"] = n / cpu["server_cpu_s"] if cpu["server_cpu_s"] else None
        result["ok"] = result["non200"] == 0 and result["errors"] == 0
        if not result["ok"]:
            note(f"{server.name}: HTTP/2: {result['non200']} non-200 responses, "
                 f"{result['errors']} connection errors")
        return result

    # -- openssl s_time

    def s_time(self, server: Server, duration: int) -> dict[str, Any]:
        cmd = pin(LOAD_CORE) + [
            self.openssl or "openssl", "s_time", "-new",
            "-connect", f"127.0.0.1:{server.port}",
            "-cert", str(self.pki.client_cert), "-key", str(self.pki.client_key),
            "-CAfile", str(self.pki.ca), "-www", "/secure", "-time", str(duration)]
        meter = Meter(server.pid)
        meter.start()
        result = run_tool(cmd, timeout=duration + 60)
        cpu = meter.stop()
        out = result.stdout + result.stderr
        m = re.search(r"(\d+) connections in (\d+) real seconds, (\d+) bytes read per connection",
                      out)
        if result.returncode != 0 or not m:
            raise BenchError(f"{server.name}: openssl s_time failed (exit "
                             f"{result.returncode}):\n{out.strip()[-1500:]}")
        conns, real_s, per_conn = int(m.group(1)), int(m.group(2)), int(m.group(3))
        if per_conn < 50:
            raise BenchError(f"{server.name}: openssl s_time read only {per_conn} bytes per "
                             "connection: the server is not answering /secure")
        # s_time's "real seconds" are whole seconds (up to 1 s more than -time); the rate
        # uses our own wall clock around the process instead.
        return {"connections": conns, "reported_real_s": real_s,
                "bytes_per_connection": per_conn, "rate": conns / cpu["wall_s"],
                "per_server_cpu_s": conns / cpu["server_cpu_s"] if cpu["server_cpu_s"] else None,
                "ok": True, **cpu}

    # -- ab

    def ab_run(self, server: Server, duration: int, count: int | None = None) -> dict[str, Any]:
        """``ab -c 16`` for ``duration`` seconds or, with ``count``, for exactly that many
        requests (each a full handshake)."""
        assert self.ab is not None
        # -t bounds the time, -n (given after -t, so it wins over -t's implied 50000)
        # bounds the count.
        bound = (["-n", str(count)] if count else
                 ["-t", str(duration), "-n", str(self.args.max_requests)])
        cmd = pin(LOAD_CORE) + [
            self.ab, "-q", "-r", *bound,
            "-c", "16", "-s", "30", "-E", str(self.pki.client_combined),
            f"https://127.0.0.1:{server.port}/secure"]
        meter = Meter(server.pid)
        meter.start()
        result = run_tool(cmd, timeout=(duration if not count else 120) + 90)
        cpu = meter.stop()
        out = result.stdout

        def field(label: str, default: str | None = None) -> str:
            m = re.search(rf"^{re.escape(label)}:\s+(\S+)", out, re.M)
            if m:
                return m.group(1)
            if default is None:
                raise BenchError(f"{server.name}: ab printed no {label!r} (exit "
                                 f"{result.returncode}):\n{(out + result.stderr).strip()[-1500:]}")
            return default

        complete = int(field("Complete requests"))
        failed = int(field("Failed requests"))
        non2xx = int(field("Non-2xx responses", "0"))
        taken = float(field("Time taken for tests"))
        protocol = re.search(r"^SSL/TLS Protocol:\s+(.*)$", out, re.M)
        temp_key = re.search(r"^Server Temp Key:\s+(.*)$", out, re.M)
        ok = result.returncode == 0 and failed == 0 and non2xx == 0 and complete > 0
        if not ok:
            note(f"{server.name}: ab reported {failed} failed and {non2xx} non-2xx responses "
                 f"(exit {result.returncode}); {result.stderr.strip()[-300:]}")
        return {"complete": complete, "failed": failed, "non2xx": non2xx, "time_taken_s": taken,
                "rate": complete / taken if taken else 0.0,
                "per_server_cpu_s": complete / cpu["server_cpu_s"] if cpu["server_cpu_s"] else None,
                "tls": protocol.group(1).strip() if protocol else None,
                "key_exchange": temp_key.group(1).strip() if temp_key else None, "ok": ok, **cpu}

    # -- one server, one round

    def measure(self, server: Server) -> dict[str, Any]:
        a = self.args
        results: dict[str, Any] = {}
        responder_mark = self.responder.requests() if self.responder is not None else 0
        server.start()
        try:
            results["started_rss_kib"] = memory_kib(server.pid, "VmRSS")
            results["preflight"] = self.check_200(server)
            if self.keepalive:
                self.keepalive_load(server, 1, a.warmup, record=False)
            results["baseline_rss_kib"] = memory_kib(server.pid, "VmRSS")
            responder = self.responder
            if responder is not None:
                # The pre-flight request and the warm-up went through the OCSP lookup (if
                # this configuration does OCSP): the cache is warm from here on, and the
                # measured tests should send no query at all.
                results["responder_queries_warmup"] = responder.requests() - responder_mark
                results["responder_queries_measured"] = 0

            def run(key: str, what: str, fn: Callable[[], dict[str, Any]]) -> None:
                note(f"  {server.name}: {what}")
                quiet = wait_for_quiet(server.pid, what)
                before = responder.requests() if responder is not None else 0
                results[key] = fn()
                results[key]["quiet"] = quiet
                if responder is not None:
                    queries = responder.requests() - before
                    results[key]["responder_queries"] = queries
                    results["responder_queries_measured"] += queries
                assert server.proc is not None
                if server.proc.poll() is not None:
                    raise BenchError(f"{server.name} exited (status {server.proc.returncode}) "
                                     f"during {what}; was it killed from outside?\n"
                                     f"{server.log_tail()}")

            if self.keepalive and a.idle_conns > 0:
                run("idle", f"{a.idle_conns} idle mTLS connections",
                    lambda: self.idle_connections(server, a.idle_conns))
            if self.openssl:
                run("s_time", f"openssl s_time -new, {a.duration}s",
                    lambda: self.s_time(server, a.duration))
            if self.ab:
                run("ab", f"ab -c 16, {a.duration}s", lambda: self.ab_run(server, a.duration))
            if self.keepalive:
                for conns in (1, 64):
                    run(f"keepalive_{conns}", f"keep-alive x{conns}, {a.duration}s",
                        functools.partial(self.keepalive_load, server, conns, a.duration))
            if a.http2 and server.speaks_h2:
                try:
                    run("h2", f"HTTP/2 8 conns x 16 streams, {a.duration}s",
                        lambda: self.h2_load(server, a.duration))
                except BenchError as e:  # e.g. a column with --http2 off
                    note(f"{server.name}: no HTTP/2 figure: {str(e)[:300]}")
            results["peak_rss_kib"] = memory_kib(server.pid, "VmHWM")
            results["final_rss_kib"] = memory_kib(server.pid, "VmRSS")
            results["processes"] = len(process_tree(server.pid))
            if isinstance(server, Certsrv):
                results["certsrv_tree"] = server.tree
        finally:
            server.stop()
        return results

    # -- OCSP: a cold cache under a burst of handshakes

    def ocsp_burst(self, server: Certsrv, count: int) -> dict[str, Any]:
        """Start certsrv afresh (empty OCSP cache), send ``count`` full handshakes with the
        same client certificate at once (``ab -n count -c 16``, no request before), and
        count the queries that reached the responder (its access log) and the lookups
        certsrv logged (``certsrv.ocsp`` events)."""
        assert self.responder is not None and self.ab is not None
        before = self.responder.requests()
        server.start()  # waits for a TCP connect only: no TLS, no OCSP lookup yet
        try:
            note(f"  {server.name}: {count} handshakes with a cold OCSP cache (ab -c 16)")
            result = self.ab_run(server, 0, count=count)
            time.sleep(0.5)
            result["responder_queries"] = self.responder.requests() - before
            result["certsrv_ocsp_lookups"] = ocsp_events(server.log_since_start())
            result["requested"] = count
        finally:
            server.stop()
        return result


# --------------------------------------------------------------------------- reporting

# (key, label, extractor, higher-is-better); a None extractor starts a section.
def _get(*path: str) -> Callable[[dict[str, Any]], float | None]:  # an Extractor
    def extract(r: dict[str, Any]) -> float | None:
        for p in path:
            if not isinstance(r, dict) or p not in r or r[p] is None:
                return None
            r = r[p]
        return float(r)  # type: ignore[arg-type]
    return extract


Extractor = Callable[[dict[str, Any]], float | None]


def _kib_to_mib(f: Extractor) -> Extractor:
    def extract(r: dict[str, Any]) -> float | None:
        v = f(r)
        return v / 1024 if v is not None else None
    return extract


def _ratio(test: str, num: str, den: str) -> Extractor:
    def extract(r: dict[str, Any]) -> float | None:
        t = r.get(test) or {}
        return t[num] / t[den] if t.get(num) is not None and t.get(den) else None
    return extract


def _busiest(test: str) -> Extractor:
    """The share of the server's CPU time spent by its busiest process (1/N when N workers
    share the load evenly)."""
    def extract(r: dict[str, Any]) -> float | None:
        by_pid = (r.get(test) or {}).get("server_cpu_s_by_pid") or {}
        total = sum(by_pid.values())
        return max(by_pid.values()) / total if total else None
    return extract


def _pct(f: Extractor) -> Extractor:
    def extract(r: dict[str, Any]) -> float | None:
        v = f(r)
        return v * 100 if v is not None else None
    return extract


METRICS: list[tuple[str, str, Callable[[dict[str, Any]], float | None] | None]] = [
    ("", "per server CPU-second (headline)", None),
    ("s_time_per_cpu", "full handshakes/CPU-s, s_time", _get("s_time", "per_server_cpu_s")),
    ("ab_per_cpu", "full handshakes/CPU-s, ab -c16", _get("ab", "per_server_cpu_s")),
    ("ka1_per_cpu", "keep-alive req/CPU-s, 1 conn", _get("keepalive_1", "per_server_cpu_s")),
    ("ka64_per_cpu", "keep-alive req/CPU-s, 64 conns", _get("keepalive_64", "per_server_cpu_s")),
    ("h2_per_cpu", "HTTP/2 req/CPU-s, 8 conns x16", _get("h2", "per_server_cpu_s")),
    ("", "throughput (per wall-clock second)", None),
    ("s_time_rate", "full handshakes/s, s_time", _get("s_time", "rate")),
    ("ab_rate", "full handshakes/s, ab -c16", _get("ab", "rate")),
    ("ka1_rate", "keep-alive req/s, 1 conn", _get("keepalive_1", "rate")),
    ("ka64_rate", "keep-alive req/s, 64 conns", _get("keepalive_64", "rate")),
    ("h2_rate", "HTTP/2 req/s, 8 conns x16", _get("h2", "rate")),
    ("", "latency (ms)", None),
    ("ka1_p50", "keep-alive 1 conn p50", _get("keepalive_1", "p50_ms")),
    ("ka1_p99", "keep-alive 1 conn p99", _get("keepalive_1", "p99_ms")),
    ("ka64_p50", "keep-alive 64 conns p50", _get("keepalive_64", "p50_ms")),
    ("ka64_p99", "keep-alive 64 conns p99", _get("keepalive_64", "p99_ms")),
    ("", "server CPU busy (% of one core; all its processes)", None),
    ("s_time_srv", "during s_time", _pct(_get("s_time", "server_cpu_share"))),
    ("ab_srv", "during ab -c16", _pct(_get("ab", "server_cpu_share"))),
    ("ka1_srv", "during keep-alive 1 conn", _pct(_get("keepalive_1", "server_cpu_share"))),
    ("ka64_srv", "during keep-alive 64 conns", _pct(_get("keepalive_64", "server_cpu_share"))),
    ("h2_srv", "during HTTP/2", _pct(_get("h2", "server_cpu_share"))),
    ("ab_sys", "  kernel share of it, ab -c16", _pct(_ratio("ab", "server_system_s",
                                                             "server_cpu_s"))),
    ("ka64_sys", "  kernel share of it, 64 conns", _pct(_ratio("keepalive_64", "server_system_s",
                                                               "server_cpu_s"))),
    ("ab_procs", "  server processes counted, ab", _get("ab", "server_processes")),
    ("ab_top_proc", "  busiest process's share of it, ab", _pct(_busiest("ab"))),
    ("", "load generator CPU (% of its core)", None),
    ("s_time_gen", "openssl s_time", _pct(_get("s_time", "generator_cpu_share"))),
    ("ab_gen", "ab -c16", _pct(_get("ab", "generator_cpu_share"))),
    ("ka1_gen", "keepalive.c 1 conn", _pct(_get("keepalive_1", "generator_cpu_share"))),
    ("ka64_gen", "keepalive.c 64 conns", _pct(_get("keepalive_64", "generator_cpu_share"))),
    ("h2_gen", "h2load.py (2 processes)", _pct(_get("h2", "generator_cpu_share"))),
    ("", "memory", None),
    ("baseline_rss", "RSS after warm-up (MiB)", _kib_to_mib(_get("baseline_rss_kib"))),
    ("peak_rss", "peak RSS, VmHWM (MiB)", _kib_to_mib(_get("peak_rss_kib"))),
    ("idle_per_conn", "RSS per idle mTLS conn (KiB)", _get("idle", "rss_per_conn_kib")),
    ("idle_open_rate", "idle conns opened/s (32 parallel)", _get("idle", "open_rate")),
    ("", "OCSP responder queries (--ocsp-responder)", None),
    ("ocsp_warmup", "during pre-flight + warm-up", _get("responder_queries_warmup")),
    ("ocsp_measured", "during the measured tests", _get("responder_queries_measured")),
]


def summarize(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "n": len(values)}


def build_summary(rounds: list[dict[str, Any]], configs: list[str]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    certsrv_configs = [c for c in configs if c not in PEERS]
    for key, _label, extract in METRICS:
        if extract is None:
            continue
        entry: dict[str, Any] = {}
        per_round: dict[str, list[float | None]] = {c: [] for c in configs}
        for rnd in rounds:
            for c in configs:
                r = rnd["results"].get(c)
                per_round[c].append(extract(r) if r else None)
        for c in configs:
            entry[c] = summarize([v for v in per_round[c] if v is not None])
        # Ratios are taken round by round (each certsrv run against the nginx run of the
        # same round), then summarised.
        for c in certsrv_configs:
            for other in [p for p in PEERS if p in configs] + (
                    [BASELINE] if c != BASELINE and BASELINE in configs else []):
                ratios = [a / b for a, b in zip(per_round[c], per_round[other], strict=True)
                          if a is not None and b]
                entry[f"{c}/{other}"] = summarize(ratios)
        summary[key] = entry
    return summary


def _num(v: float) -> str:
    a = abs(v)
    if v == int(v) and a < 10:  # counts (processes, queries)
        return str(int(v))
    if a >= 10000:
        return f"{v:.0f}"
    if a >= 100:
        return f"{v:.0f}"
    if a >= 10:
        return f"{v:.1f}"
    if a >= 1:
        return f"{v:.2f}"
    return f"{v:.3f}"


def _cell(s: dict[str, float] | None) -> str:
    if not s:
        return "-"
    if s["n"] == 1 or s["min"] == s["max"]:
        return _num(s["median"])
    return f"{_num(s['median'])} [{_num(s['min'])}–{_num(s['max'])}]"


def render_table(summary: dict[str, Any], configs: list[str]) -> str:
    certsrv_configs = [c for c in configs if c not in PEERS]
    columns: list[str] = list(configs)
    # The baseline against every peer; each variant against the bare floor and the baseline.
    for c in certsrv_configs:
        for peer in PEERS if c == BASELINE else (BARE,):
            if peer in configs:
                columns.append(f"{c}/{peer}")
        if c != BASELINE and BASELINE in configs:
            columns.append(f"{c}/{BASELINE}")
    rows: list[list[str]] = [["metric", *columns]]
    for key, label, extract in METRICS:
        if extract is None:
            rows.append([f"-- {label}"])
            continue
        entry = summary.get(key, {})
        if all(entry.get(c) is None for c in configs):
            continue
        rows.append([label, *(_cell(entry.get(col)) for col in columns)])
    widths = [max(len(r[i]) for r in rows if len(r) > i and len(r) > 1)
              for i in range(len(rows[0]))]
    # A section heading without rows under it (a test that did not run) is left out.
    rows = [r for i, r in enumerate(rows)
            if len(r) > 1 or (i + 1 < len(rows) and len(rows[i + 1]) > 1)]
    lines = []
    for i, r in enumerate(rows):
        if len(r) == 1:
            lines.append(r[0])
            continue
        cells = [r[0].ljust(widths[0])]
        cells += [v.rjust(w) for v, w in zip(r[1:], widths[1:], strict=True)]
        lines.append("  ".join(cells).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


# (metric key, what, numerator config or None for the baseline, peer, at least)
TARGETS: list[tuple[str, str, str | None, str, float]] = [
    ("ab_per_cpu", "handshakes", None, BARE, 0.95),
    ("ka64_per_cpu", "keep-alive", None, BARE, 0.95),
    ("ab_per_cpu", "handshakes", "policy", BARE, 0.95),
    ("ka64_per_cpu", "keep-alive", "policy", BARE, 0.95),
    ("ka64_per_cpu", "keep-alive", None, UVICORN, 1.0),
    ("ka64_per_cpu", "keep-alive", None, NGINX, 0.4),
    ("ab_per_cpu", "handshakes", None, NGINX, 0.75),
]


def target_lines(summary: dict[str, Any], configs: list[str]) -> list[dict[str, Any]]:
    """The issue's targets, each with the measured median ratio and whether it is met."""
    lines = []
    for key, what, num, peer, least in TARGETS:
        column = BASELINE if num is None else next(
            (c for c in configs if c.startswith(num) and c not in PEERS), None)
        if column is None or peer not in configs:
            continue
        ratio = (summary.get(key, {}).get(f"{column}/{peer}") or {}).get("median")
        if ratio is None:
            continue
        verdict = "met" if ratio >= least else "NOT met"
        test = "ab -c16" if key.startswith("ab") else "64 conns"
        lines.append({"metric": key, "column": column, "peer": peer, "ratio": ratio,
                      "target": least, "met": ratio >= least,
                      "text": f"{what:<10} ({test:<8}) {column}/{peer}: {ratio:.2f} "
                              f"(target >= {least:.2f}): {verdict}"})
    idle = (summary.get("idle_per_conn", {}).get(BASELINE) or {}).get("median")
    if idle is not None:
        lines.append({"metric": "idle_per_conn", "column": BASELINE, "value": idle,
                      "target": 48, "met": idle <= 48,
                      "text": f"idle memory {BASELINE}: {idle:.1f} KiB per connection "
                              f"(target <= 48): {'met' if idle <= 48 else 'NOT met'}"})
    return lines


def artefact_warnings(rounds: list[dict[str, Any]]) -> list[str]:
    """Things that make a figure less trustworthy, spotted in the raw numbers."""
    warnings = []
    trees = {(rnd["round"], config): r["certsrv_tree"] for rnd in rounds
             for config, r in rnd["results"].items() if r and r.get("certsrv_tree")}
    if len(set(trees.values())) > 1:
        runs = ", ".join(f"round {n} {c}: {t}" for (n, c), t in trees.items())
        warnings.append("certsrv's code changed during the run (someone edited the tree), so "
                        f"the rounds did not all run the same code ({runs}); measure an "
                        "export instead: git archive HEAD | tar -x -C DIR; --certsrv-path DIR")
    for rnd in rounds:
        for config, r in rnd["results"].items():
            if not r:
                continue
            for test in ("s_time", "ab", "keepalive_1", "keepalive_64"):
                t = r.get(test)
                if not t:
                    continue
                where = f"round {rnd['round']} {config} {test}"
                other = t.get("other_processes_cpu_share", 0.0)
                if other > 0.05:
                    warnings.append(f"{where}: other processes on the machine used "
                                    f"{other:.0%} of a core during the run")
                steal = t.get("steal_share", 0.0)
                if steal > 0.05:
                    warnings.append(f"{where}: the hypervisor stole {steal:.0%} of a core "
                                    "(CPU times are inflated)")
                if t.get("generator_cpu_share", 0) > 0.9:
                    warnings.append(f"{where}: the load generator used "
                                    f"{t['generator_cpu_share']:.0%} of its core; it may be "
                                    "the bottleneck (the per-CPU-second figure still holds)")
                if not t.get("ok", True):
                    warnings.append(f"{where}: errors or non-200 responses (see the JSON)")
    return warnings


# --------------------------------------------------------------------------- main

def source_state(path: Path) -> dict[str, Any]:
    """The commit and the uncommitted changes of the certsrv tree being measured."""
    state: dict[str, Any] = {"path": str(path)}
    if not which("git"):
        return state
    try:
        head = subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"],
                              capture_output=True, text=True, timeout=10)
        if head.returncode == 0:
            state["commit"] = head.stdout.strip()
            dirty = subprocess.run(["git", "-C", str(path), "status", "--porcelain", "--",
                                    "certsrv", "twisted"], capture_output=True, text=True,
                                   timeout=10)
            state["uncommitted"] = dirty.stdout.splitlines()
    except subprocess.SubprocessError:
        pass
    return state


def versions() -> dict[str, Any]:
    info: dict[str, Any] = {"python": sys.version.split()[0], "platform": platform.platform()}
    try:
        with open("/proc/cpuinfo") as f:
            models = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        info["cpu"] = models[0] if models else platform.processor()
    except OSError:
        pass
    info["cpus"] = os.cpu_count()
    for mod in ("twisted", "OpenSSL", "cryptography", "uvicorn", "uvloop", "httptools", "h2"):
        try:
            m = __import__(mod)
            info[mod] = getattr(m, "__version__", None)
        except ImportError:
            info[mod] = None
    try:
        from OpenSSL import SSL

        info["pyopenssl_libssl"] = SSL.SSLeay_version(SSL.SSLEAY_VERSION).decode()
    except Exception:
        pass
    for name, cmd in (("openssl_cli", ["openssl", "version"]), ("nginx", ["nginx", "-V"]),
                      ("ab", ["ab", "-V"])):
        if which(cmd[0]):
            try:
                r = subprocess.run([which(cmd[0]) or cmd[0], *cmd[1:]], capture_output=True,
                                   text=True, timeout=10)
                lines = (r.stdout + r.stderr).strip().splitlines()
                info[name] = lines[0]
                if name == "nginx":
                    # Which OpenSSL nginx uses ("built with ... (running with ...)").
                    info["nginx_openssl"] = next(
                        (ln.split("with ", 1)[1] for ln in lines if "OpenSSL" in ln), None)
            except (subprocess.SubprocessError, IndexError):
                info[name] = None
    return info


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Benchmark certsrv against nginx (mutual TLS). See bench/README.rst.")
    p.add_argument("--quick", action="store_true",
                   help="1 round, 2 s per test, 1,000 idle connections")
    p.add_argument("--rounds", type=int, help="rounds (default 3; 1 with --quick)")
    p.add_argument("--duration", type=int,
                   help="seconds per load test (default 5; 2 with --quick)")
    p.add_argument("--idle-conns", type=int,
                   help="idle mTLS connections for the memory test (default 5000; 1000 "
                        "with --quick; 0 skips)")
    p.add_argument("--out", type=Path, help="JSON output (default "
                   "bench/results/result-<timestamp>.json)")
    p.add_argument("--key-type", choices=("ecdsa", "rsa"), default="ecdsa",
                   help="ecdsa: P-256 (default); rsa: RSA-2048, for the CA, server and client")
    p.add_argument("--certsrv-args", default="",
                   help="extra twistd certsrv arguments for every certsrv run (shell-quoted)")
    p.add_argument("--variant", action="append", default=[], metavar="NAME=ARGS",
                   help="another certsrv column, run with these extra arguments on top of "
                        "--certsrv-args (repeatable)")
    p.add_argument("--baseline", metavar="NAME=ARGS",
                   help="name the first certsrv column (default 'certsrv') and give it these "
                        "extra arguments, which the variants do not get; the variant/baseline "
                        "ratios are taken against it, e.g. --baseline ocsp-off='--ocsp off' "
                        "--variant ocsp-warm='--ocsp leaf'")
    p.add_argument("--access-log", choices=("off", "on", "default"), default="off",
                   help="off (default, like nginx's access_log off): pass --access-log off "
                        "--log-accepted off to certsrv, so neither writes a line per "
                        "request or accepted connection (rejections are still logged); on: "
                        "both on; 'default' passes nothing (for trees without the options)")
    p.add_argument("--ocsp-responder", action="store_true",
                   help="make the PKI with certsrv-pki init --ocsp-url and run twistd "
                        "certsrv-ocsp for it, so that certsrv with --ocsp leaf (its default) "
                        "asks a real responder; counts the responder's queries per test")
    p.add_argument("--ocsp-burst", type=int,
                   help="with --ocsp-responder: afterwards, N handshakes (ab -n N -c 16) "
                        "against a freshly started certsrv --ocsp leaf, counting the "
                        "responder queries they cause (default 1000; 0 skips)")
    p.add_argument("--certsrv-path", type=Path, default=REPO,
                   help="the source tree certsrv runs from (put on PYTHONPATH; default: this "
                        "repository), e.g. an export of one commit: git archive REV | tar -x "
                        "-C DIR")
    p.add_argument("--no-nginx", action="store_true", help="do not run nginx")
    p.add_argument("--peers", default=",".join(PEERS),
                   help="the peers to run, comma-separated, of nginx, uvicorn, bare (default: "
                        "all three; --no-nginx leaves nginx out)")
    p.add_argument("--no-http2", dest="http2", action="store_false",
                   help="skip the HTTP/2 test (bench/h2load.py)")
    p.add_argument("--policy-rules", type=int, default=10,
                   help="add a certsrv column 'policyN' with a --policy of N rules (the last "
                        "one admitting the bench client); default 10, 0: no such column")
    p.add_argument("--no-pin", action="store_true", help="do not pin with taskset")
    p.add_argument("--max-requests", type=int, default=5_000_000,
                   help="upper bound on requests per test (ab -n, keepalive.c)")
    p.add_argument("--wait-quiet", type=float,
                   help="seconds in all the benchmark may wait for other processes on the "
                        "machine to go quiet before a test (default 120; 30 with --quick)")
    p.add_argument("--profile", action="store_true",
                   help="afterwards, profile certsrv under ab handshake load with py-spy")
    args = p.parse_args(argv)
    args.rounds = args.rounds or (1 if args.quick else 3)
    args.duration = args.duration or (2 if args.quick else 5)
    args.idle_conns = args.idle_conns if args.idle_conns is not None else (
        1000 if args.quick else 5000)
    args.warmup = 0.5
    if args.wait_quiet is None:
        args.wait_quiet = 30.0 if args.quick else 120.0
    if args.rounds < 1 or args.duration < 1:
        p.error("--rounds and --duration must be at least 1")
    def name_args(option: str, v: str) -> tuple[str, list[str]]:
        name, sep, extra = v.partition("=")
        name = name.strip()
        if not sep or not name or not re.fullmatch(r"[\w.+-]+", name):
            p.error(f"{option} wants NAME=ARGS with a simple name (got {v!r})")
        return name, shlex.split(extra)

    args.baseline_name, args.baseline_args = (
        name_args("--baseline", args.baseline) if args.baseline else (BASELINE, []))
    if args.baseline_name in PEERS:
        p.error(f"--baseline name {args.baseline_name!r} is taken")
    variants: dict[str, list[str]] = {}
    for v in args.variant:
        name, extra = name_args("--variant", v)
        if name in (args.baseline_name, *PEERS) or name in variants:
            p.error(f"--variant name {name!r} is taken")
        variants[name] = extra
    args.variants = variants
    args.peers = [x.strip() for x in args.peers.split(",") if x.strip()]
    for peer in args.peers:
        if peer not in PEERS:
            p.error(f"--peers: unknown peer {peer!r} (known: {', '.join(PEERS)})")
    if args.no_nginx and NGINX in args.peers:
        args.peers.remove(NGINX)
    if args.policy_rules < 0:
        p.error("--policy-rules must be 0 or more")
    if args.policy_rules:
        name = f"policy{args.policy_rules}"
        if name in variants or name == args.baseline_name:
            p.error(f"--policy-rules makes a column {name!r}, which is taken")
        variants[name] = []  # its --policy FILE is added once the PKI exists
    if args.ocsp_burst is None:
        args.ocsp_burst = 1000 if args.ocsp_responder else 0
    if args.ocsp_burst and not args.ocsp_responder:
        p.error("--ocsp-burst needs --ocsp-responder")
    return args


def certsrv_args(args: argparse.Namespace, config: str) -> list[str]:
    """The extra ``twistd certsrv`` arguments of one certsrv column: the access-log setting,
    --certsrv-args, then the column's own (--baseline or --variant) arguments; a later
    option wins, so --certsrv-args "--access-log on" overrides the default."""
    access = ([] if args.access_log == "default" else
              ["--access-log", args.access_log, "--log-accepted", args.access_log])
    own = args.baseline_args if config == BASELINE else args.variants.get(config, [])
    return access + shlex.split(args.certsrv_args) + own


PY_SPY_FLAGS = ["--native"]
PROFILE_SUBTREES: list[tuple[str, str | tuple[str, ...]]] = [
    ("TLS handshake in OpenSSL (do_handshake)", "Connection.do_handshake "),
    ("  verify callback (certsrv)", "ClientVerifier.verify_callback "),
    ("handshake_completed (certsrv)", "ClientVerifier.handshake_completed "),
    ("  ClientIdentity.from_certificate", "ClientIdentity.from_certificate "),
    ("HTTP request handling (Request.process)", "Request.process "),
    ("logging (Logger.emit + legacy log.msg)", ("Logger.emit ", "LogPublisher.msg ")),
    ("TCP accept (Port.doRead)", "Port.doRead "),
    ("connection teardown (connectionLost)", "Connection.connectionLost "),
]


_LINENO = re.compile(r":(\d+)\)$")


def _function(frame: str) -> str:
    """A py-spy frame without its line number: ``name (file.py:123)`` -> ``name (file.py)``."""
    return _LINENO.sub(")", frame)


def _group(frame: str) -> str:
    """Where a leaf frame lives: a Python package or a shared library."""
    where = _function(frame).rpartition(" (")[2].rstrip(")")
    if where.endswith(".so") or ".so." in where or where.startswith("lib"):
        if "_rust.abi3.so" in where or "libcrypto" in where or "libssl" in where:
            return "OpenSSL (native)"
        if "libc.so" in where:
            return "libc (system calls, malloc)"
        return f"native: {where.rsplit('/', 1)[-1]}"
    if where.endswith(".c"):
        return "CPython C code"
    top = where.split("/", 1)[0]
    return {"interface": "zope.interface", "OpenSSL": "pyOpenSSL"}.get(top, top)


_WAITS = ("Condition.wait (threading.py", "Queue.get (queue.py", "Event.wait (threading.py")


def _idle_thread(frames: list[str]) -> bool:
    """A thread other than the reactor's, blocked waiting for work (the reactor's thread
    pool, started for the OCSP client's name resolution): with --native py-spy counts it
    as busy, which would dilute every other share."""
    return (any(f.startswith("Thread._bootstrap (threading.py") for f in frames)
            and any(f.startswith(_WAITS) for f in frames))


def summarize_profile(raw: Path) -> dict[str, Any]:
    stacks = []
    idle = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if count.isdigit():
            frames = stack.split(";")
            if _idle_thread(frames):
                idle += int(count)
            else:
                stacks.append((frames, int(count)))
    samples = sum(n for _, n in stacks) or 1
    own: dict[str, int] = {}
    own_lines: dict[str, dict[str, int]] = {}
    inclusive: dict[str, int] = {}
    inclusive_lines: dict[str, dict[str, int]] = {}
    groups: dict[str, int] = {}
    for frames, n in stacks:
        leaf = _function(frames[-1])
        own[leaf] = own.get(leaf, 0) + n
        m = _LINENO.search(frames[-1])
        if m:
            lines = own_lines.setdefault(leaf, {})
            lines[m.group(1)] = lines.get(m.group(1), 0) + n
        g = _group(frames[-1])
        groups[g] = groups.get(g, 0) + n
        # Inclusive: every function on the stack once (recursion counted once), and the
        # line it was executing (its call site of the next frame) for the report.
        seen: set[str] = set()
        for frame in frames:
            fn = _function(frame)
            if fn not in seen:
                seen.add(fn)
                inclusive[fn] = inclusive.get(fn, 0) + n
            m = _LINENO.search(frame)
            if m:
                lines = inclusive_lines.setdefault(fn, {})
                lines[m.group(1)] = lines.get(m.group(1), 0) + n
    subtrees = []
    for label, names in PROFILE_SUBTREES:
        prefixes = (names,) if isinstance(names, str) else tuple(names)
        n = sum(c for frames, c in stacks if any(f.startswith(prefixes) for f in frames))
        subtrees.append((label, n / samples))

    def hot_lines(table: dict[str, dict[str, int]], fn: str) -> list[tuple[int, float]]:
        return [(int(line), c / samples) for line, c in
                sorted(table.get(fn, {}).items(), key=lambda kv: -kv[1])[:3]]

    top_own = sorted(own.items(), key=lambda kv: -kv[1])[:30]
    # The reactor's spine (run, mainLoop, doPoll, ...) is on every stack: leave out what is
    # on more than 95% of them, so the list starts where the work divides.
    # Unresolved native frames (0x7f... (libc.so.6): the interpreter's start) say nothing.
    ranked = [(f, n) for f, n in sorted(inclusive.items(), key=lambda kv: -kv[1])
              if not f.startswith("0x")]
    top_inclusive = [(f, n) for f, n in ranked if n <= 0.95 * samples][:40]
    # certsrv's own functions, whatever their rank: what certsrv itself can cut.
    top_certsrv = [(f, n) for f, n in ranked if "(certsrv/" in f][:15]
    return {
        "samples": samples,
        "idle_thread_samples_excluded": idle,
        "top_own": [(f, n / samples) for f, n in top_own],
        "top_own_lines": {f: hot_lines(own_lines, f) for f, _ in top_own},
        "top_inclusive": [(f, n / samples) for f, n in top_inclusive],
        "top_inclusive_lines": {f: hot_lines(inclusive_lines, f)
                                for f, _ in top_inclusive + top_certsrv},
        "top_certsrv_inclusive": [(f, n / samples) for f, n in top_certsrv],
        "own_by_group": [(g, n / samples)
                         for g, n in sorted(groups.items(), key=lambda kv: -kv[1])],
        "inclusive": subtrees,
    }


def profile_certsrv(bench: Bench, work: Path, pki: PKI, args: argparse.Namespace,
                    out_dir: Path, stamp: str) -> dict[str, Any] | None:
    """Sample certsrv with py-spy under full-handshake load (ab -c16) and under keep-alive
    load (64 connections), after the measured rounds so that sampling disturbs nothing."""
    py_spy = which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(py_spy).exists():
        note("py-spy not found (pip install py-spy): no profile")
        return None
    duration = max(args.duration * 2, 6)
    loads: list[tuple[str, Callable[[Server], dict[str, Any]]]] = []
    if bench.ab:
        loads.append(("handshakes", lambda srv: bench.ab_run(srv, duration)))
    if bench.keepalive:
        loads.append(("keepalive64", lambda srv: bench.keepalive_load(srv, 64, duration)))
    profiles: dict[str, Any] = {}
    for name, load in loads:
        server = Certsrv(BASELINE, work, pki, certsrv_args(args, BASELINE), args.certsrv_path)
        server.start()
        try:
            bench.check_200(server)
            files = {}
            for fmt, suffix in (("raw", "txt"), ("flamegraph", "svg")):
                path = out_dir / f"profile-{stamp}-{name}.{suffix}"
                # The raw stacks keep line numbers (file:line in the report); the flame
                # graph merges them (one box per function).
                lineno = [] if fmt == "raw" else ["--nolineno"]
                spy = spawn(pin(LOAD_CORE) + [
                    py_spy, "record", "--pid", str(server.pid), "--rate", "200",
                    "--duration", str(duration + 2), "--format", fmt, "--output", str(path),
                    *lineno, *PY_SPY_FLAGS,
                    *(["--subprocesses"] if server.workers > 1 else [])],
                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
                time.sleep(1.0)
                result = load(server)
                try:
                    out, _ = spy.communicate(timeout=duration + 60)
                finally:
                    stop_process(spy)
                if not path.exists():
                    note(f"py-spy wrote no {fmt} profile: {out.decode(errors='replace')[-500:]}")
                    continue
                files[fmt] = str(path)
                if fmt == "raw":
                    profiles[name] = {"rate_while_profiled": result["rate"],
                                      **summarize_profile(path)}
            if name in profiles:
                profiles[name]["files"] = files
        finally:
            server.stop()
    return profiles or None


def print_profile(profiles: dict[str, Any]) -> None:
    titles = {"handshakes": "full handshakes, ab -c16", "keepalive64": "keep-alive, 64 conns"}
    for name, prof in profiles.items():
        idle = prof.get("idle_thread_samples_excluded")
        print(f"\npy-spy profile of certsrv, {titles.get(name, name)} "
              f"({prof['samples']} samples at 200 Hz, --native; "
              f"{prof['rate_while_profiled']:.0f}/s while sampled"
              + (f"; {idle} samples of idle threads left out" if idle else "") + ")")
        print("  inclusive:")
        for label, share in prof["inclusive"]:
            print(f"    {share:6.1%}  {label}")
        print("  own time by where the code lives:")
        for group, share in prof["own_by_group"][:8]:
            print(f"    {share:6.1%}  {group}")
        def lines(table: str, f: str, prof: dict[str, Any] = prof) -> str:
            hot = prof.get(table, {}).get(f) or []
            return ("  [lines " + ", ".join(f"{ln}: {s:.1%}" for ln, s in hot) + "]"
                    if hot else "")

        print("  top functions by own time (hottest lines):")
        for f, share in prof["top_own"][:20]:
            print(f"    {share:6.1%}  {f}{lines('top_own_lines', f)}")
        if prof.get("top_inclusive"):
            print("  top functions by inclusive time (below the reactor loop; lines = "
                  "where the time went in them):")
            for f, share in prof["top_inclusive"][:30]:
                print(f"    {share:6.1%}  {f}{lines('top_inclusive_lines', f)}")
        if prof.get("top_certsrv_inclusive"):
            print("  certsrv's own functions by inclusive time:")
            for f, share in prof["top_certsrv_inclusive"]:
                print(f"    {share:6.1%}  {f}{lines('top_inclusive_lines', f)}")
        print(f"  files: {', '.join(prof.get('files', {}).values())}")


def main(argv: Sequence[str] | None = None) -> int:
    global PINNED, BASELINE
    args = parse_args(argv)
    BASELINE = args.baseline_name
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGHUP, _on_signal)
    atexit.register(stop_all_children)
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(errors="replace")

    _quiet_budget["left"] = args.wait_quiet
    cpus = os.cpu_count() or 1
    PINNED = not args.no_pin and cpus >= 2 and which("taskset") is not None
    if PINNED:
        # bench.py itself (mostly asleep) stays off the server's core.
        os.sched_setaffinity(0, {LOAD_CORE})
    else:
        note("not pinning (needs taskset and 2 cores): server and load generators share CPUs")
    nofile = raise_nofile(max(20000, args.idle_conns * 2 + 1000))
    if nofile < args.idle_conns + 200:
        note(f"RLIMIT_NOFILE is {nofile}: lowering idle connections to fit")
        args.idle_conns = max(0, nofile - 200)

    notes: list[str] = []
    peers = []
    for peer in args.peers:
        why_not = peer_available(peer)
        if why_not:
            notes.append(why_not)
        else:
            peers.append(peer)
    for tool in ("openssl", "ab", "curl"):
        if not which(tool):
            notes.append(f"{tool} not found: the tests that need it are skipped")
    for n in notes:
        note(n)

    configs = [BASELINE, *args.variants, *peers]
    base_args = shlex.split(args.certsrv_args)
    column_args = {c: certsrv_args(args, c) for c in configs if c not in PEERS}

    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = args.out or HERE / "results" / f"result-{stamp}.json"
    out.parent.mkdir(parents=True, exist_ok=True)

    work = Path(tempfile.mkdtemp(prefix="certsrv-bench-"))
    started = time.monotonic()
    document: dict[str, Any] = {
        "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "settings": {
            "rounds": args.rounds, "duration_s": args.duration, "idle_conns": args.idle_conns,
            "key_type": args.key_type, "certsrv_path": str(args.certsrv_path.resolve()),
            "certsrv_args": base_args, "variants": args.variants,
            "baseline": {"name": BASELINE, "args": args.baseline_args},
            "access_log": args.access_log, "column_args": column_args,
            "ocsp_responder": args.ocsp_responder, "ocsp_burst": args.ocsp_burst,
            "quick": args.quick, "pinned": PINNED, "server_core": SERVER_CORE if PINNED else None,
            "load_core": LOAD_CORE if PINNED else None, "nofile": nofile,
            "wait_quiet_s": args.wait_quiet, "ab_concurrency": 16, "keepalive_conns": [1, 64],
            "configs": configs,
        },
        "versions": versions(),
        "certsrv_source": source_state(args.certsrv_path),
        "bench_checkout": source_state(REPO),
        "notes": notes,
        "rounds": [],
    }
    try:
        note(f"work directory {work}; creating a {args.key_type} PKI")
        responder: OCSPResponder | None = None
        pki: PKI
        if args.ocsp_responder:
            ocsp_port = free_port()
            pki = CertsrvPKI(work, args.key_type, f"http://127.0.0.1:{ocsp_port}/",
                             args.certsrv_path)
            responder = OCSPResponder(work, pki, ocsp_port, args.certsrv_path)
            responder.start()
            note(f"OCSP responder (twistd certsrv-ocsp) on port {ocsp_port}")
        else:
            pki = PKI(work, args.key_type)
        document["settings"]["keys"] = pki.description
        if args.policy_rules:
            rules = policy_file(work, pki, args.policy_rules)
            column_args[f"policy{args.policy_rules}"] += ["--policy", str(rules)]
        keepalive = build_keepalive(work)
        bench = Bench(args, pki, keepalive, responder)

        def server_for(config: str) -> Server:
            if config == NGINX:
                return Nginx(NGINX, work, pki, nofile)
            if config == UVICORN:
                return Uvicorn(UVICORN, work, pki)
            if config == BARE:
                return BareTwisted(BARE, work, pki)
            return Certsrv(config, work, pki, column_args[config], args.certsrv_path)

        for rnd in range(1, args.rounds + 1):
            record: dict[str, Any] = {"round": rnd, "results": {}}
            for config in configs:
                note(f"round {rnd}/{args.rounds}: {config}")
                record["results"][config] = bench.measure(server_for(config))
            document["rounds"].append(record)
            document["summary"] = build_summary(document["rounds"], configs)
            out.write_text(json.dumps(document, indent=2))
        if args.ocsp_burst and bench.ab and responder is not None:
            burst_args = certsrv_args(args, BASELINE) + ["--ocsp", "leaf"]
            cold = bench.ocsp_burst(Certsrv("ocsp-burst", work, pki, burst_args,
                                            args.certsrv_path), args.ocsp_burst)
            cold["certsrv_args"] = burst_args
            document["ocsp_burst"] = cold
            out.write_text(json.dumps(document, indent=2))
        if args.profile:
            note("profiling certsrv under ab handshake load with py-spy")
            document["profile"] = profile_certsrv(bench, work, pki, args, out.parent, stamp)
    except BenchError as e:
        document["error"] = str(e)
        out.write_text(json.dumps(document, indent=2))
        print(f"bench: {e}", file=sys.stderr)
        return 1
    finally:
        stop_all_children()
        document["elapsed_s"] = time.monotonic() - started
        if out.exists() or document["rounds"]:
            out.write_text(json.dumps(document, indent=2))
        if not os.environ.get("BENCH_KEEP_WORK"):
            shutil.rmtree(work, ignore_errors=True)

    summary = document["summary"]
    warnings = artefact_warnings(document["rounds"])
    document["warnings"] = warnings
    out.write_text(json.dumps(document, indent=2))

    s = document["settings"]
    print(f"certsrv vs nginx: {s['key_type']} PKI, {s['rounds']} round(s) x {s['duration_s']}s "
          f"per test, {s['idle_conns']} idle connections, "
          + ("server on core 0 and load generators on core 1" if PINNED else "no CPU pinning")
          + "; median [min–max] over rounds; ratios taken round by round")
    v = document["versions"]
    print(f"TLS libraries: certsrv {v.get('pyopenssl_libssl')} (pyOpenSSL/cryptography); "
          f"nginx {v.get('nginx_openssl')}; generators {v.get('openssl_cli')}")
    if s["certsrv_args"]:
        print(f"certsrv args: {shlex.join(s['certsrv_args'])}")
    for name, extra in column_args.items():
        print(f"{'variant' if name != BASELINE else 'column'} {name}: twistd certsrv ... "
              f"{shlex.join(extra)}")
    if responder is not None:
        print(f"PKI: {pki.description.get('made_by')}; responder: twistd certsrv-ocsp")
    print()
    print(render_table(summary, configs))
    targets = target_lines(summary, configs)
    document["targets"] = targets
    out.write_text(json.dumps(document, indent=2))
    if targets:
        print("\ntargets (issue 13; median ratios per server CPU-second):")
        for line in targets:
            print(f"  {line['text']}")
    for n in notes:
        print(f"note: {n}")
    for w in warnings:
        print(f"warning: {w}")
    burst = document.get("ocsp_burst")
    if burst:
        print(f"\nOCSP, cold cache: {burst['complete']} of {burst['requested']} handshakes "
              f"with one certificate (ab -c 16, {burst['failed']} failed, {burst['non2xx']} "
              f"non-2xx) against a fresh certsrv {shlex.join(burst['certsrv_args'][-2:])}: "
              f"{burst['responder_queries']} responder queries (its access log), "
              f"{burst['certsrv_ocsp_lookups']} certsrv.ocsp lookup events")
    if document.get("profile"):
        print_profile(document["profile"])
    print(f"\nraw numbers: {out}  ({document['elapsed_s']:.0f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
