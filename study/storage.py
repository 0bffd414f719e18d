"""Every read and write of a study's files, on a local path or in object storage.

A location is a local path (`studies/demo-1`) or a URI (`s3://bucket/studies/demo-1`,
`gs://bucket/...`); `location()` turns what a user typed into one, and every
other function takes that. pyarrow does the work (the same filesystems Ray
Tune writes the study's own files through), so credentials and endpoints come
from the usual environment (`AWS_ACCESS_KEY_ID`, `AWS_ENDPOINT_URL`,
`GOOGLE_APPLICATION_CREDENTIALS`, ...).

    uri = location("s3://bucket/studies")          # unchanged; a local path becomes absolute
    write_json(join(uri, "demo", "study.json"), {...})
    read_csv(join(uri, "demo", "splits", "covid-chestxray-3class.csv"))
    path = download(join(uri, "demo", "weights", "0a1b2c3d.pt"))   # a local file, cached by URI and ETag
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
import string
import tempfile
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.fs

from cxrnets.errors import CxrError

log = logging.getLogger(__name__)

REMOTE_SCHEMES = ("s3", "gs")
# How long a first look at a user's location in object storage may retry. Google's client retries a
# bucket it cannot reach, or reach without credentials, for 15 minutes by default, without a word;
# S3's gives up after 3 attempts.
FIRST_LOOK_SECONDS = 30.0
# Bytes per read or write of a large file. Large: an S3 GET has a fixed cost (and moto serves each
# ranged GET in time proportional to the whole object: 250 MB took 4.4 s in 8 MiB reads, 1.0 s in 64 MiB).
CHUNK = 64 * 2**20


def is_remote(uri: str) -> bool:
    """True for object storage (s3://, gs://), False for a local path."""
    return "://" in str(uri)


def scheme_of(uri: str) -> str:
    """A location's scheme in lower case ("s3", "gs"); "" for a local path."""
    return str(uri).partition("://")[0].lower() if is_remote(uri) else ""


def location(text: str | Path, flag: str = "--storage") -> str:
    """A user's storage location as the study stores it: an absolute local path, or a URI whose
    scheme pyarrow can write to (CxrError naming `flag` otherwise)."""
    text = str(text)
    if not is_remote(text):
        refuse_mistyped_uri(text, flag)
        return str(Path(text).expanduser().resolve())
    scheme = scheme_of(text)
    if scheme == "file":
        return str(Path(text.partition("://")[2]).resolve())
    if scheme not in REMOTE_SCHEMES:
        raise CxrError(f"{flag} {text}: unsupported scheme {scheme}://; use a local folder, s3://BUCKET/PATH "
                       "or gs://BUCKET/PATH")
    path = text.partition("://")[2]
    if not path.strip("/"):
        raise CxrError(f"{flag} {text}: name a bucket ({scheme}://BUCKET/PATH)")
    check_uri_path(path, f"{flag} {text}", in_uri=True)
    return f"{scheme}://{path}".rstrip("/")


# The first part of a local path that is a scheme ("s3:", "file:") or starts with a storage's ("gs:bucket").
SCHEME_LIKE = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*):(.*)")


def refuse_mistyped_uri(path: str, flag: str) -> None:
    """CxrError naming `flag` if a local path reads as a URI typed with one slash or none (`s3:/bucket`,
    `gs:bucket`), which would otherwise put a whole study in a local folder named `s3:`."""
    first = path.split("/", 1)[0]
    match = SCHEME_LIKE.fullmatch(first)
    if not match or (match.group(2) and match.group(1).lower() not in REMOTE_SCHEMES):
        return
    scheme, rest = match.group(1).lower(), path.partition(":")[2]
    meant = f"file://{rest}" if scheme == "file" else f"{scheme}://{rest.lstrip('/')}"
    raise CxrError(f"{flag} {path}: this is a local folder named {first!r}, not a storage URI; write {meant} "
                   f"(two slashes after {scheme}:), or ./{path} for a local folder of that name")


URI_SPECIAL = "?#%"  # a URI's query, fragment and escapes: pyarrow would read them as such, not as a name
# What a URI's path carries as it is (RFC 3986: unreserved characters, sub-delimiters, ':', '@', '/'): pyarrow
# cannot parse a URI holding any other (a space, '{', 'é', ...).
URI_PATH_CHARACTERS = frozenset(string.ascii_letters + string.digits + "-._~!$&'()*+,;=:@/" + URI_SPECIAL)


def check_uri_path(path: str, what: str, remedy: str = "rename without it", in_uri: bool = False) -> None:
    """CxrError naming `what` if `path` holds a character a storage URI cannot carry as part of a name; `in_uri`:
    `path` is part of a URI (not a local path, which may hold any other character), so it must parse as one."""
    found = sorted({character for character in path if character in URI_SPECIAL})
    if found:
        raise CxrError(f"{what}: {' '.join(repr(c) for c in found)} cannot be part of a storage location's "
                       f"name (a URI reads it as a query, fragment or escape); {remedy}")
    found = sorted({character for character in path if character not in URI_PATH_CHARACTERS}) if in_uri else []
    if found:
        raise CxrError(f"{what}: {' '.join(repr(c) for c in found)} cannot be part of a storage URI (it carries "
                       f"ASCII letters, digits and -._~!$&'()*+,;=:@ only); {remedy}")


def join(base: str, *parts: str) -> str:
    return "/".join([str(base).rstrip("/"), *parts])


def name_of(uri: str) -> str:
    """The last part of a location (a file or folder name)."""
    return str(uri).rstrip("/").rpartition("/")[2]


def parent_of(uri: str) -> str:
    return str(uri).rstrip("/").rpartition("/")[0]


def filesystem(uri: str, first_look: bool = False) -> tuple[pyarrow.fs.FileSystem, str]:
    """The pyarrow filesystem of a location and the path within it (a bucket path has no scheme).

    `first_look`: for the first access to a location a user gave, which gives up within
    FIRST_LOOK_SECONDS instead of retrying as long as the storage's client would.
    """
    if not is_remote(uri):
        return pyarrow.fs.LocalFileSystem(), str(uri)
    if first_look and scheme_of(uri) == "gs":
        uri = f"{uri}?retry_limit_seconds={FIRST_LOOK_SECONDS:g}"
    try:
        return pyarrow.fs.FileSystem.from_uri(uri)
    except (pyarrow.ArrowInvalid, OSError) as error:
        raise CxrError(f"{uri}: cannot open this storage location ({error})") from error


def _as_uri(base: str, path: str) -> str:
    """A path pyarrow listed under `base`, as a location again (s3://bucket/... stays s3://)."""
    scheme, sep, _ = str(base).partition("://")
    return f"{scheme}://{path}" if sep else path


# ------------------------------------------------------------------ what is there

@dataclass(frozen=True)
class Entry:
    """One file or folder in a listing."""

    uri: str
    name: str
    is_dir: bool
    size: int | None  # bytes; None for a folder
    mtime_ns: int | None = None  # last modification, where the storage says


def kind(uri: str, first_look: bool = False) -> str:
    """'file', 'dir' or 'missing'; CxrError naming the location if the storage refuses to say (credentials).
    `first_look`: as for `filesystem`, and a location in a bucket that does not exist is a CxrError saying so."""
    fs, path = filesystem(uri, first_look)
    try:
        found = fs.get_file_info(path).type
        bucket = path.split("/", 1)[0]
        if (first_look and found == pyarrow.fs.FileType.NotFound and is_remote(uri)
                and fs.get_file_info(bucket).type == pyarrow.fs.FileType.NotFound):
            raise CxrError(f"{uri}: bucket {bucket} does not exist; check the bucket's name")
    except OSError as error:
        raise CxrError(f"{uri}: cannot read this location ({_first_line(error)}); {_access_hint(uri)}") from error
    if found == pyarrow.fs.FileType.File:
        return "file"
    return "dir" if found == pyarrow.fs.FileType.Directory else "missing"


def size_of(uri: str) -> int | None:
    """A file's size in bytes, None if it is not there."""
    fs, path = filesystem(uri)
    info = fs.get_file_info(path)
    return info.size if info.type == pyarrow.fs.FileType.File else None


def listing(uri: str, recursive: bool = False) -> list[Entry]:
    """What a folder holds (nothing if it is not there), sorted by name."""
    fs, path = filesystem(uri)
    if fs.get_file_info(path).type != pyarrow.fs.FileType.Directory:
        return []
    infos = fs.get_file_info(pyarrow.fs.FileSelector(path, recursive=recursive, allow_not_found=True))
    entries = [Entry(_as_uri(uri, info.path), info.base_name, info.type == pyarrow.fs.FileType.Directory,
                     info.size if info.type == pyarrow.fs.FileType.File else None, info.mtime_ns) for info in infos]
    return sorted(entries, key=lambda entry: entry.uri)


def total_bytes(uri: str) -> int:
    """Bytes of every file under a folder (0 if it is not there)."""
    return sum(entry.size or 0 for entry in listing(uri, recursive=True))


# ------------------------------------------------------------------ reading and writing

def read_bytes(uri: str) -> bytes:
    """A whole file; OSError if it is missing or unreadable."""
    fs, path = filesystem(uri)
    with fs.open_input_stream(path) as stream:
        return stream.read()


def write_bytes(uri: str, data: bytes) -> None:
    """Write a whole file, creating its folder. A reader never sees half of it: locally it is written
    beside and renamed; an object store shows an object only once it is complete."""
    if not is_remote(uri):
        with written_file(uri) as partial:
            partial.write_bytes(data)
        return
    fs, path = filesystem(uri)
    fs.create_dir(path.rpartition("/")[0], recursive=True)
    with fs.open_output_stream(path) as stream:
        stream.write(data)


def create_bytes(uri: str, data: bytes) -> bool:
    """Write a file that is not there yet, creating its folder; False where one is there already.

    Locally this is atomic: the file is written beside its place and hard-linked into it, which fails where
    a file is there (so that of two writers at once, one alone gets True, and no reader sees half a file; on a
    filesystem without hard links, it is created exclusively and written in place).
    Object storage offers no such step here: the object is looked for, written, and read back, and True only if
    what is read back is `data`; two writers in the same instant may both get True (best effort).
    """
    if not is_remote(uri):
        Path(uri).parent.mkdir(parents=True, exist_ok=True)
        partial = Path(uri).with_name(f"partial-{uuid.uuid4().hex[:12]}.tmp")  # as written_file names it
        try:
            partial.write_bytes(data)
            os.link(partial, uri)
            return True
        except FileExistsError:
            return False
        except OSError:  # a filesystem without hard links (some FUSE and SMB mounts): an exclusive create
            try:
                with open(uri, "xb") as file:
                    file.write(data)
            except FileExistsError:
                return False
            return True
        finally:
            partial.unlink(missing_ok=True)
    if kind(uri) != "missing":
        return False
    write_bytes(uri, data)
    try:
        return read_bytes(uri) == data
    except FileNotFoundError:
        return False


@contextmanager
def written_file(uri: str) -> Iterator[Path]:
    """A local path to write a (large) file to; when the block ends, the file is at `uri`, complete.

    Locally the file is written beside its place, under a name of its own (a reader that picks files by
    name, as TensorBoard picks `*tfevents*`, never takes it for the file), and renamed into it; for object
    storage it is written to a temporary file and uploaded. If the block raises, nothing appears at `uri`.
    """
    fs, path = filesystem(uri)
    fs.create_dir(path.rpartition("/")[0], recursive=True)
    if not is_remote(uri):
        partial = Path(path).with_name(f"partial-{uuid.uuid4().hex[:12]}.tmp")
        try:
            yield partial
            partial.replace(path)
        finally:
            partial.unlink(missing_ok=True)
        return
    with tempfile.TemporaryDirectory(prefix="cxr-upload-") as folder:
        local = Path(folder) / name_of(uri)
        yield local
        with local.open("rb") as source, fs.open_output_stream(path) as stream:
            while chunk := source.read(CHUNK):
                stream.write(chunk)


def read_text(uri: str) -> str:
    return read_bytes(uri).decode()


def write_text(uri: str, text: str) -> None:
    write_bytes(uri, text.encode())


def read_json(uri: str) -> Any:
    return json.loads(read_bytes(uri))


def write_json(uri: str, value: Any) -> None:
    write_text(uri, json.dumps(value, indent=2))


def create_json(uri: str, value: Any) -> bool:
    """As create_bytes: write a JSON file that is not there yet; False where one is there."""
    return create_bytes(uri, json.dumps(value, indent=2).encode())


def read_csv(uri: str, **options: Any) -> pd.DataFrame:
    return pd.read_csv(io.BytesIO(read_bytes(uri)), **options)


def write_csv(uri: str, frame: pd.DataFrame) -> None:
    write_text(uri, frame.to_csv(index=False))


def delete(uri: str) -> None:
    """Remove a file or a folder with everything in it; nothing happens if it is not there."""
    fs, path = filesystem(uri)
    found = fs.get_file_info(path).type
    if found == pyarrow.fs.FileType.Directory:
        fs.delete_dir(path)
    elif found == pyarrow.fs.FileType.File:
        fs.delete_file(path)


def copy_tree(source: str, destination: str) -> None:
    """Copy a folder (a study, say) between any two locations."""
    source_fs, source_path = filesystem(source)
    destination_fs, destination_path = filesystem(destination)
    destination_fs.create_dir(destination_path, recursive=True)
    pyarrow.fs.copy_files(source_path, destination_path, source_filesystem=source_fs,
                          destination_filesystem=destination_fs, chunk_size=CHUNK)


def check_writable(uri: str, flag: str = "--storage") -> None:
    """Write and delete a probe file under `uri`; CxrError naming the location if that fails.

    Run before a study starts anything, so that a missing bucket or refused credentials stop it at
    once rather than at the first trial's report. A folder the probe had to create is removed again.
    """
    probe = join(uri, ".write-check")
    try:
        fs, path = filesystem(probe, first_look=True)
        folder = path.rpartition("/")[0]
        # The top-most folder the probe creates: removed again, with what it holds (an object store
        # keeps empty "folder/" marker objects too).
        created = None
        while folder and fs.get_file_info(folder).type == pyarrow.fs.FileType.NotFound:
            created, folder = folder, folder.rpartition("/")[0]
            if is_remote(uri) and "/" not in folder:  # the bucket itself: never created here
                break
        fs.create_dir(path.rpartition("/")[0], recursive=True)
        with fs.open_output_stream(path) as stream:
            stream.write(b"ok")
        fs.delete_file(path)
        if created:
            fs.delete_dir(created)
    except Exception as error:  # pyarrow raises OSError, ArrowInvalid, ... depending on the filesystem
        cause = error.__cause__ if isinstance(error, CxrError) and error.__cause__ else error
        raise CxrError(f"{flag} {uri}: cannot write there ({_first_line(cause)}); {_access_hint(uri)}") from error


def _access_hint(uri: str) -> str:
    if not is_remote(uri):
        return "pick a folder you can write to"
    if scheme_of(uri) == "gs":
        where = ("GOOGLE_APPLICATION_CREDENTIALS naming a service account's key file, or "
                 "`gcloud auth application-default login`")
    else:
        where = "the environment: AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE"
    return f"check the credentials and network, and that the bucket exists (credentials come from {where})"


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    if not text:
        return type(error).__name__
    missing = re.search(r"Bucket '([^']+)' not found", text)  # pyarrow goes on about allow_bucket_creation
    if "OAuth2 access token" in text:  # Google's client, after retrying, in a paragraph
        return "no Google Cloud credentials could be found or used"
    return f"bucket {missing.group(1)} does not exist" if missing else text.splitlines()[0][:300]


# ------------------------------------------------------------------ downloads

def download_cache_dir() -> Path:
    root = os.environ.get("CXR_TUNE_CACHE") or Path.home() / ".cache" / "cxr-tune"
    return Path(root) / "downloads"


def download(uri: str, cache_dir: str | Path | None = None, progress: bool = True, bar: Any = None
             ) -> tuple[Path, int]:
    """A local file with the content of `uri`, and the bytes fetched to get it: the file itself for a
    local path (0 bytes), else a copy in the download cache keyed by URI, size, modification time and the
    object's ETag, so that a second call fetches nothing.

    Shows a progress bar (tqdm) while it downloads, or advances `bar` (a tqdm shared by several
    downloads; a cached copy advances it by its size); OSError if the object is missing or unreadable.
    """
    if not is_remote(uri):
        return Path(uri), 0
    fs, path = filesystem(uri)
    info = fs.get_file_info(path)
    if info.type != pyarrow.fs.FileType.File:
        raise FileNotFoundError(f"{uri}: no such object")
    size = info.size
    from tqdm.auto import tqdm

    with fs.open_input_stream(path) as stream:  # reads the object's metadata; its content only when read
        # The ETag changes with the content: weights rewritten at another epoch have the same size, and object
        # stores time them to the second. Storage that gives none keys on the rest.
        key = hashlib.sha1(f"{uri} {info.mtime_ns} {etag_of(stream)}".encode()).hexdigest()[:16]
        folder = Path(cache_dir) if cache_dir else download_cache_dir()
        local = folder / f"{key}-{size}-{name_of(uri)}"
        if local.is_file() and local.stat().st_size == size:
            if bar is not None:
                bar.update(size)
            return local, 0
        folder.mkdir(parents=True, exist_ok=True)
        partial = local.with_name(f"{local.name}.{threading.get_ident()}.part")  # one per thread downloading it
        own_bar = tqdm(total=size, unit="B", unit_scale=True, desc=f"download {name_of(uri)}",
                       disable=not progress or bar is not None, leave=False)
        with partial.open("wb") as out, own_bar:
            while chunk := stream.read(CHUNK):
                out.write(chunk)
                (own_bar if bar is None else bar).update(len(chunk))
    fetched = partial.stat().st_size
    if fetched != size:
        partial.unlink()
        raise OSError(f"{uri}: downloaded {fetched} of {size} bytes")
    partial.replace(local)
    return local, fetched


def etag_of(stream: pyarrow.NativeFile) -> str:
    """The ETag of the object a stream reads (S3's "ETag", Google's "etag"); "" where the storage gives none."""
    for key, value in (stream.metadata() or {}).items():
        if (key.decode() if isinstance(key, bytes) else key).lower() == "etag":
            return value.decode(errors="replace") if isinstance(value, bytes) else str(value)
    return ""
