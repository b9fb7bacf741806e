"""``digits-erasure``: the paper's log-odds erasure on digits (Shrikumar et al. 2017, section 4.1, figure 2).

A CNN of the paper's shape (:mod:`deltalift.experiments.digits`) is trained on scikit-learn's
8x8 digits (or MNIST with ``--mnist DIR``).  For correctly classified test digits of class
``c_o`` and a target class ``c_t``, each method's ``S_diff = S(c_o) - S(c_t)`` ranks the pixels;
up to 20 % of them with ``S_diff > 0`` are erased (set to the zero reference) and the drop of
``log p(c_o)/p(c_t)`` is recorded (:func:`deltalift.evaluate.log_odds_erasure`), for the paper's
conversions 8 -> 3 and 8 -> 6 and over all ordered class pairs, with bootstrap intervals.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from torch import nn

from deltalift.evaluate import bootstrap_mean, log_odds_erasure
from deltalift.evaluate.explainers import Explain, explain_checked
from deltalift.experiments.digits import train_digits_model_with_accuracy
from deltalift.experiments.lineup import digits_methods
from deltalift.experiments.options import mnist_folder
from deltalift.experiments.plots import box_plot, new_figure
from deltalift.experiments.registry import Experiment, register
from deltalift.experiments.report import ExperimentRun

Tensor = torch.Tensor

CONVERSIONS = ((8, 3), (8, 6))
BUDGET = 0.2


def _class_scores(explain: Explain, model: nn.Module, images: Tensor, n_classes: int) -> Tensor:
    """``S[c]`` for every class: ``(classes, N, ...)``."""
    return torch.stack([explain_checked(explain, model, images, c) for c in range(n_classes)])


def _changes(
    model: nn.Module, images: Tensor, labels: Tensor, scores: Tensor, pairs: list[tuple[int, int]], budget: int
) -> Tensor:
    """The log-odds drop for every (example index, target class) in ``pairs``."""
    index = torch.tensor([i for i, _ in pairs])
    target = torch.tensor([t for _, t in pairs])
    original = labels[index]
    s_diff = scores[original, index] - scores[target, index]
    return log_odds_erasure(model, images[index], original, target, budget=budget, s_diff=s_diff).change


def run(experiment: ExperimentRun) -> None:
    """Train, explain every class of the test digits with every method, erase, measure."""
    trained = train_digits_model_with_accuracy(
        experiment.seed, experiment.quick, experiment.show_progress, mnist_folder()
    )
    model, data = trained.model, trained.data
    with torch.no_grad():
        predicted = model(data.test_images).argmax(1)
    correct = torch.nonzero(predicted == data.test_labels).flatten()
    if experiment.quick:
        keep = [int(i) for i in correct if int(data.test_labels[i]) == 8][:8]
        keep += [int(i) for i in correct if int(i) not in keep][: 32 - len(keep)]
        correct = torch.tensor(sorted(keep))
    images, labels = data.test_images[correct], data.test_labels[correct]
    n_classes = int(data.test_labels.max()) + 1
    d = images[0].numel()
    budget = int(round(BUDGET * d))
    source = "MNIST" if mnist_folder() is not None else "scikit-learn's 8x8 digits"
    experiment.text(
        f"Model: the paper's shape (two strided convolutions, a dense layer, softmax output) trained "
        f"{trained.epochs} epochs on {source}; test accuracy {trained.test_accuracy:.1%}. "
        f"{len(images)} correctly classified test digits; budget {budget} of {d} pixels ({BUDGET:.0%}); "
        f"zero reference. The change is log p(c_o)/p(c_t) before minus after erasing (higher is better)."
    )
    experiment.record("model/test_accuracy", trained.test_accuracy)
    experiment.record("model/epochs", trained.epochs)
    experiment.record("data/examples", len(images))
    experiment.record("data/budget", budget)
    all_pairs = [(i, t) for i in range(len(images)) for t in range(n_classes) if t != int(labels[i])]
    conversion_pairs = {
        f"{o}->{t}": [(i, t) for i in range(len(images)) if int(labels[i]) == o] for o, t in CONVERSIONS
    }
    methods = digits_methods(experiment.quick, experiment.seed)
    changes: dict[str, dict[str, np.ndarray]] = {}
    maps: dict[str, Tensor] = {}
    for name, explain in experiment.progress(methods, desc="methods"):
        started = time.perf_counter()
        scores = _class_scores(explain, model, images, n_classes)
        seconds = time.perf_counter() - started
        changes[name] = {"all pairs": _changes(model, images, labels, scores, all_pairs, budget).numpy()}
        for key, pairs in conversion_pairs.items():
            if pairs:
                changes[name][key] = _changes(model, images, labels, scores, pairs, budget).numpy()
        first_eight = next((i for i in range(len(images)) if int(labels[i]) == 8), None)
        if first_eight is not None:
            maps[name] = scores[8, first_eight] - scores[3, first_eight]
        experiment.record(f"methods/{name}/seconds", round(seconds, 3))
    keys = ["all pairs", *[k for k, p in conversion_pairs.items() if p]]
    rows = []
    for name in changes:
        row: list[object] = [name]
        for key in keys:
            interval = bootstrap_mean(changes[name][key], random_state=experiment.seed)
            experiment.record(f"methods/{name}/{key}/mean", interval.mean)
            experiment.record(f"methods/{name}/{key}/ci95", [interval.low, interval.high])
            experiment.record(f"methods/{name}/{key}/n", len(changes[name][key]))
            row.append(f"{interval.mean:.2f} [{interval.low:.2f}, {interval.high:.2f}]")
        rows.append(row)
    order = sorted(changes, key=lambda m: -float(np.mean(changes[m]["all pairs"])))
    experiment.record("ranking_all_pairs", order)
    experiment.table(
        ["method", *[f"{k} (mean [95% CI])" for k in keys]],
        rows,
        caption="Log-odds change after erasing, mean over examples with a 95% bootstrap interval",
    )
    for key in keys:
        experiment.figure(
            f"erasure_{key.replace('->', '_to_').replace(' ', '_')}",
            box_plot(
                [changes[m][key] for m in changes], list(changes), f"log-odds erasure, {key}", "change in log-odds"
            ),
            caption=f"Log-odds change per example, {key}",
        )
    if maps:
        shown = [m for m in maps if m != "random"][:8]
        figure, axes = new_figure(2.0 * len(shown), 2.3, ncols=len(shown))
        for ax, name in zip(axes[0], shown):
            heat = maps[name].reshape(images.shape[-2], images.shape[-1]).numpy()
            limit = float(np.abs(heat).max()) or 1.0
            ax.imshow(heat, cmap="bwr", vmin=-limit, vmax=limit)
            ax.set_title(name.replace(" + ", "\n+ ").replace(" (", "\n("), fontsize=7)
            ax.axis("off")
        experiment.figure(
            "s_diff_8_to_3", figure, caption="S(8) - S(3) for the first test 8 (red: erase to turn it into a 3)"
        )
    rescale, reveal = changes.get("DeepLIFT Rescale"), changes.get("DeepLIFT RevealCancel")
    if rescale is not None and reveal is not None:
        better = float(np.mean(reveal["all pairs"] - rescale["all pairs"]))
        paired = bootstrap_mean(reveal["all pairs"] - rescale["all pairs"], random_state=experiment.seed)
        experiment.record("reveal_cancel_minus_rescale/all pairs/mean", better)
        experiment.record("reveal_cancel_minus_rescale/all pairs/ci95", [paired.low, paired.high])
        experiment.text(
            f"Ranking over all class pairs: {', '.join(order)}. RevealCancel minus Rescale, paired over "
            f"the same erasures: {better:.3f} [{paired.low:.3f}, {paired.high:.3f}]."
        )


register(
    Experiment(
        "digits-erasure",
        "log-odds erasure on digits (8->3, 8->6, all pairs) for every method, box plots and bootstrap intervals",
        run,
    )
)
