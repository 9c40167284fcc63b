"""The agentsd command line, run as a user runs it: in a subprocess."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import make_task, make_turn

from agentsd.store import ReplayStore
from agentsd.types import HindsightSignal, Termination, Trajectory

HEAVY = ("torch", "deepspeed", "docker", "mlflow", "vllm", "transformers")


def agentsd(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "agentsd.cli.main", *args],
        capture_output=True,
        text=True,
        env={"COLUMNS": "200", **_env()},
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"agentsd {' '.join(args)} exited {proc.returncode}:\n{proc.stderr}")
    return proc


def _env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if k != "AGENTSD_STORE"}


@pytest.mark.parametrize(
    "args", [["--help"], ["replay", "--help"], ["model", "--help"], ["config", "--help"]]
)
def test_help_imports_no_heavy_library(args: list[str]) -> None:
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "agentsd.cli.main", *args], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    imported = {line.split("|")[-1].strip().split(".")[0] for line in proc.stderr.splitlines() if "|" in line}
    assert "agentsd" in imported and "typer" in imported  # the measurement itself works
    assert not imported & set(HEAVY), imported & set(HEAVY)


@pytest.fixture
def filled_store(tmp_path: Path) -> tuple[str, list[str]]:
    url = f"sqlite:///{tmp_path / 'replay.db'}"
    store = ReplayStore(url)
    rng = random.Random(0)
    ids = []
    for k in range(3):
        traj_id = store.begin(task=make_task(f"task-{k}"), policy_model="SmolLM2", version=k)
        store.append_turns(
            traj_id, [make_turn(i, rng, n_prompt=12, n_completion=6, version=k) for i in range(4)]
        )
        if k < 2:
            store.finalize(
                traj_id,
                termination=Termination.DONE,
                reward=k * 0.5,
                hindsight=[HindsightSignal(kind="verifier", text=f"assert {k} == 3")],
            )
        ids.append(traj_id)
    store.close()
    return url, ids


def test_ls_and_show(filled_store: tuple[str, list[str]]) -> None:
    url, ids = filled_store
    rows = [
        json.loads(line) for line in agentsd("replay", "ls", "--json", "--store", url).stdout.splitlines()
    ]
    assert {r["id"] for r in rows} == set(ids)
    finalized = agentsd("replay", "ls", "--json", "--status", "finalized", "--store", url).stdout.splitlines()
    assert len(finalized) == 2
    table = agentsd("replay", "ls", "--store", url).stdout
    assert all(i in table for i in ids) and "3 shown of 3" in table
    shown = agentsd("replay", "show", ids[1], "--store", url).stdout
    assert "assert 1 == 3" in shown and "Count the lines" in shown and "turn 3" in shown
    as_json = Trajectory.model_validate_json(
        agentsd("replay", "show", ids[1], "--json", "--store", url).stdout
    )
    assert as_json == ReplayStore(url).get(ids[1])


def test_export_jsonl_is_lossless(filled_store: tuple[str, list[str]], tmp_path: Path) -> None:
    url, ids = filled_store
    out = tmp_path / "out.jsonl"
    agentsd("replay", "export", "--status", "all", "--out", str(out), "--store", url)
    exported = [Trajectory.model_validate_json(line) for line in out.read_text().splitlines()]
    store = ReplayStore(url)
    assert sorted(exported, key=lambda t: t.id) == sorted((store.get(i) for i in ids), key=lambda t: t.id)
    stdout = agentsd("replay", "export", ids[0], "--store", url).stdout
    assert Trajectory.model_validate_json(stdout.strip()) == store.get(ids[0])


def test_export_atif_follows_the_format(filled_store: tuple[str, list[str]], tmp_path: Path) -> None:
    url, _ = filled_store
    agentsd(
        "replay",
        "export",
        "--format",
        "atif",
        "--prompt-ids",
        "--out",
        str(tmp_path / "atif"),
        "--store",
        url,
    )
    files = sorted((tmp_path / "atif").glob("*.json"))
    assert len(files) == 2  # finalized only, by default
    store = ReplayStore(url)
    for file in files:
        doc = json.loads(file.read_text())
        traj = store.get(doc["session_id"])
        assert doc["schema_version"] == "ATIF-v1.4" and doc["agent"]["model_name"] == "SmolLM2"
        steps = doc["steps"]
        assert [s["step_id"] for s in steps] == list(range(1, len(steps) + 1))
        assert steps[0]["source"] == "user" and steps[0]["message"] == make_task(traj.task_id).instruction
        running_context: list[int] = []
        for step, turn in zip(steps[1:], traj.turns, strict=True):
            call_ids = {c["tool_call_id"] for c in step["tool_calls"]}
            assert {r["source_call_id"] for r in step["observation"]["results"]} <= call_ids
            assert step["metrics"]["completion_token_ids"] == turn.completion_ids
            assert step["metrics"]["logprobs"] == turn.logprobs
            running_context += turn.prompt_ids
            assert step["metrics"]["prompt_token_ids"] == running_context
            running_context += turn.completion_ids
        assert doc["extra"]["reward"] == traj.reward and doc["extra"]["termination"] == "done"


def test_user_errors_exit_2_with_one_message_and_no_traceback(tmp_path: Path) -> None:
    missing = agentsd("replay", "ls", "--store", str(tmp_path / "none.db"), check=False)
    assert (
        missing.returncode == 2
        and "no replay store at" in missing.stderr
        and "Traceback" not in missing.stderr
    )
    assert not (tmp_path / "none.db").exists()
    bad_cfg = tmp_path / "bad.yaml"
    bad_cfg.write_text("sdpo: {top_k: -3}\n")
    shown = agentsd("config", "show", "train", "-c", str(bad_cfg), check=False)
    assert shown.returncode == 2 and "sdpo.top_k = -3" in shown.stderr and "Traceback" not in shown.stderr
    unknown = agentsd("replay", "show", "nope", "--store", str(tmp_path / "x.db"), check=False)
    assert unknown.returncode == 2 and "no replay store" in unknown.stderr
    ReplayStore(tmp_path / "x.db").close()
    unknown = agentsd("replay", "show", "nope", "--store", str(tmp_path / "x.db"), check=False)
    assert unknown.returncode == 2 and "trajectory nope does not exist" in unknown.stderr
    # what an error quotes is never markup: `[/x]` used to crash the error printer itself
    tagged = agentsd("replay", "show", "[/x] [red]y[/]", "--store", str(tmp_path / "x.db"), check=False)
    assert tagged.returncode == 2 and "trajectory [/x] [red]y[/] does not exist" in tagged.stderr


def test_config_show_prints_the_validated_config_with_defaults(tmp_path: Path) -> None:
    import yaml

    out = agentsd(
        "config",
        "show",
        "train",
        "-c",
        str(Path(__file__).parent.parent / "configs/train/sdpo.yaml"),
        "sdpo.top_k=7",
    ).stdout
    data = yaml.safe_load(out)
    assert (
        data["sdpo"]["top_k"] == 7
        and data["teacher"]["mode"] == "ema"
        and data["hindsight"]["budget_tokens"] == 4096
    )


def test_store_location_comes_from_the_config_file(
    filled_store: tuple[str, list[str]], tmp_path: Path
) -> None:
    url, ids = filled_store
    cfg = tmp_path / "run.yaml"
    cfg.write_text(f"collect:\n  store: {{url: '{url}'}}\n")
    rows = agentsd("replay", "ls", "--json", "-c", str(cfg)).stdout.splitlines()
    assert len(rows) == len(ids)


def test_the_deepspeed_launchers_local_rank_argument_becomes_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from agentsd.cli.main import _launcher_local_rank

    monkeypatch.setenv("LOCAL_RANK", "")  # recorded as it was, so teardown puts it back (TRL reads it)
    monkeypatch.delenv("LOCAL_RANK")
    assert _launcher_local_rank(["--local_rank=1", "train", "-c", "x.yaml"]) == ["train", "-c", "x.yaml"]
    assert os.environ["LOCAL_RANK"] == "1"
    monkeypatch.delenv("LOCAL_RANK")
    assert _launcher_local_rank(["train", "--local_rank", "3", "lr=1"]) == ["train", "lr=1"]
    assert os.environ["LOCAL_RANK"] == "3"


def test_piped_tables_keep_one_row_per_line_and_every_listing_has_json(
    filled_store: tuple[str, list[str]], tmp_path: Path
) -> None:
    # piped, `replay ls` was cut to 80 columns: a 9-column table folded into unreadable fragments
    url, ids = filled_store
    env = {k: v for k, v in _env().items() if k != "COLUMNS"}
    piped = subprocess.run(
        [sys.executable, "-m", "agentsd.cli.main", "replay", "ls", "--store", url],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    ).stdout
    for traj_id in ids:
        (line,) = [line for line in piped.splitlines() if traj_id in line]
        assert "task-" in line and ("finalized" in line or "running" in line), line
    for args in (
        ["replay", "versions", "--store", url],
        ["tasks", "ls", "terminal"],
        ["sandbox", "ls", "--engine", "unix:///nonexistent.sock"],
        ["model", "ls"],
    ):
        out = agentsd(*args, "--json").stdout
        rows = [json.loads(line) for line in out.splitlines()]
        assert all(isinstance(row, dict) for row in rows), (args, out[:300])
        if args[0] == "tasks":
            assert len(rows) == 20 and {"id", "family", "hash", "instruction"} <= set(rows[0])


def test_agentsd_store_in_the_environment_is_the_store_of_every_command(tmp_path: Path) -> None:
    # collect, train, run and eval advertised $AGENTSD_STORE and ignored it
    url = f"sqlite:///{tmp_path}/from-env.db"
    env = {**_env(), "AGENTSD_STORE": url, "COLUMNS": "200"}
    failed = subprocess.run(
        [
            sys.executable,
            "-m",
            "agentsd.cli.main",
            "collect",
            "max_tasks=1",
            f"run_dir={tmp_path}/run",
            "tracking.enabled=false",
            "policy.backend=openai",
            "policy.base_url=http://127.0.0.1:9/v1",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert failed.returncode != 0  # no policy server: it stops after claiming its run in the store
    with ReplayStore(url) as store:
        assert store.count() == 0 and store.run_plan("run") is not None
    versions = subprocess.run(
        [sys.executable, "-m", "agentsd.cli.main", "replay", "versions", "--json"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    assert versions.stdout == ""
