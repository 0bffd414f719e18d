"""The report's figures (PNG, matplotlib's Agg backend): confusion matrices, ROC curves, validation
curves, pretrained against from scratch, calibration, importance and Grad-CAM."""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd

from cxrnets.saliency import NEAR_UNIFORM, no_region
from study.analysis.evaluation import Evaluation
from study.analysis.importance import Importance
from study.analysis.reading import cell_columns, model_order
from study.analysis.report_tables import class_members, confusion_table, slug
from study.analysis.saliency import SaliencyPanel
from study.analysis.selection import Analysis
from study.tables import best_epochs, epoch_column, measured, ranked_trials


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_confusion(evaluation: Evaluation, title: str, path: Path) -> None:
    """The confusion matrix, each cell's count written in it and coloured by its share of its row (the true
    class's images), so a rare class's row reads as clearly as a common one's."""
    plt = _pyplot()
    table = confusion_table(evaluation)
    if evaluation.multilabel:
        figure, axes = _panels(plt, len(evaluation.classes), 2.6, 0.6)
        for axis, row in zip(axes, table.itertuples(index=False)):
            matrix = np.array([[row.TN, row.FP], [row.FN, row.TP]])
            image = _draw_matrix(axis, matrix, ["absent", "present"], ["absent", "present"])
            axis.set_title(row.label, fontsize=9)
            axis.set_xlabel("predicted", fontsize=8)
            axis.set_ylabel("true", fontsize=8)
        share = "share of the row's images\n(absent: specificity, present: recall)"
    else:
        count = len(evaluation.classes)
        size = max(4.0, 1.1 * count + 2)
        figure, axis = plt.subplots(figsize=(size, size))
        matrix = table.drop(columns="true class").to_numpy()
        image = _draw_matrix(axis, matrix, evaluation.classes, evaluation.classes)
        axis.set_xlabel("predicted class")
        axis.set_ylabel("true class")
        share = "share of the true class's images\n(diagonal: recall)"
    figure.suptitle(title, fontsize=10)
    width = figure.get_figwidth() + 1.1  # an inch on the right for the colour bar and its label
    figure.set_figwidth(width)
    figure.tight_layout(rect=(0, 0, 1 - 1.1 / width, 1))
    bar = figure.colorbar(image, cax=figure.add_axes((1 - 0.9 / width, 0.15, 0.18 / width, 0.7)))
    bar.set_label(share, fontsize=8)
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _wrapped(title: str, inches: float, fontsize: float) -> str:
    """`title` broken into lines that fit `inches` at `fontsize` points (a character is taken as 0.6 of the
    font size wide, more than the average of the default font), so no end of it is cut off."""
    return textwrap.fill(title, width=int(inches * 72 / (0.6 * fontsize)), break_on_hyphens=False)


def _panels(plt, count: int, inches: float, title_room: float):
    """(figure, the first `count` axes) of a grid of square panels, at most 4 a row (the rest hidden)."""
    columns = min(count, 4)
    rows = math.ceil(count / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(inches * columns, inches * rows + title_room), squeeze=False)
    for axis in axes.flat[count:]:
        axis.axis("off")
    return figure, axes.flat[:count]


def _draw_matrix(axis, matrix: np.ndarray, rows: list[str], columns: list[str]):
    """Counts as text, coloured by their share of their row (0 for a row of no image); returns the image."""
    totals = matrix.sum(axis=1, keepdims=True)
    shares = matrix / np.maximum(totals, 1)
    image = axis.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    axis.set_xticks(range(len(columns)), columns, rotation=30, ha="right", fontsize=8)
    axis.set_yticks(range(len(rows)), rows, fontsize=8)
    for (i, j), value in np.ndenumerate(matrix):
        axis.text(j, i, str(int(value)), ha="center", va="center", fontsize=9,
                  color="white" if shares[i, j] > 0.5 else "black")
    return image


def _epoch_axis(axis, epochs: pd.Series) -> None:
    """x: the epochs, ticked at whole numbers only (a lone epoch would get ticks at 0.96 ... 1.04)."""
    axis.set_xlabel("epoch")
    if epochs.nunique() == 1:
        axis.set_xticks(epochs.unique())
    else:
        axis.xaxis.get_major_locator().set_params(integer=True)


def _mark_divergence(axis, results: pd.DataFrame) -> None:
    """A red cross at the foot of the axis at each epoch a trial diverged in (NaN loss): that row's metric is a
    placeholder (study.tables.measured), so the curves stop at the epoch before."""
    if "diverged" not in results:
        return
    epochs = results.loc[results["diverged"].fillna(0) > 0, "_epoch"]
    if len(epochs):
        axis.plot(epochs, [0.02] * len(epochs), "x", color="tab:red", markersize=8, clip_on=False,
                  transform=axis.get_xaxis_transform(), label="diverged (NaN loss)", zorder=20)


def plot_curves(analysis: Analysis, dataset: str, path: Path) -> None:
    """Per model: every trial's validation metric per epoch (grey), the selected trials in colour."""
    plt = _pyplot()
    results = cell_columns(analysis.study.results, analysis.study.settings)
    results = results[results["dataset"] == dataset].assign(_epoch=lambda f: epoch_column(f))
    models = model_order(results["model"])
    figure, axes = plt.subplots(1, len(models), figsize=(4.6 * len(models), 3.8), squeeze=False, sharey=True)
    selected = {s.candidate.trial_id: s for s in analysis.selected if s.dataset == dataset}
    tie_break = analysis.study.settings.tie_break
    best = ranked_trials(best_epochs(results, analysis.metric, analysis.mode, tie_break), analysis.metric,
                         analysis.mode, tie_break)
    baseline = (analysis.study.settings.baselines.get(dataset, {}).get(analysis.metric.removeprefix("val/"))
                if analysis.metric.startswith("val/") else None)
    for axis, model in zip(axes.flat, models):
        if baseline is not None:
            axis.axhline(baseline, color="0.3", linestyle="--", linewidth=1, label="majority class", zorder=0)
        own = results[results["model"] == model]
        order = sorted(own["trial_id"].unique(), key=lambda t: (selected[t].rank if t in selected else 10**6, t))
        highlighted = [t for t in order if t in selected]
        if not highlighted:  # nothing evaluated in this cell: show its best trials on validation
            highlighted = list(best.loc[best["trial_id"].isin(own["trial_id"]), "trial_id"][:analysis.top_k])
        curves = measured(own)
        for trial_id in order:
            curve = curves[curves["trial_id"] == trial_id].sort_values("_epoch")
            if trial_id not in highlighted:
                axis.plot(curve["_epoch"], curve[analysis.metric], color="0.7", linewidth=1, marker=".", zorder=1)
        for rank, trial_id in enumerate(highlighted, 1):  # the best on top, first in the legend
            curve = curves[curves["trial_id"] == trial_id].sort_values("_epoch")
            label = f"#{rank} {curve['trial_name'].iloc[-1].removeprefix(f'{dataset}_')}"
            axis.plot(curve["_epoch"], curve[analysis.metric], marker="o", linewidth=2, label=label,
                      zorder=10 - min(rank, 9))
        _mark_divergence(axis, own)
        trials = own["trial_id"].nunique()
        axis.set_title(f"{model} ({trials} trial{'s' if trials != 1 else ''})")
        _epoch_axis(axis, own["_epoch"])
        axis.grid(alpha=0.3)
        if axis.get_legend_handles_labels()[0]:
            axis.legend(fontsize=7, loc="best")
    axes.flat[0].set_ylabel(f"{analysis.metric} (validation)")
    figure.suptitle(_wrapped(f"{dataset}: {analysis.metric} per epoch; selected trials in colour, others grey",
                             figure.get_figwidth(), 10), fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def pretrained_pairs(results: pd.DataFrame, metric: str, mode: str,
                     tie_break: str | None = None) -> dict[tuple[str, str], dict[bool, str]]:
    """(dataset, model) -> {True: best pretrained trial id, False: best from-scratch trial id}, for the
    cells that have both (ranked as study.tables.ranked_trials ranks them)."""
    if "config/pretrained" not in results:
        return {}
    best = ranked_trials(best_epochs(results, metric, mode, tie_break), metric, mode, tie_break)
    best = best.assign(_pretrained=best["config/pretrained"].fillna(False).astype(bool))
    pairs = {}
    for (dataset, model), group in best.groupby(["dataset", "model"], sort=True):
        if group["_pretrained"].nunique() == 2:
            pairs[(dataset, model)] = {flag: group.loc[group["_pretrained"] == flag, "trial_id"].iloc[0]
                                       for flag in (True, False)}
    return pairs


def plot_pretrained(analysis: Analysis, dataset: str, pairs: dict, path: Path) -> None:
    """The paper's figure: per model, the best ImageNet-pretrained trial against the best from-scratch one."""
    plt = _pyplot()
    results = cell_columns(analysis.study.results, analysis.study.settings)
    results = results.assign(_epoch=epoch_column(results))
    models = [m for m in model_order(results["model"]) if (dataset, m) in pairs]
    figure, axes = plt.subplots(1, len(models), figsize=(4.6 * len(models), 3.8), squeeze=False, sharey=True)
    for axis, model in zip(axes.flat, models):
        for flag, style in ((True, "-"), (False, "--")):
            trial_id = pairs[(dataset, model)][flag]
            curve = measured(results[results["trial_id"] == trial_id]).sort_values("_epoch")
            label = f"{'pretrained' if flag else 'from scratch'} ({curve['trial_name'].iloc[-1].removeprefix(dataset + '_')})"
            axis.plot(curve["_epoch"], curve[analysis.metric], style, marker="o", label=label)
        axis.set_title(model)
        pair = results[results["trial_id"].isin(pairs[(dataset, model)].values())]
        _mark_divergence(axis, pair)
        _epoch_axis(axis, pair["_epoch"])
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7)
    axes.flat[0].set_ylabel(f"{analysis.metric} (validation)")
    figure.suptitle(_wrapped(f"{dataset}: ImageNet-pretrained against from scratch (best trial of each)",
                             figure.get_figwidth(), 10), fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def write_figures(analysis: Analysis, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    split_name = "test" if analysis.split == "test" else "validation"
    for chosen in analysis.selected:
        if chosen.rank != 1:
            continue
        name = f"confusion_{slug(chosen.dataset)}_{slug(chosen.model)}"
        title = (f"{chosen.dataset} / {chosen.model}\ntrial {chosen.candidate.trial_id}, epoch "
                 f"{chosen.evaluation.epoch}, {split_name} split ({len(chosen.evaluation.y_true)} images)")
        plot_confusion(chosen.evaluation, title, folder / f"{name}.png")
        analysis.figures[name] = folder / f"{name}.png"
    results = cell_columns(analysis.study.results, analysis.study.settings)
    for dataset in sorted(results["dataset"].unique()):
        name = f"curves_{slug(dataset)}"
        plot_curves(analysis, dataset, folder / f"{name}.png")
        analysis.figures[name] = folder / f"{name}.png"
    pairs = pretrained_pairs(results, analysis.metric, analysis.mode, analysis.study.settings.tie_break)
    for dataset in sorted({d for d, _ in pairs}):
        name = f"pretrained_{slug(dataset)}"
        plot_pretrained(analysis, dataset, pairs, folder / f"{name}.png")
        analysis.figures[name] = folder / f"{name}.png"
    for importance in analysis.importances:
        if importance.table is not None:
            name = f"importance_{slug(importance.dataset)}"
            plot_importance(importance, analysis.metric, folder / f"{name}.png")
            analysis.figures[name] = folder / f"{name}.png"
    best = [c for c in analysis.selected if c.rank == 1]
    for dataset in dict.fromkeys(c.dataset for c in best):
        name = f"roc_{slug(dataset)}"
        plot_roc([c for c in best if c.dataset == dataset], dataset, split_name, folder / f"{name}.png")
        analysis.figures[name] = folder / f"{name}.png"
    for dataset in dict.fromkeys(c.dataset for c in best):
        name = f"reliability_{slug(dataset)}"
        plot_reliability([c for c in best if c.dataset == dataset], dataset, split_name, folder / f"{name}.png")
        analysis.figures[name] = folder / f"{name}.png"
    for panel in analysis.saliency:
        name = f"gradcam_{panel.slug}"
        plot_gradcam(panel, folder / f"{name}.png")
        analysis.figures[name] = folder / f"{name}.png"


def plot_roc(cells: list, dataset: str, split_name: str, path: Path) -> None:
    """One panel per class (label): each cell's chosen model's ROC curve of that class against the rest
    (the class's probability as the score), its AUC in the legend, and a marker where the model's own
    decision (the most probable class; multi-label: probability 0.5) sits: sensitivity against
    1 − specificity. A class without members or without non-members on the split has no curve."""
    from sklearn.metrics import roc_auc_score, roc_curve

    plt = _pyplot()
    first = cells[0].evaluation
    figure, axes = _panels(plt, len(first.classes), 3.6, 0.5)
    members, _ = class_members(first)
    decisions = [class_members(chosen.evaluation)[1] for chosen in cells]  # each model's predicted classes
    for k, (axis, name) in enumerate(zip(axes, first.classes)):
        axis.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1)
        truth = members[:, k]
        axis.set(xlim=(-0.02, 1.02), ylim=(-0.02, 1.02), xlabel="1 − specificity", ylabel="sensitivity",
                 title=f"{name} ({int(truth.sum())} of {len(truth)} images)")
        if truth.all() or not truth.any():
            axis.text(0.5, 0.5, "no curve: the split has\nonly one side of this class", ha="center", va="center",
                      fontsize=8)
            continue
        for chosen, guessed in zip(cells, decisions):
            scores = chosen.evaluation.scores[:, k]
            fpr, tpr, _ = roc_curve(truth, scores)
            auc = roc_auc_score(truth, scores)
            line, = axis.plot(fpr, tpr, label=f"{chosen.model} (AUC {auc:.2f})")
            axis.plot(guessed[~truth, k].mean(), guessed[truth, k].mean(), marker="o", color=line.get_color())
        axis.legend(loc="lower right", fontsize=7)
    figure.suptitle(f"{dataset}: ROC, each class against the rest, {split_name} split; dots: the models' decisions",
                    fontsize=10)
    figure.tight_layout(rect=(0, 0, 1, 1 - 0.4 / figure.get_figheight()))  # room for the title above the panels
    figure.savefig(path, dpi=110)
    plt.close(figure)


def plot_reliability(cells: list, dataset: str, split_name: str, path: Path) -> None:
    """Each cell's chosen model: per probability bin of its forecasts (cxrnets.metrics.calibration's: the
    predicted class single-label, each label multi-label), how often they came true against their mean
    probability (marker area: forecasts in the bin), beside the diagonal of a calibrated model."""
    from cxrnets.metrics import calibration, reliability_bins

    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(5.5, 5))
    axis.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="calibrated")
    for chosen in cells:
        evaluation = chosen.evaluation
        points = reliability_bins(evaluation.y_true, evaluation.scores, evaluation.multilabel)
        ece = calibration(evaluation.y_true, evaluation.scores, evaluation.multilabel)["ece"][0]
        line, = axis.plot(points["probability"], points["observed"], marker="o",
                          label=f"{chosen.model} (ECE {ece:.3f})")
        area = 20 + 200 * points["forecasts"] / points["forecasts"].sum()
        axis.scatter(points["probability"], points["observed"], s=area, alpha=0.3, color=line.get_color())
    first = cells[0].evaluation
    if first.multilabel:
        labels = ("a label's probability", "share of the (image, label) pairs in the bin with the label")
        counted = f"{len(first.y_true)} images x {len(first.classes)} labels"
    else:
        labels = ("confidence (the predicted class's probability)", "accuracy of the images in the bin")
        counted = f"{len(first.y_true)} images"
    axis.set(xlim=(0, 1), ylim=(0, 1), xlabel=labels[0], ylabel=labels[1],
             title=_wrapped(f"{dataset}: calibration, {split_name} split ({counted})", figure.get_figwidth() - 1, 12))
    axis.legend(loc="upper left", fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def plot_gradcam(panel: SaliencyPanel, path: Path) -> None:
    """One row per set: each image in grey with its Grad-CAM map laid over it."""
    plt = _pyplot()
    columns = max(len(row.images) for row in panel.rows)
    title = textwrap.wrap(
        f"{panel.dataset} / {panel.model}: Grad-CAM of the predicted class ({panel.layer}, {panel.grid} grid on "
        f"{panel.image_size} px); red title: wrong prediction; not drawn: 'flat map', no region raised the "
        "predicted class's score; 'uniform map', the grid tells no regions apart; 'near-uniform map', every "
        f"cell within {NEAR_UNIFORM:.0%} of the peak", width=max(40, int(12 * 1.9 * columns)), break_on_hyphens=False)
    figure, axes = plt.subplots(len(panel.rows), columns,
                                figsize=(1.9 * columns, 2.4 * len(panel.rows) + 0.2 + 0.2 * len(title)), squeeze=False)
    for axis in axes.flat:
        axis.set_xticks([])
        axis.set_yticks([])
        axis.set_frame_on(False)
    for r, row in enumerate(panel.rows):
        axes[r, 0].set_ylabel(row.name, fontsize=9)
        for c, (image, heat) in enumerate(zip(row.images, row.maps)):
            axis = axes[r, c]
            axis.imshow(image.transpose(1, 2, 0).mean(axis=2), cmap="gray", vmin=0, vmax=255)
            unmarked = no_region(heat)
            if not unmarked:
                axis.imshow(heat, cmap="jet", alpha=0.45, vmin=0, vmax=1)
            right = row.true[c] == row.predicted[c]
            axis.set_title(f"{row.true[c]} →\n{row.predicted[c]} ({row.probability[c]:.2f})"
                           + (f"\n{unmarked}" if unmarked else ""), fontsize=7, color="black" if right else "tab:red")
    figure.suptitle("\n".join(title), fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def plot_importance(importance: Importance, metric: str, path: Path) -> None:
    """Horizontal bars, most important on top."""
    plt = _pyplot()
    table = importance.table.iloc[::-1]
    figure, axis = plt.subplots(figsize=(6.0, 1.2 + 0.45 * len(table)))
    axis.barh(table["parameter"], table["importance"], color="tab:blue")
    for y, value in enumerate(table["importance"]):
        axis.text(value, y, f" {value:.2f}", va="center", fontsize=8)
    axis.set_xlim(0, max(1.0, float(table["importance"].max()) * 1.15))
    axis.set_xlabel(f"share of the variance of the best {metric} ({importance.evaluator})")
    axis.set_title(f"{importance.dataset}: hyperparameter importance ({importance.trials} completed trials)",
                   fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
