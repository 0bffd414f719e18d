"""The report's tables, built from an Analysis: the paper's comparison tables, the baseline, the
validation table, ablations, confusion matrices and per-class metrics."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from cxrnets.errors import CxrError
from study.analysis.confirmation import seed_differences, seed_runs_table, seed_summary
from study.analysis.evaluation import Evaluation
from study.analysis.reading import cell_columns, model_order, search_dimensions
from study.analysis.selection import Analysis
from study.analysis.uncertainty import (BASELINE, SplitBootstrap, class_patients, percentile_interval,
                                        proportion_interval, same_in_every_resample)
from study.tables import (PAPER_METRICS, ablation_table, comparison_table, format_paper_table, interval_text,
                          paper_table, rank_key)


# The per-class figures that are proportions of images: their intervals are proportion_interval's.
PROPORTIONS = ("precision", "recall", "specificity")
# The summary figures that are one predictor's proportion of images (accuracy multi-label: of image-labels): the
# same.
IMAGE_PROPORTIONS = ("accuracy", "subset_accuracy")
# Shown for a figure that is the same in every resample (the CSV leaves its bounds empty and says `no spread`).
NO_SPREAD = "[no spread]"


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", str(text)).strip("-") or "x"


def selected_table(analysis: Analysis) -> pd.DataFrame:
    """One row per evaluated trial: its cell, rank, status in the study (failed, unfinished, ...), config, epochs
    and metrics on the split."""
    rows = []
    trials = analysis.trials.set_index("trial_id")
    config_columns = [c for c in trials.columns if c.startswith("config/") and c not in
                      ("config/dataset", "config/model")]
    for chosen in analysis.selected:
        candidate, evaluation = chosen.candidate, chosen.evaluation
        row = {"dataset": chosen.dataset, "model": chosen.model, "rank": chosen.rank,
               "trial_id": candidate.trial_id, "trial_name": candidate.trial_name,
               "status": trials.loc[candidate.trial_id, "status"]}
        row.update({c.removeprefix("config/"): trials.loc[candidate.trial_id, c] for c in config_columns})
        row.update({"best epoch": candidate.best_epoch, "evaluated epoch": evaluation.epoch,
                    f"{analysis.metric} (recorded)": candidate.value})
        row.update(evaluation.metrics)
        bootstrap = analysis.bootstraps.get(chosen.dataset)
        if bootstrap is not None:
            prefix = f"{analysis.split}/"
            for name, samples in bootstrap.samples[candidate.trial_id].summary.items():
                if prefix + name in evaluation.metrics:
                    lower, upper, flat = predictor_interval(bootstrap, evaluation, evaluation.scores, name, samples)
                    row[f"{prefix}{name} lower"], row[f"{prefix}{name} upper"] = lower, upper
                    if flat:
                        row[f"{prefix}{name} no spread"] = True
        rows.append(row)
    for failed in analysis.failed:
        candidate = failed.candidate
        row = {"dataset": failed.dataset, "model": failed.model, "rank": failed.rank,
               "trial_id": candidate.trial_id, "trial_name": candidate.trial_name,
               "status": trials.loc[candidate.trial_id, "status"]}
        row.update({c.removeprefix("config/"): trials.loc[candidate.trial_id, c] for c in config_columns})
        row.update({"best epoch": candidate.best_epoch, "evaluated epoch": candidate.epoch,
                    f"{analysis.metric} (recorded)": candidate.value, f"failed on {analysis.split}": failed.reason})
        rows.append(row)
    table = with_no_spread_filled(pd.DataFrame(rows))
    if analysis.failed:  # each failed trial among its cell's
        order = model_order(table["model"])
        table = table.sort_values(["dataset", "model", "rank"], key=lambda column: column.map(order.index)
                                  if column.name == "model" else column, kind="stable").reset_index(drop=True)
    return table


def build_tables(analysis: Analysis) -> None:
    """Every table of the report into analysis.tables (names starting with `_`: text for report.md only)."""
    tables = analysis.tables
    cells = selected_table(analysis)
    tables["selected_trials"] = cells
    # The mean test loss has no per-image resampling here: the CSV keeps it, the report shows the figures
    # that carry their interval.
    shown = cells.drop(columns=[f"{analysis.split}/loss"], errors="ignore") if analysis.bootstraps else cells
    tables["_shown_selected_trials"] = with_intervals(shown) if len(shown) else shown
    tables.update(comparison_tables(analysis, cells))
    tables.update(baseline_tables(analysis))
    if analysis.bootstraps:
        tables["paired_differences"] = paired_differences(analysis)
    if analysis.confirmation is not None:
        tables.update(seed_tables(analysis))
    # The validation table study.run prints at the end of a run (same code: study.tables.comparison_table).
    try:
        searched = analysis.study.settings.search_space().searched_keys()
    except CxrError:  # a space this version no longer parses: the fixed columns alone
        searched = ()
    tables["validation_best"] = comparison_table(analysis.study.results, analysis.metric, analysis.mode,
                                                 tie_break=analysis.study.settings.tie_break, searched=searched)
    tables["trials"] = analysis.trials
    tables.update(ablation_tables(analysis))
    tables["search_summary"] = pd.DataFrame([analysis.summary])
    for importance in analysis.importances:
        if importance.table is not None:
            tables[f"importance_{slug(importance.dataset)}"] = importance.table
    tables.update(per_class_tables(analysis))
    calibrated = calibration_table(analysis)
    if len(calibrated):
        tables["calibration"] = calibrated
        tables["_shown_calibration"] = with_intervals(calibrated)
    if len(analysis.external):
        tables.update(external_tables(analysis))


def ablation_tables(analysis: Analysis) -> dict[str, pd.DataFrame]:
    """`ablation_<dimension>` for every search dimension but the dataset: its ablation_table on each dataset's
    trials apart (those whose config is known: cell_columns), a `dataset` column first. Pooled over datasets, a
    value sampled more on the easier dataset would look better for it."""
    trials = cell_columns(analysis.trials, analysis.study.settings)
    tables = {}
    for dimension, scale in search_dimensions(analysis.study, trials):
        if dimension == "dataset":
            continue
        parts = []
        for dataset in sorted(set(trials["dataset"])):
            part = ablation_table(trials[trials["dataset"] == dataset], dimension, analysis.metric, analysis.mode,
                                  scale)
            part.insert(0, "dataset", dataset)
            parts.append(part)
        if parts:
            tables[f"ablation_{dimension}"] = pd.concat(parts, ignore_index=True)
    return tables


def external_tables(analysis: Analysis) -> dict[str, pd.DataFrame]:
    """The comparison with the external sets (every row), and per summary metric the cells' internal
    figure, external figure and change, each with its interval, for report.md."""
    from study.analysis.external import ALL_PRESENT, EXTERNAL_METRICS

    table = analysis.external
    tables = {"external_evaluation": table}
    internal = f"internal {analysis.split}"
    for metric in (*EXTERNAL_METRICS, "recall", "roc_auc"):
        rows = table[table["metric"] == metric]
        if metric in EXTERNAL_METRICS:
            rows = rows[rows["class"] == ALL_PRESENT]
        shown = pd.DataFrame({
            "dataset": rows["dataset"], "model": rows["model"], "set": rows["set"],
            **({} if metric in EXTERNAL_METRICS else {"class": rows["class"], "images (internal, set)": [
                f"{a}, {b}" for a, b in zip(rows["internal_images"], rows["external_images"])]}),
            internal: [_figure(v, lo, hi) for v, lo, hi in zip(rows["internal"], rows["internal_lower"],
                                                               rows["internal_upper"])],
            "external": [_figure(v, lo, hi) for v, lo, hi in zip(rows["external"], rows["external_lower"],
                                                                 rows["external_upper"])],
            "change": [_figure(v, lo, hi, signed=True) for v, lo, hi in zip(rows["change"], rows["change_lower"],
                                                                            rows["change_upper"])],
        })
        if metric not in EXTERNAL_METRICS:
            shown["note"] = rows["note"].to_numpy()
        tables[f"_shown_external_{metric}"] = shown.reset_index(drop=True)
    return tables


def _figure(value: float, lower: float, upper: float, signed: bool = False) -> str:
    """`0.712 [0.60, 0.81]`; `—` for a figure that does not exist (an absent class)."""
    if pd.isna(value):
        return "—"
    text = f"{value:+.3f}" if signed else f"{value:.3f}"
    if pd.isna(lower) and pd.isna(upper):
        return text
    return f"{text} {interval_text(lower, upper, signed=signed)}"


def comparison_tables(analysis: Analysis, cells: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The paper's tables, one per metric: datasets as rows, models as columns, with intervals."""
    tables = {}
    models = model_order(cell_columns(analysis.trials, analysis.study.settings)["model"])
    prefix = f"{analysis.split}/"
    long = cells.rename(columns=lambda c: c.removeprefix(prefix)) if len(cells) else pd.DataFrame(
        columns=["dataset", "model"])
    failed = failed_cells(analysis)
    # A failed cell has no figure: the mean of its other trials would leave out the one that failed.
    long = long[[(dataset, model) not in failed for dataset, model in zip(long["dataset"], long["model"])]]
    failed_words = f"failed on {analysis.split}"
    for metric in PAPER_METRICS:
        if metric not in long.columns or (long[metric].notna().sum() == 0 and not failed):
            continue
        rows = sorted({*long.loc[long[metric].notna(), "dataset"], *(dataset for dataset, _ in failed)})
        mean, std, count = paper_table(long, metric, models, rows)
        lower, upper, flat = cell_intervals(analysis, metric, mean)
        table = mean.reset_index()
        for model in models:
            if analysis.bootstraps:
                table[f"{model} lower"] = lower[model].to_numpy()
                table[f"{model} upper"] = upper[model].to_numpy()
                if flat[model].any():
                    table[f"{model} no spread"] = flat[model].to_numpy()
            if analysis.top_k > 1:
                table[f"{model} std"] = std[model].to_numpy()
                table[f"{model} n"] = count[model].to_numpy()
        shown = format_paper_table(mean, std, count, analysis.top_k, lower=lower if analysis.bootstraps else None,
                                   upper=upper)
        for model in models:
            marked = flat[model].to_numpy()
            shown.loc[marked, model] = shown.loc[marked, model].str.replace("[undefined]", NO_SPREAD, regex=False)
        if failed:
            table[failed_words] = [", ".join(m for m in models if (dataset, m) in failed) for dataset in rows]
            for dataset, model in failed:
                shown.loc[shown["dataset"] == dataset, model] = failed_words
        tables[f"comparison_{metric}"] = table
        tables[f"_shown_comparison_{metric}"] = shown
    return tables


def failed_cells(analysis: Analysis) -> set[tuple[str, str]]:
    """The (dataset, model) cells with a chosen trial that failed on the split: no figure, no comparison."""
    return {(failed.dataset, failed.model) for failed in analysis.failed}


def baseline_tables(analysis: Analysis) -> dict[str, pd.DataFrame]:
    """The majority-class predictor on each dataset's evaluated images, with intervals."""
    prefix = f"{analysis.split}/"
    rows = []
    for dataset in dict.fromkeys(chosen.dataset for chosen in analysis.selected):
        evaluation = next(c.evaluation for c in analysis.selected if c.dataset == dataset)
        bootstrap = analysis.bootstraps.get(dataset)
        row = {"dataset": dataset}
        for metric in PAPER_METRICS:
            if prefix + metric not in evaluation.baseline:
                continue
            row[metric] = evaluation.baseline[prefix + metric]
            if bootstrap is not None:
                row[f"{metric} lower"], row[f"{metric} upper"], flat = predictor_interval(
                    bootstrap, evaluation, evaluation.baseline_scores, metric, bootstrap.cell([BASELINE], metric))
                if flat:
                    row[f"{metric} no spread"] = True
        rows.append(row)
    if not rows:
        return {}
    table = with_no_spread_filled(pd.DataFrame(rows)).sort_values("dataset", kind="stable")
    return {"majority_baseline": table, "_shown_majority_baseline": with_intervals(table)}


def seed_tables(analysis: Analysis) -> dict[str, pd.DataFrame]:
    """study.confirm's seed runs, their summary per cell, and the differences between models."""
    runs = seed_runs_table(analysis.confirmation, analysis.split, analysis.metric, analysis.study.settings.metric)
    figure = f"{analysis.split}/{reported_metric(analysis)}"
    search = {c.candidate.trial_id: c.evaluation.metrics.get(figure) for c in analysis.selected}
    summary = seed_summary(runs, figure, search, {c.candidate.trial_id: c.candidate.epochs for c in analysis.selected})
    chosen = {(c.dataset, c.model): c.candidate.trial_id for c in analysis.selected if c.rank == 1}
    for cell in summary.to_dict("records"):
        repeated, where = cell["search's trial"], (cell["dataset"], cell["model"])
        if repeated not in search:
            analysis.confirmation.notes.append(
                f"{where[0]} / {where[1]}: the seeds repeat trial {repeated}, which this analysis did not evaluate "
                f"(it chose {chosen.get(where, 'no trial')} on {analysis.metric}: the study went on after "
                "study.confirm, or another --metric); the search's run is left blank")
    return {"seed_runs": runs, "seed_summary": summary,
            "seed_differences": seed_differences(runs, figure)}


def per_class_tables(analysis: Analysis) -> dict[str, pd.DataFrame]:
    """The confusion matrix and per-class figures (with intervals) of each cell's selected trial."""
    from cxrnets.metrics import per_class_table

    tables = {}
    for chosen in analysis.selected:
        if chosen.rank != 1:
            continue
        evaluation = chosen.evaluation
        name = f"{slug(chosen.dataset)}_{slug(chosen.model)}"
        tables[f"confusion_{name}"] = confusion_table(evaluation)
        per_class = per_class_table(evaluation.y_true, evaluation.scores, evaluation.classes, evaluation.multilabel)
        per_class.insert(per_class.columns.get_loc("support") + 1, "patients",
                         class_patients(evaluation.y_true, evaluation.groups, len(per_class), evaluation.multilabel))
        bootstrap = analysis.bootstraps.get(chosen.dataset)
        if bootstrap is not None:
            samples = bootstrap.samples[chosen.candidate.trial_id].per_class
            intervals = class_proportion_intervals(evaluation)
            resampled = {"f1": bootstrap.class_resampled, "roc_auc": bootstrap.auc_resampled}
            no_spread = {column: [defined(j) and same_in_every_resample(samples[column][:, j])
                                  for j in range(len(per_class))] for column, defined in resampled.items()}
            for column, flags in no_spread.items():  # not proportions: the patient bootstrap's, where it moves
                intervals[column] = [percentile_interval(samples[column][:, j])
                                     if resampled[column](j) and not flags[j] else (np.nan, np.nan)
                                     for j in range(len(per_class))]
            for column in (*PROPORTIONS, "f1", "roc_auc"):
                per_class[f"{column} lower"] = [bounds[0] for bounds in intervals[column]]
                per_class[f"{column} upper"] = [bounds[1] for bounds in intervals[column]]
            for column, flags in no_spread.items():
                if any(flags):
                    per_class[f"{column} no spread"] = flags
        # A class with no image on the split: its recall and F1 are 0/0, not measured (metrics counts them 0).
        unmeasured = [c for c in per_class.columns
                      if c.split(" ")[0] in ("recall", "f1") and not c.endswith(" no spread")]
        per_class.loc[per_class["support"] == 0, unmeasured] = np.nan
        if "f1 no spread" in per_class:
            per_class.loc[per_class["support"] == 0, "f1 no spread"] = False
        tables[f"per_class_{name}"] = per_class
        shown = with_intervals(per_class)
        for column in ("recall", "specificity", "f1", "roc_auc"):  # without intervals: still "—" where not measurable
            if pd.api.types.is_numeric_dtype(shown[column]):
                shown[column] = ["—" if pd.isna(value) else f"{value:.3f}" for value in shown[column]]
        tables[f"_shown_per_class_{name}"] = shown
        if evaluation.images is not None:
            tables[f"predictions_{name}"] = predictions_table(evaluation)
    return tables


def calibration_table(analysis: Analysis) -> pd.DataFrame:
    """Per cell's chosen model: Brier score, ECE and classwise ECE on the evaluated split
    (cxrnets.metrics.calibration: top-label forecasts single-label, one per label multi-label), with
    intervals over the same resampled patients as every other figure, and the forecasts' mean probability
    and how often they came true."""
    from cxrnets.metrics import calibration

    rows = []
    for chosen in analysis.selected:
        evaluation = chosen.evaluation
        if chosen.rank != 1:
            continue
        point = {name: float(values[0]) for name, values in
                 calibration(evaluation.y_true, evaluation.scores, evaluation.multilabel).items()}
        row = {"dataset": chosen.dataset, "model": chosen.model, "trial_id": chosen.candidate.trial_id,
               "forecasts": "each label" if evaluation.multilabel else "top label", "images": len(evaluation.y_true)}
        bootstrap = analysis.bootstraps.get(chosen.dataset)
        for name in ("brier", "ece", "classwise_ece"):
            column = name.replace("_", " ")
            row[column] = point[name]
            if bootstrap is not None:
                row[f"{column} lower"], row[f"{column} upper"], flat = interval_of(
                    bootstrap, name, bootstrap.calibration[chosen.candidate.trial_id][name])
                if flat:
                    row[f"{column} no spread"] = True
        row["mean probability"], row["observed"] = point["mean_probability"], point["observed"]
        rows.append(row)
    return with_no_spread_filled(pd.DataFrame(rows))


def predictions_table(evaluation: Evaluation) -> pd.DataFrame:
    """One row per image of the evaluated split: its relpath and patient, the true and predicted class
    (multi-label: ';'-joined labels) and each class's probability: what the split's figures are made of."""
    from cxrnets.metrics import class_names, predictions

    predicted = predictions(evaluation.scores, evaluation.multilabel)
    table = evaluation.images.copy()
    table["true"] = class_names(evaluation.y_true, evaluation.classes, evaluation.multilabel)
    table["predicted"] = class_names(predicted, evaluation.classes, evaluation.multilabel)
    for k, name in enumerate(evaluation.classes):
        table[f"p({name})"] = evaluation.scores[:, k]
    return table


def reported_metric(analysis: Analysis) -> str:
    """The figure the report discusses in words: the study metric on the evaluated split (macro F1
    when the study metric is a loss or not one of the paper's)."""
    metric = analysis.metric.removeprefix("val/")
    return metric if metric in PAPER_METRICS else "f1_macro"


def cell_intervals(analysis: Analysis, metric: str,
                   mean: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(lower, upper, no spread) tables shaped like `mean` (datasets x models): each cell's interval, from the
    mean over its evaluated trials on every resample (a cell of one trial: predictor_interval's); NaN where
    undefined, not resampled or the same in every resample (no spread: True)."""
    lower = pd.DataFrame(np.nan, index=mean.index, columns=mean.columns)
    upper = lower.copy()
    flat = pd.DataFrame(False, index=mean.index, columns=mean.columns)
    evaluations = {c.candidate.trial_id: c.evaluation for c in analysis.selected}
    for dataset in mean.index:
        bootstrap = analysis.bootstraps.get(dataset)
        if bootstrap is None:
            continue
        for model in mean.columns:
            trial_ids = cell_trials(analysis, dataset, model)
            if not trial_ids:
                continue
            samples = bootstrap.cell(trial_ids, metric)
            if len(trial_ids) == 1:
                evaluation = evaluations[trial_ids[0]]
                bounds = predictor_interval(bootstrap, evaluation, evaluation.scores, metric, samples)
            else:
                bounds = interval_of(bootstrap, metric, samples)
            lower.loc[dataset, model], upper.loc[dataset, model], flat.loc[dataset, model] = bounds
    return lower, upper, flat


def cell_trials(analysis: Analysis, dataset: str, model: str) -> list[str]:
    """The evaluated trials of a cell; none for a failed cell (failed_cells)."""
    if (dataset, model) in failed_cells(analysis):
        return []
    return [c.candidate.trial_id for c in analysis.selected if (c.dataset, c.model) == (dataset, model)]


def interval_of(bootstrap: SplitBootstrap, metric: str, samples: np.ndarray) -> tuple[float, float, bool]:
    """(lower, upper, no spread): the percentile interval of `metric`'s resampled values; (nan, nan) where the
    metric's interval is undefined on the split, or where every resample gives the same value (no spread: True;
    an interval of no width would say nothing of the figure's uncertainty)."""
    if metric in bootstrap.undefined:
        return np.nan, np.nan, False
    if same_in_every_resample(samples):
        return np.nan, np.nan, True
    return (*percentile_interval(samples), False)


def predictor_interval(bootstrap: SplitBootstrap, evaluation: Evaluation, scores: np.ndarray, metric: str,
                       samples: np.ndarray) -> tuple[float, float, bool]:
    """interval_of for one predictor's figure (a trial's `scores`, or the baseline's), but the exact interval
    with the patients as clusters for a proportion of images (IMAGE_PROPORTIONS), as the per-class tables give
    precision and recall: its percentile interval is too narrow over few patients, and has no width where each
    patient has one image and each class is all right or all wrong."""
    from cxrnets.metrics import predictions

    if metric not in IMAGE_PROPORTIONS or metric in bootstrap.undefined:
        return interval_of(bootstrap, metric, samples)
    right = predictions(scores, evaluation.multilabel) == evaluation.y_true
    groups = evaluation.groups
    if evaluation.multilabel and metric == "accuracy":  # label-wise: each image-label counts once
        right, groups = right.ravel(), np.repeat(groups, right.shape[1])
    elif evaluation.multilabel:  # subset accuracy: an image is right where all its labels are
        right = right.all(axis=1)
    return (*proportion_interval(right, groups), False)


def with_no_spread_filled(table: pd.DataFrame) -> pd.DataFrame:
    """`table` with its `X no spread` columns (set only on the rows without spread) False elsewhere."""
    flags = [column for column in table.columns if column.endswith(" no spread")]
    return table.astype({column: object for column in flags}).fillna({column: False for column in flags}).astype(
        {column: bool for column in flags})


def with_intervals(table: pd.DataFrame, digits: int = 3) -> pd.DataFrame:
    """A table with `X`, `X lower`, `X upper` columns shown as one `X` column: `0.310 [0.21, 0.41]` (`0.310
    [no spread]` where its `X no spread` column is True)."""
    shown = pd.DataFrame(index=table.index)
    for column in table.columns:
        if column.endswith(" lower") or column.endswith(" upper") or column.endswith(" no spread"):
            continue
        values = table[column]
        if f"{column} lower" not in table or not pd.api.types.is_numeric_dtype(values):
            shown[column] = values
            continue
        flat = table[f"{column} no spread"] if f"{column} no spread" in table else [False] * len(table)
        shown[column] = ["—" if pd.isna(v) else f"{v:.{digits}f} {NO_SPREAD if same else interval_text(lo, hi)}"
                         for v, lo, hi, same in zip(values, table[f"{column} lower"], table[f"{column} upper"], flat)]
    return shown.reset_index(drop=True)


def best_model_on_validation(analysis: Analysis, dataset: str) -> str:
    """The row's reference model: the one whose selected trial is best on the validation metric (chosen before any
    test figure is seen), ranked as the selection ranks trials (study.tables.rank_key: ties by the study's
    tie-break metric at the evaluated epoch, then by trial id); it may be a cell that failed on the split."""
    firsts = [c for c in (*analysis.selected, *analysis.failed) if c.dataset == dataset and c.rank == 1]
    tie_break = analysis.study.settings.tie_break
    return min(firsts, key=lambda c: rank_key(c.candidate.trial_id, c.candidate.value, analysis.mode,
                                              c.candidate.tie, tie_break)).model


def paired_differences(analysis: Analysis) -> pd.DataFrame:
    """Per dataset and metric, each model against the majority baseline and against the row's model
    chosen best on validation: the difference of their figures and its interval over the same
    resampled patients. `distinguishable`: the interval excludes zero (NA where there is no interval).
    `no_spread`: the difference is the same in every resample (no interval). A cell that failed on the split
    has no difference, nor has any against it."""
    prefix = f"{analysis.split}/"
    failed = failed_cells(analysis)
    rows = []
    for dataset, bootstrap in analysis.bootstraps.items():
        models = model_order(c.model for c in analysis.selected if c.dataset == dataset and (dataset, c.model)
                             not in failed)
        reference = best_model_on_validation(analysis, dataset)
        if (dataset, reference) in failed:
            reference = None
        baseline = next(c.evaluation.baseline for c in analysis.selected if c.dataset == dataset)
        for metric in PAPER_METRICS:
            if metric not in bootstrap.samples[BASELINE].summary or prefix + metric not in baseline:
                continue
            point = {model: float(np.mean([c.evaluation.metrics[prefix + metric] for c in analysis.selected
                                           if (c.dataset, c.model) == (dataset, model)])) for model in models}
            samples = {model: bootstrap.cell(cell_trials(analysis, dataset, model), metric) for model in models}
            others = [(BASELINE, baseline[prefix + metric], bootstrap.samples[BASELINE].summary[metric])]
            for model in models:
                versus = others + ([(f"{reference} (best on validation)", point[reference], samples[reference])]
                                   if reference not in (None, model) else [])
                for name, value, reference_samples in versus:
                    resampled = samples[model] - reference_samples
                    flat = bootstrap.difference_defined(metric) and same_in_every_resample(resampled)
                    lower, upper = (percentile_interval(resampled) if bootstrap.difference_defined(metric) and not flat
                                    else (np.nan, np.nan))
                    # No interval: neither distinguishable nor not (NA, an empty CSV cell).
                    distinguishable = pd.NA if np.isnan(lower) else bool(lower > 0 or upper < 0)
                    rows.append({"dataset": dataset, "metric": metric, "model": model, "versus": name,
                                 "difference": point[model] - value, "lower": lower, "upper": upper,
                                 "distinguishable": distinguishable, "no_spread": flat})
    table = pd.DataFrame(rows, columns=["dataset", "metric", "model", "versus", "difference", "lower", "upper",
                                        "distinguishable", "no_spread"])
    return table.astype({"distinguishable": "boolean"})


def never_predicted(evaluation: Evaluation) -> list[str]:
    """The classes (labels) predicted for no image of the split: their precision is 0/0, which the
    per-class table prints as 0 (scikit-learn's zero_division=0), without an interval."""
    _, guessed = class_members(evaluation)
    return [name for name, predicted in zip(evaluation.classes, guessed.any(axis=0)) if not predicted]


def class_members(evaluation: Evaluation) -> tuple[np.ndarray, np.ndarray]:
    """(images, classes) booleans: which images are of each class (label), and which are predicted so."""
    from cxrnets.metrics import class_indicators, predictions

    predicted = predictions(evaluation.scores, evaluation.multilabel)
    count = len(evaluation.classes)
    return (class_indicators(evaluation.y_true, count, evaluation.multilabel),
            class_indicators(predicted, count, evaluation.multilabel))


def class_proportion_intervals(evaluation: Evaluation) -> dict[str, list[tuple[float, float]]]:
    """Each class's precision, recall and specificity interval (study.analysis.uncertainty.proportion_interval,
    over the patients of the images each is a proportion of); (nan, nan) for a precision over no image
    (a class never predicted: 0/0, never_predicted's)."""
    truth, guessed = class_members(evaluation)
    intervals: dict[str, list[tuple[float, float]]] = {figure: [] for figure in PROPORTIONS}
    for k in range(len(evaluation.classes)):
        # figure -> (the images it is a proportion of, which of them it counts right)
        for figure, (members, right) in zip(PROPORTIONS, ((guessed[:, k], truth[:, k]), (truth[:, k], guessed[:, k]),
                                                          (~truth[:, k], ~guessed[:, k]))):
            intervals[figure].append(proportion_interval(right[members], evaluation.groups[members]))
    return intervals


def confusion_table(evaluation: Evaluation) -> pd.DataFrame:
    """Single-label: rows true class, columns `predicted: <class>`. Multi-label: one row per label (TN FP FN TP)."""
    from cxrnets.metrics import confusion_matrix, predictions

    predicted = predictions(evaluation.scores, evaluation.multilabel)
    if evaluation.multilabel:
        rows = []
        for j, label in enumerate(evaluation.classes):
            truth, guess = evaluation.y_true[:, j].astype(int), predicted[:, j]
            rows.append({"label": label, "TN": int(((truth == 0) & (guess == 0)).sum()),
                         "FP": int(((truth == 0) & (guess == 1)).sum()),
                         "FN": int(((truth == 1) & (guess == 0)).sum()),
                         "TP": int(((truth == 1) & (guess == 1)).sum())})
        return pd.DataFrame(rows)
    matrix = confusion_matrix(evaluation.y_true, predicted, len(evaluation.classes))
    table = pd.DataFrame(matrix, columns=[f"predicted: {name}" for name in evaluation.classes])
    table.insert(0, "true class", list(evaluation.classes))
    return table
