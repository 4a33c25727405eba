"""Keys safe at rest, end to end: a real ``twistd certsrv`` with an encrypted key or a
PKCS#12 file, reloaded by SIGHUP; curl presenting a PKCS#12 file or an encrypted PEM key."""

from __future__ import annotations

import os
import shutil

from twisted.internet import defer, reactor, task
from twisted.trial.unittest import SkipTest, TestCase

from certsrv.pki import encrypted_key_pem, pkcs12_bytes
from tests._servers import low_port, run, spawn, twistd_argv, wait_listening
from tests._support import shared_pki, write_pem

PASSPHRASE = "correct horse battery"
ENV = "CERTSRV_E2E_KEY_PASSPHRASE"


def _sleep(seconds: float) -> defer.Deferred[None]:
    return task.deferLater(reactor, seconds, lambda: None)  # type: ignore[arg-type]


class EncryptedServerKeyTests(TestCase):
    """The server decrypts its key with the passphrase from a file or the environment, and
    re-reads both on SIGHUP; curl authenticates with a PKCS#12 file or an encrypted key."""

    timeout = 90

    def setUp(self) -> None:
        if shutil.which("curl") is None:
            raise SkipTest("curl is not installed")
        self.pki = shared_pki()
        self.dir = os.path.abspath(self.mktemp())
        self.ca = write_pem(self.dir, "ca.pem", self.pki.root.certificate_pem())
        self.server_cert = write_pem(self.dir, "server.pem", self.pki.server.chain_pem())
        self.server_key = write_pem(self.dir, "server.key",
                                    self.pki.server.private_key_pem(PASSPHRASE.encode()), 0o600)
        self.pw_file = write_pem(self.dir, "server.pw", PASSPHRASE.encode() + b"\n", 0o600)
        client = self.pki.client
        self.client_p12 = write_pem(self.dir, "client.p12", pkcs12_bytes(
            "alice", client.private_key, client.certificate, [self.pki.root.certificate],
            PASSPHRASE.encode()), 0o600)
        self.client_pem = write_pem(self.dir, "client.pem", client.chain_pem())
        self.client_key = write_pem(self.dir, "client.key", encrypted_key_pem(
            client.private_key, PASSPHRASE.encode()), 0o600)

    async def start(self, *argv: str) -> None:
        self.port = low_port()
        self.process, self.child = spawn(self, twistd_argv(
            "certsrv", "--listen", f"tcp:{self.port}:interface=127.0.0.1", "--ca", self.ca,
            *argv), cwd=self.dir)
        await wait_listening(self.port, self.child)

    async def curl(self, *flags: str) -> tuple[int, str]:
        """GET /secure with ``flags`` naming the client certificate: (status, curl errors)."""
        out, err, code = await run([
            "curl", "-sS", "--max-time", "20", "--cacert", self.ca, "-o", "/dev/null", "-w",
            "%{http_code}", "--resolve", f"localhost:{self.port}:127.0.0.1", *flags,
            f"https://localhost:{self.port}/secure"])
        return int(out or b"0"), f"exit {code}: {err.decode(errors='replace')}"

    async def test_passphrase_file_curl_p12_and_encrypted_pem(self) -> None:
        await self.start("--cert", self.server_cert, "--key", self.server_key,
                         "--key-passphrase-file", self.pw_file)
        status, err = await self.curl("--cert-type", "P12", "--cert",
                                      f"{self.client_p12}:{PASSPHRASE}")
        self.assertEqual(status, 200, err)
        status, err = await self.curl("--cert", self.client_pem, "--key", self.client_key,
                                      "--pass", PASSPHRASE)
        self.assertEqual(status, 200, err)
        status, _ = await self.curl("--cert-type", "P12", "--cert", f"{self.client_p12}:wrong")
        self.assertEqual(status, 0, "curl cannot use the PKCS#12 file without its passphrase")

        # SIGHUP with the key re-encrypted under a new passphrase: the file is read again.
        write_pem(self.dir, "server.key", self.pki.server.private_key_pem(b"rotated"), 0o600)
        write_pem(self.dir, "server.pw", b"rotated\n", 0o600)
        await self.hup("configuration reloaded (SIGHUP)")
        status, err = await self.curl("--cert", self.client_pem, "--key", self.client_key,
                                      "--pass", PASSPHRASE)
        self.assertEqual(status, 200, err)
        # A passphrase file that no longer decrypts the key: the reload is refused, the
        # running key stays, and the log names the file but never a passphrase.
        write_pem(self.dir, "server.pw", b"not the passphrase\n", 0o600)
        await self.hup("reload (SIGHUP) refused")
        self.assertIn(f"{self.server_key}: the passphrase from file {self.pw_file} does not "
                      "decrypt this key", self.child.text)
        for secret in ("not the passphrase", "rotated", PASSPHRASE):
            self.assertNotIn(secret, self.child.text)
        status, err = await self.curl("--cert-type", "P12", "--cert",
                                      f"{self.client_p12}:{PASSPHRASE}")
        self.assertEqual(status, 200, err)

    async def test_pkcs12_server_cert_passphrase_from_environment(self) -> None:
        server = self.pki.server
        p12 = write_pem(self.dir, "server.p12", pkcs12_bytes(
            "server", server.private_key, server.certificate, list(server.chain),
            PASSPHRASE.encode()), 0o600)
        os.environ[ENV] = PASSPHRASE
        self.addCleanup(os.environ.pop, ENV, None)
        await self.start("--cert", p12, "--key-passphrase-env", ENV)
        status, err = await self.curl("--cert-type", "P12", "--cert",
                                      f"{self.client_p12}:{PASSPHRASE}")
        self.assertEqual(status, 200, err)
        await self.hup("configuration reloaded (SIGHUP)")

    async def test_no_passphrase_source_and_no_terminal(self) -> None:
        """Started without a terminal (as a daemon is), it stops and names the options."""
        port = low_port()
        process, child = spawn(self, twistd_argv(
            "certsrv", "--listen", f"tcp:{port}:interface=127.0.0.1", "--ca", self.ca,
            "--cert", self.server_cert, "--key", self.server_key), cwd=self.dir)
        code = await child.ended
        self.assertEqual(code, 1, child.text)
        self.assertEqual(child.text.splitlines()[0], (
            f"certsrv: {self.server_key}: the key is encrypted and there is no terminal to ask "
            "on for its passphrase: give --key-passphrase-env NAME or --key-passphrase-file "
            "PATH"))

    async def hup(self, expected: str) -> None:
        """Send SIGHUP and wait until the log says ``expected`` once more."""
        before = self.child.text.count(expected)
        self.process.signalProcess("HUP")
        for _ in range(200):
            if self.child.text.count(expected) > before:
                return
            await _sleep(0.05)
        self.fail(f"no {expected!r} after SIGHUP: {self.child.text}")
