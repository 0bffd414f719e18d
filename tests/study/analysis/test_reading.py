"""Reading a study for analysis: what its saved search space says the trials left out."""

from __future__ import annotations

import types
from pathlib import Path

import pandas as pd

from study.analysis.reading import nothing_to_analyse, untried
from study.space import parse_space

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
