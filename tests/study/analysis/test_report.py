"""The report's text and header: what the intervals, the split and the loss mean for the figures shown."""

from __future__ import annotations

import json
import types

import numpy as np
import pandas as pd
import pytest

from cxrnets.errors import CxrError
from study.analysis.confirmation import Confirmation, SeedRun
from study.analysis.evaluation import Evaluation
from study.analysis.report import (absent_classes_note, calibration_section, header_lines, seed_section,
                                   uncertainty_paragraph, write_report)
from study.confirm import ConfirmJob
from study.tables import COMPLETED, DIVERGED, FAILED, UNFINISHED
from study.analysis.uncertainty import BASELINE, bootstrap_split, percentile_interval

CLASSES = ["COVID-19", "Other pneumonia", "No Finding"]


def _evaluation(y_true, groups, trial_id: str = "t1") -> Evaluation:
    """Every image predicted right, beside the majority-class (COVID-19) baseline."""
    y_true = np.asarray(y_true)
    scores = np.eye(3)[y_true] * 0.8 + 0.05
    images = pd.DataFrame({"relpath": [f"images/{i}.png" for i in range(len(y_true))], "patient": groups})
    return Evaluation(trial_id, 3, "test", {}, y_true, scores, CLASSES, False, {}, np.asarray(groups),
                      np.tile([0.8, 0.1, 0.1], (len(y_true), 1)), images=images)


# COVID-19 patients bring 1 to 4 images each: the images per class change with the patients drawn.
Y_TRUE = [0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2]
GROUPS = ["a", "a", "a", "a", "b", "c", "c", "d", "e", "e", "f", "g", "h", "h", "i", "j", "k", "k"]


def test_the_interval_paragraph_says_the_patients_per_class_stay_fixed_not_the_images():
    bootstrap = bootstrap_split("d", [_evaluation(Y_TRUE, GROUPS)], resamples=500)
    lower, upper = percentile_interval(bootstrap.samples[BASELINE].summary["accuracy"])
    assert upper - lower > 0.1  # a constant predictor's accuracy moves
    text = uncertainty_paragraph(types.SimpleNamespace(bootstraps={"d": bootstrap}, top_k=1))
    assert "class mix fixed" not in text and "barely moves" not in text
    assert "number of patients of each stratum, and every class of two patients or more" in text
    assert "It keeps patients, not images" in text
    assert "still moves with the images each drawn patient brings" in text
    assert "A patient here is a patient id, or several joined where they share an image file or a near-identical" \
        in text  # the count ("18 images of 11 patients") can be below the split's patient ids


def test_a_dataset_without_patient_ids_is_said_to_be_resampled_by_image(make_pneumonia_normal):
    """covid-pneumonia-normal names no patients (each image is its own): its intervals count the same person's X-rays
    as independent, and the report says so rather than "images of one patient are correlated"."""
    from cxrnets.data import load_dataset

    index = load_dataset("covid-pneumonia-normal", make_pneumonia_normal(per_class=4))
    y_true = index.targets()
    images = index.frame[["relpath", "patient"]]
    evaluation = Evaluation("t1", 3, "test", {}, y_true, np.eye(3)[y_true] * 0.8 + 0.05, list(index.classes), False,
                            {}, images["patient"].to_numpy(), np.tile([0.8, 0.1, 0.1], (len(y_true), 1)),
                            images=images)
    without_ids = bootstrap_split("covid-pneumonia-normal", [evaluation], resamples=200)
    with_ids = bootstrap_split("d", [_evaluation(Y_TRUE, GROUPS)], resamples=200)

    text = uncertainty_paragraph(types.SimpleNamespace(bootstraps={"covid-pneumonia-normal": without_ids},
                                                       top_k=1))
    assert "12 images of 12 patients" not in text and "images of one patient are correlated" not in text
    assert "covid-pneumonia-normal: 12 images, no patient ids" in text
    assert "resampled by image" in text and "count as independent" in text and "optimistic" in text
    assert "accuracy still move" not in text  # one image per unit: a constant predictor's accuracy stays put

    both = uncertainty_paragraph(types.SimpleNamespace(bootstraps={"d": with_ids,
                                                                   "covid-pneumonia-normal": without_ids}, top_k=1))
    assert "d: 18 images of 11 patients" in both and "covid-pneumonia-normal: 12 images, no patient ids" in both
    assert "images of one patient are correlated" in both and "optimistic" in both


def _analysis(split: str = "test", top_k: int = 1, selected=(), keep: int | str = 1,
              split_notes: dict[str, str] | None = None) -> types.SimpleNamespace:
    settings = types.SimpleNamespace(created="2026-01-01 00:00:00", space_source="demo.yaml", data_roots={"d": "/data"},
                                     keep=keep)
    return types.SimpleNamespace(study=types.SimpleNamespace(uri="/studies/s", settings=settings), split=split,
                                 metric="val/f1_macro", mode="max", top_k=top_k, selected=list(selected), look=None,
                                 split_notes=split_notes or {})


def test_a_report_on_the_validation_split_says_its_figures_are_optimistic():
    header = "\n".join(header_lines(_analysis("val")))
    assert "evaluated once on the **validation** split" in header
    assert "chosen on this validation split, so its figures favour them" in header
    assert "test split (`--split test`, the default) gives the unbiased ones" in header
    assert "Optimistic" not in "\n".join(header_lines(_analysis("test")))


def _cells(*counts: int) -> list[types.SimpleNamespace]:
    """Evaluated trials: `counts[i]` of model m{i}."""
    return [types.SimpleNamespace(dataset="d", model=f"m{i}", rank=rank)
            for i, count in enumerate(counts) for rank in range(1, count + 1)]


def test_the_header_says_how_many_trials_the_cells_hold():
    def line(analysis):
        return next(text for text in header_lines(analysis) if text.startswith("- Trials chosen"))

    assert line(_analysis(top_k=2, selected=_cells(2, 2), keep=2)).endswith(
        "; cells are the mean ± std of the 2 best trials")
    assert line(_analysis(top_k=2, selected=_cells(1, 1), keep=1)).endswith(
        "; cells are the mean ± std of up to 2 best trials (here 1: the study kept the weights of 1 trial per "
        "model (--keep 1))")
    assert line(_analysis(top_k=3, selected=_cells(1, 3), keep="all")).endswith(
        "of up to 3 best trials (here 1 to 3: see the notes)")
    assert "mean ± std" not in line(_analysis(top_k=1, selected=_cells(1, 1)))


def _calibrated(*cells: tuple[str, dict, bool]) -> types.SimpleNamespace:
    """An analysis whose chosen models (model, trained config, multi-label) have a calibration table."""
    selected = [types.SimpleNamespace(dataset="d", model=model, rank=1,
                                      evaluation=types.SimpleNamespace(config=config, multilabel=multilabel))
                for model, config, multilabel in cells]
    table = pd.DataFrame({"model": [model for model, *_ in cells],
                          "forecasts": ["each label" if multilabel else "top label" for *_, multilabel in cells]})
    return types.SimpleNamespace(selected=selected, bootstraps={}, figures={},
                                 tables={"calibration": table, "_shown_calibration": table})


def test_the_calibration_section_says_where_the_loss_was_class_weighted():
    weighted = "\n".join(calibration_section(_calibrated(("alexnet", {"balance_classes": True}, False),
                                                          ("vgg11", {}, False)), "test", False))
    assert "Every model here was trained with a class-weighted cross-entropy" in weighted
    assert "a rare class's probability runs above how often it comes true" in weighted
    mixed = "\n".join(calibration_section(_calibrated(("alexnet", {"balance_classes": True}, False),
                                                       ("vgg11", {"balance_classes": False}, False)), "test", False))
    assert "d / alexnet was trained with a class-weighted cross-entropy" in mixed
    for plain in (("alexnet", {"balance_classes": False}, False), ("alexnet", {}, True)):  # multi-label: unweighted
        assert "class-weighted" not in "\n".join(calibration_section(_calibrated(plain), "test", False))


def _study(uri: str = "/studies/demo", name: str = "demo", created: str = "2026-12-01 09:00:00"):
    return types.SimpleNamespace(uri=uri, settings=types.SimpleNamespace(name=name, created=created))


def _written(out, *tables: str, study=None, split: str = "test",
             formats: tuple[str, ...] = ("csv", "parquet")) -> types.SimpleNamespace:
    """A report of these tables into `out`, of `study` (default: _study()) on `split`."""
    analysis = types.SimpleNamespace(out=out, files=[], tables={name: pd.DataFrame({"x": [1]}) for name in tables},
                                     study=study or _study(), split=split)
    write_report(analysis, formats)
    return analysis


def test_a_rerun_replaces_its_own_earlier_files_and_leaves_the_users_alone(tmp_path):
    """The earlier report's table of a model no longer there goes; files the analysis never wrote stay."""
    _written(tmp_path, "comparison_f1_macro", "per_class_d_gone")
    (tmp_path / "notes.md").write_text("mine")
    (tmp_path / "tables" / "README.txt").write_text("mine")
    _written(tmp_path, "comparison_f1_macro")
    assert sorted(p.name for p in (tmp_path / "tables").iterdir()) == [
        "README.txt", "comparison_f1_macro.csv", "comparison_f1_macro.parquet"]
    assert (tmp_path / "notes.md").read_text() == "mine"


def test_a_report_that_replaces_another_split_s_or_deletes_its_files_says_so(tmp_path, caplog):
    """A quick `--split val --format csv` into the folder of the full test report deleted the test report's other
    files, and nothing said so."""
    tables = [f"per_class_d_model{i}" for i in range(3)]
    _written(tmp_path, "comparison_f1_macro", *tables)
    assert json.loads((tmp_path / "analysis-files.json").read_text())["split"] == "test"
    with caplog.at_level("WARNING", logger="study.analyze"):
        _written(tmp_path, "comparison_f1_macro", *tables)  # the same report again: nothing to say
        assert caplog.records == []
        _written(tmp_path, "comparison_f1_macro", split="val", formats=("csv",))
    (record,) = caplog.records
    assert record.levelname == "WARNING"
    assert record.getMessage() == (
        f"{tmp_path}: this report of the val split replaced the earlier report there, of the test split, and "
        "deleted 7 of its files that it does not write again (tables/comparison_f1_macro.parquet, "
        "tables/per_class_d_model0.csv, tables/per_class_d_model0.parquet and 4 more); to keep a report, give the "
        "next analysis another --out")
    caplog.clear()
    with caplog.at_level("WARNING", logger="study.analyze"):
        _written(tmp_path, "comparison_f1_macro", split="test", formats=("csv",))  # a whole report of the other split
    assert [record.getMessage() for record in caplog.records] == [
        f"{tmp_path}: this report of the test split replaced the earlier report there, of the val split; to "
        "keep a report, give the next analysis another --out"]


@pytest.mark.parametrize("theirs", ["tables/results.csv", "figures/plot.png", "report.md"])
def test_a_report_folder_holding_files_the_analysis_did_not_write_is_refused(tmp_path, theirs):
    """--out into a folder of the user's own tables or figures would have deleted them."""
    _written(tmp_path, "comparison_f1_macro")
    (tmp_path / theirs).parent.mkdir(exist_ok=True)
    (tmp_path / theirs).write_text("mine")
    with pytest.raises(CxrError, match=rf"--out {tmp_path}: holds {theirs}, which study.analyze did not write"):
        _written(tmp_path, "comparison_f1_macro")
    assert (tmp_path / theirs).read_text() == "mine"


def test_a_report_of_an_analysis_from_before_the_list_of_its_files_is_replaced(tmp_path):
    """The default --out, <study>/report, of a study analysed before analysis-files.json existed holds that
    analysis's report.md, tables and figures: its own, replaced, not refused."""
    (tmp_path / "tables").mkdir()
    (tmp_path / "tables" / "per_class_d_gone.csv").write_text("x\n1\n")
    (tmp_path / "report.md").write_text("# Study `demo`: analysis\n\n- Study directory: `/studies/demo`\n"
                                        "- Generated 2026-12-01 10:00:00 by `python -m study.analyze`\n")
    _written(tmp_path, "comparison_f1_macro")
    assert sorted(p.name for p in (tmp_path / "tables").iterdir()) == ["comparison_f1_macro.csv",
                                                                      "comparison_f1_macro.parquet"]


def test_another_studys_report_is_refused_naming_both_studies(tmp_path):
    """`python -m study.analyze studies/tiny --out studies/real3/report` replaced real3's report, deleting its tables
    and figures: the folder now says which study it is the report of."""
    _written(tmp_path, "comparison_f1_macro", "per_class_real3", study=_study("/studies/real3", "real3"))
    assert json.loads((tmp_path / "analysis-files.json").read_text())["study"] == {
        "uri": "/studies/real3", "name": "real3", "created": "2026-12-01 09:00:00"}
    with pytest.raises(CxrError, match=rf"--out {tmp_path}: holds the report of another study `real3` at "
                                       r"/studies/real3; analysing study `tiny` \(/studies/tiny\) there would "
                                       r"replace it .*pass another --out, or delete"):
        _written(tmp_path, "comparison_f1_macro", study=_study("/studies/tiny", "tiny"))
    assert (tmp_path / "tables" / "per_class_real3.parquet").exists()
    # The same study moved elsewhere (same name, same creation time) keeps replacing its own report.
    _written(tmp_path, "comparison_f1_macro", study=_study("/moved/real3", "real3"))
    assert not (tmp_path / "tables" / "per_class_real3.parquet").exists()


def test_a_report_from_before_the_study_was_recorded_is_told_by_its_header(tmp_path):
    """A list of files without the study (written before it was recorded): the report.md beside it names the study
    in its header; with no report.md to tell, the folder is taken as this study's, as before."""
    _written(tmp_path, "comparison_f1_macro", study=_study("/studies/real3", "real3"))
    listing = tmp_path / "analysis-files.json"
    listing.write_text(json.dumps({key: value for key, value in json.loads(listing.read_text()).items()
                                   if key != "study"}))
    _written(tmp_path, "comparison_f1_macro", study=_study("/studies/tiny", "tiny"))  # nothing tells: replaced
    (tmp_path / "report.md").write_text("# Study `real3`: analysis\n\n- Study directory: `/studies/real3` (created "
                                        "2026-12-07 10:40:31)\n- Generated 2026-12-07 by `python -m study.analyze`\n")
    listing.write_text(json.dumps({"written_by": "python -m study.analyze",
                                   "files": ["report.md", "tables/comparison_f1_macro.csv",
                                             "tables/comparison_f1_macro.parquet"]}))
    with pytest.raises(CxrError, match="holds the report of another study `real3` at /studies/real3"):
        _written(tmp_path, "comparison_f1_macro", study=_study("/studies/tiny", "tiny"))
    _written(tmp_path, "comparison_f1_macro", study=_study("/studies/real3", "real3", "2026-12-07 10:40:31"))


def _confirmed(*runs: tuple[int, str, int, bool]) -> types.SimpleNamespace:
    """An analysis with a confirm run of alexnet: per seed (seed, status, epochs, evaluated)."""
    seed_runs = [SeedRun(ConfirmJob(i, "d", "alexnet", "a1", seed, {"seed": seed}), f"t{i}", status, epochs,
                         best_epoch=1 if evaluated else None, evaluation=object() if evaluated else None)
                 for i, (seed, status, epochs, evaluated) in enumerate(runs)]
    settings = types.SimpleNamespace(max_epochs=2, metric="val/f1_macro")
    differences = pd.DataFrame(columns=["dataset", "model", "versus", "seeds", "mean difference", "std"])
    return types.SimpleNamespace(confirmation=Confirmation(seed_runs, sorted(seed for seed, *_ in runs)),
                                 study=types.SimpleNamespace(uri="/studies/s", settings=settings),
                                 metric="val/f1_macro", split="test",
                                 tables={"seed_summary": pd.DataFrame(), "seed_differences": differences})


def test_a_confirm_run_whose_seed_run_diverged_has_ended_and_no_resume_is_suggested():
    """A diverged seed run counted as unfinished: 'continue with ... --resume', which trains nothing."""
    text = "\n".join(seed_section(_confirmed((1, DIVERGED, 1, False), (2, COMPLETED, 2, True))))
    assert ("**Partial:** 1 of 2 seed runs evaluated: seed 1 of d / alexnet diverged (NaN loss) at epoch 1, before "
            "writing weights.") in text
    assert "--resume" not in text
    text = "\n".join(seed_section(_confirmed((1, DIVERGED, 1, False), (2, UNFINISHED, 1, True))))
    assert ("1 seed run unfinished (evaluated at the best epoch so far): continue with `python -m study.confirm "
            "/studies/s --resume`, then analyse again.") in text
    assert "Partial" not in "\n".join(seed_section(_confirmed((1, COMPLETED, 2, True), (2, COMPLETED, 2, True))))


def test_a_confirm_run_whose_seed_run_failed_is_partial_and_its_resume_is_suggested():
    """A failed seed run (an error in Tune: out of memory, a lost file) was told as ended, with no --resume,
    and as complete where it had weights from before; the resume runs it again (Tune's resume_errored)."""
    resume = "`python -m study.confirm /studies/s --resume` runs it again from the last full state, then analyse again."
    text = "\n".join(seed_section(_confirmed((1, FAILED, 1, False), (2, COMPLETED, 2, True))))
    assert ("**Partial:** 1 of 2 seed runs evaluated. 1 seed run failed (seed 1 of d / alexnet, after 1 epoch(s); the "
            f"traceback of each: error.txt in its trial folder): once the cause is fixed, {resume}") in text
    text = "\n".join(seed_section(_confirmed((1, FAILED, 1, True), (2, COMPLETED, 2, True))))
    assert ("**Partial:** 2 of 2 seed runs evaluated. 1 seed run failed (seed 1 of d / alexnet, after 1 epoch(s), "
            "evaluated at its best epoch before that; the traceback of each: error.txt in its trial folder): once the "
            f"cause is fixed, {resume}") in text


def _absent(**absent: dict[str, list[str]]) -> types.SimpleNamespace:
    """An analysis of datasets (keyword: dataset -> part -> its classes with no image there) on the test split."""
    selected = [types.SimpleNamespace(dataset=dataset, model="m", rank=1,
                                      evaluation=types.SimpleNamespace(classes_absent=parts, multilabel=False))
                for dataset, parts in absent.items()]
    return types.SimpleNamespace(selected=selected, split="test", metric="val/f1_macro")


def test_the_comparison_and_ablations_name_the_classes_absent_from_their_split():
    """A class with no image on a split counts as 0 in its macro precision, recall and F1 (scikit-learn's macro
    over all labels, which the selection uses too): the tables say which classes, per split."""
    analysis = _absent(a={"test": ["Lipoid", "Varicella"], "val": ["Influenza"]}, b={"test": [], "val": []})
    test = " ".join(absent_classes_note(analysis, "test"))
    assert test.startswith("Classes with no image on the test split: a: Lipoid, Varicella. The macro precision, "
                           "recall and F1 count each as 0 (scikit-learn's macro average over all the dataset's "
                           "classes, as the selection on validation does)")
    assert "b:" not in test
    assert " ".join(absent_classes_note(analysis, "val")).startswith(
        "Classes with no image on the validation split: a: Influenza.")
    assert absent_classes_note(_absent(b={"test": [], "val": []}), "test") == []


def test_the_ablations_have_a_section_per_dataset_and_say_a_row_is_marginal():
    from study.analysis.report import ablation_section
    from study.analysis.report_tables import ablation_tables
    from test_report_tables import _searched

    analysis = _searched()
    analysis.tables = ablation_tables(analysis)
    text = "\n".join(ablation_section(analysis))
    assert "### easy\n\n#### model\n" in text and "### hard\n\n#### model\n" in text
    easy, hard = text.split("### hard")
    assert "| 0.0001 " in easy and "| 0.001 " not in easy
    assert "| 0.001 " in hard and "| 0.0001 " not in hard
    assert "dataset |" not in text  # each table is one dataset's
    assert ("Each row is marginal over the other search dimensions: it pools whatever values of them its trials "
            "drew, not holding them fixed.") in text
    assert "ASHA" not in text

    stopped = _searched(("completed", "stopped early") * 6)
    stopped.tables = ablation_tables(stopped)
    assert ("not holding them fixed, and pools the trials ASHA stopped early, each at its best of the fewer epochs "
            "it ran, with those that ran every epoch.") in "\n".join(ablation_section(stopped))


def test_the_ablations_of_one_dataset_need_no_dataset_heading():
    from study.analysis.report import ablation_section
    from study.analysis.report_tables import ablation_tables
    from test_report_tables import _searched

    analysis = _searched()
    analysis.trials = analysis.trials[analysis.trials["config/dataset"] == "easy"]
    analysis.tables = ablation_tables(analysis)
    text = "\n".join(ablation_section(analysis))
    assert "### easy" not in text and "### lr\n" in text and "### model\n" in text


@pytest.mark.parametrize("search_epochs", [1, 2], ids=["stopped early", "completed"])
def test_the_seed_table_says_where_the_search_run_it_repeats_trained_fewer_epochs(search_epochs: int):
    """The search's run, which ASHA stopped at epoch 1 of 2, stood beside seeds trained for 2 epochs with nothing
    to say so: `0.125 | 0.279 ± 0.000`, a gap that is partly training length."""
    from study.analysis.report_tables import seed_tables

    analysis = _confirmed((1, COMPLETED, 2, True), (2, COMPLETED, 2, True))
    for run in analysis.confirmation.runs:
        run.evaluation = types.SimpleNamespace(metrics={"test/f1_macro": 0.279})
    search = types.SimpleNamespace(trial_id="a1", epochs=search_epochs)
    analysis.selected = [types.SimpleNamespace(dataset="d", model="alexnet", rank=1, candidate=search,
                                               evaluation=types.SimpleNamespace(metrics={"test/f1_macro": 0.125}))]
    analysis.tables = seed_tables(analysis)
    text = "\n".join(seed_section(analysis))
    if search_epochs == 2:
        assert "(stopped at" not in text and "marked stopped" not in text, text
        return
    assert "| 0.125 (stopped at epoch 1 of 2) | 0.279 ± 0.000 (2 of 2) |" in text, text
    assert ("A search's run marked stopped trained fewer epochs than its seeds (ASHA stopped it early, or the search "
            "is unfinished), which train the full 2 with no early stopping: a gap between the two is partly "
            "training length.") in text
