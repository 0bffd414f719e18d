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

import pytest


@pytest.fixture(scope="session")
def ray_session():
    """A real local Ray instance (2 CPUs, no dashboard), started once per test session."""
    import ray

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(num_cpus=2, include_dashboard=False)
    yield
    ray.shutdown()


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
