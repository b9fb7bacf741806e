"""The rule registry: every ATen operation the engine meets maps to exactly one rule.

A *rule* is a function ``rule(ctx, op, args, kwargs)`` that evaluates ``op`` for the explained
input and for the reference at the same time.  Values that depend on the explained input travel
through the graph as :class:`Pair` ``(x, ref)``: ``x`` carries autograd for the input pass,
``ref`` is the reference activation (computed without autograd).  Everything else (parameters,
buffers, additional forward arguments) is a plain constant shared by both passes.

The rule returns the op's output as a Pair (or a tuple of Pairs for ops with several outputs)
whose ``x`` is wired so that its backward returns the DeepLIFT multiplier of the op.

An op with no rule is an error (:class:`MissingRuleError`), never a silent fallback to the
gradient.  Users add rules with :func:`register_rule`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch

from deltalift.errors import MissingRuleError


class Pair(NamedTuple):
    """A value that depends on the explained input: ``x`` for the input, ``ref`` for the reference."""

    x: Any
    ref: Any


Rule = Callable[["RuleContext", Any, tuple[Any, ...], dict[str, Any]], Any]


def is_pair(value: Any) -> bool:
    return isinstance(value, Pair)


def map_pairs(tree: Any, fn: Callable[[Pair], Any]) -> Any:
    """Replace every Pair in an op's (nested tuple, list, dict) arguments by ``fn(pair)``.

    (A plain recursion: this runs for every op of every call, where pytree is slow.)"""
    if isinstance(tree, Pair):
        return fn(tree)
    if isinstance(tree, list):  # also torch.fx's immutable_list
        return [map_pairs(v, fn) for v in tree]
    if isinstance(tree, tuple):
        return tuple(map_pairs(v, fn) for v in tree)
    if isinstance(tree, dict):
        return {k: map_pairs(v, fn) for k, v in tree.items()}
    return tree


def side(tree: Any, which: str) -> Any:
    """Replace every Pair in a (nested) argument structure by one of its sides."""
    return map_pairs(tree, (lambda p: p.x) if which == "x" else (lambda p: p.ref))


def pairs_in(tree: Any) -> list[Pair]:
    """All Pairs inside a (nested) argument structure, in order."""
    found: list[Pair] = []
    map_pairs(tree, found.append)
    return found


def describe(node: Any) -> str:
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


def zip_output(x_out: Any, ref_out: Any) -> Any:
    """Pair up an op's outputs for the input and the reference (tuples element-wise)."""
    if isinstance(x_out, (tuple, list)):
        return tuple(zip_output(a, b) for a, b in zip(x_out, ref_out))
    return Pair(x_out, ref_out)


def is_float_tensor(value: Any) -> bool:
    return isinstance(value, torch.Tensor) and value.is_floating_point()


class RuleRegistry:
    """Maps an ATen op (an ``OpOverloadPacket`` such as ``torch.ops.aten.relu`` or a specific
    ``OpOverload`` such as ``torch.ops.aten.max.dim``, or a Python callable such as
    ``operator.getitem``) to a rule.  Specific overloads win over their packet."""

    def __init__(self) -> None:
        self._rules: dict[Any, Rule] = {}

    def register(self, op: Any, rule: Rule) -> None:
        self._rules[op] = rule

    def copy(self) -> RuleRegistry:
        new = RuleRegistry()
        new._rules = dict(self._rules)
        return new

    def find(self, op: Any) -> Rule | None:
        if op in self._rules:
            return self._rules[op]
        packet = getattr(op, "overloadpacket", None)
        if packet is not None and packet in self._rules:
            return self._rules[packet]
        return None

    def lookup(self, op: Any, where: str = "") -> Rule:
        rule = self.find(op)
        if rule is None:
            raise MissingRuleError(op, where)
        return rule

    def __contains__(self, op: Any) -> bool:
        return self.find(op) is not None


default_registry = RuleRegistry()


@dataclass
class RuleContext:
    """What a rule may read: options of the call and a way to evaluate other ops through rules.

    Attributes
    ----------
    eps:
        Below this absolute difference-from-reference a nonlinearity's multiplier falls back
        to the derivative at the reference (the original DeepLIFT uses 1e-7).
    maxpool_mode:
        ``"summation"`` (default, keeps summation-to-delta) or ``"gradient"``.
    input_groups, batch_rows:
        Set by DeepLIFT-SHAP: the ``batch_rows`` examples are ``batch_rows / input_groups``
        inputs, each repeated ``input_groups`` times in a row (one per reference), so every
        input-side activation is too, and heavy linear ops may evaluate one row per group.
    call:
        ``call(op, *args, **kwargs)`` evaluates ``op`` through the registry; composite rules
        (softmax, layer norm, ...) are written with it.
    """

    eps: float = 1e-7
    maxpool_mode: str = "summation"
    input_groups: int = 1
    batch_rows: int = 0
    registry: RuleRegistry = field(default_factory=lambda: default_registry)
    node: Any = None  #: the graph node being evaluated, for error messages

    @property
    def node_description(self) -> str:
        return describe(self.node) if self.node is not None else ""

    def call(self, op: Any, *args: Any, **kwargs: Any) -> Any:
        if not pairs_in((args, kwargs)):
            with torch.no_grad():
                return op(*args, **kwargs)
        return self.registry.lookup(op, self.node_description)(self, op, args, kwargs)


def register_rule(op: Any, rule: Rule, registry: RuleRegistry | None = None) -> None:
    """Register ``rule`` for ``op`` (e.g. ``register_rule(torch.ops.aten.my_op, rules.rescale)``).

    Built-in rules to choose from: :func:`deltalift.rules.linear` (the op is affine in its
    input-dependent arguments), :func:`deltalift.rules.rescale` (an element-wise function of
    one input), :func:`deltalift.rules.bilinear` (a product of two activations).
    """
    (registry or default_registry).register(op, rule)
