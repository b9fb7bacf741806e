"""The rule registry: every ATen operation the engine meets maps to exactly one rule.

A *rule* is an :class:`OpRule`: a function ``apply(ctx, op, args, kwargs)`` that evaluates ``op``
for the explained input and for the reference at the same time, and the *kind* of operation it
is for (see :data:`KINDS`).  The kind is recorded once, here, and read by every method: the
engine (which ops RevealCancel may replace, which weighted ops its batching may share), LRP
(which rule of a composite an op gets) and the graph canonicalizer.

Values that depend on the explained input travel through the graph as :class:`Pair`
``(x, ref)``: ``x`` carries autograd for the input pass, ``ref`` is the reference activation
(computed without autograd).  Everything else (parameters, buffers, additional forward
arguments) is a plain constant shared by both passes.  A rule returns the op's output as a Pair
(or a tuple of Pairs for ops with several outputs) whose ``x`` is wired so that its backward
returns the DeepLIFT multiplier of the op (:func:`deltalift.rules.multipliers.with_multipliers`).

An op with no rule is an error (:class:`~deltalift.errors.MissingRuleError`), never a silent
fallback to the gradient.  Users add rules with :func:`register_rule`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch

from deltalift.errors import MissingRuleError

#: The kinds of operation, each with the rule family it belongs to.
KINDS = {
    "layout": "Linear: moves values without arithmetic (views, reshapes, slicing, padding, copies)",
    "linear": "Linear: any other affine op (concatenation, indexing, cumulative sums, interpolation, ...)",
    "shift": "Linear: element-wise addition, subtraction and negation",
    "sum": "Linear: sums over dimensions",
    "average": "Linear: averages (mean, average pooling)",
    "batch_norm": "Linear: batch norm in eval mode",
    "weighted": "Linear in the activation, product when the weight is an activation too (dense, convolution)",
    "multiply": "Product: element-wise multiplication (Linear with one input-dependent factor)",
    "product": "Product: matrix products of two activations (Linear with one)",
    "divide": "Product: division, as multiplication by a Rescaled reciprocal",
    "elementwise": "Rescale: an element-wise nonlinearity (Shapley split with two input-dependent arguments)",
    "max": "Max routing: max pooling and max/min reductions",
    "composite": "Composed of the other rules: softmax, logsumexp, norms, variance",
    "select": "where(cond, a, b): Linear where the condition is the same for input and reference, else Rescale",
    "no_gradient": "No multiplier: comparisons, masks, indices, shape queries",
    "assertion": "Skipped: run-time assertions of the captured graph",
    "getitem": "Picks one output of an op that returns several",
    "custom": "A rule registered by the user",
}


class Pair(NamedTuple):
    """A value that depends on the explained input: ``x`` for the input, ``ref`` for the reference."""

    x: Any
    ref: Any


RuleFunction = Callable[["RuleContext", Any, tuple[Any, ...], dict[str, Any]], Any]


@dataclass(frozen=True)
class OpRule:
    """A DeepLIFT rule and the kind of operation it is for.

    Attributes
    ----------
    apply:
        ``apply(ctx, op, args, kwargs)``: the op's output Pair(s), wired for multipliers.
    kind:
        One of :data:`KINDS`.
    factors:
        For products and weighted ops: the positions of the two factors in ``args`` (for a
        weighted op, the activation first, then the weight).
    reveal_cancel:
        Whether RevealCancel may replace this rule where a weighted op feeds the op (an
        element-wise nonlinearity of one argument; Shrikumar et al. 2017, section 3.5.3).
    """

    apply: RuleFunction
    kind: str
    factors: tuple[int, int] | None = None
    reveal_cancel: bool = False

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown kind {self.kind!r}; one of {', '.join(KINDS)}")

    def __call__(self, ctx: RuleContext, op: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        return self.apply(ctx, op, args, kwargs)


def as_rule(rule: OpRule | RuleFunction, kind: str | None = None) -> OpRule:
    """An :class:`OpRule` from a rule or a plain rule function (of kind ``"custom"`` unless given)."""
    if isinstance(rule, OpRule):
        return rule if kind is None or kind == rule.kind else OpRule(rule.apply, kind, rule.factors, rule.reveal_cancel)
    if not callable(rule):
        raise TypeError(f"a rule must be an OpRule or a function (ctx, op, args, kwargs), got {type(rule).__name__}")
    return OpRule(rule, kind or "custom")


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


def is_size_pair(value: Any) -> bool:
    """A Pair of sizes (the input's and a reference's at batch size one), not of tensors."""
    return isinstance(value, Pair) and not isinstance(value.x, torch.Tensor)


def tiles(x: torch.Tensor, ref: torch.Tensor) -> int:
    """``n >= 2`` when ``x``'s rows are ``ref``'s rows repeated ``n`` times along dimension 0
    (``ref`` of shape ``(r, ...)`` for ``x`` of shape ``(n r, ...)``), else 0.

    This is how a reference shared by the batch stays at batch size one: at shape ``(1, ...)``
    it broadcasts; after a view that folds the batch into the rows (``F.linear`` on a 3-D
    activation views ``(n, L, E)`` as ``(n L, E)``) its ``L`` rows tile the input's ``n L``."""
    if ref.ndim != x.ndim or ref.ndim == 0 or ref.shape[1:] != x.shape[1:]:
        return 0
    rows, ref_rows = x.shape[0], ref.shape[0]
    return rows // ref_rows if 0 < ref_rows < rows and rows % ref_rows == 0 else 0


def aligned(pair: Pair) -> Pair:
    """``pair`` with a reference that broadcasts to its input side: a reference whose rows tile
    the input's (:func:`tiles`, more than one row) is repeated; any other is returned as is."""
    x, ref = pair
    if not (isinstance(x, torch.Tensor) and isinstance(ref, torch.Tensor)) or ref.ndim == 0:
        return pair
    if ref.shape[0] in (1, x.shape[0] if x.ndim else 1):
        return pair
    n = tiles(x, ref)
    return Pair(x, ref.repeat(n, *[1] * (ref.ndim - 1))) if n else pair


def align_pairs(tree: Any) -> Any:
    """Every Pair in an op's arguments :func:`aligned`."""
    return map_pairs(tree, aligned)


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


def same_on_both_sides(pair: Pair) -> bool:
    """Whether the input side equals the reference side (broadcast to it)."""
    x, ref = pair.x, pair.ref
    try:
        return bool(torch.equal(x, ref.expand_as(x)))
    except RuntimeError:
        return False


def zip_output(x_out: Any, ref_out: Any) -> Any:
    """Pair up an op's outputs for the input and the reference (tuples element-wise)."""
    if isinstance(x_out, (tuple, list)):
        return tuple(zip_output(a, b) for a, b in zip(x_out, ref_out))
    return Pair(x_out, ref_out)


def repeats_one_row(value: Any) -> bool:
    """Whether ``value`` is a tensor that repeats one row along the batch by a stride of 0 (as
    DeepLIFT-SHAP's input side with one example a call does from a convolution on)."""
    return isinstance(value, torch.Tensor) and value.ndim > 0 and value.shape[0] > 1 and value.stride(0) == 0


def is_float_tensor(value: Any) -> bool:
    return isinstance(value, torch.Tensor) and value.is_floating_point()


class RuleRegistry:
    """Maps an ATen op (an ``OpOverloadPacket`` such as ``torch.ops.aten.relu`` or a specific
    ``OpOverload`` such as ``torch.ops.aten.max.dim``, or a Python callable such as
    ``operator.getitem``) to its :class:`OpRule`.  Specific overloads win over their packet."""

    def __init__(self) -> None:
        self._rules: dict[Any, OpRule] = {}

    def register(self, op: Any, rule: OpRule | RuleFunction, kind: str | None = None) -> None:
        """Give ``op`` the rule ``rule``; ``kind`` overrides the rule's own kind."""
        self._rules[op] = as_rule(rule, kind)

    def copy(self) -> RuleRegistry:
        new = RuleRegistry()
        new._rules = dict(self._rules)
        return new

    def find(self, op: Any) -> OpRule | None:
        if op in self._rules:
            return self._rules[op]
        packet = getattr(op, "overloadpacket", None)
        if packet is not None and packet in self._rules:
            return self._rules[packet]
        return None

    def lookup(self, op: Any, where: str = "") -> OpRule:
        rule = self.find(op)
        if rule is None:
            raise MissingRuleError(op, where)
        return rule

    def kind(self, op: Any) -> str | None:
        """The kind of ``op`` (:data:`KINDS`), ``None`` for an op with no rule."""
        rule = self.find(op)
        return None if rule is None else rule.kind

    def ops(self, kind: str) -> list[Any]:
        """The ops registered with ``kind``."""
        return [op for op, rule in self._rules.items() if rule.kind == kind]

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
    registry:
        The rules to use.
    node:
        The graph node being evaluated, for error messages.
    """

    eps: float = 1e-7
    maxpool_mode: str = "summation"
    registry: RuleRegistry = field(default_factory=lambda: default_registry)
    node: Any = None

    @property
    def node_description(self) -> str:
        return describe(self.node) if self.node is not None else ""

    @property
    def at(self) -> str:
        """`` (at <node description>)`` for error messages, or ``""``."""
        return f" (at {self.node_description})" if self.node is not None else ""

    def call(self, op: Any, *args: Any, **kwargs: Any) -> Any:
        """Evaluate ``op`` through its rule (composite rules are written with this); ops that
        touch no Pair are evaluated once, without autograd.  The one dispatcher of rules."""
        if not pairs_in((args, kwargs)):
            with torch.no_grad():
                return op(*args, **kwargs)
        rule = self.registry.find(op) or self.registry.lookup(op, self.node_description)  # described on a miss
        return rule(self, op, args, kwargs)


def register_rule(
    op: Any, rule: OpRule | RuleFunction, registry: RuleRegistry | None = None, kind: str | None = None
) -> None:
    """Register ``rule`` for ``op``, e.g. ``register_rule(torch.ops.aten.i0, rules.rescale)``.

    Built-in rules to choose from (each an :class:`OpRule`): :data:`deltalift.rules.linear`
    (the op is affine in its input-dependent arguments), :data:`deltalift.rules.rescale` (an
    element-wise function of one input, or of two with the Shapley split),
    :data:`deltalift.rules.bilinear` (a product of its first two arguments; ``rules.bilinear_in(i,
    j)`` for other positions).  A plain function ``rule(ctx, op, args, kwargs)`` is registered
    as kind ``"custom"`` (or ``kind``); see ``docs/adding-a-rule.md``.
    """
    (registry or default_registry).register(op, rule, kind)
