"""deltalift.evaluate: each metric against a hand-computed case, a slow re-derivation or a peer library."""

from __future__ import annotations

import copy
from functools import partial

import numpy as np
import pytest
import torch
from torch import nn

from deltalift.evaluate import (
    MethodExplainer,
    aopc,
    as_explainer,
    auprc,
    auroc,
    axiom_report,
    bootstrap_mean,
    curve_area,
    deletion_curve,
    erase_by_scores,
    explainer,
    infidelity,
    insertion_curve,
    localisation,
    log_odds_erasure,
    mass_inside,
    max_sensitivity,
    model_randomisation,
    parameter_layers,
    quantus_explain_func,
    randomise_layer,
    rank,
    spearman,
)
from deltalift.methods import DeepLift, InputXGradient, IntegratedGradients, NoiseTunnel, Saliency

W = torch.tensor([[1.0, 2.0, -1.0, 0.5], [0.0, -1.0, 1.0, 0.5]], dtype=torch.float64)
B = torch.tensor([0.3, -0.2], dtype=torch.float64)
X = torch.tensor([[1.0, 2.0, 3.0, 4.0]], dtype=torch.float64)


def linear_model() -> nn.Linear:
    model = nn.Linear(4, 2).double()
    with torch.no_grad():
        model.weight.copy_(W)
        model.bias.copy_(B)
    return model.eval()


def exact_linear(model: nn.Module, inputs: torch.Tensor, target: object) -> torch.Tensor:
    """w_c,i * x_i: the exact contributions of a linear model against a zero reference."""
    rows = torch.as_tensor(target).long().reshape(-1).expand(inputs.shape[0])
    return model.weight[rows].detach() * inputs  # type: ignore[index, operator]


# ---------------------------------------------------------------- log-odds erasure


def test_log_odds_erasure_on_a_linear_model_by_hand() -> None:
    # S(c0) = [1, 4, -3, 2], S(c1) = [0, -2, 3, 2]: S_diff = [1, 6, -6, 0]; two features have S_diff > 0.
    # z = [4.3, 2.8] before; erasing features 1 and 0 gives z = [-0.7, 4.8]: the log-odds fall 1.5 -> -5.5.
    result = log_odds_erasure(linear_model(), X, 0, 1, exact_linear, budget=3)
    assert result.before.item() == pytest.approx(1.5)
    assert result.after.item() == pytest.approx(-5.5)
    assert result.change.item() == pytest.approx(7.0)
    assert result.n_erased.tolist() == [2]
    assert result.erased.tolist() == [[0.0, 0.0, 3.0, 4.0]]
    one = log_odds_erasure(linear_model(), X, 0, 1, exact_linear, budget=1)
    assert one.change.item() == pytest.approx(6.0) and one.erased.tolist() == [[1.0, 0.0, 3.0, 4.0]]
    # without the S_diff > 0 condition the third feature erased is the tie at 0 (index 3), which changes nothing
    every = log_odds_erasure(linear_model(), X, 0, 1, exact_linear, budget=3, only_positive=False)
    assert every.change.item() == pytest.approx(7.0) and every.erased.tolist() == [[0.0, 0.0, 3.0, 0.0]]


def test_log_odds_erasure_with_deltalift_methods_and_a_fraction() -> None:
    model = linear_model()
    deeplift = log_odds_erasure(model, X, 0, 1, explainer(DeepLift, baselines=0.0), budget=0.5)
    gradient = log_odds_erasure(model, X, 0, 1, explainer(Saliency, abs=False), budget=0.5)
    assert deeplift.change.item() == pytest.approx(7.0)
    # the gradient difference is w_0 - w_1 = [1, 3, -2, 0]: it erases features 1 and 0 too
    assert gradient.change.item() == pytest.approx(7.0)
    # a reference other than zero: erased features become 1; the change is S_diff-weighted (x - 1)
    shifted = log_odds_erasure(model, X, 0, 1, exact_linear, budget=1, reference=1.0)
    assert shifted.change.item() == pytest.approx(3.0)  # feature 1: (w_0 - w_1)_1 * (2 - 1)


def test_log_odds_erasure_takes_precomputed_score_differences() -> None:
    model = linear_model()
    # S_diff = [1, 6, -6, 0] (the hand case above), given instead of an explainer
    s_diff = torch.tensor([[1.0, 6.0, -6.0, 0.0]], dtype=torch.float64)
    given = log_odds_erasure(model, X, 0, 1, s_diff=s_diff, budget=3)
    assert given.change.item() == pytest.approx(7.0) and given.erased.tolist() == [[0.0, 0.0, 3.0, 4.0]]
    reversed_order = log_odds_erasure(model, X, 0, 1, s_diff=-s_diff, budget=1)  # erases feature 2 instead
    assert reversed_order.erased.tolist() == [[1.0, 2.0, 0.0, 4.0]]
    assert reversed_order.change.item() == pytest.approx(-6.0)  # (w_0 - w_1)_2 * 3 = -2 * 3
    with pytest.raises(TypeError, match="either explain or s_diff"):
        log_odds_erasure(model, X, 0, 1, exact_linear, s_diff=s_diff)
    with pytest.raises(TypeError, match="either explain or s_diff"):
        log_odds_erasure(model, X, 0, 1)
    with pytest.raises(ValueError, match="s_diff of shape"):
        log_odds_erasure(model, X, 0, 1, s_diff=s_diff[:, :2])


def test_erasure_input_checks() -> None:
    with pytest.raises(ValueError, match="must differ"):
        log_odds_erasure(linear_model(), X, 1, 1, exact_linear)
    with pytest.raises(ValueError, match="fractional budget"):
        log_odds_erasure(linear_model(), X, 0, 1, exact_linear, budget=1.5)
    with pytest.raises(ValueError, match="budget"):
        erase_by_scores(X, X, 9)
    with pytest.raises(ValueError, match="shape"):
        log_odds_erasure(linear_model(), X, 0, 1, lambda m, x, t: x[:, :2])
    with pytest.raises(ValueError, match="NaN"):
        erase_by_scores(X, torch.full_like(X, float("nan")), 1)


# ---------------------------------------------------------------- deletion and insertion


def test_deletion_and_insertion_curves_on_a_linear_model_by_hand() -> None:
    model = linear_model()
    contributions = exact_linear(model, X, 0)  # [1, 4, -3, 2]; f = 4.3
    morf = deletion_curve(model, X, 0, contributions, order="morf", n_steps=4)
    assert morf.counts.tolist() == [0, 1, 2, 3, 4]
    np.testing.assert_allclose(morf.scores[0], [4.3, 0.3, -1.7, -2.7, 0.3])
    np.testing.assert_allclose(morf.aopc(), [21 / 5])
    lerf = deletion_curve(model, X, 0, contributions, order="lerf", n_steps=4)
    np.testing.assert_allclose(lerf.scores[0], [4.3, 7.3, 6.3, 4.3, 0.3])
    np.testing.assert_allclose(lerf.aopc(), [-0.2])
    insertion = insertion_curve(model, X, 0, contributions, order="morf", n_steps=4)
    np.testing.assert_allclose(insertion.scores[0], [0.3, 4.3, 6.3, 7.3, 4.3])
    np.testing.assert_allclose(insertion.area(), [5.05])
    # small batches give the same curve
    np.testing.assert_allclose(deletion_curve(model, X, 0, contributions, n_steps=4, batch_size=1).scores, morf.scores)


def test_curves_with_a_score_function_and_many_examples_match_a_loop() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3)).double().eval()
    x = torch.randn(4, 6, dtype=torch.float64)
    a = torch.randn(4, 6, dtype=torch.float64)
    curve = deletion_curve(model, x, [0, 1, 2, 0], a, n_steps=3, score=lambda z: z.softmax(1))
    for n in range(4):
        order = torch.argsort(-a[n], stable=True)
        for k, count in enumerate(curve.counts):
            y = x[n].clone()
            y[order[:count]] = 0.0
            expected = model(y[None]).softmax(1)[0, [0, 1, 2, 0][n]].item()
            assert curve.scores[n, k] == pytest.approx(expected)
    with pytest.raises(ValueError, match="morf"):
        deletion_curve(model, x, 0, a, order="random")


def test_aopc_and_area_by_hand() -> None:
    np.testing.assert_allclose(aopc(np.array([[3.0, 1.0, 2.0]])), [(0 + 2 + 1) / 3])
    np.testing.assert_allclose(curve_area(np.array([0.0, 0.5, 1.0]), np.array([[2.0, 0.0, 2.0]])), [1.0])


# ---------------------------------------------------------------- statistics and localisation


def test_rank_and_spearman_match_scipy() -> None:
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 5, 40).astype(float), rng.normal(size=40)
    np.testing.assert_allclose(rank(a), stats.rankdata(a))
    assert spearman(a, b) == pytest.approx(stats.spearmanr(a, b).statistic)
    assert rank(np.array([3.0, 1.0, 3.0])).tolist() == [2.5, 1.0, 2.5]
    assert spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert np.isnan(spearman([1, 1, 1], [1, 2, 3]))


def test_auroc_auprc_mass_inside_by_hand_and_against_scikit_learn() -> None:
    scores, truth = np.array([0.9, 0.8, 0.3, 0.3, 0.1]), np.array([1, 0, 1, 0, 0])
    assert auroc(scores, truth) == pytest.approx(4.5 / 6)  # 3 wins + (loss, tie, win) of 0.3
    assert auprc(scores, truth) == pytest.approx(0.75)  # 0.5 * 1 + 0.5 * 0.5
    assert mass_inside(np.array([1.0, -2.0, 3.0, 0.0]), np.array([1, 1, 0, 0])) == pytest.approx(0.5)
    assert mass_inside(np.array([1.0, -2.0, 3.0, 0.0]), np.array([1, 1, 0, 0]), positive_only=True) == pytest.approx(
        0.25
    )
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(1)
    for _ in range(5):
        s, t = np.round(rng.normal(size=60), 1), rng.integers(0, 2, 60)
        assert auroc(s, t) == pytest.approx(metrics.roc_auc_score(t, s))
        assert auprc(s, t) == pytest.approx(metrics.average_precision_score(t, s))
    result = localisation(torch.tensor([[0.9, 0.8, 0.3, 0.3, 0.1]]), torch.tensor([[1, 0, 1, 0, 0]]))
    assert result.summary()["auroc"] == pytest.approx(0.75)
    assert np.isnan(auroc(scores, np.zeros(5)))
    with pytest.raises(ValueError, match="0/1"):
        auroc(scores, np.array([2, 0, 1, 0, 0]))


def test_bootstrap_mean() -> None:
    values = np.random.default_rng(2).normal(1.0, 2.0, size=400)
    interval = bootstrap_mean(values, random_state=3)
    assert interval.mean == pytest.approx(values.mean())
    half_width = 1.96 * values.std(ddof=1) / np.sqrt(values.size)
    assert interval.high - interval.low == pytest.approx(2 * half_width, rel=0.15)
    assert interval.low < interval.mean < interval.high
    assert bootstrap_mean(values, random_state=3) == interval
    constant = bootstrap_mean(np.full(10, 2.0))
    assert (constant.low, constant.high) == (2.0, 2.0)


# ---------------------------------------------------------------- infidelity and max-sensitivity


def two_feature_model() -> nn.Linear:
    model = nn.Linear(2, 1, bias=False).double()
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, 2.0]]))
    return model.eval()


def test_infidelity_by_hand() -> None:
    model, x = two_feature_model(), torch.tensor([[1.0, 1.0]], dtype=torch.float64)
    perturbation = torch.tensor([[[0.1, 0.2]]], dtype=torch.float64)
    exact = torch.tensor([[1.0, 2.0]], dtype=torch.float64)  # the gradient w: I . w = f(x) - f(x - I) for any I
    assert infidelity(model, x, 0, exact, perturbations=perturbation)[0] == pytest.approx(0.0)
    wrong = torch.tensor([[2.0, 0.0]], dtype=torch.float64)  # I.Phi = 0.2, f(x) - f(x - I) = 0.5
    assert infidelity(model, x, 0, wrong, perturbations=perturbation)[0] == pytest.approx(0.09)
    assert infidelity(model, x, 0, wrong, perturbations=perturbation, normalize=True)[0] == pytest.approx(0.0)
    # seeded Gaussian draws: the gradient of a linear model has zero infidelity for any I
    assert infidelity(model, x, 0, exact, random_state=0)[0] == pytest.approx(0.0, abs=1e-20)
    drawn = infidelity(model, x, 0, wrong, random_state=5)
    assert drawn[0] > 0 and infidelity(model, x, 0, wrong, random_state=5)[0] == drawn[0]


def test_max_sensitivity_by_hand() -> None:
    model, x = two_feature_model(), torch.tensor([[1.0, 1.0]], dtype=torch.float64)
    perturbed = torch.tensor([[[1.1, 0.9]], [[1.2, 1.0]]], dtype=torch.float64)
    # Phi = w * y: the changes are [0.1, -0.2] (norm sqrt(0.05)) and [0.2, 0]; ||Phi(x)|| = sqrt(5)
    value = max_sensitivity(model, x, 0, InputXGradient, perturbed_inputs=perturbed)
    assert value[0] == pytest.approx(np.sqrt(0.05) / np.sqrt(5))
    absolute = max_sensitivity(model, x, 0, InputXGradient, perturbed_inputs=perturbed, relative=False)
    assert absolute[0] == pytest.approx(np.sqrt(0.05))
    assert max_sensitivity(model, x, 0, explainer(Saliency, abs=False), random_state=0)[0] == pytest.approx(0.0)


def test_infidelity_matches_captum() -> None:
    metrics = pytest.importorskip("captum.metrics")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 3)).double().eval()
    x = torch.randn(3, 5, dtype=torch.float64)
    target = torch.tensor([0, 2, 1])
    attributions = explainer(IntegratedGradients, n_steps=16)(model, x, target)

    fixed = 0.1 * torch.randn(3 * 4, 5, dtype=torch.float64)  # rows as Captum orders them: example-major

    def noise(inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return fixed, inputs - fixed

    ours_order = fixed.reshape(3, 4, 5).transpose(0, 1)  # (K, N, ...)
    for normalize in (False, True):
        expected = metrics.infidelity(
            model, noise, x, attributions, target=target, n_perturb_samples=4, normalize=normalize
        )
        ours = infidelity(model, x, target, attributions, perturbations=ours_order, normalize=normalize)
        np.testing.assert_allclose(ours, expected.numpy(), rtol=1e-8)
        assert ours.min() > 1e-8


# ---------------------------------------------------------------- sanity checks


def _by_hand_randomised(module: nn.Linear, seed: int) -> None:
    """The documented draw, written out: weight then bias, each N(0, std^2) of its own std, one seeded generator."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in (module.weight, module.bias):
            std = float(parameter.double().std())
            parameter.copy_(torch.randn(parameter.shape, generator=generator, dtype=torch.float64) * std)


def _gradient_times_input(model: nn.Module, x: torch.Tensor, target: int) -> np.ndarray:
    x = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(model(x)[:, target].sum(), x)
    return (grad * x).detach().numpy()


def test_model_randomisation_matches_an_independent_computation() -> None:
    stats = pytest.importorskip("scipy.stats")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3)).eval()
    before = copy.deepcopy(model.state_dict())
    x, target = torch.randn(4, 6), 1
    assert parameter_layers(model) == ["0", "2"]
    cascading = model_randomisation(model, x, target, InputXGradient, mode="cascading", seed=7)
    independent = model_randomisation(model, x, target, InputXGradient, mode="independent", seed=7)
    assert cascading.layers == ["2", "0"] and independent.layers == ["2", "0"]
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    original = _gradient_times_input(model, x, target)
    top = copy.deepcopy(model)
    _by_hand_randomised(top[2], 7)
    both = copy.deepcopy(top)
    _by_hand_randomised(both[0], 8)
    bottom_only = copy.deepcopy(model)
    _by_hand_randomised(bottom_only[0], 8)

    def rho(after: np.ndarray, absolute: bool = False) -> list[float]:
        f = np.abs if absolute else np.asarray
        return [stats.spearmanr(f(o), f(a)).statistic for o, a in zip(original, after)]

    for k, randomised in enumerate([top, both]):
        after = _gradient_times_input(randomised, x, target)
        assert not np.allclose(after, original)
        np.testing.assert_allclose(cascading.spearman[k], rho(after), atol=1e-12)
        np.testing.assert_allclose(cascading.spearman_abs[k], rho(after, absolute=True), atol=1e-12)
    for k, randomised in enumerate([top, bottom_only]):
        np.testing.assert_allclose(
            independent.spearman[k], rho(_gradient_times_input(randomised, x, target)), atol=1e-12
        )
    assert set(cascading.mean()) == {"2", "0"}
    with pytest.raises(ValueError, match="no module"):
        model_randomisation(model, x, target, InputXGradient, layers=["5"])
    with pytest.raises(ValueError, match="cascading"):
        model_randomisation(model, x, target, InputXGradient, mode="top-down")


def test_randomise_layer_draws_only_the_layers_own_parameters_at_random() -> None:
    torch.manual_seed(0)
    dense = nn.Linear(200, 100)
    weight_std = float(dense.weight.detach().std())
    old = dense.weight.detach().clone()
    same_seed = copy.deepcopy(dense)
    randomise_layer(dense, 3)
    assert not torch.equal(dense.weight, old)
    assert float(dense.weight.detach().std()) == pytest.approx(weight_std, rel=0.05)  # each parameter's own scale
    assert abs(float(torch.corrcoef(torch.stack([old.flatten(), dense.weight.detach().flatten()]))[0, 1])) < 0.05
    randomise_layer(same_seed, 3)
    assert torch.equal(same_seed.weight, dense.weight) and torch.equal(same_seed.bias, dense.bias)  # seeded
    # norm layers: reset_parameters() would give weights of one and biases of zero; the draw does not
    for norm in (nn.LayerNorm(400), nn.BatchNorm1d(400)):
        randomise_layer(norm, 1)
        assert not torch.all(norm.weight == 1.0) and not torch.all(norm.bias == 0.0)
        assert float(norm.weight.detach().std()) == pytest.approx(1.0, rel=0.15)  # constant: the init scale, 1
    # a module with children: only its own parameters change (independent randomisation stays one layer)
    attention = nn.MultiheadAttention(8, 2)
    out_proj = {k: v.detach().clone() for k, v in attention.out_proj.state_dict().items()}
    in_proj = attention.in_proj_weight.detach().clone()
    randomise_layer(attention, 0)
    assert not torch.equal(attention.in_proj_weight, in_proj)
    assert all(torch.equal(out_proj[k], v) for k, v in attention.out_proj.state_dict().items())
    assert parameter_layers(nn.Sequential(attention)) == ["0", "0.out_proj"]


# ---------------------------------------------------------------- axioms


class Saturating(nn.Module):
    """f(x) = 1 - relu(1 - x_0) + 0 * x_1: saturates above x_0 = 1; x_1 is a dummy."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (1.0 - torch.relu(1.0 - x[:, :1]) + 0.0 * x[:, 1:2]).repeat(1, 2) * torch.tensor([1.0, -1.0])


def results(checks: list) -> dict[str, tuple[bool, float]]:
    return {c.name: (c.passed, c.value) for c in checks}


def test_axiom_report_on_a_linear_model() -> None:
    model = linear_model()
    twin = nn.Sequential(nn.Linear(4, 3, bias=False), nn.Linear(3, 2)).double().eval()
    with torch.no_grad():  # W = A @ B with B = [W; 0] padded, A = [I | 0]: the same function
        twin[0].weight.copy_(torch.cat([W, torch.zeros(1, 4, dtype=torch.float64)]))
        twin[1].weight.copy_(torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], dtype=torch.float64))
        twin[1].bias.copy_(B)
    x = torch.tensor([[1.0, 2.0, 0.0, 4.0], [-1.0, 0.5, 3.0, 0.0]], dtype=torch.float64)
    deeplift = results(axiom_report(model, x, 0, explainer(DeepLift, baselines=0.0), twin=twin))
    assert all(passed for passed, _ in deeplift.values()), deeplift
    gradient = results(axiom_report(model, x, 0, explainer(Saliency, abs=False), twin=twin))
    # the gradient is w_0 = [1, 2, -1, 0.5]: sum 2.5 over the output changes 1*1 + 2*2 + 0.5*4 = 7 and ...
    assert not gradient["completeness"][0]
    assert gradient["completeness"][1] == pytest.approx(
        max(abs(2.5 - 7) / 7, abs(2.5 - 0) / 0.0 if False else abs(2.5 - (-1 + 1 - 3)) / 3)
    )
    # ... features at the reference (x_2 = 0 in the first example, x_3 = 0 in the second) get w_0,i
    assert not gradient["dummy"][0] and gradient["dummy"][1] == pytest.approx(1.0 / 2.0)
    assert gradient["linearity"][0] and gradient["implementation invariance"][0]
    no_twin = results(axiom_report(model, x, 0, InputXGradient))["implementation invariance"]
    assert not no_twin[0] and np.isnan(no_twin[1])  # no twin: not run


def test_axiom_report_sensitivity_a_on_a_saturating_unit() -> None:
    x = torch.tensor([[3.0, 2.0]])
    gradient = results(axiom_report(Saturating(), x, 0, explainer(Saliency, abs=False), n_features=2))
    # f(3, 0) - f(0, 0) = 1 but the gradient at x_0 = 3 is zero: one of one relevant case violated
    assert gradient["sensitivity (a)"] == (False, 1.0)
    deeplift = results(axiom_report(Saturating(), x, 0, explainer(DeepLift, baselines=0.0), n_features=2))
    assert deeplift["sensitivity (a)"] == (True, 0.0)
    assert deeplift["completeness"][0] and deeplift["sensitivity (b)"][0]
    with pytest.raises(TypeError, match="one number"):
        axiom_report(Saturating(), x, 0, exact_linear, baseline=torch.zeros(2))  # type: ignore[arg-type]


def test_axiom_report_gives_the_models_their_modes_back() -> None:
    model = nn.Sequential(linear_model(), nn.Dropout(0.5))
    twin = nn.Sequential(linear_model(), nn.Dropout(0.5))
    model.train()
    model[1].eval()  # a mixed-mode model: each module keeps its own mode
    twin.train()
    x = torch.tensor([[1.0, 2.0, 0.0, 4.0]], dtype=torch.float64)
    checks = results(axiom_report(model, x, 0, explainer(DeepLift, baselines=0.0), twin=twin))
    assert checks["completeness"][0]  # measured in eval mode (dropout off)
    assert model.training and model[0].training and not model[1].training
    assert twin.training and twin[0].training and twin[1].training
    with pytest.raises(ValueError):  # restored when a check raises, too
        axiom_report(model, x, [0, 1], exact_linear)
    assert model.training and not model[1].training


# ---------------------------------------------------------------- explainers and Quantus


def test_explainer_adapter_and_quantus_explain_func() -> None:
    model = linear_model()
    direct = DeepLift(model).attribute(X, baselines=0.0, target=1)
    np.testing.assert_allclose(explainer(DeepLift, baselines=0.0)(model, X, 1), direct)
    out = quantus_explain_func(model, X.numpy(), np.array([1]), method=DeepLift, attribute_kwargs={"baselines": 0.0})
    assert isinstance(out, np.ndarray) and out.dtype == np.float64
    np.testing.assert_allclose(out, direct.numpy())
    np.testing.assert_allclose(quantus_explain_func(model, X.numpy(), 1, method=exact_linear, device="cpu"), direct)
    with pytest.raises(TypeError, match="unknown options"):
        quantus_explain_func(model, X.numpy(), 1, method=DeepLift, baselines=0.0)
    with pytest.raises(ValueError, match="method="):
        quantus_explain_func(model, X.numpy(), 1)
    with pytest.raises(ValueError, match="entries"):
        explainer(DeepLift)(model, X, [0, 1])


class MinNet(nn.Module):
    """min(x_0, x_1) = x_0 - relu(x_0 - x_1) (Shrikumar et al. 2017, section 3.5.3), the difference a dense
    layer (RevealCancel splits a dense layer's positive and negative terms)."""

    def __init__(self) -> None:
        super().__init__()
        self.difference = nn.Linear(2, 1, bias=False).double()
        with torch.no_grad():
            self.difference.weight.copy_(torch.tensor([[1.0, -1.0]]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :1] - torch.relu(self.difference(x))


# at x = (3, 1), reference 0: Rescale gives x_0 0 and x_1 1 (the relu's multiplier is 2/2 = 1);
# RevealCancel splits relu(x_0 - x_1) into dy+ = (relu(3) - relu(0) + relu(2) - relu(-1)) / 2 = 2.5
# from x_0 and dy- = (relu(-1) - relu(0) + relu(2) - relu(3)) / 2 = -0.5 from x_1 (eq. 3.5.3), so
# x_0 gets 3 - 2.5 = 0.5 and x_1 gets 0 + 0.5 = 0.5
MIN_X = torch.tensor([[3.0, 1.0]], dtype=torch.float64)
MIN_RESCALE = np.array([[0.0, 1.0]])
MIN_REVEAL_CANCEL = np.array([[0.5, 0.5]])


def test_reveal_cancel_through_the_explainer_forms_differs_from_rescale() -> None:
    model = MinNet().eval()
    rescale = explainer(DeepLift, baselines=0.0)(model, MIN_X, 0)
    reveal = explainer(partial(DeepLift, rule="reveal_cancel"), baselines=0.0)(model, MIN_X, 0)
    np.testing.assert_allclose(rescale, MIN_RESCALE, atol=1e-12)
    np.testing.assert_allclose(reveal, MIN_REVEAL_CANCEL, atol=1e-12)
    # a partial of a class given to Quantus' explain_func, without attribute_kwargs (the review's case)
    out = quantus_explain_func(model, MIN_X.numpy(), np.array([0]), method=partial(DeepLift, rule="reveal_cancel"))
    np.testing.assert_allclose(out, MIN_REVEAL_CANCEL, atol=1e-12)
    np.testing.assert_allclose(quantus_explain_func(model, MIN_X.numpy(), 0, method=DeepLift), MIN_RESCALE, atol=1e-12)


def test_as_explainer_tells_factories_from_explainers() -> None:
    model = linear_model()
    # a one-argument factory (the review's lambda m: NoiseTunnel(Saliency(m))): factory(model).attribute(...)
    explain = as_explainer(lambda m: NoiseTunnel(Saliency(m)))
    assert isinstance(explain, MethodExplainer)
    np.testing.assert_allclose(explain(model, X, 1), W[1:].abs().numpy())  # a linear model: |w_1| on every copy
    np.testing.assert_allclose(
        quantus_explain_func(model, X.numpy(), 1, method=lambda m: NoiseTunnel(Saliency(m))), W[1:].abs().numpy()
    )

    def factory(model: nn.Module, rule: str = "rescale") -> DeepLift:
        return DeepLift(model, rule=rule)

    assert isinstance(as_explainer(factory), MethodExplainer)
    # a class and a partial of one
    assert isinstance(as_explainer(DeepLift), MethodExplainer)
    assert isinstance(as_explainer(partial(DeepLift, rule="reveal_cancel")), MethodExplainer)
    # a three-argument callable is an explainer, returned as it is
    assert as_explainer(exact_linear) is exact_linear

    def with_default(model: nn.Module, inputs: torch.Tensor, target: object, scale: float = 1.0) -> torch.Tensor:
        return exact_linear(model, inputs, target) * scale

    assert as_explainer(with_default) is with_default
    np.testing.assert_allclose(
        quantus_explain_func(model, X.numpy(), 1, method=with_default), exact_linear(model, X, 1)
    )
    # anything else: a clear TypeError
    for wrong in (lambda m, x: x, lambda: None, lambda m, x, y, z: x, 3, nn.Linear):
        with pytest.raises(TypeError):
            as_explainer(wrong)
    with pytest.raises(TypeError, match="neither a method factory"):
        as_explainer(lambda m, x: x)


class TinyCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 3, padding=1)
        self.dense = nn.Linear(3 * 6 * 6, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dense(torch.relu(self.conv(x)).flatten(1))


def test_quantus_localisation_metrics_agree() -> None:
    quantus = pytest.importorskip("quantus")
    torch.manual_seed(0)
    model = TinyCNN().eval()
    x = torch.rand(4, 1, 6, 6).numpy()
    y = np.array([0, 1, 0, 1])
    s = np.zeros_like(x)
    s[:, :, 1:4, 2:5] = 1.0
    kwargs = {"method": DeepLift, "attribute_kwargs": {"baselines": 0.0}}
    a = quantus_explain_func(model, x, y, **kwargs)
    ours = localisation(a, s)
    auc = quantus.AUC(abs=False, normalise=False, disable_warnings=True)(
        model=model,
        x_batch=x,
        y_batch=y,
        a_batch=None,
        s_batch=s,
        explain_func=quantus_explain_func,
        explain_func_kwargs=kwargs,
        device="cpu",
    )
    np.testing.assert_allclose(auc, ours.auroc, rtol=1e-6)
    mass = quantus.RelevanceMassAccuracy(abs=True, normalise=False, disable_warnings=True)(
        model=model,
        x_batch=x,
        y_batch=y,
        a_batch=a,
        s_batch=s,
        device="cpu",
    )
    np.testing.assert_allclose(mass, ours.mass_inside, rtol=1e-5)


def test_the_evaluation_page_runs_as_written() -> None:
    import re
    from pathlib import Path

    page = (Path(__file__).resolve().parents[1] / "docs" / "evaluation.md").read_text()
    blocks = re.findall(r"^```python\n(.*?)^```[ \t]*$", page, re.DOTALL | re.MULTILINE)
    assert len(blocks) >= 5
    namespace: dict[str, object] = {}
    for block in blocks:
        exec(compile(block, "docs/evaluation.md", "exec"), namespace)
