"""The report's figures, read back from the drawn matplotlib figure: titles, ticks and what is laid over what."""

from __future__ import annotations

import numpy as np
import pytest

from study.analysis.figures import plot_gradcam
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
    assert "'near-uniform map': every cell within 20% of the peak" in drawn[0]._suptitle.get_text()
