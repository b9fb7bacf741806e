"""``deltalift.explain``: several attribution methods on the same inputs, in one call, for notebooks.

    >>> result = deltalift.explain(model, "photos/", methods=["deeplift", "ig", "gradcam"],
    ...                            preprocess="torchvision")            # doctest: +SKIP
    >>> result.attributions["ig"].shape                                 # doctest: +SKIP
    (4, 3, 224, 224)
    >>> result                                                          # doctest: +SKIP
    (renders in Jupyter: each image beside its overlays, the targets and deltas)

Every method gets the same inputs, the same reference (``baselines``) and the same explained
output per example (``target``, default the predicted class); the methods are those of
:mod:`deltalift.method_catalog`.  The command ``deltalift explain`` is this function plus files.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from deltalift.explain_files import make_baseline, output_size, read_inputs, resolve_targets
from deltalift.files import load_model
from deltalift.images import Preprocess
from deltalift.method_catalog import Context, MethodOptions, MethodSpec, parse_methods
from deltalift.runtime import progress

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["Explanation", "explain"]

Tensor = torch.Tensor


@dataclass
class Explanation:
    """The attributions of several methods on one batch, and what they were computed with.

    Attributes
    ----------
    inputs:
        The explained inputs ``(N, ...)`` as the model saw them (after preprocessing).
    attributions:
        ``{method name: array}``, shaped like the inputs (Grad-CAM: ``(N, 1, H, W)``, upsampled).
    deltas:
        ``{method name: (N,)}`` convergence deltas, for the methods that have one.
    targets:
        The explained output per example ``(N,)``; ``None`` for a model with one output.
    predictions:
        The predicted class per example (arg-max output); ``None`` for a model with one output.
    names:
        One name per example (the image files' names, or ``"0"``, ``"1"``, ...).
    titles:
        ``{method name: title}``.
    settings:
        ``{method name: {setting: value}}``, including the reference where the method uses it.
    delta_meanings:
        ``{method name: what its delta measures}``.
    display:
        ``(N, H, W, C)`` images in ``[0, 1]`` to draw the overlays on, or ``None`` for inputs
        that are not images.
    info:
        Model, inputs, reference and preprocessing, for the report's header.
    """

    inputs: np.ndarray
    attributions: dict[str, np.ndarray]
    deltas: dict[str, np.ndarray]
    targets: np.ndarray | None
    predictions: np.ndarray | None
    names: list[str]
    titles: dict[str, str]
    settings: dict[str, dict[str, Any]]
    delta_meanings: dict[str, str] = field(default_factory=dict)
    display: np.ndarray | None = None
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def methods(self) -> list[str]:
        """The methods' names, in the order given."""
        return list(self.attributions)

    def max_delta(self, method: str) -> float | None:
        """``max_n |delta_n|`` of ``method``, ``None`` when it has no delta."""
        if method not in self.deltas:
            return None
        values = self.deltas[method]
        return float(np.abs(values).max()) if values.size else 0.0

    def to_html(self, path: str | os.PathLike[str] | None = None, max_examples: int = 16) -> str:
        """The self-contained HTML report (figures embedded); written to ``path`` if given."""
        from deltalift.report import render_report

        html = render_report(self, max_examples=max_examples)
        if path is not None:
            target = Path(path)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(html, encoding="utf-8")
        return html

    def _repr_html_(self) -> str:
        from deltalift.report import render_fragment

        return render_fragment(self, max_examples=8)

    def figure(self, path: str | os.PathLike[str] | None = None, max_examples: int = 8) -> Figure:
        """Each image beside its overlay per method (matplotlib; needs image-like inputs)."""
        from deltalift.plot.overlay import plot_overlays

        if self.display is None:
            raise ValueError("the inputs are not images: there is nothing to draw the overlays on")
        n = min(len(self.inputs), max_examples)
        maps = {self.titles[name]: self.attributions[name][:n] for name in self.methods}
        return plot_overlays(self.display[:n], maps, [self.example_title(i) for i in range(n)], path)

    def example_title(self, index: int) -> str:
        """``"name: target t (predicted p)"`` for example ``index``."""
        parts = [self.names[index]]
        if self.targets is not None:
            parts.append(f"target {int(self.targets[index])}")
        if self.predictions is not None:
            parts.append(f"predicted {int(self.predictions[index])}")
        return parts[0] + (": " + ", ".join(parts[1:]) if len(parts) > 1 else "")

    def __repr__(self) -> str:
        shape = tuple(self.inputs.shape)
        deltas = ", ".join(f"{m} {self.max_delta(m):.1e}" for m in self.methods if m in self.deltas)
        return f"Explanation(methods={self.methods}, inputs={shape}" + (f", max |delta|: {deltas})" if deltas else ")")


def _targets_for(model: nn.Module, inputs: Tensor, target: Any, n_outputs: int, batch_size: int) -> Tensor | None:
    """One explained output per example: ``target`` (an int, or one per example), else the prediction."""
    if target is None or isinstance(target, int):
        parts = [
            resolve_targets(model, inputs[s : s + batch_size], target, n_outputs)
            for s in range(0, len(inputs), batch_size)
        ]
        return None if parts[0] is None else torch.cat([p for p in parts if p is not None])
    given = torch.as_tensor(target).flatten().long().cpu()
    if len(given) != len(inputs):
        raise ValueError(f"got {len(given)} targets for {len(inputs)} examples")
    if n_outputs <= 1 or bool(((given < 0) | (given >= n_outputs)).any()):
        raise ValueError(f"targets must be output indices 0..{max(n_outputs, 1) - 1}, got {given.tolist()}")
    return given


def _predictions(model: nn.Module, inputs: Tensor, n_outputs: int, batch_size: int) -> Tensor | None:
    if n_outputs <= 1:
        return None
    with torch.no_grad():
        return torch.cat([model(inputs[s : s + batch_size]).argmax(1).cpu() for s in range(0, len(inputs), batch_size)])


def _reference_label(baselines: Any) -> str:
    if isinstance(baselines, str):
        return baselines
    if isinstance(baselines, (int, float)):
        return f"constant {baselines}"
    return f"tensor {tuple(getattr(baselines, 'shape', ()))}"


def explain(
    model: nn.Module | str | os.PathLike[str],
    inputs: Tensor | np.ndarray | str | os.PathLike[str],
    methods: str | Sequence[str] = ("deeplift",),
    *,
    target: int | Sequence[int] | Tensor | None = None,
    baselines: str | float | Tensor = "zero",
    preprocess: Preprocess | str = "none",
    options: MethodOptions | None = None,
    batch_size: int = 64,
    device: str = "cpu",
    show_progress: bool = False,
    **option_values: Any,
) -> Explanation:
    """Attributions of ``model`` on ``inputs`` by each of ``methods``, with the same reference and targets.

    Parameters
    ----------
    model:
        An ``nn.Module`` (explained in eval mode; its own mode is put back afterwards), or a model file as :func:`deltalift.files.load_model`
        reads (``torch.save`` module, ``.pt2``, ``.onnx``).
    inputs:
        A tensor or array ``(N, ...)``, or a path: an image, a folder of images, a ``.npy``/``.pt``
        array, or a FASTA file (one-hot ``(N, 4, L)``).
    methods:
        Names from :data:`deltalift.method_catalog.METHODS`, a list or ``"deeplift,ig,gradcam"``.
    target:
        The explained output: one index for all, one per example, or ``None`` for each
        example's predicted class (the only output of a one-output model).
    baselines:
        The reference: ``"zero"``, ``"mean"``, a number, a ``.npy``/``.pt`` file, or a tensor that
        broadcasts to the inputs.  Used by the methods that take one (DeepLIFT, IG, Occlusion).
    preprocess:
        For image paths: a :class:`deltalift.images.Preprocess` or a preset's name.
    options:
        The methods' options; or give them as keywords (``n_steps=32, layer="features.7"``).
    batch_size:
        Examples per call of a method.
    device:
        The torch device.
    show_progress:
        A progress bar over the methods' batches.

    Returns
    -------
    Explanation
        The arrays, and an object that renders as a report in Jupyter.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if options is not None and option_values:
        raise TypeError("give the options either as options=MethodOptions(...) or as keywords, not both")
    opts = options or MethodOptions(**option_values)
    specs = parse_methods(methods)
    if isinstance(model, (str, os.PathLike)):
        model = load_model(Path(model), device)
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module or a model file, got {type(model).__name__}")
    modes = [(module, module.training) for module in model.modules()]
    try:
        model.eval()  # the methods explain the model in eval mode; every module's own mode is put back below
    except NotImplementedError:
        pass  # an exported program's module (.pt2) keeps the mode it was exported in
    try:
        return _explain(model, inputs, specs, target, baselines, preprocess, opts, batch_size, device, show_progress)
    finally:
        for module, training in modes:
            module.training = training


def _explain(
    model: nn.Module,
    inputs: Tensor | np.ndarray | str | os.PathLike[str],
    specs: list[MethodSpec],
    target: int | Sequence[int] | Tensor | None,
    baselines: str | float | Tensor,
    preprocess: Preprocess | str,
    opts: MethodOptions,
    batch_size: int,
    device: str,
    show_progress: bool,
) -> Explanation:
    """:func:`explain` on a model in eval mode."""
    read = read_inputs(
        inputs if isinstance(inputs, (torch.Tensor, np.ndarray)) else Path(inputs), model, preprocess, device
    )
    x = read.inputs
    reference = make_baseline(baselines, x) if isinstance(baselines, str) else baselines
    if isinstance(reference, torch.Tensor):
        reference = reference.to(device=x.device, dtype=x.dtype)
    n_outputs = output_size(model, x[:batch_size])
    targets = _targets_for(model, x, target, n_outputs, batch_size)
    context = Context(model, x, opts, batch_size, reference=reference)
    attributions: dict[str, np.ndarray] = {}
    deltas: dict[str, np.ndarray] = {}
    settings: dict[str, dict[str, Any]] = {}
    starts = range(0, len(x), batch_size)
    for spec in specs:
        attribute, method_settings = spec.build(context)
        if spec.uses_baseline:
            method_settings = {"reference": _reference_label(baselines), **method_settings}
        settings[spec.name] = method_settings
        parts, delta_parts = [], []
        bar = progress(starts, show_progress, desc=spec.name, unit="batch")
        for start in bar:
            batch = x[start : start + batch_size]
            batch_target = None if targets is None else targets[start : start + batch_size].to(x.device)
            batch_reference = reference
            if isinstance(reference, torch.Tensor) and reference.ndim == x.ndim and len(reference) == len(x) > 1:
                batch_reference = reference[start : start + batch_size]  # one reference per example
            values, delta = attribute(batch, batch_reference, batch_target)
            parts.append(values.detach().cpu())
            if delta is not None:
                delta_parts.append(delta.detach().cpu().reshape(-1))
        attributions[spec.name] = torch.cat(parts).numpy()
        if delta_parts:
            deltas[spec.name] = torch.cat(delta_parts).numpy()
    return Explanation(
        inputs=x.detach().cpu().numpy(),
        attributions=attributions,
        deltas=deltas,
        targets=None if targets is None else targets.numpy(),
        predictions=None if (p := _predictions(model, x, n_outputs, batch_size)) is None else p.numpy(),
        names=read.names,
        titles={spec.name: spec.title for spec in specs},
        settings=settings,
        delta_meanings={spec.name: spec.delta for spec in specs if spec.delta},
        display=read.display,
        info={
            "model": type(model).__name__,
            "inputs": read.source,
            "shape": tuple(x.shape),
            "reference": _reference_label(baselines),
            "preprocessing": read.preprocessing,
        },
    )
