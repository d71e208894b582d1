"""Multi-layer perceptrons for feature vectors (the synthetic task)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional

import keras
from omegaconf import MISSING

from kdtl.config import TeacherTrainingConfig
from kdtl.errors import ConfigError
from kdtl.models.base import STUDENTS, TEACHERS, BuiltModel


@dataclass
class MLPStudentConfig:
    name: str = MISSING
    num_classes: Optional[int] = None
    """null: as many as the data has."""
    hidden_units: List[int] = MISSING
    dropout: float = MISSING


@dataclass
class MLPTeacherConfig(MLPStudentConfig):
    checkpoint: Optional[str] = None
    training: TeacherTrainingConfig = MISSING


def mlp(num_features: int, num_classes: int, hidden_units, dropout: float, name: str) -> keras.Model:
    """Dense-ReLU layers, then a linear layer that returns logits.

    The logits layer computes in float32 whatever the global precision policy,
    so softmax and the losses stay stable under mixed precision.
    """
    inputs = keras.Input((num_features,), name="features")
    x = inputs
    for i, units in enumerate(hidden_units):
        x = keras.layers.Dense(units, activation="relu", name=f"dense_{i}")(x)
        if dropout:
            x = keras.layers.Dropout(dropout, name=f"dropout_{i}")(x)
    logits = keras.layers.Dense(num_classes, dtype="float32", name="logits")(x)
    return keras.Model(inputs, logits, name=name)


def _build(cfg, data, name: str) -> BuiltModel:
    if data.kind != "features":
        raise ConfigError(f"{name} 'mlp' takes feature vectors; data {data.name!r} gives {data.kind}")
    if any(units <= 0 for units in cfg.hidden_units):
        raise ConfigError(f"{name}.hidden_units must all be > 0, got {list(cfg.hidden_units)}")
    num_features = data.input_shape[0]
    return BuiltModel(mlp(num_features, cfg.num_classes or data.num_classes, cfg.hidden_units, cfg.dropout, f"{name}_mlp"))


@TEACHERS.register("mlp", schema=MLPTeacherConfig)
def build_mlp_teacher(cfg, data) -> BuiltModel:
    return _build(cfg, data, "teacher")


@STUDENTS.register("mlp", schema=MLPStudentConfig)
def build_mlp_student(cfg, data, teacher=None) -> BuiltModel:
    return _build(cfg, data, "student")
