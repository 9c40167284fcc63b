"""Programmatic rubric checks: a criterion with `check` is decided by code, not by a judge.

Every check reads a *source*: `answer` (what the agent passed to submit; the default), `output` (the
task's expected output: the answer, or the expected file rendered as text), or a path in the sandbox
(relative to the workdir). Kinds (the `check` dict's `kind` and its fields):

    file_exists       path
    contains          text, source, case_sensitive (false)
    regex             pattern, source, flags ("i", "m", "s" letters)
    json_path_equals  path, json_path ("totals.net" or "items[2].name"), value, tolerance (numbers)
    numeric_within    value, tolerance (absolute) or rel_tolerance, source, pattern (a regex whose
                      first group is the number; default: any number in the text counts)
    cell_value        path, cell ("B7"), sheet (default: the first), value, tolerance (numbers)

A check returns met True/False with a short rationale, or raises CheckError when it cannot decide
(a malformed check, an unreadable document): that is a grader error, never a failed criterion.
A missing file is not an error: the criterion is simply not met.

Not guaranteed: spreadsheet formulas beyond + - * / ^, parentheses, cell references and
SUM/AVERAGE/MIN/MAX/COUNT over ranges of one sheet (others are CheckErrors when uncached).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from agentsd.envs.documents import DocumentError, cell_display, check_archive, open_workbook, render
from agentsd.envs.limited import run_limited

_NUMBER = re.compile(r"[-+]?\(?\$?\d[\d,]*(?:\.\d+)?\)?%?|[-+]?\.\d+")


class CheckError(ValueError):
    """The check could not be decided."""


@dataclass(frozen=True)
class CheckResult:
    met: bool
    rationale: str


MAX_OUTPUT_FILES = 20  # changed files the judge sees; the rest are counted as left out


@dataclass
class Evidence:
    """What checks read: the submitted answer, the expected output, and files of the sandbox."""

    answer: str
    read_file: Callable[[str], bytes | None]  # a workdir-relative or absolute path -> bytes or None
    output_path: str | None = None  # the task's expected output file, if it asks for one
    changed_files: tuple[
        str, ...
    ] = ()  # workdir-relative files the episode added or changed ("files" output)

    def text(self, source: str) -> str | None:
        if source == "answer":
            return self.answer
        if source == "output":
            if self.output_path is None:
                return self.answer
            source = self.output_path
        data = self.read_file(source)
        if data is None:
            return None
        try:
            return render(source, data)
        except DocumentError as exc:
            raise CheckError(f"{source}: {exc}") from None


def run_check(check: dict[str, Any], evidence: Evidence) -> CheckResult:
    kind = check.get("kind")
    runner = _CHECKS.get(str(kind))
    if runner is None:
        raise CheckError(f"unknown check kind {kind!r}; expected one of {', '.join(sorted(_CHECKS))}")
    try:
        return runner(check, evidence)
    except KeyError as exc:
        raise CheckError(f"check {kind}: missing field {exc}") from None


def _source(check: dict[str, Any], evidence: Evidence) -> tuple[str, str | None]:
    source = str(check.get("source", "answer"))
    return source, evidence.text(source)


def _file_exists(check: dict[str, Any], evidence: Evidence) -> CheckResult:
    path = str(check["path"])
    found = evidence.read_file(path) is not None
    return CheckResult(found, f"{path} {'exists' if found else 'does not exist'}")


def _contains(check: dict[str, Any], evidence: Evidence) -> CheckResult:
    source, text = _source(check, evidence)
    if text is None:
        return CheckResult(False, f"{source} does not exist")
    needle = str(check["text"])
    sensitive = bool(check.get("case_sensitive", False))
    found = needle in text if sensitive else needle.lower() in text.lower()
    return CheckResult(found, f"{source} {'contains' if found else 'does not contain'} {needle!r}")


def _regex(check: dict[str, Any], evidence: Evidence) -> CheckResult:
    source, text = _source(check, evidence)
    if text is None:
        return CheckResult(False, f"{source} does not exist")
    flags = 0
    for letter in str(check.get("flags", "")):
        flags |= {"i": re.IGNORECASE, "m": re.MULTILINE, "s": re.DOTALL}.get(letter, 0)
    try:
        match = re.search(str(check["pattern"]), text, flags)
    except re.error as exc:
        raise CheckError(f"regex {check['pattern']!r}: {exc}") from None
    if match:
        return CheckResult(True, f"{source} matches /{check['pattern']}/ at {match.group(0)[:80]!r}")
    return CheckResult(False, f"{source} has no match for /{check['pattern']}/")


def parse_number(text: str) -> float | None:
    """'1,234.5', '$1,234', '(12.5)' (negative), '12%' -> 12.0; None when it is not a number."""
    raw = text.strip()
    negative = raw.startswith("(") and raw.endswith(")")
    cleaned = raw.strip("()").replace("$", "").replace(",", "").rstrip("%").strip()
    try:
        value = float(cleaned)
    except ValueError:
        return None
    return -value if negative else value


def _close(actual: float, expected: float, check: dict[str, Any]) -> bool:
    if "rel_tolerance" in check:
        return math.isclose(actual, expected, rel_tol=float(check["rel_tolerance"]), abs_tol=0.0)
    return abs(actual - expected) <= float(check.get("tolerance", 0.0)) + 1e-12


def _numeric_within(check: dict[str, Any], evidence: Evidence) -> CheckResult:
    source, text = _source(check, evidence)
    if text is None:
        return CheckResult(False, f"{source} does not exist")
    expected = float(check["value"])
    if "pattern" in check:
        try:
            candidates = [m.group(1) for m in re.finditer(str(check["pattern"]), text, re.IGNORECASE)]
        except (re.error, IndexError) as exc:
            raise CheckError(f"numeric_within pattern {check['pattern']!r}: {exc}") from None
    else:
        candidates = _NUMBER.findall(text)
    numbers = [n for n in (parse_number(c) for c in candidates if c) if n is not None]
    for number in numbers:
        if _close(number, expected, check):
            return CheckResult(True, f"{source} states {number:g} (expected {expected:g})")
    shown = ", ".join(f"{n:g}" for n in numbers[:8]) or "no number"
    return CheckResult(False, f"{source}: {shown}; expected {expected:g}")


def _json_path_equals(check: dict[str, Any], evidence: Evidence) -> CheckResult:
    path = str(check["path"])
    data = evidence.read_file(path)
    if data is None:
        return CheckResult(False, f"{path} does not exist")
    try:
        value: Any = json.loads(data)
    except (ValueError, RecursionError) as exc:  # also bad UTF-8, huge integers, deep nesting
        return CheckResult(False, f"{path} is not valid JSON ({str(exc)[:200]})")
    where = str(check["json_path"])
    for part in re.findall(r"[^.\[\]]+|\[\d+\]", where):
        try:
            value = value[int(part[1:-1])] if part.startswith("[") else value[part]
        except (KeyError, IndexError, TypeError):
            return CheckResult(False, f"{path} has nothing at {where}")
    expected = check["value"]
    if isinstance(expected, int | float) and isinstance(value, int | float) and not isinstance(value, bool):
        equal = _close(float(value), float(expected), check)
    else:
        equal = value == expected
    return CheckResult(equal, f"{path} {where} = {repr(value)[:200]} (expected {expected!r})")


def _cell_value(check: dict[str, Any], evidence: Evidence) -> CheckResult:
    path, ref = str(check["path"]), str(check["cell"]).upper()
    data = evidence.read_file(path)
    if data is None:
        return CheckResult(False, f"{path} does not exist")
    sheet = str(check["sheet"]) if check.get("sheet") else None
    # the agent wrote the workbook: it is unpacked, parsed and its formulas evaluated under limits
    found = run_limited(read_cell, data, sheet, ref, error=CheckError, what=path)
    if isinstance(found, str):
        return CheckResult(False, f"{path} {found}")
    sheet, shown, actual = found
    expected = check["value"]
    if isinstance(expected, int | float):
        number = actual if isinstance(actual, int | float) else parse_number(str(actual or ""))
        met = number is not None and _close(float(number), float(expected), check)
    else:
        met = str(actual).strip().lower() == str(expected).strip().lower()
    return CheckResult(met, f"{path} {sheet}!{ref} = {shown!r} -> {actual!r} (expected {expected!r})")


def read_cell(data: bytes, sheet: str | None, ref: str) -> tuple[str, Any, Any] | str:
    """(sheet, shown value, computed value) of one cell, or why the workbook has no such sheet.
    Runs in the limited child (envs/limited.py)."""
    ref = ref.replace("$", "")
    if not re.fullmatch(r"[A-Z]{1,3}[1-9]\d{0,6}", ref):
        raise CheckError(f"cell {ref!r} is not a cell reference like B7")
    try:
        check_archive(data)
        values, formulas = open_workbook(data, values=True), open_workbook(data, values=False)
    except DocumentError as exc:
        raise CheckError(str(exc)) from None
    name = sheet or values.sheetnames[0]
    if name not in values.sheetnames:
        return f"has no sheet {name!r} ({', '.join(values.sheetnames)})"
    shown = cell_display(values[name][ref].value, formulas[name][ref].value)
    return name, shown, FormulaEvaluator(values[name], formulas[name]).value(ref)


class FormulaEvaluator:
    """Values of cells of one sheet, computing uncached formulas of the supported subset."""

    _TOKEN = re.compile(r"\s*(?:(\d+(?:\.\d+)?)|([A-Z]+\d+:[A-Z]+\d+)|([A-Z]+\d+)|([A-Z]+)\(|(.))")

    def __init__(self, values: Any, formulas: Any) -> None:
        self.values, self.formulas = values, formulas
        self._busy: set[str] = set()

    def value(self, ref: str) -> Any:
        cached = self.values[ref].value
        formula = self.formulas[ref].value
        if cached is not None or not (isinstance(formula, str) and formula.startswith("=")):
            return cached
        if ref in self._busy:
            raise CheckError(f"circular reference at {ref}")
        self._busy.add(ref)
        try:
            return self._evaluate(formula[1:].upper())
        finally:
            self._busy.discard(ref)

    def _range(self, spec: str) -> list[float]:
        out = []
        for row in self.formulas[spec]:
            for cell in row:
                value = self.value(cell.coordinate)
                if isinstance(value, int | float) and not isinstance(value, bool):
                    out.append(float(value))
        return out

    def _evaluate(self, expression: str) -> float:
        tokens = [t for t in self._TOKEN.findall(expression) if any(t)]
        position = 0

        def peek() -> tuple[str, ...] | None:
            return tokens[position] if position < len(tokens) else None

        def operator() -> str:
            """The punctuation at the cursor ("" at the end or before a number, name or range)."""
            token = peek()
            return token[4] if token is not None else ""

        def take() -> tuple[str, ...]:
            nonlocal position
            token = tokens[position]
            position += 1
            return token

        def atom() -> float:
            token = take()
            number, span, ref, func, other = token
            if number:
                return float(number)
            if ref:
                value = self.value(ref)
                return float(value) if isinstance(value, int | float) else 0.0
            if func:
                args: list[float] = []
                while peek() is not None and operator() != ")":
                    nxt = peek()
                    assert nxt is not None
                    if nxt[1]:
                        take()
                        args.extend(self._range(nxt[1]))
                    elif nxt[4] == ",":
                        take()
                    else:
                        args.append(additive())
                take()  # ")"
                return _FUNCTIONS.get(func, _unsupported(func))(args)
            if other == "(":
                value = additive()
                take()
                return value
            if other == "-":
                return -atom()
            if span:
                raise CheckError(f"a range ({span}) outside a function in ={expression}")
            raise CheckError(f"cannot evaluate ={expression} (unexpected {other!r})")

        def power() -> float:
            base = atom()
            while operator() == "^":
                take()
                base = base ** atom()
            return base

        def multiplicative() -> float:
            value = power()
            while operator() in ("*", "/"):
                op = take()[4]
                rhs = power()
                if op == "/" and rhs == 0:
                    raise CheckError(f"division by zero in ={expression}")
                value = value * rhs if op == "*" else value / rhs
            return value

        def additive() -> float:
            value = multiplicative()
            while operator() in ("+", "-"):
                op = take()[4]
                rhs = multiplicative()
                value = value + rhs if op == "+" else value - rhs
            return value

        try:
            result = additive()
        except IndexError:
            raise CheckError(f"cannot evaluate ={expression} (incomplete)") from None
        if position != len(tokens):
            raise CheckError(f"cannot evaluate ={expression} (trailing input)")
        return result


def _unsupported(name: str) -> Callable[[list[float]], float]:
    def fail(_: list[float]) -> float:
        raise CheckError(f"spreadsheet function {name} is not supported for uncached formulas")

    return fail


_FUNCTIONS: dict[str, Callable[[list[float]], float]] = {
    "SUM": sum,
    "AVERAGE": lambda xs: sum(xs) / len(xs) if xs else 0.0,
    "MIN": lambda xs: min(xs) if xs else 0.0,
    "MAX": lambda xs: max(xs) if xs else 0.0,
    "COUNT": lambda xs: float(len(xs)),
}

_CHECKS: dict[str, Callable[[dict[str, Any], Evidence], CheckResult]] = {
    "file_exists": _file_exists,
    "contains": _contains,
    "regex": _regex,
    "numeric_within": _numeric_within,
    "json_path_equals": _json_path_equals,
    "cell_value": _cell_value,
}
