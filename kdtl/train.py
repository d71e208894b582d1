"""``train(cfg, run_dir) -> summary``: one run, top to bottom.

data -> teacher (trained or fine-tuned once, then stored) -> student ->
Distiller.fit (checkpoint every epoch, resumable) -> best epoch -> test ->
``student.keras`` and ``summary.json``.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from omegaconf import DictConfig, OmegaConf

import kdtl
from kdtl import checkpoint, console, logit_cache, optimizers, precision, teachers
from kdtl.callbacks import SHOWN, ProgressBar, RunRecorder, truncate_metrics
from kdtl.data import DATASETS
from kdtl.config import canonical
from kdtl.distiller import Distiller
from kdtl.errors import ModelError, UserError
from kdtl.models import build_student, build_teacher
from kdtl.pipeline import augmented_view_logits, eval_dataset, train_dataset

# Settings that do not change what a run computes: a resumed run may differ in them.
NOT_HASHED = ("paths", "trainer.resume", "trainer.progress")
RUN_FILES = ("checkpoints", "metrics.jsonl", "summary.json", "student.keras", "tensorboard", "config.yaml",
             "teacher-meta.json")


def config_hash(cfg: DictConfig) -> str:
    plain = canonical(cfg)
    trainer = plain.get("trainer", {})
    if trainer.get("teacher_seed") == trainer.get("seed"):
        trainer.pop("teacher_seed", None)  # the same run as leaving it unset
    for dotted in NOT_HASHED:
        *parents, leaf = dotted.split(".")
        node = plain
        for parent in parents:
            node = node.get(parent, {})
        node.pop(leaf, None)
    return hashlib.sha256(json.dumps(plain, sort_keys=True, default=str).encode()).hexdigest()[:16]


def versions() -> dict[str, str]:
    return {"kdtl": kdtl.__version__, "tensorflow": tf.__version__, "keras": keras.__version__,
            "numpy": np.__version__, "python": platform.python_version()}


def cpu_model() -> str:
    """The CPU's marketing name where Linux tells it, else the architecture."""
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def machine() -> dict[str, Any]:
    with console.quiet_native_stderr():
        gpus = [d.name for d in tf.config.list_physical_devices("GPU")]
    return {"platform": platform.platform(), "processor": platform.machine(), "cpu": cpu_model(),
            "cpu_count": os.cpu_count(), "gpus": gpus}


def _write_json(path: Path, payload: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=str))
    os.replace(tmp, path)


def _live(cfg) -> bool:
    mode = cfg.trainer.progress
    return mode == "bar" or (mode == "auto" and console.interactive())


def _logit_source(cfg, augmented: bool) -> str:
    mode = cfg.distill.teacher_logits
    if mode == "auto":
        return "online" if augmented else "cached"
    if mode == "views" and not augmented:
        return "cached"  # without augmentation every view is the same
    # cached with augmentation is refused by config.validate, before any work.
    return mode


def _start_or_resume(cfg, run_dir: Path, digest: str) -> Path | None:
    """The last checkpoint to resume from (``None`` to start fresh)."""
    last = checkpoint.find(run_dir / "checkpoints" / "last")
    if last is None or not cfg.trainer.resume:
        for name in RUN_FILES:
            target = run_dir / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
        return None
    state = checkpoint.read_state(last)
    if state.get("config_hash") != digest:
        raise UserError(f"run folder {run_dir} holds a run with a different config; "
                        "pass trainer.resume=false to start it over, or choose another hydra.run.dir")
    return last


def _choose_precision(cfg, role: str, data, teacher=None, measure: bool = True):
    """``trainer.precision`` for one model; with ``auto``, the measured faster
    of float32 and the hardware's low precision (see ``precision.choose``)."""
    setting = cfg.trainer.precision
    if setting != "auto":
        return setting, "set in config"
    node = canonical(cfg[role])
    node.pop("checkpoint", None)
    batch = cfg.teacher.training.batch_size if role == "teacher" else cfg.trainer.batch_size
    key = hashlib.sha256(json.dumps([role, node, batch, data.name, str(data.input_shape),
                                     tf.__version__, machine()["platform"]],
                                    sort_keys=True, default=str).encode()).hexdigest()[:16]
    known = precision.choose(setting, role, key, None, None, None, cfg.paths.cache_dir, measure=False)
    if known[0] is not None or not measure:
        return known

    def build():
        if role == "teacher":
            return build_teacher(cfg.teacher, data)
        return build_student(cfg.student, data, teacher.built if teacher else None)

    sample = data.train.take(np.arange(min(batch, len(data.train))))
    x = build().encode(sample.inputs)
    return precision.choose(setting, role, key, lambda: build().model, x, sample.labels,
                            cfg.paths.cache_dir)


def train(cfg: DictConfig, run_dir: str | Path) -> dict[str, Any]:
    """Runs (or resumes, or reports) the run described by ``cfg`` in ``run_dir``."""
    wall_started = time.perf_counter()
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    digest = config_hash(cfg)
    summary_path = run_dir / "summary.json"
    if cfg.trainer.resume and summary_path.is_file():
        summary = json.loads(summary_path.read_text())
        if summary.get("config_hash") == digest:
            console.info(f"run already finished: {summary_path}")
            if not (run_dir / "config.yaml").exists():
                (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
            return summary
    resume_from = _start_or_resume(cfg, run_dir, digest)
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    live = _live(cfg)
    console.config_tree(cfg, title=f"kdtl {kdtl.__version__}: {run_dir}")

    data = DATASETS.get(cfg.data.name).factory.load(cfg.data, cfg.paths)
    console.info(f"data: {data.name} from {data.source}; " +
                 ", ".join(f"{k} {v:,}" for k, v in data.sizes().items()))

    alpha = cfg.distill.alpha
    # Direct training needs no teacher: report a stored one, but train none.
    teacher_policy, why = _choose_precision(cfg, "teacher", data, measure=alpha > 0)
    teacher = None
    if teacher_policy is not None:
        console.info(f"precision: teacher {teacher_policy} ({why})")
        precision.apply(teacher_policy)
        teacher = teachers.prepare(cfg, data, teacher_policy, live, train_if_missing=alpha > 0)
    policy, why = _choose_precision(cfg, "student", data, teacher=teacher)
    console.info(f"precision: student {policy} ({why})")
    precision.apply(policy)

    # A student may share the teacher's tokenizer and pretrained embeddings;
    # a direct run without a stored teacher then needs the untrained skeleton.
    teacher_built = teacher.built if teacher is not None else None
    if teacher_built is None and cfg.student.get("tokenizer") == "teacher":
        teacher_built = build_teacher(cfg.teacher, data)
    keras.utils.set_random_seed(cfg.trainer.seed)
    student = build_student(cfg.student, data, teacher_built)
    if student.model.output_shape[-1] != data.num_classes:
        raise ModelError(f"student outputs {student.model.output_shape[-1]} classes but the data "
                         f"has {data.num_classes}")
    if teacher is not None and teacher.model.count_params() < student.model.count_params():
        console.info("[yellow]warning:[/yellow] the student has more parameters than the teacher")
    inputs = {name: student.encode(getattr(data, name).inputs)
              for name in ("train", "validation", "test")}

    augment = data.augment
    logit_source = _logit_source(cfg, augmented=augment is not None) if alpha > 0 else "none"
    teacher_train_inputs = train_logits = validation_logits = None
    shared = False
    if alpha > 0:
        # The stored teacher's key leaves out its test-time augmentation, but
        # its logits depend on it: they get their own folder.
        tta = cfg.teacher.get("tta")
        folder = logit_cache.cache_folder(cfg.paths.cache_dir, f"{teacher.key}-{tta}" if tta else teacher.key,
                                          data.fingerprint)
        expected = {"teacher_key": teacher.key, "data_fingerprint": data.fingerprint, "tta": tta}

        def compute(split):
            return lambda: teachers.logits(teacher, getattr(data, split).inputs,
                                           cfg.trainer.eval_batch_size)

        validation_logits = logit_cache.load_or_compute(folder, "validation", expected, compute("validation"))
        if logit_source == "cached":
            train_logits = logit_cache.load_or_compute(folder, "train", expected, compute("train"))
        elif logit_source == "views":
            # canonical: a new augment setting left null keeps earlier views valid.
            views_expected = dict(expected, augment=canonical(cfg.data.get("augment")))
            train_inputs = teacher.built.encode(data.train.inputs)
            train_logits = np.stack([logit_cache.load_or_compute(
                folder, f"train_view{view}", dict(views_expected, view=view),
                lambda view=view: augmented_view_logits(teacher.model, train_inputs, augment, view,
                                                        cfg.trainer.eval_batch_size))
                for view in range(cfg.distill.views)])
        else:
            shared = teacher.built.encode is student.encode
            teacher_train_inputs = None if shared else teacher.built.encode(data.train.inputs)

    train_ds, steps = train_dataset(
        inputs["train"], data.train.labels, batch_size=cfg.trainer.batch_size,
        seed=cfg.trainer.seed, epochs=cfg.trainer.epochs,
        initial_epoch=checkpoint.read_state(resume_from)["epoch"] if resume_from else 0,
        teacher_inputs=teacher_train_inputs, teacher_logits=train_logits, augment=augment,
        shared_inputs=shared, views=cfg.distill.views if logit_source == "views" else None)
    validation_ds = eval_dataset(inputs["validation"], data.validation.labels,
                                 batch_size=cfg.trainer.eval_batch_size,
                                 teacher_logits=validation_logits)
    optimizer = optimizers.build(cfg.optimizer, steps, cfg.trainer.epochs)
    online_teacher = teacher.model if logit_source == "online" else None
    distiller = Distiller(student.model, online_teacher, alpha=alpha,
                          temperature=cfg.distill.temperature,
                          label_smoothing=cfg.distill.label_smoothing)
    distiller.compile(optimizer=optimizer, jit_compile=cfg.trainer.jit_compile)

    state: dict[str, Any] = {}
    if resume_from is not None:
        state = checkpoint.restore(resume_from, student.model, optimizer)
        truncate_metrics(run_dir / "metrics.jsonl", state["epoch"])
        console.info(f"resuming after epoch {state['epoch']} from {resume_from}")
    initial_epoch = state.get("epoch", 0)
    console.info(f"student: {cfg.student.name} ({student.model.count_params():,} parameters); "
                 f"alpha={alpha} temperature={cfg.distill.temperature} teacher logits: {logit_source}")

    fit_started = time.perf_counter()
    if initial_epoch < cfg.trainer.epochs:
        callbacks = [
            RunRecorder(run_dir, student.model, len(data.train), cfg.trainer.monitor, state, digest),
            keras.callbacks.TensorBoard(log_dir=str(run_dir / "tensorboard")),
            ProgressBar("student", cfg.trainer.epochs, steps, live,
                        SHOWN if alpha > 0 else ("loss", "accuracy")),
        ]
        distiller.fit(train_ds, epochs=cfg.trainer.epochs, initial_epoch=initial_epoch,
                      steps_per_epoch=steps, validation_data=validation_ds, callbacks=callbacks,
                      shuffle=False, verbose=0)
    fit_seconds = time.perf_counter() - fit_started

    best = checkpoint.find(run_dir / "checkpoints" / "best")
    best_state = checkpoint.read_state(best) if best else {}
    if best is not None:
        student.model.load_weights(best / checkpoint.WEIGHTS)
    test_ds = eval_dataset(inputs["test"], data.test.labels, batch_size=cfg.trainer.eval_batch_size)
    test = distiller.evaluate(test_ds, verbose=0, return_dict=True)
    student_path = run_dir / "student.keras"
    student.model.save(student_path)
    sample = data.test.take(np.arange(min(64, len(data.test))))
    student_latency = latency(student.model, student.encode(sample.inputs))
    teacher_latency = latency(teacher.model, teacher.built.encode(sample.inputs)) if teacher else None

    history = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    summary = {
        "task": cfg.task.name,
        "run_dir": str(run_dir),
        "status": "finished",
        "config_hash": digest,
        "alpha": alpha,
        "temperature": cfg.distill.temperature,
        "teacher_logits": logit_source,
        "views": cfg.distill.views if logit_source == "views" else None,
        "seed": cfg.trainer.seed,
        "epochs": len(history),
        "best_epoch": best_state.get("best_epoch"),
        "monitor": cfg.trainer.monitor,
        "student": {
            "name": cfg.student.name,
            "parameters": int(student.model.count_params()),
            "saved_bytes": student_path.stat().st_size,
            "validation_accuracy": best_state.get("best") if cfg.trainer.monitor == "val_accuracy"
            else history[best_state["best_epoch"] - 1]["validation"].get("accuracy") if best_state else None,
            "test_accuracy": float(test["accuracy"]),
            "test_loss": float(test["student_loss"]),
            "latency_ms_per_example": student_latency,
        },
        "teacher": None if teacher is None else {
            "name": cfg.teacher.name,
            "key": teacher.key,
            "source": teacher.source,
            "path": str(teacher.path) if teacher.path else None,
            "parameters": int(teacher.model.count_params()),
            "saved_bytes": _teacher_bytes(teacher),
            "tta": cfg.teacher.get("tta"),
            "validation_accuracy": teacher.metrics.get("validation_accuracy"),
            "test_accuracy": teacher.metrics.get("test_accuracy"),
            # Without the test-time augmentation, when it has one.
            **{k: teacher.metrics[k] for k in ("validation_accuracy_single_view",
                                               "test_accuracy_single_view") if k in teacher.metrics},
            "latency_ms_per_example": teacher_latency,
        },
        "data": {"name": data.name, "source": data.source, "fingerprint": data.fingerprint,
                 **data.sizes()},
        "precision": policy,
        "teacher_precision": teacher_policy,
        "fit_seconds": round(fit_seconds, 1),
        "wall_seconds": round(time.perf_counter() - wall_started, 1),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "versions": versions(),
        "machine": machine(),
    }
    _write_json(summary_path, summary)
    if teacher is not None and teacher.path and (teacher.path / teachers.META).is_file():
        # The stored teacher's record (its config, metrics and per-epoch
        # history) beside the run, so that the folder tells the whole story.
        shutil.copyfile(teacher.path / teachers.META, run_dir / "teacher-meta.json")
    _print_results(summary)
    return summary


def latency(model: keras.Model, inputs: Any, batches=(1, 64), repeats: int = 3) -> dict[str, float]:
    """CPU (or device) milliseconds per example of ``model`` on real inputs,
    at each batch size, after a warm-up call."""
    out = {}
    for batch in batches:
        x = tf.nest.map_structure(lambda a: a[:batch], inputs)
        model.predict_on_batch(x)
        started = time.perf_counter()
        for _ in range(repeats):
            model.predict_on_batch(x)
        seconds = (time.perf_counter() - started) / repeats
        out[f"batch_{batch}"] = round(seconds / batch * 1000, 3)
    return out


def _teacher_bytes(teacher) -> int | None:
    if teacher.path is None:
        return None
    path = Path(teacher.path)
    weights = path / teachers.WEIGHTS if path.is_dir() else path
    return weights.stat().st_size if weights.is_file() else None


def _print_results(summary: dict) -> None:
    rows = []
    teacher = summary["teacher"]
    if teacher:
        tta = f" ({teacher['tta']} TTA)" if teacher.get("tta") else ""
        rows.append(["teacher " + teacher["name"] + tta, f"{teacher['parameters']:,}",
                     teacher["validation_accuracy"], teacher["test_accuracy"]])
    student = summary["student"]
    what = "student (direct)" if summary["alpha"] == 0 else f"student (distilled, alpha={summary['alpha']})"
    rows.append([f"{what} {student['name']}", f"{student['parameters']:,}",
                 student["validation_accuracy"], student["test_accuracy"]])
    console.table(f"results: {summary['run_dir']}", ["model", "parameters", "val accuracy", "test accuracy"],
                  rows)
