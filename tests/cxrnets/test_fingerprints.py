"""Tests for cxrnets.fingerprints: the caches a study's split fingerprints are read from."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from cxrnets import cache as cache_module
from cxrnets.cache import build_cache
from cxrnets.data import load_dataset
from cxrnets.fingerprints import FINGERPRINT_SIZE, cache_fingerprints, fingerprints


def test_a_staged_dataset_with_an_undecodable_image_is_fingerprinted_without_decoding_again(
        make_radiography, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The fingerprints were read from a 64 px cache of the decodable images only, another cache than the one
    `python -m cxrnets.cache` stages (of every file): a dataset with one bad image was decoded again at 64 px."""
    root = make_radiography(per_class=3)
    (root / "COVID" / "images" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    cache_root = tmp_path / "cache"
    cache_module.main(["--dataset", "covid-radiography", "--data-root", str(root), "--image-size", "32",
                       "--cache-dir", str(cache_root)])
    staged = sorted(cache_root.iterdir())
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="cxrnets.cache"):
        cache = build_cache(load_dataset("covid-radiography", root), 32, cache_root)  # as the study's driver does
        prints = cache_fingerprints(cache)
    assert "decoding" not in caplog.text
    assert sorted(cache_root.iterdir()) == staged
    assert len(cache.images) == 12 and "broken.png" not in " ".join(cache.index.frame["relpath"])
    at_64 = build_cache(cache.listed, FINGERPRINT_SIZE, cache_root)
    np.testing.assert_array_equal(prints, fingerprints(at_64.images))  # each image's own fingerprint
