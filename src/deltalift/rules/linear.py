"""The Linear rule (Shrikumar et al. 2017, section 3.5.1) and ops with no gradient.

For an affine op ``y = b + sum_i w_i x_i`` the DeepLIFT multiplier is ``m(dx_i, dy) = w_i``,
the op's own Jacobian: autograd already gives it, so the rule evaluates the op for the input
(with autograd) and for the reference (without) and does nothing else.  This covers dense and
convolution layers, additions, scaling by constants, sums and means, average pooling, batch
norm in eval mode, reshapes, concatenation, slicing, padding and linear interpolation.

The same evaluation serves ops whose output does not carry a gradient at all (comparisons,
shape queries, arg-max indices): they are computed on both sides and nothing flows through them.
"""

from __future__ import annotations

from typing import Any

import torch

from deltalift.errors import UnsupportedOperationError
from deltalift.rules.registry import (
    OpRule,
    Pair,
    RuleContext,
    map_pairs,
    pairs_in,
    same_on_both_sides,
    side,
    zip_output,
)


def evaluate_both(op: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Evaluate ``op`` on the input side (with autograd) and on the reference side (without).

    A reference shared by the batch is evaluated at batch size one.  Where the op cannot keep it
    so (a reshape that folds the batch into another dimension, as multi-head attention and
    ``F.linear`` on 3-D or 4-D inputs do, or a reshape back of such a folded value), the
    reference side is evaluated again with every reference expanded to its input's shape and
    with the input side's sizes, so that it broadcasts against the input side from then on.
    """
    x_out = op(*side(args, "x"), **side(kwargs, "x"))
    with torch.no_grad():
        try:
            ref_out = op(*side(args, "ref"), **side(kwargs, "ref"))
        except (RuntimeError, IndexError):  # e.g. an index of the batch into a batch-one reference
            ref_out = None
        if ref_out is None or not _broadcasts_to(ref_out, x_out):
            ref_out = op(*_expanded_reference_side(args), **_expanded_reference_side(kwargs))
    return zip_output(x_out, ref_out)


def _broadcasts_to(ref_out: Any, x_out: Any) -> bool:
    """Whether every tensor of the reference output broadcasts to the input side's tensor."""
    if isinstance(x_out, (tuple, list)):
        return isinstance(ref_out, (tuple, list)) and all(_broadcasts_to(r, x) for r, x in zip(ref_out, x_out))
    if isinstance(x_out, torch.Tensor) and isinstance(ref_out, torch.Tensor):
        try:
            return torch.broadcast_shapes(ref_out.shape, x_out.shape) == x_out.shape
        except RuntimeError:
            return False
    return True


def _expanded_reference_side(tree: Any) -> Any:
    """The reference side with tensors expanded to the input side's shape and sizes taken from it."""

    def expand(value: Pair) -> Any:
        if isinstance(value.x, torch.Tensor) and isinstance(value.ref, torch.Tensor):
            return torch.empty_like(value.x).copy_(value.ref.expand_as(value.x))  # the input's strides
        return value.x

    return map_pairs(tree, expand)


def _linear(ctx: RuleContext, op: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Linear rule: the multiplier is the Jacobian of the (affine) op.

    An integer or boolean argument that depends on the input (an index or a mask computed from
    it) makes the op non-linear in the input unless it is the same for input and reference, which
    is checked.
    """
    for pair in pairs_in((args, kwargs)):
        if isinstance(pair.x, torch.Tensor) and not pair.x.is_floating_point():
            if not same_on_both_sides(pair):
                raise UnsupportedOperationError(
                    f"{op} receives an index or mask that is computed from the explained input and "
                    f"differs between input and reference{ctx.at}; no exact DeepLIFT rule applies. "
                    "Compute the index from a constant, or register a rule for this op."
                )
    return evaluate_both(op, args, kwargs)


def _no_gradient(ctx: RuleContext, op: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Ops whose output carries no gradient (comparisons, arg-max, shape queries)."""
    with torch.no_grad():
        return zip_output(op(*side(args, "x"), **side(kwargs, "x")), op(*side(args, "ref"), **side(kwargs, "ref")))


def _shape_query(ctx: RuleContext, op: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Sizes, strides, element counts: the input side's value, a plain number rather than a Pair.

    Input and reference have the same shape; a reference shared by the batch is evaluated at batch
    size one only to save work, so sizes read from the batch (``expand(w, [batch, ...])``,
    ``arange(batch)``) must be the batch's on both sides."""
    with torch.no_grad():
        return op(*side(args, "x"), **side(kwargs, "x"))


def _getitem(ctx: RuleContext, op: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``operator.getitem`` on an op's tuple of outputs (or on a Pair of sizes)."""
    container, index = args
    if isinstance(container, Pair):
        return Pair(container.x[index], container.ref[index])
    return container[index]


def _assertion(ctx: RuleContext, op: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Run-time assertions of the captured graph (they were checked when the model was captured)."""
    return None


#: The Linear rule (also given, with their own kinds, to layout ops, sums, averages, ...).
linear = OpRule(_linear, "linear")
#: Ops whose output carries no gradient.
no_gradient = OpRule(_no_gradient, "no_gradient")
#: Shape queries: the same for input and reference.
shape_query = OpRule(_shape_query, "no_gradient")
#: ``operator.getitem`` on a tuple of outputs.
getitem = OpRule(_getitem, "getitem")
#: Run-time assertions.
assertion = OpRule(_assertion, "assertion")
