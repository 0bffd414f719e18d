"""Selecting on validation, evaluating on test: the trials each (dataset, model) cell puts forward.

Per cell, `candidates` ranks the trials that have best weights by the
validation metric at the weights' epoch (from the sidecars and the results
table, never from the weights); `select_and_evaluate` downloads and
evaluates the `top_k` best, letting the next trial take the place of one
whose weights are missing, unreadable or another trial's: weights that
cannot be evaluated on any image. A chosen trial whose outputs on the
evaluated images are not finite fails its cell instead (`Failed`): taking
the next trial then would choose the cell's model by its figures on that
split. `Analysis` holds what the selection found and what the later steps
add (intervals, seed repeats, importance, tables, figures).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from cxrnets.errors import CxrError, DivergedError
from study.analysis.confirmation import Confirmation
from study.analysis.evaluation import AnalysisRefused, Evaluation, StudyData, evaluate_checkpoint
from study.analysis.importance import Importance
from study.analysis.reading import Study, cell_columns, model_order
from study.analysis.uncertainty import SplitBootstrap
from study import storage
from study.checkpoints import BestWeights, sidecar_uri, weights_uri
from study.tables import DIVERGED, FAILED, UNFINISHED, epoch_column, measured, rank_key

log = logging.getLogger("study.analyze")


@dataclass
class Candidate:
    """A trial's best weights, ranked by the validation metric at their epoch."""

    trial_id: str
    trial_name: str
    weights: BestWeights
    epoch: int
    value: float                 # the validation metric at `epoch`, as the results table recorded it
    best_epoch: int
    best_value: float
    tie: float = float("nan")    # the study's tie-break metric at `epoch` (NaN: none)
    config: dict[str, Any] = field(default_factory=dict)  # the trial's, as the results table recorded it
    status: str = ""             # how the trial ended in the study (study.tables.STATUSES)
    epochs: int = 0              # the epochs it trained in the study (fewer than max_epochs where it stopped early)


def candidates(study: Study, trials: pd.DataFrame, metric: str, mode: str,
               notes: list[str], top_k: int = 1) -> list[Candidate]:
    """The trials of `trials` that have best weights, best first: on `metric` at the weights' epoch (as the
    sidecar says: no weights file is read here), ties broken by the study's tie-break metric at that epoch, then
    by trial id (study.tables.rank_key).

    Trials without usable weights are left out; why goes into `notes` for those that would have been
    among the `top_k` evaluated (the study deletes the others' weights by design: --keep).
    """
    results = study.results
    tie_break = study.settings.tie_break

    def tie_at(own: pd.DataFrame, epoch: int) -> float:
        rows = own[epoch_column(own) == epoch]
        return float(rows[tie_break].iloc[0]) if tie_break in own and len(rows) else float("nan")

    ranked, unweighted, diverged = [], [], []
    for trial in trials.to_dict("records"):
        trial_id, name = trial["trial_id"], trial["trial_name"]
        weights = study.weights.get(trial_id)
        if pd.isna(trial.get("_best")):
            if trial.get("status") == DIVERGED:
                diverged.append(f"trial {trial_id} ({name}): diverged (NaN loss) at epoch {trial['epochs']}, before "
                                "writing weights; not evaluated")
            elif weights:
                notes.append(f"trial {trial_id} ({name}): has best weights but no recorded {metric} (the study "
                             "stopped before recording its first epoch); not used")
            continue
        own = measured(results[results["trial_id"] == trial_id])
        if weights is None:
            epoch = int(trial["_best_epoch"])
            unweighted.append((float(trial["_best"]), tie_at(own, epoch), trial_id, name, epoch))
            continue
        scores = dict(zip(epoch_column(own), own[metric]))
        if weights.epoch not in scores or pd.isna(scores[weights.epoch]):
            notes.append(f"trial {trial_id} ({name}): its best weights are of epoch {weights.epoch}, which has no "
                         f"recorded {metric} (the study stopped before recording it); not used")
            continue
        value = float(scores[weights.epoch])
        best_epoch, best_value = int(trial["_best_epoch"]), float(trial["_best"])
        if value != best_value:
            notes.append(f"trial {trial_id} ({name}): its weights are of epoch {weights.epoch} ({metric} "
                         f"{value:.3f}), not of its best epoch on {metric} ({best_epoch}, {best_value:.3f}): the "
                         f"study kept the best on {weights.metric}")
        config = {key.removeprefix("config/"): setting for key, setting in trial.items()
                  if key.startswith("config/") and not (pd.api.types.is_scalar(setting) and pd.isna(setting))}
        ranked.append(Candidate(trial_id, name, weights, weights.epoch, value, best_epoch, best_value,
                                tie_at(own, weights.epoch), config, trial.get("status", ""), int(trial["epochs"])))
    def key(candidate: Candidate) -> tuple:
        return rank_key(candidate.trial_id, candidate.value, mode, candidate.tie, tie_break)

    unweighted_keys = [rank_key(trial_id, value, mode, tie, tie_break) for value, tie, trial_id, *_ in unweighted]
    for (value, _, trial_id, name, epoch), mine in zip(unweighted, unweighted_keys):
        better = sum(1 for c in ranked if key(c) < mine)
        if better < top_k:
            ahead = better + sum(1 for other in unweighted_keys if other < mine)
            notes.append(f"trial {trial_id} ({name}): {no_weights_words(study, trial_id, ahead, metric, value, epoch)}")
    if len(ranked) < top_k:
        notes += diverged
    return sorted(ranked, key=key)  # as study.tables.best_trials ranks them (what study.run prints)


def no_weights_words(study: Study, trial_id: str, ahead: int, metric: str, value: float, epoch: int) -> str:
    """Why a trial with a best on `metric` has no usable weights: --keep deleted them (`ahead`: trials of its
    cell ranked before it), or they are missing, or their sidecar is."""
    keep = study.settings.keep
    if keep != "all" and ahead >= keep:
        return (f"no best weights (best {metric} {value:.3f} at epoch {epoch}); skipped. The study keeps the weights "
                f"of {kept_trials(keep)} on {study.settings.metric} only (study.run --keep {keep})")
    found = f"best {metric} {value:.3f} at epoch {epoch}, but"
    weights, sidecar = weights_uri(study.uri, trial_id), sidecar_uri(study.uri, trial_id)
    if storage.kind(sidecar) == "file":
        return f"{found} the sidecar of its best weights, {sidecar}, is unreadable; skipped"
    if storage.kind(weights) == "file":
        return (f"{found} its best weights {weights} have no sidecar ({sidecar}: a deletion interrupted between the "
                "two, or a copy that left it out); skipped")
    kept = "every trial's" if keep == "all" else f"those of {kept_trials(keep)}"
    return f"{found} its best weights {weights} are missing (--keep {keep} keeps {kept}); skipped"


def kept_trials(keep: int) -> str:
    """The trials whose weights --keep keeps: `each model's best trial`, `each model's 3 best trials`."""
    return "each model's best trial" if keep == 1 else f"each model's {keep} best trials"


@dataclass
class Selected:
    """One evaluated trial of a (dataset, model) cell; rank 1 is the cell's best on validation."""

    dataset: str
    model: str
    rank: int
    candidate: Candidate
    evaluation: Evaluation


@dataclass
class Failed:
    """A trial chosen on validation whose evaluation on the split failed (outputs not finite on its images):
    its cell has no figure there; the next trial does not take its place."""

    dataset: str
    model: str
    rank: int
    candidate: Candidate
    reason: str  # the weights evaluated, and what went wrong


@dataclass
class Analysis:
    study: Study
    metric: str
    mode: str
    split: str
    top_k: int
    trials: pd.DataFrame
    selected: list[Selected] = field(default_factory=list)
    failed: list[Failed] = field(default_factory=list)  # chosen trials that failed on the split: no replacement
    notes: list[str] = field(default_factory=list)
    split_notes: dict[str, str] = field(default_factory=dict)  # StudyData's: copies across a split's parts
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)   # name -> table (what CSV/Parquet hold)
    summary: dict[str, Any] = field(default_factory=dict)
    figures: dict[str, Path] = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)
    out: Path | None = None
    downloaded_bytes: int = 0  # weights fetched from object storage (0 when all came from the local cache)
    bootstraps: dict[str, SplitBootstrap] = field(default_factory=dict)  # dataset -> its split resampled
    importances: list[Importance] = field(default_factory=list)          # one per dataset
    confirmation: Confirmation | None = None                             # study.confirm's seed repeats
    external_sets: list = field(default_factory=list)  # study.analysis.external.ExternalSet, each evaluated
    external: pd.DataFrame = field(default_factory=pd.DataFrame)  # internal split vs each external set
    saliency: list = field(default_factory=list)       # study.analysis.saliency.SaliencyPanel, one per cell
    look: Any = None                                   # study.analysis.looks.Look: this analysis's, on test
    earlier_looks: list = field(default_factory=list)  # the Looks recorded by earlier analyses of the study
    look_problems: list[str] = field(default_factory=list)  # records unreadable, or this one unwritten

    def best(self, dataset: str, model: str) -> Selected | None:
        return next((s for s in self.selected if (s.dataset, s.model, s.rank) == (dataset, model, 1)), None)


def select_and_evaluate(analysis: Analysis, data: StudyData) -> None:
    """Per (dataset, model): rank trials on validation, evaluate the k best usable checkpoints on the split."""
    trials = cell_columns(analysis.trials, analysis.study.settings)
    trials = trials.assign(_best=trials[analysis.metric], _best_epoch=trials["best_epoch"])
    cells = sorted({(d, m) for d, m in zip(trials["dataset"], trials["model"])},
                   key=lambda cell: (cell[0], model_order(trials["model"]).index(cell[1])))
    queue = []
    for dataset, model in cells:
        members = trials[(trials["dataset"] == dataset) & (trials["model"] == model)]
        queue.append((dataset, model, candidates(analysis.study, members, analysis.metric, analysis.mode,
                                                 analysis.notes, analysis.top_k)))
    total = sum(min(len(ranked), analysis.top_k) for *_, ranked in queue)
    first_configs: dict[str, dict] = {}
    for dataset, _, ranked in queue:
        if ranked:
            first_configs.setdefault(dataset, ranked[0].config)
    data.check_splits(first_configs)
    data.prefetch([candidate.weights.uri for *_, ranked in queue for candidate in ranked[:analysis.top_k]])
    done = 0
    for dataset, model, ranked in queue:
        rank = 0
        for position, candidate in enumerate(ranked):
            if rank == analysis.top_k:
                break
            done += 1
            log.info("[%d/%d] %s / %s: evaluating trial %s (%s, epoch %d, %s %.3f) on the %s split", done, total,
                     dataset, model, candidate.trial_id, candidate.trial_name, candidate.epoch, analysis.metric,
                     candidate.value, analysis.split)
            try:
                evaluation = evaluate_checkpoint(candidate.weights.uri, data, analysis.split, candidate.trial_id,
                                                 trial_config=candidate.config, sidecar=candidate.weights)
            except AnalysisRefused:
                raise
            except DivergedError as error:
                rank += 1
                reason = f"{candidate.weights.uri}: {error}"
                analysis.failed.append(Failed(dataset, model, rank, candidate, reason))
                analysis.notes.append(
                    f"{dataset} / {model}: trial {candidate.trial_id} ({candidate.trial_name}), chosen on validation, "
                    f"failed on the {analysis.split} split: {reason}; the cell is reported as failed, not replaced by "
                    f"the next trial (which its {analysis.split} figures would then have chosen)")
                log.warning("trial %s failed on the %s split: %s", candidate.trial_id, analysis.split, reason)
                note_unended(analysis, dataset, model, candidate)
                continue
            except (CxrError, OSError) as error:
                replaced = len(ranked) > position + analysis.top_k - rank
                analysis.notes.append(f"trial {candidate.trial_id} ({candidate.trial_name}): {error}; skipped, "
                                      + ("the next best trial of its cell takes its place" if replaced
                                         else "and no further trial of its cell is left to take its place"))
                log.warning("trial %s skipped: %s", candidate.trial_id, error)
                if replaced:
                    total += 1
                continue
            rank += 1
            shown = {k: v for k, v in evaluation.metrics.items() if not k.endswith("loss")}
            log.info("    %s (%.1f s)", ", ".join(f"{k} {v:.3f}" for k, v in shown.items()), evaluation.seconds)
            analysis.selected.append(Selected(dataset, model, rank, candidate, evaluation))
            note_unended(analysis, dataset, model, candidate)
        if rank == 0:
            analysis.notes.append(f"{dataset} / {model}: no trial with a usable checkpoint; the cell stays empty")
        elif rank < analysis.top_k:
            analysis.notes.append(f"{dataset} / {model}: only {rank} trial(s) with a usable checkpoint "
                                  f"(--top-k {analysis.top_k})")


def note_unended(analysis: Analysis, dataset: str, model: str, candidate: Candidate) -> None:
    """Note (and warn of) a trial chosen on validation that errored in the study or has not ended: the study,
    resumed or finished, may then choose another."""
    chosen = f"{dataset} / {model}: trial {candidate.trial_id} ({candidate.trial_name}), chosen on validation,"
    if candidate.status == FAILED:
        note = (f"{chosen} failed in the study (Tune recorded an error): its figures are of its best weights before "
                "the error; python -m study.run --resume retries it, and the study may then choose another trial")
    elif candidate.status == UNFINISHED:
        note = (f"{chosen} is unfinished (still running, or interrupted): its figures are of its best weights so far "
                f"(epoch {candidate.epoch}); when it ends, the study may choose another trial")
    else:
        return
    analysis.notes.append(note)
    log.warning(note)
