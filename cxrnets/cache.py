"""Decode once: every image of a dataset, resized for one image size, in a uint8 array file.

A cache lives in `<cache root>/<dataset>-<size>px-<key>/` and holds
`images.npy` (a (N, 3, size, size) uint8 array, read as a memmap), `index.parquet` (relpath,
sha1 of the file, whether it decoded) and `meta.json`. The key hashes the
dataset name, the image size and every file's path, size and mtime, so it
changes when the files change. Building runs under a file lock: two trials
on a node never build the same cache at once; the second one waits and reads.

Stage a dataset on a node before a study (the cluster's setup commands do this):

    python -m cxrnets.cache --dataset covid-radiography --data-root ~/data/covid-radiography --image-size 224
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from filelock import FileLock

from cxrnets.data import DATASET_NAMES, DatasetIndex, dataset_options_help, load_dataset, parse_dataset_options
from cxrnets.errors import CxrError
from cxrnets.images import decode

log = logging.getLogger(__name__)

CACHE_FORMAT = 1  # bump when decoding or resizing changes
PROGRESS_SECONDS = 30  # a progress line at least this often while decoding, besides every 500 images


def default_cache_root() -> Path:
    return Path(os.environ.get("CXR_TUNE_CACHE", Path.home() / ".cache" / "cxr-tune"))


@dataclass
class ImageCache:
    """A decoded dataset. `images[i]` belongs to `index.frame.iloc[i]`; undecodable files are dropped."""

    directory: Path
    index: DatasetIndex
    images: np.ndarray
    sha1: np.ndarray
    decoded: int  # images decoded by this call: 0 when the cache was already there


def cache_key(index: DatasetIndex, image_size: int) -> str:
    digest = hashlib.sha256(f"{CACHE_FORMAT}|{index.name}|{image_size}".encode())
    for relpath, path in zip(index.frame["relpath"], index.paths()):
        stat = path.stat()
        digest.update(f"|{relpath}|{stat.st_size}|{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:16]


def build_cache(index: DatasetIndex, image_size: int, cache_root: str | Path | None = None,
                workers: int | None = None) -> ImageCache:
    """Return the decoded images of `index` at `image_size`, decoding only if no cache exists yet."""
    cache_root = Path(cache_root) if cache_root else default_cache_root()
    directory = cache_root / f"{index.name}-{image_size}px-{cache_key(index, image_size)}"
    cache_root.mkdir(parents=True, exist_ok=True)
    decoded = 0
    with FileLock(str(directory) + ".lock"):
        if not (directory / "meta.json").is_file():
            decoded = _decode_into(directory, index, image_size, workers or os.cpu_count() or 1)
    return _open(directory, index, decoded)


def _decode_into(directory: Path, index: DatasetIndex, image_size: int, workers: int) -> int:
    """Decode into `<directory>.partial`, renamed to `directory` when complete; removed if decoding fails or
    is interrupted, so that no half-written array of gigabytes stays behind."""
    partial = directory.with_name(directory.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    check_free_space(directory, index.name, len(index.frame), image_size)
    partial.mkdir(parents=True)
    try:
        _decode_files(partial, index, image_size, workers, directory)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    shutil.rmtree(directory, ignore_errors=True)
    partial.rename(directory)
    return len(index.frame)


def check_free_space(directory: Path, dataset: str, count: int, image_size: int) -> None:
    """Refuse a cache the disk cannot hold: a write into a memory-mapped file on a full disk kills the
    process (SIGBUS) instead of raising."""
    needed = count * 3 * image_size * image_size
    free = shutil.disk_usage(directory.parent).free
    if needed > free:
        raise CxrError(f"{directory.parent}: the cache of {count} images of {dataset} at {image_size} px needs "
                       f"{needed / 1e6:,.1f} MB and the disk has {free / 1e6:,.1f} MB free; free some space, "
                       "choose a smaller --image-size, or put the cache on a larger disk (--cache-dir or "
                       "CXR_TUNE_CACHE)")


def _decode_files(partial: Path, index: DatasetIndex, image_size: int, workers: int, directory: Path) -> None:
    paths = index.paths()
    images = np.lib.format.open_memmap(
        partial / "images.npy", mode="w+", dtype=np.uint8, shape=(len(paths), 3, image_size, image_size)
    )
    sha1 = [""] * len(paths)
    errors: list[str | None] = [None] * len(paths)

    def decode_one(i: int) -> None:
        try:
            data = paths[i].read_bytes()
            sha1[i] = hashlib.sha1(data).hexdigest()
            images[i] = decode(data, image_size, paths[i])
        except (CxrError, OSError) as error:
            errors[i] = str(error)

    started = last_report = time.perf_counter()
    log.info("decoding %d images of %s at %d px into %s (%s MB)", len(paths), index.name, image_size, directory,
             f"{images.nbytes / 1e6:,.1f}")
    pool = ThreadPoolExecutor(max_workers=workers)
    try:
        for done, _ in enumerate(pool.map(decode_one, range(len(paths))), start=1):
            now = time.perf_counter()
            if done % 500 == 0 or done == len(paths) or now - last_report > PROGRESS_SECONDS:
                log.info("decoded %d/%d images (%.1f images/s)", done, len(paths), done / max(now - started, 1e-9))
                last_report = now
    finally:
        pool.shutdown(cancel_futures=True)  # on Ctrl-C, not after decoding every image queued
    images.flush()
    for i, error in enumerate(errors):
        if error:
            log.warning("skipped undecodable image: %s", error)
    frame = pd.DataFrame({"relpath": index.frame["relpath"], "sha1": sha1, "ok": [e is None for e in errors],
                          "error": [e or "" for e in errors]})
    frame.to_parquet(partial / "index.parquet", index=False)
    meta = {"format": CACHE_FORMAT, "dataset": index.name, "root": str(index.root), "image_size": image_size,
            "images": len(paths), "undecodable": int((~frame["ok"]).sum()),
            "seconds": round(time.perf_counter() - started, 2)}
    (partial / "meta.json").write_text(json.dumps(meta, indent=2))


def _open(directory: Path, index: DatasetIndex, decoded: int) -> ImageCache:
    table = pd.read_parquet(directory / "index.parquet")
    if list(table["relpath"]) != list(index.frame["relpath"]):
        raise CxrError(f"{directory}: cache index does not match the dataset; delete the folder to rebuild it")
    images = np.load(directory / "images.npy", mmap_mode="r")
    ok = table["ok"].to_numpy()
    skipped = int((~ok).sum())
    if skipped:
        index = index.subset(ok)
        index.skipped["undecodable image"] = skipped
        more = f"; and {skipped - 5} more, listed in {directory / 'index.parquet'}" if skipped > 5 else ""
        log.warning("%s: %d undecodable image(s) left out: %s%s", index.name, skipped,
                    "; ".join(table.loc[~ok, "error"].head(5)), more)
        images = images[ok]  # a copy in memory; only happens for datasets with broken files
    return ImageCache(directory, index, images, table.loc[ok, "sha1"].to_numpy(), decoded)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m cxrnets.cache",
                                     description="Decode a dataset once into the node's image cache.")
    parser.add_argument("--dataset", required=True, choices=DATASET_NAMES, help="dataset name")
    parser.add_argument("--data-root", required=True, help="where the dataset lies (the CSV file for 'csv')")
    parser.add_argument("--dataset-option", action="append", default=None, metavar="KEY=VALUE",
                        help="a loader option, repeatable; the images cached are those the options keep "
                             f"({dataset_options_help()})")
    parser.add_argument("--image-size", type=int, nargs="+", default=[224],
                        help="one or more square sizes in pixels to cache (default: 224)")
    parser.add_argument("--cache-dir", default=None,
                        help="cache root (default: $CXR_TUNE_CACHE or ~/.cache/cxr-tune)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        options = parse_dataset_options(args.dataset_option, [args.dataset]).get(args.dataset, {})
        index = load_dataset(args.dataset, args.data_root, **options)
        for size in args.image_size:
            cache = build_cache(index, size, args.cache_dir)
            state = f"decoded {cache.decoded} images" if cache.decoded else "already cached"
            print(f"{args.dataset} at {size}px: {state}, {len(cache.index.frame)} usable -> {cache.directory}")
    except CxrError as error:
        raise SystemExit(f"error: {error}") from None
    except KeyboardInterrupt:
        print("interrupted: the cache being decoded was removed (those printed above are complete); run the "
              "same command again", file=sys.stderr)
        raise SystemExit(130) from None


if __name__ == "__main__":
    main()
