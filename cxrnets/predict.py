"""Classify new images with a trained model: a study's selected weights or a `cxrnets.train` checkpoint.

    python -m cxrnets.predict studies/<name>/weights/<trial id>.pt ~/xrays/ --out predictions.csv
    python -m cxrnets.predict runs/train/checkpoint.pt a.png b.jpg

Each image is decoded and resized exactly as the model's training images were
(the checkpoint carries its image size and classes) and scored in batches; the
CSV holds one row per image: its path, the predicted class (multi-label: every
label at probability 0.5 or more, ';'-joined) and each class's probability. An
image that cannot be decoded gets a row with the error and no scores; the others
are scored (where none is, the CSV of errors is written all the same and the
status is 1). The rows are written as each chunk of images is scored, to
`<out>.partial`, renamed to `<out>` at the end: Ctrl-C (status 130) or a crash
keeps the rows scored so far there. Refused input ends with status 2. For
research: no model here is a diagnostic device.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from cxrnets.errors import CxrError
from cxrnets.images import (IMAGE_SUFFIXES, data_files, described_types, how_to_read, images_and_others,
                            is_image_file, load_image, types_not_read)
from cxrnets.names import MIN_IMAGE_SIZE, MODEL_NAMES
from cxrnets.progress import speed_and_time_left

log = logging.getLogger("cxrnets.predict")

CHUNK = 512  # images decoded and scored at a time: bounds memory (77 MB of uint8 pixels at 224 px)


def check_trained_model(checkpoint: dict[str, Any], source: str) -> None:
    """CxrError naming `source` (where the checkpoint was read from) unless its config names a model and an
    image size that model takes, and it names as many classes (2 or more) as its weights' head scores."""
    from cxrnets.models import head_size
    from cxrnets.training import CHECKPOINT_FILES

    config = checkpoint["config"] if isinstance(checkpoint["config"], dict) else {}
    name = config.get("model")
    if name not in MODEL_NAMES:
        named = "names no model" if name is None else f"names model {name!r}, not one of {', '.join(MODEL_NAMES)}"
        raise CxrError(f"{source}: its config {named}: pass {CHECKPOINT_FILES}")
    size = config.get("image_size")
    if isinstance(size, bool) or not isinstance(size, int) or size < MIN_IMAGE_SIZE[name]:
        has = "has no image_size" if size is None else f"has image_size {size!r}, not one {name} takes"
        raise CxrError(f"{source}: its config {has}: pass {CHECKPOINT_FILES}")
    classes = checkpoint["classes"]
    if not (isinstance(classes, list) and len(classes) >= 2 and all(isinstance(c, str) for c in classes)):
        raise CxrError(f"{source}: its classes are {classes!r}, not a list of 2 or more names: pass "
                       f"{CHECKPOINT_FILES}")
    outputs = head_size(name, checkpoint["model"]) if isinstance(checkpoint["model"], dict) else None
    if outputs != len(classes):
        head = f"whose head scores {outputs} classes" if outputs is not None else f"which hold no {name} head"
        raise CxrError(f"{source}: its {len(classes)} classes ({', '.join(classes)}) do not fit its {name} weights, "
                       f"{head}: pass {CHECKPOINT_FILES}")


def model_from_checkpoint(checkpoint: dict[str, Any], device: str = "auto", source: str = "the checkpoint"):
    """(model, device): the checkpoint's network with its weights, in eval mode on `device`; CxrError naming
    `source` (the file it was read from) where check_trained_model refuses it or the weights do not fit."""
    from cxrnets.models import build_model
    from cxrnets.training import CHECKPOINT_FILES, select_device

    check_trained_model(checkpoint, source)
    name = checkpoint["config"]["model"]
    model = build_model(name, len(checkpoint["classes"]))
    try:
        model.load_state_dict(checkpoint["model"])
    except (RuntimeError, KeyError, TypeError) as error:
        raise CxrError(f"{source}: its weights do not fit {name} ({load_problems(error)}): pass "
                       f"{CHECKPOINT_FILES}") from error
    target = select_device(device)
    return model.to(target).eval(), target


def load_problems(error: Exception, shown: int = 2, width: int = 150) -> str:
    """The first `shown` of the problems that load_state_dict's `error` lists (each cut to about `width`
    characters), and how many more there are."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    problems = lines[1:] if len(lines) > 1 and lines[0].startswith("Error(s) in loading") else lines
    cut = [line if len(line) <= width else line[:width].rsplit(" ", 1)[0] + " ..." for line in problems[:shown]]
    more = f" (and {len(problems) - shown} more)" if len(problems) > shown else ""
    return "; ".join(cut) + more or type(error).__name__


def predict(model, device, images, rows: np.ndarray, multilabel: bool = False,
            batch_size: int = 64) -> np.ndarray:
    """A model's probabilities (len(rows), classes) on `rows` of decoded uint8 `images` (N, 3, S, S): an
    array or a cache's CachedImages,
    preprocessed as training's evaluation preprocesses them (cxrnets.batches): softmax, or a sigmoid per label
    if `multilabel`. `model` and `device` as model_from_checkpoint gives them."""
    import torch

    from cxrnets.batches import Batches

    placeholder = np.zeros(len(images), dtype=np.int64)  # Batches yields targets too: there are none here
    scores = []
    with torch.inference_mode():
        for inputs, _ in Batches(images, placeholder, rows, batch_size, device, train=False):
            logits = model(inputs).float()
            scores.append(torch.sigmoid(logits) if multilabel else torch.softmax(logits, dim=1))
    probabilities = torch.cat(scores).cpu().numpy()
    if not np.isfinite(probabilities).all():
        raise CxrError("the model's outputs are NaN or infinite: its weights are unusable (a diverged trial?)")
    return probabilities


def image_paths(paths: list[str | Path]) -> list[Path]:
    """The image files named, and those under the folders named (recursively, sorted; hidden files and folders,
    is_hidden's, are not searched); the other files there (images of a type not read, with what to convert them
    to, and files that are not images) are logged by type, and the links there that lead nowhere by count.
    CxrError for a path that does not exist or when there is no image at all."""
    found: list[Path] = []
    not_read: dict[Path, Counter[str]] = {}  # folder: its files of each type not read
    broken: dict[Path, list[Path]] = {}  # folder: its links that lead nowhere
    for path in map(Path, paths):
        if path.is_dir():
            files, broken_links = data_files(path)
            found += [file for file in files if is_image_file(file)]
            if types := types_not_read(files):
                not_read[path] = types
            if broken_links:
                broken[path] = broken_links
        elif path.is_file():
            found.append(path)
        else:
            raise CxrError(f"{path} does not exist: pass image files or folders of images")
    if not found:
        images, others = images_and_others(sum(not_read.values(), Counter()))
        kinds = [f"files of a type not read ({described_types(images)})"] if images else []
        kinds += [f"files that are not images ({described_types(others)})"] if others else []
        only = f": only {' and '.join(kinds)}" if kinds else ""
        only += f"; {how_to_read(images)} to score {'those' if others else 'them'}" if images else ""
        links = sum(broken.values(), [])
        nowhere = f" ({len(links)} link(s) to nothing, e.g. {links[0]})" if links else ""
        raise CxrError(f"no image files ({', '.join(sorted(IMAGE_SUFFIXES))}) in {', '.join(map(str, paths))}"
                       f"{only}{nowhere}")
    for folder, types in not_read.items():
        images, others = images_and_others(types)
        if images:
            log.warning("not scored: %d file%s in %s of a type not read (%s): %s to score %s", images.total(),
                        "s" if images.total() > 1 else "", folder, described_types(images), how_to_read(images),
                        "them" if images.total() > 1 else "it")
        if others:
            many = others.total() > 1
            log.warning("not scored: %d file%s in %s that %s not images (%s)", others.total(), "s" if many else "",
                        folder, "are" if many else "is", described_types(others))
    for folder, links in broken.items():
        log.warning("not scored: %d link%s in %s that lead%s nowhere (e.g. %s): point %s at an image or remove %s",
                    len(links), "s" if len(links) > 1 else "", folder, "" if len(links) > 1 else "s", links[0],
                    *(("them", "them") if len(links) > 1 else ("it", "it")))
    return found


def decode_all(paths: list[Path], image_size: int, workers: int = 4) -> tuple[np.ndarray, list[str]]:
    """(N, 3, S, S) uint8 pixels of `paths` and an error per path ('' where it decoded; its pixels stay 0)."""
    pixels = np.zeros((len(paths), 3, image_size, image_size), dtype=np.uint8)
    errors = [""] * len(paths)

    def decode_one(i: int) -> None:
        try:
            pixels[i] = load_image(paths[i], image_size)
        except CxrError as error:
            errors[i] = str(error)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(decode_one, range(len(paths))))
    return pixels, errors


def scored_chunks(paths: list[Path], model, device, classes: list[str], multilabel: bool, image_size: int,
                  batch_size: int) -> Iterator[list[dict[str, Any]]]:
    """prediction_rows of `paths`, CHUNK images at a time (decoded, then scored)."""
    for start in range(0, len(paths), CHUNK):
        chunk = paths[start:start + CHUNK]
        pixels, errors = decode_all(chunk, image_size)
        decoded = np.flatnonzero([not error for error in errors])
        scores = (predict(model, device, pixels, decoded, multilabel, batch_size) if len(decoded)
                  else np.zeros((0, len(classes))))
        yield prediction_rows(chunk, scores, errors, classes, multilabel)


def prediction_rows(paths: list[Path], scores: np.ndarray, errors: list[str], classes: list[str],
                    multilabel: bool) -> list[dict[str, Any]]:
    """One row per path: path, predicted (as the metrics predict: argmax, or every label at 0.5 or more),
    one probability column per class, error. `scores`: one row per path without an error."""
    from cxrnets.metrics import class_names, predictions

    predicted = iter(class_names(predictions(scores, multilabel), classes, multilabel) if len(scores) else [])
    rows, scored = [], iter(scores)
    for path, error in zip(paths, errors):
        row: dict[str, Any] = {"path": str(path), "predicted": ""}
        if error:
            row.update({f"p({name})": float("nan") for name in classes})
        else:
            row["predicted"] = next(predicted)
            row.update({f"p({name})": float(p) for name, p in zip(classes, next(scored))})
        row["error"] = error
        rows.append(row)
    return rows


def rename_to_a_new_name(source: Path, path: Path) -> Path:
    """Rename `source` to `path` or, where `path` exists by now, to the first free `<stem>-1<suffix>`,
    `<stem>-2<suffix>`, ... beside it (a file is never overwritten, bar one made in the instant between the
    check and the rename); the name it got."""
    candidate, number = path, 0
    while candidate.exists():
        number += 1
        candidate = path.with_name(f"{path.stem}-{number}{path.suffix}")
    source.rename(candidate)
    return candidate


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m cxrnets.predict",
                                     description="Classify images with a trained model (no labels needed).")
    parser.add_argument("weights", help="a study's weights/<trial id>.pt or a checkpoint.pt of python -m "
                        "cxrnets.train, as a local file (python -m study.analyze leaves the copies of a bucket's "
                        "that it evaluated in downloads/ of its image cache: --cache-dir, else the study's, else "
                        "$CXR_TUNE_CACHE or ~/.cache/cxr-tune)")
    parser.add_argument("images", nargs="+", help="image files, or folders searched recursively for images")
    parser.add_argument("--out", default="predictions.csv", help="the CSV to write, which must not exist yet "
                        "(default: predictions.csv)")
    parser.add_argument("--device", default="auto", help="auto (CUDA if present, else CPU), cpu, cuda, cuda:1 "
                        "(default: auto)")
    parser.add_argument("--batch-size", type=int, default=64, help="images per batch (default: 64)")
    args = parser.parse_args(argv)
    if args.batch_size < 1:
        parser.error(f"--batch-size must be at least 1, got {args.batch_size}")
    return args


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = parse_args(argv)
    import pandas as pd

    from cxrnets.models import local_file
    from cxrnets.training import CHECKPOINT_FILES, check_output_folder, load_checkpoint

    out = Path(args.out)
    partial = out.with_name(out.name + ".partial")  # the rows written so far, renamed to `out` at the end
    try:
        if out.is_dir():
            raise CxrError(f"--out {out} is a folder: pass the CSV file to write, e.g. --out {out / 'predictions.csv'}")
        if out.exists():
            raise CxrError(f"--out {out} already exists (earlier predictions?): remove it or choose another --out; "
                           "nothing was overwritten")
        if partial.exists():
            raise CxrError(f"--out {out}: {partial} already exists (the predictions of an interrupted run?): move it "
                           "away, or choose another --out; nothing was overwritten")
        paths = image_paths(args.images)
        weights = local_file(args.weights)
        if not weights.is_file():
            raise CxrError(f"{weights} {'is a folder' if weights.is_dir() else 'does not exist'}: pass "
                           f"{CHECKPOINT_FILES}")
        if weights.suffix == ".json" and weights.with_suffix(".pt").is_file():
            raise CxrError(f"{weights} is the sidecar (epoch, metric) of weights: pass the .pt file beside it, "
                           f"{weights.with_suffix('.pt')}")
        if weights.suffix == ".json":
            raise CxrError(f"{weights} is a JSON file (a study's study.json, say), not a checkpoint: pass "
                           f"{CHECKPOINT_FILES}")
        checkpoint = load_checkpoint(weights)
        model, device = model_from_checkpoint(checkpoint, args.device, str(weights))
        check_output_folder(out.parent, f"--out {out}")
    except CxrError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: no image was scored yet; nothing was written", file=sys.stderr)
        return 130  # as a shell reports a command stopped by Ctrl-C
    classes, multilabel = list(checkpoint["classes"]), bool(checkpoint["multilabel"])
    image_size = int(checkpoint["config"]["image_size"])
    chosen_on = (f", {checkpoint['metric']} {checkpoint['value']:.3f} on validation" if "metric" in checkpoint
                 else "")
    log.info("%s, epoch %d%s; %d classes: %s; %d images at %d px", checkpoint["config"]["model"],
             checkpoint["epoch"], chosen_on, len(classes), ", ".join(classes), len(paths), image_size)
    done, errors, counts = 0, [], Counter()
    started = time.perf_counter()
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        with partial.open("x", encoding="utf-8", newline="") as file:
            for rows in scored_chunks(paths, model, device, classes, multilabel, image_size, args.batch_size):
                pd.DataFrame(rows).to_csv(file, header=done == 0, index=False, float_format="%.6g")
                file.flush()
                done += len(rows)
                errors += [row["error"] for row in rows if row["error"]]
                counts.update(row["predicted"] for row in rows if not row["error"])
                if len(paths) > CHUNK:
                    log.info("scored %d/%d images (%s)", done, len(paths),
                             speed_and_time_left(done, len(paths), time.perf_counter() - started))
    except CxrError as error:  # the model's outputs are NaN: the weights of a diverged run
        if done:
            kept = f"the {done} rows written before are in {partial} (move it away before running again)"
        else:
            partial.unlink(missing_ok=True)
            kept = "nothing was written"
        print(f"error: {weights}: {error}: pass the weights of another trial or run; {kept}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if done:
            print(f"interrupted: {done} of {len(paths)} images scored, in {partial} (move it away before running "
                  "the same command again)", file=sys.stderr)
        else:
            partial.unlink(missing_ok=True)
            print("interrupted: no image was scored yet; nothing was written", file=sys.stderr)
        return 130
    written = rename_to_a_new_name(partial, out)
    for error in errors[:5]:
        log.warning("not scored: %s", error)
    log.info("predicted: %s", ", ".join(f"{name or '(no label)'} {count}" for name, count in counts.most_common())
             or "nothing")
    log.info("%d of %d images scored%s; written to %s", done - len(errors), done,
             f" ({len(errors)} could not be decoded: see the error column)" if errors else "", written)
    if len(errors) == done:
        undecoded = f"none of the {done} images could be decoded" if done > 1 else "the image could not be decoded"
        print(f"error: no image was scored: {undecoded}; see the error column of {written}", file=sys.stderr)
    if written != out:
        print(f"error: --out {out} appeared while predicting (another run?) and was left as it is; these "
              f"predictions were written to {written} instead", file=sys.stderr)
        return 2
    return 1 if len(errors) == done else 0


if __name__ == "__main__":
    sys.exit(main())
