"""Experiment tracking: a small Tracker protocol, an MLflow implementation and two twins for tests.

`open_tracker(cfg, run_dir, run_name)` gives an MLflow run (a sqlite backend inside run_dir unless
cfg.uri names another tracking server) or, with tracking disabled, the NullTracker. mlflow is
imported only when an MLflow tracker is opened.

Not guaranteed: MLflow calls are synchronous; a tracking server that is down makes logging raise.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from agentsd.config import TrackingConfig

_PARAM_MAX_CHARS = 6000  # MLflow's limit on one parameter value
# Parameter names whose values are credentials (api_key, auth_token, password, client_secret ...);
# names of where a secret lives (api_key_env) are not secrets.
_SECRET = re.compile(r"(?:^|_)(?:api_?key|token|password|secret)$", re.IGNORECASE)
REDACTED = "[redacted]"


@runtime_checkable
class Tracker(Protocol):
    """What the collector, trainer and evaluator log to."""

    def log_params(self, params: Mapping[str, Any]) -> None: ...

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None: ...

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None: ...

    def set_tags(self, tags: Mapping[str, str]) -> None: ...

    def close(self, status: str = "FINISHED") -> None: ...


class NullTracker:
    """Logs nothing."""

    def log_params(self, params: Mapping[str, Any]) -> None:
        pass

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        pass

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        pass

    def set_tags(self, tags: Mapping[str, str]) -> None:
        pass

    def close(self, status: str = "FINISHED") -> None:
        pass


@dataclass
class MemoryTracker:
    """Keeps everything logged in memory, for tests that assert on what was tracked."""

    params: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, list[tuple[int | None, float]]] = field(default_factory=dict)
    artifacts: list[tuple[Path, str | None]] = field(default_factory=list)
    tags: dict[str, str] = field(default_factory=dict)
    status: str | None = None

    def log_params(self, params: Mapping[str, Any]) -> None:
        self.params.update(flatten_params(params))

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        for key, value in metrics.items():
            self.metrics.setdefault(key, []).append((step, float(value)))

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        self.artifacts.append((Path(path), artifact_path))

    def set_tags(self, tags: Mapping[str, str]) -> None:
        self.tags.update({k: str(v) for k, v in tags.items()})

    def close(self, status: str = "FINISHED") -> None:
        self.status = status


class MlflowTracker:
    """One MLflow run, driven through MlflowClient (no global mlflow state is touched)."""

    def __init__(
        self,
        tracking_uri: str,
        experiment: str,
        run_name: str,
        artifact_root: Path | None = None,
        *,
        run_id: str | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> None:
        """A new run of `experiment`, or with `run_id` that run again (resumed: RUNNING once more)."""
        from mlflow.tracking import MlflowClient

        self._client = MlflowClient(tracking_uri=tracking_uri)
        self.tracking_uri = tracking_uri
        self._closed = False
        if run_id is not None:
            self.run_id = run_id
            self._client.update_run(run_id, status="RUNNING")
            return
        found = self._client.get_experiment_by_name(experiment)
        if found is not None:
            experiment_id = found.experiment_id
        else:
            location = artifact_root.absolute().as_uri() if artifact_root is not None else None
            experiment_id = self._client.create_experiment(experiment, artifact_location=location)
        self.run_id = self._client.create_run(
            experiment_id, run_name=run_name, tags=dict(tags or {})
        ).info.run_id

    def log_params(self, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        flat = flatten_params(params)
        self._client.log_batch(self.run_id, params=[Param(k, v) for k, v in flat.items()])

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, step or 0) for k, v in metrics.items()]
        self._client.log_batch(self.run_id, metrics=batch)

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        self._client.log_artifact(self.run_id, str(path), artifact_path)

    def set_tags(self, tags: Mapping[str, str]) -> None:
        for key, value in tags.items():
            self._client.set_tag(self.run_id, key, str(value))

    def close(self, status: str = "FINISHED") -> None:
        if not self._closed:
            self._client.set_terminated(self.run_id, status=status)
            self._closed = True


def flatten_params(params: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested mappings -> {"a.b.c": "value"}, values cut to MLflow's limit, secrets redacted (a key,
    token or password is never a run parameter)."""
    out: dict[str, str] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten_params(value, f"{name}."))
        elif _SECRET.search(str(key)) and value not in (None, "", "EMPTY"):
            out[name] = REDACTED
        else:
            out[name] = str(value)[:_PARAM_MAX_CHARS]
    return out


PARENT_TAG = "mlflow.parentRunId"  # what makes MLflow show a run nested under another


def default_tracking_uri(run_dir: Path) -> str:
    return f"sqlite:///{(run_dir / 'mlflow.db').absolute()}"


@contextmanager
def open_tracker(cfg: TrackingConfig, run_dir: Path, run_name: str) -> Iterator[Tracker]:
    """A tracker for one run; closed FINISHED on success and FAILED when the body raises."""
    tracker: Tracker
    if not cfg.enabled:
        tracker = NullTracker()
    else:
        run_dir.mkdir(parents=True, exist_ok=True)
        uri = cfg.uri or default_tracking_uri(run_dir)
        tags = {PARENT_TAG: cfg.parent_run_id} if cfg.parent_run_id else None
        tracker = MlflowTracker(
            uri, cfg.experiment, run_name, artifact_root=run_dir / "mlartifacts", tags=tags
        )
    try:
        yield tracker
    except BaseException:
        tracker.close("FAILED")
        raise
    tracker.close("FINISHED")
