"""Optimizers and learning-rate schedules from the ``optimizer`` config."""

from __future__ import annotations

import keras

from kdtl.errors import ConfigError

# Normalisation scales and biases are not decayed (common practice since
# "Decoupled Weight Decay Regularization", Loshchilov & Hutter 2019).
NO_DECAY = ["bias", "gamma", "beta"]


def schedule(cfg, steps_per_epoch: int, epochs: int):
    """A learning rate or a schedule over ``steps_per_epoch * epochs`` steps.

    - constant: ``learning_rate`` throughout (after an optional linear warmup);
    - cosine: linear warmup from 0 over ``warmup_epochs``, then cosine decay to 0;
    - onecycle: linear warmup from ``learning_rate / 25`` over ``warmup_epochs``
      (30% of training when 0), then cosine decay to 0.
    """
    total = max(1, steps_per_epoch * epochs)
    warmup = int(round(cfg.warmup_epochs * steps_per_epoch))
    if cfg.schedule == "constant":
        if warmup == 0:
            return cfg.learning_rate
        return keras.optimizers.schedules.CosineDecay(
            cfg.learning_rate, decay_steps=1, alpha=1.0,
            warmup_target=cfg.learning_rate, warmup_steps=warmup)
    if cfg.schedule == "cosine":
        if warmup == 0:
            return keras.optimizers.schedules.CosineDecay(cfg.learning_rate, decay_steps=total)
        return keras.optimizers.schedules.CosineDecay(
            0.0, decay_steps=max(1, total - warmup), warmup_target=cfg.learning_rate,
            warmup_steps=warmup)
    if cfg.schedule == "onecycle":
        warmup = warmup or int(0.3 * total)
        return keras.optimizers.schedules.CosineDecay(
            cfg.learning_rate / 25, decay_steps=max(1, total - warmup),
            warmup_target=cfg.learning_rate, warmup_steps=warmup)
    raise ConfigError(f"unknown optimizer.schedule {cfg.schedule!r}; available: constant, cosine, onecycle")


class _ScaledBiasLearningRate:
    """Multiplies the learning rate of 1-D variables (biases, batch-norm
    offsets and scales) by ``bias_lr_scale``. Fast CIFAR-10 recipes after
    Page (2019) train a ResNet-9 whose batch-norm scales are frozen with the
    biases' learning rate about 64 times the weights' and their weight decay
    as many times smaller: the same decay per step as the weights, which is
    what Keras's decoupled decay (``lr * weight_decay`` per step, at the
    base rate) gives them here."""

    def __init__(self, *args, bias_lr_scale: float = 1.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.bias_lr_scale = float(bias_lr_scale)

    def update_step(self, gradient, variable, learning_rate):
        if len(variable.shape) <= 1:
            learning_rate = learning_rate * self.bias_lr_scale
        return super().update_step(gradient, variable, learning_rate)

    def get_config(self):
        return {**super().get_config(), "bias_lr_scale": self.bias_lr_scale}


@keras.saving.register_keras_serializable(package="kdtl")
class SGD(_ScaledBiasLearningRate, keras.optimizers.SGD):
    pass


@keras.saving.register_keras_serializable(package="kdtl")
class AdamW(_ScaledBiasLearningRate, keras.optimizers.AdamW):
    pass


def build(cfg, steps_per_epoch: int, epochs: int) -> keras.optimizers.Optimizer:
    """The optimizer ``cfg`` names. With ``cfg.bias_lr_scale`` set, biases
    learn that many times faster and are decayed like the weights (see
    ``_ScaledBiasLearningRate``); otherwise biases and normalisation
    parameters are not decayed."""
    learning_rate = schedule(cfg, steps_per_epoch, epochs)
    kwargs = {"clipnorm": cfg.clipnorm} if cfg.clipnorm else {}
    bias_scale = cfg.get("bias_lr_scale")
    if bias_scale:
        kwargs["bias_lr_scale"] = bias_scale
    if cfg.name == "adamw":
        optimizer = (AdamW if bias_scale else keras.optimizers.AdamW)(
            learning_rate=learning_rate, weight_decay=cfg.weight_decay, **kwargs)
    elif cfg.name == "sgd":
        optimizer = (SGD if bias_scale else keras.optimizers.SGD)(
            learning_rate=learning_rate, momentum=cfg.momentum or 0.0, nesterov=bool(cfg.nesterov),
            weight_decay=cfg.weight_decay or None, **kwargs)
    else:
        raise ConfigError(f"unknown optimizer {cfg.name!r}; available: adamw, sgd")
    if cfg.weight_decay and not bias_scale:
        optimizer.exclude_from_weight_decay(var_names=NO_DECAY)
    return optimizer
