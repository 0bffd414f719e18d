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


def replay(scheduler, reports: dict[str, list[dict]], metric: str = "val/f1_macro") -> dict[str, int]:
    """Feed each trial's reports epoch by epoch, trials in turn; returns the epochs each trial got."""
    scheduler.set_search_properties(metric, "min" if metric == "val/loss" else "max")
    trials = {name: SimpleNamespace(trial_id=name) for name in reports}
    for trial in trials.values():
        scheduler.on_trial_add(None, trial)
    epochs = {name: 0 for name in reports}
    running = set(reports)
    for epoch in range(1, 7):
        for name in reports:
            if name in running:
                epochs[name] = epoch
                result = {"training_iteration": epoch, **reports[name][epoch - 1]}
                if scheduler.on_trial_result(None, trials[name], result) == TrialScheduler.STOP:
                    running.discard(name)
    return epochs


def run(scheduler, curves: dict[str, list[float]], metric: str = "val/f1_macro") -> dict[str, int]:
    """replay() of one metric's curves."""
    return replay(scheduler, {name: [{metric: value} for value in curve] for name, curve in curves.items()}, metric)


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


# ------------------------------------------------------------------ ties broken by a second metric

def run_pairs(scheduler, curves: dict[str, list[tuple[float, float]]]) -> dict[str, int]:
    """replay() of (val/f1_macro, val/loss) curves."""
    return replay(scheduler, {name: [{"val/f1_macro": f1, "val/loss": loss} for f1, loss in curve]
                              for name, curve in curves.items()})


def tie_breaking(**options):
    return BestEpochASHA(time_attr="training_iteration", max_t=6, grace_period=2, reduction_factor=2,
                         tie_break="val/loss", tie_break_mode="min", **options)


# Four trials on the constant prediction (the same macro-F1 every epoch), their losses apart.
STUCK = {name: [(0.297, loss)] * 6 for name, loss in (("a", 1.10), ("b", 1.08), ("c", 1.12), ("d", 1.05))}


def test_trials_tied_on_the_constant_prediction_are_stopped_by_their_loss():
    assert run(asha(BestEpochASHA), {name: [f1 for f1, _ in curve] for name, curve in STUCK.items()}) == \
        {"a": 6, "b": 6, "c": 6, "d": 6}  # plain ties: nothing stops
    epochs = run_pairs(tie_breaking(), STUCK)
    assert epochs["c"] == 2  # the worst loss of the rung
    assert epochs["d"] == 6  # the best loss goes on
    assert sum(epochs.values()) < 24


def test_a_late_learner_whose_best_is_not_below_the_cutoff_is_kept():
    """The measured ResNet50 curve, with its loss falling while its F1 dips: at the epoch-2 rung its best
    (0.297 at epoch 1, loss 1.06) ties the constant trials on F1 and beats most of them on loss."""
    learner = list(zip(LEARNER, [1.06, 1.07, 1.02, 0.98, 0.97, 0.90]))
    epochs = run_pairs(tie_breaking(), {**STUCK, "learner": learner})
    assert epochs["learner"] == 6
    assert epochs["c"] == 2


def test_the_metric_still_comes_first():
    """A better macro-F1 wins whatever the losses: the tie-break only orders equal metrics."""
    curves = {"low-loss": [(0.297, 0.50)] * 6, "better-f1": [(0.31, 2.0)] * 6, "worse": [(0.2, 0.1)] * 6}
    epochs = run_pairs(tie_breaking(), curves)
    assert epochs["better-f1"] == 6 and epochs["worse"] == 2


def test_trials_without_the_tie_break_metric_are_judged_on_the_metric_alone():
    curves = {name: [f1 for f1, _ in curve] for name, curve in STUCK.items()}
    assert run(tie_breaking(), curves) == {"a": 6, "b": 6, "c": 6, "d": 6}
