"""Part 3, orchestration: `python -m study.run` as a user runs it, against its trials' own time.

Described with the other parts in study.bench.cli's docstring.
"""

from __future__ import annotations

from pathlib import Path

from study.bench.common import (Bench, default_study_args, drop_model_files, run_study_command, trial_slots,
                                trial_summary)
from study.bench.settings import Settings


def orchestration_args(s: Settings, workdir: Path) -> list[str]:
    """The orchestration study: the default study at the preset's sizes."""
    return default_study_args(s, workdir, s.study_samples, s.study_epochs)


def bench_orchestration(bench: Bench) -> None:
    from study.results import read_results

    s = bench.settings
    args = orchestration_args(s, bench.workdir)
    study = run_study_command(bench, "orchestration", args)
    results = read_results(study.study_uri)
    if results.empty:
        raise RuntimeError(f"the orchestration study reported nothing; see {study.log_file}")
    summary = trial_summary(results)
    cpus_per_trial = 1.0  # study.run's default
    slots = trial_slots(summary["trials"], s.num_cpus, cpus_per_trial, bench.gpus, s.gpus_per_trial)
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
    drop_model_files(study.study_uri)


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


