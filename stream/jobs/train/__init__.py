"""`dfstream train KIND DATASET --out DIR`: fit each seed card's model on a labelled dataset, writing weights in
the format its engine loads.

- `logreg` (card 000): frozen Keras-ImageNet Xception features, StandardScaler + LogisticRegression, GridSearchCV
  by ROC AUC over video-grouped folds -> `xception_logreg_head.npz` (the engine's safe head format).
- `lstm` (card 002): Xception features over `--steps` face-frames of one track, LSTM(256), Dropout, Dense(2)
  -> `xception_lstm.weights.h5` (Keras 3 weights of the card's `build_model`).
- `videomae` (card 001): fine-tunes a VideoMAE checkpoint on clips -> a Hugging Face folder `videomae/`.
- `xception` (card 003): the from-scratch Xception -> `best_xception.pth` (a plain state dict).

This module stays import-light (no torch) because the CLI builds its parser from it on every command.
"""

from __future__ import annotations

KINDS = ("logreg", "lstm", "videomae", "xception")


class TrainError(ValueError):
    """Training cannot run on this data or in this folder; the message says why and what to do."""
