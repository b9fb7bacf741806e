"""The engine's batching of weighted ops (dense, convolution): fewer, larger calls, same values.

Two layouts of a DeepLIFT walk let a weighted op ``z = W a + b`` whose activation ``a`` is the
only input-dependent argument run in fewer calls (the op treats the rows of ``a``
independently, so the values are those of separate calls):

- **a shared reference** (one reference row for the whole batch): where the weight is many times
  larger than the activation (:data:`STACKED_WEIGHT_RATIO`; a classifier's dense layer on a few
  rows), input and reference rows go through one call on ``cat([a, a0])``, so the weight is
  read once; elsewhere the two sides run as two calls: on hundreds of token rows the
  concatenation costs what it saves, and on convolutions over images it would copy more than
  the weight, and its output, one storage for both sides, would keep the reference rows alive
  as long as the input rows (measured: a DeepLift call on ResNet-50 took 1.54x the peak memory
  of an input gradient with it);
- **DeepLIFT-SHAP pairs** (:class:`BatchLayout` with ``groups > 1``): the batch holds each
  example repeated once per reference, so every input-side activation upstream of the first
  input-dependent mixing with a reference is repeated too; the op runs on one row per group
  (after checking that the rows are indeed equal) and the result is expanded; backward runs
  on all rows, with the op's transpose from :mod:`deltalift.canonical`.

Every other convolution runs as one call per side, with the same transpose as its backward:
formed from the input's shape, it keeps no activation (autograd's convolution would keep its
input for the backward pass). Each layout saves shapes, not activations, for backward.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from deltalift import conv_layout
from deltalift.canonical import WeightedOp, weighted_op
from deltalift.rules.registry import Pair, is_pair, pairs_in

Tensor = torch.Tensor


#: How many times larger than the activation a weight must be for input and reference rows to go
#: through a weighted op as one call.
STACKED_WEIGHT_RATIO = 8


@dataclass(frozen=True)
class BatchLayout:
    """How the rows of a walk's batch are laid out: ``rows`` rows, each input repeated
    ``groups`` times in a row (one per reference, under DeepLIFT-SHAP)."""

    rows: int
    groups: int = 1


def evaluate_weighted(
    op: Any, args: tuple[Any, ...], kwargs: dict[str, Any], factors: tuple[int, int], layout: BatchLayout
) -> Pair | None:
    """``op`` on its activation ``args[factors[0]]`` in fewer calls where the layout allows,
    ``None`` where it does not (the op's rule then applies).  Convolutions, forward and
    transposed, run in :mod:`deltalift.conv_layout`'s layout."""
    position, weight_position = factors
    a, weight = args[position], args[weight_position]
    if kwargs or not is_pair(a) or len(pairs_in(args)) != 1:
        return None
    if a.x.ndim != getattr(weight, "ndim", a.x.ndim):  # not a batched convolution or matrix product
        return None
    weighted = weighted_op(op, args, position, convolution=conv_layout.convolution)
    if weighted is None or weighted.backward is None:
        return None
    evaluate = conv_layout.convolution if weighted.kind == "conv" else op
    grouped = _grouped_rows(evaluate, args, position, layout, weighted)
    if grouped is not None:
        return grouped
    if 2 * a.ref.shape[0] <= a.x.shape[0] and weight.numel() >= STACKED_WEIGHT_RATIO * a.x.numel():
        return _stacked_rows(evaluate, args, position, weighted)
    if weighted.kind == "conv":
        return _input_not_kept(evaluate, args, position, weighted)
    return None


def _on_activation(op: Any, args: tuple[Any, ...], position: int) -> Callable[[Tensor], Tensor]:
    """``a -> op(*args)`` with ``a`` in place of the activation ``args[position]``."""

    def forward_fn(a: Tensor) -> Tensor:
        full = list(args)
        full[position] = a
        return op(*full)

    return forward_fn


def _reference_side(op: Any, args: tuple[Any, ...], pair: Pair) -> Tensor:
    """The op at the reference, without autograd."""
    with torch.no_grad():
        return op(*[pair.ref if a is pair else a for a in args])


def _input_not_kept(op: Any, args: tuple[Any, ...], position: int, weighted: WeightedOp) -> Pair:
    """A convolution whose backward is its transpose, from the input's shape: autograd's own
    keeps the input until the backward pass (for its sizes, even with the weight detached), one
    activation per convolution that DeepLIFT otherwise need not keep (VGG-11 at 224x224,
    interpreted: 1.82x an input gradient's peak memory with it, 1.38x without)."""
    pair = args[position]
    out_x = _Transposed.apply(pair.x, _on_activation(op, args, position), weighted.transpose_to)
    return Pair(out_x, _reference_side(op, args, pair))


class _Transposed(torch.autograd.Function):
    """Forward ``forward_fn(x)``, a linear function of ``x`` however it is evaluated (in one
    call with the reference rows, on one row per group, ...); backward ``J^T grad`` from
    ``x``'s shape (nothing kept)."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        x: Tensor,
        forward_fn: Callable[[Tensor], Tensor],
        backward_fn: Callable[[Tensor, Sequence[int]], Tensor],
    ) -> Tensor:
        ctx.shape, ctx.backward_fn = x.shape, backward_fn
        return forward_fn(x)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        return ctx.backward_fn(grad, ctx.shape), None, None


def _stacked_rows(op: Any, args: tuple[Any, ...], position: int, weighted: WeightedOp) -> Pair:
    """Evaluate a row-wise linear op once on ``cat([x, ref])`` and split the rows again.

    Backward applies the op's transpose (:func:`deltalift.canonical.weighted_op`) to the input
    rows' gradient alone: autograd through the concatenation would pad the gradient with zeros
    for the reference rows, run the op's backward on them too, and split the result (three
    passes over the activation that a gradient does not make)."""
    pair = args[position]
    rows = pair.x.shape[0]
    on_activation, ref = _on_activation(op, args, position), pair.ref.detach()
    reference_rows: list[Tensor] = []

    def on_both(x: Tensor) -> Tensor:  # one call on both sides' rows; the reference rows set aside
        out = on_activation(torch.cat([x, ref]))
        reference_rows.append(out[rows:])
        return out[:rows]

    return Pair(_Transposed.apply(pair.x, on_both, weighted.transpose_to), reference_rows[0])


def _grouped_rows(
    op: Any, args: tuple[Any, ...], position: int, layout: BatchLayout, weighted: WeightedOp
) -> Pair | None:
    """The op on one row per group of identical rows (DeepLIFT-SHAP), ``None`` where the rows
    are not laid out so."""
    pair = args[position]
    rows = pair.x.shape[0]
    if layout.groups <= 1 or layout.rows <= 0 or rows % layout.rows:
        return None
    shape = (layout.rows // layout.groups, layout.groups, rows // layout.rows)
    laid_out = pair.x.detach().unflatten(0, shape)
    repeated = laid_out.stride(1) == 0  # stride 0 along the group: the same row, by construction
    if not repeated and not torch.equal(laid_out, laid_out[:, :1].expand_as(laid_out)):
        return None

    forward_fn = _on_one_row_per_group(_on_activation(op, args, position), shape)
    out = _Transposed.apply(pair.x, forward_fn, weighted.transpose_to)  # backward on all rows
    return Pair(out, _reference_side(op, args, pair))


def _on_one_row_per_group(
    on_activation: Callable[[Tensor], Tensor], shape: tuple[int, int, int]
) -> Callable[[Tensor], Tensor]:
    """``on_activation`` evaluated on one row of each group of ``shape = (inputs, groups,
    rows per example)`` and expanded back to every row."""
    inputs, groups, rows_per_example = shape

    def forward_fn(x: Tensor) -> Tensor:
        out = on_activation(x.unflatten(0, shape)[:, 0].flatten(0, 1))
        expanded = out.unflatten(0, (inputs, 1, rows_per_example)).expand(
            inputs, groups, rows_per_example, *out.shape[1:]
        )
        if inputs == 1 and rows_per_example == 1:
            return expanded.flatten(0, 2)  # a view: one row, stride 0 along the batch
        repeated = _empty_in_layout_of(out, (inputs * groups * rows_per_example, *out.shape[1:]))
        repeated.unflatten(0, expanded.shape[:3]).copy_(expanded)
        return repeated

    return forward_fn


def _empty_in_layout_of(like: Tensor, shape: Sequence[int]) -> Tensor:
    """An empty tensor of ``shape`` whose dimensions are ordered in memory as ``like``'s (a
    length-major convolution output stays length-major, :mod:`deltalift.conv_layout`)."""
    strides = like.stride()
    order = sorted(range(like.ndim), key=lambda d: -strides[d])
    inverse = sorted(range(like.ndim), key=order.__getitem__)
    return like.new_empty([shape[d] for d in order]).permute(inverse)
