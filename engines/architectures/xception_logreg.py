"""Keras ImageNet Xception features + StandardScaler + LogisticRegression, per frame (seed card 000).

The card freezes `keras.applications.Xception(weights="imagenet", include_top=False)` with global average
pooling (2048 features) and fits a scikit-learn StandardScaler and LogisticRegression on them. It publishes no
trained head, so the engine needs two files: the public Keras notop weights (the registry's "backbone" extra file)
and a head trained here by `dfstream train logreg`, which the registry treats as the model's weights.

The head is stored in a safe format: an `.npz` of plain arrays (scaler mean/scale, coef, intercept, classes) plus
a JSON metadata string (feature dim, fake class, scikit-learn version, hyperparameters), loaded with
`allow_pickle=False`. A scikit-learn pickle can run arbitrary code when loaded, so `load_head` only reads one
with an explicit `trust_pickle=True`. Inference needs no scikit-learn: the head is two affine maps and a sigmoid.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from engines.base import InputSpec, LabelMapping, TorchEngine, WeightsFormatError
from engines.entry import ModelEntry
from engines.keras_xception import (FEATURES, XCEPTION_NOTOP_FILENAME, XCEPTION_NOTOP_MD5, XCEPTION_NOTOP_URL,
                                    KerasXception, load_xception)
from engines.registration import register_architecture, register_models
from engines.weights import WeightsSource

HEAD_FORMAT = "dfstream-logreg-head"
HEAD_FORMAT_VERSION = 1
METADATA_KEY = "metadata_json"
ARRAY_KEYS = ("scaler_mean", "scaler_scale", "coef", "intercept", "classes")
BACKBONE_ROLE = "backbone"  # the registry's extra_weights key for the Xception file
BACKBONE_DESCRIPTION = "keras.applications.Xception(include_top=False, pooling='avg'), preprocess x/127.5-1"
FAKE_NAME = "fake"  # a class whose name is this (any case) is the fake one
DEFAULT_FAKE_LABEL = 1  # with integer labels {0, 1}, 1 = fake unless told otherwise
RECORDED_PARAMS = ("C", "penalty", "solver", "l1_ratio", "max_iter", "class_weight", "fit_intercept")


class UntrustedPickle(WeightsFormatError):
    """A pickled head was offered without trust_pickle=True: unpickling can execute arbitrary code."""


@dataclass(frozen=True)
class LogRegHead:
    """A fitted binary StandardScaler + LogisticRegression as arrays; `coef`/`intercept` score `classes[1]`,
    as scikit-learn's do."""

    mean: np.ndarray  # (d,)
    scale: np.ndarray  # (d,)
    coef: np.ndarray  # (d,)
    intercept: float
    classes: np.ndarray  # (2,)
    fake_index: int  # which of `classes` is fake
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def dim(self) -> int:
        return self.coef.shape[0]

    def fake_logit(self, features: np.ndarray) -> np.ndarray:
        """log(p_fake / p_real) in float64, computed exactly as scikit-learn's decision_function."""
        z = ((np.asarray(features, np.float64) - self.mean) / self.scale) @ self.coef + self.intercept
        return z if self.fake_index == 1 else -z

    def p_fake(self, features: np.ndarray) -> np.ndarray:
        """p(fake) per row of (N, d) features, equal to predict_proba[:, fake_index]."""
        return np.exp(-np.logaddexp(0.0, -self.fake_logit(features)))  # a sigmoid that cannot overflow

    def to_module(self) -> HeadModule:
        return HeadModule(self)


class HeadModule(nn.Module):
    """(N, d) features -> (N, 1) fake logit in torch: standardise, then one linear unit signed towards 'fake'."""

    def __init__(self, head: LogRegHead) -> None:
        super().__init__()
        sign = 1.0 if head.fake_index == 1 else -1.0
        self.register_buffer("mean", torch.tensor(head.mean, dtype=torch.float32))
        self.register_buffer("scale", torch.tensor(head.scale, dtype=torch.float32))
        self.linear = nn.Linear(head.dim, 1)
        with torch.no_grad():
            self.linear.weight.copy_(torch.tensor(sign * head.coef, dtype=torch.float32)[None])
            self.linear.bias.fill_(sign * head.intercept)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear((features - self.mean) / self.scale)


def _fake_index(classes: np.ndarray, fake_class: object | None) -> int:
    labels = classes.tolist()
    if fake_class is not None:
        matches = [i for i, c in enumerate(labels) if c == fake_class or str(c) == str(fake_class)]
        if not matches:
            raise ValueError(f"fake_class {fake_class!r} is not one of the classifier's classes {labels}")
        return matches[0]
    names = [str(c).lower() for c in labels]
    if FAKE_NAME in names:
        return names.index(FAKE_NAME)
    if sorted(labels) == [0, 1]:
        return labels.index(DEFAULT_FAKE_LABEL)
    raise ValueError(f"cannot tell which of the classes {labels} is fake: pass fake_class")


def head_from_sklearn(scaler: Any, clf: Any, fake_class: object | None = None) -> LogRegHead:
    """Arrays of a fitted StandardScaler (None for no scaling) and binary LogisticRegression."""
    coef = np.asarray(clf.coef_, np.float64)
    if coef.ndim != 2 or coef.shape[0] != 1:
        raise ValueError(f"expected a binary LogisticRegression (coef_ of shape (1, d)), got {coef.shape}")
    dim = coef.shape[1]
    mean = getattr(scaler, "mean_", None)
    scale = getattr(scaler, "scale_", None)
    classes = np.asarray(clf.classes_)
    classes = classes.astype(str) if classes.dtype == object else classes  # npz must hold no Python objects
    params = {k: v for k, v in clf.get_params().items()
              if k in RECORDED_PARAMS and isinstance(v, (str, int, float, bool, type(None)))}
    import sklearn

    return LogRegHead(
        mean=np.zeros(dim) if mean is None else np.asarray(mean, np.float64),
        scale=np.ones(dim) if scale is None else np.asarray(scale, np.float64),
        coef=coef[0],
        intercept=float(np.asarray(clf.intercept_).reshape(-1)[0]),
        classes=classes,
        fake_index=_fake_index(classes, fake_class),
        metadata={"sklearn_version": sklearn.__version__, "params": params},
    )


def write_head(path: str | Path, head: LogRegHead) -> Path:
    """Write `head` as the safe `.npz` (exactly at `path`: numpy would otherwise append `.npz`)."""
    path = Path(path)
    metadata = {
        **head.metadata,
        "format": HEAD_FORMAT,
        "format_version": HEAD_FORMAT_VERSION,
        "feature_dim": head.dim,
        "fake_index": head.fake_index,
        "fake_class": head.classes.tolist()[head.fake_index],
        "backbone": BACKBONE_DESCRIPTION,
    }
    with open(path, "wb") as f:
        np.savez(f, scaler_mean=head.mean, scaler_scale=head.scale, coef=head.coef,
                 intercept=np.array([head.intercept]), classes=head.classes,
                 **{METADATA_KEY: np.array(json.dumps(metadata))})
    return path


def save_head(path: str | Path, scaler: Any, clf: Any, fake_class: object | None = None) -> Path:
    """Save a fitted StandardScaler + binary LogisticRegression in the safe format `load_head` and the engine read.

    `fake_class` is the label of the fake class; by default a class named "fake" (any case), else label 1 of {0, 1}.
    """
    return write_head(path, head_from_sklearn(scaler, clf, fake_class))


def _read_npz(path: Path) -> LogRegHead:
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in (*ARRAY_KEYS, METADATA_KEY) if k not in z.files]
            if missing:
                raise WeightsFormatError(f"{path}: not a {HEAD_FORMAT} file (missing {', '.join(missing)})")
            arrays = {k: z[k] for k in ARRAY_KEYS}
            metadata = json.loads(str(z[METADATA_KEY]))
    except (ValueError, OSError, zipfile.BadZipFile) as e:  # object arrays (pickles) are refused with ValueError
        raise WeightsFormatError(f"{path}: unreadable head file ({e})") from None
    if metadata.get("format") != HEAD_FORMAT or metadata.get("format_version") != HEAD_FORMAT_VERSION:
        raise WeightsFormatError(f"{path}: format {metadata.get('format')!r} v{metadata.get('format_version')}, "
                                 f"expected {HEAD_FORMAT!r} v{HEAD_FORMAT_VERSION}")
    dim = int(metadata["feature_dim"])
    shapes = {"scaler_mean": (dim,), "scaler_scale": (dim,), "coef": (dim,), "intercept": (1,), "classes": (2,)}
    for key, shape in shapes.items():
        if arrays[key].shape != shape:
            raise WeightsFormatError(f"{path}: {key} has shape {arrays[key].shape}, expected {shape}")
    return LogRegHead(mean=arrays["scaler_mean"].astype(np.float64), scale=arrays["scaler_scale"].astype(np.float64),
                      coef=arrays["coef"].astype(np.float64), intercept=float(arrays["intercept"][0]),
                      classes=arrays["classes"], fake_index=int(metadata["fake_index"]), metadata=metadata)


def _from_pickle(obj: Any, path: Path, fake_class: object | None) -> LogRegHead:
    """A Pipeline(StandardScaler, LogisticRegression), a (scaler, clf) pair or {"scaler": .., "clf"|"model": ..}."""
    if hasattr(obj, "steps"):
        steps = [s for _, s in obj.steps if s is not None and s != "passthrough"]
        scaler, clf = (steps[0], steps[1]) if len(steps) == 2 else (None, steps[-1])
    elif isinstance(obj, Mapping):
        scaler, clf = obj.get("scaler"), obj.get("clf", obj.get("model"))
    elif isinstance(obj, (tuple, list)) and len(obj) == 2:
        scaler, clf = obj
    else:
        scaler, clf = None, obj
    if not hasattr(clf, "coef_"):
        raise WeightsFormatError(f"{path}: the pickle holds no fitted LogisticRegression ({type(obj).__name__})")
    return head_from_sklearn(scaler, clf, fake_class)


def load_head(path: str | Path, trust_pickle: bool = False, fake_class: object | None = None) -> LogRegHead:
    """Read a head: the safe `.npz` always; a scikit-learn/joblib pickle only with `trust_pickle=True`.

    `fake_class` applies to pickles only (the `.npz` records it).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(path)
    if zipfile.is_zipfile(path):
        return _read_npz(path)
    if not trust_pickle:
        raise UntrustedPickle(
            f"{path}: not a safe {HEAD_FORMAT} .npz; it is probably a scikit-learn pickle, and unpickling can run "
            "arbitrary code. If you trust its origin, convert it once with "
            "write_head(new_path, load_head(path, trust_pickle=True)) and use the .npz."
        )
    import joblib  # reads joblib dumps and plain pickles alike; installed with scikit-learn

    return _from_pickle(joblib.load(path), path, fake_class)


class XceptionLogReg(nn.Module):
    """(N, 3, 299, 299) in [-1, 1] -> Xception features -> (N, 1) logit of 'fake'."""

    def __init__(self, head: LogRegHead) -> None:
        super().__init__()
        self.backbone = KerasXception()
        self.head = head.to_module()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


@register_architecture("xception_logreg")
def build_xception_logreg(
    weights_path: Path,
    entry: ModelEntry,
    device: str | torch.device = "cpu",
    extra_paths: Mapping[str, Path] | None = None,
) -> TorchEngine:
    """Registry builder: `weights_path` is the head; the backbone comes from `extra_paths["backbone"]`, which
    build_engine fetches from the same weights folder (fetched here from the default folder when absent)."""
    head = load_head(weights_path)
    if head.dim != FEATURES:
        raise WeightsFormatError(f"{weights_path}: the head takes {head.dim} features, Xception gives {FEATURES}")
    backbone = (extra_paths or {}).get(BACKBONE_ROLE)
    if backbone is None:
        from engines.weights import fetch

        backbone = fetch(entry.extra_weights[BACKBONE_ROLE])
    model = XceptionLogReg(head)
    load_xception(model.backbone, backbone)
    return TorchEngine(entry.name, model, entry.input, entry.labels, device)


# Keras' xception.preprocess_input: x / 127.5 - 1 = (x/255 - 0.5) / 0.5.
KERAS_XCEPTION_INPUT = InputSpec(size=299, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))

register_models(
    ModelEntry(
        name="xception-logreg",
        architecture="xception_logreg",
        card="000",
        description="Keras ImageNet Xception features (frozen) + StandardScaler + LogisticRegression, per frame",
        # The card publishes no trained head; `dfstream train logreg` fits one and writes this file.
        weights=WeightsSource(
            filename="xception_logreg_head.npz",
            hint="Seed card 000 publishes no trained head: fit one on your labelled face crops with "
                 "`dfstream train logreg` (engines/architectures/xception_logreg.py save_head writes the file), "
                 "or pass --weights FILE.",
        ),
        extra_weights={BACKBONE_ROLE: WeightsSource(filename=XCEPTION_NOTOP_FILENAME, url=XCEPTION_NOTOP_URL,
                                                    md5=XCEPTION_NOTOP_MD5)},
        input=KERAS_XCEPTION_INPUT,
        # The head outputs the logit of the fake class (its sign is fixed from the file's classes_).
        labels=LabelMapping(kind="sigmoid", positive="fake", logits=True),
        trained_on="your own labelled crops (`dfstream train logreg`); card 000 used FaceForensics++",
        licence="not stated by card 000; Keras Xception ImageNet backbone MIT",
        backends=("torch", "onnx"),
    ),
)
