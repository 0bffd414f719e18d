"""Which trials each (dataset, model) cell puts forward for evaluation, and what the notes say of the others."""

from __future__ import annotations

from types import SimpleNamespace

import pandas as pd

from study.analysis.selection import candidates
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
