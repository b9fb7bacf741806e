"""Finding a layer's activation in the captured graph, by module or by graph node name.

A module's *call site* is one entry of ``torch.export``'s ``nn_module_stack`` metadata (a module
used twice has two call sites, the second suffixed ``@1``).  Its output is the value that leaves
the call site (several for a module that returns a tuple); its input, the activation that enters
it (several for a module that takes several).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Union

import torch
from torch import nn
from torch.utils._pytree import tree_flatten

from deltalift.capture import CapturedProgram, capture
from deltalift.plan import input_dependent

LayerType = Union[nn.Module, str]


class LayerRunsNoOperation(ValueError):
    """A module that runs no operation of its own (its output is one of its inputs)."""

    def __init__(self, message: str, path: str) -> None:
        super().__init__(message)
        self.path = path


class LayerUnused(ValueError):
    """A module whose output the model never uses: ``torch.export`` removed its operations, so
    the target does not depend on it and its gradient is zero (Captum's ``materialize_grads``)."""

    def __init__(self, message: str, path: str) -> None:
        super().__init__(message)
        self.path = path


def capture_with_layer(
    model: nn.Module,
    args: tuple[Any, ...],
    batch_size: int,
    layer: LayerType,
    n_explained: int,
    use_input: bool = False,
) -> tuple[CapturedProgram, torch.fx.Node]:
    """The captured model and the node of ``layer``'s output (or input), for methods that read
    one activation tensor (a module returning several, or taking several, is refused).

    A module that runs no operation (an eval-mode dropout, ``nn.Identity``) is found by capturing
    once more with its output recorded (:func:`deltalift.capture.capture`'s ``mark``)."""
    program, nodes = capture_with_layers(model, args, batch_size, layer, n_explained, use_input)
    if len(nodes) != 1:
        kind = "inputs" if use_input else "outputs"
        names = ", ".join(n.name for n in nodes)
        raise ValueError(
            f"layer {_name(model, layer)} has {len(nodes)} {kind} that depend on the explained input ({names}); "
            "this method reads one activation tensor: pass one by graph node name"
        )
    return program, nodes[0]


def capture_with_layers(
    model: nn.Module,
    args: tuple[Any, ...],
    batch_size: int,
    layer: LayerType,
    n_explained: int,
    use_input: bool = False,
) -> tuple[CapturedProgram, list[torch.fx.Node]]:
    """The captured model and the nodes of ``layer``'s output tensors (or input tensors): one for
    most layers, several for a module that returns a tuple (in the order it returns them) or
    that takes several activations (in the order it first uses them), as Captum's layer methods
    read them.

    A module that runs no operation (an eval-mode dropout, ``nn.Identity``), or that returns or
    takes several tensors, is captured once more with its activations recorded
    (:func:`capture_marked`), which also fixes their order.  A module whose output the model
    does not use raises :class:`LayerUnused` (a ``ValueError`` for its input, which the graph
    holds but no longer ties to the module)."""
    program = capture(model, args, batch_size)
    try:
        nodes = find_layers(program, model, layer, n_explained, use_input)
    except LayerRunsNoOperation as missing:
        program = capture_marked(model, args, batch_size, missing.path)
        try:
            return program, find_layers(program, model, layer, n_explained, use_input)
        except LayerRunsNoOperation as still:
            if use_input:
                raise ValueError(
                    f"layer {missing.path} is not used by the model's output (torch.export removed its operations), "
                    "so the activation entering it cannot be found through it; pick that activation by graph node "
                    "name"
                ) from still
            raise LayerUnused(
                f"layer {missing.path} is not used by the model's output (torch.export removed its operations), "
                "so the target does not depend on it",
                missing.path,
            ) from still
    path = _module_path(model, layer)
    if len(nodes) > 1 and path is not None:
        program = capture_marked(model, args, batch_size, path)
        nodes = find_layers(program, model, layer, n_explained, use_input)
    return program, nodes


@dataclass(frozen=True)
class LayerSites:
    """Where the activations of each of several layers are in one captured program.

    ``nodes[i]`` holds layer ``i``'s activation nodes (several for a module that returns or takes
    several tensors); ``unused`` maps the index of a layer the model's output does not use (so the
    graph lacks it) to its module path; ``members[i]``, the nodes of layer ``i``'s call (the node
    itself for a graph node name), which tell apart the uses of an input two layers share.
    """

    program: CapturedProgram
    nodes: list[list[torch.fx.Node]]
    unused: dict[int, str]
    members: list[set[torch.fx.Node]]

    def consumers(self, i: int, node: torch.fx.Node) -> set[torch.fx.Node]:
        """The nodes of layer ``i``'s call that use ``node`` (an activation entering the layer)."""
        return {user for user in node.users if user in self.members[i]}


def capture_with_layer_list(
    model: nn.Module,
    args: tuple[Any, ...],
    batch_size: int,
    layers: Sequence[LayerType],
    n_explained: int,
    use_input: bool = False,
) -> LayerSites:
    """The captured model with the activations of every layer of ``layers`` found in it (Captum's
    list of layers), as :func:`capture_with_layers` finds one layer's: the modules that need
    their activations recorded (:func:`capture_marked`) are all marked in one capture."""
    plain = capture(model, args, batch_size)
    marks: list[str] = []
    unused: dict[int, str] = {}
    for i, layer in enumerate(layers):
        try:
            program, _ = capture_with_layers(model, args, batch_size, layer, n_explained, use_input)
        except LayerUnused as missing:
            unused[i] = missing.path
            continue
        path = _module_path(model, layer)
        if program is not plain and path is not None and path not in marks:
            marks.append(path)
    program = (
        plain if not marks else capture_marked(model, args, batch_size, marks[0] if len(marks) == 1 else tuple(marks))
    )
    nodes = [
        [] if i in unused else find_layers(program, model, layer, n_explained, use_input)
        for i, layer in enumerate(layers)
    ]
    members = [set() if i in unused else _call_members(program, model, layer) for i, layer in enumerate(layers)]
    return LayerSites(program, nodes, unused, members)


def _call_members(program: CapturedProgram, model: nn.Module, layer: LayerType) -> set[torch.fx.Node]:
    """The nodes of ``layer``'s (one) call site, or the node a graph node name names."""
    by_name = {node.name: node for node in program.graph.nodes}
    if isinstance(layer, str) and _module_path(model, layer) is None:
        return {by_name[layer.removeprefix("node:")]}
    paths = set(_paths(model, layer))
    return {
        node
        for node in program.graph.nodes
        if any(path in paths for path, _ in node.meta.get("nn_module_stack", {}).values())
    }


def capture_marked(
    model: nn.Module, args: tuple[Any, ...], batch_size: int, path: str | tuple[str, ...]
) -> CapturedProgram:
    """``model(*args)`` captured with the activations of the submodule at ``path`` recorded inside
    its call: its outputs by :func:`deltalift.capture.capture`'s ``mark``, its floating
    positional inputs by a forward pre-hook installed here (``input * 1``).  The graph then
    holds a module's outputs in the order it returns them, and first uses its inputs in the
    order it takes them (Captum's order), even where its code computes or reads them in another
    order; a module that runs no operation of its own has nodes to read.  Every capture with a
    mark is made here, so the cached program is the same whichever caller captured it first.
    """

    def record(module: nn.Module, inputs: tuple[Any, ...]) -> tuple[Any, ...]:
        return tuple(v * 1 if isinstance(v, torch.Tensor) and v.is_floating_point() else v for v in inputs)

    paths = (path,) if isinstance(path, str) else path
    handles = [model.get_submodule(p).register_forward_pre_hook(record) for p in paths]
    try:
        return capture(model, args, batch_size, mark=path)
    finally:
        for handle in handles:
            handle.remove()


def find_layer(
    program: CapturedProgram, model: nn.Module, layer: LayerType, n_explained: int, use_input: bool = False
) -> torch.fx.Node:
    """The graph node holding ``layer``'s output (or input) activation, which must be one tensor.

    ``layer`` is a module of ``model``, a module path (``"features.3"``) or a graph node name
    (``"relu_2"``, as in the errors and in ``torch.export``'s printout; ``"node:relu"`` where a
    module has the same name).
    """
    nodes = find_layers(program, model, layer, n_explained, use_input)
    kind = "inputs" if use_input else "outputs"
    return _single(nodes, f"layer {_name(model, layer)}", kind)


def find_layers(
    program: CapturedProgram, model: nn.Module, layer: LayerType, n_explained: int, use_input: bool = False
) -> list[torch.fx.Node]:
    """The graph nodes holding ``layer``'s output (or input) activations, as :func:`find_layer`;
    several for a module that returns (or takes) several tensors."""
    dependent = input_dependent(program, n_explained)
    nodes = {node.name: node for node in program.graph.nodes}
    if isinstance(layer, str):
        name = layer.removeprefix("node:")
        is_module = layer in dict(model.named_modules())
        if name in nodes and is_module and not layer.startswith("node:"):
            raise ValueError(
                f"{layer!r} is both a module path and a graph node name; pass the module itself, "
                f"or 'node:{layer}' for the graph node"
            )
        if name in nodes and (layer.startswith("node:") or not is_module):
            node = nodes[name]
            return [_single(_entering([node], dependent), f"graph node {name}", "inputs")] if use_input else [node]
        if layer.startswith("node:"):
            raise ValueError(f"the captured graph has no node named {name!r}")
    paths = _paths(model, layer)
    sites: dict[str, list[torch.fx.Node]] = {}
    for node in program.graph.nodes:
        for key, (path, _) in node.meta.get("nn_module_stack", {}).items():
            if path in paths:
                sites.setdefault(key, []).append(node)
    name = paths[0] if paths else repr(layer)
    if not sites:
        if paths and paths[0] in dict(model.named_modules()):
            raise LayerRunsNoOperation(f"layer {name} does not run any operation in the captured model", paths[0])
        raise ValueError(f"layer {name} does not run any operation in the captured model")
    if len(sites) > 1:
        raise ValueError(
            f"module {name} runs {len(sites)} times in the model; pick one call by graph node name "
            f"(its output nodes: {', '.join(_leaving(s)[-1].name for s in sites.values() if _leaving(s))})"
        )
    (members,) = sites.values()
    found = _entering(members, dependent) if use_input else _leaving(members)
    if not found:
        kind = "inputs" if use_input else "outputs"
        raise ValueError(f"module {name} has no {kind} that depend on the explained input")
    return found


def _module_path(model: nn.Module, layer: LayerType) -> str | None:
    """The module path of a module layer (``None`` for a graph node name)."""
    if isinstance(layer, str):
        return layer if layer in dict(model.named_modules()) and not layer.startswith("node:") else None
    paths = [name for name, module in model.named_modules(remove_duplicate=False) if module is layer]
    return paths[0] if paths else None


def _name(model: nn.Module, layer: LayerType) -> str:
    if isinstance(layer, str):
        return layer.removeprefix("node:")
    return _module_path(model, layer) or type(layer).__name__


def _paths(model: nn.Module, layer: LayerType) -> list[str]:
    if isinstance(layer, str):
        return [layer]
    paths = [name for name, module in model.named_modules(remove_duplicate=False) if module is layer]
    if not paths:
        raise ValueError(f"the layer {type(layer).__name__} is not a submodule of the model")
    return paths


def _is_activation(node: torch.fx.Node) -> bool:
    """Whether the node holds a tensor (or tensors), not a size or a shape computation."""
    value = node.meta.get("val")
    values = value if isinstance(value, (tuple, list)) else (value,)
    return any(isinstance(v, torch.Tensor) for v in values)


def _leaving(members: list[torch.fx.Node]) -> list[torch.fx.Node]:
    """The activations computed inside a call site and used outside it (sizes do not count)."""
    inside = set(members)
    return [n for n in members if _is_activation(n) and any(user not in inside for user in n.users)]


def _entering(members: list[torch.fx.Node], dependent: set[torch.fx.Node]) -> list[torch.fx.Node]:
    inside = set(members)
    found: list[torch.fx.Node] = []
    for node in members:
        for arg in node.all_input_nodes:
            if arg not in inside and arg in dependent and _is_activation(arg) and arg not in found:
                found.append(arg)
    return found


def _single(candidates: list[torch.fx.Node], what: str, kind: str) -> torch.fx.Node:
    if len(candidates) != 1:
        names = ", ".join(n.name for n in candidates) or "none"
        raise ValueError(
            f"{what} has {len(candidates)} {kind} that depend on the explained input ({names}); pass one by graph node name"
        )
    return candidates[0]


def eager_layer_values(
    model: nn.Module, path: str, args: tuple[Any, ...], use_input: bool = False
) -> tuple[tuple[torch.Tensor, ...], Any]:
    """The tensors that the submodule at ``path`` returns (or receives) when ``model(*args)`` runs
    as it is, without gradients, and the model's output: for a layer that the captured graph
    lacks because the output does not use it."""
    seen: list[Any] = []

    def record(module: nn.Module, inputs: Any, output: Any) -> None:
        if not seen:
            seen.append(inputs if use_input else output)

    handle = model.get_submodule(path).register_forward_hook(record)
    try:
        with torch.no_grad():
            output = model(*args)
    finally:
        handle.remove()
    if not seen:
        raise ValueError(f"layer {path} does not run when the model runs on these inputs")
    leaves, _ = tree_flatten(seen[0])
    return tuple(v.detach() for v in leaves if isinstance(v, torch.Tensor)), output
