"""``toy``: the small networks of the paper's first sections, every method side by side.

- the threshold unit ``y = relu(x - 10)`` as ``x`` sweeps from 0 to 20 (Shrikumar et al. 2017,
  section 2.1, figure 1: gradients are zero below the threshold and jump at it; DeepLIFT's
  contribution is the output change itself);
- the saturating unit ``y = 1 - relu(1 - (i1 + i2))`` for ``i1 = i2 = t`` (section 2.1: once
  ``i1 + i2 > 1`` the gradient is zero though both inputs matter);
- ``min(i1, i2) = i1 - relu(i1 - i2)`` (section 3.5.3, figure 3: Rescale gives one input all the
  credit, RevealCancel splits it);
- two functionally equal networks (Sundararajan et al. 2017, section 2.2):
  ``f1 = relu(relu(x1) - 1 - relu(x2))`` and ``f2 = relu(relu(x1 - 1) - relu(x2))``.

The reference is zero throughout.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from deltalift.evaluate import Explain
from deltalift.evaluate.explainers import explain_checked
from deltalift.experiments.lineup import toy_methods
from deltalift.experiments.plots import new_figure
from deltalift.experiments.registry import Experiment, register
from deltalift.experiments.report import ExperimentRun

Tensor = torch.Tensor


class Threshold(nn.Module):
    """``relu(x - 10)`` of the first input."""

    def forward(self, x: Tensor) -> Tensor:
        return torch.relu(x[:, :1] - 10.0)


class Saturating(nn.Module):
    """``1 - relu(1 - (i1 + i2))``."""

    def forward(self, x: Tensor) -> Tensor:
        return 1.0 - torch.relu(1.0 - x.sum(1, keepdim=True))


class Minimum(nn.Module):
    """``min(i1, i2) = i1 - relu(i1 - i2)`` with the difference computed by a dense layer."""

    def __init__(self) -> None:
        super().__init__()
        self.difference = nn.Linear(2, 1, bias=False)
        with torch.no_grad():
            self.difference.weight.copy_(torch.tensor([[1.0, -1.0]]))

    def forward(self, x: Tensor) -> Tensor:
        return x[:, :1] - torch.relu(self.difference(x))


class TwinOne(nn.Module):
    """``relu(relu(x1) - 1 - relu(x2))``."""

    def forward(self, x: Tensor) -> Tensor:
        return torch.relu(torch.relu(x[:, :1]) - 1.0 - torch.relu(x[:, 1:2]))


class TwinTwo(nn.Module):
    """``relu(relu(x1 - 1) - relu(x2))``: the same function as :class:`TwinOne`."""

    def forward(self, x: Tensor) -> Tensor:
        return torch.relu(torch.relu(x[:, :1] - 1.0) - torch.relu(x[:, 1:2]))


def _attribute(explain: Explain, model: nn.Module, x: Tensor) -> np.ndarray:
    return explain_checked(explain, model.eval(), x, 0).numpy()


def run(experiment: ExperimentRun) -> None:
    """The four toy networks, every method."""
    methods = toy_methods(experiment.quick, experiment.seed)
    n_points = 21 if experiment.quick else 81
    sweep = torch.linspace(0.0, 20.0, n_points, dtype=torch.float64)
    threshold_inputs = torch.stack([sweep, torch.zeros_like(sweep)], 1)
    t = torch.linspace(0.0, 2.0, n_points, dtype=torch.float64)
    saturating_inputs = torch.stack([t, t], 1)
    threshold, saturating = {}, {}
    for name, explain in experiment.progress(methods, desc="toy methods"):
        threshold[name] = _attribute(explain, Threshold(), threshold_inputs)[:, 0]
        saturating[name] = _attribute(explain, Saturating(), saturating_inputs)[:, 0]
        experiment.record(f"threshold/{name}", threshold[name])
        experiment.record(f"saturating/{name}", saturating[name])
    experiment.record("threshold/x", sweep)
    experiment.record("threshold/output", Threshold()(threshold_inputs)[:, 0])
    experiment.record("saturating/t", t)
    experiment.record("saturating/output", Saturating()(saturating_inputs)[:, 0])
    figure, axes = new_figure(11.0, 4.2, ncols=2)
    for ax, values, x, output, title, xlabel in (
        (axes[0, 0], threshold, sweep, Threshold()(threshold_inputs)[:, 0], "y = relu(x - 10)", "x (reference 0)"),
        (
            axes[0, 1],
            saturating,
            t,
            Saturating()(saturating_inputs)[:, 0],
            "y = 1 - relu(1 - (i1 + i2)), i1 = i2 = t",
            "t",
        ),
    ):
        ax.plot(x, output.detach(), color="black", lw=3, alpha=0.25, label="output y(x) - y(0)")
        for name, v in values.items():
            ax.plot(x, v, label=name, lw=1.2)
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("attribution to the first input")
    axes[0, 1].legend(fontsize=6, loc="upper left")
    figure.tight_layout()
    experiment.figure(
        "threshold_and_saturation",
        figure,
        caption="Attribution to the first input as it sweeps across the threshold (left) and into saturation (right)",
    )
    rows = []
    i15 = int(np.argmin(np.abs(sweep.numpy() - 15.0)))
    i_sat = int(np.argmin(np.abs(t.numpy() - 1.5)))
    for name in threshold:
        rows.append([name, threshold[name][i15], saturating[name][i_sat]])
    experiment.table(
        [
            "method",
            "relu(x - 10) at x = 15: attribution (output 5)",
            "saturating at t = 1.5: attribution to i1 (output change 1, split 0.5 each)",
        ],
        rows,
        caption="Attributions at a point past the threshold and in saturation",
    )
    points = torch.tensor([[3.0, 1.0], [1.0, 3.0], [2.0, 2.0]], dtype=torch.float64)
    min_rows, twin_rows = [], []
    twin_points = torch.tensor([[3.0, 1.0], [2.0, 0.5]], dtype=torch.float64)
    for name, explain in methods:
        a = _attribute(explain, Minimum().double(), points)
        min_rows.append([name, *[f"({a[k, 0]:.2f}, {a[k, 1]:.2f})" for k in range(len(points))]])
        experiment.record(f"minimum/{name}", a)
        one, two = _attribute(explain, TwinOne(), twin_points), _attribute(explain, TwinTwo(), twin_points)
        experiment.record(f"twins/{name}/f1", one)
        experiment.record(f"twins/{name}/f2", two)
        experiment.record(f"twins/{name}/max_difference", float(np.abs(one - two).max()))
        twin_rows.append(
            [
                name,
                *[
                    f"({one[k, 0]:.2f}, {one[k, 1]:.2f}) vs ({two[k, 0]:.2f}, {two[k, 1]:.2f})"
                    for k in range(len(twin_points))
                ],
                float(np.abs(one - two).max()),
            ]
        )
    experiment.table(
        ["method", *[f"(i1, i2) = ({p[0]:g}, {p[1]:g})" for p in points.tolist()]],
        min_rows,
        caption="min(i1, i2) = i1 - relu(i1 - i2): attributions (to i1, to i2); the output is min(i1, i2)",
    )
    experiment.table(
        ["method", *[f"x = ({p[0]:g}, {p[1]:g}): f1 vs f2" for p in twin_points.tolist()], "max |difference|"],
        twin_rows,
        caption="Two functionally equal networks: attributions (to x1, to x2) on each; 0 difference = implementation invariant",
    )


register(
    Experiment(
        "toy",
        "the paper's toy networks (threshold, saturation, min, two equal networks) for every method side by side",
        run,
    )
)
