"""Figures of a SENN: its concept prototypes, and per-example explanations (the relevance of
each concept to the predicted class, as the paper's Figure 2; for pixel concepts, a relevance
map).  matplotlib is imported when a figure is drawn (``pip install 'deltalift[plot]'``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from deltalift.plot.heatmap import new_figure, save_figure, symmetric_limit
from deltalift.senn.model import SENN, IdentityConceptizer

Tensor = torch.Tensor

__all__ = ["explanations_figure", "prototypes_figure"]


def _image(x: Tensor) -> np.ndarray:
    array = x.detach().cpu().numpy()
    return array[0] if array.ndim == 3 and array.shape[0] == 1 else np.moveaxis(array, 0, -1)


def prototypes_figure(images: Tensor, prototypes: Tensor, path: str | Path | None = None) -> Any:
    """A grid: one row per concept, its prototype inputs (``prototypes``: indices
    ``(n_concepts, k)`` into ``images``, from :func:`deltalift.senn.prototypes.concept_prototypes`)."""
    n_concepts, k = prototypes.shape
    figure = new_figure(1.1 * k + 0.6, 1.1 * n_concepts + 0.4)
    axes = figure.subplots(n_concepts, k, squeeze=False)
    for i in range(n_concepts):
        for j in range(k):
            ax = axes[i][j]
            ax.imshow(_image(images[int(prototypes[i, j])]), cmap="gray_r")
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(f"concept {i}")
    figure.suptitle("Concept prototypes: the test digits with the largest h_i(x)")
    if path is not None:
        save_figure(figure, path)
    return figure


def explanations_figure(model: SENN, images: Tensor, labels: Tensor, path: str | Path | None = None) -> Any:
    """Each image beside its explanation for the predicted class: the relevances
    ``theta(x)_{:,c}`` and contributions ``theta_i h_i`` as bars (autoencoder concepts), or the
    relevances as a map (pixel concepts)."""
    with torch.no_grad():
        explanation = model.explain(images)
    predicted = explanation.logits.argmax(1)
    relevances = explanation.for_class(predicted)
    pixels = isinstance(model.conceptizer, IdentityConceptizer)
    n = images.shape[0]
    figure = new_figure(6.0, 1.8 * n + 0.4)
    axes = figure.subplots(n, 2, squeeze=False, width_ratios=[1, 2.2])
    limit = symmetric_limit([relevances.numpy()])
    for i in range(n):
        ax_image, ax_explanation = axes[i]
        ax_image.imshow(_image(images[i]), cmap="gray_r")
        ax_image.set_title(f"label {int(labels[i])}, predicted {int(predicted[i])}", fontsize=8)
        ax_image.set_xticks([])
        ax_image.set_yticks([])
        if pixels:
            assert isinstance(model.conceptizer, IdentityConceptizer)
            shape = model.conceptizer.input_shape
            ax_explanation.imshow(_image(relevances[i].reshape(shape)), cmap="RdBu_r", vmin=-limit, vmax=limit)
            ax_explanation.set_title(f"relevance theta(x) of each pixel for class {int(predicted[i])}", fontsize=8)
            ax_explanation.set_xticks([])
            ax_explanation.set_yticks([])
        else:
            k = relevances.shape[1]
            positions = np.arange(k)
            contributions = (relevances[i] * explanation.concepts[i]).numpy()
            ax_explanation.barh(positions - 0.2, relevances[i].numpy(), height=0.4, label="relevance theta_i")
            ax_explanation.barh(positions + 0.2, contributions, height=0.4, label="theta_i h_i")
            ax_explanation.set_yticks(positions, [f"concept {j}" for j in range(k)], fontsize=7)
            ax_explanation.axvline(0, color="black", linewidth=0.5)
            ax_explanation.set_title(f"explanation of class {int(predicted[i])}", fontsize=8)
            if i == 0:
                ax_explanation.legend(fontsize=6, loc="lower right")
    if path is not None:
        save_figure(figure, path)
    return figure
