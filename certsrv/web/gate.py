"""
The per-request gate in front of every resource: the request's view, access, validity, revocation.

A verified handshake is not the end of it: a certificate can expire or be revoked while a
keep-alive connection stays open, the configuration can be reloaded (CRLs, CAs, pins,
policy), and the first OCSP answer for a new certificate may still be on its way. On every
request the gate re-verifies a chain verified under an older configuration, decides the
revocation status against the current sources (holding the request, ``NOT_DONE_YET``,
until it is known), and applies the access policy to the path exactly as twisted.web
dispatches it.
"""

from __future__ import annotations

import time
from typing import Any
from weakref import WeakKeyDictionary

from twisted.internet import defer
from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure
from twisted.web import http, resource, server

from certsrv.access.policy import Claims, Decision, Policy
from certsrv.access.request import Segments, bad_method, segments_of
from certsrv.exceptions import AccessReason, Reason, RejectedCertificate
from certsrv.forwarded.headers import ForwardedCertError
from certsrv.forwarded.trust import strip_forwarded_headers
from certsrv.forwarded.verify import ForwardedVerifier
from certsrv.revocation.decision import Plan, Revocation, Verdict
from certsrv.tls.observer import Observer
from certsrv.tls.verify import (
    ClientVerifier,
    ConnectionState,
    log_rejection,
)
from certsrv.web.site import (
    CertsrvSite,
    connection_state,
    forbidden,
    identity_of,
    refuse,
    set_forwarded_identity,
)
from certsrv.x509.identity import ClientIdentity

__all__ = ["Gate", "protect"]

_log = Logger(namespace="certsrv.tls")
_GATED = "_certsrv_gated"
# On a request's channel: (method, path, segments) of the last request whose view passed.
_VIEW = "_certsrv_view"
_PEER = "_certsrv_peer"  # on a request's channel: the text of its peer's address
_PUBLIC = AccessReason.PUBLIC  # read per request: a module global, not an Enum lookup
# The revocation decision on a trusted proxy's own certificate, learnt while the request waited.
_PEER_VERDICT = "_certsrv_peer_verdict"
_access_log = Logger(namespace="certsrv.policy")


class Gate(resource.Resource):
    """Admits a request to ``wrapped`` only while its client certificate is still good."""

    isLeaf = True

    def __init__(self, wrapped: resource.IResource, require_identity: bool = False) -> None:
        super().__init__()
        self.wrapped = wrapped
        self.require_identity = require_identity
        # Forwarded chains verified under each verifier (a reload brings a new one).
        self._forwarded: WeakKeyDictionary[ClientVerifier, ForwardedVerifier]
        self._forwarded = WeakKeyDictionary()

    def render(self, request: server.Request) -> Any:
        """Check, then hand the request to the wrapped tree (now or once the status is known):
        the request's view, its client (forwarded or not, re-verified after a reload), the
        access rules, then the certificate's validity and revocation status."""
        site = request.site
        if not isinstance(site, CertsrvSite):
            return _misconfigured(request, site)
        if getattr(request, _GATED, False):
            # An inner gate (certsrv.protect inside a served tree): everything was checked
            # once already; only its demand for a certificate adds anything.
            if self.require_identity and identity_of(request) is None:
                return forbidden(request, Reason.NO_CERTIFICATE)
            return self._forward(request)
        setattr(request, _GATED, True)
        observer = site.observer
        # The view of the request last let through on this connection, if this is it again.
        view = getattr(request.channel, _VIEW, None)
        if view is not None and view[0] == request.method and view[1] == request.path:
            segments: Segments = view[2]
        else:
            viewed = self._view(request, observer)
            if isinstance(viewed, bytes):
                return viewed
            segments = viewed
        verifier = site.current.verifier  # the one in force: a reload replaces it
        client: ConnectionState | None | bytes | defer.Deferred[Verdict]
        if site.forwarded is None:
            # No proxy may forward: the connection's own client (connection_state, inline
            # for HTTP/1.1; an HTTP/2 stream has no transport), and no forwarded headers.
            client = getattr(getattr(request.channel, "transport", None), "certsrv_state",
                                  None)
            if client is None:
                client = connection_state(request)
            strip_forwarded_headers(request, None)
        else:
            client = self._client(request, site, verifier)
        if client is not None and not isinstance(client, ConnectionState):
            # (Deferred is an ABC: a plain class is tested first, as it is the usual case.)
            if isinstance(client, bytes):
                return client
            return self._render_when(request, client)
        if client is not None and client.identity is not None and client.verifier is not verifier:
            refusal = self._reverify(request, observer, client, verifier)
            if refusal is not None:
                return refusal
        access = verifier.access
        if access is not None:
            memo = client.access_memo if client is not None else None
            if (memo is not None and memo[0] is access and memo[1] == request.method
                    and memo[2] == request.path):
                # The same request again on this connection (same certificate, same policy):
                # the same decision, and the same event (emitted, and counted, again).
                decision = memo[3]
                _emit_access(request, observer, decision, memo[4])
            else:
                decision = self._decide(request, observer, access, client, segments)
            if not decision.allowed:
                return refuse(request, decision.reason.value, decision.message)
            if decision.reason is _PUBLIC:
                return self._forward(request)
        identity = client.identity if client is not None else None
        if client is None or identity is None:
            if self.require_identity:
                return forbidden(request, Reason.NO_CERTIFICATE)
            return self._forward(request)
        return self._admit(request, observer, verifier, client, identity)

    def _view(self, request: server.Request, observer: Observer) -> Segments | bytes:
        """The path segments twisted.web will dispatch by, or a 400 for what servers behind
        certsrv could read differently (see ``certsrv.access.request``)."""
        segments = None
        if bad_method(request.method):
            reason = AccessReason.BAD_METHOD
        else:
            segments = segments_of(request.path,
                                   tuple((request.prepath or []) + (request.postpath or [])))
            reason = AccessReason.BAD_PATH
        if segments is not None:
            setattr(request.channel, _VIEW, (request.method, request.path, segments))
            return segments
        state = connection_state(request)
        _record_access(request, observer, Decision(False, None, reason),
                       state.identity if state is not None else None)
        return refuse(request, reason.value, reason.sentence, status=http.BAD_REQUEST)

    def _client(self, request: server.Request, site: CertsrvSite, verifier: ClientVerifier
                ) -> ConnectionState | None | bytes | defer.Deferred[Verdict]:
        """Who the request comes from: its connection's certificate, or the one a trusted
        proxy forwarded (never the proxy's own); bytes are a refusal to send instead, and a
        Deferred fires once the proxy's own revocation status is known."""
        forwarding = site.forwarded
        state = connection_state(request)
        if forwarding is None or not forwarding.trusts(
                request, state.identity if state is not None else None):
            strip_forwarded_headers(request, forwarding)
            return state
        if state is not None and state.identity is not None:
            # The proxy vouches for others only while its own certificate would admit it.
            problem = self._check_peer(request, site.observer, verifier, state)
            if problem is not None:
                return problem
        try:
            chain = forwarding.certificate(request)
        except ForwardedCertError as e:
            _log.warn("malformed forwarded certificate from proxy {peer}: {reason} ({detail})",
                      peer=str(request.getClientAddress()), reason=e.reason.value,
                      detail=e.detail, decision="rejected", stage="request")
            site.observer.request_refused(e.reason.value)
            strip_forwarded_headers(request, forwarding)
            return refuse(request, e.reason.value, e.reason.sentence, e.detail,
                          status=http.BAD_REQUEST)
        strip_forwarded_headers(request, forwarding)
        if chain is None:
            set_forwarded_identity(request, None)
            return None
        forwarded = self._forwarded.get(verifier)
        if forwarded is None:
            forwarded = self._forwarded[verifier] = ForwardedVerifier(verifier)
        result = forwarded.verify(chain.leaf, chain.chain)
        if isinstance(result, RejectedCertificate):
            return _refuse_client(request, site.observer, result, forwarded=True)
        set_forwarded_identity(request, result.identity)
        _warn_admitted(request, result)
        return result

    def _check_peer(self, request: server.Request, observer: Observer, verifier: ClientVerifier,
                    state: ConnectionState) -> bytes | defer.Deferred[Verdict] | None:
        """A trusted proxy's own certificate passes the checks a client's does on every
        request: re-verified after a reload, valid by the clock, not revoked. None: it does;
        bytes: the refusal; a Deferred: its revocation status is being learnt."""
        if state.verifier is not verifier:
            refusal = self._reverify(request, observer, state, verifier)
            if refusal is not None:
                return refusal
        identity = state.identity
        assert identity is not None
        now = verifier.clock.seconds()
        if not identity.not_before <= now <= identity.valid_until:
            reason = Reason.EXPIRED if now > identity.valid_until else Reason.NOT_YET_VALID
            return self._deny(request, observer, identity, reason,
                              "the forwarding proxy's own certificate, by the server clock")
        revocation = verifier.revocation
        if revocation is None or not state.revocation:
            return None
        verdict, remembered = _revocation_verdict(revocation, state, now)
        if verdict is None:
            verdict = getattr(request, _PEER_VERDICT, None)
            if verdict is None:
                return revocation.check(state.revocation)
            remembered = False
        return self._judge(verdict, request, observer, identity, verifier, warn=not remembered)

    def _render_when(self, request: server.Request, waiting: defer.Deferred[Verdict]) -> Any:
        """Render the request again (``NOT_DONE_YET`` meanwhile) once ``waiting`` fires."""
        gone: list[bool] = []
        request.notifyFinish().addErrback(lambda _: gone.append(True))

        def again(verdict: Verdict) -> None:
            if gone:
                return  # the client went away while we waited
            try:
                setattr(request, _PEER_VERDICT, verdict)
                delattr(request, _GATED)
                request.render(self)
            except BaseException:
                request.processingFailed(Failure())

        waiting.addCallback(again)
        return server.NOT_DONE_YET

    def _reverify(self, request: server.Request, observer: Observer, client: ConnectionState,
                  verifier: ClientVerifier) -> bytes | None:
        """Verify an open connection's chain again under a reloaded configuration."""
        chain = [client.chain[depth] for depth in sorted(client.chain)]
        result = verifier.verify_chain(chain[0], chain[1:])
        if isinstance(result, RejectedCertificate):
            return _refuse_client(request, observer, result, reverified=True)
        client.adopt(result)
        _warn_admitted(request, client)
        return None

    def _decide(self, request: server.Request, observer: Observer, access: Policy,
                client: ConnectionState | None, segments: Segments) -> Decision:
        """The ``--policy`` rules' decision for the request, logged and reported."""
        identity = client.identity if client is not None else None
        method, path = request.method, request.path
        claims = None
        if client is not None and identity is not None:
            if client.claims is None:
                client.claims = Claims(identity)
            claims = client.claims
        decision = access.decide(path, method, claims, segments)
        fields = _access_fields(request, decision, identity)
        if client is not None:
            # Remembered for the same request again on this connection (see render).
            client.access_memo = (access, method, path, decision, fields)
        _emit_access(request, observer, decision, fields)
        return decision

    def _admit(self, request: server.Request, observer: Observer, verifier: ClientVerifier,
               client: ConnectionState, identity: ClientIdentity) -> Any:
        """Forward the request while its certificate is valid by the clock and not revoked;
        hold it (``NOT_DONE_YET``) while its revocation status is being learnt."""
        now = verifier.clock.seconds()
        if now > identity.valid_until:
            return self._deny(request, observer, identity, Reason.EXPIRED, "by the server clock")
        if now < identity.not_before:
            return self._deny(request, observer, identity, Reason.NOT_YET_VALID,
                              "by the server clock")
        revocation = verifier.revocation
        if revocation is None or not client.revocation:
            # _forward, inline (the usual way through).
            return resource.getChildForRequest(self.wrapped, request).render(request)
        verdict, remembered = _revocation_verdict(revocation, client, now)
        if verdict is None:
            return self._await(request, observer, verifier, revocation, client.revocation,
                               identity)
        # A remembered verdict was judged (and any fail-open warning logged) before.
        denial = self._judge(verdict, request, observer, identity, verifier, warn=not remembered)
        return denial if denial is not None else self._forward(request)

    def _await(self, request: server.Request, observer: Observer, verifier: ClientVerifier,
               revocation: Revocation, plan: Plan, identity: ClientIdentity) -> Any:
        """Hold the request until the revocation status is known, then answer or forward it."""
        gone: list[bool] = []
        request.notifyFinish().addErrback(lambda _: gone.append(True))

        def decided(verdict: Verdict) -> None:
            if gone:
                return  # the client went away while we waited
            try:
                denial = self._judge(verdict, request, observer, identity, verifier)
                if denial is None:
                    request.render(resource.getChildForRequest(self.wrapped, request))
                else:
                    request.write(denial)
                    request.finish()
            except BaseException:
                request.processingFailed(Failure())

        revocation.check(plan).addCallback(decided)
        return server.NOT_DONE_YET

    def _judge(self, verdict: Verdict, request: server.Request, observer: Observer,
               identity: ClientIdentity, verifier: ClientVerifier, warn: bool = True
               ) -> bytes | None:
        warnings: list[str] | None = [] if warn else None
        rejection = verifier.revocation_refusal(verdict, identity.certificate, warnings)
        if rejection is not None:
            return self._deny(request, observer, identity, rejection.reason, rejection.detail)
        for warning in warnings or ():
            _log.warn("admitted {subject} although its revocation status is unknown "
                      "(--revocation-fail open): {problem}", decision="accepted",
                      stage="request", reason=Reason.REVOCATION_UNKNOWN.value,
                      problem=warning, subject=identity.subject)
        return None

    def _forward(self, request: server.Request) -> Any:
        return resource.getChildForRequest(self.wrapped, request).render(request)

    def _deny(self, request: server.Request, observer: Observer, identity: ClientIdentity,
              reason: Reason, detail: str) -> bytes:
        return _refuse_client(request, observer,
                              RejectedCertificate(reason, detail, identity.certificate))


def _revocation_verdict(revocation: Revocation, client: ConnectionState, now: float
                        ) -> tuple[Verdict | None, bool]:
    """The revocation decision for ``client`` from its connection's memo (remembered: True)
    while no source can have changed it, else from the caches; None: not known yet."""
    memo = client.revocation_memo
    if memo is not None and now < memo[1]:
        return memo[0], True
    verdict, until = revocation.lookup_until(client.revocation)
    client.revocation_memo = (verdict, until) if verdict is not None else None
    return verdict, False


def _misconfigured(request: server.Request, site: object) -> bytes:
    request.setHeader(b"server", b"certsrv")  # not Twisted's name and version
    _log.error("a certsrv gate is served by {site}, not by a certsrv site: it cannot "
               "see client certificates, so it refuses every request",
               site=type(site).__name__, reason=AccessReason.MISCONFIGURED.value)
    reason = AccessReason.MISCONFIGURED
    return refuse(request, reason.value, reason.sentence, status=http.INTERNAL_SERVER_ERROR)


def _refuse_client(request: server.Request, observer: Observer,
                   rejection: RejectedCertificate, **extra: Any) -> bytes:
    """Log and report a client certificate refused after the handshake; the 403 body."""
    log_rejection(rejection, request.getClientAddress(), "request",
                  path=request.path[:200].decode("latin-1"), **extra)
    observer.request_refused(rejection.reason.value)
    return forbidden(request, rejection.reason, rejection.detail)


def _warn_admitted(request: server.Request, client: ConnectionState) -> None:
    # The handshake logs these for its connection; a chain verified here logs them here.
    identity = client.identity
    for warning in client.warnings:
        _log.warn("accepted {subject} although its revocation status is unknown "
                  "(--revocation-fail open): {problem}", decision="accepted", stage="request",
                  reason=Reason.REVOCATION_UNKNOWN.value, problem=warning,
                  subject=identity.subject if identity else None,
                  sha256=identity.sha256 if identity else None,
                  peer=str(request.getClientAddress()))


_ACCESS_TEXT = "{method} {path}: {verdict} by {rule} for {client}"


def _record_access(request: server.Request, observer: Observer, decision: Decision,
                   identity: ClientIdentity | None) -> None:
    """Log an access decision and report it."""
    _emit_access(request, observer, decision, _access_fields(request, decision, identity))


def _access_fields(request: server.Request, decision: Decision,
                   identity: ClientIdentity | None) -> dict[str, Any]:
    """The fields of the event of an access decision on ``request`` but its ``peer`` (a
    connection's memo keeps them; a forwarded client's state is shared by connections)."""
    return dict(
        method=request.method.decode("latin-1"), path=request.path[:200].decode("latin-1"),
        verdict="allowed" if decision.allowed else "denied", rule=decision.rule or "no rule",
        client=identity.subject if identity else "anonymous (no certificate)",
        subject=identity.subject if identity else None,
        sha256=identity.sha256 if identity else None, **decision.log_fields(),
        # What Logger.info adds but the format and the time (see _emit_access).
        log_logger=_access_log, log_level=LogLevel.info, log_namespace=_access_log.namespace,
        log_source=_access_log.source)


def _emit_access(request: server.Request, observer: Observer, decision: Decision,
                 fields: dict[str, Any]) -> None:
    """Emit the event of an access decision and report it. With ``--access-log off`` a
    request let through is still an event, but without text (the text log skips it), like
    an accepted handshake under ``--log-accepted off``: otherwise it would be an access log
    line per request."""
    text: str | None = _ACCESS_TEXT
    if decision.allowed and not getattr(request.site, "access_log", True):
        text = None
    # The peer's text, once per connection (an HTTP/2 stream: per request).
    channel = request.channel
    peer = getattr(channel, _PEER, None)
    if peer is None:
        peer = str(request.getClientAddress())
        setattr(channel, _PEER, peer)
    # Logger.info's event, built here: its check of the level costs more than the rest.
    event = dict(fields, peer=peer, log_format=text, log_time=time.time())
    _access_log.observer(event)
    observer.access_decided(fields["policy_reason"])  # decision.reason.value, made once


def protect(app: resource.IResource) -> resource.IResource:
    """``app`` behind certsrv's gate: only requests with a verified, unexpired, unrevoked
    client certificate (or admitted as public by the access policy) reach it.

    The result must be served by a certsrv site (``protected_site`` or ``twistd certsrv``),
    whose TLS layer does the verification; ``certsrv.identity_of(request)`` then gives the
    client's identity inside ``app``.
    """
    return Gate(app, require_identity=True)
