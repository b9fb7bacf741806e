"""Each rule against a hand-worked example or its defining formula."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import deltalift
from deltalift import DeepLift, MissingRuleError
from deltalift.rules import RuleRegistry, default_registry, rescale

DTYPE = torch.float64


class Lambda(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, *xs):
        return self.fn(*xs)


def t(values):
    return torch.tensor(values, dtype=DTYPE)


def attribute(fn, x, baseline=0.0, **kwargs):
    method_kwargs = {
        k: kwargs.pop(k)
        for k in list(kwargs)
        if k in ("eps", "maxpool_mode", "multiply_by_inputs", "registry", "strict")
    }
    return DeepLift(Lambda(fn).eval(), **method_kwargs).attribute(
        x, baselines=baseline, return_convergence_delta=True, **kwargs
    )


# --- max pooling -------------------------------------------------------------------------------


def pool_sum(x):
    return F.max_pool1d(x, kernel_size=2, stride=1).sum(-1).flatten(1)


def test_maxpool_overlapping_windows_accumulate():
    """Windows [1, 3] and [3, 2] both pick position 1: it gets 3 + 3 = 6 (last-wins scatter gives 3)."""
    attr, delta = attribute(pool_sum, t([[[1.0, 3.0, 2.0]]]), t([[[0.0, 0.0, 0.0]]]))
    torch.testing.assert_close(attr, t([[[0.0, 6.0, 0.0]]]), rtol=0, atol=1e-15)
    assert delta.abs().max() < 1e-15


def test_maxpool_routes_to_reference_argmax_when_reference_is_larger():
    """max(x) = 1 at 0, max(x0) = 2 at 1: the change -1 goes to position 1 (dx = -2, m = 1/2)."""
    x, ref = t([[[1.0, 0.0]]]), t([[[0.0, 2.0]]])
    attr, delta = attribute(pool_sum, x, ref)
    torch.testing.assert_close(attr, t([[[0.0, -1.0]]]), rtol=0, atol=1e-15)
    multipliers, _ = attribute(pool_sum, x, ref, multiply_by_inputs=False)
    torch.testing.assert_close(multipliers, t([[[0.0, 0.5]]]), rtol=0, atol=1e-15)


def test_maxpool_gradient_mode_is_the_gradient():
    """The original package's "gradient" mode: multipliers route to the input's arg-max."""
    x, ref = t([[[1.0, 0.0]]]), t([[[0.0, 2.0]]])
    with pytest.warns(deltalift.ConvergenceWarning, match="summation-to-delta fails"):
        multipliers, delta = attribute(pool_sum, x, ref, maxpool_mode="gradient", multiply_by_inputs=False)
    torch.testing.assert_close(multipliers, t([[[1.0, 0.0]]]), rtol=0, atol=0)
    assert delta.item() == pytest.approx(1.0 - (-1.0))  # contributions sum to 1, the change is -1


def test_maxpool2d_relu_feeding_pool_keeps_summation():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(2, 3, 3), nn.ReLU(), nn.MaxPool2d(3, stride=1), nn.Flatten(), nn.Linear(3 * 4 * 4, 2)
    )
    model = model.to(DTYPE).eval()
    x, ref = torch.randn(3, 2, 8, 8, dtype=DTYPE), torch.randn(1, 2, 8, 8, dtype=DTYPE)
    attr, delta = DeepLift(model, strict=True).attribute(x, ref, target=1, return_convergence_delta=True)
    assert delta.abs().max() < 1e-12


def test_amax_and_max_dim_route_like_pooling():
    x, ref = t([[1.0, 3.0, 2.0]]), t([[0.0, 0.0, 4.0]])
    attr, delta = attribute(lambda v: v.amax(-1, keepdim=True), x, ref)
    # max(x) = 3 < max(x0) = 4: the change -1 goes to the reference's arg-max (position 2, dx = -2)
    torch.testing.assert_close(attr, t([[0.0, 0.0, -1.0]]), rtol=0, atol=1e-15)
    attr2, _ = attribute(lambda v: torch.max(v, dim=1).values[:, None], x, ref)
    torch.testing.assert_close(attr2, attr, rtol=0, atol=0)
    attr3, _ = attribute(lambda v: -torch.amin(-v, dim=1, keepdim=True), x, ref)
    torch.testing.assert_close(attr3, attr, rtol=0, atol=1e-15)


# --- Rescale -------------------------------------------------------------------------------------


def test_rescale_multiplier_is_the_secant():
    x, ref = t([[0.5, -2.0, 3.0]]), t([[1.0, 1.0, -1.0]])
    multipliers, _ = attribute(lambda v: torch.sigmoid(v).sum(1), x, ref, multiply_by_inputs=False)
    expected = (torch.sigmoid(x) - torch.sigmoid(ref)) / (x - ref)
    torch.testing.assert_close(multipliers, expected, rtol=1e-14, atol=0)


@pytest.mark.parametrize("eps, use_derivative", [(1e-7, True), (1e-10, False)])
def test_eps_switches_to_derivative_at_reference(eps, use_derivative):
    ref = t([[0.3]])
    x = ref + 1e-9
    multipliers, _ = attribute(torch.tanh, x, ref, multiply_by_inputs=False, eps=eps)
    derivative = 1 - torch.tanh(ref) ** 2
    secant = (torch.tanh(x) - torch.tanh(ref)) / (x - ref)
    if use_derivative:
        assert multipliers.item() == derivative.item()
    else:
        assert multipliers.item() == secant.item()
        assert multipliers.item() != derivative.item()


def test_relu_at_equal_input_and_reference_uses_derivative():
    x = t([[2.0, -2.0]])
    multipliers, _ = attribute(lambda v: F.relu(v).sum(1), x, x.clone(), multiply_by_inputs=False)
    torch.testing.assert_close(multipliers, t([[1.0, 0.0]]), rtol=0, atol=0)


def test_where_as_relu_equals_relu():
    x, ref = t([[1.5, -2.0, 0.5]]), t([[-1.0, 1.0, 0.25]])
    a, _ = attribute(lambda v: torch.where(v > 0, v, torch.zeros_like(v)).sum(1), x, ref)
    b, _ = attribute(lambda v: F.relu(v).sum(1), x, ref)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-15)


def test_maximum_of_two_activations_is_the_shapley_split():
    """maximum(a, b) at a = 3, b = 1 from (0, 2): f(a,b0)=3, f(a0,b)=1, f(a0,b0)=2, f(a,b)=3."""
    attr, delta = attribute(lambda v: torch.maximum(v[:, :1], v[:, 1:]), t([[3.0, 1.0]]), t([[0.0, 2.0]]))
    phi_a = 0.5 * ((3 - 2) + (3 - 1))
    phi_b = 0.5 * ((1 - 2) + (3 - 3))
    torch.testing.assert_close(attr, t([[phi_a, phi_b]]), rtol=0, atol=1e-15)
    assert delta.abs().max() < 1e-15


# --- products ------------------------------------------------------------------------------------


def test_product_multipliers_are_the_midpoints():
    x, ref = t([[3.0, 5.0]]), t([[1.0, 2.0]])
    multipliers, delta = attribute(lambda v: v[:, :1] * v[:, 1:], x, ref, multiply_by_inputs=False)
    torch.testing.assert_close(multipliers, t([[3.5, 2.0]]), rtol=0, atol=0)
    attr, _ = attribute(lambda v: v[:, :1] * v[:, 1:], x, ref)
    assert attr.sum().item() == pytest.approx(15 - 2)


def test_matmul_of_two_activations_is_exact():
    torch.manual_seed(1)

    def attention_scores(v):
        q, k = v[:, :6].reshape(-1, 2, 3), v[:, 6:].reshape(-1, 3, 2)
        return (q @ k).flatten(1)

    x, ref = torch.randn(4, 12, dtype=DTYPE), torch.randn(1, 12, dtype=DTYPE)
    model = Lambda(attention_scores).eval()
    attr, delta = DeepLift(model, strict=True).attribute(x, ref, target=2, return_convergence_delta=True)
    assert delta.abs().max() < 1e-13
    # bilinear split: C_q = dq (k + k0)/2 ; check against the explicit formula
    q, k = x[:, :6].reshape(-1, 2, 3), x[:, 6:].reshape(-1, 3, 2)
    q0, k0 = ref[:, :6].reshape(-1, 2, 3), ref[:, 6:].reshape(-1, 3, 2)
    row, col = divmod(2, 2)
    c_q = (q - q0)[:, row, :] * ((k + k0) / 2)[:, :, col]
    torch.testing.assert_close(attr[:, :6].reshape(-1, 2, 3)[:, row, :], c_q, rtol=1e-12, atol=1e-14)


def test_division_by_an_activation_keeps_summation():
    x, ref = t([[2.0, 4.0], [1.0, -3.0]]), t([[1.0, 1.0]])
    attr, delta = attribute(lambda v: v[:, :1] / (1 + v[:, 1:] ** 2), x, ref)
    assert delta.abs().max() < 1e-14


# --- composites ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fn",
    [
        lambda v: torch.softmax(v, -1),
        lambda v: torch.log_softmax(v * 30, -1),
        lambda v: torch.logsumexp(v, -1, keepdim=True),
        lambda v: F.layer_norm(v, (20,)),
        lambda v: F.group_norm(v.reshape(v.shape[0], 4, 5), 2).flatten(1),
        lambda v: torch.var(v, -1, keepdim=True),
        lambda v: F.rms_norm(v, (20,)),
    ],
    ids=["softmax", "log_softmax_large_logits", "logsumexp", "layer_norm", "group_norm", "var", "rms_norm"],
)
def test_composites_keep_summation_exactly(fn):
    torch.manual_seed(2)
    x, ref = torch.randn(3, 20, dtype=DTYPE), torch.randn(1, 20, dtype=DTYPE)
    target = min(1, fn(x).shape[1] - 1)
    attr, delta = DeepLift(Lambda(fn).eval(), strict=True).attribute(
        x, ref, target=target, return_convergence_delta=True
    )
    out, out0 = fn(x)[:, target], fn(ref)[:, target]
    torch.testing.assert_close(attr.sum(1), out - out0, rtol=1e-10, atol=1e-12)
    assert delta.abs().max() < 1e-12


def test_softmax_is_the_exp_of_x_minus_logsumexp():
    """softmax = exp(x - logsumexp(x)), each piece by its own rule, composed by hand without shifts:
    L = log(sum(exp(x))) (Rescale on exp, Linear sum, Rescale on log), y = x - L, p = exp(y) (Rescale).
    (The product split of exp(x - c) * (1 / sum) is exact too but ill-conditioned; see
    tests/test_conditioning.py.)"""
    x, ref = t([[0.5, -1.0, 2.0]]), t([[0.0, 0.0, 0.0]])
    attr, _ = attribute(lambda v: torch.softmax(v, -1), x, ref, target=2)
    e, e0 = x.exp(), ref.exp()
    total, total0 = e.sum().log(), e0.sum().log()
    c_total = (total - total0) / (e.sum() - e0.sum()) * (e - e0)
    c_y = -c_total
    c_y[0, 2] += x[0, 2] - ref[0, 2]
    y, y0 = x[0, 2] - total, ref[0, 2] - total0
    expected = (y.exp() - y0.exp()) / (y - y0) * c_y
    torch.testing.assert_close(attr, expected, rtol=1e-12, atol=1e-14)


# --- registry ------------------------------------------------------------------------------------


def test_op_without_rule_raises_and_names_the_op():
    with pytest.raises(MissingRuleError, match=r"aten\.i0.*register_rule"):
        attribute(lambda v: torch.special.i0(v).sum(1), t([[0.5, 1.0]]))


def test_registering_a_rule_makes_the_op_work():
    registry: RuleRegistry = default_registry.copy()
    deltalift.register_rule(torch.ops.aten.i0, rescale, registry=registry)
    x = t([[0.5, 1.0]])
    attr, delta = attribute(lambda v: torch.special.i0(v).sum(1), x, registry=registry)
    torch.testing.assert_close(attr, torch.special.i0(x) - 1.0, rtol=1e-14, atol=0)
    assert delta.abs().max() < 1e-14
    assert torch.ops.aten.i0 not in default_registry


def test_every_documented_way_of_registering_a_rule():
    """register_rule with each built-in rule, with bilinear_in, with a plain function (kind
    "custom" or given), and a clear error for a rule that does not fit the op."""
    from deltalift.errors import UnsupportedOperationError
    from deltalift.rules import OpRule, Pair, bilinear, bilinear_in, linear, with_multipliers

    aten = torch.ops.aten
    x = t([[0.5, 1.0]])
    registry = default_registry.copy()
    deltalift.register_rule(aten.i0, rescale, registry=registry)
    assert registry.kind(aten.i0) == "elementwise"
    i0_attr, _ = attribute(lambda v: torch.special.i0(v).sum(1), x, registry=registry)
    torch.testing.assert_close(i0_attr, torch.special.i0(x) - 1.0, rtol=1e-14, atol=0)

    def i0_by_hand(ctx, op, args, kwargs):
        (pair,) = args
        with torch.no_grad():
            y, y0 = op(pair.x.detach()), op(pair.ref)
        return Pair(with_multipliers(y, [pair.x], [(y - y0) / (pair.x.detach() - pair.ref)]), y0)

    for rule, kind in ((i0_by_hand, None), (i0_by_hand, "elementwise"), (OpRule(i0_by_hand, "custom"), None)):
        registry = default_registry.copy()
        deltalift.register_rule(aten.i0, rule, registry=registry, kind=kind)
        assert registry.kind(aten.i0) == (kind or "custom")
        by_hand, _ = attribute(lambda v: torch.special.i0(v).sum(1), x, registry=registry)
        torch.testing.assert_close(by_hand, i0_attr, rtol=1e-14, atol=0)

    registry = default_registry.copy()
    deltalift.register_rule(aten.i0, linear, registry=registry)  # i0 is not affine: the check speaks
    with pytest.warns(deltalift.ConvergenceWarning):
        attribute(lambda v: torch.special.i0(v).sum(1), x, registry=registry)

    registry = default_registry.copy()
    deltalift.register_rule(aten.i0, bilinear, registry=registry)  # i0 has one argument
    with pytest.raises(UnsupportedOperationError, match="product of its arguments 0 and 1"):
        attribute(lambda v: torch.special.i0(v).sum(1), x, registry=registry)

    registry = default_registry.copy()
    deltalift.register_rule(aten.mul, bilinear_in(0, 1), registry=registry)  # the Shapley split
    a, b = t([[1.0, 2.0]]), t([[3.0, -1.0]])
    product, _ = attribute(lambda u, v: (u * v).sum(1), (a, b), (t([[0.0, 1.0]]), t([[1.0, 1.0]])), registry=registry)
    torch.testing.assert_close(product[0], (a - t([[0.0, 1.0]])) * (b + 1.0) / 2, rtol=1e-14, atol=0)

    with pytest.raises(TypeError, match="a rule must be an OpRule or a function"):
        deltalift.register_rule(aten.i0, "rescale", registry=default_registry.copy())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown kind"):
        deltalift.register_rule(aten.i0, rescale, registry=default_registry.copy(), kind="nonlinear")


# --- Rescale: the ReLU rule and the near-zero gate ----------------------------------------------


def _multiplier(rule, op, x, x0):
    """The multiplier a rule wires into ``op``'s output, read back through autograd."""
    from deltalift.rules.registry import Pair, RuleContext

    leaf = x.clone().requires_grad_(True)
    out = rule(RuleContext(), op, (Pair(leaf, x0),), {})
    (m,) = torch.autograd.grad(out.x, leaf, torch.ones_like(out.x))
    return out, m


def _awkward_pairs(dtype):
    """Inputs and references with every case the near-zero fallback decides: equal values (also
    both zero, +0 against -0), same-sign differences far below eps, opposite signs, and the rest."""
    g = torch.Generator().manual_seed(5)
    x0 = torch.randn(3, 200, generator=g, dtype=dtype)
    x = torch.randn(3, 200, generator=g, dtype=dtype)
    x[:, :20] = x0[:, :20]  # equal
    x[:, 20:40] = x0[:, 20:40] * (1 + 1e-9)  # same sign, relative difference below eps
    x0[:, 40:50], x[:, 40:50] = 0.0, 0.0
    x0[:, 50:55], x[:, 50:55] = -0.0, 0.0
    x0[:, 55:60], x[:, 55:60] = 0.0, 1e-30
    return x, x0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shared", [False, True], ids=["own_reference", "shared_reference"])
def test_relu_rule_gives_the_general_rescale_values(dtype, shared):
    """``rules.relu`` takes a shortcut (only ``x == x0`` can change the secant, section 3.5.2's
    fallback being the slope itself elsewhere); its output, reference output and multipliers
    must be the general Rescale rule's, value for value."""
    from deltalift.rules import relu

    x, x0 = _awkward_pairs(dtype)
    if shared:
        x0 = x0[:1]
    op = torch.ops.aten.relu.default
    fast, m_fast = _multiplier(relu, op, x, x0)
    general, m_general = _multiplier(rescale, op, x, x0)
    assert torch.equal(fast.x, general.x) and torch.equal(fast.ref, general.ref)
    assert torch.equal(m_fast, m_general)
    assert ((m_fast == 0) | (m_fast == 1)).float().mean() > 0.5 and ((m_fast > 0) & (m_fast < 1)).any()


def as_mask(positions, like):
    mask = torch.zeros(like.shape, dtype=torch.bool)
    if positions is not None:
        mask[positions] = True
    return mask


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("eps", [1e-7, 1e-3, 0.25, 0.5, 0.0])
def test_near_zero_gate_never_changes_the_mask(dtype, eps):
    """``near_zero`` decides the common case from ``min |dx|`` and the reference's largest value
    (``difference=True``) or the largest values of both sides; whatever the gate decides, the
    positions must be exactly those with ``|x - x0| <= eps max(|x|, |x0|)`` (NaN from ``inf - inf`` near),
    also for differences just around the threshold."""
    from deltalift.rules.rescale import near_zero

    g = torch.Generator().manual_seed(7)
    for scale in (1.0, 1e-20, 1e20):
        x0 = torch.randn(4, 50, generator=g, dtype=dtype) * scale
        for factor in (0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 10.0, 1e6):
            for rows in ("all", "one"):
                delta = factor * eps * x0.abs() * torch.sign(torch.randn(4, 50, generator=g, dtype=dtype))
                if rows == "one":
                    delta[1:] = torch.randn(3, 50, generator=g, dtype=dtype) * scale
                x = x0 + delta
                expected = (x - x0).abs().nan_to_num(nan=0.0) <= eps * torch.maximum(x.abs(), x0.abs())
                for difference in (True, False):
                    assert torch.equal(as_mask(near_zero(x - x0, eps, x, x0, difference), x), expected)
                    if rows == "all" and factor == 0.0:  # every position near: returned as a mask
                        assert near_zero(x - x0, eps, x, x0, difference)[0].dtype == torch.bool
    x, x0 = torch.tensor([1.0, float("inf"), 2.0], dtype=dtype), torch.tensor([1.0, float("inf"), 1.0], dtype=dtype)
    expected = (x - x0).abs().nan_to_num(nan=0.0) <= eps * torch.maximum(x.abs(), x0.abs())  # inf - inf: near
    assert torch.equal(as_mask(near_zero(x - x0, eps, x, x0), x), expected)


@pytest.mark.parametrize("one_row", ["reference", "input"])
def test_near_zero_mask_where_one_side_is_broadcast(one_row):
    """A side of one row broadcast over the other's batch (a shared reference; a layer's input
    against per-example references): the mask has the difference's shape and is exactly
    ``|x - x0| <= eps max(|x|, |x0|)``, near and too far positions in every row."""
    from deltalift.rules.rescale import near_zero

    eps = 1e-3
    g = torch.Generator().manual_seed(11)
    many = torch.randn(4, 50, generator=g, dtype=torch.float64)
    one = torch.randn(1, 50, generator=g, dtype=torch.float64)
    many[:, ::3] = one[:, ::3] * (1 + 0.5 * eps)  # near
    many[:, 1::3] = one[:, 1::3] * (1 + 2.5 * eps)  # too far
    x, x0 = (many, one) if one_row == "reference" else (one, many)
    expected = (x - x0).abs() <= eps * torch.maximum(x.abs(), x0.abs())
    assert expected[:, ::3].all() and not expected[:, 1::3].any()
    (mask,) = near_zero(x - x0, eps, x, x0, as_mask=True)
    assert mask.shape == (4, 50) and torch.equal(mask, expected)


@pytest.mark.parametrize(
    ("x_shape", "x_dtype", "x0_shape", "x0_dtype"),
    [
        ((4, 5), torch.float32, (1, 5), torch.float32),  # a shared reference: into |x|
        ((4, 5), torch.float32, (1, 5), torch.float64),  # a wider reference: the wider dtype
        ((1, 5), torch.float64, (4, 5), torch.float64),  # per-example references: a new tensor
    ],
)
def test_largest_of_magnitudes_is_the_broadcast_maximum_in_the_wider_dtype(x_shape, x_dtype, x0_shape, x0_dtype):
    from deltalift.rules.rescale import _largest_of_magnitudes

    g = torch.Generator().manual_seed(12)
    x = torch.randn(x_shape, generator=g, dtype=torch.float64).to(x_dtype)
    x0 = torch.randn(x0_shape, generator=g, dtype=torch.float64).to(x0_dtype)
    before = x0.clone()
    got = _largest_of_magnitudes(x, x0)
    expected = torch.maximum(x.abs(), x0.abs())
    assert got.dtype == expected.dtype and torch.equal(got, expected)
    assert torch.equal(x0, before)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [(6, 40, 30), (3, 800), (2400,), (240, 1), ()])
def test_near_zero_few_candidate_rows_found_exactly(dtype, shape):
    """Where few rows of the last dimension hold candidates, ``near_zero`` searches those rows
    alone; the positions must still be exactly ``|x - x0| <= eps max(|x|, |x0|)``: near and just
    too far positions in a few rows, an ``inf - inf`` NaN, in 3-D, 1-D, a last dimension of one
    and a scalar."""
    from deltalift.rules.rescale import near_zero

    eps = 1e-3
    g = torch.Generator().manual_seed(3)
    x0 = torch.randn(shape, generator=g, dtype=dtype) + 3.0
    x = x0 + torch.rand(shape, generator=g, dtype=dtype) + 0.5  # nowhere near
    flat_x, flat_x0 = x.view(-1), x0.view(-1)
    planted = ((0, 0.0), (1, 0.5), (7, 1.5), (199, 0.999), (-1, 1.001)) if shape else ((0, 0.0),)
    for position, factor in planted:
        flat_x[position] = flat_x0[position] * (1 + factor * eps)
    for infinite in (False, True):
        if infinite and flat_x.numel() > 1:
            flat_x[5] = flat_x0[5] = float("inf")  # inf - inf: NaN, counted as near
        expected = (x - x0).abs().nan_to_num(nan=0.0) <= eps * torch.maximum(x.abs(), x0.abs())
        assert expected.any()
        near = near_zero(x - x0, eps, x, x0)
        assert near is not None and torch.equal(as_mask(near, x), expected)
        if shape and not infinite:  # candidates in few rows or positions: indices, not a mask
            assert near[0].dtype == torch.long
        (mask,) = near_zero(x - x0, eps, x, x0, as_mask=True)
        assert mask.dtype == torch.bool and torch.equal(mask, expected)


def test_square_multiplier_is_x_plus_x0():
    """Rescale on ``x ** 2``: ``(x^2 - x0^2) / (x - x0) = x + x0`` (3 and 1: multiplier 4, contribution 8 = 9 - 1),
    also where ``x = x0`` (the derivative ``2 x0``), for ``pow``, ``square`` and ``x * x`` written as a power."""
    x, ref = t([[3.0, 2.0, -1.5]]), t([[1.0, 2.0, 0.5]])
    for fn in (lambda v: (v**2).sum(1, keepdim=True), lambda v: torch.square(v).sum(1, keepdim=True)):
        multipliers, _ = attribute(fn, x, ref, multiply_by_inputs=False, target=0)
        assert multipliers.tolist() == [[4.0, 4.0, -1.0]]
        contributions, delta = attribute(fn, x, ref, target=0)
        assert contributions.tolist() == [[8.0, 0.0, 2.0]] and float(delta.abs().max()) == 0.0


def test_square_is_well_conditioned_in_float32():
    """Near a large value the difference of squares cancels in float32 (1e4 + 0.01 against 1e4:
    x^2 - x0^2 = 200.0001 is lost to rounding at 1e8); the secant ``x + x0`` is exact there."""
    x64, ref64 = torch.tensor([[1e4 + 0.01]], dtype=torch.float64), torch.tensor([[1e4]], dtype=torch.float64)
    m32, _ = attribute(lambda v: v**2, x64.float(), ref64.float(), multiply_by_inputs=False, target=0)
    m64, _ = attribute(lambda v: v**2, x64, ref64, multiply_by_inputs=False, target=0)
    assert abs(float(m32) - float(m64)) / float(m64) < 1e-6


def test_other_exponents_keep_the_general_rescale():
    x, ref = t([[2.0]]), t([[1.0]])
    multipliers, _ = attribute(lambda v: v**3, x, ref, multiply_by_inputs=False, target=0)
    assert multipliers.tolist() == [[7.0]]  # (8 - 1) / (2 - 1)


class _NativeLayerNorm(nn.Module):
    """``native_layer_norm`` with its mean read (times zero) or not: the rule composes the chain
    op by op where the mean is read, in one step where it is not."""

    def __init__(self, read_mean: bool) -> None:
        super().__init__()
        self.read_mean = read_mean
        g = torch.Generator().manual_seed(3)
        self.weight = nn.Parameter(torch.rand(6, generator=g, dtype=DTYPE) + 0.5)
        self.bias = nn.Parameter(torch.randn(6, generator=g, dtype=DTYPE))
        self.head = nn.Linear(6, 2).to(DTYPE)
        with torch.no_grad():
            self.head.weight.copy_(torch.randn(2, 6, generator=g, dtype=DTYPE))

    def forward(self, x):
        out, mean, _ = torch.native_layer_norm(x, [6], self.weight, self.bias, 1e-5)
        h = torch.tanh(out)
        if self.read_mean:
            h = h + 0.0 * mean
        return self.head(h).sum(1)


@pytest.mark.parametrize("shared", [False, True])
def test_normalisation_in_one_step_equals_the_chain_of_rules(shared):
    torch.manual_seed(0)
    x = torch.randn(3, 4, 6, dtype=DTYPE)
    ref = torch.randn(1 if shared else 3, 4, 6, dtype=DTYPE) * 0.3
    ref[..., 0, :] = 0.7  # a row with zero variance
    one_step, delta = DeepLift(_NativeLayerNorm(False).eval()).attribute(
        x, ref, target=1, return_convergence_delta=True
    )
    chain = DeepLift(_NativeLayerNorm(True).eval()).attribute(x, ref, target=1)
    torch.testing.assert_close(one_step, chain, rtol=1e-10, atol=1e-12)
    assert delta.abs().max() < 1e-10


def test_bmm_with_one_matrix_for_every_batch_is_one_matrix_product():
    """``bmm(a, W.expand(L, K, M))`` (``F.linear`` on a permuted activation, decomposed) equals the
    batched product, and DeepLIFT through it is the Linear rule's (a ViT-like token projection)."""
    from deltalift.rules.product import _one_matrix_for_all_batches, _rows_times_matrix

    g = torch.Generator().manual_seed(1)
    a, w = torch.randn(5, 3, 4, generator=g, dtype=DTYPE), torch.randn(4, 6, generator=g, dtype=DTYPE)
    expanded = w.expand(5, 4, 6)
    assert _one_matrix_for_all_batches(expanded) and not _one_matrix_for_all_batches(expanded.contiguous())
    torch.testing.assert_close(_rows_times_matrix(a, expanded), torch.bmm(a, expanded), rtol=1e-14, atol=1e-14)

    def tokens_first(v):  # (n, L, K) -> (L, n, K) @ W -> sum
        return torch.bmm(v.transpose(0, 1), w.expand(v.shape[1], 4, 6)).sum((0, 2))[:, None]

    x = torch.randn(3, 5, 4, generator=g, dtype=DTYPE)
    contributions, delta = attribute(tokens_first, x, 0.0, target=0)
    torch.testing.assert_close(contributions, x * w.sum(1), rtol=1e-12, atol=1e-12)  # linear: W's row sums
    assert delta.abs().max() < 1e-12


def test_a_power_with_a_tensor_exponent_keeps_the_general_rule():
    exponent = t([2.0, 3.0])
    x, ref = t([[2.0, 2.0]]), t([[1.0, 1.0]])
    multipliers, _ = attribute(lambda v: torch.pow(v, exponent).sum(1, keepdim=True), x, ref, multiply_by_inputs=False)
    assert multipliers.tolist() == [[3.0, 7.0]]  # (4 - 1) / 1 and (8 - 1) / 1


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32, torch.float64])
def test_relu_multiplier_operator_hand_worked(dtype):
    """``deltalift.rules.operators.relu_multiplier`` by hand: both sides positive 1, both at or
    below zero 0, opposite sides the secant, and ``x == x0`` the slope at the reference (1 above
    zero, 0 at or below), NaN nowhere."""
    from deltalift.rules.operators import relu_multiplier

    x = torch.tensor([2.0, -1.0, 3.0, 0.5, -2.0, 1.0, 0.0], dtype=dtype)
    x0 = torch.tensor([1.0, 1.0, -1.0, 0.5, -2.0, -3.0, 0.0], dtype=dtype)
    m = relu_multiplier(x, x0, torch.relu(x), torch.relu(x0))
    expected = torch.tensor([1.0, 0.5, 0.75, 1.0, 0.0, 0.25, 0.0], dtype=dtype)
    assert m.dtype == dtype and torch.equal(m, expected)
    empty = torch.zeros(0, 3, dtype=dtype)
    assert relu_multiplier(empty, empty, empty, empty).shape == (0, 3)


def test_relu_multiplier_operator_broadcasts_keeps_layout_and_passes_opcheck():
    """An input side repeated by a stride of 0 (one row expanded) against a channels-last
    reference: the result is laid out as ``y - y0``, every row repaired at its own ``0 / 0``
    positions; ``torch.library.opcheck`` checks the repair operator's schema (it writes its
    first argument), its fake implementation and tracing."""
    from deltalift.rules.operators import relu_multiplier

    g = torch.Generator().manual_seed(3)
    row = torch.randn(1, 3, 1, 5, generator=g, dtype=torch.float64)
    x = row.expand(4, 3, 1, 5)
    x0 = torch.randn(4, 3, 1, 5, generator=g, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    x0[1, :, :, :2] = row[0, :, :, :2]  # 0 / 0 in one row only: above and below zero
    args = (x, x0, torch.relu(row).expand(4, 3, 1, 5), torch.relu(x0))
    m = relu_multiplier(*args)
    assert m.stride() == torch.sub(args[2], args[3]).stride()
    slope = (x0 > 0).double()
    secant = (args[2] - args[3]) / (x - x0)
    at_ref = x == x0
    assert int(at_ref.sum()) == 6 and bool(at_ref[1, :, :, :2].all())
    assert torch.equal(m[at_ref], slope[at_ref]) and torch.equal(m[~at_ref], secant[~at_ref])
    unrepaired = (args[2] - args[3]) / (x - x0)
    torch.library.opcheck(torch.ops.deltalift.relu_multiplier_repair_.default, (unrepaired, x0))


def test_relu_multipliers_repair_is_the_identity_where_nothing_is_zero_by_zero():
    """The repair an accelerator always runs (no read-back of the check): values without NaN
    stay as they are, bit for bit; NaN becomes the slope at the reference."""
    from deltalift.rules.operators import repair_zero_by_zero

    g = torch.Generator().manual_seed(4)
    m = torch.rand(6, 50, generator=g, dtype=torch.float64)
    x0 = torch.randn(6, 50, generator=g, dtype=torch.float64)
    assert torch.equal(repair_zero_by_zero(m.clone(), x0), m)
    m[2, :10] = float("nan")
    repaired = repair_zero_by_zero(m.clone(), x0)
    assert torch.equal(repaired[2, :10], (x0[2, :10] > 0).double())
    assert torch.equal(repaired[:2], m[:2]) and torch.equal(repaired[2, 10:], m[2, 10:])
