"""
twisted.web glue: the site, the per-request gate, and limits on every listener.

Owns: ``site`` (``CertsrvSite``, ``/secure``, ``identity_of``), ``gate`` (the one gate in front
of every resource: request view, re-verification after reloads, access policy, validity,
revocation; ``protect``) and ``limits`` (header, body, time and connection limits on
HTTP/1.1 and HTTP/2, draining).
May import: ``certsrv.x509``, ``certsrv.access``, ``certsrv.revocation``, ``certsrv.tls``,
``certsrv.forwarded``.
"""
