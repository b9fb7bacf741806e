"""Patterns of real model code that broke a shared reference, capture or layer resolution.

- Sizes read from the batch (``expand(w, [x.shape[0], ...])`` as ``F.linear`` on 3-D inputs
  decomposes, ``logits[torch.arange(batch)]`` as GPT-2 indexes) must be the batch's on both
  sides, though a shared reference is evaluated at batch size one.
- ``F.scaled_dot_product_attention`` (with causal and additive or boolean masks) is captured.
- A module's outputs are activations, not the size computations it contains.
- Inputs the model cannot take are named with their shapes, and torch's logs stay quiet.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from deltalift import CaptureError, DeepLift, LayerDeepLift

F64 = torch.float64


def _exact(model: nn.Module, x: torch.Tensor, baseline, target=None) -> torch.Tensor:
    c, delta = DeepLift(model, strict=True).attribute(x, baseline, target=target, return_convergence_delta=True)
    reference = torch.zeros_like(x) + baseline
    out, out0 = model(x), model(reference)
    change = (out - out0) if target is None else (out - out0)[:, target]
    assert (delta.abs() <= 1e-10 * change.abs().reshape(delta.shape) + 1e-12).all()
    return c


class BatchSizedWeight(nn.Module):
    """A weight expanded to the batch and multiplied with bmm, as F.linear on 3-D inputs decomposes."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(4, 3, dtype=F64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight.expand(x.shape[0], 4, 3)
        return torch.tanh(torch.bmm(x, w)).sum(1)


class LastTokenByArange(nn.Module):
    """``h[torch.arange(batch), index]``, as GPT-2's sequence classification picks the last token."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.sigmoid(x)
        last = torch.full((x.shape[0],), x.shape[1] - 1)
        return h[torch.arange(x.shape[0]), last]


@pytest.mark.parametrize("model", [BatchSizedWeight(), LastTokenByArange()], ids=["expand_bmm", "arange_index"])
def test_sizes_read_from_the_batch_with_a_shared_reference(model: nn.Module) -> None:
    torch.manual_seed(0)
    x = torch.randn(3, 5, 4, dtype=F64)
    shared = _exact(model.eval(), x, 0.0, target=1)
    per_example = _exact(model, x, torch.zeros_like(x), target=1)
    torch.testing.assert_close(shared, per_example, rtol=1e-12, atol=1e-14)


class Attention(nn.Module):
    def __init__(self, mask: str) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.qkv = nn.Linear(8, 24).double()
        self.mask = mask

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(x).unflatten(-1, (3, 2, 4)).permute(2, 0, 3, 1, 4)  # (3, B, H, L, D)
        length = x.shape[1]
        if self.mask == "causal":
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        elif self.mask == "boolean":
            keep = torch.ones(length, length, dtype=torch.bool).triu()
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=keep)
        elif self.mask == "additive":
            bias = torch.arange(length, dtype=F64)[None, :] * -0.5
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.expand(length, length))
        else:
            out = F.scaled_dot_product_attention(q, k, v)
        return out.transpose(1, 2).reshape(x.shape[0], length, 8).reshape(-1, 8).view(x.shape[0], -1)[:, :3]


@pytest.mark.parametrize("mask", ["none", "causal", "boolean", "additive"])
def test_scaled_dot_product_attention(mask: str) -> None:
    model = Attention(mask).eval()
    x = torch.randn(2, 5, 8, dtype=F64, generator=torch.Generator().manual_seed(2))
    _exact(model, x, 0.0, target=0)
    _exact(model, x, torch.randn_like(x), target=2)
    # the captured math equals the fused op
    q, k, v = torch.randn(3, 2, 2, 5, 4, dtype=F64).unbind(0)
    from deltalift.capture import _attention_math

    torch.testing.assert_close(
        _attention_math(q, k, v, is_causal=True), F.scaled_dot_product_attention(q, k, v, is_causal=True)
    )
    scores = q @ k.transpose(-2, -1) / math.sqrt(4)
    torch.testing.assert_close(_attention_math(q, k, v), torch.softmax(scores, -1) @ v)


class Block(nn.Module):
    """A block whose forward computes sizes (as transformer blocks reshape by batch and heads)."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(6, 6).double()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, length = x.shape[0], x.shape[1]
        h = self.linear(x).view(batch * length, 2, 3).reshape(batch, length, 6)
        return torch.relu(h)


class WithBlock(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.block = Block()
        self.head = nn.Linear(6, 2).double()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.block(x).mean(1))


def test_a_module_output_is_an_activation_not_a_size() -> None:
    model = WithBlock().eval()
    x = torch.randn(3, 4, 6, dtype=F64)
    attributions, delta = LayerDeepLift(model, model.block).attribute(x, 0.0, target=1, return_convergence_delta=True)
    assert attributions.shape == x.shape
    assert delta.abs().max() < 1e-12


def test_inputs_the_model_cannot_take_are_named_and_logs_stay_quiet(capfd: pytest.CaptureFixture[str]) -> None:
    model = nn.Sequential(nn.Linear(10, 3)).eval()
    with pytest.raises(
        CaptureError, match=r"cannot run on the given inputs \(shapes \(2, 7\) float32\).*mat1 and mat2"
    ):
        DeepLift(model).attribute(torch.randn(2, 7), target=0)
    assert capfd.readouterr().err == ""


def test_a_layer_that_runs_no_operation_is_its_input() -> None:
    """An eval-mode dropout (and nn.Identity) runs no op in the captured graph; its output is its
    input, and Layer methods return their attributions there (as Captum does).  The hook that
    marks it while capturing is gone afterwards."""
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(4, 5), nn.Dropout(0.3), nn.Tanh(), nn.Identity(), nn.Linear(5, 2)).double().eval()
    x = torch.randn(3, 4, dtype=F64)
    at_dropout, delta = LayerDeepLift(model, model[1]).attribute(x, 0.0, target=1, return_convergence_delta=True)
    at_linear = LayerDeepLift(model, model[0]).attribute(x, 0.0, target=1)
    torch.testing.assert_close(at_dropout, at_linear, rtol=1e-12, atol=0)
    assert delta.abs().max() < 1e-12
    at_identity = LayerDeepLift(model, model[3]).attribute(x, 0.0, target=1)
    at_tanh = LayerDeepLift(model, model[2]).attribute(x, 0.0, target=1)
    torch.testing.assert_close(at_identity, at_tanh, rtol=1e-12, atol=0)
    assert all(not module._forward_hooks for module in model.modules())
