"""The fast path of the DeepLIFT walk: the whole call recorded once as one flat ATen program.

The interpreter (:func:`deltalift.engine.run_graph`) walks the captured graph node by node and
calls each op's rule in Python; autograd then runs the rules' backward functions.  For a given
input signature, rule choice and target, that walk always performs the same ATen operations
(forward at the input, forward at the reference, the multipliers of every nonlinearity, and
the backward pass that composes them by the chain rule, Shrikumar et al. 2017, section 3.2).
This module records that sequence once, below autograd, with a
:class:`~torch.utils._python_dispatch.TorchDispatchMode`, as a :class:`torch.fx.Graph` whose
inputs are the live parameters and buffers, the inputs, the references and (if a tensor) the
target, and whose outputs are ``t(x)``, ``t(x0)`` and the multipliers.  That program is then
either replayed (``backend="traced"``: no rule dispatch, no autograd bookkeeping, and element-wise
ops writing into an argument that dies there rather than into a fresh tensor,
:mod:`deltalift.buffer_reuse`) or handed to :func:`torch.compile` (``backend="compiled"``:
inductor fuses the element-wise multiplier math into the surrounding kernels).

Soundness.  The rules take a few decisions from the data: whether any position is near zero
(``near_zero``), whether rows of a DeepLIFT-SHAP batch are equal, whether the outputs are
finite.  Each such decision (an op tagged ``data_dependent_output``: ``item``, ``equal``,
``is_nonzero``) becomes a *guard*: the program also computes the value the decision was taken
on, and a call whose guards do not all hold at the recorded values is recomputed by the
interpreter (and the program recorded again, up to :data:`MAX_RECORDINGS` times per
signature).  A decision that changes from call to call on ordinary data is taken inside one
operator instead (:mod:`deltalift.rules.operators`: ReLU's ``0 / 0`` where an input equals its
reference), which the program records and replays like any other, with no guard; or inside one
step of the program (:func:`one_step`: the general Rescale fallback of a pointwise function).
An op whose output shape depends on the data (``nonzero``, boolean indexing) gets a shape
guard.  A tensor that appears during recording without having been produced by a recorded op
or given as an input (which would be baked in as a constant) is accepted only if it is small (a
scalar made by a rule from a guarded value); otherwise the call is refused and the interpreter
runs.  So the fast path either gives the interpreter's values (to rounding of
the compiled kernels) or falls back to it; ``tests/test_fast_path.py`` checks this on the
architecture matrix in float64 to 1e-10.

The choice, :data:`BACKENDS`: ``"interpreter"`` (the reference implementation), ``"traced"``,
``"compiled"``, or ``"auto"``: the interpreter for a signature's first call, then
:func:`default_backend` (``"traced"``), overridable with the environment variable
``DELTALIFT_BACKEND`` or :func:`set_default_backend`.  Inductor's on-disk
cache is pointed to ``<deltalift cache>/inductor`` (:func:`deltalift.capture_cache.cache_dir`) unless
``TORCHINDUCTOR_CACHE_DIR`` is set, so a compiled program's kernels survive the process.
"""

from __future__ import annotations

import math
import operator
import os
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils import _python_dispatch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.weak import WeakTensorKeyDictionary

from deltalift import buffer_reuse, capture_cache

Tensor = torch.Tensor
aten = torch.ops.aten

#: The backends of a DeepLIFT call.
BACKENDS = ("auto", "interpreter", "traced", "compiled")
#: How often one signature is recorded again after its guards failed, before the interpreter
#: takes over for good.
MAX_RECORDINGS = 3
#: Recorded programs kept per captured program (one per input signature, rule choice, target).
MAX_PROGRAMS = 16
#: The largest tensor (in elements) that may enter a recording as a constant without having
#: been produced by a recorded op.
MAX_CONSTANT_NUMEL = 16

#: The ``torch.compile`` backend of ``backend="compiled"`` (tests use ``"aot_eager"``).
compile_backend = "inductor"

_default_override: str | None = None


def check_backend(backend: str) -> None:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")


def set_default_backend(backend: str | None) -> None:
    """Set the backend that ``backend="auto"`` means, for every device (``None``: per device,
    as :func:`default_backend` documents)."""
    if backend is not None:
        check_backend(backend)
        if backend == "auto":
            backend = None
    global _default_override
    _default_override = backend


def default_backend(device: torch.device) -> str:
    """What ``backend="auto"`` means on ``device``.

    ``set_default_backend`` wins, then the environment variable ``DELTALIFT_BACKEND``; else
    ``"traced"`` on every device (under ``"auto"`` the first call of a signature is always
    interpreted, so a signature explained once never pays for a recording).  On the CPU the
    replayed program was measured faster than the interpreter on every architecture of
    ``benchmarks/bench_deeplift.py`` (the rules' Python per op is gone), and ``"compiled"`` took
    a minute to compile a ResNet-18 and was not faster (``docs/performance.md``).
    """
    if _default_override is not None:
        return _default_override
    from_env = os.environ.get("DELTALIFT_BACKEND")
    if from_env:
        check_backend(from_env)
        if from_env != "auto":
            return from_env
    return "traced"


def _point_inductor_cache() -> None:
    if not os.environ.get("TORCHINDUCTOR_CACHE_DIR"):
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(capture_cache.cache_dir() / "inductor")


class RecordingRefused(Exception):
    """The walk cannot be recorded soundly (the interpreter runs instead)."""


class GuardFailed(Exception):
    """A recorded decision or shape does not hold for this call's data."""


def _expect_shape(value: Tensor, shape: tuple[int, ...]) -> Tensor:
    """A shape guard: ``value`` if its shape is the recorded one, else :class:`GuardFailed`."""
    if tuple(value.shape) != shape:
        raise GuardFailed(f"a data-dependent shape changed from {shape} to {tuple(value.shape)}")
    return value


def _storage_key(t: Tensor) -> tuple[Any, ...]:
    return (t.untyped_storage().data_ptr(), tuple(t.shape), t.stride(), t.storage_offset(), t.dtype, t.device)


def _equal(a: Tensor, b: Tensor) -> Tensor:
    """``torch.equal`` as a tensor (a guard of the recorded program)."""
    return torch.tensor(torch.equal(a, b))


class _Recorder(TorchDispatchMode):
    """Runs every ATen op it sees and appends it to ``graph``; tensors are mapped to the nodes
    that produced them (weakly, so that recording frees values as the walk does)."""

    def __init__(self) -> None:
        super().__init__()
        self.graph = torch.fx.Graph()
        self.nodes: WeakTensorKeyDictionary = WeakTensorKeyDictionary()
        self.aliases: dict[tuple[Any, ...], tuple[weakref.ref[Tensor], torch.fx.Node]] = {}
        self.constants: dict[str, Tensor] = {}
        self.guards: list[tuple[torch.fx.Node, Any]] = []
        self.storages = buffer_reuse.StorageIdentities()

    def bind(self, t: Tensor, node: torch.fx.Node) -> None:
        self.nodes[t] = node
        if node.op in ("placeholder", "get_attr"):
            node.meta["kept_bytes"] = 0  # live anyway
        elif t.layout == torch.strided:
            node.meta["kept_bytes"] = t.untyped_storage().nbytes()  # a view keeps its whole storage
        node.meta["shape"] = tuple(t.shape)
        if t.layout == torch.strided and t.device.type != "meta":
            self.aliases[_storage_key(t)] = (weakref.ref(t), node)
            node.meta["storage_id"], node.meta["layout"] = self.storages.of(t), buffer_reuse.layout(t)

    def node_of(self, t: Tensor, allow_constant: bool = True) -> torch.fx.Node:
        """The node that made ``t``; an unseen small tensor becomes a constant of the program
        (unless ``allow_constant`` is false), an unseen large one refuses the recording."""
        node = self.nodes.get(t)
        if node is not None:
            return node  # type: ignore[no-any-return]
        alias = self.aliases.get(_storage_key(t)) if t.layout == torch.strided else None
        if alias is not None:
            original = alias[0]()
            if original is not None and original.untyped_storage().data_ptr() == t.untyped_storage().data_ptr():
                return alias[1]
        if t.numel() > MAX_CONSTANT_NUMEL or not allow_constant:
            raise RecordingRefused(f"a tensor of shape {tuple(t.shape)} entered the walk from outside the recording")
        name = f"_constant_{len(self.constants)}"
        self.constants[name] = t.detach().clone()
        node = self.graph.get_attr(name)
        self.bind(t, node)
        return node

    def _arg(self, value: Any) -> Any:
        if isinstance(value, Tensor):
            return self.node_of(value)
        if isinstance(value, (list, tuple)):
            mapped = [self._arg(v) for v in value]
            return mapped if isinstance(value, list) else tuple(mapped)
        if isinstance(value, dict):
            return {k: self._arg(v) for k, v in value.items()}
        return value

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        tags = getattr(func, "tags", ())
        if torch.Tag.nondeterministic_seeded in tags:
            raise RecordingRefused(f"{func} draws random numbers")
        out = func(*args, **kwargs)
        if torch.Tag.data_dependent_output in tags:
            self._guard(func, args, out)
            return out
        if func is aten.empty_like.default and isinstance(out, Tensor) and out.layout == torch.strided:
            # empty_like reads no data: recorded as a factory of the recorded shape and strides
            layout: dict[str, Any] = {"dtype": out.dtype, "layout": out.layout, "device": out.device}
            node = self.graph.call_function(aten.empty_strided.default, (tuple(out.shape), out.stride()), layout)
        else:
            node = self.graph.call_function(func, self._arg(args), self._arg(kwargs))
        if torch.Tag.dynamic_output_shape in tags:
            if not isinstance(out, Tensor):
                raise RecordingRefused(f"{func} returns a data-dependent structure")
            node = self.graph.call_function(_expect_shape, (node, tuple(out.shape)))
        if isinstance(out, Tensor):
            self.bind(out, node)
        elif isinstance(out, (tuple, list)):
            for i, value in enumerate(out):
                if isinstance(value, Tensor):
                    self.bind(value, self.graph.call_function(operator.getitem, (node, i)))
        return out

    def _guard(self, func: Any, args: Any, out: Any) -> None:
        """A decision taken from the data: the program computes the value it was taken on, and
        a call where it differs is recomputed by the interpreter."""
        if func in (aten._local_scalar_dense.default, aten.is_nonzero.default):
            value = self.node_of(args[0])
            expected = bool(out) if func is aten.is_nonzero.default else out
            if func is aten.is_nonzero.default:
                value = self.graph.call_function(aten.ne.Scalar, (value, 0))
            self.guards.append((value, expected))
        elif func is aten.equal.default:
            a, b = args[0], args[1]
            if a.shape != b.shape or a.dtype != b.dtype:
                return  # decided by the (recorded) shapes alone
            if a.device.type == "cpu":  # one pass that stops at the first difference, no boolean tensor
                same = self.graph.call_function(_equal, (self.node_of(a), self.node_of(b)))
            else:  # on an accelerator: no synchronisation per guard
                same = self.graph.call_function(aten.eq.Tensor, (self.node_of(a), self.node_of(b)))
                same = self.graph.call_function(aten.all.default, (same,))
            self.guards.append((same, bool(out)))
        else:
            raise RecordingRefused(f"{func} takes a decision from the data that deltalift cannot guard")

    def violations(self) -> torch.fx.Node | None:
        """One node: whether any guard fails (``None`` without guards)."""
        if not self.guards:
            return None
        flags = []
        for value, expected in self.guards:
            differs = self.graph.call_function(aten.ne.Scalar, (value, expected))
            flags.append(self.graph.call_function(aten.reshape.default, (differs, [-1])))
        joined = self.graph.call_function(aten.cat.default, (flags,))
        return self.graph.call_function(aten.any.default, (joined,))


def one_step(step: Callable[..., None], *tensors: Tensor) -> None:
    """``step(*tensors)``, which writes into some of ``tensors`` (their positions in
    ``step.writes``) and returns nothing; while a program is being recorded, one node of it.

    For a decision a rule takes from the data that changes from call to call (Rescale's near-zero
    fallback): recorded op by op it would be a guard, and a program whose guards keep failing is
    given up; as one node, each replay runs ``step`` on its own values and takes the decision
    again.  ``step`` must read no tensor but ``tensors`` (what else it holds is fixed in the
    program, and kept alive by it) and must be deterministic."""
    recorder = _python_dispatch._get_current_dispatch_mode()
    if not isinstance(recorder, _Recorder):
        step(*tensors)
        return
    nodes = tuple(recorder.node_of(t) for t in tensors)
    with _python_dispatch._pop_mode_temporarily():
        step(*tensors)
    recorder.graph.call_function(step, nodes)


def _written_arguments(node: torch.fx.Node) -> list[torch.fx.Node]:
    """The nodes an in-place (or ``out=``) op, or a step of :func:`one_step`, writes to."""
    schema = getattr(node.target, "_schema", None)
    if schema is None:
        writes = getattr(node.target, "writes", ()) if node.op == "call_function" else ()
        return [node.args[i] for i in writes if isinstance(node.args[i], torch.fx.Node)]
    written: list[torch.fx.Node] = []
    for i, argument in enumerate(schema.arguments):
        if argument.alias_info is not None and argument.alias_info.is_write:
            value = node.args[i] if i < len(node.args) else node.kwargs.get(argument.name)
            torch.fx.node.map_arg(value, written.append)
    return written


@dataclass
class ReferenceSide:
    """The part of a recorded program that reads only the model's state and the references
    (the reference side of the walk, the same from call to call for a fixed reference), kept
    apart so that its values can be reused (``DeepLiftOptions.reuse_reference``).

    ``module`` maps the program's tensor inputs at ``fixed`` (the state at ``state``, the
    references at ``references``) to the values the rest of the program reads of that part.
    They are reused when every state tensor and every constant the part reads is the one of the
    last call (the same storage, held meanwhile so that it cannot be freed and its address
    reused, the same layout, not written to since by its version counter, and the same
    :func:`fingerprint`, which sees writes through ``param.data`` that bypass the version
    counter) and every reference equals the last call's.  One program at a time keeps its
    values (:data:`_holder`), so the memory held is one reference side's."""

    module: torch.fx.GraphModule
    state: tuple[int, ...]
    references: tuple[int, ...]
    held_state: list[Tensor] = field(default_factory=list)
    versions: list[int] = field(default_factory=list)
    fingerprints: tuple[Tensor, Tensor] | None = None
    constants: list[Tensor] | None = None
    held_references: list[Tensor] = field(default_factory=list)
    values: list[Tensor] | None = None
    #: Whether keeping the values pays (decided at their first computation, see
    #: :data:`CHECKS_PER_COMPUTATION`); where it does not, the program before the split runs.
    pays: bool | None = None

    @property
    def fixed(self) -> tuple[int, ...]:
        return tuple(sorted(self.state + self.references))

    def _watched(self, tensors: list[Tensor]) -> list[Tensor]:
        """The state tensors among ``tensors`` and the constants the part reads."""
        if self.constants is None:
            read = [getattr(self.module, str(n.target)) for n in self.module.graph.nodes if n.op == "get_attr"]
            self.constants = [c for c in read if isinstance(c, Tensor)]
        return [tensors[i] for i in self.state] + self.constants

    def _is_last_call(self, watched: list[Tensor], references: list[Tensor]) -> bool:
        return (
            self.values is not None
            and all(
                t.data_ptr() == kept.data_ptr()
                and t._version == version
                and t.shape == kept.shape
                and t.stride() == kept.stride()
                for t, kept, version in zip(watched, self.held_state, self.versions)
            )
            and all(torch.equal(r, kept) for r, kept in zip(references, self.held_references))
            and _same(fingerprint(watched), self.fingerprints)
        )

    def values_for(self, tensors: list[Tensor]) -> list[Tensor] | None:
        """The values of the part for this call, kept or computed; ``None`` where keeping them
        does not pay (then the program before the split is to run)."""
        if self.pays is False:
            return None
        with _holding:  # another thread's call must not swap the values between check and read
            watched, references = self._watched(tensors), [tensors[i] for i in self.references]
            if self._is_last_call(watched, references):
                with _bookkeeping:
                    counts["reference_reused"] += 1
                return self.values  # type: ignore[return-value]
            deciding = self.pays is None  # timed once: no synchronisation on later computations
            start = time.perf_counter()
            values = list(self.module(*(tensors[i] for i in self.fixed)))
            computing = _synchronized(values, start) if deciding else 0.0
            start = time.perf_counter()
            fingerprints = fingerprint(watched)
            if deciding:
                self.pays = _synchronized(values, start) * CHECKS_PER_COMPUTATION < computing
                if not self.pays:
                    return None
            global _holder
            previous = _holder() if _holder is not None else None
            if previous is not None and previous is not self:
                previous.forget()
            self.held_state, self.versions, self.fingerprints = watched, [t._version for t in watched], fingerprints
            self.held_references, self.values = [r.clone() for r in references], values
            _holder = weakref.ref(self)
            return values

    def forget(self) -> None:
        self.held_state, self.versions, self.held_references, self.values = [], [], [], None
        self.fingerprints = None


#: The reference side is kept only where computing it takes longer than this many times its
#: fingerprint (measured at its first computation).  On the README's machine, at batch 4: VGG-11
#: 31x (60 ms against 1.9), ConvNeXt-T 14x, ResNet-50 12x, ViT-B/16 8x (250 ms against 30),
#: MobileNetV3-Large 5x, kept; EfficientNet-B0 2x (3 ms: kept or not as the timing falls; what
#: keeping saves there is within the noise of a call, and keeping costs memory).
CHECKS_PER_COMPUTATION = 2.0


def _synchronized(values: list[Tensor], start: float) -> float:
    """Seconds since ``start`` once the work on ``values``' device is done."""
    devices = {v.device for v in values if v.device.type == "cuda"}
    for device in devices:
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def fingerprint(tensors: Sequence[Tensor]) -> tuple[Tensor, Tensor] | None:
    """Two kinds of sums of the tensors, one of each per tensor, or for all tensors under
    :data:`FINGERPRINT_GROUPED` bytes together (per device: one sum instead of hundreds of small
    ones):

    - the bytes read as 32-bit words, summed modulo ``2**32`` (exact and independent of the order
      of summation): a write that changes one element changes it, however little;
    - the floating values summed (``float32`` at least): a change of sign changes a word by
      ``2**31``, so two cancel in the first sum, but not here (``neg_``, ``abs_``, a sign flip).

    A write that changes both sums by exactly nothing goes unseen: a permutation of values within
    one tensor (or between small ones), or changes whose word differences cancel modulo ``2**32``
    while their values cancel in the float sum.  One read of the tensors each, as fast as a float
    sum.  ``None`` for a tensor whose bytes cannot be viewed (sparse and nested tensors raise
    ``RuntimeError``; a tensor subclass whose ``__torch_dispatch__`` does not handle the view
    returns ``NotImplemented``, which torch raises as ``TypeError``, as masked tensors do; one that
    refuses explicitly raises ``NotImplementedError``, a ``RuntimeError``): then nothing is
    reused."""
    words: list[Tensor] = []
    values: list[Tensor] = []
    small: dict[torch.device, list[Tensor]] = {}
    small_values: dict[torch.device, list[Tensor]] = {}
    for t in tensors:
        t = t.detach()
        try:
            data = t.reshape(-1).view(torch.uint8)
        except (RuntimeError, TypeError):  # no bytes to read: see the docstring
            return None
        if data.numel() < FINGERPRINT_GROUPED:
            small.setdefault(t.device, []).append(data)
            if t.is_floating_point():
                small_values.setdefault(t.device, []).append(t.reshape(-1).float())
            continue
        words.append(_word_sum(data))
        if t.is_floating_point():
            values.append(t.sum(dtype=torch.float32 if t.element_size() < 4 else t.dtype))
    words += [_word_sum(torch.cat(group)) for group in small.values()]
    values += [torch.cat(group).sum() for group in small_values.values()]
    if not words:
        return None
    device = words[0].device
    stacked_values = torch.stack([v.to(device, torch.float64) for v in values]) if values else words[0].new_zeros(0)
    return torch.stack([w.to(device) for w in words]), stacked_values


#: Tensors under this many bytes are fingerprinted together.
FINGERPRINT_GROUPED = 2**16


def _word_sum(data: Tensor) -> Tensor:
    """The sum of bytes read as 32-bit words modulo ``2**32`` (bytes that start inside a word of a
    shared buffer copied first; as bytes where they are not whole words)."""
    if data.numel() % 4:
        return data.sum(dtype=torch.int32)
    if data.storage_offset() % 4:
        data = data.clone()
    return data.view(torch.int32).sum(dtype=torch.int32)


def _same(a: tuple[Tensor, Tensor] | None, b: tuple[Tensor, Tensor] | None) -> bool:
    return a is not None and b is not None and all(torch.equal(x, y) for x, y in zip(a, b))


#: The reference side that holds its values now, and the lock of every reference side's values.
_holder: weakref.ref[ReferenceSide] | None = None
_holding = threading.Lock()


def _reference_side_nodes(graph: torch.fx.Graph, fixed: set[torch.fx.Node]) -> set[torch.fx.Node]:
    """The nodes computed from the ``fixed`` placeholders and constants alone.  A factory (an op
    of no tensor, such as a buffer to be filled) belongs to them where all its users do."""
    excluded: set[torch.fx.Node] = set()
    while True:
        inside = set(fixed)
        for node in graph.nodes:
            if node.op == "get_attr" or (
                node.op == "call_function" and node not in excluded and all(n in inside for n in node.all_input_nodes)
            ):
                inside.add(node)
        misplaced = {
            n
            for n in inside
            if n.op == "call_function" and not n.all_input_nodes and any(u not in inside for u in n.users)
        }
        if not misplaced:
            return inside
        excluded |= misplaced


#: Ops of the reference side that read no data of their tensor argument (its shape alone).
_SHAPE_ONLY = (aten.zeros_like, aten.ones_like, aten.full_like)


def _recomputed(node: torch.fx.Node, written: set[int]) -> bool:
    """Whether a node of the reference side that the rest reads is computed again at every call
    rather than kept: a view, an element-wise op that writes nothing, an op of a shape alone, or a
    convolution of few products per value (:func:`_few_products`), each where what it reads is
    not kept at a larger size than itself (the bytes of the storages as recorded; a view keeps its
    base's).  Those cost a pass or a few at the reference's size, where keeping the reference
    side's element-wise values would hold several per layer.  Dense layers, other convolutions,
    reductions, and a small value taken from a large one, are kept; so is an op
    that reads a storage some op writes in place (``written``: the storages' recorded identities), whose
    kept value would be the one after the write."""
    target = node.target
    if node.op != "call_function" or not isinstance(target, torch._ops.OpOverload) or _written_arguments(node):
        return False
    view = any(r.alias_info is not None for r in target._schema.returns)
    cheap = torch.Tag.pointwise in target.tags or target.overloadpacket in _SHAPE_ONLY or _few_products(node)
    if not (view or cheap):
        return False
    size = node.meta.get("kept_bytes")
    if size is None or size < RECOMPUTED_BYTES:
        return False
    return all(
        a.meta.get("kept_bytes") is not None
        and a.meta["kept_bytes"] <= size
        and a.meta.get("storage_id") not in written
        for a in node.all_input_nodes
    )


#: The smallest value (bytes of its storage) of the reference side's element-wise ops and views
#: that is computed again at every call rather than kept: below it, the replay's cost per op
#: outweighs a pass over the value, and keeping it costs little.
RECOMPUTED_BYTES = 2**20


def _few_products(node: torch.fx.Node) -> bool:
    """Whether ``node`` is a convolution of at most :data:`RECOMPUTED_PRODUCTS` multiply-adds per
    output value: a stem on three channels, a depthwise convolution.  Computed again, it costs
    about a few element-wise passes, where kept it holds its whole output (VGG-11's first
    convolution at the reference: 12 MiB, 27 products per value)."""
    if node.target is not aten.convolution.default or len(node.args) < 7 or node.args[6]:  # transposed
        return False
    weight = node.args[1]
    shape = weight.meta.get("shape") if isinstance(weight, torch.fx.Node) else None
    return shape is not None and math.prod(shape[1:]) <= RECOMPUTED_PRODUCTS


#: The most multiply-adds per output value of a convolution of the reference side that is
#: computed again at every call rather than kept (:func:`_few_products`).
RECOMPUTED_PRODUCTS = 32


def split_reference_side(
    module: torch.fx.GraphModule, state: Sequence[int], references: Sequence[int]
) -> tuple[torch.fx.GraphModule, ReferenceSide] | None:
    """Split ``module`` (whose placeholders are its tensor inputs) into the part that reads only
    the inputs at ``state`` and ``references`` (and constants) and the rest; ``None`` where
    nothing is to be gained or an op writes to a value of that part (reusing it would not be sound).

    What the rest reads of that part is kept, except the element-wise ops and views that
    :func:`_recomputed` leaves to the rest to compute again from what is kept (ViT-B/16 at
    batch 4: 177 MiB kept beyond the weights with them, 110 MiB without)."""
    graph = module.graph
    placeholders = [n for n in graph.nodes if n.op == "placeholder"]
    fixed = sorted([*state, *references])
    inside = _reference_side_nodes(graph, {placeholders[i] for i in fixed})
    for node in graph.nodes:  # a value of the part written to after it is made: not reusable
        for target in _written_arguments(node):
            if target in inside and (node not in inside or set(target.users) != {node}):
                return None
    written = {w.meta["storage_id"] for n in inside for w in _written_arguments(n) if "storage_id" in w.meta}
    again: set[torch.fx.Node] = set()  # computed again by the rest
    kept_nodes: set[torch.fx.Node] = set()
    wanted = [a for n in graph.nodes if n not in inside for a in n.all_input_nodes if a in inside]
    while wanted:
        node = wanted.pop()
        if node in again or node in kept_nodes or node.op != "call_function":
            continue
        if _recomputed(node, written):
            again.add(node)
            wanted.extend(a for a in node.all_input_nodes if a in inside)
        else:
            kept_nodes.add(node)
    frontier = [n for n in graph.nodes if n in kept_nodes]
    if not frontier:
        return None
    side_graph = torch.fx.Graph()
    env: dict[torch.fx.Node, torch.fx.Node] = {}
    for i in fixed:
        env[placeholders[i]] = side_graph.placeholder(placeholders[i].name)
        env[placeholders[i]].meta.update(placeholders[i].meta)
    for node in graph.nodes:
        if node in inside and node.op != "placeholder":
            env[node] = side_graph.node_copy(node, env.__getitem__)
    side_graph.output(tuple(env[n] for n in frontier))
    side_graph.eliminate_dead_code()
    # Only the state the part reads is watched (VGG-11's dense layers take the reference's rows
    # together with the input's, outside the part: 9 M of its 133 M parameters are read inside).
    read = [i for i in state if env[placeholders[i]].users]
    for unread in set(state) - set(read):
        side_graph.erase_node(env[placeholders[unread]])
    rest = torch.fx.Graph()
    env = {node: rest.placeholder(node.name) for node in placeholders}
    kept = {node: rest.placeholder(f"reference_side_{i}") for i, node in enumerate(frontier)}
    for original, placeholder in [*env.items(), *kept.items()]:  # what is read from outside, by storage
        placeholder.meta.update(original.meta)
    env.update(kept)
    for node in graph.nodes:
        if node.op == "output":  # a value of the reference side (or a view of one) is returned as a copy
            rest.output(
                torch.fx.node.map_arg(
                    node.args[0], lambda n: rest.call_function(aten.clone.default, (env[n],)) if n in inside else env[n]
                )
            )
        elif node not in env and (node not in inside or node.op == "get_attr" or node in again):
            env[node] = rest.node_copy(node, env.__getitem__)
    side = ReferenceSide(torch.fx.GraphModule(module, side_graph), tuple(read), tuple(references))
    return torch.fx.GraphModule(module, rest), side


@dataclass
class RecordedProgram:
    """One recorded DeepLIFT walk: ``run(inputs)`` gives the walk's outputs, or raises
    :class:`GuardFailed` when this call's data would take another branch."""

    module: torch.fx.GraphModule
    n_outputs: int
    has_guards: bool
    backend: str
    calls: int = 0
    compiled: Callable[..., Any] | None = None
    #: The reference side kept apart (then ``module`` takes its values as further inputs), and
    #: the program before the split, which runs where keeping the reference side does not pay
    #: (its values then live only as long as the walk needs them).
    reference_side: ReferenceSide | None = None
    whole: torch.fx.GraphModule | None = None

    def run(self, inputs: Sequence[Any]) -> list[Any]:
        fn: Callable[..., Any] = self.module
        if self.backend == "compiled":
            if self.compiled is None:
                _point_inductor_cache()
                self.compiled = torch.compile(self.module, backend=compile_backend, dynamic=False)
            fn = self.compiled
        self.calls += 1
        tensors = [value for value in inputs if isinstance(value, Tensor)]
        with torch.no_grad():
            try:
                kept = [] if self.reference_side is None else self.reference_side.values_for(tensors)
                if kept is None:  # keeping does not pay: the whole program, whose values live as it needs them
                    fn, kept = self.whole if self.whole is not None else self.module, []
                outputs = list(fn(*tensors, *kept))
            except GuardFailed:
                raise
            except (RuntimeError, IndexError, ValueError) as exc:  # a recorded shape or index no longer fits
                raise GuardFailed(f"the recorded program does not fit this call: {exc}") from exc
        if self.has_guards:
            if bool(outputs[-1]):
                raise GuardFailed("a decision taken from the data differs from the recorded one")
            outputs = outputs[:-1]
        return outputs


def record(
    fn: Callable[..., list[Tensor]],
    inputs: Sequence[Any],
    backend: str,
    constants: Sequence[Tensor] = (),
    reused: tuple[Sequence[int], Sequence[int]] | None = None,
) -> tuple[list[Tensor], RecordedProgram]:
    """Run ``fn(*inputs)`` (which returns a list of tensors) and record it as a program over
    ``inputs`` (tensors become placeholders; other values are fixed); ``constants`` are tensors
    the walk reads that are fixed for the program (the captured graph's lifted constants).
    ``reused``: the positions in ``inputs`` of the model's state and of the references, whose
    part of the program is kept apart and its values reused while they stay the same
    (:class:`ReferenceSide`; the ``"traced"`` backend)."""
    recorder = _Recorder()
    for value in constants:
        name = f"_constant_{len(recorder.constants)}"
        recorder.constants[name] = value
        recorder.bind(value, recorder.graph.get_attr(name))
    placeholders: list[Tensor] = []
    for i, value in enumerate(inputs):
        if isinstance(value, Tensor):
            recorder.bind(value, recorder.graph.placeholder(f"input_{i}"))
            placeholders.append(value)
    with recorder:
        outputs = fn(*inputs)
    output_nodes: list[Any] = [recorder.node_of(o, allow_constant=False) for o in outputs]
    violations = recorder.violations()
    if violations is not None:
        output_nodes.append(violations)
    recorder.graph.output(tuple(output_nodes))
    root = torch.nn.Module()
    for name, value in recorder.constants.items():
        setattr(root, name, value)
    module = torch.fx.GraphModule(root, recorder.graph)
    program = RecordedProgram(module, len(outputs), violations is not None, backend)
    if reused is not None and backend == "traced":
        tensor_index = {i: k for k, i in enumerate(i for i, v in enumerate(inputs) if isinstance(v, Tensor))}
        state, references = ([tensor_index[i] for i in positions if i in tensor_index] for positions in reused)
        split = split_reference_side(module, state, references)
        if split is not None:
            program.whole = module
            program.module, program.reference_side = split
    if backend == "traced":  # after the split, which reads which values are written in place
        side = program.reference_side
        for part in (program.module, program.whole, side.module if side is not None else None):
            if part is not None:
                buffer_reuse.write_into_dying_arguments(part)
    return outputs, program


@dataclass
class _Entry:
    program: RecordedProgram | None = None
    recordings: int = 0
    given_up: bool = False
    seen: int = 0


@dataclass
class _ProgramCache:
    entries: dict[Any, _Entry] = field(default_factory=dict)


#: Recorded programs per captured program, by the program's ``id`` with a weak reference to it
#: (captured programs are unhashable dataclasses): they go when the capture goes.
_cache: dict[int, tuple[weakref.ref[Any], _ProgramCache]] = {}


def _programs_of(owner: Any) -> _ProgramCache:
    found = _cache.get(id(owner))
    if found is not None and found[0]() is owner:
        return found[1]
    key = id(owner)
    programs = _ProgramCache()
    _cache[key] = (weakref.ref(owner, lambda _: _cache.pop(key, None)), programs)
    return programs


#: How many calls each way took, for tests and benchmarks: "replayed", "recorded",
#: "guard_failed", "refused" (not recordable: interpreter), "interpreted" (a first call under
#: ``"auto"``); and "reference_reused", the replays that reused the reference side's values.
counts: dict[str, int] = {
    "replayed": 0,
    "recorded": 0,
    "guard_failed": 0,
    "refused": 0,
    "interpreted": 0,
    "reference_reused": 0,
}


def signature(values: Sequence[Any]) -> tuple[Any, ...]:
    """What a recorded program is specialised to: shapes, dtypes, devices, and other values."""
    parts: list[Any] = []
    for value in values:
        if isinstance(value, Tensor):
            parts.append((tuple(value.shape), value.dtype, str(value.device), value.requires_grad))
        else:
            parts.append(("value", repr(value)))
    return tuple(parts)


def run(
    owner: Any,
    key: Any,
    fn: Callable[..., list[Tensor]],
    inputs: Sequence[Any],
    backend: str,
    interpreted_first: int = 0,
    constants: Sequence[Tensor] = (),
    reused: tuple[Sequence[int], Sequence[int]] | None = None,
) -> list[Tensor] | None:
    """``fn(*inputs)`` through the program recorded for ``(owner, key)``: recorded at the first
    call (which returns the recording run's own values), replayed afterwards; ``None`` where
    the walk cannot be recorded or its guards keep failing (the caller runs the interpreter).
    ``interpreted_first``: leave that many first calls of a signature to the interpreter (a
    signature explained once does not pay for its recording)."""
    full_key = (key, backend, signature(inputs))
    with _bookkeeping:  # threads sharing a model see one entry, and a program taken whole
        per_owner = _programs_of(owner)
        entry = per_owner.entries.get(full_key)
        if entry is None:
            if len(per_owner.entries) >= MAX_PROGRAMS:
                per_owner.entries.pop(next(iter(per_owner.entries)))
            entry = per_owner.entries[full_key] = _Entry()
        entry.seen += 1
        if entry.given_up or entry.seen <= interpreted_first:
            counts["refused" if entry.given_up else "interpreted"] += 1
            return None
        program = entry.program
    if program is not None:
        try:
            outputs = program.run(inputs)
            with _bookkeeping:
                counts["replayed"] += 1
            return outputs
        except GuardFailed:
            with _bookkeeping:
                counts["guard_failed"] += 1
                if entry.program is program:
                    entry.program = None
                if entry.recordings >= MAX_RECORDINGS:
                    entry.given_up = True
                    return None
    try:
        outputs, program = record(fn, inputs, backend, constants, reused)
    except RecordingRefused:
        with _bookkeeping:
            counts["refused"] += 1
            entry.given_up = True
        return None
    with _bookkeeping:
        entry.program = program
        entry.recordings += 1
        counts["recorded"] += 1
    return outputs


#: Held while the recorded programs' entries and :data:`counts` are read or changed (not while a
#: program runs or records).
_bookkeeping = threading.Lock()


def clear(owner: Any | None = None) -> None:
    """Forget the recorded programs (of one captured program, or all)."""
    if owner is None:
        _cache.clear()
    else:
        _cache.pop(id(owner), None)
