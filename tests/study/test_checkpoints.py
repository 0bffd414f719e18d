"""The checkpoint policy without Ray: when full states are due, which weights stay, the driver's keeper.

Trials and results are small stand-ins; the files are real (a local study folder).
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import torch

from study import storage
from study.checkpoints import (WRITTEN_KEY, WRITTEN_TIE_KEY, CheckpointPolicy, TrialWeights, WeightsKeeper,
                               delete_full_states, forget_lost_trials, prune_weights, read_best_weights,
                               save_best_weights, sidecar_uri, weights_of, weights_to_drop, weights_uri)


def test_full_state_every_k_epochs_or_minutes_never_after_the_last():
    policy = CheckpointPolicy(every=3, minutes=10)
    due = [epoch for epoch in range(1, 11) if policy.full_state_due(epoch, 10, seconds_since_last=5)]
    assert due == [3, 6, 9]
    assert policy.full_state_due(1, 10, seconds_since_last=600)       # a long epoch: the clock decides
    assert not policy.full_state_due(10, 10, seconds_since_last=3600)  # the trial ends: nothing to resume
    assert [e for e in range(1, 5) if CheckpointPolicy(every=5).full_state_due(e, 4, 1)] == []  # the demo's 4 epochs


def test_a_rung_asks_for_no_full_state():
    """A pause saves one by itself (Tune asks the trainable); a trial that goes on from a rung or ends there
    needs none."""
    policy = CheckpointPolicy(every=5, minutes=10, rung_epochs=(1, 3))
    assert [e for e in range(1, 10) if policy.full_state_due(e, 9, seconds_since_last=5)] == [5]


def test_best_weights_are_due_where_the_trial_may_end():
    """Before the report of its last epoch and of each rung, where ASHA may stop or pause the trial."""
    policy = CheckpointPolicy(every=5, rung_epochs=(2, 6))
    assert [e for e in range(1, 11) if policy.weights_due(e, 10)] == [2, 6, 10]


def test_a_trial_writes_only_the_newest_best_noted_since_its_last_flush(tmp_path):
    """Epochs 1 and 2 improve, epoch 3 does not: one write at the flush, of epoch 2's weights as they were
    then (training after the note does not change them); a flush with nothing new writes nothing."""
    class TrainingInPlace(FakeRun):  # as a real run: one set of parameters, changed in place by each epoch
        def checkpoint(self) -> dict:
            return {**super().checkpoint(), "model": {"w": self.w}}

    weights = TrialWeights(str(tmp_path), "aaaa0001", "val/f1_macro", "max")
    run = TrainingInPlace(1)
    run.w = torch.full((3,), 1.0)
    assert weights.update(run, {"val/f1_macro": 0.3})
    run.epoch, _ = 2, run.w.fill_(2.0)
    assert weights.update(run, {"val/f1_macro": 0.4})
    run.epoch, _ = 3, run.w.fill_(3.0)
    assert not weights.update(run, {"val/f1_macro": 0.4})  # a tie: the first of tied epochs stays
    assert read_best_weights(str(tmp_path)) == ({}, [])  # nothing written before the flush
    best = weights.flush()
    assert (best.epoch, best.value) == (2, 0.4)
    assert torch.equal(torch.load(best.uri, weights_only=True)["model"]["w"], torch.full((3,), 2.0))
    assert weights.state() == {"best_value": 0.4, "best_epoch": 2, "best_tie": None}
    assert weights.flush() is None


def test_weights_written_in_their_epoch_are_not_copied_first(tmp_path):
    """Where the policy writes the weights in the epoch that noted them (copy=False), they are written
    from the run's own tensors: the same bytes as a copy would give, without the copy's memory and time."""
    class TrainingInPlace(FakeRun):
        def checkpoint(self) -> dict:
            return {**super().checkpoint(), "model": {"w": self.w}}

    weights = TrialWeights(str(tmp_path), "aaaa0001", "val/f1_macro", "max")
    run = TrainingInPlace(1)
    run.w = torch.full((3,), 1.0)
    assert weights.update(run, {"val/f1_macro": 0.3}, copy=False)
    assert weights.unwritten["model"]["w"].data_ptr() == run.w.data_ptr()
    best = weights.flush()
    assert torch.equal(torch.load(best.uri, weights_only=True)["model"]["w"], torch.full((3,), 1.0))
    assert weights.unwritten is None  # nothing of the run is held after the write


def test_weights_to_drop_keeps_each_cells_best_among_all_trials():
    cell_a, cell_b = ("d", "alexnet"), ("d", "resnet50")
    bests = {"t1": (cell_a, 0.5, None), "t2": (cell_a, 0.7, None), "t3": (cell_a, 0.6, None), "t4": (cell_b, 0.1, None),
             "t5": (cell_a, 0.7, None)}
    # t2 and t5 tie at 0.7: the lower trial id ranks first, as in the analysis
    assert weights_to_drop(bests, {"t1", "t2", "t3", "t4", "t5"}, 1, "max") == ["t1", "t3", "t5"]
    assert weights_to_drop(bests, {"t1", "t2", "t3", "t4", "t5"}, 2, "max") == ["t1", "t3"]
    # a running trial is never dropped, but still counts: t3 ended behind two better trials
    assert weights_to_drop(bests, {"t3"}, 2, "max") == ["t3"]
    assert weights_to_drop(bests, {"t1", "t2", "t3"}, "all", "max") == []
    assert weights_to_drop(bests, {"t1", "t2", "t3", "t4", "t5"}, 1, "min") == ["t2", "t3", "t5"]


def test_weights_to_drop_breaks_ties_by_the_tie_break_of_the_written_weights():
    """Two trials on the constant prediction (0.279): the one whose weights had the lower validation loss keeps
    them, as the analysis ranks them (the lower trial id did); a trial without a tie-break value goes after."""
    cell = ("d", "alexnet")
    bests = {"0aaa": (cell, 0.279, 1.30), "ffff": (cell, 0.279, 1.05), "9ccc": (cell, 0.279, None)}
    assert weights_to_drop(bests, set(bests), 1, "max", tie_break="val/loss") == ["0aaa", "9ccc"]
    assert weights_to_drop(bests, set(bests), 1, "max", tie_break="val/roc_auc_macro") == ["9ccc", "ffff"]


def test_a_trial_notes_the_tie_break_of_its_best_weights_in_their_sidecar_and_its_results(tmp_path):
    weights = TrialWeights(str(tmp_path), "ffff0001", "val/f1_macro", "max", tie_break="val/loss")
    assert weights.update(FakeRun(1), {"val/f1_macro": 0.279, "val/loss": 1.05})
    assert not weights.update(FakeRun(2), {"val/f1_macro": 0.279, "val/loss": 1.20})  # tied, of a worse loss
    best = weights.flush()
    assert (best.epoch, best.tie_break, best.tie_break_value) == (1, "val/loss", 1.05)
    assert read_best_weights(str(tmp_path))[0]["ffff0001"].tie_break_value == 1.05
    assert weights.written() == {WRITTEN_KEY: 0.279, WRITTEN_TIE_KEY: 1.05}
    restored = TrialWeights(str(tmp_path), "ffff0001", "val/f1_macro", "max", tie_break="val/loss")
    restored.restore(weights.state())
    assert restored.written() == weights.written()


def test_of_epochs_tied_on_the_metric_a_trial_keeps_the_weights_of_the_better_tie_break(tmp_path):
    """On the constant prediction (0.279) for epochs 1 to 3 while its validation loss falls: the trial keeps
    epoch 3's weights, the epoch ASHA ranks it by (study.asha) and the tables show (study.tables.best_epochs), not
    epoch 1's of a worse loss. Without a tie-break the first of tied epochs stays."""
    epochs = [(1, 1.30), (2, 1.10), (3, 0.90)]
    for tie_break, kept in (("val/loss", 3), (None, 1)):
        weights = TrialWeights(str(tmp_path / str(tie_break)), "ffff0001", "val/f1_macro", "max", tie_break)
        noted = [weights.update(FakeRun(epoch), {"val/f1_macro": 0.279, "val/loss": loss}) for epoch, loss in epochs]
        assert noted == [True, tie_break is not None, tie_break is not None]
        best = weights.flush()
        assert best.epoch == kept and weights.state()["best_epoch"] == kept
        sidecar = read_best_weights(str(tmp_path / str(tie_break)))[0]["ffff0001"]
        assert sidecar.epoch == kept and torch.load(sidecar.uri, weights_only=True)["epoch"] == kept
        assert weights.written().get(WRITTEN_TIE_KEY) == (0.90 if tie_break else None)


def test_the_keeper_knows_a_newer_write_tied_on_the_metric_with_a_better_tie_break(tmp_path):
    """Trial 0aaa first writes epoch 1's weights (0.279, loss 1.30), then epoch 3's (0.279, loss 0.70); ffff holds
    (0.279, loss 1.05). With --keep 1 the keeper must keep 0aaa's, as the analysis would rank them."""
    study = tmp_path / "kept"
    for trial_id, loss in (("0aaa", 0.70), ("ffff", 1.05)):
        save_best_weights(str(study), trial_id, weights_of(FakeRun(1)), "val/f1_macro", 0.279,
                          tie_break=("val/loss", loss))
    keeper = WeightsKeeper(str(study), "val/f1_macro", "max", keep=1, tie_break="val/loss")
    trials = [fake_trial(t, "alexnet", study / f"{t}_alexnet") for t in ("0aaa", "ffff")]
    keeper.on_step_begin(0, trials)
    for trial, loss in ((trials[0], 1.30), (trials[1], 1.05), (trials[0], 0.70), (trials[0], 1.30)):
        keeper.on_trial_result(0, [], trial, {WRITTEN_KEY: 0.279, WRITTEN_TIE_KEY: loss})
    for trial in trials:
        trial.status = "TERMINATED"
    store_snapshot(study, trials)
    keeper.get_state()
    keeper.on_experiment_end(trials)
    assert list(read_best_weights(str(study))[0]) == ["0aaa"]


def write_tied_trials(study: Path) -> dict[str, float]:
    """Two trials' best weights at 0.279, of validation losses 1.30 and 1.05; trial id -> loss."""
    losses = {"0aaa": 1.30, "ffff": 1.05}
    for trial_id, loss in losses.items():
        save_best_weights(str(study), trial_id, weights_of(FakeRun(1)), "val/f1_macro", 0.279,
                          tie_break=("val/loss", loss))
    return losses


def test_prune_and_the_keeper_break_ties_by_the_tie_break_of_the_written_weights(tmp_path):
    write_tied_trials(tmp_path / "pruned")
    results = results_frame([("0aaa", "alexnet", 1, 0.279), ("ffff", "alexnet", 1, 0.279)])
    assert prune_weights(str(tmp_path / "pruned"), results, ["0aaa", "ffff"], 1, "val/f1_macro", "max",
                         tie_break="val/loss") == ["0aaa"]
    losses = write_tied_trials(tmp_path / "kept")
    keeper = WeightsKeeper(str(tmp_path / "kept"), "val/f1_macro", "max", keep=1, tie_break="val/loss")
    trials = [fake_trial(t, "alexnet", tmp_path / "kept" / f"{t}_alexnet") for t in losses]
    keeper.on_step_begin(0, trials)
    for trial in trials:
        keeper.on_trial_result(0, [], trial, {WRITTEN_KEY: 0.279, WRITTEN_TIE_KEY: losses[trial.trial_id]})
        trial.status = "TERMINATED"
    store_snapshot(tmp_path / "kept", trials)
    keeper.get_state()
    keeper.on_experiment_end(trials)
    assert list(read_best_weights(str(tmp_path / "kept"))[0]) == ["ffff"]


class FakeRun:
    """What weights_of reads of a TrainingRun."""

    def __init__(self, epoch: int):
        self.epoch = epoch

    def checkpoint(self) -> dict:
        return {"model": {"w": torch.full((3,), float(self.epoch))}, "optimizer": {"state": {}},
                "epoch": self.epoch, "config": {"model": "alexnet"}, "classes": ["a", "b"], "multilabel": False}


def write_trial(study: Path, trial_id: str, epoch: int, value: float) -> None:
    save_best_weights(str(study), trial_id, weights_of(FakeRun(epoch)), "val/f1_macro", value)


def test_best_weights_hold_weights_only_and_a_sidecar_says_what_they_are(tmp_path):
    write_trial(tmp_path, "aaaa0001", 3, 0.61)
    weights, problems = read_best_weights(str(tmp_path))
    assert problems == []
    best = weights["aaaa0001"]
    assert (best.epoch, best.metric, best.value) == (3, "val/f1_macro", 0.61)
    assert best.bytes == Path(best.uri).stat().st_size
    saved = torch.load(best.uri, weights_only=True)
    assert set(saved) == {"model", "epoch", "config", "classes", "multilabel", "metric", "value"}
    assert not list(tmp_path.glob("weights/*.tmp"))


def test_a_moved_study_finds_its_weights_beside_the_sidecars(tmp_path):
    write_trial(tmp_path / "before", "aaaa0001", 1, 0.5)
    (tmp_path / "before").rename(tmp_path / "after")
    weights, _ = read_best_weights(str(tmp_path / "after"))
    assert Path(weights["aaaa0001"].uri).is_file() and "after" in weights["aaaa0001"].uri


def test_an_unreadable_sidecar_is_reported_not_fatal(tmp_path):
    write_trial(tmp_path, "aaaa0001", 1, 0.5)
    Path(sidecar_uri(str(tmp_path), "bbbb0002")).write_text("{not json")
    weights, problems = read_best_weights(str(tmp_path))
    assert list(weights) == ["aaaa0001"]
    assert len(problems) == 1 and "bbbb0002.json" in problems[0]


def results_frame(rows: list[tuple[str, str, int, float]]) -> pd.DataFrame:
    return pd.DataFrame([{"trial_id": t, "config/dataset": "d", "config/model": m, "training_iteration": e,
                          "val/f1_macro": v} for t, m, e, v in rows])


def test_prune_deletes_ended_trials_outside_the_top_k_of_their_model(tmp_path):
    results = results_frame([("t1", "alexnet", 1, 0.3), ("t1", "alexnet", 2, 0.5), ("t2", "alexnet", 1, 0.6),
                             ("t3", "alexnet", 1, 0.4), ("t4", "resnet50", 1, 0.2)])
    for trial_id, value in (("t1", 0.5), ("t2", 0.6), ("t3", 0.4), ("t4", 0.2)):
        write_trial(tmp_path, trial_id, 1, value)
    dropped = prune_weights(str(tmp_path), results, ended=["t1", "t2", "t4"], keep=1, metric="val/f1_macro",
                            mode="max")
    assert dropped == ["t1"]  # t3 is behind too, but has not ended (an interrupted study may resume it)
    left = sorted(p.name for p in (tmp_path / "weights").iterdir())
    assert left == ["t2.json", "t2.pt", "t3.json", "t3.pt", "t4.json", "t4.pt"]
    assert prune_weights(str(tmp_path), results, ["t1", "t2", "t3", "t4"], "all", "val/f1_macro", "max") == []


def test_prune_ranks_trials_by_the_weights_they_wrote_not_the_bests_they_reported(tmp_path):
    """keep 1: trial a reported 0.60 at epoch 3 but failed before it wrote it (its weights: 0.50, of epoch 2);
    b ended at 0.55. b's weights are the best there are, and stay; c, ended behind b, loses its."""
    results = results_frame([("a", "alexnet", 2, 0.50), ("a", "alexnet", 3, 0.60), ("b", "alexnet", 4, 0.55),
                             ("c", "alexnet", 4, 0.52)])
    write_trial(tmp_path, "a", 2, 0.50)
    write_trial(tmp_path, "b", 4, 0.55)
    write_trial(tmp_path, "c", 4, 0.52)
    assert prune_weights(str(tmp_path), results, ["b", "c"], 1, "val/f1_macro", "max") == ["c"]
    assert {t: w.value for t, w in read_best_weights(str(tmp_path))[0].items()} == {"a": 0.50, "b": 0.55}


def test_prune_deletes_the_weights_file_an_interrupted_deletion_left(tmp_path):
    results = results_frame([("t1", "alexnet", 1, 0.5), ("t2", "alexnet", 1, 0.6)])
    write_trial(tmp_path, "t1", 1, 0.5)
    write_trial(tmp_path, "t2", 1, 0.6)
    Path(sidecar_uri(str(tmp_path), "t1")).unlink()  # delete_weights removes the sidecar first
    assert prune_weights(str(tmp_path), results, ["t1", "t2"], 1, "val/f1_macro", "max") == ["t1"]
    assert sorted(p.name for p in (tmp_path / "weights").iterdir()) == ["t2.json", "t2.pt"]


def fake_trial(trial_id: str, model: str, folder: Path) -> SimpleNamespace:
    return SimpleNamespace(trial_id=trial_id, config={"dataset": "d", "model": model}, path=str(folder),
                           status="RUNNING")


def store_snapshot(study_uri: str | Path, trials, session: str = "2026-01-01_00-00-00") -> None:
    """Put an experiment snapshot of `trials` (fake_trial's: their statuses now) on storage, as Tune's upload
    would: experiment_state-<session>.json, each trial's JSON state in it (the fields read here)."""
    trial_data = [[json.dumps({"trial_id": trial.trial_id, "status": trial.status,
                               "relative_logdir": storage.name_of(trial.path)}), "{}"] for trial in trials]
    storage.write_json(storage.join(str(study_uri), f"experiment_state-{session}.json"),
                       {"trial_data": trial_data, "runner_data": {}, "stats": {}})


def write_full_state(trial_folder: str) -> str:
    """A Tune checkpoint folder holding a full state in a trial's folder (local or in a bucket); its URI."""
    folder = storage.join(trial_folder, "checkpoint_000001")
    storage.write_bytes(storage.join(folder, "state.pt"), b"x" * 100)
    return folder


def test_keeper_keeps_an_ended_trials_full_state_while_the_snapshot_in_the_bucket_holds_it_running(s3_bucket):
    """Tune takes a snapshot (and asks the keeper for its state) before the upload of the one before has
    finished, and skips an upload while one runs: with a slow bucket the snapshot there may still hold a trial
    as running several snapshots after it ended. A driver killed then resumes the trial from its full state,
    so the state stays until the snapshot in the bucket holds the trial's end."""
    study = storage.join(s3_bucket, "studies", "slow")
    ended = fake_trial("t1", "alexnet", Path("/elsewhere") / "t1_alexnet")  # the driver's own path of it
    full_state = write_full_state(storage.join(study, "t1_alexnet"))
    store_snapshot(study, [ended])  # uploaded while t1 ran
    keeper = WeightsKeeper(study, "val/f1_macro", "max", keep=1)
    keeper.on_step_begin(0, [ended])
    ended.status = "TERMINATED"
    for _ in range(3):  # snapshots taken; none of them uploaded yet
        keeper.get_state()
    assert storage.kind(full_state) == "dir"
    store_snapshot(study, [ended], session="2026-01-01_00-00-00")  # one of them lands in the bucket
    keeper.get_state()
    assert storage.kind(full_state) == "missing"


def test_keeper_deletes_an_ended_trials_full_state_once_a_snapshot_on_storage_holds_its_end(tmp_path):
    """A resume restores Tune's last snapshot on storage: a trial that snapshot holds as running continues
    from its full state, which must still be there. Weights of trials that fell out of --keep go too."""
    keeper = WeightsKeeper(str(tmp_path), "val/f1_macro", "max", keep=1)
    trials = {t: fake_trial(t, "alexnet", tmp_path / f"{t}_alexnet") for t in ("t1", "t2")}
    for trial in trials.values():
        (Path(trial.path) / "checkpoint_000001").mkdir(parents=True)
        (Path(trial.path) / "checkpoint_000001" / "state.pt").write_bytes(b"x" * 100)
        (Path(trial.path) / "result.json").write_text("{}")
    write_trial(tmp_path, "t1", 1, 0.4)
    write_trial(tmp_path, "t2", 1, 0.7)
    keeper.on_step_begin(0, list(trials.values()))
    keeper.on_trial_result(0, [], trials["t1"], {"val/f1_macro": 0.4, WRITTEN_KEY: 0.4})
    keeper.on_trial_result(0, [], trials["t2"], {"val/f1_macro": 0.7, WRITTEN_KEY: 0.7})
    store_snapshot(tmp_path, trials.values())
    trials["t2"].status = "TERMINATED"
    assert keeper.get_state() is None  # the snapshot that holds t2's end: being written, not yet on storage
    assert (Path(trials["t2"].path) / "checkpoint_000001").exists()
    store_snapshot(tmp_path, trials.values())  # it is on storage
    keeper.get_state()  # the next snapshot
    assert not (Path(trials["t2"].path) / "checkpoint_000001").exists()
    assert (Path(trials["t2"].path) / "result.json").is_file()   # only the full state goes
    assert (Path(trials["t1"].path) / "checkpoint_000001").exists()  # t1 is still running
    assert Path(weights_uri(str(tmp_path), "t1")).is_file()
    trials["t1"].status = "TERMINATED"  # ended behind t2: its weights go too, at the end of the experiment
    keeper.get_state()  # Tune's last snapshot, written, then uploaded before on_experiment_end
    assert Path(weights_uri(str(tmp_path), "t1")).is_file()
    store_snapshot(tmp_path, trials.values())
    keeper.on_experiment_end(list(trials.values()))
    assert not (Path(trials["t1"].path) / "checkpoint_000001").exists()
    assert not Path(weights_uri(str(tmp_path), "t1")).exists()
    assert not Path(sidecar_uri(str(tmp_path), "t1")).exists()
    assert Path(weights_uri(str(tmp_path), "t2")).is_file()


def test_keeper_keeps_an_ended_trials_weights_until_others_have_written_better(tmp_path):
    """keep 1: running trial a has written 0.50 at its rung and reported 0.60 since, which it holds in memory
    until its next rung; b ends at 0.55. b keeps its weights: a may fail before it writes its 0.60 (here it
    does), and the best weights of the study are then b's."""
    keeper = WeightsKeeper(str(tmp_path), "val/f1_macro", "max", keep=1)
    a, b = (fake_trial(t, "alexnet", tmp_path / f"{t}_alexnet") for t in ("a", "b"))
    keeper.on_step_begin(0, [a, b])
    write_trial(tmp_path, "a", 2, 0.50)
    keeper.on_trial_result(0, [], a, {"val/f1_macro": 0.50, WRITTEN_KEY: 0.50})
    keeper.on_trial_result(0, [], a, {"val/f1_macro": 0.60, WRITTEN_KEY: 0.50})
    write_trial(tmp_path, "b", 4, 0.55)
    keeper.on_trial_result(0, [], b, {"val/f1_macro": 0.55, WRITTEN_KEY: 0.55})
    b.status = "TERMINATED"
    store_snapshot(tmp_path, [a, b])
    keeper.get_state()
    a.status = "ERROR"
    keeper.on_experiment_end([a, b])
    assert {t: w.value for t, w in read_best_weights(str(tmp_path))[0].items()} == {"a": 0.50, "b": 0.55}


def test_keeper_deletes_an_ended_trials_weights_once_a_running_trial_has_written_better(tmp_path):
    keeper = WeightsKeeper(str(tmp_path), "val/f1_macro", "max", keep=1)
    a, b = (fake_trial(t, "alexnet", tmp_path / f"{t}_alexnet") for t in ("a", "b"))
    keeper.on_step_begin(0, [a, b])
    write_trial(tmp_path, "b", 4, 0.55)
    keeper.on_trial_result(0, [], b, {"val/f1_macro": 0.55, WRITTEN_KEY: 0.55})
    b.status = "TERMINATED"
    store_snapshot(tmp_path, [a, b])
    keeper.get_state()
    write_trial(tmp_path, "a", 6, 0.60)  # a's rung
    keeper.on_trial_result(0, [], a, {"val/f1_macro": 0.60, WRITTEN_KEY: 0.60})
    keeper.get_state()
    assert list(read_best_weights(str(tmp_path))[0]) == ["a"]


def test_keeper_cleans_what_a_killed_run_left_of_ended_trials(tmp_path):
    """A run killed before it cleaned an ended trial: the resumed run gets that trial back from the snapshot
    as ended, and cleans it."""
    keeper = WeightsKeeper(str(tmp_path), "val/f1_macro", "max", keep="all")
    ended = fake_trial("t1", "alexnet", tmp_path / "elsewhere" / "t1_alexnet")  # the study has moved since
    ended.status = "TERMINATED"
    (tmp_path / "t1_alexnet" / "checkpoint_000002").mkdir(parents=True)
    store_snapshot(tmp_path, [ended])  # the killed run's
    keeper.on_step_begin(0, [ended])
    keeper.get_state()
    assert not (tmp_path / "t1_alexnet" / "checkpoint_000002").exists()


def test_delete_full_states_reports_the_bytes_freed(tmp_path):
    (tmp_path / "checkpoint_000003").mkdir()
    (tmp_path / "checkpoint_000003" / "state.pt").write_bytes(b"x" * 1234)
    (tmp_path / "params.json").write_text("{}")
    assert delete_full_states(str(tmp_path)) == 1234
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.json"]


def test_a_resume_deletes_the_files_of_trials_tune_forgot(tmp_path, caplog):
    """A trial that started after the last snapshot on storage (the driver killed before the next landed) is
    not in the snapshot a resume restores: Tune forgets it, and its full state and weights would stay forever,
    counted by --keep and evaluated by the analysis. The trials the snapshot holds keep theirs."""
    known = fake_trial("aaaa0001", "alexnet", tmp_path / "aaaa0001_alexnet")
    store_snapshot(tmp_path, [known])
    known_state = write_full_state(str(tmp_path / "aaaa0001_alexnet"))
    forgotten_state = write_full_state(str(tmp_path / "bbbb0002_alexnet"))  # no params.json: never uploaded
    write_trial(tmp_path, "aaaa0001", 1, 0.4)
    write_trial(tmp_path, "bbbb0002", 2, 0.7)
    (tmp_path / "results").mkdir()  # the study's own folders are no trials
    with caplog.at_level("INFO", logger="study.checkpoints"):
        assert forget_lost_trials(str(tmp_path)) == ["bbbb0002"]
    assert storage.kind(forgotten_state) == "missing" and storage.kind(known_state) == "dir"
    assert sorted(p.name for p in (tmp_path / "weights").iterdir()) == ["aaaa0001.json", "aaaa0001.pt"]
    assert (tmp_path / "results").is_dir()
    (line,) = [record.getMessage() for record in caplog.records]
    assert "bbbb0002" in line and "full state" in line and "weights" in line and "snapshot" in line
    assert forget_lost_trials(str(tmp_path)) == []  # nothing left of it to delete
