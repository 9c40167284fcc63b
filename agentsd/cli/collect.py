"""`agentsd collect`: run agents on a task suite over the sandbox fleet into the replay store."""

from __future__ import annotations

import asyncio
import re
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated

import typer

from agentsd.cli.common import ConfigFiles, StoreUrl, console, err_console

if TYPE_CHECKING:
    from agentsd.collector import Collector
    from agentsd.config import CollectConfig, EvalConfig
    from agentsd.policies import Policy
    from agentsd.runs import RunKind
    from agentsd.store import ReplayStore


def collect(
    overrides: Annotated[list[str] | None, typer.Argument(help="key.path=value overrides.")] = None,
    config: ConfigFiles = None,
    store: StoreUrl = None,
) -> None:
    """Collect trajectories: every turn lands in the store as it happens; a restart resumes the run."""
    from agentsd.config import CollectConfig, load_config

    cfg = load_config(CollectConfig, config or [], overrides or [])
    if store:
        cfg.store.url = store
    run_collect(cfg)


def run_collect(
    cfg: CollectConfig,
    *,
    kind: RunKind = "collect",
    new: bool = False,
    on_collector: Callable[[Collector], None] | None = None,
) -> str:
    """The collect run of `cfg`, with a live display, to the end of its plan (or until something
    calls `stop` on the collector `on_collector` is given); returns its name. The run's plan is
    recorded on its first start and must match on every later one; `new`: the run name must not
    exist yet."""
    from agentsd.collector import Collector
    from agentsd.config import EvalConfig
    from agentsd.policies import make_policy
    from agentsd.progress import LiveStatus
    from agentsd.runs import claim_run, plan_of
    from agentsd.store import ReplayStore
    from agentsd.suites import load_tasks
    from agentsd.tracking import open_tracker
    from agentsd.types import LeaseState

    tasks = load_tasks(cfg.suite, cfg.tasks_url)[: cfg.max_tasks]
    run_name = cfg.name or re.sub(r"[^A-Za-z0-9_-]", "-", cfg.run_dir.name) or "collect"
    err_console.print(f"{kind} run [bold]{run_name}[/]: {len(tasks)} tasks x {cfg.repeats} from {cfg.suite}")
    with ReplayStore(cfg.store.url) as replay:  # before the policy loads: a refused plan fails fast
        claim_run(replay, run_name, kind, plan_of(cfg, tasks), new=new)
    err_console.print(f"loading the policy ({cfg.policy.backend}, model {cfg.model.name})")
    policy = make_policy(cfg.policy, cfg.model, seed=cfg.seed)
    if isinstance(cfg, EvalConfig) and cfg.version:
        load_published(policy, cfg)
    judge = None
    if cfg.judge is not None:
        from agentsd.eval.judge import make_judge

        judge = make_judge(cfg.judge)
    cfg.run_dir.mkdir(parents=True, exist_ok=True)
    with (
        ReplayStore(cfg.store.url) as replay,
        open_tracker(cfg.tracking, cfg.run_dir, run_name) as tracker,
    ):
        collector = Collector(cfg, policy, replay, tasks, run_name=run_name, tracker=tracker, judge=judge)
        counts = collector.open_plan()
        planned = counts[LeaseState.WAITING] + counts[LeaseState.RUNNING]
        if on_collector is not None:
            on_collector(collector)
        with (
            LiveStatus(
                f"{kind} {run_name}", lambda: collect_figures(collector, replay, planned), err_console
            ),
            stop_on_sigterm(collector),
        ):
            stats = asyncio.run(collector.run())
    policy.close()
    terminations = ", ".join(f"{k} {v}" for k, v in sorted(stats.terminations.items())) or "none"
    console.print(
        f"{stats.episodes} episodes ({stats.skipped} already done, {stats.interrupted} interrupted and "
        f"rerun); mean reward {stats.mean_reward:.3f}; terminations: {terminations}",
        highlight=False,
    )
    if stats.stopped:
        err_console.print(f"[yellow]collection stopped early:[/] {stats.stopped}", highlight=False)
    return run_name


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
        f"({st.tokens_per_s:.1f}/s)",
        "mean reward": f"{st.mean_reward:.3f} over {len(st.rewards)} graded"
        + (f"; {dict(st.terminations)}" if st.terminations else ""),
        "policy version": f"{collector.current} for new episodes; sampling {', '.join(map(str, live))}",
        "staleness": f"{behind} version{'' if behind == 1 else 's'} behind the newest ({newest_number})",
    }
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
    from agentsd.errors import ConfigError
    from agentsd.policies.base import load_checked
    from agentsd.store import ReplayStore

    assert cfg.version is not None and cfg.versions_store is not None  # EvalConfig's validator
    with ReplayStore(cfg.versions_store.url) as versions:
        published = versions.get_version(cfg.version)
    if published is None:
        raise ConfigError(f"version: {cfg.versions_store.url} has published no version {cfg.version}")
    load_checked(policy, published)
    err_console.print(f"evaluating policy version {cfg.version} ({published.checkpoint_uri})")
