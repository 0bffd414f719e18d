"""study.settings: the options that become a study's settings, and where a resumed study lies."""

from __future__ import annotations

import importlib
import json
import math
import pickle
import re
from pathlib import Path

import pytest
import yaml

from cxrnets.errors import CxrError
from study.checkpoints import WeightsKeeper
from study.results import ResultsTable
from study.settings import (METRICS, StudySettings, check_metric_reported, check_space_study, load_settings,
                            parse_data_roots, parse_keep, relocate, resumed_study, save_settings)
from study.space import SPACES_DIR, load_space

DAMAGED = ("the file was edited or damaged since the study wrote it: restore it (from a copy of the study), or start "
           "a new study")


def test_keep_parses_all_or_a_positive_count():
    assert parse_keep("all") == "all" and parse_keep("ALL") == "all" and parse_keep("3") == 3
    for bad in ("0", "-1", "best", ""):
        with pytest.raises(CxrError, match="--keep"):
            parse_keep(bad)


def test_a_resume_points_the_unpickled_callbacks_at_the_study_where_it_lies_now():
    """Tune pickles the results table and the weights keeper with the study (tuner.pkl); unpickled by the
    resume of a study moved since, they write to its new folder; unpickled outside a resume, they keep theirs."""
    callbacks = [ResultsTable("/old/studies/demo"), WeightsKeeper("/old/studies/demo", "val/f1_macro", "max", 1)]
    pickled = pickle.dumps(callbacks)
    with resumed_study("s3://bucket/moved/demo"):
        assert [c.study_uri for c in pickle.loads(pickled)] == ["s3://bucket/moved/demo"] * 2
    assert [c.study_uri for c in pickle.loads(pickled)] == ["/old/studies/demo"] * 2


@pytest.mark.parametrize("space", sorted(p.stem for p in SPACES_DIR.glob("*.yaml")))
def test_every_shipped_space_has_a_valid_study_section(space):
    check_space_study(load_space(space))


def test_a_study_image_size_beside_a_searched_image_size_is_refused(tmp_path):
    """study.json recorded the study's 128 px and the driver decoded a 128 px cache, while every trial drew its
    size from the search (as --image-size beside it is refused)."""
    path = tmp_path / "sizes.yaml"
    path.write_text(yaml.safe_dump({"study": {"image_size": 128}, "search": {
        "model": {"choice": ["alexnet"]}, "image_size": {"choice": [64, 96]}}}))
    with pytest.raises(CxrError, match=re.escape(
            f"{path}: study.image_size 128 conflicts with search.image_size, from which each trial draws its size")):
        check_space_study(load_space(path))
    path.write_text(yaml.safe_dump({"study": {"image_size": 128}, "search": {"model": {"choice": ["alexnet"]}}}))
    check_space_study(load_space(path))


def test_a_multi_label_metric_is_refused_where_a_dataset_is_single_label():
    check_metric_reported("val/f1_micro", ["covid-chestxray"], "metric")
    check_metric_reported("val/f1_macro", ["covid-chestxray", "covid-radiography"], "metric")
    with pytest.raises(CxrError, match=r"--tie-break val/subset_accuracy: .* covid-radiography is single-label"):
        check_metric_reported("val/subset_accuracy", ["covid-chestxray", "covid-radiography"], "--tie-break")


def test_data_roots_are_named_for_the_study_s_own_datasets(tmp_path):
    one = ["covid-chestxray-3class"]
    assert parse_data_roots([str(tmp_path)], one) == {one[0]: str(tmp_path)}
    assert parse_data_roots([f"{one[0]}={tmp_path}"], one) == {one[0]: str(tmp_path)}
    with pytest.raises(CxrError, match=r"'covid-chestxray=.*': covid-chestxray is not this study's dataset; write "
                                       r"PATH alone, or covid-chestxray-3class=PATH"):
        parse_data_roots([f"covid-chestxray={tmp_path}"], one)
    two = ["covid-chestxray-3class", "covid-pneumonia-normal"]
    assert parse_data_roots([f"covid-pneumonia-normal={tmp_path}"], two) == {"covid-pneumonia-normal": str(tmp_path)}
    with pytest.raises(CxrError, match="several datasets, write DATASET=PATH for one of covid-chestxray-3class, "
                                       "covid-pneumonia-normal"):
        parse_data_roots([str(tmp_path)], two)


def test_a_dataset_given_two_data_roots_is_refused(tmp_path):
    """--data-root /a --data-root /b kept /b silently."""
    one, two = ["covid-chestxray-3class"], ["covid-chestxray-3class", "covid-pneumonia-normal"]
    with pytest.raises(CxrError, match=re.escape(
            f"--data-root '{tmp_path}/b': covid-chestxray-3class's data root is given twice (also as "
            f"'{tmp_path}/a'); give it once")):
        parse_data_roots([f"{tmp_path}/a", f"{tmp_path}/b"], one)
    with pytest.raises(CxrError, match="covid-chestxray-3class's data root is given twice"):
        parse_data_roots([f"{tmp_path}/a", f"covid-chestxray-3class={tmp_path}/a"], one)
    with pytest.raises(CxrError, match="covid-pneumonia-normal's data root is given twice"):
        parse_data_roots([f"covid-pneumonia-normal={tmp_path}/a", f"covid-pneumonia-normal={tmp_path}/b"], two)


def test_a_data_root_for_a_dataset_of_no_study_of_several_says_so(tmp_path):
    two = ["covid-chestxray-3class", "covid-pneumonia-normal"]
    with pytest.raises(CxrError, match=re.escape(
            f"--data-root 'covid-radiography={tmp_path}': covid-radiography is not one of the study's datasets "
            "(covid-chestxray-3class, covid-pneumonia-normal)")):
        parse_data_roots([f"covid-chestxray-3class={tmp_path}", f"covid-radiography={tmp_path}"], two)


def test_a_data_root_named_for_no_dataset_is_refused_naming_the_study_s(tmp_path, monkeypatch):
    """`--data-root bogus=/tmp` was read as the path <cwd>/bogus=/tmp, and refused later as data not found there."""
    one, two = ["csv"], ["covid-chestxray-3class", "covid-pneumonia-normal"]
    with pytest.raises(CxrError, match=re.escape("--data-root 'bogus=/tmp': bogus is not this study's dataset; write "
                                                 "PATH alone, or csv=PATH (a folder whose name holds '=' as "
                                                 "./bogus=/tmp)")):
        parse_data_roots(["bogus=/tmp"], one)
    with pytest.raises(CxrError, match=re.escape("--data-root 'bogus=/tmp': bogus is not one of the study's "
                                                 "datasets (covid-chestxray-3class, covid-pneumonia-normal)")):
        parse_data_roots(["bogus=/tmp"], two)
    monkeypatch.chdir(tmp_path)  # a path holding '=' still reads as one, with a folder before it
    assert parse_data_roots(["./a=b"], one) == {"csv": str(tmp_path / "a=b")}
    assert parse_data_roots([f"covid-pneumonia-normal={tmp_path}/a=b"], two) == {
        "covid-pneumonia-normal": str(tmp_path / "a=b")}


@pytest.mark.parametrize("typed, meant", [("cache", "cache"), ("~/cache", "home/cache")])
def test_a_resumes_cache_dir_is_held_as_an_absolute_path(tmp_path, monkeypatch, typed, meant):
    """Each Tune trial runs in a folder of its own: a --cache-dir kept as typed would name another folder there."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    settings = load_settings(str(saved_study(tmp_path / "studies")))
    relocate(settings, None, typed)
    assert settings.cache_dir == str(tmp_path / meant)


# ------------------------------------------------------------------ study.json as read back

def saved_study(storage: Path) -> Path:
    """The folder of a study with its study.json as study.run writes it (a NaN baseline included: a class
    missing from the validation split leaves ROC AUC undefined)."""
    settings = StudySettings(
        name="demo", storage=str(storage), space={"search": {"model": {"choice": ["alexnet"]}}},
        space_source="demo.yaml", data_roots={"covid-chestxray-3class": "/data/covid-chestxray"}, image_size=64,
        num_samples=10, max_epochs=4, grace_period=1, reduction_factor=2, metric="val/f1_macro", mode="max",
        cpus_per_trial=1.0, gpus_per_trial=0.0, max_concurrent=None, max_failures=2, seed=7,
        baselines={"covid-chestxray-3class": {"f1_macro": 0.28, "roc_auc_macro": math.nan}})
    save_settings(settings)
    return Path(settings.study_uri)


DELETE = object()


def edit_settings(study: Path, **values) -> None:
    """Change study.json's fields as a hand edit would; DELETE takes a field out."""
    path = study / "study.json"
    saved = json.loads(path.read_text())
    saved.update(values)
    path.write_text(json.dumps({key: value for key, value in saved.items() if value is not DELETE}))


@pytest.mark.parametrize(("edit", "said"), [
    ({"data_roots": ["/data/covid-chestxray"]},
     'data_roots holds ["/data/covid-chestxray"], where a study\'s settings hold an object of strings'),
    ({"seed": "zero"}, 'seed holds "zero", where a study\'s settings hold a whole number'),
    ({"image_size": "64"}, 'image_size holds "64", where a study\'s settings hold a whole number'),
    ({"dataset_options": None}, "dataset_options holds null, where a study's settings hold an object of objects"),
    ({"val_fraction": "x"}, 'val_fraction holds "x", where a study\'s settings hold a number'),
    ({"max_concurrent": 1.5}, "max_concurrent holds 1.5, where a study's settings hold a whole number or null"),
    ({"baselines": {"covid-chestxray-3class": {"f1_macro": "0.28"}}},
     "baselines holds {\"covid-chestxray-3class\": {\"f1_macro\": \"0.28\"}}, where a study's settings hold an "
     "object of objects of numbers"),
    ({"mode": "maximize"}, 'mode holds "maximize", where a study\'s settings hold one of min, max'),
    ({"metric": DELETE}, "metric is missing, where a study's settings hold a string"),
])
def test_a_damaged_study_json_is_refused_naming_the_field_and_what_it_should_hold(tmp_path, edit, said):
    """Not a traceback far from the load (a list has no .update, None no .get), nor a study that runs on with a
    seed of "zero" or picks its worst trials for the best under mode "maximize"."""
    study = saved_study(tmp_path)
    edit_settings(study, **edit)
    with pytest.raises(CxrError) as refused:
        load_settings(str(study))
    assert str(refused.value) == f"{study / 'study.json'}: {said}; {DAMAGED}"


@pytest.mark.parametrize(("edit", "said"), [
    ({"keep": "best"}, 'keep holds "best": must be \'all\' or a whole number of at least 1'),
    ({"keep": 0}, "keep holds 0: must be 'all' or a whole number of at least 1"),
    ({"metric": "val/auc"}, f'metric holds "val/auc": must be one of {", ".join(METRICS)}'),
    ({"tie_break": "val/auc"}, f'tie_break holds "val/auc": must be one of {", ".join(METRICS)}, or null for plain '
                               "ties"),
    ({"mode": "min"}, 'metric holds "val/f1_macro" and mode holds "min": a loss is minimised (min), any other metric '
                      "maximised (max)"),
    ({"val_fraction": 1.5}, "val_fraction holds 1.5 and test_fraction holds 0.15: each must lie between 0 and 1, "
                            "and together leave patients to train on (sum below 1)"),
    ({"val_fraction": 0.6, "test_fraction": 0.5}, "val_fraction holds 0.6 and test_fraction holds 0.5: each must lie "
                                                  "between 0 and 1, and together leave patients to train on (sum "
                                                  "below 1)"),
    ({"max_epochs": 0}, "max_epochs holds 0: must be at least 1"),
    ({"grace_period": 9}, "grace_period holds 9 and max_epochs holds 4: ASHA's grace period may not exceed a "
                          "trial's epochs"),
    ({"num_samples": -2}, "num_samples holds -2: must be at least 1"),
    ({"reduction_factor": 1}, "reduction_factor holds 1: must be at least 2"),
    ({"cpus_per_trial": 0}, "cpus_per_trial holds 0: must be a finite number above 0"),
    ({"gpus_per_trial": 1.5}, "gpus_per_trial holds 1.5: above 1, must be a whole number of GPUs"),
    ({"gpus_per_trial": 0.00001}, "gpus_per_trial holds 1e-05: must be 0 or at least 0.0001, the finest fraction "
                                  "of a GPU Ray schedules"),
    ({"cpus_per_trial": 0.00001}, "cpus_per_trial holds 1e-05: must be at least 0.0001, the finest fraction of a CPU "
                                  "Ray schedules"),
    ({"max_failures": -1}, "max_failures holds -1: must be 0 or more"),
    ({"checkpoint_minutes": 0}, "checkpoint_minutes holds 0: must be above 0"),
])
def test_a_study_json_value_no_study_runs_with_is_refused_as_the_option_would_be(tmp_path, edit, said):
    """study.json holds values study.run checked when it made the study: one edited since to a value no study runs
    with is refused by the same rule, naming the field (not a resume that runs zero epochs, or an analysis that
    selects on a metric no trial reported)."""
    study = saved_study(tmp_path)
    edit_settings(study, **edit)
    with pytest.raises(CxrError) as refused:
        load_settings(str(study))
    assert str(refused.value) == f"{study / 'study.json'}: {said}; {DAMAGED}"


def test_a_study_whose_metric_an_earlier_version_allowed_still_loads(tmp_path):
    """Earlier versions let a study optimise train/loss (and break ties on it): such a study resumes and analyses."""
    study = saved_study(tmp_path)
    edit_settings(study, metric="train/loss", mode="min", tie_break="train/loss")
    assert load_settings(str(study)).metric == "train/loss"


def test_a_study_json_that_is_no_object_is_refused(tmp_path):
    study = saved_study(tmp_path)
    (study / "study.json").write_text("[1, 2]")
    with pytest.raises(CxrError) as refused:
        load_settings(str(study))
    assert str(refused.value) == (f"{study / 'study.json'}: holds [1, 2], not the object of a study's settings; "
                                  f"{DAMAGED}")


def test_a_study_from_before_the_later_settings_loads_with_their_defaults(tmp_path):
    """Older studies lack the fields added since (split digests, baselines, the Optuna study, ...)."""
    study = saved_study(tmp_path)
    later = ("cache_dir", "val_fraction", "test_fraction", "checkpoint_every", "checkpoint_minutes", "keep",
             "dataset_options", "tie_break", "asha", "optuna_study", "baselines", "split_digests", "created")
    edit_settings(study, **dict.fromkeys(later, DELETE))
    settings = load_settings(str(study))
    assert (settings.seed, settings.asha, settings.split_digests, settings.optuna_study) == (7, "stopping", {}, None)


@pytest.mark.parametrize("command", ["study.run --resume", "study.analyze", "study.confirm"])
def test_each_command_reading_a_study_names_the_damaged_field(tmp_path, capsys, command):
    study = saved_study(tmp_path)
    edit_settings(study, data_roots=["/data/covid-chestxray"])
    module, *flag = command.split()
    assert importlib.import_module(module).main([*flag, str(study)]) == 2
    assert capsys.readouterr().err == (f"error: {study / 'study.json'}: data_roots holds [\"/data/covid-chestxray\"], "
                                       f"where a study's settings hold an object of strings; {DAMAGED}\n")
