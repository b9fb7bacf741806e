"""An eval-mode batch norm after a convolution is folded into it during the walk.

Both ops are linear, so DeepLIFT's multipliers through them are their Jacobian (Shrikumar et
al. 2017, section 3.5.1) whether they run as two ops or as one convolution with
``W' = W gamma / sqrt(var + eps)`` and ``b' = (b - mean) gamma / sqrt(var + eps) + beta``.  The
tests compare with the walk that evaluates them apart (a registry whose batch norm rule is not the
built-in one is never folded), check that the batch norm is no longer evaluated, and that a layer
read at the convolution or at the batch norm sees its own values.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torchvision.models as tvm
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from deltalift import DeepLift, LayerDeepLift
from deltalift.rules import default_registry, linear

DTYPE = torch.float64
BATCH_NORM = torch.ops.aten._native_batch_norm_legit_no_training.default


class OpsSeen(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.ops: list[Any] = []

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        self.ops.append(func)
        return func(*args, **(kwargs or {}))


def unfolded_registry():
    """The built-in rules, the batch norm's re-registered (same rule, another object): not folded."""
    registry = default_registry.copy()
    registry.register(torch.ops.aten._native_batch_norm_legit_no_training, linear, "batch_norm")
    return registry


def conv_bn_net() -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1),
        nn.BatchNorm2d(6),
        nn.ReLU(),
        nn.Conv2d(6, 6, 3, padding=1, bias=False, groups=2),
        nn.BatchNorm2d(6),
        nn.ReLU(),
        nn.ConvTranspose2d(6, 4, 2, stride=2),
        nn.BatchNorm2d(4, affine=False),
        nn.Flatten(),
        nn.Linear(4 * 16 * 16, 3),
    )
    for module in net:
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-1, 1)
            module.running_var.uniform_(0.5, 2)
            if module.affine:
                nn.init.uniform_(module.weight, 0.5, 1.5)
                nn.init.uniform_(module.bias, -0.5, 0.5)
    return net.to(DTYPE).eval()


@pytest.mark.parametrize("rule", ["rescale", "reveal_cancel"])
def test_folded_batch_norm_gives_the_unfolded_attributions(rule):
    net = conv_bn_net()
    x = torch.randn(3, 3, 8, 8, dtype=DTYPE)
    ref = torch.randn(1, 3, 8, 8, dtype=DTYPE)
    folded, delta = DeepLift(net, rule=rule).attribute(x, ref, target=1, return_convergence_delta=True)
    apart = DeepLift(net, rule=rule, registry=unfolded_registry()).attribute(x, ref, target=1)
    torch.testing.assert_close(folded, apart, rtol=1e-10, atol=1e-12)
    assert delta.abs().max() < 1e-10


def test_the_batch_norm_is_not_evaluated():
    net = conv_bn_net()
    x = torch.randn(2, 3, 8, 8, dtype=DTYPE)
    DeepLift(net).attribute(x, target=0)  # captured outside the recording
    with OpsSeen() as seen:
        DeepLift(net).attribute(x, target=0)
    assert BATCH_NORM not in seen.ops
    with OpsSeen() as seen:
        DeepLift(net, registry=unfolded_registry()).attribute(x, target=0)
    assert seen.ops.count(BATCH_NORM) == 2 * 3  # input and reference side of three batch norms


@pytest.mark.parametrize("index", [0, 1], ids=["conv", "batch_norm"])
def test_a_layer_at_the_convolution_or_its_batch_norm_reads_its_own_values(index):
    net = conv_bn_net()
    x = torch.randn(2, 3, 8, 8, dtype=DTYPE)
    layer = net[index]
    got = LayerDeepLift(net, layer).attribute(x, target=2)
    expected = LayerDeepLift(net, layer, registry=unfolded_registry()).attribute(x, target=2)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)
    with torch.no_grad():
        activation = net[: index + 1](x)
        reference_activation = net[: index + 1](torch.zeros_like(x))
    multipliers = LayerDeepLift(net, layer, multiply_by_inputs=False).attribute(x, target=2)
    torch.testing.assert_close(got, multipliers * (activation - reference_activation), rtol=1e-10, atol=1e-12)


def test_resnet_folds_where_the_output_outweighs_the_weight():
    """torchvision's ResNet-18 at 32x32, batch 2: the stem's output (2x64x16x16 = 32768) is 3.5
    times its weight (64x3x7x7 = 9408), so its batch norm is folded; every later convolution's
    output is smaller than its weight (layer1: 2x64x8x8 = 8192 against 64x64x3x3 = 36864), so
    folding would cost more than the batch norm it saves, and each keeps its batch norm."""
    torch.manual_seed(0)
    net = tvm.resnet18(num_classes=5).to(DTYPE).eval()
    x = torch.randn(2, 3, 32, 32, dtype=DTYPE)
    DeepLift(net).attribute(x, target=0)
    with OpsSeen() as seen:
        folded = DeepLift(net).attribute(x, target=0)
    with OpsSeen() as seen_apart:
        apart = DeepLift(net, registry=unfolded_registry()).attribute(x, target=0)
    assert seen_apart.ops.count(BATCH_NORM) == 2 * 20  # both sides of every batch norm
    assert seen.ops.count(BATCH_NORM) == 2 * 19
    torch.testing.assert_close(folded, apart, rtol=1e-9, atol=1e-12)
