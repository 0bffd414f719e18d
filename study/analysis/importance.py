"""Which hyperparameters mattered: Optuna's importance evaluators over the study's trials.

Each dataset's completed trials (every epoch run; trials that ASHA stopped
early are left out, since their best is cut short) become an in-memory
Optuna study, each trial valued at its best epoch's validation metric (what
selection uses), with the distributions of the study's search space (a
dimension defined per condition, such as one learning-rate range per
optimizer, spans its ranges). Optuna assesses the parameters present in
every one of those trials: a conditional dimension (momentum only for SGD)
and a fixed value are left out. With fewer
than MIN_TRIALS trials the estimate would be noise, and the analysis says so
instead.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass

import pandas as pd

log = logging.getLogger("study.analyze")

EVALUATORS = ("fanova", "ped-anova")
MIN_TRIALS = 8


@dataclass
class Importance:
    """One dataset's parameter importances (fractions summing to 1), or why there are none."""

    dataset: str
    evaluator: str
    trials: int
    table: pd.DataFrame | None = None  # columns parameter, importance; most important first
    reason: str = ""


def evaluator_for(name: str, seed: int):
    import optuna

    if name == "fanova":
        return optuna.importance.FanovaImportanceEvaluator(seed=seed)
    if name == "ped-anova":
        return optuna.importance.PedAnovaImportanceEvaluator()
    raise ValueError(f"--importance {name}: choose from {', '.join(EVALUATORS)} or none")


def merged_distribution(variants: list):
    """One distribution for a dimension the space defines per condition (lr: one range for Adam,
    another for SGD): the span of the ranges, or the union of the choices."""
    import optuna

    first = variants[0]
    if len(variants) == 1:
        return first
    if isinstance(first, optuna.distributions.CategoricalDistribution):
        choices = [c for variant in variants for c in variant.choices]
        return optuna.distributions.CategoricalDistribution(list(dict.fromkeys(choices)))
    kind = type(first)
    return kind(min(v.low for v in variants), max(v.high for v in variants), log=all(v.log for v in variants))


def parameter_importance(dataset: str, trials: pd.DataFrame, dimensions: list, metric: str, mode: str,
                         evaluator: str = "fanova", seed: int = 0) -> Importance:
    """`trials`: the study's trial table (study.tables.trial_table) for one dataset; `dimensions`: the
    search space's (study.space.Dimension)."""
    import optuna

    from study.tables import COMPLETED

    done = trials[(trials["status"] == COMPLETED) & trials[metric].notna()]
    variants: dict[str, list] = {}
    for dimension in dimensions:
        distribution = dimension.distribution()
        if distribution is not None and f"config/{dimension.name}" in trials.columns:
            variants.setdefault(dimension.name, []).append(distribution)
    searched = {name: merged_distribution(found) for name, found in variants.items()}
    searched = {name: dist for name, dist in searched.items()
                if not isinstance(dist, optuna.distributions.CategoricalDistribution) or len(dist.choices) > 1}
    if len(done) < MIN_TRIALS:
        return Importance(dataset, evaluator, len(done), reason=(
            f"{len(done)} completed trial(s) on {dataset}; an importance estimate needs at least {MIN_TRIALS} "
            "(fewer would print noise): run a larger study"))
    if not searched:
        return Importance(dataset, evaluator, len(done), reason="the search space has no searched dimension")
    if done[metric].nunique() == 1:
        return Importance(dataset, evaluator, len(done), reason=(
            f"every completed trial reached the same {metric} ({done[metric].iloc[0]:.3f}, often the constant "
            "majority-class prediction): there is no variation to attribute"))
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # not "A new study created in memory"
    try:
        study = optuna.create_study(direction="minimize" if mode == "min" else "maximize")
    finally:
        optuna.logging.set_verbosity(verbosity)
    for row in done.to_dict("records"):
        params, distributions = {}, {}
        for name, distribution in searched.items():
            value = row.get(f"config/{name}")
            if value is None or pd.isna(value):
                continue  # a conditional dimension this trial does not have
            if isinstance(distribution, optuna.distributions.CategoricalDistribution):
                value = next((c for c in distribution.choices if c == value), value)
            elif isinstance(distribution, optuna.distributions.IntDistribution):
                value = int(value)
            else:
                value = float(value)
            params[name], distributions[name] = value, distribution
        try:
            study.add_trial(optuna.trial.create_trial(params=params, distributions=distributions,
                                                      value=float(row[metric])))
        except ValueError as error:  # a value outside the space: the space file changed since the study
            return Importance(dataset, evaluator, len(done), reason=(
                f"trial {row['trial_id']} does not fit the study's search space ({error})"))
    common = [name for name in searched if all(name in trial.params for trial in study.trials)]
    if not common:
        return Importance(dataset, evaluator, len(done), reason=(
            "no searched parameter is present in every completed trial (conditional dimensions are left out)"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        try:
            importances = optuna.importance.get_param_importances(study, evaluator=evaluator_for(evaluator, seed),
                                                                  params=common)
        except (RuntimeError, ValueError) as error:  # e.g. every trial has the same value
            return Importance(dataset, evaluator, len(done), reason=f"Optuna could not estimate it ({error})")
    table = pd.DataFrame({"parameter": list(importances), "importance": [float(v) for v in importances.values()]})
    return Importance(dataset, evaluator, len(done), table)
