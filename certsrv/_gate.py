"""
The per-request gate in front of every resource: validity by the clock, revocation status.

A verified handshake is not the end of it: a certificate can expire or be revoked while a
keep-alive connection stays open, and the first OCSP answer for a new certificate may still
be on its way. The gate holds such requests (``NOT_DONE_YET``) until the status is known,
and re-checks the cached status on every request.
"""

from __future__ import annotations

from typing import Any

from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import http, resource, server

from certsrv._forwarded import ForwardedCertError
from certsrv._forwarding import strip_forwarded_headers
from certsrv._forwardverify import ForwardedClient
from certsrv._identity import ClientIdentity
from certsrv._policy import Claims, Decision
from certsrv._policy import Verdict as AccessVerdict
from certsrv._revocation import Status, Verdict
from certsrv._verify import (
    ClientCertificatePolicy,
    ConnectionState,
    log_rejection,
)
from certsrv._web import (
    CertsrvSite,
    connection_state,
    forbidden,
    identity_of,
    refuse,
    set_forwarded_identity,
)
from certsrv.exceptions import Reason, RejectedCertificate

__all__ = ["Gate"]

_log = Logger(namespace="certsrv.tls")
_GATED = "_certsrv_gated"
_Client = ConnectionState | ForwardedClient
_access_log = Logger(namespace="certsrv.policy")


class Gate(resource.Resource):
    """Admits a request to ``wrapped`` only while its client certificate is still good."""

    isLeaf = True

    def __init__(self, wrapped: resource.IResource, require_identity: bool = False) -> None:
        super().__init__()
        self.wrapped = wrapped
        self.require_identity = require_identity

    def render(self, request: server.Request) -> Any:
        """Check, then hand the request to the wrapped tree (now or once the status is known)."""
        request.setHeader(b"server", b"certsrv")  # not Twisted's name and version
        site = request.site
        if not isinstance(site, CertsrvSite):
            _log.error("a certsrv gate is served by {site}, not by a certsrv site: it cannot "
                       "see client certificates, so it refuses every request",
                       site=type(site).__name__, reason="misconfigured")
            return refuse(request, "misconfigured", "this resource must be served by certsrv",
                          status=http.INTERNAL_SERVER_ERROR)
        if getattr(request, _GATED, False):
            # An inner gate (certsrv.protect inside a served tree): everything was checked
            # once already; only its demand for a certificate adds anything.
            if self.require_identity and identity_of(request) is None:
                return forbidden(request, Reason.NO_CERTIFICATE)
            return self._forward(request)
        setattr(request, _GATED, True)
        # The site's current policy: a reload replaces it.
        policy: ClientCertificatePolicy = site.policy
        client = self._client(request, site, policy)
        if isinstance(client, bytes):
            return client
        identity = client.identity if client is not None else None
        if policy.access is not None:
            claims = None
            if client is not None and identity is not None:
                if client.claims is None:
                    client.claims = Claims(identity)
                claims = client.claims
            decision = policy.access.decide(request.path, request.method, claims)
            _log_access(request, decision, identity)
            if not decision.allowed:
                return refuse(request, decision.reason.value, decision.message)
            if decision.reason is AccessVerdict.PUBLIC:
                return self._forward(request)
        if client is None or identity is None:
            if self.require_identity:
                return forbidden(request, Reason.NO_CERTIFICATE)
            return self._forward(request)
        now = policy.clock.seconds()
        if now > identity.valid_until:
            return self._deny(request, identity, Reason.EXPIRED, "by the server clock")
        if now < identity.not_before:
            return self._deny(request, identity, Reason.NOT_YET_VALID, "by the server clock")
        revocation = policy.revocation
        if revocation is None or not client.revocation:
            return self._forward(request)
        # The connection remembers the cached verdict until the cache could change it.
        memo = client.revocation_memo
        if memo is not None and now < memo[1]:
            verdict: Verdict | None = memo[0]
        else:
            found = revocation.lookup_until(client.revocation)
            client.revocation_memo = found
            verdict = found[0] if found is not None else None
        if verdict is not None:
            denial = self._judge(verdict, request, identity, policy.fail_open)
            return denial if denial is not None else self._forward(request)
        gone: list[bool] = []
        request.notifyFinish().addErrback(lambda _: gone.append(True))

        def decided(verdict: Verdict) -> None:
            if gone:
                return  # the client went away while we waited
            try:
                denial = self._judge(verdict, request, identity, policy.fail_open)
                if denial is None:
                    request.render(resource.getChildForRequest(self.wrapped, request))
                else:
                    request.write(denial)
                    request.finish()
            except BaseException:
                request.processingFailed(Failure())

        revocation.check(client.revocation).addCallback(decided)
        return server.NOT_DONE_YET

    def _client(self, request: server.Request, site: CertsrvSite,
                policy: ClientCertificatePolicy) -> _Client | None | bytes:
        """Who the request comes from: its connection's certificate, or the one a trusted
        proxy forwarded (never the proxy's own); bytes are a refusal to send instead."""
        forwarding = site.forwarded
        if forwarding is None or not forwarding.trusts(request):
            strip_forwarded_headers(request, forwarding)
            return connection_state(request)
        try:
            chain = forwarding.certificate(request)
        except ForwardedCertError as e:
            _log.warn("malformed forwarded certificate from proxy {peer}: {reason} ({detail})",
                      peer=str(request.getClientAddress()), reason=e.reason.value,
                      detail=e.detail, decision="rejected", stage="request")
            strip_forwarded_headers(request, forwarding)
            return refuse(request, e.reason.value, e.reason.sentence, e.detail,
                          status=http.BAD_REQUEST)
        strip_forwarded_headers(request, forwarding)
        if chain is None:
            set_forwarded_identity(request, None)
            return None
        result = policy.forwarded_verifier().verify(chain.leaf, chain.chain)
        if isinstance(result, RejectedCertificate):
            log_rejection(result, request.getClientAddress(), "request", forwarded=True,
                          path=request.path[:200].decode("latin-1"))
            return forbidden(request, result.reason, result.detail)
        set_forwarded_identity(request, result.identity)
        return result

    def _judge(self, verdict: Verdict, request: server.Request, identity: ClientIdentity,
               fail_open: bool) -> bytes | None:
        if verdict.status is Status.REVOKED:
            return self._deny(request, identity, Reason.REVOKED, verdict.detail)
        if verdict.status is Status.UNKNOWN:
            if not fail_open:
                return self._deny(request, identity, Reason.REVOCATION_UNKNOWN,
                                  f"{verdict.reason}: {verdict.detail}")
            _log.warn("admitted {subject} although its revocation status is unknown "
                      "(--revocation-fail open): {problem}", decision="accepted",
                      stage="request",
                      reason=Reason.REVOCATION_UNKNOWN.value, problem=verdict.reason,
                      subject=verdict.subject)
        return None

    def _forward(self, request: server.Request) -> Any:
        return resource.getChildForRequest(self.wrapped, request).render(request)

    def _deny(self, request: server.Request, identity: ClientIdentity, reason: Reason,
              detail: str) -> bytes:
        log_rejection(RejectedCertificate(reason, detail, identity.certificate),
                      request.getClientAddress(), "request",
                      path=request.path[:200].decode("latin-1"))
        return forbidden(request, reason, detail)


def _log_access(request: server.Request, decision: Decision,
                identity: ClientIdentity | None) -> None:
    _access_log.info(
        "{method} {path}: {verdict} by {rule} for {subject}",
        method=request.method.decode("latin-1"), path=request.path[:200].decode("latin-1"),
        verdict="allowed" if decision.allowed else "denied", rule=decision.rule or "no rule",
        subject=identity.subject if identity else None,
        sha256=identity.sha256 if identity else None,
        peer=str(request.getClientAddress()), **decision.log_fields())
