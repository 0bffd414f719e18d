"""Fixtures of the study tests: one Ray instance for the whole test session, and a local S3 server.

The S3 server (moto) serves the object-storage tests (test_storage.py, test_object_storage.py).
Its environment (AWS_ENDPOINT_URL and dummy credentials) is set per test by `s3_bucket`, not for
the session: it would change what other tests see of s3:// (test_run.py expects an unreachable
bucket). Ray workers inherit the environment of the driver that starts Ray, and `ray_session` may
have started before any S3 test, so its trials do not reach the server: studies against the server
run the CLI in subprocesses with the environment passed explicitly (test_object_storage.py).
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

import pandas as pd
import pytest

from cxrnets.data import SAMPLE_ROOT, load_dataset


@pytest.fixture(scope="session")
def ray_session():
    """A real local Ray instance (2 CPUs, no dashboard), started once per test session."""
    import ray

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(num_cpus=2, include_dashboard=False)
    yield
    ray.shutdown()


@pytest.fixture
def ray_console(monkeypatch) -> None:
    """Ray's log lines (Tune's among them) in what the test's capsys or capfd captures: Ray's console handler
    writes to the sys.stderr of Ray's import, which a test's capture does not see."""
    import logging
    import sys

    class CurrentStderr:
        def write(self, text: str) -> int:
            return sys.stderr.write(text)

        def flush(self) -> None:
            sys.stderr.flush()

    for handler in logging.getLogger("ray").handlers:
        if hasattr(handler, "stream"):
            monkeypatch.setattr(handler, "stream", CurrentStderr())


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """moto_server on 127.0.0.1 (study.local_s3.LocalS3Server), started once per test session.

    Its request log is moto_server.log in a session temp dir (server.log_file). It accepts any
    credentials; `server.auth_enforced()` makes it refuse them for a block.
    """
    from study.local_s3 import LocalS3Server

    if shutil.which("moto_server") is None:
        pytest.skip("moto_server is not installed: pip install -e \".[test]\" (brings moto[server])")
    server = LocalS3Server(log_file=tmp_path_factory.mktemp("moto") / "moto_server.log").start()
    yield server
    server.stop()


@pytest.fixture
def s3_bucket(s3_server, monkeypatch) -> str:
    """A fresh, empty bucket on the session's S3 server (its URI, s3://NAME), with the environment
    that reaches it (AWS_ENDPOINT_URL, credentials, region) set for this test."""
    uri = s3_server.create_bucket(f"test-{uuid.uuid4().hex[:12]}")
    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    return uri


GRID_DATASET = "covid-chestxray-3class"
GRID_TRIALS = 6
GRID_SPACE = """\
sampler: grid
search:
  model: {choice: [alexnet, resnet50]}
  optimizer: {choice: [adam, sgd]}
  lr: {choice: [1.0e-3, 1.0e-2]}
  batch_size: {value: 32}
  momentum: {value: 0.9, when: {optimizer: sgd}}
  pretrained: {value: false}
"""


@pytest.fixture(scope="session")
def sample_subset():
    """The `subset_of_sample(root, per_class)` builder, for tests that need their own study of the sample."""
    return subset_of_sample


def subset_of_sample(root: Path, per_class: int = 20) -> Path:
    """The embedded sample in its real layout, cut to at most `per_class` images per class (faster trials)."""
    index = load_dataset(GRID_DATASET, SAMPLE_ROOT)
    frame = index.frame.assign(label=index.frame["labels"].str[0])
    keep = set(frame.groupby("label", sort=False).head(per_class)["relpath"])
    metadata = pd.read_csv(SAMPLE_ROOT / "metadata.csv", dtype=str, keep_default_na=False)
    relpaths = (metadata["folder"].str.strip().replace("", "images") + "/" + metadata["filename"].str.strip())
    metadata = metadata[relpaths.isin(keep)]
    root.mkdir(parents=True)
    metadata.to_csv(root / "metadata.csv", index=False)
    for relpath in keep:
        (root / relpath).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(SAMPLE_ROOT / relpath, root / relpath)
    return root


@pytest.fixture(scope="session")
def grid_study(ray_session, tmp_path_factory) -> Path:
    """A small real study, built once for the session (a minute or two on 2 cores): part of the
    embedded sample, two models, both optimizers, two learning rates (6 trials of their grid of 8),
    2 epochs, ASHA, the weights of every trial kept. Tests that change it work on copies."""
    from study.driver import run_study
    from study.run import build_parser, settings_from_args

    work = tmp_path_factory.mktemp("analyze-study")
    data = subset_of_sample(work / "data")
    (work / "grid.yaml").write_text(GRID_SPACE)
    settings = settings_from_args(build_parser().parse_args([
        "--space", str(work / "grid.yaml"), "--dataset", GRID_DATASET, "--data-root", str(data),
        "--num-samples", str(GRID_TRIALS), "--max-epochs", "2", "--grace-period", "1", "--reduction-factor", "2",
        "--image-size", "64", "--storage", str(work / "studies"), "--name", "grid",
        "--cache-dir", str(work / "cache"), "--keep", "all"]))
    run_study(settings)
    return work / "studies" / "grid"
