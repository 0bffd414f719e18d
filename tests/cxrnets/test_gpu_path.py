"""The GPU path (mixed precision, channels-last, torch.compile, pinned copies, deferred loss reads) leaves
CPU results exactly as they were: same metrics, same weights, bit for bit.

This machine has no GPU: these tests prove the CPU side only; the CUDA side runs where a GPU is lent
(`python -m study.bench --device cuda`).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from cxrnets.batches import Batches
from cxrnets.errors import DivergedError
from cxrnets.config import TrainConfig
from cxrnets.training import TrainingRun, evaluate, gpu_path, save_checkpoint, train_one_epoch

TIMING_KEYS = ("epoch_seconds", "images_per_second")


@pytest.fixture
def tiny_folder(make_folder) -> Path:
    return make_folder(classes={"dark": 60, "bright": 190}, per_class=8)


def tiny_config(root: Path, cache: Path, **overrides) -> TrainConfig:
    values = dict(dataset="folder", data_root=str(root), model="resnet50", image_size=32, batch_size=4, epochs=1,
                  cache_dir=str(cache), device="cpu")
    return TrainConfig(**{**values, **overrides})


def train(config: TrainConfig) -> tuple[TrainingRun, list[dict]]:
    run = TrainingRun(config)
    history = []
    for _ in range(config.epochs):
        metrics = run.train_epoch()
        history.append({k: v for k, v in metrics.items() if k not in TIMING_KEYS})
    return run, history


def test_gpu_path_options_are_inactive_on_cpu() -> None:
    config = TrainConfig(amp=True, channels_last=True, compile=True)
    assert gpu_path(config, torch.device("cpu")) == {"amp": None, "channels_last": False, "compile": False,
                                                     "pinned_memory": False}


def test_gpu_path_options_on_or_off_give_identical_cpu_runs(tiny_folder: Path, tmp_path: Path) -> None:
    """Two seeded runs, one with every GPU-path option on and one with all off: the same run, exactly."""
    on_run, on = train(tiny_config(tiny_folder, tmp_path, amp=True, channels_last=True, compile=True))
    off_run, off = train(tiny_config(tiny_folder, tmp_path, amp=False, channels_last=False, compile=False))
    assert on == off  # every metric, exactly
    assert on_run.forward is on_run.model  # compile ignored on CPU
    on_state, off_state = on_run.model.state_dict(), off_run.model.state_dict()
    assert on_state.keys() == off_state.keys()
    for key in on_state:
        assert torch.equal(on_state[key], off_state[key]), key
        assert on_state[key].is_contiguous(), key  # no channels-last weights on CPU


def test_checkpoint_carries_the_fp16_loss_scale(tiny_folder: Path, tmp_path: Path) -> None:
    """A resumed fp16 run goes on with the loss scale its scaler had learnt (CUDA's scaler, stood in for
    by the CPU one: the same class and state)."""
    config = tiny_config(tiny_folder, tmp_path)
    run = TrainingRun(config)
    run.scaler = torch.amp.GradScaler("cpu")
    run.scaler.scale(torch.ones(()))  # the scale exists once a loss has been scaled
    run.scaler.update(new_scale=512.0)
    save_checkpoint(run.checkpoint(), tmp_path / "state.pt")
    resumed = TrainingRun(config)
    resumed.scaler = torch.amp.GradScaler("cpu")
    resumed.restore(torch.load(tmp_path / "state.pt", weights_only=True))
    assert resumed.scaler.get_scale() == 512.0


def reference_train_one_epoch(model, batches, optimizer, loss_fn) -> float:
    """The loop as it was before the GPU path: read and check the loss at every step."""
    model.train()
    total_loss, images = 0.0, 0
    for inputs, targets in batches:
        loss = loss_fn(model(inputs), targets)
        if not torch.isfinite(loss):
            raise DivergedError(f"training diverged: loss became {loss.item()} after {images} images")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total_loss += loss.item() * len(inputs)
        images += len(inputs)
    return total_loss / max(images, 1)


def small_setup(seed: int = 0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (22, 3, 8, 8), dtype=np.uint8)
    targets = rng.integers(0, 3, 22).astype(np.int64)
    batches = Batches(images, targets, np.arange(22), 4, torch.device("cpu"), train=True, seed=seed)
    return model, optimizer, batches


@pytest.mark.parametrize("sync_every", [None, 1, 3, 100])
def test_deferred_loss_reads_match_the_per_step_loop(sync_every: int | None) -> None:
    model, optimizer, batches = small_setup()
    expected = reference_train_one_epoch(model, batches, optimizer, nn.CrossEntropyLoss())
    expected_state = {k: v.clone() for k, v in model.state_dict().items()}
    model, optimizer, batches = small_setup()
    result = train_one_epoch(model, batches, optimizer, nn.CrossEntropyLoss(), sync_every=sync_every)
    assert result["loss"] == expected and result["images"] == 22
    for key, value in model.state_dict().items():
        assert torch.equal(value, expected_state[key]), key


class NanAfter(nn.Module):
    """Cross-entropy that turns NaN from the `after`-th call on."""

    def __init__(self, after: int):
        super().__init__()
        self.calls, self.after, self.inner = 0, after, nn.CrossEntropyLoss()

    def forward(self, logits, targets):
        self.calls += 1
        loss = self.inner(logits, targets)
        return loss * float("nan") if self.calls > self.after else loss


@pytest.mark.parametrize("sync_every", [1, 4])
def test_deferred_reads_still_catch_divergence_and_name_the_batch(sync_every: int) -> None:
    model, optimizer, batches = small_setup()
    with pytest.raises(DivergedError, match=r"loss became nan after 8 images"):
        train_one_epoch(model, batches, optimizer, NanAfter(2), sync_every=sync_every)


def test_divergence_is_caught_before_the_update_on_cpu() -> None:
    model, optimizer, batches = small_setup()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(DivergedError, match="after 0 images"):
        train_one_epoch(model, batches, optimizer, NanAfter(0))
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_evaluate_matches_per_batch_reads() -> None:
    model, _, _ = small_setup()
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (10, 3, 8, 8), dtype=np.uint8)
    targets = rng.integers(0, 3, 10).astype(np.int64)
    batches = Batches(images, targets, np.arange(10), 4, torch.device("cpu"), train=False)
    loss, y_true, scores = evaluate(model, batches, nn.CrossEntropyLoss(), multilabel=False)
    model.eval()
    total, all_scores = 0.0, []
    with torch.no_grad():
        for inputs, batch_targets in batches:
            logits = model(inputs)
            total += nn.CrossEntropyLoss()(logits, batch_targets).item() * len(inputs)
            all_scores.append(torch.softmax(logits, dim=1).numpy())
    assert loss == pytest.approx(total / 10, rel=1e-6) and math.isfinite(loss)  # unweighted: the mean of means
    assert np.array_equal(y_true, targets)
    assert np.array_equal(scores, np.concatenate(all_scores))


def test_channels_last_batches_hold_the_same_values() -> None:
    rng = np.random.default_rng(2)
    images = rng.integers(0, 256, (6, 3, 9, 9), dtype=np.uint8)
    targets = np.arange(6, dtype=np.int64) % 2
    plain = list(Batches(images, targets, np.arange(6), 4, torch.device("cpu"), train=True, seed=3))
    last = list(Batches(images, targets, np.arange(6), 4, torch.device("cpu"), train=True, seed=3,
                        channels_last=True))
    for (a, ta), (b, tb) in zip(plain, last, strict=True):
        assert b.is_contiguous(memory_format=torch.channels_last)
        assert torch.equal(a, b) and torch.equal(ta, tb)


def reference_batches(images: np.ndarray, targets: np.ndarray, rows: np.ndarray, batch_size: int, seed: int):
    """Batches as first written: float conversion, flip of the float pixels, then (x - mean) / std."""
    from cxrnets.batches import IMAGENET_MEAN, IMAGENET_STD

    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1) * 255
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) * 255
    rng = np.random.default_rng((seed, 0))
    order = rng.permutation(rows)
    for start in range(0, len(order), batch_size):
        batch = order[start:start + batch_size]
        if len(batch) < 2:
            continue
        pixels = torch.from_numpy(images[batch]).float()
        flip = torch.from_numpy(rng.random(len(batch)) < 0.5).view(-1, 1, 1, 1)
        pixels = torch.where(flip, pixels.flip(-1), pixels)
        yield (pixels - mean) / std, torch.from_numpy(targets[batch])


def test_uint8_flip_and_in_place_normalisation_match_the_float_pipeline() -> None:
    rng = np.random.default_rng(4)
    images = rng.integers(0, 256, (13, 3, 11, 11), dtype=np.uint8)
    targets = rng.integers(0, 3, 13).astype(np.int64)
    ours = list(Batches(images, targets, np.arange(13), 4, torch.device("cpu"), train=True, seed=5))
    reference = list(reference_batches(images, targets, np.arange(13), 4, seed=5))
    assert len(ours) == len(reference) == 3  # 4 + 4 + 4; the single last image is left out
    for (a, ta), (b, tb) in zip(ours, reference):
        assert a.dtype == torch.float32 and torch.equal(a, b) and torch.equal(ta, tb)
