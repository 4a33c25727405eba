"""
The server's TLS layer and the one verification of client chains.

Owns: ``verify`` (``ClientVerifier.judge``: each step of chain verification, fed by
OpenSSL's verify callback in the handshake and by ``verify_chain`` for forwarded chains and
reloads; the TLS alert of every refusal), ``context`` (the SSL context, ``Current``: the
configuration in force, read by the connection creator and the site alike; the TLS
transport and factory) and ``observer`` (the ``Observer`` interface every component reports
its decisions to; the server's metrics implement it).
May import: ``certsrv.x509``, ``certsrv.access``, ``certsrv.revocation``.
"""
