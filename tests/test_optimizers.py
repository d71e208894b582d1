"""Optimizers from the config: the biases' learning-rate scale."""

import keras
import numpy as np
from omegaconf import OmegaConf

from kdtl import optimizers


def dense_with(bias_lr_scale, **settings):
    """A compiled one-layer model whose SGD comes from ``optimizers.build``."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    cfg = OmegaConf.create({"name": "sgd", "learning_rate": 0.1, "weight_decay": 0.0,
                            "schedule": "constant", "warmup_epochs": 0.0, "clipnorm": None,
                            "momentum": 0.9, "nesterov": True, "bias_lr_scale": bias_lr_scale,
                            **settings})
    model.compile(optimizers.build(cfg, steps_per_epoch=1, epochs=1), "mse")
    return model


def one_step(bias_lr_scale):
    """The change one SGD step makes to a dense layer's kernel and bias."""
    model = dense_with(bias_lr_scale)
    before = [v.numpy().copy() for v in model.weights]
    model.fit(np.ones((4, 3)), np.full((4, 2), 3.0), batch_size=4, epochs=1, verbose=0)
    return [v.numpy() - b for v, b in zip(model.weights, before)]


def test_bias_lr_scale_multiplies_only_the_biases_step():
    kernel, bias = one_step(None)
    kernel_scaled, bias_scaled = one_step(64.0)
    np.testing.assert_allclose(kernel_scaled, kernel, rtol=1e-6)
    np.testing.assert_allclose(bias_scaled, 64 * bias, rtol=1e-5)


def test_biases_are_decayed_only_with_a_bias_lr_scale():
    def decayed_bias(scale):
        model = dense_with(scale, weight_decay=0.5, momentum=0.0, nesterov=False)
        # Keras initialises Dense biases at 0; set them so that decay shows.
        model.layers[0].bias.assign(np.ones(2, np.float32))
        # Targets equal to the outputs: a zero gradient, so only the decay moves the bias.
        x = np.zeros((4, 3), np.float32)
        model.fit(x, model.predict(x, verbose=0), batch_size=4, epochs=1, verbose=0)
        return model.layers[0].bias.numpy()
    np.testing.assert_allclose(decayed_bias(None), [1.0, 1.0])
    # Decoupled decay at the base rate: bias * (1 - lr * weight_decay).
    np.testing.assert_allclose(decayed_bias(2.0), [0.95, 0.95], rtol=1e-6)
