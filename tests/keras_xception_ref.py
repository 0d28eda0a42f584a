"""Reference Keras Xception models for the parity tests: random weights, random BN statistics, legacy-layout files.

Imported by the test modules only, after `pytest.importorskip("tensorflow")`, so collecting tests never needs TF.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import torch

from engines.keras_xception import KerasXception

# BN statistics drawn around Keras' initial values: far enough to catch a swapped or skipped tensor, close enough
# that 14 blocks of random convs neither explode nor vanish.
BN_GAMMA = (0.5, 1.5)
BN_SHIFT = (-0.1, 0.1)  # beta and moving mean
BN_VAR = (0.5, 1.5)


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


def random_xception(size: int, seed: int):
    """`keras.applications.Xception(weights=None, include_top=False, pooling="avg")` with random BN statistics."""
    import keras

    keras.utils.set_random_seed(seed)
    model = keras.applications.Xception(weights=None, include_top=False, pooling="avg", input_shape=(size, size, 3))
    randomise_bn(model, seed)
    return model


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
