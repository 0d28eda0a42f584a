"""Reference Keras Xception models for the parity tests: random weights made input-sensitive, legacy-layout files.

Random BN statistics alone leave a random Xception's features nearly constant (they varied across face crops by at
most 6e-5, under the 1e-4 parity tolerance), so `random_xception` can fit the moving statistics to real crops and
damp the residual branches, as tests/support/sensitive.py does for the torch networks.

Imported by the test modules only, after `pytest.importorskip("tensorflow")`, so collecting tests never needs TF.
"""

from __future__ import annotations

from pathlib import Path

import re

import h5py
import numpy as np
import torch

from engines.keras_xception import KerasXception
from support.sensitive import RESIDUAL_DAMPING, spread_linear

# BN statistics drawn around Keras' initial values: far enough to catch a swapped or skipped tensor, close enough
# that 14 blocks of random convs neither explode nor vanish.
BN_GAMMA = (0.5, 1.5)
BN_SHIFT = (-0.1, 0.1)  # beta and moving mean
BN_VAR = (0.5, 1.5)
# The BN closing each residual branch of keras.applications.Xception: sepconv2 of the down-sampling blocks 2, 3, 4
# and 13, sepconv3 of the middle blocks 5-12.
RESIDUAL_END = re.compile(r"block(2|3|4|13)_sepconv2_bn|block([5-9]|1[0-2])_sepconv3_bn")


def set_tf_threads(tf) -> None:
    """One TF thread: the machine is shared, and the reference only has to be right, not fast."""
    try:
        tf.config.threading.set_intra_op_parallelism_threads(1)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:  # TensorFlow already initialised by another test
        pass


def randomise_bn(model, seed: int) -> None:
    """Give every BatchNormalization non-trivial gamma, beta and moving statistics (Keras starts at 1, 0, 0, 1)."""
    from keras import layers

    rng = np.random.default_rng(seed)
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, layers.BatchNormalization):
            n = layer.gamma.shape[0]
            layer.set_weights([rng.uniform(*BN_GAMMA, n), rng.uniform(*BN_SHIFT, n), rng.uniform(*BN_SHIFT, n),
                               rng.uniform(*BN_VAR, n)])


def _batch_norms(model) -> list:
    from keras import layers

    return [layer for layer in model._flatten_layers(include_self=False, recursive=True)
            if isinstance(layer, layers.BatchNormalization)]


def damp_residual_branches(model, factor: float = RESIDUAL_DAMPING) -> None:
    """Scale gamma and beta of the BN closing each residual branch, so every block stays near its shortcut."""
    ends = [bn for bn in _batch_norms(model) if RESIDUAL_END.fullmatch(bn.name)]
    assert len(ends) == 12, f"expected the 12 residual branches of Xception, found {len(ends)}"
    for bn in ends:
        gamma, beta, mean, var = bn.get_weights()
        bn.set_weights([gamma * factor, beta * factor, mean, var])


def fit_bn_stats(model, x: np.ndarray) -> None:
    """Moving statistics of every BatchNormalization set to those of the batch `x`: one training-mode pass with
    momentum 0, in which each BN normalises by the batch statistics it then stores."""
    bns = _batch_norms(model)
    momenta = [bn.momentum for bn in bns]
    for bn in bns:
        bn.momentum = 0.0
    try:
        model(x, training=True)
    finally:
        for bn, momentum in zip(bns, momenta):
            bn.momentum = momentum


def random_xception(size: int, seed: int, crops: np.ndarray | None = None):
    """`keras.applications.Xception(weights=None, include_top=False, pooling="avg")` with random BN statistics;
    given real `crops`, input-sensitive: damped residual branches and BN statistics fitted to the crops."""
    import keras

    keras.utils.set_random_seed(seed)
    model = keras.applications.Xception(weights=None, include_top=False, pooling="avg", input_shape=(size, size, 3))
    randomise_bn(model, seed)
    if crops is not None:
        damp_residual_branches(model)
        fit_bn_stats(model, keras_input(crops))
    return model


def spread_dense(dense, features: np.ndarray) -> None:
    """A Keras Dense(1 or 2) pointed along the main direction of `features` and scaled so its logit or margin
    spreads, by the same rule as the torch heads (tests/support/sensitive.py `spread_linear`)."""
    kernel, _ = dense.get_weights()
    linear = torch.nn.Linear(*kernel.shape)
    spread_linear(linear, torch.from_numpy(np.asarray(features, np.float32)))
    dense.set_weights([linear.weight.detach().numpy().T, linear.bias.detach().numpy()])


def write_legacy_h5(model, path: Path) -> Path:
    """Write `model`'s weights in the Keras 2 layout of the published notop file: root `layer_names`, and per layer
    a `weight_names` attribute and datasets `<layer>/<layer>/<var>:0`."""
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = [layer.name.encode() for layer in model.layers]
        f.attrs["backend"] = b"tensorflow"
        f.attrs["keras_version"] = b"2.2.4"
        for layer in model.layers:
            group = f.create_group(layer.name)
            names = [f"{layer.name}/{w.name}:0" for w in layer.weights]
            group.attrs["weight_names"] = [n.encode() for n in names]
            for name, w in zip(names, layer.weights):
                group.create_dataset(name, data=np.asarray(w.numpy()))
    return path


def keras_input(crops: np.ndarray) -> np.ndarray:
    """Keras' `xception.preprocess_input`: x / 127.5 - 1, NHWC float32."""
    return crops.astype(np.float32) / 127.5 - 1.0


def torch_features(model: KerasXception, crops: np.ndarray) -> np.ndarray:
    """The torch port's features for uint8 NHWC crops, normalised as the engines do (mean 0.5, std 0.5)."""
    x = (torch.from_numpy(crops).permute(0, 3, 1, 2).float() / 255.0 - 0.5) / 0.5
    with torch.inference_mode():
        return model.eval()(x).numpy()
