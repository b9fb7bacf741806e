"""Layer-wise Relevance Propagation (Bach et al. 2015) on the captured graph, with Captum's interface.

The target output's value is the relevance to distribute; each op of the captured ATen graph
passes it back through the rule a :mod:`composite <deltalift.methods.lrp_composites>` gives it
(:mod:`deltalift.methods.lrp_rules`).  Relevance travels through autograd as *relevance per unit
of activation*, ``g = R / a``, so that gradient x input is relevance, ``R = a * g``:

- a weighted linear op (conv, dense; a following eval-mode batch norm merged in, as Zennit's
  ``SequentialMergeBatchNorm``) returns its ordinary value, and its backward turns ``R_out =
  z * g_out`` into ``R_in`` by the rule and returns ``g_in = R_in / a``;
- ``Pass`` (activations) returns ``g_out * y / x``, ``Norm``/``Epsilon`` on ops without weights
  scale ``g_out`` by ``z / stab(z)`` before the op's own backward, ``Uniform`` by one half;
- every other op keeps its gradient: LRP-0 on affine ops (a bias absorbs its share), all to the
  arg-max at max pooling, relevance unchanged through reshapes and slicing.

Rules whose relevance is not proportional to the input (Flat, WSquare, ZBox: the input-layer
rules) send their relevance to the explained inputs directly, through a zero-valued *probe* that
follows the input through reshapes, slicing, padding and element-wise scaling or shifting
(input normalisation), so that inputs equal to zero receive relevance too.

Conservation: with bias-free layers and z+ or alpha-beta rules, the input relevance sums to the
target output; ``return_convergence_delta=True`` returns ``sum(R_in) - t(x)`` per example.

Use::

    from deltalift.methods.lrp import LRP
    from deltalift.methods.lrp_composites import EpsilonGammaBox

    relevance, delta = LRP(model.eval(), EpsilonGammaBox(low=-3.0, high=3.0)).attribute(
        images, target=labels, return_convergence_delta=True)
    relevance = LRP(model, "epsilon_plus_flat").attribute(images, target=labels)
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Union

import torch
from torch import nn
from torch.fx import Node

from deltalift.capture import CapturedProgram, as_module, capture
from deltalift.engine import input_dependent, module_path, walk_graph
from deltalift.errors import UnsupportedOperationError
from deltalift.inputs import TargetType, TensorOrTuple, as_tuple, check_inputs, check_model, select_target
from deltalift.methods.lrp_composites import Composite, as_composite
from deltalift.methods.lrp_rules import (
    LAYER_KINDS,
    Epsilon,
    Gradient,
    Layer,
    LayerRule,
    Pass,
    Rule,
    Uniform,
)
from deltalift.rules import ELEMENTWISE_OPS, LINEAR_OPS, NO_GRADIENT_OPS, SKIPPED_OPS
from deltalift.rules.registry import describe

Tensor = torch.Tensor
Attribution = Union[Tensor, tuple[Tensor, ...]]
aten = torch.ops.aten

# fmt: off
POOL_OPS = {aten.avg_pool1d, aten.avg_pool2d, aten.avg_pool3d, aten.adaptive_avg_pool1d,
            aten._adaptive_avg_pool2d, aten._adaptive_avg_pool3d, aten.mean}
MAX_OPS = {aten.max_pool1d_with_indices, aten.max_pool2d_with_indices, aten.max_pool3d_with_indices,
           aten.adaptive_max_pool1d, aten.adaptive_max_pool2d, aten.adaptive_max_pool3d, aten.amax,
           aten.amin, aten.max, aten.min}
#: Bilinear ops and the positions of their two factors.
FACTORS = {aten.mul: (0, 1), aten.mm: (0, 1), aten.bmm: (0, 1), aten.matmul: (0, 1), aten.dot: (0, 1),
           aten.addmm: (1, 2), aten.baddbmm: (1, 2), aten.convolution: (0, 1)}
#: Ops through which the probe of an input-layer rule follows the explained input.
MOVING_OPS = {aten.view, aten._unsafe_view, aten.reshape, aten.permute, aten.transpose, aten.t, aten.expand,
              aten.squeeze, aten.unsqueeze, aten.clone, aten.alias, aten._to_copy, aten.slice, aten.select,
              aten.constant_pad_nd, aten.flip, aten.repeat}
SHIFTING_OPS = {aten.add, aten.sub, aten.rsub, aten.mul, aten.div, aten.neg}
# fmt: on
_ELEMENTWISE = set(ELEMENTWISE_OPS)
_LINEAR = set(LINEAR_OPS) | {aten.where}
_NO_RELEVANCE = set(NO_GRADIENT_OPS) | set(SKIPPED_OPS)
_GRADIENT = Gradient()


class LRP:
    """Layer-wise Relevance Propagation on any model that ``torch.export`` can capture.

    Parameters
    ----------
    model:
        An ``nn.Module`` (in eval mode) or a forward function.  It is never modified (batch
        norm is merged into the rules' copies of the weights, not into the model).
    composite:
        Which rule each op gets: a :class:`~deltalift.methods.lrp_composites.Composite`
        (e.g. ``EpsilonPlusFlat()``, ``EpsilonGammaBox(low=-3, high=3)``, or ``Composite(
        layer_map=..., name_map=...)``), a composite's name (``"epsilon"``, ``"epsilon_plus"``,
        ``"epsilon_alpha2_beta1"``, ``"epsilon_plus_flat"``, ``"epsilon_alpha2_beta1_flat"``),
        or ``None`` for LRP-epsilon on every layer (Captum's default).
    """

    def __init__(self, model: nn.Module | Callable[..., Tensor], composite: Composite | str | None = None) -> None:
        self.model = model
        self._module = as_module(model)
        self.composite = as_composite(composite)

    @property
    def multiplies_by_inputs(self) -> bool:
        return True

    def has_convergence_delta(self) -> bool:
        return True

    def attribute(
        self,
        inputs: TensorOrTuple,
        target: TargetType = None,
        additional_forward_args: Any = None,
        return_convergence_delta: bool = False,
    ) -> Any:
        """The relevance of each input feature for ``target`` of ``model(*inputs, *additional_forward_args)``.

        Parameters
        ----------
        inputs:
            A tensor ``(batch, ...)`` or a tuple of them.
        target:
            An int, one int per example, or ``None`` for a model with one output per example.
            Its value ``t(x)`` is the relevance that is distributed.
        additional_forward_args:
            Further arguments of the model, not explained.
        return_convergence_delta:
            Also return ``sum_i R_i - t(x)`` per example (zero where the rules conserve
            relevance; biases, epsilon and dropped relevance make it non-zero).

        Returns
        -------
        Relevances shaped like ``inputs`` (a tuple when a tuple was given), and the delta when asked.
        """
        tensors, given_tuple = check_inputs(inputs)
        check_model(self._module, tensors)
        extra = as_tuple(additional_forward_args)
        batch = tensors[0].shape[0]
        program = capture(self._module, tensors + extra, batch)
        plan = plan_rules(program, len(tensors), self.composite)
        leaves = [x.detach().requires_grad_(True) for x in tensors]
        probes = [torch.zeros_like(x).requires_grad_(True) for x in tensors]
        walk = _Walk(plan, dict(zip(plan.inputs, probes)))
        with torch.enable_grad():
            outputs = walk_graph(program, self._module, leaves + list(extra), walk.evaluate)
            if len(outputs) != 1 or not isinstance(outputs[0], Tensor):
                raise ValueError("LRP explains a model with one output tensor")
            if not outputs[0].requires_grad:
                raise ValueError("the model's output does not depend on the explained inputs")
            t = select_target(outputs[0], target, batch)
            grads = torch.autograd.grad(t.sum(), leaves + probes, allow_unused=True)
        relevance = tuple(
            x.detach() * _or_zero(g, x) + _or_zero(gp, x)
            for x, g, gp in zip(leaves, grads[: len(leaves)], grads[len(leaves) :])
        )
        delta = torch.stack([r.flatten(1).sum(1) for r in relevance]).sum(0) - t.detach()
        result: Attribution = relevance if given_tuple else relevance[0]
        return (result, delta) if return_convergence_delta else result


def _or_zero(grad: Tensor | None, like: Tensor) -> Tensor:
    return torch.zeros_like(like) if grad is None else grad.detach()


# --------------------------------------------------------------------------------------------------
# planning: the kind and rule of every op


@dataclass
class RulePlan:
    """Which rule each input-dependent op gets, and which layers absorb a batch norm."""

    dependent: set[Node]
    inputs: list[Node]  #: the explained inputs' placeholders
    rules: dict[Node, tuple[str, Rule]] = field(default_factory=dict)
    merged: dict[Node, Node] = field(default_factory=dict)  #: batch norm node -> the layer node it follows


def plan_rules(program: CapturedProgram, n_explained: int, composite: Composite) -> RulePlan:
    """Classify every op that depends on the explained inputs and give it its composite's rule."""
    dependent = input_dependent(program, n_explained)
    placeholders = [n for n in program.graph.nodes if n.op == "placeholder"]
    inputs = [n for n, (kind, key) in zip(placeholders, program.placeholders) if kind == "input" and key < n_explained]
    plan = RulePlan(dependent, inputs)
    before_layers = set(inputs)  # reached from an input without crossing a weighted op
    for node in program.graph.nodes:
        if node.op != "call_function" or node not in dependent:
            continue
        kind = op_kind(node, dependent)
        reached = any(a in before_layers for a in node.all_input_nodes)
        if kind not in LAYER_KINDS and reached and _carries_activations(node):
            before_layers.add(node)
        if kind is None:
            continue
        rule = composite.rule(kind, _names(node), kind in LAYER_KINDS and reached)
        if rule is None:
            raise UnsupportedOperationError(
                f"LRP has no rule for {node.target} ({kind}) at {describe(node)}. Give one in the composite, "
                f"e.g. Composite(name_map={{{_names(node)[0]!r}: 'gradient'}}) or layer_map={{{kind!r}: ...}}"
                + ("; for products of two activations 'uniform' gives each factor half" if kind == "product" else "")
            )
        plan.rules[node] = (kind, rule)
        if kind == "batch_norm" and composite.merge_batch_norm:
            _merge_into_layer(plan, node)
    _check_name_map(program, composite, plan)
    return plan


def op_kind(node: Node, dependent: set[Node]) -> str | None:
    """The kind (:data:`~deltalift.methods.lrp_rules.KINDS`) of an input-dependent op, ``None``
    for ops that carry no relevance of their own (indexing into tuples, shape queries, masks)."""
    op = node.target
    packet = getattr(op, "overloadpacket", op)
    if not isinstance(op, torch._ops.OpOverload) or packet in _NO_RELEVANCE:
        return None
    positions = dependent_positions(node, dependent)
    if packet in FACTORS and set(FACTORS[packet]) <= set(positions):
        return "product"
    if packet is aten.convolution:
        return "conv" if positions == [0] else "linear"
    if packet is aten.addmm:
        return "dense" if positions == [1] and not node.kwargs else "linear"
    if packet is aten.mm:
        return "dense"
    if packet is aten._native_batch_norm_legit_no_training:
        return "batch_norm" if positions == [0] else "other"
    if packet in POOL_OPS:
        return "pool"
    if packet is aten.sum or (packet in (aten.add, aten.sub) and len(positions) >= 2):
        return "sum"
    if packet in MAX_OPS:
        return "max"
    if packet in _ELEMENTWISE:
        return "activation" if len(positions) == 1 else "other"
    if packet is aten.div:
        return "linear" if positions == [0] else "other"
    if packet in _LINEAR or packet in FACTORS:
        return "linear"
    return "other"


def dependent_positions(node: Node, dependent: set[Node]) -> list[int]:
    """The positions of ``node``'s arguments that depend on the explained inputs."""
    return [i for i, a in enumerate(node.args) if isinstance(a, Node) and a in dependent]


def _carries_activations(node: Node) -> bool:
    """Whether the node's value holds floating tensors (not sizes or indices)."""
    values = node.meta.get("val")
    values = values if isinstance(values, (tuple, list)) else (values,)
    return any(isinstance(v, Tensor) and v.is_floating_point() for v in values)


def _names(node: Node) -> list[str]:
    """The node's name, then its module path and the paths of the modules around it."""
    names = [node.name]
    path = module_path(node)
    while path:
        names.append(path)
        path = path.rpartition(".")[0]
    return names


def _merge_into_layer(plan: RulePlan, bn: Node) -> None:
    """Let a batch norm that directly follows a conv or dense layer (its only use) be merged into it."""
    layer = bn.args[0]
    if not isinstance(layer, Node) or layer not in plan.rules or len(layer.users) != 1:
        return
    kind, rule = plan.rules[layer]
    if kind not in LAYER_KINDS or not isinstance(rule, LayerRule):
        return
    if layer.target is aten.convolution.default and layer.args[6] and layer.args[8] != 1:
        return  # grouped transposed convolution: batch norm channels are not a weight dimension
    if layer.target is aten.mm.default and dependent_positions(layer, plan.dependent) != [0]:
        return
    plan.merged[bn] = layer


def _check_name_map(program: CapturedProgram, composite: Composite, plan: RulePlan) -> None:
    """Every name_map entry names a module or graph node of the model and reaches an op."""
    names = [_names(node) for node in program.graph.nodes]
    known = {name for each in names for name in each}
    paths = sorted({name for each in names for name in each[1:]})
    used = {id(rule) for _, rule in plan.rules.values()}
    for keys, rule in composite.name_map:
        for key in keys:
            if key not in known:
                raise ValueError(
                    f"name_map entry {key!r} names no module or graph node of the model; module paths are "
                    f"as in model.named_modules(): {', '.join(paths[:12]) or 'none'}{', ...' if len(paths) > 12 else ''}"
                )
        if id(rule) not in used:
            raise ValueError(f"name_map gives {rule!r} to {', '.join(keys)}, but it suits none of its ops")


# --------------------------------------------------------------------------------------------------
# the walk: each op evaluated with its rule


class _Walk:
    """One pass over the graph: evaluates each op with its rule and carries the input probes."""

    def __init__(self, plan: RulePlan, probes: dict[Node, Tensor]) -> None:
        self.plan = plan
        self.probes = probes
        self.pending: dict[Node, tuple[Layer, Tensor, Tensor | None]] = {}  # merged layers, by their node

    def evaluate(self, node: Node, args: Any, kwargs: Any, env: dict[Node, Any]) -> Any:
        op: Any = node.target
        if node not in self.plan.dependent:
            with torch.no_grad():
                return op(*args, **kwargs)
        kind, rule = self.plan.rules.get(node, (None, _GRADIENT))
        if node in self.plan.merged:
            return self._merged(node, op, args, kwargs)
        if kind in LAYER_KINDS and isinstance(rule, LayerRule):
            (position,) = dependent_positions(node, self.plan.dependent)
            layer, a, probe = _layer(node, args, position), args[position], self._probe_of(node.args[position])
            with torch.no_grad():
                value = op(*args, **kwargs)
            if node in self.plan.merged.values():  # its batch norm applies the rule
                self.pending[node] = (layer, a, probe)
                return value
            return _LayerRelevance.apply(a, probe, _Step(node, layer, rule, value))
        value = op(*args, **kwargs)
        if isinstance(rule, Epsilon):
            return _scaled(value, rule.output_factor)
        if isinstance(rule, Uniform):
            return _scaled(value, lambda z: torch.full_like(z, 0.5))
        if isinstance(rule, Pass):
            return _passed(value, args[0])
        self._follow_probe(node, args, kwargs, value)
        return value

    def _merged(self, bn: Node, op: Any, args: Any, kwargs: Any) -> Any:
        """A batch norm merged into the layer before it: the layer's rule on the merged weights."""
        layer_node = self.plan.merged[bn]
        layer, a, probe = self.pending.pop(layer_node)
        rule = self.plan.rules[layer_node][1]
        assert isinstance(rule, LayerRule)
        with torch.no_grad():
            outputs = op(*args, **kwargs)
        weight, bias, mean, var, _, eps = args[1:7]
        merged = merge_batch_norm(layer, weight, bias, mean, var, eps)
        return (_LayerRelevance.apply(a, probe, _Step(bn, merged, rule, outputs[0])),) + tuple(outputs[1:])

    def _probe_of(self, source: Any) -> Tensor | None:
        return self.probes.get(source) if isinstance(source, Node) else None

    def _follow_probe(self, node: Node, args: Any, kwargs: Any, value: Any) -> None:
        """Carry an input's probe through reshapes, slicing, padding and element-wise shifts and scalings."""
        sources = [a for a in node.all_input_nodes if a in self.plan.dependent and _carries_activations(a)]
        if len(sources) != 1 or sources[0] not in self.probes or not isinstance(value, Tensor):
            return
        probe = self.probes[sources[0]]
        packet = getattr(node.target, "overloadpacket", None)
        if packet in MOVING_OPS and node.args[0] is sources[0]:
            self.probes[node] = node.target(probe, *args[1:], **kwargs)  # type: ignore[operator]
        elif packet in SHIFTING_OPS and value.shape == probe.shape:
            self.probes[node] = probe


@dataclass
class _Step:
    """What a weighted op's backward needs: the layer, its rule, and its output value ``z``."""

    node: Node
    layer: Layer
    rule: LayerRule
    value: Tensor


class _LayerRelevance(torch.autograd.Function):
    """Forward: the op's value.  Backward: ``R_out = z * g_out``, ``R_in`` by the rule, returned
    as ``R_in / a`` to the input, or to the input's probe for rules not proportional to ``a``."""

    @staticmethod
    def forward(ctx: Any, a: Tensor, probe: Tensor | None, step: _Step) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(a)
        ctx.step = step
        ctx.direct = probe is not None and step.rule.direct
        return step.value.clone()

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> tuple[Tensor | None, Tensor | None, None]:  # type: ignore[override]
        (a,) = ctx.saved_tensors
        step: _Step = ctx.step
        relevance = step.rule.relevance(step.layer, a.detach(), g * step.value)
        if ctx.direct:
            return None, relevance, None
        zero = a == 0
        if step.rule.direct and bool((relevance[zero] != 0).any()):
            warnings.warn(
                f"LRP: {type(step.rule).__name__} at {describe(step.node)} gives relevance to inputs equal to "
                "zero, which cannot be carried further back (the layer is not fed by an explained input "
                "through reshapes, slicing, padding or element-wise scaling); it is dropped",
                stacklevel=2,
            )
        return torch.where(zero, 0.0, relevance / torch.where(zero, 1.0, a)), None, None


def _scaled(value: Any, factor: Callable[[Tensor], Tensor]) -> Any:
    """``value`` (or its first output) whose backward multiplies the incoming gradient by ``factor(value)`` first."""
    if isinstance(value, (tuple, list)):
        return (_scaled(value[0], factor),) + tuple(value[1:])
    z = value.detach()
    surrogate = value * factor(z)
    return z + (surrogate - surrogate.detach())


def _passed(value: Any, x: Tensor) -> Any:
    """``value`` (an op's output, or its first output) whose backward is ``g * y / x``: relevance unchanged."""
    if isinstance(value, (tuple, list)):
        return (_passed(value[0], x),) + tuple(value[1:])
    y = value.detach()
    zero = x.detach() == 0
    ratio = torch.where(zero, 0.0, y / torch.where(zero, 1.0, x.detach()))
    surrogate = x * ratio
    return y + (surrogate - surrogate.detach())


# --------------------------------------------------------------------------------------------------
# weighted ops as Layers, and batch norm merging


def _layer(node: Node, args: Sequence[Any], position: int) -> Layer:
    """The weighted op of ``node`` (input at ``position``) as a :class:`Layer` with its evaluated arguments."""
    packet = getattr(node.target, "overloadpacket", None)
    if packet is aten.convolution:
        stride, padding, dilation, transposed, output_padding, groups = args[3:9]

        def conv(a: Tensor, w: Tensor, b: Tensor | None) -> Tensor:
            return aten.convolution(a, w, b, stride, padding, dilation, transposed, output_padding, groups)

        def conv_backward(s: Tensor, a: Tensor, w: Tensor) -> Tensor:
            options = (stride, padding, dilation, transposed, output_padding, groups, [True, False, False])
            return aten.convolution_backward(s, a, w, None, *options)[0]

        channel_dim = (1 if groups == 1 else None) if transposed else 0
        return Layer("conv", args[1], args[2], conv, channel_dim, conv_backward)
    if packet is aten.addmm:
        return Layer("dense", args[2], args[0], _dense, 1, _dense_backward)
    if position == 0:
        return Layer("dense", args[1], None, _dense, 1, _dense_backward)
    return Layer("dense", args[0], None, lambda a, w, b: aten.mm(w, a), None, lambda s, a, w: aten.mm(w.t(), s))


def _dense(a: Tensor, w: Tensor, b: Tensor | None) -> Tensor:
    return aten.mm(a, w) if b is None else aten.addmm(b, a, w)


def _dense_backward(s: Tensor, a: Tensor, w: Tensor) -> Tensor:
    return aten.mm(s, w.t())


def merge_batch_norm(
    layer: Layer,
    weight: Tensor | None,
    bias: Tensor | None,
    mean: Tensor,
    var: Tensor,
    eps: float,
) -> Layer:
    """The layer followed by eval-mode batch norm as one layer (Zennit's ``MergeBatchNorm``)::

    scale = gamma / sqrt(var + eps),   W' = W * scale,   b' = (b - mean) * scale + beta
    """
    if layer.channel_dim is None:
        raise UnsupportedOperationError("cannot merge a batch norm into this layer (grouped transposed convolution)")
    scale = (var + eps).rsqrt() if weight is None else weight / (var + eps).sqrt()
    shape = [1] * layer.weight.ndim
    shape[layer.channel_dim] = -1
    b = torch.zeros_like(mean) if layer.bias is None else layer.bias
    new_bias = (b - mean) * scale + (0.0 if bias is None else bias)
    return replace(layer, weight=layer.weight * scale.reshape(shape), bias=new_bias)
