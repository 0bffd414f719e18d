"""Hyperparameter importance through Optuna's evaluators, on trial tables with a known driver."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from study.analysis.importance import MIN_TRIALS, parameter_importance
from study.space import parse_space
from study.tables import COMPLETED, STOPPED_EARLY

METRIC = "val/f1_macro"
SPACE = parse_space({"search": {
    "model": {"choice": ["alexnet", "resnet50"]},
    "lr": {"loguniform": [1.0e-4, 1.0e-1]},
    "batch_size": {"choice": [16, 32, 64]},
    "optimizer": {"choice": ["adam", "sgd"]},
    "momentum": {"uniform": [0.8, 0.99], "when": {"optimizer": ["sgd"]}},
    "weight_decay": {"uniform": [0.0, 0.1]},
    "pretrained": {"value": False},
}})


def trials(count: int, seed: int = 0) -> pd.DataFrame:
    """The metric is driven by lr alone (a peak at 1e-3); the other dimensions are noise."""
    rng = np.random.default_rng(seed)
    lr = 10 ** rng.uniform(-4, -1, count)
    rows = pd.DataFrame({
        "trial_id": [f"t{i:02d}" for i in range(count)], "config/model": rng.choice(["alexnet", "resnet50"], count),
        "config/lr": lr, "config/batch_size": rng.choice([16, 32, 64], count),
        "config/optimizer": rng.choice(["adam", "sgd"], count), "config/weight_decay": rng.uniform(0, 0.1, count),
        "config/pretrained": False, "status": COMPLETED})
    rows["config/momentum"] = np.where(rows["config/optimizer"] == "sgd", rng.uniform(0.8, 0.99, count), np.nan)
    rows[METRIC] = 0.9 - 0.25 * (np.log10(lr) + 3) ** 2 + rng.normal(0, 0.005, count)
    return rows


@pytest.mark.parametrize("evaluator", ["fanova", "ped-anova"])
def test_the_dimension_that_drives_the_metric_comes_first(evaluator):
    importance = parameter_importance("d", trials(40), SPACE.dimensions, METRIC, "max", evaluator, seed=0)
    table = importance.table
    assert importance.trials == 40 and table is not None, importance.reason
    assert table["parameter"].iloc[0] == "lr"
    assert table["importance"].iloc[0] > 0.5
    assert table["importance"].sum() == pytest.approx(1.0)
    # Fixed values and the conditional momentum (absent from Adam trials) are not assessed.
    assert {"pretrained", "momentum"}.isdisjoint(table["parameter"])
    assert set(table["parameter"]) == {"lr", "model", "batch_size", "optimizer", "weight_decay"}


def test_too_few_completed_trials_are_said_not_printed():
    few = trials(MIN_TRIALS + 4)
    few.loc[: 5, "status"] = STOPPED_EARLY  # cut short by ASHA: left out
    importance = parameter_importance("d", few, SPACE.dimensions, METRIC, "max")
    assert importance.table is None and importance.trials == MIN_TRIALS - 2
    assert f"needs at least {MIN_TRIALS}" in importance.reason
    flat = trials(20).assign(**{METRIC: 0.284})  # every trial on the constant prediction
    importance = parameter_importance("d", flat, SPACE.dimensions, METRIC, "max", "ped-anova")
    assert importance.table is None and "same val/f1_macro (0.284" in importance.reason


def test_a_minimised_metric_and_seeded_results():
    table = trials(30)
    table["val/loss"] = -table[METRIC]
    first = parameter_importance("d", table, SPACE.dimensions, "val/loss", "min", "fanova", seed=3).table
    again = parameter_importance("d", table, SPACE.dimensions, "val/loss", "min", "fanova", seed=3).table
    assert first["parameter"].iloc[0] == "lr"
    pd.testing.assert_frame_equal(first, again)


def test_a_dimension_defined_per_condition_spans_its_ranges():
    """The demo's lr: one range for Adam, another for SGD; every trial has an lr, so it is assessed."""
    space = parse_space({"search": {
        "optimizer": {"choice": ["adam", "sgd"]},
        "lr": [{"loguniform": [2.0e-5, 2.0e-3], "when": {"optimizer": ["adam"]}},
               {"loguniform": [1.0e-3, 5.0e-2], "when": {"optimizer": ["sgd"]}}],
        "batch_size": {"choice": [16, 32]}}})
    rng = np.random.default_rng(2)
    optimizer = rng.choice(["adam", "sgd"], 24)
    lr = np.where(optimizer == "adam", 10 ** rng.uniform(-4.7, -2.7, 24), 10 ** rng.uniform(-3, -1.3, 24))
    table = pd.DataFrame({"trial_id": [f"t{i}" for i in range(24)], "config/optimizer": optimizer, "config/lr": lr,
                          "config/batch_size": rng.choice([16, 32], 24), "status": COMPLETED,
                          METRIC: 0.5 + 0.1 * np.log10(lr)})
    importance = parameter_importance("d", table, space.dimensions, METRIC, "max")
    assert importance.table is not None, importance.reason
    assert importance.table["parameter"].iloc[0] == "lr"
