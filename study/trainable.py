"""The Ray Tune trainable: one trial trains one cxrnets configuration, reporting every epoch.

What it writes follows the checkpoint policy (study.checkpoints): the weights
of its newest best epoch, before each report after which it may end (its last
epoch, each ASHA rung, each full state); and a full state (model, optimizer,
epoch, best so far) as a Tune checkpoint every `checkpoint_every` epochs or
`checkpoint_minutes` minutes (and at promoting ASHA's rungs), from which a
trial that Tune retries (its node died) or a resumed study continues. A diverging trial (NaN loss)
reports a worst-possible result and stops: the searcher sees a poor trial
(ASHA, which judges trials by their best epoch, sees its best before it
diverged), the study goes on.
"""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import ray
import torch
from ray import tune

from cxrnets.errors import CxrError, DivergedError
from cxrnets.training import PreparedData, TrainConfig, TrainingRun, prepare_data, save_checkpoint
from study import storage
from study.checkpoints import STATE_FILE, CheckpointPolicy, TrialWeights

log = logging.getLogger(__name__)


@dataclass
class TrialContext:
    """What every trial of a study shares, beyond its own config (passed with tune.with_parameters)."""

    data_roots: dict[str, str]           # dataset name -> data root on the nodes
    splits: dict[str, pd.DataFrame]      # "<dataset>" -> the study's split, made once by the driver
    defaults: dict[str, Any]             # TrainConfig values every trial shares (image_size, epochs, ...)
    metric: str = "val/f1_macro"
    mode: str = "max"
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


# Decoded datasets stay open in a worker process between trials (Tune reuses actors).
_PREPARED: dict[tuple, PreparedData] = {}


def _prepared_data(config: TrainConfig, split: pd.DataFrame) -> PreparedData:
    key = (config.dataset, config.data_root, config.image_size, config.cache_dir,
           tuple(sorted((k, str(v)) for k, v in config.dataset_options.items())))
    if key not in _PREPARED:
        _PREPARED[key] = prepare_data(config, split=split)
    return _PREPARED[key]


def _report_diverged(context: TrialContext, weights: TrialWeights, epoch: int, error: Exception) -> None:
    """End the trial as the worst possible result, which ASHA and the searcher see (no checkpoint), with the
    weights of its best epoch before it diverged written."""
    log.warning("trial diverged at epoch %d: %s", epoch, error)
    weights.flush()
    tune.report({"epoch": epoch, **context.worst_result(), "status": "diverged"})


def train_trial(config: dict[str, Any], context: TrialContext) -> None:
    train_config = context.train_config(config)
    check_node(context, train_config.data_root)
    data = _prepared_data(train_config, context.splits[train_config.dataset])
    run = TrainingRun(train_config, data)
    weights = TrialWeights(context.study_uri, tune.get_context().get_trial_id(), context.metric, context.mode)
    checkpoint = tune.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as directory:
            state = torch.load(Path(directory) / STATE_FILE, map_location=run.device, weights_only=True)
        run.restore(state)
        weights.restore(state)
        log.info("resumed %s from epoch %d", train_config.model, run.epoch)
    last_full_state = time.monotonic()
    while run.epoch < train_config.epochs:
        epoch = run.epoch + 1  # train_epoch() counts the epoch before it evaluates, so note it first
        try:
            metrics = run.train_epoch()
        except DivergedError as error:
            _report_diverged(context, weights, epoch, error)
            return
        metrics["diverged"] = 0
        metrics["node_id"] = _node_id()  # nodes on one machine share an IP: tell them apart by node id
        weights.update(run, metrics)
        policy = context.checkpoint_policy
        full_state = policy.full_state_due(run.epoch, train_config.epochs, time.monotonic() - last_full_state)
        if full_state or policy.weights_due(run.epoch, train_config.epochs):
            weights.flush()  # before the report: the trial may end after it
        if not full_state:
            tune.report(metrics)
            continue
        with tempfile.TemporaryDirectory() as directory:
            save_checkpoint({**run.checkpoint(), **weights.state()}, Path(directory) / STATE_FILE)
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(directory))
        last_full_state = time.monotonic()
