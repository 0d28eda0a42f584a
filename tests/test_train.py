"""`dfstream train`: group splits, SBI pseudo-fakes, clear data errors, and each kind's weights loading in its engine.

The ImageNet Xception and the Kinetics VideoMAE cannot be downloaded here, so the backbone is a random
`KerasXception` written in Keras 3's layout (or as a torch state dict) and the VideoMAE init is a tiny random
checkpoint: the tests check the training path and the weight formats, not what the models learn.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from support.shared import FFPP, FFPP_VIDEOS, CROPS_PER_VIDEO
from support.parts import import_or_require
from engines.keras_xception import KerasXception
from engines.registry import XCEPTION_NOTOP_FILENAME, build_engine, get_entry
from stream.cli import EXIT_OK, EXIT_USAGE, main
from stream.jobs.datasets import FAKE, REAL
from stream.jobs.train import TrainError
from stream.jobs.train.data import SBI_METHOD, CropSpec, collect, load_dataset, with_pseudo_fakes
from stream.jobs.train.keras_export import LSTM_FILE, write_xception, write_xception_lstm
from stream.jobs.train.splits import split_groups, val_mask
from stream.jobs.train.tracking import MLFLOW_MISSING, Tracker, open_tracker

ROOT = Path(__file__).resolve().parents[1]
SMALL = 96  # crop size of the quick runs: Xception's stem and pools need >= 71
RUN_FLAGS = ["--no-progress", "--faces", "none"]
LOGREG_FPS = "0.5"  # five sampled frames per 10 s clip to detect in, two kept per video
LOGREG_PER_VIDEO = "2"
# `scan` as a subprocess, with one change to the registry: the random stand-in backbone has no published md5, so
# the entry's md5 is dropped (the real file is md5-checked; this is what the test cannot download).
SCAN_WITHOUT_MD5 = """
import sys
from engines import registry
from engines.weights import WeightsSource
entry = registry.MODELS["xception-logreg"]
backbone = WeightsSource(filename=registry.XCEPTION_NOTOP_FILENAME)
registry.MODELS["xception-logreg"] = entry.model_copy(update={"extra_weights": {"backbone": backbone}})
from stream.cli import main
sys.exit(main(sys.argv[1:]))
"""
TINY_VIDEOMAE = dict(image_size=32, num_frames=2, patch_size=16, tubelet_size=2, hidden_size=32, num_hidden_layers=2,
                     num_attention_heads=2, intermediate_size=37)
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy:DeprecationWarning")


def _random_xception(seed: int = 0) -> KerasXception:
    torch.manual_seed(seed)
    model = KerasXception()
    for m in model.modules():  # non-trivial BN statistics, so a skipped tensor would show
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    return model


@pytest.fixture(scope="module")
def backbone(tmp_path_factory) -> Path:
    """A random Xception in Keras 3's weights layout, which the engine's loader reads like the ImageNet file."""
    return write_xception(_random_xception(), tmp_path_factory.mktemp("backbone") / "xception.weights.h5")


def _write_frames(root: Path, videos: list[Path], crops: np.ndarray, reals_only: bool = False) -> Path:
    for video, frames in zip(videos, crops):
        is_real = video.parent.name == "real"
        if reals_only and not is_real:
            continue
        folder = root / "real" / video.stem if is_real else root / "fake" / video.stem.split("_")[0] / video.stem
        folder.mkdir(parents=True)
        for k, frame in enumerate(frames):
            Image.fromarray(frame).save(folder / f"{k:03d}.png")
    return root


@pytest.fixture(scope="module")
def video_crops(ffpp_face_crops) -> np.ndarray:
    """(videos, CROPS_PER_VIDEO, SMALL, SMALL, 3): each shared FF++ video's first MTCNN face crops."""
    crops = ffpp_face_crops(SMALL)
    assert len(crops) == len(FFPP_VIDEOS) * CROPS_PER_VIDEO, "every sampled frame should hold one face"
    return crops.reshape(len(FFPP_VIDEOS), CROPS_PER_VIDEO, SMALL, SMALL, 3)


@pytest.fixture(scope="module")
def frames_dataset(video_crops, tmp_path_factory) -> Path:
    """The FF++ face crops as folders of frames: real/<video>/*.png and fake/<method>/<video>/*.png."""
    return _write_frames(tmp_path_factory.mktemp("frames"), FFPP_VIDEOS, video_crops)


@pytest.fixture(scope="module")
def reals_dataset(video_crops, tmp_path_factory) -> Path:
    return _write_frames(tmp_path_factory.mktemp("reals"), FFPP_VIDEOS, video_crops, reals_only=True)


def _train(*args: object, cache: Path) -> int:
    return main(["train", *map(str, args), "--cache-dir", str(cache), "--no-progress"])


# ---------------------------------------------------------------- splits, SBI samples, errors (fast)


def test_group_split_keeps_every_video_on_one_side() -> None:
    rng = np.random.default_rng(0)
    groups = np.array([f"real/{i}" for i in range(9) for _ in range(5)]
                      + [f"fake/{i}" for i in range(6) for _ in range(4)])
    labels = np.array([REAL] * 45 + [FAKE] * 24)
    order = rng.permutation(len(groups))  # row order must not matter
    groups, labels = groups[order], labels[order]
    splits = []
    for seed in range(5):
        val = split_groups(groups, labels, 0.2, seed)
        mask = val_mask(groups, val)
        for g in set(groups.tolist()):
            assert len(set(mask[groups == g].tolist())) == 1, f"video {g} is on both sides"
        for label in (REAL, FAKE):  # stratified: each class on both sides
            assert mask[labels == label].any() and (~mask[labels == label]).any()
        assert split_groups(groups, labels, 0.2, seed) == val  # fixed by the seed
        splits.append(frozenset(val))
    assert len(set(splits)) > 1
    with pytest.raises(TrainError, match="at least 2 real videos"):
        split_groups(["real/a", "fake/a", "fake/b"], [REAL, FAKE, FAKE], 0.2, 0)
    with pytest.raises(TrainError, match="val-fraction"):
        split_groups(groups, labels, 1.0, 0)


def test_mlflow_missing_is_said_and_training_goes_on(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "mlflow", None)  # import mlflow -> ImportError, installed or not
    said = []
    tracker = open_tracker(True, "exp", "run", said.append)
    assert said == [MLFLOW_MISSING] and type(tracker) is Tracker and not tracker.active
    with tracker:
        tracker.params({"a": 1})
        tracker.metrics({"b": 0.5}, step=1)
    assert open_tracker(False, "exp", "run", said.append).active is False and len(said) == 1


def test_data_errors_are_clear(tmp_path: Path, capsys) -> None:
    cache = tmp_path / "cache"
    empty = tmp_path / "empty"
    (empty / "real").mkdir(parents=True)
    (empty / "fake").mkdir()
    assert _train("xception", empty, "--out", tmp_path / "o1", cache=cache) == EXIT_USAGE
    assert "no media files" in capsys.readouterr().err
    one_real = tmp_path / "one_real"
    for sub in ("real/a", "fake/b", "fake/c"):
        (one_real / sub).mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(one_real / sub / "0.png")
    assert _train("xception", one_real, "--out", tmp_path / "o2", cache=cache) == EXIT_USAGE
    assert "at least 2 real videos" in capsys.readouterr().err
    broken = tmp_path / "broken"
    for sub in ("real/a.mp4", "real/b.mp4", "fake/c.mp4", "fake/d.mp4"):
        (broken / sub).parent.mkdir(parents=True, exist_ok=True)
        (broken / sub).write_bytes(b"not a video")
    assert _train("xception", broken, "--out", tmp_path / "o3", *RUN_FLAGS, cache=cache) == EXIT_USAGE
    assert "every one of the 4 files failed to read" in capsys.readouterr().err


def test_real_only_data_needs_sbi(reals_dataset: Path, tmp_path: Path, capsys) -> None:
    assert _train("xception", reals_dataset, "--out", tmp_path / "o", cache=tmp_path / "c") == EXIT_USAGE
    err = capsys.readouterr().err
    assert "no fake media" in err and "--sbi" in err
    assert load_dataset(reals_dataset, sbi=True).counts()["fake"] == 0


def test_sbi_makes_pseudo_fakes_from_reals_in_their_videos(reals_dataset: Path, tmp_path: Path) -> None:
    dataset = load_dataset(reals_dataset, sbi=True)
    spec = CropSpec(SMALL, 0.2, None, "none")
    samples = collect(dataset, spec, seed=0, sbi="static", cache_dir=tmp_path, progress=False)
    real, fake = samples.labels == REAL, samples.labels == FAKE
    assert real.sum() == fake.sum() == 3 * CROPS_PER_VIDEO  # one pseudo-fake per real crop
    assert set(samples.methods[fake].tolist()) == {SBI_METHOD}
    assert set(samples.groups[fake].tolist()) == set(samples.groups[real].tolist())
    assert all((samples.x[fake][i] != samples.x[real][i]).any() for i in range(fake.sum()))
    again = collect(dataset, spec, seed=0, sbi="static", cache_dir=tmp_path, progress=False)
    assert np.array_equal(again.x, samples.x)  # seeded
    online = collect(dataset, spec, seed=0, sbi="online", cache_dir=tmp_path, progress=False)
    assert online.landmarks is not None and (online.labels == REAL).all()
    val = with_pseudo_fakes(online, seed=0, stream=1)
    assert (val.labels == FAKE).sum() == len(online) and set(val.groups.tolist()) == set(online.groups.tolist())


# ---------------------------------------------------------------- xception (card 003)


# `train --mlflow` against real MLflow (a file: store read back with MlflowClient) and `--track-emissions`
# are tested in tests/test_tracking.py.


@pytest.mark.slow
def test_xception_epoch_loads_strictly_and_resumes_exactly(frames_dataset: Path, tmp_path: Path, capsys) -> None:
    cache = tmp_path / "cache"
    common = ["--size", SMALL, "--batch-size", 8, *RUN_FLAGS]
    out = tmp_path / "x"
    assert _train("xception", frames_dataset, "--out", out, "--epochs", 1, *common, cache=cache) == EXIT_OK
    metrics = json.loads((out / "metrics.json").read_text())
    assert [r["epoch"] for r in metrics["history"]] == [1] and metrics["best"]["metric"] == "val_accuracy"
    assert metrics["data"]["val"]["real"] and metrics["data"]["val"]["fake"]

    engine = build_engine("xception-140k", weights_file=out / "best_xception.pth")  # strict load
    p = engine.predict(np.zeros((1, 299, 299, 3), np.uint8))
    assert p.shape == (1,) and 0.0 <= p[0] <= 1.0

    assert _train("xception", frames_dataset, "--out", out, "--epochs", 2, *common, cache=cache) == EXIT_USAGE
    assert "--resume" in capsys.readouterr().err  # a fresh run never overwrites a checkpoint
    assert _train("xception", frames_dataset, "--out", out, "--epochs", 2, "--resume", *common, cache=cache) == EXIT_OK
    resumed = json.loads((out / "metrics.json").read_text())["history"]
    assert [r["epoch"] for r in resumed] == [1, 2] and resumed[0] == metrics["history"][0]
    straight = tmp_path / "straight"
    assert _train("xception", frames_dataset, "--out", straight, "--epochs", 2, *common, cache=cache) == EXIT_OK
    uninterrupted = json.loads((straight / "metrics.json").read_text())["history"]
    for a, b in zip(resumed, uninterrupted):  # same seeds, same draws: resuming changes nothing
        for key in ("loss", "val_loss", "val_auc"):
            assert a[key] == pytest.approx(b[key], rel=1e-5), key
    nothing = tmp_path / "nothing"
    assert _train("xception", frames_dataset, "--out", nothing, "--resume", *common, cache=cache) == EXIT_USAGE


@pytest.mark.slow
def test_sbi_trains_on_real_only_data(reals_dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "sbi"
    assert _train("xception", reals_dataset, "--out", out, "--sbi", "--epochs", 1, "--size", SMALL, "--batch-size", 8,
                  *RUN_FLAGS, cache=tmp_path / "cache") == EXIT_OK
    data = json.loads((out / "metrics.json").read_text())["data"]
    for side in ("train", "val"):
        assert data[side]["real"] > 0 and data[side]["fake"] == data[side]["pseudo_fakes"] == data[side]["real"]


# ---------------------------------------------------------------- logreg (card 000) on the shared media, then scan


@pytest.mark.slow
def test_logreg_on_shared_media_then_scan_loads_it(ffpp: Path, backbone: Path, tmp_path: Path) -> None:
    out = tmp_path / "logreg"
    assert _train("logreg", ffpp, "--out", out, "--fps", LOGREG_FPS, "--per-video", LOGREG_PER_VIDEO, "--grid", "small",
                  "--backbone-weights", backbone, cache=tmp_path / "cache") == EXIT_OK
    entry = get_entry("xception-logreg")
    head_file = out / entry.weights.filename
    from engines.architectures.xception_logreg import load_head

    head = load_head(head_file)
    assert head.dim == 2048 and head.metadata["trained_by"] == "dfstream train logreg"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["cv"]["folds"] >= 2 and len(metrics["cv"]["results"]) == 2  # the small grid
    assert metrics["val"]["frame"]["auc"] is not None and metrics["data"]["val"]["videos"] == 2

    weights = tmp_path / "weights"  # the head and the backbone under the registry's names
    weights.mkdir()
    (weights / entry.weights.filename).write_bytes(head_file.read_bytes())
    (weights / XCEPTION_NOTOP_FILENAME).write_bytes(backbone.read_bytes())
    video = FFPP / "real" / "004.mp4"
    done = subprocess.run([sys.executable, "-c", SCAN_WITHOUT_MD5, "scan", str(video), "--model", "xception-logreg",
                           "--weights-dir", str(weights), "--offline", "--json", "--fps", "1", "--backend", "torch"],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.splitlines()[-1])
    assert result["error"] is None and result["label"] in ("real", "fake") and result["frames_scored"] > 0
    assert 0.0 <= result["score"] <= 1.0


# ---------------------------------------------------------------- lstm (card 002)


def test_lstm_export_round_trips_through_the_engine_loader(tmp_path: Path) -> None:
    from engines.architectures.xception_lstm import load_xception_lstm

    backbone = _random_xception(1)
    torch.manual_seed(1)
    lstm, dense = torch.nn.LSTM(2048, 256, batch_first=True), torch.nn.Linear(256, 2)
    model, config = load_xception_lstm(write_xception_lstm(tmp_path / LSTM_FILE, backbone, lstm, dense))
    assert config is None  # weights only: the engine keeps the registry's clip length and size
    loaded = model.state_dict()
    for k, v in backbone.state_dict().items():
        if not k.endswith("num_batches_tracked"):
            assert torch.equal(loaded[f"backbone.{k}"], v), k
    x = torch.randn(2, 3, 2048)
    with torch.no_grad():
        _, (h, _) = lstm(x)
        expected = torch.softmax(dense(h[-1]), -1)
        _, (h2, _) = model.lstm(x)
        got = torch.softmax(model.dense(h2[-1]), -1)
    assert torch.allclose(got, expected, atol=1e-6)


@pytest.mark.slow
def test_lstm_smoke_writes_weights_the_engine_loads(frames_dataset: Path, tmp_path: Path) -> None:
    from engines.architectures.xception_lstm import load_xception_lstm

    state_dict = tmp_path / "xception.pth"  # the torch state-dict form of --backbone-weights
    backbone = _random_xception(2)
    torch.save(backbone.state_dict(), state_dict)
    out = tmp_path / "lstm"
    assert _train("lstm", frames_dataset, "--out", out, "--steps", CROPS_PER_VIDEO, "--size", SMALL, "--per-video", 1,
                  "--epochs", 1, "--batch-size", 4, "--backbone-weights", state_dict, *RUN_FLAGS,
                  cache=tmp_path / "cache") == EXIT_OK
    model, _ = load_xception_lstm(out / LSTM_FILE)
    assert torch.equal(model.backbone.conv1.weight, backbone.conv1.weight)  # frozen by default
    engine = build_engine("xception-lstm", weights_file=out / LSTM_FILE)
    assert engine.spec.frames == 30 and engine.labels.fake_index == 1
    with torch.no_grad():
        p = model.eval()(torch.zeros(1, CROPS_PER_VIDEO, 3, SMALL, SMALL))
    assert p.shape == (1, 2) and torch.allclose(p.sum(), torch.tensor(1.0))
    assert (out / "features.npz").is_file() and json.loads((out / "metrics.json").read_text())["history"]


@pytest.mark.slow
def test_lstm_finetune_with_online_sbi_trains_the_backbone_on_real_only_data(reals_dataset: Path,
                                                                           backbone: Path, tmp_path: Path) -> None:
    """`--finetune` trains end to end (the backbone moves), and `--sbi` re-blends pseudo-fakes from the reals."""
    from engines.architectures.xception_lstm import load_xception_lstm
    from stream.jobs.train.features import load_backbone

    out = tmp_path / "lstm-ft"
    assert _train("lstm", reals_dataset, "--out", out, "--steps", CROPS_PER_VIDEO, "--size", SMALL, "--per-video", 1,
                  "--epochs", 1, "--batch-size", 2, "--finetune", "--sbi", "--backbone-weights", backbone,
                  *RUN_FLAGS, cache=tmp_path / "cache") == EXIT_OK
    start = load_backbone(backbone)
    model, _ = load_xception_lstm(out / LSTM_FILE)
    assert not torch.equal(model.backbone.conv1.weight, start.conv1.weight)  # fine-tuned, not frozen
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["history"] and not (out / "features.npz").exists()  # end to end: no feature cache
    for side in ("train", "val"):
        assert metrics["data"][side]["real"] > 0 and metrics["data"][side]["fake"] == metrics["data"][side]["real"]
    engine = build_engine("xception-lstm", weights_file=out / LSTM_FILE)
    assert engine.labels.fake_index == 1


@pytest.mark.slow
def test_lstm_weights_load_in_keras(tmp_path: Path) -> None:
    """The card's own `build_model(...).load_weights(path)` reads the file, and agrees with the engine."""
    tf = import_or_require("tensorflow")
    from support.keras_xception_ref import set_tf_threads

    set_tf_threads(tf)
    import keras
    from keras import layers

    from engines.architectures.xception_lstm import load_xception_lstm

    steps, size = 2, 71
    torch.manual_seed(3)
    path = write_xception_lstm(tmp_path / LSTM_FILE, _random_xception(3), torch.nn.LSTM(2048, 256, batch_first=True),
                               torch.nn.Linear(256, 2))
    inputs = layers.Input(shape=(steps, size, size, 3))
    x = layers.TimeDistributed(keras.applications.Xception(weights=None, include_top=False, pooling="avg"))(inputs)
    x = layers.Dropout(0.5)(layers.LSTM(256)(x))
    card = keras.Model(inputs, layers.Dense(2, activation="softmax")(x))
    card.load_weights(path)
    clips = np.random.default_rng(0).uniform(-1, 1, (2, steps, size, size, 3)).astype(np.float32)
    model, _ = load_xception_lstm(path)
    with torch.no_grad():
        got = model.eval()(torch.from_numpy(clips).permute(0, 1, 4, 2, 3)).numpy()
    assert np.abs(card(clips, training=False).numpy() - got).max() <= 1e-4


# ---------------------------------------------------------------- videomae (card 001)


@pytest.mark.slow
def test_videomae_smoke_writes_a_folder_the_engine_loads(frames_dataset: Path, tmp_path: Path) -> None:
    transformers = import_or_require("transformers")
    init = tmp_path / "init"
    torch.manual_seed(0)
    config = transformers.VideoMAEConfig(num_labels=2, id2label={0: "FAKE", 1: "REAL"},
                                         label2id={"FAKE": 0, "REAL": 1}, **TINY_VIDEOMAE)
    transformers.VideoMAEForVideoClassification(config).save_pretrained(init)
    out = tmp_path / "videomae"
    assert _train("videomae", frames_dataset, "--out", out, "--init", init, "--per-video", 1, "--epochs", 1,
                  "--batch-size", 4, *RUN_FLAGS, cache=tmp_path / "cache") == EXIT_OK
    engine = build_engine("videomae", weights_file=out / "videomae")
    assert engine.labels.fake_index == 1 and engine.module.model.config.id2label == {0: "real", 1: "fake"}
    assert (engine.spec.frames, engine.spec.size) == (2, 32)
    p = engine.predict(np.random.default_rng(0).integers(0, 256, (2, 2, 32, 32, 3), dtype=np.uint8))
    assert p.shape == (2,) and ((0 <= p) & (p <= 1)).all()


@pytest.mark.slow
def test_videomae_with_online_sbi_trains_on_real_only_data(reals_dataset: Path, tmp_path: Path) -> None:
    transformers = import_or_require("transformers")
    init = tmp_path / "init"
    torch.manual_seed(0)
    transformers.VideoMAEForVideoClassification(transformers.VideoMAEConfig(num_labels=2, **TINY_VIDEOMAE)) \
        .save_pretrained(init)
    out = tmp_path / "videomae-sbi"
    assert _train("videomae", reals_dataset, "--out", out, "--init", init, "--per-video", 1, "--epochs", 1,
                  "--batch-size", 2, "--sbi", *RUN_FLAGS, cache=tmp_path / "cache") == EXIT_OK
    data = json.loads((out / "metrics.json").read_text())["data"]
    for side in ("train", "val"):
        assert data[side]["real"] > 0 and data[side]["fake"] == data[side]["real"]
    assert build_engine("videomae", weights_file=out / "videomae").labels.fake_index == 1
