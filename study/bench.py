"""Benchmark a study against its limits: the data path, the trainable, the orchestration, the search.

    python -m study.bench --quick                       # every part, about ten minutes on 2 CPU cores
    python -m study.bench                               # the full sizes (about an hour on 2 CPU cores)
    python -m study.bench --parts data,trainable --models alexnet --image-sizes 64,224 --repeats 3
    python -m study.bench --quick --device cuda --gpus-per-trial 0.5   # on a GPU machine

Four parts, all measured in one run on one machine:

1. data: images/s of decoding + preprocessing from the image files against reading the decode-once
   cache (cxrnets.cache + cxrnets.batches), at each image size, and the cache's images/s against the
   fastest model's training images/s (a bare loop: forward, backward, step).
2. trainable: per model, images/s of what the study's trainable runs each epoch (study.trainable:
   TrainingRun.train_epoch = training + validation metrics, then torch.save of the checkpoint and the
   copy that tune.report makes of it into the study's storage) against a bare PyTorch loop doing the
   same forward/backward/step on the same batches.
3. orchestration: `python -m study.run` as a user runs it (a subprocess with its own Ray instance):
   seconds to the first reported epoch, and the study's wall time against the sum of its trials'
   own time (Tune's time_total_s) over the trial slots.
4. search: the full grid of a small space run to the maximum epochs without early stopping against
   the ASHA + Optuna study of the same space: epochs spent and best validation metric, as ratios.
   Both run one trial at a time, seeded, so that they repeat.

The bench prints a table of every figure, its goal and whether it is met, and writes them all, with
the machine and the settings, to a JSON file (--out). Everything it writes besides lies in a
temporary work directory, deleted at the end unless --keep (checkpoints reach gigabytes).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import shutil
import statistics
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

PARTS = ("data", "trainable", "orchestration", "search")
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

def persist_checkpoint(run, storage: Path, epoch: int) -> tuple[float, float, int]:
    """What study.trainable and tune.report do with a checkpoint, timed: torch.save into a temporary
    directory, then Ray's copy of it into the study's storage (pyarrow.fs.copy_files, 64 MiB chunks,
    ray.train._internal.storage). Returns (save seconds, persist seconds, bytes)."""
    import pyarrow.fs
    import torch

    from study.trainable import CHECKPOINT_FILE

    with tempfile.TemporaryDirectory() as directory:
        started = time.perf_counter()
        torch.save(run.checkpoint(), Path(directory) / CHECKPOINT_FILE)
        saved = time.perf_counter()
        size = (Path(directory) / CHECKPOINT_FILE).stat().st_size
        destination = storage / f"checkpoint_{epoch:06d}"
        local = pyarrow.fs.LocalFileSystem()
        local.create_dir(str(destination))
        pyarrow.fs.copy_files(directory, str(destination), source_filesystem=local, destination_filesystem=local,
                              chunk_size=64 * 1024 * 1024)
        persisted = time.perf_counter()
    return saved - started, persisted - saved, size


def bench_trainable(bench: Bench) -> None:
    import torch

    from cxrnets.training import TrainingRun, prepare_data

    s = bench.settings
    cache_dir = bench.workdir / "cache"
    size = s.trainable_image_size
    details = bench.details.setdefault("trainable", {"image_size": size, "batch_size": s.batch_size,
                                                     "repeats": s.repeats, "models": {}})
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
        storage = bench.workdir / "trainable-storage" / model
        samples: dict[str, list[float]] = {k: [] for k in ("bare", "trainable", "train", "val", "save", "persist")}
        checkpoint_bytes = 0
        for repeat in range(s.repeats):
            # Alternate which goes first, so that a change in the machine's load hits both alike.
            for kind in (("bare", "trainable") if repeat % 2 == 0 else ("trainable", "bare")):
                if kind == "bare":
                    bare.train_batches.set_epoch(repeat)
                    images, seconds = bare_epoch(bare, bare.train_batches)
                    samples["bare"].append(images / seconds)
                    continue
                started = time.perf_counter()
                metrics = trial.train_epoch()
                epoch_seconds = time.perf_counter() - started
                save, persist, checkpoint_bytes = persist_checkpoint(trial, storage, trial.epoch)
                total = epoch_seconds + save + persist
                trained = round(metrics["images_per_second"] * metrics["epoch_seconds"])
                samples["trainable"].append(trained / total)
                samples["train"].append(metrics["epoch_seconds"])
                samples["val"].append(epoch_seconds - metrics["epoch_seconds"])
                samples["save"].append(save)
                samples["persist"].append(persist)
                shutil.rmtree(storage, ignore_errors=True)  # Tune keeps one checkpoint (num_to_keep=1)
        med = {k: statistics.median(v) for k, v in samples.items()}
        ratio = med["trainable"] / med["bare"]
        train_ratio = (images / med["train"]) / med["bare"]
        bench.figure(f"trainable/bare_images_per_second/{model}", med["bare"])
        bench.figure(f"trainable/trainable_images_per_second/{model}", med["trainable"])
        bench.figure(f"trainable/ratio/{model}", ratio)
        # What limits the ratio: each part of the trainable's epoch as a share of it.
        epoch_total = med["train"] + med["val"] + med["save"] + med["persist"]
        n_train, n_val = details["train_images"], details["val_images"]
        projected = _projected_ratio(med, n_train, n_val)
        details["models"][model] = {
            "train_loop_vs_bare": round(train_ratio, 4),
            "seconds": {k: round(med[k], 3) for k in ("train", "val", "save", "persist")},
            "shares": {k: round(med[k] / epoch_total, 4) for k in ("train", "val", "save", "persist")},
            "checkpoint_mb": round(checkpoint_bytes / 1e6, 1),
            "checkpoint_mb_per_s": round(checkpoint_bytes / 1e6 / max(med["save"] + med["persist"], 1e-9), 1),
            f"ratio_projected_{PROJECTED_DATASET[0]}": round(projected, 4),
            "samples": {k: [round(x, 4) for x in v] for k, v in samples.items()},
        }
        del bare, trial
        torch.manual_seed(s.seed)
    shutil.rmtree(bench.workdir / "trainable-storage", ignore_errors=True)


def _projected_ratio(med: dict[str, float], n_train: int, n_val: int) -> float:
    """The trainable's ratio on dataset 1 (70/15/15 split) at the same per-image costs: the bare loop's
    training time, plus the validation pass (grows with the images) and the checkpoint (does not).
    The trainable's training loop is the bare loop's code plus a per-step loss read, so the bare loop's
    speed stands for it (one repetition of each differs by the machine's noise, +-10 % here)."""
    _, images = PROJECTED_DATASET
    train = 0.70 * images / med["bare"]
    val = 0.15 * images * med["val"] / max(n_val, 1)
    return train / (train + val + med["save"] + med["persist"])


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


def run_study_command(bench: Bench, name: str, args: list[str]) -> StudyRun:
    """`python -m study.run ARGS` in a subprocess with its own Ray instance; watches for the first result.

    The study gets a private RAY_TMPDIR so that it starts its own Ray instance even where another
    process on this machine runs one, and RAY_ADDRESS is dropped for the same reason.
    """
    s = bench.settings
    storage = bench.workdir / "studies"
    study_uri = str(storage / name)
    log_file = bench.workdir / f"{name}.log"
    ray_tmp = Path(tempfile.mkdtemp(prefix="cxrb-"))  # short: Ray's socket paths must stay under 107 chars
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(RAY_TMPDIR=str(ray_tmp), RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0",
               PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(__file__).resolve().parent.parent),
                                                      env.get("PYTHONPATH")]))
    command = [sys.executable, "-m", "study.run", *args, "--storage", str(storage), "--name", name,
               "--cache-dir", str(bench.workdir / "cache"), "--seed", str(s.seed), "--num-cpus", str(s.num_cpus)]
    if s.gpus_per_trial:
        command += ["--gpus-per-trial", str(s.gpus_per_trial)]
    log.info("running %s", " ".join(command[1:]))
    results_dir = Path(study_uri) / "results"
    first = None
    try:
        with log_file.open("w") as output:
            started = time.time()
            process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, env=env,
                                       cwd=str(bench.workdir))
            while process.poll() is None:
                if first is None and results_dir.is_dir():
                    parts = [p for p in results_dir.iterdir() if p.suffix == ".parquet"]
                    if parts:
                        first = min(p.stat().st_mtime for p in parts) - started
                if time.time() - started > s.timeout_s:
                    process.kill()
                    process.wait()
                    raise RuntimeError(f"study {name} ran past {s.timeout_s:.0f} s; see {log_file}")
                time.sleep(0.05)
            wall = time.time() - started
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
    if first is None and results_dir.is_dir():
        parts = [p for p in results_dir.iterdir() if p.suffix == ".parquet"]
        first = min(p.stat().st_mtime for p in parts) - started if parts else None
    return StudyRun(name, study_uri, wall, first, fit, process.returncode, str(log_file), started)


def _space_file(bench: Bench, name: str, text: str) -> Path:
    path = bench.workdir / f"{name}.yaml"
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
    space = str(_space_file(bench, "smoke-space", SMOKE_SPACE)) if s.study_space == "<smoke>" else s.study_space
    args = ["--space", space]
    for flag, value in (("--num-samples", s.study_samples), ("--max-epochs", s.study_epochs),
                        ("--image-size", s.study_image_size)):
        if value is not None:
            args += [flag, str(value)]
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
    _drop_checkpoints(study.study_uri)


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


def _drop_checkpoints(study_uri: str) -> None:
    """Free the disk (an AlexNet checkpoint is ~0.7 GB, VGG11 ~1.6 GB); results and logs stay."""
    for folder in Path(study_uri).glob("*/checkpoint_*"):
        shutil.rmtree(folder, ignore_errors=True)


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
    from study.space import load_space
    from study.tables import best_epochs

    s = bench.settings
    grid_space = _space_file(bench, "search-grid", search_space_text(s, "grid"))
    asha_space = _space_file(bench, "search-asha", search_space_text(s, s.search_sampler))
    configs = len(load_space(grid_space).grid())
    samples = s.search_samples or configs
    metric = s.search_metric
    mode = "min" if metric.endswith("loss") else "max"
    # One trial at a time with every core: ASHA's decisions and Optuna's proposals then do not depend
    # on which trial finishes first, so the seeded run repeats.
    common = ["--image-size", str(s.search_image_size), "--max-epochs", str(s.search_max_epochs),
              "--metric", metric, "--cpus-per-trial", str(s.num_cpus), "--max-concurrent", "1"]
    # The full grid: ASHA with its grace period at the maximum epochs never stops a trial early.
    grid = run_study_command(bench, "search-grid", ["--space", str(grid_space), "--num-samples", str(configs),
                                                    "--grace-period", str(s.search_max_epochs),
                                                    "--reduction-factor", "2", *common])
    asha = run_study_command(bench, "search-asha", ["--space", str(asha_space), "--num-samples", str(samples),
                                                    "--grace-period", str(s.search_grace_period),
                                                    "--reduction-factor", str(s.search_reduction_factor), *common])
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
        _drop_checkpoints(study.study_uri)
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
    bench.details["search"] = {
        "metric": metric, "configs": configs, "asha_samples": samples, "sampler": s.search_sampler,
        "max_epochs": s.search_max_epochs, "grace_period": s.search_grace_period,
        "reduction_factor": s.search_reduction_factor, "image_size": s.search_image_size, "mode": mode,
        "space": search_space_text(s, "grid"), **outcome,
    }


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
                      "(ResNet50 at 32 px; what the test runs): a couple of minutes")
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
    add("--num-cpus", type=int, default=None, help="CPUs of each study's Ray instance (default: all)")
    add("--gpus-per-trial", type=float, default=None, help="GPUs per trial in the studies (default: 0)")
    add("--seed", type=int, default=None, help="seed of every part (default: 0)")
    add("--out", default="bench.json", help="JSON file of every figure (default: bench.json)")
    add("--workdir", default=None, help="work directory (default: a new temporary directory)")
    add("--keep", action="store_true", help="keep the work directory (study logs, results; no checkpoints)")
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
    from study.run import METRICS

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
               "search": bench_search}
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
