"""
Fuzz the parsers of outside input with atheris (libFuzzer), or a plain mutation loop.

Each target feeds one parser and knows what it may raise (OCSPError, ConfigurationError,
CRLError, ForwardedCertError); anything else, or an error it logs, is a crash. Crashes are
counted and grouped by (exception type, innermost certsrv frame), the first input of each
group saved to ``--crash-dir``, and fuzzing goes on. The mutator, fixtures and contracts are
those of ``tests/_support.py``, which ``tests/e2e/test_hostile.py`` runs under hypothesis, so a
crash found here reproduces there.

    python fuzz/fuzz_targets.py --target all --runs 20000

With atheris each target runs in a child process (libFuzzer exits when done); without it
(``--engine random``, or atheris not installed) a seeded loop applies the DER-aware and
byte-level mutations of the tests. Either way the output ends with one line per target:
inputs tried, crashes and unique crashes. Exit status 0 unless ``--fail-on-crash`` and a
crash.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import importlib.util
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

TARGET_NAMES = ("ocsp_verify", "ocsp_verify_signed", "ocsp_respond", "forwarded_rfc9440",
                "forwarded_nginx", "forwarded_xfcc", "policy", "load_certificates",
                "load_private_key", "load_crl", "verify_crl", "verify_crl_signed", "est_request",
                "est_answer")


@dataclass
class Target:
    """One parser: valid inputs to start from, and the call that must not crash."""

    name: str
    seeds: list[bytes]
    run: Callable[[bytes], None]
    structured: bool = True  # DER inside: worth the DER-aware mutator


@dataclass
class Tally:
    """What one target's run found."""

    target: str
    engine: str
    inputs: int = 0
    crashes: int = 0
    signatures: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    def line(self) -> str:
        """The one-line summary."""
        return (f"{self.target:18} engine={self.engine:8} inputs={self.inputs:<7} "
                f"crashes={self.crashes:<5} unique={len(self.signatures):<3} "
                f"({self.seconds:.0f} s)")


# --- the targets -----------------------------------------------------------------------------

def _percent(data: bytes) -> bytes:
    return urllib.parse.quote_from_bytes(data, safe="").encode("ascii")


def _split(data: bytes) -> tuple[bytes, bytes | None]:
    """A fuzz input as two header values: before and after the first newline."""
    leaf, newline, chain = data.partition(b"\n")
    return leaf, (chain if newline else None)


def _signed_parts(der: bytes, path: tuple[int, ...]) -> tuple[bytes, bytes, bytes]:
    """(to-be-signed, algorithm, what follows the signature) of the SIGNED{} at ``path``."""
    from tests._support import der_encode, der_parse

    nodes = der_parse(der)
    assert nodes is not None
    node = nodes[0]
    for index in path:
        assert node.children is not None
        node = node.children[index]
    children = node.children
    assert children is not None
    return der_encode(children[:1]), der_encode(children[1:2]), der_encode(children[3:])


def build_targets(scratch: str) -> dict[str, Target]:
    """The targets; ``scratch`` is a directory for the files the loaders read."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    from certsrv.access.policy import load_policy
    from certsrv.forwarded.headers import ForwardedCertError, ForwardedFormat, parse_forwarded
    from certsrv.revocation.crlfiles import load_crl
    from certsrv.x509.certs import load_certificates, load_private_key
    from tests import _support as hostile
    from tests._support import shared_pki

    f = hostile.fixtures()
    resource = f.responder_resource()
    cases = f.ocsp_cases
    path = os.path.join(scratch, "input")

    def ocsp_verify(data: bytes) -> None:
        case = cases[data[0] % len(cases)] if data else cases[0]
        hostile.check_verify_response(case, data[1:])

    # OCSPResponse { status, [0] { SEQUENCE { OID, OCTET STRING { BasicOCSPResponse } } } }
    ocsp_parts = [_signed_parts(c.der, (1, 0, 1, 0)) for c in cases]

    def ocsp_verify_signed(data: bytes) -> None:
        """The input is tbsResponseData: signed by the case's key, so it gets verified."""
        index = data[0] % len(cases) if data else 0
        case, tbs = cases[index], data[1:]
        _, algorithm, certificates = ocsp_parts[index]
        signature = hostile.sign_like(case.key, tbs, case.pss)
        basic = hostile.der_tlv(0x30, tbs + algorithm + hostile.der_tlv(0x03, b"\x00" + signature)
                                + certificates)
        response_bytes = hostile.der_tlv(0x30, b"\x06\x09\x2b\x06\x01\x05\x05\x07\x30\x01\x01"
                                         + hostile.der_tlv(0x04, basic))
        hostile.check_verify_response(case, hostile.der_tlv(
            0x30, b"\x0a\x01\x00" + hostile.der_tlv(0xA0, response_bytes)))

    crl_tbs, crl_algorithm, _ = _signed_parts(f.crl, ())

    def verify_crl_signed(data: bytes) -> None:
        """The input is tbsCertList: signed by the CA, so the checks after the signature run."""
        signature = hostile.sign_like(f.ca.private_key, data)
        hostile.check_verify_crl(hostile.der_tlv(
            0x30, data + crl_algorithm + hostile.der_tlv(0x03, b"\x00" + signature)))

    def forwarded(fmt: ForwardedFormat) -> Callable[[bytes], None]:
        chain_name = b"x-ssl-client-chain" if fmt is ForwardedFormat.NGINX else None

        def run(data: bytes) -> None:
            if fmt is ForwardedFormat.XFCC:
                headers = {b"x-forwarded-client-cert": [data]}
            else:
                leaf, chain = _split(data)
                name = b"client-cert" if fmt is ForwardedFormat.RFC9440 else b"x-ssl-client-cert"
                headers = {name: [leaf]}
                if chain is not None:
                    headers[chain_name or b"client-cert-chain"] = [chain]
            try:
                parse_forwarded(fmt, headers, chain_header_name=chain_name)
            except ForwardedCertError:
                pass
        return run

    def policy(data: bytes) -> None:
        hostile.check_load(path, data, load_policy)

    pki = shared_pki()
    bob = pki.client_cert("via_intermediate")
    leaf_der = bob.certificate.public_bytes(serialization.Encoding.DER)
    chain = bob.chain
    pem = bob.certificate.public_bytes(serialization.Encoding.PEM)
    chain_pem = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in chain)
    sf = b", ".join(b":" + base64.b64encode(c.public_bytes(serialization.Encoding.DER)) + b":"
                    for c in chain)
    xfcc = (b'By=spiffe://example.org/proxy;Hash=' + b"a" * 64 + b';Cert="' + _percent(pem)
            + b'";Chain="' + _percent(pem + chain_pem) + b'";Subject="CN=bob";'
            + b"URI=spiffe://example.org/bob;DNS=bob.example.org")
    example = (ROOT / "docs" / "policy-example.toml")
    policies = [example.read_bytes()] if example.exists() else []
    policies += [b'[[rule]]\nname = "api"\npath = "/api"\nmethods = ["GET"]\n'
                 b'allow = { subject = { CN = ["alice", "bob"] }, dns = "*.svc.example.org" }\n'
                 b'[[rule]]\npath = "/"\npublic = true\n',
                 b'[[rule]]\npath = "/x"\nallow = { spiffe = "spiffe://example.org/ns/a/*", '
                 b'any = false }\n']
    crl = x509.load_der_x509_crl(f.crl)
    pem_label = {"load_certificates": "CERTIFICATE", "load_private_key": "PRIVATE KEY",
                 "load_crl": "X509 CRL"}

    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    from certsrv.client.renew import RenewalError, read_certs_only
    from certsrv.pki.est import PKCS10_TYPE, Answer, certs_only, read_request

    csr_der = (x509.CertificateSigningRequestBuilder().subject_name(bob.certificate.subject)
               .sign(ec.generate_private_key(ec.SECP256R1()), hashes.SHA256())
               .public_bytes(serialization.Encoding.DER))

    def est_request(data: bytes) -> None:
        """A DER request, sent base64 as EST clients do: a request or a refusal, no crash."""
        result = read_request(PKCS10_TYPE, base64.encodebytes(data))
        assert isinstance(result, Answer | x509.CertificateSigningRequest), result

    def est_answer(data: bytes) -> None:
        """A DER PKCS#7 answer, base64 as EST servers send it: certificates or RenewalError."""
        try:
            read_certs_only(base64.encodebytes(data))
        except RenewalError:
            pass

    def with_pem(name: str, ders: tuple[bytes, ...]) -> list[bytes]:
        return [*ders, *(hostile.pem_armour(pem_label[name], d) for d in ders)]

    def loader(load: Callable[[str], object]) -> Callable[[bytes], None]:
        return lambda data: hostile.check_load(path, data, load)

    targets = [
        Target("ocsp_verify", [bytes((i,)) + c.der for i, c in enumerate(cases)], ocsp_verify),
        Target("ocsp_verify_signed", [bytes((i,)) + p[0] for i, p in enumerate(ocsp_parts)],
               ocsp_verify_signed),
        Target("ocsp_respond", list(f.ocsp_requests),
               lambda data: hostile.check_respond(resource, data)),
        Target("forwarded_rfc9440", [b":" + base64.b64encode(leaf_der) + b":\n" + sf,
                                     b":" + base64.b64encode(leaf_der) + b":"],
               forwarded(ForwardedFormat.RFC9440), structured=False),
        Target("forwarded_nginx", [_percent(pem) + b"\n" + _percent(chain_pem), pem],
               forwarded(ForwardedFormat.NGINX), structured=False),
        Target("forwarded_xfcc", [xfcc], forwarded(ForwardedFormat.XFCC), structured=False),
        Target("policy", policies, policy, structured=False),
        Target("load_certificates", with_pem("load_certificates", f.certificates),
               loader(load_certificates)),
        Target("load_private_key", with_pem("load_private_key", f.keys),
               loader(load_private_key)),
        Target("load_crl", with_pem("load_crl", (f.crl,)), loader(load_crl)),
        Target("verify_crl", [f.crl, crl.public_bytes(serialization.Encoding.PEM)],
               hostile.check_verify_crl),
        Target("verify_crl_signed", [crl_tbs], verify_crl_signed),
        Target("est_request", [csr_der], est_request),
        Target("est_answer", [base64.b64decode(certs_only([f.ca.certificate]))], est_answer),
    ]
    return {t.name: t for t in targets}


# --- running one input -----------------------------------------------------------------------

class Runner:
    """Calls a target, telling crashes (unexpected exceptions, logged errors) apart."""

    def __init__(self, target: Target, engine: str, crash_dir: str) -> None:
        from twisted.logger import ILogObserver, globalLogPublisher

        from tests import _support as hostile

        self.target = target
        self.tally = Tally(target.name, engine)
        self.crash_dir = crash_dir
        self._hostile = hostile
        self._logged: list[Any] = []
        globalLogPublisher.addObserver(cast(ILogObserver, self._observe))

    def _observe(self, event: dict[str, Any]) -> None:
        failure = event.get("log_failure")
        if failure is not None:
            self._logged.append(failure)

    def __call__(self, data: bytes) -> None:
        self.tally.inputs += 1
        self._logged.clear()
        errors: list[Any] = []
        try:
            self.target.run(data)
        except Exception as e:  # a crash: anything the contract does not allow
            errors.append(e)
        errors += self._logged
        if errors:
            self._record(errors[0], data)

    def _record(self, error: Any, data: bytes) -> None:
        hostile = self._hostile
        where = hostile.raised(error)
        signature = f"{type(where.error).__name__} at {where.function or '?'}: {where.line[:60]}"
        self.tally.crashes += 1
        first = signature not in self.tally.signatures
        self.tally.signatures[signature] = self.tally.signatures.get(signature, 0) + 1
        if first:
            digest = hashlib.sha256(signature.encode()).hexdigest()[:12]
            os.makedirs(self.crash_dir, exist_ok=True)
            out = os.path.join(self.crash_dir, f"{self.target.name}-{digest}.bin")
            Path(out).write_bytes(data)
            print(f"  crash in {self.target.name}: {signature} -> {out}"
                  , file=sys.stderr, flush=True)


# --- engines ---------------------------------------------------------------------------------

class RandomChoices:
    """The tests' mutator, driven by ``random.Random``."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def integer(self, low: int, high: int) -> int:
        """An integer in [low, high]."""
        return self.rng.randint(low, high)

    def blob(self, max_size: int) -> bytes:
        """Up to ``max_size`` random bytes."""
        return self.rng.randbytes(self.rng.randint(0, max_size))


def run_random(target: Target, runs: int, seed: int, max_seconds: float, crash_dir: str) -> Tally:
    """The plain engine: seeds, mutated one to three times; every tenth input random bytes."""
    from tests import _support as hostile

    runner = Runner(target, "random", crash_dir)
    rng = random.Random(seed)
    choices = RandomChoices(rng)
    started = time.monotonic()
    deadline = started + max_seconds
    for seed_input in target.seeds[:runs]:
        runner(seed_input)
    while runner.tally.inputs < runs and time.monotonic() < deadline:
        if rng.random() < 0.1:
            data = rng.randbytes(rng.randint(0, 2048))
        else:
            base = rng.choice(target.seeds)
            if target.structured and base[:1] != b"-":
                data = _mutate_structured(target, base, choices)
            else:
                data = hostile.mutate_bytes(base, choices, rng.randint(1, 4))
        runner(data)
    runner.tally.seconds = time.monotonic() - started
    return runner.tally


def _mutate_structured(target: Target, data: bytes, choices: RandomChoices) -> bytes:
    """The tests' DER-aware or byte-level mutation; the OCSP targets' first byte (which case)
    is kept out of it."""
    from tests import _support as hostile

    if target.name.startswith("ocsp_verify"):
        return data[:1] + hostile.mutate(data[1:], choices)
    return hostile.mutate(data, choices)


def atheris_available() -> bool:
    """Whether atheris can be imported."""
    return importlib.util.find_spec("atheris") is not None


def run_atheris_worker(name: str, runs: int, seed: int, max_seconds: float, crash_dir: str,
                       summary: str, scratch: str) -> None:
    """In a child process: fuzz one target under libFuzzer, writing the tally as it goes."""
    import atheris  # type: ignore[import-untyped]

    with atheris.instrument_imports(include=["certsrv"]):
        import certsrv.access.policy  # noqa: F401
        import certsrv.forwarded.headers  # noqa: F401
        import certsrv.pki.responder  # noqa: F401
        import certsrv.revocation.crlfetch  # noqa: F401
        import certsrv.revocation.crlfiles  # noqa: F401
        import certsrv.revocation.ocsp  # noqa: F401
        import certsrv.x509.certs  # noqa: F401
    # libFuzzer ends the process without unwinding: the parent removes ``scratch``.
    target = build_targets(scratch)[name]
    runner = Runner(target, "atheris", crash_dir)
    started = time.monotonic()
    corpus = os.path.join(scratch, "corpus")
    os.makedirs(corpus)
    for index, data in enumerate(target.seeds):
        Path(corpus, f"seed-{index}").write_bytes(data)

    def save() -> None:
        runner.tally.seconds = time.monotonic() - started
        Path(summary).write_text(json.dumps(runner.tally.__dict__))

    def one_input(data: bytes) -> None:
        runner(data)
        if runner.tally.inputs % 250 == 0 or runner.tally.inputs >= runs:
            save()

    def mutator(data: bytes, max_size: int, mutation_seed: int) -> bytes:
        """libFuzzer's own mutations, and half the time the tests' DER-aware ones."""
        rng = random.Random(mutation_seed)
        if not target.structured or data[:1] == b"-" or rng.random() < 0.5:
            return bytes(atheris.Mutate(data, max_size))
        return _mutate_structured(target, data, RandomChoices(rng))[:max_size]

    save()
    max_len = max(len(s) for s in target.seeds) * 2 + 64
    atheris.Setup([sys.argv[0], f"-runs={runs}", f"-seed={seed}",
                   f"-max_total_time={int(max_seconds)}", f"-max_len={max_len}",
                   "-rss_limit_mb=4096", "-print_final_stats=0", corpus], one_input,
                  custom_mutator=mutator)
    atheris.Fuzz()  # libFuzzer exits the process when done


def run_atheris(name: str, runs: int, seed: int, max_seconds: float, crash_dir: str) -> Tally:
    """Run one target under atheris in a child process; its tally, as far as it got."""
    with tempfile.TemporaryDirectory(prefix="certsrv-fuzz-") as work:
        summary = os.path.join(work, "summary.json")
        scratch = os.path.join(work, "scratch")
        os.makedirs(scratch)
        command = [sys.executable, os.path.abspath(__file__), "--worker", "--target", name,
                   "--runs", str(runs), "--seed", str(seed), "--max-seconds", str(max_seconds),
                   "--crash-dir", crash_dir, "--summary", summary, "--scratch", scratch]
        log = os.path.join(work, "libfuzzer.log")
        with open(log, "wb") as out:
            try:
                code = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT,
                                      timeout=max_seconds + 120, check=False).returncode
            except subprocess.TimeoutExpired:
                code = -1
        crash_lines = [line for line in Path(log).read_text(errors="replace").splitlines()
                       if line.startswith("  crash in")]
        for line in crash_lines:
            print(line, file=sys.stderr)
        if not os.path.exists(summary):
            tail = Path(log).read_text(errors="replace")[-2000:]
            raise RuntimeError(f"the atheris worker for {name} wrote no summary "
                               f"(exit {code}):\n{tail}")
        data = json.loads(Path(summary).read_text())
        tally = Tally(**data)
        if code != 0:
            tally.engine = f"atheris(exit {code})"
        return tally


@contextmanager
def _scratch() -> Iterator[str]:
    directory = tempfile.mkdtemp(prefix="certsrv-fuzz-")
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


# --- command line ----------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    """Fuzz the chosen targets and print one summary line per target."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip(),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", default="all", choices=("all", *TARGET_NAMES))
    parser.add_argument("--runs", type=int, default=20_000, help="inputs per target")
    parser.add_argument("--engine", default="auto", choices=("auto", "atheris", "random"))
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--max-seconds", type=float, default=600.0,
                        help="time limit per target")
    parser.add_argument("--crash-dir", default=os.path.join(tempfile.gettempdir(),
                                                            "certsrv-fuzz-crashes"))
    parser.add_argument("--fail-on-crash", action="store_true",
                        help="exit 1 when any input crashed")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--summary", help=argparse.SUPPRESS)
    parser.add_argument("--scratch", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    # cryptography warns about over-long name attributes it still parses: noise, not crashes.
    warnings.simplefilter("ignore", UserWarning)
    if args.runs < 1 or args.max_seconds <= 0:
        parser.error("--runs and --max-seconds must be positive")

    if args.worker:
        run_atheris_worker(args.target, args.runs, args.seed, args.max_seconds,
                           args.crash_dir, args.summary, args.scratch)
        return 0

    engine = args.engine
    if engine == "auto":
        engine = "atheris" if atheris_available() else "random"
    elif engine == "atheris" and not atheris_available():
        parser.error("atheris is not installed (pip install atheris), or use --engine random")
    names = TARGET_NAMES if args.target == "all" else (args.target,)
    print(f"engine: {engine}; {args.runs} inputs per target; seed {args.seed}; "
          f"crashes saved in {args.crash_dir}", flush=True)
    tallies: list[Tally] = []
    if engine == "atheris":
        for name in names:
            tallies.append(run_atheris(name, args.runs, args.seed, args.max_seconds,
                                       args.crash_dir))
            print(tallies[-1].line(), flush=True)
    else:
        with _scratch() as scratch:
            targets = build_targets(scratch)
            for name in names:
                tallies.append(run_random(targets[name], args.runs, args.seed,
                                          args.max_seconds, args.crash_dir))
                print(tallies[-1].line(), flush=True)
    inputs = sum(t.inputs for t in tallies)
    crashes = sum(t.crashes for t in tallies)
    unique = sum(len(t.signatures) for t in tallies)
    print(f"total: engine={engine} targets={len(tallies)} inputs={inputs} crashes={crashes} "
          f"unique={unique}", flush=True)
    return 1 if args.fail_on_crash and crashes else 0


if __name__ == "__main__":
    sys.exit(main())
