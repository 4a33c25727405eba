"""certsrv.server.config: pinned fingerprints (--pin values, a pins file); the files load reads;
the server's key, encrypted or in a PKCS#12 --cert."""

from __future__ import annotations

import os

from cryptography.hazmat.primitives import serialization
from twisted.trial.unittest import SynchronousTestCase

from certsrv.exceptions import ConfigurationError
from certsrv.pki import pkcs12_bytes
from certsrv.server.config import ServerConfig, load_pins, parse_pins
from certsrv.tls.verify import AllowedTypes
from certsrv.x509.passphrase import Passphrase
from tests._support import (
    captured_events,
    client_tls_options,
    clock_at_now,
    crl_pem,
    exchange,
    make_server_factory,
    policy_text,
    shared_pki,
    write_pem,
)


class PinTests(SynchronousTestCase):
    """Pins are normalised SHA-256 fingerprints; a file holds hex lines or certificates."""

    def setUp(self) -> None:
        self.directory = self.mktemp()
        os.mkdir(self.directory)
        self.client = shared_pki().client

    def test_parse_pins_normalises(self) -> None:
        fingerprint = self.client.fingerprint
        spelled = ":".join(fingerprint[i:i + 2] for i in range(0, 64, 2)).upper()
        self.assertEqual(parse_pins([spelled]), (fingerprint,))
        self.assertRaises(ConfigurationError, parse_pins, ["not-a-fingerprint"])

    def test_pins_file(self) -> None:
        text = f"# allowed clients\n{self.client.fingerprint}  # alice\n\n".encode()
        self.assertEqual(load_pins(write_pem(self.directory, "pins.txt", text)),
                         {self.client.fingerprint})
        pem = self.client.certificate.public_bytes(serialization.Encoding.PEM)
        self.assertEqual(load_pins(write_pem(self.directory, "pins.pem", pem)),
                         {self.client.fingerprint})
        empty = write_pem(self.directory, "empty.txt", b"# nothing\n")
        self.assertIn("no fingerprint", str(self.assertRaises(ConfigurationError,
                                                              load_pins, empty)))


class _Recording(dict[str, bytes | OSError]):
    """File contents that remember which were read."""

    def __init__(self, paths: tuple[str, ...]) -> None:
        super().__init__({path: open(path, "rb").read() for path in paths})
        self.read: list[str] = []

    def __getitem__(self, path: str) -> bytes | OSError:
        self.read.append(path)
        return super().__getitem__(path)


class FilesTests(SynchronousTestCase):
    """``files()`` is exactly what ``load`` reads: the reloader watches that list."""

    def test_every_file_load_reads_and_no_other(self) -> None:
        pki = shared_pki()
        directory = self.mktemp()
        files = pki.files(directory)
        config = ServerConfig(
            cert=files.cert, key=files.key, ca=(files.ca, files.ca),
            intermediates=(write_pem(directory, "inter.pem",
                                     pki.intermediate.certificate_pem()),),
            crls=(write_pem(directory, "crl.pem", crl_pem(pki.root)),),
            pins_file=write_pem(directory, "pins.txt", pki.client.fingerprint.encode()),
            policy=write_pem(directory, "policy.toml", policy_text("alice").encode()))
        self.assertEqual(len(config.files()), 7, "each file once")
        recording = _Recording(config.files())
        config.load(clock_at_now(), files=recording)
        self.assertEqual(sorted(set(recording.read)), sorted(config.files()))

    def test_unread_cas_are_not_watched(self) -> None:
        files = shared_pki().files(self.mktemp())
        config = ServerConfig(cert=files.cert, key=files.key, ca=(files.ca,),
                              allowed_types=AllowedTypes.SELF_SIGNED,
                              pins=(shared_pki().client.fingerprint,))
        self.assertEqual(config.files(), (files.cert, files.key))
        recording = _Recording(config.files())
        config.load(clock_at_now(), files=recording)
        self.assertEqual(sorted(set(recording.read)), sorted(config.files()))
PASSPHRASE = b"correct horse battery"


class EncryptedKeyTests(SynchronousTestCase):
    """The server's key may be encrypted PEM, or in a PKCS#12 --cert; a reload reads the
    passphrase again from its file, and a handshake with the loaded key succeeds."""

    def setUp(self) -> None:
        self.pki = shared_pki()
        self.directory = self.mktemp()
        os.mkdir(self.directory)
        self.ca = write_pem(self.directory, "ca.pem", self.pki.root.certificate_pem())
        self.pw = write_pem(self.directory, "pw.txt", PASSPHRASE + b"\n", 0o600)

    def serves(self, config: ServerConfig) -> None:
        settings, verifier = config.load(clock_at_now())
        factory = make_server_factory(settings, verifier=verifier)
        self.assertEqual(exchange(factory, client_tls_options(self.pki, self.pki.client)).status,
                         200)

    def test_encrypted_pem_key_and_reload_with_a_new_passphrase(self) -> None:
        key = write_pem(self.directory, "server.key",
                        self.pki.server.private_key_pem(PASSPHRASE), 0o600)
        cert = write_pem(self.directory, "server.pem", self.pki.server.chain_pem())
        config = ServerConfig(cert=cert, key=key, ca=(self.ca,),
                              passphrase=Passphrase.from_file(self.pw))
        self.serves(config)
        # The key re-encrypted under a new passphrase, the file updated: a reload reads both.
        write_pem(self.directory, "server.key", self.pki.server.private_key_pem(b"rotated"),
                  0o600)
        error = self.assertRaises(ConfigurationError, config.load, clock_at_now())
        self.assertEqual(str(error), f"{key}: the passphrase from file {self.pw} does not "
                                     "decrypt this key")
        write_pem(self.directory, "pw.txt", b"rotated\n", 0o600)
        self.serves(config)
        no_source = ServerConfig(cert=cert, key=key, ca=(self.ca,))
        self.assertIn("the key is encrypted and no passphrase was given",
                      str(self.assertRaises(ConfigurationError, no_source.load, clock_at_now())))

    def test_pkcs12_cert_holds_chain_and_key(self) -> None:
        server = self.pki.root.intermediate("Server Intermediate").issue_server("localhost")
        p12 = write_pem(self.directory, "server.p12", pkcs12_bytes(
            "server", server.private_key, server.certificate,
            [self.pki.root.certificate, *server.chain], PASSPHRASE), 0o600)
        config = ServerConfig(cert=p12, key=None, ca=(self.ca,),
                              passphrase=Passphrase.from_file(self.pw))
        settings, _ = config.load(clock_at_now())
        self.assertEqual(settings.certificate, server.certificate)
        self.assertEqual(settings.chain, (*server.chain, self.pki.root.certificate))
        self.serves(config)

    def test_pkcs12_refusals(self) -> None:
        p12 = write_pem(self.directory, "server.p12", pkcs12_bytes(
            "server", self.pki.server.private_key, self.pki.server.certificate, [],
            PASSPHRASE), 0o644)
        key = write_pem(self.directory, "server.key", self.pki.server.private_key_pem(), 0o600)
        with_key = ServerConfig(cert=p12, key=key, ca=(self.ca,),
                                passphrase=Passphrase.from_file(self.pw))
        error = self.assertRaises(ConfigurationError, with_key.load, clock_at_now())
        self.assertEqual(str(error), f"{key}: {p12} (--cert) is a PKCS#12 file, which holds the "
                                     "key; give no --key")
        wrong = ServerConfig(cert=p12, key=None, ca=(self.ca,),
                             passphrase=Passphrase.from_env("PW", {"PW": "wrong"}))
        self.assertIn("does not decrypt this PKCS#12 file",
                      str(self.assertRaises(ConfigurationError, wrong.load, clock_at_now())))
        # A PKCS#12 file others may read is reported like a key file.
        with captured_events("certsrv.config") as events:
            ServerConfig(cert=p12, key=None, ca=(self.ca,),
                         passphrase=Passphrase.from_file(self.pw)).load(clock_at_now())
        self.assertEqual([e["reason"] for e in events], ["key_exposed"])

    def test_key_files(self) -> None:
        """What a reload reads besides the certificate: the key, the passphrase file."""
        self.assertEqual(ServerConfig(cert="c.pem", key=None).key_files(), ("certs/server.key",))
        self.assertEqual(ServerConfig(cert="c.p12", key="k.pem", passphrase=Passphrase.from_file(
            self.pw)).key_files(), ("k.pem", self.pw))
        self.assertEqual(ServerConfig(cert="c.pem", key="k.pem", passphrase=Passphrase.from_env(
            "PW")).key_files(), ("k.pem",))

    def test_exposed_passphrase_file(self) -> None:
        key = write_pem(self.directory, "server.key",
                        self.pki.server.private_key_pem(PASSPHRASE), 0o600)
        cert = write_pem(self.directory, "server.pem", self.pki.server.chain_pem())
        os.chmod(self.pw, 0o644)
        config = ServerConfig(cert=cert, key=key, ca=(self.ca,),
                              passphrase=Passphrase.from_file(self.pw))
        with captured_events("certsrv.config") as events:
            config.load(clock_at_now())
        self.assertEqual([(e["reason"], e["path"], e["what"]) for e in events],
                         [("key_exposed", self.pw, "the passphrase of the server's private key")])
