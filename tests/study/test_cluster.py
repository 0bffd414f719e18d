"""Studies on a real two-node Ray cluster: trials on both nodes, the loss of a node, refusals, bounded retries.

A cluster needs a Ray of its own, so the cluster runs are not in this pytest
process (which may hold the session's Ray instance): each runs
`cluster_scenarios.py` in a subprocess with its own RAY_TMPDIR and asserts
on the JSON it writes. The refusal tests fake the nodes' answers and need no
Ray at all. Run time: about 5 minutes on 2 cores shared with other work
(load ~6), two thirds of it the two-node scenario; less on idle cores.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from cxrnets.errors import CxrError

HERE = Path(__file__).resolve().parent
SCRIPT = HERE / "cluster_scenarios.py"
REPO = HERE.parents[1]
MAX_EPOCHS = 6  # of the node-loss study (cluster_scenarios.node_loss)


# ------------------------------------------------------------------ running a scenario

@pytest.fixture(scope="module")
def ray_tmp() -> Iterator[Path]:
    """Where the scenarios' Ray instances keep their session files, one sub-folder each.

    Ray puts Unix sockets there, whose paths must stay under 108 characters: a short folder of
    our own, not pytest's long tmp_path (and not /tmp/ray, where another process's `ray.init()`
    would find a scenario cluster's address file and join it).
    """
    folder = Path(tempfile.mkdtemp(prefix="cxr-ray-", dir="/tmp"))
    yield folder
    give_up = time.monotonic() + 10
    while True:  # Ray's last processes may still write there for a moment after a scenario exits
        shutil.rmtree(folder, ignore_errors=True)
        time.sleep(0.5)
        if not folder.exists() or time.monotonic() > give_up:
            break


def run_scenario(name: str, workdir: Path, cache_dir: Path, ray_tmp: Path, deadline: float) -> dict[str, Any]:
    """Run one scenario in its own process group and return its JSON; fail with its log if it broke."""
    env = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}
    env.update(RAY_AUTH_MODE="disabled", RAY_TMPDIR=str(ray_tmp / name), PYTHONUNBUFFERED="1",
               PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    out, log_path = workdir / f"{name}.json", workdir / f"{name}.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [sys.executable, str(SCRIPT), name, str(workdir), str(out), "--cache-dir", str(cache_dir),
             "--deadline", str(deadline)],
            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            returncode = process.wait(timeout=deadline + 90)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)  # the group this test started: the script and its Ray
            process.wait()
            pytest.fail(f"cluster scenario {name} did not exit {deadline + 90:.0f} s after it started\n"
                        + tail(log_path))
    if not out.is_file():
        pytest.fail(f"cluster scenario {name} exited with {returncode} and wrote no result\n" + tail(log_path))
    result = json.loads(out.read_text())
    result["log"] = str(log_path)
    if result.get("timed_out"):
        pytest.fail(f"cluster scenario {name} gave up after its {deadline:.0f} s deadline: the study hung or the "
                    f"machine is overloaded\n{json.dumps(result, indent=1)[:3000]}\n" + tail(log_path))
    if result.get("error"):
        pytest.fail(f"cluster scenario {name} raised:\n{result['error']}\n" + tail(log_path))
    return result


def tail(path: Path, lines: int = 60) -> str:
    text = path.read_text(errors="replace").splitlines() if path.is_file() else []
    return f"--- last {lines} lines of {path} ---\n" + "\n".join(text[-lines:])


def part(result: dict[str, Any], name: str) -> dict[str, Any]:
    section = result[name]
    if section.get("error"):
        pytest.fail(f"{name} raised:\n{section['error']}\n" + tail(Path(result["log"])))
    return section


@pytest.fixture(scope="module")
def cluster_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cluster-cache")


@pytest.fixture(scope="module")
def two_nodes(tmp_path_factory: pytest.TempPathFactory, cluster_cache: Path, ray_tmp: Path) -> dict[str, Any]:
    """The `spread` and `node_loss` studies, run in turn on one two-node cluster (one subprocess)."""
    return run_scenario("two_nodes", tmp_path_factory.mktemp("two-nodes"), cluster_cache, ray_tmp, deadline=540)


@pytest.fixture(scope="module")
def always_fails(tmp_path_factory: pytest.TempPathFactory, cluster_cache: Path, ray_tmp: Path) -> dict[str, Any]:
    return run_scenario("always_fails", tmp_path_factory.mktemp("always-fails"), cluster_cache, ray_tmp,
                        deadline=240)


def by_trial(rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    trials: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        trials.setdefault(row["trial_id"], []).append(row)
    return trials


# ------------------------------------------------------------------ 1. trials on both nodes

def test_study_runs_trials_on_both_nodes(two_nodes):
    spread = part(two_nodes, "spread")
    head, worker = two_nodes["head"], two_nodes["worker"]
    assert head != worker
    assert spread["grid"]["num_trials"] == 4 and spread["grid"]["num_errors"] == 0, spread["grid"]
    assert sorted(spread["events"].values()) == ["completed"] * 4, spread["events"]
    trials = by_trial(spread["results"])
    assert len(trials) == 4
    for trial_id, rows in trials.items():
        assert [row["epoch"] for row in rows] == [1, 2, 3, 4, 5, 6], (trial_id, rows)
    nodes = {row["node_id"] for row in spread["results"]}
    assert nodes == {head, worker}, (f"trials ran on {nodes}, expected the head {head} and the worker {worker} "
                                     f"(CPUs free when the study started: {two_nodes.get('cpus_available_at_start')})")


def test_check_cluster_asks_every_node_for_real(two_nodes):
    """check_cluster's node-pinned tasks on the live cluster: paths that no node has are refused."""
    refusals = part(two_nodes, "spread")["refusals"]
    assert refusals["dataset"] and "has no dataset at" in refusals["dataset"], refusals
    assert "stage it there first" in refusals["dataset"]
    assert refusals["storage"] and "is not visible from node" in refusals["storage"], refusals
    assert "s3://" in refusals["storage"]


# ------------------------------------------------------------------ 2. node loss

def test_trial_on_a_lost_node_resumes_from_its_checkpoint(two_nodes):
    loss = part(two_nodes, "node_loss")
    head, worker = two_nodes["head"], two_nodes["worker"]
    assert "victim" in loss, "no trial reported an epoch from the worker node before the study ended"
    victim = loss["victim"]

    # The study completed: every trial finished all its epochs, none errored.
    assert loss["grid"]["num_errors"] == 0, loss["grid"]
    assert sorted(loss["events"].values()) == ["completed"] * 2, loss["events"]
    final = by_trial(loss["results"])
    assert sorted(final) == sorted(loss["events"])
    for trial_id, rows in final.items():
        assert [row["epoch"] for row in rows] == list(range(1, MAX_EPOCHS + 1)), (trial_id, rows)

    # The victim's reports, in the order the driver received them (raw parts, no de-duplication):
    # its epochs and Tune's iterations go on from where the worker stopped; nothing restarts at 1.
    reports = by_trial(loss["raw_results"])[victim]
    iterations = [row["training_iteration"] for row in reports]
    epochs = [row["epoch"] for row in reports]
    assert iterations == sorted(set(iterations)), f"training_iteration went back: {iterations}"
    assert epochs == iterations == list(range(1, MAX_EPOCHS + 1)), f"epochs {epochs}, iterations {iterations}"
    on_worker = [row["epoch"] for row in reports if row["node_id"] == worker]
    elsewhere = [row["epoch"] for row in reports if row["node_id"] != worker]
    assert on_worker and on_worker == list(range(1, len(on_worker) + 1)), on_worker
    assert elsewhere, (f"trial {victim} finished all its epochs on the worker before the node was removed: "
                       "nothing was resumed (the epochs are too fast to catch)")
    assert elsewhere == list(range(len(on_worker) + 1, MAX_EPOCHS + 1)), \
        f"after epochs {on_worker} on the lost worker the trial went on with epochs {elsewhere}"
    assert {row["node_id"] for row in reports if row["node_id"] != worker} <= {head, loss["replacement"]}

    # Nothing reported before the node was lost is missing from (or changed in) the results table.
    before = loss["before_removal"]
    assert any(row["node_id"] == worker for row in before)
    after = {(row["trial_id"], row["training_iteration"]): row for row in loss["results"]}
    for row in before:
        kept = after.get((row["trial_id"], row["training_iteration"]))
        assert kept == row, f"reported before the node loss: {row}; now: {kept}"


# ------------------------------------------------------------------ 3. check_cluster's decisions

@pytest.fixture
def settings(tmp_path):
    from study.run import build_parser, settings_from_args
    from study.settings import save_settings

    args = build_parser().parse_args(["--storage", str(tmp_path / "studies"), "--name", "cluster-check",
                                      "--cache-dir", str(tmp_path / "cache")])
    settings = settings_from_args(args)
    save_settings(settings)  # study.json, the file every node must see
    return settings


def fake_nodes(monkeypatch, nodes: list[str], hidden: dict[str, set[str]] | None = None) -> list[list[str]]:
    """Pretend the cluster has these live nodes; node N does not see the paths in hidden[N]."""
    import study.driver

    asked: list[list[str]] = []

    def seen(node_ids, paths, timeout=120):
        asked.append(list(paths))
        return {node: [Path(p).exists() and p not in (hidden or {}).get(node, set()) for p in paths]
                for node in node_ids}

    monkeypatch.setattr(study.driver, "_alive_nodes",
                        lambda: [{"NodeID": node, "Alive": True, "Resources": {"CPU": 8.0}} for node in nodes])
    monkeypatch.setattr(study.driver, "_paths_seen_by_nodes", seen)
    return asked


def test_check_cluster_on_one_node_asks_nothing(monkeypatch, settings):
    from study.driver import check_cluster

    asked = fake_nodes(monkeypatch, ["a" * 56], hidden={"a" * 56: {str(Path(settings.storage) / "x")}})
    check_cluster(settings)
    assert asked == []


def test_a_head_alone_with_a_local_storage_folder_is_warned_about(monkeypatch, settings, caplog):
    """A cluster whose workers come later (autoscaling, min 0): nothing to ask yet, but a warning."""
    from study.driver import check_cluster

    asked = fake_nodes(monkeypatch, ["a" * 56])
    with caplog.at_level("WARNING", logger="study.driver"):
        check_cluster(settings, joined=True)
        check_cluster(replace(settings, storage="s3://bucket/cxr-tune"), joined=True)
    assert asked == []
    warnings = [record.getMessage() for record in caplog.records if record.levelname == "WARNING"]
    assert len(warnings) == 1 and "shared file system" in warnings[0] and settings.storage in warnings[0]


def test_check_cluster_passes_when_every_node_sees_everything(monkeypatch, settings):
    from study.driver import check_cluster
    from study.settings import SETTINGS_FILE

    asked = fake_nodes(monkeypatch, ["a" * 56, "b" * 56])
    check_cluster(settings)
    marker = str(Path(settings.storage) / settings.name / SETTINGS_FILE)
    assert asked == [[*settings.data_roots.values(), marker]]


def test_storage_not_visible_from_a_node_is_refused(monkeypatch, settings):
    from study.driver import check_cluster
    from study.settings import SETTINGS_FILE

    marker = str(Path(settings.storage) / settings.name / SETTINGS_FILE)
    fake_nodes(monkeypatch, ["a" * 56, "b" * 56], hidden={"b" * 56: {marker}})
    with pytest.raises(CxrError, match="not visible from node bbbbbbbb") as error:
        check_cluster(settings)
    assert f"--storage {settings.storage}" in str(error.value)
    assert "every node shares" in str(error.value) and "--storage s3://" in str(error.value)


def test_through_ray_client_a_lone_head_is_asked_for_the_storage_folder(monkeypatch, settings):
    """Through Ray Client this machine is no node of the cluster: Tune, on the head, writes a local --storage folder on
    the head's disk while the command reads it here (its summary, its results). A head that does not see the folder
    is refused; one that does (on this machine, or sharing the file system) runs the study."""
    import study.driver
    from study.driver import check_cluster
    from study.settings import SETTINGS_FILE

    monkeypatch.setattr(study.driver, "ray_client_connected", lambda: True)
    marker = str(Path(settings.storage) / settings.name / SETTINGS_FILE)
    asked = fake_nodes(monkeypatch, ["a" * 56])
    check_cluster(settings, joined=True)
    assert asked == [[*settings.data_roots.values(), marker]]
    fake_nodes(monkeypatch, ["a" * 56], hidden={"a" * 56: {marker}})
    with pytest.raises(CxrError) as error:
        check_cluster(settings, joined=True)
    assert str(error.value) == (
        f"--storage {settings.storage} is a folder of this machine, which node aaaaaaaa of the cluster does not see: "
        "through Ray Client (ray://), Tune writes the study on the cluster while this command reads it here; pass "
        "--storage s3://bucket/path (or a file system shared at the same path here and on every node), or run the "
        "command on the head (docs/cluster.md, section 6)")


def test_dataset_missing_on_a_node_is_refused(monkeypatch, settings):
    from study.driver import check_cluster

    root = settings.data_roots["covid-chestxray-3class"]
    fake_nodes(monkeypatch, ["a" * 56, "b" * 56], hidden={"b" * 56: {root}})
    with pytest.raises(CxrError, match="node bbbbbbbb has no dataset at") as error:
        check_cluster(settings)
    assert root in str(error.value) and "stage it there first" in str(error.value)


def test_object_storage_is_not_looked_for_on_the_nodes(monkeypatch, settings):
    """With s3:// storage the nodes reach the bucket themselves; only the datasets are checked."""
    from study.driver import check_cluster

    asked = fake_nodes(monkeypatch, ["a" * 56, "b" * 56])
    check_cluster(replace(settings, storage="s3://bucket/cxr-tune"))
    assert asked == [list(settings.data_roots.values())]


def node(cpus: float, gpus: float = 0.0) -> dict[str, Any]:
    """A live node as ray.nodes() describes it (a node without GPUs lists none)."""
    return {"NodeID": "a" * 56, "Alive": True,
            "Resources": {"CPU": cpus, "memory": 8e9, **({"GPU": gpus} if gpus else {})}}


STUDY_RESUME = "python -m study.run --resume s3://bucket/cxr-tune/grid"
CONFIRM_RESUME = "python -m study.confirm s3://bucket/cxr-tune/grid --resume"


@pytest.mark.parametrize(("cpus", "gpus", "nodes"), [
    (1, 0, [node(1), node(1)]),
    (2, 0, [node(1), node(4)]),
    (2, 0.25, [node(8), node(2, 1)]),
    (0.5, 0, [node(0), node(0.5)]),
])
def test_a_trial_that_some_live_node_can_hold_is_no_news(cpus, gpus, nodes):
    from study.driver import no_node_fits

    assert no_node_fits(cpus, gpus, nodes, "study", STUDY_RESUME) is None


@pytest.mark.parametrize(("cpus", "gpus", "nodes", "largest", "lower", "flags"), [
    (2, 0, [node(1), node(1)], "1 CPU(s) and 0 GPU(s)", "--cpus-per-trial 1 or less", "--cpus-per-trial 1"),
    (1, 1, [node(1), node(1)], "1 CPU(s) and 0 GPU(s)", "--gpus-per-trial 0", "--gpus-per-trial 0"),
    (4, 1, [node(8), node(2, 1)], "2 CPU(s) and 1 GPU(s)", "--cpus-per-trial 2 or less", "--cpus-per-trial 2"),
    (4, 1, [node(2, 0.5), node(1)], "2 CPU(s) and 0.5 GPU(s)",
     "--cpus-per-trial 2 or less and --gpus-per-trial 0.5 or less", "--cpus-per-trial 2 --gpus-per-trial 0.5"),
])
def test_a_trial_that_no_live_node_can_hold_is_warned_about_naming_the_largest(cpus, gpus, nodes, largest, lower,
                                                                               flags):
    """Tune weighs a trial against the whole cluster: two 1-CPU nodes took --cpus-per-trial 2 and the study
    waited for ever, its status line saying only '2 to start'."""
    from study.driver import no_node_fits

    said = no_node_fits(cpus, gpus, nodes, "study", STUDY_RESUME)
    assert said.startswith(f"no live node of the cluster can hold a trial (--cpus-per-trial {cpus:g}, "
                           f"--gpus-per-trial {gpus:g}): the largest has {largest}. ")
    assert "an autoscaling cluster (cluster.yaml) adds one" in said and "cluster-onprem.yaml" in said
    assert said.endswith(f"stop the study with Ctrl-C and resume it with {lower}:\n  {STUDY_RESUME} {flags}")


def test_a_confirm_run_that_no_live_node_can_hold_says_to_resume_the_confirm_run():
    """The warning spoke of 'the study' in a confirm run too, whose resume is study.confirm's, not study.run's."""
    from study.driver import no_node_fits

    said = no_node_fits(1, 1, [node(1), node(1)], "confirm run", CONFIRM_RESUME)
    assert "study" not in said.replace(CONFIRM_RESUME, "")
    assert said.endswith("stop the confirm run with Ctrl-C and resume it with --gpus-per-trial 0:\n"
                         f"  {CONFIRM_RESUME} --gpus-per-trial 0")


def test_a_cluster_of_nodes_without_cpus_is_warned_about_asking_for_a_node():
    """A head started with --num-cpus 0 alone (cluster.yaml's, before its first worker): no lower request fits."""
    from study.driver import no_node_fits

    said = no_node_fits(1, 0.25, [node(0)], "study", STUDY_RESUME)
    assert "the largest has 0 CPU(s) and 0 GPU(s)" in said and "--cpus-per-trial 0" not in said
    assert said.endswith("there, add a node with CPUs (`ray start --address` on it)")


def test_a_joined_cluster_too_small_for_a_trial_is_warned_about_once(monkeypatch, settings, caplog):
    """A warning, not a refusal: an autoscaling cluster adds the node the trial waits for. A Ray instance of the
    study's own was checked before it started (check_local_resources)."""
    from study.driver import check_cluster

    fake_nodes(monkeypatch, ["a" * 56, "b" * 56])  # 8 CPUs each
    with caplog.at_level("WARNING", logger="study.driver"):
        check_cluster(replace(settings, cpus_per_trial=8), joined=True)
        check_cluster(replace(settings, cpus_per_trial=9))
        check_cluster(replace(settings, cpus_per_trial=9), joined=True)
    warnings = [record.getMessage() for record in caplog.records if record.levelname == "WARNING"]
    assert len(warnings) == 1 and warnings[0].startswith("no live node of the cluster can hold a trial "
                                                         "(--cpus-per-trial 9, --gpus-per-trial 0): the largest "
                                                         "has 8 CPU(s) and 0 GPU(s)")
    assert warnings[0].endswith(f"resume it with --cpus-per-trial 8 or less:\n  python -m study.run --resume "
                                f"{settings.study_uri} --cpus-per-trial 8")


def test_a_trial_refuses_a_node_that_joined_after_the_check(monkeypatch, tmp_path):
    """Autoscaled workers join after check_cluster: each trial checks its own node first."""
    import study.trainable
    from study.trainable import TrialContext, check_node

    monkeypatch.setattr(study.trainable, "_node_id", lambda: "c" * 56)
    root = tmp_path / "data"
    root.mkdir()
    context = TrialContext(data_roots={"folder": str(root)}, splits={}, defaults={}, storage=str(tmp_path),
                           settings_file=str(tmp_path / "study" / "study.json"))
    with pytest.raises(CxrError, match=f"--storage {tmp_path} is not visible from node cccccccc"):
        check_node(context, str(root))
    (tmp_path / "study").mkdir()
    (tmp_path / "study" / "study.json").write_text("{}")
    check_node(context, str(root))
    with pytest.raises(CxrError, match="node cccccccc has no dataset at .*stage it there first"):
        check_node(context, str(tmp_path / "absent"))
    check_node(replace(context, settings_file=None), str(root))  # s3:// storage: nothing to look for


def test_a_study_joins_only_a_cluster_started_with_ray_start(monkeypatch, tmp_path):
    """--address, else RAY_ADDRESS, else the address `ray start` records; never another process's ray.init()."""
    from study.driver import cluster_address

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path))
    assert cluster_address(None) is None
    (tmp_path / "ray").mkdir()
    (tmp_path / "ray" / "ray_current_cluster").write_text("10.0.0.5:6379\n")
    assert cluster_address(None).address == "10.0.0.5:6379"
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.6:6379")
    assert cluster_address(None).address == "10.0.0.6:6379"
    assert cluster_address("10.0.0.7:6379").address == "10.0.0.7:6379"


def test_a_cluster_address_nothing_answers_on_is_refused_in_seconds(monkeypatch, tmp_path, capsys):
    """ray.init retried such an address for minutes (its warnings only), after the study had written its
    settings and split: a folder for every failed try."""
    import ray

    from study.local_s3 import free_port
    from study.run import main

    monkeypatch.setattr(ray, "is_initialized", lambda: False)  # as in a fresh `python -m study.run`
    port = free_port()  # nothing listens on it
    started = time.monotonic()
    assert main(["--address", f"127.0.0.1:{port}", "--storage", str(tmp_path / "studies"), "--name", "s"]) == 2
    assert time.monotonic() - started < 30
    err = capsys.readouterr().err
    assert f"error: cannot reach the Ray cluster at 127.0.0.1:{port}" in err and "check --address" in err
    assert not (tmp_path / "studies" / "s").exists()


def test_a_listening_cluster_address_passes_the_reachability_check(monkeypatch):
    import socket

    import ray

    from study.driver import check_cluster_reachable

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        check_cluster_reachable(f"127.0.0.1:{port}")
        check_cluster_reachable(f"ray://127.0.0.1:{port}")
    check_cluster_reachable("auto")  # Ray's own forms are left to ray.init


def test_num_cpus_for_a_study_that_joins_a_cluster_is_refused(monkeypatch, tmp_path, capsys):
    """--num-cpus sizes a Ray instance started here: with a cluster it was ignored without a word."""
    import ray

    from study.run import main

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:6379")
    assert main(["--num-cpus", "8", "--storage", str(tmp_path / "studies"), "--name", "s"]) == 2
    assert ("error: --num-cpus 8 sizes the Ray instance a study starts on this machine; it joins the cluster at "
            "127.0.0.1:6379 (RAY_ADDRESS), whose nodes give their own CPUs: drop --num-cpus") in capsys.readouterr().err
    assert not (tmp_path / "studies" / "s").exists()


def test_num_cpus_beside_a_cluster_started_here_names_the_file_that_recorded_it(monkeypatch, tmp_path, capsys):
    """Neither --address nor RAY_ADDRESS was typed: the refusal says where the cluster's address came from."""
    import ray

    from study.run import main

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path))
    (tmp_path / "ray").mkdir()
    (tmp_path / "ray" / "ray_current_cluster").write_text("127.0.0.1:6379\n")
    assert main(["--num-cpus", "1", "--storage", str(tmp_path / "studies"), "--name", "s"]) == 2
    assert ("it joins the cluster at 127.0.0.1:6379 (recorded by `ray start` on this machine in "
            f"{tmp_path / 'ray' / 'ray_current_cluster'}), whose nodes give their own CPUs") in capsys.readouterr().err
    assert not (tmp_path / "studies" / "s").exists()


@pytest.mark.parametrize("address", ["192.0.2.2", "ray://192.0.2.2", "192.0.2.2:gcs", ":6379", "http://192.0.2.2"])
def test_a_cluster_address_without_host_and_port_is_refused_naming_the_forms(monkeypatch, address):
    """ray.init raised a bare ValueError for it, after the study had written its folder."""
    import ray

    from study.driver import check_cluster_reachable

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    with pytest.raises(CxrError) as refused:
        check_cluster_reachable(address)
    assert str(refused.value) == (f"--address {address}: give host:port (the head's GCS port, 6379 by default) or "
                                  "ray://host:port (its Ray Client port, 10001 by default)")
    monkeypatch.setenv("RAY_ADDRESS", address)
    with pytest.raises(CxrError, match=f"^RAY_ADDRESS {re.escape(address)}: give host:port"):
        check_cluster_reachable(None)


# ------------------------------------------------------------------ 4. bounded retries

def test_a_trial_that_always_fails_ends_after_max_failures_retries(always_fails):
    """--max-failures 1: two attempts, then ERROR, and the study returns (its data root vanished)."""
    assert always_fails["grid"]["num_trials"] == 1 and always_fails["grid"]["num_errors"] == 1, always_fails["grid"]
    attempts = always_fails["attempts"]
    assert len(attempts) == 2 and len(set(attempts)) == 1, attempts
    assert "has no dataset at" in always_fails["errors"][0] and "stage it" in always_fails["errors"][0]
    assert list(always_fails["events"].values()) == ["error"]
    assert always_fails["results"] == []
