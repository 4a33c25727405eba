"""
twisted.web glue: the site, the per-request gate, and limits on every listener.

Owns: ``site`` (``CertsrvSite``, ``/secure``, ``identity_of``), ``gate`` (the one gate in front
of every resource: request view, re-verification after reloads, access policy, validity,
revocation; ``protect``), ``http11`` (HTTP/1.1 parsed by llhttp through httptools, each
request handed to twisted.web's ``Request`` in turn), ``bounds`` (the limit values, how a
refusal is worded and logged) and ``limits`` (those limits on HTTP/1.1 and HTTP/2, the
channel that picks one by ALPN, draining).
May import: ``certsrv.x509``, ``certsrv.access``, ``certsrv.revocation``, ``certsrv.tls``,
``certsrv.forwarded``.
"""
