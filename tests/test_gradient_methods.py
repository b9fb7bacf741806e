"""The methods DeepLIFT is compared against: Saliency, InputXGradient, IntegratedGradients,
NoiseTunnel, Occlusion and InternalInfluence.

* the seeds' worked examples (two functionally equal networks, the saturating unit);
* slow, obvious re-derivations (explicit quadrature loops, explicit window loops);
* the same numbers as Captum in float64.  Captum rounds the quadrature nodes and weights to
  float32 (``torch.linspace`` in the default dtype, ``torch.tensor(step_sizes).float()``) and
  returns Occlusion in float32, so those comparisons use ``rtol=1e-6``; everything else is
  compared at ``1e-12``;
* models with functional ops and a reused module give what their module-per-use twins give.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

captum_attr = pytest.importorskip("captum.attr")
captum_nt = pytest.importorskip("captum.attr._core.noise_tunnel")
captum_approx = pytest.importorskip("captum.attr._utils.approximation_methods")

from deltalift import DeepLift  # noqa: E402
from deltalift.methods.gradients import InputXGradient, Saliency  # noqa: E402
from deltalift.methods.integrated_gradients import (  # noqa: E402
    METHODS,
    IntegratedGradients,
    approximation_parameters,
)
from deltalift.methods.internal_influence import InternalInfluence  # noqa: E402
from deltalift.methods.noise_tunnel import NoiseTunnel  # noqa: E402
from deltalift.methods.occlusion import Occlusion  # noqa: E402

DTYPE = torch.float64
TIGHT = {"rtol": 1e-12, "atol": 1e-12}
CAPTUM = {"rtol": 1e-6, "atol": 1e-9}  # Captum's float32 quadrature nodes / Occlusion output


# --------------------------------------------------------------------------------------------------
# models


class NetA(nn.Module):
    """``relu(relu(x1) - 1 - relu(x2))`` (the seeds' first network)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(F.relu(x[:, 0]) - 1 - F.relu(x[:, 1]))[:, None]


class NetB(nn.Module):
    """``relu(relu(x1 - 1) - relu(x2))``: the same function as :class:`NetA`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(F.relu(x[:, 0] - 1) - F.relu(x[:, 1]))[:, None]


class Saturating(nn.Module):
    """``1 - relu(1 - x)``: flat for ``x > 1``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 1 - F.relu(1 - x)


class ModuleNet(nn.Module):
    """A small CNN with one module per use (what Captum's hooks need)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(2, 3, 3)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(3, 4, 3)
        self.relu2 = nn.ReLU()
        self.pool = nn.AvgPool2d(2)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.relu2(self.conv2(self.relu1(self.conv1(x))))
        return self.fc(self.flatten(self.pool(h)))


class TwinNet(nn.Module):
    """:class:`ModuleNet`'s function with one ReLU module used twice and functional ops."""

    def __init__(self, source: ModuleNet) -> None:
        super().__init__()
        self.conv1, self.conv2, self.fc = source.conv1, source.conv2, source.fc
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act(self.conv2(self.act(self.conv1(x))))
        return self.fc(torch.flatten(F.avg_pool2d(h, 2), 1))


class TwoInputNet(nn.Module):
    """Inputs ``(image, vector)`` and an additional per-example ``scale`` argument."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3)
        self.relu1 = nn.ReLU()
        self.flatten = nn.Flatten()
        self.dense = nn.Linear(5, 4)
        self.tanh = nn.Tanh()
        self.fc = nn.Linear(3 * 6 * 6 + 4, 3)

    def forward(self, image: torch.Tensor, vector: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        h = torch.cat([self.flatten(self.relu1(self.conv(image))), self.tanh(self.dense(vector))], 1)
        return self.fc(h) * scale


class Smooth(nn.Module):
    """A smooth MLP (tanh, softplus): quadrature errors shrink steadily with the steps."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 5), nn.Softplus(), nn.Linear(5, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _seeded(model: nn.Module, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    for p in model.parameters():
        nn.init.normal_(p, std=0.5)
    return model.to(DTYPE).eval()


@pytest.fixture(scope="module")
def cnn() -> ModuleNet:
    return _seeded(ModuleNet())  # type: ignore[return-value]


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.randn(3, 2, 8, 8, dtype=DTYPE, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def two_input() -> tuple[nn.Module, tuple[torch.Tensor, torch.Tensor], torch.Tensor]:
    g = torch.Generator().manual_seed(2)
    model = _seeded(TwoInputNet(), 3)
    inputs = (torch.randn(3, 2, 8, 8, dtype=DTYPE, generator=g), torch.randn(3, 5, dtype=DTYPE, generator=g))
    scale = torch.rand(3, 1, dtype=DTYPE, generator=g) + 0.5
    return model, inputs, scale


def _quiet(fn, *args, **kwargs):  # type: ignore[no-untyped-def]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


def _close(ours, theirs, **tol) -> None:  # type: ignore[no-untyped-def]
    ours = ours if isinstance(ours, tuple) else (ours,)
    theirs = theirs if isinstance(theirs, tuple) else (theirs,)
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs):
        assert a.shape == b.shape
        torch.testing.assert_close(a, b.to(a.dtype), **tol)


# --------------------------------------------------------------------------------------------------
# the seeds' worked examples


X_31 = torch.tensor([[3.0, 1.0]], dtype=DTYPE)


def test_ig_two_equal_networks_gausslegendre_exact() -> None:
    """Gauss-Legendre nodes are symmetric about 1/2, where both networks switch on, so the
    default quadrature is exact: (1.5, -0.5) for both (DeepLIFT-Rescale gives (2, -1) on the
    second network)."""
    for net in (NetA(), NetB()):
        ig = IntegratedGradients(net).attribute(X_31, baselines=0.0)
        torch.testing.assert_close(ig, torch.tensor([[1.5, -0.5]], dtype=DTYPE), rtol=0, atol=1e-12)
    rescale = DeepLift(NetB()).attribute(X_31, baselines=0.0)
    torch.testing.assert_close(rescale, torch.tensor([[2.0, -1.0]], dtype=DTYPE))


@pytest.mark.parametrize("method", METHODS)
def test_ig_two_equal_networks_every_method(method: str) -> None:
    """Each quadrature is within a few step widths of (1.5, -0.5), and the two networks agree
    node by node, hence exactly."""
    n_steps = 400
    a = IntegratedGradients(NetA()).attribute(X_31, baselines=(0.0,), method=method, n_steps=n_steps)
    b = IntegratedGradients(NetB()).attribute(X_31, baselines=(0.0,), method=method, n_steps=n_steps)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
    expected = torch.tensor([[1.5, -0.5]], dtype=DTYPE)
    if method == "riemann_trapezoid":  # Captum's trapezoid weights sum to 1 - 1/n
        expected = expected * (1 - 1 / n_steps)
    torch.testing.assert_close(a, expected, rtol=0, atol=4 / n_steps)


def test_sensitivity_example_gradient_misses_what_ig_finds() -> None:
    """``f(x) = 1 - relu(1 - x)`` at 2, baseline 0: gradient and gradient x input are 0, IG is 1."""
    x = torch.tensor([[2.0]], dtype=DTYPE)
    model = Saturating()
    assert Saliency(model).attribute(x, abs=False).item() == 0.0
    assert Saliency(model).attribute(x).item() == 0.0
    assert InputXGradient(model).attribute(x).item() == 0.0
    ig, delta = IntegratedGradients(model).attribute(x, baselines=0.0, return_convergence_delta=True)
    assert ig.item() == pytest.approx(1.0, abs=1e-12)
    assert delta.abs().item() < 1e-12
    for method in ("riemann_left", "riemann_right", "riemann_middle"):
        ig = IntegratedGradients(model).attribute(x, baselines=0.0, method=method, n_steps=500)
        assert ig.item() == pytest.approx(1.0, abs=2 / 500)


@pytest.mark.parametrize("method", METHODS)
def test_convergence_delta_shrinks_with_steps(method: str) -> None:
    model = _seeded(Smooth(), 4)
    g = torch.Generator().manual_seed(5)
    x, baseline = 2 * torch.randn(4, 6, dtype=DTYPE, generator=g), torch.randn(4, 6, dtype=DTYPE, generator=g)
    ig = IntegratedGradients(model)
    deltas = []
    for n in (4, 16, 64):
        _, delta = ig.attribute(
            x, baselines=baseline, target=1, method=method, n_steps=n, return_convergence_delta=True
        )
        deltas.append(delta.abs().max().item())
    assert deltas[0] > 1e-3  # there is an error to shrink
    assert deltas[0] > deltas[1] > deltas[2], deltas
    # 16 times the steps: first order for left/right/trapezoid, second order for the midpoint,
    # spectral for Gauss-Legendre
    shrink = {"riemann_middle": 100, "gausslegendre": 1e6}.get(method, 8)
    assert deltas[2] < deltas[0] / shrink, deltas


def test_linear_model_ig_gradient_x_input_and_deeplift_agree() -> None:
    model = _seeded(nn.Linear(6, 3), 6)
    x = torch.randn(4, 6, dtype=DTYPE, generator=torch.Generator().manual_seed(7))
    expected = model.weight[1].detach() * x  # w_i x_i
    _close(InputXGradient(model).attribute(x, target=1), expected, **TIGHT)
    _close(DeepLift(model).attribute(x, baselines=0.0, target=1), expected, **TIGHT)
    for method in ("riemann_left", "riemann_right", "riemann_middle", "gausslegendre"):
        _close(IntegratedGradients(model).attribute(x, target=1, method=method, n_steps=7), expected, **TIGHT)
    trapezoid = IntegratedGradients(model).attribute(x, target=1, method="riemann_trapezoid", n_steps=7)
    _close(trapezoid, expected * (1 - 1 / 7), **TIGHT)


# --------------------------------------------------------------------------------------------------
# slow re-derivations


def _explicit_nodes(method: str, n: int) -> tuple[list[float], list[float]]:
    """(weights, nodes) written out from the definitions."""
    if method == "gausslegendre":
        xi, omega = np.polynomial.legendre.leggauss(n)
        return [w / 2 for w in omega], [(1 + v) / 2 for v in xi]
    if method == "riemann_trapezoid":
        return [(0.5 if k in (0, n - 1) else 1.0) / n for k in range(n)], [k / (n - 1) for k in range(n)]
    offset = {"riemann_left": 0.0, "riemann_middle": 0.5, "riemann_right": 1.0}[method]
    return [1 / n] * n, [(k + offset) / n for k in range(n)]


@pytest.mark.parametrize("method", METHODS)
def test_approximation_parameters_match_definition_and_captum(method: str) -> None:
    weights, nodes = _explicit_nodes(method, 9)
    steps, alphas = approximation_parameters(method, 9)
    torch.testing.assert_close(steps, torch.tensor(weights, dtype=DTYPE), rtol=0, atol=1e-15)
    torch.testing.assert_close(alphas, torch.tensor(nodes, dtype=DTYPE), rtol=0, atol=1e-15)
    their_steps, their_alphas = captum_approx.approximation_parameters(method)
    np.testing.assert_allclose(steps.numpy(), their_steps(9), rtol=0, atol=1e-7)
    np.testing.assert_allclose(alphas.numpy(), their_alphas(9), rtol=0, atol=1e-7)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("internal_batch_size", [None, 4])
def test_ig_equals_explicit_quadrature_loop(
    cnn: nn.Module, images: torch.Tensor, method: str, internal_batch_size
) -> None:  # type: ignore[no-untyped-def]
    baseline = torch.full_like(images[:1], 0.3)
    target = [0, 2, 1]
    weights, nodes = _explicit_nodes(method, 6)
    total = torch.zeros_like(images)
    for w, a in zip(weights, nodes):
        point = (baseline + a * (images - baseline)).requires_grad_(True)
        (grad,) = torch.autograd.grad(cnn(point)[torch.arange(3), target].sum(), point)
        total += w * grad
    ours = IntegratedGradients(cnn).attribute(
        images, baselines=baseline, target=target, n_steps=6, method=method, internal_batch_size=internal_batch_size
    )
    _close(ours, total * (images - baseline), **TIGHT)
    local = IntegratedGradients(cnn, multiply_by_inputs=False).attribute(
        images, baselines=baseline, target=target, n_steps=6, method=method
    )
    _close(local, total, **TIGHT)


def test_occlusion_equals_explicit_window_loop() -> None:
    """1-D, window 3, stride 2 over 10 positions: windows start at 0, 2, 4, 6, 8, the last one
    cut to two positions; each position averages the output drops of the windows over it."""
    model = _seeded(nn.Sequential(nn.Linear(10, 6), nn.Tanh(), nn.Linear(6, 2)), 8)
    x = torch.randn(2, 10, dtype=DTYPE, generator=torch.Generator().manual_seed(9))
    baseline = torch.linspace(-1, 1, 10, dtype=DTYPE)
    with torch.no_grad():
        t = model(x)[:, 1]
        total, count = torch.zeros_like(x), torch.zeros(10, dtype=DTYPE)
        for start in (0, 2, 4, 6, 8):
            covered = torch.zeros(10, dtype=torch.bool)
            covered[start : start + 3] = True
            occluded = torch.where(covered, baseline, x)
            total += (t - model(occluded)[:, 1])[:, None] * covered
            count += covered
    for per_eval in (1, 2, 5):
        ours = Occlusion(model).attribute(x, (3,), 2, baselines=baseline, target=1, perturbations_per_eval=per_eval)
        _close(ours, total / count, **TIGHT)


# --------------------------------------------------------------------------------------------------
# Captum parity (float64)


@pytest.mark.parametrize("abs_", [True, False])
def test_saliency_matches_captum(two_input, abs_: bool) -> None:  # type: ignore[no-untyped-def]
    model, inputs, scale = two_input
    ours = Saliency(model).attribute(inputs, target=[0, 2, 1], abs=abs_, additional_forward_args=scale)
    theirs = _quiet(
        captum_attr.Saliency(model).attribute, inputs, target=[0, 2, 1], abs=abs_, additional_forward_args=scale
    )
    assert isinstance(ours, tuple)
    _close(ours, theirs, **TIGHT)


def test_saliency_and_input_x_gradient_single_tensor(cnn: nn.Module, images: torch.Tensor) -> None:
    target = torch.tensor([2, 0, 1])
    for ours_cls, their_cls in ((Saliency, captum_attr.Saliency), (InputXGradient, captum_attr.InputXGradient)):
        ours = ours_cls(cnn).attribute(images, target=target)
        theirs = _quiet(their_cls(cnn).attribute, images, target=target)
        assert isinstance(ours, torch.Tensor)
        _close(ours, theirs, **TIGHT)


def test_input_x_gradient_matches_captum(two_input) -> None:  # type: ignore[no-untyped-def]
    model, inputs, scale = two_input
    ours = InputXGradient(model).attribute(inputs, target=2, additional_forward_args=(scale,))
    theirs = _quiet(captum_attr.InputXGradient(model).attribute, inputs, target=2, additional_forward_args=(scale,))
    _close(ours, theirs, **TIGHT)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("multiply_by_inputs", [True, False])
@pytest.mark.parametrize("internal_batch_size", [None, 7])
def test_integrated_gradients_matches_captum(
    two_input, method: str, multiply_by_inputs: bool, internal_batch_size
) -> None:  # type: ignore[no-untyped-def]
    model, inputs, scale = two_input
    baselines = (0.25, torch.randn(3, 5, dtype=DTYPE, generator=torch.Generator().manual_seed(10)))
    kwargs = dict(
        baselines=baselines,
        target=[1, 0, 2],
        additional_forward_args=scale,
        n_steps=12,
        method=method,
        internal_batch_size=internal_batch_size,
        return_convergence_delta=True,
    )
    ours, delta = _quiet(IntegratedGradients(model, multiply_by_inputs).attribute, inputs, **kwargs)
    theirs, their_delta = _quiet(captum_attr.IntegratedGradients(model, multiply_by_inputs).attribute, inputs, **kwargs)
    _close(ours, theirs, **CAPTUM)
    if multiply_by_inputs:  # (Captum's delta of the "local" variant sums gradients, not contributions)
        _close(delta, their_delta, rtol=0, atol=1e-6 * _scale(ours))


def _scale(attributions: tuple[torch.Tensor, ...]) -> float:
    """The size of the sums a convergence delta is the difference of (for its tolerance)."""
    return float(sum(a.flatten(1).abs().sum(1) for a in attributions).max()) + 1.0


def test_compute_convergence_delta_matches_captum(cnn: nn.Module, images: torch.Tensor) -> None:
    attributions = torch.randn_like(images)
    ours = IntegratedGradients(cnn).compute_convergence_delta(attributions, 0.5, images, target=1)
    theirs = captum_attr.IntegratedGradients(cnn).compute_convergence_delta(attributions, 0.5, images, target=1)
    _close(ours, theirs, **TIGHT)


class _Recorder:
    """Wraps a method and records the (noisy) inputs and arguments it is called with."""

    def __init__(self, method) -> None:  # type: ignore[no-untyped-def]
        self.method = method
        self.calls: list[tuple[tuple[torch.Tensor, ...], dict]] = []

    @property
    def multiplies_by_inputs(self) -> bool:
        return self.method.multiplies_by_inputs

    def has_convergence_delta(self) -> bool:
        return self.method.has_convergence_delta()

    def attribute(self, inputs, **kwargs):  # type: ignore[no-untyped-def]
        given = inputs if isinstance(inputs, tuple) else (inputs,)
        self.calls.append((tuple(x.detach().clone() for x in given), kwargs))
        return self.method.attribute(inputs, **kwargs)


def _replay_noise(monkeypatch, recorder: _Recorder) -> None:  # type: ignore[no-untyped-def]
    """Make Captum's NoiseTunnel draw exactly the noisy inputs that deltalift's drew."""
    noisy = iter([x for inputs, _ in recorder.calls for x in inputs])

    def add_noise(input, stdev, nt_samples_partition):  # type: ignore[no-untyped-def]
        x = next(noisy)
        assert x.shape[0] == input.shape[0] * nt_samples_partition
        return x

    monkeypatch.setattr(captum_nt.NoiseTunnel, "_add_noise_to_input", staticmethod(add_noise))


@pytest.mark.parametrize("nt_type", ["smoothgrad", "smoothgrad_sq", "vargrad"])
@pytest.mark.parametrize(
    "ours_cls, their_cls, extra_kwargs",
    [
        (Saliency, captum_attr.Saliency, {"abs": False}),
        (InputXGradient, captum_attr.InputXGradient, {}),
        (IntegratedGradients, captum_attr.IntegratedGradients, {"n_steps": 5, "return_convergence_delta": True}),
    ],
)
def test_noise_tunnel_matches_captum(monkeypatch, two_input, nt_type, ours_cls, their_cls, extra_kwargs) -> None:  # type: ignore[no-untyped-def]
    """Same noise for both (deltalift's draws are replayed into Captum); 5 samples in batches
    of 2, 2 and 1, per-example targets, additional arguments and (for IG) baselines."""
    model, inputs, scale = two_input
    kwargs = dict(target=[2, 1, 0], additional_forward_args=scale, **extra_kwargs)
    if ours_cls is IntegratedGradients:
        kwargs["baselines"] = (torch.randn(3, 2, 8, 8, dtype=DTYPE, generator=torch.Generator().manual_seed(16)), 0.1)
    recorder = _Recorder(ours_cls(model))
    ours = NoiseTunnel(recorder).attribute(
        inputs, nt_type=nt_type, nt_samples=5, nt_samples_batch_size=2, stdevs=(0.3, 0.7), random_state=11, **kwargs
    )
    assert [c[0][0].shape[0] for c in recorder.calls] == [6, 6, 3]
    _replay_noise(monkeypatch, recorder)
    theirs = _quiet(
        captum_attr.NoiseTunnel(their_cls(model)).attribute,
        inputs,
        nt_type=nt_type,
        nt_samples=5,
        nt_samples_batch_size=2,
        stdevs=(0.3, 0.7),
        **kwargs,
    )
    if kwargs.get("return_convergence_delta"):
        (ours, delta), (theirs, their_delta) = ours, theirs
        _close(delta, their_delta, rtol=0, atol=1e-6 * _scale(ours))
    _close(ours, theirs, **(CAPTUM if ours_cls is IntegratedGradients else TIGHT))


def test_noise_tunnel_on_deeplift_is_the_average_over_its_noisy_inputs(cnn: nn.Module, images: torch.Tensor) -> None:
    recorder = _Recorder(DeepLift(cnn))
    ours, delta = NoiseTunnel(recorder).attribute(
        images, nt_samples=4, stdevs=0.2, random_state=0, baselines=0.0, target=1, return_convergence_delta=True
    )
    assert delta.shape == (12,) and delta.abs().max() < 1e-9
    (noisy,), _ = recorder.calls[0]
    each = DeepLift(cnn).attribute(noisy, baselines=0.0, target=1).reshape(3, 4, 2, 8, 8)
    _close(ours, each.mean(1), **TIGHT)


@pytest.mark.parametrize(
    "window, strides, per_eval",
    [((2, 3, 3), None, 1), ((1, 3, 3), (1, 2, 3), 4), ((2, 4, 4), 2, 3), ((2, 2, 2), (2, 1, 2), 100)],
)
def test_occlusion_images_matches_captum(cnn: nn.Module, images: torch.Tensor, window, strides, per_eval) -> None:  # type: ignore[no-untyped-def]
    kwargs = dict(strides=strides, target=[0, 1, 2], perturbations_per_eval=per_eval, baselines=0.5)
    ours = Occlusion(cnn).attribute(images, window, **kwargs)
    theirs = captum_attr.Occlusion(cnn).attribute(images, window, **kwargs)
    assert ours.dtype == DTYPE  # (Captum's is float32)
    _close(ours, theirs, **CAPTUM)


@pytest.mark.parametrize("window, strides", [((3,), 2), ((4,), 3), ((1,), None), ((10,), 4)])
def test_occlusion_1d_matches_captum(window, strides) -> None:  # type: ignore[no-untyped-def]
    model = _seeded(nn.Sequential(nn.Linear(10, 6), nn.ReLU(), nn.Linear(6, 2)), 12)
    x = torch.randn(4, 10, dtype=DTYPE, generator=torch.Generator().manual_seed(13))
    baseline = torch.randn(4, 10, dtype=DTYPE, generator=torch.Generator().manual_seed(14))
    kwargs = dict(strides=strides, baselines=baseline, target=torch.tensor([0, 1, 1, 0]), perturbations_per_eval=3)
    ours = Occlusion(model).attribute(x, window, **kwargs)
    theirs = captum_attr.Occlusion(model).attribute(x, window, **kwargs)
    _close(ours, theirs, **CAPTUM)


def test_occlusion_tuple_inputs_matches_captum(two_input) -> None:  # type: ignore[no-untyped-def]
    model, inputs, scale = two_input
    kwargs = dict(
        strides=((1, 2, 2), 1),
        baselines=(0.0, torch.ones(1, 5, dtype=DTYPE)),
        target=2,
        additional_forward_args=(scale,),
        perturbations_per_eval=2,
    )
    ours = Occlusion(model).attribute(inputs, ((2, 3, 3), (2,)), **kwargs)
    theirs = captum_attr.Occlusion(model).attribute(inputs, ((2, 3, 3), (2,)), **kwargs)
    assert isinstance(ours, tuple)
    _close(ours, theirs, **CAPTUM)


@pytest.mark.parametrize(
    "layer, to_input, internal_batch_size, method",
    [("relu1", False, None, "gausslegendre"), ("conv2", True, 5, "riemann_middle"), ("fc", False, 2, "riemann_left")],
)
def test_internal_influence_matches_captum(cnn, images, layer, to_input, internal_batch_size, method) -> None:  # type: ignore[no-untyped-def]
    kwargs = dict(
        baselines=0.1,
        target=[2, 2, 0],
        n_steps=8,
        method=method,
        attribute_to_layer_input=to_input,
        internal_batch_size=internal_batch_size,
    )
    module = getattr(cnn, layer)
    ours = _quiet(InternalInfluence(cnn, module).attribute, images, **kwargs)
    by_path = _quiet(InternalInfluence(cnn, layer).attribute, images, **kwargs)
    theirs = _quiet(captum_attr.InternalInfluence(cnn, module).attribute, images, **kwargs)
    _close(ours, theirs, **CAPTUM)
    _close(by_path, ours, **TIGHT)


def test_internal_influence_tuple_inputs_matches_captum(two_input) -> None:  # type: ignore[no-untyped-def]
    model, inputs, scale = two_input
    kwargs = dict(target=1, additional_forward_args=scale, n_steps=6, baselines=(0.0, 0.5))
    ours = InternalInfluence(model, model.tanh).attribute(inputs, **kwargs)
    theirs = _quiet(captum_attr.InternalInfluence(model, model.tanh).attribute, inputs, **kwargs)
    _close(ours, theirs, **CAPTUM)


# --------------------------------------------------------------------------------------------------
# functional ops and a reused module


def test_every_method_same_on_functional_twin(cnn: nn.Module, images: torch.Tensor) -> None:
    twin = TwinNet(cnn).eval()  # type: ignore[arg-type]
    target = [1, 0, 2]
    calls = [
        (lambda m: Saliency(m).attribute(images, target=target)),
        (lambda m: InputXGradient(m).attribute(images, target=target)),
        (lambda m: IntegratedGradients(m).attribute(images, baselines=0.2, target=target, n_steps=8)),
        (lambda m: NoiseTunnel(Saliency(m)).attribute(images, nt_samples=3, random_state=5, target=target)),
        (lambda m: Occlusion(m).attribute(images, (2, 3, 3), (1, 2, 2), target=target, perturbations_per_eval=4)),
    ]
    for call in calls:
        _close(call(twin), call(cnn), **TIGHT)
    kwargs = dict(target=target, n_steps=6)
    # the second ReLU: its own module in one net, the second call of the shared one in the other
    _close(
        InternalInfluence(twin, "relu_1").attribute(images, **kwargs),
        InternalInfluence(cnn, cnn.relu2).attribute(images, **kwargs),
        **TIGHT,
    )
    _close(
        InternalInfluence(twin, twin.conv2).attribute(images, attribute_to_layer_input=True, **kwargs),
        InternalInfluence(cnn, "conv2").attribute(images, attribute_to_layer_input=True, **kwargs),
        **TIGHT,
    )
    with pytest.raises(ValueError, match="runs 2 times"):
        InternalInfluence(twin, twin.act).attribute(images, **kwargs)


# --------------------------------------------------------------------------------------------------
# NoiseTunnel's noise


def _noise(recorder: _Recorder, x: torch.Tensor, samples: int) -> torch.Tensor:
    """The noise of every recorded call, as ``(batch, samples, ...)``."""
    noisy = torch.cat([inputs[0].reshape((x.shape[0], -1) + tuple(x.shape[1:])) for inputs, _ in recorder.calls], 1)
    assert noisy.shape[1] == samples
    return noisy - x.unsqueeze(1)


def test_noise_fraction_scales_with_each_examples_range() -> None:
    g = torch.Generator().manual_seed(15)
    x = torch.rand(2, 1000, dtype=DTYPE, generator=g)
    x[1] = 100 * x[1] - 30  # range ~100 against ~1
    ranges = x.amax(1) - x.amin(1)
    model = nn.Linear(1000, 1).to(DTYPE)
    recorder = _Recorder(Saliency(model))
    NoiseTunnel(recorder).attribute(x, nt_samples=4, noise_fraction=0.15, random_state=0)
    noise = _noise(recorder, x, 4)
    relative_std = noise.flatten(1).std(1) / ranges
    torch.testing.assert_close(relative_std, torch.full((2,), 0.15, dtype=DTYPE), rtol=0.05, atol=0)
    recorder = _Recorder(Saliency(model))
    NoiseTunnel(recorder).attribute(x, nt_samples=4, stdevs=0.5, random_state=0)
    absolute_std = _noise(recorder, x, 4).flatten(1).std(1)
    torch.testing.assert_close(absolute_std, torch.full((2,), 0.5, dtype=DTYPE), rtol=0.05, atol=0)


def test_noise_is_reproducible_from_random_state(cnn: nn.Module, images: torch.Tensor) -> None:
    nt = NoiseTunnel(Saliency(cnn))
    kwargs = dict(nt_type="vargrad", nt_samples=5, noise_fraction=0.15, target=1)
    first = nt.attribute(images, random_state=3, **kwargs)
    again = nt.attribute(images, random_state=3, nt_samples_batch_size=2, **kwargs)
    one_by_one = nt.attribute(images, random_state=3, nt_samples_batch_size=1, **kwargs)
    other = nt.attribute(images, random_state=4, **kwargs)
    _close(again, first, **TIGHT)
    _close(one_by_one, first, **TIGHT)
    assert not torch.allclose(other, first)
    state = torch.get_rng_state()
    nt.attribute(images, random_state=3, **kwargs)
    assert torch.equal(torch.get_rng_state(), state)  # a seed leaves the global generator alone
    torch.manual_seed(0)
    global_first = nt.attribute(images, **kwargs)
    torch.manual_seed(0)
    _close(nt.attribute(images, **kwargs), global_first, **TIGHT)


def test_draw_baseline_from_distrib_picks_rows_reproducibly(cnn: nn.Module, images: torch.Tensor) -> None:
    references = torch.stack([torch.full((2, 8, 8), float(v), dtype=DTYPE) for v in range(6)])
    picked = []
    for _ in range(2):
        recorder = _Recorder(IntegratedGradients(cnn))
        NoiseTunnel(recorder).attribute(
            images,
            nt_samples=4,
            nt_samples_batch_size=3,
            stdevs=0.1,
            draw_baseline_from_distrib=True,
            random_state=7,
            baselines=references,
            target=0,
            n_steps=4,
        )
        rows = torch.cat([kwargs["baselines"] for _, kwargs in recorder.calls])
        assert rows.shape == (12, 2, 8, 8)
        values = rows.flatten(1)
        assert torch.equal(values, values[:, :1].expand_as(values))  # each row is one reference
        picked.append(values[:, 0])
    assert torch.equal(picked[0], picked[1])
    assert len(set(picked[0].tolist())) > 1


# --------------------------------------------------------------------------------------------------
# argument errors


def test_argument_errors(cnn: nn.Module, images: torch.Tensor) -> None:
    with pytest.raises(ValueError, match="method must be one of"):
        IntegratedGradients(cnn).attribute(images, target=0, method="simpson")
    with pytest.raises(ValueError, match="n_steps must be >= 2"):
        IntegratedGradients(cnn).attribute(images, target=0, method="riemann_left", n_steps=1)
    with pytest.raises(ValueError, match="pass target="):
        Saliency(cnn).attribute(images)
    with pytest.raises(ValueError, match="nt_type must be one of"):
        NoiseTunnel(Saliency(cnn)).attribute(images, nt_type="smooth", target=0)
    with pytest.raises(ValueError, match="stride .* larger than the sliding window"):
        Occlusion(cnn).attribute(images, (2, 2, 2), strides=3, target=0)
    with pytest.raises(ValueError, match="sliding window for inputs\\[0\\] must be 3"):
        Occlusion(cnn).attribute(images, (2, 2), target=0)
    with pytest.raises(ValueError, match="exceeds"):
        Occlusion(cnn).attribute(images, (2, 9, 2), target=0)
    with pytest.warns(UserWarning, match="internal_batch_size 2 is less than"):
        IntegratedGradients(cnn).attribute(images, target=0, n_steps=4, internal_batch_size=2)
    assert math.isfinite(float(Occlusion(cnn).attribute(images, (2, 8, 8), target=0).sum()))
