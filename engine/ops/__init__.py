"""The operators' side of the engine: what the console, /metrics and the health checks
read of Redis, and the side channel the workers write for them.

* :mod:`engine.ops.console`: the console's reads and requests (tallies, heartbeats, dead
  letters, replay requests, login sessions);
* :mod:`engine.ops.gauges`: Redis' memory and the outbox's backlog and lag per consumer;
* :mod:`engine.ops.heartbeat`: a worker process' heartbeat (written by the workers);
* :mod:`engine.ops.replays`: a replay request's state (answered by the platform forwarder).

None of it is the shop's state: the console must be able to show a Redis that lost it.
"""
