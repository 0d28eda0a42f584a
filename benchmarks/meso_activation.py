"""MesoNet with and without the head's LeakyReLU, side by side, on the shared data: which do the weights fit?

Run: .venv/bin/python benchmarks/meso_activation.py [--fps 1] [--keras] [--shared ../shared]

Why: the authors' code puts LeakyReLU(0.1) between the head's two Dense layers, but Keras 2 writes every layer into
a weight file's `layer_names`, and the two Meso4 files list none there (the MesoInception files list
`leaky_re_lu_1`). The weights were trained with one head or the other; the better-scoring variant is the evidence.

What is measured, for each of the four files and each variant ("leaky" = with the LeakyReLU, "linear" = without):
- AUC of p(fake) on MTCNN face crops of the shared FF++ c23 videos (`--fps` sampled frames per second, the best
  face of each), real against every fake, and real against the fakes of the file's own method (Deepfakes for
  *_DF, Face2Face for *_F2F);
- log loss (cross-entropy, lower is better) on those own-method crops: AUC only ranks, while the variant the
  weights were trained with should also give the better-calibrated probabilities;
- AUC on the shared DFDC crops (11 real, 11 fake, resized to 256);
- mean p(fake) on the 56 CelebA-HQ photos, all real (lower is better);
- max |p(fake) difference| between the variants over all those images;
- with `--keras`, the same FF++ AUC from the Keras reference (tests/support/keras_meso_ref.py), fed a copy of the file
  whose `layer_names` has the LeakyReLU added or removed, and the max |torch - Keras| difference.
The "file" column says which variant the file's own layer list describes; the engine runs that one.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import h5py
import numpy as np
from PIL import Image
from sklearn.metrics import log_loss, roc_auc_score

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from engines.keras_h5 import read_layer_names  # noqa: E402
from engines.architectures.mesonet import LEAKY_PREFIX, build_meso4, build_mesoinception4, file_has_leaky  # noqa: E402
from engines.registry import get_entry  # noqa: E402

SIZE = 256
MARGIN = 0.2  # the MesoNet registry entries' crop margin
FILES = {  # registry model -> (file, builder, the fake method it was trained on)
    "meso4-df": ("Meso4_DF.h5", build_meso4, "Deepfakes"),
    "meso4-f2f": ("Meso4_F2F.h5", build_meso4, "Face2Face"),
    "mesoinception-df": ("MesoInception_DF.h5", build_mesoinception4, "Deepfakes"),
    "mesoinception-f2f": ("MesoInception_F2F.h5", build_mesoinception4, "Face2Face"),
}
VARIANTS = {"leaky": True, "linear": False}
BATCH = 16
ADDED_LEAKY_NAME = "leaky_re_lu_99"  # a name no file uses, for the copy that gains a LeakyReLU


def ffpp_crops(ffpp: Path, fps: float) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(crops, labels 1 = fake, method per crop: 'real' or the manipulation) from every shared FF++ video."""
    from stream.faces import FaceDetector, crop_faces
    from stream.sources import AVSource

    detector = FaceDetector()
    crops, labels, methods = [], [], []
    for video in sorted(ffpp.glob("*/*.mp4")):
        fake = video.parent.name == "fake"
        method = video.stem.split("_")[0] if fake else "real"
        frames = [f.image for f in AVSource(video, sample_fps=fps).frames()]
        for image, faces in zip(frames, detector.detect(frames)):
            if faces:
                best = max(faces, key=lambda d: d.prob)
                crops.append(crop_faces(image, [best.box], SIZE, MARGIN))
                labels.append(int(fake))
                methods.append(method)
    return np.concatenate(crops), np.array(labels), methods


def still_images(folder: Path, pattern: str) -> np.ndarray:
    paths = sorted(folder.glob(pattern))
    return np.stack([np.asarray(Image.open(p).convert("RGB").resize((SIZE, SIZE), Image.BILINEAR)) for p in paths])


def predict(engine, crops: np.ndarray) -> np.ndarray:
    return np.concatenate([engine.predict(crops[i:i + BATCH]) for i in range(0, len(crops), BATCH)])


def with_head(src: Path, leaky: bool, folder: Path) -> Path:
    """A copy of `src` whose `layer_names` lists a LeakyReLU after the first Dense (or none), nothing else changed."""
    dst = folder / f"{src.stem}-{'leaky' if leaky else 'linear'}.h5"
    shutil.copy(src, dst)
    with h5py.File(dst, "r+") as f:
        names = [n.decode() for n in f.attrs["layer_names"]]
        names = [n for n in names if not n.startswith(LEAKY_PREFIX)]
        if leaky:
            first_dense = next(i for i, n in enumerate(names) if n.startswith("dense"))
            names.insert(first_dense + 1, ADDED_LEAKY_NAME)
            f.create_group(ADDED_LEAKY_NAME).attrs["weight_names"] = np.array([], dtype="S1")
        f.attrs["layer_names"] = [n.encode() for n in names]
    return dst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    parser.add_argument("--fps", type=float, default=1.0, help="sampled frames per second of each FF++ video")
    parser.add_argument("--keras", action="store_true", help="also score with the Keras reference (TensorFlow)")
    args = parser.parse_args()
    weights = args.shared / "weights" / "mesonet"
    faces = args.shared / "data" / "faces"

    crops, labels, methods = ffpp_crops(args.shared / "data" / "ffpp-c23", args.fps)
    dfdc = np.concatenate([still_images(faces / "dfdc-crops" / k, "*.png") for k in ("real", "fake")])
    dfdc_labels = np.repeat([0, 1], [len(list((faces / "dfdc-crops" / k).glob("*.png"))) for k in ("real", "fake")])
    celeba = still_images(faces / "celeba-hq", "*.jpg")
    counts = {m: methods.count(m) for m in sorted(set(methods))}
    print(f"FF++ crops at {args.fps} fps: {len(crops)} ({counts}); DFDC crops {len(dfdc)}; CelebA-HQ {len(celeba)}")

    if args.keras:
        import tensorflow as tf
        from support.keras_meso_ref import keras_mesonet, keras_p_real

        tf.config.threading.set_intra_op_parallelism_threads(2)
    header = (f"{'model':<18} {'file':<6} {'variant':<7} {'AUC all':>8} {'AUC own':>8} {'AUC dfdc':>8} "
              f"{'loss own':>8} {'celebA p':>8}" + (f" {'AUC keras':>9} {'|t-k|':>8}" if args.keras else ""))
    print(header)
    tmp = Path(tempfile.mkdtemp(prefix="meso-activation-"))
    for model, (filename, builder, own) in FILES.items():
        path = weights / filename
        follows = "leaky" if file_has_leaky(read_layer_names(path), path) else "linear"
        own_mask = np.array([m in ("real", own) for m in methods])
        scores = {}
        for variant, leaky in VARIANTS.items():
            engine = builder(path, get_entry(model), "cpu", leaky=leaky)
            p = predict(engine, crops)
            p_dfdc, p_celeba = predict(engine, dfdc), predict(engine, celeba)
            scores[variant] = np.concatenate([p, p_dfdc, p_celeba])
            row = (f"{model:<18} {follows:<6} {variant:<7} {roc_auc_score(labels, p):8.3f} "
                   f"{roc_auc_score(labels[own_mask], p[own_mask]):8.3f} {roc_auc_score(dfdc_labels, p_dfdc):8.3f} "
                   f"{log_loss(labels[own_mask], p[own_mask].astype(np.float64), labels=[0, 1]):8.3f} "
                   f"{p_celeba.mean():8.3f}")
            if args.keras:
                reference = keras_mesonet(with_head(path, leaky, tmp))
                p_keras = 1.0 - np.concatenate([keras_p_real(reference, crops[i:i + BATCH])
                                                for i in range(0, len(crops), BATCH)])
                row += f" {roc_auc_score(labels, p_keras):9.3f} {np.abs(p_keras - p).max():8.1e}"
            print(row)
        print(f"{'':<18} max |p_fake(leaky) - p_fake(linear)| over all images: "
              f"{np.abs(scores['leaky'] - scores['linear']).max():.3f}")
    shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
