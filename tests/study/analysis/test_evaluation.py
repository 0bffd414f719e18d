"""study.analysis.evaluation.StudyData: the weights the analysis evaluates, fetched from object storage."""

from __future__ import annotations

import io
import logging
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import torch

from cxrnets.config import TrainConfig
from cxrnets.errors import CxrError
from cxrnets.fingerprints import EARLIER_NEAR_IDENTICAL_BITS, FINGERPRINT_SIZE, NEAR_IDENTICAL_BITS
from cxrnets.splits import make_split
from cxrnets.training import SPLIT_COLUMNS, prepare_data
from study import storage
from study.analysis.evaluation import AnalysisRefused, StudyData, evaluate_checkpoint
from study.analysis.report import header_lines


def study_data(cache) -> StudyData:
    return StudyData(SimpleNamespace(settings=SimpleNamespace(data_roots={}, cache_dir=str(cache))))


def test_prefetched_weights_arrive_whole_once_and_a_missing_one_fails_at_its_fetch(s3_bucket, tmp_path):
    """prefetch starts every download at once; fetch gives each file, counts its bytes once, and raises
    for a missing object only when that one is fetched (the analysis then skips that trial)."""
    contents = {storage.join(s3_bucket, "weights", f"t{i}.pt"): bytes([i]) * (3_000_000 + i) for i in range(3)}
    for uri, data in contents.items():
        storage.write_bytes(uri, data)
    missing = storage.join(s3_bucket, "weights", "gone.pt")
    data = study_data(tmp_path / "cache")
    data.prefetch([*contents, missing, next(iter(contents))])  # a repeat is fetched once
    for uri, expected in contents.items():
        assert data.fetch(uri).read_bytes() == expected
    assert data.downloaded_bytes == sum(len(d) for d in contents.values())
    with pytest.raises(OSError):
        data.fetch(missing)
    again = study_data(tmp_path / "cache")  # a second analysis: everything from the download cache
    again.prefetch(list(contents))
    assert [again.fetch(uri).read_bytes() for uri in contents] == list(contents.values())
    assert again.downloaded_bytes == 0


def test_weights_are_downloaded_into_the_image_cache_the_readme_names(s3_bucket, tmp_path, monkeypatch):
    """The README's order: downloads/ of the analysis's --cache-dir, else of the study's, else of
    $CXR_TUNE_CACHE."""
    uri = storage.join(s3_bucket, "weights", "t1.pt")
    storage.write_bytes(uri, b"w" * 10)
    monkeypatch.setenv("CXR_TUNE_CACHE", str(tmp_path / "env"))
    for study_cache, analysis_cache, expected in ((None, None, tmp_path / "env"),
                                                  (tmp_path / "study", None, tmp_path / "study"),
                                                  (tmp_path / "study", tmp_path / "typed", tmp_path / "typed")):
        settings = SimpleNamespace(data_roots={}, cache_dir=str(study_cache) if study_cache else None)
        study = SimpleNamespace(settings=settings)
        data = StudyData(study, cache_dir=str(analysis_cache) if analysis_cache else None)
        assert data.fetch(uri).parent == expected / "downloads"


def test_local_weights_are_not_copied(tmp_path):
    weights = tmp_path / "w.pt"
    weights.write_bytes(b"x" * 10)
    data = study_data(tmp_path / "cache")
    data.prefetch([str(weights)])
    assert data.fetch(str(weights)) == weights and data.downloaded_bytes == 0


def test_a_split_the_data_no_longer_matches_is_refused_naming_its_file_once(make_folder, tmp_path):
    data_root = make_folder(tmp_path / "data", per_class=12)
    config = TrainConfig(dataset="folder", data_root=str(data_root), image_size=16, cache_dir=str(tmp_path / "cache"))
    split = Path(storage.join(str(tmp_path / "study"), "splits", "folder.csv"))
    split.parent.mkdir(parents=True)
    prepare_data(config).split[SPLIT_COLUMNS].to_csv(split, index=False)
    (data_root / "sick" / "img-001.png").unlink()
    data = StudyData(SimpleNamespace(uri=str(tmp_path / "study"), settings=SimpleNamespace(
        data_roots={"folder": str(data_root)}, cache_dir=str(tmp_path / "cache"), split_digests={},
        splits_join_near_identical=False)))
    with pytest.raises(AnalysisRefused) as refused:
        data.prepare(config)
    assert str(refused.value).startswith(
        f"refusing to evaluate: the data at {data_root} no longer matches the study's split: {split}: the dataset "
        "changed since this split was made (1 gone: sick/img-001.png (sha1 ")
    assert str(refused.value).count(str(split)) == 1


def test_a_data_root_that_does_not_hold_the_studys_images_is_refused_naming_the_option(make_folder, tmp_path):
    """A --data-root of another copy of the data (the full dataset for a study made on the sample) was refused as a
    dataset changed since the split was made, advising to move the new images out of the folder. It names a few of
    the images each copy lacks, as the refusal of a changed study folder does."""
    data_root = make_folder(tmp_path / "data", per_class=12)
    config = TrainConfig(dataset="folder", data_root=str(data_root), image_size=16, cache_dir=str(tmp_path / "cache"))
    split = Path(storage.join(str(tmp_path / "study"), "splits", "folder.csv"))
    split.parent.mkdir(parents=True)
    prepare_data(config).split[SPLIT_COLUMNS].to_csv(split, index=False)
    other = make_folder(tmp_path / "other", per_class=14)  # 2 more images per class
    (other / "sick" / "img-001.png").unlink()
    study = SimpleNamespace(uri=str(tmp_path / "study"), settings=SimpleNamespace(
        data_roots={"folder": str(data_root)}, cache_dir=str(tmp_path / "cache"), split_digests={},
        splits_join_near_identical=False))
    data = StudyData(study, data_roots={"folder": str(other)})
    with pytest.raises(AnalysisRefused) as refused:
        data.prepare(data.train_config({"config": {"dataset": "folder", "image_size": 16}}))
    assert str(refused.value) == (
        f"--data-root {other}: the folder is not the copy of folder this study was made on: it lacks 1 "
        f"(sick/img-001.png) of the 24 images of the study's split ({split}) and holds 4 image(s) "
        "(healthy/batch2/img-012.png, healthy/img-013.png, sick/batch2/img-012.png and 1 more) that it does not "
        f"list; pass the folder the study read ({data_root}), or a copy of it")


def test_a_split_from_before_each_image_was_kept_once_is_checked_on_its_own_rows(make_chestxray, tmp_path, caplog):
    """A study from before split digests, made when dataset 3's loader listed an image twice (two metadata rows,
    two patient ids): its split is checked by splitting its own rows again, the data no longer listing them;
    each image is evaluated once, and an edit of the file is still refused."""
    root = make_chestxray()
    metadata = pd.read_csv(root / "metadata.csv", dtype=str, keep_default_na=False)
    twice = metadata[metadata["filename"] == "p8-a.png"].assign(patientid="99")
    pd.concat([metadata, twice]).to_csv(root / "metadata.csv", index=False)
    config = TrainConfig(dataset="covid-chestxray-3class", data_root=str(root), image_size=16,
                         cache_dir=str(tmp_path / "cache"))
    now = prepare_data(config)
    rows_now = now.index.frame.assign(sha1=now.split["sha1"].to_numpy())
    listed_again = rows_now.index[rows_now["relpath"] == "images/p8-a.png"]
    rows_then = pd.concat([rows_now, rows_now.loc[listed_again].assign(patient="99")], ignore_index=True)
    strata_then = pd.concat([now.index.stratum(), now.index.stratum()[listed_again]], ignore_index=True)
    seed = 3
    split_then = make_split(rows_then, strata_then, seed=seed, in_listed_order=True)[SPLIT_COLUMNS]
    path = tmp_path / "study" / "splits" / "covid-chestxray-3class.csv"
    path.parent.mkdir(parents=True)
    split_then.to_csv(path, index=False)
    settings = SimpleNamespace(data_roots={"covid-chestxray-3class": str(root)}, cache_dir=str(tmp_path / "cache"),
                               split_digests={}, val_fraction=0.15, test_fraction=0.15, seed=seed,
                               splits_join_near_identical=False)

    with caplog.at_level(logging.WARNING, logger="study.analyze"):
        prepared = StudyData(SimpleNamespace(uri=str(tmp_path / "study"), settings=settings)).prepare(config)
    assert list(prepared.split["relpath"]) == list(rows_now["relpath"])
    assert f"{path}: made before each image was kept once, it lists 1 image(s) twice (e.g. images/p8-a.png, in " \
           in caplog.text and "the analysis counts each once" in caplog.text

    alone = split_then.groupby("patient")["relpath"].transform("size") == 1
    edited = split_then.index[(split_then["split"] == "test") & alone][0]
    split_then.loc[edited, "split"] = "train"
    split_then.to_csv(path, index=False)
    with pytest.raises(AnalysisRefused, match=rf"{path} was edited since the study made it: 1 image\(s\) changed "
                                              rf"split, e.g. {split_then.loc[edited, 'relpath']} is now in train"):
        StudyData(SimpleNamespace(uri=str(tmp_path / "study"), settings=settings)).prepare(config)


def test_a_split_from_before_digests_made_in_the_order_the_data_lists_its_images_is_accepted(make_chestxray,
                                                                                               tmp_path):
    """Splits took the images in the order the data listed them before they were made in the order of their paths:
    a study from before split digests (checked by making its split again) made so is not refused as edited."""
    root = make_chestxray()
    metadata = pd.read_csv(root / "metadata.csv", dtype=str, keep_default_na=False)
    metadata.iloc[::-1].to_csv(root / "metadata.csv", index=False)  # listed in another order than their paths
    config = TrainConfig(dataset="covid-chestxray-3class", data_root=str(root), image_size=16,
                         cache_dir=str(tmp_path / "cache"))
    now = prepare_data(config)
    rows, strata = now.index.frame.assign(sha1=now.split["sha1"].to_numpy()), now.index.stratum()
    seed, split_then = next((seed, split) for seed in range(20)
                            for split in [make_split(rows, strata, seed=seed, in_listed_order=True)]
                            if (split["split"] != make_split(rows, strata, seed=seed)["split"]).any())
    path = tmp_path / "study" / "splits" / "covid-chestxray-3class.csv"
    path.parent.mkdir(parents=True)
    split_then[SPLIT_COLUMNS].to_csv(path, index=False)
    settings = SimpleNamespace(data_roots={"covid-chestxray-3class": str(root)}, cache_dir=str(tmp_path / "cache"),
                               split_digests={}, val_fraction=0.15, test_fraction=0.15, seed=seed,
                               splits_join_near_identical=False)

    prepared = StudyData(SimpleNamespace(uri=str(tmp_path / "study"), settings=settings)).prepare(config)
    assert list(prepared.split["split"]) == list(split_then["split"])


def test_weights_in_a_bucket_that_cannot_be_used_are_named_by_their_object_not_the_download(s3_bucket, tmp_path):
    """The analysis notes a trial's unusable weights with the message; for a study in a bucket, it names the
    object (what to restore or delete, with its .json sidecar), not this machine's downloaded copy."""
    buffer = io.BytesIO()
    torch.save({"model": {}, "epoch": 1, "config": {"lr": 0.1}, "classes": ["a", "b"], "multilabel": False}, buffer)
    another_trials = storage.join(s3_bucket, "study", "weights", "t1.pt")
    storage.write_bytes(another_trials, buffer.getvalue())
    cut_short = storage.join(s3_bucket, "study", "weights", "t2.pt")
    storage.write_bytes(cut_short, buffer.getvalue()[:100])
    data = StudyData(SimpleNamespace(settings=SimpleNamespace(data_roots={}, cache_dir=str(tmp_path / "cache"),
                                                              image_size=16)))
    downloads = tmp_path / "cache" / "downloads"

    with pytest.raises(CxrError) as refused:
        evaluate_checkpoint(another_trials, data, trial_id="t1", trial_config={"lr": 0.01})
    assert str(refused.value).startswith(f"{another_trials}: not this trial's weights: trained with lr=0.1 where "
                                         "the study's results give the trial lr=0.01")
    assert "delete this file and its .json sidecar" in str(refused.value) and str(downloads) not in str(refused.value)

    with pytest.raises(CxrError) as refused:
        evaluate_checkpoint(cut_short, data, trial_id="t2", trial_config={"lr": 0.1})
    (copy,) = downloads.glob("*-t2.pt")
    assert str(refused.value).startswith(f"{cut_short} (downloaded to {copy}): not a readable checkpoint (")


def test_weights_rewritten_since_the_analysis_read_their_sidecar_are_refused_as_changed(tmp_path):
    """A running study rewrote a trial's best weights after the analysis ranked the trial on the epoch its sidecar
    named: the report paired that epoch's validation value with the new weights' test figures, silently."""
    from study.checkpoints import BestWeights

    path = tmp_path / "weights" / "t1.pt"
    path.parent.mkdir()
    sidecar = BestWeights("t1", 1, "val/f1_macro", 0.279, 1000, str(path))
    data = study_data(tmp_path / "cache")
    for epoch, value, now in ((2, 0.31, "epoch 2, val/f1_macro 0.310"), (1, 0.31, "epoch 1, val/f1_macro 0.310")):
        torch.save({"model": {}, "epoch": epoch, "config": {"lr": 0.1}, "classes": ["a", "b"], "multilabel": False,
                    "metric": "val/f1_macro", "value": value}, path)
        with pytest.raises(CxrError) as refused:
            evaluate_checkpoint(str(path), data, trial_id="t1", sidecar=sidecar)
        assert str(refused.value) == (
            f"{path}: its weights changed since the analysis read them (now of {now}; their sidecar named epoch 1, "
            "val/f1_macro 0.279): the study is still running; analyse again when it ends")


def study_of_copies(make_radiography_copies, tmp_path: Path, sides, joined: int | None = None,
                    fingerprinted_at: int | None = FINGERPRINT_SIZE, image_size: int = 64):
    """A study of dataset 1 at `image_size` whose each class holds one X-ray twice (make_radiography_copies: a
    299x299 PNG and a JPEG under another name, hence another patient), its split as the study reads it back, with
    the images that `sides(copies)` names (relpath -> part) moved there; `joined`: the fingerprint bits within which
    the study's splits joined near-identical X-rays, None where they did not; `fingerprinted_at`: the image size
    their fingerprints were made at, None for a study from before it was recorded (at its own size, at 32 px where
    smaller). Returns (StudyData, its TrainConfig, the copies)."""
    from cxrnets.splits import split_digest
    from study.settings import read_split

    root, copies = make_radiography_copies()
    config = TrainConfig(dataset="covid-radiography", data_root=str(root), model="alexnet", image_size=image_size,
                         cache_dir=str(tmp_path / "cache"), device="cpu")
    split = prepare_data(config).split[SPLIT_COLUMNS]
    split["split"] = split["relpath"].map(sides(copies)).fillna(split["split"])
    path = tmp_path / "study" / "splits" / "covid-radiography.csv"
    path.parent.mkdir(parents=True)
    split.to_csv(path, index=False)
    settings = SimpleNamespace(data_roots={"covid-radiography": str(root)}, cache_dir=str(tmp_path / "cache"),
                               split_digests={"covid-radiography": split_digest(read_split(str(path)))},
                               image_size=image_size, splits_join_near_identical=joined is not None,
                               splits_near_identical_bits=joined or 48, splits_fingerprint_size=fingerprinted_at)
    return StudyData(SimpleNamespace(uri=str(tmp_path / "study"), settings=settings)), config, copies


def test_the_bootstrap_resamples_an_x_ray_and_its_copy_under_another_patient_as_one(make_radiography_copies, tmp_path):
    """Two copies of one X-ray on the test split, under two patients, are one resampling unit: the interval's
    patients count them once."""
    from cxrnets.training import TrainingRun, save_checkpoint
    from study.analysis.uncertainty import bootstrap_split

    data, config, copies = study_of_copies(make_radiography_copies, tmp_path,
                                           lambda copies: {relpath: "test" for pair in copies[:2] for relpath in pair})
    prepared = data.prepare(config)
    weights = tmp_path / "study" / "weights" / "t1.pt"
    weights.parent.mkdir()
    save_checkpoint({"model": TrainingRun(config, prepared).model.state_dict(), "epoch": 1,
                     "config": config.__dict__, "classes": list(prepared.index.classes), "multilabel": False}, weights)

    evaluation = evaluate_checkpoint(str(weights), data, "test", "t1")
    group = dict(zip(evaluation.images["relpath"], evaluation.groups))
    assert [group[png] == group[jpeg] for png, jpeg in copies[:2]] == [True, True]
    tested = len(evaluation.y_true)
    assert bootstrap_split("covid-radiography", [evaluation], resamples=200).patients == tested - 2


def test_a_split_from_before_copies_were_joined_is_said_to_hold_copies_on_two_sides(make_radiography_copies,
                                                                                    tmp_path, caplog):
    """A study's split made before near-identical X-rays were kept on one side, with a copy in test and its
    original in train (and another pair across val and train): the analysis evaluates it as it is, but warns,
    counting them and naming a pair, and says so in the report's header."""
    data, config, copies = study_of_copies(make_radiography_copies, tmp_path, lambda copies: {
        copies[0][0]: "test", copies[0][1]: "train", copies[1][0]: "val", copies[1][1]: "train"})
    (test_png, train_jpeg), (val_png, _) = copies[:2]
    with caplog.at_level(logging.WARNING, logger="study.analyze"):
        prepared = data.prepare(config)
    assert prepared.split.set_index("relpath").loc[[test_png, val_png], "split"].tolist() == ["test", "val"]
    uri = tmp_path / "study" / "splits" / "covid-radiography.csv"
    assert list(data.split_notes) == [str(uri)]
    note = data.split_notes[str(uri)]
    assert note.startswith(f"{uri}: 1 test image(s) have a near-identical copy (the same X-ray re-encoded, resized, "
                           "squashed or windowed otherwise, or the same person's, under another patient id or file "
                           "name) in train or val and 1 val image(s) in "
                           f"train, e.g. {test_png} (test) and {train_jpeg} (train)")
    assert "optimistic" in note and note in caplog.text
    analysis = SimpleNamespace(study=SimpleNamespace(uri=str(tmp_path / "study"), settings=SimpleNamespace(
        created="2026-01-01 00:00:00", space_source="grid.yaml", data_roots=data.data_roots)), split="test",
        metric="val/f1_macro", mode="max", top_k=1, look=None, split_notes=data.split_notes)
    assert f"- **Copies across the split:** {note}" in header_lines(analysis)


def test_copies_across_the_split_count_where_the_models_trained_or_were_chosen_on_them(make_radiography_copies,
                                                                                      tmp_path, caplog, monkeypatch):
    """Held-out sources are scored, never trained or chosen on: a test image whose copy is held out is no optimistic
    figure, and a held-out image whose copy is in train is one; a test image with its copy in val is counted once, as
    a test image (the val figures owe nothing to a test copy). A second image size fingerprints the split no more."""
    import study.analysis.evaluation as evaluation

    data, config, copies = study_of_copies(make_radiography_copies, tmp_path, lambda copies: {
        copies[0][0]: "test", copies[0][1]: "heldout", copies[1][0]: "heldout", copies[1][1]: "train",
        copies[2][0]: "val", copies[2][1]: "test"})
    with caplog.at_level(logging.WARNING, logger="study.analyze"):
        data.prepare(config)
    uri = tmp_path / "study" / "splits" / "covid-radiography.csv"
    assert data.split_notes[str(uri)].startswith(
        f"{uri}: 1 test image(s) have a near-identical copy (the same X-ray re-encoded, resized, squashed or "
        f"windowed otherwise, or the same person's, under another patient id or file name) in train or val and 1 "
        f"held-out image(s) in train or val, e.g. "
        f"{copies[2][1]} (test) and {copies[2][0]} (val): ")
    assert caplog.text.count("near-identical copy") == 1

    whole_datasets, fingerprints = [], evaluation.cache_fingerprints

    def counted(cache, rows=None):
        if rows is None:
            whole_datasets.append(cache)
        return fingerprints(cache, rows)

    monkeypatch.setattr(evaluation, "cache_fingerprints", counted)
    data.prepare(replace(config, image_size=32))
    assert whole_datasets == []


@pytest.mark.parametrize("joined_within, fingerprinted_at, image_size, made_when", [
    (NEAR_IDENTICAL_BITS, FINGERPRINT_SIZE, 40, None),
    (NEAR_IDENTICAL_BITS, None, 64, None),
    (EARLIER_NEAR_IDENTICAL_BITS, None, 64, "within 48 fingerprint bits (now 60)"),
    (NEAR_IDENTICAL_BITS, None, 40, "at the study's 40 px (now at 64 px, at every size)"),
    (EARLIER_NEAR_IDENTICAL_BITS, None, 224, "within 48 fingerprint bits (now 60), at the study's 224 px (now at 64 "
                                             "px, at every size)"),
    (NEAR_IDENTICAL_BITS, None, 16, "at 32 px (now at 64 px, at every size)")])
def test_a_study_whose_splits_joined_near_identical_x_rays_as_now_is_not_searched_for_copies_across_them(
        make_radiography_copies, tmp_path, caplog, joined_within, fingerprinted_at, image_size, made_when):
    """A study whose splits joined near-identical X-rays as now (within today's fingerprint bits, fingerprinted at
    64 px, as every study at 64 px was) holds no copies across parts: the analysis spends no comparison of every
    image on looking for them (even where an edited split would hold some). One whose splits joined within fewer
    bits, or fingerprinted its images at another size (its own, or 32 px where smaller: copies found at 64 px may
    lie on two sides), may hold some, is searched, and the note says how its split was made."""
    data, config, copies = study_of_copies(make_radiography_copies, tmp_path, lambda copies: {
        copies[0][0]: "test", copies[0][1]: "train"}, joined=joined_within, fingerprinted_at=fingerprinted_at,
        image_size=image_size)
    with caplog.at_level(logging.WARNING, logger="study.analyze"):
        data.prepare(config)
    if made_when is None:
        assert data.split_notes == {} and "near-identical copy" not in caplog.text
    else:
        assert (f"e.g. {copies[0][0]} (test) and {copies[0][1]} (train): the split was made when such copies were "
                f"found {made_when}, so the figures on those images are optimistic") in caplog.text


def test_the_bootstrap_of_a_study_at_a_few_pixels_resamples_the_groups_it_would_at_64_px(tmp_path):
    """At 8 px the analysis fingerprints the embedded sample at FINGERPRINT_SIZE: at its own size unrelated X-rays
    looked near-identical, and the bootstrap resampled a test split's patients as a handful of groups."""
    from dataclasses import replace

    from cxrnets.data import SAMPLE_ROOT
    from cxrnets.splits import split_digest
    from study.settings import read_split

    dataset = "covid-chestxray-3class"
    config = TrainConfig(dataset=dataset, data_root=str(SAMPLE_ROOT), image_size=8, cache_dir=str(tmp_path / "cache"))
    path = tmp_path / "study" / "splits" / f"{dataset}.csv"
    path.parent.mkdir(parents=True)
    prepare_data(replace(config, image_size=64)).split[SPLIT_COLUMNS].to_csv(path, index=False)

    def groups(image_size: int) -> dict[str, list[int]]:
        settings = SimpleNamespace(data_roots={dataset: str(SAMPLE_ROOT)}, cache_dir=str(tmp_path / "cache"),
                                   split_digests={dataset: split_digest(read_split(str(path)))},
                                   image_size=image_size, splits_join_near_identical=True,
                                   splits_near_identical_bits=NEAR_IDENTICAL_BITS,
                                   splits_fingerprint_size=FINGERPRINT_SIZE)
        data = StudyData(SimpleNamespace(uri=str(tmp_path / "study"), settings=settings))
        return {part: pd.factorize(data.resampling_groups(replace(config, image_size=image_size), part))[0].tolist()
                for part in ("val", "test")}

    at_64 = groups(64)
    assert groups(8) == at_64 and len(set(at_64["test"])) > 10
