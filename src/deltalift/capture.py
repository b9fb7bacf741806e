"""Model -> graph of core ATen operations (``torch.export`` + core decompositions), cached.

The batch dimension is exported as dynamic where export allows it, so that one captured graph
serves every batch size and a reference shared by the batch can be evaluated at batch size one.
A model whose code fixes the batch size is exported statically (and references are then
expanded to the batch).  Element-wise nonlinearities that the core decompositions would split
into pieces (SiLU, Hardswish, Softplus, Mish, ...) are kept whole, so Rescale sees one function.
"""

from __future__ import annotations

import contextlib
import logging
import math
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.export import Dim, default_decompositions, export
from torch.export.graph_signature import InputKind, OutputKind
from torch.utils._pytree import tree_flatten, tree_map

from deltalift.errors import CaptureError
from deltalift.rules import KEEP_UNDECOMPOSED


@dataclass
class CapturedProgram:
    """A captured model: its ATen graph and how to feed its placeholders.

    ``placeholders`` lists, for each graph input, ``(kind, key)``: kind ``"state"`` reads the
    model's live parameter or buffer named ``key`` (so later weight updates are seen), kind
    ``"constant"`` a lifted constant, kind ``"input"`` the ``key``-th flattened user argument.
    """

    graph: torch.fx.Graph
    placeholders: list[tuple[str, Any]]
    user_output_positions: list[int]
    constants: dict[str, Any]
    batch_dynamic: bool
    free_after: dict[torch.fx.Node, list[torch.fx.Node]] = field(default_factory=dict)
    plans: dict[Any, Any] = field(default_factory=dict)  # engine.Plan per rule choice

    def __post_init__(self) -> None:
        self.free_after = _last_uses(self.graph)


class _CallableModule(nn.Module):
    """Wraps a plain forward function so that ``torch.export`` can capture it."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, *args: Any) -> Any:
        return self.fn(*args)


_cache: weakref.WeakKeyDictionary[Any, dict[Any, CapturedProgram]] = weakref.WeakKeyDictionary()
_wrappers: weakref.WeakKeyDictionary[Any, nn.Module] = weakref.WeakKeyDictionary()


def as_module(model: Any) -> nn.Module:
    """The model itself, or a (cached) module wrapping a plain forward function."""
    if isinstance(model, nn.Module):
        return model
    if not callable(model):
        raise TypeError(f"model must be a torch.nn.Module or a callable, got {type(model).__name__}")
    try:
        if model not in _wrappers:
            _wrappers[model] = _CallableModule(model)
        return _wrappers[model]
    except TypeError:  # not weak-referenceable
        return _CallableModule(model)


class _TargetModule(nn.Module):
    """``target_fn(model(*args))``: a callable target captured together with the model, so that
    its own ops get exact rules too."""

    def __init__(self, model: nn.Module, target_fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.model = model
        self.target_fn = target_fn

    def forward(self, *args: Any) -> torch.Tensor:
        out = self.target_fn(self.model(*args))
        return out[:, None] if isinstance(out, torch.Tensor) and out.ndim == 1 else out


_target_modules: weakref.WeakKeyDictionary[nn.Module, dict[Any, _TargetModule]] = weakref.WeakKeyDictionary()


def with_target(module: nn.Module, target: Any) -> nn.Module:
    """The module to capture: the model, or (cached) the model followed by a callable target."""
    if not callable(target) or isinstance(target, torch.Tensor):
        return module
    per_model = _target_modules.setdefault(module, {})
    if target not in per_model:
        per_model[target] = _TargetModule(module, target)
    return per_model[target]


def layer_in(module: nn.Module, layer: Any) -> Any:
    """A module path relative to the user's model, also when a target wrapper is captured."""
    if isinstance(module, _TargetModule) and isinstance(layer, str):
        if f"model.{layer}" in dict(module.named_modules()):
            return f"model.{layer}"
    return layer


def _signature(args: tuple[Any, ...], batch_size: int, dynamic: bool) -> Any:
    leaves, spec = tree_flatten(args)
    parts: list[Any] = [str(spec)]
    for leaf in leaves:
        if isinstance(leaf, torch.Tensor):
            shape: tuple[int | str, ...] = tuple(leaf.shape)
            if dynamic and leaf.ndim > 0 and shape[0] == batch_size:
                shape = ("batch",) + shape[1:]
            parts.append((shape, leaf.dtype, str(leaf.device)))
        else:
            parts.append(("value", repr(leaf)))
    return tuple(parts)


def capture(
    model: nn.Module, args: tuple[Any, ...], batch_size: int, mark: str | tuple[str, ...] | None = None
) -> CapturedProgram:
    """Capture ``model(*args)``; reuse a cached graph for the same input signature.

    ``mark``: the path (or paths) of a submodule that runs no operation of its own (an eval-mode
    dropout, an identity) whose output must be found in the graph: while capturing, a forward hook
    records its output as ``output * 1`` inside the module's call (the hook is removed afterwards,
    also when capture fails).
    """
    per_model = _cache.setdefault(model, {})
    for dynamic in (True, False):
        key = (_signature(args, batch_size, dynamic), model.training, mark)
        if key in per_model:
            return per_model[key]
    error: Exception | None = None
    for dynamic in (True, False) if batch_size >= 2 else (False,):
        try:
            with _quiet_torch_logs(), _marked_output(model, mark):
                program = _export(model, args, batch_size, dynamic)
        except Exception as exc:  # export raises many types; report the first cause
            error = exc
            continue
        per_model[(_signature(args, batch_size, dynamic), model.training, mark)] = program
        return program
    assert error is not None
    raise _capture_error(model, args, error) from error


@contextlib.contextmanager
def _marked_output(model: nn.Module, mark: str | tuple[str, ...] | None) -> Iterator[None]:
    def record(module: nn.Module, inputs: Any, output: Any) -> Any:
        return tree_map(lambda v: v * 1 if isinstance(v, torch.Tensor) and v.is_floating_point() else v, output)

    paths = () if mark is None else (mark,) if isinstance(mark, str) else mark
    handles = [model.get_submodule(path).register_forward_hook(record) for path in paths]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0]}" if text else type(error).__name__


def _describe_inputs(args: tuple[Any, ...]) -> str:
    leaves, _ = tree_flatten(args)
    return ", ".join(
        f"{tuple(leaf.shape)} {str(leaf.dtype).removeprefix('torch.')}"
        if isinstance(leaf, torch.Tensor)
        else repr(leaf)
        for leaf in leaves
    )


def _capture_error(model: nn.Module, args: tuple[Any, ...], error: Exception) -> CaptureError:
    """The error to raise when export failed: if the model itself cannot run on the inputs, say
    so with their shapes; otherwise name export's first cause and the common reasons."""
    if isinstance(error, CaptureError):
        return error
    name = type(model).__name__
    eager = _eager_failure(model, args)
    if eager is not None:  # the model rejects these inputs: not a capture problem
        return CaptureError(
            f"{name} cannot run on the given inputs (shapes {_describe_inputs(args)}): {_first_line(eager)}. "
            "Check the inputs' shapes and dtypes against what the model expects."
        )
    return CaptureError(
        f"could not capture {name} as a graph of ATen operations with "
        f"torch.export (non-strict): {_first_line(error)}\n"
        "Common causes: Python control flow that depends on tensor values (use torch.where or "
        "torch.cond), calls that leave PyTorch (.item(), .tolist(), .numpy()), or outputs that "
        "are not tensors. To see the full trace, run "
        "torch.export.export(model, tuple(inputs), strict=False) yourself."
    )


def _eager_failure(model: nn.Module, args: tuple[Any, ...]) -> Exception | None:
    """The error the model raises when called on ``args`` as it is (``None`` if it runs).  Only
    for a model in eval mode, and its buffers are put back afterwards: the model is never modified."""
    if any(module.training for module in model.modules()):
        return None
    buffers = {name: b.detach().clone() for name, b in model.named_buffers()}
    try:
        with torch.no_grad():
            model(*args)
    except Exception as exc:
        return exc
    finally:
        with torch.no_grad():
            for name, b in model.named_buffers():
                if name in buffers:
                    b.copy_(buffers[name])
    return None


#: torch's loggers that print tracebacks while export tries and fails (fake-tensor meta kernels,
#: symbolic shapes): deltalift reports the failure itself.
_NOISY_LOGGERS = (
    "torch._subclasses.fake_tensor",
    "torch.fx.experimental.symbolic_shapes",
    "torch.export",
    "torch._export",
)


@contextlib.contextmanager
def _quiet_torch_logs() -> Iterator[None]:
    loggers = [logging.getLogger(name) for name in _NOISY_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def _export(model: nn.Module, args: tuple[Any, ...], batch_size: int, dynamic: bool) -> CapturedProgram:
    dynamic_shapes = None
    if dynamic:
        batch = Dim("batch")
        dynamic_shapes = tree_map(
            lambda leaf: (
                {0: batch} if isinstance(leaf, torch.Tensor) and leaf.ndim > 0 and leaf.shape[0] == batch_size else None
            ),
            args,
        )
    program = export(model, args, dynamic_shapes=dynamic_shapes, strict=False)
    return _to_captured(program.run_decompositions(_decomposition_table()), dynamic)


def _decomposition_table() -> dict[Any, Any]:
    """The core decompositions, less those of the nonlinearities Rescale keeps whole, and with
    scaled dot-product attention written out as its math (:func:`_attention_math`)."""
    table = default_decompositions()
    for op in KEEP_UNDECOMPOSED:
        table.pop(op, None)
    table[torch.ops.aten.scaled_dot_product_attention.default] = _attention_math
    return table


def _attention_math(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attn_mask: torch.Tensor | None = None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    scale: float | None = None,
    enable_gqa: bool = False,
) -> torch.Tensor:
    """``softmax(q k^T * scale + mask) v`` (Vaswani et al. 2017, section 3.2.1), as the op documents it.

    The default decomposition returns a tensor laid out differently from the fused kernels
    (``(B, H, L, D)`` contiguous where they return ``(B, L, H, D)`` memory order), and model code
    that views the transposed output then fails (GPT-2 with ``sdpa`` attention); this one keeps
    the kernels' layout.  Dropout is refused: attributions would be random."""
    if dropout_p:
        raise CaptureError("scaled_dot_product_attention with dropout_p > 0: call model.eval() first")
    if enable_gqa:
        repeats = query.shape[-3] // key.shape[-3]
        key, value = key.repeat_interleave(repeats, -3), value.repeat_interleave(repeats, -3)
    factor = 1 / math.sqrt(query.shape[-1]) if scale is None else scale
    scores = query @ key.transpose(-2, -1) * factor
    if is_causal:
        causal = torch.ones(query.shape[-2], key.shape[-2], dtype=torch.bool, device=query.device).tril()
        scores = scores.masked_fill(~causal, float("-inf"))
    if attn_mask is not None:
        scores = scores.masked_fill(~attn_mask, float("-inf")) if attn_mask.dtype == torch.bool else scores + attn_mask
    out = torch.softmax(scores, -1) @ value
    return out.transpose(-3, -2).contiguous().transpose(-3, -2) if out.ndim >= 3 else out


def _to_captured(program: torch.export.ExportedProgram, dynamic: bool) -> CapturedProgram:
    signature = program.graph_signature
    placeholders: list[tuple[str, Any]] = []
    user_index = 0
    for spec in signature.input_specs:
        if spec.kind in (InputKind.PARAMETER, InputKind.BUFFER) and spec.persistent is not False:
            placeholders.append(("state", spec.target))
        elif spec.kind in (InputKind.CONSTANT_TENSOR, InputKind.BUFFER):
            placeholders.append(("constant", spec.target))
        elif spec.kind == InputKind.USER_INPUT:
            placeholders.append(("input", user_index))
            user_index += 1
        else:
            raise CaptureError(f"the captured graph has an input of kind {spec.kind.name}, which deltalift cannot feed")
    mutations = [s for s in signature.output_specs if s.kind != OutputKind.USER_OUTPUT]
    if mutations:
        raise CaptureError(
            "the model changes its own state while it runs forward ("
            + ", ".join(f"{s.kind.name.lower()} {s.target}" for s in mutations)
            + "); call model.eval() or remove the in-place update of the buffer"
        )
    random_ops = sorted(
        {
            str(node.target)
            for node in program.graph.nodes
            if node.op == "call_function" and torch.Tag.nondeterministic_seeded in getattr(node.target, "tags", ())
        }
    )
    if random_ops:
        raise CaptureError(
            f"the model draws random numbers ({', '.join(random_ops)}), e.g. dropout in training "
            "mode; attributions would be random. Call model.eval() first."
        )
    positions = [i for i, s in enumerate(signature.output_specs) if s.kind == OutputKind.USER_OUTPUT]
    return CapturedProgram(
        graph=program.graph_module.graph,
        placeholders=placeholders,
        user_output_positions=positions,
        constants=dict(program.constants),
        batch_dynamic=dynamic,
    )


def _last_uses(graph: torch.fx.Graph) -> dict[torch.fx.Node, list[torch.fx.Node]]:
    """For each node, the values that can be dropped once it has run."""
    seen: set[torch.fx.Node] = set()
    free_after: dict[torch.fx.Node, list[torch.fx.Node]] = {}
    for node in reversed(graph.nodes):
        for used in node.all_input_nodes:
            if used not in seen:
                seen.add(used)
                free_after.setdefault(node, []).append(used)
    return free_after


def state_value(model: nn.Module, target: str) -> torch.Tensor:
    """The model's live parameter or buffer ``target`` (dotted name)."""
    module_path, _, name = target.rpartition(".")
    owner = model.get_submodule(module_path) if module_path else model
    value = getattr(owner, name)
    if not isinstance(value, torch.Tensor):
        raise CaptureError(f"the model's attribute {target} is no longer a tensor")
    return value


def clear_cache(model: Any | None = None) -> None:
    """Forget captured graphs (of one model, or of all); needed after editing a model's code."""
    if model is None:
        _cache.clear()
    else:
        _cache.pop(as_module(model), None)
