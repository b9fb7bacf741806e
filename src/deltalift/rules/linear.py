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

import math
from typing import Any

import torch

from deltalift.errors import UnsupportedOperationError
from deltalift.rules.registry import (
    OpRule,
    Pair,
    RuleContext,
    aligned,
    is_size_pair,
    map_pairs,
    pairs_in,
    repeats_one_row,
    same_on_both_sides,
    side,
    tiles,
    zip_output,
)

aten = torch.ops.aten
Tensor = torch.Tensor


def evaluate_both(op: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Evaluate ``op`` on the input side (with autograd) and on the reference side (without).

    A reference shared by the batch is evaluated at batch size one, with its own sizes (a
    shape query of a shared reference gives a Pair of sizes, see :func:`_shape_query`).  Its
    output is kept when it broadcasts against the input side's, or when its rows tile the input
    side's (:func:`~deltalift.rules.registry.tiles`; only through views and dense layers, see
    :data:`TILING_OPS`).  Otherwise (an index of the batch into a batch-one reference, a view
    that folds the batch into another dimension, as multi-head attention does) the reference
    side is evaluated again with every reference expanded to its input's shape and with the
    input side's sizes; a view that gives the batch its own dimension again (a size Pair
    ``(n, 1)``) then takes the reference back to batch size one where its values are the same
    for every example (:func:`_regathered`).
    """
    x_out = _input_side(op, args, kwargs)
    with torch.no_grad():
        try:
            ref_out = op(*side(args, "ref"), **side(kwargs, "ref"))
        except (RuntimeError, IndexError):  # e.g. an index of the batch into a batch-one reference
            ref_out = None
        if ref_out is None or not (_broadcasts_to(ref_out, x_out) or _keeps_tiling(op, args, ref_out, x_out)):
            ref_out = op(*_expanded_reference_side(args), **_expanded_reference_side(kwargs))
            ref_out = _regathered(op, args, ref_out)
    return zip_output(x_out, ref_out)


def _input_side(op: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``op`` on the input side, with autograd; two ops with the same values, computed otherwise:

    - ``a + b`` where both terms repeat one row along the batch (stride 0, as DeepLIFT-SHAP's
      input side with one example a call does from a convolution on): computed on that row and
      expanded back, a view (the next convolution sees the repetition without comparing rows),
      whose backward hands each row's gradient to both terms;
    - a mean over dimensions (on CPU, float32 or float64): the sum divided by the count, as ATen
      computes it there (the same bits), whose gradient is a broadcast view that takes the
      layout of what it meets (a length-major convolution's, :mod:`deltalift.conv_layout`)
      rather than a row-major copy.
    """
    x_args = side(args, "x")
    if op is aten.add.Tensor and not kwargs and len(args) == 2 and _same_repeated_rows(*x_args):
        return _RowSum.apply(*x_args)
    if op is aten.mean.dim and not kwargs and 2 <= len(args) <= 3 and args[1]:  # [] or None: every dimension
        x = x_args[0]
        if isinstance(x, Tensor) and x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64):
            count = math.prod(x.shape[d] for d in args[1])
            return aten.sum.dim_IntList(*x_args) / count
    return op(*x_args, **side(kwargs, "x"))


def _same_repeated_rows(a: Any, b: Any) -> bool:
    """Two tensors of one shape and dtype, each repeating one row along the batch."""
    return repeats_one_row(a) and repeats_one_row(b) and a.shape == b.shape and a.dtype == b.dtype


class _RowSum(torch.autograd.Function):
    """``a + b`` for two tensors that repeat one row: forward on that row, backward ``(g, g)``."""

    @staticmethod
    def forward(ctx: Any, a: Tensor, b: Tensor) -> Tensor:  # type: ignore[override]
        return torch.add(a[:1], b[:1]).expand(a.shape)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, Tensor]:  # type: ignore[override]
        return grad, grad


#: Ops whose reference side may tile the input side's rows, with the position of the operand
#: whose rows they keep: views (the flat order of ``n`` tiles of ``r`` rows is that of ``n``
#: tiles of the view's rows), dense layers and batched matrix products (each output row depends on
#: its input rows alone).
TILING_OPS = {
    aten.view.default: 0,
    aten._unsafe_view.default: 0,
    aten.reshape.default: 0,
    aten.mm.default: 0,
    aten.addmm.default: 1,
    aten.bmm.default: 0,
}

#: Views whose sizes may give the batch its own dimension again.
_VIEWS = (aten.view.default, aten._unsafe_view.default, aten.reshape.default)


def _keeps_tiling(op: Any, args: tuple[Any, ...], ref_out: Any, x_out: Any) -> bool:
    """Whether ``ref_out`` tiles ``x_out``'s rows as the operand's reference tiles its input's."""
    position = TILING_OPS.get(op)
    if position is None or not isinstance(x_out, torch.Tensor) or not isinstance(ref_out, torch.Tensor):
        return False
    source = args[position]
    if not isinstance(source, Pair) or not isinstance(source.x, torch.Tensor):
        return False
    n = tiles(x_out, ref_out)
    return n > 0 and tiles(source.x, source.ref) == n


def _regathered(op: Any, args: tuple[Any, ...], ref_out: Any) -> Any:
    """A view's reference output, evaluated at the input side's shape, taken back to batch size
    one along the dimension whose size is the batch's on the input side and 1 on the reference's
    (a size Pair ``(n, 1)``), where its values are the same along that dimension (checked: an
    exact comparison, so nothing is assumed about the model)."""
    if op not in _VIEWS or not isinstance(ref_out, torch.Tensor) or len(args) < 2:
        return ref_out
    for dim, size in enumerate(args[1]):
        if is_size_pair(size) and size.ref == 1 and size.x > 1 and ref_out.shape[dim] == size.x:
            first = ref_out.narrow(dim, 0, 1)
            return first.contiguous() if torch.equal(ref_out, first.expand_as(ref_out)) else ref_out
    return ref_out


def _broadcasts_to(ref_out: Any, x_out: Any) -> bool:
    """Whether every tensor of the reference output broadcasts to the input side's tensor."""
    if isinstance(x_out, (tuple, list)):
        return isinstance(ref_out, (tuple, list)) and all(_broadcasts_to(r, x) for r, x in zip(ref_out, x_out))
    if isinstance(x_out, torch.Tensor) and isinstance(ref_out, torch.Tensor):
        if ref_out.shape == x_out.shape:
            return True
        try:
            return torch.broadcast_shapes(ref_out.shape, x_out.shape) == x_out.shape
        except RuntimeError:
            return False
    return True


def _expanded_reference_side(tree: Any) -> Any:
    """The reference side with tensors expanded to the input side's shape and sizes taken from it."""

    def expand(value: Pair) -> Any:
        if isinstance(value.x, torch.Tensor) and isinstance(value.ref, torch.Tensor):
            ref = aligned(value).ref
            return torch.empty_like(value.x).copy_(ref.expand_as(value.x))  # the input's strides
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
    """Sizes, strides, element counts: a plain number where input and reference agree, else a
    Pair of sizes (a reference shared by the batch is evaluated at batch size one).

    Views and expansions take a size Pair per side, so that the reference stays at batch size
    one through ``view(x, [batch, ...])``; every other op takes the input side's size on both
    sides (the engine collapses size Pairs before such ops, :mod:`deltalift.plan`), so that
    ``arange(batch)`` is the batch's on both sides."""
    with torch.no_grad():
        x_value = op(*side(args, "x"), **side(kwargs, "x"))
        ref_value = op(*side(args, "ref"), **side(kwargs, "ref"))
    return x_value if x_value == ref_value else Pair(x_value, ref_value)


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
