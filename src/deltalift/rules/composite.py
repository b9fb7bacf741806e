"""Ops explained by composing exact rules over their elementary parts.

Softmax, log-softmax, logsumexp, layer norm, group norm and variance are re-expressed with
``exp``, ``log``, sums, ``rsqrt`` and products, each of which goes through its own rule, so
summation-to-delta holds exactly for the composition.  Two pieces are chosen for conditioning
(no contribution orders of magnitude larger than the change it explains, float32 agreeing with
float64), not only exactness:

- logsumexp in closed form (:mod:`deltalift.rules.logsumexp`): its Rescale chain with each
  side's shift factored out; log-softmax is ``x - logsumexp(x)`` and softmax
  ``exp(log_softmax(x))``.  (Composing ``exp(x - c) * (1 / sum)`` with the product split is
  exact too, but its two terms grow like ``e^gap`` and cancel.)
- the normalising product ``(x - mean) * rsqrt(var + eps)`` uses the scale split of
  :func:`~deltalift.rules.product.scale_product`, which stays bounded at a reference with zero
  variance, where ``rsqrt(eps)`` is about 1000.
"""

from __future__ import annotations

import operator
from typing import Any

import torch

from deltalift.errors import UnsupportedOperationError
from deltalift.rules.linear import linear
from deltalift.rules.logsumexp import logsumexp_pair, softmax_pair
from deltalift.rules.multipliers import with_multipliers
from deltalift.rules.normalise import normalise_pair
from deltalift.rules.product import scale_product
from deltalift.rules.registry import OpRule, Pair, RuleContext, is_pair, same_on_both_sides
from deltalift.rules.rescale import rescale_multiplier

Tensor = torch.Tensor
aten = torch.ops.aten


def _softmax(ctx: RuleContext, op: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``_softmax(x, dim, half_to_float)`` = ``exp(log_softmax(x))`` (Rescale on the log-probabilities,
    whose secant lies between the two probabilities), composed in one step
    (:func:`~deltalift.rules.logsumexp.softmax_pair`)."""
    return softmax_pair(args[0], args[1], ctx.eps)


def _log_softmax(ctx: RuleContext, op: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``_log_softmax(x, dim, half_to_float)`` = ``x - logsumexp(x)`` (logsumexp in closed form)."""
    pair, dim = args[0], args[1]
    return ctx.call(aten.sub.Tensor, pair, logsumexp_pair(pair, [dim], ctx.eps))


def _logsumexp(ctx: RuleContext, op: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``logsumexp(x, dim, keepdim)`` in closed form (:mod:`deltalift.rules.logsumexp`)."""
    pair = args[0]
    dims = list(args[1] if len(args) > 1 else kwargs.get("dim", []))
    keepdim = bool(args[2] if len(args) > 2 else kwargs.get("keepdim", False))
    dims = dims or list(range(pair.x.ndim))
    out = logsumexp_pair(pair, dims, ctx.eps)
    return out if keepdim else ctx.call(aten.squeeze.dims, out, dims)


def _normalise(ctx: RuleContext, op: Any, pair: Any, dims: list[int], eps: float) -> tuple[Any, Any, Any]:
    """``(x - mean) * rsqrt(var + eps)`` over ``dims`` (biased variance), mean and rstd; the
    product with the scale split of :func:`~deltalift.rules.product.scale_product`.  Where the
    norm's mean and rstd are not read, the chain runs in one step
    (:func:`~deltalift.rules.normalise.normalise_pair`) and they are ``None``."""
    if not _statistics_read(ctx, op):
        return normalise_pair(pair, dims, eps, ctx.eps), None, None
    mean = ctx.call(aten.mean.dim, pair, dims, True)
    centred = ctx.call(aten.sub.Tensor, pair, mean)
    var = ctx.call(aten.mean.dim, ctx.call(aten.pow.Tensor_Scalar, centred, 2), dims, True)
    rstd = ctx.call(aten.rsqrt.default, ctx.call(aten.add.Tensor, var, eps))
    return scale_product(centred, rstd), mean, rstd


def _statistics_read(ctx: RuleContext, op: Any) -> bool:
    """Whether the graph reads the mean or rstd output of the norm ``op`` being evaluated (not
    known, so assumed, when the rule is called from another rule)."""
    node = ctx.node
    if node is None or node.target is not op:
        return True
    return any(user.target is not operator.getitem or user.args[1] != 0 for user in node.users)


def _layer_norm(ctx: RuleContext, op: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``native_layer_norm(x, shape, weight, bias, eps)`` -> ``(out, mean, rstd)``."""
    pair, shape, weight, bias, eps = args
    if not is_pair(pair):
        return linear(ctx, op, args, kwargs)
    dims = list(range(pair.x.ndim - len(shape), pair.x.ndim))
    out, mean, rstd = _normalise(ctx, op, pair, dims, eps)
    if weight is not None:
        out = ctx.call(aten.mul.Tensor, out, weight)
    if bias is not None:
        out = ctx.call(aten.add.Tensor, out, bias)
    return _contiguous(out), mean, rstd


def _group_norm(ctx: RuleContext, op: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``native_group_norm(x, weight, bias, N, C, HxW, group, eps)`` -> ``(out, mean, rstd)``."""
    pair, weight, bias, _n, channels, _hw, groups, eps = args
    if not is_pair(pair):
        return linear(ctx, op, args, kwargs)
    shape = pair.x.shape
    grouped = Pair(pair.x.reshape(shape[0], groups, -1), pair.ref.reshape(pair.ref.shape[0], groups, -1))
    out, mean, rstd = _normalise(ctx, op, grouped, [2], eps)
    out = Pair(out.x.reshape(shape), out.ref.reshape((pair.ref.shape[0],) + tuple(shape[1:])))
    affine_shape = [1, channels] + [1] * (len(shape) - 2)
    if weight is not None:
        out = ctx.call(aten.mul.Tensor, out, weight.reshape(affine_shape))
    if bias is not None:
        out = ctx.call(aten.add.Tensor, out, bias.reshape(affine_shape))
    if mean is None:
        return _contiguous(out), None, None
    return _contiguous(out), ctx.call(aten.squeeze.dim, mean, -1), ctx.call(aten.squeeze.dim, rstd, -1)


def _batch_norm_input_stats(ctx: RuleContext, op: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``_native_batch_norm_legit.no_stats(x, weight, bias, training, momentum, eps)`` -> ``(out, mean, rstd)``:
    normalisation with the input's own statistics over every dimension but the channels (dim 1).

    ``InstanceNorm`` reaches it with the batch folded into the channels (shape ``(1, N*C, ...)``),
    so the statistics are per example.  (A ``BatchNorm`` with ``track_running_stats=False`` reaches
    it with statistics over the batch: its outputs then depend on the other examples.)
    """
    pair, weight, bias, _training, _momentum, eps = args
    if not is_pair(pair):
        return linear(ctx, op, args, kwargs)
    ndim = pair.x.ndim
    dims = [0] + list(range(2, ndim))
    out, mean, rstd = _normalise(ctx, op, pair, dims, eps)
    affine_shape = [1, pair.x.shape[1]] + [1] * (ndim - 2)  # (InstanceNorm repeats its weight per example)
    if weight is not None:
        out = ctx.call(aten.mul.Tensor, out, ctx.call(aten.reshape.default, weight, affine_shape))
    if bias is not None:
        out = ctx.call(aten.add.Tensor, out, ctx.call(aten.reshape.default, bias, affine_shape))
    if mean is None:
        return _contiguous(out), None, None
    return _contiguous(out), ctx.call(aten.reshape.default, mean, [-1]), ctx.call(aten.reshape.default, rstd, [-1])


def _contiguous(pair: Pair) -> Pair:
    """Contiguous like the native norm kernels' outputs: the captured graph may ``view`` them
    (e.g. ``F.linear`` after a LayerNorm on a permuted tensor, as in ConvNeXt), and the
    element-wise composition keeps the strides of a permuted input."""
    return Pair(pair.x.contiguous(), pair.ref.contiguous())


def _variance(ctx: RuleContext, op: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``var``/``var_mean``/``std``/``std_mean`` as ``sum((x - mean)^2) / (n - correction)``."""
    pair = args[0]
    dims = args[1] if len(args) > 1 else kwargs.get("dim")
    dims = list(range(pair.x.ndim)) if dims is None else list(dims)
    correction = kwargs.get("correction", 1)
    correction = 1 if correction is None else correction
    keepdim = bool(kwargs.get("keepdim", False))
    count = 1
    for d in dims:
        count *= pair.x.shape[d]
    mean = ctx.call(aten.mean.dim, pair, dims, True)
    squares = ctx.call(aten.pow.Tensor_Scalar, ctx.call(aten.sub.Tensor, pair, mean), 2)
    var = ctx.call(aten.div.Tensor, ctx.call(aten.sum.dim_IntList, squares, dims, keepdim), max(count - correction, 0))
    packet = op.overloadpacket
    out = ctx.call(aten.sqrt.default, var) if packet in (aten.std, aten.std_mean) else var
    if packet in (aten.var_mean, aten.std_mean):
        return out, (mean if keepdim else ctx.call(aten.squeeze.dims, mean, dims))
    return out


def _where(ctx: RuleContext, op: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``where(cond, a, b)``: Linear when ``cond`` is constant or equal for input and reference;
    where it differs and one branch is a constant, Rescale on the other branch."""
    cond, a, b = args
    if not is_pair(cond) or same_on_both_sides(cond):
        plain_cond = cond.x if is_pair(cond) else cond
        return linear(ctx, op, (plain_cond, a, b), kwargs)
    a_varies = is_pair(a) and not same_on_both_sides(a)
    b_varies = is_pair(b) and not same_on_both_sides(b)
    if a_varies and b_varies:
        raise UnsupportedOperationError(
            f"{op}: the condition depends on the explained input and differs between input and "
            f"reference while both branches do too{ctx.at}; no exact rule. Use a single "
            "element-wise op (torch.relu, F.leaky_relu, torch.maximum, ...) instead."
        )
    if not (a_varies or b_varies):  # both branches are the same for input and reference
        return linear(ctx, op, (cond, a.x if is_pair(a) else a, b.x if is_pair(b) else b), kwargs)
    branch = a if a_varies else b
    other = _one_side(b if a_varies else a)

    def select(condition: Tensor, t: Tensor) -> Tensor:
        return op(condition, t, other) if a_varies else op(condition, other, t)

    def selected(t: Tensor) -> Tensor:
        return select(cond.x, t)

    with torch.no_grad():
        y0 = select(cond.ref, branch.ref)
        y = selected(branch.x.detach())
        m = rescale_multiplier(selected, branch.x.detach(), branch.ref, y, y0, ctx.eps, False)
    return Pair(with_multipliers(y, [branch.x], [m]), y0)


def _one_side(value: Any) -> Any:
    return value.x.detach() if is_pair(value) else value


softmax = OpRule(_softmax, "composite")
log_softmax = OpRule(_log_softmax, "composite")
logsumexp = OpRule(_logsumexp, "composite")
layer_norm = OpRule(_layer_norm, "composite")
group_norm = OpRule(_group_norm, "composite")
batch_norm_input_stats = OpRule(_batch_norm_input_stats, "composite")
variance = OpRule(_variance, "composite")
where = OpRule(_where, "select")
