"""EST over real sockets: ``twistd certsrv-pki-service --est`` with curl and openssl as the
client, ``certsrv-client renew``, and a client renewing itself twice while making
requests."""

from __future__ import annotations

import base64
import datetime
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from cryptography import x509
from twisted.internet import reactor, task
from twisted.trial.unittest import SkipTest, TestCase

from certsrv.client.http import http_client, load_client_credentials
from certsrv.pki.store import PKIStore
from tests._servers import low_port, run, spawn, twistd_argv, twistd_env, wait_listening

_EST = "/.well-known/est"


def _tools() -> None:
    for tool in ("curl", "openssl"):
        if shutil.which(tool) is None:
            raise SkipTest(f"{tool} is not installed")


class ESTService(TestCase):
    """A PKI directory and its service with --est on 127.0.0.1."""

    est_options: tuple[str, ...] = ()

    async def asyncSetUp(self) -> None:
        _tools()
        self.directory = Path(tempfile.mkdtemp())
        self.addCleanup(shutil.rmtree, self.directory)
        self.pki = self.directory / "pki"
        PKIStore.init(self.pki)
        self.port = low_port()
        _, self.service = spawn(self, twistd_argv(
            "certsrv-pki-service", "--pki", str(self.pki),
            "--listen", "tcp:0:interface=127.0.0.1",
            "--est", f"tcp:{self.port}:interface=127.0.0.1", *self.est_options))
        await wait_listening(self.port, self.service)

    def setUp(self) -> Any:
        from twisted.internet.defer import Deferred

        return Deferred.fromCoroutine(self.asyncSetUp())

    @property
    def base(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    async def curl(self, path: str, *extra: str) -> tuple[int, bytes, bytes]:
        """curl ``path`` trusting the PKI's CA: (HTTP status or 0, body, stderr)."""
        out, err, _ = await run(["curl", "-sS", "--max-time", "20", "--cacert",
                                 str(self.pki / "ca.pem"), "-o", "-", "-w",
                                 "\n%{http_code}", *extra, self.base + path])
        body, _, status = out.rpartition(b"\n")
        return int(status or b"0"), body, err

    async def new_csr(self, subject: str = "/CN=client", key: Path | None = None) -> Path:
        """``openssl req`` for a new P-256 key (or ``key``): the base64 DER CSR file."""
        self.csrs = getattr(self, "csrs", 0) + 1
        csr_der = self.directory / f"csr{self.csrs}.der"
        key_options = (["-key", str(key)] if key is not None else
                       ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                        "-keyout", str(self.directory / "new.key")])
        _, err, code = await run(["openssl", "req", "-new", *key_options, "-subj", subject,
                                  "-outform", "DER", "-out", str(csr_der)])
        self.assertEqual(code, 0, err)
        path = self.directory / f"csr{self.csrs}.b64"
        path.write_bytes(base64.encodebytes(csr_der.read_bytes()))
        return path

    async def reenroll(self, csr: Path, cert: str = "client.pem", key: str = "client.key",
                       content_type: str = "application/pkcs10") -> tuple[int, bytes, bytes]:
        return await self.curl(f"{_EST}/simplereenroll", "--cert", str(self.pki / cert),
                               "--key", str(self.pki / key), "--data-binary", f"@{csr}",
                               "-H", f"Content-Type: {content_type}")

    async def print_certs(self, body: bytes) -> str:
        """``openssl base64 -d | openssl pkcs7 -inform DER -print_certs`` of ``body``."""
        der, err, code = await run(["openssl", "base64", "-d"], stdin=body)
        self.assertEqual(code, 0, err)
        out, err, code = await run(["openssl", "pkcs7", "-inform", "DER", "-print_certs"],
                                   stdin=der)
        self.assertEqual(code, 0, err)
        return out.decode()


class CurlTests(ESTService):
    """curl and openssl against the EST endpoints."""

    async def test_cacerts_without_a_certificate(self) -> None:
        status, body, err = await self.curl(f"{_EST}/cacerts", "-D", str(self.directory / "h"))
        self.assertEqual(status, 200, err)
        headers = (self.directory / "h").read_text().lower()
        self.assertIn("content-type: application/pkcs7-mime", headers)
        self.assertIn("content-transfer-encoding: base64", headers)
        self.assertIn("subject=O = certsrv, CN = certsrv development CA",
                      await self.print_certs(body))

    async def test_simplereenroll(self) -> None:
        csr = await self.new_csr()
        status, body, err = await self.reenroll(csr)
        self.assertEqual(status, 200, err)
        pem = await self.print_certs(body)
        self.assertIn("subject=CN = client", pem)
        new_cert = self.directory / "new.pem"
        new_cert.write_text(pem)
        out, err, code = await run(["openssl", "verify", "-CAfile", str(self.pki / "ca.pem"),
                                    str(new_cert)])
        self.assertEqual(code, 0, err)
        pubkeys = [await run(["openssl", "x509", "-in", str(new_cert), "-noout", "-pubkey"]),
                   await run(["openssl", "pkey", "-in", str(self.directory / "new.key"),
                              "-pubout"])]
        self.assertEqual(pubkeys[0][0], pubkeys[1][0], "the certificate is for the new key")
        entry = PKIStore.open(self.pki).find("client")
        self.assertEqual(entry.serial, x509.load_pem_x509_certificate(pem.encode()).serial_number)
        # The new pair authenticates at once; the old one stays valid until it expires.
        shutil.copy(new_cert, self.pki / "renewed.pem")
        shutil.copy(self.directory / "new.key", self.pki / "renewed.key")
        status, _, err = await self.reenroll(await self.new_csr(), "renewed.pem", "renewed.key")
        self.assertEqual(status, 200, err)

    async def test_refusals(self) -> None:
        csr = await self.new_csr()
        status, body, _ = await self.curl(f"{_EST}/simplereenroll", "--data-binary", f"@{csr}",
                                          "-H", "Content-Type: application/pkcs10")
        self.assertEqual((status, b"no_certificate" in body), (403, True), body)
        cases = [
            (await self.new_csr("/CN=admin"), "application/pkcs10", 400, b"subject_mismatch"),
            (await self.new_csr(key=self.pki / "client.key"), "application/pkcs10", 400,
             b"key_reused"),
            (await self.new_csr(), "application/x-www-form-urlencoded", 415,
             b"wrong_content_type"),
        ]
        for csr, content_type, expected, reason in cases:
            status, body, err = await self.reenroll(csr, content_type=content_type)
            self.assertEqual((status, reason in body), (expected, True), body + err)
        big = self.directory / "big.b64"
        big.write_bytes(b"A" * 20_000)
        status, _, _ = await self.reenroll(big)
        self.assertEqual(status, 413)
        self.assertEqual(PKIStore.open(self.pki).find("client").serial,
                         x509.load_pem_x509_certificate(
                             (self.pki / "client.pem").read_bytes()).serial_number)

    async def test_revoked_certificate_is_refused(self) -> None:
        await task.deferLater(reactor, 1.1, lambda: None)  # the service's copy is 1 s old
        PKIStore.open(self.pki).revoke("client")
        status, body, err = await self.reenroll(await self.new_csr())
        # In the handshake when the service's copy of the index has it, else by the gate.
        self.assertIn(status, (0, 403), body)
        self.assertIn(b"revoked", body + err)
        for _ in range(50):  # the service's log reaches us through a pipe
            if "in the PKI index" in self.service.text:
                break
            await task.deferLater(reactor, 0.1, lambda: None)
        self.assertIn("revoked (unspecified) in the PKI index", self.service.text)
        self.assertEqual(PKIStore.open(self.pki).find("client").serial,
                         x509.load_pem_x509_certificate(
                             (self.pki / "client.pem").read_bytes()).serial_number)


class LimitTests(ESTService):
    """--est-max-renewals."""

    est_options = ("--est-max-renewals", "1")

    async def test_second_renewal_of_a_certificate_within_the_hour(self) -> None:
        # The store's client.pem becomes the successor: keep the first pair aside.
        shutil.copy(self.pki / "client.pem", self.pki / "first.pem")
        shutil.copy(self.pki / "client.key", self.pki / "first.key")
        status, _, err = await self.reenroll(await self.new_csr(), "first.pem", "first.key")
        self.assertEqual(status, 200, err)
        headers = self.directory / "h"
        status, body, _ = await self.curl(
            f"{_EST}/simplereenroll", "--cert", str(self.pki / "first.pem"), "--key",
            str(self.pki / "first.key"), "--data-binary", f"@{await self.new_csr()}",
            "-H", "Content-Type: application/pkcs10", "-D", str(headers))
        self.assertEqual(status, 429, body)
        self.assertIn(b"too_many_renewals", body)
        self.assertIn("retry-after: 3600", headers.read_text().lower())


class RenewCommandTests(ESTService):
    """``certsrv-client renew``."""

    async def test_renews_the_files(self) -> None:
        cert, key = self.directory / "c.pem", self.directory / "c.key"
        shutil.copy(self.pki / "client.pem", cert)
        shutil.copy(self.pki / "client.key", key)
        before = load_client_credentials(cert, key).certificate
        command = [sys.executable, "-m", "certsrv.client.cli", "renew", "--cert", str(cert),
                   "--key", str(key), "--ca", str(self.pki / "ca.pem"), self.base]
        out, err, code = await run(command, env=twistd_env())
        self.assertEqual(code, 0, err)
        after = load_client_credentials(cert, key).certificate
        self.assertNotEqual(after.serial_number, before.serial_number)
        self.assertIn(f"serial {PKIStore.open(self.pki).find('client').serial_hex}", out.decode())
        self.assertEqual(os.stat(key).st_mode & 0o777, 0o600)
        out, err, code = await run([*command[:-1], "--if-due", self.base], env=twistd_env())
        self.assertEqual(code, 0, err)
        self.assertIn(b"not due", out)
        PKIStore.open(self.pki).revoke(after.serial_number)
        await task.deferLater(reactor, 1.1, lambda: None)  # the service's copy is 1 s old
        out, err, code = await run(command, env=twistd_env())
        self.assertIn(code, (1, 2), out)  # refused by the gate (403) or in the handshake
        self.assertIn(b"revoked", err)


class SelfRenewalTests(ESTService):
    """One client renewing itself twice against running servers while making requests."""

    est_options = ("--est-validity", "60s")

    async def test_renews_twice_without_a_failed_request(self) -> None:
        store = PKIStore.open(self.pki)
        store.issue_client("worker", validity=datetime.timedelta(seconds=60))
        cert, key = self.directory / "worker.pem", self.directory / "worker.key"
        shutil.copy(self.pki / "clients" / "worker.pem", cert)
        shutil.copy(self.pki / "clients" / "worker.key", key)
        app_port = low_port()
        _, server = spawn(self, twistd_argv(
            "certsrv", "--cert", str(self.pki / "server.pem"), "--key",
            str(self.pki / "server.key"), "--ca", str(self.pki / "ca.pem"),
            "--listen", f"tcp:{app_port}:interface=127.0.0.1"))
        await wait_listening(app_port, server)
        # Certificates start 5 minutes back: a 60 s one spans 360 s, and 0.15 of that is 54 s.
        client = http_client(reactor, cert=cert, key=key, ca=self.pki / "ca.pem",
                             renew_url=self.base, renew_fraction=0.15, timeout=20)
        requests = failures = 0
        serials: list[str] = []
        renewal = client.renewal  # type: ignore[attr-defined]
        deadline = time.monotonic() + 90
        after = 0  # requests made since the second renewal
        while after < 5 and time.monotonic() < deadline:
            after += renewal.renewals >= 2
            requests += 1
            try:
                response = await client.get(f"https://127.0.0.1:{app_port}/secure",
                                            headers={"accept": "application/json"})
                body = json.loads(await response.content())
                if response.code != 200:
                    failures += 1
                elif body["serial"] not in serials:
                    serials.append(body["serial"])
            except Exception:
                failures += 1
            await task.deferLater(reactor, 0.2, lambda: None)
        print(f"\nEST self-renewal run: {requests} requests, {renewal.renewals} renewals, "
              f"{failures} failed requests, {renewal.failures} failed renewals, "
              f"{len(serials)} certificates seen by the server")
        self.assertEqual((renewal.renewals, failures, renewal.failures), (2, 0, 0))
        self.assertEqual(len(serials), 3, "the server saw each certificate in turn")
        on_disk = load_client_credentials(cert, key).certificate
        self.assertEqual(f"{on_disk.serial_number:x}", serials[-1].lower().replace(":", ""))

