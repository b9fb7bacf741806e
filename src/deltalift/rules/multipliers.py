"""Wiring multipliers into autograd: one function for every rule that gives them explicitly.

DeepLIFT's multipliers play the role of gradients (Shrikumar et al. 2017, section 3.2): the
chain rule ``m(dx_i, dz) = sum_j m(dx_i, dy_j) m(dy_j, dz)`` is what backpropagation computes
when each op's backward multiplies the incoming gradient by the op's multiplier.  A rule that
knows its multipliers ``m_k`` (Rescale, the Shapley split of products, ...) returns
``with_multipliers(y, [x_1, ...], [m_1, ...])``: the value ``y``, whose backward sends
``grad * m_k`` (summed to the shape of ``x_k``, undoing broadcasting) to each ``x_k``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

Tensor = torch.Tensor


class _WithMultipliers(torch.autograd.Function):
    """Forward: ``value`` as it is.  Backward: ``grad * m_k`` summed to each input's shape."""

    @staticmethod
    def forward(ctx: Any, value: Tensor, n_inputs: int, *inputs_then_multipliers: Tensor) -> Tensor:  # type: ignore[override]
        inputs, multipliers = inputs_then_multipliers[:n_inputs], inputs_then_multipliers[n_inputs:]
        ctx.save_for_backward(*multipliers)
        ctx.shapes = [x.shape for x in inputs]
        return value

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        multipliers = ctx.saved_tensors
        # m first: the product takes the multiplier's memory layout where the two differ (the
        # gradient of a mean is row-major, a 1-D convolution's output length-major)
        grads = [(m * grad).sum_to_size(shape) for m, shape in zip(multipliers, ctx.shapes)]
        return (None, None, *grads, *([None] * len(multipliers)))


def with_multipliers(value: Tensor, inputs: Sequence[Tensor], multipliers: Sequence[Tensor]) -> Tensor:
    """``value`` (computed without autograd) whose backward returns ``grad * multipliers[k]``
    to ``inputs[k]``; each multiplier broadcasts to ``value``'s shape."""
    if len(inputs) != len(multipliers):
        raise ValueError(f"{len(inputs)} inputs but {len(multipliers)} multipliers")
    return _WithMultipliers.apply(value, len(inputs), *inputs, *(m.detach() for m in multipliers))
