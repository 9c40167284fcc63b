"""Collection: many episodes at once over the sandbox fleet, every turn into the replay store.

- collector: the collect run (its plan, its episodes as asyncio tasks, stop and resume).
- queue: one generation queue batching every waiting episode's policy call.
- versions: which policy version each episode samples with, and picking up new ones.
- plan: the run's plan in the store and this collector's leases on its episodes.
- pacing: the staleness an episode started now would be trained at.
- writes: each episode's store writes, in order, off the event loop.
- stats: what one collector process counted.
"""

from agentsd.collect.collector import Collector
from agentsd.collect.stats import CollectStats

__all__ = ["CollectStats", "Collector"]
