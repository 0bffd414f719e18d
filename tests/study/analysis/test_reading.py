"""Reading a study for analysis: what its saved search space says the trials left out."""

from __future__ import annotations

import types
from pathlib import Path

import pandas as pd

from study.analysis.reading import untried
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
