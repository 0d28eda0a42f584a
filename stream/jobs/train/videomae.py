"""`train videomae` (card 001): fine-tune a VideoMAE checkpoint (`--init`, a folder or hub id; by default the
Kinetics-400 one the card starts from) with a new 2-way head on clips of consecutive face-frames.

Card 001: clips of 16 frames at 224² (both read from the checkpoint's config: its position table is fixed to
them), Adam at 1e-4 with decay (here x`--lr-decay` per epoch), batch 32/64, 20-30 epochs, the backbone frozen at
first and then unfrozen (`--freeze-epochs`), early stopping (`--patience`). Its "binary cross-entropy" is the
2-way softmax cross-entropy here, which is the same loss on the logit difference.

Output: the Hugging Face folder `out/videomae/` (`save_pretrained`: config.json + model.safetensors, and the
init's preprocessor_config.json for mean/std) with id2label {0: "real", 1: "fake"}, which the videomae engine
loads with `--weights out/videomae`.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch

from engines.base import InputSpec, channel_stats, normalise
from engines.registry import get_entry
from engines.architectures.videomae import IMAGENET_MEAN, IMAGENET_STD, PROCESSOR_FILE, resolve_checkpoint
from stream.jobs.train import TrainError
from stream.jobs.train.loop import SampleSet, Task, best_row, run_epochs
from stream.jobs.train.run import Run
from stream.jobs.train.seed import seed_everything

MODEL = "videomae"
FOLDER = "videomae"
ID2LABEL = {0: "real", 1: "fake"}
FAKE_INDEX = 1


RGB = tuple[float, float, float]


def _normalisation(folder: Path) -> tuple[RGB, RGB]:
    """The init's mean/std (preprocessor_config.json), else the Kinetics VideoMAE ones, as the engine reads them."""
    file = folder / PROCESSOR_FILE
    cfg = json.loads(file.read_text()) if file.is_file() else {}
    mean, std = cfg.get("image_mean", IMAGENET_MEAN), cfg.get("image_std", IMAGENET_STD)
    return (float(mean[0]), float(mean[1]), float(mean[2])), (float(std[0]), float(std[1]), float(std[2]))


def _write_processor(init: Path, out: Path, mean: RGB, std: RGB, size: int) -> None:
    if (init / PROCESSOR_FILE).is_file():
        shutil.copyfile(init / PROCESSOR_FILE, out / PROCESSOR_FILE)
        return
    (out / PROCESSOR_FILE).write_text(json.dumps({
        "image_processor_type": "VideoMAEImageProcessor", "do_resize": True, "size": {"shortest_edge": size},
        "do_center_crop": True, "crop_size": {"height": size, "width": size}, "do_rescale": True,
        "rescale_factor": 1 / 255, "do_normalize": True, "image_mean": list(mean), "image_std": list(std)},
        indent=2) + "\n")


def train(run: Run) -> dict[str, Any]:
    from transformers import VideoMAEForVideoClassification

    cfg = run.cfg
    lr, decay = cfg.lr, cfg.lr_decay
    assert lr is not None and decay is not None, "resolved by TrainConfig"
    entry = get_entry(MODEL)
    init = resolve_checkpoint(cfg.init)
    seed_everything(cfg.seed)  # the new head's initialisation
    model = VideoMAEForVideoClassification.from_pretrained(
        init, num_labels=len(ID2LABEL), id2label=ID2LABEL, label2id={v: k for k, v in ID2LABEL.items()},
        ignore_mismatched_sizes=True).float().to(run.device)
    size, frames = int(model.config.image_size), int(model.config.num_frames)
    if cfg.size is not None and cfg.size != size:
        raise TrainError(f"--size {cfg.size}: this VideoMAE checkpoint reads {size}² frames (its config's "
                         "image_size); leave --size out")
    mean, std = _normalisation(init)
    stats = channel_stats(InputSpec(size=size, mean=mean, std=std), run.device)
    spec = run.spec(entry.input.margin, frames, size)
    samples = run.collect(spec, "online" if cfg.sbi else None)
    train_s, val_s = run.split(samples, online_sbi=cfg.sbi)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    folder = cfg.out / FOLDER

    def before_epoch(epoch: int) -> None:
        frozen = epoch < (cfg.freeze_epochs or 0)
        for p in model.videomae.parameters():
            p.requires_grad_(not frozen)
        for group in optimizer.param_groups:
            group["lr"] = lr * decay**epoch

    def save_best() -> None:
        folder.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(folder)
        _write_processor(init, folder, mean, std, size)

    task = Task(model, optimizer, SampleSet(train_s, cfg.seed, online_sbi=cfg.sbi, flip=True),
                SampleSet(val_s, cfg.seed), prepare=lambda x: normalise(x.numpy(), *stats),
                forward=lambda x: model(pixel_values=x).logits, fake_index=FAKE_INDEX, save_best=save_best,
                before_epoch=before_epoch)
    result = run_epochs(task, cfg, cfg.out, run.tracker, run.fixed(init=str(cfg.init), frames=frames))
    return {"weights": [folder], "data": {"train": task.train.counts(), "val": task.val.counts()}, **result,
            "val": best_row(result), "clip": {"frames": frames, "size": size}}
