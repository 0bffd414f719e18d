"""Seed repeats of a study's selected configurations: is a winner its configuration, or its seed?

    python -m study.confirm studies/demo-20261125-101500 --seeds 3
    python -m study.confirm studies/demo-20261125-101500 --resume    # continue an interrupted confirm
    python -m study.analyze studies/demo-20261125-101500             # the report gains the seed spread

For every (dataset, model) cell it takes the trial chosen on the study's
validation metric (the one the analysis evaluates) and trains its
configuration again with N new seeds (the study's seed + 1 ... + N: model
initialisation and batch order; the study's split unchanged), each for the
study's max epochs, without early stopping. The seeds are the same for
every cell, so models can be compared seed by seed. It is a Ray Tune run on
the study's cluster and storage, with the study's fault tolerance (a trial
whose node dies continues from its last full state) and checkpoint policy,
written under `<study>/confirm/`: jobs.json (what each trial trains), the
results table, TensorBoard events, and each seed's best weights.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import sys
import time
from dataclasses import asdict, dataclass
from shlex import quote
from typing import Any

import pandas as pd

from cxrnets.errors import CxrError
from study import storage
from study.checkpoints import TuneStateFile, WeightsKeeper, forget_lost_trials
from study.results import ResultsTable, read_results, read_trial_events, unfinished_search
from study.lock import driver_lock, started_elsewhere
from study.settings import StudySettings, check_setting_rules, load_settings, relocate, resumed_study
from study.space import config_name
from study.tables import best_trials, diverged_cells

log = logging.getLogger("study.confirm")

CONFIRM_DIR = "confirm"
JOBS_FILE = "jobs.json"
CONFIRM_STATE_FILES = (TuneStateFile("basic-variant-state-", ".json", "which of its jobs have started"),
                       TuneStateFile("callback-states-", ".pkl", "each trial's best epoch"))


@dataclass
class ConfirmJob:
    """One trial of a confirm run: a selected configuration with one new seed."""

    job: int
    dataset: str
    model: str
    confirms: str            # the study trial whose configuration this repeats
    seed: int
    config: dict[str, Any]   # the trial config, seed included

    @property
    def name(self) -> str:
        return f"{config_name({'dataset': self.dataset, 'model': self.model, **self.config})}_seed{self.seed}"

    def label(self, with_dataset: bool) -> str:
        """What the status lines call this trial: its configuration, seed and the study trial it repeats."""
        configuration = config_name({**self.config, "model": self.model,
                                     "dataset": self.dataset if with_dataset else None})
        return f"{configuration} seed {self.seed}, repeats {self.confirms}"


def confirm_uri(study_uri: str) -> str:
    return storage.join(study_uri, CONFIRM_DIR)


def jobs_uri(study_uri: str) -> str:
    return storage.join(confirm_uri(study_uri), JOBS_FILE)


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


def make_jobs(settings: StudySettings, results: pd.DataFrame, seeds: int) -> list[ConfirmJob]:
    """Each cell's trial chosen on validation, once per new seed."""
    if seeds < 1:
        raise CxrError(f"--seeds {seeds}: give how many new seeds to train each selected configuration with (1 or more)")
    if results.empty or settings.metric not in results or results[settings.metric].notna().sum() == 0:
        raise CxrError(f"{settings.study_uri}: no trial has recorded {settings.metric} yet; nothing to confirm: let the "
                       "study run (or --resume it) first")
    default_dataset = next(iter(settings.data_roots))
    results = results.assign(**{"config/dataset": results.get("config/dataset", default_dataset)})
    cells = ("config/dataset", "config/model")
    chosen = best_trials(results, settings.metric, settings.mode, by=cells, tie_break=settings.tie_break)
    if chosen.empty:
        raise CxrError(f"{settings.study_uri}: every trial diverged (NaN loss) before measuring {settings.metric}; "
                       "nothing to confirm")
    for line in diverged_cells(results, settings.metric, cells):
        log.warning("%s; not confirmed", line)
    jobs = []
    for seed in range(settings.seed + 1, settings.seed + 1 + seeds):
        for row in chosen.to_dict("records"):
            config = {key.removeprefix("config/"): _plain(value) for key, value in row.items()
                      if key.startswith("config/") and not (isinstance(value, float) and math.isnan(value))
                      and value is not None}
            config["seed"] = seed
            jobs.append(ConfirmJob(len(jobs), str(config["dataset"]), str(config.get("model", "?")),
                                   str(row["trial_id"]), seed, config))
    return jobs


def check_search_finished(study_dir: str, study_uri: str) -> None:
    """Refuse a confirm run of a study whose search is unfinished (unfinished_search)."""
    undone = unfinished_search(study_uri)
    if undone:
        raise CxrError(f"{study_uri}: the study's search is unfinished: {'; '.join(undone)}. A confirm run now would "
                       "repeat its best configurations so far, which the finished study may not choose, and a study "
                       f"keeps one confirm run: finish the study first with\n  python -m study.run --resume "
                       f"{quote(study_dir)}\nor pass --allow-unfinished to confirm its best so far")


def read_jobs(study_uri: str) -> list[ConfirmJob] | None:
    """The confirm run's jobs, or None if the study has none."""
    uri = jobs_uri(study_uri)
    if storage.kind(uri) == "missing":
        return None
    try:
        return [ConfirmJob(**job) for job in storage.read_json(uri)]
    except (OSError, ValueError, TypeError) as error:
        raise CxrError(f"{uri}: not a readable confirm jobs file ({error})") from error


class JobNames:
    """Tune's trial names and folder names for a confirm run (picklable, unlike a closure)."""

    def __init__(self, jobs: list[ConfirmJob], folder: bool = False):
        self.names, self.folder = [job.name for job in jobs], folder

    def __call__(self, trial) -> str:
        name = self.names[trial.config["job"]]
        return f"{trial.trial_id}_{name}" if self.folder else name


class JobLabels:
    """StudyConsole's name for each trial of a confirm run (whose config holds only its job): ConfirmJob.label,
    with the dataset where the run covers several."""

    def __init__(self, jobs: list[ConfirmJob]):
        several = len({job.dataset for job in jobs}) > 1
        self.labels = [job.label(with_dataset=several) for job in jobs]

    def __call__(self, trial) -> str:
        return self.labels[trial.config["job"]]


def build_tuner(settings: StudySettings, jobs: list[ConfirmJob], splits: dict[str, pd.DataFrame], resume: bool,
                verbose: bool = False):
    """Tune's Tuner for the confirm run, or restored for a resume (which keeps the console it started with).
    `verbose`: Tune's own tables instead of StudyConsole."""
    from ray import tune

    from study.console import StudyConsole
    from study.driver import trial_context
    from study.tensorboard import StudyTensorBoard
    from study.trainable import JobTrainable

    uri = confirm_uri(settings.study_uri)
    trainable = tune.with_resources(
        tune.with_parameters(JobTrainable, context=trial_context(settings, splits, weights_uri=uri),
                             jobs=[job.config for job in jobs]),
        {"cpu": settings.cpus_per_trial, "gpu": settings.gpus_per_trial})
    if resume:
        return tune.Tuner.restore(uri, trainable, resume_unfinished=True, resume_errored=True)
    return tune.Tuner(
        trainable,
        param_space={"job": tune.grid_search(list(range(len(jobs))))},
        tune_config=tune.TuneConfig(
            metric=settings.metric, mode=settings.mode, max_concurrent_trials=settings.max_concurrent,
            reuse_actors=True, trial_name_creator=JobNames(jobs), trial_dirname_creator=JobNames(jobs, folder=True)),
        run_config=tune.RunConfig(
            name=CONFIRM_DIR, storage_path=settings.study_uri,
            callbacks=[ResultsTable(uri), WeightsKeeper(uri, settings.metric, settings.mode, "all"),
                       StudyTensorBoard(settings.metric, settings.mode, [job.config for job in jobs], logdir=uri)]
            + ([] if verbose else [StudyConsole(len(jobs), settings.max_epochs, settings.metric, settings.mode,
                                                name_of=JobLabels(jobs), run_uri=uri,
                                                tie_break=settings.tie_break)]),
            failure_config=tune.FailureConfig(max_failures=settings.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1, checkpoint_at_end=False),
            verbose=1 if verbose else 0))


def run_confirm(study_dir: str, seeds: int | None = None, resume: bool = False, address: str | None = None,
                num_cpus: int | None = None, data_roots: list[str] | None = None, cache_dir: str | None = None,
                verbose: bool = False, allow_unfinished: bool = False,
                trial_resources: dict[str, float | None] | None = None):
    """Start (or resume) the confirm run of a study; returns Tune's ResultGrid. `data_roots` ([DATASET=]PATH)
    and `cache_dir`: where the study's data and image cache lie now, if not where study.json says.
    `trial_resources`: cpus_per_trial and gpus_per_trial for this run, where not None (they change no result;
    study.json keeps the study's own). `verbose`:
    Tune's own output and the trials' logs, instead of the status line (StudyConsole). The resume of a confirm
    run stopped before Tune's first snapshot (study.driver.tune_state_saved) starts it, with the jobs it saved.
    A new confirm run of a study whose search is unfinished is refused unless `allow_unfinished`."""
    from cxrnets.models import fetch_imagenet_weights
    from study.driver import (check_cluster, check_cluster_reachable, check_local_resources, check_tune_state,
                              connect, log_run_end, prepare_splits, quiet_tune, resumable_start_up,
                              runs_on_this_machine, tune_interrupts, tune_state_saved)
    from study.tensorboard import tensorboard_line

    import ray

    settings = load_settings(study_dir)
    storage.check_writable(settings.study_uri, "study directory")  # the confirm run and its lock go there
    relocate(settings, data_roots, cache_dir)
    trial_resources = trial_resources or {}
    for name, value in trial_resources.items():
        if value is not None:
            setattr(settings, name, value)
    check_setting_rules(settings)
    from_study_json = frozenset(name for name in ("cpus_per_trial", "gpus_per_trial")
                                if trial_resources.get(name) is None)
    uri = confirm_uri(settings.study_uri)
    jobs = read_jobs(settings.study_uri)
    if resume:
        if jobs is None:
            raise CxrError(f"{settings.study_uri} has no confirm run to resume; start one with --seeds N")
        if seeds is not None:
            raise CxrError(f"--seeds {seeds} with --resume: the confirm run continues with the {len(jobs)} trials it "
                           "started with; drop --seeds")
    else:
        if jobs is not None:
            events = read_trial_events(uri)
            if (events["event"] == "completed").sum() >= len(jobs):
                raise CxrError(f"{uri} already holds a confirm run ({len(jobs)} trials), finished: the analysis "
                               f"reports it (python -m study.analyze {quote(study_dir)}); delete that folder to "
                               "start again")
            raise CxrError(f"{uri} already holds a confirm run ({len(jobs)} trials): continue it with --resume, or "
                           "delete that folder to start again")
        if not allow_unfinished:
            check_search_finished(study_dir, settings.study_uri)
        jobs = make_jobs(settings, read_results(settings.study_uri), seeds if seeds is not None else 3)
    restore = resume and tune_state_saved(uri)
    if resume and not restore:
        log.info("%s was stopped before its trials started (it holds %s, not Tune's state): starting them now",
                 uri, JOBS_FILE)
    if runs_on_this_machine(address):
        check_local_resources(settings, cores=num_cpus, from_study_json=from_study_json)
    else:
        check_cluster_reachable(address, num_cpus)
    for model in {job.model for job in jobs if job.config.get("pretrained")}:
        fetch_imagenet_weights(model)  # once here, not by each of its seeds' trials at once
    splits = prepare_splits(settings, resume=True)  # the study's own split, checked against the data
    cells = len({(job.dataset, job.model) for job in jobs})
    log.info("confirm: %d configuration(s) x %d seed(s) = %d trials of %d epochs", cells, len(jobs) // max(cells, 1),
             len(jobs), settings.max_epochs)
    resume_command = f"python -m study.confirm {quote(study_dir)} --resume"
    wait = f"let that one run (if it stops, continue it with {resume_command})"
    with driver_lock(uri, resume_command if resume else None, "a confirm run", wait):
        if not resume:
            if read_jobs(settings.study_uri) is not None:  # written since this driver first looked
                raise started_elsewhere(uri, "a confirm run", wait)
            storage.write_json(jobs_uri(settings.study_uri), [asdict(job) for job in jobs])
        if restore:
            check_tune_state(uri, "confirm run", start_over=f"delete {uri} and start the confirm run again (--seeds)",
                             state_files=CONFIRM_STATE_FILES)
        if resume:
            forget_lost_trials(uri)  # trials that started after Tune's last snapshot: the resume does not know them
        quiet_tune(verbose)
        started_here = False
        try:
            with contextlib.nullcontext() if resume else resumable_start_up(
                    f"the confirm run's jobs are saved in {jobs_uri(settings.study_uri)}", resume_command):
                started_here = connect(address, num_cpus, trial_logs=verbose)
                check_cluster(settings, joined=not runs_on_this_machine(address), run="confirm run",
                              resume_command=resume_command)
            log.info(tensorboard_line(uri))
            started = time.perf_counter()
            with resumed_study(uri) if restore else contextlib.nullcontext():
                with tune_interrupts(resume_command):
                    grid = build_tuner(settings, jobs, splits, restore, verbose).fit()
            log_run_end("confirm", grid, read_trial_events(uri), time.perf_counter() - started)
        finally:
            if started_here:
                ray.shutdown()
    return grid


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m study.confirm", description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("study_dir", help="the study directory python -m study.run wrote (<storage>/<study name>)")
    add("--seeds", type=int, default=None, help="new seeds per selected configuration (default: 3)")
    add("--resume", action="store_true", help="continue this study's interrupted confirm run")
    add("--allow-unfinished", action="store_true",
        help="confirm the best configurations so far of a study whose search is unfinished (trials errored, "
             "interrupted or not started), rather than refusing until `python -m study.run --resume` finishes it")
    add("--address", default=None, help="Ray cluster address, host:port (the head's GCS port, 6379 by default) or "
        "ray://host:port (default: RAY_ADDRESS, else a cluster running here, "
        "else a local Ray instance)")
    add("--num-cpus", type=int, default=None, help="CPUs of a new local Ray instance (default: all)")
    add("--cpus-per-trial", type=float, default=None,
        help="CPU cores reserved per trial on this machine or cluster (default: the study's, from its study.json)")
    add("--gpus-per-trial", type=float, default=None,
        help="GPUs per trial, a fraction to share a card (default: the study's, from its study.json)")
    add("--data-root", action="append", default=None, metavar="[DATASET=]PATH",
        help="where a dataset of the study lies now, if not where study.json says; repeatable (default: the "
             "roots in study.json)")
    add("--cache-dir", default=None, help="decoded-image cache (default: the study's, else $CXR_TUNE_CACHE or "
        "~/.cache/cxr-tune)")
    add("-v", "--verbose", action="store_true",
        help="Tune's own tables and every trial's log lines, instead of the run's one status line; a resumed "
             "confirm run shows what it started with")
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = build_parser().parse_args(argv)
    try:
        grid = run_confirm(args.study_dir, seeds=args.seeds, resume=args.resume, address=args.address,
                           num_cpus=args.num_cpus, data_roots=args.data_root, cache_dir=args.cache_dir,
                           verbose=args.verbose, allow_unfinished=args.allow_unfinished,
                           trial_resources={"cpus_per_trial": args.cpus_per_trial,
                                            "gpus_per_trial": args.gpus_per_trial})
    except CxrError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # a second Ctrl-C, which Tune's first message invites, or one before Tune ran
        if read_jobs(load_settings(args.study_dir).study_uri) is None:
            print("\ninterrupted before the confirm run started: nothing to continue", file=sys.stderr)
        else:
            print("\ninterrupted; continue the confirm run with\n"
                  f"  python -m study.confirm {quote(args.study_dir)} --resume", file=sys.stderr)
        return 130  # as a shell reports a command stopped by Ctrl-C
    from study.driver import analysis_line, errored_line, interrupted_line, unfinished_trials
    from study.tensorboard import tensorboard_line

    settings = load_settings(args.study_dir)
    uri = confirm_uri(settings.study_uri)
    print(f"\nconfirm run: {uri}")
    print(tensorboard_line(uri))
    events = read_trial_events(uri)
    resume_command = f"python -m study.confirm {quote(args.study_dir)} --resume"
    errored = errored_line(events, resume_command)
    sys.stdout.flush()  # what was printed before what follows it on a terminal
    if errored:
        print("\n" + errored, file=sys.stderr)
    unfinished = unfinished_trials(grid, events)
    if unfinished:
        print(interrupted_line(unfinished, "confirm run", resume_command), file=sys.stderr)
        return 130  # as a shell reports a command stopped by Ctrl-C
    print(analysis_line(args.study_dir, search_finished=not unfinished_search(settings.study_uri),
                        allow_unfinished=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
