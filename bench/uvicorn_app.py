"""The ASGI app uvicorn serves in bench/run: ``/secure`` answers a fixed body with a
Content-Length (without one uvicorn would answer chunked)."""

from collections.abc import Awaitable, Callable
from typing import Any

BODY = b"Client certificate accepted\n"
HEADERS = [(b"content-type", b"text/plain; charset=utf-8"),
           (b"content-length", str(len(BODY)).encode())]
NOT_FOUND = [(b"content-length", b"0")]


async def app(scope: dict[str, Any], receive: Callable[[], Awaitable[Any]],
              send: Callable[[dict[str, Any]], Awaitable[None]]) -> None:
    """200 with BODY for /secure, 404 for anything else."""
    if scope["type"] != "http":
        return
    found = scope["path"] == "/secure"
    await send({"type": "http.response.start", "status": 200 if found else 404,
                "headers": HEADERS if found else NOT_FOUND})
    await send({"type": "http.response.body", "body": BODY if found else b""})
