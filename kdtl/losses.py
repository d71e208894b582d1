"""The knowledge-distillation loss of Hinton et al. (2015), as the article states it.

    loss = alpha * T^2 * KL(softmax(t / T) || softmax(s / T))
           + (1 - alpha) * CE(y, softmax(s))

with ``t`` the teacher's logits, ``s`` the student's, ``T`` the temperature and
``y`` the integer labels; KL and CE are averaged over the batch. The T^2 factor
keeps the soft term's gradients on the same scale as the hard term's when T
changes.

Convention: ``alpha`` weights the SOFT (distillation) term, as in the seed
article. ``keras.distillation.Distiller`` uses the opposite convention (its
``student_loss_weight`` weights the HARD term), so kdtl ``alpha`` equals
``1 - student_loss_weight`` there.
"""

from __future__ import annotations

import keras
from keras import ops
from keras.distillation import LogitsDistillation


class DistillationLoss:
    """Computes the three numbers a distillation step reports.

    ``alpha = 0`` is plain cross-entropy training of the student (the caller
    need not produce teacher logits at all); ``alpha = 1`` is pure
    distillation, ``T^2`` times the KL divergence.
    """

    def __init__(self, alpha: float, temperature: float, label_smoothing: float = 0.0):
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}")
        self.alpha = float(alpha)
        self.temperature = float(temperature)
        self.label_smoothing = float(label_smoothing)
        # Keras' implementation of the temperature-softened KL times T^2. It
        # must get a KLDivergence *instance*: given the string "kl_divergence"
        # (its default) it resolves to the bare function, skips the softmax
        # and the T^2 factor, and computes KL on raw logits (Keras 3.15).
        self.soft = LogitsDistillation(temperature=self.temperature,
                                       loss=keras.losses.KLDivergence())
        self.hard = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    def student_loss(self, labels, student_logits):
        """Cross-entropy of the student against the true labels (smoothed:
        ``(1 - eps) * one_hot + eps / classes`` when ``label_smoothing = eps``)."""
        student_logits = ops.cast(student_logits, "float32")
        if self.label_smoothing:
            classes = ops.shape(student_logits)[-1]
            one_hot = ops.one_hot(ops.cast(ops.reshape(labels, (-1,)), "int32"), classes)
            return ops.mean(keras.losses.categorical_crossentropy(
                one_hot, student_logits, from_logits=True, label_smoothing=self.label_smoothing))
        return self.hard(labels, student_logits)

    def distillation_loss(self, teacher_logits, student_logits):
        """T^2 * KL(softmax(t/T) || softmax(s/T)), averaged over the batch."""
        return self.soft.compute_loss(
            ops.cast(teacher_logits, "float32"), ops.cast(student_logits, "float32")
        )

    def __call__(self, labels, student_logits, teacher_logits=None):
        """Returns ``(loss, student_loss, distillation_loss)``."""
        student_loss = self.student_loss(labels, student_logits)
        if self.alpha == 0.0:
            return student_loss, student_loss, ops.zeros((), "float32")
        if teacher_logits is None:
            raise ValueError("alpha > 0 needs the teacher's logits")
        distillation_loss = self.distillation_loss(teacher_logits, student_logits)
        loss = self.alpha * distillation_loss + (1.0 - self.alpha) * student_loss
        return loss, student_loss, distillation_loss
