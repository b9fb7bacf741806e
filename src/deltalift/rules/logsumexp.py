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
        p, p0 = _probabilities(x, total), _probabilities(x0, total0)
        change = total - total0
        gap = change.abs()
        rho = torch.exp(-gap)
        q = torch.where(gap > 0, gap / -torch.expm1(-gap), torch.ones_like(gap))
        rising = change >= 0
        contributions = q * torch.where(rising, p - rho * p0, rho * p - p0)
        contributions = contributions + torch.where(rising, p, p0) * (change - contributions.sum(dims, keepdim=True))
        limit = q * p0 * torch.where(rising, rho, torch.ones_like(rho))

        def at_reference(near: tuple[Tensor, ...]) -> Tensor:
            return limit.expand(contributions.shape)[near]

        multiplier = secant_multiplier(contributions, x - x0, eps, at_reference, x, x0)
    return Pair(with_multipliers(total, [pair.x], [multiplier]), total0)


def _probabilities(x: Tensor, total: Tensor) -> Tensor:
    """``exp(x - L)``, zero where the whole row is ``-inf`` (``L = -inf``)."""
    return torch.where(torch.isfinite(total), torch.exp(x - total), torch.zeros_like(x))
