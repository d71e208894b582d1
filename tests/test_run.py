"""A whole synthetic run: the files it writes, determinism, reuse and resume."""

import csv
import json
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
import yaml

from kdtl.train import train
from tests.conftest import TINY, compose_config, kdtl_env

VOLATILE = ("seconds", "samples_per_s")


def _metrics(run_dir):
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k not in VOLATILE} for line in lines]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """One tiny run shared by the content checks below."""
    root = tmp_path_factory.mktemp("run")
    cfg = compose_config([*TINY, f"paths.cache_dir={root / 'cache'}"])
    summary = train(cfg, root / "run")
    return root / "run", summary, cfg


def test_run_writes_every_file(finished_run):
    run_dir, summary, cfg = finished_run
    for name in ("config.yaml", "metrics.jsonl", "summary.json", "student.keras",
                 "checkpoints/best/student.weights.h5", "checkpoints/last/student.weights.h5",
                 "checkpoints/last/optimizer.npz", "checkpoints/last/state.json"):
        assert (run_dir / name).is_file(), name
    assert list((run_dir / "tensorboard" / "train").glob("events.out.tfevents.*"))
    assert list((run_dir / "tensorboard" / "validation").glob("events.out.tfevents.*"))
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["distill"]["alpha"] == cfg.distill.alpha
    teacher = json.loads((run_dir / "teacher-meta.json").read_text())
    assert teacher["key"] == summary["teacher"]["key"]
    assert len(teacher["history"]) == cfg.teacher.training.epochs


def test_metrics_file_has_one_sane_line_per_epoch(finished_run):
    run_dir, _, cfg = finished_run
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [line["epoch"] for line in lines] == list(range(1, cfg.trainer.epochs + 1))
    for line in lines:
        for key in ("loss", "student_loss", "distillation_loss", "accuracy"):
            assert np.isfinite(line["train"][key])
        assert 0 <= line["validation"]["accuracy"] <= 1
        assert line["train"]["distillation_loss"] > 0  # alpha > 0 and the student is not the teacher
        assert line["learning_rate"] >= 0 and line["seconds"] > 0 and line["samples_per_s"] > 0
    # The cosine schedule decays.
    assert lines[-1]["learning_rate"] < lines[0]["learning_rate"]


def test_summary_agrees_with_the_saved_student(finished_run):
    run_dir, summary, cfg = finished_run
    on_disk = json.loads((run_dir / "summary.json").read_text())
    assert on_disk["student"]["test_accuracy"] == summary["student"]["test_accuracy"]
    assert on_disk["epochs"] == cfg.trainer.epochs
    assert 1 <= on_disk["best_epoch"] <= cfg.trainer.epochs
    assert on_disk["teacher"]["parameters"] > on_disk["student"]["parameters"]
    assert on_disk["precision"] in ("float32", "mixed_bfloat16")
    for who in ("student", "teacher"):
        assert set(on_disk[who]["latency_ms_per_example"]) == {"batch_1", "batch_64"}
        assert all(v > 0 for v in on_disk[who]["latency_ms_per_example"].values())
    assert on_disk["teacher"]["saved_bytes"] > on_disk["student"]["saved_bytes"] / 10
    for key in ("tensorflow", "keras", "kdtl"):
        assert on_disk["versions"][key]
    # student.keras loads after `import kdtl` and scores what the summary says.
    from kdtl.data import DATASETS

    data = DATASETS.get("synthetic").factory.load(cfg.data, cfg.paths)
    model = keras.saving.load_model(run_dir / "student.keras")
    predictions = model.predict(data.test.inputs, verbose=0).argmax(-1)
    accuracy = float((predictions == data.test.labels).mean())
    assert accuracy == pytest.approx(summary["student"]["test_accuracy"], abs=1e-6)
    # The best epoch's validation accuracy is the best in metrics.jsonl.
    best = max(json.loads(l)["validation"]["accuracy"]
               for l in (run_dir / "metrics.jsonl").read_text().splitlines())
    assert summary["student"]["validation_accuracy"] == pytest.approx(best)


def test_same_seed_same_metrics_and_teacher_reuse(tmp_path):
    first = train(compose_config(TINY), tmp_path / "a")
    assert first["teacher"]["source"] == "trained"
    second = train(compose_config(TINY), tmp_path / "b")  # same cache: the teacher is reused
    assert second["teacher"]["source"] == "store"
    assert second["teacher"]["key"] == first["teacher"]["key"]
    assert _metrics(tmp_path / "a") == _metrics(tmp_path / "b")
    assert first["student"]["test_accuracy"] == second["student"]["test_accuracy"]
    other = train(compose_config([*TINY, "trainer.seed=7"]), tmp_path / "c")
    assert other["teacher"]["key"] != first["teacher"]["key"]


def test_rerun_of_finished_run_does_no_work(tmp_path):
    cfg = compose_config(TINY)
    first = train(cfg, tmp_path / "run")
    mtime = (tmp_path / "run" / "student.keras").stat().st_mtime
    again = train(cfg, tmp_path / "run")
    assert again == first
    assert (tmp_path / "run" / "student.keras").stat().st_mtime == mtime


def test_direct_training_trains_no_teacher(tmp_path):
    summary = train(compose_config([*TINY, "distill.alpha=0"]), tmp_path / "run")
    assert summary["teacher"] is None
    assert summary["teacher_logits"] == "none"
    assert not (tmp_path / "cache" / "teachers").exists()
    assert all(line["train"]["distillation_loss"] == 0 for line in _metrics(tmp_path / "run"))


def test_online_and_cached_teacher_logits_give_the_same_run(tmp_path):
    cached = train(compose_config([*TINY, "distill.teacher_logits=cached"]), tmp_path / "cached")
    online = train(compose_config([*TINY, "distill.teacher_logits=online"]), tmp_path / "online")
    a, b = _metrics(tmp_path / "cached"), _metrics(tmp_path / "online")
    for x, y in zip(a, b):
        np.testing.assert_allclose(x["train"]["loss"], y["train"]["loss"], rtol=2e-3)
    assert abs(cached["student"]["test_accuracy"] - online["student"]["test_accuracy"]) <= 0.01


def test_a_killed_teacher_stage_resumes_from_its_last_epoch(tmp_path, monkeypatch):
    """The teacher checkpoints each epoch in the store's .partial folder; a
    rerun continues from it and ends like an uninterrupted teacher."""
    from kdtl import callbacks

    # Exact comparison: no dropout (its random stream is not part of a
    # checkpoint) and a fixed precision (two caches could measure differently).
    overrides = [*TINY, "teacher.training.epochs=4", "teacher.dropout=0.0", "trainer.epochs=1",
                 "trainer.precision=float32"]
    save_epoch = callbacks.TeacherCheckpoint.on_epoch_end

    def killed_after_two(self, epoch, logs=None):
        save_epoch(self, epoch, logs)
        if epoch + 1 == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(callbacks.TeacherCheckpoint, "on_epoch_end", killed_after_two)
    cfg = compose_config([*overrides, f"paths.cache_dir={tmp_path / 'cache'}"])
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "run")
    (partial,) = (tmp_path / "cache" / "teachers").glob("*.partial")
    assert json.loads((partial / "last" / "state.json").read_text())["epoch"] == 2
    monkeypatch.undo()

    summary = train(cfg, tmp_path / "run")
    assert not partial.exists()
    meta = json.loads((partial.with_name(partial.name[:-len(".partial")]) / "meta.json").read_text())
    assert [line["epoch"] for line in meta["history"]] == [1, 2, 3, 4]
    straight = train(compose_config([*overrides, f"paths.cache_dir={tmp_path / 'straight'}"]),
                     tmp_path / "straight-run")
    assert straight["teacher"]["key"] == summary["teacher"]["key"]
    assert abs(straight["teacher"]["test_accuracy"] - summary["teacher"]["test_accuracy"]) <= 0.01
    (other,) = (tmp_path / "straight" / "teachers").glob("*/meta.json")
    reference = json.loads(other.read_text())["history"]
    for resumed, uninterrupted in zip(meta["history"], reference):
        assert resumed["loss"] == pytest.approx(uninterrupted["loss"], rel=1e-3)


SLOW_ENOUGH = ["data.num_train=30000", "trainer.epochs=12", "teacher.training.epochs=1",
               "trainer.progress=lines"]


def _kdtl(tmp_path, *overrides, **kwargs):
    return subprocess.Popen([sys.executable, "-m", "kdtl", "train", *overrides],
                            env=kdtl_env(tmp_path), cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, **kwargs)


def test_resume_after_sigkill_finishes_the_epochs(tmp_path):
    """Kill -9 mid-run, rerun the same command: it continues, loses at most
    the epoch in flight, and ends like an uninterrupted run."""
    run_dir = tmp_path / "runs" / "synthetic" / ",".join(sorted(SLOW_ENOUGH[:3]))
    process = _kdtl(tmp_path, *SLOW_ENOUGH)
    metrics = run_dir / "metrics.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline:
        if metrics.exists() and len(metrics.read_text().splitlines()) >= 3:
            break
        assert process.poll() is None, process.stdout.read()
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    killed_at = len(metrics.read_text().splitlines())
    assert 3 <= killed_at < 12, "the run was not killed mid-way"

    resumed = _kdtl(tmp_path, *SLOW_ENOUGH)
    output, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, output
    assert "resuming after epoch" in output
    epochs = [json.loads(line)["epoch"] for line in metrics.read_text().splitlines()]
    assert epochs == list(range(1, 13))
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["epochs"] == 12

    straight = _kdtl(tmp_path, *SLOW_ENOUGH, "hydra.run.dir=straight")
    output, _ = straight.communicate(timeout=300)
    assert straight.returncode == 0, output
    reference = json.loads((tmp_path / "straight" / "summary.json").read_text())
    assert abs(summary["student"]["test_accuracy"] - reference["student"]["test_accuracy"]) <= 0.01


def test_multirun_sweep_writes_table_and_plot_and_survives_a_failing_member(tmp_path):
    garbage = tmp_path / "broken.weights.h5"
    garbage.write_bytes(b"not an h5 file")
    done = subprocess.run(
        [sys.executable, "-m", "kdtl", "train", "-m", "distill.alpha=0.3,0.7",
         f"teacher.checkpoint=null,{garbage}", *TINY, "hydra.sweep.dir=sweep"],
        env=kdtl_env(tmp_path), cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    sweep = tmp_path / "sweep"
    summaries = sorted(sweep.glob("*/summary.json"))
    assert sorted(json.loads(p.read_text())["alpha"] for p in summaries) == [0.3, 0.7]
    assert len(list(sweep.glob("*/failed.json"))) == 2
    with open(sweep / "sweep.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4
    finished = {float(r["alpha"]): r for r in rows if r["status"] == "finished"}
    for alpha, row in finished.items():
        summary = next(json.loads(p.read_text()) for p in summaries if json.loads(p.read_text())["alpha"] == alpha)
        assert float(row["test_accuracy"]) == pytest.approx(summary["student"]["test_accuracy"])
    failed = [r for r in rows if r["status"] == "failed"]
    assert len(failed) == 2 and all("cannot load teacher weights" in r["error"] for r in failed)
    assert (sweep / "sweep.png").stat().st_size > 1000
    assert "| distill.alpha=0.3" in (sweep / "sweep.md").read_text()
    # kdtl report rebuilds the same table from the folders.
    (sweep / "sweep.csv").unlink()
    again = subprocess.run([sys.executable, "-m", "kdtl", "report", str(sweep)], env=kdtl_env(tmp_path),
                           cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    assert len(list(csv.DictReader(open(sweep / "sweep.csv")))) == 4


def test_report_on_a_folder_without_runs(tmp_path, capfd):
    from kdtl.cli import main

    assert main(["report", str(tmp_path)]) == 2
    assert "holds no finished runs" in capfd.readouterr().err


def test_tiny_image_task_with_augmentation_and_online_teacher(tmp_path):
    from tests.test_data import tar, write_images

    archive = tar(write_images(tmp_path / "pets", size=(32, 32), per_class=(20, 5)), tmp_path / "pets.tar.gz")
    cfg = compose_config(["task=cifar10", "data=image_folder", f"data.path={archive}",
                          "teacher.widths=[4,4,8,8]", "teacher.training.epochs=1",
                          "student.widths=[4,8]", "trainer.epochs=2", "trainer.batch_size=16",
                          "data.augment.crop_padding=4", "distill.teacher_logits=auto",
                          "trainer.progress=none"])
    summary = train(cfg, tmp_path / "run")
    assert summary["teacher_logits"] == "online"  # auto with augmentation
    assert summary["data"]["train"] == 54 and summary["epochs"] == 2
    assert all(line["train"]["distillation_loss"] > 0 for line in _metrics(tmp_path / "run"))


def test_cached_augmented_views(tmp_path):
    """teacher_logits=views: logits of fixed augmented views, epoch e on view e % views."""
    import tensorflow as tf

    from kdtl.data import DATASETS
    from kdtl.models import build_teacher
    from tests.test_data import tar, write_images

    archive = tar(write_images(tmp_path / "pets", size=(32, 32), per_class=(20, 5)), tmp_path / "pets.tar.gz")
    cfg = compose_config(["task=cifar10", "data=image_folder", f"data.path={archive}",
                          "teacher.widths=[4,4,8,8]", "teacher.training.epochs=1",
                          "student.widths=[4,8]", "trainer.epochs=3", "trainer.batch_size=16",
                          "data.augment.crop_padding=4", "trainer.progress=none",
                          "trainer.precision=float32", "teacher.tta=null",
                          "distill.teacher_logits=views", "distill.views=2"])
    summary = train(cfg, tmp_path / "run")
    assert summary["teacher_logits"] == "views" and summary["views"] == 2
    folder = next((tmp_path / "cache" / "logits").iterdir())
    views = [np.load(folder / f"train_view{v}.npy") for v in range(2)]
    assert not np.allclose(views[0], views[1])  # different crops and flips
    # View 1 equals the stored teacher on the training images augmented as view 1.
    data = DATASETS.get("image_folder").factory.load(cfg.data, cfg.paths)
    teacher = build_teacher(cfg.teacher, data)
    teacher.model.load_weights(summary["teacher"]["path"] + "/teacher.weights.h5")
    images = data.train.inputs
    augmented = data.augment(tf.constant(images), tf.range(len(images)), tf.constant(1, tf.int64))
    np.testing.assert_allclose(teacher.model(augmented, training=False).numpy(), views[1], rtol=1e-4, atol=1e-4)


def test_flip_tta_teacher_with_its_own_cutout(tmp_path, monkeypatch):
    """teacher.tta=flip: the teacher scores and teaches with the mean of its logits
    for each image and its mirror image; teacher.training.augment reaches the
    teacher stage only; switching tta off reuses the stored teacher."""
    import tensorflow as tf

    from kdtl import teachers
    from kdtl.data import DATASETS
    from kdtl.models import build_teacher
    from tests.test_data import tar, write_images

    seen = {}

    def spying(*args, augment=None, **kwargs):
        seen["augment"] = augment
        return train_dataset(*args, augment=augment, **kwargs)

    train_dataset = teachers.train_dataset
    monkeypatch.setattr(teachers, "train_dataset", spying)
    archive = tar(write_images(tmp_path / "pets", size=(32, 32), per_class=(20, 5)), tmp_path / "pets.tar.gz")
    common = ["task=cifar10", "data=image_folder", f"data.path={archive}", "teacher.widths=[4,4,8,8]",
              "teacher.training.epochs=1", "student.widths=[4,8]", "trainer.epochs=1",
              "trainer.batch_size=16", "trainer.progress=none", "trainer.precision=float32",
              "distill.views=1", "teacher.training.augment={cutout: 6}"]
    cfg = compose_config([*common, "teacher.tta=flip"])
    summary = train(cfg, tmp_path / "run")
    teacher = summary["teacher"]
    assert teacher["tta"] == "flip" and teacher["source"] == "trained"
    assert {"test_accuracy_single_view", "validation_accuracy_single_view"} <= set(teacher)
    # The teacher stage cut squares out; the student's augmentation did not.
    grey = np.full((8, 32, 32, 3), 200, np.uint8)
    cut = seen["augment"](tf.constant(grey), tf.range(8), tf.constant(0, tf.int64)).numpy()
    assert (cut == 128).any()
    assert summary["teacher_logits"] == "views"
    # The stored view logits are the mean over the image and its mirror image.
    data = DATASETS.get("image_folder").factory.load(cfg.data, cfg.paths)
    plain = build_teacher(cfg.teacher, data).model
    plain.load_weights(teacher["path"] + "/teacher.weights.h5")
    view = data.augment(tf.constant(data.train.inputs), tf.range(len(data.train)), tf.constant(0, tf.int64))
    expected = (plain(view, training=False) + plain(tf.reverse(view, axis=[2]), training=False)) / 2
    folder = next((tmp_path / "cache" / "logits").iterdir())
    stored = np.load(folder / "train_view0.npy")
    np.testing.assert_allclose(stored, expected.numpy(), rtol=1e-4, atol=1e-4)
    assert not np.allclose(stored, plain(view, training=False).numpy(), atol=1e-4)
    # tta off: the same stored teacher, scored as a plain model.
    again = train(compose_config([*common, "teacher.tta=null"]), tmp_path / "run2")["teacher"]
    assert again["source"] == "store" and again["key"] == teacher["key"] and again["tta"] is None
    assert again["test_accuracy"] == pytest.approx(teacher["test_accuracy_single_view"])
    assert "test_accuracy_single_view" not in again
    # ... and teaching with its own logits, not the flip-averaged ones stored before.
    plain_folder = next(f for f in (tmp_path / "cache" / "logits").iterdir() if f != folder)
    np.testing.assert_allclose(np.load(plain_folder / "train_view0.npy"), plain(view, training=False).numpy(),
                               rtol=1e-4, atol=1e-4)
