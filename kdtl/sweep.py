"""Sweep summaries: after ``kdtl train -m ...``, one table and one plot.

A Hydra callback (configured in ``conf/hydra/default.yaml``) runs when the
multirun ends and writes, into the sweep folder, ``sweep.csv``, ``sweep.md``
and ``sweep.png`` (accuracy against alpha, one line per temperature), and
prints the table. ``kdtl report DIR`` rebuilds them from the folders.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import yaml
from hydra.experimental.callback import Callback

COLUMNS = ["member", "status", "alpha", "temperature", "seed", "validation_accuracy",
           "test_accuracy", "teacher_test_accuracy", "best_epoch", "epochs", "fit_seconds", "error"]


def collect(sweep_dir: Path) -> list[dict[str, Any]]:
    """One row per member folder (any folder with Hydra's ``overrides.yaml``)."""
    rows = []
    for overrides_file in sorted(Path(sweep_dir).glob("*/.hydra/overrides.yaml")):
        member = overrides_file.parent.parent
        overrides = yaml.safe_load(overrides_file.read_text()) or []
        row: dict[str, Any] = {"member": member.name, "overrides": " ".join(overrides)}
        summary, failed = member / "summary.json", member / "failed.json"
        if summary.is_file():
            s = json.loads(summary.read_text())
            row.update(status="finished", alpha=s["alpha"], temperature=s["temperature"], seed=s["seed"],
                       validation_accuracy=s["student"]["validation_accuracy"],
                       test_accuracy=s["student"]["test_accuracy"],
                       teacher_test_accuracy=(s.get("teacher") or {}).get("test_accuracy"),
                       best_epoch=s["best_epoch"], epochs=s["epochs"], fit_seconds=s["fit_seconds"])
        elif failed.is_file():
            row.update(status="failed", error=json.loads(failed.read_text())["error"])
        else:
            row.update(status="unfinished")
        rows.append(row)
    return rows


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return "" if value is None else str(value)


def write(sweep_dir: Path, rows: list[dict[str, Any]]) -> None:
    sweep_dir = Path(sweep_dir)
    columns = ["member", "overrides", *COLUMNS[1:]]
    with open(sweep_dir / "sweep.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: row.get(k) for k in columns})
    shown = ["overrides", "status", "validation_accuracy", "test_accuracy", "best_epoch", "fit_seconds"]
    lines = ["| " + " | ".join(shown) + " |", "|" + "---|" * len(shown)]
    for row in rows:
        cells = [_fmt(row.get(k)) for k in shown]
        if row["status"] == "failed":
            cells[1] = f"failed: {row.get('error', '')}".replace("|", "/")
        lines.append("| " + " | ".join(cells) + " |")
    best = max((r for r in rows if r["status"] == "finished"),
               key=lambda r: r["validation_accuracy"] or 0, default=None)
    note = (f"\nBest by validation accuracy: `{best['overrides']}` "
            f"(validation {best['validation_accuracy']:.4f}, test {best['test_accuracy']:.4f}).\n"
            if best else "\nNo member finished.\n")
    (sweep_dir / "sweep.md").write_text(f"# Sweep {sweep_dir}\n\n" + "\n".join(lines) + "\n" + note)
    plot(sweep_dir / "sweep.png", rows)


def plot(path: Path, rows: list[dict[str, Any]]) -> bool:
    """Validation (solid) and test (dashed) accuracy against alpha, a line per
    temperature; nothing when fewer than two alphas finished."""
    done = [r for r in rows if r["status"] == "finished"]
    if len({r["alpha"] for r in done}) < 2:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 4), dpi=120)
    for index, temperature in enumerate(sorted({r["temperature"] for r in done})):
        members = sorted((r for r in done if r["temperature"] == temperature), key=lambda r: r["alpha"])
        alphas = [r["alpha"] for r in members]
        color = f"C{index}"
        axes.plot(alphas, [r["validation_accuracy"] for r in members], "o-", color=color,
                  label=f"T={temperature:g} validation")
        axes.plot(alphas, [r["test_accuracy"] for r in members], "s--", color=color, alpha=0.6,
                  label=f"T={temperature:g} test")
    axes.set_xlabel("alpha (weight of the distillation loss)")
    axes.set_ylabel("student accuracy")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return True


def summarize(sweep_dir: Path) -> list[dict[str, Any]]:
    from kdtl import console

    rows = collect(sweep_dir)
    write(sweep_dir, rows)
    console.table(f"sweep: {sweep_dir}", ["overrides", "status", "val accuracy", "test accuracy", "best epoch"],
                  [[r["overrides"], r["status"], r.get("validation_accuracy"), r.get("test_accuracy"),
                    r.get("best_epoch")] for r in rows])
    console.info(f"wrote {sweep_dir / 'sweep.csv'}, sweep.md and sweep.png")
    return rows


class SweepSummary(Callback):
    """Hydra callback: summarise the sweep once every member has run."""

    def on_multirun_end(self, config, **kwargs) -> None:
        summarize(Path(config.hydra.sweep.dir))
