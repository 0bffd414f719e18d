"""The seed repeats of study.confirm, evaluated: each seed's best weights (chosen on validation, as
in the search) scored once on the evaluated split, and summarised per cell and per pair of models."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from cxrnets.errors import CxrError
from study import storage
from study.analysis.evaluation import AnalysisRefused, Evaluation, StudyData, evaluate_checkpoint
from study.analysis.reading import Study, model_order, trial_configs, trial_folders
from study.checkpoints import read_best_weights
from study.confirm import ConfirmJob, confirm_uri, read_jobs
from study.results import RESULTS_DIR, read_results, read_trial_events
from study.tables import COMPLETED, DIVERGED, FAILED, STOPPED_EARLY, best_epochs, trial_table

log = logging.getLogger("study.analyze")

# The statuses of study.tables.trial_table that a resume leaves; it runs a failed trial again (study.confirm
# restores Tune's run with resume_errored).
ENDED = (COMPLETED, STOPPED_EARLY, DIVERGED)


@dataclass
class SeedRun:
    """One job of the confirm run, as far as it got."""

    job: ConfirmJob
    trial_id: str | None = None
    status: str = "not started"
    epochs: int = 0
    best_epoch: int | None = None          # its best on the study metric
    validation: dict[str, float] = field(default_factory=dict)  # the val/ metrics at best_epoch
    evaluation: Evaluation | None = None   # its best weights on the evaluated split

    @property
    def ended(self) -> bool:
        """Whether the run is over (a --resume would not train it again): completed, diverged or stopped."""
        return self.status in ENDED

    @property
    def failed(self) -> bool:
        """Whether the run ended in an error, which a --resume runs again (from its last full state)."""
        return self.status == FAILED

    def how_it_ended(self) -> str:
        """E.g. `diverged (NaN loss) at epoch 3` (for a run that has ended or failed)."""
        return {COMPLETED: f"completed its {self.epochs} epochs",
                DIVERGED: f"diverged (NaN loss) at epoch {self.epochs}",
                FAILED: f"failed after {self.epochs} epoch(s)",
                STOPPED_EARLY: f"stopped after {self.epochs} epoch(s)"}[self.status]


@dataclass
class Confirmation:
    runs: list[SeedRun]
    seeds: list[int]
    notes: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        """Every run has ended and been evaluated."""
        return all(run.ended and run.evaluation is not None for run in self.runs)


def evaluate_confirmation(study: Study, split: str, data: StudyData) -> Confirmation | None:
    """Evaluate every seed run of the study's confirm run that has best weights; None without one."""
    jobs = read_jobs(study.uri)
    if jobs is None:
        return None
    settings = study.settings
    uri = confirm_uri(study.uri)
    results, events = read_results(uri), read_trial_events(uri)
    weights, problems = read_best_weights(uri)
    confirmation = Confirmation([SeedRun(job) for job in jobs], sorted({job.seed for job in jobs}), list(problems))
    runs = driver_runs(uri)
    if runs > 1:
        confirmation.notes.append(f"the confirm run was resumed {runs - 1} time(s) (python -m study.confirm --resume): "
                                  "a seed run interrupted mid-way went on from its last full state")
    if results.empty:
        confirmation.notes.append(f"{uri}: no seed run has reported an epoch yet")
    # A seed run that ended before its first epoch (an error) has no results row, whose config holds its job:
    # its trial folder's params.json does (or Tune's snapshot of the confirm run).
    trial_dirs = trial_folders(uri, [*results.get("trial_id", []), *events["trial_id"]])
    trials = trial_table(results, events, settings.metric, settings.mode, settings.max_epochs,
                         trial_configs(uri, trial_dirs, results), tie_break=settings.tie_break)
    best_rows = (best_epochs(results, settings.metric, settings.mode, settings.tie_break).set_index("trial_id")
                 if len(results) else None)
    for run in confirmation.runs:
        mine = trials[trials["config/job"] == run.job.job] if "config/job" in trials else trials.iloc[0:0]
        if mine.empty:
            continue
        row = mine.sort_values("epochs", ascending=False).iloc[0]
        run.trial_id, run.status, run.epochs = str(row["trial_id"]), str(row["status"]), int(row["epochs"])
        if pd.notna(row["best_epoch"]):
            run.best_epoch = int(row["best_epoch"])
            run.validation = {key: float(value) for key, value in best_rows.loc[run.trial_id].items()
                              if key.startswith("val/") and pd.notna(value)}
        best = weights.get(run.trial_id)
        if best is None:
            why = (f"{run.how_it_ended()}, before writing weights"
                   if (run.ended or run.failed) and run.best_epoch is None else "no best weights")
            confirmation.notes.append(f"seed run {run.job.name} ({run.trial_id}): {why}; not evaluated")
            continue
        if run.status in (DIVERGED, FAILED, STOPPED_EARLY):
            confirmation.notes.append(f"seed run {run.job.name} ({run.trial_id}): {run.how_it_ended()}; evaluated at "
                                      f"its best epoch before that ({best.epoch})")
        try:
            run.evaluation = evaluate_checkpoint(best.uri, data, split, run.trial_id,
                                                 trial_config=run.job.config, sidecar=best)
        except AnalysisRefused:
            raise
        except (CxrError, OSError) as error:
            confirmation.notes.append(f"seed run {run.job.name} ({run.trial_id}): {error}; not evaluated")
            continue
        log.info("seed %d of %s / %s: %s", run.job.seed, run.job.dataset, run.job.model,
                 ", ".join(f"{k} {v:.3f}" for k, v in run.evaluation.metrics.items() if not k.endswith("loss")))
    return confirmation


def driver_runs(uri: str) -> int:
    """How many driver processes wrote results here (each names its parts with a session of its own:
    study.results.ResultsTable); more than one means the run was resumed."""
    sessions = {entry.name.rsplit("-", 1)[0] for entry in storage.listing(storage.join(uri, RESULTS_DIR))
                if entry.name.endswith(".parquet")}
    return len(sessions)


def seed_runs_table(confirmation: Confirmation, split: str, metric: str, study_metric: str) -> pd.DataFrame:
    """One row per seed run: its cell, seed, status, epochs, its best epoch on `study_metric` and its value
    there, the analysis's `metric` (if another) at that epoch, and its figures on the split."""
    rows = []
    for run in confirmation.runs:
        row = {"dataset": run.job.dataset, "model": run.job.model, "confirms": run.job.confirms,
               "seed": run.job.seed, "trial_id": run.trial_id, "status": run.status, "epochs": run.epochs,
               "best epoch": run.best_epoch, f"{study_metric} (best)": run.validation.get(study_metric, np.nan)}
        if metric != study_metric:
            row[f"{metric} at best epoch"] = run.validation.get(metric, np.nan)
        if run.evaluation is not None:
            row.update({k: v for k, v in run.evaluation.metrics.items() if k.startswith(f"{split}/")})
        rows.append(row)
    return pd.DataFrame(rows)


def seed_summary(runs: pd.DataFrame, figure: str, search: dict[str, float],
                 search_epochs: dict[str, int] | None = None) -> pd.DataFrame:
    """Per cell: the search's trial that the seeds repeat next to the mean ± std over the evaluated seeds
    (`figure`: a column of seed_runs_table, e.g. test/f1_macro); `search`: trial id -> its value, for the
    search's trials the analysis evaluated (a trial it did not evaluate shows none); `search_epochs`: trial id ->
    the epochs it trained, beside the most any of its seeds trained (a trial ASHA stopped trained fewer)."""
    rows = []
    for (dataset, model), group in runs.groupby(["dataset", "model"], sort=False):
        values = group[figure].dropna() if figure in group else pd.Series(dtype=float)
        repeated = group["confirms"].iloc[0]
        rows.append({"dataset": dataset, "model": model, "search's trial": repeated,
                     "search's run": search.get(repeated, np.nan),
                     "search's epochs": (search_epochs or {}).get(repeated, np.nan),
                     "seeds mean": values.mean() if len(values) else np.nan,
                     "seeds std": values.std() if len(values) > 1 else np.nan,
                     "seeds evaluated": len(values), "seeds asked": len(group),
                     "seeds' epochs": group["epochs"].max(),
                     "each seed": ", ".join(f"{v:.3f}" for v in values)})
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    order = model_order(table["model"])
    return table.sort_values(["dataset", "model"], key=lambda c: c.map(order.index) if c.name == "model" else c,
                             kind="stable").reset_index(drop=True)


def seed_differences(runs: pd.DataFrame, figure: str) -> pd.DataFrame:
    """Per dataset and pair of models: the difference of `figure` seed by seed (the seeds both have),
    its mean and standard deviation."""
    rows = []
    if figure not in runs:
        return pd.DataFrame(columns=["dataset", "model", "versus", "seeds", "mean difference", "std"])
    for dataset, group in runs.groupby("dataset", sort=False):
        by_seed = group.pivot_table(index="seed", columns="model", values=figure, aggfunc="first")
        models = model_order(by_seed.columns)
        for i, first in enumerate(models):
            for second in models[i + 1:]:
                difference = (by_seed[first] - by_seed[second]).dropna()
                rows.append({"dataset": dataset, "model": first, "versus": second, "seeds": len(difference),
                             "mean difference": difference.mean() if len(difference) else np.nan,
                             "std": difference.std() if len(difference) > 1 else np.nan})
    return pd.DataFrame(rows, columns=["dataset", "model", "versus", "seeds", "mean difference", "std"])
