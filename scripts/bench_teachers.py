"""What a CIFAR-10 teacher costs per epoch on this machine.

For each image teacher (and the VGG student for scale), built by kdtl from the
``task=cifar10`` config with the given overrides, the median over repeats of
the time of a training step through kdtl's Distiller (``alpha=0``: plain
training, as in the teacher stage) and of a forward pass (labelling views,
evaluation), on one fixed batch after a warm-up. Reports milliseconds per
example and the seconds one epoch of the 45,000 training images takes.
Writes results/bench/teachers.json and teachers.md.
Rerun: ``python scripts/bench_teachers.py``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import REPO, provenance, write  # noqa: E402

import numpy as np  # noqa: E402

import kdtl  # noqa: E402,F401
import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from kdtl.cli import compose_jobs  # noqa: E402
from kdtl.config import validate  # noqa: E402
from kdtl.data import DataBundle, Split  # noqa: E402
from kdtl.distiller import STUDENT, Distiller  # noqa: E402
from kdtl.models import build_student, build_teacher  # noqa: E402

PLAIN = ["teacher.whiten=null", "teacher.activation=null", "teacher.bn_scale=null",
         "teacher.pool_first=null", "teacher.ghost_batch=null"]
MODELS = {
    "resnet (He et al., depth 20, widths 32/64/128)": ("teacher", ["teacher=resnet"]),
    "resnet9 (Page 2018, widths 32/64/128/256)": ("teacher", ["teacher=resnet9", *PLAIN]),
    "resnet9 (Page 2018, widths 64/128/256/512)": ("teacher", ["teacher=resnet9", *PLAIN,
                                                               "teacher.widths=[64,128,256,512]"]),
    "resnet9 (32/64/128/256) + whiten, celu, frozen BN scale": (
        "teacher", ["teacher=resnet9", "teacher.pool_first=null", "teacher.ghost_batch=null"]),
    "resnet9 (32/64/128/256) + whiten, celu, frozen BN scale, pool first": (
        "teacher", ["teacher=resnet9", "teacher.ghost_batch=null"]),
    "resnet9 (32/64/128/256) + whiten, celu, frozen BN scale, pool first, ghost batch norm (default)": (
        "teacher", ["teacher=resnet9"]),
    "vgg student (32/64/128)": ("student", []),
}
EPOCH = 45_000  # CIFAR-10 training images after the 10% validation split


def build(role: str, overrides: list[str], data):
    [(_, cfg)] = compose_jobs(["task=cifar10", "data.path=.", *overrides], multirun=False)
    cfg = validate(cfg)
    keras.utils.set_random_seed(0)
    if role == "teacher":
        return build_teacher(cfg.teacher, data).model
    return build_student(cfg.student, data).model


def timed(fn, steps: int, repeats: int) -> float:
    """Median seconds per call of ``fn`` over ``repeats`` runs of ``steps`` calls."""
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(steps):
            fn()
        runs.append((time.perf_counter() - start) / steps)
    return statistics.median(runs)


def measure(role, overrides, batch_size: int, steps: int, repeats: int) -> dict:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (batch_size, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, batch_size).astype(np.int32)
    split = Split(images, labels)
    data = DataBundle("cifar10", "image", 10, [str(i) for i in range(10)], split, split, split,
                      input_shape=(32, 32, 3))
    model = build(role, overrides, data)
    trainer = Distiller(model, alpha=0.0)
    trainer.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9, nesterov=True))
    x, y = tf.constant(images), tf.constant(labels)
    batch = ({STUDENT: x}, y)
    step = tf.function(trainer.train_step)
    forward = tf.function(lambda: model(x, training=False))
    for _ in range(3):  # trace and warm up
        step(batch)
        forward()
    train = timed(lambda: step(batch), steps, repeats)
    infer = timed(forward, steps, repeats)
    return {"parameters": int(model.count_params()),
            "train_ms_per_example": round(1000 * train / batch_size, 3),
            "forward_ms_per_example": round(1000 * infer / batch_size, 3),
            "train_seconds_per_epoch": round(EPOCH * train / batch_size, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--precision", default="mixed_bfloat16",
                        help="Keras dtype policy (the teacher stage's choice here: mixed_bfloat16)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=REPO / "results" / "bench")
    parser.add_argument("--only", default=None,
                        help="measure only the models whose name contains this text (prints, writes nothing)")
    args = parser.parse_args()
    started = time.perf_counter()
    keras.mixed_precision.set_global_policy(args.precision)
    rows = {}
    for name, (role, overrides) in MODELS.items():
        if args.only and args.only not in name:
            continue
        rows[name] = measure(role, overrides, args.batch_size, args.steps, args.repeats)
        print(name, rows[name], flush=True)
    if args.only:
        return
    lines = [f"# CIFAR-10 models: training and forward cost ({args.precision}, batch {args.batch_size})",
             "", "| model | parameters | train ms/example | forward ms/example | s per 45k-image epoch |",
             "|---|---|---|---|---|"]
    for name, row in rows.items():
        lines.append(f"| {name} | {row['parameters']:,} | {row['train_ms_per_example']} | "
                     f"{row['forward_ms_per_example']} | {row['train_seconds_per_epoch']} |")
    lines += ["", "Steps on one fixed batch through kdtl's Distiller (alpha=0), median of "
              f"{args.repeats} repeats of {args.steps} steps after a warm-up; the input pipeline "
              "and evaluation are not included (see data.md for the pipeline)."]
    payload = {"precision": args.precision, "batch_size": args.batch_size, "models": rows,
               "provenance": provenance(started)}
    write(args.out, "teachers", payload, "\n".join(lines))


if __name__ == "__main__":
    main()
