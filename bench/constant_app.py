"""A twisted.web tree answering ``/secure`` with the bare server's constant body, for
``twistd certsrv --app constant_app.root --app-path bench``: certsrv's checks measured apart
from its ``/secure`` application (bench/callgrind_request.py)."""

from twisted.web import resource, server

BODY = b"Client certificate accepted\n"


class Secure(resource.Resource):
    """``/secure``: a fixed body, as ``bench/bare_twisted.py`` answers."""

    isLeaf = True

    def render_GET(self, request: server.Request) -> bytes:
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return BODY


root = resource.Resource()
root.putChild(b"secure", Secure())
