"""Everything the host parses from model or sandbox output, fed random and adversarial input: every
family's `step` returns an observation (the episode goes on), every grader returns a verdict or its
own typed error. Nothing raises past the environment."""

from __future__ import annotations

import json
import random
from typing import Any

import gymnasium as gym
import pytest
from sandbox_fixtures import backend_config

from agentsd.envs import GUI_ID, RUBRIC_ID, SWE_ID, TERMINAL_ID, verifiers
from agentsd.envs.oracle import tool_call
from agentsd.envs.rubric_checks import CheckError, Evidence, run_check
from agentsd.envs.task_formats import load_suite
from agentsd.envs.tools import BASH, SUBMIT, ToolCall, ToolParseError, parse_tool_call
from agentsd.eval.judge import parse_reply


def call(name: str, raw_arguments: str) -> str:
    return f'<tool_call>{{"name": "{name}", "arguments": {raw_arguments}}}</tool_call>'


def random_texts(seed: int, count: int) -> list[str]:
    rng = random.Random(seed)
    pieces = [
        "<tool_call>",
        "</tool_call>",
        "{",
        "}",
        "[",
        "]",
        '"',
        "\\",
        ":",
        ",",
        "name",
        "bash",
        "arguments",
        "command",
        "submit",
        "NaN",
        "1e999",
        "\x00",
        "\udcff",
        "\u202e",
        "é",
        " ",
        "\n",
    ]
    texts = []
    for _ in range(count):
        kind = rng.random()
        if kind < 0.4:
            texts.append("".join(rng.choice(pieces) for _ in range(rng.randint(1, 200))))
        elif kind < 0.7:
            texts.append(
                bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 400))).decode(
                    "utf-8", "surrogateescape"
                )
            )
        else:
            texts.append("".join(chr(rng.randint(0, 0x10FFFF)) for _ in range(rng.randint(1, 100))))
    return texts


ADVERSARIAL = [
    "",
    "\x00" * 64,
    "<tool_call>",
    "<tool_call></tool_call>",
    "</tool_call><tool_call>",
    "<tool_call>" + "[" * 5000,
    "<tool_call>" + "{" * 50_000 + "}" * 50_000 + "</tool_call>",
    "<tool_call>" + " " * 200_000 + "x",
    call("bash", '"' + "[" * 2000 + '"'),
    call("bash", '{"command": "ls", "timeout": NaN}'),
    call("bash", '{"command": "ls", "timeout": Infinity}'),
    call("bash", '{"command": "ls", "timeout": 1' + "0" * 5000 + "}"),
    call("bash", '{"command": "echo a\\u0000b"}'),
    call("bash", '{"command": "echo \\ud800"}'),
    call("bash", '{"command": "' + "A" * 300_000 + '"}'),
    call("bash", '{"command": ["ls"]}'),
    call("bash", '{"command": {"deep": ' + "[" * 40 + "]" * 40 + "}}"),
    '<tool_call>{"name": "' + "x" * 100_000 + '"}</tool_call>',
    "\udcff\udcfe" * 100,
    "\u202e<tool_call>\u202d",
]
# calls that parse and run: each must come back as an observation
VALID = [
    call("bash", '{"command": "echo ' + "[" * 2000 + '"}'),
    call("bash", '{"command": "true", "timeout": -5}'),
    call("bash", '{"command": "true", "timeout": 1e308}'),
]
NESTED_SHEET = '{"S": ' + "[" * 5000 + "]" * 5000 + "}"
FAMILY_CALLS = {
    "terminal": [],
    "swe": [
        call("view_file", '{"path": "README.md", "start_line": 1' + "0" * 40 + "}"),
        call("view_file", '{"path": "/dev/zero"}'),
        call("edit_file", '{"path": "a\\u0000b", "old_str": "", "new_str": "x"}'),
        call("edit_file", '{"path": "new.txt", "old_str": "", "new_str": "' + "\\n" * 10_000 + '"}'),
    ],
    "rubric": [
        call("read_document", '{"path": "/proc/self/environ"}'),
        call("read_document", '{"path": "/dev/zero"}'),
        call("write_document", '{"path": "x.xlsx", "content": ' + json.dumps(NESTED_SHEET) + "}"),
        call("write_document", '{"path": "x.xlsx", "content": "{\\"a/b?\\": [[1]]}"}'),
        call("write_document", '{"path": "x.xlsx", "content": "{\\"S\\": [[1' + "0" * 5000 + ']]}"}'),
        call("write_document", '{"path": "x.docx", "content": "' + "|" * 5000 + '"}'),
        call("read_document", '{"path": "x.docx", "sheet": "' + "s" * 1000 + '"}'),
    ],
}
ENVS = {
    "terminal": (TERMINAL_ID, "terminal", "count-lines"),
    "swe": (SWE_ID, "swe", "textkit-1"),
    "rubric": (RUBRIC_ID, "apex-mini", "leg-register"),
}


def test_the_tool_call_parser_returns_a_call_or_a_parse_error_on_any_text() -> None:
    for text in [*ADVERSARIAL, *VALID, *random_texts(0, 400)]:
        result = parse_tool_call(text, (BASH, SUBMIT))
        assert isinstance(result, ToolCall | ToolParseError)
        assert len(result.message if isinstance(result, ToolParseError) else str(result.arguments)) < 20_000
    deep = parse_tool_call("<tool_call>" + "[" * 1000 + "]" * 1000 + "</tool_call>", (BASH,))
    assert isinstance(deep, ToolParseError) and "deeper than 32 levels" in deep.message


@pytest.mark.parametrize("backend", ["local", pytest.param("docker", marks=pytest.mark.docker)])
@pytest.mark.parametrize("family", list(ENVS))
def test_every_family_step_answers_any_reply_with_an_observation(backend: str, family: str) -> None:
    env_id, suite, task_id = ENVS[family]
    task = next(t for t in load_suite(suite) if t.id == task_id)
    env: Any = gym.make(env_id, sandbox=backend_config(backend)).unwrapped
    try:
        env.reset(options={"task": task})
        for text in [*ADVERSARIAL, *VALID, *FAMILY_CALLS[family], *random_texts(1, 60)]:
            observation, reward, terminated, truncated, info = env.step(text)
            assert isinstance(observation, str) and len(observation) < 200_000
            assert not terminated and not truncated and reward == 0.0, (text[:200], observation[:500])
            assert "action" in info
        observation, *_ = env.step(tool_call("bash", command="echo alive"))
        assert "alive" in observation  # the sandbox and the episode are fine
    finally:
        env.close()


@pytest.mark.gui
def test_the_gui_family_step_answers_any_reply_with_an_observation() -> None:
    from test_env_gui import _need_gui_apps

    _need_gui_apps()
    task = load_suite("gui")[0]
    env: Any = gym.make(GUI_ID, sandbox=backend_config("local")).unwrapped
    hostile = [
        call("click", '{"id": 1' + "0" * 30 + "}"),
        call("type", '{"id": -1, "text": "\\u0000"}'),
        call("key", '{"combo": "' + "ctrl+" * 2000 + 'a"}'),
    ]
    try:
        env.reset(options={"task": task})
        for text in [*ADVERSARIAL, *hostile, *random_texts(2, 30)]:
            observation, reward, terminated, truncated, _ = env.step(text)
            assert isinstance(observation, str) and not terminated and not truncated and reward == 0.0
    finally:
        env.close()


def test_graders_decide_or_report_an_error_on_any_evidence() -> None:
    texts = [*ADVERSARIAL, *random_texts(3, 200)]
    payloads = [t.encode("utf-8", "surrogatepass") for t in texts] + [
        b"[" * 100_000,
        b'{"a": ' + b"1" * 5000 + b"}",
        b"\xff\xfe\x00",
        b'{"reward": 1e999}',
        b"9" * 400,
    ]
    checks = [
        {"kind": "contains", "text": "x"},
        {"kind": "regex", "pattern": r"(\d+)\s*$"},
        {"kind": "numeric_within", "value": 3, "tolerance": 0.5},
        {"kind": "numeric_within", "value": 3, "tolerance": 0.5, "pattern": r"total: (\S+)"},
        {"kind": "json_path_equals", "path": "f", "json_path": "a.b[0]", "value": 1},
        {"kind": "cell_value", "path": "f", "cell": "A1", "value": 1},
        {"kind": "file_exists", "path": "f"},
    ]
    for text, payload in zip(texts, payloads, strict=False):
        evidence = Evidence(text, lambda path, p=payload: p if path == "f" else None, "f")
        for check in checks:
            try:
                result = run_check(check, evidence)
            except CheckError:
                continue
            assert isinstance(result.met, bool)
    for payload in payloads:
        parsed = verifiers.reward_components(payload)
        assert isinstance(parsed, str) or 0.0 <= parsed[0] <= 1.0
        assert isinstance(verifiers.test_feedback(payload.decode(errors="replace")), str)
    for text in texts:
        verdicts = parse_reply(text, ["c1", "c2"])
        assert set(verdicts) == {"c1", "c2"}
