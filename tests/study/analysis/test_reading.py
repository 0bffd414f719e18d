"""Reading a study for analysis: its trials' configs, and what its saved search space says the trials left out."""

from __future__ import annotations

import json
import types
from pathlib import Path

import pandas as pd

from study.analysis.reading import (cell_columns, nothing_to_analyse, trial_configs, trial_folders, unknown_configs,
                                    untried)
from study.space import parse_space
from study.tables import trial_table

DEMO = Path(__file__).parents[3] / "search_spaces" / "demo.yaml"


def _study(num_samples: int, data_roots: tuple[str, ...] = ("covid-chestxray-3class",)) -> types.SimpleNamespace:
    import yaml

    document = yaml.safe_load(DEMO.read_text())
    settings = types.SimpleNamespace(num_samples=num_samples, data_roots=dict.fromkeys(data_roots, "/data"),
                                     search_space=lambda: parse_space(document, str(DEMO)))
    return types.SimpleNamespace(settings=settings)


def _trials(*models: str) -> pd.DataFrame:
    return pd.DataFrame({"trial_id": [f"t{i}" for i in range(len(models))], "config/model": list(models),
                         "config/dataset": "covid-chestxray-3class"})


def test_a_model_of_the_space_that_no_trial_ran_is_named_with_why():
    assert untried(_study(2), _trials("alexnet", "alexnet")) == [
        "the search space's models vgg11, resnet50: no trial ran (--num-samples 2 is fewer than the 6 combinations "
        "of cover_first (model, optimizer) the study starts with), so no table shows them"]
    assert untried(_study(10), _trials("alexnet", "vgg11", "resnet50")) == []


def test_a_dataset_that_no_trial_ran_is_named():
    notes = untried(_study(10, ("covid-chestxray-3class", "covid-radiography")), _trials("alexnet", "vgg11",
                                                                                       "resnet50"))
    assert notes == ["the search space's dataset covid-radiography: no trial ran (the study ran 3 trial(s) "
                     "(--num-samples 10)), so no table shows it"]


def _unreported(folder: Path, events: list[tuple[str, str, str]],
                running: tuple[str, ...] = ()) -> types.SimpleNamespace:
    """A study without a reported epoch whose trials ended as `events`: (trial id, event, error file as Tune
    recorded it), and `running` trials without an end; each trial has its folder in the study."""
    trial_dirs = {}
    for trial_id in [*(trial_id for trial_id, *_ in events), *running]:
        (folder / f"{trial_id}_alexnet").mkdir(parents=True)
        trial_dirs[trial_id] = [str(folder / f"{trial_id}_alexnet")]
    frame = pd.DataFrame(events, columns=["trial_id", "event", "error_file"]).assign(timestamp=1.0)
    return types.SimpleNamespace(uri=str(folder), results=pd.DataFrame(), events=frame, trial_dirs=trial_dirs)


def test_a_study_whose_trials_all_failed_says_so_and_where_one_error_is(tmp_path):
    """It said "no trial has finished an epoch yet ... let the study run (or --resume it) first"."""
    study = _unreported(tmp_path, [("a1", "error", "/tmp/ray/session/a1/error.txt"),
                                   ("a2", "error", "/tmp/ray/session/a2/error.txt")])
    (tmp_path / "a1_alexnet" / "error.txt").write_text("Traceback ...")
    assert nothing_to_analyse(study) == (
        f"{tmp_path}: all 2 trials failed before their first epoch: nothing to analyse. Why: in each trial's error "
        f"file, such as {tmp_path}/a1_alexnet/error.txt; fix the cause, then resume the study (python -m study.run "
        f"--resume {tmp_path}), which retries failed trials")
    one = nothing_to_analyse(_unreported(tmp_path / "b", [("a2", "error", "/tmp/ray/session/a2/error.txt")]))
    assert one.startswith(f"{tmp_path / 'b'}: its one trial failed before its first epoch: nothing to analyse. Why: "
                          "in its error file, /tmp/ray/session/a2/error.txt;")  # no copy in the study: Tune's
    running = _unreported(tmp_path / "c", [("a1", "error", "")], running=("a2",))
    assert nothing_to_analyse(running) == (
        f"{tmp_path / 'c'}: 1 of 2 trials failed before their first epoch (why: in {tmp_path}/c/a1_alexnet), and no "
        "other has finished an epoch yet: nothing to analyse: let the study run (or --resume it) first")
    assert nothing_to_analyse(_unreported(tmp_path / "d", [])) == (
        f"{tmp_path / 'd'}: no trial has finished an epoch yet (the results table is empty); nothing to analyse: "
        "let the study run (or --resume it) first")


def _snapshot(folder: Path, configs: dict[str, dict]) -> None:
    """Tune's experiment snapshot of a run in `folder` holding trials `configs` (trial id -> config)."""
    trials = [[json.dumps({"trial_id": trial_id, "status": "PENDING", "config": config}), "{}"]
              for trial_id, config in configs.items()]
    (folder / "experiment_state-2026-12-07_07-54-26.json").write_text(json.dumps({"trial_data": trials}))


def test_a_trial_interrupted_before_its_params_json_gets_its_config_from_tunes_snapshot(tmp_path):
    """It read as config {}: the analysis gave it a model "?" and a "(not set)" row in every ablation."""
    config = {"model": "alexnet", "lr": 0.0001, "batch_size": 32}
    for trial_id in ("ba40468b", "c0ffee00"):
        (tmp_path / f"{trial_id}_alexnet_adam").mkdir()
    (tmp_path / "c0ffee00_alexnet_adam" / "params.json").write_text(json.dumps({**config, "lr": 0.001}))
    _snapshot(tmp_path, {"ba40468b": config})
    trial_dirs = trial_folders(str(tmp_path), [])
    assert trial_configs(str(tmp_path), trial_dirs, pd.DataFrame()) == {
        "ba40468b": {**config, "__trial_name__": "alexnet_adam"},
        "c0ffee00": {**config, "lr": 0.001, "__trial_name__": "alexnet_adam"}}
    _snapshot(tmp_path, {})
    assert trial_configs(str(tmp_path), trial_dirs, pd.DataFrame())["ba40468b"] == {"__trial_name__": "alexnet_adam"}


def test_a_trial_of_unknown_config_is_counted_but_in_no_cell_and_integers_stay_integers():
    """Its missing values made batch_size float (32.0 in trials.csv) and put it in a cell of model "?"."""
    results = pd.DataFrame({"trial_id": ["a", "b"], "training_iteration": 1, "trial_name": ["a", "b"],
                            "val/f1_macro": [0.3, 0.4], "config/model": ["alexnet", "resnet50"],
                            "config/batch_size": [32, 16]})
    events = pd.DataFrame(columns=["trial_id", "event", "timestamp", "error_file"])
    trials = trial_table(results, events, "val/f1_macro", "max", 2, configs={"c": {"__trial_name__": "c_alexnet"}})
    assert len(trials) == 3 and trials["config/batch_size"].tolist()[:2] == [32, 16]
    assert pd.api.types.is_integer_dtype(trials["config/batch_size"])
    assert trials.to_csv(index=False).splitlines()[1].startswith("a,a,32,alexnet,")
    settings = types.SimpleNamespace(data_roots={"covid-chestxray-3class": "/data"})
    cells = cell_columns(trials, settings)
    assert cells["trial_id"].tolist() == ["a", "b"] and set(cells["model"]) == {"alexnet", "resnet50"}
    assert unknown_configs(trials) == [
        "trial c (unfinished): started, but no config of it is on record (no params.json in its folder, and Tune's "
        "last snapshot of the study does not hold it): counted among the 3 trials run, and in no table by dataset, "
        "model or search dimension"]
    assert unknown_configs(trials.iloc[:2]) == []
