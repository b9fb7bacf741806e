"""Finding a layer's activation in the captured graph, by module or by graph node name.

A module's *call site* is one entry of ``torch.export``'s ``nn_module_stack`` metadata (a module
used twice has two call sites, the second suffixed ``@1``).  Its output is the value that leaves
the call site; its input, the one activation that enters it.
"""

from __future__ import annotations

from typing import Any, Union

import torch
from torch import nn

from deltalift.capture import CapturedProgram, capture
from deltalift.plan import input_dependent

LayerType = Union[nn.Module, str]


class LayerRunsNoOperation(ValueError):
    """A module that runs no operation of its own (its output is one of its inputs)."""

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
    """The captured model and the node of ``layer``'s output (or input).

    A module that runs no operation (an eval-mode dropout, ``nn.Identity``) is found by capturing
    once more with its output recorded (:func:`deltalift.capture.capture`'s ``mark``)."""
    program = capture(model, args, batch_size)
    try:
        return program, find_layer(program, model, layer, n_explained, use_input)
    except LayerRunsNoOperation as missing:
        program = capture(model, args, batch_size, mark=missing.path)
        return program, find_layer(program, model, layer, n_explained, use_input)


def find_layer(
    program: CapturedProgram, model: nn.Module, layer: LayerType, n_explained: int, use_input: bool = False
) -> torch.fx.Node:
    """The graph node holding ``layer``'s output (or input) activation.

    ``layer`` is a module of ``model``, a module path (``"features.3"``) or a graph node name
    (``"relu_2"``, as in the errors and in ``torch.export``'s printout; ``"node:relu"`` where a
    module has the same name).
    """
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
            return _single(_entering([node], dependent), f"graph node {name}", "inputs") if use_input else node
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
    if use_input:
        return _single(_entering(members, dependent), f"module {name}", "inputs")
    return _single(_leaving(members), f"module {name}", "outputs")


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
