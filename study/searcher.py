"""Ray's OptunaSearch, telling Optuna each trial's value at its best epoch, in an Optuna study stored with the study.

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

The Optuna study lives in an SQLite file, `optuna.db` in the study folder, so
that Optuna's own tools open it while the study runs and after:

    optuna-dashboard sqlite:////abs/path/studies/<name>/optuna.db

For a study in object storage the driver works on a local copy (`working_file`)
and writes it into the bucket after every change (a trial's start, each epoch,
its end); `--resume` fetches it back first (`restore_storage_file`). Each Optuna trial carries its Tune trial id as
the user attribute `trial_id`.

Every trial of a study trains with the study's seed, so a configuration that ran (or runs) already would
train the same curve again. TPE proposes such repeats freely on a discrete space, so a repeat is drawn
again, up to REDRAWS times: the skipped proposal stays in the Optuna study as a FAIL trial (TPE ignores
those) with the user attribute `repeat_of` (the earlier Optuna trial's number). After that, on a space of
choices, the trial takes a configuration no trial has taken, at random; once every configuration has run
or runs, the search ends (Searcher.FINISHED), whatever trials --num-samples had left. (A space with a range
cannot be listed: there the repeat runs.)
"""

from __future__ import annotations

import copy
import hashlib
import logging
import math
import pickle
import random
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import optuna
from ray.tune.search import SearchGenerator, Searcher
from ray.tune.search.optuna import OptunaSearch

from cxrnets.errors import CxrError
from study import storage
from study.checkpoints import stored_snapshot_trials
from study.settings import resumed_study_uri, study_location
from study.space import trial_config

log = logging.getLogger(__name__)

OPTUNA_FILE = "optuna.db"
REDRAWS = 20  # repeated proposals redrawn for one trial before it takes an untried configuration at random


def storage_file_uri(study_uri: str) -> str:
    """Where a study keeps its Optuna storage file (in its folder or its bucket)."""
    return storage.join(study_uri, OPTUNA_FILE)


def working_file(study_uri: str) -> Path:
    """The file the driver's Optuna study reads and writes: the study's own file on local storage; for
    object storage, a local copy named after the study's URI (the same on every resume)."""
    if not storage.is_remote(study_uri):
        return Path(storage_file_uri(study_uri))
    digest = hashlib.sha1(study_uri.encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / "cxr-tune-optuna" / digest / OPTUNA_FILE


def storage_url(path: Path) -> str:
    return f"sqlite:///{path.resolve()}"


def open_storage(path: Path) -> optuna.storages.RDBStorage:
    """A new or existing Optuna storage file (its folder is made)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return optuna.storages.RDBStorage(storage_url(path))


def restore_storage_file(study_uri: str, optuna_study: str) -> Path:
    """Before a resume: fetch the study's Optuna file from object storage, and check that it holds the
    Optuna study `optuna_study` (CxrError otherwise, naming the file and what to do). Returns the working file."""
    uri, path = storage_file_uri(study_uri), working_file(study_uri)
    missing = (f"{uri} is missing: it holds the study's Optuna study, which --resume continues; restore the file "
               "from a copy of the study, or start a new study")
    if storage.is_remote(study_uri):
        try:
            data = storage.read_bytes(uri)
        except FileNotFoundError as error:
            raise CxrError(missing) from error
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    elif not path.is_file():
        raise CxrError(missing)
    from sqlalchemy.exc import SQLAlchemyError

    try:
        names = optuna.get_all_study_names(storage_url(path))
    except (SQLAlchemyError, RuntimeError) as error:
        raise CxrError(f"{uri} is not a readable Optuna storage ({str(error).splitlines()[0]}); restore the "
                       "study's own file from a copy of the study, or start a new study") from error
    if optuna_study not in names:
        raise CxrError(f"{uri} holds the Optuna study {', '.join(map(repr, names)) or 'of no name'}, not this "
                       f"study's {optuna_study!r}: it comes from another study; put back this study's own "
                       "optuna.db, or start a new study")
    return path


def params_key(params: dict[str, Any]) -> tuple:
    """A configuration's Optuna params as a set member: two trials with equal params have equal keys."""
    return tuple(sorted(params.items()))


class GridSamplerUnderTune(optuna.samplers.GridSampler):
    """Optuna's GridSampler without the study.stop() it calls once its grid is used up: that works only inside
    Study.optimize, which Tune never runs, and raised RuntimeError (a crashed study, or Ray's warning at the
    grid's last trial). BestEpochOptunaSearch ends the search itself, once every configuration has run or runs."""

    @classmethod
    def instead_of(cls, sampler: optuna.samplers.BaseSampler | None) -> optuna.samplers.BaseSampler | None:
        """A GridSampler as one of this class, with its grid and its random state; any other sampler as it is."""
        if type(sampler) is not optuna.samplers.GridSampler:
            return sampler
        under_tune = cls.__new__(cls)
        under_tune.__dict__.update(sampler.__dict__)
        return under_tune

    def after_trial(self, study, trial, state, values) -> None:
        pass


class BestEpochOptunaSearch(OptunaSearch):
    """OptunaSearch whose completed trials carry their best epoch's value of the metric.

    `study_uri`: the study's folder or URI, whose `optuna.db` holds the Optuna study (through the driver's
    `working_file` and a copy after each trial start, result and end, for object storage); None: an
    in-memory Optuna study. Pickled (Tune's tuner.pkl and searcher snapshots), the searcher keeps the
    Optuna study's name and its trials' numbers, and reopens the file where the study lies when a resume
    unpickles it (study.settings.study_location), so that a moved study continues its own Optuna study.
    """

    def __init__(self, *args, study_uri: str | None = None, **kwargs) -> None:
        self._study_uri, self._storage_file, self._copy_to = None, None, None
        kwargs["sampler"] = GridSamplerUnderTune.instead_of(kwargs.get("sampler"))
        if study_uri is not None:
            self._locate(study_uri)
            kwargs["storage"] = open_storage(self._storage_file)
        super().__init__(*args, **kwargs)

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        if state.get("_study_uri") is None:
            return state  # in-memory Optuna study: pickled whole, as OptunaSearch does
        state["_storage"] = state["_ot_study"] = None
        state["_ot_trials"] = {trial_id: trial.number for trial_id, trial in self._ot_trials.items()}
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        if self.__dict__.get("_study_uri") is not None and self._ot_study is None:
            self._reopen(study_location(self._study_uri))

    def _locate(self, study_uri: str) -> None:
        self._study_uri, self._storage_file = study_uri, working_file(study_uri)
        self._copy_to = storage_file_uri(study_uri) if storage.is_remote(study_uri) else None

    def _reopen(self, study_uri: str) -> None:
        """The Optuna study and its running trials, from the storage file of the study at `study_uri`."""
        self._locate(study_uri)
        self._sampler = GridSamplerUnderTune.instead_of(self._sampler)  # a study pickled before it came
        self._storage = open_storage(self._storage_file)
        self._ot_study = optuna.load_study(study_name=self._study_name, storage=self._storage, sampler=self._sampler,
                                          pruner=optuna.pruners.NopPruner())
        self._ot_trials = {trial_id: self._optuna_trial(number) for trial_id, number in self._ot_trials.items()}

    def _optuna_trial(self, number: int) -> optuna.Trial:
        """The Optuna study's trial `number`, to report to and tell."""
        study_id = self._storage.get_study_id_from_name(self._study_name)
        return optuna.Trial(self._ot_study, self._storage.get_trial_id_from_study_id_trial_number(study_id, number))

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as file:
            pickle.dump(self.__getstate__(), file)

    def suggest(self, trial_id: str) -> dict | str | None:
        if self._every_configuration_taken():
            log.info("every configuration of the space has run or runs: the search ends")
            return Searcher.FINISHED
        config = super().suggest(trial_id)
        for redraw in range(1, REDRAWS + 2):
            ot_trial = self._ot_trials.get(trial_id)
            earlier = self._same_configuration(ot_trial) if ot_trial is not None else None
            if earlier is None:
                break
            untried = self._untried_configurations()
            if untried is None and redraw > REDRAWS:
                log.info("trial %s repeats the configuration of Optuna trial %d: the sampler proposed only repeats "
                         "%d times", trial_id, earlier.number, REDRAWS + 1)
                break
            ot_trial.set_user_attr("repeat_of", earlier.number)
            self._ot_study.tell(ot_trial, state=optuna.trial.TrialState.FAIL)
            del self._ot_trials[trial_id]
            if redraw > REDRAWS:
                # The sampler keeps to what ran (TPE on a small space it has nearly covered): the trial
                # takes an untried configuration, drawn at random, as an enqueued Optuna trial.
                choice = random.Random(ot_trial.number).choice(untried)
                log.info("the sampler proposed only repeats %d times: trial %s takes an untried configuration, "
                         "%s", REDRAWS + 1, trial_id, choice)
                self._ot_study.enqueue_trial(choice)
            config = super().suggest(trial_id)
        if trial_id in self._ot_trials:
            self._ot_trials[trial_id].set_user_attr("trial_id", trial_id)
            self._copy_storage_file()
        return trial_config(config) if isinstance(config, dict) else config

    def _every_configuration_taken(self) -> bool:
        """Whether every configuration of a space of choices has run or runs; never, for a space with a range
        (or a plain define-by-run function)."""
        count = getattr(self._space, "configuration_count", lambda: None)()
        return count is not None and len({params_key(trial.params) for trial in self._taken_trials()}) >= count

    def _untried_configurations(self) -> list[dict] | None:
        """The space's configurations that no finished or running trial has taken; None for a space with a
        range (or a plain define-by-run function), whose configurations cannot be listed."""
        listed = getattr(self._space, "configurations", lambda: None)()
        if listed is None:
            return None
        taken = {params_key(trial.params) for trial in self._taken_trials()}
        return [config for config in listed if params_key(config) not in taken]

    def _same_configuration(self, ot_trial: optuna.Trial) -> optuna.trial.FrozenTrial | None:
        """The earliest finished or running trial with exactly `ot_trial`'s parameters, if any."""
        return next((other for other in self._taken_trials()
                     if other.number != ot_trial.number and other.params == ot_trial.params), None)

    def _taken_trials(self) -> list[optuna.trial.FrozenTrial]:
        """The Optuna trials whose configuration counts as taken: finished or running."""
        states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.RUNNING)
        return self._ot_study.get_trials(deepcopy=False, states=states)

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if trial_id in self._completed_trials:
            return  # a trial the Optuna study had finished before an interruption, rerun by the resume
        self._record_epoch(trial_id, result)
        self._copy_storage_file()

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id in self._completed_trials:
            return
        if trial_id in self._failed_then_resumed():
            self._tell_again(trial_id, result, error)
            return
        if result and not error:
            # The result that ends a trial (the last epoch, or the rung where ASHA stopped it) reaches the
            # searcher only here: Tune calls on_trial_result only for trials that go on.
            self._record_epoch(trial_id, result)
        best = self._best_values().pop(trial_id, None)
        if best is not None and (result or not error):  # no result: a trial that waited at a rung, ended there
            result = {**(result or {}), self.metric: best}
        super().on_trial_complete(trial_id, result, error)
        self._copy_storage_file()

    def _record_epoch(self, trial_id: str, result: dict) -> None:
        """An epoch's result: the Optuna trial's intermediate value at that epoch (once), and its best so far."""
        value, epoch = result.get(self.metric), result.get("training_iteration")
        if not isinstance(value, (int, float)) or math.isnan(value) or epoch is None:
            return
        reported = self._last_epochs_reported()
        if result.get("diverged"):  # its value is the worst-value placeholder (study.trainable), not measured
            self._ot_trials[trial_id].set_user_attr("diverged_at_epoch", int(epoch))
            self._best_values().setdefault(trial_id, value)
            return
        if trial_id in self._failed_then_resumed():
            self._rerun_epochs().setdefault(trial_id, {})[int(epoch)] = value
        elif epoch > reported.get(trial_id, 0):
            self._ot_trials[trial_id].report(value, epoch)
            reported[trial_id] = epoch
        self._best_values()[trial_id] = self._best_of([value, self._best_values().get(trial_id)])

    def restore(self, checkpoint_path: str) -> None:
        """The searcher's state from Tune's last snapshot, reconciled with the Optuna storage, which may be
        ahead of it: a trial the storage holds as finished is not told again (the resume reruns it from its
        last full state), and a trial started after the snapshot is marked failed (the resume forgets it), unless
        Tune's snapshot of its trials, which can be newer (its files reach storage one by one), holds it: the
        resume runs that trial, which goes on as the same Optuna trial. A trial that had failed (errored), which
        the resume runs again, is told anew when it ends (_tell_again)."""
        super().restore(checkpoint_path)
        if getattr(self, "_storage_file", None) is None:
            return  # in-memory Optuna study (studies from before the storage file)
        if self._ot_study is None:  # a snapshot that names its Optuna study rather than holding it
            self._reopen(study_location(self._study_uri))
        known = {trial.number: trial_id for trial_id, trial in self._ot_trials.items()}
        restored_by_tune = stored_snapshot_trials(study_location(self._study_uri))
        for frozen in self._ot_study.get_trials(deepcopy=False):
            if frozen.number in known and frozen.state == optuna.trial.TrialState.FAIL:
                # An errored trial, which the resume runs again: its results count, and its end is told anew.
                self._completed_trials.discard(known[frozen.number])
                self._failed_then_resumed().add(known[frozen.number])
            elif frozen.number in known and frozen.state.is_finished():
                self._completed_trials.add(known[frozen.number])
            elif frozen.number in known and frozen.intermediate_values:
                # A running trial that reported epochs after the snapshot, which the resume trains again.
                reported = self._last_epochs_reported()
                trial_id = known[frozen.number]
                reported[trial_id] = max(reported.get(trial_id, 0), max(frozen.intermediate_values))
            elif frozen.number not in known and frozen.state == optuna.trial.TrialState.RUNNING:
                trial_id = frozen.user_attrs.get("trial_id")
                if trial_id in restored_by_tune:
                    self._adopt(trial_id, frozen)
                else:
                    self._ot_study.tell(frozen.number, state=optuna.trial.TrialState.FAIL)
                    log.info("Optuna trial %d had started after the searcher's last snapshot, and the resume "
                             "forgets its trial: marked failed", frozen.number)

    def _adopt(self, trial_id: str, frozen: optuna.trial.FrozenTrial) -> None:
        """A running Optuna trial that the restored searcher does not know and that the resume runs: it goes on,
        with its best so far; the epochs it reported already, which the resume may train again, are not
        reported twice."""
        self._ot_trials[trial_id] = self._optuna_trial(frozen.number)
        if frozen.intermediate_values:
            self._last_epochs_reported()[trial_id] = max(frozen.intermediate_values)
            self._best_values()[trial_id] = self._best_of(frozen.intermediate_values.values())

    def _copy_storage_file(self) -> None:
        """Object storage: the bucket's copy follows every change, so that it always knows at least every
        trial of Tune's last snapshot (which a resume restores) and every epoch they reported."""
        copy_to, path = getattr(self, "_copy_to", None), getattr(self, "_storage_file", None)  # None: older studies
        if copy_to and path is not None:
            storage.write_bytes(copy_to, path.read_bytes())

    def _best_of(self, values: Iterable[float | None]) -> float | None:
        """The best of `values` in the study's mode, None (not yet reported) left out; None if none is left."""
        pick = max if self.mode == "max" else min
        return pick((value for value in values if value is not None), default=None)

    def _failed_then_resumed(self) -> set[str]:
        """Trials that had failed (their Optuna trial FAIL) and that a resume runs again from their last full
        state (Tuner.restore(resume_errored=True)); kept in the searcher's saved state."""
        return self.__dict__.setdefault("_failed_resumed", set())

    def _tell_again(self, trial_id: str, result: dict | None, error: bool) -> None:
        """A trial that failed, then ended after a resume: a finished Optuna trial cannot be told again, so
        its configuration and its best value over all its epochs, before the failure and after the resume, go
        in as a new COMPLETE trial (user attribute `rerun_of`: the failed one's number), which TPE learns from."""
        if result and not error:
            self._record_epoch(trial_id, result)
        if error:  # it failed again: its epochs stay for the next resume, which runs it again
            return
        best = self._best_values().pop(trial_id, None)
        rerun_epochs = self._rerun_epochs().pop(trial_id, {})
        self._failed_then_resumed().discard(trial_id)
        failed = self._ot_trials[trial_id].number
        frozen = next(t for t in self._ot_study.get_trials(deepcopy=False) if t.number == failed)
        epochs = {**frozen.intermediate_values, **rerun_epochs}
        best = self._best_of([best, *epochs.values()])
        if best is None:
            return
        self._ot_study.add_trial(optuna.trial.create_trial(
            params=frozen.params, distributions=frozen.distributions, value=best, intermediate_values=epochs,
            user_attrs={"trial_id": trial_id, "rerun_of": failed}))
        self._copy_storage_file()

    def _rerun_epochs(self) -> dict[str, dict[int, float]]:
        """trial id -> {epoch: value} of a failed trial rerun by a resume (its Optuna trial, finished, takes no
        more reports); kept in the searcher's saved state."""
        return self.__dict__.setdefault("_rerun_epochs_by_trial", {})

    def _last_epochs_reported(self) -> dict[str, int]:
        """trial id -> the last epoch it reported to Optuna; kept in the searcher's saved state."""
        return self.__dict__.setdefault("_last_epoch_reported", {})

    def _best_values(self) -> dict[str, float]:
        """trial id -> best value so far; kept in the searcher's saved state, so a resumed study keeps it."""
        return self.__dict__.setdefault("_best_by_trial", {})


class StudySearchGenerator(SearchGenerator):
    """Tune's wrapper that makes trials of the searcher's suggestions, whose trials made after the resume of
    a moved study go where the study lies now.

    Tune moves the trials it restores to a moved study's folder, but makes the next ones from the experiment
    spec this wrapper restores, which still names the old folder (Ray 2.60): their workers would fail with
    "Unable to set up cluster storage", or write beside the old copy.

    Under --max-concurrent (Ray's ConcurrencyLimiter), the end of a trial the limiter does not count as live
    goes to the searcher all the same: Ray 2.60's limiter drops it, and a trial that errored, or started after
    the limiter's snapshot, and that a resume runs again, is such a trial (Optuna would keep it FAIL, or
    RUNNING).
    """

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        limiter = self.searcher
        if getattr(limiter, "_limit_concurrency", False) and trial_id not in limiter.live_trials:
            limiter.searcher.on_trial_complete(trial_id, result=result, error=error)
        else:
            super().on_trial_complete(trial_id, result=result, error=error)

    def set_state(self, state: dict) -> None:
        super().set_state(state)
        study_uri = resumed_study_uri()
        if study_uri is None or self._experiment is None:
            return
        moved = copy.copy(self._experiment.spec["storage"])
        moved.storage_filesystem, moved.storage_fs_path = storage.filesystem(storage.parent_of(study_uri))
        moved.experiment_dir_name = storage.name_of(study_uri)
        self._experiment.spec["storage"] = self._experiment.storage = moved
