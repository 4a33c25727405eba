"""
``certsrv-client``: make one HTTPS request presenting a client certificate.

Exit status: 0 for a 2xx answer, 1 for any other HTTP status, 2 when the connection is
rejected (TLS alert, untrusted server, refused, timeout) or a local file is unusable,
130 when interrupted.
Failures are one line on stderr, never a traceback.  Redirects are not followed.  What the
server sent is printed without terminal control sequences (the body only when stdout is a
terminal; piped, it is passed on unchanged).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, BinaryIO, TextIO, cast

from treq.client import HTTPClient
from treq.content import content
from twisted.internet import defer
from twisted.internet.task import react
from twisted.logger import ILogObserver, formatEvent, globalLogPublisher
from twisted.web.http_headers import Headers
from twisted.web.iweb import IResponse

from certsrv.client import renewcli
from certsrv.client.http import Explanation, HTTPStatusError, explain, http_client, printable
from certsrv.exceptions import ConfigurationError
from certsrv.x509.passphrase import Passphrase

__all__ = ["main"]

_PROG = "certsrv-client"
_DEFAULT_TIMEOUT = 30.0


def _header(text: str) -> tuple[str, str]:
    """Parse ``'Name: value'``."""
    name, colon, value = text.partition(":")
    if not colon or not name.strip() or name != name.strip():
        raise argparse.ArgumentTypeError(f"expected 'Name: value', got {text!r}")
    return name, value.strip()


def _timeout(text: str) -> float:
    """Parse a positive number of seconds."""
    try:
        seconds = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not seconds > 0:
        raise argparse.ArgumentTypeError("the timeout must be more than 0 seconds")
    return seconds


def _parser() -> argparse.ArgumentParser:
    """Build the command-line parser."""
    parser = argparse.ArgumentParser(
        prog=_PROG,
        description="Make an HTTPS request presenting a client certificate (mutual TLS), "
        "and explain in plain words why a server rejects it.",
        epilog="Exit status: 0 for 2xx, 1 for other HTTP statuses, 2 for a rejected "
        "connection or an unusable local file.",
    )
    parser.add_argument("url", metavar="URL", help="https:// URL to request")
    parser.add_argument("--cert", metavar="FILE", required=True,
                        help="client certificate, PEM (leaf first, then intermediates), or a "
                        "PKCS#12 file (.p12/.pfx) holding certificate, chain and key")
    parser.add_argument("--key", metavar="FILE",
                        help="private key of the certificate, PEM or DER, encrypted or not "
                        "(default: the key in the --cert file)")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--key-passphrase-env", metavar="NAME",
                        help="read the passphrase of an encrypted key or PKCS#12 file from "
                        "environment variable NAME")
    source.add_argument("--key-passphrase-file", metavar="PATH",
                        help="read it from the first line of file PATH (default for both: "
                        "ask on the terminal, if there is one)")
    parser.add_argument("--ca", metavar="FILE",
                        help="CA certificate(s) the server's certificate must be issued by "
                        "(default: the system's trusted CAs)")
    parser.add_argument("--intermediates", metavar="FILE",
                        help="intermediate CA certificates to send after the client certificate")
    parser.add_argument("--method", default="GET", help="HTTP method (default: GET)")
    parser.add_argument("--header", metavar="'K: V'", type=_header, action="append", default=[],
                        help="add a request header; repeatable")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object (status, headers, body, or the error) "
                        "instead of the status line and body")
    parser.add_argument("--timeout", metavar="S", type=_timeout, default=_DEFAULT_TIMEOUT,
                        help=f"give up after S seconds (default: {_DEFAULT_TIMEOUT:g})")
    return parser


def _status_line(response: IResponse) -> str:
    """Return e.g. ``HTTP/1.1 200 OK``, without control characters from the server."""
    protocol, major, minor = response.version
    phrase = printable(response.phrase.decode("latin-1"))
    return f"{protocol.decode('ascii')}/{major}.{minor} {response.code} {phrase}".rstrip()


def _headers(response: IResponse) -> dict[str, list[str]]:
    """Return the response headers as lowercase names to values."""
    return {
        name.decode("latin-1").lower(): [v.decode("latin-1") for v in values]
        for name, values in response.headers.getAllRawHeaders()
    }


def _json_body(body: bytes, content_type: str) -> Any:
    """Decode a body for JSON output: parsed if it is JSON, text otherwise."""
    text = body.decode("utf-8", "replace")
    if "json" in content_type:
        try:
            return json.loads(text)
        except (ValueError, RecursionError):
            pass
    return text


def _json_line(value: object) -> bytes:
    """``value`` as one line of JSON; any control or invisible character in it escaped."""
    text = json.dumps(value, ensure_ascii=False)
    if not text.isprintable():  # DEL, C1, bidi overrides, U+2028... which json leaves raw
        text = json.dumps(value)
    return text.encode("utf-8") + b"\n"


def _terminal_body(body: bytes) -> bytes:
    """A body for a terminal: UTF-8 text without escape sequences or control characters."""
    return printable(body.decode("utf-8", "replace"), lines=True).encode("utf-8")


class _Output:
    """Where results go: stdout (binary, for bodies) and stderr (one-line complaints)."""

    def __init__(self, stdout: BinaryIO, stderr: TextIO, as_json: bool) -> None:
        self.stdout = stdout
        self.stderr = stderr
        self.as_json = as_json

    def complain(self, explanation: Explanation, *, document: bool = True) -> None:
        """Print the one-line explanation on stderr (and as JSON on stdout with --json)."""
        if self.as_json and document:
            self.document({"error": explanation.code, "sentence": explanation.sentence,
                           "status": explanation.http_status})
        self.say(explanation.sentence)

    def say(self, line: str) -> None:
        """Print one line on stderr, prefixed with the program's name."""
        self.stderr.write(f"{_PROG}: {printable(line)}\n")
        self.stderr.flush()

    def document(self, value: object) -> None:
        """Print ``value`` as one JSON line on stdout."""
        self.stdout.write(_json_line(value))
        self.stdout.flush()

    def response(self, response: IResponse, body: bytes) -> None:
        """Print the status line and body (or one JSON object)."""
        content_type = (response.headers.getRawHeaders("content-type") or [""])[0]
        if self.as_json:
            self.document({"status": response.code,
                           "reason": response.phrase.decode("latin-1"),
                           "headers": _headers(response),
                           "body": _json_body(body, content_type)})
            return
        self.stdout.write(_status_line(response).encode("latin-1") + b"\n")
        self.stdout.write(_terminal_body(body) if _is_terminal(self.stdout) else body)
        self.stdout.flush()


def _is_terminal(stream: BinaryIO) -> bool:
    """Whether ``stream`` is a terminal (control sequences in it would act on the screen)."""
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


@contextmanager
def _key_warnings(output: _Output) -> Iterator[None]:
    """Print the client library's warnings (a key readable by others) as lines on stderr."""

    def observer(event: dict[str, Any]) -> None:
        if event.get("log_namespace") == "certsrv.client" and event.get("reason") == "key_exposed":
            output.say(f"warning: {formatEvent(event)}")

    watcher = cast(ILogObserver, observer)
    globalLogPublisher.addObserver(watcher)
    try:
        yield
    finally:
        globalLogPublisher.removeObserver(watcher)


def _passphrase(options: argparse.Namespace) -> Passphrase:
    """Where an encrypted key's passphrase comes from; never the command line itself."""
    if options.key_passphrase_env is not None:
        return Passphrase.from_env(options.key_passphrase_env)
    if options.key_passphrase_file is not None:
        return Passphrase.from_file(options.key_passphrase_file)
    return Passphrase.prompt("give --key-passphrase-env NAME or --key-passphrase-file PATH")


def _trusted(options: argparse.Namespace) -> str:
    """Which CAs this run trusts, for "not issued by ..."."""
    if options.ca is None:
        return "a CA the system trusts (no --ca was given)"
    return f"the CA in {options.ca} (--ca)"


async def _fetch(client: HTTPClient, options: argparse.Namespace) -> tuple[IResponse, bytes]:
    """Send the request and read the whole answer."""
    headers = Headers()
    for name, value in options.header:
        headers.addRawHeader(name, value)
    response = await client.request(options.method, options.url, headers=headers,
                                    allow_redirects=False)
    body = await content(response)
    return response, body


async def _exchange(reactor: Any, options: argparse.Namespace, output: _Output) -> int:
    """Make the request; print the answer or the reason it failed; return the exit status."""
    try:
        with _key_warnings(output):
            client = http_client(reactor, cert=options.cert, key=options.key, ca=options.ca,
                                 intermediates=options.intermediates, timeout=options.timeout,
                                 passphrase=_passphrase(options))
    except ConfigurationError as problem:
        output.complain(explain(problem))
        return 2
    interrupted: list[bool] = []
    reactor.addSystemEventTrigger("before", "shutdown", interrupted.append, True)
    request = defer.Deferred.fromCoroutine(_fetch(client, options))
    try:
        response, body = await request
    except Exception as failure:
        if interrupted:  # Ctrl-C: the reactor is closing our connection, not the server
            output.stderr.write(f"{_PROG}: interrupted\n")
            return 130
        output.complain(explain(failure, sent_certificate=True, trusted=_trusted(options)))
        return 2
    output.response(response, body)
    if 200 <= response.code < 300:
        return 0
    content_type = (response.headers.getRawHeaders("content-type") or [""])[0]
    status = HTTPStatusError(response.code, response.phrase.decode("latin-1"), body, content_type)
    output.complain(explain(status), document=False)  # the JSON answer is already out
    return 1


async def _run(reactor: Any, options: argparse.Namespace, output: _Output) -> None:
    """Run the exchange under react(), ending with SystemExit(status)."""
    try:
        status = await _exchange(reactor, options, output)
    except Exception as unexpected:  # a bug here must still not print a traceback
        output.say(f"unexpected error: {type(unexpected).__name__}: {unexpected}")
        status = 2
    raise SystemExit(status)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``certsrv-client`` with ``argv`` (default: sys.argv[1:]); return the exit status."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] == ["renew"]:  # no URL is "renew": URLs start with https://
        return renewcli.main(arguments[1:])
    parser = _parser()
    try:
        options = parser.parse_args(argv)
    except SystemExit as stop:
        return stop.code if isinstance(stop.code, int) else 2
    if not options.url.lower().startswith("https://"):
        sys.stderr.write(f"{_PROG}: the URL must start with https:// "
                         "(a client certificate needs TLS)\n")
        return 2
    output = _Output(sys.stdout.buffer, sys.stderr, options.json)
    try:
        react(_run, (options, output))
    except SystemExit as stop:
        return stop.code if isinstance(stop.code, int) else 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
