"""``sanity`` and ``axioms``: the evaluation toolkit's reports on the digits model.

- ``sanity``: Adebayo et al. (2018)'s cascading and independent model-parameter randomisation
  (:func:`deltalift.evaluate.model_randomisation`), Spearman rank correlation (of absolute
  values) of each method's maps before and after;
- ``axioms``: :func:`deltalift.evaluate.axiom_report` for each method, with a functionally equal
  twin (:func:`duplicate_hidden_units`) for implementation invariance.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from deltalift.evaluate import axiom_report, model_randomisation
from deltalift.experiments.digits import PaperCNN, train_digits_model_with_accuracy
from deltalift.experiments.lineup import check_methods
from deltalift.experiments.options import mnist_folder
from deltalift.experiments.plots import new_figure
from deltalift.experiments.registry import Experiment, register
from deltalift.experiments.report import ExperimentRun

Tensor = torch.Tensor

__all__ = ["check_methods", "duplicate_hidden_units"]


def duplicate_hidden_units(model: PaperCNN) -> PaperCNN:
    """A :class:`PaperCNN` computing the same function with every dense unit duplicated and the
    output weights halved: ``sum_j w_j relu(z_j) = sum_j (w_j/2) relu(z_j) + (w_j/2) relu(z_j)``."""
    hidden = model.dense.out_features
    twin = PaperCNN.__new__(PaperCNN)
    nn.Module.__init__(twin)
    twin.conv1, twin.relu1, twin.conv2, twin.relu2, twin.flatten = (
        model.conv1,
        model.relu1,
        model.conv2,
        model.relu2,
        model.flatten,
    )
    twin.dense = nn.Linear(model.dense.in_features, 2 * hidden)
    twin.relu3 = nn.ReLU()
    twin.output = nn.Linear(2 * hidden, model.output.out_features)
    with torch.no_grad():
        twin.dense.weight.copy_(torch.cat([model.dense.weight, model.dense.weight]))
        twin.dense.bias.copy_(torch.cat([model.dense.bias, model.dense.bias]))
        twin.output.weight.copy_(torch.cat([model.output.weight, model.output.weight], 1) / 2)
        twin.output.bias.copy_(model.output.bias)
    return twin.eval()


def _examples(experiment: ExperimentRun, n_full: int, n_quick: int) -> tuple[PaperCNN, Tensor, Tensor, float]:
    trained = train_digits_model_with_accuracy(
        experiment.seed, experiment.quick, experiment.show_progress, mnist_folder()
    )
    images = trained.data.test_images[: n_quick if experiment.quick else n_full]
    with torch.no_grad():
        predicted = trained.model(images).argmax(1)
    experiment.record("model/test_accuracy", trained.test_accuracy)
    return trained.model, images, predicted, trained.test_accuracy


def run_sanity(experiment: ExperimentRun) -> None:
    """Cascading and independent randomisation for every method."""
    model, images, predicted, acc = _examples(experiment, 64, 8)
    experiment.text(
        f"Digits model (test accuracy {acc:.1%}); {len(images)} test digits, target the predicted class. "
        "Each layer's own parameters are re-drawn from a normal distribution with their standard deviation "
        "(deltalift.evaluate.randomise_layer), from the output down; "
        "the numbers are Spearman rank correlations of |attributions| before and after (1: unchanged; a "
        "method that explains the model should fall towards 0)."
    )
    results = {}
    for name, explain in experiment.progress(check_methods(experiment.quick, experiment.seed), desc="methods"):
        for mode in ("cascading", "independent"):
            try:
                result = model_randomisation(model, images, predicted, explain, mode=mode, seed=experiment.seed)
            except RuntimeError as error:  # reported, not hidden
                experiment.record(f"{mode}/{name}/error", str(error).splitlines()[0])
                experiment.text(f"**{name}** ({mode}) raised an error: `{str(error).splitlines()[0]}`")
                continue
            results[(name, mode)] = result
            for layer, (signed, absolute) in result.mean().items():
                experiment.record(f"{mode}/{name}/{layer}/spearman", signed)
                experiment.record(f"{mode}/{name}/{layer}/spearman_abs", absolute)
    for mode in ("cascading", "independent"):
        names = [n for n, m in results if m == mode]
        layers = results[(names[0], mode)].layers
        rows = [
            [n, *[float(np.nanmean(results[(n, mode)].spearman_abs[k])) for k in range(len(layers))]] for n in names
        ]
        label = "+ everything above" if mode == "cascading" else "alone"
        experiment.table(
            ["method", *[f"{layer} {label}" for layer in layers]],
            rows,
            caption=f"{mode} randomisation: mean Spearman of |attributions|",
        )
        figure, axes = new_figure(6.5, 4.0)
        ax = axes[0, 0]
        for n in names:
            ax.plot(range(len(layers)), np.nanmean(results[(n, mode)].spearman_abs, axis=1), marker="o", label=n)
        ax.set_xticks(range(len(layers)), layers)
        ax.set_xlabel("randomised layer" + (" (cumulative, from the output)" if mode == "cascading" else ""))
        ax.set_ylabel("Spearman of |attributions|")
        ax.set_ylim(-0.2, 1.05)
        ax.legend(fontsize=6)
        ax.set_title(f"{mode} randomisation")
        figure.tight_layout()
        experiment.figure(f"randomisation_{mode}", figure, caption=f"{mode} model-parameter randomisation")


def run_axioms(experiment: ExperimentRun) -> None:
    """The axiom report for every method."""
    model, images, predicted, acc = _examples(experiment, 32, 4)
    twin = duplicate_hidden_units(model)
    with torch.no_grad():
        gap = float((twin(images) - model(images)).abs().max())
    experiment.text(
        f"Digits model (test accuracy {acc:.1%}); {len(images)} test digits, target the predicted class, zero "
        f"reference. The twin duplicates every dense unit and halves its output weights (largest output "
        f"difference {gap:.1e}). Each cell: the measured value (0 is perfect) and pass (value <= 1e-3) or fail."
    )
    rows = []
    names: list[str] = []
    failures: list[tuple[str, str]] = []
    for name, explain in experiment.progress(check_methods(experiment.quick, experiment.seed), desc="methods"):
        try:
            checks = axiom_report(model, images, predicted, explain, baseline=0.0, twin=twin, seed=experiment.seed)
        except RuntimeError as error:  # a method that fails on one of the report's models is reported, not hidden
            failures.append((name, str(error).splitlines()[0]))
            experiment.record(f"methods/{name}/error", str(error).splitlines()[0])
            continue
        names = [c.name for c in checks]
        rows.append([name, *[f"{'pass' if c.passed else 'FAIL'} ({c.value:.2g})" for c in checks]])
        for c in checks:
            experiment.record(f"methods/{name}/{c.name}", {"passed": c.passed, "value": c.value, "detail": c.detail})
    experiment.table(["method", *names], rows, caption="Axiom report on the digits model")
    for name, message in failures:
        experiment.text(f"**{name}** raised an error on one of the report's models and has no row: `{message}`")


register(
    Experiment(
        "sanity",
        "Adebayo et al.'s model-parameter randomisation (cascading, independent) on the digits model",
        run_sanity,
    )
)
register(
    Experiment(
        "axioms",
        "the axiom report (completeness, sensitivity, invariance, linearity, symmetry) on the digits model",
        run_axioms,
    )
)
