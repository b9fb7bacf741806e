"""The methods the experiments compare, as named explainers (:mod:`deltalift.evaluate.explainers`).

Each entry is ``(name, explain)`` with ``explain(model, inputs, target) -> attributions``; the
references are the experiment's (zero for digits, the background frequencies for DNA).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

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

__all__ = ["digits_methods", "genomics_methods", "random_scores", "times_input"]


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


def _smoothgrad(model: nn.Module) -> NoiseTunnel:
    return NoiseTunnel(Saliency(model))


def digits_methods(quick: bool, seed: int) -> list[tuple[str, Explain]]:
    """The digits line-up: DeepLIFT Rescale and RevealCancel (with and without the softmax
    adjustment), Integrated Gradients at several step counts, gradient, gradient x input, Guided
    Backprop (and x input), SmoothGrad, DeconvNet, LRP-epsilon, and random scores; zero reference."""
    steps = (5, 10) if quick else (5, 10, 50)
    lineup: list[tuple[str, Explain]] = [
        ("DeepLIFT Rescale", explainer(DeepLift, baselines=0.0)),
        ("DeepLIFT RevealCancel", explainer(partial(DeepLift, rule="reveal_cancel"), baselines=0.0)),
        ("DeepLIFT Rescale + softmax adj.", explainer(partial(DeepLift, softmax_adjustment=True), baselines=0.0)),
        (
            "DeepLIFT RevealCancel + softmax adj.",
            explainer(partial(DeepLift, rule="reveal_cancel", softmax_adjustment=True), baselines=0.0),
        ),
    ]
    lineup += [
        (
            f"Integrated Gradients ({n} steps)",
            explainer(IntegratedGradients, baselines=0.0, n_steps=n, method="riemann_middle"),
        )
        for n in steps
    ]
    guided = explainer(GuidedBackprop)
    lineup += [
        ("gradient", explainer(Saliency, abs=False)),
        ("gradient x input", explainer(InputXGradient)),
        ("Guided Backprop", guided),
        ("Guided Backprop x input", times_input(guided)),
        (
            "SmoothGrad",
            explainer(_smoothgrad, abs=False, nt_samples=4 if quick else 16, stdevs=0.15, random_state=seed),
        ),
        ("DeconvNet", explainer(Deconvolution)),
        ("LRP-epsilon", explainer(partial(LRP, composite="epsilon"))),
        ("random", random_scores(seed)),
    ]
    return lineup


def genomics_methods(reference: Tensor, quick: bool) -> list[tuple[str, Explain]]:
    """The DNA line-up against ``reference`` (one-hot background frequencies, ``(4, L)``)."""
    steps = 10
    guided = explainer(GuidedBackprop)
    lineup: list[tuple[str, Explain]] = [
        ("DeepLIFT Rescale", explainer(DeepLift, baselines=reference)),
        ("DeepLIFT RevealCancel", explainer(partial(DeepLift, rule="reveal_cancel"), baselines=reference)),
        ("DeepLIFT genomics default", explainer(partial(DeepLift, rule="genomics_default"), baselines=reference)),
        (f"Integrated Gradients ({steps} steps)", explainer(IntegratedGradients, baselines=reference, n_steps=steps)),
        ("gradient x input", explainer(InputXGradient)),
        ("gradient", explainer(Saliency, abs=False)),
        ("Guided Backprop x input", times_input(guided)),
    ]
    return lineup


Factory = Callable[[nn.Module], object]
