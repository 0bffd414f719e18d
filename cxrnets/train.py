"""Train one configuration without Ray: the bare baseline that a study's trials repeat.

    python -m cxrnets.train                      # ResNet50 on the embedded sample, 64 px, 5 epochs
    python -m cxrnets.train --dataset covid-chestxray --data-root ../shared/data/covid-chestxray-dataset \
        --model resnet50 --image-size 64 --epochs 2
    python -m cxrnets.train --dataset csv --data-root labels.csv --dataset-option patient_column=patient

Prints the validation metrics after every epoch, evaluates on the test split
at the end, and saves `<out>/checkpoint.pt` (model, optimizer, epoch, config).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import fields
from pathlib import Path

from cxrnets.config import TrainConfig
from cxrnets.data import DATASET_NAMES, dataset_options_help, parse_dataset_options
from cxrnets.errors import CxrError, DivergedError
from cxrnets.names import MODEL_NAMES, OPTIMIZER_NAMES

log = logging.getLogger("cxrnets.train")


def parse_args(argv: list[str] | None = None) -> tuple[TrainConfig, Path]:
    defaults = TrainConfig()
    parser = argparse.ArgumentParser(description="Train one chest X-ray classifier configuration (no Ray).",
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--dataset", default=defaults.dataset, choices=DATASET_NAMES, help="dataset name")
    parser.add_argument("--data-root", default=defaults.data_root,
                        help="dataset folder (the CSV file for 'csv'); default: the embedded sample")
    parser.add_argument("--dataset-option", action="append", default=None, metavar="KEY=VALUE",
                        help=f"a loader option, repeatable ({dataset_options_help()})")
    parser.add_argument("--model", default=defaults.model, choices=MODEL_NAMES, help="network")
    parser.add_argument("--optimizer", default=defaults.optimizer, choices=OPTIMIZER_NAMES, help="optimizer")
    parser.add_argument("--lr", type=float, default=defaults.lr, help="learning rate")
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size, help="images per batch")
    parser.add_argument("--epochs", type=int, default=defaults.epochs, help="training epochs")
    parser.add_argument("--image-size", type=int, default=defaults.image_size, help="square input size in pixels")
    parser.add_argument("--pretrained", action="store_true", help="start from ImageNet weights")
    parser.add_argument("--weights", default=None, help="start from this weights file (implies --pretrained)")
    parser.add_argument("--momentum", type=float, default=defaults.momentum, help="SGD momentum")
    parser.add_argument("--weight-decay", type=float, default=defaults.weight_decay, help="L2 weight decay")
    parser.add_argument("--seed", type=int, default=defaults.seed, help="seed of the split, init and shuffling")
    parser.add_argument("--split-file", default=None, help="reuse (or write) the train/val/test split here")
    parser.add_argument("--cache-dir", default=None, help="decode-once cache root (default: ~/.cache/cxr-tune)")
    parser.add_argument("--device", default="auto", help="auto (CUDA if present, else CPU), cpu, cuda, cuda:1")
    parser.add_argument("--no-amp", action="store_true",
                        help="disable mixed precision on CUDA (bf16 where the card supports it, else fp16); "
                             "CPU always trains in float32")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model (CUDA only: ignored on CPU)")
    parser.add_argument("--no-balance", action="store_true",
                        help="plain cross-entropy instead of weighting classes by inverse training frequency")
    parser.add_argument("--out", default="runs/train", help="folder for checkpoint.pt and metrics.jsonl")
    args = parser.parse_args(argv)
    given = {f.name: getattr(args, f.name) for f in fields(TrainConfig) if hasattr(args, f.name)}
    try:
        options = parse_dataset_options(args.dataset_option, [args.dataset]).get(args.dataset, {})
    except CxrError as error:
        parser.error(str(error))
    config = TrainConfig(**given, amp=not args.no_amp, balance_classes=not args.no_balance, dataset_options=options)
    config.pretrained = config.pretrained or config.weights is not None
    return config, Path(args.out)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    config, out = parse_args(argv)
    from cxrnets.training import TrainingRun, save_checkpoint  # torch: after the options are read

    try:
        run = TrainingRun(config)
    except CxrError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    log.info("%s on %s (%s), %d classes: %s", config.model, config.dataset, run.device, len(run.classes),
             ", ".join(run.classes))
    history = out / "metrics.jsonl"
    for _ in range(run.epoch, config.epochs):
        try:
            metrics = run.train_epoch()
        except DivergedError as error:
            print(f"status: diverged at epoch {run.epoch + 1}: {error}; try a lower --lr", file=sys.stderr)
            return 3
        shown = "  ".join(f"{key.removeprefix('val/')} {value:.3f}" for key, value in metrics.items()
                          if key.startswith("val/"))
        log.info("epoch %d/%d  train loss %.4f  val: %s  (%.1f s, %.1f images/s)", metrics["epoch"],
                 config.epochs, metrics["train/loss"], shown, metrics["epoch_seconds"], metrics["images_per_second"])
        with history.open("a") as file:
            file.write(json.dumps(metrics) + "\n")
        save_checkpoint(run.checkpoint(), out / "checkpoint.pt")
    test_metrics, _, _ = run.evaluate_split("test")
    log.info("test: %s", "  ".join(f"{k.removeprefix('test/')} {v:.3f}" for k, v in test_metrics.items()))
    log.info("checkpoint: %s", out / "checkpoint.pt")
    return 0


if __name__ == "__main__":
    sys.exit(main())
