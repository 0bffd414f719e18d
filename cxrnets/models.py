"""The classifiers a study can train: torchvision's AlexNet, VGG11 and ResNet50.

Every model is built without weights, gets a fresh ``nn.Linear`` head for the
number of classes, and can then be initialised from

* torchvision's ImageNet weights (``pretrained=True``), read from torchvision's
  own cache file (``imagenet_weights_path``) or downloaded into it, or
* a local file (``weights=...``): a plain state dict, or one of our own
  checkpoints, which hold the state dict under ``"model"``.

Files are always read with ``torch.load(..., weights_only=True)``: a pickled
file can run code. A head whose shape does not fit (an ImageNet head has 1000
classes), or one of our checkpoints' head for other classes (or the same in
another order, or multi-label for single-label), is skipped and stays freshly
initialised; any other mismatch is an error.

``MIN_IMAGE_SIZE`` (cxrnets.names) is the smallest square input each model accepts. It follows
from the layers (torchvision's versions, which end in an adaptive average pool,
so only the pooling/strided layers before it limit the size):

* ``alexnet`` 63 px: conv 11x11 stride 4 padding 2 gives ``(s - 7) // 4 + 1``;
  each of the three 3x3 stride-2 max-pools needs at least 3 px in, so the
  last needs 3, the second 7, the first 15, and ``(s - 7) // 4 + 1 >= 15``
  means ``s >= 63`` (at 32 px the last max-pool gets 1 px and fails).
* ``vgg11`` 32 px: five 2x2 stride-2 max-pools (3x3 convs keep the size), each
  halving with floor, need ``2**5`` px.
* ``resnet50`` 1 px: every strided layer (7x7/2 conv with padding 3, 3x3/2
  max-pool with padding 1, 3x3/2 and 1x1/2 convs) maps 1 px to 1 px. In
  training mode BatchNorm needs more than one value per channel, so at 32 px
  or less (where the last stage is 1x1) a batch must hold at least 2 images.

The values were confirmed by forward passes (train and eval mode, batch 2) at
every size from 1 to 79 px
(the tests check ``MIN`` works and, for AlexNet and VGG11, that ``MIN - 1``
fails).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
import torchvision
from torch import nn

from cxrnets.errors import CxrError
from cxrnets.names import MIN_IMAGE_SIZE, MODEL_NAMES, check_image_size, check_model_name
from cxrnets.torch_files import UnreadableFile, load_safely

__all__ = [
    "MODEL_NAMES",
    "MIN_IMAGE_SIZE",
    "check_image_size",
    "build_model",
    "head_size",
    "imagenet_weights_path",
]

logger = logging.getLogger(__name__)

# The state-dict keys of each model's classification head.
_HEAD_KEYS: dict[str, tuple[str, str]] = {
    "alexnet": ("classifier.6.weight", "classifier.6.bias"),
    "vgg11": ("classifier.6.weight", "classifier.6.bias"),
    "resnet50": ("fc.weight", "fc.bias"),
}

# What a weights file may be.
WEIGHTS_FILES = "a file saved with torch.save(model.state_dict()) or one of our checkpoints"

# How many offending keys an error message shows.
_SHOW_KEYS = 5


def _imagenet_url(name: str) -> str:
    return torchvision.models.get_model_weights(name).DEFAULT.url


def imagenet_weights_path(name: str) -> Path:
    """Where torchvision's cache keeps the DEFAULT ImageNet weights of ``name``.

    That is ``torch.hub.get_dir()/checkpoints/<file name of the weights URL>``,
    the file ``torchvision.models.<name>(weights="DEFAULT")`` would read; so it
    follows ``TORCH_HOME`` and ``torch.hub.set_dir``.
    """
    check_model_name(name)
    file_name = os.path.basename(urlparse(_imagenet_url(name)).path)
    return Path(torch.hub.get_dir()) / "checkpoints" / file_name


def _missing_imagenet_error(name: str, path: Path, reason: str) -> CxrError:
    return CxrError(
        f"the ImageNet weights for model {name!r} are not available ({reason}): "
        f"download {_imagenet_url(name)} and save it as {path} "
        f"(torchvision's cache; set TORCH_HOME to move it)"
    )


def _unusable_imagenet_error(name: str, path: Path, reason: str) -> CxrError:
    return CxrError(
        f"torchvision's cache file {path} of the ImageNet weights for model {name!r} {reason}: delete it to have "
        f"it downloaded again, or replace it with a copy of {_imagenet_url(name)}"
    )


def _fitting_imagenet_state(name: str, path: Path, own: dict[str, Any], saved: Any) -> dict[str, Any]:
    """The state dict in ``saved`` (read from torchvision's cache file ``path``), checked to fit ``own``, the
    state dict of model ``name``, bar the head."""
    state = _state_dict_in(saved)
    if state is None:
        raise _unusable_imagenet_error(name, path, "holds no state dict (a mapping of names to tensors)")
    problems = _misfits(own, set(_HEAD_KEYS[name]), state)
    if problems:
        raise _unusable_imagenet_error(
            name, path, f"does not fit model {name!r} ({'; '.join(problems)}): another model's weights?"
        )
    return state


def _imagenet_state_dict(
    name: str, own: dict[str, Any], allow_download: bool, shapes_only: bool = False
) -> tuple[dict[str, Any], Path]:
    """``name``'s ImageNet state dict, from torchvision's cache file (downloaded into it first if it is not
    there and ``allow_download``), checked to fit ``own`` (the model's state dict) bar the head, and that file;
    ``shapes_only`` as ``_load``'s."""
    path = imagenet_weights_path(name)
    if path.is_file():
        try:
            saved = load_safely(path, "state dict", f"a copy of {_imagenet_url(name)}", mmap=shapes_only)
        except UnreadableFile as error:
            raise _unusable_imagenet_error(name, path, f"is {error.what}") from error
        return _fitting_imagenet_state(name, path, own, saved), path
    if not allow_download:
        raise _missing_imagenet_error(name, path, f"{path} does not exist and downloading is off")
    url = _imagenet_url(name)
    logger.info("downloading ImageNet weights for %s from %s to %s", name, url, path)
    try:
        saved = torch.hub.load_state_dict_from_url(
            url,
            model_dir=str(path.parent),
            map_location="cpu",
            progress=False,
            check_hash=True,
            file_name=path.name,
            weights_only=True,
        )
    except Exception as exc:  # no network, a proxy, a bad hash: all end the same way
        raise _missing_imagenet_error(
            name, path, f"the download failed: {type(exc).__name__}: {exc}"
        ) from exc
    return _fitting_imagenet_state(name, path, own, saved), path


def _state_shapes(name: str) -> dict[str, torch.Tensor]:
    """The state dict of model ``name`` (ImageNet's 1000-class head) on the meta device: shapes without
    values, built in milliseconds where VGG11's random initialisation takes a second or more."""
    with torch.device("meta"):
        return torchvision.models.get_model(name, weights=None).state_dict()


def fetch_imagenet_weights(name: str) -> Path:
    """Torchvision's cache file of ``name``'s ImageNet weights, downloaded into it first if it is not there,
    and checked to load and fit ``name`` (its tensors are mapped, not read); ``CxrError`` naming the file and
    its URL where it cannot be downloaded, or where the file there is damaged or holds another model's weights."""
    return _imagenet_state_dict(name, _state_shapes(name), allow_download=True, shapes_only=True)[1]


def local_file(text: str | Path, named: str = "") -> Path:
    """`text` as a local path (`~` expanded); CxrError for a URL (s3://, gs://, https://...), which is never
    downloaded here, saying to download it. `named` leads the message: what the file is."""
    if "://" in str(text):  # Path would make s3://bucket/x s3:/bucket/x, a local path that does not exist
        raise CxrError(f"{named + ' ' if named else ''}{text} is a URL, not a local file: download it (aws s3 cp, "
                       "gcloud storage cp, curl -O) and pass the local copy")
    return Path(text).expanduser()


# The classes a saved head scores, and whether it is multi-label: our checkpoints say; a plain state dict does not.
_HeadLabels = tuple[list[str], bool]


def _read_file(path: Path, shapes_only: bool = False) -> tuple[dict[str, Any], _HeadLabels | None]:
    """The state dict in weights file ``path``, and the labels of its head where the file names them."""
    if not path.is_file():
        raise CxrError(f"weights file {path} does not exist (or is not a file): check the path")
    saved = load_safely(path, "state dict", WEIGHTS_FILES, f"weights file {path}", mmap=shapes_only)
    state = _state_dict_in(saved)
    if state is None:
        raise CxrError(
            f"weights file {path} holds no state dict (a mapping of names to tensors, "
            f"either at the top or under 'model'); pass {WEIGHTS_FILES}"
        )
    labels = None
    if isinstance(saved, Mapping) and isinstance(saved.get("classes"), list) and "multilabel" in saved:
        labels = [str(name) for name in saved["classes"]], bool(saved["multilabel"])
    return state, labels


def _other_labels(saved: _HeadLabels | None, classes: list[str] | None, multilabel: bool) -> str:
    """How the head saved with ``saved`` labels scores other labels than a model of ``classes`` (multi-label
    if ``multilabel``) would; "" where they are the same, or where either side is not known."""
    if saved is None or classes is None:
        return ""
    saved_classes, saved_multilabel = saved
    if saved_classes != list(classes):
        how = "the same classes in another order" if sorted(saved_classes) == sorted(classes) else "other classes"
        return f"the file's head scores {how}: {saved_classes}, this model {list(classes)}"
    if saved_multilabel != multilabel:
        kind = {True: "multi-label", False: "single-label"}
        return f"the file's head is {kind[saved_multilabel]}, this model {kind[multilabel]}"
    return ""


def _state_dict_in(saved: Any) -> dict[str, Any] | None:
    """The state dict in ``saved``: ``saved`` itself, or ``saved["model"]`` for our checkpoints; None where
    there is none."""
    if isinstance(saved, Mapping) and isinstance(saved.get("model"), Mapping):
        saved = saved["model"]
    if not isinstance(saved, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in saved.items()
    ):
        return None
    return dict(saved)


def _first(keys: list[str]) -> str:
    shown = ", ".join(keys[:_SHOW_KEYS])
    more = len(keys) - _SHOW_KEYS
    return shown + (f" (and {more} more)" if more > 0 else "")


def _misfits(own: dict[str, Any], head: set[str], state: dict[str, Any]) -> list[str]:
    """How ``state`` does not fit a model whose state dict is ``own``: missing, unexpected and mis-shaped keys.

    BatchNorm's ``num_batches_tracked`` may be absent: files saved before PyTorch 0.4.1 (torchvision's
    original ``resnet50-19c8e357.pth`` among them) have none, and it stays 0, as ``load_state_dict`` leaves it.
    """
    missing = [k for k in own if k not in state and k not in head and not k.endswith(".num_batches_tracked")]
    unexpected = [k for k in state if k not in own]
    mismatched = [
        f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
        for k in own
        if k in state and k not in head and state[k].shape != own[k].shape
    ]
    problems = []
    if missing:
        problems.append(f"missing keys: {_first(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_first(unexpected)}")
    if mismatched:
        problems.append(f"shape mismatches (file vs model): {_first(mismatched)}")
    return problems


# Key prefixes of a state dict saved from a wrapped model, and the wrapper that adds each.
_WRAPPER_PREFIXES = {
    "module.": "nn.DataParallel or DistributedDataParallel",
    "_orig_mod.": "torch.compile",
}


def _wrapper_prefix(own: dict[str, Any], head: set[str], state: dict[str, Any]) -> str | None:
    """The prefix every key of ``state`` starts with, where removing it makes ``state`` fit; else None."""
    for prefix in _WRAPPER_PREFIXES:
        if state and all(k.startswith(prefix) for k in state):
            if not _misfits(own, head, {k.removeprefix(prefix): v for k, v in state.items()}):
                return prefix
    return None


def _refuse_a_misfit(own: dict[str, Any], name: str, state: dict[str, Any], path: Path) -> None:
    """CxrError unless ``state`` fits model ``name``, whose state dict is ``own``, bar its head."""
    head = set(_HEAD_KEYS[name])
    problems = _misfits(own, head, state)
    if problems:
        prefix = _wrapper_prefix(own, head, state)
        if prefix is not None:
            raise CxrError(
                f"weights file {path} does not fit model {name!r}: every key in {path.name} starts with "
                f"{prefix!r} (saved from a model wrapped in {_WRAPPER_PREFIXES[prefix]}): save the state dict "
                f"of the model inside the wrapper, or remove {prefix!r} from the keys"
            )
        raise CxrError(
            f"weights file {path} does not fit model {name!r}: {'; '.join(problems)}; "
            f"pass weights saved from a {name} model"
        )


def _load_into(model: nn.Module, name: str, state: dict[str, Any], path: Path, other_labels: str = "") -> None:
    """Copy ``state`` into ``model``; only the head may be absent or of another shape, and it is left out where
    ``other_labels`` says how it scores other labels than the model's."""
    own = model.state_dict()
    _refuse_a_misfit(own, name, state, path)
    head = set(_HEAD_KEYS[name])
    skipped = sorted(k for k in head if other_labels or k not in state or state[k].shape != own[k].shape)
    to_load = {k: v for k, v in state.items() if k not in skipped}
    model.load_state_dict(to_load, strict=False)
    if skipped:
        why = other_labels or "file: {}; model: {} classes".format(
            ", ".join(f"{k} {tuple(state[k].shape) if k in state else 'absent'}" for k in skipped),
            own[_HEAD_KEYS[name][1]].shape[0],
        )
        logger.info(
            "loaded %d tensors from %s into %s; the head was re-initialised (%s)", len(to_load), path, name, why
        )
    else:
        logger.info("loaded %d tensors from %s into %s, head included", len(to_load), path, name)


def _replace_head(model: nn.Module, name: str, num_classes: int) -> None:
    if name == "resnet50":
        model.fc = nn.Linear(model.fc.in_features, num_classes)
    else:
        old = model.classifier[6]
        model.classifier[6] = nn.Linear(old.in_features, num_classes)


def build_model(
    name: str,
    num_classes: int,
    pretrained: bool = False,
    weights: str | Path | None = None,
    allow_download: bool = True,
    classes: list[str] | None = None,
    multilabel: bool = False,
) -> nn.Module:
    """Build model ``name`` with a fresh ``num_classes``-way linear head.

    ``weights`` (a state dict file, or a checkpoint holding one under
    ``"model"``) initialises everything whose shape fits; it implies
    ``pretrained``. The head of one of our checkpoints, which name their
    classes, is loaded only where they are ``classes``, in that order, and
    single- or multi-label as ``multilabel`` says (or where ``classes`` is
    None). ``pretrained`` without ``weights`` reads torchvision's
    ImageNet weights from its cache (``imagenet_weights_path``), downloading
    them there first if ``allow_download``. The ImageNet head (1000 classes)
    is never loaded into a head of another size.
    """
    check_model_name(name)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise CxrError(f"num_classes must be an integer of at least 2, got {num_classes!r}")
    if classes is not None and len(classes) != num_classes:
        raise CxrError(f"num_classes {num_classes} is not the number of classes {list(classes)}")
    model = torchvision.models.get_model(name, weights=None)
    _replace_head(model, name, num_classes)
    if weights is not None:
        path = local_file(weights, "weights file")
        state, saved_labels = _read_file(path)
        _load_into(model, name, state, path, _other_labels(saved_labels, classes, multilabel))
    elif pretrained:
        state, path = _imagenet_state_dict(name, model.state_dict(), allow_download)
        _load_into(model, name, state, path)
    return model


def head_size(name: str, state: Mapping[str, Any]) -> int | None:
    """How many outputs (classes) the head of model ``name`` in the state dict ``state`` has; None where
    ``state`` holds no such head."""
    bias = state.get(_HEAD_KEYS[name][1])
    return int(bias.shape[0]) if isinstance(bias, torch.Tensor) and bias.dim() == 1 else None


def check_starting_weights(name: str, pretrained: bool = False, weights: str | Path | None = None) -> None:
    """Refuse now (CxrError) the starting weights that ``build_model`` would refuse: a ``weights`` file that is
    not there, does not load or does not fit ``name``, or ImageNet weights that are neither in torchvision's
    cache nor downloadable (they are downloaded now), or whose file there does not load or does not fit ``name``.
    The files' tensors are mapped, not read. For a command to check before it reads its data."""
    check_model_name(name)
    if weights is not None:
        path = local_file(weights, "weights file")
        _refuse_a_misfit(_state_shapes(name), name, _read_file(path, shapes_only=True)[0], path)
    elif pretrained:
        fetch_imagenet_weights(name)
