"""Convolutional networks for small images: a VGG-style student and CIFAR ResNets
(He et al.'s deep, narrow ones and Myrtle.ai's shallow, wide ResNet-9).

Both take raw uint8 images and rescale them to [-1, 1] inside the model, so
the pipeline, evaluation and a saved ``student.keras`` all agree on the input.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional

import keras
from keras import layers
from omegaconf import MISSING

from kdtl.config import TeacherTrainingConfig
from kdtl.errors import ConfigError
from kdtl.models.base import STUDENTS, TEACHERS, BuiltModel, ImageTeacherConfig


@dataclass
class VGGConfig:
    name: str = MISSING
    num_classes: Optional[int] = None
    widths: List[int] = MISSING
    """Channels of each stage; a stage ends in 2x2 max pooling."""
    convs_per_stage: int = MISSING
    dropout: float = MISSING


@dataclass
class ResNetConfig(ImageTeacherConfig):
    depth: int = MISSING
    """6n + 2: 20, 32, 44, 56, 110 (He et al. 2016, section 4.2)."""
    widths: List[int] = MISSING
    """Channels of the three stages (16, 32, 64 in the paper)."""
    training: TeacherTrainingConfig = MISSING


@dataclass
class ResNet9Config(ImageTeacherConfig):
    widths: List[int] = MISSING
    """Channels of the stem and of the three layers (64, 128, 256, 512 in Page 2018)."""
    logit_scale: float = MISSING
    """Multiplies the logits (0.125 in Page 2018: a bias-free classifier whose
    outputs start small)."""
    training: TeacherTrainingConfig = MISSING


def _conv_bn_relu(x, filters: int, strides: int = 1, name: str = ""):
    x = layers.Conv2D(filters, 3, strides=strides, padding="same", use_bias=False,
                      kernel_initializer="he_normal", name=f"{name}_conv")(x)
    x = layers.BatchNormalization(name=f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x)


def _image_input(data, name: str):
    if data.kind != "image":
        raise ConfigError(f"{name} takes images; data {data.name!r} gives {data.kind}")
    inputs = keras.Input(data.input_shape, dtype="uint8", name="image")
    x = layers.Rescaling(1 / 127.5, offset=-1.0, name="rescale")(inputs)
    return inputs, x


def vgg(data, widths, convs_per_stage: int, num_classes: int, dropout: float,
        name: str = "vgg") -> keras.Model:
    """conv-BN-ReLU x ``convs_per_stage`` then max-pool, per stage; global
    average pooling; dropout; a float32 logits layer."""
    inputs, x = _image_input(data, "student 'vgg'")
    for stage, width in enumerate(widths):
        for i in range(convs_per_stage):
            x = _conv_bn_relu(x, width, name=f"stage{stage}_{i}")
        x = layers.MaxPooling2D(2, name=f"stage{stage}_pool")(x)
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    if dropout:
        x = layers.Dropout(dropout, name="dropout")(x)
    logits = layers.Dense(num_classes, dtype="float32", name="logits")(x)
    return keras.Model(inputs, logits, name=name)


def resnet(data, depth: int, widths, num_classes: int, name: str = "resnet") -> keras.Model:
    """The CIFAR ResNet of He et al. (2016): a 3x3 stem, three stages of
    (depth - 2) / 6 basic blocks, the 2nd and 3rd starting with stride 2
    (projection shortcuts where the shape changes), global pooling, logits."""
    if (depth - 2) % 6 or depth < 8:
        raise ConfigError(f"teacher.depth must be 6n + 2 (20, 32, 44, 56, ...), got {depth}")
    if len(widths) != 3:
        raise ConfigError(f"teacher.widths must list 3 stage widths, got {list(widths)}")
    blocks = (depth - 2) // 6
    inputs, x = _image_input(data, "teacher 'resnet'")
    x = _conv_bn_relu(x, widths[0], name="stem")
    for stage, width in enumerate(widths):
        for block in range(blocks):
            prefix = f"stage{stage}_block{block}"
            strides = 2 if stage > 0 and block == 0 else 1
            y = _conv_bn_relu(x, width, strides, name=f"{prefix}_a")
            y = layers.Conv2D(width, 3, padding="same", use_bias=False,
                              kernel_initializer="he_normal", name=f"{prefix}_b_conv")(y)
            y = layers.BatchNormalization(name=f"{prefix}_b_bn")(y)
            shortcut = x
            if strides != 1 or x.shape[-1] != width:
                shortcut = layers.Conv2D(width, 1, strides=strides, use_bias=False,
                                         kernel_initializer="he_normal", name=f"{prefix}_proj")(x)
                shortcut = layers.BatchNormalization(name=f"{prefix}_proj_bn")(shortcut)
            x = layers.ReLU(name=f"{prefix}_out")(layers.Add(name=f"{prefix}_add")([y, shortcut]))
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    logits = layers.Dense(num_classes, dtype="float32", name="logits")(x)
    return keras.Model(inputs, logits, name=name)


def resnet9(data, widths, num_classes: int, logit_scale: float,
            name: str = "resnet9") -> keras.Model:
    """The ResNet-9 of Myrtle.ai's DAWNBench entry (D. Page, "How to train your
    ResNet", 2018): a conv-BN-ReLU stem, then three layers of conv-BN-ReLU and
    2x2 max pooling, the 1st and 3rd followed by a residual block of two
    conv-BN-ReLUs; global max pooling; a bias-free classifier scaled by
    ``logit_scale``. Most of its work happens at 16x16 and below, which buys
    more accuracy per CPU-second than He et al.'s ResNets (results/cifar10/,
    results/bench/teachers.md)."""
    if len(widths) != 4 or min(widths) < 1:
        raise ConfigError(f"teacher.widths must list 4 positive widths (stem, 3 layers), got {list(widths)}")
    inputs, x = _image_input(data, "teacher 'resnet9'")
    x = _conv_bn_relu(x, widths[0], name="stem")
    for layer, width in enumerate(widths[1:], start=1):
        x = _conv_bn_relu(x, width, name=f"layer{layer}")
        x = layers.MaxPooling2D(2, name=f"layer{layer}_pool")(x)
        if layer != 2:
            y = _conv_bn_relu(x, width, name=f"layer{layer}_res_a")
            y = _conv_bn_relu(y, width, name=f"layer{layer}_res_b")
            x = layers.Add(name=f"layer{layer}_add")([x, y])
    x = layers.GlobalMaxPooling2D(name="pool")(x)
    x = layers.Dense(num_classes, use_bias=False, dtype="float32", name="classifier")(x)
    logits = layers.Rescaling(logit_scale, dtype="float32", name="logits")(x)
    return keras.Model(inputs, logits, name=name)


@STUDENTS.register("vgg", schema=VGGConfig)
def build_vgg_student(cfg, data, teacher=None) -> BuiltModel:
    if not cfg.widths or min(cfg.widths) < 1 or cfg.convs_per_stage < 1:
        raise ConfigError("student.widths must be positive and convs_per_stage >= 1")
    return BuiltModel(vgg(data, cfg.widths, cfg.convs_per_stage, cfg.num_classes or data.num_classes,
                          cfg.dropout, name="student_vgg"))


@TEACHERS.register("resnet", schema=ResNetConfig)
def build_resnet_teacher(cfg, data) -> BuiltModel:
    return BuiltModel(resnet(data, cfg.depth, cfg.widths, cfg.num_classes or data.num_classes,
                             name=f"teacher_resnet{cfg.depth}"))


@TEACHERS.register("resnet9", schema=ResNet9Config)
def build_resnet9_teacher(cfg, data) -> BuiltModel:
    return BuiltModel(resnet9(data, cfg.widths, cfg.num_classes or data.num_classes,
                              cfg.logit_scale, name="teacher_resnet9"))
