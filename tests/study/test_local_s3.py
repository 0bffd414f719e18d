"""python -m study.local_s3: the S3 server the README offers for trying --storage s3://... by hand."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys

import pytest

from study import local_s3, storage


def test_help_and_a_bad_bucket_name_start_no_server(capsys) -> None:
    with pytest.raises(SystemExit) as done:
        local_s3.main(["--help"])
    assert done.value.code == 0 and "usage: python -m study.local_s3 [-h] [--port PORT] [bucket]" in \
        capsys.readouterr().out
    assert local_s3.main(["My_Bucket"]) == 2
    assert capsys.readouterr().err.startswith("error: bucket 'My_Bucket': S3 bucket names are 3-63 lowercase")


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "kill"])
def test_the_server_holds_the_bucket_at_the_printed_address_until_stopped(stop, monkeypatch) -> None:
    process = subprocess.Popen([sys.executable, "-m", "study.local_s3", "by-hand"], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    try:
        export = process.stdout.readline().strip()
        assert export.startswith("export AWS_ENDPOINT_URL=http://127.0.0.1:"), export
        assert process.stdout.readline().strip() == "bucket s3://by-hand ready; Ctrl-C stops the server"
        for assignment in export.removeprefix("export ").split():
            monkeypatch.setenv(*assignment.split("=", 1))
        storage.write_text("s3://by-hand/studies/hello.txt", "hello")  # as study.run would, with that line
        assert storage.read_text("s3://by-hand/studies/hello.txt") == "hello"
        process.send_signal(stop)
        assert process.wait(timeout=30) == 0
        port = int(export.split("AWS_ENDPOINT_URL=http://127.0.0.1:")[1].split()[0])
        with pytest.raises(ConnectionRefusedError):  # the moto server went with it
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
            process.wait()
