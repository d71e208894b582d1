"""The teacher stage: build, train or fine-tune, store, and reuse a teacher.

A teacher is stored under ``<cache_dir>/teachers/<name>-<key>/`` where the key
hashes everything that shapes it (its config, the data's config and
fingerprint, the seed, the precision). Every run with the same teacher
settings -- each member of an alpha sweep, say -- reuses it instead of
training it again. While it trains, each epoch is checkpointed in
``<name>-<key>.partial/``, so a killed teacher stage resumes where it was.
``teacher.checkpoint=PATH`` uses a given teacher instead.
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

from kdtl import checkpoint, console, optimizers
from kdtl.callbacks import ProgressBar, TeacherCheckpoint
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
    teacher.pop("tta", None)  # how it predicts, not what is stored
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


def with_tta(built: BuiltModel, tta: str | None) -> BuiltModel:
    """The teacher as it predicts: ``built`` itself, or with ``tta=flip`` a
    model whose logits are the mean of ``built``'s for the image and for its
    mirror image (the same weights, called twice); ``tta=flip_translate``
    weighs that by 1/2 and the same for the image shifted by one pixel up-left
    and down-right (reflect-padded) by 1/4 each (six calls)."""
    if not tta:
        return built
    model = built.model
    if len(model.input_shape) != 4:
        raise ModelError(f"teacher.tta={tta} mirrors images, but {model.name} takes "
                         f"inputs of shape {model.input_shape}")
    image = keras.Input(model.input_shape[1:], dtype=model.inputs[0].dtype, name="image")

    def flip_mean(x, name: str):
        return keras.layers.Average(name=name, dtype="float32")(
            [model(x), model(keras.ops.flip(x, axis=2))])

    averaged = flip_mean(image, "flip_mean")
    if tta == "flip_translate":
        height, width = model.input_shape[1:3]
        padded = keras.ops.pad(image, [[0, 0], [1, 1], [1, 1], [0, 0]], mode="reflect")
        up_left = flip_mean(padded[:, :height, :width], "up_left_flip_mean")
        down_right = flip_mean(padded[:, 2:, 2:], "down_right_flip_mean")
        averaged = 0.5 * averaged + 0.25 * up_left + 0.25 * down_right
    return BuiltModel(keras.Model(image, averaged, name=f"{model.name}_{tta}_tta"),
                      built.encode, built.info)


def score(built: BuiltModel, predicting: BuiltModel, data, batch_size: int) -> dict:
    """Validation and test accuracy of the teacher as it predicts and, when
    that adds test-time augmentation, of the plain model too."""
    metrics = {"validation_accuracy": evaluate(predicting, data.validation, batch_size),
               "test_accuracy": evaluate(predicting, data.test, batch_size)}
    if predicting is not built:
        metrics["validation_accuracy_single_view"] = evaluate(built, data.validation, batch_size)
        metrics["test_accuracy_single_view"] = evaluate(built, data.test, batch_size)
    return metrics


def _check_classes(model: keras.Model, num_classes: int, where: str) -> None:
    classes = model.output_shape[-1]
    if classes != num_classes:
        raise ModelError(f"{where} outputs {classes} classes but the data has {num_classes}; "
                         "they must agree")


def partial_dir(folder: Path) -> Path:
    """Where a teacher in training keeps its per-epoch checkpoint."""
    return folder.with_name(folder.name + ".partial")


def _fit(built: BuiltModel, cfg, data, live: bool, partial: Path) -> tuple[list[dict], float]:
    """Trains (or fine-tunes) the teacher with cross-entropy on the labels, checkpointing
    each epoch in ``partial`` and resuming from it when ``trainer.resume``.
    Returns the per-epoch history and the seconds spent, resumed parts included."""
    training = cfg.teacher.training
    found = checkpoint.find(partial / "last") if cfg.trainer.resume else None
    if found is None and partial.exists():
        shutil.rmtree(partial)
    state = checkpoint.read_state(found) if found else {}
    initial_epoch = state.get("epoch", 0)
    fit_hook = built.info.get("prepare_fit")
    train_inputs = built.encode(data.train.inputs)
    augment = data.augment_with(training.augment) if training.get("augment") else data.augment
    dataset, steps = train_dataset(train_inputs, data.train.labels, batch_size=training.batch_size,
                                   seed=teacher_seed(cfg) + 1, epochs=training.epochs,
                                   initial_epoch=initial_epoch, augment=augment)
    optimizer_cfg = OmegaConf.merge(cfg.optimizer, {
        "learning_rate": training.learning_rate, "weight_decay": training.weight_decay,
        "warmup_epochs": 0.0, "name": training.get("optimizer") or cfg.optimizer.name,
        "bias_lr_scale": training.get("bias_lr_scale")})
    optimizer = fit_hook(optimizer_cfg, steps) if fit_hook else optimizers.build(
        optimizer_cfg, steps, training.epochs)
    trainer = Distiller(built.model, alpha=0.0, label_smoothing=training.get("label_smoothing") or 0.0)
    trainer.compile(optimizer=optimizer, jit_compile=cfg.trainer.jit_compile)
    if found is not None:
        checkpoint.restore(found, built.model, optimizer)
        console.info(f"teacher: resuming after epoch {initial_epoch} from {found}")
    history = list(state.get("history", []))
    validation = eval_dataset(built.encode(data.validation.inputs), data.validation.labels,
                              batch_size=cfg.trainer.eval_batch_size)
    saver = TeacherCheckpoint(partial / "last", built.model, optimizer, history,
                              state.get("seconds", 0.0))
    if initial_epoch < training.epochs:
        trainer.fit(dataset, epochs=training.epochs, initial_epoch=initial_epoch,
                    steps_per_epoch=steps, validation_data=validation, verbose=0, shuffle=False,
                    callbacks=[saver, ProgressBar("teacher", training.epochs, steps, live,
                                                  ("loss", "accuracy"))])
    return history, saver.seconds + time.perf_counter() - saver.started


def prepare(cfg, data, policy: str, live: bool, train_if_missing: bool = True) -> Teacher | None:
    """Returns the teacher for this run, training it first when the store has
    none (or ``None`` when ``train_if_missing`` is false and none is stored)."""
    key = teacher_key(cfg, data, policy)
    eval_batch = cfg.trainer.eval_batch_size
    tta = cfg.teacher.get("tta")
    if cfg.teacher.checkpoint:
        path = Path(cfg.teacher.checkpoint).expanduser()
        built = build_teacher(cfg.teacher, data)
        if path.name.endswith(".keras"):
            built.model = keras.saving.load_model(path, compile=False)
        else:
            _load_weights(built.model, path)
        _check_classes(built.model, data.num_classes, f"teacher.checkpoint {str(path)!r}")
        predicting = with_tta(built, tta)
        return Teacher(predicting, f"checkpoint-{key}", "checkpoint", path,
                       score(built, predicting, data, eval_batch))

    folder = store_dir(cfg, key)
    if (folder / META).is_file() and (folder / WEIGHTS).is_file():
        keras.utils.set_random_seed(teacher_seed(cfg))
        built = build_teacher(cfg.teacher, data)
        _load_weights(built.model, folder / WEIGHTS)
        meta = json.loads((folder / META).read_text())
        console.info(f"teacher: reusing {folder}")
        predicting, metrics = with_tta(built, tta), meta["metrics"]
        if meta["teacher"].get("tta") != tta:  # stored with other test-time augmentation
            kept = {k: v for k, v in metrics.items() if "accuracy" not in k}
            metrics = {**kept, **score(built, predicting, data, eval_batch)}
        return Teacher(predicting, key, "store", folder, metrics)
    if not train_if_missing:
        return None

    keras.utils.set_random_seed(teacher_seed(cfg))
    built = build_teacher(cfg.teacher, data)
    _check_classes(built.model, data.num_classes, f"teacher {cfg.teacher.name!r}")
    history, seconds = [], 0.0
    if cfg.teacher.training.epochs > 0:
        console.info(f"teacher: training {cfg.teacher.name} ({built.model.count_params():,} parameters) "
                     f"for {cfg.teacher.training.epochs} epochs")
        history, seconds = _fit(built, cfg, data, live, partial_dir(folder))
    predicting = with_tta(built, tta)
    metrics = {**score(built, predicting, data, eval_batch), "train_seconds": round(seconds, 1)}
    _save(folder, built, cfg, key, metrics, history)
    shutil.rmtree(partial_dir(folder), ignore_errors=True)
    console.info(f"teacher: validation accuracy {metrics['validation_accuracy']:.4f}"
                 f"{f' ({tta} TTA)' if tta else ''}, stored in {folder}")
    return Teacher(predicting, key, "trained", folder, metrics)


def _load_weights(model: keras.Model, path: Path) -> None:
    try:
        model.load_weights(path)
    except (ValueError, OSError) as error:
        first = str(error).splitlines()[0]
        raise ModelError(f"cannot load teacher weights {str(path)!r} into {model.name}: {first}") from None


def _save(folder: Path, built: BuiltModel, cfg, key: str, metrics: dict,
          history: list[dict]) -> None:
    tmp = folder.with_name(folder.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    built.model.save_weights(tmp / WEIGHTS)
    meta = {"key": key, "teacher": OmegaConf.to_container(cfg.teacher, resolve=True),
            "data": OmegaConf.to_container(cfg.data, resolve=True),
            "parameters": int(built.model.count_params()),
            "metrics": metrics, "history": history,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    (tmp / META).write_text(json.dumps(meta, indent=2, default=str))
    if folder.exists():
        shutil.rmtree(folder)
    tmp.rename(folder)


def logits(teacher: Teacher, inputs, batch_size: int) -> np.ndarray:
    from kdtl.pipeline import predict_logits
    return predict_logits(teacher.model, teacher.built.encode(inputs), batch_size)
