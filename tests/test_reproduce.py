"""kdtl reproduce on the synthetic profile: the table is the runs' own numbers."""

import csv
import json
import statistics

import pytest

from kdtl.cli import main


def test_reproduce_synthetic_table_matches_run_summaries(tmp_path, capfd):
    assert main(["reproduce", "profile=synthetic", "seeds=2", f"results_dir={tmp_path / 'results'}",
                 "data.num_train=900", "data.num_test=300", "teacher.hidden_units=[64]"]) == 0
    folder = tmp_path / "results" / "synthetic"
    for name in ("table.md", "table.csv", "runs.jsonl", "curves.png"):
        assert (folder / name).is_file(), name
    runs = [json.loads(line) for line in (folder / "runs.jsonl").read_text().splitlines()]
    direct = [r["student"]["test_accuracy"] for r in runs if r["role"] == "direct"]
    distilled = [r for r in runs if r["role"] == "distilled"]
    selection = [r for r in runs if r["role"] == "selection"]
    assert len(direct) == 2 and len(distilled) == 2 and len(selection) == 2
    # The chosen pair is the best on validation among the first seed's candidates.
    best = max(selection, key=lambda r: r["student"]["validation_accuracy"])
    assert {r["alpha"] for r in distilled} == {best["alpha"]}
    with open(folder / "table.csv") as f:
        rows = {row["model"].split(" (")[0]: row for row in csv.DictReader(f)}
    assert float(rows["student direct"]["test accuracy (mean)"]) == pytest.approx(statistics.mean(direct))
    assert float(rows["student distilled"]["test accuracy (mean)"]) == pytest.approx(
        statistics.mean(r["student"]["test_accuracy"] for r in distilled))
    assert float(rows["student direct"]["std"]) == pytest.approx(statistics.stdev(direct))
    teacher = [r["teacher"]["test_accuracy"] for r in distilled]
    assert float(rows["teacher"]["test accuracy (mean)"]) == pytest.approx(statistics.mean(teacher))
    assert float(rows["student direct"]["CPU ms/example @1"]) > 0
    # Rerunning finishes at once: every run is reused.
    before = (folder / "runs.jsonl").read_text()
    assert main(["reproduce", "profile=synthetic", "seeds=2", f"results_dir={tmp_path / 'results'}",
                 "data.num_train=900", "data.num_test=300", "teacher.hidden_units=[64]"]) == 0
    assert (folder / "runs.jsonl").read_text() == before


@pytest.mark.parametrize("args, message", [
    (["profile=nope"], "unknown profile 'nope'"),
    (["profile=synthetic", "tasks=[imdb]"], "unknown task(s) imdb"),
    (["profile=synthetic", "seeds=0"], "seeds must be >= 1"),
])
def test_reproduce_bad_input(args, message, tmp_path, capfd):
    assert main(["reproduce", *args, f"results_dir={tmp_path}"]) == 2
    assert message in capfd.readouterr().err


def test_reproduce_refuses_a_folder_of_another_profile(tmp_path, capfd):
    (tmp_path / "synthetic").mkdir()
    (tmp_path / "synthetic" / "profile.json").write_text(json.dumps({"profile": "synthetic", "extra": ["x=1"]}))
    assert main(["reproduce", "profile=synthetic", f"results_dir={tmp_path}"]) == 2
    assert "overwrite=true" in capfd.readouterr().err


def test_a_profile_teacher_seed_shares_one_teacher_across_seeds(tmp_path, monkeypatch, capfd):
    from kdtl import reproduce

    profile = reproduce.load_profile("synthetic")
    profile["teacher_seed"] = 0
    monkeypatch.setattr(reproduce, "load_profile", lambda name: profile)
    args = ["reproduce", "profile=synthetic", "seeds=2", f"results_dir={tmp_path / 'results'}",
            f"paths.cache_dir={tmp_path / 'cache'}", "data.num_train=600", "data.num_test=200",
            "teacher.hidden_units=[32]", "trainer.epochs=2", "teacher.training.epochs=2"]
    assert main(args) == 0
    folder = tmp_path / "results" / "synthetic"
    runs = [json.loads(line) for line in (folder / "runs.jsonl").read_text().splitlines()]
    distilled = [r for r in runs if r["role"] == "distilled"]
    assert sorted(r["seed"] for r in distilled) == [0, 1]
    assert len({r["teacher"]["key"] for r in distilled}) == 1
    assert len(list((tmp_path / "cache" / "teachers").iterdir())) == 1
    with open(folder / "table.csv") as f:
        teacher_row = next(row for row in csv.DictReader(f) if row["model"] == "teacher")
    assert teacher_row["n"] == "1"
    assert "Machine time of the whole reproduction" in (folder / "table.md").read_text()
