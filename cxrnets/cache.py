"""Decode once: every image of a dataset, resized for one image size, in uint8 array files.

A cache lives in `<cache root>/<dataset>-<size>px-<key>/` and holds `grey.npy` (an (N, size, size)
uint8 array, read as a memmap: one plane per image, enough for a grey image, whose three channels are
equal), `colour.u8` (the three planes of each image whose channels differ, K of them: an annotated
figure, a photograph), `index.parquet` (relpath, sha1 of the file, whether it decoded, its row in
`colour.u8` or -1) and `meta.json`. `CachedImages` reads them back as one (N, 3, size, size) array
would be read, bit for bit what `cxrnets.images.decode` gives. The key hashes the dataset name, the
image size, the Pillow version (another may decode a file otherwise) and every file's path, size and
mtime, so it changes when the files change (`--prune` deletes the cache that a rebuild then replaced).
Building runs under a file lock: two trials on a node never build the same cache at once; the second one
waits (saying so after a few seconds) and reads.

Stage a dataset on a node before a study (the cluster's setup commands do this):

    python -m cxrnets.cache --dataset covid-radiography --data-root ~/data/covid-radiography --image-size 224

It caches the dataset at 64 px too, the size a study's split fingerprints near-identical X-rays at
(cxrnets.fingerprints), so that the driver's node decodes nothing when the study starts.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import re
import shutil
import threading
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import PIL
from filelock import FileLock, Timeout

from cxrnets.data import (DATASET_NAMES, DatasetIndex, dataset_options_help, leaving_out, load_dataset,
                          parse_dataset_options)
from cxrnets.errors import CxrError, command_ends
from cxrnets.images import decode, out_of_memory
from cxrnets.names import MIN_IMAGE_SIZE
from cxrnets.progress import PROGRESS_SECONDS, speed_and_time_left

log = logging.getLogger(__name__)

CACHE_FORMAT = 4  # bump when decoding, resizing or the files of a cache change (4: 16-bit grey windowed)
LOCK_NOTICE_SECONDS = 5  # a build that waits this long for another process's build of the same cache says so
READ_RETRY_SECONDS = 2  # a file that fails to read is read again after this pause (a network file system's hiccup)


def default_cache_root() -> Path:
    """$CXR_TUNE_CACHE (a relative one or ~ made absolute, see absolute_cache_dir), else ~/.cache/cxr-tune."""
    return Path(absolute_cache_dir(os.environ.get("CXR_TUNE_CACHE")) or Path.home() / ".cache" / "cxr-tune")


def absolute_cache_dir(given: str | None) -> str | None:
    """A cache root as given (--cache-dir, CXR_TUNE_CACHE) as an absolute path, ~ expanded and a relative path
    taken from the working folder now: a Tune trial, which runs in a folder of its own, then reads the folder
    meant rather than decoding the dataset again there. None (not given) stays None."""
    return str(Path(given).expanduser().resolve()) if given else None


@dataclass
class CachedImages:
    """A cache's images, indexed as an (N, 3, S, S) uint8 array: `images[rows]` (an integer array, or one
    integer) is a new, writable array; a grey image's plane is repeated into three channels, a colour
    image comes from `colour`."""

    grey: np.ndarray    # (cache rows, S, S): each image's plane (left unused for a colour image)
    colour: np.ndarray  # (K, 3, S, S)
    slots: np.ndarray   # (cache rows,): the image's row in `colour`, -1 for a grey image
    rows: np.ndarray    # (N,): the cache row of each image here (a cache without its undecodable files)
    dtype = np.dtype(np.uint8)

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (len(self.rows), 3, *self.grey.shape[1:])

    def __getitem__(self, index) -> np.ndarray:
        rows = self.rows[index]
        if np.ndim(rows) == 0:
            return self[np.atleast_1d(index)][0]
        pixels = np.repeat(self.grey[rows][:, None], 3, axis=1)
        slots = self.slots[rows]
        coloured = np.flatnonzero(slots >= 0)
        if len(coloured):
            pixels[coloured] = self.colour[slots[coloured]]
        return pixels

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        pixels = self[np.arange(len(self))]
        return pixels if dtype is None else pixels.astype(dtype)


@dataclass
class ImageCache:
    """A decoded dataset. `images[i]` belongs to `index.frame.iloc[i]`; undecodable files are dropped."""

    directory: Path
    index: DatasetIndex
    images: CachedImages
    sha1: np.ndarray
    decoded: int  # images decoded by this call: 0 when the cache was already there
    listed: DatasetIndex  # the index it was built from, undecodable files included: the one its key is made of


def cache_key(index: DatasetIndex, image_size: int) -> str:
    return files_key(index.name, image_size, index.root, index.frame["relpath"])


def files_key(dataset: str, image_size: int, root: Path, relpaths: Iterable[str]) -> str:
    """The key of the cache of the files `relpaths` under `root` as they are now (OSError if one is gone)."""
    digest = hashlib.sha256(f"{CACHE_FORMAT}|{PIL.__version__}|{dataset}|{image_size}".encode())
    for relpath in relpaths:
        stat = (root / relpath).stat()
        digest.update(f"|{relpath}|{stat.st_size}|{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:16]


def build_cache(index: DatasetIndex, image_size: int, cache_root: str | Path | None = None,
                workers: int | None = None) -> ImageCache:
    """Return the decoded images of `index` at `image_size`, decoding only if no cache exists yet."""
    if cache_root:
        cache_root, chosen_by = Path(cache_root), "--cache-dir "
    else:
        cache_root = default_cache_root()
        chosen_by = "CXR_TUNE_CACHE=" if os.environ.get("CXR_TUNE_CACHE") else "the default cache folder "
    directory = cache_root / f"{index.name}-{image_size}px-{cache_key(index, image_size)}"
    try:
        cache_root.mkdir(parents=True, exist_ok=True)
        held = _acquire(FileLock(str(directory) + ".lock"))
    except OSError as error:
        raise CxrError(f"{chosen_by}{cache_root}: cannot keep the image cache there ({error.strerror or error}); "
                       "pick a folder you can write to, with --cache-dir or CXR_TUNE_CACHE") from error
    decoded = 0
    with held:
        if not (directory / "meta.json").is_file():
            decoded = _decode_into(directory, index, image_size, workers or os.cpu_count() or 1)
    return _open(directory, index, decoded)


def _acquire(lock: FileLock):
    """`lock` acquired (to be released by leaving a `with` block of what this returns); where another process holds
    it past LOCK_NOTICE_SECONDS, said once, so that a trial waiting for another's build does not look frozen."""
    try:
        return lock.acquire(timeout=LOCK_NOTICE_SECONDS)
    except Timeout:
        log.info("%s is held: another process is decoding this cache; waiting for it to finish, then reading what it "
                 "decoded", lock.lock_file)
        return lock.acquire()


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


def _no_space(directory: Path, dataset: str, needed: str, free: int) -> CxrError:
    return CxrError(f"{directory.parent}: the cache of {dataset} needs {needed} and the disk has "
                    f"{free / 1e6:,.1f} MB free; free some space, choose a smaller --image-size, or put the cache "
                    "on a larger disk (--cache-dir or CXR_TUNE_CACHE)")


def check_free_space(directory: Path, dataset: str, count: int, image_size: int) -> None:
    """Refuse a cache the disk cannot hold even if every image is grey (one byte per pixel; a colour image
    takes three, written as it is decoded, and a full disk then stops the build with an error)."""
    needed = count * image_size * image_size
    free = shutil.disk_usage(directory.parent).free
    if needed > free:
        raise _no_space(directory, dataset, f"at least {needed / 1e6:,.1f} MB ({count} images at {image_size} px)",
                        free)


def _allocate(path: Path, directory: Path, dataset: str) -> None:
    """Give the memory-mapped file its disk blocks now: a write into a memory map on a full disk kills the
    process (SIGBUS) instead of raising."""
    if not hasattr(os, "posix_fallocate"):  # macOS: check_free_space alone
        return
    size = path.stat().st_size
    with path.open("r+b") as file:
        try:
            os.posix_fallocate(file.fileno(), 0, size)
        except OSError as error:
            raise _no_space(directory, dataset, f"{size / 1e6:,.1f} MB ({error.strerror})",
                            shutil.disk_usage(path.parent).free) from error


def _decode_files(partial: Path, index: DatasetIndex, image_size: int, workers: int, directory: Path) -> None:
    paths = index.paths()
    grey = np.lib.format.open_memmap(partial / "grey.npy", mode="w+", dtype=np.uint8,
                                     shape=(len(paths), image_size, image_size))
    _allocate(partial / "grey.npy", directory, index.name)
    sha1 = [""] * len(paths)
    errors: list[str | None] = [None] * len(paths)
    slots = np.full(len(paths), -1, dtype=np.int64)
    colour_file = (partial / "colour.u8").open("wb")
    colour_lock = threading.Lock()

    def decode_one(i: int) -> None:
        data = _read(paths[i])
        sha1[i] = hashlib.sha1(data).hexdigest()
        try:
            pixels = decode(data, image_size, paths[i])
        except CxrError as error:
            errors[i] = str(error)
            return
        except (MemoryError, OSError) as error:
            if not out_of_memory(error):
                raise
            raise CxrError(f"{paths[i]}: ran out of memory decoding it ({str(error) or type(error).__name__}); the "
                           "cache build stopped without keeping the images decoded so far, nor marking the image "
                           "undecodable: free memory (stop other processes) and run again") from error
        if (pixels[0] == pixels[1]).all() and (pixels[0] == pixels[2]).all():
            grey[i] = pixels[0]
            return
        with colour_lock:
            slots[i] = colour_file.tell() // pixels.nbytes
            try:
                colour_file.write(pixels.tobytes())
            except OSError as error:  # the disk filled up
                raise _no_space(directory, index.name, f"more room for its colour images ({error.strerror or error})",
                                shutil.disk_usage(partial).free) from error

    started = last_report = time.perf_counter()
    log.info("decoding %d images of %s at %d px into %s (%s MB if every image is grey; a colour image "
             "takes four times its share: its grey slot and three colour planes)", len(paths), index.name, image_size, directory, f"{grey.nbytes / 1e6:,.1f}")
    pool = ThreadPoolExecutor(max_workers=workers)
    try:
        for done, _ in enumerate(pool.map(decode_one, range(len(paths))), start=1):
            now = time.perf_counter()
            if done % 500 == 0 or done == len(paths) or now - last_report > PROGRESS_SECONDS:
                log.info("decoded %d/%d images (%s)", done, len(paths),
                         speed_and_time_left(done, len(paths), now - started))
                last_report = now
    finally:
        pool.shutdown(cancel_futures=True)  # on Ctrl-C, not after decoding every image queued
        colour_file.close()
    grey.flush()
    for i, error in enumerate(errors):
        if error:
            log.warning("skipped undecodable image: %s", error)
    frame = pd.DataFrame({"relpath": index.frame["relpath"], "sha1": sha1, "ok": [e is None for e in errors],
                          "error": [e or "" for e in errors], "colour_slot": slots})
    frame.to_parquet(partial / "index.parquet", index=False)
    colour = int((slots >= 0).sum())
    if colour:
        log.info("%d of %d images are in colour (three planes each in the cache)", colour, len(paths))
    meta = {"format": CACHE_FORMAT, "pillow": PIL.__version__, "dataset": index.name, "root": str(index.root),
            "image_size": image_size, "images": len(paths), "colour_images": colour,
            "undecodable": int((~frame["ok"]).sum()), "bytes": grey.nbytes + colour * 3 * image_size * image_size,
            "seconds": round(time.perf_counter() - started, 2)}
    (partial / "meta.json").write_text(json.dumps(meta, indent=2))


def _read(path: Path) -> bytes:
    """The bytes of `path`, read a second time if the first read fails; CxrError if that fails too. A read error
    says nothing about the image, so it never makes the image undecodable, which the cache would keep for good."""
    try:
        return path.read_bytes()
    except OSError as error:
        log.warning("%s: cannot read the file (%s); trying again", path, error.strerror or error)
    time.sleep(READ_RETRY_SECONDS)
    try:
        return path.read_bytes()
    except OSError as error:
        raise CxrError(f"{path}: cannot read the file ({error.strerror or error}), twice; the cache build stopped "
                       "without keeping the images decoded so far: check the file system (a network share, "
                       "permissions) and run again") from error


def _open(directory: Path, index: DatasetIndex, decoded: int) -> ImageCache:
    listed = index
    try:
        table = pd.read_parquet(directory / "index.parquet")
        slots = table["colour_slot"].to_numpy()
        grey = np.load(directory / "grey.npy", mmap_mode="r")
        shape = (int((slots >= 0).sum()), 3, *grey.shape[1:])
        colour = (np.memmap(directory / "colour.u8", dtype=np.uint8, mode="r", shape=shape) if shape[0]
                  else np.zeros(shape, dtype=np.uint8))
    except (OSError, ValueError) as error:  # a file deleted or cut short by hand, a disk error
        raise CxrError(f"{directory}: the cache is damaged ({error}); delete the folder to rebuild it") from error
    if list(table["relpath"]) != list(index.frame["relpath"]):
        raise CxrError(f"{directory}: cache index does not match the dataset; delete the folder to rebuild it")
    ok = table["ok"].to_numpy()
    skipped = int((~ok).sum())
    if skipped:
        every_image = index.frame
        index = index.subset(ok)
        index.skipped["undecodable image"] = skipped
        more = f"; and {skipped - 5} more, listed in {directory / 'index.parquet'}" if skipped > 5 else ""
        log.warning("%s: %d undecodable image(s) left out: %s%s", index.name, skipped,
                    "; ".join(table.loc[~ok, "error"].head(5)), more)
        left = {labels[0] for labels in index.frame["labels"]}
        emptied = [name for name in index.classes if name not in left]
        if emptied and not index.multilabel:
            relpath = next(relpath for relpath, labels in zip(every_image["relpath"], every_image["labels"])
                           if labels == (emptied[0],))
            class_folder = index.root / Path(relpath).parts[0]
            raise CxrError(f"{index.root}: no image of class {emptied[0]!r} can be decoded (the errors are listed "
                           f"in {directory / 'index.parquet'}); replace its files, or "
                           f"{leaving_out(index.name, class_folder, 'remove the class')}")
    images = CachedImages(grey, colour, slots, np.flatnonzero(ok))
    return ImageCache(directory, index, images, table.loc[ok, "sha1"].to_numpy(), decoded, listed)


CACHE_FOLDER = re.compile(r".+-\d+px-[0-9a-f]{16}(\.partial)?")  # <dataset>-<size>px-<key>, build_cache's


def _cache_folders(cache_root: str | Path | None) -> list[Path]:
    """The folders under `cache_root` named as build_cache names them. Other folders there (the analysis's
    downloads/) are not caches."""
    cache_root = Path(cache_root) if cache_root else default_cache_root()
    folders = sorted(cache_root.iterdir()) if cache_root.is_dir() else []
    return [folder for folder in folders if folder.is_dir() and CACHE_FOLDER.fullmatch(folder.name)]


def _meta(folder: Path) -> dict | None:
    """A complete cache's meta.json; None if it has none, or it does not read."""
    try:
        return json.loads((folder / "meta.json").read_text())
    except (OSError, ValueError):
        return None


def stale_caches(cache_root: str | Path | None = None) -> list[Path]:
    """The cache folders under `cache_root` that this version never reads: those of another format or Pillow
    (or without the meta.json a complete cache has), and the `.partial` folders that a killed build left
    (no build holds their lock)."""
    stale = []
    for folder in _cache_folders(cache_root):
        meta = _meta(folder) if not folder.name.endswith(".partial") else None
        if meta is None or meta.get("format") != CACHE_FORMAT or meta.get("pillow") != PIL.__version__:
            stale.append(folder)
    return stale


def superseded_caches(cache_root: str | Path | None = None) -> dict[Path, Path]:
    """The caches under `cache_root` that a rebuild replaced after their files changed (a new copy, `touch`),
    each with the cache that replaced it: the cache of the same dataset root, image size and images (the
    loader's options choose those) whose key the files give now. A cache without such a one beside it is
    kept, and so is one whose root was a relative path (which files it names depends on the folder it was
    built from) or whose files are not all there (a dataset that changed otherwise, a share not mounted)."""
    keys: dict[tuple, dict[str, Path]] = {}  # (dataset, root, size, relpaths): {key: folder}
    for folder in _cache_folders(cache_root):
        meta = _meta(folder) if not folder.name.endswith(".partial") else None
        if (meta is None or meta.get("format") != CACHE_FORMAT or meta.get("pillow") != PIL.__version__
                or not Path(meta.get("root", "")).is_absolute()):
            continue
        try:
            relpaths = tuple(pd.read_parquet(folder / "index.parquet", columns=["relpath"])["relpath"])
        except (OSError, ValueError, KeyError):  # a damaged cache: building it says so
            continue
        listing = (meta["dataset"], meta["root"], meta["image_size"], relpaths)
        keys.setdefault(listing, {})[folder.name.rsplit("-", 1)[1]] = folder
    superseded = {}
    for (dataset, root, image_size, relpaths), folders in keys.items():
        if len(folders) < 2:
            continue
        try:
            current = files_key(dataset, image_size, Path(root), relpaths)
        except OSError:
            continue
        if current in folders:
            superseded.update({folder: folders[current] for key, folder in folders.items() if key != current})
    return superseded


def prune(cache_root: str | Path | None = None) -> tuple[dict[Path, str], int]:
    """Delete `stale_caches` and `superseded_caches`, each only while no build holds its lock; returns the
    folders deleted, each with why, and their bytes."""
    why = {folder: "a killed build's" if folder.name.endswith(".partial") else "another cache format's or Pillow's"
           for folder in stale_caches(cache_root)}
    why.update({folder: f"superseded by {newer.name}: its files changed since"
                for folder, newer in superseded_caches(cache_root).items()})
    deleted, freed = {}, 0
    for folder, reason in why.items():
        lock = FileLock(str(folder).removesuffix(".partial") + ".lock")
        try:
            lock.acquire(timeout=0)
        except Timeout:  # a build is writing it now
            continue
        try:
            freed += sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())
            shutil.rmtree(folder)
            deleted[folder] = reason
        finally:
            lock.release()
    return deleted, freed


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m cxrnets.cache",
                                     description="Decode a dataset once into the node's image cache.")
    parser.add_argument("--dataset", choices=DATASET_NAMES, help="dataset name (required unless --prune)")
    parser.add_argument("--data-root", help="where the dataset lies (the CSV file for 'csv'; required unless "
                                            "--prune)")
    parser.add_argument("--dataset-option", action="append", default=None, metavar="KEY=VALUE",
                        help="a loader option, repeatable; the images cached are those the options keep "
                             f"({dataset_options_help()})")
    parser.add_argument("--image-size", type=int, nargs="+", default=[224],
                        help="one or more square sizes in pixels to cache (default: 224); 64 px, the size a "
                             "study's split fingerprints near-identical X-rays at, is cached too")
    parser.add_argument("--cache-dir", default=None,
                        help="cache root (default: $CXR_TUNE_CACHE or ~/.cache/cxr-tune)")
    parser.add_argument("--prune", action="store_true",
                        help="delete the cache folders this version never reads (another cache format's or "
                             "Pillow's, a killed build's, and those a rebuild replaced after their files "
                             "changed) and stop")
    args = parser.parse_args(argv)
    args.cache_dir = absolute_cache_dir(args.cache_dir)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.prune:
        deleted, freed = prune(args.cache_dir)
        for folder, why in deleted.items():
            print(f"deleted {folder} ({why})")
        print(f"{len(deleted)} cache folder(s) deleted, {freed / 1e6:,.1f} MB freed")
        return
    if args.dataset is None or args.data_root is None:
        parser.error("--dataset and --data-root are required (or --prune)")
    smallest = min(MIN_IMAGE_SIZE.values())
    for size in args.image_size:
        if size < smallest:
            least = ", ".join(f"{model} {pixels}" for model, pixels in MIN_IMAGE_SIZE.items())
            parser.error(f"--image-size {size}: no model takes images under {smallest} px (the least each "
                         f"takes: {least})")
    with command_ends("the cache being decoded was removed (those printed above are complete); run the same "
                      "command again"):
        options = parse_dataset_options(args.dataset_option, [args.dataset]).get(args.dataset, {})
        index = load_dataset(args.dataset, args.data_root, **options)
        from cxrnets.fingerprints import FINGERPRINT_SIZE

        sizes = {size: "" for size in args.image_size}
        sizes.setdefault(FINGERPRINT_SIZE, " (splits fingerprint near-identical X-rays at this size)")
        for size, why in sizes.items():
            cache = build_cache(index, size, args.cache_dir)
            state = f"decoded {cache.decoded} images" if cache.decoded else "already cached"
            print(f"{args.dataset} at {size}px{why}: {state}, {len(cache.index.frame)} usable -> {cache.directory}")


if __name__ == "__main__":
    main()
