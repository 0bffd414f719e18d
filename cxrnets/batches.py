"""Mini-batches from the uint8 cache, preprocessed on the training device.

Only uint8 pixels cross to the device (4x less than float32); the training-time
random horizontal flip, the float conversion and the ImageNet normalisation run
there. On CUDA the batch is pinned and copied without blocking, flipped on the
GPU, and convolutional models may ask for channels-last memory format. On CPU
the flip is a numpy copy of the chosen images (several times faster than
torch.flip of uint8 there). Either way the values are exactly
(float(pixels, flipped or not) - mean) / std.
"""

from __future__ import annotations

import numpy as np
import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Batches:
    """Iterate (images, targets) over `rows` of `images`, (N, 3, S, S) uint8 (an array, or a cache's
    CachedImages); reshuffled each epoch."""

    def __init__(self, images, targets: np.ndarray, rows: np.ndarray, batch_size: int,
                 device: torch.device, train: bool, seed: int = 0, channels_last: bool = False):
        self.images, self.targets, self.rows = images, targets, np.asarray(rows)
        self.batch_size, self.device, self.train = batch_size, device, train
        self.seed, self.epoch = seed, 0
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1) * 255
        self.std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1) * 255

    def __len__(self) -> int:
        return -(-len(self.rows) // self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        rng = np.random.default_rng((self.seed, self.epoch))
        order = rng.permutation(self.rows) if self.train else self.rows
        for start in range(0, len(order), self.batch_size):
            batch = order[start:start + self.batch_size]
            if self.train and len(batch) < 2:
                continue  # BatchNorm cannot train on a single image (TrainConfig: batch_size >= 2)
            pixels = self.images[batch]  # an integer-array index: a new, writable array
            targets = torch.from_numpy(self.targets[batch])
            flip = rng.random(len(batch)) < 0.5 if self.train else None
            yield self._to_device(pixels, flip), self._copy(targets)

    def _copy(self, tensor: torch.Tensor) -> torch.Tensor:
        """Host to device; on CUDA from pinned memory without blocking (the caching host allocator
        keeps the pinned block until its copy is done, so the host may prepare the next batch)."""
        if self.device.type == "cuda":
            tensor = tensor.pin_memory()
        return tensor.to(self.device, non_blocking=True)

    def _to_device(self, pixels: np.ndarray, flip: np.ndarray | None) -> torch.Tensor:
        if flip is not None and self.device.type == "cpu":
            pixels[flip] = pixels[flip, :, :, ::-1]  # the right side is a copy: safe in place
            flip = None
        # Flip and change the memory format while the pixels are still uint8 (a quarter of the bytes of
        # float32; both only move pixels), then convert and normalise in place.
        tensor = self._copy(torch.from_numpy(pixels)).contiguous(memory_format=self.memory_format)
        if flip is not None:
            chosen = self._copy(torch.from_numpy(flip)).view(-1, 1, 1, 1)
            tensor = torch.where(chosen, tensor.flip(-1), tensor)
        tensor = tensor.float()
        tensor.sub_(self.mean).div_(self.std)
        return tensor.contiguous(memory_format=self.memory_format)
