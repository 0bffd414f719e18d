"""Run a hyperparameter study of chest X-ray classifiers with Ray Tune, Optuna and ASHA.

    python -m study.run                                   # demo study on the embedded sample (~10 min, 2 CPUs)
    python -m study.run --dataset covid-chestxray-3class --data-root ../shared/data/covid-chestxray-dataset \
        --image-size 64 --num-samples 12 --max-epochs 6
    python -m study.run --space paper --dataset covid-radiography --data-root ~/data/covid-radiography \
        --gpus-per-trial 0.25 --storage s3://bucket/cxr-tune --name paper-grid
    python -m study.run --resume studies/demo-20261125-101500  # continue an interrupted study
    tensorboard --logdir studies/demo-20261125-101500

Before Ray starts any trial the driver checks every option, indexes each
dataset, decodes it once into the node's cache, and makes the study's split
(saved in the study directory; every trial uses it). Then the space's
`cover_first` trials run (e.g. every model with each optimizer), Optuna
proposes the rest, and ASHA stops trials whose best epoch so far is weak.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

# Checkpoints with CheckpointConfig(num_to_keep) make Tune warn at every experiment snapshot
# (see RAY-NOTES.md); the snapshots are what we want, the warnings are noise.
os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "1")

import pandas as pd  # noqa: E402

from cxrnets.cache import build_cache  # noqa: E402
from cxrnets.data import SAMPLE_ROOT, dataset_options_help, load_dataset, parse_dataset_options  # noqa: E402
from cxrnets.errors import CxrError  # noqa: E402
from cxrnets.metrics import majority_baseline  # noqa: E402
from cxrnets.splits import describe, make_split  # noqa: E402
from cxrnets.training import SPLIT_COLUMNS, align_split  # noqa: E402
from study import storage  # noqa: E402
from study.checkpoints import WEIGHTS_DIR, CheckpointPolicy, WeightsKeeper, parse_keep, prune_weights  # noqa: E402
from study.results import ResultsTable, read_results, read_trial_events  # noqa: E402
from study.settings import (CHECKPOINT_EVERY, CHECKPOINT_MINUTES, DEFAULTS, METRICS, TIE_BREAK,  # noqa: E402
                            StudySettings, load_settings, metric_mode, read_split, save_settings, settings_uri,
                            split_uri)
from study.space import load_space  # noqa: E402
from study.tables import comparison_table, markdown_table  # noqa: E402
from study.trainable import (TrialContext, dataset_missing_message, storage_not_shared_message,  # noqa: E402
                             train_trial)

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
    add("--dataset", default=None,
        help="dataset name; overrides the space's (default: the space's, else covid-chestxray-3class)")
    add("--data-root", action="append", default=None, metavar="[DATASET=]PATH",
        help="where a dataset lies; repeat as DATASET=PATH when the space searches over datasets "
             "(default: the embedded sample for covid-chestxray datasets)")
    add("--dataset-option", action="append", default=None, metavar="[DATASET:]KEY=VALUE",
        help="a dataset loader's option, repeatable; saved with the study, reused on --resume and by the analysis "
             f"(e.g. patient_column=patientid for a csv dataset). Options: {dataset_options_help()} "
             "(default: none)")
    add("--num-samples", type=int, default=None,
        help="trials to run (default: the space's, else every combination for a grid space, else 10)")
    add("--max-epochs", type=int, default=None, help="epochs of a trial that ASHA never stops (default: space's, else 4)")
    add("--grace-period", type=int, default=None,
        help="epochs every trial gets before ASHA may stop it; ASHA judges a trial by its best epoch so far "
             "(default: the space's, else 1)")
    add("--reduction-factor", type=int, default=None,
        help="ASHA keeps 1/this of trials at each rung (default: the space's, else 2)")
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
             "lost node or an interrupted study continues; a trial's best weights are written whenever its best "
             "epoch improves, whatever this says")
    add("--checkpoint-minutes", type=float, default=CHECKPOINT_MINUTES,
        help="also write a full state once this many minutes have passed since the last one (long epochs)")
    add("--keep", default="1", help="best weights kept after the study: each model's K best trials on the "
        "study metric (what study.analyze --top-k K can evaluate), or 'all'")
    add("--name", default=None, help="study name, the folder under --storage (default: <space>-<date-time>)")
    add("--seed", type=int, default=0, help="seed of the split, the sampler and the trials")
    add("--cache-dir", default=None,
        help="decode-once image cache on each node (default: $CXR_TUNE_CACHE, else ~/.cache/cxr-tune)")
    add("--resume", default=None, metavar="STUDY_DIR",
        help="continue the study in this directory with the settings in its study.json "
             "(only --address and --num-cpus still apply) (default: start a new study)")
    add("--address", default=None, help="Ray cluster address (default: RAY_ADDRESS, else a cluster running here, "
        "else a new local instance)")
    add("--num-cpus", type=int, default=None, help="CPUs of a new local Ray instance (default: all)")
    return parser


def settings_from_args(args: argparse.Namespace) -> StudySettings:
    space = load_space(args.space)
    source = Path(space.source)
    document = _read_yaml(source)
    study = {**DEFAULTS, **space.study}
    if space.sampler == "grid" and "num_samples" not in space.study:
        study["num_samples"] = len(space.grid())  # a grid space runs every combination unless told otherwise
    pick = lambda key: getattr(args, key) if getattr(args, key) is not None else study[key]  # noqa: E731

    datasets = space.values_of("dataset") or [args.dataset or study["dataset"]]
    if args.dataset:
        datasets = [args.dataset]
        document["search"] = {k: v for k, v in document["search"].items() if k != "dataset"}
    document["search"] = {"dataset": {"choice": datasets} if len(datasets) > 1 else {"value": datasets[0]},
                          **{k: v for k, v in document["search"].items() if k != "dataset"}}
    if args.grace_period is None and args.max_epochs is not None and study["grace_period"] > args.max_epochs:
        log.warning("the space's grace period %d exceeds --max-epochs %d: ASHA's grace period lowered to %d",
                    study["grace_period"], args.max_epochs, args.max_epochs)
        study["grace_period"] = args.max_epochs
    image_size = pick("image_size")
    # A tie-break on the study metric itself breaks nothing.
    tie_break = None if args.tie_break in ("none", pick("metric")) else args.tie_break
    if space.values_of("image_size") and args.image_size is not None:
        raise CxrError("--image-size conflicts with the space's image_size dimension; drop one")
    settings = StudySettings(
        name=args.name or f"{space.name}-{time.strftime('%Y%m%d-%H%M%S')}",
        storage=storage.location(args.storage),
        space=document, space_source=str(source), data_roots=_data_roots(args.data_root, datasets),
        image_size=image_size, num_samples=pick("num_samples"), max_epochs=pick("max_epochs"),
        grace_period=pick("grace_period"), reduction_factor=pick("reduction_factor"), metric=pick("metric"),
        mode=metric_mode(pick("metric")), tie_break=tie_break, cpus_per_trial=args.cpus_per_trial,
        gpus_per_trial=args.gpus_per_trial, max_concurrent=args.max_concurrent, max_failures=args.max_failures,
        seed=args.seed, cache_dir=args.cache_dir, checkpoint_every=args.checkpoint_every,
        checkpoint_minutes=args.checkpoint_minutes, keep=parse_keep(args.keep),
        dataset_options=parse_dataset_options(args.dataset_option, datasets))
    validate(settings)
    return settings


def _read_yaml(path: Path) -> dict:
    import yaml

    return yaml.safe_load(path.read_text())


def _data_roots(given: list[str] | None, datasets: list[str]) -> dict[str, str]:
    roots: dict[str, str] = {}
    for item in given or []:
        name, sep, path = item.partition("=")
        if sep and name in datasets:
            roots[name] = path
        elif len(datasets) == 1 and not (sep and name in _all_dataset_names()):
            roots[datasets[0]] = item
        else:
            raise CxrError(f"--data-root {item!r}: with several datasets, write DATASET=PATH for one of {datasets}")
    for name in datasets:
        if name not in roots:
            if not name.startswith("covid-chestxray"):
                raise CxrError(f"dataset {name!r} needs --data-root (only covid-chestxray has an embedded sample)")
            roots[name] = str(SAMPLE_ROOT)
        roots[name] = str(Path(roots[name]).expanduser().resolve())
    return roots


def _all_dataset_names() -> tuple[str, ...]:
    from cxrnets.data import DATASET_NAMES

    return DATASET_NAMES


def validate(settings: StudySettings) -> None:
    """Every check that needs no Ray: run before Ray starts anything."""
    space = settings.search_space()
    for key in ("num_samples", "max_epochs", "grace_period", "image_size"):
        if getattr(settings, key) < 1:
            raise CxrError(f"--{key.replace('_', '-')} must be at least 1, got {getattr(settings, key)}")
    if settings.reduction_factor < 2:
        raise CxrError(f"--reduction-factor must be at least 2, got {settings.reduction_factor}")
    if settings.grace_period > settings.max_epochs:
        raise CxrError(f"--grace-period {settings.grace_period} exceeds --max-epochs {settings.max_epochs}")
    if settings.cpus_per_trial <= 0 or settings.gpus_per_trial < 0:
        raise CxrError("--cpus-per-trial must be positive and --gpus-per-trial non-negative")
    if settings.gpus_per_trial > 1 and settings.gpus_per_trial != int(settings.gpus_per_trial):
        raise CxrError(f"--gpus-per-trial {settings.gpus_per_trial}: above 1 it must be a whole number of GPUs")
    if settings.max_concurrent is not None and settings.max_concurrent < 1:
        raise CxrError("--max-concurrent must be at least 1")
    if settings.max_failures < 0:
        raise CxrError("--max-failures must be 0 or more")
    if settings.checkpoint_every < 1 or not settings.checkpoint_minutes > 0:
        raise CxrError(f"--checkpoint-every ({settings.checkpoint_every}) must be at least 1 and "
                       f"--checkpoint-minutes ({settings.checkpoint_minutes:g}) above 0")
    from cxrnets.models import check_image_size

    for model in space.values_of("model"):
        check_image_size(model, settings.image_size)
    if space.sampler == "grid" and settings.num_samples < len(space.grid()):
        log.warning("the grid has %d combinations but --num-samples is %d: only part of it runs",
                    len(space.grid()), settings.num_samples)
    first = space.first_points()
    if len(first) > settings.num_samples:
        log.warning("cover_first %s has %d combinations but --num-samples is %d: only the first %d are tried",
                    list(space.cover_first), len(first), settings.num_samples, settings.num_samples)


def runs_on_this_machine(address: str | None) -> bool:
    """True when the study's trials run on this machine alone: a local Ray instance, not a cluster.

    A cluster's head may have no GPU (cluster.yaml: the GPUs are on autoscaled workers), so
    --gpus-per-trial is checked against this machine only when no cluster is joined.
    """
    import ray

    if ray.is_initialized():
        return len(_alive_nodes()) < 2
    return cluster_address(address) is None


def check_local_resources(settings: StudySettings, cores: int | None = None) -> None:
    """On a machine that runs the study itself, refuse what it cannot give (cores: the CPUs Ray may use)."""
    import torch

    machine = os.cpu_count() or 1
    cores = min(cores, machine) if cores else machine
    if settings.cpus_per_trial > cores:
        where = "this machine" if cores == machine else "the local Ray instance (--num-cpus)"
        raise CxrError(f"--cpus-per-trial {settings.cpus_per_trial:g} exceeds the {cores} CPU cores of {where}: "
                       "no trial could ever start")
    if settings.gpus_per_trial > 0 and torch.cuda.device_count() == 0:
        raise CxrError(f"--gpus-per-trial {settings.gpus_per_trial:g} asked for, but this machine has no CUDA GPU: "
                       "drop the flag to run on CPU, or pass --address of a cluster with GPUs")
    if settings.gpus_per_trial > torch.cuda.device_count():
        raise CxrError(f"--gpus-per-trial {settings.gpus_per_trial:g} exceeds the "
                       f"{torch.cuda.device_count()} GPU(s) of this machine")


# ------------------------------------------------------------------ data, once per study

def prepare_splits(settings: StudySettings, resume: bool) -> dict[str, pd.DataFrame]:
    """Index and decode every dataset once, and make (or, resuming, reread) the study's split of each."""
    splits = {}
    for dataset, root in settings.data_roots.items():
        index = load_dataset(dataset, root, **settings.dataset_options.get(dataset, {}))
        cache = build_cache(index, settings.image_size, settings.cache_dir)
        frame = cache.index.frame.assign(sha1=cache.sha1)
        uri = split_uri(settings.study_uri, dataset)
        if resume:
            split = align_split(read_split(uri), frame, Path(uri))
        else:
            split = make_split(frame, cache.index.stratum(), seed=settings.seed)
            storage.write_csv(uri, split[SPLIT_COLUMNS])
        targets = cache.index.targets()
        rows = {name: (split["split"] == name).to_numpy() for name in ("train", "val")}
        baseline = majority_baseline(targets[rows["train"]], targets[rows["val"]], cache.index.multilabel,
                                     len(cache.index.classes))
        log.info("%s split: %s; majority-class baseline val/f1_macro %.3f", dataset, describe(split),
                 baseline["f1_macro"])
        splits[dataset] = split[SPLIT_COLUMNS]
        settings.baselines[dataset] = baseline
    return splits


# ------------------------------------------------------------------ Ray

def cluster_address(address: str | None) -> str | None:
    """The Ray cluster a study joins: --address, else RAY_ADDRESS, else the cluster that `ray start`
    (or `ray up`) started on this machine; None when there is none and the study starts its own instance.

    Only a cluster recorded by `ray start` counts as "running here": Ray's address="auto" would also
    join the private instance of any other process's ray.init() (another study, a test run), which
    dies with that process.
    """
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        return address
    from ray._private.utils import read_ray_address  # the file `ray start` writes under RAY_TMPDIR

    return read_ray_address() or None


def connect(address: str | None, num_cpus: int | None) -> bool:
    """Join a cluster or start a local instance; True if this call started a local one."""
    import ray

    if ray.is_initialized():
        return False
    address = cluster_address(address)
    if address:
        try:
            ray.init(address=address)
        except ConnectionError as error:
            raise CxrError(f"cannot reach the Ray cluster at {address} ({error}); check --address or "
                           "RAY_ADDRESS, or run `ray stop` if a cluster started here is gone") from error
        log.info("joined the Ray cluster at %s", address)
        return False
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(num_cpus=num_cpus, include_dashboard=False)
    return True


def _alive_nodes() -> list[str]:
    """Node ids of the Ray cluster's live nodes."""
    import ray

    return [node["NodeID"] for node in ray.nodes() if node["Alive"]]


def _paths_seen_by_nodes(node_ids: list[str], paths: list[str], timeout: float = 120) -> dict[str, list[bool]]:
    """Whether each path exists, as seen from each node: a zero-CPU task pinned to every node."""
    import ray
    from ray.exceptions import GetTimeoutError
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    @ray.remote(num_cpus=0)
    def look(paths: list[str]) -> list[bool]:
        return [Path(p).exists() for p in paths]

    refs = {node_id: look.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False),
                                  max_retries=0).remote(paths) for node_id in node_ids}
    seen = {}
    for node_id, ref in refs.items():
        try:
            seen[node_id] = ray.get(ref, timeout=timeout)
        except GetTimeoutError as error:
            raise CxrError(f"node {node_id[:8]} did not answer within {timeout:.0f} s whether it sees the "
                           "study's storage and datasets; check `ray status` and try again") from error
    return seen


def check_cluster(settings: StudySettings, joined: bool = False) -> None:
    """On a multi-node cluster, every node must see the study's storage and the datasets.

    Only the nodes alive now are checked; a node that joins later (an autoscaled worker) is checked
    by each trial it runs (see study.trainable). `joined`: the study joined a cluster rather than
    starting its own Ray, so nodes may join later.
    """
    nodes = _alive_nodes()
    local_storage = not storage.is_remote(settings.storage)
    if len(nodes) < 2:
        if joined and local_storage:
            log.warning("--storage %s is a local folder and the cluster has one node now: a node that joins "
                        "later must see it at the same path (a shared file system), or its trials fail; "
                        "on a cloud cluster use --storage s3://...", settings.storage)
        return
    marker = settings_uri(settings.study_uri) if local_storage else None
    wanted = list(settings.data_roots.values()) + ([marker] if marker else [])
    for node_id, seen in _paths_seen_by_nodes(nodes, wanted).items():
        for path, ok in zip(wanted, seen):
            if ok:
                continue
            if path == marker:
                raise CxrError(storage_not_shared_message(settings.storage, node_id))
            raise CxrError(dataset_missing_message(path, node_id))


def trial_name(trial) -> str:
    config = trial.config
    parts = [config.get("model", "?"), config.get("optimizer", "?"), f"lr{config.get('lr', 0):.0e}",
             f"bs{config.get('batch_size', '?')}"]
    if config.get("pretrained"):
        parts.append("pretrained")
    if len(str(config.get("dataset", ""))) and "dataset" in config:
        parts.insert(0, config["dataset"])
    return "_".join(str(p) for p in parts)


def trial_dirname(trial) -> str:
    return f"{trial.trial_id}_{trial_name(trial)}"


def trial_context(settings: StudySettings, splits: dict[str, pd.DataFrame], weights_uri: str | None = None
                  ) -> TrialContext:
    """What every trial of the study shares; `weights_uri`: where trials write their best weights
    (default: the study folder; a seed-repeat run of study.confirm writes under its own folder)."""
    return TrialContext(
        data_roots=settings.data_roots, splits=splits, metric=settings.metric, mode=settings.mode,
        dataset_options=settings.dataset_options,
        study_uri=weights_uri or settings.study_uri, storage=settings.storage,
        settings_file=None if storage.is_remote(settings.storage) else settings_uri(settings.study_uri),
        checkpoint_policy=CheckpointPolicy(settings.checkpoint_every, settings.checkpoint_minutes),
        defaults={"image_size": settings.image_size, "epochs": settings.max_epochs, "seed": settings.seed,
                  "cache_dir": settings.cache_dir, "device": "auto"})


def build_tuner(settings: StudySettings, splits: dict[str, pd.DataFrame], resume: bool):
    from ray import tune

    from study.asha import BestEpochASHA
    from study.searcher import BestEpochOptunaSearch

    space = settings.search_space()
    trainable = tune.with_resources(tune.with_parameters(train_trial, context=trial_context(settings, splits)),
                                    {"cpu": settings.cpus_per_trial, "gpu": settings.gpus_per_trial})
    if resume:
        return tune.Tuner.restore(settings.study_uri, trainable, resume_unfinished=True, resume_errored=True)
    first = space.first_points()
    if first:
        log.info("the first %d trials cover every combination of %s; then %s proposes",
                 min(len(first), settings.num_samples), " x ".join(space.cover_first), space.sampler.upper())
    searcher = BestEpochOptunaSearch(space, metric=settings.metric, mode=settings.mode, points_to_evaluate=first or None,
                            sampler=space.make_sampler(settings.seed), study_name=settings.name)
    scheduler = BestEpochASHA(time_attr="training_iteration", max_t=settings.max_epochs,
                              grace_period=settings.grace_period, reduction_factor=settings.reduction_factor,
                              tie_break=settings.tie_break, tie_break_mode=metric_mode(settings.tie_break or ""))
    return tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            metric=settings.metric, mode=settings.mode, search_alg=searcher, scheduler=scheduler,
            num_samples=settings.num_samples, max_concurrent_trials=settings.max_concurrent, reuse_actors=True,
            trial_name_creator=trial_name, trial_dirname_creator=trial_dirname),
        run_config=tune.RunConfig(
            name=settings.name, storage_path=settings.storage,
            callbacks=[ResultsTable(settings.study_uri),
                       WeightsKeeper(settings.study_uri, settings.metric, settings.mode, settings.keep)],
            failure_config=tune.FailureConfig(max_failures=settings.max_failures),
            # Full states only (best weights are the trainable's own files): the newest one is all a resume needs.
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            verbose=1),
    )


# ------------------------------------------------------------------ main

def run_study(settings: StudySettings, resume: bool = False, address: str | None = None,
              num_cpus: int | None = None):
    """Check, prepare and run one study; returns Tune's ResultGrid."""
    started_here = False
    if not resume:
        storage.check_writable(settings.study_uri)
    local = runs_on_this_machine(address)
    if local:
        check_local_resources(settings, cores=num_cpus)
    splits = prepare_splits(settings, resume)
    if not resume:
        save_settings(settings)
    import ray

    started_here = connect(address, num_cpus)
    try:
        check_cluster(settings, joined=not local)
        tuner = build_tuner(settings, splits, resume)
        started = time.perf_counter()
        results = tuner.fit()
        log.info("study finished in %.0f s", time.perf_counter() - started)
        events = read_trial_events(settings.study_uri)
        prune_weights(settings.study_uri, read_results(settings.study_uri),
                      events.loc[events["event"] == "completed", "trial_id"], settings.keep, settings.metric,
                      settings.mode)
    finally:
        if started_here:
            ray.shutdown()
    return results


def print_summary(settings: StudySettings) -> None:
    results = read_results(settings.study_uri)
    if results.empty:
        print("no trial reported an epoch")
        return
    table = comparison_table(results, settings.metric, settings.mode)
    print(f"\nBest trial per model (chosen on {settings.metric}, validation split):\n")
    print(markdown_table(table))
    for dataset, baseline in settings.baselines.items():
        print(f"\nmajority-class baseline on {dataset}: val/f1_macro {baseline['f1_macro']:.3f}, "
              f"val/accuracy {baseline['accuracy']:.3f}")
    weights = storage.total_bytes(storage.join(settings.study_uri, WEIGHTS_DIR))
    print(f"\nstudy:       {settings.study_uri} ({storage.total_bytes(settings.study_uri) / 1e6:,.0f} MB, of which "
          f"{weights / 1e6:,.0f} MB best weights of "
          + ("every trial" if settings.keep == "all" else f"each model's {settings.keep} best trial(s)") + ", --keep)")
    print(f"results:     {settings.study_uri}/results (Parquet, every trial and epoch)")
    print(f"tensorboard: tensorboard --logdir {settings.study_uri}")
    print(f"analysis:    python -m study.analyze {settings.study_uri}")


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = build_parser().parse_args(argv)
    try:
        if args.resume:
            settings = load_settings(args.resume, "--resume")
        else:
            settings = settings_from_args(args)
        run_study(settings, resume=bool(args.resume), address=args.address, num_cpus=args.num_cpus)
    except CxrError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print_summary(settings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
