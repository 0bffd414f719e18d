"""BestEpochASHA: rungs judge a trial by its best epoch so far, as the study selects it; PromotingASHA:
trials wait at each rung until they rank in its top 1/reduction factor.

The curves are the ones measured on the covid-chestxray copy (val macro-F1 per
epoch, grace period 2, reduction factor 2, 6 epochs): a trial stuck on the
majority-class prediction, and a ResNet50 that dips below it before it learns.
"""

from __future__ import annotations

import math
import pickle
from types import SimpleNamespace

import pytest
from ray.tune.schedulers import ASHAScheduler, TrialScheduler
from ray.tune.search import Searcher

from study.asha import BestEpochASHA, PromotingASHA, PromotionGate, RungSnapshot, rung_epochs
from study.bench.search import replay_one_at_a_time
from study.checkpoints import CheckpointPolicy

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


def test_a_resumed_trial_is_stopped_only_at_a_rung_where_its_best_weights_are_written():
    """A resume gives Tune's scheduler back as it was built, with empty rungs, and restarts trials from their
    full states (here epoch 10, past the rungs at 2 and 6). Ray's bracket would judge each one at its first
    report at or after a rung it has not recorded (epoch 11); the trainable writes its best weights only
    where the trial may end (rungs, its last epoch), so a stop at epoch 11 would lose its best since epoch 6.
    The trials go on to the next rung (18), where the worse one is stopped."""
    scheduler = BestEpochASHA(time_attr="training_iteration", max_t=54, grace_period=2, reduction_factor=3,
                              metric="val/f1_macro", mode="max", tie_break="val/loss", tie_break_mode="min")
    trials = {name: SimpleNamespace(trial_id=name) for name in ("better", "worse")}
    for trial in trials.values():
        scheduler.on_trial_add(None, trial)
    stopped = {}
    for epoch in range(11, 55):
        for name, value in (("better", 0.50), ("worse", 0.45)):
            if name not in stopped and scheduler.on_trial_result(
                    None, trials[name], {"training_iteration": epoch, "val/f1_macro": value, "val/loss": 1.0}) \
                    == TrialScheduler.STOP:
                stopped[name] = epoch
    assert stopped == {"worse": 18, "better": 54}
    policy = CheckpointPolicy(rung_epochs=tuple(rung_epochs(2, 3, 54)))
    assert policy.weights_due(18, 54)


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


# ------------------------------------------------------------------ promoting ASHA (trials wait at rungs)

def promoting(max_t: int = 6, grace_period: int = 2, reduction_factor: int = 2, max_running: int | None = 1,
              num_trials: int | None = None):
    scheduler = PromotingASHA(max_running=max_running, num_trials=num_trials, time_attr="training_iteration",
                              max_t=max_t, grace_period=grace_period, reduction_factor=reduction_factor,
                              tie_break="val/loss", tie_break_mode="min")
    scheduler.set_search_properties("val/f1_macro", "max")
    return scheduler


def one_at_a_time(scheduler, curves: dict[str, list[float]]) -> dict[str, int]:
    """Each curve (val/f1_macro per epoch, equal losses) through the scheduler with one slot, new trials in
    the given order; returns the epochs each trial trained."""
    trained = replay_one_at_a_time(scheduler, [[(value, 1.0) for value in curve] for curve in curves.values()],
                                   "val/f1_macro", "val/loss")
    return dict(zip(curves, trained))


def test_rungs_are_the_grace_period_times_powers_of_the_reduction_factor_below_the_last_epoch():
    assert rung_epochs(1, 3, 9) == [1, 3]
    assert rung_epochs(2, 3, 4) == [2]
    assert rung_epochs(1, 2, 4) == [1, 2]
    assert rung_epochs(4, 2, 4) == []


def test_promoting_asha_runs_only_the_rung_top_third_on():
    """Three trials at the epoch-1 rung (reduction factor 3): only the best goes on; stop-based ASHA lets the
    first two go on, since nothing stood at the rung to compare them with."""
    curves = {"A": [0.1, 0.11, 0.12], "B": [0.3, 0.31, 0.32], "C": [0.2, 0.21, 0.22]}
    assert one_at_a_time(promoting(max_t=3, grace_period=1, reduction_factor=3), curves) == {"A": 1, "B": 3, "C": 1}
    stop_based = BestEpochASHA(time_attr="training_iteration", max_t=3, grace_period=1, reduction_factor=3)
    stop_based.set_search_properties("val/f1_macro", "max")
    assert one_at_a_time(stop_based, curves) == {"A": 3, "B": 3, "C": 1}


def test_a_waiting_trial_is_promoted_when_later_trials_rank_below_it():
    """A reaches the rung first and waits (alone, it is not in the top half of one); B ranks below it, so the
    free slot goes to A, which trains on before C starts."""
    scheduler = promoting(max_t=4, grace_period=2, reduction_factor=2)
    order: list[tuple[str, int]] = []
    result_of = scheduler.on_trial_result

    def noted(controller, trial, result):
        order.append((trial.trial_id, result["training_iteration"]))
        return result_of(controller, trial, result)

    scheduler.on_trial_result = noted
    trained = replay_one_at_a_time(scheduler, [[(v, 1.0) for v in curve] for curve in
                                               ([0.3, 0.3, 0.4, 0.5], [0.1, 0.1, 0.1, 0.1], [0.2, 0.2, 0.2, 0.2])],
                                   "val/f1_macro", "val/loss")
    assert order[:6] == [("0", 1), ("0", 2), ("1", 1), ("1", 2), ("0", 3), ("0", 4)]
    assert trained == [4, 2, 2]  # C ranks below A at the rung of three: top int(3/2) = 1 is A


def test_a_tie_at_the_rung_is_broken_by_the_loss():
    scheduler = promoting(max_t=2, grace_period=1, reduction_factor=2)
    curves = [[(0.297, 1.2)] * 2, [(0.297, 1.0)] * 2]  # tied on macro-F1, the second with the lower loss
    assert replay_one_at_a_time(scheduler, curves, "val/f1_macro", "val/loss") == [1, 2]
    scheduler = promoting(max_t=2, grace_period=1, reduction_factor=2)
    assert replay_one_at_a_time(scheduler, curves[::-1], "val/f1_macro", "val/loss") == [2, 1]


class Proposer(Searcher):
    def suggest(self, trial_id: str) -> dict:
        return {"lr": 0.1}


class Controller:
    """The part of Tune's controller a scheduler sees: the trials, whether the searcher is done, stop_trial."""

    def __init__(self, finished: bool = False):
        self.trials: list[SimpleNamespace] = []
        self.stopped: list[str] = []
        self.scheduler = None  # the scheduler under test, set by add()
        self.search_alg = SimpleNamespace(is_finished=lambda: finished)

    def get_trials(self):
        return self.trials

    def stop_trial(self, trial):
        self.stopped.append(trial.trial_id)
        if trial.status in ("PENDING", "PAUSED"):  # as Tune's controller does
            self.scheduler.on_trial_remove(self, trial)
        trial.status = "TERMINATED"

    def _mark_trial_to_checkpoint(self, trial):  # what Tune's next experiment snapshot records anew
        pass


def add(scheduler, controller, trial_id: str, status: str = "RUNNING"):
    trial = SimpleNamespace(trial_id=trial_id, status=status, config={})
    controller.scheduler = scheduler
    controller.trials.append(trial)
    scheduler.on_trial_add(controller, trial)
    return trial


def report(scheduler, controller, trial, epoch: int, value: float) -> str:
    decision = scheduler.on_trial_result(controller, trial, {"training_iteration": epoch, "val/f1_macro": value,
                                                             "val/loss": 1.0})
    if decision == TrialScheduler.PAUSE:
        trial.status = "PAUSED"
    return decision


def test_waiting_trials_hold_no_slot_and_a_promotion_comes_before_a_new_trial():
    """--max-concurrent 2: two trials run; one waits at the rung, and its slot goes to a new trial that the gate
    lets the searcher propose; once a waiting trial ranks in the rung's top half, the free slot goes to it."""
    scheduler, controller = promoting(max_t=4, grace_period=2, reduction_factor=2, max_running=2), Controller()
    gate = PromotionGate(Proposer(metric="val/f1_macro", mode="max"), scheduler)
    a, b = add(scheduler, controller, "a"), add(scheduler, controller, "b")
    assert scheduler.choose_trial_to_run(controller) is None
    assert gate.suggest("c") is None  # two run: the limit
    assert report(scheduler, controller, a, 2, 0.1) == TrialScheduler.PAUSE  # alone at its rung
    assert scheduler.choose_trial_to_run(controller) is None and gate.suggest("c") == {"lr": 0.1}
    c = add(scheduler, controller, "c")
    assert report(scheduler, controller, b, 2, 0.5) == TrialScheduler.CONTINUE  # top 1 of 2
    assert report(scheduler, controller, c, 2, 0.3) == TrialScheduler.PAUSE  # top 1 of 3 is b
    assert scheduler.choose_trial_to_run(controller) is None and gate.suggest("d") == {"lr": 0.1}
    d = add(scheduler, controller, "d")
    assert report(scheduler, controller, d, 2, 0.05) == TrialScheduler.PAUSE  # top 2 of 4: b, then c, waiting
    assert scheduler.choose_trial_to_run(controller) is c
    assert scheduler.choose_trial_to_run(controller) is c  # asked again before Tune starts it: the same answer
    assert gate.suggest("e") is None  # c takes the free slot
    assert [t.trial_id for t in controller.trials if t.status == "PAUSED"] == ["a", "c", "d"]  # Tune restarts c


def test_when_the_searcher_is_done_a_rung_that_promoted_none_promotes_its_best_and_the_rest_end():
    """Three trials at the epoch-2 rung (reduction factor 4): none is in the top int(3/4) = 0, so none went
    on; once no configuration is left and nothing runs, the rung's best goes on (a study always trains one
    trial to the last epoch), and the two others end where they wait."""
    scheduler, controller = promoting(max_t=4, grace_period=2, reduction_factor=4), Controller(finished=True)
    trials = [add(scheduler, controller, name) for name in "abc"]
    for trial, value in zip(trials, (0.1, 0.3, 0.2)):
        assert report(scheduler, controller, trial, 2, value) == TrialScheduler.PAUSE
    best = scheduler.choose_trial_to_run(controller)
    assert best is trials[1] and controller.stopped == []
    best.status = "RUNNING"
    assert report(scheduler, controller, best, 3, 0.35) == TrialScheduler.CONTINUE
    scheduler.on_trial_complete(controller, best, {"training_iteration": 4, "val/f1_macro": 0.4})
    best.status = "TERMINATED"
    assert scheduler.choose_trial_to_run(controller) is None
    assert controller.stopped == ["a", "c"]


def test_a_lone_trial_runs_to_the_last_epoch():
    assert one_at_a_time(promoting(max_t=4, grace_period=1, reduction_factor=2), {"only": [0.1, 0.2, 0.3, 0.4]}) \
        == {"only": 4}


def test_a_resumed_trial_that_waited_is_judged_again_at_its_next_rung():
    """After a resume Tune restarts waiting trials from their rung's full state: the scheduler lets them run."""
    scheduler, controller = promoting(max_t=8, grace_period=2, reduction_factor=2), Controller()
    a = add(scheduler, controller, "a")
    assert report(scheduler, controller, a, 3, 0.2) == TrialScheduler.CONTINUE
    assert report(scheduler, controller, a, 4, 0.2) == TrialScheduler.PAUSE


def test_a_trial_that_can_no_longer_be_promoted_ends_instead_of_waiting():
    """A study of 4 trials (reduction factor 2) promotes at most 2 from its rung: a trial ranked third there ends,
    at once if it arrives third or lower, or as soon as later arrivals push it there."""
    scheduler, controller = promoting(max_t=4, grace_period=2, reduction_factor=2, max_running=2, num_trials=4), \
        Controller()
    a, b = add(scheduler, controller, "a"), add(scheduler, controller, "b")
    assert report(scheduler, controller, a, 2, 0.3) == TrialScheduler.PAUSE
    assert report(scheduler, controller, b, 2, 0.2) == TrialScheduler.PAUSE  # second: may still go on
    c = add(scheduler, controller, "c")
    assert report(scheduler, controller, c, 2, 0.4) == TrialScheduler.CONTINUE  # top 1 of 3
    assert scheduler.choose_trial_to_run(controller) is None  # a waits for the top 2 of 4
    assert controller.stopped == ["b"]  # third now: it would only wait, with its full state, to be stopped
    d = add(scheduler, controller, "d")
    assert report(scheduler, controller, d, 2, 0.1) == TrialScheduler.STOP
    scheduler.on_trial_complete(controller, d, {})
    d.status = "TERMINATED"
    assert scheduler.choose_trial_to_run(controller) is a  # top 2 of 4


@pytest.mark.parametrize("reduction_factor, max_t", [(3, 9), (2, 8)])
def test_ending_the_trials_that_can_no_longer_be_promoted_changes_nothing_else_and_fewer_wait(reduction_factor,
                                                                                               max_t):
    """On random curves, the trial budget known: every trial trains the same epochs, and fewer wait at once.
    A later rung may be reached by more trials than the top 1/factor of the study's: trials promoted early at the
    rung before, while few had arrived, go on when later arrivals outrank them. Bounding a later rung by the rung
    before's top ended trials there that would have been promoted (4 of 50 studies of 10 trials, 4 epochs)."""
    import random

    rng = random.Random(0)
    for _ in range(40):
        curves = {str(n): [round(rng.random(), 2) for _ in range(max_t)] for n in range(rng.randint(1, 24))}
        trained, peaks = {}, {}
        for budget in (None, len(curves)):
            scheduler = promoting(max_t=max_t, grace_period=1, reduction_factor=reduction_factor, num_trials=budget)
            waiting, peak = set(), [0]
            decide, remove = scheduler.on_trial_result, scheduler.on_trial_remove

            def on_result(controller, trial, result, decide=decide, waiting=waiting, peak=peak):
                waiting.discard(trial.trial_id)
                decision = decide(controller, trial, result)
                if decision == TrialScheduler.PAUSE:
                    waiting.add(trial.trial_id)
                    peak[0] = max(peak[0], len(waiting))
                return decision

            def on_remove(controller, trial, remove=remove, waiting=waiting):
                waiting.discard(trial.trial_id)
                return remove(controller, trial)

            scheduler.on_trial_result, scheduler.on_trial_remove = on_result, on_remove
            trained[budget], peaks[budget] = one_at_a_time(scheduler, curves), peak[0]
        assert trained[None] == trained[len(curves)], curves
        assert peaks[len(curves)] <= peaks[None]
        rungs = len(scheduler._rungs)  # at each rung, only the trials ranked in the study's top 1/factor wait
        assert peaks[len(curves)] <= rungs * max(1, int(len(curves) / reduction_factor)), curves


def test_a_stopping_scheduler_pickled_before_it_kept_its_rungs_still_judges_only_at_them():
    """A study started before resumes with the scheduler pickled then (tuner.pkl)."""
    import pickle

    old = BestEpochASHA(time_attr="training_iteration", max_t=54, grace_period=2, reduction_factor=3,
                        metric="val/f1_macro", mode="max")
    del old._rungs
    restored = pickle.loads(pickle.dumps(old))
    trials = {name: SimpleNamespace(trial_id=name) for name in ("better", "worse")}
    for trial in trials.values():
        restored.on_trial_add(None, trial)
    decisions = {(name, epoch): restored.on_trial_result(None, trials[name],
                                                         {"training_iteration": epoch, "val/f1_macro": value})
                 for epoch in (11, 18) for name, value in (("better", 0.50), ("worse", 0.45))}
    assert [key for key, decision in decisions.items() if decision == TrialScheduler.STOP] == [("worse", 18)]


# ------------------------------------------------------------------ the rungs across a resume

def restored(scheduler, controller, trial_id: str, status: str = "PENDING"):
    """A trial of Tune's snapshot, added back by a resume: unfinished trials come back PENDING (Tune's
    _requeue_restored_trials), whatever they were."""
    trial = SimpleNamespace(trial_id=trial_id, status=status, config={})
    trial.set_status = lambda new: setattr(trial, "status", new)
    controller.scheduler = scheduler
    controller.trials.append(trial)
    scheduler.on_trial_add(controller, trial)
    return trial


def built_then_resumed(scheduler, snapshot_state):
    """What Tuner.restore gives back: the scheduler and its RungSnapshot callback from tuner.pkl (pickled together,
    as they were built), then the callback's state from Tune's last experiment snapshot, if it holds one."""
    tuner_pkl = pickle.dumps((scheduler, RungSnapshot(scheduler)))
    scheduler, snapshot = pickle.loads(tuner_pkl)
    assert snapshot.scheduler is scheduler
    if snapshot_state is not None:
        snapshot.set_state(pickle.loads(pickle.dumps(snapshot_state)))
    return scheduler


def test_a_resumed_study_makes_the_rung_decisions_of_the_uninterrupted_one():
    """Two trials wait at the epoch-1 rung when the study is interrupted; the resumed scheduler knows them (Tune
    restores the scheduler as it was built: its rungs come from the snapshot), holds them until it promotes one,
    and judges the next trial against them, as the uninterrupted study does."""
    decisions = {}
    for resume in (False, True):
        scheduler, controller = promoting(max_t=4, grace_period=1, reduction_factor=2, max_running=1), Controller()
        as_built = pickle.loads(pickle.dumps(scheduler))
        snapshot = RungSnapshot(scheduler)
        a = add(scheduler, controller, "a")
        seen = [report(scheduler, controller, a, 1, 0.3)]  # alone at its rung: it waits
        b = add(scheduler, controller, "b")
        seen.append(report(scheduler, controller, b, 1, 0.1))  # a is the rung's top half
        if resume:
            scheduler, controller = built_then_resumed(as_built, snapshot.get_state()), Controller()
            a, b = restored(scheduler, controller, "a"), restored(scheduler, controller, "b")
            assert (a.status, b.status) == ("PAUSED", "PAUSED")  # Tune starts only what the scheduler hands out
        chosen = scheduler.choose_trial_to_run(controller)
        seen.append(chosen.trial_id)
        chosen.status = "RUNNING"
        seen.append(report(scheduler, controller, a, 2, 0.3))  # alone at the epoch-2 rung
        c = add(scheduler, controller, "c", status="PENDING")
        seen.append(report(scheduler, controller, c, 1, 0.2))  # below a at the rung of three
        controller.search_alg = SimpleNamespace(is_finished=lambda: True)
        seen.append(scheduler.choose_trial_to_run(controller).trial_id)  # the epoch-2 rung promotes its best
        a.status = "RUNNING"
        seen.append(report(scheduler, controller, a, 3, 0.3))
        scheduler.on_trial_complete(controller, a, {"training_iteration": 4, "val/f1_macro": 0.3})
        a.status = "TERMINATED"
        seen.append(scheduler.choose_trial_to_run(controller))
        decisions[resume] = seen + [controller.stopped]
    assert decisions[True] == decisions[False] == [
        TrialScheduler.PAUSE, TrialScheduler.PAUSE, "a", TrialScheduler.PAUSE, TrialScheduler.PAUSE, "a",
        TrialScheduler.CONTINUE, None, ["b", "c"]]


def test_a_resume_starts_no_more_trials_than_max_concurrent():
    """--max-concurrent 1: a trial ran (b) and one had errored (e, which the resume runs again) besides one that
    waited at a rung (a). Tune would start every PENDING trial: the resume holds all but one, and the scheduler
    hands them out one at a time, the interrupted ones before a promotion and before any new configuration."""
    scheduler, controller = promoting(max_t=4, grace_period=1, reduction_factor=2, max_running=1), Controller()
    snapshot = RungSnapshot(scheduler)
    as_built = pickle.loads(pickle.dumps(scheduler))
    a = add(scheduler, controller, "a")
    report(scheduler, controller, a, 1, 0.3)
    add(scheduler, controller, "b")
    scheduler.on_trial_error(controller, add(scheduler, controller, "e"))
    scheduler, controller = built_then_resumed(as_built, snapshot.get_state()), Controller()
    gate = PromotionGate(Proposer(metric="val/f1_macro", mode="max"), scheduler)
    b, e, a = (restored(scheduler, controller, name) for name in "bea")
    assert [t.status for t in (b, e, a)] == ["PENDING", "PAUSED", "PAUSED"]
    b.status = "RUNNING"
    assert scheduler.choose_trial_to_run(controller) is None and gate.suggest("c") is None
    assert report(scheduler, controller, b, 1, 0.5) == TrialScheduler.CONTINUE  # top 1 of 2
    scheduler.on_trial_complete(controller, b, {"training_iteration": 4, "val/f1_macro": 0.5})
    b.status = "TERMINATED"
    assert scheduler.choose_trial_to_run(controller) is e
    assert scheduler.choose_trial_to_run(controller) is e and gate.suggest("c") is None
    e.status = "RUNNING"
    assert report(scheduler, controller, e, 1, 0.4) == TrialScheduler.PAUSE  # b and a above it: 1 of 3 goes on
    e.status = "PAUSED"
    assert scheduler.choose_trial_to_run(controller) is None and gate.suggest("c") == {"lr": 0.1}


def test_the_resume_of_a_study_whose_snapshot_holds_no_rungs_still_keeps_to_max_concurrent():
    """A study started before the rungs were saved: its waiting trials are restarted, as before, one at a time."""
    scheduler, controller = built_then_resumed(promoting(max_t=4, grace_period=1, reduction_factor=2), None), \
        Controller()
    a, b = restored(scheduler, controller, "a"), restored(scheduler, controller, "b")
    assert (a.status, b.status) == ("PENDING", "PAUSED")
    a.status = "RUNNING"
    assert report(scheduler, controller, a, 2, 0.3) == TrialScheduler.PAUSE  # judged again at its next rung
    a.status = "PAUSED"
    assert scheduler.choose_trial_to_run(controller) is b


def test_a_trial_promoted_before_the_snapshot_that_reports_its_rung_again_goes_on():
    """Tune's snapshot may name a full state older than the rung a promoted trial left (its save was under way):
    the trial reports that rung again after the resume, and goes on as it was promoted to, though a trial that
    came after it now ranks above it there."""
    scheduler, controller = promoting(max_t=4, grace_period=1, reduction_factor=2, max_running=2), Controller()
    as_built, snapshot = pickle.loads(pickle.dumps(scheduler)), RungSnapshot(scheduler)
    a, b = add(scheduler, controller, "a"), add(scheduler, controller, "b")
    report(scheduler, controller, a, 1, 0.3)
    report(scheduler, controller, b, 1, 0.1)
    assert scheduler.choose_trial_to_run(controller) is a
    c = add(scheduler, controller, "c")
    assert report(scheduler, controller, c, 1, 0.5) == TrialScheduler.CONTINUE
    scheduler, controller = built_then_resumed(as_built, snapshot.get_state()), Controller()
    a, b, c = (restored(scheduler, controller, name) for name in "abc")
    assert (a.status, b.status, c.status) == ("PENDING", "PAUSED", "PENDING")
    a.status = "RUNNING"
    assert report(scheduler, controller, a, 1, 0.3) == TrialScheduler.CONTINUE


def test_the_stopping_schedulers_rungs_survive_a_resume():
    """--asha stopping: a trial that reaches the epoch-2 rung after the resume is judged against the trials that
    reached it before (Ray's bracket rungs), not alone."""
    scheduler = asha(BestEpochASHA)
    scheduler.set_search_properties("val/f1_macro", "max")
    as_built, snapshot = pickle.loads(pickle.dumps(scheduler)), RungSnapshot(scheduler)
    for name, value in (("a", 0.4), ("b", 0.5)):
        trial = SimpleNamespace(trial_id=name, status="RUNNING")
        scheduler.on_trial_add(None, trial)
        for epoch in (1, 2):
            assert scheduler.on_trial_result(None, trial, {"training_iteration": epoch, "val/f1_macro": value}) \
                == TrialScheduler.CONTINUE
    late = SimpleNamespace(trial_id="late", status="RUNNING")
    scheduler.on_trial_add(None, late)
    assert scheduler.on_trial_result(None, late, {"training_iteration": 1, "val/f1_macro": 0.42}) \
        == TrialScheduler.CONTINUE
    resumed = built_then_resumed(as_built, snapshot.get_state())
    for name in ("a", "b", "late"):
        resumed.on_trial_add(None, SimpleNamespace(trial_id=name, status="PENDING"))
    # its best (0.42 at epoch 1) is below the rung's cutoff (0.45, between a's and b's) only with them there
    assert resumed.on_trial_result(None, late, {"training_iteration": 2, "val/f1_macro": 0.3}) == TrialScheduler.STOP
