"""The checkpoint policy: what a study writes of its trials' models, when, and what stays.

Two needs, two kinds of file, nothing more:

- **Selection** needs each trial's weights at its best epoch on the study metric, the epoch the
  analysis evaluates, the one the study's ASHA ranks the trial by and study.tables.best_epochs shows.
  When its best epoch improves (study.tables.improves: strictly better on the metric, or tied there
  and strictly better on the study's tie-break metric) a trial keeps a copy of its weights in memory,
  and writes the newest such copy, model weights only (no optimizer state), to
  `<study>/weights/<trial id>.pt`, then a small sidecar `<trial id>.json` (epoch, metric, value, the
  tie-break metric and its value, bytes) that the analysis reads instead of
  the weights, before each report after which the trial may end: its last epoch, each ASHA rung
  (where the scheduler may stop or pause it) and each full state (whose best so far they are).
  A best superseded between two of those points is never written. A study interrupted and not
  resumed may therefore hold, for a trial that was running, the weights of an earlier best than its
  results show (at most the epochs since its last rung or full state); the analysis says so and
  ranks that trial by the epoch it has (study.analysis.selection). A resume retrains those epochs.
- **Fault tolerance** needs a full state (weights, optimizer state, epoch, best so far) recent
  enough to continue a trial on another node. It is a Tune checkpoint, written every
  `checkpoint_every` epochs or after `checkpoint_minutes` minutes, whichever comes first, and when a
  scheduler pauses the trial (promoting ASHA, study.asha.PromotingASHA, at a rung where the trial waits:
  Tune asks the trainable for it then); never after a trial's last epoch. Tune keeps only the newest
  (CheckpointConfig(num_to_keep=1)), and `WeightsKeeper` deletes it after the trial ends, once a
  resume can no longer continue the trial from it (see there). A resumed
  trial repeats at most the epochs since the last full state Tune's snapshot names: fewer than
  `checkpoint_every`, or the epoch that crossed `checkpoint_minutes`, and one such interval more if
  the driver stopped between a full state's write and the snapshot naming it: killed, or stopped by
  Ctrl-C or SIGTERM, whose last snapshot Tune takes without waiting for the full states being saved
  (a trial whose snapshot names none starts again, and TrialTrainable.restore is never called). Tune deletes the
  older state as the newer one lands, before that snapshot: the trainable then continues from the
  newest full state in the trial's folder (study.trainable.TrialTrainable.restore).

After the study only each (dataset, model) cell's `keep` best trials on the study metric keep their
weights ("all": every trial's). `WeightsKeeper` deletes the others as trials end (a trial that has
ended outside its cell's top `keep` can never re-enter it), and `prune_weights` once more at the end.
Both rank trials by the value of the weights they have written (ties by the study's tie-break metric at
their epoch, then by trial id, as the analysis ranks trials), not by the bests their results show: a
running trial's newer best waits in memory until it may end, and is lost if it fails or the study is
interrupted and not resumed. So a trial's weights go only once `keep` others of its cell hold written
weights at least as good.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

from ray import tune
from ray.tune.experiment import Trial

from study import storage
from study.settings import CHECKPOINT_EVERY, CHECKPOINT_MINUTES, study_location
from study.tables import improves, rank_key

log = logging.getLogger(__name__)

WEIGHTS_DIR = "weights"
STATE_FILE = "state.pt"  # the full state inside a Tune checkpoint folder
CHECKPOINT_PREFIX = "checkpoint_"  # Tune's checkpoint folders inside a trial's folder
SNAPSHOT_PREFIX = "experiment_state-"  # Tune's experiment snapshots in a run's folder: experiment_state-<session>.json
MISSING_STATE_NOTE = "MISSING.txt"  # left in a Tune checkpoint folder whose full state was gone at a resume
WRITTEN_KEY = "written_best"  # result key: the study metric's value at the epoch of the trial's written weights
WRITTEN_TIE_KEY = "written_tie_break"  # result key: the study's tie-break metric at that epoch
# Result key of a resumed or retried trial's first result: why it did not continue from the full state Tune named
# (missing or unreadable) and what it did instead; the study's console shows it.
RESTORE_NOTE_KEY = "restore_note"


@dataclass(frozen=True)
class TuneStateFile:
    """A pickle that Tune saves beside each experiment snapshot of a run, as <prefix><session><extension>, and
    that Tuner.restore reads (the newest by name: newest_tune_files). `holds`: what of the run it holds."""
    prefix: str
    extension: str
    holds: str


def weights_uri(study_uri: str, trial_id: str) -> str:
    return storage.join(study_uri, WEIGHTS_DIR, f"{trial_id}.pt")


def sidecar_uri(study_uri: str, trial_id: str) -> str:
    return storage.join(study_uri, WEIGHTS_DIR, f"{trial_id}.json")


@dataclass
class CheckpointPolicy:
    """When a running trial writes its full state."""

    every: int = CHECKPOINT_EVERY        # epochs
    minutes: float = CHECKPOINT_MINUTES  # or minutes since the last full state, whichever comes first
    rung_epochs: tuple[int, ...] = ()    # ASHA's rungs, where the scheduler may stop or pause the trial

    @classmethod
    def of_study(cls, settings) -> "CheckpointPolicy":
        """A study's (study.settings.StudySettings): its --checkpoint-every and --checkpoint-minutes and its
        ASHA rungs."""
        from study.asha import rung_epochs

        rungs = tuple(rung_epochs(settings.grace_period, settings.reduction_factor, settings.max_epochs))
        return cls(settings.checkpoint_every, settings.checkpoint_minutes, rung_epochs=rungs)

    def full_state_due(self, epoch: int, last_epoch: int, seconds_since_last: float) -> bool:
        """Whether the trial asks Tune for a full state after this epoch (a pause asks too, by itself)."""
        if epoch >= last_epoch:  # the trial ends here: nothing left to resume
            return False
        return epoch % self.every == 0 or seconds_since_last >= 60 * self.minutes

    def weights_due(self, epoch: int, last_epoch: int) -> bool:
        """Whether the best weights must be written before this epoch's result because the trial may end
        after it (a full state writes them too)."""
        return epoch >= last_epoch or epoch in self.rung_epochs


@dataclass
class BestWeights:
    """A trial's best-weights file as its sidecar describes it."""

    trial_id: str
    epoch: int
    metric: str
    value: float
    bytes: int
    uri: str  # the weights file
    tie_break: str | None = None           # the study's tie-break metric (None: plain ties, or weights from before)
    tie_break_value: float | None = None   # its value at `epoch`

    @classmethod
    def from_sidecar(cls, values: dict[str, Any]) -> "BestWeights":
        tie = values.get("tie_break_value")
        return cls(str(values["trial_id"]), int(values["epoch"]), str(values["metric"]), float(values["value"]),
                   int(values["bytes"]), str(values["uri"]), values.get("tie_break"),
                   None if tie is None else float(tie))


class TrialWeights:
    """A running trial's best so far: noted after each epoch, its weights written when `flush` is called
    (in the trial's process). `tie_break`: the study's tie-break metric, whose value at the best epoch goes
    with the weights (--keep ranks tied trials by it)."""

    def __init__(self, study_uri: str, trial_id: str, metric: str, mode: str, tie_break: str | None = None):
        self.study_uri, self.trial_id, self.metric, self.mode = study_uri, trial_id, metric, mode
        self.tie_break = tie_break
        self.best_value: float | None = None
        self.best_epoch: int | None = None
        self.best_tie: float | None = None  # the tie-break metric at the best epoch
        self.unwritten: dict[str, Any] | None = None  # the best's weights, copied, until flush() writes them
        self.written_value: float | None = None  # of the weights on storage
        self.written_tie: float | None = None

    def state(self) -> dict[str, Any]:
        """What a full state carries of the best so far (flush first: the state names written weights)."""
        return {"best_value": self.best_value, "best_epoch": self.best_epoch, "best_tie": self.best_tie}

    def restore(self, state: dict[str, Any]) -> None:
        self.best_value, self.best_epoch = state.get("best_value"), state.get("best_epoch")
        self.best_tie = state.get("best_tie")  # absent from a full state from before tie-breaks
        self.written_value, self.written_tie = self.best_value, self.best_tie
        self.unwritten = None

    def written(self) -> dict[str, float]:
        """What a result carries of the written weights, for WeightsKeeper: their value (WRITTEN_KEY) and their
        tie-break value (WRITTEN_TIE_KEY)."""
        if self.written_value is None:
            return {}
        tie = {} if self.written_tie is None else {WRITTEN_TIE_KEY: self.written_tie}
        return {WRITTEN_KEY: self.written_value, **tie}

    def update(self, run, metrics: dict[str, Any], copy: bool = True) -> bool:
        """After an epoch: whether it is the trial's best so far; if so, its weights wait for flush(): a
        copy, or with copy=False the run's own tensors, for a flush() before the next epoch changes them
        (which saves copying the weights: 0.5 GB for VGG11)."""
        value = metrics.get(self.metric)
        tie = metrics.get(self.tie_break) if self.tie_break else None
        if not improves(value, self.best_value, self.mode, tie, self.best_tie, self.tie_break):
            return False
        self.best_value, self.best_epoch = float(value), int(run.epoch)
        self.best_tie = float(tie) if isinstance(tie, (int, float)) and not math.isnan(tie) else None
        self.unwritten = weights_of(run, copy)
        return True

    def flush(self) -> BestWeights | None:
        """Write the best weights noted since the last flush, if any; returns what was written."""
        if self.unwritten is None:
            return None
        tie_break = (self.tie_break, self.best_tie) if self.best_tie is not None else None
        best = save_best_weights(self.study_uri, self.trial_id, self.unwritten, self.metric, float(self.best_value),
                                 tie_break)
        self.unwritten, self.written_value, self.written_tie = None, best.value, best.tie_break_value
        return best


def weights_of(run, copy: bool = True) -> dict[str, Any]:
    """What a best-weights file holds of a TrainingRun: its weights on the CPU (a copy, which later epochs
    leave alone; without `copy`, tensors already on the CPU are the run's own), epoch, config and classes."""
    checkpoint = run.checkpoint()
    weights = {key: checkpoint[key] for key in ("epoch", "config", "classes", "multilabel")}
    weights["model"] = {name: tensor.detach().to("cpu", copy=copy) for name, tensor in checkpoint["model"].items()}
    return weights


def save_best_weights(study_uri: str, trial_id: str, weights: dict[str, Any], metric: str, value: float,
                      tie_break: tuple[str, float] | None = None) -> BestWeights:
    """Write best weights (weights_of: the weights with their epoch, config and classes), then their sidecar;
    `tie_break`: the study's tie-break metric and its value at the weights' epoch.

    The sidecar comes second, so that one that exists always names complete weights of its epoch.
    """
    from cxrnets.training import save_checkpoint

    uri = weights_uri(study_uri, trial_id)
    with storage.written_file(uri) as path:
        save_checkpoint({**weights, "metric": metric, "value": value}, path)
        size = path.stat().st_size
    best = BestWeights(trial_id, int(weights["epoch"]), metric, value, size, uri, *(tie_break or (None, None)))
    storage.write_json(sidecar_uri(study_uri, trial_id), asdict(best))
    return best


def read_best_weights(study_uri: str) -> tuple[dict[str, BestWeights], list[str]]:
    """Every trial's best-weights sidecar: trial id -> BestWeights, and what could not be read (why)."""
    found, problems = {}, []
    for entry in storage.listing(storage.join(study_uri, WEIGHTS_DIR)):
        if entry.is_dir or not entry.name.endswith(".json"):
            continue
        try:
            best = BestWeights.from_sidecar(storage.read_json(entry.uri))
        except (OSError, ValueError, KeyError, TypeError) as error:
            problems.append(f"{entry.uri}: unreadable sidecar ({error})")
            continue
        # The folder may have moved since the trial wrote the sidecar: the weights lie beside it.
        best.uri = weights_uri(study_uri, best.trial_id)
        found[best.trial_id] = best
    return found, problems


def delete_weights(study_uri: str, trial_id: str) -> None:
    storage.delete(sidecar_uri(study_uri, trial_id))  # first: a sidecar never names deleted weights
    storage.delete(weights_uri(study_uri, trial_id))


def delete_full_states(trial_folder: str) -> int:
    """Delete the Tune checkpoints (full states) in a trial's folder; returns the bytes freed."""
    freed = 0
    for entry in storage.listing(trial_folder):
        if entry.is_dir and entry.name.startswith(CHECKPOINT_PREFIX):
            freed += storage.total_bytes(entry.uri)
            storage.delete(entry.uri)
    return freed


def full_state_folders(trial_folder: str) -> list[str]:
    """The Tune checkpoint folders in a trial's folder that hold a full state, oldest first (Tune numbers
    them in order: checkpoint_000000, checkpoint_000001, ...)."""
    return sorted(entry.name for entry in storage.listing(trial_folder)
                  if entry.is_dir and entry.name.startswith(CHECKPOINT_PREFIX)
                  and storage.kind(storage.join(entry.uri, STATE_FILE)) == "file")


def newest_snapshot(run_uri: str) -> str | None:
    """The URI of Tune's newest experiment snapshot on storage in the folder of a run (a study, or its confirm
    run): the one a resume restores (older sessions' stay beside it); None without a snapshot."""
    return newest_tune_files(run_uri, [(SNAPSHOT_PREFIX, ".json")]).get(SNAPSHOT_PREFIX)


def newest_tune_files(run_uri: str, kinds: list[tuple[str, str]]) -> dict[str, str]:
    """Of each kind (prefix, extension) of the files Tune saves in the folder of a run, one per session
    (<prefix><session><extension>), the URI of the newest: the one Tune's restore reads, which it picks by the
    greatest name. prefix -> URI; a kind without a file is left out."""
    newest: dict[str, str] = {}
    for entry in storage.listing(run_uri):
        for prefix, extension in kinds:
            if not entry.is_dir and entry.name.startswith(prefix) and entry.name.endswith(extension):
                newest[prefix] = max(newest.get(prefix, ""), entry.name)
    return {prefix: storage.join(run_uri, name) for prefix, name in newest.items()}


def stored_snapshot_trials(run_uri: str) -> dict[str, dict[str, Any]]:
    """The trials of Tune's newest experiment snapshot on storage in the folder of a run (newest_snapshot):
    snapshot_trials of it; {} without a snapshot."""
    uri = newest_snapshot(run_uri)
    return snapshot_trials(uri) if uri is not None else {}


def snapshot_trials(snapshot_uri: str) -> dict[str, dict[str, Any]]:
    """The trials of Tune's experiment snapshot at `snapshot_uri`: trial id -> the trial's state there (its
    "status", its folder's name "relative_logdir", ...). OSError, ValueError, KeyError or TypeError if it cannot
    be read (on a local disk Tune may be rewriting it)."""
    snapshot = storage.read_json(snapshot_uri)
    trials = {}
    for trial_state, _ in snapshot["trial_data"]:
        state = json.loads(trial_state)
        trials[str(state["trial_id"])] = state
    return trials


TRIAL_FOLDER = re.compile(r"([0-9a-f]{8})_.*")  # <trial id>_<name> (study.driver.trial_dirname; Tune's ids)


def forget_lost_trials(run_uri: str) -> list[str]:
    """Before a resume: delete the full states and best weights of trials that Tune's newest snapshot on
    storage, the one the resume restores, does not hold. Such a trial started after that snapshot landed (the
    driver was killed before the next one did); Tune forgets it, and its files would stay forever, counted
    by --keep and evaluated by the analysis. Logs a line for each; returns their ids. The snapshot must be
    readable (study.driver.check_tune_state refuses the resume of a run whose snapshot is not)."""
    known = stored_snapshot_trials(run_uri)
    lost: dict[str, list[str]] = {}
    for entry in storage.listing(run_uri):
        match = TRIAL_FOLDER.fullmatch(entry.name)
        if entry.is_dir and match and match.group(1) not in known:
            freed = delete_full_states(entry.uri)
            if freed:
                lost.setdefault(match.group(1), []).append(f"its full state ({freed / 1e6:.0f} MB)")
    for entry in storage.listing(storage.join(run_uri, WEIGHTS_DIR)):
        trial_id, _, extension = entry.name.rpartition(".")
        if not entry.is_dir and extension == "pt" and trial_id not in known:
            delete_weights(run_uri, trial_id)
            lost.setdefault(trial_id, []).append(f"its best weights ({WEIGHTS_DIR}/{entry.name})")
    for trial_id in sorted(lost):
        log.info("trial %s started after Tune's last snapshot of the study was saved, so the resume does not know it: "
                 "deleted %s", trial_id, " and ".join(lost[trial_id]))
    return sorted(lost)


def weights_to_drop(bests: dict[str, tuple[tuple, float, float | None]], ended: Iterable[str], keep: int | str,
                    mode: str, tie_break: str | None = None) -> list[str]:
    """Trials whose weights can go: ended, and outside their cell's `keep` best.

    `bests`: trial id -> (cell, value of the best weights it has written, the study's tie-break metric at their
    epoch or None) for every trial known, running ones too. A trial writes only weights better than those it
    wrote before (study.tables.improves: on the metric, then on `tie_break`, as they rank here), so the `keep`
    trials ahead of one that ended keep weights at least as good whether
    or not they ever write again, and it never gets back into the top `keep`. (A reported best that is not yet
    written gives no such promise: the trial may fail first.) Trials rank as the analysis ranks them: ties by
    the value of `tie_break` (the study's tie-break metric), then by the lower trial id (study.tables.rank_key).
    """
    if keep == "all":
        return []
    by_cell: dict[tuple, list[tuple]] = {}
    for trial_id, (cell, value, tie) in bests.items():
        by_cell.setdefault(cell, []).append(rank_key(trial_id, value, mode, tie, tie_break))
    ended = set(ended)
    drop = []
    for ranked in by_cell.values():
        drop += [key[-1] for key in sorted(ranked)[int(keep):] if key[-1] in ended]
    return sorted(drop)


def cell_of(config: dict[str, Any]) -> tuple[str, str]:
    return str(config.get("dataset", "")), str(config.get("model", ""))


def prune_weights(study_uri: str, results, ended: Iterable[str], keep: int | str, metric: str,
                  mode: str, tie_break: str | None = None) -> list[str]:
    """Delete the weights of ended trials outside their cell's `keep` best, ranked by the sidecars of the
    weights on storage (results: study.results, which give each trial's cell; `tie_break`: the study's). The
    weights file of an ended trial without a sidecar (a deletion interrupted between the two) goes too."""
    if keep == "all" or results.empty:
        return []
    cells = {row["trial_id"]: (str(row.get("config/dataset", "")), str(row.get("config/model", "")))
             for row in results.drop_duplicates("trial_id").to_dict("records")}
    written, _ = read_best_weights(study_uri)
    bests = {t: (cells[t], best.value, best.tie_break_value if tie_break and best.tie_break == tie_break else None)
             for t, best in written.items() if t in cells and best.metric == metric}
    ended = set(ended)
    listed = {entry.name for entry in storage.listing(storage.join(study_uri, WEIGHTS_DIR))}
    orphans = [t for t in ended if f"{t}.pt" in listed and f"{t}.json" not in listed]
    drop = sorted(weights_to_drop(bests, ended, keep, mode, tie_break) + orphans)
    for trial_id in drop:
        delete_weights(study_uri, trial_id)
    if drop:
        log.info("deleted the weights of %d trial(s) outside each model's %s best (--keep)", len(drop), keep)
    return drop


class WeightsKeeper(tune.Callback):
    """On the driver: deletes an ended trial's full state, and the weights of trials that ended outside
    their cell's `keep` best. It knows the trials whose results it saw (after a resume, those since).

    Trials are ranked by the value of the weights they have written, which each result carries (WRITTEN_KEY):
    the driver reads no storage for it.

    An ended trial's files go only once Tune's newest experiment snapshot on storage, the one a resume
    restores, holds the trial as ended: restored from a snapshot that holds it as running (the driver killed
    in between), the trial would continue from its full state, and start again if that were gone. Tune
    uploads its snapshots in the background (to a local folder too), skips the upload of one taken while
    the one before is still uploading, and calls get_state() as it takes one (every 10 s or more), before any
    wait for an upload: so the keeper reads the snapshot on storage back (one small file) and cleans the ended
    trials it holds as ended; the others wait for a later snapshot, or for the experiment's end, which comes
    after Tune's last snapshot is written and uploaded.
    Errored trials keep their full states: a resume runs them again from those. A resumed run gets back the
    trials that had ended, and so cleans what a killed run left of them.
    """

    tie_break: str | None = None  # a class default too: a keeper unpickled from an older study's run lacks it

    def __init__(self, study_uri: str, metric: str, mode: str, keep: int | str, tie_break: str | None = None):
        self.study_uri, self.metric, self.mode, self.keep, self.tie_break = study_uri, metric, mode, keep, tie_break
        # trial id -> (cell, value of its written weights, their tie-break value or None)
        self.bests: dict[str, tuple[tuple, float, float | None]] = {}
        self.ended: set[str] = set()  # cleaned, and in the running for --keep's deletions
        self.trials: list = []  # Tune's trials, as of the last step

    def __setstate__(self, state: dict[str, Any]) -> None:  # unpickled by a resume: the study may have moved
        state.pop("ended_in_snapshot", None)  # kept by keepers of older studies' runs, no longer used
        self.__dict__.update(state)
        self.study_uri = study_location(self.study_uri)

    def on_step_begin(self, iteration, trials, **info):
        self.trials = trials

    def on_trial_result(self, iteration, trials, trial, result, **info):
        value, tie = result.get(WRITTEN_KEY), result.get(WRITTEN_TIE_KEY)
        _, best, best_tie = self.bests.get(trial.trial_id, (None, None, None))
        if improves(value, best, self.mode, tie, best_tie, self.tie_break):
            self.bests[trial.trial_id] = (cell_of(trial.config), float(value), tie)

    def get_state(self) -> None:
        """Tune takes a snapshot: clean what the snapshot on storage holds as ended. Nothing of this callback is
        saved in the snapshot."""
        self.clean(self.trials)
        return None

    def on_experiment_end(self, trials, **info):
        self.clean(trials)

    def clean(self, trials) -> None:
        ended = {trial.trial_id: trial.path for trial in trials
                 if trial.status == Trial.TERMINATED and trial.trial_id not in self.ended}
        for trial_id, path in self.ended_on_storage(ended).items():
            if path:
                delete_full_states(storage.join(self.study_uri, storage.name_of(path)))
            self.ended.add(trial_id)
        for trial_id in weights_to_drop(self.bests, self.ended, self.keep, self.mode, self.tie_break):
            delete_weights(self.study_uri, trial_id)
            self.bests.pop(trial_id, None)

    def ended_on_storage(self, ended: dict[str, str]) -> dict[str, str]:
        """Of `ended` (trial id -> its folder), those that the snapshot on storage holds as ended."""
        if not ended:
            return {}
        try:
            stored = stored_snapshot_trials(self.study_uri)
        except (OSError, ValueError, KeyError, TypeError) as error:  # being rewritten, or briefly unreachable
            log.debug("Tune's snapshot in %s could not be read (%s): ended trials wait for the next",
                      self.study_uri, error)
            return {}
        return {trial_id: path for trial_id, path in ended.items()
                if stored.get(trial_id, {}).get("status") == Trial.TERMINATED}
