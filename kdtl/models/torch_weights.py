"""Reading PyTorch ``.pth`` checkpoints of plain tensors without PyTorch.

Both of torch.save's layouts are read: the zip archive (``data.pkl`` plus one
file per storage) and the legacy stream (magic number, protocol, system info,
the pickled object, the storage keys, then each storage's element count and
bytes). The unpickler resolves only the names a state dict of tensors needs
and refuses every other global, so a doctored file cannot run code.
"""

from __future__ import annotations

import io
import pickle
import struct
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np

from kdtl.errors import ModelError

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16,
    "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_,
}


class _Storage:
    def __init__(self, dtype, key: str, numel: int):
        self.dtype, self.key, self.numel = dtype, key, numel
        self.array: np.ndarray | None = None


class _Tensor:
    def __init__(self, storage: _Storage, offset: int, shape, stride):
        self.storage, self.offset, self.shape, self.stride = storage, offset, tuple(shape), tuple(stride)

    def numpy(self) -> np.ndarray:
        base = self.storage.array
        item = base.itemsize
        if not self.shape:
            return base[self.offset].copy()
        view = np.lib.stride_tricks.as_strided(base[self.offset:], shape=self.shape,
                                               strides=[s * item for s in self.stride])
        return np.array(view)


def _rebuild_tensor(storage, offset, shape, stride, *unused):
    return _Tensor(storage, offset, shape, stride)


class _StorageType:
    def __init__(self, name: str):
        self.dtype = DTYPES[name]


class _Unpickler(pickle.Unpickler):
    def __init__(self, file, storages: dict):
        super().__init__(file)
        self.storages = storages

    def find_class(self, module, name):
        if module == "torch._utils" and name in ("_rebuild_tensor_v2", "_rebuild_tensor"):
            return _rebuild_tensor
        if module == "torch" and name in DTYPES:
            return _StorageType(name)
        if module == "collections" and name == "OrderedDict":
            return OrderedDict
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")

    def persistent_load(self, pid):
        # ('storage', storage_type, key, location, numel[, view_metadata])
        kind, storage_type, key, _location, numel = pid[:5]
        if kind != "storage":
            raise pickle.UnpicklingError(f"unknown persistent id {kind!r}")
        dtype = storage_type.dtype if isinstance(storage_type, _StorageType) else np.float32
        if key not in self.storages:
            self.storages[key] = _Storage(dtype, str(key), int(numel))
        return self.storages[key]


def _flatten(obj, prefix: str = "") -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    if isinstance(obj, _Tensor):
        out[prefix] = obj.numpy()
    elif isinstance(obj, dict):
        for key, value in obj.items():
            out.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def load_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """``{name: array}`` of every tensor in a ``.pth`` file."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"weights file {str(path)!r} does not exist")
    try:
        if zipfile.is_zipfile(path):
            return _load_zip(path)
        return _load_legacy(path.read_bytes())
    except (pickle.UnpicklingError, EOFError, ValueError, struct.error, KeyError) as error:
        raise ModelError(f"cannot read {str(path)!r} as a PyTorch state dict: {error}") from None


def _load_legacy(data: bytes) -> dict[str, np.ndarray]:
    stream = io.BytesIO(data)
    storages: dict = {}
    plain = lambda: _Unpickler(stream, storages).load()  # noqa: E731
    if plain() != LEGACY_MAGIC:
        raise pickle.UnpicklingError("not a PyTorch file (bad magic number)")
    plain()  # protocol version
    plain()  # system info
    obj = _Unpickler(stream, storages).load()
    keys = plain()
    for key in keys:
        storage = storages[key]
        (numel,) = struct.unpack("<q", stream.read(8))
        raw = stream.read(numel * np.dtype(storage.dtype).itemsize)
        storage.array = np.frombuffer(raw, dtype=storage.dtype)
    return _flatten(obj)


def _load_zip(path: Path) -> dict[str, np.ndarray]:
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        pkl = next(n for n in names if n.endswith("data.pkl"))
        root = pkl[: -len("data.pkl")]
        storages: dict = {}
        obj = _Unpickler(io.BytesIO(archive.read(pkl)), storages).load()
        for key, storage in storages.items():
            storage.array = np.frombuffer(archive.read(f"{root}data/{key}"), dtype=storage.dtype)
    return _flatten(obj)
