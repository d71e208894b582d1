"""What people see: rich output on stderr. Machines read the run folder."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from typing import Any, Iterable

from omegaconf import DictConfig, ListConfig, OmegaConf
from rich.markup import escape
from rich.console import Console
from rich.table import Table
from rich.tree import Tree

# soft_wrap: long lines stay whole in logs instead of wrapping at 80 columns.
# Tables get 120 columns in logs rather than rich's default of 80.
console = Console(stderr=True, highlight=False, soft_wrap=True,
                  width=None if sys.stderr.isatty() else 120)


@contextlib.contextmanager
def quiet_native_stderr():
    """Hides what native code (TensorFlow's C++ logging) writes to file
    descriptor 2 meanwhile; TF_CPP_MIN_LOG_LEVEL does not reach all of it.
    Set KDTL_TF_LOGS=1 to see it."""
    if os.environ.get("KDTL_TF_LOGS"):
        yield
        return
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def interactive() -> bool:
    return console.is_terminal


def info(message: str) -> None:
    console.print(message)


def error(message: str) -> None:
    """One line on stderr, as every user error is reported."""
    print(f"kdtl: error: {message}", file=sys.stderr, flush=True)


def config_tree(cfg: DictConfig, title: str = "config") -> None:
    tree = Tree(f"[bold]{title}[/bold]")

    def add(branch: Tree, node: Any) -> None:
        for key, value in node.items():
            if isinstance(value, DictConfig):
                add(branch.add(f"[cyan]{key}[/cyan]"), value)
            else:
                if isinstance(value, ListConfig):
                    value = json.dumps(OmegaConf.to_container(value))
                branch.add(escape(f"{key}: {value}"))

    add(tree, cfg)
    console.print(tree)


def table(title: str, columns: Iterable[str], rows: Iterable[Iterable[Any]]) -> None:
    out = Table(title=title, title_justify="left")
    for column in columns:
        out.add_column(column, justify="right" if column not in ("model", "member", "what") else "left")
    for row in rows:
        out.add_row(*[_cell(value) for value in row])
    console.print(out)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return "-" if value is None else str(value)
