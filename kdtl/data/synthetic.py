"""A classification problem generated in memory.

Each class is a mixture of ``clusters_per_class`` Gaussian blobs in
``num_features`` dimensions; with several blobs per class the boundary is
non-linear, so a wide teacher beats a narrow student and its soft labels carry
information (which other classes an example resembles) that the hard labels
do not.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from omegaconf import MISSING

from kdtl.data.base import DATASETS, DataBundle, Split, fingerprint, stratified_split
from kdtl.errors import ConfigError


@dataclass
class SyntheticConfig:
    name: str = MISSING
    num_classes: int = MISSING
    num_features: int = MISSING
    num_train: int = MISSING
    num_test: int = MISSING
    validation_fraction: float = MISSING
    noise: float = MISSING
    clusters_per_class: int = MISSING
    seed: int = MISSING


class SyntheticDataset:
    def preflight(self, cfg, paths) -> None:
        for key in ("num_classes", "num_features", "num_train", "num_test", "clusters_per_class"):
            if cfg[key] <= 0:
                raise ConfigError(f"data.{key} must be > 0, got {cfg[key]}")
        if cfg.num_classes < 2:
            raise ConfigError(f"data.num_classes must be >= 2, got {cfg.num_classes}")
        if not 0 < cfg.validation_fraction < 1:
            raise ConfigError(f"data.validation_fraction must be in (0, 1), got {cfg.validation_fraction}")

    def load(self, cfg, paths) -> DataBundle:
        rng = np.random.default_rng(cfg.seed)
        centres = rng.normal(0.0, 1.0, (cfg.num_classes, cfg.clusters_per_class, cfg.num_features))

        def sample(count: int) -> Split:
            labels = rng.integers(0, cfg.num_classes, count).astype(np.int32)
            clusters = rng.integers(0, cfg.clusters_per_class, count)
            noise = rng.normal(0.0, cfg.noise, (count, cfg.num_features))
            features = (centres[labels, clusters] + noise).astype(np.float32)
            return Split(features, labels)

        train_all, test = sample(cfg.num_train), sample(cfg.num_test)
        kept, held = stratified_split(train_all.labels, cfg.validation_fraction, cfg.seed)
        train, validation = train_all.take(kept), train_all.take(held)
        return DataBundle(
            name="synthetic",
            kind="features",
            num_classes=cfg.num_classes,
            class_names=[f"class_{i}" for i in range(cfg.num_classes)],
            train=train,
            validation=validation,
            test=test,
            input_shape=(cfg.num_features,),
            source="generated in memory",
            fingerprint=fingerprint(train.inputs, train.labels, validation.labels, test.labels),
        )


DATASETS.register("synthetic", schema=SyntheticConfig)(SyntheticDataset())
