"""study.settings: the options that become a study's settings, and where a resumed study lies."""

from __future__ import annotations

import pickle

import pytest

from cxrnets.errors import CxrError
from study.checkpoints import WeightsKeeper
from study.results import ResultsTable
from study.settings import parse_keep, resumed_study


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
