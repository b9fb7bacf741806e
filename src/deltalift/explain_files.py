"""``deltalift explain``: DeepLIFT attributions of a saved model for every example of an array file.

:func:`explain_saved_model` loads a full pickled ``nn.Module`` (``torch.save(model, path)``) or
an exported program (``torch.export.save``, ``.pt2``) and an inputs file (``.npy`` or ``.pt``) with
:mod:`deltalift.files`, explains each example's target output against one reference with
:class:`~deltalift.DeepLift`, ``batch_size`` examples at a time, and writes the attributions as
``.npy`` (plus a figure when the inputs are images).

For each example ``x`` with reference ``x0`` and explained output ``t``, DeepLIFT's contributions
``C`` satisfy summation-to-delta, ``sum_i C_i = t(x) - t(x0)`` (Shrikumar, Greenside & Kundaje
2017, section 3.1); ``deltas.npy`` holds ``sum_i C_i - (t(x) - t(x0))`` per example, about 0.

The reference comes from :func:`make_baseline`, built with :mod:`deltalift.references` where a
generator exists for it (section 3.3 of the paper, "Defining the reference", discusses the choice).

References
----------
Shrikumar A, Greenside P, Kundaje A (2017). Learning Important Features Through Propagating
Activation Differences. ICML.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from deltalift import references
from deltalift.files import InputFileError, _first_line, load_array, load_inputs, load_model
from deltalift.methods import DeepLift
from deltalift.runtime import DEFAULT_OUT, Echo, progress

__all__ = [
    "ExplainResult",
    "attribute_in_batches",
    "explain_saved_model",
    "looks_like_images",
    "make_baseline",
    "output_size",
    "resolve_targets",
]

Tensor = torch.Tensor

#: The ``--baseline`` words for the all-zero reference.
ZERO_SPECS = ("zero", "zeros", "0")
#: Suffixes of a ``--baseline`` that names a reference file.
FILE_SUFFIXES = (".npy", ".pt", ".pth")


def make_baseline(spec: str, inputs: Tensor) -> float | Tensor:
    """The reference of ``deltalift explain --baseline SPEC`` for a batch of inputs.

    Parameters
    ----------
    spec:
        Case and surrounding spaces are ignored.

        - ``"zero"``, ``"zeros"`` or ``"0"``: the all-zero reference ``x0 = 0``
          (:func:`deltalift.references.zeros`), returned as the number ``0.0``.
        - ``"mean"``: the mean input ``x0 = 1/N sum_n x_n``, shape ``(1, ...)``
          (:func:`deltalift.references.dataset_mean` of ``inputs``).
        - a file ending in ``.npy``, ``.pt`` or ``.pth``: the array it holds (see
          :func:`deltalift.files.load_array`), in the dtype and on the device of ``inputs``.
        - any other finite number ``c``: the constant reference ``x0 = c``
          (:func:`deltalift.references.constant`), returned as the number.
    inputs:
        The inputs ``(N, ...)`` to be explained.

    Returns
    -------
    float or Tensor
        A number, which DeepLIFT expands to the constant reference ``(1, ...)`` that
        :func:`deltalift.references.constant` builds, or a tensor that broadcasts to ``inputs``.

    Raises
    ------
    InputFileError
        ``spec`` is none of the above, is not finite, or names a file that cannot be read.
    """
    name = spec.strip().lower()
    if name in ZERO_SPECS:
        return 0.0
    if name == "mean":
        return references.dataset_mean(inputs)
    if name.endswith(FILE_SUFFIXES):
        return load_array(spec, "baseline").to(device=inputs.device, dtype=inputs.dtype)
    try:
        value = float(name)
    except ValueError:
        raise InputFileError(f"--baseline must be 'zero', 'mean', a number or a .npy/.pt file, got {spec!r}") from None
    if not np.isfinite(value):
        raise InputFileError(f"--baseline must be finite, got {spec!r}")
    return value


def output_size(model: nn.Module, batch: Tensor) -> int:
    """Outputs per example of ``model`` (0 for an output of shape ``(N,)``), from a forward on ``batch``.

    Parameters
    ----------
    model:
        The model, in eval mode.
    batch:
        A few inputs ``(B, ...)``, run through ``model`` without gradients.

    Returns
    -------
    int
        ``M`` for outputs ``(B, M)``, ``0`` for outputs ``(B,)``.

    Raises
    ------
    InputFileError
        The model fails on ``batch`` (with a hint for an exported program's fixed batch size), or
        its output is not one tensor of shape ``(B,)`` or ``(B, M)``.
    """
    with torch.no_grad():
        try:
            output = model(batch)
        except Exception as exc:
            hint = ""
            if "Guard failed" in str(exc):
                hint = (
                    " (an exported program only takes the shapes it was exported for: "
                    "export it with a dynamic batch, or pass --batch-size)"
                )
            raise InputFileError(
                f"the model fails on inputs of shape {tuple(batch.shape)}: {_first_line(exc)}{hint}"
            ) from exc
    if not isinstance(output, torch.Tensor) or output.ndim > 2:
        shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
        raise InputFileError(f"the model's output is {shape}; deltalift explains outputs of shape (N, outputs) or (N,)")
    return 0 if output.ndim == 1 else int(output.shape[1])


def resolve_targets(model: nn.Module, batch: Tensor, target: int | None, n_outputs: int) -> Tensor | None:
    """The explained output per example: ``target``, else the predicted class (None for one output).

    Parameters
    ----------
    model:
        The model; run on ``batch`` only when ``target`` is ``None`` and it has several outputs.
    batch:
        Inputs ``(B, ...)``.
    target:
        The output index for every example, or ``None`` for each example's arg-max output.
    n_outputs:
        Outputs per example, as :func:`output_size` gives (``0`` for outputs ``(B,)``).

    Returns
    -------
    Tensor or None
        ``(B,)`` long output indices on the CPU, or ``None`` for a model with one output.

    Raises
    ------
    InputFileError
        ``target`` is not in ``0 .. max(n_outputs, 1) - 1``.
    """
    if target is not None:
        if not 0 <= target < max(n_outputs, 1):
            valid = f"0..{n_outputs - 1}" if n_outputs > 1 else "0"
            raise InputFileError(
                f"--target {target} is out of range: the model has {max(n_outputs, 1)} outputs ({valid})"
            )
        return None if n_outputs <= 1 else torch.full((len(batch),), target, dtype=torch.long)
    if n_outputs <= 1:
        return None
    with torch.no_grad():
        return model(batch).argmax(dim=1).cpu()


@dataclass
class ExplainResult:
    """What :func:`explain_saved_model` computed and wrote.

    Attributes
    ----------
    attributions:
        DeepLIFT contributions, shaped like the inputs.
    targets:
        The explained output index per example, ``(N,)``; ``None`` for a model with one output.
    deltas:
        Per example, ``sum(attributions) - (t(x) - t(x0))``, ``(N,)``: about 0.
    attributions_path:
        Where ``attributions.npy`` was written.
    figure_path:
        Where the figure was written, or ``None`` when no figure was drawn.
    """

    attributions: np.ndarray
    targets: np.ndarray | None
    deltas: np.ndarray
    attributions_path: Path
    figure_path: Path | None

    @property
    def max_delta(self) -> float:
        """``max_n |deltas[n]|``, 0 for no examples."""
        return float(np.abs(self.deltas).max()) if self.deltas.size else 0.0


def attribute_in_batches(
    model: nn.Module,
    inputs: Tensor,
    baseline: float | Tensor,
    target: int | None,
    batch_size: int,
    show_progress: bool = True,
) -> tuple[Tensor, Tensor | None, Tensor]:
    """DeepLIFT attributions, targets and convergence deltas of ``inputs``, ``batch_size`` at a time.

    Parameters
    ----------
    model:
        The model, in eval mode.
    inputs:
        ``(N, ...)``.
    baseline:
        A number, or a tensor that DeepLIFT broadcasts to every batch (e.g. a shared ``(1, ...)``).
    target:
        As :func:`resolve_targets`.
    batch_size:
        Examples per :meth:`deltalift.DeepLift.attribute` call.
    show_progress:
        Show a progress bar when there is more than one batch.

    Returns
    -------
    tuple
        Attributions shaped like ``inputs``, targets ``(N,)`` (``None`` for one output) and
        convergence deltas ``(N,)``, all on the CPU.
    """
    n_outputs = output_size(model, inputs[:batch_size])
    explainer = DeepLift(model)
    attributions, targets, deltas = [], [], []
    starts = range(0, len(inputs), batch_size)
    for start in progress(starts, show_progress and len(starts) > 1, desc="explaining", unit="batch"):
        batch = inputs[start : start + batch_size]
        batch_targets = resolve_targets(model, batch, target, n_outputs)
        attribution, delta = explainer.attribute(
            batch, baselines=baseline, target=batch_targets, return_convergence_delta=True
        )
        attributions.append(attribution.detach().cpu())
        deltas.append(delta.detach().cpu())
        if batch_targets is not None:
            targets.append(batch_targets)
    return torch.cat(attributions), torch.cat(targets) if targets else None, torch.cat(deltas)


def looks_like_images(shape: Sequence[int]) -> bool:
    """Whether a batch shape is images: ``(N, H, W)`` or ``(N, C, H, W)`` with C 1 or 3, sides >= 4, aspect <= 4.

    Parameters
    ----------
    shape:
        The shape of a batch, batch axis first.

    Returns
    -------
    bool
        ``True`` when ``min(H, W) >= 4`` and ``max(H, W) <= 4 min(H, W)``; a long thin shape such
        as one-hot DNA ``(N, 4, 1000)`` is not an image.
    """
    if len(shape) == 4 and shape[1] in (1, 3):
        height, width = shape[2], shape[3]
    elif len(shape) == 3:
        height, width = shape[1], shape[2]
    else:
        return False
    return min(height, width) >= 4 and max(height, width) <= 4 * min(height, width)


def explain_saved_model(
    model_path: str | Path,
    inputs_path: str | Path,
    out_dir: str | Path = DEFAULT_OUT,
    target: int | None = None,
    baseline: str = "zero",
    batch_size: int = 64,
    max_plotted: int = 8,
    device: str = "cpu",
    show_progress: bool = True,
    echo: Echo = print,
) -> ExplainResult:
    """Explain a saved model on an inputs file; write ``attributions.npy`` (and a figure for images).

    Parameters
    ----------
    model_path:
        ``torch.save(model, path)`` of an ``nn.Module``, or a ``torch.export.save`` ``.pt2`` file.
    inputs_path:
        ``.npy`` or ``.pt`` array whose first axis is the batch.
    out_dir:
        Folder for ``attributions.npy`` (shaped like the inputs), ``deltas.npy`` (per example
        ``sum(attributions) - (t(x) - t(x0))``), ``targets.npy`` and ``attributions.png``.
    target:
        Output index to explain for every example; default: each example's predicted class
        (arg-max output), or the single output of a one-output model.
    baseline:
        ``"zero"``, ``"mean"`` (the mean input), a number, or a ``.npy``/``.pt`` reference file.
    batch_size:
        Examples per DeepLIFT call.
    max_plotted:
        At most this many examples are drawn in the figure.
    device:
        The torch device to compute on.
    show_progress:
        Show a progress bar over the batches.
    echo:
        Called with each line of the report.

    Returns
    -------
    ExplainResult
        The arrays written and their paths.
    """
    if batch_size < 1:
        raise ValueError(f"batch size must be at least 1, got {batch_size}")
    model = load_model(model_path, device)
    inputs = load_inputs(inputs_path, model, device)
    reference = make_baseline(baseline, inputs)
    echo(f"explaining {type(model).__name__} on {len(inputs)} inputs of shape {tuple(inputs.shape[1:])}")
    attributions, targets, deltas = attribute_in_batches(model, inputs, reference, target, batch_size, show_progress)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    attributions_path = out / "attributions.npy"
    np.save(attributions_path, attributions.numpy())
    np.save(out / "deltas.npy", deltas.numpy())
    if targets is not None:
        np.save(out / "targets.npy", targets.numpy())
    figure_path = _maybe_figure(inputs, attributions, targets, out, max_plotted, baseline, echo)
    result = ExplainResult(
        attributions.numpy(),
        None if targets is None else targets.numpy(),
        deltas.numpy(),
        attributions_path,
        figure_path,
    )
    echo(f"max |convergence delta| {result.max_delta:.2e} (sum of attributions minus t(x) - t(x0))")
    echo(f"wrote {attributions_path}" + (f" and {figure_path}" if figure_path else ""))
    return result


def _maybe_figure(
    inputs: Tensor,
    attributions: Tensor,
    targets: Tensor | None,
    out: Path,
    max_plotted: int,
    baseline: str,
    echo: Echo,
) -> Path | None:
    """Draw the first ``max_plotted`` examples when the inputs are images; skip (with a note) without matplotlib."""
    if not looks_like_images(tuple(inputs.shape)) or max_plotted < 1:
        return None
    from deltalift.plot import plot_image_attributions

    n = min(len(inputs), max_plotted)
    titles = [f"input {i}" for i in range(n)]
    map_titles = [[f"DeepLIFT, output {int(targets[i])}" if targets is not None else "DeepLIFT"] for i in range(n)]
    path = out / "attributions.png"
    try:
        plot_image_attributions(
            inputs[:n].cpu(),
            [attributions[:n]],
            titles,
            path,
            attribution_titles=map_titles,
            title=f"DeepLIFT vs. reference '{baseline}':\nred raises the output, blue lowers it",
        )
    except ImportError as exc:
        echo(f"no figure: {exc}")
        return None
    return path
