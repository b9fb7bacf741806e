"""``deltalift explain``: attributions of a saved model by one or several methods, for array files,
image folders and FASTA files; arrays, an overlay figure and an HTML report written to a folder.

:func:`explain_saved_model` loads a full pickled ``nn.Module`` (``torch.save(model, path)``), an
exported program (``torch.export.save``, ``.pt2``) or an ONNX file (via onnx2torch) with
:func:`deltalift.files.load_model`; reads the inputs with :func:`read_inputs` (``.npy``/``.pt``
arrays, PNG/JPEG images and folders of them through :mod:`deltalift.images`, FASTA files
one-hot encoded); runs every requested method of :mod:`deltalift.method_catalog` on the same
inputs, reference and targets (:func:`deltalift.notebook.explain`), ``batch_size`` examples at
a time; and writes the arrays (:func:`array_names`), the overlay figure and ``report.html``.

For each example ``x`` with reference ``x0`` and explained output ``t``, DeepLIFT's contributions
``C`` satisfy summation-to-delta, ``sum_i C_i = t(x) - t(x0)`` (Shrikumar, Greenside & Kundaje
2017, section 3.1); ``deltas.npy`` holds ``sum_i C_i - (t(x) - t(x0))`` per example, about 0.
Integrated Gradients' delta is the same sum (its quadrature error, Sundararajan et al. 2017,
section 3, "completeness"); LRP's is ``sum_i R_i - t(x)`` (conservation, Bach et al. 2015).

The reference comes from :func:`make_baseline`, built with :mod:`deltalift.references` where a
generator exists for it (section 3.3 of the paper, "Defining the reference", discusses the choice).

References
----------
Shrikumar A, Greenside P, Kundaje A (2017). Learning Important Features Through Propagating
Activation Differences. ICML.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from deltalift import references
from deltalift.files import (
    InputFileError,
    _first_line,
    _model_dtype,
    _require_file,
    load_array,
    load_inputs,
    load_model,
)
from deltalift.images import IMAGE_SUFFIXES, PRESETS, Preprocess, load_images, preset
from deltalift.method_catalog import METHODS, MethodOptions, parse_methods
from deltalift.plan import RULE_CHOICES
from deltalift.runtime import DEFAULT_OUT, Echo

if TYPE_CHECKING:
    from deltalift.notebook import Explanation

__all__ = [
    "EXPLAIN_EPILOG",
    "ExplainResult",
    "ReadInputs",
    "add_explain_options",
    "array_names",
    "explain_saved_model",
    "looks_like_images",
    "make_baseline",
    "output_size",
    "read_inputs",
    "resolve_targets",
    "run_explain_command",
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


#: Suffixes of FASTA files (one-hot encoded as ``(N, 4, L)``).
FASTA_SUFFIXES = (".fa", ".fasta", ".fna")
#: Suffixes of array files.
ARRAY_SUFFIXES = (".npy", ".pt", ".pth")


@dataclass
class ReadInputs:
    """Inputs read for explaining, with what the report shows of them.

    Attributes
    ----------
    inputs:
        ``(N, ...)`` on the device, in the model's floating dtype.
    display:
        ``(N, H, W, C)`` images in ``[0, 1]`` to draw on, or ``None`` when the inputs are not images.
    names:
        One name per example: the image files' names, the FASTA records' names, else ``"0"``, ``"1"``...
    source:
        Where they came from (a path, or ``"tensor"``).
    preprocessing:
        The image preprocessing's settings, or ``None``.
    """

    inputs: Tensor
    display: np.ndarray | None
    names: list[str]
    source: str
    preprocessing: dict[str, Any] | None = None


def display_images(inputs: Tensor) -> np.ndarray | None:
    """Channels-last ``(N, H, W, C)`` copies scaled to ``[0, 1]`` per image, when :func:`looks_like_images`."""
    if not looks_like_images(tuple(inputs.shape)):
        return None
    array = inputs.detach().cpu().double().numpy()
    array = array[..., None] if array.ndim == 3 else np.moveaxis(array, 1, -1)
    low = array.min(axis=(1, 2, 3), keepdims=True)
    high = array.max(axis=(1, 2, 3), keepdims=True)
    return (array - low) / np.where(high > low, high - low, 1.0)


def read_inputs(
    inputs: Tensor | np.ndarray | str | Path,
    model: nn.Module,
    preprocess: Preprocess | str = "none",
    device: str = "cpu",
) -> ReadInputs:
    """The inputs of ``deltalift explain`` and :func:`deltalift.explain`, from a tensor or a path.

    Parameters
    ----------
    inputs:
        A tensor or array ``(N, ...)``; or a path: a folder of PNG/JPEG images or one image
        (:func:`deltalift.images.load_images` with ``preprocess``), a FASTA file (``.fa``,
        ``.fasta``, ``.fna``; :func:`deltalift.genomics.one_hot_encode_fasta`, ``(N, 4, L)``), or
        a ``.npy``/``.pt`` array (:func:`deltalift.files.load_inputs`).
    model:
        The model; its floating dtype is the inputs' dtype.
    preprocess:
        For images: a :class:`~deltalift.images.Preprocess` or a preset's name.
    device:
        The torch device.

    Raises
    ------
    InputFileError
        A missing path, an unknown suffix, or a file that cannot be read (the reason named).
    """
    dtype = _model_dtype(model)
    if isinstance(inputs, (torch.Tensor, np.ndarray)):
        tensor = torch.as_tensor(inputs)
        if tensor.ndim == 0:
            raise InputFileError("inputs need a leading batch axis, shape (N, ...); got a single number")
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise InputFileError("the inputs contain NaN or infinite values")
        tensor = tensor.to(device=device, dtype=dtype)
        return ReadInputs(tensor, display_images(tensor), [str(i) for i in range(len(tensor))], "tensor")
    path = Path(inputs)
    suffix = path.suffix.lower()
    if path.is_dir() or suffix in IMAGE_SUFFIXES:
        try:
            images = load_images(path, preprocess)
        except ValueError as exc:
            raise InputFileError(str(exc)) from exc
        tensor = images.inputs.to(device=device, dtype=dtype)
        return ReadInputs(tensor, images.display, images.names, str(path), images.preprocess.settings())
    if suffix in FASTA_SUFFIXES:
        from deltalift.genomics import one_hot_encode_fasta
        from deltalift.genomics.one_hot import read_fasta

        _require_file(path, "inputs")
        try:
            tensor = one_hot_encode_fasta(path, dtype=dtype).to(device)
            names = [name for name, _ in read_fasta(path)]
        except ValueError as exc:
            raise InputFileError(f"{path}: {exc}") from exc
        return ReadInputs(tensor, None, names, str(path))
    if suffix not in ARRAY_SUFFIXES and not path.is_dir():
        _require_file(path, "inputs")
        raise InputFileError(
            f"inputs must be a .npy or .pt file, an image ({'/'.join(IMAGE_SUFFIXES)}), a folder of images "
            f"or a FASTA file ({'/'.join(FASTA_SUFFIXES)}), got {path.name}"
        )
    tensor = load_inputs(path, model, device)
    return ReadInputs(tensor, display_images(tensor), [str(i) for i in range(len(tensor))], str(path))


@dataclass
class ExplainResult:
    """What :func:`explain_saved_model` computed and wrote.

    Attributes
    ----------
    explanation:
        Every method's arrays (:class:`deltalift.notebook.Explanation`).
    attributions:
        The first method's attributions, shaped like the inputs.
    targets:
        The explained output index per example, ``(N,)``; ``None`` for a model with one output.
    deltas:
        The first method's convergence deltas ``(N,)`` (empty for a method without one).
    attributions_path:
        Where the first method's attributions were written.
    figure_path:
        Where the overlay figure was written, or ``None`` when no figure was drawn.
    report_path:
        Where ``report.html`` was written.
    paths:
        ``{method name: attributions file}``.
    """

    explanation: Explanation
    attributions: np.ndarray
    targets: np.ndarray | None
    deltas: np.ndarray
    attributions_path: Path
    figure_path: Path | None
    report_path: Path | None
    paths: dict[str, Path]

    @property
    def max_delta(self) -> float:
        """``max_n |deltas[n]|`` of the first method, 0 for no deltas."""
        return float(np.abs(self.deltas).max()) if self.deltas.size else 0.0


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


def array_names(methods: Sequence[str]) -> dict[str, tuple[str, str]]:
    """``{method: (attributions file, deltas file)}``: ``attributions.npy``/``deltas.npy`` for one
    method (the names of a single-method run, as before), ``attributions-<method>.npy`` and
    ``deltas-<method>.npy`` for several."""
    if len(methods) == 1:
        return {methods[0]: ("attributions.npy", "deltas.npy")}
    return {m: (f"attributions-{m}.npy", f"deltas-{m}.npy") for m in methods}


def write_arrays(explanation: Explanation, out: Path) -> dict[str, Path]:
    """Write each method's attributions and deltas, and ``targets.npy``, to ``out``; the attributions' paths."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for method, (attributions_name, deltas_name) in array_names(explanation.methods).items():
        paths[method] = out / attributions_name
        np.save(paths[method], explanation.attributions[method])
        if method in explanation.deltas:
            np.save(out / deltas_name, explanation.deltas[method])
    if explanation.targets is not None:
        np.save(out / "targets.npy", explanation.targets)
    return paths


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
    methods: str | Sequence[str] = ("deeplift",),
    preprocess: Preprocess | str = "none",
    options: MethodOptions | None = None,
    report: bool = True,
) -> ExplainResult:
    """Explain a saved model on an inputs file or image folder with one or several methods; write the results.

    Parameters
    ----------
    model_path:
        ``torch.save(model, path)`` of an ``nn.Module``, a ``torch.export.save`` ``.pt2`` file, or
        an ``.onnx`` file (converted with onnx2torch, ``deltalift[onnx]``).
    inputs_path:
        ``.npy`` or ``.pt`` array whose first axis is the batch, a PNG/JPEG image or a folder of
        them, or a FASTA file (see :func:`read_inputs`).
    out_dir:
        Folder for the arrays (:func:`array_names`: ``attributions.npy`` and ``deltas.npy`` for
        one method, ``attributions-<method>.npy`` and ``deltas-<method>.npy`` for several),
        ``targets.npy``, the overlay figure ``attributions.png`` (image inputs) and ``report.html``.
    target:
        Output index to explain for every example; default: each example's predicted class
        (arg-max output), or the single output of a one-output model.
    baseline:
        ``"zero"``, ``"mean"`` (the mean input), a number, or a ``.npy``/``.pt`` reference file.
    batch_size:
        Examples per method call.
    max_plotted:
        At most this many examples are drawn in the figure and the report (0: neither figure nor
        panels).
    device:
        The torch device to compute on.
    show_progress:
        Show a progress bar over each method's batches.
    echo:
        Called with each line of the report.
    methods:
        Names of :data:`deltalift.method_catalog.METHODS` (``"deeplift,ig,gradcam"`` or a list).
    preprocess:
        For images: a :class:`deltalift.images.Preprocess` or a preset's name.
    options:
        The methods' options (:class:`deltalift.method_catalog.MethodOptions`).
    report:
        Write ``report.html``.

    Returns
    -------
    ExplainResult
        The arrays written and their paths.
    """
    from deltalift.notebook import explain

    if batch_size < 1:
        raise ValueError(f"batch size must be at least 1, got {batch_size}")
    specs = parse_methods(methods)
    model = load_model(model_path, device)
    explanation = explain(
        model,
        inputs_path,
        [spec.name for spec in specs],
        target=target,
        baselines=baseline,
        preprocess=preprocess,
        options=options,
        batch_size=batch_size,
        device=device,
        show_progress=show_progress,
    )
    explanation.info["model"] = f"{Path(model_path).name} ({type(model).__name__})"
    shape = tuple(explanation.inputs.shape)
    echo(
        f"explained {type(model).__name__} on {shape[0]} inputs of shape {shape[1:]} with {', '.join(explanation.methods)}"
    )
    out = Path(out_dir)
    paths = write_arrays(explanation, out)
    figure_path = _maybe_figure(explanation, out, max_plotted, echo)
    report_path = None
    if report:
        report_path = out / "report.html"
        explanation.to_html(report_path, max_examples=max(max_plotted, 0))
    first = explanation.methods[0]
    for method in explanation.methods:
        largest = explanation.max_delta(method)
        if largest is not None:
            meaning = explanation.delta_meanings.get(method, "")
            echo(f"{method}: max |convergence delta| {largest:.2e} ({meaning})")
    written = [str(out / "attributions-*.npy")] if len(paths) > 1 else [str(paths[first])]
    extras = [str(p) for p in (figure_path, report_path) if p is not None]
    echo(f"wrote {', '.join(written + extras)}")
    return ExplainResult(
        explanation,
        explanation.attributions[first],
        explanation.targets,
        explanation.deltas.get(first, np.zeros(0)),
        paths[first],
        figure_path,
        report_path,
        paths,
    )


def _maybe_figure(explanation: Explanation, out: Path, max_plotted: int, echo: Echo) -> Path | None:
    """The overlay figure of the first ``max_plotted`` examples when the inputs are images; skipped
    (with a note) without matplotlib."""
    if explanation.display is None or max_plotted < 1:
        return None
    path = out / "attributions.png"
    try:
        explanation.figure(path, max_examples=max_plotted)
    except ImportError as exc:
        echo(f"no figure: {exc}")
        return None
    return path


EXPLAIN_EPILOG = """The model file is a whole module saved with torch.save(model, path) -- loading it runs
code from the file, so load only files you trust; its class must be importable -- a program
saved with torch.export.save (.pt2), or an ONNX file (.onnx, converted with onnx2torch:
pip install 'deltalift[onnx]'). TorchScript and bare state dicts cannot be explained.
Inputs: a .npy/.pt array (batch first), a PNG/JPEG image or a folder of them (--preprocess),
or a FASTA file (one-hot, (N, 4, L)).
Methods (--method, several with commas, all on the same inputs, reference and targets):
  {methods}
Writes to --out: for one method attributions.npy (shaped like the inputs) and deltas.npy (per
example, e.g. sum of attributions minus t(x) - t(x0), ~0 for exact DeepLIFT); for several
attributions-METHOD.npy and deltas-METHOD.npy (methods with a delta); targets.npy;
attributions.png (heatmaps over the images, side by side) when the inputs are images; and
report.html (self-contained: figures, predicted class, target, deltas, each method's settings).
examples:
  deltalift explain --model model.pt --inputs photos/ --preprocess torchvision --method deeplift,ig,gradcam
  deltalift explain --model model.onnx --inputs x.npy --method lrp-epsilon-plus --target 3""".replace(
    "{methods}", "\n  ".join(", ".join(list(METHODS)[i : i + 6]) for i in range(0, len(METHODS), 6))
)


def add_explain_options(parser: argparse.ArgumentParser, positive_int: Callable[[str], int]) -> None:
    """The options of ``deltalift explain`` after ``--model`` and ``--inputs`` (``cli.py`` adds those)."""
    parser.add_argument(
        "--method",
        default="deeplift",
        metavar="NAMES",
        help="method(s), comma-separated (default: deeplift); see below",
    )
    parser.add_argument(
        "--target", type=int, default=None, metavar="INT", help="output index to explain (default: the predicted class)"
    )
    parser.add_argument(
        "--baseline",
        default="zero",
        metavar="REF",
        help="reference input: zero, mean (the mean input), a number, or a .npy/.pt file (default: zero)",
    )
    parser.add_argument(
        "--preprocess",
        default="none",
        choices=sorted(PRESETS),
        help="image preprocessing preset: none ([0, 1] pixels), torchvision (resize 256, crop 224, ImageNet "
        "mean/std), timm (resolve_data_config's defaults: resize 256, crop 224, bicubic) (default: none)",
    )
    parser.add_argument("--resize", type=positive_int, default=None, metavar="PX", help="shorter side after resizing")
    parser.add_argument("--crop", type=positive_int, default=None, metavar="PX", help="centre crop side")
    parser.add_argument("--mean", type=_floats, default=None, metavar="M[,M,M]", help="per-channel mean")
    parser.add_argument("--std", type=_floats, default=None, metavar="S[,S,S]", help="per-channel std")
    parser.add_argument("--grey", action="store_true", help="read images as one grey channel")
    defaults = MethodOptions()
    parser.add_argument(
        "--rule", default=defaults.rule, choices=RULE_CHOICES, help="DeepLIFT's rule (default: rescale)"
    )
    parser.add_argument("--n-steps", type=positive_int, default=defaults.n_steps, metavar="N", help="IG steps (50)")
    parser.add_argument(
        "--nt-samples", type=positive_int, default=defaults.nt_samples, metavar="N", help="noise samples (10)"
    )
    parser.add_argument(
        "--stdevs", type=float, default=None, metavar="S", help="noise std (default: 0.15 x each input's range)"
    )
    parser.add_argument(
        "--layer", default=None, metavar="PATH", help="Grad-CAM layer (default: deepest convolution run)"
    )
    parser.add_argument("--window", type=positive_int, default=defaults.window, metavar="PX", help="occlusion window")
    parser.add_argument("--stride", type=positive_int, default=None, metavar="PX", help="occlusion stride (window)")
    parser.add_argument(
        "--shap-references",
        type=positive_int,
        default=defaults.shap_references,
        metavar="K",
        help="SHAP background: K noisy copies of the reference (8); a --baseline file of K rows is used as is",
    )
    parser.add_argument("--seed", type=int, default=defaults.seed, help="seed of the random draws (default: 0)")
    parser.add_argument(
        "--batch-size", type=positive_int, default=64, metavar="N", help="examples per batch (default: 64)"
    )
    parser.add_argument("--device", default="cpu", help="torch device to compute on (default: cpu)")
    parser.add_argument(
        "--max-plotted",
        type=int,
        default=8,
        metavar="N",
        help="examples drawn in the figure and report (default: 8; 0: none)",
    )
    parser.add_argument("--no-report", action="store_true", help="do not write report.html")


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers separated by commas, got {text!r}") from None


def preprocess_from_args(args: argparse.Namespace) -> Preprocess:
    """The preset of ``--preprocess`` with ``--resize``, ``--crop``, ``--mean``, ``--std``, ``--grey`` applied."""
    steps = preset(args.preprocess)
    changes: dict[str, Any] = {}
    if args.resize is not None:
        changes["resize"] = args.resize
    if args.crop is not None:
        changes["crop"] = args.crop
    if args.grey:
        changes["channels"] = 1
        if args.mean is None and len(steps.mean) == 3:
            changes["mean"] = (sum(steps.mean) / 3,)
            changes["std"] = (sum(steps.std) / 3,)
    if args.mean is not None:
        changes["mean"] = args.mean
    if args.std is not None:
        changes["std"] = args.std
    return steps.replace(**changes) if changes else steps


def run_explain_command(args: argparse.Namespace) -> ExplainResult:
    """``deltalift explain`` with the parsed command line ``args``."""
    options = MethodOptions(
        rule=args.rule,
        n_steps=args.n_steps,
        nt_samples=args.nt_samples,
        stdevs=args.stdevs,
        layer=args.layer,
        window=args.window,
        stride=args.stride,
        shap_references=args.shap_references,
        seed=args.seed,
    )
    return explain_saved_model(
        args.model,
        args.inputs,
        args.out,
        target=args.target,
        baseline=args.baseline,
        batch_size=args.batch_size,
        max_plotted=args.max_plotted,
        device=args.device,
        show_progress=not args.no_progress,
        methods=args.method,
        preprocess=preprocess_from_args(args),
        options=options,
        report=not args.no_report,
    )
