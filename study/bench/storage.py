"""Part 5, storage: what the default study writes and leaves, locally and in S3, and its analysis.

Described with the other parts in study.bench.cli's docstring.
"""

from __future__ import annotations

import logging
import math
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from study.bench.common import Bench, default_study_args, drop_model_files, run_study_command, studies_storage
from study.bench.settings import Settings

log = logging.getLogger(__name__)

STORAGE_KINDS = ("weights", "checkpoints", "results", "tensorboard", "other")


def s3_storage(s: Settings) -> str:
    """--storage of the storage part's S3 study (a bucket on the local S3 server)."""
    return f"s3://{s.s3_bucket}/studies"


def storage_args(s: Settings, workdir: Path) -> list[str]:
    """The storage part's study: the orchestration study's, with its own sizes and policy where set."""
    args = default_study_args(s, workdir, s.storage_samples or s.study_samples, s.storage_epochs or s.study_epochs)
    if s.checkpoint_every is not None:
        args += ["--checkpoint-every", str(s.checkpoint_every)]
    if s.checkpoint_minutes is not None:
        args += ["--checkpoint-minutes", str(s.checkpoint_minutes)]
    return args


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


def weights_written(results, metric: str, mode: str, sizes: dict[str, int], policy, max_epochs: int,
                    tie_break: str | None = None) -> tuple[int, dict[str, int]]:
    """The bytes of best weights a study wrote, without polling's blind spot, counted from the results table
    by the trainable's own rules: a trial notes a new best at each epoch that improves on its best so far (on
    the study metric, then on `tie_break`, the study's tie-break metric: study.tables.improves; a diverged
    epoch never does) and writes the newest one
    noted before the report of its last epoch, of each epoch where `policy` (the study's CheckpointPolicy)
    says weights_due, and of each full state (every `policy.every` epochs: the minutes clock is left out, as
    the bench's studies are too short for it). Each write counts at the size of that trial's weights file
    as seen (`sizes`, by trial id), else at the median size of its model's files seen. Returns (bytes,
    writes by trial id); sidecars are left out."""
    from study.tables import improves

    if results.empty or metric not in results:
        return 0, {}
    results = results.sort_values(["trial_id", "training_iteration"])
    models = results.groupby("trial_id")["config/model"].first().to_dict() if "config/model" in results else {}
    by_model: dict[str, list[int]] = {}
    for trial_id, size in sizes.items():
        by_model.setdefault(str(models.get(trial_id)), []).append(size)
    total, writes = 0, {}
    for trial_id, rows in results.groupby("trial_id"):
        best, best_tie, unwritten, count = None, None, False, 0
        last = int(rows["training_iteration"].iloc[-1])
        for row in rows.to_dict("records"):
            value, epoch = row[metric], int(row["training_iteration"])
            tie = row.get(tie_break) if tie_break else None
            if not row.get("diverged") and improves(value, best, mode, tie, best_tie, tie_break):
                best, best_tie, unwritten = value, tie, True
            if unwritten and (epoch == last or policy.weights_due(epoch, max_epochs)
                              or policy.full_state_due(epoch, max_epochs, seconds_since_last=0)):
                count, unwritten = count + 1, False
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
    time and downloads from each (see study.bench.cli's docstring)."""
    from study import storage
    from study.checkpoints import CheckpointPolicy
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
    written["weights"], writes = weights_written(results, settings.metric, settings.mode, watch.weights_sizes(),
                                                 CheckpointPolicy.of_study(settings), settings.max_epochs,
                                                 settings.tie_break)
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
        drop_model_files(study.study_uri)
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
    drop_model_files(study.study_uri)


