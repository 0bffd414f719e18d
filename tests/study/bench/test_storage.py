"""study.bench.storage: the storage part's accounting of the bytes a study writes and leaves."""

from __future__ import annotations

from pathlib import Path

from study.bench import storage as bench_storage


def test_storage_kinds_and_the_written_bytes(tmp_path: Path) -> None:
    """The storage part's accounting on a folder it watches: weights versions each count, a full state
    counts once at its largest size, deleted files stay counted."""
    study = tmp_path / "study"
    (study / "weights").mkdir(parents=True)
    (study / "t1_x" / "checkpoint_000000").mkdir(parents=True)
    (study / "results").mkdir()
    watch = bench_storage.FolderWatch(str(study))
    (study / "weights" / "t1.pt").write_bytes(b"w" * 100)
    (study / "weights" / "t1.pt.tmp").write_bytes(b"w" * 7)  # being written: not counted
    (study / "t1_x" / "checkpoint_000000" / "state.pt").write_bytes(b"s" * 150)  # half written
    watch.poll()
    (study / "t1_x" / "checkpoint_000000" / "state.pt").write_bytes(b"s" * 300)
    (study / "weights" / "t1.pt.tmp").replace(study / "weights" / "t1.pt")  # a new best
    (study / "results" / "part-1.parquet").write_bytes(b"r" * 10)
    (study / "t1_x" / "events.out.tfevents.1").write_bytes(b"e" * 20)
    (study / "t1_x" / "params.json").write_bytes(b"p" * 5)
    watch.poll()
    (study / "t1_x" / "checkpoint_000000" / "state.pt").unlink()  # the trial ended: its full state goes
    watch.poll()
    assert watch.written() == {"weights": 107, "checkpoints": 300, "results": 10, "tensorboard": 20, "other": 5}
    assert watch.peak_bytes == 7 + 300 + 10 + 20 + 5
    assert bench_storage.bytes_by_kind(str(study)) == {"weights": 7, "checkpoints": 0, "results": 10, "tensorboard": 20,
                                               "other": 5}


def test_weights_written_counts_the_trainables_writes_at_the_trials_size() -> None:
    """What polling misses (weights written and deleted within a poll), counted from the results: the newest
    strict improvement of the study metric is written at the trial's last epoch, at each rung and each full
    state; a diverged epoch or a NaN is no improvement."""
    import pandas as pd

    from study.checkpoints import CheckpointPolicy

    nan = float("nan")
    results = pd.DataFrame({
        "trial_id": ["a", "a", "a", "b", "b", "c", "d"] + ["e"] * 6,
        "training_iteration": [1, 2, 3, 1, 2, 1, 1] + [1, 2, 3, 4, 5, 6],
        "val/f1_macro": [0.2, 0.1, 0.3, nan, 0.5, 0.0, 0.4] + [0.1, 0.2, 0.3, 0.35, 0.4, 0.4],
        "diverged": [0, 0, 0, 0, 0, 1, 0] + [0] * 6,
        "config/model": ["alexnet"] * 5 + ["vgg11", "vgg11"] + ["alexnet"] * 6})
    policy = CheckpointPolicy(every=4, rung_epochs=(2,))
    total, writes = bench_storage.weights_written(results, "val/f1_macro", "max", {"a": 100, "d": 70}, policy, 6)
    # e improves at every epoch but the last: written at its rung (2), its full state (4) and epoch 5, its last
    # improvement, at its last epoch (6)
    assert writes == {"a": 2, "b": 1, "c": 0, "d": 1, "e": 3}
    assert total == 2 * 100 + 1 * 100 + 0 + 1 * 70 + 3 * 100  # b and e never seen: their model's size seen
    assert bench_storage.weights_written(results, "val/loss", "min", {}, policy, 6) == (0, {})


def test_weights_written_counts_a_tied_epoch_of_a_better_tie_break_as_a_new_best() -> None:
    """As the trainable notes its best (study.tables.improves): on the constant prediction (0.279) for three
    epochs while the validation loss falls, epoch 3 is a new best, written at the last epoch after the rung's
    write of epoch 2; without a tie-break only epoch 1's, at the rung."""
    import pandas as pd

    from study.checkpoints import CheckpointPolicy

    results = pd.DataFrame({"trial_id": "a", "training_iteration": [1, 2, 3], "val/f1_macro": [0.279] * 3,
                            "val/loss": [1.30, 1.10, 0.90], "diverged": 0, "config/model": "alexnet"})
    policy = CheckpointPolicy(every=4, rung_epochs=(2,))
    assert bench_storage.weights_written(results, "val/f1_macro", "max", {"a": 100}, policy, 6,
                                         tie_break="val/loss") == (200, {"a": 2})
    assert bench_storage.weights_written(results, "val/f1_macro", "max", {"a": 100}, policy, 6) == (100, {"a": 1})
