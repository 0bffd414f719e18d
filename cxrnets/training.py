"""One training run (configured by cxrnets.config.TrainConfig): its data, and small train-one-epoch / evaluate
functions.

`TrainingRun` is what both `python -m cxrnets.train` and the study's Ray
trainable drive, one epoch at a time:

    run = TrainingRun(TrainConfig(model="resnet50", image_size=64))
    for epoch in range(run.epoch, run.config.epochs):
        metrics = run.train_epoch()      # train/loss, val/accuracy, val/f1_macro, ...
    save_checkpoint(run.checkpoint(), "checkpoint.pt")
"""

from __future__ import annotations

import logging
import math
import tempfile
import time
from collections.abc import Callable, Collection
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from cxrnets.batches import Batches
from cxrnets.cache import CachedImages, ImageCache, build_cache
from cxrnets.config import MIN_BATCH_SIZE, TrainConfig
from cxrnets.data import DatasetIndex, load_dataset
from cxrnets.errors import CxrError, DivergedError, SplitMismatch
from cxrnets.fingerprints import cache_fingerprints
from cxrnets.metrics import classification_metrics
from cxrnets.models import build_model
from cxrnets.names import OPTIMIZER_NAMES, check_device_name
from cxrnets.splits import HELDOUT, SPLITS, describe, load_split, make_split, patients_per_class, save_split
from cxrnets.torch_files import load_safely

log = logging.getLogger(__name__)

SPLIT_COLUMNS = ["relpath", "patient", "sha1", "stratum", "split"]


@dataclass(frozen=True)
class SplitRemedy:
    """What align_split's refusals offer besides restoring the data: `kept` says why the split is not simply made
    again ("" where nothing needs saying), `new_split` how to get a split of the new data."""

    kept: str
    new_split: str


STUDY_SPLIT = SplitRemedy("the split is part of the study: ", "start a new study for the new data")
SPLIT_FILE = SplitRemedy("", "pass another --split-file, or delete this one to make the split again from --seed")


def save_checkpoint(checkpoint: dict[str, Any], path: str | Path) -> None:
    """torch.save without the zip format's CRC-32 of every record, which takes longer than writing the bytes.

    What the CRC would catch is caught elsewhere: a truncated file still fails to load (the zip's directory
    is at its end), the study renames only complete files into place, and object stores checksum uploads.
    """
    crc32 = torch.serialization.get_crc32_options()
    torch.serialization.set_crc32_options(False)
    try:
        torch.save(checkpoint, path)
    finally:
        torch.serialization.set_crc32_options(crc32)


TRAINED_MODEL_KEYS = ("model", "epoch", "config", "classes", "multilabel")  # what scoring a model needs


def check_output_folder(folder: Path, option: str) -> None:
    """Write a probe file into `folder` (made for it and removed again, with any parents it needed), so
    that a command refuses an output it cannot write (CxrError naming `option`) before it works."""
    made = [path for path in (folder, *folder.parents) if not path.exists()]  # innermost first
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        reason = "a file, not a folder" if isinstance(error, FileExistsError) else error.strerror or error
        raise CxrError(f"{option}: cannot write in {folder} ({reason}); pick a folder you can write to") from error
    finally:
        for path in made:
            if path.is_dir():
                path.rmdir()


CHECKPOINT_FILES = "a study's weights/<trial id>.pt or a checkpoint.pt of python -m cxrnets.train"


def load_checkpoint(path: str | Path, required: tuple[str, ...] = TRAINED_MODEL_KEYS, mmap: bool = True,
                    name: str | None = None) -> dict[str, Any]:
    """A checkpoint file (a study's best weights or a cxrnets.train checkpoint; local) loaded safely
    (cxrnets.torch_files.load_safely; memory-mapped unless `mmap` is off) and checked for the `required` keys;
    CxrError naming the file (as `name` says, where `path` is a downloaded copy) and saying what it is instead, if
    it is unusable."""
    name = name or str(path)
    checkpoint = load_safely(
        path, "checkpoint", CHECKPOINT_FILES, name, mmap, whole_model="for a model of your own, torch.save a dict "
        f"of its state_dict() as 'model' and its {', '.join(map(repr, TRAINED_MODEL_KEYS[1:]))}")
    missing = set(required) - set(checkpoint if isinstance(checkpoint, dict) else {})
    if missing:
        raise CxrError(f"{name}: not a trained model's checkpoint (missing {sorted(missing)}); pass "
                       f"{CHECKPOINT_FILES}")
    return checkpoint


# ------------------------------------------------------------------ data

@dataclass
class PreparedData:
    """A dataset decoded at one size (`cache`, which cxrnets.fingerprints.cache_fingerprints fingerprints), with
    its split; `images` rows align with `index.frame` rows."""

    cache: ImageCache
    targets: np.ndarray
    split: pd.DataFrame

    @property
    def index(self) -> DatasetIndex:
        return self.cache.index

    @property
    def images(self) -> CachedImages:
        return self.cache.images

    def rows(self, name: str) -> np.ndarray:
        return np.flatnonzero(self.split["split"].to_numpy() == name)


def patients_per_split(data: PreparedData) -> pd.DataFrame:
    """How many patients of each class (rows, by class name) the train, val and test splits hold (columns).
    A class with none on train is one no model of `data` can learn."""
    split = data.split.assign(stratum=data.index.stratum().to_numpy())  # a --split-file may have no stratum
    return pd.DataFrame({part: patients_per_class(split, part) for part in SPLITS})


def named_counts(patients: pd.DataFrame) -> str:
    """`ARDS (0/0/2), Fungal (0/1/0)`: each class of patients_per_split's table with its patients on
    train/val/test."""
    return ", ".join(f"{name} ({row.train}/{row.val}/{row.test})" for name, row in patients.iterrows())


def prepare_data(config: TrainConfig, split: pd.DataFrame | None = None,
                 split_source: str = "the given split") -> PreparedData:
    """Index the dataset, decode it once into the cache, and make or reuse its split.

    A given `split` (the study makes one and hands it to every trial) or an
    existing `config.split_file` is reused; it must still match the data.
    `split_source` names the given split in errors: the file it was read from.
    """
    split_file = Path(config.split_file) if config.split_file else None
    if split is None and split_file and not split_file.exists():  # to be written: refuse a folder it cannot be in
        check_output_folder(split_file.parent, f"--split-file {split_file}")
    listed = load_dataset(config.dataset, config.data_root, **config.dataset_options)
    cache = build_cache(listed, config.image_size, config.cache_dir)
    index = cache.index
    frame = index.frame.assign(sha1=cache.sha1)
    if split is not None:
        split = align_split(split, frame, split_source, undecodable_images(listed, cache))
    elif split_file and split_file.exists():
        split = align_split(load_split(split_file, SPLIT_FILE.new_split), frame, split_file,
                            undecodable_images(listed, cache), SPLIT_FILE)
    else:
        split = make_split(frame, index.stratum(), config.val_fraction, config.test_fraction, config.seed,
                           cache_fingerprints(cache))
        if split_file:
            save_split(split[SPLIT_COLUMNS], split_file)
    log.info("split: %s", describe(split))
    return PreparedData(cache, index.targets(), split)


def align_split(split: pd.DataFrame, frame: pd.DataFrame, path: str | Path, undecodable: Collection[str] = (),
                remedy: SplitRemedy = STUDY_SPLIT) -> pd.DataFrame:
    """Order a saved split like `frame` (one row per image), refusing, naming `path` (the split's file or URI) and
    `remedy`, if the images it names changed or went missing. `undecodable`: the images the cache left out
    (undecodable_images), named as such rather than as gone.

    A split made before cxrnets.data kept each image once lists a few of dataset 3's images twice (on two
    metadata rows, under two patient ids, on one side of the split: the same file): its first listing of
    each stands for the image, so that such a study still resumes and analyses.
    """
    by_path = split.drop_duplicates("relpath", keep="first").set_index("relpath")
    missing = frame.loc[~frame["relpath"].isin(by_path.index), "relpath"]
    gone = by_path.index[~by_path.index.isin(frame["relpath"])]
    if len(missing) and list(by_path.index) == list(frame["relpath"][:len(by_path)]):  # saved in the data's order
        raise SplitMismatch(
            f"{path}: lists only the first {len(by_path)} of the data's {len(frame)} images, and then stops: the file "
            f"looks cut short (or images were added after them since the split was made: {len(missing)}, e.g. "
            f"{list(missing[:3])}); restore the file, or {remedy.new_split}", new=list(missing)
        )

    def as_recorded(relpaths) -> str:
        named = ", ".join(f"{relpath} (sha1 {by_path.at[relpath, 'sha1']} in the split)" for relpath in relpaths[:3])
        return named + (f" and {len(relpaths) - 3} more" if len(relpaths) > 3 else "")

    if len(missing) or len(gone):
        undecodable = set(undecodable)
        broken = [relpath for relpath in gone if relpath in undecodable]
        absent = [relpath for relpath in gone if relpath not in undecodable]
        changes, remedies = [], []
        if len(missing):
            changes.append(f"{len(missing)} new images, e.g. {list(missing[:3])}")
        if broken:
            changes.append(f"{len(broken)} image(s) no longer decode, the warning above says why: "
                           f"{as_recorded(broken)}")
        if absent:
            changes.append(f"{len(absent)} gone: {as_recorded(absent)}")
        if len(gone):
            remedies.append("restore the original file(s)")
        if len(missing):
            remedies.append("move the new images out of the data folder")
        raise SplitMismatch(
            f"{path}: the dataset changed since this split was made ({'; '.join(changes)}); {remedy.kept}"
            f"{' and '.join(remedies)}, or {remedy.new_split}", new=list(missing), gone=list(gone)
        )
    aligned = by_path.loc[frame["relpath"]].reset_index()
    changed = aligned["sha1"].to_numpy() != frame["sha1"].to_numpy()
    if changed.any():
        raise SplitMismatch(
            f"{path}: {int(changed.sum())} image file(s) changed content since the split was made, e.g. "
            f"{as_recorded(list(aligned.loc[changed, 'relpath'])[:1])}; restore the original file(s), or "
            f"{remedy.new_split}"
        )
    _refuse_patients_on_two_sides(aligned, frame["patient"], path, remedy)
    return aligned


def _refuse_patients_on_two_sides(aligned: pd.DataFrame, patients: pd.Series, path: str | Path,
                                  remedy: SplitRemedy) -> None:
    """SplitMismatch, naming `path` and `remedy`, where a patient of the data now (`patients`, one per row of
    `aligned`) has images on two sides of the saved split: its patient ids changed (an upstream fix merged two
    patients). Data without patient ids gives each image its own, which never does."""
    now = aligned.assign(saved_patient=aligned["patient"], patient=patients.to_numpy())
    sides = now.groupby("patient")["split"].nunique()
    leaking = sides.index[sides > 1]
    if len(leaking) == 0:
        return
    rows = now[now["patient"] == leaking[0]]
    files = [rows[rows["split"] == part].iloc[0] for part in (*SPLITS, HELDOUT) if part in set(rows["split"])]
    saved = " and ".join(repr(patient) for patient in rows["saved_patient"].unique())
    raise SplitMismatch(
        f"{path}: the patient ids changed since this split was made: {len(leaking)} patient(s) now have images on two "
        f"sides of it, e.g. patient {leaking[0]!r}: {', '.join(f'{row.relpath} in {row.split}' for row in files)} "
        f"(patients {saved} in the split); the split would leak them: restore the patient ids, or {remedy.new_split}"
    )


def undecodable_images(index: DatasetIndex, cache: ImageCache) -> list[str]:
    """The images of `index` that `cache` (built from it) left out: files there that do not decode, each named,
    with the decoder's reason, in the cache's warning."""
    return list(index.frame.loc[~index.frame["relpath"].isin(cache.index.frame["relpath"]), "relpath"])


# ------------------------------------------------------------------ model, optimizer, device

def build_optimizer(name: str, parameters, lr: float, momentum: float = 0.9,
                    weight_decay: float = 0.0) -> torch.optim.Optimizer:
    if name == "adam":
        return torch.optim.Adam(parameters, lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(parameters, lr=lr, momentum=momentum, weight_decay=weight_decay)
    raise CxrError(f"unknown optimizer {name!r}: choose one of {', '.join(OPTIMIZER_NAMES)}")


def select_device(name: str = "auto") -> torch.device:
    check_device_name(name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise CxrError(f"device {name!r} asked for, but this machine has no CUDA GPU; use --device cpu or auto")
    device = torch.device(name)
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise CxrError(f"device {name!r} asked for, but this machine has {torch.cuda.device_count()} CUDA GPU(s), "
                       "numbered from 0")
    return device


def autocast_dtype(device: torch.device, enabled: bool) -> torch.dtype | None:
    """Mixed precision on CUDA only (bf16 where the card supports it); CPU runs stay in float32."""
    if not enabled or device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def gpu_path(config: TrainConfig, device: torch.device) -> dict[str, Any]:
    """Which GPU-path options act on `device`: all of them on CUDA, none on CPU (CPU results never change).

    amp: the autocast dtype's name (bf16 where the card supports it, else fp16 with loss scaling) or None;
    channels_last: model and batches in channels-last memory format; compile: torch.compile;
    pinned_memory: batches pinned in host memory and copied without blocking.
    """
    cuda = device.type == "cuda"
    amp = autocast_dtype(device, config.amp)
    return {"amp": str(amp).removeprefix("torch.") if amp is not None else None,
            "channels_last": bool(config.channels_last and cuda), "compile": bool(config.compile and cuda),
            "pinned_memory": cuda}


# ------------------------------------------------------------------ one epoch

# On CUDA the host reads the loss back every SYNC_EVERY steps instead of every step, so that it
# queues the next batches' copies and kernels while the GPU still computes (a read waits for the GPU).
SYNC_EVERY = 32


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA runs asynchronously); a no-op on CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_one_epoch(model: nn.Module, batches: Batches, optimizer: torch.optim.Optimizer, loss_fn: nn.Module,
                    amp_dtype: torch.dtype | None = None, scaler: torch.amp.GradScaler | None = None,
                    sync_every: int | None = None, progress: Callable[[int], None] | None = None) -> dict:
    """One pass over the training batches; raises DivergedError on a NaN or infinite loss, and CxrError where
    no batch could be trained.

    The losses are read back to the host every `sync_every` steps (default: every step on CPU, where a
    read costs nothing, and every SYNC_EVERY steps on other devices) and summed in the same order
    either way, so the result does not depend on it. A non-finite loss is found at the next read,
    before that step's update; the error names the images trained before the batch that diverged.
    `progress`, where given, is called at each read with the number of images trained so far.
    """
    model.train()
    total_loss, images, started = 0.0, 0, time.perf_counter()
    pending: list[tuple[torch.Tensor, int]] = []
    device = None
    for inputs, targets in batches:
        if device is None:
            device = inputs.device
            sync_every = sync_every or (1 if device.type == "cpu" else SYNC_EVERY)
        with torch.autocast(inputs.device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            loss = loss_fn(model(inputs), targets)
        pending.append((loss.detach(), len(inputs)))
        if len(pending) >= sync_every:
            total_loss, images = _read_losses(pending, total_loss, images)
            if progress is not None:
                progress(images)
        backward_and_step(loss, optimizer, scaler)
    total_loss, images = _read_losses(pending, total_loss, images)
    if images == 0:
        raise CxrError(f"the epoch trained no image: the training split's {len(batches.rows)} image(s) made no "
                       f"batch of at least {MIN_BATCH_SIZE} (BatchNorm cannot train on one image); give the split more "
                       "training images")
    if device is not None:
        synchronize(device)
    return {"loss": total_loss / max(images, 1), "images": images, "seconds": time.perf_counter() - started}


def backward_and_step(loss: torch.Tensor, optimizer: torch.optim.Optimizer,
                      scaler: torch.amp.GradScaler | None = None) -> None:
    """One update from `loss`: gradients (scaled for fp16 when a scaler is given), then the optimizer step."""
    optimizer.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    else:
        loss.backward()
        optimizer.step()


def _read_losses(pending: list[tuple[torch.Tensor, int]], total_loss: float, images: int) -> tuple[float, int]:
    """Add the pending (loss, batch size) pairs to the running sum, in order, with one read; empties `pending`."""
    if not pending:
        return total_loss, images
    values = torch.stack([loss.float() for loss, _ in pending]).tolist()
    for value, (_, count) in zip(values, pending):
        if not math.isfinite(value):
            pending.clear()
            raise DivergedError(f"training diverged: loss became {value} after {images} images")
        total_loss += value * count
        images += count
    pending.clear()
    return total_loss, images


@torch.no_grad()
def evaluate(model: nn.Module, batches: Batches, loss_fn: nn.Module, multilabel: bool,
             amp_dtype: torch.dtype | None = None) -> tuple[float, np.ndarray, np.ndarray]:
    """The loss over the whole split, true targets and scores (softmax or sigmoid probabilities); DivergedError
    where the model's outputs are NaN or infinite.

    The loss is taken once over every output (a class-weighted loss's mean divides by the split's weights,
    not by each batch's: the same figure whatever the batch size). Everything stays on the device until
    the end. The loss of finite outputs is reported whatever it is: a class-weighted loss over images whose
    classes all weigh 0 is nan (TrainingRun.evaluation_loss gives such a split another loss).
    """
    model.eval()
    all_logits, all_targets = [], []
    for inputs, targets in batches:
        with torch.autocast(inputs.device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            all_logits.append(model(inputs).float())
        all_targets.append(targets)
    if not all_logits:
        raise CxrError("nothing to evaluate: the split is empty")
    logits, targets = torch.cat(all_logits), torch.cat(all_targets)
    if not bool(torch.isfinite(logits).all()):
        # The training loss can stay finite while the weights no longer give finite outputs.
        raise DivergedError("the model's outputs on evaluation are NaN or infinite")
    loss = float(loss_fn(logits, targets))
    scores = (torch.sigmoid(logits) if multilabel else torch.softmax(logits, dim=1)).cpu().numpy()
    return loss, targets.cpu().numpy(), scores


# ------------------------------------------------------------------ the run

class TrainingRun:
    """Model, optimizer and data of one configuration, trained an epoch at a time.

    The model starts from the configuration's pretrained or --weights file unless `starting_weights` is off:
    where restore() will overwrite every weight from a checkpoint, which needs neither file nor network.
    """

    def __init__(self, config: TrainConfig, data: PreparedData | None = None, starting_weights: bool = True):
        config.validate()
        self.config = config
        torch.manual_seed(config.seed)
        self.device = select_device(config.device)
        self.data = data or prepare_data(config)
        self.classes = self.data.index.classes
        self.multilabel = self.data.index.multilabel
        if len(self.data.rows("val")) == 0:
            raise CxrError(f"the val split of {config.dataset} is empty; use a larger dataset")
        train_images = len(self.data.rows("train"))
        if train_images < MIN_BATCH_SIZE:
            raise CxrError(f"the train split of {config.dataset} holds {train_images} image(s): too few to train on "
                           f"(a training batch needs at least {MIN_BATCH_SIZE}: BatchNorm cannot train on one image); "
                           "use a larger dataset, or a split with more training images (smaller --val-fraction and "
                           "--test-fraction, or another --split-file)")
        self.model = (build_model(config.model, len(self.classes), config.pretrained, config.weights,
                                  classes=self.classes, multilabel=self.multilabel)
                      if starting_weights else build_model(config.model, len(self.classes)))
        self.gpu_path = gpu_path(config, self.device)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # one input size per run: let cuDNN time and pick its kernels
        if config.compile and not self.gpu_path["compile"]:
            log.info("compile ignored on %s: torch.compile is applied on CUDA only (on CPU it gave no speed-up "
                     "and took about a minute to compile, and it may change results in the last bits)", self.device)
        self.model = self.model.to(self.device, memory_format=torch.channels_last if self.gpu_path["channels_last"]
                                   else torch.contiguous_format)
        self.forward = torch.compile(self.model) if self.gpu_path["compile"] else self.model
        self.optimizer = build_optimizer(config.optimizer, self.model.parameters(), config.lr,
                                         config.momentum, config.weight_decay)
        self.loss_fn = nn.BCEWithLogitsLoss() if self.multilabel else nn.CrossEntropyLoss(
            weight=self.class_weights() if config.balance_classes else None)
        self.amp_dtype = autocast_dtype(self.device, config.amp)
        self.scaler = torch.amp.GradScaler("cuda") if self.amp_dtype == torch.float16 else None
        self.epoch = 0
        self.train_batches = self.batches("train", train=True)
        self.unweighted_splits: set[str] = set()  # those evaluation_loss warned of

    def class_weights(self) -> torch.Tensor:
        """Inverse class frequency in the training split (sklearn's 'balanced'); 0 for an absent class.

        Chest X-ray datasets are imbalanced (81% COVID-19 in dataset 3's 3-class view): unweighted
        cross-entropy settles on the majority class, which scores the floor of the macro metrics.
        """
        counts = np.bincount(self.data.targets[self.data.rows("train")], minlength=len(self.classes))
        weights = np.where(counts > 0, counts.sum() / (len(self.classes) * np.maximum(counts, 1)), 0.0)
        return torch.tensor(weights, dtype=torch.float32, device=self.device)

    def batches(self, split: str, train: bool = False) -> Batches:
        return Batches(self.data.images, self.data.targets, self.data.rows(split), self.config.batch_size,
                       self.device, train, self.config.seed, self.gpu_path["channels_last"])

    def train_epoch(self, progress: Callable[[int], None] | None = None) -> dict[str, float]:
        """Train one epoch, evaluate on validation; returns the metrics the study reports. `progress`: as
        train_one_epoch's."""
        self.train_batches.set_epoch(self.epoch)
        trained = train_one_epoch(self.forward, self.train_batches, self.optimizer, self.loss_fn,
                                  self.amp_dtype, self.scaler, progress=progress)
        self.epoch += 1
        metrics = {"epoch": self.epoch, "train/loss": trained["loss"]}
        metrics.update(self.evaluate_split("val")[0])
        metrics["epoch_seconds"] = trained["seconds"]
        metrics["images_per_second"] = trained["images"] / max(trained["seconds"], 1e-9)
        return metrics

    def evaluate_split(self, split: str) -> tuple[dict[str, float], np.ndarray, np.ndarray]:
        """`split/`-prefixed metrics, true targets and scores on one split."""
        loss, y_true, scores = evaluate(self.forward, self.batches(split), self.evaluation_loss(split),
                                        self.multilabel, self.amp_dtype)
        metrics = {f"{split}/loss": loss}
        metrics.update({f"{split}/{k}": v for k, v in classification_metrics(y_true, scores, self.multilabel).items()})
        return metrics, y_true, scores

    def evaluation_loss(self, split: str) -> nn.Module:
        """The loss evaluate_split reports on `split`: the training loss, except on a split whose every image is
        of a class without training images. The class-weighted loss gives those classes weight 0
        (class_weights), so its mean over such a split is 0/0; there `<split>/loss` is the unweighted
        cross-entropy instead (a warning names the classes, once per split): finite, and the same figure in
        every trial of a study, whose split is fixed, so that a study ranking on val/loss still ranks."""
        weights = getattr(self.loss_fn, "weight", None)
        targets = self.data.targets[self.data.rows(split)]
        if weights is None or len(targets) == 0 or weights.cpu().numpy()[targets].sum() > 0:
            return self.loss_fn
        if split not in self.unweighted_splits:
            self.unweighted_splits.add(split)
            untrained = [self.classes[k] for k in np.unique(targets)]
            log.warning("the %s split holds images of %s only, which no training image has (weight 0 in the "
                        "class-weighted loss): %s/loss is their unweighted cross-entropy", split,
                        ", ".join(untrained), split)
        return nn.CrossEntropyLoss()

    def checkpoint(self) -> dict[str, Any]:
        """Everything needed to resume or evaluate this run; loadable with weights_only=True.

        It carries torch's random state (dropout draws from it; the batch order and flips are seeded by
        epoch), so that a resumed run continues exactly as the uninterrupted one would."""
        state = {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                 "epoch": self.epoch, "config": asdict(self.config), "classes": list(self.classes),
                 "multilabel": self.multilabel, "rng": torch.get_rng_state()}
        if self.device.type == "cuda":
            state["cuda_rng"] = torch.cuda.get_rng_state(self.device)
        if self.scaler is not None:  # fp16's loss scale, which a fresh scaler would relearn by skipping steps
            state["scaler"] = self.scaler.state_dict()
        return state

    def restore(self, checkpoint: dict[str, Any]) -> None:
        self.model.load_state_dict(checkpoint["model"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.epoch = int(checkpoint["epoch"])
        if "rng" in checkpoint:  # absent from checkpoints written before it was kept
            torch.set_rng_state(checkpoint["rng"].cpu())
        if "cuda_rng" in checkpoint and self.device.type == "cuda":
            torch.cuda.set_rng_state(checkpoint["cuda_rng"].cpu(), self.device)
        if "scaler" in checkpoint and self.scaler is not None:
            self.scaler.load_state_dict(checkpoint["scaler"])
