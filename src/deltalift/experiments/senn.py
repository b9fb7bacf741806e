"""``deltalift experiment run senn``: self-explaining networks (Alvarez-Melis & Jaakkola,
NeurIPS 2018) on scikit-learn's 8x8 digits: accuracy, concept prototypes, explanations, and the
stability of SENN's explanations against post-hoc ones on the same trained models (section 5).

Two SENNs are trained with the robustness loss (weight 0.1): concepts from an autoencoder
(``k = 5``) and the 64 pixels as concepts.  For each, the local Lipschitz estimate (SENN, eq. 5)
``max_{x' in B_eps(x)} ||e(x) - e(x')|| / ||h(x) - h(x')||`` (L2 ball, ``eps = 0.5`` on pixels in
``[0, 1]``) of SENN's relevances (``h`` the conceptizer) and of DeepLIFT, Integrated Gradients,
SmoothGrad, gradient x input and occlusion maps of the predicted class (``h`` the identity:
``||x - x'||``) is estimated on test digits.  The full run also
trains the autoencoder SENN with the weights 0, 0.01, 0.1 and 1, for the paper's trade-off
between accuracy and stability.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from deltalift.demo import load_digits_data, pick_examples
from deltalift.experiments.plots import new_figure
from deltalift.experiments.registry import Experiment, register
from deltalift.experiments.report import ExperimentRun
from deltalift.senn import (
    METHODS,
    build_digits_senn,
    concept_prototypes,
    explanations_figure,
    local_lipschitz,
    prototypes_figure,
    senn_accuracy,
    stability_comparison,
    train_senn,
)
from deltalift.senn.comparison import StabilityResult, explanation_functions

Tensor = torch.Tensor

__all__ = ["run", "stability_figure"]

EPS = 0.5
#: the explanations compared (all of :data:`deltalift.senn.METHODS`)
STABILITY_METHODS = METHODS
#: the row of SENN's relevances with the input-space denominator ||x - x'||
SENN_INPUT = "SENN (input space)"
#: the robustness loss's weight for the two compared SENNs
ROBUSTNESS = 0.1
#: (epochs, stability examples, points per round, local rounds) for the quick and the full run
SETTINGS = {True: (2, 8, 6, 1), False: (20, 40, 16, 2)}


def stability_figure(estimates: dict[str, dict[str, Tensor]]) -> Any:
    """Box plots of the local Lipschitz estimates per method (log scale), one panel per model."""
    figure, axes = new_figure(5.0 * len(estimates), 3.6, ncols=len(estimates))
    for ax, (model_name, per_method) in zip(axes[0], estimates.items()):
        names = list(per_method)
        ax.boxplot([per_method[n].clamp_min(1e-6).numpy() for n in names])
        ax.set_xticks(np.arange(1, len(names) + 1), [n.replace("Integrated", "Int.") for n in names], rotation=30)
        ax.set_yscale("log")
        ax.set_ylabel("local Lipschitz estimate")
        ax.set_title(f"SENN, {model_name} concepts")
    figure.suptitle(f"Stability of explanations of the same SENN (L2 ball, eps = {EPS}); lower is more stable")
    figure.tight_layout()
    return figure


def run(experiment: ExperimentRun) -> None:
    """The experiment (see the module's docstring)."""
    quick, seed = experiment.quick, experiment.seed
    data = load_digits_data(seed)
    epochs, n_stability, n_samples, n_rounds = SETTINGS[quick]
    experiment.text(
        f"Training: {len(data.train_images)} digits, {epochs} epochs, Adam (lr 3e-3), batches of 64, robustness "
        f"weight {ROBUSTNESS}, reconstruction weight 1, sparsity 1e-4; {len(data.test_images)} test digits. Stability: "
        f"{n_stability} test digits, {n_samples} random points per round in the ball and {n_rounds} local "
        "rounds (a lower bound of the maximum)."
    )
    estimates: dict[str, dict[str, Tensor]] = {}
    rows = []
    stability_inputs = data.test_images[:n_stability]
    for conceptizer, k in experiment.progress([("autoencoder", 5), ("identity", 64)], desc="SENN models"):
        model = build_digits_senn(k, conceptizer, seed)
        history = train_senn(
            model,
            data.train_images,
            data.train_labels,
            epochs,
            seed,
            robustness_weight=ROBUSTNESS,
            show_progress=experiment.show_progress,
        )
        accuracy = senn_accuracy(model, data.test_images, data.test_labels)
        experiment.record(f"{conceptizer}/test_accuracy", accuracy)
        experiment.record(f"{conceptizer}/robustness_loss", history.robustness[-1])
        rows.append([conceptizer, model.conceptizer.n_concepts, accuracy, history.robustness[-1]])
        chosen = pick_examples(data.test_labels, 6)
        experiment.figure(
            f"concepts-senn-{conceptizer}-explanations",
            explanations_figure(model, data.test_images[chosen], data.test_labels[chosen]),
            caption=f"SENN ({conceptizer} concepts): test digits and the relevances of their predicted class",
        )
        if conceptizer == "autoencoder":
            experiment.figure(
                "concepts-senn-prototypes",
                prototypes_figure(data.test_images, concept_prototypes(model, data.test_images, k=6)),
                caption="Each autoencoder concept's prototypes: the test digits that activate it most",
            )
        result = stability_comparison(
            model,
            stability_inputs,
            EPS,
            n_samples,
            n_rounds,
            STABILITY_METHODS,
            seed=seed,
            show_progress=experiment.show_progress,
        )
        estimates[conceptizer] = dict(result.estimates)
        if "SENN" in STABILITY_METHODS:  # SENN's relevances per unit of input change, for comparison
            in_input = stability_comparison(
                model, stability_inputs, EPS, n_samples, n_rounds, ("SENN",), seed=seed, senn_space="input"
            )
            estimates[conceptizer][SENN_INPUT] = in_input.estimates["SENN"]
        for method, mean, median, largest in StabilityResult(estimates[conceptizer], EPS).rows():
            experiment.record(f"{conceptizer}/stability/{method}/mean", mean)
            experiment.record(f"{conceptizer}/stability/{method}/median", median)
            experiment.record(f"{conceptizer}/stability/{method}/max", largest)
    experiment.table(
        ["concepts", "k", "test accuracy", "robustness loss (last epoch)"], rows, caption="SENNs on the digits"
    )
    table = [
        [
            method,
            *[float(estimates[c][method].mean()) for c in estimates],
            *[float(estimates[c][method].median()) for c in estimates],
        ]
        for method in estimates[next(iter(estimates))]
    ]
    experiment.table(
        ["explanation", *[f"mean ({c})" for c in estimates], *[f"median ({c})" for c in estimates]],
        table,
        caption=f"Local Lipschitz estimates (L2 ball, eps = {EPS}) of each explanation of the same trained SENNs; "
        f"SENN's row divides by the change of the concepts ||h(x) - h(x')|| (eq. 5), '{SENN_INPUT}' and the "
        "post-hoc rows by the change of the input ||x - x'||",
    )
    experiment.figure("concepts-senn-stability", stability_figure(estimates), caption="Stability of explanations")
    if not quick:
        trade_off = []
        for weight in experiment.progress([0.0, 0.01, 0.1, 1.0], desc="robustness weights"):
            model = build_digits_senn(5, "autoencoder", seed)
            train_senn(
                model, data.train_images, data.train_labels, epochs, seed, robustness_weight=weight, show_progress=False
            )
            senn_explain = explanation_functions(model)["SENN"]
            with torch.no_grad():
                targets = model(stability_inputs).argmax(1)
            lipschitz = local_lipschitz(
                senn_explain, stability_inputs, EPS, n_samples, n_rounds, targets, seed=seed, encoder=model.conceptizer
            )
            in_space = local_lipschitz(senn_explain, stability_inputs, EPS, n_samples, n_rounds, targets, seed=seed)
            accuracy = senn_accuracy(model, data.test_images, data.test_labels)
            trade_off.append([weight, accuracy, float(lipschitz.mean()), float(in_space.mean())])
            experiment.record(f"trade_off/{weight}/test_accuracy", accuracy)
            experiment.record(f"trade_off/{weight}/senn_lipschitz_mean", float(lipschitz.mean()))
            experiment.record(f"trade_off/{weight}/senn_lipschitz_input_space_mean", float(in_space.mean()))
        experiment.table(
            [
                "robustness weight",
                "test accuracy",
                "SENN mean Lipschitz estimate (concepts, eq. 5)",
                "SENN mean Lipschitz estimate (input space)",
            ],
            trade_off,
            caption="Accuracy and stability of SENN's relevances against the robustness weight (autoencoder SENN, k = 5)",
        )


register(
    Experiment(
        "senn",
        "Self-explaining networks on the digits: accuracy, concept prototypes, explanations, and their stability "
        "against DeepLIFT, Integrated Gradients, SmoothGrad, gradient x input and occlusion",
        run,
    )
)
