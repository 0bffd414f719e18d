"""Offline checks of the shipped Ray cluster configs (cluster.yaml on AWS,
cluster-onprem.yaml for Ray's `local` provider).

`ray up` has no dry run, so these tests run the same validation `ray up` runs
before it touches any machine, with Ray's own code and schema:

1. ``jsonschema.validate(config, <ray.autoscaler>/ray-schema.json)`` on the
   file as written. This comes first because Ray's ``prepare_config`` can
   crash with a bare ``TypeError`` on a badly typed value (for example
   ``max_workers: "many"`` on the local provider) before it validates anything.
2. ``ray.autoscaler._private.util.prepare_config``: merges the provider's
   defaults.yaml, merges setup commands, fills per-node-type worker counts
   (and, for the local provider, builds its node type from head_ip and
   worker_ips).
3. ``ray.autoscaler._private.util.validate_config`` on the prepared config:
   the schema again, plus Ray's cross-field checks (head_node_type is one of
   available_node_types, the min_workers of all types fit in max_workers).

Neither step contacts AWS nor needs boto3: the AWS-specific bootstrap (IAM
role, key pair, subnets, security group, AMI lookup) happens later, inside
`ray up`, and needs credentials. What these tests cannot check is therefore
that the AMI id, region, bucket and instance types exist in your account.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
from pathlib import Path

import jsonschema
import pytest
import ray.autoscaler
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

ROOT = Path(__file__).resolve().parents[1]
AWS_FILE = ROOT / "cluster.yaml"
ONPREM_FILE = ROOT / "cluster-onprem.yaml"
CONFIG_FILES = {"aws": AWS_FILE, "onprem": ONPREM_FILE}
DOCS_FILE = ROOT / "docs" / "cluster.md"
RAY_SCHEMA_FILE = Path(ray.autoscaler.__file__).parent / "ray-schema.json"


def load(path: Path) -> dict:
    with path.open() as f:
        return yaml.safe_load(f)


@pytest.fixture(scope="module")
def ray_schema() -> dict:
    with RAY_SCHEMA_FILE.open() as f:
        return json.load(f)


def validate_offline(config: dict, schema: dict) -> dict:
    """Validate a cluster config the way `ray up` does, offline; return the
    prepared config. Raises jsonschema.ValidationError or ValueError."""
    jsonschema.validate(config, schema)
    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared


def all_commands(config: dict) -> list[str]:
    keys = (
        "initialization_commands",
        "setup_commands",
        "head_setup_commands",
        "worker_setup_commands",
        "head_start_ray_commands",
        "worker_start_ray_commands",
    )
    return [cmd for key in keys for cmd in config.get(key) or []]


def pyproject_upper_bound(package: str) -> str:
    """The `<=` cap pyproject.toml puts on a dependency, e.g. torch -> 2.14.1."""
    text = (ROOT / "pyproject.toml").read_text()
    # '"torch>=2.3,<=2.14.1"' but not '"torchvision..."' when asked for torch.
    requirement = re.search(rf'"{re.escape(package)}(?:\[[^\]]*\])?\s*([<>=!~][^"]*)"', text)
    assert requirement, f"pyproject.toml does not list {package}"
    cap = re.search(r"<=\s*([0-9][0-9.]*)", requirement.group(1))
    assert cap, f"pyproject.toml has no '<=' cap on {package}"
    return cap.group(1)


# --- the shipped files validate --------------------------------------------


@pytest.mark.parametrize("name", sorted(CONFIG_FILES))
def test_shipped_config_passes_rays_schema_and_checks(name, ray_schema):
    config = load(CONFIG_FILES[name])
    prepared = validate_offline(config, ray_schema)
    head = prepared["head_node_type"]
    assert head in prepared["available_node_types"]
    for node_type in prepared["available_node_types"].values():
        assert isinstance(node_type["max_workers"], int)
        assert 0 <= node_type["min_workers"] <= node_type["max_workers"]


def test_aws_config_shape(ray_schema):
    config = load(AWS_FILE)
    prepared = validate_offline(config, ray_schema)
    assert prepared["provider"]["type"] == "aws"
    assert isinstance(prepared["provider"]["region"], str)
    types = prepared["available_node_types"]
    head = prepared["head_node_type"]
    workers = {k: v for k, v in types.items() if k != head}
    assert types[head]["max_workers"] == 0
    # The head is a CPU instance: GPU trials never land on it.
    assert not types[head]["node_config"]["InstanceType"].startswith(("g", "p"))
    assert len(workers) == 1
    (worker,) = workers.values()
    # Autoscaling GPU workers: none while idle, a stated maximum.
    assert worker["min_workers"] == 0
    assert worker["max_workers"] == config["max_workers"] >= 1
    assert worker["node_config"]["InstanceType"].startswith(("g", "p"))
    # Workers write checkpoints to S3 and read datasets from it themselves.
    assert "IamInstanceProfile" in worker["node_config"]
    # Head and workers boot the same image (one place to edit).
    assert worker["node_config"]["ImageId"] == types[head]["node_config"]["ImageId"]
    # The autoscaler on the head drives EC2 through boto3.
    assert any("boto3" in cmd for cmd in prepared["head_setup_commands"])


def test_onprem_config_shape(ray_schema):
    config = load(ONPREM_FILE)
    prepared = validate_offline(config, ray_schema)
    provider = prepared["provider"]
    assert provider["type"] == "local"
    assert isinstance(provider["head_ip"], str) and provider["head_ip"]
    assert provider["worker_ips"] and all(isinstance(ip, str) for ip in provider["worker_ips"])
    assert provider["head_ip"] not in provider["worker_ips"]
    assert prepared["auth"]["ssh_user"]
    # Ray's local provider keeps every listed worker.
    (node_type,) = prepared["available_node_types"].values()
    assert node_type["min_workers"] == node_type["max_workers"] == len(provider["worker_ips"])


# --- what the files install and run ------------------------------------------


@pytest.mark.parametrize("name", sorted(CONFIG_FILES))
def test_installs_the_project_at_its_pinned_versions(name):
    config = load(CONFIG_FILES[name])
    setup = " \n".join(config["setup_commands"])
    for package in ("torch", "torchvision"):
        pin = f"'{package}<={pyproject_upper_bound(package)}'"
        assert pin in setup, f"{CONFIG_FILES[name].name} does not install {pin}"
    assert config["file_mounts"] == {"~/cxr-tune": "."}
    assert re.search(r"pip install [^\n]*~/cxr-tune\b", setup)


def test_both_files_pin_the_same_ray():
    def ray_pin(path: Path) -> str:
        setup = " ".join(load(path)["setup_commands"])
        match = re.search(r"'ray\[[^\]]*\]==([0-9.]+)'", setup)
        assert match, f"{path.name} does not pin one Ray version for every node"
        return match.group(1)

    assert ray_pin(AWS_FILE) == ray_pin(ONPREM_FILE)


@pytest.mark.parametrize("name", sorted(CONFIG_FILES))
def test_stages_datasets_into_the_decode_once_cache(name):
    setup = " ".join(load(CONFIG_FILES[name])["setup_commands"])
    assert "python -m cxrnets.cache" in setup
    for flag in ("--dataset", "--data-root", "--image-size"):
        assert flag in setup
    # a node kept from an earlier install deletes the caches it will never read, before decoding new ones
    assert -1 < setup.find("python -m cxrnets.cache --prune") < setup.find("python -m cxrnets.cache --dataset")
    if name == "aws":
        assert "aws s3 sync" in setup and "/datasets/" in setup


@pytest.mark.parametrize(
    ("name", "storage"),
    [("aws", "--storage s3://"), ("onprem", "--storage /mnt/shared/cxr-tune")],
)
def test_documents_the_study_command_with_shared_storage(name, storage):
    text = CONFIG_FILES[name].read_text()
    assert storage in text
    for flag in ("--gpus-per-trial", "--max-failures", "python -m study.run"):
        assert flag in text


def marked_settings(path: Path) -> set[str]:
    """The settings on the lines of a cluster config marked `# EDIT:` (a YAML key, or a variable the setup
    commands export)."""
    marked = set()
    for line in path.read_text().splitlines():
        code, edit, _ = line.partition("# EDIT:")
        if edit and not code.lstrip().startswith("#"):  # not the comments that say to edit them
            found = re.search(r"export (\w+)=", code) or re.match(r"\s*(\w+):", code)
            assert found, f"{path.name}: no setting on the line marked # EDIT: {line!r}"
            marked.add(found.group(1))
    return marked


def settings_docs_say_to_edit(name: str) -> set[str]:
    """What docs/cluster.md tells the user to change in a config: for cluster.yaml, step 3's table (the last
    name in each row's first cell: `provider: region:` is region); for cluster-onprem.yaml, the list after
    "Edit the `# EDIT:` lines"."""
    docs = DOCS_FILE.read_text()
    if name == "aws":
        step = docs.split("## 3. Edit `cluster.yaml`")[1].split("\n## ")[0]
        cells = re.findall(r"^\| `([^`]+)`", step, re.MULTILINE)
        return {re.findall(r"\w+", cell)[-1] for cell in cells}
    listed = re.search(r"Edit the `# EDIT:` lines \(([^)]*)\)", docs).group(1)
    return set(re.findall(r"`(\w+)`", listed))


@pytest.mark.parametrize("name", sorted(CONFIG_FILES))
def test_the_settings_the_docs_say_to_edit_are_the_lines_marked_edit(name):
    """docs/cluster.md says to change the lines marked `# EDIT:` and nothing else: CXR_IMAGE_SIZES, which the
    nodes decode the datasets at, was left unmarked, so a study at another size decoded in its trials."""
    documented = settings_docs_say_to_edit(name)
    assert {"CXR_DATASETS", "CXR_IMAGE_SIZES"} <= documented, documented
    assert marked_settings(CONFIG_FILES[name]) == documented


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed here")
@pytest.mark.parametrize("name", sorted(CONFIG_FILES))
def test_every_command_is_valid_bash(name):
    for cmd in all_commands(load(CONFIG_FILES[name])):
        result = subprocess.run(["bash", "-n", "-c", cmd], capture_output=True, text=True)
        assert result.returncode == 0, f"{cmd!r}: {result.stderr}"


# --- bad configs are rejected ------------------------------------------------


def _set(path: tuple, value):
    def mutate(config: dict) -> None:
        target = config
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return mutate


def _first_worker_type(config: dict) -> str:
    return next(k for k in config["available_node_types"] if k != config["head_node_type"])


BAD_AWS = {
    "max_workers is not a number": _set(("max_workers",), "many"),
    "unknown top-level key": _set(("max_worker",), 4),
    "provider without type": lambda c: c["provider"].pop("type"),
    "resources not a number": lambda c: c["available_node_types"][_first_worker_type(c)].update(
        resources={"GPU": "one"}
    ),
    "node type without node_config": lambda c: c["available_node_types"][
        _first_worker_type(c)
    ].pop("node_config"),
    # Passes the schema; only validate_config's cross-field check catches it.
    "min_workers above max_workers": lambda c: c["available_node_types"][
        _first_worker_type(c)
    ].update(min_workers=c["max_workers"] + 1),
}

BAD_ONPREM = {
    "max_workers is not a number": _set(("max_workers",), "many"),
    "unknown top-level key": _set(("worker_ips",), ["192.168.1.11"]),
    "worker_ips not a list": _set(("provider", "worker_ips"), "192.168.1.11"),
}


@pytest.mark.parametrize("case", sorted(BAD_AWS))
def test_bad_aws_config_is_rejected(case, ray_schema):
    config = load(AWS_FILE)
    BAD_AWS[case](config)
    with pytest.raises((jsonschema.ValidationError, ValueError)):
        validate_offline(config, ray_schema)


@pytest.mark.parametrize("case", sorted(BAD_ONPREM))
def test_bad_onprem_config_is_rejected(case, ray_schema):
    config = load(ONPREM_FILE)
    BAD_ONPREM[case](config)
    with pytest.raises(jsonschema.ValidationError):
        validate_offline(config, ray_schema)


def test_schema_runs_before_prepare_config(ray_schema):
    """Why validate_offline checks the schema first: on this input Ray's own
    prepare_config + validate_config die with a TypeError instead of saying
    what is wrong; the schema names the field."""
    config = load(ONPREM_FILE)
    config["max_workers"] = "many"
    # Ray 2.60: TypeError ('>' not supported between 'str' and 'int').
    with pytest.raises((TypeError, jsonschema.ValidationError)):
        validate_config(prepare_config(copy.deepcopy(config)))
    with pytest.raises(jsonschema.ValidationError, match="'many' is not of type 'integer'"):
        validate_offline(config, ray_schema)
