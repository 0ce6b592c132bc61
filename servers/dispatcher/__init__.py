"""The dispatcher proxy: the V2 API in front of a pool, a central queue, and the simulator's policy objects.

Each infer request becomes a ``Query`` in the same ``DispatchCore`` the simulator drives (``state``); when the policy
starts it on an instance, the request body is forwarded byte for byte and the instance's response is passed back
unchanged (``proxy``). Service times observed here (the forward's round trip) update the latency model online. The
live-only early slot lives in ``prefetch``; admin endpoints in ``admin``; ``/metrics`` in ``metrics``.
"""

from servers.dispatcher.app import KIND, create_app
from servers.dispatcher.config import DispatcherConfig
from servers.dispatcher.state import DISPATCHER, Dispatcher

__all__ = ["DISPATCHER", "KIND", "Dispatcher", "DispatcherConfig", "create_app"]
