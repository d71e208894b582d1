"""scripts/task_summary.py: the figures table marks each target from the runs' own numbers."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "task_summary.py"


def _run_folder(folder: Path, alpha: float, student_accuracy: float, wall_seconds: float,
                teacher_accuracy: float = 0.91) -> Path:
    folder.mkdir(parents=True)
    model = {"parameters": 10, "saved_bytes": 1000, "latency_ms_per_example": {"batch_1": 1.0, "batch_64": 0.1}}
    (folder / "summary.json").write_text(json.dumps({
        "task": "toy", "alpha": alpha, "temperature": 2.0, "seed": 0, "epochs": 3,
        "teacher_logits": "cached" if alpha else "none", "wall_seconds": wall_seconds,
        "finished": "2026-12-05T00:00:00+0000", "command": f"kdtl train distill.alpha={alpha}",
        "student": {"name": "s", "test_accuracy": student_accuracy, **model},
        "teacher": {"name": "t", "test_accuracy": teacher_accuracy, "source": "trained", **model}}))
    return folder


def test_targets_are_marked_met_or_missed(tmp_path):
    distilled = _run_folder(tmp_path / "distilled", 0.5, 0.87, wall_seconds=3000)
    direct = _run_folder(tmp_path / "direct", 0.0, 0.86, wall_seconds=100)
    subprocess.run([sys.executable, str(SCRIPT), str(distilled), str(direct), "--out", str(tmp_path / "out"),
                    "--teacher-target", "0.90", "--student-target", "0.88", "--minutes-target", "60"],
                   check=True, capture_output=True)
    figures = json.loads((tmp_path / "out" / "figures.json").read_text())
    met = {t["target"].split(" (")[0]: t["met"] for t in figures["targets"]}
    assert met == {"teacher test accuracy >= 0.9": True,
                   "student distilled test accuracy >= 0.88": False,
                   "student distilled above the same student trained directly": True,
                   "distillation run end to end <= 60 min": True}
    assert "MISSED: student distilled test accuracy >= 0.88" in (tmp_path / "out" / "figures.md").read_text()


@pytest.mark.parametrize("right, met", [(9000, True), (8999, False)])
def test_a_float32_accuracy_on_the_target_meets_it(tmp_path, right, met):
    """Keras records 9,000 right of 10,000 as float32 0.9, below 0.9 as a double."""
    recorded = float(np.float32(right) / np.float32(10000))
    assert recorded < 0.9  # both, as doubles
    distilled = _run_folder(tmp_path / "distilled", 0.5, 0.87, 3000, teacher_accuracy=recorded)
    direct = _run_folder(tmp_path / "direct", 0.0, 0.86, wall_seconds=100)
    subprocess.run([sys.executable, str(SCRIPT), str(distilled), str(direct), "--out", str(tmp_path / "out"),
                    "--teacher-target", "0.90"], check=True, capture_output=True)
    figures = json.loads((tmp_path / "out" / "figures.json").read_text())
    assert figures["targets"][0]["met"] is met


def test_runs_of_different_seeds_are_refused(tmp_path):
    distilled = _run_folder(tmp_path / "distilled", 0.5, 0.87, wall_seconds=3000)
    direct = _run_folder(tmp_path / "direct", 0.0, 0.86, wall_seconds=100)
    summary = json.loads((direct / "summary.json").read_text())
    (direct / "summary.json").write_text(json.dumps({**summary, "seed": 1}))
    result = subprocess.run([sys.executable, str(SCRIPT), str(distilled), str(direct), "--out", str(tmp_path)],
                            capture_output=True, text=True)
    assert result.returncode != 0 and "differ in seed or epochs" in result.stderr
