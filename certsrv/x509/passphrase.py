"""Where a private key's passphrase comes from: an environment variable, a file, a prompt."""

from __future__ import annotations

import getpass
import os
import sys
from collections.abc import Callable, Mapping

from certsrv.exceptions import ConfigurationError
from certsrv.x509.certs import read_file

__all__ = ["Passphrase", "interactive"]

# Never prompt without a terminal: a daemon, a pipe or CI would hang or read garbage.
_NO_TERMINAL = "there is no terminal to ask on"


def interactive() -> bool:
    """Whether a prompt can be answered: standard input is a terminal."""
    stdin = sys.stdin
    try:
        return stdin is not None and stdin.isatty()
    except (AttributeError, ValueError):
        return False


class Passphrase:
    """A source of the passphrase that decrypts a key; read only when a key is encrypted.

    ``source`` says where it comes from, for messages; the passphrase itself is in no
    message, repr or exception. A passphrase read once (a prompt) is kept for later reads,
    so a server can reload an encrypted key without asking again."""

    def __init__(self, source: str, reader: Callable[[str], bytes], *, keep: bool = False,
                 path: str | None = None) -> None:
        self.source = source
        self.path = path  # the file it is read from, if it is (a reload must read it too)
        self._reader = reader
        self._keep = keep
        self._kept: bytes | None = None

    def __repr__(self) -> str:
        return f"<Passphrase from {self.source}>"

    def read(self, what: str) -> bytes:
        """The passphrase for the key named ``what``; ConfigurationError if it cannot be had."""
        if self._kept is not None:
            return self._kept
        value = self._reader(what)
        if self._keep:
            self._kept = value
        return value

    @property
    def prompts(self) -> bool:
        """Whether this source asks on the terminal."""
        return self._keep

    @property
    def asked(self) -> bool:
        """Whether this is a prompt that has been answered (the answer is kept)."""
        return self._kept is not None

    @classmethod
    def from_env(cls, name: str, environ: Mapping[str, str] | None = None) -> Passphrase:
        """The value of environment variable ``name``, read each time (a reload sees changes)."""
        env = os.environ if environ is None else environ

        def read(what: str) -> bytes:
            value = env.get(name)
            if value is None:
                raise ConfigurationError(f"${name}", "environment variable is not set "
                                                     f"(it should hold the passphrase of {what})")
            return _non_empty(value.encode("utf-8"), f"${name}", "environment variable")

        return cls(f"environment variable {name}", read)

    @classmethod
    def from_file(cls, path: str) -> Passphrase:
        """The first line of file ``path``, read each time (a reload sees changes)."""

        def read(what: str) -> bytes:
            data = read_file(path, "passphrase")
            first = data.split(b"\n", 1)[0].removesuffix(b"\r")
            return _non_empty(first, path, "passphrase file's first line")

        return cls(f"file {path}", read, path=path)

    @classmethod
    def from_value(cls, value: bytes, source: str = "the caller") -> Passphrase:
        """A passphrase the program already holds."""
        value = _non_empty(value, source, "passphrase")
        return cls(source, lambda what: value)

    @classmethod
    def prompt(cls, hint: str, *, confirm: bool = False,
               ask: Callable[[str], str] | None = None,
               terminal: Callable[[], bool] | None = None) -> Passphrase:
        """Ask on the terminal (``getpass``), once: the answer is kept; without a terminal,
        raise ConfigurationError ending with ``hint`` (which options give the passphrase)."""

        def read(what: str) -> bytes:
            if not (terminal or interactive)():
                raise ConfigurationError(what, f"the key is encrypted and {_NO_TERMINAL} for "
                                               f"its passphrase: {hint}")
            question = ask or getpass.getpass
            value = question(f"Passphrase for {what}: ").encode("utf-8")
            if confirm and question(f"Passphrase for {what} (again): ").encode("utf-8") != value:
                raise ConfigurationError(what, "the two passphrases typed differ")
            return _non_empty(value, what, "passphrase typed")

        return cls("the terminal", read, keep=True)

    @classmethod
    def missing(cls, hint: str) -> Passphrase:
        """No source: reading it raises ConfigurationError ending with ``hint``."""

        def read(what: str) -> bytes:
            raise ConfigurationError(what, f"the key is encrypted and no passphrase was given: "
                                           f"{hint}")

        return cls("nowhere", read)


def _non_empty(value: bytes, source: str, what: str) -> bytes:
    if not value:
        raise ConfigurationError(source, f"the {what} is empty; an encrypted key needs a "
                                         "passphrase")
    return value
