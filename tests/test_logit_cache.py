"""The teacher-logit cache is used only when it matches and is intact."""

import json

import numpy as np

from kdtl import logit_cache


def _compute(value):
    calls = []

    def compute():
        calls.append(1)
        return np.full((5, 3), value, np.float32)

    return compute, calls


def test_hit_after_first_compute(tmp_path):
    expected = {"teacher_key": "t1", "data_fingerprint": "d1"}
    compute, calls = _compute(1.0)
    first = logit_cache.load_or_compute(tmp_path, "train", expected, compute)
    second = logit_cache.load_or_compute(tmp_path, "train", expected, compute)
    assert len(calls) == 1 and np.array_equal(first, second)
    meta = json.loads((tmp_path / "train.json").read_text())
    assert meta["shape"] == [5, 3] and meta["dtype"] == "float32" and meta["teacher_key"] == "t1"


def test_changed_teacher_or_data_recomputes(tmp_path):
    compute, calls = _compute(1.0)
    logit_cache.load_or_compute(tmp_path, "train", {"teacher_key": "t1", "data_fingerprint": "d1"}, compute)
    logit_cache.load_or_compute(tmp_path, "train", {"teacher_key": "t2", "data_fingerprint": "d1"}, compute)
    logit_cache.load_or_compute(tmp_path, "train", {"teacher_key": "t2", "data_fingerprint": "d2"}, compute)
    assert len(calls) == 3


def test_truncated_or_edited_file_is_detected(tmp_path, capfd):
    expected = {"teacher_key": "t", "data_fingerprint": "d"}
    compute, calls = _compute(2.0)
    logit_cache.load_or_compute(tmp_path, "train", expected, compute)
    path = tmp_path / "train.npy"
    path.write_bytes(path.read_bytes()[:-7])  # truncated
    assert logit_cache.check(tmp_path, "train", expected)[1] == "file damaged (checksum differs)"
    again = logit_cache.load_or_compute(tmp_path, "train", expected, compute)
    assert len(calls) == 2 and again.shape == (5, 3)
    assert "cache rejected, file damaged" in capfd.readouterr().err
    # Same length, different numbers: still caught by the checksum.
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    assert logit_cache.check(tmp_path, "train", expected)[0] is None


def test_unreadable_metadata(tmp_path):
    expected = {"teacher_key": "t", "data_fingerprint": "d"}
    compute, _ = _compute(0.0)
    logit_cache.load_or_compute(tmp_path, "validation", expected, compute)
    (tmp_path / "validation.json").write_text("{not json")
    assert logit_cache.check(tmp_path, "validation", expected) == (None, "metadata unreadable")
