"""The Distiller's train_step: what changes, what must not, and its two logit sources."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from kdtl.distiller import Distiller
from kdtl.models.mlp import mlp
from kdtl.pipeline import eval_dataset, predict_logits, train_dataset


def _data(n=256, features=8, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, features)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int32) + (x[:, 1] > 0.5).astype(np.int32)
    return x, y


def _models(seed=0):
    keras.utils.set_random_seed(seed)
    teacher = mlp(8, 3, [32], 0.2, "teacher")
    student = mlp(8, 3, [4], 0.0, "student")
    return teacher, student


class CountingTeacher(keras.Model):
    """Wraps a teacher and counts its calls (Python-side, at trace time)."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner
        self.calls = 0

    def call(self, x, training=False):
        self.calls += 1
        return self.inner(x, training=training)


def test_fit_changes_student_and_leaves_teacher_bit_identical():
    x, y = _data()
    teacher, student = _models()
    before_teacher = [w.copy() for w in teacher.get_weights()]
    before_student = [w.copy() for w in student.get_weights()]
    distiller = Distiller(student, teacher, alpha=0.7, temperature=3.0)
    distiller.compile(optimizer=keras.optimizers.Adam(0.01))
    dataset, steps = train_dataset(x, y, batch_size=32, seed=0, epochs=2, shared_inputs=True)
    history = distiller.fit(dataset, epochs=2, steps_per_epoch=steps, verbose=0)
    for key in ("loss", "student_loss", "distillation_loss", "accuracy"):
        assert key in history.history
    assert history.history["distillation_loss"][-1] > 0
    for old, new in zip(before_teacher, teacher.get_weights()):
        assert np.array_equal(old, new)
    assert any(not np.array_equal(old, new) for old, new in zip(before_student, student.get_weights()))


def test_cached_logits_give_the_same_loss_as_calling_the_teacher():
    x, y = _data()
    teacher, student = _models()
    logits = predict_logits(teacher, x, batch_size=64)
    online = Distiller(student, teacher, alpha=0.6, temperature=2.0)
    cached = Distiller(student, None, alpha=0.6, temperature=2.0)
    for d in (online, cached):
        d.compile()
    with_teacher = online.evaluate(eval_dataset(x, y, batch_size=64, teacher_inputs=x),
                                   verbose=0, return_dict=True)
    with_cache = cached.evaluate(eval_dataset(x, y, batch_size=64, teacher_logits=logits),
                                 verbose=0, return_dict=True)
    assert with_teacher["distillation_loss"] > 0
    for key in ("loss", "student_loss", "distillation_loss", "accuracy"):
        np.testing.assert_allclose(with_teacher[key], with_cache[key], rtol=1e-5)


def test_cached_and_online_training_follow_the_same_trajectory():
    x, y = _data()
    results = []
    for source in ("online", "cached"):
        teacher, student = _models(seed=3)
        logits = predict_logits(teacher, x, 64) if source == "cached" else None
        distiller = Distiller(student, teacher if source == "online" else None, 0.5, 2.0)
        distiller.compile(optimizer=keras.optimizers.SGD(0.1))
        dataset, steps = train_dataset(x, y, batch_size=32, seed=1, epochs=1,
                                       teacher_logits=logits, shared_inputs=source == "online")
        distiller.fit(dataset, epochs=1, steps_per_epoch=steps, verbose=0)
        results.append(student.get_weights())
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_alpha_zero_never_calls_the_teacher():
    x, y = _data()
    teacher, student = _models()
    counting = CountingTeacher(teacher)
    distiller = Distiller(student, counting, alpha=0.0)
    distiller.compile(optimizer="adam")
    dataset, steps = train_dataset(x, y, batch_size=32, seed=0, epochs=1, shared_inputs=True)
    history = distiller.fit(dataset, epochs=1, steps_per_epoch=steps, verbose=0)
    assert counting.calls == 0
    assert history.history["distillation_loss"] == [0.0]
    np.testing.assert_allclose(history.history["loss"], history.history["student_loss"])


def test_teacher_runs_in_inference_mode():
    """Dropout in the teacher would make its targets noisy: it must be off."""
    x, y = _data(n=64)
    keras.utils.set_random_seed(0)
    teacher = mlp(8, 3, [64], 0.9, "teacher")  # heavy dropout shows if training=True leaks
    distiller = Distiller(mlp(8, 3, [4], 0.0, "student"), teacher, alpha=1.0)
    inputs = {"student": tf.constant(x), "teacher": tf.constant(x)}
    first = distiller.teacher_logits(inputs).numpy()
    second = distiller.teacher_logits(inputs).numpy()
    np.testing.assert_array_equal(first, second)
    np.testing.assert_allclose(first, teacher(x, training=False).numpy(), rtol=1e-6)


def test_call_is_the_students():
    x, _ = _data(n=16)
    teacher, student = _models()
    distiller = Distiller(student, teacher, alpha=0.5)
    np.testing.assert_allclose(distiller({"student": x}).numpy(), student(x).numpy(), rtol=1e-6)
    np.testing.assert_allclose(distiller(x).numpy(), student(x).numpy(), rtol=1e-6)


def test_distillation_without_teacher_or_cache_is_an_error():
    x, y = _data(n=32)
    _, student = _models()
    distiller = Distiller(student, None, alpha=0.5)
    distiller.compile(optimizer="adam")
    dataset, steps = train_dataset(x, y, batch_size=16, seed=0, epochs=1)
    with pytest.raises(ValueError, match="teacher"):
        distiller.fit(dataset, epochs=1, steps_per_epoch=steps, verbose=0)
