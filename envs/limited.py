"""Hostile input parsed on the host, in a child process with memory, CPU and wall-clock limits.

Documents the agent wrote (xlsx, docx) are parsed by libraries that were not written for hostile
input: a few kilobytes can unpack to gigabytes or spin a formula for minutes. `run_limited(fn, ...)`
runs `fn` in a child forked from a forkserver (a clean single-threaded process with the parsers
preloaded, so a call costs a fork, not an interpreter start), under RLIMIT_AS, RLIMIT_CPU and a
wall-clock timeout; the child is killed at the timeout. Whatever goes wrong (the limits, the
parser's own exceptions, a crash) reaches the caller as one exception type it chose, with a message
meant for the agent or the grader; the caller's process never holds the parsed data.

Not guaranteed: isolation beyond resource limits (the child runs as the caller's user, on the
caller's files; it only parses bytes it is given); results must be picklable and are as large as
`fn` makes them (bound them in `fn`).
"""

from __future__ import annotations

import multiprocessing
import resource
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

PRELOAD = ["agentsd.envs.documents", "agentsd.envs.rubric_checks", "openpyxl", "docx"]
T = TypeVar("T")


@dataclass(frozen=True)
class Limits:
    memory_bytes: int = 1 << 30  # address space of the child, preloaded parsers included
    cpu_s: int = 10  # the shipped documents parse in well under a second
    wall_s: float = 20.0


DEFAULT_LIMITS = Limits()
_context_lock = threading.Lock()
_context: Any = None


def _forkserver() -> Any:
    global _context
    with _context_lock:
        if _context is None:
            context = multiprocessing.get_context("forkserver")
            context.set_forkserver_preload(PRELOAD)
            _context = context
        return _context


def run_limited(
    fn: Callable[..., T], *args: Any, error: type[Exception], what: str, limits: Limits = DEFAULT_LIMITS
) -> T:
    """fn(*args) in a limited child. Raises `error` (an exception class taking one message) when fn
    raises it, or with a message naming `what` when a limit is hit or fn fails any other way."""
    context = _forkserver()
    receiver, sender = context.Pipe(duplex=False)
    child = context.Process(target=_child, args=(sender, limits, fn, args, error), daemon=True)
    with _main_not_reimported():
        child.start()
    sender.close()
    try:
        if not receiver.poll(limits.wall_s):
            raise error(f"{what}: parsing took longer than {limits.wall_s:g} s; stopped")
        try:
            kind, payload = receiver.recv()
        except (EOFError, OSError):  # the child died without an answer: a limit or a crash
            child.join(5)
            raise error(_death(what, child.exitcode, limits)) from None
    finally:
        if child.is_alive():
            child.kill()
        child.join(5)
        receiver.close()
    if kind == "ok":
        return payload
    raise error(payload if kind == "error" else f"{what}: {payload}")


@contextmanager
def _main_not_reimported() -> Iterator[None]:
    """Start children without re-running the parent's __main__ in them (multiprocessing does, by
    path or name): the child's function lives in an importable module, and a __main__ that is not a
    file (stdin, a notebook, an embedding interpreter) would make every child fail to start."""
    main = sys.modules.get("__main__")
    if main is None:
        yield
        return
    saved = {name: main.__dict__[name] for name in ("__file__", "__spec__") if name in main.__dict__}
    main.__dict__.pop("__file__", None)
    main.__spec__ = None
    try:
        yield
    finally:
        main.__dict__.pop("__spec__", None)
        main.__dict__.update(saved)


def _death(what: str, code: int | None, limits: Limits) -> str:
    import signal

    if code is not None and -code in (signal.SIGXCPU, signal.SIGKILL):
        return f"{what}: parsing needed more than {limits.cpu_s} s of CPU; stopped"
    return f"{what}: the parser crashed (exit status {code}); the document is too large or malformed"


def _child(
    sender: Any, limits: Limits, fn: Callable[..., Any], args: tuple[Any, ...], error: type[Exception]
) -> None:
    resource.setrlimit(resource.RLIMIT_AS, (limits.memory_bytes, limits.memory_bytes))
    resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_s, limits.cpu_s + 1))
    try:
        answer: tuple[str, Any] = ("ok", fn(*args))
    except error as exc:
        answer = ("error", str(exc))
    except MemoryError:
        answer = ("limit", f"too large to parse within {limits.memory_bytes >> 20} MiB")
    except RecursionError:
        answer = ("limit", "nested too deeply to parse")
    except Exception as exc:  # the parser's own failure on malformed input
        answer = ("limit", f"cannot be parsed ({type(exc).__name__}: {str(exc)[:300]})")
    try:
        sender.send(answer)
    except MemoryError:
        sender.send(("limit", "the parsed result is too large"))
    finally:
        sender.close()
