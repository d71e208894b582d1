"""Convolutional networks for small images: a VGG-style student and CIFAR ResNets
(He et al.'s deep, narrow ones and Myrtle.ai's shallow, wide ResNet-9).

Both take raw uint8 images and rescale them to [-1, 1] inside the model, so
the pipeline, evaluation and a saved ``student.keras`` all agree on the input.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional

import keras
import numpy as np
import tensorflow as tf
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
    # Page's later "bag of tricks" (2019), each off when null:
    whiten: Optional[bool] = None
    """A fixed patch-whitening stem: the 27 PCA filters of the training
    images' 3x3 patches, then a 1x1 conv-BN-activation (null: a 3x3 conv stem)."""
    activation: Optional[str] = None
    """relu (null) or celu (CELU with alpha 0.3)."""
    bn_scale: Optional[bool] = None
    """false: batch-norm scales frozen at 1 (null: learned)."""
    pool_first: Optional[bool] = None
    """true: each layer max-pools its conv output before batch norm and
    activation (null: after them)."""
    ghost_batch: Optional[int] = None
    """Examples per batch-norm group in training (ghost batch norm; 32 in
    Page 2019); null: statistics of the whole batch."""
    bn_momentum: Optional[float] = None
    """Weight of the old value in the batch-norm moving statistics per step
    (Keras's convention: PyTorch's momentum m is 1 - m here); null: 0.99."""


ACTIVATIONS = ("relu", "celu")


@keras.saving.register_keras_serializable(package="kdtl")
class CELU(layers.Layer):
    """``max(0, x) + min(0, alpha * (exp(x / alpha) - 1))`` (Barron 2017)."""

    def __init__(self, alpha: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.alpha = float(alpha)

    def call(self, inputs):
        return keras.activations.celu(inputs, alpha=self.alpha)

    def get_config(self):
        return {**super().get_config(), "alpha": self.alpha}


@keras.saving.register_keras_serializable(package="kdtl")
class GhostBatchNormalization(layers.Layer):
    """Batch normalisation whose training statistics come from groups of
    ``ghost_batch`` consecutive examples rather than the whole batch (Hoffer
    et al. 2017, "Train longer, generalize better"; Page 2019): the noisier
    statistics regularise. The last group of a batch may be smaller. At
    inference it uses moving averages of the groups' mean statistics, as
    ``BatchNormalization`` does of the batch's. Channels last."""

    def __init__(self, ghost_batch: int = 32, momentum: float = 0.99, epsilon: float = 1e-3,
                 center: bool = True, scale: bool = True, **kwargs):
        super().__init__(**kwargs)
        if int(ghost_batch) < 1:
            raise ValueError(f"ghost_batch must be >= 1, got {ghost_batch}")
        self.ghost_batch = int(ghost_batch)
        self.momentum = float(momentum)
        self.epsilon = float(epsilon)
        self.center = bool(center)
        self.scale = bool(scale)

    def build(self, input_shape):
        channels = (input_shape[-1],)
        self.gamma = self.add_weight(shape=channels, initializer="ones", name="gamma",
                                     autocast=False) if self.scale else None
        self.beta = self.add_weight(shape=channels, initializer="zeros", name="beta",
                                    autocast=False) if self.center else None
        self.moving_mean = self.add_weight(shape=channels, initializer="zeros", trainable=False,
                                           name="moving_mean", autocast=False)
        self.moving_variance = self.add_weight(shape=channels, initializer="ones", trainable=False,
                                               name="moving_variance", autocast=False)

    def call(self, inputs, training=False):
        x = tf.cast(inputs, tf.float32)
        if training:
            axes = list(range(1, len(x.shape) - 1))
            broadcast = [-1] + [1] * len(axes) + [x.shape[-1]]
            batch = tf.shape(x)[0]
            group = tf.range(batch) // self.ghost_batch
            groups = (batch + self.ghost_batch - 1) // self.ghost_batch
            mean = tf.math.unsorted_segment_mean(tf.reduce_mean(x, axes), group, groups)
            centred = x - tf.reshape(tf.gather(mean, group), broadcast)
            variance = tf.math.unsorted_segment_mean(
                tf.reduce_mean(tf.square(centred), axes), group, groups)
            inverse = tf.reshape(tf.gather(tf.math.rsqrt(variance + self.epsilon), group), broadcast)
            for moving, value in ((self.moving_mean, mean), (self.moving_variance, variance)):
                moving.assign(moving * self.momentum + tf.reduce_mean(value, 0) * (1.0 - self.momentum))
        else:
            centred = x - self.moving_mean
            inverse = tf.math.rsqrt(self.moving_variance + self.epsilon)
        y = centred * inverse
        if self.gamma is not None:
            y = y * self.gamma
        if self.beta is not None:
            y = y + self.beta
        return tf.cast(y, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "ghost_batch": self.ghost_batch, "momentum": self.momentum,
                "epsilon": self.epsilon, "center": self.center, "scale": self.scale}


def _activation(kind: str, name: str):
    return CELU(0.3, name=f"{name}_celu") if kind == "celu" else layers.ReLU(name=f"{name}_relu")


def _conv_bn_act(x, filters: int, strides: int = 1, name: str = "", kernel_size: int = 3,
                  activation: str = "relu", bn_scale: bool = True, pool: bool = False,
                  ghost_batch: int | None = None, bn_momentum: float = 0.99):
    """conv, batch norm, activation; ``pool``: 2x2 max pooling between the
    conv and the batch norm (Page 2019: a quarter of the normalising work);
    ``ghost_batch``: ghost batch norm over groups of that many examples;
    ``bn_momentum``: of the moving statistics (Keras's convention)."""
    x = layers.Conv2D(filters, kernel_size, strides=strides, padding="same", use_bias=False,
                      kernel_initializer="he_normal", name=f"{name}_conv")(x)
    if pool:
        x = layers.MaxPooling2D(2, name=f"{name}_pool")(x)
    if ghost_batch:
        x = GhostBatchNormalization(ghost_batch, momentum=bn_momentum, scale=bn_scale,
                                    name=f"{name}_bn")(x)
    else:
        x = layers.BatchNormalization(momentum=bn_momentum, scale=bn_scale, name=f"{name}_bn")(x)
    return _activation(activation, name)(x)


def patch_whitening(images: np.ndarray, size: int = 3, eps: float = 1e-2,
                    limit: int = 2000) -> np.ndarray:
    """A conv kernel ``(size, size, channels, size * size * channels)`` that
    whitens image patches: output channel j is the patch's projection on the
    j-th eigenvector of the patch covariance, divided by ``sqrt(eigenvalue +
    eps)`` (Page 2019, after Coates & Ng 2012). Computed on the first
    ``limit`` images, rescaled to [-1, 1] as the models see them."""
    x = images[:limit].astype(np.float32) / 127.5 - 1.0
    channels = x.shape[-1]
    windows = np.lib.stride_tricks.sliding_window_view(x, (size, size), axis=(1, 2))
    # (n, h, w, c, kh, kw) -> rows of (kh, kw, c): Keras's kernel layout.
    patches = windows.transpose(0, 1, 2, 4, 5, 3).reshape(-1, size * size * channels)
    covariance = np.cov(patches.astype(np.float64), rowvar=False)
    eigenvalues, eigenvectors = np.linalg.eigh(covariance)
    filters = eigenvectors[:, ::-1] / np.sqrt(np.maximum(eigenvalues[::-1], 0.0) + eps)
    return filters.reshape(size, size, channels, -1).astype(np.float32)


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
            x = _conv_bn_act(x, width, name=f"stage{stage}_{i}")
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
    x = _conv_bn_act(x, widths[0], name="stem")
    for stage, width in enumerate(widths):
        for block in range(blocks):
            prefix = f"stage{stage}_block{block}"
            strides = 2 if stage > 0 and block == 0 else 1
            y = _conv_bn_act(x, width, strides, name=f"{prefix}_a")
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


def resnet9(data, widths, num_classes: int, logit_scale: float, name: str = "resnet9",
            whiten: bool = False, activation: str = "relu", bn_scale: bool = True,
            pool_first: bool = False, ghost_batch: int | None = None,
            bn_momentum: float | None = None) -> keras.Model:
    """The ResNet-9 of Myrtle.ai's DAWNBench entry (D. Page, "How to train your
    ResNet", 2018): a conv-BN-ReLU stem, then three layers of conv-BN-ReLU and
    2x2 max pooling, the 1st and 3rd followed by a residual block of two
    conv-BN-ReLUs; global max pooling; a bias-free classifier scaled by
    ``logit_scale``. Most of its work happens at 16x16 and below, which buys
    more accuracy per CPU-second than He et al.'s ResNets (results/cifar10/,
    results/bench/teachers.md).

    Options from Page's "bag of tricks" (2019): ``whiten`` replaces the stem
    with fixed patch-whitening filters of ``data``'s training images and a
    1x1 conv; ``activation="celu"``; ``bn_scale=False`` freezes the
    batch-norm scales at 1; ``pool_first`` max-pools each layer's conv output
    before its batch norm and activation instead of after; ``ghost_batch``
    normalises over groups of that many examples in training; ``bn_momentum``
    is the weight of the old value in the batch-norm moving statistics
    (None: Keras's 0.99)."""
    if len(widths) != 4 or min(widths) < 1:
        raise ConfigError(f"teacher.widths must list 4 positive widths (stem, 3 layers), got {list(widths)}")
    if activation not in ACTIVATIONS:
        raise ConfigError(f"teacher.activation must be one of {', '.join(ACTIVATIONS)}, got {activation!r}")
    inputs, x = _image_input(data, "teacher 'resnet9'")
    if ghost_batch is not None and ghost_batch < 1:
        raise ConfigError(f"teacher.ghost_batch must be a positive number of examples or null, got {ghost_batch}")
    bn_momentum = 0.99 if bn_momentum is None else bn_momentum
    if not 0.0 <= bn_momentum < 1.0:
        raise ConfigError(f"teacher.bn_momentum must be in [0, 1) or null, got {bn_momentum}")
    block = dict(activation=activation, bn_scale=bn_scale, ghost_batch=ghost_batch,
                 bn_momentum=bn_momentum)
    if whiten:
        kernel = patch_whitening(data.train.inputs)
        whitening = layers.Conv2D(kernel.shape[-1], 3, padding="same", use_bias=False,
                                  trainable=False, name="stem_whiten")
        x = whitening(x)
        whitening.set_weights([kernel])
        x = _conv_bn_act(x, widths[0], kernel_size=1, name="stem", **block)
    else:
        x = _conv_bn_act(x, widths[0], name="stem", **block)
    for layer, width in enumerate(widths[1:], start=1):
        x = _conv_bn_act(x, width, name=f"layer{layer}", pool=pool_first, **block)
        if not pool_first:
            x = layers.MaxPooling2D(2, name=f"layer{layer}_pool")(x)
        if layer != 2:
            y = _conv_bn_act(x, width, name=f"layer{layer}_res_a", **block)
            y = _conv_bn_act(y, width, name=f"layer{layer}_res_b", **block)
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
                              cfg.logit_scale, name="teacher_resnet9", whiten=bool(cfg.whiten),
                              activation=cfg.activation or "relu", bn_scale=cfg.bn_scale is not False,
                              pool_first=bool(cfg.pool_first), ghost_batch=cfg.ghost_batch,
                              bn_momentum=cfg.bn_momentum))
