"""One driver at a time per study: a lock file in the study folder names the driver that runs it.

`driver.lock` holds the driver's host, pid and that process's start time. A second driver on the same study
(a `--resume` typed while the first still runs) is refused while that process lives; a lock whose process has
ended (a SIGKILLed driver, a crashed machine) or lies on another host, which cannot be checked from here, is
taken over, so that nothing ever blocks the resume of a killed study.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from collections.abc import Iterator
from pathlib import Path

from cxrnets.errors import CxrError
from study import storage

log = logging.getLogger(__name__)

LOCK_FILE = "driver.lock"


def lock_uri(study_uri: str) -> str:
    return storage.join(study_uri, LOCK_FILE)


def process_start(pid: int) -> str | None:
    """When process `pid` started (clock ticks since boot, from /proc), or None if it is not running (or not
    knowable here): with the pid, it names one process, not a later one that took the same pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rindex(")") + 2:].split()[19]


def this_driver() -> dict:
    pid = os.getpid()
    return {"host": socket.gethostname(), "pid": pid, "start": process_start(pid)}


def running_driver(holder: dict) -> bool:
    """Whether the driver a lock names is a process running on this host now."""
    if holder.get("host") != socket.gethostname() or holder.get("pid") == os.getpid():
        return False
    start = process_start(int(holder.get("pid", 0)))
    return start is not None and start == holder.get("start")


@contextlib.contextmanager
def driver_lock(study_uri: str, resume_command: str) -> Iterator[None]:
    """Hold the study's lock while the body runs; CxrError, naming the driver and `resume_command`, while
    another driver runs the study on this host."""
    uri = lock_uri(study_uri)
    try:
        holder = storage.read_json(uri)
    except (OSError, ValueError):  # none, or one cut short as it was written (its driver is gone)
        holder = None
    if isinstance(holder, dict) and running_driver(holder):
        raise CxrError(f"{study_uri} is being run by another driver (pid {holder['pid']} on this host, named in "
                       f"{uri}): wait for it to end, or stop it (Ctrl-C, or kill {holder['pid']}), then continue "
                       f"with\n  {resume_command}")
    if isinstance(holder, dict) and holder.get("host") not in (None, socket.gethostname()):
        log.warning("%s names a driver on host %s (pid %s), which cannot be checked from here: taken over; if that "
                    "driver still runs this study, stop one of the two", uri, holder.get("host"), holder.get("pid"))
    mine = this_driver()
    storage.write_json(uri, mine)
    try:
        yield
    finally:
        with contextlib.suppress(OSError, ValueError):
            if storage.read_json(uri) == mine:
                storage.delete(uri)
