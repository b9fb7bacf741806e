"""The engine: one walk over the captured graph, and DeepLIFT's orchestration around it.

Every value that depends on the explained inputs is a :class:`~deltalift.rules.Pair`
``(x, ref)``; the reference side is computed without autograd (at batch size one when the
reference is shared by the batch), the input side with autograd, and each op's rule wires the
input side so that backward returns DeepLIFT multipliers (Shrikumar et al. 2017, section 3.2:
multipliers compose by the chain rule, as gradients do).  Values are dropped as soon as their
last consumer has run.  Ops that touch no Pair (weight transposes, constant masks) are
evaluated once, without a rule.

:func:`deeplift` is the one entry point of the method: it pairs inputs with references, builds
the rule context and plan, walks the graph, differentiates the target with respect to the
inputs or a tapped layer, forms contributions ``C = m * (x - x0)`` and checks
summation-to-delta.  The method classes (``DeepLift``, ``LayerDeepLift``, ``NeuronDeepLift``,
``DeepLiftShap``) are thin interfaces over it.  :func:`run_plain` is the same walk with plain
(optionally overridden) ops, for the gradient-based methods and LRP.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import torch
from torch import nn
from torch.fx.node import map_arg

from deltalift.batching import BatchLayout, evaluate_weighted
from deltalift.canonical import batch_norm_folding_pays, with_batch_norm_folded
from deltalift.capture import CapturedProgram, capture, layer_in, live_state, with_target
from deltalift.convergence import check_summation
from deltalift.errors import MissingRuleError, UnsupportedOperationError
from deltalift.fast_path import check_backend, default_backend
from deltalift.fast_path import run as run_recorded
from deltalift.inputs import (
    as_tuple,
    check_baselines,
    check_grad_kwargs,
    check_inputs,
    check_model,
    row_major,
    select_target,
)
from deltalift.layers import LayerType, LayerUnused, capture_with_layers, eager_layer_values
from deltalift.plan import Plan, check_rule_choice, make_plan
from deltalift.rules.linear import evaluate_both
from deltalift.rules.product import scale_product
from deltalift.rules.registry import (
    Pair,
    RuleContext,
    RuleRegistry,
    align_pairs,
    aligned,
    default_registry,
    is_size_pair,
    map_pairs,
    side,
)
from deltalift.rules.reveal_cancel import reveal_cancel

Tensor = torch.Tensor
aten = torch.ops.aten

#: How a walk evaluates one ``call_function`` node: ``(node, args, kwargs, env) -> value``.
Evaluate = Callable[[torch.fx.Node, Any, Any, dict[torch.fx.Node, Any]], Any]
#: A replacement for an op in a plain walk: ``(op, args, kwargs) -> value``.
Override = Callable[[Any, Any, Any], Any]
#: A layer tap: ``(node, fn)`` replaces that node's value by ``fn(value)``.
Tap = tuple[torch.fx.Node, Callable[[Any], Any]]
#: One tap, or several at different nodes (a plain walk over a list of layers).
Taps = Tap | Sequence[Tap]


def _tap_table(tap: Taps | None) -> dict[torch.fx.Node, Callable[[Any], Any]]:
    if tap is None:
        return {}
    if len(tap) == 2 and isinstance(tap[0], torch.fx.Node):
        return {tap[0]: tap[1]}  # type: ignore[dict-item]
    return dict(tap)  # type: ignore[arg-type]


def walk_graph(
    program: CapturedProgram,
    model: nn.Module,
    user_args: Sequence[Any],
    evaluate: Evaluate,
    free_after: dict[torch.fx.Node, list[torch.fx.Node]] | None = None,
    tap: Taps | None = None,
    until: torch.fx.Node | None = None,
    state: Mapping[str, Tensor] | None = None,
) -> Any:
    """Walk the captured graph in order, feeding placeholders (live parameters and buffers,
    constants, ``user_args``) and evaluating each op with ``evaluate``; values are dropped after
    their last use.  Returns the model's user outputs.

    ``tap = (node, fn)`` replaces that node's value by ``fn(value)`` (e.g. a fresh leaf, to read
    gradients at a layer; a sequence of such pairs taps several nodes); ``until`` stops the walk at
    that node and returns its value.  ``state``: the parameters and buffers by name, where the
    caller has read them already (the fast path passes them as inputs of its recorded program).
    """
    free_after = program.free_after if free_after is None else free_after
    taps = _tap_table(tap)
    if state is None:
        state = live_state(model, [key for kind, key in program.placeholders if kind == "state"])
    env: dict[torch.fx.Node, Any] = {}
    placeholder_index = 0
    result: Any = None
    for node in program.graph.nodes:
        if node.op == "placeholder":
            kind, key = program.placeholders[placeholder_index]
            placeholder_index += 1
            if kind == "state":
                env[node] = state[key]
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
        if node in taps:
            env[node] = taps[node](env[node])
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
    layout: BatchLayout | None = None,
    tap: Tap | None = None,
    until: torch.fx.Node | None = None,
    state: Mapping[str, Tensor] | None = None,
) -> Any:
    """DeepLIFT's walk: ``user_args`` holds Pairs for the explained inputs and plain values for
    additional arguments; each op goes through its rule (RevealCancel and the scale split of
    normalising products where ``plan`` says; weighted ops batched as ``layout`` allows).  Returns the model's user output(s), Pairs where
    they depend on the explained inputs."""
    plan = plan or Plan(free_after=program.free_after)
    layout = layout or BatchLayout(rows=0)
    folded: set[torch.fx.Node] = set()  # the batch norms folded into their convolution in this walk

    def evaluate(node: torch.fx.Node, args: Any, kwargs: Any, env: dict[torch.fx.Node, Any]) -> Any:
        ctx.node = node
        op = _VIEWS_AS_RESHAPE.get(node.target, node.target)
        if node in plan.input_sizes:
            args, kwargs = _input_side_sizes(args), _input_side_sizes(kwargs)
        if node in plan.aligned_arguments:
            args, kwargs = align_pairs(args), align_pairs(kwargs)
        try:
            weighted = plan.reveal_cancel.get(node)
            if weighted is not None and isinstance(args[0], Pair) and (tap is None or tap[0] not in weighted.path):

                def f(t: Tensor) -> Tensor:
                    return op(t, *args[1:], **kwargs)  # type: ignore[operator]

                source = aligned(env[weighted.source])
                return reveal_cancel(source, args[0], f, weighted.op(env.__getitem__), ctx.eps)
            norm = plan.folded_batch_norms.get(node)
            if (
                norm is not None
                and not _reads(node, norm, tap, until)
                and batch_norm_folding_pays(side(args[0], "x"), args)
            ):
                statistics = [env[a] if isinstance(a, torch.fx.Node) else a for a in norm.args[1:]]
                args = with_batch_norm_folded(args, statistics)
                folded.add(norm)
            elif node in folded:
                return (args[0], None, None)  # the convolution's value is already normalised
            if node in plan.scale_products:
                scale = plan.scale_products[node]
                return scale_product(args[1 - scale], args[scale])
            rule = ctx.registry.find(op)
            if rule is not None and rule.kind == "weighted" and rule.factors is not None:
                batched = evaluate_weighted(op, args, kwargs, rule.factors, layout)
                if batched is not None:
                    return batched
            return ctx.call(op, *args, **kwargs)
        except (MissingRuleError, UnsupportedOperationError):
            raise
        except RuntimeError as exc:
            raise RuntimeError(f"{node.target} failed while explaining {ctx.node_description}: {exc}") from exc

    return walk_graph(program, model, user_args, evaluate, plan.free_after, tap, until, state)


#: The captured views the DeepLIFT walk evaluates as ``reshape`` (the same values; a copy only
#: where the strides do not allow a view, as a length-major output of a 1-D convolution,
#: :mod:`deltalift.conv_layout`, may not).
_VIEWS_AS_RESHAPE: dict[Any, Any] = {
    aten.view.default: aten.reshape.default,
    aten._unsafe_view.default: aten.reshape.default,
}


def _reads(convolution: Any, norm: torch.fx.Node, tap: Tap | None, until: torch.fx.Node | None) -> bool:
    """Whether a layer tap or the end of the walk is at a convolution or its batch norm (then
    neither is folded: the convolution's own output is read)."""
    return (tap is not None and tap[0] in (convolution, norm)) or until in (convolution, norm)


def _input_side_sizes(tree: Any) -> Any:
    """Every Pair of sizes in an op's arguments replaced by the input side's size."""
    return map_pairs(tree, lambda p: p.x if is_size_pair(p) else p)


def run_plain(
    program: CapturedProgram,
    model: nn.Module,
    user_args: Sequence[Any],
    overrides: dict[Any, Override] | None = None,
    tap: Taps | None = None,
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


# --------------------------------------------------------------------------------------------------
# DeepLIFT


@dataclass(frozen=True)
class DeepLiftOptions:
    """The options of a DeepLIFT call (see :class:`deltalift.DeepLift` for their meaning)."""

    eps: float = 1e-7
    maxpool_mode: str = "summation"
    registry: RuleRegistry = field(default_factory=lambda: default_registry)
    rule: str = "rescale"
    rule_overrides: Mapping[str, str] = field(default_factory=dict)
    softmax_adjustment: bool = False
    strict: bool = False
    tolerance: float | None = None
    #: How the walk runs (:data:`deltalift.fast_path.BACKENDS`): ``"interpreter"`` (the rules
    #: called op by op), ``"traced"`` (the walk recorded once as one ATen program and replayed),
    #: ``"compiled"`` (that program through ``torch.compile``), or ``"auto"`` (per device,
    #: :func:`deltalift.fast_path.default_backend`).  All give the interpreter's values.
    backend: str = "auto"
    #: Reuse the reference side's values (the model's values at the references and what the
    #: rules compute from them alone) from one replayed call to the next while the references
    #: and the model's parameters, buffers and constants stay the same (``"traced"`` programs;
    #: :class:`deltalift.fast_path.ReferenceSide` says how a change is seen, ``param.data``
    #: writes included).  ``None``: where every reference is shared by the batch (batch size
    #: one), so that what is kept is one example's; ``True``: also per-example references.
    reuse_reference: bool | None = None

    def __post_init__(self) -> None:
        check_backend(self.backend)
        if self.eps < 0:
            raise ValueError(f"eps must be >= 0, got {self.eps}")
        if self.maxpool_mode not in ("summation", "gradient"):
            raise ValueError(f"maxpool_mode must be 'summation' or 'gradient', got {self.maxpool_mode!r}")
        check_rule_choice(self.rule, dict(self.rule_overrides))


@dataclass
class DeepLiftResult:
    """One DeepLIFT call: what was attributed to (``points``: the explained inputs, or the
    layer's activations, as Pairs), their multipliers and contributions, the per-example
    convergence delta ``sum_i C_i - (t(x) - t(x0))``, and whether the attributions are returned
    as a tuple (``given_tuple``: the inputs were given as one, or, at a layer, it has several
    activation tensors, as Captum's layer methods return them)."""

    points: list[Pair]
    multipliers: tuple[Tensor, ...]
    contributions: tuple[Tensor, ...]
    delta: Tensor
    given_tuple: bool

    def attributions(
        self, multiply_by_inputs: bool = True, custom: Callable[..., Any] | None = None
    ) -> tuple[Tensor, ...]:
        """Contributions (or multipliers), or what Captum's ``custom_attribution_func`` makes of
        ``(multipliers,)``, ``(multipliers, inputs)`` or ``(multipliers, inputs, baselines)``."""
        if custom is None:
            return self.contributions if multiply_by_inputs else self.multipliers
        inputs = tuple(p.x.detach() for p in self.points)
        references = tuple(p.ref.expand_as(p.x) for p in self.points)
        arity = len(inspect.signature(custom).parameters)
        given = {1: (self.multipliers,), 2: (self.multipliers, inputs), 3: (self.multipliers, inputs, references)}
        if arity not in given:
            raise TypeError(f"custom_attribution_func must take 1, 2 or 3 arguments, it takes {arity}")
        result = as_tuple(custom(*given[arity]))
        if len(result) != len(self.multipliers) or any(r.shape != m.shape for r, m in zip(result, self.multipliers)):
            raise ValueError("custom_attribution_func must return one tensor per input, shaped like it")
        return tuple(result)


def deeplift(
    model: nn.Module,
    inputs: Any,
    baselines: Any,
    target: Any,
    additional_forward_args: Any,
    options: DeepLiftOptions,
    *,
    layer: LayerType | None = None,
    layer_input: bool = False,
    neuron: Callable[[Tensor], Tensor] | None = None,
    groups: int = 1,
    grad_kwargs: Mapping[str, Any] | None = None,
) -> DeepLiftResult:
    """DeepLIFT for ``target`` of ``model(*inputs, *additional_forward_args)`` against ``baselines``.

    Without ``layer``: contributions of the inputs.  With ``layer`` (a module, module path or
    graph node name; its input with ``layer_input``): contributions of the layer's activation
    (one tensor per activation of a module that returns, or takes, several), or with ``neuron``
    (activation -> one value per example), the inputs' contributions to that neuron.
    ``groups``: the inputs are repeated that many times in a row, once per reference
    (DeepLIFT-SHAP's pairs), which lets weighted ops run once per group.  ``grad_kwargs``:
    Captum's options of the gradient call (:func:`deltalift.inputs.check_grad_kwargs`).

    At a layer, integer inputs (token ids) are accepted: they travel as Pairs without autograd,
    and the ops that depend on them alone (the embedding lookup, masks computed from the ids)
    are evaluated for the input and the reference without a rule, since nothing is
    differentiated through them; the multipliers are taken at the layer's activation.
    """
    at_layer = layer is not None and neuron is None
    tensors, given_tuple = check_inputs(inputs, allow_integer=at_layer)
    grad_options = check_grad_kwargs(grad_kwargs)
    extra = as_tuple(additional_forward_args)
    module = with_target(model, target)
    check_model(module, tensors)
    references, shared = check_baselines(baselines, tensors)
    batch = tensors[0].shape[0]
    nodes: list[torch.fx.Node] = []
    if layer is None:
        program = capture(module, tensors + extra, batch)
    else:
        try:
            program, nodes = capture_with_layers(
                module, tensors + extra, batch, layer_in(module, layer), len(tensors), layer_input
            )
        except LayerUnused as unused:
            if not (at_layer and grad_options.get("materialize_grads")):
                raise ValueError(
                    f"{unused}: its attributions are zero. Pass grad_kwargs={{'materialize_grads': True}} to get "
                    "the zeros (as Captum), or choose a layer that the output depends on"
                ) from unused
            return _unused_layer(module, tensors, references, extra, target, options, unused.path, layer_input)
        if neuron is not None and len(nodes) != 1:
            raise ValueError(
                f"the layer has {len(nodes)} activation tensors ({', '.join(n.name for n in nodes)}); a neuron is "
                "chosen in one: pass one by graph node name"
            )
    if shared and (not program.batch_dynamic or _has_batched_tensor(extra, batch)):
        references = tuple(r.expand_as(x) for r, x in zip(references, tensors))
    pairs = [Pair(_explained_leaf(x), r.detach()) for x, r in zip(tensors, references)]
    ctx = _context(options, program, tensors, nodes)
    plan = make_plan(program, len(tensors), options.rule, dict(options.rule_overrides), options.registry)
    layout = BatchLayout(batch, groups)
    points: list[Pair] = []
    grads: list[Tensor | None] = []
    t = t0 = None
    backend = options.backend if options.backend != "auto" else default_backend(tensors[0].device)
    fast = None
    if backend != "interpreter" and layer is None and set(grad_options) <= {"allow_unused"}:
        fast = _deeplift_recorded(
            program, module, tensors, references, extra, ctx, plan, layout, target, options, backend
        )
    if fast is not None:
        t, t0, recorded_grads = fast
        points = [Pair(x.detach(), r.detach()) for x, r in zip(tensors, references)]
        grads = list(recorded_grads)
    with torch.enable_grad():
        if not at_layer and fast is None:  # the inputs' contributions, to the target or to a neuron of the layer
            until = nodes[0] if nodes else None
            output = run_graph(program, module, list(pairs) + list(extra), ctx, plan, layout, None, until)
            if neuron is not None:
                t, t0 = _neuron_values(output, neuron)
            else:
                t, t0 = _target_values(_single_output(output), target, batch, options.softmax_adjustment)
            points = pairs
            grads = list(torch.autograd.grad(t.sum(), [p.x for p in points], **grad_options))
        for node in nodes if at_layer else ():  # one walk per activation tensor of the layer
            recorded: list[Pair] = []
            tap = (node, partial(_record_layer, recorded=recorded))
            output = run_graph(program, module, list(pairs) + list(extra), ctx, plan, layout, tap)
            t, t0 = _target_values(_single_output(output), target, batch, options.softmax_adjustment)
            if not recorded:
                raise ValueError(f"the layer's activation {node.name} was not reached")
            points.append(recorded[0])
            grads.extend(torch.autograd.grad(t.sum(), [recorded[0].x], **grad_options))
    assert t is not None and t0 is not None
    multipliers = tuple(torch.zeros_like(p.x) if g is None else row_major(g.detach()) for g, p in zip(grads, points))
    contributions = tuple(row_major(m * (p.x.detach() - p.ref)) for m, p in zip(multipliers, points))
    t, t0 = t.detach(), t0.detach()
    delta = check_summation(contributions, t, t0, options.tolerance, options.strict, warn=not at_layer)
    return DeepLiftResult(points, multipliers, contributions, delta, len(points) > 1 if at_layer else given_tuple)


def _deeplift_recorded(
    program: CapturedProgram,
    module: nn.Module,
    tensors: tuple[Tensor, ...],
    references: tuple[Tensor, ...],
    extra: tuple[Any, ...],
    ctx: RuleContext,
    plan: Plan,
    layout: BatchLayout,
    target: Any,
    options: DeepLiftOptions,
    backend: str,
) -> tuple[Tensor, Tensor, list[Tensor]] | None:
    """The walk and its backward pass through the fast path (:mod:`deltalift.fast_path`):
    ``(t, t0, multipliers)``, or ``None`` where it cannot be recorded soundly (the interpreter
    then runs).  The recorded program's inputs are the live parameters and buffers, the inputs,
    the references, the additional arguments and a tensor target; everything else it is
    specialised to is in the key."""
    if type(ctx) is not RuleContext or not all(x.is_floating_point() for x in tensors):
        return None
    batch = tensors[0].shape[0]
    state_keys = [key for kind, key in program.placeholders if kind == "state"]
    live = live_state(module, state_keys)
    state = [live[key] for key in state_keys]
    n, n_state = len(tensors), len(state_keys)
    target_input = target if isinstance(target, Tensor) else None
    inputs: list[Any] = [*state, *tensors, *(r.detach() for r in references), *extra, target_input]

    def walk(*values: Any) -> list[Tensor]:
        given_state = dict(zip(state_keys, values[:n_state]))
        xs, refs = values[n_state : n_state + n], values[n_state + n : n_state + 2 * n]
        extra_values, chosen = values[n_state + 2 * n : -1], values[-1] if target_input is not None else target
        leaves = [x.detach().requires_grad_(True) for x in xs]
        pairs = [Pair(leaf, r) for leaf, r in zip(leaves, refs)]
        with torch.enable_grad():
            output = run_graph(program, module, pairs + list(extra_values), ctx, plan, layout, state=given_state)
            t, t0 = _target_values(_single_output(output), chosen, batch, options.softmax_adjustment)
            found = torch.autograd.grad(t.sum(), leaves, allow_unused=True)
        multipliers = [torch.zeros_like(leaf) if g is None else g.detach() for g, leaf in zip(found, leaves)]
        return [t.detach(), t0.detach(), *multipliers]

    registry = options.registry
    reuse = _reuses_reference(options.reuse_reference, references)
    key = (
        id(plan),
        id(registry),
        tuple((op, id(rule)) for op, rule in registry._rules.items()),
        options.eps,
        options.maxpool_mode,
        options.softmax_adjustment,
        layout,
        None if target_input is not None else repr(target),
        reuse,
    )
    constants = [value for value in program.constants.values() if isinstance(value, Tensor)]
    first = 1 if options.backend == "auto" else 0
    reused = (range(n_state), range(n_state + n, n_state + 2 * n)) if reuse else None
    outputs = run_recorded(
        program, key, walk, inputs, backend, interpreted_first=first, constants=constants, reused=reused
    )
    if outputs is None:
        return None
    return outputs[0], outputs[1], outputs[2:]


def _reuses_reference(choice: bool | None, references: Sequence[Tensor]) -> bool:
    """``DeepLiftOptions.reuse_reference``: as chosen, or (``None``) where every reference is
    shared by the batch."""
    if choice is None:
        return all(r.ndim > 0 and r.shape[0] == 1 for r in references)
    return choice


def _explained_leaf(x: Tensor) -> Tensor:
    """An explained input's side of its Pair: a leaf with autograd, or (integer inputs, at a
    layer) the values alone."""
    return x.detach().requires_grad_(True) if x.is_floating_point() else x.detach()


@dataclass
class _IntegerInputsContext(RuleContext):
    """A rule context in which the ops that depend on integer explained inputs alone are
    evaluated for the input and the reference without their rule: nothing is differentiated
    through them (the multipliers are taken at a layer further on), so no rule is needed, and
    the Linear rule's check of indices that differ between the sides (an embedding lookup of
    the ids) does not apply."""

    plain: frozenset[torch.fx.Node] = frozenset()

    def call(self, op: Any, *args: Any, **kwargs: Any) -> Any:
        if self.node in self.plain:
            with torch.no_grad():
                return evaluate_both(op, args, kwargs)
        return super().call(op, *args, **kwargs)


def _context(
    options: DeepLiftOptions, program: CapturedProgram, tensors: tuple[Tensor, ...], layer_nodes: list[torch.fx.Node]
) -> RuleContext:
    if all(x.is_floating_point() for x in tensors):
        return RuleContext(eps=options.eps, maxpool_mode=options.maxpool_mode, registry=options.registry)
    plain = _integer_only(program, tensors, layer_nodes)
    return _IntegerInputsContext(
        eps=options.eps, maxpool_mode=options.maxpool_mode, registry=options.registry, plain=plain
    )


def _integer_only(
    program: CapturedProgram, tensors: tuple[Tensor, ...], layer_nodes: list[torch.fx.Node]
) -> frozenset[torch.fx.Node]:
    """The ops that depend on the integer explained inputs and on nothing that is differentiated:
    neither on a floating explained input nor on the layer's activations (the layer's own
    output node is one of them when it is computed from the ids alone)."""
    placeholders = [n for n in program.graph.nodes if n.op == "placeholder"]
    integer: set[torch.fx.Node] = set()
    differentiated: set[torch.fx.Node] = set(layer_nodes)
    for node, (kind, key) in zip(placeholders, program.placeholders):
        if kind == "input" and key < len(tensors):
            (differentiated if tensors[key].is_floating_point() else integer).add(node)
    found: set[torch.fx.Node] = set()
    for node in program.graph.nodes:
        if node.op != "call_function":
            continue
        args = node.all_input_nodes
        if any(a in differentiated for a in args):
            differentiated.add(node)
        elif any(a in integer for a in args):
            integer.add(node)
            found.add(node)
    return frozenset(found)


def _unused_layer(
    module: nn.Module,
    tensors: tuple[Tensor, ...],
    references: tuple[Tensor, ...],
    extra: tuple[Any, ...],
    target: Any,
    options: DeepLiftOptions,
    path: str,
    layer_input: bool,
) -> DeepLiftResult:
    """A layer the output does not depend on, with ``materialize_grads``: zero multipliers and
    contributions for its activations (read by running the model), as Captum."""
    refs = tuple(r.expand_as(x) for r, x in zip(references, tensors))
    activations, out_x = eager_layer_values(module, path, tensors + extra, layer_input)
    ref_activations, out_ref = eager_layer_values(module, path, refs + extra, layer_input)
    points = [Pair(a, r) for a, r in zip(activations, ref_activations)]
    zeros = tuple(torch.zeros_like(a) for a in activations)
    t, t0 = _target_values(Pair(out_x, out_ref), target, tensors[0].shape[0], options.softmax_adjustment)
    delta = check_summation(zeros, t, t0, warn=False)
    return DeepLiftResult(points, zeros, zeros, delta, len(points) > 1)


def _record_layer(value: Any, recorded: list[Pair]) -> Pair:
    """A tapped layer's activation, its input side made a fresh leaf (gradients stop there)."""
    if not isinstance(value, Pair) or not isinstance(value.x, Tensor):
        raise ValueError("the chosen layer's activation is not one tensor that depends on the inputs")
    if not value.x.is_floating_point():
        raise ValueError(
            f"the chosen layer's activation has dtype {value.x.dtype}; attributions are taken at a floating-point "
            "activation (for token ids, the embedding layer's output rather than its input)"
        )
    leaf = Pair(value.x.detach().requires_grad_(True), aligned(value).ref)
    recorded.append(leaf)
    return leaf


def _target_values(output: Pair, target: Any, batch: int, softmax_adjustment: bool) -> tuple[Tensor, Tensor]:
    """``t(x)`` and ``t(x0)`` per example (a callable target is already part of the graph).

    ``softmax_adjustment`` explains ``c_i - mean_j c_j`` (Shrikumar et al. 2017, section 3.6)."""
    if not isinstance(output.x, Tensor):
        raise ValueError("the model's output does not depend on the explained inputs")
    selected = None if callable(target) and not isinstance(target, Tensor) else target
    x_out, ref_out = output.x, aligned(output).ref.expand_as(output.x)
    if softmax_adjustment:
        x_out, ref_out = x_out - x_out.mean(1, keepdim=True), ref_out - ref_out.mean(1, keepdim=True)
    t = select_target(x_out, selected, batch)
    t0 = select_target(ref_out, selected, batch, "model output for the reference")
    check_finite(t, t0)
    return t, t0


def _neuron_values(activation: Any, neuron: Callable[[Tensor], Tensor]) -> tuple[Tensor, Tensor]:
    if not isinstance(activation, Pair) or not isinstance(activation.x, Tensor):
        raise ValueError("the chosen layer's activation is not one tensor that depends on the inputs")
    t, t0 = neuron(activation.x), neuron(aligned(activation).ref.expand_as(activation.x))
    check_finite(t, t0)
    return t, t0


def _single_output(outputs: list[Any]) -> Pair:
    if len(outputs) != 1:
        raise ValueError(f"the model returns {len(outputs)} tensors; deltalift explains a model with one output tensor")
    (output,) = outputs
    if not isinstance(output, Pair):
        raise ValueError("the model's output does not depend on the explained inputs")
    return output


def _has_batched_tensor(values: tuple[Any, ...], batch: int) -> bool:
    return any(isinstance(v, torch.Tensor) and v.ndim > 0 and v.shape[0] == batch and batch > 1 for v in values)


def check_finite(t: Tensor, t0: Tensor) -> None:
    """Refuse to explain a NaN or infinite output."""
    if not torch.isfinite(t).all():
        raise FloatingPointError("the model's output for the inputs is NaN or inf")
    if not torch.isfinite(t0).all():
        raise FloatingPointError("the model's output for the reference is NaN or inf")
