"""Sanity checks for saliency maps (Adebayo et al. 2018, *Sanity Checks for Saliency Maps*, NeurIPS, section 3).

Model-parameter randomisation: re-draw the weights of the layers (:func:`randomise_layer`), either *cascading* from
the output layer down to the input (each step randomises one more layer) or *independently* (one
layer at a time, the others trained), and compare each example's attributions before and after
with Spearman's rank correlation, of the signed values and of their absolute values.  A method
whose maps stay the same once the weights are random does not explain the model.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from deltalift.evaluate.explainers import Explain, as_explainer, explain_checked
from deltalift.evaluate.statistics import spearman

Tensor = torch.Tensor

__all__ = ["RandomisationResult", "model_randomisation", "parameter_layers", "randomise_layer"]


def parameter_layers(model: nn.Module) -> list[str]:
    """The paths of the modules that hold parameters of their own, in definition order (input to output)."""
    return [name for name, m in model.named_modules() if name and any(True for _ in m.parameters(recurse=False))]


def _init_scale(module: nn.Module, parameter: Tensor) -> float:
    """The scale of PyTorch's default initialisation for ``module``: ``1/sqrt(fan_in)`` (the bound
    of ``kaiming_uniform_(a=sqrt(5))`` and of the bias draw in ``nn.Linear`` / ``nn.ConvNd``), with
    ``fan_in`` from ``parameter`` when it is a matrix or from the module's first such parameter;
    1 when there is none (e.g. a norm layer's affine weights)."""
    weights = [parameter] if parameter.ndim >= 2 else []
    weights += [p for p in module.parameters(recurse=False) if p.ndim >= 2]
    if not weights:
        return 1.0
    fan_in = weights[0][0].numel()
    return 1.0 / float(np.sqrt(max(fan_in, 1)))


def randomise_layer(module: nn.Module, seed: int) -> None:
    """Re-draw ``module``'s own parameters (``recurse=False``: its children are left as they are) in
    place, seeded by ``seed``, from ``N(0, s^2)`` with ``s`` each parameter's own standard deviation,
    or the scale of PyTorch's default initialisation (:func:`_init_scale`) when that is zero (a
    constant: a norm layer's weights of one, zero biases).

    Adebayo et al. 2018 (*Sanity Checks for Saliency Maps*, section 3, "model parameter
    randomization test") re-initialise each layer's weights with random draws; a norm layer's
    ``reset_parameters()`` would instead set its weights to one and its biases to zero (not random),
    and a module's ``reset_parameters()`` may also reset its children (``nn.MultiheadAttention``'s
    ``out_proj``), which would make the independent randomisation randomise more than one layer."""
    generator = torch.Generator(device="cpu").manual_seed(int(seed))
    with torch.no_grad():
        for parameter in module.parameters(recurse=False):
            std = float(parameter.detach().double().std()) if parameter.numel() > 1 else 0.0
            scale = std if np.isfinite(std) and std > 0 else _init_scale(module, parameter)
            draw = torch.randn(parameter.shape, generator=generator, dtype=torch.float64) * scale
            parameter.copy_(draw.to(device=parameter.device, dtype=parameter.dtype))


@dataclass
class RandomisationResult:
    """``spearman[k, n]`` and ``spearman_abs[k, n]``: rank correlation of example ``n``'s
    attributions before and after step ``k`` (``layers[k]`` randomised; in cascading mode
    together with the layers above it)."""

    mode: str
    layers: list[str]
    spearman: np.ndarray
    spearman_abs: np.ndarray

    def mean(self) -> dict[str, tuple[float, float]]:
        """Per layer, the mean (signed, absolute) rank correlation over the examples."""
        return {
            layer: (float(np.nanmean(self.spearman[k])), float(np.nanmean(self.spearman_abs[k])))
            for k, layer in enumerate(self.layers)
        }


def model_randomisation(
    model: nn.Module,
    inputs: Tensor,
    target: Any,
    explain: Explain | Any,
    mode: str = "cascading",
    layers: list[str] | None = None,
    seed: int = 0,
) -> RandomisationResult:
    """Adebayo et al.'s model-parameter randomisation test.

    Parameters
    ----------
    model:
        The trained model; it is not changed (the randomised ones are copies).
    inputs, target:
        The examples and their target classes (an int or one per example).
    explain:
        An explainer ``(model, inputs, target) -> attributions`` or a method class.
    mode:
        ``"cascading"`` (top layer first, randomisations accumulate) or ``"independent"``.
    layers:
        Module paths to randomise (default: :func:`parameter_layers`, randomised from the
        output down in cascading mode).
    seed:
        Seed of the re-initialisation (layer ``k`` uses ``seed + k``).
    """
    if mode not in ("cascading", "independent"):
        raise ValueError(f"mode must be 'cascading' or 'independent', got {mode!r}")
    explain = as_explainer(explain)
    names = list(reversed(parameter_layers(model))) if layers is None else list(layers)
    modules = dict(model.named_modules())
    unknown = [n for n in names if n not in modules]
    if unknown:
        raise ValueError(f"no module {unknown[0]!r} in the model; modules with parameters: {parameter_layers(model)}")
    if not names:
        raise ValueError("the model has no layers with parameters to randomise")
    original = explain_checked(explain, model, inputs, target).reshape(inputs.shape[0], -1).cpu().numpy()
    randomised = copy.deepcopy(model)
    rho = np.empty((len(names), inputs.shape[0]))
    rho_abs = np.empty_like(rho)
    for k, name in enumerate(names):
        if mode == "independent":
            randomised = copy.deepcopy(model)
        randomise_layer(dict(randomised.named_modules())[name], seed + k)
        randomised.eval()
        after = explain_checked(explain, randomised, inputs, target).reshape(inputs.shape[0], -1).cpu().numpy()
        for n in range(inputs.shape[0]):
            rho[k, n] = spearman(original[n], after[n])
            rho_abs[k, n] = spearman(np.abs(original[n]), np.abs(after[n]))
    return RandomisationResult(mode, names, rho, rho_abs)
