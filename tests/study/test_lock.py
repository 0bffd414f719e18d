"""study.lock: one driver at a time per study, and never a lock that blocks the resume of a killed driver."""

from __future__ import annotations

import json
import logging
import os
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


@pytest.mark.parametrize("resume_command", [RESUME, None], ids=["a resume", "a new study"])
def test_the_lock_of_a_killed_driver_is_taken_over_and_given_back(tmp_path, other_driver, resume_command):
    pid, start = other_driver.pid, process_start(other_driver.pid)
    other_driver.kill()
    other_driver.wait()
    write_lock(tmp_path, host=socket.gethostname(), pid=pid, start=start)
    with driver_lock(str(tmp_path), resume_command):
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


@pytest.mark.parametrize("where", ["this host", "another host"])
def test_a_new_study_is_refused_where_another_driver_is_starting_one(tmp_path, other_driver, where):
    """Two new studies under the same --name: the second is told to pick another name, not to --resume a study
    that is not its own, and leaves the first's lock as it was."""
    if where == "this host":
        holder = {"host": socket.gethostname(), "pid": other_driver.pid, "start": process_start(other_driver.pid)}
    else:
        holder, where = {"host": "node-7", "pid": 1234, "start": "99"}, "host node-7"
    write_lock(tmp_path, **holder)
    lock = (tmp_path / LOCK_FILE).read_bytes()
    with pytest.raises(CxrError) as refused:
        with driver_lock(str(tmp_path), None):
            pytest.fail("the lock was taken")
    assert str(refused.value) == (f"another driver just started a study at {tmp_path} (pid {holder['pid']} on {where}, "
                                  f"named in {tmp_path / LOCK_FILE}); "
                                  "this one wrote nothing there: start it again under another --name")
    assert (tmp_path / LOCK_FILE).read_bytes() == lock


def test_of_two_drivers_locking_at_once_the_second_is_refused(tmp_path, other_driver, monkeypatch):
    """The lock is created only where none is: another driver's lock landing between this driver's look and its
    write is not overwritten."""
    import study.storage

    holder = {"host": socket.gethostname(), "pid": other_driver.pid, "start": process_start(other_driver.pid)}
    real_link = os.link

    def other_driver_first(source, target):
        (tmp_path / LOCK_FILE).write_text(json.dumps(holder))
        real_link(source, target)

    monkeypatch.setattr(study.storage.os, "link", other_driver_first)
    with pytest.raises(CxrError, match=rf"is being run by another driver \(pid {other_driver.pid} on this host"):
        with driver_lock(str(tmp_path), RESUME):
            pytest.fail("the lock was taken")
    assert json.loads((tmp_path / LOCK_FILE).read_text()) == holder
