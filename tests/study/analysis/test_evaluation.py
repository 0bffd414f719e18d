"""study.analysis.evaluation.StudyData: the weights the analysis evaluates, fetched from object storage."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from study import storage
from study.analysis.evaluation import StudyData


def study_data(cache) -> StudyData:
    return StudyData(SimpleNamespace(settings=SimpleNamespace(data_roots={}, cache_dir=str(cache))))


def test_prefetched_weights_arrive_whole_once_and_a_missing_one_fails_at_its_fetch(s3_bucket, tmp_path):
    """prefetch starts every download at once; fetch gives each file, counts its bytes once, and raises
    for a missing object only when that one is fetched (the analysis then skips that trial)."""
    contents = {storage.join(s3_bucket, "weights", f"t{i}.pt"): bytes([i]) * (3_000_000 + i) for i in range(3)}
    for uri, data in contents.items():
        storage.write_bytes(uri, data)
    missing = storage.join(s3_bucket, "weights", "gone.pt")
    data = study_data(tmp_path / "cache")
    data.prefetch([*contents, missing, next(iter(contents))])  # a repeat is fetched once
    for uri, expected in contents.items():
        assert data.fetch(uri).read_bytes() == expected
    assert data.downloaded_bytes == sum(len(d) for d in contents.values())
    with pytest.raises(OSError):
        data.fetch(missing)
    again = study_data(tmp_path / "cache")  # a second analysis: everything from the download cache
    again.prefetch(list(contents))
    assert [again.fetch(uri).read_bytes() for uri in contents] == list(contents.values())
    assert again.downloaded_bytes == 0


def test_local_weights_are_not_copied(tmp_path):
    weights = tmp_path / "w.pt"
    weights.write_bytes(b"x" * 10)
    data = study_data(tmp_path / "cache")
    data.prefetch([str(weights)])
    assert data.fetch(str(weights)) == weights and data.downloaded_bytes == 0
