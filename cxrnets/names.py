"""The names the command lines accept for models, optimizers and devices, the smallest image each model
takes, and the seeds they accept.

Kept apart from cxrnets.models and cxrnets.training, which load torch (seconds), so that a
command's `--help` and its option errors answer at once. cxrnets.models explains the sizes.
"""

from __future__ import annotations

import re

from cxrnets.errors import CxrError

MODEL_NAMES: tuple[str, ...] = ("alexnet", "vgg11", "resnet50")
OPTIMIZER_NAMES: tuple[str, ...] = ("adam", "sgd")

MIN_IMAGE_SIZE: dict[str, int] = {"alexnet": 63, "vgg11": 32, "resnet50": 1}

# numpy and scikit-learn take seeds below 2**32, and seeds are derived by addition (the split's
# validation hold-out from seed + 1, study.confirm's repeats from seed + 1 ... + N): half that range.
MAX_SEED = 2**31 - 1


def check_seed(seed: int, option: str = "--seed") -> None:
    if not (isinstance(seed, int) and not isinstance(seed, bool) and 0 <= seed <= MAX_SEED):
        raise CxrError(f"{option} {seed!r}: a seed is a whole number from 0 to {MAX_SEED}")


def check_model_name(name: str) -> None:
    if name not in MODEL_NAMES:
        raise CxrError(f"unknown model {name!r}: choose one of {', '.join(MODEL_NAMES)}")


def check_image_size(name: str, image_size: int) -> None:
    """Raise ``CxrError`` if ``name`` cannot take square images of ``image_size`` px."""
    check_model_name(name)
    minimum = MIN_IMAGE_SIZE[name]
    if image_size < minimum:
        raise CxrError(f"--image-size {image_size} is too small for model {name!r}: it needs "
                       f"at least {minimum} px; raise --image-size to {minimum} or more")


def check_device_name(name: str, option: str = "--device") -> None:
    """auto, cpu, cuda or cuda:N; whether this machine has that device is cxrnets.training.select_device's to say."""
    if not (isinstance(name, str) and re.fullmatch(r"auto|cpu|cuda(:\d+)?", name)):
        raise CxrError(f"{option} {name!r}: choose auto (CUDA if present, else CPU), cpu, cuda or cuda:N")
