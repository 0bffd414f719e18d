"""ASHA that judges each trial at a rung by its best epoch so far, ties broken by a second metric.

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
trial's best epoch is its best on (metric, then tie-break metric), and the rung
ranks trials by that pair: among trials sitting on the constant prediction, the
ones whose loss is worse than their rung's cutoff are stopped.
"""

from __future__ import annotations

import math
from typing import Any

from ray.tune.schedulers import ASHAScheduler

# The rung compares one number per trial (Ray's _Bracket takes a percentile of them): the pair is
# folded into metric (rounded to 1e-6, so that float noise counts as a tie) + TIE_WEIGHT x the
# tie-break metric squashed into (-1, 1). Metric differences of 1e-6 and more always win.
METRIC_DIGITS = 6
TIE_WEIGHT = 1e-9


class BestEpochASHA(ASHAScheduler):
    """ASHAScheduler whose rungs record each trial's best value of the metric so far (ties broken by
    `tie_break`, a metric the trials report, in `tie_break_mode`)."""

    def __init__(self, tie_break: str | None = None, tie_break_mode: str = "min", **asha_options: Any):
        super().__init__(**asha_options)
        self._tie_break = tie_break
        self._tie_op = -1.0 if tie_break_mode == "min" else 1.0
        self._best: dict[str, tuple[float, float]] = {}  # trial id -> best (metric, tie-break), both to maximise

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        return super().on_trial_result(tune_controller, trial, self._with_best(trial.trial_id, result))

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
