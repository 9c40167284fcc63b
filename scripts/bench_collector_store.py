"""A slow store against the collector's episodes: turn rate with every store write slowed, side by side
with the same run on the bare store, in one process.

Each episode (local sandboxes, a scripted policy, so the store is what varies) runs `--turns` turns
whose command takes `--command-s` seconds, then submits; `--episodes` run at once. The slowed run
sleeps `--write-s` in every write the collector makes (begin, append_turn, finalize, interrupt) before
doing it. Writes run off the event loop, one in flight per episode (agentsd.collect.writes), so a
write slower than nothing stalls only its own episode, and only when it is slower than the episode's
turn: the turn rate should stay within about 10% of the bare store's. Were writes made on the event
loop, every slowed write would stall every episode and the rate would fall to about one turn per
`--write-s`.

usage: python scripts/bench_collector_store.py [--episodes 8] [--turns 10] [--command-s 0.3] [--write-s 0.2]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

from transformers import AutoTokenizer

from agentsd.collect.collector import Collector
from agentsd.config import CollectConfig
from agentsd.envs.oracle import tool_call
from agentsd.modelcache import resolve_model
from agentsd.policies.scripted import ScriptedPolicy
from agentsd.store import ReplayStore
from agentsd.types import Family, Task, Verifier

WRITES = ("begin", "append_turn", "finalize", "interrupt")  # what the collector writes


def _slowed(name: str) -> Any:
    def write(self: SlowStore, *args: Any, **kwargs: Any) -> Any:
        time.sleep(self.delay_s)
        return getattr(ReplayStore, name)(self, *args, **kwargs)

    return write


class SlowStore(ReplayStore):
    """The replay store with `delay_s` added before every write the collector makes."""

    delay_s = 0.0


for _name in WRITES:
    setattr(SlowStore, _name, _slowed(_name))


def run(root: Path, args: argparse.Namespace, delay_s: float) -> tuple[float, int]:
    tokenizer = AutoTokenizer.from_pretrained(resolve_model("default"))

    def reply(prompt: str) -> str:
        done = prompt.count("<|im_start|>assistant") - 1
        if done < args.turns - 1:
            return tool_call("bash", command=f"sleep {args.command_s}")
        return tool_call("submit")

    tasks = [
        Task(
            id=f"t{i}",
            family=Family.TERMINAL,
            instruction="wait",
            verifier=Verifier(kind="script", script="true"),
        )
        for i in range(args.episodes)
    ]
    cfg = CollectConfig.model_validate(
        {
            "run_dir": str(root / "run"),
            "store": {"url": f"sqlite:///{root}/r.db"},
            "shuffle": False,
            "concurrency": args.episodes,
            "max_turns": args.turns,
            "sampling": {"max_new_tokens": 64},
            "tracking": {"enabled": False},
        }
    )
    SlowStore.delay_s = delay_s
    with SlowStore(cfg.store.url) as store:
        started = time.monotonic()
        stats = asyncio.run(
            Collector(cfg, ScriptedPolicy(tokenizer, reply), store, tasks, run_name="b").run()
        )
        wall = time.monotonic() - started
    return stats.turns / wall, stats.turns


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--episodes", type=int, default=8)
    parser.add_argument("--turns", type=int, default=10)
    parser.add_argument("--command-s", type=float, default=0.3)
    parser.add_argument("--write-s", type=float, default=0.2)
    args = parser.parse_args()
    rates = {}
    for name, delay in (("bare store", 0.0), (f"every write +{args.write_s * 1000:.0f} ms", args.write_s)):
        with tempfile.TemporaryDirectory() as tmp:
            rate, turns = run(Path(tmp), args, delay)
        rates[name] = rate
        print(
            f"{name:>24}: {rate:6.2f} turns/s ({turns} turns, {args.episodes} episodes at once)", flush=True
        )
    bare, slowed = rates.values()
    print(f"slowed / bare turn rate: {slowed / bare:.2f} (target >= 0.90)")


if __name__ == "__main__":
    main()
