"""The learnable suite (envs/learnable.py): generated deterministically, split train / held-out, every
kind solvable by its reference and failed by doing nothing, with feedback that names what was expected."""

from __future__ import annotations

import gymnasium as gym
import pytest
from sandbox_fixtures import backend_config

from agentsd.envs import TERMINAL_ID
from agentsd.envs.learnable import KINDS, generate
from agentsd.envs.oracle import run_nothing, run_reference
from agentsd.envs.task_formats import load_suite, suite_names
from agentsd.envs.terminal import TerminalEnv


def test_the_suite_is_generated_the_same_every_time_and_split_in_two() -> None:
    tasks = load_suite("learn")
    assert [t.content_hash() for t in tasks] == [t.content_hash() for t in generate()]
    assert len(tasks) == 400 and len({t.content_hash() for t in tasks}) == 400
    assert len({t.id for t in tasks}) == 400
    train, heldout = load_suite("learn-train"), load_suite("learn-heldout")
    assert {t.id for t in train} | {t.id for t in heldout} == {t.id for t in tasks}
    assert not {t.id for t in train} & {t.id for t in heldout}
    assert 0.12 < len(heldout) / len(tasks) < 0.28
    for split in (train, heldout):
        assert {t.meta["kind"] for t in split} == set(KINDS)  # every kind on both sides
    other = generate(seed=1, count=16)
    assert not {t.content_hash() for t in other} & {t.content_hash() for t in tasks}
    assert {"learn", "learn-train", "learn-heldout"} <= set(suite_names())


@pytest.mark.parametrize("backend", ["local", pytest.param("docker", marks=pytest.mark.docker)])
def test_every_kind_is_solved_by_its_reference_and_says_what_was_expected(backend: str) -> None:
    env = gym.make(TERMINAL_ID, sandbox=backend_config(backend)).unwrapped
    try:
        assert isinstance(env, TerminalEnv)
        for task in generate(seed=3, count=len(KINDS)):  # one task of each kind
            solved, _ = run_reference(env, task)
            assert solved == 1.0, task.id
            nothing, info = run_nothing(env, task)
            assert nothing == 0.0, task.id
            feedback = info["feedback"]
            assert "should" in feedback or "there is no" in feedback, (task.id, feedback)
    finally:
        env.close()
