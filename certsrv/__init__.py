"""certsrv: an HTTPS server on Twisted that authenticates clients by X.509 certificate."""

from __future__ import annotations

__all__: list[str] = []
