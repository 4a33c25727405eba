"""
The treq-based client that presents a certificate and explains refusals.

Owns: ``http`` (``http_client``, the server-identity check, redirects, bounded bodies,
``explain``), ``renew`` (renewal over EST: when, the request, the answer, the files,
``AutoRenewal``), ``cli`` (``certsrv-client``) and ``renewcli`` (``certsrv-client renew``).
May import: ``certsrv.x509``.
"""
