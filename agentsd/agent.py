"""The agent loop: one task, one episode, token-exact.

The loop owns every token the model sees. It renders the model's chat template once per episode
(system prompt with the tool schemas, then the task's first observation), asks the policy for a
completion, hands the decoded text to the environment (one tool call per reply, envs/tools.py),
and appends the observation to the context as token ids: the end of the assistant turn, the
template's framing of a tool message around the observation (tokenized with special tokens split,
so text from the sandbox can never forge a template marker), and the next assistant header. Each
turn is emitted as an agentsd.types.Turn whose prompt_ids are exactly the ids appended since the
previous turn, so the stored turns re-assemble the sequence the model saw (agentsd.sequences).

Stops: submit (the env terminates), max turns, the episode's time limit, or a context that cannot
fit the next reply even after compaction. Compaction, when the context nears the model's window:
older observations are cut to their head and tail, then the oldest turns are dropped (a note says
how many), keeping the agent's own tokens as they were sampled; the turn after it carries
`context_reset` with the whole new context as its prompt, so training uses exactly what the model saw.

Not guaranteed: anything about the environment's own time (a command blocks the loop for as long as
the env allows); text decoding is for the environment and for people, training uses the ids.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from agentsd.elision import elide_text
from agentsd.envs.tools import ToolSpec, render_tools
from agentsd.policies.base import end_of_turn_ids
from agentsd.types import Completion, HindsightSignal, Task, Termination, ToolResult, Turn, TurnSource

SYSTEM_PROMPT = (
    "You are an autonomous agent working on a task inside a sandboxed computer. Work step by step: "
    "think briefly, then act with exactly one tool call per reply. Observations of your actions come "
    "back as tool messages. When the task is done, call submit."
)
# What a task without tools (a single-turn task: the reply is the answer) is told instead.
REPLY_PROMPT = "You answer a task in one reply. The reply is the answer itself: write only the answer."
# One worked example of the tool-call protocol (`collect.demonstration`), shown between the system
# prompt and the task: a shell command, then submit. Small models follow the format from an example
# far more often than from the description alone (SmolLM2-135M at temperature 0.7: 20 replies in 24
# with a tool call against none in 24).
DEMONSTRATION = (
    ("user", "Save the name of this machine's operating system kernel in kernel.txt. Then submit."),
    (
        "assistant",
        '<tool_call>\n{"name": "bash", "arguments": {"command": "uname -s > kernel.txt"}}\n</tool_call>',
    ),
    ("observation", "[exit code 0]"),
    ("assistant", '<tool_call>\n{"name": "submit", "arguments": {}}\n</tool_call>'),
    ("observation", "Submitted. Reward: 1"),
)
DEMONSTRATION_TOOLS = ("bash", "submit")
# The same for a task without tools (the single-turn form): one question answered by its answer alone,
# of a kind no shipped suite asks.
REPLY_DEMONSTRATION = (
    (
        "user",
        "notes.txt holds:\nred green blue\n\nReply with the second word of notes.txt. "
        "Reply with nothing else.",
    ),
    ("assistant", "green"),
)
STOP_STRINGS = ("</tool_call>",)
COMPACTED_OBSERVATION_CHARS = 600
KEEP_RECENT_TURNS = 2
_CONTENT = "\u2063AGENTSD-CONTENT\u2063"  # a sentinel no template or task writes

Generate = Callable[[list[int]], Awaitable[Completion]]


@dataclass(frozen=True)
class EpisodeLimits:
    max_turns: int = 30
    timeout_s: float = 3600.0
    max_context: int = 8192
    max_new_tokens: int = 512
    grade_on_truncation: bool = True  # grade the final state when a limit ends the episode


@dataclass
class EpisodeResult:
    termination: Termination
    reward: float | None
    turns: list[Turn]
    feedback: str = ""
    reward_components: dict[str, float] = field(default_factory=dict)
    hindsight: list[HindsightSignal] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)


class ChatFormat:
    """How one model's chat template frames the agent's conversation, as token-id pieces."""

    def __init__(
        self,
        tokenizer: Any,
        system_prompt: str = SYSTEM_PROMPT,
        *,
        demonstration: bool = False,
        reply_prompt: str = REPLY_PROMPT,
    ) -> None:
        self.tokenizer = tokenizer
        self.reply_prompt = reply_prompt
        self.demonstration = demonstration
        # where things sit in the token ids, for the hindsight builder (agentsd.sdpo.hindsight): the
        # task text's first index in a segment's first prompt, and how many ids end a first prompt
        # and an observation delta (the message close and the next reply header)
        self.layout: dict[str, int] = {}
        self.system_prompt = system_prompt
        self.end_ids = end_of_turn_ids(tokenizer)
        probe = [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]
        with_reply = [*probe, {"role": "assistant", "content": _CONTENT}]
        rendered = self._render(with_reply, generation_prompt=False)
        self.close_text = rendered.split(_CONTENT, 1)[1]  # what ends an assistant turn, e.g. <|im_end|>\n
        self.observation_role = "tool"
        try:
            framed = self._render(
                [*with_reply, {"role": "tool", "content": _CONTENT}], generation_prompt=True
            )
            if _CONTENT not in framed[len(rendered) :]:
                raise ValueError("the template drops tool messages")
        except Exception:  # templates without a tool role raise or drop it: observations come as user
            self.observation_role = "user"
            framed = self._render(
                [*with_reply, {"role": "user", "content": _CONTENT}], generation_prompt=True
            )
        self.obs_before, self.obs_after = framed[len(rendered) :].split(_CONTENT, 1)

    def _render(self, messages: list[dict[str, Any]], *, generation_prompt: bool, **extra: Any) -> str:
        return str(
            self.tokenizer.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=generation_prompt, **extra
            )
        )

    def encode(self, text: str, *, literal: bool = False) -> list[int]:
        """Token ids of text; `literal` splits special-token strings so they stay plain text."""
        kwargs = {"split_special_tokens": True} if literal else {}
        return list(self.tokenizer(text, add_special_tokens=False, **kwargs)["input_ids"])

    def first_prompt(self, observation: str, tools: Sequence[ToolSpec]) -> list[int]:
        """System prompt with the tools, then the task's first observation, then the reply header.
        Without tools (a single-turn task) the system prompt is `reply_prompt` and the demonstration,
        when on, is one question answered by its answer (REPLY_DEMONSTRATION): the tool protocol's
        prompt and example would describe calls such a task cannot make."""
        schemas = [t.schema() for t in tools]
        plain = [{"role": "system", "content": _CONTENT}, {"role": "user", "content": _CONTENT}]
        system, text = self.system_prompt, ""
        if not tools:
            messages = [plain[0], *self._demonstration(tools), plain[1]]
            text = self._render(messages, generation_prompt=True)
            return self._split_first_prompt(text, self.reply_prompt, observation, messages[:-1])
        try:  # native tool support is judged without the demonstration, which names tools itself
            native = all(t.name in self._render(plain, generation_prompt=True, tools=schemas) for t in tools)
        except Exception:  # a template that rejects `tools`: the schemas go into the system prompt
            native = False
        messages = [plain[0], *self._demonstration(tools), plain[1]]
        extra = {"tools": schemas} if native else {}
        if not native:
            system = f"{system}\n\n{render_tools(tuple(tools))}"
        text = self._render(messages, generation_prompt=True, **extra)
        return self._split_first_prompt(text, system, observation, messages[:-1], **extra)

    def _split_first_prompt(
        self, text: str, system: str, observation: str, earlier: list[dict[str, Any]], **extra: Any
    ) -> list[int]:
        """The first prompt's ids and its layout: where the task's message starts (`message_start`,
        where the teacher's worked example goes) and its text (`task_start`), and how many ids end a
        first prompt and an observation delta."""
        head, middle, tail = text.split(_CONTENT)
        # the task's message starts where the messages before it end; the ids are cut there only
        # when that cut tokenizes the same as the whole (templates that end messages with special
        # tokens do): the student's prompt never changes for the layout's sake
        try:
            before = self._render(earlier, generation_prompt=False, **extra)
        except Exception:  # a template that refuses a conversation ending there: no message_start
            before = ""
        cut = len(before) - len(head) - len(_CONTENT)
        middle_ids = self.encode(middle)
        message_start = None  # within middle_ids
        if before.startswith(head + _CONTENT) and 0 < cut < len(middle) and middle.startswith(before[-cut:]):
            earlier_ids, message_ids = self.encode(middle[:cut]), self.encode(middle[cut:])
            if earlier_ids + message_ids == middle_ids:
                message_start = len(earlier_ids)
        lead = self.encode(head) + self.encode(system)
        before_task = lead + middle_ids
        suffix = self.encode(tail)
        self.layout = {
            "task_start": len(before_task),
            "first_suffix": len(suffix),
            "observation_suffix": len(self.encode(self.obs_after)),
        }
        if message_start is not None:
            self.layout["message_start"] = len(lead) + message_start
        return before_task + self.encode(observation, literal=True) + suffix

    def _demonstration(self, tools: Sequence[ToolSpec]) -> list[dict[str, Any]]:
        if not self.demonstration:
            return []
        if not tools:
            return [{"role": r, "content": text} for r, text in REPLY_DEMONSTRATION]
        names = {t.name for t in tools}
        if not set(DEMONSTRATION_TOOLS) <= names:
            raise ValueError(
                f"collect.demonstration shows the {' and '.join(DEMONSTRATION_TOOLS)} tools; this task's "
                f"tools are {', '.join(sorted(names))}: turn the demonstration off for this suite"
            )
        role = {"observation": self.observation_role}
        return [{"role": role.get(r, r), "content": text} for r, text in DEMONSTRATION]

    def observation_delta(self, completion: Sequence[int], observation: str) -> list[int]:
        """The ids after a completion: the end of the reply (unless the model sampled it), the
        observation framed as a tool message, and the next reply header."""
        close = self.close_text
        if completion and completion[-1] in self.end_ids:
            end_marker = self.tokenizer.decode([completion[-1]])
            close = close[len(end_marker) :] if close.startswith(end_marker) else close
        return (
            self.encode(close + self.obs_before)
            + self.encode(observation, literal=True)
            + self.encode(self.obs_after)
        )


@dataclass
class _Step:
    """What compaction needs of a past turn: the agent's ids and the observation that followed."""

    completion_ids: list[int]
    observation: str


class AgentLoop:
    """Runs one episode of `task` in `env` with completions from `generate`."""

    def __init__(
        self,
        fmt: ChatFormat,
        generate: Generate,
        limits: EpisodeLimits,
    ) -> None:
        self.fmt = fmt
        self.generate = generate
        self.limits = limits

    async def run(self, env: Any, task: Task, on_turn: Callable[[Turn], Awaitable[None]]) -> EpisodeResult:
        start = time.monotonic()
        try:
            first, reset_info = await asyncio.to_thread(env.reset, options={"task": task})
        except Exception as exc:
            return EpisodeResult(
                Termination.ENV_ERROR, None, [], feedback=f"the environment did not start: {exc}"
            )
        tools = tuple(env.unwrapped.tools)
        head = self.fmt.first_prompt(first, tools)
        meta = {
            "image": reset_info.get("image"),
            "sandbox_id": reset_info.get("sandbox_id"),
            "layout": dict(self.fmt.layout),
        }
        context = list(head)
        pending = list(head)  # ids appended since the last turn
        steps: list[_Step] = []
        turns: list[Turn] = []
        reset_next = False
        while True:
            if len(turns) >= self.limits.max_turns:
                return await self._truncated(env, Termination.TURNS, turns, meta)
            if time.monotonic() - start > self.limits.timeout_s:
                return await self._truncated(env, Termination.TIMEOUT, turns, meta)
            if len(context) + self.limits.max_new_tokens > self.limits.max_context:
                compacted = self._compact(first, tools, steps)
                if compacted is None:
                    return await self._truncated(env, Termination.CONTEXT, turns, meta)
                context, pending, reset_next = compacted, list(compacted), True
            started = time.time()
            try:
                completion = await self.generate(list(context))
            except Exception as exc:
                return EpisodeResult(
                    Termination.AGENT_ERROR, None, turns, feedback=f"the policy failed: {exc}", meta=meta
                )
            text = self.fmt.tokenizer.decode(completion.token_ids, skip_special_tokens=True)
            try:
                observation, reward, terminated, truncated, info = await asyncio.to_thread(env.step, text)
            except Exception as exc:
                return EpisodeResult(
                    Termination.ENV_ERROR, None, turns, feedback=f"the environment failed: {exc}", meta=meta
                )
            turn = Turn(
                index=len(turns),
                source=TurnSource.AGENT,
                prompt_ids=pending,
                completion_ids=completion.token_ids,
                logprobs=completion.logprobs,
                policy_version=completion.policy_version,
                temperature=completion.temperature,
                top_p=completion.top_p,
                context_reset=reset_next,
                finish_reason=completion.finish_reason,
                completion_text=text,
                action=info.get("action"),
                observation=observation,
                tool_result=ToolResult(
                    exit_code=info.get("exit_code"),
                    truncated=bool(info.get("truncated_output")),
                    duration_s=info.get("duration_s"),
                ),
                next_state=info.get("next_state"),
                reward=float(reward) if terminated else None,
                started_at=started,
                ended_at=time.time(),
            )
            turns.append(turn)
            await on_turn(turn)
            if terminated or truncated:
                return self._outcome(turns, float(reward), info, meta)
            steps.append(_Step(list(completion.token_ids), observation))
            pending = self.fmt.observation_delta(completion.token_ids, observation)
            context += list(completion.token_ids) + pending
            reset_next = False

    async def _truncated(
        self, env: Any, limit: Termination, turns: list[Turn], meta: dict[str, Any]
    ) -> EpisodeResult:
        """A limit ended the episode: grade the final state as a submit would (Harbor runs the tests
        whenever the agent stops; APEX grades what is there), keeping `limit` as the termination.
        A verifier that fails makes it env_error. Without grading (or an env that cannot grade)
        the reward is 0 and no verdict exists."""
        grade = getattr(env.unwrapped, "grade_final_state", None)
        if not self.limits.grade_on_truncation or grade is None:
            return EpisodeResult(limit, 0.0, turns, meta={**meta, "graded": False})
        try:
            reward, info = await asyncio.to_thread(grade)
        except Exception as exc:
            return EpisodeResult(
                Termination.ENV_ERROR,
                None,
                turns,
                feedback=f"grading the final state failed: {exc}",
                meta={**meta, "graded": False, "truncated_by": limit.value},
            )
        outcome = self._outcome(turns, float(reward), info, {**meta, "graded": True})
        if outcome.termination is Termination.DONE:
            outcome.termination = limit
        else:
            outcome.meta["truncated_by"] = limit.value
        return outcome

    def _outcome(
        self, turns: list[Turn], reward: float, info: dict[str, Any], meta: dict[str, Any]
    ) -> EpisodeResult:
        termination = Termination(info.get("termination", Termination.DONE.value))
        feedback = str(info.get("feedback") or "")
        graded = "grading" in info  # a rubric: per-criterion verdicts, kept for eval and hindsight
        kind = "rubric" if graded else "verifier"
        hindsight = [HindsightSignal(kind=kind, text=feedback)] if feedback else []
        extra = {"grading": info["grading"], "passed": info.get("passed")} if graded else {}
        return EpisodeResult(
            termination,
            reward,
            turns,
            feedback=feedback,
            reward_components=dict(info.get("reward_components") or {}),
            hindsight=hindsight,
            meta={**meta, "answer": info.get("answer"), **extra},
        )

    def _compact(self, first: str, tools: tuple[ToolSpec, ...], steps: list[_Step]) -> list[int] | None:
        """A shorter context with room for the next reply, or None when none fits."""
        budget = self.limits.max_context - self.limits.max_new_tokens

        def build(kept: list[_Step], dropped: int) -> list[int]:
            note = f"\n\n[{dropped} earlier turns were removed to fit the context window]" if dropped else ""
            ids = self.fmt.first_prompt(first + note, tools)
            for i, step in enumerate(kept):
                recent = i >= len(kept) - KEEP_RECENT_TURNS
                observation = (
                    step.observation if recent else elide_text(step.observation, COMPACTED_OBSERVATION_CHARS)
                )
                ids += step.completion_ids + self.fmt.observation_delta(step.completion_ids, observation)
            return ids

        for dropped in range(len(steps) + 1):
            ids = build(steps[dropped:], dropped)
            if len(ids) <= budget:
                return ids
        return None
