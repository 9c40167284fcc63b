"""The learnable suite (envs/learnable.py): generated deterministically, split train / held-out, every
kind solvable by its reference and failed by doing nothing, with feedback that names what was expected."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import pytest
from sandbox_fixtures import backend_config

from agentsd.envs import TERMINAL_ID
from agentsd.envs.common import TaskFormatError
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


def test_a_suite_narrowed_to_kinds_holds_only_them_and_its_held_out_texts_were_never_trained_on() -> None:
    whole = load_suite("learn-reply")
    train = load_suite("learn-reply-train:write-word,make-file")
    heldout = load_suite("learn-reply-heldout:write-word,make-file")
    assert {t.meta["kind"] for t in train} == {t.meta["kind"] for t in heldout} == {"write-word", "make-file"}
    assert len(train) + len(heldout) > len(whole) * 0.8  # an extended generation: about as many tasks
    first = {t.id: t.content_hash() for t in whole}  # extending keeps the first tasks as they were
    assert all(first[t.id] == t.content_hash() for t in train + heldout if t.id in first)
    assert not {t.instruction for t in train} & {t.instruction for t in heldout}
    assert not {t.id for t in train} & {t.id for t in heldout}
    plain_heldout = load_suite("learn-heldout:make-file")
    assert plain_heldout and all(t.meta["split"] == "heldout" for t in plain_heldout)
    assert load_suite("learn-heldout:make-file,make-file") == plain_heldout


@pytest.mark.parametrize("name", ["learn-heldout:nope", "learn-heldout:", "learn-heldout:make-file,"])
def test_a_bad_kind_selector_names_the_suite_and_what_is_expected(name: str) -> None:
    with pytest.raises(TaskFormatError, match=r"suite 'learn-heldout:.*unknown task kind .*; the kinds are"):
        load_suite(name)


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


def test_the_single_turn_form_is_the_same_tasks_and_split_with_the_answer_in_the_reply() -> None:
    agent, reply = generate(), generate(form="reply")
    assert [t.meta["split"] for t in agent] == [t.meta["split"] for t in reply]
    assert [t.meta["kind"] for t in agent] == [t.meta["kind"] for t in reply]
    assert [t.verifier.script for t in agent] == [t.verifier.script for t in reply]  # the same checks
    assert {t.id for t in load_suite("learn-reply-heldout")} == {
        t.id.replace("learn-", "learn-reply-", 1) for t in load_suite("learn-heldout")
    }
    assert {"learn-reply", "learn-reply-train", "learn-reply-heldout"} <= set(suite_names())
    for task in reply:
        assert task.environment.reply_file and isinstance(task.reference["reply"], str)
        for path, text in task.world.files.items():  # what a command would have shown is in the prompt
            assert f"{path} holds:\n{text.rstrip()}" in task.instruction


@pytest.mark.parametrize("backend", ["local", pytest.param("docker", marks=pytest.mark.docker)])
def test_a_single_turn_reply_is_graded_by_the_same_checks_and_never_run(backend: str) -> None:
    env = gym.make(TERMINAL_ID, sandbox=backend_config(backend)).unwrapped
    try:
        assert isinstance(env, TerminalEnv)
        for task in generate(seed=3, count=len(KINDS), form="reply"):
            solved, info = run_reference(env, task)
            assert solved == 1.0 and info["action"]["name"] == "reply", task.id
            env.reset(options={"task": task})
            assert env.tools == ()  # the agent is offered no tool
            # the attack: a reply written as shell, aimed at the grader; it is text in a file, never run
            attack = f'$(echo {task.reference["reply"]} > answer.txt)"; exit 0; `touch /tmp/pwned-{task.id}`'
            _, reward, terminated, _, info = env.step(attack)
            assert terminated and reward == 0.0, task.id
            assert "should" in info["feedback"], (task.id, info["feedback"])
            assert env.sandbox is not None
            assert env.sandbox.exec(["test", "-e", f"/tmp/pwned-{task.id}"]).exit_code == 1
            assert not Path(f"/tmp/pwned-{task.id}").exists()
        env.reset(options={"task": generate(count=1)[0]})
        assert env.tools == TerminalEnv.tools  # an agent task after a single-turn one has its tools back
    finally:
        env.close()
