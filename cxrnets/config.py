"""What defines one training run (TrainConfig): light to import, for the command lines' defaults and checks."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any

from cxrnets.data import DATASET_NAMES, MULTILABEL_DATASETS, SAMPLE_ROOT
from cxrnets.errors import CxrError
from cxrnets.names import MODEL_NAMES, OPTIMIZER_NAMES, check_device_name, check_image_size, check_seed


MIN_BATCH_SIZE = 2  # cxrnets.batches skips a training batch of one image: BatchNorm cannot train on it
DEFAULT_MOMENTUM = 0.9  # SGD's; a run of another optimizer carries it unused


@dataclass
class TrainConfig:
    """Everything that defines one training run; stored in every checkpoint."""

    dataset: str = "covid-chestxray-3class"
    data_root: str = str(SAMPLE_ROOT)
    model: str = "resnet50"
    optimizer: str = "adam"
    lr: float = 1e-3
    batch_size: int = 32
    epochs: int = 5
    image_size: int = 64
    pretrained: bool = False
    weights: str | None = None
    momentum: float = DEFAULT_MOMENTUM
    weight_decay: float = 0.0
    seed: int = 0
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    split_file: str | None = None
    cache_dir: str | None = None
    device: str = "auto"
    # The GPU path: each acts on CUDA only and leaves CPU results unchanged (see gpu_path()).
    amp: bool = True             # mixed precision: bf16 where the card supports it, else fp16 + loss scaling
    channels_last: bool = True   # channels-last memory format for the (convolutional) models
    compile: bool = False        # torch.compile the model
    balance_classes: bool = True  # weight single-label cross-entropy by inverse class frequency
    dataset_options: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrainConfig":
        """Build from a dict that may hold extra keys (a Tune trial config): those are ignored."""
        known = {f.name for f in fields(cls)}
        return cls(**{key: value for key, value in values.items() if key in known})

    def validate(self, flags: bool = False) -> None:
        """CxrError for the first value no run can train with, naming the option as the command line types it
        (`--lr`) where `flags` says so, else as the config key (`option lr`)."""

        def name(key: str) -> str:
            return flag(key) if flags else key

        def option(key: str) -> str:
            return flag(key) if flags else f"option {key}"

        if self.dataset not in DATASET_NAMES:
            raise CxrError(f"unknown dataset {self.dataset!r}: choose one of {', '.join(DATASET_NAMES)}")
        if self.model not in MODEL_NAMES:
            raise CxrError(f"unknown model {self.model!r}: choose one of {', '.join(MODEL_NAMES)}")
        if self.optimizer not in OPTIMIZER_NAMES:
            raise CxrError(f"unknown optimizer {self.optimizer!r}: choose one of {', '.join(OPTIMIZER_NAMES)}")
        if not (isinstance(self.lr, (int, float)) and not isinstance(self.lr, bool)
                and math.isfinite(self.lr) and self.lr > 0):
            raise CxrError(f"{option('lr')} must be a positive number, got {self.lr!r}")
        for key in ("batch_size", "epochs", "image_size"):
            value = getattr(self, key)
            if not (isinstance(value, int) and not isinstance(value, bool) and value > 0):
                raise CxrError(f"{option(key)} must be a positive integer, got {value!r}")
        if self.batch_size < MIN_BATCH_SIZE:
            raise CxrError(f"{option('batch_size')} must be at least {MIN_BATCH_SIZE} (a training batch of one image "
                           f"is skipped: BatchNorm cannot train on it), got {self.batch_size}")
        for key in ("momentum", "weight_decay"):
            value = getattr(self, key)
            if not (math.isfinite(value) and value >= 0):
                raise CxrError(f"{option(key)} must be finite and >= 0, got {value}")
        if self.momentum >= 1:
            raise CxrError(f"{option('momentum')} must be below 1 (SGD's velocity would never decay), "
                           f"got {self.momentum}")
        if self.optimizer != "sgd" and self.momentum != DEFAULT_MOMENTUM:
            raise CxrError(f"{option('momentum')} {self.momentum:g} with {name('optimizer')} {self.optimizer}: "
                           f"momentum is SGD's, {self.optimizer} would ignore it; drop {name('momentum')}, or "
                           f"choose {name('optimizer')} sgd")
        if not split_fractions_fit(self.val_fraction, self.test_fraction):
            raise CxrError(f"{option('val_fraction')} {self.val_fraction:g} and {name('test_fraction')} "
                           f"{self.test_fraction:g}: {SPLIT_FRACTIONS_RULE}")
        if not self.balance_classes and self.dataset in MULTILABEL_DATASETS:
            raise CxrError(f"--no-balance: {self.dataset} is multi-label, trained with a per-label loss that weights "
                           "no class; drop it")
        check_device_name(self.device, option("device"))
        check_image_size(self.model, self.image_size)
        check_seed(self.seed, option("seed"))


def flag(key: str) -> str:
    """The command-line flag of a TrainConfig key: --batch-size for batch_size."""
    return "--" + key.replace("_", "-")


SPLIT_FRACTIONS_RULE = "each must lie between 0 and 1, and together leave patients to train on (sum below 1)"


def split_fractions_fit(val_fraction: float, test_fraction: float) -> bool:
    """Whether the validation and test shares of the patients make a split (SPLIT_FRACTIONS_RULE)."""
    return 0 < val_fraction < 1 and 0 < test_fraction < 1 and val_fraction + test_fraction < 1
