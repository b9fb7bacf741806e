"""Errors and warnings raised by deltalift, each naming the problem and what to try."""

from __future__ import annotations

from typing import Any


class DeltaliftError(Exception):
    """Base class of deltalift's errors."""


class MissingRuleError(DeltaliftError, NotImplementedError):
    """An operation in the captured graph has no DeepLIFT rule."""

    def __init__(self, op: Any, where: str = "") -> None:
        self.op = op
        name = str(op)
        packet = getattr(op, "overloadpacket", None)
        reg = f"torch.ops.{packet}" if packet is not None else name
        location = f" (at {where})" if where else ""
        super().__init__(
            f"no DeepLIFT rule for the operation {name}{location}. deltalift never falls back "
            "to the gradient silently. If the op is element-wise in one input, register the "
            f"Rescale rule: deltalift.register_rule({reg}, deltalift.rules.rescale); if it is "
            f"affine in its input: deltalift.register_rule({reg}, deltalift.rules.linear)."
        )


class CaptureError(DeltaliftError):
    """The model could not be captured as a graph of ATen operations."""


class UnsupportedOperationError(DeltaliftError):
    """An op with a rule was used in a way the rule cannot explain exactly."""


class ConvergenceError(DeltaliftError):
    """Summation-to-delta failed beyond the tolerance in strict mode."""


class ConvergenceWarning(UserWarning):
    """Summation-to-delta failed beyond the tolerance."""


class IllConditionedWarning(UserWarning):
    """The contributions cancel: their absolute sum is far above the outputs they explain."""
