"""SDPO on the real default model: the direction test and the staleness bound (docs/objective.md)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from agentsd.agent import REPLY_DEMONSTRATION, ChatFormat
from agentsd.config import SDPOConfig, TeacherConfig
from agentsd.envs.learnable import learn_suite
from agentsd.modelcache import resolve_model
from agentsd.sdpo.hindsight import Hindsight, HindsightBuilder, insert_context, prompt_context, teacher_view
from agentsd.sdpo.step import batch_loss, decoder_and_head, prepare, reproducible_sampling
from agentsd.sdpo.teacher import Teacher
from agentsd.sequences import TurnTokens, segments
from agentsd.types import HindsightSignal, Task, Trajectory, Turn

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def model_and_tokenizer() -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_model("default")
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32), AutoTokenizer.from_pretrained(
        path
    )


def wrong_answer_trajectory(
    model: Any, tokenizer: Any, *, version: int, behaviour_shift: float = 0.0
) -> tuple[Trajectory, dict[str, list[TurnTokens]]]:
    fmt = ChatFormat(tokenizer)
    prompt = fmt.first_prompt("What is the capital of France? Answer in one sentence.", tools=())
    completion = [
        *fmt.encode("The capital of France is Lyon."),
        tokenizer.convert_tokens_to_ids("<|im_end|>"),
    ]
    with torch.no_grad():
        logits = model(torch.tensor([prompt + completion])).logits[0, len(prompt) - 1 : -1]
    behaviour = (
        torch.log_softmax(logits, -1).gather(-1, torch.tensor(completion)[:, None]).squeeze(-1)
        + behaviour_shift
    )
    turn = Turn(
        index=0,
        prompt_ids=prompt,
        completion_ids=completion,
        logprobs=behaviour.tolist(),
        policy_version=version,
        temperature=1.0,
        top_p=1.0,
    )
    trajectory = Trajectory(
        id="t1",
        task_id="capital",
        policy_model="default",
        turns=[turn],
        reward=0.0,
        hindsight=[HindsightSignal(kind="verifier", text="Wrong: the capital of France is Paris, not Lyon.")],
        meta={"layout": fmt.layout},
        finalized_at=0.0,
    )
    return trajectory, {"t1": [stored_tokens(turn)]}


def stored_tokens(turn: Turn) -> TurnTokens:
    """A turn as the store returns its tokens, every completion token trainable."""
    return TurnTokens(
        index=turn.index,
        prompt_ids=np.array(turn.prompt_ids, np.int32),
        completion_ids=np.array(turn.completion_ids, np.int32),
        logprobs=np.array(turn.logprobs, np.float32),
        trainable=np.ones(len(turn.completion_ids), bool),
        policy_version=turn.policy_version,
        context_reset=False,
        temperature=turn.temperature,
        top_p=turn.top_p,
    )


def teacher_preference(model: Any, batch: Any, preferred: Any = None) -> tuple[float, float, Any]:
    """Mean student log-prob of the teacher-preferred (position, token) pairs, mean KL(s‖q), and the
    pairs: tokens the teacher gives real mass (> 0.05) and at least twice the student's probability
    (`preferred` fixes the pairs, else they come from the current model)."""
    item = batch.items[0]
    trained = np.flatnonzero(item.segment.loss_mask)
    with torch.no_grad():
        s = model(torch.tensor(item.segment.input_ids[None].astype(np.int64))).logits[0, trained - 1]
        q = model(torch.tensor(item.view.input_ids[None].astype(np.int64))).logits[
            0, item.view.position[trained] - 1
        ]
    s, q = torch.log_softmax(s, -1), torch.log_softmax(q, -1)
    if preferred is None:
        preferred = ((q.exp() > 0.05) & (q - s > np.log(2))).nonzero(as_tuple=True)
        assert len(preferred[0]) > 0, "the hindsight changed nothing the teacher prefers"
    return float(s[preferred].mean()), float((s.exp() * (s - q)).sum(-1).mean()), preferred


def test_one_sdpo_step_moves_the_student_toward_its_hindsight_self(
    model_and_tokenizer: tuple[Any, Any],
) -> None:
    model, tokenizer = model_and_tokenizer
    trajectory, tokens = wrong_answer_trajectory(model, tokenizer, version=0)
    batch = prepare([trajectory], tokens, HindsightBuilder(tokenizer))
    assert len(batch.items) == 1 and batch.items[0].view.inserted > 0
    before_pref, before_kl, preferred = teacher_preference(model, batch)
    cfg = SDPOConfig(top_k=100)
    teacher = Teacher(TeacherConfig(mode="live"), model)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-2)
    out = batch_loss(model, teacher, batch, cfg, version=0, chunk=4)
    assert out is not None and out.loss.item() > 0
    assert out.metrics["rho/max"] == pytest.approx(1.0, abs=1e-3)  # on-policy: ρ = 1, w = 1
    out.loss.backward()
    optimizer.step()
    after_pref, after_kl, _ = teacher_preference(model, batch, preferred)
    assert after_kl < before_kl
    assert after_pref > before_pref


def test_weights_of_a_stale_trajectory_are_bounded_by_C(model_and_tokenizer: tuple[Any, Any]) -> None:
    model, tokenizer = model_and_tokenizer
    # sampled 3 versions ago by a policy that found these tokens far less likely than we do now
    trajectory, tokens = wrong_answer_trajectory(model, tokenizer, version=2, behaviour_shift=-3.0)
    batch = prepare([trajectory], tokens, HindsightBuilder(tokenizer))
    cfg = SDPOConfig(top_k=20, rho_high=1e6)
    out = batch_loss(model, Teacher(TeacherConfig(), model), batch, cfg, version=5, chunk=8)
    assert out is not None
    assert out.metrics["rho/max"] > cfg.is_cap and float(out.numerator_weight.max()) <= cfg.is_cap
    assert out.metrics["staleness/max"] == 3
    too_old = batch_loss(model, Teacher(TeacherConfig(), model), batch, cfg, version=7, chunk=8)
    assert too_old is not None and float(too_old.used.sum()) == 0 and too_old.loss.item() == 0.0


def test_decoder_and_head_are_the_models_own(model_and_tokenizer: tuple[Any, Any]) -> None:
    model, _ = model_and_tokenizer
    decoder, weight = decoder_and_head(model)
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        torch.testing.assert_close(decoder(input_ids=ids).last_hidden_state @ weight.T, model(ids).logits)


@pytest.mark.parametrize(
    "teacher_config",
    [
        TeacherConfig(mode="frozen"),
        TeacherConfig(mode="trust_region", trust_region=1.0),
        TeacherConfig(mode="ema"),
    ],
    ids=["frozen", "trust_region-1", "ema"],
)
def test_teacher_modes_equal_live_before_the_student_moves(
    model_and_tokenizer: tuple[Any, Any], teacher_config: TeacherConfig
) -> None:
    model, tokenizer = model_and_tokenizer
    trajectory, tokens = wrong_answer_trajectory(model, tokenizer, version=0)
    batch = prepare([trajectory], tokens, HindsightBuilder(tokenizer))
    cfg = SDPOConfig(top_k=20)
    live = batch_loss(model, Teacher(TeacherConfig(), model), batch, cfg, version=0, chunk=8)
    other = batch_loss(model, Teacher(teacher_config, model), batch, cfg, version=0, chunk=8)
    assert live is not None and other is not None
    torch.testing.assert_close(other.loss, live.loss, rtol=1e-5, atol=1e-6)


def test_credit_colours_each_agent_token_by_the_teacher_student_log_ratio(
    model_and_tokenizer: tuple[Any, Any],
) -> None:
    from agentsd.credit import render_html, render_terminal, token_credit

    model, tokenizer = model_and_tokenizer
    trajectory, tokens = wrong_answer_trajectory(model, tokenizer, version=0)
    credits = token_credit(model, tokenizer, trajectory, tokens["t1"])
    completion = tokens["t1"][0].completion_ids
    assert [c.token_id for c in credits] == completion.tolist()
    # the same log-ratios the loss sees: log q(y) - log s(y) from the SDPO step's per-token terms
    batch = prepare([trajectory], tokens, HindsightBuilder(tokenizer))
    out = batch_loss(
        model, Teacher(TeacherConfig(), model), batch, SDPOConfig(form="sampled_token"), version=0, chunk=8
    )
    assert out is not None
    ratios = torch.tensor([c.log_ratio for c in credits])
    assert out.metrics["tokens/used"] == len(credits)  # on-policy: every token used
    assert float(ratios.abs().mean()) == pytest.approx(out.metrics["advantage/mean_abs"], rel=1e-4)
    assert float(ratios.std()) > 0
    page = render_html(trajectory, credits)
    assert page.count("<span") == len(credits) and "Lyon" in page.replace("</span><span", "")
    assert "Lyon" in render_terminal(credits).plain


def test_each_turn_is_scored_at_its_own_sampling_temperature(model_and_tokenizer: tuple[Any, Any]) -> None:
    """Two turns sampled at temperatures 0.5 and 2.0 by the current weights: every importance ratio
    is 1. Scoring the batch at one temperature (the first trajectory's, as before) makes them differ."""
    model, tokenizer = model_and_tokenizer
    trajectory, tokens = wrong_answer_trajectory(model, tokenizer, version=0)
    first = tokens["t1"][0]
    follow_up = [
        *ChatFormat(tokenizer).encode("Are you sure?"),
        tokenizer.convert_tokens_to_ids("<|im_end|>"),
    ]
    context = np.concatenate([first.prompt_ids, first.completion_ids]).tolist()
    turns = []
    for index, (prompt, completion, temperature) in enumerate(
        [(first.prompt_ids.tolist(), first.completion_ids.tolist(), 0.5), (follow_up, follow_up, 2.0)]
    ):
        seen = (context + prompt) if index else prompt
        with torch.no_grad():
            logits = model(torch.tensor([seen + completion])).logits[0, len(seen) - 1 : -1]
        behaviour = torch.log_softmax(logits / temperature, -1).gather(-1, torch.tensor(completion)[:, None])
        turns.append(
            TurnTokens(
                index=index,
                prompt_ids=np.array(prompt, np.int32),
                completion_ids=np.array(completion, np.int32),
                logprobs=behaviour.squeeze(-1).numpy().astype(np.float32),
                trainable=np.ones(len(completion), bool),
                policy_version=0,
                context_reset=False,
                temperature=temperature,
                top_p=1.0,
            )
        )
    batch = prepare([trajectory], {"t1": turns}, HindsightBuilder(tokenizer))
    out = batch_loss(model, Teacher(TeacherConfig(), model), batch, SDPOConfig(top_k=20), version=0, chunk=8)
    assert out is not None and out.metrics["tokens/used"] == len(first.completion_ids) + len(follow_up)
    assert out.metrics["rho/max"] == pytest.approx(1.0, abs=2e-3)
    assert out.metrics["rho/mean"] == pytest.approx(1.0, abs=2e-3)


def test_sampling_the_loss_cannot_reproduce_is_refused_with_the_reason(
    model_and_tokenizer: tuple[Any, Any],
) -> None:
    from dataclasses import replace

    model, tokenizer = model_and_tokenizer
    trajectory, tokens = wrong_answer_trajectory(model, tokenizer, version=0)
    [turn] = tokens["t1"]
    nucleus = {"t1": [replace(turn, top_p=0.9)]}
    batch = prepare([trajectory], nucleus, HindsightBuilder(tokenizer))
    assert not batch.items and "top_p 0.9" in batch.unreproducible["t1"]
    # written before per-turn parameters: the trajectory's own record is used, and must be complete
    legacy = [replace(turn, temperature=None, top_p=None)]
    assert "no top_p recorded" in str(
        reproducible_sampling(trajectory.model_copy(update={"meta": {"temperature": 1.0}}), legacy)
    )
    recorded = trajectory.model_copy(update={"meta": {**trajectory.meta, "temperature": 0.7, "top_p": 1.0}})
    resolved = reproducible_sampling(recorded, legacy)
    assert not isinstance(resolved, str) and (resolved[0].temperature, resolved[0].top_p) == (0.7, 1.0)
    garbage = trajectory.model_copy(update={"meta": {"temperature": "hot", "top_p": 1.0}})
    assert "no sampling temperature recorded" in str(reproducible_sampling(garbage, legacy))


def test_the_worked_example_goes_before_the_tasks_message_and_the_student_tokens_map_exactly(
    model_and_tokenizer: tuple[Any, Any],
) -> None:
    _, tokenizer = model_and_tokenizer
    fmt = ChatFormat(tokenizer, demonstration=True)
    question = "Reply with the word canyon. Reply with nothing else."
    prompt = fmt.first_prompt(question, tools=())
    rendered = tokenizer.apply_chat_template(
        [
            {"role": "system", "content": fmt.reply_prompt},
            *[{"role": r, "content": c} for r, c in REPLY_DEMONSTRATION],
            {"role": "user", "content": question},
        ],
        tokenize=False,
        add_generation_prompt=True,
    )
    assert tokenizer.decode(prompt) == rendered  # the layout's cut leaves the student's prompt as it was
    assert (
        tokenizer.decode(prompt[fmt.layout["message_start"] : fmt.layout["task_start"]])
        == "<|im_start|>user\n"
    )
    task = learn_suite("learn-reply-train")[0]
    task = task.model_copy(update={"id": "t", "instruction": question, "reference": {"reply": "canyon"}})
    completion = [*fmt.encode("blue"), tokenizer.convert_tokens_to_ids("<|im_end|>")]
    turn = Turn(
        index=0,
        prompt_ids=prompt,
        completion_ids=completion,
        logprobs=[-1.0] * len(completion),
        policy_version=0,
        temperature=1.0,
        top_p=1.0,
    )
    trajectory = Trajectory(
        id="t1",
        task_id="t",
        policy_model="default",
        turns=[turn],
        reward=0.0,
        meta={"layout": fmt.layout},
        finalized_at=0.0,
    )
    hindsight = HindsightBuilder(tokenizer, 1024, ["example"]).build(trajectory, None, task)
    assert not hindsight.trajectory_ids and hindsight.example_ids
    tokens = stored_tokens(turn)
    [segment] = segments([tokens])
    view = teacher_view(segment, hindsight, fmt.layout)
    assert view is not None and view.inserted == len(hindsight.example_ids)
    assert (view.input_ids[view.position] == segment.input_ids).all()  # every student token, unchanged
    shown = tokenizer.decode(view.input_ids.tolist())
    exchange = f"<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\ncanyon<|im_end|>\n"
    assert (
        shown
        == rendered.replace(f"<|im_start|>user\n{question}", exchange + f"<|im_start|>user\n{question}", 1)
        + "blue<|im_end|>"
    )
    # the gap's teacher pass puts it in the same place
    context = prompt_context(hindsight)
    assert (
        insert_context(prompt, context, fmt.layout) == view.input_ids[: len(prompt) + view.inserted].tolist()
    )
    assert (
        insert_context(prompt, context, {"task_start": fmt.layout["task_start"]}) == prompt
    )  # no place: left out
    # a trajectory stored before layouts had message_start: no example (it could not be placed), and
    # a budget the example fills leaves no empty block behind
    old_layout = {k: v for k, v in fmt.layout.items() if k != "message_start"}
    stored_before = trajectory.model_copy(update={"meta": {"layout": old_layout}})
    assert HindsightBuilder(tokenizer, 1024, ["example"]).build(stored_before, None, task).empty
    tight = HindsightBuilder(tokenizer, len(hindsight.example_ids) + 5, ["example", "solution"])
    filled = tight.build(trajectory, None, task)
    assert filled.example_ids == hindsight.example_ids and not filled.trajectory_ids


def test_segments_whose_teacher_sees_nothing_new_are_counted(model_and_tokenizer: tuple[Any, Any]) -> None:
    """Hindsight for turn 0 only, and a compaction before turn 1: turn 1's segment has no insertion."""
    from dataclasses import replace

    model, tokenizer = model_and_tokenizer
    trajectory, tokens = wrong_answer_trajectory(model, tokenizer, version=0)
    [turn] = tokens["t1"]
    second = replace(turn, index=1, context_reset=True)

    class TurnZeroOnly(HindsightBuilder):
        def build(
            self, trajectory: Trajectory, success: Trajectory | None = None, task: Task | None = None
        ) -> Hindsight:
            return Hindsight(
                trajectory_ids=[], turn_ids={0: self.encode("Wrong: Paris.")}, template_version=1
            )

    batch = prepare([trajectory], {"t1": [turn, second]}, TurnZeroOnly(tokenizer))
    assert len(batch.items) == 1 and batch.nothing_inserted == 1
