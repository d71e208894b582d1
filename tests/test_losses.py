"""The distillation loss against NumPy, written independently of Keras."""

import numpy as np
import pytest

from kdtl.losses import DistillationLoss


def softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def reference(labels, student, teacher, alpha, temperature):
    """alpha * T^2 * KL(p_t^T || p_s^T) + (1 - alpha) * CE(y, p_s), batch means."""
    p_t, p_s = softmax(teacher / temperature), softmax(student / temperature)
    kl = np.sum(p_t * (np.log(p_t) - np.log(p_s)), axis=-1).mean()
    ce = -np.log(softmax(student)[np.arange(len(labels)), labels]).mean()
    return alpha * temperature**2 * kl + (1 - alpha) * ce, ce, temperature**2 * kl


@pytest.mark.parametrize("alpha", [0.0, 0.1, 0.5, 0.9, 1.0])
@pytest.mark.parametrize("temperature", [1.0, 2.0, 4.0, 10.0])
def test_matches_numpy(alpha, temperature):
    rng = np.random.default_rng(int(alpha * 100 + temperature))
    teacher = rng.normal(0, 3, (64, 10)).astype(np.float32)
    student = rng.normal(0, 3, (64, 10)).astype(np.float32)
    labels = rng.integers(0, 10, 64)
    loss, student_loss, distillation_loss = DistillationLoss(alpha, temperature)(
        labels, student, teacher)
    want_loss, want_ce, want_kd = reference(labels, student, teacher, alpha, temperature)
    np.testing.assert_allclose(float(student_loss), want_ce, rtol=1e-5)
    if alpha > 0:
        np.testing.assert_allclose(float(distillation_loss), want_kd, rtol=1e-4)
    np.testing.assert_allclose(float(loss), want_loss, rtol=1e-4)


def test_alpha_zero_is_plain_cross_entropy_and_ignores_teacher():
    rng = np.random.default_rng(0)
    student = rng.normal(size=(16, 5)).astype(np.float32)
    labels = rng.integers(0, 5, 16)
    loss, _, distillation_loss = DistillationLoss(0.0, 3.0)(labels, student, None)
    ce = -np.log(softmax(student)[np.arange(16), labels]).mean()
    np.testing.assert_allclose(float(loss), ce, rtol=1e-5)
    assert float(distillation_loss) == 0.0


def test_alpha_one_is_t_squared_kl():
    rng = np.random.default_rng(1)
    teacher, student = rng.normal(size=(2, 32, 4)).astype(np.float32)
    labels = rng.integers(0, 4, 32)
    loss, _, _ = DistillationLoss(1.0, 5.0)(labels, student, teacher)
    p_t, p_s = softmax(teacher / 5), softmax(student / 5)
    kl = np.sum(p_t * np.log(p_t / p_s), axis=-1).mean()
    np.testing.assert_allclose(float(loss), 25 * kl, rtol=1e-4)


def test_identical_logits_give_zero_distillation_loss():
    logits = np.random.default_rng(2).normal(size=(8, 3)).astype(np.float32)
    _, _, distillation_loss = DistillationLoss(0.5, 2.0)(np.zeros(8, int), logits, logits)
    assert abs(float(distillation_loss)) < 1e-6


def test_alpha_outside_unit_interval_is_refused():
    with pytest.raises(ValueError):
        DistillationLoss(1.5, 2.0)


@pytest.mark.parametrize("smoothing", [0.1, 0.3])
def test_label_smoothing_matches_numpy(smoothing):
    rng = np.random.default_rng(5)
    student = rng.normal(size=(32, 6)).astype(np.float32)
    labels = rng.integers(0, 6, 32)
    targets = np.full((32, 6), smoothing / 6)
    targets[np.arange(32), labels] += 1 - smoothing
    want = -(targets * np.log(softmax(student))).sum(-1).mean()
    loss, student_loss, _ = DistillationLoss(0.0, 2.0, label_smoothing=smoothing)(labels, student)
    np.testing.assert_allclose(float(student_loss), want, rtol=1e-5)
