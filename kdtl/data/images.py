"""Image datasets: CIFAR-10 and any ``{train,test}/<class>/<image>`` folder.

Images are decoded once to uint8 arrays (cached, see ``sources.cached_arrays``)
and stay uint8 in the pipeline; each model normalises its own input inside the
model, so training, evaluation and the saved ``student.keras`` agree.
"""

from __future__ import annotations

import io
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional

import numpy as np
import tensorflow as tf
from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, ValidationError
from PIL import Image, UnidentifiedImageError

from kdtl.data.base import DATASETS, DataBundle, Split, check_split_settings, fingerprint, make_splits
from kdtl.data import sources
from kdtl.errors import ConfigError, DataError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                   "ship", "truck"]
FOLDER_LAYOUT = "{train,test}/<class>/<image> (a folder, .tar, .tar.gz or .zip)"


@dataclass
class AugmentConfig:
    crop_padding: int = MISSING
    """Pad each side by this many pixels (reflect), then crop back at random; 0 = off."""
    flip: bool = MISSING
    """Random horizontal flip."""
    alternate_flip: Optional[bool] = None
    """With ``flip``: mirror each image in every other epoch, starting at
    random per image, rather than at random in each epoch (Jordan 2024,
    "94% on CIFAR-10 in 3.29 seconds": no two epochs in a row show an image
    the same way round); null = off."""
    cutout: Optional[int] = None
    """Erase a square of this side to mid-grey, centred anywhere in the image
    (so it may be cut by the border; DeVries & Taylor 2017); null or 0 = off."""


@dataclass
class ImageDataConfig:
    name: str = MISSING
    num_classes: Optional[int] = None
    path: Optional[str] = None
    image_size: Optional[List[int]] = None
    """[height, width] to resize to; null keeps the files' size (which must then agree)."""
    validation_fraction: float = MISSING
    split_seed: int = MISSING
    limit_train: Optional[int] = None
    limit_val: Optional[int] = None
    limit_test: Optional[int] = None
    augment: AugmentConfig = field(default_factory=AugmentConfig)


@dataclass
class Cifar10Config(ImageDataConfig):
    tfds_name: str = MISSING


def decode_image(data: bytes, name: str, size: tuple[int, int] | None) -> np.ndarray:
    try:
        with Image.open(io.BytesIO(data)) as image:
            image = image.convert("RGB")
            if size is not None and image.size != (size[1], size[0]):
                image = image.resize((size[1], size[0]), Image.BILINEAR)
            return np.asarray(image, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError) as error:
        raise DataError(f"image {name!r} does not decode: {error}") from None


def read_image_folder(path: Path, size: tuple[int, int] | None) -> dict[str, np.ndarray]:
    """Arrays ``{split}_images``, ``{split}_labels`` and ``class_names``."""
    skip = lambda m: not m.parts[-1].lower().endswith(IMAGE_SUFFIXES)  # noqa: E731
    tree = sources.split_tree(sources.iter_files(path), path, FOLDER_LAYOUT, skip)
    class_names = sorted(tree["train"])
    arrays: dict[str, np.ndarray] = {"class_names": np.array(class_names)}
    shapes = set()
    for split in ("train", "test"):
        images, labels = [], []
        for label, name in enumerate(class_names):
            for member in sorted(tree[split][name], key=lambda m: m.name):
                image = decode_image(member.read(), member.name, size)
                shapes.add(image.shape)
                if len(shapes) > 1:
                    raise DataError(f"{str(path)!r}: images differ in size ({sorted(shapes)[:2]}, "
                                    f"e.g. {member.name!r}); set data.image_size=[height,width]")
                images.append(image)
                labels.append(label)
        arrays[f"{split}_images"] = np.stack(images)
        arrays[f"{split}_labels"] = np.array(labels, np.int32)
    return arrays


class _ArraysOnly(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays only: a pickle that names
    any other callable (``os.system``, ``eval``...) is refused, not run."""

    ALLOWED = {
        ("numpy", "ndarray"), ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
        ("_codecs", "encode"),
    }

    def find_class(self, module, name):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def safe_unpickle(data: bytes, name: str):
    try:
        return _ArraysOnly(io.BytesIO(data), encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as error:
        raise DataError(f"{name!r} is not a plain CIFAR batch (only arrays, dicts, lists and "
                        f"strings are accepted): {error}") from None


def _batch(obj, name: str) -> tuple[np.ndarray, np.ndarray]:
    if not isinstance(obj, dict):
        raise DataError(f"{name!r} is not a CIFAR batch (a dict with data and labels)")
    get = lambda key: obj.get(key.encode(), obj.get(key))  # noqa: E731
    data, labels = get("data"), get("labels")
    if not isinstance(data, np.ndarray) or labels is None:
        raise DataError(f"{name!r} is not a CIFAR batch (a dict with data and labels)")
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).astype(np.uint8)
    return images, np.asarray(labels, np.int32)


def read_cifar_batches(path: Path) -> dict[str, np.ndarray]:
    """The python-pickle CIFAR-10 release: ``cifar-10-batches-py`` or its tar.gz."""
    found = {m.parts[-1]: m for m in sources.iter_files(path)}
    train_names = [f"data_batch_{i}" for i in range(1, 6)]
    missing = [n for n in train_names + ["test_batch"] if n not in found]
    if missing:
        raise DataError(f"{str(path)!r} lacks {', '.join(missing)}; expected the CIFAR-10 python "
                        "batches (cifar-10-batches-py)")
    train = [_batch(safe_unpickle(found[n].read(), n), n) for n in train_names]
    test_images, test_labels = _batch(safe_unpickle(found["test_batch"].read(), "test_batch"), "test_batch")
    return {"class_names": np.array(CIFAR10_CLASSES),
            "train_images": np.concatenate([t[0] for t in train]),
            "train_labels": np.concatenate([t[1] for t in train]),
            "test_images": test_images, "test_labels": test_labels}


def read_tfds_images(tfds_name: str, data_dir: str | None) -> dict[str, np.ndarray]:
    import tensorflow_datasets as tfds

    try:
        splits, info = tfds.load(tfds_name, split=["train", "test"], as_supervised=True,
                                 with_info=True, batch_size=-1, data_dir=data_dir)
    except Exception as error:  # network, missing builder, ...
        raise DataError(f"tensorflow-datasets could not load {tfds_name!r} ({str(error).splitlines()[0]}); "
                        f"offline, point data.path or KDTL_DATA_DIR at a copy in the layout "
                        f"{FOLDER_LAYOUT} or the CIFAR python batches") from None
    arrays = {"class_names": np.array(info.features["label"].names)}
    for split, (images, labels) in zip(("train", "test"), splits):
        arrays[f"{split}_images"] = tfds.as_numpy(images).astype(np.uint8)
        arrays[f"{split}_labels"] = tfds.as_numpy(labels).astype(np.int32)
    return arrays


def check_augment(cfg: AugmentConfig, where: str) -> None:
    if cfg.crop_padding < 0:
        raise DataError(f"{where}.crop_padding must be >= 0, got {cfg.crop_padding}")
    if (getattr(cfg, "cutout", None) or 0) < 0:
        raise DataError(f"{where}.cutout must be >= 0 or null, got {cfg.cutout}")
    if getattr(cfg, "alternate_flip", None) and not cfg.flip:
        raise DataError(f"{where}.alternate_flip needs {where}.flip: true")


def make_augment(cfg: AugmentConfig, seed: int):
    """Pad-and-random-crop, horizontal flip and cutout over whole uint8 batches.

    The crop offsets, flip and cutout square of an example are a hash of
    ``(seed, epoch, example index)``: the same on a resumed run, and the same
    for a given view index when logits of augmented views are cached. With
    ``alternate_flip`` the flip is a hash of ``(seed, example index)`` that
    inverts in every other epoch (or view: an even number of views keeps the
    alternation across epochs).
    """
    pad, flip, cutout = int(cfg.crop_padding), bool(cfg.flip), int(getattr(cfg, "cutout", None) or 0)
    alternate = flip and bool(getattr(cfg, "alternate_flip", None))
    if pad == 0 and not flip and not cutout:
        return None

    def mix(indices, epoch):
        h = (indices * 2654435761 + epoch * 40503 + seed * 97 + 12345) % 2147483647
        return (h * 48271) % 2147483647  # one more LCG step mixes the low bits

    def augment(images, indices, epoch):
        indices = tf.cast(indices, tf.int64)
        epoch = tf.cast(epoch, tf.int64)
        h = mix(indices, epoch)
        shape = tf.shape(images)
        height, width = shape[1], shape[2]
        if pad:
            padded = tf.pad(images, [[0, 0], [pad, pad], [pad, pad], [0, 0]], mode="REFLECT")
            span = 2 * pad + 1
            dy = tf.cast(h % span, tf.int32)
            dx = tf.cast((h // span) % span, tf.int32)
            rows = dy[:, None] + tf.range(height)[None, :]
            cols = dx[:, None] + tf.range(width)[None, :]
            images = tf.gather(padded, rows, axis=1, batch_dims=1)
            images = tf.gather(images, cols, axis=2, batch_dims=1)
        if flip:
            bit = mix(indices, tf.zeros_like(epoch)) // 1000003 + epoch if alternate else h // 1000003
            flips = tf.equal(bit % 2, 1)
            images = tf.where(flips[:, None, None, None], tf.reverse(images, axis=[2]), images)
        if cutout:
            # h is linear in the index; an xorshift-multiply round decorrelates
            # the centres of neighbouring examples (and from the crop and flip).
            g = tf.bitwise.bitwise_xor(h, tf.bitwise.right_shift(h, 13)) * 1274126177 % 2147483647
            g = tf.bitwise.bitwise_xor(g, tf.bitwise.right_shift(g, 16))
            top = tf.cast(g % tf.cast(height, tf.int64), tf.int32) - cutout // 2
            left = tf.cast((g // 65536) % tf.cast(width, tf.int64), tf.int32) - cutout // 2
            rows = tf.range(height)[None, :] - top[:, None]
            cols = tf.range(width)[None, :] - left[:, None]
            in_rows = (rows >= 0) & (rows < cutout)
            in_cols = (cols >= 0) & (cols < cutout)
            inside = in_rows[:, :, None] & in_cols[:, None, :]
            images = tf.where(inside[..., None], tf.constant(128, images.dtype), images)
        return images

    return augment


class ImageFolderDataset:
    layout = FOLDER_LAYOUT
    candidates: list[str] = []
    tfds_name_key = None

    def _source(self, cfg, paths) -> sources.Source:
        tfds_name = cfg.get("tfds_name") if self.tfds_name_key else None
        return sources.resolve(cfg.path, paths.data_dir if self.candidates else None,
                               self.candidates, cfg.name, tfds_name, self.layout)

    def preflight(self, cfg, paths) -> None:
        check_split_settings(cfg)
        if cfg.image_size is not None and (len(cfg.image_size) != 2 or min(cfg.image_size) < 1):
            raise DataError(f"data.image_size must be [height, width], got {list(cfg.image_size)}")
        check_augment(cfg.augment, "data.augment")
        self._source(cfg, paths)

    def _read(self, source: sources.Source, cfg, paths) -> dict[str, np.ndarray]:
        size = tuple(cfg.image_size) if cfg.image_size else None
        key = sources.source_key(source.path, size)
        return sources.cached_arrays(paths.cache_dir, cfg.name, key,
                                     lambda: read_image_folder(source.path, size))

    def load(self, cfg, paths) -> DataBundle:
        source = self._source(cfg, paths)
        arrays = self._read(source, cfg, paths)
        class_names = sources.class_names(arrays, cfg.num_classes, source)
        train_all = Split(arrays["train_images"], arrays["train_labels"])
        test = Split(arrays["test_images"], arrays["test_labels"])
        train, validation, test = make_splits(train_all, test, cfg)
        return DataBundle(
            name=cfg.name, kind="image", num_classes=len(class_names), class_names=class_names,
            train=train, validation=validation, test=test,
            input_shape=tuple(train.inputs.shape[1:]), source=source.describe(),
            fingerprint=fingerprint(arrays["train_labels"], arrays["test_labels"],
                                    train.inputs[:64], len(train), len(validation), len(test),
                                    cfg.split_seed, cfg.validation_fraction),
            augment=make_augment(cfg.augment, cfg.split_seed),
            augment_with=lambda overrides: make_augment(
                merge_augment(cfg.augment, overrides), cfg.split_seed))


def merge_augment(cfg, overrides) -> AugmentConfig:
    """``cfg`` with the settings ``overrides`` gives a value replaced (checked;
    a null keeps ``cfg``'s)."""
    merged = OmegaConf.merge(OmegaConf.structured(AugmentConfig), cfg)
    if isinstance(overrides, DictConfig):
        overrides = OmegaConf.to_container(overrides)
    try:
        merged = OmegaConf.merge(merged, {k: v for k, v in overrides.items() if v is not None})
    except (ConfigKeyError, ValidationError) as error:
        raise ConfigError(f"teacher.training.augment: {str(error).splitlines()[0]} (settings: "
                          f"{', '.join(AugmentConfig.__dataclass_fields__)})") from None
    check_augment(merged, "teacher.training.augment")
    return merged


class Cifar10Dataset(ImageFolderDataset):
    layout = ("cifar10/{train,test}/<class>/*.jpg (folder or .tar.gz), or the CIFAR-10 python "
              "batches (cifar-10-batches-py or cifar-10-python.tar.gz)")
    candidates = ["cifar10", "cifar10-jpeg.tar.gz", "cifar-10-batches-py", "cifar-10-python.tar.gz"]
    tfds_name_key = "tfds_name"

    def _read(self, source: sources.Source, cfg, paths) -> dict[str, np.ndarray]:
        if source.path is None:
            return read_tfds_images(cfg.tfds_name, None)
        size = tuple(cfg.image_size) if cfg.image_size else None
        key = sources.source_key(source.path, size)
        name = source.path.name
        if "batches" in name or "python" in name:
            return sources.cached_arrays(paths.cache_dir, cfg.name, key,
                                         lambda: read_cifar_batches(source.path))
        return sources.cached_arrays(paths.cache_dir, cfg.name, key,
                                     lambda: read_image_folder(source.path, size))


DATASETS.register("image_folder", schema=ImageDataConfig)(ImageFolderDataset())
DATASETS.register("cifar10", schema=Cifar10Config)(Cifar10Dataset())
