"""Max pooling and other max-type ops (``amax``, ``max.dim``, ``amin``, ``min.dim``).

Default mode ``"summation"`` (keeps summation-to-delta): in every window the change
``max(x) - max(x0)`` goes to the arg-max of whichever of input and reference has the larger
maximum (the rule of Captum, SHAP and tangermeme), and the changes of overlapping windows that
pick the same position are *accumulated* (those tools scatter with ``max_unpool``, so the last
window wins and summation-to-delta breaks when windows overlap).  The multiplier of position
``j`` is ``sum_{windows w routed to j} g_w (y_w - y0_w) / (x_j - x0_j)``; it lies in ``[0, 1]``
per window because ``|y_w - y0_w| <= |x_j - x0_j|`` for the routed position.  Backward works in
the output's space (one value per window, divided by the difference at its routed position) and
scatters once, so its cost is that of the pooled output, not of the input.

Mode ``"gradient"`` (the original ``deeplift`` package's option, for comparison): the
multiplier is the ordinary gradient, i.e. ``g`` routed to the input's arg-max.  It does not keep
summation-to-delta.

Where ``|x_j - x0_j| <= eps * max(|x_j|, |x0_j|)`` the multiplier is the ordinary gradient.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from deltalift.rules.registry import OpRule, Pair, RuleContext, pairs_in
from deltalift.rules.rescale import near_zero

Tensor = torch.Tensor
ReduceFn = Callable[[Tensor], tuple[Tensor, Tensor]]


class _RouteMax(torch.autograd.Function):
    """``(y, idx) = reduce_fn(x)`` where ``idx`` indexes the flattened trailing dims of ``x``
    (from ``plane_dims`` on); backward routes ``g * (y - y0)`` as described above.

    What backward reads of ``x`` and ``x0`` is one value per window: at the input's arg-max
    (``y``, and the reference there) and at the reference's (the input there, and ``y0``), so
    those are gathered in forward and the pooled input itself is not kept."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        x: Tensor,
        reduce_fn: ReduceFn,
        x0: Tensor,
        y0: Tensor,
        idx0: Tensor,
        plane_dims: int,
        eps: float,
        mode: str,
    ) -> tuple[Tensor, Tensor]:
        y, idx = reduce_fn(x)
        ctx.mark_non_differentiable(idx)
        ctx.set_materialize_grads(False)
        p = plane_dims
        planes = x.flatten(p)
        idx_flat, idx0_flat = idx.flatten(p), idx0.flatten(p).expand(idx.flatten(p).shape)
        if mode == "gradient":
            ctx.save_for_backward(idx)
        else:
            x_at_reference_argmax = planes.gather(p, idx0_flat)
            reference_at_argmax = x0.flatten(p).expand(planes.shape).gather(p, idx_flat)
            ctx.save_for_backward(idx, idx0, y, y0, x_at_reference_argmax, reference_at_argmax)
        ctx.shapes = (x.shape, planes.shape)
        ctx.plane_dims, ctx.eps, ctx.mode = plane_dims, eps, mode
        return y, idx

    @staticmethod
    def backward(ctx: Any, grad: Tensor, _grad_idx: Any) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        p, (x_shape, planes_shape) = ctx.plane_dims, ctx.shapes
        g = grad.flatten(p)
        idx_flat = ctx.saved_tensors[0].flatten(p)
        m = g.new_zeros(planes_shape)
        if ctx.mode == "gradient":  # the ordinary gradient: g routed to the input's arg-max
            return m.scatter_add_(p, idx_flat, g).view(x_shape), None, None, None, None, None, None, None
        _, idx0, y, y0, x_at_reference_argmax, reference_at_argmax = ctx.saved_tensors
        y_flat, y0_flat = y.flatten(p), y0.flatten(p)
        to_input = y_flat >= y0_flat
        x_w = torch.where(to_input, y_flat, x_at_reference_argmax)  # the input at the routed position
        x0_w = torch.where(to_input, reference_at_argmax, y0_flat)  # the reference there
        dx_w = x_w - x0_w
        per_window = (g * (y_flat - y0_flat)).div_(dx_w)
        near = near_zero(dx_w, ctx.eps, x_w, x0_w, as_mask=True)
        del x_w, x0_w, dx_w  # window-sized temporaries freed before the next ones (the peak of VGG-11's call)
        if near is not None:
            per_window.masked_fill_(near[0], 0.0)
        del near
        m.scatter_add_(p, torch.where(to_input, idx_flat, idx0.flatten(p).expand(idx_flat.shape)), per_window)
        del per_window, to_input
        dx_own = y_flat - reference_at_argmax
        near_own = near_zero(dx_own, ctx.eps, y_flat, reference_at_argmax, as_mask=True)
        if near_own is not None:  # the ordinary gradient at near positions: g routed to the input's arg-max
            m.scatter_add_(p, idx_flat, g * near_own[0])
        return m.view(x_shape), None, None, None, None, None, None, None


def _route(ctx: RuleContext, pair: Pair, reduce_fn: ReduceFn, plane_dims: int) -> tuple[Pair, Pair]:
    if ctx.maxpool_mode not in ("summation", "gradient"):
        raise ValueError(f"maxpool_mode must be 'summation' or 'gradient', got {ctx.maxpool_mode!r}")
    with torch.no_grad():
        y0, idx0 = reduce_fn(pair.ref)
    y, idx = _RouteMax.apply(pair.x, reduce_fn, pair.ref.detach(), y0, idx0, plane_dims, ctx.eps, ctx.maxpool_mode)
    return Pair(y, y0), Pair(idx, idx0)


def max_pool(spatial_dims: int) -> OpRule:
    """Rule for ``max_pool{1,2,3}d_with_indices`` / ``adaptive_max_pool{1,2,3}d`` (values, indices)."""

    def rule(ctx: RuleContext, op: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        pair = args[0]

        def reduce_fn(t: Tensor) -> tuple[Tensor, Tensor]:
            return op(t, *args[1:], **kwargs)

        return _route(ctx, pair, reduce_fn, pair.x.ndim - spatial_dims)

    return OpRule(rule, "max")


def _reduce_over(ctx: RuleContext, pair: Pair, dims: list[int], keepdim: bool) -> tuple[Pair, Pair]:
    """Max over ``dims`` (values and flat indices over those dims)."""
    ndim = pair.x.ndim
    dims = sorted(d % ndim for d in dims) if dims else list(range(ndim))
    keep = [d for d in range(ndim) if d not in dims]

    def to_layout(t: Tensor) -> Tensor:
        return t.permute(keep + dims).flatten(len(keep))

    def reduce_fn(t: Tensor) -> tuple[Tensor, Tensor]:
        values, indices = t.max(dim=-1, keepdim=True)
        return values, indices

    laid_out = Pair(to_layout(pair.x), to_layout(pair.ref))
    values, indices = _route(ctx, laid_out, reduce_fn, len(keep))

    def to_output(t: Tensor, like: Tensor) -> Tensor:
        shape = [1 if d in dims else like.shape[d] for d in range(ndim)]
        t = t.reshape(shape)
        return t if keepdim else t.squeeze(dims) if dims else t

    return (
        Pair(to_output(values.x, pair.x), to_output(values.ref, pair.ref)),
        Pair(to_output(indices.x, pair.x), to_output(indices.ref, pair.ref)),
    )


def _negated(pair: Pair) -> Pair:
    return Pair(-pair.x, -pair.ref)


def _amax(ctx: RuleContext, op: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``amax(x, dim=(), keepdim=False)`` and ``amin`` (as ``-amax(-x)``)."""
    pair = args[0]
    dims = list(args[1] if len(args) > 1 else kwargs.get("dim", []))
    keepdim = bool(args[2] if len(args) > 2 else kwargs.get("keepdim", False))
    is_min = op.overloadpacket is torch.ops.aten.amin
    values, _ = _reduce_over(ctx, _negated(pair) if is_min else pair, dims, keepdim)
    return _negated(values) if is_min else values


def _max_dim(ctx: RuleContext, op: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``max.dim`` / ``min.dim`` (values, indices) and the full reductions ``max()`` / ``min()``."""
    (pair,) = pairs_in(args)
    is_min = op.overloadpacket is torch.ops.aten.min
    source = _negated(pair) if is_min else pair
    if len(args) == 1 and "dim" not in kwargs:
        values, _ = _reduce_over(ctx, source, [], False)
        return _negated(values) if is_min else values
    dim = args[1] if len(args) > 1 else kwargs["dim"]
    keepdim = bool(args[2] if len(args) > 2 else kwargs.get("keepdim", False))
    values, indices = _reduce_over(ctx, source, [dim], keepdim)
    return (_negated(values) if is_min else values), indices


#: ``amax`` / ``amin``.
amax = OpRule(_amax, "max")
#: ``max`` / ``min`` (over one dimension, with indices, or over all).
max_dim = OpRule(_max_dim, "max")
