"""The ``kdtl`` command: ``kdtl train [hydra args]``, ``kdtl reproduce``, ``kdtl report``.

``kdtl train`` is a Hydra application, so ``--help``, ``--cfg job``, ``-m``
and launcher plugins behave as Hydra users expect. Before Hydra creates a run
folder, every job the command would run is composed and validated here, so a
bad override ends in one line on stderr and exit code 2 with nothing written.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from kdtl.errors import UserError

USAGE = """usage: kdtl <command> [args]

commands:
  train       train a teacher (once) and distill a student; Hydra overrides,
              e.g. kdtl train task=synthetic distill.alpha=0.7, sweeps with -m
  reproduce   the article's results table (see kdtl reproduce --help)
  report      rebuild tables and plots from run folders: kdtl report DIR

kdtl train --help lists the config groups and their options.
"""

CONFIG_MODULE = "kdtl.conf"
CONFIG_NAME = "train"
# Hydra flags after which kdtl does no preflight: they print or inspect only.
INSPECT_FLAGS = {"--help", "-h", "--hydra-help", "--cfg", "-c", "--info", "-i", "--resolve",
                 "--shell-completion", "-sc", "--version"}
VALUE_FLAGS = {"--config-name", "-cn", "--config-path", "-cp", "--config-dir", "-cd",
               "--package", "-p", "--experimental-rerun"}


def _split_args(args: list[str]) -> tuple[list[str], list[str]]:
    flags, overrides, i = [], [], 0
    while i < len(args):
        arg = args[i]
        if arg.startswith("-"):
            flags.append(arg)
            if arg in VALUE_FLAGS and i + 1 < len(args):
                flags.append(args[i + 1])
                i += 1
        else:
            overrides.append(arg)
        i += 1
    return flags, overrides


def _hydra_message(error: BaseException) -> str:
    """One line from Hydra's and OmegaConf's multi-line messages."""
    parts = []
    for e in (error, error.__cause__):
        if e is None:
            continue
        lines = [line.strip() for line in str(e).splitlines() if line.strip()]
        if lines:
            parts.append(lines[0])
        if "Available options" in str(e):
            options = [line.strip() for line in str(e).split("Available options", 1)[1].splitlines()[1:]
                       if line.startswith("\t") and "=" not in line]
            parts.append("available: " + ", ".join(options))
    return "; ".join(dict.fromkeys(parts)) or type(error).__name__


def compose_jobs(overrides: list[str], multirun: bool):
    """Composes the config of every job the command would run; yields
    ``(job_overrides, cfg_with_hydra_node)``."""
    from hydra import compose, initialize_config_module
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from kdtl.config import register_resolvers

    register_resolvers()
    try:
        if multirun:
            parsed = OverridesParser.create().parse_overrides(overrides)
            jobs = [job for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]
        else:
            jobs = [overrides]
        with initialize_config_module(CONFIG_MODULE, version_base="1.3"):
            composed = [(job, compose(CONFIG_NAME, overrides=job, return_hydra_config=True))
                        for job in jobs]
    except UserError:
        raise
    except Exception as error:  # Hydra and OmegaConf raise many types here
        raise UserError(_hydra_message(error)) from None
    return composed


def preflight(overrides: list[str], multirun: bool) -> int:
    """Validates every job; returns how many there are."""
    from omegaconf import OmegaConf

    from kdtl.config import check_writable, validate
    from kdtl.data import DATASETS

    jobs = compose_jobs(overrides, multirun)
    for job, cfg in jobs:
        where = f" (job {' '.join(job)})" if multirun else ""
        try:
            typed = validate(cfg)
            DATASETS.get(typed.data.name).factory.preflight(typed.data, typed.paths)
            hydra_node = cfg.hydra
            OmegaConf.set_readonly(hydra_node, False)
            if multirun:
                out = Path(OmegaConf.select(cfg, "hydra.sweep.dir"))
            else:
                out = Path(OmegaConf.select(cfg, "hydra.run.dir"))
            check_writable(out, "output folder")
            check_writable(Path(typed.paths.cache_dir).expanduser(), "cache folder (paths.cache_dir)")
        except UserError as error:
            raise UserError(f"{error}{where}") from None
    return len(jobs)


def _remove_if_empty_run(run_dir: Path) -> None:
    """After a user error inside a job, remove the run folder when it holds
    nothing but what Hydra wrote at start (no checkpoints, no metrics)."""
    if not run_dir.is_dir():
        return
    ours = {p.name for p in run_dir.iterdir()} - {".hydra", "config.yaml"}
    if not ours:
        import shutil

        shutil.rmtree(run_dir)


def _train_job(cfg) -> dict | None:
    """The Hydra task function: validate, then :func:`kdtl.train.train`."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from kdtl import console
    from kdtl.config import validate
    from kdtl.train import train

    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    try:
        return train(validate(cfg), run_dir)
    except Exception as error:
        if not multirun:
            if not isinstance(error, UserError):
                raise
            console.error(str(error))
            _remove_if_empty_run(run_dir)
            sys.exit(2)
        # In a sweep, a failing member is recorded and the others still run.
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        console.error(f"{run_dir.name}: {message}")
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "failed.json").write_text(json.dumps(
            {"error": message, "type": type(error).__name__, "user_error": isinstance(error, UserError)}))
        return {"status": "failed", "error": message, "run_dir": str(run_dir)}


def train_command(args: list[str]) -> int:
    import hydra

    from kdtl import console
    from kdtl.config import register_resolvers

    register_resolvers()
    flags, overrides = _split_args(args)
    if not INSPECT_FLAGS.intersection(flags):
        multirun = "-m" in flags or "--multirun" in flags
        try:
            count = preflight(overrides, multirun)
        except UserError as error:
            console.error(str(error))
            return 2
        if multirun:
            console.info(f"sweep: {count} jobs")
    app = hydra.main(config_path=f"pkg://{CONFIG_MODULE}", config_name=CONFIG_NAME,
                     version_base="1.3")(_train_job)
    saved = sys.argv
    sys.argv = ["kdtl train", *args]
    try:
        app()
    finally:
        sys.argv = saved
    return 0


def report_command(args: list[str]) -> int:
    """``kdtl report DIR``: rebuild a sweep's table and plot from its folders."""
    from kdtl import console

    if len(args) != 1 or args[0].startswith("-"):
        print("usage: kdtl report DIR   (a sweep folder made by kdtl train -m)", file=sys.stderr)
        return 2 if args and args[0] not in ("-h", "--help") else 0
    folder = Path(args[0])
    if not folder.is_dir():
        console.error(f"{str(folder)!r} is not a folder")
        return 2
    from kdtl.sweep import collect, summarize

    if not any(row["status"] == "finished" for row in collect(folder)):
        console.error(f"{str(folder)!r} holds no finished runs (member folders with summary.json)")
        return 2
    summarize(folder)
    return 0


def reproduce_command(args: list[str]) -> int:
    from kdtl import console
    from kdtl.reproduce import USAGE, Reproduction, parse

    if args and args[0] in ("-h", "--help"):
        print(USAGE)
        return 0
    try:
        reproduction = Reproduction(parse(args))
        for task in reproduction.tasks:  # validate every config before any work
            reproduction.configs(task, 0, 0.5, 1.0)
        reproduction()
    except UserError as error:
        console.error(str(error))
        return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(USAGE, end="")
        return 0
    if args[0] in ("--version", "-V"):
        from importlib.metadata import version

        print(f"kdtl {version('kdtl')}")
        return 0
    command, rest = args[0], args[1:]
    if command == "train":
        return train_command(rest)
    if command == "report":
        return report_command(rest)
    if command == "reproduce":
        return reproduce_command(rest)
    print(f"kdtl: error: unknown command {command!r}; available: train, reproduce, report",
          file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
