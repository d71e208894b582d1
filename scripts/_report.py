"""Shared by the scripts in this folder: where results go and what they record."""

from __future__ import annotations

import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def provenance(started: float) -> dict:
    """Date, machine, versions and the command, for every results file."""
    import keras
    import numpy as np
    import tensorflow as tf

    import kdtl
    from kdtl.console import quiet_native_stderr
    from kdtl.precision import cpu_has_fast_bf16

    from kdtl.train import cpu_model

    model = cpu_model()
    with quiet_native_stderr():
        gpus = [d.name for d in tf.config.list_physical_devices("GPU")]
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "command": " ".join(shlex.quote(a) for a in ["python", *sys.argv]),
        "wall_seconds": round(time.perf_counter() - started, 1),
        "machine": {"cpu": model, "cores": os.cpu_count(), "fast_bf16": cpu_has_fast_bf16(),
                    "gpus": gpus,
                    "platform": platform.platform()},
        "versions": {"kdtl": kdtl.__version__, "tensorflow": tf.__version__,
                     "keras": keras.__version__, "numpy": np.__version__,
                     "python": platform.python_version()},
    }


def write(folder: Path, stem: str, payload: dict, markdown: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{stem}.json").write_text(json.dumps(payload, indent=2) + "\n")
    p = payload["provenance"]
    footer = (f"\n\nMeasured {p['date']} on {p['machine']['cpu']} ({p['machine']['cores']} cores"
              f"{', GPUs: ' + ', '.join(p['machine']['gpus']) if p['machine']['gpus'] else ', no GPU'}); "
              f"TensorFlow {p['versions']['tensorflow']}, Keras {p['versions']['keras']}; "
              f"{p['wall_seconds']} s.\nCommand: `{p['command']}`\n")
    (folder / f"{stem}.md").write_text(markdown.rstrip() + footer)
    print(f"wrote {folder / (stem + '.json')} and {folder / (stem + '.md')}")


def update_readme(block: str, marker: str = "bench") -> None:
    """Replaces the README's text between ``<!-- marker:start -->`` and
    ``<!-- marker:end -->`` with ``block`` (a script's own output)."""
    readme = REPO / "README.md"
    text = readme.read_text()
    start, end = f"<!-- {marker}:start -->", f"<!-- {marker}:end -->"
    if start not in text or end not in text:
        return
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    readme.write_text(f"{head}{start}\n{block.strip()}\n{end}{tail}")
