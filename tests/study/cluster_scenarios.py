"""Cluster scenarios for test_cluster.py, each run in a process of its own with a Ray of its own.

    python tests/study/cluster_scenarios.py SCENARIO WORKDIR OUT_JSON [--cache-dir DIR] [--deadline S]

A multi-node Ray cannot share the test session's Ray instance (one Ray per
process), so test_cluster.py runs this script in a subprocess and asserts
on the JSON it writes. Scenarios:

- `two_nodes`: a real two-node cluster (ray.cluster_utils.Cluster: a head
  and a worker of one CPU each, both on this machine), running in turn
  - `spread`: a 4-trial study with storage on a path both nodes see, then
    check_cluster on paths that no node has (through the real node-pinned
    Ray tasks);
  - `node_loss`: a 2-trial, 6-epoch study; as soon as Tune has registered
    the first full state of a trial on the worker, the worker node is
    removed and a new one added.
- `always_fails`: a local one-CPU Ray and a study whose data root vanishes
  after the driver prepared it, so that every attempt of every trial raises.

The script sets its own deadline: past it, it writes what it saw with
"timed_out": true and exits, taking its Ray processes with it.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import threading
import time
import traceback
from dataclasses import replace
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

SPACE = """\
description: cluster tests (ResNet50 at 32 px on the embedded sample)
study: {dataset: covid-chestxray-3class}
sampler: random
search:
  model: {value: resnet50}
  optimizer: {value: adam}
  lr: {loguniform: [1.0e-4, 1.0e-3]}
  batch_size: {value: 32}
  pretrained: {value: false}
"""

OUTPUT: dict[str, Any] = {}
log = logging.getLogger("cluster_scenarios")


def make_settings(workdir: Path, name: str, cache_dir: str, *flags: str):
    from study.run import build_parser, settings_from_args

    space = workdir / "cluster-space.yaml"
    space.write_text(SPACE)
    args = build_parser().parse_args([
        "--space", str(space), "--name", name, "--storage", str(workdir / "studies"), "--cache-dir", cache_dir,
        "--image-size", "32", "--cpus-per-trial", "1", "--seed", "0", *flags])
    return settings_from_args(args)


CLUSTER = None


def start_cluster():
    """A head and a worker node of one CPU each, on this machine; the driver joins the head."""
    global CLUSTER
    import ray
    from ray.cluster_utils import Cluster

    started = time.perf_counter()
    CLUSTER = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    worker = CLUSTER.add_node(num_cpus=1)
    CLUSTER.wait_for_nodes()
    ray.init(address=CLUSTER.address)
    OUTPUT.update(head=CLUSTER.head_node.node_id, worker=worker.node_id,
                  cluster_start_seconds=time.perf_counter() - started,
                  cpus_available_at_start=ray.available_resources().get("CPU", 0))
    return CLUSTER, worker


def rows(frame) -> list[dict[str, Any]]:
    keep = [c for c in ("trial_id", "training_iteration", "epoch", "node_id", "val/f1_macro", "train/loss")
            if c in frame.columns]
    return frame[keep].to_dict("records") if len(frame) else []


def raw_results(study_uri: str):
    """Every result part in the order the driver wrote them (no de-duplication)."""
    import io

    import pandas as pd

    from study import storage

    frames = [pd.read_parquet(io.BytesIO(storage.read_bytes(entry.uri)))
              for entry in storage.listing(storage.join(study_uri, "results")) if entry.name.endswith(".parquet")]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def grid_summary(grid) -> dict[str, Any]:
    trials = []
    for result in grid:
        metrics = result.metrics or {}
        trials.append({"trial_id": metrics.get("trial_id") or (result.config or {}).get("trial_id"),
                       "error": repr(result.error) if result.error else None,
                       "epoch": metrics.get("epoch"), "training_iteration": metrics.get("training_iteration")})
    return {"num_trials": len(grid), "num_errors": grid.num_errors, "trials": trials}


def events(study_uri: str) -> dict[str, str]:
    from study.results import read_trial_events

    table = read_trial_events(study_uri)
    return dict(zip(table["trial_id"], table["event"]))


# ------------------------------------------------------------------ scenarios

def spread(workdir: Path, cache_dir: str, out: dict[str, Any]) -> None:
    """A 4-trial study on the two-node cluster; then check_cluster on paths that no node has."""
    from cxrnets.errors import CxrError
    from study.results import read_results
    from study.driver import check_cluster, run_study

    # Trials of 6 epochs: a trial of 2 (about 5 s) could end before the second node's actor started, and Tune
    # (reuse_actors) then gives the next trial the finished trial's actor: every trial on one node, in turn.
    settings = make_settings(workdir, "spread", cache_dir, "--num-samples", "4", "--max-epochs", "6",
                             "--grace-period", "6", "--max-failures", "0")
    started = time.perf_counter()
    grid = run_study(settings)
    out["study_seconds"] = time.perf_counter() - started
    out["grid"] = grid_summary(grid)
    out["results"] = rows(read_results(settings.study_uri))
    out["events"] = events(settings.study_uri)

    # Refusals through the real node-pinned tasks: paths that no node has.
    refusals = {}
    for case, bad in (("dataset", replace(settings, data_roots={"covid-chestxray-3class": str(workdir / "absent")})),
                      ("storage", replace(settings, name="never-started"))):
        try:
            check_cluster(bad)
            refusals[case] = None
        except CxrError as error:
            refusals[case] = str(error)
    out["refusals"] = refusals


def node_loss(workdir: Path, cache_dir: str, out: dict[str, Any], cluster, worker) -> None:
    """A 2-trial, 6-epoch study; the worker node is removed as soon as Tune has registered the first
    full state of a trial there, and a new node added."""
    import study.driver
    from study.results import read_results

    settings = make_settings(workdir, "node-loss", cache_dir, "--checkpoint-every", "1", "--num-samples", "2",
                             "--max-epochs", "6",
                             "--grace-period", "6", "--max-failures", "2")
    removed = threading.Event()
    keeper = study.driver.WeightsKeeper

    class RemoveWorkerAfterItsFirstSave(keeper):
        """Removes the worker from inside Tune's loop, right after Tune registered a checkpoint of a
        trial there: no later result of that trial can reach the driver before the node is gone."""

        def on_trial_save(self, iteration, trials, trial, **info):
            super().on_trial_save(iteration, trials, trial, **info)
            if removed.is_set() or (trial.last_result or {}).get("node_id") != worker.node_id:
                return
            out["victim"] = trial.trial_id
            out["before_removal"] = rows(raw_results(settings.study_uri))
            cluster.remove_node(worker)
            log.warning("removed the worker node after trial %s saved epoch %s there", trial.trial_id,
                        trial.last_result.get("epoch"))
            removed.set()

        def __reduce__(self):  # Tune pickles its callbacks (for a resume this scenario never does)
            return keeper, (self.study_uri, self.metric, self.mode, self.keep)

    study.driver.WeightsKeeper = RemoveWorkerAfterItsFirstSave
    # The study runs in a thread: adding a node registers signal handlers, which only the main thread may.
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["grid"] = study.driver.run_study(settings)
        except BaseException:  # noqa: BLE001 - re-raised below
            outcome["error"] = traceback.format_exc()

    started = time.perf_counter()
    runner = threading.Thread(target=run, name="study", daemon=True)
    runner.start()
    while runner.is_alive() and not removed.wait(timeout=0.1):
        pass
    if removed.is_set():
        # As an autoscaler would: a new node, so that the retried trial need not wait for the head's CPU.
        out["replacement"] = cluster.add_node(num_cpus=1).node_id
    runner.join()
    if "error" in outcome:
        raise RuntimeError(f"the study raised:\n{outcome['error']}")
    grid = outcome["grid"]
    out["study_seconds"] = time.perf_counter() - started
    out["grid"] = grid_summary(grid)
    out["raw_results"] = rows(raw_results(settings.study_uri))
    out["results"] = rows(read_results(settings.study_uri))
    out["events"] = events(settings.study_uri)


def two_nodes(workdir: Path, cache_dir: str) -> None:
    """`spread`, then `node_loss`, on one two-node cluster (starting a cluster costs seconds)."""
    cluster, worker = start_cluster()
    for name, part in (("spread", lambda out: spread(workdir, cache_dir, out)),
                       ("node_loss", lambda out: node_loss(workdir, cache_dir, out, cluster, worker))):
        OUTPUT[name] = out = {"error": None}
        try:
            part(out)
        except Exception:  # noqa: BLE001 - the test prints it
            out["error"] = traceback.format_exc()


def counting_trials(attempts_file: str):
    """study.trainable.TrialTrainable, recording each attempt in `attempts_file` (a class made here is
    pickled by value into the Ray workers)."""
    from study.trainable import TrialTrainable

    class CountingTrial(TrialTrainable):
        def setup(self, config, context):
            with open(attempts_file, "a") as file:
                file.write(self.trial_id + "\n")
            super().setup(config, context)

    return CountingTrial


def always_fails(workdir: Path, cache_dir: str) -> None:
    import study.driver
    from cxrnets.data import SAMPLE_ROOT
    from study.results import read_results

    data_root = workdir / "data" / "covid-chestxray-dataset"
    shutil.copytree(SAMPLE_ROOT, data_root)
    settings = make_settings(workdir, "always-fails", cache_dir, "--num-samples", "1", "--max-epochs", "1",
                             "--grace-period", "1", "--max-failures", "1", "--data-root", str(data_root))
    attempts_file = workdir / "attempts.txt"
    attempts_file.touch()
    check_cluster = study.driver.check_cluster

    def check_then_lose_data(settings_, **options):
        check_cluster(settings_, **options)
        shutil.rmtree(data_root)  # the driver prepared the data; now it vanishes before any trial starts

    study.driver.check_cluster = check_then_lose_data
    study.driver.TrialTrainable = counting_trials(str(attempts_file))
    started = time.perf_counter()
    grid = study.driver.run_study(settings, num_cpus=1)
    OUTPUT["fit_seconds"] = time.perf_counter() - started
    OUTPUT["grid"] = grid_summary(grid)
    OUTPUT["errors"] = [repr(result.error) for result in grid if result.error]
    OUTPUT["attempts"] = attempts_file.read_text().split()
    OUTPUT["results"] = rows(read_results(settings.study_uri))
    OUTPUT["events"] = events(settings.study_uri)


SCENARIOS = {"two_nodes": two_nodes, "always_fails": always_fails}


def write(out: Path) -> None:
    out.write_text(json.dumps(OUTPUT, indent=1, default=str))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("scenario", choices=sorted(SCENARIOS))
    parser.add_argument("workdir", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--cache-dir", default=None, help="image cache (default: WORKDIR/cache)")
    parser.add_argument("--deadline", type=float, default=240, help="seconds before the scenario gives up")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    args.workdir.mkdir(parents=True, exist_ok=True)
    OUTPUT.update(scenario=args.scenario, timed_out=False, error=None)

    def give_up() -> None:
        OUTPUT["timed_out"] = True
        write(args.out)
        print(f"cluster scenario {args.scenario}: no result after {args.deadline:.0f} s, giving up",
              file=sys.stderr, flush=True)
        os._exit(3)  # Ray's processes share this process's fate (kill-on-parent-death, reaper)

    timer = threading.Timer(args.deadline, give_up)
    timer.daemon = True
    timer.start()
    started = time.perf_counter()
    try:
        SCENARIOS[args.scenario](args.workdir, args.cache_dir or str(args.workdir / "cache"))
    except BaseException:  # noqa: BLE001 - the test prints it
        OUTPUT["error"] = traceback.format_exc()
    OUTPUT["seconds"] = time.perf_counter() - started
    timer.cancel()
    write(args.out)
    try:
        import ray

        ray.shutdown()
        if CLUSTER is not None:
            CLUSTER.shutdown()
    except Exception:  # noqa: BLE001 - the result is written; a messy shutdown only shows in the log
        traceback.print_exc()
    return 0


if __name__ == "__main__":
    sys.exit(main())
