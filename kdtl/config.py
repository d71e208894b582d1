"""Typed schemas of the configuration and the checks run before any work.

The YAML files under ``conf/`` hold every default value; the dataclasses here
hold only names and types (fields without a default are required). A node is
validated by merging it into its schema, so an unknown key, a value of the
wrong type or a missing required value is reported before data is loaded or a
model is built. Components (data, teacher, student) bring their own schema
through their registry entry.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional

from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from kdtl.errors import ConfigError

PRECISIONS = ("auto", "float32", "mixed_bfloat16", "mixed_float16")
TEACHER_LOGITS = ("auto", "online", "cached", "views")
SCHEDULES = ("constant", "cosine", "onecycle")
TTA = (None, "flip", "flip_translate")
"""A teacher's test-time augmentation: none; the mean of its logits for an
image and for the image's mirror image; or (flip_translate) half that plus a
quarter each of the same for the image shifted one pixel up-left and one
pixel down-right (reflected at the border)."""
PROGRESS = ("auto", "bar", "lines", "none")


@dataclass
class TaskConfig:
    name: str = MISSING
    description: str = ""


@dataclass
class DistillConfig:
    alpha: float = MISSING
    temperature: float = MISSING
    teacher_logits: str = MISSING
    views: int = MISSING
    """With teacher_logits=views: augmented views cached per example."""
    label_smoothing: float = MISSING
    """Of the hard labels in the student's cross-entropy."""


@dataclass
class OptimizerConfig:
    name: str = MISSING
    learning_rate: float = MISSING
    weight_decay: float = MISSING
    schedule: str = MISSING
    warmup_epochs: float = MISSING
    clipnorm: Optional[float] = None
    momentum: Optional[float] = None
    nesterov: Optional[bool] = None
    bias_lr_scale: Optional[float] = None
    """Multiplies the learning rate of biases and normalisation parameters,
    which are then decayed like the weights; null: 1, and not decayed."""


@dataclass
class TrainerConfig:
    epochs: int = MISSING
    batch_size: int = MISSING
    eval_batch_size: int = MISSING
    precision: str = MISSING
    seed: int = MISSING
    teacher_seed: Optional[int] = None
    resume: bool = MISSING
    jit_compile: bool = MISSING
    monitor: str = MISSING
    progress: str = MISSING


@dataclass
class PathsConfig:
    runs_dir: str = MISSING
    data_dir: Optional[str] = None
    cache_dir: str = MISSING


@dataclass
class TeacherTrainingConfig:
    """How the teacher stage trains (from scratch or by fine-tuning)."""

    epochs: int = MISSING
    batch_size: int = MISSING
    learning_rate: float = MISSING
    weight_decay: float = MISSING
    optimizer: Optional[str] = None
    """adamw | sgd; null: the same optimizer as the student's."""
    augment: Optional[Dict[str, Any]] = None
    """Replaces some of ``data.augment``'s settings in the teacher stage only
    (e.g. ``{cutout: 8}``); null, for the whole or for one setting: the
    student's."""
    label_smoothing: Optional[float] = None
    """Of the labels in the teacher's cross-entropy; null or 0: none."""
    bias_lr_scale: Optional[float] = None
    """``optimizer.bias_lr_scale`` for the teacher stage (null: 1)."""


@dataclass
class RootConfig:
    task: TaskConfig = field(default_factory=TaskConfig)
    data: Any = MISSING
    teacher: Any = MISSING
    student: Any = MISSING
    distill: DistillConfig = field(default_factory=DistillConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)


def run_name(overrides: str) -> str:
    """A run folder's name from the command's overrides: ``default`` for none,
    slashes (paths in values) made safe, and long names shortened with a hash
    so they stay within file-system limits."""
    if not overrides:
        return "default"
    name = overrides.replace("/", "_")
    if len(name) > 120:
        import hashlib

        name = f"{name[:100]}-{hashlib.sha256(overrides.encode()).hexdigest()[:10]}"
    return name


def register_resolvers() -> None:
    """Resolvers used by the YAML files; safe to call more than once."""
    if not OmegaConf.has_resolver("kdtl_run_name"):
        OmegaConf.register_new_resolver("kdtl_run_name", run_name)


def _describe(error: OmegaConfBaseException) -> str:
    """One line out of OmegaConf's multi-line messages."""
    message = str(error).splitlines()[0].strip()
    key = getattr(error, "full_key", None)
    return f"{message} (at {key})" if key and key not in message else message


def _typed(node: Any, schema: type, where: str) -> DictConfig:
    try:
        merged = OmegaConf.merge(OmegaConf.structured(schema), node)
    except OmegaConfBaseException as error:
        raise ConfigError(f"{where}: {_describe(error)}") from None
    missing = sorted(OmegaConf.missing_keys(merged))
    if missing:
        raise ConfigError(f"{where}: required value(s) missing: {', '.join(missing)}")
    return merged


def validate(cfg: DictConfig) -> DictConfig:
    """Check the whole composed config; return it resolved and typed.

    Raises :class:`ConfigError` with a one-line message on the first problem.
    """
    # Components register themselves on import.
    from kdtl.data import DATASETS
    from kdtl.models import STUDENTS, TEACHERS

    register_resolvers()
    plain = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
    try:
        OmegaConf.resolve(plain)
    except OmegaConfBaseException as error:
        raise ConfigError(f"config: {_describe(error)}") from None
    typed = _typed(plain, RootConfig, "config")
    for group, registry in (("data", DATASETS), ("teacher", TEACHERS), ("student", STUDENTS)):
        node = typed[group]
        if not isinstance(node, DictConfig) or "name" not in node:
            raise ConfigError(f"{group}: needs a 'name' (one of {', '.join(registry.names())})")
        entry = registry.get(node.name)
        if entry.schema is not None:
            typed[group] = _typed(node, entry.schema, group)
    _check_values(typed)
    return typed


def _check_values(cfg: DictConfig) -> None:
    def need(ok: bool, message: str) -> None:
        if not ok:
            raise ConfigError(message)

    d, t = cfg.distill, cfg.trainer
    need(0.0 <= d.alpha <= 1.0, f"distill.alpha must be in [0, 1], got {d.alpha}")
    need(d.temperature > 0, f"distill.temperature must be > 0, got {d.temperature}")
    need(d.teacher_logits in TEACHER_LOGITS,
         f"distill.teacher_logits must be one of {', '.join(TEACHER_LOGITS)}, got {d.teacher_logits!r}")
    need(d.views >= 1, f"distill.views must be >= 1, got {d.views}")
    need(0 <= d.label_smoothing < 1, f"distill.label_smoothing must be in [0, 1), got {d.label_smoothing}")
    need(t.epochs > 0, f"trainer.epochs must be > 0, got {t.epochs}")
    need(t.batch_size > 0, f"trainer.batch_size must be > 0, got {t.batch_size}")
    need(t.eval_batch_size > 0, f"trainer.eval_batch_size must be > 0, got {t.eval_batch_size}")
    need(t.precision in PRECISIONS,
         f"trainer.precision must be one of {', '.join(PRECISIONS)}, got {t.precision!r}")
    need(t.progress in PROGRESS,
         f"trainer.progress must be one of {', '.join(PROGRESS)}, got {t.progress!r}")
    need(t.monitor.startswith("val_"), f"trainer.monitor must be a validation metric (val_...), got {t.monitor!r}")
    o = cfg.optimizer
    need(o.learning_rate > 0, f"optimizer.learning_rate must be > 0, got {o.learning_rate}")
    need(o.weight_decay >= 0, f"optimizer.weight_decay must be >= 0, got {o.weight_decay}")
    need(o.schedule in SCHEDULES,
         f"optimizer.schedule must be one of {', '.join(SCHEDULES)}, got {o.schedule!r}")
    need(o.bias_lr_scale is None or o.bias_lr_scale > 0,
         f"optimizer.bias_lr_scale must be > 0 or null, got {o.bias_lr_scale}")
    need(0 <= o.warmup_epochs < t.epochs,
         f"optimizer.warmup_epochs must be in [0, trainer.epochs), got {o.warmup_epochs}")
    augment = cfg.data.get("augment")
    if d.teacher_logits == "cached" and d.alpha > 0 and augment is not None and (
            augment.get("crop_padding") or augment.get("flip") or augment.get("cutout")):
        raise ConfigError("distill.teacher_logits=cached would pair each augmented view with the "
                          "logits of another; use online or auto (or turn data.augment off)")
    for who in ("teacher", "student"):
        classes = cfg[who].get("num_classes")
        need(classes is None or classes == cfg.data.num_classes,
             f"{who}.num_classes is {classes} but data {cfg.data.name!r} has "
             f"{cfg.data.num_classes} classes; teacher, student and data must agree")
    training = cfg.teacher.get("training")
    if training is not None:
        need(training.epochs >= 0, f"teacher.training.epochs must be >= 0, got {training.epochs}")
        need(training.batch_size > 0, f"teacher.training.batch_size must be > 0, got {training.batch_size}")
        smoothing = training.get("label_smoothing") or 0.0
        need(0 <= smoothing < 1, f"teacher.training.label_smoothing must be in [0, 1), got {smoothing}")
        scale = training.get("bias_lr_scale")
        need(scale is None or scale > 0, f"teacher.training.bias_lr_scale must be > 0 or null, got {scale}")
        own = training.get("augment")
        if own:
            need(augment is not None, f"teacher.training.augment replaces data.augment settings, but "
                                      f"data {cfg.data.name!r} has none")
            unknown = sorted(set(own) - set(augment))
            need(not unknown, f"teacher.training.augment: unknown setting {', '.join(unknown)} "
                              f"(data.augment has {', '.join(augment)})")
    tta = cfg.teacher.get("tta")
    need(tta in TTA, f"teacher.tta must be null, flip or flip_translate, got {tta!r}")
    checkpoint = cfg.teacher.get("checkpoint")
    if checkpoint:
        need(Path(checkpoint).expanduser().is_file(),
             f"teacher.checkpoint {checkpoint!r} does not exist; give the path of a .keras teacher")


def check_writable(folder: str | os.PathLike, what: str) -> None:
    """Fail early when ``folder`` cannot be created or written.

    Walks up to the nearest existing ancestor and tries to create a file there
    (permission bits alone say nothing when running as root, and nothing about
    read-only file systems). Creates nothing that outlives the check.
    """
    path = Path(folder).expanduser().absolute()
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        raise ConfigError(f"{what} {str(path)!r} cannot be created: {str(probe)!r} is not a folder")
    try:
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as error:
        raise ConfigError(f"{what} {str(path)!r} is not writable: {error.strerror}") from None


def canonical(node: Any) -> Any:
    """A resolved plain copy of a config node without null values, for hashing:
    a new optional setting that defaults to null does not change the key of
    anything stored before it existed (teachers, logits, precision choices)."""
    plain = OmegaConf.to_container(node, resolve=True) if isinstance(node, (DictConfig,)) else node
    if isinstance(plain, dict):
        return {k: canonical(v) for k, v in plain.items() if v is not None}
    if isinstance(plain, list):
        return [canonical(v) for v in plain]
    return plain
