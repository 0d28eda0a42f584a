"""`dfstream eval`: dataset discovery, metrics against scikit-learn, the crop cache, and real runs of the default model on
the shared FaceForensics++ clips through the real CLI (real MTCNN, real weights)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.metrics import accuracy_score, f1_score, roc_auc_score

from support.shared import FFPP, MESONET_WEIGHTS, SHARED
from engines.base import Engine, InputSpec
from engines.registry import DEFAULT_MODEL
from stream.cli import EXIT_INPUT_FAILED, EXIT_OK, EXIT_USAGE, main
from stream.jobs.datasets import FAKE, REAL, Dataset, DatasetError, DatasetItem, discover
from stream.jobs.crop_cache import CropCache, FaceCrops
from stream.jobs.eval_report import HISTOGRAM_PNG, METRICS_JSON, ROC_PNG, VIDEOS_CSV, binary_metrics, metrics
from stream.jobs.evaluate import ItemResult, Report
from stream.jobs.scan import Scanner, ScanOptions

EVAL_FPS = "1"  # one frame per second of video keeps a cold run over the seven clips affordable on two cores
MODEL_ARGS = ["--model", DEFAULT_MODEL, "--weights-dir", str(MESONET_WEIGHTS), "--offline", "--backend", "torch"]
FACES = sorted((SHARED / "data" / "faces" / "celeba-hq").glob("*.jpg"))
FFPP_METHODS = {"Deepfakes": "519_515", "Face2Face": "750_743", "FaceSwap": "634_660", "NeuralTextures": "004_982"}


def run_eval(dataset: Path, out: Path, cache: Path | None, *extra: str) -> int:
    cache_args = ["--no-cache"] if cache is None else ["--cache-dir", str(cache)]
    return main(["eval", str(dataset), "--out", str(out), *MODEL_ARGS, *cache_args, *extra])


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def link(target: Path, at: Path) -> Path:
    at.parent.mkdir(parents=True, exist_ok=True)
    at.symlink_to(target)
    return at


# ---- metrics -------------------------------------------------------------------------------------------------

def test_binary_metrics_on_a_hand_built_case():
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    scores = np.array([0.1, 0.4, 0.5, 0.8, 0.3, 0.5, 0.7, 0.9])  # a real and a fake sit exactly on the threshold
    m = binary_metrics(labels, scores, threshold=0.5)
    # at or above 0.5 is fake: TP 3, FP 2, TN 2, FN 1
    assert (m["n"], m["real"], m["fake"]) == (8, 4, 4)
    assert m["accuracy"] == pytest.approx(5 / 8)
    assert m["f1"] == pytest.approx(2 * 3 / (2 * 3 + 2 + 1))
    assert m["recall"] == pytest.approx(3 / 4)
    # 16 (fake, real) pairs: 10 ordered right, one tie counted half
    assert m["auc"] == pytest.approx(10.5 / 16)
    predicted = (scores >= 0.5).astype(int)
    assert m["accuracy"] == pytest.approx(accuracy_score(labels, predicted))
    assert m["f1"] == pytest.approx(f1_score(labels, predicted))
    assert m["auc"] == pytest.approx(roc_auc_score(labels, scores))
    assert binary_metrics(np.zeros(3), np.array([0.1, 0.6, 0.2]), 0.5)["auc"] is None  # one class: undefined


def test_video_scores_are_frame_means_and_methods_are_judged_against_all_reals(tmp_path):
    root = tmp_path / "data"
    items = [DatasetItem(root / "real" / "a.mp4", REAL, "real", "real/a.mp4"),
             DatasetItem(root / "real" / "b" / "1.png", REAL, "real", "real/b"),
             DatasetItem(root / "real" / "b" / "2.png", REAL, "real", "real/b"),
             DatasetItem(root / "fake" / "X" / "c.mp4", FAKE, "X", "fake/X/c.mp4"),
             DatasetItem(root / "fake" / "Y" / "d.mp4", FAKE, "Y", "fake/Y/d.mp4")]
    frame_scores = [[0.2, 0.4], [0.9], [0.1, 0.2], [0.6, 0.8, 1.0], [0.3]]
    results = [ItemResult(i, np.array(s)) for i, s in zip(items, frame_scores)]
    report = Report(Dataset(root, "real-fake", tuple(items)), ["m"], 0.5, 1.0, results, seconds=0.0)
    videos = {str(v.path.relative_to(root)): v for v in report.videos()}
    assert set(videos) == {"real/a.mp4", "real/b", "fake/X/c.mp4", "fake/Y/d.mp4"}  # frame images merge by folder
    assert videos["real/b"].score == pytest.approx(np.mean([0.9, 0.1, 0.2]))
    m = metrics(report)
    assert m["frame"]["n"] == 9 and m["video"]["n"] == 4
    # video scores: reals about 0.3 and 0.4, X 0.8, Y 0.3
    real_a, real_b, x, y = (np.mean(s) for s in ([0.2, 0.4], [0.9, 0.1, 0.2], [0.6, 0.8, 1.0], [0.3]))
    assert m["video"]["auc"] == pytest.approx(roc_auc_score([0, 0, 1, 1], [real_a, real_b, x, y]))
    assert m["methods"]["X"]["video"]["auc"] == 1.0 and m["methods"]["X"]["video"]["n"] == 3
    assert m["methods"]["Y"]["video"]["auc"] == pytest.approx(roc_auc_score([0, 0, 1], [real_a, real_b, y]))
    assert m["methods"]["Y"]["frame"]["auc"] == pytest.approx(
        roc_auc_score([0, 0, 0, 0, 0, 1], [0.2, 0.4, 0.9, 0.1, 0.2, 0.3]))


# ---- datasets ------------------------------------------------------------------------------------------------

def test_real_fake_layout_methods_come_from_folders_only(tmp_path):
    for rel in ["real/001.mp4", "real/clip7/0001.png", "real/clip7/0002.png", "real/notes.txt",
                "fake/Deepfakes_001_002.mp4", "fake/FaceSwap/x/0001.jpg", "fake/FaceSwap/003.mp4",
                "fake/.hidden.mp4"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    ds = discover(tmp_path)
    got = {i.path.relative_to(tmp_path).as_posix(): (i.label, i.method, i.group) for i in ds.items}
    assert got == {
        "real/001.mp4": (REAL, "real", "real/001.mp4"),
        "real/clip7/0001.png": (REAL, "real", "real/clip7"),
        "real/clip7/0002.png": (REAL, "real", "real/clip7"),
        # a file name that looks like a method is not one: only a folder under fake/ names the method
        "fake/Deepfakes_001_002.mp4": (FAKE, "fake", "fake/Deepfakes_001_002.mp4"),
        "fake/FaceSwap/x/0001.jpg": (FAKE, "FaceSwap", "fake/FaceSwap/x"),
        "fake/FaceSwap/003.mp4": (FAKE, "FaceSwap", "fake/FaceSwap/003.mp4"),
    }
    assert ds.layout == "real-fake" and ds.methods == ["FaceSwap", "fake"]


def test_ffpp_layout_is_discovered_with_its_methods(ffpp, tmp_path):
    for name in ("004", "519", "634"):
        link(FFPP / "real" / f"{name}.mp4", tmp_path / f"original_sequences/youtube/c23/videos/{name}.mp4")
    for method, pair in FFPP_METHODS.items():
        link(FFPP / "fake" / f"{method}_{pair}.mp4", tmp_path / f"manipulated_sequences/{method}/c23/videos/{pair}.mp4")
    # FF++ ships blending masks beside the videos: they are not fakes
    link(FFPP / "fake" / "Deepfakes_519_515.mp4", tmp_path / "manipulated_sequences/Deepfakes/masks/videos/519_515.mp4")
    ds = discover(tmp_path)
    assert ds.layout == "ffpp" and ds.methods == sorted(FFPP_METHODS)
    fakes = {i.method: i.path.name for i in ds.items if i.label == FAKE}
    assert fakes == {m: f"{p}.mp4" for m, p in FFPP_METHODS.items()}
    assert sorted(i.path.name for i in ds.items if i.label == REAL) == ["004.mp4", "519.mp4", "634.mp4"]
    assert all("masks" not in i.path.parts for i in ds.items)
    assert ds.counts() == {"files": 7, "real": 3, "fake": 4, "videos": 7}


@pytest.mark.parametrize("make, phrase", [
    (lambda root: None, "no such folder"),
    (lambda root: (root / "videos").mkdir(parents=True), "unrecognised dataset layout"),
    (lambda root: ((root / "real").mkdir(parents=True), (root / "fake").mkdir()), "no media files"),
    (lambda root: ((root / "real").mkdir(parents=True), (root / "real" / "a.mp4").write_bytes(b""),
                   (root / "fake").mkdir()), "no fake media"),
    (lambda root: ((root / "fake").mkdir(parents=True), (root / "fake" / "a.jpg").write_bytes(b"")), "no real media"),
])
def test_unusable_datasets_get_clear_errors(tmp_path, make, phrase):
    root = tmp_path / "data"
    make(root)
    with pytest.raises(DatasetError, match=phrase):
        discover(root)


def test_eval_on_a_dataset_without_fakes_fails_before_loading_models(ffpp, tmp_path, capsys):
    link(FFPP / "real" / "004.mp4", tmp_path / "data" / "real" / "004.mp4")
    (tmp_path / "data" / "fake").mkdir()
    assert run_eval(tmp_path / "data", tmp_path / "out", None) == EXIT_USAGE
    assert "no fake media found (1 real files)" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


# ---- the crop cache ------------------------------------------------------------------------------------------

class _ConstantEngine(Engine):
    """Scores every crop 0.5; enough to build a Scanner whose crop spec the cache keys on."""

    def __init__(self, size: int) -> None:
        self.name, self.spec = "constant", InputSpec(size=size)

    def predict(self, crops: np.ndarray) -> np.ndarray:
        return np.full(len(crops), 0.5, dtype=np.float32)


def test_cache_is_keyed_by_content_and_crop_spec(tmp_path):
    a = tmp_path / "a.mp4"
    a.write_bytes(b"some video bytes")
    renamed = link(a, tmp_path / "fake" / "Deepfakes_a.mp4")
    other = tmp_path / "b.mp4"
    other.write_bytes(b"other video bytes")
    cache = CropCache(tmp_path / "cache", Scanner([_ConstantEngine(8)], [0.5], ScanOptions(faces="none", fps=1)))
    assert cache.entry(a) == cache.entry(renamed) != cache.entry(other)  # the content decides, never the name
    for changed in (Scanner([_ConstantEngine(8)], [0.5], ScanOptions(faces="none", fps=2)),
                    Scanner([_ConstantEngine(16)], [0.5], ScanOptions(faces="none", fps=1))):
        assert CropCache(tmp_path / "cache", changed).entry(a) != cache.entry(a)
    crops = FaceCrops(frames=3, index=np.array([0, 2, 2]), track=np.array([1, 1, 2]),
                      crops={(8, 0.2): np.arange(3 * 8 * 8 * 3, dtype=np.uint8).reshape(3, 8, 8, 3)},
                      face_px=np.array([90.0, 150.0, 40.0]), sharpness=np.array([12.0, 80.0, 5.0]))
    assert cache.load(cache.entry(a)) is None
    cache.save(cache.entry(a), crops)
    back = cache.load(cache.entry(renamed))
    assert back is not None and (cache.hits, cache.misses) == (1, 1)
    assert back.frames == 3 and back.index.tolist() == [0, 2, 2] and back.track.tolist() == [1, 1, 2]
    np.testing.assert_array_equal(back.crops[(8, 0.2)], crops.crops[(8, 0.2)])
    # replayed in the scanner's batches: frame 2 holds both faces
    batches = list(back.batches(batch_frames=2))
    assert [b.frames for b in batches] == [2, 1]
    assert [[(f.index, f.tracks) for f in b.faces] for b in batches] == [[(0, [1])], [(2, [1, 2])]]
    assert [q.face_px for q in batches[1].faces[0].quality] == [150.0, 40.0]  # each face's quality comes back


# ---- real runs on the shared FF++ clips ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def ffpp_runs(ffpp, tmp_path_factory) -> dict[str, Path]:
    """eval of the default model on the shared clips twice, sharing one crop cache: cold (decode + detect), then warm.

    Each run also counts, in `runs["work"][name]`, the files it decoded and the frame batches it sent to the face
    detector (the two costs the cache exists to skip)."""
    from stream.live.faces import FaceDetector
    from stream.live.sources import AVSource

    base = tmp_path_factory.mktemp("eval")
    runs: dict = {"work": {}}
    for name in ("cold", "warm"):
        work = runs["work"][name] = {"decoded": 0, "detected": 0}

        def counted(fn, what, work=work):
            def wrapper(*args, **kwargs):
                work[what] += 1
                return fn(*args, **kwargs)
            return wrapper

        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(AVSource, "frames", counted(AVSource.frames, "decoded"))
            mp.setattr(FaceDetector, "detect", counted(FaceDetector.detect, "detected"))
            assert run_eval(ffpp, base / name, base / "cache", "--fps", EVAL_FPS) == EXIT_OK
        runs[name] = base / name
    return runs


@pytest.mark.slow
def test_eval_on_ffpp_writes_every_file_and_its_video_auc_matches_the_csv(ffpp_runs):
    out = ffpp_runs["cold"]
    for name in (METRICS_JSON, VIDEOS_CSV, ROC_PNG, HISTOGRAM_PNG):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    for png in (ROC_PNG, HISTOGRAM_PNG):
        with Image.open(out / png) as im:
            assert im.format == "PNG" and min(im.size) > 100
    m = json.loads((out / METRICS_JSON).read_text())
    assert m["models"] == [DEFAULT_MODEL] and m["threshold"] == 0.5 and m["fps"] == float(EVAL_FPS)
    assert m["counts"] == {"files": 7, "real": 3, "fake": 4, "videos": 7, "scored": 7, "no_face": 0, "errors": 0,
                           "low_quality": 0, "low_quality_face_frames": m["counts"]["low_quality_face_frames"]}
    assert m["errors"] == [] and m["warnings"] == []
    rows = read_csv(out / VIDEOS_CSV)
    assert sorted(Path(r["path"]).name for r in rows) == sorted(p.name for p in FFPP.glob("*/*.mp4"))
    labels = np.array([int(r["label"]) for r in rows])
    scores = np.array([float(r["score"]) for r in rows])
    assert labels.tolist().count(FAKE) == 4 and {r["method"] for r in rows} == {"real", "fake"}
    assert m["video"]["auc"] == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert m["video"]["accuracy"] == pytest.approx(accuracy_score(labels, (scores >= 0.5).astype(int)))
    assert m["video"]["f1"] == pytest.approx(f1_score(labels, (scores >= 0.5).astype(int)))
    assert m["frame"]["n"] == sum(int(r["frames"]) for r in rows) and m["frame"]["auc"] is not None
    # the shared clips sit directly in fake/: one method, "fake", judged against all reals
    assert list(m["methods"]) == ["fake"] and m["methods"]["fake"]["video"] == m["video"]


@pytest.mark.slow
def test_eval_scores_with_the_same_pipeline_as_scan(ffpp_runs):
    from engines.registry import build_engine

    video = FFPP / "real" / "004.mp4"
    engine = build_engine(DEFAULT_MODEL, weights_dir=MESONET_WEIGHTS, allow_download=False)
    result = Scanner([engine], [0.5], ScanOptions(fps=float(EVAL_FPS))).scan(video)
    row = next(r for r in read_csv(ffpp_runs["cold"] / VIDEOS_CSV) if Path(r["path"]).name == video.name)
    assert float(row["score"]) == pytest.approx(result.score, abs=1e-6)
    assert int(row["frames"]) == result.frames_scored


@pytest.mark.slow
def test_second_run_hits_the_cache_and_gives_identical_scores(ffpp_runs):
    cold, warm = (json.loads((ffpp_runs[k] / METRICS_JSON).read_text()) for k in ("cold", "warm"))
    assert (cold["cache"]["hits"], cold["cache"]["misses"]) == (0, 7)
    assert (warm["cache"]["hits"], warm["cache"]["misses"]) == (7, 0)
    assert len(list(Path(warm["cache"]["dir"]).glob("*/*.npz"))) == 7
    # a warm run only scores: it decodes no file and detects no face (checked by counting, not by timing it,
    # which a loaded machine makes flaky; both runs' wall times stay in metrics.json["seconds"], and the costs
    # the cache skips, decoding and detection, are timed by benchmarks/scan.py)
    work = ffpp_runs["work"]
    assert work["cold"]["decoded"] == 7 and work["cold"]["detected"] > 0, work
    assert work["warm"] == {"decoded": 0, "detected": 0}, work
    assert read_csv(ffpp_runs["cold"] / VIDEOS_CSV) == read_csv(ffpp_runs["warm"] / VIDEOS_CSV)
    for level in ("frame", "video"):
        assert warm[level] == cold[level]


# ---- no label leak, unreadable files -------------------------------------------------------------------------

def test_a_file_scores_the_same_whatever_its_name_or_class_folder(tmp_path):
    """The same face as real/ and as a fake named like one: only pixels reach the model, so the scores agree."""
    data = tmp_path / "data"
    link(FACES[0], data / "real" / "person.jpg")
    link(FACES[0], data / "fake" / "Deepfakes" / "Deepfakes_fake_1.jpg")
    assert run_eval(data, tmp_path / "out", None) == EXIT_OK
    rows = read_csv(tmp_path / "out" / VIDEOS_CSV)
    assert [(r["label"], r["method"]) for r in rows] == [("0", "real"), ("1", "Deepfakes")]
    assert rows[0]["score"] == rows[1]["score"] and rows[0]["frames"] == rows[1]["frames"] == "1"


def test_unreadable_files_are_reported_and_skipped(tmp_path, capsys):
    data = tmp_path / "data"
    link(FACES[0], data / "real" / "face.jpg")
    link(FACES[1], data / "fake" / "face.jpg")
    bad = {"real/notes.mp4": b"this is a text file, not a video\n", "fake/empty.mp4": b"",
           "fake/broken.png": b"\x89PNG not really"}
    for rel, content in bad.items():
        (data / rel).write_bytes(content)
    assert run_eval(data, tmp_path / "out", tmp_path / "cache") == EXIT_INPUT_FAILED
    err = capsys.readouterr().err
    m = json.loads((tmp_path / "out" / METRICS_JSON).read_text())
    assert sorted(Path(e["path"]).relative_to(data).as_posix() for e in m["errors"]) == sorted(bad)
    reasons = {Path(e["path"]).name: e["error"] for e in m["errors"]}
    assert "cannot open as video" in reasons["notes.mp4"] and "empty file" in reasons["empty.mp4"]
    assert "cannot read as an image" in reasons["broken.png"]
    for rel in bad:
        assert f"skipped {data / rel}" in err
    assert m["counts"]["errors"] == 3 and m["counts"]["scored"] == 2 and m["video"]["n"] == 2
    assert len(read_csv(tmp_path / "out" / VIDEOS_CSV)) == 2 and (tmp_path / "out" / ROC_PNG).is_file()


def test_a_dataset_whose_every_file_is_unreadable_is_an_error(tmp_path, capsys):
    data = tmp_path / "data"
    for rel in ("real/a.mp4", "fake/b.mp4"):
        (data / rel).parent.mkdir(parents=True)
        (data / rel).write_text("not a video")
    assert run_eval(data, tmp_path / "out", None) == EXIT_USAGE
    assert "every one of the 2 files failed" in capsys.readouterr().err
    assert not (tmp_path / "out" / METRICS_JSON).exists()
