"""Tables computed from a study's results table (shared by `study.run` and `study.analyze`)."""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np
import pandas as pd

from study.settings import metric_mode

COMPARISON_METRICS = ("val/accuracy", "val/precision_macro", "val/recall_macro", "val/f1_macro")
CONFIG_COLUMNS = ("config/optimizer", "config/lr", "config/batch_size", "config/pretrained")  # and those searched
SCIENTIFIC_COLUMNS = ("lr", "weight_decay")


def measured(results: pd.DataFrame) -> pd.DataFrame:
    """The rows of epochs that were measured: not the epoch a trial diverged in (NaN loss), whose row holds
    the worst value of the study metric as a placeholder (study.trainable) and no weights."""
    if "diverged" not in results:
        return results
    return results[~(results["diverged"].fillna(0) > 0)]


def improves(value: float | None, best: float | None, mode: str, tie: float | None = None,
             best_tie: float | None = None, tie_break: str | None = None) -> bool:
    """Whether an epoch of `value` on the study metric (in `mode`) is a trial's new best over its best so far,
    `best` (None: none yet): strictly better on the metric, or equal there and strictly better on `tie_break`
    (the study's tie-break metric; None: plain ties), whose value `tie` beats `best_tie` at the best so far (a
    value beats none). Of epochs tied on both the first stays; a value of NaN or None never improves.

    The one rule of a trial's best epoch: the study's ASHA ranks a trial by it (study.asha), the trial keeps its
    weights (study.checkpoints) and the tables show it (best_epochs)."""
    if not _is_number(value):
        return False
    if best is None:
        return True
    if value != best:
        return value < best if mode == "min" else value > best
    if not tie_break or not _is_number(tie):
        return False
    return not _is_number(best_tie) or (tie < best_tie if metric_mode(tie_break) == "min" else tie > best_tie)


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not math.isnan(value)


def best_epochs(results: pd.DataFrame, metric: str, mode: str, tie_break: str | None = None) -> pd.DataFrame:
    """One row per trial that measured `metric`: its best epoch on it, of epochs tied there the one of the better
    value of `tie_break` (the study's tie-break metric; an epoch without it after those with), then the first
    (improves: the epoch whose best weights the trial keeps, study.checkpoints)."""
    scored = measured(results).dropna(subset=[metric])
    columns, ascending = [metric], [mode == "min"]
    if tie_break and tie_break in scored:
        columns.append(tie_break)
        ascending.append(metric_mode(tie_break) == "min")
    order = scored.sort_values(columns, ascending=ascending, kind="stable", na_position="last")
    return order.drop_duplicates("trial_id", keep="first").reset_index(drop=True)


def rank_key(trial_id: str, value: float, mode: str, tie: float | None = None, tie_break: str | None = None
             ) -> tuple:
    """Sorts trials best first: on the metric's `value` (in `mode`), trials tied on it by the value `tie` of
    `tie_break`, the study's tie-break metric, at the same epoch (a trial without one after those with), then by
    the lower trial id. The study's ASHA breaks ties so too (study.asha); study.run's table, study.analyze,
    study.confirm and --keep (study.checkpoints.weights_to_drop) rank by this key."""
    missing = tie is None or pd.isna(tie)
    tie_mode = metric_mode(tie_break or "")
    return (value if mode == "min" else -value, missing, 0.0 if missing else tie if tie_mode == "min" else -tie,
            trial_id)


def ranked_trials(best: pd.DataFrame, metric: str, mode: str, tie_break: str | None = None) -> pd.DataFrame:
    """Trials at their best epoch (rows of best_epochs), best first (rank_key; `tie_break`: the study's
    tie-break metric, None for plain ties)."""
    ties = best[tie_break] if tie_break in best else pd.Series(None, index=best.index, dtype=float)
    keys = [rank_key(trial_id, value, mode, tie, tie_break)
            for trial_id, value, tie in zip(best["trial_id"], best[metric], ties)]
    return best.iloc[sorted(range(len(best)), key=keys.__getitem__)]


def best_trials(results: pd.DataFrame, metric: str, mode: str, by: tuple[str, ...],
                tie_break: str | None = None) -> pd.DataFrame:
    """The best trial (at its best epoch) per group of config columns, e.g. per (dataset, model), as
    ranked_trials ranks them (`tie_break`: the study's, study.settings.StudySettings.tie_break)."""
    best = ranked_trials(best_epochs(results, metric, mode, tie_break), metric, mode, tie_break)
    by = [column for column in by if column in best.columns]
    return best.drop_duplicates(by, keep="first").sort_values(by).reset_index(drop=True)


def diverged_cells(results: pd.DataFrame, metric: str, by: tuple[str, ...]) -> list[str]:
    """A line for each group of config columns (e.g. dataset and model) whose every trial diverged before
    measuring `metric`: best_trials has no row for it."""
    by = [column for column in by if column in results.columns]
    if not by or "diverged" not in results:
        return []
    scored = set(measured(results).dropna(subset=[metric])["trial_id"])
    lines = []
    for key, group in results.groupby(by, sort=True):
        if set(group["trial_id"]) & scored:
            continue
        ends = group[group["diverged"].fillna(0) > 0]
        if ends.empty:
            continue
        trials = group["trial_id"].nunique()
        epochs = ", ".join(str(epoch) for epoch in sorted(set(epoch_column(ends))))
        cell = " / ".join(str(value) for value in (key if isinstance(key, tuple) else (key,)))
        lines.append(f"{cell}: {f'all {trials} trials' if trials > 1 else 'its one trial'} diverged (NaN loss) at "
                     f"epoch {epochs}, before measuring {metric}: no best")
    return lines


def comparison_table(results: pd.DataFrame, metric: str, mode: str,
                     by: tuple[str, ...] = ("config/dataset", "config/model"),
                     tie_break: str | None = None, searched: tuple[str, ...] = ()) -> pd.DataFrame:
    """Best trial per model (and dataset): its configuration (CONFIG_COLUMNS and the keys of `searched`, the
    study's SearchSpace.searched_keys), validation accuracy, macro precision, recall and F1."""
    best = best_trials(results, metric, mode, by, tie_break)
    columns = [c for c in by if c in best.columns] + ["trial_name", "training_iteration"]
    shown = dict.fromkeys((*CONFIG_COLUMNS, *(f"config/{key}" for key in searched)))
    columns += [c for c in shown if c in best.columns and c not in by]
    columns += [c for c in dict.fromkeys((*COMPARISON_METRICS, metric)) if c in best.columns]
    table = best[columns].rename(columns={"training_iteration": "epoch"})
    table.columns = [c.removeprefix("config/") for c in table.columns]
    return table


def markdown_table(table: pd.DataFrame) -> str:
    """GitHub-flavoured Markdown as `study.run` prints it and `report.md` holds it: integer columns as integers,
    other numbers to 3 decimals (1.000 beside 0.950; below 0.0005, not 0, to 2 significant digits: 0.0004, never
    0.000; from 1e6 on to 3: 1.5e+06), learning rates and weight decays in scientific notation, booleans as
    true/false, missing values blank."""
    shown, align = pd.DataFrame(index=table.index), []
    for column in table.columns:
        values = table[column]
        numeric = pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)
        if numeric and str(column).removeprefix("config/") in SCIENTIFIC_COLUMNS:
            shown[column] = values.map(lambda v: "" if pd.isna(v) else f"{v:.1e}")
        elif numeric and pd.api.types.is_integer_dtype(values):
            shown[column] = values.map(lambda v: "" if _missing(v) else str(int(v)))
        elif numeric:
            shown[column] = values.map(_number)
        else:
            shown[column] = values.map(lambda v: "" if _missing(v) else str(v).lower()
                                       if isinstance(v, (bool, np.bool_)) else str(v))
        align.append("right" if numeric else "left")
    # Every cell is text by now: tabulate must not reparse labels like `0.01` or `7.0e-04` as numbers. A `|`
    # or a line break in a label (a class named Effusion|Infiltration) would split its row.
    shown = shown.map(_markdown_cell)
    shown.columns = [_markdown_cell(str(column)) for column in shown.columns]
    return shown.to_markdown(index=False, disable_numparse=True, colalign=align)


def _markdown_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\r\n", " ").replace("\n", " ")


def _number(value: Any) -> str:
    if _missing(value):
        return ""
    if abs(value) >= 1e6 or 0 < abs(value) < 0.0005:
        return f"{value:.{3 if abs(value) >= 1e6 else 2}g}"
    return f"{value:.3f}"


# ------------------------------------------------------------------ trials, ablations, search summary
# Pure pandas on the results table (study.results.read_results) and the trial events
# (read_trial_events), so that study.run, study.analyze and tests share them.

COMPLETED, STOPPED_EARLY, DIVERGED, FAILED, UNFINISHED = (
    "completed", "stopped early", "diverged", "failed", "unfinished")
STATUSES = (COMPLETED, STOPPED_EARLY, DIVERGED, FAILED, UNFINISHED)
NOT_SET = "(not set)"  # the ablation row of trials a conditional dimension does not apply to


def epoch_column(results: pd.DataFrame) -> pd.Series:
    """The epoch each row reports (the trainable's `epoch`, else Tune's training_iteration)."""
    if "epoch" in results.columns:
        return results["epoch"].fillna(results["training_iteration"]).astype(int)
    return results["training_iteration"].astype(int)


def trial_table(results: pd.DataFrame, events: pd.DataFrame, metric: str, mode: str, max_epochs: int,
                configs: dict[str, dict] | None = None, tie_break: str | None = None) -> pd.DataFrame:
    """One row per trial: trial_id, trial_name, its config/ columns, epochs, best epoch and value, status.

    status is one of STATUSES: `completed` (reached max_epochs), `stopped early` (ended before
    max_epochs without diverging: ASHA stopped it), `diverged` (NaN loss), `failed` (Tune recorded an
    error), `unfinished` (no end recorded and short of max_epochs: still running or interrupted).
    `configs` adds trials that never reported an epoch (trial_id -> config, e.g. from params.json; a trial whose
    config is unknown has no config/ value). The best epoch is best_epochs' (`tie_break`: the study's tie-break
    metric).
    """
    rows = []
    results = results.assign(_epoch=epoch_column(results)) if len(results) else results
    ended = dict(zip(events["trial_id"], events["event"])) if len(events) else {}
    trial_ids = list(dict.fromkeys([*(results["trial_id"] if len(results) else []), *ended, *(configs or {})]))
    best = (best_epochs(results, metric, mode, tie_break).set_index("trial_id") if len(results) and metric in results
            else None)
    for trial_id in trial_ids:
        own = results[results["trial_id"] == trial_id] if len(results) else results
        row: dict = {"trial_id": trial_id}
        if len(own):
            last = own.iloc[-1]
            row["trial_name"] = last.get("trial_name", trial_id)
            for column in own.columns:
                if column.startswith("config/"):
                    row[column] = last[column]
        else:
            config = (configs or {}).get(trial_id, {})
            row["trial_name"] = config.get("__trial_name__", trial_id)
            row.update({f"config/{k}": v for k, v in config.items() if not k.startswith("__")})
        epochs = int(own["_epoch"].max()) if len(own) else 0
        diverged = bool(len(own) and "diverged" in own and (own["diverged"].fillna(0) > 0).any())
        row["epochs"] = epochs
        row["epochs_run"] = len(own)  # epochs trained (a resumed epoch counts once)
        if best is not None and trial_id in best.index and pd.notna(best.loc[trial_id, metric]):
            row["best_epoch"] = int(epoch_column(best.loc[[trial_id]]).iloc[0])
            row[metric] = float(best.loc[trial_id, metric])
        else:
            row["best_epoch"], row[metric] = pd.NA, float("nan")
        row["seconds"] = float(own["time_this_iter_s"].sum()) if "time_this_iter_s" in own else float("nan")
        event = ended.get(trial_id)
        if event == "error":
            row["status"] = FAILED
        elif diverged:
            row["status"] = DIVERGED
        elif epochs >= max_epochs:
            row["status"] = COMPLETED
        elif event == "completed":
            row["status"] = STOPPED_EARLY
        else:
            row["status"] = UNFINISHED
        rows.append(row)
    columns = ["trial_id", "trial_name"]
    table = pd.DataFrame(rows)
    if table.empty:
        return pd.DataFrame(columns=[*columns, "epochs", "epochs_run", "best_epoch", metric, "seconds", "status"])
    config_columns = sorted(c for c in table.columns if c.startswith("config/"))
    for column in config_columns:  # a trial without a value there leaves integers (batch sizes) integers
        given = [row[column] for row in rows if not _missing(row.get(column))]
        if (table[column].isna().any() and given
                and all(isinstance(value, numbers.Integral) and not isinstance(value, bool) for value in given)):
            table[column] = table[column].astype("Int64")
    rest = ["epochs", "epochs_run", "best_epoch", metric, "seconds", "status"]
    table["best_epoch"] = table["best_epoch"].astype("Int64")
    return table[columns + config_columns + rest].sort_values("trial_id").reset_index(drop=True)


def _decade_label(exponent: int) -> str:
    return f"1e{exponent:+03d} – 1e{exponent + 1:+03d}".replace("+", "")


def bin_values(values: pd.Series, scale: str | None = None, max_values: int = 6,
               bins: int = 4) -> tuple[pd.Series, list[str]]:
    """Labels for the ablation rows of one dimension, and their order.

    Each value is its own row where `scale` is "categorical" (a choice: 7 batch sizes are 7 rows), for
    text, and for numbers of unknown scale with at most `max_values` distinct values. Continuous
    numbers (`scale` "log" or "linear", or unknown with more values) are binned: per decade on a log
    scale (`scale="log"`, or positive numbers spanning a factor 10 or more), else in `bins`
    equal-width bins. Labels print numbers to 3 significant digits, or as many as tell them apart. Missing
    values (a conditional dimension) get NOT_SET.
    """
    present = values.dropna()
    numeric = (len(present) > 0 and pd.api.types.is_numeric_dtype(present.infer_objects())
               and not pd.api.types.is_bool_dtype(present.infer_objects()))
    continuous = scale in ("log", "linear") or (scale is None and numeric and present.nunique() > max_values)
    if not numeric or not continuous or present.nunique() <= 1:
        distinct = sorted(present.unique(), key=lambda v: (str(type(v)), v))
        digits = _digits_apart([float(v) for v in distinct if isinstance(v, (float, np.floating))])
        labels = {v: _value_label(v, digits) for v in distinct}
        out = values.map(lambda v: NOT_SET if _missing(v) else labels[v])
        order = list(dict.fromkeys(labels.values()))
    else:
        numbers = present.astype(float)
        log = scale == "log" or (scale is None and numbers.min() > 0 and numbers.max() / numbers.min() >= 10)
        if log and numbers.min() > 0:
            exponent = lambda v: int(np.floor(np.log10(v) + 1e-9))  # noqa: E731
            order = [_decade_label(e) for e in range(exponent(numbers.min()), exponent(numbers.max()) + 1)]
            out = values.map(lambda v: NOT_SET if _missing(v) else _decade_label(exponent(float(v))))
        else:
            edges = np.linspace(numbers.min(), numbers.max(), bins + 1)
            digits = _digits_apart(list(edges))
            order = [f"[{edges[i]:.{digits}g}, {edges[i + 1]:.{digits}g}{']' if i == bins - 1 else ')'}"
                     for i in range(bins)]

            def which(v):
                if _missing(v):
                    return NOT_SET
                index = min(int(np.searchsorted(edges, float(v), side="right")) - 1, bins - 1)
                return order[max(index, 0)]

            out = values.map(which)
        used = set(out)
        order = [label for label in order if label in used]
    if (out == NOT_SET).any():
        order.append(NOT_SET)
    return out, order


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA


def _digits_apart(numbers: list[float], least: int = 3) -> int:
    """The fewest significant digits, at least `least`, that print distinct `numbers` distinct (0.999 and 0.9991
    are one row at 3 digits)."""
    digits = least
    while digits < 17 and len({f"{n:.{digits}g}" for n in numbers}) < len(set(numbers)):
        digits += 1
    return digits


def _value_label(value, digits: int = 3) -> str:
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value)).lower()
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return str(int(value)) if value.is_integer() and abs(value) >= 1 else f"{value:.{digits}g}"
    return str(value)


def ablation_table(trials: pd.DataFrame, dimension: str, metric: str, mode: str,
                   scale: str | None = None) -> pd.DataFrame:
    """Per value (or bin) of one search dimension: trials, how each ended, epochs spent, best and median
    `metric` (each trial counted at its best epoch). The status counts add up to `trials`, and the
    `trials` column to the number of trials in `trials`: pass one dataset's, as trials of datasets pooled
    would show their difference as the dimension's."""
    column = f"config/{dimension}" if f"config/{dimension}" in trials.columns else dimension
    labels, order = bin_values(trials[column], scale)
    frame = trials.assign(_value=labels)
    rows = []
    for label in order:
        group = frame[frame["_value"] == label]
        scores = group[metric].dropna()
        row = {dimension: label, "trials": len(group)}
        row.update({status: int((group["status"] == status).sum()) for status in STATUSES})
        row["epochs"] = int(group["epochs_run"].sum())
        row[f"best {metric}"] = (scores.min() if mode == "min" else scores.max()) if len(scores) else float("nan")
        row[f"median {metric}"] = scores.median() if len(scores) else float("nan")
        rows.append(row)
    return pd.DataFrame(rows)


def search_summary(trials: pd.DataFrame, max_epochs: int, wall_seconds: float | None = None) -> dict:
    """Trials run and how they ended, epochs spent, and the share of the budget (every trial to max_epochs)
    that ASHA saved: the epochs its stopped-early trials did not run. The epochs that trials which diverged,
    failed or are unfinished did not run are counted apart ("epochs not run otherwise")."""
    count = len(trials)
    spent = int(trials["epochs_run"].sum()) if count else 0
    budget = count * max_epochs
    stopped = trials[trials["status"] == STOPPED_EARLY] if count else trials
    saved = int((max_epochs - stopped["epochs"]).clip(lower=0).sum()) if len(stopped) else 0
    summary = {"trials": count}
    summary.update({status: int((trials["status"] == status).sum()) for status in STATUSES})
    summary.update({
        "max epochs": max_epochs,
        "epochs spent": spent,
        "epochs without early stopping": budget,
        "ASHA saving": saved / budget if budget else float("nan"),
        "epochs not run otherwise": max(budget - spent - saved, 0),
        "epochs per trial (mean)": spent / count if count else float("nan"),
        "epochs per trial (min)": int(trials["epochs_run"].min()) if count else 0,
        "epochs per trial (max)": int(trials["epochs_run"].max()) if count else 0,
        "trial compute seconds": float(trials["seconds"].sum()) if count else 0.0,
    })
    if wall_seconds is not None:
        summary["wall seconds"] = float(wall_seconds)
    return summary


def wall_seconds(results: pd.DataFrame, events: pd.DataFrame | None = None) -> float | None:
    """From the start of the first reported epoch to the last report or trial end."""
    if results.empty or "timestamp" not in results:
        return None
    spent = results["time_this_iter_s"].fillna(0) if "time_this_iter_s" in results else 0
    start = float((results["timestamp"] - spent).min())
    end = float(results["timestamp"].max())
    if events is not None and len(events):
        end = max(end, float(events["timestamp"].max()))
    return end - start


# ------------------------------------------------------------------ the paper's tables

PAPER_METRICS = ("accuracy", "subset_accuracy", "precision_macro", "recall_macro", "f1_micro", "f1_macro",
                 "roc_auc_macro")
METRIC_TITLES = {"accuracy": "Accuracy", "subset_accuracy": "Subset accuracy (multi-label)",
                 "precision_macro": "Macro precision", "recall_macro": "Macro recall",
                 "f1_micro": "Micro F1 (multi-label)", "f1_macro": "Macro F1", "roc_auc_macro": "Macro ROC AUC"}


def paper_table(cells: pd.DataFrame, metric: str, models: list[str] | None = None,
                datasets: list[str] | None = None) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """One metric as the paper shows it: datasets as rows, models as columns.

    `cells` has columns dataset, model and `metric`, one row per evaluated trial (several per cell
    with top-k). Returns (mean, std, n) tables indexed by dataset with one column per model; a cell
    with no trial is NaN (n 0). std is the sample standard deviation (NaN for one trial).
    """
    scored = cells.dropna(subset=[metric]) if metric in cells else cells.iloc[0:0].assign(**{metric: []})
    models = models or list(dict.fromkeys(cells["model"]))
    datasets = datasets or sorted(scored["dataset"].unique())
    grouped = scored.groupby(["dataset", "model"])[metric]
    shape = lambda series: (series.unstack("model").reindex(index=datasets, columns=models)  # noqa: E731
                            if len(series) else pd.DataFrame(index=datasets, columns=models, dtype=float))
    mean, std, count = shape(grouped.mean()), shape(grouped.std()), shape(grouped.count())
    for table in (mean, std, count):
        table.index.name, table.columns.name = "dataset", None
    return mean.astype(float), std.astype(float), count.fillna(0).astype(int)


def format_paper_table(mean: pd.DataFrame, std: pd.DataFrame, count: pd.DataFrame, top_k: int = 1,
                       digits: int = 3, lower: pd.DataFrame | None = None,
                       upper: pd.DataFrame | None = None) -> pd.DataFrame:
    """Cells as text: `0.812`, or `0.812 ± 0.020` over the top-k trials (`(n=2)` when fewer than k; one
    trial has no spread: `0.812 (n=1)`);
    with `lower` and `upper` (same shape), the 95% interval after it: `0.812 [0.74, 0.87]`
    (`[undefined]` where it is NaN)."""
    shown = pd.DataFrame(index=mean.index, columns=mean.columns, dtype=object)
    for dataset in mean.index:
        for model in mean.columns:
            value, n = mean.loc[dataset, model], int(count.loc[dataset, model])
            if n == 0 or pd.isna(value):
                text = "—"
            elif top_k == 1:
                text = f"{value:.{digits}f}"
            else:
                text = f"{value:.{digits}f}" + (f" ± {std.loc[dataset, model]:.{digits}f}" if n > 1 else "")
                if n < top_k:
                    text += f" (n={n})"
            if lower is not None and text != "—":
                text += " " + interval_text(lower.loc[dataset, model], upper.loc[dataset, model])
            shown.loc[dataset, model] = text
    return shown.reset_index()


def interval_text(lower: float, upper: float, digits: int = 2, signed: bool = False) -> str:
    """`[0.21, 0.41]` (`[-0.04, +0.10]` signed, for a difference), or `[undefined]` where either bound is NaN.

    A difference's bound that is not 0 but rounds to it gets the digits that show its sign (`[+0.003, +0.30]`):
    whether an interval excludes zero is what a reader takes from it.
    """
    if pd.isna(lower) or pd.isna(upper):
        return "[undefined]"
    if not signed:
        return f"[{lower:.{digits}f}, {upper:.{digits}f}]"

    def bound(value: float) -> str:
        shown = digits
        while value != 0 and round(value, shown) == 0 and shown < digits + 3:
            shown += 1
        return f"{value:+.{shown}f}"

    return f"[{bound(lower)}, {bound(upper)}]"
