"""Every model on tiny shapes, and the .keras round trip of each."""

import keras
import numpy as np
import pytest

from kdtl.data import DataBundle, Split
from kdtl.errors import ConfigError
from kdtl.models import build_student, build_teacher
from kdtl.models.convnets import GhostBatchNormalization, patch_whitening
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
    "resnet9-tricks": (build_teacher, ["task=cifar10", "teacher=resnet9", "teacher.widths=[4,4,8,8]",
                                       "teacher.whiten=true", "teacher.activation=celu",
                                       "teacher.bn_scale=false", "teacher.pool_first=true"]),
    "resnet9-ghost-bn": (build_teacher, ["task=cifar10", "teacher=resnet9", "teacher.widths=[4,4,8,8]",
                                         "teacher.ghost_batch=2"]),
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
    cfg = compose_config(["task=cifar10", "teacher=resnet9", "teacher.widths=[64,128,256,512]",
                          "teacher.whiten=null", "teacher.bn_scale=null"])
    params = build_teacher(cfg.teacher, image_bundle()).model.count_params()
    # Page's ResNet-9 (Myrtle.ai, 2018): 6.57M parameters.
    assert 6.5e6 < params < 6.6e6


def test_ghost_batch_norm_normalises_each_group_of_the_batch_on_its_own():
    x = np.random.default_rng(0).normal(2.0, 3.0, (10, 4, 4, 5)).astype(np.float32)
    layer = GhostBatchNormalization(4, scale=False, momentum=0.0)
    y = layer(x, training=True).numpy()
    groups = [slice(0, 4), slice(4, 8), slice(8, 10)]  # the last one smaller
    for group in groups:
        part = x[group]
        expected = (part - part.mean((0, 1, 2))) / np.sqrt(part.var((0, 1, 2)) + 1e-3)
        np.testing.assert_allclose(y[group], expected, atol=1e-4)
    # Groups differ, so this is not batch norm over the whole batch...
    whole = keras.layers.BatchNormalization(scale=False)(x, training=True).numpy()
    assert np.abs(y - whole).max() > 0.1
    # ...which it is when the group holds the whole batch.
    one_group = GhostBatchNormalization(32, scale=False)(x, training=True).numpy()
    np.testing.assert_allclose(one_group, whole, atol=1e-4)
    # Moving statistics (momentum 0: the last batch's): the groups' mean statistics.
    np.testing.assert_allclose(layer.moving_mean.numpy(),
                               np.mean([x[g].mean((0, 1, 2)) for g in groups], 0), atol=1e-4)
    np.testing.assert_allclose(layer.moving_variance.numpy(),
                               np.mean([x[g].var((0, 1, 2)) for g in groups], 0), atol=1e-4)
    inference = layer(x, training=False).numpy()
    np.testing.assert_allclose(inference, (x - layer.moving_mean.numpy())
                               / np.sqrt(layer.moving_variance.numpy() + 1e-3), atol=1e-4)


def test_resnet9_ghost_batch_must_be_positive():
    cfg = compose_config(["task=cifar10", "teacher=resnet9", "teacher.ghost_batch=0"])
    with pytest.raises(ConfigError, match="teacher.ghost_batch"):
        build_teacher(cfg.teacher, image_bundle())


@pytest.mark.parametrize("ghost_batch", ["32", "null"])
def test_resnet9_bn_momentum_reaches_every_batch_norm(ghost_batch):
    base = ["task=cifar10", "teacher=resnet9", "teacher.widths=[4,4,8,8]", f"teacher.ghost_batch={ghost_batch}"]
    model = build_teacher(compose_config(base + ["teacher.bn_momentum=0.6"]).teacher, image_bundle()).model
    norms = [layer for layer in model.layers
             if isinstance(layer, (GhostBatchNormalization, keras.layers.BatchNormalization))]
    assert len(norms) == 8 and {layer.momentum for layer in norms} == {0.6}
    assert all(isinstance(layer, GhostBatchNormalization) == (ghost_batch == "32") for layer in norms)
    default = build_teacher(compose_config(base + ["teacher.bn_momentum=null"]).teacher, image_bundle())
    assert {layer.momentum for layer in default.model.layers if hasattr(layer, "moving_mean")} == {0.99}
    with pytest.raises(ConfigError, match=r"teacher.bn_momentum must be in \[0, 1\)"):
        build_teacher(compose_config(base + ["teacher.bn_momentum=1.0"]).teacher, image_bundle())


def test_resnet9_needs_four_widths():
    cfg = compose_config(["task=cifar10", "teacher=resnet9", "teacher.widths=[8,16,32]"])
    with pytest.raises(ConfigError, match="4 positive widths"):
        build_teacher(cfg.teacher, image_bundle())


def test_patch_whitening_decorrelates_the_patches_it_was_computed_on():
    # Smooth random images: neighbouring pixels and channels strongly correlated.
    rng = np.random.default_rng(0)
    noise = rng.normal(size=(200, 34, 34, 3))
    smooth = (noise[:, :-2, :-2] + noise[:, 1:-1, 1:-1] + noise[:, 2:, 2:]).cumsum(axis=-1)
    images = np.clip(128 + 20 * smooth[:, :32, :32], 0, 255).astype(np.uint8)
    kernel = patch_whitening(images, eps=0.0)
    assert kernel.shape == (3, 3, 3, 27)
    x = images.astype(np.float32) / 127.5 - 1.0
    patches = np.lib.stride_tricks.sliding_window_view(x, (3, 3), axis=(1, 2))
    patches = patches.transpose(0, 1, 2, 4, 5, 3).reshape(-1, 27)
    whitened = patches @ kernel.reshape(27, 27)
    np.testing.assert_allclose(np.cov(whitened, rowvar=False), np.eye(27), atol=1e-3)
    # The same filters as a Keras conv: its output at an inner pixel is that patch's.
    conv = keras.layers.Conv2D(27, 3, padding="same", use_bias=False)
    out = conv(x[:1])
    conv.set_weights([kernel])
    out = conv(x[:1]).numpy()
    np.testing.assert_allclose(out[0, 5, 7], x[0, 4:7, 6:9].reshape(27) @ kernel.reshape(27, 27),
                               rtol=1e-4, atol=1e-4)


def test_resnet9_whitening_stem_is_fixed_and_activation_checked():
    cfg = compose_config(["task=cifar10", "teacher=resnet9", "teacher.widths=[4,4,8,8]",
                          "teacher.whiten=true"])
    model = build_teacher(cfg.teacher, image_bundle()).model
    assert not model.get_layer("stem_whiten").trainable
    assert model.get_layer("stem_conv").kernel.shape == (1, 1, 27, 4)
    cfg = compose_config(["task=cifar10", "teacher=resnet9", "teacher.activation=gelu"])
    with pytest.raises(ConfigError, match="relu, celu"):
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


def test_tta_views_are_the_mirror_and_one_pixel_shifts():
    from kdtl.models.base import BuiltModel
    from kdtl.teachers import with_tta

    cfg = compose_config(["task=cifar10", "teacher=resnet9", "teacher.widths=[4,4,8,8]"])
    data = image_bundle()
    built = build_teacher(cfg.teacher, data)
    x = data.train.inputs
    plain = lambda images: built.model(images, training=False).numpy()  # noqa: E731
    flip_mean = lambda images: (plain(images) + plain(images[:, :, ::-1])) / 2  # noqa: E731
    padded = np.pad(x, [(0, 0), (1, 1), (1, 1), (0, 0)], mode="reflect")
    np.testing.assert_allclose(with_tta(built, "flip").model(x).numpy(), flip_mean(x),
                               rtol=1e-5, atol=1e-5)
    expected = (flip_mean(x) / 2 + flip_mean(padded[:, :32, :32]) / 4
                + flip_mean(padded[:, 2:, 2:]) / 4)
    np.testing.assert_allclose(with_tta(built, "flip_translate").model(x).numpy(), expected,
                               rtol=1e-5, atol=1e-5)
    assert with_tta(built, None) is built
    with pytest.raises(Exception, match="mirrors images"):
        with_tta(BuiltModel(keras.Sequential([keras.Input((5,)), keras.layers.Dense(2)])), "flip")
