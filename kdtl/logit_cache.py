"""Teacher logits computed once per (teacher, data, split) and kept on disk.

Each split is ``<name>.npy`` beside ``<name>.json``, whose metadata names the
teacher key, the data fingerprint, the shape, the dtype and the file's
SHA-256. Anything that does not match -- another teacher, changed data, a
truncated or edited file -- is reported and the logits are computed again; a
damaged cache is never used.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Callable

import numpy as np

from kdtl import console


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def cache_folder(cache_dir: str | Path, teacher_key: str, data_fingerprint: str) -> Path:
    return Path(cache_dir).expanduser() / "logits" / f"{teacher_key}-{data_fingerprint}"


def check(folder: Path, split: str, expected: dict) -> tuple[np.ndarray | None, str]:
    """Returns ``(logits, "")`` when the cache is valid, else ``(None, why)``."""
    array_path, meta_path = folder / f"{split}.npy", folder / f"{split}.json"
    if not array_path.is_file() or not meta_path.is_file():
        return None, "not cached yet"
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, json.JSONDecodeError):
        return None, "metadata unreadable"
    for key, value in expected.items():
        if meta.get(key) != value:
            return None, f"{key} changed ({meta.get(key)!r} -> {value!r})"
    if _sha256(array_path) != meta.get("sha256"):
        return None, "file damaged (checksum differs)"
    try:
        logits = np.load(array_path, allow_pickle=False)
    except (OSError, ValueError) as error:
        return None, f"file unreadable ({error})"
    if list(logits.shape) != meta.get("shape") or str(logits.dtype) != meta.get("dtype"):
        return None, "shape or dtype differs from metadata"
    return logits, ""


def load_or_compute(folder: Path, split: str, expected: dict,
                    compute: Callable[[], np.ndarray]) -> np.ndarray:
    """The cached logits of ``split``, computing and saving them when needed.

    ``expected`` holds the facts the cache must agree with (teacher key, data
    fingerprint, sequence length, ...), stored in the metadata.
    """
    logits, why = check(folder, split, expected)
    if logits is not None:
        return logits
    if why != "not cached yet":
        console.info(f"teacher logits for {split}: cache rejected, {why}; recomputing")
    logits = np.ascontiguousarray(compute(), dtype=np.float32)
    folder.mkdir(parents=True, exist_ok=True)
    array_path, meta_path = folder / f"{split}.npy", folder / f"{split}.json"
    tmp = folder / f".{split}.npy.tmp"
    with open(tmp, "wb") as f:
        np.save(f, logits)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, array_path)
    meta = dict(expected, shape=list(logits.shape), dtype=str(logits.dtype), sha256=_sha256(array_path))
    meta_path.write_text(json.dumps(meta, indent=2))
    return logits
