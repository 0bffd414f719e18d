"""The report's tables: classes a model never predicts, and the per-image predictions."""

from __future__ import annotations

import numpy as np
import pandas as pd

from study.analysis.evaluation import Evaluation
from study.analysis.report_tables import confusion_table, never_predicted, predictions_table

CLASSES = ["COVID-19", "Other pneumonia", "No Finding"]


def _evaluation(y_true, scores, multilabel=False) -> Evaluation:
    y_true, scores = np.asarray(y_true), np.asarray(scores, dtype=float)
    images = pd.DataFrame({"relpath": [f"images/{i}.png" for i in range(len(y_true))],
                           "patient": [f"p{i // 2}" for i in range(len(y_true))]})
    return Evaluation("t1", 3, "test", {}, y_true, scores, CLASSES, multilabel, {}, np.arange(len(y_true)),
                      np.zeros_like(scores), images=images)


def test_a_constant_predictor_never_predicts_the_other_classes():
    evaluation = _evaluation([0, 1, 2, 0], [[0.8, 0.1, 0.1]] * 4)
    assert never_predicted(evaluation) == ["Other pneumonia", "No Finding"]
    confusion = confusion_table(evaluation)
    assert confusion[CLASSES].sum(axis=0).tolist() == [4, 0, 0]


def test_every_class_predicted():
    evaluation = _evaluation([0, 1, 2], np.eye(3)[[0, 1, 2]] * 0.8 + 0.05)
    assert never_predicted(evaluation) == []


def test_multilabel_labels_never_predicted_positive():
    scores = [[0.9, 0.2, 0.1], [0.7, 0.6, 0.4]]  # label 3 below the 0.5 threshold everywhere
    evaluation = _evaluation([[1, 0, 1], [1, 1, 0]], scores, multilabel=True)
    assert never_predicted(evaluation) == ["No Finding"]


def test_each_image_keeps_its_truth_prediction_and_probabilities():
    scores = [[0.7, 0.2, 0.1], [0.1, 0.3, 0.6], [0.2, 0.5, 0.3]]
    table = predictions_table(_evaluation([0, 1, 2], scores))
    assert list(table.columns) == ["relpath", "patient", "true", "predicted", "p(COVID-19)", "p(Other pneumonia)",
                                   "p(No Finding)"]
    assert list(table["relpath"]) == ["images/0.png", "images/1.png", "images/2.png"]
    assert list(table["patient"]) == ["p0", "p0", "p1"]
    assert list(table["true"]) == CLASSES and list(table["predicted"]) == ["COVID-19", "No Finding", "Other pneumonia"]
    np.testing.assert_array_equal(table[["p(COVID-19)", "p(Other pneumonia)", "p(No Finding)"]].to_numpy(), scores)


def test_multilabel_images_list_their_labels():
    table = predictions_table(_evaluation([[1, 0, 1], [0, 0, 0]], [[0.9, 0.6, 0.1], [0.2, 0.2, 0.2]], multilabel=True))
    assert list(table["true"]) == ["COVID-19;No Finding", ""]
    assert list(table["predicted"]) == ["COVID-19;Other pneumonia", ""]
