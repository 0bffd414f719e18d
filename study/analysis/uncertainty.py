"""Uncertainty of test figures: a seeded bootstrap that resamples patients, not images.

Images of one patient are correlated (same lungs, same scanner, often the
same day), so resampling images treats a patient with ten images as ten
independent observations and gives intervals that are too narrow. Here
the unit is the split's leakage group (a patient, merged with any patient
that shares a byte-identical file or a near-identical image, the same X-ray
re-encoded, resized or squashed: resampling_groups), drawn
with replacement within strata (each group's rarest class or label, rarest
by patients on the split), so that a class of two patients or more on the
split stays present in every resample (a resample that would lack one, which
the strata cannot rule out where every patient of the class also holds a
rarer class, is drawn again; so is one that would lack the images not of
such a class, without which its one-vs-rest ROC AUC is undefined). A resample is a vector of weights,
one per image (how many times its group was drawn), and every metric of
cxrnets.metrics.classification_metrics is computed from weighted counts for
all resamples at once (weights of ones give exactly the point estimates).

Intervals are percentile intervals, but for the per-class proportions
(precision, recall, specificity: images counted right among those predicted
as a class, of it, or not of it). With the few patients a class often has on
a test split, the percentile interval of a resampled proportion is too
narrow (at 0 or 1 it has no width at all), so those get the exact binomial
interval at the patients' effective sample size instead
(proportion_interval); so does accuracy in the comparison with external
sets (study.analysis.external). A figure whose every resample gives the same
value (same_in_every_resample: where each patient has one image, a resample
keeps each class's images, and a class all right or all wrong moves nothing)
has no spread to make an interval of. Paired differences use the same
resampled patients for both sides, so that what the two models share (the
hard patients) cancels out.

A dataset without patient ids makes each image its own patient
(names_patients): its images are resampled one by one, the same person's
X-rays counted as independent, which makes its intervals optimistic.

A patient alone in a stratum (the one patient of a class) is resampled
with the other such patients: drawn once in every resample, a difference
made by their images alone would look certain. A class with one patient is
then that patient, or absent (counted as 0), in a resample: its part of an
average over classes (macro precision, recall, F1, ROC AUC, the classwise
ECE) is never a spread over the class's patients, so those intervals, and
the class's own F1 and ROC AUC intervals, are left undefined
(undefined_reasons). So are a class's own ROC AUC interval and the macro ROC
AUC's where the images not of the class are one patient's (a multi-label
label on all images but that patient's): without that patient a resample
has no negatives for it. No interval is made of the resamples where a figure
happens to be defined (percentile_interval). With a few
patients more the percentile intervals of such averages are still too narrow
(FEW_PATIENTS); the report says so.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

from cxrnets.fingerprints import near_identical_pairs
from cxrnets.metrics import calibration, class_indicators, class_probabilities, predictions
from cxrnets.splits import leakage_groups

LEVEL = 0.95
RESAMPLES = 2000
# The figures that average over classes (labels), each class weighing alike: a class of few patients
# moves them as much as a class of many.
CLASS_AVERAGES = ("precision_macro", "recall_macro", "f1_macro", "roc_auc_macro", "classwise_ece")
# Below this many patients in a class the percentile intervals of CLASS_AVERAGES cover the truth less
# often than they say (measured in the README's Analysis section).
FEW_PATIENTS = 10


@dataclass
class MetricSamples:
    """One set of predictions scored on every resample: metric name -> (resamples,) values, and
    per-class precision, recall, specificity, f1 and ROC AUC -> (resamples, classes)."""

    summary: dict[str, np.ndarray]
    per_class: dict[str, np.ndarray]


def resampling_groups(patients: pd.Series, sha1: pd.Series, rows: np.ndarray, prints: np.ndarray) -> np.ndarray:
    """The bootstrap's unit for the images `rows` of a dataset: their leakage groups (cxrnets.splits.leakage_groups
    of every image's patient and file `sha1`), joined where two of them are near-identical (`prints`: their
    fingerprints, cxrnets.fingerprints), as a split made now joins them."""
    pairs = [(rows[i], rows[j], bits) for i, j, bits in near_identical_pairs(prints)]
    return leakage_groups(patients.astype(str), sha1, pairs)[rows]


POOLED = -2  # the stratum of the groups that had a stratum to themselves (group_strata)


def group_strata(groups: np.ndarray, y_true: np.ndarray, multilabel: bool) -> np.ndarray:
    """Each image's stratum: the rarest class (label) its group holds, the rarest being the one of the fewest
    patients (groups) on the split, then of the fewest images, then the first, but for classes of one patient,
    which come last; -1 for a group of no label. A class of two patients or more so has a stratum of its own,
    of groups that all hold it, unless each of its groups holds a rarer class (resample_weights keeps such a
    class present).

    A stratum of one group would draw that group once in every resample, never resampling it: such groups
    share one stratum, POOLED, which joins the largest stratum where it holds a single group itself."""
    y_true = np.asarray(y_true, dtype=np.int64)
    _, group_index = np.unique(np.asarray(groups), return_inverse=True)
    members = class_indicators(y_true, y_true.shape[1] if multilabel else y_true.max() + 1, multilabel)
    holds = group_holds(group_index, members)
    patients = holds.sum(axis=0)
    order = np.lexsort((np.arange(members.shape[1]), members.sum(axis=0), patients, patients < 2))
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    rarity = np.where(holds, rank[None, :], len(order))
    stratum = np.where(holds.any(axis=1), rarity.argmin(axis=1), -1)
    return pooled(stratum)[group_index]


def group_holds(group_index: np.ndarray, members: np.ndarray) -> np.ndarray:
    """(groups, classes) booleans: which classes each group has an image of (`group_index`: each image's group,
    `members`: (images, classes) booleans, cxrnets.metrics.class_indicators)."""
    holds = np.zeros((group_index.max() + 1, members.shape[1]), dtype=bool)
    np.logical_or.at(holds, group_index, members)
    return holds


def pooled(group_stratum: np.ndarray) -> np.ndarray:
    """`group_stratum` (one per group) with the groups alone in their stratum moved to POOLED, and POOLED into
    the largest stratum (the first of equals) where it would hold one group."""
    strata, sizes = np.unique(group_stratum, return_counts=True)
    alone = np.isin(group_stratum, strata[sizes < 2])
    if alone.sum() >= 2 or alone.sum() == len(group_stratum):
        return np.where(alone, POOLED, group_stratum)
    return np.where(alone, strata[sizes.argmax()], group_stratum)


def resample_weights(groups: np.ndarray, strata: np.ndarray, resamples: int, seed: int,
                     members: np.ndarray | None = None) -> np.ndarray:
    """(resamples, images) weights: in each resample, every stratum's groups drawn with replacement
    as many times as the stratum has groups; an image weighs as often as its group was drawn.

    With `members` ((images, classes) booleans, cxrnets.metrics.class_indicators), a resample without an image
    of a class that two groups or more hold is drawn again, as is one without an image not of such a class (its
    rest, the negatives of its one-vs-rest ROC AUC, which is undefined without them): group_strata's strata keep
    most such classes in every resample, but not one whose every group holds a rarer class (its groups lie in
    other classes' strata, which need not draw them), nor a multi-label rest (images without a label, whose groups
    lie in the strata of the labels they hold)."""
    unique_groups, group_index = np.unique(np.asarray(groups), return_inverse=True)
    group_stratum = np.zeros(len(unique_groups), dtype=np.int64)
    group_stratum[group_index] = np.unique(strata, return_inverse=True)[1]
    rng = np.random.default_rng(seed)
    counts = drawn_groups(group_stratum, resamples, rng)
    if members is not None:
        members = np.asarray(members, dtype=bool)
        holds = np.hstack([group_holds(group_index, members), group_holds(group_index, ~members)])
        kept = holds[:, holds.sum(axis=0) >= 2].astype(np.int32)
        missing = ((counts @ kept) == 0).any(axis=1)
        while missing.any():
            counts[missing] = drawn_groups(group_stratum, int(missing.sum()), rng)
            missing = ((counts @ kept) == 0).any(axis=1)
    return counts[:, group_index].astype(np.float64)


def drawn_groups(group_stratum: np.ndarray, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """(resamples, groups) how many times each group is drawn: each stratum's groups with replacement, as many
    times as the stratum has groups (`group_stratum`: one per group)."""
    counts = np.zeros((resamples, len(group_stratum)), dtype=np.int32)
    rows = np.arange(resamples)[:, None]
    for stratum in np.unique(group_stratum):
        members = np.flatnonzero(group_stratum == stratum)
        drawn = members[rng.integers(0, len(members), size=(resamples, len(members)))]
        np.add.at(counts, (np.broadcast_to(rows, drawn.shape), drawn), 1)
    return counts


def _divide(numerator: np.ndarray, denominator: np.ndarray, empty: float = 0.0) -> np.ndarray:
    """numerator / denominator, `empty` where the denominator is 0 (by default scikit-learn's zero_division=0)."""
    safe = np.where(denominator > 0, denominator, 1)
    return np.where(denominator > 0, numerator / safe, empty)


def _prf(tp: np.ndarray, predicted: np.ndarray, support: np.ndarray) -> tuple[np.ndarray, ...]:
    precision = _divide(tp, predicted)
    recall = _divide(tp, support)
    f1 = _divide(2 * tp, predicted + support)
    return precision, recall, f1


def _weighted_auc(truth: np.ndarray, scores: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """(resamples,) ROC AUC of one label under each row of weights (ties count a half, as in
    scikit-learn); NaN where a resample lacks positives or negatives."""
    order = np.argsort(scores, kind="stable")
    sorted_scores = scores[order]
    starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])
    w = weights[:, order]
    positive = np.add.reduceat(w * truth[order], starts, axis=1)
    negative = np.add.reduceat(w * (1 - truth[order]), starts, axis=1)
    below = np.cumsum(negative, axis=1) - negative
    pairs = positive.sum(axis=1) * negative.sum(axis=1)
    won = (positive * (below + 0.5 * negative)).sum(axis=1)
    return np.where(pairs > 0, won / np.where(pairs > 0, pairs, 1), np.nan)


def metric_samples(y_true: np.ndarray, scores: np.ndarray, multilabel: bool, weights: np.ndarray) -> MetricSamples:
    """Every metric of classification_metrics, and per_class_table's per-class figures, for each row of
    `weights` (resamples, images)."""
    y_true = np.asarray(y_true, dtype=np.int64)
    predicted = predictions(scores, multilabel)
    if multilabel:
        truth, guess = y_true.astype(np.float64), predicted.astype(np.float64)
        tp = weights @ (truth * guess)
        fp = weights @ ((1 - truth) * guess)
        fn = weights @ (truth * (1 - guess))
        tn = weights @ ((1 - truth) * (1 - guess))
        total = weights.sum(axis=1)
        right_cells = weights @ (truth == guess).sum(axis=1)
        exact = weights @ (truth == guess).all(axis=1)
        precision, recall, f1 = _prf(tp, tp + fp, tp + fn)
        aucs = np.stack([_weighted_auc(truth[:, j], np.asarray(scores)[:, j], weights)
                         for j in range(truth.shape[1])], axis=1)
        with warnings.catch_warnings():  # a resample where no label has both classes: NaN, as in the metrics
            warnings.simplefilter("ignore", RuntimeWarning)
            auc_macro = np.nanmean(aucs, axis=1)
        summary = {
            "accuracy": _divide(right_cells, total * truth.shape[1]),
            "subset_accuracy": _divide(exact, total),
            "precision_macro": precision.mean(axis=1), "recall_macro": recall.mean(axis=1),
            "f1_macro": f1.mean(axis=1),
            "f1_micro": _divide(2 * tp.sum(axis=1), 2 * tp.sum(axis=1) + fp.sum(axis=1) + fn.sum(axis=1)),
            "roc_auc_macro": auc_macro,
        }
        return MetricSamples(summary, {"precision": precision, "recall": recall,
                                       "specificity": _divide(tn, tn + fp, np.nan),
                                       "f1": f1, "roc_auc": aucs})
    classes = np.asarray(scores).shape[1]
    pair = np.zeros((len(y_true), classes * classes))
    pair[np.arange(len(y_true)), y_true * classes + predicted] = 1.0
    confusion = (weights @ pair).reshape(len(weights), classes, classes)  # [resample, true, predicted]
    tp = np.diagonal(confusion, axis1=1, axis2=2)
    support, guessed = confusion.sum(axis=2), confusion.sum(axis=1)
    precision, recall, f1 = _prf(tp, guessed, support)
    total = support.sum(axis=1, keepdims=True)
    negatives = total - support
    specificity = _divide(negatives - (guessed - tp), negatives, np.nan)  # as cxrnets.metrics.per_class_table
    probabilities = class_probabilities(scores)
    aucs = np.stack([_weighted_auc((y_true == k).astype(np.float64), probabilities[:, k], weights)
                     for k in range(classes)], axis=1)
    with warnings.catch_warnings():  # a resample where no class has members and non-members: NaN, as in the metrics
        warnings.simplefilter("ignore", RuntimeWarning)
        auc_macro = np.nanmean(aucs, axis=1)
    summary = {"accuracy": _divide(tp.sum(axis=1), support.sum(axis=1)),
               "precision_macro": precision.mean(axis=1), "recall_macro": recall.mean(axis=1),
               "f1_macro": f1.mean(axis=1), "roc_auc_macro": auc_macro}
    return MetricSamples(summary, {"precision": precision, "recall": recall, "specificity": specificity, "f1": f1,
                                   "roc_auc": aucs})


def partial_class_samples(y_true: np.ndarray, scores: np.ndarray, classes_used: np.ndarray,
                          weights: np.ndarray) -> dict[str, np.ndarray]:
    """Single-label figures that exist when a set lacks some classes, for each row of `weights`:
    accuracy; each class's recall and one-vs-rest ROC AUC (NaN for a class absent from the set, or
    without images of another class); and their means over `classes_used` (a boolean mask, the
    classes present in every set being compared)."""
    y_true = np.asarray(y_true, dtype=np.int64)
    scores = np.asarray(scores)
    classes = scores.shape[1]
    base = metric_samples(y_true, scores, False, weights)
    present = np.bincount(y_true, minlength=classes) > 0
    recall = np.where(present[None, :], base.per_class["recall"], np.nan)
    auc = base.per_class["roc_auc"]  # NaN for a class absent from the set: no positives
    used = np.asarray(classes_used, dtype=bool)
    with warnings.catch_warnings():  # no class used, or an AUC undefined in every used class: NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        recall_mean = np.nanmean(recall[:, used], axis=1) if used.any() else np.full(len(weights), np.nan)
        auc_mean = np.nanmean(auc[:, used], axis=1) if used.any() else np.full(len(weights), np.nan)
    return {"accuracy": base.summary["accuracy"], "recall_present": recall_mean, "roc_auc_present": auc_mean,
            "recall": recall, "roc_auc": auc}


def percentile_interval(samples: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    """The central `level` interval of the resampled values; (nan, nan) where any of them is undefined (NaN).

    The resamples where a figure is defined are those that drew what it needs (a one-vs-rest ROC AUC: images
    of the class and images not of it): an interval over them alone is one over other patients than the split's,
    from fewer resamples than it says. The callers say why such an interval is undefined (undefined_reasons,
    SplitBootstrap.auc_resampled)."""
    values = np.asarray(samples, dtype=np.float64)
    if values.size == 0 or not np.isfinite(values).all():
        return float("nan"), float("nan")
    tail = (1 - level) / 2 * 100
    lower, upper = np.percentile(values, [tail, 100 - tail])
    return float(lower), float(upper)


def same_in_every_resample(samples: np.ndarray) -> bool:
    """Whether every resampled value is the same, and defined: a figure without spread over the resamples, whose
    percentile interval would have no width and say nothing of its uncertainty."""
    values = np.asarray(samples, dtype=np.float64)
    return (values.size > 0 and bool(np.isfinite(values).all())
            and float(np.ptp(values)) <= 1e-12 * max(1.0, float(np.abs(values).max())))


def names_patients(patients: pd.Series, relpaths: pd.Series) -> bool:
    """Whether images name their patients: a layout without patient ids makes each image its own patient, its
    relpath (cxrnets.data), and the bootstrap then resamples images, one person's X-rays as independent."""
    return not (np.asarray(patients, dtype=str) == np.asarray(relpaths, dtype=str)).all()


def proportion_interval(correct: np.ndarray, groups: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    """The `level` interval of a proportion of images counted right, the images' patients as clusters:
    Korn & Graubard's (1998) exact binomial interval (R's survey::svyciprop(method = "beta")).

    The Clopper-Pearson interval is taken at the effective sample size: the images divided by their
    design effect (the variance of the proportion over patients, a ratio estimator's, against the
    binomial one; at least 1 here: images of one patient never count for more than independent
    ones), scaled by the squared ratio of t quantiles at the images' and the patients' degrees of
    freedom, which widens it where patients are few. At 0 or 1, or over one patient, no design effect
    can be estimated: each patient counts as one image. `correct`: one boolean per image of the
    proportion's denominator; `groups`: each of those images' patient. (nan, nan) over no image.
    """
    from scipy import stats

    correct = np.asarray(correct, dtype=np.float64)
    if correct.size == 0:
        return float("nan"), float("nan")
    _, patient = np.unique(np.asarray(groups), return_inverse=True)
    images, hits = np.bincount(patient).astype(np.float64), np.bincount(patient, weights=correct)
    patients, total = len(images), float(correct.size)
    proportion = hits.sum() / total
    alpha = 1 - level
    if proportion in (0.0, 1.0) or patients < 2:
        effective = float(patients)
    else:
        variance = patients / (patients - 1) * np.sum((hits - proportion * images) ** 2) / total ** 2
        effective = total if variance == 0 else min(total, proportion * (1 - proportion) / variance)
        effective *= (stats.t.ppf(alpha / 2, total - 1) / stats.t.ppf(alpha / 2, patients - 1)) ** 2
    right = proportion * effective
    lower = float(stats.beta.ppf(alpha / 2, right, effective - right + 1)) if right > 0 else 0.0
    upper = float(stats.beta.ppf(1 - alpha / 2, right + 1, effective - right)) if right < effective else 1.0
    return lower, upper


def independent_difference_interval(first: float, first_interval: tuple[float, float], second: float,
                                    second_interval: tuple[float, float]) -> tuple[float, float]:
    """The interval of first - second, two proportions from independent samples, from each one's own
    interval (MOVER, Zou & Donner 2008): for proportions whose intervals are proportion_interval's,
    the difference of resampled values would be as much too narrow as each side's."""
    (first_lower, first_upper), (second_lower, second_upper) = first_interval, second_interval
    difference = first - second
    return (difference - float(np.hypot(first - first_lower, second_upper - second)),
            difference + float(np.hypot(first_upper - first, second - second_lower)))


def class_patients(y_true: np.ndarray, groups: np.ndarray, classes: int, multilabel: bool) -> np.ndarray:
    """(classes,) how many patients (groups) have an image of each class (label) on the split."""
    return patients_holding(class_indicators(np.asarray(y_true), classes, multilabel), groups)


def rest_patients(y_true: np.ndarray, groups: np.ndarray, classes: int, multilabel: bool) -> np.ndarray:
    """(classes,) how many patients (groups) have an image not of each class (without the label) on the split:
    the negatives of its one-vs-rest ROC AUC."""
    return patients_holding(~class_indicators(np.asarray(y_true), classes, multilabel), groups)


def patients_holding(members: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """(classes,) how many groups have an image among each column of `members` ((images, classes) booleans)."""
    groups = np.asarray(groups)
    return np.array([len(np.unique(groups[members[:, k]])) for k in range(members.shape[1])])


def undefined_reasons(y_true: np.ndarray, classes: list[str], multilabel: bool, groups: np.ndarray) -> dict[str, str]:
    """Metric -> why its interval is undefined on this split (empty when all are defined).

    A class with no image makes every macro average a constant zero term that no resampling of this
    split can move: the interval would describe the split, not the model. A class with one patient is
    that patient, or absent, in a resample: its part of every average over classes is that one patient's
    figure or 0.
    """
    if len(np.unique(groups)) < 2:
        reason = f"the split holds one patient ({len(y_true)} image(s)): nothing to resample"
        names = ("accuracy", "subset_accuracy", "precision_macro", "recall_macro", "f1_macro", "f1_micro",
                 "roc_auc_macro", "brier", "ece", "classwise_ece")
        return {name: reason for name in names}
    kind, kinds = ("label", "labels") if multilabel else ("class", "classes")
    named = lambda names: f"{kind if len(names) == 1 else kinds} {', '.join(names)}"  # noqa: E731
    patients = class_patients(y_true, groups, len(classes), multilabel)
    reasons: dict[str, list[str]] = {}
    absent = [name for name, count in zip(classes, patients) if count == 0]
    if absent:
        for name in ("precision_macro", "recall_macro", "f1_macro"):
            reasons.setdefault(name, []).append(
                f"no image on the split of {named(absent)}: the macro average counts each such {kind} as 0 in "
                "every resample")
    alone = [name for name, count in zip(classes, patients) if count == 1]
    if alone:
        for name in CLASS_AVERAGES:
            reasons.setdefault(name, []).append(
                f"one patient on the split of {named(alone)}: a resample holds that patient's images or none of "
                f"the {kind}'s, so each such {kind}'s part of an average over {kinds} is that one patient's figure "
                f"or 0, never a spread over patients of the {kind} (its precision, recall and specificity have "
                "exact intervals in the per-class table; a study made with a larger --test-fraction or "
                "--val-fraction gives it more patients)")
    rest = rest_patients(y_true, groups, len(classes), multilabel)
    lone_rest = [name for name, count in zip(classes, rest) if count == 1]
    if lone_rest:
        reasons.setdefault("roc_auc_macro", []).append(
            f"the images not of {named(lone_rest)} are one patient's: a resample holds that patient's images or none, "
            f"and without them each such {kind}'s one-vs-rest ROC AUC is undefined (no negatives), so the macro ROC "
            f"AUC would average over other {kinds} from one resample to the next")
    return {name: "; ".join(why) for name, why in reasons.items()}


# ------------------------------------------------------------------ the analysis's test splits

BASELINE = "majority baseline"  # the key of the majority-class predictor's samples


@dataclass
class SplitBootstrap:
    """One dataset's evaluated split, resampled: every evaluated trial and the baseline scored on the
    same resampled patients."""

    dataset: str
    resamples: int
    seed: int
    patients: int                      # resampling units (leakage groups) in the split
    images: int
    undefined: dict[str, str]          # metric -> why its interval is undefined
    samples: dict[str, MetricSamples]  # trial id (and BASELINE) -> its metrics on every resample
    # trial id -> cxrnets.metrics.calibration (brier, ece, classwise_ece, ...) on every resample
    calibration: dict[str, dict[str, np.ndarray]]
    class_patients: dict[str, int]  # class (label) -> its patients on the split, in the classes' order
    rest_patients: dict[str, int]   # class (label) -> the patients with an image not of it, in the classes' order
    patient_ids: bool = True  # False: the dataset names no patients, each image is its own (names_patients)

    def cell(self, trial_ids: list[str], metric: str) -> np.ndarray:
        """(resamples,) the mean of `metric` over a cell's evaluated trials (top-k) on each resample."""
        return np.mean([self.samples[t].summary[metric] for t in trial_ids], axis=0)

    def class_resampled(self, k: int) -> bool:
        """Whether class (label) k's own F1 and ROC AUC have a bootstrap interval: it has two patients or more
        (one patient is drawn or not: its figures or none)."""
        return list(self.class_patients.values())[k] >= 2

    def auc_resampled(self, k: int) -> bool:
        """Whether class (label) k's one-vs-rest ROC AUC has a bootstrap interval: its images and the images not
        of it each come from two patients or more (a side of one patient is drawn or not, and without it the AUC
        is undefined)."""
        return self.class_resampled(k) and list(self.rest_patients.values())[k] >= 2

    def difference_defined(self, metric: str) -> bool:
        """Whether a paired difference of `metric` has an interval: not an average over classes where a
        class has one patient (an absent class adds the same 0 to both sides, which the difference cancels), nor
        the macro ROC AUC where the images not of a class are one patient's, nor any figure of a split of one
        patient."""
        return self.patients >= 2 and not (metric in CLASS_AVERAGES and 1 in self.class_patients.values()) and not (
            metric == "roc_auc_macro" and 1 in self.rest_patients.values())

    def few_patients(self) -> dict[str, int]:
        """Classes (labels) with 2 to FEW_PATIENTS - 1 patients on the split: resampled, but too few for the
        percentile intervals of averages over classes to hold their level."""
        return {name: count for name, count in self.class_patients.items() if 2 <= count < FEW_PATIENTS}


def bootstrap_split(dataset: str, evaluations: list, resamples: int = RESAMPLES, seed: int = 0) -> SplitBootstrap:
    """Resample the patients of the split that `evaluations` (study.analysis.evaluation.Evaluation,
    all of one dataset, hence of the same images) were scored on."""
    first = evaluations[0]
    for other in evaluations[1:]:
        if not (np.array_equal(other.y_true, first.y_true) and np.array_equal(other.groups, first.groups)):
            raise ValueError(f"{dataset}: trials {first.trial_id} and {other.trial_id} were evaluated on different "
                             "images; their figures cannot be paired")
    strata = group_strata(first.groups, first.y_true, first.multilabel)
    weights = resample_weights(first.groups, strata, resamples, seed,
                               class_indicators(first.y_true, len(first.classes), first.multilabel))
    samples = {e.trial_id: metric_samples(e.y_true, e.scores, e.multilabel, weights) for e in evaluations}
    samples[BASELINE] = metric_samples(first.y_true, first.baseline_scores, first.multilabel, weights)
    calibrated = {e.trial_id: calibration(e.y_true, e.scores, e.multilabel, weights) for e in evaluations}
    per_class = class_patients(first.y_true, first.groups, len(first.classes), first.multilabel)
    rest = rest_patients(first.y_true, first.groups, len(first.classes), first.multilabel)
    images = getattr(first, "images", None)  # each image's relpath and patient, where the evaluation kept them
    patient_ids = images is None or names_patients(images["patient"], images["relpath"])
    return SplitBootstrap(dataset, resamples, seed, patients=len(np.unique(first.groups)), images=len(first.y_true),
                          undefined=undefined_reasons(first.y_true, first.classes, first.multilabel, first.groups),
                          samples=samples, calibration=calibrated,
                          class_patients=dict(zip(first.classes, per_class.tolist())),
                          rest_patients=dict(zip(first.classes, rest.tolist())), patient_ids=patient_ids)
