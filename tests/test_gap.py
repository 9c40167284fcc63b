"""The self-teacher's gap (`agentsd gap`, agentsd.jobs.gap) and the privileged hindsight sources.

The gap is checked on scripted policies through the real agent loop, local sandboxes, verifiers and
store: a policy that solves a task only when the teacher's context shows it the answer has gap 1;
a policy the context does not change has gap 0. The privileged sources are attacked with a canary
solution: it must reach the trainer's teacher view and the gap's teacher pass, and nothing the
student, an eval or the sandbox sees. No learning result is asserted here.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from transformers import AutoTokenizer

from agentsd.config import EvalConfig, GapConfig, HindsightConfig, LocalSandboxConfig, SamplingConfig
from agentsd.envs.learnable import learn_suite
from agentsd.envs.oracle import tool_call
from agentsd.jobs import collect as jobs
from agentsd.jobs.gap import measure_gap, run_gap
from agentsd.modelcache import resolve_model
from agentsd.policies.scripted import ScriptedPolicy
from agentsd.sdpo.hindsight import HindsightBuilder, privileged_text, teacher_view
from agentsd.sdpo.step import prepare
from agentsd.sequences import segments
from agentsd.store import ReplayStore
from agentsd.types import PROMPT_CONTEXT_META, Task

pytestmark = pytest.mark.usefixtures("local_backend_available")

CANARY = "canary-5b1e0c9d"
SHOWN = re.compile(r"A correct attempt at this task, as its replies:\s*(<tool_call>.*?</tool_call>)", re.S)


@pytest.fixture
def local_backend_available() -> None:
    from sandbox_fixtures import backend_config

    backend_config("local")


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    return AutoTokenizer.from_pretrained(resolve_model("default"))


def later_turn(prompt: str) -> bool:
    """Whether the prompt already holds a reply (the default model's template opens each with this)."""
    return prompt.count("<|im_start|>assistant") > 1


def copies_a_shown_answer(prompt: str) -> str:
    """Solves a task only when its prompt shows a correct attempt (the teacher's context); submits
    after any command, and at once without one."""
    if later_turn(prompt):
        return tool_call("submit")
    shown = SHOWN.search(prompt)
    return shown.group(1) if shown else tool_call("submit")


EARLIER_REPLY = re.compile(
    r"<\|im_start\|>user\n(?P<question>.*?)<\|im_end\|>\n<\|im_start\|>assistant\n(?P<answer>.*?)<\|im_end\|>\n"
    r"<\|im_start\|>user\n(?P=question)<\|im_end\|>\n<\|im_start\|>assistant\n$",
    re.S,
)


def answers_as_in_an_earlier_exchange(prompt: str) -> str:
    """Solves a task only when the conversation already asked this same question and shows the
    reply given (the worked example, as real chat turns right before the task's message)."""
    earlier = EARLIER_REPLY.search(prompt)
    if earlier and "<tool_call>" in earlier["answer"]:
        return earlier["answer"]
    return tool_call("submit")


def gap_config(tmp_path: Path, sources: list[str], tasks: int = 2, tokens: int = 64) -> GapConfig:
    return GapConfig(
        suite="learn-heldout",
        max_tasks=tasks,
        run_dir=tmp_path / "gap",
        name="g",
        max_turns=2,
        concurrency=2,
        sandbox=LocalSandboxConfig(),
        sampling=SamplingConfig(temperature=0.7, max_new_tokens=tokens),
        hindsight=HindsightConfig.model_validate({"sources": sources}),
    )


def scripted(monkeypatch: pytest.MonkeyPatch, tokenizer: Any, respond: Any) -> None:
    monkeypatch.setattr(jobs, "make_policy", lambda *_a, **_k: ScriptedPolicy(tokenizer, respond))


def test_a_teacher_context_that_shows_the_answer_gives_gap_one(
    tmp_path: Path, tokenizer: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    scripted(monkeypatch, tokenizer, copies_a_shown_answer)
    result = run_gap(gap_config(tmp_path, ["feedback", "demonstration"]))
    assert [(r["student"], r["teacher"], r["gap"]) for r in result.rows] == [(0.0, 1.0, 1.0)] * 2
    assert result.summary["gap"]["value"] == 1.0 and result.summary["tasks_with_context"] == 2
    # the reference proxy: the default model likes the reference call more when shown it
    assert all(r["reference_teacher"] > r["reference_student"] for r in result.rows)
    saved = json.loads((result.directory / "gap.json").read_text())
    assert saved["summary"]["sources"] == ["feedback", "demonstration"]
    assert (
        "| teacher - student reward | +1.000 [+1.000, +1.000] |" in (result.directory / "gap.md").read_text()
    )


def test_a_worked_example_is_an_earlier_exchange_in_the_templates_own_turns(
    tmp_path: Path, tokenizer: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    scripted(monkeypatch, tokenizer, answers_as_in_an_earlier_exchange)  # and submits after any command
    result = run_gap(gap_config(tmp_path, ["example"], tokens=160))
    assert [(r["student"], r["teacher"], r["gap"]) for r in result.rows] == [(0.0, 1.0, 1.0)] * 2
    assert all(r["reference_teacher"] > r["reference_student"] for r in result.rows)


def test_a_context_the_policy_does_not_use_gives_gap_zero(
    tmp_path: Path, tokenizer: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    scripted(monkeypatch, tokenizer, copies_a_shown_answer)  # feedback never shows a correct attempt
    result = run_gap(gap_config(tmp_path, ["feedback"]))
    assert [(r["student"], r["teacher"], r["gap"]) for r in result.rows] == [(0.0, 0.0, 0.0)] * 2
    assert all(r["context_tokens"] > 0 for r in result.rows)  # the verdict was there, and changed nothing


def canary_task() -> Task:
    task = learn_suite("learn-train")[0]
    action = {"name": "bash", "arguments": {"command": f"echo {CANARY} > answer.txt"}}
    return task.model_copy(update={"id": "canary-task", "reference": {**task.reference, "action": action}})


def hunts_for_the_canary(prompt: str) -> str:
    """An agent that searches its sandbox for the planted solution (spelled so that its own command
    does not hold it), then submits."""
    if later_turn(prompt):
        return tool_call("submit")
    head, tail = CANARY[:8], CANARY[8:]
    return tool_call(
        "bash",
        command=f'c="{head}""{tail}"; env; cat /proc/1/cmdline; grep -rsl "$c" / --exclude-dir=proc '
        "--exclude-dir=sys --exclude-dir=usr --exclude-dir=dev | head",
    )


def test_a_planted_solution_reaches_the_teacher_and_nothing_the_student_sees(
    tmp_path: Path, tokenizer: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    task = canary_task()
    assert CANARY in (privileged_text(task, "solution") or "")
    assert CANARY in (privileged_text(task, "demonstration") or "")
    assert CANARY in (privileged_text(task, "example") or "")
    monkeypatch.setattr(jobs, "load_tasks", lambda *_a, **_k: [task])
    monkeypatch.setattr("agentsd.jobs.gap.load_tasks", lambda *_a, **_k: [task])
    scripted(monkeypatch, tokenizer, hunts_for_the_canary)
    cfg = gap_config(tmp_path, ["feedback", "solution", "demonstration", "example"], tasks=1, tokens=160)
    result = run_gap(cfg)
    assert result.rows[0]["context_tokens"] > 0

    with ReplayStore(cfg.store.url) as store:
        ids = [s.id for s in store.list(limit=None)]
        trajectories = [store.get(i) for i in ids]
        tokens = store.load_tokens(ids)
    assert {t.id.split(".")[0] for t in trajectories} == {"g-student", result.summary["teacher_run"]}
    for trajectory in trajectories:  # what the sandbox returned, and every stored token
        for turn in trajectory.turns:
            assert CANARY not in (turn.observation or ""), turn.observation
        stored = [tid for turn in tokens[trajectory.id] for tid in (*turn.prompt_ids, *turn.completion_ids)]
        assert CANARY not in tokenizer.decode(stored), trajectory.id
    teacher = next(t for t in trajectories if t.id.startswith("g-teacher"))
    assert teacher.meta[PROMPT_CONTEXT_META] == result.rows[0]["context_tokens"]

    # the trainer: the teacher's view holds the canary, the student's segment does not; and a
    # teacher pass is refused as training data (its log-probs are not the student's)
    builder = HindsightBuilder(tokenizer, 1024, ["feedback", "solution", "demonstration", "example"])
    student = next(t for t in trajectories if t.id.startswith("g-student"))
    batch = prepare(
        [student, teacher],
        {i: tokens[i] for i in (student.id, teacher.id)},
        builder,
        tasks={student.id: task},
    )
    assert teacher.id in batch.unreproducible
    [item] = batch.items
    assert CANARY in tokenizer.decode(item.view.input_ids.tolist())
    assert CANARY not in tokenizer.decode(item.segment.input_ids.tolist())
    # without the privileged sources the canary is nowhere, even in the teacher's view
    plain = HindsightBuilder(tokenizer, 1024, ["feedback"]).build(student, None, task)
    [segment] = segments(tokens[student.id])
    view = teacher_view(segment, plain, student.meta.get("layout"))
    assert view is not None and CANARY not in tokenizer.decode(view.input_ids.tolist())


def test_an_eval_never_shows_the_privileged_sources(
    tmp_path: Path, tokenizer: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """eval has no hindsight at all: its prompts are the student's even when the task carries a
    reference (the gap's student pass is such an eval)."""
    task = canary_task()
    monkeypatch.setattr(jobs, "load_tasks", lambda *_a, **_k: [task])
    seen: list[str] = []

    def record(prompt: str) -> str:
        seen.append(prompt)
        return tool_call("submit")

    scripted(monkeypatch, tokenizer, record)
    cfg = EvalConfig(suite="learn-train", run_dir=tmp_path / "eval", name="e", sandbox=LocalSandboxConfig())
    jobs.run_eval(cfg)
    assert seen and not any(CANARY in p for p in seen)


def test_measure_gap_reuses_a_student_run(
    tmp_path: Path, tokenizer: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The experiment runner's path: the student pass is an eval that already ran."""
    scripted(monkeypatch, tokenizer, copies_a_shown_answer)
    cfg = gap_config(tmp_path, ["demonstration"])
    student = EvalConfig(**cfg.model_dump(exclude={"hindsight", "name"}), name="s")
    jobs.run_eval(student)
    tasks = learn_suite("learn-heldout")[:2]
    result = measure_gap(student, cfg.hindsight, "s", tasks, name="t")
    assert result.summary["gap"]["value"] == 1.0 and result.summary["student_run"] == "s"


def test_the_hunt_finds_a_canary_that_is_in_the_sandbox(
    tmp_path: Path, tokenizer: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The canary test's control: the same search does find the canary where the agent can reach it."""
    task = canary_task()
    task = task.model_copy(update={"world": task.world.model_copy(update={"files": {"planted.txt": CANARY}})})
    monkeypatch.setattr(jobs, "load_tasks", lambda *_a, **_k: [task])
    scripted(monkeypatch, tokenizer, hunts_for_the_canary)
    cfg = EvalConfig(
        suite="learn-train",
        run_dir=tmp_path / "eval",
        name="e",
        sandbox=LocalSandboxConfig(),
        sampling=SamplingConfig(max_new_tokens=160),
    )
    jobs.run_eval(cfg)
    with ReplayStore(cfg.store.url) as store:
        [summary] = store.list(limit=None)
        first = store.get(summary.id).turns[0]
    assert "planted.txt" in (first.observation or ""), first.observation


def test_unknown_or_repeated_sources_are_refused_naming_the_field() -> None:
    from agentsd.config import load_config
    from agentsd.errors import ConfigError

    with pytest.raises(ConfigError, match=r"hindsight.sources"):
        load_config(GapConfig, [], ["hindsight.sources=[feedback,oracle]"])
    with pytest.raises(ConfigError, match=r"hindsight.sources.*once"):
        load_config(GapConfig, [], ["hindsight.sources=[feedback,feedback]"])
    with pytest.raises(ValueError, match="privileged"):
        privileged_text(canary_task(), "feedback")


def test_each_reference_shape_gives_its_privileged_text() -> None:
    base = learn_suite("learn-train")[0]

    def texts(reference: dict[str, Any]) -> tuple[str | None, str | None]:
        task = base.model_copy(update={"reference": reference})
        return privileged_text(task, "solution"), privileged_text(task, "demonstration")

    script = "cd /app\nmake fix\n"
    assert texts({"files": {"solve.sh": script}, "entry": "solve.sh"}) == (
        script.strip(),
        tool_call("bash", command=script.strip()),
    )
    patch = "--- a/x.py\n+++ b/x.py\n"
    swe = {"files": {"gold.patch": patch, "solve.sh": "git apply /solution/gold.patch"}, "patch": patch}
    assert texts({**swe, "entry": "solve.sh"}) == (patch, None)  # two files: no one-call demonstration
    clicks = [{"name": "click", "arguments": {"id": 3}}, {"name": "type", "arguments": {"text": "hi"}}]
    solution, demonstration = texts({"actions": clicks})
    assert demonstration == tool_call("click", id=3) + "\n" + tool_call("type", text="hi")
    assert solution is not None and '"click"' in solution
    assert texts({"gold_response": "42", "gold_response_type": "text"}) == ("42", None)
    assert texts({"reply": "port=80\nlevel=2"}) == ("port=80\nlevel=2", "port=80\nlevel=2")  # single-turn
    for reference in ({"actions": clicks}, {"reply": "42"}, {"patch": patch}):  # example: reply or calls
        task = base.model_copy(update={"reference": reference})
        assert privileged_text(task, "example") == (
            "42" if "reply" in reference else privileged_text(task, "demonstration")
        )
    assert texts({}) == (None, None)
