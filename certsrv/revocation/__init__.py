"""
Revocation status from every source, decided as one.

Owns: ``decision`` (``Scope``, verdicts, the ``Checker`` interface every source has, the
decision rule over sources, ``Revocation``), ``cache`` (the one cache of the network
sources: bounded, de-duplicated, refreshed ahead, failures retried), ``ocspcheck`` (OCSP as
a source: settings, responder URLs, ``OCSPChecker``), ``ocsp`` (the RFC 6960 codec and
response verification), ``crlfiles`` (``--crl`` files), ``crlfetch`` (CRLs from
distribution points), ``crlscope`` (what one CRL says of one certificate: scopes, reasons,
indirect entries, deltas), ``http`` and ``ocspfetch`` (the bounded, non-blocking fetchers).
Failures are ``certsrv.exceptions.RevocationError`` with a ``RevocationProblem`` reason.
May import: ``certsrv.x509``.
"""
