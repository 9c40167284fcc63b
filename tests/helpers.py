"""Builders of realistic tasks and turns for tests and benchmarks (seeded, no model needed)."""

from __future__ import annotations

import random

from agentsd.types import Family, Task, ToolResult, Turn, TurnSource, Verifier, World

VOCAB = 49152  # SmolLM2's vocabulary size


def make_task(task_id: str = "count-lines") -> Task:
    return Task(
        id=task_id,
        family=Family.TERMINAL,
        instruction="Count the lines of /data/input.txt and write the number to /out/count.txt.",
        world=World(files={"/data/input.txt": "a\nb\nc\n"}),
        verifier=Verifier(kind="script", script="test $(cat /out/count.txt) = 3"),
        reference={"solution": "wc -l < /data/input.txt > /out/count.txt"},
        meta={"source": "tests"},
    )


def make_turn(
    index: int,
    rng: random.Random,
    *,
    n_prompt: int = 64,
    n_completion: int = 32,
    version: int = 0,
    source: TurnSource = TurnSource.AGENT,
    context_reset: bool = False,
    masked: bool = False,
) -> Turn:
    mask = [rng.random() > 0.1 for _ in range(n_completion)] if masked else None
    return Turn(
        index=index,
        source=source,
        prompt_ids=[rng.randrange(VOCAB) for _ in range(n_prompt)],
        completion_ids=[rng.randrange(VOCAB) for _ in range(n_completion)],
        logprobs=[-rng.expovariate(2.0) for _ in range(n_completion)],
        loss_mask=mask,
        policy_version=version,
        context_reset=context_reset,
        finish_reason="stop",
        completion_text=f'{{"name": "bash", "arguments": {{"cmd": "echo {index}"}}}}',
        action={"name": "bash", "arguments": {"cmd": f"echo {index}"}},
        observation=f"{index}\n" * 3,
        tool_result=ToolResult(exit_code=index % 3, truncated=index % 7 == 0, duration_s=0.01),
        next_state=f"printed {index}",
        reward=None if index % 2 else 0.0,
        started_at=1_700_000_000.0 + index,
        ended_at=1_700_000_000.5 + index,
    )
