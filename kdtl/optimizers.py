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


def build(cfg, steps_per_epoch: int, epochs: int) -> keras.optimizers.Optimizer:
    learning_rate = schedule(cfg, steps_per_epoch, epochs)
    clip = {"clipnorm": cfg.clipnorm} if cfg.clipnorm else {}
    if cfg.name == "adamw":
        optimizer = keras.optimizers.AdamW(learning_rate=learning_rate,
                                           weight_decay=cfg.weight_decay, **clip)
    elif cfg.name == "sgd":
        optimizer = keras.optimizers.SGD(learning_rate=learning_rate, momentum=cfg.momentum or 0.0,
                                         nesterov=bool(cfg.nesterov),
                                         weight_decay=cfg.weight_decay or None, **clip)
    else:
        raise ConfigError(f"unknown optimizer {cfg.name!r}; available: adamw, sgd")
    if cfg.weight_decay:
        optimizer.exclude_from_weight_decay(var_names=NO_DECAY)
    return optimizer
