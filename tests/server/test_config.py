"""certsrv.server.config: pinned fingerprints (--pin values, a pins file); the files load reads."""

from __future__ import annotations

import os

from cryptography.hazmat.primitives import serialization
from twisted.trial.unittest import SynchronousTestCase

from certsrv.exceptions import ConfigurationError
from certsrv.server.config import ServerConfig, load_pins, parse_pins
from certsrv.tls.verify import AllowedTypes
from tests._support import clock_at_now, crl_pem, policy_text, shared_pki, write_pem


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
