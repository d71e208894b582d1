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


def _rate(built, policy: str, x, y, steps: int) -> float:
    """Training examples per second of one model under one policy."""
    import time

    import numpy as np

    model = built()
    model.compile(optimizer=keras.optimizers.SGD(1e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), jit_compile=False)
    for _ in range(2):  # tracing and warm-up
        model.train_on_batch(x, y)
    started = time.perf_counter()
    for _ in range(steps):
        model.train_on_batch(x, y)
    return steps * len(np.asarray(y)) / (time.perf_counter() - started)


def choose(setting: str, what: str, key: str, build, x, y, cache_dir, steps: int = 3,
           measure: bool = True) -> tuple[str | None, str]:
    """The policy for one model: ``setting`` itself unless it is ``auto``.
    ``build()`` returns a fresh model under the current global policy; ``x``
    and ``y`` are one training batch.

    With ``auto`` on hardware that has fast bf16 (or fp16), a few training
    steps of the model on a real batch are timed in float32 and in the low
    precision, and the faster wins: bf16 halves a VGG's step on AVX-512 BF16
    CPUs but slows an LSTM there. The decision is stored in
    ``<cache_dir>/precision.json`` under ``key`` (model config, batch, machine),
    so it is measured once and every later run -- each member of a sweep --
    makes the same choice (and finds the same stored teacher).
    """
    import json
    from pathlib import Path

    if setting != "auto":
        return setting, "set in config"
    low, why = resolve("auto")
    if low == "float32":
        return low, why
    path = Path(cache_dir).expanduser() / "precision.json"
    decisions = json.loads(path.read_text()) if path.is_file() else {}
    if key in decisions:
        d = decisions[key]
        return d["policy"], f"{what}: measured earlier, {d['speedup']:.2f}x float32 ({why})"
    if not measure:
        return None, f"{what}: not measured yet"
    previous = keras.mixed_precision.dtype_policy()
    try:
        rates = {}
        for policy in ("float32", low):
            apply(policy)
            rates[policy] = _rate(build, policy, x, y, steps)
    finally:
        keras.mixed_precision.set_dtype_policy(previous)
    speedup = rates[low] / rates["float32"]
    policy = low if speedup > 1.0 else "float32"
    decisions[key] = {"policy": policy, "speedup": round(speedup, 3),
                      "rates": {k: round(v, 1) for k, v in rates.items()}}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(decisions, indent=2))
    return policy, f"{what}: measured {low} at {speedup:.2f}x float32"
