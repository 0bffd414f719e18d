"""study.bench.cli: the benchmark runs at its smallest size and gives every figure; its presets and flags
give study commands that study.run accepts, and bad flags are refused.

No timing thresholds here: the figures depend on the machine (and on what else runs on it); the
test only checks that each one is there and finite.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import torch

from cxrnets.errors import CxrError
from study import run
from study.bench import cli
from study.bench import settings as bench_settings
from study.bench import storage as bench_storage

SMOKE_FIGURES = [
    "data/decode_images_per_second@16", "data/cache_images_per_second@16", "data/cache_vs_decode@16",
    "data/model_train_images_per_second@16/resnet50", "data/cache_vs_fastest_model@16",
    "trainable/bare_images_per_second/resnet50", "trainable/trainable_images_per_second/resnet50",
    "trainable/ratio/resnet50", "trainable/bytes_per_epoch/resnet50",
    "orchestration/first_epoch_seconds", "orchestration/study_wall_seconds", "orchestration/trial_seconds_sum",
    "orchestration/overhead",
    "search/grid_epochs", "search/asha_epochs", "search/epochs_ratio", "search/grid_best", "search/asha_best",
    "search/best_gap", "search/best_ratio", "search/optuna_epochs", "search/optuna_best", "search/epochs_vs_optuna",
    "search/best_gap_vs_optuna", "search/wall_vs_optuna", "search/parallel_trials_at_once", "search/parallel_epochs",
    "search/parallel_best",
    "search/parallel_wall_vs_optuna", "search/replay_stop_epochs", "search/replay_promoting_epochs",
    "search/replay_promoting_epochs_ratio", "search/replay_promoting_best_gap",
    "storage/study_wall_seconds", "storage/written_bytes", "storage/written_weights_bytes",
    "storage/written_weights_bytes_seen",
    "storage/written_checkpoints_bytes", "storage/peak_bytes", "storage/demo_bytes_left",
    *(f"storage/bytes_left_{kind}" for kind in bench_storage.STORAGE_KINDS),
    "storage/local_analysis_seconds", "storage/local_analysis_downloaded_bytes",
    "storage/s3_study_wall_seconds", "storage/s3_bytes_left", "storage/s3_analysis_seconds",
    "storage/s3_analysis_vs_local", "storage/s3_analysis_downloaded_bytes", "storage/s3_downloaded_files",
    "storage/s3_max_files", "storage/s3_downloaded_vs_evaluated_bytes",
]


def test_smoke_run_gives_every_figure(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out, workdir = tmp_path / "bench.json", tmp_path / "work"
    code = cli.main(["--smoke", "--out", str(out), "--workdir", str(workdir)])
    printed = capsys.readouterr().out
    report = json.loads(out.read_text())
    assert report["failures"] == {} and code == 0
    figures = report["figures"]
    for name in SMOKE_FIGURES:
        assert name in figures, name
        assert math.isfinite(figures[name]), (name, figures[name])
        assert name.split("/", 1)[1] in printed  # the table shows it
    # every goal of the issue is checked, against every figure it applies to
    checked = {goal["figure"] for goal in report["goals"]}
    assert checked == {"data/cache_vs_decode@16", "data/cache_vs_fastest_model@16", "trainable/ratio/resnet50",
                       "orchestration/overhead", "orchestration/first_epoch_seconds", "search/best_gap",
                       "search/epochs_ratio", "search/best_gap_vs_optuna", "search/epochs_vs_optuna",
                       "search/parallel_wall_vs_optuna", "storage/demo_bytes_left", "storage/s3_analysis_vs_local"}
    assert all(goal["met"] is None for goal in report["goals"])  # smoke sizes: figures, no verdicts
    assert "goals not judged at the smoke sizes" in printed and "| NO" not in printed
    # the grid ran every configuration to the last epoch; ASHA ran the same space
    search = report["details"]["search"]
    assert search["grid"]["trials"] == search["configs"] == 2
    assert search["grid"]["trials_at_max_epochs"] == 2 and search["grid"]["distinct_configs"] == 2
    assert figures["search/grid_epochs"] == 4 and 2 <= figures["search/asha_epochs"] <= 4
    assert search["optuna"]["trials"] == 2 and 2 <= figures["search/optuna_epochs"] <= 4
    assert figures["search/epochs_vs_optuna"] == figures["search/asha_epochs"] / figures["search/optuna_epochs"]
    assert search["asha_parallel"]["trials"] == 2 and 2 <= figures["search/parallel_epochs"] <= 4
    assert figures["search/parallel_wall_vs_optuna"] == \
        search["asha_parallel"]["wall_seconds"] / search["optuna"]["wall_seconds"]
    # the replay of the grid's curves through the study's own ASHA (promoting, the default) spends what the
    # study spent
    assert search["asha"]["asha"] == "promoting" and search["replay"]["study_form"] == "promoting"
    assert figures["search/replay_promoting_epochs"] == figures["search/asha_epochs"]
    # the trainable's epoch is broken down into what limits it; its one epoch is its first best: weights
    # only (the last epoch writes no full state), and the full state's cost measured apart
    parts = report["details"]["trainable"]["models"]["resnet50"]
    assert set(parts["seconds"]) == {"train", "val", "weights", "state_save", "state_persist"}
    assert parts["weights_writes"] == 1 and parts["full_states"] == 0 and parts["full_state_measured_apart"]
    assert 50e6 < parts["weights_bytes"] < parts["full_state_bytes"]  # ResNet50: 94 MB of weights, 3x with Adam's
    assert figures["trainable/bytes_per_epoch/resnet50"] == parts["weights_bytes"]  # the weights and their sidecar
    # storage: the study's one trial wrote a full state after epoch 1 (--checkpoint-every 1) that its end
    # deleted, and its weights, which stay (--keep 1); the analysis fetched only the weights it evaluated
    storage = report["details"]["storage"]
    assert storage["local"]["written"]["checkpoints"] > 0 and storage["local"]["left"]["checkpoints"] == 0
    assert figures["storage/written_bytes"] >= figures["storage/demo_bytes_left"] > 0
    assert figures["storage/written_weights_bytes"] >= storage["local"]["left"]["weights"] - 10_000  # - sidecars
    assert figures["storage/bytes_left_weights"] > 50e6 and figures["storage/s3_bytes_left"] > 50e6
    assert figures["storage/local_analysis_downloaded_bytes"] == 0
    assert 1 <= figures["storage/s3_downloaded_files"] <= figures["storage/s3_max_files"] == 1
    assert figures["storage/s3_downloaded_vs_evaluated_bytes"] == 1.0
    assert report["machine"]["cores"] >= 1 and report["machine"]["device"] == "cpu"
    assert set(report["part_seconds"]) == set(bench_settings.PARTS)
    assert not workdir.exists()  # checkpoints and studies are gone unless --keep


@pytest.mark.parametrize("preset", ["--smoke", "--quick", "--full"])
def test_every_study_command_of_every_preset_is_valid(preset: str, tmp_path: Path) -> None:
    """What each part would pass to python -m study.run, checked by study.run's own validation (no Ray,
    nothing runs): a change to a shipped space, a preset or study.run cannot break a documented command
    unnoticed (--quick once stopped with "--grace-period 2 exceeds --max-epochs 1")."""
    settings, _ = cli.settings_from_args(cli.build_parser().parse_args([] if preset == "--full" else [preset]))
    planned = cli.planned_studies(settings, tmp_path)
    assert set(planned) == {"orchestration", "search-grid", "search-asha", "search-asha-parallel", "storage-local",
                            "storage-s3"}
    for name, argv in planned.items():
        study = run.settings_from_args(run.build_parser().parse_args(argv))  # raises CxrError if refused
        assert study.name == name
    # the sizes of the preset reach the studies
    orchestration = run.settings_from_args(run.build_parser().parse_args(planned["orchestration"]))
    assert orchestration.num_samples == (settings.study_samples or 10)
    assert orchestration.grace_period <= orchestration.max_epochs == (settings.study_epochs or 4)
    assert run.settings_from_args(run.build_parser().parse_args(planned["storage-s3"])).storage.startswith("s3://")


def test_presets_and_flags() -> None:
    parser = cli.build_parser()
    quick, preset = cli.settings_from_args(parser.parse_args(["--quick", "--models", "alexnet", "--repeats", "2"]))
    assert preset == "quick" and quick.models == ("alexnet",) and quick.repeats == 2
    assert quick.search_max_epochs == bench_settings.PRESETS["quick"]["search_max_epochs"]
    full, preset = cli.settings_from_args(parser.parse_args(["--parts", "data,search", "--no-amp", "--compile"]))
    assert preset == "full" and full.parts == ("data", "search") and not full.amp and full.compile
    with pytest.raises(SystemExit):
        parser.parse_args(["--quick", "--smoke"])
    # A size where only some of the data models train is measured with those.
    some, _ = cli.settings_from_args(parser.parse_args(["--parts", "data", "--image-sizes", "32",
                                                        "--data-models", "alexnet,vgg11"]))
    assert some.image_sizes == (32,)


@pytest.mark.parametrize("argv, message", [
    (["--parts", "data,gpu"], "--parts"),
    (["--models", "lenet"], "--models"),
    (["--models", "alexnet", "--trainable-image-size", "32"], "too small for alexnet"),
    (["--smoke", "--parts", "data", "--data-models", "alexnet"],
     "--image-sizes 16: none of --data-models alexnet trains at 16 px \\(alexnet needs 63 px\\)"),
    (["--quick", "--parts", "data", "--image-sizes", "64,16", "--data-models", "alexnet,vgg11"],
     "--image-sizes 16: none of --data-models alexnet,vgg11"),
    (["--search-max-epochs", "2", "--search-grace-period", "3"], "grace"),
    (["--seed", "-5"], "--seed -5: a seed is a whole number"),
    (["--dataset", "nosuch"], "--dataset nosuch: choose one of"),
    (["--dataset", "covid-radiography"], "--dataset covid-radiography needs --data-root"),
])
def test_bad_flags_are_refused(argv: list[str], message: str) -> None:
    with pytest.raises(CxrError, match=message):
        cli.settings_from_args(cli.build_parser().parse_args(argv))
    assert cli.main(argv + ["--out", "/nonexistent/never-written.json"]) == 2


def test_an_out_file_that_cannot_be_written_is_refused_before_measuring(tmp_path: Path, capsys) -> None:
    (tmp_path / "a-file").write_text("")
    assert cli.main(["--smoke", "--parts", "data", "--out", str(tmp_path / "a-file" / "bench.json")]) == 2
    assert f"error: --out {tmp_path / 'a-file'}: cannot write there" in capsys.readouterr().err
    assert cli.main(["--smoke", "--parts", "data", "--out", str(tmp_path)]) == 2
    assert f"error: --out {tmp_path} is a folder: give the JSON file's path" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")
@pytest.mark.parametrize("flags, message", [
    (["--device", "cuda"], "device 'cuda' asked for, but this machine has no CUDA GPU; use --device cpu or auto"),
    (["--gpus-per-trial", "0.5"], "--gpus-per-trial 0.5 asked for, but this machine has no CUDA GPU"),
])
def test_a_gpu_asked_for_where_there_is_none_is_refused_before_measuring(flags, message, tmp_path: Path,
                                                                        capsys) -> None:
    assert cli.main(["--smoke", "--out", str(tmp_path / "bench.json"), "--workdir", str(tmp_path / "work"), *flags]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {message}") and err.count("\n") == 1, err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("gpus, device, given, message", [
    (0.5, "cpu", True, "--gpus-per-trial 0.5 with --device cpu: the studies' trials would train on the GPU"),
    (0.0, "cuda", True, "--gpus-per-trial 0 with device cuda: the studies' trials would train on the CPU"),
    (0.0, "cuda:1", True, "--gpus-per-trial 0 with device cuda:1"),
])
def test_studies_and_bare_loops_on_different_devices_are_refused(gpus, device, given, message) -> None:
    with pytest.raises(CxrError, match=re.escape(message)):
        cli.studies_gpus_per_trial(gpus, device, "NVIDIA H100", given=given)


def test_the_studies_take_one_gpu_per_trial_on_a_gpu_device_unless_told_otherwise() -> None:
    assert cli.studies_gpus_per_trial(0.0, "cuda", "NVIDIA H100", given=False) == 1.0
    assert cli.studies_gpus_per_trial(0.5, "cuda", "NVIDIA H100", given=True) == 0.5
    assert cli.studies_gpus_per_trial(0.0, "cpu", "NVIDIA H100", given=False) == 0.0
    assert cli.studies_gpus_per_trial(0.0, "cpu", None, given=False) == 0.0


def test_the_report_is_written_after_every_part_and_ctrl_c_keeps_what_was_measured(tmp_path: Path, capsys,
                                                                                   monkeypatch) -> None:
    out, workdir = tmp_path / "bench.json", tmp_path / "work"

    def data_part(bench) -> None:
        bench.figures["data/cache_vs_decode@16"] = 12.0

    def trainable_part(bench) -> None:
        written = json.loads(out.read_text())  # on disk before the next part starts: a killed bench keeps it
        assert written["figures"] == {"data/cache_vs_decode@16": 12.0}
        assert written["parts_not_run"] == ["trainable", "orchestration"]
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "bench_data", data_part)
    monkeypatch.setattr(cli, "bench_trainable", trainable_part)
    monkeypatch.setattr(cli, "bench_orchestration", lambda bench: pytest.fail("a part ran after Ctrl-C"))
    code = cli.main(["--smoke", "--parts", "data,trainable,orchestration", "--out", str(out), "--workdir",
                     str(workdir)])
    assert code == 130
    report = json.loads(out.read_text())
    assert report["figures"] == {"data/cache_vs_decode@16": 12.0}
    assert report["failures"] == {"trainable": "interrupted (Ctrl-C or SIGTERM)"}
    assert report["parts_not_run"] == ["orchestration"]
    assert [goal["figure"] for goal in report["goals"]] == ["data/cache_vs_decode@16"]
    assert "interrupted: parts not run: orchestration" in capsys.readouterr().err
    assert not workdir.exists()


def test_a_study_past_its_time_limit_is_stopped_not_left_running(tmp_path: Path) -> None:
    """The same stop as on Ctrl-C while a study subprocess runs: no study outlives the bench."""
    from dataclasses import replace

    from study.bench.common import Bench, run_study_command

    settings = replace(bench_settings.Settings(), timeout_s=0.5)
    with pytest.raises(RuntimeError, match="ran past 0 s"):
        run_study_command(Bench(settings, tmp_path), "late", ["--space", "demo"])
    assert processes_naming(str(tmp_path)) == []


def processes_naming(text: str) -> list[str]:
    """The command lines of this machine's processes that contain `text` (Linux: /proc)."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            cmdline = (proc / "cmdline").read_bytes().decode(errors="replace")
        except OSError:  # ended meanwhile
            continue
        if text in cmdline:
            found.append(cmdline.replace("\0", " "))
    return found


def _no_parts_run(monkeypatch) -> None:
    for runner in ("bench_data", "bench_trainable", "bench_orchestration", "bench_search", "bench_storage"):
        monkeypatch.setattr(cli, runner, lambda bench: pytest.fail("a part ran"))


def test_a_workdir_that_holds_files_is_refused_and_left_as_it_was(tmp_path: Path, capsys, monkeypatch) -> None:
    """The bench deletes its work directory at the end: a folder with the user's files in it is not one."""
    _no_parts_run(monkeypatch)
    workdir = tmp_path / "mywork"
    workdir.mkdir()
    (workdir / "precious.txt").write_text("notes")
    code = cli.main(["--smoke", "--parts", "data", "--workdir", str(workdir), "--out", str(tmp_path / "bench.json")])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --workdir {workdir} holds files already (precious.txt)") and err.count("\n") == 1
    assert (workdir / "precious.txt").read_text() == "notes" and not (tmp_path / "bench.json").exists()


def test_an_empty_workdir_is_emptied_at_the_end_not_deleted(tmp_path: Path, monkeypatch) -> None:
    workdir = tmp_path / "mywork"
    workdir.mkdir()

    def data_part(bench) -> None:
        (bench.workdir / "cache").mkdir()
        (bench.workdir / "cache" / "images.npy").write_bytes(b"x")

    monkeypatch.setattr(cli, "bench_data", data_part)
    assert cli.main(["--smoke", "--parts", "data", "--workdir", str(workdir), "--out", str(tmp_path / "b.json")]) == 0
    assert workdir.is_dir() and list(workdir.iterdir()) == []


@pytest.mark.parametrize("where", ["a-file/work", "/proc/no-such-folder/work"])
def test_a_workdir_that_cannot_be_made_is_a_clear_error(where: str, tmp_path: Path, capsys, monkeypatch) -> None:
    _no_parts_run(monkeypatch)
    (tmp_path / "a-file").write_text("")
    workdir = tmp_path / where
    assert cli.main(["--smoke", "--parts", "data", "--workdir", str(workdir), "--out", str(tmp_path / "b.json")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --workdir {workdir}: cannot make that folder") and err.count("\n") == 1, err


@pytest.mark.parametrize("flags, dataset", [
    ([], "covid-chestxray-3class"),
    (["--dataset", "covid-radiography"], "covid-radiography"),
])
def test_every_study_trains_on_the_dataset_and_data_root_of_the_other_parts(flags, dataset, tmp_path: Path) -> None:
    """--dataset and --data-root reach every study (orchestration, search, storage) as they reach the data and
    trainable parts and plain Optuna: the search part compares plain Optuna with the grid and ASHA on one dataset."""
    from study.bench.common import data_root

    settings, _ = cli.settings_from_args(cli.build_parser().parse_args(
        ["--quick", *flags, "--data-root", str(tmp_path / "data")]))
    assert (settings.dataset, data_root(settings)) == (dataset, str(tmp_path / "data"))  # plain Optuna's
    for name, argv in cli.planned_studies(settings, tmp_path / "work").items():
        study = run.settings_from_args(run.build_parser().parse_args(argv))
        assert study.data_roots == {dataset: str(tmp_path / "data")}, name


@pytest.mark.parametrize("flags, message", [
    (["--study-space", "nosuch"], "--study-space nosuch: search space 'nosuch' not found"),
    (["--search-lrs", "0.001,0.00100001"], "--search-lrs 0.001,0.00100001: 0.001 is given twice at the 2 "
                                           "significant digits of the search space"),
    (["--search-reduction-factor", "1"], "--search-reduction-factor 1: ASHA's reduction factor must be at least 2"),
    (["--search-lrs", "-0.1"], "--search-lrs -0.1: learning rates must be above 0"),
    (["--search-lrs", ","], "--search-lrs: give at least one learning rate"),
    (["--batch-size", "1"], "--batch-size 1: must be at least 2"),
    (["--gpus-per-trial", "-1"], "--gpus-per-trial -1: must be 0 or more"),
    (["--decode-images", "-5"], "--decode-images must be at least 1"),
])
def test_flags_a_part_would_refuse_are_refused_before_any_part_runs(flags, message, tmp_path: Path, capsys,
                                                                   monkeypatch) -> None:
    """Not after the parts before it, up to an hour later: each study's command line goes through study.run's
    own validation, and the bench's own numbers through its checks, before the first part."""
    _no_parts_run(monkeypatch)
    code = cli.main(["--smoke", *flags, "--out", str(tmp_path / "bench.json"), "--workdir", str(tmp_path / "work")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith(f"error: {message}"), err
    assert list(tmp_path.iterdir()) == []


def test_a_relative_study_space_is_the_file_in_the_users_folder(tmp_path: Path, monkeypatch) -> None:
    """The studies run in the work directory: `--study-space myspace.yaml` still means ./myspace.yaml."""
    from study.space import SPACES_DIR

    here, workdir = tmp_path / "here", tmp_path / "work"
    here.mkdir()
    (here / "myspace.yaml").write_text((SPACES_DIR / "demo.yaml").read_text())
    monkeypatch.chdir(here)
    settings, _ = cli.settings_from_args(cli.build_parser().parse_args(["--quick", "--study-space", "myspace.yaml"]))
    planned = cli.planned_studies(settings, workdir)
    monkeypatch.chdir(workdir)  # where the studies run
    for name in ("orchestration", "storage-local"):
        study = run.settings_from_args(run.build_parser().parse_args(planned[name]))
        assert study.space_source == str(here / "myspace.yaml"), name


def test_a_study_space_that_is_not_there_is_refused_naming_the_flag(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CxrError, match=re.escape("--study-space myspace.yaml: search space 'myspace.yaml' not found")):
        cli.settings_from_args(cli.build_parser().parse_args(["--study-space", "myspace.yaml"]))


def test_the_logs_a_failure_names_are_kept_the_rest_of_the_work_is_deleted(tmp_path: Path, capsys,
                                                                            monkeypatch) -> None:
    out, workdir = tmp_path / "bench.json", tmp_path / "work"

    def failing_study(bench) -> None:
        (bench.workdir / "orchestration.log").write_text("Traceback: the study's own error\n")
        (bench.workdir / "studies" / "orchestration" / "weights").mkdir(parents=True)
        (bench.workdir / "studies" / "orchestration" / "weights" / "best.pt").write_bytes(b"weights")
        raise RuntimeError(f"study orchestration failed (exit 1); the end of {bench.workdir / 'orchestration.log'}")

    monkeypatch.setattr(cli, "bench_orchestration", failing_study)
    assert cli.main(["--smoke", "--parts", "orchestration", "--out", str(out), "--workdir", str(workdir)]) == 1
    report = json.loads(out.read_text())
    named = Path(re.search(r"the end of (\S+)", report["failures"]["orchestration"]).group(1))
    assert named.read_text() == "Traceback: the study's own error\n"
    assert [p.name for p in workdir.iterdir()] == ["orchestration.log"] and report["workdir"] == str(workdir)
    assert f"kept in {workdir}" in capsys.readouterr().err


def test_a_failure_without_logs_leaves_no_work_directory(tmp_path: Path, monkeypatch) -> None:
    workdir = tmp_path / "work"

    def failing_part(bench) -> None:
        (bench.workdir / "cache").mkdir()
        raise RuntimeError("out of memory")

    monkeypatch.setattr(cli, "bench_data", failing_part)
    assert cli.main(["--smoke", "--parts", "data", "--out", str(tmp_path / "b.json"), "--workdir", str(workdir)]) == 1
    assert not workdir.exists() and json.loads((tmp_path / "b.json").read_text())["workdir"] is None


def test_the_gpu_path_switches_are_recorded_under_the_parts_they_reach(tmp_path: Path, monkeypatch) -> None:
    """--no-amp, --no-channels-last and --compile reach the data and trainable parts only; the studies (and plain
    Optuna beside them) train with cxrnets' defaults, and bench.json says so part by part."""
    for runner in ("bench_data", "bench_orchestration", "bench_search"):
        monkeypatch.setattr(cli, runner, lambda bench: None)
    out = tmp_path / "bench.json"
    assert cli.main(["--smoke", "--parts", "data,orchestration,search", "--no-amp", "--compile", "--out", str(out),
                     "--workdir", str(tmp_path / "work")]) == 0
    settings = json.loads(out.read_text())["settings"]
    assert not {"amp", "channels_last", "compile"} & set(settings)
    defaults = {"amp": True, "channels_last": True, "compile": False}
    assert settings["gpu_path_by_part"] == {"data": {"amp": False, "channels_last": True, "compile": True},
                                            "orchestration": defaults, "search": defaults}
