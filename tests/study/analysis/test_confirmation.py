"""study.confirm's seed runs as the analysis reads them (a confirm folder written here, no Ray)."""

from __future__ import annotations

import json
import types
from dataclasses import asdict

import pytest

from study import storage
from study.analysis.confirmation import evaluate_confirmation
from study.analysis.report import partial_confirmation
from study.analysis.report_tables import seed_tables
from study.confirm import ConfirmJob, confirm_uri, jobs_uri
from study.results import ResultsTable

METRIC = "val/f1_macro"


def _confirm_run(study_uri: str, epochs: list[dict[str, float]]) -> None:
    """A confirm run of one seed run that completed `epochs` (each epoch's validation metrics), without weights."""
    job = ConfirmJob(0, "d", "alexnet", "a1", 1, {"dataset": "d", "model": "alexnet", "seed": 1})
    storage.write_json(jobs_uri(study_uri), [asdict(job)])
    table = ResultsTable(confirm_uri(study_uri))
    folder = storage.join(confirm_uri(study_uri), "c0nf1rm0_00000")  # the trial's folder: where Tune staged it too
    trial = types.SimpleNamespace(trial_id="c0nf1rm0_00000", config={"job": 0}, local_path=folder, path=folder)
    for epoch, metrics in enumerate(epochs, start=1):
        table.on_trial_result(epoch, [], trial, {"epoch": epoch, "training_iteration": epoch, "diverged": 0,
                                                 "time_this_iter_s": 1.0, **metrics})
    table.on_trial_complete(len(epochs), [], trial)


def test_the_seed_runs_table_gives_the_analysis_metric_at_the_epoch_chosen_on_the_study_metric(tmp_path):
    """With study.analyze --metric val/accuracy, the column `val/accuracy (best)` held the study's val/f1_macro."""
    _confirm_run(str(tmp_path), [{METRIC: 0.3, "val/accuracy": 0.8}, {METRIC: 0.5, "val/accuracy": 0.6}])
    settings = types.SimpleNamespace(metric=METRIC, mode="max", max_epochs=2, tie_break="val/loss")
    confirmation = evaluate_confirmation(types.SimpleNamespace(uri=str(tmp_path), settings=settings), "test", None)
    analysis = types.SimpleNamespace(confirmation=confirmation, split="test", metric="val/accuracy", selected=[],
                                     study=types.SimpleNamespace(settings=settings))
    run = seed_tables(analysis)["seed_runs"].iloc[0]
    assert run["best epoch"] == 2  # the best on the study's metric: the epoch of the weights evaluated
    assert run[f"{METRIC} (best)"] == pytest.approx(0.5)
    assert run["val/accuracy at best epoch"] == pytest.approx(0.6)
    assert "val/accuracy (best)" not in run


def test_a_seed_run_that_errored_before_its_first_epoch_is_reported_as_failed_not_as_not_started(tmp_path):
    """Its error event holds no job number, and it reported no epoch (whose rows hold one): the report called
    it not started, and advised continuing it as an unfinished run. Its job is in the params.json Tune wrote
    into its trial folder: it is a failed run, which the resume runs again. A run never started stays so."""
    config = {"dataset": "d", "model": "resnet50", "optimizer": "adam", "lr": 1e-3, "batch_size": 16}
    jobs = [ConfirmJob(job, "d", "resnet50", "8001e117", seed, {**config, "seed": seed})
            for job, seed in enumerate((1, 2))]
    study_uri = str(tmp_path / "grid")
    storage.write_json(jobs_uri(study_uri), [asdict(job) for job in jobs])
    uri = confirm_uri(study_uri)
    folder = tmp_path / "grid" / "confirm" / f"c0nf1rm0_00001_{jobs[1].name}"  # study.confirm.JobNames
    folder.mkdir()
    (folder / "params.json").write_text(json.dumps({"job": 1}))
    (folder / "error.txt").write_text("Failure # 1\nRuntimeError: out of memory\n")
    ResultsTable(uri).on_trial_error(1, [], types.SimpleNamespace(trial_id="c0nf1rm0_00001", error_file=str(folder)))
    settings = types.SimpleNamespace(metric=METRIC, mode="max", max_epochs=2, tie_break="val/loss")
    study = types.SimpleNamespace(uri=study_uri, settings=settings)

    confirmation = evaluate_confirmation(study, "test", data=None)
    not_started, errored = confirmation.runs
    assert (not_started.status, not_started.trial_id) == ("not started", None)
    assert (errored.status, errored.trial_id, errored.epochs) == ("failed", "c0nf1rm0_00001", 0)
    text = partial_confirmation(types.SimpleNamespace(confirmation=confirmation, study=study))
    assert (f"1 seed run failed (seed 2 of d / resnet50, after 0 epoch(s); the traceback of each: error.txt "
            f"in its trial folder): once the cause is fixed, `python -m study.confirm {study_uri} --resume` runs it "
            "again") in text, text
    assert "1 seed run unfinished: continue" in text, text


def test_a_seed_runs_weights_rewritten_since_the_analysis_read_their_sidecar_are_not_evaluated(tmp_path):
    """A confirm run still running rewrote a seed run's best weights after the analysis read their sidecar: the
    seed run's row paired the sidecar's epoch with the new weights' test figures (the search's trials were already
    checked so). Now the seed run is noted and left unevaluated, as such a search trial is skipped."""
    import torch

    from study.analysis.evaluation import StudyData
    from study.checkpoints import BestWeights, sidecar_uri, weights_uri

    study_uri = str(tmp_path / "grid")
    _confirm_run(study_uri, [{METRIC: 0.3}, {METRIC: 0.5}])
    uri, trial_id = confirm_uri(study_uri), "c0nf1rm0_00000"
    storage.write_json(sidecar_uri(uri, trial_id), asdict(BestWeights(trial_id, 2, METRIC, 0.5, 1000, "")))
    path = weights_uri(uri, trial_id)
    torch.save({"model": {}, "epoch": 3, "config": {"dataset": "d", "model": "alexnet", "seed": 1},
                "classes": ["a", "b"], "multilabel": False, "metric": METRIC, "value": 0.6}, path)
    settings = types.SimpleNamespace(metric=METRIC, mode="max", max_epochs=3, tie_break="val/loss", data_roots={},
                                     cache_dir=str(tmp_path / "cache"), image_size=16)
    study = types.SimpleNamespace(uri=study_uri, settings=settings)

    confirmation = evaluate_confirmation(study, "test", StudyData(study))
    assert confirmation.runs[0].evaluation is None
    assert (f"seed run {confirmation.runs[0].job.name} ({trial_id}): {path}: its weights changed since the analysis "
            f"read them (now of epoch 3, {METRIC} 0.600; their sidecar named epoch 2, {METRIC} 0.500): the study is "
            "still running; analyse again when it ends; not evaluated") in confirmation.notes
