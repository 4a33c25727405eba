#!/usr/bin/env python3
"""
Soak: open and drop many mutual-TLS connections, then check that certsrv gave back its file
descriptors and memory.

    python bench/soak.py [--connections 10000] [--concurrency 48] [--tolerance 0.10]

Starts ``twistd certsrv`` on 127.0.0.1 (a free port) with a throw-away PKI made by
certsrv.pki, ``--handshake-timeout 2 --idle-timeout 5``. After a warm-up of ``--warmup``
connections and a pause past both timeouts, it samples the server's open file descriptors
(``/proc/PID/fd``) and resident memory (``VmRSS``) as the baseline; then it opens
``--connections`` connections, a seeded mix of:

good        full handshake with a valid client certificate, ``GET /secure``, expect 200
expired     an expired client certificate: the handshake (or the first read) is refused
unknown_ca  a certificate from a CA the server does not trust: refused
no_cert     no client certificate: refused
hello       a ClientHello, then the connection is closed
half        a ClientHello, the server's first flight read, then closed mid-handshake
tcp         a TCP connection closed without a byte sent
stall       a ClientHello and then silence: the server must cut it off (handshake timeout)

and waits again past the timeouts before sampling once more. It prints a table and PASS when
descriptors and memory are back within ``--tolerance`` of the baseline, every connection
behaved as its kind should, and the server logged no traceback; FAIL (exit 1) otherwise.
Only the standard library and the repository are used; the server is stopped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import datetime
import os
import random
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from certsrv.pki import CertificateAuthority, IssuedCertificate  # noqa: E402

HOST = "127.0.0.1"
HANDSHAKE_TIMEOUT = 2.0
IDLE_TIMEOUT = 5.0
# kind -> weight in the mix
MIX: dict[str, int] = {"good": 40, "expired": 10, "unknown_ca": 10, "no_cert": 10,
                       "hello": 12, "half": 12, "tcp": 4, "stall": 2}
REQUEST = b"GET /secure HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"


def note(message: str) -> None:
    """Progress goes to stderr; the table to stdout."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- the PKI and the server --------------------------------------------------------------------

@dataclass(frozen=True)
class Files:
    """Where the throw-away PKI was written."""

    directory: Path
    ca: Path
    server_cert: Path
    server_key: Path
    clients: dict[str, tuple[Path, Path]]  # kind -> (certificate, key)


def make_pki(directory: Path) -> Files:
    """A root for the server to trust, an unrelated root, and one client per kind."""
    now = datetime.datetime.now(datetime.UTC)
    root = CertificateAuthority.create("Soak Root CA")
    stranger = CertificateAuthority.create("Soak Unknown CA")
    server = root.issue_server("localhost", HOST)
    issued: dict[str, IssuedCertificate] = {
        "good": root.issue_client("soak-good"),
        "expired": root.issue_client("soak-expired", not_before=now - datetime.timedelta(days=10),
                                     not_after=now - datetime.timedelta(days=1)),
        "unknown_ca": stranger.issue_client("soak-stranger"),
    }
    (directory / "ca.pem").write_bytes(root.certificate_pem())
    server.write(directory / "server.pem", directory / "server.key")
    clients = {}
    for kind, cert in issued.items():
        cert.write(directory / f"{kind}.pem", directory / f"{kind}.key")
        clients[kind] = (directory / f"{kind}.pem", directory / f"{kind}.key")
    return Files(directory, directory / "ca.pem", directory / "server.pem",
                 directory / "server.key", clients)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


@contextmanager
def certsrv(files: Files, port: int, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``twistd -n certsrv`` on 127.0.0.1:port; stopped (TERM, then KILL) on the way out."""
    command = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
               "-n", "--pidfile=", "certsrv",
               "--listen", f"tcp:{port}:interface={HOST}",
               "--cert", str(files.server_cert), "--key", str(files.server_key),
               "--ca", str(files.ca),
               "--handshake-timeout", str(HANDSHAKE_TIMEOUT),
               "--idle-timeout", str(IDLE_TIMEOUT)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with open(log, "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env,
                                   cwd=files.directory)
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"certsrv exited with {process.returncode}:\n"
                                   + log.read_text(errors="replace")[-3000:])
            try:
                with socket.create_connection((HOST, port), timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("certsrv did not start listening within 30 s") from None
                time.sleep(0.2)
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=15)


# --- measuring -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Sample:
    """The server's open descriptors and resident memory at one moment."""

    fds: int
    rss_kib: int


def sample(pid: int) -> Sample:
    """Read /proc for ``pid``."""
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    rss = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1])
    return Sample(fds, rss)


def children(pid: int) -> list[int]:
    """Direct child processes of ``pid`` (``--workers`` would make some)."""
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def settle(pid: int, baseline: Sample | None, seconds: float) -> Sample:
    """Wait ``seconds`` (past the server's timeouts), then up to as long again for the
    descriptor count to come back to ``baseline``; the last sample."""
    time.sleep(seconds)
    deadline = time.monotonic() + seconds
    current = sample(pid)
    while baseline is not None and current.fds > baseline.fds and time.monotonic() < deadline:
        time.sleep(0.5)
        current = sample(pid)
    return current


# --- the load ----------------------------------------------------------------------------------

@dataclass
class Results:
    """What each kind of connection did."""

    outcomes: dict[str, collections.Counter[str]] = field(
        default_factory=lambda: collections.defaultdict(collections.Counter))
    peak: Sample = field(default_factory=lambda: Sample(0, 0))

    def add(self, kind: str, outcome: str) -> None:
        """Count one connection."""
        self.outcomes[kind][outcome] += 1

    def unexpected(self) -> dict[str, int]:
        """Connections that did not behave as their kind should."""
        bad: dict[str, int] = {}
        for kind, counts in self.outcomes.items():
            for outcome, n in counts.items():
                if outcome not in EXPECTED[kind]:
                    bad[f"{kind}:{outcome}"] = n
        return bad


EXPECTED: dict[str, set[str]] = {
    "good": {"200"},
    "expired": {"refused"},
    "unknown_ca": {"refused"},
    "no_cert": {"refused"},
    "hello": {"dropped"},
    "half": {"dropped"},
    "tcp": {"dropped"},
    "stall": {"cut off"},
}


class Load:
    """Opens connections of every kind against 127.0.0.1:port."""

    def __init__(self, files: Files, port: int) -> None:
        self.port = port
        self.contexts: dict[str, ssl.SSLContext] = {}
        for kind in ("good", "expired", "unknown_ca", "no_cert"):
            context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(files.ca))
            if kind in files.clients:
                cert, key = files.clients[kind]
                context.load_cert_chain(cert, key)
            self.contexts[kind] = context
        self.hello_context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH,
                                                        cafile=str(files.ca))

    def client_hello(self) -> bytes:
        """A fresh ClientHello, made in memory."""
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        tls = self.hello_context.wrap_bio(incoming, outgoing, server_hostname="localhost")
        try:
            tls.do_handshake()
        except ssl.SSLWantReadError:
            pass
        return outgoing.read()

    async def one(self, kind: str) -> str:
        """One connection of ``kind``; its outcome."""
        if kind in self.contexts:
            return await self._tls(kind)
        return await self._raw(kind)

    async def _tls(self, kind: str) -> str:
        writer = None
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(
                HOST, self.port, ssl=self.contexts[kind], server_hostname="localhost"), 10)
            writer.write(REQUEST)
            await asyncio.wait_for(writer.drain(), 10)
            response = await asyncio.wait_for(reader.read(65536), 10)
            if response.startswith(b"HTTP/1.1 "):
                status = response.split(b" ", 2)[1].decode("ascii", "replace")
                # Read to the end: the server closes after answering (Connection: close).
                for _ in range(64):
                    if not await asyncio.wait_for(reader.read(65536), 10):
                        break
                return status
            return "refused"  # TLS 1.3: the alert arrives with, or instead of, the first read
        except (ssl.SSLError, ConnectionError, asyncio.IncompleteReadError):
            return "refused"
        except TimeoutError:
            return "timeout"
        finally:
            if writer is not None:
                await _close(writer)

    async def _raw(self, kind: str) -> str:
        writer = None
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(HOST, self.port), 10)
            if kind == "tcp":
                return "dropped"
            writer.write(self.client_hello())
            await asyncio.wait_for(writer.drain(), 10)
            if kind == "hello":
                return "dropped"
            if kind == "half":
                first = await asyncio.wait_for(reader.read(65536), 10)
                return "dropped" if first.startswith(b"\x16\x03") else "no server hello"
            # stall: read the server's flight, then say nothing until the server hangs up.
            started = time.monotonic()
            for _ in range(64):
                data = await asyncio.wait_for(reader.read(65536),
                                              HANDSHAKE_TIMEOUT + 5)
                if not data:
                    break
            waited = time.monotonic() - started
            return "cut off" if waited < HANDSHAKE_TIMEOUT + 3 else "cut off late"
        except (ConnectionError, OSError):
            return "reset" if kind != "stall" else "cut off"
        except TimeoutError:
            return "timeout"
        finally:
            if writer is not None:
                writer.transport.abort()


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    try:
        await asyncio.wait_for(writer.wait_closed(), 2)
    except (TimeoutError, ssl.SSLError, ConnectionError, OSError):
        writer.transport.abort()


async def run_load(load: Load, kinds: list[str], concurrency: int, pid: int,
                   results: Results, time_limit: float) -> None:
    """Open one connection per entry of ``kinds``, at most ``concurrency`` at a time."""
    queue = iter(kinds)
    deadline = time.monotonic() + time_limit
    done = 0

    async def worker() -> None:
        nonlocal done
        for kind in queue:
            if time.monotonic() > deadline:
                results.add(kind, "not run (time limit)")
                continue
            results.add(kind, await load.one(kind))
            done += 1

    async def watch() -> None:
        last = 0
        while True:
            await asyncio.sleep(0.5)
            now = sample(pid)
            results.peak = Sample(max(results.peak.fds, now.fds),
                                  max(results.peak.rss_kib, now.rss_kib))
            if done - last >= 2000:
                last = done - done % 2000
                note(f"  {done}/{len(kinds)} connections; server fds {now.fds}, "
                     f"RSS {now.rss_kib} KiB")

    watcher = asyncio.ensure_future(watch())
    try:
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    finally:
        watcher.cancel()


def mix(count: int, rng: random.Random) -> list[str]:
    """``count`` kinds drawn from MIX."""
    kinds = list(MIX)
    return rng.choices(kinds, weights=[MIX[k] for k in kinds], k=count)


def traceback_lines(log: Path) -> list[str]:
    """Lines of the server log that show an unhandled or unexpected error."""
    text = log.read_text(errors="replace")
    return [line for line in text.splitlines()
            if "Traceback" in line or "Unhandled Error" in line]


# --- main ------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    """Run the soak; 0 on PASS."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip())
    parser.add_argument("--connections", type=int, default=10_000)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=48)
    parser.add_argument("--tolerance", type=float, default=0.10,
                        help="allowed growth over the baseline, as a fraction")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--time-limit", type=float, default=600.0,
                        help="seconds the main run may take before the rest is skipped")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args(argv)
    if args.connections < 1 or args.concurrency < 1 or args.warmup < 0:
        parser.error("--connections and --concurrency must be positive, --warmup not negative")

    started = time.monotonic()
    rng = random.Random(args.seed)
    directory = Path(tempfile.mkdtemp(prefix="certsrv-soak-"))
    log = directory / "certsrv.log"
    files = make_pki(directory)
    port = free_port()
    pause = HANDSHAKE_TIMEOUT + IDLE_TIMEOUT + 1.5
    try:
        with certsrv(files, port, log) as process:
            pid = process.pid
            note(f"certsrv pid {pid} on {HOST}:{port}; log {log}")
            load = Load(files, port)
            warm = Results()
            note(f"warm-up: {args.warmup} connections")
            asyncio.run(run_load(load, mix(args.warmup, rng), args.concurrency, pid, warm, 120))
            note(f"waiting {pause:.1f} s for the server's timeouts, then the baseline")
            baseline = settle(pid, None, pause)
            note(f"baseline: {baseline.fds} fds, {baseline.rss_kib} KiB RSS")
            results = Results(peak=baseline)
            kinds = mix(args.connections, rng)
            run_started = time.monotonic()
            note(f"soak: {args.connections} connections, {args.concurrency} at a time")
            asyncio.run(run_load(load, kinds, args.concurrency, pid, results, args.time_limit))
            run_seconds = time.monotonic() - run_started
            note(f"soak done in {run_seconds:.1f} s; waiting {pause:.1f} s for the timeouts")
            after = settle(pid, baseline, pause)
            alive = process.poll() is None
            workers = children(pid) if alive else []
        errors = traceback_lines(log)
    finally:
        if not args.keep:
            for path in sorted(directory.rglob("*"), reverse=True):
                path.unlink() if path.is_file() else path.rmdir()
            directory.rmdir()

    def growth(before: int, now: int) -> float:
        return (now - before) / before if before else 0.0

    fd_growth = growth(baseline.fds, after.fds)
    rss_growth = growth(baseline.rss_kib, after.rss_kib)
    fd_ok = fd_growth <= args.tolerance
    rss_ok = rss_growth <= args.tolerance
    unexpected = results.unexpected()
    total = sum(sum(c.values()) for c in results.outcomes.values())
    print(f"\ncertsrv soak: {total} connections in {run_seconds:.1f} s "
          f"({total / run_seconds:.0f}/s), {args.concurrency} concurrent, after a warm-up of "
          f"{args.warmup}; handshake timeout {HANDSHAKE_TIMEOUT:g} s, idle timeout "
          f"{IDLE_TIMEOUT:g} s\n")
    print(f"{'kind':12} {'count':>6}  outcomes")
    for kind in MIX:
        counts = results.outcomes.get(kind, collections.Counter())
        shown = ", ".join(f"{outcome} {n}" for outcome, n in counts.most_common())
        print(f"{kind:12} {sum(counts.values()):>6}  {shown}")
    print(f"\n{'server':10} {'baseline':>10} {'peak':>10} {'after':>10} {'change':>8}  within "
          f"{args.tolerance:.0%}")
    print(f"{'open fds':10} {baseline.fds:>10} {results.peak.fds:>10} {after.fds:>10} "
          f"{fd_growth:>+8.1%}  {'yes' if fd_ok else 'NO'}")
    print(f"{'RSS KiB':10} {baseline.rss_kib:>10} {results.peak.rss_kib:>10} "
          f"{after.rss_kib:>10} {rss_growth:>+8.1%}  {'yes' if rss_ok else 'NO'}")
    print(f"\nunexpected outcomes: {unexpected or 'none'}")
    print(f"server log tracebacks / unhandled errors: {len(errors)}")
    if workers:
        print(f"note: the server has child processes {workers}; only pid {pid} was measured")
    passed = fd_ok and rss_ok and not unexpected and not errors and alive
    if not alive:
        print("the server died during the run")
    print(f"\n{'PASS' if passed else 'FAIL'} ({time.monotonic() - started:.0f} s in all)")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
