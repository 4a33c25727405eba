"""certsrv.x509.passphrase: passphrase sources read only when needed, never shown."""

from __future__ import annotations

import os

from twisted.trial.unittest import SynchronousTestCase

from certsrv.exceptions import ConfigurationError
from certsrv.x509.passphrase import Passphrase
from tests._support import write_pem

SECRET = "correct horse battery"


class EnvironmentTests(SynchronousTestCase):
    """An environment variable is read at each use; unset or empty is an error naming it."""

    def test_read_each_time(self) -> None:
        env = {"PW": SECRET}
        source = Passphrase.from_env("PW", env)
        self.assertEqual(source.read("k.pem"), SECRET.encode())
        env["PW"] = "changed for the reload"
        self.assertEqual(source.read("k.pem"), b"changed for the reload")
        self.assertEqual(repr(source), "<Passphrase from environment variable PW>")
        self.assertFalse(source.prompts)

    def test_unset_and_empty(self) -> None:
        error = self.assertRaises(ConfigurationError, Passphrase.from_env("PW", {}).read, "k")
        self.assertEqual(str(error), "$PW: environment variable is not set (it should hold the "
                                     "passphrase of k)")
        error = self.assertRaises(ConfigurationError,
                                  Passphrase.from_env("PW", {"PW": ""}).read, "k")
        self.assertIn("$PW: the environment variable is empty", str(error))


class FileTests(SynchronousTestCase):
    """A file gives its first line, without the line ending; re-read at each use."""

    def test_first_line(self) -> None:
        directory = self.mktemp()
        path = write_pem(directory, "pw", f"{SECRET}\r\nsecond line\n".encode(), 0o600)
        source = Passphrase.from_file(path)
        self.assertEqual(source.read("k"), SECRET.encode())
        write_pem(directory, "pw", b"new\n", 0o600)
        self.assertEqual(source.read("k"), b"new")
        self.assertNotIn(SECRET, repr(source))

    def test_missing_and_empty(self) -> None:
        directory = self.mktemp()
        os.mkdir(directory)
        missing = os.path.join(directory, "nothing")
        error = self.assertRaises(ConfigurationError, Passphrase.from_file(missing).read, "k")
        self.assertEqual(str(error), f"{missing}: passphrase file does not exist")
        empty = write_pem(directory, "empty", b"\nsecret on line two\n", 0o600)
        error = self.assertRaises(ConfigurationError, Passphrase.from_file(empty).read, "k")
        self.assertIn("first line is empty", str(error))


class PromptTests(SynchronousTestCase):
    """A prompt asks once on a terminal and keeps the answer; without one it never asks."""

    def test_asks_once(self) -> None:
        asked: list[str] = []

        def ask(prompt: str) -> str:
            asked.append(prompt)
            return SECRET

        source = Passphrase.prompt("hint", ask=ask, terminal=lambda: True)
        self.assertTrue(source.prompts)
        self.assertFalse(source.asked)
        self.assertEqual(source.read("server.key"), SECRET.encode())
        self.assertEqual(source.read("server.key"), SECRET.encode())
        self.assertEqual(asked, ["Passphrase for server.key: "])
        self.assertTrue(source.asked)
        self.assertEqual(repr(source), "<Passphrase from the terminal>")

    def test_confirm(self) -> None:
        answers = iter(["one", "two"])
        source = Passphrase.prompt("hint", confirm=True, ask=lambda _: next(answers),
                                   terminal=lambda: True)
        error = self.assertRaises(ConfigurationError, source.read, "k")
        self.assertEqual(str(error), "k: the two passphrases typed differ")
        self.assertNotIn("one", repr(error))

    def test_no_terminal(self) -> None:
        def ask(prompt: str) -> str:
            raise AssertionError("asked without a terminal")

        source = Passphrase.prompt("give --key-passphrase-env NAME", ask=ask,
                                   terminal=lambda: False)
        error = self.assertRaises(ConfigurationError, source.read, "k.pem")
        self.assertEqual(str(error), "k.pem: the key is encrypted and there is no terminal to "
                                     "ask on for its passphrase: give --key-passphrase-env NAME")

    def test_empty_answer(self) -> None:
        source = Passphrase.prompt("hint", ask=lambda _: "", terminal=lambda: True)
        self.assertRaises(ConfigurationError, source.read, "k")


class OtherSourceTests(SynchronousTestCase):
    """A value held by the program, and no source at all."""

    def test_value(self) -> None:
        source = Passphrase.from_value(SECRET.encode())
        self.assertEqual(source.read("k"), SECRET.encode())
        self.assertNotIn(SECRET, repr(source))
        self.assertRaises(ConfigurationError, Passphrase.from_value, b"")

    def test_missing(self) -> None:
        error = self.assertRaises(ConfigurationError, Passphrase.missing("use --x").read, "k")
        self.assertEqual(str(error), "k: the key is encrypted and no passphrase was given: "
                                     "use --x")
