"""`train lstm` (card 002): TimeDistributed Xception features over `--steps` consecutive face-frames of one
track, LSTM(256), Dropout(0.5), Dense(2, softmax); classes ["Real", "Fake"], so index 1 is fake.

The backbone starts from the Keras ImageNet Xception, as the card's `build_model` does. By default it stays
frozen (the card's inference-time setting): its features are computed once per clip and cached in
`out/features.npz`, and only the LSTM and Dense train. `--finetune` trains the backbone too, end to end on the
crops (memory: a batch holds batch x steps crops). The card gives no optimiser settings: Adam at 1e-4 (ours).

Output: `xception_lstm.weights.h5`, the Keras 3 weights of the card's model (see keras_export), loaded by the
xception-lstm engine with `--weights` and by Keras with the card's `model.load_weights`. A weights-only file
carries no input shape, so the engine takes its clip length (30) and size (299) from the registry: train with
the defaults `--steps 30` and `--size 299` for `scan`, other values for experiments.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn

from engines.base import channel_stats, normalise
from engines.keras_xception import FEATURES, KerasXception
from engines.registry import get_entry
from engines.weights import sha256_of
from engines.architectures.xception_lstm import FAKE_INDEX, LSTM_UNITS, NUM_CLASSES
from stream.jobs.train.features import Features, backbone_path, load_backbone
from stream.jobs.train.keras_export import LSTM_FILE, write_xception_lstm
from stream.jobs.train.loop import SampleSet, Task, best_row, run_epochs
from stream.jobs.train.run import Run
from stream.jobs.train.seed import seed_everything

MODEL = "xception-lstm"
DROPOUT = 0.5


class LstmHead(nn.Module):
    """(N, T, 2048) features -> LSTM last state -> Dropout -> (N, 2) logits (the engine applies the softmax)."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(FEATURES, LSTM_UNITS, batch_first=True)
        self.dropout = nn.Dropout(DROPOUT)
        self.dense = nn.Linear(LSTM_UNITS, NUM_CLASSES)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        _, (hidden, _) = self.lstm(features)
        return self.dense(self.dropout(hidden[-1]))


class EndToEnd(nn.Module):
    """(N, T, 3, S, S) normalised clips -> backbone per frame -> LstmHead: the `--finetune` model."""

    def __init__(self, backbone: KerasXception, head: LstmHead) -> None:
        super().__init__()
        self.backbone, self.head = backbone, head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x.flatten(0, 1)).reshape(x.shape[0], x.shape[1], FEATURES))


def train(run: Run) -> dict[str, Any]:
    cfg = run.cfg
    entry = get_entry(MODEL)
    spec = run.spec(entry.input.margin, cfg.steps)
    weights = backbone_path(cfg)
    backbone, backbone_sha = load_backbone(weights), sha256_of(weights)
    mean, std = channel_stats(entry.input, run.device)
    if cfg.finetune:
        samples = run.collect(spec, "online" if cfg.sbi else None)
        prepare = lambda x: normalise(x.numpy(), mean, std)  # noqa: E731
    else:
        key = {**run.fixed(steps=cfg.steps), "backbone": backbone_sha,
               "spec": dataclasses.asdict(spec), "features": "keras-xception-avgpool-v1"}
        samples = run.cached_samples(key, lambda: run.collect(spec, "static" if cfg.sbi else None,
                                                              transform=Features(backbone, entry.input, run.device)))
        prepare = lambda x: x.to(run.device).float()  # noqa: E731
    online = cfg.sbi and cfg.finetune
    train_s, val_s = run.split(samples, online_sbi=online)
    seed_everything(cfg.seed)
    head = LstmHead()
    model = (EndToEnd(backbone, head) if cfg.finetune else head).to(run.device)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    path = cfg.out / LSTM_FILE

    task = Task(model, optimizer, SampleSet(train_s, cfg.seed, online_sbi=online, flip=cfg.finetune),
                SampleSet(val_s, cfg.seed), prepare=prepare, forward=model, fake_index=FAKE_INDEX,
                save_best=lambda: write_xception_lstm(path, backbone, head.lstm, head.dense))
    result = run_epochs(task, cfg, cfg.out, run.tracker, run.fixed(steps=cfg.steps, finetune=cfg.finetune,
                                                                          backbone=backbone_sha))
    return {"weights": [path], "data": {"train": task.train.counts(), "val": task.val.counts()}, **result,
            "val": best_row(result)}
