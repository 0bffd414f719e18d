"""Tests for cxrnets.cache: decode once, rebuild when files change, skip broken files, lock."""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import PIL
import pytest
from filelock import FileLock
from PIL import Image

from cxrnets import cache as cache_module, images
from cxrnets.cache import absolute_cache_dir, build_cache, cache_key, default_cache_root
from cxrnets.data import load_dataset
from cxrnets.errors import CxrError
from cxrnets.images import load_image

SIZE = 24


@pytest.fixture
def radiography(make_radiography):
    return load_dataset("covid-radiography", make_radiography(per_class=3))


def test_second_build_decodes_nothing(radiography, tmp_path: Path) -> None:
    first = build_cache(radiography, SIZE, cache_root=tmp_path / "cache", workers=2)
    assert first.decoded == 12
    assert first.images.shape == (12, 3, SIZE, SIZE) and first.images.dtype == np.uint8
    assert len(first.sha1) == 12 and all(len(digest) == 40 for digest in first.sha1)
    second = build_cache(radiography, SIZE, cache_root=tmp_path / "cache")
    assert second.decoded == 0
    assert second.directory == first.directory
    np.testing.assert_array_equal(np.asarray(second.images), np.asarray(first.images))
    assert isinstance(second.images.grey, np.memmap)  # read from disk, not held in memory
    # the cached pixels are the decoded images, in the index's order, brighter class brighter
    means = np.asarray(second.images).reshape(12, -1).mean(axis=1)
    classes = [labels[0] for labels in second.index.frame["labels"]]
    by_class = {name: means[[c == name for c in classes]].mean() for name in set(classes)}
    assert by_class["COVID"] > by_class["Lung_Opacity"] > by_class["Viral Pneumonia"] > by_class["Normal"]
    meta = json.loads((first.directory / "meta.json").read_text())
    assert meta["images"] == 12 and meta["undecodable"] == 0 and meta["image_size"] == SIZE
    # grey X-rays in every PIL mode: one byte per pixel on disk
    assert meta["colour_images"] == 0 and meta["bytes"] == 12 * SIZE * SIZE
    assert (first.directory / "colour.u8").stat().st_size == 0
    assert first.directory.name.startswith(f"covid-radiography-{SIZE}px-")


def test_another_size_is_another_cache(radiography, tmp_path: Path) -> None:
    small = build_cache(radiography, 16, cache_root=tmp_path)
    large = build_cache(radiography, 20, cache_root=tmp_path)
    assert small.directory != large.directory and large.decoded == 12
    assert large.images.shape[-1] == 20


def test_touching_a_file_changes_the_key(radiography, tmp_path: Path) -> None:
    first = build_cache(radiography, SIZE, cache_root=tmp_path)
    path = radiography.paths()[4]
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))
    assert cache_key(radiography, SIZE) != first.directory.name.rsplit("-", 1)[1]
    again = build_cache(radiography, SIZE, cache_root=tmp_path)
    assert again.decoded == 12 and again.directory != first.directory
    np.testing.assert_array_equal(np.asarray(again.images), np.asarray(first.images))  # same content


def test_another_pillow_is_another_cache(radiography, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """After a Pillow upgrade the cache served the old Pillow's pixels, while cxrnets.predict decoded afresh with
    the new one: the cache is the decoded images bit for bit only if one Pillow made both."""
    first = build_cache(radiography, SIZE, cache_root=tmp_path)
    monkeypatch.setattr(PIL, "__version__", "99.0.0")
    again = build_cache(radiography, SIZE, cache_root=tmp_path)
    assert again.decoded == 12 and again.directory != first.directory
    assert cache_module.stale_caches(tmp_path) == [first.directory]  # never read by this Pillow: --prune deletes it


def test_changing_a_file_rebuilds_with_new_pixels(radiography, tmp_path: Path, write_image) -> None:
    first = build_cache(radiography, SIZE, cache_root=tmp_path)
    path = radiography.paths()[0]
    write_image(path, "L", brightness=10, seed=12345)
    again = build_cache(radiography, SIZE, cache_root=tmp_path)
    assert again.decoded == 12
    assert again.sha1[0] != first.sha1[0] and list(again.sha1[1:]) == list(first.sha1[1:])
    assert np.asarray(again.images[0]).mean() < 30 < np.asarray(first.images[0]).mean()
    np.testing.assert_array_equal(np.asarray(again.images[1:]), np.asarray(first.images[1:]))


def test_corrupt_image_is_skipped_and_logged(make_folder, damaged_tiff: bytes, tmp_path: Path,
                                            caplog: pytest.LogCaptureFixture) -> None:
    root = make_folder(per_class=4)
    (root / "sick" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    (root / "sick" / "damaged.tif").write_bytes(damaged_tiff)  # Pillow raises TypeError on this one
    whole = (root / "healthy" / "img-001.png").read_bytes()
    (root / "healthy" / "cut.png").write_bytes(whole[: len(whole) // 2])
    index = load_dataset("folder", root)
    assert len(index.frame) == 11
    with caplog.at_level(logging.WARNING, logger="cxrnets.cache"):
        built = build_cache(index, SIZE, cache_root=tmp_path)
    assert built.decoded == 11
    assert "broken.png" in caplog.text and "cut.png" in caplog.text and "damaged.tif" in caplog.text
    assert built.index.skipped == {"undecodable image": 3}
    assert len(built.index.frame) == 8 == len(built.images) == len(built.sha1)
    assert not built.index.frame["relpath"].str.contains("broken|cut|damaged").any()
    assert built.index.targets().tolist().count(0) == 4  # the others are still usable
    table = pd.read_parquet(built.directory / "index.parquet")
    assert table["ok"].sum() == 8 and table.loc[~table["ok"], "error"].str.contains("cannot decode").all()
    # reading the cache again still leaves them out, and says so
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="cxrnets.cache"):
        again = build_cache(index, SIZE, cache_root=tmp_path)
    assert again.decoded == 0 and len(again.images) == 8
    assert "undecodable" in caplog.text and "broken.png" in caplog.text
    np.testing.assert_array_equal(np.asarray(again.images), np.asarray(built.images))


def test_an_image_too_small_to_be_an_x_ray_is_warned_of_once_when_decoded(make_folder, tmp_path: Path,
                                                                         caplog: pytest.LogCaptureFixture) -> None:
    root = make_folder(per_class=3)
    Image.new("L", (3, 800), 90).save(root / "sick" / "sliver.png")
    with caplog.at_level(logging.WARNING):
        built = build_cache(load_dataset("folder", root), SIZE, cache_root=tmp_path / "cache", workers=2)
    assert len(built.images) == 7  # kept
    assert caplog.text.count("sliver.png: the image is 3x800 pixels, under 32 on its shorter side") == 1
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        build_cache(load_dataset("folder", root), SIZE, cache_root=tmp_path / "cache")
    assert "sliver.png" not in caplog.text  # the cache decodes each image once


def test_colour_images_keep_their_colour_and_grey_ones_one_plane(make_folder, tmp_path: Path) -> None:
    """Dataset 3 holds annotated figures in colour beside grey X-rays in every mode: the cache gives back
    exactly what decoding each file gives (three planes for colour, the grey plane three times), also
    around an undecodable file, and takes one byte per pixel for a grey image, three for a colour one."""
    root = make_folder(per_class=4)
    rng = np.random.default_rng(0)
    for i, suffix in enumerate((".png", ".jpg", ".png")):
        pixels = np.repeat(rng.integers(0, 255, (30, 36, 1), dtype=np.uint8), 3, axis=2)
        pixels[5:12, 5:12] = (220, 30, 30)  # a red arrow on an X-ray figure
        Image.fromarray(pixels).save(root / ("sick", "healthy", "sick")[i] / f"figure-{i}{suffix}")
    (root / "sick" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    index = load_dataset("folder", root)
    built = build_cache(index, SIZE, cache_root=tmp_path)
    decoded = np.stack([load_image(path, SIZE) for path in built.index.paths()])
    assert len(decoded) == len(built.images) == 11
    np.testing.assert_array_equal(np.asarray(built.images), decoded)
    rows = np.array([10, 3, 3, 0, 7])
    np.testing.assert_array_equal(built.images[rows], decoded[rows])
    np.testing.assert_array_equal(built.images[9], decoded[9])
    pixels = built.images[rows]
    pixels[:] = 0  # a new array each time: the cache is untouched
    np.testing.assert_array_equal(built.images[rows], decoded[rows])
    meta = json.loads((built.directory / "meta.json").read_text())
    assert meta["colour_images"] == 3
    assert (built.directory / "colour.u8").stat().st_size == 3 * 3 * SIZE * SIZE
    assert meta["bytes"] == 12 * SIZE * SIZE + 3 * 3 * SIZE * SIZE  # the broken file's plane is never used


@pytest.mark.parametrize("damage", ["colour.u8 cut short", "grey.npy deleted", "index.parquet cut short",
                                    "index.parquet deleted"])
def test_a_damaged_cache_is_named(damage: str, make_folder, tmp_path: Path) -> None:
    root = make_folder(per_class=3)
    pixels = np.zeros((30, 30, 3), dtype=np.uint8)
    pixels[..., 2] = 180
    Image.fromarray(pixels).save(root / "sick" / "figure.png")
    index = load_dataset("folder", root)
    built = build_cache(index, SIZE, cache_root=tmp_path)
    damaged = built.directory / damage.split()[0]
    if damage.endswith("cut short"):
        with damaged.open("r+b") as file:
            file.truncate(100)
    else:
        damaged.unlink()
    with pytest.raises(CxrError, match=rf"{built.directory}: the cache is damaged .*delete the folder to rebuild it"):
        build_cache(index, SIZE, cache_root=tmp_path)


def test_many_undecodable_images_are_summed_up(make_folder, tmp_path: Path,
                                              caplog: pytest.LogCaptureFixture) -> None:
    """Reading a cache names the first 5 undecodable images and says where the rest are listed."""
    root = make_folder(per_class=4)
    for i in range(7):
        (root / "sick" / f"broken-{i}.png").write_bytes(b"")
    build_cache(load_dataset("folder", root), SIZE, cache_root=tmp_path)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="cxrnets.cache"):
        cache = build_cache(load_dataset("folder", root), SIZE, cache_root=tmp_path)
    assert cache.index.skipped == {"undecodable image": 7}
    assert caplog.text.count("empty file (0 bytes)") == 5
    assert f"and 2 more, listed in {cache.directory / 'index.parquet'}" in caplog.text


def test_a_class_without_a_decodable_image_is_refused_naming_it(make_folder, tmp_path: Path) -> None:
    root = make_folder(per_class=3)
    for i in range(2):
        (root / "unsure" / f"scan-{i}.png").parent.mkdir(exist_ok=True)
        (root / "unsure" / f"scan-{i}.png").write_bytes(b"not a picture")
    index = load_dataset("folder", root)
    assert index.classes == ["healthy", "sick", "unsure"]
    with pytest.raises(CxrError, match=rf"{root}: no image of class 'unsure' can be decoded \(the errors are listed "
                                       r"in .*index.parquet\); replace its files, or remove the class"):
        build_cache(index, SIZE, cache_root=tmp_path)


def test_a_class_of_a_fixed_layout_without_a_decodable_image_gets_a_remedy_that_works_there(
        make_pneumonia_normal, tmp_path: Path) -> None:
    """"remove the class": its folder removed, covid-pneumonia-normal refused the dataset as missing it."""
    root = make_pneumonia_normal(per_class=3)
    for path in (root / "normal").glob("normal-*"):
        path.write_bytes(b"not a picture")
    with pytest.raises(CxrError, match=rf"{root}: no image of class 'normal' can be decoded .*; replace its files, "
                                       rf"or move {root / 'normal'} out of {root} and pass --dataset folder"):
        build_cache(load_dataset("covid-pneumonia-normal", root), SIZE, cache_root=tmp_path / "cache")
    (root / "normal").rename(tmp_path / "set-aside")  # the remedy, followed
    assert build_cache(load_dataset("folder", root), SIZE, cache_root=tmp_path / "cache").index.classes == [
        "covid", "pneumonia"]


def test_concurrent_builds_decode_once(radiography, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    original = cache_module._decode_into

    def slow_decode_into(*args, **kwargs):
        calls.append(threading.get_ident())
        time.sleep(0.3)  # the other thread reaches the lock while this one decodes
        return original(*args, **kwargs)

    monkeypatch.setattr(cache_module, "_decode_into", slow_decode_into)
    barrier = threading.Barrier(2)
    results, errors = [], []

    def build() -> None:
        try:
            barrier.wait()
            results.append(build_cache(radiography, SIZE, cache_root=tmp_path, workers=1))
        except Exception as error:  # surfaced below
            errors.append(error)

    threads = [threading.Thread(target=build) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors
    assert len(calls) == 1
    assert sorted(result.decoded for result in results) == [0, 12]
    np.testing.assert_array_equal(np.asarray(results[0].images), np.asarray(results[1].images))
    assert not list(tmp_path.glob("*.partial"))


def test_a_build_waiting_for_another_processs_build_says_so_once(radiography, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    """A trial whose cache another process is decoding waits on the lock: it says so (naming the lock) rather than
    look frozen, then reads what the other decoded."""
    monkeypatch.setattr(cache_module, "LOCK_NOTICE_SECONDS", 0.1)
    lock_path = tmp_path / f"covid-radiography-{SIZE}px-{cache_key(radiography, SIZE)}.lock"
    held, release = threading.Event(), threading.Event()

    def another_build() -> None:
        with FileLock(str(lock_path)):
            held.set()
            release.wait(10)

    holder = threading.Thread(target=another_build)
    holder.start()
    held.wait(10)
    threading.Timer(0.5, release.set).start()
    with caplog.at_level(logging.INFO, logger="cxrnets.cache"):
        built = build_cache(radiography, SIZE, cache_root=tmp_path)
    holder.join(10)
    assert built.decoded == 12
    notice = f"{lock_path} is held: another process is decoding this cache; waiting for it to finish"
    assert caplog.text.count(notice) == 1
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="cxrnets.cache"):
        build_cache(radiography, SIZE, cache_root=tmp_path)
    assert "is held" not in caplog.text


def test_a_cache_the_disk_cannot_hold_is_refused_before_writing(radiography, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    needed = 12 * SIZE * SIZE  # every image is grey: one byte per pixel
    monkeypatch.setattr(cache_module.shutil, "disk_usage", lambda path: shutil_usage(free=needed - 1))
    with pytest.raises(CxrError, match=r"cache of covid-radiography needs at least 0\.0 MB \(12 images at 24 px\) "
                                       r"and the disk has 0\.0 MB free.*--image-size.*--cache-dir"):
        build_cache(radiography, SIZE, cache_root=tmp_path / "cache")
    assert [path.name for path in (tmp_path / "cache").iterdir() if not path.name.endswith(".lock")] == []
    monkeypatch.setattr(cache_module.shutil, "disk_usage", lambda path: shutil_usage(free=needed))
    assert build_cache(radiography, SIZE, cache_root=tmp_path / "cache").decoded == 12


def test_a_disk_that_cannot_give_the_blocks_stops_the_build_with_an_error(radiography, tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """The free space can go between the check and the build (another writer): the memory-mapped file
    gets its blocks before any image is decoded, so a full disk is an error, not a SIGBUS."""
    def full(fd, offset, length):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(cache_module.os, "posix_fallocate", full, raising=False)
    with pytest.raises(CxrError, match=r"needs 0\.0 MB \(No space left on device\).*--cache-dir"):
        build_cache(radiography, SIZE, cache_root=tmp_path / "cache")
    assert [path.name for path in (tmp_path / "cache").iterdir() if not path.name.endswith(".lock")] == []


def test_a_disk_that_fills_with_colour_images_stops_the_build_with_an_error(make_folder, tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    root = make_folder(per_class=3)
    pixels = np.zeros((30, 30, 3), dtype=np.uint8)
    pixels[..., 0] = 200  # red: a colour image, written to colour.u8 as it is decoded
    Image.fromarray(pixels).save(root / "sick" / "figure.png")
    opened = Path.open

    class FullDisk:
        def __init__(self, file):
            self.file = file

        def tell(self) -> int:
            return 0

        def write(self, data) -> int:
            raise OSError(28, "No space left on device")

        def close(self) -> None:
            self.file.close()

    def open_full(path, mode="r", *args, **kwargs):
        file = opened(path, mode, *args, **kwargs)
        return FullDisk(file) if path.name == "colour.u8" else file

    monkeypatch.setattr(Path, "open", open_full)
    with pytest.raises(CxrError, match=r"needs more room for its colour images \(No space left on device\).*"
                                       r"--cache-dir"):
        build_cache(load_dataset("folder", root), SIZE, cache_root=tmp_path / "cache")
    assert [path.name for path in (tmp_path / "cache").iterdir() if not path.name.endswith(".lock")] == []


def shutil_usage(free: int):
    import shutil

    return shutil._ntuple_diskusage(total=10 * free, used=9 * free, free=free)


def test_an_interrupted_build_stops_at_once_and_leaves_nothing(radiography, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C while decoding: the images still queued are not decoded, the half-written cache is removed,
    and the next build decodes from scratch."""
    calls = []
    original = cache_module.decode

    def interrupted_decode(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        if len(calls) > 3:
            time.sleep(0.2)
        return original(*args, **kwargs)

    monkeypatch.setattr(cache_module, "decode", interrupted_decode)
    with pytest.raises(KeyboardInterrupt):
        build_cache(radiography, SIZE, cache_root=tmp_path / "cache", workers=1)
    assert len(calls) <= 5  # of 12
    assert [path.name for path in (tmp_path / "cache").iterdir() if not path.name.endswith(".lock")] == []
    monkeypatch.setattr(cache_module, "decode", original)
    assert build_cache(radiography, SIZE, cache_root=tmp_path / "cache").decoded == 12


def test_default_cache_root_follows_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                     radiography) -> None:
    monkeypatch.setenv("CXR_TUNE_CACHE", str(tmp_path / "env-cache"))
    assert default_cache_root() == tmp_path / "env-cache"
    built = build_cache(radiography, 16)
    assert built.directory.parent == tmp_path / "env-cache"


def test_a_relative_or_home_cache_root_is_made_absolute_where_it_is_read(monkeypatch: pytest.MonkeyPatch,
                                                                         tmp_path: Path) -> None:
    """A Tune trial runs in a folder of its own: a cache root kept as typed (`cache`, `~/cache`) would name another
    folder there, and each trial would decode the dataset again."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("CXR_TUNE_CACHE", "env-cache")
    assert default_cache_root() == tmp_path / "env-cache"
    monkeypatch.setenv("CXR_TUNE_CACHE", "~/env-cache")
    assert default_cache_root() == tmp_path / "home" / "env-cache"
    assert absolute_cache_dir("cache") == str(tmp_path / "cache")
    assert absolute_cache_dir("~/cache") == str(tmp_path / "home" / "cache")
    assert absolute_cache_dir(None) is None


def test_a_cache_folder_that_cannot_be_made_names_where_it_came_from(radiography, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "a-file").write_text("")
    with pytest.raises(CxrError, match=rf"--cache-dir {tmp_path / 'a-file' / 'cache'}: cannot keep the image cache "
                                       r"there \(Not a directory\); pick a folder you can write to"):
        build_cache(radiography, SIZE, cache_root=tmp_path / "a-file" / "cache")
    monkeypatch.setenv("CXR_TUNE_CACHE", str(tmp_path / "a-file"))
    with pytest.raises(CxrError, match=rf"CXR_TUNE_CACHE={tmp_path / 'a-file'}: cannot keep the image cache there "
                                       r"\(File exists\); .*--cache-dir or CXR_TUNE_CACHE"):
        build_cache(radiography, SIZE)


def test_cache_cli_names_a_cache_dir_it_cannot_use(make_pneumonia_normal, tmp_path: Path) -> None:
    root = make_pneumonia_normal(per_class=2)
    (tmp_path / "a-file").write_text("")
    with pytest.raises(SystemExit, match=r"error: --cache-dir .*a-file/cache: cannot keep the image cache there"):
        cache_module.main(["--dataset", "covid-pneumonia-normal", "--data-root", str(root),
                           "--cache-dir", str(tmp_path / "a-file" / "cache")])


def test_cache_cli_names_the_cache_of_a_relative_cache_dir_by_its_absolute_path(make_pneumonia_normal,
                                                                                 tmp_path: Path, monkeypatch,
                                                                                 capsys) -> None:
    root = make_pneumonia_normal(per_class=2)
    monkeypatch.chdir(tmp_path)
    cache_module.main(["--dataset", "covid-pneumonia-normal", "--data-root", str(root), "--image-size", "32",
                       "--cache-dir", "cache"])
    assert f"-> {tmp_path / 'cache'}/covid-pneumonia-normal-32px-" in capsys.readouterr().out


def test_cache_cli(make_pneumonia_normal, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root = make_pneumonia_normal(per_class=3)
    arguments = ["--dataset", "covid-pneumonia-normal", "--data-root", str(root), "--image-size", "16", "20",
                 "--cache-dir", str(tmp_path / "cache")]
    cache_module.main(arguments)
    out = capsys.readouterr().out
    assert "at 16px: decoded 9 images, 9 usable" in out and "at 20px: decoded 9 images" in out
    assert "at 64px (splits fingerprint near-identical X-rays at this size): decoded 9 images" in out
    cache_module.main(arguments)
    out = capsys.readouterr().out
    assert "at 16px: already cached" in out
    # A node staged this way also holds what a study's split is fingerprinted from: no decoding at its start.
    assert "at 64px (splits fingerprint near-identical X-rays at this size): already cached" in out
    with pytest.raises(SystemExit, match=r"error: .*does not exist"):
        cache_module.main(["--dataset", "folder", "--data-root", str(tmp_path / "nowhere"),
                           "--cache-dir", str(tmp_path / "cache")])


@pytest.mark.parametrize("size", ["0", "-3"])
def test_cache_cli_refuses_an_image_size_no_model_takes(size: str, make_pneumonia_normal, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture) -> None:
    root = make_pneumonia_normal(per_class=2)
    with pytest.raises(SystemExit) as stopped:
        cache_module.main(["--dataset", "covid-pneumonia-normal", "--data-root", str(root), "--image-size", "16",
                           size, "--cache-dir", str(tmp_path / "cache")])
    assert stopped.value.code == 2
    assert f"--image-size {size}: no model takes images under 1 px" in capsys.readouterr().err
    assert not (tmp_path / "cache").exists()  # not even the valid size was cached


def test_prune_deletes_only_what_this_version_never_reads(radiography, tmp_path: Path, capsys) -> None:
    """After a cache format change the old folders would stay on every node; --prune deletes them and a
    killed build's leftovers, and keeps the current caches, a build in progress and what else lies there."""
    cache_root = tmp_path / "cache"
    current = build_cache(radiography, SIZE, cache_root=cache_root)
    old = cache_root / "covid-radiography-224px-0123456789abcdef"  # a format-1 cache: 3 planes per image
    old.mkdir()
    np.save(old / "images.npy", np.zeros((12, 3, 8, 8), dtype=np.uint8))
    (old / "meta.json").write_text(json.dumps({"format": 1, "images": 12}))
    killed = cache_root / "covid-radiography-64px-fedcba9876543210.partial"
    killed.mkdir()
    (killed / "grey.npy").write_bytes(bytes(1000))
    building = cache_root / "covid-radiography-32px-00000000000000ff.partial"
    building.mkdir()
    (cache_root / "downloads").mkdir()
    (cache_root / "downloads" / "weights.pt").write_bytes(bytes(10))
    with FileLock(str(building).removesuffix(".partial") + ".lock"):  # another process decoding it
        cache_module.main(["--prune", "--cache-dir", str(cache_root)])
    out = capsys.readouterr().out
    assert f"deleted {old}" in out and f"deleted {killed}" in out and "2 cache folder(s) deleted" in out
    folders = sorted(p.name for p in cache_root.iterdir() if p.is_dir())
    assert folders == sorted([current.directory.name, building.name, "downloads"])
    assert build_cache(radiography, SIZE, cache_root=cache_root).decoded == 0  # the current cache is intact
    cache_module.main(["--prune", "--cache-dir", str(cache_root)])
    assert "1 cache folder(s) deleted" in capsys.readouterr().out  # the build's leftover, once unlocked
    with pytest.raises(SystemExit):
        cache_module.main(["--cache-dir", str(cache_root)])  # neither a dataset nor --prune
    assert "--dataset and --data-root are required (or --prune)" in capsys.readouterr().err


def test_prune_deletes_the_caches_a_rebuild_after_a_change_of_files_replaced(radiography, make_radiography,
                                                                           tmp_path: Path, capsys) -> None:
    """`touch` of one file made a new cache folder at each size (1 GB at 224 px for dataset 1) and --prune said
    "0 cache folder(s) deleted" while the old ones stayed for good. It deletes those now, and keeps every cache
    another dataset root, image size or set of images (other loader options) may be read as."""
    cache_root = tmp_path / "cache"
    old = build_cache(radiography, SIZE, cache_root)
    old_other_size = build_cache(radiography, 16, cache_root)  # not rebuilt since: nothing replaced it
    fewer_images = build_cache(radiography.subset(np.arange(12) != 4), SIZE, cache_root)  # without the file touched
    another_root = build_cache(load_dataset("covid-radiography", make_radiography(tmp_path / "copy", per_class=3)),
                               SIZE, cache_root)
    path = radiography.paths()[4]
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))
    new = build_cache(radiography, SIZE, cache_root)
    assert new.directory != old.directory
    with FileLock(str(new.directory) + ".lock"):  # the new one in use keeps no old one
        cache_module.main(["--prune", "--cache-dir", str(cache_root)])
    out = capsys.readouterr().out
    assert f"deleted {old.directory} (superseded by {new.directory.name}: its files changed since)\n" in out
    assert "1 cache folder(s) deleted" in out
    assert sorted(p for p in cache_root.iterdir() if p.is_dir()) == sorted(
        cache.directory for cache in (new, old_other_size, fewer_images, another_root))
    assert build_cache(radiography, SIZE, cache_root).decoded == 0
    other_size_bytes = sum(path.stat().st_size for path in old_other_size.directory.rglob("*") if path.is_file())
    rebuilt = build_cache(radiography, 16, cache_root)
    superseded = f"superseded by {rebuilt.directory.name}: its files changed since"
    assert cache_module.prune(cache_root) == ({old_other_size.directory: superseded}, other_size_bytes)


def test_a_cache_from_before_16_bit_x_rays_were_windowed_is_stale(radiography, tmp_path: Path) -> None:
    """Format 3 caches hold 16-bit grey stretched from its minimum to its maximum (cxrnets.images windows it between
    percentiles now): none is read again, and --prune deletes them."""
    cache_root = tmp_path / "cache"
    current = build_cache(radiography, SIZE, cache_root=cache_root)
    stretched = cache_root / "covid-radiography-24px-0123456789abcdef"
    shutil.copytree(current.directory, stretched)
    meta = json.loads((stretched / "meta.json").read_text())
    (stretched / "meta.json").write_text(json.dumps({**meta, "format": 3}))
    assert cache_module.stale_caches(cache_root) == [stretched]


def test_cache_cli_takes_the_loaders_options(make_csv_dataset, tmp_path: Path, capsys) -> None:
    csv_path = make_csv_dataset(columns=("file", "diagnosis", "subject"))
    arguments = ["--dataset", "csv", "--data-root", str(csv_path), "--image-size", "16",
                 "--cache-dir", str(tmp_path / "cache")]
    with pytest.raises(SystemExit, match=r"missing column\(s\) \['path', 'label'\].*--dataset-option"):
        cache_module.main(arguments)
    cache_module.main([*arguments, "--dataset-option", "path_column=file", "--dataset-option", "label_column=diagnosis"])
    assert "at 16px: decoded 24 images, 24 usable" in capsys.readouterr().out


def test_cache_cli_ctrl_c_keeps_the_finished_sizes(make_pneumonia_normal, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
                                                   ) -> None:
    root = make_pneumonia_normal(per_class=3)
    original = cache_module.decode

    def interrupted_at_20px(data, size, name):
        if size == 20:
            raise KeyboardInterrupt
        return original(data, size, name)

    monkeypatch.setattr(cache_module, "decode", interrupted_at_20px)
    with pytest.raises(SystemExit) as exit_info:
        cache_module.main(["--dataset", "covid-pneumonia-normal", "--data-root", str(root), "--image-size", "16",
                           "20", "--cache-dir", str(tmp_path / "cache")])
    assert exit_info.value.code == 130
    captured = capsys.readouterr()
    assert "at 16px: decoded 9 images" in captured.out
    assert captured.err.startswith("interrupted: the cache being decoded was removed")
    folders = [path.name for path in (tmp_path / "cache").iterdir() if path.is_dir()]
    assert len(folders) == 1 and folders[0].startswith("covid-pneumonia-normal-16px-")


def test_a_file_that_cannot_be_read_stops_the_build_instead_of_being_left_out(radiography, tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """A read error (EIO, ESTALE on a network file system) says nothing about the image: the build stops naming
    the file, and nothing is cached that would leave the image out for good once the file reads again."""
    unreadable = radiography.paths()[5]
    read_bytes = Path.read_bytes

    def failing_read(path: Path) -> bytes:
        if path == unreadable:
            raise OSError(5, "Input/output error", str(path))
        return read_bytes(path)

    monkeypatch.setattr(Path, "read_bytes", failing_read)
    monkeypatch.setattr(cache_module, "READ_RETRY_SECONDS", 0)
    with pytest.raises(CxrError, match=rf"{unreadable}: cannot read the file \(Input/output error\).*check the file "
                                       r"system.*run again"):
        build_cache(radiography, SIZE, cache_root=tmp_path / "cache", workers=2)
    assert [path.name for path in (tmp_path / "cache").iterdir() if not path.name.endswith(".lock")] == []
    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    again = build_cache(radiography, SIZE, cache_root=tmp_path / "cache")
    assert again.decoded == 12 and len(again.images) == 12 and again.index.skipped == {}


@pytest.mark.parametrize("error", [MemoryError(), OSError(errno.ENOMEM, "Cannot allocate memory")],
                         ids=["MemoryError", "ENOMEM"])
def test_running_out_of_memory_stops_the_build_instead_of_leaving_the_image_out(
        radiography, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: BaseException) -> None:
    """Out of memory while an image decodes says nothing about it: the build stops naming the file, and nothing is
    cached that would leave the image out for good (its key, the file's path, size and time, unchanged)."""
    starved = radiography.paths()[5]
    opened = images.Image.open

    def open_without_memory_for(file, *args, **kwargs):
        if file.getvalue() == starved.read_bytes():
            raise error
        return opened(file, *args, **kwargs)

    monkeypatch.setattr(images.Image, "open", open_without_memory_for)
    with pytest.raises(CxrError, match=rf"{starved}: ran out of memory decoding it \((MemoryError|\[Errno 12\] "
                                       r"Cannot allocate memory)\); the cache build stopped without keeping the "
                                       r"images decoded so far, nor marking the image undecodable"):
        build_cache(radiography, SIZE, cache_root=tmp_path / "cache", workers=2)
    assert [path.name for path in (tmp_path / "cache").iterdir() if not path.name.endswith(".lock")] == []
    monkeypatch.setattr(images.Image, "open", opened)
    again = build_cache(radiography, SIZE, cache_root=tmp_path / "cache")
    assert again.decoded == 12 and len(again.images) == 12 and again.index.skipped == {}


def test_a_read_that_fails_once_is_tried_again(radiography, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               caplog: pytest.LogCaptureFixture) -> None:
    flaky = radiography.paths()[5]
    read_bytes = Path.read_bytes
    failures = []

    def fails_once(path: Path) -> bytes:
        if path == flaky and not failures:
            failures.append(path)
            raise OSError(116, "Stale file handle", str(path))
        return read_bytes(path)

    monkeypatch.setattr(Path, "read_bytes", fails_once)
    monkeypatch.setattr(cache_module, "READ_RETRY_SECONDS", 0)
    with caplog.at_level(logging.WARNING, logger="cxrnets.cache"):
        built = build_cache(radiography, SIZE, cache_root=tmp_path / "cache", workers=2)
    assert built.decoded == 12 and len(built.images) == 12 and built.index.skipped == {}
    assert f"{flaky}: cannot read the file (Stale file handle); trying again" in caplog.text


def test_decoding_shows_its_progress_with_the_time_left(radiography, tmp_path: Path, caplog,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Dataset 1's 21,165 images decode for minutes: each progress line says how many, how fast and about how
    long is left; the last, that all are done."""
    monkeypatch.setattr(cache_module, "PROGRESS_SECONDS", -1.0)  # a line at each image
    with caplog.at_level(logging.INFO, logger="cxrnets.cache"):
        build_cache(radiography, SIZE, cache_root=tmp_path, workers=1)
    lines = [record.getMessage() for record in caplog.records if record.getMessage().startswith("decoded ")]
    assert len(lines) == 12
    assert all(re.fullmatch(r"decoded \d+/12 images \(\d+\.\d images/s, ~\d+ s left\)", line) for line in lines[:-1])
    assert re.fullmatch(r"decoded 12/12 images \(\d+\.\d images/s\)", lines[-1])
