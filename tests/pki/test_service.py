"""The ``twistd certsrv-ocsp`` plugin: options, index-driven answers, openssl, a real twistd."""

from __future__ import annotations

import base64
import contextlib
import datetime
import hashlib
import os
import re
import shutil
import signal
import sys
from pathlib import Path
from typing import Any, cast
from urllib.parse import quote

import treq
from cryptography import x509
from cryptography.x509 import ocsp
from twisted.application.service import IServiceMaker, MultiService
from twisted.internet import reactor
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.error import ProcessExitedAlready
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.task import Clock
from twisted.internet.utils import getProcessOutputAndValue
from twisted.plugin import getPlugins
from twisted.python import usage
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.http import datetimeToString
from twisted.web.server import Site
from twisted.web.test.requesthelper import DummyRequest

import certsrv
from certsrv.exceptions import ConfigurationError
from certsrv.pki import IssuedCertificate
from certsrv.pki import service as _ocsptap
from certsrv.pki.responder import OCSPResource
from certsrv.pki.store import INDEX, PKIStore
from certsrv.revocation.ocsp import (
    CertStatus,
    OCSPStatus,
    build_request,
    new_nonce,
    verify_response,
)
from certsrv.tls.context import TLSFactory
from tests._support import DAY, clock_at_now, utcnow

OPENSSL = shutil.which("openssl")
_REQUEST_HEADERS: dict[bytes | str, list[bytes | str]] = {
    b"content-type": [b"application/ocsp-request"]}
_REPO = os.path.dirname(os.path.dirname(os.path.abspath(certsrv.__file__)))


def make_pki(directory: str) -> PKIStore:
    """A fresh certsrv-pki directory (CA, server, client, OCSP responder) made now."""
    return PKIStore.init(directory)


def parse(argv: list[str], clock: Any = None) -> _ocsptap.Options:
    """Parse ``argv`` as ``twistd certsrv-ocsp`` would, against ``clock`` (default: now)."""
    options = _ocsptap.Options()
    options.clock = clock if clock is not None else clock_at_now()
    options.parseOptions(argv)
    return options


def resource_of(service: MultiService) -> tuple[Site, OCSPResource]:
    """The site every listener of ``service`` serves, and its OCSP resource."""
    sites = {id(child.factory): child.factory for child in service if hasattr(child, "factory")}
    if len(sites) != 1:
        raise AssertionError(f"expected one site, got {len(sites)}")
    site = cast(Site, next(iter(sites.values())))
    return site, cast(OCSPResource, site.resource)


def load(directory: str, name: str) -> x509.Certificate:
    """The first certificate in ``directory``/``name``."""
    return x509.load_pem_x509_certificates(Path(directory, name).read_bytes())[0]


def ask(resource: OCSPResource, cert: x509.Certificate, issuer: x509.Certificate,
        now: datetime.datetime) -> OCSPStatus:
    """Ask ``resource`` (no network) about ``cert`` with a nonce; verify the answer."""
    nonce = new_nonce()
    der = resource.respond(build_request(cert, issuer, nonce))
    return verify_response(der, cert, issuer, now=now, nonce=nonce, nonce_policy="require")


class OptionsTests(SynchronousTestCase):
    """Options become a responder; bad ones stop startup with one clear line."""

    def setUp(self) -> None:
        self.dir = self.mktemp()
        self.store = make_pki(self.dir)

    def assertStartupError(self, argv: list[str], *fragments: str, clock: Any = None) -> None:
        with self.assertRaises(ConfigurationError) as caught:
            parse(argv, clock)
        message = str(caught.exception)
        self.assertNotIn("\n", message)
        for fragment in fragments:
            self.assertIn(fragment, message)

    def test_plugin_is_discoverable(self) -> None:
        """``getPlugins`` finds ``certsrv-ocsp``, backed by certsrv.pki.service."""
        import twisted.plugins

        makers = {p.tapname: p for p in getPlugins(IServiceMaker, twisted.plugins)}
        self.assertIn("certsrv-ocsp", makers)
        maker = makers["certsrv-ocsp"]
        self.assertIsInstance(maker.options(), _ocsptap.Options)
        self.assertIs(maker.makeService, _ocsptap.makeService)

    def test_defaults(self) -> None:
        """Loopback port 8080, five-minute answers, the ``certs`` directory."""
        self.assertEqual(_ocsptap.Options()["pki"], "certs")
        options = parse(["--pki", self.dir])
        self.assertEqual(options["listen"], ["tcp:8080:interface=127.0.0.1"])
        self.assertEqual(options["validity"], 300)
        responder = options["responder"]
        self.assertEqual(responder.issuer, self.store.ca.certificate)
        self.assertEqual(responder.certificate, load(self.dir, "ocsp.pem"))

    def test_make_service(self) -> None:
        """Each --listen serves the same OCSP resource; --validity sets nextUpdate."""
        clock = clock_at_now()
        options = parse(["--pki", self.dir, "--validity", "60",
                         "--listen", "tcp:0:interface=127.0.0.1",
                         "--listen", "tcp:0:interface=127.0.0.1"], clock)
        service = cast(MultiService, _ocsptap.makeService(options))
        self.assertIsInstance(service, MultiService)
        kinds = sorted(type(child).__name__ for child in service)
        self.assertEqual(kinds, ["Listener", "Listener", "_Announcement"])
        _site, resource = resource_of(service)
        now = datetime.datetime.fromtimestamp(int(clock.seconds()), datetime.UTC)
        status = ask(resource, load(self.dir, "client.pem"), self.store.ca.certificate, now)
        self.assertEqual(status.status, CertStatus.GOOD)
        self.assertEqual(status.this_update, now)
        self.assertEqual(status.next_update, now + datetime.timedelta(seconds=60))

    def test_bad_values_are_usage_errors(self) -> None:
        """A validity under one second or not a number, an endpoint that does not parse."""
        for argv in (["--validity", "0"], ["--validity", "-5"], ["--validity", "soon"],
                     ["--listen", "foo:1"], ["--listen", "tcp:80:bogus=1"], ["--listen", "tcp"]):
            self.assertRaises(usage.UsageError, parse, ["--pki", self.dir, *argv])

    def test_validity_durations(self) -> None:
        """--validity takes seconds or a duration (90s, 5m, 1h); bad ones say why."""
        for text, seconds in (("90", 90), ("90s", 90), ("5m", 300), ("1h", 3600), ("1d", 86400)):
            self.assertEqual(parse(["--pki", self.dir, "--validity", text])["validity"], seconds)
        for text, problem in (
            ("0", "must be at least 1 second"),
            ("0m", "must be at least 1 second"),
            ("5M", "expected a whole number and a unit (s, m, h or d), e.g. 90s, 10m, 8h, 30d"),
            ("1.5m", "expected a whole number and a unit (s, m, h or d), e.g. 90s, 10m, 8h, 30d"),
        ):
            error = self.assertRaises(usage.UsageError, parse,
                                      ["--pki", self.dir, "--validity", text])
            self.assertTrue(str(error).endswith(f"invalid duration {text!r}: {problem}"), error)

    def test_est_alias_and_options(self) -> None:
        """``certsrv-pki-service`` is the same plugin; --est adds a TLS listener."""
        import twisted.plugins

        makers = {p.tapname: p for p in getPlugins(IServiceMaker, twisted.plugins)}
        self.assertIs(makers["certsrv-pki-service"].makeService, _ocsptap.makeService)
        options = parse(["--pki", self.dir, "--listen", "tcp:0:interface=127.0.0.1",
                         "--est", "tcp:0:interface=127.0.0.1", "--est-max-renewals", "5",
                         "--est-validity", "8h"])
        service = cast(MultiService, _ocsptap.makeService(options))
        est = [child for child in service if getattr(child, "option", None) == "--est"]
        self.assertEqual(len(est), 1)
        self.assertIsInstance(est[0].factory, TLSFactory)

    def test_bad_est_values(self) -> None:
        """An ssl: endpoint (it cannot ask for client certificates), no renewals at all."""
        error = self.assertRaises(usage.UsageError, parse,
                                  ["--pki", self.dir, "--est", "ssl:0:privateKey=x.key"])
        self.assertIn("give a tcp: endpoint", str(error))
        for argv in (["--est-max-renewals", "0"], ["--est-validity", "8"],
                     ["--est", "tcp"]):
            self.assertRaises(usage.UsageError, parse, ["--pki", self.dir, *argv])

    def test_no_such_directory(self) -> None:
        """A directory that does not exist is named, with how to make one."""
        missing = os.path.join(self.dir, "nope")
        self.assertStartupError(["--pki", missing], missing, "no such directory",
                                "certsrv-pki init")

    def test_not_a_pki(self) -> None:
        """A directory without a PKI is named, with what is missing."""
        empty = self.mktemp()
        os.mkdir(empty)
        self.assertStartupError(["--pki", empty], empty, "not a certsrv PKI directory")

    def test_missing_responder(self) -> None:
        """No ocsp.pem or no ocsp.key: the missing file is named."""
        os.unlink(os.path.join(self.dir, "ocsp.key"))
        self.assertStartupError(["--pki", self.dir], os.path.join(self.dir, "ocsp.key"),
                                "does not exist")
        os.unlink(os.path.join(self.dir, "ocsp.pem"))
        self.assertStartupError(["--pki", self.dir], os.path.join(self.dir, "ocsp.pem"),
                                "does not exist")

    def test_key_not_matching(self) -> None:
        """An ocsp.key that is not the certificate's key is refused (and not echoed)."""
        shutil.copy(os.path.join(self.dir, "client.key"), os.path.join(self.dir, "ocsp.key"))
        self.assertStartupError(["--pki", self.dir], "ocsp.key", "does not match")

    def test_responder_without_ocsp_signing(self) -> None:
        """A certificate without id-kp-OCSPSigning cannot answer for the CA."""
        for suffix in ("pem", "key"):
            shutil.copy(os.path.join(self.dir, f"client.{suffix}"),
                        os.path.join(self.dir, f"ocsp.{suffix}"))
        self.assertStartupError(["--pki", self.dir], "ocsp.pem", "id-kp-OCSPSigning")

    def test_responder_of_another_ca(self) -> None:
        """A responder certificate from another CA is refused."""
        other = make_pki(self.mktemp())
        for suffix in ("pem", "key"):
            shutil.copy(other.path / f"ocsp.{suffix}", os.path.join(self.dir, f"ocsp.{suffix}"))
        self.assertStartupError(["--pki", self.dir], "ocsp.pem", "not issued by the CA")

    def test_expired_responder(self) -> None:
        """An expired responder certificate is refused, with how to renew it."""
        clock = Clock()
        clock.advance((utcnow() + 400 * DAY).timestamp())
        self.assertStartupError(["--pki", self.dir], "ocsp.pem", "expired",
                                "certsrv-pki renew ocsp", clock=clock)


class IndexTests(SynchronousTestCase):
    """Answers follow index.json as other processes change it, without a restart."""

    def setUp(self) -> None:
        self.dir = self.mktemp()
        self.store = make_pki(self.dir)
        self.clock = clock_at_now()
        self.resource = _ocsptap.make_resource(parse(["--pki", self.dir], self.clock))
        self.issuer = self.store.ca.certificate
        self.client = load(self.dir, "client.pem")

    def ask(self, cert: x509.Certificate) -> OCSPStatus:
        now = datetime.datetime.fromtimestamp(self.clock.seconds(), datetime.UTC)
        return ask(self.resource, cert, self.issuer, now)

    def test_revocation_is_seen(self) -> None:
        """good, then ``revoke`` from another PKIStore (as the CLI does), then revoked."""
        self.assertEqual(self.ask(self.client).status, CertStatus.GOOD)
        entry = PKIStore.open(self.dir).revoke("client", "keyCompromise")
        status = self.ask(self.client)
        self.assertEqual(status.status, CertStatus.REVOKED)
        self.assertEqual(status.revocation_time, entry.revoked_at)
        self.assertEqual(status.revocation_reason, x509.ReasonFlags.key_compromise)

    def test_revocation_is_seen_with_the_same_mtime(self) -> None:
        """A change within one mtime tick (coarse-timestamp filesystems) is still seen."""
        index = Path(self.dir, INDEX)
        self.assertEqual(self.ask(self.client).status, CertStatus.GOOD)
        before = index.stat()
        PKIStore.open(self.dir).revoke("client")
        os.utime(index, ns=(before.st_atime_ns, before.st_mtime_ns))
        self.assertEqual(index.stat().st_mtime_ns, before.st_mtime_ns)
        self.assertEqual(self.ask(self.client).status, CertStatus.REVOKED)

    def test_new_certificates_are_seen(self) -> None:
        """A certificate issued after startup is good, not unknown."""
        self.assertEqual(self.ask(self.client).status, CertStatus.GOOD)
        PKIStore.open(self.dir).issue_client("bob")
        self.assertEqual(self.ask(load(self.dir, "clients/bob.pem")).status, CertStatus.GOOD)

    def test_unknown_serial(self) -> None:
        """A certificate of the CA that the index does not hold: unknown."""
        ghost = self.store.ca.issue_client("ghost")
        self.assertEqual(self.ask(ghost.certificate).status, CertStatus.UNKNOWN)

    def test_superseded_and_expired_stay_good(self) -> None:
        """A renewed-away or expired certificate is not revoked: good."""
        PKIStore.open(self.dir).renew("client")
        self.assertEqual(self.ask(self.client).status, CertStatus.GOOD)
        self.clock.advance(200 * DAY.total_seconds())
        now = datetime.datetime.fromtimestamp(self.clock.seconds(), datetime.UTC)
        # The responder certificate itself has not expired yet, so verification still works.
        self.assertEqual(ask(self.resource, self.client, self.issuer, now).status,
                         CertStatus.GOOD)


def _port_of(port: Any) -> int:
    return cast(IPv4Address, port.getHost()).port


class ServeTests(TestCase):
    """makeService's site on 127.0.0.1, asked by treq and by ``openssl ocsp``."""

    timeout = 30

    def setUp(self) -> None:
        self.dir = self.mktemp()
        self.store = make_pki(self.dir)
        options = parse(["--pki", self.dir, "--listen", "tcp:0:interface=127.0.0.1"],
                        clock=reactor)
        site, _resource = resource_of(cast(MultiService, _ocsptap.makeService(options)))
        port = reactor.listenTCP(0, cast(Any, site),  # type: ignore[attr-defined]
                                 interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.url = f"http://127.0.0.1:{_port_of(port)}"
        self.issuer = self.store.ca.certificate
        self.client = load(self.dir, "client.pem")

    async def post(self, cert: x509.Certificate) -> OCSPStatus:
        nonce = new_nonce()
        response = await treq.post(self.url + "/", data=build_request(cert, self.issuer, nonce),
                                   headers=_REQUEST_HEADERS, persistent=False)
        self.assertEqual(response.code, 200)
        self.assertEqual(response.headers.getRawHeaders(b"content-type"),
                         [b"application/ocsp-response"])
        body = await treq.content(response)
        parsed = ocsp.load_der_ocsp_response(body)
        self.assertEqual(parsed.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce,
                         nonce)
        return verify_response(body, cert, self.issuer, now=utcnow(), nonce=nonce,
                               nonce_policy="prefer")

    async def get(self, cert: x509.Certificate) -> OCSPStatus:
        encoded = base64.b64encode(build_request(cert, self.issuer, None))
        response = await treq.get(f"{self.url}/{quote(encoded, safe='')}", persistent=False)
        self.assertEqual(response.code, 200)
        body = await treq.content(response)
        return verify_response(body, cert, self.issuer, now=utcnow(), nonce=None,
                               nonce_policy="prefer")

    async def test_good_then_revoked(self) -> None:
        """POST with a nonce: good; after ``revoke``, revoked; the site was never restarted."""
        self.assertEqual((await self.post(self.client)).status, CertStatus.GOOD)
        self.assertEqual((await self.get(self.client)).status, CertStatus.GOOD)
        PKIStore.open(self.dir).revoke("client", "superseded")
        status = await self.post(self.client)
        self.assertEqual((status.status, status.revocation_reason),
                         (CertStatus.REVOKED, x509.ReasonFlags.superseded))
        self.assertEqual((await self.get(self.client)).status, CertStatus.REVOKED)

    async def test_unknown(self) -> None:
        """A serial the index does not hold: unknown, by POST and by GET."""
        ghost: IssuedCertificate = self.store.ca.issue_client("ghost")
        self.assertEqual((await self.post(ghost.certificate)).status, CertStatus.UNKNOWN)
        self.assertEqual((await self.get(ghost.certificate)).status, CertStatus.UNKNOWN)

    async def test_openssl_good_then_revoked(self) -> None:
        """``openssl ocsp -url`` verifies the answer: good, then revoked after ``revoke``."""
        if OPENSSL is None:
            self.skipTest("the openssl command is not installed")
        out = await openssl_ocsp(self, self.dir, self.url)
        self.assertIn("client.pem: good\n", out)
        # Issue 12 item 2: answers are valid five minutes, so a cached "good" soon expires.
        self.assertEqual(_validity_of(out), datetime.timedelta(minutes=5))
        PKIStore.open(self.dir).revoke("client", "keyCompromise")
        out = await openssl_ocsp(self, self.dir, self.url)
        self.assertIn("client.pem: revoked\n", out)
        self.assertIn("Reason: keyCompromise", out)

    async def test_openssl_key_compromise_revokes_earlier_serial(self) -> None:
        """Issue 16 finding 4: after renew --keep-key and a keyCompromise revoke (the CLI, as
        processes), openssl hears 'revoked' for the earlier serial too."""
        if OPENSSL is None:
            self.skipTest("the openssl command is not installed")
        first = self.store.find("client")
        await certsrv_pki(self, "--dir", self.dir, "renew", "client", "--keep-key")
        earlier = os.path.join("newcerts", f"{first.serial_hex}.pem")
        self.assertIn(f"{earlier}: good\n", await openssl_ocsp(self, self.dir, self.url, earlier))
        out = await certsrv_pki(self, "--dir", self.dir, "revoke", "client", "--reason",
                                "keyCompromise")
        self.assertIn(f"also revoked client certificate 'client' (serial {first.serial_hex})",
                      out)
        for cert in (earlier, "client.pem"):
            answer = await openssl_ocsp(self, self.dir, self.url, cert)
            self.assertIn(f"{cert}: revoked\n", answer)
            self.assertIn("Reason: keyCompromise", answer)


async def openssl_ocsp(case: TestCase, directory: str, url: str, cert: str = "client.pem") -> str:
    """Ask ``url`` about the PKI's ``cert`` with ``openssl ocsp``; return its stdout."""
    assert OPENSSL is not None
    ca = os.path.join(directory, "ca.pem")
    out, err, code = await getProcessOutputAndValue(  # type: ignore[no-untyped-call]
        OPENSSL, ["ocsp", "-issuer", ca, "-cert", os.path.join(directory, cert),
                  "-url", url, "-CAfile", ca, "-resp_text"],
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")}, reactor=reactor)
    case.assertEqual(code, 0, err)
    case.assertIn(b"Response verify OK", err)
    case.assertIn(b"OCSP Nonce", out)
    return cast(bytes, out).decode()


def _validity_of(resp_text: str) -> datetime.timedelta:
    """nextUpdate minus thisUpdate, as ``openssl ocsp -resp_text`` prints them."""
    found = {}
    for field in ("This Update", "Next Update"):
        match = re.search(rf"{field}: (.+ GMT)", resp_text)
        assert match is not None, resp_text
        found[field] = datetime.datetime.strptime(match.group(1), "%b %d %H:%M:%S %Y %Z")
    return found["Next Update"] - found["This Update"]


async def certsrv_pki(case: TestCase, *argv: str) -> str:
    """Run ``certsrv-pki`` as a process; check it succeeded and return its stdout."""
    out, err, code = await getProcessOutputAndValue(  # type: ignore[no-untyped-call]
        sys.executable, ["-m", "certsrv.pki.cli", *argv],
        env={**os.environ, "PYTHONPATH": _REPO}, reactor=reactor)
    case.assertEqual((code, err), (0, b""))
    return cast(bytes, out).decode()


class CacheHeaderTests(TestCase):
    """Issue 16 finding 9: GET answers say how long HTTP caches may keep them (RFC 5019)."""

    timeout = 30

    def setUp(self) -> None:
        self.dir = self.mktemp()
        self.store = make_pki(self.dir)
        self.issuer = self.store.ca.certificate
        self.client = load(self.dir, "client.pem")
        # A clock on a whole second, so that max-age is exactly the validity.
        self.clock = Clock()
        self.clock.advance(float(int(utcnow().timestamp())))

    def serve(self, *argv: str) -> str:
        resource = _ocsptap.make_resource(parse(["--pki", self.dir, *argv], self.clock))
        port = reactor.listenTCP(0, cast(Any, Site(resource)),  # type: ignore[attr-defined]
                                 interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return f"http://127.0.0.1:{_port_of(port)}"

    async def test_get_headers(self) -> None:
        """max-age and Expires follow nextUpdate; Last-Modified is producedAt; ETag hashes."""
        for argv, seconds in (((), 300), (("--validity", "90s"), 90)):
            url = self.serve(*argv)
            encoded = base64.b64encode(build_request(self.client, self.issuer, None))
            response = await treq.get(f"{url}/{quote(encoded, safe='')}", persistent=False)
            body = await treq.content(response)
            self.assertEqual(response.code, 200)
            parsed = ocsp.load_der_ocsp_response(body)
            assert parsed.next_update_utc is not None
            self.assertEqual(parsed.next_update_utc - parsed.produced_at_utc,
                             datetime.timedelta(seconds=seconds))
            headers = response.headers
            self.assertEqual(headers.getRawHeaders(b"cache-control"),
                             [f"max-age={seconds}, public, no-transform, must-revalidate"
                              .encode()])
            self.assertEqual(headers.getRawHeaders(b"expires"),
                             [datetimeToString(parsed.next_update_utc.timestamp())])
            self.assertEqual(headers.getRawHeaders(b"last-modified"),
                             [datetimeToString(parsed.produced_at_utc.timestamp())])
            self.assertEqual(headers.getRawHeaders(b"etag"),
                             [b'"' + hashlib.sha256(body).hexdigest().encode() + b'"'])

    def test_max_age_counts_down_to_next_update(self) -> None:
        """max-age is what is left until nextUpdate when the answer is sent."""
        resource = _ocsptap.make_resource(parse(["--pki", self.dir], self.clock))
        self.clock.advance(0.75)  # signing uses whole seconds: thisUpdate is 0.75 s ago
        request = DummyRequest([base64.b64encode(
            build_request(self.client, self.issuer, None))])
        resource.render_GET(cast(Any, request))
        self.assertEqual(request.responseHeaders.getRawHeaders(b"cache-control"),
                         [b"max-age=299, public, no-transform, must-revalidate"])

    async def test_not_cached(self) -> None:
        """POST answers carry no caching headers; a malformed GET is no-store."""
        url = self.serve()
        response = await treq.post(url + "/", data=build_request(self.client, self.issuer, None),
                                   headers=_REQUEST_HEADERS, persistent=False)
        await treq.content(response)
        self.assertEqual(response.code, 200)
        for name in (b"cache-control", b"expires", b"etag", b"last-modified"):
            self.assertIsNone(response.headers.getRawHeaders(name), name)
        response = await treq.get(f"{url}/bm90LW9jc3A%3D", persistent=False)
        body = await treq.content(response)
        self.assertEqual(ocsp.load_der_ocsp_response(body).response_status,
                         ocsp.OCSPResponseStatus.MALFORMED_REQUEST)
        self.assertEqual(response.headers.getRawHeaders(b"cache-control"), [b"no-store"])
        self.assertIsNone(response.headers.getRawHeaders(b"expires"))


class _Twistd(ProcessProtocol):
    """A twistd process: ``listening`` fires with its port, ``ended`` with its exit code."""

    def __init__(self) -> None:
        self.listening: Deferred[int] = Deferred()
        self.ended: Deferred[int | None] = Deferred()
        self.output = b""

    def outReceived(self, data: bytes) -> None:
        self._saw(data)

    def errReceived(self, data: bytes) -> None:
        self._saw(data)

    def _saw(self, data: bytes) -> None:
        self.output += data
        found = re.search(rb"Site starting on (\d+)", self.output)
        if found and not self.listening.called:
            self.listening.callback(int(found.group(1)))

    def processEnded(self, reason: Failure) -> None:
        if not self.listening.called:
            self.listening.errback(RuntimeError(f"twistd exited: {self.output!r}"))
        self.ended.callback(getattr(reason.value, "exitCode", None))


class TwistdTests(TestCase):
    """A real ``twistd -n certsrv-ocsp`` answers openssl, and refuses bad config in one line."""

    timeout = 30

    def setUp(self) -> None:
        self.dir = os.path.abspath(self.mktemp())
        make_pki(self.dir)
        path = [_REPO, *(p for p in sys.path if p)]
        self.env = dict(os.environ, PYTHONPATH=os.pathsep.join(path))

    def twistd(self, *argv: str) -> list[str]:
        return [sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
                "-n", "--pidfile=", "certsrv-ocsp", *argv]

    async def test_bad_configuration_is_one_line(self) -> None:
        """No such directory: exit status 1 and one line on stderr, no traceback."""
        missing = os.path.join(self.dir, "missing")
        argv = self.twistd("--pki", missing)
        out, err, code = await getProcessOutputAndValue(  # type: ignore[no-untyped-call]
            argv[0], argv[1:], env=self.env, path=self.dir, reactor=reactor)
        self.assertEqual(code, 1)
        self.assertNotIn(b"Traceback", out + err)
        self.assertEqual(err.decode(), f"certsrv-ocsp: {missing}: no such directory; create a "
                                       f"PKI with `certsrv-pki init {missing}`\n"
                                       "see: twistd certsrv-ocsp --help\n")

    async def test_errors_are_one_line(self) -> None:
        """A busy port, a bad value, an unknown option: one line, then ``see:``, exit 1."""
        from tests._servers import listening_socket as _listening_socket
        from tests._servers import low_port as _free_port

        port = _free_port()
        self.addCleanup(_listening_socket(port).close)
        listen = f"tcp:{port}:interface=127.0.0.1"
        for argv, line in (
            (["--listen", listen],
             f"--listen {listen}: port {port} on 127.0.0.1 is already in use by another process"),
            (["--validity", "soon"], "--validity: invalid duration 'soon': expected a whole "
                                     "number and a unit (s, m, h or d), e.g. 90s, 10m, 8h, 30d"),
            (["--bogus"], "unknown option --bogus"),
        ):
            command = self.twistd("--pki", self.dir, *argv)
            out, err, code = await getProcessOutputAndValue(  # type: ignore[no-untyped-call]
                command[0], command[1:], env=self.env, path=self.dir, reactor=reactor)
            self.assertEqual((err.decode(), code),
                             (f"certsrv-ocsp: {line}\nsee: twistd certsrv-ocsp --help\n", 1))
            self.assertNotIn(b"Traceback", out)

    async def test_serves_openssl(self) -> None:
        """openssl gets good, then revoked after ``revoke``; SIGTERM stops it cleanly."""
        if OPENSSL is None:
            self.skipTest("the openssl command is not installed")
        twistd = _Twistd()
        argv = self.twistd("--pki", self.dir, "--listen", "tcp:0:interface=127.0.0.1")
        process = reactor.spawnProcess(twistd, argv[0], argv,  # type: ignore[attr-defined]
                                       env=self.env, path=self.dir)
        try:
            port = await twistd.listening
            url = f"http://127.0.0.1:{port}"
            out = await openssl_ocsp(self, self.dir, url)
            self.assertIn("client.pem: good\n", out)
            self.assertEqual(_validity_of(out), datetime.timedelta(minutes=5))
            PKIStore.open(self.dir).revoke("client")
            self.assertIn("client.pem: revoked\n", await openssl_ocsp(self, self.dir, url))
        finally:
            with contextlib.suppress(ProcessExitedAlready):
                process.signalProcess(signal.SIGTERM)
        await twistd.ended
        self.assertIn(b"answering OCSP requests for CN=certsrv development CA", twistd.output)
        self.assertIn(b"Received SIGTERM", twistd.output)
        self.assertIn(b"Server Shut Down", twistd.output)
        self.assertNotIn(b"Traceback", twistd.output)
        self.assertNotIn(b"PRIVATE KEY", twistd.output)
