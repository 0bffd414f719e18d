"""`python -m cxrnets.predict`: a trained model's probabilities on new image files, as evaluation computes them."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import cxrnets.predict
from cxrnets.config import TrainConfig
from cxrnets.data import SAMPLE_ROOT
from cxrnets.predict import main
from cxrnets.training import TrainingRun, load_checkpoint, save_checkpoint


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[TrainingRun, Path]:
    """ResNet50 trained one epoch on the embedded sample at 32 px, and its checkpoint file."""
    folder = tmp_path_factory.mktemp("trained")
    run = TrainingRun(TrainConfig(model="resnet50", image_size=32, epochs=1, cache_dir=str(folder / "cache")))
    run.train_epoch()
    save_checkpoint(run.checkpoint(), folder / "checkpoint.pt")
    return run, folder / "checkpoint.pt"


def test_probabilities_of_image_files_are_those_of_the_evaluation(trained, tmp_path: Path, caplog) -> None:
    """The files of the validation split, decoded from disk, get the probabilities the run's own evaluation
    gives them from its cache; an undecodable file gets a row with its error and the others are scored."""
    run, checkpoint = trained
    rows = run.data.rows("val")
    files = [str(path) for path in np.asarray(run.data.index.paths(), dtype=object)[rows]]
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    out = tmp_path / "out" / "predictions.csv"
    caplog.set_level(logging.INFO, logger="cxrnets.predict")
    assert main([str(checkpoint), *files, str(broken), "--out", str(out), "--batch-size", "7"]) == 0

    table = pd.read_csv(out, keep_default_na=False)
    assert list(table["path"]) == [*files, str(broken)]
    classes = run.classes
    assert list(table.columns) == ["path", "predicted", *[f"p({name})" for name in classes], "error"]
    scored = table.iloc[:-1]
    _, _, expected = run.evaluate_split("val")
    probabilities = scored[[f"p({name})" for name in classes]].to_numpy(dtype=float)
    np.testing.assert_allclose(probabilities, expected, atol=1e-5)
    assert list(scored["predicted"]) == [classes[k] for k in expected.argmax(axis=1)]
    assert (scored["error"] == "").all()
    assert "broken.png: cannot decode image" in table.iloc[-1]["error"] and table.iloc[-1]["predicted"] == ""
    assert f"{len(files)} of {len(files) + 1} images scored (1 could not be decoded" in caplog.text
    assert not out.with_name("predictions.csv.partial").exists()


@pytest.mark.parametrize("count", [1, 2])
def test_no_image_scored_writes_the_errors_and_ends_in_an_error(trained, tmp_path: Path, capsys,
                                                                count: int) -> None:
    """Every image undecodable was '0 of 2 images scored' and status 0, as if the predictions were there: the CSV
    of errors is still written, and the command ends with an error line saying where they are, status 1."""
    _, checkpoint = trained
    files = [tmp_path / f"bad{i}.png" for i in range(count)]
    for file in files:
        file.write_bytes(b"not an image")
    out = tmp_path / "predictions.csv"
    assert main([str(checkpoint), *map(str, files), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    undecoded = "none of the 2 images could be decoded" if count > 1 else "the image could not be decoded"
    assert err == f"error: no image was scored: {undecoded}; see the error column of {out}\n", err
    table = pd.read_csv(out, keep_default_na=False)
    assert list(table["path"]) == list(map(str, files))
    assert table["error"].str.contains("cannot decode image").all() and (table["predicted"] == "").all()


def test_a_folder_is_searched_for_images(trained, tmp_path: Path) -> None:
    run, checkpoint = trained
    folder = tmp_path / "new"
    (folder / "deeper").mkdir(parents=True)
    for name, path in zip(("a.png", "deeper/b.png"), run.data.index.paths()[:2]):
        (folder / name).write_bytes(Path(path).read_bytes())
    (folder / "notes.txt").write_text("not an image")
    out = tmp_path / "predictions.csv"
    assert main([str(checkpoint), str(folder), "--out", str(out)]) == 0
    table = pd.read_csv(out, keep_default_na=False)
    assert list(table["path"]) == [str(folder / "a.png"), str(folder / "deeper" / "b.png")]
    assert set(table["predicted"]) <= set(run.classes)


def test_multilabel_models_name_every_label_over_one_half(tmp_path: Path) -> None:
    run = TrainingRun(TrainConfig(dataset="covid-chestxray", model="resnet50", image_size=32, epochs=1,
                                  cache_dir=str(tmp_path / "cache")))
    save_checkpoint(run.checkpoint(), tmp_path / "checkpoint.pt")
    files = [str(path) for path in run.data.index.paths()[:5]]
    out = tmp_path / "predictions.csv"
    assert main([str(tmp_path / "checkpoint.pt"), *files, "--out", str(out)]) == 0
    table = pd.read_csv(out, keep_default_na=False)
    probabilities = table[[f"p({name})" for name in run.classes]].to_numpy(dtype=float)
    assert ((probabilities >= 0) & (probabilities <= 1)).all()
    for row, p in zip(table["predicted"], probabilities):
        assert row == ";".join(name for name, value in zip(run.classes, p) if value >= 0.5)


@pytest.mark.parametrize("damage, message", [
    ("missing", "does not exist: pass image files or folders"),
    ("empty folder", "no image files"),
    ("weights", "not a readable checkpoint"),
    ("foreign", "not a trained model's checkpoint (missing"),
    ("weights missing", "does not exist: pass a study's weights/<trial id>.pt or a checkpoint.pt"),
    ("weights folder", "is a folder: pass a study's weights/<trial id>.pt"),
    ("sidecar", "0a1b2c3d.json is the sidecar (epoch, metric) of weights: pass the .pt file beside it, "),
    ("study.json", "study.json is a JSON file (a study's study.json, say), not a checkpoint: pass a study's "
                   "weights/<trial id>.pt or a checkpoint.pt"),
])
def test_bad_input_is_refused_naming_it(trained, tmp_path: Path, capsys, damage: str, message: str) -> None:
    _, checkpoint = trained
    weights, images = str(checkpoint), [str(SAMPLE_ROOT / "images")]
    if damage == "missing":
        images = [str(tmp_path / "nowhere")]
    elif damage == "empty folder":
        (tmp_path / "empty").mkdir()
        images = [str(tmp_path / "empty")]
    elif damage == "weights":
        weights = str(tmp_path / "cut.pt")
        Path(weights).write_bytes(checkpoint.read_bytes()[:1000])
    elif damage == "weights missing":
        weights = str(tmp_path / "gone.pt")
    elif damage == "weights folder":
        weights = str(tmp_path)
    elif damage == "sidecar":
        weights = str(tmp_path / "0a1b2c3d.json")
        Path(weights).write_text('{"epoch": 2}')
        (tmp_path / "0a1b2c3d.pt").write_bytes(checkpoint.read_bytes())
    elif damage == "study.json":
        weights = str(tmp_path / "study.json")
        Path(weights).write_text('{"name": "demo"}')
    else:
        weights = str(tmp_path / "foreign.pt")
        torch.save({"state_dict": {}}, weights)
    out = tmp_path / "predictions.csv"
    assert main([weights, *images, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err, err
    assert not out.exists()


@pytest.mark.parametrize("change, message", [
    ({"config": {"image_size": 32}}, "its config names no model"),
    ({"config": {"model": "resnet18", "image_size": 32}}, "its config names model 'resnet18', not one of alexnet"),
    ({"config": {"model": "resnet50"}}, "its config has no image_size"),
    ({"classes": ["a", "b"]}, "its 2 classes (a, b) do not fit its resnet50 weights, whose head scores 3 classes"),
    ({"model": {"fc.weight": torch.zeros(3, 2048), "fc.bias": torch.zeros(3)}},
     'its weights do not fit resnet50 (Missing key(s) in state_dict: "conv1.weight", "bn1.weight",'),
])
def test_a_checkpoint_that_does_not_describe_its_model_is_refused_naming_it(trained, tmp_path: Path, capsys,
                                                                            change: dict, message: str) -> None:
    """Its config must name the model and image size, and its classes fit its weights' head: else one line
    naming the file and what to pass, not a KeyError's traceback or torch's message cut mid-line."""
    _, checkpoint = trained
    saved = torch.load(checkpoint, weights_only=True, mmap=True)
    damaged = tmp_path / "damaged.pt"
    assert len(saved["classes"]) == 3
    save_checkpoint({"model": {"fc.bias": torch.zeros(3)}, "epoch": 1, "classes": saved["classes"],
                     "multilabel": False, "config": saved["config"], **change}, damaged)
    out = tmp_path / "predictions.csv"
    assert main([str(damaged), str(SAMPLE_ROOT / "images"), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {damaged}: {message}") and err.count("\n") == 1, err
    assert err.rstrip().endswith("pass a study's weights/<trial id>.pt or a checkpoint.pt of python -m cxrnets.train")
    assert not out.exists()


def test_an_out_that_cannot_be_written_is_refused_before_predicting(trained, tmp_path: Path, capsys) -> None:
    _, checkpoint = trained
    (tmp_path / "a-file").write_text("")
    out = tmp_path / "a-file" / "predictions.csv"
    assert main([str(checkpoint), str(SAMPLE_ROOT / "images"), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --out {out}: cannot write in {tmp_path / 'a-file'}") and "Traceback" not in err, err


def test_an_out_that_is_a_folder_is_refused_before_predicting(trained, tmp_path: Path, capsys,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    _, checkpoint = trained
    monkeypatch.setattr("cxrnets.predict.decode_all", lambda *args, **kwargs: pytest.fail("decoded images"))
    assert main([str(checkpoint), str(SAMPLE_ROOT / "images"), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --out {tmp_path} is a folder: pass the CSV file to write, e.g. --out "
                          f"{tmp_path / 'predictions.csv'}") and "Traceback" not in err, err


def test_an_existing_out_file_is_refused_before_predicting_and_kept(trained, tmp_path: Path, capsys,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A second run with the same --out would lose the first run's predictions."""
    run, checkpoint = trained
    out = tmp_path / "p1.csv"
    assert main([str(checkpoint), str(run.data.index.paths()[0]), "--out", str(out)]) == 0
    earlier = out.read_bytes()
    monkeypatch.setattr("cxrnets.predict.decode_all", lambda *args, **kwargs: pytest.fail("decoded images"))
    capsys.readouterr()
    assert main([str(checkpoint), str(SAMPLE_ROOT / "images"), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --out {out} already exists") and "remove it or choose another --out" in err, err
    assert "Traceback" not in err
    assert out.read_bytes() == earlier


def test_an_out_file_made_while_predicting_is_kept_and_the_predictions_go_beside_it(
        trained, tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another run writing the same --out between the start and the end: neither its file nor these
    predictions are lost."""
    run, checkpoint = trained
    out = tmp_path / "predictions.csv"
    decode_all = cxrnets.predict.decode_all

    def decode_while_another_run_writes_out(*args, **kwargs):
        out.write_text("another run's predictions\n")
        return decode_all(*args, **kwargs)

    monkeypatch.setattr("cxrnets.predict.decode_all", decode_while_another_run_writes_out)
    assert main([str(checkpoint), str(run.data.index.paths()[0]), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    instead = tmp_path / "predictions-1.csv"
    assert err.startswith(f"error: --out {out} appeared while predicting") and "Traceback" not in err, err
    assert f"written to {instead} instead" in err
    assert out.read_text() == "another run's predictions\n"
    assert list(pd.read_csv(instead)["path"]) == [str(run.data.index.paths()[0])]


@pytest.mark.parametrize("stop", ["Ctrl-C", "crash"])
def test_predictions_are_written_as_each_chunk_is_scored(trained, tmp_path: Path, capsys,
                                                         monkeypatch: pytest.MonkeyPatch, stop: str) -> None:
    """Ctrl-C (or a crash) late in a large folder keeps the rows of the chunks already scored, in
    <out>.partial; Ctrl-C says how many and where, with status 130."""
    run, checkpoint = trained
    files = [str(path) for path in run.data.index.paths()[:5]]
    decode_all, calls = cxrnets.predict.decode_all, []

    def stopped_in_chunk_3(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt if stop == "Ctrl-C" else MemoryError
        return decode_all(*args, **kwargs)

    monkeypatch.setattr(cxrnets.predict, "CHUNK", 2)
    monkeypatch.setattr(cxrnets.predict, "decode_all", stopped_in_chunk_3)
    out = tmp_path / "predictions.csv"
    partial = tmp_path / "predictions.csv.partial"
    if stop == "Ctrl-C":
        assert main([str(checkpoint), *files, "--out", str(out)]) == 130
        assert capsys.readouterr().err == (f"interrupted: 4 of 5 images scored, in {partial} (move it away before "
                                           "running the same command again)\n")
    else:
        with pytest.raises(MemoryError):
            main([str(checkpoint), *files, "--out", str(out)])
    assert list(pd.read_csv(partial)["path"]) == files[:4] and not out.exists()


def test_a_partial_file_of_an_interrupted_run_is_refused_before_predicting_and_kept(
        trained, tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    _, checkpoint = trained
    partial = tmp_path / "predictions.csv.partial"
    partial.write_text("an interrupted run's predictions\n")
    monkeypatch.setattr("cxrnets.predict.decode_all", lambda *args, **kwargs: pytest.fail("decoded images"))
    assert main([str(checkpoint), str(SAMPLE_ROOT / "images"), "--out", str(tmp_path / "predictions.csv")]) == 2
    assert capsys.readouterr().err == (f"error: --out {tmp_path / 'predictions.csv'}: {partial} already exists (the "
                                       "predictions of an interrupted run?): move it away, or choose another --out; "
                                       "nothing was overwritten\n")
    assert partial.read_text() == "an interrupted run's predictions\n"


def test_ctrl_c_before_any_image_is_scored_leaves_nothing(trained, tmp_path: Path, capsys,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    _, checkpoint = trained

    def ctrl_c(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("cxrnets.predict.decode_all", ctrl_c)
    assert main([str(checkpoint), str(SAMPLE_ROOT / "images"), "--out", str(tmp_path / "predictions.csv")]) == 130
    assert capsys.readouterr().err == "interrupted: no image was scored yet; nothing was written\n"
    assert list(tmp_path.iterdir()) == []


def test_a_study_weights_file_loads_like_a_training_checkpoint(trained, tmp_path: Path) -> None:
    """A study's best-weights file (study.checkpoints: weights, epoch, config, classes, no optimizer) is
    accepted as is."""
    run, checkpoint = trained
    full = torch.load(checkpoint, weights_only=True)
    best = {key: full[key] for key in ("model", "epoch", "config", "classes", "multilabel")}
    save_checkpoint({**best, "metric": "val/f1_macro", "value": 0.5}, tmp_path / "best.pt")
    assert load_checkpoint(tmp_path / "best.pt")["classes"] == run.classes


@pytest.mark.parametrize("scored_before", [0, 2])
def test_weights_with_nan_outputs_end_in_one_line_naming_the_file(trained, tmp_path: Path, capsys,
                                                                  monkeypatch: pytest.MonkeyPatch,
                                                                  scored_before: int) -> None:
    """The weights of a diverged run (NaN) give NaN probabilities: the command says so in one line naming the
    file, with status 2; the rows of the chunks written before (here: undecodable files, which are not scored)
    stay in <out>.partial, and where there are none nothing is left behind."""
    run, checkpoint = trained
    diverged = torch.load(checkpoint, weights_only=True)
    diverged["model"] = {key: value.fill_(float("nan")) if value.is_floating_point() else value
                         for key, value in diverged["model"].items()}
    weights = tmp_path / "diverged.pt"
    save_checkpoint(diverged, weights)
    broken = []
    for i in range(scored_before):
        broken.append(tmp_path / f"broken-{i}.png")
        broken[-1].write_bytes(b"not an image")
    monkeypatch.setattr(cxrnets.predict, "CHUNK", 2)
    out = tmp_path / "out" / "predictions.csv"
    partial = out.with_name("predictions.csv.partial")
    files = [*map(str, broken), *map(str, run.data.index.paths()[:3])]
    assert main([str(weights), *files, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {weights}: the model's outputs are NaN or infinite") and err.count("\n") == 1, err
    assert "pass the weights of another trial or run" in err and "Traceback" not in err
    assert not out.exists()
    if scored_before:
        assert f"the {scored_before} rows written before are in {partial}" in err
        assert list(pd.read_csv(partial)["path"]) == files[:scored_before]
    else:
        assert err.rstrip().endswith("nothing was written") and not partial.exists()


def folder_of_an_image_and(run, folder: Path, names: tuple[str, ...]) -> Path:
    """`folder`, made, holding a.png (an image of `run`'s data) and a file of 200 zero bytes by each of `names`."""
    folder.mkdir()
    (folder / "a.png").write_bytes(Path(run.data.index.paths()[0]).read_bytes())
    for name in names:
        (folder / name).write_bytes(b"\0" * 200)
    return folder


def test_files_of_a_type_not_read_are_counted_by_type(trained, tmp_path: Path, caplog) -> None:
    """Files in a folder that predict does not decode (DICOM, .jfif) get no row: the log counts them by type and
    says how to score them."""
    run, checkpoint = trained
    folder = folder_of_an_image_and(run, tmp_path / "new", ("b.dcm", "c.dcm", "d.jfif"))
    out = tmp_path / "predictions.csv"
    caplog.set_level(logging.INFO, logger="cxrnets.predict")
    assert main([str(checkpoint), str(folder), "--out", str(out)]) == 0
    assert list(pd.read_csv(out)["path"]) == [str(folder / "a.png")]
    assert f"not scored: 3 files in {folder} of a type not read (.dcm 2, .jfif 1)" in caplog.text
    assert "convert DICOM to PNG" in caplog.text


def test_files_that_are_not_images_are_counted_as_such_with_no_advice_to_convert(trained, tmp_path: Path, caplog,
                                                                                 capsys) -> None:
    """The embedded sample's folder (metadata.csv, README.md beside images/) was logged as holding '2 files of a
    type not read (.csv 1, .md 1): convert them to PNG or JPEG': a CSV is no image to convert; a DICOM file is."""
    run, checkpoint = trained
    folder = folder_of_an_image_and(run, tmp_path / "new", ("metadata.csv", "README.md", "scan.dcm"))
    caplog.set_level(logging.INFO, logger="cxrnets.predict")
    assert main([str(checkpoint), str(folder), "--out", str(tmp_path / "predictions.csv")]) == 0
    assert f"not scored: 2 files in {folder} that are not images (.csv 1, .md 1)\n" in caplog.text, caplog.text
    assert (f"not scored: 1 file in {folder} of a type not read (.dcm 1): convert DICOM to PNG to score it\n"
            in caplog.text), caplog.text

    (folder / "a.png").unlink()
    (folder / "scan.dcm").unlink()
    assert main([str(checkpoint), str(folder), "--out", str(tmp_path / "again.csv")]) == 2
    err = capsys.readouterr().err
    assert "no image files" in err and err.rstrip().endswith(
        f"in {folder}: only files that are not images (.csv 1, .md 1)"), err


def test_links_that_lead_nowhere_are_counted_per_folder(trained, tmp_path: Path, caplog, capsys) -> None:
    """A link to an image that was moved or deleted gets no row: the log counts them in each folder, as it
    counts files of a type not read; a folder holding only such links says so in its error."""
    run, checkpoint = trained
    folder = tmp_path / "new"
    folder.mkdir()
    (folder / "a.png").write_bytes(Path(run.data.index.paths()[0]).read_bytes())
    for name in ("b.png", "c.jpg"):
        (folder / name).symlink_to(tmp_path / "moved" / name)
    out = tmp_path / "predictions.csv"
    caplog.set_level(logging.INFO, logger="cxrnets.predict")
    assert main([str(checkpoint), str(folder), "--out", str(out)]) == 0
    assert list(pd.read_csv(out)["path"]) == [str(folder / "a.png")]
    assert (f"not scored: 2 links in {folder} that lead nowhere (e.g. {folder / 'b.png'}): point them at an image "
            "or remove them") in caplog.text

    (folder / "a.png").unlink()
    assert main([str(checkpoint), str(folder), "--out", str(tmp_path / "again.csv")]) == 2
    err = capsys.readouterr().err
    assert "no image files" in err and f"(2 link(s) to nothing, e.g. {folder / 'b.png'})" in err, err


def test_a_folder_of_dicom_files_only_says_to_convert_them(trained, tmp_path: Path, capsys) -> None:
    _, checkpoint = trained
    folder = tmp_path / "dicom"
    folder.mkdir()
    for name in ("a.dcm", "b.dcm"):
        (folder / name).write_bytes(b"\0" * 200)
    assert main([str(checkpoint), str(folder), "--out", str(tmp_path / "predictions.csv")]) == 2
    err = capsys.readouterr().err
    assert "no image files" in err and "only files of a type not read (.dcm 2)" in err, err
    assert "convert DICOM to PNG" in err


def test_weights_in_a_bucket_are_refused_saying_to_download_them(tmp_path: Path, capsys) -> None:
    uri = "s3://bucket/study/weights/abc.pt"
    assert main([uri, str(SAMPLE_ROOT / "images"), "--out", str(tmp_path / "predictions.csv")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {uri} is a URL, not a local file: download it"), err
