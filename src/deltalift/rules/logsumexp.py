"""Logsumexp in closed form: the Rescale chain of ``log(sum(exp(x)))`` with the shift factored out.

For ``L(x) = log sum_j exp(x_j)`` over some dimensions, the chain exp (Rescale) -> sum (Linear)
-> log (Rescale) of Shrikumar et al. 2017 (sections 3.5.1-3.5.2) gives the contributions::

    C(dx_j, dL) = (L - L0) * (e_j - e0_j) / (S - S0),     e_j = exp(x_j), S = sum_j e_j

Written with the probabilities ``p = exp(x - L)``, ``p0 = exp(x0 - L0)`` and
``rho = exp(-|L - L0|) <= 1``, both sides keep their own shift, so nothing overflows or
underflows and no two large terms cancel::

    C(dx_j, dL) = q * (p_j - rho p0_j)   if L >= L0,      q * (rho p_j - p0_j)   otherwise,
    q = |L - L0| / (1 - rho)            (q -> 1 as L -> L0)

They sum to ``L - L0`` exactly, and ``|C_j| <= q <= 1 + |L - L0|``.  In floating point the
probabilities sum to one only up to rounding, which ``q`` (about ``|L - L0|``) magnifies: a common
shift of large logits (``x - x0`` about 2500 for every class) would leave ``sum_j C_j`` off by
``q * n * ulp(1)``, far above the rounding of ``L - L0`` itself.  So the residual
``(L - L0) - sum_j C_j`` (zero in exact arithmetic) is added back in proportion to the dominant
side's probabilities, which restores the sum to the rounding of ``L - L0``.  The multiplier is
``C_j / dx_j``; where ``dx_j`` is (near) zero its limit ``q p0_j rho`` (``q p0_j`` when
``L < L0``).  Softmax and log-softmax are built on it (:mod:`deltalift.rules.composite`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from deltalift.rules.multipliers import with_multipliers
from deltalift.rules.registry import Pair
from deltalift.rules.rescale import secant_multiplier

Tensor = torch.Tensor


def logsumexp_pair(pair: Pair, dims: Sequence[int], eps: float) -> Pair:
    """``logsumexp(x, dims, keepdim=True)`` for input and reference, wired with the multipliers above."""
    dims = list(dims)
    with torch.no_grad():
        x, x0 = pair.x.detach(), pair.ref
        total, total0 = torch.logsumexp(x, dims, keepdim=True), torch.logsumexp(x0, dims, keepdim=True)
        multiplier = _multiplier(x, x0, total, total0, _probabilities(x, total), _probabilities(x0, total0), dims, eps)
    return Pair(with_multipliers(total, [pair.x], [multiplier]), total0)


def softmax_pair(pair: Pair, dim: int, eps: float) -> Pair:
    """``softmax(x, dim)`` as ``exp(u)``, ``u = x - logsumexp(x)``: Rescale on the exponential
    (``m_exp = (s - s0) / (u - u0)``, ``exp(u0)`` where ``u`` is near ``u0``) after the closed-form
    logsumexp, composed in one backward ``g_x = g m_exp - sum(g m_exp) m_L``: the values of that
    chain of rules, with ``exp(x - L)`` computed once for the output and the probabilities."""
    dims = [dim]
    with torch.no_grad():
        x, x0 = pair.x.detach(), pair.ref
        total, total0 = torch.logsumexp(x, dims, keepdim=True), torch.logsumexp(x0, dims, keepdim=True)
        u, u0 = x - total, x0 - total0
        s, s0 = torch.exp(u), torch.exp(u0)
        p = s if bool(torch.isfinite(total).all()) else _probabilities(x, total)
        m_total = _multiplier(x, x0, total, total0, p, _probabilities(x0, total0), dims, eps)

        def exp_at_reference(near: tuple[Tensor, ...]) -> Tensor:
            return s0.expand(s.shape)[near]

        m_exp = secant_multiplier(torch.sub(s, s0), torch.sub(u, u0), eps, exp_at_reference, u, u0)
    return Pair(_Softmax.apply(pair.x, s, m_exp, m_total, dims), s0)


class _Softmax(torch.autograd.Function):
    """Forward: the softmax ``s`` as computed.  Backward: ``g_u - sum(g_u) m_L`` with ``g_u = g m_exp``
    (the exponential's Rescale multiplier, then ``u = x - L`` by the Linear rule, then logsumexp's)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, s: Tensor, m_exp: Tensor, m_total: Tensor, dims: list[int]) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(m_exp, m_total)
        ctx.dims = dims
        return s

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        m_exp, m_total = ctx.saved_tensors
        g_u = grad * m_exp
        return torch.addcmul(g_u, g_u.sum(ctx.dims, keepdim=True), m_total, value=-1), None, None, None, None


def _multiplier(
    x: Tensor, x0: Tensor, total: Tensor, total0: Tensor, p: Tensor, p0: Tensor, dims: list[int], eps: float
) -> Tensor:
    """logsumexp's multipliers ``C_j / dx_j`` (module docstring) from both sides' totals and
    probabilities.  Which side dominates is decided per row, so the contributions are formed with
    per-row coefficients, ``a p + b p0`` and the residual's ``r p`` or ``r p0``."""
    change = total - total0
    gap = change.abs()
    rho = torch.exp(-gap)
    q = torch.where(gap > 0, gap / -torch.expm1(-gap), torch.ones_like(gap))
    rising = change >= 0
    contributions = p * torch.where(rising, q, q * rho)
    contributions.addcmul_(p0, torch.where(rising, -q * rho, -q))
    residual = change - contributions.sum(dims, keepdim=True)
    zero = torch.zeros_like(residual)
    contributions.addcmul_(p, torch.where(rising, residual, zero)).addcmul_(p0, torch.where(rising, zero, residual))
    row_limit = q * torch.where(rising, rho, torch.ones_like(rho))

    def at_reference(near: tuple[Tensor, ...]) -> Tensor:  # the limit, at the few near positions alone
        return row_limit.expand(contributions.shape)[near] * p0.expand(contributions.shape)[near]

    return secant_multiplier(contributions, x - x0, eps, at_reference, x, x0)


def _probabilities(x: Tensor, total: Tensor) -> Tensor:
    """``exp(x - L)``, zero where the whole row is ``-inf`` (``L = -inf``)."""
    return torch.where(torch.isfinite(total), torch.exp(x - total), torch.zeros_like(x))
