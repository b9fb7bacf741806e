"""The Rescale rule (Shrikumar et al. 2017, section 3.5.2) and its two-input Shapley form.

Rescale, for an element-wise ``y = f(x)``::

    m(dx, dy) = (f(x) - f(x0)) / (x - x0)

and, where ``|x - x0| <= eps * max(|x|, |x0|)``, the derivative ``f'(x0)`` at the reference
(the original implementation's fallback, with a threshold relative to the values' scale).  Summation-to-delta holds exactly: ``m * dx = dy``.

Two-input element-wise ops ``y = f(a, b)`` where both inputs depend on the explained input
(``maximum``, ``minimum``, ``pow``, ``atan2``, ...) use the exact two-player Shapley split::

    C(da) = 1/2 [(f(a, b0) - f(a0, b0)) + (f(a, b) - f(a0, b))]
    C(db) = 1/2 [(f(a0, b) - f(a0, b0)) + (f(a, b) - f(a, b0))]

so that ``C(da) + C(db) = f(a, b) - f(a0, b0)``, with multipliers ``C / d``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from deltalift.errors import UnsupportedOperationError
from deltalift.fast_path import one_step
from deltalift.rules.multipliers import with_multipliers
from deltalift.rules.operators import relu_multiplier
from deltalift.rules.registry import (
    OpRule,
    Pair,
    RuleContext,
    is_float_tensor,
    map_pairs,
    pairs_in,
    repeats_one_row,
)

Tensor = torch.Tensor


def derivative_at(fn: Callable[..., Tensor], points: list[Tensor], wrt: int, shape: torch.Size) -> Tensor:
    """Element-wise partial derivative of ``fn(*points)`` with respect to ``points[wrt]``,
    evaluated with every point broadcast to the output ``shape``."""
    with torch.enable_grad():
        expanded = [p.detach().expand(shape).clone() for p in points]
        expanded[wrt].requires_grad_(True)
        out = fn(*expanded)
        (grad,) = torch.autograd.grad(out.sum(), expanded[wrt], allow_unused=True)
    return torch.zeros(shape, dtype=out.dtype, device=out.device) if grad is None else grad


def secant_multiplier(
    dy: Tensor,
    dx: Tensor,
    eps: float,
    derivative: Callable[[tuple[Tensor, ...]], Tensor],
    x: Tensor,
    x0: Tensor,
    difference: bool = True,
) -> Tensor:
    """``dy / dx``, and the derivative at the reference where ``|dx| <= eps * max(|x|, |x0|)``.

    The test is relative to the values' scale (for values of order one it is the original
    package's absolute ``1e-7``), so that networks whose activations are small stay exact.
    ``dy`` and ``dx`` are fresh tensors and are overwritten (this runs on every nonlinearity, so
    it avoids allocations): the common case costs a division, an ``abs`` and a reduction.
    NaN differences (``inf - inf``, e.g. masked attention logits) count as near and take the
    derivative.  ``derivative(near)`` returns the derivative at the positions ``near`` (an index
    into ``dy``'s shape as :func:`near_zero` gives it).  ``difference``: ``dx`` is ``x - x0``.
    """
    m = dy.div_(dx) if dy.shape == dx.shape else dy / dx
    repair_near_zero(m, dx, eps, derivative, x, x0, difference)
    return m


def repair_near_zero(
    m: Tensor,
    dx: Tensor,
    eps: float,
    derivative: Callable[[tuple[Tensor, ...]], Tensor],
    x: Tensor,
    x0: Tensor,
    difference: bool = True,
) -> None:
    """:func:`secant_multiplier`'s fallback: the derivative into ``m`` where ``dx`` is near zero
    (``dx`` is overwritten)."""
    near = near_zero(dx, eps, x, x0, difference)
    if near is None:
        return
    if m.shape != dx.shape:  # a broadcast numerator: the positions in the multiplier's shape
        mask = torch.zeros(dx.shape, dtype=torch.bool, device=dx.device)
        mask[near] = True
        near = mask.expand(m.shape).nonzero(as_tuple=True)
    m.index_put_(near, derivative(near).to(m.dtype))


def _largest_magnitude(t: Tensor) -> Tensor:
    if not t.numel():
        return t.new_zeros(())
    smallest, largest = torch.aminmax(t)
    return torch.maximum(largest, -smallest)


def near_zero(
    dx: Tensor, eps: float, x: Tensor, x0: Tensor, difference: bool = True, as_mask: bool = False
) -> tuple[Tensor, ...] | None:
    """The positions where ``|dx| <= eps * max(|x|, |x0|)``, NaN differences counting as near, as
    an index into ``dx``'s shape (index tensors as ``nonzero(as_tuple=True)`` gives, or, where
    they are many, a boolean mask in a 1-tuple); ``None`` where there is none (the common case,
    decided from the extremes alone).  Overwrites ``dx``.

    ``difference``: ``dx`` is ``x - x0``.  Then ``|x| <= |x0| + |dx|``, so with ``eps <= 1/4``
    every near position has ``|dx| <= 2 eps max |x0|`` (``eps max(|x|, |x0|) <= eps |x0| +
    eps |dx| < |dx| / 2 + |dx| / 4`` otherwise, a margin far above rounding): the common case
    reads the reference (at batch size one when it is shared) and not the input.  Otherwise
    (RevealCancel's ``dz+``, which is not ``z - z0``) the bound is ``eps max(max |x|, max |x0|)``.
    Positions within the bound are candidates, decided one by one by the exact test (searched in
    the rows of the last dimension whose minimum is within it, where those are few of many), so the
    bound changes how fast the answer comes, never the answer.  ``as_mask``: always a mask (its
    shape does not depend on the data, which a recorded program then need not guard).
    """
    magnitude = dx.abs_()
    if not magnitude.numel():
        return None
    if difference and eps <= 0.25:
        bound = 2 * eps * _largest_magnitude(x0.detach())
    else:
        bound = eps * torch.maximum(_largest_magnitude(x.detach()), _largest_magnitude(x0.detach()))
    bound = bound.nan_to_num(nan=float("inf"))  # eps = 0 with infinite values: every position is a candidate
    many_rows = magnitude.ndim and magnitude.numel() >= ROWS_SEARCHED * magnitude.shape[-1]
    rows = magnitude.reshape(-1, magnitude.shape[-1] if many_rows else 1)  # else the positions themselves
    row_minima = rows.amin(1)  # NaN where a row has a NaN difference
    if bool(row_minima.amin() > bound):  # NaN if any difference is NaN: then the candidates are found
        return None
    if not as_mask:
        candidate_rows = torch.logical_not(row_minima > bound).nonzero().squeeze(1)
        if candidate_rows.numel() * DENSE_FRACTION <= row_minima.numel():  # few: their indices
            return _near_in_rows(
                rows, candidate_rows, bound, eps, x.detach().expand(dx.shape), x0.detach().expand(dx.shape)
            )
    return (magnitude.nan_to_num_(nan=0.0) <= _largest_of_magnitudes(x.detach(), x0.detach()).mul_(eps),)


def _largest_of_magnitudes(x: Tensor, x0: Tensor) -> Tensor:
    """``max(|x|, |x0|)`` broadcast, into ``|x|`` where that has the result's shape and dtype (a
    shared reference is not expanded to the batch: one activation-sized temporary, not three).
    Never into the reference's side, whose values a recorded program may keep from call to call."""
    a, b = x.abs(), x0.abs()
    if a.shape == torch.broadcast_shapes(a.shape, b.shape) and a.dtype == torch.result_type(a, b):
        return torch.maximum(a, b, out=a)
    return torch.maximum(a, b)


def _near_in_rows(
    rows: Tensor, candidate_rows: Tensor, bound: Tensor, eps: float, x: Tensor, x0: Tensor
) -> tuple[Tensor, ...] | None:
    """:func:`near_zero`'s positions where few rows (of ``|dx|`` as ``rows``, last dimension
    kept) hold candidates: those rows alone are searched, so the whole activation is read once,
    for the row minima, rather than compared, counted and indexed."""
    block = rows[candidate_rows].nan_to_num_(nan=0.0)
    within_row, column = (block <= bound).nonzero(as_tuple=True)
    positions = torch.unravel_index(candidate_rows[within_row] * rows.shape[1] + column, x.shape)
    exact = block[within_row, column] <= eps * torch.maximum(x[positions].abs(), x0[positions].abs())
    near = tuple(index[exact] for index in positions)
    return near if near[0].numel() else None


#: :func:`near_zero` searches rows of the last dimension where there are at least this many
#: (else single positions).
ROWS_SEARCHED = 64
#: Above one candidate in this many positions, :func:`near_zero` decides every position at once
#: (a boolean mask) rather than the candidates one by one (their indices).
DENSE_FRACTION = 16


def derivative_where(
    fn: Callable[..., Tensor], points: list[Tensor], wrt: int, shape: torch.Size, pointwise: bool
) -> Callable[[tuple[Tensor, ...]], Tensor]:
    """The ``derivative`` argument of :func:`secant_multiplier` for ``fn`` at ``points``.

    ``pointwise``: ``fn`` is element-wise with no tensor argument besides ``points``, so it can
    be evaluated on the few near positions alone; otherwise it is differentiated on the whole
    broadcast shape and the near positions are picked out.
    """

    def derivative(near: tuple[Tensor, ...]) -> Tensor:
        if pointwise:
            picked = [p.detach().expand(shape)[near] for p in points]
            return derivative_at(fn, picked, wrt, picked[wrt].shape)
        return derivative_at(fn, points, wrt, shape)[near]

    return derivative


def rescale_multiplier(
    fn: Callable[[Tensor], Tensor], x: Tensor, x0: Tensor, y: Tensor, y0: Tensor, eps: float, pointwise: bool
) -> Tensor:
    """Rescale's ``m = (f(x) - f(x0)) / (x - x0)``, the derivative at ``x0`` where ``|x - x0| <= eps``.

    ``pointwise``: ``fn`` is element-wise and holds no tensor (:func:`derivative_where`); then the
    fallback is one step of a recorded program (:func:`deltalift.fast_path.one_step`), which a
    replay takes again on its own data rather than guarding where the near positions lie."""
    shape = y.shape if y.shape == y0.shape else torch.broadcast_shapes(y.shape, y0.shape)
    if not pointwise:
        return secant_multiplier(y - y0, x - x0, eps, derivative_where(fn, [x0], 0, shape, False), x, x0)
    dy, dx = y - y0, x - x0
    m = dy.div_(dx) if dy.shape == dx.shape else dy / dx
    one_step(_NearZeroRepair(fn, eps, shape), m, dx, x, x0)
    return m


class _NearZeroRepair:
    """:func:`repair_near_zero` for a pointwise ``fn`` of one activation, as a step of
    :func:`deltalift.fast_path.one_step`: ``(m, dx, x, x0)``, writing ``m`` and ``dx``."""

    writes = (0, 1)
    __name__ = "near_zero_repair"

    def __init__(self, fn: Callable[[Tensor], Tensor], eps: float, shape: torch.Size) -> None:
        self.fn, self.eps, self.shape = fn, eps, shape

    @torch.compiler.disable  # a compiled program calls it as it is (its decisions are data-dependent)
    def __call__(self, m: Tensor, dx: Tensor, x: Tensor, x0: Tensor) -> None:
        derivative = derivative_where(self.fn, [x0], 0, self.shape, pointwise=True)
        repair_near_zero(m, dx, self.eps, derivative, x, x0)


def shapley2_multipliers(
    fn: Callable[[Tensor, Tensor], Tensor], a: Pair, b: Pair, y: Tensor, y0: Tensor, eps: float, pointwise: bool
) -> tuple[Tensor, Tensor]:
    """The two-player Shapley multipliers ``(C(da) / da, C(db) / db)`` of ``y = fn(a, b)``."""
    a_x, b_x, a0, b0 = a.x.detach(), b.x.detach(), a.ref, b.ref
    y_a, y_b = fn(a_x, b0), fn(a0, b_x)
    phi_a = 0.5 * ((y_a - y0) + (y - y_b))
    phi_b = 0.5 * ((y_b - y0) + (y - y_a))
    shape = y.shape if y.shape == y0.shape else torch.broadcast_shapes(y.shape, y0.shape)
    m_a = secant_multiplier(phi_a, a_x - a0, eps, derivative_where(fn, [a0, b0], 0, shape, pointwise), a_x, a0)
    m_b = secant_multiplier(phi_b, b_x - b0, eps, derivative_where(fn, [a0, b0], 1, shape, pointwise), b_x, b0)
    return m_a, m_b


def _substitute(tree: Any, replacements: dict[int, Any]) -> Any:
    """Put ``replacements[id(pair)]`` in place of those Pairs; other Pairs take their x side."""
    return map_pairs(tree, lambda p: replacements.get(id(p), p.x))


def _on_one_row(fn: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
    """Element-wise ``fn(x)``, evaluated on one row where ``x`` repeats one row along the batch
    (stride 0: DeepLIFT-SHAP's input side with one example a call, after a convolution) and
    expanded back, a view; otherwise on ``x``.  For Rescale's functions of one activation and
    ReLU's own rule."""
    if repeats_one_row(x):
        return fn(x[:1]).expand(x.shape)
    return fn(x)


def rescale_function(ctx: RuleContext, fn: Callable[[Tensor], Tensor], pair: Pair, pointwise: bool = False) -> Pair:
    """Apply Rescale to an element-wise ``fn`` of one activation (``pointwise``: no other
    tensor argument, see :func:`derivative_where`; then an input side that repeats one row is
    evaluated on that row, :func:`_on_one_row`)."""
    with torch.no_grad():
        y0 = fn(pair.ref)
        y = _on_one_row(fn, pair.x.detach()) if pointwise else fn(pair.x.detach())
        m = rescale_multiplier(fn, pair.x.detach(), pair.ref, y, y0, ctx.eps, pointwise)
    return Pair(with_multipliers(y, [pair.x], [m]), y0)


def only_scalar_arguments(args: Any, kwargs: Any) -> bool:
    """No tensor among the arguments apart from the Pairs."""
    found: list[Any] = []

    def visit(tree: Any) -> None:
        if isinstance(tree, torch.Tensor):
            found.append(tree)
        elif isinstance(tree, (tuple, list)) and not isinstance(tree, Pair):
            for value in tree:
                visit(value)
        elif isinstance(tree, dict):
            for value in tree.values():
                visit(value)

    visit((args, kwargs))
    return not found


def _rescale(ctx: RuleContext, op: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Rescale for an element-wise op of one activation; the Shapley split for two."""
    pairs = [p for p in pairs_in((args, kwargs)) if is_float_tensor(p.x)]
    if len(pairs) != len(pairs_in((args, kwargs))):
        raise UnsupportedOperationError(f"{op} receives a non-floating input that depends on the explained input")
    if len(pairs) == 1:
        (pair,) = pairs
        return rescale_function(
            ctx, _one_argument_fn(op, args, kwargs, pair), pair, only_scalar_arguments(args, kwargs)
        )
    if len(pairs) == 2:
        fn2 = _two_argument_fn(op, args, kwargs, pairs)
        return shapley2_function(ctx, fn2, pairs[0], pairs[1], only_scalar_arguments(args, kwargs))
    raise UnsupportedOperationError(f"{op} has {len(pairs)} inputs that depend on the explained input")


def _one_argument_fn(op: Any, args: Any, kwargs: Any, pair: Pair) -> Callable[[Tensor], Tensor]:
    """``op`` as a function of ``pair``'s tensor, the other arguments fixed.  It holds neither the
    Pair nor its tensors (a recorded program may keep the function, :func:`rescale_multiplier`)."""
    slot = Pair(None, None)  # where the argument goes: the one Pair left, holding no tensor
    fixed_args, fixed_kwargs = _substitute(args, {id(pair): slot}), _substitute(kwargs, {id(pair): slot})

    def fn(t: Tensor) -> Tensor:
        return op(*map_pairs(fixed_args, lambda _: t), **map_pairs(fixed_kwargs, lambda _: t))

    return fn


def _two_argument_fn(op: Any, args: Any, kwargs: Any, pairs: list[Pair]) -> Callable[[Tensor, Tensor], Tensor]:
    first, second = pairs

    def fn(a: Tensor, b: Tensor) -> Tensor:
        mapping = {id(first): a, id(second): b}
        return op(*_substitute(args, mapping), **_substitute(kwargs, mapping))

    return fn


def shapley2_function(
    ctx: RuleContext, fn: Callable[[Tensor, Tensor], Tensor], a: Pair, b: Pair, pointwise: bool = False
) -> Pair:
    """Apply the exact two-player Shapley split to an element-wise ``fn(a, b)``."""
    with torch.no_grad():
        y0 = fn(a.ref, b.ref)
        y = fn(a.x.detach(), b.x.detach())
        m_a, m_b = shapley2_multipliers(fn, a, b, y, y0, ctx.eps, pointwise)
    return Pair(with_multipliers(y, [a.x, b.x], [m_a, m_b]), y0)


def _relu(ctx: RuleContext, op: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Rescale for ``relu(x)``, in fewer passes over the activation than the general rule.

    ``m = (relu(x) - relu(x0)) / (x - x0)``.  Where input and reference lie on the same side of
    zero, the numerator is ``x - x0`` (computed as the denominator is) or ``0``, so the secant
    is the slope there, 1 or 0, exactly: the derivative at the reference, which the general
    rule's near-zero fallback would give.  Where they lie on opposite sides, ``|x - x0| >=
    max(|x|, |x0|)``, never near zero.  So the fallback can only change positions where
    ``x == x0`` (``0 / 0``, as where both sides are zero after a ReLU and a convolution), which
    take ``relu'(x0) = 1{x0 > 0}`` (:func:`deltalift.rules.operators.relu_multiplier`: the
    repair is one operator, so that a recorded program need not guard where they are).  The
    values are the general rule's (an input that is NaN itself makes the output NaN, which
    deltalift refuses to explain).
    """
    if kwargs or len(args) != 1 or not isinstance(args[0], Pair) or not is_float_tensor(args[0].x):
        return _rescale(ctx, op, args, kwargs)
    pair = args[0]
    with torch.no_grad():
        x, x0 = pair.x.detach(), pair.ref
        y, y0 = _on_one_row(torch.relu, x), torch.relu(x0)
        m = relu_multiplier(x, x0, y, y0)
    return Pair(with_multipliers(y, [pair.x], [m]), y0)


def _power(ctx: RuleContext, op: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``x ** 2`` (``pow`` with the exponent 2, ``square``): Rescale's secant ``(x^2 - x0^2) / (x - x0)``
    is ``x + x0`` exactly, which is also the derivative ``2 x0`` where ``x = x0``; formed as a sum it
    has none of the cancellation of the difference of squares (the variance of norms squares
    centred activations).  Any other exponent, or two input-dependent arguments: the general rule."""
    exponent = 2 if op.overloadpacket is torch.ops.aten.square else args[1] if len(args) > 1 else None
    if kwargs or isinstance(exponent, Tensor) or exponent != 2 or not isinstance(args[0], Pair):
        return _rescale(ctx, op, args, kwargs)
    pair = args[0]
    if not is_float_tensor(pair.x):
        return _rescale(ctx, op, args, kwargs)
    with torch.no_grad():
        y, y0 = op(pair.x.detach(), *args[1:]), op(pair.ref, *args[1:])
        m = torch.add(pair.x.detach(), pair.ref)
    return Pair(with_multipliers(y, [pair.x], [m]), y0)


def _first_output_rescale(ctx: RuleContext, op: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Rescale for an element-wise op that returns ``(value, buffer)``, e.g. ``log_sigmoid_forward``."""
    (pair,) = pairs_in(args)
    rest = args[1:]

    def first_output(t: Tensor) -> Tensor:  # holds neither the Pair nor its tensors
        return op(t, *rest, **kwargs)[0]

    out = rescale_function(ctx, first_output, pair, only_scalar_arguments(args, kwargs))
    with torch.no_grad():
        _, buffer = op(pair.ref, *args[1:], **kwargs)
    return (out, Pair(buffer, buffer))


#: Rescale for element-wise nonlinearities (RevealCancel may replace it after a weighted op).
rescale = OpRule(_rescale, "elementwise", reveal_cancel=True)
#: Rescale for ``relu``, with fewer passes over the activation.
relu = OpRule(_relu, "elementwise", reveal_cancel=True)
#: Rescale for ``pow`` and ``square``: the exact secant ``x + x0`` of the square.
power = OpRule(_power, "elementwise", reveal_cancel=True)
#: Rescale on the first output of an element-wise op that returns ``(value, buffer)``.
first_output_rescale = OpRule(_first_output_rescale, "elementwise")
