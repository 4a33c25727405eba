"""``certsrv-client renew``: its arguments and the answers it gives without a server."""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase, TestCase

from certsrv.client.renewcli import main
from certsrv.pki import CertificateAuthority
from tests._servers import run, twistd_env


class ArgumentTests(SynchronousTestCase):
    """Usage errors end with status 2 before anything is read or sent."""

    def test_usage_errors(self) -> None:
        for argv in ([], ["https://127.0.0.1:8443"], ["--cert", "c.pem"],
                     ["--cert", "c.pem", "--if-due", "--fraction", "2", "https://x"]):
            self.assertEqual(main(argv), 2, argv)


class CommandTests(TestCase):
    """The command as a process (it runs its own reactor)."""

    def setUp(self) -> None:
        self.directory = Path(tempfile.mkdtemp())
        self.addCleanup(shutil.rmtree, self.directory)
        ca = CertificateAuthority.create()
        ca.issue_client("alice").write(self.directory / "c.pem", self.directory / "c.key")
        (self.directory / "ca.pem").write_bytes(ca.certificate_pem())

    async def renew(self, *argv: str) -> tuple[str, str, int]:
        out, err, code = await run([sys.executable, "-m", "certsrv.client.cli", "renew", *argv],
                                   env=twistd_env())
        return out.decode(), err.decode(), code

    async def test_not_due(self) -> None:
        out, err, code = await self.renew("--cert", str(self.directory / "c.pem"), "--key",
                                          str(self.directory / "c.key"), "--if-due",
                                          "https://127.0.0.1:9")
        self.assertEqual(code, 0, err)
        self.assertRegex(out, r"^not due: .*c\.pem renews from 20\d\d-")

    async def test_plain_http_url(self) -> None:
        out, err, code = await self.renew("--cert", str(self.directory / "c.pem"), "--key",
                                          str(self.directory / "c.key"), "http://127.0.0.1:9")
        self.assertEqual(code, 2)
        self.assertIn("must be an https:// URL", err)

    async def test_missing_key_file(self) -> None:
        out, err, code = await self.renew("--cert", str(self.directory / "c.pem"), "--key",
                                          str(self.directory / "missing.key"),
                                          "https://127.0.0.1:9")
        self.assertEqual(code, 2)
        self.assertIn("missing.key", err)

    async def test_server_unreachable(self) -> None:
        before = (self.directory / "c.pem").read_bytes(), (self.directory / "c.key").read_bytes()
        out, err, code = await self.renew("--cert", str(self.directory / "c.pem"), "--key",
                                          str(self.directory / "c.key"), "--ca",
                                          str(self.directory / "ca.pem"), "--timeout", "5",
                                          "https://127.0.0.1:9")
        self.assertEqual(code, 2, out)
        self.assertEqual(out, "")
        self.assertIn("refused", err)
        after = (self.directory / "c.pem").read_bytes(), (self.directory / "c.key").read_bytes()
        self.assertEqual(before, after)
