"""The transposes of weighted ops (deltalift.canonical.WeightedOp.backward) and the engine's
convolutions that keep no input (deltalift.batching).

A convolution's input gradient is formed from the input's shape alone, as a transposed
convolution whose output padding restores what a strided convolution rounded down (a plain
convolution for a transposed one), so that the walk need not keep every convolution's input
until the backward pass.  It must be autograd's input gradient, value for value, in every
configuration: 1-3 spatial dimensions, transposed, grouped, strided, padded, dilated, both
float types; and the engine's attributions must not change while the inputs are freed.
"""

from __future__ import annotations

import gc
import itertools
import weakref

import pytest
import torch
from torch import nn

from deltalift import DeepLift
from deltalift.canonical import weighted_op

aten = torch.ops.aten

CONFIGURATIONS = list(itertools.product((1, 2, 3), (False, True), (1, 2), (1, 2, 3), (0, 2), (1, 2)))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("dims,transposed,groups,stride,padding,dilation", CONFIGURATIONS)
def test_convolution_transpose_is_autograds_input_gradient(dims, transposed, groups, stride, padding, dilation, dtype):
    g = torch.Generator().manual_seed(dims * 100 + stride * 10 + padding + dilation)
    channels, outputs = 4, 6
    x = torch.randn(2, channels, *[9, 8, 7][:dims], generator=g, dtype=dtype, requires_grad=True)
    shape = (channels, outputs // groups) if transposed else (outputs, channels // groups)
    weight = torch.randn(*shape, *[3, 2, 3][:dims], generator=g, dtype=dtype)
    output_padding = [min(stride, dilation) - 1] * dims if transposed else [0] * dims
    args = (x, weight, None, [stride] * dims, [padding] * dims, [dilation] * dims, transposed, output_padding, groups)
    y = aten.convolution.default(*args)
    s = torch.randn(y.shape, generator=g, dtype=dtype)
    (expected,) = torch.autograd.grad(y, x, s)
    op = weighted_op(aten.convolution.default, args, 0)
    assert op is not None
    torch.testing.assert_close(op.transpose(s, x), expected, rtol=0, atol=1e-5 if dtype == torch.float32 else 1e-12)


class _Convolutions(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.first = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.second = nn.Conv2d(8, 8, 3, padding=2, dilation=2, groups=2)
        self.head = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.second(torch.relu(self.first(x))))
        return self.head(h.mean((2, 3)))


@pytest.mark.parametrize("backend", ["interpreter", "traced"])
def test_attributions_through_convolutions_that_keep_no_input(backend):
    """Strided, dilated and grouped convolutions between ReLUs: DeepLift's contributions (three
    calls, so the traced backend is also replayed) are those of the Rescale chain written out
    by hand, differentiated by autograd through the model's own convolutions."""
    torch.manual_seed(0)
    model = _Convolutions().double().eval()
    x = torch.randn(3, 3, 17, 17, dtype=torch.float64)
    explainer = DeepLift(model, backend=backend)
    expected = _secant_chain_rule(model, x)
    for _ in range(3):
        torch.testing.assert_close(explainer.attribute(x, baselines=0.0, target=1), expected, rtol=0, atol=1e-12)


def _secant_chain_rule(model: _Convolutions, x: torch.Tensor) -> torch.Tensor:
    """DeepLIFT Rescale at a zero reference written out by hand: each ReLU's multiplier
    ``(relu(z) - relu(z0)) / (z - z0)`` (the slope at the reference where ``z = z0``), composed
    by autograd through the linear ops."""
    x0 = torch.zeros_like(x[:1])

    def relu_pair(z: torch.Tensor, z0: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            dz = z - z0
            m = torch.where(dz == 0, (z0 > 0).to(z.dtype), (torch.relu(z) - torch.relu(z0)) / dz)
        return torch.relu(z).detach() + m * (z - z.detach())  # value relu(z), gradient m

    leaf = x.clone().requires_grad_(True)
    a, a0 = model.first(leaf), model.first(x0)
    h, h0 = relu_pair(a, a0), torch.relu(a0)
    b, b0 = model.second(h), model.second(h0)
    out = model.head(relu_pair(b, b0).mean((2, 3)))
    (grad,) = torch.autograd.grad(out[:, 1].sum(), leaf)
    return grad * (x - x0)


def test_a_convolution_input_is_freed_before_the_backward_pass():
    """What the engine's convolution saves for backward: the input's shape, not the input."""
    from deltalift.batching import _Transposed

    weight = torch.randn(4, 3, 3, 3)
    x = torch.randn(2, 3, 8, 8, requires_grad=True)
    a = x * 2
    kept = weakref.ref(a)
    op = weighted_op(aten.convolution.default, (a, weight, None, [1, 1], [1, 1], [1, 1], False, [0, 0], 1), 0)
    assert op is not None
    y = _Transposed.apply(a, op, lambda s, shape: op.backward(s, shape, weight))  # type: ignore[misc]
    del a
    gc.collect()
    assert kept() is None
    (grad,) = torch.autograd.grad(y.sum(), x)
    assert grad.shape == x.shape
