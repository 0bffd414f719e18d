"""One training run: its config, its data, and small train-one-epoch / evaluate functions.

`TrainingRun` is what both `python -m cxrnets.train` and the study's Ray
trainable drive, one epoch at a time:

    run = TrainingRun(TrainConfig(model="resnet50", image_size=64))
    for epoch in range(run.epoch, run.config.epochs):
        metrics = run.train_epoch()      # train/loss, val/accuracy, val/f1_macro, ...
    torch.save(run.checkpoint(), "checkpoint.pt")
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from cxrnets.batches import Batches
from cxrnets.cache import build_cache
from cxrnets.data import DATASET_NAMES, SAMPLE_ROOT, DatasetIndex, load_dataset
from cxrnets.errors import CxrError, DivergedError
from cxrnets.metrics import classification_metrics
from cxrnets.models import MODEL_NAMES, build_model, check_image_size
from cxrnets.splits import describe, load_split, make_split, save_split

log = logging.getLogger(__name__)

OPTIMIZER_NAMES = ("adam", "sgd")
SPLIT_COLUMNS = ["relpath", "patient", "sha1", "stratum", "split"]


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
    momentum: float = 0.9
    weight_decay: float = 0.0
    seed: int = 0
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    split_file: str | None = None
    cache_dir: str | None = None
    device: str = "auto"
    amp: bool = True
    channels_last: bool = True
    compile: bool = False
    dataset_options: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrainConfig":
        """Build from a dict that may hold extra keys (a Tune trial config): those are ignored."""
        known = {f.name for f in fields(cls)}
        return cls(**{key: value for key, value in values.items() if key in known})

    def validate(self) -> None:
        if self.dataset not in DATASET_NAMES:
            raise CxrError(f"unknown dataset {self.dataset!r}: choose one of {', '.join(DATASET_NAMES)}")
        if self.model not in MODEL_NAMES:
            raise CxrError(f"unknown model {self.model!r}: choose one of {', '.join(MODEL_NAMES)}")
        if self.optimizer not in OPTIMIZER_NAMES:
            raise CxrError(f"unknown optimizer {self.optimizer!r}: choose one of {', '.join(OPTIMIZER_NAMES)}")
        for name in ("lr", "batch_size", "epochs", "image_size"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise CxrError(f"option {name} must be a positive number, got {value!r}")
        if self.momentum < 0 or self.weight_decay < 0:
            raise CxrError(f"momentum ({self.momentum}) and weight_decay ({self.weight_decay}) must be >= 0")
        check_image_size(self.model, self.image_size)


# ------------------------------------------------------------------ data

@dataclass
class PreparedData:
    """A dataset decoded at one size, with its split; `images` rows align with `index.frame` rows."""

    index: DatasetIndex
    images: np.ndarray
    targets: np.ndarray
    split: pd.DataFrame

    def rows(self, name: str) -> np.ndarray:
        return np.flatnonzero(self.split["split"].to_numpy() == name)


def prepare_data(config: TrainConfig, split: pd.DataFrame | None = None) -> PreparedData:
    """Index the dataset, decode it once into the cache, and make or reuse its split.

    A given `split` (the study makes one and hands it to every trial) or an
    existing `config.split_file` is reused; it must still match the data.
    """
    index = load_dataset(config.dataset, config.data_root, **config.dataset_options)
    cache = build_cache(index, config.image_size, config.cache_dir)
    index = cache.index
    frame = index.frame.assign(sha1=cache.sha1)
    split_file = Path(config.split_file) if config.split_file else None
    if split is not None:
        split = align_split(split, frame, Path("<the study's split>"))
    elif split_file and split_file.is_file():
        split = align_split(load_split(split_file), frame, split_file)
    else:
        split = make_split(frame, index.stratum(), config.val_fraction, config.test_fraction, config.seed)
        if split_file:
            save_split(split[SPLIT_COLUMNS], split_file)
    log.info("split: %s", describe(split))
    return PreparedData(index, cache.images, index.targets(), split)


def align_split(split: pd.DataFrame, frame: pd.DataFrame, path: Path) -> pd.DataFrame:
    """Order a saved split like `frame`, refusing if the images it names changed or went missing."""
    by_path = split.set_index("relpath")
    missing = frame.loc[~frame["relpath"].isin(by_path.index), "relpath"]
    gone = by_path.index[~by_path.index.isin(frame["relpath"])]
    if len(missing) or len(gone):
        raise CxrError(
            f"{path}: the dataset changed since this split was made ({len(missing)} new images, e.g. "
            f"{list(missing[:3])}; {len(gone)} gone, e.g. {list(gone[:3])}); the split is part of the study: "
            "start a new study for the new data"
        )
    aligned = by_path.loc[frame["relpath"]].reset_index()
    changed = aligned["sha1"].to_numpy() != frame["sha1"].to_numpy()
    if changed.any():
        raise CxrError(
            f"{path}: {int(changed.sum())} image file(s) changed content since the split was made, e.g. "
            f"{aligned.loc[changed, 'relpath'].iloc[0]}; start a new study for the new data"
        )
    return aligned


# ------------------------------------------------------------------ model, optimizer, device

def build_optimizer(name: str, parameters, lr: float, momentum: float = 0.9,
                    weight_decay: float = 0.0) -> torch.optim.Optimizer:
    if name == "adam":
        return torch.optim.Adam(parameters, lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(parameters, lr=lr, momentum=momentum, weight_decay=weight_decay)
    raise CxrError(f"unknown optimizer {name!r}: choose one of {', '.join(OPTIMIZER_NAMES)}")


def select_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise CxrError(f"device {name!r} asked for, but this machine has no CUDA GPU; use --device cpu or auto")
    return torch.device(name)


def autocast_dtype(device: torch.device, enabled: bool) -> torch.dtype | None:
    """Mixed precision on CUDA only (bf16 where the card supports it); CPU runs stay in float32."""
    if not enabled or device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


# ------------------------------------------------------------------ one epoch

def train_one_epoch(model: nn.Module, batches: Batches, optimizer: torch.optim.Optimizer, loss_fn: nn.Module,
                    amp_dtype: torch.dtype | None = None, scaler: torch.amp.GradScaler | None = None) -> dict:
    """One pass over the training batches; raises DivergedError on a NaN or infinite loss."""
    model.train()
    total_loss, images, started = 0.0, 0, time.perf_counter()
    for inputs, targets in batches:
        with torch.autocast(inputs.device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            loss = loss_fn(model(inputs), targets)
        if not torch.isfinite(loss):
            raise DivergedError(f"training diverged: loss became {loss.item()} after {images} images")
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        total_loss += loss.item() * len(inputs)
        images += len(inputs)
    return {"loss": total_loss / max(images, 1), "images": images, "seconds": time.perf_counter() - started}


@torch.no_grad()
def evaluate(model: nn.Module, batches: Batches, loss_fn: nn.Module, multilabel: bool,
             amp_dtype: torch.dtype | None = None) -> tuple[float, np.ndarray, np.ndarray]:
    """Mean loss, true targets and scores (softmax or sigmoid probabilities) over the batches."""
    model.eval()
    total_loss, all_targets, all_scores = 0.0, [], []
    for inputs, targets in batches:
        with torch.autocast(inputs.device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            logits = model(inputs)
        logits = logits.float()
        total_loss += loss_fn(logits, targets).item() * len(inputs)
        scores = torch.sigmoid(logits) if multilabel else torch.softmax(logits, dim=1)
        all_targets.append(targets.cpu().numpy())
        all_scores.append(scores.cpu().numpy())
    count = sum(len(t) for t in all_targets)
    return total_loss / max(count, 1), np.concatenate(all_targets), np.concatenate(all_scores)


# ------------------------------------------------------------------ the run

class TrainingRun:
    """Model, optimizer and data of one configuration, trained an epoch at a time."""

    def __init__(self, config: TrainConfig, data: PreparedData | None = None):
        config.validate()
        self.config = config
        torch.manual_seed(config.seed)
        self.device = select_device(config.device)
        self.data = data or prepare_data(config)
        self.classes = self.data.index.classes
        self.multilabel = self.data.index.multilabel
        for name in ("train", "val"):
            if len(self.data.rows(name)) == 0:
                raise CxrError(f"the {name} split of {config.dataset} is empty; use a larger dataset")
        self.model = build_model(config.model, len(self.classes), config.pretrained, config.weights)
        channels_last = config.channels_last and self.device.type == "cuda"
        self.model = self.model.to(self.device, memory_format=torch.channels_last if channels_last
                                   else torch.contiguous_format)
        self.forward = torch.compile(self.model) if config.compile else self.model
        self.optimizer = build_optimizer(config.optimizer, self.model.parameters(), config.lr,
                                         config.momentum, config.weight_decay)
        self.loss_fn = nn.BCEWithLogitsLoss() if self.multilabel else nn.CrossEntropyLoss()
        self.amp_dtype = autocast_dtype(self.device, config.amp)
        self.scaler = torch.amp.GradScaler("cuda") if self.amp_dtype == torch.float16 else None
        self.epoch = 0
        self.train_batches = self.batches("train", train=True)

    def batches(self, split: str, train: bool = False) -> Batches:
        return Batches(self.data.images, self.data.targets, self.data.rows(split), self.config.batch_size,
                       self.device, train, self.config.seed, self.config.channels_last and self.device.type == "cuda")

    def train_epoch(self) -> dict[str, float]:
        """Train one epoch, evaluate on validation; returns the metrics the study reports."""
        self.train_batches.set_epoch(self.epoch)
        trained = train_one_epoch(self.forward, self.train_batches, self.optimizer, self.loss_fn,
                                  self.amp_dtype, self.scaler)
        self.epoch += 1
        metrics = {"epoch": self.epoch, "train/loss": trained["loss"]}
        metrics.update(self.evaluate_split("val")[0])
        metrics["epoch_seconds"] = trained["seconds"]
        metrics["images_per_second"] = trained["images"] / max(trained["seconds"], 1e-9)
        return metrics

    def evaluate_split(self, split: str) -> tuple[dict[str, float], np.ndarray, np.ndarray]:
        """`split/`-prefixed metrics, true targets and scores on one split."""
        loss, y_true, scores = evaluate(self.forward, self.batches(split), self.loss_fn, self.multilabel,
                                        self.amp_dtype)
        metrics = {f"{split}/loss": loss}
        metrics.update({f"{split}/{k}": v for k, v in classification_metrics(y_true, scores, self.multilabel).items()})
        return metrics, y_true, scores

    def checkpoint(self) -> dict[str, Any]:
        """Everything needed to resume or evaluate this run; loadable with weights_only=True."""
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "epoch": self.epoch, "config": asdict(self.config), "classes": list(self.classes),
                "multilabel": self.multilabel}

    def restore(self, checkpoint: dict[str, Any]) -> None:
        self.model.load_state_dict(checkpoint["model"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.epoch = int(checkpoint["epoch"])
