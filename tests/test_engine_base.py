"""TorchEngine's CPU fast path (channels-last, frozen TorchScript per batch shape) must equal the eager module."""

import numpy as np
import torch

from engines.base import FROZEN_SHAPES
from engines.registry import build_engine

from support.shared import MESONET_WEIGHTS


def test_frozen_graphs_match_eager_at_every_batch_size(ffpp_face_crops):
    for name in ("meso4-df", "mesoinception-df"):
        engine = build_engine(name, weights_dir=MESONET_WEIGHTS, allow_download=False)
        crops = ffpp_face_crops(256)
        for n in (1, 3, 8, 1, len(crops)):  # a batch size seen again reuses its graph
            got = engine.predict(crops[:n])
            with torch.inference_mode():
                eager = engine.labels.to_p_fake(engine.module(engine.preprocess(crops[:n]))).numpy()
            assert np.abs(got - eager).max() <= 1e-5, (name, n)
        assert engine.freeze and 0 < len(engine.frozen_shapes) <= FROZEN_SHAPES
