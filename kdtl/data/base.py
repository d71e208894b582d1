"""What every dataset returns, and the split helpers they share."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from kdtl.registry import Registry

DATASETS: Registry = Registry("data")


@dataclass
class Split:
    """Raw examples of one split: ``inputs`` (an array, or a dict of arrays
    for several fields) and integer ``labels`` in [0, num_classes)."""

    inputs: Any
    labels: np.ndarray

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def take(self, indices: np.ndarray) -> "Split":
        return Split(_take(self.inputs, indices), self.labels[indices])


def _take(inputs: Any, indices: np.ndarray) -> Any:
    if isinstance(inputs, dict):
        return {key: value[indices] for key, value in inputs.items()}
    return inputs[indices]


@dataclass
class DataBundle:
    name: str
    kind: str
    """'features' (float vectors), 'image' (uint8 HxWxC) or 'text' (str)."""
    num_classes: int
    class_names: list[str]
    train: Split
    validation: Split
    test: Split
    input_shape: tuple | None = None
    source: str = ""
    """Where the examples came from, for the summary."""
    fingerprint: str = ""
    """Changes whenever the examples or their split change; keys caches."""
    augment: Any = None
    """``augment(batch, example_indices, epoch) -> batch`` for training batches
    (tf ops, deterministic in its arguments), or ``None``."""
    augment_with: Any = None
    """``augment_with(overrides) -> augment`` with some of the data's augment
    settings replaced (a teacher stage's own augmentation), or ``None`` where
    the data has no augment settings."""
    info: dict = field(default_factory=dict)

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "validation": len(self.validation), "test": len(self.test)}


def stratified_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (kept, held_out) with ``fraction`` of each class held out.

    Deterministic for a given seed; each index list is sorted so the result
    does not depend on the order classes are visited in.
    """
    rng = np.random.default_rng(seed)
    held = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        count = int(round(fraction * members.size))
        held.append(rng.permutation(members)[:count])
    held_out = np.sort(np.concatenate(held)) if held else np.zeros(0, np.int64)
    mask = np.ones(labels.shape[0], bool)
    mask[held_out] = False
    return np.flatnonzero(mask), held_out


def stratified_subset(labels: np.ndarray, limit: int | None, seed: int) -> np.ndarray:
    """Sorted indices of at most ``limit`` examples with class proportions kept."""
    if limit is None or limit >= labels.shape[0]:
        return np.arange(labels.shape[0])
    _, chosen = stratified_split(labels, limit / labels.shape[0], seed)
    return chosen


def fingerprint(*parts: Any) -> str:
    """A short stable hash of arrays and plain values."""
    digest = hashlib.sha256()
    for part in parts:
        if isinstance(part, np.ndarray):
            digest.update(str((part.dtype, part.shape)).encode())
            digest.update(np.ascontiguousarray(part).tobytes() if part.dtype != object
                          else "\x00".join(map(str, part.tolist())).encode())
        elif isinstance(part, dict):
            for key in sorted(part):
                digest.update(key.encode())
                digest.update(fingerprint(part[key]).encode())
        else:
            digest.update(repr(part).encode())
    return digest.hexdigest()[:16]


def make_splits(train_all: Split, test: Split, cfg) -> tuple[Split, Split, Split]:
    """Carves validation out of train (stratified, ``cfg.split_seed``) and
    applies ``limit_train`` / ``limit_val`` / ``limit_test`` (stratified)."""
    kept, held = stratified_split(train_all.labels, cfg.validation_fraction, cfg.split_seed)
    train, validation = train_all.take(kept), train_all.take(held)
    train = train.take(stratified_subset(train.labels, cfg.limit_train, cfg.split_seed))
    validation = validation.take(stratified_subset(validation.labels, cfg.limit_val, cfg.split_seed))
    test = test.take(stratified_subset(test.labels, cfg.limit_test, cfg.split_seed))
    return train, validation, test


def check_split_settings(cfg) -> None:
    from kdtl.errors import ConfigError

    if not 0 < cfg.validation_fraction < 1:
        raise ConfigError(f"data.validation_fraction must be in (0, 1), got {cfg.validation_fraction}")
    for key in ("limit_train", "limit_val", "limit_test"):
        if cfg[key] is not None and cfg[key] < 1:
            raise ConfigError(f"data.{key} must be >= 1 or null, got {cfg[key]}")
