"""Tests for cxrnets.data: every dataset layout, the covid-chestxray parsing, and bad input."""

from __future__ import annotations

import logging
import os
import re
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cxrnets.data import (
    DATASET_NAMES,
    RADIOGRAPHY_CLASSES,
    SAMPLE_ROOT,
    THREE_CLASSES,
    UNKNOWN_SOURCE,
    load_dataset,
    parse_dataset_options,
    parse_finding,
    three_class_label,
)
from cxrnets.errors import CxrError
from cxrnets.images import load_image


def class_counts(index) -> Counter:
    if index.multilabel:
        return Counter(label for labels in index.frame["labels"] for label in labels)
    return Counter(labels[0] for labels in index.frame["labels"])


# ------------------------------------------------------------------ covid-radiography


@pytest.mark.parametrize("lower", [False, True], ids=["as-shipped", "lower-case-folders"])
def test_radiography_layout(make_radiography, lower: bool) -> None:
    root = make_radiography(per_class=5, lower=lower)
    index = load_dataset("covid-radiography", root)
    assert index.classes == list(RADIOGRAPHY_CLASSES)  # canonical names whatever the folder case
    assert not index.multilabel
    assert class_counts(index) == {name: 5 for name in RADIOGRAPHY_CLASSES}
    relpaths = list(index.frame["relpath"])
    assert all("/images/" in relpath for relpath in relpaths)
    assert not any("masks" in relpath.lower() for relpath in relpaths)  # masks are never samples
    assert all(path.is_file() for path in index.paths())
    assert list(index.frame["patient"]) == relpaths  # no patient ids: each image its own group
    targets = index.targets()
    assert targets.dtype == np.int64 and sorted(Counter(targets.tolist()).items()) == [(k, 5) for k in range(4)]
    if lower:
        assert relpaths[0].startswith("covid/images/")


@pytest.mark.parametrize("name", ["covid-radiography", "covid-pneumonia-normal", "folder", "csv"])
def test_a_dataset_without_patient_ids_says_its_split_goes_by_image(name: str, make_radiography, make_pneumonia_normal,
                                                                   make_folder, make_csv_dataset,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    """Class folders (and a CSV without a patient column) carry no patient ids: each image is its own patient,
    which "N images of N patients" hid."""
    root = {"covid-radiography": make_radiography, "covid-pneumonia-normal": make_pneumonia_normal,
            "folder": make_folder, "csv": make_csv_dataset}[name]()
    with caplog.at_level(logging.INFO, logger="cxrnets.data"):
        index = load_dataset(name, root)
    line = next(record.getMessage() for record in caplog.records if record.getMessage().startswith(f"{name}: "))
    assert line.startswith(f"{name}: {len(index.frame)} images (") and "patients" not in line
    assert "; no patient ids: split by image" in line and "\n" not in line
    if name == "csv":
        assert "images of 16 patients" in load_dataset(name, root, patient_column="patient").summary()


def test_radiography_missing_class_folder(make_radiography) -> None:
    root = make_radiography()
    shutil.rmtree(root / "Viral Pneumonia")
    with pytest.raises(CxrError, match=r"Viral Pneumonia.*missing|missing.*Viral Pneumonia"):
        load_dataset("covid-radiography", root)


def test_radiography_without_images_subfolder(make_radiography) -> None:
    root = make_radiography()
    shutil.rmtree(root / "Normal" / "images")
    with pytest.raises(CxrError, match=r"Normal.*images/"):
        load_dataset("covid-radiography", root)


def test_a_radiography_release_without_images_folders_is_sent_to_the_folder_layout(make_radiography) -> None:
    """Releases before v4 kept the PNGs directly in each class folder: the error names the command that reads
    them, and that command does."""
    root = make_radiography()
    for class_folder in [path for path in root.iterdir() if path.is_dir()]:
        for image in (class_folder / "images").iterdir():
            image.rename(class_folder / image.name)
        shutil.rmtree(class_folder / "images")
        shutil.rmtree(class_folder / "masks", ignore_errors=True)
    with pytest.raises(CxrError, match=rf"has no images/ folder .*pass --dataset folder --data-root {root}$"):
        load_dataset("covid-radiography", root)
    assert len(load_dataset("folder", root).frame) == len(load_dataset("covid-radiography", make_radiography(root.parent / "v4")).frame)


def test_radiography_empty_class_folder(make_radiography) -> None:
    root = make_radiography()
    for path in (root / "Lung_Opacity" / "images").iterdir():
        path.unlink()
    with pytest.raises(CxrError, match=r"'Lung_Opacity'.*no images"):
        load_dataset("covid-radiography", root)


def test_radiography_root_that_is_a_file(tmp_path: Path) -> None:
    path = tmp_path / "archive.zip"
    path.write_bytes(b"PK")
    with pytest.raises(CxrError, match=r"archive.zip.*not a folder"):
        load_dataset("covid-radiography", path)


def test_radiography_three_class_view_leaves_out_lung_opacity_and_counts_it(make_radiography,
                                                                           caplog: pytest.LogCaptureFixture) -> None:
    """The paper's task is COVID-19 vs viral pneumonia vs normal: the 3-class view reads those three folders and
    counts the Lung_Opacity images it leaves out in the summary it logs, rather than training on a fourth class."""
    root = make_radiography(per_class=5)
    with caplog.at_level(logging.INFO, logger="cxrnets.data"):
        index = load_dataset("covid-radiography-3class", root)
    assert index.name == "covid-radiography-3class" and not index.multilabel
    assert index.classes == ["COVID", "Normal", "Viral Pneumonia"]
    assert class_counts(index) == {"COVID": 5, "Normal": 5, "Viral Pneumonia": 5}
    assert not index.frame["relpath"].str.startswith("Lung_Opacity/").any()
    assert index.skipped == {"Lung_Opacity (not COVID/Normal/Viral Pneumonia)": 5}
    assert "skipped: Lung_Opacity (not COVID/Normal/Viral Pneumonia) 5" in caplog.text
    assert sorted(Counter(index.targets().tolist()).items()) == [(0, 5), (1, 5), (2, 5)]

    shutil.rmtree(root / "Lung_Opacity")  # the database's first releases had no Lung_Opacity/
    index = load_dataset("covid-radiography-3class", root)
    assert len(index.frame) == 15 and index.skipped == {}
    with pytest.raises(CxrError, match=r"not a covid-radiography dataset.*'Lung_Opacity'"):
        load_dataset("covid-radiography", root)
    shutil.rmtree(root / "Normal")
    with pytest.raises(CxrError, match=r"not a covid-radiography-3class dataset: class folders \['Normal'\] are missing"):
        load_dataset("covid-radiography-3class", root)


@pytest.mark.parametrize("layout, given, hint", [
    ("dataset 1", "covid-pneumonia-normal",
     "those are the class folders of covid-radiography: pass --dataset covid-radiography (or --dataset "
     "covid-radiography-3class)"),
    ("dataset 1 without Lung_Opacity", "covid-radiography",
     "those are the class folders of covid-radiography-3class: pass --dataset covid-radiography-3class"),
    ("dataset 2", "covid-radiography",
     "those are the class folders of covid-pneumonia-normal: pass --dataset covid-pneumonia-normal"),
    ("dataset 2", "covid-radiography-3class",
     "those are the class folders of covid-pneumonia-normal: pass --dataset covid-pneumonia-normal"),
])
def test_a_dataset_passed_as_another_names_the_dataset_it_is(layout: str, given: str, hint: str, make_radiography,
                                                              make_pneumonia_normal) -> None:
    """Dataset 1 passed as dataset 2 (whose covid/ and normal/ its COVID/ and Normal/ match), or dataset 2 as
    dataset 1, was told to pass --dataset folder rather than the name of the dataset it is."""
    root = make_pneumonia_normal(per_class=2) if layout == "dataset 2" else make_radiography(per_class=2)
    if layout == "dataset 1 without Lung_Opacity":
        shutil.rmtree(root / "Lung_Opacity")
    with pytest.raises(CxrError, match=rf"not a {given} dataset: class folders .* are missing \(.*\); "
                                       rf"{re.escape(hint)}$"):
        load_dataset(given, root)


def test_radiography_names_its_masks_and_counts_the_images_outside_its_images_folders(make_radiography,
                                                                                    write_image) -> None:
    """The images of a class folder outside its images/ folder were dropped without a word, and its masks/ were
    not named, while --dataset folder names the masks it leaves out."""
    root = make_radiography(per_class=3)
    for i in range(2):
        write_image(root / "COVID" / "extra" / f"COVID-extra-{i}.png", "L", 200, seed=900 + i)
    write_image(root / "Normal" / "Normal-stray.png", "L", 60, seed=910)
    index = load_dataset("covid-radiography", root)
    assert len(index.frame) == 12 and index.frame["relpath"].str.contains("/images/").all()
    summary = index.summary()
    assert ("left out as masks: 12 images in COVID/masks/, Lung_Opacity/masks/, Normal/masks/, "
            "Viral Pneumonia/masks/") in summary
    assert "skipped: image outside images/ (COVID/extra/) 2, image outside images/ (Normal/) 1" in summary


@pytest.mark.parametrize("name", ["covid-radiography", "covid-radiography-3class", "covid-pneumonia-normal",
                                  "covid-chestxray-3class"])
def test_dataset_one_folder_down_is_named(name: str, make_radiography, make_pneumonia_normal, make_chestxray,
                                          tmp_path: Path) -> None:
    """An archive extracted as it comes (Kaggle's and GitHub's wrap the dataset in a folder): the error
    names the folder that holds the dataset and the option to pass it with."""
    build = {"covid-radiography": make_radiography, "covid-radiography-3class": make_radiography,
             "covid-pneumonia-normal": make_pneumonia_normal, "covid-chestxray-3class": make_chestxray}[name]
    extracted = tmp_path / "archive"
    inner = build(extracted / "Dataset_Wrapper")
    (extracted / "README.txt").write_text("beside the dataset\n")
    with pytest.raises(CxrError, match=rf"lies in {inner}: pass --data-root {inner}$"):
        load_dataset(name, extracted)
    with pytest.raises(CxrError, match=rf"--image-root {inner}$"):
        load_dataset(name, tmp_path, root_option="--image-root")  # two levels down, the caller's option
    assert len(load_dataset(name, inner).frame) > 0


def test_incomplete_layout_below_is_not_offered(make_radiography, tmp_path: Path) -> None:
    inner = make_radiography(tmp_path / "archive" / "COVID-19_Radiography_Dataset")
    shutil.rmtree(inner / "Normal")
    with pytest.raises(CxrError, match=r"not a covid-radiography dataset.*'Normal'"):
        load_dataset("covid-radiography", tmp_path / "archive")


# ------------------------------------------------------------------ covid-pneumonia-normal


def test_pneumonia_normal_layout(make_pneumonia_normal) -> None:
    root = make_pneumonia_normal(per_class=6)
    index = load_dataset("covid-pneumonia-normal", root)
    assert index.classes == ["covid", "normal", "pneumonia"]
    assert class_counts(index) == {"covid": 6, "normal": 6, "pneumonia": 6}
    suffixes = {Path(relpath).suffix for relpath in index.frame["relpath"]}
    assert suffixes == {".png", ".jpg", ".jpeg", ".PNG"}  # suffixes matched case-insensitively
    assert not any(relpath.endswith(".ini") for relpath in index.frame["relpath"])
    for path in index.paths():  # varied sizes and modes all decode to the same square
        assert load_image(path, 24).shape == (3, 24, 24)


def test_pneumonia_normal_leaves_out_mask_folders_and_names_them(make_pneumonia_normal, write_image) -> None:
    """A covid/masks/ folder's segmentation masks were read as covid X-rays, where --dataset folder leaves them
    out."""
    root = make_pneumonia_normal(per_class=3)
    for i in range(2):
        write_image(root / "covid" / "masks" / f"covid-{i:03d}.png", "L", 255, seed=950 + i)
    index = load_dataset("covid-pneumonia-normal", root)
    assert class_counts(index) == {"covid": 3, "normal": 3, "pneumonia": 3}
    assert "left out as masks: 2 images in covid/masks/" in index.summary()


def test_pneumonia_normal_upper_case_folders(make_pneumonia_normal, tmp_path: Path) -> None:
    root = make_pneumonia_normal(per_class=3)
    (root / "covid").rename(root / "COVID")
    (root / "normal").rename(root / "Normal")
    index = load_dataset("covid-pneumonia-normal", root)
    assert index.classes == ["covid", "normal", "pneumonia"]
    assert len(index.frame) == 9


@pytest.mark.parametrize("name", ["covid-pneumonia-normal", "folder"])
def test_two_class_folders_differing_only_in_case_are_refused_naming_both(name: str, make_pneumonia_normal,
                                                                          write_image) -> None:
    """normal/ and Normal/ (two copies merged on Linux) were one class, the later folder's: the earlier one's
    images were dropped without a word."""
    root = make_pneumonia_normal(per_class=3)
    write_image(root / "Normal" / "extra-000.png", "L", 60, seed=777)
    with pytest.raises(CxrError, match=rf"{root / 'Normal'} and {root / 'normal'}: two folders whose names "
                                       r"differ only in letter case, read as one; merge them into one"):
        load_dataset(name, root)


def test_pneumonia_normal_empty_class(make_pneumonia_normal) -> None:
    root = make_pneumonia_normal(per_class=3)
    for path in (root / "pneumonia").iterdir():
        path.unlink()
    with pytest.raises(CxrError, match=r"'pneumonia'.*no images"):
        load_dataset("covid-pneumonia-normal", root)


@pytest.mark.parametrize("name, emptied", [("covid-radiography", "Lung_Opacity"), ("covid-radiography-3class", "Normal"),
                                           ("covid-pneumonia-normal", "normal")])
def test_an_empty_class_folder_of_a_fixed_layout_gets_a_remedy_that_works_there(name: str, emptied: str,
                                                                                 make_radiography,
                                                                                 make_pneumonia_normal,
                                                                                 tmp_path: Path) -> None:
    """"add images or remove the folder": removed, the folder was then missing, which these layouts refuse."""
    root = {"covid-radiography": make_radiography, "covid-radiography-3class": make_radiography,
            "covid-pneumonia-normal": make_pneumonia_normal}[name]()
    images = root / emptied / "images" if name.startswith("covid-radiography") else root / emptied
    for path in images.iterdir():
        path.unlink()
    with pytest.raises(CxrError, match=rf"{root}: class folder for '{emptied}' holds no images.*; add images, or "
                                       rf"move {root / emptied} out of {root}.* and pass --dataset folder") as refused:
        load_dataset(name, root)
    assert "remove the folder" not in str(refused.value)
    shutil.move(root / emptied, tmp_path / "set-aside")  # the remedy, followed
    if name == "covid-radiography-3class":  # which leaves Lung_Opacity out: the folder layout would read it
        assert f"(and {root / 'Lung_Opacity'}, which covid-radiography-3class leaves out)" in str(refused.value)
        shutil.move(root / "Lung_Opacity", tmp_path / "set-aside-too")
    assert sorted(class_counts(load_dataset("folder", root))) == sorted(
        folder.name for folder in root.iterdir() if folder.is_dir())


def test_pneumonia_normal_missing_class(make_pneumonia_normal) -> None:
    root = make_pneumonia_normal(per_class=3)
    shutil.rmtree(root / "normal")
    with pytest.raises(CxrError, match=r"not a covid-pneumonia-normal dataset.*'normal'"):
        load_dataset("covid-pneumonia-normal", root)


@pytest.mark.parametrize("name", ["covid-radiography", "covid-pneumonia-normal"])
def test_a_fixed_layout_missing_some_class_folders_offers_the_folder_layout(name: str, make_radiography,
                                                                            make_pneumonia_normal) -> None:
    root = {"covid-radiography": make_radiography, "covid-pneumonia-normal": make_pneumonia_normal}[name]()
    removed = sorted(folder for folder in root.iterdir() if folder.is_dir())[0]
    shutil.rmtree(removed)
    with pytest.raises(CxrError, match=r"are missing .*; to study the classes there are, pass --dataset folder$"):
        load_dataset(name, root)
    assert removed.name not in class_counts(load_dataset("folder", root))  # the remedy, followed


def test_a_folder_holding_none_of_a_fixed_layouts_classes_is_not_offered_the_folder_layout(tmp_path: Path,
                                                                                          write_image) -> None:
    for name in ("a", "b"):
        write_image(tmp_path / name / "x.png")
    with pytest.raises(CxrError, match=r"are missing \(expected .*, found \['a', 'b'\]\)$"):
        load_dataset("covid-pneumonia-normal", tmp_path)


def test_a_file_name_that_is_not_utf8_is_refused_naming_the_file_and_how_to_rename(make_pneumonia_normal) -> None:
    """A zip made on Windows names files in its code page (b'caf\\xe9' in Latin-1): indexing crashed with a bare
    UnicodeEncodeError naming no file."""
    root = make_pneumonia_normal(per_class=3)
    latin1 = os.fsencode(root / "normal") + b"/caf\xe9 0.png"
    os.rename(root / "normal" / "normal-000.png", latin1)
    with pytest.raises(CxrError, match=re.escape(f"{latin1!r}: the name is not UTF-8 text") + ".*rename it.*"
                                       + re.escape(f"convmv -f latin1 -t utf8 -r --notest {root}")):
        load_dataset("covid-pneumonia-normal", root)


def test_a_csv_row_leading_to_a_file_name_that_is_not_utf8_is_refused_naming_the_file(make_csv_dataset) -> None:
    csv_path = make_csv_dataset()
    latin1 = os.fsencode(csv_path.parent / "img") + b"/caf\xe9.png"
    os.rename(csv_path.parent / "img" / "p00-0.png", latin1)
    (csv_path.parent / "img" / "p00-0.png").symlink_to(os.fsdecode(latin1))  # the row's path leads there
    with pytest.raises(CxrError, match=re.escape(f"{latin1!r}: the name is not UTF-8 text")):
        load_dataset("csv", csv_path)


# ------------------------------------------------------------------ folder


def test_folder_layout(make_folder) -> None:
    root = make_folder(per_class=7)
    index = load_dataset("folder", root)
    assert index.classes == ["healthy", "sick"]
    assert class_counts(index) == {"healthy": 7, "sick": 7}
    relpaths = list(index.frame["relpath"])
    assert any("/batch2/" in relpath for relpath in relpaths)  # sub-folders count
    assert not any("masks" in relpath or ".hidden" in relpath for relpath in relpaths)


def test_linked_sub_folders_are_read_once_and_broken_links_counted_as_skipped(make_folder, tmp_path: Path,
                                                                             write_image) -> None:
    """A sub-folder of a class folder that is a link (to images kept on another disk) was passed over without a
    word, and so was a link to a file that is gone."""
    root = make_folder(per_class=3)
    elsewhere = tmp_path / "elsewhere"
    for i in range(2):
        write_image(elsewhere / f"more-{i}.png", "L", 60, seed=800 + i)
    (root / "healthy" / "more").symlink_to(elsewhere)
    (root / "healthy" / "again").symlink_to(elsewhere)  # a second link to the same folder: read once
    (root / "healthy" / "batch2" / "up").symlink_to(root / "healthy")  # a loop: read once
    (root / "sick" / "gone.png").symlink_to(tmp_path / "deleted.png")
    index = load_dataset("folder", root)
    assert class_counts(index) == {"healthy": 5, "sick": 3}
    assert {"healthy/again/more-0.png", "healthy/again/more-1.png"} <= set(index.frame["relpath"])
    assert index.skipped == {"broken link": 1}
    assert index.summary().endswith("; skipped: broken link 1")
    (root / "unsure").mkdir()
    (root / "unsure" / "scan.png").symlink_to("/unmounted/scan.png")
    with pytest.raises(CxrError, match=r"'unsure' holds no images \(1 link\(s\) to nothing, e\.g\. .*scan.png\)"):
        load_dataset("folder", root)


def test_folder_under_a_path_named_masks(make_folder, tmp_path: Path) -> None:
    """Only masks/ folders inside the dataset are skipped, not the dataset's own parents."""
    root = make_folder(root=tmp_path / "masks" / "my-data", per_class=3)
    (root / "masks").mkdir()  # a top-level masks/ folder is not a class either
    index = load_dataset("folder", root)
    assert index.classes == ["healthy", "sick"]
    assert len(index.frame) == 6


@pytest.mark.parametrize("mask_name", ["mask", "Masks", "lung masks", "Lung_Masks", "mask_images", "ManualMask"])
def test_folder_leaves_out_mask_folders_of_any_common_name_and_says_which(mask_name: str, make_radiography,
                                                                         caplog: pytest.LogCaptureFixture) -> None:
    """Dataset 1 read as a folder dataset with its <Class>/masks/ renamed, as other public sets name them: the
    masks were read as X-rays of their class unless the folder was named exactly masks."""
    root = make_radiography(per_class=3)
    for class_folder in [path for path in root.iterdir() if path.is_dir()]:
        (class_folder / "masks").rename(class_folder / mask_name)
    with caplog.at_level(logging.INFO, logger="cxrnets.data"):
        index = load_dataset("folder", root)
    assert class_counts(index) == {name: 3 for name in RADIOGRAPHY_CLASSES}
    assert all("/images/" in relpath for relpath in index.frame["relpath"])
    shown = ", ".join(f"{name}/{mask_name}/" for name in RADIOGRAPHY_CLASSES)
    assert f"; left out as masks: 12 images in {shown}" in caplog.text
    assert "hold no image, each the same folders" not in caplog.text  # <Class>/images/ alone: a dataset


@pytest.mark.parametrize("name", ["Unmasked", "maskless", "batch_masked"])
def test_folder_reads_sub_folders_whose_names_only_contain_mask(name: str, make_folder) -> None:
    root = make_folder(per_class=3)
    (root / "sick" / "batch2").rename(root / "sick" / name)
    index = load_dataset("folder", root)
    assert class_counts(index) == {"healthy": 3, "sick": 3}
    assert f"sick/{name}/" in "".join(index.frame["relpath"])


def test_a_class_named_with_the_word_mask_stays_a_class(make_folder) -> None:
    """Only a top folder named mask or masks is not a class: one whose name merely holds the word is."""
    root = make_folder(classes={"lung masks": 60, "Lung_Masks_normal": 190}, per_class=3)
    index = load_dataset("folder", root)
    assert index.classes == ["Lung_Masks_normal", "lung masks"]
    assert class_counts(index) == {"Lung_Masks_normal": 3, "lung masks": 3}
    assert index.mask_folders == {"Lung_Masks_normal/masks": 1, "lung masks/masks": 1}


def test_a_masks_folder_beside_the_classes_is_named_as_left_out(make_folder, write_image) -> None:
    root = make_folder(per_class=3)
    write_image(root / "Masks" / "healthy" / "mask-1.png", "L", 255, seed=1)
    index = load_dataset("folder", root)
    assert index.classes == ["healthy", "sick"]
    assert index.mask_folders == {"Masks": 1, "healthy/masks": 1, "sick/masks": 1}
    assert "; left out as masks: 3 images in Masks/, healthy/masks/, sick/masks/" in index.summary()


def test_folder_unzipped_on_a_mac_has_only_its_own_classes_and_images(make_folder) -> None:
    """A zip made on a Mac holds __MACOSX/ (AppleDouble ._* files mirroring the tree) and ._* files beside
    the images: neither is a class or an image."""
    root = make_folder(per_class=3)
    apple_double = b"\x00\x05\x16\x07" + b"\x00" * 78  # resource-fork metadata, not an image
    for relpath in ("__MACOSX/healthy/._img-000.png", "__MACOSX/._healthy", "healthy/._img-000.png",
                    "sick/batch2/._img-000.png", "sick/.thumbnails/img-001.png"):
        (root / relpath).parent.mkdir(parents=True, exist_ok=True)
        (root / relpath).write_bytes(apple_double)
    index = load_dataset("folder", root)
    assert index.classes == ["healthy", "sick"]
    assert class_counts(index) == {"healthy": 3, "sick": 3}
    assert not index.frame["relpath"].str.contains("/\\.|__MACOSX").any()


@pytest.mark.parametrize("name", ["folder", "covid-radiography", "covid-pneumonia-normal"])
def test_files_of_a_type_not_read_are_counted_by_type(name: str, make_folder, make_radiography,
                                                      make_pneumonia_normal) -> None:
    """DICOM files (.dcm), or a type such as .jfif, in a class folder are not read: the summary counts them, so
    that a user sees them; what holds no data (hidden files, Thumbs.db, desktop.ini) and masks are not counted."""
    root = {"folder": make_folder, "covid-radiography": make_radiography,
            "covid-pneumonia-normal": make_pneumonia_normal}[name](per_class=3)
    first, second = {"folder": ("sick", "healthy"), "covid-radiography": ("COVID/images", "Normal/images"),
                     "covid-pneumonia-normal": ("covid", "normal")}[name]
    for relpath in (f"{first}/scan-1.dcm", f"{first}/scan-2.DCM", f"{second}/photo.jfif", f"{first}/.DS_Store",
                    f"{first}/._scan-1.dcm", f"{first}/Thumbs.db", f"{second}/desktop.ini"):
        (root / relpath).write_bytes(b"\0" * 10)
    if name == "folder":
        (root / "sick" / "masks" / "mask-1.dcm").write_bytes(b"\0" * 10)
    index = load_dataset(name, root)
    assert index.skipped == {"unsupported file type .dcm": 2, "unsupported file type .jfif": 1}
    assert index.summary().endswith("; skipped: unsupported file type .dcm 2, unsupported file type .jfif 1")
    assert len(index.frame) == {"folder": 6, "covid-radiography": 12, "covid-pneumonia-normal": 9}[name]


def test_a_class_folder_of_files_not_read_says_their_type(make_folder) -> None:
    root = make_folder(per_class=3)
    (root / "unsure").mkdir()
    for i in range(4):
        (root / "unsure" / f"scan-{i}.dcm").write_bytes(b"\0" * 10)
    with pytest.raises(CxrError, match=r"'unsure' holds no images \(only files of a type not read: .dcm 4\)"):
        load_dataset("folder", root)


def test_files_that_are_not_images_are_counted_as_such(make_folder) -> None:
    """A class folder's notes or labels (.txt, .csv) were counted as an 'unsupported file type', as DICOM is: they
    are no images, of any type."""
    root = make_folder(per_class=3)
    (root / "sick" / "notes.txt").write_text("seen by Dr X")
    (root / "sick" / "scan.dcm").write_bytes(b"\0" * 10)
    index = load_dataset("folder", root)
    assert index.summary().endswith("; skipped: not an image .txt 1, unsupported file type .dcm 1")
    (root / "notes").mkdir()
    (root / "notes" / "labels.csv").write_text("a,b\n")
    (root / "notes" / "scan.dcm").write_bytes(b"\0" * 10)
    with pytest.raises(CxrError, match=r"'notes' holds no images \(only files of a type not read: .dcm 1; files "
                                       r"that are not images: .csv 1\)"):
        load_dataset("folder", root)


def test_folder_one_level_too_high_is_refused_naming_the_level_below(tmp_path: Path, write_image) -> None:
    """Kermany's pneumonia dataset is chest_xray/{train,test,val}/{NORMAL,PNEUMONIA}/: given chest_xray, the
    folder dataset would train on train/test/val as classes."""
    root = tmp_path / "chest_xray"
    for part in ("train", "test", "val"):
        for i, label in enumerate(("NORMAL", "PNEUMONIA")):
            write_image(root / part / label / f"{part}-{i}.jpeg", "L", 60 + 100 * i, seed=len(part) * 10 + i)
    with pytest.raises(CxrError, match=rf"{root}: test, train, val hold no image, each the same folders \(NORMAL, "
                                       rf"PNEUMONIA\): .*pass one of test, train, val \(e.g. {root / 'test'}\)"):
        load_dataset("folder", root)
    assert load_dataset("folder", root / "train").classes == ["NORMAL", "PNEUMONIA"]


def test_folder_of_classes_holding_the_same_batch_folders_is_a_dataset_with_a_warning(tmp_path: Path, write_image,
                                                                                     caplog) -> None:
    """Class folders that share their batch folders (covid/2020, covid/2021, normal/2020, ...) may be a dataset, or
    the classes one level down: loaded as classes, with a warning naming the other reading."""
    root = tmp_path / "by-year"
    for i, label in enumerate(("covid", "normal")):
        for year in ("2020", "2021"):
            write_image(root / label / year / f"{label}-{year}.png", "L", 60 + 100 * i, seed=int(year) + i)
    with caplog.at_level(logging.WARNING, logger="cxrnets.data"):
        assert load_dataset("folder", root).classes == ["covid", "normal"]
    assert "the classes are covid, normal; if they are 2020, 2021 instead, pass one of covid, normal" in caplog.text


def test_folder_of_classes_holding_one_same_folder_is_a_dataset(make_radiography) -> None:
    """<class>/images/ (covid-radiography's layout) is a class-per-folder tree like any other."""
    index = load_dataset("folder", make_radiography(per_class=2))
    assert index.classes == list(RADIOGRAPHY_CLASSES) and len(index.frame) == 8


def test_folder_needs_two_classes(tmp_path: Path, write_image) -> None:
    write_image(tmp_path / "data" / "only" / "a.png")
    with pytest.raises(CxrError, match="at least two class sub-folders"):
        load_dataset("folder", tmp_path / "data")


def test_folder_whose_one_sub_folder_holds_the_classes_says_which_root_to_pass(tmp_path: Path, write_image) -> None:
    """An archive unpacked into a folder of its own (data/release/<class>/): 'found 1' left the user to guess."""
    for name in ("covid", "normal"):
        write_image(tmp_path / "data" / "release" / name / "a.png")
    with pytest.raises(CxrError) as refused:
        load_dataset("folder", tmp_path / "data")
    assert str(refused.value) == (f"{tmp_path / 'data'}: a folder dataset needs at least two class sub-folders, "
                                  f"found 1 (release/, which holds 2): if those are the classes, pass --data-root "
                                  f"{tmp_path / 'data' / 'release'}")


def test_folder_empty_class(make_folder) -> None:
    root = make_folder(per_class=3)
    (root / "unsure").mkdir()
    (root / "unsure" / "notes.txt").write_text("nothing yet")
    with pytest.raises(CxrError, match=r"'unsure'.*no images"):
        load_dataset("folder", root)


# ------------------------------------------------------------------ csv


def test_csv_layout(make_csv_dataset, caplog: pytest.LogCaptureFixture) -> None:
    csv_path = make_csv_dataset()
    with caplog.at_level(logging.WARNING, logger="cxrnets.data"):
        index = load_dataset("csv", csv_path, patient_column="patient")
    assert index.classes == ["covid", "normal"]
    assert class_counts(index) == {"covid": 12, "normal": 12}
    assert index.frame["patient"].nunique() == 16
    assert set(index.frame["patient"]) == {f"patient-{p:02d}" for p in range(16)}
    assert index.skipped == {"image file absent": 1, "blank label": 1}
    assert all(path.is_file() for path in index.paths())
    # every skip is logged, naming the CSV and its row
    assert "labels.csv row" in caplog.text and "absent.png" in caplog.text
    assert "skipped: image file absent 1, blank label 1" in index.summary()


def relabelled(csv_path: Path, labels: dict[int, str]) -> Path:
    """`csv_path` with the label of each of its `labels` rows (2: the first under the header) replaced."""
    table = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    for row, label in labels.items():
        table.loc[row - 2, "label"] = label
    table.to_csv(csv_path, index=False)
    return csv_path


def test_csv_labels_are_read_without_their_surrounding_spaces(make_csv_dataset) -> None:
    index = load_dataset("csv", relabelled(make_csv_dataset(), {4: " covid", 5: "covid  "}))
    assert index.classes == ["covid", "normal"] and class_counts(index) == {"covid": 12, "normal": 12}


def test_csv_labels_differing_only_in_case_are_refused_naming_both_spellings(make_csv_dataset) -> None:
    csv_path = relabelled(make_csv_dataset(), {9: "Covid "})
    with pytest.raises(CxrError, match=r"labels.csv: 'label' spells one class two ways, 'covid' \(row 4\) and "
                                       r"'Covid' \(row 9\), which would be two classes; spell them alike"):
        load_dataset("csv", csv_path)


def test_csv_labels_that_spell_a_missing_value_are_skipped_as_blank(make_csv_dataset,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    """The CSV is read as text (keep_default_na=False): NA, nan or N/A would otherwise be a class."""
    csv_path = relabelled(make_csv_dataset(), {2: "NA", 4: "nan", 6: " N/A"})
    with caplog.at_level(logging.WARNING, logger="cxrnets.data"):
        index = load_dataset("csv", csv_path)
    assert index.classes == ["covid", "normal"] and class_counts(index) == {"covid": 11, "normal": 10}
    assert index.skipped["blank label"] == 4
    assert "labels.csv row 2: 'label' is 'NA', a missing value, skipped" in caplog.text
    assert "labels.csv row 6: 'label' is 'N/A', a missing value, skipped" in caplog.text


def test_csv_image_listed_twice_is_kept_once_and_counted(make_csv_dataset, caplog: pytest.LogCaptureFixture) -> None:
    csv_path = make_csv_dataset()
    with csv_path.open("a") as file:
        file.write("./img/p00-0.png,normal,patient-00\n")  # the first row's image again, spelt otherwise
    with caplog.at_level(logging.WARNING, logger="cxrnets.data"):
        index = load_dataset("csv", csv_path, patient_column="patient")
    assert len(index.frame) == 24 and index.frame["relpath"].is_unique
    assert class_counts(index) == {"covid": 12, "normal": 12}
    assert index.skipped["duplicate row"] == 1
    assert "duplicate row 1" in index.summary()
    assert "labels.csv: 1 duplicate row(s) left out" in caplog.text and "rows 2 and 28" in caplog.text


def test_csv_image_listed_with_two_labels_is_refused_naming_both_rows(make_csv_dataset) -> None:
    csv_path = make_csv_dataset()
    with csv_path.open("a") as file:
        file.write("img/p00-0.png,covid,patient-00\n")
    with pytest.raises(CxrError, match=r"labels.csv: rows 2 and 28 both list img/p00-0.png, labelled 'normal' and "
                                       r"'covid'; delete the row whose label is wrong"):
        load_dataset("csv", csv_path)


def test_patients_listing_the_same_image_are_one_patient(make_csv_dataset) -> None:
    """The split kept such patients together through the identical file; kept once, the image would no
    longer tie the second patient's other images to the first's."""
    csv_path = make_csv_dataset()
    with csv_path.open("a") as file:
        file.write("img/p00-0.png,normal,patient-77\nimg/p02-0.png,normal,patient-77\n")
    index = load_dataset("csv", csv_path, patient_column="patient")
    patients = dict(zip(index.frame["relpath"], index.frame["patient"]))
    assert patients["img/p00-0.png"] == patients["img/p00-1.png"] == "patient-00"
    assert patients["img/p02-0.png"] == patients["img/p02-1.png"] == "patient-00"  # patient-02 was patient-77 too
    assert "patient-77" not in set(index.frame["patient"]) and index.skipped["duplicate row"] == 2


def test_csv_without_patient_column_groups_by_image(make_csv_dataset) -> None:
    index = load_dataset("csv", make_csv_dataset())
    assert list(index.frame["patient"]) == list(index.frame["relpath"])


def test_csv_with_other_column_names(make_csv_dataset) -> None:
    csv_path = make_csv_dataset(columns=("file", "diagnosis", "subject"))
    index = load_dataset("csv", csv_path, path_column="file", label_column="diagnosis", patient_column="subject")
    assert len(index.frame) == 24 and index.frame["patient"].nunique() == 16


def test_csv_without_the_named_columns(make_csv_dataset) -> None:
    csv_path = make_csv_dataset(columns=("file", "diagnosis", "subject"))
    with pytest.raises(CxrError, match=r"labels.csv.*missing column\(s\) \['path', 'label'\]"):
        load_dataset("csv", csv_path)
    with pytest.raises(CxrError, match=r"labels.csv.*\['patient'\]"):
        load_dataset("csv", csv_path, path_column="file", label_column="diagnosis", patient_column="patient")


def test_csv_root_must_be_the_file(make_csv_dataset) -> None:
    with pytest.raises(CxrError, match="takes the CSV file itself as --data-root"):
        load_dataset("csv", make_csv_dataset().parent)


@pytest.mark.parametrize("name", [name for name in DATASET_NAMES if name != "csv"])
def test_folder_dataset_given_a_file_names_the_option(name: str, make_csv_dataset) -> None:
    with pytest.raises(CxrError, match=rf"labels.csv: is a file, not a folder; pass the {name} dataset's folder "
                                       r"as --source-root"):
        load_dataset(name, make_csv_dataset(), root_option="--source-root")


def test_csv_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.csv"
    path.write_text("")
    with pytest.raises(CxrError, match=r"empty.csv.*cannot read CSV"):
        load_dataset("csv", path)


def test_csv_with_no_usable_rows(tmp_path: Path) -> None:
    path = tmp_path / "labels.csv"
    path.write_text("path,label\nmissing.png,covid\n")
    with pytest.raises(CxrError, match=r"no usable images.*image file absent 1"):
        load_dataset("csv", path)


def test_unknown_dataset_option(make_csv_dataset) -> None:
    with pytest.raises(CxrError, match=r"'csv' has no option 'colour' \(--dataset-option colour=...\); its options: "
                                       r"path_column, label_column, patient_column"):
        load_dataset("csv", make_csv_dataset(), colour="red")


# ------------------------------------------------------------------ names and roots


def test_unknown_dataset_name(tmp_path: Path) -> None:
    with pytest.raises(CxrError, match=r"unknown dataset 'chexpert'.*covid-radiography"):
        load_dataset("chexpert", tmp_path)


@pytest.mark.parametrize("name", DATASET_NAMES)
def test_data_root_that_does_not_exist(name: str, tmp_path: Path) -> None:
    with pytest.raises(CxrError, match=r"nowhere.*does not exist.*--data-root"):
        load_dataset(name, tmp_path / "nowhere")


# ------------------------------------------------------------------ covid-chestxray: parsing


@pytest.mark.parametrize("finding, labels", [
    ("COVID-19", ("COVID-19", "Pneumonia", "Viral")),
    ("COVID-19, ARDS", ("ARDS", "COVID-19", "Pneumonia", "Viral")),
    ("Pneumonia/Viral/COVID-19", ("COVID-19", "Pneumonia", "Viral")),
    ("Pneumonia/Viral/COVID-19, ARDS", ("ARDS", "COVID-19", "Pneumonia", "Viral")),
    ("  covid-19 ", ("COVID-19", "Pneumonia", "Viral")),
    ("pneumonia / BACTERIAL / streptococcus", ("Bacterial", "Pneumonia", "Streptococcus")),
    ("Streptococcus", ("Bacterial", "Pneumonia", "Streptococcus")),
    ("Pneumocystis", ("Fungal", "Pneumocystis", "Pneumonia")),
    ("SARS", ("Pneumonia", "SARS", "Viral")),
    ("SARS-CoV-2", ("COVID-19", "Pneumonia", "Viral")),  # the virus's name for the disease's
    ("sars-cov-2, ARDS", ("ARDS", "COVID-19", "Pneumonia", "Viral")),
    ("Pneumonia", ("Pneumonia",)),
    ("No Finding", ("No Finding",)),
    ("no   finding", ("No Finding",)),
    ("COVID-19,,ARDS", ("ARDS", "COVID-19", "Pneumonia", "Viral")),
    ("Something  New", ("Something New",)),  # unknown names are kept, whitespace normalised
    ("Tuberculosis", ("Tuberculosis",)),  # not a pneumonia (newer releases file it outside Pneumonia/)
    ("tuberculosis", ("Tuberculosis",)),
    ("", ()),
])
def test_parse_finding(finding: str, labels: tuple[str, ...]) -> None:
    assert parse_finding(finding) == labels


def test_parse_finding_with_own_hierarchy() -> None:
    assert parse_finding("COVID-19, ARDS", hierarchy={}) == ("ARDS", "COVID-19")
    assert parse_finding(" covid-19 ", hierarchy={}) == ("COVID-19",)  # still case-normalised
    assert parse_finding("b", hierarchy={"B": "A", "A": "Root"}) == ("A", "B", "Root")


@pytest.mark.parametrize("labels, expected", [
    (("COVID-19", "Pneumonia", "Viral"), "COVID-19"),
    (("ARDS", "COVID-19", "Pneumonia", "Viral"), "COVID-19"),
    (("Bacterial", "Pneumonia", "Streptococcus"), "Other pneumonia"),
    (("Pneumonia",), "Other pneumonia"),
    (("No Finding",), "No Finding"),
    (("ARDS",), None),
    (("ARDS", "No Finding"), None),
    (("Tuberculosis",), None),
])
def test_three_class_label(labels: tuple[str, ...], expected: str | None) -> None:
    assert three_class_label(labels) == expected


# ------------------------------------------------------------------ covid-chestxray: fixture tree

CHESTXRAY_SKIPPED = {"finding todo": 1, "finding blank": 1, "finding Unknown": 1, "modality not X-ray": 1,
                     "view not frontal": 1, "image file absent": 2}


def test_chestxray_multilabel(make_chestxray, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="cxrnets.data"):
        index = load_dataset("covid-chestxray", make_chestxray())
    assert index.multilabel
    assert len(index.frame) == 25
    assert index.frame["patient"].nunique() == 19
    assert index.skipped == CHESTXRAY_SKIPPED
    assert index.classes == sorted(index.classes)
    assert class_counts(index) == {
        "COVID-19": 10, "Viral": 12, "Pneumonia": 18, "ARDS": 3, "Bacterial": 3, "Streptococcus": 2,
        "Klebsiella": 1, "SARS": 1, "Fungal": 2, "Pneumocystis": 2, "Influenza": 1, "No Finding": 6,
    }
    by_path = dict(zip(index.frame["relpath"], index.frame["labels"]))
    assert by_path["images/p2-a.jpeg"] == ("ARDS", "COVID-19", "Pneumonia", "Viral")
    assert by_path["images/p4.png"] == ("COVID-19", "Pneumonia", "Viral")
    assert by_path["images/p16.png"] == ("No Finding",)
    assert "images/p5-lateral.png" not in by_path and "images/p6-ct.png" not in by_path
    targets = index.targets()
    assert targets.shape == (25, len(index.classes)) and targets.dtype == np.float32
    assert targets.sum() == sum(len(labels) for labels in index.frame["labels"])
    # the skip summary is logged, not silent
    assert "skipped:" in caplog.text and "image file absent 2" in caplog.text and "finding todo 1" in caplog.text


def test_chestxray_three_class(make_chestxray) -> None:
    index = load_dataset("covid-chestxray-3class", make_chestxray())
    assert not index.multilabel
    assert index.classes == list(THREE_CLASSES)
    assert class_counts(index) == {"COVID-19": 10, "Other pneumonia": 8, "No Finding": 6}
    assert index.frame["patient"].nunique() == 18
    assert index.skipped == {**CHESTXRAY_SKIPPED, "not COVID-19/pneumonia/No Finding": 1}
    assert index.stratum().nunique() == 3


def test_chestxray_image_listed_twice_is_kept_once_with_every_finding(make_chestxray, write_image) -> None:
    """Upstream lists a few images twice, under two patient ids: each image weighs once, with the findings of
    both rows (mapped to one class in the 3-class view), and its two patients are one."""
    root = make_chestxray()
    metadata = pd.read_csv(root / "metadata.csv", dtype=str, keep_default_na=False)
    again = metadata[metadata["filename"].isin(["p11.png", "p14-a.png"])].copy()
    again.loc[again["filename"] == "p11.png", ["patientid", "finding"]] = ["40", "COVID-19"]
    own = again[again["filename"] == "p11.png"].assign(filename="p40.png", finding="No Finding")
    write_image(root / "images" / "p40.png", "L", 60, seed=7)
    pd.concat([metadata, again, own]).to_csv(root / "metadata.csv", index=False)

    multi = load_dataset("covid-chestxray", root)
    assert len(multi.frame) == 26 and multi.frame["relpath"].is_unique
    assert multi.skipped == {**CHESTXRAY_SKIPPED, "duplicate row": 2}
    labels = dict(zip(multi.frame["relpath"], multi.frame["labels"]))
    assert labels["images/p11.png"] == ("COVID-19", "Pneumonia", "Viral")
    assert labels["images/p14-a.png"] == ("No Finding",)
    patients = dict(zip(multi.frame["relpath"], multi.frame["patient"]))
    assert patients["images/p11.png"] == patients["images/p40.png"] == "11"

    three = load_dataset("covid-chestxray-3class", root)
    assert class_counts(three) == {"COVID-19": 11, "Other pneumonia": 7, "No Finding": 7}
    assert dict(zip(three.frame["relpath"], three.frame["labels"]))["images/p11.png"] == ("COVID-19",)
    assert "duplicate row 2" in three.summary()


def test_chestxray_tuberculosis_is_not_counted_as_pneumonia(make_chestxray, write_image) -> None:
    """Tuberculosis was mapped to bacterial pneumonia: the 3-class view trained its X-rays as Other pneumonia."""
    root = make_chestxray()
    metadata = pd.read_csv(root / "metadata.csv", dtype=str, keep_default_na=False)
    tuberculosis = metadata[metadata["filename"] == "p4.png"].assign(patientid="41", filename="p41.png",
                                                                      finding="Tuberculosis")
    write_image(root / "images" / "p41.png", "L", 90, seed=41)
    pd.concat([metadata, tuberculosis]).to_csv(root / "metadata.csv", index=False)

    multi = load_dataset("covid-chestxray", root)
    assert dict(zip(multi.frame["relpath"], multi.frame["labels"]))["images/p41.png"] == ("Tuberculosis",)
    three = load_dataset("covid-chestxray-3class", root)
    assert "images/p41.png" not in set(three.frame["relpath"])
    assert class_counts(three)["Other pneumonia"] == 8
    assert three.skipped["not COVID-19/pneumonia/No Finding"] == 2


@pytest.mark.parametrize("name", ["covid-chestxray", "covid-chestxray-3class"])
@pytest.mark.parametrize("on_one_row", [False, True])
def test_chestxray_image_both_no_finding_and_a_disease_is_left_out_and_counted(name: str, on_one_row: bool,
                                                                             make_chestxray,
                                                                             caplog: pytest.LogCaptureFixture) -> None:
    """A file listed "No Finding" on one row and "COVID-19" on another, or "No Finding, COVID-19" on one row, was
    kept as COVID-19 (both labels in the multi-label view) with no word of the contradiction: neither label can be
    trusted."""
    root = make_chestxray()
    metadata = pd.read_csv(root / "metadata.csv", dtype=str, keep_default_na=False)
    first = int(np.flatnonzero(metadata["filename"] == "p14-a.png")[0])
    if on_one_row:
        metadata.loc[first, "finding"] = "No Finding, COVID-19"
        named = f"images/p14-a.png ('No Finding, COVID-19' on row {first + 2})"
    else:
        again = metadata.iloc[[first]].assign(patientid="42", finding="COVID-19")
        named = f"images/p14-a.png ('No Finding' on row {first + 2}, 'COVID-19' on row {len(metadata) + 2})"
        metadata = pd.concat([metadata, again])
    metadata.to_csv(root / "metadata.csv", index=False)
    before = load_dataset(name, make_chestxray(root.parent / "unchanged"))
    with caplog.at_level(logging.WARNING, logger="cxrnets.data"):
        index = load_dataset(name, root)
    assert "images/p14-a.png" not in set(index.frame["relpath"])
    assert len(index.frame) == len(before.frame) - 1
    assert index.skipped["findings contradict (No Finding and a disease)"] == 1
    assert named in caplog.text
    assert "left out" in caplog.text and "fix the wrong finding" in caplog.text


def test_chestxray_blank_patient_ids_are_counted(make_chestxray, caplog: pytest.LogCaptureFixture) -> None:
    root = make_chestxray()
    metadata = pd.read_csv(root / "metadata.csv", dtype=str, keep_default_na=False)
    metadata.loc[metadata["filename"].isin(["p14-a.png", "p14-b.png"]), "patientid"] = " "
    metadata.to_csv(root / "metadata.csv", index=False)
    with caplog.at_level(logging.WARNING, logger="cxrnets.data"):
        index = load_dataset("covid-chestxray-3class", root)
    assert "2 row(s) with a blank 'patientid': each of those images is its own patient" in caplog.text
    assert index.frame["patient"].nunique() == 19


def test_chestxray_view_and_modality_filters(make_chestxray) -> None:
    root = make_chestxray()
    any_view = load_dataset("covid-chestxray", root, views=None)
    assert len(any_view.frame) == 26 and "images/p5-lateral.png" in set(any_view.frame["relpath"])
    everything = load_dataset("covid-chestxray", root, views=None, modality=None)
    assert len(everything.frame) == 27 and "images/p6-ct.png" in set(everything.frame["relpath"])
    ct_only = load_dataset("covid-chestxray", root, views=None, modality="ct")
    assert list(ct_only.frame["relpath"]) == ["images/p6-ct.png"]
    pa_only = load_dataset("covid-chestxray", root, views=("pa",))
    assert len(pa_only.frame) == 18
    assert pa_only.skipped["view filtered out"] == 9  # 7 AP rows, the lateral and an absent AP row
    assert pa_only.skipped["image file absent"] == 1  # only the PA one: the view filter comes first


def test_chestxray_metadata_without_a_view_column_says_so(make_chestxray) -> None:
    root = make_chestxray()
    table = pd.read_csv(root / "metadata.csv", dtype=str, keep_default_na=False)
    table.drop(columns=["view"]).to_csv(root / "metadata.csv", index=False)
    with pytest.raises(CxrError, match=rf"{root / 'metadata.csv'}: no 'view' column, which the views option "
                                       r"\(default PA,AP,.*\) reads: pass --dataset-option views=any"):
        load_dataset("covid-chestxray-3class", root)
    assert len(load_dataset("covid-chestxray-3class", root, views="any").frame) == 25


def test_chestxray_ap_erect_is_a_frontal_view_in_any_case(make_chestxray) -> None:
    """The dataset's current metadata spells an upright AP film "AP Erect" (also "AP erect")."""
    root = make_chestxray()
    table = pd.read_csv(root / "metadata.csv", dtype=str, keep_default_na=False)
    ap = table.index[table["view"] == "AP"]
    table.loc[ap[::2], "view"] = "AP Erect"
    table.loc[ap[1::2], "view"] = "AP erect"
    table.to_csv(root / "metadata.csv", index=False)
    index = load_dataset("covid-chestxray-3class", root)
    assert len(index.frame) == 24 and index.skipped["view not frontal"] == 1  # the lateral


def test_chestxray_hierarchy_option(make_chestxray) -> None:
    index = load_dataset("covid-chestxray", make_chestxray(), hierarchy={})
    # no implied parents: only rows that spell the path out ("Pneumonia/Viral/COVID-19") have them
    assert "Viral" in index.classes and "Bacterial" in index.classes
    counts = class_counts(index)
    assert counts["COVID-19"] == 10 and counts["Viral"] == 3 and counts["Pneumonia"] == 7


def test_chestxray_without_metadata(make_chestxray) -> None:
    root = make_chestxray()
    (root / "metadata.csv").unlink()
    with pytest.raises(CxrError, match=r"no metadata.csv"):
        load_dataset("covid-chestxray", root)


def test_chestxray_metadata_without_columns(make_chestxray) -> None:
    root = make_chestxray()
    (root / "metadata.csv").write_text("patient,label,file\n1,COVID-19,p1-a.jpg\n")
    with pytest.raises(CxrError, match=r"metadata.csv.*missing column\(s\) \['patientid', 'finding', 'filename'\]"):
        load_dataset("covid-chestxray-3class", root)


@pytest.mark.parametrize("name", ["covid-chestxray", "covid-chestxray-3class"])
def test_chestxray_metadata_missing_a_column_suggests_no_option_the_loader_refuses(name: str, make_chestxray) -> None:
    """The csv loader's hint (path_column=..., patient_column=...) names options these loaders refuse: their
    columns have fixed names, so the file is another one, or a column was renamed."""
    root = make_chestxray()
    metadata = (root / "metadata.csv").read_text()
    (root / "metadata.csv").write_text(metadata.replace("patientid,", "Patient ID,", 1))
    with pytest.raises(CxrError) as refused:
        load_dataset(name, root)
    message = str(refused.value)
    assert "missing column(s) ['patientid']" in message
    assert "not the covid-chestxray dataset's metadata" in message and "rename the column(s)" in message
    assert "path_column" not in message and "patient_column" not in message
    (root / "metadata.csv").write_text(metadata)
    with pytest.raises(CxrError) as refused:
        load_dataset(name, root, source_column="journal")
    message = str(refused.value)
    assert "missing column(s) ['journal'] (--dataset-option source_column=journal)" in message
    assert "path_column" not in message and "not the covid-chestxray dataset's metadata" not in message


# ------------------------------------------------------------------ the embedded sample and the real copy


def test_embedded_sample() -> None:
    three = load_dataset("covid-chestxray-3class", SAMPLE_ROOT)
    assert three.classes == list(THREE_CLASSES)
    counts = class_counts(three)
    assert 150 <= len(three.frame) <= 300 and min(counts.values()) >= 10
    assert all(path.is_file() for path in three.paths())
    multi = load_dataset("covid-chestxray", SAMPLE_ROOT)
    assert multi.multilabel and {"COVID-19", "Pneumonia", "Viral", "No Finding"} <= set(multi.classes)
    assert multi.skipped.get("image file absent", 0) == 0  # the sample ships every image it lists


def test_real_dataset_three_class(real_chestxray: Path) -> None:
    index = load_dataset("covid-chestxray-3class", real_chestxray)
    counts = class_counts(index)
    assert index.classes == list(THREE_CLASSES)
    assert 400 <= len(index.frame) <= 800
    # 4 frontal images are listed twice upstream (under patients 285 and 339, 287 and 340): kept once
    assert index.frame["relpath"].is_unique and index.skipped["duplicate row"] == 4
    assert counts["COVID-19"] > counts["Other pneumonia"] > counts["No Finding"] > 0
    assert index.frame["patient"].nunique() >= 200
    assert index.skipped["image file absent"] == 11
    assert index.skipped["finding todo"] > 0 and index.skipped["modality not X-ray"] > 0
    assert all(path.is_file() for path in index.paths())


def test_real_dataset_multilabel(real_chestxray: Path) -> None:
    index = load_dataset("covid-chestxray", real_chestxray)
    counts = class_counts(index)
    assert counts["Pneumonia"] >= counts["Viral"] >= counts["COVID-19"] > 300  # hierarchy applied
    assert index.skipped["image file absent"] == 11
    assert "todo" not in {label.lower() for label in index.classes}


# ------------------------------------------------------------------ loader options, encodings, sources


def test_dataset_options_from_the_command_line() -> None:
    assert parse_dataset_options(["patient_column= subject"], ["csv"]) == {"csv": {"patient_column": "subject"}}
    with pytest.raises(CxrError, match=r"'csv' has no option 'views' \(--dataset-option views=...\)"):
        parse_dataset_options(["views=PA"], ["csv"])
    both = ["covid-chestxray-3class", "csv"]
    options = parse_dataset_options(["views=any", "csv:patient_column=subject", "encoding=latin-1"], both)
    assert options == {"covid-chestxray-3class": {"views": None, "encoding": "iso8859-1"},
                       "csv": {"patient_column": "subject", "encoding": "iso8859-1"}}
    assert parse_dataset_options(["views=PA,AP"], ["covid-chestxray"]) == {"covid-chestxray": {"views": ["PA", "AP"]}}
    with pytest.raises(CxrError, match=r"'folder' is not a dataset of this run \(csv\)"):
        parse_dataset_options(["folder:patient_column=x"], ["csv"])
    with pytest.raises(CxrError, match=r"write KEY=VALUE"):
        parse_dataset_options(["patient_column"], ["csv"])
    with pytest.raises(CxrError, match=r"encoding=klingon: dataset 'csv' wants a text encoding"):
        parse_dataset_options(["encoding=klingon"], ["csv"])


def test_a_dataset_option_given_twice_with_two_values_is_refused() -> None:
    with pytest.raises(CxrError, match=r"'label_column=a' and 'label_column=b' give csv's 'label_column' two values"):
        parse_dataset_options(["label_column=a", "label_column=b"], ["csv"])
    both = ["covid-chestxray-3class", "csv"]
    with pytest.raises(CxrError, match=r"'encoding=latin-1' and 'csv:encoding=utf-8' give csv's 'encoding' two"):
        parse_dataset_options(["encoding=latin-1", "csv:encoding=utf-8"], both)
    same = parse_dataset_options(["encoding=latin-1", "csv:encoding=iso-8859-1", "label_column=a", "label_column=a"],
                                 both)
    assert same["csv"] == {"encoding": "iso8859-1", "label_column": "a"}


def test_views_option_keeps_the_views_named(make_chestxray) -> None:
    root = make_chestxray()
    lateral_too = load_dataset("covid-chestxray-3class", root, views="PA,AP,AP Supine,AP semi erect,L")
    assert "images/p5-lateral.png" in set(lateral_too.frame["relpath"])
    assert len(lateral_too.frame) == len(load_dataset("covid-chestxray-3class", root).frame) + 1
    assert len(load_dataset("covid-chestxray-3class", root, views="any", modality="any").frame) == 26


def test_a_view_no_row_has_is_refused_listing_the_files_views(make_chestxray) -> None:
    """A misspelt view (AP Supin) would leave out every image of the view meant, logged only as filtered out."""
    root = make_chestxray()
    with pytest.raises(CxrError, match=rf"--dataset-option views: no row of {root / 'metadata.csv'} has the view\(s\) "
                                       r"\['AP Supin'\] \(its views, with their rows: PA \(22\), AP \(6\), "
                                       r"AP Supine \(1\), .*\); spell each as there"):
        load_dataset("covid-chestxray-3class", root, views="PA,AP Supin")
    assert len(load_dataset("covid-chestxray-3class", root, views="pa,ap supine").frame) > 0  # whatever the case


def test_a_latin1_csv_is_refused_naming_the_line_and_the_option(make_csv_dataset) -> None:
    csv_path = make_csv_dataset()
    lines = csv_path.read_text().splitlines()
    lines[3] = lines[3].replace("normal", "neumonía") if "normal" in lines[3] else lines[3].replace("covid", "neumonía")
    csv_path.write_bytes(("\n".join(lines) + "\n").encode("latin-1"))
    with pytest.raises(CxrError, match=r"labels.csv: line 4 is not utf-8 text \(byte 0xed\); pass the file's "
                                       r"encoding, e.g. --dataset-option encoding=latin-1"):
        load_dataset("csv", csv_path)
    index = load_dataset("csv", csv_path, encoding="latin-1", patient_column="patient")
    assert "neumonía" in index.classes and len(index.frame) == 24


def test_an_encoding_that_is_not_a_text_encoding_is_refused_naming_the_option() -> None:
    for codec in ("base64", "rot13"):
        with pytest.raises(CxrError, match=rf"encoding={codec}: dataset 'csv' wants a text encoding"):
            parse_dataset_options([f"encoding={codec}"], ["csv"])


def test_a_utf16_csv_read_as_utf8_is_told_to_pass_utf16(make_csv_dataset) -> None:
    csv_path = make_csv_dataset()
    csv_path.write_text(csv_path.read_text(), encoding="utf-16")
    with pytest.raises(CxrError, match=r"labels.csv: is not utf-8 text: it starts with a UTF-16 byte order mark; "
                                       r"pass --dataset-option encoding=utf-16"):
        load_dataset("csv", csv_path)
    assert len(load_dataset("csv", csv_path, encoding="utf-16").frame) == 24


def test_a_utf8_file_read_as_utf16_is_told_it_is_utf8(make_csv_dataset, make_chestxray) -> None:
    refused = r"is not utf-16 text but UTF-8; pass --dataset-option encoding=utf-8"
    with pytest.raises(CxrError, match=rf"labels.csv: {refused}"):
        load_dataset("csv", make_csv_dataset(), encoding="utf-16")
    with pytest.raises(CxrError, match=rf"metadata.csv: {refused}"):
        load_dataset("covid-chestxray", make_chestxray(), encoding="utf-16")


@pytest.mark.parametrize("decoded_as", ["utf-16-le", "utf-16-be"])
def test_a_utf8_file_that_decodes_as_utf16_is_told_it_is_utf8(make_csv_dataset, decoded_as: str) -> None:
    """An even number of UTF-8 bytes decodes as UTF-16 without error, into CJK-like text."""
    csv_path = make_csv_dataset()
    data = csv_path.read_bytes()
    csv_path.write_bytes(data if len(data) % 2 == 0 else data + b"\n")
    with pytest.raises(CxrError) as refused:
        load_dataset("csv", csv_path, encoding=decoded_as)
    assert str(refused.value).startswith(f"{csv_path}: read as {decoded_as} its header is nonsense (")
    assert str(refused.value).endswith("the file looks like UTF-8, which gives the columns ['path', 'label', "
                                       "'patient']: pass --dataset-option encoding=utf-8 (the default)")


def test_a_utf16_file_without_byte_order_mark_read_as_utf8_is_told_its_encoding(make_csv_dataset) -> None:
    csv_path = make_csv_dataset()
    csv_path.write_bytes(csv_path.read_text().encode("utf-16-le"))
    with pytest.raises(CxrError, match=r"labels.csv: read as utf-8 its header is nonsense \('p\\x00a\\x00t.*the file "
                                       r"looks like UTF-16 without a byte order mark, which gives the columns "
                                       r"\['path', 'label', 'patient'\]: pass --dataset-option encoding=utf-16-le$"):
        load_dataset("csv", csv_path)
    assert len(load_dataset("csv", csv_path, encoding="utf-16-le").frame) == 24


def test_blank_patient_ids_are_their_own_patients(make_csv_dataset, caplog: pytest.LogCaptureFixture) -> None:
    csv_path = make_csv_dataset()
    text = csv_path.read_text().replace(",patient-00\n", ",\n")  # patient-00's two images lose their id
    csv_path.write_text(text)
    with caplog.at_level(logging.WARNING, logger="cxrnets.data"):
        index = load_dataset("csv", csv_path, patient_column="patient")
    assert "2 row(s) with a blank 'patient': each of those images is its own patient" in caplog.text
    blank = index.frame[index.frame["relpath"].str.startswith("img/p00-")]
    assert len(blank) == 2 and blank["patient"].nunique() == 2
    assert index.frame["patient"].nunique() == 17


def test_sources_from_a_url_column_and_held_out(make_chestxray) -> None:
    root = make_chestxray()
    metadata = (root / "metadata.csv").read_text()
    metadata = metadata.replace("https://example.org/case/0,", "https://www.radiopaedia.org/cases/0,")
    metadata = metadata.replace("https://example.org/case/1,", "https://radiopaedia.org/cases/1,")
    metadata = metadata.replace("https://example.org/case/20,", ",")  # no url: an unknown source
    (root / "metadata.csv").write_text(metadata)
    index = load_dataset("covid-chestxray-3class", root)
    assert "heldout" not in index.frame
    sources = index.frame.set_index("relpath")["source"]
    assert sources["images/p1-a.jpg"] == sources["images/p1-b.png"] == "radiopaedia.org"
    assert sources["images/p14-a.png"] == UNKNOWN_SOURCE and sources["images/p2-a.jpeg"] == "example.org"
    held = load_dataset("covid-chestxray-3class", root, holdout_sources=["radiopaedia.org"])
    assert sorted(held.frame.loc[held.frame["heldout"], "relpath"]) == ["images/p1-a.jpg", "images/p1-b.png"]
    assert "held-out sources: radiopaedia.org 2" in held.summary()
    with pytest.raises(CxrError, match=r"holdout_sources: no image .* comes from \['nejm.org'\] .*"
                                       r"example.org \(21\), radiopaedia.org \(2\)"):
        load_dataset("covid-chestxray-3class", root, holdout_sources="nejm.org")
    with pytest.raises(CxrError, match=r"missing column\(s\) \['journal'\]"):
        load_dataset("covid-chestxray-3class", root, source_column="journal")


def test_csv_sources_need_a_column(make_csv_dataset) -> None:
    with pytest.raises(CxrError, match=r"holdout_sources needs a column of sources: pass --dataset-option "
                                       r"source_column=COLUMN"):
        load_dataset("csv", make_csv_dataset(), holdout_sources="a")
