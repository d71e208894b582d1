"""The Distiller: a keras.Model that trains a student against a frozen teacher.

A batch is ``(inputs, labels)`` where ``inputs`` is a dict:

- ``"student"``: what the student takes;
- ``"teacher"``: what the teacher takes (may be a different encoding of the
  same examples, e.g. WordPiece ids for a BERT teacher and word ids for an
  LSTM student), used when the teacher is called online;
- ``"teacher_logits"``: the teacher's logits for these examples, read from a
  cache; when present the teacher is not called.

With ``alpha = 0`` the teacher is never called: that is direct training.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from kdtl.losses import DistillationLoss

STUDENT, TEACHER, TEACHER_LOGITS = "student", "teacher", "teacher_logits"


class Distiller(keras.Model):
    """Student + frozen teacher with a custom ``train_step``.

    Only ``student.trainable_variables`` receive gradients; the teacher runs
    with ``training=False`` (dropout off, batch-norm statistics frozen) under
    ``stop_gradient``. ``call`` and ``predict`` are the student's.
    """

    def __init__(self, student: keras.Model, teacher: keras.Model | None = None,
                 alpha: float = 0.5, temperature: float = 4.0, label_smoothing: float = 0.0,
                 **kwargs):
        super().__init__(**kwargs)
        self.student = student
        self.teacher = teacher
        if teacher is not None:
            teacher.trainable = False
        self.alpha = float(alpha)
        self.temperature = float(temperature)
        self.distillation = DistillationLoss(self.alpha, self.temperature, label_smoothing)
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.student_loss_tracker = keras.metrics.Mean(name="student_loss")
        self.distillation_loss_tracker = keras.metrics.Mean(name="distillation_loss")
        self.accuracy = keras.metrics.SparseCategoricalAccuracy(name="accuracy")

    @property
    def metrics(self):
        # Listing the trackers lets fit/evaluate reset them every epoch.
        return [self.loss_tracker, self.student_loss_tracker,
                self.distillation_loss_tracker, self.accuracy]

    def call(self, inputs, training=False):
        if isinstance(inputs, dict) and STUDENT in inputs:
            inputs = inputs[STUDENT]
        return self.student(inputs, training=training)

    def teacher_logits(self, inputs):
        """The teacher's logits for a batch: from the cache when the batch has
        them, else from the frozen teacher; ``None`` when ``alpha == 0``."""
        if self.alpha == 0.0:
            return None
        if TEACHER_LOGITS in inputs:
            return tf.stop_gradient(tf.cast(inputs[TEACHER_LOGITS], tf.float32))
        if self.teacher is None:
            raise ValueError("distillation (alpha > 0) needs a teacher or cached teacher logits")
        teacher_inputs = inputs.get(TEACHER, inputs[STUDENT])
        return tf.stop_gradient(tf.cast(self.teacher(teacher_inputs, training=False), tf.float32))

    def _update(self, labels, student_logits, loss, student_loss, distillation_loss):
        batch = tf.shape(labels)[0]
        self.loss_tracker.update_state(loss, sample_weight=batch)
        self.student_loss_tracker.update_state(student_loss, sample_weight=batch)
        self.distillation_loss_tracker.update_state(distillation_loss, sample_weight=batch)
        self.accuracy.update_state(labels, student_logits)
        return {metric.name: metric.result() for metric in self.metrics}

    def train_step(self, data):
        inputs, labels = data[0], data[1]
        teacher_logits = self.teacher_logits(inputs)
        with tf.GradientTape() as tape:
            student_logits = self.student(inputs[STUDENT], training=True)
            loss, student_loss, distillation_loss = self.distillation(
                labels, student_logits, teacher_logits)
            total = loss + sum(self.student.losses) if self.student.losses else loss
            # A no-op except under a loss-scaling optimizer (mixed_float16).
            scaled = self.optimizer.scale_loss(total)
        variables = self.student.trainable_variables
        gradients = tape.gradient(scaled, variables)
        self.optimizer.apply(gradients, variables)
        return self._update(labels, student_logits, loss, student_loss, distillation_loss)

    def test_step(self, data):
        """Scores the student; the distillation loss too when the batch has
        what the teacher needs, else it reads 0 and ``loss`` is the hard loss."""
        inputs, labels = data[0], data[1]
        student_logits = self.student(inputs[STUDENT], training=False)
        has_teacher = TEACHER_LOGITS in inputs or (self.teacher is not None and TEACHER in inputs)
        teacher_logits = self.teacher_logits(inputs) if has_teacher else None
        if teacher_logits is None:
            student_loss = self.distillation.student_loss(labels, student_logits)
            loss, distillation_loss = student_loss, tf.zeros((), tf.float32)
        else:
            loss, student_loss, distillation_loss = self.distillation(
                labels, student_logits, teacher_logits)
        return self._update(labels, student_logits, loss, student_loss, distillation_loss)
