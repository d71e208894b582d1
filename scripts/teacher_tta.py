"""How much would test-time augmentation add to a stored image teacher?

Loads the teacher a finished ``kdtl train`` run used (its stored weights, its
precision) and scores it on the run's validation and test splits three ways,
whatever the run used: on the images as they are; on the mean of its logits
for each image and its left-right mirror (kdtl's ``teacher.tta=flip``, two
forward passes); and with ``teacher.tta=flip_translate`` (six): is the
test-time augmentation worth its extra forward passes? Writes
``<run>/tta.json`` and ``tta.md`` (or ``--out``).

Rerun: ``python scripts/teacher_tta.py results/cifar10-end-to-end-resnet9``
(KDTL_DATA_DIR must hold the dataset the run used). For a run stopped once
its teacher was stored (no ``summary.json`` yet), name the stored teacher and
its precision: ``--teacher ~/.cache/kdtl/teachers/<name>-<key> --precision float32``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import provenance, write  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a finished kdtl run folder whose teacher is stored")
    parser.add_argument("--out", type=Path, help="folder to write (default: the run folder)")
    parser.add_argument("--teacher", type=Path, help="a stored teacher folder (default: the run's)")
    parser.add_argument("--precision", help="the stored teacher's precision policy (default: the run's)")
    args = parser.parse_args()
    started = time.perf_counter()

    from omegaconf import OmegaConf

    from kdtl import precision
    from kdtl.config import validate
    from kdtl.data import DATASETS
    from kdtl.models import build_teacher
    from kdtl.teachers import WEIGHTS, evaluate, score, with_tta

    if args.teacher:
        if not args.precision:
            sys.exit("error: --teacher needs --precision (the policy the teacher was trained in)")
        meta = json.loads((args.teacher / "meta.json").read_text())
        summary = {"teacher": {"name": meta["teacher"]["name"], "key": meta["key"],
                               "path": str(args.teacher), "tta": meta["teacher"].get("tta")},
                   "teacher_precision": args.precision}
    else:
        summary = json.loads((args.run / "summary.json").read_text())
    if not summary.get("teacher") or not summary["teacher"].get("path"):
        sys.exit(f"error: {args.run} used no stored teacher")
    cfg = validate(OmegaConf.load(args.run / "config.yaml"))
    data = DATASETS.get(cfg.data.name).factory.load(cfg.data, cfg.paths)
    if data.kind != "image":
        sys.exit(f"error: flipping needs images; {cfg.data.name} holds {data.kind}")
    precision.apply(summary["teacher_precision"])
    built = build_teacher(cfg.teacher, data)
    built.model.load_weights(Path(summary["teacher"]["path"]) / WEIGHTS)
    batch_size = cfg.trainer.eval_batch_size
    flip = score(built, with_tta(built, "flip"), data, batch_size)  # also scores it as is
    translate = with_tta(built, "flip_translate")
    rows = {name: {"plain": flip[f"{name}_accuracy_single_view"], "flip_tta": flip[f"{name}_accuracy"],
                   "flip_translate_tta": evaluate(translate, split, batch_size),
                   "examples": len(split)}
            for name, split in (("validation", data.validation), ("test", data.test))}
    print(rows, flush=True)

    teacher = summary["teacher"]
    lines = [f"# Test-time augmentation for the {teacher['name']} teacher of {args.run}", "",
             "| split | examples | as is | flip: mean of image and mirror | flip_translate: "
             "and of one-pixel shifts |", "|---|---|---|---|---|"]
    for name, row in rows.items():
        lines.append(f"| {name} | {row['examples']:,} | {row['plain']:.4f} | {row['flip_tta']:.4f} | "
                     f"{row['flip_translate_tta']:.4f} |")
    lines += ["", f"Teacher {teacher['key']} from {teacher['path']}, precision "
              f"{summary['teacher_precision']}. The run itself used teacher.tta="
              f"{teacher.get('tta') or 'null'}."]
    payload = {"run": str(args.run), "teacher": teacher["key"], "splits": rows,
               "provenance": provenance(started)}
    write(args.out or args.run, "tta", payload, "\n".join(lines))


if __name__ == "__main__":
    main()
