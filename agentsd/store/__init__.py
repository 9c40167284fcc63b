"""The replay store: trajectories appended turn by turn, read by trainers. See store.py."""

from agentsd.liveness import writer_alive, writer_identity
from agentsd.store.engine import sqlite_url
from agentsd.store.store import ReplayStore

__all__ = ["ReplayStore", "sqlite_url", "writer_alive", "writer_identity"]
