"""Benchmark a study against its limits: the data path, the trainable, the orchestration, the search, the storage.

    python -m study.bench --quick                       # every part, about ten minutes on 2 CPU cores
    python -m study.bench                               # the full sizes (about an hour on 2 CPU cores)
    python -m study.bench --parts data,trainable --models alexnet --image-sizes 64,224 --repeats 3
    python -m study.bench --quick --device cuda --gpus-per-trial 0.5   # on a GPU machine

Five parts, all measured in one run on one machine:

1. data: images/s of decoding + preprocessing from the image files against reading the decode-once
   cache (cxrnets.cache + cxrnets.batches), at each image size, and the cache's images/s against the
   fastest model's training images/s (a bare loop: forward, backward, step).
2. trainable: per model, images/s of what the study's trainable runs each epoch (study.trainable:
   TrainingRun.train_epoch = training + validation metrics, then the checkpoint policy of
   study.checkpoints: the best weights whenever the trial's best epoch improves, and a full state,
   saved and copied into the study's storage as tune.report does, when the policy says it is due)
   against a bare PyTorch loop doing the same forward/backward/step on the same batches, over
   consecutive epochs of one run; and the bytes it writes per epoch.
3. orchestration: `python -m study.run` as a user runs it (a subprocess with its own Ray instance):
   seconds to the first reported epoch, and the study's wall time against the sum of its trials'
   own time (Tune's time_total_s) over the trial slots.
4. search: the full grid of a small space run to the maximum epochs without early stopping against
   the ASHA + Optuna study of the same space: epochs spent and best validation metric, as ratios.
   Both run one trial at a time, seeded, so that they repeat.
5. storage: the default study (the orchestration study's sizes) run as a user runs it, with local
   storage: the bytes it writes, the bytes it leaves (by kind: weights, full states, results,
   TensorBoard events, the rest), and `study.analyze`'s time and downloads; then the same study with
   --storage s3://... against a local S3 server (moto_server): the bytes left in the bucket, and the
   analysis's time and downloads from there against the local analysis.

The bench prints a table of every figure, its goal and whether it is met, and writes them all, with
the machine and the settings, to a JSON file (--out). Everything it writes besides lies in a
temporary work directory, deleted at the end unless --keep (checkpoints and weights reach gigabytes).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

log = logging.getLogger("study.bench")

PARTS = ("data", "trainable", "orchestration", "search", "storage")
MODELS = ("alexnet", "vgg11", "resnet50")
# Each goal: figure name pattern (a prefix; every figure that starts with it is checked), comparison, target.
GOALS = (
    ("data/cache_vs_decode", ">=", 10.0, "data path from the cache >= 10x decoding from files"),
    ("data/cache_vs_fastest_model", ">=", 20.0, "data path from the cache >= 20x the fastest model's training"),
    ("trainable/ratio", ">=", 0.95, "trainable / bare loop >= 0.95 for every model"),
    ("orchestration/overhead", "<=", 0.10, "orchestration overhead <= 10% of the study's wall time"),
    ("orchestration/first_epoch_seconds", "<=", 20.0, "first epoch reported <= 20 s after the command starts"),
    ("search/best_gap", "<=", 0.01, "ASHA + Optuna best within 0.01 of the full grid's best"),
    ("search/epochs_ratio", "<=", 1 / 3, "ASHA + Optuna spends <= 1/3 of the full grid's epochs"),
    ("search/best_gap_vs_optuna", "<=", 0.01, "the study's best within 0.01 of plain Optuna's on the same budget"),
    ("search/epochs_vs_optuna", "<=", 1.0, "the study spends no more epochs than plain Optuna with its pruner"),
    # Meant for the default study (the full preset); the quick and smoke presets print it all the same.
    ("storage/demo_bytes_left", "<=", 1.5e9, "the default study leaves <= 1.5 GB in its storage"),
    ("storage/s3_analysis_vs_local", "<=", 2.0, "the analysis of a study in S3 takes <= 2x the local one's time"),
)
# Dataset 1 (covid-radiography), 21,165 images, split 70/15/15: what the trainable's ratio is projected to.
PROJECTED_DATASET = ("covid-radiography", 21_165)


@dataclass
class Settings:
    """What one bench run measures; --quick, --smoke and the defaults are presets of it."""

    parts: tuple[str, ...] = PARTS
    dataset: str = "covid-chestxray-3class"
    data_root: str | None = None          # None: the embedded sample
    device: str = "auto"
    amp: bool = True
    channels_last: bool = True
    compile: bool = False
    seed: int = 0
    batch_size: int = 32
    # data
    image_sizes: tuple[int, ...] = (64, 128, 224)
    data_models: tuple[str, ...] = MODELS
    decode_images: int | None = None      # None: every image of the dataset
    decode_workers: int = field(default_factory=lambda: os.cpu_count() or 1)
    model_batches: int = 3                # timed training batches per model and size (after one warm-up)
    # trainable
    models: tuple[str, ...] = MODELS
    trainable_image_size: int = 64
    repeats: int = 3
    limit_train: int | None = None        # use only this many training (and limit_train // 4 validation) images
    # orchestration
    study_space: str = "demo"
    study_samples: int | None = None      # None: the space's own (the default study)
    study_epochs: int | None = None
    study_image_size: int | None = None
    num_cpus: int = field(default_factory=lambda: os.cpu_count() or 1)
    gpus_per_trial: float = 0.0
    # the checkpoint policy of the trainable part and of the storage part's studies (study.checkpoints)
    checkpoint_every: int | None = None       # None: the study's default (study.settings.CHECKPOINT_EVERY)
    checkpoint_minutes: float | None = None   # None: the study's default (study.settings.CHECKPOINT_MINUTES)
    # storage (the default study, as the orchestration part runs it, unless these say otherwise)
    storage_samples: int | None = None    # None: study_samples
    storage_epochs: int | None = None     # None: study_epochs
    s3_bucket: str = "cxr-bench"
    # search
    search_models: tuple[str, ...] = ("alexnet", "resnet50")
    search_optimizers: tuple[str, ...] = ("adam", "sgd")
    search_lrs: tuple[float, ...] = (1e-4, 1e-3, 1e-2)
    search_image_size: int = 64
    search_max_epochs: int = 9
    search_grace_period: int = 1
    search_reduction_factor: int = 3
    search_sampler: str = "tpe"
    search_samples: int | None = None     # None: as many trials as the grid has configurations
    search_metric: str = "val/f1_macro"   # the study's default metric
    timeout_s: float = 3600.0             # per study subprocess


PRESETS: dict[str, dict[str, Any]] = {
    "full": {},
    # About ten minutes on 2 idle CPU cores.
    "quick": dict(image_sizes=(64, 224), data_models=("alexnet",), model_batches=3, repeats=1,
                  study_samples=4, study_epochs=1, search_lrs=(1e-3, 1e-2), search_max_epochs=4,
                  search_reduction_factor=4),
    # The smallest run that still produces every figure (what the test runs): ResNet50 at 16 px.
    "smoke": dict(image_sizes=(16,), data_models=("resnet50",), model_batches=1, decode_images=16, batch_size=16,
                  models=("resnet50",), trainable_image_size=16, repeats=1, limit_train=32,
                  study_space="<smoke>", study_samples=2, study_epochs=1, study_image_size=16,
                  search_models=("resnet50",), search_optimizers=("adam",), search_lrs=(1e-4, 1e-3),
                  search_image_size=16, search_max_epochs=2, search_grace_period=1, search_reduction_factor=2,
                  # storage: one trial of two epochs with a full state after the first, so that the
                  # accounting sees a full state written and deleted
                  checkpoint_every=1, storage_samples=1, storage_epochs=2,
                  timeout_s=1200.0),
}


class Bench:
    """Figures, their details and the run's context, filled in part by part."""

    def __init__(self, settings: Settings, workdir: Path):
        self.settings = settings
        self.workdir = workdir
        self.figures: dict[str, float] = {}
        self.details: dict[str, Any] = {}
        self.part_seconds: dict[str, float] = {}
        self.load: dict[str, list[float]] = {}

    def figure(self, name: str, value: float) -> None:
        self.figures[name] = float(value)
        log.info("%s = %s", name, _fmt(value))


# ------------------------------------------------------------------ shared helpers

def _fmt(value: float) -> str:
    if value is None or not math.isfinite(value):
        return str(value)
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}" if abs(value) >= 0.01 else f"{value:.2g}"


def _data_root(settings: Settings) -> str:
    from cxrnets.data import SAMPLE_ROOT

    return str(Path(settings.data_root).expanduser().resolve()) if settings.data_root else str(SAMPLE_ROOT)


def _train_config(settings: Settings, model: str, image_size: int, cache_dir: Path):
    from cxrnets.training import TrainConfig

    return TrainConfig(dataset=settings.dataset, data_root=_data_root(settings), model=model,
                       batch_size=settings.batch_size, epochs=1, image_size=image_size, seed=settings.seed,
                       cache_dir=str(cache_dir), device=settings.device, amp=settings.amp,
                       channels_last=settings.channels_last, compile=settings.compile)


def _limit(data, train: int | None):
    """The same PreparedData with only the first `train` training and `train // 4` validation images."""
    if not train:
        return data
    split = data.split.copy()
    for name, keep in (("train", train), ("val", max(train // 4, 2))):
        rows = np.flatnonzero(split["split"].to_numpy() == name)
        split.iloc[rows[keep:], split.columns.get_loc("split")] = "unused"
    return replace(data, split=split)


def bare_epoch(run, batches, limit: int | None = None) -> tuple[int, float]:
    """The bare loop: forward, backward, step over `batches` with the run's model and optimizer; nothing else."""
    import torch

    from cxrnets.training import backward_and_step, synchronize

    model, optimizer, loss_fn, scaler = run.forward, run.optimizer, run.loss_fn, run.scaler
    model.train()
    images, started = 0, time.perf_counter()
    for step, (inputs, targets) in enumerate(batches):
        if limit is not None and step >= limit:
            break
        with torch.autocast(inputs.device.type, dtype=run.amp_dtype, enabled=run.amp_dtype is not None):
            loss = loss_fn(model(inputs), targets)
        backward_and_step(loss, optimizer, scaler)
        images += len(inputs)
    synchronize(run.device)
    return images, time.perf_counter() - started


def _machine(settings: Settings) -> dict[str, Any]:
    import optuna
    import ray
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory_gb = None
    try:
        memory_gb = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    from cxrnets.training import select_device

    device = select_device(settings.device)
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gb": memory_gb, "gpu": gpu, "device": str(device),
            "platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
            "ray": ray.__version__, "optuna": optuna.__version__, "torch_threads": torch.get_num_threads(),
            "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}


# ------------------------------------------------------------------ 1. data path

def bench_data(bench: Bench) -> None:
    import torch

    from cxrnets.batches import Batches
    from cxrnets.cache import build_cache
    from cxrnets.data import load_dataset
    from cxrnets.images import load_image
    from cxrnets.training import TrainingRun, prepare_data, select_device, synchronize

    s = bench.settings
    device = select_device(s.device)
    cache_dir = bench.workdir / "cache"
    index = load_dataset(s.dataset, _data_root(s))
    paths = index.paths()
    count = min(len(paths), s.decode_images or len(paths))
    details = bench.details.setdefault("data", {"images": count, "decode_workers": s.decode_workers, "sizes": {}})
    for size in s.image_sizes:
        # Decoding from the files, as a loader without the cache would: read, decode, resize, crop
        # (threads, like the cache builder), then the same float conversion, flip and normalisation.
        targets = index.targets()[:count]
        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=s.decode_workers) as pool:
            decoded = np.stack(list(pool.map(lambda path: load_image(path, size), paths[:count])))
        for _ in Batches(decoded, targets, np.arange(count), s.batch_size, device, train=True, seed=s.seed):
            pass
        synchronize(device)
        decode_seconds = time.perf_counter() - started
        decode_ips = count / decode_seconds

        started = time.perf_counter()
        cache = build_cache(index, size, cache_dir)
        build_seconds = time.perf_counter() - started
        images, cache_targets = cache.images, cache.index.targets()
        rows = np.arange(len(images))
        # Read the cache (a memmap) the way training does, repeating passes for at least half a second.
        read, passes, started = 0, 0, time.perf_counter()
        while passes < 2 or time.perf_counter() - started < 0.5:
            batches = Batches(images, cache_targets, rows, s.batch_size, device, train=True, seed=s.seed)
            batches.set_epoch(passes)
            for pixels, _ in batches:
                read += len(pixels)
            passes += 1
        synchronize(device)
        cache_ips = read / (time.perf_counter() - started)
        # The cache's own share: the uint8 rows gathered from the memmap, nothing else.
        gathered, started = 0, time.perf_counter()
        order = np.random.default_rng(s.seed).permutation(len(images))
        while gathered < 2 * len(images) or time.perf_counter() - started < 0.2:
            for begin in range(0, len(order), s.batch_size):
                gathered += len(images[order[begin:begin + s.batch_size]])
        uint8_ips = gathered / (time.perf_counter() - started)

        models = {}
        data = None
        for model in s.data_models:
            from cxrnets.models import MIN_IMAGE_SIZE

            if size < MIN_IMAGE_SIZE[model]:
                log.info("data: %s skipped at %d px (needs %d px)", model, size, MIN_IMAGE_SIZE[model])
                continue
            config = _train_config(s, model, size, cache_dir)
            data = data or prepare_data(config)
            run = TrainingRun(config, data)
            torch.manual_seed(s.seed)
            bare_epoch(run, run.train_batches, limit=1)  # warm-up: first-call allocations, kernel choices
            # model_batches timed batches (passes over the training rows again if it has fewer).
            images_done, seconds, left = 0, 0.0, s.model_batches
            while left > 0:
                done, spent = bare_epoch(run, run.train_batches, limit=left)
                images_done, seconds = images_done + done, seconds + spent
                left -= max(1, -(-done // s.batch_size))
            models[model] = images_done / seconds
            del run
        bench.figure(f"data/decode_images_per_second@{size}", decode_ips)
        bench.figure(f"data/cache_images_per_second@{size}", cache_ips)
        bench.figure(f"data/cache_vs_decode@{size}", cache_ips / decode_ips)
        for model, ips in models.items():
            bench.figure(f"data/model_train_images_per_second@{size}/{model}", ips)
        if models:
            fastest = max(models, key=models.get)
            bench.figure(f"data/cache_vs_fastest_model@{size}", cache_ips / models[fastest])
        else:
            fastest = None
        details["sizes"][str(size)] = {
            "decode_seconds": round(decode_seconds, 3), "cache_build_seconds": round(build_seconds, 3),
            "cache_decoded_images": cache.decoded, "cache_images_read": read, "fastest_model": fastest,
            "cache_uint8_gather_images_per_second": round(uint8_ips, 1),
            "models_images_per_second": {m: round(v, 2) for m, v in models.items()}}


# ------------------------------------------------------------------ 2. trainable overhead

def _policy(s: Settings):
    """The checkpoint policy the bench measures: the study's defaults unless --checkpoint-every/-minutes."""
    from study.checkpoints import CheckpointPolicy
    from study.settings import CHECKPOINT_EVERY, CHECKPOINT_MINUTES

    return CheckpointPolicy(s.checkpoint_every or CHECKPOINT_EVERY, s.checkpoint_minutes or CHECKPOINT_MINUTES)


def persist_full_state(run, weights, trial_folder: Path, index: int) -> tuple[float, float, int]:
    """What study.trainable and tune.report do with a full state, timed: torch.save of the run's
    checkpoint and the trial's best so far into a temporary directory, then Ray's copy of it into the
    trial's folder in the study's storage (pyarrow.fs.copy_files, 64 MiB chunks,
    ray.train._internal.storage). Returns (save seconds, persist seconds, bytes)."""
    import pyarrow.fs
    import torch

    from study.checkpoints import CHECKPOINT_PREFIX, STATE_FILE

    with tempfile.TemporaryDirectory() as directory:
        started = time.perf_counter()
        torch.save({**run.checkpoint(), **weights.state()}, Path(directory) / STATE_FILE)
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


def bench_trainable(bench: Bench) -> None:
    """The trainable's epochs against the bare loop's, over `repeats` consecutive epochs of one run each.

    Each trainable epoch does what study.trainable.train_trial does: train_epoch(), then
    TrialWeights.update (the best weights and their sidecar, written only when the study metric
    improves), then a full state when CheckpointPolicy.full_state_due says so (the run is a trial of
    `repeats` epochs: never after its last). The ratio is the throughput over the whole run (images
    over seconds, summed over the epochs), not a median: the checkpoint costs come in some epochs only.
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
        config = _train_config(s, model, size, cache_dir)
        data = data or _limit(prepare_data(config), s.limit_train)
        details["train_images"] = int(len(data.rows("train")))
        details["val_images"] = int(len(data.rows("val")))
        bare, trial = TrainingRun(config, data), TrainingRun(config, data)
        details["gpu_path"] = trial.gpu_path
        for run in (bare, trial):  # the same warm-up for both: first-call allocations, kernel choices
            bare_epoch(run, run.train_batches, limit=2)
        # A study folder of the model's own in the work directory: <study>/weights/ and a trial folder.
        study_uri = str(bench.workdir / "trainable-storage" / model)
        trial_id = f"bench_{model}"
        trial_folder = Path(study_uri) / f"{trial_id}_{model}"
        weights = TrialWeights(study_uri, trial_id, metric, metric_mode(metric))
        samples: dict[str, list[float]] = {k: [] for k in ("bare_images", "bare_seconds", "trained_images",
                                                           "trainable_seconds", "bytes", *TRAINABLE_PARTS)}
        weights_writes, full_states, weights_bytes, state_bytes = 0, 0, 0, 0
        last_full_state = time.monotonic()  # as train_trial: the clock starts with the run
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
                best = weights.update(trial, metrics)
                weights_seconds = time.perf_counter() - started - epoch_seconds
                written = 0
                if best is not None:
                    weights_writes += 1
                    weights_bytes = best.bytes + (storage.size_of(sidecar_uri(study_uri, trial_id)) or 0)
                    written += weights_bytes
                save = persist = 0.0
                if policy.full_state_due(trial.epoch, s.repeats, time.monotonic() - last_full_state):
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


# ------------------------------------------------------------------ studies as a user runs them

SMOKE_SPACE = """\
description: Bench smoke study (ResNet50 at 16 px on the embedded sample).
sampler: tpe
search:
  model: {choice: [resnet50]}
  optimizer: {choice: [adam, sgd]}
  lr: {loguniform: [1.0e-4, 1.0e-3]}
  batch_size: {value: 32}
  momentum: {value: 0.9, when: {optimizer: sgd}}
  pretrained: {value: false}
"""


@dataclass
class StudyRun:
    name: str
    study_uri: str
    wall_seconds: float
    first_epoch_seconds: float | None
    fit_seconds: float | None
    returncode: int
    log_file: str
    started: float = 0.0  # time.time() when the command started


# ------------------------------------------------------------------ the studies' command lines
# Built by these functions alone, which run nothing, so that a test can check every preset's
# command lines with study.run's own validation before anything runs (tests/study/test_bench.py).

def studies_storage(workdir: Path) -> str:
    """--storage of the studies the bench runs on local disk."""
    return str(workdir / "studies")


def s3_storage(s: Settings) -> str:
    """--storage of the storage part's S3 study (a bucket on the local S3 server)."""
    return f"s3://{s.s3_bucket}/studies"


def study_run_argv(s: Settings, workdir: Path, name: str, args: list[str], storage: str | None = None) -> list[str]:
    """The arguments of `python -m study.run` for one of the bench's studies: the part's own `args`,
    then where it goes (--storage, default: the work directory), its name, cache, seed and CPUs."""
    argv = [*args, "--storage", storage or studies_storage(workdir), "--name", name,
            "--cache-dir", str(workdir / "cache"), "--seed", str(s.seed), "--num-cpus", str(s.num_cpus)]
    if s.gpus_per_trial:
        argv += ["--gpus-per-trial", str(s.gpus_per_trial)]
    return argv


def study_space(s: Settings, workdir: Path) -> str:
    """--space of the orchestration and storage studies (the smoke space is written to the work directory)."""
    if s.study_space == "<smoke>":
        return str(_write_space(workdir, "smoke-space", SMOKE_SPACE))
    return s.study_space


def _default_study_args(s: Settings, workdir: Path, samples: int | None, epochs: int | None) -> list[str]:
    """The default study (the space's own settings) at the preset's sizes. (Fewer epochs than the
    space's grace period: study.run lowers the grace period to them.)"""
    args = ["--space", study_space(s, workdir)]
    for flag, value in (("--num-samples", samples), ("--max-epochs", epochs), ("--image-size", s.study_image_size)):
        if value is not None:
            args += [flag, str(value)]
    return args


def orchestration_args(s: Settings, workdir: Path) -> list[str]:
    return _default_study_args(s, workdir, s.study_samples, s.study_epochs)


def storage_args(s: Settings, workdir: Path) -> list[str]:
    """The storage part's study: the orchestration study's, with its own sizes and policy where set."""
    args = _default_study_args(s, workdir, s.storage_samples or s.study_samples, s.storage_epochs or s.study_epochs)
    if s.checkpoint_every is not None:
        args += ["--checkpoint-every", str(s.checkpoint_every)]
    if s.checkpoint_minutes is not None:
        args += ["--checkpoint-minutes", str(s.checkpoint_minutes)]
    return args


def search_args(s: Settings, workdir: Path) -> dict[str, list[str]]:
    """The search part's two studies: the full grid, then ASHA + Optuna over the same space."""
    from study.space import load_space

    grid_space = _write_space(workdir, "search-grid", search_space_text(s, "grid"))
    asha_space = _write_space(workdir, "search-asha", search_space_text(s, s.search_sampler))
    configs = len(load_space(grid_space).grid())
    samples = s.search_samples or configs
    # One trial at a time with every core: ASHA's decisions and Optuna's proposals then do not depend
    # on which trial finishes first, so the seeded run repeats.
    common = ["--image-size", str(s.search_image_size), "--max-epochs", str(s.search_max_epochs),
              "--metric", s.search_metric, "--cpus-per-trial", str(s.num_cpus), "--max-concurrent", "1"]
    # The full grid: ASHA with its grace period at the maximum epochs never stops a trial early.
    return {"search-grid": ["--space", str(grid_space), "--num-samples", str(configs),
                            "--grace-period", str(s.search_max_epochs), "--reduction-factor", "2", *common],
            "search-asha": ["--space", str(asha_space), "--num-samples", str(samples),
                            "--grace-period", str(s.search_grace_period),
                            "--reduction-factor", str(s.search_reduction_factor), *common]}


def planned_studies(s: Settings, workdir: Path) -> dict[str, list[str]]:
    """Every `python -m study.run` command line (its arguments) that the parts in s.parts would run,
    by study name; writes the space files they name into `workdir`, runs nothing."""
    planned: dict[str, list[str]] = {}
    if "orchestration" in s.parts:
        planned["orchestration"] = study_run_argv(s, workdir, "orchestration", orchestration_args(s, workdir))
    if "search" in s.parts:
        for name, args in search_args(s, workdir).items():
            planned[name] = study_run_argv(s, workdir, name, args)
    if "storage" in s.parts:
        args = storage_args(s, workdir)
        planned["storage-local"] = study_run_argv(s, workdir, "storage-local", args)
        planned["storage-s3"] = study_run_argv(s, workdir, "storage-s3", args, storage=s3_storage(s))
    return planned


def run_study_command(bench: Bench, name: str, args: list[str], storage: str | None = None,
                      env: dict[str, str] | None = None, watch: "FolderWatch | None" = None) -> StudyRun:
    """`python -m study.run ARGS` in a subprocess with its own Ray instance; watches for the first result.

    `storage`: the study's --storage (default: the work directory's studies/); `env`: variables added
    to the subprocess's environment (an S3 endpoint and its credentials, say); `watch`: polled while
    the study runs, and once after it ends. The study gets a private RAY_TMPDIR so that it starts its
    own Ray instance even where another process on this machine runs one, and RAY_ADDRESS is dropped
    for the same reason.
    """
    from study import storage as study_storage

    s = bench.settings
    argv = study_run_argv(s, bench.workdir, name, args, storage)
    study_uri = study_storage.join(study_storage.location(storage or studies_storage(bench.workdir)), name)
    log_file = bench.workdir / f"{name}.log"
    ray_tmp = Path(tempfile.mkdtemp(prefix="cxrb-"))  # short: Ray's socket paths must stay under 107 chars
    environment = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    environment.update(RAY_TMPDIR=str(ray_tmp), RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0",
                       PYTHONUNBUFFERED="1")
    environment["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(__file__).resolve().parent.parent),
                                                              environment.get("PYTHONPATH")]))
    environment.update(env or {})
    command = [sys.executable, "-m", "study.run", *argv]
    log.info("running %s", " ".join(command[1:]))
    # The first result: the first Parquet part of results/ (watched on local storage only).
    results_dir = None if study_storage.is_remote(study_uri) else Path(study_uri) / "results"
    first = None

    def first_part() -> float | None:
        if results_dir is None or not results_dir.is_dir():
            return None
        parts = [p for p in results_dir.iterdir() if p.suffix == ".parquet"]
        return min(p.stat().st_mtime for p in parts) - started if parts else None

    try:
        with log_file.open("w") as output:
            started = time.time()
            process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, env=environment,
                                       cwd=str(bench.workdir))
            while process.poll() is None:
                if first is None:
                    first = first_part()
                if watch is not None:
                    watch.maybe_poll()
                if time.time() - started > s.timeout_s:
                    process.kill()
                    process.wait()
                    raise RuntimeError(f"study {name} ran past {s.timeout_s:.0f} s; see {log_file}")
                time.sleep(0.05)
            wall = time.time() - started
            if watch is not None:
                watch.poll()
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    text = log_file.read_text(errors="replace")
    if process.returncode != 0:
        raise RuntimeError(f"study {name} failed (exit {process.returncode}); the end of {log_file}:\n"
                           + "\n".join(text.splitlines()[-30:]))
    fit = None
    for line in text.splitlines():
        if line.startswith("study finished in "):
            fit = float(line.split()[3])
    if first is None:
        first = first_part()
    return StudyRun(name, study_uri, wall, first, fit, process.returncode, str(log_file), started)


def _write_space(workdir: Path, name: str, text: str) -> Path:
    path = workdir / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _trial_summary(results) -> dict[str, Any]:
    per_trial = results.groupby("trial_id").agg(epochs=("training_iteration", "max"),
                                                seconds=("time_total_s", "max"))
    return {"trials": int(len(per_trial)), "epochs": int(per_trial["epochs"].sum()),
            "trial_seconds": float(per_trial["seconds"].sum()), "per_trial": per_trial}


# ------------------------------------------------------------------ 3. orchestration overhead

def bench_orchestration(bench: Bench) -> None:
    from study.results import read_results

    s = bench.settings
    args = orchestration_args(s, bench.workdir)
    study = run_study_command(bench, "orchestration", args)
    results = read_results(study.study_uri)
    if results.empty:
        raise RuntimeError(f"the orchestration study reported nothing; see {study.log_file}")
    summary = _trial_summary(results)
    cpus_per_trial = 1.0  # study.run's default
    slots = max(1, min(summary["trials"], int(s.num_cpus // cpus_per_trial)))
    overhead = 1 - summary["trial_seconds"] / (study.wall_seconds * slots)
    spans = _trial_spans(study.study_uri)
    spans[["start", "end"]] -= study.started  # seconds since the command started
    bench.figure("orchestration/first_epoch_seconds",
                 study.first_epoch_seconds if study.first_epoch_seconds is not None else float("nan"))
    bench.figure("orchestration/study_wall_seconds", study.wall_seconds)
    bench.figure("orchestration/trial_seconds_sum", summary["trial_seconds"])
    bench.figure("orchestration/overhead", overhead)
    # Where the rest of the wall time went (slot-seconds: seconds x trial slots, as the overhead counts them):
    # before the first trial started, after the last one ended, and slots idle in between.
    fit = study.fit_seconds
    first_start, last_end = float(spans["start"].min()), float(spans["end"].max())
    lost = {"before_first_trial": slots * first_start, "after_last_trial": slots * (study.wall_seconds - last_end),
            "idle_between": slots * (last_end - first_start) - summary["trial_seconds"]}
    bench.details["orchestration"] = {
        "command": f"python -m study.run {' '.join(args)} (+ --storage/--name/--cache-dir/--seed/--num-cpus)",
        "trials": summary["trials"], "epochs": summary["epochs"], "slots": slots,
        "fit_seconds": fit, "outside_fit_seconds": None if fit is None else round(study.wall_seconds - fit, 1),
        "fit_overhead": None if not fit else round(1 - summary["trial_seconds"] / (fit * slots), 4),
        "first_trial_started_s": round(first_start, 1), "last_trial_ended_s": round(last_end, 1),
        "lost_slot_seconds": {k: round(v, 1) for k, v in lost.items()},
        "lost_shares": {k: round(v / (slots * study.wall_seconds), 4) for k, v in lost.items()},
        "trial_spans_s": {row.trial_id: [round(row.start, 1), round(row.end, 1), row.model]
                          for row in spans.reset_index().itertuples()},
        "models": results.groupby("trial_id")["config/model"].first().value_counts().to_dict()
        if "config/model" in results else {},
        "log": study.log_file,
    }
    _drop_model_files(study.study_uri)


def _trial_spans(study_uri: str):
    """Each trial's start and end, in seconds since the epoch: it ended when the driver wrote its last
    result (the part file's time) and started time_total_s (Tune's clock of the trial) before that."""
    import pandas as pd
    import pyarrow.parquet as pq

    from study.results import RESULTS_DIR

    rows = []
    for part in (Path(study_uri) / RESULTS_DIR).glob("*.parquet"):
        table = pq.read_table(part, columns=["trial_id", "time_total_s"]).to_pylist()[0]
        rows.append({**table, "written": part.stat().st_mtime})
    frame = pd.DataFrame(rows).sort_values("written").groupby("trial_id").last()
    models = read_results_models(study_uri)
    return pd.DataFrame({"start": frame["written"] - frame["time_total_s"], "end": frame["written"],
                         "model": [models.get(t, "?") for t in frame.index]}, index=frame.index.rename("trial_id"))


def read_results_models(study_uri: str) -> dict[str, str]:
    from study.results import read_results

    results = read_results(study_uri)
    if "config/model" not in results:
        return {}
    return results.groupby("trial_id")["config/model"].first().to_dict()


def _drop_model_files(study_uri: str) -> None:
    """Free the disk: the best weights (AlexNet's ~0.23 GB, VGG11's ~0.5 GB) and any full state left
    (~0.7 GB, ~1.6 GB: the policy deletes them as trials end); results and logs stay."""
    from study import storage
    from study.checkpoints import WEIGHTS_DIR, delete_full_states

    for entry in storage.listing(study_uri):
        if entry.is_dir:
            delete_full_states(entry.uri)
    storage.delete(storage.join(study_uri, WEIGHTS_DIR))


# ------------------------------------------------------------------ 4. search efficiency

def search_space_text(s: Settings, sampler: str) -> str:
    def listing(values) -> str:
        return "[" + ", ".join(str(v) for v in values) + "]"

    lrs = "[" + ", ".join(f"{lr:.1e}" for lr in s.search_lrs) + "]"
    lines = [
        "description: Bench search-efficiency space (the full grid against ASHA + Optuna).",
        f"sampler: {sampler}",
        "search:",
        f"  model: {{choice: {listing(s.search_models)}}}",
        f"  optimizer: {{choice: {listing(s.search_optimizers)}}}",
        f"  lr: {{choice: {lrs}}}",
        f"  batch_size: {{value: {s.batch_size}}}",
    ]
    if "sgd" in s.search_optimizers:
        lines.append("  momentum: {value: 0.9, when: {optimizer: sgd}}")
    lines.append("  pretrained: {value: false}")
    return "\n".join(lines) + "\n"


def bench_search(bench: Bench) -> None:
    from study.results import read_results
    from study.settings import metric_mode
    from study.space import load_space
    from study.tables import best_epochs

    s = bench.settings
    studies = search_args(s, bench.workdir)
    configs = len(load_space(bench.workdir / "search-grid.yaml").grid())
    samples = s.search_samples or configs
    metric = s.search_metric
    mode = metric_mode(metric)
    grid = run_study_command(bench, "search-grid", studies["search-grid"])
    asha = run_study_command(bench, "search-asha", studies["search-asha"])
    outcome = {}
    for label, study in (("grid", grid), ("asha", asha)):
        results = read_results(study.study_uri)
        if results.empty:
            raise RuntimeError(f"the {label} study reported nothing; see {study.log_file}")
        summary = _trial_summary(results)
        best = best_epochs(results, metric, mode)
        top = best.iloc[0]
        # ASHA stops a trial only when its result is strictly worse than the rung's cutoff: ties pass.
        first = results[results["training_iteration"] == s.search_grace_period][metric]
        combos = results.groupby("trial_id")[["config/model", "config/optimizer", "config/lr"]].first()
        outcome[label] = {
            "trials": summary["trials"], "epochs": summary["epochs"], "best": float(top[metric]),
            "best_trial": {"model": top.get("config/model"), "optimizer": top.get("config/optimizer"),
                           "lr": float(top.get("config/lr")), "epoch": int(top["training_iteration"])},
            "distinct_configs": int(len(combos.drop_duplicates())),
            "at_grace_period": {"results": int(len(first)), "distinct_values": int(first.round(6).nunique()),
                                "most_common_value_count": int(first.round(6).value_counts().iloc[0])
                                if len(first) else 0},
            "trials_at_max_epochs": int((summary["per_trial"]["epochs"] >= s.search_max_epochs).sum()),
            "wall_seconds": round(study.wall_seconds, 1), "log": study.log_file,
        }
        _drop_model_files(study.study_uri)
    outcome["optuna"] = plain_optuna_search(bench, bench.workdir / "search-asha.yaml", samples)
    if outcome["grid"]["trials_at_max_epochs"] != outcome["grid"]["trials"]:
        log.warning("search: %d of the grid's %d trials stopped before %d epochs", outcome["grid"]["trials"]
                    - outcome["grid"]["trials_at_max_epochs"], outcome["grid"]["trials"], s.search_max_epochs)
    grid_best, asha_best = outcome["grid"]["best"], outcome["asha"]["best"]
    if mode == "min":  # a loss: the gap and the ratio still read "how far ASHA's best falls short"
        grid_best, asha_best = -grid_best, -asha_best
    bench.figure("search/grid_epochs", outcome["grid"]["epochs"])
    bench.figure("search/asha_epochs", outcome["asha"]["epochs"])
    bench.figure("search/epochs_ratio", outcome["asha"]["epochs"] / outcome["grid"]["epochs"])
    bench.figure("search/grid_best", outcome["grid"]["best"])
    bench.figure("search/asha_best", outcome["asha"]["best"])
    bench.figure("search/best_gap", grid_best - asha_best)
    bench.figure("search/best_ratio", outcome["asha"]["best"] / outcome["grid"]["best"]
                 if outcome["grid"]["best"] else float("nan"))
    # The peer a user would pick on one machine: plain Optuna, same space, budget and training.
    optuna_best = -outcome["optuna"]["best"] if mode == "min" else outcome["optuna"]["best"]
    bench.figure("search/optuna_epochs", outcome["optuna"]["epochs"])
    bench.figure("search/optuna_best", outcome["optuna"]["best"])
    bench.figure("search/epochs_vs_optuna", outcome["asha"]["epochs"] / outcome["optuna"]["epochs"])
    bench.figure("search/best_gap_vs_optuna", optuna_best - asha_best)
    bench.figure("search/wall_vs_optuna", outcome["asha"]["wall_seconds"] / outcome["optuna"]["wall_seconds"])
    bench.details["search"] = {
        "metric": metric, "configs": configs, "asha_samples": samples, "sampler": s.search_sampler,
        "max_epochs": s.search_max_epochs, "grace_period": s.search_grace_period,
        "reduction_factor": s.search_reduction_factor, "image_size": s.search_image_size, "mode": mode,
        "space": search_space_text(s, "grid"), **outcome,
    }


def plain_optuna_search(bench: Bench, space_file: Path, samples: int) -> dict[str, Any]:
    """The search part's space through Optuna alone, in this process: its TPE sampler (seeded, the
    space's cover_first points enqueued first, as the study does) and its SuccessiveHalvingPruner with
    the study's grace period and reduction factor, each epoch reported, `samples` trials, the same
    cxrnets training, split and seed as the study's trials. Returns epochs spent, the best epoch's
    metric (pruned trials included, as the study counts them) and wall time."""
    import optuna
    import torch

    from cxrnets.errors import DivergedError
    from cxrnets.training import TrainConfig, TrainingRun, prepare_data
    from study.settings import metric_mode
    from study.space import load_space

    s = bench.settings
    space = load_space(space_file)
    metric, mode = s.search_metric, metric_mode(s.search_metric)
    base = {"dataset": s.dataset, "data_root": _data_root(s), "image_size": s.search_image_size,
            "epochs": s.search_max_epochs, "seed": s.seed, "cache_dir": str(bench.workdir / "cache"),
            "device": s.device}
    torch.set_num_threads(s.num_cpus)  # as a study trial that reserves every core
    started = time.perf_counter()
    data = prepare_data(TrainConfig.from_dict({**base, "model": "resnet50"}))
    epochs, values = 0, []

    def objective(trial: optuna.Trial) -> float:
        nonlocal epochs
        constants = space(trial)  # define-by-run: suggests into trial.params, returns the constants
        run = TrainingRun(TrainConfig.from_dict({**base, **trial.params, **constants}), data)
        best = None
        for epoch in range(1, s.search_max_epochs + 1):
            try:
                value = run.train_epoch()[metric]
            except DivergedError:
                raise optuna.TrialPruned() from None
            epochs += 1
            values.append(value)
            best = value if best is None or (value > best if mode == "max" else value < best) else best
            trial.report(value, epoch)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return best

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        direction="maximize" if mode == "max" else "minimize", sampler=space.make_sampler(s.seed),
        pruner=optuna.pruners.SuccessiveHalvingPruner(min_resource=s.search_grace_period,
                                                      reduction_factor=s.search_reduction_factor))
    for point in space.first_points()[:samples]:
        study.enqueue_trial(point)
    study.optimize(objective, n_trials=samples)
    pruned = sum(t.state == optuna.trial.TrialState.PRUNED for t in study.trials)
    best = max(values) if mode == "max" else min(values)
    log.info("plain Optuna: %d trials (%d pruned), %d epochs, best %s %.3f", len(study.trials), pruned, epochs,
             metric, best)
    return {"trials": len(study.trials), "pruned": pruned, "epochs": epochs, "best": float(best),
            "wall_seconds": round(time.perf_counter() - started, 1),
            "pruner": f"SuccessiveHalvingPruner(min_resource={s.search_grace_period}, "
                      f"reduction_factor={s.search_reduction_factor})"}


# ------------------------------------------------------------------ 5. storage

STORAGE_KINDS = ("weights", "checkpoints", "results", "tensorboard", "other")


def file_kind(relative: str) -> str:
    """What a file of a study folder (its path relative to the folder) is, for the bytes-by-kind split:
    weights (weights/: best weights and sidecars), checkpoints (full states: a trial folder's
    checkpoint_*/), results (results/ and trial_events/ Parquet parts, Tune's per-trial result.json and
    progress.csv), tensorboard (events.out.tfevents.*), other (study.json, the split, Tune's experiment
    state, params, ...)."""
    from study.checkpoints import CHECKPOINT_PREFIX, WEIGHTS_DIR
    from study.results import EVENTS_DIR, RESULTS_DIR

    parts = relative.split("/")
    if parts[0] == WEIGHTS_DIR:
        return "weights"
    if any(part.startswith(CHECKPOINT_PREFIX) for part in parts[:-1]):
        return "checkpoints"
    if parts[0] in (RESULTS_DIR, EVENTS_DIR) or parts[-1] in ("result.json", "progress.csv"):
        return "results"
    if parts[-1].startswith("events.out.tfevents"):
        return "tensorboard"
    return "other"


def bytes_by_kind(uri: str) -> dict[str, int]:
    """Bytes of every file under a study folder (local or object storage), by file_kind."""
    from study import storage

    found = dict.fromkeys(STORAGE_KINDS, 0)
    prefix = uri.rstrip("/") + "/"
    for entry in storage.listing(uri, recursive=True):
        if not entry.is_dir and entry.uri.startswith(prefix):
            found[file_kind(entry.uri[len(prefix):])] += entry.size or 0
    return found


class FolderWatch:
    """Samples a local study folder while its study runs: its size over time, and the bytes written.

    Bytes written, counted from what each poll (every `interval` s) sees, by kind of file:
    - weights/: every distinct (path, mtime, size) once. A weights file or sidecar appears complete
      (written beside as *.tmp, then renamed; the .tmp files are not counted), and each new best
      replaces it: each version seen is one write.
    - everything else: each path once, at the largest size seen. A full state is copied by Tune
      straight into its checkpoint_NNNNNN/ folder (a poll may see it half written; its largest size
      is the whole file) and never rewritten under the same name; results parts are written once;
      TensorBoard events and Tune's progress files only grow.
    Limits: a file that lives less than a poll interval is missed. A full state lives for at least an
    epoch, a weights version until the trial's next improvement, or, for a trial's last improvement,
    until the trial ends: WeightsKeeper then deletes the weights of a trial outside its cell's --keep
    best within a fraction of a second, so these are often missed (measured: --quick's 4 one-epoch
    trials, 1 of 4 weights files missed, 515 MB of 1.49 GB). A full state deleted before a poll saw
    it whole counts what was seen; files Tune rewrites in place (its experiment state, every few
    seconds) count once, at their largest. So this is a lower bound on the bytes that reached the disk;
    weights_written() gives the weights' bytes without the polling's blind spot.
    """

    def __init__(self, uri: str, interval: float = 0.2):
        self.uri, self.interval = uri, interval
        self.last_poll = -math.inf
        self.versions: set[tuple[str, int, int]] = set()  # weights/: (path, mtime_ns, size)
        self.largest: dict[str, int] = {}                  # every other file: the largest size seen
        self.samples: list[tuple[float, int]] = []         # (time.time(), folder bytes)
        self.polls = self.failed_polls = 0
        self.seconds = 0.0                                  # spent polling

    def maybe_poll(self) -> None:
        if time.monotonic() - self.last_poll >= self.interval:
            self.poll()

    def poll(self) -> None:
        from study import storage

        self.last_poll = started = time.monotonic()
        try:
            entries = storage.listing(self.uri, recursive=True)
        except OSError:  # a folder deleted while it was listed (a full state, say): the next poll sees the rest
            self.failed_polls += 1
            return
        total = 0
        prefix = self.uri.rstrip("/") + "/"
        for entry in entries:
            if entry.is_dir:
                continue
            total += entry.size
            relative = entry.uri.removeprefix(prefix)
            if relative.endswith(".tmp"):
                continue
            if file_kind(relative) == "weights":
                self.versions.add((relative, entry.mtime_ns or 0, entry.size))
            else:
                self.largest[relative] = max(self.largest.get(relative, 0), entry.size)
        self.samples.append((time.time(), total))
        self.polls += 1
        self.seconds += time.monotonic() - started

    @property
    def peak_bytes(self) -> int:
        return max((size for _, size in self.samples), default=0)

    def written(self) -> dict[str, int]:
        found = dict.fromkeys(STORAGE_KINDS, 0)
        for _, _, size in self.versions:
            found["weights"] += size
        for relative, size in self.largest.items():
            found[file_kind(relative)] += size
        return found

    def weights_sizes(self) -> dict[str, int]:
        """Each trial's weights file (weights/<trial id>.pt) at the largest size seen, by trial id."""
        from study.checkpoints import WEIGHTS_DIR

        sizes: dict[str, int] = {}
        for relative, _, size in self.versions:
            folder, _, name = relative.partition("/")
            if folder == WEIGHTS_DIR and name.endswith(".pt"):
                sizes[name[:-3]] = max(sizes.get(name[:-3], 0), size)
        return sizes

    def series(self, since: float, points: int = 100) -> list[list[float]]:
        """(seconds since `since`, MB) at most `points` samples, evenly picked, with the peak among them."""
        step = max(1, math.ceil(len(self.samples) / points))
        picked = self.samples[::step]
        if self.samples:
            peak = max(self.samples, key=lambda sample: sample[1])
            picked = sorted({*picked, peak, self.samples[-1]})
        return [[round(when - since, 1), round(size / 1e6, 1)] for when, size in picked]


def weights_written(results, metric: str, mode: str, sizes: dict[str, int]) -> tuple[int, dict[str, int]]:
    """The bytes of best weights a study wrote, without polling's blind spot: a trial writes its weights
    at each epoch whose study metric strictly improves on its best so far (study.checkpoints.improves,
    TrialWeights.update's own rule; a diverged epoch writes nothing), counted from the results table,
    each at the size of that trial's weights file as seen (`sizes`, by trial id), else at the median
    size of its model's files seen. Returns (bytes, writes by trial id); sidecars are left out."""
    from study.checkpoints import improves

    if results.empty or metric not in results:
        return 0, {}
    results = results.sort_values(["trial_id", "training_iteration"])
    models = results.groupby("trial_id")["config/model"].first().to_dict() if "config/model" in results else {}
    by_model: dict[str, list[int]] = {}
    for trial_id, size in sizes.items():
        by_model.setdefault(str(models.get(trial_id)), []).append(size)
    diverged = results["diverged"].fillna(0) > 0 if "diverged" in results else None
    total, writes = 0, {}
    for trial_id, rows in results.groupby("trial_id"):
        best, count = None, 0
        for index, value in rows[metric].items():
            if diverged is not None and diverged[index]:
                continue
            if improves(None if value is None else float(value), best, mode):
                best, count = float(value), count + 1
        writes[trial_id] = count
        same_model = by_model.get(str(models.get(trial_id)), [])
        size = sizes.get(trial_id) or (int(np.median(same_model)) if same_model else 0)
        total += count * size
    return total, writes


def _analysis(bench: Bench, study_uri: str, label: str) -> dict[str, Any]:
    """`python -m study.analyze STUDY --out DIR`, in this process (study.analyze.analyze), timed."""
    from study.analysis.reading import cell_columns
    from study.analyze import analyze

    s = bench.settings
    out = bench.workdir / f"analysis-{label}"
    started = time.perf_counter()
    analysis = analyze(study_uri, out=out, cache_dir=str(bench.workdir / "cache"), device=s.device)
    seconds = time.perf_counter() - started
    trials = cell_columns(analysis.trials, analysis.study.settings)
    cells = len({*zip(trials["dataset"], trials["model"])})
    return {"seconds": seconds, "downloaded_bytes": analysis.downloaded_bytes, "cells": cells,
            "top_k": analysis.top_k, "evaluated": len(analysis.selected),
            "evaluated_weights_bytes": sum(selected.candidate.weights.bytes for selected in analysis.selected),
            "notes": list(analysis.notes), "out": str(out)}


def bench_storage(bench: Bench) -> None:
    """The default study's storage: bytes written and left, locally and in S3, and the analysis's
    time and downloads from each (see the module's docstring)."""
    from study import storage
    from study.local_s3 import LocalS3Server
    from study.results import read_results
    from study.settings import load_settings

    s = bench.settings
    args = storage_args(s, bench.workdir)
    details = bench.details.setdefault("storage", {})
    details["command"] = (f"python -m study.run {' '.join(args)} (+ --storage/--name/--cache-dir/--seed/"
                          "--num-cpus)")
    # Local storage, watched while it runs.
    name = "storage-local"
    watch = FolderWatch(storage.join(storage.location(studies_storage(bench.workdir)), name))
    study = run_study_command(bench, name, args, watch=watch)
    results = read_results(study.study_uri)
    settings = load_settings(study.study_uri)
    left, written = bytes_by_kind(study.study_uri), watch.written()
    seen_weights = written["weights"]
    written["weights"], writes = weights_written(results, settings.metric, settings.mode, watch.weights_sizes())
    bench.figure("storage/study_wall_seconds", study.wall_seconds)
    bench.figure("storage/written_bytes", sum(written.values()))
    bench.figure("storage/written_weights_bytes", written["weights"])
    bench.figure("storage/written_weights_bytes_seen", seen_weights)
    bench.figure("storage/written_checkpoints_bytes", written["checkpoints"])
    bench.figure("storage/peak_bytes", watch.peak_bytes)
    bench.figure("storage/demo_bytes_left", sum(left.values()))
    for kind in STORAGE_KINDS:
        bench.figure(f"storage/bytes_left_{kind}", left[kind])
    details["local"] = {
        "study": study.study_uri, "log": study.log_file, "trials": int(results["trial_id"].nunique())
        if len(results) else 0, "epochs": int(len(results)), "written": written, "left": left,
        "peak_bytes": watch.peak_bytes, "polls": watch.polls, "failed_polls": watch.failed_polls,
        "polling_seconds": round(watch.seconds, 2), "mb_over_time": watch.series(study.started),
        "weights_versions_seen": len(watch.versions), "weights_written_seen": seen_weights,
        "weights_writes": writes}
    # The analysis, locally: first (cold: its imports), and again after the S3 one (warm); the faster counts.
    local = _analysis(bench, study.study_uri, "local")
    details["local"]["analysis"] = local
    bench.figure("storage/local_analysis_downloaded_bytes", local["downloaded_bytes"])
    if shutil.which("moto_server") is None:
        reason = "moto_server is not installed (pip install \"moto[server]\"): no S3 figures"
        log.warning("storage: S3 half skipped: %s", reason)
        details["s3_skipped"] = reason
        bench.figure("storage/local_analysis_seconds", local["seconds"])
        _drop_model_files(study.study_uri)
        return
    downloads = bench.workdir / "cache" / "downloads"  # where the analysis caches what it downloads
    with LocalS3Server(log_file=bench.workdir / "moto.log") as server:
        server.create_bucket(s.s3_bucket)
        s3 = run_study_command(bench, "storage-s3", args, storage=s3_storage(s), env=server.env())
        with server.environment():
            left_s3 = bytes_by_kind(s3.study_uri)
            shutil.rmtree(downloads, ignore_errors=True)  # nothing cached: the analysis downloads what it needs
            remote = _analysis(bench, s3.study_uri, "s3")
            files = [p for p in downloads.iterdir() if p.is_file() and not p.name.endswith(".part")] \
                if downloads.is_dir() else []
    # Note: moto serves a ranged GET in time proportional to the whole object, and study.storage.download
    # reads in 8 MiB ranges: measured here, a 250 MB object took 4.4 s in 8 MiB reads, 1.0 s in 64 MiB
    # reads, 0.4 s in one. Against moto the S3 analysis's time is mostly that; real S3 serves ranges in
    # time proportional to the range.
    warm = _analysis(bench, study.study_uri, "local-again")
    local_seconds = min(local["seconds"], warm["seconds"])
    bench.figure("storage/local_analysis_seconds", local_seconds)
    bench.figure("storage/s3_study_wall_seconds", s3.wall_seconds)
    bench.figure("storage/s3_bytes_left", sum(left_s3.values()))
    bench.figure("storage/s3_analysis_seconds", remote["seconds"])
    bench.figure("storage/s3_analysis_vs_local", remote["seconds"] / local_seconds)
    bench.figure("storage/s3_analysis_downloaded_bytes", remote["downloaded_bytes"])
    bench.figure("storage/s3_downloaded_files", len(files))
    # What the analysis may download: one weights file per evaluated trial, at most cells x top-k.
    bench.figure("storage/s3_max_files", remote["cells"] * remote["top_k"])
    bench.figure("storage/s3_downloaded_vs_evaluated_bytes", remote["downloaded_bytes"]
                 / remote["evaluated_weights_bytes"] if remote["evaluated_weights_bytes"] else float("nan"))
    details["local"]["analysis_again"] = warm
    details["s3"] = {"study": s3.study_uri, "log": s3.log_file, "left": left_s3, "analysis": remote,
                     "downloaded_files": sorted(p.name for p in files)}
    _drop_model_files(study.study_uri)


# ------------------------------------------------------------------ goals, table, main

def check_goals(figures: dict[str, float]) -> list[dict[str, Any]]:
    checked = []
    for prefix, op, target, text in GOALS:
        for name, value in figures.items():
            if name == prefix or name.startswith(prefix + "@") or name.startswith(prefix + "/"):
                met = math.isfinite(value) and (value >= target if op == ">=" else value <= target)
                checked.append({"figure": name, "value": value, "goal": f"{op} {_fmt(target)}", "met": met,
                                "description": text})
    return checked


def render_table(figures: dict[str, float], goals: list[dict[str, Any]]) -> str:
    by_figure = {goal["figure"]: goal for goal in goals}
    rows = [("part", "figure", "value", "goal", "met")]
    for name, value in figures.items():
        part, _, rest = name.partition("/")
        goal = by_figure.get(name)
        rows.append((part, rest, _fmt(value), goal["goal"] if goal else "",
                     ("yes" if goal["met"] else "NO") if goal else ""))
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    lines = ["| " + " | ".join(cell.ljust(w) for cell, w in zip(row, widths)) + " |" for row in rows]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def _csv(kind: Callable[[str], Any]) -> Callable[[str], tuple]:
    def parse(text: str) -> tuple:
        return tuple(kind(item.strip()) for item in text.split(",") if item.strip())

    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m study.bench", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Presets (a flag given on the command line wins over the preset):\n"
               + "\n".join(f"  {name}: {values or 'the defaults below'}" for name, values in PRESETS.items()))
    add = parser.add_argument
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="small sizes: about ten minutes on 2 CPU cores")
    size.add_argument("--smoke", action="store_true", help="the smallest sizes that still give every figure "
                      "(ResNet50 at 16 px; what the test runs): a few minutes")
    d = Settings()
    add("--parts", type=_csv(str), default=None, help=f"comma-separated parts to run (default: {','.join(PARTS)})")
    add("--models", type=_csv(str), default=None,
        help=f"models of the trainable part (default: {','.join(d.models)})")
    add("--data-models", type=_csv(str), default=None,
        help=f"models whose training speed the data part compares with (default: {','.join(d.data_models)})")
    add("--image-sizes", type=_csv(int), default=None,
        help=f"image sizes of the data part (default: {','.join(map(str, d.image_sizes))})")
    add("--trainable-image-size", type=int, default=None,
        help=f"image size of the trainable part (default: {d.trainable_image_size})")
    add("--repeats", type=int, default=None, help=f"repetitions of each trainable measurement; the median "
        f"is reported (default: {d.repeats})")
    add("--model-batches", type=int, default=None,
        help=f"timed training batches per model and size in the data part (default: {d.model_batches})")
    add("--decode-images", type=int, default=None, help="images decoded per size in the data part "
        "(default: every image of the dataset)")
    add("--batch-size", type=int, default=None, help=f"batch size everywhere (default: {d.batch_size})")
    add("--dataset", default=None, help=f"dataset of the data and trainable parts (default: {d.dataset})")
    add("--data-root", default=None, help="where that dataset lies (default: the embedded sample)")
    add("--device", default=None, help="auto (CUDA if present), cpu, cuda, cuda:1 (default: auto)")
    add("--no-amp", action="store_true", help="disable mixed precision on CUDA")
    add("--no-channels-last", action="store_true", help="disable channels-last memory format on CUDA")
    add("--compile", action="store_true", help="torch.compile the models (CUDA only)")
    add("--study-space", default=None, help="space of the orchestration study (default: demo, the default "
        "study's)")
    add("--study-samples", type=int, default=None,
        help="trials of the orchestration study (default: the space's own; --quick: 4)")
    add("--study-epochs", type=int, default=None,
        help="max epochs of the orchestration study (default: the space's own; --quick: 1)")
    add("--search-models", type=_csv(str), default=None,
        help=f"models of the search space (default: {','.join(d.search_models)})")
    add("--search-lrs", type=_csv(float), default=None,
        help=f"learning rates of the search space (default: {','.join(map(str, d.search_lrs))})")
    add("--search-max-epochs", type=int, default=None, help=f"max epochs of the search part (default: "
        f"{d.search_max_epochs}; --quick: {PRESETS['quick']['search_max_epochs']})")
    add("--search-grace-period", type=int, default=None,
        help=f"ASHA grace period of the search part (default: {d.search_grace_period})")
    add("--search-reduction-factor", type=int, default=None,
        help=f"ASHA reduction factor of the search part (default: {d.search_reduction_factor})")
    add("--search-sampler", choices=("tpe", "random", "grid"), default=None,
        help=f"Optuna sampler of the ASHA study (default: {d.search_sampler})")
    add("--search-metric", default=None, help="validation metric of the search part's studies (default: "
        f"{d.search_metric}, the study's; val/loss separates configurations that all predict the majority class)")
    add("--search-samples", type=int, default=None,
        help="trials of the ASHA study (default: as many as the grid's configurations)")
    add("--checkpoint-every", type=int, default=None, help="epochs between two full states in the trainable part "
        "and the storage part's studies (default: the study's, 5; --smoke: 1)")
    add("--checkpoint-minutes", type=float, default=None, help="or minutes, whichever comes first (default: the "
        "study's, 15)")
    add("--num-cpus", type=int, default=None, help="CPUs of each study's Ray instance (default: all)")
    add("--gpus-per-trial", type=float, default=None, help="GPUs per trial in the studies (default: 0)")
    add("--seed", type=int, default=None, help="seed of every part (default: 0)")
    add("--out", default="bench.json", help="JSON file of every figure (default: bench.json)")
    add("--workdir", default=None, help="work directory (default: a new temporary directory)")
    add("--keep", action="store_true", help="keep the work directory (study logs, results; no checkpoints or "
        "weights)")
    return parser


def settings_from_args(args: argparse.Namespace) -> tuple[Settings, str]:
    preset = "smoke" if args.smoke else "quick" if args.quick else "full"
    settings = replace(Settings(), **PRESETS[preset])
    # every flag named like a Settings field overrides the preset when given (the switches come after)
    given = {f.name: getattr(args, f.name) for f in fields(Settings)
             if f.name not in ("amp", "channels_last", "compile") and getattr(args, f.name, None) is not None}
    settings = replace(settings, **given)
    if args.no_amp:
        settings.amp = False
    if args.no_channels_last:
        settings.channels_last = False
    if args.compile:
        settings.compile = True
    validate(settings)
    return settings, preset


def validate(s: Settings) -> None:
    from cxrnets.errors import CxrError
    from cxrnets.models import MIN_IMAGE_SIZE

    unknown = set(s.parts) - set(PARTS)
    if unknown or not s.parts:
        raise CxrError(f"--parts {','.join(s.parts)}: choose from {','.join(PARTS)}")
    for flag, models in (("--models", s.models), ("--data-models", s.data_models),
                         ("--search-models", s.search_models)):
        bad = [m for m in models if m not in MODELS]
        if bad or not models:
            raise CxrError(f"{flag} {','.join(models)}: choose from {','.join(MODELS)}")
    for model in s.models:
        if s.trainable_image_size < MIN_IMAGE_SIZE[model]:
            raise CxrError(f"--trainable-image-size {s.trainable_image_size} is too small for {model} "
                           f"(needs {MIN_IMAGE_SIZE[model]} px)")
    for model in s.search_models:
        if s.search_image_size < MIN_IMAGE_SIZE[model]:
            raise CxrError(f"the search part's image size {s.search_image_size} is too small for {model}")
    for name in ("repeats", "model_batches", "batch_size", "search_max_epochs", "search_grace_period", "num_cpus"):
        if getattr(s, name) < 1:
            raise CxrError(f"--{name.replace('_', '-')} must be at least 1")
    for name in ("study_samples", "study_epochs", "study_image_size", "storage_samples", "storage_epochs",
                 "checkpoint_every", "search_samples"):
        if getattr(s, name) is not None and getattr(s, name) < 1:
            raise CxrError(f"--{name.replace('_', '-')} must be at least 1")
    if s.checkpoint_minutes is not None and not s.checkpoint_minutes > 0:
        raise CxrError("--checkpoint-minutes must be above 0")
    from study.settings import METRICS

    if s.search_metric not in METRICS:
        raise CxrError(f"--search-metric {s.search_metric}: choose one of {', '.join(METRICS)}")
    if s.search_grace_period > s.search_max_epochs:
        raise CxrError("--search-grace-period must not exceed --search-max-epochs")
    if any(size < 1 for size in s.image_sizes) or not s.image_sizes:
        raise CxrError("--image-sizes must be positive")


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    from cxrnets.errors import CxrError

    args = build_parser().parse_args(argv)
    try:
        settings, preset = settings_from_args(args)
    except CxrError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    workdir = Path(args.workdir).expanduser().resolve() if args.workdir else Path(tempfile.mkdtemp(prefix="cxr-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    bench = Bench(settings, workdir)
    machine = _machine(settings)
    log.info("bench (%s) on %s, %s cores, device %s; work directory %s", preset, machine["cpu"], machine["cores"],
             machine["device"], workdir)
    started = time.perf_counter()
    failures = {}
    runners = {"data": bench_data, "trainable": bench_trainable, "orchestration": bench_orchestration,
               "search": bench_search, "storage": bench_storage}
    try:
        for part in PARTS:
            if part not in settings.parts:
                continue
            log.info("---- %s", part)
            part_started = time.perf_counter()
            load_before = os.getloadavg()[0]
            try:
                runners[part](bench)
            except (CxrError, RuntimeError, OSError) as error:
                log.error("part %s failed: %s", part, error)
                failures[part] = str(error)
            except Exception as error:  # noqa: BLE001 - a bench reports what it measured, whatever fails
                log.exception("part %s failed", part)
                failures[part] = f"{type(error).__name__}: {error}"
            bench.part_seconds[part] = round(time.perf_counter() - part_started, 1)
            bench.load[part] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    goals = check_goals(bench.figures)
    report = {
        "preset": preset, "machine": machine, "settings": asdict(settings), "seconds": round(time.perf_counter()
                                                                                            - started, 1),
        "part_seconds": bench.part_seconds,
        "load_average": {part: {"before": v[0], "after": v[1]} for part, v in bench.load.items()},
        "figures": bench.figures, "goals": goals, "details": bench.details, "failures": failures,
        "workdir": str(workdir) if args.keep else None,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, default=_json_default))
    print(f"\nBenchmark ({preset}) on {machine['cpu']}, {machine['cores']} cores, device {machine['device']}"
          + (f" ({machine['gpu']})" if machine["gpu"] else "") + f", {machine['date']}; "
          f"{report['seconds']:.0f} s in all\n")
    print(render_table(bench.figures, goals))
    met = sum(goal["met"] for goal in goals)
    print(f"\ngoals met: {met} of {len(goals)}; figures and details: {out}")
    for part, error in failures.items():
        print(f"part {part} FAILED: {error}", file=sys.stderr)
    return 1 if failures else 0


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, (np.bool_,)):
        return bool(value)
    if hasattr(value, "to_dict"):
        return value.to_dict()
    return str(value)


if __name__ == "__main__":
    sys.exit(main())
