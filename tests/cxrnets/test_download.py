"""Tests for cxrnets.download: archives in the sources' real layouts, a download from a local HTTP server,
and what is left behind when a download or an extraction fails (nothing half-written)."""

from __future__ import annotations

import functools
import http.server
import shutil
import threading
import types
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from cxrnets import download
from cxrnets.data import load_dataset
from cxrnets.errors import CxrError


def zip_folder(folder: Path, archive: Path, wrapped: bool = True) -> Path:
    """`folder` zipped as a source ships it: its own name as the archive's top folder (`wrapped`), or its
    contents at the top."""
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zipped:
        for path in sorted(folder.rglob("*")):
            zipped.write(path, path.relative_to(folder.parent if wrapped else folder).as_posix())
    return archive


def leftovers(out: Path) -> list[str]:
    """What a failed or interrupted run left in --out."""
    return sorted(p.name for p in out.iterdir()) if out.exists() else []


@pytest.fixture
def github_archive(make_chestxray, tmp_path: Path) -> Path:
    """GitHub's archive of covid-chestxray-dataset: covid-chestxray-dataset-master/{metadata.csv,images/,...}."""
    inner = make_chestxray(tmp_path / "src" / "covid-chestxray-dataset-master")
    (inner / "README.md").write_text("covid-chestxray-dataset (test copy)\n")
    return zip_folder(inner, tmp_path / "master.zip")


class _Server(http.server.ThreadingHTTPServer):
    truncate = False  # send the full Content-Length but only half the bytes, then close


class _Handler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass

    def copyfile(self, source, outputfile) -> None:
        if not self.server.truncate:
            return super().copyfile(source, outputfile)
        data = source.read()
        outputfile.write(data[: len(data) // 2])
        self.close_connection = True


@pytest.fixture
def http_server(tmp_path: Path) -> Iterator[tuple[_Server, Path]]:
    """An HTTP server on 127.0.0.1 serving the folder it returns."""
    served = tmp_path / "served"
    served.mkdir()
    server = _Server(("127.0.0.1", 0), functools.partial(_Handler, directory=str(served)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server, served
    server.shutdown()
    server.server_close()


def url_of(server: _Server, name: str) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}/{name}"


def test_github_archive_gives_the_data_root(github_archive: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "data"
    download.main(["--dataset", "covid-chestxray-3class", "--archive", str(github_archive), "--out", str(out)])
    root = out / "covid-chestxray-dataset"
    assert f"pass --data-root {root}" in capsys.readouterr().out
    assert (root / "README.md").is_file()  # the dataset's folder whole, without the archive's wrapper
    assert len(load_dataset("covid-chestxray-3class", root).frame) == 24
    assert leftovers(out) == ["covid-chestxray-dataset"]
    assert github_archive.is_file()  # the user's archive stays


@pytest.mark.parametrize("dataset", ["covid-radiography", "covid-radiography-3class", "covid-pneumonia-normal"])
def test_kaggle_archives_by_hand(dataset: str, make_radiography, make_pneumonia_normal, tmp_path: Path) -> None:
    """Kaggle's archives: the radiography database inside COVID-19_Radiography_Dataset/ with metadata
    spreadsheets beside the class folders (its 3-class view lands in the same folder); the PA dataset's class
    folders at the top."""
    if dataset.startswith("covid-radiography"):
        inner = make_radiography(tmp_path / "src" / "COVID-19_Radiography_Dataset")
        (inner / "COVID.metadata.xlsx").write_bytes(b"xlsx")
        archive = zip_folder(inner, tmp_path / "archive.zip")
    else:
        inner = make_pneumonia_normal(tmp_path / "src" / "archive")
        archive = zip_folder(inner, tmp_path / "archive.zip", wrapped=False)
    root, index = download.fetch(dataset, tmp_path / "data", archive=archive)
    assert root == tmp_path / "data" / dataset.removesuffix("-3class")
    assert len(index.frame) == len(load_dataset(dataset, inner).frame)
    assert not any("masks" in relpath for relpath in index.frame["relpath"])


def test_download_once_then_found_in_place(github_archive: Path, http_server, tmp_path: Path, caplog) -> None:
    server, served = http_server
    shutil.copy(github_archive, served / "master.zip")
    out = tmp_path / "data"
    root, index = download.fetch("covid-chestxray", out, url=url_of(server, "master.zip"))
    assert root == out / "covid-chestxray-dataset" and len(index.frame) == 25
    assert leftovers(out) == ["covid-chestxray-dataset"]  # the downloaded zip went after extraction
    # A second run finds the dataset and downloads nothing (the URL now answers nothing).
    caplog.set_level("INFO")
    again, _ = download.fetch("covid-chestxray", out, url="http://127.0.0.1:1/master.zip")
    assert again == root and "already at" in caplog.text


@pytest.mark.parametrize("name", ["unreachable", "missing"])
def test_failed_download_names_the_url_and_leaves_nothing(name: str, http_server, tmp_path: Path) -> None:
    server, _ = http_server
    url = "http://127.0.0.1:1/master.zip" if name == "unreachable" else url_of(server, "nothere.zip")
    out = tmp_path / "data"
    with pytest.raises(SystemExit) as stop:
        download.main(["--dataset", "covid-chestxray", "--out", str(out), "--url", url])
    message = str(stop.value)
    assert f"could not download {url}" in message and "--archive FILE" in message
    assert "github.com/ieee8023/covid-chestxray-dataset" in message  # where to get it by hand
    if name == "missing":
        assert "HTTP 404" in message
    assert leftovers(out) == []


def test_truncated_download_is_removed_and_fetched_again(github_archive: Path, http_server, tmp_path: Path) -> None:
    server, served = http_server
    shutil.copy(github_archive, served / "master.zip")
    out = tmp_path / "data"
    server.truncate = True
    with pytest.raises(CxrError, match=r"download of .*master.zip stopped at [\d,]+ of [\d,]+ bytes"):
        download.fetch("covid-chestxray", out, url=url_of(server, "master.zip"))
    assert leftovers(out) == []
    server.truncate = False
    (served / "page.zip").write_text("<html>please sign in</html>")  # a proxy's page where the zip should be
    with pytest.raises(CxrError, match=r"page.zip sent is no usable archive.*not a zip.*removed"):
        download.fetch("covid-chestxray", out, url=url_of(server, "page.zip"))
    assert leftovers(out) == []
    root, index = download.fetch("covid-chestxray", out, url=url_of(server, "master.zip"))
    assert len(index.frame) == 25 and leftovers(out) == ["covid-chestxray-dataset"]


def test_interrupted_extraction_keeps_the_download_for_the_next_run(github_archive: Path, http_server,
                                                                   tmp_path: Path, monkeypatch, capsys) -> None:
    server, served = http_server
    shutil.copy(github_archive, served / "master.zip")
    out = tmp_path / "data"
    extract_member = zipfile.ZipFile.extract
    calls = []

    def interrupted(self, member, path=None, pwd=None):
        calls.append(member)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return extract_member(self, member, path, pwd)

    monkeypatch.setattr(zipfile.ZipFile, "extract", interrupted)
    with pytest.raises(SystemExit) as stop:
        download.main(["--dataset", "covid-chestxray", "--out", str(out), "--url", url_of(server, "master.zip")])
    assert stop.value.code == 130 and "interrupted" in capsys.readouterr().err
    assert leftovers(out) == ["covid-chestxray-dataset.zip"]  # complete; no half-extracted folder
    monkeypatch.setattr(zipfile.ZipFile, "extract", extract_member)
    root, index = download.fetch("covid-chestxray", out, url="http://127.0.0.1:1/master.zip")  # no download
    assert len(index.frame) == 25 and leftovers(out) == ["covid-chestxray-dataset"]


def test_bad_archives(github_archive: Path, tmp_path: Path) -> None:
    out = tmp_path / "data"
    text = tmp_path / "page.html"
    text.write_text("<html>sign in</html>")
    with pytest.raises(CxrError, match=r"page.html: not a zip archive"):
        download.fetch("covid-chestxray", out, archive=text)
    cut = tmp_path / "cut.zip"  # a browser's download that stopped early
    cut.write_bytes(github_archive.read_bytes()[:20_000])
    with pytest.raises(CxrError, match=r"cut.zip: a zip archive cut short \(.*\): download it again"):
        download.fetch("covid-chestxray", out, archive=cut)
    with pytest.raises(CxrError, match=r"nothere.zip: no such file"):
        download.fetch("covid-chestxray", out, archive=tmp_path / "nothere.zip")
    damaged = tmp_path / "damaged.zip"
    data = bytearray(github_archive.read_bytes())
    data[len(data) // 3: len(data) // 3 + 4096] = bytes(4096)  # inside the images' compressed bytes
    damaged.write_bytes(data)
    with pytest.raises(CxrError, match=r"damaged.zip: the archive is damaged"):
        download.fetch("covid-chestxray", out, archive=damaged)
    other = zip_folder(github_archive.parent / "src", tmp_path / "other.zip")  # a wrapper too many: found
    assert download.fetch("covid-chestxray", out, archive=other)[0] == out / "covid-chestxray-dataset"
    shutil.rmtree(out)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no dataset here")
    with pytest.raises(CxrError, match=r"empty.zip: holds no covid-chestxray dataset.*metadata.csv"):
        download.fetch("covid-chestxray", out, archive=zip_folder(tmp_path / "empty", tmp_path / "empty.zip"))
    assert leftovers(out) == []
    assert github_archive.is_file() and damaged.is_file()


def test_an_extracted_folder_as_archive_is_pointed_at_its_data_root(github_archive: Path, tmp_path: Path) -> None:
    inner = github_archive.parent / "src" / "covid-chestxray-dataset-master"
    with pytest.raises(CxrError, match=rf"a folder, not a zip; the dataset in it needs no download: pass "
                                       rf"--data-root {inner} to the other commands"):
        download.fetch("covid-chestxray", tmp_path / "data", archive=inner.parent)
    with pytest.raises(CxrError, match=r"a folder, not a zip; and it holds no covid-radiography dataset"):
        download.fetch("covid-radiography", tmp_path / "data", archive=inner.parent)
    assert leftovers(tmp_path / "data") == []


def test_archive_larger_than_the_disk(github_archive: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(download.shutil, "disk_usage", lambda path: types.SimpleNamespace(free=1000))
    with pytest.raises(CxrError, match=r"unpacks to 0.00 GB but .* has 0.00 GB free.*--out"):
        download.fetch("covid-chestxray", tmp_path / "data", archive=github_archive)
    assert leftovers(tmp_path / "data") == []


def test_an_archive_for_a_dataset_already_in_place_is_refused_saying_what_to_do(github_archive: Path, tmp_path: Path,
                                                                                capsys) -> None:
    """A user updating to a new release passes its zip: the folder of the old one was kept, and the command said
    "already at ... nothing downloaded", as if it had done what was asked."""
    out = tmp_path / "data"
    root, _ = download.fetch("covid-chestxray", out, archive=github_archive)
    before = sorted(path.relative_to(root) for path in root.rglob("*"))
    with pytest.raises(SystemExit, match=rf"^error: --archive {github_archive}: not extracted, since "
                                         rf"{root} already holds covid-chestxray; to replace it with the "
                                         rf"archive's, remove or rename {root} and run this again, or pass "
                                         rf"another --out$"):
        download.main(["--dataset", "covid-chestxray", "--archive", str(github_archive), "--out", str(out)])
    assert "pass --data-root" not in capsys.readouterr().out
    assert sorted(path.relative_to(root) for path in root.rglob("*")) == before
    assert leftovers(out) == ["covid-chestxray-dataset"]


def test_folder_in_the_way_is_refused(tmp_path: Path) -> None:
    (tmp_path / "data" / "covid-radiography").mkdir(parents=True)
    with pytest.raises(CxrError, match=r"covid-radiography exists and holds no covid-radiography "
                                                r"dataset.*remove it, or choose another --out"):
        download.fetch("covid-radiography", tmp_path / "data")


def test_kaggle_unreachable_says_how_to_get_it(tmp_path: Path, monkeypatch) -> None:
    """Through a proxy that refuses (so that no machine reaches Kaggle in this test): the error says first that
    Kaggle cannot be reached, then names the dataset's page, --archive and the token Kaggle needs, and nothing is
    left."""
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
        monkeypatch.setenv(name, "http://127.0.0.1:1")
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("KAGGLEHUB_CACHE", str(tmp_path / "kagglehub"))
    out = tmp_path / "data"
    with pytest.raises(CxrError) as error:
        download.fetch("covid-radiography", out)
    message = str(error.value)
    assert message.startswith("this machine cannot reach Kaggle to download "
                              "tawsifurrahman/covid19-radiography-database (ProxyError")  # no request left it
    assert ("on a machine that is online, download its archive from "
            "https://www.kaggle.com/datasets/tawsifurrahman/covid19-radiography-database and pass it as --archive "
            "FILE") in message
    assert message.index("--archive FILE") < message.index("API token")
    assert leftovers(out) == []


def test_kaggle_name_that_does_not_resolve_says_kaggle_cannot_be_reached(tmp_path: Path, monkeypatch) -> None:
    """Offline, the name api.kaggle.com does not resolve: requests raises its ConnectionError from the socket's."""
    import socket

    import kagglehub
    import requests

    def offline(*args, **kwargs):
        try:
            raise socket.gaierror(-3, "Temporary failure in name resolution")
        except socket.gaierror as error:
            raise requests.ConnectionError("Failed to resolve 'api.kaggle.com'") from error

    monkeypatch.setattr(kagglehub, "dataset_download", offline)
    with pytest.raises(CxrError, match=r"^this machine cannot reach Kaggle to download .*\(ConnectionError: Failed "
                                       r"to resolve 'api.kaggle.com'\): on a machine that is online, .*--archive FILE"):
        download.fetch("covid-radiography", tmp_path / "data")


def test_kaggle_refusing_the_download_leads_with_the_token(tmp_path: Path, monkeypatch) -> None:
    """Kaggle reached but the download refused (no token, terms not accepted): the token comes first."""
    import kagglehub

    def refused(*args, **kwargs):
        raise PermissionError("401 Client Error: Unauthorized")

    monkeypatch.setattr(kagglehub, "dataset_download", refused)
    with pytest.raises(CxrError) as error:
        download.fetch("covid-radiography", tmp_path / "data")
    message = str(error.value)
    assert message.startswith("the Kaggle download of tawsifurrahman/covid19-radiography-database failed "
                              "(PermissionError: 401 Client Error: Unauthorized). Kaggle needs an API token")
    assert "--archive FILE" in message and "cannot reach" not in message


def test_unwritable_out_is_named(github_archive: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("a file where --out's folder would go")
    with pytest.raises(CxrError, match=r"--out: cannot write in"):
        download.fetch("covid-chestxray", blocker / "data", archive=github_archive)
