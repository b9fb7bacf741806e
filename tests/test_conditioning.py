"""Exact is not enough: DeepLIFT's rules must also be well-conditioned.

For softmax, log-softmax and logsumexp with logit gaps from 0 to 1000, for attention with sharp
scores, and for layer, group and RMS norms at a reference with zero variance:

- summation-to-delta holds (float64 to 1e-10 of the output change, float32 to 1e-4);
- float32 attributions equal float64 attributions to 1e-3 of their largest value;
- no contribution exceeds ten times the largest Integrated Gradients attribution (512 steps,
  float64) on the same input: no contribution is orders of magnitude larger than the change it
  explains.

Then the values themselves, re-derived by hand (the logsumexp chain of Shrikumar et al. 2017,
sections 3.5.1-3.5.2 written without shifts; the scale split of a normalising product), the
relative near-zero test on a small-signal network, RevealCancel's 0/0 limit, and the checks
that speak: a summation failure warns (raises with ``strict``), cancelling contributions warn.
"""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from torch import nn

from deltalift import DeepLift, IntegratedGradients
from deltalift.errors import ConvergenceError, ConvergenceWarning, IllConditionedWarning
from deltalift.rules import OpRule, Pair, default_registry, with_multipliers

F64, F32 = torch.float64, torch.float32


def _attribute(model, x, baseline, target, **options):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning may be raised on a well-conditioned case
        return DeepLift(model, **options).attribute(x, baseline, target=target, return_convergence_delta=True)


def assert_well_conditioned(model: nn.Module, x: torch.Tensor, baseline, target) -> torch.Tensor:
    """The three conditions of the module docstring; returns the float64 contributions."""
    model64 = copy.deepcopy(model).to(F64)
    out, out0 = model64(x.to(F64)), model64(torch.zeros_like(x.to(F64)) + baseline)
    change = (out - out0)[:, target]
    c64, d64 = _attribute(model64, x.to(F64), baseline, target)
    assert (d64.abs() <= 1e-10 * change.abs() + 1e-12).all(), (d64, change)
    c32, d32 = _attribute(copy.deepcopy(model).to(F32), x.to(F32), baseline, target)
    assert (d32.abs() <= 1e-4 * change.abs().float() + 1e-5).all(), (d32, change)
    largest = c64.abs().max()
    # (a floor far below the outputs' scale, for contributions that underflow in float32)
    assert (c32.double() - c64).abs().max() <= 1e-3 * largest + 1e-9 * (1 + change.abs().max())
    ig = IntegratedGradients(model64).attribute(x.to(F64), baseline, target=target, n_steps=512)
    assert largest <= 10 * ig.abs().max(), (float(largest), float(ig.abs().max()))
    return c64


class Softmax(nn.Module):
    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        if self.kind == "softmax":
            return torch.softmax(v, -1)
        if self.kind == "log_softmax":
            return torch.log_softmax(v, -1)
        return torch.logsumexp(v, -1, keepdim=True)


GAPS = [0.0, 1.0, 10.0, 20.0, 40.0, 100.0, 1000.0]


@pytest.mark.parametrize("kind", ["softmax", "log_softmax", "logsumexp"])
@pytest.mark.parametrize("gap", GAPS)
def test_softmax_family_is_well_conditioned(kind: str, gap: float) -> None:
    x = torch.tensor([[gap, gap / 2, 0.0, 0.0, 0.0], [-gap, 0.3, gap / 3, 1.0, -1.0]], dtype=F64)
    target = 0 if kind == "logsumexp" else 1
    assert_well_conditioned(Softmax(kind), x, 0.0, target)
    # and against a reference that is sharp too, the other way round
    assert_well_conditioned(Softmax(kind), x, torch.tensor([[0.0, 0.0, gap, 0.0, 0.0]], dtype=F64), target)


@pytest.mark.parametrize("kind", ["softmax", "log_softmax", "logsumexp"])
@pytest.mark.parametrize("shift", [300.0, 2500.0])
def test_a_common_shift_of_large_logits_keeps_float32_at_its_rounding(kind: str, shift: float) -> None:
    """Every logit moves by about ``shift`` (a network fed inputs of scale 500, as in Captum's
    max-pooling classification tests): the closed-form logsumexp contributions are about
    ``shift / n`` each, and the probabilities' rounding, magnified by ``q ~ shift``, used to leave
    their sum off by ``shift * n * ulp(1)`` (1e-3 at 2500). Now float32's summation error stays
    within a few ulps of the logits, each contribution within float32's intrinsic relative error
    ``eps * shift`` of float64, and float64 is exact to 1e-12 of the shift."""
    base = torch.tensor([[0.3, -0.2, 0.5, 0.1, -0.4], [1.0, 0.2, -0.7, 0.0, 0.4]], dtype=F64)
    x, x0 = base + shift, base.roll(1, -1)
    target = 0 if kind == "logsumexp" else 2
    model = Softmax(kind)
    c64, d64 = _attribute(model, x, x0, target)
    assert d64.abs().max() <= 1e-12 * shift
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", IllConditionedWarning)  # contributions ~shift/n explain a change ~1
        c32, d32 = DeepLift(model).attribute(x.float(), x0.float(), target=target, return_convergence_delta=True)
    ulp = torch.finfo(F32).eps * shift
    assert d32.abs().max() <= 8 * ulp, (d32, ulp)
    # each contribution is about shift * p_j, and p_j = exp(x_j - L) inherits the rounding of the
    # log-probability (one ulp of the logits): relative error up to about eps * shift, intrinsic to
    # float32 logits of this size
    assert (c32.double() - c64).abs().max() <= 100 * torch.finfo(F32).eps * shift * c64.abs().max()


def test_softmax_figures() -> None:
    """softmax(x)[1] for x = (g, g/2, 0, 0, 0) against zeros changes by about -0.2: the contributions
    stay of that size (the product split of exp(x - c) * (1/sum) gave +-14.8 at g = 10, +-2202 at
    g = 20, +-4.9e7 at g = 40 and NaN from g = 100)."""
    for gap, first, second in [
        (10, -0.4746, 0.2813),
        (20, -0.4382, 0.2383),
        (40, -0.4175, 0.2175),
        (1000, -0.4006, 0.2006),
    ]:
        x = torch.tensor([[gap, gap / 2, 0.0, 0.0, 0.0]], dtype=F64)
        c, _ = _attribute(Softmax("softmax"), x, 0.0, 1)
        torch.testing.assert_close(c[0, :2], torch.tensor([first, second], dtype=F64), rtol=0, atol=1e-4)
        assert c[0, 2:].abs().max() < 1e-12


def _softmax_by_hand(x: torch.Tensor, x0: torch.Tensor, i: int) -> torch.Tensor:
    """Contributions to softmax(x)_i, composed by hand without shifts: L = log(sum(exp(x)))
    (Rescale on exp, Linear sum, Rescale on log), y = x - L (Linear), p = exp(y) (Rescale)."""
    e, e0 = x.exp(), x0.exp()
    s, s0 = e.sum(), e0.sum()
    big_l, big_l0 = s.log(), s0.log()
    c_l = (big_l - big_l0) / (s - s0) * (e - e0)  # m_log * m_exp_j * dx_j
    c_y = -c_l
    c_y[i] += x[i] - x0[i]
    y, y0 = x[i] - big_l, x0[i] - big_l0
    return (y.exp() - y0.exp()) / (y - y0) * c_y


def test_softmax_values_equal_the_chain_by_hand() -> None:
    x = torch.tensor([[0.5, -1.0, 2.0, 0.25]], dtype=F64)
    x0 = torch.tensor([[0.1, 0.3, -0.2, 0.0]], dtype=F64)
    for i in range(4):
        c, _ = _attribute(Softmax("softmax"), x, x0, i)
        torch.testing.assert_close(c[0], _softmax_by_hand(x[0], x0[0], i), rtol=1e-12, atol=1e-15)


def test_logsumexp_values_equal_the_chain_by_hand() -> None:
    x = torch.tensor([[0.5, -1.0, 2.0]], dtype=F64)
    x0 = torch.tensor([[1.0, 0.0, -3.0]], dtype=F64)
    c, _ = _attribute(Softmax("logsumexp"), x, x0, 0)
    e, e0 = x.exp(), x0.exp()
    expected = (e.sum().log() - e0.sum().log()) / (e.sum() - e0.sum()) * (e - e0)
    torch.testing.assert_close(c, expected, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("dtype", [torch.float32, F64])
@pytest.mark.parametrize("x0_shift", [-0.7, 0.9])  # the reference's total below, then above the input's
def test_logsumexp_multiplier_where_an_input_equals_its_reference(dtype, x0_shift) -> None:
    """Where ``x_j = x0_j`` the secant ``C_j / dx_j`` is 0/0 and the rule takes its limit, formed at
    those positions alone: by the chain by hand, ``(L - L0) / (S - S0) * exp(x0_j)`` (Rescale on
    exp at the reference, then the log's secant); elsewhere ``(L - L0) / (S - S0) * (e_j - e0_j) / dx_j``."""
    x = torch.tensor([[0.5, -1.0, 2.0, 0.3]], dtype=dtype)
    x0 = torch.tensor([[0.5 + x0_shift, 0.2, 2.0, -0.4 + x0_shift]], dtype=dtype)  # x_2 = x0_2
    m, _ = _attribute(Softmax("logsumexp"), x, x0, 0, multiply_by_inputs=False)
    x64, x064 = x.to(F64), x0.to(F64)
    e, e0 = x64.exp(), x064.exp()
    secant = (e.sum().log() - e0.sum().log()) / (e.sum() - e0.sum())
    expected = secant * torch.where(x64 == x064, e0, (e - e0) / (x64 - x064))
    tolerance = 1e-6 if dtype == torch.float32 else 1e-13
    torch.testing.assert_close(m.to(F64), expected, rtol=tolerance, atol=tolerance)


class Attention(nn.Module):
    def __init__(self, scale: float, width: int = 8) -> None:
        super().__init__()
        torch.manual_seed(3)
        self.q, self.k, self.v = nn.Linear(width, width), nn.Linear(width, width), nn.Linear(width, width)
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scores = self.scale * self.q(x) @ self.k(x).transpose(1, 2)
        return (torch.softmax(scores, -1) @ self.v(x)).sum(1)


@pytest.mark.parametrize("scale", [1.0, 10.0, 30.0, 100.0])
def test_sharp_attention_is_well_conditioned(scale: float) -> None:
    x = torch.randn(2, 5, 8, generator=torch.Generator().manual_seed(4), dtype=F64)
    assert_well_conditioned(Attention(scale).eval(), x, 0.0, 2)


class ManualRMSNorm(nn.Module):
    """RMS norm as model code writes it (T5's and Llama's): x * rsqrt(mean(x^2) + eps)."""

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + 1e-6)


class ManualLayerNorm(nn.Module):
    """(x - mean) / sqrt(var + eps), written out."""

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        centred = h - h.mean(-1, keepdim=True)
        return centred / torch.sqrt(centred.pow(2).mean(-1, keepdim=True) + 1e-6)


NORMS = {
    "layer_norm": lambda: nn.LayerNorm(8, eps=1e-6),
    "rms_norm": lambda: nn.RMSNorm(8, eps=1e-6),
    "manual_rms_norm": ManualRMSNorm,
    "manual_layer_norm": ManualLayerNorm,
}


@pytest.mark.parametrize("norm", sorted(NORMS))
@pytest.mark.parametrize("reference", ["zero", "constant"])
def test_norms_at_a_zero_variance_reference_are_well_conditioned(norm: str, reference: str) -> None:
    torch.manual_seed(5)
    model = nn.Sequential(NORMS[norm](), nn.Linear(8, 3), nn.Tanh(), nn.Linear(3, 2)).eval()
    x = torch.randn(3, 8, generator=torch.Generator().manual_seed(6), dtype=F64)
    baseline = 0.0 if reference == "zero" else 0.7  # both have zero variance
    assert_well_conditioned(model, x, baseline, 1)


def test_group_norm_at_a_zero_reference_is_well_conditioned() -> None:
    torch.manual_seed(7)
    model = nn.Sequential(nn.Conv1d(2, 4, 3), nn.GroupNorm(2, 4), nn.ReLU(), nn.Flatten(), nn.Linear(16, 2)).eval()
    x = torch.randn(2, 2, 6, generator=torch.Generator().manual_seed(8), dtype=F64)
    assert_well_conditioned(model, x, 0.0, 0)


def test_normalising_product_uses_the_smaller_scale() -> None:
    """RMS norm of (3, 4) against (0, 0): the scale at the reference is rsqrt(eps), so the value's
    multiplier is the input's scale and the scale's contribution (times the reference value 0) is 0:
    the contributions are the normalised values themselves."""
    x = torch.tensor([[3.0, 4.0]], dtype=F64)
    c, _ = _attribute(ManualRMSNorm(), x, 0.0, 0)
    n = x / torch.sqrt((x**2).mean() + 1e-6)
    torch.testing.assert_close(c, torch.tensor([[n[0, 0], 0.0]], dtype=F64), rtol=1e-12, atol=1e-15)


def test_small_signal_network_keeps_every_contribution() -> None:
    """Activations of order 1e-9 with a zero reference: an absolute near-zero test (1e-7) would take
    the derivative of ReLU at the reference (0) everywhere and lose every contribution; the relative
    test keeps the secant, so the contributions are exact."""
    torch.manual_seed(9)
    model = nn.Sequential(nn.Linear(6, 5, bias=False), nn.ReLU(), nn.Linear(5, 1, bias=False)).double().eval()
    with torch.no_grad():
        model[0].weight[:3].abs_()  # three units active on positive inputs, two mixed
    x = 1e-9 * torch.rand(4, 6, dtype=F64)
    c, delta = _attribute(model, x, 0.0, 0)
    change = model(x)[:, 0]
    assert (change.abs() > 0).all()
    assert (delta.abs() <= 1e-10 * change.abs()).all()
    hidden = torch.relu(x @ model[0].weight.T)  # Rescale: each active unit passes its input's share
    expected = ((hidden > 0) * model[2].weight[0])[:, :, None] * (x[:, None, :] * model[0].weight[None])
    torch.testing.assert_close(c, expected.sum(1), rtol=1e-10, atol=0)


def _dense_relu(weights: list[float], bias: float) -> nn.Module:
    layer = nn.Linear(len(weights), 1).double()
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([weights]))
        layer.bias.fill_(bias)
    return nn.Sequential(layer, nn.ReLU()).eval()


def test_reveal_cancel_uses_the_limit_where_dz_is_zero() -> None:
    """w = (1, 2, 4), b = -1, input (1, 1, 0), reference 0: dz+ = 3, dz- = 0.  m+ = dy+/dz+ = 2/3,
    and m- is 0/0: its limit (f'(z0) + f'(z0 + dz+)) / 2 = (0 + 1) / 2.  The third input (dx = 0) gets
    1/2 W^T (m+ + m-) = 2 (2/3 + 1/2) = 7/3 (the derivative at z0 would give 4/3)."""
    model = _dense_relu([1.0, 2.0, 4.0], -1.0)
    x = torch.tensor([[1.0, 1.0, 0.0]], dtype=F64)
    m = DeepLift(model, multiply_by_inputs=False, rule="reveal_cancel").attribute(x, 0.0)
    torch.testing.assert_close(m, torch.tensor([[2 / 3, 4 / 3, 7 / 3]], dtype=F64), rtol=1e-12, atol=0)


def test_reveal_cancel_is_continuous_in_the_weights() -> None:
    """w = (1, -d, 2), b = -0.5, input (1, 1, 0), reference 0: dz+ = 1 and dz- = -d.  At d = 0, m- is
    0/0 and takes its limit (f'(-0.5) + f'(0.5)) / 2 = 1/2; at d = 1e-9 the secant is 1/2 as well, so
    the multiplier of the third input (dx = 0: 1/2 W^T (m+ + m-) = m+ + m- = 1) does not jump (the
    derivative at z0, 0, would have given 1/2 at d = 0)."""
    x = torch.tensor([[1.0, 1.0, 0.0]], dtype=F64)

    def multipliers(d: float) -> torch.Tensor:
        model = _dense_relu([1.0, -d, 2.0], -0.5)
        return DeepLift(model, multiply_by_inputs=False, rule="reveal_cancel", eps=1e-14).attribute(x, 0.0)

    at_zero, at_tiny = multipliers(0.0), multipliers(1e-9)
    assert (at_zero - at_tiny).abs().max() < 1e-8
    torch.testing.assert_close(at_zero[0, 2], torch.tensor(1.0, dtype=F64), rtol=1e-12, atol=0)


def _old_softmax(ctx, op, args, kwargs):
    """Softmax as exp(x - c) * (1 / sum): exact, but the product split of its two factors cancels."""
    aten = torch.ops.aten
    pair, dim = args[0], args[1]
    shift = torch.maximum(pair.x.detach().amax(dim, keepdim=True), pair.ref.amax(dim, keepdim=True))
    exps = ctx.call(aten.exp.default, ctx.call(aten.sub.Tensor, pair, shift))
    total = ctx.call(aten.sum.dim_IntList, exps, [dim], True)
    recip = ctx.call(aten.reciprocal.default, total)
    a, b = exps, recip
    with torch.no_grad():
        value, ref = a.x.detach() * b.x.detach(), a.ref * b.ref
        mids = ((b.x.detach() + b.ref) / 2, (a.x.detach() + a.ref) / 2)
    return Pair(with_multipliers(value, [a.x, b.x], list(mids)), ref)


def test_cancelling_contributions_warn() -> None:
    registry = default_registry.copy()
    registry.register(torch.ops.aten._softmax, OpRule(_old_softmax, "composite"))
    x = torch.tensor([[20.0, 10.0, 0.0, 0.0, 0.0]], dtype=F64)
    with pytest.warns(IllConditionedWarning, match="cancel"):
        c = DeepLift(Softmax("softmax"), registry=registry).attribute(x, 0.0, target=1)
    assert c.abs().max() > 1e3  # the ill-conditioned split it detected


def test_a_wrong_rule_warns_and_raises_when_strict() -> None:
    """A deliberately wrong rule (Linear on exp) breaks summation-to-delta: the check speaks even
    though the contributions are small."""
    registry = default_registry.copy()
    registry.register(torch.ops.aten.exp, OpRule(default_registry.find(torch.ops.aten.add).apply, "custom"))
    x = torch.tensor([[0.5, 1.0]], dtype=F64)
    with pytest.warns(ConvergenceWarning, match="summation-to-delta fails"):
        DeepLift(lambda v: torch.exp(v).sum(1, keepdim=True), registry=registry).attribute(x, 0.0)
    with pytest.raises(ConvergenceError):
        DeepLift(lambda v: torch.exp(v).sum(1, keepdim=True), registry=registry, strict=True).attribute(x, 0.0)
