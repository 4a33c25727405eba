"""
Who may do what: the ``--policy`` rule language and the one view of a request.

Owns: ``request`` (the path segments exactly as twisted.web dispatches them, and what is
refused as ambiguous) and ``policy`` (parsing, checking and deciding ``--policy`` rules).
May import: ``certsrv.x509``.
"""
