"""The methods the experiments compare, as named explainers (:mod:`deltalift.evaluate.explainers`).

:data:`METHODS` is the one list of them and :func:`lineup` builds a selection with the settings
of :class:`LineupOptions`; each experiment's line-up (:func:`digits_methods`, :func:`toy_methods`,
:func:`check_methods`, :func:`genomics_methods`) picks from it.  Each entry is ``(name, explain)`` with ``explain(model, inputs, target) -> attributions``; the
references are the experiment's (zero for digits, the background frequencies for DNA).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
from torch import nn

from deltalift.evaluate import Explain, explainer
from deltalift.methods import (
    LRP,
    Deconvolution,
    DeepLift,
    GuidedBackprop,
    InputXGradient,
    IntegratedGradients,
    NoiseTunnel,
    Saliency,
)

Tensor = torch.Tensor

__all__ = [
    "METHODS",
    "LineupOptions",
    "check_methods",
    "digits_methods",
    "genomics_methods",
    "lineup",
    "random_scores",
    "smoothgrad",
    "times_input",
    "toy_methods",
]


def times_input(explain: Explain, reference: float | Tensor = 0.0) -> Explain:
    """``explain(...) * (inputs - reference)``: a gradient-like map times the input (e.g. Guided Backprop x input)."""

    def multiplied(model: nn.Module, inputs: Tensor, target: Tensor) -> Tensor:
        return explain(model, inputs, target) * (inputs - reference)

    return multiplied


def random_scores(seed: int) -> Explain:
    """A control: standard normal scores, seeded per (seed, example, target class), independent of the model."""

    def scores(model: nn.Module, inputs: Tensor, target: Tensor) -> Tensor:
        targets = torch.as_tensor(target).long().reshape(-1).expand(inputs.shape[0])
        out = torch.empty_like(inputs)
        for n, t in enumerate(targets.tolist()):
            generator = torch.Generator().manual_seed(seed * 1_000_003 + n * 1009 + t)
            out[n] = torch.randn(inputs.shape[1:], generator=generator, dtype=inputs.dtype)
        return out

    return scores


def smoothgrad(model: nn.Module) -> NoiseTunnel:
    """SmoothGrad's method (Smilkov et al. 2017): the gradient averaged over noisy copies of the input."""
    return NoiseTunnel(Saliency(model))


@dataclass(frozen=True)
class LineupOptions:
    """The settings the experiments' line-ups differ in.

    ``reference``: the DeepLIFT and Integrated Gradients reference; ``ig_steps``: one Integrated
    Gradients entry per step count; ``ig_method``: its quadrature (``None``: the method's default);
    ``smoothgrad_samples`` and ``smoothgrad_stdev``: SmoothGrad's noisy copies and noise level;
    ``seed``: SmoothGrad's noise and the random scores."""

    reference: float | Tensor = 0.0
    ig_steps: tuple[int, ...] = (50,)
    ig_method: str | None = None
    smoothgrad_samples: int = 16
    smoothgrad_stdev: float = 0.15
    seed: int = 0


#: Every method the experiments compare, in the order of the tables ("Integrated Gradients" stands
#: for one entry per step count of :attr:`LineupOptions.ig_steps`).
METHODS = (
    "DeepLIFT Rescale",
    "DeepLIFT RevealCancel",
    "DeepLIFT Rescale + softmax adj.",
    "DeepLIFT RevealCancel + softmax adj.",
    "DeepLIFT genomics default",
    "Integrated Gradients",
    "gradient",
    "gradient x input",
    "Guided Backprop",
    "Guided Backprop x input",
    "SmoothGrad",
    "DeconvNet",
    "LRP-epsilon",
    "random",
)


def _method(name: str, options: LineupOptions) -> list[tuple[str, Explain]]:
    reference = options.reference
    if name == "Integrated Gradients":
        extra = {} if options.ig_method is None else {"method": options.ig_method}
        return [
            (
                f"Integrated Gradients ({n} steps)",
                explainer(IntegratedGradients, baselines=reference, n_steps=n, **extra),
            )
            for n in options.ig_steps
        ]
    deeplift: dict[str, dict[str, Any]] = {
        "DeepLIFT Rescale": {},
        "DeepLIFT RevealCancel": {"rule": "reveal_cancel"},
        "DeepLIFT Rescale + softmax adj.": {"softmax_adjustment": True},
        "DeepLIFT RevealCancel + softmax adj.": {"rule": "reveal_cancel", "softmax_adjustment": True},
        "DeepLIFT genomics default": {"rule": "genomics_default"},
    }
    if name in deeplift:
        factory = partial(DeepLift, **deeplift[name]) if deeplift[name] else DeepLift
        return [(name, explainer(factory, baselines=reference))]
    simple: dict[str, Callable[[], Explain]] = {
        "gradient": lambda: explainer(Saliency, abs=False),
        "gradient x input": lambda: explainer(InputXGradient),
        "Guided Backprop": lambda: explainer(GuidedBackprop),
        "Guided Backprop x input": lambda: times_input(explainer(GuidedBackprop)),
        "SmoothGrad": lambda: explainer(
            smoothgrad,
            abs=False,
            nt_samples=options.smoothgrad_samples,
            stdevs=options.smoothgrad_stdev,
            random_state=options.seed,
        ),
        "DeconvNet": lambda: explainer(Deconvolution),
        "LRP-epsilon": lambda: explainer(partial(LRP, composite="epsilon")),
        "random": lambda: random_scores(options.seed),
    }
    if name not in simple:
        raise ValueError(f"no method {name!r} in the line-up; the methods: {', '.join(METHODS)}")
    return [(name, simple[name]())]


def lineup(names: Sequence[str], options: LineupOptions | None = None) -> list[tuple[str, Explain]]:
    """The methods ``names`` (entries of :data:`METHODS`), in that order, as named explainers."""
    options = LineupOptions() if options is None else options
    return [entry for name in names for entry in _method(name, options)]


def digits_methods(quick: bool, seed: int) -> list[tuple[str, Explain]]:
    """The digits line-up: DeepLIFT Rescale and RevealCancel (with and without the softmax
    adjustment), Integrated Gradients at several step counts, gradient, gradient x input, Guided
    Backprop (and x input), SmoothGrad, DeconvNet, LRP-epsilon, and random scores; zero reference."""
    names = [m for m in METHODS if m != "DeepLIFT genomics default"]
    options = LineupOptions(
        ig_steps=(5, 10) if quick else (5, 10, 50),
        ig_method="riemann_middle",
        smoothgrad_samples=4 if quick else 16,
        seed=seed,
    )
    return lineup(names, options)


def genomics_methods(reference: Tensor, quick: bool) -> list[tuple[str, Explain]]:
    """The DNA line-up against ``reference`` (one-hot background frequencies, ``(4, L)``)."""
    names = [
        "DeepLIFT Rescale",
        "DeepLIFT RevealCancel",
        "DeepLIFT genomics default",
        "Integrated Gradients",
        "gradient x input",
        "gradient",
        "Guided Backprop x input",
    ]
    return lineup(names, LineupOptions(reference=reference, ig_steps=(10,)))


def toy_methods(quick: bool, seed: int) -> list[tuple[str, Explain]]:
    """The toy networks' line-up, zero reference (the quick run, a smoke test, keeps the methods the
    paper's first sections discuss: gradient, gradient x input, IG, DeepLIFT, Guided Backprop)."""
    names = [
        "gradient",
        "gradient x input",
        "Integrated Gradients",
        "DeepLIFT Rescale",
        "DeepLIFT RevealCancel",
        "Guided Backprop",
    ]
    if not quick:
        names += ["Guided Backprop x input", "DeconvNet", "LRP-epsilon", "SmoothGrad"]
    return lineup(names, LineupOptions(ig_steps=(50,), smoothgrad_samples=64, smoothgrad_stdev=1.0, seed=seed))


#: The methods of the quick ``sanity`` and ``axioms`` runs (smoke tests).
CHECK_QUICK_METHODS = ("DeepLIFT Rescale", "Integrated Gradients (20 steps)", "gradient", "Guided Backprop")


def check_methods(quick: bool, seed: int) -> list[tuple[str, Explain]]:
    """The methods of the ``sanity`` and ``axioms`` reports (zero reference); the quick runs keep
    :data:`CHECK_QUICK_METHODS`."""
    names = [
        "DeepLIFT Rescale",
        "DeepLIFT RevealCancel",
        "Integrated Gradients",
        "gradient",
        "gradient x input",
        "Guided Backprop",
        "Guided Backprop x input",
        "SmoothGrad",
        "LRP-epsilon",
    ]
    options = LineupOptions(ig_steps=(20,), smoothgrad_samples=4 if quick else 16, seed=seed)
    return [(name, explain) for name, explain in lineup(names, options) if not quick or name in CHECK_QUICK_METHODS]
