"""Finding a dataset on disk, reading archives, and caching decoded arrays.

Where a dataset comes from, in this order:

1. ``data.path``: a folder or an archive given explicitly;
2. ``paths.data_dir`` (``KDTL_DATA_DIR``): a folder searched for the names the
   dataset usually has on disk (``aclImdb.tar.gz``, ``cifar-10-python.tar.gz``...);
3. tensorflow-datasets, which downloads it (online users).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Callable, Iterator

import numpy as np

from kdtl.errors import DataError

ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".zip")
CACHE_VERSION = 1


def is_archive(path: Path) -> bool:
    return path.is_file() and path.name.endswith(ARCHIVE_SUFFIXES)


@dataclass(frozen=True)
class Source:
    path: Path | None
    """A folder or archive; ``None`` means tensorflow-datasets."""
    how: str

    def describe(self) -> str:
        return str(self.path) if self.path else self.how


def resolve(explicit: str | None, data_dir: str | None, candidates: list[str], dataset: str,
            tfds_name: str | None, layout: str) -> Source:
    """Applies the lookup order above, with an error that says where it looked."""
    online = (f"; without data.path and KDTL_DATA_DIR it is downloaded by tensorflow-datasets "
              f"({tfds_name!r})") if tfds_name else ""
    if explicit:
        path = Path(explicit).expanduser()
        if not path.exists():
            raise DataError(f"data.path {str(path)!r} does not exist; expected {layout}{online}")
        return Source(path, "data.path")
    if data_dir:
        folder = Path(data_dir).expanduser()
        if not folder.is_dir():
            raise DataError(f"paths.data_dir (KDTL_DATA_DIR) {str(folder)!r} is not a folder")
        for name in candidates:
            if (folder / name).exists():
                return Source(folder / name, "paths.data_dir")
        raise DataError(f"no {dataset} in {str(folder)!r}: looked for {', '.join(candidates)}; "
                        f"expected {layout}, or set data.path{online}")
    if tfds_name is None:
        raise DataError(f"{dataset} needs data.path (a folder or archive in the layout {layout})")
    return Source(None, f"tensorflow-datasets {tfds_name!r}")


@dataclass(frozen=True)
class Member:
    """A file inside a folder or archive, by its path relative to the root."""

    parts: tuple[str, ...]
    read: Callable[[], bytes]

    @property
    def name(self) -> str:
        return "/".join(self.parts)


def iter_files(path: Path) -> Iterator[Member]:
    """Every regular file under a folder or inside an archive, in sorted order
    for folders and archive order for archives (callers sort if they care)."""
    if path.is_dir():
        for file in sorted(p for p in path.rglob("*") if p.is_file()):
            yield Member(file.relative_to(path).parts, file.read_bytes)
    elif path.name.endswith(".zip"):
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                if not info.is_dir():
                    yield Member(PurePosixPath(info.filename).parts,
                                 lambda info=info: archive.read(info))
    elif path.name.endswith((".tar", ".tar.gz", ".tgz")):
        try:
            with tarfile.open(path) as archive:
                for info in archive:
                    if info.isfile():
                        data = archive.extractfile(info).read()
                        yield Member(PurePosixPath(info.name).parts, lambda data=data: data)
        except (tarfile.TarError, EOFError, OSError) as error:
            raise DataError(f"cannot read archive {str(path)!r}: {error}") from None
    else:
        raise DataError(f"{str(path)!r} is neither a folder nor an archive ({', '.join(ARCHIVE_SUFFIXES)})")


def iter_dirs(path: Path) -> Iterator[tuple[str, ...]]:
    """Relative parts of every folder under a folder or inside a tar/zip."""
    if path.is_dir():
        for folder in sorted(p for p in path.rglob("*") if p.is_dir()):
            yield folder.relative_to(path).parts
    elif path.name.endswith(".zip"):
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                if info.is_dir():
                    yield PurePosixPath(info.filename).parts
    elif path.name.endswith((".tar", ".tar.gz", ".tgz")):
        with tarfile.open(path) as archive:
            for info in archive:
                if info.isdir():
                    yield PurePosixPath(info.name).parts


def split_tree(members: Iterator[Member], path: Path, layout: str,
               skip: Callable[[Member], bool] = lambda m: False
               ) -> dict[str, dict[str, list[Member]]]:
    """Groups files laid out as ``[<root>/]{train,test}/<class>/<file>`` into
    ``{split: {class: [members]}}``; errors name what is wrong."""
    tree: dict[str, dict[str, list[Member]]] = {}
    for parts in iter_dirs(path):
        if len(parts) >= 2 and parts[-2] in ("train", "test") and not parts[-1].startswith("."):
            tree.setdefault(parts[-2], {}).setdefault(parts[-1], [])
    for member in members:
        if skip(member) or member.parts[-1].startswith("."):
            continue
        parts = member.parts
        for i, part in enumerate(parts[:-2]):
            if part in ("train", "test") and len(parts) - i == 3:
                tree.setdefault(part, {}).setdefault(parts[i + 1], []).append(member)
                break
    missing = [split for split in ("train", "test") if split not in tree]
    if missing:
        raise DataError(f"{str(path)!r} has no {' or '.join(missing)} split; expected {layout}")
    if set(tree["train"]) != set(tree["test"]):
        only_train = sorted(set(tree["train"]) - set(tree["test"]))
        only_test = sorted(set(tree["test"]) - set(tree["train"]))
        raise DataError(f"{str(path)!r}: train and test classes differ "
                        f"(only in train: {only_train or '-'}; only in test: {only_test or '-'})")
    for split, classes in tree.items():
        for name, files in classes.items():
            if not files:
                raise DataError(f"{str(path)!r}: class folder {split}/{name} has no files")
    return tree


def source_key(path: Path, *settings) -> str:
    """Identifies a source by its absolute path, size and mtime (cheap) plus
    the settings that shape the decoded arrays."""
    stats = []
    if path.is_dir():
        for file in sorted(p for p in path.rglob("*") if p.is_file()):
            st = file.stat()
            stats.append((str(file.relative_to(path)), st.st_size, int(st.st_mtime)))
    else:
        st = path.stat()
        stats.append((path.name, st.st_size, int(st.st_mtime)))
    blob = json.dumps([CACHE_VERSION, str(path.resolve()), stats, settings], default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def cached_arrays(cache_dir: str | Path, name: str, key: str,
                  decode: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """``decode()``'s arrays, computed once and kept under
    ``<cache_dir>/datasets/<name>-<key>/`` as ``.npy`` files."""
    folder = Path(cache_dir).expanduser() / "datasets" / f"{name}-{key}"
    done = folder / "done.json"
    if done.is_file():
        names = json.loads(done.read_text())["arrays"]
        try:
            return {n: np.load(folder / f"{n}.npy", allow_pickle=False) for n in names}
        except (OSError, ValueError):
            pass  # damaged: decode again below
    arrays = decode()
    tmp = folder.with_name(folder.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    for n, array in arrays.items():
        np.save(tmp / f"{n}.npy", array, allow_pickle=False)
    (tmp / "done.json").write_text(json.dumps({"arrays": sorted(arrays)}))
    if folder.exists():
        shutil.rmtree(folder)
    os.replace(tmp, folder)
    return arrays


def pack_texts(texts: list[str]) -> dict[str, np.ndarray]:
    """Strings as one UTF-8 byte array plus offsets (no pickle, no padding)."""
    encoded = [t.encode("utf-8") for t in texts]
    offsets = np.zeros(len(encoded) + 1, np.int64)
    offsets[1:] = np.cumsum([len(e) for e in encoded])
    blob = np.frombuffer(b"".join(encoded), np.uint8) if encoded else np.zeros(0, np.uint8)
    return {"blob": blob, "offsets": offsets}


def unpack_texts(blob: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    raw = blob.tobytes()
    return np.array([raw[offsets[i]:offsets[i + 1]].decode("utf-8") for i in range(len(offsets) - 1)],
                    dtype=object)


def class_names(arrays: dict[str, np.ndarray], expected: int | None, source: Source) -> list[str]:
    """The decoded class names, checked against ``data.num_classes`` when set."""
    names = [str(c) for c in arrays["class_names"]]
    if expected is not None and expected != len(names):
        raise DataError(f"data.num_classes is {expected} but {source.describe()} has "
                        f"{len(names)} classes ({', '.join(names[:12])})")
    return names
