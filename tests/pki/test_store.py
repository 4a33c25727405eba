"""
Tests for the on-disk development PKI (certsrv.pki.store) and the ``certsrv-pki`` command.

Chains, CRLs and the OpenSSL index are cross-checked with tools that share no code with
certsrv: ``cryptography.x509.verification`` and the ``openssl`` command.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import secrets
import shutil
import stat
import subprocess
import sys
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import PolicyBuilder, Store
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from service_identity.hazmat import DNSPattern
from twisted.trial.unittest import SynchronousTestCase

from certsrv import pki
from certsrv.exceptions import PKIError
from certsrv.pki import (
    CertificateAuthority,
    KeyType,
    fingerprint,
    split_hosts,
    validate_host,
    write_private_key,
)
from certsrv.pki import store as _pkistore
from certsrv.pki.store import EntryStatus, Kind, PKIStore, parse_duration
from tests._support import PKIStoreCase as _PKITestCase

REPO = Path(__file__).resolve().parents[2]
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
        self.assertEqual(entry.status_at(NOW + datetime.timedelta(days=3)), EntryStatus.EXPIRED)

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
        self.assertEqual(archived.status, EntryStatus.REVOKED)
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
        self.assertEqual(superseded.status, EntryStatus.SUPERSEDED)
        self.assertEqual(superseded.path, f"newcerts/{old.serial_hex}.pem")
        self.assertEqual(_load(directory / superseded.path), old_cert)
        self.assertEqual(store.status_of(old.serial, NOW).status, EntryStatus.SUPERSEDED)
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
        self.assertEqual(store.status_of(renewed.serial).status, EntryStatus.VALID)


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
                         (EntryStatus.REVOKED, when, x509.ReasonFlags.key_compromise))
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
        self.assertEqual(tuple(store.status_of(12345)), (EntryStatus.UNKNOWN, None, None))
        self.assertEqual(store.status_of(12345).ocsp_status, "unknown")
        client = store.find("client")
        later = client.not_after + datetime.timedelta(seconds=1)
        self.assertEqual(store.status_of(client.serial, later).status, EntryStatus.EXPIRED)
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
            return real_loads(raw, **kwargs)

        self.patch(json, "loads", counting_loads)
        for _ in range(3):
            self.assertEqual(reader.status_of(serial).status, EntryStatus.VALID)
        self.assertEqual(parsed, [])
        PKIStore.open(directory).revoke("client", "cessationOfOperation")
        parsed.clear()
        status = reader.status_of(serial)
        self.assertEqual((status.status, status.reason),
                         (EntryStatus.REVOKED, x509.ReasonFlags.cessation_of_operation))
        self.assertEqual(len(parsed), 1)


class OpenSSLOCSPTests(_PKITestCase):
    """``openssl ocsp -index index.txt`` serves the PKI and agrees with the index."""

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


# --- issue 16 and issue 12: host names, durations, atomic writes, modes, reuse, compromise ----

PROPERTY = settings(max_examples=300, deadline=None, database=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow])
_LABEL = st.from_regex(r"[a-z0-9](?:[a-z0-9_-]{0,20}[a-z0-9])?", fullmatch=True)
_HOST_NAME = st.lists(_LABEL, min_size=1, max_size=5).map(".".join).filter(
    lambda host: not host.split(".")[-1].isdigit())


def cli(*argv: str, umask: int | None = None, stdin: int | None = None,
        cwd: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``certsrv-pki`` as a separate process (``python -m``), optionally under ``umask``."""
    command = [sys.executable, "-m", "certsrv.pki.cli", *argv]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    preexec = (lambda: os.umask(umask)) if umask is not None else None  # noqa: E731
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=120,
                          preexec_fn=preexec, stdin=stdin, cwd=cwd)


def _reap(process: subprocess.Popen[str]) -> None:
    """Kill ``process`` if it still runs, and close its pipes."""
    if process.poll() is None:
        process.kill()
    process.communicate(timeout=30)


class _CLIProcessCase(_PKITestCase):
    def assertSucceeds(self, result: subprocess.CompletedProcess[str]) -> str:
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(result.stderr, "")
        return result.stdout

    def assertRefuses(self, result: subprocess.CompletedProcess[str], message: str) -> None:
        self.assertEqual(result.returncode, 1, result.stdout + result.stderr)
        self.assertEqual(result.stderr, f"certsrv-pki: {message}\n")


class HostNameTests(_PKITestCase):
    """Issue 16, finding 1: server certificates only for names a client can check."""

    REFUSED = {
        "*": "a wildcard needs at least two labels after it, as in '*.example.org'",
        "*.org": "a wildcard needs at least two labels after it, as in '*.example.org'",
        "*.*.example.org": "it has more than one wildcard; only the whole left-most label may "
                           "be '*'",
        "a.*.example.org": "a wildcard must be the whole left-most label, as in "
                           "'*.example.org'",
        "f*.example.org": "a wildcard must be the whole left-most label, as in '*.example.org'",
        "": "it is empty",
        "a..example.org": "it has an empty label (a leading dot or two dots in a row)",
        ".example.org": "it has an empty label (a leading dot or two dots in a row)",
        "example.org.": "it ends with a dot; leave the trailing dot out",
        "a b.example": "character 2 (' ') is a space or control character",
        "evil\x1b[31m.example": "character 5 ('\\x1b') is a space or control character",
        "a\x00.example": "character 2 ('\\x00') is a space or control character",
        "a\u202e.example": "character 2 ('\\u202e') is a space or control character",
        "bücher.example": "it is not ASCII; give its IDNA form 'xn--bcher-kva.example'",
        "\u0665.example": "it is not ASCII and has no valid IDNA form",
        "a\u00ad\u00ad.example": "character 2 ('\\xad') is a space or control character",
        "[::1]": "write an IPv6 address without brackets",
        "fe80::1%eth0": "an IPv6 zone index ('%...') cannot go in a certificate",
        "127.1": "its last label '1' is all digits: neither a host name nor an IP address "
                 "(write IP addresses in full, e.g. 127.0.0.1)",
        "10.0.0.256": "its last label '256' is all digits: neither a host name nor an IP "
                      "address (write IP addresses in full, e.g. 127.0.0.1)",
        "-api.example": "label '-api' starts or ends with '-'",
        "api-.example": "label 'api-' starts or ends with '-'",
        "api/x.example": "label 'api/x' contains '/'; host names hold only letters, digits, "
                         "'-' and '_'",
        "user@example.org": "label 'user@example' contains '@'; host names hold only letters, "
                            "digits, '-' and '_'",
        "xn--zz-.example": "label 'xn--zz-' starts or ends with '-'",
        "xn--abc.example": "label 'xn--abc' is not a valid IDNA A-label (punycode)",
        "a" * 64 + ".example": f"label {'a' * 64!r} is 64 characters long; the limit is 63",
        ("a" * 60 + ".") * 5 + "org": "it is 308 characters long; the limit is 253",
    }
    ACCEPTED = ("localhost", "api.example.org", "*.example.org", "*.svc.example.org",
                "xn--bcher-kva.example", "my_service", "API.Example.ORG", "a" * 63 + ".org",
                "127.0.0.1", "::1", "2001:db8::1", "::ffff:10.0.0.1", "1.example")

    def test_validate_host_messages(self) -> None:
        """Each invalid host name is refused with its own precise one-line message."""
        for host, problem in self.REFUSED.items():
            error = self.assertRaises(ValueError, validate_host, host)
            self.assertEqual(str(error), f"invalid host name {host!r}: {problem}")
            self.assertNotIn("\n", str(error))
        for host in self.ACCEPTED:
            self.assertEqual(validate_host(host), host)

    def test_store_refuses_and_writes_nothing(self) -> None:
        """PKIStore.issue_server checks every host, before anything is written."""
        directory, store = self.make_pki()
        for host in ("*", "*.*.example", "a.*.example", "ok.example\n"):
            error = self.assertRaises(ValueError, store.issue_server, ["ok.example", host],
                                      name="x")
            self.assertTrue(str(error).startswith(f"invalid host name {host!r}: "), error)
        self.assertFalse((directory / "servers").exists())
        self.assertEqual(len(store.entries()), 3)

    def test_store_issues_accepted_names(self) -> None:
        """Valid names, a wildcard and IP literals are issued; the wildcard verifies."""
        directory, store = self.make_pki()
        entry = store.issue_server(["*.example.org", "xn--bcher-kva.example", "10.0.0.1"],
                                   name="wild")
        cert = _load(directory / entry.path)
        self.assertEqual(_sans(cert).get_values_for_type(x509.DNSName),
                         ["*.example.org", "xn--bcher-kva.example"])
        builder = PolicyBuilder().store(Store([store.ca.certificate])).time(
            datetime.datetime.now(datetime.UTC))
        builder.build_server_verifier(x509.DNSName("api.example.org")).verify(cert, [])
        self.assertVerifies(directory, entry.path, "sslserver")

    def test_client_dns_sans(self) -> None:
        """A client certificate's --dns must name one host: no wildcard, no IP, no junk."""
        _, store = self.make_pki()
        for host, message in (
            ("*.example.org", "invalid DNS name '*.example.org': a client certificate names "
                              "one host, not a wildcard"),
            ("127.0.0.1", "invalid DNS name '127.0.0.1': an IP address is no DNS name"),
            ("a..b", "invalid host name 'a..b': it has an empty label (a leading dot or two "
                     "dots in a row)"),
        ):
            error = self.assertRaises(ValueError, store.issue_client, "svc", dns=[host])
            self.assertEqual(str(error), message)

    def test_init_checks_server_hosts(self) -> None:
        """init refuses a bad server host before it creates anything."""
        directory = Path(self.mktemp())
        error = self.assertRaises(ValueError, PKIStore.init, directory,
                                  server_hosts=("localhost", "*"))
        self.assertIn("invalid host name '*'", str(error))
        self.assertFalse(directory.exists())

    def test_renew_checks_names_issued_before(self) -> None:
        """A server certificate with a bad name (from before the check) is not renewed."""
        _, store = self.make_pki()
        with store._locked():
            store._record("legacy", Kind.SERVER, "servers/legacy",
                          store.ca.issue_server("*", common_name="legacy"))
            store._index.save()
        error = self.assertRaises(ValueError, store.renew, "legacy")
        self.assertEqual(str(error), "invalid host name '*': a wildcard needs at least two "
                                     "labels after it, as in '*.example.org'")

    def test_long_host_has_no_common_name(self) -> None:
        """A host name longer than a CN may be goes in the SAN only (which is then critical)."""
        ca = CertificateAuthority.create()
        host = "a" * 60 + ".example.org"
        cert = ca.issue_server(host).certificate
        self.assertEqual(list(cert.subject), [])
        extension = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        self.assertTrue(extension.critical)
        self.assertEqual(extension.value.get_values_for_type(x509.DNSName), [host])

    def test_cli_one_line_without_raw_escapes(self) -> None:
        """issue-server with a bad name: exit 1, one line, control characters escaped."""
        directory = self.mktemp()
        PKIStore.init(directory)
        code, _, err = self.run_cli("--dir", directory, "issue-server",
                                    "evil\x1b]0;pwned\x07.example", "--name", "evil")
        self.assertEqual(code, 1)
        self.assertEqual(err, "certsrv-pki: invalid host name 'evil\\x1b]0;pwned\\x07.example': "
                              "character 5 ('\\x1b') is a space or control character\n")
        self.assertNotIn("\x1b", err)
        for host in ("*", "*.*.example.org"):
            code, _, err = self.run_cli("--dir", directory, "issue-server", host, "--name", "x")
            self.assertEqual((code, err), (1, f"certsrv-pki: invalid host name {host!r}: "
                                              f"{self.REFUSED[host]}\n"))

    @PROPERTY
    @given(st.text(max_size=80))
    def test_property_any_text(self, host: str) -> None:
        """Any text is refused with one escaped line, or accepted and fit for a certificate."""
        try:
            validate_host(host)
        except ValueError as e:
            message = str(e)
            self.assertTrue(message.startswith(f"invalid host name {host!r}: "), message)
            self.assertTrue(message.isprintable(), message)
            return
        self.assertTrue(host.isascii() and host.isprintable())
        dns, ips = split_hosts([host])
        if dns:
            # What the client's check (service_identity) would refuse never gets issued.
            DNSPattern.from_bytes(host.encode("ascii"))
            x509.DNSName(host)
        else:
            self.assertEqual(ips, [host])

    @PROPERTY
    @given(_HOST_NAME, st.booleans())
    def test_property_valid_names(self, host: str, wildcard: bool) -> None:
        """Names made of letter-digit-hyphen labels are accepted, plain or under '*.'."""
        if wildcard:
            host = f"*.{host}.example"
        self.assertEqual(validate_host(host), host)
        DNSPattern.from_bytes(host.encode("ascii"))

    @PROPERTY
    @given(_HOST_NAME, st.data())
    def test_property_misplaced_wildcards(self, host: str, data: st.DataObject) -> None:
        """A '*' anywhere but as the whole first label (of 3+) is refused."""
        position = data.draw(st.integers(min_value=0, max_value=len(host)))
        bad = host[:position] + "*" + host[position:]
        labels = bad.split(".")
        if labels[0] == "*" and len(labels) >= 3:
            return
        self.assertRaises(ValueError, validate_host, bad)


class DurationTests(_PKITestCase):
    """Issue 12, item 7: validities shorter than a day, as 90s, 10m, 8h, 30d."""

    def test_parse(self) -> None:
        """Each unit; a bare number only with a bare unit."""
        for text, seconds in (("90s", 90), ("10m", 600), ("8h", 28800), ("30d", 2592000),
                              ("1s", 1), ("007m", 420), ("36500d", 36500 * 86400)):
            self.assertEqual(parse_duration(text), datetime.timedelta(seconds=seconds))
        self.assertEqual(parse_duration("60", bare_unit="s"), datetime.timedelta(seconds=60))
        self.assertEqual(parse_duration("2", bare_unit="d"), datetime.timedelta(days=2))

    def test_refusals(self) -> None:
        """Every refusal names the text and says what would do."""
        expected = "expected a whole number and a unit (s, m, h or d), e.g. 90s, 10m, 8h, 30d"
        for text, problem in (
            ("10", "add a unit (s, m, h or d), e.g. 10d"),
            ("0s", "must be at least 1 second"),
            ("0", "add a unit (s, m, h or d), e.g. 0d"),
            ("36501d", "must be at most 36500 days"),
            ("876001h", "must be at most 36500 days"),
            ("10M", expected), ("1.5h", expected), ("-1d", expected), (" 10m", expected),
            ("10m ", expected), ("1h30m", expected), ("", expected), ("d", expected),
            ("\u0661\u0660m", expected), ("1" * 13 + "s", expected), ("10m\n", expected),
        ):
            error = self.assertRaises(ValueError, parse_duration, text)
            self.assertEqual(str(error), f"invalid duration {text!r}: {problem}")
        error = self.assertRaises(ValueError, parse_duration, "0", bare_unit="s")
        self.assertEqual(str(error), "invalid duration '0': must be at least 1 second")

    @PROPERTY
    @given(st.integers(min_value=1, max_value=10**6), st.sampled_from("smhd"))
    def test_property_round_trip(self, number: int, unit: str) -> None:
        """n followed by a unit is n of those units, or refused as longer than 36500 days."""
        seconds = number * {"s": 1, "m": 60, "h": 3600, "d": 86400}[unit]
        if seconds > 36500 * 86400:
            self.assertRaises(ValueError, parse_duration, f"{number}{unit}")
        else:
            self.assertEqual(parse_duration(f"{number}{unit}"),
                             datetime.timedelta(seconds=seconds))

    @PROPERTY
    @given(st.text(max_size=20), st.sampled_from([None, "s", "d"]))
    def test_property_any_text(self, text: str, bare_unit: str | None) -> None:
        """Any text gives 1 s to 36500 days, or a one-line ValueError naming the text."""
        try:
            duration = parse_duration(text, bare_unit=bare_unit)
        except ValueError as e:
            self.assertTrue(str(e).startswith(f"invalid duration {text!r}: "), e)
            self.assertNotIn("\n", str(e))
            return
        self.assertTrue(datetime.timedelta(seconds=1) <= duration
                        <= datetime.timedelta(days=36500))

    def test_store_short_validity(self) -> None:
        """A 90-second certificate expires 90 s after ``now``; renew keeps the lifetime."""
        directory, store = self.make_pki()
        entry = store.issue_client("brief", validity=datetime.timedelta(seconds=90), now=NOW)
        self.assertEqual(entry.not_after, NOW + datetime.timedelta(seconds=90))
        self.assertEqual(entry.status_at(NOW + datetime.timedelta(seconds=89)), EntryStatus.VALID)
        self.assertEqual(entry.status_at(NOW + datetime.timedelta(seconds=91)), EntryStatus.EXPIRED)
        later = NOW + datetime.timedelta(seconds=60)
        renewed = store.renew("brief", now=later)
        self.assertEqual(renewed.not_after, later + datetime.timedelta(seconds=90))
        server = store.issue_server(["short.example"], validity=datetime.timedelta(minutes=10),
                                    now=NOW)
        self.assertEqual(server.not_after, NOW + datetime.timedelta(minutes=10))
        renewed = store.renew("short.example", validity=datetime.timedelta(hours=8), now=NOW)
        self.assertEqual(renewed.not_after, NOW + datetime.timedelta(hours=8))
        self.assertEqual(store.renew("short.example", days=2, now=NOW).not_after,
                         NOW + datetime.timedelta(days=2))

    def test_store_refusals(self) -> None:
        """days and validity together, a zero or negative or too long validity."""
        _, store = self.make_pki()
        error = self.assertRaises(ValueError, store.issue_client, "a", days=1,
                                  validity=datetime.timedelta(hours=1))
        self.assertEqual(str(error), "give the validity as days or as a duration, not both")
        for bad in (datetime.timedelta(0), datetime.timedelta(seconds=-5),
                    datetime.timedelta(days=36501)):
            error = self.assertRaises(ValueError, store.issue_client, "a", validity=bad)
            self.assertEqual(str(error),
                             f"validity must be from 1 second to 36500 days, not {bad!r}")

    def test_cli_validity(self) -> None:
        """--validity 90s issues a certificate that openssl sees expire within 90 s."""
        directory = self.mktemp()
        PKIStore.init(directory)
        run = self.run_cli
        code, _, err = run("--dir", directory, "issue-client", "brief", "--validity", "90s")
        self.assertEqual((code, err), (0, ""))
        path = Path(directory, "clients", "brief.pem")
        cert = _load(path)
        left = cert.not_valid_after_utc - datetime.datetime.now(datetime.UTC)
        self.assertTrue(datetime.timedelta(seconds=80) < left <= datetime.timedelta(seconds=90),
                        left)
        self.assertEqual(self.openssl("x509", "-in", str(path), "-noout", "-checkend",
                                      "60").returncode, 0)
        self.assertEqual(self.openssl("x509", "-in", str(path), "-noout", "-checkend",
                                      "120").returncode, 1)
        code, _, _ = run("--dir", directory, "issue-server", "brief.example", "--validity", "10m")
        self.assertEqual(code, 0)
        code, _, _ = run("--dir", directory, "renew", "brief", "--validity", "8h")
        self.assertEqual(code, 0)
        left = _load(path).not_valid_after_utc - datetime.datetime.now(datetime.UTC)
        self.assertTrue(datetime.timedelta(hours=7.9) < left <= datetime.timedelta(hours=8))
        code, _, _ = run("--dir", directory, "issue-client", "days", "--days", "3")
        self.assertEqual(code, 0)

    def test_cli_usage_errors(self) -> None:
        """A bad --validity, or --days with --validity, is a usage error (exit 2)."""
        directory = self.mktemp()
        PKIStore.init(directory)
        run = self.run_cli
        code, _, err = run("--dir", directory, "issue-client", "x", "--validity", "10")
        self.assertEqual(code, 2)
        self.assertTrue(err.endswith("error: argument --validity: '10': add a unit (s, m, h or "
                                     "d), e.g. 10d\n"), err)
        code, _, err = run("--dir", directory, "issue-client", "x", "--days", "3",
                           "--validity", "1h")
        self.assertEqual(code, 2)
        self.assertTrue(err.endswith("error: argument --validity: not allowed with argument "
                                     "--days\n"), err)


class AtomicWriteTests(SynchronousTestCase):
    """Issue 16, finding 6: the library never follows a symlink nor reuses an existing file."""

    def setUp(self) -> None:
        self.dir = Path(self.mktemp())
        self.dir.mkdir()
        self.issued = CertificateAuthority.create().issue_client("alice")
        self.victim = self.dir / "victim"
        self.victim.write_text("precious\n")

    def test_symlink_is_replaced_not_followed(self) -> None:
        """A symlink planted at the key's path: the target is untouched, the key is 0600."""
        key = self.dir / "alice.key"
        key.symlink_to(self.victim)
        write_private_key(key, self.issued.private_key_pem())
        self.assertEqual(self.victim.read_text(), "precious\n")
        self.assertFalse(key.is_symlink())
        self.assertEqual(key.read_bytes(), self.issued.private_key_pem())
        self.assertEqual(_mode(key), 0o600)

    def test_existing_world_writable_file(self) -> None:
        """A pre-created 0666 file, held open by its owner, never sees the key."""
        key = self.dir / "alice.key"
        key.write_text("")
        os.chmod(key, 0o666)
        with open(key, "rb") as held:
            before = os.fstat(held.fileno()).st_ino
            write_private_key(key, self.issued.private_key_pem())
            self.assertEqual(held.read(), b"")  # the old inode got nothing
        self.assertNotEqual(key.stat().st_ino, before)
        self.assertEqual(_mode(key), 0o600)
        self.assertEqual(key.read_bytes(), self.issued.private_key_pem())

    def test_issued_certificate_write(self) -> None:
        """IssuedCertificate.write replaces planted symlinks for both files; modes 0644/0600."""
        cert, key = self.dir / "alice.pem", self.dir / "alice.key"
        cert.symlink_to(self.victim)
        key.symlink_to(self.victim)
        self.issued.write(cert, key)
        self.assertEqual(self.victim.read_text(), "precious\n")
        self.assertEqual((cert.read_bytes(), _mode(cert)), (self.issued.chain_pem(), 0o644))
        self.assertEqual((key.read_bytes(), _mode(key)), (self.issued.private_key_pem(), 0o600))
        self.assertEqual(sorted(p.name for p in self.dir.iterdir()),
                         ["alice.key", "alice.pem", "victim"])

    def test_key_mode_under_any_umask(self) -> None:
        """The key file is exactly 0600 under umask 000 and under 0277 (owner-unreadable)."""
        for umask in (0o000, 0o277):
            key = self.dir / f"k{umask:o}.key"
            previous = os.umask(umask)
            try:
                write_private_key(key, b"key\n")
            finally:
                os.umask(previous)
            self.assertEqual(_mode(key), 0o600)

    def test_planted_temporary_name(self) -> None:
        """A symlink at the temporary name is not followed: the write fails, nothing leaks."""
        self.patch(secrets, "token_hex", lambda n: "0" * (2 * n))
        key = self.dir / "alice.key"
        trap = self.dir / f".alice.key.{'0' * 16}.tmp"
        trap.symlink_to(self.victim)
        self.assertRaises(FileExistsError, write_private_key, key, b"secret\n")
        self.assertEqual(self.victim.read_text(), "precious\n")
        self.assertFalse(key.exists())
        self.assertTrue(trap.is_symlink())

    def test_failure_leaves_no_temporary(self) -> None:
        """Writing over a directory fails and removes the temporary file."""
        (self.dir / "adir").mkdir()
        self.assertRaises(IsADirectoryError, write_private_key, self.dir / "adir", b"x")
        self.assertEqual(sorted(p.name for p in self.dir.iterdir()), ["adir", "victim"])

    def test_store_shares_the_implementation(self) -> None:
        """PKIStore writes through the same function, so a planted symlink is replaced too."""
        self.assertIs(_pkistore._write_atomic, pki.write_atomic)
        directory = self.dir / "pki"
        store = PKIStore.init(directory)
        (directory / "clients").mkdir(exist_ok=True)
        planted = directory / "clients" / "bob.key"
        planted.symlink_to(self.victim)
        store.issue_client("bob")
        self.assertEqual(self.victim.read_text(), "precious\n")
        self.assertFalse(planted.is_symlink())
        self.assertEqual(_mode(planted), 0o600)


class DirectoryTests(_CLIProcessCase):
    """Issue 16, finding 8: directories 0700 whatever the umask; concurrent inits are safe."""

    def test_umask_000(self) -> None:
        """Under umask 000 every directory is 0700, every key 0600, nothing group/other-writable."""
        base = Path(self.mktemp()).resolve()
        directory = base / "deep" / "pki"
        self.assertSucceeds(cli("init", str(directory), umask=0o000))
        self.assertSucceeds(cli("--dir", str(directory), "issue-client", "alice", umask=0o000))
        self.assertSucceeds(cli("--dir", str(directory), "issue-server", "api.example",
                                umask=0o000))
        self.assertSucceeds(cli("--dir", str(directory), "renew", "alice", umask=0o000))
        for path in (base, base / "deep", directory, directory / "clients",
                     directory / "servers", directory / "newcerts"):
            self.assertEqual(_mode(path), 0o700, path)
        for path in directory.rglob("*"):
            self.assertFalse(_mode(path) & 0o022, f"{path} is {_mode(path):o}")
            if path.suffix == ".key":
                self.assertEqual(_mode(path), 0o600, path)

    def test_umask_that_removes_owner_write(self) -> None:
        """A umask of 0277 still gives usable 0700 directories."""
        directory = Path(self.mktemp()).resolve()
        self.assertSucceeds(cli("init", str(directory), umask=0o277))
        self.assertSucceeds(cli("--dir", str(directory), "issue-client", "alice", umask=0o277))
        self.assertEqual((_mode(directory), _mode(directory / "clients")), (0o700, 0o700))

    def test_world_writable_directory_refused(self) -> None:
        """An existing world-writable directory (not sticky) is refused with how to fix it."""
        directory = Path(self.mktemp()).resolve()
        directory.mkdir()
        os.chmod(directory, 0o777)
        self.assertRefuses(cli("init", str(directory)),
                           f"{directory}: writable by every user (mode 0777), who could replace "
                           f"the CA; `chmod 700 {directory}` or choose another directory")
        self.assertEqual(list(directory.iterdir()), [])
        os.chmod(directory, 0o1777)  # sticky, as /tmp: others cannot replace our files
        self.assertSucceeds(cli("init", str(directory)))

    def test_concurrent_inits(self) -> None:
        """Four inits released at once: one creates, three reuse, one consistent CA."""
        directory = str(Path(self.mktemp()).resolve())
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        code = ("import os, sys\nfrom certsrv.pki.cli import main\nprint('ready', flush=True)\n"
                "os.read(0, 1)\nsys.exit(main(sys.argv[1:]))\n")
        processes = [
            subprocess.Popen([sys.executable, "-c", code, "init", directory, "--key-type", "rsa"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=env)
            for _ in range(4)
        ]
        for process in processes:
            self.addCleanup(_reap, process)
            assert process.stdout is not None
            self.assertEqual(process.stdout.readline(), "ready\n")
        for process in processes:  # release them together
            assert process.stdin is not None
            process.stdin.write("g")
            process.stdin.flush()
        results = []
        for process in processes:
            out, err = process.communicate(timeout=120)
            results.append((process.returncode, out, err))
        self.assertEqual([(code, err) for code, _, err in results], [(0, "")] * 4)
        outputs = sorted(out.split(" ", 1)[0] for _, out, _ in results)
        self.assertEqual(outputs, ["created", "reusing", "reusing", "reusing"])
        store = PKIStore.open(directory)
        _ = store.ca  # the key matches the certificate
        self.assertEqual(len(store.entries()), 3)
        for name, purpose in (("server.pem", "sslserver"), ("client.pem", "sslclient")):
            self.assertVerifies(Path(directory), name, purpose)


class InitReuseTests(_CLIProcessCase):
    """Issue 12, item 5: the quick start's ``certsrv-pki init certs`` can be run twice."""

    def test_twice_then_force(self) -> None:
        """The second init says it reuses the PKI (one line, exit 0); --force replaces it."""
        cwd = Path(self.mktemp()).resolve()
        cwd.mkdir()
        first = self.assertSucceeds(cli("init", "certs", cwd=str(cwd)))
        self.assertTrue(first.startswith("created a PKI with ecdsa keys in certs:"), first)
        ca = (cwd / "certs" / "ca.pem").read_bytes()
        second = self.assertSucceeds(cli("init", "certs", cwd=str(cwd)))
        self.assertEqual(second, "reusing the PKI already in certs (ecdsa keys, 3 certificates); "
                                 "`certsrv-pki init --force certs` replaces it\n")
        self.assertEqual((cwd / "certs" / "ca.pem").read_bytes(), ca)
        self.assertSucceeds(cli("init", "certs", "--key-type", "ecdsa", cwd=str(cwd)))
        forced = self.assertSucceeds(cli("init", "certs", "--force", "--key-type", "ed25519",
                                         cwd=str(cwd)))
        self.assertTrue(forced.startswith("created a PKI with ed25519 keys in certs:"), forced)
        self.assertNotEqual((cwd / "certs" / "ca.pem").read_bytes(), ca)

    def test_half_made(self) -> None:
        """An interrupted init (no crl.pem, no index) is refused with how to replace it."""
        directory = Path(self.mktemp()).resolve()
        PKIStore.init(directory)
        (directory / "crl.pem").unlink()
        (directory / "index.txt").unlink()
        self.assertRefuses(cli("init", str(directory)),
                           f"{directory} holds an incomplete PKI (missing index.txt, crl.pem); "
                           f"`certsrv-pki init --force {directory}` replaces it")
        self.assertSucceeds(cli("init", str(directory), "--force"))
        self.assertSucceeds(cli("init", str(directory)))

    def test_only_a_key(self) -> None:
        """A directory with only a stray ca.key is not reused and not overwritten."""
        directory = Path(self.mktemp()).resolve()
        directory.mkdir()
        (directory / "ca.key").write_text("not mine\n")
        self.assertRefuses(cli("init", str(directory)),
                           f"{directory} holds an incomplete PKI (missing ca.pem, pki.json, "
                           "index.json, index.txt, index.txt.attr, crl.pem); "
                           f"`certsrv-pki init --force {directory}` replaces it")
        self.assertEqual((directory / "ca.key").read_text(), "not mine\n")

    def test_damaged(self) -> None:
        """A PKI whose index or CA key is broken is refused, naming the file."""
        directory = Path(self.mktemp()).resolve()
        PKIStore.init(directory)
        (directory / "index.json").write_text("{")
        result = cli("init", str(directory))
        self.assertEqual(result.returncode, 1)
        self.assertTrue(result.stderr.startswith(
            f"certsrv-pki: {directory} holds a damaged PKI ({directory / 'index.json'}: not "
            "valid JSON"), result.stderr)
        self.assertTrue(result.stderr.endswith(
            f"; `certsrv-pki init --force {directory}` replaces it\n"), result.stderr)
        PKIStore.init(directory, force=True)
        shutil.copy(directory / "client.key", directory / "ca.key")
        self.assertRefuses(cli("init", str(directory)),
                           f"{directory} holds a damaged PKI ({directory / 'ca.key'}: the CA "
                           "private key does not match the CA certificate); "
                           f"`certsrv-pki init --force {directory}` replaces it")

    def test_other_options(self) -> None:
        """Asking for another key type or URL than the PKI has is refused, not ignored."""
        directory = Path(self.mktemp()).resolve()
        PKIStore.init(directory, ocsp_url="http://127.0.0.1:8080/")
        hint = f"`certsrv-pki init --force {directory}` replaces it"
        self.assertRefuses(cli("init", str(directory), "--key-type", "rsa"),
                           f"{directory} already holds a PKI with key type 'ecdsa', not 'rsa'; "
                           f"{hint}")
        self.assertRefuses(cli("init", str(directory), "--ocsp-url", "http://127.0.0.1:9/"),
                           f"{directory} already holds a PKI with OCSP URL "
                           f"'http://127.0.0.1:8080/', not 'http://127.0.0.1:9/'; {hint}")
        self.assertRefuses(cli("init", str(directory), "--crl-url", "http://127.0.0.1:9/c"),
                           f"{directory} already holds a PKI with CRL URL none, not "
                           f"'http://127.0.0.1:9/c'; {hint}")
        self.assertSucceeds(cli("init", str(directory), "--ocsp-url",
                                "http://127.0.0.1:8080/"))

    def test_library_init_still_refuses(self) -> None:
        """PKIStore.init (the library) keeps refusing; open_or_init says what it did."""
        directory, _ = self.make_pki()
        self.assertRaises(PKIError, PKIStore.init, directory)
        store, created = PKIStore.open_or_init(directory)
        self.assertFalse(created)
        self.assertEqual(len(store.entries()), 3)
        store, created = PKIStore.open_or_init(Path(self.mktemp()))
        self.assertTrue(created)


def _crl_text(case: _PKITestCase, directory: Path) -> dict[str, str]:
    """``openssl crl -text`` of crl.pem as {serial: reason}, after checking its signature."""
    result = case.openssl("crl", "-in", str(directory / "crl.pem"), "-CAfile",
                          str(directory / "ca.pem"), "-text", "-noout")
    case.assertEqual(result.returncode, 0, result.stderr)
    case.assertIn("verify OK", result.stdout + result.stderr)
    revoked: dict[str, str] = {}
    lines = result.stdout.splitlines()
    for position, line in enumerate(lines):
        if line.strip().startswith("Serial Number:"):
            serial = line.split(":", 1)[1].strip()
            reason = ""
            for following in lines[position + 1:position + 6]:
                if "CRL Reason Code" in following:
                    reason = lines[lines.index(following, position) + 1].strip()
            revoked[serial] = reason
    return revoked


class KeyCompromiseTests(_CLIProcessCase):
    """Issue 16, finding 4: keyCompromise revokes every certificate of the key, for good."""

    def setUp(self) -> None:
        self.dir = Path(self.mktemp()).resolve()
        self.assertSucceeds(cli("init", str(self.dir)))
        self.store = PKIStore.open(self.dir)
        self.first = self.store.find("client")
        self.assertSucceeds(cli("--dir", str(self.dir), "renew", "client", "--keep-key"))
        self.second = self.store.find("client")
        self.assertNotEqual(self.first.serial, self.second.serial)

    def test_revokes_every_certificate_of_the_key(self) -> None:
        """Both serials are revoked in the CRL (openssl crl) and by openssl ocsp -index."""
        out = self.assertSucceeds(cli("--dir", str(self.dir), "revoke", "client", "--reason",
                                      "keyCompromise"))
        lines = out.splitlines()
        self.assertTrue(lines[0].startswith(
            f"revoked client certificate 'client' (serial {self.second.serial_hex}, reason "
            "keyCompromise)"), out)
        self.assertEqual(lines[1:3], [
            f"also revoked client certificate 'client' (serial {self.first.serial_hex}): "
            "same key",
            "that key will never be certified again; `certsrv-pki renew client` issues a "
            "certificate with a new key",
        ])
        revoked = _crl_text(self, self.dir)
        self.assertEqual(revoked, {self.first.serial_hex: "Key Compromise",
                                   self.second.serial_hex: "Key Compromise"})
        for entry in (self.first, self.second):
            status = self.store.status_of(entry.serial)
            self.assertEqual((status.ocsp_status, status.reason),
                             ("revoked", x509.ReasonFlags.key_compromise))
        answer = self.query(self.dir, f"newcerts/{self.first.serial_hex}.pem")
        self.assertIn(": revoked", answer)
        self.assertIn("Reason: keyCompromise", answer)
        self.assertEqual(self.store.find("server").status, EntryStatus.VALID)

    def test_key_never_certified_again(self) -> None:
        """renew --keep-key refuses the key; renew with a new key works and is valid."""
        self.assertSucceeds(cli("--dir", str(self.dir), "revoke", "client", "--reason",
                                "keyCompromise"))
        self.assertRefuses(
            cli("--dir", str(self.dir), "renew", "client", "--keep-key"),
            f"{self.dir / 'index.json'}: refusing to certify the key of "
            f"{self.dir / 'client.pem'}: that key was revoked for keyCompromise (certificate "
            f"'client', serial {self.first.serial_hex}); renew without --keep-key to get a new key")
        self.assertSucceeds(cli("--dir", str(self.dir), "renew", "client"))
        renewed = self.store.find("client")
        self.assertEqual(renewed.status, EntryStatus.VALID)
        self.assertNotEqual(renewed.key_sha256, self.first.key_sha256)
        self.assertEqual(self.store.same_key(renewed), [])

    def test_revoking_the_old_serial_revokes_the_current(self) -> None:
        """keyCompromise on the superseded serial revokes the current certificate too."""
        self.assertSucceeds(cli("--dir", str(self.dir), "revoke", self.first.serial_hex,
                                "--reason", "keyCompromise"))
        self.assertEqual(set(_crl_text(self, self.dir)),
                         {self.first.serial_hex, self.second.serial_hex})
        self.assertEqual(self.store.find("client").status, EntryStatus.REVOKED)

    def test_earlier_revocation_learns_the_compromise(self) -> None:
        """A certificate revoked as superseded can be revoked again for keyCompromise."""
        self.assertSucceeds(cli("--dir", str(self.dir), "revoke", self.first.serial_hex,
                                "--reason", "superseded"))
        first_revoked_at = self.store.find(self.first.serial).revoked_at
        self.assertEqual(self.store.find("client").status, EntryStatus.VALID)
        self.assertRefuses(cli("--dir", str(self.dir), "revoke", self.first.serial_hex),
                           f"{self.dir / 'index.json'}: certificate 'client' (serial "
                           f"{self.first.serial_hex}) was already revoked at "
                           f"{first_revoked_at:%Y-%m-%dT%H:%M:%SZ}")
        self.assertSucceeds(cli("--dir", str(self.dir), "revoke", self.first.serial_hex,
                                "--reason", "keyCompromise"))
        first = self.store.find(self.first.serial)
        self.assertEqual((first.revocation_reason, first.revoked_at),
                         (x509.ReasonFlags.key_compromise, first_revoked_at))
        self.assertEqual(self.store.find("client").revocation_reason,
                         x509.ReasonFlags.key_compromise)
        self.assertRefuses(cli("--dir", str(self.dir), "revoke", self.first.serial_hex,
                               "--reason", "keyCompromise"),
                           f"{self.dir / 'index.json'}: certificate 'client' (serial "
                           f"{self.first.serial_hex}) was already revoked at "
                           f"{first_revoked_at:%Y-%m-%dT%H:%M:%SZ}")

    def test_other_reasons_by_serial_revoke_one_certificate(self) -> None:
        """Any other reason, by serial: that certificate only."""
        self.assertSucceeds(cli("--dir", str(self.dir), "revoke", self.second.serial_hex,
                                "--reason", "cessationOfOperation"))
        self.assertEqual(set(_crl_text(self, self.dir)), {self.second.serial_hex})
        self.assertEqual(self.store.find(self.first.serial).status, EntryStatus.SUPERSEDED)

    def test_by_name_revokes_the_valid_predecessors(self) -> None:
        """By name, whatever the reason: the current certificate and every superseded one
        still valid, whose key its holder may still have."""
        self.assertSucceeds(cli("--dir", str(self.dir), "revoke", "client", "--reason",
                                "cessationOfOperation"))
        self.assertEqual(set(_crl_text(self, self.dir)),
                         {self.first.serial_hex, self.second.serial_hex})
        self.assertEqual(self.store.find(self.first.serial).status, EntryStatus.REVOKED)

    def test_index_without_key_hashes(self) -> None:
        """An index written before key hashes existed: the certificates' files are read."""
        index = self.dir / "index.json"
        document = json.loads(index.read_text())
        for item in document["certificates"]:
            del item["key_sha256"]
        index.write_text(json.dumps(document))
        self.assertSucceeds(cli("--dir", str(self.dir), "revoke", "client", "--reason",
                                "keyCompromise"))
        self.assertEqual(set(_crl_text(self, self.dir)),
                         {self.first.serial_hex, self.second.serial_hex})
        result = cli("--dir", str(self.dir), "renew", "client", "--keep-key")
        self.assertEqual(result.returncode, 1)
        self.assertIn("that key was revoked for keyCompromise", result.stderr)

    def test_no_issuance_certifies_the_key(self) -> None:
        """Every issuance path ends in the same check, whatever the certificate's name."""
        self.store.revoke("client", "keyCompromise")
        key = serialization.load_pem_private_key(
            (self.dir / "client.key").read_bytes(), None)
        issued = self.store.ca.issue_client("other", private_key=key)  # type: ignore[arg-type]
        with self.store._locked():
            error = self.assertRaises(PKIError, self.store._record, "other", Kind.CLIENT,
                                      "clients/other", issued)
        self.assertEqual(str(error), f"{self.dir / 'index.json'}: refusing to certify the key "
                                     "of the new client certificate 'other': that key was "
                                     "revoked for keyCompromise (certificate 'client', serial "
                                     f"{self.first.serial_hex}); renew without --keep-key to "
                                     "get a new key")
        self.assertFalse((self.dir / "clients" / "other.key").exists())

    def test_library_renew_refuses(self) -> None:
        """PKIStore.renew(keep_key=True) refuses with the same message as the CLI."""
        self.store.revoke("client", "keyCompromise")
        error = self.assertRaises(PKIError, self.store.renew, "client", keep_key=True)
        self.assertIn("refusing to certify the key of", str(error))
        self.assertIn("that key was revoked for keyCompromise", str(error))


class RevokeTimingTests(_CLIProcessCase):
    """Issue 12, item 2: ``revoke`` says when servers will see the revocation."""

    def test_output(self) -> None:
        """By CRL file, by CRL URL (when the PKI has one, with a time), by OCSP (5 minutes)."""
        directory = Path(self.mktemp()).resolve()
        PKIStore.init(directory, crl_url="http://127.0.0.1:8080/crl.pem", now=NOW)
        out = self.assertSucceeds(cli("--dir", str(directory), "revoke", "client"))
        store = PKIStore.open(directory)
        crl_next = x509.load_pem_x509_crl((directory / "crl.pem").read_bytes()).next_update_utc
        assert crl_next is not None and store.crl_expires_by is not None
        # The CRL written by init (at NOW) expires before the new one: a server may hold either.
        self.assertEqual(store.crl_expires_by.replace(microsecond=0),
                         crl_next.replace(microsecond=0))
        self.assertEqual(out.splitlines()[1:], [
            "servers see the revocation:",
            f"  with --crl {directory / 'crl.pem'}: within --watch-interval (default 5 s), or "
            "at SIGHUP",
            "  with --crl-fetch on (CRL from http://127.0.0.1:8080/crl.pem): when the CRL they "
            f"hold expires, by {crl_next:%Y-%m-%dT%H:%M:%SZ} at the latest, or at SIGHUP",
            f"  by OCSP (twistd certsrv-ocsp --pki {directory}): at once for new lookups; "
            "within 5 minutes for a server holding a 'good' answer (the responder's default "
            "--validity), or at SIGHUP",
        ])

    def test_crl_expires_by_is_the_latest(self) -> None:
        """A shorter CRL written later does not move the horizon back."""
        _, store = self.make_pki(now=NOW)
        store.write_crl(days=30, now=NOW)
        store.write_crl(days=1, now=NOW)
        self.assertEqual(PKIStore.open(store.path).crl_expires_by,
                         NOW + datetime.timedelta(days=30))
