"""Summation-to-delta: the check DeepLIFT's attributions must pass for every example.

Shrikumar et al. 2017, section 3.1: ``sum_i C(dx_i, dt) = dt = t(x) - t(x0)``.  The check
compares the sum of the contributions with the change of the target and warns (or, in strict
mode, raises) when they differ beyond a tolerance; the same quantity is Captum's
``compute_convergence_delta`` (for Integrated Gradients, the completeness axiom of
Sundararajan et al. 2017, section 3).
"""

from __future__ import annotations

import warnings
from typing import Any

import torch

from deltalift.errors import ConvergenceError, ConvergenceWarning
from deltalift.inputs import (
    BaselineType,
    TargetType,
    TensorOrTuple,
    as_tuple,
    check_baselines,
    check_inputs,
    select_target,
)

Tensor = torch.Tensor

#: Relative tolerance of the summation-to-delta check, per dtype, relative to
#: ``|t(x)| + |t(x0)| + sum_i |C_i|`` (the scale of the rounding error).
DEFAULT_TOLERANCE = {torch.float64: 1e-6, torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 1e-2}


def per_example_sum(values: tuple[Tensor, ...]) -> Tensor:
    """``sum_i values_i`` per example (over every dimension but the first, and over the tuple)."""
    return torch.stack([v.flatten(1).sum(1) for v in values]).sum(0)


def check_summation(
    contributions: tuple[Tensor, ...],
    t: Tensor,
    t0: Tensor,
    tolerance: float | None = None,
    strict: bool = False,
    warn: bool = True,
) -> Tensor:
    """``sum_i C_i - (t(x) - t(x0))`` per example; warns (raises with ``strict``) when its
    relative size exceeds ``tolerance`` (default per dtype, :data:`DEFAULT_TOLERANCE`)."""
    total = per_example_sum(contributions)
    magnitude = per_example_sum(tuple(c.abs() for c in contributions))
    delta = total - (t - t0)
    tolerance = tolerance if tolerance is not None else DEFAULT_TOLERANCE.get(t.dtype, 1e-4)
    scale = magnitude + t.abs() + t0.abs() + torch.finfo(t.dtype).tiny
    relative = delta.abs() / scale
    worst = int(relative.argmax())
    if warn and float(relative[worst]) > tolerance:
        message = (
            f"summation-to-delta fails for example {worst}: contributions sum to "
            f"{float(total[worst]):.6g} but t(x) - t(x0) = {float((t - t0)[worst]):.6g} "
            f"(relative error {float(relative[worst]):.2e} > tolerance {tolerance:.0e}). "
            "The model may contain an op whose registered rule is not exact."
        )
        if strict:
            raise ConvergenceError(message)
        warnings.warn(message, ConvergenceWarning, stacklevel=4)
    return delta


def convergence_delta(
    model: Any,
    attributions: TensorOrTuple,
    start_point: BaselineType,
    end_point: TensorOrTuple,
    target: TargetType = None,
    additional_forward_args: Any = None,
) -> Tensor:
    """``sum_i attributions_i - (t(end_point) - t(start_point))`` per example (Captum's
    ``compute_convergence_delta``), with the model evaluated as it is."""
    ends, _ = check_inputs(end_point)
    starts, _ = check_baselines(start_point, ends)
    extra = as_tuple(additional_forward_args)
    batch = ends[0].shape[0]
    with torch.no_grad():
        t_end = select_target(model(*ends, *extra), target, batch)
        t_start = select_target(model(*(s.expand_as(e) for s, e in zip(starts, ends)), *extra), target, batch)
    return per_example_sum(as_tuple(attributions)) - (t_end - t_start)
