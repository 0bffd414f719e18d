"""Tests of cxrnets.metrics against values computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from cxrnets.metrics import (
    calibration,
    classification_metrics,
    confusion_matrix,
    majority_baseline,
    per_class_table,
    predictions,
    reliability_bins,
)

SINGLE_KEYS = {"accuracy", "precision_macro", "recall_macro", "f1_macro", "roc_auc_macro"}
MULTI_KEYS = SINGLE_KEYS | {"subset_accuracy", "f1_micro"}


def one_hot_scores(y_pred: list[int], num_classes: int, high: float = 0.8) -> np.ndarray:
    """Probabilities whose argmax is y_pred (rows sum to 1)."""
    low = (1.0 - high) / (num_classes - 1)
    scores = np.full((len(y_pred), num_classes), low)
    scores[np.arange(len(y_pred)), y_pred] = high
    return scores


# --- single-label -------------------------------------------------------------

# y_true = [0, 0, 1, 1, 2, 2]
# y_pred = [0, 1, 1, 1, 2, 0]
# class 0: TP=1 FP=1 (i5) FN=1 (i1) -> P=1/2 R=1/2 F1=1/2
# class 1: TP=2 FP=1 (i1) FN=0      -> P=2/3 R=1   F1=2*(2/3)/(5/3)=4/5
# class 2: TP=1 FP=0 FN=1 (i5)      -> P=1   R=1/2 F1=2*(1/2)/(3/2)=2/3
# macro P = (1/2 + 2/3 + 1)/3 = 13/18
# macro R = (1/2 + 1 + 1/2)/3 = 2/3
# macro F1 = (1/2 + 4/5 + 2/3)/3 = 59/90
# accuracy = 4/6 = 2/3
Y_TRUE_1 = np.array([0, 0, 1, 1, 2, 2])
Y_PRED_1 = [0, 1, 1, 1, 2, 0]


def test_single_label_hand_computed() -> None:
    result = classification_metrics(Y_TRUE_1, one_hot_scores(Y_PRED_1, 3), multilabel=False)
    assert set(result) == SINGLE_KEYS
    assert result["accuracy"] == pytest.approx(2 / 3)
    assert result["precision_macro"] == pytest.approx(13 / 18)
    assert result["recall_macro"] == pytest.approx(2 / 3)
    assert result["f1_macro"] == pytest.approx(59 / 90)
    # one-vs-rest on each class's probability: 5/8, 7/8, 6/8 (as in test_per_class_table_single_label)
    assert result["roc_auc_macro"] == pytest.approx(3 / 4)
    assert all(type(v) is float for v in result.values())


def test_single_label_logits_and_probabilities_agree() -> None:
    logits = np.array(
        [
            [2.0, -1.0, 0.5],
            [-0.3, 1.2, 1.1],
            [-5.0, 3.0, -2.0],
            [0.0, 0.1, -0.1],
            [1.0, 1.5, 4.0],
            [7.0, -2.0, 6.5],
        ]
    )
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    probabilities = exp / exp.sum(axis=1, keepdims=True)
    from_logits = classification_metrics(Y_TRUE_1, logits, multilabel=False)
    from_probabilities = classification_metrics(Y_TRUE_1, probabilities, multilabel=False)
    assert from_logits == pytest.approx(from_probabilities)
    # argmax of these logits is Y_PRED_1, so the hand-computed values hold too.
    assert from_logits["f1_macro"] == pytest.approx(59 / 90)


def test_macro_average_counts_absent_class() -> None:
    # 3 classes; class 2 never occurs in y_true and is never predicted.
    # y_true = [0, 0, 1, 1], y_pred = [0, 1, 1, 1]
    # class 0: TP=1 FP=0 FN=1 -> P=1   R=1/2 F1=2/3
    # class 1: TP=2 FP=1 FN=0 -> P=2/3 R=1   F1=4/5
    # class 2: nothing        -> P=R=F1=0 (zero_division=0)
    # macro P = (1 + 2/3 + 0)/3 = 5/9   (over the 2 present classes it would be 5/6)
    # macro R = (1/2 + 1 + 0)/3 = 1/2
    # macro F1 = (2/3 + 4/5 + 0)/3 = 22/45
    y_true = np.array([0, 0, 1, 1])
    result = classification_metrics(y_true, one_hot_scores([0, 1, 1, 1], 3), multilabel=False)
    assert result["accuracy"] == pytest.approx(3 / 4)
    assert result["precision_macro"] == pytest.approx(5 / 9)
    assert result["recall_macro"] == pytest.approx(1 / 2)
    assert result["f1_macro"] == pytest.approx(22 / 45)
    assert result["precision_macro"] != pytest.approx(5 / 6)
    # ROC AUC needs a class's members and non-members: the absent class has none, the mean runs over
    # the two others (0.75 each: class 0's members score 0.8 and 0.1 against 0.1, 0.1; ties count a half)
    assert result["roc_auc_macro"] == pytest.approx(3 / 4)


def test_single_label_perfect_and_all_wrong() -> None:
    y_true = np.array([0, 1, 2])
    perfect = classification_metrics(y_true, one_hot_scores([0, 1, 2], 3), multilabel=False)
    assert perfect == pytest.approx(
        {"accuracy": 1.0, "precision_macro": 1.0, "recall_macro": 1.0, "f1_macro": 1.0, "roc_auc_macro": 1.0}
    )
    wrong = classification_metrics(y_true, one_hot_scores([1, 2, 0], 3), multilabel=False)
    assert wrong == pytest.approx(
        {"accuracy": 0.0, "precision_macro": 0.0, "recall_macro": 0.0, "f1_macro": 0.0, "roc_auc_macro": 0.25}
    )


# --- confusion matrix -----------------------------------------------------------


def test_confusion_matrix_with_class_that_never_occurs() -> None:
    # 4 classes; class 3 is neither true nor predicted anywhere.
    y_true = np.array([0, 0, 1, 2, 2, 2])
    y_pred = np.array([0, 2, 1, 2, 0, 2])
    expected = np.array(
        [
            [1, 0, 1, 0],  # true 0: predicted 0 once, 2 once
            [0, 1, 0, 0],  # true 1: predicted 1
            [1, 0, 2, 0],  # true 2: predicted 2 twice, 0 once
            [0, 0, 0, 0],  # true 3: never occurs
        ]
    )
    matrix = confusion_matrix(y_true, y_pred, num_classes=4)
    assert matrix.dtype == np.int64
    np.testing.assert_array_equal(matrix, expected)


def test_confusion_matrix_refuses_a_class_index_it_has_no_row_for() -> None:
    """A label of 3 among 3 classes (0..2) was dropped without a word: the counts no longer summed to the images."""
    with pytest.raises(ValueError, match=r"y_true holds class indices outside 0\.\.2 \(3 classes\): 3, 7"):
        confusion_matrix(np.array([0, 3, 1, 7]), np.array([0, 1, 1, 2]), 3)
    with pytest.raises(ValueError, match=r"y_pred holds class indices outside 0\.\.2 \(3 classes\): -1"):
        confusion_matrix(np.array([0, 1]), np.array([-1, 1]), 3)


def test_majority_baseline_averages_over_every_class_of_the_dataset() -> None:
    """Guessed from the targets, a third class seen in neither split was left out of the macro averages."""
    baseline = majority_baseline(np.array([0, 0, 1]), np.array([0, 1, 1]), False, num_classes=3)
    assert baseline["f1_macro"] == pytest.approx((2 * (1 / 3) / (1 / 3 + 1)) / 3)  # class 0's F1 of 0.5, over 3
    with pytest.raises(TypeError, match="num_classes"):
        majority_baseline(np.array([0, 0, 1]), np.array([0, 1, 1]), False)  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="2 label columns, num_classes is 3"):
        majority_baseline(np.array([[1, 0], [1, 1]]), np.array([[1, 0]]), True, num_classes=3)


def test_confusion_matrix_class_present_but_never_predicted() -> None:
    # Class 1 occurs but is never predicted: its column is all zero.
    y_true = np.array([0, 1, 1, 2])
    y_pred = np.array([0, 0, 2, 2])
    expected = np.array(
        [
            [1, 0, 0],
            [1, 0, 1],
            [0, 0, 1],
        ]
    )
    np.testing.assert_array_equal(confusion_matrix(y_true, y_pred, 3), expected)


# --- multi-label -------------------------------------------------------------------

# 3 samples x 3 labels
# y_true          scores                 pred (>= 0.5)
# [1, 0, 1]       [0.9, 0.2, 0.4]        [1, 0, 0]   2 of 3 cells right
# [0, 1, 0]       [0.1, 0.7, 0.3]        [0, 1, 0]   3 of 3 (exact match)
# [1, 1, 0]       [0.8, 0.6, 0.5]        [1, 1, 1]   2 of 3 (0.5 counts as positive)
# label-wise accuracy = 7/9; subset accuracy = 1/3
# label 0: true [1,0,1] pred [1,0,1] -> P=R=F1=1
# label 1: true [0,1,1] pred [0,1,1] -> P=R=F1=1
# label 2: true [1,0,0] pred [0,0,1] -> TP=0 FP=1 FN=1 -> P=R=F1=0
# macro P = R = F1 = 2/3
# micro: TP=2+2+0=4, FP=1, FN=1 -> P=R=F1=4/5
# ROC AUC: label 0 scores pos {0.9,0.8} vs neg {0.1} -> 1
#          label 1 pos {0.7,0.6} vs neg {0.2} -> 1
#          label 2 pos {0.4} vs neg {0.3, 0.5} -> 1 win of 2 pairs -> 1/2
#          macro = (1 + 1 + 1/2)/3 = 5/6
Y_TRUE_ML = np.array([[1, 0, 1], [0, 1, 0], [1, 1, 0]])
SCORES_ML = np.array([[0.9, 0.2, 0.4], [0.1, 0.7, 0.3], [0.8, 0.6, 0.5]])


def test_multilabel_hand_computed() -> None:
    result = classification_metrics(Y_TRUE_ML, SCORES_ML, multilabel=True)
    assert set(result) == MULTI_KEYS
    assert result["accuracy"] == pytest.approx(7 / 9)
    assert result["subset_accuracy"] == pytest.approx(1 / 3)
    assert result["precision_macro"] == pytest.approx(2 / 3)
    assert result["recall_macro"] == pytest.approx(2 / 3)
    assert result["f1_macro"] == pytest.approx(2 / 3)
    assert result["f1_micro"] == pytest.approx(4 / 5)
    assert result["roc_auc_macro"] == pytest.approx(5 / 6)
    assert all(type(v) is float for v in result.values())


def test_multilabel_threshold() -> None:
    # threshold 0.65: pred = [[1,0,0],[0,1,0],[1,0,0]]
    # cells right: row0 2, row1 3, row2 2 (label 1 now missed, label 2 now right) -> 7/9
    # label 1: true [0,1,1] pred [0,1,0] -> P=1 R=1/2 F1=2/3
    # label 2: true [1,0,0] pred [0,0,0] -> P=R=F1=0
    # macro F1 = (1 + 2/3 + 0)/3 = 5/9; subset accuracy = 1/3 (row 1 only)
    result = classification_metrics(Y_TRUE_ML, SCORES_ML, multilabel=True, threshold=0.65)
    assert result["accuracy"] == pytest.approx(7 / 9)
    assert result["subset_accuracy"] == pytest.approx(1 / 3)
    assert result["f1_macro"] == pytest.approx(5 / 9)
    # ROC AUC does not depend on the threshold.
    assert result["roc_auc_macro"] == pytest.approx(5 / 6)


def test_roc_auc_skips_constant_labels() -> None:
    # label 1 is all 0 and label 3 is all 1 in y_true: AUC undefined, skipped.
    # label 0: true [1,0,1,0] scores [0.9,0.4,0.3,0.2]
    #          pairs (pos,neg): (.9,.4) win (.9,.2) win (.3,.4) loss (.3,.2) win -> 3/4
    # label 2: true [0,1,1,0] scores [0.1,0.8,0.6,0.2] -> all pos above all neg -> 1
    # macro over labels 0 and 2 = (3/4 + 1)/2 = 7/8
    y_true = np.array([[1, 0, 0, 1], [0, 0, 1, 1], [1, 0, 1, 1], [0, 0, 0, 1]])
    scores = np.array(
        [
            [0.9, 0.6, 0.1, 0.2],
            [0.4, 0.1, 0.8, 0.9],
            [0.3, 0.2, 0.6, 0.4],
            [0.2, 0.3, 0.2, 0.7],
        ]
    )
    result = classification_metrics(y_true, scores, multilabel=True)
    assert result["roc_auc_macro"] == pytest.approx(7 / 8)
    table = per_class_table(y_true, scores, ["a", "b", "c", "d"], multilabel=True)
    assert table["roc_auc"].iloc[0] == pytest.approx(3 / 4)
    assert math.isnan(table["roc_auc"].iloc[1])
    assert table["roc_auc"].iloc[2] == pytest.approx(1.0)
    assert math.isnan(table["roc_auc"].iloc[3])


def test_roc_auc_nan_when_no_label_qualifies() -> None:
    y_true = np.array([[1, 0], [1, 0]])
    scores = np.array([[0.9, 0.2], [0.4, 0.7]])
    result = classification_metrics(y_true, scores, multilabel=True)
    assert math.isnan(result["roc_auc_macro"])
    # The thresholded metrics are still defined.
    # pred [[1,0],[0,1]]: cells right row0 2, row1 0 -> 2/4; exact rows: row0 -> 1/2
    assert result["accuracy"] == pytest.approx(1 / 2)
    assert result["subset_accuracy"] == pytest.approx(1 / 2)


# --- predictions ---------------------------------------------------------------------


def test_predictions() -> None:
    single = predictions(np.array([[0.1, 0.7, 0.2], [-1.0, -3.0, -2.0]]), multilabel=False)
    np.testing.assert_array_equal(single, [1, 0])
    assert single.dtype == np.int64
    multi = predictions(np.array([[0.5, 0.49], [0.9, 0.0]]), multilabel=True)
    np.testing.assert_array_equal(multi, [[1, 0], [1, 0]])
    assert multi.dtype == np.int64
    np.testing.assert_array_equal(
        predictions(np.array([[0.5, 0.49]]), multilabel=True, threshold=0.4), [[1, 1]]
    )


# --- per-class table ---------------------------------------------------------------


def test_per_class_table_single_label() -> None:
    # Same example as test_single_label_hand_computed.
    table = per_class_table(
        Y_TRUE_1, one_hot_scores(Y_PRED_1, 3), ["covid", "pneumonia", "normal"], multilabel=False
    )
    assert isinstance(table, pd.DataFrame)
    assert list(table.columns) == ["class", "precision", "recall", "specificity", "f1", "roc_auc", "support"]
    assert list(table["class"]) == ["covid", "pneumonia", "normal"]
    assert list(table["precision"]) == pytest.approx([1 / 2, 2 / 3, 1.0])
    assert list(table["recall"]) == pytest.approx([1 / 2, 1.0, 1 / 2])
    # of the 4 images not of each class, 1, 1 and 0 are called that class
    assert list(table["specificity"]) == pytest.approx([3 / 4, 3 / 4, 1.0])
    assert list(table["f1"]) == pytest.approx([1 / 2, 4 / 5, 2 / 3])
    # one-vs-rest on the class's probability (0.8 where predicted, 0.1 elsewhere; ties count a half):
    # covid's members score 0.8 and 0.1 against 0.1, 0.1, 0.1, 0.8: (3.5 + 1.5) / 8
    assert list(table["roc_auc"]) == pytest.approx([5 / 8, 7 / 8, 6 / 8])
    assert list(table["support"]) == [2, 2, 2]


def test_per_class_table_absent_class_has_zero_row() -> None:
    table = per_class_table(
        np.array([0, 0, 1, 1]), one_hot_scores([0, 1, 1, 1], 3), ["a", "b", "c"], multilabel=False
    )
    assert table.iloc[2][["precision", "recall", "f1", "support"]].tolist() == [0, 0, 0, 0]
    assert table.iloc[2]["specificity"] == 1.0 and np.isnan(table.iloc[2]["roc_auc"])  # no member: no curve


def test_per_class_table_multilabel() -> None:
    table = per_class_table(Y_TRUE_ML, SCORES_ML, ["x", "y", "z"], multilabel=True)
    assert list(table.columns) == ["class", "precision", "recall", "specificity", "f1", "roc_auc", "support"]
    assert list(table["precision"]) == pytest.approx([1.0, 1.0, 0.0])
    assert list(table["recall"]) == pytest.approx([1.0, 1.0, 0.0])
    assert list(table["specificity"]) == pytest.approx([1.0, 1.0, 0.5])  # z: 1 of its 2 negatives called z
    assert list(table["f1"]) == pytest.approx([1.0, 1.0, 0.0])
    assert list(table["support"]) == [2, 2, 1]
    assert list(table["roc_auc"]) == pytest.approx([1.0, 1.0, 1 / 2])


def test_specificity_of_a_class_on_every_image_is_not_measured() -> None:
    """No image without the label (or, single-label, every image of the class): specificity is 0/0, which
    printed as 0, a model that never once wrongly called the label shown as always wrong."""
    everywhere = per_class_table(np.array([[1, 0], [1, 1], [1, 0]]), np.array([[0.9, 0.2], [0.8, 0.7], [0.9, 0.6]]),
                                 ["covid", "effusion"], multilabel=True)
    assert np.isnan(everywhere.loc[0, "specificity"]) and everywhere.loc[1, "specificity"] == 0.5
    one_class = per_class_table(np.array([0, 0]), one_hot_scores([0, 1], 2), ["a", "b"], multilabel=False)
    assert np.isnan(one_class.loc[0, "specificity"]) and one_class.loc[1, "specificity"] == 0.5


def test_per_class_table_wrong_number_of_names() -> None:
    with pytest.raises(ValueError, match="class names"):
        per_class_table(Y_TRUE_1, one_hot_scores(Y_PRED_1, 3), ["a", "b"], multilabel=False)


# --- bad input ---------------------------------------------------------------------


@pytest.mark.parametrize("multilabel", [False, True])
def test_empty_input_raises(multilabel: bool) -> None:
    y_true = np.zeros((0, 3), dtype=int) if multilabel else np.zeros(0, dtype=int)
    with pytest.raises(ValueError, match="empty"):
        classification_metrics(y_true, np.zeros((0, 3)), multilabel=multilabel)
    with pytest.raises(ValueError, match="empty"):
        per_class_table(y_true, np.zeros((0, 3)), ["a", "b", "c"], multilabel=multilabel)


def test_empty_confusion_matrix_raises() -> None:
    with pytest.raises(ValueError, match="empty"):
        confusion_matrix(np.zeros(0, dtype=int), np.zeros(0, dtype=int), 3)


def test_mismatched_shapes_raise() -> None:
    with pytest.raises(ValueError, match="shape"):
        classification_metrics(np.array([0, 1]), np.zeros((3, 2)), multilabel=False)
    with pytest.raises(ValueError, match="shape"):
        classification_metrics(np.zeros((2, 3)), np.zeros((2, 4)), multilabel=True)


def test_label_out_of_range_raises() -> None:
    with pytest.raises(ValueError, match="outside"):
        classification_metrics(np.array([0, 3]), np.zeros((2, 3)), multilabel=False)


def test_non_finite_scores_raise() -> None:
    with pytest.raises(ValueError, match="NaN"):
        classification_metrics(np.array([0, 1]), np.array([[np.nan, 0.0], [0.0, 1.0]]), False)


# ------------------------------------------------------------------ calibration

def test_calibration_of_certain_answers() -> None:
    y_true = np.array([0, 1, 2, 0])
    right, wrong = np.eye(3)[y_true], np.eye(3)[[1, 2, 0, 1]]
    assert calibration(y_true, right) == {"brier": pytest.approx([0.0]), "ece": pytest.approx([0.0]),
                                          "classwise_ece": pytest.approx([0.0]),
                                          "mean_probability": pytest.approx([1.0]), "observed": pytest.approx([1.0])}
    # classwise: class 0 forecast 0 for images 0, 1, 3 (two of them class 0) and 1 for image 2 (not): 3/4;
    # class 1 likewise 3/4; class 2 wrong on images 1 (said) and 2 (missed): 2/4
    assert calibration(y_true, wrong) == {"brier": pytest.approx([2.0]), "ece": pytest.approx([1.0]),
                                          "classwise_ece": pytest.approx([2 / 3]),
                                          "mean_probability": pytest.approx([1.0]), "observed": pytest.approx([0.0])}
    labels = np.array([[1, 0, 1], [0, 0, 1]])
    assert calibration(labels, labels.astype(float), multilabel=True)["brier"] == pytest.approx([0.0])
    worst = calibration(labels, 1.0 - labels, multilabel=True)
    assert (worst["brier"], worst["ece"]) == (pytest.approx([1.0]), pytest.approx([1.0]))


def test_calibration_hand_computed_and_weighted_like_repeated_images() -> None:
    y_true = np.array([0, 1, 2, 0])
    scores = np.array([[0.7, 0.2, 0.1], [0.6, 0.3, 0.1], [0.2, 0.5, 0.3], [0.9, 0.05, 0.05]])
    point = calibration(y_true, scores)
    # Brier: (0.09+0.04+0.01) + (0.36+0.49+0.01) + (0.04+0.25+0.49) + (0.01+0.0025+0.0025), over 4 images
    assert point["brier"][0] == pytest.approx((0.14 + 0.86 + 0.78 + 0.015) / 4)
    # one image per bin; right at 0.7 and 0.9, wrong at 0.6 and 0.5: (0.3 + 0.6 + 0.5 + 0.1) / 4
    assert point["ece"][0] == pytest.approx(0.375)
    # each class's probability on every image, one image per bin but for class 2's two 0.1s: class 0
    # (0.3 + 0.6 + 0.2 + 0.1) / 4, class 1 (0.2 + 0.7 + 0.5 + 0.05) / 4, class 2 (0.2 + 0.7 + 0.05) / 4
    assert point["classwise_ece"][0] == pytest.approx((0.3 + 0.3625 + 0.2375) / 3)
    assert (point["mean_probability"][0], point["observed"][0]) == pytest.approx(((0.7 + 0.6 + 0.5 + 0.9) / 4, 0.5))
    weighted = calibration(y_true, scores, weights=np.array([[1, 1, 1, 1], [2, 0, 1, 1]]))
    repeated = calibration(y_true[[0, 0, 2, 3]], scores[[0, 0, 2, 3]])
    for name in ("brier", "ece", "classwise_ece", "mean_probability", "observed"):
        assert weighted[name] == pytest.approx([point[name][0], repeated[name][0]])
    bins = reliability_bins(y_true, scores)
    assert list(bins["forecasts"]) == [1, 1, 1, 1] and list(bins["observed"]) == [0.0, 0.0, 1.0, 1.0]


def test_multilabel_calibration_counts_each_label_as_a_forecast() -> None:
    """Each (image, label) pair forecasts the label's presence at its probability."""
    y_true = np.array([[1, 0], [0, 0], [1, 1]])
    scores = np.array([[0.75, 0.15], [0.35, 0.05], [0.95, 0.45]])
    point = calibration(y_true, scores, multilabel=True)
    # Brier: squared gaps 0.0625, 0.0225, 0.1225, 0.0025, 0.0025, 0.3025, over 6 forecasts
    assert point["brier"][0] == pytest.approx(0.515 / 6)
    # bins: 0.0-0.1 {0.05: absent}, 0.1-0.2 {0.15: absent}, 0.3-0.4 {0.35: absent}, 0.4-0.5 {0.45: present},
    # 0.7-0.8 {0.75: present}, 0.9-1.0 {0.95: present}: gaps 0.05, 0.15, 0.35, 0.55, 0.25, 0.05 over 6
    assert point["ece"][0] == pytest.approx(1.4 / 6)
    assert (point["mean_probability"][0], point["observed"][0]) == pytest.approx((2.7 / 6, 0.5))
    # per label: (0.25 + 0.35 + 0.05) / 3 and (0.15 + 0.05 + 0.55) / 3
    assert point["classwise_ece"][0] == pytest.approx((0.65 / 3 + 0.75 / 3) / 2)
    bins = reliability_bins(y_true, scores, multilabel=True)
    assert list(bins["bin"]) == ["0.0-0.1", "0.1-0.2", "0.3-0.4", "0.4-0.5", "0.7-0.8", "0.9-1.0"]
    assert list(bins["observed"]) == [0, 0, 0, 1, 1, 1] and bins["forecasts"].sum() == 6
    weighted = calibration(y_true, scores, multilabel=True, weights=np.array([[0, 2, 1]]))
    repeated = calibration(y_true[[1, 1, 2]], scores[[1, 1, 2]], multilabel=True)
    for name in ("brier", "ece", "classwise_ece", "mean_probability", "observed"):
        assert weighted[name] == pytest.approx(repeated[name])
