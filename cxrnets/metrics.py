"""Classification metrics for single-label and multi-label chest X-ray models.

Plain numpy and scikit-learn (no torch, no Ray): callers pass arrays of true
labels and per-class scores, and get Python floats keyed by the metric names
the study reports (``accuracy``, ``precision_macro``, ``recall_macro``,
``f1_macro``, ...). Every metric comes from scikit-learn with
``zero_division=0``; macro averages run over all classes the model has, so a
class absent from a small split still counts (as zero).

Single-label: ``y_true`` is an int array of shape (N,), ``scores`` is (N, C)
probabilities or logits, and the prediction is the argmax.
Multi-label: ``y_true`` is a 0/1 array of shape (N, L), ``scores`` is (N, L)
probabilities, and the prediction is ``scores >= threshold``.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
from sklearn import metrics as skm

logger = logging.getLogger(__name__)

__all__ = [
    "calibration",
    "class_indicators",
    "class_names",
    "class_probabilities",
    "classification_metrics",
    "confusion_matrix",
    "majority_baseline",
    "majority_scores",
    "per_class_table",
    "predictions",
    "reliability_bins",
]


def _check_scores(scores: np.ndarray) -> np.ndarray:
    scores = np.asarray(scores)
    if scores.ndim != 2:
        raise ValueError(
            f"scores must be a 2-D array of shape (N, classes), got shape {scores.shape}"
        )
    if scores.shape[0] == 0:
        raise ValueError("cannot compute metrics on empty input (N == 0 samples)")
    if scores.shape[1] == 0:
        raise ValueError("scores has no classes (shape (N, 0))")
    if not np.all(np.isfinite(scores)):
        raise ValueError(
            "scores contain NaN or infinite values; the model output is unusable "
            "(did training diverge?)"
        )
    return scores


def _check_inputs(
    y_true: np.ndarray, scores: np.ndarray, multilabel: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Validate shapes and values; return (y_true as int64, scores)."""
    y_true = np.asarray(y_true)
    if y_true.shape[:1] == (0,) or y_true.size == 0:
        raise ValueError("cannot compute metrics on empty input (N == 0 samples)")
    scores = _check_scores(scores)
    if multilabel:
        if y_true.shape != scores.shape:
            raise ValueError(
                f"multi-label y_true has shape {y_true.shape} but scores has shape "
                f"{scores.shape}; both must be (N, labels)"
            )
        if not np.all(np.isin(y_true, (0, 1))):
            raise ValueError("multi-label y_true must contain only 0 and 1")
    else:
        if y_true.ndim != 1 or y_true.shape[0] != scores.shape[0]:
            raise ValueError(
                f"single-label y_true must have shape ({scores.shape[0]},) to match "
                f"scores of shape {scores.shape}, got {y_true.shape}"
            )
        if not np.all(np.equal(np.mod(y_true, 1), 0)):
            raise ValueError("single-label y_true must contain integer class indices")
        num_classes = scores.shape[1]
        if y_true.min() < 0 or y_true.max() >= num_classes:
            raise ValueError(
                f"single-label y_true holds class indices outside 0..{num_classes - 1} "
                f"(min {y_true.min()}, max {y_true.max()}) for {num_classes} score columns"
            )
    return y_true.astype(np.int64), scores


def predictions(scores: np.ndarray, multilabel: bool, threshold: float = 0.5) -> np.ndarray:
    """Turn scores into predictions.

    Single-label: argmax over classes, shape (N,). Multi-label: 0/1 of
    ``scores >= threshold``, shape (N, L). Always int64.
    """
    scores = _check_scores(scores)
    if multilabel:
        return (scores >= threshold).astype(np.int64)
    return np.argmax(scores, axis=1).astype(np.int64)


def class_names(rows: np.ndarray, classes: list[str], multilabel: bool) -> list[str]:
    """Each row's class name (single-label: class indices), or its labels ';'-joined (multi-label: 0/1 rows,
    '' for none): targets or predictions as people read them."""
    names = np.asarray(classes, dtype=object)
    if multilabel:
        return [";".join(names[np.asarray(row).astype(bool)]) for row in rows]
    return list(names[np.asarray(rows, dtype=np.int64)])


def _per_label_roc_auc(y_true: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """ROC AUC of each label column; nan where y_true holds only one class."""
    aucs = np.full(y_true.shape[1], np.nan, dtype=np.float64)
    for j in range(y_true.shape[1]):
        column = y_true[:, j]
        if np.unique(column).size == 2:
            aucs[j] = skm.roc_auc_score(column, scores[:, j])
    return aucs


def classification_metrics(
    y_true: np.ndarray, scores: np.ndarray, multilabel: bool, threshold: float = 0.5
) -> dict[str, float]:
    """Summary metrics for one split.

    Single-label keys: ``accuracy``, ``precision_macro``, ``recall_macro``,
    ``f1_macro`` (macro over all C score columns), and ``roc_auc_macro`` (the
    mean one-vs-rest ROC AUC of each class's probability over the classes
    present with other classes; nan when none is): threshold-free, it ranks
    models that all predict the majority class, where the macro F1 ties.

    Multi-label keys: ``accuracy`` (label-wise: fraction of the N*L cells
    predicted right), ``subset_accuracy`` (exact match of whole rows),
    ``precision_macro``, ``recall_macro``, ``f1_macro``, ``f1_micro``, and
    ``roc_auc_macro`` (mean ROC AUC over labels where y_true has both 0 and 1;
    nan when no label does).

    Raises ValueError on empty input or mismatched shapes.
    """
    y_true, scores = _check_inputs(y_true, scores, multilabel)
    y_pred = predictions(scores, multilabel, threshold)
    labels = list(range(scores.shape[1]))
    precision, recall, f1, _ = skm.precision_recall_fscore_support(
        y_true, y_pred, labels=labels, average="macro", zero_division=0
    )
    aucs = _per_label_roc_auc(class_indicators(y_true, scores.shape[1], multilabel).astype(np.int64),
                              scores if multilabel else class_probabilities(scores))
    defined = aucs[~np.isnan(aucs)]
    if defined.size < aucs.size:
        logger.debug(
            "ROC AUC undefined for %d of %d classes or labels (only members or only non-members in y_true)",
            aucs.size - defined.size,
            aucs.size,
        )
    roc_auc_macro = float(defined.mean()) if defined.size else float("nan")
    if not multilabel:
        return {
            "accuracy": float(skm.accuracy_score(y_true, y_pred)),
            "precision_macro": float(precision),
            "recall_macro": float(recall),
            "f1_macro": float(f1),
            "roc_auc_macro": roc_auc_macro,
        }
    return {
        # Label-wise accuracy: every (sample, label) cell counts once.
        "accuracy": float(skm.accuracy_score(y_true.ravel(), y_pred.ravel())),
        # On indicator matrices scikit-learn's accuracy is the exact-match ratio.
        "subset_accuracy": float(skm.accuracy_score(y_true, y_pred)),
        "precision_macro": float(precision),
        "recall_macro": float(recall),
        "f1_macro": float(f1),
        "f1_micro": float(
            skm.f1_score(y_true, y_pred, labels=labels, average="micro", zero_division=0)
        ),
        "roc_auc_macro": roc_auc_macro,
    }


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """(C, C) int64 counts; rows are true classes, columns predicted classes.

    Classes are ``0..num_classes-1``, so a class that never occurs still gets
    its (zero) row and column. Raises ValueError on a class index outside
    that range (it would have no row or column to count in).
    """
    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred)
    if y_true.size == 0:
        raise ValueError("cannot compute a confusion matrix on empty input (N == 0 samples)")
    if y_true.shape != y_pred.shape or y_true.ndim != 1:
        raise ValueError(
            f"y_true and y_pred must be 1-D arrays of equal length, got shapes "
            f"{y_true.shape} and {y_pred.shape}"
        )
    if num_classes < 1:
        raise ValueError(f"num_classes must be at least 1, got {num_classes}")
    for name, values in (("y_true", y_true), ("y_pred", y_pred)):
        outside = np.unique(values[(values < 0) | (values >= num_classes)])
        if outside.size:
            raise ValueError(
                f"{name} holds class indices outside 0..{num_classes - 1} ({num_classes} classes): "
                + ", ".join(str(value) for value in outside[:10])
                + (f" and {outside.size - 10} more" if outside.size > 10 else "")
            )
    return skm.confusion_matrix(y_true, y_pred, labels=list(range(num_classes))).astype(
        np.int64
    )


def per_class_table(
    y_true: np.ndarray,
    scores: np.ndarray,
    class_names: list[str],
    multilabel: bool,
    threshold: float = 0.5,
) -> pd.DataFrame:
    """One row per class (or label), each class against the rest: precision, recall (sensitivity),
    specificity, f1, support and ROC AUC.

    Columns: ``class``, ``precision``, ``recall``, ``specificity`` (true
    negatives over the images not of the class; nan where there are none:
    a label on every image),
    ``f1``, ``roc_auc`` (the class's score against its membership,
    one-vs-rest on its probability for single-label; nan where y_true has
    only members or only non-members) and ``support`` (number of true members).
    """
    y_true, scores = _check_inputs(y_true, scores, multilabel)
    if len(class_names) != scores.shape[1]:
        raise ValueError(
            f"got {len(class_names)} class names for {scores.shape[1]} score columns"
        )
    y_pred = predictions(scores, multilabel, threshold)
    precision, recall, f1, support = skm.precision_recall_fscore_support(
        y_true, y_pred, labels=list(range(scores.shape[1])), average=None, zero_division=0
    )
    truth = class_indicators(y_true, scores.shape[1], multilabel)
    guessed = class_indicators(y_pred, scores.shape[1], multilabel)
    negatives = (~truth).sum(axis=0)
    true_negatives = (~truth & ~guessed).sum(axis=0)
    return pd.DataFrame(
        {
            "class": list(class_names),
            "precision": np.asarray(precision, dtype=np.float64),
            "recall": np.asarray(recall, dtype=np.float64),
            "specificity": np.where(negatives > 0, true_negatives / np.maximum(negatives, 1), np.nan),
            "f1": np.asarray(f1, dtype=np.float64),
            "roc_auc": _per_label_roc_auc(truth.astype(np.int64),
                                          scores if multilabel else class_probabilities(scores)),
            "support": np.asarray(support, dtype=np.int64),
        }
    )


def class_probabilities(scores: np.ndarray) -> np.ndarray:
    """Single-label scores as probabilities: rows that are already a distribution (non-negative, summing
    to 1) as they are, logits through a softmax. A class's one-vs-rest ROC AUC ranks images by its
    probability, which a class's logit alone does not order the same way."""
    scores = np.asarray(scores, dtype=np.float64)
    if (scores >= 0).all() and np.allclose(scores.sum(axis=1), 1.0, atol=1e-4):
        return scores
    exp = np.exp(scores - scores.max(axis=1, keepdims=True))
    return exp / exp.sum(axis=1, keepdims=True)


def class_indicators(rows: np.ndarray, num_classes: int, multilabel: bool) -> np.ndarray:
    """(N, classes) booleans: which class (labels) each row of targets or predictions is. Single-label
    rows are class indices, multi-label rows 0/1 already."""
    rows = np.asarray(rows)
    if multilabel:
        return rows.astype(bool)
    return rows[:, None] == np.arange(num_classes)[None, :]


def majority_scores(train_targets: np.ndarray, count: int, multilabel: bool, num_classes: int) -> np.ndarray:
    """The scores of always predicting the training split's most frequent class (multi-label: each
    label present in most training images) for `count` images: (count, num_classes)."""
    if multilabel:
        prevalence = np.asarray(train_targets, dtype=float).mean(axis=0)
        return np.tile((prevalence >= 0.5).astype(float), (count, 1))
    majority = np.bincount(np.asarray(train_targets, dtype=np.int64), minlength=num_classes).argmax()
    scores = np.zeros((count, num_classes))
    scores[:, majority] = 1.0
    return scores


def majority_baseline(train_targets: np.ndarray, eval_targets: np.ndarray, multilabel: bool,
                      num_classes: int) -> dict[str, float]:
    """Metrics of the majority predictor (majority_scores): the floor a trained model must beat.

    ``num_classes`` is the dataset's number of classes (labels), which the
    targets need not all hold: the macro averages run over all of them.
    """
    if multilabel and np.asarray(train_targets).shape[1] != num_classes:
        raise ValueError(
            f"multi-label train_targets have {np.asarray(train_targets).shape[1]} label columns, "
            f"num_classes is {num_classes}"
        )
    scores = majority_scores(train_targets, len(eval_targets), multilabel, num_classes)
    return classification_metrics(eval_targets, scores, multilabel=multilabel)


CALIBRATION_BINS = 10


def calibration(y_true: np.ndarray, scores: np.ndarray, multilabel: bool = False, weights: np.ndarray | None = None,
                bins: int = CALIBRATION_BINS) -> dict[str, np.ndarray]:
    """How far probabilities are from the frequencies they claim, for each row of `weights` (resamples,
    images; None: every image once, the point figures as arrays of one value):

    - brier: single-label, the mean over images of the squared distance between the probabilities and
      the one-hot truth (0 best; 2 for a confident wrong answer every time); multi-label, the mean over
      images and labels of the squared distance between each label's probability and its presence
      (0 best; 1 for a confident wrong answer on every label);
    - ece: the expected calibration error over `bins` equal-width bins of the forecasts' probabilities:
      the forecast-weighted mean of |observed frequency - probability| in each bin. Single-label, one
      forecast per image, top-label: "the predicted class is right", at its probability (0 for a model
      right 70 % of the times it says 70 %); multi-label, one per image and label: "the label is
      present", at the label's probability;
    - classwise_ece: the ECE of each class's own probability as a forecast of that class (of the label's
      presence, multi-label), over every image, averaged over the classes (Kull et al. 2019). Top-label
      ECE never looks at the probability of a class the model did not pick (the COVID-19 probability of
      an image called Normal, which is what a threshold on COVID-19 would use), and multi-label ECE,
      pooled over labels, is dominated by the many confident absences; here each class counts alike;
    - mean_probability and observed: the forecasts' mean probability and the share of them that came
      true (calibration in the large: a model that says 90 % on average and is right 60 % of the time
      is overconfident, whatever its bins).
    """
    weights = np.ones((1, len(y_true))) if weights is None else np.asarray(weights, dtype=np.float64)
    scores = _check_scores(scores)
    truth = class_indicators(y_true, scores.shape[1], multilabel)
    squared = (scores - truth) ** 2
    brier = (weights @ (squared.mean(axis=1) if multilabel else squared.sum(axis=1))) / weights.sum(axis=1)
    probability, came_true, which = _calibration_forecasts(y_true, scores, multilabel, bins)
    forecasts = probability.shape[1] * weights.sum(axis=1)  # one per image, or one per image and label
    gaps = np.stack([((which == b) * (came_true - probability)).sum(axis=1) for b in range(bins)])  # (bins, images)
    class_bin = _probability_bins(scores, bins)
    class_gaps = np.stack([(class_bin == b) * (truth - scores) for b in range(bins)], axis=1)  # (images, bins, classes)
    binned = (weights @ class_gaps.reshape(len(class_gaps), -1)).reshape(len(weights), bins, -1)
    per_class_ece = np.abs(binned).sum(axis=1) / weights.sum(axis=1)[:, None]  # (resamples, classes)
    return {"brier": brier, "ece": np.abs(weights @ gaps.T).sum(axis=1) / forecasts,
            "classwise_ece": per_class_ece.mean(axis=1),
            "mean_probability": (weights @ probability.sum(axis=1)) / forecasts,
            "observed": (weights @ came_true.sum(axis=1)) / forecasts}


def reliability_bins(y_true: np.ndarray, scores: np.ndarray, multilabel: bool = False,
                     bins: int = CALIBRATION_BINS) -> pd.DataFrame:
    """The reliability diagram's points: per probability bin with forecasts (calibration's), their
    count, mean probability and the share of them that came true."""
    probability, came_true, which = _calibration_forecasts(y_true, _check_scores(scores), multilabel, bins)
    probability, came_true, which = probability.ravel(), came_true.ravel(), which.ravel()
    rows = [{"bin": f"{b / bins:.1f}-{(b + 1) / bins:.1f}", "forecasts": int((which == b).sum()),
             "probability": float(probability[which == b].mean()), "observed": float(came_true[which == b].mean())}
            for b in range(bins) if (which == b).any()]
    return pd.DataFrame(rows, columns=["bin", "forecasts", "probability", "observed"])


def _calibration_forecasts(y_true: np.ndarray, scores: np.ndarray, multilabel: bool, bins: int
                          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(images, forecasts per image) arrays: each forecast's probability, whether it came true (0/1), and
    its bin among `bins` equal-width ones. Single-label: one per image, its predicted class's probability
    and whether that class is right; multi-label: one per label, its probability and its presence."""
    if multilabel:
        probability, came_true = scores, np.asarray(y_true, dtype=np.float64)
    else:
        probability = scores.max(axis=1, keepdims=True)
        came_true = (predictions(scores, multilabel=False) == np.asarray(y_true, dtype=np.int64))[:, None]
        came_true = came_true.astype(np.float64)
    return probability, came_true, _probability_bins(probability, bins)


def _probability_bins(probability: np.ndarray, bins: int) -> np.ndarray:
    """Each probability's bin among `bins` equal-width ones on [0, 1] (1.0 in the last)."""
    return np.minimum((probability * bins).astype(np.int64), bins - 1)
