"""`python -m study.run` end to end: bad input, a real study on Ray, divergence, TensorBoard, kill and resume.

The studies train on a tiny class-per-folder dataset (3 classes x 16 images of
40x32 px, built once per module) at 32 or 64 px, so an epoch takes a second or
two on one CPU core; the cost is mostly Ray's and the checkpoints' (ResNet50
with Adam ~270 MB, AlexNet with SGD ~490 MB per epoch). The in-process studies
share the session's Ray instance (`ray_session`, tests/study/conftest.py); the
kill-and-resume test runs the CLI in subprocesses that start their own Ray.
About 3-4.5 minutes on 2 cores shared with other work (less on idle ones).
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import io
import json
import logging
import math
import os
import pickle
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import optuna
import pandas as pd
import pytest
import torch
import yaml
from PIL import Image

from cxrnets.errors import CxrError
from study import storage
from study.asha import PromotingASHA
from study.bench.search import replay_one_at_a_time
from study.checkpoints import read_best_weights
from study.driver import print_summary, run_study
from study.results import ResultsTable, read_results, read_trial_events
from study.tables import best_epochs
from study.run import build_parser, main, settings_from_args
from study.space import load_space, parse_space
from test_tensorboard import hparams_tab

REPO = Path(__file__).resolve().parents[2]
CLASSES = {"covid": 210, "normal": 50, "pneumonia": 130}  # class -> mean brightness: something to learn


# ------------------------------------------------------------------ helpers

def build_tiny_folder(root: Path, per_class: int = 16) -> Path:
    """A `folder` dataset: one sub-folder per class of small noisy grey PNGs (every file distinct)."""
    for k, (name, brightness) in enumerate(CLASSES.items()):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            rng = np.random.default_rng(1000 * k + i)
            pixels = np.clip(brightness + rng.normal(0, 25, (32, 40)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"{name}-{i:02d}.png")
    return root


def write_space(path: Path, search: dict, **top) -> Path:
    path.write_text(yaml.safe_dump({**top, "search": search}, sort_keys=False))
    return path


def study_argv(space: Path, storage: Path, name: str, data: Path, cache: Path, *extra: str) -> list[str]:
    return ["--space", str(space), "--dataset", "folder", "--data-root", str(data), "--storage", str(storage),
            "--name", name, "--cache-dir", str(cache), *extra]


def trial_dirs(study_dir: Path) -> list[Path]:
    """Tune's per-trial folders (the ones holding params.json)."""
    return sorted(p.parent for p in study_dir.glob("*/params.json"))


def result_json(trial_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (trial_dir / "result.json").read_text().splitlines() if line.strip()]


def tensorboard_scalars(trial_dir: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(trial_dir), size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    return events


def hparams_of(events) -> dict:
    """The hyperparameters Tune wrote for TensorBoard's HPARAMS view ({} if none)."""
    from tensorboard.plugins.hparams import plugin_data_pb2

    try:
        content = events.PluginTagToContent("hparams")
    except KeyError:  # no hparams plugin data at all
        return {}
    start = content.get("_hparams_/session_start_info")
    if start is None:
        return {}
    info = plugin_data_pb2.HParamsPluginData.FromString(start).session_start_info
    return {key: (value.string_value or value.number_value or value.bool_value) for key, value in info.hparams.items()}


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    return build_tiny_folder(tmp_path_factory.mktemp("tiny-folder"))


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


# ------------------------------------------------------------------ bad input: one clear error, no trial

UNKNOWN_DIMENSION = {"model": {"choice": ["resnet50"]}, "learning_rate": {"loguniform": [1e-4, 1e-2]}}
IMPOSSIBLE_RANGE = {"model": {"choice": ["resnet50"]}, "lr": {"loguniform": [1e-2, 1e-4]}}
GOOD_SPACE = {"model": {"value": "resnet50"}, "optimizer": {"value": "adam"}, "lr": {"value": 1e-3},
              "batch_size": {"value": 16}}

TOO_MANY_CPUS = str(max(64, 2 * (os.cpu_count() or 1)))
NO_GPU = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")

BAD_INPUT = {
    "unknown dimension": (UNKNOWN_DIMENSION, [], r"search\.learning_rate: unknown dimension 'learning_rate'"),
    "impossible range": (IMPOSSIBLE_RANGE, [], r"search\.lr\.loguniform: low 0\.01 must be below high 0\.0001"),
    "alexnet at 32 px": ({**GOOD_SPACE, "model": {"choice": ["alexnet", "resnet50"]}}, ["--image-size", "32"],
                         re.escape("--image-size: image_size 32 is too small for alexnet (needs at least 63 px); "
                                   "raise it to 63 or more, or drop alexnet")),
    "GPU on a machine without one": pytest.param(GOOD_SPACE, ["--gpus-per-trial", "1"],
                                                 r"--gpus-per-trial 1 .*no CUDA GPU", marks=NO_GPU),
    "fraction of a GPU without one": pytest.param(GOOD_SPACE, ["--gpus-per-trial", "0.25"],
                                                  r"--gpus-per-trial 0\.25 .*no CUDA GPU", marks=NO_GPU),
    "infinite GPUs per trial": (GOOD_SPACE, ["--gpus-per-trial", "inf"],
                                r"--gpus-per-trial inf: must be a finite number of 0 or more"),
    "NaN CPUs per trial": (GOOD_SPACE, ["--cpus-per-trial", "nan"], r"--cpus-per-trial nan: must be a finite number above 0"),
    "a GPU fraction finer than Ray schedules": (GOOD_SPACE, ["--gpus-per-trial", "0.00001"],
                                                r"--gpus-per-trial 1e-05: must be 0 or at least 0\.0001"),
    "a CPU fraction finer than Ray schedules": (GOOD_SPACE, ["--cpus-per-trial", "0.00001"],
                                                r"--cpus-per-trial 1e-05: must be at least 0\.0001"),
    "a cluster address without a port": (GOOD_SPACE, ["--address", "192.0.2.2"],
                                         r"--address 192\.0\.2\.2: give host:port \(the head's GCS port, 6379 by "
                                         r"default\) or ray://host:port"),
    "more CPUs than the machine": (GOOD_SPACE, ["--cpus-per-trial", TOO_MANY_CPUS],
                                   rf"--cpus-per-trial {TOO_MANY_CPUS} exceeds the \d+ CPU cores of this machine"),
    "more CPUs than --num-cpus": (GOOD_SPACE, ["--num-cpus", "1", "--cpus-per-trial", "2"],
                                  r"--cpus-per-trial 2 exceeds the 1 CPU cores"),
    "no CPU for the local Ray instance": (GOOD_SPACE, ["--num-cpus", "0"],
                                          r"--num-cpus 0: the local Ray instance needs at least 1 CPU"),
    "grace period past max epochs": (GOOD_SPACE, ["--max-epochs", "2", "--grace-period", "3"],
                                     r"--grace-period 3 and --max-epochs 2: ASHA's grace period may not exceed a "
                                     r"trial's epochs \(where not given, each comes from the study section of "),
    "zero trials": (GOOD_SPACE, ["--num-samples", "0"], r"--num-samples 0: must be at least 1"),
    "negative seed": (GOOD_SPACE, ["--seed", "-1"], r"--seed -1: a seed is a whole number from 0 to 2147483647"),
    "no patient left to train on": (GOOD_SPACE, ["--val-fraction", "0.5", "--test-fraction", "0.5"],
                                    r"--val-fraction 0\.5 and --test-fraction 0\.5: each must lie between 0 and 1, "
                                    r"and together leave patients to train on"),
    "a negative test fraction": (GOOD_SPACE, ["--test-fraction", "-0.1"], r"--test-fraction -0\.1: each must lie"),
    "a name that is a path": (GOOD_SPACE, ["--name", "../elsewhere"],
                              r"--name '\.\./elsewhere': a study's name is its one folder under --storage"),
    "--image-size beside a space's image_size range": ({**GOOD_SPACE, "image_size": {"int": [64, 128]}}, [],
                                                        r"--image-size conflicts with .*space\.yaml: search\.image_size"),
    "a name a storage URI cannot carry": (GOOD_SPACE, ["--name", "run#2"],
                                          r"--name 'run#2': '#' cannot be part of a storage location's name"),
    "a multi-label metric on single-label data": (
        GOOD_SPACE, ["--metric", "val/subset_accuracy"],
        r"--metric val/subset_accuracy: only multi-label datasets \(covid-chestxray\) report it, and folder is "
        r"single-label"),
    "a multi-label tie-break on single-label data": (GOOD_SPACE, ["--tie-break", "val/f1_micro"],
                                                     r"--tie-break val/f1_micro: only multi-label datasets"),
}


def assert_no_trial(storage: Path) -> None:
    """Nothing of a study started or was left behind: no study folder (so no study.json, Tune state,
    trial folder or results)."""
    left = sorted(p.name for p in storage.glob("*"))
    assert left == [], f"{storage} holds {left} after a refused start"


@pytest.mark.parametrize("search, flags, message", BAD_INPUT.values(), ids=BAD_INPUT.keys())
def test_bad_input_is_one_clear_error_before_any_trial(tmp_path, capsys, tiny_data, cache_dir, search, flags,
                                                       message):
    space = write_space(tmp_path / "space.yaml", search)
    storage = tmp_path / "studies"
    code = main(study_argv(space, storage, "bad", tiny_data, cache_dir, "--image-size", "32", *flags))
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: ")
    assert len(re.findall(message, err)) == 1, err
    assert "Traceback" not in err
    assert_no_trial(storage)


def test_imagenet_weights_that_cannot_be_fetched_stop_the_study_before_any_trial(tmp_path, capsys, tiny_data,
                                                                                 cache_dir, monkeypatch):
    """Every pretrained trial would die on its own traceback: the study says once what to fetch, and where."""
    def no_network(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # an empty cache, whatever this machine holds
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_network)
    space = write_space(tmp_path / "space.yaml", {**GOOD_SPACE, "pretrained": {"choice": [True, False]}})
    code = main(study_argv(space, tmp_path / "studies", "offline", tiny_data, cache_dir, "--image-size", "32"))
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: the ImageNet weights for model 'resnet50' are not available "), err
    assert f"{tmp_path / 'torch'}" in err and err.rstrip().endswith(f"or train resnet50 from scratch only "
                                                                     f"(pretrained: false for it in {space})")
    assert_no_trial(tmp_path / "studies")


def test_a_damaged_imagenet_cache_file_stops_the_study_before_any_trial(tmp_path, capsys, tiny_data, cache_dir,
                                                                        monkeypatch):
    """A cache file that does not load (a truncated copy) would fail every pretrained trial inside Ray: the study
    names the file once, and says to delete or replace it."""
    from cxrnets.models import imagenet_weights_path

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    cached = imagenet_weights_path("resnet50")
    cached.parent.mkdir(parents=True)
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7)}, cached)
    cached.write_bytes(cached.read_bytes()[:200])
    space = write_space(tmp_path / "space.yaml", {**GOOD_SPACE, "pretrained": {"choice": [True, False]}})
    code = main(study_argv(space, tmp_path / "studies", "damaged", tiny_data, cache_dir, "--image-size", "32"))
    err = capsys.readouterr().err
    assert code == 2 and err.startswith(f"error: torchvision's cache file {cached} of the ImageNet weights for model "
                                        "'resnet50' is not a readable state dict (truncated or corrupt: "), err
    assert "delete it to have it downloaded again" in err and err.rstrip().endswith(
        f"or train resnet50 from scratch only (pretrained: false for it in {space})")
    assert_no_trial(tmp_path / "studies")


SPACE_STUDY_MISTAKES = {
    "an unknown ASHA form": ({"asha": "pausing"}, r"study\.asha: 'pausing' is not one of promoting, stopping"),
    "a misspelt key": ({"max_epoch": 3}, r"study: unknown key\(s\) \['max_epoch'\]; a space's study section may "
                                         r"set dataset, image_size, num_samples, max_epochs,"),
    "epochs in words": ({"max_epochs": "three"}, r"study\.max_epochs: a whole number of at least 1, got 'three'"),
    "a fraction of an epoch": ({"max_epochs": 2.5}, r"study\.max_epochs: a whole number of at least 1, got 2\.5"),
    "a reduction factor of 1": ({"reduction_factor": 1}, r"study\.reduction_factor: a whole number of at least 2"),
    "an unknown metric": ({"metric": "val/auc"}, r"study\.metric: 'val/auc' is not one of val/f1_macro, "),
    "a training metric": ({"metric": "train/loss"}, r"study\.metric: 'train/loss' is not one of"),
    "a multi-label metric on single-label data": (
        {"metric": "val/subset_accuracy"},
        r"study\.metric val/subset_accuracy: only multi-label datasets \(covid-chestxray\) report it, and folder is "
        r"single-label"),
}


@pytest.mark.parametrize("section, message", SPACE_STUDY_MISTAKES.values(), ids=SPACE_STUDY_MISTAKES.keys())
def test_a_mistake_in_the_spaces_study_section_names_the_file_and_key(tmp_path, capsys, tiny_data, cache_dir,
                                                                       section, message):
    """The space's study section gives the study's defaults: a mistake there is refused as the option's would
    be (not ignored, not a crash once trials report), naming the file, before any trial."""
    space = write_space(tmp_path / "space.yaml", GOOD_SPACE, study=section)
    code = main(study_argv(space, tmp_path / "studies", "bad", tiny_data, cache_dir, "--image-size", "32"))
    err = capsys.readouterr().err
    assert code == 2 and err.startswith(f"error: {space}: study") and re.search(message, err), err
    assert_no_trial(tmp_path / "studies")


def test_data_root_that_does_not_exist(tmp_path, capsys, cache_dir):
    space = write_space(tmp_path / "space.yaml", GOOD_SPACE)
    missing = tmp_path / "no-such-data"
    code = main(study_argv(space, tmp_path / "studies", "bad", missing, cache_dir, "--image-size", "32"))
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ")
    assert str(missing) in err
    assert_no_trial(tmp_path / "studies")
    # the default dataset (covid-chestxray-3class) with a wrong root names it too
    code = main(["--data-root", str(missing), "--storage", str(tmp_path / "studies"), "--name", "bad2",
                 "--cache-dir", str(cache_dir)])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and str(missing) in err
    assert_no_trial(tmp_path / "studies")


def test_a_missing_data_root_of_a_later_dataset_leaves_no_split_of_the_first(tmp_path, capsys, tiny_data, cache_dir):
    """The first dataset's split was written before the second's root was found missing: a study folder with
    splits/ and no study.json was left, which a start under that name then ran into."""
    space = write_space(tmp_path / "space.yaml", {"dataset": {"choice": ["folder", "covid-chestxray-3class"]},
                                                  **GOOD_SPACE})
    missing = tmp_path / "no-such-data"
    code = main(["--space", str(space), "--data-root", f"folder={tiny_data}",
                 "--data-root", f"covid-chestxray-3class={missing}", "--storage", str(tmp_path / "studies"),
                 "--name", "two", "--cache-dir", str(cache_dir), "--image-size", "32"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith(f"error: data root {missing} does not exist"), err
    assert_no_trial(tmp_path / "studies")


@pytest.mark.parametrize("where", ["a file", "under a file"])
def test_storage_that_cannot_be_written(tmp_path, capsys, tiny_data, cache_dir, where):
    space = write_space(tmp_path / "space.yaml", GOOD_SPACE)
    blocker = tmp_path / "not-a-folder.txt"
    blocker.write_text("a file, not a folder\n")
    storage = blocker if where == "a file" else blocker / "studies"
    code = main(study_argv(space, storage, "bad", tiny_data, cache_dir, "--image-size", "32"))
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith(f"error: --storage {storage}/bad: cannot write there")
    assert blocker.read_text() == "a file, not a folder\n"


def test_storage_bucket_that_cannot_be_reached(tmp_path, capsys, tiny_data, cache_dir):
    """No network here: an s3:// bucket fails fast (DNS) with the same error, not a hang."""
    space = write_space(tmp_path / "space.yaml", GOOD_SPACE)
    started = time.monotonic()
    code = main(study_argv(space, "s3://nonexistent-bucket-xyz/", "bad", tiny_data, cache_dir,  # type: ignore[arg-type]
                           "--image-size", "32"))
    elapsed = time.monotonic() - started
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: --storage s3://nonexistent-bucket-xyz/bad: cannot write there")
    assert "check the credentials and network" in err
    assert elapsed < 60, f"the unreachable bucket took {elapsed:.0f} s to refuse"


@pytest.mark.parametrize("argv", [["--help"], ["--max-epochs", "0"], ["--space", "no-such-space"],
                                  ["--keep", "none"], ["--model-typo"]])
def test_help_and_option_errors_answer_without_loading_torch_ray_or_optuna(argv):
    """--help and a bad option answer at once: nothing heavy is imported before the options are checked
    (torch and Ray took 8-10 s to import here)."""
    code = ("import sys\nfrom study.run import main\ntry:\n    code = main(sys.argv[1:])\n"
            "except SystemExit as exit:\n    code = exit.code\n"
            "print('exit', code, sorted(m for m in ('torch', 'ray', 'optuna', 'sklearn') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code, *argv], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.stdout.splitlines()[-1] == f"exit {0 if argv == ['--help'] else 2} []", done.stdout + done.stderr
    if argv == ["--max-epochs", "0"]:  # the error alone: no note of a grace period "lowered to 0" before it
        assert done.stderr.strip() == "error: --max-epochs 0: must be at least 1", done.stderr


def test_help_states_each_default_once():
    """Each flag's help says its default once, in words where it is not a value (never 'default: None')."""
    text = build_parser().format_help()
    for block in re.split(r"\n  (?=-)", text.split("options:", 1)[1]):
        flat = " ".join(block.split())
        assert flat.count("(default:") <= 1 and "default: None" not in flat, flat


def test_a_resume_refuses_options_that_would_not_change_the_study(tmp_path, capsys):
    """A resume runs the study its study.json defines: --max-epochs 8 beside it must not pass for an extension."""
    code = main(["--resume", str(tmp_path), "--max-epochs", "8", "--seed", "3", "--num-cpus", "1", "-v"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: --resume continues the study as its study.json defines it: "
                                        "--max-epochs, --seed would not change it; drop them (only --address, "
                                        "--num-cpus, --cpus-per-trial, --gpus-per-trial, --data-root, --cache-dir "
                                        "and -v go with --resume)"), err


def test_a_resume_refuses_options_typed_at_their_default_values(tmp_path, capsys):
    """--seed 0 beside the resume of a study made with --seed 7 must not pass for a change of seed."""
    code = main(["--resume", str(tmp_path), "--seed", "0", "--space=demo", "--tie-break", "val/loss", "-v"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: --resume continues the study as its study.json defines it: "
                                        "--seed, --space, --tie-break would not change it"), err


def saved_study(tmp_path: Path, tiny_data: Path, cache_dir: Path, *flags: str) -> Path:
    """A study folder holding only its study.json, made with `flags`: what a resume checks first."""
    from study.settings import save_settings

    space = write_space(tmp_path / "one.yaml", GOOD_SPACE)
    save_settings(settings_from_args(build_parser().parse_args(
        study_argv(space, tmp_path / "studies", "saved", tiny_data, cache_dir, *flags))))
    return tmp_path / "studies" / "saved"


@pytest.mark.parametrize("flag, saved, override, refused", [
    ("--cpus-per-trial", TOO_MANY_CPUS, "1", rf"--cpus-per-trial {TOO_MANY_CPUS} \(the study's, from its study.json; "
                                            r"--cpus-per-trial overrides it\) exceeds the \d+ CPU cores of this machine"),
    pytest.param("--gpus-per-trial", "0.25", "0", r"--gpus-per-trial 0.25 \(the study's, from its study.json; "
                 r"--gpus-per-trial overrides it\) asked for, but this machine has no CUDA GPU: pass "
                 r"--gpus-per-trial 0 to run on CPU", marks=NO_GPU),
], ids=["fewer CPUs", "no GPU"])
def test_a_resume_on_a_smaller_machine_says_which_saved_flag_to_override_and_takes_it(tmp_path, capsys, tiny_data,
                                                                                     cache_dir, flag, saved, override,
                                                                                     refused):
    """The study ran on a larger machine: its saved resources cannot be given here, though the user typed none."""
    study_dir = saved_study(tmp_path, tiny_data, cache_dir, flag, saved)
    assert main(["--resume", str(study_dir)]) == 2
    assert re.search(refused, capsys.readouterr().err)
    assert main(["--resume", str(study_dir), flag, override]) == 2  # past the resources: the study has no split
    err = capsys.readouterr().err
    assert flag not in err and "split" in err, err
    assert json.loads((study_dir / "study.json").read_text())[flag[2:].replace("-", "_")] == float(saved)


def test_an_unknown_dataset_is_named_with_the_choices(capsys):
    """Not 'covid-nope needs --data-root': the name itself is wrong."""
    with pytest.raises(SystemExit):
        main(["--dataset", "covid-nope"])
    assert "argument --dataset: invalid choice: 'covid-nope' (choose from 'covid-radiography'" in capsys.readouterr().err


@pytest.mark.parametrize("typed", ["", "  "])
def test_a_resume_of_a_blank_folder_is_refused_not_taken_for_a_new_study(tmp_path, capsys, monkeypatch, typed):
    """`--resume "$STUDY"` with STUDY unset started a new demo study: a blank folder is an error, before any study."""
    import study.driver

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(study.driver, "run_study", lambda *args, **kwargs: pytest.fail("a study was started"))
    code = main(["--resume", typed])
    assert (code, capsys.readouterr().err) == (2, f"error: --resume {typed!r}: give the study's folder or URI\n")


def test_resume_of_a_folder_that_is_no_study(tmp_path, capsys):
    code = main(["--resume", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith(f"error: --resume {tmp_path}: not a study directory, it has no study.json")


def test_a_new_study_under_a_taken_name_leaves_that_study_untouched(tmp_path, capsys, tiny_data, cache_dir):
    """Refused before anything is written: the other study's split (and so its resume and analysis) stays."""
    from study.settings import save_settings

    space = write_space(tmp_path / "space.yaml", GOOD_SPACE)
    argv = study_argv(space, tmp_path / "studies", "taken", tiny_data, cache_dir, "--image-size", "32")
    settings = settings_from_args(build_parser().parse_args(argv))
    save_settings(settings)
    split = tmp_path / "studies" / "taken" / "splits" / "folder.csv"
    split.parent.mkdir()
    split.write_text("relpath,patient,sha1,split\n")
    assert main([*argv, "--seed", "1"]) == 2
    err = capsys.readouterr().err
    assert f"error: {settings.study_uri} already holds a study: use --resume or another --name" in err
    assert split.read_text() == "relpath,patient,sha1,split\n"


def test_resume_of_a_study_whose_split_is_missing(tmp_path, capsys, tiny_data, cache_dir):
    """The split is part of the study: a resume without it stops before Ray, naming the file."""
    from study.settings import save_settings

    space = write_space(tmp_path / "space.yaml", GOOD_SPACE)
    settings = settings_from_args(build_parser().parse_args(
        study_argv(space, tmp_path / "studies", "no-split", tiny_data, cache_dir, "--image-size", "32")))
    save_settings(settings)
    code = main(["--resume", settings.study_uri])
    err = capsys.readouterr().err
    assert code == 2
    assert f"{settings.study_uri}/splits/folder.csv: the study's split is missing" in err and "restore" in err


def move_a_val_image_to_train(path: Path) -> None:
    split = pd.read_csv(path, dtype=str, keep_default_na=False)
    split.loc[split.index[split["split"] == "val"][0], "split"] = "train"
    split.to_csv(path, index=False)


def cut_in_its_last_line(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-10])


@pytest.mark.parametrize("damage, message", [
    (move_a_val_image_to_train, " was edited since the study made it"),
    (cut_in_its_last_line, ": the split file looks cut short (its last line is incomplete"),
], ids=["edited", "cut short"])
def test_resume_of_a_study_whose_split_was_damaged(tmp_path, capsys, tiny_data, cache_dir, monkeypatch, damage,
                                                   message):
    """A resume must train on the split the study started with: a split file edited, or cut short (read with
    cxrnets.splits' checks), stops it before Ray, named."""
    import study.driver

    space = write_space(tmp_path / "space.yaml", GOOD_SPACE)
    settings = settings_from_args(build_parser().parse_args(
        study_argv(space, tmp_path / "studies", "damaged", tiny_data, cache_dir, "--image-size", "32")))
    study.driver.save_new_study(settings, study.driver.prepare_splits(settings, resume=False))
    path = Path(settings.study_uri) / "splits" / "folder.csv"
    damage(path)
    monkeypatch.setattr(study.driver, "connect", lambda *a, **k: pytest.fail("Ray started"))
    assert main(["--resume", settings.study_uri]) == 2
    assert capsys.readouterr().err.startswith(f"error: {path}{message}")


def test_resume_of_a_study_in_a_bucket_whose_data_changed_names_the_split_object(tmp_path, s3_bucket, cache_dir):
    """The resume checks the saved split against the data before Ray: the error names the split by its URI."""
    import study.driver

    data = build_tiny_folder(tmp_path / "data", per_class=8)
    space = write_space(tmp_path / "space.yaml", GOOD_SPACE)
    settings = settings_from_args(build_parser().parse_args(
        study_argv(space, tmp_path, "changed", data, cache_dir, "--image-size", "32", "--storage", s3_bucket)))
    study.driver.save_new_study(settings, study.driver.prepare_splits(settings, resume=False))
    shutil.copy(data / "normal" / "normal-00.png", data / "normal" / "normal-extra.png")
    with pytest.raises(CxrError) as refused:
        study.driver.prepare_splits(settings, resume=True)
    assert str(refused.value).startswith(f"{s3_bucket}/changed/splits/folder.csv: the dataset changed since this "
                                         "split was made (1 new images")


def test_a_study_s_split_keeps_an_x_ray_and_its_resized_copy_on_one_side(tmp_path, make_radiography_copies,
                                                                            cache_dir, caplog):
    """Dataset 1 holds dataset 3's X-rays squashed to 299x299 PNG, some twice (also as a JPEG of their own shape,
    under another name): a study's split keeps each such pair on one side, whatever its seed, and says so."""
    import study.driver

    data, copies = make_radiography_copies()
    space = write_space(tmp_path / "space.yaml", GOOD_SPACE)
    for seed in range(4):
        settings = settings_from_args(build_parser().parse_args(
            study_argv(space, tmp_path / "studies", f"copies-{seed}", data, cache_dir, "--dataset",
                       "covid-radiography", "--image-size", "64", "--seed", str(seed))))
        with caplog.at_level(logging.WARNING, logger="cxrnets.splits"):
            split = study.driver.prepare_splits(settings, resume=False)["covid-radiography"]
        part = split.set_index("relpath")["split"]
        assert [part[png] == part[jpeg] for png, jpeg in copies] == [True] * len(copies)
    assert re.search(r"4 group\(s\) of images joined others because they hold a near-identical image .* e\.g\. "
                     r"COVID/images/COVID-1\.png \(patient COVID/images/COVID-1\.png\) and COVID/images/COVID-7\.jpg",
                     caplog.text)


@pytest.mark.parametrize("damage", ["missing", "corrupt", "another study's"])
def test_resume_of_a_study_whose_optuna_storage_cannot_be_continued(tmp_path, capsys, tiny_data, cache_dir,
                                                                     monkeypatch, damage):
    """optuna.db holds what the searcher learned: the resume of a study that ran (Tune's state is there) without
    it, or with a corrupt file or another study's, stops before Ray, naming the file and what to do."""
    import study.driver

    space = write_space(tmp_path / "space.yaml", GOOD_SPACE)
    settings = settings_from_args(build_parser().parse_args(
        study_argv(space, tmp_path / "studies", "no-optuna", tiny_data, cache_dir, "--image-size", "32")))
    study.driver.save_new_study(settings, study.driver.prepare_splits(settings, resume=False))
    save_tune_state(settings.study_uri)
    optuna_file = Path(settings.study_uri) / "optuna.db"
    if damage == "corrupt":
        optuna_file.write_bytes(b"\0" * 4096)
    elif damage == "another study's":
        optuna.create_study(study_name="someone-else", storage=f"sqlite:///{optuna_file}")
    monkeypatch.setattr(study.driver, "connect", lambda *a, **k: pytest.fail("Ray started"))
    assert main(["--resume", settings.study_uri]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {optuna_file} ")
    assert {"missing": "is missing", "corrupt": "is not a readable Optuna storage",
            "another study's": "holds the Optuna study 'someone-else', not this study's 'no-optuna'"}[damage] in err


def save_tune_state(study_uri: str, sessions: tuple[str, ...] = ("2026-12-06_08-00-00",)) -> None:
    """Tune's state of a run, as a run leaves it: tuner.pkl, and per session of the run an experiment snapshot
    (experiment_state-<session>.json) and the searcher's and callbacks' states (a resume restores the newest)."""
    storage.write_bytes(storage.join(study_uri, "tuner.pkl"), pickle.dumps({"searcher": list(range(500))}))
    for session in sessions:
        storage.write_json(storage.join(study_uri, f"experiment_state-{session}.json"),
                           {"trial_data": [[json.dumps({"trial_id": "aaaa0001", "status": "RUNNING"}), "{}"]],
                            "runner_data": {}, "stats": {}})
        for name in (f"search_gen_state-{session}.json", f"searcher-state-{session}.pkl",
                     f"callback-states-{session}.pkl"):
            storage.write_bytes(storage.join(study_uri, name), pickle.dumps({"state": list(range(500))}))


def cut_short(uri: str, size: int) -> None:
    storage.write_bytes(uri, storage.read_bytes(uri)[:size])


TUNE_STATE_DAMAGE = {  # what is damaged -> (the file, as the error names it; what the error says of it)
    "newest snapshot cut short": ("experiment_state-2026-12-07_09-00-00.json", "cannot be read (Unterminated string"),
    "tuner.pkl cut short": ("tuner.pkl", "cannot be read ("),
    "tuner.pkl missing": ("tuner.pkl", "is missing: "),
    "newest searcher state cut short": ("searcher-state-2026-12-07_09-00-00.pkl", "cannot be read ("),
    "every search state missing": ("", "holds no search_gen_state-<session>.json: "),
    "every callback state missing": ("", "holds no callback-states-<session>.pkl: "),
    "an older snapshot cut short": ("experiment_state-2026-12-06_08-00-00.json", None),
    "an older searcher state cut short": ("searcher-state-2026-12-06_08-00-00.pkl", None),
}


@pytest.mark.parametrize("where", ["local", "bucket"])
@pytest.mark.parametrize("damage", list(TUNE_STATE_DAMAGE))
def test_resume_of_a_study_whose_tune_state_cannot_be_read(tmp_path, capsys, tiny_data, cache_dir, monkeypatch,
                                                           request, where, damage):
    """A snapshot of Tune's or a searcher state that cannot be read made Tune log 'Failed to restore the run
    state' and run a new search in the study's folder, on top of its trials (its results and optuna.db mixing
    both); a tuner.pkl cut short ended the resume in an unpickling traceback, a missing search state in a KeyError
    at the first result. The resume stops before Ray, naming the file and what to do, and changes nothing. Older
    sessions' files, which Tune does not restore, do not matter."""
    import study.driver

    space = write_space(tmp_path / "space.yaml", GOOD_SPACE)
    studies = request.getfixturevalue("s3_bucket") if where == "bucket" else str(tmp_path / "studies")
    settings = settings_from_args(build_parser().parse_args(
        study_argv(space, tmp_path / "studies", "damaged", tiny_data, cache_dir, "--image-size", "32",
                   "--storage", studies)))
    study.driver.save_new_study(settings, study.driver.prepare_splits(settings, resume=False))
    optuna_file = tmp_path / "optuna.db"
    optuna.create_study(study_name=settings.optuna_study, storage=f"sqlite:///{optuna_file}")
    storage.write_bytes(storage.join(settings.study_uri, "optuna.db"), optuna_file.read_bytes())
    save_tune_state(settings.study_uri, sessions=("2026-12-06_08-00-00", "2026-12-07_09-00-00"))
    name, cause = TUNE_STATE_DAMAGE[damage]
    damaged = storage.join(settings.study_uri, name) if name else settings.study_uri
    if damage.startswith("every"):
        kind = "search_gen_state-" if "search" in damage else "callback-states-"
        for entry in storage.listing(settings.study_uri):
            if entry.name.startswith(kind):
                storage.delete(entry.uri)
    elif damage.endswith("missing"):
        storage.delete(damaged)
    else:
        cut_short(damaged, 60)
    before = {entry.uri: storage.read_bytes(entry.uri) for entry in storage.listing(settings.study_uri, True)
              if not entry.is_dir}

    def ray_starts(*args, **kwargs):
        raise KeyboardInterrupt  # stands for the run, which the test does not need

    monkeypatch.setattr(study.driver, "connect", ray_starts)
    status = main(["--resume", settings.study_uri])
    err = capsys.readouterr().err
    if cause is None:
        assert status == 130, err
        return
    assert status == 2
    assert err.startswith(f"error: {damaged} {cause}")
    assert err.rstrip().endswith("restore it from a copy of the study folder, or start a new study")
    after = {entry.uri: storage.read_bytes(entry.uri) for entry in storage.listing(settings.study_uri, True)
             if not entry.is_dir}
    assert after == before


@pytest.mark.parametrize("typed, meant", [("cache", "cache"), ("~/cache", "home/cache")])
def test_a_relative_cache_dir_is_held_as_the_absolute_folder_it_named(tmp_path, monkeypatch, typed, meant):
    """Each Tune trial runs in a folder of its own: a --cache-dir kept as typed would name another folder there,
    and every trial would decode the dataset again."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    settings = settings_from_args(build_parser().parse_args(["--storage", "studies", "--cache-dir", typed]))
    assert settings.cache_dir == str(tmp_path / meant)


def test_the_ray_instance_a_study_starts_reads_a_relative_cxr_tune_cache_as_the_folder_it_named(tmp_path,
                                                                                              monkeypatch):
    """Its trial workers inherit the driver's environment but run in folders of their own."""
    import ray

    from study.driver import connect

    seen = {}
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CXR_TUNE_CACHE", "cache")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr("study.driver.cluster_address", lambda address: None)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **options: seen.update(cache=os.environ["CXR_TUNE_CACHE"]))
    assert connect(None, 1) is True
    assert seen == {"cache": str(tmp_path / "cache")}


def test_a_study_of_a_space_leaving_out_the_model_says_what_its_trials_train_and_records_it(tmp_path, caplog):
    """A space without model, optimizer or batch_size: trials train TrainConfig's defaults, said once and saved
    in study.json's space (so its trials' configs, names and tables show them)."""
    space = write_space(tmp_path / "lr-only.yaml", {"lr": {"choice": [1.0e-3, 1.0e-2]}})
    with caplog.at_level(logging.INFO, logger="study.run"):
        settings = settings_from_args(build_parser().parse_args(["--space", str(space), "--storage", str(tmp_path)]))
    assert (f"{space}: its search leaves out model, optimizer, batch_size: every trial trains model resnet50, "
            "optimizer adam, batch_size 32 (cxrnets' defaults); search or set them in the space to choose") \
        in caplog.messages
    assert {key: settings.space["search"][key] for key in ("model", "optimizer", "batch_size")} == {
        "model": {"value": "resnet50"}, "optimizer": {"value": "adam"}, "batch_size": {"value": 32}}
    assert settings.search_space().filled == {}


def test_image_size_overrides_the_spaces_study_section_that_a_model_could_not_take(tmp_path):
    """The command line wins over the study section: --image-size 64 runs alexnet on a space made for 32 px,
    which without it is refused naming the space's key."""
    space = write_space(tmp_path / "space.yaml", {**GOOD_SPACE, "model": {"choice": ["alexnet", "resnet50"]}},
                        study={"image_size": 32})
    argv = ["--space", str(space), "--storage", str(tmp_path)]
    assert settings_from_args(build_parser().parse_args([*argv, "--image-size", "64"])).image_size == 64
    with pytest.raises(CxrError, match=re.escape(
            f"{space}: study.image_size: image_size 32 is too small for alexnet (needs at least 63 px); raise it to "
            "63 or more, or drop alexnet")):
        settings_from_args(build_parser().parse_args(argv))


def test_the_image_size_is_checked_against_the_models_the_datasets_trials_train(tmp_path):
    """alexnet trains on covid-chestxray only: a study of covid-chestxray-3class at 32 px (typed, or in the space's
    study section) runs no alexnet trial; one of covid-chestxray is refused."""
    model_per_dataset = {"dataset": {"choice": ["covid-chestxray-3class", "covid-chestxray"]},
                         "model": [{"value": "alexnet", "when": {"dataset": "covid-chestxray"}},
                                   {"value": "resnet50", "when": {"dataset": "covid-chestxray-3class"}}],
                         **{key: spec for key, spec in GOOD_SPACE.items() if key != "model"}}
    typed = write_space(tmp_path / "typed.yaml", model_per_dataset)
    in_file = write_space(tmp_path / "in-file.yaml", model_per_dataset, study={"image_size": 32})
    for argv in (["--space", str(typed), "--image-size", "32"], ["--space", str(in_file)]):
        argv += ["--storage", str(tmp_path)]
        assert settings_from_args(build_parser().parse_args([*argv, "--dataset", "covid-chestxray-3class"])) \
            .image_size == 32
        with pytest.raises(CxrError, match="image_size 32 is too small for alexnet"):
            settings_from_args(build_parser().parse_args([*argv, "--dataset", "covid-chestxray"]))


def test_a_study_image_size_beside_an_image_size_some_trials_draw_sets_the_others(tmp_path):
    """resnet50 and vgg11 trials draw 64 px from the search, alexnet trials none: the study's size, in the space
    file or typed, is theirs (refused before, as if every trial drew one), and checked against alexnet alone."""
    space = {**GOOD_SPACE, "model": {"choice": ["alexnet", "resnet50"]},
             "image_size": {"value": 64, "when": {"model": "resnet50"}}}
    in_file = write_space(tmp_path / "in-file.yaml", space, study={"image_size": 96})
    typed = write_space(tmp_path / "typed.yaml", space)
    for argv, size in ((["--space", str(in_file)], 96), (["--space", str(typed), "--image-size", "128"], 128)):
        settings = settings_from_args(build_parser().parse_args([*argv, "--storage", str(tmp_path)]))
        assert settings.image_size == size
    with pytest.raises(CxrError, match=re.escape("--image-size: image_size 32 is too small for alexnet")):
        settings_from_args(build_parser().parse_args(["--space", str(typed), "--image-size", "32",
                                                      "--storage", str(tmp_path)]))


DEFAULT_NAMES = {
    "a name key with '#'": ("space.yaml", {"name": "lung#1"}, r"the study's default name 'lung#1-\d{8}-\d{6}' "
                            r"\(from the name key of {space}\): '#' cannot be part of a storage location's name "
                            r"\(a URI reads it as a query, fragment or escape\); change the name key, or give the "
                            r"study a --name"),
    "a name key with '/'": ("space.yaml", {"name": "../../evil"}, r"the study's default name '\.\./\.\./evil-\d{8}-"
                            r"\d{6}' \(from the name key of {space}\): a study's name is its one folder under "
                            r"--storage; change the name key, or give the study a --name"),
    "a file name with '%'": ("lung%v2.yaml", {}, r"the study's default name 'lung%v2-\d{8}-\d{6}' \(from the space "
                             r"file's name, lung%v2\.yaml\): '%' cannot be part of a storage location's name \(a URI "
                             r"reads it as a query, fragment or escape\); rename the file, or give the study a --name"),
}


@pytest.mark.parametrize("file, top, message", DEFAULT_NAMES.values(), ids=DEFAULT_NAMES.keys())
def test_a_default_study_name_no_folder_can_take_names_where_it_came_from(tmp_path, file, top, message):
    """Not '--name ...', which the user never typed: the space's name key or file name, and --name to choose."""
    space = write_space(tmp_path / file, GOOD_SPACE, **top)
    with pytest.raises(CxrError) as refused:
        settings_from_args(build_parser().parse_args(["--space", str(space), "--storage", str(tmp_path)]))
    assert re.fullmatch(message.replace("{space}", re.escape(str(space))), str(refused.value)), refused.value


@pytest.mark.parametrize("named, shown", [(["a"], "['a']"), ("", "''"), ("  ", "'  '"), (None, "None")])
def test_a_name_key_that_is_no_name_is_refused_naming_the_file_and_key(tmp_path, named, shown):
    """name: [a] made a study folder "['a']-20261207-...", and name: "" one named "-20261207-..."."""
    space = write_space(tmp_path / "space.yaml", GOOD_SPACE, name=named)
    with pytest.raises(CxrError) as refused:
        settings_from_args(build_parser().parse_args(["--space", str(space), "--storage", str(tmp_path)]))
    assert str(refused.value) == (f"{space}: name {shown}: the study's default name starts with it, so it must be "
                                  "text that names the study (name: lung-grid); change the name key, or give the "
                                  "study a --name")
    assert settings_from_args(build_parser().parse_args(["--space", str(space), "--storage", str(tmp_path),
                                                         "--name", "lung"])).name == "lung"


def test_a_blank_name_is_refused_not_replaced_by_the_default(tmp_path):
    with pytest.raises(CxrError, match=r"^--name '': a study's name is its one folder under --storage"):
        settings_from_args(build_parser().parse_args(["--name", "", "--storage", str(tmp_path)]))


def test_fewer_epochs_than_the_spaces_grace_period_lower_it(tmp_path, caplog):
    """`--max-epochs 1` on the demo space (grace period 2) runs, with a grace period of 1 and a warning;
    a --grace-period given beyond --max-epochs is still refused (BAD_INPUT)."""
    with caplog.at_level("WARNING", logger="study.run"):
        settings = settings_from_args(build_parser().parse_args(["--max-epochs", "1", "--storage", str(tmp_path)]))
    assert (settings.max_epochs, settings.grace_period) == (1, 1)
    assert "grace period 2 exceeds --max-epochs 1" in caplog.text


def test_grid_space_runs_every_combination_by_default(tmp_path):
    """--num-samples defaults to the grid's size (paper.yaml: 108), not to 10."""
    settings = settings_from_args(build_parser().parse_args(["--space", "paper", "--storage", str(tmp_path)]))
    assert settings.num_samples == 108
    assert (settings.image_size, settings.max_epochs, settings.grace_period) == (224, 50, 5)
    settings = settings_from_args(build_parser().parse_args(["--space", "paper", "--num-samples", "4",
                                                             "--storage", str(tmp_path)]))
    assert settings.num_samples == 4


@pytest.mark.parametrize("sampler, given, said", [
    ("tpe", ["--num-samples", "10"], "--num-samples 10"),
    ("random", [], "the default of 10 trials"),
    ("grid", ["--num-samples", "10"], "--num-samples 10"),
])
def test_more_trials_than_a_space_of_choices_has_configurations_are_lowered_to_its_count(tmp_path, caplog, sampler,
                                                                                       given, said):
    """Each configuration runs once: a study asked for 10 trials of a 2-configuration space planned 10 (its status
    line and time estimate counted them) and ended saying 8 were not started, as if interrupted."""
    space = write_space(tmp_path / "two.yaml", {**GOOD_SPACE, "lr": {"choice": [1.0e-3, 1.0e-2]}}, sampler=sampler)
    with caplog.at_level("WARNING", logger="study.run"):
        settings = settings_from_args(build_parser().parse_args(["--space", str(space), "--storage", str(tmp_path),
                                                                 *given]))
    assert settings.num_samples == 2
    assert f"{space} has 2 configurations, fewer than {said}: the study runs 2, each configuration once" in caplog.text
    ranged = write_space(tmp_path / "ranged.yaml", {**GOOD_SPACE, "lr": {"loguniform": [1.0e-3, 1.0e-2]}})
    assert settings_from_args(build_parser().parse_args(["--space", str(ranged), "--storage", str(tmp_path),
                                                         "--num-samples", "10"])).num_samples == 10


@pytest.mark.parametrize("typed", [False, True], ids=["study section", "typed"])
def test_fewer_trials_than_a_grid_or_cover_first_has_combinations_say_where_the_count_came_from(tmp_path, caplog,
                                                                                               typed):
    """A space's study.num_samples was reported as --num-samples, which the user never typed."""
    models = {**GOOD_SPACE, "model": {"choice": ["resnet50", "vgg11", "alexnet"]}}
    grid = write_space(tmp_path / "grid.yaml", models, sampler="grid", study={"num_samples": 2})
    covered = write_space(tmp_path / "covered.yaml", {**models, "lr": {"loguniform": [1.0e-4, 1.0e-2]}},
                          cover_first=["model"], study={"num_samples": 2})
    for space in (grid, covered):
        argv = ["--space", str(space), "--storage", str(tmp_path), *(["--num-samples", "2"] if typed else [])]
        with caplog.at_level("WARNING", logger="study.run"):
            assert settings_from_args(build_parser().parse_args(argv)).num_samples == 2
    given = ["--num-samples 2"] * 2 if typed else [f"{space}: study.num_samples 2" for space in (grid, covered)]
    assert f"the grid has 3 combinations, more than {given[0]}: only part of it runs" in caplog.messages
    assert (f"cover_first ['model'] has 3 combinations, more than {given[1]}: only the first 2 are tried"
            in caplog.messages)


def test_a_grid_narrowed_by_dataset_runs_every_combination_of_that_dataset_by_default(tmp_path):
    """--dataset picks one of a grid space's two datasets: half its combinations, not the whole grid's count."""
    space = write_space(tmp_path / "grid.yaml", {"dataset": {"choice": ["covid-chestxray-3class", "covid-chestxray"]},
                                                 **GOOD_SPACE, "lr": {"choice": [1.0e-3, 1.0e-2]}}, sampler="grid")
    argv = ["--space", str(space), "--storage", str(tmp_path)]
    assert settings_from_args(build_parser().parse_args(argv)).num_samples == 4
    assert settings_from_args(build_parser().parse_args([*argv, "--dataset", "covid-chestxray"])).num_samples == 2



def test_held_out_sources_of_a_multi_label_study_are_refused_before_it_trains(tmp_path, real_chestxray):
    """The analysis scores held-out sources for single-label studies only: a multi-label study ran with a fifth of
    dataset 3 held out, neither trained on nor scored, and the analysis said so only afterwards."""
    argv = ["--storage", str(tmp_path), "--data-root", str(real_chestxray),
            "--dataset-option", "holdout_sources=radiopaedia.org"]
    with pytest.raises(CxrError, match=re.escape(
            "--dataset-option holdout_sources with the multi-label covid-chestxray: the analysis evaluates held-out "
            "sources for single-label studies only")):
        settings_from_args(build_parser().parse_args([*argv, "--dataset", "covid-chestxray"]))
    assert list(tmp_path.iterdir()) == []
    single = settings_from_args(build_parser().parse_args([*argv, "--dataset", "covid-chestxray-3class"]))
    assert single.dataset_options == {"covid-chestxray-3class": {"holdout_sources": ["radiopaedia.org"]}}


def lr_per_dataset_space(path: Path, datasets: list[str]) -> Path:
    """A space over two datasets that gives lr per dataset, for `datasets` only."""
    return write_space(path, {"dataset": {"choice": ["covid-radiography", "covid-pneumonia-normal"]},
                              "model": {"value": "resnet50"}, "optimizer": {"value": "adam"},
                              "lr": [{"value": 0.01 * (i + 1), "when": {"dataset": dataset}}
                                     for i, dataset in enumerate(datasets)],
                              "batch_size": {"value": 16}})


def test_a_dataset_the_spaces_learning_rates_do_not_cover_is_refused(tmp_path):
    """--dataset names a dataset none of lr's `when: {dataset: ...}` holds for: its trials trained cxrnets'
    default lr unrecorded, named lr0.0e+00."""
    space = lr_per_dataset_space(tmp_path / "lr-per-dataset.yaml", ["covid-radiography", "covid-pneumonia-normal"])
    with pytest.raises(CxrError, match=re.escape(
            f"{space}: search.lr: no when of lr holds for trials with dataset 'covid-chestxray-3class' (--dataset): "
            "they would train cxrnets' default lr 0.001 unrecorded")) as refused:
        settings_from_args(build_parser().parse_args(["--space", str(space), "--storage", str(tmp_path),
                                                      "--dataset", "covid-chestxray-3class"]))
    assert "or choose a --dataset the space gives lr for" in str(refused.value)


def test_a_space_giving_lr_for_one_of_its_datasets_runs_on_that_dataset(tmp_path):
    """lr given for covid-radiography only: refused as it is (its covid-pneumonia-normal trials get none), but
    --dataset covid-radiography narrows the study to trials that all get one."""
    space = lr_per_dataset_space(tmp_path / "lr-for-one.yaml", ["covid-radiography"])
    argv = ["--space", str(space), "--storage", str(tmp_path), "--data-root", str(tmp_path)]
    with pytest.raises(CxrError, match="no when of lr holds for trials with dataset 'covid-pneumonia-normal'"):
        settings_from_args(build_parser().parse_args(argv))
    settings = settings_from_args(build_parser().parse_args([*argv, "--dataset", "covid-radiography"]))
    assert settings.search_space().grid() == [{"dataset": "covid-radiography", "model": "resnet50",
                                               "optimizer": "adam", "lr": 0.01, "batch_size": 16}]


def test_results_table_of_a_resumed_run_never_overwrites_the_first_runs_parts(tmp_path):
    """Tuner.restore unpickles the callback that the first run pickled: the resumed run must write
    parts of its own next to the first run's, never over them."""
    trial = SimpleNamespace(trial_id="t1", config={"model": "resnet50", "lr": 0.01})
    first = ResultsTable(str(tmp_path))
    pickled = pickle.dumps(first)  # Tuner(...) saves tuner.pkl, callbacks included, before the run starts
    first.on_trial_result(0, [], trial, {"training_iteration": 1, "val/loss": 1.5})
    resumed = pickle.loads(pickled)  # Tuner.restore(...)
    resumed.on_trial_result(0, [], trial, {"training_iteration": 2, "val/loss": 1.2})
    assert len(list((tmp_path / "results").glob("part-*.parquet"))) == 2
    results = read_results(str(tmp_path))
    assert list(results["training_iteration"]) == [1, 2] and list(results["val/loss"]) == [1.5, 1.2]
    assert list(results["config/lr"]) == [0.01, 0.01]


def test_a_damaged_part_of_the_results_is_named(tmp_path):
    table = ResultsTable(str(tmp_path))
    trial = SimpleNamespace(trial_id="t1", config={"model": "resnet50"})
    for epoch in (1, 2):
        table.on_trial_result(0, [], trial, {"training_iteration": epoch, "timestamp": epoch, "val/loss": 1.0})
    damaged = sorted((tmp_path / "results").glob("part-*.parquet"))[1]
    damaged.write_bytes(damaged.read_bytes()[:20])
    with pytest.raises(CxrError, match=rf"{damaged}: a damaged part of the study's table .*move it out of the folder"):
        read_results(str(tmp_path))


def test_a_resumed_trials_reports_supersede_its_earlier_ones_whatever_the_parts_are_named(tmp_path, monkeypatch):
    """The first run (on a machine whose local time names its parts later than the resume's) reported
    epochs 1-3; the resumed trial, with no full state to go on from, started again and was paused after
    epoch 2. What it reports now is its history: epoch 3 of the first run has no weights behind it."""
    import study.results

    trial = SimpleNamespace(trial_id="t1", config={"model": "resnet50"})
    for clock, started, values in (("20261205-230000", 1_000, [0.31, 0.32, 0.47]), ("20261205-140000", 2_000,
                                                                                   [0.51, 0.52])):
        monkeypatch.setattr(study.results.time, "strftime", lambda _format, clock=clock: clock)
        table = ResultsTable(str(tmp_path))
        for epoch, value in enumerate(values, start=1):
            table.on_trial_result(0, [], trial, {"training_iteration": epoch, "timestamp": started + epoch,
                                                 "val/f1_macro": value})
    results = read_results(str(tmp_path))
    assert list(results["training_iteration"]) == [1, 2] and list(results["val/f1_macro"]) == [0.51, 0.52]


# ------------------------------------------------------------------ a study of several trials

MAX_EPOCHS = 3
MAIN_SEARCH = {
    "model": {"choice": ["resnet50", "alexnet"]},
    "optimizer": {"choice": ["adam", "sgd"]},
    "lr": {"loguniform": [1.0e-4, 3.0e-3]},
    "batch_size": {"value": 16},
    "momentum": {"value": 0.9, "when": {"optimizer": "sgd"}},
    "weight_decay": {"value": 1.0e-4, "when": {"optimizer": "sgd"}},
}


@pytest.fixture(scope="module")
def main_study(ray_session, tmp_path_factory, tiny_data, cache_dir):
    """Six trials over ResNet50 and AlexNet (64 px), Adam and SGD, 3 epochs, ASHA on val/loss.

    val/loss rather than the default F1: on 7 validation images many trials tie on F1, and ASHA
    only stops a trial that is strictly worse. cover_first makes the first four trials each model with
    each optimizer.
    """
    root = tmp_path_factory.mktemp("main-study")
    space = write_space(root / "two-models.yaml", MAIN_SEARCH, cover_first=["model", "optimizer"])
    args = build_parser().parse_args(study_argv(
        space, root / "studies", "two-models", tiny_data, cache_dir, "--image-size", "64", "--num-samples", "6",
        "--max-epochs", str(MAX_EPOCHS), "--grace-period", "1", "--reduction-factor", "4", "--metric", "val/loss",
        "--seed", "2", "--checkpoint-every", "2"))
    settings = settings_from_args(args)
    started = time.monotonic()
    console = io.StringIO()
    with contextlib.redirect_stdout(console):
        grid = run_study(settings)
    print(f"main study: {time.monotonic() - started:.0f} s")
    return settings, grid, Path(settings.study_uri), console.getvalue()


def test_study_over_two_models_and_both_optimizers_completes(main_study, capsys):
    settings, grid, study_dir, _ = main_study
    assert len(grid) == 6 and not grid.errors
    results = read_results(settings.study_uri)
    assert results["trial_id"].nunique() == 6
    configs = results.drop_duplicates("trial_id")
    assert set(zip(configs["config/model"], configs["config/optimizer"])) == {
        ("resnet50", "adam"), ("resnet50", "sgd"), ("alexnet", "adam"), ("alexnet", "sgd")}
    events = read_trial_events(settings.study_uri)
    assert len(events) == 6 and set(events["event"]) == {"completed"}
    assert (study_dir / "study.json").is_file() and (study_dir / "splits" / "folder.csv").is_file()
    # the end of a run: the comparison table, best trial per model, and where things are
    print_summary(settings, events)
    out = capsys.readouterr().out
    assert "| resnet50 " in out and "| alexnet " in out
    assert re.search(r"\| \d\.\de-0\d +\|", out), "learning rates are not in scientific notation:\n" + out
    assert f"tensorboard --logdir {study_dir}" in out
    dashboard = f"optuna-dashboard sqlite:///{study_dir}/optuna.db"
    installed = importlib.util.find_spec("optuna_dashboard") is not None
    assert (dashboard + "\n" if installed else dashboard + "  (an optional extra: pip install optuna-dashboard)") in out
    # what the study leaves: its size, and how much of it the weights --keep kept are
    weights_mb = sum(f.stat().st_size for f in (study_dir / "weights").iterdir()) / 1e6
    assert f"MB in all; {weights_mb:,.0f} MB of it the best weights of each model's best trial, --keep 1)" in out
    # the floor beside the best trials, on the study metric first where the baseline has it (a loss it has not)
    assert re.search(r"majority-class baseline on folder: val/f1_macro 0\.\d{3}, val/accuracy 0\.\d{3}\n", out)
    print_summary(dataclasses.replace(settings, metric="val/roc_auc_macro", mode="max"), events)
    out = capsys.readouterr().out
    assert re.search(r"majority-class baseline on folder: val/roc_auc_macro 0\.500, val/f1_macro 0\.\d{3}, "
                     r"val/accuracy 0\.\d{3}\n", out)
    assert "multi-label" not in out
    # on multi-label data the label-wise accuracy of a constant prediction is high: the summary says what it counts
    multilabel = {"f1_macro": 0.165, "accuracy": 0.962, "subset_accuracy": 0.213}
    print_summary(dataclasses.replace(settings, baselines={"covid-chestxray": multilabel}), events)
    assert ("majority-class baseline on covid-chestxray: val/f1_macro 0.165, val/accuracy 0.962\n  (covid-chestxray "
            "is multi-label: val/accuracy counts each label of each image, val/subset_accuracy each image with all "
            "its labels right: 0.213 for the baseline)") in capsys.readouterr().out


def test_the_console_shows_each_trials_end_and_the_studys_progress(main_study):
    """By default a study prints a status line and one line per trial that ends, not Tune's tables."""
    settings, _, _, console = main_study
    results = read_results(settings.study_uri)
    epochs = results.groupby("trial_id")["training_iteration"].max()
    best = results.groupby("trial_id")["val/loss"].min()
    lines = console.splitlines()
    ends = [line for line in lines if re.match(r"\[ *\d+:\d\d\] (done|stopped early|diverged)", line)]
    assert len(ends) == len(epochs)
    for trial_id, trial_epochs in epochs.items():
        (line,) = [line for line in ends if f" {trial_id} " in line]
        how = "done, 3 epochs" if trial_epochs == MAX_EPOCHS else f"stopped early after {trial_epochs} of 3 epochs"
        assert how in line and f"best val/loss {best[trial_id]:.3f}" in line, line
    stopped = int((epochs < MAX_EPOCHS).sum())
    final = [line for line in lines if "trials:" in line][-1]
    assert f"trials: 0 running, 6 done ({stopped} stopped early) | epochs {epochs.sum()} |" in final
    assert f"best val/loss {best.min():.3f} {best.idxmin()} " in final
    assert not any(mark in console for mark in ("╭", "Trial status", "Configuration for experiment")), console
    assert len(lines) < 40, console


def test_what_stays_is_each_models_best_weights_and_no_full_state(main_study):
    """--keep 1 (the default): after the study each model's best trial on the study metric keeps the
    weights of its best epoch; the other trials' weights, and every full state (written after epoch 2
    with --checkpoint-every 2), are gone."""
    settings, _, study_dir, _ = main_study
    results = read_results(settings.study_uri)
    best = best_epochs(results, "val/loss", "min").sort_values(["val/loss", "trial_id"])
    winners = best.drop_duplicates("config/model")
    weights, problems = read_best_weights(settings.study_uri)
    assert problems == [] and sorted(weights) == sorted(winners["trial_id"])
    for row in winners.itertuples():
        assert weights[row.trial_id].epoch == row.training_iteration
        assert (study_dir / "weights" / f"{row.trial_id}.pt").is_file()
    assert sorted(p.name for p in (study_dir / "weights").iterdir()) == sorted(
        f"{t}.{kind}" for t in winners["trial_id"] for kind in ("json", "pt"))
    assert list(study_dir.glob("*/checkpoint_*")) == []


def test_a_resume_deletes_the_full_state_and_weights_of_a_trial_tune_forgot(main_study, tmp_path, caplog):
    """A trial that started after the last snapshot Tune saved (the driver killed before the next one) is not
    in the study a resume restores: its full state and weights stayed forever, two weights files for a model
    under --keep 1, the second evaluated by the analysis. The resume deletes them; the trials it knows keep
    theirs."""
    _, _, study_dir, _ = main_study
    study = tmp_path / "copy"
    shutil.copytree(study_dir, study)
    lost = study / "0123abcd_folder_resnet50_adam_lr1.0e-03_bs16"
    (lost / "checkpoint_000001").mkdir(parents=True)
    (lost / "checkpoint_000001" / "state.pt").write_bytes(b"x" * 2_000_000)
    kept = sorted(p.name for p in (study / "weights").iterdir())
    known = kept[0].removesuffix(".json")
    shutil.copy(study / "weights" / f"{known}.pt", study / "weights" / "0123abcd.pt")
    sidecar = json.loads((study / "weights" / f"{known}.json").read_text())
    (study / "weights" / "0123abcd.json").write_text(json.dumps({**sidecar, "trial_id": "0123abcd"}))
    with caplog.at_level(logging.INFO, logger="study.checkpoints"):
        assert main(["--resume", str(study)]) == 0
    assert sorted(p.name for p in (study / "weights").iterdir()) == kept
    assert not (lost / "checkpoint_000001").exists()
    assert [r.getMessage() for r in caplog.records if "0123abcd" in r.getMessage()] == [
        "trial 0123abcd started after Tune's last snapshot of the study was saved, so the resume does not know it: "
        "deleted its full state (2 MB) and its best weights (weights/0123abcd.pt)"]


def test_adam_trials_never_carry_sgd_dimensions(main_study):
    settings, _, study_dir, _ = main_study
    for trial_dir in trial_dirs(study_dir):
        params = json.loads((trial_dir / "params.json").read_text())
        if params["optimizer"] == "adam":
            assert "momentum" not in params and "weight_decay" not in params, params
        else:
            assert (params["momentum"], params["weight_decay"]) == (0.9, 1e-4), params
    results = read_results(settings.study_uri)
    adam = results[results["config/optimizer"] == "adam"]
    assert adam["config/momentum"].isna().all() and adam["config/weight_decay"].isna().all()


def test_asha_stops_a_trial_early(main_study):
    """Promoting ASHA (the default) with one rung, at epoch 1: the trials wait there, the rung's top
    int(6 / 4) = 1 goes on from its full state (its own epoch count continues: nothing retrained)."""
    settings, _, _, _ = main_study
    assert settings.asha == "promoting"
    results = read_results(settings.study_uri)
    trained = results.groupby("trial_id").filter(lambda rows: (rows["diverged"] == 0).all())
    epochs = trained.groupby("trial_id")["training_iteration"].max()
    assert (epochs < MAX_EPOCHS).any(), f"ASHA stopped no trial: epochs per trial {epochs.to_dict()}"
    assert (epochs == MAX_EPOCHS).any(), f"no trial ran all {MAX_EPOCHS} epochs: {epochs.to_dict()}"
    assert (results["epoch"] == results["training_iteration"]).all()


def test_parquet_table_holds_every_reported_epoch(main_study):
    """Every line of every trial's result.json (and progress.csv) is a row of the Parquet table."""
    settings, _, study_dir, _ = main_study
    results = read_results(settings.study_uri)
    dirs = trial_dirs(study_dir)
    assert len(dirs) == 6
    for trial_dir in dirs:
        reported = result_json(trial_dir)
        trial_id = reported[0]["trial_id"]
        assert trial_dir.name.startswith(trial_id)
        rows = results[results["trial_id"] == trial_id]
        assert list(rows["training_iteration"]) == [r["training_iteration"] for r in reported]
        assert list(rows["training_iteration"]) == list(range(1, len(reported) + 1))
        assert list(rows["epoch"]) == [r["epoch"] for r in reported]
        assert np.allclose(rows["val/loss"], [r["val/loss"] for r in reported])
        for key in ("val/f1_macro", "val/accuracy", "train/loss"):
            if all(key in r for r in reported):
                assert np.allclose(rows[key], [r[key] for r in reported]), key
        progress = pd.read_csv(trial_dir / "progress.csv")
        assert list(progress["training_iteration"]) == list(rows["training_iteration"])
        params = json.loads((trial_dir / "params.json").read_text())
        for key, value in params.items():
            assert rows[f"config/{key}"].eq(value).all(), key


def test_tensorboard_holds_every_epoch_of_every_trial_with_hparams(main_study):
    settings, _, study_dir, _ = main_study
    results = read_results(settings.study_uri)
    for trial_dir in trial_dirs(study_dir):
        assert list(trial_dir.glob("events.out.tfevents.*")), f"no TensorBoard events in {trial_dir}"
        trial_id = trial_dir.name.split("_")[0]
        rows = results[results["trial_id"] == trial_id]
        params = json.loads((trial_dir / "params.json").read_text())
        # named by its configuration
        assert params["model"] in trial_dir.name and params["optimizer"] in trial_dir.name
        events = tensorboard_scalars(trial_dir)
        loss = events.Scalars("val/loss")
        assert [e.step for e in loss] == list(rows["training_iteration"])
        assert np.allclose([e.value for e in loss], rows["val/loss"], rtol=1e-5)
        scored = rows.dropna(subset=["val/f1_macro"])
        if len(scored):
            f1 = events.Scalars("val/f1_macro")
            assert [e.step for e in f1] == list(scored["training_iteration"])
            assert np.allclose([e.value for e in f1], scored["val/f1_macro"], rtol=1e-5)
            assert [e.step for e in events.Scalars("train/loss")] == list(scored["training_iteration"])
        hparams = hparams_of(events)
        assert hparams, f"no HPARAMS for {trial_dir.name}"
        assert hparams["model"] == params["model"] and hparams["optimizer"] == params["optimizer"]
        assert math.isclose(hparams["lr"], params["lr"], rel_tol=1e-9)
        assert hparams["seed"] == settings.seed  # the column that tells study.confirm's seed runs apart
        if params["optimizer"] == "sgd":
            assert math.isclose(hparams["momentum"], 0.9)
        else:
            assert "momentum" not in hparams
    # TensorBoard's HPARAMS tab: every trial, by the best epoch the study selects on
    _, sessions = hparams_tab(study_dir)
    shown = {name.split("_")[0]: session["metrics"]["best/val/loss"][1] for name, session in sessions.items()}
    best = results.groupby("trial_id")["val/loss"].min()
    assert shown.keys() == set(best.index) and np.allclose([shown[t] for t in best.index], best, rtol=1e-5)


# ------------------------------------------------------------------ a diverging trial

def test_diverging_trials_end_as_poor_results_and_the_study_completes(ray_session, tmp_path, tiny_data, cache_dir,
                                                                       capsys):
    """lr 1e6 makes the loss NaN: with SGD within the first steps, with Adam the training loss stays
    finite but the outputs on the validation split are NaN. Both trials end after one report with
    diverged=1 and the worst F1 (0), neither errors nor is retried, and the study completes."""
    space = write_space(tmp_path / "diverge.yaml", {
        "model": {"value": "resnet50"}, "optimizer": {"choice": ["adam", "sgd"]}, "lr": {"value": 1.0e6},
        "batch_size": {"value": 16}}, sampler="grid")
    settings = settings_from_args(build_parser().parse_args(study_argv(
        space, tmp_path / "studies", "diverge", tiny_data, cache_dir, "--image-size", "32", "--max-epochs", "3")))
    assert settings.num_samples == 2  # the grid's size
    grid = run_study(settings)
    assert len(grid) == 2 and not grid.errors
    results = read_results(settings.study_uri)
    assert sorted(results["config/optimizer"]) == ["adam", "sgd"]
    assert list(results["diverged"]) == [1, 1]
    assert list(results["training_iteration"]) == [1, 1] and list(results["epoch"]) == [1, 1]
    assert list(results["val/f1_macro"]) == [0.0, 0.0]
    assert list(results["status"]) == ["diverged", "diverged"]
    assert set(read_trial_events(settings.study_uri)["event"]) == {"completed"}
    for result in grid:
        assert result.error is None and result.metrics["diverged"] == 1
    print_summary(settings, read_trial_events(settings.study_uri))
    printed = capsys.readouterr().out
    assert "| resnet50 " not in printed  # a diverged trial is no best
    assert "folder / resnet50: all 2 trials diverged (NaN loss) at epoch 1, before measuring val/f1_macro: no best" \
        in printed


def test_a_study_ends_once_every_configuration_of_its_space_has_run(ray_session, tmp_path, tiny_data, cache_dir,
                                                                     capsys):
    """Every trial trains with the study's seed: with more trials asked than the space has configurations,
    the study trains each configuration once and ends, rather than training the same curves again, and its
    last status line counts no trial "not started", as an interrupted study's would."""
    space = write_space(tmp_path / "two.yaml", {
        "model": {"value": "resnet50"}, "optimizer": {"value": "adam"}, "lr": {"choice": [1.0e-4, 1.0e-3]},
        "batch_size": {"value": 16}})
    settings = settings_from_args(build_parser().parse_args(study_argv(
        space, tmp_path / "studies", "two", tiny_data, cache_dir, "--image-size", "32", "--max-epochs", "1",
        "--num-samples", "4")))
    grid = run_study(settings)
    assert len(grid) == 2 and not grid.errors
    assert sorted(read_results(settings.study_uri)["config/lr"]) == [1.0e-4, 1.0e-3]
    last = [line for line in capsys.readouterr().out.splitlines() if "trials:" in line][-1]
    assert "trials: 0 running, 2 done (0 stopped early) | epochs 2 |" in last


def test_a_resume_finds_the_data_where_it_lies_now(ray_session, tmp_path, cache_dir, capsys):
    """The data moved (or the study goes on on another machine): the resume that cannot find it says to pass
    --data-root, and one given it continues, once the data there is the data the split was made of."""
    data = build_tiny_folder(tmp_path / "data", per_class=8)
    space = write_space(tmp_path / "one.yaml", GOOD_SPACE)
    assert main(study_argv(space, tmp_path / "studies", "moved", data, cache_dir, "--image-size", "32",
                           "--num-samples", "1", "--max-epochs", "1")) == 0
    study_dir = tmp_path / "studies" / "moved"
    moved = data.rename(tmp_path / "elsewhere")
    capsys.readouterr()
    assert main(["--resume", str(study_dir)]) == 2
    assert f"data root {data} does not exist: pass --data-root" in capsys.readouterr().err
    assert main(["--resume", str(study_dir), "--data-root", str(moved), "--cache-dir", str(cache_dir)]) == 0
    assert json.loads((study_dir / "study.json").read_text())["data_roots"] == {"folder": str(data)}  # unchanged
    shutil.copy(moved / "normal" / "normal-00.png", moved / "normal" / "normal-extra.png")
    assert main(["--resume", str(study_dir), "--data-root", str(moved)]) == 2
    assert "the dataset changed since this split was made (1 new images" in capsys.readouterr().err


def test_a_resume_of_a_finished_study_reruns_none_of_the_trials_that_ended_waiting_at_a_rung(ray_session, tmp_path,
                                                                                           tiny_data, cache_dir,
                                                                                           monkeypatch):
    """Promoting ASHA ends a trial waiting at a rung (paused, with no actor) once later arrivals rank above it.
    Tune's snapshot held such trials as PAUSED while their full states were deleted as ended: a resume of the
    finished study started them again, failed to restore them three times, and turned them into errors. Here each
    arrival ranks first, so the first trial waits and is pushed out: promoted, the other two reach epoch 2."""
    from study.asha import PromotingASHA

    monkeypatch.setattr(PromotingASHA, "_ranking", lambda self, rung: list(reversed(self._ranked[rung])))
    space = write_space(tmp_path / "three.yaml", {
        "model": {"value": "resnet50"}, "optimizer": {"value": "adam"}, "lr": {"choice": [1.0e-4, 1.0e-3, 1.0e-2]},
        "batch_size": {"value": 16}})
    study_dir = tmp_path / "studies" / "waited"
    assert main(study_argv(space, tmp_path / "studies", "waited", tiny_data, cache_dir, "--image-size", "32",
                           "--num-samples", "3", "--max-epochs", "2", "--grace-period", "1", "--reduction-factor", "2",
                           "--max-concurrent", "1", "--asha", "promoting")) == 0
    results = read_results(str(study_dir))
    first = results.sort_values("timestamp")["trial_id"].iloc[0]
    epochs = results.groupby("trial_id")["training_iteration"].max().to_dict()
    assert epochs.pop(first) == 1 and set(epochs.values()) == {2}
    (state,) = study_dir.glob("experiment_state-*.json")
    statuses = [json.loads(trial)["status"] for trial, _ in json.loads(state.read_text())["trial_data"]]
    assert statuses == ["TERMINATED"] * 3

    assert main(["--resume", str(study_dir)]) == 0
    assert set(read_trial_events(str(study_dir))["event"]) == {"completed"}
    assert read_results(str(study_dir)).groupby("trial_id")["training_iteration"].max().to_dict() == {
        **epochs, first: 1}


def test_the_trials_a_resume_restores_take_the_resources_typed_with_it(ray_session, tmp_path, tiny_data, cache_dir):
    """Tune's snapshot holds each trial's resources: those typed with --resume replace them."""
    from ray._common.utils import hex_to_binary

    def trial_cpus(study_dir: Path) -> list[float]:
        state = max(study_dir.glob("experiment_state-*.json"))
        trials = [json.loads(trial) for trial, _ in json.loads(state.read_text())["trial_data"]]
        return [pickle.loads(hex_to_binary(trial["placement_group_factory"])).bundles[0]["CPU"] for trial in trials]

    space = write_space(tmp_path / "one.yaml", GOOD_SPACE)
    assert main(study_argv(space, tmp_path / "studies", "cpus", tiny_data, cache_dir, "--image-size", "32",
                           "--num-samples", "1", "--max-epochs", "1", "--cpus-per-trial", "2")) == 0
    study_dir = tmp_path / "studies" / "cpus"
    assert trial_cpus(study_dir) == [2]
    assert main(["--resume", str(study_dir), "--cpus-per-trial", "1"]) == 0
    assert trial_cpus(study_dir) == [1]


def test_a_resume_is_refused_while_another_driver_runs_the_study_and_takes_over_a_killed_ones_lock(
        ray_session, tmp_path, tiny_data, cache_dir, capsys):
    from study.lock import LOCK_FILE, process_start

    space = write_space(tmp_path / "one.yaml", GOOD_SPACE)
    assert main(study_argv(space, tmp_path / "studies", "locked", tiny_data, cache_dir, "--image-size", "32",
                           "--num-samples", "1", "--max-epochs", "1")) == 0
    study_dir = tmp_path / "studies" / "locked"
    assert not (study_dir / LOCK_FILE).exists()  # given back at the end
    first = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])  # stands for a running driver
    try:
        (study_dir / LOCK_FILE).write_text(json.dumps({"host": os.uname().nodename, "pid": first.pid,
                                                       "start": process_start(first.pid)}))
        capsys.readouterr()
        assert main(["--resume", str(study_dir)]) == 2
        assert f"is being run by another driver (pid {first.pid} on this host" in capsys.readouterr().err
    finally:
        first.kill()
        first.wait()
    assert main(["--resume", str(study_dir)]) == 0  # the killed driver's lock is taken over
    assert not (study_dir / LOCK_FILE).exists()


@pytest.mark.parametrize("gpus, device", [("0", "cpu"), ("0.25", "cuda"), ("1", "cuda")])
def test_trials_train_on_the_gpu_ray_gave_them_and_on_the_cpu_where_it_gave_none(tmp_path, tiny_data, cache_dir,
                                                                                 monkeypatch, caplog, gpus, device):
    """Ray 2.60 no longer hides a node's GPUs from trials that reserved none: with --gpus-per-trial 0 each trial
    took GPU 0 ("auto"), unaccounted, as many at once as there are cores. They train on the CPU, and a machine with
    GPUs says how to use them."""
    import torch

    from study.driver import check_local_resources, trial_context

    space = write_space(tmp_path / "one.yaml", GOOD_SPACE)
    settings = settings_from_args(build_parser().parse_args(study_argv(
        space, tmp_path / "studies", "gpu", tiny_data, cache_dir, "--gpus-per-trial", gpus)))
    assert trial_context(settings, {}).defaults["device"] == device
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with caplog.at_level(logging.WARNING, logger="study.driver"):
        check_local_resources(settings)
    warned = "this machine has 2 CUDA GPU(s), which the trials leave alone (--gpus-per-trial 0): pass " \
             "--gpus-per-trial 1, or a fraction such as 0.25 to share a card, to train on them"
    assert (warned in caplog.text) == (gpus == "0")


@pytest.mark.parametrize("stopped", ["while Ray starts", "before Tune's first snapshot"])
def test_a_study_stopped_before_its_trials_started_is_started_by_its_resume(stopped, ray_session, tmp_path, tiny_data,
                                                                            cache_dir, monkeypatch, ray_console,
                                                                            capfd, caplog):
    """Ctrl-C once study.json and the split are saved: while Ray starts (or check_cluster refusing a node), or
    once the Tuner was built (it saved tuner.pkl, its searcher optuna.db) but before Tune's first snapshot
    (experiment_state-*.json). The command says to --resume, and that resume starts the study, with the settings
    and the split it saved, saying so. (The first was refused: 'optuna.db is missing'; the second restored Tune's
    run, which has no trials to continue: Tune printed 'Failed to restore the run state' and started over.)"""
    import study.driver

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    build_tuner = study.driver.build_tuner

    def built_then_interrupted(*args, **kwargs):
        tuner = build_tuner(*args, **kwargs)
        monkeypatch.setattr(tuner, "fit", interrupt)
        return tuner

    space = write_space(tmp_path / "one.yaml", GOOD_SPACE)
    study_dir = tmp_path / "studies" / "early"
    with monkeypatch.context() as patched:
        if stopped == "while Ray starts":
            patched.setattr(study.driver, "connect", interrupt)
        else:
            patched.setattr(study.driver, "build_tuner", built_then_interrupted)
        assert main(study_argv(space, tmp_path / "studies", "early", tiny_data, cache_dir, "--image-size", "32",
                               "--num-samples", "1", "--max-epochs", "1", "--seed", "3")) == 130
    assert capfd.readouterr().err.endswith(f"continue the study with\n  python -m study.run --resume {study_dir}\n")
    saved = {path.name for path in study_dir.iterdir()}
    if stopped == "while Ray starts":
        assert saved == {"events.out.tfevents.study", "splits", "study.json"}
    else:
        assert {"tuner.pkl", "optuna.db", "study.json"} <= saved and not any(
            name.startswith("experiment_state-") for name in saved), saved
    split = (study_dir / "splits" / "folder.csv").read_text()

    with caplog.at_level(logging.INFO, logger="study.driver"):
        assert main(["--resume", str(study_dir)]) == 0, capfd.readouterr().err
    assert (f"{study_dir} was stopped before its trials started (it holds no snapshot of Tune's run): starting "
            "them now, with the settings and the split it saved") in caplog.text
    assert "Failed to restore the run state" not in capfd.readouterr().err
    assert (study_dir / "splits" / "folder.csv").read_text() == split
    assert json.loads((study_dir / "study.json").read_text())["seed"] == 3
    assert list(read_results(str(study_dir))["training_iteration"]) == [1]
    assert list(read_trial_events(str(study_dir))["event"]) == ["completed"]


@pytest.mark.parametrize("refused_by", ["connect", "check_cluster"])
def test_a_new_study_whose_start_up_fails_says_the_resume_command_that_starts_it(refused_by, tmp_path, tiny_data,
                                                                                 cache_dir, monkeypatch, capsys):
    """Refused once study.json and the split are saved (a cluster it cannot join, a node without the data): the
    same command again is refused ('already holds a study'), and the error did not say that --resume starts it."""
    import study.driver
    from study.driver import tune_state_saved

    refusal = {"connect": "cannot reach the Ray cluster at ray://10.0.0.5:10001 (--address): Connection refused; "
                          "check --address",
               "check_cluster": f"node bbbbbbbb has no dataset at {tiny_data}: stage it there first"}[refused_by]

    def refuse(*args, **kwargs):
        raise CxrError(refusal)

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt  # stands for the run, which the test does not need

    space = write_space(tmp_path / "one.yaml", GOOD_SPACE)
    study_dir = tmp_path / "studies" / "refused"
    with monkeypatch.context() as patched:
        patched.setattr(study.driver, "connect", lambda *args, **kwargs: False)
        patched.setattr(study.driver, refused_by, refuse)
        assert main(study_argv(space, tmp_path / "studies", "refused", tiny_data, cache_dir, "--image-size", "32")) == 2
    err = capsys.readouterr().err
    assert err.endswith(f"error: {refusal}\nthe study's settings and split are saved in {study_dir}: once the cause "
                        f"is fixed, start it with\n  python -m study.run --resume {study_dir}\n"), err
    assert (study_dir / "splits" / "folder.csv").is_file() and not tune_state_saved(str(study_dir))

    monkeypatch.setattr(study.driver, "connect", interrupt)
    assert main(["--resume", str(study_dir)]) == 130  # the printed command goes past the start-up it failed in
    err = capsys.readouterr().err
    assert "already holds a study" not in err
    assert err.endswith(f"continue the study with\n  python -m study.run --resume {study_dir}\n"), err


def failing_while(marker: Path, from_epoch: int = 1, once: bool = False):
    """study.trainable.TrialTrainable, raising from its epoch `from_epoch` + 1 on while `marker` exists (with
    `once`, removing it as it raises). A class made here is pickled by value into the Ray workers."""
    from study.trainable import TrialTrainable

    class FailsWhileMarked(TrialTrainable):
        def step(self):
            if self.run.epoch >= from_epoch and marker.exists():
                if once:
                    marker.unlink()
                raise RuntimeError(f"failing while {marker} exists")
            return super().step()

    return FailsWhileMarked


def test_tensorboard_shows_a_trial_that_errored_and_that_a_resume_finished_as_finished(ray_session, tmp_path,
                                                                                        cache_dir, monkeypatch,
                                                                                        capsys):
    """The trial errored in its second epoch (--max-failures 0), after a full state of its first; the study
    said so with the command that runs it again (it ended 'study finished' alone), its error line named its
    traceback in the study (it named Tune's staging copy under Ray's temporary folder), and that resume ran it
    from there to its end. The HPARAMS tab showed it failed: TensorBoard's hparams plugin keeps the first
    status it reads of a trial, and the first run's events file holds the failure."""
    import study.driver

    marker = tmp_path / "fail"
    marker.touch()
    monkeypatch.setattr(study.driver, "TrialTrainable", failing_while(marker))
    data = build_tiny_folder(tmp_path / "data", per_class=8)
    space = write_space(tmp_path / "one.yaml", GOOD_SPACE)
    argv = study_argv(space, tmp_path / "studies", "errored", data, cache_dir, "--image-size", "32",
                      "--num-samples", "1", "--max-epochs", "2", "--checkpoint-every", "1", "--max-failures", "0")
    settings = settings_from_args(build_parser().parse_args(argv))
    assert main(argv) == 0  # the study ran to its end, and says what its resume does
    out, err = capsys.readouterr()
    # on stderr, which a user whose stdout goes to a file still sees
    assert ("\n1 trial errored (its traceback: error.txt in its trial folder); once the cause is fixed, "
            "the resume runs it again, from its last full state:\n  python -m study.run --resume "
            f"{settings.study_uri}\nuntil then, the analysis of the validation split alone (the test "
            "split waits for the search to end):\n  python -m study.analyze "
            f"{settings.study_uri} --split val\n") in err, err
    assert "trial errored" not in out and "error after" not in out, out
    (traceback,) = Path(settings.study_uri).glob("*/error.txt")
    # the console's line names it where it lasts, not Tune's staging copy in Ray's temporary files
    assert re.search(rf"^\[ *\d+:\d\d\] error after 1 epoch: .*; its traceback: {re.escape(str(traceback))}$", err,
                     re.MULTILINE), err
    marker.unlink()
    assert main(["--resume", settings.study_uri]) == 0
    assert "trial errored" not in capsys.readouterr().err

    study_dir = Path(settings.study_uri)
    _, sessions = hparams_tab(study_dir)
    [session] = sessions.values()
    assert session["status"] == "STATUS_SUCCESS"
    [trial_dir] = trial_dirs(study_dir)
    curve = tensorboard_scalars(trial_dir).Scalars(settings.metric)
    assert [point.step for point in curve] == [1, 2]


def test_a_retried_trial_names_its_traceback_in_one_line_and_keeps_it_out_of_the_console(ray_session, tmp_path,
                                                                                          cache_dir, monkeypatch,
                                                                                          ray_console, capsys):
    """Tune retried the trial (--max-failures 1) and logged 'Trial task failed for trial ...' with the whole
    traceback into the console, beside the console's own line that names the error.txt holding it."""
    import study.driver

    marker = tmp_path / "fail"
    marker.touch()
    monkeypatch.setattr(study.driver, "TrialTrainable", failing_while(marker, from_epoch=0, once=True))
    data = build_tiny_folder(tmp_path / "data", per_class=8)
    space = write_space(tmp_path / "one.yaml", GOOD_SPACE)
    argv = study_argv(space, tmp_path / "studies", "retried", data, cache_dir, "--image-size", "32",
                      "--num-samples", "1", "--max-epochs", "1", "--max-failures", "1")
    assert main(argv) == 0
    printed = capsys.readouterr()
    # The trial completed on its retry: its error.txt became recovered-errors.txt (study.results).
    (kept,) = Path(settings_from_args(build_parser().parse_args(argv)).study_uri).glob("*/recovered-errors.txt")
    assert f"failing while {marker} exists" in kept.read_text()
    assert re.search(rf"^\[ *\d+:\d\d\] retrying after error \(1 of 1\): .*; its traceback: "
                     rf"{re.escape(str(kept.parent / 'error.txt'))}$", printed.err, re.MULTILINE), printed.err
    assert re.search(r"^\[ *\d+:\d\d\] done, 1 epoch ", printed.out, re.MULTILINE), printed.out
    # The test session's Ray streams what its worker processes print, tagged "(Class pid=N)": a study's own Ray
    # keeps that in its session logs (log_to_driver only with -v), so those lines are not the console's.
    for shown in (printed.out, printed.err):
        console = "\n".join(line for line in shown.splitlines() if not re.search(r"\(\w+ pid=\d+\)|\(raylet\)", line))
        assert "Traceback" not in console and "failing while" not in console, console


def test_dataset_options_are_saved_and_reused_by_resume_and_analysis(ray_session, tmp_path, make_csv_dataset,
                                                                    cache_dir, capsys):
    """A user's CSV with its own column names and a patient column: the options reach the split (by
    patient), are saved in study.json, and --resume and the analysis read the data with them (with the
    loader's defaults they could not: the CSV has no 'path' or 'label' column)."""
    from study.analyze import analyze

    csv_path = make_csv_dataset(columns=("file", "diagnosis", "subject"))
    space = write_space(tmp_path / "one.yaml", GOOD_SPACE)
    argv = ["--space", str(space), "--dataset", "csv", "--data-root", str(csv_path), "--storage", str(tmp_path),
            "--name", "csv-study", "--cache-dir", str(cache_dir), "--image-size", "32", "--num-samples", "1",
            "--max-epochs", "1"]
    assert main(argv) == 2 and "--dataset-option" in capsys.readouterr().err  # the error names the flag
    options = ["--dataset-option", "path_column=file", "--dataset-option", "label_column=diagnosis",
               "--dataset-option", "patient_column=subject"]
    assert main([*argv, *options]) == 0
    study_dir = tmp_path / "csv-study"
    saved = json.loads((study_dir / "study.json").read_text())["dataset_options"]
    assert saved == {"csv": {"path_column": "file", "label_column": "diagnosis", "patient_column": "subject"}}
    split = pd.read_csv(study_dir / "splits" / "csv.csv")
    assert split["patient"].nunique() == 16 and split["patient"].str.startswith("patient-").all()
    assert (split.groupby("patient")["split"].nunique() == 1).all()

    assert main(["--resume", str(study_dir)]) == 0, capsys.readouterr().err
    analysis = analyze(study_dir, resamples=0, importance="none", formats=("md",), cache_dir=str(cache_dir))
    assert [(s.model, len(s.evaluation.y_true)) for s in analysis.selected] == [
        ("resnet50", int((split["split"] == "test").sum()))]


def test_split_fractions_are_saved_and_a_class_of_one_test_patient_is_warned_of(ray_session, tmp_path, cache_dir,
                                                                                caplog):
    """The embedded sample's split of seed 2 (15 % of the patients each for validation and test) gives No
    Finding one validation and one test patient, whose figures no bootstrap moves and on whose images the
    selection by macro F1 rests: the study says so before it trains. --val-fraction 0.2 --test-fraction
    0.3 gives it two and three; the fractions are saved, and the analysis, which remakes the split to check
    the study's file, remakes it with them."""
    from study.analyze import analyze
    from study.driver import prepare_splits

    space = write_space(tmp_path / "one.yaml", GOOD_SPACE)
    argv = ["--space", str(space), "--storage", str(tmp_path), "--cache-dir", str(cache_dir), "--image-size", "32"]
    default = settings_from_args(build_parser().parse_args([*argv, "--name", "default", "--seed", "2"]))
    with caplog.at_level(logging.WARNING, logger="study.driver"):
        prepare_splits(default, resume=False)
    assert "fewer than 2 patients on the test split for No Finding (1)" in caplog.text
    assert "--test-fraction (now 0.15)" in caplog.text
    assert "fewer than 2 patients on the val split for No Finding (1): ASHA and Optuna" in caplog.text

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="study.driver"):
        assert main([*argv, "--name", "wider", "--val-fraction", "0.2", "--test-fraction", "0.3", "--num-samples", "1",
                     "--max-epochs", "1"]) == 0
    assert "fewer than 2 patients" not in caplog.text
    study_dir = tmp_path / "wider"
    saved = json.loads((study_dir / "study.json").read_text())
    assert (saved["val_fraction"], saved["test_fraction"]) == (0.2, 0.3)
    split = pd.read_csv(study_dir / "splits" / "covid-chestxray-3class.csv")
    test = split[split["split"] == "test"]
    assert test.loc[test["stratum"] == "No Finding", "patient"].nunique() == 3
    assert 0.25 < test["patient"].nunique() / split["patient"].nunique() < 0.35
    analysis = analyze(study_dir, resamples=0, importance="none", formats=("md",), cache_dir=str(cache_dir))
    assert [len(s.evaluation.y_true) for s in analysis.selected] == [len(test)]


# ------------------------------------------------------------------ kill the driver, then resume

def snapshot(study_uri: str | Path) -> dict[str, tuple[str, int | None, int | None]]:
    """trial id -> (status, last reported iteration, iteration of its latest full state) in Tune's latest
    experiment snapshot (a folder or bucket).

    The two iterations differ while a full state is being written: Tune processes a trial's result, then asks
    the trial for its full state in a second call, and a snapshot taken in between names the older state (the
    one a resume continues from)."""
    files = sorted(entry.uri for entry in storage.listing(str(study_uri))
                   if entry.name.startswith("experiment_state-") and entry.name.endswith(".json"))
    if not files:
        return {}
    try:
        state = storage.read_json(files[-1])
    except (OSError, ValueError):  # being rewritten
        return {}
    trials = {}
    for trial, runtime in state["trial_data"]:
        trial = json.loads(trial) if isinstance(trial, str) else trial
        runtime = json.loads(runtime) if isinstance(runtime, str) else runtime
        last_result = runtime.get("last_result") or {}
        last_result = json.loads(last_result) if isinstance(last_result, str) else last_result
        full_state = pickle.loads(bytes.fromhex(runtime["checkpoint_manager"]["value"])).latest_checkpoint_result
        trials[trial["trial_id"]] = (trial["status"], last_result.get("training_iteration"),
                                     full_state.metrics.get("training_iteration") if full_state else None)
    return trials


def raw_parts(study_uri: str | Path) -> pd.DataFrame:
    """Every row of every Parquet part (no de-duplication), with the run (session) that wrote it."""
    frames = []
    for entry in storage.listing(storage.join(str(study_uri), "results")):
        if entry.name.endswith(".parquet"):
            frame = pd.read_parquet(io.BytesIO(storage.read_bytes(entry.uri)))
            frames.append(frame.assign(session=entry.name.rsplit("-", 1)[0]))
    return pd.concat(frames, ignore_index=True)


def wait_for_a_finished_and_a_running_trial(process: subprocess.Popen, study_uri: str | Path, log: Path,
                                           timeout: float = 400) -> tuple[list[str], list[str]]:
    """Poll a study run by `process` until Tune's snapshot shows a finished trial (its end recorded)
    and a running one with a full state (after an epoch it reported); returns their ids (done, running)."""
    deadline = time.monotonic() + timeout
    while True:
        assert process.poll() is None, "the run ended before it could be killed:\n" + log.read_text()[-3000:]
        assert time.monotonic() < deadline, "no finished trial and second trial in time:\n" + log.read_text()[-3000:]
        trials_now = snapshot(study_uri)
        done = [t for t, (status, _, _) in trials_now.items() if status == "TERMINATED"]
        running = [t for t, (status, _, full_state) in trials_now.items() if status == "RUNNING" and full_state]
        if done and running:
            events = read_trial_events(str(study_uri))
            reported = read_results(str(study_uri))
            if (len(reported) and set(done) <= set(events.loc[events["event"] == "completed", "trial_id"])
                    and set(running) <= set(reported["trial_id"])):
                return done, running
        time.sleep(0.2)


def _kill_leftovers(ray_tmp: str) -> list[int]:
    """SIGKILL processes this test started that outlived their group: their command line or their environment
    names our RAY_TMPDIR (Ray's trial workers retitle themselves "ray::...", and would otherwise go on
    training, and writing, until they notice that their Ray is gone)."""
    killed = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().decode(errors="replace")
            environ = (proc / "environ").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if ray_tmp in cmdline or f"RAY_TMPDIR={ray_tmp}\0" in environ + "\0":
            try:
                os.kill(int(proc.name), signal.SIGKILL)
                killed.append(int(proc.name))
            except ProcessLookupError:
                pass
    return killed


def _gcs_server(ray_tmp: str) -> int:
    """The pid of the GCS of the Ray instance whose session lies under `ray_tmp`."""
    found = []
    for proc in Path("/proc").iterdir():
        with contextlib.suppress(OSError):
            cmdline = (proc / "cmdline").read_bytes()
            if b"gcs_server" in cmdline and ray_tmp.encode() in cmdline:
                found.append(int(proc.name))
    (pid,) = found
    return pid


@contextlib.contextmanager
def study_commands(cwd: Path, env: dict[str, str] | None = None):
    """Runs `python -m study.run ARGS` (or another command: `.start(args, log, module="study.confirm")`) in
    subprocesses with a Ray instance of their own (a private RAY_TMPDIR, no RAY_ADDRESS) and `env` added; `.kill(process)` SIGKILLs one with its
    Ray, as a crash would. At the end every process left and its Ray are killed."""
    ray_tmp = tempfile.mkdtemp(prefix="cxr-ray-", dir="/tmp")  # short: Ray's socket paths must stay under 107 chars
    full_env = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}
    full_env.update(RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0", RAY_TMPDIR=ray_tmp, PYTHONUNBUFFERED="1",
                    **(env or {}))
    processes: list[subprocess.Popen] = []

    def start(args: list[str], log: Path, module: str = "study.run") -> subprocess.Popen:
        with log.open("w") as out:
            process = subprocess.Popen([sys.executable, "-m", module, *args], cwd=cwd, env=full_env,
                                       stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        processes.append(process)
        return process

    def kill(process: subprocess.Popen) -> None:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        _kill_leftovers(ray_tmp)

    try:
        yield SimpleNamespace(start=start, kill=kill, env=full_env, gcs=lambda: _gcs_server(ray_tmp))
    finally:
        for process in processes:
            if process.poll() is None:
                kill(process)
        _kill_leftovers(ray_tmp)
        shutil.rmtree(ray_tmp, ignore_errors=True)


def test_kill_and_resume_continues_without_rerunning(tmp_path, tiny_data, cache_dir):
    """SIGKILL the CLI driver (and its Ray) once one trial has finished and a second has reported
    an epoch; `--resume` finishes the study: the finished trial is not rerun, the second continues
    from its checkpoint, the third starts fresh, the first run's results are kept, and the searcher
    still knows every trial."""
    space = write_space(tmp_path / "resume.yaml", {
        "model": {"value": "resnet50"}, "optimizer": {"value": "adam"}, "lr": {"loguniform": [1.0e-4, 1.0e-3]},
        "batch_size": {"value": 16}})
    storage, epochs, samples = tmp_path / "studies", 3, 3
    study_dir = storage / "resume"
    argv = study_argv(space, storage, "resume", tiny_data, cache_dir, "--image-size", "32", "--num-samples",
                      str(samples), "--max-epochs", str(epochs), "--grace-period", str(epochs),
                      "--max-concurrent", "1", "--num-cpus", "2", "--seed", "0", "--checkpoint-every", "1")
    with study_commands(REPO) as commands:
        first = commands.start(argv, tmp_path / "first.log")
        started = time.monotonic()
        done, running = wait_for_a_finished_and_a_running_trial(first, study_dir, tmp_path / "first.log")
        commands.kill(first)
        print(f"killed the first run after {time.monotonic() - started:.0f} s")
        (finished,), (unfinished,) = done, running
        status, _, checkpointed = snapshot(study_dir)[unfinished]  # what --resume restores (a later full state
        assert status == "RUNNING" and 1 <= checkpointed < epochs  # may have come in since the poll)
        before = raw_parts(study_dir)
        assert set(before["trial_id"]) == {finished, unfinished}
        assert sorted(before.loc[before["trial_id"] == finished, "epoch"]) == list(range(1, epochs + 1))
        assert before["session"].nunique() == 1

        # The study folder moves (and is renamed) before the resume: a copy to another disk or machine.
        moved = tmp_path / "elsewhere" / "resume-moved"
        moved.parent.mkdir()
        shutil.move(study_dir, moved)
        study_dir = moved
        resumed_at = time.monotonic()
        second = commands.start(["--resume", str(study_dir), "--num-cpus", "2"], tmp_path / "resume.log")
        assert second.wait(timeout=400) == 0, (tmp_path / "resume.log").read_text()[-3000:]
        print(f"the resumed run took {time.monotonic() - resumed_at:.0f} s")

    assert not (storage / "resume").exists(), "the resumed run wrote to the study's old place"
    after = raw_parts(study_dir)
    # the first run's parts are all still there, unchanged: resuming appends
    kept = after[after["session"] == before["session"].iloc[0]]
    pd.testing.assert_frame_equal(kept.reset_index(drop=True), before.reset_index(drop=True))
    new = after[after["session"] != before["session"].iloc[0]]
    assert new["session"].nunique() == 1

    trials = set(after["trial_id"])
    assert len(trials) == samples and len(trial_dirs(study_dir)) == samples
    assert finished not in set(new["trial_id"]), "the finished trial ran again"
    resumed = new.loc[new["trial_id"] == unfinished, "epoch"].tolist()
    assert resumed == list(range(checkpointed + 1, epochs + 1)), \
        f"the unfinished trial reran from scratch or skipped epochs: {resumed} (checkpoint at {checkpointed})"
    assert new.loc[new["trial_id"] == unfinished, "training_iteration"].tolist() == resumed
    assert kept.loc[kept["trial_id"] == unfinished, "epoch"].tolist()[:checkpointed] == list(range(1, checkpointed + 1))
    (fresh,) = trials - {finished, unfinished}
    assert new.loc[new["trial_id"] == fresh, "epoch"].tolist() == list(range(1, epochs + 1))

    results = read_results(str(study_dir))
    assert len(results) == samples * epochs
    assert results.groupby("trial_id")["training_iteration"].apply(list).tolist() == [list(range(1, epochs + 1))] * 3
    events = read_trial_events(str(study_dir))
    assert set(events["trial_id"]) == trials and set(events["event"]) == {"completed"}

    # The Optuna study stored with the study (optuna.db, read by Optuna itself) holds every trial once,
    # complete, with its best epoch's value, including the trial that finished before the kill.
    assert_optuna_study_matches(study_dir / "optuna.db", "resume", results)


@pytest.mark.skipif(not hasattr(os, "pidfd_open"), reason="pidfds are Linux's")
def test_only_what_ends_with_or_after_a_sigterm_tells_that_it_reached_the_ray_instance():
    """What tells the driver that a SIGTERM reached its Ray instance too (study.driver.exit_if_ray_is_gone, which
    then ends the study at once, unsaved): one of the instance's processes (children in the driver's process group
    running Ray's programs) ending after the signal, or ended by it; not one that had ended otherwise, before the
    study or during it (a crashed monitor), nor another program's process, either of which would turn a plain
    `kill` into an exit without Tune's last save."""
    import ray

    from study.driver import RayInstanceProcesses

    def ray_program(code: str) -> subprocess.Popen:  # a process whose command line names Ray's folder, as Ray's do
        return subprocess.Popen([sys.executable, "-c", code, os.path.dirname(ray.__file__)])

    def exited(process: subprocess.Popen) -> subprocess.Popen:  # not reaped, as Ray leaves its processes
        while Path(f"/proc/{process.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
            time.sleep(0.01)
        return process

    crashed_before = exited(ray_program("raise SystemExit(1)"))
    crashes_during, ended_by_it, ends_after = (ray_program("import time; time.sleep(600)") for _ in range(3))
    not_ray = subprocess.Popen(["sleep", "600"])
    instance = RayInstanceProcesses.of_this_command()
    try:
        assert instance.ended(wait=0) == []  # crashed_before is not watched
        not_ray.terminate()
        crashes_during.kill()
        ended_by_it.terminate()
        exited(not_ray), exited(crashes_during), exited(ended_by_it)
        assert len(instance.ended(wait=0)) == 2  # not not_ray
        instance.forget_ended(unless_by=signal.SIGTERM)  # the watcher's first step, once the SIGTERM came
        assert len(instance.ended(wait=0)) == 1  # ended_by_it
        ends_after.terminate()
        exited(ends_after)
        assert len(instance.ended(wait=0)) == 2
    finally:
        instance.close()
        for process in (crashed_before, crashes_during, ended_by_it, ends_after, not_ray):
            process.kill()
            process.wait()


@pytest.mark.parametrize("stop", ["ctrl-c", "sigterm", "sigterm-to-the-group"])
def test_an_interrupted_study_says_so_with_its_resume_command_and_the_resume_finishes_it(tmp_path, tiny_data,
                                                                                         cache_dir, stop):
    """Ctrl-C (SIGINT to the command's process group, as a terminal sends it), or SIGTERM to the command
    (`kill`, a batch scheduler's time limit), once one trial has finished and a second has reported an
    epoch: the study says it was interrupted, not finished, counts the second trial apart, prints the
    command that continues it (not Tune's Python API) and exits 130; after Ctrl-C, that command
    finishes the study without rerunning the finished trial (the same resume after SIGTERM: not run).
    SIGTERM to the whole process group (`timeout`) stops the command's Ray instance too: the command says
    so with the same resume command at once (not after Ray's minute of retries, nor with status 1 and no
    word, which a GCS slow to stop on a loaded machine brought about: the test holds the GCS stopped for
    3 s across the signal), and the resume finishes."""
    space = write_space(tmp_path / "ctrl-c.yaml", {
        "model": {"value": "resnet50"}, "optimizer": {"value": "adam"}, "lr": {"loguniform": [1.0e-4, 1.0e-3]},
        "batch_size": {"value": 16}})
    epochs = 3
    study_dir = tmp_path / "studies" / "ctrl-c"
    argv = study_argv(space, tmp_path / "studies", "ctrl-c", tiny_data, cache_dir, "--image-size", "32",
                      "--num-samples", "2", "--max-epochs", str(epochs), "--grace-period", str(epochs),
                      "--max-concurrent", "1", "--num-cpus", "2", "--seed", "0", "--checkpoint-every", "1")
    with study_commands(REPO) as commands:
        first = commands.start(argv, tmp_path / "first.log")
        (finished,), (interrupted,) = wait_for_a_finished_and_a_running_trial(first, study_dir, tmp_path / "first.log")
        if stop == "ctrl-c":
            os.killpg(first.pid, signal.SIGINT)
        elif stop == "sigterm":
            first.send_signal(signal.SIGTERM)
        else:
            gcs = commands.gcs()
            os.kill(gcs, signal.SIGSTOP)
            os.killpg(first.pid, signal.SIGTERM)
            time.sleep(3)
            with contextlib.suppress(ProcessLookupError):  # the command ended, and its Ray with it
                os.kill(gcs, signal.SIGCONT)
        code = first.wait(timeout=120 if stop != "sigterm-to-the-group" else 30)
        log = (tmp_path / "first.log").read_text()
        assert code == 130, log[-3000:]
        if stop == "sigterm-to-the-group":
            assert log.rstrip().endswith(f"so its trials stopped where they were; what they reported is kept. "
                                         f"Continue with\n  python -m study.run --resume {study_dir}"), log[-3000:]
            assert "Failed to connect to GCS" not in log, log[-3000:]
        else:
            assert "study interrupted after" in log and "study finished" not in log, log[-3000:]
            assert re.search(r"trials: 0 running, 1 done \(0 stopped early\), 1 interrupted", log), log[-3000:]
            assert log.rstrip().endswith(f"interrupted: 1 trial unfinished; continue the study with\n"
                                         f"  python -m study.run --resume {study_dir}\n"
                                         "until then, the analysis of the validation split alone (the test split "
                                         "waits for the search to end):\n"
                                         f"  python -m study.analyze {study_dir} --split val"), log[-3000:]
            assert f"analysis:    python -m study.analyze {study_dir}\n" not in log, log[-3000:]
        assert "Tuner.restore" not in log
        assert set(read_trial_events(str(study_dir))["trial_id"]) == {finished}
        if stop == "sigterm":
            return

        second = commands.start(["--resume", str(study_dir), "--num-cpus", "2"], tmp_path / "resume.log")
        assert second.wait(timeout=400) == 0, (tmp_path / "resume.log").read_text()[-3000:]
    resumed = (tmp_path / "resume.log").read_text()
    assert "study finished in" in resumed and "unfinished" not in resumed, resumed[-3000:]
    events = read_trial_events(str(study_dir))
    assert set(events["trial_id"]) == {finished, interrupted} and set(events["event"]) == {"completed"}
    results = read_results(str(study_dir))
    assert results.groupby("trial_id")["training_iteration"].apply(list).to_dict() == \
        {finished: list(range(1, epochs + 1)), interrupted: list(range(1, epochs + 1))}
    assert raw_parts(study_dir).query("trial_id == @finished")["session"].nunique() == 1, "the finished trial reran"


def epochs_the_uninterrupted_study_trains(results: pd.DataFrame, num_trials: int, max_epochs: int) -> list[int]:
    """The epochs each trial of a --max-concurrent 1 study of PromotingASHA (grace period 1, reduction factor 2,
    val/f1_macro tie-broken by val/loss) trains when nothing interrupts it: the trials' measured curves, in the
    order they started, replayed through a fresh scheduler as Tune runs one trial at a time. A curve is padded
    with its last epoch, which the replay reaches only where the study's decisions differed from it."""
    order = results.groupby("trial_id")["timestamp"].min().sort_values().index
    curves = []
    for trial_id in order:
        trial = results[results["trial_id"] == trial_id].sort_values("training_iteration")
        curve = list(zip(trial["val/f1_macro"], trial["val/loss"]))
        curves.append(curve + curve[-1:] * (max_epochs - len(curve)))
    scheduler = PromotingASHA(max_running=1, num_trials=num_trials, time_attr="training_iteration",
                              max_t=max_epochs, grace_period=1, reduction_factor=2, tie_break="val/loss",
                              tie_break_mode="min")
    scheduler.set_search_properties("val/f1_macro", "max")
    return replay_one_at_a_time(scheduler, curves, "val/f1_macro", "val/loss")


def test_a_resumed_study_makes_the_uninterrupted_rung_decisions_one_trial_at_a_time(tmp_path, tiny_data, cache_dir):
    """Ctrl-C while a trial waits at a rung and another trains (--max-concurrent 1); the resume restores ASHA's
    rungs with the study: every trial trains the epochs it trains in an uninterrupted study (the waiting trial is
    not restarted unless the rung promotes it, later trials are ranked against the earlier ones), and no two
    trials train at once (Tune would start every restored trial)."""
    space = write_space(tmp_path / "rungs.yaml", {
        "model": {"value": "resnet50"}, "optimizer": {"value": "adam"}, "lr": {"loguniform": [1.0e-4, 1.0e-2]},
        "batch_size": {"value": 16}, "pretrained": {"value": False}})
    samples, epochs = 6, 4
    study_dir = tmp_path / "studies" / "rungs"
    argv = study_argv(space, tmp_path / "studies", "rungs", tiny_data, cache_dir, "--image-size", "32",
                      "--num-samples", str(samples), "--max-epochs", str(epochs), "--grace-period", "1",
                      "--reduction-factor", "2", "--max-concurrent", "1", "--num-cpus", "2", "--seed", "0")
    # A snapshot at every step of Tune's loop (10 s or more apart otherwise): the seconds in which one trial
    # waits at a rung while another trains then always reach the snapshot this test watches.
    with study_commands(REPO, env={"TUNE_GLOBAL_CHECKPOINT_S": "0"}) as commands:
        first = commands.start(argv, tmp_path / "first.log")
        deadline = time.monotonic() + 300
        while not {"PAUSED", "RUNNING"} <= {status for status, _, _ in snapshot(study_dir).values()}:
            assert first.poll() is None and time.monotonic() < deadline, (tmp_path / "first.log").read_text()[-3000:]
            time.sleep(0.2)
        os.killpg(first.pid, signal.SIGINT)
        assert first.wait(timeout=120) == 130, (tmp_path / "first.log").read_text()[-3000:]
        assert "PAUSED" in {status for status, _, _ in snapshot(study_dir).values()}  # what the resume restores
        second = commands.start(["--resume", str(study_dir), "--num-cpus", "2"], tmp_path / "resume.log")
        assert second.wait(timeout=400) == 0, (tmp_path / "resume.log").read_text()[-3000:]

    results = read_results(str(study_dir))
    order = results.groupby("trial_id")["timestamp"].min().sort_values().index
    trained = results.groupby("trial_id")["training_iteration"].max()[order].tolist()
    assert len(trained) == samples
    assert trained == epochs_the_uninterrupted_study_trains(results, samples, epochs)
    # Epochs as (start, end) seconds; Tune's timestamps are whole seconds, so two in a row may seem to overlap by
    # less than one.
    parts = raw_parts(study_dir)
    resumed = parts[parts["session"] == sorted(parts["session"].unique())[-1]]
    spans = list(zip(resumed["trial_id"], resumed["timestamp"] - resumed["time_this_iter_s"], resumed["timestamp"]))
    overlaps = [(min(end, other_end) - max(start, other_start), trial, other)
                for trial, start, end in spans for other, other_start, other_end in spans if trial < other]
    assert max(overlaps, default=(0,))[0] < 1, max(overlaps)


@pytest.mark.parametrize("settings_saved", [False, True])
def test_a_second_ctrl_c_says_whether_there_is_a_study_to_resume(tmp_path, capsys, tiny_data, cache_dir, monkeypatch,
                                                                 settings_saved):
    """A second Ctrl-C (Tune's first message invites it) ends tuner.fit() with KeyboardInterrupt: the
    command says what to do, not a traceback, and exits 130."""
    import study.driver
    from study.settings import save_settings

    def interrupted(settings, **kwargs):
        if settings_saved:
            save_settings(settings)
        raise KeyboardInterrupt

    monkeypatch.setattr(study.driver, "run_study", interrupted)
    space = write_space(tmp_path / "space.yaml", GOOD_SPACE)
    assert main(study_argv(space, tmp_path / "studies", "twice", tiny_data, cache_dir, "--image-size", "32")) == 130
    err = capsys.readouterr().err
    if settings_saved:
        assert err.endswith(f"interrupted; continue the study with\n  python -m study.run --resume "
                            f"{tmp_path / 'studies' / 'twice'}\n"), err
    else:
        assert err.endswith("interrupted before the study started: nothing to continue\n"), err


@pytest.mark.parametrize("settings_saved", [False, True])
def test_a_full_disk_stops_the_study_with_what_to_do_not_a_traceback(tmp_path, capsys, tiny_data, cache_dir,
                                                                     monkeypatch, settings_saved):
    """Tune stops at the first file it cannot write (here its searcher's state, under /tmp/ray, when a bench run
    filled the disk): that ended in Tune's traceback. The command names the file, says nothing reported is lost
    and what to do, and exits 1."""
    import errno

    import study.driver
    from study.settings import save_settings

    def disk_full(settings, **kwargs):
        if settings_saved:
            save_settings(settings)
        raise OSError(errno.ENOSPC, "No space left on device", "/tmp/ray/staging/searcher-state-x.pkl")

    monkeypatch.setattr(study.driver, "run_study", disk_full)
    space = write_space(tmp_path / "space.yaml", GOOD_SPACE)
    assert main(study_argv(space, tmp_path / "studies", "full", tiny_data, cache_dir, "--image-size", "32")) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: /tmp/ray/staging/searcher-state-x.pkl: No space left on device: the study stopped "
                          "there; what its trials reported is kept. Free space there"), err
    assert err.endswith(f", then continue it with\n  python -m study.run --resume {tmp_path / 'studies' / 'full'}\n"
                        if settings_saved else ", then start it again\n"), err


@pytest.mark.parametrize("storage_uri, reader", [("s3://bucket/studies", "boto3"), ("gs://bucket/studies", "gcsfs"),
                                                 ("/tmp/studies", None)])
def test_the_tensorboard_line_names_the_package_tensorboard_needs_for_a_bucket(storage_uri, reader, monkeypatch):
    from study.driver import watch_commands

    settings = settings_from_args(build_parser().parse_args(["--storage", storage_uri, "--name", "s"]))
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == reader else find_spec(name, *a))
    line = watch_commands(settings, running=True)[0]
    expected = f"tensorboard: tensorboard --logdir {storage_uri}/s"
    assert line == (expected + f"  (TensorBoard reads this with {reader}: pip install {reader})" if reader else expected)


@pytest.mark.parametrize("study_uri, command", [
    ("s3://bucket/studies/paper grid", "python -m study.analyze 's3://bucket/studies/paper grid' --out "
                                       "'paper grid-report'"),
    ("/tmp/studies/demo", "python -m study.analyze /tmp/studies/demo"),
])
def test_the_printed_analysis_command_runs_as_printed(study_uri, command):
    """A study in a bucket has no local folder for its report: the command it prints names one (--out)."""
    from study.driver import analysis_line

    assert analysis_line(study_uri) == f"analysis:    {command}"


def test_an_unfinished_studys_analysis_command_names_the_option_it_needs():
    """study.analyze refuses the test split of an unfinished search unless --split val or --allow-unfinished."""
    from study.driver import analysis_line

    assert analysis_line("/s/demo", search_finished=False).endswith("\n  python -m study.analyze /s/demo --split val")
    assert analysis_line("/s/demo", search_finished=False, allow_unfinished=True) == (
        "analysis of the best trials so far (the search is unfinished):\n"
        "  python -m study.analyze /s/demo --allow-unfinished")


def test_a_bucket_studys_validation_and_test_analyses_go_to_two_report_folders():
    """As a local study's do (report/, report-val/): the validation look printed while the search runs wrote
    into the folder the test analysis printed at its end names, and the later one replaced the earlier."""
    from study.driver import analysis_line

    assert analysis_line("s3://b/s/demo", search_finished=False).endswith(
        "\n  python -m study.analyze s3://b/s/demo --split val --out demo-report-val")
    assert analysis_line("s3://b/s/demo").endswith("python -m study.analyze s3://b/s/demo --out demo-report")
    assert analysis_line("s3://b/s/demo", search_finished=False, allow_unfinished=True).endswith(
        "python -m study.analyze s3://b/s/demo --allow-unfinished --out demo-report")


def test_printed_commands_quote_a_study_path_with_a_space(tmp_path):
    """What the study prints to copy into a shell survives a folder name with a space."""
    from study.driver import watch_commands

    settings = settings_from_args(build_parser().parse_args(["--storage", str(tmp_path), "--name", "my study"]))
    tensorboard, optuna_line = watch_commands(settings, running=True)
    assert tensorboard == f"tensorboard: tensorboard --logdir '{tmp_path}/my study'"
    assert f"optuna-dashboard 'sqlite:///{tmp_path}/my study/optuna.db'" in optuna_line
    # a local folder may hold a space; a storage URI cannot
    with pytest.raises(CxrError, match=r"^--name 'my study': ' ' cannot be part of a storage URI"):
        settings_from_args(build_parser().parse_args(["--storage", "s3://bucket/studies", "--name", "my study"]))


def test_unfinished_trials_are_those_with_no_end_recorded():
    from study.driver import unfinished_trials

    grid = [SimpleNamespace(path=f"/s/{folder}") for folder in
            ("77582f4e_alexnet_sgd", "214e37ca_vgg11_adam", "6e6fe_00001_seed1", "6e6fe_00002_seed2")]
    events = pd.DataFrame({"trial_id": ["77582f4e", "6e6fe_00001"], "event": ["completed", "error"]})
    assert unfinished_trials(grid, events) == ["214e37ca_vgg11_adam", "6e6fe_00002_seed2"]
    assert unfinished_trials(grid, events.iloc[:0]) == [Path(r.path).name for r in grid]


@pytest.mark.parametrize("undone", [[], ["1 interrupted (abc12345)"], ["2 trials not started"]])
def test_the_run_end_prints_the_analysis_that_works_now_after_the_command_that_continues_the_study(
        tmp_path, capsys, monkeypatch, undone):
    """After a Ctrl-C the run ended on `analysis: python -m study.analyze <study>`, which study.analyze then refused:
    the search is unfinished. Now the resume command comes first, then the analysis of the validation split."""
    import study.driver

    settings = settings_from_args(build_parser().parse_args(["--storage", str(tmp_path), "--name", "s"]))
    uri = settings.study_uri
    row = {"trial_id": "abc12345", "trial_name": "folder_alexnet", "training_iteration": 1, "config/dataset": "folder",
           "config/model": "alexnet", "val/f1_macro": 0.5, "val/loss": 0.7, "timestamp": 1.0}
    Path(uri, "results").mkdir(parents=True)
    pd.DataFrame([row]).to_parquet(Path(uri, "results", "part-1.parquet"))
    interrupted = undone and "interrupted" in undone[0]
    if not interrupted:
        Path(uri, "trial_events").mkdir()
        pd.DataFrame([{"trial_id": "abc12345", "event": "completed", "timestamp": 2.0, "error_file": ""}]).to_parquet(
            Path(uri, "trial_events", "part-2.parquet"))
    monkeypatch.setattr(study.driver, "unfinished_search", lambda study_uri: undone)
    grid = [SimpleNamespace(path=f"{uri}/abc12345_folder_alexnet")]
    assert study.driver.print_run_end(settings, grid) == (130 if interrupted else 0)
    out, err = capsys.readouterr()
    resume = f"python -m study.run --resume {uri}"
    if not undone:
        assert f"analysis:    python -m study.analyze {uri}\n" in out and resume not in out + err
        return
    assert f"analysis:    python -m study.analyze {uri}\n" not in out, out
    # On stderr, which a user whose stdout goes to a file (`> run.log`) still sees; the summary stays on stdout.
    assert "Best trial per model" in out and resume not in out and "--split val" not in out, out
    continued = (f"interrupted: 1 trial unfinished; continue the study with\n  {resume}" if interrupted
                 else f"the search is unfinished (2 trials not started); continue it with\n  {resume}")
    assert err == (f"\n{continued}\nuntil then, the analysis of the validation split alone (the test split waits "
                   f"for the search to end):\n  python -m study.analyze {uri} --split val\n"), err


def test_the_errored_line_counts_the_trials_whose_last_end_was_an_error():
    from study.driver import errored_line

    events = pd.DataFrame({"trial_id": ["a", "b", "c"], "event": ["completed", "error", "error"]})
    assert errored_line(events, "python -m study.run --resume /s") == (
        "2 trials errored (their tracebacks: error.txt in each one's trial folder); once the cause is fixed, the "
        "resume runs them again, from their last full state:\n  python -m study.run --resume /s")
    assert errored_line(events.iloc[:2], "cmd") == (
        "1 trial errored (its traceback: error.txt in its trial folder); once the cause is fixed, the resume runs it "
        "again, from its last full state:\n  cmd")
    assert errored_line(events.iloc[:1], "cmd") is None


def assert_optuna_study_matches(path: Path, study_name: str, results: pd.DataFrame,
                                metric: str = "val/f1_macro") -> None:
    """The Optuna storage file holds each trial of the results once, COMPLETE, valued at its best epoch,
    with every reported epoch as an intermediate value (so the sampler saw the epochs after a resume too);
    besides them only proposals skipped as repeats of a configuration (FAIL, `repeat_of`)."""
    trials = optuna.load_study(study_name=study_name, storage=f"sqlite:///{path}").trials
    skipped = [t for t in trials if "repeat_of" in t.user_attrs]
    assert all(t.state.name == "FAIL" for t in skipped)
    trials = [t for t in trials if "repeat_of" not in t.user_attrs]
    by_trial = {t.user_attrs["trial_id"]: t for t in trials}
    assert len(by_trial) == len(trials) == results["trial_id"].nunique()
    assert set(by_trial) == set(results["trial_id"])
    assert all(t.state.name == "COMPLETE" for t in trials)
    best = results.groupby("trial_id")[metric].max()
    for trial_id, trial in by_trial.items():
        assert math.isclose(trial.value, best[trial_id]), (trial_id, trial.value, best[trial_id])
        epochs = results.loc[results["trial_id"] == trial_id, "training_iteration"]
        assert sorted(trial.intermediate_values) == sorted(epochs), (trial_id, trial.intermediate_values)


@pytest.mark.parametrize("space, num_samples, line", [
    ("demo", 3, "the first 3 trials cover 3 of the 6 combinations of model x optimizer; TPE draws all 3 trials at "
                "random: too few for it to model"),
    ("demo", 6, "the first 6 trials cover every combination of model x optimizer; TPE draws all 6 trials at "
                "random: too few for it to model"),
    ("demo", 10, "the first 6 trials cover every combination of model x optimizer; TPE draws at random until 6 "
                 "trials have finished, then models their results"),
    ("demo", 40, "the first 6 trials cover every combination of model x optimizer; TPE draws at random until 10 "
                 "trials have finished, then models their results"),
    ("wide", 30, "the first 12 trials cover every combination of model x pretrained x optimizer; TPE draws at "
                 "random until 10 trials have finished, then models their results"),
    ("paper", 108, None),
])
def test_the_start_says_what_the_first_trials_cover_and_how_many_tpe_draws_at_random(space, num_samples, line):
    """The demo space covers model x optimizer first (6 combinations); fewer trials cover only some. TPE
    models the results once the covered trials or half the study's trials have finished, at most 10 (with
    Optuna's 10 the demo's 10 trials were all drawn at random)."""
    from study.driver import sampling_line

    assert sampling_line(load_space(space), num_samples) == line
    lr_only = {"search": {"lr": {"loguniform": [1e-4, 1e-1]}}}
    assert sampling_line(parse_space(lr_only), 8) == ("TPE draws at random until 4 trials have finished, then "
                                                      "models their results")
    assert sampling_line(parse_space({**lr_only, "sampler": "random"}), 8) is None
    assert sampling_line(parse_space(lr_only), 2) == ("TPE draws at random until 1 trial has finished, then models "
                                                      "their results")


def test_a_new_study_logs_how_it_draws_its_trials(ray_session, tmp_path, caplog):
    from study.driver import build_tuner, sampling_line
    from study.run import build_parser, settings_from_args

    settings = settings_from_args(build_parser().parse_args(["--space", "demo", "--storage", str(tmp_path),
                                                             "--name", "cover"]))
    with caplog.at_level(logging.INFO, logger="study.driver"):
        build_tuner(settings, {}, resume=False)
    assert sampling_line(settings.search_space(), 10) + "\n" in caplog.text
