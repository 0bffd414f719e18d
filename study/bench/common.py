"""What every part of the bench shares: the Bench (figures, details), the goals and the table, the JSON
report, the machine, cxrnets training helpers, and the studies run as a user runs them."""

from __future__ import annotations

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
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import yaml

from study.bench.settings import SMOKE_SPACE_NAME, Settings

if TYPE_CHECKING:
    from study.bench.storage import FolderWatch

log = logging.getLogger(__name__)

# Each goal: figure name pattern (a prefix; every figure that starts with it is checked), comparison, target
# (a number, or one per preset where the preset's sizes call for another).
GOALS = (
    ("data/cache_vs_decode", ">=", 10.0, "data path from the cache >= 10x decoding from files"),
    ("data/cache_vs_fastest_model", ">=", 20.0, "data path from the cache >= 20x the fastest model's training"),
    ("trainable/ratio", ">=", 0.95, "trainable / bare loop >= 0.95 for every model"),
    ("orchestration/overhead", "<=", 0.10, "orchestration overhead <= 10% of the study's wall time"),
    ("orchestration/first_epoch_seconds", "<=", 20.0, "first epoch reported <= 20 s after the command starts"),
    ("search/best_gap", "<=", 0.01, "ASHA + Optuna best within 0.01 of the full grid's best"),
    # The quick schedule (4 epochs, one rung at epoch 1, factor 4) spends at least 11 of the grid's 32 epochs.
    ("search/epochs_ratio", "<=", {"full": 1 / 3, "quick": 1 / 2, "smoke": 1 / 2},
     "ASHA + Optuna spends <= 1/3 of the full grid's epochs (1/2 at the quick and smoke sizes)"),
    ("search/best_gap_vs_optuna", "<=", 0.01, "the study's best within 0.01 of plain Optuna's on the same budget"),
    ("search/epochs_vs_optuna", "<=", 1.0, "the study spends no more epochs than plain Optuna with its pruner"),
    ("search/parallel_wall_vs_optuna", "<=", 1.0,
     "the study with 2 trials at once takes no longer than plain Optuna in one process"),
    # Meant for the default study (the full preset); the quick and smoke presets print it all the same.
    ("storage/demo_bytes_left", "<=", 1.5e9, "the default study leaves <= 1.5 GB in its storage"),
    ("storage/s3_analysis_vs_local", "<=", 2.0, "the analysis of a study in S3 takes <= 2x the local one's time"),
)


class Bench:
    """Figures, their details and the run's context, filled in part by part."""

    def __init__(self, settings: Settings, workdir: Path, gpus: int = 0):
        self.settings = settings
        self.workdir = workdir
        self.gpus = gpus  # the machine's, all of which a study's Ray instance takes
        self.figures: dict[str, float] = {}
        self.details: dict[str, Any] = {}
        self.part_seconds: dict[str, float] = {}
        self.load: dict[str, list[float]] = {}

    def figure(self, name: str, value: float) -> None:
        self.figures[name] = float(value)
        log.info("%s = %s", name, _fmt(value))


def _fmt(value: float) -> str:
    if value is None or not math.isfinite(value):
        return str(value)
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}" if abs(value) >= 0.01 else f"{value:.2g}"


# ------------------------------------------------------------------ goals, the table, the report

def check_goals(figures: dict[str, float], preset: str = "full") -> list[dict[str, Any]]:
    """Each goal against every figure it applies to. At the smoke sizes, which exist to give every figure
    quickly, no goal is judged (`met` None): a search of 4 epochs cannot spend half of them, and timings of
    a few seconds are noise."""
    checked = []
    for prefix, op, target, text in GOALS:
        target = target[preset] if isinstance(target, dict) else target
        for name, value in figures.items():
            if name == prefix or name.startswith(prefix + "@") or name.startswith(prefix + "/"):
                met = None if preset == "smoke" else (
                    math.isfinite(value) and (value >= target if op == ">=" else value <= target))
                checked.append({"figure": name, "value": value, "goal": f"{op} {_fmt(target)}", "met": met,
                                "description": text})
    return checked


def render_table(figures: dict[str, float], goals: list[dict[str, Any]]) -> str:
    """Every figure, its goal and whether it is met, as a Markdown table (study.tables.markdown_table)."""
    import pandas as pd

    from study.tables import markdown_table

    by_figure = {goal["figure"]: goal for goal in goals}
    rows = []
    for name, value in figures.items():
        part, _, rest = name.partition("/")
        goal = by_figure.get(name)
        met = "" if goal is None else {True: "yes", False: "NO", None: "not judged (smoke sizes)"}[goal["met"]]
        rows.append((part, rest, _fmt(value), goal["goal"] if goal else "", met))
    return markdown_table(pd.DataFrame(rows, columns=["part", "figure", "value", "goal", "met"], dtype=str))


def write_report(out: Path, report: dict[str, Any]) -> None:
    """The JSON file of every figure, goal and detail (--out), replaced whole: a stop while it is written
    leaves the previous part's report."""
    from study import storage

    storage.write_text(str(out.resolve()), json.dumps(report, indent=2, default=_json_default))


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


# ------------------------------------------------------------------ cxrnets training, the machine

def data_root(settings: Settings) -> str:
    from cxrnets.data import SAMPLE_ROOT

    return str(Path(settings.data_root).expanduser().resolve()) if settings.data_root else str(SAMPLE_ROOT)


def train_config(settings: Settings, model: str, image_size: int, cache_dir: Path):
    from cxrnets.config import TrainConfig

    return TrainConfig(dataset=settings.dataset, data_root=data_root(settings), model=model,
                       batch_size=settings.batch_size, epochs=1, image_size=image_size, seed=settings.seed,
                       cache_dir=str(cache_dir), device=settings.device, amp=settings.amp,
                       channels_last=settings.channels_last, compile=settings.compile)


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


def machine_info(settings: Settings) -> dict[str, Any]:
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
    gpus = torch.cuda.device_count() if gpu else 0
    from cxrnets.training import select_device

    device = select_device(settings.device)
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gb": memory_gb, "gpu": gpu, "gpus": gpus,
            "device": str(device), "platform": platform.platform(), "python": platform.python_version(),
            "torch": torch.__version__, "ray": ray.__version__, "optuna": optuna.__version__,
            "torch_threads": torch.get_num_threads(),
            "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}


# ------------------------------------------------------------------ studies as a user runs them

def trial_slots(trials: int, num_cpus: int, cpus_per_trial: float, gpus: int, gpus_per_trial: float) -> int:
    """How many of a study's trials run at once: as many as its Ray instance's CPUs hold at cpus_per_trial and,
    for trials given GPUs, as its GPUs hold (Ray puts whole trials on one GPU: 1 // 0.3 = 3 a GPU), no more
    than the trials; at least one."""
    tolerance = 1e-9  # 1 / (1 / 93) is 92.99999999999999
    slots = min(trials, int(num_cpus / cpus_per_trial + tolerance))
    if gpus_per_trial > 0:
        by_gpus = (gpus * int(1 / gpus_per_trial + tolerance) if gpus_per_trial <= 1
                   else int(gpus / gpus_per_trial + tolerance))
        slots = min(slots, by_gpus)
    return max(1, slots)


SMOKE_SPACE: dict[str, Any] = {
    "description": "Bench smoke study (ResNet50 at 16 px on the embedded sample).",
    "sampler": "tpe",
    "search": {
        "model": {"choice": ["resnet50"]},
        "optimizer": {"choice": ["adam", "sgd"]},
        "lr": {"loguniform": [1.0e-4, 1.0e-3]},
        "batch_size": {"value": 32},
        "momentum": {"value": 0.9, "when": {"optimizer": "sgd"}},
        "pretrained": {"value": False},
    },
}


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
# Built by these functions and each part's <part>_args alone (study.bench.cli.planned_studies gathers
# them), which run nothing, so that a test can check every preset's command lines with study.run's own
# validation before anything runs (tests/study/bench/test_cli.py).

def studies_storage(workdir: Path) -> str:
    """--storage of the studies the bench runs on local disk."""
    return str(workdir / "studies")


def study_run_argv(s: Settings, workdir: Path, name: str, args: list[str], storage: str | None = None) -> list[str]:
    """The arguments of `python -m study.run` for one of the bench's studies: the part's own `args`,
    then the bench's dataset and its data root (every part trains on them), where the study goes
    (--storage, default: the work directory), its name, cache, seed and CPUs."""
    argv = [*args, "--dataset", s.dataset, "--data-root", f"{s.dataset}={data_root(s)}",
            "--storage", storage or studies_storage(workdir), "--name", name,
            "--cache-dir", str(workdir / "cache"), "--seed", str(s.seed), "--num-cpus", str(s.num_cpus)]
    if s.gpus_per_trial:
        argv += ["--gpus-per-trial", str(s.gpus_per_trial)]
    return argv


def study_space(s: Settings, workdir: Path) -> str:
    """--space of the orchestration and storage studies (the smoke space is written to the work directory)."""
    if s.study_space == SMOKE_SPACE_NAME:
        return str(write_space(workdir, "smoke-space", space_text(SMOKE_SPACE)))
    return s.study_space


def default_study_args(s: Settings, workdir: Path, samples: int | None, epochs: int | None) -> list[str]:
    """The default study (the space's own settings) at the preset's sizes. (Fewer epochs than the
    space's grace period: study.run lowers the grace period to them.)"""
    args = ["--space", study_space(s, workdir)]
    for flag, value in (("--num-samples", samples), ("--max-epochs", epochs), ("--image-size", s.study_image_size)):
        if value is not None:
            args += [flag, str(value)]
    return args


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
    environment["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(__file__).resolve().parents[2]),
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
            try:
                while process.poll() is None:
                    if first is None:
                        first = first_part()
                    if watch is not None:
                        watch.maybe_poll()
                    if time.time() - started > s.timeout_s:
                        raise RuntimeError(f"study {name} ran past {s.timeout_s:.0f} s; see {log_file}")
                    time.sleep(0.05)
            except BaseException:  # the time limit, or Ctrl-C: no study outlives the bench
                stop(process)
                raise
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


def stop(process: subprocess.Popen, grace_seconds: float = 30) -> None:
    """SIGTERM (a study stops as on Ctrl-C, and its Ray instance with it), then SIGKILL after `grace_seconds`."""
    process.terminate()
    try:
        process.wait(timeout=grace_seconds)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def write_space(workdir: Path, name: str, text: str) -> Path:
    path = workdir / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def space_text(space: dict[str, Any]) -> str:
    """A search space as YAML, in search_spaces/*.yaml's format. Keys keep their order: a `when` names
    a dimension above it."""
    return yaml.safe_dump(space, sort_keys=False, default_flow_style=None, width=120)


def trial_summary(results) -> dict[str, Any]:
    per_trial = results.groupby("trial_id").agg(epochs=("training_iteration", "max"),
                                                seconds=("time_total_s", "max"))
    return {"trials": int(len(per_trial)), "epochs": int(per_trial["epochs"].sum()),
            "trial_seconds": float(per_trial["seconds"].sum()), "per_trial": per_trial}


def drop_model_files(study_uri: str) -> None:
    """Free the disk: the best weights (AlexNet's ~0.23 GB, VGG11's ~0.5 GB) and any full state left
    (~0.7 GB, ~1.6 GB: the policy deletes them as trials end); results and logs stay."""
    from study import storage
    from study.checkpoints import WEIGHTS_DIR, delete_full_states

    for entry in storage.listing(study_uri):
        if entry.is_dir:
            delete_full_states(entry.uri)
    storage.delete(storage.join(study_uri, WEIGHTS_DIR))
