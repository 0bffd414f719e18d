"""Run a hyperparameter study of chest X-ray classifiers with Ray Tune, Optuna and ASHA.

    python -m study.run                                   # demo study on the embedded sample (~3 min, 2 CPUs)
    python -m study.run --dataset covid-chestxray-3class --data-root ../shared/data/covid-chestxray-dataset \
        --image-size 64 --num-samples 12 --max-epochs 6
    python -m study.run --space paper --dataset covid-radiography-3class --data-root ~/data/covid-radiography \
        --gpus-per-trial 0.25 --storage s3://bucket/cxr-tune --name paper-grid
    python -m study.run --resume studies/demo-20261125-101500  # continue an interrupted study
    tensorboard --logdir studies/demo-20261125-101500
    optuna-dashboard sqlite:///$PWD/studies/demo-20261125-101500/optuna.db   # pip install -e ".[dashboard]"

This module is the command line: it parses and checks the options, then hands the
study to `study.driver`, which runs it.
"""

from __future__ import annotations

import argparse
import errno
import logging
import sys
import time
from pathlib import Path
from shlex import quote

from cxrnets.cache import absolute_cache_dir
from cxrnets.data import DATASET_NAMES, MULTILABEL_DATASETS, SAMPLE_ROOT, dataset_options_help, parse_dataset_options
from cxrnets.errors import CxrError
from cxrnets.names import check_seed
from study import storage
from study.settings import (ASHA_FORMS, CHECKPOINT_EVERY, CHECKPOINT_MINUTES, DEFAULTS, METRICS, TIE_BREAK,
                            StudySettings, check_metric_reported, check_setting_rules, check_space_study,
                            load_settings, metric_mode, parse_data_roots, parse_keep, relocate, settings_uri)
from study.space import SearchSpace, check_models_fit_image_size, load_space, parse_space, read_space_file

log = logging.getLogger("study.run")

# ------------------------------------------------------------------ arguments

class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Append each flag's default, unless its help already says in words what the default is."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if "(default:" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m study.run", description=__doc__.split("\n\n")[0], formatter_class=_HelpFormatter)
    add = parser.add_argument
    add("--space", default="demo", help="search space: a YAML file or the name of one in search_spaces/")
    add("--dataset", default=None, choices=DATASET_NAMES,
        help="dataset name; overrides the space's (default: the space's, else covid-chestxray-3class)")
    add("--data-root", action="append", default=None, metavar="[DATASET=]PATH",
        help="where a dataset lies; repeat as DATASET=PATH when the space searches over datasets "
             "(default: the embedded sample for covid-chestxray datasets)")
    add("--dataset-option", action="append", default=None, metavar="[DATASET:]KEY=VALUE",
        help="a dataset loader's option, repeatable; saved with the study, reused on --resume and by the analysis "
             f"(e.g. patient_column=patientid for a csv dataset). Options: {dataset_options_help()} "
             "(default: none)")
    add("--num-samples", type=int, default=None,
        help="trials to run (default: the space's, else every combination for a grid space, else 10); a space "
        "of choices runs each configuration once, so at most as many trials as it has configurations")
    add("--max-epochs", type=int, default=None, help="epochs of a trial that ASHA never stops (default: space's, else 4)")
    add("--grace-period", type=int, default=None,
        help="epochs every trial gets before ASHA may stop it; ASHA judges a trial by its best epoch so far "
             "(default: the space's, else 1)")
    add("--reduction-factor", type=int, default=None,
        help="ASHA keeps 1/this of trials at each rung (default: the space's, else 2)")
    add("--asha", default=None, choices=ASHA_FORMS,
        help="promoting: a trial waits at each rung until it ranks in the top 1/reduction-factor of the trials "
             "that reached it (its full state kept meanwhile), so fewer trials reach the last epoch; stopping: a "
             "trial goes on unless it ranks below the rung's cutoff now (no waiting, no full state at rungs) "
             "(default: the space's, else promoting)")
    add("--metric", default=None, choices=METRICS, help="validation metric that ASHA and Optuna optimise "
        "(default: the space's, else val/f1_macro; minimised if it is a loss)")
    add("--tie-break", default=TIE_BREAK, choices=(*METRICS, "none"),
        help="ASHA's rungs rank trials at equal best metric by this second validation metric (its value at the "
             "trial's best epoch), so that trials tied on the constant prediction are stopped when others at the "
             "rung are better on it; none for plain ties")
    add("--image-size", type=int, default=None, help="square input size in pixels (default: space's, else 64)")
    add("--cpus-per-trial", type=float, default=1.0, help="CPU cores reserved per trial")
    add("--gpus-per-trial", type=float, default=0.0,
        help="GPUs per trial; fractions pack trials on a card (0.25 = four per GPU)")
    add("--max-concurrent", type=int, default=None, help="at most this many trials at once (default: as resources allow)")
    add("--max-failures", type=int, default=2, help="retries of a trial whose worker or node died, from its last checkpoint")
    add("--storage", default="studies", help="where studies are written: a local folder, s3:// or gs:// URI")
    add("--checkpoint-every", type=int, default=CHECKPOINT_EVERY,
        help="epochs between two full states (model + optimizer) of a running trial, from which a trial on a "
             "lost node or an interrupted study continues; a trial's best weights are written where it may end "
             "(its last epoch, each ASHA rung, each full state), whatever this says")
    add("--checkpoint-minutes", type=float, default=CHECKPOINT_MINUTES,
        help="also write a full state once this many minutes have passed since the last one (long epochs)")
    add("--keep", default="1", help="best weights kept after the study: each model's K best trials on the "
        "study metric (what study.analyze --top-k K can evaluate), or 'all'")
    add("--name", default=None, help="study name, the folder under --storage (default: <space>-<date-time>)")
    add("--seed", type=int, default=0, help="seed of the split, the sampler and the trials")
    add("--val-fraction", type=float, default=0.15,
        help="share of the patients held out for validation (what trials are selected on), stratified by class")
    add("--test-fraction", type=float, default=0.15,
        help="share of the patients held out for the analysis's one test evaluation, stratified by class; "
             "raise it when a rare class gets one test patient, whose figures no bootstrap can move")
    add("--cache-dir", default=None,
        help="decode-once image cache on each node (default: $CXR_TUNE_CACHE, else ~/.cache/cxr-tune)")
    add("--resume", default=None, metavar="STUDY_DIR",
        help="continue the study in this directory with the settings in its study.json; only --address, "
             "--num-cpus, --cpus-per-trial, --gpus-per-trial (what this machine gives), --data-root and "
             "--cache-dir (where they lie now) and -v go with it (default: start a new study)")
    add("--address", default=None, help="Ray cluster address, host:port (the head's GCS port, 6379 by default) or "
        "ray://host:port (default: RAY_ADDRESS, else a cluster running here, "
        "else a new local instance)")
    add("--num-cpus", type=int, default=None,
        help="CPUs of a new local Ray instance (default: all; refused with a cluster)")
    add("-v", "--verbose", action="store_true",
        help="Tune's own tables and every trial's log lines, instead of the study's one status line; a resumed "
             "study shows what it started with")
    return parser


# What a resume still takes: where it runs and what each trial takes there, where the data and the cache lie
# now, how it shows.
TRIAL_RESOURCES = ("cpus_per_trial", "gpus_per_trial")
RESUME_OPTIONS = ("resume", "address", "num_cpus", *TRIAL_RESOURCES, "data_root", "cache_dir", "verbose")


def given_options(argv: list[str]) -> list[str]:
    """The options typed in `argv` (as argparse dests), whatever their values: one typed at its default counts."""
    parser = build_parser()
    for action in parser._actions:
        action.default = argparse.SUPPRESS  # an option not typed stays out of the namespace
    return list(vars(parser.parse_args(argv)))


def check_resume_options(argv: list[str]) -> None:
    """A resume runs the study as study.json defines it: refuse, naming them, options it would not use."""
    ignored = [f"--{dest.replace('_', '-')}" for dest in given_options(argv) if dest not in RESUME_OPTIONS]
    if ignored:
        raise CxrError(f"--resume continues the study as its study.json defines it: {', '.join(ignored)} would not "
                       "change it; drop them (only --address, --num-cpus, --cpus-per-trial, --gpus-per-trial, "
                       "--data-root, --cache-dir and -v go with --resume), or start a new study with them")


def resume_trial_resources(settings: StudySettings, args: argparse.Namespace, typed: list[str]) -> frozenset[str]:
    """--cpus-per-trial and --gpus-per-trial typed with --resume: what each trial takes on the machine or the
    cluster the study goes on on (they change no result; study.json keeps the study's own). Returns the names of
    the resources left to study.json's values."""
    for name in TRIAL_RESOURCES:
        if name in typed:
            setattr(settings, name, getattr(args, name))
    check_setting_rules(settings)
    return frozenset(name for name in TRIAL_RESOURCES if name not in typed)


def settings_from_args(args: argparse.Namespace) -> StudySettings:
    space = load_space(args.space, args.dataset)
    check_space_study(space)
    source = Path(space.source)
    document = read_space_file(source)
    if space.filled:
        log.info("%s: its search leaves out %s: every trial trains %s (cxrnets' defaults); search or set them in the "
                 "space to choose", source, ", ".join(space.filled),
                 ", ".join(f"{key} {value}" for key, value in space.filled.items()))
        # study.json holds what the trials train, whatever later defaults are
        document["search"] = {**{key: {"value": value} for key, value in space.filled.items()}, **document["search"]}
    study = {**DEFAULTS, **space.study}
    pick = lambda key: getattr(args, key) if getattr(args, key) is not None else study[key]  # noqa: E731

    datasets = space.values_of("dataset") or [study["dataset"]]  # with --dataset, that one (load_space narrowed)
    document["search"] = {"dataset": {"choice": datasets} if len(datasets) > 1 else {"value": datasets[0]},
                          **{k: v for k, v in document["search"].items() if k != "dataset"}}
    # Of the datasets the study has: a grid space runs every combination unless told otherwise, and a space of
    # choices ends once every configuration has run.
    configurations = parse_space(document, str(source), source.stem).configuration_count()
    if space.sampler == "grid" and "num_samples" not in space.study:
        study["num_samples"] = configurations
    if args.grace_period is None and args.max_epochs is not None and study["grace_period"] > args.max_epochs >= 1:
        log.warning("the space's grace period %d exceeds --max-epochs %d: ASHA's grace period lowered to %d",
                    study["grace_period"], args.max_epochs, args.max_epochs)
        study["grace_period"] = args.max_epochs
    image_size = pick("image_size")
    check_models_fit_image_size(space, image_size, "--image-size" if args.image_size is not None
                                else f"{source}: study.image_size" if "image_size" in space.study
                                else "the default --image-size")
    # A tie-break on the study metric itself breaks nothing.
    tie_break = None if args.tie_break in ("none", pick("metric")) else args.tie_break
    if space.every_trial_draws("image_size") and args.image_size is not None:
        raise CxrError(f"--image-size conflicts with {source}: search.image_size, from which each trial draws its "
                       "size; drop one")
    num_samples = pick("num_samples")
    given = (f"--num-samples {num_samples}" if args.num_samples is not None
             else f"{source}: study.num_samples {num_samples}" if "num_samples" in space.study
             else f"the default of {num_samples} trials")
    if configurations is not None and num_samples > configurations:
        num_samples = configurations
        log.warning("%s has %d configuration%s, fewer than %s: the study runs %d, each configuration once",
                    source, num_samples, "" if num_samples == 1 else "s", given, num_samples)
    if space.sampler == "grid" and num_samples < configurations:
        log.warning("the grid has %d combinations, more than %s: only part of it runs", configurations, given)
    first = space.first_points()
    if len(first) > num_samples:
        log.warning("cover_first %s has %d combinations, more than %s: only the first %d are tried",
                    list(space.cover_first), len(first), given, num_samples)
    where = storage.location(args.storage)
    name = study_name(args.name, space, document, in_uri=storage.is_remote(where))
    settings = StudySettings(
        name=name, optuna_study=name,
        storage=where,
        space=document, space_source=str(source), data_roots=_data_roots(args.data_root, datasets),
        image_size=image_size, num_samples=num_samples, max_epochs=pick("max_epochs"),
        grace_period=pick("grace_period"), reduction_factor=pick("reduction_factor"), metric=pick("metric"),
        mode=metric_mode(pick("metric")), tie_break=tie_break, asha=pick("asha"),
        cpus_per_trial=args.cpus_per_trial, gpus_per_trial=args.gpus_per_trial,
        max_concurrent=args.max_concurrent, max_failures=args.max_failures, seed=args.seed,
        val_fraction=args.val_fraction, test_fraction=args.test_fraction, cache_dir=absolute_cache_dir(args.cache_dir),
        checkpoint_every=args.checkpoint_every, checkpoint_minutes=args.checkpoint_minutes, keep=parse_keep(args.keep),
        dataset_options=parse_dataset_options(args.dataset_option, datasets))
    validate(settings, f"{source}: study.metric" if args.metric is None and "metric" in space.study else "--metric")
    return settings


def study_name(given: str | None, space: SearchSpace, document: dict, in_uri: bool = False) -> str:
    """--name, else the space's name (its name key, else its file's) and the time; CxrError, naming where it
    came from, for a name that cannot be the study's folder under --storage (`in_uri`: a storage URI)."""
    if given is not None:
        _check_study_name(given, f"--name {given!r}", in_uri=in_uri)
        return given
    if "name" in document and not (isinstance(document["name"], str) and document["name"].strip()):
        raise CxrError(f"{space.source}: name {document['name']!r}: the study's default name starts with it, so it "
                       "must be text that names the study (name: lung-grid); change the name key, or give the study "
                       "a --name")
    name = f"{space.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    origin, change = ((f"the name key of {space.source}", "change the name key") if "name" in document
                      else (f"the space file's name, {Path(space.source).name}", "rename the file"))
    _check_study_name(name, f"the study's default name {name!r} (from {origin})",
                      f"{change}, or give the study a --name", in_uri)
    return name


def _check_study_name(name: str, what: str, change: str | None = None, in_uri: bool = False) -> None:
    """CxrError naming `what` if `name` cannot be a study's one folder under --storage; `change`: what to do."""
    if "/" in name or "\\" in name or name.strip() in ("", ".", ".."):
        raise CxrError(f"{what}: a study's name is its one folder under --storage; "
                       + (change or "to group studies, give that group's folder as --storage"))
    storage.check_uri_path(name, what, change or "rename without it", in_uri)


def _data_roots(given: list[str] | None, datasets: list[str]) -> dict[str, str]:
    roots = parse_data_roots(given, datasets)
    for name in datasets:
        if name not in roots:
            if not name.startswith("covid-chestxray"):
                raise CxrError(f"dataset {name!r} needs --data-root (only covid-chestxray has an embedded sample)")
            roots[name] = str(SAMPLE_ROOT)
    return roots


def validate(settings: StudySettings, metric_from: str) -> None:
    """Every check that needs no Ray: run before Ray starts anything. `metric_from`: where the study's metric came
    from, as a message names it (--metric, or the space's study.metric)."""
    check_setting_rules(settings)
    check_seed(settings.seed)
    check_metric_reported(settings.metric, list(settings.data_roots), metric_from)
    if settings.tie_break:
        check_metric_reported(settings.tie_break, list(settings.data_roots), "--tie-break")
    for dataset in settings.data_roots:
        if dataset in MULTILABEL_DATASETS and settings.dataset_options.get(dataset, {}).get("holdout_sources"):
            raise CxrError(f"--dataset-option holdout_sources with the multi-label {dataset}: the analysis evaluates "
                           "held-out sources for single-label studies only, so those images would neither train nor "
                           f"be scored; use {dataset}-3class, or drop holdout_sources")


# ------------------------------------------------------------------ main

def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    settings = None
    try:
        if args.resume is not None:
            if not args.resume.strip():  # `--resume "$STUDY"` with STUDY unset: never a new study
                raise CxrError(f"--resume {args.resume!r}: give the study's folder or URI")
            check_resume_options(argv)
            settings = load_settings(args.resume, "--resume")
            relocate(settings, args.data_root, args.cache_dir)
            resources_from_study_json = resume_trial_resources(settings, args, given_options(argv))
        else:
            settings = settings_from_args(args)
            resources_from_study_json = frozenset()
        # Imported once the options are known good: the driver loads torch and Ray (seconds).
        from study.driver import print_run_end, run_study

        grid = run_study(settings, resume=args.resume is not None, address=args.address, num_cpus=args.num_cpus,
                         verbose=args.verbose, resources_from_study_json=resources_from_study_json)
    except CxrError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # a second Ctrl-C, which Tune's first message invites, or one before Tune ran
        if settings is None or storage.kind(settings_uri(settings.study_uri)) != "file":
            print("\ninterrupted before the study started: nothing to continue", file=sys.stderr)
        else:
            print(f"\ninterrupted; continue the study with\n  python -m study.run --resume {quote(settings.study_uri)}",
                  file=sys.stderr)
        return 130  # as a shell reports a command stopped by Ctrl-C
    except OSError as error:
        if error.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        # Tune stops at the first file it cannot write (often its own, in a staging folder under /tmp/ray)
        print(f"error: {error.filename or 'a file'}: {error.strerror}: the study stopped there; what its trials "
              "reported is kept. Free space there (a study's folder holds a full state per running trial and each "
              "kept trial's weights: see --keep)", file=sys.stderr, end="")
        if settings is not None and storage.kind(settings_uri(settings.study_uri)) == "file":
            print(f", then continue it with\n  python -m study.run --resume {quote(settings.study_uri)}",
                  file=sys.stderr)
        else:
            print(", then start it again", file=sys.stderr)
        return 1
    return print_run_end(settings, grid)


if __name__ == "__main__":
    sys.exit(main())
