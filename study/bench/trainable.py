"""Part 2, trainable: what the study's trainable runs each epoch against a bare PyTorch loop.

Described with the other parts in study.bench.cli's docstring.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from study.bench.common import Bench, bare_epoch, train_config
from study.bench.settings import Settings

# Dataset 1 (covid-radiography), 21,165 images, split 70/15/15: what the trainable's ratio is projected to.
PROJECTED_DATASET = ("covid-radiography", 21_165)


def _limit(data, train: int | None):
    """The same PreparedData with only the first `train` training and `train // 4` validation images."""
    if not train:
        return data
    split = data.split.copy()
    for name, keep in (("train", train), ("val", max(train // 4, 2))):
        rows = np.flatnonzero(split["split"].to_numpy() == name)
        split.iloc[rows[keep:], split.columns.get_loc("split")] = "unused"
    return replace(data, split=split)


def _policy(s: Settings):
    """The checkpoint policy the bench measures: the study's defaults unless --checkpoint-every/-minutes."""
    from study.checkpoints import CheckpointPolicy
    from study.settings import CHECKPOINT_EVERY, CHECKPOINT_MINUTES

    return CheckpointPolicy(s.checkpoint_every or CHECKPOINT_EVERY, s.checkpoint_minutes or CHECKPOINT_MINUTES)


def persist_full_state(run, weights, trial_folder: Path, index: int) -> tuple[float, float, int]:
    """What study.trainable and Tune's Trainable.save do with a full state, timed: save_checkpoint of the run's
    checkpoint and the trial's best so far into a temporary directory, then Ray's copy of it into the
    trial's folder in the study's storage (pyarrow.fs.copy_files, 64 MiB chunks,
    ray.train._internal.storage). Returns (save seconds, persist seconds, bytes)."""
    import pyarrow.fs

    from cxrnets.training import save_checkpoint
    from study.checkpoints import CHECKPOINT_PREFIX, STATE_FILE

    with tempfile.TemporaryDirectory() as directory:
        started = time.perf_counter()
        save_checkpoint({**run.checkpoint(), **weights.state()}, Path(directory) / STATE_FILE)
        saved = time.perf_counter()
        size = (Path(directory) / STATE_FILE).stat().st_size
        destination = trial_folder / f"{CHECKPOINT_PREFIX}{index:06d}"
        local = pyarrow.fs.LocalFileSystem()
        local.create_dir(str(destination))
        pyarrow.fs.copy_files(directory, str(destination), source_filesystem=local, destination_filesystem=local,
                              chunk_size=64 * 1024 * 1024)
        persisted = time.perf_counter()
    return saved - started, persisted - saved, size


def _keep_newest_state(trial_folder: Path, keep: str) -> None:
    """Tune keeps one full state (CheckpointConfig(num_to_keep=1)); its driver deletes the older ones,
    outside the trial's epoch (so untimed here)."""
    from study.checkpoints import CHECKPOINT_PREFIX

    for folder in trial_folder.glob(f"{CHECKPOINT_PREFIX}*"):
        if folder.name != keep:
            shutil.rmtree(folder, ignore_errors=True)


TRAINABLE_PARTS = ("train", "val", "weights", "state_save", "state_persist")


def warm_up(bare, trainable) -> None:
    """The same training warm-up for both runs (first-call allocations, kernel choices; with --compile on CUDA,
    compiling), then one evaluation pass of the trainable, whose epochs evaluate too: so that its first timed
    epoch does not compile the model's eval mode."""
    for run in (bare, trainable):
        bare_epoch(run, run.train_batches, limit=2)
    trainable.evaluate_split("val")


def bench_trainable(bench: Bench) -> None:
    """The trainable's epochs against the bare loop's, over `repeats` consecutive epochs of one run each.

    Each trainable epoch does what a study.trainable.TrialTrainable step does: train_epoch(), then
    TrialWeights.update (when the study metric improves, the weights: a copy unless they are written
    this epoch), TrialWeights.flush (the newest best's weights and their sidecar, written where
    CheckpointPolicy.weights_due says, here the run's last epoch, no rungs, and before each full state),
    then a full state when CheckpointPolicy.full_state_due says so (the run is a trial of `repeats`
    epochs: never after its last). The ratio is the
    throughput over the whole run (images over seconds, summed over the epochs), not a median: the
    checkpoint costs come in some epochs only.
    """
    import torch

    from cxrnets.training import TrainingRun, prepare_data
    from study import storage
    from study.checkpoints import CHECKPOINT_PREFIX, TrialWeights, sidecar_uri
    from study.settings import DEFAULTS, metric_mode

    s = bench.settings
    cache_dir = bench.workdir / "cache"
    size = s.trainable_image_size
    policy = _policy(s)
    metric = DEFAULTS["metric"]
    details = bench.details.setdefault("trainable", {
        "image_size": size, "batch_size": s.batch_size, "epochs": s.repeats, "metric": metric,
        "policy": {"checkpoint_every": policy.every, "checkpoint_minutes": policy.minutes}, "models": {}})
    data = None
    for model in s.models:
        config = train_config(s, model, size, cache_dir)
        data = data or _limit(prepare_data(config), s.limit_train)
        details["train_images"] = int(len(data.rows("train")))
        details["val_images"] = int(len(data.rows("val")))
        bare, trial = TrainingRun(config, data), TrainingRun(config, data)
        details["gpu_path"] = trial.gpu_path
        warm_up(bare, trial)
        # A study folder of the model's own in the work directory: <study>/weights/ and a trial folder.
        study_uri = str(bench.workdir / "trainable-storage" / model)
        trial_id = f"bench_{model}"
        trial_folder = Path(study_uri) / f"{trial_id}_{model}"
        weights = TrialWeights(study_uri, trial_id, metric, metric_mode(metric))
        samples: dict[str, list[float]] = {k: [] for k in ("bare_images", "bare_seconds", "trained_images",
                                                           "trainable_seconds", "bytes", *TRAINABLE_PARTS)}
        weights_writes, full_states, weights_bytes, state_bytes = 0, 0, 0, 0
        last_full_state = time.monotonic()  # as TrialTrainable: the clock starts with the run
        for repeat in range(s.repeats):
            # Alternate which goes first, so that a change in the machine's load hits both alike.
            for kind in (("bare", "trainable") if repeat % 2 == 0 else ("trainable", "bare")):
                if kind == "bare":
                    bare.train_batches.set_epoch(repeat)
                    images, seconds = bare_epoch(bare, bare.train_batches)
                    samples["bare_images"].append(images)
                    samples["bare_seconds"].append(seconds)
                    continue
                started = time.perf_counter()
                metrics = trial.train_epoch()
                epoch_seconds = time.perf_counter() - started
                full_state = policy.full_state_due(trial.epoch, s.repeats, time.monotonic() - last_full_state)
                write = full_state or policy.weights_due(trial.epoch, s.repeats)
                weights.update(trial, metrics, copy=not write)
                best = weights.flush() if write else None
                weights_seconds = time.perf_counter() - started - epoch_seconds
                written = 0
                if best is not None:
                    weights_writes += 1
                    weights_bytes = best.bytes + (storage.size_of(sidecar_uri(study_uri, trial_id)) or 0)
                    written += weights_bytes
                save = persist = 0.0
                if full_state:
                    save, persist, state_bytes = persist_full_state(trial, weights, trial_folder, full_states)
                    _keep_newest_state(trial_folder, f"{CHECKPOINT_PREFIX}{full_states:06d}")
                    last_full_state = time.monotonic()
                    full_states += 1
                    written += state_bytes
                trained = round(metrics["images_per_second"] * metrics["epoch_seconds"])
                samples["trained_images"].append(trained)
                samples["trainable_seconds"].append(epoch_seconds + weights_seconds + save + persist)
                samples["train"].append(metrics["epoch_seconds"])
                samples["val"].append(epoch_seconds - metrics["epoch_seconds"])
                samples["weights"].append(weights_seconds)
                samples["state_save"].append(save)
                samples["state_persist"].append(persist)
                samples["bytes"].append(written)
        # A run too short for the policy to write a full state (fewer than checkpoint_every epochs) still
        # needs its cost, for the breakdown and the projection: one more, outside the timed epochs.
        state_measured_apart = full_states == 0
        if state_measured_apart:
            state_save, state_persist, state_bytes = persist_full_state(trial, weights, trial_folder, 0)
        else:
            state_save = sum(samples["state_save"]) / full_states
            state_persist = sum(samples["state_persist"]) / full_states
        epochs = len(samples["train"])
        mean = {k: sum(samples[k]) / epochs for k in TRAINABLE_PARTS}
        bare_ips = sum(samples["bare_images"]) / sum(samples["bare_seconds"])
        trainable_ips = sum(samples["trained_images"]) / sum(samples["trainable_seconds"])
        train_ratio = sum(samples["trained_images"]) / sum(samples["train"]) / bare_ips
        bytes_per_epoch = sum(samples["bytes"]) / epochs
        bench.figure(f"trainable/bare_images_per_second/{model}", bare_ips)
        bench.figure(f"trainable/trainable_images_per_second/{model}", trainable_ips)
        bench.figure(f"trainable/ratio/{model}", trainable_ips / bare_ips)
        bench.figure(f"trainable/bytes_per_epoch/{model}", bytes_per_epoch)
        # What limits the ratio: each part of the trainable's epoch (mean over the run) as a share of it.
        epoch_total = sum(mean.values())
        projected = _projected_ratio(bare_ips, mean, details["val_images"], policy, state_save + state_persist)
        details["models"][model] = {
            "train_loop_vs_bare": round(train_ratio, 4),
            "seconds": {k: round(v, 3) for k, v in mean.items()},
            "shares": {k: round(v / epoch_total, 4) for k, v in mean.items()},
            "bytes_per_epoch": round(bytes_per_epoch),
            "weights_writes": weights_writes, "weights_bytes": weights_bytes,
            "weights_mb": round(weights_bytes / 1e6, 1),
            "weights_mb_per_s": round(weights_bytes / 1e6 / max(sum(samples["weights"]) / max(weights_writes, 1),
                                                                1e-9), 1),
            "full_states": full_states, "full_state_bytes": state_bytes, "full_state_mb": round(state_bytes / 1e6, 1),
            "full_state_seconds": {"save": round(state_save, 3), "persist": round(state_persist, 3)},
            "full_state_measured_apart": state_measured_apart,
            f"ratio_projected_{PROJECTED_DATASET[0]}": round(projected, 4),
            "samples": {k: [round(x, 4) for x in v] for k, v in samples.items()},
        }
        del bare, trial
        torch.manual_seed(s.seed)
    shutil.rmtree(bench.workdir / "trainable-storage", ignore_errors=True)


def _projected_ratio(bare_ips: float, mean: dict[str, float], n_val: int, policy, state_seconds: float) -> float:
    """The trainable's ratio on dataset 1 (70/15/15 split) at the same per-image costs: the bare loop's
    training time, plus the validation pass (grows with the images) and the checkpoint policy's cost
    per epoch (does not): the best weights in the same share of epochs as in the bench's run (every
    epoch of a short run improves: an upper bound for a long one), and a full state every
    `policy.every` epochs, or every epoch once an epoch takes `policy.minutes` (between the two, in
    proportion; "never after the last epoch" is left out: an upper bound again).
    The trainable's training loop is the bare loop's code plus a per-step loss read, so the bare loop's
    speed stands for it (one repetition of each differs by the machine's noise, +-10 % here)."""
    _, images = PROJECTED_DATASET
    train = 0.70 * images / bare_ips
    val = 0.15 * images * mean["val"] / max(n_val, 1)
    states_per_epoch = min(1.0, max(1 / policy.every, (train + val) / (60 * policy.minutes)))
    checkpoint = mean["weights"] + states_per_epoch * state_seconds
    return train / (train + val + checkpoint)


