"""Train one configuration without Ray: the bare baseline that a study's trials repeat.

    python -m cxrnets.train                      # ResNet50 on the embedded sample, 64 px, 5 epochs
    python -m cxrnets.train --dataset covid-chestxray --data-root ../shared/data/covid-chestxray-dataset \
        --model resnet50 --image-size 64 --epochs 2
    python -m cxrnets.train --dataset csv --data-root labels.csv --dataset-option patient_column=patient
    python -m cxrnets.train --epochs 8 --resume  # the first command's run, continued to epoch 8

Prints the validation metrics after every epoch (and a progress line every
30 s within one), evaluates the last epoch's weights on the test split at the
end (not the best epoch's on validation: only the last is kept), and saves
`<out>/checkpoint.pt` (model, optimizer, epoch, config) and
`<out>/metrics.jsonl` after every epoch. The metrics and the checkpoint's path
go to stdout; progress lines, warnings and errors to stderr. A folder that already holds a run
(a checkpoint.pt; without one, what a run stopped before it left is replaced)
is refused unless `--resume` continues it (with the run's own options; only
--epochs, --cache-dir, the device options, --data-root where the data moved
and --weights, which is not read again, may change): after Ctrl-C, which
keeps the last finished epoch, or to train further. A folder another run is
writing (a --resume while the run still trains) is refused, naming its process.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import logging
import math
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import numpy as np

from cxrnets.cache import absolute_cache_dir
from cxrnets.config import TrainConfig
from cxrnets.data import DATASET_NAMES, dataset_options_help, parse_dataset_options
from cxrnets.errors import CxrError, DivergedError
from cxrnets.names import MODEL_NAMES, OPTIMIZER_NAMES
from cxrnets.progress import PROGRESS_SECONDS, speed_and_time_left

log = logging.getLogger("cxrnets.train")


RUN_FILES = ("checkpoint.pt", "metrics.jsonl")
LOCK = ".lock"  # held by the run writing the folder; it holds that process's id
PARTIAL_CHECKPOINT = "checkpoint.pt.partial"  # the next checkpoint, renamed to checkpoint.pt once written whole
# How far and where, not what is trained: the data may have moved (check_same_split checks it is the same
# data), and the starting weights file is not read again (the checkpoint keeps naming the one the run read).
RESUME_MAY_CHANGE = ("epochs", "device", "cache_dir", "amp", "compile", "data_root", "weights")


def parse_args(argv: list[str] | None = None) -> tuple[TrainConfig, Path, bool]:
    defaults = TrainConfig()
    parser = argparse.ArgumentParser(prog="python -m cxrnets.train",
                                     description="Train one chest X-ray classifier configuration (no Ray).")
    add = parser.add_argument
    add("--dataset", default=defaults.dataset, choices=DATASET_NAMES,
        help=f"dataset name (default: {defaults.dataset})")
    add("--data-root", default=defaults.data_root,
        help="dataset folder (the CSV file for 'csv') (default: the embedded sample)")
    add("--dataset-option", action="append", default=None, metavar="KEY=VALUE",
        help=f"a loader option, repeatable ({dataset_options_help()}) (default: none)")
    add("--model", default=defaults.model, choices=MODEL_NAMES, help=f"network (default: {defaults.model})")
    add("--optimizer", default=defaults.optimizer, choices=OPTIMIZER_NAMES,
        help=f"optimizer (default: {defaults.optimizer})")
    add("--lr", type=float, default=defaults.lr, help=f"learning rate (default: {defaults.lr})")
    add("--batch-size", type=int, default=defaults.batch_size,
        help=f"images per batch (default: {defaults.batch_size})")
    add("--epochs", type=int, default=defaults.epochs,
        help=f"train to this epoch (default: {defaults.epochs}); with --resume, raise it to train further")
    add("--image-size", type=int, default=defaults.image_size,
        help=f"square input size in pixels (default: {defaults.image_size})")
    add("--pretrained", action="store_true", help="start from ImageNet weights (default: from scratch)")
    add("--weights", default=None, help="start from this weights file (implies --pretrained; default: none)")
    add("--momentum", type=float, default=None,
        help=f"SGD momentum, with --optimizer sgd only (default: {defaults.momentum})")
    add("--weight-decay", type=float, default=defaults.weight_decay,
        help=f"L2 weight decay (default: {defaults.weight_decay})")
    add("--seed", type=int, default=defaults.seed,
        help=f"seed of the split, init and shuffling (default: {defaults.seed})")
    add("--val-fraction", type=float, default=defaults.val_fraction,
        help="share of the patients held out for validation, stratified by class "
             f"(default: {defaults.val_fraction}; a --split-file that exists keeps its own)")
    add("--test-fraction", type=float, default=defaults.test_fraction,
        help="share of the patients held out for the test evaluation at the end, stratified by class "
             f"(default: {defaults.test_fraction}; a --split-file that exists keeps its own)")
    add("--split-file", default=None, help="reuse (or write) the train/val/test split here (default: none, the "
        "split is made from --seed, --val-fraction and --test-fraction)")
    add("--cache-dir", default=None, help="decode-once cache root (default: $CXR_TUNE_CACHE or ~/.cache/cxr-tune)")
    add("--device", default="auto", help="auto (CUDA if present, else CPU), cpu, cuda, cuda:1 (default: auto)")
    add("--no-amp", action="store_true",
        help="disable mixed precision on CUDA (bf16 where the card supports it, else fp16); "
             "CPU always trains in float32")
    add("--compile", action="store_true", help="torch.compile the model (CUDA only: ignored on CPU)")
    add("--no-balance", action="store_true",
        help="plain cross-entropy instead of weighting classes by inverse training frequency")
    add("--out", default="runs/train", help="folder for checkpoint.pt and metrics.jsonl (default: runs/train)")
    add("--resume", action="store_true",
        help="continue the run in --out from its checkpoint.pt, given the run's own options (only --epochs, "
             "--device, --cache-dir, --no-amp, --compile, --data-root where the data moved (it must split as "
             "before) and --weights (not read again) may differ)")
    args = parser.parse_args(argv)
    args.cache_dir = absolute_cache_dir(args.cache_dir)
    if args.momentum is None:
        args.momentum = defaults.momentum
    elif args.optimizer != "sgd":
        parser.error(f"--momentum {args.momentum:g} with --optimizer {args.optimizer}: momentum is SGD's, "
                     f"{args.optimizer} would ignore it; drop --momentum, or choose --optimizer sgd")
    given = {f.name: getattr(args, f.name) for f in fields(TrainConfig) if hasattr(args, f.name)}
    try:
        options = parse_dataset_options(args.dataset_option, [args.dataset]).get(args.dataset, {})
    except CxrError as error:
        parser.error(str(error))
    config = TrainConfig(**given, amp=not args.no_amp, balance_classes=not args.no_balance, dataset_options=options)
    config.pretrained = config.pretrained or config.weights is not None
    return config, Path(args.out), args.resume


@contextmanager
def out_folder_lock(out: Path) -> Iterator[None]:
    """Hold `out` (made where needed) for this process: a second run into it, a --resume while the run still
    trains included, is refused naming this process. The lock is the operating system's (flock on <out>/.lock),
    so it ends with the process, even a killed one: it never blocks the resume. A folder made here that holds
    nothing else at the end (the run stopped before writing) is removed again, with the parents made for it."""
    from cxrnets.training import check_output_folder

    check_output_folder(out, f"--out {out}")
    made = [path for path in (out, *out.parents) if not path.exists()]  # innermost first
    out.mkdir(parents=True, exist_ok=True)
    lock = out / LOCK
    with lock.open("a+") as file:
        try:
            fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            file.seek(0)
            holder = file.read().strip()  # empty in the instant between the holder's lock and its writing it
            raise CxrError(f"--out {out} is in use by {f'process {holder}' if holder else 'another process'} "
                           f"(a python -m cxrnets.train writing there; it holds {lock}): wait for it to end, or stop "
                           "it and then --resume; or pass another --out; nothing was written") from None
        file.truncate(0)
        file.write(f"{os.getpid()}\n")
        file.flush()
        try:
            yield
        finally:
            if made and [path.name for path in out.iterdir()] == [LOCK]:
                lock.unlink()
                for path in made:
                    if any(path.iterdir()):  # something else made there since
                        break
                    path.rmdir()


def refuse_an_earlier_run(out: Path) -> None:
    """Refuse a folder with a checkpoint.pt: a run that --resume continues (without one, there is nothing to
    continue, and clear_an_unfinished_start makes way for the new run)."""
    if (out / "checkpoint.pt").exists():
        found = [name for name in RUN_FILES if (out / name).exists()]
        raise CxrError(f"{out} already holds a run ({', '.join(found)}): pass --resume to continue it, or another "
                       "--out; nothing was overwritten")


def clear_an_unfinished_start(out: Path) -> None:
    """Remove what a run stopped before its first checkpoint left in `out` (the metrics of an epoch whose
    checkpoint was never written, a half-written checkpoint): the new run starts in its place."""
    for name in ("metrics.jsonl", PARTIAL_CHECKPOINT):
        path = out / name
        if path.exists():
            log.info("%s: left by a run stopped before its first checkpoint; removed, the run starts again", path)
            path.unlink()


def resumable_checkpoint(out: Path, config: TrainConfig) -> dict[str, Any]:
    """The run in `out` to continue with `config`: its checkpoint, if `config` trains the same thing further
    (`config` then names the weights file the run started from)."""
    from cxrnets.training import TRAINED_MODEL_KEYS, load_checkpoint

    path = out / "checkpoint.pt"
    if not path.is_file():
        raise CxrError(f"--resume: {path} does not exist: nothing to continue (leave out --resume to start a run)")
    try:
        # Not memory-mapped: the run goes on from these tensors while checkpoint.pt is replaced.
        checkpoint = load_checkpoint(path, TRAINED_MODEL_KEYS, mmap=False)
    except CxrError as error:
        raise CxrError(f"--resume: {error}; or start a new run with another --out") from error
    if "optimizer" not in checkpoint:
        raise CxrError(f"--resume: {path} holds no optimizer state (a study's best weights?): start a new run with "
                       "--weights FILE to fine-tune from it (another --out, or move the file out of this one)")
    saved = checkpoint["config"]
    # The run goes on from the weights file it started from, given again or not; as --weights does, it implies
    # --pretrained (parse_args).
    config.weights = saved.get("weights")
    config.pretrained = config.pretrained or config.weights is not None
    now = asdict(config)
    changed = [f"{key} {saved.get(key)!r} in the checkpoint, {value!r} now" for key, value in now.items()
               if key not in RESUME_MAY_CHANGE and saved.get(key) != value]
    if changed:
        raise CxrError(f"--resume: {path} trained another configuration ({'; '.join(changed)}): give the run's own "
                       f"options (only {', '.join(RESUME_MAY_CHANGE)} may change), or another --out")
    if checkpoint["epoch"] > config.epochs:
        raise CxrError(f"--resume: {path} is at epoch {checkpoint['epoch']} already, past --epochs {config.epochs}: "
                       "raise --epochs above it to train further")
    if checkpoint["epoch"] == config.epochs:
        log.info("%s is at epoch %d, --epochs: nothing to train; evaluating it on the test split (raise --epochs "
                 "to train further)", path, checkpoint["epoch"])
    return checkpoint


def check_same_split(checkpoint: dict[str, Any], digest: str, out: Path) -> None:
    """Refuse to continue a run on another split than its own: images it validated or will be tested on would
    be trained on (the split is made again from the data and the seed, unless --split-file keeps it)."""
    saved = checkpoint.get("split_digest")  # absent from checkpoints written before it was kept
    if saved is not None and saved != digest:
        raise CxrError(f"--resume: the split made from the data now differs from the one {out / 'checkpoint.pt'} "
                       "trained on (images added, removed or changed since; or the run was made by an earlier "
                       "cxr-tune, one that indexed an image listed twice in the data twice, or that fingerprinted "
                       "images under 32 px at their own size): continuing would train on images it held out; start "
                       "a new run with another --out, or restore the data it trained on")


def on_split_made_by_an_earlier_rule(run, checkpoint: dict[str, Any], out: Path):
    """The run on the split an earlier cxr-tune made of the same data, where that is the split its checkpoint
    trained on: a run from then continues on its own split. Splits took the images in the order the data lists
    them before (cxrnets.splits.make_split's in_listed_order), fingerprinted images at the run's own size before
    that (at 32 px where smaller: cxrnets.fingerprints.own_size_fingerprints), joined near-identical X-rays within
    fewer fingerprint bits before that (cxrnets.fingerprints.EARLIER_NEAR_IDENTICAL_BITS), and before that not at
    all; a checkpoint without a split digest was written before all four, and continues on the split made without
    them, unless --split-file kept its split. None otherwise."""
    from dataclasses import replace

    from cxrnets.fingerprints import (EARLIER_NEAR_IDENTICAL_BITS, FINGERPRINT_SIZE, NEAR_IDENTICAL_BITS,
                                      cache_fingerprints, own_size_fingerprint_size, own_size_fingerprints)
    from cxrnets.splits import make_split, split_digest
    from cxrnets.training import TrainingRun

    data, config = run.data, run.config
    saved = checkpoint.get("split_digest")  # absent from checkpoints written before it was kept
    if saved is None and config.split_file:
        return None
    frame = data.index.frame.assign(sha1=data.split["sha1"].to_numpy())
    size = data.cache.images.shape[-1]
    fingerprinted_at = own_size_fingerprint_size(size)
    now = own = None
    if saved is not None:
        now = cache_fingerprints(data.cache)
        own = now if fingerprinted_at == FINGERPRINT_SIZE else own_size_fingerprints(data.cache)
    # (fingerprints, joined within, what split it is), each made in the order the data lists the images
    rules = [(now, NEAR_IDENTICAL_BITS, "the split made when images were split in the order the data lists them "
              "(now in the order of their paths)"),
             (own, EARLIER_NEAR_IDENTICAL_BITS, "the split made when near-identical X-rays were joined within "
              f"{EARLIER_NEAR_IDENTICAL_BITS} fingerprint bits (now {NEAR_IDENTICAL_BITS})"),
             (None, 0, "the split made before near-identical X-rays were kept on one side")]
    if fingerprinted_at != FINGERPRINT_SIZE:  # then fingerprinted otherwise than now
        at_own_size = (f"found at the run's own {size} px" if fingerprinted_at == size else
                       f"found at {fingerprinted_at} px") + f" (now at {FINGERPRINT_SIZE} px, at every size)"
        rules[1:2] = [(own, NEAR_IDENTICAL_BITS, f"the split made when near-identical X-rays were {at_own_size}"),
                      (own, EARLIER_NEAR_IDENTICAL_BITS, f"{rules[1][2]}, {at_own_size}")]
    splits_log = logging.getLogger("cxrnets.splits")
    for prints, within, made in rules[-1:] if saved is None else rules:
        splits_log.disabled = True  # the earlier split's own log would read as today's
        try:
            earlier = make_split(frame, data.index.stratum(), config.val_fraction, config.test_fraction, config.seed,
                                 prints, within, in_listed_order=True)
        finally:
            splits_log.disabled = False
        digest = split_digest(earlier)
        if digest == split_digest(data.split) or (saved is not None and digest != saved):
            continue
        if saved is None:
            log.info("%s has no split digest (an earlier cxr-tune wrote it): it continues on %s, as then",
                     out / "checkpoint.pt", made)
        else:
            log.info("%s trained on %s: it continues on that split", out / "checkpoint.pt", made)
        return TrainingRun(config, replace(data, split=earlier), starting_weights=False)
    return None


def warn_of_absent_classes(run) -> None:
    """Warn of a class with no image on a split: on the training split the model cannot learn it; on the
    validation or test split the macro averages (cxrnets.metrics) count it as 0 in precision, recall and F1, and
    leave it out of the ROC AUC, which is nan where no class has one."""
    from cxrnets.training import named_counts, patients_per_split

    patients = patients_per_split(run.data)
    untrained = patients[patients["train"] == 0]
    if len(untrained):
        log.warning("no training image of %s (patients on train/val/test): the model cannot learn %s",
                    named_counts(untrained), "it" if len(untrained) == 1 else "them")
    for part, name in (("val", "validation"), ("test", "test")):
        targets = run.data.targets[run.data.rows(part)]
        counts = targets.sum(axis=0) if run.multilabel else np.bincount(targets, minlength=len(run.classes))
        absent = [run.classes[k] for k in np.flatnonzero(counts == 0)]
        if not absent:
            continue
        # A class's one-vs-rest ROC AUC needs images of it and images without it.
        ranked = ((counts > 0) & (counts < len(targets))).sum() if run.multilabel else (counts > 0).sum() > 1
        log.warning("no %s image of %s: %s/precision_macro, recall_macro and f1_macro count %s as 0, and %s", name,
                    ", ".join(absent), part, "it" if len(absent) == 1 else "them",
                    f"{part}/roc_auc_macro averages the other classes only" if ranked else
                    f"{part}/roc_auc_macro is nan: no class there has images of it and images without it")


def warn_of_a_full_batch(run) -> None:
    """Warn of a --batch-size that holds the whole training split: one step per epoch, the same training as
    any larger one."""
    train_images = len(run.data.rows("train"))
    if run.config.batch_size >= train_images:
        log.warning("--batch-size %d is at least the training split's %d images: each epoch trains one step on the "
                    "whole split (full-batch), as every --batch-size from %d up would", run.config.batch_size,
                    train_images, train_images)




class EpochProgress:
    """train_one_epoch's progress callback for the command line: a line every PROGRESS_SECONDS with the images
    trained of the training split's, the images per second and the epoch's time left, so that a long epoch does
    not pass in silence."""

    def __init__(self, epoch: int, epochs: int, train_images: int):
        self.epoch, self.epochs, self.train_images = epoch, epochs, train_images
        self.started = self.shown = time.perf_counter()

    def __call__(self, images: int) -> None:
        now = time.perf_counter()
        if now - self.shown < PROGRESS_SECONDS:
            return
        self.shown = now
        log.info("epoch %d/%d: %d/%d images trained (%s)", self.epoch, self.epochs, images, self.train_images,
                 speed_and_time_left(images, self.train_images, now - self.started))


def recorded_epoch(line: str) -> float:
    """The epoch of a metrics.jsonl line; infinite for a line cut short by an interruption."""
    try:
        return json.loads(line)["epoch"]
    except (ValueError, KeyError, TypeError):
        return math.inf


def metrics_line(metrics: dict[str, float]) -> str:
    """One epoch's line of metrics.jsonl; a nan or infinite value (roc_auc_macro where no class can be ranked)
    written as null: json.dumps would write NaN, which strict JSON readers refuse."""
    finite = {key: value if math.isfinite(value) else None for key, value in metrics.items()}
    return json.dumps(finite) + "\n"


def drop_epochs_after(history: Path, epoch: int) -> None:
    """Forget the metrics of epochs after the checkpoint's (written before an interruption stopped their
    checkpoint): the resumed run trains them again."""
    if not history.exists():
        return
    lines = history.read_text().splitlines()
    kept = [line for line in lines if recorded_epoch(line) <= epoch]
    if len(kept) < len(lines):
        log.info("%s: dropping %d epoch(s) recorded after the checkpoint's epoch %d, to be trained again",
                 history, len(lines) - len(kept), epoch)
        history.write_text("".join(line + "\n" for line in kept))


def start_or_resume(config: TrainConfig, out: Path, resume: bool):
    """(run, digest of its split): the run to train into `out` (which out_folder_lock holds), restored from its
    checkpoint if `resume`, with `out` ready for its next epoch; CxrError where `out` or the options do not allow
    it."""
    from cxrnets.models import check_starting_weights
    from cxrnets.splits import split_digest
    from cxrnets.training import TrainingRun

    checkpoint = None
    if resume:
        checkpoint = resumable_checkpoint(out, config)
    else:
        refuse_an_earlier_run(out)
        try:
            check_starting_weights(config.model, config.pretrained, config.weights)
        except CxrError as error:
            if config.weights is None:  # ImageNet's weights
                raise CxrError(f"{error}; or train from scratch (without --pretrained)") from error
            raise
    run = TrainingRun(config, starting_weights=checkpoint is None)
    digest = split_digest(run.data.split)
    if checkpoint is not None and checkpoint.get("split_digest") != digest:
        run = on_split_made_by_an_earlier_rule(run, checkpoint, out) or run
        digest = split_digest(run.data.split)
    if checkpoint is not None:
        check_same_split(checkpoint, digest, out)
    out.mkdir(parents=True, exist_ok=True)
    if checkpoint is None:
        clear_an_unfinished_start(out)
    log.info("%s on %s (%s), %d classes: %s", config.model, config.dataset, run.device, len(run.classes),
             ", ".join(run.classes))
    warn_of_absent_classes(run)
    warn_of_a_full_batch(run)
    if checkpoint is not None:
        run.restore(checkpoint)
        drop_epochs_after(out / "metrics.jsonl", run.epoch)
        log.info("resumed from %s at epoch %d", out / "checkpoint.pt", run.epoch)
    return run, digest


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    config, out, resume = parse_args(argv)
    try:
        config.validate(flags=True)
        with out_folder_lock(out):
            return train_into(config, out, resume)
    except CxrError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # while the output folder is checked (which loads torch)
        print("interrupted before training started: run the same command again", file=sys.stderr)
        return 130


def train_into(config: TrainConfig, out: Path, resume: bool) -> int:
    """Train (or --resume) the run in `out`, which the caller holds; main's exit status."""
    history, checkpoint_path = out / "metrics.jsonl", out / "checkpoint.pt"
    try:
        # torch: after the options are read, and inside the try, so that Ctrl-C while it loads ends in one line
        from cxrnets.training import save_checkpoint

        run, digest = start_or_resume(config, out, resume)
    except CxrError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted before training started: run the same command again", file=sys.stderr)
        return 130  # as a shell reports a command stopped by Ctrl-C
    saved = run.epoch  # the epoch checkpoint.pt holds
    for _ in range(run.epoch, config.epochs):
        try:
            started = time.perf_counter()
            metrics = run.train_epoch(EpochProgress(run.epoch + 1, config.epochs, len(run.data.rows("train"))))
            shown = "  ".join(f"{key.removeprefix('val/')} {value:.3f}" for key, value in metrics.items()
                              if key.startswith("val/"))
            print(f"epoch {metrics['epoch']}/{config.epochs}  train loss {metrics['train/loss']:.4f}  val: {shown}  "
                  f"(training {metrics['epoch_seconds']:.1f} s, {metrics['images_per_second']:.1f} images/s; "
                  f"{time.perf_counter() - started:.1f} s with validation)", flush=True)
            with history.open("a") as file:
                file.write(metrics_line(metrics))
            # Replaced whole, never half-written: an interrupted run resumes from the last complete epoch.
            partial = out / PARTIAL_CHECKPOINT
            save_checkpoint({**run.checkpoint(), "split_digest": digest}, partial)
            partial.replace(checkpoint_path)
            saved = metrics["epoch"]
        except DivergedError as error:
            # A checkpoint at this lr refuses a fresh start in its folder, and a resume at another lr.
            then = f"{checkpoint_path} holds epoch {saved}: try a lower --lr with another --out" if saved else \
                "try a lower --lr"
            print(f"status: diverged at epoch {saved + 1}: {error}; {then}", file=sys.stderr)
            return 3
        except KeyboardInterrupt:
            then = (f"{checkpoint_path} holds epoch {saved}; continue the run with the same command and --resume"
                    if saved else "no checkpoint was written yet; run the same command again to start the run over")
            print(f"interrupted in epoch {saved + 1}: {then}", file=sys.stderr)
            return 130
    try:
        test_metrics, _, _ = run.evaluate_split("test")
    except KeyboardInterrupt:
        print(f"interrupted in the test evaluation: {checkpoint_path} holds the trained model (epoch {saved}); its "
              "test metrics were not computed: the same command with --resume computes them, training nothing more",
              file=sys.stderr)
        return 130
    except DivergedError as error:
        print(f"status: diverged in the test evaluation: {error}; {checkpoint_path} holds epoch {saved}, finite on "
              "validation but not on the test images: its weights are unusable; try a lower --lr with another --out",
              file=sys.stderr)
        return 3
    print("test: " + "  ".join(f"{k.removeprefix('test/')} {v:.3f}" for k, v in test_metrics.items()))
    print(f"checkpoint: {checkpoint_path}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
