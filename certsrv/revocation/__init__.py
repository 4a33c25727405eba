"""
Revocation status from every source, decided as one.

Owns: ``core`` (verdicts, the decision rule over sources, ``Revocation``, the OCSP checker
and its cache), ``ocsp`` (the RFC 6960 codec and response verification), ``crlfiles``
(``--crl`` files), ``crlfetch`` (CRLs from distribution points), ``http`` and ``ocspfetch``
(the bounded, non-blocking fetchers).
May import: ``certsrv.x509``.
"""
