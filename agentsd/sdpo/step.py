"""One SDPO loss over a batch of stored trajectories, on a Hugging Face causal LM.

For each trajectory: its context segments (agentsd.sequences), its hindsight (agentsd.sdpo.hindsight)
and, per segment, the teacher's view. The student runs the segment as the policy saw it, the teacher
(the same network with φ swapped in, agentsd.sdpo.teacher) runs the teacher view without gradient;
only the hidden states before trainable tokens are projected to the vocabulary, chunk by chunk
(agentsd.sdpo.chunked), and the per-token terms of the whole batch go into one token-mean loss
(agentsd.sdpo.loss). Teacher log-probs are always computed here, at learning time.

Trajectories without hindsight contribute nothing and are counted; so are segments without
trainable tokens and segments whose teacher view would be the student's own (nothing inserted).
Each token is scored at the temperature its turn was sampled at. A trajectory whose sampling the
trainer cannot reproduce (a turn sampled with top_p < 1, or parameters not recorded) is refused
whole, with the reason, and counted: its behaviour log-probs belong to a distribution the loss
would not compute.

Not guaranteed: DeepSpeed specifics (the engine wraps the model and steps the optimizer; this
module only computes the loss); models whose decoder is not `model.base_model` with an output
embedding without bias.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from functools import partial

import numpy as np
import torch
from torch import Tensor
from transformers import PreTrainedModel

from agentsd.config import SDPOConfig
from agentsd.sdpo import AdvantageScale, SDPOLoss, TokenBatch, chunked_head, sdpo_loss_from_terms
from agentsd.sdpo.hindsight import HindsightBuilder, TeacherView, teacher_view
from agentsd.sdpo.teacher import Teacher
from agentsd.sequences import Segment, TurnTokens, segments
from agentsd.types import PROMPT_CONTEXT_META, Task, Trajectory


@dataclass(frozen=True)
class TrainItem:
    """One context segment of one trajectory, with its teacher view."""

    trajectory_id: str
    trajectory_index: int
    segment: Segment
    view: TeacherView
    reward: float | None
    age_s: float


@dataclass
class PreparedBatch:
    items: list[TrainItem] = field(default_factory=list)
    no_hindsight: list[str] = field(default_factory=list)
    unreproducible: dict[str, str] = field(default_factory=dict)  # trajectory id -> why
    no_trainable_tokens: int = 0
    nothing_inserted: int = 0  # segments whose teacher view would equal the student's


def reproducible_sampling(trajectory: Trajectory, turns: Sequence[TurnTokens]) -> list[TurnTokens] | str:
    """The turns with their sampling parameters resolved, or why the trainer cannot reproduce the
    distribution a trainable turn was sampled from. Turns stored before per-turn parameters take the
    trajectory's recorded ones."""
    if trajectory.meta.get(PROMPT_CONTEXT_META):
        return (
            f"sampled with {trajectory.meta[PROMPT_CONTEXT_META]} context tokens its stored prompts do not "
            "hold (a self-teacher's pass): its behaviour log-probs are not the student's"
        )
    out = []
    for turn in turns:
        if not turn.trainable.any():
            out.append(turn)
            continue
        temperature = turn.temperature if turn.temperature is not None else trajectory.meta.get("temperature")
        top_p = turn.top_p if turn.top_p is not None else trajectory.meta.get("top_p")
        if not isinstance(temperature, int | float) or isinstance(temperature, bool) or temperature <= 0:
            return f"turn {turn.index}: no sampling temperature recorded ({temperature!r})"
        if not isinstance(top_p, int | float) or isinstance(top_p, bool):
            return f"turn {turn.index}: no top_p recorded ({top_p!r}; stores written before schema 2 lack it)"
        if top_p < 1.0:
            return (
                f"turn {turn.index} was sampled with top_p {top_p}: the loss cannot reproduce a "
                "nucleus-truncated distribution (collect with sampling.top_p 1 to train on it)"
            )
        out.append(replace(turn, temperature=float(temperature), top_p=float(top_p)))
    return out


def prepare(
    trajectories: Sequence[Trajectory],
    tokens: dict[str, list[TurnTokens]],
    builder: HindsightBuilder,
    successes: dict[str, Trajectory] | None = None,
    tasks: dict[str, Task] | None = None,
    now: float | None = None,
) -> PreparedBatch:
    """Segments and teacher views of each trajectory (`successes`: task id -> a solved attempt;
    `tasks`: trajectory id -> its task, for the privileged sources)."""
    now = time.time() if now is None else now
    batch = PreparedBatch()
    for index, trajectory in enumerate(trajectories):
        success = (successes or {}).get(trajectory.task_id)
        if success is not None and success.id == trajectory.id:
            success = None
        hindsight = builder.build(trajectory, success, (tasks or {}).get(trajectory.id))
        if hindsight.empty:
            batch.no_hindsight.append(trajectory.id)
            continue
        resolved = reproducible_sampling(trajectory, tokens[trajectory.id])
        if isinstance(resolved, str):
            batch.unreproducible[trajectory.id] = resolved
            continue
        layout = trajectory.meta.get("layout")
        ended = trajectory.finalized_at or now
        for segment in segments(resolved):
            if not segment.loss_mask.any():
                batch.no_trainable_tokens += 1
                continue
            view = teacher_view(segment, hindsight, layout)
            if view is None:
                batch.nothing_inserted += 1
                continue
            batch.items.append(TrainItem(trajectory.id, index, segment, view, trajectory.reward, now - ended))
    return batch


def decoder_and_head(model: torch.nn.Module) -> tuple[torch.nn.Module, Tensor]:
    """The network up to the final hidden states, and the output projection weight [V, H].
    A peft model is unwrapped first: its adapters live inside the causal LM's own modules."""
    get_base_model = getattr(model, "get_base_model", None)
    inner = get_base_model() if callable(get_base_model) else model
    if not isinstance(inner, PreTrainedModel):
        raise TypeError(f"the SDPO step needs a Hugging Face causal LM, not {type(inner).__name__}")
    head = inner.get_output_embeddings()
    if head is None:
        raise ValueError(f"{type(inner).__name__} has no output projection")
    if getattr(head, "bias", None) is not None:
        raise ValueError("output projections with a bias are not supported by the chunked SDPO head")
    return inner.base_model, head.weight


def batch_loss(
    model: torch.nn.Module,
    teacher: Teacher,
    batch: PreparedBatch,
    config: SDPOConfig,
    *,
    version: int,
    chunk: int,
    advantage_scale: AdvantageScale | None = None,
) -> SDPOLoss | None:
    """The SDPO loss of every item of the batch together (None when no item has trainable tokens),
    divided by the batch's own used-token count (data-parallel ranks divide `numerator` by the
    global count instead, SDPOLoss.divided_by)."""
    decoder, weight = decoder_and_head(model)
    device = weight.device
    if not batch.items:
        return None
    trained_of = [np.flatnonzero(item.segment.loss_mask) for item in batch.items]
    teacher_rows, teacher_weight = _teacher_rows(decoder, weight, model, teacher, batch, trained_of)
    student_rows: list[Tensor] = []
    fields: list[dict[str, Tensor]] = []
    for item, trained in zip(batch.items, trained_of, strict=True):
        ids = torch.from_numpy(item.segment.input_ids.astype(np.int64))[None].to(device)
        hidden = decoder(input_ids=ids).last_hidden_state[0]
        student_rows.append(hidden[torch.from_numpy(trained - 1).to(device)])
        segment = item.segment
        fields.append(
            {
                "tokens": torch.from_numpy(segment.input_ids[trained].astype(np.int64)),
                "behaviour_logp": torch.from_numpy(segment.behaviour_logprobs[trained].astype(np.float32)),
                "mask": torch.ones(len(trained), dtype=torch.bool),
                "versions": torch.from_numpy(segment.versions[trained].astype(np.int64)),
                "turn_index": torch.from_numpy(segment.turn_index[trained].astype(np.int64)),
                "trajectory_index": torch.full((len(trained),), item.trajectory_index, dtype=torch.long),
                "temperature": torch.from_numpy(segment.temperatures[trained].astype(np.float32)),
            }
        )
    if not student_rows:
        return None
    tokens = torch.cat([f["tokens"] for f in fields]).to(device)
    k = config.top_k if config.form == "topk" else 0
    head = getattr(model, "sdpo_head", None)  # ZeRO-3: the module that gathers the projection
    project = head if head is not None else partial(_project, weight)
    temperature = torch.cat([f.pop("temperature") for f in fields]).to(device)
    divergence, logp, teacher_logp = project(
        torch.cat(student_rows), teacher_rows, teacher_weight, tokens, k, config.alpha, temperature, chunk
    )
    token_batch = TokenBatch(**{k: torch.cat([f[k] for f in fields]).to(device) for k in fields[0]})
    return sdpo_loss_from_terms(
        token_batch,
        divergence,
        logp,
        teacher_logp,
        config,
        version=version,
        advantage_scale=advantage_scale,
    )


def _teacher_rows(
    decoder: torch.nn.Module,
    weight: Tensor,
    model: torch.nn.Module,
    teacher: Teacher,
    batch: PreparedBatch,
    trained_of: list[np.ndarray],
) -> tuple[Tensor, Tensor | None]:
    """The teacher's hidden rows before every trainable token of the batch [N, H] (trust region:
    [N, 2H], reference and own features scaled by 1-γ and γ) and the projection they go through
    (None: the student's own, as in the live mode).

    All teacher forwards run before any student forward: φ is swapped into the parameters once per
    step, and the in-place swap cannot touch tensors a student graph has saved for backward."""
    device = weight.device
    views = [torch.from_numpy(item.view.input_ids.astype(np.int64))[None].to(device) for item in batch.items]
    before = [
        torch.from_numpy(item.view.position[trained] - 1).to(device)
        for item, trained in zip(batch.items, trained_of, strict=True)
    ]
    with torch.no_grad():
        with teacher.swapped(model):
            rows = [decoder(input_ids=v).last_hidden_state[0][b] for v, b in zip(views, before, strict=True)]
            # one step has one teacher projection, so one chunked head covers the whole batch
            head = weight.detach().clone() if teacher.weights is not None else None
        if not teacher.needs_reference_forward:
            return torch.cat(rows), head
        gamma = teacher.config.trust_region
        own = [decoder(input_ids=v).last_hidden_state[0][b] for v, b in zip(views, before, strict=True)]
        # z = (1-γ)·h_ref·W_refᵀ + γ·h_θ·W_θᵀ as one projection of concatenated features
        mixed = [torch.cat([(1 - gamma) * r, gamma * o], dim=-1) for r, o in zip(rows, own, strict=True)]
        assert head is not None  # trust_region keeps the reference weights
        return torch.cat(mixed), torch.cat([head, weight.detach()], dim=-1)


def _project(
    weight: Tensor,
    rows: Tensor,
    teacher_rows: Tensor,
    teacher_weight: Tensor | None,
    tokens: Tensor,
    k: int,
    alpha: float,
    temperature: Tensor,
    chunk: int,
) -> tuple[Tensor, Tensor, Tensor]:
    """The chunked head with the student's projection; the teacher's is its own, or (None) the
    student's without gradient."""
    theirs = weight.detach() if teacher_weight is None else teacher_weight
    return chunked_head(
        rows, weight, teacher_rows, theirs, tokens, k=k, alpha=alpha, temperature=temperature, chunk=chunk
    )


class SDPOHead(torch.nn.Module):
    """The chunked head as a module that owns no parameters but projects with the LM head's weight
    (see head_module)."""

    def __init__(self, weight: Tensor) -> None:
        super().__init__()
        self.projection = [weight]  # a reference, not a registered parameter: the LM head owns it

    def forward(
        self,
        rows: Tensor,
        teacher_rows: Tensor,
        teacher_weight: Tensor | None,
        tokens: Tensor,
        k: int,
        alpha: float,
        temperature: Tensor,
        chunk: int,
    ) -> tuple[Tensor, Tensor, Tensor]:
        return _project(
            self.projection[0], rows, teacher_rows, teacher_weight, tokens, k, alpha, temperature, chunk
        )


def head_module(weight: Tensor, *, zero3: bool) -> SDPOHead:
    """The chunked head as a module that owns no parameters but projects with `weight` (the LM
    head's). Attached to the model before DeepSpeed wraps it: under ZeRO-3 `weight` is registered as
    an external parameter of this module, so DeepSpeed gathers it for the head's forward and backward
    (outside a module's forward a partitioned parameter is empty). The teacher projects with the
    same weight unless a separate one is given (the live teacher is the only one ZeRO-3 allows)."""
    head = SDPOHead(weight)
    if zero3:
        # imported here, not at the top: only the trainer needs deepspeed, after choosing its
        # accelerator (DS_ACCELERATOR), and the loss's other users (tests, credit) do not load it
        import deepspeed

        deepspeed.zero.register_external_parameter(head, weight)
    return head
