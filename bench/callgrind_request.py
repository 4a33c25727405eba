#!/usr/bin/env python3
"""
Instructions per keep-alive request (and per full handshake), counted by callgrind.

    python bench/callgrind_request.py [--requests 2000] [--conns 16] [--handshakes 0]
                                      [--servers certsrv,constant,policy10,bare]
                                      [--certsrv-path DIR] [--keep DIR]

Each server runs under ``valgrind --tool=callgrind --instr-atstart=no``: nothing is counted
while it starts or while ``bench/keepalive.c`` opens its connections (a full handshake and
one warm-up request each). Then instrumentation is switched on (``callgrind_control -i on``),
the connections send ``--requests`` requests in all, one outstanding per connection, and
the counts are dumped and divided by the responses. With ``--handshakes N`` it is switched
on again for ``ab -n N -c 4`` full handshakes (one request each). Unlike CPU time, the
counts do not depend on what else the machine runs.

The servers, each with the bench's PKI (ECDSA P-256) and certsrv's bench arguments
(``--access-log off --log-accepted off``; OCSP on, the default, but the client certificate
names no responder):

``certsrv``   ``twistd certsrv``: the gate, then its ``/secure`` (a body naming the subject)
``constant``  certsrv serving ``bench/constant_app.py`` (``--app``): the bare server's body
``policy10``  ``constant`` plus a ten-rule ``--policy`` (bench.py's, the last rule admits)
``policy10s`` ``certsrv`` plus the ten-rule ``--policy`` (bench/run's ``policy10`` column)
``bare``      ``bench/bare_twisted.py``: twisted.web with OpenSSL's verification only

``constant`` against ``bare`` is what certsrv's checks cost; ``certsrv`` against
``constant`` is what its ``/secure`` application adds.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import bench  # noqa: E402  (bench/bench.py: its PKI, keepalive.c build, policy file)

SERVERS = ("certsrv", "constant", "policy10", "policy10s", "bare")
CERTSRV_ARGS = ["--access-log", "off", "--log-accepted", "off"]
CONSTANT_APP = ["--app", "constant_app.root", "--app-path", str(HERE)]


def server_command(name: str, port: int, pki: bench.PKI, policy: Path) -> list[str]:
    """The command line of server ``name`` (before valgrind's)."""
    if name == "bare":
        return [sys.executable, str(HERE / "bare_twisted.py"), str(port), str(pki.ca),
                str(pki.server_cert), str(pki.server_key)]
    extra = {"certsrv": [], "constant": CONSTANT_APP,
             "policy10": CONSTANT_APP + ["--policy", str(policy)],
             "policy10s": ["--policy", str(policy)]}[name]
    return [sys.executable, "-c", "import sys; from twisted.scripts.twistd import run; "
            "sys.argv[0] = 'twistd'; run()", "-n", "--pidfile=", "certsrv",
            "--listen", f"tcp:{port}:interface=127.0.0.1", "--ca", str(pki.ca),
            "--cert", str(pki.server_cert), "--key", str(pki.server_key),
            *CERTSRV_ARGS, *extra]


def control(pid: int, *args: str) -> None:
    result = subprocess.run(["callgrind_control", *args, str(pid)], capture_output=True,
                            text=True, timeout=120)
    if result.returncode != 0:
        raise bench.BenchError(f"callgrind_control {' '.join(args)} failed: "
                               f"{result.stdout}{result.stderr}")


def settle(pid: int, quiet: float = 1.0, timeout: float = 120) -> None:
    """Wait until the server has used no CPU for ``quiet`` seconds (done with the load's
    connections, closes included), so that the dump holds all of their work."""
    def cpu() -> int:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])

    deadline = time.monotonic() + timeout
    last = cpu()
    while time.monotonic() < deadline:
        time.sleep(quiet)
        now = cpu()
        if now == last:
            return
        last = now


def dumped_instructions(out: str, before: set[str], timeout: float = 60) -> tuple[int, set[str]]:
    """The Ir total of the dump that appeared since ``before`` (the known dump files)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        new = set(glob.glob(out + ".*")) - before
        for path in new:
            text = Path(path).read_text(errors="replace")
            for line in text.splitlines():
                if line.startswith(("summary:", "totals:")):
                    return int(line.split()[1]), before | new
        time.sleep(0.5)
    raise bench.BenchError(f"no callgrind dump appeared next to {out}")


def measure(name: str, args: argparse.Namespace, work: Path, pki: bench.PKI,
            keepalive: Path, policy: Path) -> dict[str, object]:
    port = bench.free_port()
    out = str(work / f"callgrind.{name}")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(args.certsrv_path),
                                                      env.get("PYTHONPATH")]))
    cmd = ["valgrind", "--tool=callgrind", "--instr-atstart=no",
           f"--callgrind-out-file={out}", *server_command(name, port, pki, policy)]
    log = open(work / f"{name}.log", "wb")
    proc = bench.spawn(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=work)
    result: dict[str, object] = {"server": name}
    try:
        bench.wait_for_port(port, proc, 600, lambda: bench.tail(work / f"{name}.log"))
        dumps: set[str] = set()
        load = subprocess.Popen(
            [str(keepalive), "--mode", "load", "--port", str(port), "--ca", str(pki.ca),
             "--cert", str(pki.client_cert), "--key", str(pki.client_key),
             "--conns", str(args.conns), "--duration", "3600", "--hold", "60",
             "--open-parallel", "4", "--setup-timeout", "600",
             "--max-requests", str(args.requests)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        assert load.stdin is not None and load.stdout is not None
        ready = load.stdout.readline().decode()
        if not ready.startswith("READY"):
            raise bench.BenchError(f"{name}: keepalive.c did not get ready: {ready!r}")
        control(proc.pid, "-i", "on")
        load.stdin.write(b"GO\n")
        load.stdin.flush()
        counts = json.loads(load.stdout.readline())
        settle(proc.pid)
        control(proc.pid, "--dump=keepalive")
        control(proc.pid, "-i", "off")
        load.stdin.close()
        load.wait(60)
        ir, dumps = dumped_instructions(out, dumps)
        n = counts["responses_200"]
        if counts.get("non200") or counts.get("errors"):
            raise bench.BenchError(f"{name}: {counts}")
        result.update(requests=n, keepalive_ir=ir, per_request=ir / n)
        if args.handshakes:
            control(proc.pid, "-i", "on")
            ab = subprocess.run(
                ["ab", "-q", "-n", str(args.handshakes), "-c", "4", "-E",
                 str(pki.client_combined), f"https://127.0.0.1:{port}/secure"],
                capture_output=True, text=True, timeout=3600)
            settle(proc.pid)
            control(proc.pid, "--dump=handshakes")
            control(proc.pid, "-i", "off")
            if "Failed requests:        0" not in ab.stdout or "Non-2xx" in ab.stdout:
                raise bench.BenchError(f"{name}: ab failed:\n{ab.stdout[-800:]}{ab.stderr}")
            ir, dumps = dumped_instructions(out, dumps)
            result.update(handshakes=args.handshakes, handshake_ir=ir,
                          per_handshake=ir / args.handshakes)
    finally:
        bench.stop_process(proc, grace=30)
        log.close()
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--requests", type=int, default=2000)
    p.add_argument("--conns", type=int, default=16)
    p.add_argument("--handshakes", type=int, default=0)
    p.add_argument("--servers", default="certsrv,constant,policy10,bare")
    p.add_argument("--certsrv-path", type=Path, default=bench.REPO)
    p.add_argument("--keep", type=Path, help="keep the callgrind files in this directory")
    args = p.parse_args()
    names = args.servers.split(",")
    unknown = set(names) - set(SERVERS)
    if unknown:
        p.error(f"unknown servers {sorted(unknown)}; known: {', '.join(SERVERS)}")
    work = args.keep or Path(tempfile.mkdtemp(prefix="callgrind-"))
    work.mkdir(parents=True, exist_ok=True)
    pki = bench.PKI(work, "ecdsa")
    keepalive = bench.build_keepalive(work)
    if keepalive is None:
        raise SystemExit("keepalive.c could not be built")
    policy = bench.policy_file(work, pki, 10)
    rows = []
    try:
        for name in names:
            bench.note(f"{name}: {args.requests} keep-alive requests under callgrind")
            rows.append(measure(name, args, work, pki, keepalive, policy))
            print(json.dumps(rows[-1]), flush=True)
    finally:
        bench.stop_all_children()
    bare = next((r for r in rows if r["server"] == "bare"), None)
    print(f"\n{'server':<10} {'Ir/request':>12} {'/bare':>6} {'Ir/handshake':>14} {'/bare':>6}")
    for r in rows:
        ratio = (f"{r['per_request'] / bare['per_request']:.2f}"  # type: ignore[operator]
                 if bare else "-")
        hs = r.get("per_handshake")
        hratio = (f"{hs / bare['per_handshake']:.2f}"  # type: ignore[operator]
                  if hs and bare and bare.get("per_handshake") else "-")
        hs_text = format(hs, ",.0f") if hs else "-"
        print(f"{r['server']:<10} {r['per_request']:>12,.0f} {ratio:>6} {hs_text:>14} "
              f"{hratio:>6}")


if __name__ == "__main__":
    main()
