"""Evaluation: documents, programmatic checks, the LLM judge over real HTTP, scores, metrics, reports,
the APEX importer, the shipped rubric suite (gold 1.0, nothing 0) and the rubric env."""

from __future__ import annotations

import base64
import itertools
import json
import threading
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import gymnasium as gym
import pytest
from gymnasium.utils.env_checker import check_env
from sandbox_fixtures import backend_config

from agentsd.config import JudgeConfig
from agentsd.envs import RUBRIC_ID
from agentsd.envs.apex import load_apex
from agentsd.envs.documents import build, render
from agentsd.envs.oracle import run_nothing, run_reference, tool_call
from agentsd.envs.rubric import RubricEnv
from agentsd.envs.rubric_checks import CheckError, Evidence, run_check
from agentsd.envs.rubric_grading import RubricError, grade
from agentsd.envs.task_formats import load_suite
from agentsd.eval.judge import Judge, OpenAIChat, parse_reply
from agentsd.eval.metrics import RunResult, pass_at_k, pass_hat_k, suite_metrics
from agentsd.eval.report import as_runs, compare, read_results, write_report, write_results
from agentsd.types import Family, Task, Verifier

SUITE = load_suite("apex-mini")


def evidence(answer: str = "", files: dict[str, bytes] | None = None, output: str | None = None) -> Evidence:
    stored = files or {}
    return Evidence(answer, lambda path: stored.get(path), output)


def rubric_task(criteria: list[dict[str, Any]], **meta: Any) -> Task:
    return Task(
        id="t",
        family=Family.RUBRIC,
        instruction="Do it.",
        verifier=Verifier(kind="rubric", criteria=criteria),
        meta=meta,
    )


# ---------------------------------------------------------------------------------------- documents


def test_spreadsheets_round_trip_with_formulas_evaluated_when_uncached() -> None:
    data = build(
        "a.xlsx",
        json.dumps(
            {"Q3": [["Item", "Amount"], ["Rent", "1200"], ["Food", 300.5], ["Total", "=SUM(B2:B3)*2-B2/4"]]}
        ),
    )
    text = render("a.xlsx", data)
    assert "## sheet Q3 (4 rows x 2 columns)" in text and "2\tRent\t1200" in text
    assert "=SUM(B2:B3)*2-B2/4" in text  # never computed by a spreadsheet app: shown as the formula
    files = {"a.xlsx": data}
    met = run_check(
        {"kind": "cell_value", "path": "a.xlsx", "cell": "B4", "value": 2701, "tolerance": 0.01},
        evidence(files=files),
    )
    assert met.met and "-> 2701" in met.rationale
    assert not run_check(
        {"kind": "cell_value", "path": "a.xlsx", "cell": "A2", "value": "Food"}, evidence(files=files)
    ).met
    assert render("b.xlsx", build("b.xlsx", "x,y\n1,2\n")).splitlines()[3] == "2\t1\t2"


def test_word_documents_round_trip_headings_bullets_and_tables() -> None:
    data = build(
        "m.docx", "# Memo\nHello CFO.\n- first point\n| Owner | Due |\n|---|---|\n| Dana | 2026-12-15 |\n"
    )
    text = render("m.docx", data)
    assert "# Memo" in text and "Hello CFO." in text and "- first point" in text
    assert "| Dana | 2026-12-15 |" in text and "---" not in text


# ---------------------------------------------------------------------------------------- checks


def test_every_check_kind_meets_and_misses() -> None:
    files = {
        "out.json": json.dumps(
            {"totals": {"net": 171750.0}, "items": [{"name": "a"}, {"name": "b"}]}
        ).encode()
    }
    ev = evidence("Net income was $171,750 (EUR 158,010.00); see T-102.", files)
    cases = [
        ({"kind": "file_exists", "path": "out.json"}, True),
        ({"kind": "file_exists", "path": "missing.json"}, False),
        ({"kind": "contains", "text": "t-102"}, True),
        ({"kind": "contains", "text": "t-102", "case_sensitive": True}, False),
        ({"kind": "regex", "pattern": r"EUR [\d,.]+"}, True),
        ({"kind": "regex", "pattern": r"GBP"}, False),
        ({"kind": "numeric_within", "value": 171750, "tolerance": 0.5}, True),
        ({"kind": "numeric_within", "value": 158000, "rel_tolerance": 0.001}, True),
        ({"kind": "numeric_within", "value": 17175}, False),
        ({"kind": "numeric_within", "value": 158010, "pattern": r"EUR ([\d,.]+)"}, True),
        ({"kind": "json_path_equals", "path": "out.json", "json_path": "totals.net", "value": 171750}, True),
        ({"kind": "json_path_equals", "path": "out.json", "json_path": "items[1].name", "value": "b"}, True),
        ({"kind": "json_path_equals", "path": "out.json", "json_path": "items[5].name", "value": "b"}, False),
        ({"kind": "contains", "source": "nowhere.md", "text": "x"}, False),
    ]
    for check, expected in cases:
        assert run_check(check, ev).met is expected, check


def test_a_check_that_cannot_decide_is_an_error_not_a_verdict() -> None:
    for bad in ({"kind": "telepathy"}, {"kind": "regex", "pattern": "("}, {"kind": "contains"}):
        with pytest.raises(CheckError):
            run_check(bad, evidence("x"))


# ---------------------------------------------------------------------------------------- grading


def test_score_is_weighted_with_negative_criteria_as_penalties() -> None:
    task = rubric_task(
        [
            {"id": "a", "text": "A", "weight": 3, "check": {"kind": "contains", "text": "alpha"}},
            {"id": "b", "text": "B", "check": {"kind": "contains", "text": "beta"}, "primary": False},
            {"id": "n", "text": "mistake", "negative": True, "check": {"kind": "contains", "text": "oops"}},
        ]
    )
    assert grade(task, evidence("alpha beta"), None).score == 1.0
    result = grade(task, evidence("alpha oops"), None)
    assert result.score == pytest.approx((3 - 1) / 4) and result.passed is False  # a primary mistake
    assert "mistake made: mistake" in result.feedback() and "not met: B" in result.feedback()
    assert grade(task, evidence(""), None).score == 0.0


def test_ungraded_criteria_are_errors_left_out_of_the_score() -> None:
    task = rubric_task(
        [
            {"id": "a", "text": "A", "check": {"kind": "contains", "text": "alpha"}},
            {"id": "j", "text": "Is persuasive"},
        ]
    )
    result = grade(task, evidence("alpha"), None)
    assert result.score == 1.0 and result.passed is None  # a primary criterion was not graded
    [judged] = result.errors
    assert judged.id == "j" and judged.met is None and judged.error == "no judge configured"
    with pytest.raises(RubricError, match=r"task t: verifier\.criteria is empty"):
        grade(rubric_task([]), evidence(""), None)
    with pytest.raises(RubricError, match=r"task t: verifier.criteria\[0\]"):
        grade(rubric_task([{"id": "x"}]), evidence(""), None)


# ---------------------------------------------------------------------------------------- judge


class FakeEndpoint:
    """A real OpenAI-compatible HTTP server on loopback whose replies the test scripts."""

    def __init__(self) -> None:
        self.replies: list[tuple[int, str]] = []
        self.requests: list[dict[str, Any]] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                owner.requests.append(body)
                status, content = owner.replies.pop(0) if owner.replies else (200, owner.default(body))
                payload = (
                    json.dumps({"choices": [{"message": {"content": content}}]}) if status == 200 else content
                )
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(payload.encode())

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    @staticmethod
    def default(body: dict[str, Any]) -> str:
        """Met exactly for criteria whose text the output contains in quotes."""
        prompt = body["messages"][1]["content"]
        output = prompt.split("## The agent's output", 1)[1].split("## Criteria", 1)[0]
        verdicts = []
        for block in prompt.split("- id: ")[1:]:
            cid, text = block.split("\n", 1)
            wanted = text.split('"')[1] if '"' in text else "\x00"
            verdicts.append({"id": cid.strip(), "met": wanted in output, "rationale": f"looked for {wanted}"})
        return json.dumps({"verdicts": verdicts})


@pytest.fixture
def endpoint() -> Iterator[FakeEndpoint]:
    server = FakeEndpoint()
    yield server
    server.server.shutdown()


def judge_for(endpoint: FakeEndpoint, **settings: Any) -> Judge:
    config = JudgeConfig(base_url=endpoint.url, attempts=3, **settings)
    return Judge(config, OpenAIChat(config))


def test_the_judge_grades_over_http_with_batching_votes_and_rationales(endpoint: FakeEndpoint) -> None:
    task = rubric_task(
        [
            {"id": "p", "text": 'Mentions "Delaware"'},
            {"id": "q", "text": 'Mentions "Ohio"'},
            {"id": "c", "text": "C", "check": {"kind": "contains", "text": "law"}},
        ]
    )
    batched = judge_for(endpoint)
    result = grade(task, evidence("Delaware law governs."), batched)
    assert [(c.id, c.met, c.grader) for c in result.criteria] == [
        ("p", True, "judge"),
        ("q", False, "judge"),
        ("c", True, "check"),
    ]
    assert result.criteria[0].rationale == "looked for Delaware" and len(endpoint.requests) == 1
    one_each = judge_for(endpoint, batch=False, votes=3, temperature=0.7)
    grade(task, evidence("Delaware law governs."), one_each)
    assert len(endpoint.requests) == 1 + 2 * 3  # two judge criteria, three votes each
    assert endpoint.requests[-1]["temperature"] == 0.7


def test_judge_failures_are_grader_errors_and_5xx_is_retried(endpoint: FakeEndpoint) -> None:
    task = rubric_task([{"id": "p", "text": 'Says "yes"'}])
    judge = judge_for(endpoint)
    endpoint.replies = [(503, "busy"), (502, "busy")]  # then the default answer
    assert grade(task, evidence("yes"), judge).criteria[0].met is True and len(endpoint.requests) == 3
    endpoint.replies = [(400, "bad request")]  # a 4xx is not retried
    [c] = grade(task, evidence("yes"), judge).criteria
    assert c.met is None and "HTTP 400" in (c.error or "") and len(endpoint.requests) == 4
    endpoint.replies = [(200, "I think it is fine.")]
    [c] = grade(task, evidence("yes"), judge).criteria
    assert c.met is None and "not one JSON object" in (c.error or "")
    endpoint.replies = [(503, "busy")] * 3
    [c] = grade(task, evidence("yes"), judge).criteria
    assert c.met is None and "gave up after 3 attempts" in (c.error or "")


def test_votes_meet_the_threshold_and_unparseable_votes_do_not_count() -> None:
    class Scripted:
        def __init__(self, replies: list[str]) -> None:
            self.replies = replies

        def chat(self, messages: list[dict[str, str]], *, temperature: float, max_tokens: int) -> str:
            return self.replies.pop(0)

    task = rubric_task([{"id": "p", "text": "P"}])
    met = '{"verdicts": [{"id": "p", "met": true, "rationale": "ok"}]}'
    unmet = '```json\n{"verdicts": [{"id": "p", "met": false, "rationale": "no"}]}\n```'
    config = JudgeConfig(base_url="http://unused", votes=3, threshold=0.6)
    [c] = grade(task, evidence("x"), Judge(config, Scripted([met, unmet, "garbage"]))).criteria
    assert c.votes == [True, False] and c.met is False  # 1/2 valid votes < 0.6
    [c] = grade(task, evidence("x"), Judge(config, Scripted([met, met, unmet]))).criteria
    assert c.met is True and c.rationale == "ok"
    assert "did not grade criterion q" in str(parse_reply('{"verdicts": []}', ["q"])["q"])
    # only the expected structure decides anything: no shortcuts, no strings for booleans
    assert "is not {" in str(parse_reply('{"met": true, "rationale": "r"}', ["p"])["p"])
    assert "no boolean" in str(parse_reply('{"verdicts": [{"id": "p", "met": "yes"}]}', ["p"])["p"])


# ---------------------------------------------------------------------------------------- metrics


def test_pass_at_k_and_pass_hat_k_match_enumeration() -> None:
    for n, c, k in [(5, 2, 1), (5, 2, 3), (8, 8, 8), (6, 0, 2), (7, 3, 4)]:
        outcomes = [True] * c + [False] * (n - c)
        subsets = list(itertools.combinations(range(n), k))
        assert pass_at_k(n, c, k) == pytest.approx(
            sum(any(outcomes[i] for i in s) for s in subsets) / len(subsets)
        )
        assert pass_hat_k(n, c, k) == pytest.approx(
            sum(all(outcomes[i] for i in s) for s in subsets) / len(subsets)
        )


def test_suite_metrics_per_domain_with_bootstrap_intervals() -> None:
    runs = [
        RunResult(f"t{i}", "finance" if i < 3 else "legal", s, s == 1.0)
        for i in range(6)
        for s in ([1.0, 0.5] if i % 2 else [1.0, 1.0])
    ]
    runs.append(RunResult("t0", "finance", None, None))  # not graded: left out and counted
    metrics = suite_metrics(runs, [2])
    assert metrics.tasks == 6 and metrics.ungraded == 1
    assert metrics.pass_at[1].value == pytest.approx(0.75) and metrics.pass_all[2].value == pytest.approx(0.5)
    assert metrics.mean_score.low <= metrics.mean_score.value <= metrics.mean_score.high
    assert set(metrics.by_domain) == {"finance", "legal"} and metrics.by_domain["legal"].tasks == 3
    assert suite_metrics(runs, [2]).mean_score.low == metrics.mean_score.low  # seeded


def test_reports_and_comparison(tmp_path: Path) -> None:
    def records(scores: dict[str, float]) -> list[dict[str, Any]]:
        return [
            {
                "task_id": t,
                "domain": "d",
                "score": s,
                "passed": s == 1.0,
                "criteria": [{"id": "c", "text": "C", "met": s == 1.0, "negative": False, "error": None}],
            }
            for t, s in scores.items()
        ]

    a, b = records({"x": 0.0, "y": 0.5, "z": 1.0}), records({"x": 1.0, "y": 0.5, "w": 1.0})
    write_results(tmp_path / "a" / "results.jsonl", a)
    assert read_results(tmp_path / "a") == a
    written = write_report(
        tmp_path / "a",
        "suite A",
        a,
        suite_metrics([RunResult(r["task_id"], "d", r["score"], r["passed"]) for r in a]),
    )
    html = (tmp_path / "a" / "report.html").read_text()
    assert "<table>" in html and html.count("data:image/png;base64,") == 2 and len(written) == 4
    assert "Criteria most often not satisfied" in (tmp_path / "a" / "report.md").read_text()
    result = compare(a, b, [1])
    assert result.common_tasks == 2 and result.delta.value == pytest.approx(0.5)
    (tmp_path / "bad.jsonl").write_text('{"task_id": "x"}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:1: missing field score"):
        read_results(tmp_path / "bad.jsonl")


# ---------------------------------------------------------------------------------------- APEX format


def write_release(root: Path) -> None:
    world = root / "world_files_zipped"
    world.mkdir(parents=True)
    with zipfile.ZipFile(world / "w1.zip", "w") as archive:
        archive.writestr("w1/filesystem/notes.md", "The answer is 42.\n")
        archive.writestr("w1/filesystem/data/book.xlsx", build("book.xlsx", "a,b\n1,2\n"))
        archive.writestr("w1/other/ignored.txt", "not part of the filesystem")
    (root / "task_files" / "t1").mkdir(parents=True)
    (root / "task_files" / "t1" / "extra.txt").write_text("only for t1\n")
    good = {
        "task_id": "t1",
        "world_id": "w1",
        "domain": "Law",
        "prompt": "What is the answer?",
        "rubric": [{"verifier_id": "v1", "criteria": "States 42"}],
        "task_input_files": ["notes.md"],
        "expected_output": "message_in_console",
        "gold_response": "42",
        "gold_response_type": "text",
    }
    tasks = [
        good,
        {**good, "task_id": "t2", "rubric": []},
        {**good, "task_id": "t3", "world_id": "nowhere"},
        {**good, "task_id": "t4", "rubric": [{"verifier_id": "v1"}]},
        {**good, "task_id": "t5", "task_input_files": ["missing.pdf"]},
    ]
    (root / "tasks_and_rubrics.json").write_text(json.dumps(tasks))


def test_apex_release_imports_and_bad_tasks_are_named_and_skipped(tmp_path: Path) -> None:
    write_release(tmp_path)
    tasks, problems = load_apex(tmp_path)
    [task] = tasks
    assert (
        task.family is Family.RUBRIC
        and task.meta["domain"] == "Law"
        and task.reference["gold_response"] == "42"
    )
    assert set(task.world.files) == {"notes.md", "extra.txt"} and set(task.world.blobs) == {"data/book.xlsx"}
    assert task.verifier.criteria == [
        {"id": "v1", "text": "States 42", "weight": 1.0, "primary": True, "negative": False}
    ]
    assert "Input files: notes.md" in task.instruction
    assert len(problems) == 4
    assert "task t2: rubric is missing or empty" in problems[0]
    assert "task t3: world_id nowhere" in problems[1] and "missing world file" in problems[1]
    assert "task t4: rubric[0]: field `criteria`" in problems[2]
    assert "task t5: task_input_files ['missing.pdf']" in problems[3]
    assert [t.id for t in load_suite(tmp_path)] == ["t1"]  # a directory in this format is a suite


# ---------------------------------------------------------------------------------------- shipped suite


def test_the_shipped_suite_spans_three_domains_and_half_is_programmatic() -> None:
    assert len(SUITE) >= 12
    domains = {t.meta["domain"] for t in SUITE}
    assert domains == {"finance", "consulting", "legal"}
    programmatic = [t for t in SUITE if all("check" in c for c in t.verifier.criteria)]
    assert len(programmatic) >= len(SUITE) / 2
    assert all(len(t.world.files) + len(t.world.blobs) >= 4 for t in SUITE)  # worlds of several files
    assert any(p.endswith(".xlsx") for t in SUITE for p in t.world.blobs)
    assert any(p.endswith(".docx") for t in SUITE for p in t.world.blobs)


@pytest.mark.parametrize("task", SUITE, ids=[t.id for t in SUITE])
def test_every_shipped_task_scores_1_with_its_gold_output_and_0_with_nothing(task: Task) -> None:
    env = gym.make(RUBRIC_ID, sandbox=backend_config("local")).unwrapped
    try:
        assert isinstance(env, RubricEnv)
        gold, info = run_reference(env, task)
        assert gold == 1.0, info["feedback"]
        judged = [
            c
            for c in info["grading"]
            if "check" not in next(x for x in task.verifier.criteria if x["id"] == c["id"])
        ]
        assert all(c["error"] == "no judge configured" for c in judged)  # recorded, not counted
        nothing, info = run_nothing(env, task)
        assert nothing == 0.0 and info["termination"] == "done"
    finally:
        env.close()


def test_the_rubric_env_reads_and_writes_documents(tmp_path: Path) -> None:
    task = next(t for t in SUITE if t.id == "leg-register")
    env = gym.make(RUBRIC_ID, sandbox=backend_config("local")).unwrapped
    try:
        assert isinstance(env, RubricEnv)
        env.reset(options={"task": task})
        obs, *_ = env.step(tool_call("read_document", path="contract_register.xlsx"))
        assert "Globex Ltd\t2025-03-01" in obs
        obs, *_ = env.step(tool_call("read_document", path="contracts/msa_acme_globex.docx"))
        assert "ninety (90) days" in obs
        obs, *_ = env.step(tool_call("read_document", path="nope.xlsx"))
        assert "does not exist" in obs
        rows = render("r.xlsx", env.read_bytes("contract_register.xlsx") or b"")
        assert "Umbrella" in rows
        content = {
            "Register": [
                ["Contract", "Counterparty", "Start", "End", "Governing law"],
                ["Master Services Agreement", "Globex Ltd", "2025-03-01", "2027-03-01", "Delaware"],
            ]
        }
        obs, *_ = env.step(
            tool_call("write_document", path="contract_register.xlsx", content=json.dumps(content))
        )
        assert obs.startswith("Wrote contract_register.xlsx")
        obs, *_ = env.step(tool_call("write_document", path="bad.xlsx", content="[1, 2]"))
        assert "give CSV text or a JSON object" in obs
        _, reward, terminated, _, info = env.step(tool_call("submit"))
        assert terminated and reward == 1.0 and info["passed"] is True
        assert {c["id"] for c in info["grading"]} == {"end", "law"}
    finally:
        env.close()


def test_rubric_env_passes_gymnasium_check_env() -> None:
    env = gym.make(RUBRIC_ID, task=SUITE[0], sandbox=backend_config("local"))
    try:
        check_env(env.unwrapped, skip_render_check=True)
    finally:
        env.close()


def test_world_blobs_are_laid_out_byte_exact() -> None:
    task = next(t for t in SUITE if t.id == "fin-q3-revenue")
    env = gym.make(RUBRIC_ID, sandbox=backend_config("local")).unwrapped
    try:
        assert isinstance(env, RubricEnv)
        env.reset(options={"task": task})
        assert env.read_bytes("ledger_q3.xlsx") == base64.b64decode(task.world.blobs["ledger_q3.xlsx"])
    finally:
        env.close()


@pytest.mark.slow
def test_agentsd_eval_rolls_out_grades_reports_and_compares(tmp_path: Path) -> None:
    """The real default model through the collect path on two shipped tasks, twice, then --compare."""
    import subprocess
    import sys

    backend_config("local")
    repo = Path(__file__).resolve().parents[1]
    base = [
        sys.executable,
        "-m",
        "agentsd.cli.main",
        "eval",
        "-c",
        str(repo / "configs/eval/apex-mini.yaml"),
        "max_tasks=2",
        "repeats=2",
        "k=[1,2]",
        "max_turns=2",
        "sampling.max_new_tokens=32",
        f"store.url=sqlite:///{tmp_path}/eval.db",
    ]
    for name, tasks in (("a", 2), ("b", 1)):  # b: one task, so the comparison pairs what both ran
        done = subprocess.run(
            [*base, f"run_dir={tmp_path / name}", f"name={name}", f"max_tasks={tasks}"],
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        assert "mean score" in done.stdout
        records = read_results(tmp_path / name / name)
        assert len(records) == 2 * tasks and {r["task_id"] for r in records} == {t.id for t in SUITE[:tasks]}
        assert all(r["family"] == "rubric" and r["score"] is not None for r in records)
        for produced in ("report.md", "report.html", "scores.png", "tasks.png"):
            assert (tmp_path / name / name / produced).is_file()
        assert (tmp_path / name / "mlflow.db").is_file()
    compared = subprocess.run(
        [
            sys.executable,
            "-m",
            "agentsd.cli.main",
            "eval",
            "--compare",
            str(tmp_path / "a" / "a"),
            str(tmp_path / "b" / "b"),
            "--out",
            str(tmp_path / "cmp"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert compared.returncode == 0, compared.stderr[-3000:]
    assert "difference over 1 common task:" in compared.stdout
    assert (tmp_path / "cmp" / "compare.html").is_file()
    bad = subprocess.run(
        [*base, f"run_dir={tmp_path / 'c'}", "k=[3]"], capture_output=True, text=True, timeout=300
    )
    assert bad.returncode == 2 and "k [3]: each k must be between 1 and repeats (2)" in bad.stderr
    # a run name means one plan: not reused by a new eval, resumed only with the plan it was started with
    again = subprocess.run(
        [*base, f"run_dir={tmp_path / 'a'}", "name=a"], capture_output=True, text=True, timeout=300
    )
    assert (
        again.returncode == 2
        and "eval run 'a' already exists" in again.stderr
        and "--resume a" in again.stderr
    )
    changed = subprocess.run(
        [*base, f"run_dir={tmp_path / 'a'}", "--resume", "a", "max_turns=3", "model.max_context=4096"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert changed.returncode == 2, changed.stderr[-3000:]
    assert "max_turns: 2 -> 3" in changed.stderr and "model.max_context: 8192 -> 4096" in changed.stderr
    resume = [*base, f"run_dir={tmp_path / 'a'}", "--resume", "a"]
    resumed = subprocess.run(resume, capture_output=True, text=True, timeout=900)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "0 episodes (4 already done" in resumed.stdout and len(read_results(tmp_path / "a" / "a")) == 4


@pytest.mark.slow
def test_a_local_policy_backend_judges_through_the_chat_template() -> None:
    from agentsd.eval.judge import PolicyChat

    config = JudgeConfig(backend="policy", max_tokens=48)
    chat = PolicyChat(config)
    try:
        reply = chat.chat(
            [{"role": "user", "content": 'Reply with {"verdicts": []}'}], temperature=0.0, max_tokens=16
        )
        assert isinstance(reply, str) and reply.strip()
        task = rubric_task([{"id": "p", "text": "Mentions Delaware"}])
        [c] = grade(task, evidence("Delaware law governs."), Judge(config, chat)).criteria
        # the small default model may or may not answer in the JSON shape: either way it is recorded
        assert c.grader == "judge" and ((c.met is None) == (c.error is not None))
    finally:
        chat.close()


# ---------------------------------------------------------------------------------------- output types


def test_a_new_document_task_shows_the_agents_file_to_the_judge(
    endpoint: FakeEndpoint, tmp_path: Path
) -> None:
    """APEX "make a new document" outputs have no fixed path: the judge must see what the agent wrote."""
    from agentsd.envs.rubric import RubricEnv

    write_release(tmp_path)
    raw = json.loads((tmp_path / "tasks_and_rubrics.json").read_text())[0]
    raw.update(
        expected_output="make_new_doc", rubric=[{"verifier_id": "v1", "criteria": 'Has "Quarterly summary"'}]
    )
    (tmp_path / "tasks_and_rubrics.json").write_text(json.dumps([raw]))
    [task], _ = load_apex(tmp_path)
    assert task.meta["expected_output"] == {"type": "files", "kind": "make_new_doc"}
    assert "Save the deliverable as a file in the working directory" in task.instruction
    env = RubricEnv(sandbox=backend_config("local"), judge=judge_for(endpoint))
    try:
        env.reset(options={"task": task})
        env.step(
            tool_call("write_document", path="out/summary.docx", content="# Quarterly summary\n\nAll good.")
        )
        env.step(tool_call("bash", command="echo noise >> notes.md"))  # an edited world file is shown too
        _, reward, _, _, info = env.step(tool_call("submit", answer="done"))
        assert reward == 1.0 and info["termination"] == "done", info["feedback"]
        shown = endpoint.requests[-1]["messages"][1]["content"]
        assert (
            "File the agent created or changed, out/summary.docx:" in shown and "Quarterly summary" in shown
        )
        assert "File the agent created or changed, notes.md:" in shown and "data/book.xlsx" not in shown
        nothing, info = run_nothing(env, task)
        assert (
            nothing == 0.0 and "File the agent created" not in endpoint.requests[-1]["messages"][1]["content"]
        )
    finally:
        env.close()


def test_a_report_says_first_when_nothing_was_graded(tmp_path: Path) -> None:
    criterion = {"id": "v1", "text": "States 42", "met": None, "error": "no judge configured"}
    ungraded = {
        "task_id": "t1",
        "domain": "Law",
        "score": None,
        "passed": None,
        "termination": "env_error",
        "criteria": [criterion],
    }
    records = [{**ungraded, "trajectory_id": f"e.{i}.0"} for i in range(3)]
    write_report(tmp_path, "apex", records, suite_metrics(as_runs(records), [1]))
    report = (tmp_path / "report.md").read_text()
    assert report.splitlines()[2] == (
        "**NOTHING WAS GRADED**: 1 tasks, 3 runs, 0 graded: 3 x no judge configured. "
        "The scores below are not measurements."
    )
    assert "graded runs" not in report and report.count("| env_error | - | no judge configured |") == 3


def test_tasks_verify_takes_a_judge_for_judge_only_criteria(endpoint: FakeEndpoint, tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    backend_config("local")
    write_release(tmp_path)
    raw = json.loads((tmp_path / "tasks_and_rubrics.json").read_text())[0]
    raw.update(rubric=[{"verifier_id": "v1", "criteria": 'States "42"'}], gold_response="The answer is 42.")
    (tmp_path / "tasks_and_rubrics.json").write_text(json.dumps([raw]))
    verify = [sys.executable, "-m", "agentsd.cli.main", "tasks", "verify", str(tmp_path)]
    env = {**os.environ, "COLUMNS": "200"}
    without = subprocess.run(verify, capture_output=True, text=True, env=env, timeout=300)
    assert without.returncode == 1 and "no judge configured" in without.stdout, without.stdout
    judged = subprocess.run(
        [*verify, "--judge-url", endpoint.url], capture_output=True, text=True, env=env, timeout=300
    )
    assert judged.returncode == 0, judged.stdout + judged.stderr
    assert "1 tasks verified: 1 ok, 0 failed, 0 skipped" in judged.stdout and len(endpoint.requests) == 2
