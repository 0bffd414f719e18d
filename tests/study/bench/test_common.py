"""study.bench.common: each goal is checked against every figure it applies to, at its preset's target."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from study.bench import common


def test_goals_apply_to_every_matching_figure() -> None:
    figures = {"data/cache_vs_decode@64": 12.0, "data/cache_vs_decode@224": 8.0, "trainable/ratio/alexnet": 0.96,
               "trainable/ratio/vgg11": float("nan"), "search/epochs_ratio": 0.5, "search/grid_best": 0.7}
    goals = {goal["figure"]: goal["met"] for goal in common.check_goals(figures)}
    assert goals == {"data/cache_vs_decode@64": True, "data/cache_vs_decode@224": False,
                     "trainable/ratio/alexnet": True, "trainable/ratio/vgg11": False, "search/epochs_ratio": False}
    table = common.render_table(figures, common.check_goals(figures))
    assert "| data " in table and "NO" in table and "yes" in table and "grid_best" in table


def test_the_quick_search_is_held_to_half_the_grids_epochs_the_full_one_to_a_third() -> None:
    """The issue's goals: 1/3 at the full preset, 1/2 at the quick sizes (whose one rung, at epoch 1 of 4
    with factor 4, leaves at least 11 of 32 epochs)."""
    figures = {"search/epochs_ratio": 0.44}
    assert [goal["met"] for goal in common.check_goals(figures, "quick")] == [True]
    assert [goal["met"] for goal in common.check_goals(figures, "full")] == [False]
    assert common.check_goals(figures, "quick")[0]["goal"] == "<= 0.5"


def test_no_goal_is_judged_at_the_smoke_sizes() -> None:
    """The smoke preset gives every figure quickly; its 4-epoch search and seconds-long timings say nothing of
    the goals."""
    figures = {"search/epochs_ratio": 0.75, "trainable/ratio/resnet50": 1.72}
    goals = common.check_goals(figures, "smoke")
    assert [goal["met"] for goal in goals] == [None, None]
    table = common.render_table(figures, goals)
    assert "not judged (smoke sizes)" in table and "yes" not in table and "NO" not in table


def test_a_stop_while_the_report_is_written_keeps_the_previous_one(tmp_path, monkeypatch) -> None:
    """The bench rewrites its JSON after every part; Ctrl-C or SIGTERM in the middle of a write (raised
    as KeyboardInterrupt wherever the bench is) leaves the last complete report, and no temporary file."""
    out = tmp_path / "bench" / "bench.json"
    common.write_report(out, {"figures": {"data/cache_vs_decode@64": np.float64(12.5)}, "parts_not_run": ["search"]})
    write_bytes = Path.write_bytes

    def stopped_halfway(self, data):
        write_bytes(self, data[: len(data) // 2])
        raise KeyboardInterrupt

    monkeypatch.setattr(Path, "write_bytes", stopped_halfway)
    with pytest.raises(KeyboardInterrupt):
        common.write_report(out, {"figures": {"search/best_gap": 0.0}, "parts_not_run": []})
    assert json.loads(out.read_text()) == {"figures": {"data/cache_vs_decode@64": 12.5}, "parts_not_run": ["search"]}
    assert sorted(p.name for p in out.parent.iterdir()) == ["bench.json"]


@pytest.mark.parametrize("trials, cpus, cpus_per_trial, gpus, gpus_per_trial, slots", [
    (10, 16, 1, 0, 0.0, 10),     # CPU trials: as many as the cores hold
    (10, 2, 1, 0, 0.0, 2),
    (3, 16, 1, 0, 0.0, 3),       # no more slots than trials
    (10, 16, 8, 0, 0.0, 2),      # --cpus-per-trial 8
    (10, 16, 1, 1, 0.5, 2),      # half a GPU each: two trials share the one GPU, whatever the cores
    (10, 16, 1, 1, 1.0, 1),      # a whole GPU each: one trial at a time
    (10, 16, 1, 2, 0.5, 4),
    (10, 16, 1, 1, 1 / 3, 3),
    (10, 16, 1, 1, 0.3, 3),      # Ray packs whole trials onto a GPU: 3 x 0.3, not 3.33
    (10, 16, 1, 4, 2.0, 2),
    (10, 2, 1, 4, 0.5, 2),       # the cores are fewer than the GPUs' slots
    (2, 1, 1, 0, 0.0, 1),
])
def test_trial_slots_count_the_cpus_and_the_gpus(trials, cpus, cpus_per_trial, gpus, gpus_per_trial, slots) -> None:
    """How many trials of a study run at once on the resources given: what the orchestration overhead divides
    the trials' time by, and whether the search part's "two trials at once" study can run two at once."""
    assert common.trial_slots(trials, cpus, cpus_per_trial, gpus, gpus_per_trial) == slots
