"""Tests for cxrnets.models: building, image-size limits and loading weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision

from cxrnets.errors import CxrError
from cxrnets.models import (
    MIN_IMAGE_SIZE,
    MODEL_NAMES,
    build_model,
    check_image_size,
    check_starting_weights,
    fetch_imagenet_weights,
    imagenet_weights_path,
)

HEAD = {"alexnet": "classifier.6", "vgg11": "classifier.6", "resnet50": "fc"}


@pytest.fixture
def torch_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty torchvision cache under tmp_path; restored after the test."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)  # undo any set_dir on teardown
    torch.hub.set_dir(str(tmp_path / "torch" / "hub"))
    return tmp_path / "torch" / "hub"


def _imagenet_state(name: str) -> dict[str, torch.Tensor]:
    """A state dict with torchvision's own 1000-class head (random values)."""
    return torchvision.models.get_model(name, weights=None).state_dict()


def _assert_backbone_equal(model: torch.nn.Module, state: dict, name: str, num_classes: int) -> None:
    own = model.state_dict()
    head = HEAD[name]
    assert own[f"{head}.weight"].shape[0] == num_classes
    assert own[f"{head}.bias"].shape == (num_classes,)
    backbone = [k for k in state if not k.startswith(head + ".")]
    assert len(backbone) == len(own) - 2
    for key in backbone:
        assert torch.equal(own[key], state[key]), key


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_builds_at_min_image_size(name: str) -> None:
    size = MIN_IMAGE_SIZE[name]
    check_image_size(name, size)
    model = build_model(name, num_classes=3)
    with torch.no_grad():
        out = model(torch.randn(2, 3, size, size))  # train mode: BatchNorm runs as in training
    assert out.shape == (2, 3)
    if size > 1:
        with pytest.raises(RuntimeError):
            with torch.no_grad():
                model(torch.randn(2, 3, size - 1, size - 1))
    with pytest.raises(CxrError, match=f"{name}.*{size}"):
        check_image_size(name, size - 1)


def test_min_image_size_values() -> None:
    assert MIN_IMAGE_SIZE == {"alexnet": 63, "vgg11": 32, "resnet50": 1}
    with pytest.raises(CxrError, match="alexnet"):
        check_image_size("alexnet", 32)


def test_unknown_model_lists_known_names() -> None:
    with pytest.raises(CxrError, match="densenet.*alexnet, vgg11, resnet50"):
        build_model("densenet", num_classes=3)
    with pytest.raises(CxrError, match="densenet"):
        check_image_size("densenet", 224)


@pytest.mark.parametrize("num_classes", [1, 0])
def test_num_classes_must_be_two_or_more(num_classes: int) -> None:
    with pytest.raises(CxrError, match="num_classes"):
        build_model("alexnet", num_classes=num_classes)


@pytest.mark.parametrize("name", ["alexnet", "resnet50"])
def test_imagenet_state_dict_from_file(name: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    state = _imagenet_state(name)
    path = tmp_path / f"{name}.pth"
    torch.save(state, path)
    with caplog.at_level("INFO", logger="cxrnets.models"):
        model = build_model(name, num_classes=4, weights=path)
    _assert_backbone_equal(model, state, name, 4)
    assert "re-initialised" in caplog.text


def test_imagenet_weights_from_torchvision_cache(torch_home: Path) -> None:
    path = imagenet_weights_path("resnet50")
    assert path.parent == torch_home / "checkpoints"
    assert path.name == "resnet50-11ad3fa6.pth"
    state = _imagenet_state("resnet50")
    path.parent.mkdir(parents=True)
    torch.save(state, path)
    model = build_model("resnet50", num_classes=3, pretrained=True, allow_download=False)
    _assert_backbone_equal(model, state, "resnet50", 3)


def test_missing_imagenet_weights_without_download(torch_home: Path) -> None:
    path = imagenet_weights_path("alexnet")
    url = torchvision.models.AlexNet_Weights.DEFAULT.url
    with pytest.raises(CxrError) as err:
        build_model("alexnet", num_classes=3, pretrained=True, allow_download=False)
    assert url in str(err.value)
    assert str(path) in str(err.value)
    assert not path.exists()


def test_failed_download_says_where_to_put_the_file(
    torch_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_network(*args: object, **kwargs: object) -> None:
        raise OSError("network is unreachable")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_network)
    with pytest.raises(CxrError, match="network is unreachable") as err:
        build_model("alexnet", num_classes=3, pretrained=True)
    assert torchvision.models.AlexNet_Weights.DEFAULT.url in str(err.value)
    assert str(imagenet_weights_path("alexnet")) in str(err.value)


def test_fetching_weights_downloads_only_what_the_cache_lacks(torch_home: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    def no_network(*args: object, **kwargs: object) -> None:
        raise OSError("network is unreachable")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_network)
    path = imagenet_weights_path("resnet50")
    with pytest.raises(CxrError, match=r"the ImageNet weights for model 'resnet50' are not available \(the "
                                       r"download failed: OSError: network is unreachable\)") as err:
        fetch_imagenet_weights("resnet50")
    assert torchvision.models.ResNet50_Weights.DEFAULT.url in str(err.value) and str(path) in str(err.value)
    path.parent.mkdir(parents=True)
    torch.save(_imagenet_state("resnet50"), path)
    assert fetch_imagenet_weights("resnet50") == path  # in the cache: nothing to download


def _unusable_cache_file(path: Path, damage: str) -> None:
    if damage == "random bytes":  # seeded: not starting with a pickle's or a zip's opening bytes
        random = torch.Generator().manual_seed(0)
        path.write_bytes(torch.randint(0, 256, (4096,), dtype=torch.uint8, generator=random).numpy().tobytes())
    elif damage == "truncated":
        torch.save({"features.0.weight": torch.zeros(64, 3, 11, 11)}, path)
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif damage == "another model's":
        torch.save(torch.nn.Conv2d(3, 8, 3).state_dict(), path)
    else:
        torch.save([1, 2, 3], path)


@pytest.mark.parametrize("damage, reason", [
    ("random bytes", "is not a PyTorch state dict (it starts with b\"\\xac/u"),
    ("truncated", "is not a readable state dict (truncated or corrupt: "),
    ("another model's", "does not fit model 'alexnet' (missing keys: features.0.weight"),
    ("no state dict", "holds no state dict"),
])
def test_an_unusable_imagenet_cache_file_is_refused_up_front(
    torch_home: Path, monkeypatch: pytest.MonkeyPatch, damage: str, reason: str
) -> None:
    """The check a run makes before it reads its data loads the cache file: a damaged one, or another model's
    saved under its name, is refused there, saying to delete or replace that file, not later by build_model
    with the advice for a --weights file."""
    def no_download(*args: object, **kwargs: object) -> None:
        raise AssertionError("the file in the cache was not used")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_download)
    path = imagenet_weights_path("alexnet")
    path.parent.mkdir(parents=True)
    _unusable_cache_file(path, damage)
    expected = (f"torchvision's cache file {path} of the ImageNet weights for model 'alexnet' ",
                f": delete it to have it downloaded again, or replace it with a copy of "
                f"{torchvision.models.AlexNet_Weights.DEFAULT.url}")
    for check in (lambda: check_starting_weights("alexnet", pretrained=True),
                  lambda: fetch_imagenet_weights("alexnet"),
                  lambda: build_model("alexnet", num_classes=3, pretrained=True)):
        with pytest.raises(CxrError) as error:
            check()
        message = str(error.value)
        assert message.startswith(expected[0] + reason) and expected[1] in message, message
        assert "torch.save(model.state_dict())" not in message and "miniz" not in message


@pytest.mark.parametrize("legacy", [False, True])
def test_the_check_of_the_imagenet_cache_maps_the_file_and_reads_a_legacy_one(
    torch_home: Path, monkeypatch: pytest.MonkeyPatch, legacy: bool
) -> None:
    """check_starting_weights maps the tensors of a zip file rather than reading them (build_model reads them
    once, later); a file in torch's legacy format, which cannot be mapped, is read whole and passes too."""
    path = imagenet_weights_path("resnet50")
    path.parent.mkdir(parents=True)
    torch.save(_imagenet_state("resnet50"), path, _use_new_zipfile_serialization=not legacy)
    loads = []
    real_load = torch.load
    monkeypatch.setattr(torch, "load", lambda *args, **kwargs: loads.append(kwargs["mmap"]) or real_load(*args,
                                                                                                         **kwargs))
    check_starting_weights("resnet50", pretrained=True)
    assert loads == [not legacy]


def test_corrupt_weights_file(tmp_path: Path) -> None:
    path = tmp_path / "corrupt.pth"
    path.write_bytes(torch.randint(0, 256, (4096,), dtype=torch.uint8).numpy().tobytes())
    with pytest.raises(CxrError, match="corrupt.pth"):
        build_model("alexnet", num_classes=3, weights=path)


@pytest.mark.parametrize("kind, said", [
    ("empty", "an empty file (0 bytes), not a state dict: a copy, download or save that did not finish? copy the "
              "file again"),
    ("git-LFS pointer", "a git-LFS pointer, not the file it stands for: run git lfs pull in its repository"),
    ("study's sidecar", "not a PyTorch state dict (it starts with b'{\"epoch\": 3, \"metric\": \"'): pass a "
                        "file saved with torch.save(model.state_dict())"),
    ("whole model", "a pickled torch.nn.modules.linear.Linear (a whole model saved with torch.save(model)?), not the "
                    "model's weights: pass a file saved with torch.save(model.state_dict())"),
    ("truncated", "not a readable state dict (truncated or corrupt: "),
])
def test_a_weights_file_that_does_not_load_is_named_for_what_it_is(tmp_path: Path, kind: str, said: str) -> None:
    """torch's own errors named none of these ('EOFError()', 'Unsupported operand 123', a miniz error cut short,
    advice to allow the pickled class with add_safe_globals, that is to load unsafely): the weights file's
    messages are a checkpoint's."""
    path = tmp_path / "start.pt"
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "git-LFS pointer":
        path.write_bytes(b"version https://git-lfs.github.com/spec/v1\noid sha256:4f1e\nsize 94371234\n")
    elif kind == "study's sidecar":
        path.write_text('{"epoch": 3, "metric": "val/f1_macro", "value": 0.5}')
    elif kind == "whole model":
        torch.save(torch.nn.Linear(2, 3), path)
    else:
        torch.save(build_model("alexnet", num_classes=3).state_dict(), path)
        path.write_bytes(path.read_bytes()[:100_000])
    for check in (lambda: check_starting_weights("alexnet", weights=path),
                  lambda: build_model("alexnet", num_classes=3, weights=path)):
        with pytest.raises(CxrError) as error:
            check()
        message = str(error.value)
        assert message.startswith(f"weights file {path}: {said}"), message
        assert "safe_globals" not in message and "miniz" not in message and "Error" not in message, message
    if kind == "truncated":
        assert message.endswith("): a copy, download or save that did not finish? copy the file again"), message


def test_missing_weights_file(tmp_path: Path) -> None:
    with pytest.raises(CxrError, match="nothere.pth"):
        build_model("alexnet", num_classes=3, weights=tmp_path / "nothere.pth")


def test_own_checkpoint_loads_with_head(tmp_path: Path) -> None:
    trained = build_model("alexnet", num_classes=3)
    path = tmp_path / "checkpoint.pt"
    torch.save({"model": trained.state_dict(), "config": {"model": "alexnet", "lr": 0.01}}, path)
    model = build_model("alexnet", num_classes=3, weights=path)
    for key, value in trained.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key


@pytest.fixture(scope="module")
def covid_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, torch.Tensor]]:
    """One of our checkpoints: a ResNet50 of covid-chestxray-3class's classes, single-label."""
    state = build_model("resnet50", num_classes=3).state_dict()
    path = tmp_path_factory.mktemp("covid") / "checkpoint.pt"
    torch.save({"model": state, "classes": ["COVID-19", "Other pneumonia", "No Finding"], "multilabel": False}, path)
    return path, state


@pytest.mark.parametrize("classes, multilabel, reason", [
    (["COVID-19", "Other pneumonia", "No Finding"], False, ""),
    (["COVID", "Normal", "Viral Pneumonia"], False,
     "the file's head scores other classes: ['COVID-19', 'Other pneumonia', 'No Finding'], this model ['COVID', "
     "'Normal', 'Viral Pneumonia']"),
    (["No Finding", "COVID-19", "Other pneumonia"], False, "the file's head scores the same classes in another order"),
    (["COVID-19", "Other pneumonia", "No Finding"], True, "the file's head is single-label, this model multi-label"),
])
def test_a_checkpoints_head_loads_only_into_a_model_of_its_classes(
    covid_checkpoint, caplog: pytest.LogCaptureFixture, classes: list[str], multilabel: bool, reason: str
) -> None:
    """Its head's outputs are its classes in its order: another dataset's classes (even as many), the same in
    another order, or multi-label for single-label would start a run from outputs that mean other things."""
    path, state = covid_checkpoint
    with caplog.at_level("INFO", logger="cxrnets.models"):
        model = build_model("resnet50", num_classes=3, weights=path, classes=classes, multilabel=multilabel)
    own = model.state_dict()
    assert all(torch.equal(own[key], state[key]) for key in state if not key.startswith("fc."))
    if reason:
        assert not torch.equal(own["fc.weight"], state["fc.weight"])
        assert f"the head was re-initialised ({reason}" in caplog.text, caplog.text
    else:
        assert torch.equal(own["fc.weight"], state["fc.weight"]) and torch.equal(own["fc.bias"], state["fc.bias"])
        assert "head included" in caplog.text


def test_weights_of_another_model_are_rejected(tmp_path: Path) -> None:
    path = tmp_path / "resnet.pt"
    torch.save(build_model("resnet50", num_classes=3).state_dict(), path)
    with pytest.raises(CxrError, match=r"resnet\.pt.*alexnet.*(missing|unexpected) keys"):
        build_model("alexnet", num_classes=3, weights=path)


def test_backbone_shape_mismatch_is_rejected(tmp_path: Path) -> None:
    state = build_model("alexnet", num_classes=3).state_dict()
    state["features.0.weight"] = torch.zeros(32, 3, 11, 11)
    path = tmp_path / "bad.pt"
    torch.save(state, path)
    with pytest.raises(CxrError, match=r"bad\.pt.*features\.0\.weight"):
        build_model("alexnet", num_classes=3, weights=path)


def test_file_without_state_dict_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "list.pt"
    torch.save([1, 2, 3], path)
    with pytest.raises(CxrError, match=r"list\.pt.*no state dict"):
        build_model("alexnet", num_classes=3, weights=path)


@pytest.mark.parametrize("pretrained", [False, True])
def test_state_dict_saved_before_num_batches_tracked_loads(
    pretrained: bool, tmp_path: Path, torch_home: Path
) -> None:
    """Files saved before PyTorch 0.4.1 (torchvision's original resnet50-19c8e357.pth among them) have no
    BatchNorm num_batches_tracked: PyTorch loads them, and so do --weights and the ImageNet cache."""
    state = {k: v for k, v in _imagenet_state("resnet50").items() if not k.endswith("num_batches_tracked")}
    path = imagenet_weights_path("resnet50") if pretrained else tmp_path / "resnet50-19c8e357.pth"
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    model = build_model("resnet50", num_classes=3, pretrained=pretrained, allow_download=False,
                        weights=None if pretrained else path)
    own = model.state_dict()
    for key, value in state.items():
        if not key.startswith("fc."):
            assert torch.equal(own[key], value), key
    assert int(own["bn1.num_batches_tracked"]) == 0


@pytest.mark.parametrize("prefix", ["module.", "_orig_mod."])
def test_weights_with_a_wrapper_prefix_name_it(prefix: str, tmp_path: Path) -> None:
    path = tmp_path / "wrapped.pt"
    torch.save({prefix + k: v for k, v in build_model("alexnet", num_classes=3).state_dict().items()}, path)
    with pytest.raises(CxrError, match=rf"every key in wrapped\.pt starts with '{prefix}'"):
        build_model("alexnet", num_classes=3, weights=path)


@pytest.mark.parametrize("uri", ["s3://bucket/study/weights/abc.pt", "gs://bucket/abc.pt", "https://host/abc.pt"])
def test_a_weights_uri_says_to_download_it(uri: str) -> None:
    with pytest.raises(CxrError) as error:
        build_model("alexnet", num_classes=3, weights=uri)
    assert str(error.value).startswith(f"weights file {uri} is a URL, not a local file: download it"), error.value
