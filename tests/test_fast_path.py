"""The fast path (deltalift.fast_path) against the interpreter, its reference implementation.

The fast path records one DeepLIFT call (input and reference sides, every rule's multipliers, and
the backward pass that composes them; Shrikumar et al. 2017, section 3.2) as one flat ATen program
and replays it.  A recording run computes exactly what the interpreter computes, so comparing it
proves little: every comparison here *replays* the program on other inputs than the recorded ones
and checks that it gives the interpreter's contributions and convergence deltas on those inputs,
in float64, to 1e-10 relative to the contributions' scale.

- the whole architecture matrix of tests/test_architectures.py under Rescale, and the cases with
  a dense or convolution layer before a nonlinearity under RevealCancel and the genomics default
  (``plan.RULE_CHOICES``), the program replayed as recorded (``backend="traced"``);
- the same program through ``torch.compile`` with the ``aot_eager`` backend (dynamo and
  functionalisation over the recorded program, which checks its construction) on two cases, and
  with inductor on one small CNN (compiling takes tens of seconds a model, too long for the
  matrix in CI);
- guards: a call whose data would take another branch of a rule (a position where the input
  equals the reference) is recomputed, never answered from a program recorded on other data;
- live weights, the ``auto`` policy, the option checks and the cache directory.
"""

from __future__ import annotations

import os
import sys
import threading
import warnings
import zlib
from typing import Any

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import test_architectures as arch
from deltalift import DeepLift, fast_path
from deltalift.engine import DeepLiftOptions, deeplift
from deltalift.plan import RULE_CHOICES

pytestmark = pytest.mark.filterwarnings("ignore:The tensor attributes .*_flat_weights.*:UserWarning")

#: Cases with a weighted op feeding a nonlinearity, where RevealCancel changes the multipliers.
RULE_CASES = [
    "functional:F.relu",
    "functional:torch.tanh",
    "residual_shared_inplace_relu",
    "gates",
    "transformer_encoder",
    "dna_dilated_conv",
    "torchvision:resnet18",
]


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Any:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _reference_side_always_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    """Whether a reference side is kept depends on timings (CHECKS_PER_COMPUTATION); the tests of
    reuse must not, so every reference side here is kept unless a test says otherwise."""
    monkeypatch.setattr(fast_path, "CHECKS_PER_COMPUTATION", 0.0)


def other_inputs(name: str, inputs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    """Inputs other than the recorded ones, of the same signature (one-hot DNA: the positions
    shuffled, so that it stays one-hot)."""
    g = torch.Generator().manual_seed(zlib.crc32(name.encode()) + 11)
    if name.startswith("dna"):
        (x,) = inputs
        return (x[:, :, torch.randperm(x.shape[2], generator=g)],)
    return tuple(x + 0.3 * torch.randn(x.shape, generator=g, dtype=x.dtype) for x in inputs)


def explain(
    model: nn.Module, inputs: tuple[torch.Tensor, ...], baselines: Any, target: Any, extra: Any, **options: Any
) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
    given = inputs if len(inputs) > 1 else inputs[0]
    result = deeplift(model, given, baselines, target, extra, DeepLiftOptions(**options))
    return result.contributions, result.delta


def assert_replay_matches(name: str, backend: str = "traced", rule: str = "rescale") -> None:
    """Record on the case's inputs, replay on other inputs, compare with the interpreter there."""
    model, inputs, extra, target = arch.built(name, torch.float64)
    case = arch.CASES[name]
    kind = "random" if "random" in case.baselines else case.baselines[0]
    baselines = arch.make_baselines(kind, inputs, seed=zlib.crc32(name.encode()))
    options = {"backend": backend, "rule": rule, "reuse_reference": False}  # reuse: its own tests
    explain(model, inputs, baselines, target, extra, **options)  # recorded
    before = dict(fast_path.counts)
    second = other_inputs(name, inputs)
    fast, fast_delta = explain(model, second, baselines, target, extra, **options)
    exact, exact_delta = explain(model, second, baselines, target, extra, backend="interpreter", rule=rule)
    went = {k: fast_path.counts[k] - before[k] for k in before}
    assert went["replayed"] + went["guard_failed"] == 1, f"the second call was not answered by the program: {went}"
    assert len(fast) == len(exact)
    for f, e in zip(fast, exact):
        assert f.shape == e.shape and f.dtype == e.dtype
        scale = float(e.abs().max()) + 1e-30
        assert float((f - e).abs().max()) <= 1e-10 * scale, f"{name}: the fast path differs from the interpreter"
    assert float((fast_delta - exact_delta).abs().max()) <= 1e-10 * (float(exact[0].abs().sum()) + 1e-30)


@pytest.mark.parametrize("name", list(arch.CASES))
def test_traced_equals_interpreter_on_the_matrix(name: str) -> None:
    assert_replay_matches(name)


@pytest.mark.parametrize("rule", [r for r in RULE_CHOICES if r != "rescale"])
@pytest.mark.parametrize("name", RULE_CASES)
def test_traced_equals_interpreter_under_every_rule(name: str, rule: str) -> None:
    assert_replay_matches(name, rule=rule)


def test_most_of_the_matrix_is_replayed_not_refused() -> None:
    """The fast path must actually serve the matrix: programs replayed, not refused."""
    before = dict(fast_path.counts)
    for name in ("functional:F.relu", "torchvision:resnet18", "transformer_encoder", "lstm", "norms"):
        assert_replay_matches(name)
    went = {k: fast_path.counts[k] - before[k] for k in before}
    assert went["refused"] == 0 and went["replayed"] >= 4, went


@pytest.fixture
def aot_eager(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fast_path, "compile_backend", "aot_eager")
    torch._dynamo.reset()


@pytest.mark.parametrize("name", ["functional:F.gelu", "maxpool_3_stride2_pad1"])
def test_compiled_program_equals_interpreter(name: str, aot_eager: None) -> None:
    assert_replay_matches(name, backend="compiled")


class _SmallCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3)
        self.fc = nn.Linear(3 * 4 * 4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.nn.functional.silu(self.conv(x)).flatten(1).sigmoid())


def test_inductor_program_equals_interpreter(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The default compiler (inductor): the fused multiplier kernels give the interpreter's values.
    (One small CNN: an inductor compile takes tens of seconds even for it.)"""
    build = _SmallCNN
    pytest.importorskip("torch._inductor")
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    torch.manual_seed(0)
    model = build().double().eval()
    shape = (3, 2, 6, 6)
    x, y = torch.randn(shape, dtype=torch.float64), torch.randn(shape, dtype=torch.float64)
    explain(model, (x,), None, 1, None, backend="compiled")
    before = fast_path.counts["replayed"]
    fast, _ = explain(model, (y,), None, 1, None, backend="compiled")
    exact, _ = explain(model, (y,), None, 1, None, backend="interpreter")
    assert fast_path.counts["replayed"] == before + 1
    torch.testing.assert_close(fast[0], exact[0], rtol=1e-10, atol=1e-12)


# --------------------------------------------------------------------------------------------------
# guards, live weights, the auto policy


class _ReluNet(nn.Module):
    def __init__(self, activation: Any = torch.relu) -> None:
        super().__init__()
        self.first = nn.Linear(4, 6)
        self.second = nn.Linear(6, 2)
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.second(self.activation(self.first(x)))


def _maximum_with_flipped(h: torch.Tensor) -> torch.Tensor:
    """Two input-dependent arguments: the Shapley rule, whose near-zero fallback is a guard."""
    return torch.maximum(h, h.flip(-1))


def test_a_changed_decision_is_recomputed_not_replayed() -> None:
    """Recorded where no input equals its reference, replayed where one row does: the near-zero
    fallback (the derivative at the reference, here of the two-argument ``maximum``, a decision
    its rule takes in Python) must be taken, as the interpreter does."""
    torch.manual_seed(1)
    model = _ReluNet(_maximum_with_flipped).double().eval()
    reference = torch.randn(3, 4, dtype=torch.float64)
    x = torch.randn(3, 4, dtype=torch.float64)
    explain(model, (x,), reference, 0, None, backend="traced")
    y = torch.randn(3, 4, dtype=torch.float64)
    y[1] = reference[1]  # dx = 0 on this row: the secant is 0/0
    before = dict(fast_path.counts)
    fast, _ = explain(model, (y,), reference, 0, None, backend="traced")
    exact, _ = explain(model, (y,), reference, 0, None, backend="interpreter")
    assert fast_path.counts["guard_failed"] == before["guard_failed"] + 1
    torch.testing.assert_close(fast[0], exact[0], rtol=0, atol=0)
    assert torch.isfinite(fast[0]).all() and bool((fast[0][1] == 0).all())
    # afterwards both kinds of data are answered as the interpreter answers them
    for data in (y, x):
        again, _ = explain(model, (data,), reference, 0, None, backend="traced")
        expected, _ = explain(model, (data,), reference, 0, None, backend="interpreter")
        torch.testing.assert_close(again[0], expected[0], rtol=0, atol=1e-14)


@pytest.mark.parametrize("backend", ["traced", "compiled"])
@pytest.mark.parametrize("activation", [torch.relu, torch.tanh, F.gelu], ids=["relu", "tanh", "gelu"])
def test_near_zero_fallbacks_of_one_activation_are_replayed_not_guarded(
    backend: str, activation: Any, aot_eager: None
) -> None:
    """Where the input equals the reference, an activation's multiplier is its derivative at the
    reference: ReLU's ``0 / 0`` is repaired inside ``torch.ops.deltalift.relu_multiplier_repair_``,
    the general Rescale fallback (tanh, GELU) is one step of the program (``fast_path.one_step``).
    A program recorded where no position is at the reference replays data where some are, and
    the reverse, with the interpreter's values and no guard failing (DeepLIFT-SHAP on sequences
    meets such positions in some batches and not others); compiled too (``aot_eager``)."""
    torch.manual_seed(1)
    model = _ReluNet(activation).double().eval()
    reference = torch.randn(3, 4, dtype=torch.float64)
    x = torch.randn(3, 4, dtype=torch.float64)
    y = torch.randn(3, 4, dtype=torch.float64)
    y[1] = reference[1]
    with torch.no_grad():
        pre, pre0 = model.first(y[1]), model.first(reference[1])
    assert bool((pre == pre0).all()) and bool((pre0 > 0).any()) and bool((pre0 <= 0).any())
    explain(model, (x,), reference, 0, None, backend=backend)
    before = dict(fast_path.counts)
    for data in (y, x, y):
        fast, _ = explain(model, (data,), reference, 0, None, backend=backend)
        exact, _ = explain(model, (data,), reference, 0, None, backend="interpreter")
        torch.testing.assert_close(fast[0], exact[0], rtol=0, atol=0)
    assert fast_path.counts["replayed"] - before["replayed"] == 3
    assert fast_path.counts["guard_failed"] == before["guard_failed"]
    assert bool((fast[0][1] == 0).all()) and bool((fast[0][0] != 0).all())


def test_replay_reads_live_weights() -> None:
    torch.manual_seed(2)
    model = _ReluNet().double().eval()
    x = torch.randn(3, 4, dtype=torch.float64)
    explain(model, (x,), None, 1, None, backend="traced")
    with torch.no_grad():
        model.first.weight.mul_(-2.0)
        model.second.bias.add_(1.0)
    before = fast_path.counts["replayed"]
    fast, _ = explain(model, (x,), None, 1, None, backend="traced")
    exact, _ = explain(model, (x,), None, 1, None, backend="interpreter")
    assert fast_path.counts["replayed"] == before + 1
    torch.testing.assert_close(fast[0], exact[0], rtol=0, atol=1e-14)


def test_tensor_target_is_an_input_of_the_program() -> None:
    torch.manual_seed(3)
    model = _ReluNet().double().eval()
    x = torch.randn(3, 4, dtype=torch.float64)
    explain(model, (x,), None, torch.tensor([0, 1, 0]), None, backend="traced")
    fast, _ = explain(model, (x,), None, torch.tensor([1, 0, 1]), None, backend="traced")
    exact, _ = explain(model, (x,), None, torch.tensor([1, 0, 1]), None, backend="interpreter")
    torch.testing.assert_close(fast[0], exact[0], rtol=0, atol=1e-14)


def test_auto_leaves_the_first_call_to_the_interpreter(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DELTALIFT_BACKEND", "traced")
    torch.manual_seed(4)
    model = _ReluNet().double().eval()
    x = torch.randn(2, 4, dtype=torch.float64)
    before = dict(fast_path.counts)
    results = [explain(model, (x,), None, 0, None, backend="auto")[0][0] for _ in range(3)]
    went = {k: fast_path.counts[k] - before[k] for k in before}
    assert went["interpreted"] == 1 and went["recorded"] == 1 and went["replayed"] == 1
    for r in results[1:]:
        torch.testing.assert_close(r, results[0], rtol=0, atol=1e-14)


def test_backend_choice_and_checks(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="backend must be one of"):
        DeepLiftOptions(backend="fastest")
    monkeypatch.setenv("DELTALIFT_BACKEND", "interpreter")
    assert fast_path.default_backend(torch.device("cpu")) == "interpreter"
    monkeypatch.setenv("DELTALIFT_BACKEND", "nope")
    with pytest.raises(ValueError, match="backend must be one of"):
        fast_path.default_backend(torch.device("cpu"))
    monkeypatch.delenv("DELTALIFT_BACKEND")
    assert fast_path.default_backend(torch.device("cpu")) == "traced"
    assert fast_path.default_backend(torch.device("meta")) == "traced"
    fast_path.set_default_backend("compiled")
    try:
        assert fast_path.default_backend(torch.device("cpu")) == "compiled"
    finally:
        fast_path.set_default_backend(None)
    with pytest.raises(ValueError, match="backend must be one of"):
        fast_path.set_default_backend("gpu")


def test_inductors_cache_goes_to_deltalifts_cache_folder(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    monkeypatch.setenv("DELTALIFT_CACHE_DIR", str(tmp_path / "explicit"))
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    fast_path._point_inductor_cache()
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "explicit" / "inductor")
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "mine"))
    fast_path._point_inductor_cache()
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "mine")


def test_the_backend_is_a_constructor_option() -> None:
    torch.manual_seed(5)
    model = _ReluNet().double().eval()
    x = torch.randn(3, 4, dtype=torch.float64)
    with pytest.raises(ValueError, match="backend must be one of"):
        DeepLift(model, backend="fastest")
    before = dict(fast_path.counts)
    traced = [DeepLift(model, backend="traced").attribute(x, 0.0, target=1) for _ in range(2)]
    assert fast_path.counts["recorded"] - before["recorded"] == 1
    assert fast_path.counts["replayed"] - before["replayed"] == 1
    exact = DeepLift(model, backend="interpreter").attribute(x, 0.0, target=1)
    for got in traced:
        torch.testing.assert_close(got, exact, rtol=0, atol=1e-14)


def test_a_large_tensor_from_outside_the_recording_is_refused() -> None:
    """A tensor the recorder did not see being made would be frozen into the program: refused."""
    big = torch.randn(50)

    def walk(x: torch.Tensor) -> list[torch.Tensor]:
        return [x * big]

    with pytest.raises(fast_path.RecordingRefused, match="from outside the recording"):
        fast_path.record(walk, [torch.randn(50)], "traced")
    small = torch.tensor(2.0)
    outputs, program = fast_path.record(lambda x: [x * small], [torch.ones(3)], "traced")
    torch.testing.assert_close(program.run([torch.full((3,), 5.0)])[0], torch.full((3,), 10.0))


def assert_reused_reference_matches(name: str) -> None:
    """``reuse_reference``: recorded at the first call, the reference side computed and kept at
    the second, reused at the third (on inputs other than both): the third must give the
    interpreter's contributions there."""
    model, inputs, extra, target = arch.built(name, torch.float64)
    case = arch.CASES[name]
    kind = "random" if "random" in case.baselines else case.baselines[0]
    baselines = arch.make_baselines(kind, inputs, seed=zlib.crc32(name.encode()))
    options = {"backend": "traced", "reuse_reference": True}
    explain(model, inputs, baselines, target, extra, **options)  # recorded
    second = other_inputs(name, inputs)
    replayed_before = fast_path.counts["replayed"]
    explain(model, second, baselines, target, extra, **options)  # replayed: the reference side kept
    second_replayed = fast_path.counts["replayed"] == replayed_before + 1
    third = tuple(x.flip(0) if x.shape[0] > 1 else x for x in other_inputs(name + "3", inputs))
    before = dict(fast_path.counts)
    fast, fast_delta = explain(model, third, baselines, target, extra, **options)
    went = {k: fast_path.counts[k] - before[k] for k in before}
    exact, exact_delta = explain(model, third, baselines, target, extra, backend="interpreter")
    if second_replayed and went["replayed"] == 1:  # else a guard failed (recorded again) or it was refused
        program_split = went["reference_reused"] == 1
        assert program_split or not _splits(name), f"{name}: the reference side was not reused: {went}"
    for f, e in zip(fast, exact):
        scale = float(e.abs().max()) + 1e-30
        assert float((f - e).abs().max()) <= 1e-10 * scale, f"{name}: the reused reference side differs"
    assert float((fast_delta - exact_delta).abs().max()) <= 1e-10 * (float(exact[0].abs().sum()) + 1e-30)


def _splits(name: str) -> bool:
    """Whether the case's recorded program keeps a reference side apart (some programs write
    into it, and are left whole)."""
    for per_owner in fast_path._cache.values():
        for entry in per_owner[1].entries.values():
            if entry.program is not None and entry.program.reference_side is not None:
                return True
    return False


@pytest.mark.parametrize("name", list(arch.CASES))
@pytest.mark.parametrize("recomputed", ["large values recomputed", "all recomputed"])
def test_reused_reference_side_equals_interpreter_on_the_matrix(
    name: str, recomputed: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the default threshold the matrix's small models keep their element-wise values; at 0
    every element-wise op and view the rest reads is computed again from what is kept."""
    if recomputed == "all recomputed":
        monkeypatch.setattr(fast_path, "RECOMPUTED_BYTES", 0)
    fast_path.clear()
    assert_reused_reference_matches(name)


def test_the_reference_side_is_reused_on_most_of_the_matrix() -> None:
    """The split must serve: the reference side of common architectures is kept apart and reused."""
    before = fast_path.counts["reference_reused"]
    for name in ("functional:F.relu", "torchvision:resnet18", "transformer_encoder", "norms"):
        fast_path.clear()
        assert_reused_reference_matches(name)
    assert fast_path.counts["reference_reused"] - before == 4


def _reuse(model: nn.Module, x: torch.Tensor, reference: Any) -> tuple[torch.Tensor, int]:
    before = fast_path.counts["reference_reused"]
    (contributions,), _ = explain(model, (x,), reference, 1, None, backend="traced", reuse_reference=True)
    (exact,), _ = explain(model, (x,), reference, 1, None, backend="interpreter")
    torch.testing.assert_close(contributions, exact, rtol=0, atol=1e-14)
    return contributions, fast_path.counts["reference_reused"] - before


class _ScaledNet(nn.Module):
    """A tensor attribute that is neither parameter nor buffer (a constant of the captured graph)."""

    def __init__(self) -> None:
        super().__init__()
        self.first, self.norm, self.last = nn.Linear(4, 6), nn.BatchNorm1d(6), nn.Linear(6, 2)
        self.scale = torch.linspace(0.5, 2.0, 6, dtype=torch.float64)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.last(torch.relu(self.norm(self.first(x)) * self.scale))


def test_a_changed_reference_or_model_state_is_recomputed_not_reused() -> None:
    """Each change the reference side depends on (the reference's values, also written in place
    by the caller; a parameter written in place, replaced, given new ``.data`` or written through
    ``.data``, which leaves its version counter alone; a buffer written in place or through
    ``.data``; a constant tensor of the model written in place or through ``.data``) makes the
    next call compute it again; an unchanged call reuses it."""
    torch.manual_seed(5)
    model = _ScaledNet().double().eval()
    x = torch.randn(3, 4, dtype=torch.float64)
    reference = torch.randn(1, 4, dtype=torch.float64)
    for _ in range(2):
        _reuse(model, x, reference)  # recorded, then kept
    assert _reuse(model, x + 1, reference)[1] == 1
    changes = {
        "reference values": lambda: reference.mul_(0.5),
        "weight in place": lambda: model.first.weight.add_(0.1),
        "weight replaced": lambda: setattr(model.last, "weight", nn.Parameter(torch.randn(2, 6, dtype=torch.float64))),
        "weight .data": lambda: setattr(model.first.weight, "data", torch.randn(6, 4, dtype=torch.float64)),
        "weight written through .data": lambda: model.first.weight.data[1, 2].add_(1e-12),
        "weight negated through .data": lambda: model.first.weight.data.neg_(),
        "weight's magnitudes through .data": lambda: model.first.weight.data.abs_(),
        "bias written through .data": lambda: model.last.bias.data.mul_(1.5),
        "buffer in place": lambda: model.norm.running_mean.add_(0.2),
        "buffer written through .data": lambda: model.norm.running_var.data.add_(0.3),
        "constant in place": lambda: model.scale.mul_(1.25),
        "constant written through .data": lambda: model.scale.data[0].fill_(3.0),
    }
    for what, change in changes.items():
        with torch.no_grad():
            change()
        assert _reuse(model, x, reference)[1] == 0, f"{what}: the kept reference side was reused"
        assert _reuse(model, x - 1, reference)[1] == 1, f"{what}: then it is kept again"


def test_the_reference_side_is_reused_by_default_where_the_reference_is_shared() -> None:
    """``reuse_reference=None`` (default): reused for a reference of batch size one, not for a
    batch of per-example references (which ``True`` reuses too, ``False`` neither)."""
    torch.manual_seed(7)
    model = _ReluNet().double().eval()
    x = torch.randn(3, 4, dtype=torch.float64)
    shared, per_example = torch.randn(1, 4, dtype=torch.float64), torch.randn(3, 4, dtype=torch.float64)
    for reference, choice, reused in [
        (shared, None, True),
        (per_example, None, False),
        (per_example, True, True),
        (shared, False, False),
    ]:
        before = fast_path.counts["reference_reused"]
        for _ in range(3):
            got, _ = explain(model, (x,), reference, 1, None, backend="traced", reuse_reference=choice)
        exact, _ = explain(model, (x,), reference, 1, None, backend="interpreter")
        torch.testing.assert_close(got[0], exact[0], rtol=0, atol=1e-14)
        assert (fast_path.counts["reference_reused"] - before > 0) == reused, (tuple(reference.shape), choice)


@pytest.mark.parametrize(
    "dtype", [torch.float64, torch.float32, torch.bfloat16, torch.float16, torch.int64, torch.bool]
)
@pytest.mark.parametrize("rows", [5, 5000])  # grouped with the other small tensors, or (mostly) summed on its own
def test_fingerprint_sees_any_one_element_changed(dtype: torch.dtype, rows: int) -> None:
    """The fingerprint is exact: changing one element by its smallest step changes it, in every
    dtype; the same values give the same fingerprint (also as another tensor)."""
    g = torch.Generator().manual_seed(0)
    t = torch.randn(rows, 7, generator=g).mul(10).to(dtype)
    other = torch.randn(6000, 5, generator=g)
    before = fast_path.fingerprint([t, other, t.t()])
    assert fast_path._same(before, fast_path.fingerprint([t.clone(), other.clone(), t.t().clone()]))
    changed = t.clone()
    if dtype.is_floating_point:
        changed[2, 3] = torch.nextafter(changed[2, 3], torch.tensor(float("inf"), dtype=dtype))
    else:
        changed[2, 3] = ~changed[2, 3] if dtype is torch.bool else changed[2, 3] + 1
    after = fast_path.fingerprint([changed, other, t.t()])
    assert before is not None and after is not None
    assert not torch.equal(before[0], after[0])  # the word sums alone see it
    untouched = int(t.numel() * t.element_size() >= fast_path.FINGERPRINT_GROUPED)  # the other tensor's own sum
    assert int(after[0][untouched]) == int(before[0][untouched])


def test_fingerprint_sees_sign_changes_and_reads_misaligned_tensors() -> None:
    """A change of sign moves a word by ``2**31``, so two cancel modulo ``2**32``: the float sum
    sees them (negation, magnitudes, one pair of signs flipped).  A half-precision tensor that
    starts inside a word of a shared buffer is read as bytes."""
    g = torch.Generator().manual_seed(1)
    for rows in (4, 5000):
        t = torch.randn(rows, 8, generator=g)
        flipped = t.clone()
        flipped[0, :2] = -flipped[0, :2]
        for changed in (-t, t.abs(), flipped):
            assert not fast_path._same(fast_path.fingerprint([t]), fast_path.fingerprint([changed]))
    flat = torch.randn(40001, generator=g).half()
    part = flat[1:]
    before = fast_path.fingerprint([part])
    assert before is not None and fast_path._same(before, fast_path.fingerprint([part.clone()]))
    flat[7] += 1
    assert not fast_path._same(before, fast_path.fingerprint([part]))
    assert fast_path.fingerprint([t, torch.eye(3).to_sparse()]) is None  # no bytes to read: nothing reused


class _Opaque(torch.Tensor):
    """A tensor subclass whose ``__torch_dispatch__`` handles ``detach`` alone."""

    @staticmethod
    def __new__(cls, elem: torch.Tensor) -> Any:
        return torch.Tensor._make_wrapper_subclass(cls, elem.shape, dtype=elem.dtype)

    def __init__(self, elem: torch.Tensor) -> None:
        self.elem = elem

    @classmethod
    def __torch_dispatch__(cls, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        if func is torch.ops.aten.detach.default:
            return _Opaque(args[0].elem)
        return NotImplemented


class _Refusing(_Opaque):
    """A tensor subclass that refuses every op but ``detach`` explicitly."""

    @classmethod
    def __torch_dispatch__(cls, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        if func is torch.ops.aten.detach.default:
            return _Refusing(args[0].elem)
        raise NotImplementedError(f"{func} is not supported")


def test_fingerprint_of_tensors_without_readable_bytes_is_none() -> None:
    """Sparse and nested tensors raise ``RuntimeError`` at the view of their bytes, a subclass
    that does not handle it ``TypeError``, one that refuses it ``NotImplementedError``: no
    fingerprint, so nothing is reused (not an error)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # nested tensors are a prototype, and say so
        nested = torch.nested.nested_tensor([torch.randn(2), torch.randn(3)])
    for unreadable in (torch.eye(3).to_sparse(), nested, _Opaque(torch.randn(4)), _Refusing(torch.randn(4))):
        assert fast_path.fingerprint([torch.randn(3), unreadable]) is None


def test_a_reference_side_that_costs_less_than_its_checks_is_not_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where computing the reference side takes less than ``CHECKS_PER_COMPUTATION`` times its
    fingerprint (timed at its first computation), the program before the split runs at every
    call and nothing is held; the values are the same."""
    torch.manual_seed(9)
    model = _ReluNet().double().eval()
    x, reference = torch.randn(3, 4, dtype=torch.float64), torch.randn(1, 4, dtype=torch.float64)
    exact, _ = explain(model, (x,), reference, 1, None, backend="interpreter")
    for factor, kept in [(1e9, False), (0.0, True)]:
        monkeypatch.setattr(fast_path, "CHECKS_PER_COMPUTATION", factor)
        fast_path.clear()
        before = fast_path.counts["reference_reused"]
        for _ in range(4):
            got, _ = explain(model, (x,), reference, 1, None, backend="traced")
            torch.testing.assert_close(got[0], exact[0], rtol=0, atol=1e-14)
        sides = [e.program.reference_side for _, p in fast_path._cache.values() for e in p.entries.values()]
        assert [side.pays for side in sides if side is not None] == [kept]
        assert (fast_path.counts["reference_reused"] > before) == kept
        assert [side.values is not None for side in sides if side is not None] == [kept]  # nothing held


def _kept_ops(program: Any) -> list[str]:
    """The ops whose values the reference side keeps, by name (``aten.exp``: an op written into a
    dying argument, ``aten.exp.out``, is still ``exp``)."""
    side = program.reference_side.module.graph
    (output,) = [n for n in side.nodes if n.op == "output"]
    return [f"aten.{n.target.overloadpacket.__name__}" for n in output.args[0]]


@pytest.mark.parametrize("smallest_recomputed", [0, 2**20])
def test_the_reference_side_keeps_dense_layers_and_recomputes_element_wise_ops(
    smallest_recomputed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What is kept of the reference side are the costly values (a matrix product, a reduction);
    the element-wise ops and views the rest reads are computed again from them at every call,
    except where that would keep a larger value than their own (a row copied out of a repeated
    reference) or where they are small (below ``RECOMPUTED_BYTES``: all of them here at 1 MiB).
    The replayed values are the unsplit program's."""
    monkeypatch.setattr(fast_path, "RECOMPUTED_BYTES", smallest_recomputed)

    def walk(weight: torch.Tensor, reference: torch.Tensor, x: torch.Tensor) -> list[torch.Tensor]:
        h0, h = reference @ weight, x @ weight
        y0 = torch.tanh(h0)
        m = (torch.tanh(h) - y0) / (h - h0)  # Rescale's secant, reading h0 and tanh(h0)
        total0 = torch.logsumexp(h0, 1, keepdim=True)
        repeated = torch.empty_like(x).copy_(reference.expand_as(x))  # a reference expanded to the batch
        row = repeated[:1].clone()
        return [m * (h0 - total0).exp(), x * row]

    g = torch.Generator().manual_seed(0)
    weight, reference = torch.randn(5, 7, generator=g), torch.randn(1, 5, generator=g)
    x = torch.randn(3, 5, generator=g)
    expected, program = fast_path.record(walk, [weight, reference, x], "traced", reused=([0], [1]))
    kept = sorted(_kept_ops(program))
    if smallest_recomputed:  # tanh(h0), h0 - total0, its exponential: small, kept
        assert "aten.tanh" in kept and "aten.exp" in kept
    else:
        assert kept == ["aten.clone", "aten.logsumexp", "aten.mm"]
    for _ in range(3):  # computed and kept, then reused
        got = program.run([weight, reference, x])
        for a, b in zip(got, expected):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert program.reference_side.values is not None


def test_a_convolution_of_few_products_per_value_is_recomputed_not_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    """Of the reference side's convolutions, a stem on three channels (27 products per value)
    and a depthwise one (9) are computed again at every call; one of 72 products per value is
    kept, and so is a transposed convolution.  The replayed values are the unsplit program's."""
    monkeypatch.setattr(fast_path, "RECOMPUTED_BYTES", 0)

    def layers(t: torch.Tensor, stem: torch.Tensor, depthwise: torch.Tensor, dense: torch.Tensor) -> list[torch.Tensor]:
        first = F.conv2d(t, stem, padding=1)
        second = F.conv2d(torch.relu(first), depthwise, padding=1, groups=8)
        third = F.conv2d(second, dense, padding=1)
        return [first, second, third, F.conv_transpose2d(third, dense[:, :1])]

    def walk(*values: torch.Tensor) -> list[torch.Tensor]:
        *weights, reference, x = values
        return [a - b for a, b in zip(layers(x, *weights), layers(reference, *weights))]

    g = torch.Generator().manual_seed(4)
    weights = [torch.randn(shape, generator=g) for shape in [(8, 3, 3, 3), (8, 1, 3, 3), (8, 8, 3, 3)]]
    reference, x = torch.randn(1, 3, 6, 6, generator=g), torch.randn(2, 3, 6, 6, generator=g)
    inputs = [*weights, reference, x]
    expected, program = fast_path.record(walk, inputs, "traced", reused=([0, 1, 2], [3]))
    kept = [n for n in list(program.reference_side.module.graph.nodes)[-1].args[0]]
    assert [str(n.target) for n in kept] == ["aten.convolution.default"] * 2
    assert [n.args[6] for n in kept] == [False, True]  # the dense one and the transposed one
    for _ in range(3):
        got = program.run(inputs)
        for a, b in zip(got, expected):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert program.reference_side.values is not None


def test_only_the_state_the_reference_side_reads_is_watched() -> None:
    """A weight read only outside the reference side (a dense layer that takes the reference's
    rows together with the input's, as the engine does where the weight is large) is not
    fingerprinted: writing it through ``.data`` leaves the kept values reused (they do not depend
    on it) and the replay reads it live; writing the weight the reference side reads makes the
    next call compute it again."""

    def walk(inner: torch.Tensor, outer: torch.Tensor, reference: torch.Tensor, x: torch.Tensor) -> list[torch.Tensor]:
        h0, h = torch.relu(reference @ inner), torch.relu(x @ inner)
        both = torch.cat([h, h0]) @ outer
        return [both[: len(x)] - both[len(x) :]]

    g = torch.Generator().manual_seed(3)
    inner, outer = torch.randn(5, 6, generator=g), torch.randn(6, 2, generator=g)
    reference, x = torch.randn(1, 5, generator=g), torch.randn(3, 5, generator=g)
    _, program = fast_path.record(walk, [inner, outer, reference, x], "traced", reused=([0, 1], [2]))
    side = program.reference_side
    assert side.state == (0,)
    assert len([n for n in side.module.graph.nodes if n.op == "placeholder"]) == 2  # inner, reference

    def replay_and_count() -> int:
        before = fast_path.counts["reference_reused"]
        (got,) = program.run([inner, outer, reference, x])
        torch.testing.assert_close(got, walk(inner, outer, reference, x)[0], rtol=0, atol=0)
        return fast_path.counts["reference_reused"] - before

    replay_and_count()  # computed and kept
    assert replay_and_count() == 1
    outer.data.mul_(-2.0)
    assert replay_and_count() == 1  # the values kept do not read it; the rest reads it live
    inner.data[0, 0] += 1.0
    assert replay_and_count() == 0
    assert replay_and_count() == 1


def _in_two_threads(work: Any) -> None:
    """``work(0)`` and ``work(1)`` in two threads that switch as often as possible."""
    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(switch)


def test_threads_explaining_against_different_references_get_their_own_values() -> None:
    """Two threads replaying one program against two references: each call's kept reference side
    is checked and read under one lock (without it, a call could read the values another thread
    had just computed for its own reference: 6 of 600 calls were wrong when this was written)."""
    torch.manual_seed(8)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2)).double().eval()
    x = torch.randn(3, 4, dtype=torch.float64)
    references = [torch.randn(1, 4, dtype=torch.float64) for _ in range(2)]
    exact = [explain(model, (x,), r, 1, None, backend="interpreter")[0][0] for r in references]
    for r in references:
        explain(model, (x,), r, 1, None, backend="traced")
    wrong: list[int] = []

    def explain_often(i: int) -> None:
        for _ in range(300):
            got = explain(model, (x,), references[i], 1, None, backend="traced")[0][0]
            if not torch.allclose(got, exact[i], rtol=0, atol=1e-12):
                wrong.append(i)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a wrong value would also fail the convergence check
        _in_two_threads(explain_often)
    assert not wrong


def test_threads_whose_calls_fail_each_others_guards_get_exact_values(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two threads explaining with one program, one with inputs equal to the reference at some
    positions (the near-zero fallback of ``maximum``) and one without: each call fails the guard the
    other's recording took, so the program is dropped and recorded again while the other thread is
    about to replay it.  Every call still gives the interpreter's values and none raises."""
    monkeypatch.setattr(fast_path, "MAX_RECORDINGS", 10**6)  # never give up: keep the race going
    torch.manual_seed(9)
    model = _ReluNet(_maximum_with_flipped).double().eval()
    reference = torch.zeros(1, 4, dtype=torch.float64)
    inputs = [torch.randn(3, 4, dtype=torch.float64), torch.randn(3, 4, dtype=torch.float64)]
    inputs[1][0] = 0.0  # a row at the reference: x == x0 after the first layer
    exact = [explain(model, (x,), reference, 1, None, backend="interpreter")[0][0] for x in inputs]
    failures: list[str] = []
    together = threading.Barrier(2, timeout=60)

    def explain_often(i: int) -> None:
        for _ in range(150):
            together.wait()  # both calls at once, whatever the machine's load: each meets the other's program
            try:
                got = explain(model, (inputs[i],), reference, 1, None, backend="traced")[0][0]
            except Exception as exc:  # noqa: BLE001 - what a race would raise is the finding
                failures.append(repr(exc))
                continue
            if not torch.allclose(got, exact[i], rtol=0, atol=1e-12):
                failures.append(f"thread {i}: wrong values")

    before = fast_path.counts["guard_failed"]
    _in_two_threads(explain_often)
    assert not failures, failures[:3]
    assert fast_path.counts["guard_failed"] - before > 10  # the threads did fail each other's guards


def test_a_value_written_in_place_after_it_is_read_is_not_recomputed_from_the_kept_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The reference side reads ``tanh(h0)`` and then writes into ``h0`` through a view: what is
    kept of ``h0`` is its value after the write, so ``tanh(h0)`` must be kept, not recomputed from
    it; and a returned view of a kept value is a copy, not the kept storage."""
    monkeypatch.setattr(fast_path, "RECOMPUTED_BYTES", 0)

    def walk(weight: torch.Tensor, reference: torch.Tensor, x: torch.Tensor) -> list[torch.Tensor]:
        h0 = reference @ weight
        y0 = torch.tanh(h0)
        h0.view(-1).add_(1.0)
        return [x @ weight * y0 + h0, (reference @ weight).t()]  # a view of a kept product

    g = torch.Generator().manual_seed(2)
    weight, reference, x = (
        torch.randn(5, 7, generator=g),
        torch.randn(1, 5, generator=g),
        torch.randn(3, 5, generator=g),
    )
    expected, program = fast_path.record(walk, [weight, reference, x], "traced", reused=([0], [1]))
    assert program.reference_side is not None and "aten.tanh" in _kept_ops(program)
    for _ in range(3):
        got = program.run([weight, reference, x])
        for a, b in zip(got, expected):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
        kept = {v.untyped_storage().data_ptr() for v in program.reference_side.values}
        assert got[1].untyped_storage().data_ptr() not in kept


def test_only_one_program_keeps_its_reference_side() -> None:
    """The kept values are one reference side's: a second program's call drops the first's."""
    torch.manual_seed(6)
    first, second = _ReluNet().double().eval(), _ReluNet().double().eval()
    x = torch.randn(3, 4, dtype=torch.float64)
    for _ in range(3):
        _reuse(first, x, None)
    kept = [e.program.reference_side for _, p in fast_path._cache.values() for e in p.entries.values() if e.program]
    assert any(side is not None and side.values is not None for side in kept)
    for _ in range(3):
        _reuse(second, x, None)
    holding = [
        e.program.reference_side
        for _, p in fast_path._cache.values()
        for e in p.entries.values()
        if e.program and e.program.reference_side and e.program.reference_side.values is not None
    ]
    assert len(holding) == 1


def test_a_write_into_the_reference_side_leaves_the_program_whole() -> None:
    """Splitting is refused where an op of the rest writes into a value of the reference side
    (reusing it would hand the next call a value this call changed); a buffer the reference side
    fills itself stays in it."""

    def writes_into_it(state: torch.Tensor, x: torch.Tensor) -> list[torch.Tensor]:
        kept = state * 2
        return [kept.add_(x)]

    def fills_its_own(state: torch.Tensor, x: torch.Tensor) -> list[torch.Tensor]:
        buffer = torch.empty_like(state).copy_(state.exp())
        return [buffer * x]

    state, x = torch.randn(3), torch.randn(3)
    _, program = fast_path.record(writes_into_it, [state, x], "traced", reused=([0], []))
    assert program.reference_side is None
    _, program = fast_path.record(fills_its_own, [state, x], "traced", reused=([0], []))
    assert program.reference_side is not None
    for _ in range(2):
        torch.testing.assert_close(program.run([state, x])[0], state.exp() * x)


def test_a_step_is_one_node_that_declares_its_writes_and_holds_no_tensor() -> None:
    """``fast_path.one_step`` outside a recording just runs the step; in one, the step is one node
    of the program whose written arguments the reference side's checks see, and the steps the
    rules record hold no tensor (a program lives on; the recording's activations must not)."""
    import gc
    import types

    from deltalift.rules.rescale import _NearZeroRepair

    calls: list[int] = []

    def step(a: torch.Tensor, b: torch.Tensor) -> None:
        calls.append(1)
        a.add_(b)

    step.writes = (0,)  # type: ignore[attr-defined]
    a, b = torch.zeros(3), torch.ones(3)
    fast_path.one_step(step, a, b)
    assert calls == [1] and torch.equal(a, torch.ones(3))

    torch.manual_seed(3)
    model = _ReluNet(F.gelu).double().eval()
    reference = torch.randn(3, 4, dtype=torch.float64)
    x = torch.randn(3, 4, dtype=torch.float64)
    explain(model, (x,), reference, 0, None, backend="traced")
    (program,) = [entry.program for _, cache in fast_path._cache.values() for entry in cache.entries.values()][-1:]
    graphs = [program.module.graph] + ([program.whole.graph] if program.whole is not None else [])
    steps = [n for g in graphs for n in g.nodes if isinstance(n.target, _NearZeroRepair)]
    assert steps and all(fast_path._written_arguments(n) == [n.args[0], n.args[1]] for n in steps)

    def reachable_tensors(root: object, depth: int = 8) -> list[torch.Tensor]:
        """Tensors reachable from ``root`` through instances, closures and containers (not
        through modules or classes)."""
        found: list[torch.Tensor] = []
        seen, frontier = {id(root)}, [root]
        for _ in range(depth):
            following = []
            for obj in frontier:
                for ref in gc.get_referents(obj):
                    if id(ref) in seen or isinstance(ref, (type, types.ModuleType, str, bytes, int, float)):
                        continue
                    seen.add(id(ref))
                    if isinstance(ref, torch.Tensor):
                        found.append(ref)
                    elif not isinstance(ref, dict) or "__builtins__" not in ref:  # not a module's globals
                        following.append(ref)
            frontier = following
        return found

    assert not reachable_tensors(steps[0].target)
    held = torch.ones(2)  # the check itself finds a tensor a step's function holds
    assert reachable_tensors(_NearZeroRepair(lambda v: v * held, 1e-7, torch.Size([2])))
