"""Products of two input-dependent tensors: the exact two-player Shapley split.

For a bilinear ``z = B(a, b)`` (element-wise product, matrix product, batched matrix product,
convolution whose weight is itself an activation) the identity::

    B(a, b) - B(a0, b0) = B(a - a0, (b + b0) / 2) + B((a + a0) / 2, b - b0)

gives exact multipliers ``m_a = B(., (b + b0) / 2)`` and ``m_b = B((a + a0) / 2, .)``; for the
element-wise product ``m_a = (b + b0) / 2`` and ``m_b = (a + a0) / 2``.
With only one input-dependent factor the op is linear and the Linear rule applies.

Division ``a / b`` with an input-dependent ``b`` is ``a * reciprocal(b)``: Rescale on the
reciprocal, then the scale split of :func:`scale_product` (which the engine also uses for a
product with a reciprocal square root, the normalising factor of RMS and layer norms).
"""

from __future__ import annotations

from typing import Any

import torch

from deltalift.errors import UnsupportedOperationError
from deltalift.rules.linear import linear
from deltalift.rules.multipliers import with_multipliers
from deltalift.rules.registry import OpRule, Pair, RuleContext, aligned, is_pair, tiles

Tensor = torch.Tensor
aten = torch.ops.aten


def _midpoint(pair: Pair) -> Tensor:
    """``(a + a0) / 2`` (one allocation; halving is exact)."""
    return torch.add(pair.x.detach(), pair.ref).mul_(0.5)


def _multiply(ctx: RuleContext, op: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``aten.mul``: Linear with one input-dependent factor, the Shapley product with two:
    ``m_a = (b + b0) / 2``, ``m_b = (a + a0) / 2``."""
    a, b = args[0], args[1]
    if not (is_pair(a) and is_pair(b)):
        return linear(ctx, op, args, kwargs)
    with torch.no_grad():
        value = a.x * b.x
        ref = a.ref * b.ref
    return Pair(with_multipliers(value, [a.x, b.x], [_midpoint(b), _midpoint(a)]), ref)


def bilinear_in(first: int, second: int, kind: str = "product") -> OpRule:
    """The rule of an op bilinear in ``args[first]`` and ``args[second]`` (linear in the rest):
    the Shapley product when both depend on the input, Linear when one does.

    ``kind="weighted"`` marks a dense or convolution op (``args[first]`` the activation,
    ``args[second]`` the weight), whose rows the engine may batch.
    """

    def rule(ctx: RuleContext, op: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if len(args) <= max(first, second):
            raise UnsupportedOperationError(
                f"{op} is registered as a product of its arguments {first} and {second}, but it was "
                f"called with {len(args)} positional argument(s); register another rule for it"
            )
        if is_pair(args[first]) and is_pair(args[second]):
            if (first, second) == (0, 1) and len(args) == 2 and not kwargs and op in _MATRIX_PRODUCTS:
                return _matrix_product(op, args[0], args[1])
            return _bilinear_product(op, args, kwargs, first, second)
        if op is aten.bmm.default and is_pair(args[0]) and _one_matrix_for_all_batches(args[1]):
            return linear(ctx, _rows_times_matrix, args, kwargs)
        return linear(ctx, op, args, kwargs)

    return OpRule(rule, kind, factors=(first, second))


def _one_matrix_for_all_batches(b: Any) -> bool:
    """Whether ``b`` is one matrix expanded over a batch (stride 0), as the decomposition of
    ``F.linear`` on a permuted 3-D activation gives: ``bmm(a, W^T.expand(L, K, M))``."""
    return isinstance(b, Tensor) and b.ndim == 3 and b.shape[0] > 1 and b.stride(0) == 0


def _rows_times_matrix(a: Tensor, b: Tensor) -> Tensor:
    """``bmm(a, b)`` for ``b`` one matrix expanded over the batch: every row of ``a`` times that
    matrix in one ``mm`` (the batched form reads the matrix once per batch, ``L`` times)."""
    return torch.mm(a.reshape(-1, a.shape[-1]), b[0]).view(a.shape[0], a.shape[1], b.shape[-1])


#: Matrix products whose transposes :class:`_MatrixProduct` applies directly.
_MATRIX_PRODUCTS = (aten.mm.default, aten.bmm.default)


class _MatrixProduct(torch.autograd.Function):
    """``a @ b`` (``mm`` or ``bmm``) whose backward is the Shapley split's: ``grad @ b_mid^T`` to
    ``a`` and ``a_mid^T @ grad`` to ``b`` (the products of :func:`_bilinear_product`'s
    linearisation, without evaluating it: one product forward and two backward, as a gradient)."""

    @staticmethod
    def forward(ctx: Any, a: Tensor, b: Tensor, a_mid: Tensor, b_mid: Tensor, op: Any) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(a_mid, b_mid)
        ctx.op = op
        return op(a, b)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        a_mid, b_mid = ctx.saved_tensors
        grad_a = ctx.op(grad, b_mid.transpose(-1, -2)) if ctx.needs_input_grad[0] else None
        grad_b = ctx.op(a_mid.transpose(-1, -2), grad) if ctx.needs_input_grad[1] else None
        return grad_a, grad_b, None, None, None


def _matrix_product(op: Any, a: Pair, b: Pair) -> Pair:
    """``mm`` / ``bmm`` of two activations, with multipliers ``m_a = . @ b_mid`` and ``m_b = a_mid @ .``.

    A reference shared by the batch whose rows tile the input's (:func:`~deltalift.rules.registry.tiles`,
    multi-head attention folds the batch into the heads) keeps its size: the rows of ``bmm``
    are independent products, so ``n`` tiles of each factor's reference rows give ``n`` tiles of
    the product's (``mm``: the rows of ``a`` alone).  Otherwise the references are repeated."""
    n = tiles(a.x, a.ref)
    if not n or not (tiles(b.x, b.ref) == n if op is aten.bmm.default else b.ref.shape == b.x.shape):
        a, b, n = aligned(a), aligned(b), 0
        if op is aten.bmm.default and a.ref.shape[0] != b.ref.shape[0]:  # bmm does not broadcast
            a, b = Pair(a.x, a.ref.expand_as(a.x)), Pair(b.x, b.ref.expand_as(b.x))
    a_mid, b_mid = _expanded_midpoint(a, n), _expanded_midpoint(b, n if op is aten.bmm.default else 0)
    with torch.no_grad():
        ref = op(a.ref, b.ref)
    return Pair(_MatrixProduct.apply(a.x, b.x, a_mid, b_mid, op), ref)


def _expanded_midpoint(pair: Pair, tiling: int = 0) -> Tensor:
    """The midpoint at the input side's shape: a reference shared by the batch broadcasts, one
    whose rows tile the input's ``tiling`` times is added to each tile."""
    if tiling:
        x = pair.x.detach()
        return torch.add(x.unflatten(0, (tiling, -1)), pair.ref).mul_(0.5).flatten(0, 1)
    mid = _midpoint(pair)
    return mid if mid.shape == pair.x.shape else mid.expand_as(pair.x)


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


def scale_product(value: Pair, scale: Pair) -> Pair:
    """``value * scale`` where ``scale`` is a normalising factor (a reciprocal or reciprocal square
    root of an activation, as in layer norm, RMS norm or ``e / sum(e)``): the exact split

        v s - v0 s0 = (v - v0) s + v0 (s - s0)     where |s| <= |s0|
                    = (v - v0) s0 + v (s - s0)     elsewhere

    i.e. the value's multiplier is the smaller of the two scales.  Every term is bounded by
    ``2 max(|v s|, |v0 s0|)``, the normalised values themselves, whereas the symmetric Shapley
    split gives terms of the size of ``(s + s0) / 2`` times the change, which cancel when one
    scale is large (a reference with zero variance: ``rsqrt(eps)``).
    """
    with torch.no_grad():
        v, s = value.x.detach(), scale.x.detach()
        smaller = s.abs() <= scale.ref.abs()
        m_value = torch.where(smaller, s, scale.ref)
        m_scale = torch.where(smaller, value.ref, v)
        out, ref = v * s, value.ref * scale.ref
    return Pair(with_multipliers(out, [value.x, scale.x], [m_value, m_scale]), ref)


def _divide(ctx: RuleContext, op: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``a / b``: Linear when ``b`` is a constant, else ``a * reciprocal(b)`` (Rescale on the
    reciprocal, then the scale split of :func:`scale_product`); with a rounding mode, Rescale."""
    if kwargs.get("rounding_mode") is not None:
        from deltalift.rules.rescale import rescale

        return rescale(ctx, op, args, kwargs)
    a, b = args[0], args[1]
    if not is_pair(b):
        return linear(ctx, op, args, kwargs)
    reciprocal = ctx.call(aten.reciprocal.default, b)
    if not is_pair(a):
        return ctx.call(aten.mul.Tensor, a, reciprocal)
    return scale_product(a, reciprocal)


#: Element-wise multiplication.
multiply = OpRule(_multiply, "multiply", factors=(0, 1))
#: Division.
divide = OpRule(_divide, "divide")
#: A product of the op's first two arguments (``register_rule(op, rules.bilinear)``).
bilinear = bilinear_in(0, 1)
