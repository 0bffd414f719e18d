"""study.tensorboard: what TensorBoard shows of a study, read back through the hparams plugin's own backend
(what its HPARAMS tab requests) and TensorBoard's event accumulator (the scalars). The callback is fed fake
trials and results: no Ray, about 5 s."""

from __future__ import annotations

import logging
import pickle
from pathlib import Path

import pytest

from study import storage
from study.run import build_parser, settings_from_args
from study.settings import resumed_study
from study.tensorboard import EXPERIMENT_FILE, StudyTensorBoard, write_experiment

DEMO_DIMENSIONS = {"dataset", "model", "optimizer", "lr", "batch_size", "momentum", "weight_decay", "pretrained"}
ADAM = {"dataset": "covid-chestxray-3class", "model": "alexnet", "optimizer": "adam", "lr": 2.5e-4, "batch_size": 16,
        "pretrained": False}
SGD = {**ADAM, "model": "vgg11", "optimizer": "sgd", "lr": 4.5e-3, "momentum": 0.9, "weight_decay": 1e-4}


def hparams_tab(logdir: Path):
    """What TensorBoard's HPARAMS tab shows of `logdir`: the experiment (its columns) and the session groups
    (one per trial: its hyperparameters, status and metric values), as the plugin serves them."""
    from tensorboard import context
    from tensorboard.backend.event_processing import data_provider, plugin_event_multiplexer
    from tensorboard.plugins import base_plugin
    from tensorboard.plugins.hparams import api_pb2, backend_context, get_experiment, list_session_groups

    multiplexer = plugin_event_multiplexer.EventMultiplexer()
    multiplexer.AddRunsFromDirectory(str(logdir))
    multiplexer.Reload()
    backend = backend_context.Context(base_plugin.TBContext(
        logdir=str(logdir), multiplexer=multiplexer,
        data_provider=data_provider.MultiplexerDataProvider(multiplexer, str(logdir))))
    request_context = context.RequestContext()
    experiment = get_experiment.Handler(request_context, backend, "", api_pb2.GetExperimentRequest()).run()
    every_status = [api_pb2.STATUS_UNKNOWN, api_pb2.STATUS_SUCCESS, api_pb2.STATUS_FAILURE, api_pb2.STATUS_RUNNING]
    request = api_pb2.ListSessionGroupsRequest(start_index=0, slice_size=1000, include_metrics=True,
                                               allowed_statuses=every_status)
    groups = list_session_groups.Handler(request_context, backend, "", request).run().session_groups
    sessions = {}
    for group in groups:
        session = group.sessions[0]
        sessions[session.name] = {
            "hparams": {key: getattr(value, value.WhichOneof("kind")) for key, value in group.hparams.items()},
            "status": api_pb2.Status.Name(session.status),
            "metrics": {value.name.tag: (value.training_step, round(value.value, 6)) for value in session.metric_values}}
    return experiment, sessions


def scalars(trial_dir: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(trial_dir), size_guidance={"scalars": 0})
    events.Reload()
    return {tag: [(e.step, round(e.value, 6)) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


class FakeTrial:
    """What Tune's logger callbacks use of a trial: `folder` stages its files (local_path), which Tune uploads
    to its folder in the run's storage (path; by default the staging folder itself)."""

    def __init__(self, folder: Path, trial_id: str, config: dict, run_uri: str | None = None):
        self.local_path, self.trial_id, self.config = str(folder / trial_id), trial_id, config
        self.path = storage.join(run_uri, trial_id) if run_uri else self.local_path
        self.last_result: dict = {}

    def init_local_path(self) -> None:
        Path(self.local_path).mkdir(parents=True, exist_ok=True)


def result(epoch: int, f1: float, **more) -> dict:
    """A result as Tune passes it to callbacks: the trial's metrics and Tune's own counters."""
    return {"epoch": epoch, "train/loss": 1.0 / epoch, "val/loss": 2.0 / epoch, "val/f1_macro": f1,
            "epoch_seconds": 3.0, "images_per_second": 50.0, "diverged": 0, "node_id": "abc", "written_best": f1,
            "training_iteration": epoch, "time_this_iter_s": 3.1, "time_total_s": 3.1 * epoch, "pid": 4242,
            "timestamp": 1_800_000_000 + epoch, "iterations_since_restore": epoch, "done": False,
            "config": {"model": "alexnet"}, **more}


def demo_settings(folder: Path):
    return settings_from_args(build_parser().parse_args(["--storage", str(folder), "--name", "demo"]))


def test_the_hparams_tab_lists_every_dimension_and_ranks_trials_by_their_best_epoch(tmp_path):
    settings = demo_settings(tmp_path)
    study = Path(settings.study_uri)
    write_experiment(settings)
    callback = StudyTensorBoard("val/f1_macro", "max")
    adam, sgd = FakeTrial(study, "aaaa0001", ADAM), FakeTrial(study, "bbbb0002", SGD)
    callback.log_trial_start(adam)  # the Adam trial first: it has no momentum
    for epoch, f1 in enumerate([0.3, 0.5, 0.4], start=1):
        callback.log_trial_result(epoch, adam, result(epoch, f1))
    callback.log_trial_end(adam)
    callback.log_trial_start(sgd)
    callback.log_trial_result(1, sgd, result(1, 0.2))  # still running

    experiment, sessions = hparams_tab(study)
    assert {info.name for info in experiment.hparam_infos} == DEMO_DIMENSIONS | {"seed"}
    lr = next(info for info in experiment.hparam_infos if info.name == "lr").domain_interval
    assert (lr.min_value, lr.max_value) == (2.0e-5, 5.0e-2)  # both optimizers' ranges
    assert [info.name.tag for info in experiment.metric_infos][:2] == ["best/val/f1_macro", "val/f1_macro"]
    assert sessions.keys() == {"aaaa0001", "bbbb0002"}
    finished, running = sessions["aaaa0001"], sessions["bbbb0002"]
    assert finished["status"] == "STATUS_SUCCESS"
    assert finished["metrics"]["best/val/f1_macro"] == (3, 0.5)  # its best epoch's value, not the last epoch's 0.4
    assert finished["hparams"] == {**ADAM, "batch_size": 16.0}
    assert running["status"] == "STATUS_UNKNOWN" and running["metrics"]["best/val/f1_macro"] == (1, 0.2)
    assert running["hparams"]["momentum"] == 0.9


def test_trial_curves_carry_the_study_metric_names_by_epoch_and_no_tune_counters(tmp_path):
    callback = StudyTensorBoard("val/loss", "min")
    trial = FakeTrial(tmp_path, "aaaa0001", ADAM)
    callback.log_trial_start(trial)
    for epoch, loss in enumerate([0.9, 0.7, 0.8], start=1):
        callback.log_trial_result(epoch, trial, {**result(epoch, 0.1), "val/loss": loss})
    curves = scalars(Path(trial.local_path))
    assert sorted(curves) == ["best/val/loss", "epoch_seconds", "images_per_second", "train/loss", "val/f1_macro",
                              "val/loss"]
    assert curves["val/loss"] == [(1, 0.9), (2, 0.7), (3, 0.8)]
    assert curves["best/val/loss"] == [(1, 0.9), (2, 0.7), (3, 0.7)]


def test_the_epoch_a_trial_diverged_in_adds_no_point_to_its_curves(tmp_path):
    """The diverged epoch's row holds the worst value of the study metric (0.0 here) as a placeholder, not a
    measurement: its curve dropped to 0.0 at epoch 3."""
    callback = StudyTensorBoard("val/f1_macro", "max")
    trial = FakeTrial(tmp_path, "aaaa0001", ADAM)
    callback.log_trial_start(trial)
    callback.log_trial_result(1, trial, result(1, 0.3))
    callback.log_trial_result(2, trial, result(2, 0.4))
    trial.last_result = {"epoch": 3, "val/f1_macro": 0.0, "diverged": 1, "training_iteration": 3,
                         "time_this_iter_s": 3.1, "done": True}
    callback.log_trial_result(3, trial, trial.last_result)
    callback.log_trial_end(trial)
    curves = scalars(Path(trial.local_path))
    assert curves["val/f1_macro"] == [(1, 0.3), (2, 0.4)]
    assert curves["best/val/f1_macro"] == [(1, 0.3), (2, 0.4)]


def test_a_diverged_trial_ends_as_a_failure_in_the_hparams_tab(tmp_path):
    """Tune completes a diverged trial as any other: the tab showed it a success, with nothing saying it diverged."""
    callback = StudyTensorBoard("val/f1_macro", "max")
    diverged, finished = FakeTrial(tmp_path, "aaaa0001", ADAM), FakeTrial(tmp_path, "bbbb0002", SGD)
    for trial in (diverged, finished):
        callback.log_trial_start(trial)
        callback.log_trial_result(1, trial, result(1, 0.3))
    diverged.last_result = {**result(2, 0.0), "diverged": 1}
    finished.last_result = result(2, 0.4)
    for trial in (diverged, finished):
        callback.log_trial_result(2, trial, trial.last_result)
        callback.log_trial_end(trial)
    _, sessions = hparams_tab(tmp_path)
    assert sessions["aaaa0001"]["status"] == "STATUS_FAILURE"
    assert sessions["aaaa0001"]["metrics"]["best/val/f1_macro"] == (1, 0.3)
    assert sessions["bbbb0002"]["status"] == "STATUS_SUCCESS"


def test_a_trial_that_asha_ends_at_its_rung_after_a_resume_gets_its_end_status(tmp_path):
    """It waited at a rung when the study was interrupted; the resume never ran it again (no events file of this
    run: Tune calls no start for it), and ASHA ended it there. It stayed "unknown" in the tab for good."""
    waiting = FakeTrial(tmp_path / "first", "aaaa0001", ADAM, str(tmp_path / "studies" / "demo"))
    first = StudyTensorBoard("val/f1_macro", "max")
    first.log_trial_start(waiting)
    first.log_trial_result(1, waiting, result(1, 0.3))  # the rung; then Ctrl-C
    storage.copy_tree(waiting.local_path, waiting.path)

    resumed = pickle.loads(pickle.dumps(StudyTensorBoard("val/f1_macro", "max")))
    resumed.set_state(first.get_state())
    staged = FakeTrial(tmp_path / "resumed", "aaaa0001", ADAM, waiting.path.rpartition("/")[0])
    staged.last_result = result(1, 0.3)
    with resumed_study(str(tmp_path / "studies" / "demo")):
        resumed.log_trial_end(staged)
    storage.copy_tree(staged.local_path, staged.path)

    _, sessions = hparams_tab(tmp_path / "studies" / "demo")
    assert sessions["aaaa0001"]["status"] == "STATUS_SUCCESS"
    assert sessions["aaaa0001"]["metrics"]["best/val/f1_macro"] == (1, 0.3)


def test_a_trial_resumed_from_an_earlier_epoch_continues_its_curves_and_best_from_there(tmp_path):
    """Tune restores the callback from its snapshot (get_state), and the trial from its last full state
    (after epoch 1): the epochs it reported after that are replaced, in its best and on its curves."""
    trial = FakeTrial(tmp_path, "aaaa0001", ADAM)
    first = StudyTensorBoard("val/f1_macro", "max")
    first.log_trial_start(trial)
    for epoch, f1 in enumerate([0.2, 0.6, 0.3], start=1):
        first.log_trial_result(epoch, trial, result(epoch, f1))
    first.log_trial_end(trial, failed=True)  # say, its node died, and the study was resumed

    resumed = pickle.loads(pickle.dumps(StudyTensorBoard("val/f1_macro", "max")))  # as tuner.pkl holds it
    resumed.set_state(pickle.loads(pickle.dumps(first.get_state())))
    resumed.log_trial_start(trial)
    for epoch, f1 in [(2, 0.25), (3, 0.35)]:
        resumed.log_trial_result(epoch, trial, result(epoch, f1))
    resumed.log_trial_end(trial)

    curves = scalars(Path(trial.local_path))
    assert curves["val/f1_macro"] == [(1, 0.2), (2, 0.25), (3, 0.35)]
    assert curves["best/val/f1_macro"] == [(1, 0.2), (2, 0.25), (3, 0.35)]


@pytest.mark.parametrize("staged", ["in a new folder", "where the first run staged them"])
@pytest.mark.parametrize("where", ["local", "s3"])
def test_a_failed_trial_that_a_resume_finishes_is_shown_as_finished_with_every_epoch(where, staged, tmp_path,
                                                                                        request):
    """Its worker died past --max-failures after epoch 2, and the resume ran it again from its last full state
    (epoch 1) to its end. TensorBoard's hparams plugin keeps the first end status it reads of a trial: the tab
    showed the finished trial as failed. Tune stages a trial's files on the driver and uploads them: a resume
    in a new Ray instance stages them in a new folder, one on the same Ray instance where the first run did."""
    study_uri = (request.getfixturevalue("s3_bucket") + "/studies/demo" if where == "s3"
                 else str(tmp_path / "studies" / "demo"))
    first_run = FakeTrial(tmp_path / "first", "aaaa0001", ADAM, study_uri)
    resumed_run = FakeTrial(tmp_path / ("resumed" if staged == "in a new folder" else "first"), "aaaa0001", ADAM,
                            study_uri)
    first = StudyTensorBoard("val/f1_macro", "max")
    first.log_trial_start(first_run)
    for epoch, f1 in enumerate([0.3, 0.6], start=1):
        first.log_trial_result(epoch, first_run, result(epoch, f1))
    first.log_trial_end(first_run, failed=True)
    storage.copy_tree(first_run.local_path, first_run.path)  # Tune uploads what the driver staged

    resumed = StudyTensorBoard("val/f1_macro", "max")
    resumed.set_state(first.get_state())
    with resumed_study(study_uri):
        resumed.log_trial_start(resumed_run)
        for epoch, f1 in [(2, 0.45), (3, 0.5)]:
            resumed.log_trial_result(epoch, resumed_run, result(epoch, f1))
        resumed.log_trial_end(resumed_run)
    storage.copy_tree(resumed_run.local_path, resumed_run.path)

    shown = tmp_path / "shown"
    storage.copy_tree(study_uri, str(shown))
    _, sessions = hparams_tab(shown)
    assert sessions["aaaa0001"]["status"] == "STATUS_SUCCESS"
    assert sessions["aaaa0001"]["metrics"]["best/val/f1_macro"] == (3, 0.5)
    curves = scalars(shown / "aaaa0001")
    assert curves["val/f1_macro"] == [(1, 0.3), (2, 0.45), (3, 0.5)]
    assert curves["train/loss"] == [(1, 1.0), (2, 0.5), (3, round(1 / 3, 6))]


@pytest.mark.parametrize("trouble", ["the failure cut short", "a record that does not decode",
                                     "storage that refuses to read"])
def test_a_resume_goes_on_whatever_it_cannot_rewrite_in_the_earlier_events(tmp_path, monkeypatch, caplog, trouble):
    """The earlier events cannot all be rewritten: the driver was killed while it wrote the trial's failure (the
    file ends in part of that event, which TensorBoard passes over), a disk damaged a record, or storage refuses.
    The resume goes on, keeps every epoch's scalars, and shows the new status or warns that it may not."""
    trial = FakeTrial(tmp_path, "aaaa0001", ADAM)
    first = StudyTensorBoard("val/f1_macro", "max")
    first.log_trial_start(trial)
    first.log_trial_result(1, trial, result(1, 0.3))
    first.log_trial_end(trial, failed=True)
    [events] = Path(trial.local_path).glob("events.out.tfevents.*")
    if trouble == "the failure cut short":
        events.write_bytes(events.read_bytes()[:-10])
    elif trouble == "a record that does not decode":
        garbage = b"\xff" * 10
        events.write_bytes(events.read_bytes() + len(garbage).to_bytes(8, "little") + bytes(4) + garbage + bytes(4))
    else:
        def refuse(uri):
            raise PermissionError(f"{uri}: access denied")
        monkeypatch.setattr(storage, "read_bytes", refuse)

    resumed = StudyTensorBoard("val/f1_macro", "max")
    resumed.set_state(first.get_state())
    with resumed_study(str(tmp_path)), caplog.at_level(logging.WARNING, logger="study.tensorboard"):
        resumed.log_trial_start(trial)
        resumed.log_trial_result(2, trial, result(2, 0.4))
        resumed.log_trial_end(trial)
    monkeypatch.undo()
    if trouble == "the failure cut short":
        assert hparams_tab(tmp_path)[1]["aaaa0001"]["status"] == "STATUS_SUCCESS"
    elif trouble == "storage that refuses to read":
        assert "could not take the earlier failure out of the trial's TensorBoard events" in caplog.text
    assert scalars(Path(trial.local_path))["val/f1_macro"] == [(1, 0.3), (2, 0.4)]


def test_a_confirm_run_lists_each_job_with_its_configuration(tmp_path):
    seeded = {**SGD, "seed": 3}
    callback = StudyTensorBoard("val/f1_macro", "max", job_configs=[ADAM, seeded])
    trial = FakeTrial(tmp_path, "cccc0003", {"job": 1})
    callback.log_trial_start(trial)
    callback.log_trial_result(1, trial, result(1, 0.4))
    callback.log_trial_end(trial)
    _, sessions = hparams_tab(tmp_path)
    assert sessions["cccc0003"]["hparams"] == {**seeded, "batch_size": 16.0, "seed": 3.0}
    assert sessions["cccc0003"]["metrics"]["best/val/f1_macro"] == (1, 0.4)


def test_the_study_hparams_tab_tells_the_seed_runs_of_study_confirm_apart_by_their_seed(tmp_path):
    """Its columns were the search space's dimensions: the seed runs of a configuration (under confirm/, which
    `tensorboard --logdir <study>` shows too) had the same values in every column, as had the search's trial
    they repeat. The seed is a column; the search's trials show the study's --seed."""
    settings = demo_settings(tmp_path)
    settings.seed = 7
    study = Path(settings.study_uri)
    write_experiment(settings)
    searched = FakeTrial(study, "aaaa0001", ADAM)
    repeats = [FakeTrial(study / "confirm", f"cccc000{job}", {"job": job}) for job in (0, 1)]
    for callback, trials in ((StudyTensorBoard("val/f1_macro", "max", seed=settings.seed), [searched]),
                             (StudyTensorBoard("val/f1_macro", "max", job_configs=[{**ADAM, "seed": 8},
                                                                                   {**ADAM, "seed": 9}]), repeats)):
        for trial in trials:
            callback.log_trial_start(trial)
            callback.log_trial_result(1, trial, result(1, 0.4))
            callback.log_trial_end(trial)

    experiment, sessions = hparams_tab(study)
    assert "seed" in {info.name for info in experiment.hparam_infos}
    assert {name: session["hparams"]["seed"] for name, session in sessions.items()} == {
        "aaaa0001": 7.0, "confirm/cccc0000": 8.0, "confirm/cccc0001": 9.0}


@pytest.mark.parametrize("where", ["local", "s3"])
def test_the_experiment_summary_is_written_into_the_study_folder(where, tmp_path, request):
    if where == "s3":
        settings = demo_settings(tmp_path)
        settings.storage = request.getfixturevalue("s3_bucket") + "/studies"
    else:
        settings = demo_settings(tmp_path / "studies")
    write_experiment(settings)
    local = tmp_path / "copy"
    local.mkdir()
    (local / EXPERIMENT_FILE).write_bytes(storage.read_bytes(storage.join(settings.study_uri, EXPERIMENT_FILE)))
    experiment, _ = hparams_tab(local)
    assert {info.name for info in experiment.hparam_infos} == DEMO_DIMENSIONS | {"seed"}


def test_with_tunes_newer_output_the_runs_folder_follows_tunes_tensorboard_hint(tmp_path, monkeypatch, caplog):
    """-v turns Tune's newer output on, which prints `tensorboard --logdir <its staging folder>`, no events there,
    before its first step; the callback logs the command that shows the trials' events, once per run."""
    study_uri = str(tmp_path / "studies" / "demo")
    callback = pickle.loads(pickle.dumps(StudyTensorBoard("val/f1_macro", "max", logdir=study_uri)))
    for new_output, lines in (("1", 1), ("0", 0)):  # -v; without, the old engine prints no hint
        monkeypatch.setenv("RAY_AIR_NEW_OUTPUT", new_output)
        caplog.clear()
        callback.setup()
        with caplog.at_level(logging.INFO, logger="study.tensorboard"):
            for iteration in range(3):
                callback.on_step_begin(iteration, [])
        assert [record.getMessage() for record in caplog.records] == [
            f"tensorboard: tensorboard --logdir {study_uri}  (the trials' TensorBoard events; not Tune's folder "
            "above)"] * lines
