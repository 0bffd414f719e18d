"""BestEpochOptunaSearch: Optuna records each trial's best epoch, the value ASHA and the analysis use, in an
Optuna storage file that a resume continues."""

from __future__ import annotations

import json
import logging
import pickle
import shutil
from pathlib import Path

import optuna
import pytest
from ray.tune.search import ConcurrencyLimiter, Searcher

from cxrnets.errors import CxrError
from study import storage
from study.searcher import (REDRAWS, BestEpochOptunaSearch, StudySearchGenerator, open_storage,
                            restore_storage_file, storage_file_uri, storage_url)
from study.settings import resumed_study
from study.space import parse_space


def space(trial: optuna.Trial) -> None:
    trial.suggest_float("lr", 1e-4, 1e-1, log=True)


def searcher(mode: str = "max") -> BestEpochOptunaSearch:
    return BestEpochOptunaSearch(space, metric="val/f1_macro", mode=mode,
                                 sampler=optuna.samplers.TPESampler(seed=0))


def feed(search: BestEpochOptunaSearch, trial_id: str, curve: list[float]) -> None:
    """As Tune does for a trial stopped by the scheduler (ASHA at a rung or at max_t): every epoch but the
    last through on_trial_result, the last only through on_trial_complete."""
    assert search.suggest(trial_id) is not None
    for epoch, value in enumerate(curve[:-1], start=1):
        search.on_trial_result(trial_id, {"training_iteration": epoch, "val/f1_macro": value})
    search.on_trial_complete(trial_id, {"training_iteration": len(curve), "val/f1_macro": curve[-1]})


def test_the_recorded_value_is_the_best_epochs():
    search = searcher()
    curves = {"peaked": [0.30, 0.45, 0.38], "stopped-early": [0.29, 0.33], "steady": [0.2, 0.25, 0.31],
              "diverged": [0.40, 0.0]}  # a diverged trial's last report is the worst result
    for trial_id, curve in curves.items():
        feed(search, trial_id, curve)
    trials = search._ot_study.trials
    assert [t.value for t in trials] == [max(curve) for curve in curves.values()]
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    assert [list(t.intermediate_values.values()) for t in trials] == list(curves.values())  # every epoch kept


def test_a_diverged_epoch_is_no_intermediate_value_and_a_trial_that_diverged_at_once_records_the_worst():
    """The epoch a trial diverged in reports a placeholder (the worst value), not a measurement: Optuna's
    dashboard plotted it as that epoch's value. The trial's value stays its best measured epoch, or the worst
    value where it diverged in its first epoch (so that the sampler learns to avoid it)."""
    search = searcher()
    for trial_id, curve in (("late", [0.3, 0.4]), ("at-once", [])):
        search.suggest(trial_id)
        for epoch, value in enumerate(curve, start=1):
            search.on_trial_result(trial_id, {"training_iteration": epoch, "val/f1_macro": value, "diverged": 0})
        search.on_trial_complete(trial_id, {"training_iteration": len(curve) + 1, "val/f1_macro": 0.0,
                                            "diverged": 1})
    late, at_once = search._ot_study.trials
    assert late.intermediate_values == {1: 0.3, 2: 0.4} and late.value == 0.4
    assert late.user_attrs["diverged_at_epoch"] == 3
    assert at_once.intermediate_values == {} and at_once.value == 0.0
    assert at_once.state == optuna.trial.TrialState.COMPLETE and at_once.user_attrs["diverged_at_epoch"] == 1


def test_the_epoch_that_ends_a_trial_counts_however_it_arrives():
    search = searcher()
    feed(search, "best-last", [0.2, 0.3, 0.5])  # the last epoch only in on_trial_complete (a stopped trial)
    search.suggest("ran-out")  # a trainable that returned: its last result also came through on_trial_result
    for epoch, value in enumerate([0.1, 0.4], start=1):
        search.on_trial_result("ran-out", {"training_iteration": epoch, "val/f1_macro": value})
    search.on_trial_complete("ran-out", {"training_iteration": 2, "val/f1_macro": 0.4})
    best_last, ran_out = search._ot_study.trials
    assert best_last.value == 0.5 and best_last.intermediate_values == {1: 0.2, 2: 0.3, 3: 0.5}
    assert ran_out.value == 0.4 and ran_out.intermediate_values == {1: 0.1, 2: 0.4}


def test_a_trial_that_waited_at_a_rung_and_ended_there_completes_with_its_best():
    """Promoting ASHA: a trial paused at a rung is never promoted; Tune ends it without a result."""
    search = searcher()
    search.suggest("waited")
    for epoch, value in enumerate([0.3, 0.2], start=1):
        search.on_trial_result("waited", {"training_iteration": epoch, "val/f1_macro": value})
    search.on_trial_complete("waited")
    search.suggest("never-ran")  # ended before its first epoch: nothing to record
    search.on_trial_complete("never-ran")
    waited, never_ran = search._ot_study.trials
    assert waited.state == optuna.trial.TrialState.COMPLETE and waited.value == 0.3
    assert never_ran.state == optuna.trial.TrialState.PRUNED


def test_a_loss_records_its_lowest_epoch():
    search = BestEpochOptunaSearch(space, metric="val/loss", mode="min", sampler=optuna.samplers.TPESampler(seed=0))
    search.suggest("t")
    for epoch, value in enumerate([1.0, 0.7, 0.9], start=1):
        search.on_trial_result("t", {"training_iteration": epoch, "val/loss": value})
    search.on_trial_complete("t", {"training_iteration": 3, "val/loss": 0.9})
    assert search._ot_study.trials[0].value == 0.7


def test_the_bests_survive_a_restore(tmp_path):
    search = searcher()
    search.suggest("t")
    search.on_trial_result("t", {"training_iteration": 1, "val/f1_macro": 0.5})
    search.save(str(tmp_path / "searcher.pkl"))
    restored = searcher()
    restored.restore(str(tmp_path / "searcher.pkl"))
    restored.on_trial_result("t", {"training_iteration": 2, "val/f1_macro": 0.3})
    restored.on_trial_complete("t", {"training_iteration": 2, "val/f1_macro": 0.3})
    assert restored._ot_study.trials[0].value == 0.5


def test_a_trial_never_repeats_a_configuration_that_ran_or_runs():
    """Every trial trains with the study's seed: a repeated configuration would train the same curve again.
    A repeat is drawn again, and stays in the Optuna study as a FAIL trial naming the trial it repeats."""
    def three_rates(trial: optuna.Trial) -> None:
        trial.suggest_categorical("lr", [1e-4, 1e-3, 1e-2])

    search = BestEpochOptunaSearch(three_rates, metric="val/f1_macro", mode="max",
                                   sampler=optuna.samplers.RandomSampler(seed=0))
    feed(search, "a", [0.3, 0.4])            # finished
    running = search.suggest("b")            # still running when the next is proposed
    third = search.suggest("c")
    configs = [search._ot_trials[t].params["lr"] for t in ("a", "b", "c")]
    assert sorted(configs) == [1e-4, 1e-3, 1e-2] and running["lr"] == configs[1] and third["lr"] == configs[2]
    trials = search._ot_study.get_trials(deepcopy=False)
    skipped = [t for t in trials if "repeat_of" in t.user_attrs]
    assert skipped, "seeded random draws from 3 values repeat within 3 trials"
    assert all(t.state == optuna.trial.TrialState.FAIL and "trial_id" not in t.user_attrs for t in skipped)
    assert all(trials[t.user_attrs["repeat_of"]].params == t.params for t in skipped)
    assert {t.user_attrs.get("trial_id") for t in trials} - {None} == {"a", "b", "c"}


def stuck_searcher(rates: list[float]) -> BestEpochOptunaSearch:
    """A searcher over a space of `rates` whose sampler proposes the first rate, whatever ran (as TPE does
    on a small space it has nearly covered, concentrating on the best so far)."""
    space = parse_space({"search": {"lr": {"choice": rates}, "batch_size": {"value": 16}}})
    stuck = optuna.samplers.PartialFixedSampler({"lr": rates[0]}, optuna.samplers.RandomSampler(seed=0))
    return BestEpochOptunaSearch(space, metric="val/f1_macro", mode="max", sampler=stuck)


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")  # PartialFixedSampler
def test_a_sampler_that_proposes_only_repeats_gets_untried_configurations_then_the_search_ends():
    search = stuck_searcher([1e-3, 1e-4, 1e-2])
    feed(search, "a", [0.3])
    second = search.suggest("b")  # REDRAWS repeats, then an untried configuration
    third = search.suggest("c")   # runs beside b
    assert sorted([1e-3, second["lr"], third["lr"]]) == [1e-4, 1e-3, 1e-2]
    assert second["batch_size"] == third["batch_size"] == 16  # the space's constants still come with it
    assert search.suggest("d") == Searcher.FINISHED, "every configuration ran or runs: nothing new to train"
    trials = search._ot_study.get_trials(deepcopy=False)
    assert [t.user_attrs["trial_id"] for t in trials if "trial_id" in t.user_attrs] == ["a", "b", "c"]
    assert sum("repeat_of" in t.user_attrs for t in trials) == 2 * (REDRAWS + 1)  # b's and c's; d asks for none


def test_a_space_of_many_choices_is_not_listed_at_each_suggestion(monkeypatch):
    """Each suggestion asked whether the space was used up by listing every configuration: 0.4 s a trial at
    26,000 configurations, minutes at millions. Counting does; listing waits for a sampler stuck on repeats."""
    space = parse_space({"search": {"lr": {"choice": [10.0 ** -i for i in range(1, 9)]},
                                    "batch_size": {"choice": list(range(2, 10))}}})
    search = BestEpochOptunaSearch(space, metric="val/f1_macro", mode="max",
                                   sampler=optuna.samplers.RandomSampler(seed=0))

    def listed():
        raise AssertionError("the space's configurations were listed")

    monkeypatch.setattr(space, "configurations", listed)
    for trial_id in "abc":
        feed(search, trial_id, [0.3])


def test_a_space_with_a_range_repeats_a_configuration_rather_than_waiting():
    """A range's configurations cannot be listed: after REDRAWS repeats the repeat runs."""
    def one_rate(trial: optuna.Trial) -> None:
        trial.suggest_categorical("lr", [1e-3])

    search = BestEpochOptunaSearch(one_rate, metric="val/f1_macro", mode="max",
                                   sampler=optuna.samplers.TPESampler(seed=0))
    feed(search, "a", [0.3])
    assert search.suggest("b") == {"lr": 1e-3}
    trials = search._ot_study.get_trials(deepcopy=False)
    assert sum("repeat_of" in t.user_attrs for t in trials) == REDRAWS
    assert trials[-1].user_attrs["trial_id"] == "b" and trials[-1].state == optuna.trial.TrialState.RUNNING



def two_configuration_grid(study_uri=None) -> BestEpochOptunaSearch:
    space = parse_space({"sampler": "grid", "search": {"model": {"choice": ["resnet50"]},
                                                       "optimizer": {"choice": ["adam", "sgd"]},
                                                       "lr": {"value": 1e-3}, "batch_size": {"value": 16}}})
    return BestEpochOptunaSearch(space, metric="val/f1_macro", mode="max", sampler=space.make_sampler(0, 2),
                                 study_name="demo", study_uri=study_uri and str(study_uri))


@pytest.mark.parametrize("stored", [False, True], ids=["in memory", "stored"])
def test_a_grid_used_up_ends_the_search_without_an_error_or_a_warning(tmp_path, monkeypatch, caplog, stored):
    """--num-samples above the grid's configurations: once every configuration ran, the search ends
    (Searcher.FINISHED). Optuna's GridSampler calls study.stop() once its grid is used up, which raises
    RuntimeError outside Study.optimize (Tune never runs it): the study crashed with a traceback at its next
    trial, and Ray warned of it at the grid's last trial. A resume ends the same way."""
    monkeypatch.setattr(logging.getLogger("ray"), "propagate", True)  # Ray's warnings, to caplog
    study_uri = tmp_path / "study" if stored else None
    search = two_configuration_grid(study_uri)
    with caplog.at_level(logging.WARNING):
        feed(search, "a", [0.3])
        feed(search, "b", [0.4])
        assert search.suggest("c") == Searcher.FINISHED
        if stored:
            search.save(str(tmp_path / "searcher.pkl"))
            resumed = two_configuration_grid(study_uri)
            resumed.restore(str(tmp_path / "searcher.pkl"))
            assert resumed.suggest("d") == Searcher.FINISHED
    assert caplog.messages == []
    configurations = [t.params for t in search._ot_study.get_trials(deepcopy=False)
                      if t.state == optuna.trial.TrialState.COMPLETE]
    assert sorted(c["optimizer"] for c in configurations) == ["adam", "sgd"]


# ------------------------------------------------------------------ the Optuna study stored with the study

def stored_searcher(study_uri) -> BestEpochOptunaSearch:
    return BestEpochOptunaSearch(space, metric="val/f1_macro", mode="max", sampler=optuna.samplers.TPESampler(seed=0),
                                 study_name="demo", study_uri=str(study_uri))


def stored_trials(path) -> dict[str, optuna.trial.FrozenTrial]:
    """The storage file's trials, read by Optuna itself, by their Tune trial id."""
    trials = optuna.load_study(study_name="demo", storage=storage_url(path)).trials
    return {t.user_attrs.get("trial_id", f"#{t.number}"): t for t in trials}


def test_the_storage_file_holds_each_trial_with_its_best_epoch(tmp_path):
    path = tmp_path / "study" / "optuna.db"
    search = stored_searcher(path.parent)
    feed(search, "a", [0.30, 0.45, 0.38])
    feed(search, "b", [0.29, 0.33])
    trials = stored_trials(path)
    assert set(trials) == {"a", "b"}
    assert trials["a"].value == 0.45 and trials["b"].value == 0.33
    assert trials["a"].intermediate_values == {1: 0.30, 2: 0.45, 3: 0.38}


def test_a_restore_reconciles_the_snapshot_with_a_storage_that_ran_ahead(tmp_path):
    """Tune's snapshot of the searcher can be older than the storage file: a trial that finished after
    it is rerun by the resume but keeps its one value; a trial started after it is forgotten by the
    resume and marked failed; a trial running at the snapshot goes on."""
    path = tmp_path / "optuna.db"
    search = stored_searcher(tmp_path)
    feed(search, "done", [0.2, 0.4])
    search.suggest("finished-after")
    search.on_trial_result("finished-after", {"training_iteration": 1, "val/f1_macro": 0.3})
    search.suggest("running")
    search.on_trial_result("running", {"training_iteration": 1, "val/f1_macro": 0.1})
    search.save(str(tmp_path / "searcher.pkl"))  # Tune's snapshot
    search.on_trial_result("finished-after", {"training_iteration": 2, "val/f1_macro": 0.5})
    search.on_trial_complete("finished-after", {"training_iteration": 2, "val/f1_macro": 0.5})
    search.suggest("started-after")  # then the driver is killed

    resumed = stored_searcher(tmp_path)
    resumed.restore(str(tmp_path / "searcher.pkl"))
    for epoch, value in ((2, 0.1), (3, 0.05)):  # the resume reruns "finished-after" from its checkpoint
        resumed.on_trial_result("finished-after", {"training_iteration": epoch, "val/f1_macro": value})
    resumed.on_trial_complete("finished-after", {"training_iteration": 3, "val/f1_macro": 0.05})
    resumed.on_trial_result("running", {"training_iteration": 2, "val/f1_macro": 0.6})
    resumed.on_trial_complete("running", {"training_iteration": 2, "val/f1_macro": 0.6})
    feed(resumed, "new", [0.35])

    trials = stored_trials(path)
    assert sorted(trials) == ["done", "finished-after", "new", "running", "started-after"]  # each once
    assert {k: t.value for k, t in trials.items() if t.state.name == "COMPLETE"} == {
        "done": 0.4, "finished-after": 0.5, "running": 0.6, "new": 0.35}
    assert trials["started-after"].state.name == "FAIL"


def failed_before_the_snapshot(search: BestEpochOptunaSearch, snapshot: Path) -> None:
    """Its worker died past --max-failures; Tuner.restore(resume_errored=True) runs it again from its last
    full state."""
    assert search.suggest("rerun") is not None
    search.on_trial_result("rerun", {"training_iteration": 1, "val/f1_macro": 0.3})
    search.on_trial_complete("rerun", error=True)
    search.save(str(snapshot))


def test_a_trial_optuna_holds_failed_that_the_resume_runs_teaches_the_sampler_its_best(tmp_path):
    """A finished (FAIL) Optuna trial cannot be told again, and TPE ignores FAIL trials: the configuration and
    best value of a trial the resume runs go in as a new COMPLETE trial."""
    path, snapshot = tmp_path / "optuna.db", tmp_path / "searcher.pkl"
    failed_before_the_snapshot(stored_searcher(tmp_path), snapshot)

    resumed = stored_searcher(tmp_path)
    resumed.restore(str(snapshot))
    for epoch, value in ((2, 0.45), (3, 0.4)):
        resumed.on_trial_result("rerun", {"training_iteration": epoch, "val/f1_macro": value})
    resumed.on_trial_complete("rerun", {"training_iteration": 4, "val/f1_macro": 0.35})

    trials = optuna.load_study(study_name="demo", storage=storage_url(path)).trials
    assert [t.state.name for t in trials] == ["FAIL", "COMPLETE"]
    failed, rerun = trials
    assert rerun.value == 0.45 and rerun.params == failed.params
    assert rerun.user_attrs == {"trial_id": "rerun", "rerun_of": failed.number}


def test_a_trial_started_after_the_searchers_snapshot_that_the_resume_runs_is_in_optuna_once(tmp_path):
    """Tune's snapshot of its trials, uploaded file by file, can be newer than its snapshot of the searcher: the
    resume ran a trial the restored searcher never suggested, which was marked FAIL and went in again as a new
    COMPLETE trial, so optuna.db held it twice (a KeyError ended the resumed study before that). It goes on as
    the same Optuna trial, valued at its best epoch, the one before the kill included."""
    path, snapshot = tmp_path / "optuna.db", tmp_path / "searcher.pkl"
    search = stored_searcher(tmp_path)
    feed(search, "done", [0.2, 0.4])
    search.save(str(snapshot))
    search.suggest("resumed")
    search.on_trial_result("resumed", {"training_iteration": 1, "val/f1_macro": 0.5})
    (tmp_path / "experiment_state-2026-12-07_13-00-00.json").write_text(json.dumps(  # Tune's, then the kill
        {"trial_data": [[json.dumps({"trial_id": trial_id, "status": status}), "{}"]
                        for trial_id, status in (("done", "TERMINATED"), ("resumed", "RUNNING"))]}))

    resumed = stored_searcher(tmp_path)
    resumed.restore(str(snapshot))
    resumed.on_trial_result("resumed", {"training_iteration": 2, "val/f1_macro": 0.45})  # from its full state
    resumed.on_trial_complete("resumed", {"training_iteration": 3, "val/f1_macro": 0.35})

    trials = stored_trials(path)
    assert len(optuna.load_study(study_name="demo", storage=storage_url(path)).trials) == 2
    assert {trial_id: (t.state.name, t.value) for trial_id, t in trials.items()} == {
        "done": ("COMPLETE", 0.4), "resumed": ("COMPLETE", 0.5)}
    assert trials["resumed"].intermediate_values == {1: 0.5, 2: 0.45, 3: 0.35}


def test_a_rerun_failed_trial_is_told_its_best_over_the_epochs_before_and_after_the_resume(tmp_path):
    """A trial reported 0.524 and 0.552, errored, and the resume trained its epoch 3 (0.2) from its last full
    state: the results table and the analysis give it 0.552, and so does Optuna."""
    path, snapshot = tmp_path / "optuna.db", tmp_path / "searcher.pkl"
    search = stored_searcher(tmp_path)
    search.suggest("rerun")
    for epoch, value in ((1, 0.524), (2, 0.552)):
        search.on_trial_result("rerun", {"training_iteration": epoch, "val/f1_macro": value})
    search.on_trial_complete("rerun", error=True)
    search.save(str(snapshot))

    resumed = stored_searcher(tmp_path)
    resumed.restore(str(snapshot))
    resumed.on_trial_complete("rerun", {"training_iteration": 3, "val/f1_macro": 0.2})

    failed, rerun = optuna.load_study(study_name="demo", storage=storage_url(path)).trials
    assert rerun.state.name == "COMPLETE" and rerun.value == 0.552
    assert rerun.intermediate_values == {1: 0.524, 2: 0.552, 3: 0.2}


LR_PER_OPTIMIZER = {"search": {"model": {"value": "resnet50"}, "optimizer": {"choice": ["adam", "sgd"]},
                               "lr": [{"loguniform": [1e-5, 1e-3], "when": {"optimizer": "adam"}},
                                      {"loguniform": [1e-3, 1e-1], "when": {"optimizer": "sgd"}}],
                               "batch_size": {"value": 16}}}


def lr_in_its_optimizers_range(config: dict) -> bool:
    return (1e-5 <= config["lr"] <= 1e-3) if config["optimizer"] == "adam" else (1e-3 <= config["lr"] <= 1e-1)


def test_a_trial_trains_the_key_of_the_alternative_optuna_drew():
    """Optuna draws Adam's learning rate as lr|optimizer=adam; the trial's config (what it trains, what the
    results record) holds it as lr."""
    search = BestEpochOptunaSearch(parse_space(LR_PER_OPTIMIZER), metric="val/f1_macro", mode="max",
                                   sampler=optuna.samplers.RandomSampler(seed=0))
    for i in range(6):
        config = search.suggest(f"t{i}")
        assert set(config) == {"model", "optimizer", "lr", "batch_size"} and lr_in_its_optimizers_range(config)
        assert set(search._ot_trials[f"t{i}"].params) == {"optimizer", f"lr|optimizer={config['optimizer']}"}


def test_a_study_whose_alternatives_shared_one_optuna_name_resumes_under_that_name(tmp_path):
    """A study's searcher snapshot holds the space it started with: one from before each alternative had its
    own Optuna name resumes suggesting lr, as its Optuna trials record it, with TPE past its start-up."""
    old_space = parse_space(LR_PER_OPTIMIZER)
    for dimension in old_space.dimensions:
        del dimension.__dict__["alternative"]  # as a snapshot pickled before the field existed unpickles

    def old_searcher() -> BestEpochOptunaSearch:
        return BestEpochOptunaSearch(old_space, metric="val/f1_macro", mode="max", study_name="demo",
                                     sampler=optuna.samplers.TPESampler(seed=0, n_startup_trials=2),
                                     study_uri=str(tmp_path))

    search = old_searcher()
    for i in range(3):
        feed(search, f"t{i}", [0.1 * i])
    search.save(str(tmp_path / "searcher.pkl"))
    resumed = old_searcher()
    resumed.restore(str(tmp_path / "searcher.pkl"))
    configs = [resumed.suggest(f"r{i}") for i in range(4)]
    assert all(set(c) == {"model", "optimizer", "lr", "batch_size"} and lr_in_its_optimizers_range(c) for c in configs)
    assert {name for t in stored_trials(tmp_path / "optuna.db").values() for name in t.params} == {"optimizer", "lr"}


def test_a_resume_after_a_kill_does_not_report_an_epoch_optuna_holds_already(tmp_path, recwarn):
    """Tune's snapshot of the searcher is older than the storage: the resume reruns epochs Optuna holds."""
    search = stored_searcher(tmp_path)
    search.suggest("running")
    search.on_trial_result("running", {"training_iteration": 1, "val/f1_macro": 0.1})
    search.save(str(tmp_path / "searcher.pkl"))
    for epoch, value in ((2, 0.3), (3, 0.4)):
        search.on_trial_result("running", {"training_iteration": epoch, "val/f1_macro": value})

    resumed = stored_searcher(tmp_path)
    resumed.restore(str(tmp_path / "searcher.pkl"))
    resumed.on_trial_result("running", {"training_iteration": 3, "val/f1_macro": 0.4})
    resumed.on_trial_complete("running", {"training_iteration": 4, "val/f1_macro": 0.2})

    assert not [w for w in recwarn if "already reported" in str(w.message)]
    assert stored_trials(tmp_path / "optuna.db")["running"].intermediate_values == {1: 0.1, 2: 0.3, 3: 0.4, 4: 0.2}


@pytest.mark.parametrize("damage", ["missing", "corrupt", "another study"])
def test_a_resume_refuses_a_storage_file_it_cannot_continue(tmp_path, damage):
    study_dir = tmp_path / "studies" / "demo"
    path = study_dir / "optuna.db"
    if damage == "corrupt":
        path.parent.mkdir(parents=True)
        path.write_bytes(b"not a database" * 100)
    elif damage == "another study":
        optuna.create_study(study_name="other", storage=open_storage(path))
    with pytest.raises(CxrError) as error:
        restore_storage_file(str(study_dir), "demo")
    assert str(path) in str(error.value)
    assert {"missing": "is missing", "corrupt": "not a readable Optuna storage",
            "another study": "holds the Optuna study 'other', not this study's 'demo'"}[damage] in str(error.value)
    assert "restore" in str(error.value) or "put back" in str(error.value)


def test_a_resume_accepts_its_own_storage_file(tmp_path):
    study_dir = tmp_path / "demo"
    stored_searcher(study_dir)
    assert restore_storage_file(str(study_dir), "demo") == study_dir / "optuna.db"


def test_the_copy_for_object_storage_follows_every_start_epoch_and_end(tmp_path, s3_bucket):
    """A study in a bucket: the copy always knows every trial started and every epoch reported, so a
    resume from it can continue any trial Tune's snapshot holds."""
    study_uri = f"{s3_bucket}/studies/demo"

    def bucket_trials() -> dict[str, optuna.trial.FrozenTrial]:
        copy = tmp_path / "copy.db"
        copy.write_bytes(storage.read_bytes(storage_file_uri(study_uri)))
        return stored_trials(copy)

    search = stored_searcher(study_uri)
    search.suggest("a")
    assert list(bucket_trials()) == ["a"] and bucket_trials()["a"].state.name == "RUNNING"
    search.on_trial_result("a", {"training_iteration": 1, "val/f1_macro": 0.3})
    assert bucket_trials()["a"].intermediate_values == {1: 0.3}
    search.on_trial_complete("a", {"training_iteration": 1, "val/f1_macro": 0.3})
    assert bucket_trials()["a"].value == 0.3


def test_a_moved_study_continues_its_own_optuna_study_where_it_lies_now(tmp_path):
    """Tune pickles the searcher twice (tuner.pkl at the start, a snapshot as it runs); a resume of the
    study moved and renamed since unpickles both: the searcher reads and writes the moved optuna.db, with
    its trials, and never recreates the old folder."""
    old, new = tmp_path / "studies" / "demo", tmp_path / "elsewhere" / "demo-copy"
    search = stored_searcher(old)
    pickled_at_start = pickle.dumps(search)
    feed(search, "done", [0.2, 0.4])
    search.suggest("running")
    search.on_trial_result("running", {"training_iteration": 1, "val/f1_macro": 0.1})
    search.save(str(tmp_path / "searcher.pkl"))
    new.parent.mkdir()
    shutil.move(old, new)

    with resumed_study(str(new)):
        resumed = pickle.loads(pickled_at_start)
        resumed.restore(str(tmp_path / "searcher.pkl"))
    resumed.on_trial_result("running", {"training_iteration": 2, "val/f1_macro": 0.6})
    resumed.on_trial_complete("running", {"training_iteration": 2, "val/f1_macro": 0.6})
    feed(resumed, "new", [0.35])

    assert not old.exists()
    trials = stored_trials(new / "optuna.db")
    assert {k: (t.state.name, t.value) for k, t in trials.items()} == {
        "done": ("COMPLETE", 0.4), "running": ("COMPLETE", 0.6), "new": ("COMPLETE", 0.35)}
    assert trials["running"].intermediate_values == {1: 0.1, 2: 0.6}


class RecordingSearcher(Searcher):
    def __init__(self):
        super().__init__(metric="val/f1_macro", mode="max")
        self.completed = []

    def suggest(self, trial_id: str) -> dict:
        return {"lr": 0.01}

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        self.completed.append((trial_id, error))


def test_under_max_concurrent_the_end_of_a_trial_the_resume_runs_again_reaches_the_searcher():
    """--asha stopping --max-concurrent: Ray's ConcurrencyLimiter forgets a trial once it errored (or never knew
    one started after its snapshot), and dropped its end when the resume ran it again: Optuna kept it FAIL."""
    searcher = RecordingSearcher()
    generator = StudySearchGenerator(ConcurrencyLimiter(searcher, max_concurrent=1))
    assert generator.searcher.suggest("failed") is not None
    generator.on_trial_complete("failed", error=True)
    generator.on_trial_complete("failed", {"training_iteration": 3, "val/f1_macro": 0.2})  # run again by --resume
    generator.on_trial_complete("started-after-the-snapshot", {"training_iteration": 1, "val/f1_macro": 0.3})
    assert searcher.completed == [("failed", True), ("failed", False), ("started-after-the-snapshot", False)]
    assert generator.searcher.suggest("next") is not None  # the limiter's own count is unharmed
