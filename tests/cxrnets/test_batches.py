"""Tests for cxrnets.batches: order, shuffling, flips and normalisation of uint8 mini-batches."""

from __future__ import annotations

import numpy as np
import torch

from cxrnets.batches import IMAGENET_MEAN, IMAGENET_STD, Batches

CPU = torch.device("cpu")


def images_and_targets(count: int = 10, size: int = 4) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(count, 3, size, size), dtype=np.uint8)
    images[:, :, 0, 0] = np.arange(count)[:, None]  # each image tells its row in one pixel
    return images, np.arange(count, dtype=np.int64)


def test_evaluation_batches_keep_order_and_every_row() -> None:
    images, targets = images_and_targets()
    rows = np.array([1, 3, 5, 7, 9])
    batches = Batches(images, targets, rows, batch_size=2, device=CPU, train=False)
    assert len(batches) == 3
    seen = [batch_targets for _, batch_targets in batches]
    assert [t.tolist() for t in seen] == [[1, 3], [5, 7], [9]]  # a last batch of one is kept


def test_normalisation_and_dtype() -> None:
    images = np.zeros((2, 3, 4, 4), dtype=np.uint8)
    for channel, mean in enumerate(IMAGENET_MEAN):
        images[:, channel] = round(mean * 255)
    batches = Batches(images, np.zeros(2, dtype=np.int64), np.arange(2), 2, CPU, train=False)
    pixels, _ = next(iter(batches))
    assert pixels.dtype == torch.float32 and pixels.shape == (2, 3, 4, 4)
    assert pixels.abs().max() < 0.01  # ImageNet mean maps to zero
    white = np.full((1, 3, 2, 2), 255, dtype=np.uint8)
    pixels, _ = next(iter(Batches(white, np.zeros(1, dtype=np.int64), np.arange(1), 1, CPU, train=False)))
    expected = [(1 - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD)]
    np.testing.assert_allclose(pixels[0, :, 0, 0].numpy(), expected, rtol=1e-5)


def test_training_batches_shuffle_per_epoch_deterministically() -> None:
    images, targets = images_and_targets(count=9)
    rows = np.arange(9)

    def order(epoch: int, seed: int = 0) -> list[int]:
        batches = Batches(images, targets, rows, batch_size=4, device=CPU, train=True, seed=seed)
        batches.set_epoch(epoch)
        return [int(t) for _, batch_targets in batches for t in batch_targets]

    first = order(0)
    assert len(first) == 8  # 4 + 4; the last batch of one image is dropped (BatchNorm needs two)
    assert order(0) == first
    assert order(1) != first
    assert order(0, seed=1) != first


def test_training_flips_some_images_horizontally() -> None:
    images, targets = images_and_targets(count=32, size=6)
    batches = Batches(images, targets, np.arange(32), batch_size=32, device=CPU, train=True, seed=3)
    pixels, batch_targets = next(iter(batches))
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1) * 255
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1) * 255
    flipped = 0
    for image, target in zip(pixels, batch_targets):
        original = torch.from_numpy(images[int(target)]).float()
        restored = image * std + mean
        if torch.allclose(restored, original, atol=1e-3):
            continue
        assert torch.allclose(restored, original.flip(-1), atol=1e-3)
        flipped += 1
    assert 0 < flipped < 32
