"""certsrv.client.cli: certsrv-client's argument parsing and its usage errors."""

from __future__ import annotations

import argparse
import contextlib
import io

from twisted.trial.unittest import SynchronousTestCase

from certsrv.client.cli import _header, _timeout, main


class ArgumentTests(SynchronousTestCase):
    """``-H 'Name: value'`` and ``--timeout SECONDS`` are checked as they are parsed."""

    def test_header(self) -> None:
        self.assertEqual(_header("Accept: application/json"), ("Accept", "application/json"))
        self.assertEqual(_header("X-Empty:"), ("X-Empty", ""))
        for bad in ("no colon", ": value", " Lead: x"):
            self.assertRaises(argparse.ArgumentTypeError, _header, bad)

    def test_timeout(self) -> None:
        self.assertEqual(_timeout("2.5"), 2.5)
        for bad in ("0", "-1", "soon", "nan"):
            self.assertRaises(argparse.ArgumentTypeError, _timeout, bad)

    def test_usage_errors_exit_2(self) -> None:
        cert = ["--cert", "c.pem"]
        for argv, words in (([*cert, "--timeout", "0", "https://127.0.0.1:1/"], "timeout"),
                            ([*cert, "http://127.0.0.1:1/"], "must start with https://")):
            err = io.StringIO()
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                self.assertEqual(main(argv), 2, argv)
            self.assertIn("certsrv-client", err.getvalue())
            self.assertIn(words, err.getvalue())
