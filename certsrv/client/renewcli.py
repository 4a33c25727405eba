"""
``certsrv-client renew``: renew the client certificate now, over EST (RFC 7030 simplereenroll).

Exit status: 0 renewed (or, with ``--if-due``, not due yet), 1 the EST server refused,
2 the connection failed or a local file is unusable, 130 interrupted.
"""

from __future__ import annotations

import argparse
import datetime
import sys
from collections.abc import Sequence
from typing import Any, TextIO

from twisted.internet.task import react

from certsrv.client.http import explain, http_client, printable
from certsrv.client.renew import DEFAULT_FRACTION, RenewalError, due, renew_at
from certsrv.exceptions import ConfigurationError

__all__ = ["main"]

_PROG = "certsrv-client renew"


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError("must be between 0 and 1, e.g. 0.33")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=_PROG,
        description="Renew a client certificate over EST (RFC 7030): make a new key, send "
        "a request for it with the current certificate's subject and SANs, authenticated by "
        "the current certificate, and replace --cert and --key with the answer.",
        epilog="Exit status: 0 renewed (or not due with --if-due), 1 refused by the server, "
        "2 a failed connection or an unusable local file.",
    )
    parser.add_argument("url", metavar="URL",
                        help="the EST server, e.g. https://127.0.0.1:8443 (the "
                        "/.well-known/est/simplereenroll path is added)")
    parser.add_argument("--cert", metavar="FILE", required=True,
                        help="the current client certificate; replaced by the new one")
    parser.add_argument("--key", metavar="FILE",
                        help="its private key; replaced by the new key (mode 0600). Without "
                        "it, the --cert file holds both and is replaced in one step")
    parser.add_argument("--ca", metavar="FILE",
                        help="CA certificate(s) the EST server's certificate must be issued "
                        "by (default: the system's trusted CAs)")
    parser.add_argument("--if-due", action="store_true",
                        help="renew only when less than --fraction of the validity is left")
    parser.add_argument("--fraction", type=_fraction, default=DEFAULT_FRACTION,
                        help="with --if-due: renew once less than this fraction of the "
                        "validity is left (default: 1/3)")
    parser.add_argument("--timeout", metavar="S", type=float, default=30.0,
                        help="give up after S seconds (default: 30)")
    return parser


def _say(stream: TextIO, line: str) -> None:
    stream.write(f"{printable(line)}\n")
    stream.flush()


async def _renew(reactor: Any, options: argparse.Namespace) -> int:
    try:
        client = http_client(reactor, cert=options.cert, key=options.key, ca=options.ca,
                             timeout=options.timeout, renew_url=options.url,
                             renew_fraction=options.fraction)
    except ConfigurationError as problem:
        _say(sys.stderr, f"{_PROG}: {explain(problem).sentence}")
        return 2
    except ValueError as problem:  # the URL
        _say(sys.stderr, f"{_PROG}: {problem}")
        return 2
    renewal = client.renewal  # type: ignore[attr-defined]
    current = renewal.certificate
    if options.if_due and not due(current, reactor.seconds(), options.fraction):
        when = datetime.datetime.fromtimestamp(renew_at(current, options.fraction),
                                               datetime.UTC)
        _say(sys.stdout, f"not due: {options.cert} renews from {when:%Y-%m-%dT%H:%M:%SZ}")
        return 0
    try:
        renewed = await renewal.renew()
    except RenewalError as problem:
        _say(sys.stderr, f"{_PROG}: {problem}")
        return 1
    except Exception as failure:
        _say(sys.stderr, f"{_PROG}: {explain(failure, sent_certificate=True).sentence}")
        return 2
    _say(sys.stdout, f"renewed {options.cert}: serial {renewed.serial}, valid until "
                     f"{renewed.not_after:%Y-%m-%dT%H:%M:%SZ}")
    return 0


async def _run(reactor: Any, options: argparse.Namespace) -> None:
    try:
        status = await _renew(reactor, options)
    except Exception as unexpected:  # a bug here must still not print a traceback
        _say(sys.stderr, f"{_PROG}: unexpected error: {type(unexpected).__name__}: {unexpected}")
        status = 2
    raise SystemExit(status)


def main(argv: Sequence[str]) -> int:
    """Run ``certsrv-client renew`` with ``argv`` (the arguments after ``renew``)."""
    try:
        options = _parser().parse_args(argv)
    except SystemExit as stop:
        return stop.code if isinstance(stop.code, int) else 2
    try:
        react(_run, (options,))
    except SystemExit as stop:
        return stop.code if isinstance(stop.code, int) else 2
    return 0
