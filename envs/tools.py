"""The one tool-call format of every environment family, and its parser.

An agent acts by writing exactly one tool call per turn, as a JSON object inside tags, in the style
chat templates use for function calling (Hermes / Qwen):

    <tool_call>
    {"name": "bash", "arguments": {"command": "ls -la"}}
    </tool_call>

Text before the call is the agent's reasoning and is ignored by the environment. A reply without a
call, with invalid JSON, an unknown tool or wrong arguments does not end the episode: the parse
error becomes the next observation, so the agent (and the SDPO teacher) sees what went wrong.
Tools are described by JSON schemas in OpenAI's function format (`ToolSpec.schema()`), which chat
templates with a `tools=` argument accept and `render_tools` prints for templates without one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

OPEN, CLOSE = "<tool_call>", "</tool_call>"
MAX_CALL_CHARS = 256_000  # a call's JSON; longer replies are refused, not parsed
MAX_CALL_DEPTH = 32  # nesting of objects and arrays in a call (the tools need 2)
_JSON_TYPES = {
    "string": str,
    "integer": int,
    "number": (int, float),
    "boolean": bool,
    "object": dict,
    "array": list,
}


@dataclass(frozen=True)
class Param:
    name: str
    type: str  # a JSON schema type
    description: str
    required: bool = True


@dataclass(frozen=True)
class ToolSpec:
    name: str
    description: str
    params: tuple[Param, ...] = ()

    def schema(self) -> dict[str, Any]:
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": {
                    "type": "object",
                    "properties": {
                        p.name: {"type": p.type, "description": p.description} for p in self.params
                    },
                    "required": [p.name for p in self.params if p.required],
                },
            },
        }


@dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: dict[str, Any] = field(default_factory=dict)

    def as_action(self) -> dict[str, Any]:
        return {"name": self.name, "arguments": self.arguments}


@dataclass(frozen=True)
class ToolParseError:
    """Why an agent's reply is not a valid tool call; `message` is shown to the agent."""

    message: str

    def as_action(self) -> dict[str, Any]:
        return {"parse_error": self.message}


BASH = ToolSpec(
    "bash",
    "Run a shell command (bash) in the task's machine. The working directory, exported variables and "
    "background processes persist between calls.",
    (
        Param("command", "string", "The command line to run."),
        Param(
            "timeout", "number", "Seconds before the command is killed (default: the task's limit).", False
        ),
    ),
)
SUBMIT = ToolSpec(
    "submit",
    "Finish the task. The work is graded after this call; no further actions are possible.",
    (Param("answer", "string", "A final answer, when the task asks for one.", False),),
)


def render_tools(tools: tuple[ToolSpec, ...]) -> str:
    """The tool description for a system prompt (for chat templates without native tool support)."""
    schemas = "\n".join(json.dumps(t.schema()) for t in tools)
    return (
        "You can call these tools:\n"
        f"{schemas}\n\n"
        "Call exactly one tool per reply, as a JSON object inside tags, for example:\n"
        '<tool_call>\n{"name": "bash", "arguments": {"command": "ls"}}\n</tool_call>'
    )


def parse_tool_call(text: str, tools: tuple[ToolSpec, ...]) -> ToolCall | ToolParseError:
    """The first tool call in an agent's reply, validated against the tools' parameters."""
    names = ", ".join(t.name for t in tools)
    start = text.find(OPEN)
    if start < 0:
        return ToolParseError(
            "No tool call found. Reply with exactly one call, e.g. "
            '<tool_call>{"name": "bash", "arguments": {"command": "ls"}}</tool_call>. '
            f"Available tools: {names}."
        )
    end = text.find(CLOSE, start)  # no closing tag: the call runs to the end of the reply
    body = text[start + len(OPEN) : end if end >= 0 else len(text)].strip()
    if len(body) > MAX_CALL_CHARS:
        return ToolParseError(f"The tool call is {len(body)} characters long; the limit is {MAX_CALL_CHARS}.")
    if _depth(body) > MAX_CALL_DEPTH:
        return ToolParseError(f"The tool call nests objects or arrays deeper than {MAX_CALL_DEPTH} levels.")
    try:
        data = json.loads(body, parse_constant=_not_json)
    except json.JSONDecodeError as exc:
        return ToolParseError(
            f"The tool call is not valid JSON ({exc.msg} at char {exc.pos}): {body[:200]!r}"
        )
    except (ValueError, RecursionError) as exc:  # NaN/Infinity, integers past Python's digit limit
        return ToolParseError(f"The tool call is not valid JSON ({str(exc)[:200]})")
    if not isinstance(data, dict) or not isinstance(data.get("name"), str):
        return ToolParseError('A tool call must be a JSON object with a "name" and an "arguments" object.')
    spec = next((t for t in tools if t.name == data["name"]), None)
    if spec is None:
        return ToolParseError(f"Unknown tool {data['name'][:100]!r}. Available tools: {names}.")
    arguments = data.get("arguments", {})
    if isinstance(arguments, str):  # some models emit arguments as a JSON string
        if _depth(arguments) > MAX_CALL_DEPTH:
            return ToolParseError(f"The arguments of {spec.name} nest deeper than {MAX_CALL_DEPTH} levels.")
        try:
            arguments = json.loads(arguments, parse_constant=_not_json)
        except (ValueError, RecursionError):
            return ToolParseError(f"The arguments of {spec.name} are a string that is not a JSON object.")
    if not isinstance(arguments, dict):
        return ToolParseError(f"The arguments of {spec.name} must be a JSON object.")
    for param in spec.params:
        if param.name not in arguments:
            if param.required:
                return ToolParseError(f"{spec.name} needs the argument {param.name!r} ({param.description})")
            continue
        expected = _JSON_TYPES[param.type]
        value = arguments[param.name]
        if not isinstance(value, expected) or (
            param.type in ("integer", "number") and isinstance(value, bool)
        ):
            return ToolParseError(
                f"{spec.name}: argument {param.name!r} must be a {param.type}, got {repr(value)[:200]}"
            )
    for name, value in arguments.items():
        problem = _unusable_text(value) if isinstance(value, str) else None
        if problem:
            return ToolParseError(f"{spec.name}: argument {str(name)[:50]!r} {problem}")
    unknown = sorted(set(arguments) - {p.name for p in spec.params})
    if unknown:
        return ToolParseError(f"{spec.name} has no argument(s) {', '.join(unknown)[:200]}")
    return ToolCall(spec.name, arguments)


def _unusable_text(value: str) -> str | None:
    """Why a string argument cannot reach a command line or a file name, if it cannot."""
    if "\x00" in value:
        return "contains a NUL character"
    try:
        value.encode()
    except UnicodeEncodeError:
        return "is not valid Unicode text (a lone surrogate)"
    return None


def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not a JSON number")


def _depth(body: str) -> int:
    """The deepest nesting of [ and { outside strings (a linear scan; json.loads recurses)."""
    depth = deepest = 0
    in_string = escaped = False
    for char in body:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


VIEW_FILE = ToolSpec(
    "view_file",
    "Show a text file with line numbers, optionally only lines start_line..end_line (1-based, inclusive).",
    (
        Param("path", "string", "File path, absolute or relative to the repository."),
        Param("start_line", "integer", "First line to show.", False),
        Param("end_line", "integer", "Last line to show.", False),
    ),
)
EDIT_FILE = ToolSpec(
    "edit_file",
    "Replace one exact occurrence of old_str in a file with new_str (old_str must occur exactly once; "
    "include enough surrounding lines to make it unique). An empty old_str creates the file.",
    (
        Param("path", "string", "File path, absolute or relative to the repository."),
        Param("old_str", "string", "The exact text to replace (whitespace matters)."),
        Param("new_str", "string", "The replacement text."),
    ),
)

# GUI tools: element ids are the [n] numbers of the accessibility tree in the latest observation.
CLICK = ToolSpec(
    "click",
    "Click the element with this id (the [n] in the accessibility tree).",
    (Param("id", "integer", "The element's id."),),
)
TYPE = ToolSpec(
    "type",
    "Click the element with this id, then type the text at its cursor (existing text is kept; "
    "press ctrl+a first to replace it).",
    (Param("id", "integer", "The element's id."), Param("text", "string", "The text to type.")),
)
KEY = ToolSpec(
    "key",
    "Press keys in the focused window: one combo such as 'Return', 'ctrl+s', 'Tab', or several "
    "separated by spaces ('ctrl+a BackSpace').",
    (Param("combo", "string", "X key names joined by + (modifiers) and spaces (sequence)."),),
)
CLICK_XY = ToolSpec(
    "click_xy",
    "Click at screen pixel coordinates (as in the screenshot), for things the tree does not show.",
    (Param("x", "integer", "Pixels from the left."), Param("y", "integer", "Pixels from the top.")),
)
SCROLL = ToolSpec(
    "scroll",
    "Scroll up or down, over the element with this id when given.",
    (
        Param("direction", "string", "up or down."),
        Param("amount", "integer", "Wheel steps (default 3).", False),
        Param("id", "integer", "The element to scroll over.", False),
    ),
)

# ---------------------------------------------------------------------------- rubric (documents)

READ_DOCUMENT = ToolSpec(
    "read_document",
    "Read a file as text: a spreadsheet (.xlsx) as a grid with column letters and row numbers, a Word "
    "document (.docx) as paragraphs (# headings) and tables, JSON pretty-printed, other text as is.",
    (
        Param("path", "string", "File path, absolute or relative to the working directory."),
        Param("sheet", "string", "Only this sheet of a spreadsheet.", False),
    ),
)
WRITE_DOCUMENT = ToolSpec(
    "write_document",
    "Create or overwrite a file from text. .xlsx: CSV text (one sheet) or a JSON object "
    '{"Sheet1": [["Item", "Amount"], ["Rent", 1200], ["Total", "=SUM(B2:B2)"]]} (strings starting '
    "with = are formulas); .docx: lines with # headings, - bullets and | cell | cell | table rows; "
    "any other file: the text itself.",
    (
        Param("path", "string", "File path, absolute or relative to the working directory."),
        Param("content", "string", "The document's content as described."),
    ),
)
