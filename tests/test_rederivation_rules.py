"""DeepLIFT's rules for products, normalisations, max pooling and RevealCancel, re-derived by hand.

Each test rewrites a small float64 model as explicit formulas on one example at a time (plain
Python loops over elements, explicit matrices for the linear layers), composes the multipliers
backwards from the target by DeepLIFT's chain rule for multipliers (Shrikumar et al. 2017,
"Multipliers and the chain rule"; summation-to-delta ``sum_i C_i = t(x) - t(x0)``, section 3.1), and
compares deltalift's multipliers (``multiply_by_inputs=False``) and contributions at
``rtol=1e-10, atol=1e-12``.  No deltalift code, hook or autograd is used in the re-derivations:

* Linear (section 3.5.1): ``m <- W^T m`` (for a convolution, ``W`` is built column by column from the
  convolution of basis images);
* Rescale (section 3.5.2): ``m = (f(z) - f(z0)) / (z - z0)``, the derivative ``f'(z0)`` where
  ``|z - z0| <= 1e-7 max(|z|, |z0|)``;
* products of two activations (not covered by sections 3.5.1-3.5.3): the two-player Shapley value,
  the average over both orders that section 3.5.3 takes for RevealCancel's positive and negative
  parts, checked against an asymmetric split that is exact too;
* normalisations: the composition mean -> centre -> square (Rescale) -> mean -> rsqrt (Rescale) ->
  product with the *scale split* (the smaller of the two scales multiplies the change);
* max pooling (no rule of sections 3.5.1-3.5.3; deltalift's ``maxpool_mode="summation"``): the
  window's change routed to the arg-max of the side with the larger maximum, accumulated over
  overlapping windows, which keeps summation-to-delta (section 3.1);
* RevealCancel (section 3.5.3): against the variant without its Shapley average.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import pytest
import torch
from torch import nn

from deltalift import DeepLift

DTYPE = torch.float64
RTOL, ATOL = 1e-10, 1e-12
EPS = 1e-7  #: deltalift's default threshold of the derivative fallback
Tensor = torch.Tensor


# --------------------------------------------------------------------------------------------------
# shared pieces of the re-derivations


def randn(*shape: int, seed: int, scale: float = 1.0) -> Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=generator, dtype=DTYPE) * scale


def seeded(module: nn.Module, seed: int) -> nn.Module:
    """``module`` in float64, eval mode, every parameter drawn from a seeded normal."""
    generator = torch.Generator().manual_seed(seed)
    module = module.to(DTYPE).eval()
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=generator, dtype=DTYPE) * 0.8)
    return module


def secant(fz: float, fz0: float, z: float, z0: float, df_z0: float) -> float:
    """Rescale's multiplier of one element: ``(f(z) - f(z0)) / (z - z0)``, ``f'(z0)`` where
    ``|z - z0| <= EPS * max(|z|, |z0|)`` (Shrikumar et al. 2017, section 3.5.2)."""
    if abs(z - z0) <= EPS * max(abs(z), abs(z0)):
        return df_z0
    return (fz - fz0) / (z - z0)


def sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z)) if z >= 0 else math.exp(z) / (1.0 + math.exp(z))


def tanh_multipliers(z: list[float], z0: list[float]) -> list[float]:
    return [secant(math.tanh(a), math.tanh(b), a, b, 1.0 - math.tanh(b) ** 2) for a, b in zip(z, z0)]


def sigmoid_multipliers(z: list[float], z0: list[float]) -> list[float]:
    return [secant(sigmoid(a), sigmoid(b), a, b, sigmoid(b) * (1.0 - sigmoid(b))) for a, b in zip(z, z0)]


def matrix_of(linear_fn: Callable[[Tensor], Tensor], in_shape: tuple[int, ...]) -> Tensor:
    """The explicit matrix (out, in) of a linear map on flattened examples: column ``i`` is
    ``f(e_i) - f(0)``."""
    n = math.prod(in_shape)
    with torch.no_grad():
        offset = linear_fn(torch.zeros((1, *in_shape), dtype=DTYPE)).reshape(1, -1)
        images = linear_fn(torch.eye(n, dtype=DTYPE).reshape(n, *in_shape)).reshape(n, -1)
    return (images - offset).T.contiguous()


def mat_vec(matrix: Tensor, v: list[float]) -> list[float]:
    rows = matrix.tolist()
    return [sum(w * a for w, a in zip(row, v)) for row in rows]


def mat_t_vec(matrix: Tensor, g: list[float]) -> list[float]:
    """``W^T g`` (Linear rule, section 3.5.1)."""
    rows = matrix.tolist()
    return [sum(rows[j][i] * g[j] for j in range(len(rows))) for i in range(len(rows[0]))]


def deeplift(model: nn.Module, x: Tensor, ref: Tensor, target: list[int], **options) -> tuple[Tensor, Tensor]:
    """deltalift's contributions and multipliers; its convergence delta must be at rounding level."""
    contributions, delta = DeepLift(model, **options).attribute(
        x, baselines=ref, target=target, return_convergence_delta=True
    )
    multipliers = DeepLift(model, multiply_by_inputs=False, **options).attribute(x, baselines=ref, target=target)
    assert delta.abs().max() < 1e-11
    return contributions, multipliers


def target_change(model: nn.Module, x: Tensor, ref: Tensor, target: list[int]) -> Tensor:
    with torch.no_grad():
        rows = range(x.shape[0])
        return model(x)[rows, target] - model(ref.expand_as(x))[rows, target]


def assert_close(got: Tensor, expected: Tensor) -> None:
    torch.testing.assert_close(got, expected, rtol=RTOL, atol=ATOL)


# --------------------------------------------------------------------------------------------------
# 1. products of two activations


def shapley_two_players(f: Callable[[float, float], float], a: float, b: float, a0: float, b0: float):
    """The two-player Shapley values of ``f(a, b) - f(a0, b0)``, by enumerating both orders."""
    phi_a = 0.5 * ((f(a, b0) - f(a0, b0)) + (f(a, b) - f(a0, b)))
    phi_b = 0.5 * ((f(a0, b) - f(a0, b0)) + (f(a, b) - f(a, b0)))
    return phi_a, phi_b


def product(p: float, q: float) -> float:
    return p * q


class TanhTimesSigmoid(nn.Module):
    """``head(tanh(W1 x + b1) * sigmoid(W2 x + b2))``: a product of two activations."""

    def __init__(self) -> None:
        super().__init__()
        self.lin_a, self.lin_b, self.head = nn.Linear(4, 5), nn.Linear(4, 5), nn.Linear(5, 3)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(torch.tanh(self.lin_a(x)) * torch.sigmoid(self.lin_b(x)))


def rederive_tanh_times_sigmoid(
    model: TanhTimesSigmoid, x: Tensor, ref: Tensor, target: list[int], split: str
) -> tuple[Tensor, Tensor]:
    """Multipliers and contributions of ``model`` under the product split ``split``:

    * ``"shapley"``: ``C(da) = phi_a``, ``C(db) = phi_b`` (brute-force two-player Shapley values),
      multipliers ``phi / d``;
    * ``"asymmetric"``: ``C(da) = da * b``, ``C(db) = a0 * db`` (``a b - a0 b0 = (a - a0) b + a0 (b - b0)``,
      exact too).

    Then Rescale through tanh and sigmoid and Linear back to ``x``.
    """
    W1, b1 = model.lin_a.weight.detach(), model.lin_a.bias.detach().tolist()
    W2, b2 = model.lin_b.weight.detach(), model.lin_b.bias.detach().tolist()
    W3 = model.head.weight.detach()
    ms = []
    for n in range(x.shape[0]):
        xs, x0s = x[n].tolist(), ref[n].tolist()
        u = [s + c for s, c in zip(mat_vec(W1, xs), b1)]
        u0 = [s + c for s, c in zip(mat_vec(W1, x0s), b1)]
        v = [s + c for s, c in zip(mat_vec(W2, xs), b2)]
        v0 = [s + c for s, c in zip(mat_vec(W2, x0s), b2)]
        g_z = W3[target[n]].tolist()
        g_u, g_v = [], []
        for i in range(len(u)):
            a, a0, b, b0 = math.tanh(u[i]), math.tanh(u0[i]), sigmoid(v[i]), sigmoid(v0[i])
            if split == "shapley":
                phi_a, phi_b = shapley_two_players(product, a, b, a0, b0)
                m_a, m_b = phi_a / (a - a0), phi_b / (b - b0)
            else:
                m_a, m_b = b, a0
            g_u.append(g_z[i] * m_a)
            g_v.append(g_z[i] * m_b)
        g_u = [g * m for g, m in zip(g_u, tanh_multipliers(u, u0))]
        g_v = [g * m for g, m in zip(g_v, sigmoid_multipliers(v, v0))]
        ms.append([p + q for p, q in zip(mat_t_vec(W1, g_u), mat_t_vec(W2, g_v))])
    m = torch.tensor(ms, dtype=DTYPE)
    return m, m * (x - ref)


def test_product_of_two_activations_is_the_two_player_shapley_split():
    """``z = tanh(W1 x + b1) * sigmoid(W2 x + b2)``, then a linear head: per element the
    two-player Shapley values ``phi_a = 1/2 [(f(a, b0) - f(a0, b0)) + (f(a, b) - f(a0, b))]``
    (and symmetrically ``phi_b``; the average over both orders, as section 3.5.3 averages
    RevealCancel's positive and negative parts), chained back by hand through Rescale (section
    3.5.2) and the linear layers (section 3.5.1).  The asymmetric exact split ``C(da) = da b, C(db) = a0 db``
    also sums to delta but gives other values: the comparison tells the two apart."""
    model = seeded(TanhTimesSigmoid(), seed=1)
    x, ref = randn(4, 4, seed=2), randn(4, 4, seed=3, scale=0.7)
    target = [0, 2, 1, 2]
    contributions, multipliers = deeplift(model, x, ref, target)

    expected_m, expected_c = rederive_tanh_times_sigmoid(model, x, ref, target, "shapley")
    assert_close(multipliers, expected_m)
    assert_close(contributions, expected_c)

    dt = target_change(model, x, ref, target)
    _, asymmetric = rederive_tanh_times_sigmoid(model, x, ref, target, "asymmetric")
    torch.testing.assert_close(expected_c.sum(1), dt, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(asymmetric.sum(1), dt, rtol=1e-12, atol=1e-12)  # exact as well
    assert (asymmetric - contributions).abs().max() > 1e-2
    assert (asymmetric - expected_c).abs().max() > 1e-2


class BatchedProduct(nn.Module):
    """``bmm(tanh(x[:, :6]).view(N, 2, 3), sigmoid(x[:, 6:]).view(N, 3, 2))``, flattened: the
    features of ``A`` and of ``B`` are separate inputs, so the contributions of ``A``'s elements
    are those of ``x[:, :6]`` (Rescale keeps an element's contribution, section 3.5.2)."""

    def forward(self, x: Tensor) -> Tensor:
        a = torch.tanh(x[:, :6]).reshape(-1, 2, 3)
        b = torch.sigmoid(x[:, 6:]).reshape(-1, 3, 2)
        return torch.bmm(a, b).flatten(1)


def test_bmm_of_two_activations_gives_each_player_its_shapley_value():
    """For every output element ``(i, k)`` of ``C = A B`` (``f(A, B) = sum_j A_ij B_jk``) the
    contributions of ``A``'s elements sum to the two-player Shapley value of player ``A``,
    ``1/2 [(f(A, B0) - f(A0, B0)) + (f(A, B) - f(A0, B))]``, and ``B``'s to player ``B``'s.  Per
    element, ``f`` is a sum of two-player games ``A_ij B_jk``, whose Shapley values add up
    (additivity): element ``A_ij`` gets ``phi_A`` of the game ``A_ij B_jk``, element ``B_jk`` gets
    ``phi_B`` of it.  The asymmetric split ``C(dA) = dA B``, ``C(dB) = A0 dB`` gives ``A`` the
    value ``f(A, B) - f(A0, B)`` instead, which differs."""
    model = BatchedProduct()
    x, ref = randn(3, 12, seed=4), randn(3, 12, seed=5, scale=0.8)
    for i in range(2):
        for k in range(2):
            target = [2 * i + k] * 3
            contributions, _ = deeplift(model, x, ref, target)
            for n in range(3):
                xs, x0s = x[n].tolist(), ref[n].tolist()
                A = [[math.tanh(xs[3 * r + c]) for c in range(3)] for r in range(2)]
                A0 = [[math.tanh(x0s[3 * r + c]) for c in range(3)] for r in range(2)]
                B = [[sigmoid(xs[6 + 2 * r + c]) for c in range(2)] for r in range(3)]
                B0 = [[sigmoid(x0s[6 + 2 * r + c]) for c in range(2)] for r in range(3)]

                def f(a_side: list[list[float]], b_side: list[list[float]]) -> float:
                    return sum(a_side[i][j] * b_side[j][k] for j in range(3))  # noqa: B023

                phi_a = 0.5 * ((f(A, B0) - f(A0, B0)) + (f(A, B) - f(A0, B)))
                phi_b = 0.5 * ((f(A0, B) - f(A0, B0)) + (f(A, B) - f(A, B0)))
                got_a, got_b = contributions[n, :6].sum().item(), contributions[n, 6:].sum().item()
                assert got_a == pytest.approx(phi_a, rel=RTOL, abs=ATOL)
                assert got_b == pytest.approx(phi_b, rel=RTOL, abs=ATOL)
                assert abs((f(A, B) - f(A0, B)) - got_a) > 1e-3  # the asymmetric split's player A

                expected = [0.0] * 12
                for j in range(3):
                    game_a, game_b = shapley_two_players(product, A[i][j], B[j][k], A0[i][j], B0[j][k])
                    expected[3 * i + j] = game_a
                    expected[6 + 2 * j + k] = game_b
                assert_close(contributions[n], torch.tensor(expected, dtype=DTYPE))


# --------------------------------------------------------------------------------------------------
# 2. normalisations


def normalise_backward(
    h: list[float], h0: list[float], g_out: list[float], eps: float, centre: bool, divisor: int | None = None
) -> tuple[list[float], list[float], bool]:
    """One normalisation group ``out_i = c_i * (mean(c^2) + eps)^-1/2`` with ``c = h - mean(h)``
    (``centre``) or ``c = h`` (RMS norm): its values, the multipliers on ``h`` from those
    ``g_out`` on ``out`` and which side of the scale split applied, by the chain of

    * mean and centring (Linear): ``c = (I - 1 1^T / n) h``, its own transpose;
    * the square (Rescale): ``m_q = (c^2 - c0^2) / (c - c0) = c + c0`` (``2 c0`` in the fallback);
    * the mean of the squares (Linear, ``/ n``), ``t = var + eps`` (Linear);
    * ``s = t^-1/2`` (Rescale): ``m_s = (s - s0) / (t - t0)`` (``-t0^-3/2 / 2`` in the fallback);
    * the scale split of ``c * s``: where ``|s| <= |s0|``, ``C(dc) = dc s`` and ``C(ds) = c0 ds``,
      elsewhere ``C(dc) = dc s0`` and ``C(ds) = c ds``.
    """
    n = len(h)
    divisor = n if divisor is None else divisor
    mu, mu0 = (sum(h) / n, sum(h0) / n) if centre else (0.0, 0.0)
    c, c0 = [v - mu for v in h], [v - mu0 for v in h0]
    m_q = [secant(ci * ci, ci0 * ci0, ci, ci0, 2 * ci0) for ci, ci0 in zip(c, c0)]
    t = sum(ci * ci for ci in c) / divisor + eps
    t0 = sum(ci * ci for ci in c0) / divisor + eps
    s, s0 = t**-0.5, t0**-0.5
    m_s = secant(s, s0, t, t0, -0.5 * t0**-1.5)
    smaller = abs(s) <= abs(s0)
    m_c = s if smaller else s0
    m_scale = c0 if smaller else c
    g_s = sum(g * mv for g, mv in zip(g_out, m_scale))
    g_q = g_s * m_s / divisor
    g_c = [g * m_c + g_q * mq for g, mq in zip(g_out, m_q)]
    mean_g = sum(g_c) / n if centre else 0.0
    return [ci * s for ci in c], [g - mean_g for g in g_c], smaller


class Normed(nn.Module):
    """``head(norm(pre(x).view(shape)).flatten(1))`` with bias-free ``pre``: a zero reference
    gives the norm an input with zero variance."""

    def __init__(self, norm: nn.Module, shape: tuple[int, ...]) -> None:
        super().__init__()
        d = math.prod(shape)
        self.shape = shape
        self.pre, self.norm, self.head = nn.Linear(5, d, bias=False), norm, nn.Linear(d, 3)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.norm(self.pre(x).reshape(-1, *self.shape)).flatten(1))


class RMSNormed(nn.Module):
    """RMS norm in model code: ``weight * (h * rsqrt(mean(h^2) + eps))``, ``h = pre(x)``."""

    def __init__(self) -> None:
        super().__init__()
        self.pre, self.head = nn.Linear(5, 6, bias=False), nn.Linear(6, 3)
        self.weight = nn.Parameter(torch.ones(6))
        self.eps = 1e-6

    def forward(self, x: Tensor) -> Tensor:
        h = self.pre(x)
        return self.head(self.weight * (h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)))


def norm_layout(model: nn.Module) -> tuple[list[list[int]], list[float], list[float], float, bool]:
    """The normalisation groups (flat indices of one example), per-element weight and bias,
    eps and whether the values are centred."""
    if isinstance(model, RMSNormed):
        return [list(range(6))], model.weight.detach().tolist(), [0.0] * 6, model.eps, False
    norm, shape = model.norm, model.shape
    d = math.prod(shape)
    if isinstance(norm, nn.LayerNorm):
        size = math.prod(norm.normalized_shape)
        groups = [list(range(s, s + size)) for s in range(0, d, size)]
        per_element = list(range(size)) * (d // size)
    else:  # GroupNorm / InstanceNorm1d on (C, L): weights per channel
        channels, length = shape
        n_groups = norm.num_groups if isinstance(norm, nn.GroupNorm) else channels
        size = d // n_groups
        groups = [list(range(s, s + size)) for s in range(0, d, size)]
        per_element = [i // length for i in range(d)]
    weight, bias = norm.weight.detach().tolist(), norm.bias.detach().tolist()
    return groups, [weight[p] for p in per_element], [bias[p] for p in per_element], norm.eps, True


def rederive_norm(
    model: nn.Module, x: Tensor, ref: Tensor, target: list[int]
) -> tuple[Tensor, Tensor, Tensor, set[bool]]:
    """Multipliers, contributions and the outputs of ``model`` re-derived by hand, and the
    branches of the scale split taken (``True``: ``|s| <= |s0|``)."""
    groups, weight, bias, eps, centre = norm_layout(model)
    P, Q = model.pre.weight.detach(), model.head.weight.detach()
    head_bias = model.head.bias.detach().tolist()
    ms, outputs, branches = [], [], set()
    for n in range(x.shape[0]):
        h, h0 = mat_vec(P, x[n].tolist()), mat_vec(P, ref[n].tolist())
        g_out = [w * g for w, g in zip(weight, Q[target[n]].tolist())]  # head (Linear), then the affine weight
        g_h, normed = [0.0] * len(h), [0.0] * len(h)
        for group in groups:
            values, g_group, smaller = normalise_backward(
                [h[i] for i in group], [h0[i] for i in group], [g_out[i] for i in group], eps, centre
            )
            branches.add(smaller)
            for i, value, g in zip(group, values, g_group):
                normed[i], g_h[i] = value, g
        ms.append(mat_t_vec(P, g_h))
        y = [w * v + b for w, v, b in zip(weight, normed, bias)]
        outputs.append([s + b for s, b in zip(mat_vec(Q, y), head_bias)])
    m = torch.tensor(ms, dtype=DTYPE)
    return m, m * (x - ref), torch.tensor(outputs, dtype=DTYPE), branches


_NORMS: dict[str, Callable[[], nn.Module]] = {
    "layer_norm": lambda: Normed(nn.LayerNorm(6), (6,)),
    "layer_norm_3d": lambda: Normed(nn.LayerNorm(4), (3, 4)),
    "group_norm": lambda: Normed(nn.GroupNorm(2, 4), (4, 3)),
    "instance_norm": lambda: Normed(nn.InstanceNorm1d(4, affine=True), (4, 3)),
    "rms_norm": RMSNormed,
}


@functools.cache  # one model per name, so that deltalift captures it once for both references
def norm_model(name: str) -> nn.Module:
    return seeded(_NORMS[name](), seed=len(name))


@pytest.mark.parametrize("reference", ["random", "zeros"])
@pytest.mark.parametrize("name", list(_NORMS))
def test_normalisation_is_the_composition_with_the_scale_split(name, reference):
    """Layer norm, group norm, instance norm (its batch norm without running statistics) and
    RMS norm written as ``h * rsqrt(mean(h^2) + eps)``, between linear layers: the chain of
    :func:`normalise_backward` (mean and centring: Linear, section 3.5.1; the square and
    ``rsqrt``: Rescale, section 3.5.2; the product ``c * s``: deltalift's scale split, not a rule
    of the paper, ``C(dc) = dc *`` the scale of smaller magnitude, ``C(ds) =`` the other side's
    ``c`` times ``ds``), then the affine weight and the
    head (Linear).  Against a random reference, and a zero reference whose normalised input has
    zero variance (``s0 = eps^-1/2``: the split takes ``s`` for the change).  The random
    references are scaled per example so that both branches of the split occur."""
    model = norm_model(name)
    x = randn(4, 5, seed=10)
    spread = torch.tensor([[0.4], [1.8], [0.6], [2.5]], dtype=DTYPE)
    ref = randn(4, 5, seed=11) * spread if reference == "random" else torch.zeros(4, 5, dtype=DTYPE)
    target = [0, 1, 2, 1]
    expected_m, expected_c, outputs, branches = rederive_norm(model, x, ref, target)
    assert branches == ({True, False} if reference == "random" else {True})
    with torch.no_grad():
        torch.testing.assert_close(outputs, model(x), rtol=1e-12, atol=1e-12)  # the formulas are the model
    torch.testing.assert_close(expected_c.sum(1), target_change(model, x, ref, target), rtol=1e-12, atol=1e-12)

    contributions, multipliers = deeplift(model, x, ref, target)
    assert_close(multipliers, expected_m)
    assert_close(contributions, expected_c)


def test_scale_split_is_needed_at_a_zero_variance_reference():
    """Guard against a vacuous check: at a zero reference the symmetric Shapley product
    ``C(dc) = dc (s + s0) / 2`` gives (exact, but) other contributions than the scale split, so
    the comparison above does test the split."""
    model = norm_model("layer_norm")
    x, ref, target = randn(2, 5, seed=12), torch.zeros(2, 5, dtype=DTYPE), [0, 2]
    _, expected_c, _, _ = rederive_norm(model, x, ref, target)
    groups, weight, _, eps, _ = norm_layout(model)
    P, Q = model.pre.weight.detach(), model.head.weight.detach()
    for n in range(2):
        h = mat_vec(P, x[n].tolist())
        mu = sum(h) / 6
        c = [v - mu for v in h]
        s, s0 = (sum(v * v for v in c) / 6 + eps) ** -0.5, eps**-0.5
        g_out = [w * g for w, g in zip(weight, Q[target[n]].tolist())]
        # the symmetric split's contribution of the change dc (c0 = 0): g dc (s + s0) / 2
        symmetric = sum(g * ci * (s + s0) / 2 for g, ci in zip(g_out, c))
        split = sum(g * ci * s for g, ci in zip(g_out, c))
        assert abs(symmetric - split) > 1.0
        assert expected_c[n].abs().max() < 10.0  # bounded by the split, not ~eps^-1/2


class Moments(nn.Module):
    """``head(cat(h, var(h), std(h)))`` with ``h = pre(x)``, ``torch.var``/``torch.std`` over the
    features (Bessel's correction)."""

    def __init__(self) -> None:
        super().__init__()
        self.pre, self.head = nn.Linear(5, 6, bias=False), nn.Linear(8, 3)

    def forward(self, x: Tensor) -> Tensor:
        h = self.pre(x)
        v = torch.var(h, dim=-1, keepdim=True)
        s = torch.std(h, dim=-1, keepdim=True)
        return self.head(torch.cat([h, v, s], dim=-1))


@functools.cache
def moments_model() -> nn.Module:
    return seeded(Moments(), seed=20)


@pytest.mark.parametrize("reference", ["random", "zeros"])
def test_variance_and_std_are_the_composition(reference):
    """``var = sum((h - mean)^2) / (n - 1)`` as mean and centring (Linear), the square (Rescale:
    ``m = c + c0``), the sum over ``n - 1`` (Linear), and ``std = sqrt(var)`` (Rescale:
    ``(sqrt(v) - sqrt(v0)) / (v - v0)``); sections 3.5.1-3.5.2.  The head sees ``h`` directly too."""
    model = moments_model()
    x = randn(4, 5, seed=21)
    ref = randn(4, 5, seed=22, scale=0.6) if reference == "random" else torch.zeros(4, 5, dtype=DTYPE)
    target = [2, 0, 1, 2]
    P, Q = model.pre.weight.detach(), model.head.weight.detach()
    ms = []
    for n in range(4):
        h, h0 = mat_vec(P, x[n].tolist()), mat_vec(P, ref[n].tolist())
        mu, mu0 = sum(h) / 6, sum(h0) / 6
        c, c0 = [v - mu for v in h], [v - mu0 for v in h0]
        var, var0 = sum(v * v for v in c) / 5, sum(v * v for v in c0) / 5
        std, std0 = math.sqrt(var), math.sqrt(var0)
        m_std = secant(std, std0, var, var0, 0.5 / std0 if std0 > 0 else math.inf)
        g = Q[target[n]].tolist()
        g_var = g[6] + g[7] * m_std
        g_c = [g_var / 5 * secant(ci * ci, ci0 * ci0, ci, ci0, 2 * ci0) for ci, ci0 in zip(c, c0)]
        mean_g = sum(g_c) / 6
        g_h = [gh + gc - mean_g for gh, gc in zip(g[:6], g_c)]
        ms.append(mat_t_vec(P, g_h))
    expected_m = torch.tensor(ms, dtype=DTYPE)
    expected_c = expected_m * (x - ref)
    torch.testing.assert_close(expected_c.sum(1), target_change(model, x, ref, target), rtol=1e-12, atol=1e-12)

    contributions, multipliers = deeplift(model, x, ref, target)
    assert_close(multipliers, expected_m)
    assert_close(contributions, expected_c)


# --------------------------------------------------------------------------------------------------
# 3. max pooling


def pool_output_size(size: int, kernel: int, stride: int, padding: int, dilation: int) -> int:
    """PyTorch's output length with ``ceil_mode=True``: the last window must start inside the
    input or its left padding."""
    out = math.ceil((size + 2 * padding - dilation * (kernel - 1) - 1) / stride) + 1
    if (out - 1) * stride >= size + padding:
        out -= 1
    return out


def rederive_max_pool(
    a: list[list[list[float]]],
    a0: list[list[list[float]]],
    g: list[list[list[float]]],
    kernel: int,
    stride: int,
    padding: int,
    dilation: int,
) -> tuple[list[list[list[float]]], dict[str, int]]:
    """Multipliers on the pool's input ``a`` (channels, H, W) from ``g`` on its output: in every
    window (members ``o * stride - padding + k * dilation``, padding and the positions past the
    input in ceil mode's partial windows left out, as ``-inf`` would be), the change
    ``max(a) - max(a0)`` goes to the arg-max of the side with the larger maximum (the input's on a
    tie), accumulated over the windows; ``m_j = routed_j / (a_j - a0_j)`` (the ordinary gradient
    where ``|a_j - a0_j| <= EPS max(|a_j|, |a0_j|)``).  Also counts what the data exercised."""
    channels, height, width = len(a), len(a[0]), len(a[0][0])
    routed = [[[0.0] * width for _ in range(height)] for _ in range(channels)]
    plain = [[[0.0] * width for _ in range(height)] for _ in range(channels)]
    hits = [[[0] * width for _ in range(height)] for _ in range(channels)]
    seen = {"to_reference_argmax": 0, "different_argmax": 0, "partial_windows": 0}
    for c in range(channels):
        for oh in range(len(g[c])):
            for ow in range(len(g[c][0])):
                members = [
                    (oh * stride - padding + kh * dilation, ow * stride - padding + kw * dilation)
                    for kh in range(kernel)
                    for kw in range(kernel)
                ]
                inside = [(h, w) for h, w in members if 0 <= h < height and 0 <= w < width]
                beyond = [(h, w) for h, w in members if h >= height + padding or w >= width + padding]
                seen["partial_windows"] += bool(beyond)
                j = max(inside, key=lambda p: a[c][p[0]][p[1]])  # noqa: B023
                j0 = max(inside, key=lambda p: a0[c][p[0]][p[1]])  # noqa: B023
                y, y0 = a[c][j[0]][j[1]], a0[c][j0[0]][j0[1]]
                winner = j if y >= y0 else j0
                seen["to_reference_argmax"] += winner != j
                seen["different_argmax"] += j != j0
                routed[c][winner[0]][winner[1]] += g[c][oh][ow] * (y - y0)
                hits[c][winner[0]][winner[1]] += 1
                plain[c][j[0]][j[1]] += g[c][oh][ow]
    m = [[[0.0] * width for _ in range(height)] for _ in range(channels)]
    for c in range(channels):
        for h in range(height):
            for w in range(width):
                d = a[c][h][w] - a0[c][h][w]
                near = abs(d) <= EPS * max(abs(a[c][h][w]), abs(a0[c][h][w]))
                m[c][h][w] = plain[c][h][w] if near else routed[c][h][w] / d
    seen["accumulated"] = sum(k > 1 for plane in hits for row in plane for k in row)
    return m, seen


class ConvPool(nn.Module):
    def __init__(self, dilation: int, conv: bool) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3, padding=1) if conv else nn.Identity()
        self.pool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1, dilation=dilation, ceil_mode=True)
        channels = 2 if conv else 1
        oh, ow = (pool_output_size(s, 3, 2, 1, dilation) for s in (8, 10))
        self.head = nn.Linear(channels * oh * ow, 3)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.pool(self.conv(x)).flatten(1))


@pytest.mark.parametrize("conv", [True, False], ids=["after_conv", "on_input"])
@pytest.mark.parametrize("dilation", [1, 2])
def test_max_pool_routes_the_change_to_the_larger_maximum(dilation, conv):
    """``MaxPool2d(3, stride=2, padding=1, dilation, ceil_mode=True)`` on 8x10 planes (overlapping
    windows, partial windows at the bottom and right), after a convolution (Linear through its
    explicit matrix, section 3.5.1) and without one (the pool's own multipliers are then the
    input's), before a linear head: :func:`rederive_max_pool` by a loop over the windows.  Random
    data (no ties); the input's and the reference's maxima sit at different positions in some
    windows, and some positions collect the change of several windows.  Max pooling has no rule
    in sections 3.5.1-3.5.3; this is deltalift's ``maxpool_mode="summation"``, whose
    contributions sum to delta (section 3.1, checked on the re-derivation)."""
    model = seeded(ConvPool(dilation, conv), seed=30 + dilation)
    x, ref = randn(3, 1, 8, 10, seed=31), randn(3, 1, 8, 10, seed=32, scale=0.9)
    target = [0, 2, 1]
    pre = model.conv
    K = matrix_of(pre, (1, 8, 10))  # (C*8*10, 80)
    offset = (pre.bias.detach().repeat_interleave(80) if conv else torch.zeros(80, dtype=DTYPE)).tolist()
    oh, ow = (pool_output_size(s, 3, 2, 1, dilation) for s in (8, 10))
    channels = K.shape[0] // 80
    with torch.no_grad():
        assert tuple(model.pool(pre(x)).shape[1:]) == (channels, oh, ow)  # my window arithmetic is PyTorch's

    def planes(flat: list[float], c: int, h: int, w: int) -> list[list[list[float]]]:
        return [[flat[(k * h + i) * w : (k * h + i + 1) * w] for i in range(h)] for k in range(c)]

    ms = []
    for n in range(3):
        a = [s + b for s, b in zip(mat_vec(K, x[n].flatten().tolist()), offset)]
        a0 = [s + b for s, b in zip(mat_vec(K, ref[n].flatten().tolist()), offset)]
        g = planes(model.head.weight.detach()[target[n]].tolist(), channels, oh, ow)
        m, seen = rederive_max_pool(planes(a, channels, 8, 10), planes(a0, channels, 8, 10), g, 3, 2, 1, dilation)
        assert seen["to_reference_argmax"] > 0 and seen["different_argmax"] > 0
        assert seen["accumulated"] > 0 and seen["partial_windows"] > 0
        ms.append(mat_t_vec(K, [v for plane in m for row in plane for v in row]))
    expected_m = torch.tensor(ms, dtype=DTYPE).reshape(x.shape)
    expected_c = expected_m * (x - ref)
    torch.testing.assert_close(
        expected_c.flatten(1).sum(1), target_change(model, x, ref, target), rtol=1e-12, atol=1e-12
    )

    contributions, multipliers = deeplift(model, x, ref, target)
    assert_close(multipliers, expected_m)
    assert_close(contributions, expected_c)


def test_max_pool_takes_the_gradient_where_input_and_reference_coincide():
    """The pool on the input itself, where the reference equals the input at chosen positions
    (``|a_j - a0_j| = 0``): there the multiplier is the ordinary gradient (``g`` routed to the
    input's arg-max), elsewhere the routed change over the difference; :func:`rederive_max_pool`
    by a loop over the windows.  The equal positions include arg-maxima of the input and of the
    reference, so both the windows routed to a near position and the near positions that are
    the input's arg-max are exercised."""
    model = seeded(ConvPool(1, conv=False), seed=41)
    x = randn(2, 1, 8, 10, seed=42)
    ref = randn(2, 1, 8, 10, seed=43, scale=0.9)
    same = torch.rand(2, 1, 8, 10, generator=torch.Generator().manual_seed(44)) < 0.4
    ref = torch.where(same, x, ref)
    target = [1, 2]
    oh, ow = (pool_output_size(s, 3, 2, 1, 1) for s in (8, 10))
    expected = []
    for n in range(2):
        g = [model.head.weight.detach()[target[n]].reshape(oh, ow).tolist()]
        m, _ = rederive_max_pool([x[n, 0].tolist()], [ref[n, 0].tolist()], g, 3, 2, 1, 1)
        expected.append(m)
    expected_m = torch.tensor(expected, dtype=DTYPE)
    near_argmax = (expected_m != 0) & same  # positions where the gradient was taken and is not zero
    assert near_argmax.any()
    contributions, multipliers = deeplift(model, x, ref, target)
    assert_close(multipliers, expected_m)
    assert_close(contributions, expected_m * (x - ref))


# --------------------------------------------------------------------------------------------------
# 4. RevealCancel: its Shapley average matters


def reveal_cancel_backward(
    W: Tensor, bias: list[float], x: list[float], x0: list[float], g: list[float], average: bool
) -> list[float]:
    """Multipliers on ``x`` for ``y = relu(W x + b)`` from ``g`` on ``y`` (section 3.5.3), with
    ``dz+ = W+ dx+ + W- dx-``, ``dz- = W+ dx- + W- dx+`` and

    * ``average``: ``dy+ = 1/2 (f(z0 + dz+) - f(z0)) + 1/2 (f(z0 + dz- + dz+) - f(z0 + dz-))``, ``dy-``
      symmetrically (the paper's rule); where ``dz+`` is zero, the limit ``(f'(z0) + f'(z0 + dz-)) / 2``;
    * otherwise the positive part first: ``dy+ = f(z0 + dz+) - f(z0)``, ``dy- = f(z) - f(z0 + dz+)``
      (exact too, but not the rule);

    ``m+ = dy+ / dz+``, ``m- = dy- / dz-``; an input with ``dx > 0`` gets ``W+^T (g m+) + W-^T (g m-)``, one
    with ``dx < 0`` ``W-^T (g m+) + W+^T (g m-)``, one with ``dx = 0`` ``1/2 W^T (g m+ + g m-)``."""
    rows = W.tolist()

    def f(z: float) -> float:
        return max(z, 0.0)

    def df(z: float) -> float:
        return 1.0 if z > 0 else 0.0

    dx = [a - b for a, b in zip(x, x0)]
    gp, gn = [], []
    for j, row in enumerate(rows):
        z0 = sum(w * v for w, v in zip(row, x0)) + bias[j]
        z = sum(w * v for w, v in zip(row, x)) + bias[j]
        dz_pos = sum(w * d for w, d in zip(row, dx) if (w > 0) == (d > 0) and w != 0 and d != 0)
        dz_neg = sum(w * d for w, d in zip(row, dx) if (w > 0) != (d > 0) and w != 0 and d != 0)
        if average:
            dy_pos = 0.5 * (f(z0 + dz_pos) - f(z0)) + 0.5 * (f(z0 + dz_neg + dz_pos) - f(z0 + dz_neg))
            dy_neg = 0.5 * (f(z0 + dz_neg) - f(z0)) + 0.5 * (f(z0 + dz_pos + dz_neg) - f(z0 + dz_pos))
        else:
            dy_pos = f(z0 + dz_pos) - f(z0)
            dy_neg = f(z0 + dz_pos + dz_neg) - f(z0 + dz_pos)
        scale = max(abs(z), abs(z0))
        near_pos, near_neg = abs(dz_pos) <= EPS * scale, abs(dz_neg) <= EPS * scale
        gp.append(g[j] * (0.5 * (df(z0) + df(z0 + dz_neg)) if near_pos else dy_pos / dz_pos))
        gn.append(g[j] * (0.5 * (df(z0) + df(z0 + dz_pos)) if near_neg else dy_neg / dz_neg))
    out = []
    for i, d in enumerate(dx):
        rising = sum(rows[j][i] * (gp[j] if rows[j][i] > 0 else gn[j]) for j in range(len(rows)))
        falling = sum(rows[j][i] * (gn[j] if rows[j][i] > 0 else gp[j]) for j in range(len(rows)))
        out.append(rising if d > 0 else falling if d < 0 else 0.5 * (rising + falling))
    return out


def test_reveal_cancel_without_its_shapley_average_is_rejected():
    """``tests/test_reveal_cancel_rederivation.py`` re-derives multi-layer RevealCancel (section
    3.5.3) in full; here, on ``Linear -> ReLU -> Linear -> ReLU -> Linear``, the same two layers by
    hand match deltalift, while the exact variant that drops the Shapley average (positive part
    first: ``dy+ = f(z0 + dz+) - f(z0)``, ``dy- = f(z) - f(z0 + dz+)``) sums to delta as well but
    gives other contributions, which the comparison rejects."""
    model = seeded(nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 6), nn.ReLU(), nn.Linear(6, 3)), seed=40)
    x, ref = randn(4, 5, seed=41), randn(4, 5, seed=42, scale=0.7)
    target = [0, 1, 2, 0]
    W1, b1 = model[0].weight.detach(), model[0].bias.detach().tolist()
    W2, b2 = model[2].weight.detach(), model[2].bias.detach().tolist()
    W3 = model[4].weight.detach()
    results = {}
    for average in (True, False):
        ms = []
        for n in range(4):
            xs, x0s = x[n].tolist(), ref[n].tolist()
            h = [max(s + b, 0.0) for s, b in zip(mat_vec(W1, xs), b1)]
            h0 = [max(s + b, 0.0) for s, b in zip(mat_vec(W1, x0s), b1)]
            g_h = reveal_cancel_backward(W2, b2, h, h0, W3[target[n]].tolist(), average)
            ms.append(reveal_cancel_backward(W1, b1, xs, x0s, g_h, average))
        results[average] = torch.tensor(ms, dtype=DTYPE) * (x - ref)
    dt = target_change(model, x, ref, target)
    for contributions in results.values():
        torch.testing.assert_close(contributions.sum(1), dt, rtol=1e-12, atol=1e-12)

    got, _ = deeplift(model, x, ref, target, rule="reveal_cancel")
    assert_close(got, results[True])
    assert (got - results[False]).abs().max() > 1e-2
