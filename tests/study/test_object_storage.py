"""Studies in a bucket end to end, against a real S3 server (moto, see conftest.s3_server).

One study serves most tests (`s3_study`, module-scoped): `python -m study.run --storage s3://...`
run as a subprocess from an empty working directory, SIGKILLed (with its Ray) once one trial has
finished and a second has reported an epoch, then `--resume s3://...` finishes it. Its tests check
what the bucket holds (settings, split, results, TensorBoard events, best weights; full states
while it ran, none after), that nothing was written locally, that the resume lost and repeated
nothing, and that `python -m study.analyze s3://...` gives the tables of a local copy's analysis,
downloading only the weights it evaluates, once.

The studies run the CLI in subprocesses, each with its own Ray (RAY_TMPDIR) and the server's
environment passed explicitly: Ray workers inherit the environment of the driver that starts Ray,
and the session's Ray instance (`ray_session`) may have started before any S3 variable was set.

Cost: ResNet50 at 64 px with plain SGD (no momentum: a full state is the weights alone, 94 MB, not
the 280 MB of Adam's; at 32 px SGD diverges on this tiny dataset). Most of the time goes to moving
those files through moto (~20 MB/s here). About 2.5-3.5 minutes on 2 busy cores.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
import uuid
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

from study import analyze as analyze_module
from study import driver
from study import run as run_module
from study import storage
from study.analyze import analyze
from study.checkpoints import read_best_weights, weights_uri
from study.results import read_results, read_trial_events
from study.settings import load_settings
from test_run import (assert_optuna_study_matches, build_tiny_folder, raw_parts, snapshot, study_argv, study_commands, tensorboard_scalars,
                      wait_for_a_finished_and_a_running_trial, write_space)

EPOCHS, SAMPLES = 3, 2
SEARCH = {"model": {"value": "resnet50"}, "optimizer": {"value": "sgd"}, "lr": {"loguniform": [1.0e-4, 1.0e-3]},
          "batch_size": {"value": 16}, "momentum": {"value": 0.0}}
DATASET, MODEL = "folder", "resnet50"


# ------------------------------------------------------------------ helpers

def trial_folders(study_uri: str) -> dict[str, str]:
    """trial id -> its Tune folder in the bucket (<trial id>_<name>, holding params.json)."""
    return {entry.name.partition("_")[0]: entry.uri for entry in storage.listing(study_uri)
            if entry.is_dir and storage.kind(storage.join(entry.uri, "params.json")) == "file"}


def tables_of(report: Path) -> dict[str, pd.DataFrame]:
    return {path.name: pd.read_csv(path) for path in sorted((report / "tables").glob("*.csv"))}


def forbid_ray(monkeypatch) -> list:
    """Make any start of (or connection to) Ray fail the test; returns the calls seen."""
    calls = []

    def refuse(*args, **kwargs):
        calls.append(args)
        raise AssertionError("Ray was started for a study that should have stopped before it")

    monkeypatch.setattr(driver, "connect", refuse)
    return calls


# ------------------------------------------------------------------ fixtures

@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    return build_tiny_folder(tmp_path_factory.mktemp("tiny-folder"))


@pytest.fixture(scope="module")
def s3_env(s3_server):
    """This module's bucket (its URI) and the server's environment set for the module's tests."""
    bucket = s3_server.create_bucket(f"studies-{uuid.uuid4().hex[:12]}")
    with pytest.MonkeyPatch.context() as patch:
        for key, value in s3_server.env().items():
            patch.setenv(key, value)
        yield bucket


@pytest.fixture(scope="module")
def s3_study(s3_env, tmp_path_factory, tiny_data):
    """A study in the bucket, killed (SIGKILL, the driver's whole process group) mid-study, moved to another
    prefix of the bucket, then resumed there.

    Two trials of 3 epochs one at a time, a full state after epochs 1 and 2 (--checkpoint-every 1),
    every trial's best weights kept (--keep all). Returns what the tests need, including what the
    bucket held when the first run was killed.
    """
    work = tmp_path_factory.mktemp("s3-study")
    space = write_space(work / "sgd.yaml", SEARCH)
    cwd = work / "cwd"  # the runs' working directory: must stay empty
    cwd.mkdir()
    cache = work / "cache"
    name = "killed"
    storage_uri = storage.join(s3_env, "studies")
    study_uri = storage.join(storage_uri, name)
    argv = study_argv(space, storage_uri, name, tiny_data, cache, "--image-size", "64", "--num-samples", str(SAMPLES),
                      "--max-epochs", str(EPOCHS), "--grace-period", str(EPOCHS), "--max-concurrent", "1",
                      "--num-cpus", "2", "--seed", "0", "--checkpoint-every", "1", "--keep", "all")
    started = time.monotonic()
    with study_commands(cwd) as commands:  # the environment holds the server's variables (s3_env)
        first = commands.start(argv, work / "first.log")
        done, running = wait_for_a_finished_and_a_running_trial(first, study_uri, work / "first.log")
        commands.kill(first)
        killed_after = time.monotonic() - started
        (finished,), (unfinished,) = done, running
        status, _, checkpointed = snapshot(study_uri)[unfinished]  # what --resume restores
        folders = trial_folders(study_uri)
        full_states = [entry.uri.removeprefix(folders[unfinished] + "/")
                       for entry in storage.listing(folders[unfinished], recursive=True)
                       if "checkpoint_" in entry.uri and not entry.is_dir]
        before = raw_parts(study_uri)
        # The study moves to another prefix before the resume (a copy to another bucket, say): the resumed
        # run reads and writes only there.
        first_uri, storage_uri = study_uri, storage.join(s3_env, "archive")
        study_uri = storage.join(storage_uri, name)
        storage.copy_tree(first_uri, study_uri)
        storage.delete(first_uri)

        resumed_at = time.monotonic()
        second = commands.start(["--resume", study_uri, "--num-cpus", "2"], work / "resume.log")
        assert second.wait(timeout=400) == 0, (work / "resume.log").read_text()[-3000:]
        resumed_in = time.monotonic() - resumed_at
        env = commands.env
    print(f"s3 study: killed after {killed_after:.0f} s, resumed run {resumed_in:.0f} s")
    return SimpleNamespace(uri=study_uri, first_uri=first_uri, storage=storage_uri, name=name, cwd=cwd, cache=cache, env=env, work=work,
                           finished=finished, unfinished=unfinished, status_at_kill=status, checkpointed=checkpointed,
                           full_states_at_kill=full_states, before=before, after=raw_parts(study_uri))


@pytest.fixture(scope="module")
def analyses(s3_study, tmp_path_factory):
    """The study analysed three times: the CLI on the bucket (first, from an empty working directory),
    analyze() on the bucket again (second), and analyze() on a local copy (storage.copy_tree)."""
    work = tmp_path_factory.mktemp("analyses")
    cwd = work / "cwd"
    cwd.mkdir()
    downloads = s3_study.cache / "downloads"  # the study's --cache-dir: where the analysis caches weights
    assert not downloads.exists()
    started = time.monotonic()
    timings = {}
    cli = subprocess.run([sys.executable, "-m", "study.analyze", s3_study.uri, "--out", str(work / "s3-first")],
                         cwd=cwd, env=s3_study.env, capture_output=True, text=True, timeout=300)
    assert cli.returncode == 0, cli.stdout[-3000:] + cli.stderr[-3000:]
    cached = {path.name: path.stat().st_size for path in downloads.iterdir()}
    timings["CLI"], started = time.monotonic() - started, time.monotonic()
    second = analyze(s3_study.uri, out=work / "s3-second")
    timings["analyze()"], started = time.monotonic() - started, time.monotonic()
    local_dir = work / "local" / s3_study.name
    storage.copy_tree(s3_study.uri, str(local_dir))
    timings["copy_tree"], started = time.monotonic() - started, time.monotonic()
    local = analyze(local_dir, out=work / "local-report")
    timings["local analyze()"] = time.monotonic() - started
    print("analyses: " + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items()))
    return SimpleNamespace(cli=cli, cwd=cwd, first_out=work / "s3-first", cached_after_first=cached,
                           downloads=downloads, second=second, local_dir=local_dir, local=local)


# ------------------------------------------------------------------ a study in a bucket

def test_the_bucket_holds_the_whole_study_and_the_working_directory_nothing(s3_study):
    uri = s3_study.uri
    assert list(s3_study.cwd.iterdir()) == [], "the study wrote into its working directory"
    settings = load_settings(uri)
    assert (settings.storage, settings.name, settings.keep, settings.checkpoint_every) == \
        (s3_study.storage, s3_study.name, "all", 1)
    split = storage.read_csv(storage.join(uri, "splits", f"{DATASET}.csv"), dtype=str)
    assert len(split) == 48 and set(split["split"]) == {"train", "val", "test"}
    assert [e.name for e in storage.listing(storage.join(uri, "results"))
            if e.name.endswith(".parquet")], "no results in the bucket"
    results = read_results(uri)
    assert results["trial_id"].nunique() == SAMPLES
    assert results.groupby("trial_id")["training_iteration"].apply(list).tolist() == \
        [list(range(1, EPOCHS + 1))] * SAMPLES
    events = read_trial_events(uri)
    assert sorted(events["trial_id"]) == sorted(results["trial_id"].unique()) and set(events["event"]) == {"completed"}
    # Tune's own state is there too (what --resume restores from)
    names = [entry.name for entry in storage.listing(uri)]
    assert "tuner.pkl" in names and any(n.startswith("experiment_state-") for n in names)

    # best weights of every trial (--keep all): weights and sidecar, the sidecar naming their size and epoch
    weights, problems = read_best_weights(uri)
    assert problems == [] and sorted(weights) == sorted(results["trial_id"].unique())
    for trial_id, best in weights.items():
        assert storage.size_of(weights_uri(uri, trial_id)) == best.bytes > 50_000_000
        rows = results[results["trial_id"] == trial_id]
        best_f1 = rows["val/f1_macro"].max()
        assert best.epoch == rows.loc[rows["val/f1_macro"] == best_f1, "training_iteration"].min()
    assert sorted(e.name for e in storage.listing(storage.join(uri, "weights"))) == sorted(
        f"{t}.{kind}" for t in weights for kind in ("json", "pt"))

    # TensorBoard events in every trial folder; no full state left once the trials ended
    folders = trial_folders(uri)
    assert sorted(folders) == sorted(weights)
    for trial_id, folder in folders.items():
        files = [e.name for e in storage.listing(folder)]
        assert any(n.startswith("events.out.tfevents.") for n in files), f"no TensorBoard events in {folder}: {files}"
        assert not [n for n in files if n.startswith("checkpoint_")], f"full states left in {folder}: {files}"
    assert not [e.uri for e in storage.listing(uri, recursive=True) if "checkpoint_" in e.uri]


def test_tensorboard_events_in_the_bucket_hold_every_epoch(s3_study, tmp_path):
    """The trial that finished before the kill: its events file, downloaded, holds each epoch's val/loss."""
    folder = trial_folders(s3_study.uri)[s3_study.finished]
    for entry in storage.listing(folder):
        if entry.name.startswith("events.out.tfevents."):
            (tmp_path / entry.name).write_bytes(storage.read_bytes(entry.uri))
    rows = read_results(s3_study.uri).query("trial_id == @s3_study.finished")
    loss = tensorboard_scalars(tmp_path).Scalars("val/loss")
    assert [e.step for e in loss] == list(rows["training_iteration"]) == list(range(1, EPOCHS + 1))
    assert [round(e.value, 5) for e in loss] == [round(v, 5) for v in rows["val/loss"]]


def test_full_states_were_in_the_bucket_while_the_study_ran(s3_study):
    """When the first run was killed, the unfinished trial's latest full state lay in the bucket (Tune
    keeps one), and it was what the resumed run continued from."""
    assert s3_study.status_at_kill == "RUNNING" and 1 <= s3_study.checkpointed < EPOCHS
    states = s3_study.full_states_at_kill
    assert states and all(re.fullmatch(r"checkpoint_\d{6}/state\.pt", state) for state in states), states


def test_killed_study_resumed_from_the_bucket_loses_and_repeats_nothing(s3_study):
    before, after = s3_study.before, s3_study.after
    finished, unfinished, checkpointed = s3_study.finished, s3_study.unfinished, s3_study.checkpointed
    assert set(before["trial_id"]) == {finished, unfinished} and before["session"].nunique() == 1
    assert sorted(before.loc[before["trial_id"] == finished, "epoch"]) == list(range(1, EPOCHS + 1))
    # the first run's parts are all still there, unchanged: resuming appends
    kept = after[after["session"] == before["session"].iloc[0]]
    pd.testing.assert_frame_equal(kept.reset_index(drop=True), before.reset_index(drop=True))
    new = after[after["session"] != before["session"].iloc[0]]
    assert new["session"].nunique() == 1
    assert finished not in set(new["trial_id"]), "the finished trial ran again"
    resumed = new.loc[new["trial_id"] == unfinished, "epoch"].tolist()
    assert resumed == list(range(checkpointed + 1, EPOCHS + 1)), \
        f"the unfinished trial reran from scratch or skipped epochs: {resumed} (full state at {checkpointed})"
    assert set(new["trial_id"]) == {unfinished}
    results = read_results(s3_study.uri)
    assert len(results) == SAMPLES * EPOCHS
    assert storage.kind(s3_study.first_uri) == "missing", "the resumed run wrote where the study lay before it moved"


def test_the_bucket_holds_the_optuna_study_with_every_trial_once(s3_study, tmp_path):
    """optuna.db, copied into the bucket after each trial and fetched back by --resume, ends with both
    trials, the one finished before the kill included, each valued at its best epoch."""
    local = tmp_path / "optuna.db"
    local.write_bytes(storage.read_bytes(storage.join(s3_study.uri, "optuna.db")))
    assert_optuna_study_matches(local, s3_study.name, read_results(s3_study.uri))


# ------------------------------------------------------------------ analysing a study in a bucket

PATH_OR_TIME = re.compile(r"path|dir|uri|file|second|time|date|created", re.IGNORECASE)


def assert_same_table(remote: pd.DataFrame, local: pd.DataFrame, what: str) -> list[str]:
    """The same table but for columns that hold paths or times; returns the columns that differ."""
    assert list(remote.columns) == list(local.columns) and len(remote) == len(local), what
    differing = [column for column in local.columns if not remote[column].equals(local[column])]
    unexpected = [column for column in differing if not PATH_OR_TIME.search(str(column))]
    for column in unexpected:
        pd.testing.assert_series_equal(remote[column], local[column], obj=f"{what}, column {column!r}")
    return differing


def test_analysis_of_the_bucket_matches_that_of_a_local_copy(s3_study, analyses):
    assert list(analyses.cwd.iterdir()) == [], "the analysis wrote into its working directory"
    local = tables_of(analyses.local.out)
    assert "selected_trials.csv" in local and "comparison_f1_macro.csv" in local and "trials.csv" in local
    for name, report in (("CLI on the bucket", analyses.first_out), ("analyze() on the bucket", analyses.second.out)):
        remote = tables_of(report)
        assert sorted(remote) == sorted(local), name
        differing = {table: assert_same_table(remote[table], local[table], f"{name}: {table}") for table in local}
        print(f"{name}: columns that differ from the local copy's analysis: "
              f"{ {t: c for t, c in differing.items() if c} }")
    assert analyses.second.notes == analyses.local.notes
    # each analysis recorded its look at the test split in the bucket, and the next one read it
    assert "test split: first read by this analysis" in analyses.cli.stdout
    assert [look.same_models(analyses.second.look) for look in analyses.second.earlier_looks] == [True]
    records = [e.name for e in storage.listing(storage.join(s3_study.uri, "analyses")) if e.name.endswith(".json")]
    assert len(records) == 2, records
    assert analyses.local.best(DATASET, MODEL) is not None
    assert analyses.second.best(DATASET, MODEL).candidate.trial_id == analyses.local.best(DATASET, MODEL).candidate.trial_id


def test_analysis_downloads_the_evaluated_weights_once(s3_study, analyses):
    evaluated = pd.read_csv(analyses.first_out / "tables" / "selected_trials.csv", dtype={"trial_id": str})["trial_id"]
    sizes = {t: storage.size_of(weights_uri(s3_study.uri, t)) for t in evaluated}
    # the first analysis fetched exactly the evaluated weights, into the study's cache
    assert sorted(analyses.cached_after_first.values()) == sorted(sizes.values())
    assert all(any(name.endswith(f"-{t}.pt") for name in analyses.cached_after_first) for t in sizes)
    assert f"downloaded {sum(sizes.values()) / 1e6:,.1f} MB of weights from {s3_study.uri}" in analyses.cli.stdout
    # the second fetched nothing
    assert analyses.second.downloaded_bytes == 0
    assert {p.name: p.stat().st_size for p in analyses.downloads.iterdir()} == analyses.cached_after_first
    # a local study is never "downloaded"
    assert analyses.local.downloaded_bytes == 0
    # the report's commands that run the chosen models on new images name the local copies (cxrnets.predict
    # reads local files), and which weights in the bucket they are
    report = (analyses.first_out / "report.md").read_text()
    commands = re.findall(r"`python -m cxrnets\.predict (\S+) IMAGES_OR_FOLDERS --out predictions\.csv` "
                          r"\(this machine's copy of (\S+)\)", report)
    assert commands and all(Path(local).parent.resolve() == analyses.downloads.resolve() and Path(local).name in analyses.cached_after_first
                            and uri.startswith("s3://") and uri.endswith(Path(local).name.rpartition("-")[2])
                            for local, uri in commands), commands


def test_analysis_of_a_bucket_needs_a_local_report_folder(s3_study, capsys):
    assert analyze_module.main([s3_study.uri]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {s3_study.uri} is in object storage: pass --out DIR"), err


@pytest.mark.parametrize("damage", ["missing", "truncated"])
def test_damaged_weights_in_the_bucket_are_reported_and_skipped(s3_study, analyses, tmp_path, damage):
    """The cell's best trial lost its weights file (or has half of one): the analysis says so in its
    notes and evaluates the cell's next trial, as it does for a local study."""
    best = analyses.second.best(DATASET, MODEL).candidate.trial_id
    (other,) = set(read_results(s3_study.uri)["trial_id"]) - {best}
    copy = storage.join(s3_study.storage, f"{s3_study.name}-{damage}")
    storage.copy_tree(s3_study.uri, copy)
    if damage == "missing":
        storage.delete(weights_uri(copy, best))
    else:
        head = (analyses.local_dir / "weights" / f"{best}.pt").read_bytes()[: 2**20]
        storage.write_bytes(weights_uri(copy, best), head)
    result = analyze(copy, out=tmp_path / "report", formats=("csv",))
    notes = "\n".join(result.notes)
    assert best in notes and "skipped" in notes, notes
    assert ("no such object" if damage == "missing" else "not a readable checkpoint") in notes, notes
    chosen = result.best(DATASET, MODEL)
    assert chosen is not None and chosen.candidate.trial_id == other
    fetched = storage.size_of(weights_uri(copy, other)) + (2**20 if damage == "truncated" else 0)
    assert result.downloaded_bytes == fetched


# ------------------------------------------------------------------ what cannot work stops at once

def test_bucket_that_does_not_exist_stops_the_study_before_ray(s3_bucket, tmp_path, tiny_data, capsys, monkeypatch):
    import ray

    ray_was_up = ray.is_initialized()
    calls = forbid_ray(monkeypatch)
    space = write_space(tmp_path / "space.yaml", SEARCH)
    missing = f"s3://missing-{uuid.uuid4().hex[:12]}/studies"
    started = time.monotonic()
    code = run_module.main(study_argv(space, missing, "bad", tiny_data, tmp_path / "cache", "--image-size", "64"))
    elapsed = time.monotonic() - started
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith(f"error: --storage {missing}/bad: cannot write there (") and err.count("error:") == 1, err
    assert "the bucket exists" in err and "Traceback" not in err
    assert calls == [] and ray.is_initialized() == ray_was_up
    assert elapsed < 15, f"the missing bucket took {elapsed:.0f} s to refuse"


def test_refused_credentials_stop_the_study_before_ray(s3_bucket, s3_server, tmp_path, tiny_data, capsys,
                                                       monkeypatch):
    calls = forbid_ray(monkeypatch)
    space = write_space(tmp_path / "space.yaml", SEARCH)
    with s3_server.auth_enforced():
        code = run_module.main(study_argv(space, f"{s3_bucket}/studies", "bad", tiny_data, tmp_path / "cache",
                                          "--image-size", "64"))
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith(f"error: --storage {s3_bucket}/studies/bad: cannot write there (") and \
        err.count("error:") == 1, err
    assert "ACCESS_DENIED" in err and "credentials" in err
    assert calls == []
    assert storage.listing(s3_bucket, recursive=True) == []  # nothing of the study was written


@pytest.mark.parametrize("command", [["study.run", "--resume"], ["study.confirm", "--resume"], ["study.confirm"]])
def test_credentials_that_read_but_cannot_write_stop_a_resume_before_ray(s3_bucket, tmp_path, tiny_data, capsys,
                                                                          monkeypatch, command):
    """A resume (or a confirm run) reads the study, then writes its lock and results: credentials that may read
    the bucket but not write it stop it at once, as they stop a new study. Here: none at all, which the server
    lets read but not write."""
    from study import confirm as confirm_module
    from study.settings import save_settings

    calls = forbid_ray(monkeypatch)
    space = write_space(tmp_path / "space.yaml", SEARCH)
    argv = study_argv(space, f"{s3_bucket}/studies", "demo", tiny_data, tmp_path / "cache", "--image-size", "64")
    settings = run_module.settings_from_args(run_module.build_parser().parse_args(argv))
    save_settings(settings)
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    module, *flags = command
    if module == "study.run":
        code = run_module.main([*flags, settings.study_uri])
    else:
        code = confirm_module.main([settings.study_uri, *flags])
    err = capsys.readouterr().err
    flag = "--resume" if module == "study.run" else "study directory"
    assert code == 2
    assert err.startswith(f"error: {flag} {settings.study_uri}: cannot write there (") and "ACCESS_DENIED" in err \
        and err.count("\n") == 1, err
    assert "credentials" in err and calls == []


@pytest.fixture
def no_gcs_credentials(tmp_path, monkeypatch) -> str:
    """A gs:// location with no Google Cloud credentials anywhere Google's client looks (no key file, an
    empty gcloud configuration, a metadata server on a port nothing listens on), which the client
    retries for 15 minutes by default; the first look gives up after 2 s here."""
    import socket

    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "gcloud"))
    monkeypatch.setenv("GCE_METADATA_ROOT", f"127.0.0.1:{port}")
    monkeypatch.setattr(storage, "FIRST_LOOK_SECONDS", 2.0)
    return f"gs://cxr-{uuid.uuid4().hex[:12]}/studies"


def test_gcs_without_credentials_stops_the_study_before_ray(no_gcs_credentials, tmp_path, tiny_data, capsys,
                                                            monkeypatch):
    calls = forbid_ray(monkeypatch)
    space = write_space(tmp_path / "space.yaml", SEARCH)
    started = time.monotonic()
    code = run_module.main(study_argv(space, no_gcs_credentials, "bad", tiny_data, tmp_path / "cache",
                                      "--image-size", "64"))
    elapsed = time.monotonic() - started
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith(f"error: --storage {no_gcs_credentials}/bad: cannot write there (no Google Cloud "
                          "credentials could be found or used)") and err.count("\n") == 1, err
    assert "GOOGLE_APPLICATION_CREDENTIALS" in err and "AWS_" not in err
    assert calls == []
    assert elapsed < 60, f"the missing credentials took {elapsed:.0f} s to refuse"


def test_gcs_without_credentials_stops_a_resume_and_an_analysis(no_gcs_credentials, tmp_path, capsys, monkeypatch):
    calls = forbid_ray(monkeypatch)
    study = f"{no_gcs_credentials}/demo"
    assert run_module.main(["--resume", study]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --resume {study}: cannot read this location (no Google Cloud credentials") \
        and err.count("\n") == 1, err
    assert analyze_module.main([study, "--out", str(tmp_path / "report")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: study directory {study}: cannot read this location (no Google Cloud "
                          "credentials"), err
    assert calls == [] and not (tmp_path / "report").exists()


def test_study_refused_after_the_write_check_leaves_nothing_in_the_bucket(s3_bucket, tmp_path, capsys,
                                                                         monkeypatch):
    """The bucket is writable but the data is not there: the study stops before Ray, and the bucket
    holds nothing of it (as test_run.assert_no_trial asks of a local folder), so that the same
    --name can start again and --resume says there is no such study."""
    calls = forbid_ray(monkeypatch)
    space = write_space(tmp_path / "space.yaml", SEARCH)
    missing = tmp_path / "no-such-data"
    code = run_module.main(study_argv(space, f"{s3_bucket}/studies", "bad", missing, tmp_path / "cache",
                                      "--image-size", "64"))
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and str(missing) in err, err
    assert calls == []
    left = [entry.uri for entry in storage.listing(s3_bucket, recursive=True)]
    assert left == [], f"the refused study left {left} in the bucket"


def test_resume_of_a_study_that_is_not_in_the_bucket(s3_bucket, capsys, monkeypatch):
    calls = forbid_ray(monkeypatch)
    absent = f"{s3_bucket}/studies/absent"
    assert run_module.main(["--resume", absent]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --resume {absent}: no such study directory") and err.count("\n") == 1, err
    # a folder in the bucket, but no study.json in it
    storage.write_text(f"{s3_bucket}/studies/other/notes.txt", "not a study")
    assert run_module.main(["--resume", f"{s3_bucket}/studies/other"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --resume {s3_bucket}/studies/other: not a study directory, it has no study.json")
    # no such bucket: said as a new study says it, not as a folder missing in it
    nowhere = f"s3://missing-{uuid.uuid4().hex[:12]}/studies/absent"
    assert run_module.main(["--resume", nowhere]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --resume {nowhere}: bucket {nowhere[5:].split('/')[0]} does not exist") \
        and err.count("\n") == 1, err
    assert calls == []


def test_analysis_of_a_study_that_is_not_in_the_bucket(s3_bucket, tmp_path, capsys):
    absent = f"{s3_bucket}/studies/absent"
    assert analyze_module.main([absent, "--out", str(tmp_path / "report")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: study directory {absent}: no such study directory") and err.count("\n") == 1, err
    nowhere = f"s3://missing-{uuid.uuid4().hex[:12]}/studies/absent"
    assert analyze_module.main([nowhere, "--out", str(tmp_path / "report")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: study directory {nowhere}: bucket {nowhere[5:].split('/')[0]} does not exist") \
        and err.count("\n") == 1, err
    assert not (tmp_path / "report").exists()


@pytest.mark.parametrize("command", ["resume", "analyze"])
def test_refused_credentials_when_reading_a_study_are_one_clear_error(s3_bucket, s3_server, tmp_path, capsys,
                                                                     monkeypatch, command):
    """Refused credentials (or a network error) while reading a study: an error naming the location,
    not a traceback."""
    forbid_ray(monkeypatch)
    uri = f"{s3_bucket}/studies/demo"
    with s3_server.auth_enforced():
        try:
            if command == "resume":
                code = run_module.main(["--resume", uri])
            else:
                code = analyze_module.main([uri, "--out", str(tmp_path / "report")])
        except OSError as error:
            pytest.fail(f"{command} of {uri} with refused credentials raised {type(error).__name__} (a traceback "
                        f"for the user) instead of one clear error: {error}")
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: ") and uri in err and "ACCESS_DENIED" in err, err
