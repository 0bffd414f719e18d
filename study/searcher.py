"""Ray's OptunaSearch, telling Optuna each trial's value at its best epoch: the value ASHA and the analysis use.

Ray's OptunaSearch records for a trial the metric of its last report, while the
study keeps each trial's best epoch (BestEpochASHA judges rungs by it and the
analysis selects on it): a trial that peaked at epoch 3 and dipped at epoch 4
would teach TPE a worse region than the study saw. Here each epoch still goes to
Optuna as an intermediate value, and a trial ends as COMPLETE with its best.

Trials ASHA stopped end the same way, COMPLETE with their best so far, rather
than PRUNED: their best is a real measurement of the configuration (a lower
bound of what it would have reached), the same figure the results table and
the analysis show for them, and TPE then weighs them with every other trial
instead of setting them aside as pruned.
"""

from __future__ import annotations

import math

from ray.tune.search.optuna import OptunaSearch


class BestEpochOptunaSearch(OptunaSearch):
    """OptunaSearch whose completed trials carry their best epoch's value of the metric."""

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        super().on_trial_result(trial_id, result)
        value = result.get(self.metric)
        if not isinstance(value, (int, float)) or math.isnan(value):
            return
        best = self._best_values().get(trial_id)
        if best is None or (value > best if self.mode == "max" else value < best):
            self._best_values()[trial_id] = value

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        best = self._best_values().pop(trial_id, None)
        if result and best is not None:
            result = {**result, self.metric: best}
        super().on_trial_complete(trial_id, result, error)

    def _best_values(self) -> dict[str, float]:
        """trial id -> best value so far; kept in the searcher's saved state, so a resumed study keeps it."""
        return self.__dict__.setdefault("_best_by_trial", {})
