"""``kdtl reproduce``: the article's results table, from runs anyone can redo.

For each task of a profile (``kdtl/profiles/<profile>.yaml``):

1. the student trained directly (``alpha = 0``), one run per seed;
2. with the first seed, a distillation run per (alpha, temperature) of the
   profile's grid; the pair with the best *validation* accuracy is chosen;
3. the chosen pair, one run per seed;

the teacher of each seed is trained once (in the teacher store) and serves
every run with that seed; a profile with ``teacher_seed: N`` trains one
teacher (seed N) for all seeds, so the seeds vary the student only. Runs live
under ``<results>/<profile>/runs/`` and a finished run is never redone, so a
reproduction can be completed over several sittings. Writes ``table.md``, ``table.csv``, ``runs.jsonl`` and
``curves.png`` (validation accuracy per epoch, direct vs distilled).
"""

from __future__ import annotations

import csv
import json
import statistics
import time
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from kdtl import console
from kdtl.errors import ConfigError, UserError

USAGE = """usage: kdtl reproduce [profile=quick|full|synthetic] [tasks=[imdb,cifar10]] [seeds=N]
                      [results_dir=results] [overwrite=false] [KEY=VALUE overrides for every run]"""


def profiles() -> list[str]:
    folder = resources.files("kdtl") / "profiles"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def load_profile(name: str) -> dict:
    if name not in profiles():
        raise ConfigError(f"unknown profile {name!r}; available: {', '.join(profiles())}")
    return yaml.safe_load((resources.files("kdtl") / "profiles" / f"{name}.yaml").read_text())


def parse(args: list[str]) -> dict[str, Any]:
    options: dict[str, Any] = {"profile": "quick", "tasks": None, "seeds": None,
                               "results_dir": "results", "overwrite": False, "overrides": []}
    for arg in args:
        key, sep, value = arg.partition("=")
        if not sep:
            raise ConfigError(f"expected KEY=VALUE, got {arg!r}\n{USAGE}")
        if key == "tasks":
            options["tasks"] = [t for t in value.strip("[]").split(",") if t]
        elif key == "seeds":
            try:
                options["seeds"] = int(value)
            except ValueError:
                raise ConfigError(f"seeds must be a whole number, got {value!r}") from None
        elif key == "overwrite":
            options["overwrite"] = value.lower() in ("1", "true", "yes")
        elif key in ("profile", "results_dir"):
            options[key] = value
        else:
            options["overrides"].append(arg)
    return options


def _fmt_overrides(alpha: float, temperature: float) -> list[str]:
    return [f"distill.alpha={alpha}", f"distill.temperature={temperature}"]


class Reproduction:
    def __init__(self, options: dict[str, Any]):
        self.profile = load_profile(options["profile"])
        self.name = options["profile"]
        tasks = options["tasks"] or list(self.profile["tasks"])
        unknown = [t for t in tasks if t not in self.profile["tasks"]]
        if unknown:
            raise ConfigError(f"unknown task(s) {', '.join(unknown)} for profile {self.name!r}; "
                              f"available: {', '.join(self.profile['tasks'])}")
        self.tasks = tasks
        self.seeds = options["seeds"] if options["seeds"] is not None else self.profile["seeds"]
        if self.seeds < 1:
            raise ConfigError(f"seeds must be >= 1, got {self.seeds}")
        self.extra = options["overrides"]
        self.folder = Path(options["results_dir"]) / self.name
        marker = self.folder / "profile.json"
        if marker.is_file() and not options["overwrite"]:
            saved = json.loads(marker.read_text())
            if saved.get("profile") != self.name or saved.get("extra") != self.extra:
                raise UserError(f"{self.folder} holds a reproduction with other settings "
                                f"({saved}); pass overwrite=true to replace it")

    def configs(self, task: str, seed: int, alpha: float, temperature: float):
        from kdtl.cli import compose_jobs
        from kdtl.config import validate

        overrides = [*self.profile["tasks"][task]["overrides"], *self.extra,
                     *_fmt_overrides(alpha, temperature), f"trainer.seed={seed}", "trainer.progress=lines"]
        # One teacher for every seed when the profile fixes its seed (the usual
        # protocol of KD papers; teacher training is the costly part on a CPU).
        if self.profile.get("teacher_seed") is not None:
            overrides.append(f"trainer.teacher_seed={self.profile['teacher_seed']}")
        [(_, cfg)] = compose_jobs(overrides, multirun=False)
        return validate(cfg)

    def run(self, task: str, seed: int, alpha: float, temperature: float) -> dict:
        from kdtl.train import train

        cfg = self.configs(task, seed, alpha, temperature)
        folder = self.folder / "runs" / task / f"seed{seed}-alpha{alpha:g}-T{temperature:g}"
        console.info(f"[bold]reproduce {self.name}[/bold]: {task} seed {seed} alpha {alpha:g} "
                     f"temperature {temperature:g} -> {folder}")
        summary = train(cfg, folder)
        summary["run_dir"] = str(folder)
        return summary

    def __call__(self) -> Path:
        started = time.perf_counter()
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / "profile.json").write_text(json.dumps({"profile": self.name, "extra": self.extra}))
        seeds = list(range(self.seeds))
        results: dict[str, Any] = {}
        for task in self.tasks:
            grid = self.profile["tasks"][task]["grid"]
            temperature0 = grid["temperature"][0]
            candidates = [(a, t) for a in grid["alpha"] for t in grid["temperature"]]
            # Selection on validation with the first seed only.
            selection = {pair: self.run(task, seeds[0], *pair) for pair in candidates}
            chosen = max(selection, key=lambda pair: selection[pair]["student"]["validation_accuracy"])
            direct = [self.run(task, seed, 0.0, temperature0) for seed in seeds]
            distilled = [selection[chosen] if seed == seeds[0] else self.run(task, seed, *chosen)
                         for seed in seeds]
            results[task] = {"direct": direct, "distilled": distilled, "chosen": chosen,
                             "selection": selection, "claim": self.profile["tasks"][task]["claim"]}
        self.write(results, time.perf_counter() - started)
        return self.folder

    def write(self, results: dict, seconds: float) -> None:
        from kdtl.train import machine, versions

        with open(self.folder / "runs.jsonl", "w") as f:
            for task, r in results.items():
                for role in ("direct", "distilled"):
                    for s in r[role]:
                        f.write(json.dumps({"task": task, "role": role, **s}) + "\n")
                for (alpha, temperature), s in r["selection"].items():
                    f.write(json.dumps({"task": task, "role": "selection", **s}) + "\n")
        rows = []
        for task, r in results.items():
            # Each distinct teacher once (seeds may share one).
            teachers = list({t["key"]: t for t in (s.get("teacher") for s in r["distilled"]) if t}.values())
            t0 = teachers[0] if teachers else {}
            rows.append(self._row(task, "teacher", [t["test_accuracy"] for t in teachers],
                                  t0.get("parameters"), t0.get("saved_bytes"), r["claim"],
                                  latency=_latency(t0)))
            for role in ("direct", "distilled"):
                runs = r[role]
                label = "student direct" if role == "direct" else (
                    f"student distilled (alpha={r['chosen'][0]:g}, T={r['chosen'][1]:g})")
                rows.append(self._row(task, label, [s["student"]["test_accuracy"] for s in runs],
                                      runs[0]["student"]["parameters"], runs[0]["student"]["saved_bytes"],
                                      r["claim"], latency=_latency(runs[0]["student"])))
        columns = ["task", "model", "test accuracy (mean)", "std", "n", "parameters", "saved MB",
                   "CPU ms/example @1", "CPU ms/example @64", "article's claim"]
        with open(self.folder / "table.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(columns)
            writer.writerows(rows)
        md = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
        md += ["| " + " | ".join("" if v is None else (f"{v:.4f}" if isinstance(v, float) else str(v))
                                 for v in row) + " |" for row in rows]
        verdicts = []
        for task, r in results.items():
            direct = statistics.mean(s["student"]["test_accuracy"] for s in r["direct"])
            distilled = statistics.mean(s["student"]["test_accuracy"] for s in r["distilled"])
            verdicts.append(f"- {task}: distilled {'beats' if distilled > direct else 'does NOT beat'} "
                            f"direct training ({distilled:.4f} vs {direct:.4f} mean test accuracy over "
                            f"{len(r['direct'])} seeds); alpha and temperature chosen on validation.")
        teacher_minutes = []
        for task, r in results.items():
            seen = set()
            for s in r["distilled"]:
                path = (s.get("teacher") or {}).get("path")
                if path in seen:
                    continue
                seen.add(path)
                seconds_taken = _stored_train_seconds(path)
                if seconds_taken is not None:
                    teacher_minutes.append(f"{task} seed {s['seed']}: {seconds_taken / 60:.1f} min")
        cost = _machine_minutes(results)
        m = machine()
        footer = [f"Profile `{self.name}`, {time.strftime('%Y-%m-%d %H:%M %Z')}, {m['cpu']} "
                  f"({m['cpu_count']} cores, GPUs: {m['gpus'] or 'none'}), "
                  + ", ".join(f"{k} {v}" for k, v in versions().items())
                  + f"; wall time of this command {seconds / 60:.1f} min (finished runs are reused)"
                  + (f"; teacher training, done once and stored: {', '.join(teacher_minutes)}."
                     if teacher_minutes else ".")
                  + f" Machine time of the whole reproduction: {cost:.1f} min (the runs' own wall "
                    "times, teacher training and logit labelling included).",
                  f"Command: `kdtl reproduce profile={self.name} "
                  f"tasks=[{','.join(results)}] seeds={self.seeds}"
                  + (" " + " ".join(self.extra) if self.extra else "") + "`"]
        text = "# kdtl reproduction: " + self.name + "\n\n" + "\n".join(md) + "\n\n" + "\n".join(verdicts)
        (self.folder / "table.md").write_text(text + "\n\n" + "\n\n".join(footer) + "\n")
        curves(self.folder / "curves.png", results)
        console.info(text)
        console.info(f"wrote {self.folder}/table.md, table.csv, runs.jsonl, curves.png")

    def _row(self, task, model, accuracies, parameters, saved, claim, latency=(None, None)):
        accuracies = [a for a in accuracies if a is not None]
        mean = statistics.mean(accuracies) if accuracies else None
        std = statistics.stdev(accuracies) if len(accuracies) > 1 else 0.0 if accuracies else None
        return [task, model, mean, std, len(accuracies), parameters,
                round(saved / 1e6, 2) if saved else None, *latency, claim if "student" in model else ""]


def _machine_minutes(results: dict) -> float:
    """What the reproduction cost: every run's wall time (a run that trained
    its teacher or labelled logits includes that), plus the training time of
    any teacher no run trained itself (stored by an earlier command)."""
    runs = {}
    for r in results.values():
        for s in [*r["direct"], *r["distilled"], *r["selection"].values()]:
            runs[s["run_dir"]] = s
    seconds = sum(s.get("wall_seconds") or 0.0 for s in runs.values())
    teachers: dict[str, bool] = {}
    for s in runs.values():
        t = s.get("teacher")
        if t and t.get("path"):
            teachers[t["path"]] = teachers.get(t["path"], False) or t.get("source") == "trained"
    for path, trained_in_a_run in teachers.items():
        if not trained_in_a_run:
            seconds += _stored_train_seconds(path) or 0.0
    return seconds / 60


def _stored_train_seconds(path: str | None) -> float | None:
    """The training time the teacher store recorded for the teacher at ``path``."""
    meta = Path(path) / "meta.json" if path else None
    if meta is None or not meta.is_file():
        return None
    return json.loads(meta.read_text())["metrics"].get("train_seconds")


def _latency(model_summary: dict) -> tuple[float | None, float | None]:
    """Milliseconds per example at batch 1 and 64, as the run measured them."""
    measured = (model_summary or {}).get("latency_ms_per_example") or {}
    return measured.get("batch_1"), measured.get("batch_64")


def curves(path: Path, results: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    figure, axes = plt.subplots(1, len(results), figsize=(5 * len(results), 3.6), dpi=110, squeeze=False)
    for ax, (task, r) in zip(axes[0], results.items()):
        for role, color in (("direct", "C0"), ("distilled", "C1")):
            histories = []
            for s in r[role]:
                lines = (Path(s["run_dir"]) / "metrics.jsonl").read_text().splitlines()
                histories.append([json.loads(line)["validation"]["accuracy"] for line in lines])
            length = min(len(h) for h in histories)
            values = np.array([h[:length] for h in histories])
            epochs = np.arange(1, length + 1)
            ax.plot(epochs, values.mean(0), color=color, label=role)
            ax.fill_between(epochs, values.min(0), values.max(0), color=color, alpha=0.2)
        ax.set_title(task)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_ylabel("validation accuracy")
        ax.grid(alpha=0.3)
        ax.legend()
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
