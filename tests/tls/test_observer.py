"""certsrv.tls.observer: the Observer interface components report decisions through."""

from __future__ import annotations

import inspect

from twisted.trial.unittest import SynchronousTestCase

from certsrv.server.metrics import Metrics
from certsrv.tls.observer import NullObserver, Observer


def _methods(cls: type) -> dict[str, inspect.Signature]:
    return {name: inspect.signature(member) for name, member in vars(cls).items()
            if callable(member) and not name.startswith("_")}


class ObserverTests(SynchronousTestCase):
    """NullObserver and Metrics implement exactly the interface; NullObserver ignores all."""

    def test_implementations_match_the_interface(self) -> None:
        wanted = _methods(Observer)
        self.assertIn("rejected", wanted)
        self.assertEqual(_methods(NullObserver), wanted)
        for name, signature in wanted.items():
            self.assertEqual(inspect.signature(getattr(Metrics, name)), signature, name)

    def test_null_observer_ignores_everything(self) -> None:
        observer = NullObserver()
        observer.accepted()
        observer.accepted("via_forwarded")
        observer.rejected("expired")
        observer.request_refused("body_too_large")
        observer.access_decided("allowed")
        observer.request_finished(200)
        observer.anonymous()
        observer.reloaded()
        observer.reload_refused()
