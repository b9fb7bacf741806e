"""The capture cache on disk (deltalift.capture_cache): a stored graph gives the same attributions
as a fresh capture, every part of the key invalidates it, a damaged entry is replaced with one
warning, the folder and its size bound follow the environment, and the cache can be switched off.

"A new process" is simulated by a new model instance (the in-memory cache is per instance): its
capture finds the entry on disk, which ``_export`` (counted) shows."""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import os
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import deltalift
from deltalift import DeepLift, LayerDeepLift, capture_cache
from deltalift import capture as capture_module
from deltalift.capture import capture, with_target
from deltalift.capture_cache import CaptureCacheWarning, NotCacheable

F64 = torch.float64


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An empty cache folder of this test, the switch from the environment, exports counted."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("DELTALIFT_CACHE_DIR", str(folder))
    monkeypatch.delenv("DELTALIFT_CACHE", raising=False)
    monkeypatch.delenv("DELTALIFT_CACHE_MAX_SIZE", raising=False)
    capture_cache.set_enabled(None)
    yield folder
    capture_cache.set_enabled(None)


#: Exported programs of this module by what determines the graph (the cache's own key): export
#: is the slow part of these tests, and ``quick_exports`` reuses them.
_EXPORTED: dict[Any, Any] = {}


def _memo_key(model: nn.Module, args: tuple[Any, ...], batch_size: int, dynamic: bool) -> Any:
    signature = capture_module._signature(args, batch_size, dynamic)
    return (capture_cache.model_fingerprint(model), signature, dynamic)


@pytest.fixture
def exports(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The models ``torch.export`` ran on (a hit on disk adds none)."""
    calls: list[Any] = []
    real = capture_module._export

    def counted(model: nn.Module, args: tuple[Any, ...], batch_size: int, dynamic: bool) -> Any:
        calls.append(model)
        exported = real(model, args, batch_size, dynamic)
        if not any(m._non_persistent_buffers_set for m in model.modules()):
            with contextlib.suppress(NotCacheable):
                _EXPORTED[_memo_key(model, args, batch_size, dynamic)] = exported
        return exported

    monkeypatch.setattr(capture_module, "_export", counted)
    return calls


@pytest.fixture
def quick_exports(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """As ``exports``, but a model with the same classes, attributes, state shapes and inputs as
    one exported before in this module reuses that export (models without non-persistent
    buffers only, whose values are not part of the key)."""
    calls: list[Any] = []
    real = capture_module._export

    def memoised(model: nn.Module, args: tuple[Any, ...], batch_size: int, dynamic: bool) -> Any:
        calls.append(model)
        assert not any(m._non_persistent_buffers_set for m in model.modules())
        key = _memo_key(model, args, batch_size, dynamic)
        if key not in _EXPORTED:
            _EXPORTED[key] = real(model, args, batch_size, dynamic)
        return _EXPORTED[key]

    monkeypatch.setattr(capture_module, "_export", memoised)
    return calls


def entries(folder: Path) -> list[Path]:
    return sorted((folder / "captures").glob("*.pt")) if (folder / "captures").is_dir() else []


# ---------------------------------------------------------------------------------- models


class ConvBatchNorm(nn.Module):
    """Convolution, batch norm (buffers), ReLU, pooling and a dense layer."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3, padding=1)
        self.norm = nn.BatchNorm2d(3)
        self.dense = nn.Linear(3 * 2 * 2, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.norm(self.conv(x)))
        return self.dense(nn.functional.max_pool2d(h, 2).flatten(1))


class LiftedConstants(nn.Module):
    """A tensor made in ``forward`` and a non-persistent buffer: both become graph constants;
    SiLU is kept whole."""

    def __init__(self) -> None:
        super().__init__()
        self.dense = nn.Linear(3, 3)
        self.register_buffer("shift", torch.tensor([0.5, -1.0, 2.0]), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights = torch.tensor([1.0, -2.0, 0.5], dtype=x.dtype)
        return (nn.functional.silu(self.dense(x) + self.shift) * weights).sum(1, keepdim=True)


class WithDropout(nn.Module):
    """An eval-mode dropout runs no op: its layer capture marks its output."""

    def __init__(self) -> None:
        super().__init__()
        self.first = nn.Linear(4, 5)
        self.drop = nn.Dropout(0.3)
        self.last = nn.Linear(5, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.last(self.drop(torch.tanh(self.first(x))))


def seeded(factory: Callable[[], nn.Module], seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = factory().to(F64).eval()
    for buffer_name, buffer in model.named_buffers():
        if buffer.is_floating_point() and "running_var" in buffer_name:
            buffer.uniform_(0.5, 2.0)
        elif buffer.is_floating_point() and "running_mean" in buffer_name:
            buffer.uniform_(-1.0, 1.0)
    return model


def node_summary(graph: torch.fx.Graph) -> list[Any]:
    return [
        (
            n.name,
            n.op,
            str(n.target),
            str(n.args),
            str(n.kwargs),
            n.meta.get("nn_module_stack"),
            isinstance(n.meta.get("val"), torch.Tensor),
        )
        for n in graph.nodes
    ]


# ------------------------------------------------------------------- stored == fresh capture


CASES = {
    "batch_norm": (ConvBatchNorm, (3, 2, 4, 4)),
    "lifted_constants": (LiftedConstants, (3, 3)),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_stored_graph_gives_the_fresh_captures_attributions_bit_for_bit(
    name: str, cache: Path, exports: list[Any]
) -> None:
    factory, shape = CASES[name]
    model = seeded(factory)
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(1), dtype=F64)
    fresh, fresh_delta = DeepLift(model).attribute(x, baselines=0.0, target=0, return_convergence_delta=True)
    assert len(exports) == 1 and len(entries(cache)) == 1

    again = copy.deepcopy(model)  # a new instance: the in-memory cache does not know it
    stored, stored_delta = DeepLift(again).attribute(x, baselines=0.0, target=0, return_convergence_delta=True)
    assert len(exports) == 1  # found on disk, not exported again
    assert torch.equal(stored, fresh) and torch.equal(stored_delta, fresh_delta)
    first = capture(model, (x,), x.shape[0])
    second = capture(again, (x,), x.shape[0])
    assert second is not first
    assert node_summary(second.graph) == node_summary(first.graph)
    assert second.placeholders == first.placeholders and second.batch_dynamic == first.batch_dynamic
    assert second.user_output_positions == first.user_output_positions
    assert first.batch_dynamic  # batch 3: one graph for every batch size, also from disk
    bigger = torch.randn(5, *shape[1:], dtype=F64)
    assert torch.equal(
        DeepLift(copy.deepcopy(model)).attribute(bigger, baselines=0.0, target=0),
        DeepLift(model).attribute(bigger, baselines=0.0, target=0),
    )
    assert len(exports) == 1


def test_the_stored_graph_keeps_the_node_metadata_deltalift_reads(cache: Path, quick_exports: list[Any]) -> None:
    model = seeded(ConvBatchNorm)
    x = torch.randn(2, 2, 4, 4, dtype=F64)
    fresh = capture(model, (x,), 2)
    stored = capture(copy.deepcopy(model), (x,), 2)
    for a, b in zip(fresh.graph.nodes, stored.graph.nodes, strict=True):
        assert a.meta.get("nn_module_stack") == b.meta.get("nn_module_stack")
        assert a.meta.get("stack_trace") == b.meta.get("stack_trace")
        va, vb = a.meta.get("val"), b.meta.get("val")
        if isinstance(va, torch.Tensor):  # a tensor of the same dtype and shape (batch as export saw it)
            assert isinstance(vb, torch.Tensor) and vb.device.type == "meta"
            assert vb.dtype == va.dtype and list(vb.shape) == [int(n) for n in va.shape]
        else:
            assert not isinstance(vb, torch.Tensor)
    described = [n for n in stored.graph.nodes if n.meta.get("nn_module_stack")]
    assert any(path == "norm" for n in described for path, _ in n.meta["nn_module_stack"].values())


def test_a_layer_capture_with_a_mark_is_stored_under_its_own_key(cache: Path, exports: list[Any]) -> None:
    model = seeded(WithDropout)
    x = torch.randn(4, 4, dtype=F64)
    fresh = LayerDeepLift(model, model.drop).attribute(x, baselines=0.0, target=1)
    count = len(exports)  # the plain capture, then the capture with the dropout's output marked
    assert count == 2 and len(entries(cache)) == 2
    again = copy.deepcopy(model)
    stored = LayerDeepLift(again, again.drop).attribute(x, baselines=0.0, target=1)
    assert len(exports) == count
    assert torch.equal(stored, fresh)


def test_weights_and_buffers_are_read_live_from_the_model_not_from_the_entry(cache: Path, exports: list[Any]) -> None:
    model = seeded(LiftedConstants)
    x = torch.randn(3, 3, dtype=F64)
    DeepLift(model).attribute(x, baselines=0.0)
    other = seeded(LiftedConstants, seed=5)  # other weights
    with torch.no_grad():
        other.shift.copy_(torch.tensor([-3.0, 0.25, 1.0]))  # and another non-persistent buffer
    stored = DeepLift(other).attribute(x, baselines=0.0)
    assert len(exports) == 1  # the same key: weights are not part of it
    with capture_cache.disabled():
        expected = DeepLift(copy.deepcopy(other)).attribute(x, baselines=0.0)
    assert len(exports) == 2
    assert torch.equal(stored, expected)
    assert not torch.allclose(stored, DeepLift(model).attribute(x, baselines=0.0))


def test_an_entry_holds_no_weights(cache: Path) -> None:
    model = nn.Sequential(nn.Linear(400, 500), nn.ReLU(), nn.Linear(500, 1)).to(F64).eval()
    capture(model, (torch.zeros(2, 400, dtype=F64),), 2)
    (entry,) = entries(cache)
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    assert weight_bytes > 1_500_000 and entry.stat().st_size < 100_000


# ------------------------------------------------------------------------------------ the key


MODULE_SOURCE = """
import torch
from torch import nn

def helper(x):
    return torch.relu(x){helper_extra}

class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.dense = nn.Linear(3, 2)

    def forward(self, x):
        return helper(self.dense(x)){forward_extra}
"""


def load_net(
    folder: Path, monkeypatch: pytest.MonkeyPatch, helper_extra: str = "", forward_extra: str = ""
) -> type[nn.Module]:
    """Class ``Net`` of module ``cachetest_net``, from a file written in ``folder`` (the module
    stays in ``sys.modules`` until the next one is loaded, so that its source can be found)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "cachetest_net.py"
    path.write_text(MODULE_SOURCE.format(helper_extra=helper_extra, forward_extra=forward_extra))
    spec = importlib.util.spec_from_file_location("cachetest_net", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "cachetest_net", module)
    spec.loader.exec_module(module)
    net: type[nn.Module] = module.Net
    return net


class Scaled(nn.Module):
    def __init__(self, scale: float = 2.0, features: int = 3, dtype: torch.dtype = F64) -> None:
        super().__init__()
        self.dense = nn.Linear(features, 2, dtype=dtype)
        self.scale = scale
        self.offsets = torch.zeros(2, dtype=dtype)  # an unregistered tensor: a graph constant

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dense(x) * self.scale + self.offsets


class ScaledTwin(Scaled):
    """The same code under another class name."""


def key_of(model: Any, args: tuple[Any, ...], batch_size: int = 2, mark: Any = None) -> str:
    """The file a capture of ``model(*args)`` is stored in (dynamic batch where ``batch_size >= 2``)."""
    module = capture_module.as_module(model)
    entries_ = capture_module._DiskEntries(module, args, batch_size, mark)
    assert entries_.model_part is not None
    return str(capture_cache.entry_path(entries_.model_part, entries_._key(batch_size >= 2)))


def x64(*shape: int) -> torch.Tensor:
    return torch.zeros(*shape, dtype=F64)


def test_the_key_ignores_weight_values_and_the_batch_size_of_a_dynamic_batch(cache: Path) -> None:
    a, b = Scaled(), Scaled()
    with torch.no_grad():
        b.dense.weight.add_(1.0)
    assert key_of(a, (x64(2, 3),)) == key_of(b, (x64(2, 3),)) == key_of(a, (x64(7, 3),), batch_size=7)


def _variants(tmp_path: Path) -> dict[str, tuple[Any, tuple[Any, ...], int, Any]]:
    """Captures that differ from the base one in exactly one part of the key."""
    base_args = (x64(2, 3),)
    flipped = Scaled()  # modules are in training mode when built
    flipped.dense.eval()
    with_buffer = Scaled()
    with_buffer.register_buffer("extra", torch.zeros(1, dtype=F64))
    renamed = Scaled()
    renamed.register_parameter("dense_bias_twin", nn.Parameter(torch.zeros(2, dtype=F64)))
    nonpersistent = Scaled()
    nonpersistent.register_buffer("extra", torch.zeros(1, dtype=F64), persistent=False)
    hooked = Scaled()
    hooked.dense.register_forward_hook(lambda module, inputs, output: output * 2)
    offsets = Scaled()
    offsets.offsets = torch.ones(2, dtype=F64)
    return {
        "class": (ScaledTwin(), base_args, 2, None),
        "plain attribute": (Scaled(scale=3.0), base_args, 2, None),
        "unregistered tensor": (offsets, base_args, 2, None),
        "parameter shape": (Scaled(features=4), (x64(2, 4),), 2, None),
        "parameter dtype": (Scaled(dtype=torch.float32), base_args, 2, None),
        "parameter names": (renamed, base_args, 2, None),
        "buffers": (with_buffer, base_args, 2, None),
        "non-persistent buffer": (nonpersistent, base_args, 2, None),
        "training flag": (flipped, base_args, 2, None),
        "input shape": (Scaled(), (x64(2, 1, 3),), 2, None),
        "input dtype": (Scaled(), (torch.zeros(2, 3),), 2, None),
        "static batch": (Scaled(), (x64(1, 3),), 1, None),
        "extra argument": (Scaled(), (x64(2, 3), 1.0), 2, None),
        "mark": (Scaled(), base_args, 2, "dense"),
        "forward hook": (hooked, base_args, 2, None),
    }


def test_each_part_of_the_key_gives_a_miss(cache: Path, tmp_path: Path) -> None:
    base = Scaled()
    stored = key_of(base, (x64(2, 3),))
    variants = _variants(tmp_path)
    keys = {name: key_of(*variant) for name, variant in variants.items()}
    for name, key in keys.items():
        assert key != stored, name
    assert len(set(keys.values())) == len(keys)  # and they all differ from each other


def test_a_miss_on_a_changed_key_part_exports_again(cache: Path, quick_exports: list[Any]) -> None:
    x = x64(2, 3)
    capture(Scaled(), (x,), 2)
    capture(Scaled(), (x,), 2)
    assert len(quick_exports) == 1
    capture(Scaled(scale=5.0), (x,), 2)
    assert len(quick_exports) == 2 and len(entries(cache)) == 2
    reference = Scaled(scale=5.0)
    ones = torch.ones(2, 3, dtype=F64)
    result = DeepLift(copy.deepcopy(reference)).attribute(ones, baselines=0.0, target=0)  # found on disk
    assert len(quick_exports) == 2
    with capture_cache.disabled():
        expected = DeepLift(reference).attribute(ones, baselines=0.0, target=0)
    assert len(quick_exports) == 3
    assert torch.equal(result, expected)
    assert torch.allclose(result, 5.0 * reference.dense.weight[0].detach().expand(2, 3), rtol=0, atol=1e-12)


def test_class_source_and_helper_code_in_its_file_are_part_of_the_key(
    cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    args = (torch.zeros(2, 3),)
    edits: list[dict[str, str]] = [{}, {}, {"forward_extra": " * 2"}, {"helper_extra": " + 1"}]
    keys = [key_of(load_net(tmp_path / str(i), monkeypatch, **edit)(), args) for i, edit in enumerate(edits)]
    assert keys[0] == keys[1]
    assert len({keys[0], keys[2], keys[3]}) == 3


def make_factory_net(activation: Callable[[torch.Tensor], torch.Tensor]) -> type[nn.Module]:
    class FactoryNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.dense = nn.Linear(3, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return activation(self.dense(x))

    return FactoryNet


GLOBAL_SCALE = 1.0


class GlobalScaled(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.dense = nn.Linear(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dense(x) * GLOBAL_SCALE


def test_closures_of_methods_and_the_data_globals_they_read_are_part_of_the_key(
    cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    args = (torch.zeros(2, 3),)
    relu, relu_again, tanh = (make_factory_net(f)() for f in (torch.relu, torch.relu, torch.tanh))
    assert key_of(relu, args) == key_of(relu_again, args) != key_of(tanh, args)  # same source, other closure
    before = key_of(GlobalScaled(), args)
    monkeypatch.setattr(sys.modules[__name__], "GLOBAL_SCALE", 2.0)
    scaled_twice = key_of(GlobalScaled(), args)
    assert scaled_twice != before
    monkeypatch.setattr(GlobalScaled, "forward", lambda self, x: self.dense(x) * 3.0)  # replaced at run time
    assert key_of(GlobalScaled(), args) not in (before, scaled_twice)


def test_versions_and_capture_rules_are_part_of_the_key(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    args = (x64(2, 3),)
    base = key_of(Scaled(), args)
    changed: list[str] = []
    with monkeypatch.context() as patch:
        patch.setattr(torch, "__version__", "0.0.1")
        changed.append(key_of(Scaled(), args))
    with monkeypatch.context() as patch:
        patch.setattr(deltalift, "__version__", "0.0.0-other")
        changed.append(key_of(Scaled(), args))
    with monkeypatch.context() as patch:
        patch.setattr(sys, "version", "2.7.18 (another python)")
        changed.append(key_of(Scaled(), args))
    with monkeypatch.context() as patch:
        patch.setattr(capture_cache, "CACHE_FORMAT", capture_cache.CACHE_FORMAT + 1)
        changed.append(key_of(Scaled(), args))
    with monkeypatch.context() as patch:  # one more op kept whole: another decomposition table
        patch.setattr(capture_module, "KEEP_UNDECOMPOSED", [*capture_module.KEEP_UNDECOMPOSED, torch.ops.aten.gelu])
        capture_module._capture_code_fingerprint.cache_clear()
        changed.append(key_of(Scaled(), args))
    capture_module._capture_code_fingerprint.cache_clear()
    assert key_of(Scaled(), args) == base
    assert base not in changed and len(set(changed)) == len(changed)


def test_plain_functions_and_targets_are_keyed_by_their_code_and_closures(cache: Path) -> None:
    net = Scaled()
    args = (x64(2, 3),)

    def forward_a(x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x).sum(1, keepdim=True)

    def forward_b(x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(x).sum(1, keepdim=True)

    def closing(k: float) -> Callable[[torch.Tensor], torch.Tensor]:
        return lambda out: out[:, 0] * k

    plain = [key_of(forward_a, args), key_of(forward_b, args)]
    targets = [key_of(with_target(net, fn), args) for fn in (closing(1.0), closing(2.0), lambda out: out[:, 1])]
    assert plain[0] != plain[1]
    assert key_of(with_target(net, closing(1.0)), args) == targets[0]  # the same code and values
    assert len(set(targets)) == 3 and key_of(net, args) not in targets


def test_models_whose_key_is_unsafe_are_captured_without_the_cache(cache: Path, exports: list[Any]) -> None:
    outside = nn.Linear(3, 1).to(F64)
    backward_hooked = Scaled()
    backward_hooked.dense.register_full_backward_hook(lambda module, grad_in, grad_out: None)
    no_source = type("Generated", (Scaled,), {})()  # no source file: its code cannot be hashed
    big = Scaled()
    big.table = torch.zeros(2_000_000)
    models: list[Any] = [lambda x: outside(x), backward_hooked, no_source, big]  # noqa: PLW0108
    for model in models:
        with pytest.raises(NotCacheable):
            capture_cache.model_fingerprint(capture_module.as_module(model))
    with warnings.catch_warnings():
        warnings.simplefilter("error", CaptureCacheWarning)
        result = DeepLift(no_source).attribute(torch.ones(2, 3, dtype=F64), baselines=0.0, target=0)
    expected = no_source.dense.weight[0].detach() * no_source.scale  # y0 = scale * (W x + b)
    assert torch.allclose(result, expected.expand(2, 3), rtol=0, atol=1e-12)
    assert entries(cache) == [] and len(exports) == 1


# ---------------------------------------------------------------- damaged entries, concurrency


@pytest.mark.parametrize(
    "damage",
    [
        lambda path, payload: path.write_bytes(b"not a torch file"),
        lambda path, payload: path.write_bytes(path.read_bytes()[: path.stat().st_size // 2]),
        lambda path, payload: torch.save(dict(payload, key="another key"), path),
        lambda path, payload: torch.save(dict(payload, program="{}"), path),
    ],
    ids=["garbage", "truncated", "other_key", "invalid_program"],
)
def test_a_damaged_entry_gives_one_warning_is_removed_and_captured_again(
    damage: Callable[[Path, dict[str, Any]], Any], cache: Path, quick_exports: list[Any]
) -> None:
    model = Scaled()
    x = torch.randn(2, 3, dtype=F64)
    expected = DeepLift(model).attribute(x, baselines=0.0, target=0)
    (entry,) = entries(cache)
    key_stem = entry.stem
    before = entry.read_bytes()
    damage(entry, torch.load(entry, weights_only=True))
    assert entry.read_bytes() != before
    with pytest.warns(CaptureCacheWarning, match="could not be read") as caught:
        result = DeepLift(copy.deepcopy(model)).attribute(x, baselines=0.0, target=0)
    assert len(caught) == 1 and str(entry) in str(caught[0].message) and "DELTALIFT_CACHE=0" in str(caught[0].message)
    assert len(quick_exports) == 2  # captured again
    assert torch.equal(result, expected)
    assert [p.stem for p in entries(cache)] == [key_stem]  # and stored again, readable
    with warnings.catch_warnings():
        warnings.simplefilter("error", CaptureCacheWarning)
        assert torch.equal(DeepLift(copy.deepcopy(model)).attribute(x, baselines=0.0, target=0), expected)
    assert len(quick_exports) == 2


def test_concurrent_writers_of_one_entry_leave_one_readable_file(cache: Path, quick_exports: list[Any]) -> None:
    capture(Scaled(), (x64(2, 3),), 2)
    (entry,) = entries(cache)
    payload = torch.load(entry, weights_only=True)
    model_part, key = entry.name.split("-")[0], payload["key"]
    assert capture_cache.entry_path(model_part, key) == entry
    errors: list[BaseException] = []

    def write() -> None:
        try:
            for _ in range(3):
                capture_cache.save(model_part, key, {k: v for k, v in payload.items() if k not in ("key", "format")})
                found = capture_cache.load(model_part, key)
                assert found is not None and found["program"] == payload["program"]
        except BaseException as exc:  # noqa: BLE001 (reported by the main thread)
            errors.append(exc)

    with warnings.catch_warnings():
        warnings.simplefilter("error", CaptureCacheWarning)
        threads = [threading.Thread(target=write) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert errors == []
    assert [p.name for p in (cache / "captures").iterdir()] == [entry.name]  # no temporary files left


# ------------------------------------------------------------------------- location, switch


def test_the_folder_follows_the_environment_and_the_platform(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DELTALIFT_CACHE_DIR", str(tmp_path / "explicit"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert capture_cache.cache_dir() == tmp_path / "explicit"
    monkeypatch.delenv("DELTALIFT_CACHE_DIR")
    assert capture_cache.cache_dir() == tmp_path / "xdg" / "deltalift"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setattr(sys, "platform", "linux")
    assert capture_cache.cache_dir() == tmp_path / "home" / ".cache" / "deltalift"
    monkeypatch.setattr(sys, "platform", "darwin")
    assert capture_cache.cache_dir() == tmp_path / "home" / "Library" / "Caches" / "deltalift"
    monkeypatch.setattr(sys, "platform", "win32")
    monkeypatch.setenv("LOCALAPPDATA", str(tmp_path / "local"))
    assert capture_cache.cache_dir() == tmp_path / "local" / "deltalift" / "Cache"


@pytest.mark.parametrize("value", ["0", "false", "Off", "no"])
def test_the_environment_switch_turns_the_cache_off(
    value: str, cache: Path, quick_exports: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DELTALIFT_CACHE", value)
    assert not capture_cache.is_enabled()
    model = Scaled()
    capture(model, (x64(2, 3),), 2)
    assert entries(cache) == []
    monkeypatch.setenv("DELTALIFT_CACHE", "1")
    capture(Scaled(), (x64(2, 3),), 2)  # on again: exported (nothing was stored) and stored
    assert len(quick_exports) == 2 and len(entries(cache)) == 1


def test_the_python_switch_turns_reading_and_writing_off(cache: Path, quick_exports: list[Any]) -> None:
    capture(Scaled(), (x64(2, 3),), 2)
    assert len(entries(cache)) == 1
    capture_cache.set_enabled(False)
    capture(Scaled(), (x64(2, 3),), 2)  # not read
    capture(Scaled(scale=5.0), (x64(2, 3),), 2)  # not written
    assert len(quick_exports) == 3 and len(entries(cache)) == 1
    capture_cache.set_enabled(True)
    with capture_cache.disabled():
        assert not capture_cache.is_enabled()
    assert capture_cache.is_enabled()
    with pytest.raises(TypeError, match="True, False or None"):
        capture_cache.set_enabled("no")  # type: ignore[arg-type]


# ------------------------------------------------------------------------------- size bound


@pytest.mark.parametrize(
    ("text", "size"),
    [("12", 12), ("2GiB", 2 * 1024**3), ("500MB", 500_000_000), ("1.5 KB", 1500), ("3 mib", 3 * 1024**2), ("0", 0)],
)
def test_parse_size(text: str, size: int) -> None:
    assert capture_cache.parse_size(text) == size


@pytest.mark.parametrize("text", ["", "-1", "2 GiBs", "one GB", "1e9"])
def test_parse_size_rejects_what_is_not_a_size(text: str) -> None:
    with pytest.raises(ValueError, match="cannot read the cache size"):
        capture_cache.parse_size(text)


def test_the_size_bound_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DELTALIFT_CACHE_MAX_SIZE", raising=False)
    assert capture_cache.max_size() == 2 * 1024**3
    monkeypatch.setenv("DELTALIFT_CACHE_MAX_SIZE", "10MB")
    assert capture_cache.max_size() == 10_000_000
    monkeypatch.setenv("DELTALIFT_CACHE_MAX_SIZE", "lots")
    with pytest.raises(ValueError, match="DELTALIFT_CACHE_MAX_SIZE"):
        capture_cache.max_size()


def test_eviction_removes_the_least_recently_used_entries_first(cache: Path) -> None:
    folder = cache / "captures"
    folder.mkdir(parents=True)
    now = time.time()
    for age, name in enumerate(["newest", "middle", "oldest"]):
        path = folder / f"{name}.pt"
        path.write_bytes(b"x" * 100)
        os.utime(path, (now - 100 * age, now - 100 * age))
    stale = folder / ".write-dead.tmp"
    stale.write_bytes(b"x")
    os.utime(stale, (now - 7200, now - 7200))
    fresh_temp = folder / ".write-live.tmp"
    fresh_temp.write_bytes(b"x")
    assert capture_cache.evict(250) == [folder / "oldest.pt"]
    assert not stale.exists() and fresh_temp.exists()  # a writer that died long ago; one still writing
    assert capture_cache.evict(100) == [folder / "middle.pt"]
    assert capture_cache.evict(0) == [folder / "newest.pt"]


def test_a_hit_makes_an_entry_recently_used_and_writes_keep_the_bound(
    cache: Path, quick_exports: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = Scaled(), Scaled(scale=5.0)
    capture(first, (x64(2, 3),), 2)
    capture(second, (x64(2, 3),), 2)
    first_entry, second_entry = Path(key_of(first, (x64(2, 3),))), Path(key_of(second, (x64(2, 3),)))
    assert set(entries(cache)) == {first_entry, second_entry}
    past = time.time() - 1000
    os.utime(first_entry, (past - 10, past - 10))  # the older one
    os.utime(second_entry, (past, past))
    capture(Scaled(), (x64(2, 3),), 2)  # a hit on ``first``'s entry makes it the most recent
    size = first_entry.stat().st_size
    monkeypatch.setenv("DELTALIFT_CACHE_MAX_SIZE", str(int(size * 2.5)))
    capture(ScaledTwin(), (x64(2, 3),), 2)  # a third entry: the least recently used goes
    names = {p.name for p in entries(cache)}
    assert first_entry.name in names and second_entry.name not in names and len(names) == 2
    assert sum(p.stat().st_size for p in entries(cache)) <= int(size * 2.5)


def test_clear_removes_entries(cache: Path, quick_exports: list[Any]) -> None:
    model = Scaled()
    capture(model, (x64(2, 3),), 2)
    capture(Scaled(scale=5.0), (x64(2, 3),), 2)
    assert len(entries(cache)) == 2
    deltalift.clear_cache(model)  # that model's entry only
    assert len(entries(cache)) == 1
    assert capture_cache.clear() == 1 and entries(cache) == []


# ------------------------------------------------------------------------ the graph as data


def test_encode_and_decode_keep_every_node_and_refuse_what_they_cannot_store() -> None:
    graph = torch.fx.Graph()
    x = graph.placeholder("input")
    x.name = "input"  # as export names the argument of ``forward(self, input)``; fx would say input_1
    size = graph.call_function(torch.ops.aten.sym_size.int, (x, 0))
    view = graph.call_function(torch.ops.aten.view.default, (x, [size, -1]))
    cast = graph.call_function(
        torch.ops.aten._to_copy.default, (view,), {"dtype": torch.float16, "memory_format": torch.preserve_format}
    )
    item = graph.call_function(torch.ops.aten.max.dim, (cast, 1, True))
    first = graph.call_function(sys.modules["operator"].getitem, (item, 0))
    graph.output((first, slice(None, 2)))
    view.meta["val"] = torch.empty(2, 6)
    view.meta["nn_module_stack"] = {"L__self__": ("", "pkg.Model")}
    decoded = capture_cache.decode_graph(capture_cache.encode_graph(graph))
    assert [(n.name, n.op, n.target, str(n.args), str(n.kwargs)) for n in decoded.nodes] == [
        (n.name, n.op, n.target, str(n.args), str(n.kwargs)) for n in graph.nodes
    ]
    out = next(n for n in decoded.nodes if n.name == view.name)
    assert out.meta["nn_module_stack"] == {"L__self__": ("", "pkg.Model")}
    assert out.meta["val"].shape == (2, 6) and out.meta["val"].dtype == torch.float32
    cast_node = next(n for n in decoded.nodes if n.name == cast.name)
    assert cast_node.kwargs["dtype"] is torch.float16 and cast_node.kwargs["memory_format"] is torch.preserve_format
    submodule = torch.fx.Graph()
    submodule.output(submodule.get_attr("weights"))
    with pytest.raises(NotCacheable, match="get_attr"):
        capture_cache.encode_graph(submodule)
    strange = torch.fx.Graph()
    strange.output(strange.call_function(lambda v: v, (strange.placeholder("x"),)))
    with pytest.raises(NotCacheable, match="cannot store"):
        capture_cache.encode_graph(strange)
