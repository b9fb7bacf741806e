"""The rule registry and the built-in rules; see :mod:`deltalift.rules.registry`.

Every op of the core ATen set that a model can reach is listed here once, with its kind and
rule.  The lists are grouped by kind so that a reader can see at a glance what each op is
treated as (``docs/rules.md`` has the table with the formulas).
"""

from __future__ import annotations

import operator

import torch

from deltalift.rules import composite, maxtype
from deltalift.rules.linear import assertion, getitem, linear, no_gradient, shape_query
from deltalift.rules.multipliers import with_multipliers
from deltalift.rules.product import bilinear, bilinear_in, divide, multiply
from deltalift.rules.registry import (
    KINDS,
    OpRule,
    Pair,
    RuleContext,
    RuleRegistry,
    default_registry,
    register_rule,
)
from deltalift.rules.rescale import first_output_rescale, power, relu, rescale

aten = torch.ops.aten

# fmt: off
#: Linear, kind "layout": move values without arithmetic.
LAYOUT_OPS = [
    aten.view, aten._unsafe_view, aten.reshape, aten.permute, aten.transpose, aten.t, aten.expand,
    aten.squeeze, aten.unsqueeze, aten.clone, aten.alias, aten._to_copy, aten.slice, aten.select,
    aten.constant_pad_nd, aten.flip, aten.repeat,
]

#: Linear, kind "shift": element-wise addition, subtraction, negation.
SHIFT_OPS = [aten.add, aten.sub, aten.rsub, aten.neg]

#: Linear, kind "average": means and average pooling.
AVERAGE_OPS = [
    aten.mean, aten.avg_pool1d, aten.avg_pool2d, aten.avg_pool3d, aten.adaptive_avg_pool1d,
    aten._adaptive_avg_pool2d, aten._adaptive_avg_pool3d,
]

#: Linear, kind "linear": the other affine ops.
LINEAR_OPS = [
    aten.detach, aten.lift_fresh_copy, aten.to, aten.cat, aten.stack, aten.split,
    aten.split_with_sizes, aten.unbind, aten.chunk, aten.index, aten.index_select, aten.gather,
    aten.narrow, aten.reflection_pad1d, aten.reflection_pad2d, aten.reflection_pad3d,
    aten.replication_pad1d, aten.replication_pad2d, aten.replication_pad3d, aten.roll, aten.cumsum,
    aten.upsample_nearest1d, aten.upsample_nearest2d, aten.upsample_nearest3d, aten.upsample_linear1d,
    aten.upsample_bilinear2d, aten.upsample_trilinear3d, aten.upsample_bicubic2d,
    aten._upsample_bilinear2d_aa, aten.diagonal, aten.tril, aten.triu, aten.unfold, aten.im2col,
    aten.col2im, aten.pixel_shuffle, aten.pixel_unshuffle, aten.as_strided, aten.select_scatter,
    aten.slice_scatter, aten.diagonal_scatter, aten.index_put, aten.scatter, aten.scatter_add,
    aten.copy, aten.masked_fill, aten.zeros_like, aten.ones_like, aten.full_like, aten.empty_like,
    aten.new_zeros, aten.new_ones, aten.new_full, aten.new_empty, aten.full, aten.zeros, aten.ones,
    aten.empty, aten.arange, aten.scalar_tensor, aten.fill, aten.native_dropout, aten.dropout,
    aten.squeeze_copy, aten.view_copy, aten.permute_copy, aten.expand_copy, aten.unsqueeze_copy,
    aten.embedding, aten.grid_sampler_2d, aten.channel_shuffle,
    operator.add, operator.sub, operator.mul, operator.floordiv, operator.truediv,
    operator.neg, operator.mod, operator.pow,
]

#: Outputs that carry no gradient: comparisons, masks, indices, shape queries.
NO_GRADIENT_OPS = [
    aten.eq, aten.ne, aten.gt, aten.ge, aten.lt, aten.le, aten.logical_and, aten.logical_or,
    aten.logical_not, aten.logical_xor, aten.bitwise_and, aten.bitwise_or, aten.bitwise_not,
    aten.bitwise_xor, aten.isnan, aten.isinf, aten.isfinite, aten.isneginf, aten.isposinf,
    aten.argmax, aten.argmin, aten.any, aten.all, aten.empty_strided, aten.nonzero, aten.bucketize,
]

#: Shape queries (no gradient; the same for input and reference, so plain numbers, not Pairs).
SHAPE_OPS = [aten.sym_size, aten.sym_numel, aten.sym_stride, aten.sym_storage_offset]

#: Run-time assertions left in the graph by export.
ASSERTION_OPS = [
    aten._assert_scalar, aten._assert_tensor_metadata, aten.sym_constrain_range_for_size,
    aten.sym_constrain_range, aten._assert_async,
]

#: Element-wise nonlinearities: Rescale with one input-dependent argument, the two-player
#: Shapley split with two.
ELEMENTWISE_OPS = [
    aten.sigmoid, aten.tanh, aten.exp, aten.exp2, aten.expm1, aten.log, aten.log2,
    aten.log10, aten.log1p, aten.sqrt, aten.rsqrt, aten.reciprocal, aten.abs, aten.clamp,
    aten.clamp_min, aten.clamp_max, aten.clip, aten.erf, aten.erfc, aten.erfinv, aten.gelu, aten.silu,
    aten.elu, aten.selu, aten.celu, aten.leaky_relu, aten.hardtanh, aten.hardswish, aten.hardsigmoid,
    aten.softplus, aten.mish, aten.relu6, aten.threshold, aten._prelu_kernel, aten.prelu,
    aten.hardshrink, aten.softshrink, aten.sin, aten.cos, aten.tan, aten.asin, aten.acos, aten.atan,
    aten.sinh, aten.cosh, aten.asinh, aten.acosh, aten.atanh, aten.sign, aten.sgn, aten.floor,
    aten.ceil, aten.round, aten.trunc, aten.frac, aten.maximum, aten.minimum, aten.fmax, aten.fmin,
    aten.atan2, aten.logit, aten.xlogy, aten.nan_to_num, aten.remainder, aten.fmod, aten.heaviside,
    aten.special_erfcx, aten.sigmoid_, aten.relu_, aten.hypot, aten.copysign,
]

#: Ops that torch.export must keep whole (not decompose) so that Rescale sees one nonlinearity.
KEEP_UNDECOMPOSED = [
    aten.silu.default, aten.hardswish.default, aten.hardsigmoid.default, aten.softplus.default,
    aten.mish.default, aten.celu.default, aten.selu.default, aten.relu6.default, aten.prelu.default,
    aten._prelu_kernel.default, aten.threshold.default, aten.hardshrink.default,
    aten.softshrink.default, aten.logsumexp.default, aten.log_sigmoid_forward.default,
    aten.square.default,
]

# fmt: on


def _register_defaults(registry: RuleRegistry) -> None:
    for ops, rule, kind in (
        (LAYOUT_OPS, linear, "layout"),
        (SHIFT_OPS, linear, "shift"),
        (AVERAGE_OPS, linear, "average"),
        (LINEAR_OPS, linear, "linear"),
        (NO_GRADIENT_OPS, no_gradient, "no_gradient"),
        (SHAPE_OPS, shape_query, "no_gradient"),
        (ASSERTION_OPS, assertion, "assertion"),
        (ELEMENTWISE_OPS, rescale, "elementwise"),
    ):
        for op in ops:
            registry.register(op, rule, kind)
    registry.register(aten.sum, linear, "sum")
    registry.register(aten._native_batch_norm_legit_no_training, linear, "batch_norm")
    registry.register(operator.getitem, getitem)
    registry.register(aten.log_sigmoid_forward, first_output_rescale)
    registry.register(aten.relu, relu)
    registry.register(aten.pow, power)
    registry.register(aten.square, power)
    registry.register(aten.mul, multiply)
    registry.register(aten.div, divide)
    registry.register(aten.mm, bilinear_in(0, 1, kind="weighted"))
    registry.register(aten.addmm, bilinear_in(1, 2, kind="weighted"))
    registry.register(aten.convolution, bilinear_in(0, 1, kind="weighted"))
    registry.register(aten.bmm, bilinear)
    registry.register(aten.matmul, bilinear)
    registry.register(aten.dot, bilinear)
    registry.register(aten.baddbmm, bilinear_in(1, 2))
    for op, dims in (
        (aten.max_pool1d_with_indices, 1),
        (aten.max_pool2d_with_indices, 2),
        (aten.max_pool3d_with_indices, 3),
        (aten.adaptive_max_pool1d, 1),
        (aten.adaptive_max_pool2d, 2),
        (aten.adaptive_max_pool3d, 3),
    ):
        registry.register(op, maxtype.max_pool(dims))
    for op in (aten.amax, aten.amin):
        registry.register(op, maxtype.amax)
    for op in (aten.max, aten.min):
        registry.register(op, maxtype.max_dim)
    registry.register(aten._softmax, composite.softmax)
    registry.register(aten._log_softmax, composite.log_softmax)
    registry.register(aten.logsumexp, composite.logsumexp)
    registry.register(aten.native_layer_norm, composite.layer_norm)
    registry.register(aten.native_group_norm, composite.group_norm)
    registry.register(aten._native_batch_norm_legit.no_stats, composite.batch_norm_input_stats)
    for op in (aten.var, aten.var_mean, aten.std, aten.std_mean):
        registry.register(op, composite.variance)
    registry.register(aten.where, composite.where)


_register_defaults(default_registry)

__all__ = [
    "KINDS",
    "OpRule",
    "Pair",
    "RuleContext",
    "RuleRegistry",
    "default_registry",
    "register_rule",
    "with_multipliers",
    "linear",
    "rescale",
    "bilinear",
    "bilinear_in",
    "multiply",
    "divide",
    "no_gradient",
    "KEEP_UNDECOMPOSED",
]
