"""What a classifier scores without learning anything, logged beside its metrics so a loss of
2.30 on 10 classes reads as "no better than guessing".

- loss: ``ln(n_classes)``, the cross-entropy of predicting every class with equal probability
  (``ln 2`` for a binary classifier); every classification loss kerasyard accepts is a
  cross-entropy.
- accuracy: the share of the majority class in the set the metrics are computed on (the
  validation set when there is one, else the training set), what always answering the most
  common class scores. On balanced classes that is ``1 / n_classes``; on skewed ones it is
  higher, and it is the honest bar.
"""

from __future__ import annotations

import math

import numpy as np


def chance_levels(n_classes: int, y: np.ndarray | None) -> dict[str, float]:
    """``{"loss": ln(n_classes), "accuracy": majority-class share of y}`` (no accuracy when y
    is empty)."""
    out = {"loss": math.log(max(n_classes, 2))}
    labels = np.asarray(y).reshape(len(y), -1) if y is not None and len(y) else None
    if labels is not None:
        ids = labels.argmax(axis=1) if labels.shape[1] > 1 else labels[:, 0].astype(int)
        out["accuracy"] = float(np.bincount(ids).max() / len(ids))
    return out


TRAINING_DATA_NOTE = (
    "**Metrics on training data.** This job holds no data out (`fit.validation_split` is 0 "
    "and no validation set was given), so its loss, accuracy and confusion matrix describe "
    "the samples it was fitted to: a network can score perfectly there and still be at "
    "chance on new data. Set `fit.validation_split` (e.g. 0.2) to measure generalization.")
