"""ASHA that judges each trial at a rung by its best epoch so far, ties broken by a second metric, in its
stop-based form (BestEpochASHA) and its promoting form (PromotingASHA, the study's default).

A study keeps each trial's best checkpoint and compares trials at their best
epoch (study.tables.best_epochs, study.analyze), so that is what ASHA should
compare too; Optuna's own median and percentile pruners judge a trial the same
way. Ray's ASHAScheduler compares the latest epoch instead, which on small,
imbalanced validation splits stops the trials that learn: a network leaving the
constant majority-class prediction scores below it for an epoch or two before
it scores above it (measured on the covid-chestxray copy: ResNet50 + Adam went
0.297, 0.297, 0.238, 0.283, 0.238, 0.490 in val macro-F1, while trials that
never learn stay at the constant prediction's 0.297 and stopped it at epoch 4).

On macro-F1 many trials tie at that constant prediction's value, and Ray's
rung stops only a trial strictly below its cutoff, so a rung of tied trials
stops none. With `tie_break` (validation loss by default in study.run) a
trial's best epoch is its best on (metric, then tie-break metric), the epoch
whose weights it keeps (study.tables.improves), and the rung ranks trials by
that pair: among trials sitting on the constant prediction, the
ones whose loss is worse than their rung's cutoff are stopped.
"""

from __future__ import annotations

import copy
import math
from typing import Any

from ray import tune
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search import ConcurrencyLimiter

# The rung compares one number per trial (Ray's _Bracket takes a percentile of them): the pair is
# folded into metric (rounded to 1e-6, so that float noise counts as a tie) + TIE_WEIGHT x the
# tie-break metric squashed into (-1, 1). Metric differences of 1e-6 and more always win.
METRIC_DIGITS = 6
TIE_WEIGHT = 1e-9


class BestEpochASHA(ASHAScheduler):
    """ASHAScheduler whose rungs record each trial's best value of the metric so far (ties broken by
    `tie_break`, a metric the trials report, in `tie_break_mode`).

    It judges a trial only at a rung epoch (and stops it at max_t), where the trainable writes its best
    weights (study.checkpoints.CheckpointPolicy.weights_due). Ray's bracket judges a trial at its first report
    at or after each rung it has not recorded: after the resume of a study whose snapshot holds no rungs
    (RungSnapshot; studies started before it), which gives the scheduler back as it was built, that is the
    first epoch a restored trial reports, and a stop there would lose the trial's best since its last write.
    Such a trial goes on to its next rung instead, where it is judged by its best since the resume."""

    def __init__(self, tie_break: str | None = None, tie_break_mode: str = "min", **asha_options: Any):
        super().__init__(**asha_options)
        self._tie_break = tie_break
        self._tie_op = -1.0 if tie_break_mode == "min" else 1.0
        self._best: dict[str, tuple[float, float]] = {}  # trial id -> best (metric, tie-break), both to maximise
        self._rungs = rung_epochs(asha_options.get("grace_period", 1), self._reduction_factor, self._max_t)

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        if "_rungs" not in state:  # pickled (tuner.pkl) before it kept its rungs: the bracket's milestones
            self._rungs = sorted(int(milestone) for milestone, _ in self._brackets[0]._rungs
                                 if milestone < self._max_t)

    def rung_state(self) -> dict:
        """What the rungs hold (RungSnapshot saves it with Tune's experiment snapshot): each trial's best so far,
        and what each of Ray's bracket rungs recorded."""
        return copy.deepcopy({"best": self._best, "brackets": [bracket._rungs for bracket in self._brackets]})

    def restore_rung_state(self, state: dict) -> None:
        """The rungs as `rung_state` saved them, before Tune adds the restored trials."""
        self._best = state["best"]
        for bracket, rungs in zip(self._brackets, state["brackets"]):
            bracket._rungs = rungs

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        result = self._with_best(trial.trial_id, result)
        epoch = result.get(self._time_attr)
        if epoch in self._rungs or (isinstance(epoch, (int, float)) and epoch >= self._max_t):
            return super().on_trial_result(tune_controller, trial, result)
        return self.CONTINUE

    def on_trial_complete(self, tune_controller, trial, result: dict) -> None:
        super().on_trial_complete(tune_controller, trial, self._with_best(trial.trial_id, result))
        self._best.pop(trial.trial_id, None)

    def _with_best(self, trial_id: str, result: dict) -> dict:
        value = result.get(self._metric) if result else None
        if not isinstance(value, (int, float)) or math.isnan(value):
            return result
        tie_break = getattr(self, "_tie_break", None)  # absent from a scheduler pickled before tie-breaking
        second = result.get(tie_break) if tie_break else None
        second = self._tie_op * second if isinstance(second, (int, float)) and not math.isnan(second) else -math.inf
        key = (self._metric_op * value, second)
        best = self._best.get(trial_id)
        if isinstance(best, float):  # a best recorded before tie-breaking
            best = (best, -math.inf)
        if best is None or key > best:
            self._best[trial_id] = best = key
        return {**result, self._metric: self._metric_op * self._score(best)}

    def _score(self, best: tuple[float, float]) -> float:
        """The number the rung compares, higher is better."""
        if not getattr(self, "_tie_break", None):
            return best[0]
        return round(best[0], METRIC_DIGITS) + TIE_WEIGHT * (2 / math.pi) * math.atan(best[1])


def rung_epochs(grace_period: int, reduction_factor: float, max_t: int) -> list[int]:
    """The epochs at which ASHA judges a trial: grace period x reduction factor^k, below max_t (as the
    milestones of Ray's ASHA bracket; a trial at max_t has ended)."""
    rungs, epoch = [], grace_period
    while epoch < max_t:
        rungs.append(epoch)
        epoch = round(epoch * reduction_factor)
    return rungs


class PromotingASHA(BestEpochASHA):
    """ASHA in its promoting form (Li et al. 2020, "A system for massively parallel hyperparameter
    tuning", Algorithm 2): a trial that reaches a rung waits there (Tune's PAUSE, which asks the trainable
    for its full state) and goes on only once it ranks in the top 1/reduction factor
    of the trials that reached its rung. A free slot goes to the waiting trial of the highest rung that
    ranks there, else to a new configuration. When the searcher has none left and nothing runs, a rung that
    has promoted no trial promotes its best (so that a study of fewer trials than the reduction factor still
    trains one to the last epoch), and then the trials still waiting end where they are (stopped early, with
    their best so far).

    Stop-based ASHA (BestEpochASHA) lets the first trials of a rung go on, with nothing to compare them to;
    here every trial is judged against the rung's final company, so fewer reach the last epoch (replayed on
    the bench's curves: study.bench.search). Trials are ranked as BestEpochASHA ranks them: best epoch so
    far, ties broken by `tie_break`.

    `max_running`: at most this many trials train at once (--max-concurrent); waiting trials do not count,
    so they never hold a slot. PromotionGate asks `wants_new_trial` before the searcher proposes a trial.

    `num_trials`: the study's trial budget, which bounds how many trials can ever reach a rung, and so how
    high a rank its promotions can reach down to: the top int(num_trials / reduction factor). A trial ranked
    below that at its rung can never go on (later arrivals only push it down): it ends at once instead of
    waiting, with its full state, for the end of the study.

    A resume restores the rungs from Tune's experiment snapshot (RungSnapshot), and the trials that waited
    there wait again: on_trial_add holds them (PAUSED), as it holds the restored trials beyond `max_running`
    (Tune would start every restored trial), and choose_trial_to_run hands them out as an uninterrupted study
    would. The resume of a study whose snapshot holds no rungs (started before RungSnapshot) knows no waiting
    trials: they run on, `max_running` at a time, to their next rung, where they are judged again.
    """

    def __init__(self, max_running: int | None = None, num_trials: int | None = None, **asha_options: Any):
        super().__init__(**asha_options)
        self._max_running = max_running
        # rung -> a trial ranked below this many there is never promoted: the top int(n / factor) of the n that
        # reached the rung (or its best at the end: _next_promotion), and no rung is reached by more than the
        # study's trials. A later rung may be reached by more than its predecessor's top int(num_trials /
        # factor): a trial promoted early, while few had arrived, stays promoted when later arrivals outrank it.
        most = max(1, int(num_trials / self._reduction_factor)) if num_trials else None
        self._most_promoted: dict[int, int] = {rung: most for rung in self._rungs} if most else {}
        self._ranked: dict[int, dict[str, float]] = {rung: {} for rung in self._rungs}  # rung -> trial -> score
        self._live: set[str] = set()        # trials added and not ended: running, pending or waiting
        self._waiting: dict[str, int] = {}  # paused (or pausing) trial -> the rung it waits at
        self._promoted: dict[int, set[str]] = {rung: set() for rung in self._rungs}  # rung -> trials gone on
        self._starting: str | None = None   # the promoted trial Tune is starting

    def wants_new_trial(self) -> bool:
        """Whether a new configuration may start: no waiting trial is due to take a free slot, and fewer than
        `max_running` trials run or wait to start (Tune keeps at most one new trial pending: PromotionGate)."""
        if self._next_promotion() is not None:
            return False
        return self._max_running is None or len(self._live) - len(self._waiting) < self._max_running

    def rung_state(self) -> dict:
        return {**super().rung_state(),
                **copy.deepcopy({"ranked": self._ranked, "promoted": self._promoted, "waiting": self._waiting})}

    def restore_rung_state(self, state: dict) -> None:
        super().restore_rung_state(state)
        self._ranked, self._promoted, self._waiting = state["ranked"], state["promoted"], state["waiting"]

    def on_trial_add(self, tune_controller, trial) -> None:
        super().on_trial_add(tune_controller, trial)
        if trial.status in ("TERMINATED", "ERROR"):  # a resume adds the trials that ended, too
            self._forget(trial.trial_id)
            return
        if trial.status == "PENDING" and (trial.trial_id in self._waiting or not self._slot_free(tune_controller)):
            # A trial a resume restores (a new one comes only when a slot is free: PromotionGate). Tune starts every
            # PENDING trial; PAUSED ones wait for choose_trial_to_run. Tune files it under the status set here.
            trial.set_status("PAUSED")
        self._live.add(trial.trial_id)

    def _slot_free(self, tune_controller) -> bool:
        """Whether fewer than `max_running` trials run or are to start (a trial that pauses at a rung runs until
        Tune has its full state: it counts as waiting)."""
        if self._max_running is None or tune_controller is None:
            return True
        taken = sum(trial.status in ("RUNNING", "PENDING") and trial.trial_id in self._live
                    and trial.trial_id not in self._waiting for trial in tune_controller.get_trials())
        return taken < self._max_running

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        epoch = result.get(self._time_attr)
        best = self._with_best(trial.trial_id, result).get(self._metric)
        self._waiting.pop(trial.trial_id, None)  # reporting: it runs (a resume restarts waiting trials)
        if self._starting == trial.trial_id:
            self._starting = None
        if (epoch not in self._ranked or result.get("diverged") or not isinstance(best, (int, float))
                or math.isnan(best)):
            return self.CONTINUE  # a diverged trial has ended: nothing to pause
        self._ranked[epoch][trial.trial_id] = self._metric_op * best  # higher is better
        if trial.trial_id in self._promoted[epoch]:
            return self.CONTINUE  # again, from a full state older than the snapshot that saw it promoted
        self._waiting[trial.trial_id] = epoch
        if self._next_promotion() == trial.trial_id:
            self._promote(trial.trial_id)
            return self.CONTINUE
        if self._never_promoted(trial.trial_id, epoch):
            self._waiting.pop(trial.trial_id)
            return self.STOP
        return self.PAUSE

    def _promote(self, trial_id: str) -> None:
        self._promoted[self._waiting.pop(trial_id)].add(trial_id)

    def on_trial_complete(self, tune_controller, trial, result: dict) -> None:
        self._forget(trial.trial_id)

    def on_trial_remove(self, tune_controller, trial) -> None:
        self._forget(trial.trial_id)

    def on_trial_error(self, tune_controller, trial) -> None:
        self._forget(trial.trial_id)

    def _forget(self, trial_id: str) -> None:
        self._live.discard(trial_id)
        self._waiting.pop(trial_id, None)
        self._best.pop(trial_id, None)

    def choose_trial_to_run(self, tune_controller):
        trials = {trial.trial_id: trial for trial in tune_controller.get_trials()}
        starting = trials.get(self._starting)
        if starting is not None and starting.status in ("PENDING", "PAUSED"):
            return starting  # asked again before Tune started it: the same answer
        self._starting = None
        self._stop_waiting(tune_controller, trials, self._never_promoted)  # pushed out of reach by later arrivals
        busy = sum(trial.status in ("RUNNING", "PENDING") for trial in trials.values())
        held = next((trial for trial_id, trial in trials.items() if trial.status == "PAUSED"
                     and trial_id in self._live and trial_id not in self._waiting), None)
        if held is not None:  # restored by a resume beyond max_running (on_trial_add): it goes on first
            if self._max_running is not None and busy >= self._max_running:
                return None
            self._starting = held.trial_id
            return held
        finishing = busy == 0 and tune_controller.search_alg.is_finished()
        promotion = self._next_promotion(finishing)
        if promotion is not None and trials.get(promotion) is not None and trials[promotion].status == "PAUSED":
            if self._max_running is not None and busy >= self._max_running:
                return None
            self._promote(promotion)
            self._starting = promotion
            return trials[promotion]
        if finishing:
            self._stop_waiting(tune_controller, trials, lambda trial_id, rung: True)  # no promotion is left for them
        return None

    def _stop_waiting(self, tune_controller, trials: dict, ends) -> None:
        """Stop each paused waiting trial for which `ends(trial id, rung)` holds. Tune's stop_trial calls
        on_trial_remove, which forgets it."""
        for trial_id, rung in list(self._waiting.items()):
            trial = trials.get(trial_id)
            if trial is not None and trial.status == "PAUSED" and ends(trial_id, rung):
                tune_controller.stop_trial(trial)
                record_in_snapshot(tune_controller, trial)

    def _next_promotion(self, finishing: bool = False) -> str | None:
        """The waiting trial a free slot goes to: of the highest rung, the best-ranked trial in the top
        1/reduction factor of the trials that reached that rung (Li et al.'s get_job). `finishing` (no
        configuration left, nothing running): a rung that has promoted none promotes its best."""
        for rung in reversed(self._rungs):
            size = int(len(self._ranked[rung]) / self._reduction_factor)
            if finishing and not self._promoted[rung]:
                size = max(size, 1)
            for trial_id in self._ranking(rung)[:size]:
                if self._waiting.get(trial_id) == rung:
                    return trial_id
        return None

    def _ranking(self, rung: int) -> list[str]:
        """The trials that reached `rung`, best first; a tie ranks the earlier arrival first."""
        ranked = self._ranked[rung]
        return sorted(ranked, key=ranked.get, reverse=True)  # sorted() is stable, reversed or not

    def _never_promoted(self, trial_id: str, rung: int) -> bool:
        most = self._most_promoted.get(rung)
        return most is not None and self._ranking(rung).index(trial_id) >= most

    def debug_string(self) -> str:
        waiting = ", ".join(f"{sum(r == rung for r in self._waiting.values())} at epoch {rung}" for rung in self._rungs)
        return f"PromotingASHA: rungs at epochs {self._rungs}; waiting: {waiting}"


def record_in_snapshot(tune_controller, trial) -> None:
    """Have Tune's next experiment snapshot hold `trial`'s status as it is now. Tune records a trial anew there
    when a change of status involves its actor; a paused trial has none, so one stopped stays PAUSED in the
    snapshot, and a resume would start it again from the full state its end deleted (Ray 2.60,
    TuneController._schedule_trial_stop). Tune offers schedulers no public call for it; `tune_controller` is the
    wrapper Tune hands them, around the controller itself."""
    controller = getattr(tune_controller, "_tune_controller", tune_controller)
    controller._mark_trial_to_checkpoint(trial)


class PromotionGate(ConcurrencyLimiter):
    """The searcher's wrapper under PromotingASHA: a new configuration only when the scheduler has a free slot
    that no waiting trial is due to take. (A ConcurrencyLimiter of 1 keeps Tune to one pending trial at a
    time; its own count of live trials, which would count waiting trials, is not used.)"""

    def __init__(self, searcher, scheduler: PromotingASHA):
        super().__init__(searcher, max_concurrent=1)
        self.scheduler = scheduler

    def _set_searcher_max_concurrency(self) -> None:
        self._limit_concurrency = False

    def suggest(self, trial_id: str):
        if not self.scheduler.wants_new_trial():
            return None
        return self.searcher.suggest(trial_id)

    def get_state(self) -> dict:  # Tune's snapshot of the wrapper: the scheduler is not the wrapper's to save
        return copy.deepcopy({key: value for key, value in self.__dict__.items()
                              if key not in ("searcher", "scheduler")})


class RungSnapshot(tune.Callback):
    """Keeps ASHA's rungs in Tune's experiment snapshot, which a resume restores (Tune saves the searcher's and
    the callbacks' states there, not the scheduler's: Tuner.restore gives the scheduler back as it was built).

    Tune pickles the scheduler and this callback together (tuner.pkl), so after Tuner.restore `scheduler` is
    still the scheduler Tune runs; Tune sets the callbacks' states before it adds the restored trials
    (TuneController.resume, Ray 2.60)."""

    def __init__(self, scheduler: BestEpochASHA):
        self.scheduler = scheduler

    def get_state(self) -> dict:
        return {"rungs": self.scheduler.rung_state()}

    def set_state(self, state: dict) -> None:
        self.scheduler.restore_rung_state(state["rungs"])
