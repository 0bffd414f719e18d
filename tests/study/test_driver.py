"""study.driver's steps before Ray: the study's split of each dataset and the warnings about it; and the lines it
prints after the run.

No trial runs here: `prepare_splits` indexes, decodes (at 32 px) and splits a tiny dataset built in its real
layout (tests/conftest.py). The study end to end is tests/study/test_run.py's.
"""

from __future__ import annotations

import hashlib
import json
import logging
import pickle
import socket
from pathlib import Path
from types import SimpleNamespace

import pytest

from cxrnets.errors import CxrError
from study.driver import fetch_pretrained_weights, prepare_splits, save_new_study
from study.run import build_parser, settings_from_args
from study.settings import StudySettings

SPACE = "search:\n  model: {value: resnet50}\n  optimizer: {value: adam}\n  lr: {value: 0.001}\n"


def study_settings(tmp_path: Path, dataset: str, data: Path, *extra: str, space: str = SPACE) -> StudySettings:
    (tmp_path / "space.yaml").write_text(space)
    return settings_from_args(build_parser().parse_args([
        "--space", str(tmp_path / "space.yaml"), "--dataset", dataset, "--data-root", str(data),
        "--storage", str(tmp_path / "studies"), "--name", "thin", "--cache-dir", str(tmp_path / "cache"),
        "--image-size", "32", *extra]))


@pytest.fixture
def chestxray_warnings(tmp_path: Path, make_chestxray, caplog) -> list[str]:
    """The warnings of a new multi-label study of the covid-chestxray fixture, seed 5: its split puts ARDS's
    2 patients on test, Influenza's one on validation, none on train."""
    settings = study_settings(tmp_path, "covid-chestxray", make_chestxray(), "--seed", "5")
    with caplog.at_level(logging.WARNING, logger="study.driver"):
        prepare_splits(settings, resume=False)
    return [record.getMessage() for record in caplog.records if record.name == "study.driver"]


def test_a_new_study_warns_of_classes_no_training_patient_holds(chestxray_warnings: list[str]) -> None:
    """No trial can learn a class without a training image, yet the macro averages the study chooses on count
    it: the study says so before it trains, naming each such class with its patients on train/val/test, and
    what to do."""
    untrained = [text for text in chestxray_warnings if "no patient on the train split" in text]
    assert len(untrained) == 1
    assert untrained[0].startswith(
        "covid-chestxray: no patient on the train split for ARDS (0/0/2), Influenza (0/1/0) "
        "(patients on train/val/test): no trial can learn them, yet the averages over classes "
        "(macro F1, ...) count them wherever they have images")
    assert "ASHA and Optuna choose on (--metric val/f1_macro)" in untrained[0]
    assert "add images of more patients of them" in untrained[0]
    assert untrained[0].endswith("; add images of more patients of them, try another --seed, which may put a "
                                 "patient of ARDS on train, or choose on --metric val/f1_micro, which weighs each "
                                 "class by its images")


def test_a_class_no_validation_patient_holds_is_not_said_to_be_chosen_on_one_patient(
        chestxray_warnings: list[str]) -> None:
    """A class of one validation patient makes the selection rest on that patient's images; a class of none gives
    the selection nothing to choose on for it, and is worded so. A class no training patient holds is named
    once, in the training split's warning."""
    val = [text for text in chestxray_warnings if "on the val split" in text]
    assert [text.split(":")[1] for text in val] == [
        " fewer than 2 patients on the val split for COVID-19 (1), No Finding (1)",
        " no patient on the val split for Bacterial, Fungal, Klebsiella, Pneumocystis, SARS, Streptococcus",
    ]
    assert "choose on that one patient's images" in val[0]
    assert "that one patient" not in val[1]
    assert "count such a class as 0 whatever the trial: nothing to choose on for it" in val[1]


def test_a_new_study_warns_of_batch_sizes_the_whole_training_split_fits_in(tmp_path: Path, make_pneumonia_normal,
                                                                         caplog) -> None:
    """On a small dataset batch sizes 64 and 128 both train one step per epoch on the whole split: two rows of
    the ablation that train identically, without a word."""
    space = SPACE + "  batch_size: {choice: [4, 64, 128]}\n"
    settings = study_settings(tmp_path, "covid-pneumonia-normal", make_pneumonia_normal(per_class=8), space=space)
    with caplog.at_level(logging.WARNING, logger="study.driver"):
        splits = prepare_splits(settings, resume=False)
    train_images = (splits["covid-pneumonia-normal"]["split"] == "train").sum()
    assert train_images < 64
    assert (f"covid-pneumonia-normal: batch_size 64, 128 in {tmp_path / 'space.yaml'} are at least the training "
            f"split's {train_images} images: every batch size from {train_images} up trains one step per epoch on "
            "the whole split (full-batch), so trials that differ only in it train identically") in caplog.messages


PRETRAINED_PER_MODEL = {
    "pretrained under when": ("  model: {choice: [alexnet, resnet50]}\n"
                              "  pretrained:\n"
                              "    - {value: true, when: {model: resnet50}}\n"
                              "    - {value: false, when: {model: alexnet}}\n", "covid-chestxray-3class"),
    "a model per dataset": ("  dataset: {choice: [covid-chestxray-3class, covid-chestxray]}\n"
                            "  model:\n"
                            "    - {value: alexnet, when: {dataset: covid-chestxray}}\n"
                            "    - {value: resnet50, when: {dataset: covid-chestxray-3class}}\n"
                            "  pretrained: {value: true}\n", "covid-chestxray-3class"),
}


@pytest.mark.parametrize("search, dataset", PRETRAINED_PER_MODEL.values(), ids=PRETRAINED_PER_MODEL.keys())
def test_imagenet_weights_are_fetched_only_for_the_models_some_trial_starts_pretrained(
        tmp_path: Path, monkeypatch, search: str, dataset: str) -> None:
    """alexnet never starts from ImageNet weights here (its trials train from scratch, or --dataset leaves none of
    them): its weights are not downloaded (VGG11's are ~500 MB), nor asked for offline."""
    fetched = []
    monkeypatch.setattr("study.driver.fetch_imagenet_weights", fetched.append)
    (tmp_path / "space.yaml").write_text("search:\n" + search + "  optimizer: {value: adam}\n  lr: {value: 0.001}\n")
    settings = settings_from_args(build_parser().parse_args([
        "--space", str(tmp_path / "space.yaml"), "--dataset", dataset, "--storage", str(tmp_path / "studies")]))
    fetch_pretrained_weights(settings)
    assert fetched == ["resnet50"]


def test_a_model_whose_imagenet_weights_cannot_be_had_is_named_with_how_to_train_it_from_scratch(
        tmp_path: Path, monkeypatch) -> None:
    def offline(model: str) -> None:
        raise CxrError(f"the ImageNet weights for model {model!r} are not available")

    monkeypatch.setattr("study.driver.fetch_imagenet_weights", offline)
    (tmp_path / "space.yaml").write_text("search:\n" + PRETRAINED_PER_MODEL["pretrained under when"][0])
    settings = settings_from_args(build_parser().parse_args([
        "--space", str(tmp_path / "space.yaml"), "--storage", str(tmp_path / "studies")]))
    with pytest.raises(CxrError) as refused:
        fetch_pretrained_weights(settings)
    assert str(refused.value) == ("the ImageNet weights for model 'resnet50' are not available; or train resnet50 "
                                  f"from scratch only (pretrained: false for it in {tmp_path / 'space.yaml'})")


def test_resume_on_data_with_an_image_cut_short_names_it_undecodable_and_offers_to_restore_it(
        tmp_path: Path, make_pneumonia_normal) -> None:
    """The study's split lists the image; the file is still there but no longer decodes: the resume names it as
    such (not as gone), with the sha1 the split recorded, and offers restoring it before a new study."""
    data = make_pneumonia_normal(per_class=8)
    settings = study_settings(tmp_path, "covid-pneumonia-normal", data)
    save_new_study(settings, prepare_splits(settings, resume=False))
    image = data / "normal" / "normal-000.png"
    recorded = hashlib.sha1(image.read_bytes()).hexdigest()
    image.write_bytes(image.read_bytes()[:image.stat().st_size // 2])
    with pytest.raises(CxrError) as refused:
        prepare_splits(settings, resume=True)
    assert str(refused.value) == (
        f"{settings.study_uri}/splits/covid-pneumonia-normal.csv: the dataset changed since this split was made (1 "
        f"image(s) no longer decode, the warning above says why: normal/normal-000.png (sha1 {recorded} in the "
        "split)); the split is part of the study: restore the original file(s), or start a new study for the new data")


@pytest.mark.parametrize("other", ["running", "finished"])
def test_a_new_study_that_loses_the_race_for_its_name_writes_nothing_in_the_winner_s_folder(
        tmp_path: Path, make_pneumonia_normal, monkeypatch, other: str) -> None:
    """Two new studies under the same --name (two batch jobs started in the same second, default name): the one
    that took the folder second overwrote the first's split file before the lock refused it, and told its user to
    --resume a study that was not theirs; the first study's analysis then refused the split as edited. Whether
    the other driver still runs or has ended, the loser writes nothing there and is told to use another --name."""
    import subprocess
    import sys

    import study.driver
    from study.lock import LOCK_FILE, process_start

    data = make_pneumonia_normal(per_class=8)
    settings = study_settings(tmp_path, "covid-pneumonia-normal", data, "--seed", "1")
    winner = study_settings(tmp_path, "covid-pneumonia-normal", data, "--seed", "2")
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    real_prepare_splits = study.driver.prepare_splits

    def other_driver_starts_meanwhile(settings: StudySettings, resume: bool):
        save_new_study(winner, real_prepare_splits(winner, resume=False))
        if other == "running":
            lock = {"host": socket.gethostname(), "pid": process.pid, "start": process_start(process.pid)}
            (Path(winner.study_uri) / LOCK_FILE).write_text(json.dumps(lock))
        return real_prepare_splits(settings, resume)

    monkeypatch.setattr(study.driver, "prepare_splits", other_driver_starts_meanwhile)
    monkeypatch.setattr(study.driver, "connect", lambda *args, **kwargs: pytest.fail("Ray started"))
    folder = Path(settings.study_uri)
    try:
        with pytest.raises(CxrError) as refused:
            study.driver.run_study(settings)
        left = {path.relative_to(folder): path.read_bytes() for path in folder.rglob("*") if path.is_file()}
    finally:
        process.kill()
        process.wait()
    assert str(refused.value).startswith(f"another driver just started a study at {folder}")
    assert str(refused.value).endswith("this one wrote nothing there: start it again under another --name")
    split = Path("splits") / "covid-pneumonia-normal.csv"
    assert set(left) == {Path("study.json"), split} | ({Path(LOCK_FILE)} if other == "running" else set())
    assert json.loads(left[Path("study.json")])["seed"] == 2
    assert (left[split] ==
            real_prepare_splits(winner, resume=False)["covid-pneumonia-normal"].to_csv(index=False).encode())
    assert not real_prepare_splits(settings, resume=False)["covid-pneumonia-normal"].equals(
        real_prepare_splits(winner, resume=False)["covid-pneumonia-normal"])  # the loser's split was another


@pytest.mark.parametrize("verbose", [False, True], ids=["quiet", "-v"])
def test_tunes_notes_on_interrupted_unreported_and_failed_trials_show_only_with_v(verbose):
    """Ctrl-C printed Tune's 'ERROR tune.py -- Trials did not complete: [...]', a resume 'WARNING
    experiment_analysis.py -- Failed to fetch metrics ... FileNotFoundError' for a trial that never reported, and
    each failure of a trial 'ERROR tune_controller.py -- Trial task failed for trial ...' with its traceback: the
    commands say what is unfinished, and the console names the trial's error.txt, in their own words. A failure to
    read a result that exists, and Tune's errors that are no trial's failure, still show."""
    from study.driver import quiet_tune

    shown = []
    handler = logging.Handler()
    handler.emit = lambda record: shown.append(record.getMessage())
    notes = {"ray.tune.tune": "Trials did not complete: [folder_resnet50_adam_lr1.6e-03_bs16]",
             "ray.tune.analysis.experiment_analysis": (
                 "Failed to fetch metrics for 1 trial(s):\n- folder_resnet50: FileNotFoundError('Could not fetch "
                 "metrics for folder_resnet50: both result.json and progress.csv were not found at /s/t')"),
             "ray.tune.execution.tune_controller": "Trial task failed for trial folder_resnet50_adam_lr1.6e-03_bs16"}
    kept = {"ray.tune.analysis.experiment_analysis":
            "Failed to fetch metrics for 1 trial(s):\n- folder_resnet50: JSONDecodeError('Expecting value')",
            "ray.tune.execution.tune_controller": "Failed to restore the run state."}
    quiet_tune(verbose)
    try:
        for name, message in [*notes.items(), *kept.items()]:
            logging.getLogger(name).addHandler(handler)
            logging.getLogger(name).error(message)
    finally:
        for name in notes:
            logging.getLogger(name).removeHandler(handler)
        quiet_tune(True)
    assert shown == ([*notes.values(), *kept.values()] if verbose else list(kept.values()))


# ------------------------------------------------------------------ Ray Client (ray://)

def test_through_ray_client_sigterm_stops_the_study_as_ctrl_c_does(monkeypatch, tmp_path: Path, capsys) -> None:
    """Through Ray Client, Tune runs on the cluster and has no handler here for the SIGUSR1 that SIGTERM was passed
    on as: `kill` ended the command with 'User defined signal 1' and no resume command."""
    import os
    import signal
    import time

    import study.driver
    from study.run import main
    from study.settings import save_settings

    def run_study(settings, **options):  # the study's folder, then Tuner.fit, streaming from the cluster
        save_settings(settings)
        with study.driver.tune_interrupts("unused"):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # what is left of fit(), which the handler interrupts

    monkeypatch.setattr(study.driver, "ray_client_connected", lambda: True)
    monkeypatch.setattr(study.driver, "run_study", run_study)
    sigterm = signal.getsignal(signal.SIGTERM)
    assert main(["--storage", str(tmp_path / "studies"), "--name", "s", "--address", "ray://127.0.0.1:10001"]) == 130
    assert capsys.readouterr().err.endswith(
        f"interrupted; continue the study with\n  python -m study.run --resume {tmp_path / 'studies' / 's'}\n")
    assert signal.getsignal(signal.SIGTERM) is sigterm


def test_joining_through_ray_client_says_what_this_console_shows_and_what_a_stop_does(monkeypatch, caplog) -> None:
    import ray

    import study.driver
    from study.driver import connect

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **options: None)
    monkeypatch.setattr(study.driver, "ray_client_connected", lambda: True)
    with caplog.at_level(logging.INFO, logger="study.driver"):
        assert connect("ray://10.0.0.5:10001", None) is False
    joined, note = [record.getMessage() for record in caplog.records]
    assert joined == "joined the Ray cluster at ray://10.0.0.5:10001"
    for told in ("Tune runs on the cluster's head", "none of the study's status and per-trial lines", "-v streams",
                 "Ctrl-C or SIGTERM", "--resume continues from Tune's last snapshot", "docs/cluster.md"):
        assert told in note


# ------------------------------------------------------------------ what the driver prints after the run

def test_the_size_line_counts_the_weights_kept_for_the_trials_not_completed(tmp_path: Path) -> None:
    """An interrupted study keeps the weights of its unfinished trials, whatever their rank: the line said they
    were all each model's best trial's."""
    from study import storage
    from study.driver import size_line
    from study.results import ResultsTable, read_trial_events

    settings = settings_from_args(build_parser().parse_args(["--storage", str(tmp_path), "--name", "demo"]))
    weights = Path(settings.study_uri) / "weights"
    weights.mkdir(parents=True)
    for trial_id in ("aaaa0001", "bbbb0002", "cccc0003"):
        (weights / f"{trial_id}.pt").write_bytes(bytes(1_000_000))
        (weights / f"{trial_id}.json").write_text("{}")
    ResultsTable(settings.study_uri).on_trial_complete(
        1, [], SimpleNamespace(trial_id="aaaa0001", local_path=str(tmp_path / "staged"), path=str(tmp_path / "x")))
    line = size_line(settings, read_trial_events(settings.study_uri))
    assert line == (f"study:       {settings.study_uri} (3 MB in all; 3 MB of it the best weights of each model's best "
                    "trial, --keep 1, and of the 2 trials not completed, for the resume)")
    for trial_id in ("bbbb0002", "cccc0003"):
        storage.delete(str(weights / f"{trial_id}.pt"))
    assert size_line(settings, read_trial_events(settings.study_uri)).endswith(
        "1 MB of it the best weights of each model's best trial, --keep 1)")


def test_trials_are_named_by_every_key_the_space_searches():
    """A space searching momentum named two SGD trials differing only in it alike, in the status lines, the
    tables and the trial folders (whose <trial id>_ prefix is what the study matches them by)."""
    from study.driver import TrialNames

    trial = SimpleNamespace(trial_id="0a1b2c3d", config={"model": "alexnet", "optimizer": "sgd", "lr": 0.01,
                                                          "batch_size": 16, "momentum": 0.9})
    assert TrialNames(("optimizer", "momentum"))(trial) == "alexnet_sgd_lr1.0e-02_bs16_mom0.9"
    assert TrialNames(("momentum",), folder=True)(trial) == "0a1b2c3d_alexnet_sgd_lr1.0e-02_bs16_mom0.9"
    assert pickle.loads(pickle.dumps(TrialNames(("momentum",))))(trial) == "alexnet_sgd_lr1.0e-02_bs16_mom0.9"
    # A study's tuner.pkl from before TrialNames refers to study.driver.trial_name and .trial_dirname by name.
    assert pickle.loads(b"cstudy.driver\ntrial_name\n.")(trial) == "alexnet_sgd_lr1.0e-02_bs16"
    assert pickle.loads(b"cstudy.driver\ntrial_dirname\n.")(trial) == "0a1b2c3d_alexnet_sgd_lr1.0e-02_bs16"
