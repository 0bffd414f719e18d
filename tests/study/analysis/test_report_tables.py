"""The report's tables: classes a model never predicts, per-class intervals at 0 or 1, and the per-image
predictions."""

from __future__ import annotations

import types

import numpy as np
import pandas as pd
import pytest

from study.analysis.evaluation import Evaluation
from study.analysis.report import boundary_sentence
from study.analysis.report_tables import (BoundaryProportion, boundary_proportions, confusion_table, never_predicted,
                                          per_class_tables, predictions_table)
from study.analysis.uncertainty import boundary_interval, bootstrap_split, percentile_interval

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


def _small_split() -> Evaluation:
    """12 images of 7 patients: COVID-19 half right (its 3 predictions all right), Other pneumonia every
    image right (2 patients), No Finding none right (predicted Other pneumonia; 2 patients)."""
    y_true = np.array([0, 0, 0, 0, 0, 0, 1, 1, 1, 2, 2, 2])
    predicted = np.array([0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1])
    evaluation = _evaluation(y_true, np.eye(3)[predicted] * 0.7 + 0.1)
    evaluation.groups = np.array(["a", "a", "b", "b", "c", "c", "d", "d", "e", "f", "f", "g"])
    return evaluation


def test_a_class_all_right_or_none_right_is_named_with_its_images_and_patients():
    found = boundary_proportions(_small_split())
    assert found == [BoundaryProportion("COVID-19", "precision", 1.0, 3, 2),
                     BoundaryProportion("COVID-19", "specificity", 1.0, 6, 4),
                     BoundaryProportion("Other pneumonia", "recall", 1.0, 3, 2),
                     BoundaryProportion("No Finding", "recall", 0.0, 3, 2),
                     BoundaryProportion("No Finding", "specificity", 1.0, 9, 5)]
    # Precision of COVID-19: 3 predicted, all right
    both = _evaluation([0, 0, 1, 1], np.eye(3)[[0, 0, 0, 1]] * 0.7 + 0.1)
    assert [(b.class_name, b.figure, b.value) for b in boundary_proportions(both)] == [
        ("COVID-19", "recall", 1.0), ("Other pneumonia", "precision", 1.0), ("Other pneumonia", "specificity", 1.0),
        ("No Finding", "specificity", 1.0)]


def test_per_class_intervals_at_0_or_1_are_exact_and_have_width():
    """The bootstrap repeats a recall of 1 (or 0) in every resample: [1.00, 1.00] would claim a
    certainty that 2 patients cannot give. The table shows the exact interval over the patients."""
    evaluation = _small_split()
    bootstrap = bootstrap_split("d", [evaluation], resamples=500)
    recall = bootstrap.samples["t1"].per_class["recall"]
    assert percentile_interval(recall[:, 1]) == (1.0, 1.0) and percentile_interval(recall[:, 2]) == (0.0, 0.0)
    chosen = types.SimpleNamespace(rank=1, dataset="d", model="m", evaluation=evaluation,
                                   candidate=types.SimpleNamespace(trial_id="t1"))
    tables = per_class_tables(types.SimpleNamespace(selected=[chosen], bootstraps={"d": bootstrap}))
    table = tables["per_class_d_m"].set_index("class")
    assert table["patients"].tolist() == [3, 2, 2] and table["support"].tolist() == [6, 3, 3]
    assert tuple(table.loc["Other pneumonia", ["recall lower", "recall upper"]]) == pytest.approx(
        boundary_interval(1.0, 2))
    assert tuple(table.loc["No Finding", ["recall lower", "recall upper"]]) == pytest.approx(boundary_interval(0.0, 2))
    assert table.loc["Other pneumonia", "recall lower"] < 0.2 and table.loc["No Finding", "recall upper"] > 0.8
    # a proportion inside (0, 1) keeps the bootstrap's interval
    assert tuple(table.loc["COVID-19", ["recall lower", "recall upper"]]) == percentile_interval(recall[:, 0])
    shown = tables["_shown_per_class_d_m"].set_index("class")
    assert shown.loc["Other pneumonia", "recall"] == "1.000 [0.16, 1.00]"

    sentence = " ".join(boundary_sentence(evaluation))
    assert ("recall of Other pneumonia (3 of 3 image(s), 2 patient(s)), No Finding (0 of 3 image(s), 2 patient(s))"
            in sentence)
    assert "; specificity of COVID-19 (6 of 6 image(s), 4 patient(s)), No Finding (9 of 9" in sentence
    assert "Clopper-Pearson" in sentence and "F1 of No Finding is then the same in every resample" in sentence
    assert boundary_sentence(_evaluation([0, 0, 1, 1, 2, 2], np.eye(3)[[0, 1, 1, 2, 2, 0]] * 0.7 + 0.1)) == []
