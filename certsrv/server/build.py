"""Putting the pieces together: the site behind the per-request gate, and its OCSP checker."""

from __future__ import annotations

from typing import Any

from twisted.internet import threads
from twisted.internet.interfaces import IReactorTime
from twisted.web import resource

from certsrv.forwarded.trust import Forwarding
from certsrv.revocation.core import Checker, Fetcher, OCSPChecker, OCSPSettings, Revocation
from certsrv.revocation.crlfetch import CRLChecker, CRLFetcher
from certsrv.revocation.ocspfetch import HTTPFetcher
from certsrv.server.config import ServerConfig
from certsrv.tls.verify import ClientCertificatePolicy
from certsrv.web.gate import Gate
from certsrv.web.site import CertsrvSite, Limits, root_resource

__all__ = ["build_site", "ocsp_checker", "revocation_for"]


def build_site(policy: ClientCertificatePolicy, *, app: resource.IResource | None = None,
               http2: bool = True, limits: Limits | None = None,
               forwarded: Forwarding | None = None) -> CertsrvSite:
    """A site serving ``app`` (default: ``/secure``) behind the gate."""
    gate = Gate(app, require_identity=True) if app is not None else Gate(root_resource())
    return CertsrvSite(gate, policy, http2=http2, limits=limits, forwarded=forwarded)


def ocsp_checker(settings: OCSPSettings, clock: IReactorTime, reactor: Any,
                 fetch: Fetcher | None = None) -> OCSPChecker | None:
    """The OCSP checker the settings ask for (None when OCSP is off)."""
    if not settings.enabled:
        return None
    if fetch is None:
        fetch = HTTPFetcher(reactor, clock, settings.timeout, settings.max_response_bytes)
    return OCSPChecker(settings, clock, fetch)


def revocation_for(config: ServerConfig, clock: IReactorTime, reactor: Any) -> Revocation | None:
    """The revocation sources the configuration asks for, sharing caches across reloads."""
    checkers: list[Checker] = []
    ocsp = ocsp_checker(config.ocsp, clock, reactor)
    if ocsp is not None:
        checkers.append(ocsp)
    fetch = config.crl_fetch
    if fetch.enabled:
        # Parsing a large CRL takes a while: do it in a thread, off the reactor.
        checkers.append(CRLChecker(
            fetch, clock, CRLFetcher(reactor, clock, fetch.timeout, fetch.max_bytes),
            offload=lambda work: threads.deferToThreadPool(reactor, reactor.getThreadPool(),
                                                           work)))
    return Revocation(checkers) if checkers else None
