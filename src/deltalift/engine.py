"""The engine: one walk over the captured graph evaluates reference and input together.

DESIGN.md section 2.  Every value that depends on the explained inputs is a
:class:`~deltalift.rules.Pair` ``(x, ref)``; the reference side is computed without autograd
(at batch size one when the reference is shared by the batch), the input side with autograd,
and each op's rule wires the input side so that backward returns DeepLIFT multipliers.  Values
are dropped as soon as their last consumer has run.  Ops that touch no Pair (weight transposes,
constant masks) are evaluated once, without a rule.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.fx.node import map_arg

from deltalift.capture import CapturedProgram, state_value
from deltalift.errors import MissingRuleError, UnsupportedOperationError
from deltalift.rules.registry import Pair, RuleContext, pairs_in
from deltalift.rules.rescale import rescale
from deltalift.rules.reveal_cancel import WeightedInput, find_weighted_input, linear_map, reveal_cancel

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


@dataclass
class Plan:
    """How one call walks a captured graph: which nonlinearities use RevealCancel, and when
    each value may be dropped."""

    reveal_cancel: dict[torch.fx.Node, WeightedInput] = field(default_factory=dict)
    free_after: dict[torch.fx.Node, list[torch.fx.Node]] = field(default_factory=dict)


def make_plan(
    program: CapturedProgram, n_explained: int, rule: str, overrides: dict[str, str], ctx: RuleContext
) -> Plan:
    """Choose the rule of every nonlinearity fed by a dense or convolution layer.

    ``overrides`` maps a graph node name or a module path (or a parent module's path) to a
    rule name and wins over ``rule``.
    """
    if rule not in RULE_CHOICES:
        raise ValueError(f"rule must be one of {RULE_CHOICES}, got {rule!r}")
    for key, value in overrides.items():
        if value not in ("rescale", "reveal_cancel"):
            raise ValueError(f"rule_overrides[{key!r}] must be 'rescale' or 'reveal_cancel', got {value!r}")
    if rule == "rescale" and not overrides:
        return Plan(free_after=program.free_after)
    plan_key = (n_explained, rule, tuple(sorted(overrides.items())), id(ctx.registry))
    if plan_key in program.plans:
        return program.plans[plan_key]
    plan = Plan(free_after={k: list(v) for k, v in program.free_after.items()})
    program.plans[plan_key] = plan
    dependent = input_dependent(program, n_explained)
    order = {node: i for i, node in enumerate(program.graph.nodes)}

    def is_constant(arg: Any) -> bool:
        return not (isinstance(arg, torch.fx.Node) and arg in dependent)

    for node in program.graph.nodes:
        if node.op != "call_function" or ctx.registry.find(node.target) is not rescale:
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
    """Keep the linear op's input and constants alive until ``node`` has used them."""
    keep = [weighted.source] + [a for a in weighted.linear.args if isinstance(a, torch.fx.Node)]
    if weighted.batch_norm is not None:
        keep += [a for a in weighted.batch_norm.args if isinstance(a, torch.fx.Node)]
    for value in keep:
        for freeing_node, values in plan.free_after.items():
            if value in values and order[freeing_node] < order[node]:
                values.remove(value)
                plan.free_after.setdefault(node, []).append(value)


def input_dependent(program: CapturedProgram, n_explained: int) -> set[torch.fx.Node]:
    dependent: set[torch.fx.Node] = set()
    placeholders = [n for n in program.graph.nodes if n.op == "placeholder"]
    for node, (kind, key) in zip(placeholders, program.placeholders):
        if kind == "input" and key < n_explained:
            dependent.add(node)
    for node in program.graph.nodes:
        if node.op == "call_function" and any(a in dependent for a in node.all_input_nodes):
            dependent.add(node)
    return dependent


#: How a walk evaluates one ``call_function`` node: ``(node, args, kwargs, env) -> value``.
Evaluate = Callable[[torch.fx.Node, Any, Any, dict[torch.fx.Node, Any]], Any]


def walk_graph(
    program: CapturedProgram,
    model: nn.Module,
    user_args: Sequence[Any],
    evaluate: Evaluate,
    free_after: dict[torch.fx.Node, list[torch.fx.Node]] | None = None,
    tap: tuple[torch.fx.Node, Callable[[Any], Any]] | None = None,
    until: torch.fx.Node | None = None,
) -> Any:
    """Walk the captured graph in order, feeding placeholders (live parameters and buffers,
    constants, ``user_args``) and evaluating each op with ``evaluate``; values are dropped after
    their last use.  Returns the model's user outputs.

    ``tap = (node, fn)`` replaces that node's value by ``fn(value)`` (e.g. a fresh leaf, to read
    gradients at a layer); ``until`` stops the walk at that node and returns its value.
    """
    free_after = program.free_after if free_after is None else free_after
    env: dict[torch.fx.Node, Any] = {}
    placeholder_index = 0
    result: Any = None
    for node in program.graph.nodes:
        if node.op == "placeholder":
            kind, key = program.placeholders[placeholder_index]
            placeholder_index += 1
            if kind == "state":
                env[node] = state_value(model, key).detach()
            elif kind == "constant":
                env[node] = program.constants[key]
            else:
                env[node] = user_args[key]
        elif node.op == "call_function":
            env[node] = evaluate(node, map_arg(node.args, env.__getitem__), map_arg(node.kwargs, env.__getitem__), env)
        elif node.op == "output":
            outputs = map_arg(node.args[0], env.__getitem__)
            result = [outputs[i] for i in program.user_output_positions]
        else:
            raise UnsupportedOperationError(f"the captured graph has a node of kind {node.op!r} ({node.name})")
        if tap is not None and node is tap[0]:
            env[node] = tap[1](env[node])
        if until is not None and node is until:
            return env[node]
        for done in free_after.get(node, ()):
            env.pop(done, None)
    return result


def run_graph(
    program: CapturedProgram,
    model: nn.Module,
    user_args: Sequence[Any],
    ctx: RuleContext,
    plan: Plan | None = None,
    tap: tuple[torch.fx.Node, Callable[[Any], Any]] | None = None,
    until: torch.fx.Node | None = None,
) -> Any:
    """DeepLIFT's walk: ``user_args`` holds Pairs for the explained inputs and plain values for
    additional arguments; each op goes through its rule (RevealCancel where ``plan`` says).
    Returns the model's user output(s), Pairs where they depend on the explained inputs."""
    plan = plan or Plan(free_after=program.free_after)

    def evaluate(node: torch.fx.Node, args: Any, kwargs: Any, env: dict[torch.fx.Node, Any]) -> Any:
        if node in plan.reveal_cancel and isinstance(args[0], Pair):
            return _reveal_cancel(ctx, node, plan.reveal_cancel[node], env, args, kwargs)
        return _call(ctx, node, args, kwargs)

    return walk_graph(program, model, user_args, evaluate, plan.free_after, tap, until)


#: A replacement for an op in a plain walk: ``(op, args, kwargs) -> value``.
Override = Callable[[Any, Any, Any], Any]


def run_plain(
    program: CapturedProgram,
    model: nn.Module,
    user_args: Sequence[Any],
    overrides: dict[Any, Override] | None = None,
    tap: tuple[torch.fx.Node, Callable[[Any], Any]] | None = None,
    until: torch.fx.Node | None = None,
) -> Any:
    """The ordinary forward pass (with autograd) over the captured graph, where ``overrides``
    (keyed by op overload or packet, e.g. ``torch.ops.aten.relu``) replace ops wherever they
    occur, functional or not: the base of Guided Backprop, DeconvNet and LRP."""
    overrides = overrides or {}

    def evaluate(node: torch.fx.Node, args: Any, kwargs: Any, env: dict[torch.fx.Node, Any]) -> Any:
        op = node.target
        override = overrides.get(op) or overrides.get(getattr(op, "overloadpacket", None))
        return override(op, args, kwargs) if override is not None else op(*args, **kwargs)  # type: ignore[operator]

    return walk_graph(program, model, user_args, evaluate, tap=tap, until=until)


def _call(ctx: RuleContext, node: torch.fx.Node, args: Any, kwargs: Any) -> Any:
    op = node.target
    if not pairs_in((args, kwargs)):
        with torch.no_grad():
            return op(*args, **kwargs)  # type: ignore[operator]
    ctx.node = node
    try:
        return ctx.registry.lookup(op, ctx.node_description)(ctx, op, args, kwargs)
    except (MissingRuleError, UnsupportedOperationError):
        raise
    except RuntimeError as exc:
        raise RuntimeError(f"{op} failed while explaining {ctx.node_description}: {exc}") from exc


def _reveal_cancel(
    ctx: RuleContext,
    node: torch.fx.Node,
    weighted: WeightedInput,
    env: dict[torch.fx.Node, Any],
    args: Any,
    kwargs: Any,
) -> Pair:
    op = node.target
    apply, weight = linear_map(weighted, env.__getitem__)

    def f(t: torch.Tensor) -> torch.Tensor:
        return op(t, *args[1:], **kwargs)  # type: ignore[operator]

    return reveal_cancel(env[weighted.source], args[0], f, apply, weight, ctx.eps)


def pair_inputs(inputs: Sequence[torch.Tensor], references: Sequence[torch.Tensor]) -> list[Pair]:
    """The explained inputs as Pairs, the input side a fresh leaf that requires grad."""
    return [Pair(x.detach().requires_grad_(True), r.detach()) for x, r in zip(inputs, references)]
