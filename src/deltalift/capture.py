"""Model -> graph of core ATen operations (``torch.export`` + core decompositions), cached.

The batch dimension is exported as dynamic where export allows it, so that one captured graph
serves every batch size and a reference shared by the batch can be evaluated at batch size one.
A model whose code fixes the batch size is exported statically (and references are then
expanded to the batch).  Element-wise nonlinearities that the core decompositions would split
into pieces (SiLU, Hardswish, Softplus, Mish, ...) are kept whole, so Rescale sees one function.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
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

from deltalift import capture_cache
from deltalift.errors import CaptureError
from deltalift.rules import KEEP_UNDECOMPOSED


@dataclass(eq=False)  # compared, and hashed, by identity
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


_log = logging.getLogger(__name__)

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

    Looked up first in memory (per model instance), then in the capture cache on disk
    (:mod:`deltalift.capture_cache`: keyed by the model's code, attributes and state shapes, the
    input signature, ``mark`` and the versions; no weights stored), and only then exported; a
    new capture is stored in both.

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
    attempts = (True, False) if batch_size >= 2 else (False,)
    on_disk = _DiskEntries(model, args, batch_size, mark)
    for dynamic in attempts:
        stored = on_disk.load(dynamic)
        if stored is not None:
            per_model[(_signature(args, batch_size, dynamic), model.training, mark)] = stored
            return stored
    error: Exception | None = None
    for dynamic in attempts:
        try:
            with _quiet_torch_logs(), _marked_output(model, mark):
                exported = _export(model, args, batch_size, dynamic)
                program = _to_captured(exported, dynamic)
        except Exception as exc:  # export raises many types; report the first cause
            error = exc
            continue
        per_model[(_signature(args, batch_size, dynamic), model.training, mark)] = program
        on_disk.save(dynamic, exported, program)
        return program
    assert error is not None
    raise _capture_error(model, args, error) from error


class _DiskEntries:
    """The disk cache (:mod:`deltalift.capture_cache`) for one capture: the model's part of the
    key is computed once (``None`` when the model cannot be cached, or the cache is off)."""

    def __init__(
        self, model: nn.Module, args: tuple[Any, ...], batch_size: int, mark: str | tuple[str, ...] | None
    ) -> None:
        self.model, self.args, self.batch_size, self.mark = model, args, batch_size, mark
        self.model_part: str | None = None
        if not capture_cache.is_enabled():
            return
        try:
            self.model_part = capture_cache.model_fingerprint(model)
        except capture_cache.NotCacheable as reason:
            _log.debug("deltalift: %s is captured without the disk cache: %s", type(model).__name__, reason)
        except Exception as exc:  # an attribute that cannot be described: capture as before
            _log.debug("deltalift: no disk cache key for %s: %r", type(model).__name__, exc)

    def _key(self, dynamic: bool) -> str:
        assert self.model_part is not None
        signature = _signature(self.args, self.batch_size, dynamic)
        return capture_cache.entry_key(self.model_part, signature, self.mark, dynamic, _capture_code_fingerprint())

    def load(self, dynamic: bool) -> CapturedProgram | None:
        if self.model_part is None:
            return None
        key = self._key(dynamic)
        payload = capture_cache.load(self.model_part, key)
        if payload is None:
            return None
        try:
            program = _from_payload(payload, self.model)
        except Exception as exc:  # an entry that does not give a valid program: capture again
            capture_cache.discard(capture_cache.entry_path(self.model_part, key), exc)
            return None
        return program

    def save(self, dynamic: bool, exported: torch.export.ExportedProgram, program: CapturedProgram) -> None:
        if self.model_part is None:
            return
        try:
            payload = _to_payload(exported, program)
        except capture_cache.NotCacheable as reason:
            _log.debug("deltalift: the graph of %s is not stored on disk: %s", type(self.model).__name__, reason)
            return
        capture_cache.save(self.model_part, self._key(dynamic), payload)


def _to_payload(exported: torch.export.ExportedProgram, program: CapturedProgram) -> dict[str, Any]:
    """A captured program as plain data and tensors: the graph, how its placeholders are fed, and
    the lifted constants; parameters and persistent buffers are read live, so they are not stored."""
    constants: dict[str, torch.Tensor] = {}
    for name, value in program.constants.items():
        if not isinstance(value, torch.Tensor):
            raise capture_cache.NotCacheable(f"the constant {name} is a {type(value).__name__}, not a tensor")
        constants[name] = value.detach()
    described = {
        "graph": capture_cache.encode_graph(program.graph),
        "placeholders": [[kind, key] for kind, key in program.placeholders],
        "user_output_positions": list(program.user_output_positions),
        "batch_dynamic": program.batch_dynamic,
        "model_buffers": [
            spec.target
            for spec in exported.graph_signature.input_specs
            if spec.kind == InputKind.BUFFER and spec.persistent is False and spec.target is not None
        ],
    }
    return {"program": json.dumps(described), "constants": constants}


def _from_payload(payload: dict[str, Any], model: nn.Module) -> CapturedProgram:
    """The program :func:`_to_payload` stored.  Non-persistent buffers are graph constants: they
    are taken from this model, as a capture would (the stored ones are the first model's)."""
    described = json.loads(payload["program"])
    constants = dict(payload["constants"])
    for target in described["model_buffers"]:
        constants[target] = state_value(model, target)
    graph = capture_cache.decode_graph(described["graph"])
    placeholders = [(str(kind), key) for kind, key in described["placeholders"]]
    if len(placeholders) != sum(1 for node in graph.nodes if node.op == "placeholder"):
        raise ValueError("the stored placeholders do not match the stored graph")
    return CapturedProgram(
        graph=graph,
        placeholders=placeholders,
        user_output_positions=[int(i) for i in described["user_output_positions"]],
        constants=constants,
        batch_dynamic=bool(described["batch_dynamic"]),
    )


@functools.lru_cache(maxsize=1)
def _capture_code_fingerprint() -> str:
    """What, besides the model and the torch version (which fixes torch's decomposition table),
    determines a captured graph and how it is stored: the code of this module and of
    :mod:`deltalift.capture_cache`, and the ops kept whole."""
    code = b""
    for path in (__file__, capture_cache.__file__):
        with open(path, "rb") as handle:
            code += handle.read()
    return hashlib.sha256(code + repr(sorted(map(str, KEEP_UNDECOMPOSED))).encode()).hexdigest()


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


def _export(model: nn.Module, args: tuple[Any, ...], batch_size: int, dynamic: bool) -> torch.export.ExportedProgram:
    """``torch.export`` (non-strict, with the batch dimension dynamic when asked) and the
    decompositions of :func:`_decomposition_table`."""
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
    return program.run_decompositions(_decomposition_table())


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


def live_state(model: nn.Module, targets: list[str]) -> dict[str, torch.Tensor]:
    """The model's live parameters and buffers ``targets`` (dotted names), detached, read with one
    walk over the modules (a walk per name costs more than the smaller models' ops)."""
    found: dict[str, torch.Tensor] = dict(model.named_parameters(remove_duplicate=False))
    found.update(model.named_buffers(remove_duplicate=False))
    return {t: (found[t] if t in found else state_value(model, t)).detach() for t in targets}


def state_value(model: nn.Module, target: str) -> torch.Tensor:
    """The model's live parameter or buffer ``target`` (dotted name)."""
    module_path, _, name = target.rpartition(".")
    owner = model.get_submodule(module_path) if module_path else model
    value = getattr(owner, name)
    if not isinstance(value, torch.Tensor):
        raise CaptureError(f"the model's attribute {target} is no longer a tensor")
    return value


def clear_cache(model: Any | None = None) -> None:
    """Forget captured graphs (of one model, or of all) held in memory; for one model, also its
    entries in the disk cache.  Needed after editing a model's code in a way the disk cache's
    key does not see (a helper in another file of an unversioned package); the whole disk cache
    is emptied by :func:`deltalift.capture_cache.clear`."""
    if model is None:
        _cache.clear()
        return
    module = as_module(model)
    _cache.pop(module, None)
    with contextlib.suppress(Exception):  # a model without a disk cache key has no entries
        capture_cache.clear(capture_cache.model_fingerprint(module))
