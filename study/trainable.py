"""The Ray Tune trainable: one trial trains one cxrnets configuration, reporting every epoch.

What it writes follows the checkpoint policy (study.checkpoints): the weights
of its newest best epoch, before each result after which it may end (its last
epoch, each ASHA rung, each full state), and each result says the value of
the weights written so far (WRITTEN_KEY, by which the driver ranks trials for
--keep); and a full state (model, optimizer, epoch, best so far) as a Tune
checkpoint every `checkpoint_every` epochs or `checkpoint_minutes` minutes,
and when a scheduler pauses the trial, from which a paused or retried trial
(its node died) or a resumed study continues. A diverging trial (NaN loss)
reports a worst-possible result, marked diverged, and stops; the study goes
on. ASHA and the searcher judge it, as any trial, by its best epoch: its best
before it diverged, or that worst result where it diverged in its first epoch;
no table ranks the diverged epoch itself (study.tables).
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import pandas as pd
import ray
import torch
from ray import tune
from ray.tune import PlacementGroupFactory

from cxrnets.errors import CxrError, DivergedError
from cxrnets.config import TrainConfig
from cxrnets.training import PreparedData, TrainingRun, load_checkpoint, prepare_data, save_checkpoint
from study import storage
from study.checkpoints import (MISSING_STATE_NOTE, RESTORE_NOTE_KEY, STATE_FILE, CheckpointPolicy, TrialWeights,
                               full_state_folders)

log = logging.getLogger(__name__)

FULL_STATE_KEYS = ("model", "optimizer", "epoch")  # what a full state must hold to continue a trial from it


@dataclass
class TrialContext:
    """What every trial of a study shares, beyond its own config (passed with tune.with_parameters)."""

    data_roots: dict[str, str]           # dataset name -> data root on the nodes
    splits: dict[str, pd.DataFrame]      # "<dataset>" -> the study's split, made once by the driver
    defaults: dict[str, Any]             # TrainConfig values every trial shares (image_size, epochs, ...)
    metric: str = "val/f1_macro"
    mode: str = "max"
    tie_break: str | None = None         # the study's tie-break metric, noted with the best weights (for --keep)
    dataset_options: dict[str, dict] = field(default_factory=dict)
    study_uri: str = ""                  # the study's folder or URI: best weights go to <study_uri>/weights/
    storage: str | None = None           # the study's --storage, for messages
    settings_file: str | None = None     # the study's study.json where --storage is a local path: every node must see it
    checkpoint_policy: CheckpointPolicy = field(default_factory=CheckpointPolicy)

    def train_config(self, config: dict[str, Any]) -> TrainConfig:
        values = {**self.defaults, **config}
        values["data_root"] = self.data_roots[values["dataset"]]
        values["dataset_options"] = self.dataset_options.get(values["dataset"], {})
        values["pretrained"] = bool(values.get("pretrained", False))
        return TrainConfig.from_dict(values)

    def worst_result(self) -> dict[str, float]:
        """What a diverged trial reports: the worst value of the study metric (all max-mode metrics lie in [0, 1])."""
        return {self.metric: 0.0 if self.mode == "max" else float("inf"), "diverged": 1}


def storage_not_shared_message(storage: str, node_id: str) -> str:
    return (f"--storage {storage} is not visible from node {node_id[:8]}: Ray needs storage that "
            "every node shares on a multi-node cluster; pass --storage s3://bucket/path (or a shared "
            "file system mounted at the same path on every node)")


def dataset_missing_message(path: str, node_id: str) -> str:
    return (f"node {node_id[:8]} has no dataset at {path}: stage it there first "
            "(python -m cxrnets.cache --dataset ... --data-root ...; see docs/cluster.md)")


def check_node(context: TrialContext, data_root: str) -> None:
    """Refuse to train on a node that cannot see the study's storage or the dataset.

    The driver checks the nodes alive when the study starts (study.driver.check_cluster); this
    catches nodes that join later, such as autoscaled GPU workers.
    """
    if context.settings_file and not Path(context.settings_file).is_file():
        raise CxrError(storage_not_shared_message(context.storage or context.settings_file, _node_id()))
    if not storage.is_remote(data_root) and not Path(data_root).exists():
        raise CxrError(dataset_missing_message(data_root, _node_id()))


def _node_id() -> str:
    return ray.get_runtime_context().get_node_id()


def reserved_cpus(trial_resources: PlacementGroupFactory | None) -> int | None:
    """The CPU cores this trial reserved, as PyTorch threads (at least 1): what Ray assigned the trial's
    actor, else what the trial asked for; None outside a Ray actor (a trainable driven directly)."""
    if not ray.is_initialized() or ray.get_runtime_context().get_actor_id() is None:
        return None
    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU")
    if not cpus and trial_resources is not None:
        cpus = trial_resources.required_resources.get("CPU")
    return max(math.floor(cpus), 1) if cpus else None


def use_reserved_cpus(trial_resources: PlacementGroupFactory | None) -> None:
    """Train on as many threads as the trial reserved CPUs. Ray sets OMP_NUM_THREADS to them only where the
    environment does not set it, and `ray up` starts every node with OMP_NUM_THREADS=1 (as may a user's shell):
    PyTorch would take one thread from it."""
    threads = reserved_cpus(trial_resources)
    if threads is not None and threads != torch.get_num_threads():
        log.info("PyTorch trains on %d threads, the CPUs the trial reserved (it had %d; OMP_NUM_THREADS=%s)",
                 threads, torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS", "unset"))
        torch.set_num_threads(threads)


def log_to_worker_output() -> None:
    """In a Ray actor, the INFO lines of cxrnets and study (the threads a trial trains on, a resumed trial's
    epoch, the dataset's decoding, minutes long on a node without a staged cache) to the worker's stderr: its
    root logger has no handler and stays at WARNING. `-v` streams that output to the study's console; without
    it, it stays in Ray's worker logs. A handler only where none is: Tune reuses an actor for later trials."""
    if not ray.is_initialized() or ray.get_runtime_context().get_actor_id() is None:
        return
    for name in ("cxrnets", "study"):
        logger = logging.getLogger(name)
        logger.setLevel(logging.INFO)
        if not logger.handlers:
            handler = logging.StreamHandler(sys.stderr)
            handler.setFormatter(logging.Formatter("%(message)s"))
            logger.addHandler(handler)


# Decoded datasets stay open in a worker process between trials (Tune reuses actors).
_PREPARED: dict[tuple, PreparedData] = {}


def _prepared_data(config: TrainConfig, split: pd.DataFrame) -> PreparedData:
    key = (config.dataset, config.data_root, config.image_size, config.cache_dir,
           tuple(sorted((k, str(v)) for k, v in config.dataset_options.items())))
    if key not in _PREPARED:
        _PREPARED[key] = prepare_data(config, split=split, split_source=f"the study's split of {config.dataset}")
    return _PREPARED[key]


class TrialTrainable(tune.Trainable):
    """One trial: one cxrnets configuration, an epoch per step.

    Tune's class API, so that Tune asks for a full state (save_checkpoint) only when one is needed: at the
    policy's epochs (the step's `should_checkpoint`) and when a scheduler pauses the trial (promoting ASHA's
    rungs), never for a trial that goes on from a rung or ends there. Tune reuses the actor for later trials
    (reset_config), keeping the decoded data open.
    """

    def setup(self, config: dict[str, Any], context: TrialContext) -> None:
        log_to_worker_output()
        self.context = context
        self.train_config = context.train_config(config)
        check_node(context, self.train_config.data_root)
        use_reserved_cpus(self.trial_resources)
        data = _prepared_data(self.train_config, context.splits[self.train_config.dataset])
        self.run = TrainingRun(self.train_config, data)
        self.weights = TrialWeights(context.study_uri, self.trial_id, context.metric, context.mode, context.tie_break)
        self.last_full_state = time.monotonic()
        self.restore_note: str | None = None  # why the trial did not continue from the full state Tune named
        self.state_uri: str | None = None  # the full state being restored, as load_checkpoint names it

    def reset_config(self, new_config: dict[str, Any]) -> bool:
        self.setup(new_config)  # Tune's with_parameters subclass: its setup(config) passes the context on
        return True

    def step(self) -> dict[str, Any]:
        epoch = self.run.epoch + 1  # train_epoch() counts the epoch before it evaluates, so note it first
        try:
            metrics = self.run.train_epoch()
        except DivergedError as error:
            # The worst possible result, which ASHA and the searcher see; the best weights before it stay.
            log.warning("trial diverged at epoch %d: %s", epoch, error)
            self.weights.flush()
            return {"epoch": epoch, **self.context.worst_result(), **self.weights.written(), "status": "diverged",
                    "done": True}
        metrics["diverged"] = 0
        metrics["node_id"] = _node_id()  # nodes on one machine share an IP: tell them apart by node id
        policy, last = self.context.checkpoint_policy, self.train_config.epochs
        full_state = policy.full_state_due(self.run.epoch, last, time.monotonic() - self.last_full_state)
        write = full_state or policy.weights_due(self.run.epoch, last)
        self.weights.update(self.run, metrics, copy=not write)
        if write:
            self.weights.flush()  # before the result: the trial may end after it (a pause saves a full state)
        note, self.restore_note = ({RESTORE_NOTE_KEY: self.restore_note} if self.restore_note else {}), None
        return {**metrics, **self.weights.written(), **note, "should_checkpoint": full_state,
                "done": self.run.epoch >= last}

    def save_checkpoint(self, checkpoint_dir: str) -> None:
        self.weights.flush()  # the state's best so far names written weights
        save_checkpoint({**self.run.checkpoint(), **self.weights.state()}, Path(checkpoint_dir) / STATE_FILE)
        self.last_full_state = time.monotonic()

    def restore(self, checkpoint_path: Any) -> None:
        """Tune hands a resumed or retried trial the full state its experiment snapshot names. A state that is
        gone (a driver killed after a newer full state landed, Tune then deleting the older one at once, and
        before its next snapshot named the newer) or unreadable (cut short by a copy or upload) would fail the
        trial at every try and every resume: continue from the newest readable full state in the trial's folder
        instead, or start the trial again if it holds none. Either is logged, and noted in the first result
        (RESTORE_NOTE_KEY) for the study's console."""
        named = getattr(checkpoint_path, "checkpoint", None)  # Tune's (full state, metrics at it)
        if named is None:
            return super().restore(checkpoint_path)
        trial_path, named_folder = PurePosixPath(named.path).parent, PurePosixPath(named.path).name
        trial_folder = storage.join(self.context.study_uri, trial_path.name)
        named_state = storage.join(trial_folder, named_folder, STATE_FILE)
        missing = storage.kind(named_state) != "file"
        if missing:
            problem = (f"the full state {named_state} is missing (the study was stopped before Tune's snapshot "
                       "named a newer one)")
        else:
            try:
                return self._restore_state(checkpoint_path, named_state)
            except CxrError as error:
                problem = str(error)
        instead = "the trial's folder holds no other readable full state: starting the trial again"
        for folder in reversed([held for held in full_state_folders(trial_folder) if held != named_folder]):
            newest = tune.Checkpoint(str(trial_path / folder), filesystem=named.filesystem)
            try:
                self._restore_state(type(checkpoint_path)(checkpoint=newest, metrics={}),
                                    storage.join(trial_folder, folder, STATE_FILE))
            except CxrError as error:
                log.warning("%s", error)
                continue
            instead = f"continuing from {folder}"
            break
        self._iteration = self.run.epoch  # Tune counts iterations on from the metrics it noted with a state
        log.warning("%s; %s", problem, instead)
        self.restore_note = f"{problem}; {instead}"
        if missing:
            # Tune deletes the state it names once the trial writes a newer one, and logs an error if it is not there.
            storage.write_text(storage.join(trial_folder, named_folder, MISSING_STATE_NOTE),
                               f"full state missing: {instead}\n")

    def _restore_state(self, checkpoint_path: Any, state_uri: str) -> None:
        self.state_uri = state_uri  # what load_checkpoint names if the state is unreadable
        super().restore(checkpoint_path)

    def load_checkpoint(self, checkpoint_dir: str) -> None:
        path = Path(checkpoint_dir) / STATE_FILE
        state = load_checkpoint(path, required=FULL_STATE_KEYS, mmap=False,
                                name=self.state_uri or str(path))
        self.run.restore(state)
        self.weights.restore(state)
        log.info("resumed %s from epoch %d", self.train_config.model, self.run.epoch)


class JobTrainable(TrialTrainable):
    """A trial whose config is {"job": i}: it trains `jobs[i]` (study.confirm's seed repeats, whose trials Tune
    names by job)."""

    def setup(self, config: dict[str, Any], context: TrialContext, jobs: list[dict[str, Any]]) -> None:
        super().setup(jobs[config["job"]], context)
