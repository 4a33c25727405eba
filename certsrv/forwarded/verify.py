"""Certificate chains forwarded by a trusted proxy: verified as the handshake does, remembered."""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from twisted.logger import Logger

from certsrv.exceptions import Reason, RejectedCertificate
from certsrv.tls.verify import ClientVerifier, ConnectionState

__all__ = ["ForwardedVerifier"]

_log = Logger(namespace="certsrv.tls")



class ForwardedVerifier:
    """``verifier.verify_chain`` for forwarded chains, remembering recent verdicts briefly."""

    def __init__(self, verifier: ClientVerifier, cache_size: int = 1024,
                 cache_seconds: float = 60.0) -> None:
        self.verifier = verifier
        self.settings = verifier.settings
        self.cache_size = cache_size
        self.cache_seconds = cache_seconds
        self._cache: OrderedDict[bytes, tuple[float, ConnectionState | RejectedCertificate]]
        self._cache = OrderedDict()

    def verify(self, leaf: x509.Certificate, chain: Sequence[x509.Certificate]
               ) -> ConnectionState | RejectedCertificate:
        """The forwarded client's state (identity, revocation plan), or why it is refused."""
        if self.settings is not self.verifier.settings:  # new CAs: forget old verdicts
            self._cache.clear()
            self.settings = self.verifier.settings
        key = hashlib.sha256(b"".join(c.fingerprint(hashes.SHA256())
                                      for c in (leaf, *chain))).digest()
        now = self.verifier.clock.seconds()
        cached = self._cache.get(key)
        if cached is not None and cached[0] > now:
            self._cache.move_to_end(key)
            return cached[1]
        try:
            result = self.verifier.verify_chain(leaf, chain)
        except Exception as e:  # never let a hostile certificate become a 500
            _log.failure("unexpected error while verifying a forwarded certificate")
            result = RejectedCertificate(Reason.INTERNAL_ERROR, str(e.__class__.__name__), leaf)
        self._cache[key] = (now + self.cache_seconds, result)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return result
