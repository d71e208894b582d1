"""One task's figures from its run folders: teacher, student direct, student
distilled, and the targets they are held to.

Reads the ``summary.json`` of a distillation run and of the direct run of
the same student (``distill.alpha=0``, same epochs and seed) and writes
``results/<task>/figures.json`` and ``figures.md``: test accuracy, parameters, saved
size and CPU latency per example of each model, the distillation run's wall
time (teacher fine-tuning and logit labelling included when that run did
them), and each target marked met or missed. Nothing is computed here that
the runs did not record.

Example (the IMDB figures in results/imdb/)::

    kdtl train task=imdb hydra.run.dir=results/imdb-end-to-end
    kdtl train task=imdb distill.alpha=0 hydra.run.dir=results/imdb-direct
    python scripts/task_summary.py results/imdb-end-to-end results/imdb-direct \\
        --teacher-target 0.90 --student-target 0.88 --minutes-target 60
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import REPO, provenance, write  # noqa: E402


def _load(folder: Path) -> dict:
    path = folder / "summary.json"
    if not path.is_file():
        sys.exit(f"error: {path} does not exist; is {folder} a finished kdtl run?")
    return json.loads(path.read_text())


def _row(label: str, model: dict) -> dict:
    latency = model.get("latency_ms_per_example") or {}
    return {"model": label, "name": model["name"], "test_accuracy": model["test_accuracy"],
            "parameters": model["parameters"], "saved_bytes": model["saved_bytes"],
            "ms_per_example_batch_1": latency.get("batch_1"),
            "ms_per_example_batch_64": latency.get("batch_64")}


def _at_least(accuracy: float, target: float) -> bool:
    """Keras accumulates accuracy in float32, so 9,000 right of 10,000 is
    recorded as 0.89999998: compare at that precision, where it is 0.9."""
    return bool(np.float32(accuracy) >= np.float32(target))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("distilled", type=Path, help="run folder of the distillation run")
    parser.add_argument("direct", type=Path, help="run folder of the same student trained directly")
    parser.add_argument("--out", type=Path, help="folder to write (default: results/<task>)")
    parser.add_argument("--teacher-target", type=float)
    parser.add_argument("--student-target", type=float)
    parser.add_argument("--minutes-target", type=float)
    args = parser.parse_args()
    started = time.perf_counter()

    distilled, direct = _load(args.distilled), _load(args.direct)
    if distilled["alpha"] <= 0 or direct["alpha"] != 0:
        sys.exit("error: the first folder must be a distillation run (alpha > 0), the second a "
                 "direct one (alpha = 0)")
    if (distilled["seed"], distilled["epochs"]) != (direct["seed"], direct["epochs"]):
        sys.exit(f"error: the runs differ in seed or epochs ({distilled['seed']}/{distilled['epochs']} vs "
                 f"{direct['seed']}/{direct['epochs']}); compare like with like")
    teacher = distilled["teacher"]
    tta = teacher.get("tta")
    rows = [_row(f"teacher, {tta} TTA" if tta else "teacher", teacher),
            _row("student direct", direct["student"]),
            _row(f"student distilled (alpha={distilled['alpha']:g}, T={distilled['temperature']:g})",
                 distilled["student"])]
    minutes = distilled["wall_seconds"] / 60
    checks = []
    if args.teacher_target is not None:
        checks.append((f"teacher test accuracy >= {args.teacher_target:g}"
                       + (f" (with {tta} TTA; {teacher['test_accuracy_single_view']:.4f} without)"
                          if tta else ""),
                       _at_least(teacher["test_accuracy"], args.teacher_target)))
    if args.student_target is not None:
        checks.append((f"student distilled test accuracy >= {args.student_target:g}",
                       _at_least(distilled["student"]["test_accuracy"], args.student_target)))
    checks.append(("student distilled above the same student trained directly",
                   distilled["student"]["test_accuracy"] > direct["student"]["test_accuracy"]))
    if args.minutes_target is not None:
        checks.append((f"distillation run end to end <= {args.minutes_target:g} min "
                       f"(teacher {'trained in it' if teacher['source'] == 'trained' else 'reused'})",
                       minutes <= args.minutes_target))

    task = distilled["task"]
    lines = [f"# {task}: teacher, student direct, student distilled", "",
             "| model | test accuracy | parameters | saved MB | CPU ms/example @1 | @64 |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {r['model']} ({r['name']}) | {r['test_accuracy']:.4f} | {r['parameters']:,} | "
              f"{r['saved_bytes'] / 1e6:.1f} | {r['ms_per_example_batch_1']} | "
              f"{r['ms_per_example_batch_64']} |" for r in rows]
    lines += ["", f"Distillation run: {minutes:.1f} min wall end to end, seed {distilled['seed']}, "
              f"{distilled['epochs']} epochs, teacher logits {distilled['teacher_logits']}; "
              f"finished {distilled['finished']}.", "",
              *[f"- {'met' if ok else 'MISSED'}: {what}" for what, ok in checks], "",
              f"Runs: `{distilled.get('command', '?')}` in {args.distilled}; "
              f"`{direct.get('command', '?')}` in {args.direct}."]
    out = args.out or REPO / "results" / task
    payload = {"provenance": provenance(started), "task": task, "rows": rows,
               "distilled_wall_minutes": round(minutes, 1),
               "targets": [{"target": what, "met": ok} for what, ok in checks],
               "runs": {"distilled": str(args.distilled), "direct": str(args.direct)}}
    write(out, "figures", payload, "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
