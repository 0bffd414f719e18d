"""Part 4, search: the full grid against ASHA + Optuna over the same space, and plain Optuna beside them.

Described with the other parts in study.bench.cli's docstring.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from study.bench.common import (Bench, data_root, drop_model_files, run_study_command, space_text, trial_slots,
                                trial_summary, write_space)
from study.bench.settings import Settings, search_space_lr

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

PARALLEL_TRIALS = 2  # of the study as a user runs it on this machine


def parallel_cpus_per_trial(s: Settings) -> int:
    return max(s.num_cpus // PARALLEL_TRIALS, 1)


def parallel_trials_at_once(s: Settings, gpus: int) -> int:
    """How many trials the "two trials at once" study runs at once on the studies' CPUs and the machine's
    `gpus` at --gpus-per-trial: one where they hold only one (a whole GPU each on a one-GPU machine, one core)."""
    return trial_slots(PARALLEL_TRIALS, s.num_cpus, parallel_cpus_per_trial(s), gpus, s.gpus_per_trial)


def search_args(s: Settings, workdir: Path) -> dict[str, list[str]]:
    """The search part's studies: the full grid, then ASHA + Optuna over the same space one trial at a time
    (seeded, repeatable), then the same study as a user runs it on this machine: two trials at once."""
    grid_space = write_space(workdir, "search-grid", search_space_text(s, "grid"))
    asha_space = write_space(workdir, "search-asha", search_space_text(s, s.search_sampler))
    configs, samples = search_trial_counts(s, grid_space)
    budget = ["--image-size", str(s.search_image_size), "--max-epochs", str(s.search_max_epochs),
              "--metric", s.search_metric]
    # One trial at a time with every core: ASHA's decisions and Optuna's proposals then do not depend
    # on which trial finishes first, so the seeded run repeats.
    one_at_a_time = ["--cpus-per-trial", str(s.num_cpus), "--max-concurrent", "1"]
    asha = ["--space", str(asha_space), "--num-samples", str(samples), "--grace-period", str(s.search_grace_period),
            "--reduction-factor", str(s.search_reduction_factor), *budget]
    # The full grid: ASHA with its grace period at the maximum epochs never stops a trial early.
    return {"search-grid": ["--space", str(grid_space), "--num-samples", str(configs), "--asha", "stopping",
                            "--grace-period", str(s.search_max_epochs), "--reduction-factor", "2", *budget,
                            *one_at_a_time],
            "search-asha": [*asha, *one_at_a_time],
            # Which trial reaches a rung first now depends on timing, so its epochs and best may differ.
            "search-asha-parallel": [*asha, "--cpus-per-trial", str(parallel_cpus_per_trial(s)),
                                     "--max-concurrent", str(PARALLEL_TRIALS)]}


def search_trial_counts(s: Settings, grid_space: Path) -> tuple[int, int]:
    """The grid's configurations and the ASHA studies' trials: --search-samples, at most one per configuration."""
    from study.space import load_space

    configs = len(load_space(grid_space).grid())
    return configs, min(s.search_samples or configs, configs)


def search_space_text(s: Settings, sampler: str) -> str:
    """The search part's space (search_spaces/*.yaml's format): the search models, optimizers and learning
    rates (each to 2 significant digits), the batch size fixed, no pretrained weights."""
    search: dict[str, Any] = {
        "model": {"choice": list(s.search_models)},
        "optimizer": {"choice": list(s.search_optimizers)},
        "lr": {"choice": [search_space_lr(lr) for lr in s.search_lrs]},
        "batch_size": {"value": s.batch_size},
    }
    if "sgd" in s.search_optimizers:
        search["momentum"] = {"value": 0.9, "when": {"optimizer": "sgd"}}
    search["pretrained"] = {"value": False}
    return space_text({"description": "Bench search-efficiency space (the full grid against ASHA + Optuna).",
                       "sampler": sampler, "search": search})


def bench_search(bench: Bench) -> None:
    from study.results import read_results
    from study.settings import load_settings, metric_mode
    from study.tables import best_epochs

    s = bench.settings
    studies = search_args(s, bench.workdir)
    configs, samples = search_trial_counts(s, bench.workdir / "search-grid.yaml")
    metric = s.search_metric
    mode = metric_mode(metric)
    grid = run_study_command(bench, "search-grid", studies["search-grid"])
    asha = run_study_command(bench, "search-asha", studies["search-asha"])
    parallel = run_study_command(bench, "search-asha-parallel", studies["search-asha-parallel"])
    outcome, results_of = {}, {}
    for label, study in (("grid", grid), ("asha", asha), ("asha_parallel", parallel)):
        results = results_of[label] = read_results(study.study_uri)
        if results.empty:
            raise RuntimeError(f"the {label} study reported nothing; see {study.log_file}")
        study_settings = load_settings(study.study_uri)
        summary = trial_summary(results)
        best = best_epochs(results, metric, mode, study_settings.tie_break)
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
            "asha": study_settings.asha,
        }
        drop_model_files(study.study_uri)
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
    at_once = outcome["asha_parallel"]["trials_at_once"] = parallel_trials_at_once(s, bench.gpus)
    bench.figure("search/parallel_trials_at_once", at_once)
    bench.figure("search/parallel_epochs", outcome["asha_parallel"]["epochs"])
    bench.figure("search/parallel_best", outcome["asha_parallel"]["best"])
    if at_once >= PARALLEL_TRIALS:
        bench.figure("search/parallel_wall_vs_optuna",
                     outcome["asha_parallel"]["wall_seconds"] / outcome["optuna"]["wall_seconds"])
    else:
        note = (f"the study meant to run {PARALLEL_TRIALS} trials at once ran {at_once} at a time: "
                f"{s.num_cpus} CPUs at {parallel_cpus_per_trial(s)} a trial and {bench.gpus} GPU(s) at "
                f"{s.gpus_per_trial:g} a trial; search/parallel_wall_vs_optuna is left out (give "
                "--gpus-per-trial 0.5, or --num-cpus 2 or more)")
        outcome["asha_parallel"]["note"] = note
        log.warning("search: %s", note)
    replay = replay_schedulers(results_of["grid"], results_of["asha"], s, metric, mode)
    if replay:
        outcome["replay"] = replay
        promoting_best = -replay["promoting"]["best"] if mode == "min" else replay["promoting"]["best"]
        replay["study_form"] = "promoting" if outcome["asha"]["asha"] == "promoting" else "stop_based"
        bench.figure("search/replay_stop_epochs", replay["stop_based"]["epochs"])
        bench.figure("search/replay_promoting_epochs", replay["promoting"]["epochs"])
        bench.figure("search/replay_promoting_epochs_ratio", replay["promoting"]["epochs"] / outcome["grid"]["epochs"])
        bench.figure("search/replay_promoting_best_gap", grid_best - promoting_best)
    bench.details["search"] = {
        "metric": metric, "configs": configs, "asha_samples": samples, "sampler": s.search_sampler,
        "max_epochs": s.search_max_epochs, "grace_period": s.search_grace_period,
        "reduction_factor": s.search_reduction_factor, "image_size": s.search_image_size, "mode": mode,
        "space": search_space_text(s, "grid"), **outcome,
    }


def replay_schedulers(grid: pd.DataFrame, asha: pd.DataFrame, s: Settings, metric: str, mode: str) -> dict[str, Any]:
    """The grid's curves replayed through the study's two ASHA forms (study.asha), one trial at a time, new
    configurations in the order the ASHA study started them (a configuration's seeded curve is the same in any
    study that trains it on as many threads, as the grid and the ASHA study do): stop-based BestEpochASHA and
    PromotingASHA. The replay of the form the study ran must spend the epochs the study spent (a check that the
    replay is faithful); the other says what that form would spend.
    (TPE's proposals after its start-up trials could differ under the other form: the replay keeps the study's.)"""
    from study.asha import BestEpochASHA, PromotingASHA
    from study.settings import TIE_BREAK, metric_mode

    keys = ["config/model", "config/optimizer", "config/lr"]
    curves = {tuple(rows[keys].iloc[0].astype(str)): rows.sort_values("training_iteration")[[metric, TIE_BREAK]]
              .to_numpy().tolist() for _, rows in grid.groupby("trial_id")}
    started = asha.groupby("trial_id")["timestamp"].min().sort_values().index
    order = [tuple(asha.loc[asha["trial_id"] == t, keys].iloc[0].astype(str)) for t in started]
    if any(config not in curves for config in order):
        return {}
    options = dict(time_attr="training_iteration", max_t=s.search_max_epochs, grace_period=s.search_grace_period,
                   reduction_factor=s.search_reduction_factor, tie_break=TIE_BREAK,
                   tie_break_mode=metric_mode(TIE_BREAK))
    replay = {"trials": len(order)}
    schedulers = {"stop_based": BestEpochASHA(**options),
                  "promoting": PromotingASHA(max_running=1, num_trials=len(order), **options)}
    for form, scheduler in schedulers.items():
        scheduler.set_search_properties(metric, mode)
        trained = replay_one_at_a_time(scheduler, [curves[config] for config in order], metric, TIE_BREAK)
        values = [value for n, epochs in enumerate(trained) for value, _ in curves[order[n]][:epochs]]
        replay[form] = {"epochs": sum(trained), "best": float(max(values) if mode == "max" else min(values)),
                        "trials_at_max_epochs": sum(epochs >= s.search_max_epochs for epochs in trained)}
    return replay


def replay_one_at_a_time(scheduler, curves: list[list[tuple[float, float]]], metric: str, tie_break: str) -> list[int]:
    """Feed each curve's epochs ((metric, tie-break) per epoch) to a Tune scheduler as Tune's controller would
    with one slot: the scheduler's choice first (a paused trial it promotes), else the next curve as a new trial,
    one epoch after another until the scheduler stops or pauses it or the curve ends. Returns each curve's
    epochs trained."""
    from types import SimpleNamespace

    from ray.tune.schedulers import TrialScheduler

    trials: list[SimpleNamespace] = []
    controller = SimpleNamespace(get_trials=lambda: trials,
                                 search_alg=SimpleNamespace(is_finished=lambda: len(trials) == len(curves)),
                                 _mark_trial_to_checkpoint=lambda trial: None)  # Tune's snapshot: none here

    def stop_trial(trial):
        scheduler.on_trial_remove(controller, trial)
        trial.status = "TERMINATED"

    controller.stop_trial = stop_trial
    trained = [0] * len(curves)
    while True:
        trial = scheduler.choose_trial_to_run(controller)
        if trial is None and len(trials) < len(curves) and getattr(scheduler, "wants_new_trial", lambda: True)():
            trial = SimpleNamespace(trial_id=str(len(trials)), status="PENDING", config={})
            trials.append(trial)
            scheduler.on_trial_add(controller, trial)
        if trial is None:
            return trained
        trial.status, n = "RUNNING", int(trial.trial_id)
        for epoch in range(trained[n] + 1, len(curves[n]) + 1):
            trained[n] = epoch
            value, second = curves[n][epoch - 1]
            result = {"training_iteration": epoch, metric: value, tie_break: second}
            decision = scheduler.on_trial_result(controller, trial, result)
            if decision == TrialScheduler.PAUSE:
                trial.status = "PAUSED"
                break
            if decision == TrialScheduler.STOP or epoch == len(curves[n]):
                scheduler.on_trial_complete(controller, trial, result)
                trial.status = "TERMINATED"
                break


def plain_optuna_search(bench: Bench, space_file: Path, samples: int) -> dict[str, Any]:
    """The search part's space through Optuna alone, in this process: its TPE sampler (seeded, the
    space's cover_first points enqueued first, as the study does) and its SuccessiveHalvingPruner with
    the study's grace period and reduction factor, each epoch reported, `samples` trials, the same
    cxrnets training, split and seed as the study's trials. Returns epochs spent, the best epoch's
    metric (pruned trials included, as the study counts them) and wall time."""
    import optuna
    import torch

    from cxrnets.errors import DivergedError
    from cxrnets.config import TrainConfig
    from cxrnets.training import TrainingRun, prepare_data
    from study.settings import metric_mode
    from study.space import load_space, trial_config

    s = bench.settings
    space = load_space(space_file)
    metric, mode = s.search_metric, metric_mode(s.search_metric)
    base = {"dataset": s.dataset, "data_root": data_root(s), "image_size": s.search_image_size,
            "epochs": s.search_max_epochs, "seed": s.seed, "cache_dir": str(bench.workdir / "cache"),
            "device": s.device}
    torch.set_num_threads(s.num_cpus)  # as a study trial that reserves every core
    started = time.perf_counter()
    data = prepare_data(TrainConfig.from_dict({**base, "model": "resnet50"}))
    epochs, values = 0, []

    def objective(trial: optuna.Trial) -> float:
        nonlocal epochs
        constants = space(trial)  # define-by-run: suggests into trial.params, returns the constants
        run = TrainingRun(TrainConfig.from_dict({**base, **trial_config(trial.params), **constants}), data)
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
        direction="maximize" if mode == "max" else "minimize", sampler=space.make_sampler(s.seed, samples),
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


