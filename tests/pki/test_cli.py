"""certsrv.pki.cli: ``certsrv-pki`` prints results on stdout, one-line errors on stderr."""

from __future__ import annotations

import datetime
import getpass
import os
import subprocess
import sys
from pathlib import Path

from certsrv.pki.store import PKIStore
from certsrv.x509 import passphrase
from tests._support import PKIStoreCase as _PKITestCase

REPO = Path(__file__).resolve().parents[2]
PASSPHRASE = "correct horse battery"


class CLITests(_PKITestCase):
    """``certsrv-pki`` prints results on stdout and one-line errors on stderr."""

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

    def test_init_reuses_then_force_replaces(self) -> None:
        """A second init reuses the PKI in one line, exit 0; --force replaces the PKI."""
        directory = self.mktemp()
        self.assertEqual(self.run_cli("init", directory)[0], 0)
        before = Path(directory, "ca.pem").read_bytes()
        code, out, err = self.run_cli("init", directory)
        self.assertEqual((code, err), (0, ""))
        self.assertEqual(out, f"reusing the PKI already in {directory} (ecdsa keys, 3 "
                              f"certificates); `certsrv-pki init --force {directory}` "
                              "replaces it\n")
        self.assertEqual(Path(directory, "ca.pem").read_bytes(), before)
        code, out, _ = self.run_cli("init", directory, "--force")
        self.assertEqual(code, 0)
        self.assertTrue(out.startswith("created a PKI with ecdsa keys"), out)
        self.assertNotEqual(Path(directory, "ca.pem").read_bytes(), before)

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
        """``python -m certsrv.pki.cli`` runs the command and reports errors cleanly."""
        directory = self.mktemp()
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        command = [sys.executable, "-m", "certsrv.pki.cli", "--dir", directory]
        first = subprocess.run([*command, "init"], capture_output=True, text=True, env=env,
                               timeout=60)
        self.assertEqual(first.returncode, 0, first.stderr)
        failed = subprocess.run([*command, "issue-client", "../x"], capture_output=True,
                                text=True, env=env, timeout=60)
        self.assertEqual(failed.returncode, 1)
        self.assertEqual(failed.stderr, "certsrv-pki: invalid certificate name '../x': use 1-64 "
                         "letters, digits, '.', '_' or '-', starting with a letter or digit\n")



class SafeAtRestTests(_PKITestCase):
    """``--encrypt-key`` and ``export``: files openssl reads with the passphrase, mode 0600,
    modern encryption; the passphrase from the environment, a file or a terminal only."""

    def setUp(self) -> None:
        self.directory = self.mktemp()
        self.assertEqual(self.run_cli("init", self.directory)[0], 0)
        os.environ["CERTSRV_TEST_PW"] = PASSPHRASE
        self.addCleanup(os.environ.pop, "CERTSRV_TEST_PW", None)
        self.patch(passphrase, "interactive", lambda: False)  # as in CI: no terminal

    def cli(self, *argv: str) -> tuple[int, str, str]:
        return self.run_cli("--dir", self.directory, *argv)

    def test_export_p12_openssl_reads_it(self) -> None:
        p12 = str(Path(self.directory, "client.p12"))
        code, out, err = self.cli("export", "client", "--p12", p12, "--key-passphrase-env",
                                  "CERTSRV_TEST_PW")
        self.assertEqual((code, err), (0, ""))
        self.assertIn("client.p12 (PKCS#12)", out)
        self.assertEqual(os.stat(p12).st_mode & 0o777, 0o600)
        info = self.openssl("pkcs12", "-in", p12, "-info", "-passin", "env:CERTSRV_TEST_PW",
                            "-nodes")
        self.assertEqual(info.returncode, 0, info.stderr)
        # openssl 3.0 prints the algorithms on stderr.
        text = info.stdout + info.stderr
        self.assertIn("Shrouded Keybag: PBES2, PBKDF2, AES-256-CBC, Iteration 200000, "
                      "PRF hmacWithSHA256", text)
        self.assertIn("PKCS7 Encrypted data: PBES2, PBKDF2, AES-256-CBC", text)
        self.assertIn("MAC: sha256", text)
        self.assertIn("friendlyName: client", text)
        self.assertIn("subject=CN = client", text)
        self.assertIn("subject=O = certsrv, CN = certsrv development CA", text)  # the chain
        self.assertIn("BEGIN PRIVATE KEY", info.stdout)
        wrong = self.openssl("pkcs12", "-in", p12, "-info", "-passin", "pass:wrong",
                             "-nokeys")
        self.assertNotEqual(wrong.returncode, 0)

    def test_encrypted_pem_keys(self) -> None:
        code, _, err = self.cli("issue-client", "bob", "--encrypt-key",
                                "--key-passphrase-env", "CERTSRV_TEST_PW")
        self.assertEqual((code, err), (0, ""))
        key = Path(self.directory, "clients", "bob.key")
        self.assertTrue(key.read_bytes().startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----"))
        self.assertEqual(key.stat().st_mode & 0o777, 0o600)
        self.assertOpenSSLReads(key)
        parsed = self.openssl("asn1parse", "-in", str(key))
        self.assertIn("PBES2", parsed.stdout)
        self.assertIn("PBKDF2", parsed.stdout)
        self.assertIn("aes-256-cbc", parsed.stdout)
        # export --key re-encrypts; the stored encrypted key is read with the passphrase.
        copy = Path(self.directory, "bob-copy.key")
        self.assertEqual(self.cli("export", "bob", "--key", str(copy),
                                  "--key-passphrase-env", "CERTSRV_TEST_PW")[0], 0)
        self.assertOpenSSLReads(copy)
        self.assertEqual(copy.stat().st_mode & 0o777, 0o600)
        # renew --keep-key decrypts the stored key; --encrypt-key writes it encrypted again.
        pw_file = Path(self.mktemp())
        pw_file.write_text(PASSPHRASE + "\n")
        self.assertEqual(self.cli("renew", "bob", "--keep-key", "--encrypt-key",
                                  "--key-passphrase-file", str(pw_file))[:2][0], 0)
        self.assertOpenSSLReads(key)
        code, _, err = self.cli("issue-server", "api.local", "--encrypt-key",
                                "--key-passphrase-file", str(pw_file))
        self.assertEqual((code, err), (0, ""))
        self.assertOpenSSLReads(Path(self.directory, "servers", "api.local.key"))

    def test_refusals(self) -> None:
        self.assertEqual(self.cli("issue-client", "bob", "--encrypt-key",
                                  "--key-passphrase-env", "CERTSRV_TEST_PW")[0], 0)
        os.environ["CERTSRV_OTHER_PW"] = "another passphrase"
        self.addCleanup(os.environ.pop, "CERTSRV_OTHER_PW", None)
        p12 = str(Path(self.mktemp()))
        cases = [
            (("export", "bob", "--p12", p12, "--key-passphrase-env", "CERTSRV_OTHER_PW"),
             "bob.key: the passphrase from environment variable CERTSRV_OTHER_PW does not "
             "decrypt this key"),
            (("export", "bob", "--p12", p12),
             "bob.key: the key is encrypted and there is no terminal to ask on for its "
             "passphrase: give --key-passphrase-env NAME or --key-passphrase-file PATH"),
            (("export", "bob", "--key-passphrase-env", "CERTSRV_TEST_PW"),
             "export needs --p12 FILE, --key FILE, or both"),
            (("export", "nobody", "--p12", p12, "--key-passphrase-env", "CERTSRV_TEST_PW"),
             "no certificate named 'nobody'"),
            (("export", "bob", "--p12", p12, "--key-passphrase-env", "CERTSRV_UNSET_PW"),
             "$CERTSRV_UNSET_PW: environment variable is not set"),
            (("issue-client", "carol", "--key-passphrase-env", "CERTSRV_TEST_PW"),
             "a passphrase was given without --encrypt-key"),
            (("issue-client", "carol", "--encrypt-key"),
             "no terminal to ask on"),
            (("renew", "bob", "--keep-key"), "no terminal to ask on"),
        ]
        for argv, message in cases:
            result = self.cli(*argv)
            self.assertFails(result, message)
            self.assertNotIn(PASSPHRASE, result[2])
        self.assertFalse(os.path.exists(p12))
        self.assertEqual(self.cli("revoke", "bob")[0], 0)
        self.assertFails(self.cli("export", "bob", "--p12", p12, "--key-passphrase-env",
                                  "CERTSRV_TEST_PW"), "is revoked; renew it first")

    def test_passphrase_is_never_an_argument(self) -> None:
        code, _, err = self.cli("export", "client", "--p12", "x.p12", "--passphrase", "x")
        self.assertEqual(code, 2)
        self.assertIn("unrecognized arguments", err)

    def test_prompt_asks_twice_on_a_terminal(self) -> None:
        self.patch(passphrase, "interactive", lambda: True)
        answers = iter([PASSPHRASE, PASSPHRASE])
        prompts: list[str] = []

        def ask(prompt: str) -> str:
            prompts.append(prompt)
            return next(answers)

        self.patch(getpass, "getpass", ask)
        key = Path(self.mktemp())
        self.assertEqual(self.cli("export", "client", "--key", str(key))[0], 0)
        self.assertEqual(len(prompts), 2)
        self.assertIn("(again)", prompts[1])
        self.assertOpenSSLReads(key)

    def assertFails(self, result: tuple[int, str, str], message: str) -> None:
        code, _, err = result
        self.assertEqual(code, 1, err)
        self.assertTrue(err.startswith("certsrv-pki: "), err)
        self.assertIn(message, err)
        self.assertNotIn("Traceback", err)

    def assertOpenSSLReads(self, key: Path) -> None:
        result = self.openssl("pkey", "-in", str(key), "-passin", "env:CERTSRV_TEST_PW",
                              "-noout")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertNotEqual(self.openssl("pkey", "-in", str(key), "-passin", "pass:wrong",
                                         "-noout").returncode, 0)
class ShortLivedTests(_PKITestCase):
    """``init --validity`` and ``issue-client --validity`` take hours."""

    def test_init_and_issue_for_hours(self) -> None:
        directory = self.mktemp()
        self.assertEqual(self.run_cli("init", directory, "--validity", "8h")[0], 0)
        self.assertEqual(self.run_cli("--dir", directory, "issue-client", "alice",
                                      "--validity", "2h")[0], 0)
        store = PKIStore.open(directory)
        lifetimes = {e.name: e.not_after - e.not_before for e in store.entries()}
        backdate = datetime.timedelta(minutes=5)
        self.assertEqual(lifetimes["client"], datetime.timedelta(hours=8) + backdate)
        self.assertEqual(lifetimes["alice"], datetime.timedelta(hours=2) + backdate)
        self.assertEqual(lifetimes["server"], datetime.timedelta(days=365) + backdate)

    def test_bad_validity_changes_nothing(self) -> None:
        directory = self.mktemp()
        code, _, err = self.run_cli("init", directory, "--validity", "8x")
        self.assertEqual(code, 2, err)
        self.assertFalse(os.path.exists(os.path.join(directory, "ca.pem")))
