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
from twisted.web import resource, server

from certsrv._identity import ClientIdentity
from certsrv._policy import Claims, Decision
from certsrv._policy import Verdict as AccessVerdict
from certsrv._revocation import Status, Verdict
from certsrv._verify import ClientCertificatePolicy, ConnectionState, log_rejection
from certsrv._web import connection_state, forbidden, refuse
from certsrv.exceptions import Reason, RejectedCertificate

__all__ = ["Gate"]

_log = Logger(namespace="certsrv.tls")
_access_log = Logger(namespace="certsrv.policy")


class Gate(resource.Resource):
    """Admits a request to ``wrapped`` only while its client certificate is still good."""

    isLeaf = True

    def __init__(self, wrapped: resource.IResource) -> None:
        super().__init__()
        self.wrapped = wrapped

    def render(self, request: server.Request) -> Any:
        """Check, then hand the request to the wrapped tree (now or once the status is known)."""
        state = connection_state(request)
        identity = state.identity if state is not None else None
        # The site's current policy: a reload replaces it.
        policy: ClientCertificatePolicy = request.site.policy  # type: ignore[union-attr]
        if policy.access is not None:
            claims = None
            if state is not None and identity is not None:
                if state.claims is None:
                    state.claims = Claims(identity)
                claims = state.claims
            decision = policy.access.decide(request.path, request.method, claims)
            _log_access(request, decision, identity)
            if not decision.allowed:
                return refuse(request, decision.reason.value, decision.message)
            if decision.reason is AccessVerdict.PUBLIC:
                return self._forward(request)
        if state is None or identity is None:
            return self._forward(request)
        now = policy.clock.seconds()
        if now > identity.valid_until:
            return self._deny(request, state, Reason.EXPIRED, "by the server clock")
        if now < identity.not_before:
            return self._deny(request, state, Reason.NOT_YET_VALID, "by the server clock")
        revocation = policy.revocation
        if revocation is None or not state.revocation:
            return self._forward(request)
        verdict = revocation.lookup(state.revocation)
        if verdict is not None:
            denial = self._judge(verdict, request, state, policy.fail_open)
            return denial if denial is not None else self._forward(request)
        gone: list[bool] = []
        request.notifyFinish().addErrback(lambda _: gone.append(True))

        def decided(verdict: Verdict) -> None:
            if gone:
                return  # the client went away while we waited
            try:
                denial = self._judge(verdict, request, state, policy.fail_open)
                if denial is None:
                    request.render(resource.getChildForRequest(self.wrapped, request))
                else:
                    request.write(denial)
                    request.finish()
            except BaseException:
                request.processingFailed(Failure())

        revocation.check(state.revocation).addCallback(decided)
        return server.NOT_DONE_YET

    def _judge(self, verdict: Verdict, request: server.Request, state: ConnectionState,
               fail_open: bool) -> bytes | None:
        if verdict.status is Status.REVOKED:
            return self._deny(request, state, Reason.REVOKED, verdict.detail)
        if verdict.status is Status.UNKNOWN:
            if not fail_open:
                return self._deny(request, state, Reason.REVOCATION_UNKNOWN,
                                  f"{verdict.reason}: {verdict.detail}")
            _log.warn("admitted {subject} although its revocation status is unknown "
                      "(--revocation-fail open): {problem}", decision="accepted",
                      reason=Reason.REVOCATION_UNKNOWN.value, problem=verdict.reason,
                      subject=verdict.subject)
        return None

    def _forward(self, request: server.Request) -> Any:
        return resource.getChildForRequest(self.wrapped, request).render(request)

    def _deny(self, request: server.Request, state: ConnectionState, reason: Reason,
              detail: str) -> bytes:
        identity = state.identity
        log_rejection(RejectedCertificate(reason, detail, identity.certificate if identity
                                          else None), request.getClientAddress(),
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
