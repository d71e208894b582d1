"""Every model on tiny shapes, and the .keras round trip of each."""

import keras
import numpy as np
import pytest

from kdtl.data import DataBundle, Split
from kdtl.errors import ConfigError
from kdtl.models import build_student, build_teacher
from tests.conftest import compose_config


def image_bundle(n=4, classes=10):
    x = np.random.default_rng(0).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    split = Split(x, np.arange(n, dtype=np.int32) % classes)
    return DataBundle("cifar10", "image", classes, [str(i) for i in range(classes)],
                      split, split, split, input_shape=(32, 32, 3))


CASES = {
    "vgg": (build_student, ["task=cifar10", "student.widths=[4,8]"]),
    "resnet": (build_teacher, ["task=cifar10", "teacher=resnet", "teacher.widths=[4,8,8]"]),
    "resnet9": (build_teacher, ["task=cifar10", "teacher=resnet9", "teacher.widths=[4,4,8,8]"]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_tiny_model_runs_and_round_trips(case, tmp_path):
    build, overrides = CASES[case]
    cfg = compose_config(overrides)
    node = cfg.student if build is build_student else cfg.teacher
    data = image_bundle()
    built = build(node, data)
    x = built.encode(data.train.inputs)
    logits = built.model(x, training=False).numpy()
    assert logits.shape == (4, 10) and logits.dtype == np.float32
    path = tmp_path / f"{case}.keras"
    built.model.save(path)
    again = keras.saving.load_model(path)
    np.testing.assert_allclose(again(x, training=False).numpy(), logits, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("teacher", ["resnet", "resnet9"])
def test_default_vgg_is_at_most_40_percent_of_either_resnet_teacher(teacher):
    cfg = compose_config(["task=cifar10", f"teacher={teacher}"])
    data = image_bundle()
    student = build_student(cfg.student, data).model.count_params()
    teacher = build_teacher(cfg.teacher, data).model.count_params()
    assert student <= 0.4 * teacher, (student, teacher)


def test_resnet_depth_must_be_6n_plus_2():
    cfg = compose_config(["task=cifar10", "teacher=resnet", "teacher.depth=21"])
    with pytest.raises(ConfigError, match="6n \\+ 2"):
        build_teacher(cfg.teacher, image_bundle())


def test_resnet20_has_the_papers_parameter_count():
    cfg = compose_config(["task=cifar10", "teacher=resnet", "teacher.widths=[16,32,64]"])
    params = build_teacher(cfg.teacher, image_bundle()).model.count_params()
    # 0.27M in He et al. (2016), Table 6 (projection shortcuts add ~3k).
    assert 0.26e6 < params < 0.29e6


def test_resnet9_at_pages_widths_has_its_parameter_count():
    cfg = compose_config(["task=cifar10", "teacher=resnet9", "teacher.widths=[64,128,256,512]"])
    params = build_teacher(cfg.teacher, image_bundle()).model.count_params()
    # Page's ResNet-9 (Myrtle.ai, 2018): 6.57M parameters.
    assert 6.5e6 < params < 6.6e6


def test_resnet9_needs_four_widths():
    cfg = compose_config(["task=cifar10", "teacher=resnet9", "teacher.widths=[8,16,32]"])
    with pytest.raises(ConfigError, match="4 positive widths"):
        build_teacher(cfg.teacher, image_bundle())


def test_keras_app_teacher_resizes_and_fine_tunes_top_k(tmp_path):
    cfg = compose_config(["task=cifar10", "teacher=keras_app", "teacher.weights=null",
                          "teacher.input_size=48", "teacher.training.top_k=3"])
    built = build_teacher(cfg.teacher, image_bundle())
    logits = built.model(built.encode(image_bundle().train.inputs), training=False)
    assert logits.shape == (4, 10)
    backbone = next(layer for layer in built.model.layers if isinstance(layer, keras.Model))
    trainable = [layer for layer in backbone.layers if layer.trainable and layer.weights]
    assert 1 <= len(trainable) <= 3


def test_keras_app_unknown_application_lists_names():
    cfg = compose_config(["task=cifar10", "teacher=keras_app", "teacher.application=ResNet51"])
    with pytest.raises(ConfigError, match="available: .*ResNet50"):
        build_teacher(cfg.teacher, image_bundle())


def test_keras_app_missing_weights_file():
    from kdtl.errors import ModelError

    cfg = compose_config(["task=cifar10", "teacher=keras_app", "teacher.weights=/nowhere/w.h5"])
    with pytest.raises(ModelError, match="does not exist"):
        build_teacher(cfg.teacher, image_bundle())
