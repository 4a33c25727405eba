"""certsrv.client.cli: certsrv-client's argument parsing and its usage errors; a PKCS#12
file or an encrypted key against a real server."""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys

from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import SynchronousTestCase, TestCase

import certsrv
from certsrv.client.cli import _header, _timeout, main
from certsrv.pki import encrypted_key_pem, pkcs12_bytes
from tests._servers import low_port, spawn, twistd_argv, wait_listening
from tests._support import Files, shared_pki, write_pem

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(certsrv.__file__)))


class ArgumentTests(SynchronousTestCase):
    """``-H 'Name: value'`` and ``--timeout SECONDS`` are checked as they are parsed."""

    def test_header(self) -> None:
        self.assertEqual(_header("Accept: application/json"), ("Accept", "application/json"))
        self.assertEqual(_header("X-Empty:"), ("X-Empty", ""))
        for bad in ("no colon", ": value", " Lead: x"):
            self.assertRaises(argparse.ArgumentTypeError, _header, bad)

    def test_timeout(self) -> None:
        self.assertEqual(_timeout("2.5"), 2.5)
        for bad in ("0", "-1", "soon", "nan"):
            self.assertRaises(argparse.ArgumentTypeError, _timeout, bad)

    def test_usage_errors_exit_2(self) -> None:
        cert = ["--cert", "c.pem"]
        for argv, words in (([*cert, "--timeout", "0", "https://127.0.0.1:1/"], "timeout"),
                            ([*cert, "http://127.0.0.1:1/"], "must start with https://")):
            err = io.StringIO()
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                self.assertEqual(main(argv), 2, argv)
            self.assertIn("certsrv-client", err.getvalue())
            self.assertIn(words, err.getvalue())


PASSPHRASE = "correct horse battery"


class SafeAtRestTests(TestCase):
    """certsrv-client (a subprocess) with a PKCS#12 file or an encrypted key, against a real
    ``twistd certsrv``; the passphrase from the environment or a file, never an argument."""

    timeout = 60

    def setUp(self) -> None:
        self.files = Files(os.path.abspath(self.mktemp()))
        alice = shared_pki().client
        self.p12 = write_pem(self.files.dir, "alice.p12", pkcs12_bytes(
            "alice", alice.private_key, alice.certificate, [shared_pki().root.certificate],
            PASSPHRASE.encode()), 0o600)
        self.pem = write_pem(self.files.dir, "alice.pem", alice.chain_pem())
        self.key = write_pem(self.files.dir, "alice.key", encrypted_key_pem(
            alice.private_key, PASSPHRASE.encode()), 0o600)
        self.pw = write_pem(self.files.dir, "alice.pw", PASSPHRASE.encode() + b"\n", 0o600)

    async def serve(self) -> str:
        port = low_port()
        _, child = spawn(self, twistd_argv(
            "certsrv", "--listen", f"tcp:{port}:interface=127.0.0.1", *self.files.argv()))
        await wait_listening(port, child)
        return f"https://localhost:{port}/secure"

    async def client(self, *argv: str) -> tuple[int, str, str]:
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([_REPO, *sys.path]),
                   ALICE_PW=PASSPHRASE)
        out, err, code = await getProcessOutputAndValue(
            sys.executable, ["-m", "certsrv.client.cli", "--ca", self.files.ca, *argv], env=env)
        self.assertNotIn(b"Traceback", err)
        self.assertNotIn(PASSPHRASE.encode(), out + err)
        return code, out.decode(), err.decode()

    async def test_pkcs12_and_encrypted_key(self) -> None:
        url = await self.serve()
        for argv in (["--cert", self.p12, "--key-passphrase-env", "ALICE_PW"],
                     ["--cert", self.pem, "--key", self.key, "--key-passphrase-file", self.pw]):
            code, out, err = await self.client(url, *argv)
            self.assertEqual((code, err), (0, ""), argv)
            self.assertTrue(out.startswith("HTTP/1.1 200 OK\n"), out)

    async def test_exposed_passphrase_file_is_warned_about(self) -> None:
        url = await self.serve()
        os.chmod(self.pw, 0o644)
        code, _, err = await self.client(url, "--cert", self.pem, "--key", self.key,
                                         "--key-passphrase-file", self.pw)
        self.assertEqual((code, err), (0, (
            f"certsrv-client: warning: {self.pw}: the passphrase of the client's private key "
            "is readable by other users (mode 0o644); chmod 600 it\n")))

    async def test_refusals(self) -> None:
        wrong = write_pem(self.files.dir, "wrong.pw", b"not it\n", 0o600)
        url = "https://localhost:1/"
        cases = [
            (["--cert", self.p12, "--key-passphrase-file", wrong],
             f"certsrv-client: {self.p12}: the passphrase from file {wrong} does not decrypt "
             "this PKCS#12 file (or it is damaged)\n"),
            (["--cert", self.pem, "--key", self.key],  # stdin is no terminal here
             f"certsrv-client: {self.key}: the key is encrypted and there is no terminal to ask "
             "on for its passphrase: give --key-passphrase-env NAME or --key-passphrase-file "
             "PATH\n"),
            (["--cert", self.p12, "--key", self.key, "--key-passphrase-env", "ALICE_PW"],
             f"certsrv-client: {self.p12}: this PKCS#12 file holds the private key; give no "
             "separate key\n"),
        ]
        for argv, expected in cases:
            self.assertEqual(await self.client(url, *argv), (2, "", expected))
        code, _, err = await self.client(url, "--cert", self.p12, "--passphrase", "x")
        self.assertEqual(code, 2)
        self.assertIn("unrecognized arguments", err)
