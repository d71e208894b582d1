"""Any ``keras.applications`` backbone as an image teacher (transfer learning).

``teacher=keras_app teacher.application=ResNet50`` builds the named backbone
with ImageNet weights (``weights: imagenet``, downloaded by Keras: online
users), a local weights file, or none; resizes the task's images to
``input_size`` inside the model, applies the application's own
``preprocess_input``, pools and adds a classifier. Fine-tuning strategies as
for the BERT teacher: ``head``, ``top_k`` (the last ``top_k`` layers with
weights) or ``full``.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import keras
from keras import layers
from omegaconf import MISSING

from kdtl.config import TeacherTrainingConfig
from kdtl.errors import ConfigError, ModelError
from kdtl.models.base import TEACHERS, BuiltModel, ImageTeacherConfig


@dataclass
class AppTrainingConfig(TeacherTrainingConfig):
    strategy: str = MISSING
    top_k: int = MISSING


@dataclass
class KerasAppConfig(ImageTeacherConfig):
    application: str = MISSING
    """A constructor in keras.applications: ResNet50, MobileNetV3Small, EfficientNetB0, ..."""
    weights: Optional[str] = None
    """imagenet (download), a local .h5/.weights.h5 file, or null (random)."""
    input_size: int = MISSING
    dropout: float = MISSING
    training: AppTrainingConfig = MISSING


def _constructor(name: str):
    constructor = getattr(keras.applications, name, None)
    if constructor is None or not callable(constructor):
        known = sorted(n for n in dir(keras.applications) if n[:1].isupper())
        raise ConfigError(f"unknown teacher.application {name!r}; available: {', '.join(known)}")
    return constructor


def freeze(backbone: keras.Model, strategy: str, top_k: int) -> None:
    if strategy not in ("head", "top_k", "full"):
        raise ConfigError(f"teacher.training.strategy must be head, top_k or full, got {strategy!r}")
    backbone.trainable = strategy != "head"
    if strategy == "top_k":
        weighted = [layer for layer in backbone.layers if layer.weights]
        if not 1 <= top_k <= len(weighted):
            raise ConfigError(f"teacher.training.top_k must be in [1, {len(weighted)}], got {top_k}")
        trainable = set(map(id, weighted[-top_k:]))
        for layer in backbone.layers:
            # Batch norm stays in inference mode while fine-tuning (Keras' advice).
            layer.trainable = id(layer) in trainable and not isinstance(layer, layers.BatchNormalization)


@TEACHERS.register("keras_app", schema=KerasAppConfig)
def build_keras_app_teacher(cfg, data) -> BuiltModel:
    if data.kind != "image":
        raise ConfigError(f"teacher 'keras_app' takes images; data {data.name!r} gives {data.kind}")
    if cfg.input_size < 32:
        raise ConfigError(f"teacher.input_size must be >= 32, got {cfg.input_size}")
    constructor = _constructor(cfg.application)
    weights = cfg.weights
    local = weights not in (None, "imagenet")
    if local and not Path(weights).expanduser().is_file():
        raise ModelError(f"teacher.weights {weights!r} does not exist")
    size = cfg.input_size
    try:
        backbone = constructor(include_top=False, weights=None if local else weights,
                               input_shape=(size, size, 3), pooling="avg")
    except Exception as error:
        raise ModelError(f"cannot build {cfg.application} with weights={weights!r} "
                         f"({str(error).splitlines()[0][:160]}); offline, download the weights file "
                         f"elsewhere and set teacher.weights=PATH") from None
    if local:
        try:
            backbone.load_weights(str(Path(weights).expanduser()))
        except Exception as error:
            raise ModelError(f"teacher.weights {weights!r} do not fit {cfg.application}: "
                             f"{str(error).splitlines()[0][:200]}") from None
    freeze(backbone, cfg.training.strategy, cfg.training.top_k)
    preprocess = getattr(sys.modules[constructor.__module__], "preprocess_input", None)
    inputs = keras.Input(data.input_shape, dtype="uint8", name="image")
    x = layers.Resizing(size, size, name="resize")(layers.Rescaling(1.0, name="to_float")(inputs))
    if preprocess is not None:
        x = layers.Lambda(preprocess, name="preprocess")(x)
    x = backbone(x, training=cfg.training.strategy == "full")
    if cfg.dropout:
        x = layers.Dropout(cfg.dropout, name="head_dropout")(x)
    logits = layers.Dense(cfg.num_classes or data.num_classes, dtype="float32", name="logits")(x)
    return BuiltModel(keras.Model(inputs, logits, name=f"teacher_{cfg.application.lower()}"),
                      info={"application": cfg.application, "weights": weights})
