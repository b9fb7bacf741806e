"""A capture cache on disk, so that a new Python process does not pay ``torch.export`` again.

Capturing a model (``torch.export`` + the core decompositions, :mod:`deltalift.capture`) takes
seconds to tens of seconds; the in-memory cache of :func:`deltalift.capture.capture` lasts as
long as the process.  This module keeps the decomposed program on disk, *without the weights*:
parameters and persistent buffers are graph inputs that every walk reads live from the model,
so the file holds the graph (with the node metadata ``nn_module_stack``, ``stack_trace`` and
``val`` that layer selection and rule plans read), its signature, and the lifted constants.
A ResNet-50 entry is about 0.7 MB, against 100 MB of weights.

What determines the graph is the **key** (:func:`model_fingerprint`, :func:`entry_key`):

- every module of the tree: its path, class, the source code of its classes (``inspect.getsource``
  of each class in the method resolution order outside torch itself, plus a hash of the file
  each is defined in and the version of the package it comes from), its plain attributes
  (numbers, strings, tuples, configuration objects, unregistered tensors by content, functions
  by their code, closure and the globals they read) and its ``training`` flag;
- the names, shapes, dtypes and devices of the parameters and buffers (not their values);
- the input signature (shapes, dtypes, devices, and ``"batch"`` for a dynamic batch size), the
  ``mark`` of a layer capture and whether the batch is dynamic;
- the versions of Python, torch and deltalift, the decomposition table, the ops kept whole
  (:data:`deltalift.rules.KEEP_UNDECOMPOSED`) and the source of :mod:`deltalift.capture`.

Forward hooks count as code (each by its code and closure).  A model whose key cannot be
computed is simply not cached (no error): a class without source, backward or global hooks, or
code that reads a module or a large tensor that is not registered in the model (its values
would be baked into the graph as constants).

**Location**: ``$DELTALIFT_CACHE_DIR``; else ``$XDG_CACHE_HOME/deltalift``; else the platform's
cache folder (``~/.cache/deltalift`` on Linux, ``~/Library/Caches/deltalift`` on macOS,
``%LOCALAPPDATA%\\deltalift\\Cache`` on Windows).  Entries live in its ``captures/`` folder.

**Size bound**: ``$DELTALIFT_CACHE_MAX_SIZE`` (bytes, or with a unit: ``500MB``, ``2GiB``;
default 2 GiB); after each write the least recently used entries are removed until the folder
fits.  **Off switch**: ``DELTALIFT_CACHE=0`` (or ``false``/``no``/``off``), or
:func:`set_enabled` from Python.  Writes go to a temporary file that is renamed into place, so
two processes may write the same entry at once; a file that cannot be read gives one
:class:`CaptureCacheWarning`, is removed, and the model is captured again.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import hashlib
import inspect
import io
import logging
import os
import re
import sys
import tempfile
import time
import types
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = [
    "CaptureCacheWarning",
    "cache_dir",
    "clear",
    "disabled",
    "entry_key",
    "is_enabled",
    "load",
    "max_size",
    "model_fingerprint",
    "parse_size",
    "save",
    "set_enabled",
]

_log = logging.getLogger(__name__)

#: Bumped whenever what an entry holds, or how it is read, changes.
CACHE_FORMAT = 1
DEFAULT_MAX_SIZE = 2 * 1024**3
_SUFFIX = ".pt"
#: Temporary files older than this (seconds) are left-overs of a writer that died.
_STALE_TEMP_SECONDS = 3600.0
#: Unregistered tensors up to this many elements are hashed into the key; larger ones make a
#: model uncacheable (their values become constants of the graph).
_MAX_HASHED_NUMEL = 1 << 20
_MAX_DEPTH = 8


class CaptureCacheWarning(UserWarning):
    """An entry of the capture cache on disk could not be read or written."""


class NotCacheable(Exception):
    """The key of a model cannot be computed safely: it is captured without the disk cache."""


# --------------------------------------------------------------------------- switches, location


_enabled_override: bool | None = None


def set_enabled(enabled: bool | None) -> None:
    """Turn the disk cache on (``True``) or off (``False``) for this process; ``None`` goes
    back to the environment (``DELTALIFT_CACHE``, on unless ``0``/``false``/``no``/``off``)."""
    global _enabled_override
    if enabled is not None and not isinstance(enabled, bool):
        raise TypeError(f"set_enabled takes True, False or None, got {type(enabled).__name__}")
    _enabled_override = enabled


def is_enabled() -> bool:
    """Whether captures are read from and written to disk now."""
    if _enabled_override is not None:
        return _enabled_override
    return os.environ.get("DELTALIFT_CACHE", "1").strip().lower() not in ("0", "false", "no", "off")


@contextlib.contextmanager
def disabled() -> Iterator[None]:
    """A block in which the disk cache is neither read nor written."""
    before = _enabled_override
    set_enabled(False)
    try:
        yield
    finally:
        set_enabled(before)


def cache_dir() -> Path:
    """The cache folder: ``$DELTALIFT_CACHE_DIR``, else ``$XDG_CACHE_HOME/deltalift``, else the
    platform's user cache folder (see the module docstring)."""
    explicit = os.environ.get("DELTALIFT_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg:
        return Path(xdg).expanduser() / "deltalift"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / "deltalift"
    if sys.platform == "win32":
        local = os.environ.get("LOCALAPPDATA")
        base = Path(local) if local else Path.home() / "AppData" / "Local"
        return base / "deltalift" / "Cache"
    return Path.home() / ".cache" / "deltalift"


def _entries_dir() -> Path:
    return cache_dir() / "captures"


_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "m": 1000**2,
    "mb": 1000**2,
    "g": 1000**3,
    "gb": 1000**3,
    "t": 1000**4,
    "tb": 1000**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}


def parse_size(text: str) -> int:
    """Bytes from ``"2147483648"``, ``"500MB"`` (10^6), ``"2GiB"`` (2^30), ``"1.5 GB"``, ...

    Raises ``ValueError`` naming the text when it is not a non-negative size."""
    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]*)?)\s*([A-Za-z]*)\s*", text)
    unit = match.group(2).lower() if match else ""
    if match is None or unit not in _UNITS:
        raise ValueError(
            f"cannot read the cache size {text!r}: give a number of bytes, optionally with a unit "
            "(KB, MB, GB, TB for powers of 1000; KiB, MiB, GiB, TiB for powers of 1024)"
        )
    return int(float(match.group(1)) * _UNITS[unit])


def max_size() -> int:
    """The size bound of the cache folder in bytes (``$DELTALIFT_CACHE_MAX_SIZE``, default 2 GiB)."""
    text = os.environ.get("DELTALIFT_CACHE_MAX_SIZE")
    if not text:
        return DEFAULT_MAX_SIZE
    try:
        return parse_size(text)
    except ValueError as exc:
        raise ValueError(f"DELTALIFT_CACHE_MAX_SIZE: {exc}") from None


# --------------------------------------------------------------------------- the key


def _sha(*parts: Any) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part if isinstance(part, bytes) else str(part).encode())
        digest.update(b"\0")
    return digest.hexdigest()


@functools.lru_cache(maxsize=256)
def _file_hash(path: str, mtime_ns: int, size: int) -> str:
    with open(path, "rb") as handle:
        return hashlib.sha256(handle.read()).hexdigest()


def _package_version(module_name: str) -> str:
    top = sys.modules.get(module_name.partition(".")[0])
    return str(getattr(top, "__version__", ""))


def _is_torch_code(module_name: str) -> bool:
    return module_name == "torch" or module_name.startswith("torch.")


_class_fingerprints: dict[type, str] = {}


def _class_fingerprint(cls: type) -> str:
    """The source of every class of ``cls``'s method resolution order outside torch (whose
    code the torch version stands for), the hash of the files they live in, and the versions
    of their packages."""
    if cls in _class_fingerprints:
        return _class_fingerprints[cls]
    parts: list[str] = []
    for base in cls.__mro__:
        if base is object or _is_torch_code(base.__module__):
            parts.append(f"{base.__module__}.{base.__qualname__}")
            continue
        try:
            source = inspect.getsource(base)
        except (OSError, TypeError) as exc:
            raise NotCacheable(f"the source of class {base.__qualname__} is not available ({exc})") from None
        parts.append(f"{base.__module__}.{base.__qualname__}:{_sha(source)}:{_package_version(base.__module__)}")
        with contextlib.suppress(OSError, TypeError):
            path = inspect.getsourcefile(base)
            if path and os.path.isfile(path):
                stat = os.stat(path)
                parts.append(_file_hash(path, stat.st_mtime_ns, stat.st_size))
    result = _sha(*parts)
    _class_fingerprints[cls] = result
    return result


def _methods(cls: type) -> list[types.FunctionType]:
    found: list[types.FunctionType] = []
    for value in vars(cls).values():
        if isinstance(value, (staticmethod, classmethod)):
            value = value.__func__
        elif isinstance(value, property):
            value = value.fget
        if isinstance(value, types.FunctionType):
            found.append(value)
    return found


_SIMPLE = (bool, int, float, complex, str, bytes, type(None), torch.dtype, torch.device)


def _class_state(cls: type, fingerprinter: _Fingerprinter) -> str:
    """What the source of ``cls`` does not show: the code of its methods as they are now (a
    method replaced at run time), the values they close over (a class made in a factory
    function), and the current values of the module globals they read when those are data
    (flags, numbers, tensors), which can change while the file does not."""
    parts: list[str] = []
    for base in cls.__mro__:
        if base is object or _is_torch_code(base.__module__):
            continue
        for method in _methods(base):
            parts.append(f"{method.__qualname__}:{_code_fingerprint(method.__code__, fingerprinter, 0)}")
            for cell in method.__closure__ or ():
                try:
                    contents = cell.cell_contents
                except ValueError:  # an empty cell
                    contents = None
                if contents is not base:  # ``super()`` closes over the class itself
                    parts.append(fingerprinter.value(contents))
            for name in _global_names(method.__code__):
                value = method.__globals__.get(name)
                if isinstance(value, _SIMPLE) or isinstance(value, (torch.Tensor, tuple, list, dict, nn.Module)):
                    parts.append(f"{name}={fingerprinter.value(value)}")
    return _sha(*parts) if parts else ""


def _tensor_fingerprint(value: torch.Tensor) -> str:
    if value.numel() > _MAX_HASHED_NUMEL:
        raise NotCacheable(f"the model holds an unregistered tensor of shape {tuple(value.shape)}")
    if value.device.type == "meta":
        return f"tensor{tuple(value.shape)}:{value.dtype}:meta"
    data = value.detach().to("cpu").contiguous().reshape(-1)
    raw = data.view(torch.uint8).numpy().tobytes() if data.numel() else b""
    return f"tensor{tuple(value.shape)}:{value.dtype}:{value.device.type}:{_sha(raw)}"


def _code_fingerprint(code: types.CodeType, context: _Fingerprinter, depth: int) -> str:
    consts = [
        _code_fingerprint(c, context, depth + 1) if isinstance(c, types.CodeType) else repr(c) for c in code.co_consts
    ]
    return _sha(code.co_code, *consts, *code.co_names, code.co_argcount, code.co_kwonlyargcount)


class _Fingerprinter:
    """Turns the plain attributes of modules (and what functions read) into text for the key."""

    def __init__(self, registered: dict[int, str]) -> None:
        self.registered = registered  # id(module) -> path, for the modules of the tree
        self.active: set[int] = set()

    def value(self, value: Any, depth: int = 0) -> str:
        if depth > _MAX_DEPTH:
            raise NotCacheable("an attribute of the model is nested too deeply to be hashed")
        if value is None or isinstance(value, (bool, int, float, complex, str, bytes)):
            return f"{type(value).__name__}:{value!r}"
        if isinstance(value, (torch.dtype, torch.device, torch.layout, torch.memory_format)):
            return repr(value)
        if isinstance(value, torch.Tensor):
            return _tensor_fingerprint(value)
        if type(value).__module__ == "numpy" and hasattr(value, "tobytes"):  # arrays and scalars
            return _tensor_fingerprint(torch.as_tensor(value))
        if isinstance(value, nn.Module):
            if id(value) in self.registered:
                return f"module:{self.registered[id(value)]}"
            raise NotCacheable(f"the model's code reads a {type(value).__name__} that is not one of its submodules")
        if id(value) in self.active:
            return "cycle"
        self.active.add(id(value))
        try:
            return self._composite(value, depth)
        finally:
            self.active.discard(id(value))

    def _composite(self, value: Any, depth: int) -> str:
        if isinstance(value, (list, tuple)):
            return f"{type(value).__name__}[" + ",".join(self.value(v, depth + 1) for v in value) + "]"
        if isinstance(value, (set, frozenset)):
            return "set{" + ",".join(sorted(self.value(v, depth + 1) for v in value)) + "}"
        if isinstance(value, dict):
            items = sorted((self.value(k, depth + 1), self.value(v, depth + 1)) for k, v in value.items())
            return "dict{" + ",".join(f"{k}={v}" for k, v in items) + "}"
        if isinstance(value, type):
            if issubclass(value, nn.Module):
                return f"class:{_class_fingerprint(value)}"
            return f"class:{value.__module__}.{value.__qualname__}"
        if isinstance(value, types.FunctionType):
            return self.function(value, depth)
        if isinstance(value, types.MethodType):
            return f"method:{self.value(value.__self__, depth + 1)}:{self.function(value.__func__, depth)}"  # type: ignore[arg-type]
        if isinstance(value, functools.partial):
            return "partial:" + self.value((value.func, value.args, value.keywords), depth + 1)
        if isinstance(value, types.ModuleType):
            return f"pymodule:{value.__name__}"
        if callable(value) and not hasattr(value, "__dict__"):  # builtins, torch ops
            name = getattr(value, "__qualname__", None) or getattr(value, "__name__", None) or repr(value)
            return f"builtin:{getattr(value, '__module__', '')}.{name}"
        if hasattr(value, "__dict__"):  # configuration objects, enums, dataclasses
            cls = type(value)
            return f"object:{cls.__module__}.{cls.__qualname__}:" + self.value(dict(vars(value)), depth + 1)
        text = repr(value)
        if " at 0x" in text:
            raise NotCacheable(f"an attribute of type {type(value).__name__} has no stable description")
        return f"{type(value).__name__}:{text}"

    def function(self, fn: types.FunctionType, depth: int) -> str:
        """A function by its code, defaults, closure and the globals it names."""
        if _is_torch_code(getattr(fn, "__module__", "") or ""):
            return f"function:{fn.__module__}.{fn.__qualname__}"
        parts = [f"{fn.__module__}.{fn.__qualname__}", _code_fingerprint(fn.__code__, self, depth)]
        parts.append(self.value((fn.__defaults__, fn.__kwdefaults__), depth + 1))
        for cell in fn.__closure__ or ():
            try:
                contents = cell.cell_contents
            except ValueError:  # an empty cell
                contents = None
            parts.append(self.value(contents, depth + 1))
        for name in _global_names(fn.__code__):
            if name in fn.__globals__:
                parts.append(f"{name}={self.value(fn.__globals__[name], depth + 1)}")
        return "function:" + _sha(*parts)


def _global_names(code: types.CodeType) -> list[str]:
    names = list(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names.extend(_global_names(const))
    return sorted(set(names))


#: Attributes every module has: handled on their own (parameters, buffers, submodules, hooks).
_MODULE_INTERNALS = frozenset(vars(nn.Module())) | {"training"}


def _hooks(module: nn.Module, fingerprinter: _Fingerprinter) -> str:
    """Forward hooks change what export records: each one by its code (and closure), in order,
    with the flags it was registered with.  Backward hooks make a model uncacheable."""
    if getattr(module, "_backward_hooks", None) or getattr(module, "_backward_pre_hooks", None):
        raise NotCacheable("the model has backward hooks")
    parts: list[str] = []
    for name in ("_forward_pre_hooks", "_forward_hooks"):
        hooks = getattr(module, name, None) or {}
        with_kwargs = getattr(module, f"{name}_with_kwargs", None) or {}
        always = getattr(module, "_forward_hooks_always_called", None) or {}
        for handle_id, hook in hooks.items():
            flags = f"{handle_id in with_kwargs}:{handle_id in always}"
            parts.append(f"{name}:{flags}:{fingerprinter.value(hook)}")
    return ";".join(parts)


def model_fingerprint(model: nn.Module) -> str:
    """The part of the key that the model determines (classes, code, attributes, state shapes).

    Raises :class:`NotCacheable` when it cannot be computed safely."""
    from torch.nn.modules import module as module_globals

    if module_globals._global_forward_hooks or module_globals._global_forward_pre_hooks:
        raise NotCacheable("global forward hooks are installed")
    modules = list(model.named_modules(remove_duplicate=False))
    registered = {id(m): path for path, m in reversed(modules)}
    fingerprinter = _Fingerprinter(registered)
    parts: list[str] = []
    for path, module in modules:
        attributes = {k: v for k, v in vars(module).items() if k not in _MODULE_INTERNALS}
        parts.append(
            f"{path}|{_class_fingerprint(type(module))}|{_class_state(type(module), fingerprinter)}"
            f"|{module.training}|{fingerprinter.value(attributes)}"
            f"|{_hooks(module, fingerprinter)}"
        )
        for name, param in module._parameters.items():
            described = "None" if param is None else f"{tuple(param.shape)}:{param.dtype}:{param.device.type}"
            parts.append(f"{path}.{name}:param:{described}")
        for name, buffer in module._buffers.items():
            persistent = name not in module._non_persistent_buffers_set
            described = "None" if buffer is None else f"{tuple(buffer.shape)}:{buffer.dtype}:{buffer.device.type}"
            parts.append(f"{path}.{name}:buffer:{persistent}:{described}")
    return _sha(*parts)


def entry_key(model_part: str, signature: Any, mark: Any, dynamic: bool, graph_rules: str) -> str:
    """The key of one entry: the model's fingerprint, the input signature, the layer mark, the
    batch mode, the capture code (``graph_rules``) and the versions of Python, torch, deltalift."""
    from deltalift import __version__

    return _sha(
        CACHE_FORMAT,
        sys.version,
        torch.__version__,
        __version__,
        model_part,
        repr(signature),
        repr(mark),
        dynamic,
        graph_rules,
    )


def _entry_name(model_part: str, key: str) -> str:
    return f"{model_part[:16]}-{key[:48]}{_SUFFIX}"


# --------------------------------------------------------------------------- the graph as plain data


def _encode_target(target: Any) -> list[Any]:
    if isinstance(target, torch._ops.OpOverload):
        packet = target._schema.name  # "aten::relu"
        return ["op", packet, target._overloadname]
    module = str(getattr(target, "__module__", None) or "")
    name = str(getattr(target, "__qualname__", None) or getattr(target, "__name__", ""))
    if module.partition(".")[0] in _TARGET_MODULES and "<" not in name and _resolve(module, name) is target:
        return ["fn", module, name]
    raise NotCacheable(f"the graph calls {target!r}, which the disk cache cannot store")


#: Modules whose functions may appear as graph targets (``operator.getitem``, ``torch.sym_max``, ...).
_TARGET_MODULES = frozenset({"operator", "math", "builtins", "_operator", "torch"})


def _resolve(module: str, name: str) -> Any:
    owner: Any = sys.modules.get(module)
    if owner is None:
        return None
    for part in name.split("."):
        owner = getattr(owner, part, None)
    return owner


def _decode_target(data: list[Any]) -> Any:
    if data[0] == "op":
        namespace, _, name = data[1].partition("::")
        return getattr(getattr(getattr(torch.ops, namespace), name), data[2])
    if data[0] == "fn" and data[1].partition(".")[0] in _TARGET_MODULES:
        found = _resolve(data[1], data[2])
        if found is not None:
            return found
    raise ValueError(f"unknown graph target {data!r}")


_ENUMS: dict[str, Any] = {
    "dtype": torch.dtype,
    "layout": torch.layout,
    "memory_format": torch.memory_format,
}


def _encode_value(value: Any) -> Any:
    """A graph argument as str/int/float/bool/None or a tagged list (nodes by name)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, torch.fx.Node):
        return ["node", value.name]
    if isinstance(value, (list, tuple)):
        return ["list" if isinstance(value, list) else "tuple", [_encode_value(v) for v in value]]
    if isinstance(value, dict):
        return ["dict", [[_encode_value(k), _encode_value(v)] for k, v in value.items()]]
    if isinstance(value, slice):
        return ["slice", [_encode_value(value.start), _encode_value(value.stop), _encode_value(value.step)]]
    if isinstance(value, torch.device):
        return ["device", str(value)]
    for tag, kind in _ENUMS.items():
        if isinstance(value, kind):
            return [tag, str(value).removeprefix("torch.")]
    raise NotCacheable(f"the graph has an argument of type {type(value).__name__}, which the disk cache cannot store")


def _decode_value(data: Any, nodes: dict[str, torch.fx.Node]) -> Any:
    if not isinstance(data, list):
        return data
    tag, body = data
    if tag == "node":
        return nodes[body]
    if tag in ("list", "tuple"):
        items = [_decode_value(v, nodes) for v in body]
        return items if tag == "list" else tuple(items)
    if tag == "dict":
        return {_decode_value(k, nodes): _decode_value(v, nodes) for k, v in body}
    if tag == "slice":
        return slice(*(_decode_value(v, nodes) for v in body))
    if tag == "device":
        return torch.device(body)
    if tag in _ENUMS:
        found = getattr(torch, body)
        if not isinstance(found, _ENUMS[tag]):
            raise ValueError(f"torch.{body} is not a {tag}")
        return found
    raise ValueError(f"unknown value tag {tag!r}")


def _hint(size: Any) -> int:
    if isinstance(size, torch.SymInt):
        from torch.fx.experimental.symbolic_shapes import optimization_hint

        return int(optimization_hint(size, fallback=2))
    return int(size)


def _encode_val(value: Any) -> Any:
    """``node.meta["val"]``: a tensor by dtype, shape and strides (a symbolic size by the value
    export saw), a symbolic number by that value."""
    if isinstance(value, torch.Tensor):
        return [
            "tensor",
            [
                str(value.dtype).removeprefix("torch."),
                [_hint(n) for n in value.shape],
                [_hint(n) for n in value.stride()] if value.layout == torch.strided else None,
                value.device.type,
            ],
        ]
    if isinstance(value, (torch.SymInt, torch.SymFloat, torch.SymBool)):
        return ["sym", [type(value).__name__, str(value)]]
    if isinstance(value, (list, tuple)):
        return ["list" if isinstance(value, list) else "tuple", [_encode_val(v) for v in value]]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return ["opaque", type(value).__name__]


class SymbolicValue:
    """What a restored graph holds in ``node.meta["val"]`` for a symbolic size or number: its
    type (``SymInt``, ...) and its expression as export printed it."""

    def __init__(self, kind: str, expression: str) -> None:
        self.kind, self.expression = kind, expression

    def __repr__(self) -> str:
        return f"{self.kind}({self.expression})"


def _decode_val(data: Any) -> Any:
    if not isinstance(data, list):
        return data
    tag, body = data
    if tag == "tensor":
        dtype_name, shape, stride, _device = body
        dtype = getattr(torch, dtype_name)
        if stride is None:
            return torch.empty(shape, dtype=dtype, device="meta")
        return torch.empty_strided(shape, stride, dtype=dtype, device="meta")
    if tag == "sym":
        return SymbolicValue(*body)
    if tag in ("list", "tuple"):
        items = [_decode_val(v) for v in body]
        return items if tag == "list" else tuple(items)
    return None


def _encode_stack(stack: Any) -> Any:
    if not isinstance(stack, dict):
        return None
    return [
        [str(key), str(path), t if isinstance(t, str) else f"{t.__module__}.{t.__qualname__}"]
        for key, (path, t) in stack.items()
    ]


def encode_graph(graph: torch.fx.Graph) -> list[list[Any]]:
    """The graph as plain data: per node its op, name, target, arguments and the metadata that
    deltalift reads (``nn_module_stack``, ``stack_trace``, ``val``).

    Raises :class:`NotCacheable` for a graph with a target or argument it cannot store (a
    submodule, a higher-order op)."""
    encoded: list[list[Any]] = []
    for node in graph.nodes:
        if node.op not in ("placeholder", "call_function", "output"):
            raise NotCacheable(f"the graph has a {node.op} node ({node.name})")
        target = node.target if node.op != "call_function" else _encode_target(node.target)
        meta = {
            "nn_module_stack": _encode_stack(node.meta.get("nn_module_stack")),
            "stack_trace": node.meta.get("stack_trace"),
            "val": _encode_val(node.meta.get("val")),
        }
        encoded.append([node.op, node.name, target, _encode_value(node.args), _encode_value(node.kwargs), meta])
    return encoded


def decode_graph(encoded: list[list[Any]]) -> torch.fx.Graph:
    """The graph :func:`encode_graph` described, with the same node names; tensor values in
    ``meta["val"]`` are tensors on the meta device with the shapes export saw.

    The garbage collector is paused meanwhile: building the nodes allocates many small objects,
    and with a large model in memory its collections cost ten times the decoding."""
    paused = gc.isenabled()
    gc.disable()
    try:
        return _decode_graph(encoded)
    finally:
        if paused:
            gc.enable()


def _decode_graph(encoded: list[list[Any]]) -> torch.fx.Graph:
    graph = torch.fx.Graph()
    nodes: dict[str, torch.fx.Node] = {}
    for op, name, target, args, kwargs, meta in encoded:
        fn = _decode_target(target) if op == "call_function" else target
        node = graph.create_node(op, fn, _decode_value(args, nodes), _decode_value(kwargs, nodes), name=name)
        if node.name != name:  # fx avoids names such as ``input`` (a builtin); export keeps them
            if name in nodes:
                raise ValueError(f"two nodes are named {name!r}")
            node.name = name
        nodes[name] = node
        if meta["nn_module_stack"] is not None:
            node.meta["nn_module_stack"] = {key: (path, t) for key, path, t in meta["nn_module_stack"]}
        if meta["stack_trace"] is not None:
            node.meta["stack_trace"] = meta["stack_trace"]
        if meta["val"] is not None:
            node.meta["val"] = _decode_val(meta["val"])
    graph.lint()
    return graph


# --------------------------------------------------------------------------- reading and writing


def _warn(message: str) -> None:
    warnings.warn(message, CaptureCacheWarning, stacklevel=4)


def _remove(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()


def load(model_part: str, key: str) -> dict[str, Any] | None:
    """The payload stored under ``key``, or ``None`` on a miss.

    An entry that cannot be read (a truncated or corrupted file, one written by an incompatible
    version) gives one :class:`CaptureCacheWarning` and is removed.  Files are read with
    ``torch.load(weights_only=True)``: plain data and tensors, no code."""
    if not is_enabled():
        return None
    path = _entries_dir() / _entry_name(model_part, key)
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except FileNotFoundError:
        return None
    except OSError as exc:
        _warn(f"deltalift: cannot read the capture cache entry {path} ({exc}); the model is captured again")
        return None
    try:
        payload = torch.load(io.BytesIO(data), weights_only=True)
        if not isinstance(payload, dict) or payload.get("key") != key or payload.get("format") != CACHE_FORMAT:
            raise ValueError("the entry was written for another key or by another version")
    except Exception as exc:  # torch.load raises many types on a damaged file
        discard(path, exc)
        return None
    with contextlib.suppress(OSError):
        os.utime(path)  # the entry was used now: evicted last
    return payload


def discard(path: Path | str, reason: BaseException) -> None:
    """Remove an entry that cannot be used, with one :class:`CaptureCacheWarning` naming it."""
    _remove(Path(path))
    text = str(reason).strip()
    _warn(
        f"deltalift: the capture cache entry {path} could not be read ({type(reason).__name__}: "
        f"{text.splitlines()[0] if text else 'no details'}); it was removed and the model is "
        "captured again (set DELTALIFT_CACHE=0 to turn the disk cache off)"
    )


def entry_path(model_part: str, key: str) -> Path:
    """Where the entry of ``key`` is stored."""
    return _entries_dir() / _entry_name(model_part, key)


def save(model_part: str, key: str, payload: dict[str, Any]) -> Path | None:
    """Store ``payload`` (plain data and tensors) under ``key``, then keep the folder within
    :func:`max_size`.  A failure to write gives a :class:`CaptureCacheWarning`, never an error."""
    if not is_enabled():
        return None
    folder = _entries_dir()
    path = folder / _entry_name(model_part, key)
    temp: str | None = None
    try:
        folder.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        torch.save(dict(payload, key=key, format=CACHE_FORMAT), buffer)
        handle, temp = tempfile.mkstemp(dir=folder, prefix=".write-", suffix=".tmp")
        with os.fdopen(handle, "wb") as out:
            out.write(buffer.getvalue())
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, path)  # atomic: a reader sees the old entry, or the whole new one
        temp = None
    except Exception as exc:  # a full disk, a read-only folder
        _warn(f"deltalift: could not write the capture cache entry {path} ({type(exc).__name__}: {exc})")
        return None
    finally:
        if temp is not None:
            _remove(Path(temp))
    evict(max_size())
    return path if path.exists() else None


def _entries() -> list[Path]:
    folder = _entries_dir()
    if not folder.is_dir():
        return []
    return [p for p in folder.iterdir() if p.suffix == _SUFFIX and p.is_file()]


def evict(limit: int) -> list[Path]:
    """Remove the least recently used entries until the entries take at most ``limit`` bytes
    (and temporary files left by writers that died); returns the removed entries."""
    folder = _entries_dir()
    if folder.is_dir():
        now = time.time()
        for temp in folder.glob(".write-*.tmp"):
            with contextlib.suppress(OSError):
                if now - temp.stat().st_mtime > _STALE_TEMP_SECONDS:
                    temp.unlink()
    sized: list[tuple[float, int, Path]] = []
    for path in _entries():
        with contextlib.suppress(OSError):
            stat = path.stat()
            sized.append((stat.st_mtime, stat.st_size, path))
    sized.sort()
    total = sum(size for _, size, _ in sized)
    removed: list[Path] = []
    for _, size, path in sized:
        if total <= limit:
            break
        _remove(path)
        removed.append(path)
        total -= size
    return removed


def clear(model_part: str | None = None) -> int:
    """Remove every entry (or those of one model fingerprint); returns how many were removed."""
    count = 0
    for path in _entries():
        if model_part is None or path.name.startswith(model_part[:16] + "-"):
            _remove(path)
            count += 1
    return count
