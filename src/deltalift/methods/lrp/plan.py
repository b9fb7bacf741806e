"""LRP's plan: the kind and rule of every op that depends on the explained inputs.

An op's LRP kind (``conv``, ``dense``, ``pool``, ``sum``, ``activation``, ``max``, ``linear``,
``product``, ``batch_norm``, ``other``) is derived from its kind in deltalift's rule registry,
the one place that classifies operations; the composite then gives each kind (or each named
module or graph node) its rule.  A batch norm right after a conv or dense layer is folded into
it (:meth:`deltalift.canonical.WeightedOp.fold_batch_norm`), as Zennit's canonizers do.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch.fx import Node

from deltalift.capture import CapturedProgram
from deltalift.errors import UnsupportedOperationError
from deltalift.methods.lrp.composites import Composite
from deltalift.methods.lrp.rules import LAYER_KINDS, LayerRule, RelevanceRule
from deltalift.plan import input_dependent, module_path
from deltalift.rules.registry import RuleRegistry, default_registry, describe

Tensor = torch.Tensor
aten = torch.ops.aten


@dataclass
class RulePlan:
    """Which rule each input-dependent op gets, and which layers absorb a batch norm."""

    dependent: set[Node]
    inputs: list[Node]  #: the explained inputs' placeholders
    rules: dict[Node, tuple[str, RelevanceRule]] = field(default_factory=dict)
    merged: dict[Node, Node] = field(default_factory=dict)  #: batch norm node -> the layer node it follows


def plan_rules(
    program: CapturedProgram, n_explained: int, composite: Composite, registry: RuleRegistry = default_registry
) -> RulePlan:
    """Classify every op that depends on the explained inputs and give it its composite's rule."""
    dependent = input_dependent(program, n_explained)
    placeholders = [n for n in program.graph.nodes if n.op == "placeholder"]
    inputs = [n for n, (kind, key) in zip(placeholders, program.placeholders) if kind == "input" and key < n_explained]
    plan = RulePlan(dependent, inputs)
    before_layers = set(inputs)  # reached from an input without crossing a weighted op
    for node in program.graph.nodes:
        if node.op != "call_function" or node not in dependent:
            continue
        kind = op_kind(node, dependent, registry)
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


def op_kind(node: Node, dependent: set[Node], registry: RuleRegistry = default_registry) -> str | None:
    """The LRP kind (:data:`~deltalift.methods.lrp.rules.KINDS`) of an input-dependent op, read
    from the op's kind in the rule registry; ``None`` for ops that carry no relevance of their
    own (indexing into tuples, shape queries, masks, assertions)."""
    op = node.target
    if not isinstance(op, torch._ops.OpOverload):
        return None
    rule = registry.find(op)
    kind = None if rule is None else rule.kind
    if kind in (None, "no_gradient", "assertion", "getitem"):
        return None
    positions = dependent_positions(node, dependent)
    if rule is not None and rule.factors is not None and set(rule.factors) <= set(positions):
        return "product"
    if kind == "weighted":
        return _weighted_kind(node, positions)
    if kind == "shift" and len(positions) >= 2:
        return "sum"
    if kind == "divide":
        return "linear" if positions == [0] else "other"
    if kind == "elementwise":
        return "activation" if len(positions) == 1 else "other"
    if kind == "batch_norm":
        return "batch_norm" if positions == [0] else "other"
    return _KIND_OF.get(kind, "other")  # type: ignore[arg-type]


#: LRP's kind of the registry's other kinds.
_KIND_OF = {
    "average": "pool",
    "sum": "sum",
    "max": "max",
    "layout": "linear",
    "linear": "linear",
    "shift": "linear",
    "multiply": "linear",
    "product": "linear",
    "select": "linear",
}


def _weighted_kind(node: Node, positions: list[int]) -> str:
    """``conv`` / ``dense`` for a weighted op fed by one activation, else ``linear``."""
    packet = getattr(node.target, "overloadpacket", None)
    if packet is aten.convolution:
        return "conv" if positions == [0] else "linear"
    if packet is aten.addmm:
        return "dense" if positions == [1] and not node.kwargs else "linear"
    return "dense"


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
