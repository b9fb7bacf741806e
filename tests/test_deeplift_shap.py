"""DeepLIFT-SHAP: the mean of single-reference DeepLift, batched in pairs, Captum's semantics."""

from __future__ import annotations

import warnings

import pytest
import torch
from captum.attr import DeepLiftShap as CaptumDeepLiftShap
from torch import nn

from deltalift import DeepLift, DeepLiftShap, batching

DTYPE = torch.float64


def dilated_cnn() -> nn.Module:
    torch.manual_seed(0)
    return (
        nn.Sequential(
            nn.Conv1d(4, 8, 5, padding=2),
            nn.ReLU(),
            nn.Conv1d(8, 8, 3, padding=2, dilation=2),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(8 * 30, 3),
        )
        .to(DTYPE)
        .eval()
    )


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(1)
    return dilated_cnn(), torch.randn(5, 4, 30, dtype=DTYPE), torch.randn(7, 4, 30, dtype=DTYPE)


def single_reference_mean(model, x, refs, target, per_example=False, **options):
    runs = [
        DeepLift(model, **options).attribute(x, refs[:, k] if per_example else refs[k], target=target)
        for k in range(refs.shape[1 if per_example else 0])
    ]
    return torch.stack(runs).mean(0)


def test_equals_mean_of_single_reference_runs(setup):
    model, x, refs = setup
    attr, delta = DeepLiftShap(model).attribute(x, refs, target=1, return_convergence_delta=True)
    torch.testing.assert_close(attr, single_reference_mean(model, x, refs, 1), rtol=1e-12, atol=1e-14)
    assert delta.shape == (5 * 7,)
    assert delta.abs().max() < 1e-12


@pytest.mark.parametrize("batch_size", [1, 3, 7, 8, 20, 1000])
def test_independent_of_batch_size(setup, batch_size):
    model, x, refs = setup
    expected, expected_delta = DeepLiftShap(model).attribute(x, refs, target=2, return_convergence_delta=True)
    attr, delta = DeepLiftShap(model, batch_size=batch_size).attribute(x, refs, target=2, return_convergence_delta=True)
    torch.testing.assert_close(attr, expected, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(delta, expected_delta, rtol=0, atol=1e-13)


def test_delta_per_pair_in_example_major_order(setup):
    model, x, refs = setup
    _, delta = DeepLiftShap(model, batch_size=4).attribute(x, refs, target=0, return_convergence_delta=True)
    outputs, ref_outputs = model(x)[:, 0], model(refs)[:, 0]
    for i in range(5):
        for k in range(7):
            attr_ik = DeepLift(model).attribute(x[i : i + 1], refs[k], target=0)
            expected = attr_ik.sum() - (outputs[i] - ref_outputs[k])
            torch.testing.assert_close(delta[i * 7 + k], expected, rtol=0, atol=1e-13)


def test_matches_captum(setup):
    model, x, refs = setup
    ours, delta = DeepLiftShap(model, eps=1e-10).attribute(
        x, refs, target=[0, 1, 2, 1, 0], return_convergence_delta=True
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs, their_delta = CaptumDeepLiftShap(model).attribute(
            x, refs, target=[0, 1, 2, 1, 0], return_convergence_delta=True
        )
    torch.testing.assert_close(ours, theirs, rtol=1e-8, atol=1e-12)
    torch.testing.assert_close(delta, their_delta, rtol=0, atol=1e-10)


def test_per_example_reference_sets_and_callable(setup):
    model, x, _ = setup
    torch.manual_seed(2)
    per_example = torch.randn(5, 6, 4, 30, dtype=DTYPE)
    attr = DeepLiftShap(model).attribute(x, per_example, target=1)
    torch.testing.assert_close(
        attr, single_reference_mean(model, x, per_example, 1, per_example=True), rtol=1e-12, atol=1e-14
    )
    by_callable = DeepLiftShap(model).attribute(x, lambda inputs: per_example, target=1)
    torch.testing.assert_close(by_callable, attr, rtol=0, atol=0)


@pytest.mark.parametrize("rule", ["reveal_cancel", "genomics_default"])
def test_accepts_every_rule(setup, rule):
    model, x, refs = setup
    attr, delta = DeepLiftShap(model, rule=rule).attribute(x, refs, target=1, return_convergence_delta=True)
    torch.testing.assert_close(attr, single_reference_mean(model, x, refs, 1, rule=rule), rtol=1e-12, atol=1e-14)
    assert delta.abs().max() < 1e-12


def test_input_side_convolutions_run_once_per_example(setup, monkeypatch):
    """Within a batch each example repeats once per reference: heavy ops see one row per example."""
    model, x, refs = setup
    rows_seen = []
    original = batching._on_one_row_per_group

    def spy(on_activation, shape):
        forward_fn = original(on_activation, shape)

        def recorded(x_rows):
            rows_seen.append((x_rows.shape[0], shape))
            return forward_fn(x_rows)

        return recorded

    monkeypatch.setattr(batching, "_on_one_row_per_group", spy)
    DeepLiftShap(model, batch_size=35).attribute(x, refs, target=1)
    assert rows_seen and all(rows == 35 and shape[:2] == (5, 7) for rows, shape in rows_seen)


def test_reference_set_errors(setup):
    model, x, refs = setup
    with pytest.raises(ValueError, match=r"fits neither \(K, 4, 30\) nor \(batch, K, \.\.\.\)"):
        DeepLiftShap(model).attribute(x, refs[:, :, :20], target=0)
    with pytest.raises(ValueError, match="NaN"):
        DeepLiftShap(model).attribute(x, refs * float("nan"), target=0)
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        DeepLiftShap(model, batch_size=0)
