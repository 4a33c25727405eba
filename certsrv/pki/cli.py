"""
``certsrv-pki``: create and run the development PKI kept in a directory (default ``certs``).
"""

from __future__ import annotations

import argparse
import datetime
import functools
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from cryptography import x509

from certsrv.exceptions import ConfigurationError, PKIError
from certsrv.pki import KeyType
from certsrv.pki.store import (
    CRL,
    DEFAULT_CRL_DAYS,
    DEFAULT_DAYS,
    DEFAULT_OCSP_VALIDITY,
    REVOCATION_REASONS,
    Entry,
    PKIStore,
    parse_duration,
)
from certsrv.x509.passphrase import Passphrase

__all__ = ["main"]

PROG = "certsrv-pki"
DEFAULT_DIR = "certs"
_KEY_TYPES = [key_type.value for key_type in KeyType]
_ENCRYPT_HELP = ("write the key encrypted (PKCS#8, PBKDF2-HMAC-SHA256, AES-256-CBC) with the "
                 "passphrase")
_REASONS = [reason.value for reason in REVOCATION_REASONS]


def main(argv: list[str] | None = None) -> int:
    """Run ``certsrv-pki`` with ``argv`` (default: the command line); return the exit status."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, or a usage error argparse has already reported
        return e.code if isinstance(e.code, int) else 2
    try:
        directory = _directory(args)
        result: int = args.handler(args, directory)
        return result
    except (PKIError, ConfigurationError, ValueError, OSError) as e:
        print(f"{PROG}: {_describe(e)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


def _describe(error: Exception) -> str:
    if isinstance(error, OSError) and error.filename is not None:
        return f"{error.filename}: {error.strerror or error}"
    return str(error)


def _directory(args: argparse.Namespace) -> Path:
    positional = getattr(args, "init_dir", None)
    option = args.dir
    if positional is not None and option is not None and Path(positional) != Path(option):
        raise ValueError(
            f"two PKI directories given ({option!r} and {positional!r}); give only one"
        )
    return Path(positional or option or DEFAULT_DIR)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number of days: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1 day, not {value}")
    return value


def _duration(text: str) -> datetime.timedelta:
    try:
        return parse_duration(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e).removeprefix("invalid duration ")) from None


def _validity_options(parser: argparse.ArgumentParser, days_help: str) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--days", type=_positive, help=days_help)
    group.add_argument("--validity", type=_duration, metavar="DURATION",
                       help="validity as a duration: 90s, 10m, 8h, 30d")


_PASSPHRASE_HINT = "give --key-passphrase-env NAME or --key-passphrase-file PATH"


def _passphrase_options(parser: argparse.ArgumentParser, encrypt: str | None) -> None:
    """``--encrypt-key`` (if ``encrypt`` says what it does) and where the passphrase is."""
    if encrypt is not None:
        parser.add_argument("--encrypt-key", action="store_true", help=encrypt)
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--key-passphrase-env", metavar="NAME",
                        help="read the passphrase from environment variable NAME")
    source.add_argument("--key-passphrase-file", metavar="PATH",
                        help="read the passphrase from the first line of file PATH "
                        "(default for both: ask on the terminal)")


def _passphrase(args: argparse.Namespace, *, confirm: bool) -> Passphrase:
    """The passphrase source the options name; a prompt (twice if ``confirm``) otherwise."""
    if args.key_passphrase_env is not None:
        return Passphrase.from_env(args.key_passphrase_env)
    if args.key_passphrase_file is not None:
        return Passphrase.from_file(args.key_passphrase_file)
    return Passphrase.prompt(_PASSPHRASE_HINT, confirm=confirm)


def _encryption(args: argparse.Namespace) -> Passphrase | None:
    """The passphrase to encrypt a new key with, if --encrypt-key was given."""
    if not args.encrypt_key:
        if args.key_passphrase_env is not None or args.key_passphrase_file is not None:
            raise ValueError("a passphrase was given without --encrypt-key; add --encrypt-key "
                             "to write the key encrypted")
        return None
    return _passphrase(args, confirm=True)


# Adds a subcommand: ``commands.add_parser`` with the options every subcommand takes.
_AddCommand = Callable[..., argparse.ArgumentParser]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="Create and run a development PKI kept in a directory."
    )
    parser.add_argument("--dir", help=f"the PKI directory (default: {DEFAULT_DIR})")
    # Every subcommand also accepts --dir after its name.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--dir", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    add = functools.partial(commands.add_parser, parents=[common])
    _add_init(add)
    _add_issuing(add)
    _add_list_and_revocation(add)
    return parser


def _add_init(add: _AddCommand) -> None:
    init = add(
        "init", help="create a CA, server, client and OCSP responder certs",
        description="Create ca.pem, server.pem, client.pem, ocsp.pem (each with its .key), "
        "the index and an initial crl.pem.",
    )
    init.add_argument("init_dir", nargs="?", metavar="DIR", help="the PKI directory")
    init.add_argument("--key-type", choices=_KEY_TYPES,
                      help="key type of the CA and its certificates (default: ecdsa, P-256)")
    init.add_argument("--ocsp-url", help="OCSP responder URL put in issued certificates (AIA)")
    init.add_argument("--crl-url", help="CRL URL put in issued certificates (CDP)")
    init.add_argument("--validity", type=_duration, metavar="DURATION",
                      help="validity of client.pem, e.g. 8h for a short-lived certificate "
                      f"renewed over EST (default: {DEFAULT_DAYS}d)")
    init.add_argument("--force", action="store_true",
                      help="replace an existing PKI (without it, a complete one is reused)")
    init.set_defaults(handler=_init)


def _add_issuing(add: _AddCommand) -> None:
    client = add("issue-client", help="issue clients/NAME.pem and clients/NAME.key")
    client.add_argument("name", metavar="NAME", help="file name and common name")
    client.add_argument("--email", action="append", default=[], help="rfc822Name SAN")
    client.add_argument("--uri", action="append", default=[],
                        help="URI SAN, e.g. spiffe://example.org/svc")
    client.add_argument("--dns", action="append", default=[], help="dNSName SAN")
    _validity_options(client, f"validity in days (default: {DEFAULT_DAYS})")
    client.add_argument("--key-type", choices=_KEY_TYPES,
                        help="key type (default: the PKI's)")
    _passphrase_options(client, _ENCRYPT_HELP)
    client.set_defaults(handler=_issue_client)

    server = add("issue-server", help="issue servers/NAME.pem and servers/NAME.key")
    server.add_argument("hosts", nargs="+", metavar="HOST", help="host names and IP addresses")
    server.add_argument("--name", help="file name (default: the first HOST)")
    _validity_options(server, f"validity in days (default: {DEFAULT_DAYS})")
    server.add_argument("--key-type", choices=_KEY_TYPES,
                        help="key type (default: the PKI's)")
    _passphrase_options(server, _ENCRYPT_HELP)
    server.set_defaults(handler=_issue_server)

    renew = add("renew", help="re-issue a certificate with the same subject and SANs")
    renew.add_argument("name", metavar="NAME")
    _validity_options(renew, "validity in days (default: that of the certificate renewed)")
    renew.add_argument("--keep-key", action="store_true",
                       help="reuse the existing key (an encrypted one is decrypted with the "
                       "passphrase)")
    _passphrase_options(renew, _ENCRYPT_HELP)
    renew.set_defaults(handler=_renew)

    export = add("export", help="write a certificate, its key and the CA chain to a PKCS#12 "
                 "file, or its key to an encrypted PEM file",
                 description="Files are written with mode 0600 and encrypted with the "
                 "passphrase: PKCS#12 with PBKDF2-HMAC-SHA256 and AES-256-CBC (openssl, "
                 "browsers, .NET and Java read it), PEM as encrypted PKCS#8. An encrypted key "
                 "in the store is decrypted with the same passphrase.")
    export.add_argument("name", metavar="NAME")
    export.add_argument("--p12", metavar="FILE", help="the PKCS#12 (.p12/.pfx) file to write")
    export.add_argument("--key", metavar="FILE", help="the encrypted PEM key file to write")
    _passphrase_options(export, None)
    export.set_defaults(handler=_export)


def _add_list_and_revocation(add: _AddCommand) -> None:
    listing = add("list", help="show every issued certificate")
    listing.set_defaults(handler=_list)

    revoke = add("revoke", help="revoke a certificate and rewrite crl.pem")
    revoke.add_argument("target", metavar="NAME|SERIAL", help="a name or a hex serial number")
    revoke.add_argument("--reason", choices=_REASONS, default="unspecified",
                        type=_reason, help="CRL reason (default: unspecified)")
    revoke.add_argument("--crl-days", type=_positive, default=DEFAULT_CRL_DAYS,
                        help=f"days until the CRL's nextUpdate (default: {DEFAULT_CRL_DAYS})")
    revoke.set_defaults(handler=_revoke)

    crl = add("crl", help="write a fresh signed crl.pem")
    crl.add_argument("--days", type=_positive, default=DEFAULT_CRL_DAYS,
                     help=f"days until nextUpdate (default: {DEFAULT_CRL_DAYS})")
    crl.set_defaults(handler=_crl)


def _reason(text: str) -> str:
    # Accept any capitalisation; `choices` then checks the canonical spelling.
    for reason in _REASONS:
        if reason.lower() == text.lower():
            return reason
    return text


def _init(args: argparse.Namespace, directory: Path) -> int:
    store, created = PKIStore.open_or_init(
        directory,
        key_type=KeyType.parse(args.key_type) if args.key_type else None,
        ocsp_url=args.ocsp_url,
        crl_url=args.crl_url,
        force=args.force,
        client_validity=args.validity,
    )
    if not created:
        print(f"reusing the PKI already in {directory} ({store.key_type.value} keys, "
              f"{len(store.entries())} certificates); `{PROG} init --force {directory}` "
              "replaces it")
        return 0
    print(f"created a PKI with {store.key_type.value} keys in {directory}:")
    print(f"  CA                {directory / 'ca.pem'}")
    for entry in store.entries():
        print(f"  {entry.kind.value:<6} {entry.name:<10} {directory / entry.path}")
    print(f"  CRL               {directory / 'crl.pem'}")
    print(f"  index             {directory / 'index.json'} ({directory / 'index.txt'})")
    return 0


def _issue_client(args: argparse.Namespace, directory: Path) -> int:
    store = PKIStore.open(directory)
    entry = store.issue_client(
        args.name, emails=args.email, uris=args.uri, dns=args.dns, days=args.days,
        validity=args.validity, key_type=KeyType.parse(args.key_type) if args.key_type else None,
        passphrase=_encryption(args),
    )
    _report("issued", directory, entry)
    return 0


def _issue_server(args: argparse.Namespace, directory: Path) -> int:
    store = PKIStore.open(directory)
    entry = store.issue_server(
        args.hosts, name=args.name, days=args.days, validity=args.validity,
        key_type=KeyType.parse(args.key_type) if args.key_type else None,
        passphrase=_encryption(args),
    )
    _report("issued", directory, entry)
    return 0


def _renew(args: argparse.Namespace, directory: Path) -> int:
    store = PKIStore.open(directory)
    passphrase = (_encryption(args) if args.encrypt_key
                   else _passphrase(args, confirm=False))
    entry = store.renew(args.name, days=args.days, validity=args.validity,
                        keep_key=args.keep_key, passphrase=passphrase,
                        encrypt_key=args.encrypt_key)
    _report("renewed", directory, entry)
    return 0


def _export(args: argparse.Namespace, directory: Path) -> int:
    if args.p12 is None and args.key is None:
        raise ValueError("export needs --p12 FILE, --key FILE, or both")
    store = PKIStore.open(directory)
    entry = store.export(args.name, _passphrase(args, confirm=True), p12=args.p12, key=args.key)
    written = [f"{path} ({kind})" for path, kind in
               ((args.p12, "PKCS#12"), (args.key, "encrypted PEM key")) if path is not None]
    print(f"exported {entry.kind.value} certificate {entry.name!r} (serial "
          f"{entry.serial_hex}): {', '.join(written)}")
    return 0


def _revoke(args: argparse.Namespace, directory: Path) -> int:
    store = PKIStore.open(directory)
    entry = store.revoke(args.target, args.reason, crl_days=args.crl_days)
    crl_file = directory / CRL
    print(f"revoked {entry.kind.value} certificate {entry.name!r} (serial {entry.serial_hex}, "
          f"reason {args.reason}); wrote {crl_file} (CRL number {store.crl_number})")
    if entry.revocation_reason is x509.ReasonFlags.key_compromise:
        for other in store.same_key(entry):
            print(f"also revoked {other.kind.value} certificate {other.name!r} (serial "
                  f"{other.serial_hex}): same key")
        print(f"that key will never be certified again; `{PROG} renew {entry.name}` issues "
              "a certificate with a new key")
    print("servers see the revocation:")
    print(f"  with --crl {crl_file}: within --watch-interval (default 5 s), or at SIGHUP")
    if store.crl_url:
        print(f"  with --crl-fetch on (CRL from {store.crl_url}): when the CRL they hold "
              f"expires, by {_time(store.crl_expires_by)} at the latest, or at SIGHUP")
    minutes = DEFAULT_OCSP_VALIDITY // datetime.timedelta(minutes=1)
    print(f"  by OCSP (twistd certsrv-ocsp --pki {directory}): at once for new lookups; within "
          f"{minutes} minutes for a server holding a 'good' answer (the responder's default "
          "--validity), or at SIGHUP")
    return 0


def _crl(args: argparse.Namespace, directory: Path) -> int:
    store = PKIStore.open(directory)
    crl = store.write_crl(days=args.days)
    print(f"wrote {directory / 'crl.pem'} (CRL number {store.crl_number}, "
          f"{len(list(crl))} revoked, next update {_time(crl.next_update_utc)})")
    return 0


def _list(args: argparse.Namespace, directory: Path) -> int:
    store = PKIStore.open(directory)
    now = datetime.datetime.now(datetime.UTC)
    rows = [("NAME", "KIND", "SERIAL", "NOT_AFTER", "STATUS", "FINGERPRINT")]
    rows += [
        (entry.name, entry.kind.value, entry.serial_hex, _time(entry.not_after),
         entry.status_at(now).value, entry.fingerprint[:16])
        for entry in store.entries()
    ]
    _print_table(rows)
    return 0


def _print_table(rows: Sequence[tuple[str, ...]]) -> None:
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
              .rstrip())


def _report(verb: str, directory: Path, entry: Entry) -> None:
    print(f"{verb} {entry.kind.value} certificate {entry.name!r} (serial {entry.serial_hex}, "
          f"expires {_time(entry.not_after)}): {directory / entry.path}, "
          f"{directory / (entry.key_path or '')}")


def _time(when: datetime.datetime | None) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ") if when is not None else "-"


if __name__ == "__main__":
    raise SystemExit(main())
