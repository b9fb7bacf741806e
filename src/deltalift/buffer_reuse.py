"""Element-wise ops of a recorded program written into the buffer of an argument that dies there.

Replayed op by op, the DeepLIFT walk allocates a fresh tensor for every element-wise step of its
multipliers (the differences ``x - x0`` and ``f(x) - f(x0)``, their quotient, the near-zero test,
the product with the incoming gradient in the backward pass).  On the CPU a fresh allocation the
size of an activation is memory the operating system has to hand over page by page: on the
machine of the README, ``torch.sub`` of two ``(8, 64, 224, 224)`` tensors took 26 ms into a new
tensor and 5 ms into one of its arguments.  Where an argument of an element-wise op is read for
the last time by that op, nothing else reads its storage afterwards (no view of it, no later op),
and it has the output's exact layout, the op writes its result there (its ``out=`` overload):
the values are the same, computed by the same kernel, and the allocation is gone.

What is never written into: the program's inputs (the live parameters, the user's inputs and
references, the reference side's kept values) and its constants, any storage they share, and what
the program returns.  Storages are told apart by identity at recording time
(:func:`storage_identity`), so a buffer freed and reused by the allocator during the recording is
not mistaken for the value that held it before.  The layout, storage and liveness facts are those
of the recording.  A replay whose tensors are laid out otherwise (a channels-last input where a
contiguous one was recorded) writes each result in its dying argument's layout: the same values,
though the layout of that intermediate may differ from what the op would have made.
"""

from __future__ import annotations

import itertools
from typing import Any

import torch
from torch.multiprocessing.reductions import StorageWeakRef

Tensor = torch.Tensor

_ids = itertools.count()


class StorageIdentities:
    """One number per storage alive at recording time (a storage freed and another allocated at
    the same address get different numbers)."""

    def __init__(self) -> None:
        self._known: dict[int, tuple[StorageWeakRef, int]] = {}

    def of(self, t: Tensor) -> int:
        reference = StorageWeakRef(t.untyped_storage())
        known = self._known.get(reference.cdata)
        if known is not None and not known[0].expired():
            return known[1]
        number = next(_ids)
        self._known[reference.cdata] = (reference, number)
        return number


def layout(t: Tensor) -> tuple[Any, ...]:
    """What an ``out=`` buffer must share with an op's output: shape, strides, dtype, device, and
    whether its elements are its whole storage, without gaps or overlap (a slice of a larger
    storage would keep all of it alive as the output)."""
    return (tuple(t.shape), t.stride(), t.dtype, t.device, _whole_storage(t))


def _whole_storage(t: Tensor) -> bool:
    """Whether some order of ``t``'s dimensions is contiguous and covers its storage exactly."""
    expected = 1
    for size, stride in sorted(((n, s) for n, s in zip(t.shape, t.stride()) if n != 1), key=lambda p: p[1]):
        if stride != expected:
            return False
        expected *= size
    return bool(
        t.numel() > 0 and t.storage_offset() == 0 and t.untyped_storage().nbytes() == t.numel() * t.element_size()
    )


def _out_overload(target: Any) -> Any:
    """The ``out=`` overload of an element-wise op (``aten.sub.Tensor`` -> ``aten.sub.out``), or
    ``None``."""
    if not isinstance(target, torch._ops.OpOverload) or torch.Tag.pointwise not in target.tags:
        return None
    if target.overloadpacket in _COPIES:
        return None  # a copy is made to have a storage of its own
    if any(r.alias_info is not None for r in target._schema.returns) or len(target._schema.returns) != 1:
        return None  # a view or an in-place op already
    packet = target.overloadpacket
    wanted = [(a.name, str(a.type)) for a in target._schema.arguments]
    for name in (f"{target._overloadname}_out", "out"):  # clamp.Tensor -> clamp.Tensor_out, sub.Tensor -> sub.out
        if name not in packet.overloads():
            continue
        overload = getattr(packet, name)
        arguments = overload._schema.arguments
        if [(a.name, str(a.type)) for a in arguments if not a.is_out] == wanted and [
            a.name for a in arguments if a.is_out
        ] == ["out"]:
            return overload
    return None


_COPIES = (torch.ops.aten.clone, torch.ops.aten._to_copy, torch.ops.aten.copy)


def write_into_dying_arguments(module: torch.fx.GraphModule) -> int:
    """Rewrite ``module``'s element-wise ops to write into an argument that dies there (see the
    module's docstring); returns how many were rewritten.  Nodes carry the recording's
    ``storage_id`` and ``layout`` in their ``meta``; nodes without them (values no recorded tensor
    had, such as the guards' flags, and what the reference side keeps of them) are neither
    written nor written into, and no recorded tensor shares their storage."""
    graph = module.graph
    nodes = list(graph.nodes)
    position = {node: i for i, node in enumerate(nodes)}
    last_read: dict[int, int] = {}
    protected: set[int] = set()
    for node in nodes:
        storage = node.meta.get("storage_id")
        if storage is None:  # made by no recorded tensor (a guard's flag): nothing written into it
            continue
        if node.op in ("placeholder", "get_attr"):
            protected.add(storage)
        end = max((position[user] for user in node.users), default=position[node])
        last_read[storage] = max(last_read.get(storage, -1), end)
    moved: dict[int, int] = {}  # an output's recorded storage -> the argument's it is written into

    def storage_of(node: torch.fx.Node) -> int | None:
        storage = node.meta.get("storage_id")
        while storage in moved:
            storage = moved[storage]
        return storage

    rewritten = 0
    for node in nodes:
        overload = _out_overload(node.target) if node.op == "call_function" else None
        wanted = node.meta.get("layout")
        if overload is None or wanted is None or not wanted[-1] or "out" in node.kwargs:
            continue
        read = [storage_of(r) for r in node.all_input_nodes]
        for argument in node.args:
            if not isinstance(argument, torch.fx.Node):
                continue
            storage = storage_of(argument)
            if (
                storage is None
                or storage in protected
                or last_read.get(storage) != position[node]
                or argument.meta.get("layout") != wanted
                or read.count(storage) > 1  # read here through another alias too
            ):
                continue
            own = node.meta.get("storage_id")
            if own is None or own in moved or own == storage:  # already sharing a storage as recorded
                break
            node.target = overload
            node.kwargs = {**node.kwargs, "out": argument}
            moved[own] = storage  # its views read the argument's storage from now on
            last_read[storage] = last_read.get(own, position[node])
            rewritten += 1
            break
    if rewritten:
        module.recompile()
    return rewritten
