"""The teacher stage: build, train or fine-tune, store, and reuse a teacher.

A teacher is stored under ``<cache_dir>/teachers/<name>-<key>/`` where the key
hashes everything that shapes it (its config, the data's config and
fingerprint, the seed, the precision). Every run with the same teacher
settings -- each member of an alpha sweep, say -- reuses it instead of
training it again. ``teacher.checkpoint=PATH`` uses a given teacher instead.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np
from omegaconf import OmegaConf

from kdtl import console, optimizers
from kdtl.callbacks import ProgressBar
from kdtl.config import canonical
from kdtl.distiller import Distiller
from kdtl.errors import ModelError
from kdtl.models import BuiltModel, build_teacher
from kdtl.pipeline import eval_dataset, train_dataset

STORE_VERSION = 1
WEIGHTS = "teacher.weights.h5"
META = "meta.json"


@dataclass
class Teacher:
    built: BuiltModel
    key: str
    source: str
    """'trained', 'store' or 'checkpoint'."""
    path: Path | None
    metrics: dict = field(default_factory=dict)

    @property
    def model(self) -> keras.Model:
        return self.built.model


def teacher_seed(cfg) -> int:
    """The seed of the teacher stage: ``trainer.teacher_seed``, else ``trainer.seed``."""
    seed = cfg.trainer.get("teacher_seed")
    return cfg.trainer.seed if seed is None else seed


def teacher_key(cfg, data, policy: str) -> str:
    teacher = canonical(cfg.teacher)
    teacher.pop("checkpoint", None)
    shaped_by = {
        "version": STORE_VERSION,
        "teacher": teacher,
        "data": canonical(cfg.data),
        "data_fingerprint": data.fingerprint,
        "seed": teacher_seed(cfg),
        "precision": policy,
    }
    blob = json.dumps(shaped_by, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def store_dir(cfg, key: str) -> Path:
    return Path(cfg.paths.cache_dir).expanduser() / "teachers" / f"{cfg.teacher.name}-{key}"


def evaluate(built: BuiltModel, split, batch_size: int) -> float:
    """Top-1 accuracy of a model on a split."""
    distiller = Distiller(built.model, alpha=0.0)
    distiller.compile()
    dataset = eval_dataset(built.encode(split.inputs), split.labels, batch_size=batch_size)
    return float(distiller.evaluate(dataset, verbose=0, return_dict=True)["accuracy"])


def _check_classes(model: keras.Model, num_classes: int, where: str) -> None:
    classes = model.output_shape[-1]
    if classes != num_classes:
        raise ModelError(f"{where} outputs {classes} classes but the data has {num_classes}; "
                         "they must agree")


def _fit(built: BuiltModel, cfg, data, live: bool) -> None:
    """Trains (or fine-tunes) the teacher with plain cross-entropy."""
    training = cfg.teacher.training
    fit_hook = built.info.get("prepare_fit")
    train_inputs = built.encode(data.train.inputs)
    dataset, steps = train_dataset(train_inputs, data.train.labels, batch_size=training.batch_size,
                                   seed=teacher_seed(cfg) + 1, epochs=training.epochs,
                                   augment=data.augment)
    optimizer_cfg = OmegaConf.merge(cfg.optimizer, {
        "learning_rate": training.learning_rate, "weight_decay": training.weight_decay,
        "warmup_epochs": 0.0, "name": training.get("optimizer") or cfg.optimizer.name})
    optimizer = fit_hook(optimizer_cfg, steps) if fit_hook else optimizers.build(
        optimizer_cfg, steps, training.epochs)
    trainer = Distiller(built.model, alpha=0.0)
    trainer.compile(optimizer=optimizer, jit_compile=cfg.trainer.jit_compile)
    validation = eval_dataset(built.encode(data.validation.inputs), data.validation.labels,
                              batch_size=cfg.trainer.eval_batch_size)
    trainer.fit(dataset, epochs=training.epochs, steps_per_epoch=steps, validation_data=validation,
                verbose=0, shuffle=False,
                callbacks=[ProgressBar("teacher", training.epochs, steps, live, ("loss", "accuracy"))])


def prepare(cfg, data, policy: str, live: bool, train_if_missing: bool = True) -> Teacher | None:
    """Returns the teacher for this run, training it first when the store has
    none (or ``None`` when ``train_if_missing`` is false and none is stored)."""
    key = teacher_key(cfg, data, policy)
    eval_batch = cfg.trainer.eval_batch_size
    if cfg.teacher.checkpoint:
        path = Path(cfg.teacher.checkpoint).expanduser()
        built = build_teacher(cfg.teacher, data)
        if path.name.endswith(".keras"):
            built.model = keras.saving.load_model(path, compile=False)
        else:
            _load_weights(built.model, path)
        _check_classes(built.model, data.num_classes, f"teacher.checkpoint {str(path)!r}")
        metrics = {"validation_accuracy": evaluate(built, data.validation, eval_batch),
                   "test_accuracy": evaluate(built, data.test, eval_batch)}
        return Teacher(built, f"checkpoint-{key}", "checkpoint", path, metrics)

    folder = store_dir(cfg, key)
    if (folder / META).is_file() and (folder / WEIGHTS).is_file():
        keras.utils.set_random_seed(teacher_seed(cfg))
        built = build_teacher(cfg.teacher, data)
        _load_weights(built.model, folder / WEIGHTS)
        meta = json.loads((folder / META).read_text())
        console.info(f"teacher: reusing {folder}")
        return Teacher(built, key, "store", folder, meta["metrics"])
    if not train_if_missing:
        return None

    keras.utils.set_random_seed(teacher_seed(cfg))
    built = build_teacher(cfg.teacher, data)
    _check_classes(built.model, data.num_classes, f"teacher {cfg.teacher.name!r}")
    started = time.perf_counter()
    if cfg.teacher.training.epochs > 0:
        console.info(f"teacher: training {cfg.teacher.name} ({built.model.count_params():,} parameters) "
                     f"for {cfg.teacher.training.epochs} epochs")
        _fit(built, cfg, data, live)
    seconds = time.perf_counter() - started
    metrics = {"validation_accuracy": evaluate(built, data.validation, eval_batch),
               "test_accuracy": evaluate(built, data.test, eval_batch),
               "train_seconds": round(seconds, 1)}
    _save(folder, built, cfg, key, metrics)
    console.info(f"teacher: validation accuracy {metrics['validation_accuracy']:.4f}, "
                 f"stored in {folder}")
    return Teacher(built, key, "trained", folder, metrics)


def _load_weights(model: keras.Model, path: Path) -> None:
    try:
        model.load_weights(path)
    except (ValueError, OSError) as error:
        first = str(error).splitlines()[0]
        raise ModelError(f"cannot load teacher weights {str(path)!r} into {model.name}: {first}") from None


def _save(folder: Path, built: BuiltModel, cfg, key: str, metrics: dict) -> None:
    tmp = folder.with_name(folder.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    built.model.save_weights(tmp / WEIGHTS)
    meta = {"key": key, "teacher": OmegaConf.to_container(cfg.teacher, resolve=True),
            "data": OmegaConf.to_container(cfg.data, resolve=True),
            "parameters": int(built.model.count_params()),
            "metrics": metrics, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    (tmp / META).write_text(json.dumps(meta, indent=2, default=str))
    if folder.exists():
        shutil.rmtree(folder)
    tmp.rename(folder)


def logits(teacher: Teacher, inputs, batch_size: int) -> np.ndarray:
    from kdtl.pipeline import predict_logits
    return predict_logits(teacher.model, teacher.built.encode(inputs), batch_size)
