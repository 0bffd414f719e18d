"""Which trials each (dataset, model) cell puts forward for evaluation, and what the notes say of the others."""

from __future__ import annotations

from types import SimpleNamespace

import pandas as pd
import pytest

from cxrnets.errors import CxrError, DivergedError
from study.analysis import selection as selection_module
from study.analysis.selection import Analysis, candidates, select_and_evaluate
from study.checkpoints import BestWeights
from study.tables import trial_table

METRIC = "val/f1_macro"
NO_EVENTS = pd.DataFrame(columns=["trial_id", "event", "timestamp", "error_file"])


def weights(trial_id: str, epoch: int, value: float) -> BestWeights:
    return BestWeights(trial_id, epoch, METRIC, value, 1, f"/study/weights/{trial_id}.pt")


def ranked(results: pd.DataFrame, written: dict[str, BestWeights], keep: int | str = 1, top_k: int = 1,
           max_epochs: int = 2, tie_break: str | None = "val/loss", uri: str = "/study") -> tuple[list, list[str]]:
    """candidates() of one cell, its trials as study.analyze prepares them; (ranked, notes)."""
    study = SimpleNamespace(results=results, weights=written, uri=uri,
                            settings=SimpleNamespace(keep=keep, metric=METRIC, tie_break=tie_break))
    trials = trial_table(results, NO_EVENTS, METRIC, "max", max_epochs, tie_break=tie_break)
    trials = trials.assign(_best=trials[METRIC], _best_epoch=trials["best_epoch"])
    notes: list[str] = []
    return candidates(study, trials, METRIC, "max", notes, top_k), notes


def test_a_cell_whose_trials_diverged_says_so_not_that_keep_deleted_their_weights():
    """Both trials diverged in their first epoch (the placeholder 0.0): the note said 'no best weights (best 0.000
    ...) (study.run --keep)'."""
    results = pd.DataFrame({"trial_id": ["a1", "a2"], "trial_name": ["alexnet_a1", "alexnet_a2"],
                            "training_iteration": [1, 1], "epoch": [1, 1], "config/model": "alexnet",
                            METRIC: [0.0, 0.0], "diverged": [1, 1]})
    chosen, notes = ranked(results, {})
    assert chosen == []
    assert notes == [f"trial {t} (alexnet_{t}): diverged (NaN loss) at epoch 1, before writing weights; not evaluated"
                     for t in ("a1", "a2")]


def test_trials_tied_on_the_metric_are_ranked_by_the_tie_break_at_the_weights_epoch():
    """Two trials on the constant prediction (0.279): the one with the lower validation loss at the epoch of its
    weights goes first (it went by the random trial id), as the study's ASHA and --keep rank them."""
    results = pd.DataFrame({"trial_id": ["0aaa", "0aaa", "ffff", "ffff"], "trial_name": ["a", "a", "b", "b"],
                            "training_iteration": [1, 2, 1, 2], "epoch": [1, 2, 1, 2], "config/model": "alexnet",
                            METRIC: [0.279] * 4, "val/loss": [1.30, 1.29, 1.05, 0.80], "diverged": 0})
    written = {trial_id: weights(trial_id, 1, 0.279) for trial_id in ("0aaa", "ffff")}
    chosen, notes = ranked(results, written)
    assert [(c.trial_id, c.epoch) for c in chosen] == [("ffff", 1), ("0aaa", 1)] and notes == []
    assert [c.trial_id for c in ranked(results, written, tie_break=None)[0]] == ["0aaa", "ffff"]


def two_trials() -> pd.DataFrame:
    """Trial t1 best (0.5), t2 behind (0.4), each of one epoch."""
    return pd.DataFrame({"trial_id": ["t1", "t2"], "trial_name": ["n1", "n2"], "training_iteration": [1, 1],
                         "epoch": [1, 1], "config/model": "alexnet", METRIC: [0.5, 0.4], "val/loss": [1.0, 1.1],
                         "diverged": 0})


def test_missing_or_unreadable_weights_are_called_so_and_only_keeps_deletions_blamed_on_keep(tmp_path):
    """The note blamed --keep whatever the cause, and read "each model's all best trials" under --keep all."""
    _, notes = ranked(two_trials(), {}, keep="all", uri=str(tmp_path))
    assert notes == [f"trial {t} (n{t[1]}): best {METRIC} {v} at epoch 1, but its best weights "
                     f"{tmp_path}/weights/{t}.pt are missing (--keep all keeps every trial's); skipped"
                     for t, v in (("t1", "0.500"), ("t2", "0.400"))]
    _, notes = ranked(two_trials(), {"t2": weights("t2", 1, 0.4)}, keep=1, uri=str(tmp_path))
    assert notes == [f"trial t1 (n1): best {METRIC} 0.500 at epoch 1, but its best weights {tmp_path}/weights/t1.pt "
                     "are missing (--keep 1 keeps those of each model's best trial); skipped"]
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "t1.pt").write_bytes(b"weights")
    (tmp_path / "weights" / "t1.json").write_text("{not json")
    _, notes = ranked(two_trials(), {"t2": weights("t2", 1, 0.4)}, keep=1, uri=str(tmp_path))
    assert notes == [f"trial t1 (n1): best {METRIC} 0.500 at epoch 1, but the sidecar of its best weights, "
                     f"{tmp_path}/weights/t1.json, is unreadable; skipped"]
    (tmp_path / "weights" / "t1.json").unlink()
    _, notes = ranked(two_trials(), {"t2": weights("t2", 1, 0.4)}, keep=1, uri=str(tmp_path))
    assert notes == [f"trial t1 (n1): best {METRIC} 0.500 at epoch 1, but its best weights {tmp_path}/weights/t1.pt "
                     f"have no sidecar ({tmp_path}/weights/t1.json: a deletion interrupted between the two, or a copy "
                     "that left it out); skipped"]
    _, notes = ranked(two_trials(), {"t1": weights("t1", 1, 0.5)}, keep=1, top_k=2, uri=str(tmp_path))
    assert notes == [f"trial t2 (n2): no best weights (best {METRIC} 0.400 at epoch 1); skipped. The study keeps "
                     f"the weights of each model's best trial on {METRIC} only (study.run --keep 1)"]


def analysed(results: pd.DataFrame, written: dict[str, BestWeights], failures: dict[str, Exception],
             monkeypatch, top_k: int = 1, events: pd.DataFrame = NO_EVENTS) -> Analysis:
    """select_and_evaluate over one cell whose evaluations raise `failures` (trial id -> error) and otherwise
    return a stand-in evaluation; `events`: how trials ended, as the study recorded it."""
    settings = SimpleNamespace(keep="all", metric=METRIC, tie_break="val/loss", data_roots={"d": "/data"})
    study = SimpleNamespace(results=results, weights=written, uri="/study", settings=settings)
    trials = trial_table(results, events, METRIC, "max", 2, tie_break="val/loss")

    def evaluate(uri, data, split, trial_id, trial_config=None, sidecar=None):
        if trial_id in failures:
            raise failures[trial_id]
        return SimpleNamespace(trial_id=trial_id, epoch=1, metrics={"test/f1_macro": 0.5}, seconds=0.1)

    monkeypatch.setattr(selection_module, "evaluate_checkpoint", evaluate)
    analysis = Analysis(study, METRIC, "max", "test", top_k, trials)
    select_and_evaluate(analysis, SimpleNamespace(check_splits=lambda configs: None, prefetch=lambda uris: None))
    return analysis


def test_a_chosen_trial_whose_outputs_are_not_finite_on_test_fails_its_cell_without_replacement(monkeypatch):
    """t1, chosen on validation, gives NaN outputs on the test images: taking t2 instead would choose the cell's
    model by its test figures. The cell is reported as failed, naming the weights and the reason."""
    written = {t: weights(t, 1, v) for t, v in (("t1", 0.5), ("t2", 0.4))}
    diverged = DivergedError("the model's outputs on evaluation are NaN or infinite (loss nan)")
    analysis = analysed(two_trials(), written, {"t1": diverged}, monkeypatch)
    assert analysis.selected == []
    [failed] = analysis.failed
    assert (failed.dataset, failed.model, failed.rank, failed.candidate.trial_id) == ("d", "alexnet", 1, "t1")
    note = "\n".join(analysis.notes)
    assert ("d / alexnet: trial t1 (n1), chosen on validation, failed on the test split: /study/weights/t1.pt: the "
            "model's outputs on evaluation are NaN or infinite (loss nan)") in note
    assert "not replaced by the next trial" in note and "takes its place" not in note


@pytest.mark.parametrize("error", [CxrError("/study/weights/t1.pt: not a readable checkpoint"),
                                   FileNotFoundError("/study/weights/t1.pt")])
def test_weights_that_cannot_be_evaluated_at_all_are_still_replaced_by_the_next_trial(monkeypatch, error):
    written = {t: weights(t, 1, v) for t, v in (("t1", 0.5), ("t2", 0.4))}
    analysis = analysed(two_trials(), written, {"t1": error}, monkeypatch)
    assert [c.candidate.trial_id for c in analysis.selected] == ["t2"] and analysis.failed == []
    assert any(note.endswith("the next best trial of its cell takes its place") for note in analysis.notes)


def test_a_skipped_trial_with_no_trial_left_behind_it_is_not_said_to_be_replaced(monkeypatch):
    written = {t: weights(t, 1, v) for t, v in (("t1", 0.5), ("t2", 0.4))}
    error = CxrError("/study/weights/t2.pt: not a readable checkpoint")
    analysis = analysed(two_trials(), written, {"t2": error}, monkeypatch, top_k=2)
    assert [c.candidate.trial_id for c in analysis.selected] == ["t1"]
    [skipped] = [note for note in analysis.notes if "t2.pt" in note]
    assert skipped.endswith("skipped, and no further trial of its cell is left to take its place"), skipped


def test_a_chosen_trial_that_failed_or_is_unfinished_is_noted(monkeypatch, caplog):
    """t1 (best on validation) errored in the study, t2 never ended: each was chosen and evaluated on test with no
    word; a resumed study retries or finishes them, and may then choose otherwise."""
    written = {t: weights(t, 1, v) for t, v in (("t1", 0.5), ("t2", 0.4))}
    results = two_trials().assign(**{"config/model": ["alexnet", "vgg11"]})
    events = pd.DataFrame({"trial_id": ["t1"], "event": ["error"], "timestamp": [0.0], "error_file": [None]})
    with caplog.at_level("WARNING", logger="study.analyze"):
        analysis = analysed(results, written, {}, monkeypatch, events=events)
    assert [c.candidate.trial_id for c in analysis.selected] == ["t1", "t2"]
    assert [note for note in analysis.notes if "chosen on validation" in note] == [
        "d / alexnet: trial t1 (n1), chosen on validation, failed in the study (Tune recorded an error): its figures "
        "are of its best weights before the error; python -m study.run --resume retries it, and the study may then "
        "choose another trial",
        "d / vgg11: trial t2 (n2), chosen on validation, is unfinished (still running, or interrupted): its figures "
        "are of its best weights so far (epoch 1); when it ends, the study may choose another trial"]
    assert caplog.text.count("chosen on validation") == 2


def test_the_progress_counts_a_replacement_only_where_there_is_one(monkeypatch, caplog):
    """--top-k 2 of two trials, one unusable: the counter read [2/3] of two evaluations."""
    written = {t: weights(t, 1, v) for t, v in (("t1", 0.5), ("t2", 0.4))}
    with caplog.at_level("INFO", logger="study.analyze"):
        analysed(two_trials(), written, {"t1": CxrError("/study/weights/t1.pt: unreadable")}, monkeypatch, top_k=2)
    assert [m.split("]")[0] for m in caplog.messages if m.startswith("[")] == ["[1/2", "[2/2"]
    caplog.clear()
    three = pd.concat([two_trials(), two_trials().iloc[[1]].assign(trial_id="t3", trial_name="n3",
                                                                   **{METRIC: 0.3})])
    written["t3"] = weights("t3", 1, 0.3)
    with caplog.at_level("INFO", logger="study.analyze"):
        analysed(three, written, {"t1": CxrError("/study/weights/t1.pt: unreadable")}, monkeypatch, top_k=2)
    assert [m.split("]")[0] for m in caplog.messages if m.startswith("[")] == ["[1/2", "[2/3", "[3/3"]
