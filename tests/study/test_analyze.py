"""study.analyze on a small real study: Ray on CPU, part of the embedded sample, two models, both
optimizers, two learning rates (6 trials of their grid of 8), 2 epochs, ASHA.

Six of the eight grid points leave every model, optimizer and learning rate with at least two
trials. The study is built once for the session (conftest.grid_study); the tests that damage it
(interrupted, corrupt checkpoint, edited split) work on copies whose checkpoints are hard links,
and never write into a linked file.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from PIL import Image
from sklearn.metrics import roc_auc_score

from cxrnets.data import SAMPLE_ROOT
from cxrnets.errors import CxrError, DivergedError
from cxrnets.predict import main as predict_main
from cxrnets.splits import make_split, split_digest
from study.analysis import evaluation as evaluation_module, selection as selection_module
from study.analysis.evaluation import Evaluation, StudyData, evaluate_checkpoint
from study.analysis.figures import plot_confusion, plot_curves, plot_pretrained, plot_reliability, pretrained_pairs
from study.analysis.reading import open_study, search_dimensions
from study.analysis.report import render_markdown
from study.analysis.report_tables import build_tables, confusion_table
from study.analysis.selection import Analysis, Candidate, Selected
from study.analyze import analyze, main
from cxrnets.metrics import calibration as calibration_metrics, classification_metrics
from study.checkpoints import BestWeights
from study.results import read_results
from study.space import parse_space
from study.tables import (NOT_SET, STATUSES, ablation_table, best_epochs, bin_values, comparison_table,
                          format_paper_table, paper_table, rank_key, search_summary, trial_table)

DATASET = "covid-chestxray-3class"
METRIC = "val/f1_macro"
TRIALS = 6
COMPARED = ("accuracy", "precision_macro", "recall_macro", "f1_macro")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def study_dir(grid_study) -> Path:
    """The session's small grid study (conftest.grid_study): 6 trials of 2 epochs, weights of all kept."""
    return grid_study


@pytest.fixture(scope="module")
def evaluated(study_dir):
    """The default analysis (test split, top-1), recording every checkpoint it evaluates."""
    calls = []
    original = selection_module.evaluate_checkpoint

    def recording(path, data, split="test", trial_id="", **options):
        calls.append((trial_id, path, split))
        return original(path, data, split, trial_id, **options)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(selection_module, "evaluate_checkpoint", recording)
        analysis = analyze(study_dir)
    return analysis, calls


def linked_copy(source: Path, target: Path) -> Path:
    """A copy of a study whose files are hard links (checkpoints are hundreds of MB): unlink before writing."""
    shutil.copytree(source, target, copy_function=os.link, ignore=shutil.ignore_patterns("report"))
    return target


def test_size(study_dir):
    """The study the other tests read: 6 trials, each of them at least one epoch."""
    results = read_results(str(study_dir))
    assert results["trial_id"].nunique() == TRIALS
    assert results.groupby("config/model")["trial_id"].nunique().min() >= 2
    assert set(results["config/model"]) == {"alexnet", "resnet50"}
    assert set(results["config/optimizer"]) == {"adam", "sgd"}
    assert set(results["config/lr"]) == {1e-3, 1e-2}


def test_comparison_tables_have_the_paper_shape(evaluated):
    analysis, _ = evaluated
    for metric in COMPARED:
        table = analysis.tables[f"comparison_{metric}"]
        assert list(table.columns) == ["dataset", "alexnet", "resnet50", "alexnet lower", "alexnet upper",
                                       "resnet50 lower", "resnet50 upper"]
        assert list(table["dataset"]) == [DATASET]
        assert table[["alexnet", "resnet50"]].notna().all(axis=None)
        assert ((table[["alexnet", "resnet50"]] >= 0) & (table[["alexnet", "resnet50"]] <= 1)).all(axis=None)
        shown = analysis.tables[f"_shown_comparison_{metric}"]
        assert shown.shape == (1, 3) and "±" not in shown.iloc[0, 1]
        for model in ("alexnet", "resnet50"):  # the interval follows the figure: `0.310 [0.21, 0.41]`
            lower, upper = table.loc[0, f"{model} lower"], table.loc[0, f"{model} upper"]
            if metric in analysis.bootstraps[DATASET].undefined:  # the sample's test split: see the intervals test
                assert shown.loc[0, model] == f"{table.loc[0, model]:.3f} [undefined]"
                continue
            assert 0 <= lower <= upper <= 1
            assert shown.loc[0, model] == f"{table.loc[0, model]:.3f} [{lower:.2f}, {upper:.2f}]"
    assert "accuracy" not in analysis.bootstraps[DATASET].undefined
    # single-label data: no multi-label metrics
    assert "comparison_subset_accuracy" not in analysis.tables
    selected = analysis.tables["selected_trials"]
    assert list(zip(selected["model"], selected["rank"])) == [("alexnet", 1), ("resnet50", 1)]
    for metric in COMPARED:
        for row in selected.to_dict("records"):
            value = analysis.tables[f"comparison_{metric}"].loc[0, row["model"]]
            assert value == pytest.approx(row[f"test/{metric}"])


def test_report_shows_the_majority_class_baseline_on_the_test_split(evaluated, study_dir):
    """The floor next to the comparison: the training split's most frequent class, scored on the test images."""
    analysis, _ = evaluated
    split = pd.read_csv(study_dir / "splits" / f"{DATASET}.csv")
    majority = split.loc[split["split"] == "train", "stratum"].value_counts().idxmax()
    test = split.loc[split["split"] == "test", "stratum"]
    baseline = analysis.tables["majority_baseline"]
    assert list(baseline["dataset"]) == [DATASET]
    assert baseline.loc[0, "accuracy"] == pytest.approx((test == majority).mean())
    assert baseline.loc[0, "recall_macro"] == pytest.approx(1 / split["stratum"].nunique())
    text = (analysis.out / "report.md").read_text()
    assert "### Majority-class baseline" in text
    assert text.index("### Majority-class baseline") < text.index("## Evaluated trials")


def test_curves_draw_the_majority_class_baseline(evaluated, study_dir, tmp_path, monkeypatch):
    """A flat curve on the baseline reads as 'never beat the constant prediction'."""
    from matplotlib.axes import Axes

    analysis, _ = evaluated
    drawn, original = [], Axes.axhline

    def recording(self, y=0, *args, **kwargs):
        drawn.append((y, kwargs.get("label")))
        return original(self, y, *args, **kwargs)

    monkeypatch.setattr(Axes, "axhline", recording)
    plot_curves(analysis, DATASET, tmp_path / "curves.png")
    # always predicting the training majority class: F1 2p/(1+p) on that class (p: its share of
    # validation), 0 on the others, averaged over the classes
    split = pd.read_csv(study_dir / "splits" / f"{DATASET}.csv")
    majority = split.loc[split["split"] == "train", "stratum"].value_counts().idxmax()
    share = (split.loc[split["split"] == "val", "stratum"] == majority).mean()
    baseline = 2 * share / (1 + share) / split["stratum"].nunique()
    assert drawn == [(pytest.approx(baseline), "majority class")] * 2  # one per model panel
    assert (tmp_path / "curves.png").stat().st_size > 0


def test_test_metrics_come_from_the_best_validation_trial(evaluated, study_dir):
    """Only the val-best trial of each cell is evaluated on test, at its best checkpoint; recomputing
    every trial's test metrics shows the table holds the val-best's, whatever the test-best is."""
    analysis, calls = evaluated
    results = read_results(str(study_dir))
    study = open_study(study_dir)
    data = StudyData(study)
    assert {trial_id for trial_id, *_ in calls} == {s.candidate.trial_id for s in analysis.selected}
    assert len(calls) == 2 and all(split == "test" for *_, split in calls)
    tie_break = study.settings.tie_break
    assert tie_break == "val/loss"  # study.run's default
    best = best_epochs(results, METRIC, "max", tie_break)
    for chosen in analysis.selected:
        cell = best[best["config/model"] == chosen.model]
        top = cell[METRIC].max()
        # chosen on validation: the best value of its cell; of trials tied there, the lowest validation loss at
        # their best epoch (as the study's ASHA ranks them), then the lowest trial id
        tied = cell[cell[METRIC] == top].sort_values([tie_break, "trial_id"])
        assert chosen.candidate.trial_id == tied["trial_id"].iloc[0]
        assert chosen.candidate.value == pytest.approx(top)
        own = results[results["trial_id"] == chosen.candidate.trial_id].set_index("epoch")
        assert own.loc[chosen.evaluation.epoch, METRIC] == pytest.approx(top)  # a best-epoch checkpoint
        test_f1 = {}
        for trial_id in cell["trial_id"]:
            evaluation = evaluate_checkpoint(study.weights[trial_id].uri, data, "test", trial_id)
            test_f1[(trial_id, evaluation.epoch)] = evaluation.metrics["test/f1_macro"]
        table_value = analysis.tables["comparison_f1_macro"].loc[0, chosen.model]
        assert table_value == pytest.approx(test_f1[(chosen.candidate.trial_id, chosen.evaluation.epoch)])
        test_best = max(test_f1, key=test_f1.get)
        if test_f1[test_best] > table_value + 1e-9:  # the test-best trial was not chosen: it lost on validation
            assert test_best[0] != chosen.candidate.trial_id or test_best[1] != chosen.evaluation.epoch


def test_ablation_counts_add_up(evaluated, study_dir):
    analysis, _ = evaluated
    results = read_results(str(study_dir))
    trials = analysis.trials
    assert len(trials) == TRIALS
    names = {name.removeprefix("ablation_") for name in analysis.tables if name.startswith("ablation_")}
    assert {"model", "optimizer", "lr", "batch_size", "momentum", "pretrained"} <= names
    for name in names:
        table = analysis.tables[f"ablation_{name}"]
        assert table["trials"].sum() == TRIALS, name
        assert (table[list(STATUSES)].sum(axis=1) == table["trials"]).all(), name
        assert table["epochs"].sum() == len(results), name
    counts = lambda name: dict(zip(analysis.tables[f"ablation_{name}"][name],  # noqa: E731
                                           analysis.tables[f"ablation_{name}"]["trials"]))
    assert counts("lr") == {"0.001": (trials["config/lr"] == 1e-3).sum(), "0.01": (trials["config/lr"] == 1e-2).sum()}
    sgd = (trials["config/optimizer"] == "sgd").sum()
    assert counts("optimizer") == {"adam": TRIALS - sgd, "sgd": sgd}
    assert counts("momentum") == {"0.9": sgd, NOT_SET: TRIALS - sgd}
    assert counts("batch_size") == {"32": TRIALS}
    model = analysis.tables["ablation_model"].set_index("model")
    for name, group in trials.groupby("config/model"):
        assert model.loc[name, f"best {METRIC}"] == pytest.approx(group[METRIC].max())
        assert model.loc[name, f"median {METRIC}"] == pytest.approx(group[METRIC].median())
        stopped = ((group["epochs"] < 2) & (group["status"] != "diverged")).sum()
        assert model.loc[name, "stopped early"] + model.loc[name, "diverged"] == stopped + (
            group["status"] == "diverged").sum()


def test_search_summary(evaluated, study_dir):
    analysis, _ = evaluated
    results = read_results(str(study_dir))
    summary = analysis.summary
    assert summary["trials"] == TRIALS
    assert sum(summary[status] for status in STATUSES) == TRIALS
    assert summary["failed"] == 0 and summary["unfinished"] == 0
    assert summary["epochs spent"] == len(results)
    assert summary["ASHA saving"] == pytest.approx(1 - len(results) / (TRIALS * 2))
    assert summary["stopped early"] == (results.groupby("trial_id")["epoch"].max() < 2).sum()
    assert summary["wall seconds"] > 0


def test_confusion_matrices_sum_to_the_test_split(evaluated, study_dir):
    analysis, _ = evaluated
    split = pd.read_csv(study_dir / "splits" / f"{DATASET}.csv")
    test_size = int((split["split"] == "test").sum())
    classes = ["COVID-19", "Other pneumonia", "No Finding"]
    for model in ("alexnet", "resnet50"):
        confusion = analysis.tables[f"confusion_{DATASET}_{model}"]
        predicted = [f"predicted: {name}" for name in classes]
        assert list(confusion["true class"]) == classes and list(confusion.columns[1:]) == predicted
        assert confusion[predicted].to_numpy().sum() == test_size
        true_counts = confusion[predicted].sum(axis=1).to_numpy()
        per_class = analysis.tables[f"per_class_{DATASET}_{model}"]
        assert list(per_class["class"]) == classes
        assert (per_class["support"].to_numpy() == true_counts).all()
        assert per_class[["precision", "recall", "f1"]].apply(lambda c: c.between(0, 1)).all(axis=None)
        # the per-image table the figures come from: the split's test images, the same confusion matrix
        images = analysis.tables[f"predictions_{DATASET}_{model}"]
        test = split[split["split"] == "test"]
        assert sorted(images["relpath"]) == sorted(test["relpath"])
        assert dict(zip(images["relpath"], images["patient"].astype(str))) == dict(
            zip(test["relpath"], test["patient"].astype(str)))
        crossed = pd.crosstab(images["true"], images["predicted"]).reindex(index=classes, columns=classes,
                                                                             fill_value=0)
        assert (crossed.to_numpy() == confusion[predicted].to_numpy()).all()
        probabilities = images[[f"p({name})" for name in classes]].to_numpy()
        assert np.allclose(probabilities.sum(axis=1), 1, atol=1e-5)
        # specificity from the confusion matrix; each class's AUC from its probability in the per-image table
        matrix = confusion[predicted].to_numpy()
        negatives = test_size - matrix.sum(axis=1)
        called = matrix.sum(axis=0) - np.diag(matrix)
        assert per_class["specificity"].to_numpy() == pytest.approx((negatives - called) / negatives)
        for name, auc in zip(classes, per_class["roc_auc"]):
            members = images["true"] == name
            assert auc == pytest.approx(roc_auc_score(members, images[f"p({name})"]) if 0 < members.sum() < test_size
                                        else np.nan, nan_ok=True)
    # calibration of each chosen model, from the same probabilities, with intervals that hold the point
    calibration = analysis.tables["calibration"].set_index("model")
    assert sorted(calibration.index) == ["alexnet", "resnet50"] and (calibration["images"] == test_size).all()
    for name, high in (("brier", 2.0), ("ece", 1.0), ("classwise ece", 1.0)):
        assert calibration[name].between(0, high).all()
        if name.replace(" ", "_") in analysis.bootstraps[DATASET].undefined:  # a class of one patient (below)
            assert calibration[[f"{name} lower", f"{name} upper"]].isna().all(axis=None)
            continue
        assert (calibration[f"{name} lower"] <= calibration[name]).all() and (
            calibration[name] <= calibration[f"{name} upper"]).all()
    assert (calibration["forecasts"] == "top label").all()
    for model, row in calibration.iterrows():  # calibration in the large: mean confidence against accuracy
        chosen = analysis.best(DATASET, model).evaluation
        assert row["mean probability"] == pytest.approx(chosen.scores.max(axis=1).mean())
        assert row["observed"] == pytest.approx(chosen.metrics["test/accuracy"])
        truth = np.eye(len(chosen.classes))[chosen.y_true]
        assert row["classwise ece"] <= np.abs(chosen.scores - truth).mean() + 1e-9  # binning only cancels gaps


def test_report_files(evaluated, study_dir):
    analysis, _ = evaluated
    report = study_dir / "report"
    assert analysis.out == report
    text = (report / "report.md").read_text()
    for heading in ("## Search summary", "## Comparison (test split)", "### Macro F1", "### Accuracy",
                    "## Ablations", "### lr", "## Confusion matrices", "### ROC curves", "## Calibration (test split)",
                    "## Curves",
                    "## Where the models look (Grad-CAM)"):
        assert heading in text
    assert "## Elsewhere" not in text  # no held-out sources, no external set
    figures = sorted(p.name for p in (report / "figures").iterdir())
    assert figures == sorted([f"confusion_{DATASET}_alexnet.png", f"confusion_{DATASET}_resnet50.png",
                              f"curves_{DATASET}.png", f"gradcam_{DATASET}_alexnet.png",
                              f"gradcam_{DATASET}_resnet50.png", f"reliability_{DATASET}.png",
                              f"roc_{DATASET}.png"])
    for name in figures:
        path = report / "figures" / name
        assert f"](figures/{name})" in text
        assert path.stat().st_size > 5000 and path.read_bytes()[:8] == PNG_MAGIC
        with Image.open(path) as image:
            assert image.size[0] > 300 and image.size[1] > 300
            assert np.asarray(image.convert("L")).std() > 10  # not a blank canvas
    for name, table in analysis.tables.items():
        if name.startswith("_"):
            continue
        from_csv = pd.read_csv(report / "tables" / f"{name}.csv")
        from_parquet = pd.read_parquet(report / "tables" / f"{name}.parquet")
        assert from_csv.shape == table.shape == from_parquet.shape, name
    # Markdown tables render on GitHub: a header separator under every table header
    assert text.count("|:--") + text.count("|--") >= 10
    # a class no test image was predicted as is named, its precision of 0 called a convention
    classes = ["COVID-19", "Other pneumonia", "No Finding"]
    unpredicted = [sum(confusion[[f"predicted: {name}" for name in classes]].sum(axis=0).to_numpy() == 0)
                   for name, confusion in analysis.tables.items() if name.startswith("confusion_")]
    assert text.count("Never predicted on this split: ") == sum(1 for n in unpredicted if n)
    # each cell's chosen model, with the command that runs it on new images: that command works
    commands = re.findall(r"`python -m cxrnets\.predict (\S+) IMAGES_OR_FOLDERS --out predictions\.csv`", text)
    assert sorted(commands) == sorted(c.candidate.weights.uri for c in analysis.selected if c.rank == 1)
    images = [str(path) for path in sorted((SAMPLE_ROOT / "images").iterdir())[:2]]
    assert predict_main([commands[0], *images, "--out", str(report / "predictions.csv")]) == 0
    assert len(pd.read_csv(report / "predictions.csv")) == len(images)


def test_intervals_resample_patients_and_pair_the_comparisons(evaluated, study_dir):
    """Every test figure carries its interval; the paired differences against the baseline and the
    row's model chosen on validation are in a table and, for the study metric, in words."""
    from study.analysis.uncertainty import BASELINE, bootstrap_split, proportion_interval

    analysis, _ = evaluated
    bootstrap = analysis.bootstraps[DATASET]
    split = pd.read_csv(study_dir / "splits" / f"{DATASET}.csv")
    test = split[split["split"] == "test"]
    assert bootstrap.images == len(test) and bootstrap.patients == test["patient"].nunique()
    assert bootstrap.resamples == 2000 and set(bootstrap.samples) == {
        *(c.candidate.trial_id for c in analysis.selected), BASELINE}
    # This subset's test split holds two classes of one patient each, whom a resample holds or not: the averages
    # over classes have no interval; accuracy has.
    patients = test.groupby("stratum")["patient"].nunique()
    assert bootstrap.class_patients == {name: patients.get(name, 0) for name in bootstrap.class_patients}
    alone = [name for name, count in bootstrap.class_patients.items() if count == 1]
    assert len(alone) == 2, "the test reads a split with two classes of one patient"
    assert {"precision_macro", "recall_macro", "f1_macro", "roc_auc_macro"} <= set(bootstrap.undefined)
    assert "accuracy" not in bootstrap.undefined
    # Seeded with the study's seed: the same resamples give the same intervals; accuracy, a proportion of images,
    # has the exact one over its patients.
    again = bootstrap_split(DATASET, [c.evaluation for c in analysis.selected], 2000, seed=bootstrap.seed)
    for chosen in analysis.selected:
        table = analysis.tables["comparison_accuracy"]
        evaluation = chosen.evaluation
        right = evaluation.scores.argmax(axis=1) == evaluation.y_true
        assert (table.loc[0, f"{chosen.model} lower"], table.loc[0, f"{chosen.model} upper"]) == pytest.approx(
            proportion_interval(right, evaluation.groups))
        trial = chosen.candidate.trial_id
        assert np.array_equal(again.samples[trial].summary["accuracy"], bootstrap.samples[trial].summary["accuracy"])
        table = analysis.tables["comparison_f1_macro"]
        assert table[[f"{chosen.model} lower", f"{chosen.model} upper"]].isna().all(axis=None)
    baseline = analysis.tables["majority_baseline"]
    assert baseline.loc[0, "accuracy lower"] <= baseline.loc[0, "accuracy"] <= baseline.loc[0, "accuracy upper"]
    selected = analysis.tables["selected_trials"]
    assert (selected["test/accuracy lower"] <= selected["test/accuracy upper"]).all()
    assert selected["test/f1_macro lower"].isna().all()
    assert "test/loss" not in analysis.tables["_shown_selected_trials"]  # no interval for the mean loss
    per_class = analysis.tables[f"per_class_{DATASET}_resnet50"]
    assert {"precision lower", "recall upper", "f1 lower"} <= set(per_class.columns)
    # each class's test patients, from the split file (its stratum: the class of a single-label image)
    patients = test.groupby("stratum")["patient"].nunique()
    assert per_class["patients"].tolist() == [patients.get(c, 0) for c in per_class["class"]]

    paired = analysis.tables["paired_differences"]
    tie_break = analysis.study.settings.tie_break
    reference = min(analysis.selected, key=lambda c: rank_key(c.candidate.trial_id, c.candidate.value, "max",
                                                               c.candidate.tie, tie_break)).model
    f1 = paired[paired["metric"] == "f1_macro"]
    assert sorted(zip(f1["model"], f1["versus"])) == sorted(
        [("alexnet", BASELINE), ("resnet50", BASELINE)]
        + [(m, f"{reference} (best on validation)") for m in ("alexnet", "resnet50") if m != reference])
    accuracy = paired[paired["metric"] == "accuracy"]
    assert len(accuracy) == len(f1)
    for row in accuracy.to_dict("records"):
        if row["no_spread"]:  # the same in every resample (a model predicting as the baseline does): no interval
            assert np.isnan(row["lower"]) and pd.isna(row["distinguishable"])
            continue
        assert row["lower"] <= row["upper"]
        assert row["distinguishable"] == (row["lower"] > 0 or row["upper"] < 0)
    for row in f1.to_dict("records"):
        assert np.isnan(row["lower"]) and np.isnan(row["upper"]) and pd.isna(row["distinguishable"])
        if row["versus"] == BASELINE:
            chosen = next(c for c in analysis.selected if c.model == row["model"])
            assert row["difference"] == pytest.approx(chosen.evaluation.metrics["test/f1_macro"]
                                                      - chosen.evaluation.baseline["test/f1_macro"])
    text = (analysis.out / "report.md").read_text()
    assert "bootstrap resamples of the split's **patients**" in text
    assert (f"one patient on the split of classes {', '.join(alone)}: a resample holds" in text
            and "Undefined intervals: " in text)
    assert "### Paired differences (Macro F1)" in text
    for row in f1.to_dict("records"):
        assert f"{row['model']} vs {row['versus']}: {row['difference']:+.3f} [undefined], no interval" in text
    assert f"{alone[0]} and {alone[1]}: one patient on this split" in text
    # The other classes have 2 to 9 patients: resampled, with a warning that their averages are too narrow
    few = [f"{name} {count}" for name, count in bootstrap.class_patients.items() if 2 <= count < 10]
    assert few and f"**Few patients:** classes with fewer than 10 patients on the split ({DATASET}: {', '.join(few)})" in text


def test_bootstrap_option(study_dir, tmp_path, capsys):
    for bad in ("50", "-1"):
        assert main([str(study_dir), "--bootstrap", bad, "--out", str(tmp_path / "r")]) == 2
        assert "--bootstrap" in capsys.readouterr().err
    assert main([str(study_dir), "--bootstrap", "0", "--format", "md,csv", "--out", str(tmp_path / "r")]) == 0
    assert list(pd.read_csv(tmp_path / "r" / "tables" / "comparison_f1_macro.csv").columns) == [
        "dataset", "alexnet", "resnet50"]
    assert not (tmp_path / "r" / "tables" / "paired_differences.csv").exists()
    assert "Paired differences" not in (tmp_path / "r" / "report.md").read_text()


def test_a_report_folder_that_cannot_be_written_is_refused_before_evaluating(study_dir, tmp_path, capsys):
    """Before any model is evaluated and before the look at the test split is recorded."""
    looks = set((study_dir / "analyses").glob("*.json"))
    (tmp_path / "a-file").write_text("")
    assert main([str(study_dir), "--out", str(tmp_path / "a-file" / "report")]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and errors[0].startswith(f"error: --out {tmp_path / 'a-file' / 'report'}: cannot write "
                                                     "there (") and errors[0].endswith("pick a folder you can write to")
    assert set((study_dir / "analyses").glob("*.json")) == looks


def test_a_report_folder_in_object_storage_is_refused_as_typed(study_dir, capsys):
    """--out s3://... was taken for a local path ('s3:/cxr/reports/x'), and refused as a folder it could not
    write; the report goes to a local folder, and the error says so, naming the URI as typed."""
    looks = set((study_dir / "analyses").glob("*.json"))
    assert main([str(study_dir), "--out", "s3://cxr/reports/x"]) == 2
    assert capsys.readouterr().err == ("error: --out s3://cxr/reports/x: the report is written to a local folder, not "
                                       "to object storage; pass a local folder (and copy the report to the bucket "
                                       "afterwards if it should be there)\n")
    assert set((study_dir / "analyses").glob("*.json")) == looks


def test_a_report_folder_of_files_the_analysis_did_not_write_is_refused_before_evaluating(study_dir, tmp_path,
                                                                                          capsys):
    """--out into a folder of one's own figures: refused, the figures kept, before any evaluation or look."""
    looks = set((study_dir / "analyses").glob("*.json"))
    (tmp_path / "paper" / "figures").mkdir(parents=True)
    (tmp_path / "paper" / "figures" / "figure1.png").write_bytes(b"mine")
    assert main([str(study_dir), "--out", str(tmp_path / "paper")]) == 2
    assert capsys.readouterr().err.startswith(f"error: --out {tmp_path / 'paper'}: holds figures/figure1.png, which "
                                              "study.analyze did not write")
    assert (tmp_path / "paper" / "figures" / "figure1.png").read_bytes() == b"mine"
    assert set((study_dir / "analyses").glob("*.json")) == looks


def test_another_studys_report_folder_is_refused_before_evaluating(study_dir, tmp_path, capsys):
    """`--out` into the report of another study (as analysis-files.json records it) would replace that report and
    delete its tables and figures: refused, naming both studies, before any evaluation or look."""
    looks = set((study_dir / "analyses").glob("*.json"))
    other = tmp_path / "real3" / "report"
    (other / "tables").mkdir(parents=True)
    (other / "tables" / "per_class_d_m.parquet").write_bytes(b"real3's")
    (other / "analysis-files.json").write_text(json.dumps({
        "written_by": "python -m study.analyze", "study": {"uri": str(tmp_path / "real3"), "name": "real3",
                                                           "created": "2026-12-07 10:40:31"},
        "files": ["tables/per_class_d_m.parquet"]}))
    assert main([str(study_dir), "--out", str(other)]) == 2
    assert capsys.readouterr().err.startswith(
        f"error: --out {other}: holds the report of another study `real3` at {tmp_path / 'real3'}; analysing study "
        f"`{study_dir.name}` ({study_dir}) there would replace it")
    assert (other / "tables" / "per_class_d_m.parquet").read_bytes() == b"real3's"
    assert set((study_dir / "analyses").glob("*.json")) == looks


def test_an_empty_format_list_is_refused_before_evaluating(study_dir, tmp_path, capsys):
    """--format '' would write no table: refused before any model is evaluated and before a look at the test
    split is recorded."""
    looks = set((study_dir / "analyses").glob("*.json"))
    for empty in ("", " , "):
        assert main([str(study_dir), "--format", empty, "--out", str(tmp_path / "report")]) == 2
        assert capsys.readouterr().err == ("error: --format is empty: name what to write, comma-separated from "
                                           "md,csv,parquet,png\n")
    assert set((study_dir / "analyses").glob("*.json")) == looks
    assert not (tmp_path / "report").exists()


def test_cli_top_k_on_validation(study_dir, tmp_path, capsys):
    """--top-k 2 --split val: mean ± std of the 2 best trials per cell; evaluated on validation, each
    checkpoint reproduces the validation metric the study recorded for its epoch."""
    out = tmp_path / "report"
    assert main([str(study_dir), "--top-k", "2", "--split", "val", "--format", "md,csv", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "±" in printed
    assert f"Macro F1 on the val split (mean ± std of the 2 best trials per model, chosen on {METRIC}):" in printed
    selected = pd.read_csv(out / "tables" / "selected_trials.csv")
    assert sorted(selected["rank"]) == [1, 1, 2, 2]
    # the checkpoint evaluated on validation gives what the study recorded for that epoch
    assert selected["val/f1_macro"].to_numpy() == pytest.approx(selected[f"{METRIC} (recorded)"].to_numpy())
    comparison = pd.read_csv(out / "tables" / "comparison_f1_macro.csv")
    assert list(comparison.columns) == ["dataset", "alexnet", "resnet50", "alexnet lower", "alexnet upper",
                                        "alexnet std", "alexnet n", "resnet50 lower", "resnet50 upper",
                                        "resnet50 std", "resnet50 n"]
    for model in ("alexnet", "resnet50"):
        values = selected.loc[selected["model"] == model, "val/f1_macro"]
        assert comparison.loc[0, model] == pytest.approx(values.mean())
        assert comparison.loc[0, f"{model} std"] == pytest.approx(values.std())
    assert not (out / "figures").exists() and not list(out.glob("tables/*.parquet"))
    assert "Comparison (validation split)" in (out / "report.md").read_text()


def _result_parts(study: Path) -> list[tuple[Path, str, int]]:
    parts = []
    for path in sorted((study / "results").glob("*.parquet")):
        row = pq.read_table(path).to_pylist()[0]
        parts.append((path, row["trial_id"], int(row["training_iteration"])))
    return parts


def test_each_look_at_the_test_split_is_recorded_and_reported(study_dir, tmp_path):
    """The same selection again reads the same figures; another (top-2) is a new look, which later
    reports name; a validation analysis is no look at test; a look that cannot be recorded is said."""
    copy = linked_copy(study_dir, tmp_path / "grid")
    shutil.rmtree(copy / "analyses", ignore_errors=True)  # other tests' analyses of the session's study
    quick = dict(formats=("md",), resamples=0, saliency=0, importance="none")

    def header(analysis) -> str:
        return next(line for line in (analysis.out / "report.md").read_text().splitlines()
                    if line.startswith("- Test split:"))

    assert "first read by this analysis" in header(analyze(copy, **quick))
    assert "read by 1 earlier analysis of these same trials" in header(analyze(copy, **quick))
    test_report = (copy / "report" / "report.md").read_text()
    assert analyze(copy, split="val", **quick).out == copy / "report-val"  # a look at validation keeps the test report
    assert (copy / "report" / "report.md").read_text() == test_report
    top2 = analyze(copy, top_k=2, **quick)
    assert "read before for other trials by 2 earlier analyses" in header(top2)
    text = (top2.out / "report.md").read_text()
    assert "### Earlier looks at the test split" in text and text.count("| no ") == 2
    again = analyze(copy, **quick)
    assert "read before for other trials by 1 earlier analysis (see Earlier looks at the test split), and by " \
           "2 earlier analyses of these same trials" in header(again)
    assert len(list((copy / "analyses").glob("*.json"))) == 4  # the validation analysis recorded nothing
    shutil.rmtree(copy / "analyses")
    (copy / "analyses").write_text("a file where the folder should be")
    unrecorded = (analyze(copy, **quick).out / "report.md").read_text()
    assert "could not be recorded at" in unrecorded and "first read by this analysis" in unrecorded


def test_interrupted_study_is_analysed_from_what_it_has(evaluated, study_dir, tmp_path):
    """No trial ends recorded, the val-best resnet50 trial lost the result of its weights' epoch, and
    another trial lost its weights: the analysis uses what is left."""
    analysis, _ = evaluated
    copy = linked_copy(study_dir, tmp_path / "grid")
    shutil.rmtree(copy / "trial_events")
    best = analysis.best(DATASET, "resnet50").candidate
    kept = open_study(copy).weights[best.trial_id].epoch
    for path, trial, iteration in _result_parts(copy):
        if trial == best.trial_id and iteration == kept:  # its weights lose their result
            path.unlink()
    gone = analysis.best(DATASET, "alexnet").candidate.trial_id
    for path in (copy / "weights").glob(f"{gone}.*"):
        path.unlink()
    reached = {}
    for _, trial, iteration in _result_parts(copy):
        reached[trial] = max(reached.get(trial, 0), iteration)

    result = analyze(copy, formats=("md", "csv"))
    summary = result.summary
    assert summary["trials"] == TRIALS and summary["failed"] == 0 and summary["stopped early"] == 0
    assert summary["unfinished"] == sum(reached.get(t, 0) < 2 for t in analysis.trials["trial_id"])
    assert summary["completed"] + summary["unfinished"] == TRIALS  # no end recorded: nothing counts as stopped
    notes = "\n".join(result.notes)
    assert f"its best weights {copy / 'weights' / gone}.pt are missing (--keep all keeps every trial's)" in notes
    assert best.trial_id in notes
    for model, skipped in (("alexnet", gone), ("resnet50", best.trial_id)):
        chosen = result.best(DATASET, model)
        # the next trial of the cell on validation, or the cell marked empty
        assert chosen is None or chosen.candidate.trial_id != skipped
        if chosen is None:
            assert f"{DATASET} / {model}: no trial with a usable checkpoint" in notes
    for name in result.tables:
        if name.startswith("ablation_"):
            assert result.tables[name]["trials"].sum() == TRIALS
    assert (copy / "report" / "report.md").is_file()


def test_corrupt_checkpoint_is_skipped(evaluated, study_dir, tmp_path):
    analysis, _ = evaluated
    copy = linked_copy(study_dir, tmp_path / "grid")
    broken = analysis.best(DATASET, "alexnet").candidate
    path = copy / "weights" / f"{broken.trial_id}.pt"
    path.unlink()  # a hard link: never write into it
    path.write_bytes(b"PK\x03\x04 this is not a checkpoint")
    result = analyze(copy, formats=("csv",))
    notes = "\n".join(result.notes)
    assert broken.trial_id in notes and "not a readable checkpoint" in notes
    chosen = result.best(DATASET, "alexnet")
    assert chosen is not None and chosen.candidate.trial_id != broken.trial_id
    assert result.best(DATASET, "resnet50").candidate.trial_id == analysis.best(DATASET, "resnet50").candidate.trial_id


def test_a_chosen_trial_whose_outputs_are_not_finite_on_test_fails_its_cell(evaluated, study_dir, tmp_path,
                                                                            monkeypatch):
    """The best alexnet on validation gives NaN outputs on the test images: its cell is reported as failed, not
    filled by the next alexnet trial, and every table, figure and comparison goes on without it."""
    analysis, _ = evaluated
    failing = analysis.best(DATASET, "alexnet").candidate.trial_id
    copy = linked_copy(study_dir, tmp_path / "grid")
    shutil.rmtree(copy / "analyses", ignore_errors=True)  # other tests' analyses of the session's study
    original = selection_module.evaluate_checkpoint

    def diverging(path, data, split="test", trial_id="", **options):
        if trial_id == failing:
            raise DivergedError("the model's outputs on evaluation are NaN or infinite (loss nan)")
        return original(path, data, split, trial_id, **options)

    monkeypatch.setattr(selection_module, "evaluate_checkpoint", diverging)
    result = analyze(copy, formats=("md", "csv", "png"), resamples=200, importance="none", saliency=0)
    assert result.best(DATASET, "alexnet") is None
    assert [(f.model, f.rank, f.candidate.trial_id) for f in result.failed] == [("alexnet", 1, failing)]
    assert {c.model for c in result.selected} == {"resnet50"}
    tables = result.out / "tables"
    comparison = pd.read_csv(tables / "comparison_f1_macro.csv")
    assert comparison["alexnet"].isna().all() and comparison["failed on test"].tolist() == ["alexnet"]
    assert result.tables["_shown_comparison_f1_macro"].loc[0, "alexnet"] == "failed on test"
    selected = pd.read_csv(tables / "selected_trials.csv").set_index("trial_id")
    assert f"{copy / 'weights' / failing}.pt: the model's outputs on evaluation are NaN or infinite" in \
        selected.loc[failing, "failed on test"]
    assert selected.loc[failing, "test/f1_macro"] != selected.loc[failing, "test/f1_macro"]  # NaN
    paired = pd.read_csv(tables / "paired_differences.csv")
    assert "alexnet" not in set(paired["model"]) and not paired["versus"].str.startswith("alexnet").any()
    assert not (tables / f"per_class_{DATASET}_alexnet.csv").exists()
    assert (result.out / "figures" / f"confusion_{DATASET}_resnet50.png").exists()
    assert not (result.out / "figures" / f"confusion_{DATASET}_alexnet.png").exists()
    text = (result.out / "report.md").read_text()
    assert f"trial {failing}" in text and "failed on the test split" in text
    assert f"- {DATASET}: alexnet: failed on the test split (trial {failing}): no paired difference" in text
    look = json.loads(next((copy / "analyses").glob("*.json")).read_text())
    assert any(entry.startswith(f"{failing}@") for entry in look["evaluated"][f"{DATASET} / alexnet"])


def test_another_trials_weights_copied_over_a_trials_are_skipped(evaluated, study_dir, tmp_path):
    """Weights whose own config is not their trial's are never reported as that trial's: across models (the
    best alexnet's file replaced by a resnet50's) and within one (the best resnet50's by another resnet50's)."""
    analysis, _ = evaluated
    copy = linked_copy(study_dir, tmp_path / "grid")
    results = read_results(str(copy)).drop_duplicates("trial_id").set_index("trial_id")
    best = {model: analysis.best(DATASET, model).candidate.trial_id for model in ("alexnet", "resnet50")}
    other = next(t for t in results.index[results["config/model"] == "resnet50"] if t != best["resnet50"])
    replaced = {best["alexnet"]: best["resnet50"], best["resnet50"]: other}
    for trial_id, source in replaced.items():
        (copy / "weights" / f"{trial_id}.pt").unlink()  # a hard link: never write into it
        os.link(study_dir / "weights" / f"{source}.pt", copy / "weights" / f"{trial_id}.pt")
    result = analyze(copy, formats=("csv",), resamples=0, importance="none", saliency=0)
    for trial_id in replaced:
        note = "".join(n for n in result.notes if n.startswith(f"trial {trial_id} "))
        assert f"{copy / 'weights' / trial_id}.pt: not this trial's weights: trained with " in note, result.notes
        assert note.endswith("; skipped, the next best trial of its cell takes its place"), note
        assert trial_id not in {chosen.candidate.trial_id for chosen in result.selected}
    assert re.search(r"trained with .*model=resnet50.* where the study's results give the trial .*model=alexnet",
                     "\n".join(result.notes))
    for chosen in result.selected:
        assert chosen.evaluation.config["model"] == chosen.model
        assert chosen.evaluation.config["lr"] == results.loc[chosen.candidate.trial_id, "config/lr"]


def test_weights_a_running_study_rewrites_are_never_paired_with_another_epoch(evaluated, study_dir, tmp_path):
    """A running study rewrote the best alexnet's weights (epoch 2) after the analysis ranked the trial on the
    epoch its sidecar named (1): the report paired epoch 1's validation value with epoch 2's test figures. Now the
    trial is skipped, saying so, and the next alexnet trial takes its place."""
    import torch

    analysis, _ = evaluated
    copy = linked_copy(study_dir, tmp_path / "grid")
    rewritten = analysis.best(DATASET, "alexnet").candidate
    path = copy / "weights" / f"{rewritten.trial_id}.pt"
    checkpoint = torch.load(path, weights_only=True)
    path.unlink()  # a hard link: never write into it
    torch.save({**checkpoint, "epoch": rewritten.epoch + 1}, path)
    result = analyze(copy, formats=("csv",), resamples=0, importance="none", saliency=0)
    note = "".join(n for n in result.notes if n.startswith(f"trial {rewritten.trial_id} "))
    assert (f"{path}: its weights changed since the analysis read them (now of epoch {rewritten.epoch + 1}, "
            f"{METRIC} ") in note, result.notes
    assert note.endswith("the study is still running; analyse again when it ends; skipped, the next best trial of "
                         "its cell takes its place"), note
    assert result.best(DATASET, "alexnet").candidate.trial_id != rewritten.trial_id
    assert all(chosen.evaluation.epoch == chosen.candidate.epoch for chosen in result.selected)


def test_the_evaluations_elsewhere_use_the_weights_evaluated_on_test_not_the_file_again(evaluated, study_dir,
                                                                                         tmp_path):
    """Once a trial's weights are evaluated on test, a running study may replace or delete the file (its --keep
    deletes the weights of trials others overtook): the external evaluation and the Grad-CAM figures read it
    again, and scored other weights than the test figures beside them, or stopped the analysis."""
    from study.analysis.external import parse_externals

    external = tmp_path / "hospital-b"
    (external / "img").mkdir(parents=True)
    rows = ["path,label,patient"]
    for i, label in enumerate(["COVID-19", "COVID-19", "No Finding", "No Finding"]):
        pixels = np.random.default_rng(i).normal(100 + 40 * i, 20, (64, 64)).clip(0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(external / "img" / f"{i}.png")
        rows.append(f"img/{i}.png,{label},p{i}")
    (external / "labels.csv").write_text("\n".join(rows) + "\n")
    copy = linked_copy(study_dir, tmp_path / "grid")
    original = selection_module.evaluate_checkpoint

    def evaluated_then_deleted(path, data, split="test", trial_id="", **options):
        evaluation = original(path, data, split, trial_id, **options)
        Path(path).unlink()
        return evaluation

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(selection_module, "evaluate_checkpoint", evaluated_then_deleted)
        result = analyze(copy, formats=("csv", "png"), resamples=0, importance="none", saliency=1,
                         externals=parse_externals([f"hospital-b=csv:{external / 'labels.csv'}"], None))
    best = [chosen for chosen in result.selected if chosen.rank == 1]
    assert set(result.external["trial_id"]) - {""} == {chosen.candidate.trial_id for chosen in best}
    assert {panel.model for panel in result.saliency} == {chosen.model for chosen in best}


def test_a_study_whose_search_is_unfinished_is_analysed_on_test_only_when_asked(evaluated, study_dir, tmp_path,
                                                                                 capsys):
    """The best alexnet errored in the study: it was chosen, evaluated on test and the look recorded, with no
    word; `study.run --resume` retries it, and the next analysis may choose otherwise: a second look at test. Now
    the test split waits for the study to finish (as study.confirm does), unless asked; the validation split does
    not, and either way the trial's status is shown and noted."""
    from types import SimpleNamespace

    from study.results import ResultsTable

    analysis, _ = evaluated
    failed = analysis.best(DATASET, "alexnet").candidate
    copy = linked_copy(study_dir, tmp_path / "grid")
    shutil.rmtree(copy / "analyses", ignore_errors=True)  # other tests' analyses of the session's study
    ResultsTable(str(copy)).on_trial_error(1, [], SimpleNamespace(trial_id=failed.trial_id, error_file=None))
    quick = ["--format", "csv", "--bootstrap", "0", "--importance", "none", "--saliency", "0"]
    assert main([str(copy), *quick]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {copy}: the study's search is unfinished: 1 errored ({failed.trial_id})"), err
    assert f"python -m study.run --resume {copy}" in err and "--allow-unfinished" in err and "--split val" in err
    assert not (copy / "report").exists() and not (copy / "analyses").exists()

    for split, options in (("val", ["--split", "val"]), ("test", ["--allow-unfinished"])):
        out = tmp_path / f"report-{split}"
        assert main([str(copy), *quick, "--out", str(out), *options]) == 0
        printed = capsys.readouterr().out
        assert (f"note: {DATASET} / alexnet: trial {failed.trial_id} ({failed.trial_name}), chosen on validation, "
                "failed in the study (Tune recorded an error)") in printed
        selected = pd.read_csv(out / "tables" / "selected_trials.csv").set_index("trial_id")
        assert selected.loc[failed.trial_id, "status"] == "failed"
    assert len(list((copy / "analyses").glob("*.json"))) == 1  # the test analysis's look, asked for


def test_edited_split_file_is_refused(study_dir, tmp_path, capsys):
    copy = linked_copy(study_dir, tmp_path / "grid")
    path = copy / "splits" / f"{DATASET}.csv"
    split = pd.read_csv(path, dtype=str, keep_default_na=False)
    path.unlink()
    split.loc[split.index[split["split"] == "test"][0], "split"] = "train"
    split.to_csv(path, index=False)
    assert main([str(copy), "--format", "csv"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: refusing to evaluate") and "edited" in error
    assert not (copy / "report" / "tables" / "selected_trials.csv").exists()


def as_a_study_from_before_split_digests(study: Path) -> None:
    """Make a linked copy that of a study from before split digests: none in its study.json, and its split made as
    such studies made it (in the order the data lists the images, near-identical X-rays not joined)."""
    path = study / "study.json"
    settings = json.loads(path.read_text())
    del settings["split_digests"]
    path.unlink()
    path.write_text(json.dumps(settings))
    path = study / "splits" / f"{DATASET}.csv"
    split = pd.read_csv(path, dtype=str, keep_default_na=False)
    made_then = make_split(split, split["stratum"], settings["val_fraction"], settings["test_fraction"],
                           settings["seed"], in_listed_order=True)
    path.unlink()
    made_then[list(split.columns)].to_csv(path, index=False)


def test_the_study_records_its_splits_digest_and_how_they_joined_near_identical_x_rays(study_dir):
    from cxrnets.fingerprints import FINGERPRINT_SIZE, NEAR_IDENTICAL_BITS

    split = pd.read_csv(study_dir / "splits" / f"{DATASET}.csv", dtype=str, keep_default_na=False)
    settings = open_study(study_dir).settings
    assert settings.split_digests == {DATASET: split_digest(split)}
    assert settings.splits_join_near_identical and settings.splits_near_identical_bits == NEAR_IDENTICAL_BITS
    assert settings.splits_fingerprint_size == FINGERPRINT_SIZE


def test_a_scikit_learn_that_splits_differently_still_analyses_the_study(study_dir, evaluated, tmp_path,
                                                                        monkeypatch):
    """StratifiedGroupKFold's folds for a seed differ between scikit-learn releases (1.7 and 1.9 split the
    sample differently): the analysis of a study made under one must not depend on the release here."""
    def another_release(frame, strata, val_fraction, test_fraction, seed, **options):
        return make_split(frame, strata, val_fraction, test_fraction, seed + 1, **options)

    monkeypatch.setattr(evaluation_module, "make_split", another_release)
    result = analyze(linked_copy(study_dir, tmp_path / "grid"), formats=("csv",))
    analysis, _ = evaluated
    for model in ("alexnet", "resnet50"):
        assert result.best(DATASET, model).candidate.trial_id == analysis.best(DATASET, model).candidate.trial_id
    older = linked_copy(study_dir, tmp_path / "older")
    as_a_study_from_before_split_digests(older)  # checked by making the split again
    with pytest.raises(CxrError, match=r"was edited since .*Or the file is intact and this scikit-learn, "
                                       r"[0-9.]+, splits differently"):
        analyze(older, formats=("csv",))


def test_an_edited_split_of_a_study_from_before_digests_is_refused(study_dir, tmp_path, capsys):
    copy = linked_copy(study_dir, tmp_path / "grid")
    as_a_study_from_before_split_digests(copy)
    path = copy / "splits" / f"{DATASET}.csv"
    split = pd.read_csv(path, dtype=str, keep_default_na=False)
    path.unlink()
    moved = split.index[split["split"] == "test"][0]
    split.loc[moved, "split"] = "train"
    split.to_csv(path, index=False)
    assert main([str(copy), "--format", "csv"]) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"error: refusing to evaluate: {path} was edited since the study made it: 1 image(s) "
                            f"changed split, e.g. {split.loc[moved, 'relpath']} is now in train"), error


def test_changed_test_images_are_refused(study_dir, tmp_path):
    copy = linked_copy(study_dir, tmp_path / "grid")
    data = open_study(copy).settings.data_roots[DATASET]
    changed = tmp_path / "data"
    shutil.copytree(data, changed)
    split = pd.read_csv(copy / "splits" / f"{DATASET}.csv")
    image = changed / split.loc[split["split"] == "test", "relpath"].iloc[0]
    with Image.open(image) as original:
        flipped = original.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        flipped.load()
    image.unlink()
    flipped.save(image, format="PNG")
    with pytest.raises(CxrError, match="refusing to evaluate.*changed content"):
        analyze(copy, data_roots=[str(changed)], formats=("csv",))  # PATH alone: one dataset


def test_a_bad_cache_dir_or_data_root_is_refused_as_itself_not_as_a_changed_split(study_dir, tmp_path, capsys):
    """Only a split that no longer matches the data is called one (test_changed_test_images_are_refused)."""
    looks = set((study_dir / "analyses").glob("*.json"))
    a_file, empty = tmp_path / "a-file", tmp_path / "empty"
    a_file.write_text("")
    empty.mkdir()
    assert main([str(study_dir), "--cache-dir", str(a_file), "--out", str(tmp_path / "r")]) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"error: --cache-dir {a_file}: cannot keep the image cache there ("), error
    assert main([str(study_dir), "--data-root", str(a_file), "--out", str(tmp_path / "r")]) == 2
    error = capsys.readouterr().err
    assert error == f"error: {a_file}: is a file, not a folder; pass the {DATASET} dataset's folder as --data-root\n"
    assert main([str(study_dir), "--data-root", str(empty), "--out", str(tmp_path / "r")]) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"error: {empty}: ") and "split" not in error, error
    assert set((study_dir / "analyses").glob("*.json")) == looks
    assert not (tmp_path / "r" / "report.md").exists()


def test_a_label_map_without_an_external_set_is_refused(tmp_path, capsys):
    """--label-map with no --external was accepted and did nothing (the study's own sets keep its class names)."""
    assert main([str(tmp_path), "--label-map", "No finding=No Finding"]) == 2
    assert capsys.readouterr().err.startswith("error: --label-map applies to --external sets, and none is given")


def test_bad_input(tmp_path, capsys):
    assert main([str(tmp_path)]) == 2
    assert "not a study directory" in capsys.readouterr().err
    assert main([str(tmp_path / "absent")]) == 2
    assert "no such study directory" in capsys.readouterr().err
    (tmp_path / "study.json").write_text("{not json")
    assert main([str(tmp_path)]) == 2
    assert "not a readable study settings file" in capsys.readouterr().err


def test_ctrl_c_says_what_was_kept(study_dir, capsys, monkeypatch):
    import study.analyze

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(study.analyze, "analyze", interrupted)
    assert main([str(study_dir)]) == 130
    err = capsys.readouterr().err
    assert err.startswith("interrupted: no complete report; run the same command again") and "Traceback" not in err


def test_study_without_a_finished_epoch(study_dir, tmp_path, capsys):
    copy = tmp_path / "grid"
    copy.mkdir()
    shutil.copy(study_dir / "study.json", copy / "study.json")
    shutil.copytree(study_dir / "splits", copy / "splits")
    assert main([str(copy)]) == 2
    assert "no trial has finished an epoch" in capsys.readouterr().err
    assert main([str(study_dir), "--metric", "test/f1_macro"]) == 2
    assert "validation metric" in capsys.readouterr().err



@pytest.mark.parametrize("name", ["covid-chestxray", "bogus"])
def test_a_data_root_for_another_dataset_is_refused(study_dir, tmp_path, capsys, name):
    """A dataset of other studies, or no dataset at all (`bogus=/tmp` was read as the path <cwd>/bogus=/tmp)."""
    assert main([str(study_dir), "--out", str(tmp_path / "report"), "--data-root", f"{name}={tmp_path}"]) == 2
    assert (f"error: --data-root '{name}={tmp_path}': {name} is not this study's dataset; write PATH alone, or "
            f"{DATASET}=PATH") in capsys.readouterr().err
    assert not (tmp_path / "report").exists()


# ------------------------------------------------------------------ pure functions, no study needed

def test_the_printed_comparison_says_what_its_cells_are():
    """With --top-k 2 the header said "best trial per model" above means of two trials."""
    from study.analyze import comparison_heading

    assert comparison_heading("test", METRIC, 1) == (f"Macro F1 on the test split (best trial per model, chosen on "
                                                     f"{METRIC}):")
    assert comparison_heading("val", METRIC, 2) == (f"Macro F1 on the val split (mean ± std of the 2 best trials per "
                                                    f"model, chosen on {METRIC}):")


def _results(rows: list[dict]) -> pd.DataFrame:
    frame = pd.DataFrame(rows)
    frame["training_iteration"] = frame["epoch"]
    frame["trial_name"] = frame["trial_id"]
    frame["time_this_iter_s"] = 1.0
    frame["timestamp"] = np.arange(len(frame)) + 1000
    return frame


def test_trial_status_and_search_summary():
    rows = []
    for trial, epochs, extra in (("a", 3, {}), ("b", 1, {}), ("c", 2, {"diverged": 1}), ("d", 2, {}),
                                 ("e", 1, {})):
        for epoch in range(1, epochs + 1):
            last = epoch == epochs
            rows.append({"trial_id": trial, "epoch": epoch, METRIC: 0.1 * epoch + (0.5 if trial == "a" else 0),
                         "diverged": extra.get("diverged", 0) if last else 0, "config/lr": 1e-3})
    events = pd.DataFrame({"trial_id": ["a", "b", "c", "d"], "event": ["completed", "completed", "completed", "error"],
                           "timestamp": [1.0, 2.0, 3.0, 4.0], "error_file": ""})
    trials = trial_table(_results(rows), events, METRIC, "max", 3, configs={"f": {"lr": 0.1}})
    status = dict(zip(trials["trial_id"], trials["status"]))
    assert status == {"a": "completed", "b": "stopped early", "c": "diverged", "d": "failed",
                      "e": "unfinished", "f": "unfinished"}
    assert trials.set_index("trial_id").loc["a", "best_epoch"] == 3
    summary = search_summary(trials, 3)
    assert summary["trials"] == 6 and summary["epochs spent"] == 9
    # Only b's 2 epochs were ASHA's to save; c diverged, d failed, e and f are unfinished: 1 + 1 + 2 + 3 epochs.
    assert summary["ASHA saving"] == pytest.approx(2 / 18) and summary["epochs not run otherwise"] == 7
    table = ablation_table(trials, "lr", METRIC, "max", scale="log")
    assert list(table["lr"]) == ["1e-03 – 1e-02", "1e-01 – 1e00"]
    assert table["trials"].sum() == 6 and table.loc[0, f"best {METRIC}"] == pytest.approx(0.8)


def test_binning():
    lrs = pd.Series([1e-4, 3e-4, 2e-3, 5e-3, 0.02, 0.05, 0.09, None])
    labels, order = bin_values(lrs, scale="log")
    assert order == ["1e-04 – 1e-03", "1e-03 – 1e-02", "1e-02 – 1e-01", NOT_SET]
    assert list(labels[:3]) == ["1e-04 – 1e-03", "1e-04 – 1e-03", "1e-03 – 1e-02"]
    # no scale given: many distinct values spanning decades are binned per decade too
    assert bin_values(lrs.dropna())[1] == order[:-1]
    momentum = pd.Series(np.linspace(0.8, 0.99, 10))
    labels, order = bin_values(momentum, scale="linear")
    assert len(order) == 4 and labels.value_counts().sum() == 10
    assert bin_values(pd.Series([True, False, True]))[1] == ["false", "true"]
    assert bin_values(pd.Series([16, 32, 16]))[1] == ["16", "32"]
    # a choice of seven batch sizes (a factor 64 apart) is seven rows, not decades that merge 16, 32 and 64
    batch_sizes = pd.Series([8, 16, 32, 64, 128, 256, 512, 16, 32])
    assert bin_values(batch_sizes, scale="categorical")[1] == ["8", "16", "32", "64", "128", "256", "512"]


def test_a_choice_of_numbers_is_categorical_in_the_ablations(study_dir):
    study = open_study(study_dir)
    scales = dict(search_dimensions(study, study.results))
    assert scales["lr"] == "categorical" and scales["model"] == "categorical"  # the grid's choices


def test_paper_table_with_top_k():
    cells = pd.DataFrame({"dataset": ["d1", "d1", "d1", "d2"], "model": ["alexnet", "alexnet", "resnet50", "alexnet"],
                          "f1_macro": [0.8, 0.6, 0.5, 0.9]})
    mean, std, count = paper_table(cells, "f1_macro", ["alexnet", "resnet50"])
    assert mean.loc["d1", "alexnet"] == pytest.approx(0.7) and count.loc["d2", "resnet50"] == 0
    shown = format_paper_table(mean, std, count, top_k=2)
    assert list(shown.columns) == ["dataset", "alexnet", "resnet50"]
    assert shown.loc[0, "alexnet"] == "0.700 ± 0.141" and shown.loc[0, "resnet50"] == "0.500 (n=1)"  # no spread
    assert shown.loc[1, "resnet50"] == "—"


def test_multilabel_confusion_and_pretrained_figure(tmp_path):
    rng = np.random.default_rng(0)
    y_true = rng.integers(0, 2, (20, 3))
    evaluation = Evaluation("t", 2, "test", {}, y_true, rng.random((20, 3)), ["A", "B", "C"], True, {},
                            groups=np.arange(20), baseline_scores=np.zeros((20, 3)))
    table = confusion_table(evaluation)
    assert list(table.columns) == ["label", "TN", "FP", "FN", "TP"]
    assert (table[["TN", "FP", "FN", "TP"]].sum(axis=1) == 20).all()
    plot_confusion(evaluation, "multi-label", tmp_path / "ml.png")
    assert (tmp_path / "ml.png").read_bytes()[:8] == PNG_MAGIC
    plot_reliability([types.SimpleNamespace(model="alexnet", evaluation=evaluation)], "multi-label", "test",
                     tmp_path / "reliability.png")
    assert (tmp_path / "reliability.png").stat().st_size > 5000

    rows = []
    for trial, model, pretrained, scores in (("p1", "resnet50", True, [0.5, 0.7]), ("s1", "resnet50", False, [0.3, 0.4]),
                                             ("s2", "resnet50", False, [0.35, 0.45]), ("a1", "alexnet", False, [0.2])):
        for epoch, score in enumerate(scores, 1):
            rows.append({"trial_id": trial, "epoch": epoch, METRIC: score, "config/dataset": "d",
                         "config/model": model, "config/pretrained": pretrained})
    results = _results(rows).assign(dataset=lambda f: f["config/dataset"], model=lambda f: f["config/model"])
    pairs = pretrained_pairs(results, METRIC, "max")
    assert pairs == {("d", "resnet50"): {True: "p1", False: "s2"}}
    study = types.SimpleNamespace(results=results, settings=types.SimpleNamespace(data_roots={"d": "."}))
    analysis = Analysis(study, METRIC, "max", "test", 1, pd.DataFrame())
    plot_pretrained(analysis, "d", pairs, tmp_path / "pretrained.png")
    assert (tmp_path / "pretrained.png").stat().st_size > 5000


def test_multilabel_tables():
    """A multi-label dataset gets label-wise accuracy, subset accuracy, micro/macro F1 and macro ROC AUC
    tables, and per-label 2x2 confusion counts."""
    rng = np.random.default_rng(1)
    rows = [{"trial_id": trial, "epoch": epoch, METRIC: 0.1 * epoch + offset, "config/dataset": "covid-chestxray",
             "config/model": model, "diverged": 0}
            for trial, model, offset in (("t1", "alexnet", 0.1), ("t2", "resnet50", 0.2)) for epoch in (1, 2)]
    results = _results(rows)
    events = pd.DataFrame({"trial_id": ["t1", "t2"], "event": "completed", "timestamp": 1.0, "error_file": ""})
    trials = trial_table(results, events, METRIC, "max", 2)
    settings = types.SimpleNamespace(
        name="ml", created="now", space_source="x.yaml", data_roots={"covid-chestxray": "."}, tie_break="val/loss",
        search_space=lambda: parse_space({"search": {"model": {"choice": ["alexnet", "resnet50"]}}}))
    study = types.SimpleNamespace(uri="/nowhere", settings=settings, results=results, events=events)
    analysis = Analysis(study, METRIC, "max", "test", 1, trials, summary=search_summary(trials, 2))
    classes = ["COVID-19", "Pneumonia", "Viral"]
    for trial, model in (("t1", "alexnet"), ("t2", "resnet50")):
        y_true, scores = rng.integers(0, 2, (12, 3)), rng.random((12, 3))
        metrics = {f"test/{k}": v for k, v in classification_metrics(y_true, scores, True).items()}
        candidate = Candidate(trial, trial, BestWeights(trial, 2, METRIC, 0.4, 1, "x"), 2, 0.4, 2, 0.4)
        evaluation = Evaluation(trial, 2, "test", metrics, y_true, scores, classes, True, {},
                                groups=np.arange(12) // 2, baseline_scores=np.zeros((12, 3)))
        analysis.selected.append(Selected("covid-chestxray", model, 1, candidate, evaluation))
    build_tables(analysis)
    for metric in ("accuracy", "subset_accuracy", "f1_micro", "f1_macro", "roc_auc_macro"):
        table = analysis.tables[f"comparison_{metric}"]
        assert list(table.columns) == ["dataset", "alexnet", "resnet50"] and list(table["dataset"]) == [
            "covid-chestxray"]
    confusion = analysis.tables["confusion_covid-chestxray_alexnet"]
    assert list(confusion["label"]) == classes and (confusion[["TN", "FP", "FN", "TP"]].sum(axis=1) == 12).all()
    assert "roc_auc" in analysis.tables["per_class_covid-chestxray_resnet50"].columns
    # calibration: each (image, label) a forecast of the label's presence
    calibration = analysis.tables["calibration"].set_index("model")
    assert sorted(calibration.index) == ["alexnet", "resnet50"] and (calibration["forecasts"] == "each label").all()
    for selected in analysis.selected:
        row = calibration.loc[selected.model]
        y_true, scores = selected.evaluation.y_true, selected.evaluation.scores
        assert row["brier"] == pytest.approx(((scores - y_true) ** 2).mean())
        assert (row["mean probability"], row["observed"]) == pytest.approx((scores.mean(), y_true.mean()))
        each_label = [calibration_metrics(y_true[:, [k]], scores[:, [k]], multilabel=True)["ece"][0]
                      for k in range(3)]
        assert row["classwise ece"] == pytest.approx(np.mean(each_label))  # each label alike, not pooled
    text = render_markdown(analysis, ("md",))
    assert "### Subset accuracy (multi-label)" in text and "### Macro ROC AUC" in text
    assert "multi-label, one per image and label" in text and "single-label, one per image" not in text


def test_run_summary_uses_the_same_comparison(evaluated, study_dir):
    """study.run prints study.tables.comparison_table; the report's validation table is that table."""
    analysis, _ = evaluated
    results = read_results(str(study_dir))
    settings = analysis.study.settings
    expected = comparison_table(results, METRIC, "max", tie_break=settings.tie_break,
                                searched=settings.search_space().searched_keys())
    pd.testing.assert_frame_equal(analysis.tables["validation_best"], expected)
    chosen = {s.model: s.candidate.trial_name for s in analysis.selected}
    assert chosen == dict(zip(expected["model"], expected["trial_name"]))


@pytest.mark.parametrize("argv", [["--help"], ["some-study", "--top-k", "0"], ["some-study", "--format", "pdf"],
                                  ["some-study", "--format", ""]])
def test_help_and_option_errors_answer_without_loading_torch_ray_or_optuna(argv):
    """--help and a bad option answer at once (loading torch for the evaluations took 4-5 s here)."""
    code = ("import sys\nfrom study.analyze import main\ntry:\n    code = main(sys.argv[1:])\n"
            "except SystemExit as exit:\n    code = exit.code\n"
            "print('exit', code, sorted(m for m in ('torch', 'ray', 'optuna') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=60)
    assert done.stdout.splitlines()[-1] == f"exit {0 if argv == ['--help'] else 2} []", done.stdout + done.stderr
    if argv != ["--help"]:
        assert done.stderr.startswith(f"error: {argv[1]} ")


@pytest.mark.parametrize("broken", ["split removed", "data gone"])
def test_the_split_and_the_data_are_checked_before_any_weights_are_fetched(study_dir, tmp_path, monkeypatch, broken):
    """A study in a bucket whose split file was missing had every evaluated weights file downloaded (gigabytes with
    VGG11 and --top-k 3) before the analysis said `the study's split is missing`: the splits, and the data against
    them, are now read before any weights."""
    copy = linked_copy(study_dir, tmp_path / "grid")
    shutil.rmtree(copy / "analyses", ignore_errors=True)
    roots = None
    if broken == "split removed":
        (copy / "splits" / f"{DATASET}.csv").unlink()
    else:
        roots = [f"{DATASET}={tmp_path / 'nowhere'}"]

    def no_weights(*args, **kwargs):
        raise AssertionError("weights fetched or loaded before the split was checked")

    monkeypatch.setattr(StudyData, "prefetch", no_weights)
    monkeypatch.setattr(StudyData, "fetch", no_weights)
    monkeypatch.setattr(evaluation_module, "load_checkpoint", no_weights)
    with pytest.raises(CxrError, match="the study's split is missing" if broken == "split removed"
                       else "no data at .*nowhere on this machine"):
        analyze(copy, formats=("csv",), resamples=0, importance="none", saliency=0, data_roots=roots)
