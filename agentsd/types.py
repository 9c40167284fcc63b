"""Core data types of agentsd: Task, Turn, Trajectory and their enums.

This module imports nothing from the project and nothing heavy: every other module may import it.
A Turn is token-exact: it stores the ids the policy saw (as a delta over the previous turn) and
the ids it sampled with their behaviour log-probs, so training never re-tokenizes text.

What it does not guarantee: a Trajectory built in memory is not durable. Durability is the replay
store's job (agentsd.store), which appends each Turn as it happens.
"""

from __future__ import annotations

import hashlib
import json
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

SCHEMA_VERSION = 1
"""Version of the Trajectory/Turn layout. Bumped with a store migration whenever fields change."""


class Family(StrEnum):
    """The environment family a task belongs to."""

    TERMINAL = "terminal"
    """A shell in a sandbox; graded by a test script."""
    SWE = "swe"
    """A repository at a base commit; graded by FAIL_TO_PASS / PASS_TO_PASS tests."""
    GUI = "gui"
    """A desktop or browser under X; graded by an app or page state checker."""
    RUBRIC = "rubric"
    """A professional task in a world of files; graded by rubric criteria."""


class Termination(StrEnum):
    """Why a trajectory ended. A trajectory without one is unfinished."""

    DONE = "done"
    """The agent submitted; the verifier ran."""
    TIMEOUT = "timeout"
    """The episode's wall-clock limit passed."""
    CONTEXT = "context"
    """The context window was exhausted even after compaction."""
    TURNS = "turns"
    """The turn limit was reached."""
    ENV_ERROR = "env_error"
    """The sandbox, environment or verifier failed; the reward is not trustworthy."""
    AGENT_ERROR = "agent_error"
    """The policy or agent loop failed."""
    INTERRUPTED = "interrupted"
    """The writer died mid-trajectory and a later process closed it."""


class TurnSource(StrEnum):
    """Who produced a turn's completion tokens."""

    AGENT = "agent"
    """Sampled by the policy; its tokens carry behaviour log-probs and may be trained on."""
    USER = "user"
    """Written by a user (a correction, a re-query); never trained on."""
    SYSTEM = "system"
    """Inserted by the harness (a summary after compaction, a forced message); never trained on."""


class TrajectoryStatus(StrEnum):
    """Life cycle of a trajectory in the replay store."""

    RUNNING = "running"
    """Turns are still being appended (or the writer died: see Termination.INTERRUPTED)."""
    FINALIZED = "finalized"
    """Reward and termination are set; the trajectory is visible to training."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=False)


class Limits(_Model):
    """Resource limits of one episode's sandbox."""

    cpus: float = Field(default=1.0, gt=0, description="CPU cores.")
    memory_mb: int = Field(default=2048, gt=0, description="Memory limit in MiB.")
    pids: int = Field(default=256, gt=0, description="Maximum number of processes.")
    disk_mb: int = Field(default=2048, gt=0, description="Largest file the agent may write, in MiB.")
    timeout_s: float = Field(default=3600.0, gt=0, description="Wall-clock limit of the whole episode.")
    command_timeout_s: float = Field(default=180.0, gt=0, description="Limit of one command.")


class BuildStep(_Model):
    """One instruction of a task's Dockerfile that changes its image, in the order it was written."""

    kind: Literal["copy", "run", "workdir"]
    where: str = Field(description="The Dockerfile line it came from, e.g. 'Dockerfile:12'.")
    line: str = Field(description="The instruction as written (shown when the step fails).")
    workdir: str = Field(default="/", description="The WORKDIR in force (run) or the one made (workdir).")
    files: dict[str, str] = Field(default_factory=dict, description="copy: absolute path -> text.")
    blobs: dict[str, str] = Field(default_factory=dict, description="copy: absolute path -> base64.")
    argv: list[str] = Field(default_factory=list, description="run: the command (shell form wrapped).")
    env: dict[str, str] = Field(default_factory=dict, description="run: the ENV and ARG values in force.")


class EnvironmentBuild(_Model):
    """A task's environment built as an image, the way `docker build` builds its Dockerfile: the
    steps run once, as root, with network, on the base image (or the family image standing in for
    it), and the result is cached by `key()`; episodes then start from the built image."""

    base: str | None = Field(default=None, description="The Dockerfile's FROM image.")
    steps: list[BuildStep] = Field(min_length=1)

    def key(self) -> str:
        """A stable hash of the recipe (sha256 hex, first 16 bytes)."""
        blob = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:32]


class Environment(_Model):
    """Where a task runs: image, limits, network, working directory, and how its image is built."""

    image: str | None = Field(default=None, description="Image or rootfs; None = the family's default image.")
    limits: Limits = Field(default_factory=Limits)
    network: bool = Field(default=False, description="Whether the sandbox may reach the network.")
    workdir: str = Field(default="/workspace", description="Working directory: a writable, private tmpfs.")
    scratch_dirs: list[str] = Field(
        default_factory=list, description="More writable private directories (e.g. /tests, /logs)."
    )
    build: EnvironmentBuild | None = Field(
        default=None, description="Build the task's image from these Dockerfile steps before it runs."
    )


GRADING_DIRS = ["/tests", "/logs", "/solution"]
"""Writable directories the verifiers and oracle runs use (empty while the agent works)."""

SYSTEM_DIRS = frozenset(
    {"usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32", "etc", "opt", "var", "proc", "dev", "sys"}
)
"""Top directories a sandbox's own programs live in: files for them go into a built image, never
into a scratch mount laid over the whole directory."""


class Verifier(_Model):
    """How a task is graded. `kind` selects which of the other fields are used."""

    kind: str = Field(description="script | harbor | terminal-bench | swebench | rubric | gui")
    script: str | None = Field(default=None, description="Test script (script kind): exit 0 means solved.")
    files: dict[str, str] = Field(
        default_factory=dict, description="Test files (relative path -> text), uploaded only to grade."
    )
    blobs: dict[str, str] = Field(
        default_factory=dict, description="Binary test files: relative path -> base64 of the bytes."
    )
    fail_to_pass: list[str] = Field(default_factory=list)
    pass_to_pass: list[str] = Field(default_factory=list)
    test_patch: str | None = None
    criteria: list[dict[str, Any]] = Field(default_factory=list, description="Rubric criteria.")
    checker: str | None = Field(default=None, description="GUI checker name or script.")
    timeout_s: float = Field(default=600.0, gt=0)


class Criterion(_Model):
    """One rubric criterion of a professional task (APEX style).

    `check` makes it programmatic (envs/rubric_checks.py lists the kinds); without one an LLM judge
    decides it from `text`. A negative criterion describes a mistake: met, it costs its weight."""

    id: str = Field(min_length=1)
    text: str = Field(min_length=1, description="What must be true of the output, in words.")
    weight: float = Field(default=1.0, gt=0)
    primary: bool = Field(default=True, description="pass@1 needs every primary criterion met.")
    negative: bool = Field(default=False, description="Describes an error; met means penalized.")
    check: dict[str, Any] | None = Field(default=None, description="A programmatic check; None = judge.")


RESERVED_LABELS = frozenset({"sandbox", "owner", "created"})


class SandboxSpec(Environment):
    """What one episode's sandbox must be: a task's Environment plus where and for whom it runs."""

    family: Family = Family.TERMINAL
    env: dict[str, str] = Field(default_factory=dict, description="Environment of every command.")
    labels: dict[str, str] = Field(
        default_factory=dict, description="run_id, episode_id, ...: found by the reaper."
    )

    @field_validator("labels")
    @classmethod
    def _not_reserved(cls, labels: dict[str, str]) -> dict[str, str]:
        """Labels become `agentsd.<key>` on containers: they must never stand in for the reaper's own."""
        taken = sorted(set(labels) & RESERVED_LABELS)
        if taken:
            raise ValueError(
                f"labels {taken} are reserved for agentsd's own bookkeeping "
                f"({', '.join(sorted(RESERVED_LABELS))}); use another name"
            )
        return labels


class ExecResult(_Model):
    """What one command in a sandbox returned. Output is bounded: head and tail kept, middle elided."""

    exit_code: int | None = Field(description="None when the command was killed (timeout).")
    stdout: str = ""
    stderr: str = ""
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    timed_out: bool = False
    duration_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    @property
    def truncated(self) -> bool:
        return self.stdout_truncated or self.stderr_truncated


class GuiApp(_Model):
    """The application a GUI task opens on the sandbox's X display."""

    kind: Literal["desktop", "web"] = Field(description="desktop: an AT-SPI app; web: Chromium on a URL.")
    command: list[str] = Field(default_factory=list, description="desktop: the program and its arguments.")
    url: str | None = Field(default=None, description="web: the page to open (file:// for world files).")
    init_js: str | None = Field(default=None, description="web: a script run once the page has loaded.")
    width: int = Field(default=1280, ge=320, le=3840)
    height: int = Field(default=800, ge=240, le=2160)
    settle_s: float = Field(default=0.3, ge=0, le=10, description="Pause after each action before observing.")

    @model_validator(mode="after")
    def _target(self) -> GuiApp:
        if self.kind == "desktop" and not self.command:
            raise ValueError("a desktop app needs `command`")
        if self.kind == "web" and not self.url:
            raise ValueError("a web app needs `url`")
        return self


class World(_Model):
    """The state a task starts from, laid into the sandbox before the agent's first turn."""

    files: dict[str, str] = Field(
        default_factory=dict, description="Path (absolute, or relative to the workdir) -> text content."
    )
    setup: str | None = Field(default=None, description="Shell script run in the workdir after the files.")
    env: dict[str, str] = Field(default_factory=dict, description="Environment of every command.")
    app: GuiApp | None = Field(default=None, description="GUI tasks: the application to open.")
    blobs: dict[str, str] = Field(
        default_factory=dict,
        description="Binary files (xlsx, docx, ...): path (as in `files`) -> base64 of the bytes.",
    )


class Task(_Model):
    """One task: what the agent is asked, the world it acts in, and how it is graded."""

    id: str = Field(min_length=1)
    family: Family
    instruction: str = Field(min_length=1)
    world: World = Field(default_factory=lambda: World())
    environment: Environment = Field(default_factory=Environment)
    verifier: Verifier
    reference: dict[str, Any] = Field(default_factory=dict, description="Gold answer, patch or solution.")
    meta: dict[str, Any] = Field(
        default_factory=dict, description="Source benchmark, upstream id, difficulty."
    )

    def content_hash(self) -> str:
        """A stable hash of everything that defines the task (sha256 hex, first 16 bytes)."""
        data = self.model_dump(mode="json")
        if data["world"]["app"] is None:  # fields added later hash as before when unset
            del data["world"]["app"]
        if not data["world"]["blobs"]:
            del data["world"]["blobs"]
        if not data["verifier"]["blobs"]:
            del data["verifier"]["blobs"]
        if data["environment"]["build"] is None:
            del data["environment"]["build"]
        blob = json.dumps(data, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:32]


class ToolResult(_Model):
    """What running the agent's action returned."""

    exit_code: int | None = None
    truncated: bool = False
    duration_s: float | None = None


class Turn(_Model):
    """One policy call and what followed it, token-exact.

    The full sequence the policy saw before sampling turn j is the concatenation of
    prompt_ids + completion_ids of turns 0..j-1 followed by turn j's prompt_ids, restarted at the
    last turn with `context_reset` (compaction rewrote the context, so prompt_ids is the whole
    prompt there).
    """

    index: int = Field(ge=0)
    source: TurnSource = TurnSource.AGENT
    prompt_ids: list[int] = Field(
        default_factory=list, description="Token ids appended to the context since the previous turn."
    )
    completion_ids: list[int] = Field(default_factory=list, description="Token ids sampled in this turn.")
    logprobs: list[float] = Field(
        default_factory=list, description="Behaviour log-prob of each completion token, after temperature."
    )
    loss_mask: list[bool] | None = Field(
        default=None, description="Per completion token: may it be trained on. None = all, for agent turns."
    )
    policy_version: int = Field(default=0, ge=0, description="Policy version that sampled this turn.")
    temperature: float | None = Field(
        default=None,
        gt=0,
        description="Sampling temperature of this turn; None = not recorded (stores "
        "before schema 2, and turns no policy sampled).",
    )
    top_p: float | None = Field(
        default=None, gt=0, le=1, description="Nucleus mass of this turn's sampling; None = not recorded."
    )
    context_reset: bool = Field(
        default=False, description="Compaction happened: prompt_ids is the full context."
    )
    finish_reason: str | None = Field(default=None, description="stop | length | tool_call | ...")
    completion_text: str = Field(
        default="", description="Decoded completion, for people; training uses the ids."
    )
    action: dict[str, Any] | None = Field(default=None, description="Parsed tool call, or the parse error.")
    observation: str | None = Field(
        default=None, description="What the environment returned, as shown to the agent."
    )
    tool_result: ToolResult | None = None
    next_state: str | None = Field(default=None, description="Bounded text of what changed after this turn.")
    reward: float | None = Field(default=None, description="Optional step reward.")
    started_at: float = Field(default=0.0, description="Unix time the policy call started.")
    ended_at: float = Field(default=0.0, description="Unix time the environment step ended.")

    @model_validator(mode="after")
    def _aligned(self) -> Turn:
        n = len(self.completion_ids)
        if len(self.logprobs) != n:
            raise ValueError(f"logprobs has {len(self.logprobs)} entries, completion_ids has {n}")
        if self.loss_mask is not None and len(self.loss_mask) != n:
            raise ValueError(f"loss_mask has {len(self.loss_mask)} entries, completion_ids has {n}")
        return self

    def trainable_mask(self) -> list[bool]:
        """The effective loss mask: only agent tokens are ever trainable."""
        if self.source is not TurnSource.AGENT:
            return [False] * len(self.completion_ids)
        return list(self.loss_mask) if self.loss_mask is not None else [True] * len(self.completion_ids)

    @property
    def n_tokens(self) -> int:
        return len(self.prompt_ids) + len(self.completion_ids)


class HindsightSignal(_Model):
    """Text the agent could not see while acting, for the SDPO teacher's context."""

    kind: str = Field(description="verifier | rubric | user | env | success | hint")
    text: str
    turn_index: int | None = Field(default=None, description="The turn it followed; None = trajectory-level.")


class Trajectory(_Model):
    """One task, one attempt: every turn plus the outcome."""

    id: str = Field(min_length=1)
    task_id: str = Field(min_length=1)
    task_hash: str = ""
    policy_model: str = Field(description="Model name or path the policy ran.")
    version_start: int = Field(default=0, ge=0)
    version_end: int = Field(default=0, ge=0)
    turns: list[Turn] = Field(default_factory=list)
    status: TrajectoryStatus = TrajectoryStatus.RUNNING
    termination: Termination | None = None
    reward: float | None = None
    reward_components: dict[str, float] = Field(default_factory=dict)
    hindsight: list[HindsightSignal] = Field(default_factory=list)
    artifacts: dict[str, str] = Field(default_factory=dict, description="Name -> path or URI.")
    meta: dict[str, Any] = Field(default_factory=dict, description="Run id, image used, collector, ...")
    created_at: float = 0.0
    finalized_at: float | None = None
    schema_version: int = SCHEMA_VERSION

    @property
    def n_tokens(self) -> int:
        return sum(t.n_tokens for t in self.turns)

    @property
    def finished(self) -> bool:
        return self.status is TrajectoryStatus.FINALIZED


class TrajectorySummary(_Model):
    """A trajectory's store row without its turns: what listings and finalized-trajectory queries return."""

    id: str
    task_id: str
    task_hash: str
    policy_model: str
    version_start: int
    version_end: int
    status: TrajectoryStatus
    termination: Termination | None
    reward: float | None
    n_turns: int
    n_tokens: int
    n_completion_tokens: int
    created_at: float
    updated_at: float
    finalized_at: float | None
    writer: str


class Completion(_Model):
    """What a policy sampled for one prompt: the tokens, their behaviour log-probs, and who sampled."""

    token_ids: list[int] = Field(default_factory=list)
    logprobs: list[float] = Field(
        default_factory=list,
        description="Log-prob of each sampled token under the distribution it was drawn from "
        "(after temperature and top-p).",
    )
    finish_reason: str = Field(description="stop (end of turn or a stop string) | length")
    policy_version: int = Field(ge=0, description="The version whose weights produced every token.")
    temperature: float = Field(gt=0, description="The temperature the tokens were sampled at.")
    top_p: float = Field(gt=0, le=1, description="The nucleus mass the tokens were sampled from.")

    @model_validator(mode="after")
    def _aligned(self) -> Completion:
        if len(self.logprobs) != len(self.token_ids):
            raise ValueError(
                f"logprobs has {len(self.logprobs)} entries, token_ids has {len(self.token_ids)}"
            )
        return self


class PolicyVersion(_Model):
    """One published policy version: where its weights are, and which line of training made them.

    Version numbers are unique in a store across lineages, so a number names one set of weights."""

    version: int = Field(ge=0)
    model: str
    checkpoint_uri: str
    created_at: float
    meta: dict[str, Any] = Field(default_factory=dict)
    lineage: str = Field(default="", description="The trainer lineage that published it.")
    parent: int | None = Field(
        default=None, description="The version its weights were trained from; None = the base model."
    )
    weights_hash: str | None = Field(
        default=None, description="sha256 of its weight files (agentsd.weights); None = not recorded."
    )


class LeaseState(StrEnum):
    """Where one episode of a run's plan stands (the episode_leases table)."""

    WAITING = "waiting"
    """Nobody runs it: never started, or its last attempt was interrupted and handed back."""
    RUNNING = "running"
    """A collector holds it under a lease that its heartbeat extends."""
    DONE = "done"
    """An attempt finished (any termination but interrupted)."""


class EpisodeLease(_Model):
    """One episode of a collect or eval run's plan as the store holds it.

    `attempt` is the attempt now running or the last one started (-1: none yet); the trajectory of
    attempt a is `<run>.<episode:06d>.<a>`. A RUNNING lease whose `expires_at` has passed belongs to a
    collector that stopped beating: the next claim takes it over."""

    run: str
    episode: int = Field(ge=0)
    state: LeaseState
    attempt: int = Field(ge=-1)
    holder: str | None = None
    claimed_at: float | None = None
    expires_at: float | None = None
    updated_at: float


class EpisodeClaim(_Model):
    """What a claim hands a collector: the episode, the attempt to run it as, and the attempt it
    took over from a collector whose lease expired (None when the episode was waiting)."""

    episode: int = Field(ge=0)
    attempt: int = Field(ge=0)
    taken_over: int | None = None
    previous_holder: str | None = None
