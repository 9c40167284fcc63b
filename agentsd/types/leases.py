"""A collect or eval run's plan as the store holds it: one EpisodeLease per episode, and the
EpisodeClaim a collector gets when it takes one.

Not guaranteed: that a lease's holder is alive (its expiry says when another collector may take over).
"""

from __future__ import annotations

from pydantic import Field

from agentsd.types.core import LeaseState, StrictModel


class EpisodeLease(StrictModel):
    """One episode of a collect or eval run's plan as the store holds it.

    `attempt` is the attempt now running or the last one started (-1: none yet); the trajectory of
    attempt a is `<run>.<episode:06d>.<a>`. A RUNNING lease whose `expires_at` has passed belongs to a
    collector that stopped beating: the next claim takes it over."""

    run: str
    episode: int = Field(ge=0)
    state: LeaseState
    attempt: int = Field(ge=-1)
    holder: str | None = None
    claimed_at: float | None = None
    expires_at: float | None = None
    updated_at: float


class EpisodeClaim(StrictModel):
    """What a claim hands a collector: the episode, the attempt to run it as, and the attempt it
    took over from a collector whose lease expired (None when the episode was waiting)."""

    episode: int = Field(ge=0)
    attempt: int = Field(ge=0)
    taken_over: int | None = None
    previous_holder: str | None = None
