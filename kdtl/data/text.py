"""Text datasets: IMDB and any ``{train,test}/<class>/*.txt`` folder, CSV or JSONL.

Raw strings are what a text dataset yields; the teacher's tokenizer and the
student's tokenization both derive from them (see the models' ``encode``).
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
from omegaconf import MISSING

from kdtl.data import sources
from kdtl.data.base import DATASETS, DataBundle, Split, check_split_settings, fingerprint, make_splits
from kdtl.errors import DataError

FOLDER_LAYOUT = ("{train,test}/<class>/*.txt (a folder, .tar, .tar.gz or .zip), or a folder with "
                 "train.csv and test.csv (or .jsonl) holding a text and a label column")
IMDB_LAYOUT = "aclImdb/{train,test}/{pos,neg}/*.txt, as a folder or aclImdb*.tar.gz"


@dataclass
class TextDataConfig:
    name: str = MISSING
    num_classes: Optional[int] = None
    path: Optional[str] = None
    text_column: str = MISSING
    label_column: str = MISSING
    validation_fraction: float = MISSING
    split_seed: int = MISSING
    limit_train: Optional[int] = None
    limit_val: Optional[int] = None
    limit_test: Optional[int] = None


@dataclass
class ImdbConfig(TextDataConfig):
    tfds_name: str = MISSING


def _decode(data: bytes) -> str:
    # IMDB reviews carry "<br />" line breaks from their HTML origin.
    return data.decode("utf-8", errors="replace").replace("<br />", " ")


def read_text_folder(path: Path) -> dict[str, np.ndarray]:
    skip = lambda m: not m.parts[-1].endswith(".txt")  # noqa: E731
    tree = sources.split_tree(sources.iter_files(path), path, FOLDER_LAYOUT, skip)
    class_names = sorted(tree["train"])
    arrays: dict[str, np.ndarray] = {"class_names": np.array(class_names)}
    for split in ("train", "test"):
        texts, labels = [], []
        for label, name in enumerate(class_names):
            for member in sorted(tree[split][name], key=lambda m: m.name):
                texts.append(_decode(member.read()))
                labels.append(label)
        packed = sources.pack_texts(texts)
        arrays[f"{split}_blob"], arrays[f"{split}_offsets"] = packed["blob"], packed["offsets"]
        arrays[f"{split}_labels"] = np.array(labels, np.int32)
    return arrays


def _rows(file: Path, text_column: str, label_column: str) -> list[tuple[str, str]]:
    raw = file.read_text(encoding="utf-8")
    if file.suffix == ".jsonl":
        records = [json.loads(line) for line in raw.splitlines() if line.strip()]
    else:
        records = list(csv.DictReader(io.StringIO(raw)))
    for column in (text_column, label_column):
        if records and column not in records[0]:
            raise DataError(f"{str(file)!r} has no {column!r} column (columns: "
                            f"{', '.join(records[0])}); set data.text_column / data.label_column")
    if not records:
        raise DataError(f"{str(file)!r} holds no rows")
    return [(str(r[text_column]), str(r[label_column])) for r in records]


def read_table_files(path: Path, text_column: str, label_column: str) -> dict[str, np.ndarray]:
    found = {}
    for split in ("train", "test"):
        for suffix in (".csv", ".jsonl"):
            if (path / f"{split}{suffix}").is_file():
                found[split] = path / f"{split}{suffix}"
    if set(found) != {"train", "test"}:
        raise DataError(f"{str(path)!r} needs train.csv and test.csv (or .jsonl); expected {FOLDER_LAYOUT}")
    rows = {split: _rows(file, text_column, label_column) for split, file in found.items()}
    class_names = sorted({label for _, label in rows["train"]})
    unknown = sorted({label for _, label in rows["test"]} - set(class_names))
    if unknown:
        raise DataError(f"{str(path)!r}: test labels {unknown[:5]} do not occur in train")
    index = {name: i for i, name in enumerate(class_names)}
    arrays: dict[str, np.ndarray] = {"class_names": np.array(class_names)}
    for split, pairs in rows.items():
        packed = sources.pack_texts([text for text, _ in pairs])
        arrays[f"{split}_blob"], arrays[f"{split}_offsets"] = packed["blob"], packed["offsets"]
        arrays[f"{split}_labels"] = np.array([index[label] for _, label in pairs], np.int32)
    return arrays


def read_tfds_text(tfds_name: str) -> dict[str, np.ndarray]:
    import tensorflow_datasets as tfds

    try:
        splits, info = tfds.load(tfds_name, split=["train", "test"], as_supervised=True,
                                 with_info=True, batch_size=-1)
    except Exception as error:
        raise DataError(f"tensorflow-datasets could not load {tfds_name!r} ({str(error).splitlines()[0]}); "
                        f"offline, point data.path or KDTL_DATA_DIR at a copy in the layout "
                        f"{IMDB_LAYOUT}") from None
    arrays = {"class_names": np.array(info.features["label"].names)}
    for split, (texts, labels) in zip(("train", "test"), splits):
        packed = sources.pack_texts([_decode(t) for t in tfds.as_numpy(texts)])
        arrays[f"{split}_blob"], arrays[f"{split}_offsets"] = packed["blob"], packed["offsets"]
        arrays[f"{split}_labels"] = tfds.as_numpy(labels).astype(np.int32)
    return arrays


class TextFolderDataset:
    layout = FOLDER_LAYOUT
    candidates: list[str] = []

    def _source(self, cfg, paths) -> sources.Source:
        tfds_name = cfg.get("tfds_name")
        return sources.resolve(cfg.path, paths.data_dir if self.candidates else None,
                               self.candidates, cfg.name, tfds_name, self.layout)

    def preflight(self, cfg, paths) -> None:
        check_split_settings(cfg)
        self._source(cfg, paths)

    def _read(self, source, cfg, paths) -> dict[str, np.ndarray]:
        path = source.path
        key = sources.source_key(path, cfg.text_column, cfg.label_column)
        if path.is_dir() and any((path / f"train{s}").is_file() for s in (".csv", ".jsonl")):
            decode = lambda: read_table_files(path, cfg.text_column, cfg.label_column)  # noqa: E731
        else:
            decode = lambda: read_text_folder(path)  # noqa: E731
        return sources.cached_arrays(paths.cache_dir, cfg.name, key, decode)

    def load(self, cfg, paths) -> DataBundle:
        source = self._source(cfg, paths)
        arrays = self._read(source, cfg, paths)
        class_names = sources.class_names(arrays, cfg.num_classes, source)
        splits = {split: Split(sources.unpack_texts(arrays[f"{split}_blob"], arrays[f"{split}_offsets"]),
                               arrays[f"{split}_labels"]) for split in ("train", "test")}
        train, validation, test = make_splits(splits["train"], splits["test"], cfg)
        return DataBundle(
            name=cfg.name, kind="text", num_classes=len(class_names), class_names=class_names,
            train=train, validation=validation, test=test, source=source.describe(),
            fingerprint=fingerprint(arrays["train_offsets"], arrays["test_offsets"],
                                    arrays["train_labels"], len(train), len(validation), len(test),
                                    cfg.split_seed, cfg.validation_fraction))


class ImdbDataset(TextFolderDataset):
    layout = IMDB_LAYOUT
    candidates = ["aclImdb", "aclImdb.tar.gz", "aclImdb_v1.tar.gz"]

    def _read(self, source, cfg, paths) -> dict[str, np.ndarray]:
        if source.path is None:
            return read_tfds_text(cfg.tfds_name)
        return super()._read(source, cfg, paths)


DATASETS.register("text_folder", schema=TextDataConfig)(TextFolderDataset())
DATASETS.register("imdb", schema=ImdbConfig)(ImdbDataset())
