"""study.bench.trainable: the timed epochs of the trainable start warm."""

from __future__ import annotations

from types import SimpleNamespace

from study.bench import trainable


def test_the_warm_up_trains_both_runs_and_evaluates_the_trainable(monkeypatch) -> None:
    """The trainable's epoch evaluates as well as trains: with --compile on CUDA, compiling the model's eval mode
    would otherwise fall in its first timed epoch (and first-call allocations, on any device)."""
    calls = []
    monkeypatch.setattr(trainable, "bare_epoch",
                        lambda run, batches, limit=None: calls.append((run.name, "train", limit)))

    def run(name: str) -> SimpleNamespace:
        return SimpleNamespace(name=name, train_batches=[], evaluate_split=lambda split: calls.append((name, split)))

    trainable.warm_up(run("bare"), run("trainable"))
    assert calls == [("bare", "train", 2), ("trainable", "train", 2), ("trainable", "val")]
