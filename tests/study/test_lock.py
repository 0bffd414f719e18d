"""study.lock: one driver at a time per study, and never a lock that blocks the resume of a killed driver."""

from __future__ import annotations

import json
import logging
import socket
import subprocess
import sys

import pytest

from cxrnets.errors import CxrError
from study.lock import LOCK_FILE, driver_lock, process_start

RESUME = "python -m study.run --resume studies/demo"


@pytest.fixture
def other_driver():
    """A process of this host standing for a driver that runs the study."""
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield process
    process.kill()
    process.wait()


def write_lock(study, **holder) -> None:
    study.mkdir(exist_ok=True)
    (study / LOCK_FILE).write_text(json.dumps(holder))


def test_a_second_driver_is_refused_while_the_first_runs(tmp_path, other_driver):
    pid = other_driver.pid
    write_lock(tmp_path, host=socket.gethostname(), pid=pid, start=process_start(pid))
    with pytest.raises(CxrError, match=rf"is being run by another driver \(pid {pid} on this host.*kill {pid}\), "
                                       rf"then continue with\n  {RESUME}"):
        with driver_lock(str(tmp_path), RESUME):
            pass


def test_the_lock_of_a_killed_driver_is_taken_over_and_given_back(tmp_path, other_driver):
    pid, start = other_driver.pid, process_start(other_driver.pid)
    other_driver.kill()
    other_driver.wait()
    write_lock(tmp_path, host=socket.gethostname(), pid=pid, start=start)
    with driver_lock(str(tmp_path), RESUME):
        assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] != pid
    assert not (tmp_path / LOCK_FILE).exists()


def test_a_pid_a_later_process_took_is_no_running_driver(tmp_path, other_driver):
    write_lock(tmp_path, host=socket.gethostname(), pid=other_driver.pid, start="1")
    with driver_lock(str(tmp_path), RESUME):
        pass


def test_the_lock_of_another_host_is_taken_over_with_a_warning(tmp_path, caplog):
    write_lock(tmp_path, host="node-7", pid=1234, start="99")
    with caplog.at_level(logging.WARNING, logger="study.lock"), driver_lock(str(tmp_path), RESUME):
        pass
    assert "names a driver on host node-7 (pid 1234), which cannot be checked from here: taken over" in caplog.text
