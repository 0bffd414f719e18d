"""What a study prints while it runs: one status line, refreshed, and a line for each trial that ends or is retried,
and for each resumed or retried trial that could not continue from its full state.

    [  3:12] trials: 2 running, 1 waiting at a rung, 5 done (3 stopped early), 3 to start | epochs 19,
             at most 21 left, ~4 min | best val/f1_macro 0.455 resnet50_adam_lr6.8e-04_bs16

Everything is computed from Tune's trial list at each step (status, last and best
result of each trial), so a resumed study shows the trials of its first run too.
On a terminal the status line is rewritten in place, shortened to the terminal's
width (a longer line would wrap, and leave a stale row at each refresh), and a log
record clears it before it is written; in a log it is printed whole when it changes,
at most every `every_s` seconds. A trial's error and retry lines go to stderr (seen
where stdout goes to a file), the rest to stdout. Tune's own tables and the trials'
logs are shown instead with `-v` (`python -m study.run -v`, `python -m study.confirm -v`).
"""

from __future__ import annotations

import logging
import shutil
import sys
import time
from typing import Any, Callable, TextIO

from ray.tune import Callback

from study import storage
from study.checkpoints import RESTORE_NOTE_KEY
from study.settings import study_location
from study.tables import improves, rank_key

# Trial statuses as Tune names them.
RUNNING, PENDING, PAUSED, TERMINATED, ERROR = "RUNNING", "PENDING", "PAUSED", "TERMINATED", "ERROR"
# A trial Tune stopped, unfinished, when the study was interrupted (Ctrl-C): a resume continues it.
INTERRUPTED = "INTERRUPTED"
UNFINISHED = (RUNNING, PENDING, PAUSED, INTERRUPTED)  # statuses of trials whose epochs may still come
CLEAR_LINE = "\r\033[K"  # a terminal's cursor to the row's start, and the row cleared
# On a terminal too narrow for the whole status line, its parts take their shorter forms in this order (part,
# form), the least telling first (the best's last form drops it); what is still too long is cut.
SHORTENING = (("best", 1), ("trials", 1), ("best", 2), ("epochs", 1), ("best", 3))


def name_without_dataset(trial) -> str:
    """A study trial's name without the dataset (the same for every trial of most studies)."""
    return str(trial).removeprefix(f"{trial.config.get('dataset')}_")


def clock(seconds: float) -> str:
    minutes, seconds = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes:3d}:{seconds:02d}"


def fitted(prefix: str, parts: dict[str, list[str]], width: int) -> str:
    """`prefix` and the parts (each a list of forms, the longest first) joined in one line of at most `width`
    characters: parts shortened in SHORTENING's order until the line fits, then cut."""
    chosen = dict.fromkeys(parts, 0)

    def line() -> str:
        return prefix + " | ".join(filter(None, (forms[chosen[name]] for name, forms in parts.items())))

    for name, form in SHORTENING:
        if len(line()) <= width:
            break
        if name in parts:
            chosen[name] = min(form, len(parts[name]) - 1)
    shown = line()
    return shown if len(shown) <= width else shown[:max(width - 3, 0)] + "..."


class PendingLineEraser(logging.Filter):
    """A filter for the handlers that write log records to the terminal: before a record is written, the
    status line the console left without a newline (`pending`) is cleared, so that the record starts its
    own row rather than being glued to the line; the console writes the line again below it."""

    def __init__(self) -> None:
        super().__init__()
        self.pending = False

    def filter(self, record: logging.LogRecord) -> bool:
        if self.pending:
            self.pending = False
            sys.stdout.write(CLEAR_LINE)
            sys.stdout.flush()
        return True


def terminal_handlers() -> list[logging.Handler]:
    """The handlers that write log records to a stream (the terminal's stderr, in a study), not to a file:
    the root logger's and every other logger's (Ray's loggers do not propagate to the root)."""
    loggers = [logging.getLogger()] + [logger for logger in logging.Logger.manager.loggerDict.values()
                                       if isinstance(logger, logging.Logger)]
    return [handler for logger in loggers for handler in logger.handlers
            if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler)]


class StudyConsole(Callback):
    """A Tune callback that prints the study's progress compactly (see the module docstring). `name_of`: what
    the lines call a trial, after its id; `run_uri`: the folder of the Tune run (the study, or its confirm run),
    where its trials' folders lie."""

    # Class defaults too: a console unpickled from a Tune run's saved state may lack the attributes.
    name_of: Callable[[Any], str] = staticmethod(name_without_dataset)
    run_uri: str | None = None
    tie_break: str | None = None
    _eraser: PendingLineEraser | None = None

    def __init__(self, num_samples: int, max_epochs: int, metric: str, mode: str, every_s: float = 30.0,
                 name_of: Callable[[Any], str] | None = None, run_uri: str | None = None,
                 tie_break: str | None = None) -> None:
        self.num_samples, self.max_epochs, self.metric, self.mode = num_samples, max_epochs, metric, mode
        self.every_s, self.run_uri, self.tie_break = every_s, run_uri, tie_break
        self.bests: dict[str, tuple[float, float | None]] = {}  # trial id -> (metric, tie-break) at its best epoch
        if name_of is not None:
            self.name_of = name_of
        self._started = self._last_print = None
        self._epoch_seconds, self._epochs_timed = 0.0, 0  # the epochs this run's trials reported, and their time
        self._most_running = 1  # trials running at once, at most, in this run: the pace's parallelism
        self._eraser: PendingLineEraser | None = None  # on a terminal, while Tune's loop runs
        self._last_line = ""
        self._ended: set[str] = set()  # trials ended in this run whose status Tune has not updated yet
        self._unfinished: set[str] = set()  # trials seen running, waiting or pending in this run
        self._ended_experiment = False  # Tune's loop has ended: no more trials in this run

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update({"bests": {}, **state})  # a console pickled before it kept the trials' bests

    # ------------------------------------------------------------------ Tune's hooks

    def setup(self, **info) -> None:
        self._started, self._last_print = time.monotonic(), 0.0
        self._epoch_seconds, self._epochs_timed = 0.0, 0  # a resumed study may run on other machines
        self._most_running = 1
        self._ended_experiment = False  # a resumed study's console ran to an end before
        self._unfinished = set()  # what a resumed study's console saw in its first run says nothing now
        self._remove_eraser()
        if sys.stdout.isatty():
            self._eraser = PendingLineEraser()
            for handler in terminal_handlers():
                handler.addFilter(self._eraser)

    def on_step_end(self, iteration: int, trials: list, **info) -> None:
        self._unfinished.update(t.trial_id for t in trials if t.status in (RUNNING, PENDING, PAUSED))
        self._show_status(trials)

    def on_trial_result(self, iteration: int, trials: list, trial, result: dict, **info) -> None:
        seconds = result.get("time_this_iter_s")
        if isinstance(seconds, (int, float)) and seconds > 0:
            self._epoch_seconds += seconds
            self._epochs_timed += 1
        if not result.get("diverged"):  # a diverged epoch's value is a placeholder, no measurement
            value, tie = result.get(self.metric), result.get(self.tie_break) if self.tie_break else None
            best, best_tie = self.bests.get(trial.trial_id, (None, None))
            if improves(value, best, self.mode, tie, best_tie, self.tie_break):
                self.bests[trial.trial_id] = (float(value), tie)
        if result.get(RESTORE_NOTE_KEY):  # logged by the trial, whose log shows only with -v
            self._print_event(f"{self.label(trial)}: {result[RESTORE_NOTE_KEY]}")

    def get_state(self) -> dict[str, Any]:
        """What Tune's snapshot keeps of the console, for a resume: each trial's best epoch."""
        return {"bests": self.bests}

    def set_state(self, state: dict[str, Any]) -> None:
        self.bests = state["bests"]

    def on_trial_complete(self, iteration: int, trials: list, trial, **info) -> None:
        self._ended.add(trial.trial_id)
        self._print_event(self.trial_end_line(trial))
        self._show_status(trials, force=True)

    def on_trial_error(self, iteration: int, trials: list, trial, **info) -> None:
        epochs = self.epochs_of(trial)
        self._print_event(f"error after {epochs} epoch{'s' if epochs != 1 else ''}: {self.label(trial)}; "
                          f"its traceback: {self.error_file_of(trial)}", stream=sys.stderr)
        self._show_status(trials, force=True)

    def on_trial_recover(self, iteration: int, trials: list, trial, **info) -> None:
        """Tune retries a trial that failed (--max-failures) from its last full state."""
        retries = trial.max_failures if trial.max_failures >= 0 else "unlimited"
        self._print_event(f"retrying after error ({trial.num_failures} of {retries}): {self.label(trial)}; "
                          f"its traceback: {self.error_file_of(trial)}", stream=sys.stderr)
        self._show_status(trials, force=True)

    def on_experiment_end(self, trials: list, **info) -> None:
        """The last status line: trials the study never created are "not started", not "to start" (the
        search ended: every configuration of a space of choices ran; or the study was interrupted)."""
        self._ended_experiment = True
        self._show_status(trials, last=True)
        self._remove_eraser()

    def _remove_eraser(self) -> None:
        if self._eraser is not None:
            for handler in terminal_handlers():
                handler.removeFilter(self._eraser)
            self._eraser = None

    # ------------------------------------------------------------------ the lines

    def error_file_of(self, trial) -> str:
        """Where the trial's traceback lasts: error.txt in the trial's folder in the run's storage (a local folder
        or a bucket), where Tune uploads it; not trial.error_file, Tune's staging copy in Ray's temporary
        files. A resumed run names the folder where the run lies now (study.settings.study_location)."""
        run_uri = study_location(self.run_uri)
        if run_uri is None:
            return "error.txt in its trial folder"
        return storage.join(run_uri, storage.name_of(trial.path), "error.txt")

    def label(self, trial) -> str:
        return f"{trial.trial_id} {self.name_of(trial)}"

    def status_of(self, trial) -> str:
        if trial.trial_id in self._ended and trial.status not in (TERMINATED, ERROR):
            return TERMINATED
        # Tune marks the trials it stops on Ctrl-C TERMINATED, but never reports them complete.
        if (self._ended_experiment and trial.status == TERMINATED and trial.trial_id in self._unfinished
                and trial.trial_id not in self._ended):
            return INTERRUPTED
        return trial.status

    def epochs_of(self, trial) -> int:
        return int((trial.last_result or {}).get("training_iteration") or 0)

    def best_of(self, trial) -> float | None:
        """The trial's best value of the study metric so far (Tune tracks each metric's max and min); None for a
        trial that diverged in its first epoch, whose one result holds the worst value as a placeholder (a later
        diverged epoch's placeholder never beats the trial's measured epochs)."""
        result = trial.last_result or {}
        if result.get("diverged") and self.epochs_of(trial) <= 1:
            return None
        return (getattr(trial, "metric_analysis", {}) or {}).get(self.metric, {}).get(self.mode)

    def rank_of(self, trial) -> tuple:
        """Where a trial with a best ranks among the run's trials: by its best value of the metric, then the
        tie-break metric at that epoch, as the study's tables rank them (study.tables.rank_key). A trial whose best
        epoch this console has not seen (reported before a resume of a run saved without it) ranks after those
        tied with it whose tie-break value is known."""
        value = self.best_of(trial)
        seen, tie = self.bests.get(trial.trial_id, (None, None))
        return rank_key(trial.trial_id, value, self.mode, tie if seen == value else None, self.tie_break)

    def trial_end_line(self, trial) -> str:
        epochs, best = self.epochs_of(trial), self.best_of(trial)
        result = trial.last_result or {}
        if result.get("diverged"):
            how = f"diverged at epoch {epochs}"
        elif epochs < self.max_epochs:
            how = f"stopped early after {epochs} of {self.max_epochs} epochs"
        else:
            how = f"done, {epochs} epoch{'s' if epochs != 1 else ''}"
        if best is None:
            shown = "no best" if result.get("diverged") else "no epoch"
        else:
            shown = f"best {self.metric} {best:.3f}"
        return f"{how:<36} {shown:<26} {self.label(trial)}"

    def status_line(self, trials: list, now: float, width: int | None = None) -> str:
        """The status line; at most `width` characters if given (see fitted)."""
        by_status: dict[str, list] = {}
        for trial in trials:
            by_status.setdefault(self.status_of(trial), []).append(trial)
        ended = by_status.get(TERMINATED, [])
        diverged = [t for t in ended if (t.last_result or {}).get("diverged")]
        stopped = [t for t in ended
                   if self.epochs_of(t) < self.max_epochs and not (t.last_result or {}).get("diverged")]
        # Retried by Tune (--max-failures) or rerun by a resume, and not failed for good.
        retried = [t for t in trials if getattr(t, "num_failures", 0) and self.status_of(t) != ERROR]
        uncreated = max(self.num_samples - len(trials), 0)
        # Trials left unfinished: the run was interrupted, and a resume creates the trials it never created.
        interrupted = self._ended_experiment and any(status in by_status for status in UNFINISHED)
        to_start = (0 if self._ended_experiment else uncreated) + len(by_status.get(PENDING, []))
        epochs = sum(self.epochs_of(t) for t in trials)
        left = sum(self.max_epochs - self.epochs_of(t) for t in trials if self.status_of(t) in UNFINISHED)
        left += uncreated * self.max_epochs if interrupted or not self._ended_experiment else 0
        running, waiting = len(by_status.get(RUNNING, [])), len(by_status.get(PAUSED, []))  # PAUSED: at a rung
        outcomes = "".join(f", {count} {what}" for count, what in (
            (len(by_status.get(ERROR, [])), "errored"), (len(by_status.get(INTERRUPTED, [])), "interrupted"),
            (to_start, "to start"), (uncreated if self._ended_experiment else 0, "not started")) if count)
        how_ended = f"{len(stopped)} stopped early" + (f", {len(diverged)} diverged" if diverged else "")
        parts = {"trials": [
            f"trials: {running} running, " + (f"{waiting} waiting at a rung, " if waiting else "")
            + f"{len(ended)} done ({how_ended}){outcomes}" + (f", {len(retried)} retried" if retried else ""),
            f"{running} running, " + (f"{waiting} at a rung, " if waiting else "") + f"{len(ended)} done{outcomes}"]}
        self._most_running = max(self._most_running, running)
        eta = "" if self._ended_experiment else self._eta(left, running + waiting + to_start)
        parts["epochs"] = [f"epochs {epochs}" + (f", at most {left} left{eta}" if left else ""),
                           f"{left} epoch{'s' if left != 1 else ''} left{eta}" if left else f"epochs {epochs}"]
        scored = [t for t in trials if self.best_of(t) is not None]
        if scored:
            best = min(scored, key=self.rank_of)
            value = self.best_of(best)
            parts["best"] = [f"best {self.metric} {value:.3f} {self.label(best)}",
                             f"best {self.metric} {value:.3f} {best.trial_id}", f"best {value:.3f}", ""]
        prefix = f"[{clock(now - self._started)}] "
        if width is None:
            return prefix + " | ".join(forms[0] for forms in parts.values())
        return fitted(prefix, parts, width)

    def _eta(self, left: int, trials_left: int) -> str:
        """", ~N min": the epochs left at the trials' mean epoch time in this run (Tune's time of each reported
        epoch: not the time Ray, the workers and the data took to start; none reported yet: no estimate), on as
        many trials at once as ran at most so far, or fewer when fewer trials are left: the last trial's epochs
        come one at a time."""
        if self._epochs_timed == 0:
            return ""
        seconds_per_epoch = self._epoch_seconds / self._epochs_timed
        seconds = left * seconds_per_epoch / max(min(self._most_running, trials_left), 1)
        return f", ~{max(round(seconds / 60), 1)} min" if seconds >= 60 else f", ~{seconds:.0f} s"

    # ------------------------------------------------------------------ printing

    def _show_status(self, trials: list, force: bool = False, last: bool = False) -> None:
        """The status line: at most every second on a terminal (rewritten in place) and every `every_s`
        in a log, unless `force` or `last`; in a log only if it changed, unless `force`. The `last` line
        stays on a terminal: what follows starts below it."""
        now = time.monotonic()
        if self._started is None:
            self.setup()
        terminal = sys.stdout.isatty()
        if not (force or last) and now - self._last_print < (1 if terminal else self.every_s):
            return  # Tune steps many times a second: the line is built only when it may be shown
        if terminal:
            # The last line stays, whole; one rewritten in place must fit in one row (the cursor's last column
            # left free: some terminals wrap once it is written).
            width = None if last else shutil.get_terminal_size().columns - 1
            print(CLEAR_LINE + self.status_line(trials, now, width), end="\n" if last else "", flush=True)
            self._last_print = now
            if self._eraser is not None:
                self._eraser.pending = not last
            return
        line = self.status_line(trials, now)
        if force or self._body(line) != self._body(self._last_line):
            print(line, flush=True)
            self._last_print, self._last_line = now, line

    @staticmethod
    def _body(line: str) -> str:
        """A status line without its clock and time estimate: what says whether anything happened."""
        return line.partition("] ")[2].split(", ~")[0] + line.rpartition(" | best")[2]

    def _print_event(self, text: str, stream: TextIO | None = None) -> None:
        """A line of its own, below the status line; to `stream` if given (stderr: an error, which a user whose
        stdout goes to a file must still see), else to stdout."""
        now = time.monotonic() - (self._started or time.monotonic())
        if sys.stdout.isatty():
            print(CLEAR_LINE, end="", flush=True)
        print(f"[{clock(now)}] {text}", file=stream or sys.stdout, flush=True)
        if self._eraser is not None:
            self._eraser.pending = False
