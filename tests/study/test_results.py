"""study.results: what the driver records of each trial's end (ResultsTable, fed stand-in trials: no Ray)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from study import storage
from study.results import ResultsTable, read_trial_events

FOLDER = "aaaa0001_d_alexnet_sgd"


@pytest.mark.parametrize("where", ["local", "s3"])
def test_a_trial_that_completes_after_failing_keeps_its_tracebacks_but_no_error_txt(where, tmp_path, request):
    """A trial that a resume ran again to its end kept its old error.txt and error.pkl, which say it failed. Its
    tracebacks stay, apart; Tune's files go from the study's folder and from where Tune stages them (its next
    upload would bring them back)."""
    study_uri = (request.getfixturevalue("s3_bucket") + "/studies/demo" if where == "s3"
                 else str(tmp_path / "studies" / "demo"))
    staged = tmp_path / "staged" / FOLDER
    staged.mkdir(parents=True)
    (staged / "error.txt").write_text("Failure # 2: RuntimeError: injected failure at epoch 2\n")
    (staged / "error.pkl").write_bytes(b"pickled")
    stored = storage.join(study_uri, FOLDER)
    storage.write_text(storage.join(stored, "error.txt"), "Failure # 1: RuntimeError: injected failure at epoch 2\n")
    storage.write_bytes(storage.join(stored, "error.pkl"), b"pickled")
    storage.write_text(storage.join(stored, "result.json"), "{}\n")
    path = stored.removeprefix("s3://")  # as Tune gives a trial's path on a bucket: no scheme
    trial = SimpleNamespace(trial_id="aaaa0001", local_path=str(staged), path=path)

    ResultsTable(study_uri).on_trial_complete(3, [], trial)

    assert sorted(entry.name for entry in storage.listing(stored)) == ["recovered-errors.txt", "result.json"]
    assert storage.read_text(storage.join(stored, "recovered-errors.txt")).startswith("Failure # 1")
    assert sorted(path.name for path in staged.iterdir()) == ["recovered-errors.txt"]
    assert read_trial_events(study_uri)["event"].tolist() == ["completed"]


def test_a_trial_that_completes_without_failing_gets_no_file(tmp_path):
    staged = tmp_path / "staged" / FOLDER
    staged.mkdir(parents=True)
    stored = tmp_path / "studies" / "demo" / FOLDER
    trial = SimpleNamespace(trial_id="aaaa0001", local_path=str(staged), path=str(stored))
    ResultsTable(str(tmp_path / "studies" / "demo")).on_trial_complete(3, [], trial)
    assert list(staged.iterdir()) == [] and not stored.exists()
