"""
Tests for the on-disk development PKI (certsrv._pkistore) and the ``certsrv-pki`` command.

Chains, CRLs and the OpenSSL index are cross-checked with tools that share no code with
certsrv: ``cryptography.x509.verification`` and the ``openssl`` command.
"""

from __future__ import annotations

import contextlib
import datetime
import io
import ipaddress
import json
import os
import select
import shutil
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import PolicyBuilder, Store
from twisted.trial.unittest import SkipTest, SynchronousTestCase

from certsrv._pkicli import main
from certsrv._pkistore import Kind, PKIStore, Status
from certsrv.exceptions import PKIError
from certsrv.pki import KeyType, fingerprint

REPO = Path(__file__).resolve().parents[1]
OPENSSL = shutil.which("openssl")
NOW = datetime.datetime(2026, 6, 1, 12, 0, 0, tzinfo=datetime.UTC)
KEY_FILES = ("ca.key", "server.key", "client.key", "ocsp.key")
CERT_FILES = ("ca.pem", "server.pem", "client.pem", "ocsp.pem", "crl.pem")


def _load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def _sans(certificate: x509.Certificate) -> x509.SubjectAlternativeName:
    return certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


class _PKITestCase(SynchronousTestCase):
    def make_pki(self, **kwargs: object) -> tuple[Path, PKIStore]:
        directory = Path(self.mktemp()).resolve()
        return directory, PKIStore.init(directory, **kwargs)  # type: ignore[arg-type]

    def openssl(self, *args: str) -> subprocess.CompletedProcess[str]:
        if OPENSSL is None:
            raise SkipTest("the openssl command is not installed")
        return subprocess.run([OPENSSL, *args], capture_output=True, text=True, timeout=20)

    def assertVerifies(self, directory: Path, cert: str, purpose: str) -> None:
        result = self.openssl("verify", "-CAfile", str(directory / "ca.pem"), "-purpose",
                              purpose, str(directory / cert))
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        self.assertIn(": OK", result.stdout)


class InitTests(_PKITestCase):
    """``PKIStore.init`` writes a complete, consistent PKI."""

    def test_files_and_modes(self) -> None:
        """init writes every file; private keys are mode 0600; the attr file allows reuse."""
        directory, store = self.make_pki()
        for name in (*KEY_FILES, *CERT_FILES, "index.json", "index.txt", "index.txt.attr",
                     "pki.json"):
            self.assertTrue((directory / name).is_file(), name)
        for name in KEY_FILES:
            self.assertEqual(_mode(directory / name), 0o600, name)
        self.assertEqual((directory / "index.txt.attr").read_text(), "unique_subject = no\n")
        self.assertEqual([(e.name, e.kind) for e in store.entries()],
                         [("server", Kind.SERVER), ("client", Kind.CLIENT), ("ocsp", Kind.OCSP)])
        self.assertEqual(store.crl_number, 1)
        leftovers = [p.name for p in directory.rglob("*.tmp")]
        self.assertEqual(leftovers, [])

    def test_default_key_is_ecdsa_p256(self) -> None:
        """Without --key-type every key is ECDSA P-256."""
        directory, _ = self.make_pki()
        for name in ("ca.pem", "client.pem"):
            public_key = _load(directory / name).public_key()
            self.assertEqual(public_key.curve.name, "secp256r1")  # type: ignore[union-attr]

    def test_chains_verify_with_cryptography(self) -> None:
        """The server cert verifies for localhost, 127.0.0.1 and ::1; client certs too."""
        directory, store = self.make_pki()
        # cryptography's client verifier insists on a SAN, which client.pem (CN only) lacks.
        store.issue_client("svc", uris=["spiffe://example.org/svc"])
        ca = _load(directory / "ca.pem")
        builder = PolicyBuilder().store(Store([ca])).time(datetime.datetime.now(datetime.UTC))
        server = _load(directory / "server.pem")
        for name in (x509.DNSName("localhost"),
                     x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                     x509.IPAddress(ipaddress.ip_address("::1"))):
            chain = builder.build_server_verifier(name).verify(server, [])
            self.assertEqual(chain[-1], ca)
        client = _load(directory / "clients" / "svc.pem")
        verified = builder.build_client_verifier().verify(client, [])
        self.assertEqual(verified.chain[-1], ca)
        self.assertEqual(verified.subjects, [x509.UniformResourceIdentifier(
            "spiffe://example.org/svc")])

    def test_chains_verify_with_openssl(self) -> None:
        """``openssl verify`` accepts server.pem as sslserver and client.pem as sslclient."""
        directory, _ = self.make_pki()
        self.assertVerifies(directory, "server.pem", "sslserver")
        self.assertVerifies(directory, "client.pem", "sslclient")
        refused = self.openssl("verify", "-CAfile", str(directory / "ca.pem"), "-purpose",
                               "sslserver", str(directory / "client.pem"))
        self.assertNotEqual(refused.returncode, 0)

    def test_ocsp_responder_certificate(self) -> None:
        """ocsp.pem is a delegated responder: EKU OCSPSigning and ocsp-nocheck."""
        directory, _ = self.make_pki()
        responder = _load(directory / "ocsp.pem")
        eku = responder.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        self.assertEqual(list(eku), [ExtendedKeyUsageOID.OCSP_SIGNING])
        responder.extensions.get_extension_for_class(x509.OCSPNoCheck)
        self.assertEqual(responder.issuer, _load(directory / "ca.pem").subject)

    def test_refuses_to_overwrite(self) -> None:
        """A second init fails with a message naming the directory and leaves the CA alone."""
        directory, _ = self.make_pki()
        before = (directory / "ca.pem").read_bytes()
        error = self.assertRaises(PKIError, PKIStore.init, directory)
        self.assertIn(str(directory), str(error))
        self.assertIn("--force", str(error))
        self.assertEqual((directory / "ca.pem").read_bytes(), before)

    def test_force_replaces(self) -> None:
        """init --force makes a new CA and drops the certificates of the old one."""
        directory, store = self.make_pki()
        store.issue_client("alice")
        before = (directory / "ca.pem").read_bytes()
        replaced = PKIStore.init(directory, force=True)
        self.assertNotEqual((directory / "ca.pem").read_bytes(), before)
        self.assertFalse((directory / "clients" / "alice.pem").exists())
        self.assertEqual([e.name for e in replaced.entries()], ["server", "client", "ocsp"])

    def test_directory_with_other_files(self) -> None:
        """init accepts a directory that holds only unrelated files (the repo's certs/)."""
        directory = Path(self.mktemp())
        directory.mkdir()
        (directory / "README.rst").write_text("hello\n")
        PKIStore.init(directory)
        self.assertEqual((directory / "README.rst").read_text(), "hello\n")

    def test_revocation_urls(self) -> None:
        """--ocsp-url/--crl-url go into init's certs and, via pki.json, into later ones."""
        directory, _ = self.make_pki(ocsp_url="http://127.0.0.1:8080/ocsp",
                                     crl_url="http://127.0.0.1:8080/crl.der")
        alice = PKIStore.open(directory).issue_client("alice")
        for path in (directory / "client.pem", directory / alice.path):
            cert = _load(path)
            aia = cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
            self.assertEqual([d.access_location.value for d in aia],
                             ["http://127.0.0.1:8080/ocsp"])
            cdp = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
            self.assertEqual(cdp[0].full_name[0].value,
                             "http://127.0.0.1:8080/crl.der")

    def test_bad_url(self) -> None:
        """A relative or non-HTTP OCSP URL is rejected before anything is written."""
        directory = Path(self.mktemp())
        error = self.assertRaises(ValueError, PKIStore.init, directory, ocsp_url="ocsp")
        self.assertIn("'ocsp'", str(error))
        self.assertFalse(directory.exists())


class OpenTests(_PKITestCase):
    """``PKIStore.open`` explains what is wrong with a directory."""

    def test_not_a_pki(self) -> None:
        """A directory without index.json is not a PKI; the error names it."""
        directory = Path(self.mktemp())
        directory.mkdir()
        error = self.assertRaises(PKIError, PKIStore.open, directory)
        self.assertIn(str(directory), str(error))
        self.assertIn("not a certsrv PKI directory", str(error))

    def test_missing_directory(self) -> None:
        """A missing directory is reported as such."""
        error = self.assertRaises(PKIError, PKIStore.open, "no-such-dir")
        self.assertIn("no-such-dir: no such directory", str(error))

    def test_corrupt_index(self) -> None:
        """A broken index.json is reported with the file name and the entry at fault."""
        directory, _ = self.make_pki()
        index = directory / "index.json"
        document = json.loads(index.read_text())
        del document["certificates"][1]["serial"]
        index.write_text(json.dumps(document))
        error = self.assertRaises(PKIError, PKIStore.open, directory)
        self.assertEqual(str(error), f"{index}: certificate entry 2: missing 'serial'")
        index.write_text("{")
        error = self.assertRaises(PKIError, PKIStore.open, directory)
        self.assertIn(f"{index}: not valid JSON", str(error))


class IssueTests(_PKITestCase):
    """Issuing client and server certificates."""

    def test_client_with_sans(self) -> None:
        """issue_client writes clients/NAME.pem/.key with CN=NAME and the requested SANs."""
        directory, store = self.make_pki()
        entry = store.issue_client("svc", emails=["svc@example.org"],
                                   uris=["spiffe://example.org/svc"], dns=["svc.example.org"])
        self.assertEqual((entry.path, entry.key_path), ("clients/svc.pem", "clients/svc.key"))
        self.assertEqual(_mode(directory / "clients" / "svc.key"), 0o600)
        cert = _load(directory / "clients" / "svc.pem")
        self.assertEqual(cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value, "svc")
        sans = _sans(cert)
        self.assertEqual(sans.get_values_for_type(x509.RFC822Name), ["svc@example.org"])
        self.assertEqual(sans.get_values_for_type(x509.UniformResourceIdentifier),
                         ["spiffe://example.org/svc"])
        self.assertEqual(sans.get_values_for_type(x509.DNSName), ["svc.example.org"])
        self.assertVerifies(directory, "clients/svc.pem", "sslclient")
        key = serialization.load_pem_private_key(
            (directory / "clients" / "svc.key").read_bytes(), None)
        self.assertEqual(key.public_key(), cert.public_key())
        self.assertEqual(entry.fingerprint, fingerprint(cert))

    def test_client_validity_and_key_type(self) -> None:
        """days and key_type are honoured; times come from ``now``."""
        _, store = self.make_pki()
        entry = store.issue_client("short", days=2, key_type=KeyType.ED25519, now=NOW)
        self.assertEqual(entry.not_after, NOW + datetime.timedelta(days=2))
        self.assertEqual(entry.status_at(NOW + datetime.timedelta(days=3)), Status.EXPIRED)

    def test_bad_names(self) -> None:
        """Names that are not safe file names are refused and nothing is written."""
        directory, store = self.make_pki()
        for name in ("../x", "", ".hidden", "a/b", "-rf", "x" * 65, "a b", "..", "é"):
            error = self.assertRaises(ValueError, store.issue_client, name)
            self.assertIn(f"invalid certificate name {name!r}", str(error))
        self.assertFalse((directory / "clients").exists())
        self.assertFalse((directory.parent / "x.pem").exists())

    def test_bad_uri_and_days(self) -> None:
        """A relative URI SAN and a non-positive validity are refused."""
        _, store = self.make_pki()
        self.assertIn("not an absolute URI",
                      str(self.assertRaises(ValueError, store.issue_client, "a", uris=["svc"])))
        self.assertIn("positive whole number of days",
                      str(self.assertRaises(ValueError, store.issue_client, "a", days=0)))

    def test_duplicate_name(self) -> None:
        """A valid certificate's name cannot be reused; another kind's name neither."""
        _, store = self.make_pki()
        store.issue_client("alice")
        error = self.assertRaises(PKIError, store.issue_client, "alice")
        self.assertIn("renew or revoke it instead", str(error))
        error = self.assertRaises(PKIError, store.issue_server, ["alice"])
        self.assertIn("'alice' is already the name of a client certificate", str(error))

    def test_reissue_after_revoke(self) -> None:
        """After a revoke the name can be issued again; the old cert moves to newcerts/."""
        directory, store = self.make_pki()
        old = store.issue_client("alice")
        store.revoke("alice")
        new = store.issue_client("alice")
        archived = store.find(old.serial)
        self.assertEqual(archived.status, Status.REVOKED)
        self.assertEqual(archived.superseded_by, new.serial)
        self.assertEqual(_load(directory / archived.path).serial_number, old.serial)
        self.assertEqual(_load(directory / new.path).serial_number, new.serial)

    def test_server(self) -> None:
        """issue_server names the file after the first host unless told otherwise."""
        directory, store = self.make_pki()
        entry = store.issue_server(["api.example.org", "10.1.2.3"])
        self.assertEqual(entry.path, "servers/api.example.org.pem")
        sans = _sans(_load(directory / entry.path))
        self.assertEqual(sans.get_values_for_type(x509.DNSName), ["api.example.org"])
        self.assertEqual(sans.get_values_for_type(x509.IPAddress),
                         [ipaddress.ip_address("10.1.2.3")])
        self.assertVerifies(directory, entry.path, "sslserver")
        named = store.issue_server(["::1"], name="loopback6")
        self.assertEqual(named.key_path, "servers/loopback6.key")
        error = self.assertRaises(ValueError, store.issue_server, ["*.example.org"])
        self.assertIn("choose one with --name", str(error))


class RenewTests(_PKITestCase):
    """Renewing re-issues a certificate under the same name."""

    def test_renew_changes_serial_keeps_sans(self) -> None:
        """renew gives a new serial and key, same subject and SANs; the old one is superseded."""
        directory, store = self.make_pki()
        old = store.issue_client("svc", uris=["spiffe://example.org/svc"],
                                 emails=["svc@example.org"], days=30, now=NOW)
        old_cert = _load(directory / old.path)
        new = store.renew("svc", now=NOW + datetime.timedelta(days=20))
        new_cert = _load(directory / new.path)
        self.assertNotEqual(new.serial, old.serial)
        self.assertEqual(new.path, old.path)
        self.assertEqual(new_cert.subject, old_cert.subject)
        self.assertEqual(_sans(new_cert), _sans(old_cert))
        self.assertNotEqual(new_cert.public_key(), old_cert.public_key())
        self.assertEqual(new.not_after, NOW + datetime.timedelta(days=50))
        eku = new_cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        self.assertEqual(list(eku), [ExtendedKeyUsageOID.CLIENT_AUTH])
        superseded = store.find(old.serial)
        self.assertEqual(superseded.status, Status.SUPERSEDED)
        self.assertEqual(superseded.path, f"newcerts/{old.serial_hex}.pem")
        self.assertEqual(_load(directory / superseded.path), old_cert)
        self.assertEqual(store.status_of(old.serial, NOW).status, Status.SUPERSEDED)
        self.assertEqual(store.status_of(old.serial, NOW).ocsp_status, "good")
        self.assertEqual(store.find("svc").serial, new.serial)
        self.assertNotIn(old.serial_hex, (directory / "crl.pem").read_text())

    def test_renew_keep_key_and_server(self) -> None:
        """--keep-key reuses the key; a renewed server cert keeps its hosts and EKU."""
        directory, store = self.make_pki()
        before = _load(directory / "server.pem")
        renewed = store.renew("server", keep_key=True, days=10)
        after = _load(directory / renewed.path)
        self.assertEqual(after.public_key(), before.public_key())
        self.assertEqual(_sans(after), _sans(before))
        self.assertVerifies(directory, "server.pem", "sslserver")

    def test_renew_unknown_and_compromised(self) -> None:
        """renew refuses unknown names and reusing a key revoked for keyCompromise."""
        directory, store = self.make_pki()
        error = self.assertRaises(PKIError, store.renew, "nobody")
        self.assertEqual(str(error), f"{directory / 'index.json'}: no certificate named 'nobody'")
        store.revoke("client", "keyCompromise")
        self.assertRaises(PKIError, store.renew, "client", keep_key=True)
        renewed = store.renew("client")
        self.assertEqual(store.status_of(renewed.serial).status, Status.VALID)


class RevokeTests(_PKITestCase):
    """Revoking updates index.json, index.txt and the CRL together."""

    def test_revoke_updates_index_and_crl(self) -> None:
        """The serial appears in index.txt as R and in a new CRL signed by the CA key."""
        directory, store = self.make_pki()
        client = store.find("client")
        when = NOW.replace(microsecond=0)
        store.revoke("client", "keyCompromise", when, now=NOW)
        status = store.status_of(client.serial)
        self.assertEqual(tuple(status),
                         (Status.REVOKED, when, x509.ReasonFlags.key_compromise))
        document = json.loads((directory / "index.json").read_text())
        row = [c for c in document["certificates"] if c["name"] == "client"][0]
        self.assertEqual((row["status"], row["revoked_at"], row["revocation_reason"]),
                         ("revoked", "2026-06-01T12:00:00Z", "keyCompromise"))
        lines = (directory / "index.txt").read_text().splitlines()
        self.assertIn(f"R\t{client.not_after:%y%m%d%H%M%S}Z\t260601120000Z,keyCompromise\t"
                      f"{client.serial_hex}\tunknown\t/CN=client", lines)

        crl = x509.load_pem_x509_crl((directory / "crl.pem").read_bytes())
        self.assertTrue(crl.is_signature_valid(store.ca.private_key.public_key()))
        revoked = crl.get_revoked_certificate_by_serial_number(client.serial)
        assert revoked is not None
        self.assertEqual(revoked.revocation_date_utc, when)
        reason = revoked.extensions.get_extension_for_class(x509.CRLReason).value.reason
        self.assertEqual(reason, x509.ReasonFlags.key_compromise)
        self.assertEqual(crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number,
                         2)
        self.assertEqual(crl.next_update_utc, NOW + datetime.timedelta(days=7))
        checked = self.openssl("crl", "-in", str(directory / "crl.pem"), "-CAfile",
                               str(directory / "ca.pem"), "-noout")
        self.assertEqual(checked.returncode, 0, checked.stderr)
        self.assertIn("verify OK", checked.stdout + checked.stderr)

    def test_openssl_verify_sees_revocation(self) -> None:
        """``openssl verify -crl_check`` accepts client.pem before revoke and refuses it after."""
        directory, store = self.make_pki()
        args = ("verify", "-crl_check", "-CAfile", str(directory / "ca.pem"),
                "-CRLfile", str(directory / "crl.pem"), str(directory / "client.pem"))
        self.assertEqual(self.openssl(*args).returncode, 0)
        store.revoke("client")
        result = self.openssl(*args)
        self.assertNotEqual(result.returncode, 0)
        self.assertIn("certificate revoked", result.stdout + result.stderr)

    def test_revoke_by_serial_and_twice(self) -> None:
        """A hex serial finds superseded certificates; revoking twice is refused."""
        _, store = self.make_pki()
        old = store.issue_client("alice")
        store.renew("alice")
        entry = store.revoke(f"0x{old.serial:x}", x509.ReasonFlags.superseded)
        self.assertEqual(entry.serial, old.serial)
        error = self.assertRaises(PKIError, store.revoke, old.serial)
        self.assertIn("was already revoked at", str(error))
        self.assertIn("no certificate named or with serial 'ABCD'",
                      str(self.assertRaises(PKIError, store.revoke, "ABCD")))
        self.assertIn("unknown revocation reason 'stolen'",
                      str(self.assertRaises(ValueError, store.revoke, "alice", "stolen")))

    def test_write_crl(self) -> None:
        """write_crl increments the CRL number and honours days."""
        _, store = self.make_pki()
        crl = store.write_crl(days=3, now=NOW)
        self.assertEqual(crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number,
                         2)
        self.assertEqual(crl.next_update_utc, NOW + datetime.timedelta(days=3))
        self.assertEqual(len(list(crl)), 0)
        store.write_crl()
        self.assertEqual(PKIStore.open(store.path).crl_number, 3)


class StatusTests(_PKITestCase):
    """``status_of`` is what an OCSP responder asks."""

    def test_unknown_and_expired(self) -> None:
        """Unknown serials are unknown; an expired cert is expired but still OCSP-good."""
        _, store = self.make_pki()
        self.assertEqual(tuple(store.status_of(12345)), (Status.UNKNOWN, None, None))
        self.assertEqual(store.status_of(12345).ocsp_status, "unknown")
        client = store.find("client")
        later = client.not_after + datetime.timedelta(seconds=1)
        self.assertEqual(store.status_of(client.serial, later).status, Status.EXPIRED)
        self.assertEqual(store.status_of(client.serial, later).ocsp_status, "good")

    def test_rereads_index_only_when_changed(self) -> None:
        """Another process's revoke is seen; an unchanged index.json is not parsed again."""
        directory, _ = self.make_pki()
        reader = PKIStore.open(directory)
        serial = reader.find("client").serial
        parsed: list[bytes] = []
        real_loads = json.loads

        def counting_loads(raw: bytes, **kwargs: object) -> object:
            parsed.append(raw)
            return real_loads(raw, **kwargs)  # type: ignore[arg-type]

        self.patch(json, "loads", counting_loads)
        for _ in range(3):
            self.assertEqual(reader.status_of(serial).status, Status.VALID)
        self.assertEqual(parsed, [])
        PKIStore.open(directory).revoke("client", "cessationOfOperation")
        parsed.clear()
        status = reader.status_of(serial)
        self.assertEqual((status.status, status.reason),
                         (Status.REVOKED, x509.ReasonFlags.cessation_of_operation))
        self.assertEqual(len(parsed), 1)


class OpenSSLOCSPTests(_PKITestCase):
    """``openssl ocsp -index index.txt`` serves the PKI and agrees with the index."""

    def query(self, directory: Path, cert: str) -> str:
        """Start a one-request ``openssl ocsp`` responder and ask it about ``cert``."""
        if OPENSSL is None:
            raise SkipTest("the openssl command is not installed")
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        responder = subprocess.Popen(
            [OPENSSL, "ocsp", "-index", str(directory / "index.txt"), "-port", str(port),
             "-rsigner", str(directory / "ocsp.pem"), "-rkey", str(directory / "ocsp.key"),
             "-CA", str(directory / "ca.pem"), "-nrequest", "1"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        self.addCleanup(self._stop, responder)
        assert responder.stdout is not None
        # The responder prints "ACCEPT [::]:PORT PID=..." once it listens.
        output = b""
        deadline = time.monotonic() + 10
        while b"ACCEPT" not in output:
            remaining = deadline - time.monotonic()
            ready, _, _ = select.select([responder.stdout], [], [], max(remaining, 0))
            chunk = os.read(responder.stdout.fileno(), 4096) if ready else b""
            if not chunk:
                self.fail(f"openssl ocsp did not start: {output!r}")
            output += chunk
        result = self.openssl("ocsp", "-issuer", str(directory / "ca.pem"),
                              "-cert", str(directory / cert), "-url", f"http://127.0.0.1:{port}",
                              "-CAfile", str(directory / "ca.pem"), "-resp_text")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("Response verify OK", result.stderr)
        return result.stdout

    def _stop(self, process: subprocess.Popen[bytes]) -> None:
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=10)

    def test_good_then_revoked(self) -> None:
        """client.pem is good, then revoked with the reason from the index."""
        directory, store = self.make_pki()
        self.assertIn(f"{directory / 'client.pem'}: good", self.query(directory, "client.pem"))
        store.revoke("client", "keyCompromise")
        answer = self.query(directory, "client.pem")
        self.assertIn(f"{directory / 'client.pem'}: revoked", answer)
        self.assertIn("Reason: keyCompromise", answer)

    def test_superseded_is_good(self) -> None:
        """A superseded certificate is not revoked; OpenSSL calls it good."""
        directory, store = self.make_pki()
        old = store.issue_client("alice")
        store.renew("alice")
        path = f"newcerts/{old.serial_hex}.pem"
        self.assertIn(f"{directory / path}: good", self.query(directory, path))


class CLITests(_PKITestCase):
    """``certsrv-pki`` prints results on stdout and one-line errors on stderr."""

    def run_cli(self, *argv: str) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(list(argv))
        return code, out.getvalue(), err.getvalue()

    def assertFails(self, result: tuple[int, str, str], message: str) -> None:
        code, out, err = result
        self.assertEqual(code, 1, err)
        self.assertTrue(err.startswith("certsrv-pki: "), err)
        self.assertIn(message, err)
        self.assertNotIn("Traceback", err)
        self.assertEqual(err.count("\n"), 1, err)

    def test_init_list_issue_renew_revoke_crl(self) -> None:
        """The commands work together on one directory."""
        directory = self.mktemp()
        code, out, err = self.run_cli("init", directory, "--key-type", "ecdsa")
        self.assertEqual((code, err), (0, ""))
        self.assertIn("client.pem", out)
        self.assertNotIn("PRIVATE KEY", out)
        self.assertEqual(self.run_cli("--dir", directory, "issue-client", "svc", "--uri",
                                      "spiffe://example.org/svc", "--email", "s@example.org",
                                      "--days", "30")[0], 0)
        code, out, _ = self.run_cli("issue-server", "--dir", directory, "api.local", "::1",
                                    "--name", "api")
        self.assertEqual(code, 0)
        self.assertIn(str(Path(directory, "servers", "api.pem")), out)
        self.assertEqual(self.run_cli("--dir", directory, "renew", "svc")[0], 0)
        code, out, _ = self.run_cli("--dir", directory, "revoke", "client", "--reason",
                                    "keycompromise", "--crl-days", "2")
        self.assertEqual(code, 0)
        self.assertIn("CRL number 2", out)
        code, out, _ = self.run_cli("--dir", directory, "crl", "--days", "1")
        self.assertIn("CRL number 3, 1 revoked", out)

        code, out, _ = self.run_cli("--dir", directory, "list")
        self.assertEqual(code, 0)
        rows = [line.split() for line in out.splitlines()]
        self.assertEqual(rows[0], ["NAME", "KIND", "SERIAL", "NOT_AFTER", "STATUS",
                                   "FINGERPRINT"])
        table = {(row[0], row[4]) for row in rows[1:]}
        self.assertEqual(table, {("server", "valid"), ("client", "revoked"), ("ocsp", "valid"),
                                 ("svc", "superseded"), ("svc", "valid"), ("api", "valid")})
        store = PKIStore.open(directory)
        for row in rows[1:]:
            entry = store.find(row[2])
            self.assertEqual((entry.name, entry.kind.value), (row[0], row[1]))
            self.assertTrue(entry.fingerprint.startswith(row[5]))

    def test_init_refuses_to_overwrite(self) -> None:
        """A second init exits 1 with a one-line message; --force replaces the PKI."""
        directory = self.mktemp()
        self.assertEqual(self.run_cli("init", directory)[0], 0)
        self.assertFails(self.run_cli("init", directory),
                         "refusing to overwrite it without --force")
        self.assertEqual(self.run_cli("init", directory, "--force")[0], 0)

    def test_errors(self) -> None:
        """Bad names, unknown certificates and missing directories exit 1 without traceback."""
        directory = self.mktemp()
        self.assertFails(self.run_cli("--dir", directory, "list"),
                         f"{directory}: no such directory")
        self.run_cli("init", directory)
        self.assertFails(self.run_cli("--dir", directory, "issue-client", "../x"),
                         "invalid certificate name '../x'")
        self.assertFails(self.run_cli("--dir", directory, "issue-server", "::1"),
                         "choose one with --name")
        self.assertFails(self.run_cli("--dir", directory, "revoke", "nobody"),
                         "no certificate named 'nobody'")
        self.assertFails(self.run_cli("--dir", "elsewhere", "init", directory),
                         "two PKI directories given")

    def test_usage_errors(self) -> None:
        """argparse usage errors exit 2, as is customary."""
        code, _, err = self.run_cli("revoke", "x", "--reason", "stolen")
        self.assertEqual(code, 2)
        self.assertIn("invalid choice: 'stolen'", err)
        self.assertEqual(self.run_cli("issue-client", "x", "--days", "0")[0], 2)

    def test_default_directory(self) -> None:
        """Without --dir the PKI lives in ./certs."""
        cwd = Path(self.mktemp()).resolve()
        cwd.mkdir()
        self.addCleanup(os.chdir, os.getcwd())
        os.chdir(cwd)
        self.assertEqual(self.run_cli("init")[0], 0)
        self.assertTrue((cwd / "certs" / "ca.pem").exists())

    def test_runs_as_module(self) -> None:
        """``python -m certsrv._pkicli`` runs the command and reports errors cleanly."""
        directory = self.mktemp()
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        command = [sys.executable, "-m", "certsrv._pkicli", "--dir", directory]
        first = subprocess.run([*command, "init"], capture_output=True, text=True, env=env,
                               timeout=60)
        self.assertEqual(first.returncode, 0, first.stderr)
        second = subprocess.run([*command, "init"], capture_output=True, text=True, env=env,
                                timeout=60)
        self.assertEqual(second.returncode, 1)
        self.assertTrue(second.stderr.startswith("certsrv-pki: "), second.stderr)
        self.assertNotIn("Traceback", second.stderr)
