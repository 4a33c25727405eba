"""
The server's TLS layer and the one verification of client chains.

Owns: ``verify`` (``ClientCertificatePolicy.judge``: each step of chain verification, fed by
OpenSSL's verify callback in the handshake and by ``verify_chain`` for forwarded chains and
reloads; the TLS alert of every refusal) and ``context`` (the SSL context, the connection
creator, the TLS transport and factory).
May import: ``certsrv.x509``, ``certsrv.access``, ``certsrv.revocation``.
"""
