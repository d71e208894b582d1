"""Mean pooling or [CLS]: which head makes the better IMDB teacher?

Fine-tunes the MiniLM teacher once per pooling with the task's own settings
(``task=imdb``: word pieces, strategy, learning rates, epochs) on a
stratified subset of the training reviews, and compares them on the full
validation split (the choice is made there) and a subset of the test set.
Teachers go into the teacher store, so a rerun reuses them. Writes
results/imdb-pooling/pooling.json and pooling.md.

Rerun: ``python scripts/teacher_pooling.py`` (KDTL_DATA_DIR must hold the
IMDB archive; see the README).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import REPO, provenance, write  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=4000, help="training reviews (stratified subset)")
    parser.add_argument("--test", type=int, default=5000, help="test reviews (stratified subset)")
    parser.add_argument("--poolings", default="mean,cls")
    parser.add_argument("--out", type=Path, default=REPO / "results" / "imdb-pooling")
    parser.add_argument("overrides", nargs="*", help="further kdtl config overrides")
    args = parser.parse_args()
    started = time.perf_counter()

    from kdtl import console, precision, teachers
    from kdtl.cli import compose_jobs
    from kdtl.config import validate
    from kdtl.data import DATASETS
    from kdtl.train import _choose_precision

    rows = []
    for pooling in args.poolings.split(","):
        overrides = ["task=imdb", f"teacher.pooling={pooling}", f"data.limit_train={args.train}",
                     f"data.limit_test={args.test}", "trainer.progress=lines", *args.overrides]
        [(_, cfg)] = compose_jobs(overrides, multirun=False)
        cfg = validate(cfg)
        data = DATASETS.get(cfg.data.name).factory.load(cfg.data, cfg.paths)
        policy, why = _choose_precision(cfg, "teacher", data)
        console.info(f"pooling {pooling}: precision {policy} ({why})")
        precision.apply(policy)
        teacher = teachers.prepare(cfg, data, policy, live=False)
        rows.append({"pooling": pooling, "precision": policy, "source": teacher.source,
                     "store": str(teacher.path), **teacher.metrics,
                     "sizes": data.sizes(), "overrides": overrides})

    best = max(rows, key=lambda r: r["validation_accuracy"])
    sizes = rows[0]["sizes"]
    lines = ["# IMDB teacher: mean pooling vs [CLS]", "",
             f"MiniLM-L6 fine-tuned with the `task=imdb` settings on {sizes['train']:,} training "
             f"reviews; validation on {sizes['validation']:,}, test on a {sizes['test']:,}-review "
             "subset. Chosen on validation."
             + (f" Overrides: `{' '.join(args.overrides)}`." if args.overrides else ""), "",
             "| pooling | validation accuracy | test accuracy | fine-tuning s |", "|---|---|---|---|"]
    lines += [f"| {r['pooling']}{' (chosen)' if r is best else ''} | {r['validation_accuracy']:.4f} "
              f"| {r['test_accuracy']:.4f} | {r.get('train_seconds', '')} |" for r in rows]
    payload = {"provenance": provenance(started), "chosen": best["pooling"], "results": rows}
    write(args.out, "pooling", payload, "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
