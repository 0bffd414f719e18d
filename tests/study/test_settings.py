"""study.settings: the options that become a study's settings."""

from __future__ import annotations

import pytest

from cxrnets.errors import CxrError
from study.settings import parse_keep


def test_keep_parses_all_or_a_positive_count():
    assert parse_keep("all") == "all" and parse_keep("ALL") == "all" and parse_keep("3") == 3
    for bad in ("0", "-1", "best", ""):
        with pytest.raises(CxrError, match="--keep"):
            parse_keep(bad)
