"""A real S3 server on 127.0.0.1 (moto's `moto_server`), for the tests and the benchmark.

    with LocalS3Server() as server:            # starts moto_server on a free port
        server.create_bucket("cxr")
        with server.environment():             # AWS_ENDPOINT_URL + dummy credentials for pyarrow and Ray
            run_study(... storage="s3://cxr/studies" ...)
        with server.auth_enforced():           # now the server refuses credentials it does not know
            ...

By default the server accepts any credentials (it refuses unsigned writes, so
"no credentials at all" is refused too). `LocalS3Server(enforce_auth=True)` starts it enforcing
IAM authentication from the first request (moto's INITIAL_NO_AUTH_ACTION_COUNT=0),
so the dummy credentials are refused: it then cannot even create a bucket.
`auth_enforced()` switches enforcement on for a block on a running server
(moto's /moto-api/reset-auth), so a bucket made before it exists but is refused.

Needs `moto[server]` (in the test extra: `pip install -e ".[test]"`). Ray workers
inherit the environment of the driver that starts Ray, so set the environment
before `ray.init` for trials to reach the server.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from cxrnets.errors import CxrError

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class LocalS3Server:
    """moto_server on 127.0.0.1; `environment()` points pyarrow (and so Ray Tune) at it."""

    def __init__(self, port: int | None = None, log_file: str | Path | None = None, timeout: float = 30.0,
                 enforce_auth: bool = False):
        self.port = port or free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.log_file = Path(log_file) if log_file else None
        self.timeout = timeout
        self.enforce_auth = enforce_auth  # refuse credentials the server does not know, from the start
        self.process: subprocess.Popen | None = None

    def env(self) -> dict[str, str]:
        """The variables that send pyarrow's S3 requests here, with credentials the server accepts."""
        return {"AWS_ENDPOINT_URL": self.endpoint, **CREDENTIALS}

    def start(self) -> "LocalS3Server":
        command = shutil.which("moto_server")
        if command is None:
            raise CxrError("moto_server not found: install the test extra (pip install -e \".[test]\"), which "
                           "brings moto[server]")
        output = self.log_file.open("w") if self.log_file else subprocess.DEVNULL
        env = {**os.environ, **CREDENTIALS}
        if self.enforce_auth:
            env["INITIAL_NO_AUTH_ACTION_COUNT"] = "0"  # moto: authenticate every request (unknown keys are refused)
        else:
            env.pop("INITIAL_NO_AUTH_ACTION_COUNT", None)
        self.process = subprocess.Popen([command, "-H", "127.0.0.1", "-p", str(self.port)], stdout=output,
                                        stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + self.timeout
        while True:
            if self.process.poll() is not None:
                raise CxrError(f"moto_server exited at start (status {self.process.returncode})"
                               + (f"; see {self.log_file}" if self.log_file else ""))
            try:
                urllib.request.urlopen(self.endpoint, timeout=1).close()
                return self
            except urllib.error.HTTPError:  # it answered (403 where it enforces authentication)
                return self
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise CxrError(f"moto_server did not answer on {self.endpoint} within {self.timeout:.0f} s")
                time.sleep(0.2)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def __enter__(self) -> "LocalS3Server":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @contextlib.contextmanager
    def environment(self) -> Iterator[dict[str, str]]:
        """Set env() in this process (and so in processes and Ray workers started from it) for the block."""
        saved = {key: os.environ.get(key) for key in self.env()}
        os.environ.update(self.env())
        try:
            yield self.env()
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value

    def set_auth(self, enforced: bool) -> None:
        """Switch IAM authentication on (unknown credentials are refused) or off, on the running server."""
        request = urllib.request.Request(f"{self.endpoint}/moto-api/reset-auth", method="POST",
                                         data=b"0" if enforced else b"inf",
                                         headers={"Content-Type": "application/octet-stream"})
        urllib.request.urlopen(request, timeout=10).close()
        self.enforce_auth = enforced

    @contextlib.contextmanager
    def auth_enforced(self) -> Iterator["LocalS3Server"]:
        """Within the block the server refuses the dummy credentials (and requests without any)."""
        before = self.enforce_auth
        self.set_auth(True)
        try:
            yield self
        finally:
            self.set_auth(before)

    def filesystem(self):
        """A pyarrow S3 filesystem on this server that may create buckets."""
        import pyarrow.fs

        return pyarrow.fs.S3FileSystem(access_key=CREDENTIALS["AWS_ACCESS_KEY_ID"],
                                       secret_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
                                       region=CREDENTIALS["AWS_DEFAULT_REGION"], scheme="http",
                                       endpoint_override=f"127.0.0.1:{self.port}", allow_bucket_creation=True)

    def create_bucket(self, name: str) -> str:
        """Create a bucket (not while authentication is enforced); returns its URI (s3://NAME)."""
        self.filesystem().create_dir(name)
        return f"s3://{name}"


# S3's rule for a bucket name: 3-63 lowercase letters, digits, dots and hyphens, a letter or digit at each end.
BUCKET_NAME = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")


def main(argv: list[str] | None = None) -> int:
    """python -m study.local_s3 [BUCKET]: a server to try --storage s3://... by hand, until Ctrl-C."""
    parser = argparse.ArgumentParser(
        prog="python -m study.local_s3",
        description="Start a local S3 server (moto) with one bucket, and print the export line that points "
                    "pyarrow, Ray and python -m study.run at it; Ctrl-C stops it (its files go with it).")
    parser.add_argument("bucket", nargs="?", default="cxr", help="the bucket to create (default: cxr)")
    parser.add_argument("--port", type=int, default=None, help="port on 127.0.0.1 (default: a free one)")
    args = parser.parse_args(argv)
    try:
        if not BUCKET_NAME.fullmatch(args.bucket):
            raise CxrError(f"bucket {args.bucket!r}: S3 bucket names are 3-63 lowercase letters, digits, dots and "
                           "hyphens, starting and ending with a letter or digit")
        # `kill` (SIGTERM) stops the server as Ctrl-C does, rather than leaving moto_server running alone.
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
        with LocalS3Server(port=args.port) as server:
            server.create_bucket(args.bucket)
            print("export " + " ".join(f"{k}={v}" for k, v in server.env().items()), flush=True)
            print(f"bucket s3://{args.bucket} ready; Ctrl-C stops the server", flush=True)
            with contextlib.suppress(KeyboardInterrupt):
                server.process.wait()
    except CxrError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
