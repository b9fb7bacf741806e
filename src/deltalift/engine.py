"""The engine: one walk over the captured graph evaluates reference and input together.

DESIGN.md section 2.  Every value that depends on the explained inputs is a
:class:`~deltalift.rules.Pair` ``(x, ref)``; the reference side is computed without autograd
(at batch size one when the reference is shared by the batch), the input side with autograd,
and each op's rule wires the input side so that backward returns DeepLIFT multipliers.  Values
are dropped as soon as their last consumer has run.  Ops that touch no Pair (weight transposes,
constant masks) are evaluated once, without a rule.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn
from torch.fx.node import map_arg

from deltalift.capture import CapturedProgram, state_value
from deltalift.errors import MissingRuleError, UnsupportedOperationError
from deltalift.rules.registry import Pair, RuleContext, pairs_in


def describe(node: torch.fx.Node) -> str:
    """Where a graph node comes from: module path and source line, when export recorded them."""
    parts = [f"graph node {node.name}"]
    stack = node.meta.get("nn_module_stack")
    if stack:
        path, module_type = list(stack.values())[-1]
        type_name = getattr(module_type, "__name__", str(module_type)).rsplit(".", 1)[-1]
        parts.append(f"in module '{path}' ({type_name})")
    trace = node.meta.get("stack_trace")
    if trace:
        lines = [line.strip() for line in trace.strip().splitlines() if line.strip()]
        if len(lines) >= 2:
            parts.append(f"from {lines[-2]}: {lines[-1]}")
    return ", ".join(parts)


def run_graph(
    program: CapturedProgram,
    model: nn.Module,
    user_args: Sequence[Any],
    ctx: RuleContext,
) -> Any:
    """Evaluate the captured graph; ``user_args`` holds Pairs for the explained inputs and plain
    values for additional arguments.  Returns the model's user output(s), Pairs where they
    depend on the explained inputs."""
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
            args = map_arg(node.args, env.__getitem__)
            kwargs = map_arg(node.kwargs, env.__getitem__)
            env[node] = _call(ctx, node, args, kwargs)
        elif node.op == "output":
            outputs = map_arg(node.args[0], env.__getitem__)
            result = [outputs[i] for i in program.user_output_positions]
        else:
            raise UnsupportedOperationError(f"the captured graph has a node of kind {node.op!r} ({node.name})")
        for done in program.free_after.get(node, ()):
            env.pop(done, None)
    return result


def _call(ctx: RuleContext, node: torch.fx.Node, args: Any, kwargs: Any) -> Any:
    op = node.target
    if not pairs_in((args, kwargs)):
        with torch.no_grad():
            return op(*args, **kwargs)  # type: ignore[operator]
    ctx.node_description = describe(node)
    try:
        return ctx.registry.lookup(op, ctx.node_description)(ctx, op, args, kwargs)
    except (MissingRuleError, UnsupportedOperationError):
        raise
    except RuntimeError as exc:
        raise RuntimeError(f"{op} failed while explaining {ctx.node_description}: {exc}") from exc


def pair_inputs(inputs: Sequence[torch.Tensor], references: Sequence[torch.Tensor]) -> list[Pair]:
    """The explained inputs as Pairs, the input side a fresh leaf that requires grad."""
    return [Pair(x.detach().requires_grad_(True), r.detach()) for x, r in zip(inputs, references)]
