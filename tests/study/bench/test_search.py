"""study.bench.search: the search part's space is one the study accepts, and its replay of the grid's curves
counts each scheduler's epochs."""

from __future__ import annotations

import pytest
import yaml

from study.bench import search
from study.bench import settings as bench_settings
from study.space import parse_space


@pytest.mark.parametrize("sampler", ["grid", "tpe"])
def test_search_space_is_a_valid_space_of_the_study(sampler: str) -> None:
    settings = bench_settings.Settings()
    space = parse_space(yaml.safe_load(search.search_space_text(settings, sampler)))
    assert space.sampler == sampler
    assert len(space.grid()) == len(settings.search_models) * len(settings.search_optimizers) * len(settings.search_lrs)
    assert set(space.values_of("model")) == set(settings.search_models)


def test_the_replay_counts_the_epochs_of_each_scheduler() -> None:
    """Three configurations (epoch-1 scores 0.1, 0.3, 0.2, each rising 0.01 an epoch), replayed one trial at a time in the study's
    order A, B, C (grace period 1, reduction factor 3, 3 epochs): the study's stop-based ASHA runs A and B
    to the end (no cutoff yet, then B above A) and stops C below the rung's cutoff (7 epochs); promoting
    ASHA starts all three for one epoch, then resumes only B, the rung's top third (5 epochs)."""
    import pandas as pd

    first_epoch = {"A": 0.1, "B": 0.3, "C": 0.2}
    rows = [{"trial_id": name, "training_iteration": epoch, "timestamp": 100 * i + epoch,
             "config/model": "resnet50", "config/optimizer": "adam", "config/lr": 1e-3 * (i + 1),
             "val/f1_macro": value + 0.01 * (epoch - 1), "val/loss": 1.0}
            for i, (name, value) in enumerate(first_epoch.items()) for epoch in (1, 2, 3)]
    grid = pd.DataFrame(rows)
    settings = bench_settings.Settings(search_max_epochs=3, search_grace_period=1, search_reduction_factor=3)
    replay = search.replay_schedulers(grid, grid, settings, "val/f1_macro", "max")
    assert replay["stop_based"] == {"epochs": 7, "best": pytest.approx(0.32), "trials_at_max_epochs": 2}
    assert replay["promoting"] == {"epochs": 5, "best": pytest.approx(0.32), "trials_at_max_epochs": 1}


@pytest.mark.parametrize("num_cpus, gpus, gpus_per_trial, at_once", [
    (2, 0, 0.0, 2),     # CPU: a core each
    (1, 0, 0.0, 1),     # one core: one trial at a time
    (16, 1, 0.5, 2),    # half the GPU each
    (16, 1, 1.0, 1),    # the whole GPU each: one trial at a time, whatever the cores
    (16, 2, 1.0, 2),
])
def test_the_parallel_study_runs_two_trials_at_once_only_where_the_resources_hold_two(num_cpus, gpus,
                                                                                     gpus_per_trial, at_once) -> None:
    settings = bench_settings.Settings(num_cpus=num_cpus, gpus_per_trial=gpus_per_trial)
    assert search.parallel_trials_at_once(settings, gpus) == at_once
