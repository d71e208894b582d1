"""Choosing and applying the Keras dtype policy."""

from __future__ import annotations

from pathlib import Path

import keras
import tensorflow as tf

from kdtl.console import quiet_native_stderr


def cpu_has_fast_bf16() -> bool:
    """True on x86 CPUs with AVX-512 BF16 or AMX-BF16 (oneDNN uses them)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


def gpu_compute_capability() -> tuple[int, int] | None:
    with quiet_native_stderr():  # "failed call to cuInit" on machines without a GPU
        gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return None
    details = tf.config.experimental.get_device_details(gpus[0])
    return details.get("compute_capability")


def resolve(precision: str) -> tuple[str, str]:
    """Returns ``(policy, reason)`` for a ``trainer.precision`` value."""
    if precision != "auto":
        return precision, "set in config"
    capability = gpu_compute_capability()
    if capability is not None:
        if tuple(capability) >= (8, 0):
            return "mixed_bfloat16", f"GPU with compute capability {capability[0]}.{capability[1]} has fast bf16"
        return "mixed_float16", f"GPU with compute capability {capability[0]}.{capability[1]} lacks fast bf16"
    if cpu_has_fast_bf16():
        return "mixed_bfloat16", "CPU has AVX-512 BF16/AMX"
    return "float32", "no fast bf16 or fp16 on this CPU"


def apply(policy: str) -> None:
    keras.mixed_precision.set_dtype_policy(policy)
