"""The SDPO teacher's hindsight context c and the teacher's view of a context segment.

From a finalized trajectory this module gathers what the agent could not see while acting, from
the configured sources (`hindsight.sources`): `feedback`, the verifier's verdict, rubric verdicts,
user or environment replies (trajectory-level HindsightSignals) and what followed each turn (its
`next_state`, turn-level); `success`, a successful attempt at the same task when the store has one
(never the trajectory itself); `solution` and `demonstration`, the task's reference in plain form or
as an agent's tool calls (privileged: the teacher alone sees them; in production the directive part
of a next-state signal, a user's "you should have run X"), placed last, next to the task text;
`example` (privileged too), the task asked and answered by its reference as an earlier exchange of
the conversation, in the chat template's own turns: a worked example in context, the form a small
model copies from best (an answer it can end, where a block of text invites it to go on echoing).
Everything is rendered with the wording of templates/hindsight.yaml (versioned) and tokenized with
special tokens split, within a token budget; a text that does not fit loses its middle, never its
head or tail.

The teacher's view of a segment is the student's token ids with blocks inserted: the worked example
right before the task's message (at `layout.message_start`; left out when the layout has none), the
trajectory block right before the task text (at `layout.task_start`, which the agent loop records in
the trajectory's meta; at the segment's start when a trajectory has no layout), and each turn's block at
the end of the message that turn answers (before the message close and reply header). Agent tokens
are never re-tokenized: `position[p]` is where student position p sits in the teacher's ids, so
teacher and student score identical tokens.

Not guaranteed: that the hindsight is useful; a trajectory with none is reported as such (None) and
contributes nothing to the loss. A task without a reference gives the privileged sources nothing.
Keeping privileged text out of the student's prompt and the sandbox is the callers' part: only the
trainer's teacher view and the gap's teacher pass use what this module builds.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import numpy as np
import yaml

from agentsd.elision import elide_middle
from agentsd.sequences import NOT_SAMPLED, Segment
from agentsd.types import Task, Trajectory, TurnSource

SOURCES = ("feedback", "success", "solution", "demonstration", "example")
PRIVILEGED_SOURCES = ("solution", "demonstration", "example")  # from the task's reference: never the agent's
TEXT_SOURCES = ("solution", "demonstration")  # privileged sources written into the hindsight block
# privileged sources last: right before the task text, where a small model copies from (a
# probe on the default model: the reference command in 7 of 16 first replies when the
# demonstration came last, 5 of 16 when a submit followed it); elision keeps the tail
SIGNAL_ORDER = ("verifier", "rubric", "user", "env", "success", "hint", "solution", "demonstration")
SUCCESS_CHARS = 6000  # a successful attempt's actions, before token budgeting


def tool_call_text(name: str, arguments: dict[str, Any]) -> str:
    """A tool call as the agent's protocol writes it."""
    return f"<tool_call>\n{json.dumps({'name': name, 'arguments': arguments})}\n</tool_call>"


def _reference_actions(task: Task) -> list[dict[str, Any]]:
    reference = task.reference
    if isinstance(reference.get("action"), dict):
        return [reference["action"]]
    actions = reference.get("actions")
    return [a for a in actions if isinstance(a, dict)] if isinstance(actions, list) else []


def privileged_text(task: Task, source: str) -> str | None:
    """What a privileged source says of `task`, from its reference; None when it has nothing.

    `demonstration`: the reference as the agent would write it, its tool calls (tasks whose
    reference is actions, or one entry script run with bash); the submit that ends every task is
    the protocol's, not the task's, and left out. `solution`: the reference in plain form (the
    commands, the gold patch, the solution script, the gold response). A single-turn task's reference
    is its reply, which is both. `example`: the answer of the worked example, the reply or else the
    demonstration."""
    reference = task.reference
    if source not in PRIVILEGED_SOURCES:
        raise ValueError(f"{source!r} is not a privileged source ({', '.join(PRIVILEGED_SOURCES)})")
    if isinstance(reference.get("reply"), str):
        return str(reference["reply"])
    if source == "example":
        return privileged_text(task, "demonstration")
    actions = _reference_actions(task)
    files = reference.get("files")
    files = files if isinstance(files, dict) else {}
    entry = files.get(str(reference.get("entry", "solve.sh")))
    if source == "demonstration":
        if not actions and isinstance(entry, str) and len(files) == 1:
            actions = [{"name": "bash", "arguments": {"command": entry.strip()}}]
        calls = [tool_call_text(str(a.get("name")), dict(a.get("arguments") or {})) for a in actions]
        return "\n".join(calls) if calls else None
    if actions:
        return "\n".join(
            str(a["arguments"]["command"])
            if a.get("name") == "bash" and "command" in a.get("arguments", {})
            else json.dumps(a)
            for a in actions
        )
    if isinstance(reference.get("patch"), str):
        return str(reference["patch"])
    if isinstance(entry, str):
        return entry.strip()
    gold = reference.get("gold_response")
    return str(gold) if gold else None


def load_templates() -> dict[str, Any]:
    text = resources.files("agentsd").joinpath("templates/hindsight.yaml").read_text()
    templates = yaml.safe_load(text)
    for key in ("version", "trajectory", "signal", "turn", "elided"):
        if key not in templates:
            raise ValueError(f"templates/hindsight.yaml: missing {key!r}")
    return templates


def exchange_ids(tokenizer: Any, question: str, answer: str) -> list[int]:
    """One earlier exchange of a conversation as the tokenizer's chat template frames messages after
    a system prompt: `question` as the user's message, `answer` as the assistant's reply, in the
    template's own tokens (the texts themselves with special tokens split, as every task text is)."""
    marks = ("\u2063AGENTSD-QUESTION\u2063", "\u2063AGENTSD-ANSWER\u2063", "\u2063AGENTSD-NEXT\u2063")
    system = [{"role": "system", "content": "s"}]
    # rendered with a message after it: some templates frame a conversation's last reply otherwise
    # (an empty thinking block), and the example is an earlier exchange
    asked = [
        *system,
        {"role": "user", "content": marks[0]},
        {"role": "assistant", "content": marks[1]},
        {"role": "user", "content": marks[2]},
    ]
    head = str(tokenizer.apply_chat_template(system, tokenize=False))
    text = str(tokenizer.apply_chat_template(asked, tokenize=False))
    if not text.startswith(head) or any(text.count(mark) != 1 for mark in marks):
        raise ValueError("the chat template does not frame a user message and a reply after a system prompt")
    before, rest = text[len(head) :].split(marks[0])
    between, rest = rest.split(marks[1])
    after = rest.split(marks[2])[0]
    if not after.endswith(before):
        raise ValueError("the chat template frames a second user message unlike the first")
    after = after[: len(after) - len(before)]

    def encode(piece: str, literal: bool = False) -> list[int]:
        kwargs = {"split_special_tokens": True} if literal else {}
        return list(tokenizer(piece, add_special_tokens=False, **kwargs)["input_ids"])

    return encode(before) + encode(question, True) + encode(between) + encode(answer, True) + encode(after)


@dataclass(frozen=True)
class Hindsight:
    """One trajectory's hindsight as token ids: a trajectory-level block, per-turn blocks and the
    worked example (an earlier exchange, placed before the task's message)."""

    trajectory_ids: list[int]
    turn_ids: dict[int, list[int]]
    template_version: int
    example_ids: list[int] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.trajectory_ids and not self.turn_ids and not self.example_ids


@dataclass(frozen=True)
class TeacherView:
    """A segment as the teacher sees it."""

    input_ids: np.ndarray  # int32 [L + inserted]
    position: np.ndarray  # int64 [L]: student position -> teacher position
    inserted: int


class HindsightBuilder:
    def __init__(
        self, tokenizer: Any, budget_tokens: int = 4096, sources: Sequence[str] = ("feedback", "success")
    ) -> None:
        unknown = sorted(set(sources) - set(SOURCES))
        if unknown:
            raise ValueError(f"hindsight sources {unknown}: expected some of {', '.join(SOURCES)}")
        self.tokenizer = tokenizer
        self.budget = budget_tokens
        self.sources = tuple(sources)
        self.templates = load_templates()
        self.version = int(self.templates["version"])

    @property
    def privileged(self) -> bool:
        """Whether the hindsight reads the task's reference (the trainer then loads each task)."""
        return any(s in PRIVILEGED_SOURCES for s in self.sources)

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"])

    def _fit(self, text: str, allowance: int) -> list[int]:
        """Token ids of text, its middle elided to fit `allowance` tokens (head and tail kept)."""
        marker = self.templates["elided"]
        return elide_middle(self.encode(text), allowance, lambda n: self.encode(marker.format(n=n)))

    def build(
        self, trajectory: Trajectory, success: Trajectory | None = None, task: Task | None = None
    ) -> Hindsight:
        """The hindsight of a trajectory, within the token budget (trajectory-level first), from
        the builder's sources (`task`: the trajectory's task, for the privileged ones)."""
        if success is not None and success.id == trajectory.id:
            raise ValueError("the successful attempt must be another trajectory than the one trained on")
        if task is not None and task.id != trajectory.task_id:
            raise ValueError(f"task {task.id} is not trajectory {trajectory.id}'s ({trajectory.task_id})")
        signal_texts = self._signal_texts(trajectory, success, task)
        remaining = self.budget
        example_ids: list[int] = []
        placeable = "message_start" in (trajectory.meta.get("layout") or {})  # stored before it: no place
        answer = privileged_text(task, "example") if task is not None and "example" in self.sources else None
        if task is not None and answer and placeable:  # whole or not at all: half an example misleads
            example_ids = exchange_ids(self.tokenizer, task.instruction, answer)
            if len(example_ids) > remaining:
                example_ids = []
            remaining -= len(example_ids)
        trajectory_ids: list[int] = []
        if signal_texts:
            frame = self.templates["trajectory"]
            overhead = len(self.encode(frame.format(signals="")))
            body = self._fit("\n\n".join(signal_texts), max(remaining - overhead, 0))
            if body:  # an empty frame says nothing and costs its tokens
                before, after = frame.split("{signals}")
                trajectory_ids = self.encode(before) + body + self.encode(after)
                remaining -= len(trajectory_ids)
        turn_ids: dict[int, list[int]] = {}
        agent_turns = [t for t in trajectory.turns if t.source is TurnSource.AGENT]
        for turn in agent_turns[:-1] if "feedback" in self.sources else []:
            # the last turn's result is the verdict, already above
            if remaining <= 0 or not (turn.next_state or "").strip():
                continue
            before, after = self.templates["turn"].split("{text}")
            frame_ids = self.encode(before) + self.encode(after)
            body = self._fit(turn.next_state or "", max(remaining - len(frame_ids), 0))
            if not body:
                break
            turn_ids[turn.index] = self.encode(before) + body + self.encode(after)
            remaining -= len(turn_ids[turn.index])
        return Hindsight(trajectory_ids, turn_ids, self.version, example_ids)

    def _signal_texts(
        self, trajectory: Trajectory, success: Trajectory | None, task: Task | None
    ) -> list[str]:
        forms = self.templates["signal"]
        found: list[tuple[int, str]] = []
        reward = "unknown" if trajectory.reward is None else f"{trajectory.reward:g}"
        for source in TEXT_SOURCES:
            text = privileged_text(task, source) if task is not None and source in self.sources else None
            if text:
                found.append((SIGNAL_ORDER.index(source), forms[source].format(text=text, reward=reward)))
        feedback = "feedback" in self.sources
        for signal in trajectory.hindsight if feedback else []:
            if signal.turn_index is not None or not signal.text.strip():
                continue
            form = forms.get(signal.kind, forms["other"])
            rank = SIGNAL_ORDER.index(signal.kind) if signal.kind in SIGNAL_ORDER else len(SIGNAL_ORDER)
            found.append((rank, form.format(text=signal.text.strip(), reward=reward)))
        verdict = SIGNAL_ORDER.index("verifier")
        if feedback and trajectory.reward is not None and not any(rank == verdict for rank, _ in found):
            # the reward alone is hindsight too, even when the grader printed nothing
            found.append(
                (verdict, forms["verifier"].format(text="(the grader printed nothing more)", reward=reward))
            )
        if success is not None and "success" in self.sources:
            actions = "\n".join(
                t.completion_text.strip()
                for t in success.turns
                if t.source is TurnSource.AGENT and t.completion_text
            )
            if actions:
                text = (
                    actions
                    if len(actions) <= SUCCESS_CHARS
                    else actions[: SUCCESS_CHARS // 2] + "\n...\n" + actions[-SUCCESS_CHARS // 2 :]
                )
                found.append(
                    (SIGNAL_ORDER.index("success"), forms["success"].format(text=text, reward=reward))
                )
        return [text for _, text in sorted(found, key=lambda pair: pair[0])]


PromptContext = Mapping[str, Sequence[int]]  # a layout key ("message_start", "task_start") -> ids put there


def prompt_context(hindsight: Hindsight) -> dict[str, list[int]]:
    """The trajectory-level parts of `hindsight` as a prompt's context: the worked example before the
    task's message, the block before the task text (what a teacher sampling on its own sees)."""
    parts = {"message_start": hindsight.example_ids, "task_start": hindsight.trajectory_ids}
    return {key: ids for key, ids in parts.items() if ids}


def placements(
    context: PromptContext, layout: Mapping[str, int] | None, n: int
) -> list[tuple[int, list[int]]]:
    """Where each trajectory-level block goes among `n` ids, in order of position: at its layout
    position, the task text's block at the start when the layout has none (a trajectory stored without
    one), a block whose other position the layout lacks left out. Equal positions keep the context's
    order (the example before the block)."""
    at = {"task_start": 0, **(layout or {})}
    placed = [(min(max(int(at[k]), 0), n), list(ids)) for k, ids in context.items() if k in at]
    return sorted(placed, key=lambda pair: pair[0])


def insert_context(prompt_ids: Sequence[int], context: PromptContext, layout: Mapping[str, int]) -> list[int]:
    """The prompt with each context block inserted where the trainer's teacher view puts it."""
    out = list(prompt_ids)
    for at, ids in reversed(placements(context, layout, len(out))):  # later first: earlier stay put
        out[at:at] = ids
    return out


def teacher_view(segment: Segment, hindsight: Hindsight, layout: dict[str, int] | None) -> TeacherView | None:
    """The segment with the hindsight blocks inserted; None when nothing would be inserted."""
    n = len(segment)
    insertions = placements(prompt_context(hindsight), layout, n)
    turns_here = [int(t) for t in np.unique(segment.turn_index)]
    first_turn = turns_here[0] if turns_here else None
    for turn in turns_here:
        block = hindsight.turn_ids.get(turn)
        if not block:
            continue
        in_turn = np.flatnonzero(segment.turn_index == turn)
        sampled = in_turn[segment.versions[in_turn] != NOT_SAMPLED]
        if len(sampled) == 0:
            continue
        completion_start = int(sampled[0])
        suffix = 0
        if layout:
            suffix = int(layout.get("first_suffix" if turn == first_turn else "observation_suffix", 0))
        at = max(completion_start - suffix, int(in_turn[0]))
        insertions.append((at, block))
    if not insertions:
        return None
    insertions.sort(key=lambda pair: pair[0])
    pieces: list[np.ndarray] = []
    shift = np.zeros(n, dtype=np.int64)
    cursor = 0
    for at, block in insertions:
        pieces += [segment.input_ids[cursor:at], np.asarray(block, dtype=np.int32)]
        shift[at:] += len(block)
        cursor = at
    pieces.append(segment.input_ids[cursor:])
    ids = np.concatenate(pieces).astype(np.int32, copy=False)
    position = np.arange(n, dtype=np.int64) + shift
    return TeacherView(input_ids=ids, position=position, inserted=int(shift[-1]) if n else 0)
