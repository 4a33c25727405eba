"""
Hostile input: whatever a peer sends is refused cleanly, never an unhandled error or a 500.

Property tests (hypothesis) feed mutated and arbitrary input to every parser of outside input
that has no property test elsewhere (``test_forwarded`` and ``test_policy`` cover theirs):
OCSP responses and requests, PEM/DER certificate, key and CRL files, fetched CRLs; and to
the live server in memory: non-TLS first flights, truncated handshakes, malformed HTTP after
a good handshake, and client certificates with odd, huge or mutated contents.

The DER mutator, the fixtures and the parsers' contracts (tests/_support.py) are shared with
``fuzz/fuzz_targets.py``, which runs the same targets for many more inputs.

Every product bug these tests found has been fixed and keeps its regression test here.
"""

from __future__ import annotations

import base64
import datetime
import functools
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal, cast

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from OpenSSL import SSL, crypto
from twisted.internet import protocol
from twisted.internet.address import IPv4Address
from twisted.internet.error import VerifyError
from twisted.internet.ssl import Certificate, KeyPair, PrivateCertificate, optionsForClientTLS
from twisted.internet.task import Clock
from twisted.logger import ILogObserver, globalLogPublisher
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from twisted.test.iosim import FakeTransport, connectedServerAndClient
from twisted.trial.unittest import SynchronousTestCase

from certsrv.forwarded.headers import ForwardedCertConfig, TrustedProxies
from certsrv.forwarded.trust import Forwarding
from certsrv.pki import CertificateAuthority, IssuedCertificate, PrivateKey
from certsrv.revocation.crlfetch import verify_crl
from certsrv.revocation.crlfiles import load_crl
from certsrv.revocation.ocsp import (
    CertStatus,
    SingleStatus,
    build_response,
    cert_id_key,
    verify_response,
)
from certsrv.server.build import build_site
from certsrv.tls.context import ServerTLS, TLSFactory
from certsrv.tls.verify import ClientVerifier
from certsrv.x509.certs import load_certificates, load_private_key
from tests._support import (
    HOUR,
    Exchange,
    HTTPClientProtocol,
    Node,
    OCSPCase,
    check_load,
    check_respond,
    check_verify_crl,
    check_verify_response,
    client_tls_options,
    clock_at_now,
    der_encode,
    der_parse,
    der_tlv,
    exchange,
    fixtures,
    make_server_factory,
    mutate,
    mutate_bytes,
    mutate_der,
    pem_armour,
    request_bytes,
    resign,
    resign_ocsp,
    shared_pki,
    sign_like,
)
from tests._support import der_copy as _copy
from tests._support import der_flatten as _flatten
from tests._support import der_of as _der

PROPERTY = settings(max_examples=200, deadline=None, database=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
LIVE = PROPERTY


# --- hypothesis draws for the DER mutator of tests/_support.py ----------------------------

class DrawChoices:
    """Choices drawn from a hypothesis ``data`` object, so failures shrink."""

    def __init__(self, data: st.DataObject) -> None:
        self._data = data

    def integer(self, low: int, high: int) -> int:
        """An integer in [low, high]."""
        return self._data.draw(st.integers(low, high))

    def blob(self, max_size: int) -> bytes:
        """Up to ``max_size`` bytes."""
        return self._data.draw(st.binary(max_size=max_size))


class _Property(SynchronousTestCase):
    """Runs a contract: it raises nothing and logs no error."""

    def holds(self, check: Callable[[], None]) -> None:
        check()
        self.assertEqual(self.flushLoggedErrors(), [])


# --- OCSP ----------------------------------------------------------------------------------

def _case(data: st.DataObject) -> OCSPCase:
    cases = fixtures().ocsp_cases
    return cases[data.draw(st.integers(0, len(cases) - 1))]


class OCSPResponseTests(_Property):
    """verify_response answers a status or OCSPError, whatever the responder sent."""

    @PROPERTY
    @given(st.data())
    def test_mutated_bytes(self, data: st.DataObject) -> None:
        case = _case(data)
        choices = DrawChoices(data)
        mutant = mutate_bytes(case.der, choices, choices.integer(1, 4))
        self.holds(lambda: check_verify_response(case, mutant))

    @PROPERTY
    @given(st.data())
    def test_mutated_structure(self, data: st.DataObject) -> None:
        case = _case(data)
        choices = DrawChoices(data)
        mutant = mutate_der(case.der, choices, choices.integer(1, 3))
        self.holds(lambda: check_verify_response(case, mutant))

    @PROPERTY
    @given(st.data())
    def test_mutated_behind_a_valid_signature(self, data: st.DataObject) -> None:
        case = _case(data)
        mutant = resign_ocsp(case.der, case.key, DrawChoices(data), case.pss)
        self.holds(lambda: check_verify_response(case, mutant))

    @PROPERTY
    @given(st.binary(max_size=2048))
    def test_arbitrary_bytes(self, der: bytes) -> None:
        self.holds(lambda: check_verify_response(fixtures().ocsp_cases[0], der))

    def test_unmutated_cases_verify(self) -> None:
        for case in fixtures().ocsp_cases:
            status = verify_response(case.der, case.cert, case.issuer, now=fixtures().now,
                                     nonce=case.nonce)
            self.assertIn(status.status, (CertStatus.GOOD, CertStatus.REVOKED))


class OCSPRequestTests(_Property):
    """OCSPResource.respond answers every request with a parseable OCSP response."""

    def setUp(self) -> None:
        self.resource = fixtures().responder_resource()

    @PROPERTY
    @given(st.data())
    def test_mutated_requests(self, data: st.DataObject) -> None:
        requests = fixtures().ocsp_requests
        base = requests[data.draw(st.integers(0, len(requests) - 1))]
        mutant = mutate(base, DrawChoices(data))
        self.holds(lambda: check_respond(self.resource, mutant))

    @PROPERTY
    @given(st.binary(max_size=1024))
    def test_arbitrary_bytes(self, der: bytes) -> None:
        self.holds(lambda: check_respond(self.resource, der))

    def test_unmutated_requests_answered(self) -> None:
        for request in fixtures().ocsp_requests:
            answer = ocsp.load_der_ocsp_response(self.resource.respond(request))
            self.assertEqual(answer.response_status, ocsp.OCSPResponseStatus.SUCCESSFUL)


# --- PEM and DER files -----------------------------------------------------------------------

def _armoured(data: st.DataObject, label: str, der: bytes) -> bytes:
    """``der`` as DER, PEM, or PEM whose text is damaged too."""
    form = data.draw(st.sampled_from(["der", "pem", "damaged pem", "bundle"]))
    if form == "der":
        return der
    text = pem_armour(label, der)
    if form == "damaged pem":
        return mutate_bytes(text, DrawChoices(data), data.draw(st.integers(1, 3)))
    if form == "bundle":
        return text + pem_armour(label, der[: len(der) // 2]) + b"trailing text\n"
    return text


class FileLoadingTests(_Property):
    """Certificate, key and CRL files load or raise ConfigurationError, never anything else."""

    def setUp(self) -> None:
        self.path = self.mktemp()

    def _mutant(self, data: st.DataObject, bases: tuple[bytes, ...], label: str) -> bytes:
        base = bases[data.draw(st.integers(0, len(bases) - 1))]
        return _armoured(data, label, mutate(base, DrawChoices(data)))

    @PROPERTY
    @given(st.data())
    def test_certificates(self, data: st.DataObject) -> None:
        mutant = self._mutant(data, fixtures().certificates, "CERTIFICATE")
        self.holds(lambda: check_load(self.path, mutant, load_certificates))

    @PROPERTY
    @given(st.data())
    def test_resigned_certificates(self, data: st.DataObject) -> None:
        f = fixtures()
        mutant = resign(f.certificates[1], f.ca.private_key, DrawChoices(data))
        self.holds(lambda: check_load(self.path, _armoured(data, "CERTIFICATE", mutant),
                                      load_certificates))

    @PROPERTY
    @given(st.data())
    def test_private_keys(self, data: st.DataObject) -> None:
        mutant = self._mutant(data, fixtures().keys, "PRIVATE KEY")
        self.holds(lambda: check_load(self.path, mutant, load_private_key))

    @PROPERTY
    @given(st.data())
    def test_crls(self, data: st.DataObject) -> None:
        mutant = self._mutant(data, (fixtures().crl,), "X509 CRL")
        self.holds(lambda: check_load(self.path, mutant, load_crl))

    @PROPERTY
    @given(st.binary(max_size=2048), st.sampled_from(
        [b"", b"-----BEGIN CERTIFICATE-----\n", b"-----BEGIN X509 CRL-----\n",
         b"-----BEGIN PRIVATE KEY-----\n", b"0"]))
    def test_arbitrary_bytes(self, blob: bytes, prefix: bytes) -> None:
        for load in (load_certificates, load_private_key, load_crl):
            self.holds(lambda load=load: check_load(self.path, prefix + blob, load))  # type: ignore[misc]


class FetchedCRLTests(_Property):
    """A fetched CRL verifies or raises CRLError."""

    @PROPERTY
    @given(st.data())
    def test_mutated(self, data: st.DataObject) -> None:
        mutant = _armoured(data, "X509 CRL", mutate(fixtures().crl, DrawChoices(data)))
        self.holds(lambda: check_verify_crl(mutant))

    @PROPERTY
    @given(st.data())
    def test_mutated_behind_a_valid_signature(self, data: st.DataObject) -> None:
        f = fixtures()
        mutant = resign(f.crl, f.ca.private_key, DrawChoices(data))
        self.holds(lambda: check_verify_crl(mutant))

    @PROPERTY
    @given(st.binary(max_size=2048))
    def test_arbitrary_bytes(self, blob: bytes) -> None:
        self.holds(lambda: check_verify_crl(blob))

    def test_unmutated_verifies(self) -> None:
        f = fixtures()
        verified = verify_crl(f.crl, f.ca.certificate, "http://127.0.0.1/ca.crl",
                              f.now.timestamp(), 300.0)
        self.assertIn(f.leaf.serial_number, verified.revoked)


# --- the live server, in memory --------------------------------------------------------------

@dataclass
class Outcome:
    """What one hostile connection did to the server."""

    exchange: Exchange | None
    events: list[dict[str, Any]]
    escaped: BaseException | None  # what a reactor would log as an unhandled error
    logged: list[Failure]
    open_connections: int = 0

    @property
    def status(self) -> int | None:
        """The HTTP status the client got, if any."""
        return self.exchange.status if self.exchange is not None else None

    @property
    def rejections(self) -> list[dict[str, Any]]:
        """The certsrv.tls events that refused the connection."""
        return [e for e in self.events if e.get("decision") == "rejected"]


@contextmanager
def _events() -> Iterator[list[dict[str, Any]]]:
    events: list[dict[str, Any]] = []

    def observer(event: dict[str, Any]) -> None:
        if event.get("log_namespace") == "certsrv.tls":
            events.append(event)

    globalLogPublisher.addObserver(cast(ILogObserver, observer))
    try:
        yield events
    finally:
        globalLogPublisher.removeObserver(cast(ILogObserver, observer))


class _Raw(protocol.Protocol):
    """Sends fixed bytes when connected; keeps what comes back."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.received = b""
        self.lost = False

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.write(self.data)

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        self.lost = True


def _hang_up(client: Any, server: Any, pump: Any, done: Callable[[], bool]) -> None:
    """iosim delivers a close only when asked: close both ends until ``done()``."""
    pump.flush()
    for _ in range(5):
        if done():
            break
        client.transport.loseConnection()
        server.transport.loseConnection()
        pump.flush()


@functools.cache
def client_hello() -> bytes:
    """The first flight of a real TLS client: a ClientHello offering TLS 1.2 and 1.3 (one,
    made once: hypothesis replays examples)."""
    context = SSL.Context(SSL.TLS_METHOD)
    connection = SSL.Connection(context, None)
    connection.set_connect_state()
    connection.set_tlsext_host_name(b"localhost")
    try:
        connection.do_handshake()
    except SSL.WantReadError:
        pass
    return connection.bio_read(65536)


class LiveServerTests(SynchronousTestCase):
    """Hostile peers of the real TLS and HTTP stack: a clean refusal, never an error."""

    def setUp(self) -> None:
        self.pki = shared_pki()
        self.factory = make_server_factory(self.pki.settings())

    # - helpers -

    def raw(self, data: bytes, factory: TLSFactory | None = None) -> Outcome:
        """Send ``data`` as the first flight, then hang up."""
        factory = factory or make_server_factory(self.pki.settings())
        clock = cast(Clock, factory.tls.clock)
        client = _Raw(data)
        escaped: BaseException | None = None
        with _events() as events:
            try:
                _, server, pump = connectedServerAndClient(
                    lambda: factory.buildProtocol(None), lambda: client, greet=False,
                    clock=clock)
                _hang_up(client, server, pump, lambda: client.lost)
            except Exception as e:
                escaped = e
        return Outcome(None, events, escaped, self.flushLoggedErrors(), len(factory.protocols))

    def connect(self, cert: IssuedCertificate | None, request: bytes | None = None,
                options: Any = None) -> Outcome:
        """A TLS connection presenting ``cert`` (or using ``options``), sending ``request``."""
        factory = make_server_factory(self.pki.settings())
        escaped: BaseException | None = None
        result = None
        with _events() as events:
            try:
                result = exchange(factory, options or client_tls_options(self.pki, cert),
                                  request)
            except Exception as e:
                escaped = e
        return Outcome(result, events, escaped, self.flushLoggedErrors(),
                       len(factory.protocols))

    def openssl_client_options(self, der: bytes) -> Any:
        """Client options presenting the DER certificate as OpenSSL, not cryptography, reads
        it: certificates cryptography refuses still reach the server."""
        key = KeyPair.load(self.pki.client.private_key_pem(), crypto.FILETYPE_PEM)
        return optionsForClientTLS(
            "localhost", trustRoot=Certificate.loadPEM(self.pki.root.certificate_pem()),
            clientCertificate=PrivateCertificate.load(der, key, crypto.FILETYPE_ASN1))

    def assertClean(self, outcome: Outcome) -> None:
        """No unhandled error, no logged error, no 5xx, at most one rejection event."""
        logged = list(outcome.logged)
        self.assertIsNone(outcome.escaped, "".join(traceback.format_exception(
            outcome.escaped)) if outcome.escaped else None)
        self.assertEqual(logged, [])
        if outcome.status is not None:
            # Twisted answers 501 Not Implemented to methods other than GET, HEAD and POST;
            # that is HTTP's answer to an unknown method, not a failure; 505 to a version
            # other than HTTP/1.x. Never a 500.
            self.assertTrue(outcome.status < 500 or outcome.status in (501, 505), outcome.status)
            assert outcome.exchange is not None
            self.assertNotIn(b"Traceback", outcome.exchange.body)
        self.assertLessEqual(len(outcome.rejections), 1, outcome.rejections)
        self.assertEqual(outcome.open_connections, 0, "a connection was left open")

    def assertRefusedCertificate(self, outcome: Outcome, reasons: set[str] | None = None
                                 ) -> None:
        """The handshake was refused with exactly one structured rejection event."""
        self.assertClean(outcome)
        self.assertIsNone(outcome.status)
        [event] = outcome.rejections
        if reasons is not None:
            self.assertIn(event["reason"], reasons)

    # - not TLS at all, or TLS cut short -

    @LIVE
    @given(st.one_of(
        st.binary(max_size=4096),
        st.sampled_from([b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
                         b"\x16\x03\x01\xff\xff" + b"\x00" * 64, b"\x80\x2e\x01\x03\x01",
                         b"\x15\x03\x03\x00\x02\x02\x28", b"\x17\x03\x03\x00\x10" + b"A" * 16,
                         b"\x16\x03\x03\x00\x00", b"\x00" * 5000, b"\xff" * 20000])))
    def test_not_tls(self, data: bytes) -> None:
        outcome = self.raw(data)
        self.assertClean(outcome)
        for event in outcome.events:
            self.assertEqual(event["reason"], "handshake_failed")

    @LIVE
    @given(st.data())
    def test_mutated_client_hello(self, data: st.DataObject) -> None:
        choices = DrawChoices(data)
        hello = client_hello()
        mutant = mutate_bytes(hello, choices, choices.integer(1, 4))
        self.assertClean(self.raw(mutant))

    def test_client_hello_cut_short(self) -> None:
        hello = client_hello()
        for end in sorted({0, 1, 4, 5, 6, 9, 40, len(hello) // 2, len(hello) - 1, len(hello)}):
            self.assertClean(self.raw(hello[:end]))

    def test_abandoned_after_client_hello_times_out(self) -> None:
        """A peer that sends a ClientHello and then nothing is cut off by the timeout."""
        clock = cast(Clock, self.factory.tls.clock)
        client = _Raw(client_hello())
        with _events() as events:
            _, _, pump = connectedServerAndClient(
                lambda: self.factory.buildProtocol(None), lambda: client, greet=False,
                clock=clock)
            pump.flush()
            self.assertFalse(client.lost)
            clock.advance(11)  # past the default 10 s handshake timeout
            pump.flush()
        self.assertTrue(client.lost)
        self.assertEqual([e["reason"] for e in events], ["handshake_timeout"])
        self.assertEqual(len(self.factory.protocols), 0)
        self.assertEqual(self.flushLoggedErrors(), [])

    # - a good handshake, then malformed HTTP -

    @LIVE
    @given(st.data())
    def test_malformed_http(self, data: st.DataObject) -> None:
        request = data.draw(_http_garbage())
        outcome = self.connect(self.pki.client, request)
        self.assertClean(outcome)
        self.assertEqual([e["decision"] for e in outcome.events], ["accepted"])

    def test_malformed_http_examples(self) -> None:
        """Each of these gets a 4xx (505 for an HTTP version other than 1.x), or the
        connection closed, but never another 5xx or an error."""
        for request in _MALFORMED_REQUESTS:
            outcome = self.connect(self.pki.client, request)
            self.assertClean(outcome)
            if outcome.status == 505:
                self.assertRegex(request.split(b"\r\n")[0], rb" HTTP/[02-9]", request)
            elif outcome.status is not None:
                self.assertTrue(400 <= outcome.status < 500, (request, outcome.status))

    # - client certificates with odd contents -

    def test_odd_certificates(self) -> None:
        """Huge or strange but well-formed certificates: accepted, or refused with one event."""
        big = x509.UnrecognizedExtension(x509.ObjectIdentifier("1.3.6.1.4.1.55555.1"),
                                         b"\x04\x82\x40\x00" + b"x" * 16384)
        unknown = x509.UnrecognizedExtension(x509.ObjectIdentifier("1.3.6.1.4.1.55555.2"),
                                             b"\x05\x00")
        sans = {"dns": [f"host{i}.example.org" for i in range(500)],
                "uris": [f"spiffe://example.org/{i}" for i in range(100)]}
        root = self.pki.root
        cases: list[tuple[str, IssuedCertificate, set[str] | None]] = [
            ("long CN", _issue(root, "c" * 10_000), None),
            ("many SANs", root.issue_client("many", **sans), None),  # type: ignore[arg-type]
            ("16 KiB extension", root.issue_client("big", extra_extensions=[(big, False)]),
             None),
            ("unknown critical extension",
             root.issue_client("crit", extra_extensions=[(unknown, True)]), {"malformed"}),
            ("200 KiB extension", root.issue_client("huge", extra_extensions=[(
                x509.UnrecognizedExtension(big.oid, b"\x04\x83\x03\x20\x00" + b"y" * 204800),
                False)]), {"handshake_failed"}),
            ("long CN, unknown CA", _issue(self.pki.other_root, "d" * 10_000), {"unknown_ca"}),
        ]
        for name, cert, refused in cases:
            outcome = self.connect(cert)
            self.assertClean(outcome)
            if refused is None:
                self.assertEqual(outcome.status, 200, name)
                self.assertEqual([e["decision"] for e in outcome.events], ["accepted"], name)
            else:
                self.assertRefusedCertificate(outcome, refused)

    @LIVE
    @given(st.data())
    def test_generated_certificates(self, data: st.DataObject) -> None:
        issuer = data.draw(st.sampled_from([self.pki.root, self.pki.other_root]))
        cert = _odd_certificate(data, issuer, self.pki.client.private_key)
        outcome = self.connect(cert)
        self.assertClean(outcome)
        if outcome.escaped is None and outcome.status is None:
            self.assertEqual(len(outcome.rejections), 1, outcome.events)
        if issuer is self.pki.other_root:
            self.assertIsNone(outcome.status)

    @LIVE
    @given(st.data())
    def test_mutated_certificates(self, data: st.DataObject) -> None:
        issuer = data.draw(st.sampled_from([self.pki.root, self.pki.other_root]))
        base = self.pki.client.certificate if issuer is self.pki.root else \
            _unknown_ca_client().certificate
        der = resign(_der(base), issuer.private_key, DrawChoices(data))
        try:
            options = self.openssl_client_options(der)
        except (SSL.Error, crypto.Error, ValueError, VerifyError):
            return  # the client cannot send what OpenSSL cannot load, or a changed key
        outcome = self.connect(None, options=options)
        self.assertClean(outcome)
        if outcome.escaped is None and outcome.status is None:
            self.assertEqual(len(outcome.rejections), 1, outcome.events)

    # - a trusted proxy forwarding a hostile certificate -

    def forwarded(self, leaf_der: bytes, chain: bytes | None = None) -> Outcome:
        """GET /secure from a trusted proxy (its own certificate is good) forwarding
        ``leaf_der`` as an RFC 9440 Client-Cert header."""
        settings = self.pki.settings()
        verifier = ClientVerifier(clock_at_now())
        site = build_site(verifier, http2=False, forwarded=Forwarding(
            ForwardedCertConfig.create("rfc9440"), TrustedProxies(["127.0.0.1/32"])))
        factory = TLSFactory(ServerTLS(settings, verifier), site)
        headers = b"Client-Cert: :" + base64.b64encode(leaf_der) + b":\r\n"
        if chain is not None:
            headers += b"Client-Cert-Chain: :" + base64.b64encode(chain) + b":\r\n"
        request = (b"GET /secure HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
                   + headers + b"\r\n")
        http = HTTPClientProtocol(request)
        client_factory = TLSMemoryBIOFactory(
            client_tls_options(self.pki, self.pki.client), True,
            protocol.Factory.forProtocol(lambda: http), clock=verifier.clock)
        proxy = IPv4Address("TCP", "127.0.0.1", 40000)
        escaped: BaseException | None = None
        server: Any = None
        with _events() as events:
            try:
                client, server, pump = connectedServerAndClient(
                    lambda: factory.buildProtocol(proxy),
                    lambda: client_factory.buildProtocol(None), greet=False,
                    clock=cast(Clock, verifier.clock),
                    serverTransportFactory=lambda p: FakeTransport(p, True, peerAddress=proxy))
                _hang_up(client, server, pump, lambda: http.lost is not None)
            except Exception as e:
                escaped = e
        return Outcome(Exchange(http, server), events, escaped, self.flushLoggedErrors(),
                       len(factory.protocols))

    def test_forwarded_good_certificate(self) -> None:
        outcome = self.forwarded(_der(self.pki.client_cert("via_intermediate").certificate),
                                 _der(self.pki.intermediate.certificate))
        self.assertClean(outcome)
        self.assertEqual(outcome.status, 200)

    @PROPERTY
    @given(st.data())
    def test_forwarded_mutated_certificates(self, data: st.DataObject) -> None:
        issuer = data.draw(st.sampled_from([self.pki.root, self.pki.other_root]))
        base = self.pki.client if issuer is self.pki.root else _unknown_ca_client()
        der = resign(_der(base.certificate), issuer.private_key, DrawChoices(data))
        outcome = self.forwarded(der)
        self.assertClean(outcome)
        if outcome.escaped is None:
            # 431: a mutation can grow the certificate past --max-header-bytes; the limit
            # refuses it before any certificate is judged.
            self.assertIn(outcome.status, (200, 400, 403, 431))
            self.assertEqual(len(outcome.rejections), 0 if outcome.status in (200, 431) else 1,
                             outcome.events)

    def test_forwarded_unreadable_subject(self) -> None:
        """The forwarded-header parser refuses what cryptography cannot read: a 400."""
        for issuer in (self.pki.root, self.pki.other_root):
            cert = _patched(issuer, self.pki.client.private_key, subject=_bitstring_attribute)
            outcome = self.forwarded(_der(cert.certificate))
            self.assertClean(outcome)
            self.assertEqual(outcome.status, 400)
            self.assertEqual(len(outcome.rejections), 1)

    # - regressions for the product bugs found here (all fixed) -

    def test_unreadable_subject_from_unknown_ca(self) -> None:
        """Anyone can send this: a self-made certificate whose subject cryptography refuses."""
        for patch in (_bitstring_attribute, _empty_rdn):
            cert = _patched(self.pki.other_root, self.pki.client.private_key, subject=patch)
            self.assertRefusedCertificate(self.connect(cert), {"unknown_ca"})


    def test_unreadable_subject_from_trusted_ca(self) -> None:
        for patch in (_bitstring_attribute, _empty_rdn):
            cert = _patched(self.pki.root, self.pki.client.private_key, subject=patch)
            outcome = self.connect(cert)
            self.assertClean(outcome)
            self.assertIn(outcome.status, (200, None))


    def test_certificate_cryptography_cannot_load(self) -> None:
        """Anyone can send this: an extension OID longer than cryptography parses."""
        cert_der = _patched_der(self.pki.other_root, self.pki.client.private_key,
                                extension=_long_oid)
        outcome = self.connect(None, options=self.openssl_client_options(cert_der))
        self.assertRefusedCertificate(outcome, {"unknown_ca", "malformed"})


    def test_unreadable_extension_from_trusted_ca(self) -> None:
        cert = _patched(self.pki.root, self.pki.client.private_key,
                        extension=_trailing_bytes_in_san)
        self.assertRefusedCertificate(self.connect(cert), {"malformed"})




@functools.cache
def _unknown_ca_client() -> IssuedCertificate:
    """One certificate from the unrelated root (the same one every time: hypothesis replays)."""
    pki = shared_pki()
    return pki.other_root.issue_client("mallory", private_key=pki.client.private_key)


def _issue(ca: CertificateAuthority, common_name: str) -> IssuedCertificate:
    """A client certificate whose CN is longer than X.520 allows."""
    leaf = shared_pki().client
    attribute = x509.NameAttribute(NameOID.COMMON_NAME, common_name, _validate=False)
    return _build(ca, x509.Name([attribute]), leaf.private_key, [])


def _build(ca: CertificateAuthority, subject: x509.Name, key: PrivateKey,
           extensions: list[tuple[x509.ExtensionType, bool]], serial: int = 0x1234) -> (
        IssuedCertificate):
    now = datetime.datetime.now(datetime.UTC)
    builder = (x509.CertificateBuilder()
               .subject_name(subject)
               .issuer_name(ca.certificate.subject)
               .public_key(key.public_key())
               .serial_number(serial)
               .not_valid_before(now - HOUR)
               .not_valid_after(now + 24 * HOUR)
               .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), False))
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical)
    cert = builder.sign(ca.private_key, hashes.SHA256())  # type: ignore[arg-type]
    return IssuedCertificate(cert, key)


def _patched(ca: CertificateAuthority, key: PrivateKey,
             subject: Callable[[Node], None] | None = None,
             extension: Callable[[Node], None] | None = None) -> IssuedCertificate:
    """``_patched_der``, loaded by cryptography."""
    der = _patched_der(ca, key, subject, extension)
    return IssuedCertificate(x509.load_der_x509_certificate(der), key)


def _patched_der(ca: CertificateAuthority, key: PrivateKey,
                 subject: Callable[[Node], None] | None = None,
                 extension: Callable[[Node], None] | None = None) -> bytes:
    """A certificate for ``key`` whose subject, or SAN extension, is changed in DER after
    signing, then signed again by ``ca``: what OpenSSL accepts and cryptography may not."""
    sans = [x509.DNSName("patched.example.org")]
    built = _build(ca, x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "patched")]), key,
                   [(x509.SubjectAlternativeName(sans), False)])
    tree = der_parse(_der(built.certificate))
    assert tree is not None and tree[0].children is not None
    tbs = tree[0].children[0].children
    assert tbs is not None
    # TBSCertificate: [0] version, serial, signature, issuer, validity, subject, spki, [3] exts
    if subject is not None:
        subject(tbs[5])
    if extension is not None:
        extensions = tbs[7].children[0].children  # type: ignore[index]
        assert extensions is not None
        san = [e for e in extensions if e.children and e.children[0].content == b"\x55\x1d\x11"]
        extension(san[0])
    tree[0].children[2] = Node(0x03, b"\x00" + sign_like(
        ca.private_key, der_encode(tree[0].children[:1])))
    return der_encode(tree)


def _bitstring_attribute(name: Node) -> None:
    """Adds O as a BIT STRING: cryptography allows BIT STRINGs only for x500UniqueIdentifier."""
    assert name.children is not None
    attribute = Node(0x30, b"", [Node(0x06, b"\x55\x04\x0a"), Node(0x03, b"\x00\x01")])
    name.children.insert(0, Node(0x31, b"", [attribute]))


def _empty_rdn(name: Node) -> None:
    """Adds an empty RelativeDistinguishedName (a SET with no attribute)."""
    assert name.children is not None
    name.children.append(Node(0x31, b""))


def _long_oid(extension: Node) -> None:
    """Gives the extension an OID of 80 content octets (1.3.6.1.4.1.55555.1.1...)."""
    assert extension.children is not None
    extension.children[0] = Node(0x06, b"\x2b\x06\x01\x04\x01\x83\xb2\x23" + b"\x01" * 72)


def _trailing_bytes_in_san(extension: Node) -> None:
    """Puts a stray byte after the GeneralNames inside the SAN extension's OCTET STRING."""
    assert extension.children is not None
    value = extension.children[-1]
    value.content, value.children = der_encode(value.children or []) + b"\x00", None


_UTF8 = x509.name._ASN1Type.UTF8String
_SURROGATES: tuple[Literal["Cs"]] = ("Cs",)
_NAME_OIDS = (NameOID.COMMON_NAME, NameOID.ORGANIZATION_NAME, NameOID.ORGANIZATIONAL_UNIT_NAME,
              NameOID.EMAIL_ADDRESS, NameOID.SERIAL_NUMBER, NameOID.DOMAIN_COMPONENT,
              NameOID.COUNTRY_NAME, x509.ObjectIdentifier("1.3.6.1.4.1.55555.9"))


def _odd_certificate(data: st.DataObject, ca: CertificateAuthority, key: PrivateKey
                     ) -> IssuedCertificate:
    """A well-formed certificate with hypothesis-chosen odd names and extensions."""
    text = st.text(st.characters(codec="utf-8", exclude_categories=_SURROGATES), min_size=1,
                   max_size=data.draw(st.sampled_from([8, 64, 2000])))
    attributes = data.draw(st.lists(st.tuples(st.sampled_from(_NAME_OIDS), text),
                                    min_size=1, max_size=6))
    # UTF8String whatever the attribute, so that any text and any length can be encoded.
    subject = x509.Name([x509.NameAttribute(oid, value, _type=_UTF8, _validate=False)
                         for oid, value in attributes])
    label = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1,
                    max_size=80)
    word = st.text("abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=40)
    sans: list[x509.GeneralName] = []
    sans += [x509.DNSName(n) for n in data.draw(st.lists(label, max_size=40))]
    sans += [x509.UniformResourceIdentifier(u) for u in data.draw(st.lists(label, max_size=5))]
    sans += [x509.RFC822Name(f"{a}@{b}.example") for a, b in data.draw(
        st.lists(st.tuples(word, word), max_size=5))]
    extensions: list[tuple[x509.ExtensionType, bool]] = []
    if sans:
        extensions.append((x509.SubjectAlternativeName(sans), data.draw(st.booleans())))
    for index in range(data.draw(st.integers(0, 3))):
        oid = x509.ObjectIdentifier(f"1.3.6.1.4.1.55555.{index}.{data.draw(st.integers(0, 9))}")
        value = data.draw(st.one_of(st.binary(max_size=64),
                                    st.integers(0, 20000).map(lambda n: der_tlv(0x04, b"v" * n))))
        extensions.append((x509.UnrecognizedExtension(oid, value), data.draw(st.booleans())))
    serial = data.draw(st.integers(1, 2**159 - 1))
    return _build(ca, subject, key, extensions, serial)


def _http_garbage() -> st.SearchStrategy[bytes]:
    """Requests that are almost HTTP/1.1, and bytes that are not."""
    token = st.sampled_from([b"GET", b"POST", b"HEAD", b"PUT", b"G\x00T", b"", b"get",
                             b"\xff\xfe", b"CONNECT", b"A" * 300])
    target = st.one_of(st.sampled_from([b"/secure", b"/", b"*", b"/%00", b"/%zz", b"//..",
                                        b"http://x/secure", b"/secure?" + b"q" * 9000]),
                       st.binary(max_size=64))
    version = st.sampled_from([b"HTTP/1.1", b"HTTP/1.0", b"HTTP/9.9", b"HTTP/1.1 x",
                               b"http/1.1", b"", b"HTTP/1.1\x00"])
    header = st.one_of(
        st.tuples(st.sampled_from([b"Content-Length", b"content-length"]),
                  st.sampled_from([b"-1", b"99999999999999999999999", b"abc", b"1, 2",
                                   b" 5", b"0x10", b"", b"1e3", b"+5"])),
        st.tuples(st.just(b"Transfer-Encoding"),
                  st.sampled_from([b"chunked", b"gzip, chunked", b"chunked, chunked", b"x"])),
        st.tuples(st.binary(max_size=24), st.binary(max_size=64)),
        st.tuples(st.just(b"Host"), st.sampled_from([b"", b"\x00", b"a" * 20000, b"x\r y"])),
    )
    body = st.one_of(st.sampled_from([b"", b"zz\r\n", b"5\r\nab\r\n", b"-1\r\n\r\n",
                                      b"fffffffffffffffff\r\n", b"0\r\nX: y\r\n\r\n",
                                      b"3;ext=\x00\r\nabc\r\n0\r\n\r\n"]),
                     st.binary(max_size=256))

    def join(parts: tuple[bytes, bytes, bytes, list[tuple[bytes, bytes]], bytes, str]) -> bytes:
        method, path, version_, headers, body_, line_end = parts
        eol = line_end.encode()
        lines = [b" ".join(p for p in (method, path, version_) if p)]
        lines += [name + b": " + value for name, value in headers]
        return eol.join(lines) + eol + eol + body_

    almost = st.tuples(token, target, version, st.lists(header, max_size=6), body,
                       st.sampled_from(["\r\n", "\n", "\r"])).map(join)
    return st.one_of(almost, st.binary(max_size=1024))


_MALFORMED_REQUESTS = [
    b"GET /secure HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n",
    b"POST /secure HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999999\r\n\r\n",
    b"POST /secure HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
    b"POST /secure HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    b"POST /secure HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n-5\r\nabc\r\n",
    b"POST /secure HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"ffffffffffffffffffffffff\r\n",
    b"POST /secure HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
    b"Content-Length: 3\r\n\r\n0\r\n\r\n",
    b"GET /secure HTTP/1.1\r\nHost: a\x00b\r\n\r\n",
    b"GET /secure HTTP/1.1\r\nX-\x00: y\r\n\r\n",
    b"GET /sec\x00ure HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET /secure HTTP/1.1\r\n" + b"X-A: b\r\n" * 500 + b"\r\n",
    b"GET /secure HTTP/1.1\r\nX-Big: " + b"b" * 70000 + b"\r\n\r\n",
    b"GET /secure HTTP/7.0\r\n\r\n",
    b"GET\r\n\r\n",
    b"\r\n\r\n\r\n",
    b" / HTTP/1.1\r\n\r\n",
    b"GET /secure HTTP/1.1\r\n Folded: header\r\n\r\n",
    b"GET /secure HTTP/1.1\r\nNoColon\r\n\r\n",
    b"\x16\x03\x01\x00\x05hello",
    request_bytes("/%ff%fe%00"),
]


# --- regressions for the product bugs, outside the live server --------------------------------

class KnownBugTests(SynchronousTestCase):
    """One reproduction per product bug these tests found (all fixed)."""

    def setUp(self) -> None:
        self.f = fixtures()

    def _case(self) -> OCSPCase:
        return self.f.ocsp_cases[0]  # ECDSA, the issuer signs, responder by key hash

    def test_ocsp_included_certificate_with_unknown_key(self) -> None:
        f = self.f
        responder_der = _der(f.responder.certificate)
        ec_public_key = b"\x06\x07\x2a\x86\x48\xce\x3d\x02\x01"
        unknown_key = b"\x06\x07\x2a\x86\x48\xce\x3d\x02\x09"
        der = build_response(
            [SingleStatus(cert_id_key(f.leaf.certificate, f.ca.certificate), CertStatus.GOOD,
                          f.now - HOUR, f.now + HOUR)],
            f.responder.certificate, f.responder.private_key, produced_at=f.now,
            certificates=[f.responder.certificate])
        der = der.replace(responder_der, responder_der.replace(ec_public_key, unknown_key))
        case = OCSPCase(der, f.leaf.certificate, f.ca.certificate, None, f.ca.private_key)
        check_verify_response(case, der)


    def test_ocsp_responder_name_with_bitstring(self) -> None:
        f = self.f
        der = build_response(
            [SingleStatus(cert_id_key(f.leaf.certificate, f.ca.certificate), CertStatus.GOOD,
                          f.now - HOUR, f.now + HOUR)],
            f.responder.certificate, f.responder.private_key, produced_at=f.now,
            certificates=[f.responder.certificate], responder_id="name")
        tree = der_parse(der)
        assert tree is not None
        basic = tree[0].children[1].children[0].children[1].children[0]  # type: ignore[index]
        responder_id = basic.children[0].children[0]  # type: ignore[index]
        assert responder_id.tag == 0xA1 and responder_id.children is not None
        _bitstring_attribute(responder_id.children[0])
        der = resign_ocsp_exact(der_encode(tree), f.responder.private_key)
        check_verify_response(OCSPCase(der, f.leaf.certificate, f.ca.certificate, None,
                                       f.responder.private_key), der)


    def test_ocsp_duplicate_nonce_in_signed_response(self) -> None:
        case = self._case()
        der = _duplicate_last_extension(resign_ocsp_exact(case.der, case.key))
        check_verify_response(case, resign_ocsp_exact(der, case.key))


    def test_responder_duplicate_nonce_in_request(self) -> None:
        request = _duplicate_last_extension(self.f.ocsp_requests[0])
        check_respond(self.f.responder_resource(), request)


    def test_responder_negative_serial(self) -> None:
        tree = der_parse(self.f.ocsp_requests[1])
        assert tree is not None
        flat: list[tuple[list[Node], Node]] = []
        _flatten(tree, flat)
        [serial] = [node for _, node in flat
                    if node.tag == 0x02 and node.content == _minimal(self.f.leaf.serial_number)]
        serial.content = b"\x80"  # -128
        check_respond(self.f.responder_resource(), der_encode(tree))


    def test_certificate_file_with_version_5(self) -> None:
        path = self.mktemp()
        der = _with_version(self.f.certificates[1], 4)
        for data in (der, pem_armour("CERTIFICATE", der)):
            check_load(path, data, load_certificates)


    def test_crl_file_with_version_5(self) -> None:
        der = _with_version(self.f.crl, 4)
        check_load(self.mktemp(), der, load_crl)


    def test_fetched_crl_with_version_5(self) -> None:
        check_verify_crl(_with_version(self.f.crl, 4))


    def test_fetched_crl_with_duplicate_extension(self) -> None:
        tree = der_parse(self.f.crl)
        assert tree is not None and tree[0].children is not None
        tbs = tree[0].children[0]
        assert tbs.children is not None
        extensions = tbs.children[-1].children[0]  # type: ignore[index]
        assert extensions.children is not None
        extensions.children.append(_copy(extensions.children[0]))
        tree[0].children[2] = Node(0x03, b"\x00" + sign_like(
            self.f.ca.private_key, der_encode(tree[0].children[:1])))
        check_verify_crl(der_encode(tree))


    def test_fetched_crl_with_bitstring_issuer(self) -> None:
        tree = der_parse(self.f.crl)
        assert tree is not None and tree[0].children is not None
        tbs = tree[0].children[0]
        assert tbs.children is not None
        issuer = tbs.children[2]  # version, signature algorithm, issuer
        assert issuer.tag == 0x30 and issuer.children is not None
        # SET { SEQUENCE { OID O, BIT STRING } }
        attribute = Node(0x30, b"", [Node(0x06, b"\x55\x04\x0a"), Node(0x03, b"\x00\x01")])
        issuer.children.insert(0, Node(0x31, b"", [attribute]))
        check_verify_crl(der_encode(tree))



def _minimal(value: int) -> bytes:
    """The content octets of a DER INTEGER."""
    return value.to_bytes(value.bit_length() // 8 + 1, "big", signed=True)


def _with_version(der: bytes, version: int) -> bytes:
    """A certificate or CRL claiming another version (not re-signed: parsing fails first)."""
    tree = der_parse(der)
    assert tree is not None and tree[0].children is not None
    tbs = tree[0].children[0]
    assert tbs.children is not None
    first = tbs.children[0]
    if first.tag == 0xA0:  # certificate: [0] EXPLICIT INTEGER
        first.children = [Node(0x02, bytes((version,)))]
    else:  # CRL: INTEGER
        assert first.tag == 0x02
        first.content = bytes((version,))
    return der_encode(tree)


def _duplicate_last_extension(der: bytes) -> bytes:
    """An OCSP request or response whose last extension appears twice."""
    tree = der_parse(der)
    assert tree is not None
    flat: list[tuple[list[Node], Node]] = []
    _flatten(tree, flat)
    nonce_oid = b"\x2b\x06\x01\x05\x05\x07\x30\x01\x02"
    for siblings, node in flat:
        if node.tag == 0x30 and node.children and node.children[0].tag == 0x06 \
                and node.children[0].content == nonce_oid:
            siblings.append(_copy(node))
            return der_encode(tree)
    raise AssertionError("no nonce extension")


def resign_ocsp_exact(der: bytes, key: PrivateKey) -> bytes:
    """An OCSP response signed again by ``key``, contents unchanged."""
    tree = der_parse(der)
    assert tree is not None
    basic = tree[0].children[1].children[0].children[1].children[0]  # type: ignore[index]
    assert basic.children is not None
    basic.children[2] = Node(0x03, b"\x00" + sign_like(key, der_encode(basic.children[:1])))
    return der_encode(tree)
