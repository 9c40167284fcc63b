"""What an episode leaves: token-exact Turns, the Trajectory they make with its outcome and
hindsight signals, a policy's Completion, and the PolicyVersion that sampled it.

A Turn stores the ids the policy saw (as a delta over the previous turn) and the ids it sampled with
their behaviour log-probs, so training never re-tokenizes text. Not guaranteed: a Trajectory built
in memory is not durable; the replay store (agentsd.store) appends each Turn as it happens.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, model_validator

from agentsd.types.core import SCHEMA_VERSION, StrictModel, Termination, TrajectoryStatus, TurnSource

PROMPT_CONTEXT_META = "prompt_context_tokens"
"""Trajectory meta key: how many token ids the policy saw before the task text beyond the stored
prompts (a self-teacher's sampling, `agentsd gap`). Its behaviour log-probs belong to a context the
stored tokens do not hold: never trained on."""


class ToolResult(StrictModel):
    """What running the agent's action returned."""

    exit_code: int | None = None
    truncated: bool = False
    duration_s: float | None = None


class Turn(StrictModel):
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


class HindsightSignal(StrictModel):
    """Text the agent could not see while acting, for the SDPO teacher's context."""

    kind: str = Field(description="verifier | rubric | user | env | success | hint")
    text: str
    turn_index: int | None = Field(default=None, description="The turn it followed; None = trajectory-level.")


class Trajectory(StrictModel):
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


class TrajectorySummary(StrictModel):
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


class Completion(StrictModel):
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


class PolicyVersion(StrictModel):
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
