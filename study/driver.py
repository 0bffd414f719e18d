"""Run one study: check this machine or the cluster, prepare the data once, then let Ray Tune run the trials.

`python -m study.run` (the command line, study/run.py) builds the study's settings and calls
`run_study`; `study.confirm` reuses the cluster and data steps for its seed repeats.

Before Ray starts any trial the driver checks every option, indexes each
dataset, decodes it once into the node's cache, and makes the study's split
(saved in the study directory; every trial uses it). Then the space's
`cover_first` trials run (e.g. every model with each optimizer), Optuna
proposes the rest, and ASHA stops trials whose best epoch so far is weak.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import pickletools
import select
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from shlex import quote

# Checkpoints with CheckpointConfig(num_to_keep) make Tune warn at every experiment snapshot
# (see RAY-NOTES.md); the snapshots are what we want, the warnings are noise.
os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")

import optuna  # noqa: E402
import pandas as pd  # noqa: E402
import ray  # noqa: E402
from ray import tune  # noqa: E402
from ray.tune.search import ConcurrencyLimiter  # noqa: E402

from cxrnets.cache import build_cache, default_cache_root  # noqa: E402
from cxrnets.data import load_dataset  # noqa: E402
from cxrnets.errors import CxrError  # noqa: E402
from cxrnets.fingerprints import FINGERPRINT_SIZE, NEAR_IDENTICAL_BITS, cache_fingerprints  # noqa: E402
from cxrnets.metrics import majority_baseline  # noqa: E402
from cxrnets.models import fetch_imagenet_weights  # noqa: E402
from cxrnets.splits import describe, make_split, split_digest  # noqa: E402
from cxrnets.training import (SPLIT_COLUMNS, PreparedData, align_split, named_counts,  # noqa: E402
                              patients_per_split, undecodable_images)
from study import storage  # noqa: E402
from study.asha import BestEpochASHA, PromotingASHA, PromotionGate, RungSnapshot  # noqa: E402
from study.checkpoints import (SNAPSHOT_PREFIX, WEIGHTS_DIR, CheckpointPolicy, WeightsKeeper,  # noqa: E402
                               TuneStateFile, forget_lost_trials, newest_snapshot, newest_tune_files,
                               prune_weights, snapshot_trials)
from study.console import StudyConsole  # noqa: E402
from study.lock import driver_lock  # noqa: E402
from study.results import ResultsTable, read_results, read_trial_events, unfinished_search  # noqa: E402
from study.searcher import (BestEpochOptunaSearch, StudySearchGenerator,  # noqa: E402
                            restore_storage_file, storage_file_uri, storage_url, working_file)
from study.settings import (StudySettings, check_split_digest, metric_mode, read_split,  # noqa: E402
                            refuse_existing_study, resumed_study, save_settings, settings_uri, split_uri)
from study.space import SearchSpace, config_name  # noqa: E402
from study.tables import comparison_table, diverged_cells, markdown_table  # noqa: E402
from study.tensorboard import StudyTensorBoard, tensorboard_line, write_experiment  # noqa: E402
from study.trainable import (TrialContext, TrialTrainable, dataset_missing_message,  # noqa: E402
                             storage_not_shared_message)

log = logging.getLogger(__name__)

CLUSTER_CONNECT_SECONDS = 10
TUNER_FILE = "tuner.pkl"  # Tune's pickle of a run's Tuner, which Tuner.restore reads
# What Tune saves beside each snapshot of a study's run, which a resume reads (check_tune_state)
STUDY_STATE_FILES = (TuneStateFile("search_gen_state-", ".json", "how many trials the search has suggested"),
                     TuneStateFile("searcher-state-", ".pkl", "the Optuna searcher's trials and what they reported"),
                     TuneStateFile("callback-states-", ".pkl", "ASHA's rungs and each trial's best epoch"))

# ------------------------------------------------------------------ this machine

def runs_on_this_machine(address: str | None) -> bool:
    """True when the study's trials run on this machine alone: a local Ray instance, not a cluster.

    A cluster's head may have no GPU (cluster.yaml: the GPUs are on autoscaled workers), so
    --gpus-per-trial is checked against this machine only when no cluster is joined. An address of no form Ray
    takes is refused (CxrError) before anything is written, whether or not Ray runs in this process already.
    """
    cluster = cluster_address(address)
    if cluster is not None:
        cluster.host_port()
    if ray.is_initialized():
        return len(_alive_nodes()) < 2
    return cluster is None


def check_local_resources(settings: StudySettings, cores: int | None = None,
                          from_study_json: frozenset[str] = frozenset()) -> None:
    """On a machine that runs the study itself, refuse what it cannot give (cores: the CPUs Ray may use).
    `from_study_json`: the resource settings (cpus_per_trial, gpus_per_trial) a resume read from the study's
    study.json rather than from flags typed now; a refusal says so, and which flag overrides them."""
    import torch

    def flag(name: str) -> str:
        option = f"--{name.replace('_', '-')}"
        origin = f" (the study's, from its study.json; {option} overrides it)" if name in from_study_json else ""
        return f"{option} {getattr(settings, name):g}{origin}"

    if cores is not None and cores < 1:
        raise CxrError(f"--num-cpus {cores}: the local Ray instance needs at least 1 CPU to run a trial")
    machine = os.cpu_count() or 1
    cores = min(cores, machine) if cores is not None else machine
    if settings.cpus_per_trial > cores:
        where = "this machine" if cores == machine else "the local Ray instance (--num-cpus)"
        raise CxrError(f"{flag('cpus_per_trial')} exceeds the {cores} CPU cores of {where}: no trial could ever "
                       "start")
    if settings.gpus_per_trial == 0 and torch.cuda.device_count() > 0:
        log.warning("this machine has %d CUDA GPU(s), which the trials leave alone (--gpus-per-trial 0): pass "
                    "--gpus-per-trial 1, or a fraction such as 0.25 to share a card, to train on them",
                    torch.cuda.device_count())
    if settings.gpus_per_trial > 0 and torch.cuda.device_count() == 0:
        on_cpu = "pass --gpus-per-trial 0" if "gpus_per_trial" in from_study_json else "drop the flag"
        raise CxrError(f"{flag('gpus_per_trial')} asked for, but this machine has no CUDA GPU: {on_cpu} to run on "
                       "CPU, or pass --address of a cluster with GPUs")
    if settings.gpus_per_trial > torch.cuda.device_count():
        raise CxrError(f"{flag('gpus_per_trial')} exceeds the {torch.cuda.device_count()} GPU(s) of this machine")


# ------------------------------------------------------------------ data, once per study

def prepare_splits(settings: StudySettings, resume: bool) -> dict[str, pd.DataFrame]:
    """Index and decode every dataset once, and make (or, resuming, reread) the study's split of each. A new
    study's splits are written by save_new_study, which run_study calls once it holds the study's lock: nothing
    is written here."""
    # Every dataset indexed (its root and layout checked) before any is decoded, which may take long.
    indexes = {dataset: load_dataset(dataset, root, **settings.dataset_options.get(dataset, {}))
               for dataset, root in settings.data_roots.items()}
    splits = {}
    for dataset, index in indexes.items():
        cache = build_cache(index, settings.image_size, settings.cache_dir)
        frame = cache.index.frame.assign(sha1=cache.sha1)
        if resume:
            uri = split_uri(settings.study_uri, dataset)
            saved = read_split(uri)
            check_split_digest(settings, dataset, saved, uri)
            split = align_split(saved, frame, uri, undecodable_images(indexes[dataset], cache))
        else:
            split = make_split(frame, cache.index.stratum(), settings.val_fraction, settings.test_fraction,
                               settings.seed, cache_fingerprints(cache))
        targets = cache.index.targets()
        rows = {name: (split["split"] == name).to_numpy() for name in ("train", "val")}
        baseline = majority_baseline(targets[rows["train"]], targets[rows["val"]], cache.index.multilabel,
                                     len(cache.index.classes))
        log.info("%s split: %s; majority-class baseline val/f1_macro %.3f", dataset, describe(split),
                 baseline["f1_macro"])
        if not resume:
            warn_of_thin_classes(dataset, PreparedData(cache, targets, split), settings)
            warn_of_full_batches(dataset, int(rows["train"].sum()), settings)
        splits[dataset] = split[SPLIT_COLUMNS]
        settings.baselines[dataset] = baseline
    if not resume:
        settings.splits_join_near_identical = True
        settings.splits_near_identical_bits = NEAR_IDENTICAL_BITS
        settings.splits_fingerprint_size = FINGERPRINT_SIZE
    return splits


def save_new_study(settings: StudySettings, splits: dict[str, pd.DataFrame]) -> None:
    """Write a new study's split files (`splits`, from prepare_splits), recording their digests, then its
    study.json. Called while holding the study's lock (driver_lock): CxrError, writing nothing, if another driver
    started a study in the folder since run_study first looked."""
    refuse_existing_study(settings.study_uri, just_started=True)
    for dataset, split in splits.items():
        uri = split_uri(settings.study_uri, dataset)
        storage.write_csv(uri, split)
        settings.split_digests[dataset] = split_digest(read_split(uri))
    save_settings(settings)


def fetch_pretrained_weights(settings: StudySettings) -> None:
    """Trials that start from ImageNet weights read them from torchvision's cache: fetched here once, before
    Ray starts, rather than by every trial at once; where they cannot be, the study stops with the file and
    the URL to fetch it from (not with each trial's traceback)."""
    cases = settings.search_space().cases(("model", "pretrained"))
    for model in dict.fromkeys(case["model"] for case in cases if case.get("pretrained") is True):
        try:
            fetch_imagenet_weights(model)
        except CxrError as error:
            raise CxrError(f"{error}; or train {model} from scratch only (pretrained: false for it in "
                           f"{settings.space_source})") from error


def warn_of_thin_classes(dataset: str, data: PreparedData, settings: StudySettings) -> None:
    """Warn, before anything trains, of a class with no patient on the training split, and of one with fewer
    than 2 on the validation or test split."""
    patients = patients_per_split(data)
    untrained = patients[patients["train"] == 0]
    if len(untrained):
        warn_of_untrained_classes(dataset, untrained, settings, data.index.multilabel)
    trained = patients[patients["train"] > 0]
    consequences = {
        "val": ("--val-fraction", settings.val_fraction,
                "ASHA and Optuna, choosing on an average over classes (macro F1, ...), choose on that one "
                "patient's images",
                "the averages over classes (macro F1, ...) that ASHA and Optuna choose on count such a class as 0 "
                "whatever the trial: nothing to choose on for it"),
        "test": ("--test-fraction", settings.test_fraction,
                 "the analysis cannot give the averages over classes (macro F1, ...) an interval",
                 "the analysis has no image to test such a class on: its averages over classes (macro F1, ...) "
                 "count it as 0 whatever the model"),
    }
    for part, (flag, fraction, on_one, on_none) in consequences.items():
        one = trained[trained[part] == 1]
        if len(one):
            log.warning("%s: fewer than 2 patients on the %s split for %s: %s; a larger %s (now %g) gives the "
                        "class more", dataset, part, ", ".join(f"{name} (1)" for name in one.index), on_one, flag,
                        fraction)
        none = trained[trained[part] == 0]
        if len(none):
            log.warning("%s: no patient on the %s split for %s: %s; a larger %s (now %g) may give the class some",
                        dataset, part, ", ".join(none.index), on_none, flag, fraction)


def warn_of_full_batches(dataset: str, train_images: int, settings: StudySettings) -> None:
    """Warn of the space's batch sizes that hold the whole training split of `dataset` (`train_images`): each
    trains one full-batch step per epoch, so trials that differ only in them train identically."""
    full: list[str] = []
    for dimension in settings.search_space().dimensions:
        if dimension.name != "batch_size" or dataset not in dimension.when.get("dataset", (dataset,)):
            continue
        if dimension.kind == "int":
            low, high = dimension.args
            if high >= train_images:
                full.append(f"{max(low, train_images)} to {high} (of int [{low}, {high}])")
        else:
            full += [str(size) for size in dimension.values() if size >= train_images]
    full = list(dict.fromkeys(full))
    if full:
        log.warning("%s: batch_size %s in %s %s at least the training split's %d images: every batch size from %d "
                    "up trains one step per epoch on the whole split (full-batch), so trials that differ only in "
                    "it train identically", dataset, ", ".join(full), settings.space_source,
                    "are" if len(full) > 1 or " to " in full[0] else "is", train_images, train_images)


def warn_of_untrained_classes(dataset: str, untrained: pd.DataFrame, settings: StudySettings,
                              multilabel: bool) -> None:
    """Warn of the classes no training patient holds (`untrained`: their patients on train/val/test): no trial
    can learn them, yet the averages over classes count them wherever they have images."""
    them, they_have = ("it", "it has") if len(untrained) == 1 else ("them", "they have")
    chosen_on_macro = "macro" in settings.metric
    if chosen_on_macro:
        counted_on = (f"the validation split, which ASHA and Optuna choose on (--metric {settings.metric}), and the "
                      "test split, which the analysis reports")
    else:
        counted_on = "the test split, which the analysis reports, and the validation split"
    remedies = [f"add images of more patients of {them}"]
    several = [name for name, row in untrained.iterrows() if row.sum() > 1]
    if several:
        remedies.append(f"try another --seed, which may put a patient of {', '.join(several)} on train")
    if chosen_on_macro:
        micro = "val/f1_micro" if multilabel else "val/accuracy"
        remedies.append(f"choose on --metric {micro}, which weighs each class by its images")
    remedy = ", ".join(remedies[:-1]) + ", or " + remedies[-1] if len(remedies) > 1 else remedies[0]
    log.warning("%s: no patient on the train split for %s (patients on train/val/test): no trial can learn %s, yet "
                "the averages over classes (macro F1, ...) count %s wherever %s images, on %s; %s", dataset,
                named_counts(untrained), them, them, they_have, counted_on, remedy)


# ------------------------------------------------------------------ Ray

def study_console(settings: StudySettings) -> StudyConsole:
    """The study's status line; its trials are named without the dataset unless the study covers several."""
    return StudyConsole(settings.num_samples, settings.max_epochs, settings.metric, settings.mode,
                        name_of=None if len(settings.data_roots) == 1 else str, run_uri=settings.study_uri,
                        tie_break=settings.tie_break)


@dataclass(frozen=True)
class ClusterAddress:
    """The address of the Ray cluster a study joins, and where it came from, which messages about it name."""
    address: str
    origin: str  # "--address", "RAY_ADDRESS", or that `ray start` recorded it in its address file

    @property
    def given(self) -> bool:
        """Whether the address was given (--address or RAY_ADDRESS), not found where `ray start` recorded it."""
        return self.origin in ("--address", "RAY_ADDRESS")

    def host_port(self) -> str | None:
        """HOST:PORT of the address, None for a form of Ray's own ("auto", "local"); CxrError for any other."""
        if self.address in ("auto", "local"):
            return None
        host, _, port = self.address.removeprefix("ray://").rpartition(":")
        if not host or not port.isdigit():
            subject = f"{self.origin} {self.address}" if self.given else f"{self.address} ({self.origin})"
            raise CxrError(f"{subject}: give host:port (the head's GCS port, 6379 by default) or ray://host:port "
                           "(its Ray Client port, 10001 by default)")
        return f"{host}:{port}"

    def remedy(self) -> str:
        """What to do when nothing answers at the address."""
        if self.given:
            return f"check {self.origin}"
        return "run `ray stop` if the cluster that `ray start` started here is gone, or pass --address"


def cluster_address(address: str | None) -> ClusterAddress | None:
    """The Ray cluster a study joins: --address, else RAY_ADDRESS, else the cluster that `ray start`
    (or `ray up`) started on this machine; None when there is none and the study starts its own instance.

    Only a cluster recorded by `ray start` counts as "running here": Ray's address="auto" would also
    join the private instance of any other process's ray.init() (another study, a test run), which
    dies with that process.
    """
    if address:
        return ClusterAddress(address, "--address")
    if os.environ.get("RAY_ADDRESS"):
        return ClusterAddress(os.environ["RAY_ADDRESS"], "RAY_ADDRESS")
    from ray._common.utils import get_ray_address_file  # the file `ray start` writes under RAY_TMPDIR

    recorded = Path(get_ray_address_file(None))
    address = recorded.read_text().strip() if recorded.is_file() else ""
    return ClusterAddress(address, f"recorded by `ray start` on this machine in {recorded}") if address else None


def check_cluster_reachable(address: str | None, num_cpus: int | None = None) -> None:
    """Refuse, in seconds and before anything is written, a cluster address that is no address, or that
    nothing answers on: ray.init retries such an address for minutes, printing only its own warnings. And
    --num-cpus, which sizes a Ray instance started here, for a study that joins a cluster."""
    cluster = cluster_address(address)
    if cluster is None:
        return
    host_port = cluster.host_port()
    if ray.is_initialized():
        return
    if num_cpus is not None:
        raise CxrError(f"--num-cpus {num_cpus} sizes the Ray instance a study starts on this machine; it joins the "
                       f"cluster at {cluster.address} ({cluster.origin}), whose nodes give their own CPUs: drop "
                       "--num-cpus")
    if host_port is None:
        return
    error = connection_error(host_port, CLUSTER_CONNECT_SECONDS)
    if error:
        raise CxrError(f"cannot reach the Ray cluster at {cluster.address} ({cluster.origin}): "
                       f"{error.strerror or error}; {cluster.remedy()}") from error


def connection_error(host_port: str, timeout: float) -> OSError | None:
    """None if something accepts a TCP connection at HOST:PORT within `timeout` seconds, else why not."""
    host, _, port = host_port.rpartition(":")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as error:
        return error
    return None


def connect(address: str | None, num_cpus: int | None, trial_logs: bool = True) -> bool:
    """Join a cluster or start a local instance; True if this call started a local one.
    `trial_logs`: show what the trials' processes print and log (else it stays in Ray's session logs)."""
    if ray.is_initialized():
        return False
    cluster = cluster_address(address)
    if cluster:
        try:
            ray.init(address=cluster.address, log_to_driver=trial_logs)
        except ConnectionError as error:
            raise CxrError(f"cannot reach the Ray cluster at {cluster.address} ({cluster.origin}): {error}; "
                           f"{cluster.remedy()}") from error
        log.info("joined the Ray cluster at %s", cluster.address)
        if ray_client_connected():
            log.warning("through Ray Client (ray://), Tune runs on the cluster's head: this console shows none of "
                        "the study's status and per-trial lines (-v streams Tune's own output), and Ctrl-C or "
                        "SIGTERM ends the run there without a final save (--resume continues from Tune's last "
                        "snapshot). Run the command on the head for both (docs/cluster.md, section 6)")
        return False
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    if os.environ.get("CXR_TUNE_CACHE"):
        # The instance's trial workers inherit this environment, but run in folders of their own.
        os.environ["CXR_TUNE_CACHE"] = str(default_cache_root())
    ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=trial_logs)
    return True


def ray_client_connected() -> bool:
    """Whether this process joined its cluster through Ray Client (ray://): Tune's loop then runs in an actor on
    the cluster (Tuner.fit), with the study's callbacks, and this process only streams what that prints."""
    return ray.util.client.ray.is_connected()


def _alive_nodes() -> list[dict]:
    """The Ray cluster's live nodes, as ray.nodes() describes each (NodeID, Resources, ...)."""
    return [node for node in ray.nodes() if node["Alive"]]


def _paths_seen_by_nodes(node_ids: list[str], paths: list[str], timeout: float = 120) -> dict[str, list[bool]]:
    """Whether each path exists, as seen from each node: a zero-CPU task pinned to every node."""
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


def no_node_fits(cpus: float, gpus: float, nodes: list[dict], run: str, resume_command: str) -> str | None:
    """What to say when none of a cluster's live `nodes` (ray.nodes()'s records) has the `cpus` and `gpus` of
    one trial, None when one has: Tune weighs a trial against the whole cluster's resources, and lets it wait
    without a word for a node that holds it. Whether an autoscaler will add such a node, the driver cannot tell.
    `run`: what the command runs ("study", "confirm run"), which `resume_command` continues."""
    def has(node: dict, resource: str) -> float:
        return node["Resources"].get(resource, 0.0)

    if any(has(node, "CPU") >= cpus and has(node, "GPU") >= gpus for node in nodes):
        return None
    first, then = ("GPU", "CPU") if gpus > 0 else ("CPU", "GPU")
    largest = max(nodes, key=lambda node: (has(node, first), has(node, then)), default={"Resources": {}})
    if has(largest, "CPU") > 0:
        asked = (("--cpus-per-trial", "CPU", cpus), ("--gpus-per-trial", "GPU", gpus))
        lower = [(flag, has(largest, resource)) for flag, resource, wanted in asked if has(largest, resource) < wanted]
        fitting = " and ".join(f"{flag} {value:g}{' or less' if value > 0 else ''}" for flag, value in lower)
        flags = " ".join(f"{flag} {value:g}" for flag, value in lower)
        remedy = f"stop the {run} with Ctrl-C and resume it with {fitting}:\n  {resume_command} {flags}"
    else:
        remedy = "add a node with CPUs (`ray start --address` on it)"
    return (f"no live node of the cluster can hold a trial (--cpus-per-trial {cpus:g}, --gpus-per-trial {gpus:g}): "
            f"the largest has {has(largest, 'CPU'):g} CPU(s) and {has(largest, 'GPU'):g} GPU(s). The trials wait for "
            "a node that can: an autoscaling cluster (cluster.yaml) adds one, a fixed cluster (cluster-onprem.yaml, "
            f"or nodes started by `ray start`) never will: there, {remedy}")


def check_cluster(settings: StudySettings, joined: bool = False, run: str = "study",
                  resume_command: str | None = None) -> None:
    """On a multi-node cluster, and on any cluster joined through Ray Client (ray://), every node must see the
    study's storage and the datasets.

    Only the nodes alive now are checked; a node that joins later (an autoscaled worker) is checked
    by each trial it runs (see study.trainable). `joined`: the study joined a cluster rather than
    starting its own Ray, so nodes may join later, and a trial that no live node can hold is warned
    about rather than refused (check_local_resources refuses it on a Ray instance of the study's own).
    `run` and `resume_command`: the run being started (the study, or its confirm run) and the command that
    resumes it (by default the study's), which that warning names.
    """
    nodes = _alive_nodes()
    if joined:
        resume_command = resume_command or f"python -m study.run --resume {quote(settings.study_uri)}"
        unfit = no_node_fits(settings.cpus_per_trial, settings.gpus_per_trial, nodes, run, resume_command)
        if unfit:
            log.warning(unfit)
    local_storage = not storage.is_remote(settings.storage)
    client = ray_client_connected()
    if len(nodes) > 1 or client:  # through Ray Client this machine is no node: even a lone head may not see it
        marker = settings_uri(settings.study_uri) if local_storage else None
        wanted = list(settings.data_roots.values()) + ([marker] if marker else [])
        for node_id, seen in _paths_seen_by_nodes([node["NodeID"] for node in nodes], wanted).items():
            for path, ok in zip(wanted, seen):
                if ok:
                    continue
                if path == marker:
                    raise CxrError(client_storage_message(settings.storage, node_id) if client
                                   else storage_not_shared_message(settings.storage, node_id))
                raise CxrError(dataset_missing_message(path, node_id))
    if len(nodes) < 2 and joined and local_storage:
        log.warning("--storage %s is a local folder and the cluster has one node now: a node that joins "
                    "later must see it at the same path (a shared file system), or its trials fail; "
                    "on a cloud cluster use --storage s3://...", settings.storage)


def client_storage_message(storage_folder: str, node_id: str) -> str:
    """Why a study through Ray Client cannot keep a local --storage folder that node `node_id` does not see."""
    return (f"--storage {storage_folder} is a folder of this machine, which node {node_id[:8]} of the cluster does "
            "not see: through Ray Client (ray://), Tune writes the study on the cluster while this command reads it "
            "here; pass --storage s3://bucket/path (or a file system shared at the same path here and on every "
            "node), or run the command on the head (docs/cluster.md, section 6)")


class TrialNames:
    """Tune's trial names, config_name with the keys the space searches (`searched`), and with `folder` its trial
    folder names, <trial id>_<name> (picklable, unlike a closure)."""

    def __init__(self, searched: tuple[str, ...] = (), folder: bool = False):
        self.searched, self.folder = searched, folder

    def __call__(self, trial) -> str:
        name = config_name(trial.config, self.searched)
        return f"{trial.trial_id}_{name}" if self.folder else name


# What the tuner.pkl of a study started before TrialNames calls its trials' name makers, which its resume unpickles.
trial_name, trial_dirname = TrialNames(), TrialNames(folder=True)


def trial_context(settings: StudySettings, splits: dict[str, pd.DataFrame], weights_uri: str | None = None
                  ) -> TrialContext:
    """What every trial of the study shares; `weights_uri`: where trials write their best weights
    (default: the study folder; a seed-repeat run of study.confirm writes under its own folder)."""
    return TrialContext(
        data_roots=settings.data_roots, splits=splits, metric=settings.metric, mode=settings.mode,
        tie_break=settings.tie_break, dataset_options=settings.dataset_options,
        study_uri=weights_uri or settings.study_uri, storage=settings.storage,
        settings_file=None if storage.is_remote(settings.storage) else settings_uri(settings.study_uri),
        checkpoint_policy=CheckpointPolicy.of_study(settings),
        defaults={"image_size": settings.image_size, "epochs": settings.max_epochs, "seed": settings.seed,
                  "cache_dir": settings.cache_dir, "device": trial_device(settings.gpus_per_trial)})


def trial_device(gpus_per_trial: float) -> str:
    """A trial trains on the GPU Ray gave it, or on the CPU where it was given none: Ray (2.60) no longer hides
    the node's GPUs from tasks that reserved none, and every such trial would load GPU 0 unaccounted."""
    return "cuda" if gpus_per_trial > 0 else "cpu"


def sampling_line(space: SearchSpace, num_samples: int) -> str | None:
    """How the study draws its trials: the combinations of the space's cover_first choices its first trials
    cover, all of them or as many as --num-samples allows, and for TPE how many trials it draws at random
    before it models their results. None for a space without cover_first under a random or grid sampler."""
    parts, first = [], len(space.first_points())
    if first:
        combinations, tried = " x ".join(space.cover_first), min(first, num_samples)
        covered = (f"every combination of {combinations}" if tried == first
                   else f"{tried} of the {first} combinations of {combinations}")
        parts.append(f"the first {tried} trials cover {covered}")
        if num_samples > first and space.sampler != "tpe":
            parts.append(f"then {space.sampler.upper()} proposes")
    if space.sampler == "tpe":
        at_random = space.random_start_trials(num_samples)
        parts.append(f"TPE draws at random until {at_random} trial{'s have' if at_random != 1 else ' has'} finished, "
                     "then models their results"
                     if at_random < num_samples else f"TPE draws all {num_samples} trials at random: too few for it to model")
    return "; ".join(parts) or None


def build_tuner(settings: StudySettings, splits: dict[str, pd.DataFrame], resume: bool, verbose: bool = False):
    """Tune's Tuner for a new study, or restored for a resume (which keeps the searcher, the scheduler, the
    callbacks and the console the study started with). `verbose`: Tune's own tables instead of StudyConsole."""
    space = settings.search_space()
    trainable = tune.with_resources(tune.with_parameters(TrialTrainable, context=trial_context(settings, splits)),
                                    {"cpu": settings.cpus_per_trial, "gpu": settings.gpus_per_trial})
    if resume:
        return tune.Tuner.restore(settings.study_uri, trainable, resume_unfinished=True, resume_errored=True)
    first = space.first_points()
    sampling = sampling_line(space, settings.num_samples)
    if sampling:
        log.info(sampling)
    optuna_file = working_file(settings.study_uri)
    optuna_file.unlink(missing_ok=True)  # a new study: a local copy left by an earlier study of this URI is stale
    searcher = BestEpochOptunaSearch(
        space, metric=settings.metric, mode=settings.mode,
        points_to_evaluate=first[:settings.num_samples] or None,  # more would wait in the Optuna study forever
        sampler=space.make_sampler(settings.seed, settings.num_samples), study_name=settings.optuna_study,
        study_uri=settings.study_uri)
    asha_options = dict(time_attr="training_iteration", max_t=settings.max_epochs, grace_period=settings.grace_period,
                        reduction_factor=settings.reduction_factor, tie_break=settings.tie_break,
                        tie_break_mode=metric_mode(settings.tie_break or ""))
    if settings.asha == "promoting":
        scheduler = PromotingASHA(max_running=settings.max_concurrent, num_trials=settings.num_samples,
                                  **asha_options)
        searcher = PromotionGate(searcher, scheduler)  # it also keeps --max-concurrent, counting running trials only
    else:
        scheduler = BestEpochASHA(**asha_options)
        searcher = ConcurrencyLimiter(searcher, settings.max_concurrent) if settings.max_concurrent else searcher
    return tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            metric=settings.metric, mode=settings.mode, scheduler=scheduler, num_samples=settings.num_samples,
            # What TuneConfig(max_concurrent_trials=...) would build, with the study's own trial maker.
            search_alg=StudySearchGenerator(searcher),
            reuse_actors=True,
            trial_name_creator=TrialNames(space.searched_keys()),
            trial_dirname_creator=TrialNames(space.searched_keys(), folder=True)),
        run_config=tune.RunConfig(
            name=settings.name, storage_path=settings.storage,
            callbacks=[RungSnapshot(scheduler),
                       ResultsTable(settings.study_uri),
                       WeightsKeeper(settings.study_uri, settings.metric, settings.mode, settings.keep,
                                     settings.tie_break),
                       StudyTensorBoard(settings.metric, settings.mode, seed=settings.seed,
                                        logdir=settings.study_uri)]
            + ([] if verbose else [study_console(settings)]),
            failure_config=tune.FailureConfig(max_failures=settings.max_failures),
            # Full states only (best weights are the trainable's own files): the newest one is all a resume needs.
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1, checkpoint_at_end=False),
            verbose=1 if verbose else 0),
    )


def quiet_tune(verbose: bool) -> None:
    """Before a run's Tuner is built: unless `verbose`, Tune's and Optuna's own output is kept to warnings,
    and the run's StudyConsole alone shows its progress."""
    # Tune's newer output engine prints its configuration table even at verbose=0; the older one is silent.
    os.environ["RAY_AIR_NEW_OUTPUT"] = "1" if verbose else "0"
    for name, drop in TUNE_NOTES.items():
        if verbose:
            logging.getLogger(name).removeFilter(drop)
        else:
            logging.getLogger(name).addFilter(drop)
    if not verbose:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        logging.getLogger("ray.tune").setLevel(logging.WARNING)
        # Tune's notes that one pass of its event loop was slow (over 0.5 s: the driver deleting an ended
        # trial's files takes 0.1-0.5 s here) say nothing about the study; -v shows them.
        logging.getLogger("ray.tune.utils.util").setLevel(logging.ERROR)


def drop_trials_did_not_complete(record: logging.LogRecord) -> bool:
    """A logging filter for Tune's 'Trials did not complete: [...]' (an ERROR, on Ctrl-C or errored trials): the
    commands say what is unfinished, and how to continue, in their own words."""
    return not record.getMessage().startswith("Trials did not complete")


def drop_unreported_trials(record: logging.LogRecord) -> bool:
    """A logging filter for Tune's 'Failed to fetch metrics' where each trial named has no result file: it never
    reported an epoch (interrupted or errored before its first), which is no failure of anything."""
    message = record.getMessage()
    if not message.startswith("Failed to fetch metrics"):
        return True
    failures = message.splitlines()[1:]
    return not all("FileNotFoundError(" in failure for failure in failures)


def drop_trial_tracebacks(record: logging.LogRecord) -> bool:
    """A logging filter for Tune's 'Trial task failed for trial ...' and the traceback it carries (an ERROR, at
    each failure of a trial, retried or not): the console's line names the trial's error.txt, which holds it."""
    return not record.getMessage().startswith("Trial task failed for trial")


# Tune's notes that the study's own lines replace, dropped unless -v: logger -> filter.
TUNE_NOTES = {"ray.tune.tune": drop_trials_did_not_complete,
              "ray.tune.analysis.experiment_analysis": drop_unreported_trials,
              "ray.tune.execution.tune_controller": drop_trial_tracebacks}


def run_study(settings: StudySettings, resume: bool = False, address: str | None = None,
              num_cpus: int | None = None, verbose: bool = False,
              resources_from_study_json: frozenset[str] = frozenset()):
    """Check, prepare and run one study; returns Tune's ResultGrid. `verbose`: Tune's own output and the
    trials' logs, instead of the study's status line (StudyConsole). The resume of a study stopped before
    Tune's first snapshot (tune_state_saved) starts it, with the settings and the split it saved.
    `resources_from_study_json`: see check_local_resources."""
    storage.check_writable(settings.study_uri, "--resume" if resume else "--storage")
    if not resume:
        refuse_existing_study(settings.study_uri)  # at once, before the data is prepared (which may take long)
    restore = resume and tune_state_saved(settings.study_uri)
    if resume and not restore:
        log.info("%s was stopped before its trials started (it holds no snapshot of Tune's run): starting them now, "
                 "with the settings and the split it saved", settings.study_uri)
    local = runs_on_this_machine(address)
    if local:
        check_local_resources(settings, cores=num_cpus, from_study_json=resources_from_study_json)
    else:
        check_cluster_reachable(address, num_cpus)
    fetch_pretrained_weights(settings)
    splits = prepare_splits(settings, resume)
    resume_command = f"python -m study.run --resume {quote(settings.study_uri)}"
    with driver_lock(settings.study_uri, resume_command if resume else None):  # the study folder exists from here
        if restore:
            check_tune_state(settings.study_uri, "study", start_over="start a new study", state_files=STUDY_STATE_FILES)
        if restore and settings.optuna_study:
            restore_storage_file(settings.study_uri, settings.optuna_study)
        if resume:
            forget_lost_trials(settings.study_uri)  # so that --keep and the analysis see only the trials it knows
        if not resume:
            save_new_study(settings, splits)
        if not restore:
            write_experiment(settings)
        quiet_tune(verbose)
        started_here = False
        try:
            with contextlib.nullcontext() if resume else resumable_start_up(
                    f"the study's settings and split are saved in {settings.study_uri}", resume_command):
                started_here = connect(address, num_cpus, trial_logs=verbose)
                check_cluster(settings, joined=not local, resume_command=resume_command)
            with resumed_study(settings.study_uri) if restore else contextlib.nullcontext():
                tuner = build_tuner(settings, splits, restore, verbose)
                for line in watch_commands(settings, running=True):
                    log.info(line)
                started = time.perf_counter()
                with tune_interrupts(resume_command):
                    results = tuner.fit()
            events = read_trial_events(settings.study_uri)
            log_run_end("study", results, events, time.perf_counter() - started)
            prune_weights(settings.study_uri, read_results(settings.study_uri),
                          events.loc[events["event"] == "completed", "trial_id"], settings.keep, settings.metric,
                          settings.mode, settings.tie_break)
        finally:
            if started_here:
                ray.shutdown()
        return results


@contextlib.contextmanager
def resumable_start_up(saved: str, resume_command: str) -> Iterator[None]:
    """Around a new run's start-up after it saved what its resume starts from (`saved`: where a study's
    settings and split, or a confirm run's jobs, lie): the command that started the run now refuses its folder,
    so a CxrError there (a cluster it cannot join, a node without the data) also says what is saved and gives
    `resume_command`, which starts the run once the cause is fixed (tune_state_saved is still False)."""
    try:
        yield
    except CxrError as error:
        raise CxrError(f"{error}\n{saved}: once the cause is fixed, start it with\n  {resume_command}") from error


def tune_state_saved(run_uri: str) -> bool:
    """Whether Tune saved the state of the run at `run_uri` (a study, or its confirm run) that Tuner.restore
    continues: an experiment snapshot, written once Tune's loop runs, beside tuner.pkl, written as the Tuner is
    built (check_tune_state checks that both can be read). Without a snapshot there are no trials to continue
    (Tuner.restore would log a traceback and start the run over): a run stopped before one (Ctrl-C while Ray
    started or before Tune's first step, a node refused by check_cluster) is started again from what it saved (a
    study's settings and split, a confirm run's jobs)."""
    return newest_snapshot(run_uri) is not None


def check_tune_state(run_uri: str, run: str, start_over: str, state_files: tuple[TuneStateFile, ...]) -> None:
    """Before the resume of a run (a study, or its confirm run: `run`) whose Tune state is saved (tune_state_saved):
    CxrError, naming the file and what to do, where tuner.pkl, the snapshot Tune restores (its newest) or one of
    the newest of each of the `state_files` is missing, cut short or damaged (a partial copy or upload).
    Tune does not stop there: on such a tuner.pkl Tuner.restore ends in a traceback; on such a snapshot or
    searcher state Tune logs one and starts the run over in its folder, a new search on top of the run's trials;
    without the searcher's state it ends in a traceback at the first result, and without the callbacks' it
    forgets ASHA's rungs. `start_over`: what to do where no copy of the file is left."""
    remedy = f"restore it from a copy of the study folder, or {start_over}"
    check_pickle(storage.join(run_uri, TUNER_FILE),
                 f"it holds Tune's run of the {run} (its searcher, scheduler and callbacks), which --resume restores; "
                 f"{remedy}")
    newest = newest_tune_files(run_uri, [(SNAPSHOT_PREFIX, ".json")] + [(state_file.prefix, state_file.extension)
                                                                        for state_file in state_files])
    snapshot_uri = newest[SNAPSHOT_PREFIX]
    try:
        snapshot_trials(snapshot_uri)
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise CxrError(f"{snapshot_uri} cannot be read ({error}): it is Tune's last snapshot of the {run}'s trials, "
                       f"which --resume continues (resumed without it, Tune would start the {run} over on top of "
                       f"its trials); {remedy}") from error
    for state_file in state_files:
        uri = newest.get(state_file.prefix)
        if uri is None:
            raise CxrError(f"{run_uri} holds no {state_file.prefix}<session>{state_file.extension}: Tune saves one "
                           f"with each snapshot of the {run}, and --resume restores {state_file.holds} from the "
                           f"newest; {remedy}")
        check_pickle(uri, f"Tune saved it with a snapshot of the {run}, and --resume restores {state_file.holds} "
                          f"from it; {remedy}")


def check_pickle(uri: str, what_and_remedy: str) -> None:
    """CxrError naming `uri` where the pickle there is missing or cannot be read through (cut short, damaged);
    runs none of it."""
    if storage.kind(uri) != "file":
        raise CxrError(f"{uri} is missing: {what_and_remedy}")
    try:
        for _ in pickletools.genops(storage.read_bytes(uri)):  # reads its opcodes through, runs nothing
            pass
    except (OSError, ValueError) as error:
        raise CxrError(f"{uri} cannot be read ({error}): {what_and_remedy}") from error


def unfinished_trials(grid, events: pd.DataFrame) -> list[str]:
    """The folder names of the trials of Tune's ResultGrid that neither completed nor failed (no trial
    event in `events`, read_trial_events): the run was interrupted (Ctrl-C), and a resume continues them."""
    # Trial folders are <trial id>_<name> (TrialNames; study.confirm's JobNames), and a trial id may
    # hold "_" itself (Tune's own ids: 6e6fe_00001).
    ended = tuple(f"{trial_id}_" for trial_id in events["trial_id"])
    folders = [Path(result.path).name for result in grid]
    return [folder for folder in folders if not folder.startswith(ended)]


def log_run_end(label: str, grid, events: pd.DataFrame, seconds: float) -> None:
    """'<label> finished in N s', or, when trials are unfinished (Ctrl-C), that it was interrupted."""
    unfinished = unfinished_trials(grid, events)
    if unfinished:
        log.warning("%s interrupted after %.0f s: %d of %d trials unfinished; what they reported is kept",
                    label, seconds, len(unfinished), len(grid))
    else:
        log.info("%s finished in %.0f s", label, seconds)


def interrupted_line(unfinished: list[str], run: str, command: str) -> str:
    """What a command prints when its run left trials unfinished: how many, and the command that continues."""
    count = len(unfinished)
    return f"interrupted: {count} trial{'s' if count != 1 else ''} unfinished; continue the {run} with\n  {command}"


def errored_line(events: pd.DataFrame, command: str) -> str | None:
    """What a command prints when trials of its run errored (their last event in `events`, read_trial_events, an
    error): how many, where their tracebacks are, and the command that runs them again; None if none errored."""
    count = int((events["event"] == "error").sum())
    if count == 0:
        return None
    if count == 1:
        return ("1 trial errored (its traceback: error.txt in its trial folder); once the cause is fixed, the resume "
                f"runs it again, from its last full state:\n  {command}")
    return (f"{count} trials errored (their tracebacks: error.txt in each one's trial folder); once the cause is "
            f"fixed, the resume runs them again, from their last full state:\n  {command}")


@contextlib.contextmanager
def tune_interrupts(resume_command: str) -> Iterator[None]:
    """Around tuner.fit(): SIGTERM (`kill`, a batch scheduler's time limit) stops Tune as Ctrl-C does,
    with its state saved (otherwise Ray's own handler ends the driver at once, as SIGKILL would; Tune
    stops on SIGUSR1 as on SIGINT, and SIGTERM is passed on as that); and Tune's own resume hint, which
    names its Python API (Tuner.restore), is dropped: the commands print theirs.

    A SIGTERM sent to the whole process group (`timeout`, `kill -TERM -PGID`) also stops the Ray instance
    this command started, whose processes share the group: Tune can then neither stop its trials nor
    save, and Ray's client ends the driver with status 1 and no word (once its raylet is gone) or after a
    minute of retries (once its GCS is gone). If the instance stops within seconds of the signal, the
    driver says so with `resume_command` and exits 130 at once; the resume continues from Tune's last
    snapshot, as after a kill.

    Through Ray Client (ray://), Tune's loop runs on the cluster, where this process's signals never reach it:
    SIGTERM raises KeyboardInterrupt here, as Ctrl-C does, and Ray ends the run on the cluster as this client
    disconnects."""
    tune_log = logging.getLogger("ray.tune.tune")
    tune_log.addFilter(drop_tune_resume_hint)
    fit_returned = threading.Event()
    handler, instance = None, None
    if threading.current_thread() is not threading.main_thread():
        pass  # signal handlers are the main thread's alone
    elif ray_client_connected():
        handler = signal.default_int_handler
    elif hasattr(signal, "SIGUSR1"):
        gcs_address = ray.get_runtime_context().gcs_address
        instance = RayInstanceProcesses.of_this_command()

        watching = threading.Event()  # one watcher at a time; a SIGTERM after it gave up starts another

        def watch() -> None:
            try:
                exit_if_ray_is_gone(gcs_address, instance, fit_returned, resume_command)
            finally:
                watching.clear()

        def on_sigterm(signum, frame):
            if not watching.is_set():
                watching.set()
                threading.Thread(target=watch, daemon=True).start()
            signal.raise_signal(signal.SIGUSR1)

        handler = on_sigterm
    if handler:
        previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        fit_returned.set()
        tune_log.removeFilter(drop_tune_resume_hint)
        if handler:  # previous None: a handler set outside Python (Ray's)
            signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)
        if instance:
            instance.close()


class RayInstanceProcesses:
    """The processes of the Ray instance this command started (its GCS, raylet and Ray's monitors: the
    children of this process in its process group that run Ray's programs), watched through Linux pidfds,
    which become readable the moment a process exits. A SIGTERM to the group ends some of them at once (the
    monitors), others only once they have talked to the GCS (the raylet). Empty where the driver joined a
    running instance, or off Linux (the GCS's port is watched alone then). The signal handler's watcher
    thread and the driver's thread share it: a lock keeps a pidfd from being closed while polled."""

    def __init__(self, pidfds: list[int]):
        self.pidfds = pidfds
        self.lock = threading.Lock()

    @classmethod
    def of_this_command(cls) -> RayInstanceProcesses:
        """Those running now (one that ended before, as a monitor may, is no sign of anything later)."""
        if not hasattr(os, "pidfd_open"):
            return cls([])
        pidfds = []
        for pid in child_processes(os.getpid(), os.getpgrp(), running=os.path.dirname(ray.__file__)):
            with contextlib.suppress(OSError):  # exited since
                pidfds.append(os.pidfd_open(pid))
        instance = cls(pidfds)
        instance.forget_ended()
        return instance

    def ended(self, wait: float) -> list[int]:
        """The pidfds of those that have exited, waiting up to `wait` seconds for one to."""
        with self.lock:
            if self.pidfds:
                poll = select.poll()
                for pidfd in self.pidfds:
                    poll.register(pidfd, select.POLLIN)
                return [pidfd for pidfd, _ in poll.poll(wait * 1000)]
        time.sleep(wait)
        return []

    def forget_ended(self, unless_by: int | None = None) -> None:
        """Stop watching those that have exited, except those that signal `unless_by` ended."""
        ended = self.ended(wait=0)
        with self.lock:
            for pidfd in ended:
                if pidfd in self.pidfds and (unless_by is None or not ended_by(pidfd, unless_by)):
                    self.pidfds.remove(pidfd)
                    os.close(pidfd)

    def close(self) -> None:
        with self.lock:
            for pidfd in self.pidfds:
                os.close(pidfd)
            self.pidfds = []


def ended_by(pidfd: int, signum: int) -> bool:
    """Whether the child process behind `pidfd`, exited and not yet reaped, was killed by signal `signum` or
    exited with status `signum` (as Ray's Python processes do on SIGTERM)."""
    try:
        status = os.waitid(os.P_PIDFD, pidfd, os.WEXITED | os.WNOWAIT | os.WNOHANG)
    except OSError:  # reaped already (ChildProcessError), or a kernel before 5.4: nothing to tell
        return False
    return status is not None and status.si_status == signum


def child_processes(parent: int, group: int, running: str) -> list[int]:
    """The pids of `parent`'s children in process group `group` whose command line names `running` (a
    folder of the programs they run), read from /proc."""
    children = []
    for proc in Path("/proc").glob("[0-9]*"):
        with contextlib.suppress(OSError):
            stat = (proc / "stat").read_text()
            ppid, pgrp = stat[stat.rindex(")") + 2:].split()[1:3]
            if int(ppid) == parent and int(pgrp) == group and running in (proc / "cmdline").read_text():
                children.append(int(proc.name))
    return children


def exit_if_ray_is_gone(gcs_address: str, instance: RayInstanceProcesses, fit_returned: threading.Event,
                        resume_command: str, seconds: float = 10) -> None:
    """After a SIGTERM: if this command's Ray instance stops (one of its processes exits, or its GCS stops
    answering) before fit() returns, print what happened and how to continue, and exit 130 (see
    tune_interrupts). Its GCS alone is not enough to watch: a GCS slow to stop (a loaded machine) holds
    the raylet's shutdown, and once that goes on, Ray's client ends the driver within milliseconds."""
    # What ended before this thread started counts if the SIGTERM ended it; what had crashed before does not.
    instance.forget_ended(unless_by=signal.SIGTERM)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not fit_returned.is_set():
        if instance.ended(wait=0.1) or connection_error(gcs_address, timeout=1):
            if fit_returned.is_set():  # the driver's own ray.shutdown(), after a stop that went well
                return
            print("\ninterrupted: the SIGTERM reached the Ray instance of this command too (sent to the whole "
                  "process group, as `timeout` does), so its trials stopped where they were; what they reported is "
                  f"kept. Continue with\n  {resume_command}", file=sys.stderr, flush=True)
            sys.stdout.flush()
            os._exit(130)


def drop_tune_resume_hint(record: logging.LogRecord) -> bool:
    """A logging filter for Tune's resume hint (see tune_interrupts)."""
    return "Tuner.restore(" not in record.getMessage()


def print_run_end(settings: StudySettings, grid) -> int:
    """What study.run prints as its run ends: the summary (stdout), then on stderr, where a user whose stdout
    goes to a file still sees them, the trials that errored or were left unfinished and the command that
    continues the study, and, on an unfinished search, the analysis that works now (of the validation split:
    the test split waits for the finished search, study.analyze.check_search_finished).
    Returns the exit status: 130 where the run was interrupted (trials left unfinished)."""
    events = read_trial_events(settings.study_uri)
    unfinished, undone = unfinished_trials(grid, events), unfinished_search(settings.study_uri)
    search_finished = not (unfinished or undone)
    reported = print_summary(settings, events, search_finished)
    resume_command = f"python -m study.run --resume {quote(settings.study_uri)}"
    errored = errored_line(events, resume_command)
    sys.stdout.flush()  # the summary before what follows it on a terminal
    if errored:
        print("\n" + errored, file=sys.stderr)
    if unfinished:
        print("\n" + interrupted_line(unfinished, "study", resume_command), file=sys.stderr)
    elif undone and not errored:
        print(f"\nthe search is unfinished ({'; '.join(undone)}); continue it with\n  {resume_command}",
              file=sys.stderr)
    if not search_finished and reported:
        print(analysis_line(settings.study_uri, search_finished=False), file=sys.stderr)
    return 130 if unfinished else 0


def print_summary(settings: StudySettings, events: pd.DataFrame, search_finished: bool = True) -> bool:
    """The best trial per model, the baselines and where the study's files are (`events`: its trial events,
    read_trial_events), with the command that analyses a finished search (`search_finished`); whether any trial
    reported an epoch."""
    results = read_results(settings.study_uri)
    if results.empty:
        print("no trial reported an epoch")
        return False
    table = comparison_table(results, settings.metric, settings.mode, tie_break=settings.tie_break,
                             searched=settings.search_space().searched_keys())
    print(f"\nBest trial per model (chosen on {settings.metric}, validation split):\n")
    if len(table):
        print(markdown_table(table))
    for line in diverged_cells(results, settings.metric, ("config/dataset", "config/model")):
        print(line)
    shown = list(dict.fromkeys((settings.metric.removeprefix("val/"), "f1_macro", "accuracy")))
    for dataset, baseline in settings.baselines.items():
        figures = ", ".join(f"val/{m} {baseline[m]:.3f}" for m in shown if m in baseline)
        print(f"\nmajority-class baseline on {dataset}: {figures}")
        if "subset_accuracy" in baseline:  # multi-label: a constant prediction gets most image-label cells right
            print(f"  ({dataset} is multi-label: val/accuracy counts each label of each image, val/subset_accuracy "
                  f"each image with all its labels right: {baseline['subset_accuracy']:.3f} for the baseline)")
    print("\n" + size_line(settings, events))
    print(f"results:     {settings.study_uri}/results (Parquet, every trial and epoch)")
    for line in watch_commands(settings, running=False):
        print(line)
    if search_finished:
        print(analysis_line(settings.study_uri))
    return True


def size_line(settings: StudySettings, events: pd.DataFrame) -> str:
    """The study's size, and how much of it the weights are that it keeps: each model's --keep best of the trials
    that completed, and those of the trials that did not (`events`: read_trial_events), which a resume continues
    or runs again, whatever their rank."""
    folder = storage.join(settings.study_uri, WEIGHTS_DIR)
    completed = set(events.loc[events["event"] == "completed", "trial_id"])
    not_completed = [entry for entry in storage.listing(folder)
                     if entry.name.endswith(".pt") and entry.name.removesuffix(".pt") not in completed]
    kept = {"all": "every trial's best weights", 1: "the best weights of each model's best trial"}.get(
        settings.keep, f"the best weights of each model's {settings.keep} best trials") + f", --keep {settings.keep}"
    if not_completed and settings.keep != "all":
        count = len(not_completed)
        kept += f", and of the {count} trial{'s' if count != 1 else ''} not completed, for the resume"
    return (f"study:       {settings.study_uri} ({storage.total_bytes(settings.study_uri) / 1e6:,.0f} MB in all; "
            f"{storage.total_bytes(folder) / 1e6:,.0f} MB of it {kept})")


def analysis_line(uri: str, search_finished: bool = True, allow_unfinished: bool = False) -> str:
    """The command that analyses the study at `uri`; one in object storage needs a local --out for its report.
    Until its search is finished (`search_finished`), the analysis of the validation split alone, or, with
    `allow_unfinished` (after a confirm run of its best trials so far), of those trials on test too."""
    from study.analyze import REPORT_DIRS

    command = f"python -m study.analyze {quote(uri)}"
    split = "val" if not (search_finished or allow_unfinished) else "test"
    if split == "val":
        command += " --split val"
    elif not search_finished:
        command += " --allow-unfinished"
    if storage.is_remote(uri):  # the report folder a local study's analysis of that split writes, here
        command += f" --out {quote(storage.name_of(uri) + '-' + REPORT_DIRS[split])}"
    if search_finished:
        return f"analysis:    {command}"
    if allow_unfinished:
        return f"analysis of the best trials so far (the search is unfinished):\n  {command}"
    return ("until then, the analysis of the validation split alone (the test split waits for the search to end):"
            f"\n  {command}")


def watch_commands(settings: StudySettings, running: bool) -> list[str]:
    """The commands that show the study's curves (TensorBoard) and its search (Optuna's dashboard)."""
    lines = [tensorboard_line(settings.study_uri)]
    if not settings.optuna_study:
        return lines  # a study from before the Optuna storage file
    dashboard = "optuna-dashboard"
    if not storage.is_remote(settings.study_uri):
        lines.append(f"optuna:      {dashboard} {quote(storage_url(working_file(settings.study_uri)))}")
    elif running:
        lines.append(f"optuna:      {dashboard} {quote(storage_url(working_file(settings.study_uri)))} "
                     f"(this machine's copy of {storage_file_uri(settings.study_uri)})")
    else:
        lines.append(f"optuna:      {storage_file_uri(settings.study_uri)}: download it, then "
                     f"{dashboard} sqlite:///optuna.db")
    if importlib.util.find_spec("optuna_dashboard") is None:
        lines[-1] += "  (an optional extra: pip install optuna-dashboard)"
    return lines
