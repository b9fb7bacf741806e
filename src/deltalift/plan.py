"""How one DeepLIFT call walks a captured graph: which nonlinearities use RevealCancel, and
when each value may be dropped.

Shrikumar et al. 2017, section 3.5.3: RevealCancel applies to a nonlinearity fed by a weighted
op (dense or convolution, through an optional bias and eval-mode batch norm); every other
nonlinearity keeps Rescale.  Which nonlinearities are eligible is read from the registry
(:attr:`~deltalift.rules.registry.OpRule.reveal_cancel`), the pattern from the canonicalizer.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field
from typing import Any

import torch

from deltalift.canonical import WeightedInput, find_scale_factor, find_weighted_input
from deltalift.capture import CapturedProgram
from deltalift.rules.linear import TILING_OPS
from deltalift.rules.registry import RuleRegistry

aten = torch.ops.aten

#: The nonlinearity rules DeepLift accepts; "genomics_default" is RevealCancel where a dense
#: layer feeds the nonlinearity and Rescale elsewhere (the original package's genomics default).
RULE_CHOICES = ("rescale", "reveal_cancel", "genomics_default")


def module_path(node: torch.fx.Node) -> str:
    """The dotted path of the innermost module that ran ``node`` ("" for the model itself)."""
    stack = node.meta.get("nn_module_stack")
    if not stack:
        return ""
    path = list(stack.values())[-1][0]
    return path if isinstance(path, str) else ""


def input_dependent(program: CapturedProgram, n_explained: int) -> set[torch.fx.Node]:
    """The graph nodes whose values depend on the first ``n_explained`` user inputs."""
    dependent: set[torch.fx.Node] = set()
    placeholders = [n for n in program.graph.nodes if n.op == "placeholder"]
    for node, (kind, key) in zip(placeholders, program.placeholders):
        if kind == "input" and key < n_explained:
            dependent.add(node)
    for node in program.graph.nodes:
        if node.op == "call_function" and any(a in dependent for a in node.all_input_nodes):
            dependent.add(node)
    return dependent


def check_rule_choice(rule: str, overrides: dict[str, str]) -> None:
    if rule not in RULE_CHOICES:
        raise ValueError(f"rule must be one of {RULE_CHOICES}, got {rule!r}")
    for key, value in overrides.items():
        if value not in ("rescale", "reveal_cancel"):
            raise ValueError(f"rule_overrides[{key!r}] must be 'rescale' or 'reveal_cancel', got {value!r}")


@dataclass
class Plan:
    """Which nonlinearities use RevealCancel (with the weighted op that feeds each), which
    products are normalisations (a value times a reciprocal or reciprocal square root of an
    activation: the scale split), and when each value may be dropped."""

    reveal_cancel: dict[torch.fx.Node, WeightedInput] = field(default_factory=dict)
    scale_products: dict[torch.fx.Node, int] = field(default_factory=dict)  #: product -> its scale's position
    free_after: dict[torch.fx.Node, list[torch.fx.Node]] = field(default_factory=dict)
    #: Ops given sizes that are not views or expansions: they take the input side's size on both
    #: sides (see :func:`deltalift.rules.linear._shape_query`).
    input_sizes: set[torch.fx.Node] = field(default_factory=set)
    #: Ops that read a view's or a dense layer's output without keeping a reference whose rows
    #: tile the input's: their arguments are :func:`~deltalift.rules.registry.aligned` first.
    aligned_arguments: set[torch.fx.Node] = field(default_factory=set)
    #: Convolutions whose eval-mode batch norm may be folded into them (conv -> its batch norm).
    folded_batch_norms: dict[torch.fx.Node, torch.fx.Node] = field(default_factory=dict)


def make_plan(
    program: CapturedProgram, n_explained: int, rule: str, overrides: dict[str, str], registry: RuleRegistry
) -> Plan:
    """Choose the rule of every nonlinearity fed by a dense or convolution layer, and find the
    normalising products (cached on the program per choice).

    ``overrides`` maps a graph node name or a module path (or a parent module's path) to a
    rule name and wins over ``rule``.
    """
    check_rule_choice(rule, overrides)
    plan_key = (n_explained, rule, tuple(sorted(overrides.items())), id(registry))
    if plan_key in program.plans:
        return program.plans[plan_key]  # type: ignore[no-any-return]
    plan = Plan(free_after={k: list(v) for k, v in program.free_after.items()})
    program.plans[plan_key] = plan
    plan.input_sizes, plan.aligned_arguments = _size_and_tiling_consumers(program.graph)
    dependent = input_dependent(program, n_explained)
    order = {node: i for i, node in enumerate(program.graph.nodes)}

    def is_constant(arg: Any) -> bool:
        return not (isinstance(arg, torch.fx.Node) and arg in dependent)

    def is_layout(node: torch.fx.Node) -> bool:
        return node.op == "call_function" and registry.kind(node.target) == "layout"

    plan.folded_batch_norms = _foldable_batch_norms(program.graph, registry)

    for node in program.graph.nodes:
        if node.op != "call_function":
            continue
        op_rule = registry.find(node.target)
        if op_rule is None:
            continue
        if op_rule.kind == "multiply" and len(node.args) >= 2 and not any(is_constant(a) for a in node.args[:2]):
            position = find_scale_factor(node, is_layout)
            if position is not None:
                plan.scale_products[node] = position
            continue
        if not op_rule.reveal_cancel or rule == "rescale" and not overrides:
            continue
        if not node.args or node.args[0] not in dependent or not all(is_constant(a) for a in node.args[1:]):
            continue
        weighted = find_weighted_input(node, is_constant)
        if weighted is None or _chosen_rule(node, weighted, rule, overrides) != "reveal_cancel":
            continue
        plan.reveal_cancel[node] = weighted
        _keep_until(plan, weighted, node, order)
    return plan


def _chosen_rule(node: torch.fx.Node, weighted: WeightedInput, rule: str, overrides: dict[str, str]) -> str:
    if node.name in overrides:
        return overrides[node.name]
    path = module_path(node)
    while True:
        if path in overrides:
            return overrides[path]
        if not path:
            break
        path = path.rpartition(".")[0]
    if rule == "genomics_default":
        return "reveal_cancel" if weighted.kind == "dense" else "rescale"
    return rule


def _keep_until(plan: Plan, weighted: WeightedInput, node: torch.fx.Node, order: dict[torch.fx.Node, int]) -> None:
    """Keep the weighted op's input and constants alive until ``node`` has used them."""
    for value in weighted.nodes_used():
        for freeing_node, values in plan.free_after.items():
            if value in values and order[freeing_node] < order[node]:
                values.remove(value)
                plan.free_after.setdefault(node, []).append(value)


#: Ops that take a Pair of sizes per side: views and expansions (and arithmetic on sizes).
PER_SIDE_SIZE_OPS = frozenset({aten.view.default, aten._unsafe_view.default, aten.reshape.default, aten.expand.default})
_SIZE_QUERIES = (aten.sym_size, aten.sym_numel, aten.sym_stride, aten.sym_storage_offset)
_SIZE_ARITHMETIC = (
    operator.add,
    operator.sub,
    operator.mul,
    operator.floordiv,
    operator.truediv,
    operator.mod,
    operator.neg,
    operator.pow,
)


def _size_and_tiling_consumers(graph: torch.fx.Graph) -> tuple[set[torch.fx.Node], set[torch.fx.Node]]:
    """The ops that take sizes but not per side, and the ops that read a tiling op's output
    without being one (:attr:`Plan.input_sizes`, :attr:`Plan.aligned_arguments`)."""
    sizes: set[torch.fx.Node] = set()
    input_sizes: set[torch.fx.Node] = set()
    aligned: set[torch.fx.Node] = set()
    for node in graph.nodes:
        if node.op != "call_function":
            continue
        inputs = node.all_input_nodes
        takes_sizes = any(a in sizes for a in inputs)
        if getattr(node.target, "overloadpacket", None) in _SIZE_QUERIES or (
            node.target in _SIZE_ARITHMETIC and takes_sizes
        ):
            sizes.add(node)
        elif takes_sizes and node.target not in PER_SIDE_SIZE_OPS:
            input_sizes.add(node)
        if node.target not in TILING_OPS and any(a.op == "call_function" and a.target in TILING_OPS for a in inputs):
            aligned.add(node)
    return input_sizes, aligned


def _foldable_batch_norms(graph: torch.fx.Graph, registry: RuleRegistry) -> dict[torch.fx.Node, torch.fx.Node]:
    """Convolutions followed only by an eval-mode batch norm, with parameters and statistics
    read from the model (placeholders, not computed in the graph), whose
    normalised output alone is read: the engine evaluates them as one convolution with the
    batch norm folded in (:meth:`deltalift.canonical.WeightedOp.fold_batch_norm`).  Both are
    linear, so the multipliers are the same (the Linear rule, Shrikumar et al. 2017, section
    3.5.1); the folded form skips the batch norm's pass over the activation on both sides and in
    the backward pass.  Only with the built-in rules of both ops (a rule registered for either
    is applied as it is)."""
    from deltalift.rules import default_registry

    batch_norm = aten._native_batch_norm_legit_no_training.default
    convolution = aten.convolution.default
    if registry.find(convolution) is not default_registry.find(convolution) or registry.find(
        batch_norm
    ) is not default_registry.find(batch_norm):
        return {}
    found: dict[torch.fx.Node, torch.fx.Node] = {}
    for node in graph.nodes:
        if node.op != "call_function" or node.target is not convolution or len(node.users) != 1:
            continue
        (norm,) = node.users
        if norm.target is not batch_norm or norm.args[0] is not node:
            continue
        transposed, groups = node.args[6], node.args[8]
        parameters = (*node.args[1:3], *norm.args[1:5])
        if (
            transposed
            and groups != 1
            or not all(a is None or getattr(a, "op", "") == "placeholder" for a in parameters)
        ):
            continue
        if all(user.target is operator.getitem and user.args[1] == 0 for user in norm.users):
            found[node] = norm
    return found
