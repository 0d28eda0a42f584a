"""The authors' Keras MesoNet, rebuilt from what a weight file itself records, as the reference for parity.

The stages follow the paper's spec (kernel sizes, pools and dilations are not in the file), but every layer takes
its name from the file's `layer_names` and the head is built in the file's own order: a LeakyReLU only where the
file lists one. Keras 2 writes every layer there, weightless ones included, so after building, every listed name
must have been used: a file with a layer the reference does not know fails here instead of being ignored.

It reads the file with h5py directly, not through the engine's parser, so the two cannot share a misreading.
Imported by tests and benchmarks only, after TensorFlow is known to be importable.
"""

from __future__ import annotations

from collections import defaultdict, deque
from pathlib import Path

import h5py
import numpy as np

CROP_SIZE = 256
LEAKY_SLOPE = 0.1  # the authors' LeakyReLU(alpha=0.1)
DROPOUT = 0.5
INCEPTION_SPECS = ((1, 4, 4, 2), (2, 4, 4, 2))
MESO4_STEMS = ((8, 3), (8, 5))  # (channels, kernel) of Meso4's first two conv stages
TAIL_STAGES = ((16, 5, 2), (16, 5, 4))  # (channels, kernel, pool) of the last two stages, in both networks
FIRST_POOLS = (2, 2)


def _class(name: str) -> str:
    """`leaky_re_lu_1` -> `leaky_re_lu`: Keras 2 auto-names layers after their class plus a counter."""
    prefix, _, suffix = name.rpartition("_")
    return prefix if suffix.isdigit() else name


def _counter(name: str) -> int:
    return int(name.rpartition("_")[2])


def file_layers(path: Path) -> tuple[list[str], dict[str, int]]:
    """The file's `layer_names` and the output width of each Dense layer (from its kernel)."""
    with h5py.File(path, "r") as f:
        names = [n.decode() if isinstance(n, bytes) else str(n) for n in f.attrs["layer_names"]]
        units = {n: f[n][n]["kernel:0"].shape[1] for n in names if _class(n) == "dense"}
    return names, units


def head_classes(path: Path) -> list[str]:
    """Class prefixes of the layers after Flatten, in the file's order."""
    names, _ = file_layers(path)
    classes = [_class(n) for n in names]
    return classes[classes.index("flatten") + 1:]


def keras_mesonet(path: Path):
    """A Keras model of the file's architecture, named after the file's layers, with the file's weights."""
    from keras import Model, layers

    names, units = file_layers(path)
    unused: dict[str, deque[str]] = defaultdict(deque)
    for name in sorted(names, key=lambda n: (_class(n), _counter(n))):
        unused[_class(name)].append(name)  # per class in creation order: the order of the counters

    def take(cls: str) -> str:
        if not unused[cls]:
            raise AssertionError(f"{path.name}: the reference needs one more {cls} than the file lists")
        return unused[cls].popleft()

    def conv(n: int, k: int, dilation: int = 1):
        return layers.Conv2D(n, k, padding="same", dilation_rate=dilation, activation="relu", name=take("conv2d"))

    def bn_pool(x, pool: int):
        x = layers.BatchNormalization(name=take("batch_normalization"))(x)
        return layers.MaxPooling2D(pool, padding="same", name=take("max_pooling2d"))(x)

    def inception(x, a: int, b: int, c: int, d: int):
        x1 = conv(a, 1)(x)
        x2 = conv(b, 1)(x)  # one statement per layer: Keras 2 numbered them in this creation order
        x2 = conv(b, 3)(x2)
        x3 = conv(c, 1)(x)
        x3 = conv(c, 3, 2)(x3)
        x4 = conv(d, 1)(x)
        x4 = conv(d, 3, 3)(x4)
        return layers.Concatenate(axis=-1, name=take("concatenate"))([x1, x2, x3, x4])

    inp = layers.Input((CROP_SIZE, CROP_SIZE, 3), name=take("input"))
    x = inp
    if "concatenate" in unused:
        for spec, pool in zip(INCEPTION_SPECS, FIRST_POOLS):
            x = bn_pool(inception(x, *spec), pool)
    else:
        for (n, k), pool in zip(MESO4_STEMS, FIRST_POOLS):
            x = bn_pool(conv(n, k)(x), pool)
    for n, k, pool in TAIL_STAGES:
        x = bn_pool(conv(n, k)(x), pool)
    x = layers.Flatten(name=take("flatten"))(x)

    flatten = next(i for i, n in enumerate(names) if _class(n) == "flatten")
    head = names[flatten + 1:]
    for i, name in enumerate(head):
        cls = _class(name)
        if take(cls) != name:
            raise AssertionError(f"{path.name}: head layer {name} is out of creation order")
        if cls == "dropout":
            x = layers.Dropout(DROPOUT, name=name)(x)
        elif cls == "dense":
            last = i == len(head) - 1
            x = layers.Dense(units[name], activation="sigmoid" if last else None, name=name)(x)
        elif cls == "leaky_re_lu":
            x = layers.LeakyReLU(negative_slope=LEAKY_SLOPE, name=name)(x)
        else:
            raise AssertionError(f"{path.name}: no reference for head layer {name}")
    left = [n for q in unused.values() for n in q]
    if left:
        raise AssertionError(f"{path.name}: the file lists layers the reference did not build: {left}")
    model = Model(inp, x)
    model.load_weights(str(path), by_name=True)
    return model


def keras_p_real(model, crops: np.ndarray) -> np.ndarray:
    """The Keras model's sigmoid (p(real)) for uint8 RGB crops, scaled to [0, 1] as the authors did."""
    return model(crops.astype(np.float32) / 255.0, training=False).numpy()[:, 0]
