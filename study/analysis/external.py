"""The selected models on images from elsewhere: other datasets, and the study's own held-out sources.

Classifiers of chest X-rays trained on a mix of sources learn the source (text markers, laterality
tags, processing, hospital) and score well on a held-out split of the same sources, then fail on a
new hospital (DeGrave et al., Nature Machine Intelligence 2021). So each cell's model chosen on
validation is also evaluated, once, on every image of each external set:

- `--external NAME=DATASET:PATH`: any dataset cxrnets reads, with its loader options, decoded once
  into the same cache at the study's image size; its labels reconciled with the study's classes
  through a label map. Images whose label has no counterpart are counted and left out; a study
  class the set lacks is reported absent, never scored. In a set read by the loader of one of the
  study's datasets, the images the study's split holds (the same patient or file name; in a folder or
  CSV of anyone's images, the same file) are the study's own; so, in any set, are the images
  near-identical to one of the split's (cxrnets.fingerprints: the same X-ray re-encoded, resized or
  squashed, as public datasets copy each other's). They are counted and left out, and a set of
  nothing else, or of no other image of a class the study has, is refused.
- the split's `heldout` part, where the study held out whole sources (cxrnets.splits).

An external set rarely has every class, so it is scored on what exists with partial classes:
accuracy, each present class's recall, and each present class's one-vs-rest ROC AUC; the summaries
average over the classes present in both the external set and the internal split. Intervals come
from the same patient bootstrap as the internal figures, the external set's patients resampled
independently of the internal split's, and the change is the difference of the two; accuracy and a
class's recall, proportions of images, get the exact binomial interval over their patients instead
(study.analysis.uncertainty.proportion_interval), and their change the interval combining the two
sides' (MOVER). A resampled figure has no interval on a side where a class it covers has one patient
(a resample holds that patient or no image of the class), nor an ROC AUC where the images not of a class
it covers are one patient's (without them the class's AUC is undefined), nor where every resample gives
it the same value (no spread: a resample keeps each class's patients, and its patients are alike in the
figure, as one-image patients all right or all wrong are), nor has its change then. A set without patient ids
(a folder of images) is resampled by image.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from cxrnets.cache import CachedImages, build_cache
from cxrnets.data import DATASET_NAMES, OWN_LAYOUTS, DatasetIndex, load_dataset, parse_dataset_options
from cxrnets.errors import CxrError
from cxrnets.fingerprints import cache_fingerprints, near_identical_to
from cxrnets.metrics import class_indicators, predictions
from cxrnets.predict import model_from_checkpoint, predict
from study.analysis.evaluation import Evaluation, StudyData
from study.analysis.selection import Analysis
from study.analysis.uncertainty import (BASELINE, class_patients, group_strata, independent_difference_interval,
                                        names_patients, partial_class_samples, percentile_interval,
                                        proportion_interval, resample_weights, resampling_groups, rest_patients,
                                        same_in_every_resample)

log = logging.getLogger("study.analyze")

HELDOUT_SET = "held-out sources"
# The summaries of an external comparison; per-class rows use "recall" and "roc_auc".
EXTERNAL_METRICS = ("accuracy", "recall_present", "roc_auc_present")
EXTERNAL_TITLES = {"accuracy": "Accuracy", "recall_present": "Mean recall of the classes present",
                   "roc_auc_present": "Mean one-vs-rest ROC AUC of the classes present",
                   "recall": "Recall", "roc_auc": "One-vs-rest ROC AUC"}
ALL_PRESENT = "(classes present)"
# Why a figure is the same in every resample: a resample redraws the patients of each class, and they are alike in it.
NO_SPREAD_CAUSES = {
    "recall": "within each class they are alike (their images all right, or all wrong)",
    "roc_auc": "within each class they are alike (their images all ranked above, all below or all level with the "
               "other classes', as a constant predictor's are)",
}


@dataclass
class ExternalSpec:
    """One `--external NAME=DATASET:PATH` and its `--dataset-option NAME:KEY=VALUE`s."""

    name: str
    dataset: str
    path: str
    options: dict = field(default_factory=dict)


@dataclass
class ExternalIndex:
    """The images of one external set the study can score (check_externals): its own images left out."""

    index: DatasetIndex
    in_study_split: str = ""  # the images left out because the study's split holds them, in words
    near_identical: str = ""  # the images left out because the split holds near-identical ones, in words
    near_relpaths: set[str] = field(default_factory=set)  # those images


@dataclass
class ExternalSet:
    """The images of one external set that the study's classes can score, for one study dataset."""

    name: str
    description: str
    dataset: str                  # the study dataset whose models it evaluates
    classes: list[str]            # the study's classes (the models' outputs)
    images: CachedImages          # decoded images (a cache's); `rows` of them belong to the set
    rows: np.ndarray
    y_true: np.ndarray            # class indices into `classes`
    groups: np.ndarray            # each image's patient (uncertainty.resampling_groups): the bootstrap's unit
    image_size: int               # the size its images are decoded at: that of the models it evaluates
    left_out: dict[str, int] = field(default_factory=dict)  # external label without a counterpart -> images
    skipped: dict[str, int] = field(default_factory=dict)   # the loader's skips (undecodable, absent, ...)
    in_study_split: str = ""      # the images left out because the study's split holds them, in words
    near_identical: str = ""      # the images left out because the split holds near-identical ones, in words
    patient_ids: bool = True      # False: the set names no patients, each image is its own (resampled by image)

    @property
    def present(self) -> np.ndarray:
        return np.bincount(self.y_true, minlength=len(self.classes)) > 0

    def summary(self) -> str:
        counts = np.bincount(self.y_true, minlength=len(self.classes))
        units = len(np.unique(self.groups))
        size = (f"{len(self.y_true)} images of {units} patients" if self.patient_ids
                else f"{len(self.y_true)} images, no patient ids" + (
                    f": resampled as {units} once near-identical X-rays are joined" if units < len(self.y_true)
                    else ""))
        text = (f"{self.name}: {size} ("
                + ", ".join(f"{c} {n}" for c, n in zip(self.classes, counts) if n) + ")")
        absent = [c for c, n in zip(self.classes, counts) if not n]
        if absent:
            text += f"; absent: {', '.join(absent)}"
        if self.in_study_split:
            text += f"; left out: {self.in_study_split}"
        if self.near_identical:
            text += f"; left out: {self.near_identical}"
        if self.left_out:
            text += "; left out (no counterpart among the study's classes): " + ", ".join(
                f"{label} {count}" for label, count in sorted(self.left_out.items()))
        skipped = {reason: count for reason, count in self.skipped.items() if count}
        if skipped:
            text += "; skipped: " + ", ".join(f"{reason} {count}" for reason, count in skipped.items())
        return text


# ------------------------------------------------------------------ command-line input

def parse_externals(items: list[str] | None, option_items: list[str] | None) -> list[ExternalSpec]:
    """`--external NAME=DATASET:PATH` flags, with their `--dataset-option [NAME:]KEY=VALUE`s."""
    specs: dict[str, ExternalSpec] = {}
    for item in items or []:
        name, equals, rest = item.partition("=")
        dataset, colon, path = rest.partition(":")
        name, dataset = name.strip(), dataset.strip()
        if not (equals and colon and name and dataset and path):
            raise CxrError(f"--external {item!r}: write NAME=DATASET:PATH, e.g. hospital-b=csv:/data/b/labels.csv")
        if dataset not in DATASET_NAMES:
            raise CxrError(f"--external {item!r}: unknown dataset {dataset!r}; choose one of {', '.join(DATASET_NAMES)}")
        if name in specs or name == HELDOUT_SET:
            raise CxrError(f"--external {item!r}: the name {name!r} is taken; give each external set its own name")
        specs[name] = ExternalSpec(name, dataset, str(Path(path).expanduser()))
    if option_items and not specs:
        raise CxrError("--dataset-option in the analysis applies to --external sets, and none is given (the study's "
                       "own datasets keep the options saved in study.json)")
    for name, options in parse_dataset_options(option_items, {n: s.dataset for n, s in specs.items()}).items():
        specs[name].options.update(options)
    return list(specs.values())


def parse_label_map(items: list[str] | None) -> dict[str, str]:
    """`--label-map` flags: YAML files of `external label: study class`, or inline `EXTERNAL=STUDY`. An
    external label mapped to two classes (in one file, or by two flags) is refused."""
    mapping: dict[str, str] = {}
    given_by: dict[str, str] = {}  # external label -> where it was mapped
    for item in items or []:
        path = Path(item).expanduser()
        if path.suffix.lower() in (".yaml", ".yml", ".json") or path.is_file():
            pairs = read_label_map_file(path, item)
        else:
            external, equals, study = item.partition("=")
            if not (equals and external.strip() and study.strip()):
                raise CxrError(f"--label-map {item!r}: write EXTERNAL=STUDY (e.g. \"No finding=No Finding\") or "
                               "name a YAML file")
            pairs = [(external.strip(), study.strip(), f"--label-map {item!r}")]
        for external, study, where in pairs:
            if external in mapping and mapping[external] != study:
                raise CxrError(f"{given_by[external]} maps {external!r} to {mapping[external]!r} and {where} to "
                               f"{study!r}: keep the one meant")
            mapping[external], given_by[external] = study, where
    return mapping


def read_label_map_file(path: Path, item: str) -> list[tuple[str, str, str]]:
    """A --label-map YAML file's (external label, study class, where) lines, every key and value as text."""
    import yaml

    try:
        text = path.read_bytes().decode("utf-8-sig")
        # BaseLoader: every key and value as written (YAML 1.1 reads labels such as no, yes, on and off as booleans)
        document = yaml.compose(text, Loader=yaml.BaseLoader)
    except OSError as error:
        raise CxrError(f"--label-map {item}: cannot read it ({error.strerror}); pass a YAML file of "
                       "'external label: study class' lines, or EXTERNAL=STUDY") from error
    except UnicodeDecodeError as error:
        raise CxrError(f"--label-map {item}: not UTF-8 (byte {error.object[error.start]:#04x}); save it as UTF-8") \
            from error
    except yaml.YAMLError as error:
        raise CxrError(f"--label-map {item}: not YAML ({str(error).splitlines()[0]})") from error
    if not isinstance(document, yaml.MappingNode) or not all(
            isinstance(key, yaml.ScalarNode) and isinstance(value, yaml.ScalarNode) for key, value in document.value):
        raise CxrError(f"--label-map {item}: holds no mapping; write one 'external label: study class' per line")
    return [(key.value.strip(), value.value.strip(), f"--label-map {item} (line {key.start_mark.line + 1})")
            for key, value in document.value]


def check_label_map(label_map: dict[str, str], classes: list[str]) -> None:
    wrong = {external: study for external, study in label_map.items() if study not in classes}
    if wrong:
        external, study = next(iter(wrong.items()))
        raise CxrError(f"--label-map maps {external!r} to {study!r}, which is no class of the study "
                       f"({', '.join(classes)})")


def check_externals(data: StudyData, specs: list[ExternalSpec], label_map: dict[str, str]
                    ) -> dict[str, ExternalIndex]:
    """Refuse, before anything is evaluated, external sets and label maps the study cannot score: a path
    that does not exist, a multi-label set, a set with no class in common (its copies of the study's X-rays
    aside) or with no image but the study's own, a map onto a class the study lacks, a multi-label study. Decodes
    each set and the study's datasets into the cache at the study's image size (and, to find near-identical images,
    at cxrnets.fingerprints.FINGERPRINT_SIZE where that is another); returns each external set's index by name,
    without the images the study's split holds and with those near-identical to them named."""
    indexes: dict[str, ExternalIndex] = {}
    if not specs and not label_map:
        return indexes
    settings = data.study.settings
    for dataset, root in data.data_roots.items():
        try:
            study_index = load_dataset(dataset, root, **settings.dataset_options.get(dataset, {}))
        except CxrError as error:
            raise CxrError(f"cannot read the study's dataset {dataset} to check the external sets: {error}") from error
        if study_index.multilabel:
            raise CxrError(f"--external: the study's dataset {dataset} is multi-label; external evaluation scores "
                           "single-label studies")
        classes = list(study_index.classes)
        check_label_map(label_map, classes)
        study_images = None  # the split's relpaths and fingerprints, once per dataset (split_fingerprints)
        for spec in specs:
            if spec.name not in indexes:
                try:
                    indexes[spec.name] = ExternalIndex(load_dataset(
                        spec.dataset, spec.path, root_option="the PATH of --external NAME=DATASET:PATH",
                        **spec.options))
                except CxrError as error:
                    raise CxrError(f"--external {spec.name}: {error}") from error
                if indexes[spec.name].index.multilabel:
                    raise CxrError(f"--external {spec.name}: {spec.dataset} is multi-label; external evaluation "
                                   "scores single-label sets (use covid-chestxray-3class, folder or csv)")
            if spec.dataset == dataset:
                indexes[spec.name] = without_study_images(spec, indexes[spec.name], study_index, data.split(dataset))
            check_common_class(spec, indexes[spec.name], classes, label_map)  # before decoding anything
            if study_images is None:
                study_images = split_fingerprints(spec, study_index, data.split(dataset), settings.image_size,
                                                  data.cache_dir)
            indexes[spec.name] = without_near_identical(spec, indexes[spec.name], study_index.name, study_images,
                                                        settings.image_size, data.cache_dir)
            check_common_class(spec, indexes[spec.name], classes, label_map)  # without the copies just found
    return indexes


def without_study_images(spec: ExternalSpec, external: ExternalIndex, study_index: DatasetIndex,
                         split: pd.DataFrame) -> ExternalIndex:
    """`external`, read by the loader of the study's dataset `study_index`, without the images that the study's
    `split` of that dataset holds (any part): those of its patients or file names, or where the loader reads
    a folder or CSV of anyone's images, whose ids and names may coincide with another set's, the same files.
    The images it names as near-identical to another study dataset's stay named. CxrError if no image is left."""
    frame = external.index.frame
    if spec.dataset in OWN_LAYOUTS:
        study_files = {str(Path(study_index.root).resolve() / relpath) for relpath in split["relpath"]}
        root = Path(external.index.root).resolve()
        held = frame["relpath"].map(lambda relpath: str(root / relpath) in study_files).to_numpy(dtype=bool)
        matched = "the same image files"
    else:
        held = (frame["relpath"].isin(split["relpath"]) | frame["patient"].astype(str).isin(split["patient"])
                ).to_numpy(dtype=bool)
        matched = "the same patient ids or file names"
    if not held.any():
        return external
    first = frame[held].iloc[0]
    known = (f"{int(held.sum())} images of {frame.loc[held, 'patient'].nunique()} patients the study's split of "
             f"{study_index.name} already holds ({matched}, e.g. {first['relpath']} of patient {first['patient']})")
    if held.all():
        raise CxrError(f"--external {spec.name}: all {known}: the study trained, chose or tested its models on "
                       "them (or held them out as its own sources), so nothing from elsewhere is left to evaluate; "
                       "name a set of other patients")
    if (held | frame["relpath"].isin(external.near_relpaths).to_numpy()).all():
        raise CxrError(f"--external {spec.name}: {known}, and {external.near_identical}: nothing from elsewhere is "
                       "left to evaluate; name a set of other images")
    log.warning("--external %s: %s were left out: they are the study's own images, not images from elsewhere",
                spec.name, known)
    return replace(external, index=external.index.subset(~held), in_study_split=known)


def split_fingerprints(spec: ExternalSpec, study_index: DatasetIndex, split: pd.DataFrame, image_size: int,
                       cache_dir: str | None) -> tuple[pd.Series, np.ndarray]:
    """The relpaths and fingerprints (cxrnets.fingerprints) of the images of the study's `split` of `study_index`
    (any part), decoded at `image_size`; a CxrError in decoding is named as `spec`'s, the set being checked."""
    try:
        study_cache = build_cache(study_index, image_size, cache_dir)
        in_split = np.flatnonzero(study_cache.index.frame["relpath"].isin(split["relpath"]).to_numpy())
        prints = cache_fingerprints(study_cache, in_split)
    except CxrError as error:
        raise CxrError(f"--external {spec.name}: {error}") from error
    return study_cache.index.frame["relpath"].iloc[in_split], prints


def without_near_identical(spec: ExternalSpec, external: ExternalIndex, study_name: str,
                           study_images: tuple[pd.Series, np.ndarray], image_size: int,
                           cache_dir: str | None) -> ExternalIndex:
    """`external` with its images near-identical to an image of the study's split of dataset `study_name` (any
    part; `study_images`: its relpaths and fingerprints, split_fingerprints) named, to be left out (both decoded
    at `image_size`). CxrError if no other image is left."""
    try:
        cache = build_cache(external.index, image_size, cache_dir)
        prints = cache_fingerprints(cache)
    except CxrError as error:
        raise CxrError(f"--external {spec.name}: {error}") from error
    study_relpaths, study_prints = study_images
    nearest = near_identical_to(prints, study_prints)
    near = (nearest >= 0) & ~cache.index.frame["relpath"].isin(external.near_relpaths).to_numpy()
    if not near.any():
        return external
    frame = cache.index.frame
    first = int(np.flatnonzero(near)[0])
    twin = study_relpaths.iloc[nearest[first]]
    known = (f"{int(near.sum())} images of {frame.loc[near, 'patient'].nunique()} patients near-identical to images "
             f"the study's split of {study_name} holds (the same X-ray re-encoded, resized or squashed, e.g. "
             f"{frame['relpath'].iloc[first]} and the study's {twin})")
    relpaths = external.near_relpaths | set(frame.loc[near, "relpath"])
    if frame["relpath"].isin(relpaths).all():
        raise CxrError(f"--external {spec.name}: all {known}: the study trained, chose or tested its models on "
                       "them, so nothing from elsewhere is left to evaluate; name a set of other images")
    log.warning("--external %s: %s were left out: they are the study's own images, not images from elsewhere",
                spec.name, known)
    return ExternalIndex(external.index, external.in_study_split,
                         "; ".join(filter(None, (external.near_identical, known))), relpaths)


def check_common_class(spec: ExternalSpec, external: ExternalIndex, classes: list[str],
                       label_map: dict[str, str]) -> None:
    """Refuse `external` unless an image of it other than the copies of the study's X-rays it names
    (near_relpaths, left out) has a label that is, or `label_map` maps to, one of the study's `classes`."""
    frame = external.index.frame
    labels = [labels[0] for labels in frame["labels"]]
    shared = np.array([label_map.get(label, label) in classes for label in labels], dtype=bool)
    if not shared.any():
        raise no_common_class(spec, labels, classes)
    copies = frame["relpath"].isin(external.near_relpaths).to_numpy()
    if (shared & ~copies).any():
        return
    copied = sorted({label for label, common in zip(labels, shared) if common})
    others = sorted({label for label, common in zip(labels, shared) if not common})
    raise CxrError(f"--external {spec.name}: its {', '.join(copied)} images are all copies of the study's X-rays "
                   f"({external.near_identical}), left out, and its other classes, {others}, are none of the "
                   f"study's {classes}: nothing the study's models can be scored on is left; name a set of other "
                   "images, or reconcile its classes with --label-map EXTERNAL=STUDY (or a YAML file)")


def no_common_class(spec: ExternalSpec, labels, classes: list[str]) -> CxrError:
    return CxrError(f"--external {spec.name}: no class in common with the study: the set's classes are "
                    f"{sorted(set(labels))}, the study's {classes}; reconcile them with --label-map EXTERNAL=STUDY "
                    "(or a YAML file)")


# ------------------------------------------------------------------ the sets

def load_external(spec: ExternalSpec, indexed: ExternalIndex, dataset: str, classes: list[str],
                  label_map: dict[str, str], image_size: int, cache_dir: str | None) -> ExternalSet:
    """Decode (once, into the cache) and label one external set (`indexed`: its images, check_externals)
    for the models of `dataset`."""
    index = indexed.index
    cache = build_cache(index, image_size, cache_dir)
    index = cache.index  # undecodable images left out, counted in index.skipped
    labels = [labels[0] for labels in index.frame["labels"]]
    position = {name: i for i, name in enumerate(classes)}
    mapped = [label_map.get(label, label) for label in labels]
    near = index.frame["relpath"].isin(indexed.near_relpaths).to_numpy()
    keep = np.array([name in position for name in mapped], dtype=bool) & ~near
    if not keep.any():  # possible here only when the images in common could not be decoded
        raise no_common_class(spec, labels, classes)
    rows = np.flatnonzero(keep)
    groups = resampling_groups(index.frame["patient"], pd.Series(cache.sha1), rows, cache_fingerprints(cache, rows))
    external = ExternalSet(
        spec.name, f"{spec.dataset} at {spec.path}", dataset, list(classes), cache.images, rows,
        np.array([position[mapped[i]] for i in rows], dtype=np.int64), groups, image_size,
        dict(Counter(label for label, kept, copy in zip(labels, keep, near) if not (kept or copy))),
        dict(index.skipped), indexed.in_study_split, indexed.near_identical,
        names_patients(index.frame["patient"].iloc[rows], index.frame["relpath"].iloc[rows]))
    log.info("external %s", external.summary())
    return external


def heldout_set(data: StudyData, config, classes: list[str]) -> ExternalSet | None:
    """The study split's held-out sources of `config`'s dataset, as an external set (None if it has none)."""
    from cxrnets.splits import HELDOUT

    prepared = data.prepare(config)
    rows = prepared.rows(HELDOUT)
    if len(rows) == 0:
        return None
    sources = sorted(set(prepared.index.frame["source"].to_numpy()[rows])) if "source" in prepared.index.frame else []
    groups = data.resampling_groups(config, HELDOUT)
    held = prepared.split.iloc[rows]
    return ExternalSet(HELDOUT_SET, f"{config.dataset}'s held-out sources: {', '.join(sources)}", config.dataset,
                       list(classes), prepared.images, rows, prepared.targets[rows], groups, config.image_size,
                       patient_ids=names_patients(held["patient"], held["relpath"]))


# ------------------------------------------------------------------ the comparison

def _figures(y_true: np.ndarray, scores: np.ndarray, groups: np.ndarray, classes_used: np.ndarray,
             resamples: int, seed: int) -> tuple[dict, dict | None]:
    """Point figures and, with resamples, their bootstrap samples (weights of ones give the points)."""
    point = partial_class_samples(y_true, scores, classes_used, np.ones((1, len(y_true))))
    if not resamples:
        return point, None
    weights = resample_weights(groups, group_strata(groups, y_true, False), resamples, seed,
                               class_indicators(y_true, scores.shape[1], False))
    return point, partial_class_samples(y_true, scores, classes_used, weights)


def _column(figures: dict[str, np.ndarray], metric: str, k: int | None) -> np.ndarray:
    """(resamples,) values of a summary metric, or of class k's column of a per-class one."""
    return figures[metric] if k is None else figures[metric][:, k]


def _interval(samples: np.ndarray | None) -> tuple[float, float]:
    return percentile_interval(samples) if samples is not None else (float("nan"), float("nan"))


def compare(cell: dict, internal: Evaluation, internal_scores: np.ndarray, external: ExternalSet,
            scores: np.ndarray, resamples: int, seed: int, set_seed: int) -> list[dict]:
    """Rows of the external comparison for one cell (dataset, model, trial_id) and one set: each summary
    metric, then each class. `internal_scores`: the cell's scores on the images of `internal`. A side whose
    every resample gives a figure the same value has no interval of it (`internal_no_spread`,
    `external_no_spread`), nor has the change; `no_spread` says why."""
    counts_in = np.bincount(internal.y_true, minlength=len(external.classes))
    counts_out = np.bincount(external.y_true, minlength=len(external.classes))
    both = (counts_in > 0) & (counts_out > 0)
    alone_in = class_patients(internal.y_true, internal.groups, len(external.classes), False) == 1
    alone_out = class_patients(external.y_true, external.groups, len(external.classes), False) == 1
    lone_rest_in = rest_patients(internal.y_true, internal.groups, len(external.classes), False) == 1
    lone_rest_out = rest_patients(external.y_true, external.groups, len(external.classes), False) == 1
    inside, inside_samples = _figures(internal.y_true, internal_scores, internal.groups, both, resamples, seed)
    outside, outside_samples = _figures(external.y_true, scores, external.groups, both, resamples, set_seed)
    right_in = predictions(internal_scores, False) == internal.y_true
    right_out = predictions(scores, False) == external.y_true
    rows = []
    base = {**cell, "set": external.name, "external_patients": len(np.unique(external.groups))}
    wanted = [(metric, ALL_PRESENT, None) for metric in EXTERNAL_METRICS]
    wanted += [(metric, name, k) for metric in ("recall", "roc_auc") for k, name in enumerate(external.classes)]
    for metric, class_name, k in wanted:
        value_in, value_out = float(_column(inside, metric, k)[0]), float(_column(outside, metric, k)[0])
        samples_in = _column(inside_samples, metric, k) if inside_samples is not None else None
        samples_out = _column(outside_samples, metric, k) if outside_samples is not None else None
        interval_in, interval_out = _interval(samples_in), _interval(samples_out)
        change = _interval(samples_out - samples_in if samples_in is not None else None)
        flat_in = flat_out = False
        no_spread = ""
        if metric in ("accuracy", "recall") and resamples:
            # A proportion of images: its exact interval over the patients on each side, as in the per-class
            # tables (the resampled one is too narrow over few patients, and has no width where each patient has
            # one image and each class is all right or all wrong), and the change combining the two.
            members_in = np.full(len(internal.y_true), True) if k is None else internal.y_true == k
            members_out = np.full(len(external.y_true), True) if k is None else external.y_true == k
            interval_in = proportion_interval(right_in[members_in], internal.groups[members_in])
            interval_out = proportion_interval(right_out[members_out], external.groups[members_out])
            change = independent_difference_interval(value_out, interval_out, value_in, interval_in)
        elif resamples:  # a resampled figure of one class, or averaged over the classes present
            covered = both if k is None else np.arange(len(external.classes)) == k
            lacking_in, lacking_out = ((alone_in | lone_rest_in, alone_out | lone_rest_out)
                                       if metric.startswith("roc_auc") else (alone_in, alone_out))
            undefined = (float("nan"), float("nan"))
            if (lacking_in & covered).any():
                interval_in, change = undefined, undefined
            if (lacking_out & covered).any():
                interval_out, change = undefined, undefined
            flat_in = not np.isnan(interval_in[0]) and same_in_every_resample(samples_in)
            flat_out = not np.isnan(interval_out[0]) and same_in_every_resample(samples_out)
            if flat_in:
                interval_in, change = undefined, undefined
            if flat_out:
                interval_out, change = undefined, undefined
            if flat_in or flat_out:
                where = " and ".join([f"the internal {internal.split} split"] * flat_in + [external.name] * flat_out)
                no_spread = (f"the same in every resample of {where}: a resample redraws the patients of each class, "
                             f"and {NO_SPREAD_CAUSES[metric.removesuffix('_present')]}, so no draw moves it")
        note = ""
        if k is not None and not counts_out[k]:
            note = f"absent from {external.name}"
        elif k is not None and not counts_in[k]:
            note = f"absent from the internal {internal.split} split"
        rows.append({**base, "metric": metric, "class": class_name,
                     "internal_images": len(internal.y_true) if k is None else int(counts_in[k]),
                     "external_images": len(external.y_true) if k is None else int(counts_out[k]),
                     "internal": value_in, "internal_lower": interval_in[0], "internal_upper": interval_in[1],
                     "external": value_out, "external_lower": interval_out[0], "external_upper": interval_out[1],
                     "change": value_out - value_in, "change_lower": change[0], "change_upper": change[1],
                     "note": note, "internal_no_spread": flat_in, "external_no_spread": flat_out,
                     "no_spread": no_spread})
    return rows


def evaluate_elsewhere(analysis: Analysis, data: StudyData, specs: list[ExternalSpec],
                       indexes: dict[str, ExternalIndex], label_map: dict[str, str], resamples: int,
                       device: str = "auto") -> pd.DataFrame:
    """Each cell's best model (rank 1) on each external set (`indexes`: check_externals's) and on its
    dataset's held-out sources: the comparison table (one row per cell, set, metric and class); the
    sets go to analysis.external_sets, decoded once per dataset and image size (a space may search it)."""
    seed = analysis.study.settings.seed
    rows: list[dict] = []
    baselines: dict[tuple[str, str], list[dict]] = {}
    loaded: dict[tuple[str, str, int], ExternalSet] = {}
    best = [chosen for chosen in analysis.selected if chosen.rank == 1]
    for chosen in best:
        if chosen.evaluation.multilabel:
            if specs or analysis.study.settings.dataset_options.get(chosen.dataset, {}).get("holdout_sources"):
                analysis.notes.append(f"{chosen.dataset}: evaluation elsewhere (--external, held-out sources) scores "
                                      f"single-label studies; {chosen.dataset} is multi-label, not evaluated there")
            continue
        classes = chosen.evaluation.classes
        check_label_map(label_map, classes)
        checkpoint = chosen.evaluation.checkpoint  # the weights scored on the split, not the file read again
        config = data.train_config(checkpoint)
        sets = []
        held = heldout_set(data, config, classes)
        if held is not None:
            sets.append(loaded.setdefault((held.name, chosen.dataset, config.image_size), held))
        for spec in specs:
            key = (spec.name, chosen.dataset, config.image_size)
            if key not in loaded:
                loaded[key] = load_external(spec, indexes[spec.name], chosen.dataset, classes, label_map,
                                            config.image_size, data.cache_dir)
            sets.append(loaded[key])
        if not sets:
            continue
        cell = {"dataset": chosen.dataset, "model": chosen.model, "trial_id": chosen.candidate.trial_id}
        internal = chosen.evaluation
        model, target = model_from_checkpoint(checkpoint, device)
        for number, external in enumerate(sets, 1):
            scores = predict(model, target, external.images, external.rows)
            log.info("%s / %s on %s: accuracy %.3f", chosen.dataset, chosen.model, external.name,
                     float((scores.argmax(axis=1) == external.y_true).mean()))
            rows += compare(cell, internal, internal.scores, external, scores, resamples, seed, seed + 1000 * number)
            if (chosen.dataset, external.name) not in baselines:
                # The training split's majority class, always: what accuracy owes to each set's class mix.
                constant = np.tile(internal.baseline_scores[0], (len(external.y_true), 1))
                baselines[(chosen.dataset, external.name)] = compare(
                    {"dataset": chosen.dataset, "model": BASELINE, "trial_id": ""}, internal,
                    internal.baseline_scores, external, constant, resamples, seed, seed + 1000 * number)
    analysis.external_sets = list(loaded.values())
    return pd.DataFrame(rows + [row for rows in baselines.values() for row in rows])
