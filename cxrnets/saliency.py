"""Where a model looks: Grad-CAM maps through captum, the PyTorch project's attribution library.

    maps = grad_cam(model, "resnet50", inputs, targets)   # (N, H, W) in [0, 1], one per input
    maps.layer, maps.grid                                  # which layer, and its spatial grid
    no_region(maps.maps[0])                                # "near-uniform map" etc. where a map marks out nothing

Grad-CAM weighs a convolutional layer's rectified activations by the gradient of the target class's
score and keeps the positive part (Selvaraju et al. 2017), then the map is upsampled to the input.
The layer is the last one whose grid is at least 4x4, of AlexNet's and VGG11's convolutions, each
read after its ReLU (the next layer: `features.11` for the convolution `features.10`), and of
ResNet50's stages (`layer1` to `layer4`, which end in a ReLU): the last convolution or `layer4` on
inputs large enough (AlexNet 79 px, VGG11 64 px, ResNet50 97 px), an earlier, finer one below, where
the last would map 1 to 9 cells; the finest where none is 4x4 (ResNet50 under 13 px). The maps name
the layer and grid.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from cxrnets.errors import CxrError
from cxrnets.models import MODEL_NAMES

MIN_GRID = 4  # a coarser map than this many cells a side says little about where a model looks
# A map whose every cell is within this fraction of its peak (the weakest at 80% of the strongest) marks out
# no region: laid over the image it is one hue of the colour map, which reads as "the whole image".
NEAR_UNIFORM = 0.2


@dataclass
class SaliencyMaps:
    maps: np.ndarray     # (N, H, W), each map scaled to [0, 1] (all zeros where nothing raised the score)
    layer: str           # the layer's name in the model (e.g. "features.10", "layer4")
    grid: tuple[int, int]  # that layer's spatial size: the map's real resolution


def _candidate_layers(model: nn.Module, model_name: str) -> list[tuple[str, nn.Module]]:
    """The layers Grad-CAM may read, by name, finest (earliest) first: AlexNet's and VGG11's are the ReLU after
    each convolution (in place: captum reads its output, the rectified map, as a test checks by hand)."""
    if model_name == "resnet50":
        return [(name, getattr(model, name)) for name in ("layer1", "layer2", "layer3", "layer4")]
    features = list(model.features)
    return [(f"features.{i + 1}", features[i + 1]) for i, module in enumerate(features[:-1])
            if isinstance(module, nn.Conv2d) and isinstance(features[i + 1], nn.ReLU)]


def _grids(model: nn.Module, layers: list[tuple[str, nn.Module]], image_size: int) -> list[tuple[int, int]]:
    """Each layer's spatial output size on `image_size` px inputs, from a forward pass of a blank image."""
    grids: dict[str, tuple[int, int]] = {}
    hooks = [layer.register_forward_hook(
        lambda module, args, output, name=name: grids.__setitem__(name, tuple(output.shape[-2:])))
        for name, layer in layers]
    parameter = next(model.parameters())
    training = model.training
    try:
        model.eval()  # in training mode BatchNorm would learn from the blank image
        with torch.no_grad():
            model(torch.zeros(1, 3, image_size, image_size, dtype=parameter.dtype, device=parameter.device))
    finally:
        model.train(training)
        for hook in hooks:
            hook.remove()
    return [grids[name] for name, _ in layers]


def gradcam_layer(model: nn.Module, model_name: str, image_size: int) -> tuple[nn.Module, str]:
    """The layer Grad-CAM reads for `model_name` at `image_size`, and its name (see the module docstring)."""
    if model_name not in MODEL_NAMES:
        raise CxrError(f"unknown model {model_name!r}: choose one of {', '.join(MODEL_NAMES)}")
    layers = _candidate_layers(model, model_name)
    fine_enough = [i for i, grid in enumerate(_grids(model, layers, image_size)) if min(grid) >= MIN_GRID]
    name, layer = layers[fine_enough[-1] if fine_enough else 0]
    return layer, name


def grad_cam(model: nn.Module, model_name: str, inputs: torch.Tensor, targets: list[int] | torch.Tensor
             ) -> SaliencyMaps:
    """Grad-CAM of class `targets[i]` for each normalised input (N, 3, H, W), upsampled to H x W."""
    from captum.attr import LayerAttribution, LayerGradCam

    model.eval()
    layer, name = gradcam_layer(model, model_name, inputs.shape[-1])
    with torch.enable_grad():
        attributions = LayerGradCam(model, layer).attribute(inputs, target=targets, relu_attributions=True)
    grid = tuple(int(v) for v in attributions.shape[-2:])
    upsampled = LayerAttribution.interpolate(attributions, tuple(inputs.shape[-2:]), interpolate_mode="bilinear")
    maps = upsampled[:, 0].detach().float().cpu().numpy()
    peak = maps.reshape(len(maps), -1).max(axis=1)
    maps = np.where(peak[:, None, None] > 0, maps / np.where(peak > 0, peak, 1)[:, None, None], 0.0)
    return SaliencyMaps(np.clip(maps, 0.0, 1.0), name, grid)


def no_region(heat: np.ndarray) -> str:
    """Why a map (scaled to [0, 1] as grad_cam's are) marks out no region, to be said instead of drawing it:
    "flat map" (nothing raised the class's score), "uniform map" (one value: a 1x1 grid), "near-uniform map"
    (every cell within NEAR_UNIFORM of the peak); "" for a map that does."""
    if not heat.any():
        return "flat map"
    spread = float(np.ptp(heat))
    if spread == 0:
        return "uniform map"
    return "near-uniform map" if spread < NEAR_UNIFORM * float(heat.max()) else ""
