"""Grad-CAM through captum on the three architectures: one map per input, at the input's size."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from cxrnets.errors import CxrError
from cxrnets.models import build_model
from cxrnets.saliency import gradcam_layer, grad_cam, no_region


@pytest.mark.parametrize("model_name, size, layer, grid", [
    ("alexnet", 64, "features.4", (7, 7)),    # the ReLUs of the convolutions features.6, .8 and .10: 3x3
    ("alexnet", 80, "features.11", (4, 4)),
    ("vgg11", 32, "features.14", (4, 4)),     # features.17 and .19 would be 2x2
    ("vgg11", 64, "features.19", (4, 4)),
    ("resnet50", 32, "layer2", (4, 4)),       # layer3 would be 2x2, layer4 1x1: one uniform cell
    ("resnet50", 64, "layer3", (4, 4)),       # layer4 would be 2x2
    ("resnet50", 112, "layer4", (4, 4)),
    ("resnet50", 128, "layer4", (4, 4)),
])
def test_maps_are_of_the_last_layer_with_a_grid_of_at_least_4x4(model_name, size, layer, grid):
    torch.manual_seed(0)
    model = build_model(model_name, 3)
    inputs = torch.randn(2, 3, size, size)
    inputs[1, :, : size // 2] += 3.0  # the second image is bright in its upper half
    maps = grad_cam(model, model_name, inputs, [0, 0])
    assert maps.layer == layer and maps.grid == grid
    assert maps.maps.shape == (2, size, size) and np.isfinite(maps.maps).all()
    assert maps.maps.min() >= 0 and maps.maps.max() <= 1
    assert np.abs(maps.maps[0] - maps.maps[1]).max() > 0.05  # each input its own map


@pytest.mark.parametrize("model_name, size, convolution", [("alexnet", 64, 3), ("vgg11", 32, 13)])
def test_alexnet_and_vgg11_maps_are_of_the_rectified_activations(model_name, size, convolution):
    """Grad-CAM as the paper computes it, by hand on a copy whose ReLUs are not in place: the activations
    after the chosen convolution's ReLU (ResNet50's stages end in one), not the convolution's own output."""
    torch.manual_seed(0)
    model = build_model(model_name, 3).eval()
    inputs = torch.randn(2, 3, size, size)
    maps = grad_cam(model, model_name, inputs, [0, 1])

    by_hand = copy.deepcopy(model)
    for module in by_hand.modules():
        if isinstance(module, torch.nn.ReLU):
            module.inplace = False
    kept = {}
    hook = by_hand.features[convolution + 1].register_forward_hook(lambda m, i, out: kept.setdefault("a", out))
    outputs = by_hand(inputs)
    hook.remove()
    activations = kept["a"]
    gradients = torch.autograd.grad(outputs[[0, 1], [0, 1]].sum(), activations)[0]
    cam = torch.relu((gradients.mean(dim=(2, 3), keepdim=True) * activations).sum(dim=1, keepdim=True))
    cam = torch.nn.functional.interpolate(cam, size=(size, size), mode="bilinear")[:, 0].detach().numpy()
    expected = cam / cam.reshape(2, -1).max(axis=1)[:, None, None]
    np.testing.assert_allclose(maps.maps, expected, atol=1e-4)
    assert maps.layer == f"features.{convolution + 1}"


def test_where_no_layer_has_a_4x4_grid_the_finest_is_used():
    torch.manual_seed(0)
    model = build_model("resnet50", 3)
    maps = grad_cam(model, "resnet50", torch.randn(2, 3, 8, 8), [0, 0])
    assert maps.layer == "layer1" and maps.grid == (2, 2)


def test_the_target_class_changes_the_map():
    torch.manual_seed(1)
    model = build_model("vgg11", 3)
    inputs = torch.randn(1, 3, 64, 64).repeat(2, 1, 1, 1)
    maps = grad_cam(model, "vgg11", inputs, [0, 2])
    assert np.abs(maps.maps[0] - maps.maps[1]).max() > 0.05


def test_unknown_model_is_refused():
    with pytest.raises(CxrError, match="unknown model 'densenet'"):
        gradcam_layer(torch.nn.Identity(), "densenet", 64)


def test_a_map_that_marks_out_no_region_is_named():
    grid = torch.tensor([[0.86, 0.93, 1.0], [0.9, 0.88, 0.95], [1.0, 0.97, 0.91]])  # a 3x3 grid
    near_uniform = torch.nn.functional.interpolate(grid[None, None], size=(64, 64), mode="bilinear")[0, 0].numpy()
    assert no_region(near_uniform) == "near-uniform map"
    assert no_region(np.zeros((8, 8))) == "flat map"
    assert no_region(np.ones((8, 8))) == "uniform map"
    marked = near_uniform.copy()
    marked[:20] = 0.5
    assert no_region(marked) == ""
