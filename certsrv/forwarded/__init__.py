"""
Client certificates forwarded by a TLS-terminating proxy.

Owns: ``headers`` (RFC 9440, nginx and Envoy XFCC formats, parsed strictly), ``trust``
(which peers may forward: address and pinned certificate) and ``verify`` (forwarded chains
verified by ``certsrv.tls.verify``, with a short cache).
May import: ``certsrv.x509``, ``certsrv.tls``.
"""
