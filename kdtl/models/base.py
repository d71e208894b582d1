"""Registries and the common return type of model factories."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import keras
from omegaconf import MISSING

from kdtl.registry import Registry

TEACHERS: Registry = Registry("teacher")
STUDENTS: Registry = Registry("student")


def identity(inputs: Any) -> Any:
    return inputs


@dataclass
class BuiltModel:
    model: keras.Model
    encode: Callable[[Any], Any] = identity
    """Raw split inputs (numpy) -> this model's inputs (numpy), run once per split."""
    info: dict = field(default_factory=dict)
    """Facts worth reporting (tokenizer, pretrained weights used, ...)."""


@dataclass
class ImageTeacherConfig:
    """Settings every image teacher's config has (its schema derives from this)."""

    name: str = MISSING
    num_classes: Optional[int] = None
    checkpoint: Optional[str] = None
    tta: Optional[str] = None
    """Test-time augmentation: null, or flip (the mean of the logits of the
    image and of its mirror image, wherever the teacher predicts: its scores,
    the logits it teaches with; training is unchanged)."""


def build_teacher(cfg, data) -> BuiltModel:
    return TEACHERS.get(cfg.name).factory(cfg, data)


def build_student(cfg, data, teacher: BuiltModel | None = None) -> BuiltModel:
    """``teacher`` lets a student share the teacher's tokenizer or embeddings."""
    return STUDENTS.get(cfg.name).factory(cfg, data, teacher)
