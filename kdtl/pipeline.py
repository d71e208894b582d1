"""tf.data pipelines that feed the Distiller.

Training batches are drawn from a permutation of the examples made from
``(seed, epoch)``, so the order of epoch ``e`` is the same whether the run
went straight through or was resumed at ``e``; augmentations receive the
epoch and example indices for the same reason.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np
import tensorflow as tf

from kdtl.distiller import STUDENT, TEACHER, TEACHER_LOGITS

AUTOTUNE = tf.data.AUTOTUNE


def _constant(tree: Any) -> Any:
    return tf.nest.map_structure(tf.constant, tree)


def _gather(tree: Any, indices: tf.Tensor) -> Any:
    return tf.nest.map_structure(lambda t: tf.gather(t, indices), tree)


def epoch_permutations(size: int, seed: int, first_epoch: int, epochs: int) -> np.ndarray:
    """Row ``i`` is the example order of epoch ``first_epoch + i``."""
    return np.stack([np.random.default_rng([seed, epoch]).permutation(size)
                     for epoch in range(first_epoch, epochs)]).astype(np.int32)


def train_dataset(
    student_inputs: Any,
    labels: np.ndarray,
    *,
    batch_size: int,
    seed: int,
    epochs: int,
    initial_epoch: int = 0,
    teacher_inputs: Any = None,
    teacher_logits: np.ndarray | None = None,
    augment: Callable[[Any, tf.Tensor, tf.Tensor], Any] | None = None,
    shared_inputs: bool = False,
    views: int | None = None,
) -> tuple[tf.data.Dataset, int]:
    """Batches ``({"student", "teacher"?, "teacher_logits"?}, labels)`` for
    epochs ``initial_epoch .. epochs-1``; returns it with the steps per epoch.

    ``shared_inputs``: teacher and student take the same (augmented) tensor.
    ``augment(batch, example_indices, epoch)`` runs on whole batches.
    ``views``: ``teacher_logits`` has shape ``(views, examples, classes)`` and
    epoch ``e`` uses augmented view ``e % views`` with its logits.
    """
    size = int(labels.shape[0])
    steps = math.ceil(size / batch_size)
    orders = epoch_permutations(size, seed, initial_epoch, epochs)
    epoch_ids = np.arange(initial_epoch, epochs, dtype=np.int64)
    student_t, labels_t = _constant(student_inputs), tf.constant(labels)
    teacher_t = None if teacher_inputs is None or shared_inputs else _constant(teacher_inputs)
    logits_t = None if teacher_logits is None else tf.constant(teacher_logits)

    def batches(epoch, order):
        indices = tf.data.Dataset.from_tensor_slices(order).batch(batch_size)
        return indices.map(lambda idx: (epoch, idx))

    def assemble(epoch, idx):
        x = _gather(student_t, idx)
        view = epoch % views if views else epoch
        if augment is not None:
            x = augment(x, idx, view)
        inputs = {STUDENT: x}
        if shared_inputs:
            inputs[TEACHER] = x
        elif teacher_t is not None:
            inputs[TEACHER] = _gather(teacher_t, idx)
        if logits_t is not None:
            inputs[TEACHER_LOGITS] = (tf.gather(logits_t[tf.cast(view, tf.int32)], idx) if views
                                      else tf.gather(logits_t, idx))
        return inputs, tf.gather(labels_t, idx)

    dataset = (tf.data.Dataset.from_tensor_slices((epoch_ids, orders))
               .flat_map(batches)
               .map(assemble, num_parallel_calls=AUTOTUNE, deterministic=True)
               .prefetch(AUTOTUNE))
    return dataset, steps


def eval_dataset(student_inputs: Any, labels: np.ndarray, *, batch_size: int,
                 teacher_inputs: Any = None,
                 teacher_logits: np.ndarray | None = None) -> tf.data.Dataset:
    """Batches in dataset order, without augmentation."""
    inputs = {STUDENT: student_inputs}
    if teacher_inputs is not None:
        inputs[TEACHER] = teacher_inputs
    if teacher_logits is not None:
        inputs[TEACHER_LOGITS] = teacher_logits
    return (tf.data.Dataset.from_tensor_slices((inputs, labels))
            .batch(batch_size).prefetch(AUTOTUNE))


def predict_logits(model, inputs: Any, batch_size: int) -> np.ndarray:
    """A model's logits over a whole split, as float32 numpy."""
    dataset = tf.data.Dataset.from_tensor_slices(inputs).batch(batch_size).prefetch(AUTOTUNE)
    return np.asarray(model.predict(dataset, verbose=0), dtype=np.float32)


def augmented_view_logits(model, inputs, augment, view: int, batch_size: int) -> np.ndarray:
    """The model's logits on augmented view ``view`` of every example (the same
    augmentation ``train_dataset`` applies in epochs where ``e % views == view``)."""
    size = int(np.asarray(tf.nest.flatten(inputs)[0]).shape[0])
    data = tf.data.Dataset.from_tensor_slices((inputs, np.arange(size))).batch(batch_size)
    data = data.map(lambda x, idx: augment(x, idx, tf.constant(view, tf.int64)),
                    num_parallel_calls=AUTOTUNE).prefetch(AUTOTUNE)
    return np.asarray(model.predict(data, verbose=0), dtype=np.float32)
