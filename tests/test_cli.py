"""Bad input ends in one line on stderr, exit code 2, and nothing written."""

import subprocess
import sys

import pytest

from kdtl.cli import main
from tests.conftest import kdtl_env

BAD = {
    "unknown group option": (["student=nope"], "available: bilstm, mlp, vgg"),
    "unknown key": (["trainer.epochz=3"], "trainer.epochz"),
    "unknown appended key": (["+trainer.foo=1"], "foo"),
    "wrong type": (["trainer.epochs=many"], "trainer.epochs"),
    "missing value": (["trainer.seed=???"], "trainer.seed"),
    "alpha above 1": (["distill.alpha=1.5"], "distill.alpha must be in [0, 1]"),
    "alpha below 0": (["distill.alpha=-0.1"], "distill.alpha must be in [0, 1]"),
    "temperature zero": (["distill.temperature=0"], "distill.temperature must be > 0"),
    "temperature negative": (["distill.temperature=-2"], "distill.temperature must be > 0"),
    "epochs zero": (["trainer.epochs=0"], "trainer.epochs must be > 0"),
    "no cached views": (["distill.views=0"], "distill.views must be >= 1"),
    "batch size zero": (["trainer.batch_size=0"], "trainer.batch_size must be > 0"),
    "class counts differ": (["teacher.num_classes=3"], "teacher.num_classes is 3"),
    "unknown precision": (["trainer.precision=fp8"], "trainer.precision must be one of"),
    "unknown schedule": (["optimizer.schedule=linear"], "optimizer.schedule must be one of"),
    "missing teacher checkpoint": (["teacher.checkpoint=/nowhere/t.keras"], "does not exist"),
    "sweep with one bad member": (["-m", "distill.alpha=0.5,2"], "job distill.alpha=2"),
    "unknown experiment": (["experiment=nope"], "available:"),
    "sweep value without -m": (["distill.alpha=0.1,0.5"], "Ambiguous value"),
    "cached logits with augmentation": (["task=cifar10", "distill.teacher_logits=cached",
                                         "data.path=."], "augmented view"),
    "cutout in cached logits": (["task=cifar10", "data.augment.crop_padding=0", "data.augment.flip=false",
                                 "data.augment.cutout=8", "distill.teacher_logits=cached",
                                 "data.path=."], "augmented view"),
    "teacher augment on text": (["+teacher.training.augment={cutout: 8}"], "has none"),
    "unknown teacher augment": (["task=cifar10", "teacher.training.augment={cutot: 8}",
                                 "data.path=."], "Key 'cutot' is not in struct"),
    "alternate flip without flip": (["task=cifar10", "data.augment.flip=false", "data.augment.alternate_flip=true",
                                     "data.path=."], "data.augment.alternate_flip needs data.augment.flip: true"),
    "unknown tta": (["task=cifar10", "teacher.tta=rotate", "data.path=."], "teacher.tta must be"),
    "tta on a text teacher": (["+teacher.tta=flip"], "Key 'tta' not in"),
    "teacher label smoothing 1": (["teacher.training.label_smoothing=1"],
                                  "teacher.training.label_smoothing must be in"),
    "bias learning-rate scale 0": (["optimizer.bias_lr_scale=0"], "optimizer.bias_lr_scale must be > 0"),
    "teacher bias learning-rate scale negative": (["teacher.training.bias_lr_scale=-1"],
                                                  "teacher.training.bias_lr_scale must be > 0"),
}


def _written(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_exits_2_with_one_line(case, isolated_paths, capfd):
    overrides, expected = BAD[case]
    before = _written(isolated_paths)
    assert main(["train", *overrides]) == 2
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("kdtl: error: ")
    assert expected in err[0]
    assert _written(isolated_paths) == before


def test_output_folder_that_cannot_be_written(isolated_paths, capfd):
    blocker = isolated_paths / "a_file"
    blocker.write_text("not a folder")
    assert main(["train", f"hydra.run.dir={blocker}/run"]) == 2
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "output folder" in err[0] and "not a folder" in err[0]
    assert _written(isolated_paths) == ["a_file"]


def test_unknown_command(capfd):
    assert main(["trian"]) == 2
    assert "available: train" in capfd.readouterr().err


def test_console_script_exit_code_and_stderr(tmp_path):
    """The installed entry point, as a user runs it."""
    done = subprocess.run([sys.executable, "-m", "kdtl", "train", "distill.alpha=7"],
                          capture_output=True, text=True, env=kdtl_env(tmp_path), cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "kdtl: error: distill.alpha must be in [0, 1], got 7.0"]
    assert not (tmp_path / "runs").exists()


def test_cfg_job_prints_the_composed_config(tmp_path):
    done = subprocess.run([sys.executable, "-m", "kdtl", "train", "--cfg", "job",
                           "distill.alpha=0.3"],
                          capture_output=True, text=True, env=kdtl_env(tmp_path), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "alpha: 0.3" in done.stdout and "temperature:" in done.stdout
    assert not (tmp_path / "runs").exists()


def test_help_lists_config_groups(tmp_path):
    done = subprocess.run([sys.executable, "-m", "kdtl", "train", "--help"],
                          capture_output=True, text=True, env=kdtl_env(tmp_path), cwd=tmp_path)
    assert done.returncode == 0
    for group in ("task:", "teacher:", "student:", "distill:", "optimizer:", "trainer:", "experiment:"):
        assert group in done.stdout
