"""EfficientNet-Lite0 converted from the .pth without PyTorch, checked against
a NumPy forward pass (scripts/efficientnet_reference.py) on a photo that ships
with matplotlib."""

import json
import pickle
from pathlib import Path

import numpy as np
import pytest

from kdtl.errors import ModelError

REFERENCE = json.loads((Path(__file__).parent / "data" / "efficientnet_lite0_reference.json").read_text())
efficientnet = pytest.importorskip("kdtl.models.efficientnet")


def _weights_or_skip():
    try:
        return efficientnet.default_weights()
    except ModelError as error:
        pytest.skip(str(error))


def test_imagenet_prediction_matches_the_reference():
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
    from efficientnet_reference import photo

    model = efficientnet.imagenet_model(_weights_or_skip())
    logits = model.predict(photo()[None], verbose=0)[0]
    assert int(np.argmax(logits)) == 652 == REFERENCE["top5"][0]  # "military uniform"
    np.testing.assert_allclose(logits, REFERENCE["logits"], atol=2e-3, rtol=1e-3)
    assert list(np.argsort(-logits)[:5]) == REFERENCE["top5"]


def test_mismatched_tensors_are_named():
    from kdtl.models.torch_weights import load_state_dict

    state = load_state_dict(_weights_or_skip())
    model = efficientnet.backbone(64, include_top=True)
    broken = dict(state)
    broken["_blocks.3._project_conv.weight"] = np.zeros((7, 7, 1, 1), np.float32)
    with pytest.raises(ModelError, match=r"'_blocks.3._project_conv.weight' has shape \(7, 7, 1, 1\)"):
        efficientnet.load_weights(model, broken)
    del broken["_bn0.running_var"]
    with pytest.raises(ModelError, match="no tensor '_bn0.running_var'"):
        efficientnet.load_weights(model, broken)


def test_teacher_takes_cifar_batches(tmp_path):
    _weights_or_skip()
    from kdtl.data import DataBundle, Split
    from kdtl.models import build_teacher
    from tests.conftest import compose_config

    x = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    split = Split(x, np.zeros(2, np.int32))
    data = DataBundle("cifar10", "image", 10, [str(i) for i in range(10)], split, split, split,
                      input_shape=(32, 32, 3))
    cfg = compose_config(["task=cifar10", "teacher=efficientnet_lite0", "teacher.input_size=64"])
    built = build_teacher(cfg.teacher, data)
    assert built.model(x, training=False).shape == (2, 10)


def test_pth_reader_refuses_code(tmp_path):
    from kdtl.models.torch_weights import load_state_dict

    class Exploit:
        def __reduce__(self):
            import os
            return (os.system, ("touch pwned",))

    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        for obj in (0x1950A86A20F9469CFC6C, 1001, {}, {"w": Exploit()}, []):
            pickle.dump(obj, f, protocol=2)
    with pytest.raises(ModelError, match="refusing to load posix.system"):
        load_state_dict(path)
    assert not (tmp_path / "pwned").exists()
