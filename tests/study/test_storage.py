"""study.storage against a real S3 server (moto, see conftest.s3_server) and a local folder.

Most tests run twice, on a local folder and in a fresh bucket (the `root` fixture): the same calls
must mean the same thing in both. About 10 s on 2 cores.
"""

from __future__ import annotations

import errno
import os
import re
import time
import uuid
from pathlib import Path

import pandas as pd
import pytest

from cxrnets.errors import CxrError
from study import storage
from study.local_s3 import CREDENTIALS, LocalS3Server


@pytest.fixture(params=["local", "s3"])
def root(request, tmp_path) -> str:
    """A folder that does not exist yet: under tmp_path, or in a fresh bucket."""
    if request.param == "local":
        return str(tmp_path / "store")
    return request.getfixturevalue("s3_bucket") + "/store"


def unique_bucket_name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def put(uri: str, files: dict[str, bytes]) -> None:
    for relpath, data in files.items():
        storage.write_bytes(storage.join(uri, relpath), data)


def relpaths(base: str, entries: list[storage.Entry]) -> list[str]:
    return [entry.uri.removeprefix(base.rstrip("/") + "/") for entry in entries]


# ------------------------------------------------------------------ locations and names

def test_location_makes_a_local_path_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert storage.location("studies") == str(tmp_path / "studies")
    assert storage.location(Path("a/../b")) == str(tmp_path / "b")
    assert storage.location("~/studies") == str(Path.home() / "studies")
    assert storage.location(f"file://{tmp_path}/x") == str(tmp_path / "x")
    assert not storage.is_remote(storage.location("studies"))


def test_location_keeps_an_object_storage_uri():
    assert storage.location("s3://bucket/studies") == "s3://bucket/studies"
    assert storage.location("s3://bucket/studies/") == "s3://bucket/studies"
    assert storage.location("s3://bucket") == "s3://bucket"
    assert storage.location("gs://bucket/a/b") == "gs://bucket/a/b"
    assert storage.location("S3://bucket/studies") == "s3://bucket/studies"  # pyarrow knows the scheme in lower case
    assert storage.is_remote("s3://bucket/studies") and storage.is_remote("gs://bucket")


@pytest.mark.parametrize("text, flag, message", [
    ("ftp://host/studies", "--storage", r"^--storage ftp://host/studies: unsupported scheme ftp://; use a local "
                                        r"folder, s3://BUCKET/PATH or gs://BUCKET/PATH$"),
    ("HTTP://host/x", "--resume", r"^--resume HTTP://host/x: unsupported scheme http://"),
    ("s3://", "--storage", r"^--storage s3://: name a bucket \(s3://BUCKET/PATH\)$"),
    ("s3:///", "--storage", r"^--storage s3:///: name a bucket"),
    ("gs://", "--resume", r"^--resume gs://: name a bucket \(gs://BUCKET/PATH\)$"),
    ("s3://bucket/run#2", "--storage", r"^--storage s3://bucket/run#2: '#' cannot be part of a storage location's "
                                       r"name \(a URI reads it as a query, fragment or escape\); rename without it$"),
    ("gs://bucket/a?b=1", "--resume", r"^--resume gs://bucket/a\?b=1: '\?' cannot be part"),
    # what pyarrow cannot parse in a URI: not "cannot write there ... check the credentials"
    ("s3://cxr/a b", "--storage", r"^--storage s3://cxr/a b: ' ' cannot be part of a storage URI \(it carries "
                                  r"ASCII letters, digits and -\._~!\$&'\(\)\*\+,;=:@ only\); rename without it$"),
    ("gs://cxr/{x}/étude", "--resume", r"^--resume gs://cxr/\{x\}/étude: '\{' '\}' 'é' cannot be part of a storage URI"),
])
def test_location_refuses_what_cannot_be_written(text, flag, message):
    with pytest.raises(CxrError, match=message):
        storage.location(text, flag)


@pytest.mark.parametrize("text, flag, suggested", [
    ("s3:/bucket/studies", "--storage", "s3://bucket/studies"),
    ("gs:/x", "--storage", "gs://x"),
    ("s3:bucket/studies", "--storage", "s3://bucket/studies"),
    ("GS:/bucket", "--resume", "gs://bucket"),
    ("file:/home/me/studies", "--storage", "file:///home/me/studies"),
])
def test_a_uri_typed_with_one_slash_is_refused_not_taken_for_a_local_folder(text, flag, suggested, tmp_path,
                                                                           monkeypatch):
    """`--storage gs:/x` used to run a whole study in a local folder ./gs:/x."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CxrError, match=rf"^{flag} {re.escape(text)}: .*{re.escape(suggested)}"):
        storage.location(text, flag)
    assert list(tmp_path.iterdir()) == []
    assert storage.location(f"./{text}") == str(tmp_path / text)  # a folder of that name, asked for as such


def test_join_name_and_parent():
    assert storage.join("s3://bucket/studies/", "demo", "study.json") == "s3://bucket/studies/demo/study.json"
    assert storage.join("/data/studies", "demo") == "/data/studies/demo"
    assert storage.name_of("s3://bucket/studies/demo/") == "demo"
    assert storage.name_of("/data/studies/demo/weights/0a1b.pt") == "0a1b.pt"
    assert storage.parent_of("s3://bucket/studies/demo/") == "s3://bucket/studies"
    assert storage.parent_of("/data/studies/demo") == "/data/studies"
    uri = "s3://bucket/studies/demo"
    assert storage.join(storage.parent_of(uri), storage.name_of(uri)) == uri


# ------------------------------------------------------------------ reading and writing

def test_round_trip_of_bytes_text_json_and_csv(root):
    data = bytes(range(256)) * 3
    storage.write_bytes(storage.join(root, "deep", "er", "blob.bin"), data)  # folders are made as needed
    assert storage.read_bytes(storage.join(root, "deep", "er", "blob.bin")) == data
    storage.write_text(storage.join(root, "note.txt"), "naïve ✓\n")
    assert storage.read_text(storage.join(root, "note.txt")) == "naïve ✓\n"
    value = {"name": "demo", "lr": 1e-3, "nested": {"list": [1, 2, None]}, "ok": True}
    storage.write_json(storage.join(root, "study.json"), value)
    assert storage.read_json(storage.join(root, "study.json")) == value
    frame = pd.DataFrame({"relpath": ["a/x.png", "b/y,z.png"], "split": ["train", "test"], "n": [1, 2]})
    storage.write_csv(storage.join(root, "splits", "folder.csv"), frame)
    pd.testing.assert_frame_equal(storage.read_csv(storage.join(root, "splits", "folder.csv")), frame)
    assert storage.read_csv(storage.join(root, "splits", "folder.csv"), dtype=str)["n"].tolist() == ["1", "2"]
    # a rewrite replaces the whole file
    storage.write_bytes(storage.join(root, "deep", "er", "blob.bin"), b"short")
    assert storage.read_bytes(storage.join(root, "deep", "er", "blob.bin")) == b"short"
    # locally nothing is left beside the files (they are written as .tmp and renamed)
    names = [entry.name for entry in storage.listing(root, recursive=True)]
    assert not [name for name in names if name.endswith(".tmp")], names


def test_a_file_being_written_does_not_look_like_it_by_name(tmp_path):
    """TensorBoard reads every file whose name holds "tfevents": an experiment summary being written is not one."""
    uri = str(tmp_path / "events.out.tfevents.study")
    with storage.written_file(uri) as partial:
        partial.write_bytes(b"half")
        assert [path.name for path in tmp_path.iterdir() if "tfevents" in path.name] == []
    assert [path.name for path in tmp_path.iterdir()] == ["events.out.tfevents.study"]


def test_reading_a_missing_file_is_file_not_found(root):
    """What study.settings.load_settings tells apart from an unreadable file."""
    storage.write_text(storage.join(root, "other.txt"), "x")
    with pytest.raises(FileNotFoundError):
        storage.read_bytes(storage.join(root, "study.json"))
    with pytest.raises(FileNotFoundError):
        storage.read_json(storage.join(root, "absent", "study.json"))


# ------------------------------------------------------------------ what is there

FILES = {"a.txt": b"abc", "sub/b.bin": b"12345", "sub/deeper/c.json": b"{}", "sub2/d.txt": b"dddd"}


def test_listing(root):
    put(root, FILES)
    top = storage.listing(root)
    assert relpaths(root, top) == ["a.txt", "sub", "sub2"]
    assert [(e.name, e.is_dir, e.size) for e in top] == [("a.txt", False, 3), ("sub", True, None),
                                                        ("sub2", True, None)]
    assert all(entry.uri.startswith(root + "/") for entry in top)  # s3:// stays s3://
    everything = storage.listing(root, recursive=True)
    assert relpaths(root, everything) == ["a.txt", "sub", "sub/b.bin", "sub/deeper", "sub/deeper/c.json", "sub2",
                                          "sub2/d.txt"]
    assert {relpath: entry.size for relpath, entry in zip(relpaths(root, everything), everything)
            if not entry.is_dir} == {relpath: len(data) for relpath, data in FILES.items()}
    assert relpaths(storage.join(root, "sub"), storage.listing(storage.join(root, "sub"))) == ["b.bin", "deeper"]
    # nothing there, or a file: an empty listing
    assert storage.listing(storage.join(root, "absent")) == []
    assert storage.listing(storage.join(root, "a.txt")) == []


def test_kind_size_and_total_bytes(root):
    put(root, FILES)
    assert storage.kind(root) == "dir"
    assert storage.kind(storage.join(root, "sub", "b.bin")) == "file" and storage.kind(storage.join(root, "a.txt")) == "file"
    assert storage.kind(storage.join(root, "sub", "absent")) == "missing"
    assert storage.kind(storage.join(root, "su")) == "missing"  # a prefix of a folder's name is nothing
    assert storage.kind(storage.join(root, "sub")) == "dir" and storage.kind(storage.join(root, "a.txt")) != "dir"
    assert storage.size_of(storage.join(root, "sub", "b.bin")) == 5
    assert storage.size_of(storage.join(root, "sub")) is None and storage.size_of(storage.join(root, "x")) is None
    assert storage.total_bytes(root) == sum(len(data) for data in FILES.values())
    assert storage.total_bytes(storage.join(root, "sub")) == 7
    assert storage.total_bytes(storage.join(root, "absent")) == 0


def test_delete(root):
    put(root, FILES)
    storage.delete(storage.join(root, "a.txt"))
    assert storage.kind(storage.join(root, "a.txt")) == "missing"
    storage.delete(storage.join(root, "sub"))  # a folder with everything in it, not its namesake sub2
    assert storage.kind(storage.join(root, "sub")) == "missing"
    assert storage.listing(storage.join(root, "sub"), recursive=True) == []
    assert relpaths(root, storage.listing(root, recursive=True)) == ["sub2", "sub2/d.txt"]
    storage.delete(storage.join(root, "absent"))  # nothing there: nothing happens
    storage.delete(storage.join(root, "sub", "b.bin"))
    assert storage.read_bytes(storage.join(root, "sub2", "d.txt")) == b"dddd"


def test_written_file_appears_complete_only_when_the_block_ends(root):
    uri = storage.join(root, "weights", "0a1b2c3d.pt")
    data = b"w" * (3 * 2**20 + 17)
    with storage.written_file(uri) as path:
        assert isinstance(path, Path)
        with path.open("wb") as out:
            out.write(data[: len(data) // 2])
            out.flush()
            assert storage.kind(uri) == "missing"  # half written: nothing to see yet
            out.write(data[len(data) // 2:])
        assert storage.kind(uri) == "missing"
    assert storage.read_bytes(uri) == data and storage.size_of(uri) == len(data)
    assert [entry.name for entry in storage.listing(storage.join(root, "weights"))] == ["0a1b2c3d.pt"]
    assert not path.exists()  # the local staging file is gone


def test_create_bytes_writes_only_a_file_not_there_yet(root):
    """What a driver's lock is made with: of two drivers, the second finds the first's file and leaves it whole."""
    uri = storage.join(root, "study", "driver.lock")
    assert storage.create_bytes(uri, b"first")
    assert not storage.create_bytes(uri, b"second")
    assert storage.read_bytes(uri) == b"first"
    assert [entry.name for entry in storage.listing(storage.join(root, "study"))] == ["driver.lock"]


def test_create_bytes_locally_is_refused_a_file_that_appears_as_it_writes(tmp_path, monkeypatch):
    """Two local writers at once: the one whose file lands second gets False, and the first's file stays whole."""
    uri = str(tmp_path / "study" / "driver.lock")
    real_link = os.link

    def other_writer_first(source, target):
        Path(target).write_bytes(b"other")
        real_link(source, target)

    monkeypatch.setattr(os, "link", other_writer_first)
    assert not storage.create_bytes(uri, b"mine")
    assert (tmp_path / "study" / "driver.lock").read_bytes() == b"other"
    assert [path.name for path in (tmp_path / "study").iterdir()] == ["driver.lock"]


def test_create_bytes_locally_on_a_filesystem_without_hard_links_creates_the_file_exclusively(tmp_path,
                                                                                            monkeypatch):
    """Some FUSE and SMB mounts refuse hard links (EPERM): a driver's lock is still taken there, once."""
    uri = str(tmp_path / "study" / "driver.lock")

    def no_hard_links(source, target):
        raise PermissionError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_hard_links)
    assert storage.create_bytes(uri, b"first")
    assert not storage.create_bytes(uri, b"second")
    assert [(path.name, path.read_bytes()) for path in (tmp_path / "study").iterdir()] == [("driver.lock", b"first")]


def test_create_bytes_in_a_bucket_reads_back_what_it_wrote(s3_bucket, monkeypatch):
    """Object storage cannot refuse an object that is there: another writer's object landing over this one's
    before it is read back makes it False."""
    uri = storage.join(s3_bucket, "study", "driver.lock")
    real_write = storage.write_bytes

    def overwritten_at_once(target, data):
        real_write(target, data)
        real_write(target, b"other")

    monkeypatch.setattr(storage, "write_bytes", overwritten_at_once)
    assert not storage.create_bytes(uri, b"mine")
    assert storage.read_bytes(uri) == b"other"


def test_written_file_leaves_nothing_when_the_block_raises(root):
    uri = storage.join(root, "weights", "0a1b2c3d.pt")
    with pytest.raises(RuntimeError, match="crashed mid-write"):
        with storage.written_file(uri) as path:
            path.write_bytes(b"half a file")
            raise RuntimeError("crashed mid-write")
    assert storage.kind(uri) == "missing"
    assert [entry.name for entry in storage.listing(storage.join(root, "weights"))] == []
    assert not path.exists()
    # over an existing file: the old one stays, whole
    storage.write_bytes(uri, b"the old weights")
    with pytest.raises(RuntimeError):
        with storage.written_file(uri) as path:
            path.write_bytes(b"new")
            raise RuntimeError("crashed mid-write")
    assert storage.read_bytes(uri) == b"the old weights"
    assert [entry.name for entry in storage.listing(storage.join(root, "weights"))] == ["0a1b2c3d.pt"]


def test_copy_tree_from_a_bucket_to_a_local_folder(s3_bucket, tmp_path):
    source = storage.join(s3_bucket, "studies", "demo")
    files = {**FILES, "weights/big.pt": bytes(range(256)) * 9000}  # 2.3 MB: more than one read
    put(source, files)
    target = tmp_path / "copy" / "demo"
    storage.copy_tree(source, str(target))
    assert sorted(str(p.relative_to(target)) for p in target.rglob("*") if p.is_file()) == sorted(files)
    for relpath, data in files.items():
        assert (target / relpath).read_bytes() == data
    # and back, into another bucket folder
    storage.copy_tree(str(target), storage.join(s3_bucket, "studies", "demo-copy"))
    assert storage.read_bytes(storage.join(s3_bucket, "studies", "demo-copy", "weights", "big.pt")) == \
        files["weights/big.pt"]
    assert storage.total_bytes(storage.join(s3_bucket, "studies", "demo-copy")) == storage.total_bytes(source)


# ------------------------------------------------------------------ downloads

def test_download_of_a_local_file_is_the_file_itself(tmp_path):
    path = tmp_path / "w.pt"
    path.write_bytes(b"weights")
    assert storage.download(str(path), tmp_path / "cache") == (path, 0)
    assert not (tmp_path / "cache").exists()


def test_download_fetches_once_and_again_when_the_size_changes(s3_bucket, tmp_path):
    uri = storage.join(s3_bucket, "studies", "demo", "weights", "0a1b2c3d.pt")
    data = bytes(range(256)) * 40_000  # 10 MB: more than one chunk
    storage.write_bytes(uri, data)
    cache = tmp_path / "cache"
    first, fetched = storage.download(uri, cache, progress=False)
    assert fetched == len(data) and first.read_bytes() == data
    assert first.parent == cache and first.name.endswith("0a1b2c3d.pt")
    again, fetched = storage.download(uri, cache, progress=False)
    assert (again, fetched) == (first, 0)
    # the same name elsewhere is another file
    other = storage.join(s3_bucket, "studies", "copy", "weights", "0a1b2c3d.pt")
    storage.write_bytes(other, b"other")
    path, fetched = storage.download(other, cache, progress=False)
    assert path != first and fetched == 5 and path.read_bytes() == b"other"
    # rewritten with another size: downloaded again
    storage.write_bytes(uri, data[:1000])
    changed, fetched = storage.download(uri, cache, progress=False)
    assert changed != first and fetched == 1000 and changed.read_bytes() == data[:1000]
    assert not list(cache.glob("*.part"))
    # the default cache: $CXR_TUNE_CACHE/downloads (tests/conftest.py points it at a session temp dir)
    path, fetched = storage.download(other, progress=False)
    assert path.parent == storage.download_cache_dir() and fetched == 5


def test_downloads_advance_a_shared_progress_bar_whatever_its_total(s3_bucket, tmp_path):
    """A bar shared by several downloads counts every byte, downloaded or found in the cache, even when
    its total is 0 (sizes unknown) and tqdm's bar is falsy."""
    import io

    from tqdm.auto import tqdm

    uri = storage.join(s3_bucket, "weights", "t.pt")
    storage.write_bytes(uri, b"w" * 3_000_000)
    with tqdm(total=0, file=io.StringIO()) as bar:
        storage.download(uri, tmp_path / "cache", progress=False, bar=bar)
        storage.download(uri, tmp_path / "cache", progress=False, bar=bar)  # from the cache
        assert bar.n == 6_000_000


def test_download_fetches_an_object_rewritten_with_the_same_size(s3_bucket, tmp_path):
    uri = storage.join(s3_bucket, "studies", "demo", "weights", "0a1b2c3d.pt")
    storage.write_bytes(uri, b"epoch 1 weights")
    storage.download(uri, tmp_path / "cache", progress=False)
    time.sleep(1.1)  # S3 times objects to the second
    storage.write_bytes(uri, b"epoch 3 weights")
    path, fetched = storage.download(uri, tmp_path / "cache", progress=False)
    assert path.read_bytes() == b"epoch 3 weights" and fetched == 15


def test_download_fetches_an_object_rewritten_in_the_same_second_with_the_same_size(s3_bucket, tmp_path):
    """Weights files of one model always have the same size, and S3 times objects to the second: a trial that
    wrote a better epoch's weights within a second of a download must not be served the older copy."""
    uri = storage.join(s3_bucket, "studies", "demo", "weights", "0a1b2c3d.pt")
    time.sleep(1 - time.time() % 1)  # the start of a second: both writes fall within it
    storage.write_bytes(uri, b"A" * 1000)
    storage.download(uri, tmp_path / "cache", progress=False)
    storage.write_bytes(uri, b"B" * 1000)
    path, fetched = storage.download(uri, tmp_path / "cache", progress=False)
    assert path.read_bytes() == b"B" * 1000 and fetched == 1000
    assert storage.download(uri, tmp_path / "cache", progress=False) == (path, 0)  # cached again


def test_download_of_a_missing_object(s3_bucket, tmp_path):
    with pytest.raises(FileNotFoundError, match="no such object"):
        storage.download(storage.join(s3_bucket, "absent.pt"), tmp_path / "cache", progress=False)


# ------------------------------------------------------------------ check_writable

def test_check_writable_where_it_can_write(root):
    storage.check_writable(root)
    assert storage.kind(storage.join(root, ".write-check")) == "missing"  # the probe is gone
    storage.write_text(storage.join(root, "kept.txt"), "x")
    storage.check_writable(root)
    assert [entry.name for entry in storage.listing(root, recursive=True)] == ["kept.txt"]


def test_check_writable_leaves_no_folder_it_made(root):
    """'A folder the probe had to create is removed again': nothing stays of a refused study."""
    uri = storage.join(root, "studies", "demo")
    storage.check_writable(uri)
    assert storage.kind(uri) == "missing"
    assert storage.listing(root, recursive=True) == []


def test_check_writable_on_a_local_file(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(CxrError, match=rf"^--storage {blocker}/demo: cannot write there \(.*\); pick a folder"):
        storage.check_writable(f"{blocker}/demo")


def test_check_writable_on_a_bucket_that_does_not_exist(s3_bucket):
    uri = f"s3://{unique_bucket_name('missing')}/studies/demo"
    started = time.monotonic()
    with pytest.raises(CxrError) as error:
        storage.check_writable(uri, flag="--storage")
    message = str(error.value)
    assert message.startswith(f"--storage {uri}: cannot write there (")
    assert re.search(r"check .*the bucket exists", message), message
    assert time.monotonic() - started < 10


def test_check_writable_with_refused_credentials(s3_bucket, s3_server):
    uri = storage.join(s3_bucket, "studies", "demo")
    with s3_server.auth_enforced():
        started = time.monotonic()
        with pytest.raises(CxrError) as error:
            storage.check_writable(uri)
        elapsed = time.monotonic() - started
    message = str(error.value)
    assert message.startswith(f"--storage {uri}: cannot write there (")
    assert "ACCESS_DENIED" in message and "credentials" in message and "AWS_ACCESS_KEY_ID" in message
    assert elapsed < 10, f"refused credentials took {elapsed:.1f} s to report"
    storage.check_writable(uri)  # the server accepts them again after the block


def test_check_writable_without_credentials(s3_bucket, monkeypatch):
    """No AWS credentials at all. The SDK would then ask the EC2 metadata endpoint; measured here (no
    network): 0.06 s with or without AWS_EC2_METADATA_DISABLED, so the flag only guards machines
    where 169.254.169.254 swallows packets. moto refuses the unsigned write (ACCESS_DENIED on
    PutObject), and the error names the location."""
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/credentials")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/config")
    uri = storage.join(s3_bucket, "studies", "demo")
    started = time.monotonic()
    with pytest.raises(CxrError) as error:
        storage.check_writable(uri)
    elapsed = time.monotonic() - started
    assert str(error.value).startswith(f"--storage {uri}: cannot write there (")
    assert elapsed < 10, f"missing credentials took {elapsed:.1f} s to report"


def test_server_that_enforces_authentication_from_the_start(tmp_path, monkeypatch):
    """LocalS3Server(enforce_auth=True): the dummy credentials are refused from the first request."""
    with LocalS3Server(log_file=tmp_path / "moto.log", enforce_auth=True) as server:
        for key, value in server.env().items():
            monkeypatch.setenv(key, value)
        with pytest.raises(CxrError, match=r"^--storage s3://cxr/studies: cannot write there"):
            storage.check_writable("s3://cxr/studies")
        with pytest.raises(OSError):
            server.create_bucket("cxr")
        server.set_auth(False)
        server.create_bucket("cxr")
        storage.check_writable("s3://cxr/studies")
        assert server.env()["AWS_ACCESS_KEY_ID"] == CREDENTIALS["AWS_ACCESS_KEY_ID"]
