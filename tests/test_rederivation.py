"""DeepLIFT Rescale re-derived from its definitions, slowly and obviously, against the engine.

Shrikumar et al. 2017, section 3.5.2.  A network of affine layers and element-wise nonlinearities is rewritten as a
list of steps on flat vectors, one example at a time:

* an affine layer (Linear, Conv, AvgPool, eval-mode BatchNorm, Flatten, eval-mode Dropout) becomes
  an explicit matrix ``W`` and offset ``b`` with ``y = W a + b``: ``b = layer(0)`` and column ``i``
  of ``W`` is ``layer(e_i) - layer(0)`` (the image of the ``i``-th basis vector);
* a nonlinearity ``y = f(z)`` keeps its scalar formula ``f`` and derivative ``f'``.

The input and the reference are pushed through the steps; each nonlinearity gets the Rescale
multipliers ``m = (f(z) - f(z0)) / (z - z0)`` (``f'(z0)`` where ``|z - z0| <= eps max(|z|, |z0|)``), and the chain
rule is applied backwards by hand, starting from the one-hot row of the target:
``m <- W^T m`` through an affine step, ``m <- m * m_rescale`` through a nonlinearity.  The
contributions are ``m * (x - x0)``.  No deltalift code, hook or autograd is involved.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
from torch import nn

from deltalift import DeepLift

DTYPE = torch.float64
RTOL, ATOL = 1e-10, 1e-12


# --------------------------------------------------------------------------------------------------
# the re-derivation


def _sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z)) if z >= 0 else math.exp(z) / (1.0 + math.exp(z))


#: f and f' of each nonlinearity, as plain scalar formulas (f'(0) of ReLU is 0, as in PyTorch).
SCALAR_FUNCTIONS: dict[type, tuple[Callable[[float], float], Callable[[float], float]]] = {
    nn.ReLU: (lambda z: max(z, 0.0), lambda z: 1.0 if z > 0 else 0.0),
    nn.Sigmoid: (_sigmoid, lambda z: _sigmoid(z) * (1.0 - _sigmoid(z))),
    nn.Tanh: (math.tanh, lambda z: 1.0 - math.tanh(z) ** 2),
    nn.ELU: (lambda z: z if z > 0 else math.expm1(z), lambda z: 1.0 if z > 0 else math.exp(z)),
    nn.Softplus: (lambda z: math.log1p(math.exp(z)) if z < 20 else z, lambda z: _sigmoid(z)),
}

AFFINE_MODULES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.AvgPool2d, nn.BatchNorm2d, nn.Flatten, nn.Dropout)


@dataclass
class Affine:
    weight: torch.Tensor  # (out, in) on flattened activations
    bias: torch.Tensor  # (out,)


@dataclass
class Nonlinear:
    f: Callable[[float], float]
    df: Callable[[float], float]


def explicit_affine(layer: nn.Module, in_shape: tuple[int, ...]) -> tuple[Affine, tuple[int, ...]]:
    """The matrix and offset of an affine layer acting on one flattened example."""
    n = math.prod(in_shape)
    with torch.no_grad():
        offset = layer(torch.zeros((1,) + in_shape, dtype=DTYPE))
        images = layer(torch.eye(n, dtype=DTYPE).reshape((n,) + in_shape))
    out_shape = tuple(offset.shape[1:])
    weight = (images.reshape(n, -1) - offset.reshape(1, -1)).T.contiguous()
    return Affine(weight, offset.reshape(-1)), out_shape


def to_steps(model: nn.Sequential, in_shape: tuple[int, ...]) -> list[Affine | Nonlinear]:
    steps: list[Affine | Nonlinear] = []
    shape = in_shape
    for layer in model:
        if isinstance(layer, AFFINE_MODULES):
            step, shape = explicit_affine(layer, shape)
            steps.append(step)
        else:
            f, df = SCALAR_FUNCTIONS[type(layer)]
            steps.append(Nonlinear(f, df))
    return steps


def forward(steps: list[Affine | Nonlinear], a: torch.Tensor) -> list[torch.Tensor]:
    """Activations of one flat example: the input of every step, then the output."""
    activations = [a]
    for step in steps:
        if isinstance(step, Affine):
            a = step.weight @ a + step.bias
        else:
            a = torch.tensor([step.f(v) for v in a.tolist()], dtype=DTYPE)
        activations.append(a)
    return activations


def rescale_multipliers(
    step: Nonlinear, z: torch.Tensor, z0: torch.Tensor, eps: float, fallback_at_input: bool = False
) -> tuple[torch.Tensor, int]:
    """``(f(z) - f(z0)) / (z - z0)`` per unit, ``f'(z0)`` where ``|z - z0| <= eps max(|z|, |z0|)`` (the
    near-zero test is relative to the values' scale); also how many fell back.
    (``fallback_at_input`` takes ``f'(z)`` instead: a wrong variant, to show that tests tell them apart.)"""
    multipliers, fallbacks = [], 0
    for zi, z0i in zip(z.tolist(), z0.tolist()):
        if abs(zi - z0i) > eps * max(abs(zi), abs(z0i)):
            multipliers.append((step.f(zi) - step.f(z0i)) / (zi - z0i))
        else:
            multipliers.append(step.df(zi if fallback_at_input else z0i))
            fallbacks += 1
    return torch.tensor(multipliers, dtype=DTYPE), fallbacks


@dataclass
class Rederived:
    multipliers: torch.Tensor
    contributions: torch.Tensor
    t: float
    t0: float
    fallbacks: int


def rederive(
    steps: list[Affine | Nonlinear], x: torch.Tensor, x0: torch.Tensor, target: int, eps: float, **variant: bool
) -> Rederived:
    """DeepLIFT Rescale for one example (flat ``x`` and ``x0``) and one target output."""
    acts, acts0 = forward(steps, x), forward(steps, x0)
    m = torch.zeros_like(acts[-1])
    m[target] = 1.0  # m(dt, dt) = 1
    fallbacks = 0
    for i in reversed(range(len(steps))):
        step = steps[i]
        if isinstance(step, Affine):
            m = step.weight.T @ m  # chain rule through y = W a + b: m(da_k, dt) = sum_j W_jk m(dy_j, dt)
        else:
            local, n = rescale_multipliers(step, acts[i], acts0[i], eps, **variant)
            m = m * local  # chain rule through y = f(z), element-wise
            fallbacks += n
    return Rederived(m, m * (x - x0), float(acts[-1][target]), float(acts0[-1][target]), fallbacks)


def rederive_batch(
    model: nn.Sequential, x: torch.Tensor, x0: torch.Tensor, targets: list[int], eps: float = 1e-7, **variant: bool
) -> list[Rederived]:
    """Per-example re-derivation; ``x0`` is broadcast to ``x``.  Also checks that the explicit steps
    compute the model."""
    steps = to_steps(model, tuple(x.shape[1:]))
    x0 = x0.expand_as(x)
    results = [rederive(steps, xi.flatten(), x0i.flatten(), t, eps, **variant) for xi, x0i, t in zip(x, x0, targets)]
    with torch.no_grad():
        out, out0 = model(x), model(x0)
    rows = torch.arange(len(targets))
    torch.testing.assert_close(
        torch.tensor([r.t for r in results], dtype=DTYPE), out[rows, targets], rtol=0, atol=1e-12
    )
    torch.testing.assert_close(
        torch.tensor([r.t0 for r in results], dtype=DTYPE), out0[rows, targets], rtol=0, atol=1e-12
    )
    return results


def _stack(results: list[Rederived], field: str, shape: torch.Size) -> torch.Tensor:
    return torch.stack([getattr(r, field) for r in results]).reshape(shape)


# --------------------------------------------------------------------------------------------------
# models


def _mlp(seed: int, widths: list[int], activations: list[type]) -> nn.Sequential:
    """``Linear(widths[0], widths[1]), activations[0], ..., Linear(widths[-2], widths[-1])``."""
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for i, act in enumerate(activations):
        layers += [nn.Linear(widths[i], widths[i + 1]), act()]
    layers.append(nn.Linear(widths[-2], widths[-1]))
    return nn.Sequential(*layers).to(DTYPE).eval()


#: name: (seed, widths, activations); depth = number of Linear layers.
MLPS = {
    "depth2_relu": (0, [5, 7, 3], [nn.ReLU]),
    "depth3_relu_sigmoid": (1, [6, 8, 6, 4], [nn.ReLU, nn.Sigmoid]),
    "depth4_tanh_elu_sigmoid": (2, [6, 9, 7, 5, 3], [nn.Tanh, nn.ELU, nn.Sigmoid]),
}


@pytest.fixture(scope="module", params=list(MLPS))
def mlp(request):
    seed, widths, activations = MLPS[request.param]
    return _mlp(seed, widths, activations), widths[0], widths[-1]


def _init_batchnorm(bn: nn.BatchNorm2d, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    n = bn.num_features
    with torch.no_grad():
        bn.running_mean.copy_(torch.randn(n, generator=g, dtype=DTYPE))
        bn.running_var.copy_(torch.rand(n, generator=g, dtype=DTYPE) + 0.5)
        bn.weight.copy_(torch.randn(n, generator=g, dtype=DTYPE))
        bn.bias.copy_(torch.randn(n, generator=g, dtype=DTYPE))


def _cnn_avgpool() -> nn.Sequential:
    torch.manual_seed(3)
    return (
        nn.Sequential(
            nn.Conv2d(2, 4, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(4, 4, 3, stride=2, padding=1),
            nn.Tanh(),
            nn.AvgPool2d(2),
            nn.Flatten(),
            nn.Linear(4 * 2 * 2, 6),
            nn.Sigmoid(),
            nn.Linear(6, 3),
        )
        .to(DTYPE)
        .eval()
    )


def _cnn_batchnorm() -> nn.Sequential:
    torch.manual_seed(4)
    model = nn.Sequential(
        nn.Conv2d(3, 5, 3),
        nn.BatchNorm2d(5),
        nn.ReLU(),
        nn.Dropout(0.3),
        nn.Conv2d(5, 4, 2),
        nn.Softplus(),
        nn.Flatten(),
        nn.Linear(4 * 4 * 4, 8),
        nn.ReLU(),
        nn.Linear(8, 4),
    ).to(DTYPE)
    _init_batchnorm(model[1], 5)
    return model.eval()


CNNS = {"conv_relu_tanh_avgpool": (_cnn_avgpool, (2, 8, 8)), "conv_batchnorm_softplus": (_cnn_batchnorm, (3, 7, 7))}


@pytest.fixture(scope="module", params=list(CNNS))
def cnn(request):
    build, shape = CNNS[request.param]
    model = build()
    return model, shape, model(torch.zeros((1,) + shape, dtype=DTYPE)).shape[1]


def _randn(*shape, seed, scale=1.0):
    return scale * torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=DTYPE)


# --------------------------------------------------------------------------------------------------
# tests


def _compare(model, x, x0, targets, eps=1e-7, baselines="x0", exact=True):
    """Engine vs re-derivation: contributions, multipliers, summation-to-delta.  ``baselines`` is
    what the engine is given (default: ``x0`` itself); ``exact=False`` where the derivative
    fallback makes summation-to-delta approximate."""
    expected = rederive_batch(model, x, x0, targets, eps)
    # Where the fallback is used, summation-to-delta is approximate: no warning then.
    tolerance = None if exact else 1.0
    explainer = DeepLift(model, eps=eps, strict=exact, tolerance=tolerance)
    given = x0 if isinstance(baselines, str) else baselines
    contributions, delta = explainer.attribute(x, given, target=targets, return_convergence_delta=True)
    multipliers = DeepLift(model, multiply_by_inputs=False, eps=eps, tolerance=tolerance).attribute(
        x, given, target=targets
    )

    torch.testing.assert_close(contributions, _stack(expected, "contributions", x.shape), rtol=RTOL, atol=ATOL)
    torch.testing.assert_close(multipliers, _stack(expected, "multipliers", x.shape), rtol=RTOL, atol=ATOL)

    # The engine's delta is sum(C) - (t(x) - t(x0)), with t from the re-derivation's forward pass.
    dt = torch.tensor([r.t - r.t0 for r in expected], dtype=DTYPE)
    rederived_sums = torch.stack([r.contributions.sum() for r in expected])
    torch.testing.assert_close(delta, rederived_sums - dt, rtol=0, atol=1e-12)
    assert dt.abs().min() > 1e-6, "degenerate test: t(x) = t(x0)"
    if exact:
        # Summation-to-delta, re-derived: sum_i C(dx_i, dt) = t(x) - t(x0), and the engine's delta ~0.
        torch.testing.assert_close(rederived_sums, dt, rtol=0, atol=1e-10)
        assert delta.abs().max() < 1e-10
    return expected


def test_mlp_per_example_baselines(mlp):
    model, n_in, n_out = mlp
    x, x0 = _randn(6, n_in, seed=10, scale=2.0), _randn(6, n_in, seed=11)
    targets = [i % n_out for i in range(6)]
    expected = _compare(model, x, x0, targets)
    assert sum(r.fallbacks for r in expected) == 0  # every unit took the secant


def test_mlp_shared_baseline_every_target(mlp):
    model, n_in, n_out = mlp
    x, x0 = _randn(4, n_in, seed=12, scale=2.0), _randn(1, n_in, seed=13)
    for target in range(n_out):
        _compare(model, x, x0, [target] * 4)
    # A scalar baseline and None (zeros) are references too.
    _compare(model, x, torch.full((1, n_in), -0.4, dtype=DTYPE), [0] * 4, baselines=-0.4)
    _compare(model, x, torch.zeros(1, n_in, dtype=DTYPE), [n_out - 1] * 4, baselines=None)


def test_mlp_derivative_fallback_at_reference(mlp):
    """With a large eps some units take the secant and some ``f'(z0)`` (at the reference, not at
    the input: the two differ by ~f'' * dz, far above the tolerance)."""
    model, n_in, n_out = mlp
    x0 = _randn(5, n_in, seed=14)
    x = x0 + _randn(5, n_in, seed=15, scale=0.1)
    expected = _compare(model, x, x0, [1] * 5, eps=0.03, exact=False)
    n_units = 5 * sum(step.weight.shape[0] for step in to_steps(model, (n_in,))[:-1] if isinstance(step, Affine))
    assert 0 < sum(r.fallbacks for r in expected) < n_units  # both branches exercised
    if any(isinstance(layer, (nn.Sigmoid, nn.Tanh, nn.ELU)) for layer in model):
        wrong = rederive_batch(model, x, x0, [1] * 5, eps=0.03, fallback_at_input=True)
        difference = _stack(expected, "multipliers", x.shape) - _stack(wrong, "multipliers", x.shape)
        assert difference.abs().max() > 1e-6


def test_mlp_input_equal_to_reference(mlp):
    """x = x0: every unit falls back to f'(z0): multipliers are the gradient, contributions 0."""
    model, n_in, _ = mlp
    x = _randn(3, n_in, seed=16)
    expected = rederive_batch(model, x, x.clone(), [0, 0, 0])
    multipliers = DeepLift(model, multiply_by_inputs=False).attribute(x, x.clone(), target=0)
    contributions, delta = DeepLift(model).attribute(x, x.clone(), target=0, return_convergence_delta=True)
    gradient = torch.func.vmap(torch.func.grad(lambda v: model(v[None])[0, 0]))(x)
    torch.testing.assert_close(multipliers, gradient, rtol=RTOL, atol=ATOL)
    torch.testing.assert_close(multipliers, _stack(expected, "multipliers", x.shape), rtol=RTOL, atol=ATOL)
    assert torch.all(contributions == 0)
    # t(x) - t(x0) is 0 up to rounding (the engine may evaluate input and reference rows in one
    # matrix product, where equal rows need not round equally).
    assert delta.abs().max() < 1e-15
    assert all(r.fallbacks > 0 for r in expected)


def test_cnn_per_example_baselines(cnn):
    model, shape, n_out = cnn
    x, x0 = _randn(3, *shape, seed=20), _randn(3, *shape, seed=21, scale=0.5)
    _compare(model, x, x0, [i % n_out for i in range(3)])


def test_cnn_shared_baseline(cnn):
    model, shape, n_out = cnn
    x, x0 = _randn(3, *shape, seed=22), _randn(1, *shape, seed=23, scale=0.5)
    _compare(model, x, x0, [n_out - 1] * 3)


def test_explicit_matrices_are_the_layers():
    """The re-derivation's own building block: ``W a + b`` reproduces a conv layer and an AvgPool."""
    torch.manual_seed(7)
    conv = nn.Conv2d(2, 3, 3, stride=2, padding=1).to(DTYPE)
    step, out_shape = explicit_affine(conv, (2, 5, 5))
    a = _randn(2, 5, 5, seed=24)
    with torch.no_grad():
        torch.testing.assert_close(step.weight @ a.flatten() + step.bias, conv(a[None]).flatten(), rtol=0, atol=1e-12)
    assert out_shape == (3, 3, 3) and step.weight.shape == (27, 50)
    pool_step, _ = explicit_affine(nn.AvgPool2d(2), (1, 2, 2))
    torch.testing.assert_close(pool_step.weight, torch.full((1, 4), 0.25, dtype=DTYPE))
