"""trainer.precision=auto: measured once per model and machine, then reused."""

import json

import keras
import numpy as np
import pytest

from kdtl import precision
from kdtl.models.mlp import mlp


def test_explicit_precision_is_used_as_is(tmp_path):
    assert precision.choose("float32", "student", "k", None, None, None, tmp_path) == ("float32", "set in config")


def test_auto_measures_once_and_picks_the_faster(tmp_path, monkeypatch):
    monkeypatch.setattr(precision, "resolve", lambda setting: ("mixed_bfloat16", "test hardware"))
    x = np.random.default_rng(0).normal(size=(64, 8)).astype(np.float32)
    y = np.zeros(64, np.int32)
    built = []

    def build():
        built.append(keras.mixed_precision.dtype_policy().name)
        return mlp(8, 3, [16], 0.0, "probe")

    policy, why = precision.choose("auto", "student", "key1", build, x, y, tmp_path)
    assert built == ["float32", "mixed_bfloat16"]
    decision = json.loads((tmp_path / "precision.json").read_text())["key1"]
    rates = decision["rates"]
    assert policy == decision["policy"] == max(rates, key=rates.get)
    assert decision["speedup"] == pytest.approx(rates["mixed_bfloat16"] / rates["float32"], rel=1e-2)
    # The global policy is left as it was.
    assert keras.mixed_precision.dtype_policy().name == "float32"
    # Second time: no model is built, the stored decision is returned.
    again, why = precision.choose("auto", "student", "key1", None, None, None, tmp_path)
    assert again == policy and "measured earlier" in why
    assert precision.choose("auto", "student", "other", None, None, None, tmp_path,
                            measure=False)[0] is None


def test_without_fast_low_precision_auto_is_float32(tmp_path, monkeypatch):
    monkeypatch.setattr(precision, "resolve", lambda setting: ("float32", "no bf16"))
    assert precision.choose("auto", "student", "k", None, None, None, tmp_path)[0] == "float32"
    assert not (tmp_path / "precision.json").exists()
