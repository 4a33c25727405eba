"""Putting the pieces together: the site behind the per-request gate, and its revocation sources."""

from __future__ import annotations

from typing import Any

from twisted.internet import threads
from twisted.internet.interfaces import IReactorTime
from twisted.web import resource

from certsrv.forwarded.trust import Forwarding
from certsrv.revocation.crlfetch import CRLChecker, CRLFetcher
from certsrv.revocation.decision import Checker, Revocation
from certsrv.revocation.http import BoundedFetcher
from certsrv.revocation.ocspcheck import OCSPChecker
from certsrv.revocation.ocspfetch import HTTPFetcher
from certsrv.server.config import ServerConfig
from certsrv.tls.context import Current
from certsrv.tls.verify import ClientVerifier
from certsrv.web.gate import Gate
from certsrv.web.site import CertsrvSite, Limits, root_resource

__all__ = ["build_site", "revocation_for"]


def build_site(current: Current | ClientVerifier, *, app: resource.IResource | None = None,
               http2: bool = True, limits: Limits | None = None,
               forwarded: Forwarding | None = None,
               require_certificate: bool = True) -> CertsrvSite:
    """A site serving ``app`` (default: ``/secure``) behind the gate, reading the
    configuration in force from ``current`` (shared with its ``ServerTLS``); without
    ``require_certificate``, ``app`` decides where one is needed (``certsrv.protect``)."""
    gate = (Gate(app, require_identity=require_certificate) if app is not None
            else Gate(root_resource()))
    return CertsrvSite(gate, current, http2=http2, limits=limits, forwarded=forwarded)


def revocation_for(config: ServerConfig, clock: IReactorTime, reactor: Any) -> Revocation | None:
    """The network revocation sources the configuration asks for (None: none), kept across
    reloads so their caches are; ``Revocation.close`` closes their fetchers at shutdown."""
    checkers: list[Checker] = []
    fetchers: list[BoundedFetcher] = []
    ocsp = config.ocsp
    if ocsp.enabled:
        fetcher = HTTPFetcher(reactor, clock, ocsp.timeout, ocsp.max_response_bytes)
        fetchers.append(fetcher)
        checkers.append(OCSPChecker(ocsp, clock, fetcher))
    crl = config.crl_fetch
    if crl.enabled:
        crl_fetcher = CRLFetcher(reactor, clock, crl.timeout, crl.max_bytes)
        fetchers.append(crl_fetcher)
        # Parsing a large CRL takes a while: do it in a thread, off the reactor.
        checkers.append(CRLChecker(
            crl, clock, crl_fetcher,
            offload=lambda work: threads.deferToThreadPool(reactor, reactor.getThreadPool(),
                                                           work)))
    return Revocation(checkers, fetchers) if checkers else None
