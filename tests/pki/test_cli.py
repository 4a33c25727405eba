"""certsrv.pki.cli: ``certsrv-pki`` prints results on stdout, one-line errors on stderr."""

from __future__ import annotations

import datetime
import os
import subprocess
import sys
from pathlib import Path

from certsrv.pki.store import PKIStore
from tests._support import PKIStoreCase as _PKITestCase

REPO = Path(__file__).resolve().parents[2]


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
