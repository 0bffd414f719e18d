"""StudyConsole: the status line and the trial-end lines a study prints, from Tune's trial list."""

from __future__ import annotations

import io
import logging
import pickle
from contextlib import redirect_stderr, redirect_stdout
from types import SimpleNamespace

import pandas as pd

from study.checkpoints import RESTORE_NOTE_KEY
from study.console import StudyConsole
from study.tables import best_epochs, ranked_trials


class FakeTrial(SimpleNamespace):
    """What StudyConsole reads of a Tune trial."""

    def __str__(self) -> str:
        return f"d_{self.config['model']}_adam"


def trial(trial_id: str, status: str, epochs: int, best: float | None, diverged: bool = False) -> FakeTrial:
    result = {"training_iteration": epochs, "diverged": int(diverged)} if epochs else {}
    analysis = {"val/f1_macro": {"max": best, "min": best}} if best is not None else {}
    return FakeTrial(trial_id=trial_id, status=status, last_result=result, metric_analysis=analysis,
                     config={"dataset": "d", "model": f"m{trial_id}"}, error_file=None)


def console() -> StudyConsole:
    shown = StudyConsole(num_samples=6, max_epochs=4, metric="val/f1_macro", mode="max", every_s=0)
    shown.setup()
    return shown


def test_status_line_counts_trials_epochs_and_the_best():
    trials = [trial("a", "TERMINATED", 4, 0.45), trial("b", "TERMINATED", 1, 0.20),
              trial("c", "TERMINATED", 2, 0.0, diverged=True), trial("d", "RUNNING", 2, 0.50),
              trial("e", "PENDING", 0, None)]
    line = console().status_line(trials, now=console()._started + 5)
    assert "trials: 1 running, 3 done (1 stopped early, 1 diverged), 2 to start" in line  # e pending + 1 not created
    # epochs: 4 + 1 + 2 + 2; left: d's 2, e's 4 and the uncreated trial's 4
    assert "epochs 9, at most 10 left" in line
    assert line.endswith("best val/f1_macro 0.500 d md_adam")


def test_trials_waiting_at_a_rung_are_counted_apart_and_their_epochs_may_still_come():
    trials = [trial("a", "PAUSED", 2, 0.30), trial("b", "RUNNING", 3, 0.40)]
    line = console().status_line(trials, now=console()._started + 5)
    assert "trials: 1 running, 1 waiting at a rung, 0 done (0 stopped early), 4 to start" in line
    assert "epochs 5, at most 19 left" in line  # a's 2, b's 1 and 4 x 4 not yet created


def test_trial_end_lines_say_how_each_trial_ended():
    shown = console()
    assert shown.trial_end_line(trial("a", "TERMINATED", 4, 0.45)).startswith("done, 4 epochs")
    stopped = shown.trial_end_line(trial("b", "RUNNING", 1, 0.2))
    assert stopped.startswith("stopped early after 1 of 4 epochs") and "best val/f1_macro 0.200" in stopped
    assert shown.trial_end_line(trial("c", "RUNNING", 2, 0.0, diverged=True)).startswith("diverged at epoch 2")
    assert "no epoch" in shown.trial_end_line(trial("z", "RUNNING", 0, None))


def test_a_trial_that_diverged_in_its_first_epoch_shows_no_best():
    """Its one result is the placeholder worst value (0.0 for F1), no measurement: it was shown as the best."""
    diverged = trial("c", "TERMINATED", 1, 0.0, diverged=True)
    line = console().trial_end_line(diverged)
    assert line.startswith("diverged at epoch 1") and "no best" in line and "0.000" not in line
    assert "best" not in console().status_line([diverged], now=console()._started + 5)
    later = console().status_line([diverged, trial("d", "RUNNING", 1, 0.0)], now=console()._started + 5)
    assert later.endswith("best val/f1_macro 0.000 d md_adam")


def test_a_trial_just_completed_counts_as_done_before_tune_updates_its_status():
    shown = console()
    running = trial("a", "RUNNING", 4, 0.45)
    out = io.StringIO()
    with redirect_stdout(out):
        shown.on_trial_complete(0, [running], running)
    lines = out.getvalue().splitlines()
    assert lines[0].endswith("a ma_adam") and "done, 4 epochs" in lines[0]
    assert "trials: 0 running, 1 done (0 stopped early), 5 to start" in lines[1]


def test_a_console_given_a_name_for_trials_uses_it_in_every_line():
    shown = StudyConsole(num_samples=6, max_epochs=4, metric="val/f1_macro", mode="max", every_s=0,
                         name_of=lambda t: f"job of {t.config['model']}")
    shown.setup()
    ended = trial("a", "TERMINATED", 4, 0.45)
    assert shown.trial_end_line(ended).endswith("a job of ma")
    assert shown.status_line([ended], now=shown._started + 5).endswith("best val/f1_macro 0.450 a job of ma")


def test_a_log_gets_a_status_line_only_when_something_changed():
    shown = StudyConsole(num_samples=2, max_epochs=2, metric="val/f1_macro", mode="max", every_s=0)
    shown.setup()
    trials = [trial("a", "RUNNING", 1, 0.3)]
    out = io.StringIO()
    with redirect_stdout(out):
        shown.on_step_end(0, trials)
        shown.on_step_end(1, trials)  # nothing new: no line
        trials[0].last_result["training_iteration"] = 2
        shown.on_step_end(2, trials)
    assert len(out.getvalue().splitlines()) == 2


def test_the_last_line_counts_trials_never_created_as_not_started():
    """A search that ends before --num-samples (every configuration of a space of choices ran) leaves no
    trial "to start" and no epochs "left" on the study's last line."""
    shown = console()
    trials = [trial("a", "TERMINATED", 4, 0.45), trial("b", "TERMINATED", 1, 0.20)]
    out = io.StringIO()
    with redirect_stdout(out):
        shown.on_experiment_end(trials)
    last = out.getvalue().splitlines()[-1]
    assert "trials: 0 running, 2 done (1 stopped early), 4 not started | epochs 5 | best" in last
    assert "to start" not in last and "left" not in last


def test_the_last_line_is_not_repeated_when_nothing_changed():
    shown = console()
    trials = [trial(name, "TERMINATED", 4, 0.4) for name in "abcdef"]
    out = io.StringIO()
    with redirect_stdout(out):
        shown.on_trial_complete(0, trials, trials[-1])
        shown.on_experiment_end(trials)
    assert sum("trials:" in line for line in out.getvalue().splitlines()) == 1


def test_on_a_terminal_the_last_line_is_rewritten_in_place_and_kept():
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    shown = console()
    trials = [trial("a", "TERMINATED", 4, 0.45), trial("b", "TERMINATED", 1, 0.20)]
    out = Terminal()
    with redirect_stdout(out):
        shown.on_step_end(1, trials)
        shown.on_experiment_end(trials)
    lines = out.getvalue().split("\r\033[K")
    assert lines[0] == "" and "4 to start" in lines[1] and not lines[1].endswith("\n")
    assert "4 not started" in lines[2] and lines[2].endswith("\n")  # what follows starts below it


def test_the_estimate_goes_at_the_pace_of_the_reported_epochs_on_the_trials_that_can_still_run_at_once():
    """The pace is the trials' epoch time (Tune's time_this_iter_s), not the time since the run started, which
    counts Ray's start, the workers' imports and the data's loading (it showed ~15 min for a study that ended
    86 s later). Two trials at a time ran: the last trial's epochs come one at a time."""
    shown = console()
    start = shown._started
    running = [trial("a", "RUNNING", 2, 0.3), trial("b", "RUNNING", 2, 0.3)]
    assert ", ~" not in shown.status_line(running, now=start + 600)  # no epoch timed yet: no estimate
    for epoch_seconds in (12, 8, 11, 9):
        shown.on_trial_result(0, running, running[0], {"training_iteration": 1, "time_this_iter_s": epoch_seconds})
    middle = shown.status_line(running, now=start + 900)  # 15 min since the run started
    assert "epochs 4, at most 20 left, ~2 min" in middle  # 20 epochs of 10 s on two slots: 100 s
    ended = [trial(name, "TERMINATED", 4, 0.3) for name in "abcde"]
    last = shown.status_line([*ended, trial("f", "RUNNING", 2, 0.3)], now=start + 1000)
    assert "epochs 22, at most 2 left, ~20 s" in last  # 2 epochs of 10 s on one slot


def test_trials_stopped_by_ctrl_c_are_counted_as_interrupted_not_done():
    """On Ctrl-C Tune marks the running trial TERMINATED without reporting it complete: the last line
    counts it apart (a resume continues it), not as a trial stopped early."""
    shown = console()
    a, b = trial("a", "RUNNING", 4, 0.45), trial("b", "RUNNING", 1, 0.20)
    out = io.StringIO()
    with redirect_stdout(out):
        shown.on_step_end(0, [a, b])
        a.status = "TERMINATED"
        shown.on_trial_complete(1, [a, b], a)
        b.status = "TERMINATED"  # stopped by the interrupt
        shown.on_experiment_end([a, b])
    last = out.getvalue().splitlines()[-1]
    assert "trials: 0 running, 1 done (0 stopped early), 1 interrupted, 4 not started" in last, last
    # what a resume may still train: b's 3 epochs and the 4 trials never created; the resume's first line says so
    assert "| epochs 5, at most 19 left |" in last, last


def test_a_resumed_study_does_not_count_trials_its_first_run_saw_running_as_interrupted():
    shown = console()
    a = trial("a", "RUNNING", 2, 0.3)
    with redirect_stdout(io.StringIO()):
        shown.on_step_end(0, [a])
    shown.setup()  # the resume: Tune sets the unpickled callback up again; a ended between the two runs
    a.status = "TERMINATED"
    out = io.StringIO()
    with redirect_stdout(out):
        shown.on_experiment_end([a])
    assert "interrupted" not in out.getvalue() and "1 done (1 stopped early)" in out.getvalue()


def test_a_study_of_several_datasets_names_each_trial_with_its_dataset():
    from study.driver import study_console

    def settings(datasets):
        return SimpleNamespace(num_samples=2, max_epochs=2, metric="val/f1_macro", mode="max", tie_break="val/loss",
                               data_roots={name: f"/data/{name}" for name in datasets}, study_uri="/studies/s")

    one, two = study_console(settings(["d"])), study_console(settings(["d", "e"]))
    assert one.label(trial("a", "RUNNING", 1, 0.3)) == "a ma_adam"
    assert two.label(trial("a", "RUNNING", 1, 0.3)) == "a d_ma_adam"


def test_an_error_line_names_the_traceback_in_the_trial_folder_of_the_study_not_in_rays_temporary_files():
    """It named Tune's staging copy under Ray's temporary folder (gone with Ray's session files); Tune uploads
    error.txt into the trial's folder in the study's storage, local or a bucket, and a resume of a study moved
    since names it where the study lies now."""
    import pickle

    from study.settings import resumed_study

    def failed() -> FakeTrial:
        errored = trial("a", "ERROR", 2, 0.3)
        errored.path = "bucket/studies/demo/a_d_ma_adam"  # Tune's path on the bucket's filesystem: no scheme
        errored.error_file = "/tmp/ray/session_1/artifacts/2026/demo/driver_artifacts/a_d_ma_adam/error.txt"
        return errored

    shown = StudyConsole(num_samples=6, max_epochs=4, metric="val/f1_macro", mode="max", every_s=0,
                         run_uri="s3://bucket/studies/demo")
    shown.setup()
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        shown.on_trial_error(3, [failed()], failed())
        resumed = pickle.loads(pickle.dumps(shown))  # Tuner.restore unpickles the console of tuner.pkl
        with resumed_study("/elsewhere/demo-moved"):
            resumed.on_trial_error(4, [failed()], failed())
    first, second = err.getvalue().splitlines()  # on stderr, which a user whose stdout goes to a file still sees
    assert first.endswith("error after 2 epochs: a ma_adam; its traceback: s3://bucket/studies/demo/a_d_ma_adam/"
                          "error.txt"), first
    assert second.endswith("its traceback: /elsewhere/demo-moved/a_d_ma_adam/error.txt"), second
    assert "/tmp/ray" not in err.getvalue() and "error after" not in out.getvalue()


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def screen(output: str, width: int) -> list[str]:
    """The rows a terminal `width` columns wide shows after `output`: a character past the last column wraps to
    the next row, "\\r" returns to the row's start, "\\033[K" clears the row from the cursor."""
    rows, row, column = [""], 0, 0
    i = 0
    while i < len(output):
        if output.startswith("\033[K", i):
            rows[row], i = rows[row][:column], i + 3
            continue
        char, i = output[i], i + 1
        if char == "\r":
            column = 0
            continue
        if char == "\n" or column == width:
            row, column = row + 1, 0
            rows += [""] * (row + 1 - len(rows))
            if char == "\n":
                continue
        rows[row] = rows[row][:column].ljust(column) + char + rows[row][column + 1:]
        column += 1
    return [text for text in rows if text]


def long_running_study() -> list[FakeTrial]:
    """Trials whose status line is some 150 characters long."""
    return [trial("c7736b42", "RUNNING", 1, 0.033), trial("a024dd80", "PAUSED", 1, 0.02),
            trial("e2af5757", "TERMINATED", 4, 0.01), trial("f4111475", "TERMINATED", 1, 0.0, diverged=True)]


def test_on_a_terminal_the_status_line_fits_its_width_and_each_refresh_overwrites_it(monkeypatch):
    """A line longer than the terminal wraps, and "\\r" goes back to the start of its last row only: each
    refresh (one a second) left a stale row above. The line fits the width: its parts shortened, the least telling
    first, then cut."""
    shown, trials = console(), long_running_study()
    assert len(shown.status_line(trials, now=shown._started + 5)) > 150
    for columns, shown_row in ((120, "[  0:00] 1 running, 1 at a rung, 2 done, 2 to start | epochs 7, at most 14 left"
                                      " | best val/f1_macro 0.033 c7736b42"),
                               (80, "[  0:00] 1 running, 1 at a rung, 2 done, 2 to start | 14 epochs left"),
                               (40, "[  0:00] 1 running, 1 at a rung, 2 d...")):
        monkeypatch.setenv("COLUMNS", str(columns))
        out = Terminal()
        with redirect_stdout(out):
            for _ in range(3):
                shown._last_print = 0.0  # a second later
                shown.on_step_end(0, trials)
        assert screen(out.getvalue(), width=columns) == [shown_row]


def test_the_shortened_status_line_says_1_epoch_left_not_1_epochs():
    shown = StudyConsole(num_samples=1, max_epochs=2, metric="val/f1_macro", mode="max", every_s=0)
    shown.setup()
    line = shown.status_line([trial("a", "RUNNING", 1, 0.5)], now=shown._started + 5, width=50)
    assert "| 1 epoch left" in line, line


def test_a_log_record_on_a_terminal_starts_its_own_row_below_the_status_line():
    """Tune's stop warning was glued to the end of the status line (...alexnet_sgd_lr3.0e-03_bs322026-12-07
    03:53:27,056 WARNING tune.py:219 -- Stop signal received)."""
    out = Terminal()
    tune_log = logging.getLogger("tests.console.tune")
    handler = logging.StreamHandler(out)
    tune_log.addHandler(handler)
    tune_log.propagate = False
    try:
        with redirect_stdout(out):
            shown = console()  # set up once the handlers are there, as Tune sets its callbacks up after Ray's
            shown.on_step_end(0, long_running_study())
            tune_log.warning("Stop signal received")
            shown.on_trial_complete(1, long_running_study(), trial("c7736b42", "RUNNING", 4, 0.04))
            tune_log.warning("another record, after an event line")
            shown._last_print = 0.0
            shown.on_step_end(2, long_running_study())
            shown.on_experiment_end(long_running_study())
    finally:
        tune_log.removeHandler(handler)
    rows = screen(out.getvalue(), width=1000)
    assert rows[0] == "Stop signal received", rows
    # the status line after the event line is cleared for the next record, and written again below it
    assert rows[1].startswith("[  0:00] done, 4 epochs") and rows[2] == "another record, after an event line"
    assert rows[3].startswith("[  0:00] trials: ") and len(rows) == 4
    assert handler.filters == []  # the console's filter goes with Tune's loop


def test_in_a_log_the_status_line_is_whole_and_log_records_are_left_alone(monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    handler = logging.StreamHandler(io.StringIO())
    logging.getLogger().addHandler(handler)
    out = io.StringIO()
    try:
        with redirect_stdout(out):
            shown = console()
            shown.on_step_end(0, long_running_study())
    finally:
        logging.getLogger().removeHandler(handler)
    assert handler.filters == []
    assert out.getvalue() == shown.status_line(long_running_study(), now=shown._started) + "\n"
    assert len(out.getvalue()) > 150


def test_a_retried_trial_gets_a_line_and_is_counted():
    """Tune retries a trial that failed (--max-failures) from its last full state: it said nothing of it."""
    shown = StudyConsole(num_samples=2, max_epochs=4, metric="val/f1_macro", mode="max", every_s=0,
                         run_uri="/studies/demo")
    shown.setup()
    failed = trial("a", "RUNNING", 1, 0.3)
    failed.path, failed.num_failures, failed.max_failures = "/studies/demo/a_d_ma_adam", 1, 2
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        shown.on_trial_recover(3, [failed], failed)
    (event,), (status,) = err.getvalue().splitlines(), out.getvalue().splitlines()  # the error where `> log` shows it
    assert event.endswith("retrying after error (1 of 2): a ma_adam; its traceback: "
                          "/studies/demo/a_d_ma_adam/error.txt"), event
    assert "trials: 1 running, 0 done (0 stopped early), 1 to start, 1 retried |" in status, status


def test_a_trial_that_could_not_continue_from_its_full_state_gets_a_line():
    """Why a resumed or retried trial started again (its full state missing or unreadable) is logged in the
    trial's process, shown only with -v: its first result carries it to the console."""
    shown = console()
    restarted = trial("a", "RUNNING", 1, 0.3)
    note = "s3://b/demo/a_d/checkpoint_000000/state.pt: not a readable checkpoint (...); starting the trial again"
    out = io.StringIO()
    with redirect_stdout(out):
        shown.on_trial_result(1, [restarted], restarted, {"training_iteration": 1, RESTORE_NOTE_KEY: note})
        shown.on_trial_result(2, [restarted], restarted, {"training_iteration": 2})
    assert out.getvalue().splitlines() == [f"[  0:00] a ma_adam: {note}"]


def test_trials_tied_on_the_metric_are_ranked_by_the_tie_break_at_their_best_epoch_as_the_tables_rank_them():
    """At a tie the line named another trial than the end-of-study table, study.analyze and study.confirm: the first
    in Tune's list (here a, whose val/loss at its best epoch is the higher), not the one the tie-break ranks first."""
    shown = StudyConsole(num_samples=2, max_epochs=2, metric="val/f1_macro", mode="max", every_s=0,
                         tie_break="val/loss")
    pickled = pickle.dumps(shown)  # as Tune saves the console with the run (tuner.pkl), before any result
    shown.setup()
    reports = [("a", 1, 0.279, 0.90), ("b", 1, 0.200, 0.70), ("b", 2, 0.279, 0.80), ("a", 2, 0.250, 0.50)]
    a, b = trial("a", "TERMINATED", 2, 0.279), trial("b", "TERMINATED", 2, 0.279)
    for trial_id, epoch, f1, loss in reports:
        shown.on_trial_result(epoch, [a, b], a if trial_id == "a" else b, {"val/f1_macro": f1, "val/loss": loss})
    results = pd.DataFrame(reports, columns=["trial_id", "training_iteration", "val/f1_macro", "val/loss"])
    tables_best = ranked_trials(best_epochs(results, "val/f1_macro", "max", "val/loss"), "val/f1_macro", "max",
                                "val/loss")["trial_id"].iloc[0]
    assert tables_best == "b"
    assert shown.status_line([a, b], now=shown._started + 5).endswith("best val/f1_macro 0.279 b mb_adam")
    resumed = pickle.loads(pickled)  # a resume: Tune unpickles the console, then gives it its saved state
    resumed.set_state(shown.get_state())
    resumed.setup()
    assert resumed.status_line([a, b], now=resumed._started + 5).endswith("best val/f1_macro 0.279 b mb_adam")
