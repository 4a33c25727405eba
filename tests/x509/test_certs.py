"""certsrv.x509.certs: loading certificates and keys (encrypted, PKCS#12), describing
certificates, key-file modes."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SkipTest, SynchronousTestCase

from certsrv.exceptions import ConfigurationError
from certsrv.pki import IssuedCertificate
from certsrv.x509.certs import (
    describe,
    exposed_mode,
    is_pkcs12,
    keys_match,
    load_certificates,
    load_private_key,
    parse_pkcs12,
    parse_private_key,
    reading_from,
    sha256_hex,
)
from certsrv.x509.passphrase import Passphrase
from tests._support import mutate, shared_pki, write_pem


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
SECRET = b"correct horse battery"


def _encrypted_pem(issued: IssuedCertificate, traditional: bool = False) -> bytes:
    fmt = (serialization.PrivateFormat.TraditionalOpenSSL if traditional
           else serialization.PrivateFormat.PKCS8)
    return issued.private_key.private_bytes(serialization.Encoding.PEM, fmt,
                                            serialization.BestAvailableEncryption(SECRET))


def _p12(key: object, cert: x509.Certificate | None, cas: list[x509.Certificate],
         password: bytes | None = SECRET) -> bytes:
    encryption = (serialization.BestAvailableEncryption(password) if password
                  else serialization.NoEncryption())
    return pkcs12.serialize_key_and_certificates(
        b"alice", key, cert, cas, encryption)  # type: ignore[arg-type]


class _Never(Passphrase):
    """A source that fails the test if read: the key it is given is not encrypted."""

    def __init__(self) -> None:
        super().__init__("nowhere", self._fail)

    @staticmethod
    def _fail(what: str) -> bytes:
        raise AssertionError(f"passphrase read for {what}")


class EncryptedKeyTests(SynchronousTestCase):
    """Encrypted PEM and DER keys load with their passphrase; every failure says why."""

    def setUp(self) -> None:
        self.pki = shared_pki()
        self.directory = self.mktemp()
        os.mkdir(self.directory)
        self.good = Passphrase.from_value(SECRET, "the test")

    def test_pkcs8_traditional_and_der(self) -> None:
        issued = self.pki.client
        der = issued.private_key.private_bytes(
            serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(SECRET))
        for name, data in (("p8.pem", _encrypted_pem(issued)),
                           ("trad.pem", _encrypted_pem(issued, traditional=True)),
                           ("p8.der", der)):
            key = load_private_key(write_pem(self.directory, name, data, 0o600), self.good)
            self.assertTrue(keys_match(issued.certificate, key), name)

    def test_unencrypted_key_never_reads_the_passphrase(self) -> None:
        path = write_pem(self.directory, "k.pem", self.pki.client.private_key_pem(), 0o600)
        self.assertTrue(keys_match(self.pki.client.certificate, load_private_key(path, _Never())))

    def test_wrong_and_missing_passphrase(self) -> None:
        path = write_pem(self.directory, "k.pem", _encrypted_pem(self.pki.client), 0o600)
        wrong = Passphrase.from_env("PW", {"PW": "not it"})
        error = self.assertRaises(ConfigurationError, load_private_key, path, wrong)
        self.assertEqual(str(error), f"{path}: the passphrase from environment variable PW "
                                     "does not decrypt this key")
        self.assertIsNone(error.__cause__)
        self.assertTrue(error.__suppress_context__)
        error = self.assertRaises(ConfigurationError, load_private_key, path)
        self.assertEqual(str(error), f"{path}: the key is encrypted and no passphrase was given")


class PKCS12Tests(SynchronousTestCase):
    """A PKCS#12 file is told by its content and yields key, certificate and ordered chain."""

    def setUp(self) -> None:
        self.pki = shared_pki()
        self.directory = self.mktemp()
        os.mkdir(self.directory)
        self.good = Passphrase.from_value(SECRET, "the test")
        # A leaf under the intermediate, so the chain has two certificates to order.
        self.leaf = self.pki.intermediate.issue_client("bob")

    def test_key_certificate_and_chain(self) -> None:
        root, middle = self.pki.root.certificate, self.pki.intermediate.certificate
        # Stored in the wrong order, and with an unrelated certificate: put in chain order,
        # the stranger dropped.
        data = _p12(self.leaf.private_key, self.leaf.certificate,
                    [self.pki.other_root.certificate, root, middle])
        self.assertTrue(is_pkcs12(data))
        bundle = parse_pkcs12("b.p12", data, self.good)
        self.assertEqual(bundle.certificate, self.leaf.certificate)
        self.assertEqual(bundle.chain, (middle, root))
        self.assertNotIn("PRIVATE", repr(bundle))
        path = write_pem(self.directory, "b.p12", data, 0o600)
        self.assertTrue(keys_match(self.leaf.certificate, load_private_key(path, self.good)))

    def test_leaf_found_among_the_certificates(self) -> None:
        # No certificate marked as the key's: the one whose public key matches is the leaf.
        data = _p12(self.leaf.private_key, None,
                    [self.pki.root.certificate, self.leaf.certificate,
                     self.pki.intermediate.certificate])
        bundle = parse_pkcs12("b.p12", data, self.good)
        self.assertEqual(bundle.certificate, self.leaf.certificate)

    def test_unencrypted_file_never_reads_the_passphrase(self) -> None:
        data = _p12(self.leaf.private_key, self.leaf.certificate, [], password=None)
        self.assertEqual(parse_pkcs12("b.p12", data, _Never()).certificate,
                         self.leaf.certificate)

    def test_files_openssl_writes(self) -> None:
        """``openssl pkcs12 -export`` files: with a passphrase, and with the empty one that
        some tools write for "no password" (opened without reading the passphrase)."""
        if shutil.which("openssl") is None:
            raise SkipTest("openssl is not installed")
        cert = write_pem(self.directory, "bob.pem", self.leaf.chain_pem())
        key = write_pem(self.directory, "bob.key", self.leaf.private_key_pem(), 0o600)
        for password, source in ((SECRET, self.good), (b"", _Never())):
            out = os.path.join(self.directory, "bob.p12")
            subprocess.run(["openssl", "pkcs12", "-export", "-in", cert, "-inkey", key,
                            "-out", out, "-passout", "env:PW"], check=True, timeout=30,
                           env={"PATH": os.environ.get("PATH", ""), "PW": password.decode()})
            self.assertTrue(keys_match(self.leaf.certificate, load_private_key(out, source)))

    def test_refusals(self) -> None:
        data = _p12(self.leaf.private_key, self.leaf.certificate, [])
        wrong = Passphrase.from_value(b"not it", "file pw.txt")
        for passphrase, problem in (
                (wrong, "the passphrase from file pw.txt does not decrypt this PKCS#12 file "
                        "(or it is damaged)"),
                (None, "the key is encrypted and no passphrase was given")):
            error = self.assertRaises(ConfigurationError, parse_pkcs12, "b.p12", data,
                                      passphrase)
            self.assertEqual(error.problem, problem)
        no_key = _p12(None, self.leaf.certificate, [])
        error = self.assertRaises(ConfigurationError, parse_pkcs12, "b.p12", no_key, self.good)
        self.assertEqual(error.problem, "the PKCS#12 file holds no private key")
        other = _p12(self.leaf.private_key, None, [self.pki.client.certificate])
        error = self.assertRaises(ConfigurationError, parse_pkcs12, "b.p12", other, self.good)
        self.assertEqual(error.problem, "the PKCS#12 file holds no certificate for its "
                                        "private key")

    def test_is_pkcs12_only_for_pkcs12(self) -> None:
        key = self.leaf.private_key
        others = [
            self.leaf.certificate.public_bytes(serialization.Encoding.DER),
            key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()),
            key.private_bytes(serialization.Encoding.DER,
                              serialization.PrivateFormat.TraditionalOpenSSL,
                              serialization.NoEncryption()),
            key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                              serialization.BestAvailableEncryption(SECRET)),
            _encrypted_pem(self.leaf), b"", b"\x30", b"\x30\x84\xff",
        ]
        for data in others:
            self.assertFalse(is_pkcs12(data), data[:8])
        # BER's indefinite length, as some Java and Windows tools write.
        self.assertTrue(is_pkcs12(b"\x30\x80\x02\x01\x03\x30\x80"))


class _Draws:
    """Choices for the byte mutator of tests/_support.py, drawn by hypothesis."""

    def __init__(self, data: st.DataObject) -> None:
        self._data = data

    def integer(self, low: int, high: int) -> int:
        return self._data.draw(st.integers(low, high))

    def blob(self, max_size: int) -> bytes:
        return self._data.draw(st.binary(max_size=max_size))


_FUZZ = settings(max_examples=150, deadline=None, database=None, derandomize=True,
                 suppress_health_check=[HealthCheck.too_slow])


class HostileKeyFileTests(SynchronousTestCase):
    """Whatever a key file holds, the loader returns a key or raises ConfigurationError,
    and no message carries the passphrase."""

    def check(self, data: bytes) -> None:
        passphrase = Passphrase.from_value(SECRET, "the test")
        try:
            parse_private_key("k", data, passphrase)
        except ConfigurationError as e:
            self.assertNotIn(SECRET.decode(), str(e))

    @_FUZZ
    @given(data=st.binary(max_size=600))
    def test_random_bytes(self, data: bytes) -> None:
        self.check(data)
        self.check(b"\x30\x82\x01\x00\x02\x01\x03" + data)  # looks like PKCS#12 at first

    @_FUZZ
    @given(data=st.data())
    def test_mutated_encrypted_files(self, data: st.DataObject) -> None:
        sources = _encrypted_files()
        base = sources[data.draw(st.integers(0, len(sources) - 1))]
        self.check(mutate(base, _Draws(data)))


@functools.cache
def _encrypted_files() -> tuple[bytes, ...]:
    """A PKCS#12 file, an encrypted PEM and an encrypted DER key, made once (their salts are
    random, and hypothesis needs the same input each run)."""
    issued = shared_pki().client
    return (
        _p12(issued.private_key, issued.certificate, [shared_pki().root.certificate]),
        _encrypted_pem(issued),
        issued.private_key.private_bytes(serialization.Encoding.DER,
                                         serialization.PrivateFormat.PKCS8,
                                         serialization.BestAvailableEncryption(SECRET)),
    )
