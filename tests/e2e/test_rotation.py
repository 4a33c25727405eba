"""Rotation by files on a real ``twistd certsrv``: a Kubernetes secret volume swapped the way
the kubelet swaps it, a CA file replaced, bad states refused; openssl and curl as clients."""

from __future__ import annotations

import os
import re
import shutil

from cryptography import x509
from twisted.internet import reactor, task
from twisted.trial.unittest import SkipTest, TestCase

from certsrv.pki import IssuedCertificate
from certsrv.testing import CertificateFactory
from tests._servers import REQUEST, low_port, run, spawn, twistd_argv, wait_listening
from tests._support import shared_pki, write_pem

# Seconds between the server's looks at its files; generous waits cover a busy machine.
WATCH = 0.2
PATIENCE = 20.0
REFUSED = "refused, the running configuration stays"


class RotationTests(TestCase):
    """``tls.crt -> ..data/tls.crt`` with ``..data`` renamed to a new directory, as the
    kubelet publishes a renewed secret: new connections get the new certificate, with no
    restart and no signal; a half-published secret is never served."""

    timeout = 120

    async def setUp(self) -> None:  # type: ignore[override]
        for tool in ("openssl", "curl"):
            if shutil.which(tool) is None:
                raise SkipTest(f"{tool} is not installed")
        self.pki = shared_pki()
        self.dir = os.path.abspath(self.mktemp())
        self.secret = os.path.join(self.dir, "secret")
        self.stamps = 0
        self.publish(self.pki.server.chain_pem(), self.pki.server.private_key_pem())
        # What the clients trust for the server, apart from the server's --ca, which rotates.
        self.trust = write_pem(self.dir, "trust.pem", self.pki.root.certificate_pem())
        self.ca = write_pem(self.dir, "ca.pem", self.pki.root.certificate_pem())
        self.port = low_port()
        argv = twistd_argv(
            "certsrv", "--listen", f"tcp:{self.port}:interface=127.0.0.1",
            "--cert", os.path.join(self.secret, "tls.crt"),
            "--key", os.path.join(self.secret, "tls.key"),
            "--ca", self.ca, "--watch-interval", str(WATCH))
        _, self.child = spawn(self, argv, cwd=self.dir)
        await wait_listening(self.port, self.child)

    def publish(self, crt: bytes, key: bytes) -> None:
        """The kubelet's atomic write: a new timestamped directory, ``..data_tmp`` pointing
        at it, renamed over ``..data``; the names link through ``..data``."""
        self.stamps += 1
        stamp = f"..2026_11_29_10_00_{self.stamps:02}.{self.stamps}"
        write_pem(os.path.join(self.secret, stamp), "tls.crt", crt)
        write_pem(os.path.join(self.secret, stamp), "tls.key", key, 0o600)
        os.symlink(stamp, os.path.join(self.secret, "..data_tmp"))
        os.rename(os.path.join(self.secret, "..data_tmp"), os.path.join(self.secret, "..data"))
        for name in ("tls.crt", "tls.key"):
            link = os.path.join(self.secret, name)
            if not os.path.islink(link):
                os.symlink(os.path.join("..data", name), link)

    def client_files(self, client: IssuedCertificate, name: str) -> tuple[str, str]:
        return (write_pem(self.dir, f"{name}.pem", client.chain_pem()),
                write_pem(self.dir, f"{name}.key", client.private_key_pem(), 0o600))

    async def shown(self) -> x509.Certificate:
        """The certificate the server shows a new connection (openssl s_client)."""
        cert, key = self.client_files(self.pki.client, "alice")
        out, _, _ = await run(["openssl", "s_client", "-connect", f"127.0.0.1:{self.port}",
                               "-servername", "localhost", "-CAfile", self.trust,
                               "-verify_return_error", "-ign_eof", "-cert", cert, "-key", key],
                              REQUEST)
        found = re.search(rb"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", out,
                          re.S)
        assert found is not None, out.decode(errors="replace")
        self.assertIn(b"HTTP/1.1 200 ", out)
        return x509.load_pem_x509_certificate(found.group())

    async def curl(self, client: IssuedCertificate, name: str) -> tuple[int, str]:
        """curl's exit status and its output (status code, or error) for ``client``."""
        cert, key = self.client_files(client, name)
        out, err, code = await run([
            "curl", "-sS", "--max-time", "10", "--cacert", self.trust, "--cert", cert,
            "--key", key, "-w", "%{http_code}", "-o", "/dev/null",
            "--resolve", f"localhost:{self.port}:127.0.0.1",
            f"https://localhost:{self.port}/secure"])
        return code, (out + err).decode(errors="replace")

    async def until_shown(self, expected: x509.Certificate) -> None:
        for _ in range(int(PATIENCE / 0.1)):
            if await self.shown() == expected:
                return
            await task.deferLater(reactor, 0.1, lambda: None)  # type: ignore[arg-type]
        self.fail(f"the server never showed {expected.subject}: {self.child.text}")

    async def until_logged(self, text: str, count: int) -> None:
        for _ in range(int(PATIENCE / 0.1)):
            if self.child.text.count(text) >= count:
                return
            await task.deferLater(reactor, 0.1, lambda: None)  # type: ignore[arg-type]
        self.fail(f"{text!r} not logged {count} times: {self.child.text}")

    async def test_kubelet_swap_rotates_the_server_certificate(self) -> None:
        self.assertEqual(await self.shown(), self.pki.server.certificate)
        rotated = self.pki.root.server()
        self.publish(rotated.chain_pem(), rotated.private_key_pem())
        await self.until_shown(rotated.certificate)
        self.assertIn("configuration reloaded", self.child.text)

    async def test_half_published_secrets_are_never_served(self) -> None:
        old, rotated = self.pki.server, self.pki.root.server()
        # New certificate, old key: refused, logged once however many looks pass.
        self.publish(rotated.chain_pem(), old.private_key_pem())
        await self.until_logged(REFUSED, 1)
        self.assertIn("the private key does not match the server certificate", self.child.text)
        await task.deferLater(reactor, 10 * WATCH, lambda: None)  # type: ignore[arg-type]
        self.assertEqual(await self.shown(), old.certificate)
        self.assertEqual(self.child.text.count(REFUSED), 1, self.child.text)
        # A truncated PEM: another state, refused too.
        pem = rotated.chain_pem()
        self.publish(pem[: len(pem) // 2], rotated.private_key_pem())
        await self.until_logged(REFUSED, 2)
        self.assertEqual(await self.shown(), old.certificate)
        # The next write completes the pair: it goes in force without a signal.
        self.publish(rotated.chain_pem(), rotated.private_key_pem())
        await self.until_shown(rotated.certificate)

    async def test_ca_rotation(self) -> None:
        new_ca = CertificateFactory.create("Rotated Root CA")
        carol = new_ca.client("carol")
        code, text = await self.curl(carol, "carol")
        self.assertNotEqual(code, 0, f"carol's CA is not trusted yet: {text}")
        self.assertEqual(await self.curl(self.pki.client, "alice"), (0, "200"))
        # Written elsewhere and renamed over the old file, as configuration tools do.
        staged = write_pem(self.dir, "ca.pem.new", new_ca.certificate_pem())
        os.rename(staged, self.ca)
        for _ in range(int(PATIENCE / 0.1)):
            if (await self.curl(carol, "carol"))[0] == 0:
                break
            await task.deferLater(reactor, 0.1, lambda: None)  # type: ignore[arg-type]
        self.assertEqual(await self.curl(carol, "carol"), (0, "200"))
        code, text = await self.curl(self.pki.client, "alice")
        self.assertNotEqual(code, 0, "a client of the removed CA is refused")
        self.assertIn("unknown ca", text)
