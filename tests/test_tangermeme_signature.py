"""deltalift.genomics.deep_lift_shap as a drop-in for tangermeme.deep_lift_shap.deep_lift_shap.

Called as tangermeme's README and documentation call it, compared value for value with
tangermeme's own function on a small float64 model (Conv1d -> ReLU -> max pooling -> Linear, where
tangermeme's hooks are exact) given the same references, and checked option by option.
"""

from __future__ import annotations

import inspect
import warnings

import numpy as np
import pytest
import torch
from torch import nn

import deltalift
from deltalift.genomics import (
    AttributionReferences,
    ConvergenceThresholdWarning,
    deep_lift_shap,
    dinucleotide_shuffle,
    one_hot_encode,
)

DTYPE = torch.float64
N, L, K = 5, 40, 6
TIGHT = {"rtol": 1e-9, "atol": 1e-12}  # both tools in float64


def conv_model(dtype=DTYPE, outputs: int = 3) -> nn.Module:
    torch.manual_seed(0)
    return (
        nn.Sequential(
            nn.Conv1d(4, 8, 7, padding=3),
            nn.ReLU(),
            nn.MaxPool1d(4),
            nn.Flatten(),
            nn.Linear(8 * (L // 4), outputs),
        )
        .to(dtype)
        .eval()
    )


class GatedModel(nn.Module):
    """A model with an additional input: a per-sequence gain multiplying the outputs."""

    def __init__(self) -> None:
        super().__init__()
        self.body = conv_model()

    def forward(self, x: torch.Tensor, gain: torch.Tensor) -> torch.Tensor:
        return self.body(x) * gain[:, None]


def random_one_hot(n: int, length: int = L, seed: int = 1, dtype=DTYPE) -> torch.Tensor:
    letters = np.random.default_rng(seed).integers(0, 4, (n, length))
    return torch.nn.functional.one_hot(torch.from_numpy(letters), 4).permute(0, 2, 1).to(dtype)


@pytest.fixture(scope="module")
def tangermeme():
    return pytest.importorskip("tangermeme.deep_lift_shap")


@pytest.fixture(scope="module")
def tangermeme_shuffle():
    return pytest.importorskip("tangermeme.ersatz").dinucleotide_shuffle


@pytest.fixture(scope="module")
def data():
    X = random_one_hot(N)
    refs = dinucleotide_shuffle(X, n=K, random_state=0)
    return conv_model(), X, refs


def theirs(tangermeme, *args, **kwargs):
    """tangermeme's deep_lift_shap on the CPU, its warnings silenced."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return tangermeme.deep_lift_shap(*args, device="cpu", **kwargs)


# --------------------------------------------------------------------------------------------------
# The signature and the documented calls


def test_signature_is_tangermemes(tangermeme):
    ours = list(inspect.signature(deep_lift_shap).parameters.values())
    reference = list(inspect.signature(tangermeme.deep_lift_shap).parameters.values())
    assert [p.name for p in ours[: len(reference)]] == [p.name for p in reference]
    for mine, its in zip(ours, reference):
        assert mine.kind == its.kind, mine.name
        if mine.name == "references":
            assert mine.default is dinucleotide_shuffle  # deltalift's shuffler in tangermeme's place
        else:
            assert mine.default == its.default, mine.name
    extras = ours[len(reference) :]
    assert extras and all(p.kind in (p.KEYWORD_ONLY, p.VAR_KEYWORD) for p in extras)
    assert {"return_convergence_delta", "additional_forward_args", "show_progress"} <= {p.name for p in extras}


def test_readme_call(data, tangermeme):
    model, X, _ = data
    # tangermeme's README: X_attr = deep_lift_shap(model, X, target=0, random_state=0)
    X_attr, refs = deep_lift_shap(model, X, target=0, random_state=0, return_references=True)
    assert X_attr.shape == X.shape and X_attr.dtype == DTYPE and X_attr.device.type == "cpu"
    assert refs.shape == (N, 20, 4, L)
    torch.testing.assert_close(X_attr, theirs(tangermeme, model, X, target=0, references=refs), **TIGHT)
    torch.testing.assert_close(X_attr, deep_lift_shap(model, X, target=0, random_state=0), rtol=0, atol=0)


def test_positional_order_is_tangermemes(data, tangermeme):
    model, X, refs = data
    keyword = deep_lift_shap(model, X, args=None, target=1, batch_size=7, references=refs)
    positional = deep_lift_shap(model, X, None, 1, 7, refs)
    torch.testing.assert_close(positional, keyword, rtol=0, atol=0)
    torch.testing.assert_close(positional, theirs(tangermeme, model, X, None, 1, 7, refs), **TIGHT)
    # the third positional is args: None there leaves target at its default 0
    third = deep_lift_shap(model, X, None, references=refs)
    torch.testing.assert_close(third, deep_lift_shap(model, X, target=0, references=refs), rtol=0, atol=0)
    assert not torch.allclose(third, keyword)


@pytest.mark.parametrize("target", [0, 2])
@pytest.mark.parametrize("hypothetical", [False, True])
def test_values_equal_tangermemes_on_the_same_references(data, tangermeme, target, hypothetical):
    model, X, refs = data
    ours = deep_lift_shap(model, X, target=target, references=refs, hypothetical=hypothetical)
    torch.testing.assert_close(
        ours, theirs(tangermeme, model, X, target=target, references=refs, hypothetical=hypothetical), **TIGHT
    )


def test_raw_outputs_and_references_equal_tangermemes(data, tangermeme):
    model, X, refs = data
    ours = deep_lift_shap(model, X, target=1, references=refs, raw_outputs=True, return_references=True)
    its = theirs(tangermeme, model, X, target=1, references=refs, raw_outputs=True, return_references=True)
    assert isinstance(ours, AttributionReferences) and ours.attributions.shape == (N, K, 4, L)
    torch.testing.assert_close(ours.attributions, its.attributions, **TIGHT)
    torch.testing.assert_close(ours.references, its.references, rtol=0, atol=0)


def test_a_tangermeme_reference_function_gives_tangermemes_references(data, tangermeme, tangermeme_shuffle):
    model, X, _ = data
    attributions, refs = deep_lift_shap(
        model, X, references=tangermeme_shuffle, n_shuffles=K, random_state=3, return_references=True
    )
    its = theirs(tangermeme, model, X, n_shuffles=K, random_state=3, return_references=True)
    torch.testing.assert_close(refs, its.references.to(DTYPE), rtol=0, atol=0)
    torch.testing.assert_close(attributions, its.attributions, **TIGHT)


def test_a_user_reference_function_is_called_as_tangermeme_calls_it(data, tangermeme):
    model, X, _ = data
    calls = []

    def position_shuffle(X, n=20, random_state=None):
        calls.append((tuple(X.shape), n, random_state))
        rng = np.random.RandomState(random_state)
        order = torch.from_numpy(np.stack([rng.permutation(X.shape[-1]) for _ in range(len(X) * n)]))
        return X.repeat_interleave(n, 0).gather(-1, order[:, None].expand(-1, X.shape[1], -1)).unflatten(0, (len(X), n))

    ours = deep_lift_shap(model, X, references=position_shuffle, n_shuffles=K, random_state=7, return_references=True)
    assert set(calls) == {((1, 4, L), 1, 7 + k) for k in range(K)} and len(calls) == N * K
    its = theirs(
        tangermeme, model, X, references=position_shuffle, n_shuffles=K, random_state=7, return_references=True
    )
    torch.testing.assert_close(ours.references, its.references, rtol=0, atol=0)
    torch.testing.assert_close(ours.attributions, its.attributions, **TIGHT)

    def unseeded(X, n):  # written for tangermeme's unseeded calls: no random_state argument
        return X.flip(-1)[:, None].repeat(1, n, 1, 1)

    attributions, refs = deep_lift_shap(model, X, references=unseeded, n_shuffles=3, return_references=True)
    torch.testing.assert_close(refs, X.flip(-1)[:, None].repeat(1, 3, 1, 1), rtol=0, atol=0)
    torch.testing.assert_close(attributions, deep_lift_shap(model, X, references=refs), rtol=0, atol=0)


def test_a_reference_function_of_the_wrong_shape_is_refused(data):
    model, X, _ = data
    with pytest.raises(ValueError, match=r"returned \(1, 2, 4, 40\), expected \(1, 1, 4, 40\)"):
        deep_lift_shap(
            model, X, references=lambda X, n, random_state=None: X[:, None].repeat(1, 2, 1, 1), random_state=0
        )


def test_args_are_additional_inputs_one_row_per_sequence(tangermeme):
    model, X = GatedModel().to(DTYPE).eval(), random_one_hot(N)
    gain = torch.linspace(0.5, 2.0, N, dtype=DTYPE)
    refs = dinucleotide_shuffle(X, n=K, random_state=0)
    ours = deep_lift_shap(model, X, (gain,), 1, references=refs)
    torch.testing.assert_close(ours, theirs(tangermeme, model, X, (gain,), 1, references=refs), **TIGHT)
    torch.testing.assert_close(
        deep_lift_shap(model, X[1:3], (gain[1:3],), 1, references=refs[1:3]), ours[1:3], rtol=0, atol=0
    )
    torch.testing.assert_close(
        deep_lift_shap(model, X, target=1, references=refs, additional_forward_args=(gain,)), ours, rtol=0, atol=0
    )
    with pytest.raises(ValueError, match="one row per sequence"):
        deep_lift_shap(model, X, (gain[:2],), references=refs)


# --------------------------------------------------------------------------------------------------
# Independence of the other sequences, of the batch size, and determinism


def test_a_sequence_does_not_depend_on_the_others():
    model, X = conv_model(), random_one_hot(9)
    full = deep_lift_shap(model, X, random_state=0)
    assert torch.equal(full[:2], deep_lift_shap(model, X[:2], random_state=0))
    assert torch.equal(full[4:7], deep_lift_shap(model, X[4:7], random_state=0))
    assert torch.equal(full.flip(0), deep_lift_shap(model, X.flip(0), random_state=0))
    twice = deep_lift_shap(model, torch.cat([X[:1], X[:1]]), random_state=0)
    assert torch.equal(twice[0], twice[1]) and torch.equal(twice[0], full[0])


@pytest.mark.parametrize("n_shuffles", [1, 5, 20])
def test_the_batch_size_does_not_change_the_results(n_shuffles):
    model, X = conv_model(), random_one_hot(7)
    results = [
        deep_lift_shap(model, X, batch_size=b, n_shuffles=n_shuffles, random_state=0, return_references=True)
        for b in (1, 3, 32, 1000)
    ]
    for result in results[1:]:
        assert torch.equal(result.references, results[0].references)
        torch.testing.assert_close(result.attributions, results[0].attributions, rtol=1e-12, atol=1e-15)
    raw = [
        deep_lift_shap(model, X, batch_size=b, n_shuffles=n_shuffles, random_state=0, raw_outputs=True) for b in (2, 64)
    ]
    torch.testing.assert_close(raw[0], raw[1], rtol=1e-12, atol=1e-15)


def test_identical_calls_give_identical_results(data):
    model, X, _ = data
    assert torch.equal(deep_lift_shap(model, X, random_state=5), deep_lift_shap(model, X, random_state=5))
    generated = [deep_lift_shap(model, X, random_state=np.random.default_rng(2)) for _ in range(2)]
    assert torch.equal(*generated)
    assert not torch.equal(deep_lift_shap(model, X, random_state=5), deep_lift_shap(model, X, random_state=6))
    assert not torch.equal(deep_lift_shap(model, X), deep_lift_shap(model, X))  # None: fresh entropy
    with pytest.raises(TypeError, match="random_state"):
        deep_lift_shap(model, X, random_state=np.random.RandomState(0))


def test_default_references_are_uniform_dinucleotide_shuffles_of_each_sequence(data):
    model, X, _ = data
    _, refs = deep_lift_shap(model, X, n_shuffles=K, random_state=0, return_references=True)
    assert refs.shape == (N, K, 4, L)
    letters, shuffled = X.argmax(1), refs.argmax(2)
    for i in range(N):
        counts = torch.bincount(letters[i, :-1] * 4 + letters[i, 1:], minlength=16)
        for k in range(K):
            assert torch.equal(torch.bincount(shuffled[i, k, :-1] * 4 + shuffled[i, k, 1:], minlength=16), counts)
    assert not torch.equal(refs[:, 0], X)
    # None and deltalift's other shufflers are accepted in the same way
    _, same = deep_lift_shap(model, X, references=None, n_shuffles=K, random_state=0, return_references=True)
    assert torch.equal(same, refs)


# --------------------------------------------------------------------------------------------------
# Options


def test_hypothetical_false_is_hypothetical_times_the_one_hot_input(data):
    model, X, refs = data
    actual = deep_lift_shap(model, X, references=refs)
    hypothetical = deep_lift_shap(model, X, references=refs, hypothetical=True)
    torch.testing.assert_close(actual, hypothetical * X, rtol=0, atol=0)
    assert torch.equal(actual * (1 - X), torch.zeros_like(X))
    assert not torch.allclose(hypothetical * (1 - X), torch.zeros_like(X))


def test_raw_outputs_are_the_multipliers_of_every_pair(data):
    model, X, refs = data
    m = deep_lift_shap(model, X, target=2, references=refs, raw_outputs=True)
    assert m.shape == (N, K, 4, L)
    hyp = (m - (m * refs).sum(2, keepdim=True)).mean(1)
    torch.testing.assert_close(hyp, deep_lift_shap(model, X, target=2, references=refs, hypothetical=True), **TIGHT)
    single = deltalift.DeepLift(model, multiply_by_inputs=False).attribute(X[:1], refs[0, 3:4], target=2)
    torch.testing.assert_close(m[0, 3:4], single, **TIGHT)


def test_warning_threshold_is_absolute():
    model = conv_model(torch.float32)
    with torch.no_grad():
        model[-1].weight.mul_(1e6)  # outputs of order 1e7: float32 rounding alone exceeds 1e-3
    X = random_one_hot(4, dtype=torch.float32)
    with pytest.warns(ConvergenceThresholdWarning, match="exceed warning_threshold=0.001") as record:
        deep_lift_shap(model, X, random_state=0)
    assert issubclass(record[0].category, RuntimeWarning)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceThresholdWarning)
        deep_lift_shap(model, X, random_state=0, warning_threshold=None)
        deep_lift_shap(model, X, random_state=0, warning_threshold=1e3)
        deep_lift_shap(conv_model(), random_one_hot(4), random_state=0)  # float64: deltas ~1e-16


def test_print_convergence_deltas(data, capsys):
    model, X, refs = data
    _, deltas = deep_lift_shap(model, X, references=refs, print_convergence_deltas=True, return_convergence_delta=True)
    printed = capsys.readouterr().out
    assert deltas.shape == (N * K,) and deltas.abs().max() < 1e-12
    assert printed.count("tensor(") == -(-N // max(1, 32 // K))  # one line per batch


@pytest.mark.parametrize("as_tensor", [False, True])
def test_one_target_per_sequence(data, as_tensor):
    model, X, refs = data
    targets = [0, 2, 1, 1, 0]
    per_sequence = deep_lift_shap(
        model, X, target=torch.tensor(targets) if as_tensor else targets, batch_size=K, references=refs
    )
    for i, t in enumerate(targets):
        torch.testing.assert_close(
            per_sequence[i], deep_lift_shap(model, X, target=t, references=refs)[i], rtol=1e-12, atol=1e-15
        )
    with pytest.raises(ValueError, match="one per sequence"):
        deep_lift_shap(model, X, target=targets[:2], references=refs)


def test_references_and_deltas_together(data):
    model, X, refs = data
    attributions, references, deltas = deep_lift_shap(
        model, X, references=refs, return_references=True, return_convergence_delta=True
    )
    assert torch.equal(references, refs) and deltas.shape == (N * K,)
    torch.testing.assert_close(attributions, deep_lift_shap(model, X, references=refs), rtol=0, atol=0)


def test_verbose_draws_a_progress_bar(data, capsys):
    pytest.importorskip("tqdm")
    model, X, refs = data
    deep_lift_shap(model, X, references=refs, verbose=True)
    assert f"{N * K}/{N * K}" in capsys.readouterr().err
    deep_lift_shap(model, X, references=refs)
    assert capsys.readouterr().err == ""


def test_additional_nonlinear_ops_point_to_register_rule(data):
    model, X, refs = data
    with pytest.raises(TypeError, match=r"deltalift\.register_rule"):
        deep_lift_shap(model, X, references=refs, additional_nonlinear_ops={nn.ReLU: lambda *a: a})
    torch.testing.assert_close(
        deep_lift_shap(model, X, references=refs, additional_nonlinear_ops={}),
        deep_lift_shap(model, X, references=refs),
        rtol=0,
        atol=0,
    )


def test_only_warn_and_unknown_bases(data):
    model, X, refs = data
    bad = X.clone()
    bad[0, :, 3] = 0.5
    with pytest.raises(ValueError, match="one-hot"):
        deep_lift_shap(model, bad, references=refs)
    with pytest.warns(RuntimeWarning, match="one-hot"):
        deep_lift_shap(model, bad, references=refs, only_warn=True)
    padded = X.clone()
    padded[:, :, :3] = 0  # N columns are allowed, stay in place in the shuffles and get zero
    attributions, shuffles = deep_lift_shap(model, padded, random_state=0, return_references=True)
    assert torch.equal(shuffles[..., :3], torch.zeros_like(shuffles[..., :3]))
    assert torch.equal(attributions[..., :3], torch.zeros_like(attributions[..., :3]))


def test_dtype(data):
    model, X, refs = data
    expected = deep_lift_shap(model, X, references=refs)
    for dtype in ("float64", torch.float64, None):
        torch.testing.assert_close(deep_lift_shap(model, X, references=refs, dtype=dtype), expected, rtol=0, atol=0)
    from_int8 = deep_lift_shap(model, X.to(torch.int8), references=refs.to(torch.int8))
    assert from_int8.dtype == DTYPE
    torch.testing.assert_close(from_int8, expected, rtol=0, atol=0)
    with pytest.raises(ValueError, match="does not autocast"):
        deep_lift_shap(model, X, references=refs, dtype=torch.float32)


def test_the_model_is_put_back_as_it_came():
    model, X = conv_model(), random_one_hot(3)
    model.insert(2, nn.Dropout(0.5))
    model.train()
    model[1].eval()  # a submodule's own flag survives too
    result = deep_lift_shap(model, X, random_state=0, device="cpu")
    assert model.training and model[2].training and not model[1].training
    model.eval()
    torch.testing.assert_close(result, deep_lift_shap(model, X, random_state=0), rtol=0, atol=0)


@pytest.mark.skipif(torch.cuda.is_available(), reason="the fallback is for machines without CUDA")
def test_cuda_without_cuda_falls_back_to_the_models_device(data):
    model, X, refs = data
    with pytest.warns(UserWarning, match="CUDA is not available: computing on the model's device, cpu"):
        result = deep_lift_shap(model, X, references=refs, device="cuda")
    torch.testing.assert_close(result, deep_lift_shap(model, X, references=refs), rtol=0, atol=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        deep_lift_shap(model, X, references=refs, device=None)  # the default: no warning


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_moves_the_model_and_back(data, tangermeme):
    model, X, refs = data
    result = deep_lift_shap(model, X, references=refs, device="cuda")
    assert result.device.type == "cpu" and next(model.parameters()).device.type == "cpu"
    torch.testing.assert_close(result, deep_lift_shap(model, X, references=refs, device="cpu"), rtol=1e-9, atol=1e-12)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        its = tangermeme.deep_lift_shap(model, X, references=refs, device="cuda")
    torch.testing.assert_close(result, its, rtol=1e-9, atol=1e-12)


def test_what_is_not_a_one_hot_tensor_is_refused(data):
    model, X, refs = data
    with pytest.raises(TypeError, match="torch.Tensor"):
        deep_lift_shap(model, X.numpy())
    with pytest.raises(ValueError, match="at least one sequence"):
        deep_lift_shap(model, X[:0])
    with pytest.raises(ValueError, match=r"\(N, A, L\)"):
        deep_lift_shap(model, X[0])
    with pytest.raises(ValueError, match="n_shuffles"):
        deep_lift_shap(model, X, n_shuffles=0)
    with pytest.raises(ValueError, match="batch_size"):
        deep_lift_shap(model, X, batch_size=0)


def test_one_hot_encode_input_works_end_to_end():
    model = conv_model()
    X = one_hot_encode(["ACGT" * 10, "TTGCA" * 8], dtype=DTYPE)
    hyp = deep_lift_shap(model, X, target=0, n_shuffles=4, hypothetical=True, random_state=0)
    assert hyp.shape == (2, 4, L) and torch.isfinite(hyp).all()


class _Reshaped(nn.Module):
    """The conv model with its ``(batch, 3)`` outputs reshaped to ``(batch, *shape)``."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.body = conv_model()
        self.shape = shape

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        return y.reshape(y.shape[0], *self.shape)


@pytest.mark.parametrize("shape", [(3, 1), (3, 1, 1)])
def test_trailing_axes_of_length_one_are_dropped_as_tangermeme_does(data, tangermeme, shape):
    """A model ending in a global pool returns ``(N, T, 1)``: ``target`` indexes axis 1, the
    trailing axes of length one are dropped (tangermeme's documented convention)."""
    _, X, refs = data
    model = _Reshaped(shape).eval()
    ours = deep_lift_shap(model, X, target=2, references=refs)
    torch.testing.assert_close(ours, deep_lift_shap(model.body, X, target=2, references=refs), rtol=0, atol=0)
    torch.testing.assert_close(ours, theirs(tangermeme, model, X, target=2, references=refs), **TIGHT)


def test_an_output_with_a_longer_trailing_axis_is_refused(data):
    """``(N, 1, 3)`` has no single value per target on axis 1: a clear error, as tangermeme."""
    _, X, refs = data
    with pytest.raises(ValueError, match="out of range"):
        deep_lift_shap(_Reshaped((1, 3)).eval(), X, target=2, references=refs)
