"""Every task and experiment config composes, validates and builds its models."""


import numpy as np
import pytest

from kdtl.data import DATASETS, DataBundle, Split
from kdtl.models import build_student, build_teacher
from tests.conftest import REPO, compose_config

CONF = REPO / "conf"


def _names(group):
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def tiny_bundle(cfg) -> DataBundle:
    """A few examples of the kind the configured dataset yields, without I/O."""
    rng = np.random.default_rng(0)
    n, classes = 12, cfg.data.num_classes
    labels = np.arange(n, dtype=np.int32) % classes
    if cfg.data.name == "synthetic":
        inputs, kind, shape = rng.normal(size=(n, cfg.data.num_features)).astype(np.float32), "features", (cfg.data.num_features,)
    elif cfg.data.name in ("imdb", "text_folder"):
        words = "a fine film with great acting and a dull plot that never ends".split()
        inputs = np.array([" ".join(rng.choice(words, 30)) for _ in range(n)], dtype=object)
        kind, shape = "text", None
    elif cfg.data.name in ("cifar10", "image_folder"):
        inputs, kind, shape = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), "image", (32, 32, 3)
    else:
        pytest.skip(f"no tiny bundle for data {cfg.data.name!r} yet")
    split = Split(inputs, labels)
    return DataBundle(cfg.data.name, kind, classes, [str(i) for i in range(classes)],
                      split, split, split, input_shape=shape)


def _build_both(cfg):
    data = tiny_bundle(cfg)
    teacher = build_teacher(cfg.teacher, data)
    for built in (teacher, build_student(cfg.student, data, teacher)):
        logits = built.model.predict(built.encode(data.train.inputs), verbose=0)
        assert logits.shape == (len(data.train), cfg.data.num_classes)


@pytest.mark.parametrize("task", _names("task"))
def test_task_composes_and_builds(task):
    cfg = compose_config([f"task={task}"])
    assert cfg.task.name == task
    DATASETS.get(cfg.data.name)  # registered
    _build_both(cfg)


@pytest.mark.parametrize("experiment", _names("experiment"))
def test_experiment_composes_and_builds(experiment):
    cfg = compose_config([f"experiment={experiment}"])
    _build_both(cfg)


def test_experiment_changes_only_what_it_names():
    base = compose_config([])
    hard = compose_config(["experiment=synthetic_hard"])
    assert hard.data.noise != base.data.noise
    assert hard.trainer == base.trainer and hard.student == base.student


def test_command_line_beats_task_defaults():
    cfg = compose_config(["task=synthetic", "trainer.epochs=2", "student.hidden_units=[5]"])
    assert cfg.trainer.epochs == 2 and list(cfg.student.hidden_units) == [5]


def test_a_teacher_seed_equal_to_the_seed_is_the_same_run():
    from kdtl.train import config_hash

    unset = config_hash(compose_config(["trainer.seed=3"]))
    assert config_hash(compose_config(["trainer.seed=3", "trainer.teacher_seed=3"])) == unset
    assert config_hash(compose_config(["trainer.seed=3", "trainer.teacher_seed=0"])) != unset


def test_new_teacher_options_left_null_keep_stored_teachers_and_set_ones_do_not():
    from types import SimpleNamespace

    from omegaconf import OmegaConf

    from kdtl.teachers import teacher_key

    data = SimpleNamespace(fingerprint="f")
    tricks = {"whiten": "true", "activation": "celu", "bn_scale": "false", "pool_first": "true",
              "ghost_batch": "32", "training.bias_lr_scale": "64", "training.label_smoothing": "0.2"}
    plain = [f"teacher.{name}=null" for name in tricks]
    key = lambda *o: teacher_key(compose_config(["task=cifar10", *o]), data, "float32")  # noqa: E731
    # A config from before these settings existed: the same teacher, the same key.
    before = OmegaConf.to_container(compose_config(["task=cifar10", *plain]), resolve=True)
    for name in tricks:
        *parents, leaf = name.split(".")
        node = before["teacher"]
        for parent in parents:
            node = node[parent]
        del node[leaf]
    before = OmegaConf.create(before)
    assert teacher_key(before, data, "float32") == key(*plain)
    one_each = [key(*plain, f"teacher.{name}={value}") for name, value in tricks.items()]
    assert len({key(*plain), key(), *one_each}) == 2 + len(tricks)
