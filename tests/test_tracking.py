"""Tracking against a real MLflow sqlite backend, read back with MLflow's own client."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentsd.config import TrackingConfig
from agentsd.tracking import MemoryTracker, NullTracker, Tracker, flatten_params, open_tracker


def test_mlflow_run_records_params_metrics_artifacts_and_status(tmp_path: Path) -> None:
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    run_dir = tmp_path / "run"
    note = tmp_path / "note.txt"
    note.write_text("hello")
    with open_tracker(TrackingConfig(experiment="exp"), run_dir, "train-1") as tracker:
        tracker.log_params({"sdpo": {"top_k": 100, "is_cap": 2.0}, "lr": 1e-6})
        for step in range(3):
            tracker.log_metrics({"loss": 1.0 / (step + 1), "rho_max": 2.0 + step}, step=step)
        tracker.log_artifact(note, "notes")
        tracker.set_tags({"kind": "train"})
        run_id = tracker.run_id  # pyright: ignore[reportAttributeAccessIssue]
    assert (run_dir / "mlflow.db").exists()

    client = MlflowClient(tracking_uri=f"sqlite:///{run_dir / 'mlflow.db'}")
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "train-1"
    assert run.data.params == {"sdpo.top_k": "100", "sdpo.is_cap": "2.0", "lr": "1e-06"}
    assert run.data.tags["kind"] == "train"
    history = client.get_metric_history(run_id, "loss")
    assert [(m.step, round(m.value, 6)) for m in history] == [(0, 1.0), (1, 0.5), (2, 0.333333)]
    assert [a.path for a in client.list_artifacts(run_id, "notes")] == ["notes/note.txt"]

    failed_id = ""  # bound up front: to pyright, pytest.raises may swallow a raise before the assignment
    with (
        pytest.raises(RuntimeError),
        open_tracker(TrackingConfig(experiment="exp"), run_dir, "crash") as tracker,
    ):
        failed_id = tracker.run_id  # pyright: ignore[reportAttributeAccessIssue]
        raise RuntimeError("boom")
    assert client.get_run(failed_id).info.status == "FAILED"


def test_disabled_tracking_is_the_null_tracker(tmp_path: Path) -> None:
    with open_tracker(TrackingConfig(enabled=False), tmp_path / "run", "x") as tracker:
        assert isinstance(tracker, NullTracker)
        tracker.log_metrics({"loss": 1.0}, step=0)
    assert not (tmp_path / "run").exists()


def test_memory_tracker_keeps_what_was_logged() -> None:
    tracker = MemoryTracker()
    assert isinstance(tracker, Tracker)
    tracker.log_params({"a": {"b": 1}})
    tracker.log_metrics({"loss": 2}, step=4)
    tracker.close("FAILED")
    assert (
        tracker.params == {"a.b": "1"}
        and tracker.metrics == {"loss": [(4, 2.0)]}
        and tracker.status == "FAILED"
    )
    assert flatten_params({"x": "y" * 10_000})["x"] == "y" * 6000


def test_secrets_in_a_config_are_never_logged(tmp_path: Path) -> None:
    # policy.api_key used to be an MLflow parameter, readable by anyone with the tracking server
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    from agentsd.config import CollectConfig

    config = CollectConfig.model_validate(
        {"policy": {"backend": "openai", "base_url": "http://localhost:1/v1", "api_key": "sk-live-123"}}
    )
    run_dir = tmp_path / "run"
    with open_tracker(TrackingConfig(experiment="exp"), run_dir, "collect") as tracker:
        tracker.log_params({**config.model_dump(mode="json"), "judge": {"api_key_env": "OPENAI_API_KEY"}})
        tracker.log_params({"auth_token": "t0k", "hf_token": "", "password": "hunter2"})
        run_id = tracker.run_id  # pyright: ignore[reportAttributeAccessIssue]
    params = MlflowClient(tracking_uri=f"sqlite:///{run_dir / 'mlflow.db'}").get_run(run_id).data.params
    assert not [k for k, v in params.items() if v in ("sk-live-123", "t0k", "hunter2")]
    assert params["policy.api_key"] == params["auth_token"] == params["password"] == "[redacted]"
    assert params["judge.api_key_env"] == "OPENAI_API_KEY" and params["hf_token"] == ""


def test_agentsd_run_nests_collector_and_trainer_under_one_parent_run(tmp_path: Path) -> None:
    # two MLflow stores, unrelated runs: reward and trajectory age could not be seen on one page
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    from agentsd.config import RunConfig
    from agentsd.jobs.collect import nest_tracking

    cfg = RunConfig.model_validate(
        {
            "collect": {"run_dir": str(tmp_path / "r" / "collect")},
            "train": {"run_dir": str(tmp_path / "r" / "train")},
        }
    )
    home = tmp_path / "r"
    with open_tracker(nest_tracking(cfg, home), home, "r") as parent:
        for tracking in (cfg.collect.tracking, cfg.train.tracking):
            tracking.parent_run_id = parent.run_id  # pyright: ignore[reportAttributeAccessIssue]
        with open_tracker(cfg.collect.tracking, cfg.collect.run_dir, "collect") as collect:
            collect.log_metrics({"episode/reward": 1.0}, step=1)
        with open_tracker(cfg.train.tracking, cfg.train.run_dir, "train") as train:
            train.log_metrics({"age_versions/mean": 2.0}, step=1)
        parent_id = parent.run_id  # pyright: ignore[reportAttributeAccessIssue]
    assert cfg.collect.tracking.uri == cfg.train.tracking.uri == f"sqlite:///{home.absolute()}/mlflow.db"
    client = MlflowClient(tracking_uri=cfg.collect.tracking.uri)
    experiment = client.get_experiment_by_name("agentsd")
    assert experiment is not None
    children = client.search_runs(
        [experiment.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent_id}'"
    )
    assert sorted(r.info.run_name or "" for r in children) == ["collect", "train"]
