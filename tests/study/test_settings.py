"""study.settings: the options that become a study's settings, and where a resumed study lies."""

from __future__ import annotations

import pickle

import pytest

from cxrnets.errors import CxrError
from study.checkpoints import WeightsKeeper
from study.results import ResultsTable
from study.settings import check_metric_reported, check_space_study, parse_data_roots, parse_keep, resumed_study
from study.space import SPACES_DIR, load_space


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
