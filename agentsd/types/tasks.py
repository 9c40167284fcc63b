"""What a task is: its environment (image, build, limits), how it is graded (Verifier, Criterion),
the world of files and apps it starts in, and the sandbox an episode of it runs in (SandboxSpec,
ExecResult).

Not guaranteed: that a Task's image or build exists on a given engine, or that its verifier kind is
known to an installed family (agentsd.envs checks that when it runs the task).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import PurePosixPath
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from agentsd.types.core import Family, StrictModel


class Limits(StrictModel):
    """Resource limits of one episode's sandbox."""

    cpus: float = Field(default=1.0, gt=0, description="CPU cores.")
    memory_mb: int = Field(default=2048, gt=0, description="Memory limit in MiB.")
    pids: int = Field(default=256, gt=0, description="Maximum number of processes.")
    disk_mb: int = Field(default=2048, gt=0, description="Largest file the agent may write, in MiB.")
    timeout_s: float = Field(default=3600.0, gt=0, description="Wall-clock limit of the whole episode.")
    command_timeout_s: float = Field(default=180.0, gt=0, description="Limit of one command.")


class BuildStep(StrictModel):
    """One instruction of a task's Dockerfile that changes its image, in the order it was written."""

    kind: Literal["copy", "run", "workdir"]
    where: str = Field(description="The Dockerfile line it came from, e.g. 'Dockerfile:12'.")
    line: str = Field(description="The instruction as written (shown when the step fails).")
    workdir: str = Field(default="/", description="The WORKDIR in force (run) or the one made (workdir).")
    files: dict[str, str] = Field(default_factory=dict, description="copy: absolute path -> text.")
    blobs: dict[str, str] = Field(default_factory=dict, description="copy: absolute path -> base64.")
    argv: list[str] = Field(default_factory=list, description="run: the command (shell form wrapped).")
    env: dict[str, str] = Field(default_factory=dict, description="run: the ENV and ARG values in force.")


class EnvironmentBuild(StrictModel):
    """A task's environment built as an image, the way `docker build` builds its Dockerfile: the
    steps run once, as root, with network, on the base image (or the family image standing in for
    it), and the result is cached by `key()`; episodes then start from the built image."""

    base: str | None = Field(default=None, description="The Dockerfile's FROM image.")
    steps: list[BuildStep] = Field(min_length=1)

    def key(self) -> str:
        """A stable hash of the recipe (sha256 hex, first 16 bytes)."""
        blob = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:32]


class Environment(StrictModel):
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
    reply_file: str | None = Field(
        default=None,
        description="The single-turn form: the agent has no tools, its one reply is written to this "
        "file (relative to workdir) and graded at once.",
    )

    @field_validator("reply_file")
    @classmethod
    def _relative_reply_file(cls, value: str | None) -> str | None:
        if value is not None and (
            not value or value.startswith("/") or ".." in PurePosixPath(value).parts or "\0" in value
        ):
            raise ValueError(f"reply_file {value!r}: expected a path relative to the workdir, without '..'")
        return value


GRADING_DIRS = ["/tests", "/logs", "/solution"]
"""Writable directories the verifiers and oracle runs use (empty while the agent works)."""

SYSTEM_DIRS = frozenset(
    {"usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32", "etc", "opt", "var", "proc", "dev", "sys"}
)
"""Top directories a sandbox's own programs live in: files for them go into a built image, never
into a scratch mount laid over the whole directory."""


class Verifier(StrictModel):
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


class Criterion(StrictModel):
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


class ExecResult(StrictModel):
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


class GuiApp(StrictModel):
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


class World(StrictModel):
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
    service: list[str] | None = Field(
        default=None,
        min_length=1,
        description="The task's service: a command started in the background before the agent's first "
        "turn and again before grading (an imported image's ENTRYPOINT; envs/services.py).",
    )


class Task(StrictModel):
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
        if data["world"]["service"] is None:
            del data["world"]["service"]
        if not data["world"]["blobs"]:
            del data["world"]["blobs"]
        if not data["verifier"]["blobs"]:
            del data["verifier"]["blobs"]
        if data["environment"]["build"] is None:
            del data["environment"]["build"]
        if data["environment"]["reply_file"] is None:
            del data["environment"]["reply_file"]
        blob = json.dumps(data, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:32]
