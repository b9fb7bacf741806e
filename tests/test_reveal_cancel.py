"""RevealCancel: the worked examples of Shrikumar et al. 2017, section 3.5.3, rule choice and per-module overrides."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from deltalift import DeepLift

DTYPE = torch.float64


def dense_relu() -> nn.Module:
    dense = nn.Linear(4, 1).to(DTYPE)
    with torch.no_grad():
        dense.weight.copy_(torch.tensor([[1.0, -2.0, -3.0, 4.0]]))
        dense.bias.fill_(1.0)
    return nn.Sequential(dense, nn.ReLU()).eval()


X_DENSE = torch.tensor([[-1.0, -1.0, 1.0, 1.0]], dtype=DTYPE)


def test_dense_relu_reveal_cancel_contributions():
    attr, delta = DeepLift(dense_relu(), rule="reveal_cancel").attribute(X_DENSE, return_convergence_delta=True)
    expected = torch.tensor([[-0.625, 1.5, -1.875, 3.0]], dtype=DTYPE)
    torch.testing.assert_close(attr, expected, rtol=0, atol=1e-15)
    assert attr.sum().item() == pytest.approx(2.0, abs=1e-15)  # relu(3) - relu(1)
    assert delta.abs().max() < 1e-15


def test_dense_relu_reveal_cancel_multipliers():
    """C = m * dx with dx = (-1, -1, 1, 1): the multipliers are C / dx = (0.625, -1.5, -1.875, 3.0)."""
    multipliers = DeepLift(dense_relu(), rule="reveal_cancel", multiply_by_inputs=False).attribute(X_DENSE)
    torch.testing.assert_close(multipliers, torch.tensor([[0.625, -1.5, -1.875, 3.0]], dtype=DTYPE), rtol=0, atol=1e-15)


class Min(nn.Module):
    """min(i1, i2) = i1 - relu(i1 - i2), the inner i1 - i2 a dense layer."""

    def __init__(self) -> None:
        super().__init__()
        self.dense = nn.Linear(2, 1, bias=False).to(DTYPE)
        with torch.no_grad():
            self.dense.weight.copy_(torch.tensor([[1.0, -1.0]]))

    def forward(self, x):
        return x[:, :1] - F.relu(self.dense(x))


@pytest.mark.parametrize("rule, expected", [("rescale", [0.0, 1.0]), ("reveal_cancel", [0.5, 0.5])])
def test_min_rescale_and_reveal_cancel(rule, expected):
    attr = DeepLift(Min().eval(), rule=rule).attribute(torch.tensor([[3.0, 1.0]], dtype=DTYPE))
    torch.testing.assert_close(attr, torch.tensor([expected], dtype=DTYPE), rtol=0, atol=1e-15)


class Mixed(nn.Module):
    """A conv-fed and a dense-fed nonlinearity, a functional one and one after an addition."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(4, 3, 5)
        self.act = nn.ReLU()
        self.dense = nn.Linear(3 * 16, 6)
        self.head = nn.Linear(6, 2)

    def forward(self, x):
        h = self.act(self.conv(x)).flatten(1)
        d = torch.sigmoid(self.dense(h))
        return self.head(d + F.relu(d - 0.5))


@pytest.fixture
def mixed():
    torch.manual_seed(0)
    model = Mixed().to(DTYPE).eval()
    x = torch.randn(3, 4, 20, dtype=DTYPE)
    ref = torch.randn(1, 4, 20, dtype=DTYPE)
    return model, x, ref


@pytest.mark.parametrize("rule", ["rescale", "reveal_cancel", "genomics_default"])
def test_every_rule_keeps_summation(mixed, rule):
    model, x, ref = mixed
    attr, delta = DeepLift(model, rule=rule, strict=True).attribute(x, ref, target=1, return_convergence_delta=True)
    assert delta.abs().max() < 1e-12


def test_rules_differ_where_they_should(mixed):
    model, x, ref = mixed
    results = {
        r: DeepLift(model, rule=r).attribute(x, ref, target=1) for r in ("rescale", "reveal_cancel", "genomics_default")
    }
    assert not torch.allclose(results["rescale"], results["reveal_cancel"])
    assert not torch.allclose(results["genomics_default"], results["reveal_cancel"])
    assert not torch.allclose(results["genomics_default"], results["rescale"])
    # genomics_default = RevealCancel at the dense layer only: the same as overriding the conv's ReLU
    overridden = DeepLift(model, rule="reveal_cancel", rule_overrides={"act": "rescale"}).attribute(x, ref, target=1)
    torch.testing.assert_close(results["genomics_default"], overridden, rtol=1e-12, atol=1e-14)


def test_overrides_by_module_path_and_by_node_name(mixed):
    model, x, ref = mixed
    rescale = DeepLift(model).attribute(x, ref, target=0)
    only_dense = DeepLift(model, rule_overrides={"": "reveal_cancel", "act": "rescale"}).attribute(x, ref, target=0)
    genomics = DeepLift(model, rule="genomics_default").attribute(x, ref, target=0)
    torch.testing.assert_close(only_dense, genomics, rtol=1e-12, atol=1e-14)
    by_node = DeepLift(model, rule="reveal_cancel", rule_overrides={"sigmoid": "rescale", "relu": "rescale"}).attribute(
        x, ref, target=0
    )
    torch.testing.assert_close(by_node, rescale, rtol=1e-12, atol=1e-14)


def test_bad_rule_names_are_refused(mixed):
    model, x, ref = mixed
    with pytest.raises(ValueError, match="rule must be one of"):
        DeepLift(model, rule="revealcancel")
    with pytest.raises(ValueError, match=r"rule_overrides\['act'\]"):
        DeepLift(model, rule_overrides={"act": "gradient"}).attribute(x, ref, target=0)


def test_reveal_cancel_through_batch_norm_with_negative_scale():
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(5, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 1)).to(DTYPE).eval()
    with torch.no_grad():
        model[1].weight.copy_(torch.tensor([1.5, -0.7, 0.3, -2.0]))
        model[1].running_mean.normal_()
        model[1].running_var.uniform_(0.5, 2.0)
    x, ref = torch.randn(6, 5, dtype=DTYPE), torch.randn(6, 5, dtype=DTYPE)
    attr, delta = DeepLift(model, rule="reveal_cancel", strict=True).attribute(x, ref, return_convergence_delta=True)
    assert delta.abs().max() < 1e-12
    # folding the batch norm into the dense layer by hand gives the same RevealCancel result
    bn = model[1]
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    folded = nn.Linear(5, 4).to(DTYPE)
    with torch.no_grad():
        folded.weight.copy_(model[0].weight * scale[:, None])
        folded.bias.copy_((model[0].bias - bn.running_mean) * scale + bn.bias)
    twin = nn.Sequential(folded, nn.ReLU(), model[3]).eval()
    torch.testing.assert_close(DeepLift(twin, rule="reveal_cancel").attribute(x, ref), attr, rtol=1e-10, atol=1e-12)


def test_reveal_cancel_after_a_linear_on_token_sequences():
    """F.linear on a (batch, tokens, features) input is captured as view -> addmm -> view: RevealCancel
    still applies at the nonlinearity, and each token gets what it gets as a (batch, features) input."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 1), nn.Flatten()).double().eval()
    flat = torch.randn(3, 8, dtype=torch.float64)
    tokens = torch.stack([flat, torch.zeros_like(flat)], 1)  # the second token equals the reference
    on_flat = DeepLift(model, rule="reveal_cancel").attribute(flat, 0.0, target=0)
    on_tokens, delta = DeepLift(model, rule="reveal_cancel").attribute(
        tokens, 0.0, target=0, return_convergence_delta=True
    )
    torch.testing.assert_close(on_tokens[:, 0], on_flat, rtol=1e-12, atol=1e-14)
    assert delta.abs().max() < 1e-12
    assert (on_flat - DeepLift(model).attribute(flat, 0.0, target=0)).abs().max() > 1e-3  # not Rescale
