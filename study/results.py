"""The study's results table: every trial's config and per-epoch metrics, in Parquet.

The driver appends one small Parquet part per reported epoch (and one per
trial end) under `<study dir>/results/` and `<study dir>/trial_events/`, so
an interrupted study loses nothing already reported and a resumed one only
adds parts. `read_results` reads the parts back as one table. A trial that
completes after failing (retried by Tune, or run again by a resume) keeps the
tracebacks of its failures as `recovered-errors.txt` in its folder, not as
Tune's `error.txt`, which says a trial failed.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from ray import tune

from cxrnets.errors import CxrError
from study import storage
from study.checkpoints import stored_snapshot_trials
from study.settings import study_location

log = logging.getLogger(__name__)

RESULTS_DIR = "results"
EVENTS_DIR = "trial_events"
# Result keys that are Tune's bookkeeping rather than the study's.
TUNE_KEYS = ("trial_id", "training_iteration", "time_total_s", "time_this_iter_s", "timestamp", "node_ip",
             "hostname", "pid", "date", "done")
# Tune's record of a trial's failures in its folder: the tracebacks, and the latest exception pickled for its
# ResultGrid. A resume that runs an errored trial again forgets both; nothing else of Tune reads them.
ERROR_TEXT, ERROR_PICKLE = "error.txt", "error.pkl"
RECOVERED_ERRORS = "recovered-errors.txt"  # the tracebacks of a trial that completed after failing


def result_row(trial: Any, result: dict[str, Any]) -> dict[str, Any]:
    row = {"trial_id": trial.trial_id, "trial_name": str(trial)}
    for key, value in result.items():
        if key == "config" or isinstance(value, dict):
            continue
        if key in TUNE_KEYS or "/" in key or isinstance(value, (int, float, str, bool)):
            row[key] = value
    for key, value in trial.config.items():
        row[f"config/{key}"] = value
    return row


class ResultsTable(tune.Callback):
    """A Tune callback, run on the driver, that appends every result to the study's Parquet table, and each
    trial's end to its events; the folder of a trial that completes after failing keeps no error.txt (see the
    module's docstring)."""

    def __init__(self, study_uri: str):
        self.study_uri = study_uri
        self._session: str | None = None  # names this run's parts; a new one in every process (see below)
        self._sequence = 0

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles the callback with the run config (tuner.pkl) and `Tuner.restore` unpickles it:
        # a resumed run must not reuse the first run's part names, or it would overwrite its parts.
        return {**self.__dict__, "_session": None, "_sequence": 0}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.study_uri = study_location(self.study_uri)

    def _write(self, folder: str, row: dict[str, Any]) -> None:
        if self._session is None:
            self._session = f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
        self._sequence += 1
        buffer = pa.BufferOutputStream()
        pq.write_table(pa.Table.from_pylist([row]), buffer)
        part = storage.join(self.study_uri, folder, f"part-{self._session}-{self._sequence:06d}.parquet")
        storage.write_bytes(part, buffer.getvalue().to_pybytes())  # whole or not at all, as readers expect

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self._write(RESULTS_DIR, result_row(trial, result))

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._event(trial, "completed")
        # Where Tune staged its files (its next upload would bring error.txt back) and where they lie.
        for folder in (trial.local_path, storage.join(self.study_uri, storage.name_of(trial.path))):
            set_aside_error_files(folder)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._event(trial, "error")

    def _event(self, trial: Any, event: str) -> None:
        error = ""
        if event == "error" and getattr(trial, "error_file", None):
            error = str(trial.error_file)
        self._write(EVENTS_DIR, {"trial_id": trial.trial_id, "event": event, "timestamp": time.time(),
                                 "error_file": error})


def set_aside_error_files(trial_folder: str) -> None:
    """In the folder of a trial that completed: its tracebacks appended to RECOVERED_ERRORS and error.txt
    deleted, and error.pkl deleted. A folder that cannot be read or written is warned of and left as it is."""
    try:
        names = {entry.name for entry in storage.listing(trial_folder)}
        if ERROR_TEXT in names:
            recovered = storage.join(trial_folder, RECOVERED_ERRORS)
            earlier = storage.read_bytes(recovered) if RECOVERED_ERRORS in names else b""
            storage.write_bytes(recovered, earlier + storage.read_bytes(storage.join(trial_folder, ERROR_TEXT)))
            storage.delete(storage.join(trial_folder, ERROR_TEXT))
        if ERROR_PICKLE in names:
            storage.delete(storage.join(trial_folder, ERROR_PICKLE))
    except OSError as error:
        log.warning("%s: could not move the tracebacks of the trial's earlier failures out of %s (%s): it completed "
                    "all the same", trial_folder, ERROR_TEXT, error)


def _read_parts(study_uri: str, folder: str) -> pd.DataFrame:
    folder = storage.join(study_uri, folder)
    names = [entry.name for entry in storage.listing(folder) if entry.name.endswith(".parquet")]
    if not names:
        return pd.DataFrame()
    filesystem, path = storage.filesystem(folder)  # once: opening a bucket's filesystem has a cost
    tables = []
    for name in names:
        try:
            tables.append(pq.read_table(f"{path}/{name}", filesystem=filesystem))
        except (pa.ArrowInvalid, OSError) as error:
            raise CxrError(f"{storage.join(folder, name)}: a damaged part of the study's table ({error}); move it "
                           "out of the folder (it holds one reported row, which is then missing) and run again"
                           ) from error
    return pa.concat_tables(tables, promote_options="permissive").to_pandas()


def read_results(study_uri: str) -> pd.DataFrame:
    """Every reported epoch of every trial, one row each, as the trial's latest run reported it.

    A resumed trial goes on from its last full state, or from its start if it had none, and reports its
    epochs from there again: a report supersedes every earlier report of that trial at the same or a later
    epoch, which the trial may not reach again (a scheduler that pauses or stops it sooner). Reports are
    ordered by Tune's timestamp, not by the parts' names, whose time is the local one of the machine that
    wrote them.
    """
    results = _read_parts(study_uri, RESULTS_DIR)
    if results.empty:
        return results
    if "timestamp" not in results:  # every Tune result has one; rows written by hand may not
        results = results.drop_duplicates(["trial_id", "training_iteration"], keep="last")
        return results.sort_values(["trial_id", "training_iteration"]).reset_index(drop=True)
    results = results.sort_values("timestamp", kind="stable")
    iteration = results["training_iteration"]
    earliest_after = (iteration[::-1].groupby(results["trial_id"][::-1]).cummin()[::-1]
                      .groupby(results["trial_id"]).shift(-1))
    results = results[earliest_after.isna() | (iteration < earliest_after)]
    return results.sort_values(["trial_id", "training_iteration"]).reset_index(drop=True)


def read_trial_events(study_uri: str) -> pd.DataFrame:
    """How each trial ended (completed or error); trials absent here were still running or interrupted."""
    events = _read_parts(study_uri, EVENTS_DIR)
    if events.empty:
        return pd.DataFrame(columns=["trial_id", "event", "timestamp", "error_file"])
    return events.sort_values("timestamp").drop_duplicates("trial_id", keep="last").reset_index(drop=True)


def unfinished_search(study_uri: str) -> list[str]:
    """What the study's search left undone, in words, from its trial events and Tune's newest snapshots of its
    trials and of its search: trials that errored, trials interrupted (running or waiting), and trials not
    started (fewer made than --num-samples, the space not exhausted). Empty for a finished search."""
    import ray.cloudpickle as cloudpickle

    events = read_trial_events(study_uri)
    errored = events.loc[events["event"] == "error", "trial_id"].tolist()
    interrupted = [trial_id for trial_id, trial in stored_snapshot_trials(study_uri).items()
                   if trial["status"] not in ("TERMINATED", "ERROR") and trial_id not in errored]
    names = [entry.name for entry in storage.listing(study_uri)]
    not_started = 0
    generators = sorted(name for name in names if name.startswith("search_gen_state-"))
    if generators:
        generator = cloudpickle.loads(storage.read_bytes(storage.join(study_uri, generators[-1])))
        if not generator["finished"]:
            not_started = max(0, generator["total_samples"] - generator["counter"])
    undone = []
    if errored:
        undone.append(f"{len(errored)} errored ({', '.join(errored)})")
    if interrupted:
        undone.append(f"{len(interrupted)} interrupted ({', '.join(interrupted)})")
    if not_started:
        undone.append(f"{not_started} trial{'s' if not_started != 1 else ''} not started")
    return undone
