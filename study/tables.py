"""Tables computed from a study's results table (shared by `study.run` and `study.analyze`)."""

from __future__ import annotations

import pandas as pd

COMPARISON_METRICS = ("val/accuracy", "val/precision_macro", "val/recall_macro", "val/f1_macro")
CONFIG_COLUMNS = ("config/optimizer", "config/lr", "config/batch_size", "config/pretrained")


def best_epochs(results: pd.DataFrame, metric: str, mode: str) -> pd.DataFrame:
    """One row per trial: its best epoch on `metric` (the epoch whose checkpoint Tune keeps)."""
    scored = results.dropna(subset=[metric])
    order = scored.sort_values(metric, ascending=(mode == "min"), kind="stable")
    return order.drop_duplicates("trial_id", keep="first").reset_index(drop=True)


def best_trials(results: pd.DataFrame, metric: str, mode: str, by: tuple[str, ...]) -> pd.DataFrame:
    """The best trial (at its best epoch) per group of config columns, e.g. per (dataset, model)."""
    best = best_epochs(results, metric, mode)
    by = [column for column in by if column in best.columns]
    best = best.sort_values(metric, ascending=(mode == "min"), kind="stable")
    return best.drop_duplicates(by, keep="first").sort_values(by).reset_index(drop=True)


def comparison_table(results: pd.DataFrame, metric: str, mode: str,
                     by: tuple[str, ...] = ("config/dataset", "config/model")) -> pd.DataFrame:
    """Best trial per model (and dataset): validation accuracy, macro precision, recall and F1."""
    best = best_trials(results, metric, mode, by)
    columns = [c for c in by if c in best.columns] + ["trial_name", "training_iteration"]
    columns += [c for c in CONFIG_COLUMNS if c in best.columns]
    columns += [c for c in dict.fromkeys((*COMPARISON_METRICS, metric)) if c in best.columns]
    table = best[columns].rename(columns={"training_iteration": "epoch"})
    table.columns = [c.removeprefix("config/") for c in table.columns]
    return table


def markdown_table(table: pd.DataFrame, floatfmt: str = ".3f") -> str:
    """GitHub-flavoured Markdown (pipes), numbers to 3 decimals, learning rates in scientific notation."""
    shown = table.copy()
    for column in shown.columns:
        if column.endswith("lr") and pd.api.types.is_numeric_dtype(shown[column]):
            shown[column] = shown[column].map(lambda v: f"{v:.1e}")
    return shown.to_markdown(index=False, floatfmt=floatfmt)
