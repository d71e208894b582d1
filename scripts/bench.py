"""What distillation costs per step, which precision wins, and where time goes.

In one process, on the same model, batch and optimizer, after a warm-up, the
median of several timed repeats of:

1. ``bare``:    keras.Model.fit of the student alone (the baseline);
2. ``direct``:  kdtl's Distiller with alpha=0 on kdtl's pipeline;
3. ``cached``:  kdtl distillation reading cached teacher logits;
4. ``online``:  kdtl distillation calling the teacher on every batch;
5. ``label``:   the teacher's forward pass over a split through kdtl
                (``predict_logits``), against ``predict_bare``, a bare
                ``model.predict`` on the same arrays;

each in float32, mixed_bfloat16 and mixed_float16 (where it runs), with the
peak resident memory during the measurement. Writes results/bench/bench.json
and bench.md. Rerun: ``python scripts/bench.py``.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import REPO, provenance, update_readme, write  # noqa: E402

import numpy as np  # noqa: E402
import psutil  # noqa: E402

import kdtl  # noqa: E402,F401
import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from kdtl import optimizers, precision  # noqa: E402
from kdtl.cli import compose_jobs  # noqa: E402
from kdtl.config import validate  # noqa: E402
from kdtl.data import DataBundle, Split  # noqa: E402
from kdtl.distiller import Distiller  # noqa: E402
from kdtl.models import build_student, build_teacher  # noqa: E402
from kdtl.pipeline import predict_logits, train_dataset  # noqa: E402

PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")
# Which kdtl task provides each benchmarked student and its teacher.
TASKS = {"mlp": ("synthetic", []), "vgg": ("cifar10", ["data.path=."]),
         "bilstm": ("imdb", ["data.path=.", "student.embedding_init=random"])}
# Timed steps per repeat (enough for a repeat to take a second or more) and
# examples labelled by the teacher; the MiniLM teacher is slow on a CPU.
STEPS = {"mlp": 300, "vgg": 24, "bilstm": 4}
LABEL_SIZE = {"mlp": 8192, "vgg": 2048, "bilstm": 128}
WORDS = ("the movie was good bad great awful plot acting really not boring fun story "
         "characters ending music long short best worst ever seen again").split()


class PeakMemory:
    """Peak resident set size of this process while the block runs (MiB)."""

    def __init__(self):
        self.process = psutil.Process()
        self.peak = 0
        self._stop = threading.Event()

    def _sample(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(0.005)

    def __enter__(self):
        self.peak = self.process.memory_info().rss
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    @property
    def mib(self) -> float:
        return round(self.peak / 2**20, 1)


class EpochTimer(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        self.seconds = []

    def on_epoch_begin(self, epoch, logs=None):
        self.started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self.started)


def config(task: str, extra: list[str]):
    [(_, cfg)] = compose_jobs([f"task={task}", *extra], multirun=False)
    return validate(cfg)


def fake_data(cfg, size: int) -> DataBundle:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, cfg.data.num_classes, size).astype(np.int32)
    if cfg.data.name == "synthetic":
        x, kind, shape = rng.normal(size=(size, cfg.data.num_features)).astype(np.float32), "features", (cfg.data.num_features,)
    elif cfg.data.name == "imdb":
        # Reviews of 230 words (IMDB's median) over a Zipf-like vocabulary of
        # 30,000 words, so the student's 20,000-word table is full.
        pool = np.array(list(WORDS) + [f"w{i}" for i in range(30000)], dtype=object)
        ranks = np.minimum((rng.pareto(1.0, (size, 230)) * 3).astype(int), len(pool) - 1)
        x = np.array([" ".join(pool[r]) for r in ranks], dtype=object)
        kind, shape = "text", None
    else:
        x, kind, shape = rng.integers(0, 256, (size, 32, 32, 3), dtype=np.uint8), "image", (32, 32, 3)
    split = Split(x, labels)
    return DataBundle(cfg.data.name, kind, cfg.data.num_classes, [], split, split, split, input_shape=shape)


def fit_rate(model, dataset, steps: int, repeats: int, batch: int) -> tuple[float, float]:
    timer = EpochTimer()
    with PeakMemory() as memory:
        model.fit(dataset, epochs=repeats + 1, steps_per_epoch=steps, verbose=0, shuffle=False,
                  callbacks=[timer])
    # The first epoch traces and warms up; the rest are timed.
    timed = timer.seconds[1:]
    spread = (max(timed) - min(timed)) / statistics.median(timed)
    return steps * batch / statistics.median(timed), memory.mib, spread


def predict_rate(fn, samples: int, repeats: int) -> tuple[float, float]:
    fn()  # warm-up
    seconds = []
    with PeakMemory() as memory:
        for _ in range(repeats):
            started = time.perf_counter()
            fn()
            seconds.append(time.perf_counter() - started)
    spread = (max(seconds) - min(seconds)) / statistics.median(seconds)
    return samples / statistics.median(seconds), memory.mib, spread


def bench_model(name: str, policy: str, steps: int, repeats: int, batch: int, label_size: int) -> dict:
    task, extra = TASKS[name]
    cfg = config(task, extra)
    keras.mixed_precision.set_dtype_policy(policy)
    size = steps * batch
    data = fake_data(cfg, max(size, label_size))
    keras.utils.set_random_seed(0)
    built_teacher = build_teacher(cfg.teacher, data)
    teacher = built_teacher.model
    built_student = build_student(cfg.student, data, built_teacher)
    raw, y = data.train.inputs[:size], data.train.labels[:size]
    x, x_teacher = built_student.encode(raw), built_teacher.encode(raw)
    shared = built_student.encode is built_teacher.encode
    rows = {}

    def student():
        keras.utils.set_random_seed(0)
        return build_student(cfg.student, data, built_teacher).model

    def optimizer():
        return optimizers.build(cfg.optimizer, steps, repeats + 1)

    # 1. bare keras fit
    model = student()
    model.compile(optimizer=optimizer(), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"], jit_compile=False)
    bare = (tf.data.Dataset.from_tensor_slices((x, y)).shuffle(size, seed=0).batch(batch)
            .prefetch(tf.data.AUTOTUNE).repeat())
    rows["bare"] = fit_rate(model, bare, steps, repeats, batch)

    # 2-4. kdtl's Distiller
    logits = predict_logits(teacher, x_teacher, cfg.trainer.eval_batch_size)
    online = {"shared_inputs": True} if shared else {"teacher_inputs": x_teacher}
    # "direct_io": direct training fed the cached-logit batches (alpha=0, so
    # the logits are carried but unused): splits the cost of "cached" into
    # input pipeline and loss.
    for mode, alpha, kwargs in (("direct", 0.0, {}),
                                ("direct_io", 0.0, {"teacher_logits": logits}),
                                ("cached", 0.5, {"teacher_logits": logits}),
                                ("online", 0.5, online)):
        distiller = Distiller(student(), teacher if mode == "online" else None, alpha=alpha, temperature=4.0)
        distiller.compile(optimizer=optimizer(), jit_compile=False)
        dataset, _ = train_dataset(x, y, batch_size=batch, seed=0, epochs=repeats + 1, **kwargs)
        rows[mode] = fit_rate(distiller, dataset, steps, repeats, batch)
        del distiller
        gc.collect()

    # 5. teacher labelling: kdtl vs bare predict
    xs = built_teacher.encode(data.train.inputs[:label_size])
    eval_batch = cfg.trainer.eval_batch_size
    rows["label"] = predict_rate(lambda: predict_logits(teacher, xs, eval_batch), label_size, repeats)
    rows["predict_bare"] = predict_rate(lambda: teacher.predict(xs, batch_size=eval_batch, verbose=0),
                                        label_size, repeats)
    return {"student_parameters": int(student().count_params()),
            "teacher_parameters": int(teacher.count_params()),
            "samples_per_s": {k: round(v[0], 1) for k, v in rows.items()},
            "peak_rss_mib": {k: v[1] for k, v in rows.items()},
            # (slowest - fastest) / median of the timed repeats: the noise floor.
            "repeat_spread": {k: round(v[2], 3) for k, v in rows.items()}}


def ratios(r: dict) -> dict:
    s = r["samples_per_s"]
    # An online step costs a teacher forward plus a direct step.
    predicted_online = 1 / (1 / s["label"] + 1 / s["direct"])
    return {"direct/bare": round(s["direct"] / s["bare"], 3),
            "cached/direct": round(s["cached"] / s["direct"], 3),
            "online/predicted": round(s["online"] / predicted_online, 3),
            "label/predict_bare": round(s["label"] / s["predict_bare"], 3)}


TARGETS = {"direct/bare": 0.95, "cached/direct": 0.95, "online/predicted": 0.90, "label/predict_bare": 0.90}


def markdown(results: dict, auto: tuple[str, str]) -> str:
    lines = ["# kdtl benchmark", "",
             "Samples per second (median of the timed repeats; higher is better) and peak "
             "resident memory. `bare` is a plain `keras.Model.fit` of the student; `direct`, "
             "`cached` and `online` are kdtl's Distiller with alpha=0, cached teacher logits and "
             "the teacher called per batch; `label` is kdtl's teacher labelling and `predict_bare` "
             "a bare `model.predict`.", "",
             "| model | precision | bare | direct | cached | online | label | predict_bare | "
             "direct/bare | cached/direct | online/predicted | label/predict_bare | peak MiB |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, by_policy in results.items():
        for policy, r in by_policy.items():
            if "error" in r:
                lines.append(f"| {name} | {policy} | {r['error']} |" + " |" * 11)
                continue
            s, q = r["samples_per_s"], r["ratios"]
            marks = {k: ("" if v >= TARGETS[k] else " (below target)") for k, v in q.items()}
            lines.append(f"| {name} | {policy} | " + " | ".join(f"{s[k]:,.0f}" for k in
                         ("bare", "direct", "cached", "online", "label", "predict_bare")) + " | " +
                         " | ".join(f"{q[k]:.2f}{marks[k]}" for k in TARGETS) +
                         f" | {max(r['peak_rss_mib'].values()):,.0f} |")
    lines += ["", "Where the cost of `cached` over `direct` goes (`direct_io` carries the cached "
              "logits through the pipeline without using them):"]
    for name, by_policy in results.items():
        for policy, r in by_policy.items():
            s = r.get("samples_per_s", {})
            if "direct_io" in s:
                step = {k: 1e3 / s[k] for k in ("direct", "direct_io", "cached")}  # ms per example
                lines.append(f"- {name} {policy}: pipeline {step['direct_io'] - step['direct']:+.4f} ms, "
                             f"loss {step['cached'] - step['direct_io']:+.4f} ms per example "
                             f"(a direct step is {step['direct']:.4f} ms per example)")
    spreads = [v for by_policy in results.values() for r in by_policy.values()
               for v in r.get("repeat_spread", {}).values()]
    if spreads:
        lines += ["", f"Run-to-run noise: the timed repeats of one measurement differ by "
                  f"{statistics.median(spreads):.0%} (median over all rows; up to {max(spreads):.0%}) "
                  "between the fastest and the slowest, so ratios within a few percent of a target "
                  "are not distinguishable from it on this machine."]
    lines += ["", "Targets: direct/bare >= 0.95, cached/direct >= 0.95, online within 10% of a "
              "teacher forward plus a direct step (online/predicted >= 0.90), label/predict_bare >= 0.90.",
              "", f"The hardware offers **{auto[0]}** here ({auto[1]}). `trainer.precision=auto` "
              "times a few training steps of each model in float32 and in that precision and keeps "
              "the faster, so it picks per model what the direct-training column shows fastest:"]
    for name, by_policy in results.items():
        ok = {p: r["samples_per_s"]["direct"] for p, r in by_policy.items() if "error" not in r}
        best = max(ok, key=ok.get)
        speedup = {p: round(v / ok["float32"], 2) for p, v in ok.items()} if "float32" in ok else {}
        lines.append(f"- {name}: {best} (speed vs float32: {speedup})")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="mlp,vgg,bilstm")
    parser.add_argument("--precisions", default=None,
                        help="default: float32 and mixed_bfloat16, plus mixed_float16 on a GPU "
                             "(TensorFlow's float16 kernels on CPUs are slow enough to make a "
                             "full run take an hour; ask for them explicitly)")
    parser.add_argument("--steps", type=int, default=None,
                        help="timed steps per repeat (default: per model, see STEPS)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--label-size", type=int, default=None,
                        help="examples labelled by the teacher (default: per model)")
    parser.add_argument("--out", type=Path, default=REPO / "results" / "bench")
    parser.add_argument("--render", action="store_true",
                        help="rewrite bench.md (and the README block) from the saved bench.json")
    args = parser.parse_args()
    if args.render:
        payload = json.loads((args.out / "bench.json").read_text())
        auto = (payload["precision_auto"]["policy"], payload["precision_auto"]["reason"])
        write(args.out, "bench", payload, markdown(payload["results"], auto))
        update_readme((args.out / "bench.md").read_text().split("\n", 2)[2])
        return
    started = time.perf_counter()
    if args.precisions is None:
        gpu = precision.gpu_compute_capability() is not None
        args.precisions = ",".join(PRECISIONS if gpu else PRECISIONS[:2])
    results: dict = {}
    for name in args.models.split(","):
        results[name] = {}
        for policy in args.precisions.split(","):
            print(f"{name} {policy} ...", flush=True)
            try:
                r = bench_model(name, policy, args.steps or STEPS[name], args.repeats, args.batch_size,
                                args.label_size or LABEL_SIZE[name])
                r["ratios"] = ratios(r)
            except Exception as error:  # e.g. float16 kernels missing on a CPU
                r = {"error": f"{type(error).__name__}: {str(error).splitlines()[0][:120]}"}
            results[name][policy] = r
            print(f"  {r}", flush=True)
            keras.backend.clear_session()
            gc.collect()
    keras.mixed_precision.set_dtype_policy("float32")
    auto = precision.resolve("auto")
    payload = {"provenance": provenance(started), "settings": vars(args) | {"out": str(args.out)},
               "precision_auto": {"policy": auto[0], "reason": auto[1]}, "targets": TARGETS,
               "results": results}
    write(args.out, "bench", payload, markdown(results, auto))
    report = (args.out / "bench.md").read_text()
    if args.out.resolve() == (REPO / "results" / "bench").resolve():
        # The README shows the latest committed measurement, minus its title.
        update_readme(report.split("\n", 2)[2])
    print(report)


if __name__ == "__main__":
    main()
