"""Agent loop and collector: token-exact turns in the store, batching, versions, crash resume.

A deterministic scripted policy (the default model's tokenizer, replies chosen from the prompt)
drives real terminal environments in the local sandbox; the hf backend is checked against a fresh
forward pass of the same weights.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sandbox_fixtures import backend_config

from agentsd.agent import AgentLoop, ChatFormat, EpisodeLimits
from agentsd.collect import versions as collector_versions
from agentsd.collect.collector import Collector
from agentsd.collect.queue import GenerationQueue
from agentsd.collect.stats import CollectStats
from agentsd.config import CollectConfig, ModelConfig, SamplingConfig
from agentsd.envs.oracle import tool_call
from agentsd.envs.terminal import TerminalEnv
from agentsd.modelcache import resolve_model
from agentsd.policies.scripted import ScriptedPolicy
from agentsd.sequences import context_before
from agentsd.store import ReplayStore
from agentsd.store.leases import trajectory_id
from agentsd.tracking import MemoryTracker
from agentsd.types import (
    Completion,
    Family,
    PolicyVersion,
    Task,
    Termination,
    TrajectoryStatus,
    Turn,
    TurnSource,
    Verifier,
)


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(resolve_model("default"))


def chat_ids(tokenizer: Any, question: str) -> list[int]:
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": question}], tokenize=False, add_generation_prompt=True
    )
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def make_task(n: int, *, content: str = "hi") -> Task:
    return Task(
        id=f"write-{n}",
        family=Family.TERMINAL,
        instruction=f"Write the text {content} into file{n}.txt, then submit.",
        verifier=Verifier(kind="script", script=f'test "$(cat file{n}.txt)" = {content}'),
    )


def solver(prompt: str) -> str:
    """Task-aware script: a bad reply first, then the command, then submit."""
    replies = prompt.count("<|im_start|>assistant") - 1
    n = re.search(r"into file(\d+)\.txt", prompt)
    content = re.search(r"Write the text (\S+) into", prompt)
    assert n and content
    if replies == 0:
        return "Let me think about it first."
    if replies == 1:
        return "I will write it.\n" + tool_call(
            "bash", command=f"echo {content[1]} > file{n[1]}.txt; printf '<%s>x' '|im_start|'"
        )
    return tool_call("submit")


class Recording:
    """Wraps a policy; remembers every prompt it was given."""

    # the rest of the Policy protocol, read through __getattr__ from the wrapped policy
    model_name: str
    tokenizer: Any

    def __init__(self, policy: Any) -> None:
        self.policy = policy
        self.prompts: list[list[int]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.policy, name)

    def load_version(self, version: PolicyVersion) -> None:
        self.policy.load_version(version)

    def close(self) -> None:
        self.policy.close()

    @property
    def version(self) -> int:
        return self.policy.version

    def generate(
        self, prompts: Sequence[Sequence[int]], sampling: SamplingConfig, stop: Sequence[str] = ()
    ) -> list[Completion]:
        self.prompts += [list(p) for p in prompts]
        return self.policy.generate(prompts, sampling, stop)


def collect_config(tmp_path: Path, **update: Any) -> CollectConfig:
    base = {
        "run_dir": str(tmp_path / "run"),
        "store": {"url": f"sqlite:///{tmp_path}/r.db"},
        "shuffle": False,
        "concurrency": 2,
        "max_turns": 6,
        "sampling": {"max_new_tokens": 128},
    }
    return CollectConfig.model_validate({**base, **update})


def assert_turns_reassemble(store: ReplayStore, tid: str, prompts: list[list[int]]) -> None:
    tokens = store.load_tokens([tid])[tid]
    seen = [context_before(tokens, i) for i in range(len(tokens))]
    for context in seen:
        assert any(np.array_equal(context, p) for p in prompts), (
            "a stored turn re-assembles no prompt the policy saw"
        )


def test_scripted_episodes_are_token_exact_in_the_store(tmp_path: Path, tokenizer: Any) -> None:
    backend_config("local")
    policy = Recording(ScriptedPolicy(tokenizer, solver))
    cfg = collect_config(tmp_path)
    tasks = [make_task(i) for i in range(3)]
    with ReplayStore(cfg.store.url) as store:
        tracker = MemoryTracker()
        stats = asyncio.run(Collector(cfg, policy, store, tasks, run_name="t", tracker=tracker).run())
        assert stats.episodes == 3 and stats.rewards == [1.0, 1.0, 1.0]
        for episode in range(3):
            tid = trajectory_id("t", episode, 0)
            traj = store.get(tid)
            assert traj.status is TrajectoryStatus.FINALIZED and traj.termination is Termination.DONE
            assert traj.reward == 1.0 and len(traj.turns) == 3
            # the unparseable reply is a turn whose observation says why
            assert "No tool call found" in (traj.turns[0].observation or "")
            assert traj.turns[1].tool_result is not None and traj.turns[1].tool_result.exit_code == 0
            assert_turns_reassemble(store, tid, policy.prompts)
            # the sandbox's output '<|im_start|>x' stays text: control tokens only where messages start
            start_id = tokenizer.convert_tokens_to_ids("<|im_start|>")
            starts = [t.prompt_ids.count(start_id) for t in traj.turns]
            assert starts == [3, 2, 2]  # system, user, reply header; then tool message and reply header
            assert "<|im_start|>x" in tokenizer.decode(traj.turns[2].prompt_ids)
    assert {"episode/reward", "episode/turns", "collect/tokens_per_s", "termination/done"} <= set(
        tracker.metrics
    )
    assert [v for _, v in tracker.metrics["episode/reward"]] == [1.0, 1.0, 1.0]
    assert tracker.params["suite"] == "terminal" and tracker.params["run_name"] == "t"


FIRST, SECOND = trajectory_id("g", 0, 0), trajectory_id("g", 1, 0)


class GatedStore(ReplayStore):
    """Episode 0's turn writes block until episode 1 has finalized: on the event loop they would
    stall episode 1 with them (and the wait would time out)."""

    released = threading.Event()

    def append_turn(self, trajectory_id: str, turn: Turn) -> None:
        if trajectory_id == FIRST:
            assert self.released.wait(20), "episode 1 never finished while episode 0's write was blocked"
        super().append_turn(trajectory_id, turn)

    def finalize(self, trajectory_id: str, **kwargs: Any) -> None:
        super().finalize(trajectory_id, **kwargs)
        if trajectory_id == SECOND:
            self.released.set()


def test_a_blocked_store_write_stalls_only_its_own_episode(tmp_path: Path, tokenizer: Any) -> None:
    backend_config("local")
    cfg = collect_config(tmp_path)
    with GatedStore(cfg.store.url) as store:
        stats = asyncio.run(
            Collector(
                cfg, ScriptedPolicy(tokenizer, solver), store, [make_task(0), make_task(1)], run_name="g"
            ).run()
        )
        assert stats.episodes == 2 and stats.rewards == [1.0, 1.0]  # episode 1 first: it never waited
        for episode in range(2):  # and nothing written out of order or lost
            traj = store.get(trajectory_id("g", episode, 0))
            assert traj.status is TrajectoryStatus.FINALIZED and [t.index for t in traj.turns] == [0, 1, 2]


def test_compaction_keeps_the_context_exact_and_marks_the_reset(tmp_path: Path, tokenizer: Any) -> None:
    backend_config("local")

    calls = []

    def chatty(prompt: str) -> str:
        calls.append(prompt)  # the prompt loses old turns to compaction: count calls instead
        if len(calls) >= 8:
            return tool_call("submit")
        return tool_call("bash", command="seq 1 400")  # long observations fill the window

    policy = Recording(ScriptedPolicy(tokenizer, chatty))
    fmt = ChatFormat(tokenizer)
    limits = EpisodeLimits(max_turns=20, timeout_s=600, max_context=2048, max_new_tokens=64)
    turns: list[Turn] = []

    async def on_turn(turn: Turn) -> None:
        turns.append(turn)

    async def generate(prompt: list[int]) -> Completion:
        assert len(prompt) + limits.max_new_tokens <= limits.max_context
        return policy.generate([prompt], SamplingConfig(max_new_tokens=64))[0]

    env = TerminalEnv(sandbox=backend_config("local"))
    try:
        result = asyncio.run(AgentLoop(fmt, generate, limits).run(env, make_task(0), on_turn))
    finally:
        env.close()
    assert result.termination is Termination.DONE and len(turns) == 8
    assert any(t.context_reset for t in turns) and not turns[0].context_reset
    with ReplayStore(f"sqlite:///{tmp_path}/c.db") as store:
        tid = store.begin(task_id="write-0", policy_model="scripted", version=0)
        store.append_turns(tid, turns)
        assert_turns_reassemble(store, tid, policy.prompts)
    reset = next(t for t in turns if t.context_reset)
    assert "earlier turns were removed" in tokenizer.decode(reset.prompt_ids) or "elided" in tokenizer.decode(
        reset.prompt_ids
    )


@pytest.mark.parametrize("grade", [True, False])
def test_an_episode_cut_by_the_turn_limit_is_graded_as_it_stands(
    tmp_path: Path, tokenizer: Any, grade: bool
) -> None:
    """The agent does the work but never submits: the final state is graded (termination stays
    `turns`), or, with grading on truncation off, scores 0 ungraded."""
    backend_config("local")

    def never_submits(prompt: str) -> str:
        n = re.search(r"into file(\d+)\.txt", prompt)
        assert n
        return tool_call("bash", command=f"echo hi > file{n[1]}.txt")

    cfg = collect_config(tmp_path, max_turns=2, grade_on_truncation=grade)
    with ReplayStore(cfg.store.url) as store:
        asyncio.run(
            Collector(
                cfg, ScriptedPolicy(tokenizer, never_submits), store, [make_task(0)], run_name="t"
            ).run()
        )
        traj = store.get(trajectory_id("t", 0, 0))
    assert traj.termination is Termination.TURNS and len(traj.turns) == 2
    assert (traj.reward, traj.meta["graded"]) == ((1.0, True) if grade else (0.0, False))


def test_a_context_that_cannot_fit_ends_the_episode(tokenizer: Any) -> None:
    backend_config("local")
    fmt = ChatFormat(tokenizer)
    policy = ScriptedPolicy(tokenizer, lambda _: tool_call("bash", command="true"))
    limits = EpisodeLimits(max_turns=5, timeout_s=60, max_context=300, max_new_tokens=64)

    async def generate(prompt: list[int]) -> Completion:
        return policy.generate([prompt], SamplingConfig(max_new_tokens=64))[0]

    async def on_turn(turn: Turn) -> None:
        pass

    env = TerminalEnv(sandbox=backend_config("local"))
    try:  # the system prompt alone is longer than 300 - 64 tokens
        result = asyncio.run(AgentLoop(fmt, generate, limits).run(env, make_task(0), on_turn))
    finally:
        env.close()
    assert result.termination is Termination.CONTEXT and result.turns == []


def test_generation_queue_batches_concurrent_episodes(tokenizer: Any) -> None:
    policy = ScriptedPolicy(tokenizer, lambda _: "ok")

    async def main() -> list[int]:
        queue = GenerationQueue(policy, SamplingConfig(max_new_tokens=8), max_batch=4)
        prompts = [[1, 2, 3 + i] for i in range(10)]
        done = await asyncio.gather(*(queue.generate(p) for p in prompts))
        await queue.close()
        assert len(done) == 10 and all(c.finish_reason == "stop" for c in done)
        return queue.batches

    batches = asyncio.run(main())
    assert sum(batches) == 10 and max(batches) == 4


def test_a_round_waits_for_the_running_episodes_stepping_their_environments(tokenizer: Any) -> None:
    """Episodes come back from their environments tens of milliseconds apart: told how many episodes
    run, every round holds all of them (one generate call per turn for the three); with only the
    short linger, stragglers miss the round and each waits a whole round alone."""
    policy = ScriptedPolicy(tokenizer, lambda _: "ok")

    async def main(expect: bool) -> list[int]:
        running = 3
        queue = GenerationQueue(
            policy,
            SamplingConfig(max_new_tokens=8),
            max_batch=4,
            expected=(lambda: running) if expect else None,
        )

        async def episode(i: int) -> None:
            nonlocal running
            for turn in range(4):
                await queue.generate([1, 2, 3 + i, turn])
                await asyncio.sleep(0.03 + 0.05 * i)  # its environment step
            running -= 1

        await asyncio.gather(*(episode(i) for i in range(3)))
        await queue.close()
        return queue.batches

    assert asyncio.run(main(expect=True)) == [3, 3, 3, 3]
    fragmented = asyncio.run(main(expect=False))
    assert sum(fragmented) == 12 and len(fragmented) > 4


@pytest.mark.parametrize("pickup", ["turn", "episode"])
def test_published_versions_are_picked_up_and_recorded(
    tmp_path: Path, tokenizer: Any, pickup: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend_config("local")
    monkeypatch.setattr(collector_versions, "VERSION_POLL_S", 0.0)
    cfg = collect_config(tmp_path, version_pickup=pickup, concurrency=1)
    with ReplayStore(cfg.store.url) as store:

        def publish_after_first_turn(prompt: str) -> str:
            if store.latest_version() is None:
                store.register_version(
                    1,
                    model="scripted",
                    checkpoint_uri=str(tmp_path),
                    lineage="t",
                    parent=None,
                    weights_hash=None,
                )
            return solver(prompt)

        policy = ScriptedPolicy(tokenizer, publish_after_first_turn)
        asyncio.run(Collector(cfg, policy, store, [make_task(0), make_task(1)], run_name="v").run())
        first, second = store.get(trajectory_id("v", 0, 0)), store.get(trajectory_id("v", 1, 0))
        versions = [t.policy_version for t in first.turns]
        if pickup == "turn":  # switched between turns of the running episode
            assert versions[0] == 0 and versions[-1] == 1
        else:  # the running episode kept its version; the next one started on the new one
            assert versions == [0, 0, 0]
        assert [t.policy_version for t in second.turns] == [1, 1, 1]
        assert second.version_start == 1


def test_a_version_that_cannot_be_loaded_never_stops_collection(
    tmp_path: Path, tokenizer: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Version 1's files do not match their recorded hash, version 2's the policy refuses, version 3
    is good: every episode still finishes, each failure is counted and logged, the collector keeps
    sampling with the version it had and ends on version 3; no turn is ever attributed to 1 or 2."""
    from agentsd.policies.base import PolicyError
    from agentsd.weights import weights_hash

    backend_config("local")
    monkeypatch.setattr(collector_versions, "VERSION_POLL_S", 0.0)
    cfg = collect_config(tmp_path, version_pickup="turn", concurrency=1)
    published: list[int] = []

    def publish(store: ReplayStore, version: int, *, tamper: bool = False) -> None:
        directory = tmp_path / f"v{version}"
        directory.mkdir()
        (directory / "model.safetensors").write_bytes(f"weights {version}".encode())
        digest = weights_hash(directory)
        if tamper:  # rewritten after publishing (a partial copy, another trainer's files)
            (directory / "model.safetensors").write_bytes(b"something else")
        store.register_version(
            version,
            model="scripted",
            checkpoint_uri=str(directory),
            lineage="t",
            parent=version - 1 or None,
            weights_hash=digest,
        )
        published.append(version)

    class Refusing(ScriptedPolicy):
        def load_version(self, version: Any) -> None:
            if version.version == 2:
                raise PolicyError("the server does not serve version 2")
            super().load_version(version)

    with ReplayStore(cfg.store.url) as store:

        def respond(prompt: str) -> str:
            if len(published) < 3 and policy.calls % 2 == 0:
                publish(store, len(published) + 1, tamper=not published)
            return solver(prompt)

        policy = Refusing(tokenizer, respond)
        collector = Collector(cfg, policy, store, [make_task(i) for i in range(3)], run_name="f")
        stats = asyncio.run(collector.run())
        assert stats.episodes == 3 and stats.terminations == {"done": 3}
        assert stats.version_load_failures == 2 and policy.version == 3
        versions = {t.policy_version for i in range(3) for t in store.get(trajectory_id("f", i, 0)).turns}
        assert versions == {0, 3}


def test_version_lag_samples_k_versions_behind_the_newest(
    tmp_path: Path, tokenizer: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend_config("local")
    monkeypatch.setattr(collector_versions, "VERSION_POLL_S", 0.0)
    cfg = collect_config(tmp_path, version_pickup="turn", concurrency=1, version_lag=2)
    seen: list[tuple[int, int]] = []  # (newest published, version sampling) at every policy call
    with ReplayStore(cfg.store.url) as store:

        def publish_every_call(prompt: str) -> str:
            newest = store.latest_version()
            seen.append((newest.version if newest else 0, policy.version))
            store.register_version(
                (newest.version if newest else 0) + 1,
                model="scripted",
                checkpoint_uri=str(tmp_path),
                lineage="t",
                parent=None,
                weights_hash=None,
            )
            return solver(prompt)

        policy = ScriptedPolicy(tokenizer, publish_every_call)
        asyncio.run(Collector(cfg, policy, store, [make_task(i) for i in range(3)], run_name="lag").run())
    assert all(sampling <= max(0, newest - 2) for newest, sampling in seen), seen
    assert seen[-1][1] == seen[-1][0] - 2  # it does follow, two behind


RESUMABLE = textwrap.dedent(
    """
    import asyncio, re, sys, time
    from transformers import AutoTokenizer
    from agentsd.collect.collector import Collector
    from agentsd.config import CollectConfig
    from agentsd.modelcache import resolve_model
    from agentsd.policies.scripted import ScriptedPolicy
    from agentsd.store import ReplayStore
    sys.path.insert(0, {tests!r})
    from test_collector import make_task, solver

    def slow(prompt):
        time.sleep(0.3)
        return solver(prompt)

    cfg = CollectConfig.model_validate_json({config!r})
    policy = ScriptedPolicy(AutoTokenizer.from_pretrained(resolve_model("default")), slow)
    with ReplayStore(cfg.store.url) as store:
        tasks = [make_task(i) for i in range(6)]
        stats = asyncio.run(Collector(cfg, policy, store, tasks, run_name="k").run())
    print("EPISODES", stats.episodes, stats.skipped, stats.interrupted)
    """
)


def test_a_killed_collector_resumes_without_loss_or_duplicates(tmp_path: Path) -> None:
    backend_config("local")
    cfg = collect_config(tmp_path, concurrency=2)
    script = tmp_path / "collect.py"
    script.write_text(RESUMABLE.format(tests=str(Path(__file__).parent), config=cfg.model_dump_json()))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent)}
    first = subprocess.Popen([sys.executable, str(script)], env=env, stdout=subprocess.PIPE, text=True)
    with ReplayStore(cfg.store.url) as store:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # kill it mid-run: some episodes done, some running
            done = store.count(status=TrajectoryStatus.FINALIZED)
            running = store.count(status=TrajectoryStatus.RUNNING)
            if done >= 1 and running >= 1:
                break
            time.sleep(0.1)
        first.send_signal(signal.SIGKILL)
        first.wait()
        before = {s.id: s for s in store.list(limit=None)}
        assert any(s.status is TrajectoryStatus.RUNNING for s in before.values())
        second = subprocess.run(
            [sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=300
        )
        assert second.returncode == 0, second.stderr[-3000:]
        episodes, skipped, interrupted = map(int, second.stdout.split("EPISODES")[1].split())
        after = store.list(limit=None)
    by_episode: dict[int, list[Any]] = {}
    for s in after:
        by_episode.setdefault(int(s.id.split(".")[1]), []).append(s)
    assert sorted(by_episode) == list(range(6))
    for episode, tries in by_episode.items():
        good = [s for s in tries if s.termination is Termination.DONE]
        assert len(good) == 1, f"episode {episode}: {[(s.id, s.termination) for s in tries]}"
        assert all(s.status is TrajectoryStatus.FINALIZED for s in tries)
        assert good[0].reward == 1.0
    killed = [s for s in after if s.termination is Termination.INTERRUPTED]
    assert len(killed) == interrupted >= 1
    for s in killed:  # the interrupted trajectory kept the turns it had, unchanged
        assert s.n_turns == before[s.id].n_turns
    # nothing finished is run again: an episode finalized just before the kill but not yet settled in
    # the plan is found finished when its lease is taken over, and recorded done there
    finished = sum(1 for s in before.values() if s.status is TrajectoryStatus.FINALIZED)
    assert skipped <= finished and episodes == 6 - finished


def test_hf_behaviour_logprobs_match_a_fresh_forward_pass_with_prefix_reuse() -> None:
    """Every behaviour log-prob the hf backend records equals a fresh forward pass over the whole
    context under the turn's sampling (temperature, top-p nucleus), while turns that extend an earlier
    turn token for token take its kept keys and values: a batch mixing such turns with a fresh prompt
    prefills only the new tokens."""
    import torch

    from agentsd.policies.hf import HFPolicy, sampling_logprobs

    policy = HFPolicy(ModelConfig(), seed=0)
    assert policy.prefix_cache is not None
    tok = policy.tokenizer
    observation = tok("<|im_end|>\n<|im_start|>user\n[exit code 0]<|im_end|>\n<|im_start|>assistant\n")
    prompts = [chat_ids(tok, "List the files here with bash."), chat_ids(tok, "What is 2+2?")]
    for turn, (temperature, top_p) in enumerate(((1.0, 1.0), (0.7, 1.0), (1.0, 0.9))):
        if turn == 2:
            prompts.append(chat_ids(tok, "Write a haiku about a terminal."))  # a miss beside two hits
        sampling = SamplingConfig(temperature=temperature, top_p=top_p, max_new_tokens=12)
        before, hits = policy.stats.as_dict(), policy.prefix_cache.stats.hits
        completions = policy.generate(prompts, sampling, stop=["</tool_call>"])
        after = policy.stats.as_dict()
        prefilled = after["prefill_tokens"] - before["prefill_tokens"]
        assert prefilled + after["reused_tokens"] - before["reused_tokens"] == sum(map(len, prompts))
        if turn:  # every earlier prompt was extended: new are its completion's last token and the observation
            assert policy.prefix_cache.stats.hits - hits == 2
            assert prefilled < sum(map(len, prompts)) // 2
        for prompt, completion in zip(prompts, completions, strict=True):
            assert completion.finish_reason in ("stop", "length") and completion.policy_version == 0
            ids = torch.tensor([prompt + completion.token_ids])
            with torch.no_grad():
                logits = policy.model(ids).logits[0, len(prompt) - 1 : -1]
            fresh = sampling_logprobs(logits, temperature, top_p).gather(
                1, torch.tensor(completion.token_ids)[:, None]
            )
            recorded = torch.tensor(completion.logprobs)
            assert bool(torch.isfinite(recorded).all())
            diff = (fresh.squeeze(1) - recorded).abs()
            # under a nucleus a token at its edge may fall either side of top_p by rounding: the mean
            worst = float(diff.max()) if top_p == 1.0 else float(diff.mean())
            assert worst < 1e-3, (turn, temperature, top_p, diff)
        delta = list(observation["input_ids"])
        prompts = [p + c.token_ids + delta for p, c in zip(prompts, completions, strict=True)]
    compacted = [prompts[0][:5] + prompts[0][-20:]]  # a rewritten context matches nothing: full prefill
    before = policy.stats.as_dict()
    policy.generate(compacted, SamplingConfig(temperature=1.0, max_new_tokens=12))
    assert policy.stats.prefill_tokens - before["prefill_tokens"] == len(compacted[0])


def test_grouped_attention_equals_transformers_sdpa_on_a_padded_batch() -> None:
    """`policy.attention: grouped` folds the query heads sharing a key/value head instead of copying
    the cache per head: the same logits as transformers' SDPA path, padding mask and all."""
    import torch

    from agentsd.config import HFPolicyConfig
    from agentsd.policies.hf import HFPolicy

    grouped = HFPolicy(ModelConfig(), HFPolicyConfig(attention="grouped"), seed=0)
    stock = HFPolicy(ModelConfig(), HFPolicyConfig(attention="sdpa"), seed=0)
    assert grouped.model.config.num_key_value_heads < grouped.model.config.num_attention_heads
    prompts = [
        chat_ids(grouped.tokenizer, q) for q in ("What is 2+2?", "Write a haiku about a terminal, please.")
    ]
    width = max(map(len, prompts))
    ids = torch.tensor([[grouped.pad_id] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    with torch.no_grad():
        a = grouped.model(input_ids=ids, attention_mask=mask).logits
        b = stock.model(input_ids=ids, attention_mask=mask).logits
    real = mask.bool()
    assert float((a[real] - b[real]).abs().max()) < 1e-3


def test_the_reserved_cache_holds_what_transformers_dynamic_cache_holds() -> None:
    """Decode steps write into reserved space instead of concatenating: after a prefill, steps past
    the reservation (it grows) and a batch selection, the same keys and values as DynamicLayer's."""
    import torch
    from transformers.cache_utils import DynamicLayer

    from agentsd.policies.kv_buffer import ReservedLayer, reserved_cache

    reserved, stock = ReservedLayer(capacity=6), DynamicLayer()
    steps = [torch.randn(3, 2, 4, 5), *(torch.randn(3, 2, 1, 5) for _ in range(2))]
    steps += [torch.randn(2, 2, 1, 5) for _ in range(2)]
    for n, keys in enumerate(steps):
        if n == 3:  # a row finished: it leaves the batch
            rows = torch.tensor([0, 2])
            reserved.batch_select_indices(rows)
            stock.batch_select_indices(rows)
        got, want = reserved.update(keys, -keys), stock.update(keys, -keys)
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
        assert reserved.get_seq_length() == stock.get_seq_length()
    assert reserved.capacity == 12  # 4 + 4 steps outgrew 6 once, and doubled
    assert len(reserved_cache(30, 8).layers) == 30


def test_the_prefix_cache_matches_by_version_and_exact_prefix_within_its_budget() -> None:
    import torch

    from agentsd.policies.prefix_cache import CachedPrefix, PrefixCache

    def entry(tokens: tuple[int, ...], version: int = 0) -> CachedPrefix:
        kv = torch.zeros((2, len(tokens), 4))
        return CachedPrefix(tokens, version, [(kv, kv.clone())])

    cache = PrefixCache(budget_bytes=entry((1, 2, 3)).nbytes * 2)
    cache.put(entry((1, 2)))
    cache.put(entry((1, 2, 3), version=1))
    assert cache.take([1, 2], 0) is None  # a prompt must add at least one token
    assert cache.take([1, 2, 3, 4], 2) is None  # other versions' keys are other weights' keys
    assert cache.take([9, 2, 3, 4], 1) is None
    taken = cache.take([1, 2, 3, 4], 1)
    assert taken is not None and taken.tokens == (1, 2, 3)  # the longest match, and taken out
    assert cache.take([1, 2, 3, 4], 1) is None
    for n in range(3, 7):
        cache.put(entry(tuple(range(n))))
    assert cache.stats.nbytes <= cache.budget_bytes and cache.stats.evicted >= 3
    assert cache.take([0, 1, 2, 3, 4, 5, 6], 0) is not None  # the newest survived


@pytest.mark.slow
def test_hf_policy_loads_a_published_version(tmp_path: Path) -> None:
    import torch

    from agentsd.policies.hf import HFPolicy
    from agentsd.types import PolicyVersion

    policy = HFPolicy(ModelConfig(), seed=0)
    prompt = chat_ids(policy.tokenizer, "hi")
    changed = {k: v.clone() for k, v in policy.model.state_dict().items()}
    changed["model.norm.weight"] *= 0.5
    out = tmp_path / "v1"
    policy.model.save_pretrained(out, state_dict=changed)
    policy.load_version(PolicyVersion(version=1, model="default", checkpoint_uri=str(out), created_at=0.0))
    assert policy.version == 1
    assert torch.equal(policy.model.state_dict()["model.norm.weight"], changed["model.norm.weight"])
    assert policy.generate([prompt], SamplingConfig(max_new_tokens=4))[0].policy_version == 1
    (tmp_path / "bad").mkdir()
    from agentsd.policies.base import PolicyError

    with pytest.raises(PolicyError, match=r"config\.json"):
        policy.load_version(
            PolicyVersion(version=2, model="default", checkpoint_uri=str(tmp_path / "bad"), created_at=0.0)
        )
    assert policy.version == 1
    # episodes on different versions switch back and forth: the base model and version 1 stay in
    # memory (version 1's files are gone, and it still loads)
    import shutil

    from agentsd.policies.base import base_version

    base_norm = changed["model.norm.weight"] * 2
    policy.load_version(base_version("default"))
    assert policy.version == 0 and torch.equal(policy.model.state_dict()["model.norm.weight"], base_norm)
    shutil.rmtree(out)
    policy.load_version(PolicyVersion(version=1, model="default", checkpoint_uri=str(out), created_at=0.0))
    assert torch.equal(policy.model.state_dict()["model.norm.weight"], changed["model.norm.weight"])


@pytest.mark.slow
def test_agentsd_collect_runs_out_of_the_box(tmp_path: Path) -> None:
    backend_config("local")
    repo = Path(__file__).resolve().parents[1]
    config = str(repo / "configs/collect/terminal.yaml")
    cmd = [
        sys.executable,
        "-m",
        "agentsd.cli.main",
        "collect",
        "-c",
        config,
        "max_tasks=2",
        "repeats=1",
        "max_turns=2",
        "sampling.max_new_tokens=24",
        f"run_dir={tmp_path}/run",
        f"store.url=sqlite:///{tmp_path}/r.db",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "2 episodes" in done.stdout
    with ReplayStore(f"sqlite:///{tmp_path}/r.db") as store:
        trajs = store.list(limit=None)
        assert len(trajs) == 2 and all(t.status is TrajectoryStatus.FINALIZED for t in trajs)
        assert all(t.n_completion_tokens > 0 for t in trajs)
    assert (tmp_path / "run" / "mlflow.db").exists()
    bad = subprocess.run(
        [*cmd[:5], "concurrency=0"], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert bad.returncode == 2 and "concurrency" in bad.stderr


def web_login_solver(prompt: str) -> str:
    """Reads element ids from the latest accessibility tree, as an agent would."""
    replies = prompt.count("<|im_start|>assistant") - 1

    def element(line: str) -> int:
        found = re.findall(re.escape(line) + r" \[(\d+)\]", prompt)
        assert found, f"no {line} in the observation"
        return int(found[-1])

    steps = [
        lambda: tool_call("type", id=element('textbox "Username"'), text="alice"),
        lambda: tool_call("type", id=element('textbox "Password"'), text="hunter2"),
        lambda: tool_call("click", id=element('button "Sign in"')),
        lambda: tool_call("submit"),
    ]
    return steps[min(replies, 3)]()


@pytest.mark.gui
def test_collector_drives_a_gui_episode(tmp_path: Path, tokenizer: Any) -> None:
    backend_config("local")
    from agentsd.envs.task_formats import load_suite

    task = next(t for t in load_suite("gui") if t.id == "web-login")
    cfg = collect_config(tmp_path, suite="gui", concurrency=1)
    policy = ScriptedPolicy(tokenizer, web_login_solver)
    with ReplayStore(cfg.store.url) as store:
        stats = asyncio.run(Collector(cfg, policy, store, [task], run_name="g").run())
        traj = store.get(trajectory_id("g", 0, 0))
    assert stats.rewards == [1.0], traj.turns[-1].observation
    assert [t.action["name"] for t in traj.turns if t.action] == ["type", "type", "click", "submit"]
    assert all(t.next_state for t in traj.turns)


def test_hindsight_teacher_view_maps_every_student_token(tmp_path: Path, tokenizer: Any) -> None:
    """A collected trajectory's segment, with hindsight inserted for the teacher, without re-tokenizing."""
    from agentsd.sdpo.hindsight import HindsightBuilder, teacher_view
    from agentsd.sequences import segments

    backend_config("local")
    cfg = collect_config(tmp_path)
    with ReplayStore(cfg.store.url) as store:

        def failing(prompt: str) -> str:  # writes the wrong content, so the verifier has something to say
            replies = prompt.count("<|im_start|>assistant") - 1
            if replies == 0:
                return tool_call("bash", command="echo wrong > file0.txt; ls")
            return tool_call("submit")

        asyncio.run(
            Collector(cfg, ScriptedPolicy(tokenizer, failing), store, [make_task(0)], run_name="h").run()
        )
        asyncio.run(
            Collector(cfg, ScriptedPolicy(tokenizer, solver), store, [make_task(0)], run_name="s").run()
        )
        failed, solved = store.get(trajectory_id("h", 0, 0)), store.get(trajectory_id("s", 0, 0))
        tokens = store.load_tokens([failed.id])[failed.id]
    assert failed.reward == 0.0 and solved.reward == 1.0
    builder = HindsightBuilder(tokenizer, budget_tokens=4096)
    hindsight = builder.build(failed, success=solved)
    assert hindsight.trajectory_ids and set(hindsight.turn_ids) == {0}
    [segment] = segments(tokens)
    layout = failed.meta["layout"]
    view = teacher_view(segment, hindsight, layout)
    assert view is not None and view.inserted == len(hindsight.trajectory_ids) + len(hindsight.turn_ids[0])
    # every student token sits, unchanged, at its mapped teacher position
    assert np.array_equal(view.input_ids[view.position], segment.input_ids)
    text = tokenizer.decode(view.input_ids)
    system_end, context, task = (
        text.index("submit."),
        text.index("[Hindsight: what is known"),
        text.index("Write the text hi"),
    )
    assert context < task and "The grader's verdict (reward 0)" in text and "A successful attempt" in text
    assert text.index("[Hindsight: after your next action") < text.index("echo wrong")
    assert system_end < task
    # a tight budget cuts the middle of long texts and never exceeds the budget
    small = HindsightBuilder(tokenizer, budget_tokens=80).build(failed, success=solved)
    assert len(small.trajectory_ids) + sum(len(b) for b in small.turn_ids.values()) <= 80
    assert "elided" in tokenizer.decode(small.trajectory_ids)
    # nothing to say (no verdict, no signals, no turn results): no view, it contributes nothing
    bare = failed.model_copy(update={"hindsight": [], "reward": None, "turns": failed.turns[-1:]})
    assert builder.build(bare).empty
    assert teacher_view(segment, builder.build(bare), layout) is None


def test_the_demonstration_sits_between_the_tools_and_the_task(tmp_path: Path, tokenizer: Any) -> None:
    """`collect.demonstration`: one worked example after the system prompt (tools still described),
    before the task; the hindsight layout still points at the task; a suite without bash is refused."""
    from agentsd.envs.tools import BASH, SUBMIT, ToolSpec

    plain, shown = ChatFormat(tokenizer), ChatFormat(tokenizer, demonstration=True)
    without = tokenizer.decode(plain.first_prompt("TASK TEXT", (BASH, SUBMIT)))
    ids = shown.first_prompt("TASK TEXT", (BASH, SUBMIT))
    text = tokenizer.decode(ids)
    assert "uname -s > kernel.txt" in text and "uname" not in without
    assert "Run a shell command" in text  # the demonstration does not push the tool schemas out
    assert text.index("Run a shell command") < text.index("uname -s") < text.index("TASK TEXT")
    assert tokenizer.decode(ids[shown.layout["task_start"] :]).startswith("TASK TEXT")
    with pytest.raises(ValueError, match="demonstration"):
        shown.first_prompt("TASK", (ToolSpec("click", "Click an element.", ()), SUBMIT))

    def solver(prompt: str) -> str:
        return tool_call("submit")

    cfg = collect_config(tmp_path, demonstration=True)
    with ReplayStore(cfg.store.url) as store:  # the collector passes it through to the prompt
        asyncio.run(
            Collector(cfg, ScriptedPolicy(tokenizer, solver), store, [make_task(0)], run_name="d").run()
        )
        first = store.get(trajectory_id("d", 0, 0)).turns[0]
    assert "uname -s > kernel.txt" in tokenizer.decode(first.prompt_ids)


def test_a_single_turn_task_is_one_reply_graded_at_once(tmp_path: Path, tokenizer: Any) -> None:
    """The single-turn form through the collector: no tool schemas and the reply prompt (with its own
    demonstration when on), one agent turn, the reply graded by the task's script; the stored turn
    re-assembles the prompt the policy saw."""
    from agentsd.agent import REPLY_PROMPT
    from agentsd.envs.learnable import generate

    tasks = generate(count=8, form="reply")[:2]  # write-word, copy-file

    def answer(prompt: str) -> str:
        found = re.search(r"Reply with the word (\w+)\.", prompt) or re.search(r"holds:\n(\w+)\n", prompt)
        return f"  {found.group(1)}\n" if found else "no idea"

    cfg = collect_config(tmp_path, demonstration=True, max_turns=1)
    with ReplayStore(cfg.store.url) as store:
        asyncio.run(Collector(cfg, ScriptedPolicy(tokenizer, answer), store, tasks, run_name="r").run())
        done = [store.get(trajectory_id("r", i, 0)) for i in range(2)]
        for index, trajectory in enumerate(done):
            prompt = tokenizer.decode(trajectory.turns[0].prompt_ids)
            assert (
                REPLY_PROMPT in prompt and "Run a shell command" not in prompt and "<tool_call>" not in prompt
            )
            assert "second word of notes.txt" in prompt  # the single-turn demonstration
            assert [t.source for t in trajectory.turns] == [TurnSource.AGENT]
            assert trajectory.reward == 1.0 and trajectory.turns[0].action == {
                "name": "reply",
                "arguments": {"text": answer(tasks[index].instruction)},
            }
            assert_turns_reassemble(store, trajectory.id, [list(trajectory.turns[0].prompt_ids)])


# what a failing trainer does once two episodes run with stored turns (a gate, not a sleep: a loaded
# machine could take longer than any fixed time to get there); until then it beats its heartbeat
TRAINER_FAILURES = {
    "dies": "print('CUDA error: out of memory', file=sys.stderr); sys.exit(3)",
    "hangs": "def wait_for_a_peer_that_never_comes():\n    while True: time.sleep(1)\n"
    "wait_for_a_peer_that_never_comes()",
}


def _failing_trainer(gate: Path, heartbeat: Path, failure: str) -> list[str]:
    script = (
        "import os, sys, time\nfrom pathlib import Path\nfrom agentsd.liveness import beat, dump_stacks_on\n"
        f"dump_stacks_on()\nbeat(Path({str(heartbeat)!r}))\nwhile not os.path.exists({str(gate)!r}):\n"
        f"    beat(Path({str(heartbeat)!r})); time.sleep(0.05)\n" + TRAINER_FAILURES[failure]
    )
    return [sys.executable, "-c", script]


@pytest.mark.parametrize("failure", ["dies", "hangs"])
def test_a_trainer_that_dies_or_hangs_stops_the_collector_and_keeps_every_stored_turn(
    tmp_path: Path, tokenizer: Any, failure: str
) -> None:
    # `agentsd run` used to collect to the end of its plan for a trainer that had died at the start,
    # and to wait forever (paced) for one that hung
    from agentsd.jobs.trainer_process import TrainerProcess

    backend_config("local")

    gate = tmp_path / "two-episodes-have-stored-turns"
    calls: Counter[str] = Counter()

    def slow(prompt: str) -> str:  # never submits: every episode would run to its turn limit
        episode = re.search(r"into file(\d+)\.txt", prompt)
        assert episode
        calls[episode[1]] += 1  # a second call: the episode's first turn is stored
        if sum(n >= 2 for n in calls.values()) >= 2:
            gate.touch()
        return tool_call("bash", command="sleep 1; echo working")

    policy = ScriptedPolicy(tokenizer, slow)
    # 40 s and more per episode: none ends before the trainer's death or hang (found in ~15 s) stops it
    cfg = collect_config(tmp_path, concurrency=2, max_turns=40)
    heartbeat = tmp_path / "trainer.heartbeat"
    command = _failing_trainer(gate, heartbeat, failure)
    trainer = TrainerProcess(command, heartbeat=heartbeat, hang_s=10)
    with ReplayStore(cfg.store.url) as store:
        collector = Collector(cfg, policy, store, [make_task(i) for i in range(8)], run_name="sup")
        trainer.watch(lambda what: collector.stop(f"the trainer {what}"))
        stats = asyncio.run(collector.run())
        if failure == "dies":
            assert stats.stopped == "the trainer exited with status 3"
            assert "CUDA error: out of memory" in trainer.tail()
        else:  # stopped as hung, and its last words say where it hung
            assert stats.stopped and stats.stopped.startswith("the trainer hung: no sign of life for")
            assert trainer.hung and "wait_for_a_peer_that_never_comes" in trainer.tail()
        rows = store.list(limit=None)
        assert 1 <= len(rows) < 8  # the plan was not run to its end
        assert all(r.status is TrajectoryStatus.FINALIZED for r in rows)  # nothing left running
        stopped = [r for r in rows if r.termination is Termination.INTERRUPTED]
        assert stopped and all(r.n_turns >= 1 for r in stopped)  # their turns stay
        assert store.get(stopped[0].id).meta["interrupted_because"] == stats.stopped
    assert trainer.wait() == (3 if failure == "dies" else -signal.SIGTERM)


def test_a_trainer_that_hangs_after_collection_is_stopped_even_deaf_to_sigterm(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from agentsd.jobs import trainer_process
    from agentsd.jobs.trainer_process import TrainerProcess

    monkeypatch.setattr(trainer_process, "DUMP_WAIT_S", 0.5)
    monkeypatch.setattr(trainer_process, "STOP_WAIT_S", 0.5)
    gate = tmp_path / "open"
    gate.touch()  # it hangs at once: collection is over, it trains what is left
    heartbeat = tmp_path / "trainer.heartbeat"
    command = _failing_trainer(gate, heartbeat, "hangs")
    command[-1] = "import signal; signal.signal(signal.SIGTERM, signal.SIG_IGN)\n" + command[-1]
    trainer = TrainerProcess(command, heartbeat=heartbeat, hang_s=2)
    trainer.expect_exit()
    assert trainer.wait() == -signal.SIGKILL
    assert trainer.hung and "wait_for_a_peer_that_never_comes" in trainer.tail()


def test_a_trainer_that_finishes_its_work_is_not_reported(tmp_path: Path) -> None:
    from agentsd.jobs.trainer_process import TrainerProcess

    deaths: list[str] = []
    heartbeat = tmp_path / "trainer.heartbeat"  # never beaten: but it exits within the limit
    trainer = TrainerProcess(
        [sys.executable, "-c", "import time; time.sleep(1)"], heartbeat=heartbeat, hang_s=600
    )
    trainer.expect_exit()
    trainer.watch(deaths.append)
    assert trainer.wait() == 0 and deaths == [] and trainer.hung is None


def _long_or_short(store: ReplayStore, max_long_turns: int) -> Any:
    """Replies: the first short episode publishes version 1; the short ones are solved in three turns;
    the long one keeps working until every short one has finished (or `max_long_turns`)."""

    def respond(prompt: str) -> str:
        if "LONG TASK" not in prompt:
            if "file1.txt" in prompt and store.latest_version() is None:
                store.register_version(
                    1, model="scripted", checkpoint_uri="", lineage="t", parent=None, weights_hash=None
                )
            return solver(prompt)
        turns = prompt.count("<|im_start|>assistant") - 1
        if store.count(status=TrajectoryStatus.FINALIZED) < 4 and turns < max_long_turns:
            # a second per turn: the turn cap (a safety net) stays far beyond the short episodes'
            # time even when sandbox starts crawl on a loaded machine
            return tool_call("bash", command="sleep 1; echo still working")
        return tool_call("submit")

    return respond


def long_task() -> Task:
    return Task(
        id="long",
        family=Family.TERMINAL,
        instruction="LONG TASK: keep working, then submit.",
        verifier=Verifier(kind="script", script="true"),
    )


@pytest.mark.parametrize("max_live", [2, 1])
def test_a_long_episode_keeps_its_version_while_new_episodes_start_on_the_newest_at_once(
    tmp_path: Path, tokenizer: Any, monkeypatch: pytest.MonkeyPatch, max_live: int
) -> None:
    # a newer version used to wait for every running episode to end, and new episodes waited too:
    # with hour-long episodes, concurrency fell to zero for an hour
    backend_config("local")
    monkeypatch.setattr(collector_versions, "VERSION_POLL_S", 0.0)
    cfg = collect_config(tmp_path, concurrency=2, max_turns=60, max_live_versions=max_live)
    tasks = [long_task(), *(make_task(i) for i in range(1, 5))]
    with ReplayStore(cfg.store.url) as store:
        policy = ScriptedPolicy(tokenizer, _long_or_short(store, max_long_turns=50))
        stats = asyncio.run(Collector(cfg, policy, store, tasks, run_name="live").run())
        assert stats.terminations == {"done": 5}
        runs = [store.get(trajectory_id("live", e, 0)) for e in range(5)]
    long, shorts = runs[0], runs[1:]
    later = [s for s in shorts if s.version_start == 1]
    assert later, [s.version_start for s in shorts]  # picked up by episodes that started after it
    assert long.finalized_at is not None
    # ... which started and finished while the long episode was still running
    assert all(s.finalized_at is not None and s.finalized_at < long.finalized_at for s in later)
    assert all({t.policy_version for t in s.turns} == {1} for s in later)
    versions = [t.policy_version for t in long.turns]
    if max_live == 2:  # the long episode samples with the version it started with, to its end
        assert set(versions) == {0}
    else:  # one live version: the long episode switched to the newest, and its turns say so
        assert versions[0] == 0 and versions[-1] == 1 and versions == sorted(versions)


class FakeTrainer:
    """Trains in a thread the way the trainer selects: up to `batch` finalized trajectories no one has
    consumed, oldest first, one step (one published version) every `step_s`; records the staleness
    each one would be trained at and the largest backlog it saw."""

    def __init__(self, url: str, batch: int, step_s: float) -> None:
        self.url, self.batch, self.step_s = url, batch, step_s
        self.ages: list[int] = []
        self.max_backlog = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with ReplayStore(self.url) as store:
            version = 0
            while not self.stop.wait(self.step_s):
                waiting = store.find_finalized(not_consumed_by="fake")
                running = store.count(status=TrajectoryStatus.RUNNING)
                self.max_backlog = max(self.max_backlog, len(waiting) + running)
                chosen = waiting[: self.batch]
                if not chosen:
                    continue
                self.ages += [version - s.version_start for s in chosen]
                version += 1
                store.mark_consumed("fake", [s.id for s in chosen], version)
                store.register_version(
                    version,
                    model="scripted",
                    checkpoint_uri="",
                    lineage="fake",
                    parent=version - 1 or None,
                    weights_hash=None,
                )


def _collect_beside_a_trainer(
    tmp_path: Path, tokenizer: Any, pacing: dict[str, Any], batch: int
) -> tuple[FakeTrainer, CollectStats]:
    cfg = collect_config(tmp_path, concurrency=4, pacing=pacing)
    trainer = FakeTrainer(cfg.store.url, batch=batch, step_s=0.8)
    trainer.thread.start()
    try:
        with ReplayStore(cfg.store.url) as store:
            tasks = [make_task(i) for i in range(12)]
            collector = Collector(cfg, ScriptedPolicy(tokenizer, solver), store, tasks, run_name="p")
            stats = asyncio.run(collector.run())
            assert stats.episodes == 12
            while store.count_untrained(id_prefix="p.", terminations=[Termination.DONE]):
                time.sleep(0.1)  # the trainer trains what is left
    finally:
        trainer.stop.set()
        trainer.thread.join()
    return trainer, stats


def test_pacing_keeps_trajectories_within_k_max_where_unpaced_collection_drops_them(
    tmp_path: Path, tokenizer: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # unpaced, the collector ran ahead of the trainer: trajectories waited in the store until they
    # were too stale to train on (dropped by K_max) while the policy moved on
    backend_config("local")
    monkeypatch.setattr(collector_versions, "VERSION_POLL_S", 0.0)
    k_max, batch, bound = 1, 2, 4
    pacing = {"max_staleness": k_max, "batch_trajectories": batch, "max_backlog": bound, "poll_s": 0.1}
    unpaced, _ = _collect_beside_a_trainer(tmp_path / "off", tokenizer, {**pacing, "enabled": False}, batch)
    paced, stats = _collect_beside_a_trainer(tmp_path / "on", tokenizer, {**pacing, "enabled": True}, batch)
    dropped_unpaced = sum(age > k_max for age in unpaced.ages)
    dropped_paced = sum(age > k_max for age in paced.ages)
    # Pacing estimates; it cannot promise: an episode that finishes after episodes started later
    # waits behind them, and one started as the trainer publishes starts a version late. On a loaded
    # machine (CI) about one paced run in eight lost one trajectory that way; unpaced runs lose several.
    assert dropped_paced <= 1, paced.ages
    assert dropped_unpaced > dropped_paced, (unpaced.ages, paced.ages)
    assert paced.max_backlog <= bound and stats.pacing_waits > 0


def test_a_restarted_paced_collector_counts_what_its_earlier_process_left_untrained(
    tmp_path: Path, tokenizer: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the backlog lives in the store: a collector restarted after a crash must not start afresh
    backend_config("local")
    monkeypatch.setattr(collector_versions, "VERSION_POLL_S", 0.0)
    pacing = {"enabled": True, "max_staleness": 1, "batch_trajectories": 2, "max_backlog": 4, "poll_s": 0.1}
    cfg = collect_config(tmp_path, concurrency=2, pacing=pacing)
    tasks = [make_task(i) for i in range(8)]
    with ReplayStore(cfg.store.url) as store:
        for episode in range(5):  # what the earlier process finished and no trainer has taken yet
            tid = store.begin(
                task=tasks[episode],
                policy_model="scripted",
                version=0,
                trajectory_id=trajectory_id("r", episode, 0),
            )
            store.append_turn(tid, make_turn_for(tokenizer))
            store.finalize(tid, termination=Termination.DONE, reward=1.0)
        collector = Collector(cfg, ScriptedPolicy(tokenizer, solver), store, tasks, run_name="r")
        assert collector.expected_staleness() == (5, 2)  # 5 ahead: trained two steps from now
        trainer = FakeTrainer(cfg.store.url, batch=2, step_s=0.5)
        trainer.thread.start()
        try:
            stats = asyncio.run(collector.run())
        finally:
            trainer.stop.set()
            trainer.thread.join()
        started_here = [store.summary(trajectory_id("r", episode, 0)) for episode in range(5, 8)]
    assert stats.episodes == 3 and stats.skipped == 5
    # nothing started beside the earlier backlog: at version 0 an episode would have been trained two
    # versions late (K_max is 1), so the first start waited for the trainer's first step at least
    # (or found it done already: the trainer runs from before the collector starts).
    # (How late each one is then trained depends on the trainer's step sizes as they happen: the
    # pacing test above measures that; asserting it here would assert timing.)
    assert all(s.version_start >= 1 for s in started_here), [(s.id, s.version_start) for s in started_here]


def make_turn_for(tokenizer: Any) -> Turn:
    ids = chat_ids(tokenizer, "hello")
    return Turn(
        index=0,
        prompt_ids=ids,
        completion_ids=[1, 2],
        logprobs=[-0.1, -0.2],
        policy_version=0,
        temperature=1.0,
    )
