"""deltalift's DeepLift against Captum's ``captum.attr.DeepLift``, in float64.

Captum overrides gradients with backward hooks on ``nn.Module`` instances, which is right only on
models built from hooked modules (``nn.ReLU``, ``nn.Sigmoid``, ...), each instance used once, and
with every ``nn.MaxPool`` between two *linear* layers.  By experiment (captum 0.9), a hooked
nonlinearity directly before *or* directly after a MaxPool makes Captum's contributions miss
summation-to-delta (Captum issue #1104); ``test_captum_breaks_summation_next_to_maxpool`` keeps one
such case to show why the parity models avoid it.  On the models below Captum is exact, which every
test checks through Captum's own convergence delta, so agreement is agreement with DeepLIFT.

Captum's ``eps`` is 1e-10 (deltalift's default is 1e-7); deltalift is built with ``eps=1e-10``.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

captum_attr = pytest.importorskip("captum.attr")

from deltalift import DeepLift  # noqa: E402

DTYPE = torch.float64
EPS = 1e-10
RTOL, ATOL = 1e-9, 1e-12


# --------------------------------------------------------------------------------------------------
# helpers


def _both(model, inputs, baselines=None, target=None, extra=None, multiply_by_inputs=True):
    """(attributions, delta) from Captum and from deltalift for the same call."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = captum_attr.DeepLift(model, multiply_by_inputs=multiply_by_inputs).attribute(
            inputs, baselines=baselines, target=target, additional_forward_args=extra, return_convergence_delta=True
        )
    ours = DeepLift(model, multiply_by_inputs=multiply_by_inputs, eps=EPS, strict=True).attribute(
        inputs, baselines=baselines, target=target, additional_forward_args=extra, return_convergence_delta=True
    )
    return theirs, ours


def _as_tuple(value):
    return tuple(value) if isinstance(value, (tuple, list)) else (value,)


def _gradient_times_delta(model, inputs, baselines, target, extra=None):
    """Plain gradient x (input - baseline): what an engine that ignored the rules would return."""
    xs = tuple(x.detach().clone().requires_grad_(True) for x in _as_tuple(inputs))
    out = model(*xs, *(_as_tuple(extra) if extra is not None else ()))
    index = torch.as_tensor(target).expand(out.shape[0]) if target is not None else torch.zeros(out.shape[0]).long()
    grads = torch.autograd.grad(out.gather(1, index[:, None].long()).sum(), xs)
    bs = _as_tuple(baselines) if baselines is not None else (0.0,) * len(xs)
    return tuple(g * (x.detach() - b) for g, x, b in zip(grads, xs, bs))


def _check_parity(model, inputs, baselines=None, target=None, extra=None, multiply_by_inputs=True):
    (theirs, delta_theirs), (ours, delta_ours) = _both(model, inputs, baselines, target, extra, multiply_by_inputs)
    assert isinstance(ours, tuple) == isinstance(inputs, tuple)
    assert len(_as_tuple(ours)) == len(_as_tuple(theirs))
    for a, b, x in zip(_as_tuple(ours), _as_tuple(theirs), _as_tuple(inputs)):
        assert a.shape == x.shape and a.dtype == DTYPE
        assert b.abs().max() > 1e-3, "degenerate test: Captum's attributions are ~0"
        torch.testing.assert_close(a, b.detach(), rtol=RTOL, atol=ATOL)
    assert delta_ours.shape == (_as_tuple(inputs)[0].shape[0],)
    # deltalift's delta is always that of the contributions; it is ~0 on these models.
    assert delta_ours.abs().max() < 1e-9
    if multiply_by_inputs:
        # Captum is exact on these models (else agreement would mean nothing).  (With
        # multiply_by_inputs=False its delta sums multipliers and means nothing.)
        assert delta_theirs.abs().max() < 1e-9
        torch.testing.assert_close(delta_ours, delta_theirs.detach(), rtol=0, atol=1e-9)
    return ours


def _init_batchnorm(bn: nn.BatchNorm1d | nn.BatchNorm2d, generator: torch.Generator) -> None:
    n = bn.num_features
    with torch.no_grad():
        bn.running_mean.copy_(torch.randn(n, generator=generator, dtype=DTYPE))
        bn.running_var.copy_(torch.rand(n, generator=generator, dtype=DTYPE) + 0.5)
        bn.weight.copy_(torch.randn(n, generator=generator, dtype=DTYPE))
        bn.bias.copy_(torch.randn(n, generator=generator, dtype=DTYPE))


def _randn(*shape, seed):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=DTYPE)


def _one_hot_dna(n, length, seed):
    bases = torch.randint(0, 4, (n, length), generator=torch.Generator().manual_seed(seed))
    return nn.functional.one_hot(bases, 4).permute(0, 2, 1).to(DTYPE).contiguous()


# --------------------------------------------------------------------------------------------------
# models (module-scoped: torch.export capture is the slow part, and deltalift caches it per model)


@pytest.fixture(scope="module")
def mlp_relu():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(10, 16), nn.ReLU(), nn.Linear(16, 12), nn.ReLU(), nn.Linear(12, 4)).to(DTYPE).eval()


@pytest.fixture(scope="module")
def mlp_smooth():
    """Tanh, Sigmoid, ELU, Softplus, LeakyReLU, and a Dropout that eval mode makes the identity."""
    torch.manual_seed(1)
    return (
        nn.Sequential(
            nn.Linear(10, 12),
            nn.Tanh(),
            nn.Linear(12, 12),
            nn.Sigmoid(),
            nn.Dropout(0.5),
            nn.Linear(12, 12),
            nn.ELU(),
            nn.Linear(12, 10),
            nn.Softplus(),
            nn.Linear(10, 8),
            nn.LeakyReLU(0.1),
            nn.Linear(8, 3),
        )
        .to(DTYPE)
        .eval()
    )


@pytest.fixture(scope="module")
def cnn():
    """Conv, BatchNorm (eval), ReLU, a non-overlapping MaxPool between two convolutions, AvgPool."""
    torch.manual_seed(2)
    model = nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1),
        nn.BatchNorm2d(6),
        nn.ReLU(),
        nn.Conv2d(6, 6, 3, padding=1),
        nn.MaxPool2d(2),
        nn.BatchNorm2d(6),
        nn.Conv2d(6, 8, 3, padding=1),
        nn.ReLU(),
        nn.AvgPool2d(2),
        nn.Flatten(),
        nn.Linear(8 * 2 * 2, 10),
        nn.ReLU(),
        nn.Linear(10, 5),
    ).to(DTYPE)
    generator = torch.Generator().manual_seed(3)
    _init_batchnorm(model[1], generator)
    _init_batchnorm(model[5], generator)
    return model.eval()


@pytest.fixture(scope="module")
def dna_cnn():
    """A small genomics-style model on one-hot (N, 4, L) input."""
    torch.manual_seed(4)
    return (
        nn.Sequential(
            nn.Conv1d(4, 8, 7, padding=3),
            nn.ReLU(),
            nn.Conv1d(8, 8, 5, padding=2),
            nn.MaxPool1d(4),
            nn.Flatten(),
            nn.Linear(8 * 10, 16),
            nn.ReLU(),
            nn.Linear(16, 2),
        )
        .to(DTYPE)
        .eval()
    )


class TwoInputs(nn.Module):
    """Two explained inputs of different shapes and an unexplained per-example shift."""

    def __init__(self) -> None:
        super().__init__()
        self.branch_a = nn.Linear(6, 8)
        self.act_a = nn.ReLU()
        self.branch_b = nn.Conv1d(2, 3, 3)
        self.act_b = nn.Tanh()
        self.head = nn.Linear(8 + 3 * 5, 6)
        self.act_head = nn.Sigmoid()
        self.out = nn.Linear(6, 3)

    def forward(self, a: torch.Tensor, b: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
        ha = self.act_a(self.branch_a(a))
        hb = self.act_b(self.branch_b(b)).flatten(1)
        h = self.act_head(self.head(torch.cat([ha, hb], dim=1)) + shift)
        return self.out(h)


@pytest.fixture(scope="module")
def two_inputs():
    torch.manual_seed(5)
    return TwoInputs().to(DTYPE).eval()


# --------------------------------------------------------------------------------------------------
# tests

BATCH = 5


@pytest.mark.parametrize("model_name", ["mlp_relu", "mlp_smooth"])
@pytest.mark.parametrize("baseline_kind", ["per_example", "shared", "shared_1d", "scalar", "none"])
def test_mlp(request, model_name, baseline_kind):
    model = request.getfixturevalue(model_name)
    x = _randn(BATCH, 10, seed=10)
    baselines = {
        "per_example": _randn(BATCH, 10, seed=11),
        "shared": _randn(1, 10, seed=12),
        "shared_1d": _randn(10, seed=13),
        "scalar": 0.3,
        "none": None,
    }[baseline_kind]
    if baseline_kind == "shared_1d":
        # Captum wants a batch dimension; deltalift also takes one reference without it.
        (theirs, _), (ours, delta) = _both(model, x, baselines[None], target=1)
        ours_1d = DeepLift(model, eps=EPS).attribute(x, baselines=baselines, target=1)
        torch.testing.assert_close(ours_1d, theirs, rtol=RTOL, atol=ATOL)
        torch.testing.assert_close(ours, theirs, rtol=RTOL, atol=ATOL)
        return
    ours = _check_parity(model, x, baselines, target=1)
    # The comparison discriminates: DeepLIFT is not gradient x (input - baseline) here.
    b = baselines if isinstance(baselines, torch.Tensor) else (0.0 if baselines is None else baselines)
    (grad_x_delta,) = _gradient_times_delta(model, x, b, 1)
    assert (ours - grad_x_delta).abs().max() > 0.1 * ours.abs().max()


@pytest.mark.parametrize("model_name", ["mlp_relu", "mlp_smooth"])
def test_targets(request, model_name):
    """Per-example targets as a list and as a tensor, and every class in turn."""
    model = request.getfixturevalue(model_name)
    x, x0 = _randn(BATCH, 10, seed=20), _randn(BATCH, 10, seed=21)
    n_classes = model(x).shape[1]
    per_example = [i % n_classes for i in range(BATCH)]
    from_list = _check_parity(model, x, x0, target=per_example)
    from_tensor = _check_parity(model, x, x0, target=torch.tensor(per_example))
    torch.testing.assert_close(from_list, from_tensor, rtol=0, atol=0)
    by_class = [_check_parity(model, x, x0, target=c) for c in range(n_classes)]
    # Row i of the per-example call is row i of the call for class per_example[i].
    for i, c in enumerate(per_example):
        torch.testing.assert_close(from_list[i], by_class[c][i], rtol=RTOL, atol=ATOL)
    # Different classes get different explanations (the target is honoured).
    assert (by_class[0] - by_class[1]).abs().max() > 1e-3


@pytest.mark.parametrize("model_name", ["mlp_relu", "mlp_smooth", "cnn"])
def test_multipliers(request, model_name):
    """``multiply_by_inputs=False``: Captum and deltalift both return the multipliers."""
    model = request.getfixturevalue(model_name)
    shape = (BATCH, 10) if model_name != "cnn" else (BATCH, 3, 8, 8)
    x, x0 = _randn(*shape, seed=30), _randn(*shape, seed=31)
    multipliers = _check_parity(model, x, x0, target=2, multiply_by_inputs=False)
    contributions = DeepLift(model, eps=EPS).attribute(x, x0, target=2)
    torch.testing.assert_close(contributions, multipliers * (x - x0), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("baseline_kind", ["per_example", "shared"])
def test_cnn(cnn, baseline_kind):
    x = _randn(BATCH, 3, 8, 8, seed=40)
    x0 = _randn(BATCH, 3, 8, 8, seed=41) if baseline_kind == "per_example" else _randn(1, 3, 8, 8, seed=42)
    ours = _check_parity(cnn, x, x0, target=[0, 1, 2, 3, 4])
    (grad_x_delta,) = _gradient_times_delta(cnn, x, x0, torch.tensor([0, 1, 2, 3, 4]))
    assert (ours - grad_x_delta).abs().max() > 0.1 * ours.abs().max()


def test_cnn_several_targets(cnn):
    x, x0 = _randn(3, 3, 8, 8, seed=43), _randn(3, 3, 8, 8, seed=44)
    for target in range(5):
        _check_parity(cnn, x, x0, target=target)


def test_dna_per_example_shuffled_references(dna_cnn):
    """One-hot sequences against other random one-hot sequences (exact zeros in x - x0)."""
    x, x0 = _one_hot_dna(4, 40, seed=50), _one_hot_dna(4, 40, seed=51)
    ours = _check_parity(dna_cnn, x, x0, target=1)
    # Contributions sit only where input or reference has a 1.
    assert torch.all(ours[(x == 0) & (x0 == 0)] == 0)


def test_dna_uniform_reference(dna_cnn):
    x = _one_hot_dna(4, 40, seed=52)
    x0 = torch.full((1, 4, 40), 0.25, dtype=DTYPE)
    _check_parity(dna_cnn, x, x0, target=[0, 1, 0, 1])
    _check_parity(dna_cnn, x, 0.25, target=0)


@pytest.mark.parametrize("baseline_kind", ["per_example", "mixed", "scalars"])
def test_tuple_inputs(two_inputs, baseline_kind):
    a, b = _randn(BATCH, 6, seed=60), _randn(BATCH, 2, 7, seed=61)
    shift = _randn(BATCH, 6, seed=62)
    baselines = {
        "per_example": (_randn(BATCH, 6, seed=63), _randn(BATCH, 2, 7, seed=64)),
        "mixed": (_randn(1, 6, seed=65), _randn(BATCH, 2, 7, seed=66)),
        "scalars": (0.1, -0.2),
    }[baseline_kind]
    ours = _check_parity(two_inputs, (a, b), baselines, target=[0, 1, 2, 0, 1], extra=(shift,))
    assert isinstance(ours, tuple) and len(ours) == 2
    assert all(part.abs().max() > 1e-3 for part in ours)


def test_tuple_inputs_multipliers(two_inputs):
    a, b = _randn(BATCH, 6, seed=67), _randn(BATCH, 2, 7, seed=68)
    a0, b0 = _randn(BATCH, 6, seed=69), _randn(1, 2, 7, seed=70)
    shift = _randn(BATCH, 6, seed=71)
    _check_parity(two_inputs, (a, b), (a0, b0), target=2, extra=shift, multiply_by_inputs=False)


@pytest.mark.parametrize("model_name", ["mlp_relu", "mlp_smooth", "cnn", "dna_cnn"])
def test_convergence_delta_matches_captum_and_definition(request, model_name):
    """Both deltas are ``sum(attributions) - (t(x) - t(x0))``; both ~0 here, and equal to ~1e-9."""
    model = request.getfixturevalue(model_name)
    x = {
        "mlp_relu": _randn(BATCH, 10, seed=80),
        "mlp_smooth": _randn(BATCH, 10, seed=80),
        "cnn": _randn(BATCH, 3, 8, 8, seed=80),
        "dna_cnn": _one_hot_dna(BATCH, 40, seed=80),
    }[model_name]
    x0 = 0.5 * _randn(*x.shape, seed=81)
    (theirs, delta_theirs), (ours, delta_ours) = _both(model, x, x0, target=0)
    torch.testing.assert_close(ours, theirs, rtol=RTOL, atol=ATOL)
    with torch.no_grad():
        dt = model(x)[:, 0] - model(x0)[:, 0]
    torch.testing.assert_close(delta_ours, ours.flatten(1).sum(1) - dt, rtol=0, atol=1e-12)
    torch.testing.assert_close(delta_ours, delta_theirs, rtol=0, atol=1e-9)
    assert delta_ours.abs().max() < 1e-9
    assert dt.abs().min() > 1e-6, "degenerate test: t(x) = t(x0)"


def test_identical_input_and_baseline(mlp_smooth):
    """x = x0: zero contributions; the multipliers fall back to the gradient in both."""
    x = _randn(3, 10, seed=90)
    _, (ours, delta) = _both(mlp_smooth, x, x.clone(), target=1)
    assert torch.all(ours == 0) and delta.abs().max() < 1e-15
    (theirs_m, _), (ours_m, _) = _both(mlp_smooth, x, x.clone(), target=1, multiply_by_inputs=False)
    torch.testing.assert_close(ours_m, theirs_m, rtol=RTOL, atol=ATOL)
    xg = x.clone().requires_grad_(True)
    (gradient,) = torch.autograd.grad(mlp_smooth(xg)[:, 1].sum(), xg)
    torch.testing.assert_close(ours_m, gradient, rtol=RTOL, atol=ATOL)


def test_captum_breaks_summation_next_to_maxpool():
    """Why the parity CNNs keep MaxPool between linear layers: with ``ReLU -> MaxPool`` Captum's
    contributions miss summation-to-delta, deltalift's do not (the disagreement is Captum's)."""
    torch.manual_seed(6)
    model = (
        nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(64, 3))
        .to(DTYPE)
        .eval()
    )
    x, x0 = _randn(3, 2, 8, 8, seed=95), _randn(3, 2, 8, 8, seed=96)
    (theirs, delta_theirs), (ours, delta_ours) = _both(model, x, x0, target=1)
    assert delta_theirs.abs().max() > 1e-3
    assert delta_ours.abs().max() < 1e-12
    assert (ours - theirs).abs().max() > 1e-3
