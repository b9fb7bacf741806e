"""An axiom report: which of the attribution axioms a method satisfies on a given model and inputs.

Each check is measured on the model and examples given, and passes when its measured value is
at most ``tolerance`` (all values are relative to the attributions' or the outputs' scale):

- **completeness** (summation-to-delta; Shrikumar et al. 2017, section 2.2; Sundararajan et al.
  2017, section 3): ``max_n |sum_i Phi_i - (f(x) - f(x0))| / max(|f(x) - f(x0)|, eps)``;
- **sensitivity (a)** (Sundararajan et al. 2017, section 2.1): for inputs ``x'`` equal to the
  reference except in one feature, with ``f(x') != f(x0)``, that feature's attribution must be
  nonzero; the value is the share of such cases where it is zero;
- **sensitivity (b)** (ibid.): for a model that ignores some features (they are replaced by the
  reference inside the model), their attributions must be zero; the value is the largest of them
  relative to the largest attribution;
- **dummy** (missingness; Lundberg & Lee 2017, property 2): features at their reference value
  get zero attribution; relative largest attribution among them;
- **implementation invariance** (Sundararajan et al. 2017, section 2.2): two functionally equal
  networks get equal attributions; ``max |Phi_1 - Phi_2| / max |Phi_1|`` (needs ``twin``);
- **linearity** (ibid., section 3): the attributions of ``a f_1 + b f_2`` are ``a Phi(f_1) + b Phi(f_2)``;
- **symmetry preservation** (ibid., section 3): for ``g(x) = f(x) + f(swap_ij x)``, symmetric in
  features ``i`` and ``j``, and an input with ``x_i = x_j``, ``Phi_i = Phi_j``.

The explainer is called as ``explain(model, inputs, target)`` and must use the reference
``baseline`` (a number) itself, e.g. ``explainer(DeepLift, baselines=0.0)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from deltalift.evaluate.explainers import Explain, as_explainer, explain_checked, target_scores, target_tensor
from deltalift.random_state import numpy_generator

Tensor = torch.Tensor

__all__ = ["AxiomCheck", "axiom_report"]

_TINY = 1e-12


@dataclass(frozen=True)
class AxiomCheck:
    """One axiom: whether it held, the measured value (0 is perfect), the tolerance, and what was measured."""

    name: str
    passed: bool
    value: float
    tolerance: float
    detail: str


class _Masked(nn.Module):
    """``f(where(keep, x, baseline))``: a model that does not depend on the features where ``keep`` is 0."""

    def __init__(self, model: nn.Module, keep: Tensor, baseline: float) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("keep", keep)
        self.baseline = baseline

    def forward(self, x: Tensor) -> Tensor:
        keep: Tensor = self.keep  # type: ignore[assignment]
        return self.model(torch.where(keep.bool(), x, torch.full_like(x, self.baseline)))


class _Combination(nn.Module):
    """``a f_1(x) + b f_2(x)`` as a one-output model."""

    def __init__(self, model: nn.Module, first: int, second: int, a: float, b: float) -> None:
        super().__init__()
        self.model, self.first, self.second, self.a, self.b = model, first, second, a, b

    def forward(self, x: Tensor) -> Tensor:
        out = self.model(x)
        return (self.a * out[:, self.first] + self.b * out[:, self.second]).unsqueeze(1)


class _Symmetrised(nn.Module):
    """``f(x) + f(x with features i and j swapped)``."""

    def __init__(self, model: nn.Module, permutation: Tensor) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("permutation", permutation)

    def forward(self, x: Tensor) -> Tensor:
        permutation: Tensor = self.permutation  # type: ignore[assignment]
        swapped = x.reshape(x.shape[0], -1)[:, permutation].reshape(x.shape)
        return self.model(x) + self.model(swapped)


def _relative(difference: Tensor, scale: Tensor) -> float:
    top = float(scale.abs().max())
    return float(difference.abs().max()) / top if top > _TINY else float(difference.abs().max())


def axiom_report(
    model: nn.Module,
    inputs: Tensor,
    target: Any,
    explain: Explain | Any,
    baseline: float = 0.0,
    twin: nn.Module | None = None,
    tolerance: float = 1e-3,
    n_features: int = 8,
    seed: int = 0,
) -> list[AxiomCheck]:
    """Measure each axiom for ``explain`` on ``model`` at ``inputs`` (module docstring).

    Parameters
    ----------
    model:
        Returns ``(N, classes)``.
    target:
        An int or one class per example.
    explain:
        An explainer that uses ``baseline`` as its reference.
    baseline:
        The reference, one number for every feature.
    twin:
        A network computing the same function as ``model`` by other means (implementation
        invariance is skipped, reported as not passed with value NaN, without one).
    tolerance:
        The largest value that passes.
    n_features:
        Features per example tried for sensitivity (a).
    seed:
        Seed of the features picked.
    """
    if not isinstance(baseline, int | float):
        raise TypeError(f"axiom_report takes one number as the reference, got {type(baseline).__name__}")
    explain = as_explainer(explain)
    modules = [m for network in (model, twin) if network is not None for m in network.modules()]
    modes = [m.training for m in modules]
    model.eval()
    if twin is not None:
        twin.eval()
    try:
        return _checks(model, inputs, target, explain, baseline, twin, tolerance, n_features, seed)
    finally:  # the caller's modules get their own modes back (train or eval, module by module)
        for module, training in zip(modules, modes):
            module.training = training


def _checks(
    model: nn.Module,
    inputs: Tensor,
    target: Any,
    explain: Explain,
    baseline: float,
    twin: nn.Module | None,
    tolerance: float,
    n_features: int,
    seed: int,
) -> list[AxiomCheck]:
    n = inputs.shape[0]
    targets = target_tensor(target, n, inputs.device)
    generator = numpy_generator(seed)
    reference = torch.full_like(inputs, float(baseline))
    phi = explain_checked(explain, model, inputs, targets)
    checks: list[AxiomCheck] = []

    # completeness
    delta = target_scores(model, inputs, targets).double() - target_scores(model, reference, targets).double()
    error = (phi.reshape(n, -1).double().sum(1) - delta).abs() / delta.abs().clamp(min=1e-6)
    value = float(error.max())
    checks.append(AxiomCheck("completeness", value <= tolerance, value, tolerance, "max |sum Phi - Δf| / |Δf|"))

    # sensitivity (a)
    flat = inputs.reshape(n, -1)
    singles, rows, columns = [], [], []
    for row in range(n):
        differing = np.flatnonzero((flat[row] != baseline).cpu().numpy())
        for column in generator.permutation(differing)[:n_features]:
            x = reference[row].reshape(-1).clone()
            x[column] = flat[row, column]
            singles.append(x.reshape(inputs.shape[1:]))
            rows.append(row)
            columns.append(int(column))
    if singles:
        batch = torch.stack(singles)
        single_targets = targets[torch.tensor(rows)]
        changed = (
            target_scores(model, batch, single_targets).double()
            - target_scores(model, torch.full_like(batch, float(baseline)), single_targets).double()
        ).abs()
        relevant = changed > 1e-6 * max(float(delta.abs().max()), 1.0)
        attributions = explain_checked(explain, model, batch, single_targets).reshape(len(batch), -1)
        at_feature = attributions[torch.arange(len(batch)), torch.tensor(columns)].abs()
        violated = relevant & (at_feature <= _TINY)
        value = float(violated.sum()) / max(int(relevant.sum()), 1)
        detail = f"{int(violated.sum())} of {int(relevant.sum())} one-feature changes that move f got zero attribution"
    else:
        value, detail = 0.0, "every feature is at the reference; nothing to test"
    checks.append(AxiomCheck("sensitivity (a)", value <= tolerance, value, tolerance, detail))

    # sensitivity (b)
    keep = torch.from_numpy((generator.random(inputs.shape[1:]) >= 0.25).astype(np.float32)).to(inputs)
    masked = _Masked(model, keep, float(baseline)).eval()
    phi_masked = explain_checked(explain, masked, inputs, targets)
    ignored = phi_masked * (1.0 - keep)
    value = _relative(ignored, phi_masked)
    checks.append(
        AxiomCheck("sensitivity (b)", value <= tolerance, value, tolerance, "max |Phi| on ignored features / max |Phi|")
    )

    # dummy (missingness)
    at_reference = inputs == baseline
    value = _relative(phi * at_reference, phi) if bool(at_reference.any()) else 0.0
    checks.append(
        AxiomCheck("dummy", value <= tolerance, value, tolerance, "max |Phi| on features at the reference / max |Phi|")
    )

    # implementation invariance
    if twin is not None:
        value = _relative(explain_checked(explain, twin, inputs, targets) - phi, phi)
        checks.append(
            AxiomCheck(
                "implementation invariance", value <= tolerance, value, tolerance, "max |Phi_twin - Phi| / max |Phi|"
            )
        )
    else:
        checks.append(AxiomCheck("implementation invariance", False, float("nan"), tolerance, "not run: no twin given"))

    # linearity
    with torch.no_grad():
        n_classes = model(inputs[:1]).reshape(1, -1).shape[1]
    first, second = int(targets[0]), (int(targets[0]) + 1) % n_classes
    a, b = 0.7, -1.3
    combined = _Combination(model, first, second, a, b).eval()
    phi_combined = explain_checked(explain, combined, inputs, 0)
    expected = a * explain_checked(explain, model, inputs, first) + b * explain_checked(explain, model, inputs, second)
    value = _relative(phi_combined - expected, expected)
    checks.append(
        AxiomCheck(
            "linearity",
            value <= tolerance,
            value,
            tolerance,
            f"Phi({a} f_{first} + {b} f_{second}) vs the same sum of Phi",
        )
    )

    # symmetry preservation
    d = flat.shape[1]
    i, j = (int(v) for v in generator.choice(d, size=2, replace=False))
    permutation = torch.arange(d)
    permutation[i], permutation[j] = j, i
    symmetric = _Symmetrised(model, permutation).eval()
    x_sym = flat.clone()
    x_sym[:, j] = x_sym[:, i]
    x_sym = x_sym.reshape(inputs.shape)
    phi_sym = explain_checked(explain, symmetric, x_sym, targets).reshape(n, -1)
    value = _relative(phi_sym[:, i] - phi_sym[:, j], phi_sym)
    checks.append(
        AxiomCheck(
            "symmetry preservation",
            value <= tolerance,
            value,
            tolerance,
            f"|Phi_{i} - Phi_{j}| / max |Phi| on f(x) + f(swap x)",
        )
    )
    return checks
