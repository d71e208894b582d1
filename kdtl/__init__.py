"""kdtl: config-driven knowledge distillation and transfer learning on Keras 3.

Importing kdtl registers its models with Keras, so a saved ``student.keras``
loads with ``keras.saving.load_model`` after ``import kdtl``.
"""

import os
import sys

__version__ = "0.1.0"


def _import_tensorflow_quietly() -> None:
    """TensorFlow's C++ start-up lines (oneDNN, CUDA stubs) go straight to file
    descriptor 2 and ignore TF_CPP_MIN_LOG_LEVEL here; hide them at import.
    Set KDTL_TF_LOGS=1 to see them."""
    if "tensorflow" in sys.modules or os.environ.get("KDTL_TF_LOGS"):
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    except OSError:
        return
    sys.stderr.flush()
    os.dup2(devnull, 2)
    try:
        import tensorflow  # noqa: F401
        import keras  # noqa: F401
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


_import_tensorflow_quietly()

from kdtl import models  # noqa: E402,F401  (registers custom layers with Keras)
from kdtl.distiller import Distiller  # noqa: E402
from kdtl.losses import DistillationLoss  # noqa: E402

__all__ = ["Distiller", "DistillationLoss", "__version__"]
