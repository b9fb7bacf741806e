"""The local Lipschitz estimate of an explanation (Alvarez-Melis & Jaakkola 2018, section 5) on
functions with known constants, and the stability comparison on models whose explanations have
known constants."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from deltalift.senn import SENN, IdentityConceptizer, local_lipschitz, sample_ball, stability_comparison


def _ignore_targets(fn):  # type: ignore[no-untyped-def]
    return lambda points, targets: fn(points)


def test_a_linear_map_has_its_largest_singular_value() -> None:
    a = torch.tensor([[2.0, 1.0], [0.5, -3.0]], dtype=torch.float64)
    sigma = float(torch.linalg.matrix_norm(a, ord=2))
    x = torch.randn(5, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    got = local_lipschitz(_ignore_targets(lambda p: p @ a.T), x, eps=0.5, n_samples=64, n_rounds=4)
    assert float(got.max()) <= sigma * (1 + 1e-9)
    assert float(got.min()) >= 0.995 * sigma


def test_relu_is_one_where_active_and_zero_where_not() -> None:
    positive = torch.full((3, 4), 2.0, dtype=torch.float64) + torch.rand(3, 4, dtype=torch.float64)
    relu = _ignore_targets(torch.relu)
    torch.testing.assert_close(
        local_lipschitz(relu, positive, eps=0.5, n_samples=8), torch.ones(3, dtype=torch.float64)
    )
    torch.testing.assert_close(
        local_lipschitz(relu, -positive, eps=0.5, n_samples=8), torch.zeros(3, dtype=torch.float64)
    )


def test_sine_has_local_constant_k_at_zero_and_less_near_its_peak() -> None:
    k = 4.0
    sine = _ignore_targets(lambda p: torch.sin(k * p))
    at_zero = local_lipschitz(sine, torch.zeros(1, 1, dtype=torch.float64), eps=0.05, n_samples=64, n_rounds=4)
    # the secant slope of sin(kx) over [0, t] is sin(kt)/t, at most k, close to k for small t
    assert k * math.sin(k * 0.05) / (k * 0.05) * 0.99 < float(at_zero) <= k
    peak = torch.full((1, 1), math.pi / (2 * k), dtype=torch.float64)
    near_peak = local_lipschitz(sine, peak, eps=0.05, n_samples=64, n_rounds=4)
    bound = k * math.sin(k * 0.05)  # |k cos(k t)| over the ball around the peak
    assert float(near_peak) <= bound * (1 + 1e-6) and float(near_peak) < 0.25 * k


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_ball_samples_stay_inside_the_ball(norm: str) -> None:
    points = sample_ball(2000, (3,), 0.7, norm, torch.Generator().manual_seed(0))
    size = points.norm(dim=1) if norm == "l2" else points.abs().amax(1)
    assert float(size.max()) <= 0.7 + 1e-12
    if norm == "l2":  # uniform in the 3-ball: E|x| = 3/4 r
        assert float(size.mean()) == pytest.approx(0.75 * 0.7, rel=0.03)
    x = torch.zeros(4, 3, dtype=torch.float64)
    seen: list[torch.Tensor] = []
    local_lipschitz(lambda p, t: seen.append(p) or p, x, eps=0.7, n_samples=5, n_rounds=2, norm=norm)
    offsets = torch.cat(seen[1:])
    inside = offsets.norm(dim=1) if norm == "l2" else offsets.abs().amax(1)
    assert float(inside.max()) <= 0.7 + 1e-9


def test_bad_arguments() -> None:
    x = torch.zeros(2, 2)
    identity = _ignore_targets(lambda p: p)
    with pytest.raises(ValueError, match="eps"):
        local_lipschitz(identity, x, eps=0.0)
    with pytest.raises(ValueError, match="norm"):
        local_lipschitz(identity, x, eps=0.1, norm="l1")
    with pytest.raises(ValueError, match="one entry per example"):
        local_lipschitz(identity, x, eps=0.1, targets=torch.zeros(3, dtype=torch.long))
    with pytest.raises(TypeError, match="floating"):
        local_lipschitz(identity, torch.zeros(2, 2, dtype=torch.long), eps=0.1)


def test_stability_comparison_on_a_senn_with_constant_relevances() -> None:
    """theta constant and h(x) = x: f is linear.  SENN's relevances and the gradient (SmoothGrad of
    |grad|) do not move (L = 0); DeepLIFT, Integrated Gradients, gradient x input and occlusion
    with a zero reference all give theta_c * x, whose local constant is max_i |theta_{i,c}|."""
    theta = torch.tensor([[2.0, -0.5], [-3.0, 1.0]], dtype=torch.float64)  # (k=2 features, C=2)

    class Constant(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return theta.expand(x.shape[0], 2, 2) + 0 * x.sum(1)[:, None, None]

    model = SENN(IdentityConceptizer((2,)), Constant()).eval()
    x = torch.tensor([[1.0, 0.2], [0.1, 1.0], [0.5, 0.4]], dtype=torch.float64)
    result = stability_comparison(model, x, eps=0.2, n_samples=12, n_rounds=3)
    predicted = model(x).argmax(1)
    expected = theta.abs().amax(0)[predicted]
    for name in ("SENN", "SmoothGrad"):
        assert float(result.estimates[name].abs().max()) < 1e-9, name
    for name in ("DeepLift", "IntegratedGradients", "InputXGradient", "Occlusion"):
        got = result.estimates[name]
        assert bool((got <= expected * (1 + 1e-6)).all()) and bool((got >= 0.98 * expected).all()), name
    assert [row[0] for row in result.rows()] == list(result.estimates)


def test_the_denominator_is_the_change_of_the_concepts_when_an_encoder_is_given() -> None:
    """SENN, eq. 5: e(x) = B h(x) with h(x) = A x has the constant sigma_max(B) in concept space
    (||B (h - h')|| / ||h - h'||) and sigma_max(B A) in input space; the two differ by A's scale."""
    a = torch.tensor([[3.0, 0.0], [0.0, 0.5]], dtype=torch.float64)
    b = torch.tensor([[1.0, 2.0], [0.0, 1.0]], dtype=torch.float64)
    x = torch.tensor([[0.3, -0.2], [1.0, 0.5]], dtype=torch.float64)
    encoder = lambda p: p @ a.T  # noqa: E731
    explain = _ignore_targets(lambda p: encoder(p) @ b.T)
    concepts = local_lipschitz(explain, x, eps=0.5, n_samples=64, n_rounds=4, encoder=encoder)
    inputs = local_lipschitz(explain, x, eps=0.5, n_samples=64, n_rounds=4)
    in_concepts, in_inputs = float(torch.linalg.matrix_norm(b, 2)), float(torch.linalg.matrix_norm(b @ a, 2))
    assert bool((concepts <= in_concepts * (1 + 1e-9)).all()) and bool((concepts >= 0.98 * in_concepts).all())
    assert bool((inputs <= in_inputs * (1 + 1e-9)).all()) and bool((inputs >= 0.98 * in_inputs).all())
    assert in_inputs > 1.3 * in_concepts  # the test tells the two denominators apart


class _LinearConcepts(nn.Module):
    def __init__(self, a: torch.Tensor) -> None:
        super().__init__()
        self.a, self.n_concepts = a, a.shape[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.a.T


class _RelevancesLinearInConcepts(nn.Module):
    """theta(x)_{:,c} = M_c h(x) with h(x) = A x."""

    def __init__(self, a: torch.Tensor, m: torch.Tensor) -> None:
        super().__init__()
        self.a, self.m = a, m  # m: (C, k, k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.einsum("cij,nj->nic", self.m, x @ self.a.T)


def test_senn_row_divides_by_the_concepts_change_and_post_hoc_rows_by_the_inputs() -> None:
    a = torch.tensor([[4.0, 0.0], [0.0, 0.5]], dtype=torch.float64)
    m = torch.tensor([[[1.0, 0.5], [0.0, 2.0]], [[0.5, 0.0], [1.0, 1.0]]], dtype=torch.float64)
    model = SENN(_LinearConcepts(a), _RelevancesLinearInConcepts(a, m))
    x = torch.tensor([[0.5, 0.2], [-0.4, 1.0], [0.3, -0.6]], dtype=torch.float64)
    predicted = model(x).argmax(1)
    kwargs = {"eps": 0.3, "n_samples": 48, "n_rounds": 4, "methods": ("SENN",)}
    in_concepts = stability_comparison(model, x, **kwargs).estimates["SENN"]  # type: ignore[arg-type]
    in_inputs = stability_comparison(model, x, senn_space="input", **kwargs).estimates["SENN"]  # type: ignore[arg-type]
    expected_concepts = torch.linalg.matrix_norm(m, 2)[predicted]
    expected_inputs = torch.linalg.matrix_norm(m @ a, 2)[predicted]
    assert bool((in_concepts <= expected_concepts * (1 + 1e-9)).all())
    assert bool((in_concepts >= 0.97 * expected_concepts).all())
    assert bool((in_inputs <= expected_inputs * (1 + 1e-9)).all()) and bool((in_inputs >= 0.97 * expected_inputs).all())
    with pytest.raises(ValueError, match="senn_space"):
        stability_comparison(model, x, senn_space="pixels", **kwargs)  # type: ignore[arg-type]


def test_stability_comparison_restores_the_models_mode() -> None:
    model = SENN(IdentityConceptizer((2,)), nn.Sequential(nn.Linear(2, 4), nn.Dropout(0.5), nn.Unflatten(1, (2, 2))))
    model = model.double().train()
    model.parametrizer[1].eval()  # a submodule's own mode is kept too
    stability_comparison(
        model, torch.rand(2, 2, dtype=torch.float64), eps=0.1, n_samples=2, n_rounds=0, methods=("SENN",)
    )
    assert model.training and model.conceptizer.training and model.parametrizer[0].training
    assert not model.parametrizer[1].training
