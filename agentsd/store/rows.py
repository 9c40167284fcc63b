"""Conversion between store rows and agentsd types, with every integrity check on the way back.

turn_row encodes a Turn (token arrays as binary, the rest as a JSON body, a CRC32 over all of it);
the readers decode, verify the checksum and lengths, and raise CorruptRowError naming the
trajectory, the turn and the field when a row does not hold what it claims. Pure conversions: no
database access here.

Not guaranteed: the checks catch rows damaged after they were written (checksum, lengths, JSON
shape); a row written with wrong values in the first place reads back as written.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

import agentsd.store.codec as codec
from agentsd.errors import CorruptRowError
from agentsd.sequences import TurnTokens
from agentsd.store.schema import trajectories
from agentsd.types import (
    HindsightSignal,
    PolicyVersion,
    Termination,
    ToolResult,
    Trajectory,
    TrajectoryStatus,
    TrajectorySummary,
    Turn,
    TurnSource,
)

SUMMARY_COLUMNS = [trajectories.c[name] for name in TrajectorySummary.model_fields]
"""The trajectories columns a TrajectorySummary is made of (summary_from_row)."""

TURN_BODY_FIELDS = (
    "finish_reason",
    "completion_text",
    "action",
    "observation",
    "next_state",
    "reward",
    "started_at",
    "ended_at",
)


def turn_row(trajectory_id: str, turn: Turn) -> dict[str, Any]:
    prompt = codec.encode_ids(turn.prompt_ids, f"turn {turn.index} prompt_ids")
    completion = codec.encode_ids(turn.completion_ids, f"turn {turn.index} completion_ids")
    logprobs = codec.encode_f32(turn.logprobs)
    mask = codec.encode_mask(turn.loss_mask)
    body = {name: getattr(turn, name) for name in TURN_BODY_FIELDS}
    # vars() of a pydantic model is its field dict; dict(model) iterates and costs 40x more.
    body["tool_result"] = vars(turn.tool_result) if turn.tool_result is not None else None
    body_text = json.dumps(body)
    return {
        "trajectory_id": trajectory_id,
        "idx": turn.index,
        "source": turn.source.value,
        "policy_version": turn.policy_version,
        "temperature": turn.temperature,
        "top_p": turn.top_p,
        "context_reset": turn.context_reset,
        "n_prompt": len(turn.prompt_ids),
        "n_completion": len(turn.completion_ids),
        "prompt_ids": prompt,
        "completion_ids": completion,
        "logprobs": logprobs,
        "loss_mask": mask,
        "body": body_text,
        "crc": codec.checksum(prompt, completion, logprobs, mask, body_text.encode()),
    }


def _verify_crc(m: Any, where: str) -> None:
    body = m["body"] if m["body"] is not None else ""
    blobs = [m["prompt_ids"], m["completion_ids"], m["logprobs"], m["loss_mask"]]
    actual = codec.checksum(*[bytes(b) if b is not None else None for b in blobs], body.encode())
    if actual != m["crc"]:
        raise CorruptRowError(
            f"{where}: checksum mismatch (stored {m['crc']}, computed {actual}); the row is corrupt"
        )


def _decode_arrays(m: Any, where: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """prompt ids, completion ids, behaviour log-probs and loss mask of a verified turn row."""
    _verify_crc(m, where)
    n_c = m["n_completion"]
    return (
        codec.decode_ids(m["prompt_ids"], m["n_prompt"], f"{where} prompt_ids"),
        codec.decode_ids(m["completion_ids"], n_c, f"{where} completion_ids"),
        codec.decode_f32(m["logprobs"], n_c, f"{where} logprobs"),
        codec.decode_mask(m["loss_mask"], n_c, f"{where} loss_mask"),
    )


def turn_from_row(m: Any, where_traj: str) -> Turn:
    where = f"{where_traj} turn {m['idx']}"
    prompt, completion, logprobs, mask = _decode_arrays(m, where)
    body = loads(m["body"], f"{where} body", dict)
    try:
        tool_result = body.pop("tool_result", None)
        return Turn(
            index=m["idx"],
            source=TurnSource(m["source"]),
            prompt_ids=prompt.tolist(),
            completion_ids=completion.tolist(),
            logprobs=logprobs.tolist(),
            loss_mask=mask.tolist() if mask is not None else None,
            policy_version=m["policy_version"],
            temperature=m["temperature"],
            top_p=m["top_p"],
            context_reset=bool(m["context_reset"]),
            tool_result=ToolResult.model_validate(tool_result) if tool_result is not None else None,
            **body,
        )
    except (ValueError, TypeError) as exc:
        raise CorruptRowError(f"{where}: stored turn does not validate: {exc}") from exc


def turn_tokens_from_row(m: Any) -> TurnTokens:
    """The array view of a turn row (no JSON body decoded): the training read path."""
    prompt, completion, logprobs, mask = _decode_arrays(m, f"trajectory {m['trajectory_id']} turn {m['idx']}")
    n_c = completion.shape[0]
    if m["source"] != TurnSource.AGENT.value:
        trainable = np.zeros(n_c, dtype=bool)
    else:
        trainable = mask if mask is not None else np.ones(n_c, dtype=bool)
    return TurnTokens(
        index=m["idx"],
        prompt_ids=prompt,
        completion_ids=completion,
        logprobs=logprobs,
        trainable=trainable,
        policy_version=m["policy_version"],
        context_reset=bool(m["context_reset"]),
        temperature=m["temperature"],
        top_p=m["top_p"],
    )


def trajectory_from_row(m: Any, turns: list[Turn]) -> Trajectory:
    where = f"trajectory {m['id']}"
    try:
        return Trajectory(
            id=m["id"],
            task_id=m["task_id"],
            task_hash=m["task_hash"],
            policy_model=m["policy_model"],
            version_start=m["version_start"],
            version_end=m["version_end"],
            turns=turns,
            status=TrajectoryStatus(m["status"]),
            termination=Termination(m["termination"]) if m["termination"] else None,
            reward=m["reward"],
            reward_components=loads(m["reward_components"], f"{where} reward_components", dict),
            hindsight=[
                HindsightSignal.model_validate(h) for h in loads(m["hindsight"], f"{where} hindsight", list)
            ],
            artifacts=loads(m["artifacts"], f"{where} artifacts", dict),
            meta=loads(m["meta"], f"{where} meta", dict),
            created_at=m["created_at"],
            finalized_at=m["finalized_at"],
            schema_version=m["schema_version"],
        )
    except ValueError as exc:
        raise CorruptRowError(f"{where}: stored row does not validate: {exc}") from exc


def check_turn_sequence(where: str, indices: list[int], expected: int) -> None:
    if indices != list(range(expected)):
        raise CorruptRowError(
            f"{where}: stored turns {indices[:3]}..{indices[-3:]} ({len(indices)}) do not match the "
            f"{expected} turns its row records"
        )


def loads(text: Any, where: str, kind: type) -> Any:
    try:
        value = json.loads(text)
    except (TypeError, ValueError) as exc:
        raise CorruptRowError(f"{where}: not valid JSON ({exc})") from exc
    if not isinstance(value, kind):
        raise CorruptRowError(f"{where}: expected a JSON {kind.__name__}, got {type(value).__name__}")
    return value


def summary_from_row(m: Any) -> TrajectorySummary:
    try:
        return TrajectorySummary.model_validate(dict(m))
    except ValueError as exc:
        raise CorruptRowError(f"trajectory {m.get('id')}: stored row does not validate: {exc}") from exc


def version_from_row(m: Any) -> PolicyVersion:
    return PolicyVersion(
        version=m["version"],
        model=m["model"],
        checkpoint_uri=m["checkpoint_uri"],
        created_at=m["created_at"],
        meta=loads(m["meta"], f"policy version {m['version']} meta", dict),
        lineage=m["lineage"] or "",
        parent=m["parent"],
        weights_hash=m["weights_hash"],
    )
