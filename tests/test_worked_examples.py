"""The worked examples of Shrikumar et al. 2017, sections 2-3 (from the seeds), each an exact test."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from deltalift import DeepLift

DTYPE = torch.float64


class Lambda(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


def explain(fn, x, baseline=0.0, **kwargs):
    model = Lambda(fn).eval()
    return DeepLift(model, **kwargs).attribute(
        torch.tensor([x], dtype=DTYPE), baselines=baseline, return_convergence_delta=True
    )


def test_threshold_relu_gives_one_where_gradient_times_input_gives_eleven():
    attr, delta = explain(lambda x: F.relu(x - 10), [11.0])
    torch.testing.assert_close(attr, torch.tensor([[1.0]], dtype=DTYPE), rtol=0, atol=1e-15)
    assert delta.abs().max() < 1e-15
    x = torch.tensor([[11.0]], dtype=DTYPE, requires_grad=True)
    (grad,) = torch.autograd.grad(F.relu(x - 10).sum(), x)
    assert (grad * x).item() == 11.0


def test_saturation_gives_half_each_where_gradient_is_zero():
    attr, _ = explain(lambda x: 1 - F.relu(1 - (x[:, :1] + x[:, 1:])), [1.0, 1.0])
    torch.testing.assert_close(attr, torch.tensor([[0.5, 0.5]], dtype=DTYPE), rtol=0, atol=1e-15)


@pytest.mark.parametrize(
    "fn, expected",
    [
        (lambda x: F.relu(F.relu(x[:, :1]) - 1 - F.relu(x[:, 1:])), [1.5, -0.5]),
        (lambda x: F.relu(F.relu(x[:, :1] - 1) - F.relu(x[:, 1:])), [2.0, -1.0]),
    ],
    ids=["relu(relu(x1)-1-relu(x2))", "relu(relu(x1-1)-relu(x2))"],
)
def test_functionally_equal_networks_under_rescale(fn, expected):
    attr, delta = explain(fn, [3.0, 1.0])
    torch.testing.assert_close(attr, torch.tensor([expected], dtype=DTYPE), rtol=0, atol=1e-15)
    assert delta.abs().max() < 1e-15


def test_dense_relu_rescale_contributions():
    dense = nn.Linear(4, 1).to(DTYPE)
    with torch.no_grad():
        dense.weight.copy_(torch.tensor([[1.0, -2.0, -3.0, 4.0]]))
        dense.bias.fill_(1.0)
    model = nn.Sequential(dense, nn.ReLU()).eval()
    x = torch.tensor([[-1.0, -1.0, 1.0, 1.0]], dtype=DTYPE)
    attr, delta = DeepLift(model).attribute(x, return_convergence_delta=True)
    torch.testing.assert_close(attr, torch.tensor([[-1.0, 2.0, -3.0, 4.0]], dtype=DTYPE), rtol=0, atol=1e-15)
    assert attr.sum().item() == pytest.approx(2.0, abs=1e-15)  # relu(3) - relu(1)
    assert delta.abs().max() < 1e-15


def test_min_as_relu_of_dense_rescale_gives_zero_one():
    """min(i1, i2) = i1 - relu(i1 - i2) with i1 - i2 a dense layer: Rescale gives (0, 1)."""
    dense = nn.Linear(2, 1, bias=False).to(DTYPE)
    with torch.no_grad():
        dense.weight.copy_(torch.tensor([[1.0, -1.0]]))

    class Min(nn.Module):
        def __init__(self):
            super().__init__()
            self.dense = dense

        def forward(self, x):
            return x[:, :1] - F.relu(self.dense(x))

    attr, delta = DeepLift(Min().eval()).attribute(
        torch.tensor([[3.0, 1.0]], dtype=DTYPE), return_convergence_delta=True
    )
    torch.testing.assert_close(attr, torch.tensor([[0.0, 1.0]], dtype=DTYPE), rtol=0, atol=1e-15)


def test_integrated_gradients_example_deeplift_is_not_saturated():
    """f(x) = 1 - relu(1 - x) at 2, baseline 0: the gradient is 0; DeepLIFT gives the full change 1."""
    attr, _ = explain(lambda x: 1 - F.relu(1 - x), [2.0])
    torch.testing.assert_close(attr, torch.tensor([[1.0]], dtype=DTYPE), rtol=0, atol=1e-15)
