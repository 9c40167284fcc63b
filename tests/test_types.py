"""Invariants of the core types."""

from __future__ import annotations

import pytest
from helpers import make_task
from pydantic import ValidationError

from agentsd.types import Turn, TurnSource


def test_turn_arrays_must_align() -> None:
    with pytest.raises(ValidationError, match="logprobs has 1 entries, completion_ids has 2"):
        Turn(index=0, completion_ids=[1, 2], logprobs=[-0.1])
    with pytest.raises(ValidationError, match="loss_mask has 3 entries, completion_ids has 2"):
        Turn(index=0, completion_ids=[1, 2], logprobs=[-0.1, -0.2], loss_mask=[True, False, True])
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        Turn(index=0, completion_ids=[], logprobs=[], colour="red")  # pyright: ignore[reportCallIssue]


def test_only_agent_tokens_are_trainable() -> None:
    agent = Turn(index=0, completion_ids=[1, 2, 3], logprobs=[0, 0, 0], loss_mask=[True, False, True])
    assert agent.trainable_mask() == [True, False, True]
    assert Turn(index=0, completion_ids=[1, 2], logprobs=[0, 0]).trainable_mask() == [True, True]
    user = Turn(index=1, source=TurnSource.USER, completion_ids=[1, 2], logprobs=[0, 0])
    assert user.trainable_mask() == [False, False]


def test_task_hash_follows_content_only() -> None:
    a, b = make_task("x"), make_task("x")
    assert a.content_hash() == b.content_hash()
    b.world.files["/data/input.txt"] = "changed"
    assert a.content_hash() != b.content_hash()
