"""
The treq-based client that presents a certificate and explains refusals.

Owns: ``http`` (``http_client``, the server-identity check, redirects, bounded bodies,
``explain``) and ``cli`` (``certsrv-client``).
May import: ``certsrv.x509``.
"""
