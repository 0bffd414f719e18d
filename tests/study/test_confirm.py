"""study.confirm: the selected configurations trained again with new seeds through Ray, and the
analysis that reports their spread (on a hard-linked copy of the session's grid study)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
from dataclasses import asdict, replace
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

from study import storage
from study.analyze import analyze
from cxrnets.errors import CxrError
from study.confirm import ConfirmJob, JobLabels, confirm_uri, jobs_uri, main, make_jobs, read_jobs, run_confirm
from study.console import StudyConsole
from study.results import ResultsTable, read_results, read_trial_events
from study.settings import load_settings
from study.tables import best_trials

REPO = Path(__file__).resolve().parents[2]
DATASET = "covid-chestxray-3class"
METRIC = "val/f1_macro"
SEEDS = 2


def linked_copy(source: Path, target: Path) -> Path:
    shutil.copytree(source, target, copy_function=os.link, ignore=shutil.ignore_patterns("report"))
    return target


def part_names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("*.parquet"))


@pytest.fixture(scope="module")
def confirmed(grid_study, tmp_path_factory) -> Path:
    """The grid study confirmed with SEEDS seeds by the command line; what it printed is in
    printed_by_confirm(study)."""
    study = linked_copy(grid_study, tmp_path_factory.mktemp("confirm") / "grid")
    before = part_names(study / "results")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main([str(study), "--seeds", str(SEEDS)]) == 0
    (study.parent / "printed.txt").write_text(printed.getvalue())
    assert part_names(study / "results") == before  # the study's own results are untouched
    return study


def printed_by_confirm(study: Path) -> str:
    return (study.parent / "printed.txt").read_text()


def test_each_selected_configuration_is_trained_again_with_each_new_seed(confirmed):
    results = read_results(str(confirmed))
    chosen = best_trials(results, METRIC, "max", by=("config/dataset", "config/model"),
                         tie_break=load_settings(str(confirmed)).tie_break).set_index("config/model")
    jobs = read_jobs(str(confirmed))
    assert sorted((job.model, job.seed) for job in jobs) == [("alexnet", 1), ("alexnet", 2),
                                                              ("resnet50", 1), ("resnet50", 2)]
    for job in jobs:
        best = chosen.loc[job.model]
        assert job.confirms == best["trial_id"]
        for key in ("optimizer", "lr", "batch_size"):
            assert job.config[key] == best[f"config/{key}"]
        assert job.config["seed"] == job.seed
    uri = confirm_uri(str(confirmed))
    repeats = read_results(uri)
    assert repeats["trial_id"].nunique() == 4
    assert (repeats.groupby("trial_id")["epoch"].max() == 2).all()  # every epoch: no early stopping
    assert set(read_trial_events(uri)["event"]) == {"completed"}
    assert len(list((confirmed / "confirm" / "weights").glob("*.pt"))) == 4
    assert not list((confirmed / "confirm").glob("*/checkpoint_*"))  # full states go when a trial ends
    # A new seed is a new run: the same configuration's first epoch differs between seeds.
    first = repeats[repeats["epoch"] == 1].assign(job=lambda f: f["config/job"])
    by_job = dict(zip(first["job"], first["train/loss"]))
    for model in ("alexnet", "resnet50"):
        seed_one, seed_two = (next(j.job for j in jobs if (j.model, j.seed) == (model, s)) for s in (1, 2))
        assert by_job[seed_one] != by_job[seed_two]


def test_the_confirm_run_shows_its_progress_as_a_study_does_and_where_its_curves_are(confirmed):
    """One status line and a line per trial that ends, as study.run prints them, not Tune's tables; and the
    TensorBoard command for the confirm run's events, not Tune's temporary session folder."""
    printed = printed_by_confirm(confirmed)
    assert len(re.findall(r"^\[ *\d+:\d\d\] done, 2 epochs ", printed, re.MULTILINE)) == 2 * SEEDS
    assert re.search(r"^\[ *\d+:\d\d\] trials: 0 running, 4 done \(0 stopped early\) \| epochs 8 \| best "
                     + re.escape(METRIC), printed, re.MULTILINE), printed
    assert "Current best trial" not in printed and "params" not in printed and "/tmp/ray" not in printed, printed
    assert f"tensorboard: tensorboard --logdir {confirmed / 'confirm'}\n" in printed
    for job in read_jobs(str(confirmed)):
        assert re.search(rf"^\[ *\d+:\d\d\] done, 2 epochs .* \w+ {re.escape(job.model)}_\w+_lr[^ ]+_bs\d+ seed "
                         rf"{job.seed}, repeats {job.confirms}$", printed, re.MULTILINE), printed
    assert f"{DATASET}_" not in printed


def confirm_trial(job: int) -> SimpleNamespace:
    return SimpleNamespace(trial_id=f"c0nf1rm0_0000{job}", config={"job": job}, error_file=None,
                           last_result={"training_iteration": 3}, metric_analysis={METRIC: {"max": 0.5}})


def test_the_status_lines_call_a_confirm_trial_by_its_configuration_seed_and_the_trial_it_repeats():
    """A confirm trial's config holds only its job: its name (its folder's) is no name for the status lines."""
    config = {"dataset": DATASET, "model": "resnet50", "optimizer": "adam", "lr": 1e-3, "batch_size": 16}
    jobs = [ConfirmJob(job, DATASET, "resnet50", "8001e117", seed, {**config, "seed": seed})
            for job, seed in enumerate((1, 2))]
    console = StudyConsole(len(jobs), 3, METRIC, "max", name_of=JobLabels(jobs))
    assert console.trial_end_line(confirm_trial(1)).endswith(
        f"best {METRIC} 0.500    c0nf1rm0_00001 resnet50_adam_lr1.0e-03_bs16 seed 2, repeats 8001e117")
    two_datasets = [*jobs, ConfirmJob(2, "csv", "resnet50", "7c3e0a12", 1, {**config, "dataset": "csv", "seed": 1})]
    assert JobLabels(two_datasets)(confirm_trial(2)) == "csv_resnet50_adam_lr1.0e-03_bs16 seed 1, repeats 7c3e0a12"


def test_the_analysis_reports_the_seed_spread_next_to_the_search(confirmed):
    analysis = analyze(confirmed, formats=("md", "csv"))
    confirmation = analysis.confirmation
    assert confirmation is not None and confirmation.complete and confirmation.seeds == [1, 2]
    runs = analysis.tables["seed_runs"]
    assert len(runs) == 4 and runs["test/f1_macro"].notna().all()
    summary = analysis.tables["seed_summary"].set_index("model")
    for model in ("alexnet", "resnet50"):
        mine = runs[runs["model"] == model]["test/f1_macro"]
        assert summary.loc[model, "seeds mean"] == pytest.approx(mine.mean())
        assert summary.loc[model, "seeds std"] == pytest.approx(mine.std())
        assert summary.loc[model, "seeds evaluated"] == SEEDS
        search = analysis.best(DATASET, model).evaluation.metrics["test/f1_macro"]
        assert summary.loc[model, "search's run"] == pytest.approx(search)
        results, repeated = read_results(str(confirmed)), analysis.best(DATASET, model).candidate.trial_id
        assert summary.loc[model, "search's epochs"] == results.loc[results["trial_id"] == repeated, "epoch"].max()
        assert summary.loc[model, "seeds' epochs"] == 2  # the study's max epochs
    difference = analysis.tables["seed_differences"].iloc[0]
    by_seed = runs.pivot_table(index="seed", columns="model", values="test/f1_macro")
    assert difference["seeds"] == SEEDS
    assert difference["mean difference"] == pytest.approx((by_seed["alexnet"] - by_seed["resnet50"]).mean())
    text = (confirmed / "report" / "report.md").read_text()
    assert "## Seed repeats (`python -m study.confirm`)" in text and "(2 of 2)" in text
    assert "alexnet − resnet50" in text and "Partial" not in text and "resumed" not in text
    # the seed runs' test figures are a look at the test split too: the ledger names them
    for model in ("alexnet", "resnet50"):
        seeds = runs[runs["model"] == model]
        assert sorted(analysis.look.evaluated[f"{DATASET} / {model} seeds"]) == sorted(
            f"{trial}@{epoch}" for trial, epoch in zip(seeds["trial_id"], seeds["best epoch"]))


def test_seeds_of_a_trial_the_analysis_did_not_choose_are_not_set_beside_its_choice(confirmed, tmp_path):
    """The study went on after study.confirm (or the analysis selects on another --metric): the seeds
    repeat a trial that is no longer the cell's pick, so the pick's test figure is not theirs to sit beside."""
    copy = linked_copy(confirmed, tmp_path / "grid")
    jobs = copy / "confirm" / "jobs.json"
    listed = json.loads(jobs.read_text())
    jobs.unlink()  # a hard link to the shared study's file
    jobs.write_text(json.dumps([{**job, "confirms": "0ther1d0"} if job["model"] == "alexnet" else job
                                for job in listed]))
    analysis = analyze(copy, formats=("md",), resamples=0, importance="none", saliency=0)
    summary = analysis.tables["seed_summary"].set_index("model")
    assert summary.loc["alexnet", "search's trial"] == "0ther1d0" and pd.isna(summary.loc["alexnet", "search's run"])
    resnet = analysis.best(DATASET, "resnet50")
    assert summary.loc["resnet50", "search's run"] == pytest.approx(resnet.evaluation.metrics["test/f1_macro"])
    chosen = analysis.best(DATASET, "alexnet").candidate.trial_id
    text = (copy / "report" / "report.md").read_text()
    assert (f"{DATASET} / alexnet: the seeds repeat trial 0ther1d0, which this analysis did not evaluate (it "
            f"chose {chosen} on {METRIC}") in text


def test_a_partial_confirm_is_reported_as_partial_and_a_finished_one_resumes_to_nothing(confirmed, tmp_path):
    copy = linked_copy(confirmed, tmp_path / "grid")
    uri = confirm_uri(str(copy))
    lost = read_results(uri)["trial_id"].iloc[0]
    for folder in ("results", "trial_events"):  # as if that trial had never reported
        for path in (copy / "confirm" / folder).glob("*.parquet"):
            if _trial_of(path) == lost:
                path.unlink()
    for path in (copy / "confirm" / "weights").glob(f"{lost}.*"):
        path.unlink()
    analysis = analyze(copy, formats=("md",), resamples=0, importance="none")
    assert not analysis.confirmation.complete
    assert sum(run.evaluation is not None for run in analysis.confirmation.runs) == 3
    text = (copy / "report" / "report.md").read_text()
    assert "**Partial:** 3 of 4 seed runs" in text and "--resume" in text

    parts = part_names(confirmed / "confirm" / "results")
    run_confirm(str(confirmed), resume=True)  # every trial had finished: Tune restores and runs nothing
    assert part_names(confirmed / "confirm" / "results") == parts


def test_a_killed_confirm_resumes_without_losing_or_repeating(grid_study, tmp_path):
    """SIGKILL the confirm driver (and its Ray) once one seed run has finished and another has
    reported an epoch, move the study; --resume completes every run, keeps every report, reruns nothing
    finished."""
    from test_run import raw_parts, study_commands, wait_for_a_finished_and_a_running_trial

    study = linked_copy(grid_study, tmp_path / "grid")
    # Longer seed runs than the study's 2 epochs (2 to 7 s each here: too quick to catch one finished and
    # one running), and a full state every epoch, so that the interrupted run continues from one.
    settings = json.loads((study / "study.json").read_text())
    (study / "study.json").unlink()  # a hard link to the shared study's file
    (study / "study.json").write_text(json.dumps({**settings, "max_epochs": 5, "checkpoint_every": 1}))
    uri = confirm_uri(str(study))
    with study_commands(REPO) as commands:
        first = commands.start([str(study), "--seeds", "2", "--num-cpus", "2"], tmp_path / "first.log",
                               module="study.confirm")
        done, _ = wait_for_a_finished_and_a_running_trial(first, uri, tmp_path / "first.log")
        commands.kill(first)
        before = raw_parts(uri)
        # The study moves (and is renamed) before the resume, which reads and writes only where it lies now.
        first_place, study = study, tmp_path / "elsewhere" / "grid-moved"
        study.parent.mkdir()
        shutil.move(first_place, study)
        uri = confirm_uri(str(study))
        second = commands.start([str(study), "--resume", "--num-cpus", "2"], tmp_path / "second.log",
                                module="study.confirm")
        assert second.wait(timeout=600) == 0, (tmp_path / "second.log").read_text()[-3000:]
    assert not first_place.exists(), ("the resumed confirm run wrote where the study lay before it moved: "
                                      f"{sorted(str(p.relative_to(first_place)) for p in first_place.rglob('*'))}")
    after = raw_parts(uri)
    kept = after[after["session"].isin(set(before["session"]))]
    assert len(kept) == len(before)  # every part written before the kill is still there
    resumed = after[~after["session"].isin(set(before["session"]))]
    assert not set(done) & set(resumed["trial_id"])  # finished runs were not rerun
    final = read_results(uri)
    assert final["trial_id"].nunique() == 4 and (final.groupby("trial_id")["epoch"].max() == 5).all()
    assert set(read_trial_events(uri)["event"]) == {"completed"}
    analysis = analyze(study, formats=("md",), resamples=0, importance="none")
    assert analysis.confirmation.complete
    assert "the confirm run was resumed 1 time(s)" in (study / "report" / "report.md").read_text()


def test_a_confirm_run_stopped_in_its_start_up_is_started_by_resume(grid_study, tmp_path, capsys):
    """Stopped once it had saved its jobs but before Tune saved anything (Ctrl-C while Ray started, Ray timing
    out under load), the confirm folder holds jobs.json only: --resume crashed on Tune's missing tuner.pkl, and
    --seeds is refused ('continue it with --resume'). The resume starts the run with the jobs it saved."""
    study = linked_copy(grid_study, tmp_path / "grid")
    settings = json.loads((study / "study.json").read_text())
    (study / "study.json").unlink()  # a hard link to the shared study's file
    (study / "study.json").write_text(json.dumps({**settings, "max_epochs": 1}))  # a quick seed run
    chosen = make_jobs(load_settings(str(study)), read_results(str(study)), seeds=1)
    saved = replace(next(job for job in chosen if job.model == "alexnet"), job=0)
    storage.write_json(jobs_uri(str(study)), [asdict(saved)])  # as the start-up leaves it
    assert main([str(study), "--seeds", "1"]) == 2
    assert "continue it with --resume" in capsys.readouterr().err

    assert main([str(study), "--resume"]) == 0
    uri = confirm_uri(str(study))
    assert read_jobs(str(study)) == [saved]
    results = read_results(uri)
    assert results["config/job"].tolist() == [0] and results["epoch"].tolist() == [1]
    assert read_trial_events(uri)["event"].tolist() == ["completed"]
    assert len(list((study / "confirm" / "weights").glob("*.pt"))) == 1
    assert f"analysis:    python -m study.analyze {study}" in capsys.readouterr().out


def test_a_new_confirm_run_whose_start_up_fails_says_the_resume_command_that_starts_it(grid_study, tmp_path,
                                                                                       capsys, monkeypatch):
    """Refused once jobs.json is saved (a cluster it cannot join, a node without the data): the same command
    again is refused ('already holds a confirm run'), and the error did not give the command that starts it."""
    import study.driver

    refusal = "cannot reach the Ray cluster at ray://10.0.0.5:10001 (--address): Connection refused; check --address"

    def refuse(*args, **kwargs):
        raise CxrError(refusal)

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt  # stands for the run, which the test does not need

    study_dir = linked_copy(grid_study, tmp_path / "grid")
    monkeypatch.setattr(study.driver, "connect", refuse)
    assert main([str(study_dir), "--seeds", "1"]) == 2
    err = capsys.readouterr().err
    assert err.endswith(f"error: {refusal}\nthe confirm run's jobs are saved in {jobs_uri(str(study_dir))}: once the "
                        f"cause is fixed, start it with\n  python -m study.confirm {study_dir} --resume\n"), err

    monkeypatch.setattr(study.driver, "connect", interrupt)
    assert main([str(study_dir), "--resume"]) == 130  # the printed command goes past the start-up it failed in
    err = capsys.readouterr().err
    assert "already holds a confirm run" not in err
    assert err.endswith(f"continue the confirm run with\n  python -m study.confirm {study_dir} --resume\n"), err


def _trial_of(path: Path) -> str:
    import pyarrow.parquet as pq

    return pq.read_table(path).to_pylist()[0]["trial_id"]


def test_bad_input(grid_study, confirmed, tmp_path, capsys):
    for seeds in ("0", "-2"):
        assert main([str(grid_study), "--seeds", seeds]) == 2
        assert f"--seeds {seeds}: give how many new seeds" in capsys.readouterr().err
    assert main([str(grid_study), "--num-cpus", "0"]) == 2
    assert "--num-cpus 0: the local Ray instance needs at least 1 CPU" in capsys.readouterr().err
    assert storage.kind(confirm_uri(str(grid_study))) == "missing"  # nothing written
    assert main([str(confirmed), "--seeds", "2"]) == 2
    assert (f"already holds a confirm run ({len(read_jobs(str(confirmed)))} trials), finished: the analysis reports "
            f"it (python -m study.analyze {confirmed}); delete that folder") in capsys.readouterr().err
    assert main([str(grid_study), "--resume"]) == 2
    assert "no confirm run to resume" in capsys.readouterr().err
    assert main([str(confirmed), "--resume", "--seeds", "5"]) == 2
    assert "--seeds 5 with --resume: the confirm run continues with the" in capsys.readouterr().err
    moved = tmp_path / "moved-data"
    assert main([str(grid_study), "--data-root", str(moved)]) == 2  # the study's data, looked for where it lies now
    assert f"data root {moved} does not exist" in capsys.readouterr().err
    assert storage.kind(confirm_uri(str(grid_study))) == "missing"
    assert main([str(tmp_path)]) == 2
    assert "not a study directory" in capsys.readouterr().err
    empty = linked_copy(grid_study, tmp_path / "empty")
    shutil.rmtree(empty / "results")
    assert main([str(empty)]) == 2
    assert "nothing to confirm" in capsys.readouterr().err


def test_a_cluster_address_nothing_answers_on_is_refused_before_anything_is_written(grid_study, capsys,
                                                                                     monkeypatch):
    import ray

    from study.local_s3 import free_port

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    port = free_port()
    assert main([str(grid_study), "--address", f"127.0.0.1:{port}"]) == 2
    assert f"cannot reach the Ray cluster at 127.0.0.1:{port}" in capsys.readouterr().err
    assert storage.kind(confirm_uri(str(grid_study))) == "missing"


def test_a_second_ctrl_c_says_whether_there_is_a_confirm_run_to_resume(grid_study, confirmed, capsys, monkeypatch):
    """A second Ctrl-C ends Tune's run with KeyboardInterrupt: the command says what to do and exits 130."""
    import study.confirm

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(study.confirm, "run_confirm", interrupted)
    assert main([str(confirmed), "--resume"]) == 130
    assert capsys.readouterr().err.endswith(
        f"interrupted; continue the confirm run with\n  python -m study.confirm {confirmed} --resume\n")
    assert main([str(grid_study)]) == 130  # no confirm run was written yet
    assert capsys.readouterr().err.endswith("interrupted before the confirm run started: nothing to continue\n")


def test_a_confirm_run_whose_seed_runs_errored_says_that_its_resume_runs_them_again(grid_study, tmp_path, capsys,
                                                                                      monkeypatch):
    """It exited 0 with no word of them; Tune's restore (resume_errored) runs errored trials again."""
    import study.confirm

    folder = linked_copy(grid_study, tmp_path / "grid")
    events = ResultsTable(confirm_uri(str(folder)))
    completed = str(tmp_path / "staged" / "c0nf1rm0_00000")  # where Tune staged its folder: none left there
    events.on_trial_complete(1, [], SimpleNamespace(trial_id="c0nf1rm0_00000", local_path=completed, path=completed))
    events.on_trial_error(2, [], SimpleNamespace(trial_id="c0nf1rm0_00001", error_file="/tmp/ray/error.txt"))
    monkeypatch.setattr(study.confirm, "run_confirm", lambda *args, **kwargs: [])  # Tune's grid: none unfinished
    assert main([str(folder), "--seeds", "1"]) == 0
    assert ("1 trial errored (its traceback: error.txt in its trial folder); once the cause is fixed, the resume runs "
            f"it again, from its last full state:\n  python -m study.confirm {folder} --resume\n"
            ) in capsys.readouterr().err  # where a user whose stdout goes to a file still sees it


def leave_unfinished(study: Path, how: str) -> str:
    """Make the (linked copy of the) finished study look as `how` leaves it; returns a trial's id it names."""
    import ray.cloudpickle as cloudpickle

    state = max(study.glob("experiment_state-*.json"))
    trials = json.loads(state.read_text())
    trial = json.loads(trials["trial_data"][0][0])
    if how == "errored":
        ResultsTable(str(study)).on_trial_error(1, [], SimpleNamespace(trial_id=trial["trial_id"], error_file=None))
    elif how == "interrupted":  # Tune's newest snapshot: a trial was running (new files: the copy is hard-linked)
        trials["trial_data"][0][0] = json.dumps({**trial, "status": "PENDING"})
        (study / "experiment_state-2099-01-01_00-00-00.json").write_text(json.dumps(trials))
    else:  # trials not started: the search generator had made fewer than --num-samples
        generator = cloudpickle.loads(max(study.glob("search_gen_state-*.json")).read_bytes())
        (study / "search_gen_state-2099-01-01_00-00-00.json").write_bytes(
            cloudpickle.dumps({**generator, "counter": generator["total_samples"] - 2}))
        return "2 trials not started"
    return trial["trial_id"]


@pytest.mark.parametrize("how", ["errored", "interrupted", "not started"])
def test_a_study_whose_search_is_unfinished_is_confirmed_only_when_asked(grid_study, tmp_path, capsys, monkeypatch,
                                                                          how):
    """A confirm of an unfinished study repeats its best configuration so far, which the resumed study may not
    choose (and a confirm run, once started, is the study's one): it is refused unless asked for."""
    import study.confirm

    folder = linked_copy(grid_study, tmp_path / "grid")
    named = leave_unfinished(folder, how)
    assert main([str(folder), "--seeds", "1"]) == 2
    err = capsys.readouterr().err
    assert named in err and f"python -m study.run --resume {folder}" in err and "--allow-unfinished" in err, err
    assert storage.kind(confirm_uri(str(folder))) == "missing"

    def past_the_check(*args, **kwargs):
        raise CxrError("past the check")

    monkeypatch.setattr(study.confirm, "build_tuner", past_the_check)
    assert main([str(folder), "--seeds", "1", "--allow-unfinished"]) == 2
    assert "past the check" in capsys.readouterr().err


def test_a_confirm_run_of_an_unfinished_study_prints_an_analysis_that_runs_as_printed(grid_study, tmp_path, capsys,
                                                                                     monkeypatch):
    """It printed `python -m study.analyze STUDY`, which study.analyze refuses for an unfinished search."""
    import shlex

    import study.confirm
    from study.analyze import build_parser as analyze_parser

    folder = linked_copy(grid_study, tmp_path / "grid")
    leave_unfinished(folder, "interrupted")
    monkeypatch.setattr(study.confirm, "run_confirm", lambda *args, **kwargs: [])  # a run that ended, every seed done
    assert main([str(folder), "--seeds", "1", "--allow-unfinished"]) == 0
    out = capsys.readouterr().out
    assert f"analysis of the best trials so far (the search is unfinished):\n  python -m study.analyze {folder} " \
           "--allow-unfinished" in out, out
    command = out.split("the search is unfinished):\n  ")[1].splitlines()[0]
    assert analyze_parser().parse_args(shlex.split(command)[3:]).allow_unfinished


def search_results(models: dict[str, list[tuple[str, float, int]]]) -> pd.DataFrame:
    """A study's results: model -> its trials' (trial id, val/f1_macro, diverged) in their first epoch."""
    rows = [{"trial_id": trial_id, "trial_name": trial_id, "training_iteration": 1, "epoch": 1,
             "config/dataset": DATASET, "config/model": model, "config/lr": 1e-3, METRIC: value, "diverged": diverged}
            for model, trials in models.items() for trial_id, value, diverged in trials]
    return pd.DataFrame(rows)


SEARCH = SimpleNamespace(metric=METRIC, mode="max", study_uri="/studies/s", data_roots={DATASET: "/data"}, seed=0,
                         tie_break="val/loss")


def test_a_cell_whose_trials_all_diverged_is_not_confirmed(caplog):
    """Its diverged configuration was retrained with new seeds, as if the placeholder 0.0 were its best."""
    results = search_results({"alexnet": [("a1", 0.0, 1), ("a2", 0.0, 1)], "vgg11": [("v1", 0.3, 0)]})
    with caplog.at_level("WARNING", logger="study.confirm"):
        jobs = make_jobs(SEARCH, results, seeds=2)
    assert [(job.model, job.confirms) for job in jobs] == [("vgg11", "v1"), ("vgg11", "v1")]
    assert (f"{DATASET} / alexnet: all 2 trials diverged (NaN loss) at epoch 1, before measuring {METRIC}: no best; "
            "not confirmed") in caplog.text
    with pytest.raises(CxrError, match=f"every trial diverged .* before measuring {METRIC}; nothing to confirm"):
        make_jobs(SEARCH, search_results({"alexnet": [("a1", 0.0, 1)]}), seeds=2)


def test_of_tied_trials_the_one_better_on_the_tie_break_is_confirmed():
    results = search_results({"alexnet": [("0aaa", 0.279, 0), ("ffff", 0.279, 0)]}).assign(**{"val/loss": [1.3, 1.05]})
    assert {job.confirms for job in make_jobs(SEARCH, results, seeds=2)} == {"ffff"}


@pytest.mark.parametrize("saved, override, refused", [
    ({"cpus_per_trial": 4096.0}, ["--cpus-per-trial", "1"],
     r"--cpus-per-trial 4096 \(the study's, from its study.json; --cpus-per-trial overrides it\) exceeds the \d+ "
     r"CPU cores of this machine"),
    pytest.param({"gpus_per_trial": 0.25}, ["--gpus-per-trial", "0"],
                 r"--gpus-per-trial 0.25 \(the study's, from its study.json; --gpus-per-trial overrides it\) asked "
                 r"for, but this machine has no CUDA GPU: pass --gpus-per-trial 0 to run on CPU",
                 marks=pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has a GPU")),
], ids=["fewer CPUs", "no GPU"])
def test_a_study_made_on_a_larger_machine_is_confirmed_here_with_the_resources_typed(grid_study, tmp_path, capsys,
                                                                                    monkeypatch, saved, override,
                                                                                    refused):
    """The study's trials took what this machine cannot give: the confirm run says which flag overrides it,
    and takes that flag (for this run only)."""
    import study.driver

    copy = linked_copy(grid_study, tmp_path / "grid")
    settings = json.loads((copy / "study.json").read_text())
    (copy / "study.json").unlink()  # a hard link to the session's study
    (copy / "study.json").write_text(json.dumps({**settings, **saved}))
    assert main([str(copy), "--seeds", "1"]) == 2
    assert re.search(refused, capsys.readouterr().err)

    def past_the_resources(settings, resume):
        raise CxrError(f"past the resources: {settings.cpus_per_trial:g} CPUs, {settings.gpus_per_trial:g} GPUs")

    monkeypatch.setattr(study.driver, "prepare_splits", past_the_resources)
    assert main([str(copy), "--seeds", "1", *override]) == 2
    expected = {**settings, **saved, override[0][2:].replace("-", "_"): float(override[1])}
    assert (f"past the resources: {expected['cpus_per_trial']:g} CPUs, {expected['gpus_per_trial']:g} GPUs"
            in capsys.readouterr().err)
    assert json.loads((copy / "study.json").read_text()) == {**settings, **saved}  # the study's own, kept


def test_a_confirm_resume_is_refused_while_another_driver_runs_the_confirm_run(confirmed, tmp_path, capsys):
    """A second `--resume` typed while the confirm run still trains would run its trials twice."""
    import subprocess
    import sys

    from study.lock import LOCK_FILE, process_start

    copy = linked_copy(confirmed, tmp_path / "grid")
    running = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])  # stands for the first driver
    try:
        (copy / "confirm" / LOCK_FILE).write_text(json.dumps({"host": os.uname().nodename, "pid": running.pid,
                                                              "start": process_start(running.pid)}))
        assert main([str(copy), "--resume"]) == 2
        err = capsys.readouterr().err
        assert f"is being run by another driver (pid {running.pid} on this host" in err
        assert f"python -m study.confirm {copy} --resume" in err
    finally:
        running.kill()
        running.wait()


@pytest.mark.parametrize("other", ["holds the lock", "wrote its jobs as this one prepared"])
def test_a_new_confirm_run_started_beside_another_writes_nothing(grid_study, tmp_path, capsys, monkeypatch, other):
    """Two `--seeds` typed at once: the second wrote its jobs.json over the first's, which the first's trials and
    the analysis read. It is refused without writing, and told to let the other run."""
    import subprocess
    import sys

    from study.lock import LOCK_FILE, process_start

    copy = linked_copy(grid_study, tmp_path / "grid")
    theirs = [asdict(job) for job in make_jobs(load_settings(str(copy)), read_results(str(copy)), 2)]  # 2 seeds
    running = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])  # stands for the other driver
    try:
        if other == "holds the lock":
            (copy / "confirm").mkdir()
            (copy / "confirm" / LOCK_FILE).write_text(json.dumps({"host": os.uname().nodename, "pid": running.pid,
                                                                  "start": process_start(running.pid)}))
        else:
            import study.driver

            real_prepare_splits = study.driver.prepare_splits  # confirm imports it from the driver when it runs

            def other_driver_writes_first(*args, **kwargs):
                storage.write_json(jobs_uri(str(copy)), theirs)
                return real_prepare_splits(*args, **kwargs)

            monkeypatch.setattr(study.driver, "prepare_splits", other_driver_writes_first)
        assert main([str(copy), "--seeds", "1"]) == 2
    finally:
        running.kill()
        running.wait()
    err = capsys.readouterr().err
    assert f"another driver just started a confirm run at {copy / 'confirm'}" in err, err
    assert err.rstrip().endswith(f"this one wrote nothing there: let that one run (if it stops, continue it with "
                                 f"python -m study.confirm {copy} --resume)"), err
    if other == "holds the lock":
        assert sorted(path.name for path in (copy / "confirm").iterdir()) == [LOCK_FILE]
    else:
        assert json.loads(Path(jobs_uri(str(copy))).read_text()) == theirs


def test_a_confirm_resume_deletes_the_full_state_and_weights_of_a_seed_run_tune_forgot(confirmed, tmp_path, caplog):
    """A seed run that started after the confirm run's last snapshot (the driver killed before the next one) is
    not in what its resume restores: its full state and weights would stay for good, beside the seed runs'."""
    import logging

    copy = tmp_path / "grid"
    shutil.copytree(confirmed, copy, ignore=shutil.ignore_patterns("report"))
    run = copy / "confirm"
    lost = run / "0123abcd_covid-chestxray-3class_alexnet_adam_lr1.0e-03_bs16_seed1"
    (lost / "checkpoint_000001").mkdir(parents=True)
    (lost / "checkpoint_000001" / "state.pt").write_bytes(b"x" * 2_000_000)
    kept = sorted(p.name for p in (run / "weights").iterdir())
    (run / "weights" / "0123abcd.pt").write_bytes(b"y" * 1000)
    with caplog.at_level(logging.INFO, logger="study.checkpoints"):
        assert main([str(copy), "--resume"]) == 0
    assert sorted(p.name for p in (run / "weights").iterdir()) == kept
    assert not (lost / "checkpoint_000001").exists()
    assert any("trial 0123abcd started after Tune's last snapshot" in r.getMessage() for r in caplog.records)
