"""Keras callbacks: the run's files (metrics, checkpoints) and its progress bar."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import keras
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from kdtl import checkpoint
from kdtl.console import console

SHOWN = ("loss", "student_loss", "distillation_loss", "accuracy")


def _floats(logs: dict[str, Any] | None) -> dict[str, float]:
    return {key: float(value) for key, value in (logs or {}).items()}


class RunRecorder(keras.callbacks.Callback):
    """After each epoch: a line in ``metrics.jsonl``, then the ``last``
    checkpoint, and ``best`` when the monitored validation metric improved.

    The line goes first: a run killed between the two resumes from the older
    checkpoint and drops the extra line (see :func:`truncate_metrics`).
    """

    def __init__(self, run_dir: Path, student, samples_per_epoch: int, monitor: str,
                 state: dict[str, Any], config_hash: str):
        super().__init__()
        self.run_dir = Path(run_dir)
        self.student = student
        self.samples_per_epoch = samples_per_epoch
        self.monitor = monitor
        self.mode = "min" if "loss" in monitor else "max"
        self.best = state.get("best")
        self.best_epoch = state.get("best_epoch")
        self.config_hash = config_hash
        self.started = time.perf_counter()

    def on_epoch_begin(self, epoch, logs=None):
        self.started = time.perf_counter()

    def _improved(self, value: float) -> bool:
        if self.best is None or math.isnan(self.best):
            return not math.isnan(value)
        return value < self.best if self.mode == "min" else value > self.best

    def on_epoch_end(self, epoch, logs=None):
        seconds = time.perf_counter() - self.started
        logs = _floats(logs)
        optimizer = self.model.optimizer
        record = {"epoch": epoch + 1,
                  "train": {k: v for k, v in logs.items() if not k.startswith("val_")},
                  "validation": {k[4:]: v for k, v in logs.items() if k.startswith("val_")},
                  "learning_rate": float(keras.ops.convert_to_numpy(optimizer.learning_rate)),
                  "seconds": round(seconds, 3),
                  "samples_per_s": round(self.samples_per_epoch / seconds, 1) if seconds > 0 else None}
        with open(self.run_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
        value = logs.get(self.monitor, float("nan"))
        improved = self._improved(value)
        if improved:
            self.best, self.best_epoch = value, epoch + 1
        state = {"epoch": epoch + 1, "best": self.best, "best_epoch": self.best_epoch,
                 "monitor": self.monitor, "config_hash": self.config_hash}
        checkpoints = self.run_dir / "checkpoints"
        if improved:
            checkpoint.save(checkpoints / "best", self.student, None, state)
        checkpoint.save(checkpoints / "last", self.student, optimizer, state)


def truncate_metrics(path: Path, epochs: int) -> None:
    """Keep the first ``epochs`` lines of ``metrics.jsonl`` (resume)."""
    if not path.exists():
        return
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    kept = [line for line in lines if json.loads(line)["epoch"] <= epochs]
    path.write_text("".join(line + "\n" for line in kept))


class TeacherCheckpoint(keras.callbacks.Callback):
    """After each teacher epoch: the teacher's weights, the optimizer's
    variables and the history so far in ``folder`` (the store's ``.partial``
    folder), so a killed teacher stage resumes at the epoch it reached."""

    def __init__(self, folder: Path, model: keras.Model, optimizer, history: list[dict],
                 seconds: float):
        super().__init__()
        self.folder, self.teacher, self.optimizer = Path(folder), model, optimizer
        self.history, self.seconds = history, seconds
        self.started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        # A teacher trains on cross-entropy alone: its Distiller's distillation
        # terms are zero and its student_loss is its loss.
        kept = {k: round(v, 6) for k, v in _floats(logs).items()
                if not k.endswith(("distillation_loss", "student_loss"))}
        self.history.append({"epoch": epoch + 1, **kept})
        seconds = self.seconds + time.perf_counter() - self.started
        checkpoint.save(self.folder, self.teacher, self.optimizer,
                        {"epoch": epoch + 1, "history": self.history, "seconds": round(seconds, 1)})


class ProgressBar(keras.callbacks.Callback):
    """A rich bar per epoch with live losses and ETA on a terminal; a single
    line per epoch elsewhere (logs, CI)."""

    def __init__(self, stage: str, epochs: int, steps: int, live: bool, shown=SHOWN):
        super().__init__()
        self.stage, self.epochs, self.steps, self.live = stage, epochs, steps, live
        self.shown = shown
        self.progress: Progress | None = None
        self.task = None
        self.started = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self.started = time.perf_counter()
        self.epoch = epoch
        if self.live:
            self.progress = Progress(
                TextColumn(f"[bold]{self.stage}[/bold] epoch {epoch + 1}/{self.epochs}"),
                BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[metrics]}"),
                TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
                console=console, transient=False)
            self.progress.start()
            self.task = self.progress.add_task("train", total=self.steps, metrics="")

    def on_train_batch_end(self, batch, logs=None):
        if self.progress is not None:
            shown = " ".join(f"{k}={float(v):.4f}" for k, v in (logs or {}).items() if k in self.shown)
            self.progress.update(self.task, completed=batch + 1, metrics=shown)
        elif self.steps >= 100 and (batch + 1) % (self.steps // 10) == 0 and batch + 1 < self.steps:
            # In logs, long epochs still say how far they are, every 10%.
            elapsed = time.perf_counter() - self.started
            eta = elapsed / (batch + 1) * (self.steps - batch - 1)
            shown = " ".join(f"{k}={float(v):.4f}" for k, v in (logs or {}).items() if k in self.shown)
            console.print(f"{self.stage} epoch {self.epoch + 1}/{self.epochs} step {batch + 1}/{self.steps} "
                          f"{elapsed:.0f}s eta {eta:.0f}s {shown}")

    def on_epoch_end(self, epoch, logs=None):
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
        logs = _floats(logs)
        seconds = time.perf_counter() - self.started
        shown = " ".join(f"{k}={v:.4f}" for k, v in logs.items()
                         if k in self.shown or (k.startswith("val_") and k[4:] in ("loss", "accuracy")))
        console.print(f"{self.stage} epoch {epoch + 1}/{self.epochs} {seconds:.1f}s {shown}")
