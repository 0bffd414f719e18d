"""BestEpochOptunaSearch: Optuna records each trial's best epoch, the value ASHA and the analysis use."""

from __future__ import annotations

import optuna

from study.searcher import BestEpochOptunaSearch


def space(trial: optuna.Trial) -> None:
    trial.suggest_float("lr", 1e-4, 1e-1, log=True)


def searcher(mode: str = "max") -> BestEpochOptunaSearch:
    return BestEpochOptunaSearch(space, metric="val/f1_macro", mode=mode,
                                 sampler=optuna.samplers.TPESampler(seed=0))


def feed(search: BestEpochOptunaSearch, trial_id: str, curve: list[float]) -> None:
    assert search.suggest(trial_id) is not None
    for epoch, value in enumerate(curve, start=1):
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
