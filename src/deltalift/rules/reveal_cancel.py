"""The RevealCancel rule (Shrikumar et al. 2017, section 3.5.3).

For an element-wise ``y = f(z)`` fed by a weighted linear op ``z = W x + b`` (dense or
convolution, optionally through a bias and a batch norm in eval mode, which are folded into
``W``), with ``dx+ = max(dx, 0)``, ``dx- = min(dx, 0)``, ``W+ = max(W, 0)``, ``W- = min(W, 0)``::

    dz+ = W+ dx+ + W- dx-            dz- = W+ dx- + W- dx+
    dy+ = 1/2 (f(z0 + dz+) - f(z0)) + 1/2 (f(z0 + dz- + dz+) - f(z0 + dz-))
    dy- = 1/2 (f(z0 + dz-) - f(z0)) + 1/2 (f(z0 + dz+ + dz-) - f(z0 + dz+))
    m+ = dy+ / dz+                   m- = dy- / dz-

Where ``dz+`` is (near) zero the ratio is ``0/0``; its limit ``m+ = (f'(z0) + f'(z0 + dz-)) / 2``
(symmetrically ``m- = (f'(z0) + f'(z0 + dz+)) / 2``) keeps the rule continuous, and is what the
original package aims for by adding 1e-7 to the denominator.

Back through the linear op, for an incoming multiplier ``g`` on ``y``: an input with ``dx > 0``
gets ``W+^T (g m+) + W-^T (g m-)``, one with ``dx < 0`` gets ``W-^T (g m+) + W+^T (g m-)``,
one with ``dx = 0`` gets ``1/2 W^T (g m+ + g m-)``.  Summation-to-delta holds exactly:
``g . (m+ dz+ + m- dz-) = g . (dy+ + dy-) = g . dy``.

The pattern (weighted op -> optional bias / batch norm -> nonlinearity) is found in the captured
graph by :func:`deltalift.canonical.find_weighted_input`; the engine then evaluates the
nonlinearity with :func:`reveal_cancel` from the weighted op's own input.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from deltalift.canonical import WeightedOp
from deltalift.rules.registry import Pair
from deltalift.rules.rescale import derivative_where, secant_multiplier

Tensor = torch.Tensor


class _RevealCancel(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        x: Tensor,
        x0: Tensor,
        z: Tensor,
        z0: Tensor,
        f: Callable[[Tensor], Tensor],
        weighted: WeightedOp,
        eps: float,
    ) -> Tensor:
        positive = weighted.with_weight(weighted.weight.clamp(min=0))
        negative = weighted.with_weight(weighted.weight.clamp(max=0))
        dx = x - x0
        dx_pos, dx_neg = dx.clamp(min=0), dx.clamp(max=0)
        dz_pos = positive(dx_pos) + negative(dx_neg)
        dz_neg = positive(dx_neg) + negative(dx_pos)
        y = f(z)
        ctx.shapes = (z.shape, dz_pos.shape)
        z, z0 = z.reshape(dz_pos.shape), z0.reshape(dz_pos.shape)  # the weighted op's output shape
        shape = dz_pos.shape
        z_pos, z_neg = z0 + dz_pos, z0 + dz_neg
        f_z0, f_pos, f_neg, f_both = f(z0), f(z_pos), f(z_neg), f(z0 + dz_pos + dz_neg)
        dy_pos = 0.5 * (f_pos - f_z0) + 0.5 * (f_both - f_neg)
        dy_neg = 0.5 * (f_neg - f_z0) + 0.5 * (f_both - f_pos)
        m_pos = secant_multiplier(dy_pos, dz_pos, eps, _mean_derivative(f, z0, z_neg, shape), z, z0, False)
        m_neg = secant_multiplier(dy_neg, dz_neg, eps, _mean_derivative(f, z0, z_pos, shape), z, z0, False)
        ctx.save_for_backward(dx, m_pos, m_neg)
        ctx.signed = (positive, negative)
        return y

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        dx, m_pos, m_neg = ctx.saved_tensors
        positive, negative = ctx.signed
        grad = grad.reshape(ctx.shapes[1])
        g_pos, g_neg = grad * m_pos, grad * m_neg
        rising = positive.transpose(g_pos, dx) + negative.transpose(g_neg, dx)  # W+^T (g m+) + W-^T (g m-)
        falling = negative.transpose(g_pos, dx) + positive.transpose(g_neg, dx)  # W-^T (g m+) + W+^T (g m-)
        gx = torch.where(dx > 0, rising, torch.where(dx < 0, falling, 0.5 * (rising + falling)))
        return gx, None, None, None, None, None, None


def _mean_derivative(f: Callable[[Tensor], Tensor], z0: Tensor, z_other: Tensor, shape: torch.Size) -> Any:
    """The limit of ``m+`` as ``dz+ -> 0`` (``z_other = z0 + dz-``), or of ``m-`` as ``dz- -> 0``
    (``z_other = z0 + dz+``): ``(f'(z0) + f'(z_other)) / 2``, which keeps the rule continuous."""
    at_reference = derivative_where(f, [z0], 0, shape, pointwise=False)
    at_other = derivative_where(f, [z_other], 0, shape, pointwise=False)

    def derivative(near: tuple[Tensor, ...]) -> Tensor:
        return 0.5 * (at_reference(near) + at_other(near))

    return derivative


def reveal_cancel(source: Pair, z: Pair, f: Callable[[Tensor], Tensor], weighted: WeightedOp, eps: float) -> Pair:
    """The nonlinearity's output, whose backward sends RevealCancel multipliers to ``source``
    (``weighted``: the bias-free map ``x -> W x`` is read from it; its bias is not used)."""
    x0 = source.ref.expand_as(source.x) if source.ref.shape != source.x.shape else source.ref
    z0 = z.ref.expand_as(z.x) if z.ref.shape != z.x.shape else z.ref
    out = _RevealCancel.apply(source.x, x0.detach(), z.x.detach(), z0.detach(), f, weighted, eps)
    with torch.no_grad():
        ref = f(z.ref)
    return Pair(out, ref)
