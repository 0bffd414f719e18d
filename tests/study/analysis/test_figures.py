"""The report's figures, read back from the drawn matplotlib figure: titles, ticks and what is laid over what."""

from __future__ import annotations

import types

import numpy as np
import pandas as pd
import pytest

from study.analysis.evaluation import Evaluation
from study.analysis.figures import plot_confusion, plot_curves, plot_gradcam, plot_pretrained, plot_reliability
from study.analysis.saliency import SaliencyPanel, SaliencyRow


@pytest.fixture
def drawn(monkeypatch):
    """The figures a plot function draws, kept open instead of closed after saving."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figures = []
    monkeypatch.setattr(plt, "close", figures.append)
    yield figures
    monkeypatch.undo()
    for figure in figures:
        plt.close(figure)


def test_a_near_uniform_grad_cam_map_is_labelled_and_not_drawn(drawn, tmp_path):
    near_uniform = np.full((16, 16), 0.9)
    near_uniform[:8] = 1.0
    marked = np.zeros((16, 16))
    marked[:8] = 1.0
    row = SaliencyRow("internal test", np.full((2, 3, 16, 16), 128, dtype=np.uint8), np.stack([near_uniform, marked]),
                      ["No Finding", "COVID-19"], ["COVID-19", "COVID-19"], np.array([0.37, 0.41]))
    panel = SaliencyPanel("d", "alexnet", "t1", "features.10", "3x3", 16, 2, [row])
    plot_gradcam(panel, tmp_path / "gradcam.png")
    axes = drawn[0].axes
    assert axes[0].get_title().endswith("near-uniform map") and len(axes[0].images) == 1  # the image alone
    assert "map" not in axes[1].get_title() and len(axes[1].images) == 2                  # the map over it
    assert "'near-uniform map', every cell within 20% of the peak" in drawn[0]._suptitle.get_text().replace("\n", " ")


def test_a_model_of_one_trial_of_one_epoch_gets_whole_epoch_ticks_and_a_singular_title(drawn, tmp_path):
    results = pd.DataFrame({"trial_id": ["a", "b", "b", "c"], "trial_name": ["d_alexnet_a", "d_vgg11_b", "d_vgg11_b",
                                                                             "d_vgg11_c"],
                            "config/model": ["alexnet", "vgg11", "vgg11", "vgg11"], "epoch": [1, 1, 2, 1],
                            "training_iteration": [1, 1, 2, 1], "val/f1_macro": [0.28, 0.3, 0.4, 0.35]})
    settings = types.SimpleNamespace(data_roots={"d": "/data"}, baselines={}, tie_break="val/loss")
    analysis = types.SimpleNamespace(study=types.SimpleNamespace(results=results, settings=settings), selected=[],
                                     metric="val/f1_macro", mode="max", top_k=1)
    plot_curves(analysis, "d", tmp_path / "curves.png")
    alexnet, vgg11 = drawn[0].axes
    assert alexnet.get_title() == "alexnet (1 trial)" and list(alexnet.get_xticks()) == [1]
    assert vgg11.get_title() == "vgg11 (2 trials)"
    assert all(tick == int(tick) for tick in vgg11.get_xticks())


def test_a_diverged_epoch_is_marked_not_drawn_as_a_measured_value(drawn, tmp_path):
    """Trial b diverged in its epoch 3, whose row holds the placeholder 0.0 (the worst macro F1): its curve
    fell to 0.0 as if measured."""
    results = pd.DataFrame({"trial_id": ["a", "a", "a", "b", "b", "b"], "trial_name": ["d_alexnet_a"] * 3 + ["d_alexnet_b"] * 3,
                            "config/model": "alexnet", "epoch": [1, 2, 3, 1, 2, 3], "training_iteration": [1, 2, 3, 1, 2, 3],
                            "val/f1_macro": [0.28, 0.3, 0.4, 0.35, 0.36, 0.0], "diverged": [0, 0, 0, 0, 0, 1]})
    settings = types.SimpleNamespace(data_roots={"d": "/data"}, baselines={}, tie_break="val/loss")
    analysis = types.SimpleNamespace(study=types.SimpleNamespace(results=results, settings=settings), selected=[],
                                     metric="val/f1_macro", mode="max", top_k=2)
    plot_curves(analysis, "d", tmp_path / "curves.png")
    (axis,) = drawn[0].axes
    drawn_values = [value for line in axis.get_lines() if line.get_label() != "diverged (NaN loss)"
                    for value in line.get_ydata()]
    assert 0.0 not in drawn_values and 0.36 in drawn_values
    (mark,) = [line for line in axis.get_lines() if line.get_label() == "diverged (NaN loss)"]
    assert list(mark.get_xdata()) == [3]
    assert "diverged (NaN loss)" in [text.get_text() for text in axis.get_legend().get_texts()]


def test_a_confusion_matrix_colours_each_row_by_its_share_so_a_rare_class_reads_too(drawn, tmp_path):
    """Coloured by raw counts, the 2 No Finding images (both right) were near white beside 30 COVID-19 ones."""
    y_true = np.r_[np.zeros(30, int), np.ones(8, int), [2, 2]]
    predicted = np.r_[np.zeros(27, int), [1, 1, 1], np.zeros(4, int), np.ones(4, int), [2, 2]]
    evaluation = Evaluation("t1", 3, "test", {}, y_true, np.eye(3)[predicted], ["COVID-19", "Other pneumonia",
                            "No Finding"], False, {}, np.arange(40), np.zeros((40, 3)))
    plot_confusion(evaluation, "d / alexnet", tmp_path / "confusion.png")
    matrix, bar = drawn[0].axes
    np.testing.assert_allclose(matrix.images[0].get_array(), [[0.9, 0.1, 0], [0.5, 0.5, 0], [0, 0, 1]])
    assert [text.get_text() for text in matrix.texts] == ["27", "3", "0", "4", "4", "0", "0", "0", "2"]
    assert bar.get_ylabel() == "share of the true class's images\n(diagonal: recall)"

    multilabel = Evaluation("t1", 3, "test", {}, np.array([[1, 0], [1, 1], [0, 0]]), np.array([[0.9, 0.1]] * 3),
                            ["COVID-19", "Effusion"], True, {}, np.arange(3), np.zeros((3, 2)))
    plot_confusion(multilabel, "d / alexnet", tmp_path / "multilabel.png")
    covid, effusion, bar = drawn[1].axes
    np.testing.assert_allclose(covid.images[0].get_array(), [[0, 1], [0, 1]])  # TN FP / FN TP of 1 and 2 images
    np.testing.assert_allclose(effusion.images[0].get_array(), [[1, 0], [1, 0]])
    assert bar.get_ylabel().startswith("share of the row's images")


def inside_the_figure(figure, title) -> bool:
    """Whether the drawn `title` (a suptitle or an axis title) lies wholly within the figure, no end cut off."""
    figure.canvas.draw()
    extent, bounds = title.get_window_extent(), figure.bbox
    return bounds.x0 <= extent.x0 and extent.x1 <= bounds.x1 and bounds.y0 <= extent.y0 and extent.y1 <= bounds.y1


def test_the_titles_of_a_one_model_study_s_figures_fit_their_width(drawn, tmp_path):
    """One model, one panel 4.6 in wide: 'estxray-3class: val/f1_macro per epoch; selected trials in colour,
    oth' was all the curves' title showed, cut off on both sides."""
    dataset = "covid-chestxray-3class"
    results = pd.DataFrame({"trial_id": ["a", "a", "b", "b"], "trial_name": [f"{dataset}_alexnet_a"] * 2
                            + [f"{dataset}_alexnet_b"] * 2, "config/model": "alexnet",
                            "config/pretrained": [True, True, False, False], "epoch": [1, 2, 1, 2],
                            "training_iteration": [1, 2, 1, 2], "val/f1_macro": [0.28, 0.3, 0.35, 0.4]})
    settings = types.SimpleNamespace(data_roots={dataset: "/data"}, baselines={}, tie_break="val/loss")
    analysis = types.SimpleNamespace(study=types.SimpleNamespace(results=results, settings=settings), selected=[],
                                     metric="val/f1_macro", mode="max", top_k=1)
    plot_curves(analysis, dataset, tmp_path / "curves.png")
    plot_pretrained(analysis, dataset, {(dataset, "alexnet"): {True: "a", False: "b"}}, tmp_path / "pretrained.png")
    for figure, words in zip(drawn, ("val/f1_macro per epoch; selected trials in colour, others grey",
                                     "ImageNet-pretrained against from scratch (best trial of each)")):
        assert figure.get_figwidth() == pytest.approx(4.6)
        title = figure._suptitle
        assert title.get_text().replace("\n", " ") == f"{dataset}: {words}"  # all of it, in lines
        assert inside_the_figure(figure, title), title.get_text()

    y_true = np.array([0, 1, 2, 0])
    evaluation = Evaluation("t1", 3, "val", {}, y_true, np.eye(3)[y_true] * 0.8 + 0.05, ["COVID-19",
                            "Other pneumonia", "No Finding"], False, {}, np.arange(4), np.zeros((4, 3)))
    long_name = "covid-radiography-3class"
    plot_reliability([types.SimpleNamespace(model="alexnet", evaluation=evaluation)], long_name, "validation",
                     tmp_path / "reliability.png")
    (axis,) = drawn[2].axes
    assert axis.get_title().replace("\n", " ") == f"{long_name}: calibration, validation split (4 images)"
    assert inside_the_figure(drawn[2], axis.title), axis.get_title()
