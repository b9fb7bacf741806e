"""The stability of SENN's explanations against post-hoc explanations of the same trained model
(Alvarez-Melis & Jaakkola, NeurIPS 2018, section 5, Figure 4): the local Lipschitz estimate
(:func:`deltalift.senn.stability.local_lipschitz`) of

* ``SENN``: the relevances ``theta(x)_{:,c}`` of the class ``c`` predicted at ``x``;
* ``DeepLift`` (Rescale, zero reference), ``IntegratedGradients`` (zero baseline, 32 Gauss-
  Legendre steps), ``SmoothGrad`` (``NoiseTunnel(Saliency)``, 16 samples, sigma 0.15 of the
  input range, a fixed ``random_state``), ``InputXGradient`` and ``Occlusion`` (2x2 patches,
  zero baseline): attribution maps of the same logit of the same SENN.

The class is the one predicted at the centre of the ball, held fixed inside it.  The ratio's
denominator follows eq. 5 of the paper: ``||h(x) - h(x')||_2`` with SENN's conceptizer ``h`` for
SENN's relevances (``senn_space="concepts"``, the default; ``"input"`` for ``||x - x'||_2``),
and ``||x - x'||_2`` (``h`` the identity) for the post-hoc maps, which explain the input.  For a
SENN whose concepts are the pixels the two coincide.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from deltalift.methods import DeepLift, InputXGradient, IntegratedGradients, NoiseTunnel, Occlusion, Saliency
from deltalift.senn.model import SENN
from deltalift.senn.stability import ExplanationFunction, local_lipschitz

Tensor = torch.Tensor

__all__ = ["METHODS", "StabilityResult", "explanation_functions", "stability_comparison"]

METHODS = ("SENN", "DeepLift", "IntegratedGradients", "SmoothGrad", "InputXGradient", "Occlusion")


def explanation_functions(model: SENN, smoothgrad_sigma: float = 0.15) -> dict[str, ExplanationFunction]:
    """The explanation functions ``e(points, targets)`` compared, by name (see :data:`METHODS`)."""
    deeplift, ig = DeepLift(model), IntegratedGradients(model)
    smoothgrad, ixg, occlusion = NoiseTunnel(Saliency(model)), InputXGradient(model), Occlusion(model)

    def senn(points: Tensor, targets: Tensor | None) -> Tensor:
        with torch.no_grad():
            explanation = model.explain(points)
        classes = explanation.logits.argmax(1) if targets is None else targets
        return explanation.for_class(classes)

    def spatial(points: Tensor) -> tuple[int, ...]:
        return (1,) * (points.ndim - 3) + (2, 2) if points.ndim >= 3 else (1,)

    return {
        "SENN": senn,
        "DeepLift": lambda p, t: deeplift.attribute(p, baselines=0.0, target=t),
        "IntegratedGradients": lambda p, t: ig.attribute(p, baselines=0.0, target=t, n_steps=32),
        "SmoothGrad": lambda p, t: smoothgrad.attribute(
            p, nt_type="smoothgrad", nt_samples=16, stdevs=smoothgrad_sigma, random_state=0, target=t
        ),
        "InputXGradient": lambda p, t: ixg.attribute(p, target=t),
        "Occlusion": lambda p, t: occlusion.attribute(
            p, sliding_window_shapes=spatial(p), strides=spatial(p), baselines=0.0, target=t
        ),
    }


@dataclass
class StabilityResult:
    """Local Lipschitz estimates per method, one per example."""

    estimates: dict[str, Tensor]
    eps: float
    #: the denominator of SENN's row: ``"concepts"`` (``||h(x) - h(x')||``) or ``"input"``
    senn_space: str = "concepts"

    def rows(self) -> list[tuple[str, float, float, float]]:
        """``(method, mean, median, max)`` per method, in :data:`METHODS` order."""
        return [(name, float(v.mean()), float(v.median()), float(v.max())) for name, v in self.estimates.items()]


def stability_comparison(
    model: SENN,
    inputs: Tensor,
    eps: float = 0.1,
    n_samples: int = 16,
    n_rounds: int = 2,
    methods: tuple[str, ...] = METHODS,
    seed: int = 0,
    show_progress: bool = False,
    senn_space: str = "concepts",
) -> StabilityResult:
    """The local Lipschitz estimate of each method's explanation at each of ``inputs``, for the
    class the model predicts there.  SENN's row divides by the change of the concepts
    ``||h(x) - h(x')||_2`` (``senn_space="concepts"``, eq. 5) or of the input (``"input"``); the
    post-hoc rows by the change of the input.  The model is evaluated in eval mode and its
    train/eval mode is restored afterwards."""
    if senn_space not in ("concepts", "input"):
        raise ValueError(f"senn_space must be 'concepts' or 'input', got {senn_space!r}")
    functions = explanation_functions(model)
    unknown = [m for m in methods if m not in functions]
    if unknown:
        raise ValueError(f"unknown methods {unknown}; choose among {list(functions)}")
    modes = {module: module.training for module in model.modules()}
    model.eval()
    try:
        with torch.no_grad():
            targets = model(inputs).argmax(1)
        encoder = model.conceptizer if senn_space == "concepts" else None
        estimates = {
            name: local_lipschitz(
                functions[name],
                inputs,
                eps,
                n_samples,
                n_rounds,
                targets,
                seed=seed,
                show_progress=show_progress,
                encoder=encoder if name == "SENN" else None,
            )
            for name in methods
        }
    finally:
        for module, training in modes.items():
            module.train(training)
    return StabilityResult(estimates, eps, senn_space)
