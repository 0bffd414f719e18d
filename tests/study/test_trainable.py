"""The Tune trainable without Ray: config merging, per-epoch results, the checkpoint policy, resume,
divergence.

`TrialTrainable` is driven as Tune drives it (TuneStandIn: a step per epoch, a full state saved when a
result asks for one or the scheduler pauses the trial), on a tiny class-per-folder dataset at 32 px
(ResNet50, about a second an epoch). The threads a trial trains on are checked in a Ray actor of the
session's Ray instance, as Tune runs a trial.
"""

from __future__ import annotations

import math
import os
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from ray import tune
from ray.train._internal.session import _TrainingResult as TrainingResult  # what Tune hands restore()

import study.trainable as trainable
from cxrnets.errors import DivergedError
from cxrnets.config import TrainConfig
from cxrnets.training import TrainingRun, prepare_data
from study.checkpoints import (MISSING_STATE_NOTE, RESTORE_NOTE_KEY, STATE_FILE, WRITTEN_KEY, WRITTEN_TIE_KEY,
                               CheckpointPolicy, read_best_weights)
from study.tables import best_epochs
from study.trainable import TrialContext, TrialTrainable


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread, as a trial gets on a 1-CPU reservation: on a busy 2-core machine two
    threads spin against each other and an epoch takes 10x longer."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    """3 classes x 12 small noisy grey PNGs whose brightness tells the class."""
    root = tmp_path_factory.mktemp("tiny-folder")
    for k, (name, brightness) in enumerate({"covid": 210, "normal": 50, "pneumonia": 130}.items()):
        (root / name).mkdir()
        for i in range(12):
            rng = np.random.default_rng(1000 * k + i)
            pixels = np.clip(brightness + rng.normal(0, 25, (32, 40)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"{name}-{i:02d}.png")
    return root


@pytest.fixture(scope="module")
def context(tiny_data, tmp_path_factory) -> TrialContext:
    """What a study hands every trial: data roots, the study's split, shared defaults."""
    cache = tmp_path_factory.mktemp("cache")
    data = prepare_data(TrainConfig(dataset="folder", data_root=str(tiny_data), image_size=32, cache_dir=str(cache)))
    return TrialContext(data_roots={"folder": str(tiny_data)}, splits={"folder": data.split},
                        defaults={"image_size": 32, "epochs": 2, "seed": 0, "cache_dir": str(cache),
                                  "device": "auto"}, checkpoint_policy=CheckpointPolicy(every=2))


@pytest.fixture
def study_context(context, tmp_path) -> TrialContext:
    """The module's context writing its best weights into a fresh study folder."""
    return replace(context, study_uri=str(tmp_path / "study"))


def trial_of(context: TrialContext, config: dict) -> TrialTrainable:
    class Trial(TrialTrainable):  # what tune.with_parameters(TrialTrainable, context=...) makes
        def setup(self, config):
            super().setup(config, context)

    return Trial(config=config)


class TuneStandIn:
    """Drives a TrialTrainable as Tune does: setup, then (from a full state, for a retried or resumed trial)
    load_checkpoint, then a step per epoch until a result says done; after a result that asks for a full
    state, or at an epoch in `pause_at` (where the scheduler pauses the trial), save_checkpoint into a
    temporary folder. Records each result, the full state saved after it (None: none) and the epoch and value
    of the best weights in the study folder when the result came (None: none yet)."""

    def __init__(self, context: TrialContext):
        self.context = context
        self.results: list[dict] = []
        self.states: list[dict | None] = []
        self.weights_epochs: list[int | None] = []
        self.weights_values: list[float | None] = []

    def run(self, config: dict, state: dict | None = None, pause_at: tuple[int, ...] = ()) -> "TuneStandIn":
        context = self.context
        trial = trial_of(context, config)
        if state is not None:
            with tempfile.TemporaryDirectory() as folder:
                torch.save(state, Path(folder) / STATE_FILE)
                trial.load_checkpoint(folder)
        while True:
            result = trial.step()
            written = read_best_weights(context.study_uri)[0].get(trial.trial_id) if context.study_uri else None
            self.weights_epochs.append(written.epoch if written else None)
            self.weights_values.append(written.value if written else None)
            self.results.append(result)
            saved = None
            if result.get("should_checkpoint") or result["epoch"] in pause_at:
                with tempfile.TemporaryDirectory() as folder:
                    trial.save_checkpoint(folder)
                    saved = torch.load(Path(folder) / STATE_FILE, weights_only=True)
            self.states.append(saved)
            if result["done"]:
                break
        trial.stop()
        return self


@pytest.fixture(autouse=True)
def no_ray(monkeypatch, tmp_path):
    """Outside Tune a Trainable makes its log folder in Ray's default storage, and asks Ray for its node."""
    import ray.tune.trainable.trainable as tune_trainable

    monkeypatch.setattr(tune_trainable, "DEFAULT_STORAGE_PATH", str(tmp_path / "ray_results"))
    monkeypatch.setattr(trainable, "_node_id", lambda: "node-under-test")


def test_a_trials_info_lines_reach_its_workers_output_once_per_line(ray_session, context, tmp_path):
    """What `-v` streams to the study's console is the worker's output: its root logger has no handler and
    stays at WARNING, so a trial's INFO lines (the threads it trains on, a resumed trial's epoch, the dataset's
    decoding) never came out, even with -v. Each comes once, in the later trials of an actor Tune reuses too."""
    import logging

    import ray

    worker_env = {"OMP_NUM_THREADS": "1", "HOME": str(tmp_path)}  # HOME: outside Tune, log folders in ~/ray_results
    remote_trial = ray.remote(num_cpus=2, runtime_env={"env_vars": worker_env})(
        tune.with_parameters(TrialTrainable, context=context))  # as Tune runs a trial
    config = {"dataset": "folder", "model": "resnet50", "batch_size": 16}
    trial = remote_trial.remote(config=config)

    def logged(trainable: TrialTrainable) -> str:
        logging.getLogger("cxrnets.cache").info("decoded 7/9 images")
        sys.stderr.flush()
        return Path(os.readlink("/proc/self/fd/2")).read_text()  # Ray's worker-*.err of this actor

    try:
        assert ray.get(trial.reset.remote({**config, "lr": 1e-2}))  # Tune reuses the actor for the next trial
        output = ray.get(trial.__ray_call__.remote(logged))
    finally:
        ray.kill(trial)
    assert output.count("PyTorch trains on 2 threads, the CPUs the trial reserved") == 1, output
    assert output.count("decoded 7/9 images\n") == 1, output


# ------------------------------------------------------------------ the trial config

def test_train_config_merges_defaults_with_the_trial_config(context, tiny_data):
    config = context.train_config({"dataset": "folder", "model": "resnet50", "optimizer": "sgd", "lr": 0.01,
                                   "batch_size": 8, "momentum": 0.8, "weight_decay": 5e-4})
    assert isinstance(config, TrainConfig)
    assert (config.model, config.optimizer, config.lr, config.batch_size) == ("resnet50", "sgd", 0.01, 8)
    assert (config.momentum, config.weight_decay) == (0.8, 5e-4)
    # from the study's defaults
    assert (config.image_size, config.epochs, config.seed, config.device) == (32, 2, 0, "auto")
    assert config.cache_dir == context.defaults["cache_dir"]
    # from the context, not the config
    assert config.data_root == str(tiny_data)
    assert config.dataset_options == {} and config.pretrained is False
    config.validate()


def test_trial_config_wins_over_defaults_and_dimensions_left_out_keep_theirs(context):
    config = context.train_config({"dataset": "folder", "model": "alexnet", "image_size": 64, "seed": 3,
                                   "pretrained": True})
    assert (config.image_size, config.seed, config.pretrained) == (64, 3, True)
    # an Adam trial has no momentum or weight_decay in its config: the TrainConfig defaults apply
    adam = context.train_config({"dataset": "folder", "optimizer": "adam"})
    assert (adam.momentum, adam.weight_decay) == (TrainConfig.momentum, TrainConfig.weight_decay)


def test_trial_config_with_extra_tune_keys(context):
    """Tune and Optuna add keys of their own to a trial's config; they are not training options."""
    config = context.train_config({"dataset": "folder", "model": "resnet50", "lr": 1e-3, "__trial_index__": 4,
                                   "trial_id": "abc123", "experiment_tag": "4_lr=0.001", "pretrained": None,
                                   "some/nested": {"a": 1}})
    assert (config.model, config.lr, config.pretrained) == ("resnet50", 1e-3, False)
    assert not hasattr(config, "__trial_index__") and not hasattr(config, "experiment_tag")
    config.validate()


def test_dataset_options_per_dataset(tiny_data):
    context = TrialContext(data_roots={"folder": str(tiny_data)}, splits={}, defaults={},
                           dataset_options={"folder": {"some_option": 1}})
    assert context.train_config({"dataset": "folder"}).dataset_options == {"some_option": 1}


def test_worst_result_is_the_worst_value_of_the_study_metric():
    assert TrialContext({}, {}, {}, metric="val/f1_macro", mode="max").worst_result() == \
        {"val/f1_macro": 0.0, "diverged": 1}
    assert TrialContext({}, {}, {}, metric="val/loss", mode="min").worst_result() == \
        {"val/loss": math.inf, "diverged": 1}


# ------------------------------------------------------------------ TrialTrainable

def test_a_trial_trains_on_as_many_threads_as_it_reserved_cpus(ray_session, context, tmp_path):
    """`ray up` starts Ray with OMP_NUM_THREADS=1 exported (as may a user's shell), and Ray then leaves it to
    the workers: PyTorch would train a trial that reserved 2 CPUs on one thread. The trial takes its threads
    from its reservation instead, in every trial an actor Tune reuses runs."""
    import ray

    worker_env = {"OMP_NUM_THREADS": "1", "HOME": str(tmp_path)}  # HOME: outside Tune, log folders in ~/ray_results
    remote_trial = ray.remote(num_cpus=2, runtime_env={"env_vars": worker_env})(
        tune.with_parameters(TrialTrainable, context=context))  # as Tune runs a trial
    config = {"dataset": "folder", "model": "resnet50", "batch_size": 16}
    trial = remote_trial.remote(config=config)

    def threads(trainable: TrialTrainable) -> tuple[str, int]:
        return os.environ["OMP_NUM_THREADS"], torch.get_num_threads()

    try:
        assert ray.get(trial.__ray_call__.remote(threads)) == ("1", 2)
        assert ray.get(trial.reset.remote({**config, "lr": 1e-2}))  # Tune reuses the actor for the next trial
        assert ray.get(trial.__ray_call__.remote(threads)) == ("1", 2)
    finally:
        ray.kill(trial)


def test_every_epoch_is_a_result_and_full_states_follow_the_policy(study_context):
    """5 epochs, a full state every 2: a result at every epoch, the last one done; full states after epochs
    2 and 4 (none after the last), and the best weights of the best epoch, with a sidecar naming it."""
    tune = TuneStandIn(study_context).run({"dataset": "folder", "model": "resnet50", "optimizer": "adam",
                                           "lr": 1e-3, "batch_size": 16, "epochs": 5, "__trial_index__": 0})
    assert [r["epoch"] for r in tune.results] == [1, 2, 3, 4, 5]
    assert [r["done"] for r in tune.results] == [False] * 4 + [True]
    for result in tune.results:
        for key in ("train/loss", "val/loss", "val/accuracy", "val/precision_macro", "val/recall_macro",
                    "val/f1_macro", "epoch_seconds", "images_per_second"):
            assert math.isfinite(result[key]), key
        assert result["diverged"] == 0 and result["node_id"] == "node-under-test"
    assert [s is not None for s in tune.states] == [False, True, False, True, False]
    scores = [r["val/f1_macro"] for r in tune.results]
    for result, saved in zip(tune.results, tune.states):
        if saved is None:
            continue
        assert saved["epoch"] == result["epoch"]
        assert saved["config"]["model"] == "resnet50" and saved["config"]["lr"] == 1e-3
        assert {"model", "optimizer"} <= set(saved)
        so_far = scores[:result["epoch"]]
        assert saved["best_value"] == max(so_far) and saved["best_epoch"] == so_far.index(max(so_far)) + 1

    best_epoch = scores.index(max(scores)) + 1  # no tie-break: the first of tied epochs, as study.tables.best_epochs
    frame = pd.DataFrame({"trial_id": "default", "val/f1_macro": scores, "training_iteration": range(1, 6)})
    assert best_epochs(frame, "val/f1_macro", "max")["training_iteration"].item() == best_epoch
    weights, problems = read_best_weights(study_context.study_uri)
    assert problems == [] and list(weights) == ["default"]  # a Trainable outside Tune is trial "default"
    assert (weights["default"].epoch, weights["default"].value) == (best_epoch, max(scores))
    saved = torch.load(weights["default"].uri, weights_only=True)
    assert saved["epoch"] == best_epoch and "optimizer" not in saved  # weights only
    assert Path(weights["default"].uri).stat().st_size == weights["default"].bytes


def test_best_weights_are_written_before_each_result_after_which_the_trial_may_end(study_context):
    """5 epochs, a rung at epoch 2 and a full state every 4: when the results of epochs 2 (ASHA may stop the
    trial there), 4 (a full state names its best so far) and 5 (its last) come, the weights in the study
    folder are those of the best epoch so far; not before."""
    context = replace(study_context, checkpoint_policy=CheckpointPolicy(every=4, rung_epochs=(2,)))
    tune = TuneStandIn(context).run({"dataset": "folder", "model": "resnet50", "optimizer": "adam", "lr": 1e-3,
                                     "batch_size": 16, "epochs": 5})
    scores = [r["val/f1_macro"] for r in tune.results]
    best_so_far = [scores.index(max(scores[:epoch])) + 1 for epoch in range(1, 6)]
    assert [s is not None for s in tune.states] == [False, False, False, True, False]
    for epoch in (2, 4, 5):
        assert tune.weights_epochs[epoch - 1] == best_so_far[epoch - 1], (epoch, scores)
    assert tune.weights_epochs[0] is None  # epoch 1's best waits for the rung


def test_each_result_says_the_value_of_the_weights_written_so_far(study_context):
    """The driver deletes weights for --keep by what the trials have written (study.checkpoints.WeightsKeeper),
    not by the bests they reported and hold in memory: every result carries the value of the weights in the
    study folder when it comes."""
    context = replace(study_context, checkpoint_policy=CheckpointPolicy(every=4, rung_epochs=(2,)),
                      tie_break="val/loss")
    tune = TuneStandIn(context).run({"dataset": "folder", "model": "resnet50", "optimizer": "adam", "lr": 1e-3,
                                     "batch_size": 16, "epochs": 5})
    assert [r.get(WRITTEN_KEY) for r in tune.results] == tune.weights_values
    assert tune.weights_values[0] is None and tune.weights_values[-1] == max(r["val/f1_macro"] for r in tune.results)
    # and the tie-break metric at the written weights' epoch, by which --keep ranks trials tied on the metric
    losses = {r["epoch"]: r["val/loss"] for r in tune.results}
    assert [r.get(WRITTEN_TIE_KEY) for r in tune.results] == [None if epoch is None else losses[epoch]
                                                              for epoch in tune.weights_epochs]


def test_a_paused_trial_saves_a_full_state_only_when_paused(study_context):
    """Promoting ASHA pauses a trial at a rung: Tune asks for a full state then, and only then (every 5
    epochs would give none in 3), and it names a best whose weights are written."""
    context = replace(study_context, checkpoint_policy=CheckpointPolicy(every=5, rung_epochs=(2,)))
    tune = TuneStandIn(context).run({"dataset": "folder", "model": "resnet50", "optimizer": "sgd", "lr": 1e-3,
                                     "batch_size": 16, "momentum": 0.9, "epochs": 3}, pause_at=(2,))
    assert [s is not None for s in tune.states] == [False, True, False]
    paused = tune.states[1]
    assert paused["epoch"] == 2 and paused["optimizer"]["state"]
    assert paused["best_epoch"] == tune.weights_epochs[1]


def test_a_retried_trial_continues_from_its_full_state(study_context):
    """Tune hands a retried (or resumed) trial its last full state: training goes on from that epoch,
    with the best so far it carried (here unbeatable, so no new weights are written)."""
    config = {"dataset": "folder", "model": "resnet50", "optimizer": "sgd", "lr": 1e-3, "batch_size": 16,
              "momentum": 0.9, "epochs": 3}
    run = TrainingRun(study_context.train_config(config))
    run.train_epoch()
    tune = TuneStandIn(study_context).run(config, state={**run.checkpoint(), "best_value": 1.0, "best_epoch": 1})
    assert [r["epoch"] for r in tune.results] == [2, 3]
    # a full state after epoch 2 (every 2), from the restored optimizer state: SGD's momentum buffers came back
    assert [s is not None for s in tune.states] == [True, False]
    assert tune.states[0]["optimizer"]["state"] and tune.states[0]["best_value"] == 1.0
    assert read_best_weights(study_context.study_uri) == ({}, [])


@pytest.mark.parametrize("held", [["checkpoint_000001"], []])
def test_a_resumed_trial_whose_named_full_state_is_gone_continues_from_its_newest(study_context, held):
    """A driver killed after a newer full state landed and Tune deleted the older one, before its snapshot
    named the newer: the resume hands the trial the deleted state. It continues from the newest full state
    in its folder (training_iteration too), or with none there starts again, instead of failing at every try."""
    config = {"dataset": "folder", "model": "resnet50", "optimizer": "sgd", "lr": 1e-3, "batch_size": 16,
              "momentum": 0.9, "epochs": 3}
    run = TrainingRun(study_context.train_config(config))
    run.train_epoch()
    trial_folder = Path(study_context.study_uri) / "abcd1234_folder_resnet50"
    for name in held:
        (trial_folder / name).mkdir(parents=True)
        torch.save({**run.checkpoint(), "best_value": 1.0, "best_epoch": 1}, trial_folder / name / STATE_FILE)
    (trial_folder / "checkpoint_000002").mkdir(parents=True)  # a folder without a full state (an unfinished upload)
    named = tune.Checkpoint(str(trial_folder / "checkpoint_000000"))
    trial = trial_of(study_context, config)
    trial.restore(TrainingResult(checkpoint=named, metrics={"training_iteration": 1}))
    result = trial.train()
    trial.stop()
    assert (result["epoch"], result["training_iteration"]) == ((2, 2) if held else (1, 1))
    # the named folder is there again (a note inside), for Tune to delete when the trial writes a newer state
    assert (Path(named.path) / MISSING_STATE_NOTE).is_file() and not (Path(named.path) / STATE_FILE).exists()
    assert "is missing" in result[RESTORE_NOTE_KEY]  # for the study's console, which shows no trial's log


@pytest.mark.parametrize("held", [["checkpoint_000001"], []])
def test_a_resumed_trial_whose_named_full_state_is_truncated_continues_from_another(study_context, held, caplog):
    """A full state cut short (a partial copy or upload of the study) would fail the trial at every try and
    every resume: the trial continues from another full state in its folder, or with none there starts again,
    with a warning naming the file, which the first result carries for the study's console."""
    config = {"dataset": "folder", "model": "resnet50", "optimizer": "sgd", "lr": 1e-3, "batch_size": 16,
              "momentum": 0.9, "epochs": 3}
    run = TrainingRun(study_context.train_config(config))
    run.train_epoch()
    trial_folder = Path(study_context.study_uri) / "abcd1234_folder_resnet50"
    for name in ["checkpoint_000000", *held]:
        (trial_folder / name).mkdir(parents=True)
        torch.save({**run.checkpoint(), "best_value": 1.0, "best_epoch": 1}, trial_folder / name / STATE_FILE)
    named_state = trial_folder / "checkpoint_000000" / STATE_FILE
    named_state.write_bytes(named_state.read_bytes()[:4096])
    trial = trial_of(study_context, config)
    trial.restore(TrainingResult(checkpoint=tune.Checkpoint(str(named_state.parent)),
                                 metrics={"training_iteration": 1}))
    result = trial.train()
    trial.stop()
    assert (result["epoch"], result["training_iteration"]) == ((2, 2) if held else (1, 1))
    warned = [record.getMessage() for record in caplog.records if record.levelname == "WARNING"]
    assert len(warned) == 1 and str(named_state) in warned[0] and "not a readable checkpoint" in warned[0], warned
    assert warned[0].endswith("continuing from checkpoint_000001" if held else "starting the trial again"), warned
    assert result[RESTORE_NOTE_KEY] == warned[0]


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_diverging_trial_reports_the_worst_result_and_ends(study_context, optimizer):
    """lr 1e6: the loss becomes NaN while training, or (here, on 2 batches an epoch) the training loss
    stays finite and the model's validation outputs are NaN. Either way the trial reports the worst
    F1 once, with no full state and no weights, and ends instead of raising (which would make Tune retry it)."""
    tune = TuneStandIn(study_context).run({"dataset": "folder", "model": "resnet50", "optimizer": optimizer,
                                           "lr": 1e6, "batch_size": 16})
    assert tune.results == [{"epoch": 1, "val/f1_macro": 0.0, "diverged": 1, "status": "diverged", "done": True}]
    assert tune.states == [None]
    assert read_best_weights(study_context.study_uri) == ({}, [])


def test_nan_validation_outputs_are_divergence_not_a_crash(context):
    """cxrnets' evaluation names NaN outputs as divergence, which the trainable turns into a poor result."""
    run = TrainingRun(context.train_config({"dataset": "folder", "model": "resnet50", "lr": 1e-4,
                                            "batch_size": 16}))
    run.evaluate_split("val")  # a healthy model evaluates
    with torch.no_grad():
        next(run.model.parameters()).fill_(float("nan"))
    with pytest.raises(DivergedError):
        run.evaluate_split("val")


def test_split_is_the_studys(context):
    """Trials train on the split the driver made, not one of their own."""
    assert isinstance(context.splits["folder"], pd.DataFrame)
    data = trainable._prepared_data(context.train_config({"dataset": "folder"}), context.splits["folder"])
    assert list(data.split["relpath"]) == list(context.splits["folder"]["relpath"])
    assert list(data.split["split"]) == list(context.splits["folder"]["split"])
