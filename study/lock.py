"""One driver at a time per study: a lock file in the study folder names the driver that runs it.

`driver.lock` holds the driver's host, pid and that process's start time. A second driver on the same study
(a `--resume` typed while the first still runs) is refused while that process lives; a lock whose process has
ended (a SIGKILLed driver, a crashed machine) or lies on another host, which cannot be checked from here, is
taken over, so that nothing ever blocks the resume of a killed study. A new study's driver takes the lock
before it writes anything in the folder, and is refused by any lock but a dead driver's of this host: another
driver is starting a study under the same name.

Where no lock is there, a local one is created atomically (storage.create_bytes): of two drivers at once, one
alone gets it. In object storage, and where a lock is taken over, the driver writes its lock and reads it back,
and goes on only if the lock it reads is its own: best effort, as two drivers in the same instant may both read
their own.
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


NEW_STUDY_REMEDY = "start it again under another --name"  # for a new study whose folder another driver took


def started_elsewhere(run_uri: str, new_run: str, remedy: str, holder: str = "") -> CxrError:
    """The error of a driver that finds another driver starting `new_run` ("a study", "a confirm run") at
    `run_uri` before it wrote anything there; `holder`: that driver, as its lock names it; `remedy`: what to do."""
    named = f" ({holder})" if holder else ""
    return CxrError(f"another driver just started {new_run} at {run_uri}{named}; this one wrote nothing there: "
                    f"{remedy}")


@contextlib.contextmanager
def driver_lock(study_uri: str, resume_command: str | None, new_run: str = "a study",
                new_remedy: str = NEW_STUDY_REMEDY) -> Iterator[None]:
    """Hold the study's lock while the body runs; CxrError, naming the driver that holds it, where another driver
    runs the study. `resume_command`: the command that continues the study once that driver ends; None for a new
    run (`new_run`: "a study", "a confirm run"), whose driver is refused by any lock but a dead driver's of this
    host (see the module's docstring), with `new_remedy`."""
    uri = lock_uri(study_uri)
    mine = this_driver()
    if not storage.create_json(uri, mine):
        take_over(study_uri, mine, resume_command, new_run, new_remedy)
    try:
        yield
    finally:
        with contextlib.suppress(OSError, ValueError):
            if storage.read_json(uri) == mine:
                storage.delete(uri)


def take_over(study_uri: str, mine: dict, resume_command: str | None, new_run: str, new_remedy: str) -> None:
    """Take the lock that another driver left in the study folder, unless that driver runs (CxrError: see
    driver_lock, as are `new_run` and `new_remedy`)."""
    uri = lock_uri(study_uri)
    holder = lock_holder(uri)
    on_another_host = holder is not None and holder.get("host") not in (None, socket.gethostname())
    if holder is not None and (running_driver(holder) or (on_another_host and resume_command is None)):
        raise refusal(study_uri, holder, resume_command, new_run, new_remedy)
    if on_another_host:
        log.warning("%s names a driver on host %s (pid %s), which cannot be checked from here: taken over; if that "
                    "driver still runs this study, stop one of the two", uri, holder.get("host"), holder.get("pid"))
    storage.write_json(uri, mine)
    holder = lock_holder(uri)
    if holder != mine:  # another driver took it over at the same time
        raise refusal(study_uri, holder or {}, resume_command, new_run, new_remedy)


def lock_holder(uri: str) -> dict | None:
    """The driver the lock at `uri` names; None for no lock, or one cut short as it was written (its driver is
    gone)."""
    try:
        holder = storage.read_json(uri)
    except (OSError, ValueError):
        return None
    return holder if isinstance(holder, dict) else None


def refusal(study_uri: str, holder: dict, resume_command: str | None, new_run: str, new_remedy: str) -> CxrError:
    """The error of a driver refused the study's lock that `holder` holds."""
    pid, host = holder.get("pid"), holder.get("host")
    here = host == socket.gethostname()
    named = f"pid {pid} on {'this host' if here else f'host {host}'}, named in {lock_uri(study_uri)}"
    if resume_command is None:
        return started_elsewhere(study_uri, new_run, new_remedy, named)
    stop = f"stop it (Ctrl-C, or kill {pid})" if here else "stop it"
    return CxrError(f"{study_uri} is being run by another driver ({named}): wait for it to end, or {stop}, then "
                    f"continue with\n  {resume_command}")
