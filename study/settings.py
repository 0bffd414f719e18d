"""What defines a study: its settings (`study.json`) and its split (`splits/<dataset>.csv`).

`study.run` makes both once and saves them in the study's folder; `--resume`,
`study.analyze` and `study.bench` read them back (`load_settings`,
`read_split`). Everything goes through `study.storage`, so a study in a
bucket works like one on disk.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
import types
import typing
from collections.abc import Iterator
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from cxrnets.cache import absolute_cache_dir
from cxrnets.config import SPLIT_FRACTIONS_RULE, split_fractions_fit
from cxrnets.data import DATASET_NAMES, MULTILABEL_DATASETS
from cxrnets.errors import CxrError
from cxrnets.fingerprints import EARLIER_NEAR_IDENTICAL_BITS
from study import storage
from study.lock import NEW_STUDY_REMEDY, started_elsewhere
from study.space import SearchSpace, parse_space

SETTINGS_FILE = "study.json"
# What ASHA and Optuna may optimise: the validation metrics trials report (losses are minimised).
METRICS = ("val/f1_macro", "val/accuracy", "val/precision_macro", "val/recall_macro", "val/loss",
           "val/subset_accuracy", "val/f1_micro", "val/roc_auc_macro")
MULTILABEL_METRICS = ("val/subset_accuracy", "val/f1_micro")  # reported on multi-label datasets only (cxrnets.metrics)
TIE_BREAK = "val/loss"  # what ASHA's rungs rank tied trials by (study.asha)
EARLIER_METRICS = ("train/loss",)  # a study metric earlier versions allowed: their studies still resume and analyse
# Used where neither the command line nor the space says.
DEFAULTS = {"dataset": "covid-chestxray-3class", "image_size": 64, "num_samples": 10, "max_epochs": 4,
            "grace_period": 1, "reduction_factor": 2, "metric": "val/f1_macro", "asha": "promoting"}
ASHA_FORMS = ("promoting", "stopping")  # study.asha: PromotingASHA pauses trials at rungs, BestEpochASHA stops them
# What a space's `study:` section may set: defaults for these options of study.run.
SPACE_STUDY_KEYS = tuple(DEFAULTS)
# The least each whole-number setting may be, from the command line or a space.
LOWEST = {"num_samples": 1, "max_epochs": 1, "grace_period": 1, "reduction_factor": 2, "image_size": 1}
# The finest fraction of a CPU or a GPU Ray schedules: a trial asking for less is refused when Tune starts it.
RESOURCE_UNIT = 0.0001
# The checkpoint policy's defaults (see study.checkpoints).
CHECKPOINT_EVERY = 5          # epochs between two full states of a running trial
CHECKPOINT_MINUTES = 15.0     # ... or minutes, whichever comes first


@dataclass
class StudySettings:
    """Everything that defines a study; saved as study.json in the study directory."""

    name: str
    storage: str
    space: dict[str, Any]
    space_source: str
    data_roots: dict[str, str]
    image_size: int
    num_samples: int
    max_epochs: int
    grace_period: int
    reduction_factor: int
    metric: str
    mode: str
    cpus_per_trial: float
    gpus_per_trial: float
    max_concurrent: int | None
    max_failures: int
    seed: int
    cache_dir: str | None = None
    val_fraction: float = 0.15   # of the patients, stratified by class (cxrnets.splits.make_split)
    test_fraction: float = 0.15
    checkpoint_every: int = CHECKPOINT_EVERY
    checkpoint_minutes: float = CHECKPOINT_MINUTES
    keep: int | str = 1  # best weights kept after the study: each (dataset, model) cell's k best trials, or "all"
    dataset_options: dict[str, dict[str, Any]] = field(default_factory=dict)  # dataset -> its loader's options
    tie_break: str | None = None  # ASHA's second metric for ties (None: plain ties, as studies before it had)
    asha: str = "stopping"  # ASHA_FORMS; studies from before the promoting form stopped trials
    # The Optuna study's name in optuna.db (study.searcher); None: a study from before that file, whose
    # Optuna study lived in the driver's memory and in Tune's snapshots only.
    optuna_study: str | None = None
    baselines: dict[str, dict[str, float]] = field(default_factory=dict)  # majority class, per dataset
    # dataset -> cxrnets.splits.split_digest of its split file as made; empty for a study from before them,
    # whose analysis makes the split again to check the file.
    split_digests: dict[str, str] = field(default_factory=dict)
    # Whether the study's splits joined near-identical X-rays (cxrnets.fingerprints) when made, within how many
    # fingerprint bits (those studies that joined before the bits were recorded joined within 48), and from images
    # decoded at what size (None: before the size was recorded, at the study's image_size, at 32 px where smaller:
    # cxrnets.fingerprints.own_size_fingerprint_size); the analysis of a study from before, or that joined otherwise
    # than now, looks for copies across the parts of its split.
    splits_join_near_identical: bool = False
    splits_near_identical_bits: int = EARLIER_NEAR_IDENTICAL_BITS
    splits_fingerprint_size: int | None = None
    created: str = field(default_factory=lambda: time.strftime("%Y-%m-%d %H:%M:%S"))

    @property
    def study_uri(self) -> str:
        return storage.join(self.storage, self.name)

    def search_space(self) -> SearchSpace:
        return parse_space(self.space, self.space_source, self.name)


def check_space_study(space: SearchSpace) -> None:
    """The space's `study:` section, each key checked as its command-line option is, naming the file and key."""
    allowed = {"dataset": DATASET_NAMES, "metric": METRICS, "asha": ASHA_FORMS}
    unknown = [key for key in space.study if key not in SPACE_STUDY_KEYS]
    if unknown:
        raise CxrError(f"{space.source}: study: unknown key(s) {unknown}; a space's study section may set "
                       f"{', '.join(SPACE_STUDY_KEYS)}")
    for key, value in space.study.items():
        where = f"{space.source}: study.{key}"
        if key in allowed and value not in allowed[key]:
            raise CxrError(f"{where}: {value!r} is not one of {', '.join(allowed[key])}")
        if key in LOWEST and not (isinstance(value, int) and not isinstance(value, bool) and value >= LOWEST[key]):
            raise CxrError(f"{where}: a whole number of at least {LOWEST[key]}, got {value!r}")
    if "image_size" in space.study and space.every_trial_draws("image_size"):
        raise CxrError(f"{space.source}: study.image_size {space.study['image_size']} conflicts with "
                       "search.image_size, from which each trial draws its size (the study's would be recorded, and "
                       "its cache decoded, for no trial); drop one")


def check_metric_reported(metric: str, datasets: list[str], option: str) -> None:
    """Refuse a metric that some of the study's datasets never report: Tune would stop the study at the
    first result without it."""
    single_label = [name for name in datasets if name not in MULTILABEL_DATASETS]
    if metric in MULTILABEL_METRICS and single_label:
        reported = [m for m in METRICS if m not in MULTILABEL_METRICS]
        verb = "is" if len(single_label) == 1 else "are"
        raise CxrError(f"{option} {metric}: only multi-label datasets ({', '.join(MULTILABEL_DATASETS)}) report it, "
                       f"and {', '.join(single_label)} {verb} single-label; choose one of {', '.join(reported)}")


def parse_data_roots(items: list[str] | None, datasets: list[str]) -> dict[str, str]:
    """--data-root options ([DATASET=]PATH; DATASET= where there are several datasets; one for each dataset at
    most) as dataset -> absolute path, for the datasets they name. NAME=PATH whose NAME is not one of `datasets`
    is refused, naming them; a path holding '=' is written with a folder before it (./a=b, /data/a=b)."""
    roots: dict[str, str] = {}
    for item in items or []:
        name, sep, path = item.partition("=")
        named = bool(sep) and "/" not in name
        if named and name in datasets:
            dataset = name
        elif named and len(datasets) == 1:
            raise CxrError(f"--data-root {item!r}: {name} is not this study's dataset; write PATH alone, or "
                           f"{datasets[0]}=PATH (a folder whose name holds '=' as ./{item})")
        elif named:
            raise CxrError(f"--data-root {item!r}: {name} is not one of the study's datasets ({', '.join(datasets)})")
        elif len(datasets) == 1:
            dataset, path = datasets[0], item
        else:
            raise CxrError(f"--data-root {item!r}: with several datasets, write DATASET=PATH for one of "
                           f"{', '.join(datasets)}")
        if dataset in roots:
            raise CxrError(f"--data-root {item!r}: {dataset}'s data root is given twice (also as {roots[dataset]!r}); "
                           "give it once")
        roots[dataset] = path
    return {name: str(Path(path).expanduser().resolve()) for name, path in roots.items()}


def relocate(settings: StudySettings, data_roots: list[str] | None, cache_dir: str | None) -> None:
    """Where the data (--data-root) and the image cache (--cache-dir) lie for this run of a saved study: moved
    since, or on another machine. study.json keeps what it says; the data is checked against the saved split
    when it is read (cxrnets.training.align_split)."""
    settings.data_roots.update(parse_data_roots(data_roots, list(settings.data_roots)))
    if cache_dir is not None:
        settings.cache_dir = absolute_cache_dir(cache_dir)


def metric_mode(metric: str) -> str:
    """min for a loss, else max."""
    return "min" if metric.endswith("loss") else "max"


def parse_keep(text: str | int) -> int | str:
    """--keep: "all" or a positive number of trials per cell."""
    if str(text).strip().lower() == "all":
        return "all"
    try:
        keep = int(text)
    except ValueError:
        keep = 0
    if keep < 1:
        raise CxrError(f"--keep {text}: give 'all' or how many of each model's best trials keep their weights "
                       "(1 or more)")
    return keep


def settings_uri(study_uri: str) -> str:
    return storage.join(study_uri, SETTINGS_FILE)


# The fields of study.json that take one of a few values, which the code tells apart.
SETTINGS_CHOICES = {"mode": ("min", "max"), "asha": ASHA_FORMS}
DAMAGED = ("the file was edited or damaged since the study wrote it: restore it (from a copy of the study), or start "
           "a new study")
_JSON_NAMES = {str: ("a string", "strings"), int: ("a whole number", "whole numbers"), float: ("a number", "numbers"),
               type(None): ("null", "nulls")}


def _holds(value: Any, hint: Any) -> bool:
    """Whether a value read from JSON is one of type `hint` (a StudySettings annotation)."""
    if hint is Any:
        return True
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return any(_holds(value, arm) for arm in typing.get_args(hint))
    if typing.get_origin(hint) is dict:
        return isinstance(value, dict) and all(_holds(item, typing.get_args(hint)[1]) for item in value.values())
    if isinstance(value, bool):
        return hint is bool
    return isinstance(value, (int, float) if hint is float else hint)


def _json_type(hint: Any, plural: bool = False) -> str:
    """A StudySettings annotation as JSON names it: 'a whole number or null', 'an object of strings'."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(_json_type(arm, plural) for arm in typing.get_args(hint))
    if typing.get_origin(hint) is dict:
        values, noun = typing.get_args(hint)[1], "objects" if plural else "an object"
        return noun if values is Any else f"{noun} of {_json_type(values, plural=True)}"
    return _JSON_NAMES[hint][plural]


def _shown(value: Any) -> str:
    """A value read from JSON as the file writes it, cut short."""
    text = json.dumps(value)
    return text if len(text) <= 60 else f"{text[:57]}..."


def check_settings_values(values: dict[str, Any], uri: str) -> None:
    """CxrError, naming study.json at `uri` and the field, if `values` (study.json as read) is not what a study
    writes: each field of StudySettings, of its type. Fields with a default may be missing: older studies lack
    them."""
    hints = typing.get_type_hints(StudySettings)
    for setting in fields(StudySettings):
        name, hint = setting.name, hints[setting.name]
        if name not in values:
            if setting.default is MISSING and setting.default_factory is MISSING:
                raise CxrError(f"{uri}: {name} is missing, where a study's settings hold {_json_type(hint)}; {DAMAGED}")
        elif not _holds(values[name], hint):
            raise CxrError(f"{uri}: {name} holds {_shown(values[name])}, where a study's settings hold "
                           f"{_json_type(hint)}; {DAMAGED}")
        elif name in SETTINGS_CHOICES and values[name] not in SETTINGS_CHOICES[name]:
            raise CxrError(f"{uri}: {name} holds {_shown(values[name])}, where a study's settings hold one of "
                           f"{', '.join(SETTINGS_CHOICES[name])}; {DAMAGED}")


def broken_setting_rules(settings: StudySettings) -> Iterator[tuple[tuple[str, ...], str]]:
    """The rules on values (beyond their types) that `settings` break, each as the fields it concerns and what they
    must hold."""
    for key, lowest in LOWEST.items():
        if getattr(settings, key) < lowest:
            yield (key,), f"must be at least {lowest}"
    if not split_fractions_fit(settings.val_fraction, settings.test_fraction):
        yield ("val_fraction", "test_fraction"), SPLIT_FRACTIONS_RULE
    if settings.grace_period > settings.max_epochs:
        yield ("grace_period", "max_epochs"), "ASHA's grace period may not exceed a trial's epochs"
    if settings.metric not in (*METRICS, *EARLIER_METRICS):
        yield ("metric",), f"must be one of {', '.join(METRICS)}"
    elif settings.mode != metric_mode(settings.metric):
        yield ("metric", "mode"), "a loss is minimised (min), any other metric maximised (max)"
    if settings.tie_break is not None and settings.tie_break not in (*METRICS, *EARLIER_METRICS):
        yield ("tie_break",), f"must be one of {', '.join(METRICS)}, or null for plain ties"
    cpus, gpus = settings.cpus_per_trial, settings.gpus_per_trial
    if not (math.isfinite(cpus) and cpus > 0):
        yield ("cpus_per_trial",), "must be a finite number above 0"
    elif cpus < RESOURCE_UNIT:
        yield ("cpus_per_trial",), f"must be at least {RESOURCE_UNIT:g}, the finest fraction of a CPU Ray schedules"
    if not (math.isfinite(gpus) and gpus >= 0):
        yield ("gpus_per_trial",), "must be a finite number of 0 or more"
    elif 0 < gpus < RESOURCE_UNIT:
        yield ("gpus_per_trial",), (f"must be 0 or at least {RESOURCE_UNIT:g}, the finest fraction of a GPU Ray "
                                    "schedules")
    elif gpus > 1 and gpus != int(gpus):
        yield ("gpus_per_trial",), "above 1, must be a whole number of GPUs"
    if settings.max_concurrent is not None and settings.max_concurrent < 1:
        yield ("max_concurrent",), "must be at least 1"
    if settings.max_failures < 0:
        yield ("max_failures",), "must be 0 or more"
    if settings.checkpoint_every < 1:
        yield ("checkpoint_every",), "must be at least 1"
    if not settings.checkpoint_minutes > 0:
        yield ("checkpoint_minutes",), "must be above 0"
    if settings.keep != "all" and not (isinstance(settings.keep, int) and settings.keep >= 1):
        yield ("keep",), "must be 'all' or a whole number of at least 1"


def check_setting_rules(settings: StudySettings, saved_in: str | None = None) -> None:
    """CxrError for the first rule `settings` break (broken_setting_rules), naming a new study's command-line
    options (`saved_in` None), or the fields of a study read back from its study.json at `saved_in`."""
    broken = next(broken_setting_rules(settings), None)
    if broken is None:
        return
    keys, rule = broken
    if saved_in is not None:
        named = " and ".join(f"{key} holds {_shown(getattr(settings, key))}" for key in keys)
        raise CxrError(f"{saved_in}: {named}: {rule}; {DAMAGED}")
    named = " and ".join(f"--{key.replace('_', '-')} {_option_value(getattr(settings, key))}" for key in keys)
    # check_space_study checked each of the space's values alone: a pair may join a typed option and a space's value.
    from_space = len(keys) > 1 and any(key in SPACE_STUDY_KEYS for key in keys)
    where = f" (where not given, each comes from the study section of {settings.space_source})" if from_space else ""
    raise CxrError(f"{named}: {rule}{where}")


def _option_value(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def load_settings(study_dir: str, flag: str = "study directory") -> StudySettings:
    """The settings of the study at `study_dir` (a local folder or a URI), wherever it lies now.

    CxrError, naming the folder, if it holds no study.json; naming the file, and the field, if it is unreadable
    or holds what no study writes.
    """
    uri = storage.location(study_dir, flag)
    try:
        found = storage.kind(uri, first_look=True)
    except CxrError as error:  # the storage refused to say (credentials, network)
        raise CxrError(f"{flag} {error}") from error
    if found != "dir":
        raise CxrError(f"{flag} {study_dir}: no such study directory; pass the folder python -m study.run wrote "
                       "(<storage>/<study name>)")
    try:
        values = storage.read_json(settings_uri(uri))
    except FileNotFoundError as error:
        raise CxrError(f"{flag} {study_dir}: not a study directory, it has no {SETTINGS_FILE}; pass the folder "
                       "python -m study.run wrote (<storage>/<study name>)") from error
    except OSError as error:
        raise CxrError(f"{settings_uri(uri)}: not a readable study settings file ({error})") from error
    except ValueError as error:
        raise CxrError(f"{settings_uri(uri)}: not a readable study settings file ({error}); {DAMAGED}") from error
    if not isinstance(values, dict):
        raise CxrError(f"{settings_uri(uri)}: holds {_shown(values)}, not the object of a study's settings; {DAMAGED}")
    # The directory may have moved since the study started: it is where the study is now.
    values.update(storage=storage.parent_of(uri), name=storage.name_of(uri))
    check_settings_values(values, settings_uri(uri))
    known = {f.name for f in fields(StudySettings)}
    settings = StudySettings(**{key: value for key, value in values.items() if key in known})
    check_setting_rules(settings, settings_uri(uri))
    return settings


def refuse_existing_study(study_uri: str, just_started: bool = False) -> None:
    """CxrError if `study_uri` already holds a study: a new study never writes into another's folder.
    `just_started`: a first look found none, so another driver started that study since (the same --name)."""
    if storage.kind(settings_uri(study_uri)) == "missing":
        return
    if just_started:
        raise started_elsewhere(study_uri, "a study", NEW_STUDY_REMEDY)
    raise CxrError(f"{study_uri} already holds a study: use --resume or another --name")


def save_settings(settings: StudySettings) -> None:
    """Write study.json of a new study; CxrError if the folder already holds a study (never rewritten)."""
    refuse_existing_study(settings.study_uri)
    storage.write_text(settings_uri(settings.study_uri), json.dumps(asdict(settings), indent=2))


# Set by `resumed_study` for the length of a resume (one study per driver process).
_resumed_study_uri: str | None = None


@contextlib.contextmanager
def resumed_study(study_uri: str) -> Iterator[None]:
    """While a resume runs: the study (the Tune run being resumed: a study, or its confirm run) lies at
    `study_uri`. Tune pickled the run's driver-side objects (the results table, the weights keeper, the
    searcher) with the folder they had then, and a resume unpickles them; they take their folder from
    `study_location`, so that a study moved or renamed since continues where it lies now."""
    global _resumed_study_uri
    _resumed_study_uri = study_uri
    try:
        yield
    finally:
        _resumed_study_uri = None


def resumed_study_uri() -> str | None:
    """Where the study being resumed lies now (None outside a resume; see resumed_study)."""
    return _resumed_study_uri


def study_location(pickled_uri: str) -> str:
    """The folder a driver-side object pickled with `pickled_uri` reads and writes now (see resumed_study)."""
    return _resumed_study_uri or pickled_uri


def split_uri(study_uri: str, dataset: str) -> str:
    return storage.join(study_uri, "splits", f"{dataset}.csv")


def check_split_digest(settings: StudySettings, dataset: str, split, uri: str) -> None:
    """CxrError if a study's split file is no longer the one it made (cxrnets.splits.split_digest; a study
    from before digests has none to compare with, and passes here)."""
    from cxrnets.splits import split_digest  # loads scikit-learn: kept out of study.run --help

    recorded = settings.split_digests.get(dataset)
    if recorded is not None and split_digest(split) != recorded:
        raise CxrError(f"{uri} was edited since the study made it (its content no longer has the digest recorded "
                       "in study.json); the split is part of the study: restore the file, or start a new study")


def read_split(uri: str):
    """A study's saved split (a DataFrame), checked as cxrnets.splits.parse_split checks a split file;
    CxrError naming the file if it is missing or damaged."""
    from cxrnets.splits import parse_split  # loads scikit-learn: kept out of study.run --help

    remedy = "it is part of the study and cannot be remade safely: restore the file (from a copy of the study), " \
             "or start a new study"
    try:
        data = storage.read_bytes(uri)
    except FileNotFoundError as error:
        raise CxrError(f"{uri}: the study's split is missing; {remedy}") from error
    return parse_split(data, uri, remedy)
