"""Evaluating a trial's best weights, once, on the study's own split of its dataset.

StudyData reads each dataset's split file, checks it against the data and
the study's seed (refusing if either changed), and prepares each dataset
once, with its images' fingerprints (cxrnets.fingerprints): the bootstrap's
groups join near-identical images, and a split made before such images were
kept on one side as now is said to hold copies on two sides. evaluate_checkpoint
loads one weights file, checks that it was trained with the trial's config,
and scores it, with the majority-class baseline on the same images.
"""

from __future__ import annotations

import concurrent.futures
import json
import logging
import math
import numbers
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import sklearn

from cxrnets.errors import CxrError, SplitMismatch
from cxrnets.fingerprints import (FINGERPRINT_SIZE, NEAR_IDENTICAL_BITS, cache_fingerprints, near_identical_to,
                                  own_size_fingerprint_size)
from cxrnets.splits import HELDOUT, LARGE_DATASET, make_split
from cxrnets.training import load_checkpoint
from study import storage
from study.analysis.reading import Study
from study.analysis.uncertainty import resampling_groups
from study.checkpoints import BestWeights
from study.settings import check_split_digest, read_split, split_uri

log = logging.getLogger("study.analyze")

PARALLEL_DOWNLOADS = 4  # weight files fetched at once from object storage
NODE_KEYS = ("data_root", "dataset_options")  # set by the study for each node, not by a trial's config
SHOWN_FILES = 3  # a message about many files names this many
# Each part of a split whose figures a near-identical copy elsewhere makes optimistic, its name in words, and the
# parts the models trained or were chosen on before being scored on it.
SCORED_AFTER = (("test", "test", ("train", "val")), ("val", "val", ("train",)),
                (HELDOUT, "held-out", ("train", "val")))


class AnalysisRefused(CxrError):
    """An error that stops the whole analysis (the data or the split changed, the data is absent),
    not just one trial."""


def earlier_split_rule(settings) -> str:
    """How the study's splits (`settings`: its StudySettings) were made, in words, where that could leave
    near-identical X-rays on two sides as a split made now would not; "" for splits made as now."""
    if not settings.splits_join_near_identical:
        return "the split was made before such copies were kept on one side"
    found_otherwise = []
    if settings.splits_near_identical_bits < NEAR_IDENTICAL_BITS:
        found_otherwise.append(f"within {settings.splits_near_identical_bits} fingerprint bits (now "
                               f"{NEAR_IDENTICAL_BITS})")
    fingerprinted_at = settings.splits_fingerprint_size or own_size_fingerprint_size(settings.image_size)
    if fingerprinted_at != FINGERPRINT_SIZE:
        at = f"the study's {fingerprinted_at}" if fingerprinted_at == settings.image_size else str(fingerprinted_at)
        found_otherwise.append(f"at {at} px (now at {FINGERPRINT_SIZE} px, at every size)")
    if not found_otherwise:
        return ""
    return f"the split was made when such copies were found {', '.join(found_otherwise)}"


class StudyData:
    """The study's split of each dataset, checked against the data, prepared once per (dataset, image size)."""

    def __init__(self, study: Study, data_roots: dict[str, str] | None = None, cache_dir: str | None = None,
                 device: str = "auto"):
        self.study = study
        self.data_roots = {**study.settings.data_roots, **(data_roots or {})}
        # dataset -> the folder --data-root gave it, where that is not the one the study read
        self.roots_given = {dataset: root for dataset, root in (data_roots or {}).items()
                            if root != study.settings.data_roots.get(dataset)}
        self.cache_dir = cache_dir or study.settings.cache_dir
        self.device = device
        self._prepared: dict[tuple, Any] = {}
        self._groups: dict[tuple, np.ndarray] = {}  # (as _prepared, part) -> its images' resampling groups
        self._splits: dict[str, pd.DataFrame] = {}
        self.split_notes: dict[str, str] = {}  # split URI -> its near-identical images across parts, in words
        self._searched_for_copies: set[str] = set()  # split URIs whose parts were compared (note_copies_across_parts)
        self.downloaded_bytes = 0  # weights fetched from object storage (0 when all came from the local cache)
        self._downloads: dict[str, concurrent.futures.Future] = {}  # weights URI -> its download (prefetch)

    def split_uri(self, dataset: str) -> str:
        return split_uri(self.study.uri, dataset)

    def download_dir(self) -> Path:
        """Where weights from object storage are cached on this machine."""
        return Path(self.cache_dir) / "downloads" if self.cache_dir else storage.download_cache_dir()

    def prefetch(self, weights_uris: list[str]) -> None:
        """Start downloading from object storage, side by side and in the background, the weights the
        analysis is about to evaluate: the downloads overlap each other and the evaluations. One progress
        bar for them all; `fetch` waits for each."""
        remote = [uri for uri in dict.fromkeys(weights_uris) if storage.is_remote(uri) and uri not in self._downloads]
        if not remote:
            return
        from tqdm.auto import tqdm

        sizes = [storage.size_of(uri) or 0 for uri in remote]
        bar = tqdm(total=sum(sizes), unit="B", unit_scale=True, desc=f"download {len(remote)} weight files",
                   leave=False)
        pool = ThreadPoolExecutor(max_workers=min(len(remote), PARALLEL_DOWNLOADS), thread_name_prefix="download")
        futures = [pool.submit(storage.download, uri, self.download_dir(), False, bar) for uri in remote]
        self._downloads.update(zip(remote, futures))
        pool.shutdown(wait=False)
        for future in futures:
            future.add_done_callback(lambda _: all(f.done() for f in futures) and bar.close())

    def fetch(self, weights_uri: str) -> Path:
        """A local copy of a weights file (itself where it is local), counting the bytes downloaded."""
        started = self._downloads.pop(weights_uri, None)
        local, fetched = started.result() if started else storage.download(weights_uri, self.download_dir())
        self.downloaded_bytes += fetched
        return local

    def split(self, dataset: str) -> pd.DataFrame:
        if dataset not in self._splits:
            uri = self.split_uri(dataset)
            try:
                split = read_split(uri)
            except CxrError as error:
                raise AnalysisRefused(f"{error}; the analysis needs the split the study was searched on") from error
            self._splits[dataset] = split
        return self._splits[dataset]

    def check_splits(self, trial_configs: dict[str, dict[str, Any]]) -> None:
        """Read each dataset's split and check the data against it (prepare) before any weights are fetched:
        a missing or edited split, or data gone or changed, refuses the analysis before it downloads gigabytes.
        `trial_configs`: dataset -> the config of a trial on it, as the study recorded it (the checkpoint's own
        config, read later, prepares the same data: the same dataset, image size and options)."""
        settings = self.study.settings
        for dataset, config in trial_configs.items():
            self.split(dataset)
            values = {"image_size": settings.image_size, "epochs": settings.max_epochs, "seed": settings.seed,
                      **config, "dataset": dataset, "dataset_options": settings.dataset_options.get(dataset, {})}
            try:
                train_config = self.train_config({"config": values})
            except CxrError:  # a config TrainConfig refuses: that trial's evaluation says so and skips it
                continue
            self.prepare(train_config)

    @staticmethod
    def _key(config) -> tuple:
        return (config.dataset, config.data_root, config.image_size, config.cache_dir,
                json.dumps(config.dataset_options, sort_keys=True))

    def prepare(self, config) -> Any:
        """The dataset of `config` (a TrainConfig) with the study's split; refuses if either changed."""
        from cxrnets.training import prepare_data

        key = self._key(config)
        if key in self._prepared:
            return self._prepared[key]
        uri = self.split_uri(config.dataset)
        saved = self.split(config.dataset)
        if not Path(config.data_root).exists():
            raise AnalysisRefused(f"dataset {config.dataset}: no data at {config.data_root} on this machine; pass "
                                  f"--data-root {config.dataset}=PATH")
        try:
            data = prepare_data(config, split=saved, split_source=uri)
        except SplitMismatch as error:  # the error names the split's file
            if (error.new or error.gone) and config.data_root == self.roots_given.get(config.dataset):
                raise AnalysisRefused(self.not_the_studys_data(config, uri, saved, error)) from error
            raise AnalysisRefused(f"refusing to evaluate: the data at {config.data_root} no longer matches the "
                                  f"study's split: {error}") from error
        except CxrError as error:  # not the split: the data or the cache, which the error names
            raise AnalysisRefused(str(error)) from error
        self.check_split_unedited(config, uri, saved, data)
        for name in ("train", "val", "test"):
            if len(data.rows(name)) == 0:
                raise AnalysisRefused(f"{uri}: the {name} split of {config.dataset} is empty; nothing to evaluate on")
        self._prepared[key] = data
        made_how = earlier_split_rule(self.study.settings)
        if made_how:
            self.note_copies_across_parts(uri, data.split, data.cache, made_how)
        return data

    def not_the_studys_data(self, config, uri: str, saved: pd.DataFrame, error: SplitMismatch) -> str:
        """Why the folder --data-root gave `config`'s dataset is refused: it lacks images of the study's split
        (`saved`, read from `uri`), or holds images the split does not list (`error`: which of each)."""
        split_named = f"the study's split ({uri})"
        lacks = (f"it lacks {len(error.gone)} ({listed(error.gone)}) of the {saved['relpath'].nunique()} images of "
                 f"{split_named}")
        holds = (f"holds {len(error.new)} image(s) ({listed(error.new)}) that {'it' if error.gone else split_named} "
                 "does not list")
        differences = f"{lacks} and {holds}" if error.gone and error.new else lacks if error.gone else f"it {holds}"
        return (f"--data-root {config.data_root}: the folder is not the copy of {config.dataset} this study was made "
                f"on: {differences}; pass the folder the study read "
                f"({self.study.settings.data_roots.get(config.dataset)}), or a copy of it")

    def resampling_groups(self, config, part: str) -> np.ndarray:
        """The bootstrap's unit for each image of `part` of `config`'s dataset (in the order of its rows):
        patients joined where they share a file or a near-identical image (uncertainty.resampling_groups)."""
        prepared = self.prepare(config)
        key = self._key(config)
        if (key, part) not in self._groups:
            rows = prepared.rows(part)
            self._groups[key, part] = resampling_groups(prepared.split["patient"], prepared.split["sha1"], rows,
                                                        cache_fingerprints(prepared.cache, rows))
        return self._groups[key, part]

    def note_copies_across_parts(self, uri: str, split: pd.DataFrame, cache, made_how: str) -> None:
        """Warn, and note for the report, where the study's split (`uri`, its rows `split`, their images' `cache`)
        puts near-identical images on two sides, as a split made before they were kept on one side as now could
        (`made_how`: earlier_split_rule): the test and held-out images with a copy in train or val, and the val
        images with a copy in train (the parts the models trained, or were chosen, on before being scored on them).
        Compares each split once."""
        if uri in self._searched_for_copies:
            return
        self._searched_for_copies.add(uri)
        parts = split["split"].to_numpy()
        if len(split) >= LARGE_DATASET:
            log.info("%s: comparing the fingerprints of the test, val and held-out images with those the models "
                     "trained or were chosen on, to find copies across the split", uri)
        prints = cache_fingerprints(cache)
        counts, example = [], ""
        for part, name, before in SCORED_AFTER:
            scored, seen = np.flatnonzero(parts == part), np.flatnonzero(np.isin(parts, before))
            nearest = near_identical_to(prints[scored], prints[seen])
            copied = np.flatnonzero(nearest >= 0)
            if len(copied):
                copy = "" if counts else (" have a near-identical copy (the same X-ray re-encoded, resized, "
                                          "squashed or windowed otherwise, or the same person's, under another "
                                          "patient id or file name)")
                counts.append(f"{len(copied)} {name} image(s){copy} in {' or '.join(before)}")
                first, twin = scored[copied[0]], seen[nearest[copied[0]]]
                example = example or (f"{split['relpath'].iloc[first]} ({part}) and {split['relpath'].iloc[twin]} "
                                      f"({parts[twin]})")
        if counts:
            found = " and ".join([", ".join(counts[:-1]), counts[-1]] if len(counts) > 1 else counts)
            note = (f"{uri}: {found}, e.g. {example}: {made_how}, so the figures on those images are optimistic "
                    "(the models trained on, or were chosen on, their copies); the split is kept as the study made it")
            log.warning(note)
            self.split_notes[uri] = note

    def check_split_unedited(self, config, uri: str, saved: pd.DataFrame, data) -> None:
        """The split file must be the one the study made: its digest as recorded then, or, for a study from
        before digests, the split made again (seeded) from the same data, as such studies were split: without
        joining near-identical images (cxrnets.splits.make_split without fingerprints), the rows taken in the order
        the data lists them; from the file's own rows where it lists an image twice, as dataset 3's splits did
        before each image was kept once."""
        settings = self.study.settings
        if config.dataset in settings.split_digests:
            try:
                check_split_digest(settings, config.dataset, saved, uri)
            except CxrError as error:
                raise AnalysisRefused(f"refusing to evaluate: {error}") from error
            return
        listing, strata = data.split, data.index.stratum()
        frame = data.index.frame.assign(sha1=data.split["sha1"].to_numpy())
        listed_twice = saved.loc[saved["relpath"].duplicated(), "relpath"]
        if len(listed_twice) and "stratum" in saved:
            # Made before cxrnets.data kept each image once, from rows the data no longer lists: the file's own
            # rows are split again (align_split found their images all present and unchanged).
            heldout = dict(zip(frame["relpath"], frame["heldout"])) if "heldout" in frame else {}
            listing = saved.reset_index(drop=True)
            frame = listing.assign(heldout=listing["relpath"].map(heldout).fillna(False).astype(bool))
            strata = listing["stratum"]
            sides = sorted(set(listing.loc[listing["relpath"].isin(listed_twice), "split"]))
            log.warning("%s: made before each image was kept once, it lists %d image(s) twice (e.g. %s, in %s): the "
                        "study weighed them double, the analysis counts each once", uri, len(listed_twice),
                        listed_twice.iloc[0], " and ".join(sides))
        try:
            remade = make_split(frame, strata, settings.val_fraction, settings.test_fraction, settings.seed,
                                in_listed_order=True)
        except CxrError as error:
            raise AnalysisRefused(f"refusing to evaluate: the data at {config.data_root} no longer gives the "
                                  f"study's split ({error})") from error
        moved = remade["split"].to_numpy() != listing["split"].to_numpy()
        if moved.any():
            example = listing.loc[moved, ["relpath", "split"]].iloc[0]
            raise AnalysisRefused(
                f"refusing to evaluate: {uri} was edited since the study made it: {int(moved.sum())} image(s) "
                f"changed split, e.g. {example['relpath']} is now in {example['split']} but the study put it in "
                f"{remade.loc[moved, 'split'].iloc[0]} (seed {settings.seed}); the split is part of the study: "
                "restore the file, or start a new study. (Or the file is intact and this scikit-learn, "
                f"{sklearn.__version__}, splits differently from the release the study was made with: this study "
                "predates the split digests in study.json, so the split is made again to check it; analyse it "
                "where that release is installed.)")

    def train_config(self, checkpoint: dict):
        from cxrnets.config import TrainConfig

        values = dict(checkpoint["config"])
        dataset = values.get("dataset")
        if dataset in self.data_roots:
            values["data_root"] = self.data_roots[dataset]
        # The checkpoint holds every weight: no pretrained weights to fetch, no compile for one pass.
        values.update(cache_dir=self.cache_dir, device=self.device, pretrained=False, weights=None, compile=False)
        return TrainConfig.from_dict(values)


@dataclass
class Evaluation:
    """One checkpoint evaluated on one split."""

    trial_id: str
    epoch: int
    split: str
    metrics: dict[str, float]
    y_true: np.ndarray
    scores: np.ndarray
    classes: list[str]
    multilabel: bool
    config: dict[str, Any]
    groups: np.ndarray           # each image's patient (resampling group, StudyData): the bootstrap's unit
    baseline_scores: np.ndarray  # the majority-class predictor's scores on the same images
    seconds: float = 0.0
    baseline: dict[str, float] = field(default_factory=dict)  # the majority-class predictor's metrics
    images: pd.DataFrame | None = None  # each image's relpath and patient, in y_true's order
    weights_file: str = ""  # the local file evaluated: the weights, or the download cache's copy of a bucket's
    # part of the split ("val", "test": those the report notes) -> the classes (labels) with no image there
    classes_absent: dict[str, list[str]] = field(default_factory=dict)
    # The checkpoint scored (weights, epoch, config, classes): what the evaluations elsewhere score, not the file
    # again, which a running study may have rewritten or deleted since.
    checkpoint: dict[str, Any] = field(default_factory=dict, repr=False)


def evaluate_checkpoint(weights_uri: str, data: StudyData, split: str = "test", trial_id: str = "",
                        trial_config: dict[str, Any] | None = None, sidecar: BestWeights | None = None) -> Evaluation:
    """Fetch a trial's weights (`weights_uri`: the study's file or bucket object) and evaluate them once on
    `split` of the study's split; CxrError, naming `weights_uri`, if unusable, if the config they were
    trained with is not `trial_config` (the trial's, as the study recorded it), or if they are no longer of the
    epoch and value `sidecar` (their sidecar as the analysis read it) names; OSError if they cannot be fetched."""
    from cxrnets.metrics import class_indicators, classification_metrics, majority_scores
    from cxrnets.training import TrainingRun

    path = data.fetch(weights_uri)
    started = time.perf_counter()
    downloaded = f" (downloaded to {path})" if storage.is_remote(weights_uri) else ""
    checkpoint = load_checkpoint(path, name=f"{weights_uri}{downloaded}")
    if trial_config is not None:
        check_trained_config(weights_uri, checkpoint["config"], {"image_size": data.study.settings.image_size,
                                                                 **trial_config})
    if sidecar is not None:
        check_unchanged_since(sidecar, weights_uri, checkpoint)
    config = data.train_config(checkpoint)
    prepared = data.prepare(config)
    if list(checkpoint["classes"]) != list(prepared.index.classes):
        raise CxrError(f"{weights_uri}: the checkpoint's classes {checkpoint['classes']} differ from the dataset's "
                       f"{prepared.index.classes}")
    run = TrainingRun(config, prepared)
    try:
        run.model.load_state_dict(checkpoint["model"])
    except (RuntimeError, KeyError, TypeError) as error:
        raise CxrError(f"{weights_uri}: the weights do not fit {config.model} ({str(error)[:200]})") from error
    metrics, y_true, scores = run.evaluate_split(split)
    multilabel, classes = bool(prepared.index.multilabel), list(prepared.index.classes)
    rows = prepared.rows(split)
    groups = data.resampling_groups(config, split)
    images = prepared.split.iloc[rows][["relpath", "patient"]].reset_index(drop=True)
    baseline_scores = majority_scores(prepared.targets[prepared.rows("train")], len(y_true), multilabel, len(classes))
    baseline = classification_metrics(y_true, baseline_scores, multilabel)
    absent = {part: [name for name, held in zip(classes, class_indicators(
        prepared.targets[prepared.rows(part)], len(classes), multilabel).any(axis=0)) if not held]
        for part in ("val", "test")}
    return Evaluation(trial_id, int(checkpoint["epoch"]), split, metrics, y_true, scores, classes, multilabel,
                      dict(checkpoint["config"]), groups, baseline_scores, time.perf_counter() - started,
                      {f"{split}/{k}": v for k, v in baseline.items()}, images, str(path), absent, checkpoint)


def check_unchanged_since(sidecar: BestWeights, weights_uri: str, checkpoint: dict[str, Any]) -> None:
    """Refuse weights (`checkpoint`, loaded from `weights_uri`) of another epoch or value than their sidecar
    named when the analysis read it: the trial was ranked on that epoch's validation value, and a running
    study has rewritten its best weights since."""
    epoch = int(checkpoint["epoch"])
    value = checkpoint.get("value") if checkpoint.get("metric") == sidecar.metric else None  # weights from before
    if epoch == sidecar.epoch and (value is None or same_setting(float(value), sidecar.value)):
        return
    now = f"epoch {epoch}" + (f", {sidecar.metric} {float(value):.3f}" if value is not None else "")
    raise CxrError(f"{weights_uri}: its weights changed since the analysis read them (now of {now}; their sidecar "
                   f"named epoch {sidecar.epoch}, {sidecar.metric} {sidecar.value:.3f}): the study is still running; "
                   "analyse again when it ends")


def check_trained_config(weights_uri: str, trained: dict[str, Any], recorded: dict[str, Any]) -> None:
    """Refuse weights (the study's file or bucket object at `weights_uri`) trained with another config than the
    trial's (`recorded`: its config as the study recorded it), as when another trial's weights file was copied
    over the trial's."""
    differing = [key for key, value in recorded.items()
                 if key in trained and key not in NODE_KEYS and not same_setting(trained[key], value)]
    if differing:
        raise CxrError(f"{weights_uri}: not this trial's weights: trained with "
                       f"{', '.join(f'{key}={shown(trained[key])}' for key in differing)} where the study's results "
                       f"give the trial {', '.join(f'{key}={shown(recorded[key])}' for key in differing)}; was "
                       "another trial's weights file copied over it? Put the trial's own weights back, or delete "
                       "this file and its .json sidecar to leave the trial out")


def same_setting(trained: Any, recorded: Any) -> bool:
    if isinstance(trained, (bool, np.bool_)) or isinstance(recorded, (bool, np.bool_)):
        return bool(trained) == bool(recorded)
    if isinstance(trained, numbers.Number) and isinstance(recorded, numbers.Number):
        return math.isclose(float(trained), float(recorded), rel_tol=1e-9)
    return trained == recorded


def shown(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def listed(relpaths: list[str]) -> str:
    """`relpaths` for a message, the first SHOWN_FILES named and the others counted: "a, b, c and 2 more"."""
    more = f" and {len(relpaths) - SHOWN_FILES} more" if len(relpaths) > SHOWN_FILES else ""
    return ", ".join(relpaths[:SHOWN_FILES]) + more
