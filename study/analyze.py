"""Analyse a study: the paper's comparison and ablation tables, confusion matrices and curves.

    python -m study.analyze studies/demo-20261125-101500
    python -m study.analyze studies/demo-20261125-101500 --top-k 3 --format md,png
    python -m study.analyze studies/demo-20261125-101500 --split val --metric val/accuracy

It reads what a study wrote (finished, still running or interrupted; it never
trains): the results table, the trial ends, the study's split and the trials'
best-weights sidecars (study.checkpoints). For every (dataset, model) it picks
the best trial on the validation metric, evaluates that trial's best weights
once on the held-out test split, and writes `<study dir>/report/` (or --out):
report.md (tables inline, figures linked), one CSV and one Parquet file per
table under tables/, and PNG figures under figures/. A study in object storage
(s3://, gs://) is read in place; only the weights it evaluates are downloaded,
into a local cache that a second analysis reuses.

Only the trials chosen on validation are ever evaluated on test. A trial
whose weights are missing or unreadable is reported and the next best
trial of its cell takes its place. The split is part of the study: if the
images changed since the study made it (their SHA-1s are in the split file),
or the split file was edited (the analysis remakes the split from the data
and the study's seed and compares), the analysis refuses.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cxrnets.errors import CxrError
from cxrnets.models import MODEL_NAMES
from study import storage
from study.checkpoints import BestWeights, read_best_weights
from study.results import read_results, read_trial_events
from study.settings import StudySettings, load_settings, read_split, split_uri
from study.tables import (METRIC_TITLES, NOT_SET, PAPER_METRICS, STATUSES, ablation_table,
                          best_epochs, comparison_table, epoch_column, format_paper_table, markdown_table,
                          paper_table, search_summary, trial_table, wall_seconds)

log = logging.getLogger("study.analyze")

FORMATS = ("md", "csv", "parquet", "png")
REPORT_DIR = "report"


class AnalysisRefused(CxrError):
    """An error that stops the whole analysis (the data or the split changed, the data is absent),
    not just one trial."""


# ------------------------------------------------------------------ reading a study

@dataclass
class Study:
    """What a study directory holds, read once (the weights only as their sidecars say)."""

    uri: str
    settings: StudySettings
    results: pd.DataFrame            # one row per (trial, epoch)
    events: pd.DataFrame             # how trials ended
    trial_dirs: dict[str, list[str]]  # trial_id -> its Tune trial folder(s)
    weights: dict[str, BestWeights] = field(default_factory=dict)  # trial_id -> its best weights
    weights_problems: list[str] = field(default_factory=list)      # sidecars that could not be read

    @property
    def remote(self) -> bool:
        return storage.is_remote(self.uri)


def open_study(study_dir: str | Path) -> Study:
    """Read study.json, the results table, the trial ends, the trial folders and the best-weights
    sidecars (small files only); CxrError if it is no study."""
    settings = load_settings(str(study_dir))
    uri = settings.study_uri
    results = read_results(uri)
    events = read_trial_events(uri)
    # Tune names a trial's folder <trial_id>_<trial name> (study.run.trial_dirname).
    known = sorted({*results.get("trial_id", []), *events["trial_id"]}, key=len, reverse=True)
    trial_dirs: dict[str, list[str]] = {}
    for entry in storage.listing(uri):
        if not entry.is_dir:
            continue
        trial_id = next((t for t in known if entry.name.startswith(f"{t}_")), None)
        match = re.fullmatch(r"([0-9a-f]{8})_.+", entry.name)
        trial_id = trial_id or (match.group(1) if match else None)
        if trial_id:
            trial_dirs.setdefault(trial_id, []).append(entry.uri)
    weights, problems = read_best_weights(uri)
    return Study(uri, settings, results, events, trial_dirs, weights, problems)


def resolve_metric(study: Study, metric: str | None) -> tuple[str, str]:
    """The validation metric trials are chosen on, and its mode (min for a loss)."""
    metric = metric or study.settings.metric
    if "/" not in metric:
        metric = f"val/{metric}"
    if not metric.startswith("val/"):
        raise CxrError(f"--metric {metric}: trials are chosen on a validation metric (val/...); "
                       "use --split test to see test metrics")
    available = sorted(c for c in study.results.columns if c.startswith("val/"))
    if metric not in study.results.columns:
        raise CxrError(f"--metric {metric}: the study did not record it; recorded: {', '.join(available)}")
    mode = study.settings.mode if metric == study.settings.metric else ("min" if metric.endswith("loss") else "max")
    return metric, mode


def trial_configs(study: Study) -> dict[str, dict]:
    """Configs of trials that never reported an epoch, from their params.json (for the trial table)."""
    reported = set(study.results["trial_id"]) if len(study.results) else set()
    configs = {}
    for trial_id, folders in study.trial_dirs.items():
        if trial_id in reported:
            continue
        try:
            config = storage.read_json(storage.join(folders[0], "params.json"))
        except (OSError, ValueError):
            config = {}
        config["__trial_name__"] = folders[0].rstrip("/").rpartition("/")[2].partition("_")[2]
        configs[trial_id] = config
    return configs


def search_dimensions(study: Study, trials: pd.DataFrame) -> list[tuple[str, str | None]]:
    """(dimension, scale) for every config/ column, in the space's order; scale is log, linear or None."""
    scales: dict[str, str | None] = {}
    try:
        for dimension in study.settings.search_space().dimensions:
            if dimension.kind in ("uniform", "loguniform", "int"):
                scale = "log" if dimension.kind == "loguniform" or dimension.log else "linear"
                scales.setdefault(dimension.name, scale)
            else:
                scales.setdefault(dimension.name, None)
    except CxrError as error:  # a space file this version no longer parses: bin from the values alone
        log.warning("the study's search space does not parse (%s); ablations bin numbers by their values", error)
    columns = [c.removeprefix("config/") for c in trials.columns if c.startswith("config/")]
    ordered = [name for name in scales if name in columns] + [c for c in columns if c not in scales]
    return [(name, scales.get(name)) for name in ordered]


# ------------------------------------------------------------------ checkpoints

def load_checkpoint(path: str | Path) -> dict:
    """A trial's best weights (a local file, weights_only), checked for the keys the analysis needs;
    CxrError if unusable."""
    import torch

    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as error:  # torch raises RuntimeError, EOFError, UnpicklingError, ... on a bad file
        raise CxrError(f"{path}: not a readable checkpoint ({type(error).__name__}: {str(error)[:200]})") from error
    missing = {"model", "epoch", "config", "classes", "multilabel"} - set(checkpoint if isinstance(checkpoint, dict)
                                                                         else {})
    if missing:
        raise CxrError(f"{path}: not a study checkpoint (missing {sorted(missing)})")
    return checkpoint


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


def candidates(study: Study, trials: pd.DataFrame, metric: str, mode: str,
               notes: list[str], top_k: int = 1) -> list[Candidate]:
    """The trials of `trials` that have best weights, best first (their epoch as the sidecar says:
    no weights file is read here).

    Trials without usable weights are left out; why goes into `notes` for those that would have been
    among the `top_k` evaluated (the study deletes the others' weights by design: --keep).
    """
    results = study.results
    ranked, unweighted = [], []
    for trial in trials.to_dict("records"):
        trial_id, name = trial["trial_id"], trial["trial_name"]
        weights = study.weights.get(trial_id)
        if pd.isna(trial.get("_best")):
            if weights:
                notes.append(f"trial {trial_id} ({name}): has best weights but no recorded {metric} (the study "
                             "stopped before recording its first epoch); not used")
            continue
        if weights is None:
            unweighted.append((float(trial["_best"]), trial_id, name, int(trial["_best_epoch"])))
            continue
        own = results[results["trial_id"] == trial_id]
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
        ranked.append(Candidate(trial_id, name, weights, weights.epoch, value, best_epoch, best_value))
    sign = 1 if mode == "min" else -1
    for value, trial_id, name, epoch in unweighted:
        better = sum(1 for c in ranked if (sign * c.value, c.trial_id) < (sign * value, trial_id))
        if better < top_k:
            notes.append(f"trial {trial_id} ({name}): no best weights (best {metric} {value:.3f} at epoch {epoch}); "
                         f"skipped. The study keeps the weights of each model's {study.settings.keep} best trials "
                         f"on {study.settings.metric} (study.run --keep)")
    # Ties go to the lower trial id, as in study.tables.best_trials (what study.run prints).
    return sorted(ranked, key=lambda c: (sign * c.value, c.trial_id))


# ------------------------------------------------------------------ data and evaluation

class StudyData:
    """The study's split of each dataset, checked against the data, prepared once per (dataset, image size)."""

    def __init__(self, study: Study, data_roots: dict[str, str] | None = None, cache_dir: str | None = None,
                 device: str = "auto"):
        self.study = study
        self.data_roots = {**study.settings.data_roots, **(data_roots or {})}
        self.cache_dir = cache_dir or study.settings.cache_dir
        self.device = device
        self._prepared: dict[tuple, Any] = {}
        self._splits: dict[str, pd.DataFrame] = {}

    def split_uri(self, dataset: str) -> str:
        return split_uri(self.study.uri, dataset)

    def download_dir(self) -> Path:
        """Where weights from object storage are cached on this machine."""
        return Path(self.cache_dir) / "downloads" if self.cache_dir else storage.download_cache_dir()

    def split(self, dataset: str) -> pd.DataFrame:
        if dataset not in self._splits:
            uri = self.split_uri(dataset)
            try:
                split = read_split(uri)
            except CxrError as error:
                raise AnalysisRefused(f"{error}; the test evaluation needs it") from error
            missing = {"relpath", "patient", "sha1", "split"} - set(split.columns)
            if missing:
                raise AnalysisRefused(f"{uri}: not a split file (missing columns {sorted(missing)})")
            self._splits[dataset] = split
        return self._splits[dataset]

    def prepare(self, config) -> Any:
        """The dataset of `config` (a TrainConfig) with the study's split; refuses if either changed."""
        from cxrnets.splits import make_split
        from cxrnets.training import prepare_data

        key = (config.dataset, config.data_root, config.image_size, config.cache_dir,
               json.dumps(config.dataset_options, sort_keys=True))
        if key in self._prepared:
            return self._prepared[key]
        uri = self.split_uri(config.dataset)
        saved = self.split(config.dataset)
        if not Path(config.data_root).exists():
            raise AnalysisRefused(f"dataset {config.dataset}: no data at {config.data_root} on this machine; pass "
                                  f"--data-root {config.dataset}=PATH")
        try:
            data = prepare_data(config, split=saved)
        except CxrError as error:
            raise AnalysisRefused(f"refusing to evaluate: {uri} no longer matches the data at "
                                  f"{config.data_root}: {error}") from error
        # The split file itself must be the one the study made: remake it (seeded) and compare.
        frame = data.index.frame.assign(sha1=data.split["sha1"].to_numpy())
        try:
            remade = make_split(frame, data.index.stratum(), seed=self.study.settings.seed)
        except CxrError as error:
            raise AnalysisRefused(f"refusing to evaluate: the data at {config.data_root} no longer gives the "
                                  f"study's split ({error})") from error
        moved = remade["split"].to_numpy() != data.split["split"].to_numpy()
        if moved.any():
            example = data.split.loc[moved, ["relpath", "split"]].iloc[0]
            raise AnalysisRefused(
                f"refusing to evaluate: {uri} was edited since the study made it: {int(moved.sum())} image(s) "
                f"changed split, e.g. {example['relpath']} is now in {example['split']} but the study put it in "
                f"{remade.loc[moved, 'split'].iloc[0]} (seed {self.study.settings.seed}); the split is part of "
                "the study: restore the file, or start a new study")
        for name in ("train", "val", "test"):
            if len(data.rows(name)) == 0:
                raise AnalysisRefused(f"{uri}: the {name} split of {config.dataset} is empty; nothing to evaluate on")
        self._prepared[key] = data
        return data

    def train_config(self, checkpoint: dict):
        from cxrnets.training import TrainConfig

        values = dict(checkpoint["config"])
        dataset = values.get("dataset")
        if dataset in self.data_roots:
            values["data_root"] = self.data_roots[dataset]
        # The checkpoint holds every weight: no pretrained weights to fetch, no compile for one pass.
        values.update(cache_dir=self.cache_dir, device=self.device, pretrained=False, weights=None, compile=False)
        return TrainConfig.from_dict(values)


@dataclass
class Evaluation:
    """One checkpoint evaluated on one split."""

    trial_id: str
    epoch: int
    split: str
    metrics: dict[str, float]
    y_true: np.ndarray
    scores: np.ndarray
    classes: list[str]
    multilabel: bool
    config: dict[str, Any]
    seconds: float = 0.0
    baseline: dict[str, float] = field(default_factory=dict)  # the majority-class predictor on the same images


def evaluate_checkpoint(path: str | Path, data: StudyData, split: str = "test", trial_id: str = "") -> Evaluation:
    """Load a trial's weights (a local file) and evaluate them once on `split` of the study's split;
    CxrError if unusable."""
    from cxrnets.metrics import majority_baseline
    from cxrnets.training import TrainingRun

    started = time.perf_counter()
    checkpoint = load_checkpoint(path)
    config = data.train_config(checkpoint)
    prepared = data.prepare(config)
    if list(checkpoint["classes"]) != list(prepared.index.classes):
        raise CxrError(f"{path}: the checkpoint's classes {checkpoint['classes']} differ from the dataset's "
                       f"{prepared.index.classes}")
    run = TrainingRun(config, prepared)
    try:
        run.model.load_state_dict(checkpoint["model"])
    except (RuntimeError, KeyError, TypeError) as error:
        raise CxrError(f"{path}: the weights do not fit {config.model} ({str(error)[:200]})") from error
    metrics, y_true, scores = run.evaluate_split(split)
    baseline = majority_baseline(prepared.targets[prepared.rows("train")], y_true, prepared.index.multilabel,
                                 len(prepared.index.classes))
    return Evaluation(trial_id, int(checkpoint["epoch"]), split, metrics, y_true, scores,
                      list(prepared.index.classes), bool(prepared.index.multilabel), dict(checkpoint["config"]),
                      time.perf_counter() - started, {f"{split}/{k}": v for k, v in baseline.items()})


# ------------------------------------------------------------------ the analysis

@dataclass
class Selected:
    """One evaluated trial of a (dataset, model) cell; rank 1 is the cell's best on validation."""

    dataset: str
    model: str
    rank: int
    candidate: Candidate
    evaluation: Evaluation


@dataclass
class Analysis:
    study: Study
    metric: str
    mode: str
    split: str
    top_k: int
    trials: pd.DataFrame
    selected: list[Selected] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)   # name -> table (what CSV/Parquet hold)
    summary: dict[str, Any] = field(default_factory=dict)
    figures: dict[str, Path] = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)
    out: Path | None = None
    downloaded_bytes: int = 0  # weights fetched from object storage (0 when all came from the local cache)

    def best(self, dataset: str, model: str) -> Selected | None:
        return next((s for s in self.selected if (s.dataset, s.model, s.rank) == (dataset, model, 1)), None)


def cell_columns(frame: pd.DataFrame, settings) -> pd.DataFrame:
    """dataset and model columns for every trial (a study over one dataset may not record it per trial)."""
    default_dataset = next(iter(settings.data_roots), "?")
    dataset = frame["config/dataset"] if "config/dataset" in frame else pd.Series(default_dataset, index=frame.index)
    model = frame["config/model"] if "config/model" in frame else pd.Series("?", index=frame.index)
    return frame.assign(dataset=dataset.fillna(default_dataset).astype(str), model=model.fillna("?").astype(str))


def model_order(models) -> list[str]:
    models = list(dict.fromkeys(models))
    return [m for m in MODEL_NAMES if m in models] + sorted(m for m in models if m not in MODEL_NAMES)


def analyze(study_dir: str | Path, metric: str | None = None, split: str = "test", top_k: int = 1,
            formats: tuple[str, ...] = FORMATS, out: str | Path | None = None,
            data_roots: dict[str, str] | None = None, cache_dir: str | None = None,
            device: str = "auto") -> Analysis:
    """Analyse one study and write its report; returns everything it computed."""
    if split not in ("val", "test"):
        raise CxrError(f"--split {split}: choose val or test")
    if top_k < 1:
        raise CxrError(f"--top-k must be at least 1, got {top_k}")
    unknown = set(formats) - set(FORMATS)
    if unknown:
        raise CxrError(f"--format {','.join(sorted(unknown))}: choose from {','.join(FORMATS)}")
    from cxrnets.training import select_device

    select_device(device)  # a --device this machine lacks stops here, not at every trial
    study = open_study(study_dir)
    if study.results.empty:
        raise CxrError(f"{study.uri}: no trial has finished an epoch yet (the results table is empty); "
                       "nothing to analyse: let the study run (or --resume it) first")
    metric, mode = resolve_metric(study, metric)
    if study.results[metric].notna().sum() == 0:
        raise CxrError(f"{study.uri}: no finished epoch recorded {metric}; nothing to analyse")
    settings = study.settings
    trials = trial_table(study.results, study.events, metric, mode, settings.max_epochs, trial_configs(study))
    analysis = Analysis(study, metric, mode, split, top_k, trials, notes=list(study.weights_problems))
    analysis.summary = search_summary(trials, settings.max_epochs, wall_seconds(study.results, study.events))

    if out is None and study.remote:
        raise CxrError(f"{study.uri} is in object storage: pass --out DIR (a local folder) for the report")
    analysis.out = Path(out) if out is not None else Path(study.uri) / REPORT_DIR

    select_and_evaluate(analysis, StudyData(study, data_roots, cache_dir, device))
    build_tables(analysis)
    write_report(analysis, formats)
    return analysis


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
    done = 0
    for dataset, model, ranked in queue:
        rank = 0
        for candidate in ranked:
            if rank == analysis.top_k:
                break
            done += 1
            log.info("[%d/%d] %s / %s: evaluating trial %s (%s, epoch %d, %s %.3f) on the %s split", done, total,
                     dataset, model, candidate.trial_id, candidate.trial_name, candidate.epoch, analysis.metric,
                     candidate.value, analysis.split)
            try:
                local, fetched = storage.download(candidate.weights.uri, data.download_dir())
                analysis.downloaded_bytes += fetched
                evaluation = evaluate_checkpoint(local, data, analysis.split, candidate.trial_id)
            except AnalysisRefused:
                raise
            except (CxrError, OSError) as error:
                analysis.notes.append(f"trial {candidate.trial_id} ({candidate.trial_name}): {error}; skipped, "
                                      "the next best trial of its cell takes its place")
                log.warning("trial %s skipped: %s", candidate.trial_id, error)
                total += 1
                continue
            rank += 1
            shown = {k: v for k, v in evaluation.metrics.items() if not k.endswith("loss")}
            log.info("    %s (%.1f s)", ", ".join(f"{k} {v:.3f}" for k, v in shown.items()), evaluation.seconds)
            analysis.selected.append(Selected(dataset, model, rank, candidate, evaluation))
        if rank == 0:
            analysis.notes.append(f"{dataset} / {model}: no trial with a usable checkpoint; the cell stays empty")
        elif rank < analysis.top_k:
            analysis.notes.append(f"{dataset} / {model}: only {rank} trial(s) with a usable checkpoint "
                                  f"(--top-k {analysis.top_k})")


# ------------------------------------------------------------------ tables

def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", str(text)).strip("-") or "x"


def selected_table(analysis: Analysis) -> pd.DataFrame:
    """One row per evaluated trial: its cell, rank, config, epochs and metrics on the split."""
    rows = []
    trials = analysis.trials.set_index("trial_id")
    config_columns = [c for c in trials.columns if c.startswith("config/") and c not in
                      ("config/dataset", "config/model")]
    for chosen in analysis.selected:
        candidate, evaluation = chosen.candidate, chosen.evaluation
        row = {"dataset": chosen.dataset, "model": chosen.model, "rank": chosen.rank,
               "trial_id": candidate.trial_id, "trial_name": candidate.trial_name}
        row.update({c.removeprefix("config/"): trials.loc[candidate.trial_id, c] for c in config_columns})
        row.update({"best epoch": candidate.best_epoch, "evaluated epoch": evaluation.epoch,
                    f"{analysis.metric} (recorded)": candidate.value})
        row.update(evaluation.metrics)
        rows.append(row)
    return pd.DataFrame(rows)


def build_tables(analysis: Analysis) -> None:
    tables = analysis.tables
    settings = analysis.study.settings
    cells = selected_table(analysis)
    tables["selected_trials"] = cells
    trials = cell_columns(analysis.trials, settings)
    models = model_order(trials["model"])
    prefix = f"{analysis.split}/"
    long = cells.rename(columns=lambda c: c.removeprefix(prefix)) if len(cells) else pd.DataFrame(
        columns=["dataset", "model"])
    for metric in PAPER_METRICS:
        if metric not in long.columns or long[metric].notna().sum() == 0:
            continue
        rows = sorted(long.loc[long[metric].notna(), "dataset"].unique())
        mean, std, count = paper_table(long, metric, models, rows)
        table = mean.reset_index()
        if analysis.top_k > 1:
            for model in models:
                table[f"{model} std"] = std[model].to_numpy()
                table[f"{model} n"] = count[model].to_numpy()
        tables[f"comparison_{metric}"] = table
        tables[f"_shown_comparison_{metric}"] = format_paper_table(mean, std, count, analysis.top_k)
    baselines = {}
    for chosen in analysis.selected:
        if chosen.rank == 1 and chosen.evaluation.baseline and chosen.dataset not in baselines:
            baselines[chosen.dataset] = {m: chosen.evaluation.baseline.get(prefix + m) for m in PAPER_METRICS
                                         if prefix + m in chosen.evaluation.baseline}
    if baselines:
        tables["majority_baseline"] = pd.DataFrame([{"dataset": d, **v} for d, v in sorted(baselines.items())])
    # The validation table study.run prints at the end of a run (same code: study.tables.comparison_table).
    tables["validation_best"] = comparison_table(analysis.study.results, analysis.metric, analysis.mode)
    tables["trials"] = analysis.trials
    for dimension, scale in search_dimensions(analysis.study, analysis.trials):
        tables[f"ablation_{dimension}"] = ablation_table(analysis.trials, dimension, analysis.metric,
                                                        analysis.mode, scale)
    tables["search_summary"] = pd.DataFrame([analysis.summary])
    for chosen in analysis.selected:
        if chosen.rank != 1:
            continue
        from cxrnets.metrics import per_class_table

        evaluation = chosen.evaluation
        name = f"{slug(chosen.dataset)}_{slug(chosen.model)}"
        tables[f"confusion_{name}"] = confusion_table(evaluation)
        tables[f"per_class_{name}"] = per_class_table(evaluation.y_true, evaluation.scores, evaluation.classes,
                                                      evaluation.multilabel)


def confusion_table(evaluation: Evaluation) -> pd.DataFrame:
    """Single-label: rows true class, columns predicted class. Multi-label: one row per label (TN FP FN TP)."""
    from cxrnets.metrics import confusion_matrix, predictions

    predicted = predictions(evaluation.scores, evaluation.multilabel)
    if evaluation.multilabel:
        rows = []
        for j, label in enumerate(evaluation.classes):
            truth, guess = evaluation.y_true[:, j].astype(int), predicted[:, j]
            rows.append({"label": label, "TN": int(((truth == 0) & (guess == 0)).sum()),
                         "FP": int(((truth == 0) & (guess == 1)).sum()),
                         "FN": int(((truth == 1) & (guess == 0)).sum()),
                         "TP": int(((truth == 1) & (guess == 1)).sum())})
        return pd.DataFrame(rows)
    matrix = confusion_matrix(evaluation.y_true, predicted, len(evaluation.classes))
    table = pd.DataFrame(matrix, columns=list(evaluation.classes))
    table.insert(0, "true class", list(evaluation.classes))
    return table


# ------------------------------------------------------------------ figures

def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_confusion(evaluation: Evaluation, title: str, path: Path) -> None:
    plt = _pyplot()
    table = confusion_table(evaluation)
    if evaluation.multilabel:
        count = len(evaluation.classes)
        columns = min(count, 4)
        rows = math.ceil(count / columns)
        figure, axes = plt.subplots(rows, columns, figsize=(2.6 * columns, 2.6 * rows + 0.6), squeeze=False)
        for axis in axes.flat[count:]:
            axis.axis("off")
        for axis, row in zip(axes.flat, table.itertuples(index=False)):
            matrix = np.array([[row.TN, row.FP], [row.FN, row.TP]])
            _draw_matrix(axis, matrix, ["absent", "present"], ["absent", "present"])
            axis.set_title(row.label, fontsize=9)
            axis.set_xlabel("predicted", fontsize=8)
            axis.set_ylabel("true", fontsize=8)
    else:
        count = len(evaluation.classes)
        size = max(4.0, 1.1 * count + 2)
        figure, axis = plt.subplots(figsize=(size, size))
        matrix = table.drop(columns="true class").to_numpy()
        _draw_matrix(axis, matrix, evaluation.classes, evaluation.classes)
        axis.set_xlabel("predicted class")
        axis.set_ylabel("true class")
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _draw_matrix(axis, matrix: np.ndarray, rows: list[str], columns: list[str]) -> None:
    axis.imshow(matrix, cmap="Blues", vmin=0, vmax=max(int(matrix.max()), 1))
    axis.set_xticks(range(len(columns)), columns, rotation=30, ha="right", fontsize=8)
    axis.set_yticks(range(len(rows)), rows, fontsize=8)
    high = matrix.max() / 2
    for (i, j), value in np.ndenumerate(matrix):
        axis.text(j, i, str(int(value)), ha="center", va="center", fontsize=9,
                  color="white" if value > high else "black")


def plot_curves(analysis: Analysis, dataset: str, path: Path) -> None:
    """Per model: every trial's validation metric per epoch (grey), the selected trials in colour."""
    plt = _pyplot()
    results = cell_columns(analysis.study.results, analysis.study.settings)
    results = results[results["dataset"] == dataset].assign(_epoch=lambda f: epoch_column(f))
    models = model_order(results["model"])
    figure, axes = plt.subplots(1, len(models), figsize=(4.6 * len(models), 3.8), squeeze=False, sharey=True)
    selected = {s.candidate.trial_id: s for s in analysis.selected if s.dataset == dataset}
    best = best_epochs(results, analysis.metric, analysis.mode).set_index("trial_id")[analysis.metric]
    baseline = (analysis.study.settings.baselines.get(dataset, {}).get(analysis.metric.removeprefix("val/"))
                if analysis.metric.startswith("val/") else None)
    for axis, model in zip(axes.flat, models):
        if baseline is not None:
            axis.axhline(baseline, color="0.3", linestyle="--", linewidth=1, label="majority class", zorder=0)
        own = results[results["model"] == model]
        order = sorted(own["trial_id"].unique(), key=lambda t: (selected[t].rank if t in selected else 10**6, t))
        highlighted = [t for t in order if t in selected]
        if not highlighted:  # nothing evaluated in this cell: show its best trial on validation
            ranked = best[best.index.isin(own["trial_id"])].sort_values(ascending=analysis.mode == "min")
            highlighted = list(ranked.index[:analysis.top_k])
        for trial_id in order:
            curve = own[own["trial_id"] == trial_id].sort_values("_epoch")
            if trial_id not in highlighted:
                axis.plot(curve["_epoch"], curve[analysis.metric], color="0.7", linewidth=1, marker=".", zorder=1)
        for rank, trial_id in enumerate(highlighted, 1):  # the best on top, first in the legend
            curve = own[own["trial_id"] == trial_id].sort_values("_epoch")
            label = f"#{rank} {curve['trial_name'].iloc[-1].removeprefix(f'{dataset}_')}"
            axis.plot(curve["_epoch"], curve[analysis.metric], marker="o", linewidth=2, label=label,
                      zorder=10 - min(rank, 9))
        axis.set_title(f"{model} ({own['trial_id'].nunique()} trials)")
        axis.set_xlabel("epoch")
        axis.xaxis.get_major_locator().set_params(integer=True)
        axis.grid(alpha=0.3)
        if highlighted or baseline is not None:
            axis.legend(fontsize=7, loc="best")
    axes.flat[0].set_ylabel(f"{analysis.metric} (validation)")
    figure.suptitle(f"{dataset}: {analysis.metric} per epoch; selected trials in colour, others grey", fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def pretrained_pairs(results: pd.DataFrame, metric: str, mode: str) -> dict[tuple[str, str], dict[bool, str]]:
    """(dataset, model) -> {True: best pretrained trial id, False: best from-scratch trial id}, for the
    cells that have both."""
    if "config/pretrained" not in results:
        return {}
    best = best_epochs(results, metric, mode)
    best = best.assign(_pretrained=best["config/pretrained"].fillna(False).astype(bool))
    pairs = {}
    for (dataset, model), group in best.groupby(["dataset", "model"]):
        if group["_pretrained"].nunique() == 2:
            ordered = group.sort_values(metric, ascending=mode == "min", kind="stable")
            pairs[(dataset, model)] = {flag: ordered.loc[ordered["_pretrained"] == flag, "trial_id"].iloc[0]
                                       for flag in (True, False)}
    return pairs


def plot_pretrained(analysis: Analysis, dataset: str, pairs: dict, path: Path) -> None:
    """The paper's figure: per model, the best ImageNet-pretrained trial against the best from-scratch one."""
    plt = _pyplot()
    results = cell_columns(analysis.study.results, analysis.study.settings)
    results = results.assign(_epoch=epoch_column(results))
    models = [m for m in model_order(results["model"]) if (dataset, m) in pairs]
    figure, axes = plt.subplots(1, len(models), figsize=(4.6 * len(models), 3.8), squeeze=False, sharey=True)
    for axis, model in zip(axes.flat, models):
        for flag, style in ((True, "-"), (False, "--")):
            trial_id = pairs[(dataset, model)][flag]
            curve = results[results["trial_id"] == trial_id].sort_values("_epoch")
            label = f"{'pretrained' if flag else 'from scratch'} ({curve['trial_name'].iloc[-1].removeprefix(dataset + '_')})"
            axis.plot(curve["_epoch"], curve[analysis.metric], style, marker="o", label=label)
        axis.set_title(model)
        axis.set_xlabel("epoch")
        axis.xaxis.get_major_locator().set_params(integer=True)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7)
    axes.flat[0].set_ylabel(f"{analysis.metric} (validation)")
    figure.suptitle(f"{dataset}: ImageNet-pretrained against from scratch (best trial of each)", fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def write_figures(analysis: Analysis, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    split_name = "test" if analysis.split == "test" else "validation"
    for chosen in analysis.selected:
        if chosen.rank != 1:
            continue
        name = f"confusion_{slug(chosen.dataset)}_{slug(chosen.model)}"
        title = (f"{chosen.dataset} / {chosen.model}\ntrial {chosen.candidate.trial_id}, epoch "
                 f"{chosen.evaluation.epoch}, {split_name} split ({len(chosen.evaluation.y_true)} images)")
        plot_confusion(chosen.evaluation, title, folder / f"{name}.png")
        analysis.figures[name] = folder / f"{name}.png"
    results = cell_columns(analysis.study.results, analysis.study.settings)
    for dataset in sorted(results["dataset"].unique()):
        name = f"curves_{slug(dataset)}"
        plot_curves(analysis, dataset, folder / f"{name}.png")
        analysis.figures[name] = folder / f"{name}.png"
    pairs = pretrained_pairs(results, analysis.metric, analysis.mode)
    for dataset in sorted({d for d, _ in pairs}):
        name = f"pretrained_{slug(dataset)}"
        plot_pretrained(analysis, dataset, pairs, folder / f"{name}.png")
        analysis.figures[name] = folder / f"{name}.png"


# ------------------------------------------------------------------ the report

def _clean(folder: Path, suffixes: tuple[str, ...]) -> None:
    """Remove what an earlier analysis wrote (files of ours only), so no stale table or figure stays."""
    if folder.is_dir():
        for path in folder.iterdir():
            if path.is_file() and path.suffix in suffixes:
                path.unlink()


def _for_files(table: pd.DataFrame) -> pd.DataFrame:
    """Columns Parquet can store: mixed-type object columns become text."""
    table = table.copy()
    for column in table.columns:
        if table[column].dtype == object:
            kinds = {type(v) for v in table[column] if not (v is None or v is pd.NA or
                                                            (isinstance(v, float) and np.isnan(v)))}
            if len(kinds) > 1 or not kinds <= {str, int, float, bool, np.int64, np.float64, np.bool_}:
                table[column] = table[column].map(lambda v: None if v is None or v is pd.NA or
                                                  (isinstance(v, float) and np.isnan(v)) else str(v))
    table.columns = [str(c) for c in table.columns]
    return table


def write_report(analysis: Analysis, formats: tuple[str, ...]) -> None:
    out = analysis.out
    out.mkdir(parents=True, exist_ok=True)
    tables_dir, figures_dir = out / "tables", out / "figures"
    _clean(tables_dir, (".csv", ".parquet"))
    _clean(figures_dir, (".png",))
    if (out / "report.md").is_file():
        (out / "report.md").unlink()
    if "csv" in formats or "parquet" in formats:
        tables_dir.mkdir(parents=True, exist_ok=True)
        for name, table in analysis.tables.items():
            if name.startswith("_"):
                continue
            stored = _for_files(table)
            if "csv" in formats:
                stored.to_csv(tables_dir / f"{name}.csv", index=False)
                analysis.files.append(tables_dir / f"{name}.csv")
            if "parquet" in formats:
                stored.to_parquet(tables_dir / f"{name}.parquet", index=False)
                analysis.files.append(tables_dir / f"{name}.parquet")
    if "png" in formats:
        write_figures(analysis, figures_dir)
        analysis.files += list(analysis.figures.values())
    if "md" in formats:
        (out / "report.md").write_text(render_markdown(analysis, formats))
        analysis.files.append(out / "report.md")
    log.info("report written to %s", out / "report.md" if "md" in formats else out)


def render_markdown(analysis: Analysis, formats: tuple[str, ...]) -> str:
    study, settings, tables = analysis.study, analysis.study.settings, analysis.tables
    split_name = "test" if analysis.split == "test" else "validation"
    figures = "png" in formats
    lines = [f"# Study `{settings.name}`: analysis", ""]
    lines += [f"- Study directory: `{study.uri}` (created {settings.created})",
              f"- Search space: `{settings.space_source}`; datasets: "
              + ", ".join(f"`{d}`" for d in settings.data_roots),
              f"- Trials chosen on **{analysis.metric}** ({'lower' if analysis.mode == 'min' else 'higher'} is "
              f"better, validation split); evaluated once on the **{split_name}** split"
              + (f"; cells are the mean ± std of the {analysis.top_k} best trials" if analysis.top_k > 1 else ""),
              f"- Generated {time.strftime('%Y-%m-%d %H:%M:%S')} by `python -m study.analyze`", ""]

    summary = analysis.summary
    lines += ["## Search summary", ""]
    shown = [("trials run", summary["trials"])]
    shown += [(status, summary[status]) for status in STATUSES]
    shown += [("epochs spent", f"{summary['epochs spent']} of {summary['epochs without early stopping']} "
                               f"({summary['trials']} trials × {summary['max epochs']} epochs)"),
              ("ASHA saving", f"{summary['ASHA saving']:.0%} of the epochs"),
              ("epochs per trial", f"mean {summary['epochs per trial (mean)']:.2f}, min "
                                   f"{summary['epochs per trial (min)']}, max {summary['epochs per trial (max)']}"),
              ("trial compute time", f"{summary['trial compute seconds']:.0f} s")]
    if "wall seconds" in summary:
        shown.append(("wall time (first to last report)", f"{summary['wall seconds']:.0f} s"))
    lines += [markdown_table(pd.DataFrame(shown, columns=["quantity", "value"]).astype(str)), ""]
    lines += ["`stopped early`: ended before the last epoch without diverging (ASHA stopped it); "
              "`unfinished`: no end recorded (still running, or the study was interrupted).", ""]

    lines += [f"## Comparison ({split_name} split)", ""]
    lines += [f"Each cell: the best trial of that dataset and model on {analysis.metric} (validation), "
              f"evaluated once on the held-out {split_name} split from its best checkpoint. "
              "For multi-label datasets accuracy is label-wise (the paper's accuracy).", ""]
    compared = [m for m in PAPER_METRICS if f"_shown_comparison_{m}" in tables]
    if not compared:
        lines += ["No cell could be evaluated (see Skipped trials below).", ""]
    for metric in compared:
        lines += [f"### {METRIC_TITLES[metric]}", "", markdown_table(tables[f"_shown_comparison_{metric}"]), ""]
    if "majority_baseline" in tables:
        lines += ["### Majority-class baseline", "",
                  f"Always predicting the training split's most frequent class (multi-label: each label present in "
                  f"most training images), scored on the same {split_name} images: the floor a model must beat.", "",
                  markdown_table(tables["majority_baseline"]), ""]

    lines += ["## Evaluated trials", ""]
    if len(tables["selected_trials"]):
        lines += [markdown_table(tables["selected_trials"]), ""]
        lines += ["`best epoch`: the trial's best epoch on validation; `evaluated epoch`: the checkpoint evaluated "
                  "(they differ only where the best checkpoint is gone, or ties).", ""]
    else:
        lines += ["None.", ""]
    if analysis.notes:
        lines += ["### Skipped trials and notes", ""]
        lines += [f"- {note}" for note in analysis.notes] + [""]

    lines += ["## Best trials on validation (as `python -m study.run` prints them)", "",
              markdown_table(tables["validation_best"]), ""]

    lines += ["## Ablations", "",
              f"Per value of each search dimension (continuous ones binned): trials, how they ended, epochs "
              f"spent, and the best and median {analysis.metric} (each trial at its best epoch). "
              f"`{NOT_SET}`: trials the dimension does not apply to.", ""]
    for name, table in tables.items():
        if name.startswith("ablation_"):
            lines += [f"### {name.removeprefix('ablation_')}", "", markdown_table(table), ""]

    lines += ["## Confusion matrices and per-class metrics", ""]
    best = [s for s in analysis.selected if s.rank == 1]
    if not best:
        lines += ["None (no cell could be evaluated).", ""]
    for chosen in best:
        name = f"{slug(chosen.dataset)}_{slug(chosen.model)}"
        evaluation = chosen.evaluation
        lines += [f"### {chosen.dataset} / {chosen.model}", "",
                  f"Trial `{chosen.candidate.trial_id}` ({chosen.candidate.trial_name}), epoch {evaluation.epoch}, "
                  f"{split_name} split: {len(evaluation.y_true)} images. "
                  + ("Rows: true class; columns: predicted class." if not evaluation.multilabel
                     else "Per label: true negatives, false positives, false negatives, true positives."), ""]
        if figures and f"confusion_{name}" in analysis.figures:
            lines += [f"![confusion matrix, {chosen.dataset} / {chosen.model}](figures/confusion_{name}.png)", ""]
        lines += [markdown_table(tables[f"confusion_{name}"]), "", markdown_table(tables[f"per_class_{name}"]), ""]

    if figures:
        lines += ["## Curves", ""]
        for name, path in analysis.figures.items():
            if name.startswith("curves_") or name.startswith("pretrained_"):
                lines += [f"![{name}](figures/{path.name})", ""]

    stored = [n for n in tables if not n.startswith("_")]
    kinds = [k for k in ("csv", "parquet") if k in formats]
    if kinds:
        lines += ["## Files", "", "Every table above as " + " and ".join(k.upper() for k in kinds)
                  + " under `tables/`: " + ", ".join(f"`{n}`" for n in stored) + ".", ""]
    return "\n".join(lines)


# ------------------------------------------------------------------ command line

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m study.analyze", description=__doc__.split("\n\n")[0],
        epilog="Writes <study dir>/report/: report.md, tables/*.csv and *.parquet, figures/*.png. "
               "Exit status 2 on bad input (not a study, nothing finished, a changed split).")
    add = parser.add_argument
    add("study_dir", help="the study directory python -m study.run wrote (<storage>/<study name>)")
    add("--metric", default=None, help="validation metric the best trials are chosen on, e.g. val/accuracy; "
        "lower is better for a loss (default: the study's own metric, from study.json)")
    add("--split", default="test", choices=("val", "test"),
        help="split the chosen checkpoints are evaluated on (default: test, the held-out split)")
    add("--top-k", type=int, default=1, help="evaluate the k best trials per (dataset, model); table cells "
        "show their mean ± std (default: 1)")
    add("--format", default=",".join(FORMATS),
        help=f"what to write, comma-separated from {','.join(FORMATS)} (default: all of them)")
    add("--out", default=None, help="report folder (default: <study dir>/report)")
    add("--data-root", action="append", default=None, metavar="DATASET=PATH",
        help="where a dataset lies on this machine, if not where the study read it; repeatable "
             "(default: the roots in study.json)")
    add("--cache-dir", default=None, help="decoded-image cache (default: the study's, else $CXR_TUNE_CACHE "
        "or ~/.cache/cxr-tune)")
    add("--device", default="auto", help="device for the evaluations: auto, cpu, cuda, cuda:1 "
        "(default: auto, a GPU if there is one)")
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = build_parser().parse_args(argv)
    try:
        roots = {}
        for item in args.data_root or []:
            name, sep, path = item.partition("=")
            if not sep:
                raise CxrError(f"--data-root {item!r}: write DATASET=PATH")
            roots[name] = str(Path(path).expanduser().resolve())
        formats = tuple(f.strip() for f in args.format.split(",") if f.strip())
        analysis = analyze(args.study_dir, metric=args.metric, split=args.split, top_k=args.top_k,
                           formats=formats, out=args.out, data_roots=roots, cache_dir=args.cache_dir,
                           device=args.device)
    except CxrError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for note in analysis.notes:
        print(f"note: {note}")
    if analysis.study.remote:
        print(f"downloaded {analysis.downloaded_bytes / 1e6:,.1f} MB of weights from {analysis.study.uri} "
              f"(cached for the next analysis)")
    shown = analysis.tables.get("_shown_comparison_f1_macro")
    if shown is not None:
        print(f"\nMacro F1 on the {analysis.split} split (best trial per model, chosen on {analysis.metric}):\n")
        print(markdown_table(shown))
    print(f"\nreport: {analysis.out / 'report.md' if 'md' in formats else analysis.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
