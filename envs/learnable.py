"""The learnable suite: hundreds of short shell tasks generated from a seed, split train / held-out.

Built for measuring learning on one CPU machine: tasks a small model can come to solve, where the
environment's own answers teach. Every task asks for one small result in the workspace (a word, a
count, a sum, a file name, a fixed line, a file), and its verifier, on failure, says what was
expected ("answer.txt holds '12'; it should hold exactly: 14"), which is what the hindsight teacher
reads. A reply without a valid tool call gets the parser's format observation, so the tool-call
protocol is learnable too. The tasks run through the same sandboxes, environments, collector and
verifiers as every other terminal suite (script verifiers, isolated as every verifier is).

Suites: `learn` (all), `learn-train` and `learn-heldout` (a task is held out when the hash of its id
says so: about one in five, the same split for every seed and count). Generation is deterministic:
the same seed and count give the same tasks, byte for byte.

Any of them with `:KIND,KIND` (e.g. `learn-reply-heldout:write-word,make-file`) holds only those
kinds, drawn from a generation extended (same first tasks, more of them) so that it holds about as
many tasks as the whole suite; its held-out part leaves out every task whose text is also a train
task's (write-word has only as many texts as words), so held out means never seen in training.

The single-turn form (`learn-reply`, `learn-reply-train`, `learn-reply-heldout`): the same tasks and
split, with what a command would have shown (the files' text) in the prompt; the agent has no tools
and its one reply is the answer, written to the file the task names (envs/terminal.py,
`environment.reply_file`) and graded by the same script, so the feedback reads the same. The
reference is the reply itself (`reference["reply"]`).

Not guaranteed: difficulty calibration; the tasks are meant to be easy for a capable agent.
"""

from __future__ import annotations

import hashlib
import random
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from agentsd.envs.common import TaskFormatError
from agentsd.types import GRADING_DIRS, Environment, Family, Task, Verifier, World

DEFAULT_SEED = 0
DEFAULT_COUNT = 400
HELDOUT_EVERY = 5  # one task in five (by id hash) is held out
ANSWER = "answer.txt"
_WORD_LIST = (
    "amber anchor apple arrow autumn badge bamboo banner barrel basket beacon berry birch blossom bonnet "
    "breeze bridge bronze bucket butter cabin cactus camel candle canyon carbon carpet castle cedar "
    "cherry chimney cinder citrus clover cobalt comet copper coral cotton crayon crystal dagger daisy "
    "delta desert dolphin dragon ember falcon feather fern fiddle flint forest fossil garnet ginger "
    "glacier granite harbor hazel helmet honey island ivory jacket jasmine jungle kettle kiwi ladder "
    "lagoon lantern lemon lily linen lotus magnet maple marble meadow melon meteor mint mirror "
    "monsoon mosaic nectar needle nickel oasis olive onyx orbit orchid otter paddle panda pebble "
    "pepper pillow pine planet plum prism pumpkin quartz quill rabbit raven ribbon river rocket "
    "saddle saffron salmon sapphire scarlet shadow silver sparrow spruce stone summit sunset thistle "
    "thunder tiger timber topaz tulip tundra velvet violet walnut willow winter zephyr"
)
WORDS = tuple(_WORD_LIST.split())
KEYS = ("port", "workers", "timeout", "retries", "level", "cache", "threads", "limit")


@dataclass(frozen=True)
class Draft:
    """One generated task in both forms. The agent form: `instruction`, the world's `files`, the
    verifier `script` and the reference `command`. The single-turn form: the files' text and the
    `question` in the prompt, the reply (which should be `answer`) written to `reply_file` and
    graded by the same script."""

    instruction: str
    files: dict[str, str]
    script: str
    command: str
    question: str
    answer: str
    reply_file: str = ANSWER

    def single_turn_instruction(self) -> str:
        shown = "".join(f"{path} holds:\n{text.rstrip()}\n\n" for path, text in sorted(self.files.items()))
        return f"{shown}{self.question} Reply with nothing else."


def _check(expected: str, what: str) -> str:
    """A verifier script: answer.txt (whitespace around it ignored) must be `expected`; on failure it
    prints what it found and what was expected."""
    want = shlex.quote(expected)
    trim = 'tr -d "\\r" | sed -e "s/^[[:space:]]*//" -e "s/[[:space:]]*$//"'
    missing = f"there is no {ANSWER} in the working directory; it should hold {what}: "
    return (
        f'got="$(cat {ANSWER} 2>/dev/null | {trim})"\n'
        f'[ -f {ANSWER} ] || {{ echo "{missing}"{want}; exit 1; }}\n'
        f'[ "$got" = {want} ] && exit 0\n'
        f"echo \"{ANSWER} holds '$got'; it should hold {what}: \"{want}\n"
        "exit 1\n"
    )


def _solution(command: str) -> dict[str, object]:
    """The reference: a script for the oracle, and the one tool call that solves the task (what a
    learning experiment scores the policy's log-prob of)."""
    return {
        "files": {"solve.sh": f"#!/bin/bash\ncd /workspace\n{command}\n"},
        "entry": "solve.sh",
        "action": {"name": "bash", "arguments": {"command": command}},
    }


def _write_word(rng: random.Random) -> Draft:
    word = rng.choice(WORDS)
    return Draft(
        f"Write the word {word} into {ANSWER}.",
        {},
        _check(word, "exactly"),
        f"echo {word} > {ANSWER}",
        question=f"Reply with the word {word}.",
        answer=word,
    )


def _copy_file(rng: random.Random) -> Draft:
    name, word = rng.choice(WORDS), rng.choice(WORDS)
    path = f"data/{name}.txt"
    return Draft(
        f"Copy the text of {path} into {ANSWER}.",
        {path: word + "\n"},
        _check(word, f"the text of {path}"),
        f"cp {path} {ANSWER}",
        question=f"Reply with the text of {path}.",
        answer=word,
    )


def _count_lines(rng: random.Random) -> Draft:
    name, n = rng.choice(WORDS), rng.randint(2, 40)
    path = f"data/{name}.txt"
    lines = "".join(rng.choice(WORDS) + "\n" for _ in range(n))
    return Draft(
        f"Write the number of lines in {path} into {ANSWER}.",
        {path: lines},
        _check(str(n), f"the number of lines in {path}"),
        f"wc -l < {path} > {ANSWER}",
        question=f"Reply with the number of lines in {path}.",
        answer=str(n),
    )


def _sum_numbers(rng: random.Random) -> Draft:
    numbers = [rng.randint(1, 99) for _ in range(rng.randint(2, 8))]
    path = "data/numbers.txt"
    return Draft(
        f"Write the sum of the numbers in {path} (one per line) into {ANSWER}.",
        {path: "".join(f"{x}\n" for x in numbers)},
        _check(str(sum(numbers)), f"the sum of the numbers in {path}"),
        f"awk '{{s += $1}} END {{print s}}' {path} > {ANSWER}",
        question=f"Reply with the sum of the numbers in {path}.",
        answer=str(sum(numbers)),
    )


def _find_file(rng: random.Random) -> Draft:
    names = rng.sample(WORDS, 4)
    key = rng.choice([w for w in WORDS if w not in names])
    holder = rng.choice(names)
    others = [w for w in WORDS if w != key]
    files = {
        f"data/{n}.txt": " ".join([*rng.sample(others, 5), *([key] if n == holder else [])]) + "\n"
        for n in names
    }
    return Draft(
        f"One file in data/ contains the word {key}. Write that file's name (for example {names[0]}.txt) "
        f"into {ANSWER}.",
        files,
        _check(f"{holder}.txt", f"the name of the file in data/ that contains {key}"),
        f"grep -lw {key} data/*.txt | xargs -n1 basename > {ANSWER}",
        question=f"One file in data/ contains the word {key}. Reply with that file's name (for example "
        f"{names[0]}.txt).",
        answer=f"{holder}.txt",
    )


def _fix_line(rng: random.Random) -> Draft:
    keys = rng.sample(KEYS, 4)
    values = {k: str(rng.randint(1, 9000)) for k in keys}
    key, new = rng.choice(keys), str(rng.randint(1, 9000))
    while new == values[key]:
        new = str(rng.randint(1, 9000))
    before = "".join(f"{k}={v}\n" for k, v in values.items())
    after = "".join(f"{k}={new if k == key else v}\n" for k, v in values.items())
    expected = shlex.quote(after)
    script = (
        f"want={expected}\n"
        "got=\"$(cat app.conf 2>/dev/null)\"$'\\n'\n"
        '[ "$got" = "$want" ] && exit 0\n'
        f'echo "app.conf should read (only {key} changed):"; printf "%s" "$want"\n'
        'echo "it reads:"; cat app.conf 2>/dev/null || echo "(no app.conf)"\n'
        "exit 1\n"
    )
    return Draft(
        f"In app.conf, set {key} to {new}; leave the other lines as they are.",
        {"app.conf": before},
        script,
        f"sed -i 's/^{key}=.*/{key}={new}/' app.conf",
        question=f"Reply with the text of app.conf after setting {key} to {new}, other lines as they are.",
        answer=after.rstrip("\n"),
        reply_file="app.conf",
    )


def _uppercase(rng: random.Random) -> Draft:
    name, words = rng.choice(WORDS), " ".join(rng.sample(WORDS, 3))
    path = f"data/{name}.txt"
    return Draft(
        f"Write the text of {path} in upper case into {ANSWER}.",
        {path: words + "\n"},
        _check(words.upper(), f"the text of {path} in upper case"),
        f"tr a-z A-Z < {path} > {ANSWER}",
        question=f"Reply with the text of {path} in upper case.",
        answer=words.upper(),
    )


def _make_file(rng: random.Random) -> Draft:
    directory, name, word = rng.choice(WORDS), rng.choice(WORDS), rng.choice(WORDS)
    path = f"{directory}/{name}.txt"
    script = (
        f'[ -f {path} ] || {{ echo "there is no file {path}"; exit 1; }}\n'
        f'[ "$(cat {path})" = {word} ] && exit 0\n'
        f"echo \"{path} holds '$(cat {path})'; it should hold exactly: {word}\"\n"
        "exit 1\n"
    )
    return Draft(
        f"Create the directory {directory} with a file {name}.txt in it that holds the word {word}.",
        {},
        script,
        f"mkdir -p {directory} && echo {word} > {path}",
        question=f"The file {path} is to hold the word {word}. Reply with the text it should hold.",
        answer=word,
        reply_file=path,
    )


KINDS: dict[str, Callable[[random.Random], Draft]] = {
    "write-word": _write_word,
    "copy-file": _copy_file,
    "count-lines": _count_lines,
    "sum-numbers": _sum_numbers,
    "find-file": _find_file,
    "fix-line": _fix_line,
    "uppercase": _uppercase,
    "make-file": _make_file,
}
Form = Literal["agent", "reply"]
KIND_SEPARATOR = ":"


def is_heldout(task_id: str) -> bool:
    return int(hashlib.sha256(task_id.encode()).hexdigest()[:8], 16) % HELDOUT_EVERY == 0


def _agent_task(task_id: str, draft: Draft, meta: dict[str, str]) -> Task:
    return Task(
        id=task_id,
        family=Family.TERMINAL,
        instruction=draft.instruction + " Then submit.",
        world=World(files=draft.files),
        environment=Environment(scratch_dirs=list(GRADING_DIRS)),
        verifier=Verifier(kind="script", script=draft.script, timeout_s=60.0),
        reference=_solution(draft.command),
        meta=meta,
    )


def _reply_task(task_id: str, draft: Draft, meta: dict[str, str]) -> Task:
    return Task(
        id=task_id,
        family=Family.TERMINAL,
        instruction=draft.single_turn_instruction(),
        world=World(files=draft.files),
        environment=Environment(scratch_dirs=list(GRADING_DIRS), reply_file=draft.reply_file),
        verifier=Verifier(kind="script", script=draft.script, timeout_s=60.0),
        reference={"reply": draft.answer},
        meta=meta,
    )


def generate(seed: int = DEFAULT_SEED, count: int = DEFAULT_COUNT, form: Form = "agent") -> list[Task]:
    """`count` tasks, kinds in turn, each drawn from its own generator seeded by (seed, index). Both
    forms draw the same tasks and split them the same way (by the agent form's id)."""
    tasks = []
    kinds = list(KINDS.items())
    for index in range(count):
        kind, make = kinds[index % len(kinds)]
        draft = make(random.Random(f"{seed}:{index}"))
        agent_id = f"learn-{seed}-{index:04d}-{kind}"
        split = "heldout" if is_heldout(agent_id) else "train"
        if form == "agent":
            tasks.append(_agent_task(agent_id, draft, {"suite": "learn", "kind": kind, "split": split}))
        else:
            reply_id = f"learn-reply-{seed}-{index:04d}-{kind}"
            meta = {"suite": "learn-reply", "kind": kind, "split": split}
            tasks.append(_reply_task(reply_id, draft, meta))
    return tasks


def learn_suite(name: str) -> list[Task]:
    """One of SUITES, `learn[-reply][-train|-heldout]`, optionally narrowed to kinds: `NAME:KIND,KIND`."""
    base, narrowed, kinds_text = name.partition(KIND_SEPARATOR)
    if base not in SUITES:
        raise TaskFormatError(f"suite {name!r}: {base!r} is not a learnable suite ({', '.join(SUITES)})")
    kinds = _kinds(name, kinds_text) if narrowed else set()
    form: Form = "reply" if base.startswith("learn-reply") else "agent"
    count = DEFAULT_COUNT * len(KINDS) // len(kinds) if kinds else DEFAULT_COUNT
    tasks = [t for t in generate(count=count, form=form) if not kinds or t.meta["kind"] in kinds]
    split = base.removeprefix("learn").removeprefix("-reply").removeprefix("-")
    if not split:
        return tasks
    chosen = [t for t in tasks if t.meta["split"] == split]
    if kinds and split == "heldout":
        seen = {t.instruction for t in tasks if t.meta["split"] == "train"}
        chosen = [t for t in chosen if t.instruction not in seen]
    return chosen


def is_learn_suite(name: str) -> bool:
    """Whether `name` names a learnable suite (kinds not checked: learn_suite says what is wrong)."""
    return name.partition(KIND_SEPARATOR)[0] in SUITES


def _kinds(name: str, text: str) -> set[str]:
    kinds = {k.strip() for k in text.split(",")}
    unknown = sorted(kinds - set(KINDS)) if all(kinds) else ["(empty)"]
    if unknown:
        raise TaskFormatError(
            f"suite {name!r}: unknown task kind {', '.join(unknown)}; the kinds are {', '.join(KINDS)}"
        )
    return kinds


SUITES = ("learn", "learn-train", "learn-heldout", "learn-reply", "learn-reply-train", "learn-reply-heldout")
