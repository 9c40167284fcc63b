"""Imports run one way: the layering docs/design.md draws, checked on every module's source.

Each module belongs to a layer and, within it, to a group. A module may import anything in a lower
layer and anything in its own group; groups of one layer are independent of each other (the store
never imports a sandbox, a policy or the SDPO math). Every import counts: at module top, inside a
function, under TYPE_CHECKING. Project modules may also not import each other in a cycle. A new
module that matches no entry fails the test until it is given a place.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).parent.parent
SOURCES = {
    "agentsd": ROOT / "agentsd",
    "agentsd.envs": ROOT / "envs",
    "agentsd.sandboxes": ROOT / "sandboxes",
}

# (layer, group) of module-name prefixes, lowest layer first; the longest matching prefix wins.
LAYERS: dict[str, tuple[int, str]] = {
    "agentsd": (0, "foundation"),  # the package itself: its version, nothing else
    "agentsd.types": (0, "foundation"),
    "agentsd.errors": (0, "foundation"),
    "agentsd.config": (0, "foundation"),
    "agentsd.elision": (0, "foundation"),
    "agentsd.filelock": (0, "foundation"),
    "agentsd.liveness": (0, "foundation"),
    "agentsd.lineage": (0, "foundation"),
    "agentsd.sequences": (0, "foundation"),
    "agentsd.weights": (0, "foundation"),
    "agentsd.histograms": (0, "foundation"),
    "agentsd.plotting": (0, "foundation"),
    "agentsd.modelcache": (0, "foundation"),
    "agentsd.progress": (0, "foundation"),
    "agentsd.tracking": (0, "foundation"),
    "agentsd.store": (1, "store"),
    "agentsd.sandboxes": (1, "sandboxes"),
    "agentsd.policies": (1, "policies"),
    "agentsd.sdpo": (1, "sdpo"),  # the objective, its step and the teacher's hindsight context
    "agentsd.envs": (2, "envs"),
    "agentsd.agent": (3, "agent"),
    "agentsd.collect": (4, "collect"),
    "agentsd.runs": (4, "runs"),
    "agentsd.suites": (4, "suites"),
    "agentsd.train": (4, "train"),
    "agentsd.credit": (4, "credit"),
    "agentsd.eval": (4, "eval"),
    "agentsd.jobs": (5, "jobs"),
    "agentsd.experiments": (6, "experiments"),
    "agentsd.cli": (7, "cli"),
}


def project_modules() -> dict[str, Path]:
    modules: dict[str, Path] = {}
    for package, directory in SOURCES.items():
        for path in directory.rglob("*.py"):
            parts = path.relative_to(directory).with_suffix("").parts
            if "suites" in parts or (package == "agentsd" and parts[0] in ("envs", "sandboxes")):
                continue  # task data, not code
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join((package, *parts))] = path
    return modules


MODULES = project_modules()


def place(module: str) -> tuple[int, str]:
    matches = [
        p
        for p in LAYERS
        if module == p or module.startswith(p + ".") or (p.endswith("_") and module.startswith(p))
    ]
    if not matches:
        raise AssertionError(f"{module} has no layer: give it one in LAYERS and in docs/design.md")
    return LAYERS[max(matches, key=len)]


def imported_modules(module: str) -> set[str]:
    """The project modules `module` names in any import statement (a `from X import name` of a
    submodule counts as that submodule)."""
    found: set[str] = set()
    package = module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(MODULES[module].read_text())):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            names = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base for alias in node.names
            ]
        found |= {name for name in names if name in MODULES and name != module}
    return found


GRAPH = {module: imported_modules(module) for module in MODULES}


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    wrong = []
    for module, targets in sorted(graph.items()):
        layer, group = place(module)
        for target in sorted(targets):
            target_layer, target_group = place(target)
            if target_layer > layer or (target_layer == layer and target_group != group):
                wrong.append(f"{module} ({layer} {group}) -> {target} ({target_layer} {target_group})")
    return wrong


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, set()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return cycles


def test_every_module_has_a_layer() -> None:
    for module in MODULES:
        place(module)


def test_imports_run_downward() -> None:
    assert upward_imports(GRAPH) == []


def test_no_import_cycles() -> None:
    assert import_cycles(GRAPH) == []


# Modules stay small enough to read in one sitting. The exceptions run inside a sandbox as one file
# each, uploaded whole and importing only the standard library.
MAX_LINES = 450
ONE_FILE_SCRIPTS = {"agentsd.envs.gui_driver", "agentsd.sandboxes.supervisor"}


def test_every_module_is_small_but_the_in_sandbox_scripts() -> None:
    sizes = {m: len(p.read_text().splitlines()) for m, p in MODULES.items() if m not in ONE_FILE_SCRIPTS}
    assert not {m: n for m, n in sizes.items() if n > MAX_LINES}, f"split modules over {MAX_LINES} lines"
    for script in ONE_FILE_SCRIPTS:
        assert not GRAPH[script], f"{script} runs alone in a sandbox: it must import no project module"


def test_the_checks_catch_an_upward_import_a_sideways_one_and_a_cycle() -> None:
    graph = {
        "agentsd.store.store": {"agentsd.collect.collector", "agentsd.policies.base"},
        "agentsd.collect.collector": {"agentsd.store.store"},
    }
    wrong = upward_imports(graph)
    assert any("-> agentsd.collect.collector" in w for w in wrong)  # store (1) -> collector (4)
    assert any("-> agentsd.policies.base" in w for w in wrong)  # store and policies are peers
    assert import_cycles(graph) == [["agentsd.collect.collector", "agentsd.store.store"]]
    assert "agentsd.types" in GRAPH["agentsd.config.collect"]  # imports are found at all
    assert "agentsd.store" in GRAPH["agentsd.runs"] or "agentsd.store.store" in GRAPH["agentsd.runs"]
