"""`train xception` (card 003): the from-scratch Xception, Adam at lr 1e-3, batch 32, 10 epochs, keeping the
epoch with the best validation accuracy.

The card trains on whole 299² face images; here the faces are dfstream's MTCNN crops (or the images themselves
with `--faces none`), with a random horizontal flip. `--size` trains at a smaller crop for quick runs: the network
pools globally, so the weights load at any size, but the engine (and the card) feed 299².
Output: `best_xception.pth`, a plain state dict, 2-way logits with index 0 = fake, that
`build_engine("xception-140k", weights_file=...)` loads strictly.
"""

from __future__ import annotations

from typing import Any

import torch

from engines.base import channel_stats, normalise
from engines.registry import get_entry
from engines.architectures.xception_140k import Xception140k
from stream.jobs.train.loop import SampleSet, Task, best_row, run_epochs
from stream.jobs.train.run import Run
from stream.jobs.train.seed import seed_everything

MODEL = "xception-140k"


def train(run: Run) -> dict[str, Any]:
    cfg = run.cfg
    entry = get_entry(MODEL)
    fake_index = entry.labels.fake_index  # 0: the card's classes are ["fake", "real"]
    assert fake_index is not None
    spec = run.spec(entry.input.margin)
    samples = run.collect(spec, "online" if cfg.sbi else None)
    train_s, val_s = run.split(samples, online_sbi=cfg.sbi)
    seed_everything(cfg.seed)
    model = Xception140k().to(run.device)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    mean, std = channel_stats(entry.input, run.device)
    best = cfg.out / entry.weights.filename

    def save_best() -> None:
        tmp = best.with_name(f".{best.name}.tmp")
        torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, tmp)
        tmp.replace(best)

    task = Task(model, optimizer, SampleSet(train_s, cfg.seed, online_sbi=cfg.sbi, flip=True),
                SampleSet(val_s, cfg.seed), prepare=lambda x: normalise(x.numpy(), mean, std), forward=model,
                fake_index=fake_index, save_best=save_best)
    result = run_epochs(task, cfg, cfg.out, run.tracker, run.fixed())
    return {"weights": [best], "data": {"train": task.train.counts(), "val": task.val.counts()}, **result,
            "val": best_row(result)}

