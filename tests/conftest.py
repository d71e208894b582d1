"""Shared fixtures: every test writes under its own tmp_path, never ~/.cache."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module

import kdtl  # noqa: F401  (quiet TensorFlow import, model registration)
from kdtl.config import register_resolvers, validate

REPO = Path(__file__).resolve().parents[1]

# A synthetic run small enough for a few seconds on two cores.
TINY = [
    "data.num_train=900", "data.num_test=300", "teacher.training.epochs=3",
    "teacher.hidden_units=[64]", "trainer.epochs=3", "trainer.batch_size=64",
    "trainer.progress=none",
]


@pytest.fixture(autouse=True)
def isolated_paths(tmp_path, monkeypatch):
    monkeypatch.setenv("KDTL_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("KDTL_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    yield tmp_path


def compose_config(overrides=(), hydra_node: bool = False):
    """The validated config of ``kdtl train <overrides>`` (the real YAML)."""
    register_resolvers()
    with initialize_config_module("kdtl.conf", version_base="1.3"):
        cfg = compose("train", overrides=list(overrides), return_hydra_config=hydra_node)
    return cfg if hydra_node else validate(cfg)


def kdtl_env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(KDTL_RUNS_DIR=str(tmp_path / "runs"), KDTL_CACHE_DIR=str(tmp_path / "cache"),
               PYTHONUNBUFFERED="1")
    return env
