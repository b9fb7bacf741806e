"""SENN (Alvarez-Melis & Jaakkola, NeurIPS 2018): the aggregator, the robustness loss against
finite differences, training on the digits, prototypes, figures, the command, and models with
functional code and reused modules."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from deltalift.methods import DeepLift
from deltalift.senn import (
    SENN,
    AdditiveAggregator,
    AutoencoderConceptizer,
    IdentityConceptizer,
    MLPParametrizer,
    build_digits_senn,
    concept_prototypes,
    explanations_figure,
    prototypes_figure,
    robustness_loss,
    senn_accuracy,
    senn_loss,
    train_senn,
)


def _small_senn(seed: int = 0, identity: bool = False) -> SENN:
    torch.manual_seed(seed)
    shape = (1, 3, 3)
    h: nn.Module = IdentityConceptizer(shape) if identity else AutoencoderConceptizer(shape, 3, hidden=5)
    k = 9 if identity else 3
    return SENN(h, MLPParametrizer(shape, k, 4, hidden=(6,))).double().eval()


def _finite_difference_jacobian(fn, x: torch.Tensor, step: float = 1e-6) -> torch.Tensor:  # type: ignore[no-untyped-def]
    """``d fn(x)[n] / d x[n]``, (N, outputs, D), by central differences."""
    flat = x.flatten(1)
    columns = []
    for d in range(flat.shape[1]):
        e = torch.zeros_like(flat)
        e[:, d] = step
        plus, minus = fn((flat + e).reshape(x.shape)), fn((flat - e).reshape(x.shape))
        columns.append((plus - minus) / (2 * step))
    return torch.stack(columns, 2)


def _finite_difference_robustness(model: SENN, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        jf = _finite_difference_jacobian(model, x)
        jh = _finite_difference_jacobian(model.conceptizer, x)
        theta = model.parametrizer(x)  # (N, k, C)
    return (jf - theta.transpose(1, 2) @ jh).flatten(1).norm(dim=1)


def test_the_additive_aggregator_by_hand() -> None:
    theta = torch.tensor([[[1.0, 2.0], [3.0, -1.0]]])  # (1, k=2, C=2)
    h = torch.tensor([[0.5, 2.0]])
    torch.testing.assert_close(AdditiveAggregator()(theta, h), torch.tensor([[0.5 + 6.0, 1.0 - 2.0]]))
    with pytest.raises(ValueError, match=r"\(N, k, C\)"):
        AdditiveAggregator()(theta, torch.ones(1, 3))


@pytest.mark.parametrize("identity", [False, True])
def test_robustness_loss_equals_a_finite_difference_computation(identity: bool) -> None:
    model = _small_senn(identity=identity)
    x = torch.rand(5, 1, 3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    got = robustness_loss(model, x, create_graph=False, reduction="none")
    expected = _finite_difference_robustness(model, x)
    assert float(expected.min()) > 1e-3  # theta varies, so the loss is not trivially zero
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-8)
    torch.testing.assert_close(robustness_loss(model, x, create_graph=False), expected.mean(), rtol=1e-6, atol=1e-8)


def test_robustness_loss_vanishes_for_constant_relevances_and_trains_theta() -> None:
    model = _small_senn()
    last = model.parametrizer.net[-1]
    with torch.no_grad():
        last.weight.zero_()  # theta(x) = bias: constant, so f is linear in h with coefficients theta
    x = torch.rand(4, 1, 3, 3, dtype=torch.float64)
    assert float(robustness_loss(model, x, create_graph=False)) < 1e-12
    model = _small_senn(seed=2)
    loss = robustness_loss(model, x)
    loss.backward()
    grads = [p.grad for p in model.parametrizer.parameters()]
    assert all(g is not None for g in grads) and any(float(g.abs().sum()) > 0 for g in grads if g is not None)


def test_senn_loss_terms() -> None:
    model = _small_senn()
    x = torch.rand(6, 1, 3, 3, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 3, 0, 1])
    loss = senn_loss(model, x, y, robustness_weight=0.5, reconstruction_weight=2.0, sparsity_weight=0.1)
    e = model.explain(x)
    torch.testing.assert_close(loss.classification, F.cross_entropy(e.logits, y))
    torch.testing.assert_close(loss.reconstruction, ((model.conceptizer.decode(e.concepts) - x) ** 2).mean())
    torch.testing.assert_close(loss.sparsity, e.concepts.abs().mean())
    expected = loss.classification + 0.5 * loss.robustness + 2.0 * loss.reconstruction + 0.1 * loss.sparsity
    torch.testing.assert_close(loss.total, expected)
    assert float(senn_loss(model, x, y, robustness_weight=0.0).robustness) == 0.0
    with pytest.raises(ValueError, match="robustness weight"):
        senn_loss(model, x, y, robustness_weight=-1.0)
    with pytest.raises(TypeError, match="floating"):
        robustness_loss(model, torch.ones(2, 1, 3, 3, dtype=torch.long))


def test_for_class_picks_the_relevances_of_each_examples_class() -> None:
    model = _small_senn()
    x = torch.rand(3, 1, 3, 3, dtype=torch.float64)
    e = model.explain(x)
    classes = torch.tensor([2, 0, 3])
    torch.testing.assert_close(
        e.for_class(classes), torch.stack([e.relevances[i, :, c] for i, c in enumerate(classes)])
    )


def test_a_digits_senn_reaches_90_percent_test_accuracy() -> None:
    pytest.importorskip("sklearn")
    from deltalift.demo import load_digits_data

    data = load_digits_data(0)
    model = build_digits_senn(conceptizer="identity", seed=0)
    history = train_senn(
        model, data.train_images, data.train_labels, epochs=3, batch_size=128, learning_rate=5e-3, show_progress=False
    )
    assert senn_accuracy(model, data.test_images, data.test_labels) >= 0.90
    assert history.classification[-1] < history.classification[0]
    assert len(history.robustness) == 3 and history.robustness[-1] > 0


def test_prototypes_are_the_inputs_with_the_largest_concepts() -> None:
    class Known(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.stack([x[:, 0], -x[:, 0]], 1)

    model = SENN(Known(), nn.Linear(2, 2))
    inputs = torch.tensor([[3.0, 0.0], [-1.0, 0.0], [5.0, 0.0], [0.0, 0.0]])
    assert concept_prototypes(model, inputs, k=2).tolist() == [[2, 0], [1, 3]]
    with pytest.raises(ValueError, match="prototypes among"):
        concept_prototypes(model, inputs, k=5)


def test_figures_are_written(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    model = build_digits_senn(n_concepts=3, seed=0).eval()
    images = torch.rand(8, 1, 8, 8)
    labels = torch.arange(8)
    explanations_figure(model, images[:3], labels[:3], tmp_path / "e.png")
    prototypes_figure(images, concept_prototypes(model, images, k=2), tmp_path / "p.png")
    explanations_figure(build_digits_senn(conceptizer="identity").eval(), images[:2], labels[:2], tmp_path / "i.png")
    assert all((tmp_path / name).stat().st_size > 1000 for name in ("e.png", "p.png", "i.png"))


def test_senn_train_command(tmp_path: Path) -> None:
    pytest.importorskip("sklearn")
    pytest.importorskip("matplotlib")
    from deltalift.cli import main
    from deltalift.senn.job import load_digits_senn

    out = tmp_path / "senn"
    assert (
        main(
            ["senn", "train", "--epochs", "1", "--concepts", "4", "--examples", "2", "--no-progress", "--out", str(out)]
        )
        == 0
    )
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_concepts"] == 4 and 0.1 < metrics["test_accuracy"] <= 1.0
    assert (out / "prototypes.png").exists() and (out / "explanations.png").exists()
    model = load_digits_senn(out / "senn_digits.pt")
    from deltalift.demo import load_digits_data

    data = load_digits_data(0)
    assert senn_accuracy(model, data.test_images, data.test_labels) == pytest.approx(metrics["test_accuracy"])
    with pytest.raises(SystemExit):
        main(["senn", "train", "--epochs", "0"])


# ------------------------------------------------------------------------------------------------
# functional code and reused modules


class FunctionalParametrizer(nn.Module):
    """theta with functional ReLUs and one Linear applied twice."""

    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(9, 6)
        self.shared = nn.Linear(6, 6)
        self.out = nn.Linear(6, 3 * 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = F.relu(self.inp(x.flatten(1)))
        z = F.relu(self.shared(z))
        z = F.relu(self.shared(z))
        return self.out(z).reshape(-1, 3, 4)


class FunctionalConceptizer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.act = nn.Softplus()
        self.lin = nn.Linear(9, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.act(self.lin(x.flatten(1))))  # one module called twice


def test_functional_models_and_reused_modules() -> None:
    torch.manual_seed(0)
    model = SENN(FunctionalConceptizer(), FunctionalParametrizer()).double().eval()
    x = torch.rand(4, 1, 3, 3, dtype=torch.float64)
    got = robustness_loss(model, x, create_graph=False, reduction="none")
    torch.testing.assert_close(got, _finite_difference_robustness(model, x), rtol=1e-6, atol=1e-8)
    # post-hoc DeepLIFT on the same SENN, through the reused modules: summation-to-delta holds
    attributions, delta = DeepLift(model).attribute(x, baselines=0.0, target=1, return_convergence_delta=True)
    with torch.no_grad():
        change = model(x)[:, 1] - model(torch.zeros_like(x))[:, 1]
    torch.testing.assert_close(attributions.flatten(1).sum(1), change, rtol=1e-9, atol=1e-9)
    assert float(delta.abs().max()) < 1e-9


def test_train_senn_runs_the_demos_training_loop_with_senns_loss(monkeypatch: pytest.MonkeyPatch) -> None:
    """train_senn is deltalift.demo.train_classifier with loss_fn = SENN's objective: the same
    Adam steps on the same shuffles as that loop given the loss by hand, and its history holds
    the epoch means of the loss terms."""
    import deltalift.demo as demo
    import deltalift.senn.train as senn_train
    from deltalift.senn import senn_loss

    torch.manual_seed(0)
    images, labels = torch.rand(40, 1, 8, 8), torch.randint(0, 10, (40,))
    calls: list[object] = []

    def spy(*args: object, **kwargs: object) -> float:
        calls.append(kwargs.get("loss_fn"))
        return demo.train_classifier(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(senn_train, "train_classifier", spy)
    model = build_digits_senn(3, "autoencoder", seed=1)
    history = senn_train.train_senn(model, images, labels, epochs=2, seed=3, batch_size=16, show_progress=False)
    assert len(calls) == 1 and calls[0] is not None and not model.training
    assert len(history.total) == 2 and history.total[1] < history.total[0] + 1.0
    totals: list[float] = []

    def by_hand(m: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        loss = senn_loss(m, x, y, 0.1, 1.0, 1e-4)  # type: ignore[arg-type]
        totals.append(loss.total.item())
        return loss.total

    reference = build_digits_senn(3, "autoencoder", seed=1)
    demo.train_classifier(reference, images, labels, 2, 3, 16, 3e-3, False, loss_fn=by_hand)
    for a, b in zip(model.state_dict().values(), reference.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert history.total == pytest.approx([sum(totals[:3]) / 3, sum(totals[3:]) / 3])
    assert senn_accuracy(model, images, labels) == demo.accuracy(model, images, labels)
