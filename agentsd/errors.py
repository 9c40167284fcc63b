"""User-facing errors. Each carries one message that names what is wrong and what was expected.

The CLI prints these without a traceback and exits 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class AgentsdError(Exception):
    """Base of every error a user can fix (bad input, missing file, incompatible store)."""


class ConfigError(AgentsdError):
    """A configuration file or override is unreadable or invalid."""


class StoreError(AgentsdError):
    """The replay store cannot be opened, read or written as asked."""


class StoreNotFoundError(StoreError):
    """No store exists at the given location and creating one was not asked for."""


class SchemaVersionError(StoreError):
    """The store was written by a newer schema than this agentsd understands."""


class CorruptRowError(StoreError):
    """A stored row fails its integrity checks (length, checksum, JSON)."""


class TrajectoryStateError(StoreError):
    """An operation does not fit the trajectory's state (append to a finalized one, ...)."""


class ModelError(AgentsdError):
    """A model cannot be found, fetched or converted."""


class LineageError(AgentsdError):
    """Publishing would give a version number to other weights, or fork the store's lineage."""
