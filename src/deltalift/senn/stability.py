"""The stability of explanations: a local Lipschitz estimate (Alvarez-Melis & Jaakkola, NeurIPS
2018, "Towards Robust Interpretability with Self-Explaining Neural Networks", section 5, eq. 5;
and "On the Robustness of Interpretability Methods", 2018)::

    L(x) = max_{x' in B_eps(x)} || e(x) - e(x') ||_2 / || h(x) - h(x') ||_2

for an explanation function ``e`` (relevances, an attribution map), the ball ``B_eps(x)`` in
input space (L2 by default, or L-infinity) and a representation ``h`` in which the explanation
is expressed: SENN's concept encoder for SENN's relevances (eq. 5 as we read it: the relevances
explain the concepts ``h(x)``, so their change is measured per unit of change of the concepts),
and ``h = identity`` for explanations in input space (post-hoc attribution maps), where the
denominator is ``|| x - x' ||_2``.  :func:`local_lipschitz` takes ``h`` as ``encoder``
(``None``: the identity).  The equation is quoted from our reading of the paper; neither this
repository's docs nor its seeds restate it.  The paper maximises with Bayesian optimisation; here the
maximum is searched by random points in the ball followed by rounds of local search around the
best point so far (each round samples a ball of half the previous radius, projected back into
``B_eps(x)``).  The result is a lower bound of the true local constant that tightens with
more samples.

Evaluation is batched one point per example: call ``m`` evaluates ``e`` at ``x_n + delta_{n,m}``
for every example ``n`` at once, with the class of example ``n``.  A stochastic explanation
seeded per call (SmoothGrad with a fixed ``random_state``) therefore sees the same noise at a
point as at its centre (common random numbers), so its estimate measures the method, not the
sampling noise.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Union

import torch

from deltalift.runtime import progress

Tensor = torch.Tensor
ExplanationFunction = Callable[[Tensor, Union[Tensor, None]], Tensor]

__all__ = ["ExplanationFunction", "local_lipschitz", "sample_ball"]


def sample_ball(n: int, shape: tuple[int, ...], radius: float, norm: str, generator: torch.Generator) -> Tensor:
    """``n`` points uniformly distributed in the ball of ``radius`` (``"l2"`` or ``"linf"``)
    around 0, each of ``shape``."""
    d = math.prod(shape)
    if norm == "l2":
        direction = torch.randn(n, d, generator=generator, dtype=torch.float64)
        direction = direction / direction.norm(dim=1, keepdim=True)
        length = torch.rand(n, 1, generator=generator, dtype=torch.float64) ** (1.0 / d)
        points = radius * length * direction
    elif norm == "linf":
        points = radius * (2 * torch.rand(n, d, generator=generator, dtype=torch.float64) - 1)
    else:
        raise ValueError(f"norm must be 'l2' or 'linf', got {norm!r}")
    return points.reshape(n, *shape)


def _project(offset: Tensor, radius: float, norm: str) -> Tensor:
    if norm == "linf":
        return offset.clamp(-radius, radius)
    flat = offset.flatten(1)
    scale = (radius / flat.norm(dim=1).clamp_min(1e-300)).clamp(max=1.0)
    return (flat * scale[:, None]).reshape(offset.shape)


def local_lipschitz(
    explain: ExplanationFunction,
    inputs: Tensor,
    eps: float,
    n_samples: int = 32,
    n_rounds: int = 3,
    targets: Tensor | None = None,
    norm: str = "l2",
    seed: int = 0,
    show_progress: bool = False,
    encoder: Callable[[Tensor], Tensor] | None = None,
) -> Tensor:
    """The local Lipschitz estimate ``L(x)`` of ``explain`` at each example of ``inputs``
    (SENN, eq. 5): ``max ||e(x) - e(x')||_2 / ||h(x) - h(x')||_2`` over ``x'`` in the ball.

    Parameters
    ----------
    explain:
        ``explain(points, targets) -> explanations``: ``points (N, ...)`` one per example, the
        examples' ``targets (N,)`` (or ``None``); any output shape ``(N, ...)``.
    inputs:
        The examples ``(N, ...)``.
    eps:
        The ball's radius (> 0).
    n_samples:
        Random points per example in the first round and in each local round.
    n_rounds:
        Local-search rounds after the first (0: random search only).
    targets:
        Passed to ``explain`` (usually the class predicted at each example, held fixed in the ball).
    norm:
        The ball: ``"l2"`` (default) or ``"linf"``; the ratio uses L2 norms either way.
    seed:
        Seed of the sampled points.
    show_progress:
        A tqdm bar over the evaluations.
    encoder:
        ``h``, the space of the denominator: ``encoder(points) -> (N, ...)`` (SENN's conceptizer
        for its relevances); ``None`` (default): input space, ``||x - x'||_2``.  Points with
        ``h(x') = h(x)`` contribute no ratio.

    Returns
    -------
    ``(N,)`` estimates, float64.
    """
    if eps <= 0 or not math.isfinite(eps):
        raise ValueError(f"eps must be a positive number, got {eps}")
    if n_samples < 1 or n_rounds < 0:
        raise ValueError(f"n_samples must be >= 1 and n_rounds >= 0, got {n_samples} and {n_rounds}")
    if norm not in ("l2", "linf"):
        raise ValueError(f"norm must be 'l2' or 'linf', got {norm!r}")
    if not isinstance(inputs, Tensor) or not inputs.is_floating_point() or inputs.ndim < 1:
        raise TypeError("inputs must be a floating tensor (N, ...)")
    n, shape = inputs.shape[0], tuple(inputs.shape[1:])
    if targets is not None and targets.shape[0] != n:
        raise ValueError(f"targets must have one entry per example ({n}), got {tuple(targets.shape)}")
    generator = torch.Generator().manual_seed(seed)
    centre = _evaluate(explain, inputs, targets)
    centre_code = None if encoder is None else _encode(encoder, inputs)
    best = torch.zeros(n, dtype=torch.float64)
    best_offset = torch.zeros(n, *shape, dtype=torch.float64)
    schedule = [(round_, m) for round_ in range(n_rounds + 1) for m in range(n_samples)]
    for round_, _ in progress(schedule, show_progress, desc="Lipschitz estimate", unit="eval", leave=False):
        if round_ == 0:
            offset = sample_ball(n, shape, eps, norm, generator)
        else:
            local = sample_ball(n, shape, eps * 0.5**round_, norm, generator)
            offset = _project(best_offset + local, eps, norm)
        points = (inputs.double() + offset).to(inputs.dtype)
        if centre_code is None or encoder is None:
            distance = offset.flatten(1).norm(dim=1)
        else:
            distance = (_encode(encoder, points) - centre_code).norm(dim=1)
        change = (_evaluate(explain, points, targets) - centre).norm(dim=1)
        ratio = torch.where(distance > 0, change / distance.clamp_min(1e-300), torch.zeros_like(change))
        better = ratio > best
        best = torch.where(better, ratio, best)
        best_offset[better] = offset[better]
    return best


def _encode(encoder: Callable[[Tensor], Tensor], points: Tensor) -> Tensor:
    with torch.no_grad():
        codes = encoder(points)
    if not isinstance(codes, Tensor) or codes.shape[0] != points.shape[0]:
        raise ValueError("encoder must return a tensor with one code per point")
    return codes.detach().flatten(1).double().cpu()


def _evaluate(explain: ExplanationFunction, points: Tensor, targets: Tensor | None) -> Any:
    values = explain(points, targets)
    if isinstance(values, tuple):
        values = torch.cat([v.flatten(1) for v in values], 1)
    if not isinstance(values, Tensor) or values.shape[0] != points.shape[0]:
        raise ValueError("explain must return a tensor with one explanation per point")
    return values.detach().flatten(1).double()
