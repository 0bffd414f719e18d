"""Where a model looks: Grad-CAM maps through captum, the PyTorch project's attribution library.

    maps = grad_cam(model, "resnet50", inputs, targets)   # (N, H, W) in [0, 1], one per input
    maps.layer, maps.grid                                  # which layer, and its spatial grid
    no_region(maps.maps[0])                                # "near-uniform map" etc. where a map marks out nothing

Grad-CAM weighs the last convolutional layer's activations by the gradient of the target class's
score and keeps the positive part (Selvaraju et al. 2017), then the map is upsampled to the input.
The layer is the last convolution of AlexNet and VGG11 and ResNet50's last stage (`layer4`); on
small inputs where `layer4`'s grid is under 4x4 (ResNet50 at 96 px and below) the map would be 1 to 9
cells, so `layer3` (twice as fine) is used and named.
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


def _last_conv(features: nn.Sequential) -> tuple[nn.Module, str]:
    index = max(i for i, module in enumerate(features) if isinstance(module, nn.Conv2d))
    return features[index], f"features.{index}"


def gradcam_layer(model: nn.Module, model_name: str, image_size: int) -> tuple[nn.Module, str]:
    """The layer Grad-CAM reads for `model_name` at `image_size` (see the module docstring)."""
    if model_name not in MODEL_NAMES:
        raise CxrError(f"unknown model {model_name!r}: choose one of {', '.join(MODEL_NAMES)}")
    if model_name in ("alexnet", "vgg11"):
        return _last_conv(model.features)
    # ResNet50: stride 32 at layer4 (rounding up); layer3, at 16, is twice as fine.
    if -(-image_size // 32) < MIN_GRID:
        return model.layer3, "layer3"
    return model.layer4, "layer4"


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
