"""Bad input gets a clear error that names the problem, and the model is left unchanged."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from deltalift import CaptureError, ConvergenceError, DeepLift, MissingRuleError


def small_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.5), nn.Flatten(), nn.Linear(4 * 6 * 6, 3)
    ).eval()


X = torch.randn(2, 1, 8, 8)


def state(model: nn.Module) -> dict:
    return {
        "params": {k: v.detach().clone() for k, v in model.named_parameters()},
        "buffers": {k: v.detach().clone() for k, v in model.named_buffers()},
        "training": [m.training for m in model.modules()],
        "hooks": [(len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks)) for m in model.modules()],
        "requires_grad": [p.requires_grad for p in model.parameters()],
        "grads": [p.grad for p in model.parameters()],
    }


def assert_same_state(before: dict, model: nn.Module) -> None:
    after = state(model)
    for kind in ("params", "buffers"):
        assert before[kind].keys() == after[kind].keys()
        for k in before[kind]:
            assert torch.equal(before[kind][k], after[kind][k]), f"{kind} {k} changed"
    for key in ("training", "hooks", "requires_grad"):
        assert before[key] == after[key], f"{key} changed"
    assert all(g is None for g in after["grads"]), "parameter gradients were written"


def test_model_is_unchanged_after_a_call():
    model = small_cnn()
    model.register_forward_hook(lambda *a: None)
    before = state(model)
    DeepLift(model).attribute(X, target=1)
    assert_same_state(before, model)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (
            {"baselines": torch.zeros(3, 1, 8, 8)},
            ValueError,
            r"baselines\[0\] of shape \(3, 1, 8, 8\) does not broadcast to inputs\[0\] of shape \(2, 1, 8, 8\)",
        ),
        ({"baselines": torch.zeros(1, 8, 7)}, ValueError, r"\(1, 8, 7\).*\(2, 1, 8, 8\)"),
        ({"target": 3}, ValueError, "target 3 is out of range for a model with 3 outputs"),
        ({"target": -1}, ValueError, "target -1 is out of range"),
        ({"target": [0, 1, 2]}, ValueError, r"target has shape \(3,\); give one int, or one per example \(2\)"),
        ({"target": 1.0}, TypeError, "target must be an int"),
        ({"target": None}, ValueError, "has 3 outputs per example; pass target="),
        ({"baselines": torch.full((1, 8, 8), float("nan"))}, ValueError, r"baselines\[0\] contains NaN or inf"),
        ({"baselines": (0.0, 0.0)}, ValueError, "got 2 baselines for 1 inputs"),
    ],
)
def test_bad_arguments_raise_clear_errors_and_leave_the_model_unchanged(kwargs, error, match):
    model = small_cnn()
    before = state(model)
    with pytest.raises(error, match=match):
        DeepLift(model).attribute(X, **{"target": 0, **kwargs})
    assert_same_state(before, model)


def test_nan_and_inf_inputs_are_refused():
    model = small_cnn()
    for bad in (float("nan"), float("inf")):
        x = X.clone()
        x[0, 0, 0, 0] = bad
        with pytest.raises(ValueError, match="inputs contains NaN or inf"):
            DeepLift(model).attribute(x, target=0)


def test_integer_inputs_suggest_the_embedding_layer():
    model = nn.Sequential(nn.Embedding(10, 4), nn.Flatten(), nn.Linear(12, 2)).eval()
    with pytest.raises(TypeError, match="embedding"):
        DeepLift(model).attribute(torch.randint(0, 10, (2, 3)), target=0)


def test_output_that_is_not_batch_by_outputs_is_refused():
    model = nn.Conv2d(1, 2, 3).eval()
    with pytest.raises(ValueError, match=r"shape \(2, 2, 6, 6\).*\(batch, outputs\)"):
        DeepLift(model).attribute(X, target=0)


def test_dtype_mismatch_names_both_dtypes():
    with pytest.raises(TypeError, match="torch.float32 but the inputs are torch.float64"):
        DeepLift(small_cnn()).attribute(X.double(), target=0)


def test_training_mode_dropout_is_refused_with_advice():
    model = small_cnn().train()
    model[1].eval()  # keep batch norm out of it: only dropout draws random numbers
    before = state(model)
    with pytest.raises(CaptureError, match=r"random numbers.*model\.eval\(\)"):
        DeepLift(model).attribute(X, target=0)
    assert_same_state(before, model)


def test_training_mode_batch_norm_is_refused_with_advice():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Flatten(), nn.Linear(72, 2)).train()
    before = state(model)
    with pytest.raises(CaptureError, match=r"changes its own state.*model\.eval\(\)"):
        DeepLift(model).attribute(X, target=0)
    assert_same_state(before, model)


class DataDependent(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 2)

    def forward(self, x):
        if x.sum() > 0:
            return self.linear(x)
        return -self.linear(x)


def test_model_that_cannot_be_captured_says_why_and_what_to_try():
    model = DataDependent().eval()
    before = state(model)
    with pytest.raises(CaptureError, match=r"could not capture DataDependent(.|\n)*control flow"):
        DeepLift(model).attribute(torch.randn(3, 4), target=0)
    assert_same_state(before, model)


class Sorting(nn.Module):
    def forward(self, x):
        return torch.sort(x, dim=1).values[:, :2]


def test_op_without_rule_names_op_module_and_line():
    with pytest.raises(MissingRuleError, match=r"aten\.sort(.|\n)*test_errors\.py"):
        DeepLift(Sorting().eval()).attribute(torch.randn(3, 4), target=0)


class Broken(nn.Module):
    """A model whose registered rule would not be exact: a custom op registered as linear."""

    def forward(self, x):
        return torch.special.i0(x).sum(1, keepdim=True)


def test_strict_mode_raises_when_summation_fails():
    from deltalift.rules import default_registry, linear

    registry = default_registry.copy()
    registry.register(torch.ops.aten.i0, linear)  # wrong on purpose: i0 is not affine
    x = torch.rand(2, 3) + 1
    with pytest.warns(UserWarning, match="summation-to-delta fails"):
        DeepLift(Broken().eval(), registry=registry).attribute(x)
    with pytest.raises(ConvergenceError, match="summation-to-delta fails for example"):
        DeepLift(Broken().eval(), registry=registry, strict=True).attribute(x)


def test_functional_model_and_plain_function_are_accepted():
    weight = torch.randn(3, 4)

    def forward(x):
        return F.relu(x @ weight.T)

    x = torch.randn(5, 4)
    attr, delta = DeepLift(forward).attribute(x, target=2, return_convergence_delta=True)
    assert attr.shape == x.shape
    assert delta.abs().max() < 1e-5


def test_deepcopy_of_model_gives_identical_attributions():
    model = small_cnn()
    a = DeepLift(model).attribute(X, target=2)
    b = DeepLift(copy.deepcopy(model)).attribute(X, target=2)
    assert torch.equal(a, b)


def test_weight_updates_after_capture_are_seen():
    model = small_cnn()
    method = DeepLift(model)
    first = method.attribute(X, target=0)
    with torch.no_grad():
        model[-1].weight.mul_(2)
        model[-1].bias.mul_(2)
    second = method.attribute(X, target=0)
    torch.testing.assert_close(second, 2 * first)
