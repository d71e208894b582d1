"""Data loading from every supported format, built here as tiny fixtures."""

import csv
import json
import os
import pickle
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from kdtl.cli import main
from kdtl.data import DATASETS
from kdtl.errors import DataError
from tests.conftest import compose_config


def write_images(root: Path, classes=("cat", "dog", "emu"), per_class=(6, 3), size=(8, 8), fmt="png"):
    rng = np.random.default_rng(0)
    for split, count in zip(("train", "test"), per_class):
        for c, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                pixels = np.full((*size, 3), 40 * c, np.uint8) + rng.integers(0, 20, (*size, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{i:03d}.{fmt}")
    return root


def write_texts(root: Path, classes=("neg", "pos"), per_class=(10, 4)):
    for split, count in zip(("train", "test"), per_class):
        for c, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                (folder / f"{i}_{c}.txt").write_text(f"review {i} of class {name}<br />really {name}")
    return root


def tar(folder: Path, archive: Path) -> Path:
    with tarfile.open(archive, "w:gz") as out:
        out.add(folder, arcname=folder.name)
    return archive


def load(name, overrides=()):
    cfg = compose_config([f"data={name}", *overrides])
    return DATASETS.get(name).factory.load(cfg.data, cfg.paths)


def preflight(name, overrides=()):
    cfg = compose_config([f"data={name}", *overrides])
    DATASETS.get(name).factory.preflight(cfg.data, cfg.paths)


# --- images -------------------------------------------------------------------

@pytest.mark.parametrize("packed", [False, True])
def test_image_folder_and_archive(tmp_path, packed):
    root = write_images(tmp_path / "pets")
    path = tar(root, tmp_path / "pets.tar.gz") if packed else root
    data = load("image_folder", [f"data.path={path}", "data.validation_fraction=0.34"])
    assert data.class_names == ["cat", "dog", "emu"]
    assert data.kind == "image" and data.train.inputs.dtype == np.uint8
    assert data.train.inputs.shape[1:] == (8, 8, 3)
    assert data.sizes() == {"train": 12, "validation": 6, "test": 9}
    assert np.bincount(data.validation.labels).tolist() == [2, 2, 2]  # stratified
    # Pixels survive: class c was drawn around 40 * c.
    for split in (data.train, data.test):
        means = [split.inputs[split.labels == c].mean() for c in range(3)]
        assert means == sorted(means) and means[2] - means[0] > 60


def test_jpeg_and_resize(tmp_path):
    root = write_images(tmp_path / "pets", fmt="jpg", size=(10, 6))
    data = load("image_folder", [f"data.path={root}", "data.image_size=[12,12]"])
    assert data.train.inputs.shape[1:] == (12, 12, 3)


def test_images_of_different_sizes_ask_for_image_size(tmp_path):
    root = write_images(tmp_path / "pets")
    Image.new("RGB", (5, 9)).save(root / "train" / "cat" / "odd.png")
    with pytest.raises(DataError, match="image_size"):
        load("image_folder", [f"data.path={root}"])


def test_corrupt_image_is_named(tmp_path):
    root = write_images(tmp_path / "pets")
    (root / "train" / "dog" / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(DataError, match="broken.png"):
        load("image_folder", [f"data.path={root}"])


def test_wrong_layout(tmp_path):
    root = write_images(tmp_path / "pets")
    (root / "test").rename(root / "eval")
    with pytest.raises(DataError, match="no test split"):
        load("image_folder", [f"data.path={root}"])


def test_train_and_test_classes_differ(tmp_path):
    root = write_images(tmp_path / "pets")
    (root / "test" / "emu").rename(root / "test" / "owl")
    with pytest.raises(DataError, match="classes differ"):
        load("image_folder", [f"data.path={root}"])


def test_empty_class_folder(tmp_path):
    root = write_images(tmp_path / "pets")
    for file in (root / "test" / "emu").iterdir():
        file.unlink()
    with pytest.raises(DataError, match="test/emu has no files"):
        load("image_folder", [f"data.path={root}"])


def test_num_classes_must_match_the_folder(tmp_path):
    root = write_images(tmp_path / "pets")
    with pytest.raises(DataError, match="has 3 classes"):
        load("image_folder", [f"data.path={root}", "data.num_classes=5"])


def test_decoding_is_cached(tmp_path):
    root = write_images(tmp_path / "pets", per_class=(30, 10))
    first = load("image_folder", [f"data.path={root}"])
    assert len(list((tmp_path / "cache" / "datasets").iterdir())) == 1
    (root / "train" / "cat" / "000.png").unlink()  # the source changed: decoded again
    second = load("image_folder", [f"data.path={root}"])
    assert len(second.train) + len(second.validation) == len(first.train) + len(first.validation) - 1
    assert len(list((tmp_path / "cache" / "datasets").iterdir())) == 2


def _cifar_batches(folder: Path, per_batch=20):
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in names:
        labels = list(np.arange(per_batch) % 10)
        data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        with open(folder / name, "wb") as f:
            pickle.dump({b"data": data, b"labels": labels, b"batch_label": b"x"}, f, protocol=2)
    return folder


@pytest.mark.parametrize("packed", [False, True])
def test_cifar_python_batches(tmp_path, packed):
    folder = _cifar_batches(tmp_path / "cifar-10-batches-py")
    path = tar(folder, tmp_path / "cifar-10-python.tar.gz") if packed else folder
    data = load("cifar10", [f"data.path={path}"])
    assert data.sizes() == {"train": 90, "validation": 10, "test": 20}
    assert data.train.inputs.shape[1:] == (32, 32, 3)
    # Channel order: the first 1024 values of a row are the red plane.
    with open(folder / "test_batch", "rb") as f:
        raw = pickle.load(f)[b"data"][0]
    np.testing.assert_array_equal(data.test.inputs[0][..., 0].ravel(), raw[:1024])


class Exploit:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_pickle_that_would_run_code_is_refused(tmp_path):
    folder = _cifar_batches(tmp_path / "cifar-10-batches-py")
    with open(folder / "data_batch_3", "wb") as f:
        pickle.dump({b"data": Exploit(), b"labels": [0]}, f)
    with pytest.raises(DataError, match="refusing to load posix.system"):
        load("cifar10", [f"data.path={folder}"])
    assert not (tmp_path / "pwned").exists()


def test_augment_crops_and_flips_deterministically():
    import tensorflow as tf

    from kdtl.data.images import AugmentConfig, make_augment

    images = np.arange(2 * 6 * 6 * 1, dtype=np.uint8).reshape(2, 6, 6, 1).repeat(3, -1)
    augment = make_augment(AugmentConfig(crop_padding=2, flip=True), seed=0)
    indices = tf.constant([0, 1])
    first = augment(tf.constant(images), indices, tf.constant(3)).numpy()
    again = augment(tf.constant(images), indices, tf.constant(3)).numpy()
    other = augment(tf.constant(images), indices, tf.constant(4)).numpy()
    np.testing.assert_array_equal(first, again)
    assert first.shape == images.shape
    assert not np.array_equal(first, other)
    assert augment.__name__ and make_augment(AugmentConfig(crop_padding=0, flip=False), 0) is None


def test_alternate_flip_mirrors_each_image_in_every_other_epoch():
    import tensorflow as tf

    from kdtl.data.images import AugmentConfig, make_augment

    images = np.arange(200 * 4 * 4, dtype=np.uint8).reshape(200, 4, 4, 1).repeat(3, -1)
    indices = tf.range(200)

    def flipped(augment, epoch):
        out = augment(tf.constant(images), indices, tf.constant(epoch)).numpy()
        mirrored = (out == images[:, :, ::-1]).all((1, 2, 3))
        assert (mirrored | (out == images).all((1, 2, 3))).all()
        return mirrored

    alternate = make_augment(AugmentConfig(crop_padding=0, flip=True, alternate_flip=True), seed=0)
    epochs = np.stack([flipped(alternate, epoch) for epoch in range(4)])
    assert (epochs[1:] != epochs[:-1]).all()  # every image, every epoch
    assert 0.3 < epochs[0].mean() < 0.7  # the start is random per image
    random = make_augment(AugmentConfig(crop_padding=0, flip=True), seed=0)
    epochs = np.stack([flipped(random, epoch) for epoch in range(4)])
    assert (epochs[1:] == epochs[:-1]).any()  # random flips repeat sometimes


def test_cutout_erases_one_square_per_image_where_its_seed_says():
    import tensorflow as tf

    from kdtl.data.images import AugmentConfig, make_augment

    images = np.full((500, 16, 16, 3), 200, np.uint8)
    indices = tf.range(500)
    augment = make_augment(AugmentConfig(crop_padding=0, flip=False, cutout=4), seed=0)
    out = augment(tf.constant(images), indices, tf.constant(1)).numpy()
    np.testing.assert_array_equal(out, augment(tf.constant(images), indices, tf.constant(1)).numpy())
    erased = out[..., 0] == 128
    assert set(np.unique(out)) == {128, 200} and (erased == (out == 128).all(-1)).all()
    for mask in erased:  # one axis-aligned rectangle, at most 4x4, cut only by the border
        rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
        assert 1 <= len(rows) <= 4 and 1 <= len(cols) <= 4
        assert mask.sum() == len(rows) * len(cols) and np.ptp(rows) == len(rows) - 1
        if 0 not in rows and 15 not in rows:
            assert len(rows) == 4
    assert np.mean(erased.sum((1, 2)) == 16) > 0.5  # mostly whole squares
    # Centres spread over the whole image.
    assert erased.any(0).all()
    other = augment(tf.constant(images), indices, tf.constant(2)).numpy()
    assert not np.array_equal(out, other)
    assert make_augment(AugmentConfig(crop_padding=0, flip=False, cutout=0), 0) is None


def test_teacher_augment_overrides_are_checked():
    from omegaconf import OmegaConf

    from kdtl.data.images import merge_augment
    from kdtl.errors import ConfigError, DataError

    base = OmegaConf.create({"crop_padding": 4, "flip": True})
    merged = merge_augment(base, {"cutout": 8})
    assert (merged.crop_padding, merged.flip, merged.cutout) == (4, True, 8)
    # A null keeps the student's setting (the resnet9 teacher names them all).
    merged = merge_augment(base, OmegaConf.create({"crop_padding": None, "flip": None,
                                                   "alternate_flip": True, "cutout": None}))
    assert (merged.crop_padding, merged.flip, merged.alternate_flip, merged.cutout) == (4, True, True, None)
    with pytest.raises(ConfigError, match="cutot"):
        merge_augment(base, {"cutot": 8})
    with pytest.raises(DataError, match="cutout must be >= 0"):
        merge_augment(base, {"cutout": -1})
    with pytest.raises(DataError, match="alternate_flip needs teacher.training.augment.flip"):
        merge_augment(base, {"flip": False, "alternate_flip": True})


# --- text ---------------------------------------------------------------------

@pytest.mark.parametrize("packed", [False, True])
def test_text_folder_and_archive(tmp_path, packed):
    root = write_texts(tmp_path / "reviews")
    path = tar(root, tmp_path / "reviews.tar.gz") if packed else root
    data = load("text_folder", [f"data.path={path}", "data.validation_fraction=0.2"])
    assert data.kind == "text" and data.class_names == ["neg", "pos"]
    assert data.sizes() == {"train": 16, "validation": 4, "test": 8}
    assert all(isinstance(t, str) and "<br />" not in t for t in data.train.inputs)
    for text, label in zip(data.test.inputs, data.test.labels):
        assert text.endswith(data.class_names[label])


def _table(folder: Path, suffix: str, label_key="label"):
    folder.mkdir()
    for split, n in (("train", 12), ("test", 6)):
        rows = [{"text": f"text {i} {'good' if i % 3 else 'bad'}", label_key: "good" if i % 3 else "bad"}
                for i in range(n)]
        if suffix == ".csv":
            with open(folder / f"{split}.csv", "w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=list(rows[0]))
                writer.writeheader()
                writer.writerows(rows)
        else:
            (folder / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_csv_and_jsonl(tmp_path, suffix):
    data = load("text_folder", [f"data.path={_table(tmp_path / 't', suffix)}"])
    assert data.class_names == ["bad", "good"]
    for text, label in zip(data.test.inputs, data.test.labels):
        assert text.endswith(data.class_names[label])


def test_missing_label_column(tmp_path):
    folder = _table(tmp_path / "t", ".csv", label_key="sentiment")
    with pytest.raises(DataError, match="no 'label' column"):
        load("text_folder", [f"data.path={folder}"])


def test_limits_are_stratified_and_deterministic(tmp_path):
    root = write_texts(tmp_path / "reviews", per_class=(50, 20))
    overrides = [f"data.path={root}", "data.limit_train=20", "data.limit_val=4", "data.limit_test=10"]
    a, b = load("text_folder", overrides), load("text_folder", overrides)
    assert a.sizes() == {"train": 20, "validation": 4, "test": 10}
    assert np.bincount(a.train.labels).tolist() == [10, 10]
    assert list(a.train.inputs) == list(b.train.inputs)
    c = load("text_folder", [*overrides, "data.split_seed=1"])
    assert list(c.validation.inputs) != list(a.validation.inputs)
    assert a.fingerprint != c.fingerprint


# --- where data comes from, and the errors when it is not there ----------------

def test_missing_path_says_where_and_what(tmp_path):
    with pytest.raises(DataError, match="does not exist; expected aclImdb"):
        preflight("imdb", ["data.path=/nowhere/aclImdb"])


def test_data_dir_without_the_dataset(tmp_path, monkeypatch):
    monkeypatch.setenv("KDTL_DATA_DIR", str(tmp_path))
    with pytest.raises(DataError, match="looked for aclImdb, aclImdb.tar.gz"):
        preflight("imdb")


def test_data_dir_is_searched(tmp_path, monkeypatch):
    tar(write_texts(tmp_path / "aclImdb"), tmp_path / "aclImdb.tar.gz")
    (tmp_path / "aclImdb").rename(tmp_path / "elsewhere")
    monkeypatch.setenv("KDTL_DATA_DIR", str(tmp_path))
    data = load("imdb")
    assert data.source.endswith("aclImdb.tar.gz") and data.class_names == ["neg", "pos"]


def test_missing_path_names_the_tfds_fallback():
    with pytest.raises(DataError, match="tensorflow-datasets \\('cifar10'\\)"):
        preflight("cifar10", ["data.path=/nowhere/cifar"])


def test_tfds_is_used_without_local_data(monkeypatch):
    """The online path: tfds.load's arrays become the same DataBundle."""
    import tensorflow_datasets as tfds

    calls = []

    class Info:
        features = {"label": type("Label", (), {"names": ["neg", "pos"]})()}

    def fake_load(name, split, as_supervised, with_info, batch_size, **kwargs):
        calls.append(name)
        texts = np.array([f"text {i} <br />more".encode() for i in range(40)])
        labels = np.arange(40) % 2
        return [(texts, labels), (texts[:10], labels[:10])], Info()

    monkeypatch.setattr(tfds, "load", fake_load)
    monkeypatch.setattr(tfds, "as_numpy", lambda x: x)
    monkeypatch.delenv("KDTL_DATA_DIR", raising=False)
    data = load("imdb")
    assert calls == ["imdb_reviews"] and data.class_names == ["neg", "pos"]
    assert data.sizes() == {"train": 36, "validation": 4, "test": 10}
    assert data.source == "tensorflow-datasets 'imdb_reviews'" and "<br />" not in data.train.inputs[0]


def test_tfds_failure_offline_is_one_clear_error(monkeypatch):
    import tensorflow_datasets as tfds

    def offline(*args, **kwargs):
        raise ConnectionError("Failed to resolve 'www.cs.toronto.edu'")

    monkeypatch.setattr(tfds, "load", offline)
    monkeypatch.delenv("KDTL_DATA_DIR", raising=False)
    with pytest.raises(DataError, match="could not load 'cifar10'.*KDTL_DATA_DIR"):
        load("cifar10")


def test_cli_reports_missing_data_before_work(tmp_path, capfd):
    assert main(["train", "data=cifar10", "data.path=/nowhere/cifar"]) == 2
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "does not exist" in err[0] and "cifar10/{train,test}" in err[0]
    assert not (tmp_path / "runs").exists()


# --- the real archives (CI sets KDTL_DATA_DIR to ../shared/data) ---------------

REAL = os.environ.get("KDTL_DATA_DIR")
needs_real = pytest.mark.skipif(
    not (REAL and (Path(REAL) / "aclImdb.tar.gz").exists() and (Path(REAL) / "cifar10-jpeg.tar.gz").exists()),
    reason="KDTL_DATA_DIR does not hold aclImdb.tar.gz and cifar10-jpeg.tar.gz")


@pytest.fixture(scope="module")
def real_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("real-cache")


@needs_real
@pytest.mark.real_data
def test_real_imdb(real_cache):
    overrides = ["data=imdb", f"paths.cache_dir={real_cache}"]
    cfg = compose_config(overrides)
    data = DATASETS.get("imdb").factory.load(cfg.data, cfg.paths)
    full_train = np.concatenate([data.train.labels, data.validation.labels])
    assert len(full_train) == 25_000 and len(data.test) == 25_000
    assert np.bincount(full_train).tolist() == [12_500, 12_500]
    assert np.bincount(data.test.labels).tolist() == [12_500, 12_500]
    assert np.bincount(data.validation.labels).tolist() == [1_250, 1_250]
    assert all(len(t) > 10 for t in data.train.inputs[:100])
    again = DATASETS.get("imdb").factory.load(cfg.data, cfg.paths)
    assert list(again.validation.inputs[:50]) == list(data.validation.inputs[:50])


@needs_real
@pytest.mark.real_data
def test_real_cifar10_counts_ranges_and_speed(real_cache):
    cfg = compose_config(["data=cifar10", f"paths.cache_dir={real_cache}"])
    started = time.perf_counter()
    data = DATASETS.get("cifar10").factory.load(cfg.data, cfg.paths)
    first = time.perf_counter() - started
    full_train = np.concatenate([data.train.labels, data.validation.labels])
    assert len(full_train) == 50_000 and len(data.test) == 10_000
    assert np.bincount(full_train).tolist() == [5_000] * 10
    assert np.bincount(data.test.labels).tolist() == [1_000] * 10
    assert data.train.inputs.shape == (45_000, 32, 32, 3) and data.train.inputs.dtype == np.uint8
    assert data.train.inputs.min() == 0 and data.train.inputs.max() == 255
    assert 100 < data.test.inputs.mean() < 140
    started = time.perf_counter()
    again = DATASETS.get("cifar10").factory.load(cfg.data, cfg.paths)
    second = time.perf_counter() - started
    np.testing.assert_array_equal(again.validation.labels, data.validation.labels)
    np.testing.assert_array_equal(again.validation.inputs[:10], data.validation.inputs[:10])
    assert first < 60 and second < 5, (first, second)
