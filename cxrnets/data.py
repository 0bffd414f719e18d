"""Chest X-ray datasets by name, each read from its real on-disk layout.

Every loader returns a `DatasetIndex`: one row per image (its path relative
to the data root, its patient, its labels) and the class vocabulary. Nothing
is decoded here; `cxrnets.cache` decodes each image once.

    index = load_dataset("covid-chestxray-3class", "../shared/data/covid-chestxray-dataset")
"""

from __future__ import annotations

import codecs
import io
import logging
import os
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np
import pandas as pd

from cxrnets.errors import CxrError
from cxrnets.images import (data_files, described_types, images_and_others, is_hidden, is_image_file,
                            types_not_read)

log = logging.getLogger(__name__)

SAMPLE_ROOT = Path(__file__).resolve().parent / "sample"  # the embedded sample of dataset 3

DATASET_NAMES = (
    "covid-radiography",
    "covid-radiography-3class",
    "covid-pneumonia-normal",
    "covid-chestxray",
    "covid-chestxray-3class",
    "folder",
    "csv",
)

MULTILABEL_DATASETS = ("covid-chestxray",)  # an image may hold several labels; the others give one class each
# Layouts of anyone's images: their file names and patient ids are the owner's, and two sets' can coincide. The
# other loaders each read one public dataset, whose names mean the same image and patient in any copy of it.
OWN_LAYOUTS = ("folder", "csv")
FIXED_LAYOUTS = ("covid-radiography", "covid-radiography-3class", "covid-pneumonia-normal")  # every class folder needed

RADIOGRAPHY_CLASSES = ("COVID", "Lung_Opacity", "Normal", "Viral Pneumonia")
# The paper's task, COVID-19 vs viral pneumonia vs normal (the database's first releases held only these):
# Lung_Opacity, non-COVID lung opacity, is left out.
RADIOGRAPHY_VIEWS = {"covid-radiography": RADIOGRAPHY_CLASSES,
                     "covid-radiography-3class": ("COVID", "Normal", "Viral Pneumonia")}
PNEUMONIA_NORMAL_CLASSES = ("covid", "normal", "pneumonia")

# Segmentation masks kept beside the X-rays (masks/, mask/, Lung_Masks/, "lung masks", mask_images/): is_mask_folder.
MASK_WORDS = frozenset({"mask", "masks"})
SHOWN_MASK_FOLDERS = 5  # the summary names this many mask folders left out, and counts the others

# covid-chestxray findings imply their parents, so that "COVID-19" also counts as
# viral pneumonia. Newer releases of the dataset spell the path out
# ("Pneumonia/Viral/COVID-19"); older ones name only the leaf.
FINDING_PARENTS = {
    "COVID-19": "Viral", "SARS": "Viral", "MERS-CoV": "Viral", "MERS": "Viral",
    "Influenza": "Viral", "Varicella": "Viral", "Herpes": "Viral",
    "Streptococcus": "Bacterial", "Klebsiella": "Bacterial", "Legionella": "Bacterial",
    "E.Coli": "Bacterial", "Chlamydophila": "Bacterial", "Staphylococcus": "Bacterial",
    "Mycoplasma Bacterial Pneumonia": "Bacterial", "Mycoplasma": "Bacterial",
    "Nocardia": "Bacterial",
    "Pneumocystis": "Fungal", "Aspergillosis": "Fungal", "Candida": "Fungal",
    "Viral": "Pneumonia", "Bacterial": "Pneumonia", "Fungal": "Pneumonia", "Lipoid": "Pneumonia",
    "Aspiration": "Pneumonia",
}
FINDING_ALIASES = {"SARS-CoV-2": "COVID-19"}  # other names of a finding, matched whatever the case
UNLABELLED_FINDINGS = frozenset({"todo", "unknown", ""})
NO_FINDING = "No Finding"
# Findings with no parent, spelled as here whatever their case. Tuberculosis is not a pneumonia (newer releases
# file it outside Pneumonia/): the 3-class view leaves it out.
TOP_FINDINGS = (NO_FINDING, "Tuberculosis")
FRONTAL_VIEWS = ("PA", "AP", "AP Supine", "AP semi erect", "AP Erect")  # matched whatever the case
THREE_CLASSES = ("COVID-19", "Other pneumonia", "No Finding")
UNKNOWN_SOURCE = "(unknown)"
# What a spreadsheet or pandas writes into an empty cell, matched whatever the case: read as no label.
MISSING_VALUES = frozenset({"na", "n/a", "#n/a", "nan", "<na>", "null"})


@dataclass
class DatasetIndex:
    """The images of one dataset: `frame` has columns relpath, patient, labels (a tuple of class names),
    and, where the loader knows each image's origin, source (and heldout: the image's source is held out
    as a test set of its own, see cxrnets.splits)."""

    name: str
    root: Path
    frame: pd.DataFrame
    classes: list[str]
    multilabel: bool = False
    skipped: dict[str, int] = field(default_factory=dict)
    patient_ids: bool = True  # False: the layout names no patients, each image is its own (`patient` is relpath)
    mask_folders: dict[str, int] = field(default_factory=dict)  # left out (is_mask_folder): relpath -> its images

    def paths(self) -> list[Path]:
        return [self.root / relpath for relpath in self.frame["relpath"]]

    def targets(self) -> np.ndarray:
        """Class indices (N,) for single-label data, multi-hot float32 (N, C) for multi-label."""
        position = {name: i for i, name in enumerate(self.classes)}
        if not self.multilabel:
            return np.array([position[labels[0]] for labels in self.frame["labels"]], dtype=np.int64)
        multi_hot = np.zeros((len(self.frame), len(self.classes)), dtype=np.float32)
        for row, labels in enumerate(self.frame["labels"]):
            multi_hot[row, [position[label] for label in labels]] = 1.0
        return multi_hot

    def stratum(self) -> pd.Series:
        """One string per image to stratify splits on (the label set for multi-label data)."""
        return self.frame["labels"].map(lambda labels: "|".join(sorted(labels)))

    def subset(self, keep: pd.Series | np.ndarray) -> "DatasetIndex":
        frame = self.frame[np.asarray(keep)].reset_index(drop=True)
        return DatasetIndex(self.name, self.root, frame, self.classes, self.multilabel, dict(self.skipped),
                            self.patient_ids, dict(self.mask_folders))

    def summary(self) -> str:
        if self.multilabel:
            counts = Counter(label for labels in self.frame["labels"] for label in labels)
        else:
            counts = Counter(labels[0] for labels in self.frame["labels"])
        per_class = ", ".join(f"{name} {counts.get(name, 0)}" for name in self.classes)
        skipped = ", ".join(f"{reason} {count}" for reason, count in self.skipped.items() if count)
        if self.patient_ids:
            text = f"{self.name}: {len(self.frame)} images of {self.frame['patient'].nunique()} patients ({per_class})"
        else:
            text = (f"{self.name}: {len(self.frame)} images ({per_class}); no patient ids: split by image "
                    "(near-identical copies kept together)")
        if "heldout" in self.frame and self.frame["heldout"].any():
            held = self.frame.loc[self.frame["heldout"], "source"].value_counts()
            text += f"; held-out sources: {', '.join(f'{name} {count}' for name, count in held.items())}"
        if self.mask_folders:
            folders = [f"{relpath}/" for relpath in self.mask_folders]
            more = f" and {len(folders) - SHOWN_MASK_FOLDERS} more" if len(folders) > SHOWN_MASK_FOLDERS else ""
            text += (f"; left out as masks: {sum(self.mask_folders.values())} images in "
                     f"{', '.join(folders[:SHOWN_MASK_FOLDERS])}{more}")
        return text + (f"; skipped: {skipped}" if skipped else "")


def load_dataset(name: str, root: str | Path, *, root_option: str = "--data-root", **options) -> DatasetIndex:
    """Index the dataset `name` found at `root`. Options are per loader (DATASET_OPTIONS); `root_option`
    names, in errors about the root itself, the command-line option that gave it."""
    loaders = {
        "covid-radiography": lambda root: _load_covid_radiography(root, "covid-radiography"),
        "covid-radiography-3class": lambda root: _load_covid_radiography(root, "covid-radiography-3class"),
        "covid-pneumonia-normal": _load_covid_pneumonia_normal,
        "covid-chestxray": lambda root, **kw: _load_covid_chestxray(root, three_class=False, **kw),
        "covid-chestxray-3class": lambda root, **kw: _load_covid_chestxray(root, three_class=True, **kw),
        "folder": _load_folder,
        "csv": _load_csv,
    }
    if name not in loaders:
        raise CxrError(f"unknown dataset {name!r}: choose one of {', '.join(DATASET_NAMES)}")
    options = check_dataset_options(name, options)
    root = Path(root).expanduser()
    if not root.exists():
        raise CxrError(f"data root {root} does not exist: pass {root_option} pointing at the {name} dataset")
    if name == "csv" and root.is_dir():
        raise CxrError(f"{root}: the csv dataset takes the CSV file itself as {root_option}")
    if name != "csv" and not root.is_dir():
        raise CxrError(f"{root}: is a file, not a folder; pass the {name} dataset's folder as {root_option}")
    found = locate_dataset(name, root, options.get("metadata", "metadata.csv"))
    if found not in (None, root):  # an archive unzipped as it comes: Kaggle's and GitHub's wrap the dataset in a folder
        raise CxrError(f"{root}: the {name} dataset lies in {found}: pass {root_option} {found}")
    index = loaders[name](root, **options)
    if len(index.frame) == 0:
        raise CxrError(f"{root}: no usable images found for dataset {name!r} ({index.summary()})")
    log.info(index.summary())
    return index


LAYOUT_DEPTH = 3  # how many folders below a data root locate_dataset looks


def has_layout(name: str, folder: Path, metadata: str = "metadata.csv") -> bool:
    """Whether `folder` has the top of dataset `name`'s layout (its class folders, or its metadata file);
    always True for the `folder` and `csv` datasets, which have no fixed layout."""
    if name in RADIOGRAPHY_VIEWS:
        return {c.lower() for c in RADIOGRAPHY_VIEWS[name]} <= set(_subdirectories(folder))
    if name == "covid-pneumonia-normal":
        return set(PNEUMONIA_NORMAL_CLASSES) <= set(_subdirectories(folder))
    if name in ("covid-chestxray", "covid-chestxray-3class"):
        return (folder / metadata).is_file()
    return True


def locate_dataset(name: str, folder: str | Path, metadata: str = "metadata.csv") -> Path | None:
    """The shallowest folder at most LAYOUT_DEPTH levels below `folder` (itself included) that has dataset
    `name`'s layout, or None; hidden folders are not searched."""
    level = [Path(folder)]
    for _ in range(LAYOUT_DEPTH + 1):
        below = []
        for candidate in level:
            try:
                if has_layout(name, candidate, metadata):
                    return candidate
                below += _subdirectories(candidate).values()
            except (OSError, CxrError):  # unreadable, or sub-folders differing only in case (the loader says so)
                continue
        level = below
    return None


# ---------------------------------------------------------------- loader options

def _text(value: Any) -> str:
    text = str(value).strip()
    if not text:
        raise ValueError("an empty value")
    return text


def _names(value: Any) -> list[str]:
    names = [part.strip() for part in value.split(",")] if isinstance(value, str) else [str(v).strip() for v in value]
    if not all(names):
        raise ValueError("a comma-separated list of names")
    return names


def _any_or(convert: Callable[[Any], Any]) -> Callable[[Any], Any]:
    return lambda value: None if value is None or str(value).strip().lower() == "any" else convert(value)


def _encoding(value: Any) -> str:
    try:
        io.TextIOWrapper(io.BytesIO(), encoding=str(value).strip())  # as open() does: refuses base64, rot13
        return codecs.lookup(str(value).strip()).name
    except LookupError:
        raise ValueError("a text encoding Python knows, such as utf-8, latin-1 or cp1252") from None


def _mapping(value: Any) -> dict:
    if not isinstance(value, dict):
        raise ValueError("a mapping (from Python only)")
    return value


_CSV_OPTIONS = {
    "encoding": (_encoding, "the CSV's text encoding (default utf-8; latin-1 occurs in real metadata files)"),
    "source_column": (_text, "the column naming each image's origin (a hospital, a URL: its host is the source)"),
    "holdout_sources": (_names, "sources whose images form a held-out test set of their own (needs a source column)"),
}
# What each loader takes, with a converter from the command line's text (or study.json's value) and help.
DATASET_OPTIONS: dict[str, dict[str, tuple[Callable[[Any], Any], str]]] = {
    "covid-radiography": {},
    "covid-radiography-3class": {},
    "covid-pneumonia-normal": {},
    "folder": {},
    "csv": {
        "path_column": (_text, "the column of image paths, relative to the CSV's folder (default path)"),
        "label_column": (_text, "the column of class names (default label)"),
        "patient_column": (_text, "the column of patient ids; a patient's images never straddle two splits "
                                  "(default: none, each image its own patient)"),
        **_CSV_OPTIONS,
    },
    **{name: {
        "metadata": (_text, "the metadata file beside images/ (default metadata.csv)"),
        "modality": (_any_or(_text), "the modality kept (default X-ray; any keeps all)"),
        "views": (_any_or(_names), f"the views kept, comma-separated (default {','.join(FRONTAL_VIEWS)}; any keeps all)"),
        "hierarchy": (_mapping, "finding -> parent finding (Python only)"),
        **_CSV_OPTIONS,
    } for name in ("covid-chestxray", "covid-chestxray-3class")},
}


def check_dataset_options(dataset: str, options: dict[str, Any]) -> dict[str, Any]:
    """The options converted to what the loader takes; CxrError naming the option and the flag otherwise."""
    known = DATASET_OPTIONS.get(dataset, {})
    checked = {}
    for key, value in options.items():
        if key not in known:
            offered = ", ".join(k for k in known if k != "hierarchy") or "none"
            raise CxrError(f"dataset {dataset!r} has no option {key!r} (--dataset-option {key}=...); "
                           f"its options: {offered}")
        convert, _ = known[key]
        try:
            checked[key] = convert(value)
        except ValueError as error:
            raise CxrError(f"--dataset-option {key}={value}: dataset {dataset!r} wants {error}") from None
    return checked


def parse_dataset_options(items: list[str] | None, targets: list[str] | dict[str, str]
                          ) -> dict[str, dict[str, Any]]:
    """`--dataset-option [TARGET:]KEY=VALUE` flags -> {target: {key: value}}, checked against each loader.

    `targets`: the datasets of the run, or a mapping of names (study.analyze's external sets) to the
    dataset each is read as. Without a TARGET: prefix an option applies to the only target, or to
    every target whose loader takes it. A key given twice for one target must have the same value.
    """
    loaders = dict(targets) if isinstance(targets, dict) else {name: name for name in targets}
    names = ", ".join(loaders) or "none"
    options: dict[str, dict[str, Any]] = {}
    given_by: dict[tuple[str, str], str] = {}  # (target, key) -> the flag that set it
    for item in items or []:
        target, colon, assignment = item.partition(":") if ":" in item.partition("=")[0] else ("", "", item)
        key, equals, value = assignment.partition("=")
        if not equals or not key.strip():
            raise CxrError(f"--dataset-option {item!r}: write KEY=VALUE, or TARGET:KEY=VALUE with several datasets")
        key = key.strip()
        if colon:
            if target not in loaders:
                raise CxrError(f"--dataset-option {item!r}: {target!r} is not a dataset of this run ({names})")
            chosen = [target]
        else:
            chosen = [t for t, d in loaders.items() if key in DATASET_OPTIONS.get(d, {})] if len(loaders) > 1 \
                else list(loaders)
            if not chosen:
                raise CxrError(f"--dataset-option {item!r}: no dataset of this run ({names}) takes {key!r}")
        for name in chosen:
            checked = check_dataset_options(loaders[name], {key: value})[key]
            earlier = given_by.setdefault((name, key), item)
            if earlier != item and options[name][key] != checked:
                raise CxrError(f"--dataset-option {earlier!r} and {item!r} give {name}'s {key!r} two values: keep "
                               "the one meant")
            options.setdefault(name, {})[key] = checked
    return options


def dataset_options_help() -> str:
    """Every loader's options, for the --dataset-option help."""
    parts = []
    for dataset, known in DATASET_OPTIONS.items():
        names = [k for k in known if k != "hierarchy"]
        if names:
            parts.append(f"{dataset}: {', '.join(names)}")
    return "; ".join(parts)


# ---------------------------------------------------------------- the index of images

def _image_frame(rows: list[dict[str, Any]], root: Path) -> pd.DataFrame:
    """A loader's `rows` as its frame (relpath, patient, labels); CxrError naming the first image whose path below
    `root` is not UTF-8, which a table of text cannot hold."""
    for row in rows:
        try:
            row["relpath"].encode()
        except UnicodeEncodeError:
            raise CxrError(f"{os.fsencode(root / row['relpath'])!r}: the name is not UTF-8 text (a zip made on Windows "
                           f"names files in its code page); rename it by hand, or every such name under {root} with "
                           f"convmv -f latin1 -t utf8 -r --notest {root}") from None
    return pd.DataFrame(rows, columns=["relpath", "patient", "labels"])


# ---------------------------------------------------------------- class-folder layouts

def _subdirectories(root: Path) -> dict[str, Path]:
    """Sub-folders of root keyed by lower-cased name, but hidden ones and a zip's __MACOSX (is_hidden); CxrError
    where two names differ only in letter case (Normal/ and normal/), which would be read as one class."""
    folders: dict[str, Path] = {}
    for path in sorted(root.iterdir()):
        if path.is_dir() and not is_hidden(path.name):
            first = folders.setdefault(path.name.lower(), path)
            if first is not path:
                raise CxrError(f"{first} and {path}: two folders whose names differ only in letter case, read as "
                               "one; merge them into one")
    return folders


def is_mask_folder(name: str) -> bool:
    """Whether a folder of this name holds masks: one of its words (split at spaces, punctuation and
    lower-to-upper case changes) is mask or masks, in any letter case. "Unmasked" is no mask folder."""
    words = re.findall(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+", name)
    return not MASK_WORDS.isdisjoint(word.lower() for word in words)


def leaving_out(dataset: str, class_folder: Path, otherwise: str) -> str:
    """How to go on without the class whose folder is `class_folder`: `otherwise`, but in FIXED_LAYOUTS, which
    refuse a missing class folder, by setting the folder aside and reading the others as a folder dataset."""
    if dataset not in FIXED_LAYOUTS:
        return otherwise
    left_out = [name for name in RADIOGRAPHY_CLASSES if name not in RADIOGRAPHY_VIEWS.get(dataset, RADIOGRAPHY_CLASSES)]
    present = [folder for name in left_out if (folder := _subdirectories(class_folder.parent).get(name.lower()))]
    also = "".join(f" (and {folder}, which {dataset} leaves out)" for folder in present)
    return (f"move {class_folder} out of {class_folder.parent}{also} and pass --dataset folder, which reads the class "
            f"folders there are ({dataset} needs every one of its own)")


def _mask_folder_holding(path: Path, class_folder: Path) -> Path | None:
    """The mask folder (is_mask_folder) below `class_folder` that holds `path`; None where none does. The class
    folder's own name, and its parents', do not count."""
    below = path.relative_to(class_folder).parts[:-1]
    return next((class_folder.joinpath(*below[:i + 1]) for i, part in enumerate(below) if is_mask_folder(part)), None)


def _from_class_folders(name: str, root: Path, class_folders: dict[str, Path], skip_masks: bool = False
                        ) -> DatasetIndex:
    """One class per folder: the image files under each (but in its sub-folders that are mask folders, where
    `skip_masks`: is_mask_folder, counted in `mask_folders`). Other files are counted in `skipped` by their type,
    as images of a type not read (DICOM, say) or as files that are not images (.csv, .txt), and links to nothing as
    broken links; is_hidden's are ignored."""
    class_files, skipped, mask_folders = {}, Counter(), Counter()
    for class_name, folder in class_folders.items():
        files, broken_links = data_files(folder)
        if skip_masks:
            in_masks = {path: _mask_folder_holding(path, folder) for path in [*files, *broken_links]}
            mask_folders.update(in_masks[path].relative_to(root).as_posix() for path in files
                                if in_masks[path] and is_image_file(path))
            files = [path for path in files if not in_masks[path]]
            broken_links = [path for path in broken_links if not in_masks[path]]
        images = [path for path in files if is_image_file(path)]
        images_not_read, not_images = images_and_others(types_not_read(files))
        if not images:
            kinds = [f"files of a type not read: {described_types(images_not_read)}"] if images_not_read else []
            kinds += [f"files that are not images: {described_types(not_images)}"] if not_images else []
            only = f" (only {'; '.join(kinds)})" if kinds else ""
            broken = f" ({len(broken_links)} link(s) to nothing, e.g. {broken_links[0]})" if broken_links else ""
            class_folder = root / folder.relative_to(root).parts[0]  # covid-radiography's holds images/
            raise CxrError(f"{root}: class folder for {class_name!r} holds no images"
                           f"{only}{broken}; add images, or "
                           f"{leaving_out(name, class_folder, 'remove the folder')}")
        if broken_links:
            skipped["broken link"] += len(broken_links)
        class_files[class_name] = images
        skipped.update({f"unsupported file type {suffix}": count for suffix, count in images_not_read.items()})
        skipped.update({f"not an image {suffix}": count for suffix, count in not_images.items()})
    rows = [
        {"relpath": path.relative_to(root).as_posix(), "patient": None, "labels": (class_name,)}
        for class_name, files in class_files.items()
        for path in files
    ]
    frame = _image_frame(rows, root)
    # No patient ids in these layouts: each image is its own group when splitting.
    frame["patient"] = frame["relpath"]
    return DatasetIndex(name, root, frame, list(class_files), skipped=dict(sorted(skipped.items())), patient_ids=False,
                        mask_folders=dict(sorted(mask_folders.items())))


def _find_class_folders(root: Path, expected: tuple[str, ...], dataset: str) -> dict[str, Path]:
    present = _subdirectories(root)
    missing = [c for c in expected if c.lower() not in present]
    if missing:
        layouts = _layouts_of(present)
        if layouts:
            others = "".join(f" (or --dataset {name})" for name in layouts[1:])
            hint = f"; those are the class folders of {layouts[0]}: pass --dataset {layouts[0]}{others}"
        elif len(missing) < len(expected):  # a subset of the dataset, which the folder layout reads
            hint = "; to study the classes there are, pass --dataset folder"
        else:
            hint = ""
        raise CxrError(
            f"{root}: not a {dataset} dataset: class folders {missing} are missing "
            f"(expected {list(expected)}, found {sorted(p.name for p in present.values())}){hint}"
        )
    return {c: present[c.lower()] for c in expected}


def _layouts_of(present: dict[str, Path]) -> list[str]:
    """The FIXED_LAYOUTS whose class folders are all among `present` (_subdirectories), each holding images/ for
    covid-radiography's views."""
    layouts = []
    for name in FIXED_LAYOUTS:
        classes = RADIOGRAPHY_VIEWS.get(name, PNEUMONIA_NORMAL_CLASSES)
        if not all(c.lower() in present for c in classes):
            continue
        if name in RADIOGRAPHY_VIEWS and not all("images" in _subdirectories(present[c.lower()]) for c in classes):
            continue
        layouts.append(name)
    return layouts


def _load_covid_radiography(root: Path, name: str) -> DatasetIndex:
    """COVID-19 Radiography Database v4+: <Class>/images/*.png; <Class>/masks/ are never samples. The classes are
    the view `name`'s (RADIOGRAPHY_VIEWS); the images of a class it leaves out are counted as skipped, and so are
    the images of its classes outside their images/ folder, but in mask folders (counted in `mask_folders`)."""
    classes = RADIOGRAPHY_VIEWS[name]
    folders = _find_class_folders(root, classes, name)
    image_folders = {}
    for class_name, folder in folders.items():
        images = _subdirectories(folder).get("images")
        if images is None:
            raise CxrError(f"{folder}: has no images/ folder (covid-radiography v4+ layout is <Class>/images/); "
                           f"for a release with the images directly in its class folders, pass --dataset folder "
                           f"--data-root {root}")
        image_folders[class_name] = images
    index = _from_class_folders(name, root, image_folders, skip_masks=True)
    mask_folders, outside = Counter(index.mask_folders), Counter()
    for class_name, folder in folders.items():
        for path in _images_beside(image_folders[class_name]):
            mask_folder = _mask_folder_holding(path, folder)
            if mask_folder:
                mask_folders[mask_folder.relative_to(root).as_posix()] += 1
            else:
                outside[path.parent.relative_to(root).as_posix()] += 1
    index.mask_folders = dict(sorted(mask_folders.items()))
    index.skipped.update({f"image outside images/ ({folder}/)": count for folder, count in sorted(outside.items())})
    present = _subdirectories(root)
    for class_name in RADIOGRAPHY_CLASSES:
        if class_name in classes or class_name.lower() not in present:
            continue
        images = _subdirectories(present[class_name.lower()]).get("images")
        left_out = sum(map(is_image_file, data_files(images)[0])) if images else 0
        if left_out:
            index.skipped[f"{class_name} (not {'/'.join(classes)})"] = left_out
    return index


def _images_beside(images_folder: Path) -> list[Path]:
    """The image files in the class folder of `images_folder` (covid-radiography's <Class>/images/) that lie
    outside `images_folder`, in it or in its other sub-folders."""
    found = []
    for path in sorted(images_folder.parent.iterdir()):
        if is_hidden(path.name) or path == images_folder:
            continue
        found += data_files(path)[0] if path.is_dir() else [path] if path.is_file() else []
    return [path for path in found if is_image_file(path)]


def _load_covid_pneumonia_normal(root: Path) -> DatasetIndex:
    """COVID-19, Pneumonia, Normal Chest X-ray PA dataset: covid/, normal/, pneumonia/ holding images; mask
    folders below (is_mask_folder) are left out, counted in `mask_folders`."""
    folders = _find_class_folders(root, PNEUMONIA_NORMAL_CLASSES, "covid-pneumonia-normal")
    return _from_class_folders("covid-pneumonia-normal", root, folders, skip_masks=True)


def _load_folder(root: Path) -> DatasetIndex:
    """Any class-per-folder tree: each sub-folder of root is a class, but one named mask or masks; mask folders
    below (is_mask_folder) are skipped. Those left out are counted in the index's `mask_folders`."""
    subdirectories = _subdirectories(root)
    top_masks = {key: folder for key, folder in subdirectories.items() if key in MASK_WORDS}
    folders = {key: folder for key, folder in subdirectories.items() if key not in top_masks}
    if len(folders) < 2:
        message = f"{root}: a folder dataset needs at least two class sub-folders, found {len(folders)}"
        if len(folders) == 1:
            (only,) = folders.values()
            below = [key for key, folder in _subdirectories(only).items() if not is_mask_folder(folder.name)]
            if len(below) >= 2:
                message += f" ({only.name}/, which holds {len(below)}): if those are the classes, pass --data-root {only}"
        raise CxrError(message)
    _refuse_one_level_too_high(root, list(folders.values()))
    index = _from_class_folders("folder", root, {folder.name: folder for folder in folders.values()}, skip_masks=True)
    for folder in top_masks.values():
        index.mask_folders[folder.name] = sum(map(is_image_file, data_files(folder)[0]))
    index.mask_folders = dict(sorted(index.mask_folders.items()))
    return index


SPLIT_FOLDER_NAMES = frozenset({"train", "training", "test", "testing", "val", "valid", "validation"})


def _refuse_one_level_too_high(root: Path, class_folders: list[Path]) -> None:
    """Where no class folder holds an image itself and each holds the same two or more folders, the classes may be
    one level down: CxrError where the top folders are a split's (train/, test/ and val/ each holding NORMAL/ and
    PNEUMONIA/, Kermany's layout), a warning otherwise (classes may share batch folders). Class folders that each
    hold one same folder, <class>/images/, are a dataset."""
    below = [{key: path.name for key, path in _subdirectories(folder).items() if not is_mask_folder(path.name)}
             for folder in class_folders]
    if len(below[0]) < 2 or any(names.keys() != below[0].keys() for names in below):
        return
    if any(is_image_file(path) for folder in class_folders for path in folder.iterdir()
           if path.is_file() and not is_hidden(path.name)):
        return
    tops = ", ".join(folder.name for folder in class_folders)
    seen = f"{root}: {tops} hold no image, each the same folders ({', '.join(below[0].values())})"
    if {folder.name.lower() for folder in class_folders} <= SPLIT_FOLDER_NAMES:
        raise CxrError(f"{seen}: those are the classes, one level down; pass one of {tops} (e.g. "
                       f"{class_folders[0]}) as the data root")
    log.warning("%s: the classes are %s; if they are %s instead, pass one of %s as the data root", seen, tops,
                ", ".join(below[0].values()), tops)


# ---------------------------------------------------------------- CSV layouts

# Longest first: a UTF-32 LE mark begins with the UTF-16 LE one.
BYTE_ORDER_MARKS = ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"), (codecs.BOM_UTF8, "utf-8-sig"),
                    (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))


def _marked_encoding(data: bytes) -> str | None:
    """The encoding a byte order mark at the start of `data` names; None where there is none."""
    return next((name for mark, name in BYTE_ORDER_MARKS if data.startswith(mark)), None)


def _not_text(path: Path, encoding: str) -> str:
    """Why `path` does not decode with `encoding`, and which encoding to pass instead."""
    data = path.read_bytes()
    marked = _marked_encoding(data)
    if marked and _decodes(data, marked):
        return (f"{path}: is not {encoding} text: it starts with a {marked.removesuffix('-sig').upper()} byte order "
                f"mark; pass --dataset-option encoding={marked}")
    if _decodes(data, "utf-8"):
        return f"{path}: is not {encoding} text but UTF-8; pass --dataset-option encoding=utf-8 (the default)"
    try:
        data.decode(encoding)  # pandas decodes in chunks: find the byte's place in the whole file
        place = f"{path}: is not {encoding} text"
    except UnicodeDecodeError as error:
        line = data[:error.start].count(b"\n") + 1
        place = f"{path}: line {line} is not {encoding} text (byte {data[error.start]:#04x})"
    return f"{place}; pass the file's encoding, e.g. --dataset-option encoding=latin-1"


def _misread(path: Path, encoding: str, columns: list[str]) -> str | None:
    """Why the header `columns` of `path`, decoded with `encoding`, look misread: the file decodes as its byte
    order mark says (or as UTF-16 where a NUL byte begins it, else as UTF-8) into another header; UTF-8 read as
    UTF-16 turns into CJK-like text. None where that gives the same header or does not decode."""
    data = path.read_bytes()
    marked = _marked_encoding(data)
    if marked:
        likely, what = marked, f"starts with a {marked.removesuffix('-sig').upper()} byte order mark"
    elif b"\0" in data[:2]:
        likely, what = "utf-16-le" if data[1:2] == b"\0" else "utf-16-be", "looks like UTF-16 without a byte order mark"
    else:
        likely, what = "utf-8", "looks like UTF-8"
    if not _decodes(data, likely):
        return None
    try:
        header = list(pd.read_csv(io.BytesIO(data), dtype=str, nrows=0, encoding=likely).columns)
    except (pd.errors.ParserError, pd.errors.EmptyDataError):
        return None
    if header == columns:
        return None
    garbled = ",".join(columns)
    garbled = garbled if len(garbled) <= 30 else garbled[:30] + "..."
    return (f"{path}: read as {encoding} its header is nonsense ({garbled!r}); the file {what}, which gives the "
            f"columns {header}: pass --dataset-option encoding={likely}{' (the default)' if likely == 'utf-8' else ''}")


def _decodes(data: bytes, encoding: str) -> bool:
    try:
        data.decode(encoding)
    except UnicodeError:
        return False
    return True


CSV_COLUMNS_HINT = ("Name the right columns with --dataset-option (e.g. path_column=..., label_column=..., "
                    "patient_column=...).")


def _read_csv(path: Path, required: list[str], encoding: str = "utf-8", hint: str = CSV_COLUMNS_HINT
              ) -> pd.DataFrame:
    """`path` read as text columns; CxrError if it lacks a `required` column, ending with `hint` (what to do)."""
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False, encoding=encoding)
    except UnicodeError as error:  # UTF-16 without a byte order mark raises a plain UnicodeError
        raise CxrError(_not_text(path, encoding)) from error
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as error:
        raise CxrError(f"{path}: cannot read CSV ({error}); check that it is a CSV file with a header row") from error
    missing = [column for column in required if column not in table.columns]
    if missing:
        misread = _misread(path, encoding, list(table.columns))
        if misread:
            raise CxrError(misread)
        raise CxrError(f"{path}: missing column(s) {missing}; the file has {list(table.columns)}. {hint}")
    return table


def source_of(value: str) -> str:
    """An image's origin from a metadata value: a URL's host (without www.), else the value itself."""
    value = value.strip()
    host = urlparse(value).netloc.lower().removeprefix("www.") if "//" in value else ""
    return host or value or UNKNOWN_SOURCE


def _mark_sources(frame: pd.DataFrame, sources: list[str], path: Path, source_column: str | None,
                  holdout_sources: list[str] | None) -> pd.DataFrame:
    """Add the source column (and heldout, if sources are held out) to a loader's frame."""
    if source_column is None:
        if holdout_sources:
            raise CxrError(f"{path}: holdout_sources needs a column of sources: pass --dataset-option "
                           "source_column=COLUMN")
        return frame
    frame["source"] = sources
    if holdout_sources:
        counts = frame["source"].value_counts()
        unknown = [s for s in holdout_sources if s not in counts.index]
        if unknown:
            listed = ", ".join(f"{name} ({count})" for name, count in counts.head(15).items())
            raise CxrError(f"--dataset-option holdout_sources: no image of {path} comes from {unknown} (sources from "
                           f"column {source_column!r}, with their images: {listed}{', ...' if len(counts) > 15 else ''})")
        frame["heldout"] = frame["source"].isin(holdout_sources)
        if frame["heldout"].all():
            raise CxrError(f"--dataset-option holdout_sources: {holdout_sources} hold every image of {path}; "
                           "keep some sources to train on")
    return frame


def _one_row_per_image(rows: list[dict[str, Any]], path: Path, multilabel: bool,
                       skipped: Counter) -> list[dict[str, Any]]:
    """`rows` (relpath, patient, labels, and row: the CSV row it came from) with each image once, at its first
    row; every later row of it counts as a "duplicate row" in `skipped`. Multi-label rows merge their labels;
    single-label rows of one image must agree (CxrError naming both rows). Patients that list the same image
    become one patient, under the id that comes first in `rows`, as the split would have grouped them by the
    identical file."""
    first: dict[str, dict[str, Any]] = {}
    same_patient: dict[str, str] = {}  # a patient id -> an earlier one's that shares an image with it
    order: dict[str, int] = {}
    for position, row in enumerate(rows):
        order.setdefault(row["patient"], position)

    def patient_of(patient: str) -> str:
        while patient in same_patient:
            patient = same_patient[patient]
        return patient

    examples = []
    for row in rows:
        kept = first.setdefault(row["relpath"], row)
        if kept is row:
            continue
        skipped["duplicate row"] += 1
        if multilabel:
            kept["labels"] = tuple(sorted(set(kept["labels"]) | set(row["labels"])))
        elif kept["labels"] != row["labels"]:
            raise CxrError(f"{path}: rows {kept['row']} and {row['row']} both list {row['relpath']}, labelled "
                           f"{kept['labels'][0]!r} and {row['labels'][0]!r}; delete the row whose label is wrong")
        earlier, later = sorted((patient_of(kept["patient"]), patient_of(row["patient"])), key=order.get)
        if earlier != later:
            same_patient[later] = earlier
        examples.append(f"{row['relpath']} (rows {kept['row']} and {row['row']})")
    if examples:
        log.warning("%s: %d duplicate row(s) left out, each listing an image an earlier row lists%s; the patients of "
                    "such rows count as one patient: %s%s", path, len(examples),
                    " (their findings are merged into it)" if multilabel else "", "; ".join(examples[:5]),
                    f"; and {len(examples) - 5} more" if len(examples) > 5 else "")
    unique = list(first.values())
    for row in unique:
        row["patient"] = patient_of(row["patient"])
    return unique


def _refuse_labels_differing_in_case(rows: list[dict[str, Any]], path: Path, label_column: str) -> None:
    """CxrError naming two spellings and a row of each where labels of `rows` differ only in letter case (Normal and
    normal), which would be two classes."""
    first: dict[str, dict[str, Any]] = {}  # the first row of each spelling, by lower-cased label
    for row in rows:
        label = row["labels"][0]
        other = first.setdefault(label.lower(), row)
        if other["labels"][0] != label:
            raise CxrError(f"{path}: {label_column!r} spells one class two ways, {other['labels'][0]!r} (row "
                           f"{other['row']}) and {label!r} (row {row['row']}), which would be two classes; spell "
                           "them alike")


def _load_csv(root: Path, path_column: str = "path", label_column: str = "label",
              patient_column: str | None = None, encoding: str = "utf-8", source_column: str | None = None,
              holdout_sources: list[str] | None = None) -> DatasetIndex:
    """Any CSV of image path and label (and optional patient and source) columns. `root` is the CSV file;
    relative image paths are resolved against its folder. Rows whose image is absent are skipped, and so
    are the later rows of an image listed twice; a blank patient makes the image its own patient."""
    required = [path_column, label_column] + [c for c in (patient_column, source_column) if c]
    table = _read_csv(root, required, encoding)
    base = root.parent
    rows, skipped, blank_patients = [], Counter(), 0
    for line, record in enumerate(table.to_dict("records"), start=2):
        label = record[label_column].strip()
        if not label or label.lower() in MISSING_VALUES:
            skipped["blank label"] += 1
            log.warning("%s row %d: %s, skipped", root, line,
                        f"{label_column!r} is {label!r}, a missing value" if label else f"blank {label_column!r}")
            continue
        image = (base / record[path_column]).resolve()
        if not image.is_file():
            skipped["image file absent"] += 1
            log.warning("%s row %d: image %s not found, skipped", root, line, image)
            continue
        patient = record[patient_column].strip() if patient_column else ""
        blank_patients += bool(patient_column and not patient)
        relpath = image.relative_to(base.resolve()).as_posix() if image.is_relative_to(base.resolve()) else str(image)
        rows.append({"relpath": relpath, "patient": patient or relpath, "labels": (label,), "row": line,
                     "source": source_of(record[source_column]) if source_column else None})
    if blank_patients:
        log.warning("%s: %d row(s) with a blank %r: each of those images is its own patient", root, blank_patients,
                    patient_column)
    _refuse_labels_differing_in_case(rows, root, label_column)
    rows = _one_row_per_image(rows, root, multilabel=False, skipped=skipped)
    frame = _image_frame(rows, base.resolve())
    frame = _mark_sources(frame, [row["source"] for row in rows], root, source_column, holdout_sources)
    classes = sorted({labels[0] for labels in frame["labels"]})
    return DatasetIndex("csv", base.resolve(), frame, classes, skipped=dict(skipped),
                        patient_ids=patient_column is not None)


def parse_finding(finding: str, hierarchy: dict[str, str] | None = None) -> tuple[str, ...]:
    """'COVID-19, ARDS' -> ('ARDS', 'COVID-19', 'Pneumonia', 'Viral') with the label hierarchy applied.

    Splits on ',' and '/', normalises whitespace, and matches known names (and FINDING_ALIASES) case-insensitively.
    """
    hierarchy = FINDING_PARENTS if hierarchy is None else hierarchy
    # spellings of the known findings, whatever hierarchy is applied
    canonical = {name.lower(): name for pair in FINDING_PARENTS.items() for name in pair}
    canonical.update({name.lower(): name for pair in hierarchy.items() for name in pair})
    canonical.update({name.lower(): name for name in TOP_FINDINGS})
    canonical.update({alias.lower(): name for alias, name in FINDING_ALIASES.items()})
    labels = set()
    for part in re.split(r"[,/]", finding):
        label = " ".join(part.split())
        if not label:
            continue
        label = canonical.get(label.lower(), label)
        while label:
            labels.add(label)
            label = hierarchy.get(label)
    return tuple(sorted(labels))


def three_class_label(labels: tuple[str, ...]) -> str | None:
    """COVID-19 / Other pneumonia / No Finding, or None for findings that are none of these."""
    if "COVID-19" in labels:
        return "COVID-19"
    if "Pneumonia" in labels:
        return "Other pneumonia"
    if labels == (NO_FINDING,):
        return NO_FINDING
    return None


def _contradicting_findings(rows: list[dict[str, Any]]) -> dict[str, str]:
    """The images (relpath) that `rows` find both nothing and a disease in, on one row or on two, each with its rows'
    findings ("'No Finding' on row 12, 'COVID-19' on row 30"; "'No Finding, COVID-19' on row 12")."""
    by_image: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_image.setdefault(row["relpath"], []).append(row)
    return {relpath: ", ".join(f"{row['finding']!r} on row {row['row']}" for row in listed)
            for relpath, listed in by_image.items()
            if any(NO_FINDING in row["labels"] for row in listed)
            and any(set(row["labels"]) - {NO_FINDING} for row in listed)}


def _refuse_views_no_row_has(views: tuple[str, ...], column: pd.Series, csv_path: Path) -> None:
    """CxrError where one of the `views` asked for (the views option) is on no row of `column` (the file's views),
    matched whatever the case: a misspelt view would leave out all its images."""
    counts = column.str.strip().value_counts()
    present = {view.lower() for view in counts.index}
    unknown = [view for view in views if view.lower() not in present]
    if unknown:
        listed = ", ".join(f"{view or '(blank)'} ({count})" for view, count in counts.head(15).items())
        raise CxrError(f"--dataset-option views: no row of {csv_path} has the view(s) {unknown} (its views, with their "
                       f"rows: {listed}{', ...' if len(counts) > 15 else ''}); spell each as there (whatever the case)")


def _load_covid_chestxray(root: Path, three_class: bool, metadata: str = "metadata.csv",
                          modality: str | None = "X-ray", views: tuple[str, ...] | None = FRONTAL_VIEWS,
                          hierarchy: dict[str, str] | None = None, encoding: str = "utf-8",
                          source_column: str | None = "url", holdout_sources: list[str] | None = None
                          ) -> DatasetIndex:
    """ieee8023 covid-chestxray-dataset: metadata.csv (finding, patientid, view, modality, folder,
    filename, and the url each image came from: its source) beside the image folders. Skipped rows
    are counted by reason and logged; an image listed on several rows is kept once, with the findings of
    all of them (then mapped to one of three classes, for the 3-class view), but left out where its rows find
    both nothing and a disease in it (on one row, or on two)."""
    csv_path = root / metadata
    if not csv_path.is_file():
        raise CxrError(f"{root}: no {metadata} (covid-chestxray needs metadata.csv beside images/)")
    table = _read_csv(csv_path, ["patientid", "finding", "filename"], encoding,
                      hint="It is not the covid-chestxray dataset's metadata file (github.com/ieee8023/"
                           "covid-chestxray-dataset), whose columns are read by these names: pass that dataset's "
                           "folder, or rename the column(s).")
    if source_column not in table.columns:
        if source_column != "url":
            raise CxrError(f"{csv_path}: missing column(s) [{source_column!r}] (--dataset-option source_column="
                           f"{source_column}); the file has {list(table.columns)}: name one of them")
        source_column = None  # an older metadata.csv without url: no sources
    wanted_views = {v.lower() for v in views} if views else None
    if wanted_views is not None and "view" not in table.columns:
        default = "default " if tuple(views) == FRONTAL_VIEWS else ""
        raise CxrError(f"{csv_path}: no 'view' column, which the views option ({default}{','.join(views)}) reads: "
                       "pass --dataset-option views=any to keep every view, or add the column")
    if wanted_views is not None and tuple(views) != FRONTAL_VIEWS:
        _refuse_views_no_row_has(views, table["view"], csv_path)
    rows, skipped, blank_patients = [], Counter(), 0
    for line, record in enumerate(table.to_dict("records"), start=2):
        finding = record["finding"].strip()
        if finding.lower() in UNLABELLED_FINDINGS:
            skipped[f"finding {finding or 'blank'}"] += 1
            continue
        if modality and record.get("modality", modality).strip().lower() != modality.lower():
            skipped[f"modality not {modality}"] += 1
            continue
        if wanted_views is not None and record.get("view", "").strip().lower() not in wanted_views:
            skipped["view not frontal" if tuple(views) == FRONTAL_VIEWS else "view filtered out"] += 1
            continue
        relpath = f"{record.get('folder', '').strip() or 'images'}/{record['filename'].strip()}"
        if not (root / relpath).is_file():
            skipped["image file absent"] += 1
            log.debug("%s: %s listed but absent, skipped", csv_path, relpath)
            continue
        patient = record["patientid"].strip()
        blank_patients += not patient
        rows.append({"relpath": relpath, "patient": patient or relpath, "finding": finding,
                     "labels": parse_finding(finding, hierarchy), "row": line,
                     "source": source_of(record[source_column]) if source_column else None})
    if blank_patients:
        log.warning("%s: %d row(s) with a blank 'patientid': each of those images is its own patient", csv_path,
                    blank_patients)
    contradicting = _contradicting_findings(rows)
    rows = _one_row_per_image(rows, csv_path, multilabel=True, skipped=skipped)  # the findings of every row
    if contradicting:
        rows = [row for row in rows if row["relpath"] not in contradicting]
        skipped["findings contradict (No Finding and a disease)"] += len(contradicting)
        listed = [f"{relpath} ({findings})" for relpath, findings in contradicting.items()]
        log.warning("%s: %d image(s) listed as No Finding and with a disease (on one row, or on two), left out "
                    "(neither label can be trusted): %s%s; fix the wrong finding to keep them", csv_path,
                    len(listed), "; ".join(listed[:5]), f"; and {len(listed) - 5} more" if len(listed) > 5 else "")
    if three_class:
        three_class_rows = []
        for row in rows:
            label = three_class_label(row["labels"])
            if label is None:
                skipped["not COVID-19/pneumonia/No Finding"] += 1
                continue
            three_class_rows.append({**row, "labels": (label,)})
        rows = three_class_rows
    frame = _image_frame(rows, root)
    frame = _mark_sources(frame, [row["source"] for row in rows], csv_path, source_column, holdout_sources)
    if three_class:
        present = {labels[0] for labels in frame["labels"]}
        classes = [c for c in THREE_CLASSES if c in present]
        name = "covid-chestxray-3class"
    else:
        classes = sorted({label for labels in frame["labels"] for label in labels})
        name = "covid-chestxray"
    return DatasetIndex(name, root, frame, classes, multilabel=name in MULTILABEL_DATASETS, skipped=dict(skipped))
