"""BestEpochASHA: rungs judge a trial by its best epoch so far, as the study selects it.

The curves are the ones measured on the covid-chestxray copy (val macro-F1 per
epoch, grace period 2, reduction factor 2, 6 epochs): a trial stuck on the
majority-class prediction, and a ResNet50 that dips below it before it learns.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

from ray.tune.schedulers import ASHAScheduler, TrialScheduler

from study.asha import BestEpochASHA

CONSTANT = [0.297] * 6                                  # predicts COVID-19 for every image
LEARNER = [0.297, 0.297, 0.238, 0.283, 0.238, 0.490]     # ResNet50 + Adam, lr 1e-4, batch 16
NEVER_THERE = [0.091, 0.092, 0.091, 0.091, 0.091, 0.091]  # never reaches the constant prediction


def run(scheduler, curves: dict[str, list[float]], metric: str = "val/f1_macro") -> dict[str, int]:
    """Feed the curves epoch by epoch, trials in turn; returns the epochs each trial got."""
    scheduler.set_search_properties(metric, "max" if metric != "val/loss" else "min")
    trials = {name: SimpleNamespace(trial_id=name) for name in curves}
    for trial in trials.values():
        scheduler.on_trial_add(None, trial)
    epochs = {name: 0 for name in curves}
    running = set(curves)
    for epoch in range(1, 7):
        for name in list(curves):
            if name not in running:
                continue
            epochs[name] = epoch
            action = scheduler.on_trial_result(None, trials[name], {"training_iteration": epoch,
                                                                      metric: curves[name][epoch - 1]})
            if action == TrialScheduler.STOP:
                running.discard(name)
    return epochs


def asha(cls):
    return cls(time_attr="training_iteration", max_t=6, grace_period=2, reduction_factor=2)


def test_a_learner_that_dips_below_the_constant_prediction_is_kept():
    curves = {"constant": CONSTANT, "learner": LEARNER}
    assert run(asha(ASHAScheduler), curves)["learner"] == 4  # Ray's ASHA stops it at the epoch-4 rung
    assert run(asha(BestEpochASHA), curves) == {"constant": 6, "learner": 6}


def test_a_trial_whose_best_stays_below_the_cutoff_is_still_stopped():
    epochs = run(asha(BestEpochASHA), {"constant": CONSTANT, "learner": LEARNER, "never": NEVER_THERE})
    assert epochs["never"] == 2
    assert epochs["learner"] == 6


def test_losses_are_judged_by_their_lowest_epoch():
    # val/loss: the first trial's best (lowest) epoch so far beats the second's at every rung.
    curves = {"steady": [1.0, 0.8, 0.8, 0.7, 0.7, 0.7], "bumpy": [1.1, 0.6, 0.9, 0.95, 0.5, 0.5],
              "poor": [1.2, 1.1, 1.1, 1.1, 1.1, 1.1]}
    assert run(asha(ASHAScheduler), curves, "val/loss")["bumpy"] == 4
    assert run(asha(BestEpochASHA), curves, "val/loss") == {"steady": 6, "bumpy": 6, "poor": 2}


def test_a_nan_result_does_not_replace_the_best():
    scheduler = asha(BestEpochASHA)
    scheduler.set_search_properties("val/f1_macro", "max")
    trial = SimpleNamespace(trial_id="t")
    scheduler.on_trial_add(None, trial)
    assert scheduler._with_best("t", {"val/f1_macro": 0.4})["val/f1_macro"] == 0.4
    assert math.isnan(scheduler._with_best("t", {"val/f1_macro": float("nan")})["val/f1_macro"])  # as ASHA had it
    assert scheduler._with_best("t", {"val/f1_macro": 0.1})["val/f1_macro"] == 0.4


def test_the_best_epochs_survive_a_restore(tmp_path):
    """A resumed study restores the scheduler from its saved state: the bests so far come with it."""
    scheduler = asha(BestEpochASHA)
    curves = {"constant": CONSTANT, "learner": LEARNER}
    scheduler.set_search_properties("val/f1_macro", "max")
    trials = {name: SimpleNamespace(trial_id=name) for name in curves}
    for name, trial in trials.items():
        scheduler.on_trial_add(None, trial)
        for epoch in (1, 2, 3):
            scheduler.on_trial_result(None, trial, {"training_iteration": epoch, "val/f1_macro": curves[name][epoch - 1]})
    scheduler.save(str(tmp_path / "scheduler.pkl"))
    restored = asha(BestEpochASHA)
    restored.restore(str(tmp_path / "scheduler.pkl"))
    assert restored.on_trial_result(None, trials["constant"], {"training_iteration": 4, "val/f1_macro": 0.297}) \
        == TrialScheduler.CONTINUE
    assert restored.on_trial_result(None, trials["learner"], {"training_iteration": 4, "val/f1_macro": 0.283}) \
        == TrialScheduler.CONTINUE
