"""The normalisation of layer, group and instance norms in one step of its chain of rules.

``out = (x - mean(x)) * rsqrt(var + eps)`` over some dimensions, with ``var = mean((x - mean)^2)``,
is explained by composing exact rules (:mod:`deltalift.rules.composite`): the Linear rule for
the centring ``c = x - mean(x)`` and the means (Shrikumar et al. 2017, section 3.5.1), Rescale
for the square (``m = c + c0``, its exact secant) and for ``rsqrt`` (section 3.5.2), and the
scale split of the normalising product (:func:`~deltalift.rules.product.scale_product`: the
value's multiplier is the smaller of the two scales ``s, s0``, the scale's is the other side's
centred value).  :func:`normalise_pair` computes that chain's values and backward without
evaluating it op by op; with ``g`` on ``out`` and ``E`` values per normalised row::

    g_s = sum(g * c0) where |s| <= |s0|, else sum(g * c)          (the product's scale)
    g_q = g_s * m_rsqrt / E                                        (rsqrt, the mean of squares)
    g_c = g * min_scale + g_q * (c + c0)                           (the product's value, the square)
    g_x = g_c - mean(g_c)                                          (the centring)

The composite stays in use where a norm's mean or reciprocal standard deviation is read
(they are outputs of the native ops), since there they carry their own multipliers.
"""

from __future__ import annotations

from typing import Any

import torch

from deltalift.rules.registry import Pair
from deltalift.rules.rescale import rescale_multiplier

Tensor = torch.Tensor


def normalise_pair(pair: Pair, dims: list[int], norm_eps: float, eps: float) -> Pair:
    """``(x - mean) * rsqrt(var + norm_eps)`` over ``dims`` for input and reference, wired with
    the multipliers of the chain above (``eps``: Rescale's near-zero threshold)."""
    with torch.no_grad():
        x, x0 = pair.x.detach(), pair.ref
        c, c0 = x - x.mean(dims, keepdim=True), x0 - x0.mean(dims, keepdim=True)
        v, v0 = (c * c).mean(dims, keepdim=True) + norm_eps, (c0 * c0).mean(dims, keepdim=True) + norm_eps
        s, s0 = torch.rsqrt(v), torch.rsqrt(v0)
        m_rsqrt = rescale_multiplier(torch.rsqrt, v, v0, s, s0, eps, pointwise=True)
        smaller = s.abs() <= s0.abs()
        m_value = torch.where(smaller, s, s0)
        out, out0 = c * s, c0 * s0
    count = 1
    for d in dims:
        count *= x.shape[d]
    return Pair(_Normalise.apply(pair.x, out, c, c0, m_value, smaller, m_rsqrt / count, dims), out0)


class _Normalise(torch.autograd.Function):
    """Forward: the normalised value as computed.  Backward: the chain of the module docstring."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        x: Tensor,
        out: Tensor,
        c: Tensor,
        c0: Tensor,
        m_value: Tensor,
        smaller: Tensor,
        m_square_mean: Tensor,
        dims: list[int],
    ) -> Tensor:
        ctx.save_for_backward(c, c0, m_value, smaller, m_square_mean)
        ctx.dims = dims
        return out

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        c, c0, m_value, smaller, m_square_mean = ctx.saved_tensors
        dims = ctx.dims
        g_scale = torch.where(smaller, (g * c0).sum(dims, keepdim=True), (g * c).sum(dims, keepdim=True))
        g_square = g_scale * m_square_mean
        g_c = torch.addcmul(g * m_value, c, g_square).addcmul_(c0, g_square)
        return g_c - g_c.mean(dims, keepdim=True), None, None, None, None, None, None, None
