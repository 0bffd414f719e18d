"""Download one of the study's datasets, check its layout and say which --data-root to pass.

    python -m cxrnets.download --dataset covid-chestxray --out ~/data        # GitHub's archive, no account
    python -m cxrnets.download --dataset covid-radiography --out ~/data      # Kaggle: an API token
    python -m cxrnets.download --dataset covid-pneumonia-normal --archive ~/Downloads/archive.zip --out ~/data

The dataset lands in <out>/<dataset folder>/ (the folder holding its layout: an archive's wrapping
folder is left out), is indexed once to check it, and the command prints the --data-root for
cxrnets.train, cxrnets.cache and study.run. Nothing half-written is ever left at that path: a
download goes to a temporary file, an extraction to <folder>.partial/, renamed into place when
complete; a dataset already there is not downloaded again, and an --archive for it is refused (remove
the folder to replace it with the archive's). Kaggle's datasets come through kagglehub, which needs an
API token (kaggle.com > Settings > API); a machine without one, or offline, takes an archive
downloaded by hand (--archive).
"""

from __future__ import annotations

import argparse
import http.client
import logging
import shutil
import socket
import urllib.error
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

from cxrnets.data import LAYOUT_DEPTH, DatasetIndex, load_dataset, locate_dataset
from cxrnets.errors import CxrError, command_ends
from cxrnets.training import check_output_folder

log = logging.getLogger(__name__)


class DamagedArchiveError(CxrError):
    """A file that is not a zip archive, or a zip that does not unpack."""


@dataclass(frozen=True)
class Source:
    folder: str               # the dataset's folder under --out
    page: str                 # where a person downloads it by hand
    layout: str               # what locate_dataset looks for, in words
    kaggle: str | None = None  # kagglehub's handle (owner/dataset)
    url: str | None = None     # a zip archive anyone may download


KAGGLE_TOKEN_HELP = ("Kaggle needs an API token: kaggle.com > Settings > API > Create New Token, saved as "
                     "~/.kaggle/kaggle.json (or KAGGLE_USERNAME and KAGGLE_KEY in the environment)")

SOURCES = {
    "covid-radiography": Source(
        "covid-radiography", "https://www.kaggle.com/datasets/tawsifurrahman/covid19-radiography-database",
        "COVID/, Lung_Opacity/, Normal/, Viral Pneumonia/", kaggle="tawsifurrahman/covid19-radiography-database"),
    "covid-pneumonia-normal": Source(
        "covid-pneumonia-normal",
        "https://www.kaggle.com/datasets/amanullahasraf/covid19-pneumonia-normal-chest-xray-pa-dataset",
        "covid/, normal/, pneumonia/", kaggle="amanullahasraf/covid19-pneumonia-normal-chest-xray-pa-dataset"),
    "covid-chestxray": Source(
        "covid-chestxray-dataset", "https://github.com/ieee8023/covid-chestxray-dataset", "metadata.csv",
        url="https://github.com/ieee8023/covid-chestxray-dataset/archive/refs/heads/master.zip"),
}
SOURCES["covid-chestxray-3class"] = SOURCES["covid-chestxray"]
SOURCES["covid-radiography-3class"] = SOURCES["covid-radiography"]


def fetch(dataset: str, out: str | Path, archive: str | Path | None = None, url: str | None = None
          ) -> tuple[Path, DatasetIndex]:
    """Put `dataset` into `out` (from `archive`, a zip file, else from `url` or the dataset's own source)
    unless it is there already; returns the data root and the dataset's index."""
    if dataset not in SOURCES:
        raise CxrError(f"--dataset {dataset!r} has no download source: choose one of {', '.join(SOURCES)}")
    source = SOURCES[dataset]
    archive = Path(archive).expanduser() if archive is not None else None
    if archive is not None and archive.is_dir():
        found = locate_dataset(dataset, archive)
        raise CxrError(f"--archive {archive}: a folder, not a zip; " + (
            f"the dataset in it needs no download: pass --data-root {found} to the other commands" if found else
            f"and it holds no {dataset} dataset ({source.layout})"))
    out = Path(out).expanduser()
    target = out / source.folder
    if target.exists():
        found = locate_dataset(dataset, target)
        if found is None:
            raise CxrError(f"{target} exists and holds no {dataset} dataset ({source.layout}): remove it, or "
                           "choose another --out")
        if archive is not None:  # asked for: the files of that archive (a new release, say), not those here
            raise CxrError(f"--archive {archive}: not extracted, since {found} already holds {dataset}; to replace "
                           f"it with the archive's, remove or rename {found} and run this again, or pass another "
                           "--out")
        log.info("%s is already at %s: nothing downloaded", dataset, found)
        return found, load_dataset(dataset, found)
    check_output_folder(out, "--out")
    out.mkdir(parents=True, exist_ok=True)
    partial = out / f"{source.folder}.partial"
    shutil.rmtree(partial, ignore_errors=True)  # what an earlier, interrupted extraction left
    try:
        if archive is not None:
            extract(archive, partial)
        elif source.kaggle and url is None:
            download_from_kaggle(source, partial)
        else:
            downloaded = download_archive(url or source.url, out / f"{source.folder}.zip", source)
            try:
                extract(downloaded, partial)
            except DamagedArchiveError as error:
                downloaded.unlink()  # so that the same command downloads it again
                raise CxrError(f"what {url or source.url} sent is no usable archive ({error}); it was removed: "
                               "run the same command again, or download the archive by hand and pass it as "
                               "--archive FILE") from error
            downloaded.unlink()
        root = locate_dataset(dataset, partial)
        if root is None:
            raise CxrError(f"{archive or url or source.page}: holds no {dataset} dataset (looked {LAYOUT_DEPTH} "
                           f"folders deep for {source.layout}); is it the archive of {source.page}?")
        left_out, folder = [], partial
        for part in root.relative_to(partial).parts:  # what lies beside the path from the archive's top
            left_out += sorted(p.name for p in folder.iterdir() if p.name != part)
            folder = folder / part
        if left_out:
            log.info("left out of the archive, beside the dataset: %s", ", ".join(left_out))
        root.rename(target)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return target, load_dataset(dataset, target)


def download_archive(url: str, path: Path, source: Source) -> Path:
    """The zip at `url` saved as `path`, with a progress bar: written to `<path>.partial`, renamed when
    every byte the server announced has come (a connection that drops early is an error, not a short
    file). A complete archive already at `path`, from a run interrupted while extracting, is used again."""
    from tqdm.auto import tqdm

    if path.is_file():
        log.info("using %s, downloaded before", path)
        return path
    log.info("downloading %s to %s", url, path)
    partial = path.with_name(path.name + ".partial")
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers={"User-Agent": "cxr-tune"})) as response, \
                partial.open("wb") as file:
            announced = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=announced, unit="B", unit_scale=True, desc=f"download {path.name}") as bar:
                while chunk := response.read(1 << 20):
                    file.write(chunk)
                    bar.update(len(chunk))
        received = partial.stat().st_size
        if announced is not None and received != announced:
            raise CxrError(f"the download of {url} stopped at {received:,} of {announced:,} bytes: run the same "
                           "command again")
        partial.rename(path)
    except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as error:
        if isinstance(error, urllib.error.HTTPError):
            reason = f"HTTP {error.code} {error.reason}"
        else:
            reason = getattr(error, "reason", None) or error
        raise CxrError(f"could not download {url} ({reason}): on a machine that is online, download the "
                       f"archive of {source.page}, then pass it as --archive FILE") from error
    finally:
        partial.unlink(missing_ok=True)
    return path


def download_from_kaggle(source: Source, folder: Path) -> None:
    """Kaggle's archive of the dataset, downloaded and extracted into `folder` by kagglehub."""
    import kagglehub

    log.info("downloading %s from Kaggle into %s", source.kaggle, folder)
    try:
        kagglehub.dataset_download(source.kaggle, output_dir=str(folder), force_download=True)
    except Exception as error:  # no network, a proxy, no token, terms not accepted
        if _cannot_connect(error):
            raise CxrError(f"this machine cannot reach Kaggle to download {source.kaggle} ({type(error).__name__}: "
                           f"{error}): on a machine that is online, download its archive from {source.page} and "
                           f"pass it as --archive FILE; to download here once online, note that "
                           f"{KAGGLE_TOKEN_HELP}") from error
        raise CxrError(f"the Kaggle download of {source.kaggle} failed ({type(error).__name__}: {error}). "
                       f"{KAGGLE_TOKEN_HELP}, and the dataset's terms accepted on {source.page}; or download "
                       "its archive there by hand and pass it as --archive FILE") from error


def _cannot_connect(error: BaseException | None) -> bool:
    """Whether `error`, or an error it was raised from, is a failure to reach a server: no network, a name that
    does not resolve, a proxy that refuses, a connection timed out (kagglehub's requests.ConnectionError is raised
    from the socket's error)."""
    while error is not None:
        if isinstance(error, (ConnectionError, TimeoutError, socket.gaierror)):
            return True
        error = error.__cause__ or error.__context__
    return False


def extract(archive: Path, folder: Path) -> None:
    """Unzip `archive` into `folder` (made here), with a progress bar; CxrError naming the archive if it is
    missing, not a zip, damaged, or larger than the disk's free space."""
    from tqdm.auto import tqdm

    if not archive.is_file():
        raise CxrError(f"--archive {archive}: no such file")
    if not zipfile.is_zipfile(archive):
        with archive.open("rb") as file:
            begins_as_zip = file.read(4) == b"PK\x03\x04"
        if begins_as_zip:  # a zip lists its files at its end: a download that stopped early has none
            raise DamagedArchiveError(f"{archive}: a zip archive cut short (it lacks the list of files a zip ends "
                                      "with): download it again")
        raise DamagedArchiveError(f"{archive}: not a zip archive (the datasets' sources give zip files)")
    folder.mkdir(parents=True)
    try:
        with zipfile.ZipFile(archive) as zipped:
            members = zipped.infolist()
            needed, free = sum(m.file_size for m in members), shutil.disk_usage(folder).free
            if needed > free:
                raise CxrError(f"{archive}: unpacks to {needed / 1e9:.2f} GB but {folder.parent} has "
                               f"{free / 1e9:.2f} GB free: free some space or choose another --out")
            log.info("extracting %s (%d files, %.2f GB)", archive, len(members), needed / 1e9)
            for member in tqdm(members, unit="file", desc=f"extract {archive.name}"):
                zipped.extract(member, folder)
    except (zipfile.BadZipFile, EOFError, zlib.error) as error:
        raise DamagedArchiveError(f"{archive}: the archive is damaged ({error}): download it again") from error


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m cxrnets.download",
                                     description="Download one of the study's datasets and check its layout.")
    parser.add_argument("--dataset", required=True, choices=sorted(SOURCES), help="dataset name")
    parser.add_argument("--out", default="~/data",
                        help="the folder to put the dataset's folder in (default: ~/data)")
    given = parser.add_mutually_exclusive_group()
    given.add_argument("--archive", default=None,
                       help="a zip of the dataset downloaded by hand (from the page an error names), used "
                            "instead of downloading; it is left where it is. Refused if the dataset's folder is "
                            "in --out already: remove that folder to replace it")
    given.add_argument("--url", default=None, help="download the zip archive from this URL (a mirror) instead")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    with command_ends("nothing half-written was kept; an archive downloaded completely stays in --out, and the "
                      "same command uses it again"):
        root, _ = fetch(args.dataset, args.out, args.archive, args.url)
    print(f"pass --data-root {root}, e.g. python -m cxrnets.cache --dataset {args.dataset} --data-root {root} "
          "--image-size 224")


if __name__ == "__main__":
    main()
