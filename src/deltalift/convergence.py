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

from deltalift.errors import ConvergenceError, ConvergenceWarning, IllConditionedWarning
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

#: Relative tolerance of the summation-to-delta check, per dtype: the error may be this fraction
#: of the output change ``|t(x) - t(x0)|``.
DEFAULT_TOLERANCE = {torch.float64: 1e-6, torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 1e-2}
#: Rounding in the outputs themselves: the error may also be this many units in the last place
#: of ``|t(x)| + |t(x0)|``.
ROUNDING_ULPS = 256
#: Contributions whose absolute sum exceeds this many times ``|t(x)| + |t(x0)| + |t(x) - t(x0)|``
#: cancel: the attribution is ill-conditioned at this reference.
ILL_CONDITIONED_RATIO = 1e4


def per_example_sum(values: tuple[Tensor, ...]) -> Tensor:
    """``sum_i values_i`` per example (over every dimension but the first, and over the tuple)."""
    return torch.stack([v.reshape(v.shape[0], -1).sum(1) for v in values]).sum(0)


def check_summation(
    contributions: tuple[Tensor, ...],
    t: Tensor,
    t0: Tensor,
    tolerance: float | None = None,
    strict: bool = False,
    warn: bool = True,
) -> Tensor:
    """``sum_i C_i - (t(x) - t(x0))`` per example.

    Warns (:class:`~deltalift.errors.ConvergenceWarning`; raises
    :class:`~deltalift.errors.ConvergenceError` with ``strict``) where the error exceeds
    ``tolerance * |t(x) - t(x0)| + ROUNDING_ULPS * ulp * (|t(x)| + |t(x0)|)``: it is measured
    against the change being explained, not against the contributions, so that contributions
    which blow up cannot hide their own error.  Warns separately
    (:class:`~deltalift.errors.IllConditionedWarning`) where the contributions cancel, their
    absolute sum above ``ILL_CONDITIONED_RATIO`` times the outputs.
    """
    total = per_example_sum(contributions)
    magnitude = per_example_sum(tuple(c.abs() for c in contributions))
    change = t - t0
    delta = total - change
    if not warn:
        return delta
    tolerance = tolerance if tolerance is not None else DEFAULT_TOLERANCE.get(t.dtype, 1e-4)
    outputs = t.abs() + t0.abs()
    allowed = tolerance * change.abs() + ROUNDING_ULPS * torch.finfo(t.dtype).eps * outputs
    excess = delta.abs() / (allowed + torch.finfo(t.dtype).tiny)
    worst = int(excess.argmax())
    if float(excess[worst]) > 1 or not bool(torch.isfinite(delta[worst])):
        message = (
            f"summation-to-delta fails for example {worst}: contributions sum to "
            f"{float(total[worst]):.6g} but t(x) - t(x0) = {float(change[worst]):.6g} "
            f"(error {float(delta[worst].abs()):.3g}, allowed {float(allowed[worst]):.3g}: relative tolerance "
            f"{tolerance:.0e} of the change plus rounding of the outputs). "
            "The model may contain an op whose registered rule is not exact."
        )
        if strict:
            raise ConvergenceError(message)
        warnings.warn(message, ConvergenceWarning, stacklevel=4)
    ratio = magnitude / (outputs + change.abs() + torch.finfo(t.dtype).tiny)
    worst = int(ratio.argmax())
    if float(ratio[worst]) > ILL_CONDITIONED_RATIO:
        warnings.warn(
            f"the contributions of example {worst} cancel: their absolute sum {float(magnitude[worst]):.3g} is "
            f"{float(ratio[worst]):.2g} times |t(x)| + |t(x0)| + |t(x) - t(x0)| = "
            f"{float(outputs[worst] + change[worst].abs()):.3g}; the attribution is ill-conditioned at this "
            "reference (an op whose rule amplifies the change, or a reference at a degenerate point); "
            "try another reference",
            IllConditionedWarning,
            stacklevel=4,
        )
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
