"""Run-folder checkpoints: everything needed to resume a run.

``checkpoints/last/`` holds the student's weights, the optimizer's variables
(moments, step counter, hence the learning-rate schedule's position) and a
``state.json`` with the epoch reached, the best validation score so far and
the hash of the config; ``checkpoints/best/`` holds the weights of the best
epoch. Data order and augmentation derive from ``(seed, epoch)`` (see
``kdtl.pipeline``), so the epoch number is the RNG state that matters.

Each checkpoint is written to a temporary folder and renamed into place, so a
run killed at any moment leaves either the old or the new checkpoint whole.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from kdtl.errors import UserError

WEIGHTS = "student.weights.h5"
OPTIMIZER = "optimizer.npz"
STATE = "state.json"


def _replace_dir(tmp: Path, final: Path) -> None:
    old = final.with_name(final.name + ".old")
    if old.exists():
        shutil.rmtree(old)
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    if old.exists():
        shutil.rmtree(old)


def save(folder: Path, student, optimizer, state: dict[str, Any]) -> None:
    folder = Path(folder)
    tmp = folder.with_name(folder.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    student.save_weights(tmp / WEIGHTS)
    if optimizer is not None:
        arrays = {f"{i:04d}": np.asarray(v.numpy()) for i, v in enumerate(optimizer.variables)}
        np.savez(tmp / OPTIMIZER, **arrays)
    with open(tmp / STATE, "w") as f:
        json.dump(state, f, indent=2)
        f.flush()
        os.fsync(f.fileno())
    _replace_dir(tmp, folder)


def find(folder: Path) -> Path | None:
    """The complete checkpoint at ``folder``, or the one a killed rename left
    behind as ``folder.old``; ``None`` when there is none."""
    folder = Path(folder)
    for candidate in (folder, folder.with_name(folder.name + ".old")):
        if (candidate / STATE).is_file() and (candidate / WEIGHTS).is_file():
            return candidate
    return None


def read_state(folder: Path) -> dict[str, Any]:
    with open(Path(folder) / STATE) as f:
        return json.load(f)


def restore(folder: Path, student, optimizer) -> dict[str, Any]:
    """Loads weights (and optimizer variables when saved) and returns the state."""
    folder = Path(folder)
    student.load_weights(folder / WEIGHTS)
    if optimizer is not None and (folder / OPTIMIZER).is_file():
        optimizer.build(student.trainable_variables)
        with np.load(folder / OPTIMIZER) as saved:
            arrays = [saved[key] for key in sorted(saved.files)]
        variables = optimizer.variables
        if len(arrays) != len(variables) or any(
                tuple(a.shape) != tuple(v.shape) for a, v in zip(arrays, variables)):
            raise UserError(f"the optimizer state in {folder} does not match this optimizer; "
                            "start the run over with trainer.resume=false")
        for variable, array in zip(variables, arrays):
            variable.assign(array)
    return read_state(folder)
