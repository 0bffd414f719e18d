"""The report's tables: what they say about classes a model never predicts."""

from __future__ import annotations

import numpy as np

from study.analysis.evaluation import Evaluation
from study.analysis.report_tables import confusion_table, never_predicted

CLASSES = ["COVID-19", "Other pneumonia", "No Finding"]


def _evaluation(y_true, scores, multilabel=False) -> Evaluation:
    y_true, scores = np.asarray(y_true), np.asarray(scores, dtype=float)
    return Evaluation("t1", 3, "test", {}, y_true, scores, CLASSES, multilabel, {}, np.arange(len(y_true)),
                      np.zeros_like(scores))


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
