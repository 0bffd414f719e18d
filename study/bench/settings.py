"""What one bench run measures (Settings), its presets and their validation."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any

PARTS = ("data", "trainable", "orchestration", "search", "storage")
MODELS = ("alexnet", "vgg11", "resnet50")
# The switches of cxrnets' GPU path that the data and trainable parts take (the studies: cxrnets' defaults).
GPU_PATH_SWITCHES = ("amp", "channels_last", "compile")


@dataclass
class Settings:
    """What one bench run measures; --quick, --smoke and the defaults are presets of it."""

    parts: tuple[str, ...] = PARTS
    dataset: str = "covid-chestxray-3class"
    data_root: str | None = None          # None: the embedded sample
    device: str = "auto"
    amp: bool = True                      # GPU_PATH_SWITCHES: the data and trainable parts only
    channels_last: bool = True
    compile: bool = False
    seed: int = 0
    batch_size: int = 32
    # data
    image_sizes: tuple[int, ...] = (64, 128, 224)
    data_models: tuple[str, ...] = MODELS
    decode_images: int | None = None      # None: every image of the dataset
    decode_workers: int = field(default_factory=lambda: os.cpu_count() or 1)
    model_batches: int = 3                # timed training batches per model and size (after one warm-up)
    # trainable
    models: tuple[str, ...] = MODELS
    trainable_image_size: int = 64
    repeats: int = 3
    limit_train: int | None = None        # use only this many training (and limit_train // 4 validation) images
    # orchestration
    study_space: str = "demo"
    study_samples: int | None = None      # None: the space's own (the default study)
    study_epochs: int | None = None
    study_image_size: int | None = None
    num_cpus: int = field(default_factory=lambda: os.cpu_count() or 1)
    gpus_per_trial: float = 0.0
    # the checkpoint policy of the trainable part and of the storage part's studies (study.checkpoints)
    checkpoint_every: int | None = None       # None: the study's default (study.settings.CHECKPOINT_EVERY)
    checkpoint_minutes: float | None = None   # None: the study's default (study.settings.CHECKPOINT_MINUTES)
    # storage (the default study, as the orchestration part runs it, unless these say otherwise)
    storage_samples: int | None = None    # None: study_samples
    storage_epochs: int | None = None     # None: study_epochs
    s3_bucket: str = "cxr-bench"
    # search
    search_models: tuple[str, ...] = ("alexnet", "resnet50")
    search_optimizers: tuple[str, ...] = ("adam", "sgd")
    search_lrs: tuple[float, ...] = (1e-4, 1e-3, 1e-2)
    search_image_size: int = 64
    search_max_epochs: int = 9
    search_grace_period: int = 1
    search_reduction_factor: int = 3
    search_sampler: str = "tpe"
    search_samples: int | None = None     # None: as many trials as the grid has configurations
    search_metric: str = "val/f1_macro"   # the study's default metric
    timeout_s: float = 3600.0             # per study subprocess


SMOKE_SPACE_NAME = "<smoke>"  # the smoke preset's study space: common.SMOKE_SPACE, written to the work directory

PRESETS: dict[str, dict[str, Any]] = {
    "full": {},
    # About ten minutes on 2 idle CPU cores.
    "quick": dict(image_sizes=(64, 224), data_models=("alexnet",), model_batches=3, repeats=1,
                  study_samples=4, study_epochs=1, search_lrs=(1e-3, 1e-2), search_max_epochs=4,
                  search_reduction_factor=4),
    # The smallest run that still produces every figure (what the test runs): ResNet50 at 16 px.
    "smoke": dict(image_sizes=(16,), data_models=("resnet50",), model_batches=1, decode_images=16, batch_size=16,
                  models=("resnet50",), trainable_image_size=16, repeats=1, limit_train=32,
                  study_space=SMOKE_SPACE_NAME, study_samples=2, study_epochs=1, study_image_size=16,
                  search_models=("resnet50",), search_optimizers=("adam",), search_lrs=(1e-4, 1e-3),
                  search_image_size=16, search_max_epochs=2, search_grace_period=1, search_reduction_factor=2,
                  # storage: one trial of two epochs with a full state after the first, so that the
                  # accounting sees a full state written and deleted
                  checkpoint_every=1, storage_samples=1, storage_epochs=2,
                  timeout_s=1200.0),
}


def validate(s: Settings) -> None:
    """Refuse settings that cannot run, naming the flag (CxrError)."""
    from cxrnets.config import MIN_BATCH_SIZE
    from cxrnets.errors import CxrError
    from cxrnets.names import MIN_IMAGE_SIZE, check_seed

    from cxrnets.data import DATASET_NAMES

    if s.dataset not in DATASET_NAMES:
        raise CxrError(f"--dataset {s.dataset}: choose one of {', '.join(DATASET_NAMES)}")
    if s.data_root is None and not s.dataset.startswith("covid-chestxray"):
        raise CxrError(f"--dataset {s.dataset} needs --data-root (only covid-chestxray has an embedded sample)")
    unknown = set(s.parts) - set(PARTS)
    if unknown or not s.parts:
        raise CxrError(f"--parts {','.join(s.parts)}: choose from {','.join(PARTS)}")
    for flag, models in (("--models", s.models), ("--data-models", s.data_models),
                         ("--search-models", s.search_models)):
        bad = [m for m in models if m not in MODELS]
        if bad or not models:
            raise CxrError(f"{flag} {','.join(models)}: choose from {','.join(MODELS)}")
    for model in s.models:
        if s.trainable_image_size < MIN_IMAGE_SIZE[model]:
            raise CxrError(f"--trainable-image-size {s.trainable_image_size} is too small for {model} "
                           f"(needs {MIN_IMAGE_SIZE[model]} px)")
    for size in s.image_sizes if "data" in s.parts else ():
        if all(size < MIN_IMAGE_SIZE[model] for model in s.data_models):
            needs = ", ".join(f"{model} needs {MIN_IMAGE_SIZE[model]} px" for model in s.data_models)
            raise CxrError(f"--image-sizes {size}: none of --data-models {','.join(s.data_models)} trains at {size} px "
                           f"({needs}), so the data part could not compare the cache with a model there: raise the "
                           "size, or add a model that fits")
    for model in s.search_models:
        if s.search_image_size < MIN_IMAGE_SIZE[model]:
            raise CxrError(f"the search part's image size {s.search_image_size} is too small for {model}")
    if s.batch_size < MIN_BATCH_SIZE:
        raise CxrError(f"--batch-size {s.batch_size}: must be at least {MIN_BATCH_SIZE} (a training batch of one "
                       "image is skipped: BatchNorm cannot train on it)")
    for name in ("repeats", "model_batches", "search_max_epochs", "search_grace_period", "num_cpus"):
        if getattr(s, name) < 1:
            raise CxrError(f"--{name.replace('_', '-')} must be at least 1")
    for name in ("decode_images", "study_samples", "study_epochs", "study_image_size", "storage_samples",
                 "storage_epochs", "checkpoint_every", "search_samples"):
        if getattr(s, name) is not None and getattr(s, name) < 1:
            raise CxrError(f"--{name.replace('_', '-')} must be at least 1")
    if s.checkpoint_minutes is not None and not s.checkpoint_minutes > 0:
        raise CxrError("--checkpoint-minutes must be above 0")
    from study.settings import METRICS

    if s.search_metric not in METRICS:
        raise CxrError(f"--search-metric {s.search_metric}: choose one of {', '.join(METRICS)}")
    if s.search_grace_period > s.search_max_epochs:
        raise CxrError("--search-grace-period must not exceed --search-max-epochs")
    if s.search_reduction_factor < 2:
        raise CxrError(f"--search-reduction-factor {s.search_reduction_factor}: ASHA's reduction factor must be at "
                       "least 2 (it keeps 1/this of the trials at each rung)")
    if not s.search_lrs:
        raise CxrError("--search-lrs: give at least one learning rate (e.g. 0.001,0.01)")
    if not all(math.isfinite(lr) and lr > 0 for lr in s.search_lrs):
        raise CxrError(f"--search-lrs {','.join(f'{lr:g}' for lr in s.search_lrs)}: learning rates must be above 0")
    rounded = [search_space_lr(lr) for lr in s.search_lrs]
    repeated = next((lr for n, lr in enumerate(rounded) if lr in rounded[:n]), None)
    if repeated is not None:
        raise CxrError(f"--search-lrs {','.join(f'{lr:g}' for lr in s.search_lrs)}: {repeated:g} is given twice at "
                       "the 2 significant digits of the search space; give each learning rate once")
    if not s.gpus_per_trial >= 0:
        raise CxrError(f"--gpus-per-trial {s.gpus_per_trial:g}: must be 0 or more")
    check_seed(s.seed)
    if any(size < 1 for size in s.image_sizes) or not s.image_sizes:
        raise CxrError("--image-sizes must be positive")



def search_space_lr(lr: float) -> float:
    """A learning rate as the search part's space holds it: 2 significant digits."""
    return float(f"{lr:.1e}")
