"""Products of two input-dependent tensors: the exact two-player Shapley split.

For a bilinear ``z = B(a, b)`` (element-wise product, matrix product, batched matrix product,
convolution whose weight is itself an activation) the identity::

    B(a, b) - B(a0, b0) = B(a - a0, (b + b0) / 2) + B((a + a0) / 2, b - b0)

gives exact multipliers ``m_a = B(., (b + b0) / 2)`` and ``m_b = B((a + a0) / 2, .)``; for the
element-wise product ``m_a = (b + b0) / 2`` and ``m_b = (a + a0) / 2`` (DESIGN.md section 1).
With only one input-dependent factor the op is linear and the Linear rule applies.

Division ``a / b`` with an input-dependent ``b`` is ``a * reciprocal(b)``: Rescale on the
reciprocal, then the product rule.
"""

from __future__ import annotations

from typing import Any

import torch

from deltalift.rules.linear import linear
from deltalift.rules.registry import Pair, RuleContext, is_pair, pairs_in

Tensor = torch.Tensor
aten = torch.ops.aten


class _Product(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, a: Tensor, b: Tensor, a_mid: Tensor, b_mid: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(a_mid, b_mid)
        ctx.shapes = (a.shape, b.shape)
        return a * b

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        a_mid, b_mid = ctx.saved_tensors
        a_shape, b_shape = ctx.shapes
        return (grad * b_mid).sum_to_size(a_shape), (grad * a_mid).sum_to_size(b_shape), None, None


def _midpoint(pair: Pair) -> Tensor:
    return (pair.x.detach() + pair.ref) / 2


def multiply(ctx: RuleContext, op: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``aten.mul``: Linear with one input-dependent factor, the Shapley product with two."""
    a, b = args[0], args[1]
    if not (is_pair(a) and is_pair(b)):
        return linear(ctx, op, args, kwargs)
    out = _Product.apply(a.x, b.x, _midpoint(a), _midpoint(b))
    with torch.no_grad():
        ref = a.ref * b.ref
    return Pair(out, ref)


def bilinear_in(first: int, second: int, rows_independent: bool = False) -> Any:
    """A rule for an op bilinear in ``args[first]`` and ``args[second]`` (linear in the rest).

    ``rows_independent``: the op treats the rows (dim 0) of ``args[first]`` independently
    (matrix products, batched convolution), so when only that argument depends on the input,
    input and reference go through one call, stacked along dim 0 (the weight is read once).
    """

    def rule(ctx: RuleContext, op: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        a, b = args[first], args[second]
        if is_pair(a) and is_pair(b):
            return _bilinear_product(op, args, kwargs, first, second)
        if rows_independent and is_pair(a) and len(pairs_in((args, kwargs))) == 1:
            if a.x.ndim == getattr(b, "ndim", a.x.ndim):  # a batched convolution, or a matrix product
                grouped = _grouped_rows(ctx, op, args, kwargs, first)
                if grouped is not None:
                    return grouped
                if 2 * a.ref.shape[0] <= a.x.shape[0]:  # a shared reference: one call, weight read once
                    return _stacked_rows(op, args, kwargs, first)
        return linear(ctx, op, args, kwargs)

    return rule


def _stacked_rows(op: Any, args: tuple[Any, ...], kwargs: dict[str, Any], position: int) -> Pair:
    """Evaluate a row-wise linear op once on ``cat([x, ref])`` and split the rows again."""
    pair = args[position]
    rows = pair.x.shape[0]
    stacked = list(args)
    stacked[position] = torch.cat([pair.x, pair.ref.detach()])
    out = op(*stacked, **kwargs)
    return Pair(out[:rows], out[rows:].detach())


class _SharedRows(torch.autograd.Function):
    """Forward on one row per group of identical rows, backward on all rows."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, x: Tensor, forward_fn: Any, backward_fn: Any, shape: tuple[int, int, int]
    ) -> Tensor:
        inputs, groups, rows_per_example = shape
        compressed = x.unflatten(0, shape)[:, 0].flatten(0, 1)
        out = forward_fn(compressed)
        ctx.save_for_backward(x)
        ctx.backward_fn = backward_fn
        expanded = out.unflatten(0, (inputs, 1, rows_per_example)).expand(
            inputs, groups, rows_per_example, *out.shape[1:]
        )
        return expanded.flatten(0, 2)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        (x,) = ctx.saved_tensors
        return ctx.backward_fn(grad, x), None, None, None


def _input_gradient(op: Any, args: tuple[Any, ...], kwargs: dict[str, Any], position: int) -> Any:
    """The transposed op ``grad -> J^T grad`` for the row argument of mm, addmm or convolution."""
    packet = op.overloadpacket
    if packet is aten.convolution:
        weight, rest = args[1], args[3:]

        def conv_backward(grad: Tensor, x: Tensor) -> Tensor:
            return aten.convolution_backward.default(grad, x, weight, None, *rest, [True, False, False])[0]

        return conv_backward
    weight = args[position + 1]
    alpha = kwargs.get("alpha", 1) if packet is aten.addmm else 1
    if packet in (aten.mm, aten.addmm) and not (set(kwargs) - {"alpha", "beta"}):
        return lambda grad, x: (grad @ weight.T) * alpha
    return None


def _grouped_rows(
    ctx: RuleContext, op: Any, args: tuple[Any, ...], kwargs: dict[str, Any], position: int
) -> Pair | None:
    """Under DeepLIFT-SHAP every input-side row is repeated once per reference: evaluate the op on
    one row per group (after checking that the rows are indeed equal) and expand; backward runs
    on all rows.  ``None`` where this does not apply."""
    pair = args[position]
    groups, batch_rows = ctx.input_groups, ctx.batch_rows
    rows = pair.x.shape[0]
    if groups <= 1 or batch_rows <= 0 or rows % batch_rows:
        return None
    backward_fn = _input_gradient(op, args, kwargs, position)
    if backward_fn is None:
        return None
    shape = (batch_rows // groups, groups, rows // batch_rows)
    laid_out = pair.x.detach().unflatten(0, shape)
    if not torch.equal(laid_out, laid_out[:, :1].expand_as(laid_out)):
        return None

    def forward_fn(compressed: Tensor) -> Tensor:
        full = list(args)
        full[position] = compressed
        return op(*full, **kwargs)

    out = _SharedRows.apply(pair.x, forward_fn, backward_fn, shape)
    with torch.no_grad():
        ref = op(*[pair.ref if a is pair else a for a in args], **kwargs)
    return Pair(out, ref)


def _bilinear_product(op: Any, args: tuple[Any, ...], kwargs: dict[str, Any], first: int, second: int) -> Pair:
    """Value ``op(a, b)``; gradients ``op(da, b_mid)`` and ``op(a_mid, db)`` through the linearisation
    ``op(a, b_mid) + op(a_mid, b) - op(a_mid, b_mid)`` (other arguments: their input side)."""
    a, b = args[first], args[second]
    a_mid, b_mid = _midpoint(a), _midpoint(b)

    def call(x: Tensor, y: Tensor, which: str, rest_grad: bool = False) -> Tensor:
        full = list(args)
        full[first], full[second] = x, y
        for i, v in enumerate(full):
            if i not in (first, second) and is_pair(v):
                value = v.x if which == "x" else v.ref
                full[i] = value if rest_grad else value.detach()
        return op(*full, **kwargs)

    linearised = call(a.x, b_mid, "x", rest_grad=True) + call(a_mid, b.x, "x") - call(a_mid, b_mid, "x").detach()
    with torch.no_grad():
        exact = call(a.x, b.x, "x")
        ref = call(a.ref, b.ref, "ref")
    out = linearised + (exact - linearised).detach()
    return Pair(out, ref)


def divide(ctx: RuleContext, op: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``a / b``: Linear when ``b`` is a constant, else ``a * reciprocal(b)``."""
    if kwargs.get("rounding_mode") is not None:
        from deltalift.rules.rescale import rescale

        return rescale(ctx, op, args, kwargs)
    a, b = args[0], args[1]
    if not is_pair(b):
        return linear(ctx, op, args, kwargs)
    return ctx.call(aten.mul.Tensor, a, ctx.call(aten.reciprocal.default, b))
