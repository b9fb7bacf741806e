"""LRP's walk: each op of the captured graph evaluated with the rule its plan gives it.

Relevance travels through autograd as *relevance per unit of activation*, ``g = R / a``, so
that gradient x input is relevance, ``R = a * g`` (see :mod:`deltalift.methods.lrp`).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.fx import Node

from deltalift.canonical import WeightedOp, weighted_op
from deltalift.methods.lrp.plan import RulePlan, _carries_activations, dependent_positions
from deltalift.methods.lrp.rules import LAYER_KINDS, Epsilon, Gradient, LayerRule, Pass, Uniform
from deltalift.rules.registry import RuleRegistry, default_registry, describe

Tensor = torch.Tensor
_GRADIENT = Gradient()


class RelevanceWalk:
    """One pass over the graph: evaluates each op with its rule and carries the input probes."""

    def __init__(self, plan: RulePlan, probes: dict[Node, Tensor], registry: RuleRegistry = default_registry) -> None:
        self.plan = plan
        self.registry = registry
        self.probes = probes
        self.pending: dict[Node, tuple[WeightedOp, Tensor, Tensor | None]] = {}  # merged layers, by their node

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
            layer, a, probe = _weighted(node, args, position), args[position], self._probe_of(node.args[position])
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
        merged = layer.fold_batch_norm(weight, bias, mean, var, eps)
        return (_LayerRelevance.apply(a, probe, _Step(bn, merged, rule, outputs[0])),) + tuple(outputs[1:])

    def _probe_of(self, source: Any) -> Tensor | None:
        return self.probes.get(source) if isinstance(source, Node) else None

    def _follow_probe(self, node: Node, args: Any, kwargs: Any, value: Any) -> None:
        """Carry an input's probe through reshapes, slicing, padding and element-wise shifts and scalings."""
        sources = [a for a in node.all_input_nodes if a in self.plan.dependent and _carries_activations(a)]
        if len(sources) != 1 or sources[0] not in self.probes or not isinstance(value, Tensor):
            return
        probe = self.probes[sources[0]]
        kind = self.registry.kind(node.target)
        if kind == "layout" and node.args[0] is sources[0]:
            self.probes[node] = node.target(probe, *args[1:], **kwargs)  # type: ignore[operator]
        elif kind in ("shift", "multiply", "divide") and value.shape == probe.shape:
            self.probes[node] = probe


@dataclass
class _Step:
    """What a weighted op's backward needs: the layer, its rule, and its output value ``z``."""

    node: Node
    layer: WeightedOp
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


def _weighted(node: Node, args: Sequence[Any], position: int) -> WeightedOp:
    """The weighted op of ``node`` (activation at ``position``) with its evaluated arguments."""
    weighted = weighted_op(node.target, args, position)
    assert weighted is not None  # the plan gives layer rules to conv and dense ops only
    return weighted
