"""
The running server: options, configuration, reloads, lifecycle, workers, metrics.

Owns: ``options`` (the ``twistd certsrv`` options and ``makeService``), ``config`` (files
read and checked into settings), ``build`` (the site and revocation sources), ``app`` and
``apploader`` (``protected_site``, ``--app``), ``reload``, ``lifecycle`` (draining, expiry
warnings), ``workers`` and ``endpoints`` (``--workers``), ``metrics`` (``--metrics``) and
``startup`` (one-line startup errors).
May import: every layer below it: ``certsrv.x509``, ``certsrv.access``,
``certsrv.revocation``, ``certsrv.tls``, ``certsrv.forwarded``, ``certsrv.web``.
"""
