"""``internal-influence``: three ways to rank the units of an internal layer of the digits model.

At the second convolution's ReLU output (``relu2``) of the digits CNN, for the predicted class:

- Internal Influence (Leino et al. 2018): the layer gradient integrated from the zero image to the input;
- LayerDeepLift (Shrikumar et al. 2017): each unit's contribution ``m * (h - h0)``, zero reference;
- LRP-epsilon relevance (Bach et al. 2015): relevance of the layer's units, propagated from the
  class logit through the layers above.

Their rank agreement (Spearman per example), and the drop of the class logit when the top-k units
of each ranking are set to their reference activation ``h0`` (the activation on the zero image),
against a random ranking.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from deltalift.evaluate import spearman
from deltalift.experiments.digits import PaperCNN, train_digits_model_with_accuracy
from deltalift.experiments.options import mnist_folder
from deltalift.experiments.plots import new_figure
from deltalift.experiments.registry import Experiment, register
from deltalift.experiments.report import ExperimentRun
from deltalift.methods import LRP, InternalInfluence, LayerDeepLift

Tensor = torch.Tensor


def _lower(model: PaperCNN, x: Tensor) -> Tensor:
    return model.relu2(model.conv2(model.relu1(model.conv1(x))))


def _head(model: PaperCNN) -> nn.Module:
    return nn.Sequential(model.flatten, model.dense, model.relu3, model.output).eval()


def layer_scores(model: PaperCNN, images: Tensor, target: Tensor, n_steps: int) -> dict[str, Tensor]:
    """Per method, the score of each unit of ``relu2`` ``(N, C, H, W)``."""
    with torch.no_grad():
        h = _lower(model, images)
    return {
        "Internal Influence": InternalInfluence(model, model.relu2)
        .attribute(images, baselines=0.0, target=target, n_steps=n_steps)
        .detach(),
        "LayerDeepLift": LayerDeepLift(model, model.relu2).attribute(images, baselines=0.0, target=target).detach(),
        "LRP-epsilon": LRP(_head(model), "epsilon").attribute(h, target=target).detach(),
    }


def ablation_drop(model: PaperCNN, images: Tensor, target: Tensor, scores: Tensor, ks: list[int]) -> np.ndarray:
    """``drop[n, j]``: the class logit minus the logit with the top ``ks[j]`` units (by ``scores``)
    set to their reference activation."""
    head = _head(model)
    with torch.no_grad():
        h = _lower(model, images).flatten(1)
        h0 = _lower(model, torch.zeros_like(images[:1])).flatten(1).expand_as(h)
        rows = torch.arange(len(images))
        base = head(h.reshape(-1, *scores.shape[1:]))[rows, target]
        order = torch.argsort(-scores.flatten(1), dim=1, stable=True)
        drops = []
        for k in ks:
            mask = torch.zeros_like(h, dtype=torch.bool)
            mask.scatter_(1, order[:, :k], True)
            ablated = torch.where(mask, h0, h).reshape(-1, *scores.shape[1:])
            drops.append((base - head(ablated)[rows, target]).numpy())
    return np.stack(drops, 1)


def run(experiment: ExperimentRun) -> None:
    """Rank the units three ways, compare the rankings, ablate."""
    trained = train_digits_model_with_accuracy(
        experiment.seed, experiment.quick, experiment.show_progress, mnist_folder()
    )
    model = trained.model
    images = trained.data.test_images[: 16 if experiment.quick else 200]
    with torch.no_grad():
        target = model(images).argmax(1)
    scores = layer_scores(model, images, target, 10 if experiment.quick else 50)
    generator = torch.Generator().manual_seed(experiment.seed)
    scores_and_random = {**scores, "random": torch.randn(scores["LayerDeepLift"].shape, generator=generator)}
    units = scores["LayerDeepLift"][0].numel()
    ks = [k for k in (1, 2, 4, 8, 16, 32, 64) if k <= units]
    experiment.text(
        f"Digits model (test accuracy {trained.test_accuracy:.1%}); layer relu2 ({units} units); {len(images)} test "
        "digits, target the predicted class; ablation sets a unit to its activation on the zero image."
    )
    names = list(scores)
    agreement_rows = []
    for a in names:
        row: list[object] = [a]
        for b in names:
            rho = float(
                np.mean([spearman(x, y) for x, y in zip(scores[a].flatten(1).numpy(), scores[b].flatten(1).numpy())])
            )
            row.append(rho)
            experiment.record(f"agreement/{a}/{b}", rho)
        agreement_rows.append(row)
    experiment.table(
        ["", *names], agreement_rows, caption="Rank agreement: mean Spearman correlation of the unit scores per example"
    )
    drops = {name: ablation_drop(model, images, target, s, ks) for name, s in scores_and_random.items()}
    rows = []
    for name, d in drops.items():
        experiment.record(f"ablation/{name}", {str(k): float(d[:, j].mean()) for j, k in enumerate(ks)})
        rows.append([name, *[float(d[:, j].mean()) for j in range(len(ks))]])
    experiment.table(
        ["ranking", *[f"top {k}" for k in ks]],
        rows,
        caption="Mean drop of the class logit after ablating the top-k units",
    )
    figure, axes = new_figure(6.0, 4.0)
    ax = axes[0, 0]
    for name, d in drops.items():
        ax.plot(ks, d.mean(0), marker="o", label=name, ls="--" if name == "random" else "-")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("units ablated (top-k of the ranking)")
    ax.set_ylabel("drop of the class logit")
    ax.legend()
    ax.set_title("ablating relu2 units by each ranking")
    figure.tight_layout()
    experiment.figure(
        "ablation", figure, caption="Drop of the class logit when the top-k units of each ranking are ablated"
    )
    experiment.record("model/test_accuracy", trained.test_accuracy)


register(
    Experiment(
        "internal-influence",
        "Internal Influence, LayerDeepLift and LRP at an internal layer of the digits model: agreement and top-k ablation",
        run,
    )
)
