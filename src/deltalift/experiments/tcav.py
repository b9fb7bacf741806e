"""``deltalift experiment run tcav``: TCAV (Kim et al., ICML 2018) on the paper-shaped digits CNN.

Concepts are drawn images of simple strokes, outside the digits' classes (as the paper's
concepts are images of textures or colours, not of the classes):

* ``ring``: an ellipse outline (the loop of a 0);
* ``vertical_stroke``: a near-vertical line (a 1);
* ``horizontal_bar``: a near-horizontal line in the top rows (the bar of a 7);
* ``random_probe`` and the random sets: random training digits (the controls).

A concept the class uses should get a TCAV score well above the random CAVs' (ring for 0,
vertical stroke for 1, horizontal bar for 7); the random probe should not be significant.

For the target classes 0, 1 and 7 and the layers ``relu1`` and ``relu2`` (after the two
convolutions), each concept's CAV is trained against ``R`` random sets; the TCAV scores are compared
with those of random-vs-random CAVs by a two-sided t-test, Bonferroni corrected over the
concepts (section 3.5).  The CAVs are also computed with FastCAV (Schmalwasser et al. 2025) to
compare time and conclusions.  (At ``relu3``, the dense layer feeding the linear output, the
target's gradient is the output weights for every input, so any CAV's TCAV score is 0 or 1: a
layer for TCAV must be followed by a nonlinearity before the output.)
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from deltalift.concepts import TCAV, Concept, ConceptSignificance, tcav_significance
from deltalift.experiments.digits import train_digits_model_with_accuracy
from deltalift.experiments.plots import new_figure
from deltalift.experiments.registry import Experiment, register
from deltalift.experiments.report import ExperimentRun

Tensor = torch.Tensor

__all__ = ["concept_images", "run", "significance_figure"]

TARGETS = (0, 1, 7)
LAYERS = ("relu1", "relu2")
CONCEPTS = ("ring", "vertical_stroke", "horizontal_bar")
#: (random sets, examples per concept and random set, inputs per class) for the quick and the full run
SETTINGS = {True: (4, 30, 30), False: (10, 50, 60)}


def _segment_distance(py: np.ndarray, px: np.ndarray, y0: float, x0: float, y1: float, x1: float) -> np.ndarray:
    """The distance of each pixel centre to the segment ``(y0, x0) - (y1, x1)``."""
    dy, dx = y1 - y0, x1 - x0
    t = np.clip(((py - y0) * dy + (px - x0) * dx) / max(dy * dy + dx * dx, 1e-12), 0.0, 1.0)
    return np.hypot(py - (y0 + t * dy), px - (x0 + t * dx))


def concept_images(name: str, n: int, rng: np.random.Generator, size: int = 8) -> Tensor:
    """``n`` drawn images ``(n, 1, size, size)`` in ``[0, 1]`` of the concept ``name``: ``"ring"``
    (an ellipse outline near the centre), ``"vertical_stroke"`` (a near-vertical line through the
    middle columns) or ``"horizontal_bar"`` (a near-horizontal line in the top rows), with random
    position, size, slant, thickness and brightness.  Ink fades linearly over 0.8 pixel beyond the
    stroke's half thickness."""
    if name not in CONCEPTS:
        raise ValueError(f"unknown concept {name!r}; choose one of {CONCEPTS}")
    if n < 1 or size < 4:
        raise ValueError(f"n must be >= 1 and size >= 4, got {n} and {size}")
    py, px = np.mgrid[0:size, 0:size].astype(np.float64)
    scale = size / 8.0
    images = np.zeros((n, 1, size, size), dtype=np.float32)
    for i in range(n):
        thickness = rng.uniform(0.6, 1.2) * scale
        if name == "ring":
            cy, cx = (size - 1) / 2 + rng.uniform(-0.5, 0.5, 2) * scale
            ry, rx = rng.uniform(2.3, 3.2) * scale, rng.uniform(1.6, 2.8) * scale
            distance = np.abs(np.hypot((py - cy) / ry, (px - cx) / rx) - 1.0) * min(ry, rx)
        elif name == "vertical_stroke":
            column, slant = rng.uniform(2.5, 4.5) * scale, rng.uniform(-0.6, 0.6) * scale
            top, bottom = rng.uniform(0, 1) * scale, rng.uniform(6, 7) * scale
            distance = _segment_distance(py, px, top, column + slant, bottom, column - slant)
        else:
            row = rng.uniform(0.3, 1.8) * scale
            left, right = rng.uniform(0.5, 2) * scale, rng.uniform(5.5, 7) * scale
            distance = _segment_distance(py, px, row, left, row + rng.uniform(-0.4, 0.4) * scale, right)
        ink = np.clip(1.0 - (distance - thickness / 2) / 0.8, 0.0, 1.0)
        images[i, 0] = ink * rng.uniform(0.8, 1.0)
    return torch.from_numpy(images)


def _draw(pool: np.ndarray, size: int, rng: np.random.Generator) -> Tensor:
    """``size`` indices drawn without replacement from ``pool`` (all of it when smaller), sorted."""
    chosen = rng.choice(pool, size=min(size, len(pool)), replace=False)
    return torch.as_tensor(np.sort(chosen))


def significance_figure(results: dict[int, list[ConceptSignificance]], layers: tuple[str, ...]) -> Any:
    """Mean TCAV score (+- std over the random sets) per concept, layer and target class; the
    dashed line is the random CAVs' mean; a star marks a significant concept, pale bars are not."""
    figure, axes = new_figure(4.2 * len(results), 3.4, ncols=len(results))
    for ax, (target, tests) in zip(axes[0], results.items()):
        names = list(dict.fromkeys(r.concept for r in tests))
        width = 0.8 / len(layers)
        for j, layer in enumerate(layers):
            rows = [next(r for r in tests if r.concept == n and r.layer == layer) for n in names]
            positions = np.arange(len(names)) + (j - (len(layers) - 1) / 2) * width
            colours = [f"C{j}" for _ in rows]
            bars = ax.bar(
                positions, [r.mean for r in rows], width, yerr=[r.std for r in rows], color=colours, label=layer
            )
            for bar, r in zip(bars, rows):
                bar.set_alpha(1.0 if r.significant else 0.3)
                if r.significant:
                    ax.text(bar.get_x() + bar.get_width() / 2, min(r.mean + r.std, 1.0) + 0.02, "*", ha="center")
            null = float(np.mean(rows[0].random_scores))
            ax.axhline(null, color=f"C{j}", linestyle="--", linewidth=0.8)
        ax.set_xticks(np.arange(len(names)), [n.replace("_", "\n") for n in names], fontsize=8)
        ax.set_ylim(0, 1.12)
        ax.set_title(f"class {target}")
        ax.set_ylabel("TCAV score")
    axes[0][0].legend(fontsize=7, loc="upper right")
    figure.suptitle("TCAV on the digits CNN: * significant (t-test vs random CAVs, Bonferroni), pale: not")
    figure.tight_layout()
    return figure


def run(experiment: ExperimentRun) -> None:
    """The experiment (see the module's docstring)."""
    quick, seed = experiment.quick, experiment.seed
    trained = train_digits_model_with_accuracy(seed, quick, experiment.show_progress)
    model, data = trained.model, trained.data
    experiment.record("model/test_accuracy", trained.test_accuracy)
    n_random, size, inputs_per_class = SETTINGS[quick]
    labels = data.train_labels.numpy()
    rng = np.random.default_rng(seed)
    experiment.text(
        f"Digits CNN test accuracy {trained.test_accuracy:.1%}. Concepts: {size} drawn stroke images each; "
        f"{n_random} random sets of {size} training digits; inputs: up to "
        f"{inputs_per_class} test digits of the class. Layers {', '.join(LAYERS)}; CAVs by SGD (Captum's "
        "default classifier) and by FastCAV."
    )
    all_results: dict[str, dict[int, list[ConceptSignificance]]] = {"sgd": {}, "fastcav": {}}
    seconds = {"sgd": 0.0, "fastcav": 0.0}
    rows = []
    for target in experiment.progress(TARGETS, desc="target classes"):
        concepts = [Concept(i, name, concept_images(name, size, rng)) for i, name in enumerate(CONCEPTS)]
        concepts.append(
            Concept(len(CONCEPTS), "random_probe", data.train_images[_draw(np.arange(len(labels)), size, rng)])
        )
        randoms = [
            Concept(100 + r, f"random_{r}", data.train_images[_draw(np.arange(len(labels)), size, rng)])
            for r in range(n_random)
        ]
        inputs = data.test_images[data.test_labels == target][:inputs_per_class]
        for classifier in ("sgd", "fastcav"):
            started = time.perf_counter()
            tcav = TCAV(model, list(LAYERS), model_id="digits", classifier=classifier, seed=seed)
            results = tcav_significance(tcav, inputs, concepts, randoms, target=target)
            seconds[classifier] += time.perf_counter() - started
            all_results[classifier][target] = results
            for r in results:
                key = f"{classifier}/class_{target}/{r.layer}/{r.concept}"
                experiment.record(f"{key}/mean", r.mean)
                experiment.record(f"{key}/p_corrected", r.corrected_p_value)
                experiment.record(f"{key}/significant", r.significant)
                if classifier == "sgd":
                    rows.append(
                        [
                            target,
                            r.layer,
                            r.concept,
                            r.mean,
                            r.std,
                            float(np.mean(r.random_scores)),
                            r.corrected_p_value,
                            "yes" if r.significant else "no",
                        ]
                    )
    experiment.table(
        ["class", "layer", "concept", "TCAV mean", "std", "random mean", "p (Bonferroni)", "significant"],
        rows,
        caption="TCAV scores with SGD CAVs against random concepts (two-sided t-test, Bonferroni over 4 concepts)",
    )
    experiment.figure(
        "concepts-tcav-significance",
        significance_figure(all_results["sgd"], LAYERS),
        caption="TCAV scores per concept, layer and class, with the random CAVs' mean (dashed)",
    )
    agree = [
        a.significant == b.significant
        for target in TARGETS
        for a, b in zip(all_results["sgd"][target], all_results["fastcav"][target])
    ]
    experiment.record("tcav_seconds/sgd", seconds["sgd"])
    experiment.record("tcav_seconds/fastcav", seconds["fastcav"])
    experiment.record("fastcav_agreement", float(np.mean(agree)))
    probe_significant = sum(
        r.significant for tests in all_results["sgd"].values() for r in tests if r.concept == "random_probe"
    )
    experiment.record("random_probe_significant", probe_significant)
    experiment.text(
        f"TCAV with SGD CAVs took {seconds['sgd']:.1f} s, with FastCAV {seconds['fastcav']:.1f} s (activations and "
        f"gradients included); the two agree on significance in {np.mean(agree):.0%} of the "
        f"{len(agree)} tests. The random probe concept was significant in {probe_significant} of "
        f"{len(TARGETS) * len(LAYERS)} tests."
    )


register(
    Experiment(
        "tcav",
        "TCAV on the digits CNN: drawn stroke concepts (ring, vertical stroke, top bar) against random digits, "
        "with the t-test and Bonferroni correction",
        run,
    )
)
