"""Options and helpers shared by CLI commands: config files, the store location, error output."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from pydantic import BaseModel
from rich.console import Console

from agentsd.config import DEFAULT_STORE_URL, read_yaml_mapping

# Piped output is not a terminal: Rich would fold every table to 80 columns, which leaves a 9-column
# listing unreadable. Tables printed into a pipe keep one row per line unless COLUMNS says otherwise.
PIPED_WIDTH = 4096
console = Console(width=None if sys.stdout.isatty() or os.environ.get("COLUMNS") else PIPED_WIDTH)
err_console = Console(stderr=True)
JsonLines = Annotated[bool, typer.Option("--json", help="One JSON object per line instead of a table.")]


def print_json_lines(rows: Iterable[Any]) -> None:
    """Each row (a pydantic model, a dataclass or a mapping) as one line of JSON on stdout."""
    for row in rows:
        data: Any = row
        if isinstance(row, BaseModel):
            data = row.model_dump(mode="json")
        elif dataclasses.is_dataclass(row) and not isinstance(row, type):
            data = dataclasses.asdict(row)
        sys.stdout.write(json.dumps(data, default=str) + "\n")


ConfigFiles = Annotated[
    list[Path] | None,
    typer.Option("--config", "-c", help="YAML config file; repeat to merge several (later wins)."),
]
StoreUrl = Annotated[
    str | None,
    typer.Option(
        "--store",
        "-s",
        envvar="AGENTSD_STORE",
        show_envvar=False,  # the help says it, with where the store comes from otherwise
        help="Replay store URL or SQLite path "
        f"[env AGENTSD_STORE; else store.url of -c files; else {DEFAULT_STORE_URL}]",
    ),
]


def config_sections(files: list[Path] | None) -> Iterator[dict[str, Any]]:
    """The command-level sections of config files, in order: the top of each file, then its
    `collect` and `train` parts (a run config nests them), so any command can read its keys."""
    for file in files or []:
        data = read_yaml_mapping(file)
        for section in (data, data.get("collect"), data.get("train")):
            if isinstance(section, dict):
                yield section


def store_url(explicit: str | None, files: list[Path] | None) -> str:
    """--store, then $AGENTSD_STORE, then store.url (or collect.store.url) of the config files."""
    if explicit:
        return explicit
    if os.environ.get("AGENTSD_STORE"):
        return os.environ["AGENTSD_STORE"]
    urls = [str(s["store"]["url"]) for s in config_sections(files) if (s.get("store") or {}).get("url")]
    return urls[-1] if urls else DEFAULT_STORE_URL  # later files win, as when configs merge


def dump_yaml(data: Any) -> str:
    return yaml.safe_dump(data, sort_keys=False)
