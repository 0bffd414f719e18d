"""The report's tables: classes a model never predicts, per-class intervals, and the per-image predictions."""

from __future__ import annotations

import types

import numpy as np
import pandas as pd
import pytest

from study.analysis.evaluation import Evaluation
from study.analysis.report import (no_spread_sentences, one_patient_rest_sentence, one_patient_sentence,
                                   unmeasurable_sentence)
from study.analysis.report_tables import (PROPORTIONS, best_model_on_validation, confusion_table, never_predicted,
                                          paired_differences, per_class_tables, predictions_table, selected_table)
from study.analysis.uncertainty import BASELINE, bootstrap_split, percentile_interval, proportion_interval

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
    assert list(confusion.columns) == ["true class", *(f"predicted: {name}" for name in CLASSES)]
    assert confusion[[f"predicted: {name}" for name in CLASSES]].sum(axis=0).tolist() == [4, 0, 0]


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


def _analysis(evaluation: Evaluation, resamples: int | None = 500) -> types.SimpleNamespace:
    chosen = types.SimpleNamespace(rank=1, dataset="d", model="m", evaluation=evaluation,
                                   candidate=types.SimpleNamespace(trial_id="t1"))
    bootstraps = {"d": bootstrap_split("d", [evaluation], resamples=resamples)} if resamples else {}
    return types.SimpleNamespace(selected=[chosen], bootstraps=bootstraps)


def test_per_class_proportions_get_exact_intervals_over_their_patients():
    """The bootstrap repeats a recall of 1 (or 0) in every resample: [1.00, 1.00] would claim a certainty
    that 2 patients cannot give; inside (0, 1) its percentile interval is too narrow over few patients
    too. Precision, recall and specificity get the exact clustered interval over the patients of the
    images each is a proportion of; F1 and ROC AUC keep the bootstrap's."""
    evaluation = _small_split()
    analysis = _analysis(evaluation)
    per_class_samples = analysis.bootstraps["d"].samples["t1"].per_class
    recall = per_class_samples["recall"]
    assert percentile_interval(recall[:, 1]) == (1.0, 1.0) and percentile_interval(recall[:, 2]) == (0.0, 0.0)
    tables = per_class_tables(analysis)
    table = tables["per_class_d_m"].set_index("class")
    assert table["patients"].tolist() == [3, 2, 2] and table["support"].tolist() == [6, 3, 3]
    groups = evaluation.groups
    # Other pneumonia: 3 of 3 images right, 2 patients; No Finding: 0 of 3, 2 patients
    assert tuple(table.loc["Other pneumonia", ["recall lower", "recall upper"]]) == pytest.approx(
        proportion_interval(np.ones(3, bool), groups[6:9]))
    assert table.loc["Other pneumonia", "recall lower"] == pytest.approx(0.025 ** 0.5)  # 2 of 2 patients
    assert table.loc["No Finding", "recall upper"] > 0.8
    # COVID-19: recall 3 of 6 images (patients a, b, c)
    assert tuple(table.loc["COVID-19", ["recall lower", "recall upper"]]) == pytest.approx(
        proportion_interval(np.r_[np.ones(3, bool), np.zeros(3, bool)], groups[:6]))
    # precision of Other pneumonia: 3 right of its 9 predictions; specificity of COVID-19: 6 of 6
    assert tuple(table.loc["Other pneumonia", ["precision lower", "precision upper"]]) == pytest.approx(
        proportion_interval(evaluation.y_true[3:] == 1, groups[3:]))
    assert table.loc["COVID-19", "specificity upper"] == 1.0
    for column in ("f1", "roc_auc"):
        assert tuple(table.loc["COVID-19", [f"{column} lower", f"{column} upper"]]) == percentile_interval(
            per_class_samples[column][:, 0])
    shown = tables["_shown_per_class_d_m"].set_index("class")
    assert shown.loc["Other pneumonia", "recall"] == "1.000 [0.16, 1.00]"
    assert list(tables["per_class_d_m"].columns[-12:]) == [f"{c} {side}" for c in (*PROPORTIONS, "f1", "roc_auc")
                                                           for side in ("lower", "upper")] + [
        "f1 no spread", "roc_auc no spread"]


def test_an_f1_that_no_resample_moves_is_named():
    # No Finding is never right: its F1 is 0 in every resample (it showed `0.000 [0.00, 0.00]`); the others' move
    tables = per_class_tables(_analysis(_small_split()))
    assert " ".join(no_spread_sentences(tables["per_class_d_m"])).startswith(
        "F1 of No Finding is the same in every resample of this split (`[no spread]`, no interval): none of")
    assert tables["per_class_d_m"]["f1 no spread"].tolist() == [False, False, True]
    assert tables["_shown_per_class_d_m"].set_index("class").loc["No Finding", "f1"] == "0.000 [no spread]"
    each_half_right = _evaluation([0, 0, 1, 1, 2, 2], np.eye(3)[[0, 1, 1, 2, 2, 0]] * 0.7 + 0.1)
    assert no_spread_sentences(per_class_tables(_analysis(each_half_right, None))["per_class_d_m"]) == []


def test_a_class_never_predicted_has_no_precision_interval():
    evaluation = _small_split()  # No Finding is never predicted
    assert never_predicted(evaluation) == ["No Finding"]
    shown = per_class_tables(_analysis(evaluation, 200))["_shown_per_class_d_m"].set_index("class")
    assert shown.loc["No Finding", "precision"] == "0.000 [undefined]"


def test_a_class_of_one_patient_has_no_f1_or_roc_auc_interval_and_the_report_says_why():
    """Every resample draws No Finding's one patient: its F1 and ROC AUC would not move; its recall's exact
    interval over one patient stays (wide)."""
    evaluation = _small_split()
    evaluation.groups = np.array(["a", "a", "b", "b", "c", "c", "d", "d", "e", "f", "f", "f"])
    table = per_class_tables(_analysis(evaluation))["per_class_d_m"]
    by_class = table.set_index("class")
    assert by_class["patients"].tolist() == [3, 2, 1]
    assert by_class.loc["No Finding", ["f1 lower", "f1 upper", "roc_auc lower", "roc_auc upper"]].isna().all()
    assert by_class.loc["No Finding", "recall upper"] > 0.9
    assert not by_class.loc["COVID-19", ["f1 lower", "roc_auc lower"]].isna().any()
    assert one_patient_sentence(table)[0].startswith("No Finding: one patient on this split")
    assert no_spread_sentences(table) == []  # its F1 of 0 is the one-patient sentence's, not "the same in every resample"
    assert one_patient_sentence(per_class_tables(_analysis(_small_split()))["per_class_d_m"]) == []


def test_a_label_whose_rest_is_one_patient_has_no_roc_auc_interval_and_the_report_says_why():
    """As the covid-chestxray study's test split: COVID-19 on every image but patient f's. A resample without f
    has no image lacking COVID-19, where its ROC AUC is undefined; its interval (`0.564 [0.31, 0.84]` there) came
    from the other resamples alone. Its F1 keeps an interval: every resample defines it."""
    groups = np.repeat(list("abcdef"), 2)
    y_true = np.stack([groups != "f", np.isin(groups, list("abc")), np.isin(groups, list("de"))], axis=1).astype(int)
    scores = np.clip(0.3 * y_true + 0.7 * np.random.default_rng(2).random(y_true.shape), 0, 1)
    evaluation = _evaluation(y_true, scores, multilabel=True)
    evaluation.groups = groups
    analysis = _analysis(evaluation)
    tables = per_class_tables(analysis)
    table = tables["per_class_d_m"].set_index("class")
    assert table.loc["COVID-19", ["roc_auc lower", "roc_auc upper"]].isna().all()
    assert not table.loc["COVID-19", ["f1 lower", "f1 upper"]].isna().any()
    assert not table.loc["Other pneumonia", ["roc_auc lower", "roc_auc upper"]].isna().any()
    assert tables["_shown_per_class_d_m"].set_index("class").loc["COVID-19", "roc_auc"].endswith("[undefined]")
    assert one_patient_rest_sentence(analysis.bootstraps["d"])[0].startswith(
        "COVID-19: the images not of it on this split are one patient's, whom a resample draws or not")
    assert one_patient_rest_sentence(_analysis(_small_split()).bootstraps["d"]) == []


@pytest.mark.parametrize("resamples", [None, 200])
def test_a_class_with_no_image_on_the_split_has_no_recall_or_f1(resamples):
    """No Finding has no image on the split (support 0): its recall and F1 (0 by scikit-learn's zero_division)
    measure nothing: shown as "—", empty in the CSV. Its precision, over the images predicted No Finding, is a
    measurement (0 of 2 right)."""
    y_true = np.array([0, 0, 0, 1, 1, 1])
    evaluation = _evaluation(y_true, np.eye(3)[[0, 0, 2, 1, 1, 2]] * 0.7 + 0.1)
    tables = per_class_tables(_analysis(evaluation, resamples))
    table = tables["per_class_d_m"].set_index("class")
    absent = table.loc["No Finding"]
    assert absent["support"] == 0 and absent["precision"] == 0 and absent["specificity"] == pytest.approx(4 / 6)
    assert absent[[c for c in table.columns if c.startswith(("recall", "f1"))]].isna().all()
    assert table.loc["COVID-19", "recall"] == pytest.approx(2 / 3)
    shown = tables["_shown_per_class_d_m"].set_index("class")
    assert shown.loc["No Finding", "recall"] == "—" and shown.loc["No Finding", "f1"] == "—"
    assert "\nNo Finding,0.0,," in tables["per_class_d_m"].to_csv(index=False)  # precision 0, recall empty
    sentence = " ".join(unmeasurable_sentence(tables["per_class_d_m"]))
    assert sentence.startswith("No Finding: no image on this split (support 0): recall and F1 are not measurable")
    assert "the macro precision, recall and F1 above count it as 0" in sentence
    assert unmeasurable_sentence(per_class_tables(_analysis(_small_split(), resamples))["per_class_d_m"]) == []


@pytest.mark.parametrize("resamples", [None, 200])
def test_a_label_on_every_image_has_no_specificity(resamples):
    """COVID-19 on every image: no image without it, so its specificity is 0/0, which the table showed as 0.000:
    shown "—", empty in the CSV, and said why."""
    y_true = np.array([[1, 0, 1], [1, 1, 0], [1, 0, 0], [1, 1, 1]] * 3)
    evaluation = _evaluation(y_true, np.where(y_true == 1, 0.7, 0.3), multilabel=True)
    evaluation.groups = np.array([f"p{i}" for i in range(len(y_true))])
    tables = per_class_tables(_analysis(evaluation, resamples))
    shown = tables["_shown_per_class_d_m"].set_index("class")
    assert shown.loc["COVID-19", "specificity"] == "—"
    assert shown.loc["No Finding", "specificity"].startswith("1.000")
    assert "\nCOVID-19,1.0,1.0,," in tables["per_class_d_m"].to_csv(index=False)  # specificity empty
    assert " ".join(unmeasurable_sentence(tables["per_class_d_m"])) == (
        "COVID-19: on every image of this split (no image without it): specificity is not measurable (— here, empty "
        "in the CSV). ")


def test_a_roc_auc_no_resample_moves_shows_no_spread():
    """Every image of each label scored above every image without it: each resample keeps both, the ROC AUC is 1 in
    all of them, and the table showed `1.000 [1.00, 1.00]` without a word."""
    y_true = np.array([[1, 0, 1], [1, 1, 0], [0, 0, 0], [0, 1, 1]] * 3)
    evaluation = _evaluation(y_true, np.where(y_true == 1, 0.7, 0.3), multilabel=True)
    evaluation.groups = np.array([f"p{i}" for i in range(len(y_true))])
    tables = per_class_tables(_analysis(evaluation, 200))
    table = tables["per_class_d_m"]
    assert table["roc_auc no spread"].tolist() == [True, True, True]
    assert table[["roc_auc lower", "roc_auc upper"]].isna().all(axis=None)
    assert tables["_shown_per_class_d_m"]["roc_auc"].tolist() == ["1.000 [no spread]"] * 3
    assert ("ROC AUC of COVID-19, Other pneumonia and No Finding is the same in every resample of this split "
            "(`[no spread]`, no interval)") in " ".join(no_spread_sentences(table))

    # No Finding's probability is 0.1 on every image: 0.5 in every resample; COVID-19's moves.
    small = per_class_tables(_analysis(_small_split(), 200))["per_class_d_m"].set_index("class")
    assert small["roc_auc no spread"].tolist() == [False, False, True]
    assert small.loc["No Finding", "roc_auc"] == 0.5 and not np.isnan(small.loc["COVID-19", "roc_auc lower"])
    assert "ROC AUC of No Finding is the same" in " ".join(no_spread_sentences(small.reset_index()))


def _scored(trial_id: str, y_true, predicted, groups) -> Evaluation:
    """A trial's evaluation on the test split with its metrics, beside the majority-class (COVID-19) baseline."""
    from cxrnets.metrics import classification_metrics

    y_true = np.asarray(y_true)
    scores, baseline = np.eye(3)[predicted] * 0.8 + 0.1 / 3, np.tile([0.8, 0.1, 0.1], (len(y_true), 1))
    evaluation = Evaluation(trial_id, 3, "test", {}, y_true, scores, CLASSES, False, {}, np.asarray(groups), baseline)
    evaluation.metrics = {f"test/{k}": v for k, v in classification_metrics(y_true, scores, False).items()}
    evaluation.baseline = {f"test/{k}": v for k, v in classification_metrics(y_true, baseline, False).items()}
    return evaluation


def _compared(cells: dict[str, tuple[Evaluation, float, float]], tie_break: str = "val/loss") -> types.SimpleNamespace:
    """An analysis of dataset d whose models (model -> its trial's evaluation, validation value and tie-break value
    at that epoch) were each chosen on val/f1_macro."""
    selected = [types.SimpleNamespace(dataset="d", model=model, rank=1, evaluation=evaluation,
                                      candidate=types.SimpleNamespace(trial_id=evaluation.trial_id, value=value,
                                                                      tie=tie))
                for model, (evaluation, value, tie) in cells.items()]
    bootstrap = bootstrap_split("d", [chosen.evaluation for chosen in selected], resamples=300)
    settings = types.SimpleNamespace(tie_break=tie_break)
    return types.SimpleNamespace(selected=selected, failed=[], bootstraps={"d": bootstrap}, split="test", mode="max",
                                 metric="val/f1_macro", study=types.SimpleNamespace(settings=settings))


# 8 COVID-19 patients, 4 of Other pneumonia, and No Finding's one patient.
SPLIT_Y = np.r_[np.zeros(8, int), np.ones(4, int), [2, 2]]
SPLIT_GROUPS = np.r_[np.arange(12), [12, 12]]


def test_a_paired_difference_without_interval_is_neither_distinguishable_nor_not():
    """The macro F1's differences have no interval here (a class of one patient): \"not distinguishable\" would
    read as a finding; the table leaves it blank (NA), as it leaves the bounds."""
    right = _scored("t1", SPLIT_Y, SPLIT_Y, SPLIT_GROUPS)
    table = paired_differences(_compared({"alexnet": (right, 0.5, 0.1)}))
    f1 = table[(table["metric"] == "f1_macro") & (table["versus"] == BASELINE)].iloc[0]
    assert np.isnan(f1["lower"]) and pd.isna(f1["distinguishable"])
    accuracy = table[(table["metric"] == "accuracy") & (table["versus"] == BASELINE)].iloc[0]
    assert not pd.isna(accuracy["distinguishable"]) and bool(accuracy["distinguishable"])
    written = table.to_csv(index=False)
    assert "d,f1_macro,alexnet,majority baseline," in written
    assert next(line for line in written.splitlines() if line.startswith("d,f1_macro,alexnet")).endswith(",,,,False")


def test_the_reference_of_tied_models_is_the_one_the_selection_ranks_first():
    """Tied on val/f1_macro, the models are ranked as the selection ranks trials: by the study's --tie-break at
    the chosen epoch (val/loss: lower first), then by trial id; not by the model listed first."""
    right = _scored("t2", SPLIT_Y, SPLIT_Y, SPLIT_GROUPS)
    half = _scored("t1", SPLIT_Y, np.where(np.arange(14) % 2, SPLIT_Y, 0), SPLIT_GROUPS)
    analysis = _compared({"alexnet": (half, 0.5, 0.9), "resnet50": (right, 0.5, 0.4)})
    assert best_model_on_validation(analysis, "d") == "resnet50"
    table = paired_differences(analysis)
    assert set(table.loc[table["versus"] != BASELINE, "model"]) == {"alexnet"}
    assert set(table["versus"]) == {BASELINE, "resnet50 (best on validation)"}
    # Tied on the tie-break too: the lower trial id, alexnet's t1.
    assert best_model_on_validation(_compared({"alexnet": (half, 0.5, 0.4), "resnet50": (right, 0.5, 0.4)}),
                                    "d") == "alexnet"
    # No tie-break (--tie-break none): trial id.
    assert best_model_on_validation(_compared({"alexnet": (right, 0.5, float("nan")),
                                               "resnet50": (half, 0.5, float("nan"))}, tie_break=None),
                                    "d") == "resnet50"


def test_the_selected_trials_table_shows_whether_each_trial_finished():
    """A chosen trial that errored or never ended looked like any other in the table of evaluated trials."""
    trials = pd.DataFrame({"trial_id": ["t1", "t2"], "trial_name": ["n1", "n2"], "config/lr": [0.1, 0.01],
                           "status": ["failed", "completed"]})
    selected = [types.SimpleNamespace(dataset="d", model=model, rank=1, evaluation=_evaluation([0], [[1, 0, 0]]),
                                      candidate=types.SimpleNamespace(trial_id=trial_id, trial_name=name, best_epoch=3,
                                                                      value=0.5))
                for model, trial_id, name in (("alexnet", "t1", "n1"), ("vgg11", "t2", "n2"))]
    analysis = types.SimpleNamespace(trials=trials, selected=selected, failed=[], metric="val/f1_macro", split="test",
                                     bootstraps={})
    table = selected_table(analysis)
    assert table["status"].tolist() == ["failed", "completed"]
    assert list(table.columns[:6]) == ["dataset", "model", "rank", "trial_id", "trial_name", "status"]


def _one_image_per_patient() -> types.SimpleNamespace:
    """An analysis of dataset d as covid-pneumonia-normal's layout makes it (no patient ids: each image its own
    patient), one trial per cell: 3 images of each class, COVID-19 and Other pneumonia all right, No Finding all
    called Other pneumonia; the baseline calls everything COVID-19."""
    y_true = np.repeat([0, 1, 2], 3)
    evaluation = _scored("t1", y_true, np.array([0, 0, 0, 1, 1, 1, 1, 1, 1]), np.arange(9))
    analysis = _compared({"alexnet": (evaluation, 0.5, 0.1)})
    evaluation.epoch = 3
    analysis.selected[0].candidate.trial_name, analysis.selected[0].candidate.best_epoch = "n1", 3
    analysis.trials = pd.DataFrame({"trial_id": ["t1"], "trial_name": ["n1"], "status": ["completed"],
                                    "config/dataset": ["d"], "config/model": ["alexnet"]})
    analysis.top_k, analysis.study.settings.data_roots = 1, {"d": "."}
    return analysis


def test_a_figure_no_resample_moves_shows_no_spread_not_a_zero_width_interval():
    """Each class all right or all wrong on one image per patient: every resample kept each class's images and
    gave the same macro recall, and the tables showed `0.667 [0.67, 0.67]`; accuracy, a proportion of images, has
    its exact interval over the patients instead."""
    from study.analysis.report import no_spread_note
    from study.analysis.report_tables import baseline_tables, comparison_tables
    from study.tables import interval_text

    analysis = _one_image_per_patient()
    cells = selected_table(analysis)
    tables = comparison_tables(analysis, cells)
    accuracy = proportion_interval(np.array([True] * 6 + [False] * 3), np.arange(9))
    assert tables["_shown_comparison_accuracy"].loc[0, "alexnet"] == f"0.667 {interval_text(*accuracy)}"
    recall = tables["_shown_comparison_recall_macro"]
    assert recall.loc[0, "alexnet"] == "0.667 [no spread]"
    assert "no spread" in " ".join(no_spread_note(recall)[0].split())
    assert no_spread_note(tables["_shown_comparison_accuracy"]) == []
    assert bool(tables["comparison_recall_macro"].loc[0, "alexnet no spread"])

    baseline = baseline_tables(analysis)["_shown_majority_baseline"]
    exact = proportion_interval(np.array([True] * 3 + [False] * 6), np.arange(9))
    assert baseline.loc[0, "accuracy"] == f"0.333 {interval_text(*exact)}"
    assert baseline.loc[0, "recall_macro"] == "0.333 [no spread]"
    shown = selected_table(analysis)
    assert "[0.67, 0.67]" not in shown.to_string()
    differences = paired_differences(analysis)
    flat = differences[(differences["metric"] == "recall_macro") & (differences["versus"] == BASELINE)].iloc[0]
    assert bool(flat["no_spread"]) and np.isnan(flat["lower"]) and pd.isna(flat["distinguishable"])


def _searched(statuses: tuple[str, ...] = ("completed",) * 12) -> types.SimpleNamespace:
    """A search over datasets easy (0.9 and up) and hard (0.3 and up), each sampled at one learning rate only (easy
    1e-4, hard 1e-3), each with alexnet and resnet50."""
    from study.space import Dimension

    rows = []
    for dataset, base, lr in (("easy", 0.9, 1e-4), ("hard", 0.3, 1e-3)):
        for model in ("alexnet", "resnet50"):
            for _ in range(3):
                i = len(rows)
                rows.append({"trial_id": f"t{i:02d}", "config/dataset": dataset, "config/model": model,
                             "config/lr": lr, "val/f1_macro": base + 0.01 * i, "status": statuses[i],
                             "epochs_run": 4 if statuses[i] == "completed" else 1})
    dimensions = [Dimension("dataset", "choice", ["easy", "hard"]),
                  Dimension("model", "choice", ["alexnet", "resnet50"]), Dimension("lr", "loguniform", (1e-4, 1e-2))]
    settings = types.SimpleNamespace(data_roots={"easy": ".", "hard": "."},
                                     search_space=lambda: types.SimpleNamespace(dimensions=dimensions))
    return types.SimpleNamespace(trials=pd.DataFrame(rows), study=types.SimpleNamespace(settings=settings),
                                 metric="val/f1_macro", mode="max", selected=[])


def test_the_ablations_are_per_dataset_not_pooled_over_them():
    """Pooled over the datasets, the lr table showed 1e-3 far worse than 1e-4 (best 0.41 against 0.95): the hard
    dataset's difference, as only it tried 1e-3."""
    from study.analysis.report_tables import ablation_tables

    tables = ablation_tables(_searched())
    assert sorted(tables) == ["ablation_lr", "ablation_model"]  # the dataset is what they are split by
    lr = tables["ablation_lr"]
    assert lr[["dataset", "lr", "trials"]].values.tolist() == [["easy", "0.0001", 6], ["hard", "0.001", 6]]
    assert lr["best val/f1_macro"].tolist() == pytest.approx([0.95, 0.41])
    model = tables["ablation_model"].set_index(["dataset", "model"])
    assert model["trials"].tolist() == [3, 3, 3, 3]
    assert model.loc[("easy", "resnet50"), "best val/f1_macro"] == pytest.approx(0.95)
    assert model.loc[("hard", "alexnet"), "best val/f1_macro"] == pytest.approx(0.38)


def test_a_trial_of_unknown_config_gets_no_ablation_row():
    """A trial interrupted before any config of it was on record got a "(not set)" row in every ablation, which
    the report defines as the trials a dimension does not apply to."""
    from study.analysis.report_tables import ablation_tables
    from study.tables import NOT_SET

    searched = _searched()
    unknown = {"trial_id": "t99", "val/f1_macro": np.nan, "status": "unfinished", "epochs_run": 0}
    searched.trials = pd.concat([searched.trials, pd.DataFrame([unknown])], ignore_index=True)
    tables = ablation_tables(searched)
    assert sorted(tables) == ["ablation_lr", "ablation_model"]
    for table in tables.values():
        assert NOT_SET not in table.iloc[:, 1].tolist() and table["trials"].sum() == 12
