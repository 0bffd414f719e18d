"""study.bench: the benchmark runs at its smallest size and gives every figure; its bookkeeping is right.

No timing thresholds here: the figures depend on the machine (and on what else runs on it); the
test only checks that each one is there and finite.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml

from cxrnets.errors import CxrError
from study import bench
from study.space import parse_space

SMOKE_FIGURES = [
    "data/decode_images_per_second@16", "data/cache_images_per_second@16", "data/cache_vs_decode@16",
    "data/model_train_images_per_second@16/resnet50", "data/cache_vs_fastest_model@16",
    "trainable/bare_images_per_second/resnet50", "trainable/trainable_images_per_second/resnet50",
    "trainable/ratio/resnet50",
    "orchestration/first_epoch_seconds", "orchestration/study_wall_seconds", "orchestration/trial_seconds_sum",
    "orchestration/overhead",
    "search/grid_epochs", "search/asha_epochs", "search/epochs_ratio", "search/grid_best", "search/asha_best",
    "search/best_gap", "search/best_ratio",
]


def test_smoke_run_gives_every_figure(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out, workdir = tmp_path / "bench.json", tmp_path / "work"
    code = bench.main(["--smoke", "--out", str(out), "--workdir", str(workdir)])
    printed = capsys.readouterr().out
    report = json.loads(out.read_text())
    assert report["failures"] == {} and code == 0
    figures = report["figures"]
    for name in SMOKE_FIGURES:
        assert name in figures, name
        assert math.isfinite(figures[name]), (name, figures[name])
        assert name.split("/", 1)[1] in printed  # the table shows it
    # every goal of the issue is checked, against every figure it applies to
    checked = {goal["figure"] for goal in report["goals"]}
    assert checked == {"data/cache_vs_decode@16", "data/cache_vs_fastest_model@16", "trainable/ratio/resnet50",
                       "orchestration/overhead", "orchestration/first_epoch_seconds", "search/best_gap",
                       "search/epochs_ratio"}
    assert all(isinstance(goal["met"], bool) for goal in report["goals"])
    # the grid ran every configuration to the last epoch; ASHA ran the same space
    search = report["details"]["search"]
    assert search["grid"]["trials"] == search["configs"] == 2
    assert search["grid"]["trials_at_max_epochs"] == 2 and search["grid"]["distinct_configs"] == 2
    assert figures["search/grid_epochs"] == 4 and 2 <= figures["search/asha_epochs"] <= 4
    # the trainable's epoch is broken down into what limits it
    parts = report["details"]["trainable"]["models"]["resnet50"]
    assert set(parts["seconds"]) == {"train", "val", "save", "persist"} and parts["checkpoint_mb"] > 50
    assert report["machine"]["cores"] >= 1 and report["machine"]["device"] == "cpu"
    assert set(report["part_seconds"]) == set(bench.PARTS)
    assert not workdir.exists()  # checkpoints and studies are gone unless --keep


def test_goals_apply_to_every_matching_figure() -> None:
    figures = {"data/cache_vs_decode@64": 12.0, "data/cache_vs_decode@224": 8.0, "trainable/ratio/alexnet": 0.96,
               "trainable/ratio/vgg11": float("nan"), "search/epochs_ratio": 0.5, "search/grid_best": 0.7}
    goals = {goal["figure"]: goal["met"] for goal in bench.check_goals(figures)}
    assert goals == {"data/cache_vs_decode@64": True, "data/cache_vs_decode@224": False,
                     "trainable/ratio/alexnet": True, "trainable/ratio/vgg11": False, "search/epochs_ratio": False}
    table = bench.render_table(figures, bench.check_goals(figures))
    assert "| data " in table and "NO" in table and "yes" in table and "grid_best" in table


def test_presets_and_flags() -> None:
    parser = bench.build_parser()
    quick, preset = bench.settings_from_args(parser.parse_args(["--quick", "--models", "alexnet", "--repeats", "2"]))
    assert preset == "quick" and quick.models == ("alexnet",) and quick.repeats == 2
    assert quick.search_max_epochs == bench.PRESETS["quick"]["search_max_epochs"]
    full, preset = bench.settings_from_args(parser.parse_args(["--parts", "data,search", "--no-amp", "--compile"]))
    assert preset == "full" and full.parts == ("data", "search") and not full.amp and full.compile
    with pytest.raises(SystemExit):
        parser.parse_args(["--quick", "--smoke"])


@pytest.mark.parametrize("argv, message", [
    (["--parts", "data,gpu"], "--parts"),
    (["--models", "lenet"], "--models"),
    (["--models", "alexnet", "--trainable-image-size", "32"], "too small for alexnet"),
    (["--search-max-epochs", "2", "--search-grace-period", "3"], "grace"),
])
def test_bad_flags_are_refused(argv: list[str], message: str) -> None:
    with pytest.raises(CxrError, match=message):
        bench.settings_from_args(bench.build_parser().parse_args(argv))
    assert bench.main(argv + ["--out", "/nonexistent/never-written.json"]) == 2


@pytest.mark.parametrize("sampler", ["grid", "tpe"])
def test_search_space_is_a_valid_space_of_the_study(sampler: str) -> None:
    settings = bench.Settings()
    space = parse_space(yaml.safe_load(bench.search_space_text(settings, sampler)))
    assert space.sampler == sampler
    assert len(space.grid()) == len(settings.search_models) * len(settings.search_optimizers) * len(settings.search_lrs)
    assert set(space.values_of("model")) == set(settings.search_models)
