"""Is the input pipeline ever the bottleneck? Samples/s of each training
pipeline (kdtl.pipeline.train_dataset: gather, augmentation, batching,
prefetch) next to the student's training samples/s on the same batches.
The pipeline must be at least 3x faster than the student consumes it.

Uses the real datasets when KDTL_DATA_DIR holds them (as in CI), else
generated stand-ins of the same shapes. Writes results/bench/data.json and
data.md. Rerun: ``python scripts/bench_data.py``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import REPO, provenance, update_readme, write  # noqa: E402


import kdtl  # noqa: E402,F401
import keras  # noqa: E402

from kdtl import precision  # noqa: E402
from kdtl.cli import compose_jobs  # noqa: E402
from kdtl.config import validate  # noqa: E402
from kdtl.data import DATASETS  # noqa: E402
from kdtl.distiller import Distiller  # noqa: E402
from kdtl.models import build_student  # noqa: E402
from kdtl.pipeline import train_dataset  # noqa: E402

TASKS = {"synthetic": [], "cifar10": [], "imdb": ["student.embedding_init=random"]}
TARGET = 3.0


def load(task: str, extra: list[str]):
    [(_, cfg)] = compose_jobs([f"task={task}", *extra], multirun=False)
    cfg = validate(cfg)
    return cfg, DATASETS.get(cfg.data.name).factory.load(cfg.data, cfg.paths)


def pipeline_rate(dataset, steps: int, batch: int) -> float:
    iterator = iter(dataset)
    for _ in range(3):  # warm-up: tracing, first prefetch
        next(iterator)
    started = time.perf_counter()
    for _ in range(steps):
        next(iterator)
    return steps * batch / (time.perf_counter() - started)


def student_rate(model, dataset, steps: int, batch: int) -> float:
    distiller = Distiller(model, alpha=0.0)
    distiller.compile(optimizer="adam", jit_compile=False)
    distiller.fit(dataset, epochs=1, steps_per_epoch=3, verbose=0)
    started = time.perf_counter()
    distiller.fit(dataset, epochs=1, steps_per_epoch=steps, verbose=0)
    return steps * batch / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default=",".join(TASKS))
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--out", type=Path, default=REPO / "results" / "bench")
    args = parser.parse_args()
    started = time.perf_counter()
    policy, why = precision.resolve("auto")
    precision.apply(policy)
    rows = {}
    for task in args.tasks.split(","):
        if task != "synthetic" and not os.environ.get("KDTL_DATA_DIR"):
            print(f"{task}: skipped (KDTL_DATA_DIR is not set)")
            continue
        cfg, data = load(task, TASKS[task])
        batch = cfg.trainer.batch_size
        keras.utils.set_random_seed(0)
        student = build_student(cfg.student, data)
        encode_started = time.perf_counter()
        x = student.encode(data.train.inputs)
        encode_seconds = time.perf_counter() - encode_started
        epochs = 1 + (args.steps + 10) * batch // len(data.train)
        dataset, _ = train_dataset(x, data.train.labels, batch_size=batch, seed=0, epochs=epochs,
                                   augment=data.augment)
        pipe = pipeline_rate(dataset, args.steps, batch)
        train = student_rate(student.model, dataset, args.steps, batch)
        rows[task] = {"student": cfg.student.name, "batch_size": batch, "augment": data.augment is not None,
                      "pipeline_samples_per_s": round(pipe, 1), "student_samples_per_s": round(train, 1),
                      "ratio": round(pipe / train, 2), "encode_train_split_seconds": round(encode_seconds, 2),
                      "train_examples": len(data.train), "source": data.source}
        print(task, rows[task], flush=True)
    lines = ["# Input pipeline vs student training", "",
             f"Training batches from `kdtl.pipeline.train_dataset` (gather, augmentation, batching, "
             f"prefetch) against a direct-training step of the task's default student, in "
             f"{policy}. Target: the pipeline at least {TARGET:.0f}x faster.", "",
             "| task | student | batch | augmented | pipeline samples/s | student samples/s | ratio | "
             "one-off encoding of train (s) |", "|---|---|---|---|---|---|---|---|"]
    for task, r in rows.items():
        flag = "" if r["ratio"] >= TARGET else " (below target)"
        lines.append(f"| {task} | {r['student']} | {r['batch_size']} | {r['augment']} | "
                     f"{r['pipeline_samples_per_s']:,.0f} | {r['student_samples_per_s']:,.0f} | "
                     f"{r['ratio']:.1f}{flag} | {r['encode_train_split_seconds']} |")
    payload = {"provenance": provenance(started), "precision": policy, "target_ratio": TARGET,
               "results": rows}
    write(args.out, "data", payload, "\n".join(lines))
    if args.out.resolve() == (REPO / "results" / "bench").resolve():
        update_readme("### " + (args.out / "data.md").read_text()[2:], marker="bench-data")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
