"""The base of every config model, and the embedded defaults every section starts from.

A config model forbids unknown keys, so a misspelt key fails validation by name instead of being
ignored. Not guaranteed: nothing here checks that a default store or model exists.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

DEFAULT_STORE_URL = "sqlite:///runs/replay.db"
DEFAULT_MODEL = "default"


class ConfigModel(BaseModel):
    """A config section: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")
