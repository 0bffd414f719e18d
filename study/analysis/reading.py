"""Opening a study for analysis: its settings, results, trial ends, trial folders and best-weights sidecars.

Everything here reads small files only; no weights are loaded.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from shlex import quote

import pandas as pd

from cxrnets.errors import CxrError
from cxrnets.models import MODEL_NAMES
from study import storage
from study.checkpoints import BestWeights, read_best_weights, stored_snapshot_trials
from study.results import read_results, read_trial_events
from study.settings import StudySettings, load_settings, metric_mode

log = logging.getLogger("study.analyze")


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
    trial_dirs = trial_folders(uri, [*results.get("trial_id", []), *events["trial_id"]])
    weights, problems = read_best_weights(uri)
    return Study(uri, settings, results, events, trial_dirs, weights, problems)


def trial_folders(run_uri: str, trial_ids) -> dict[str, list[str]]:
    """trial_id -> its Tune trial folder(s) in the run at `run_uri` (a study, or its confirm run), for the trials
    of `trial_ids` and any other whose id is a study's (8 hex digits)."""
    # Tune names a trial's folder <trial_id>_<trial name> (study.driver.TrialNames, study.confirm.JobNames).
    known = sorted(set(trial_ids), key=len, reverse=True)
    trial_dirs: dict[str, list[str]] = {}
    for entry in storage.listing(run_uri):
        if not entry.is_dir:
            continue
        trial_id = next((t for t in known if entry.name.startswith(f"{t}_")), None)
        match = re.fullmatch(r"([0-9a-f]{8})_.+", entry.name)
        trial_id = trial_id or (match.group(1) if match else None)
        if trial_id:
            trial_dirs.setdefault(trial_id, []).append(entry.uri)
    return trial_dirs


def error_file(study: Study, trial_id: str) -> str:
    """Where a failed trial's error lies: Tune's error.txt in its folder in the study, else where Tune wrote it
    (the driver's machine), else the trial's folder."""
    folders = study.trial_dirs.get(trial_id, [])
    for folder in folders:
        if storage.kind(storage.join(folder, "error.txt")) == "file":
            return storage.join(folder, "error.txt")
    recorded = study.events.loc[study.events["trial_id"] == trial_id, "error_file"]
    if len(recorded) and isinstance(recorded.iloc[-1], str) and recorded.iloc[-1]:
        return recorded.iloc[-1]
    return folders[0] if folders else f"{study.uri} (the folder of trial {trial_id})"


def nothing_to_analyse(study: Study) -> str:
    """Why a study without a reported epoch has nothing to analyse: its trials failed before their first epoch
    (where one's error lies), or none has finished an epoch yet."""
    failed = list(study.events.loc[study.events["event"] == "error", "trial_id"])
    trials = len({*study.events["trial_id"], *study.trial_dirs})
    if not failed:
        return (f"{study.uri}: no trial has finished an epoch yet (the results table is empty); nothing to analyse: "
                "let the study run (or --resume it) first")
    where = error_file(study, failed[0])
    if len(failed) < trials:
        return (f"{study.uri}: {len(failed)} of {trials} trials failed before their first epoch (why: in {where}), and "
                "no other has finished an epoch yet: nothing to analyse: let the study run (or --resume it) first")
    who, why = ((f"all {len(failed)} trials failed before their first epoch", "in each trial's error file, such as")
                if len(failed) > 1 else ("its one trial failed before its first epoch", "in its error file,"))
    return (f"{study.uri}: {who}: nothing to analyse. Why: {why} {where}; fix the cause, then resume the study "
            f"(python -m study.run --resume {quote(study.uri)}), which retries failed trials")


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
    mode = study.settings.mode if metric == study.settings.metric else metric_mode(metric)
    return metric, mode


def trial_configs(run_uri: str, trial_dirs: dict[str, list[str]], results: pd.DataFrame) -> dict[str, dict]:
    """Configs of the trials of `trial_dirs` (trial_folders) in the run at `run_uri` that never reported an epoch
    in `results` (for the trial table): the params.json Tune writes into a trial's folder as it starts, else the
    trial's config in Tune's newest snapshot of the run (a run interrupted before the trial's params.json was
    written). A trial found in neither has only its `__trial_name__`: its config is unknown (config_known)."""
    reported = set(results["trial_id"]) if len(results) else set()
    snapshot: dict[str, dict] | None = None
    configs = {}
    for trial_id, folders in trial_dirs.items():
        if trial_id in reported:
            continue
        try:
            config = storage.read_json(storage.join(folders[0], "params.json"))
        except (OSError, ValueError):
            if snapshot is None:
                snapshot = snapshot_configs(run_uri)
            config = dict(snapshot.get(trial_id, {}))
        config["__trial_name__"] = storage.name_of(folders[0]).removeprefix(f"{trial_id}_")
        configs[trial_id] = config
    return configs


def snapshot_configs(run_uri: str) -> dict[str, dict]:
    """Trial id -> its config in Tune's newest snapshot of the run at `run_uri`; {} if there is none, or it cannot
    be read."""
    try:
        trials = stored_snapshot_trials(run_uri)
        return {trial_id: dict(trial.get("config") or {}) for trial_id, trial in trials.items()}
    except (OSError, ValueError, KeyError, TypeError) as error:
        log.warning("Tune's last snapshot in %s could not be read (%s): a trial that left no params.json in its "
                    "folder has no known config", run_uri, error)
        return {}


def config_known(trials: pd.DataFrame) -> pd.Series:
    """Per row of a trial table (study.tables.trial_table): whether the trial's config is known, i.e. it has a
    config/ value. A trial that started but left no config on record (trial_configs) belongs to no cell."""
    columns = [c for c in trials.columns if str(c).startswith("config/")]
    if not columns:
        return pd.Series(True, index=trials.index)
    return trials[columns].notna().any(axis=1)


def unknown_configs(trials: pd.DataFrame) -> list[str]:
    """A note on the trials of the trial table whose config is unknown (config_known): counted among the trials
    run, left out of every table by dataset, model or search dimension."""
    unknown = trials[~config_known(trials)]
    if unknown.empty:
        return []
    named = ", ".join(f"{trial_id} ({status})" for trial_id, status in zip(unknown["trial_id"], unknown["status"]))
    one = len(unknown) == 1
    return [f"{'trial' if one else f'{len(unknown)} trials'} {named}: started, but no config of "
            f"{'it' if one else 'theirs'} is on record (no params.json in {'its' if one else 'their'} folder, and "
            f"Tune's last snapshot of the study does not hold {'it' if one else 'them'}): counted among the "
            f"{len(trials)} trials run, and in no table by dataset, model or search dimension"]


def search_dimensions(study: Study, trials: pd.DataFrame) -> list[tuple[str, str | None]]:
    """(dimension, scale) for every config/ column, in the space's order; scale is log or linear for a
    range, categorical for a choice or a constant, None for a column the space does not name."""
    scales: dict[str, str | None] = {}
    try:
        for dimension in study.settings.search_space().dimensions:
            if dimension.kind in ("uniform", "loguniform", "int"):
                scale = "log" if dimension.kind == "loguniform" or dimension.log else "linear"
                scales.setdefault(dimension.name, scale)
            else:
                scales.setdefault(dimension.name, "categorical")
    except CxrError as error:  # a space file this version no longer parses: bin from the values alone
        log.warning("the study's search space does not parse (%s); ablations bin numbers by their values", error)
    columns = [c.removeprefix("config/") for c in trials.columns if c.startswith("config/")]
    ordered = [name for name in scales if name in columns] + [c for c in columns if c not in scales]
    return [(name, scales.get(name)) for name in ordered]


def untried(study: Study, trials: pd.DataFrame) -> list[str]:
    """A note for each kind (datasets, models) of which the study's search space has members no trial ran,
    and why (none if the space no longer parses)."""
    settings = study.settings
    try:
        space = settings.search_space()
    except CxrError:
        return []
    ran = cell_columns(trials, settings)
    missing = {"dataset": [d for d in settings.data_roots if d not in set(ran["dataset"])],
               "model": [m for m in model_order(space.values_of("model")) if m not in set(ran["model"])]}
    starts = len(space.first_points())
    why = (f"--num-samples {settings.num_samples} is fewer than the {starts} combinations of cover_first "
           f"({', '.join(space.cover_first)}) the study starts with" if starts > settings.num_samples
           else f"the study ran {len(trials)} trial(s) (--num-samples {settings.num_samples})")
    return [f"the search space's {kind}{'s' if len(names) > 1 else ''} {', '.join(names)}: no trial ran "
            f"({why}), so no table shows {'them' if len(names) > 1 else 'it'}"
            for kind, names in missing.items() if names]


def cell_columns(frame: pd.DataFrame, settings) -> pd.DataFrame:
    """dataset and model columns for every trial whose config is known (config_known; a study over one dataset
    may not record it per trial): a trial without one belongs to no cell."""
    frame = frame[config_known(frame)]
    default_dataset = next(iter(settings.data_roots), "?")
    dataset = frame["config/dataset"] if "config/dataset" in frame else pd.Series(default_dataset, index=frame.index)
    model = frame["config/model"] if "config/model" in frame else pd.Series("?", index=frame.index)
    return frame.assign(dataset=dataset.fillna(default_dataset).astype(str), model=model.fillna("?").astype(str))


def model_order(models) -> list[str]:
    models = list(dict.fromkeys(models))
    return [m for m in MODEL_NAMES if m in models] + sorted(m for m in models if m not in MODEL_NAMES)
