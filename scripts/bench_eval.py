"""Rubric grading throughput: the judge with batching (all of a task's criteria in one request)
against one request per criterion, side by side in one run.

The judge is a real model: the default model through the `policy` judge backend (hf on CPU), or any
OpenAI-compatible server with --base-url (e.g. `vllm serve`). Each task's output is a shipped gold
deliverable of the apex-mini suite, graded against --criteria judge criteria; both modes get the same
token budget per criterion. Prints criteria graded per second for each mode, their ratio, and how
many verdicts parsed (a small model often answers outside the JSON shape: those are grader errors).

usage: python scripts/bench_eval.py [--criteria 8] [--tasks 3] [--base-url URL --model NAME]
"""

from __future__ import annotations

import argparse
import time

from agentsd.config import JudgeConfig
from agentsd.envs.apex import gold_blobs
from agentsd.envs.documents import render
from agentsd.envs.task_formats import load_suite
from agentsd.eval.judge import Judge, JudgeCriterion, JudgeRequest, OpenAIChat, PolicyChat

ASPECTS = [
    "States the key figure the task asks for",
    "Names the document's recipient",
    "Gives a concrete recommendation or next step",
    "Uses a professional tone",
    "Cites the source file of its numbers",
    "Is free of spelling mistakes",
    "States the period the figures cover",
    "Is shorter than one page",
    "Mentions at least one risk",
    "Uses the client's or counterparty's name correctly",
]


def requests(n_tasks: int, n_criteria: int) -> list[JudgeRequest]:
    out = []
    for task in [t for t in load_suite("apex-mini") if t.reference.get("gold_files")][:n_tasks]:
        output = "\n\n".join(f"{path}:\n{render(path, data)}" for path, data in gold_blobs(task).items())
        criteria = tuple(JudgeCriterion(f"c{i + 1}", ASPECTS[i % len(ASPECTS)]) for i in range(n_criteria))
        out.append(JudgeRequest(task.instruction, output, criteria))
    return out


def run(judge: Judge, work: list[JudgeRequest]) -> tuple[float, int, int]:
    started = time.perf_counter()
    graded = parsed = 0
    for request in work:
        for verdict in judge.grade(request):
            graded += 1
            parsed += verdict.met is not None
    return time.perf_counter() - started, graded, parsed


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--criteria", type=int, default=8)
    parser.add_argument("--tasks", type=int, default=3)
    parser.add_argument("--tokens-per-criterion", type=int, default=40)
    parser.add_argument("--base-url", help="An OpenAI-compatible judge; default: the local default model.")
    parser.add_argument("--model", default="judge")
    args = parser.parse_args()

    work = requests(args.tasks, args.criteria)
    per = args.tokens_per_criterion
    if args.base_url:
        base = JudgeConfig(base_url=args.base_url, model=args.model)
        chat = OpenAIChat(base)
    else:
        base = JudgeConfig(backend="policy")
        chat = PolicyChat(base)
    batched = Judge(base.model_copy(update={"batch": True, "max_tokens": per * args.criteria}), chat)
    single = Judge(base.model_copy(update={"batch": False, "max_tokens": per}), chat)
    run(single, work[:1])  # warm up the backend
    results = {}
    for name, judge in (("batched", batched), ("per criterion", single)):
        judge.requests_sent = 0
        seconds, graded, parsed = run(judge, work)
        results[name] = graded / seconds
        print(
            f"{name:>14}: {graded} criteria in {seconds:6.1f} s = {graded / seconds:5.2f} criteria/s, "
            f"{judge.requests_sent} requests, {parsed}/{graded} verdicts parsed"
        )
    print(f"batching / per criterion throughput: {results['batched'] / results['per criterion']:.2f}x")


if __name__ == "__main__":
    main()
