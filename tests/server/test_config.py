"""certsrv.server.config: pinned fingerprints, from --pin values and from a pins file."""

from __future__ import annotations

import os

from cryptography.hazmat.primitives import serialization
from twisted.trial.unittest import SynchronousTestCase

from certsrv.exceptions import ConfigurationError
from certsrv.server.config import load_pins, parse_pins
from tests._support import shared_pki, write_pem


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
