"""`train logreg` (card 000): frozen Xception features, then StandardScaler + LogisticRegression.

Card 000 embeds 10 face-frames per video, uniformly spread, at 299² with the Keras ImageNet Xception, and tunes
the LogisticRegression with GridSearchCV scored by ROC AUC over penalty (l2, elasticnet), solver (saga, lbfgs),
C (0.01, 0.1, 1, 10), l1_ratio (0.3, 0.5, 0.7, elasticnet only), max_iter 3000. Here the folds are grouped by
video (StratifiedGroupKFold), so frames of one video never sit on both sides of a fold, and the scaler is fitted
inside each fold's pipeline (the card fits it on train+val embeddings, which leaks). The best pipeline, refitted on
the whole training split, is scored on the held-out validation videos and written in the engine's safe format.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from engines.registry import get_entry
from engines.weights import sha256_of
from engines.architectures.xception_logreg import head_from_sklearn, write_head
from stream.jobs.datasets import FAKE
from stream.jobs.eval_report import binary_metrics
from stream.jobs.train.features import Features, backbone_path, load_backbone
from stream.jobs.train.progress import fmt, say
from stream.jobs.train.run import Run
from stream.jobs.train.splits import cv_folds

MODEL = "xception-logreg"
MAX_ITER = 3000
C_VALUES = (0.01, 0.1, 1.0, 10.0)
L1_RATIOS = (0.3, 0.5, 0.7)
# Card 000's grid, valid combinations only (lbfgs has no elasticnet), as (penalty, solver, C values, l1 ratios).
GRIDS: dict[str, list[tuple[str, str, tuple[float, ...], tuple[float, ...]]]] = {
    "full": [("l2", "saga", C_VALUES, ()), ("l2", "lbfgs", C_VALUES, ()), ("elasticnet", "saga", C_VALUES, L1_RATIOS)],
    "small": [("l2", "lbfgs", (0.1, 1.0), ())],  # for CI and smoke runs
}
THRESHOLD = 0.5


def _penalty_deprecated() -> bool:
    """scikit-learn 1.8 deprecates `penalty`: l2 is l1_ratio=0, elasticnet a l1_ratio in (0, 1)."""
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression().get_params().get("penalty") == "deprecated"


def param_grid(name: str) -> list[dict[str, list[Any]]]:
    """GridSearchCV's grid for a Pipeline step named "clf", in whichever spelling this scikit-learn takes."""
    modern = _penalty_deprecated()
    grid = []
    for penalty, solver, cs, ratios in GRIDS[name]:
        point: dict[str, list[Any]] = {"clf__solver": [solver], "clf__C": list(cs)}
        if modern:
            point["clf__l1_ratio"] = list(ratios) if penalty == "elasticnet" else [0.0]
        else:
            point["clf__penalty"] = [penalty]
            if ratios:
                point["clf__l1_ratio"] = list(ratios)
        grid.append(point)
    return grid


def _video_metrics(labels: np.ndarray, scores: np.ndarray, groups: np.ndarray) -> dict[str, Any]:
    """Video level as in `eval`: the mean of a video's frame scores (videos holding pseudo-fakes are skipped)."""
    names = [g for g in sorted(set(groups.tolist())) if len(set(labels[groups == g].tolist())) == 1]
    y = np.array([labels[groups == g][0] for g in names])
    s = np.array([scores[groups == g].mean() for g in names])
    return binary_metrics(y, s, THRESHOLD) if len(set(y.tolist())) == 2 else {}


def train(run: Run) -> dict[str, Any]:
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV, StratifiedGroupKFold
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    cfg = run.cfg
    entry = get_entry(MODEL)
    spec = run.spec(entry.input.margin)
    weights = backbone_path(cfg)
    key = {**run.fixed(), "backbone": sha256_of(weights),
           "spec": dataclasses.asdict(spec), "features": "keras-xception-avgpool-v1"}

    def build():
        features = Features(load_backbone(weights), entry.input, run.device)
        return run.collect(spec, "static" if cfg.sbi else None, transform=features)

    samples = run.cached_samples(key, build)
    train_s, val_s = run.split(samples)
    folds = cv_folds(train_s.labels, train_s.groups)
    pipeline = Pipeline([("scaler", StandardScaler()),
                         ("clf", LogisticRegression(max_iter=MAX_ITER, random_state=cfg.seed))])
    grid = param_grid(cfg.grid)
    candidates = sum(int(np.prod([len(v) for v in g.values()])) for g in grid)
    say(f"grid search: {candidates} candidates x {folds} video-grouped folds on {len(train_s)} face-frames "
        f"({train_s.counts()['videos']} videos)")
    search = GridSearchCV(pipeline, grid, scoring="roc_auc", n_jobs=cfg.jobs, refit=True, error_score="raise",
                          cv=StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=cfg.seed))
    search.fit(train_s.x, train_s.labels, groups=train_s.groups)
    best = search.best_estimator_
    clf = best.named_steps["clf"]
    p_fake = best.predict_proba(val_s.x)[:, list(clf.classes_).index(FAKE)]
    frame = binary_metrics(val_s.labels, p_fake, THRESHOLD)
    video = _video_metrics(val_s.labels, p_fake, val_s.groups)
    head = head_from_sklearn(best.named_steps["scaler"], clf, fake_class=FAKE)
    head = dataclasses.replace(head, metadata={**head.metadata, "trained_by": "dfstream train logreg",
                                               "cv_auc": float(search.best_score_), "val_auc": frame["auc"],
                                               "seed": cfg.seed, "sbi": cfg.sbi})
    path = write_head(cfg.out / entry.weights.filename, head)
    say(f"best {search.best_params_}: CV AUC {fmt(search.best_score_)}, val AUC {fmt(frame['auc'])}, "
        f"val video AUC {fmt(video.get('auc'))} -> {path}")
    cv = search.cv_results_
    return {
        "weights": [path],
        "data": {"train": train_s.counts(), "val": val_s.counts()},
        "best_params": {k.removeprefix("clf__"): v for k, v in search.best_params_.items()},
        "cv": {"folds": folds, "best_auc": float(search.best_score_),
               "results": [{"params": {k.removeprefix("clf__"): v for k, v in p.items()},
                            "mean_auc": float(m), "std_auc": float(s)}
                           for p, m, s in zip(cv["params"], cv["mean_test_score"], cv["std_test_score"])]},
        "val": {"frame": frame, "video": video},
    }
