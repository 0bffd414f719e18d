"""Tests for cxrnets.training and the `python -m cxrnets.train` CLI.

The end-to-end runs use the embedded sample (ResNet50 at 32 px, the fastest
model on a CPU at the smallest useful size) decoded once into a module-wide
cache; the error paths use tiny fixture datasets.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import math
import re
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from cxrnets.data import SAMPLE_ROOT
from cxrnets.errors import CxrError, DivergedError, SplitMismatch
from cxrnets.train import main, parse_args
from cxrnets.config import TrainConfig
from cxrnets.batches import Batches
from cxrnets.training import (
    TrainingRun,
    align_split,
    autocast_dtype,
    build_optimizer,
    evaluate,
    prepare_data,
    save_checkpoint,
    select_device,
    train_one_epoch,
)

METRIC_KEYS = {"epoch", "train/loss", "val/loss", "val/accuracy", "val/precision_macro", "val/recall_macro",
               "val/f1_macro", "val/roc_auc_macro", "epoch_seconds", "images_per_second"}
MULTILABEL_KEYS = METRIC_KEYS | {"val/subset_accuracy", "val/f1_micro"}


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    """One intra-op thread: at these tiny sizes thread hand-offs cost more than they gain, and on a
    busy 2-core machine two spinning OpenMP threads per process make an epoch several times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def sample_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One decode-once cache for every sample run of this module."""
    return tmp_path_factory.mktemp("sample-cache")


def sample_config(cache: Path, **overrides) -> TrainConfig:
    values = dict(dataset="covid-chestxray-3class", data_root=str(SAMPLE_ROOT), model="resnet50", image_size=32,
                  batch_size=32, epochs=2, lr=1e-3, cache_dir=str(cache), seed=0)
    return TrainConfig(**{**values, **overrides})


@pytest.fixture(scope="module")
def sample_run(sample_cache: Path) -> tuple[TrainingRun, list[dict]]:
    """ResNet50 trained 2 epochs on the embedded sample (3 classes, 32 px)."""
    run = TrainingRun(sample_config(sample_cache))
    history = [run.train_epoch() for _ in range(run.config.epochs)]
    return run, history


# ------------------------------------------------------------------ config


def test_training_run_validates_first(tmp_path: Path) -> None:
    with pytest.raises(CxrError, match="option lr"):  # before touching any data
        TrainingRun(TrainConfig(lr=0, data_root=str(tmp_path / "nowhere")))


def test_optimizers_and_device() -> None:
    parameters = [nn.Parameter(torch.zeros(2))]
    adam = build_optimizer("adam", parameters, 0.01, weight_decay=1e-4)
    assert isinstance(adam, torch.optim.Adam) and adam.defaults["weight_decay"] == 1e-4
    sgd = build_optimizer("sgd", parameters, 0.01, momentum=0.8, weight_decay=1e-3)
    assert isinstance(sgd, torch.optim.SGD) and sgd.defaults["momentum"] == 0.8
    with pytest.raises(CxrError, match="unknown optimizer 'lbfgs'"):
        build_optimizer("lbfgs", parameters, 0.01)
    assert select_device("cpu") == torch.device("cpu")
    assert select_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert autocast_dtype(torch.device("cpu"), True) is None  # CPU runs stay in float32
    if not torch.cuda.is_available():
        with pytest.raises(CxrError, match="no CUDA GPU"):
            select_device("cuda")
    with pytest.raises(CxrError, match=r"--device 'tpu': choose auto"):
        select_device("tpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_gpu_index_past_the_machines_gpus_is_refused_by_name():
    count = torch.cuda.device_count()
    with pytest.raises(CxrError, match=rf"device 'cuda:{count}' asked for, but this machine has {count} CUDA GPU"):
        select_device(f"cuda:{count}")


# ------------------------------------------------------------------ divergence


@pytest.fixture
def tiny_folder(make_folder) -> Path:
    return make_folder(classes={"dark": 60, "bright": 190}, per_class=8)


def tiny_config(root: Path, cache: Path, **overrides) -> TrainConfig:
    values = dict(dataset="folder", data_root=str(root), model="resnet50", image_size=32, batch_size=4, epochs=2,
                  cache_dir=str(cache))
    return TrainConfig(**{**values, **overrides})


class NanLoss(nn.Module):
    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return logits.sum() * float("nan")


def test_nan_loss_raises_diverged(tiny_folder: Path, tmp_path: Path) -> None:
    run = TrainingRun(tiny_config(tiny_folder, tmp_path))
    run.loss_fn = NanLoss()
    with pytest.raises(DivergedError, match=r"training diverged: loss became nan after 0 images"):
        run.train_epoch()
    assert issubclass(DivergedError, CxrError)


def test_cli_reports_divergence(tiny_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code = main(["--dataset", "folder", "--data-root", str(tiny_folder), "--image-size", "32", "--batch-size", "4",
                 "--epochs", "2", "--lr", "1e30", "--cache-dir", str(tmp_path / "cache"),
                 "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 3
    assert "status: diverged at epoch 1" in err and "lower --lr" in err
    assert "Traceback" not in err


def test_cli_names_the_epoch_whose_evaluation_diverged(tiny_folder: Path, tmp_path: Path, capsys,
                                                       monkeypatch) -> None:
    import cxrnets.training

    def nan_outputs(*args, **kwargs):
        raise DivergedError("the model's outputs on evaluation are NaN or infinite (loss nan)")

    monkeypatch.setattr(cxrnets.training, "evaluate", nan_outputs)  # epoch 1 trains, then its validation fails
    code = main(["--dataset", "folder", "--data-root", str(tiny_folder), "--image-size", "32", "--batch-size", "4",
                 "--epochs", "2", "--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path / "out")])
    assert code == 3 and "status: diverged at epoch 1: the model's outputs on evaluation" in capsys.readouterr().err


def test_cli_divergence_after_a_checkpoint_says_to_try_a_lower_lr_in_another_out(tiny_folder: Path, tmp_path: Path,
                                                                                 capsys, monkeypatch) -> None:
    """The folder then holds a run at the diverged lr, which refuses a fresh start and a resume at another lr."""
    train_epoch, calls = TrainingRun.train_epoch, []

    def diverges_in_epoch_2(self, progress=None):
        calls.append(1)
        if len(calls) == 2:
            raise DivergedError("training diverged: loss became nan after 8 images")
        return train_epoch(self, progress)

    monkeypatch.setattr(TrainingRun, "train_epoch", diverges_in_epoch_2)
    assert main(tiny_cli_arguments(tiny_folder, tmp_path, "--epochs", "2")) == 3
    assert capsys.readouterr().err == (
        "status: diverged at epoch 2: training diverged: loss became nan after 8 images; "
        f"{tmp_path / 'run' / 'checkpoint.pt'} holds epoch 1: try a lower --lr with another --out\n")


def test_cli_divergence_in_the_test_evaluation_keeps_the_run_and_says_so(tiny_folder: Path, tmp_path: Path,
                                                                          capsys, monkeypatch) -> None:
    """The last epoch's weights gave finite validation outputs but NaN test outputs: the run's checkpoint and
    metrics stay, and one line says that its weights are unusable and what to try, with divergence's status 3."""
    evaluate_split = TrainingRun.evaluate_split

    def nan_on_test(self, split):
        if split == "test":
            raise DivergedError("the model's outputs on evaluation are NaN or infinite (loss nan)")
        return evaluate_split(self, split)

    monkeypatch.setattr(TrainingRun, "evaluate_split", nan_on_test)
    out = tmp_path / "run"
    assert main(tiny_cli_arguments(tiny_folder, tmp_path, "--epochs", "2")) == 3
    assert capsys.readouterr().err == (
        "status: diverged in the test evaluation: the model's outputs on evaluation are NaN or infinite (loss nan); "
        f"{out / 'checkpoint.pt'} holds epoch 2, finite on validation but not on the test images: its weights are "
        "unusable; try a lower --lr with another --out\n")
    assert recorded_epochs(out) == [1, 2]
    assert torch.load(out / "checkpoint.pt", weights_only=True)["epoch"] == 2


def test_cli_records_a_nan_metric_as_json_null(tiny_folder: Path, tmp_path: Path, monkeypatch) -> None:
    """roc_auc_macro is nan where no class can be ranked: metrics.jsonl stays JSON that strict readers accept."""
    train_epoch = TrainingRun.train_epoch
    monkeypatch.setattr(TrainingRun, "train_epoch",
                        lambda self, progress=None: {**train_epoch(self, progress), "val/roc_auc_macro": math.nan})
    assert main(tiny_cli_arguments(tiny_folder, tmp_path, "--epochs", "1")) == 0

    def refuse(constant: str):
        pytest.fail(f"metrics.jsonl holds {constant}, which is no JSON")

    line = (tmp_path / "run" / "metrics.jsonl").read_text()
    recorded = json.loads(line, parse_constant=refuse)
    assert recorded["val/roc_auc_macro"] is None and math.isfinite(recorded["val/loss"])


def test_cli_groups_a_csv_by_its_patient_column(make_csv_dataset, tmp_path: Path, caplog) -> None:
    """--dataset-option reaches the loader: 24 images of 16 patients, not of 24."""
    csv_path = make_csv_dataset(columns=("file", "diagnosis", "subject"))
    arguments = ["--dataset", "csv", "--data-root", str(csv_path), "--image-size", "32", "--batch-size", "8",
                 "--epochs", "1", "--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path / "out"),
                 "--dataset-option", "path_column=file", "--dataset-option", "label_column=diagnosis"]
    with caplog.at_level(logging.INFO):
        assert main([*arguments, "--dataset-option", "patient_column=subject"]) == 0
    assert "csv: 24 images of 16 patients" in caplog.text
    checkpoint = torch.load(tmp_path / "out" / "checkpoint.pt", weights_only=True)
    assert checkpoint["config"]["dataset_options"] == {"path_column": "file", "label_column": "diagnosis",
                                                       "patient_column": "subject"}
    with pytest.raises(SystemExit):
        main([*arguments, "--dataset-option", "patient=subject"])


# ------------------------------------------------------------------ data and the split file


def test_prepare_data_reuses_the_split_file(make_chestxray, tmp_path: Path) -> None:
    root = make_chestxray()
    split_file = tmp_path / "study" / "split.csv"
    config = TrainConfig(dataset="covid-chestxray-3class", data_root=str(root), model="resnet50", image_size=16,
                         cache_dir=str(tmp_path / "cache"), split_file=str(split_file), seed=0)
    first = prepare_data(config)
    assert split_file.is_file()
    assert len(first.images) == len(first.targets) == len(first.split) == 24
    assert first.images.shape[1:] == (3, 16, 16)
    assert sorted(np.concatenate([first.rows(name) for name in ("train", "val", "test")]).tolist()) == list(range(24))
    # another seed would split differently, but the file wins
    again = prepare_data(replace(config, seed=7))
    pd.testing.assert_frame_equal(again.split.astype(str), first.split.astype(str))
    assert not np.array_equal(
        prepare_data(replace(config, seed=7, split_file=None)).split["split"], first.split["split"])


def test_prepare_data_keeps_an_x_ray_and_its_resized_copy_on_one_side(make_radiography_copies, tmp_path: Path) -> None:
    """python -m cxrnets.train's split: an X-ray of dataset 1 held twice (a 299x299 PNG and a JPEG of its own
    shape) falls on one side, whatever the seed."""
    root, copies = make_radiography_copies()
    for seed in range(4):
        config = TrainConfig(dataset="covid-radiography", data_root=str(root), image_size=64, seed=seed,
                             cache_dir=str(tmp_path / "cache"))
        part = prepare_data(config).split.set_index("relpath")["split"]
        assert [part[png] == part[jpeg] for png, jpeg in copies] == [True] * len(copies)


@pytest.mark.parametrize("image_size", [4, 8, 12])
def test_prepare_data_at_a_small_size_splits_the_sample_as_at_64_px(sample_cache: Path, image_size: int) -> None:
    """Images of a few pixels are fingerprinted at FINGERPRINT_SIZE: at their own size unrelated X-rays looked
    near-identical and joined (at 12 px 148 patients into 134 groups, at 8 px into 7, which StratifiedGroupKFold
    refused with a ValueError), so the split is the one made at 64 px, which keeps only the sample's one copy
    (the X-ray of patient 97 filed again as patient 178) on one side."""
    from cxrnets.splits import split_digest

    split = prepare_data(sample_config(sample_cache, image_size=image_size)).split
    assert split_digest(split) == split_digest(prepare_data(sample_config(sample_cache, image_size=64)).split)
    assert split.loc[split["patient"].isin(["97", "178"]), "split"].nunique() == 1


def test_prepare_data_refuses_a_split_whose_images_changed(make_chestxray, tmp_path: Path, write_image) -> None:
    """Restoring the file (whose sha1 the split records) keeps the run's work; a new split throws it away. A
    --split-file is no study's: the way to a new split is --split-file's, not a new study."""
    root = make_chestxray()
    split_file = tmp_path / "split.csv"
    config = TrainConfig(dataset="covid-chestxray-3class", data_root=str(root), model="resnet50", image_size=16,
                         cache_dir=str(tmp_path / "cache"), split_file=str(split_file))
    prepare_data(config)
    recorded = hashlib.sha1((root / "images" / "p15.png").read_bytes()).hexdigest()
    write_image(root / "images" / "p15.png", "L", brightness=5, seed=777)  # same name, new picture
    with pytest.raises(CxrError) as refused:
        prepare_data(config)
    assert str(refused.value) == (
        f"{split_file}: 1 image file(s) changed content since the split was made, e.g. images/p15.png (sha1 "
        f"{recorded} in the split); restore the original file(s), or pass another --split-file, or delete this one "
        "to make the split again from --seed")


def test_prepare_data_names_an_image_that_no_longer_decodes_and_offers_to_restore_it(make_chestxray,
                                                                                      tmp_path: Path) -> None:
    """A listed image cut short is not "gone" (the file is there): it is named as undecodable, whose reason the
    cache's warning gives, with the sha1 the split recorded of it; no empty list of new images is shown."""
    root = make_chestxray()
    split_file = tmp_path / "split.csv"
    config = TrainConfig(dataset="covid-chestxray-3class", data_root=str(root), model="resnet50", image_size=16,
                         cache_dir=str(tmp_path / "cache"), split_file=str(split_file))
    prepare_data(config)
    image = root / "images" / "p15.png"
    recorded = hashlib.sha1(image.read_bytes()).hexdigest()
    image.write_bytes(image.read_bytes()[:image.stat().st_size // 2])
    with pytest.raises(CxrError) as refused:
        prepare_data(config)
    assert str(refused.value) == (
        f"{split_file}: the dataset changed since this split was made (1 image(s) no longer decode, the warning "
        f"above says why: images/p15.png (sha1 {recorded} in the split)); restore the original file(s), or pass "
        "another --split-file, or delete this one to make the split again from --seed")


def test_prepare_data_refuses_a_split_on_which_a_patient_now_falls_on_two_sides(make_chestxray, tmp_path: Path) -> None:
    """An upstream fix that merges two patients (metadata.csv gives a test patient's X-ray a train patient's id)
    passed silently: the saved split then held one patient's images in train and in test."""
    root = make_chestxray()
    split_file = tmp_path / "split.csv"
    config = TrainConfig(dataset="covid-chestxray-3class", data_root=str(root), model="resnet50", image_size=16,
                         cache_dir=str(tmp_path / "cache"), split_file=str(split_file))
    split = prepare_data(config).split
    tested = split[split["split"] == "test"].iloc[0]
    trained = split[split["split"] == "train"].iloc[0]
    metadata = pd.read_csv(root / "metadata.csv", dtype=str, keep_default_na=False)
    metadata.loc[metadata["patientid"] == tested["patient"], "patientid"] = trained["patient"]
    metadata.to_csv(root / "metadata.csv", index=False)
    with pytest.raises(SplitMismatch) as refused:
        prepare_data(config)
    message = str(refused.value)
    assert message.startswith(f"{split_file}: the patient ids changed since this split was made: 1 patient(s) now "
                              f"have images on two sides of it, e.g. patient {trained['patient']!r}: ")
    assert f"{trained['relpath']} in train" in message and f"{tested['relpath']} in test" in message
    assert f"(patients {trained['patient']!r} and {tested['patient']!r} in the split)" in message
    assert message.endswith("restore the patient ids, or pass another --split-file, or delete this one to make the "
                            "split again from --seed")


def test_align_split_checks_patients_only_where_the_data_names_them() -> None:
    """Without patient ids each image is its own patient (its relpath): no image falls on two sides."""
    frame = pd.DataFrame({"relpath": ["a", "b", "c"], "patient": ["a", "b", "c"], "sha1": ["x", "y", "z"]})
    split = frame.assign(stratum="s", split=["train", "val", "test"])
    assert list(align_split(split, frame, Path("split.csv"))["split"]) == ["train", "val", "test"]
    with pytest.raises(SplitMismatch, match=r"patient 'p': a in train, c in test"):
        align_split(split, frame.assign(patient=["p", "b", "p"]), Path("split.csv"))


def test_prepare_data_refuses_a_split_of_other_images(make_folder, tmp_path: Path, write_image) -> None:
    root = make_folder(per_class=8)
    split_file = tmp_path / "split.csv"
    config = TrainConfig(dataset="folder", data_root=str(root), model="resnet50", image_size=16,
                         cache_dir=str(tmp_path / "cache"), split_file=str(split_file))
    prepare_data(config)
    write_image(root / "healthy" / "new-one.png", "L", 60, seed=4242)  # among the images listed: not a cut file
    with pytest.raises(CxrError, match=r"dataset changed since this split was made \(1 new images.*new-one.png"):
        prepare_data(config)


def test_split_file_with_an_image_listed_twice(make_chestxray, tmp_path: Path) -> None:
    """Dataset 3 lists a few images under two patient ids: the split holds such an image once, under one
    patient, and a split saved before, which held it twice, still serves its study (one row per image)."""
    root = make_chestxray()
    metadata = pd.read_csv(root / "metadata.csv", dtype=str, keep_default_na=False)
    twice = metadata[metadata["filename"] == "p8-a.png"].assign(patientid="99")
    pd.concat([metadata, twice]).to_csv(root / "metadata.csv", index=False)
    split_file = tmp_path / "split.csv"
    config = TrainConfig(dataset="covid-chestxray-3class", data_root=str(root), model="resnet50", image_size=16,
                         cache_dir=str(tmp_path / "cache"), split_file=str(split_file))
    first = prepare_data(config)
    assert len(first.split) == 24 and (first.split["relpath"] == "images/p8-a.png").sum() == 1
    assert "99" not in set(first.split["patient"])  # patients 8 and 99 share a picture: one patient
    second = prepare_data(config)
    pd.testing.assert_frame_equal(second.split.astype(str), first.split.astype(str))
    saved = pd.read_csv(split_file, dtype=str, keep_default_na=False)
    before = pd.concat([saved, saved[saved["relpath"] == "images/p8-a.png"].assign(patient="99")])
    before.to_csv(split_file, index=False)
    third = prepare_data(config)
    pd.testing.assert_frame_equal(third.split.astype(str), first.split.astype(str))


@pytest.mark.parametrize("damage, refused", [
    ("empty", "the split file is empty; pass another --split-file, or delete this one"),
    ("a folder", "is a folder, not a split file"),
    ("other names", "lists split names other than train, val, test, heldout: 'holdout'"),
    ("cut in a line", "the split file looks cut short (its last line is incomplete"),
    ("cut between lines", "lists only the first 12 of the data's 16 images, and then stops: the file looks cut short"),
])
def test_cli_refuses_a_damaged_split_file(tiny_folder: Path, tmp_path: Path, capsys, damage: str, refused: str) -> None:
    split_file = tmp_path / "split.csv"
    prepare_data(tiny_config(tiny_folder, tmp_path / "cache", split_file=str(split_file)))
    text = split_file.read_text()
    if damage == "a folder":
        split_file.unlink()
        split_file.mkdir()
    else:
        split_file.write_text({"empty": "", "other names": text.replace(",test\n", ",holdout\n"),
                               "cut in a line": text[:-10],
                               "cut between lines": "".join(text.splitlines(keepends=True)[:13])}[damage])
    out = tmp_path / "run"
    assert main(["--dataset", "folder", "--data-root", str(tiny_folder), "--image-size", "32", "--cache-dir",
                 str(tmp_path / "cache"), "--split-file", str(split_file), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {split_file}: ") and refused in err, err
    assert not out.exists()


def test_cli_refuses_a_split_file_under_a_file_before_decoding(tiny_folder: Path, tmp_path: Path, capsys,
                                                               monkeypatch) -> None:
    (tmp_path / "a-file").write_text("")
    split_file = tmp_path / "a-file" / "split.csv"
    monkeypatch.setattr("cxrnets.training.build_cache", lambda *args, **kwargs: pytest.fail("decoded the dataset"))
    assert main(tiny_cli_arguments(tiny_folder, tmp_path, "--split-file", str(split_file))) == 2
    err = capsys.readouterr().err
    assert err == (f"error: --split-file {split_file}: cannot write in {tmp_path / 'a-file'} (a file, not a folder); "
                   "pick a folder you can write to\n")


def split_file_moving_bright(tiny_folder: Path, tmp_path: Path, part: str, to: str, of: str = "bright") -> Path:
    """tiny_folder's split file (tmp_path/split.csv, made where it is not there yet), its `part`'s images of the
    class `of` moved to the part `to`."""
    split_file = tmp_path / "split.csv"
    prepare_data(tiny_config(tiny_folder, tmp_path / "cache", split_file=str(split_file)))
    split = pd.read_csv(split_file, dtype=str, keep_default_na=False)
    split.loc[(split["split"] == part) & (split["stratum"] == of), "split"] = to
    split.to_csv(split_file, index=False)
    return split_file


def test_a_validation_split_of_untrained_classes_only_reports_the_unweighted_loss(tiny_folder: Path, tmp_path: Path,
                                                                                  caplog) -> None:
    """Validation holds only bright, training only dark: the class-weighted loss weighs every validation image 0
    (0/0). The outputs are finite, so the run has not diverged: val/loss is their unweighted cross-entropy, said
    once."""
    split_file_moving_bright(tiny_folder, tmp_path, "train", to="test")
    split_file = split_file_moving_bright(tiny_folder, tmp_path, "val", to="train", of="dark")
    run = TrainingRun(tiny_config(tiny_folder, tmp_path / "cache", split_file=str(split_file)))
    with caplog.at_level(logging.WARNING, logger="cxrnets.training"):
        first, second = run.train_epoch(), run.train_epoch()
    assert math.isfinite(first["val/loss"]) and math.isfinite(second["val/loss"])
    _, _, scores = run.evaluate_split("val")
    bright = run.classes.index("bright")
    assert math.isclose(second["val/loss"], float(np.mean(-np.log(scores[:, bright]))), rel_tol=1e-4)
    assert caplog.text.count("the val split holds images of bright only, which no training image has (weight 0 in "
                             "the class-weighted loss): val/loss is their unweighted cross-entropy") == 1


def test_a_training_split_of_one_image_is_refused(tiny_folder: Path, tmp_path: Path, capsys) -> None:
    """One image makes no batch BatchNorm can train on: every epoch would train nothing and report loss 0."""
    split_file = split_file_moving_bright(tiny_folder, tmp_path, "train", to="test")
    split = pd.read_csv(split_file, dtype=str, keep_default_na=False)
    split.loc[split.index[split["split"] == "train"][1:], "split"] = "test"
    split.to_csv(split_file, index=False)
    assert main(tiny_cli_arguments(tiny_folder, tmp_path, "--split-file", str(split_file))) == 2
    assert capsys.readouterr().err == (
        "error: the train split of folder holds 1 image(s): too few to train on (a training batch needs at least 2: "
        "BatchNorm cannot train on one image); use a larger dataset, or a split with more training images (smaller "
        "--val-fraction and --test-fraction, or another --split-file)\n")


def test_an_epoch_that_trains_no_image_is_an_error() -> None:
    """A lone image is skipped (BatchNorm cannot train on it): the epoch must not report a loss of 0."""
    model = nn.Sequential(nn.Conv2d(3, 2, 3), nn.BatchNorm2d(2), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    images = np.zeros((1, 3, 8, 8), dtype=np.uint8)
    batches = Batches(images, np.zeros(1, dtype=np.int64), np.arange(1), 4, torch.device("cpu"), train=True)
    optimizer = build_optimizer("sgd", model.parameters(), lr=0.1)
    with pytest.raises(CxrError, match=r"the epoch trained no image: the training split's 1 image\(s\) made no "
                                       r"batch of at least 2 \(BatchNorm cannot train on one image\)"):
        train_one_epoch(model, batches, optimizer, nn.CrossEntropyLoss())


def test_train_one_epoch_reports_its_progress_at_each_read() -> None:
    model = nn.Sequential(nn.Conv2d(3, 2, 3), nn.BatchNorm2d(2), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    images = np.random.default_rng(0).integers(0, 255, (10, 3, 8, 8), dtype=np.uint8)
    batches = Batches(images, np.arange(10) % 2, np.arange(10), 4, torch.device("cpu"), train=True)
    optimizer = build_optimizer("sgd", model.parameters(), lr=0.1)
    done: list[int] = []
    result = train_one_epoch(model, batches, optimizer, nn.CrossEntropyLoss(), progress=done.append)
    assert done == [4, 8, 10] and result["images"] == 10


def test_cli_shows_an_epochs_progress_and_its_time_with_validation(tiny_folder: Path, tmp_path: Path, caplog,
                                                                   capsys, monkeypatch) -> None:
    """The progress is logged (stderr); the epoch's metrics are a result (stdout: `> train.out` keeps them)."""
    monkeypatch.setattr("cxrnets.train.PROGRESS_SECONDS", 0.0)  # a line at each read: every batch on the CPU
    with caplog.at_level(logging.INFO, logger="cxrnets.train"):
        assert main(tiny_cli_arguments(tiny_folder, tmp_path, "--epochs", "1")) == 0
    progress = re.findall(r"epoch 1/1: (\d+)/(\d+) images trained \(\d+\.\d images/s(?:, ~\d+ s left)?\)",
                          caplog.text)
    assert [int(done) for done, _ in progress][:2] == [4, 8] and len({total for _, total in progress}) == 1
    assert re.search(r"epoch 1/1: 4/\d+ images trained \(\d+\.\d images/s, ~\d+ s left\)", caplog.text)
    out = capsys.readouterr().out
    assert re.search(r"^epoch 1/1  train loss .*\(training \d+\.\d s, \d+\.\d images/s; \d+\.\d s with "
                     r"validation\)$", out, re.MULTILINE), out
    assert re.search(r"^test: loss [\d.]+  accuracy ", out, re.MULTILINE), out
    assert out.endswith(f"checkpoint: {tmp_path / 'run' / 'checkpoint.pt'}\n"), out


def test_cli_says_why_a_class_without_validation_images_gives_a_nan_roc_auc(tiny_folder: Path, tmp_path: Path,
                                                                            caplog, capsys) -> None:
    split_file = split_file_moving_bright(tiny_folder, tmp_path, "val", to="train")
    with caplog.at_level(logging.INFO, logger="cxrnets.train"):
        assert main(["--dataset", "folder", "--data-root", str(tiny_folder), "--image-size", "32", "--epochs", "1",
                     "--cache-dir", str(tmp_path / "cache"), "--split-file", str(split_file),
                     "--out", str(tmp_path / "run")]) == 0
    assert "roc_auc_macro nan" in capsys.readouterr().out
    assert ("no validation image of bright: val/precision_macro, recall_macro and f1_macro count it as 0, and "
            "val/roc_auc_macro is nan: no class there has images of it and images without it") in caplog.text
    assert "no test image" not in caplog.text


def test_cli_warns_of_a_class_without_training_images(tiny_folder: Path, tmp_path: Path, caplog) -> None:
    """The class is named with its patients on train/val/test (counted as a study counts them before it trains)."""
    split_file = split_file_moving_bright(tiny_folder, tmp_path, "train", to="test")
    split = pd.read_csv(split_file, dtype=str, keep_default_na=False)
    val, test = ((split["stratum"] == "bright") & (split["split"] == part) for part in ("val", "test"))
    with caplog.at_level(logging.INFO, logger="cxrnets.train"):
        assert main(tiny_cli_arguments(tiny_folder, tmp_path, "--epochs", "1", "--split-file", str(split_file))) == 0
    assert (f"no training image of bright (0/{val.sum()}/{test.sum()}) (patients on train/val/test): the model "
            "cannot learn it") in caplog.text


def test_cli_warns_of_a_batch_size_the_whole_training_split_fits_in(tiny_folder: Path, tmp_path: Path,
                                                                     caplog) -> None:
    """One step per epoch on the whole split, said: any larger --batch-size would train the same."""
    with caplog.at_level(logging.INFO, logger="cxrnets.train"):
        assert main(tiny_cli_arguments(tiny_folder, tmp_path, "--epochs", "1", "--batch-size", "64")) == 0
    assert re.search(r"--batch-size 64 is at least the training split's (\d+) images: each epoch trains one step "
                     r"on the whole split \(full-batch\), as every --batch-size from \1 up would", caplog.text)


def test_align_split_orders_like_the_data() -> None:
    frame = pd.DataFrame({"relpath": ["a", "b", "c"], "patient": ["1", "2", "3"], "sha1": ["x", "y", "z"]})
    split = frame.iloc[::-1].assign(stratum="s", split=["test", "val", "train"])
    aligned = align_split(split, frame, Path("split.csv"))
    assert list(aligned["relpath"]) == ["a", "b", "c"]
    assert list(aligned["split"]) == ["train", "val", "test"]
    with pytest.raises(CxrError) as refused:
        align_split(split, frame.iloc[:2], Path("split.csv"))
    assert str(refused.value) == ("split.csv: the dataset changed since this split was made (1 gone: c (sha1 z in the "
                                  "split)); the split is part of the study: restore the original file(s), or start a "
                                  "new study for the new data")
    assert (refused.value.gone, refused.value.new) == (["c"], [])  # what study.analyze names of a wrong --data-root


# ------------------------------------------------------------------ end to end on the embedded sample


def test_sample_run_reports_every_metric(sample_run) -> None:
    run, history = sample_run
    assert run.classes == ["COVID-19", "Other pneumonia", "No Finding"]
    assert not run.multilabel and isinstance(run.loss_fn, nn.CrossEntropyLoss)
    assert [metrics["epoch"] for metrics in history] == [1, 2]
    for metrics in history:
        assert METRIC_KEYS <= set(metrics)
        assert all(math.isfinite(value) for value in metrics.values())
        for key in ("val/accuracy", "val/precision_macro", "val/recall_macro", "val/f1_macro", "val/roc_auc_macro"):
            assert 0.0 <= metrics[key] <= 1.0
        assert metrics["epoch_seconds"] > 0 and metrics["images_per_second"] > 0
    # the split is patient-disjoint and every image is in exactly one part
    split = run.data.split
    assert (split.groupby("patient")["split"].nunique() == 1).all()
    assert len(split) == len(run.data.images) == len(run.data.targets)
    test_metrics, y_true, scores = run.evaluate_split("test")
    assert {"test/loss", "test/accuracy", "test/f1_macro"} <= set(test_metrics)
    assert scores.shape == (len(run.data.rows("test")), 3)
    np.testing.assert_allclose(scores.sum(axis=1), 1.0, rtol=1e-5)  # softmax probabilities


def test_the_validation_loss_does_not_depend_on_the_batch_size(sample_run) -> None:
    """A class-weighted loss's mean divides by the weights of the images it averages: taken per batch and
    averaged by image count, val/loss (the default tie-break, and a metric) moved with the trial's batch size."""
    run, _ = sample_run
    rows = run.data.rows("val")
    losses = [evaluate(run.forward, Batches(run.data.images, run.data.targets, rows, size, run.device, train=False),
                       run.loss_fn, run.multilabel)[0] for size in (1, 7, len(rows))]
    assert run.loss_fn.weight is not None and len(set(run.data.targets[rows])) > 1
    assert losses == pytest.approx([losses[-1]] * 3, rel=1e-5)


def test_checkpoint_loads_safely_and_restores(sample_run, tmp_path: Path) -> None:
    run, _ = sample_run
    torch.rand(8)  # as AlexNet's and VGG11's dropout advance torch's generator each epoch (ResNet50 draws nothing)
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(run.checkpoint(), path)
    assert torch.serialization.get_crc32_options()  # saving without the CRC left torch's own setting alone
    checkpoint = torch.load(path, weights_only=True)  # nothing in it needs pickle's code execution
    assert checkpoint["config"] == asdict(run.config)
    assert checkpoint["epoch"] == 2 and checkpoint["classes"] == run.classes and checkpoint["multilabel"] is False
    # a new run from the stored config (more epochs: resume) picks up where the first stopped
    config = TrainConfig(**{**checkpoint["config"], "epochs": 3})
    next_draws = torch.rand(4)  # what the first run's next dropout masks would draw from
    resumed = TrainingRun(config, data=run.data)  # seeds torch's generator afresh
    resumed.restore(checkpoint)
    assert torch.equal(torch.rand(4), next_draws)  # the resumed run draws what the first run would have
    assert resumed.epoch == 2
    for name, tensor in run.model.state_dict().items():
        assert torch.equal(tensor, resumed.model.state_dict()[name]), name
    assert resumed.optimizer.state_dict()["state"].keys() == run.optimizer.state_dict()["state"].keys()
    metrics = resumed.train_epoch()
    assert metrics["epoch"] == 3 and math.isfinite(metrics["train/loss"])


def test_multilabel_run_uses_bce(sample_cache: Path) -> None:
    run = TrainingRun(sample_config(sample_cache, dataset="covid-chestxray", epochs=1))
    assert run.multilabel and isinstance(run.loss_fn, nn.BCEWithLogitsLoss)
    assert run.data.targets.shape == (len(run.data.images), len(run.classes))
    assert {"COVID-19", "Viral", "Pneumonia", "No Finding"} <= set(run.classes)
    metrics = run.train_epoch()
    assert MULTILABEL_KEYS <= set(metrics)
    assert 0.0 <= metrics["val/subset_accuracy"] <= metrics["val/accuracy"] <= 1.0
    assert 0.0 <= metrics["val/roc_auc_macro"] <= 1.0
    _, _, scores = run.evaluate_split("val")
    assert ((scores >= 0) & (scores <= 1)).all()  # sigmoid, one probability per label


# ------------------------------------------------------------------ the CLI


CLI_SAMPLE_ARGUMENTS = ["--model", "resnet50", "--image-size", "32", "--batch-size", "32"]


def test_cli_refuses_an_out_it_cannot_write(sample_cache: Path, tmp_path: Path, capsys) -> None:
    (tmp_path / "a-file").write_text("")
    out = tmp_path / "a-file" / "run"
    assert main([*CLI_SAMPLE_ARGUMENTS, "--epochs", "1", "--cache-dir", str(sample_cache), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --out {out}: cannot write in {out} (Not a directory)") and "Traceback" not in err


@pytest.fixture(scope="module")
def cli_run(sample_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str]:
    """`python -m cxrnets.train` for 2 epochs of ResNet50 on the sample: its folder, its log and its stdout."""
    out = tmp_path_factory.mktemp("cli") / "run"
    lines, printed = io.StringIO(), io.StringIO()
    handler = logging.StreamHandler(lines)
    logger = logging.getLogger("cxrnets")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        with contextlib.redirect_stdout(printed):
            code = main([*CLI_SAMPLE_ARGUMENTS, "--epochs", "2", "--cache-dir", str(sample_cache), "--out", str(out)])
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    assert code == 0
    return out, lines.getvalue(), printed.getvalue()


def test_cli_trains_the_sample(cli_run: tuple[Path, str, str], sample_cache: Path) -> None:
    out, log_text, text = cli_run
    assert "resnet50 on covid-chestxray-3class" in log_text
    for epoch in (1, 2):  # one line per epoch with the loss and the validation metrics
        assert re.search(rf"epoch {epoch}/2 .*train loss [\d.]+.*(f1|F1)\S* [\d.]+", text), text
    assert re.search(r"test: .*loss [\d.]+", text)
    history = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [metrics["epoch"] for metrics in history] == [1, 2] and METRIC_KEYS <= set(history[0])
    checkpoint = torch.load(out / "checkpoint.pt", weights_only=True)
    assert checkpoint["epoch"] == 2
    assert checkpoint["config"]["model"] == "resnet50" and checkpoint["config"]["image_size"] == 32
    assert checkpoint["config"]["cache_dir"] == str(sample_cache)
    assert not (out / "checkpoint.pt.partial").exists()


def test_cli_resume_continues_the_run_as_if_uninterrupted(cli_run: tuple[Path, str, str], sample_cache: Path,
                                                          tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """A run stopped after epoch 1 and resumed to epoch 2 ends where one uninterrupted run ends; a folder that
    holds a run is never overwritten, and a resume with other options is refused, naming them."""
    arguments = [*CLI_SAMPLE_ARGUMENTS, "--cache-dir", str(sample_cache)]
    whole, parts = cli_run[0], tmp_path / "parts"
    assert main([*arguments, "--epochs", "1", "--out", str(parts)]) == 0
    first_checkpoint = (parts / "checkpoint.pt").read_bytes()

    assert main([*arguments, "--epochs", "2", "--out", str(parts)]) == 2  # a second run into the same folder
    err = capsys.readouterr().err
    assert f"{parts} already holds a run (checkpoint.pt, metrics.jsonl): pass --resume" in err, err
    assert main([*arguments, "--epochs", "2", "--lr", "0.01", "--out", str(parts), "--resume"]) == 2
    err = capsys.readouterr().err
    assert "trained another configuration (lr 0.001 in the checkpoint, 0.01 now)" in err, err
    assert main([*arguments, "--epochs", "2", "--val-fraction", "0.2", "--out", str(parts), "--resume"]) == 2
    assert "(val_fraction 0.15 in the checkpoint, 0.2 now)" in capsys.readouterr().err
    assert main([*arguments, "--epochs", "1", "--out", str(parts), "--resume"]) == 0  # evaluates, trains nothing
    assert len((parts / "metrics.jsonl").read_text().splitlines()) == 1
    assert main([*arguments, "--epochs", "0", "--out", str(parts), "--resume"]) == 2
    assert capsys.readouterr().err == "error: --epochs must be a positive integer, got 0\n"
    assert main([*arguments, "--out", str(tmp_path / "empty"), "--resume"]) == 2
    assert "checkpoint.pt does not exist: nothing to continue" in capsys.readouterr().err
    assert (parts / "checkpoint.pt").read_bytes() == first_checkpoint  # nothing was overwritten

    # An interruption after epoch 2's metrics were recorded but before its checkpoint replaced epoch 1's,
    # one of them cut short: the resume trains epoch 2 again and records it once.
    history = parts / "metrics.jsonl"
    history.write_text(history.read_text() + json.dumps({"epoch": 2, "train/loss": 9.9}) + "\n" + '{"epoch": 2, "tr')
    assert main([*arguments, "--epochs", "2", "--out", str(parts), "--resume"]) == 0

    def without_timings(line: str) -> dict:
        return {k: v for k, v in json.loads(line).items() if k not in ("epoch_seconds", "images_per_second")}

    resumed = [without_timings(line) for line in history.read_text().splitlines()]
    uninterrupted = [without_timings(line) for line in (whole / "metrics.jsonl").read_text().splitlines()]
    assert resumed == uninterrupted and [m["epoch"] for m in resumed] == [1, 2]
    weights = torch.load(parts / "checkpoint.pt", weights_only=True)["model"]
    for name, tensor in torch.load(whole / "checkpoint.pt", weights_only=True)["model"].items():
        assert torch.equal(tensor, weights[name]), name
    capsys.readouterr()
    assert main([*arguments, "--epochs", "1", "--out", str(parts), "--resume"]) == 2
    assert "is at epoch 2 already, past --epochs 1: raise --epochs" in capsys.readouterr().err


@pytest.mark.parametrize("start", ["--weights", "--pretrained"])
def test_cli_resume_reads_no_starting_weights(tiny_folder: Path, tmp_path: Path, capsys, monkeypatch,
                                             start: str) -> None:
    """The checkpoint holds every weight: a resume reads neither the --weights file the run started from (deleted
    since) nor torchvision's ImageNet weights (offline, not in its cache)."""
    import torchvision

    from cxrnets.models import imagenet_weights_path

    def offline(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    weights = tmp_path / "start.pt" if start == "--weights" else imagenet_weights_path("resnet50")
    weights.parent.mkdir(parents=True, exist_ok=True)
    torch.save(torchvision.models.resnet50().state_dict(), weights)
    options = ["--weights", str(weights)] if start == "--weights" else ["--pretrained"]
    assert main(tiny_cli_arguments(tiny_folder, tmp_path, *options, "--epochs", "1")) == 0
    weights.unlink()
    assert main(tiny_cli_arguments(tiny_folder, tmp_path, *options, "--epochs", "2", "--resume")) == 0, \
        capsys.readouterr().err
    assert torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["epoch"] == 2


@pytest.mark.parametrize("saved_classes, head_loaded", [(["bright", "dark"], True), (["dark", "bright"], False)])
def test_a_run_starts_from_a_checkpoints_head_only_where_it_scores_the_runs_classes(
        tiny_folder: Path, tmp_path: Path, saved_classes: list[str], head_loaded: bool) -> None:
    """--weights from one of our checkpoints: its head is kept where its classes are the run's, in their order;
    in another order it is re-initialised (it would start the run with each class's outputs swapped)."""
    from cxrnets.models import build_model

    state = build_model("resnet50", 2).state_dict()
    weights = tmp_path / "start.pt"
    torch.save({"model": state, "classes": saved_classes, "multilabel": False}, weights)
    run = TrainingRun(tiny_config(tiny_folder, tmp_path / "cache", weights=str(weights)))
    assert run.classes == ["bright", "dark"]
    assert torch.equal(run.model.state_dict()["fc.weight"].cpu(), state["fc.weight"]) == head_loaded
    assert torch.equal(run.model.state_dict()["conv1.weight"].cpu(), state["conv1.weight"])


def test_cli_resume_takes_the_data_and_the_starting_weights_from_where_they_moved(tiny_folder: Path,
                                                                                   tmp_path: Path, capsys) -> None:
    """The data folder and the starting weights file moved since the run started (a re-clone, a reinstall that
    moved the embedded sample, another mount): the resume reads the data where it is now (the split digest
    checks it is the same data), and its checkpoint keeps naming the weights file the run started from."""
    from cxrnets.models import build_model

    weights = tmp_path / "start.pt"
    torch.save(build_model("resnet50", 2).state_dict(), weights)
    assert main(tiny_cli_arguments(tiny_folder, tmp_path, "--weights", str(weights), "--epochs", "1")) == 0
    moved = tmp_path / "moved"
    moved.mkdir()
    tiny_folder.rename(moved / "folder")
    weights.rename(moved / "start.pt")
    assert main(tiny_cli_arguments(moved / "folder", tmp_path, "--weights", str(moved / "start.pt"), "--epochs", "2",
                                   "--resume")) == 0, capsys.readouterr().err
    checkpoint = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert checkpoint["epoch"] == 2 and checkpoint["config"]["data_root"] == str(moved / "folder")
    assert checkpoint["config"]["weights"] == str(weights)


def test_cli_resume_on_data_that_splits_differently_is_refused(tiny_folder: Path, tmp_path: Path, write_image,
                                                               capsys) -> None:
    """Without --split-file the split is made again from the data: images added since would move held-out
    images into training."""
    arguments = ["--dataset", "folder", "--data-root", str(tiny_folder), "--image-size", "32", "--batch-size", "4",
                 "--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path / "run")]
    assert main([*arguments, "--epochs", "1"]) == 0
    for number in range(8):
        write_image(tiny_folder / "dark" / f"later-{number}.png", "L", 60, seed=900 + number)
    assert main([*arguments, "--epochs", "2", "--resume"]) == 2
    assert ("error: --resume: the split made from the data now differs from the one "
            f"{tmp_path / 'run' / 'checkpoint.pt'} trained on (images added, removed or changed since; or the run "
            "was made by an earlier cxr-tune") in capsys.readouterr().err


@pytest.mark.parametrize("digest", ["kept", "none yet"])
def test_cli_resume_of_a_run_split_before_near_identical_x_rays_were_joined_continues_on_its_split(
        make_radiography_copies, tmp_path: Path, caplog, digest) -> None:
    """A run made before splits joined near-identical X-rays trained on the split made without them: its resume
    continues on that split (said in the log), not refused as data that changed, nor moved onto today's split
    (which would train on images it held out) where its checkpoint is older still and holds no split digest."""
    from cxrnets.splits import make_split, split_digest

    root, _ = make_radiography_copies()
    config = TrainConfig(dataset="covid-radiography", data_root=str(root), image_size=32,
                         cache_dir=str(tmp_path / "cache"))
    data = prepare_data(config)
    frame = data.index.frame.assign(sha1=data.split["sha1"].to_numpy())
    seed, before = next((seed, split) for seed in range(20) for split in [make_split(frame, data.index.stratum(),
                        seed=seed, in_listed_order=True)] if split_digest(split) != split_digest(prepare_data(replace(config,
                                                                                                seed=seed)).split))
    arguments = ["--dataset", "covid-radiography", "--data-root", str(root), "--image-size", "32", "--batch-size",
                 "8", "--seed", str(seed), "--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path / "run")]
    assert main([*arguments, "--epochs", "1"]) == 0
    checkpoint_path = tmp_path / "run" / "checkpoint.pt"
    checkpoint = torch.load(checkpoint_path, weights_only=False)
    checkpoint.pop("split_digest")
    if digest == "kept":
        checkpoint["split_digest"] = split_digest(before)
    save_checkpoint(checkpoint, checkpoint_path)  # as a run from then

    with caplog.at_level(logging.INFO, logger="cxrnets.train"):
        assert main([*arguments, "--epochs", "2", "--resume"]) == 0
    assert (f"{checkpoint_path} trained on the split made before near-identical X-rays were kept on one side" if
            digest == "kept" else f"{checkpoint_path} has no split digest (an earlier cxr-tune wrote it): it continues "
            "on the split made before near-identical X-rays were kept on one side, as then") in caplog.text
    assert torch.load(checkpoint_path, weights_only=False)["split_digest"] == split_digest(before)


def resume_as_if_split_then(arguments: list[str], out: Path, before: pd.DataFrame, caplog) -> Path:
    """Mark the run in `out` as trained on the split `before` (as a run from an earlier rule), resume it for a second
    epoch with `arguments`, and check that it kept that split; its checkpoint's path."""
    from cxrnets.splits import split_digest

    checkpoint_path = out / "checkpoint.pt"
    checkpoint = torch.load(checkpoint_path, weights_only=False)
    save_checkpoint({**checkpoint, "split_digest": split_digest(before)}, checkpoint_path)
    with caplog.at_level(logging.INFO, logger="cxrnets.train"):
        assert main([*arguments, "--epochs", "2", "--resume"]) == 0
    assert torch.load(checkpoint_path, weights_only=False)["split_digest"] == split_digest(before)
    return checkpoint_path


def test_cli_resume_of_a_run_split_in_the_order_the_data_lists_its_images_continues_on_its_split(
        make_chestxray, tmp_path: Path, caplog) -> None:
    """Splits took the images in the order the data lists them before they were made in the order of their paths:
    a run made then, on data listed in another order than its paths, continues on its own split (said in the log),
    not refused as data that changed, nor moved onto today's split."""
    from cxrnets.fingerprints import cache_fingerprints
    from cxrnets.splits import make_split, split_digest

    root = make_chestxray()
    metadata = pd.read_csv(root / "metadata.csv", dtype=str, keep_default_na=False)
    metadata.iloc[::-1].to_csv(root / "metadata.csv", index=False)
    config = TrainConfig(dataset="covid-chestxray-3class", data_root=str(root), image_size=32,
                         cache_dir=str(tmp_path / "cache"))
    data = prepare_data(config)
    frame, prints = data.index.frame.assign(sha1=data.split["sha1"].to_numpy()), cache_fingerprints(data.cache)
    seed, before = next((seed, split) for seed in range(20)
                        for split in [make_split(frame, data.index.stratum(), seed=seed, fingerprints=prints,
                                                 in_listed_order=True)]
                        if split_digest(split) != split_digest(prepare_data(replace(config, seed=seed)).split))
    arguments = ["--dataset", "covid-chestxray-3class", "--data-root", str(root), "--image-size", "32",
                 "--batch-size", "8", "--seed", str(seed), "--cache-dir", str(tmp_path / "cache"),
                 "--out", str(tmp_path / "run")]
    assert main([*arguments, "--epochs", "1"]) == 0
    checkpoint_path = resume_as_if_split_then(arguments, tmp_path / "run", before, caplog)
    assert (f"{checkpoint_path} trained on the split made when images were split in the order the data lists them "
            "(now in the order of their paths): it continues on that split") in caplog.text


def test_cli_resume_of_a_run_split_when_fewer_fingerprint_bits_joined_x_rays_continues_on_its_split(
        real_chestxray: Path, tmp_path: Path, caplog) -> None:
    """Splits joined near-identical X-rays within 48 fingerprint bits before; on the real copy at 64 px (the size
    every run is fingerprinted at now) that split differs from today's. A run made then continues on its own split
    (said in the log), not refused as data that changed, nor moved onto today's split."""
    from cxrnets.fingerprints import EARLIER_NEAR_IDENTICAL_BITS, cache_fingerprints
    from cxrnets.splits import make_split, split_digest

    arguments = ["--dataset", "covid-chestxray-3class", "--data-root", str(real_chestxray), "--image-size", "64",
                 "--model", "alexnet", "--batch-size", "64", "--cache-dir", str(tmp_path / "cache"),
                 "--out", str(tmp_path / "run")]
    assert main([*arguments, "--epochs", "1"]) == 0
    config = TrainConfig(dataset="covid-chestxray-3class", data_root=str(real_chestxray), model="alexnet",
                         cache_dir=str(tmp_path / "cache"))
    data = prepare_data(config)
    before = make_split(data.index.frame.assign(sha1=data.split["sha1"].to_numpy()), data.index.stratum(),
                        fingerprints=cache_fingerprints(data.cache), near_identical_bits=EARLIER_NEAR_IDENTICAL_BITS,
                        in_listed_order=True)
    assert split_digest(before) != split_digest(data.split)
    checkpoint_path = resume_as_if_split_then(arguments, tmp_path / "run", before, caplog)
    assert (f"{checkpoint_path} trained on the split made when near-identical X-rays were joined within 48 "
            "fingerprint bits (now 60): it continues on that split") in caplog.text


def tiny_cli_arguments(root: Path, tmp_path: Path, *more: str) -> list[str]:
    """`python -m cxrnets.train` on a tiny_folder dataset, into tmp_path/run."""
    return ["--dataset", "folder", "--data-root", str(root), "--image-size", "32", "--batch-size", "4",
            "--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path / "run"), *more]


def recorded_epochs(out: Path) -> list[int]:
    return [json.loads(line)["epoch"] for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_cli_a_run_stopped_before_its_first_checkpoint_starts_again_with_the_same_command(
        tiny_folder: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    """Ctrl-C while epoch 1's checkpoint is written, after its metrics line: the folder holds no run to continue
    (no checkpoint.pt), so --resume says to leave it out, and the same command starts the run there again."""
    import cxrnets.training

    save_checkpoint = cxrnets.training.save_checkpoint

    def save_then_ctrl_c(checkpoint, path):
        save_checkpoint(checkpoint, path)  # checkpoint.pt.partial is written: Ctrl-C lands before its rename
        raise KeyboardInterrupt

    out, arguments = tmp_path / "run", tiny_cli_arguments(tiny_folder, tmp_path, "--epochs", "1")
    monkeypatch.setattr(cxrnets.training, "save_checkpoint", save_then_ctrl_c)
    assert main(arguments) == 130
    assert recorded_epochs(out) == [1] and not (out / "checkpoint.pt").exists()
    monkeypatch.setattr(cxrnets.training, "save_checkpoint", save_checkpoint)
    capsys.readouterr()
    assert main([*arguments, "--resume"]) == 2
    assert (f"--resume: {out / 'checkpoint.pt'} does not exist: nothing to continue (leave out --resume to start "
            "a run)") in capsys.readouterr().err
    assert main(arguments) == 0
    assert recorded_epochs(out) == [1] and torch.load(out / "checkpoint.pt", weights_only=True)["epoch"] == 1
    assert not (out / "checkpoint.pt.partial").exists()


@pytest.mark.parametrize("bits", [60, 48])
def test_cli_resume_of_a_run_whose_split_fingerprinted_its_own_image_size_continues_on_its_split(
        real_chestxray: Path, tmp_path: Path, caplog, bits: int) -> None:
    """Splits fingerprinted images at the run's own size before (at 32 px where smaller), and joined within 48 bits
    before that; on the real copy at 32 px both splits differ from today's, made from 64 px fingerprints at every
    size (at seed 0, 199 of its 523 images on another side). A run made then continues on its own split (said in
    the log), not refused as data that changed, nor moved onto today's split."""
    from cxrnets.fingerprints import fingerprints
    from cxrnets.splits import make_split, split_digest

    arguments = ["--dataset", "covid-chestxray-3class", "--data-root", str(real_chestxray), "--image-size", "32",
                 "--batch-size", "64", "--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path / "run")]
    assert main([*arguments, "--epochs", "1"]) == 0
    config = TrainConfig(dataset="covid-chestxray-3class", data_root=str(real_chestxray), image_size=32,
                         cache_dir=str(tmp_path / "cache"))
    data = prepare_data(config)
    before = make_split(data.index.frame.assign(sha1=data.split["sha1"].to_numpy()), data.index.stratum(),
                        fingerprints=fingerprints(data.cache.images), near_identical_bits=bits, in_listed_order=True)
    assert split_digest(before) != split_digest(data.split)
    checkpoint_path = resume_as_if_split_then(arguments, tmp_path / "run", before, caplog)
    made = ("near-identical X-rays were found at the run's own 32 px (now at 64 px, at every size)" if bits == 60 else
            "near-identical X-rays were joined within 48 fingerprint bits (now 60), found at the run's own 32 px "
            "(now at 64 px, at every size)")
    assert f"{checkpoint_path} trained on the split made when {made}: it continues on that split" in caplog.text


def test_cli_ctrl_c_says_which_epoch_is_kept_and_how_to_continue(sample_cache: Path, tmp_path: Path, capsys,
                                                                 monkeypatch) -> None:
    """Ctrl-C (KeyboardInterrupt) in the second epoch: the first epoch's checkpoint stays, the command says
    so and how to continue, and exits 130; --resume then trains the second epoch."""
    from cxrnets.training import TrainingRun

    train_epoch, calls = TrainingRun.train_epoch, []

    def interrupted_second_epoch(self, progress=None):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return train_epoch(self, progress)

    monkeypatch.setattr(TrainingRun, "train_epoch", interrupted_second_epoch)
    out = tmp_path / "run"
    arguments = [*CLI_SAMPLE_ARGUMENTS, "--epochs", "2", "--cache-dir", str(sample_cache), "--out", str(out)]
    assert main(arguments) == 130
    err = capsys.readouterr().err
    assert err == (f"interrupted in epoch 2: {out / 'checkpoint.pt'} holds epoch 1; continue the run with the same "
                   "command and --resume\n")
    assert torch.load(out / "checkpoint.pt", weights_only=True)["epoch"] == 1
    assert main([*arguments, "--resume"]) == 0
    assert [json.loads(line)["epoch"] for line in (out / "metrics.jsonl").read_text().splitlines()] == [1, 2]


def test_cli_ctrl_c_in_the_first_epoch_says_to_run_the_same_command_again(tiny_folder: Path, tmp_path: Path,
                                                                          capsys, monkeypatch) -> None:
    """No checkpoint to continue from: the same command, without --resume, starts the run again."""
    from cxrnets.training import TrainingRun

    def ctrl_c(self, progress=None):
        raise KeyboardInterrupt

    arguments = tiny_cli_arguments(tiny_folder, tmp_path, "--epochs", "1")
    with monkeypatch.context() as patch:
        patch.setattr(TrainingRun, "train_epoch", ctrl_c)
        assert main(arguments) == 130
    assert capsys.readouterr().err == ("interrupted in epoch 1: no checkpoint was written yet; run the same command "
                                       "again to start the run over\n")
    assert main(arguments) == 0 and recorded_epochs(tmp_path / "run") == [1]


@pytest.mark.parametrize("resume", [False, True])
def test_cli_ctrl_c_before_training_says_to_run_the_same_command_again(tiny_folder: Path, tmp_path: Path, capsys,
                                                                       monkeypatch, resume: bool) -> None:
    """Ctrl-C while the dataset is decoded into the cache (or anywhere before the first epoch starts): one line,
    status 130, and the same command then runs."""
    import cxrnets.training

    arguments = tiny_cli_arguments(tiny_folder, tmp_path, "--epochs", "2" if resume else "1",
                                   *(["--resume"] if resume else []))
    if resume:
        assert main(tiny_cli_arguments(tiny_folder, tmp_path, "--epochs", "1")) == 0
        capsys.readouterr()

    def ctrl_c(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(cxrnets.training, "build_cache", ctrl_c)
        assert main(arguments) == 130
    assert capsys.readouterr().err == "interrupted before training started: run the same command again\n"
    assert main(arguments) == 0 and recorded_epochs(tmp_path / "run") == ([1, 2] if resume else [1])


def test_cli_ctrl_c_while_torch_loads_ends_in_one_line(tiny_folder: Path, tmp_path: Path, capsys,
                                                      monkeypatch) -> None:
    """Ctrl-C in the first seconds (the output folder's check loads torch): one line and status 130, no
    traceback."""
    import cxrnets.training

    def ctrl_c(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cxrnets.training, "check_output_folder", ctrl_c)
    assert main(tiny_cli_arguments(tiny_folder, tmp_path, "--epochs", "1")) == 130
    assert capsys.readouterr().err == "interrupted before training started: run the same command again\n"


def test_cli_ctrl_c_in_the_test_evaluation_says_the_trained_model_is_kept(tiny_folder: Path, tmp_path: Path,
                                                                          capsys, monkeypatch) -> None:
    from cxrnets.training import TrainingRun

    evaluate_split = TrainingRun.evaluate_split

    def ctrl_c_in_test(self, split):
        if split == "test":
            raise KeyboardInterrupt
        return evaluate_split(self, split)

    monkeypatch.setattr(TrainingRun, "evaluate_split", ctrl_c_in_test)
    out = tmp_path / "run"
    assert main(tiny_cli_arguments(tiny_folder, tmp_path, "--epochs", "1")) == 130
    assert capsys.readouterr().err == (f"interrupted in the test evaluation: {out / 'checkpoint.pt'} holds the "
                                       "trained model (epoch 1); its test metrics were not computed: the same "
                                       "command with --resume computes them, training nothing more\n")
    monkeypatch.undo()
    assert main(tiny_cli_arguments(tiny_folder, tmp_path, "--epochs", "1", "--resume")) == 0
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 1


@pytest.mark.parametrize("arguments, message", [
    (["--model", "resnet18"], "invalid choice: 'resnet18'"),
    (["--optimizer", "rmsprop"], "invalid choice: 'rmsprop'"),
    (["--dataset", "chexpert"], "invalid choice: 'chexpert'"),
    (["--lr", "fast"], "invalid float value: 'fast'"),
    (["--batch-size", "3.5"], "invalid int value: '3.5'"),
    (["--no-such-flag"], "unrecognized arguments: --no-such-flag"),
    (["--momentum", "0.5"], "error: --momentum 0.5 with --optimizer adam: momentum is SGD's, adam would ignore it; "
                            "drop --momentum, or choose --optimizer sgd"),
    # SGD's default value, typed: refused too, not taken for the default
    (["--optimizer", "adam", "--momentum", "0.9"], "error: --momentum 0.9 with --optimizer adam"),
])
def test_cli_bad_flags(arguments: list[str], message: str, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(arguments)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("arguments, message", [
    (["--lr", "0"], "error: --lr must be a positive number, got 0.0"),
    (["--lr", "-0.001"], "error: --lr"),
    (["--batch-size", "0"], "error: --batch-size must be a positive integer"),
    (["--epochs", "-1"], "error: --epochs"),
    (["--model", "alexnet", "--image-size", "32"], "--image-size 32 is too small for model 'alexnet'"),
    (["--val-fraction", "0.6", "--test-fraction", "0.4"], "error: --val-fraction 0.6 and --test-fraction 0.4: each "
     "must lie between 0 and 1, and together leave patients to train on (sum below 1)"),
    (["--test-fraction", "0"], "error: --val-fraction 0.15 and --test-fraction 0: each must lie"),
    (["--seed", "-1"], "error: --seed -1: a seed is a whole number"),
    (["--device", "tpu"], "error: --device 'tpu': choose auto"),
])
def test_cli_bad_values(arguments: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main([*arguments, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_cli_split_fractions_make_the_split(tiny_folder: Path, tmp_path: Path) -> None:
    """--val-fraction and --test-fraction, which the split's errors advise, are the command's own."""
    arguments = tiny_cli_arguments(tiny_folder, tmp_path)
    parts = {}
    for fractions in (["--val-fraction", "0.15", "--test-fraction", "0.15"],
                      ["--val-fraction", "0.4", "--test-fraction", "0.2"]):
        config, _, _ = parse_args([*arguments, *fractions])
        parts[fractions[1]] = prepare_data(config).split["split"].value_counts().to_dict()
    assert config.val_fraction == 0.4 and config.test_fraction == 0.2
    assert parts["0.4"]["val"] > parts["0.15"]["val"] and parts["0.4"]["train"] < parts["0.15"]["train"]


@pytest.mark.parametrize("typed, meant", [("cache", "cache"), ("~/cache", "home/cache")])
def test_cli_keeps_a_relative_cache_dir_as_the_folder_it_named(tmp_path: Path, monkeypatch, typed: str,
                                                              meant: str) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    config, _, _ = parse_args(["--cache-dir", typed])
    assert config.cache_dir == str(tmp_path / meant)


def test_cli_missing_data_root(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code = main(["--data-root", str(tmp_path / "nowhere"), "--out", str(tmp_path / "out" / "run")])
    assert code == 2
    assert "nowhere does not exist" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # the probe of --out leaves nothing behind


def test_cli_help_explains_every_flag(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--dataset", "--data-root", "--model", "--optimizer", "--lr", "--batch-size", "--epochs",
                 "--image-size", "--pretrained", "--weights", "--seed", "--val-fraction", "--test-fraction",
                 "--split-file", "--cache-dir", "--out", "--resume"):
        assert flag in text
    assert "default: 0.001" in text and "default: resnet50" in text
    assert "default: None" not in " ".join(text.split())  # a default that is no value is said in words


def test_cli_refuses_an_out_another_run_is_writing_and_a_killed_run_leaves_it_free(tiny_folder: Path,
                                                                                    tmp_path: Path, capsys) -> None:
    """A --resume while the run still trains would write metrics.jsonl and checkpoint.pt beside it: it is refused,
    naming the process that holds --out; once that process is killed, the resume goes ahead."""
    import os
    import subprocess
    import sys
    import time

    out, arguments = tmp_path / "run", tiny_cli_arguments(tiny_folder, tmp_path, "--epochs", "1")
    assert main(arguments) == 0
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pathlib import Path; from cxrnets.train import out_folder_lock\n"
         "with out_folder_lock(Path(sys.argv[1])):\n    print('held', flush=True); time.sleep(600)", str(out)],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": os.getcwd()})
    try:
        assert holder.stdout.readline() == "held\n"
        capsys.readouterr()
        started = time.monotonic()
        assert main([*arguments[:-1], "2", "--resume"]) == 2
        err = capsys.readouterr().err
        assert f"--out {out} is in use by process {holder.pid} (a python -m cxrnets.train writing there" in err, err
        assert time.monotonic() - started < 5  # refused before the data is read
        assert recorded_epochs(out) == [1]
    finally:
        holder.kill()  # as kill -9 or an out-of-memory kill would end it: no chance to release anything
        holder.wait()
    assert main([*arguments[:-1], "2", "--resume"]) == 0, capsys.readouterr().err
    assert recorded_epochs(out) == [1, 2]


@pytest.mark.parametrize("content, message", [
    (b"", "an empty file (0 bytes)"),
    (b"version https://git-lfs.github.com/spec/v1\noid sha256:4f1e\nsize 94371234\n",
     "a git-LFS pointer, not the file it stands for: run git lfs pull"),
    (b"<!DOCTYPE html>\n<html><body>Sign in</body></html>\n", "not a PyTorch checkpoint (it starts with "
                                                             "b'<!DOCTYPE html>\\n<html><b')"),
])
def test_load_checkpoint_says_what_a_file_is_instead(tmp_path: Path, content: bytes, message: str) -> None:
    """Not torch's advice to re-save the file with _use_new_zipfile_serialization=True (which its mmap gives
    for any file that is not a zip): what the file is."""
    from cxrnets.training import load_checkpoint

    path = tmp_path / "best.pt"
    path.write_bytes(content)
    with pytest.raises(CxrError) as error:
        load_checkpoint(path)
    assert str(error.value).startswith(f"{path}: {message}"), error.value
    assert "zipfile" not in str(error.value)


@pytest.mark.parametrize("legacy", [False, True])
def test_a_truncated_checkpoint_is_called_truncated_or_corrupt_in_whole_words(tmp_path: Path, legacy: bool) -> None:
    """torch's message was cut at 200 characters: '... a high likelihood that your checkpoint file is)'."""
    from cxrnets.training import load_checkpoint

    whole, path = tmp_path / "whole.pt", tmp_path / "best.pt"
    torch.save({"model": {"fc.weight": torch.ones(64, 64)}, "epoch": 1, "config": {}, "classes": ["a", "b"],
                "multilabel": False}, whole, _use_new_zipfile_serialization=not legacy)
    path.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(CxrError) as error:
        load_checkpoint(path)
    message = str(error.value)
    assert message.startswith(f"{path}: not a readable checkpoint (truncated or corrupt: "), message
    assert message.endswith("): a copy, download or save that did not finish? copy the file again"), message
    assert "likelihood" not in message


@pytest.mark.parametrize("kind", ["whole model", "whole model, legacy format", "pickle", "pickle, protocol 2"])
def test_an_intact_file_of_another_kind_is_named_as_such_not_truncated(tmp_path: Path, kind: str) -> None:
    """A whole model (torch.save(model)), or a study's tuner.pkl, was called truncated or corrupt, with the advice
    to copy it again, after torch's UserWarning about its pickle protocol."""
    import pickle
    import warnings

    from cxrnets.training import load_checkpoint

    path = tmp_path / "model.pt"
    if kind.startswith("whole model"):
        torch.save(nn.Linear(2, 3), path, _use_new_zipfile_serialization=not kind.endswith("legacy format"))
        said = "a pickled torch.nn.modules.linear.Linear (a whole model saved with torch.save(model)?), not the " \
               "model's weights: pass a study's weights/<trial id>.pt"
    else:
        path.write_bytes(pickle.dumps({"a": 1}, protocol=2 if kind.endswith("2") else 5))
        said = "a Python pickle (as pickle.dump writes: a study's tuner.pkl, say), not a PyTorch checkpoint: pass " \
               "a study's weights/<trial id>.pt"
    with warnings.catch_warnings(record=True) as warned, pytest.raises(CxrError) as error:
        warnings.simplefilter("always")
        load_checkpoint(path)
    assert str(error.value).startswith(f"{path}: {said}"), error.value
    assert "truncated" not in str(error.value)
    assert not [w for w in warned if "pickle protocol" in str(w.message)]


def test_load_checkpoint_reads_a_checkpoint_in_torchs_legacy_format(tmp_path: Path) -> None:
    from cxrnets.training import TRAINED_MODEL_KEYS, load_checkpoint

    path = tmp_path / "legacy.pt"
    checkpoint = {"model": {"fc.bias": torch.ones(2)}, "epoch": 3, "config": {"model": "resnet50"},
                  "classes": ["a", "b"], "multilabel": False}
    assert set(checkpoint) == set(TRAINED_MODEL_KEYS)
    torch.save(checkpoint, path, _use_new_zipfile_serialization=False)
    loaded = load_checkpoint(path)
    assert loaded["epoch"] == 3 and torch.equal(loaded["model"]["fc.bias"], torch.ones(2))


def test_cli_resume_of_a_run_started_from_a_weights_file_needs_no_weights_option(tiny_folder: Path, tmp_path: Path,
                                                                                  capsys) -> None:
    """--weights may change on a resume (the checkpoint holds every weight), so it may be left out too: the run
    was pretrained by its weights file, as its checkpoint says."""
    from cxrnets.models import build_model

    weights = tmp_path / "start.pt"
    torch.save(build_model("resnet50", 2).state_dict(), weights)
    assert main(tiny_cli_arguments(tiny_folder, tmp_path, "--weights", str(weights), "--epochs", "1")) == 0
    assert main(tiny_cli_arguments(tiny_folder, tmp_path, "--epochs", "2", "--resume")) == 0, capsys.readouterr().err
    config = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["config"]
    assert config["pretrained"] is True and config["weights"] == str(weights)


def test_cli_resume_from_a_studys_weights_says_to_fine_tune_from_them(tiny_folder: Path, tmp_path: Path,
                                                                      capsys) -> None:
    """A study's weights/<trial id>.pt copied in as checkpoint.pt holds the model but no optimizer state: there is
    no run to continue, but a new one can start from those weights."""
    out = tmp_path / "run"
    out.mkdir()
    save_checkpoint({"model": {}, "epoch": 3, "config": asdict(tiny_config(tiny_folder, tmp_path)),
                     "classes": ["bright", "dark"], "multilabel": False}, out / "checkpoint.pt")
    assert main(tiny_cli_arguments(tiny_folder, tmp_path, "--resume")) == 2
    err = capsys.readouterr().err
    assert (f"--resume: {out / 'checkpoint.pt'} holds no optimizer state (a study's best weights?): start a new run "
            "with --weights FILE to fine-tune from it") in err, err
    assert "pass a study's weights" not in err


@pytest.mark.parametrize("weights, message", [
    ("missing.pt", "missing.pt does not exist"),
    ("s3://bucket/study/weights/abc.pt", "s3://bucket/study/weights/abc.pt is a URL, not a local file"),
    ("alexnet.pt", "does not fit model 'resnet50'"),
    ("empty.pt", "empty.pt: an empty file (0 bytes), not a state dict: a copy, download or save that did not finish?"),
    ("model.pt", "model.pt: a pickled torch.nn.modules.linear.Linear (a whole model saved with torch.save(model)?), "
                 "not the model's weights: pass a file saved with torch.save(model.state_dict())"),
])
def test_cli_refuses_a_starting_weights_file_before_reading_the_data(tiny_folder: Path, tmp_path: Path, capsys,
                                                                     monkeypatch, weights: str, message: str) -> None:
    import cxrnets.training
    from cxrnets.models import build_model

    if weights == "alexnet.pt":
        weights = str(tmp_path / weights)
        torch.save(build_model("alexnet", 2).state_dict(), weights)
    elif weights == "empty.pt":
        weights = str(tmp_path / weights)
        Path(weights).write_bytes(b"")
    elif weights == "model.pt":  # torch's own message advised add_safe_globals: loading it unsafely
        weights = str(tmp_path / weights)
        torch.save(nn.Linear(2, 3), weights)
    elif "://" not in weights:
        weights = str(tmp_path / weights)

    def unread(*args, **kwargs):
        raise AssertionError("the data was read")

    monkeypatch.setattr(cxrnets.training, "prepare_data", unread)
    assert main(tiny_cli_arguments(tiny_folder, tmp_path, "--weights", weights)) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "safe_globals" not in err, err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("cache, message", [
    ("empty", "the ImageNet weights for model 'resnet50' are not available (the download failed: OSError: network "
              "is unreachable)"),
    ("damaged", "of the ImageNet weights for model 'resnet50' is not a readable state dict (truncated or corrupt: "),
])
def test_cli_fetches_and_checks_the_imagenet_weights_before_reading_the_data(tiny_folder: Path, tmp_path: Path,
                                                                             capsys, monkeypatch, cache: str,
                                                                             message: str) -> None:
    import cxrnets.training
    from cxrnets.models import imagenet_weights_path

    def offline(*args, **kwargs):
        raise OSError("network is unreachable")

    def unread(*args, **kwargs):
        raise AssertionError("the data was read")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    monkeypatch.setattr(cxrnets.training, "prepare_data", unread)
    if cache == "damaged":
        imagenet_weights_path("resnet50").parent.mkdir(parents=True)
        torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7)}, imagenet_weights_path("resnet50"))
        imagenet_weights_path("resnet50").write_bytes(imagenet_weights_path("resnet50").read_bytes()[:200])
    assert main(tiny_cli_arguments(tiny_folder, tmp_path, "--pretrained")) == 2
    err = capsys.readouterr().err
    assert message in err and err.rstrip().endswith("; or train from scratch (without --pretrained)"), err
    assert str(imagenet_weights_path("resnet50")) in err
