"""certsrv.x509.certs: loading certificates and keys, describing certificates, key-file modes."""

from __future__ import annotations

import os

from cryptography.hazmat.primitives import serialization
from twisted.trial.unittest import SynchronousTestCase

from certsrv.exceptions import ConfigurationError
from certsrv.x509.certs import (
    describe,
    exposed_mode,
    keys_match,
    load_certificates,
    load_private_key,
    reading_from,
    sha256_hex,
)
from tests._support import shared_pki, write_pem


class LoadTests(SynchronousTestCase):
    """PEM bundles and DER files load; anything else is a ConfigurationError naming the file."""

    def setUp(self) -> None:
        self.pki = shared_pki()
        self.directory = self.mktemp()
        os.mkdir(self.directory)

    def test_pem_bundle_and_der(self) -> None:
        leaf, root = self.pki.client.certificate, self.pki.root.certificate
        bundle = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in (leaf, root))
        self.assertEqual(load_certificates(write_pem(self.directory, "b.pem", bundle)),
                         [leaf, root])
        der = write_pem(self.directory, "c.der", leaf.public_bytes(serialization.Encoding.DER))
        self.assertEqual(load_certificates(der), [leaf])

    def test_errors_name_the_file(self) -> None:
        missing = os.path.join(self.directory, "missing.pem")
        empty = write_pem(self.directory, "empty.pem", b"nothing here\n")
        for path, words in ((missing, "does not exist"), (empty, "contains no certificate"),
                            (self.directory, "is a directory")):
            error = self.assertRaises(ConfigurationError, load_certificates, path, "CA")
            self.assertIn(path, str(error))
            self.assertIn(words, str(error))

    def test_private_key_round_trip(self) -> None:
        issued = self.pki.client
        pem = issued.private_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption())
        key = load_private_key(write_pem(self.directory, "k.pem", pem, 0o600))
        self.assertTrue(keys_match(issued.certificate, key))
        self.assertFalse(keys_match(self.pki.server.certificate, key))
        bad = write_pem(self.directory, "bad.pem", b"-----BEGIN PRIVATE KEY-----\nxx\n")
        self.assertRaises(ConfigurationError, load_private_key, bad)


class DescribeTests(SynchronousTestCase):
    """``describe`` gives the fields a log line names; None for no certificate."""

    def test_fields(self) -> None:
        cert = shared_pki().client.certificate
        self.assertEqual(describe(cert), {
            "subject": "CN=alice", "issuer": cert.issuer.rfc4514_string(),
            "serial": format(cert.serial_number, "x"), "sha256": sha256_hex(cert)})
        self.assertEqual(len(sha256_hex(cert)), 64)
        self.assertEqual(set(describe(None).values()), {None})


class ExposedModeTests(SynchronousTestCase):
    """A key file others may read is reported with its mode; a private one is not."""

    def test_modes(self) -> None:
        directory = self.mktemp()
        os.mkdir(directory)
        private = write_pem(directory, "private.key", b"x", 0o600)
        shared = write_pem(directory, "shared.key", b"x", 0o644)
        self.assertIsNone(exposed_mode(private))
        self.assertEqual(exposed_mode(shared), 0o644)
        self.assertIsNone(exposed_mode(os.path.join(directory, "missing")))


class ReadingFromTests(SynchronousTestCase):
    """``reading_from``: files already read (a reload's snapshot) answer instead of the disk."""

    def test_answers_from_the_snapshot_with_the_disk_errors(self) -> None:
        pem = shared_pki().root.certificate_pem()
        missing = FileNotFoundError(2, "No such file or directory")
        with reading_from({"ca.pem": pem, "gone.pem": missing}):
            self.assertEqual(load_certificates("ca.pem")[0], shared_pki().root.certificate)
            error = self.assertRaises(ConfigurationError, load_certificates, "gone.pem", "CA")
            self.assertEqual(str(error), "gone.pem: CA file does not exist")
            self.assertRaises(LookupError, load_certificates, "elsewhere.pem")
        error = self.assertRaises(ConfigurationError, load_certificates, "ca.pem")
        self.assertIn("does not exist", str(error), "outside the block, the disk answers")
