"""The command line's jobs: a self-contained demo, and explaining a saved model on an inputs file.

The demo trains a small CNN on scikit-learn's bundled 8x8 handwritten digits (no download),
explains a few test digits with DeepLIFT against an all-zero (blank background) reference, and
writes a figure with each digit beside its attribution map for the predicted class and for the
runner-up class.  It needs the ``demo`` extra: ``pip install 'deltalift[demo]'``.

:func:`explain_saved_model` loads a full pickled ``nn.Module`` (``torch.save(model, path)``) or
an exported program (``torch.export.save``, ``.pt2``) and an inputs file (``.npy`` or ``.pt``),
and writes the DeepLIFT attributions as ``.npy`` (plus a figure when the inputs are images).
"""

from __future__ import annotations

import contextlib
import time
import zipfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from torch import nn

from deltalift.errors import DeltaliftError
from deltalift.methods import DeepLift

Tensor = torch.Tensor
Echo = Callable[[str], None]
T = TypeVar("T")

DEFAULT_OUT = Path("deltalift-output")
MISSING_DEMO_EXTRA = (
    "the demo needs scikit-learn and tqdm, which are not installed. Install them with: pip install 'deltalift[demo]'"
)


class InputFileError(DeltaliftError, ValueError):
    """A model, inputs or baseline file that cannot be used (missing, unreadable, wrong contents)."""


# ---------------------------------------------------------------------------------------------
# Helpers shared by both jobs
# ---------------------------------------------------------------------------------------------


def progress(iterable: Iterable[T], enabled: bool = True, **options: Any) -> Iterable[T]:
    """``iterable`` wrapped in a tqdm progress bar (on stderr) when tqdm is installed and ``enabled``."""
    if not enabled:
        return iterable
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return iterable
    return tqdm(iterable, **options)


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block with ``n`` intra-op threads, then restore the previous number.

    The demo's model is tiny: synchronising threads costs more than it saves, and on a busy
    machine several threads can make training many times slower.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# ---------------------------------------------------------------------------------------------
# The demo: digits
# ---------------------------------------------------------------------------------------------


class DigitsCNN(nn.Module):
    """A small CNN for 8x8 grey digits: two 3x3 convolutions, max pooling, two dense layers."""

    def __init__(self, n_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(32 * 4 * 4, 64), nn.ReLU(), nn.Linear(64, n_classes))

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``(N, n_classes)`` for images ``(N, 1, 8, 8)`` with values in ``[0, 1]``."""
        return self.classifier(self.features(x))


@dataclass
class DigitsData:
    """Digits split into train and test: images ``(N, 1, 8, 8)`` in ``[0, 1]``, integer labels."""

    train_images: Tensor
    train_labels: Tensor
    test_images: Tensor
    test_labels: Tensor


def load_digits_data(seed: int = 0, test_fraction: float = 0.2) -> DigitsData:
    """scikit-learn's 1797 bundled 8x8 digits, scaled to ``[0, 1]``, split stratified with ``seed``."""
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError as exc:
        raise ImportError(MISSING_DEMO_EXTRA) from exc
    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)[:, None]
    split = train_test_split(images, digits.target, test_size=test_fraction, random_state=seed, stratify=digits.target)
    train_x, test_x, train_y, test_y = (torch.from_numpy(np.ascontiguousarray(a)) for a in split)
    return DigitsData(train_x, train_y.long(), test_x, test_y.long())


def build_model(seed: int) -> DigitsCNN:
    """A freshly initialised :class:`DigitsCNN`; the global random state is left untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return DigitsCNN()


def train_classifier(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    epochs: int,
    seed: int,
    batch_size: int = 32,
    learning_rate: float = 3e-3,
    show_progress: bool = True,
) -> float:
    """Train ``model`` with Adam and cross-entropy, shuffling with ``seed``; return the last epoch's mean loss."""
    optimiser = torch.optim.Adam(model.parameters(), lr=learning_rate)
    generator = torch.Generator().manual_seed(seed)
    batches_per_epoch = -(-len(images) // batch_size)
    steps = [(epoch, start) for epoch in range(epochs) for start in range(0, len(images), batch_size)]
    model.train()
    losses: list[float] = []
    order = torch.arange(len(images))
    bar = progress(steps, show_progress, desc="training", unit="batch", leave=False)
    for epoch, start in bar:
        if start == 0:
            order = torch.randperm(len(images), generator=generator)
            losses = []
        index = order[start : start + batch_size]
        loss = nn.functional.cross_entropy(model(images[index]), labels[index])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
        if len(losses) == batches_per_epoch and hasattr(bar, "set_postfix"):
            bar.set_postfix(epoch=epoch + 1, loss=f"{np.mean(losses):.3f}")
    model.eval()
    return float(np.mean(losses)) if losses else float("nan")


def accuracy(model: nn.Module, images: Tensor, labels: Tensor) -> float:
    """The fraction of ``images`` whose arg-max logit is the label."""
    with torch.no_grad():
        return float((model(images).argmax(1) == labels).float().mean())


def pick_examples(labels: Tensor, n: int) -> Tensor:
    """Indices of ``n`` examples of distinct classes where possible (the first of each class, in order)."""
    chosen: list[int] = []
    seen: set[int] = set()
    for i, label in enumerate(labels.tolist()):
        if label not in seen:
            chosen.append(i)
            seen.add(label)
        if len(chosen) == n:
            break
    return torch.tensor(chosen, dtype=torch.long)


@dataclass
class DigitExplanation:
    """DeepLIFT attributions of some digits for their predicted and runner-up classes."""

    images: Tensor
    labels: Tensor
    predicted: Tensor
    runner_up: Tensor
    probabilities: Tensor
    attributions_predicted: Tensor
    attributions_runner_up: Tensor
    max_delta: float


def explain_digits(model: nn.Module, images: Tensor, labels: Tensor) -> DigitExplanation:
    """Explain the predicted and runner-up logits of ``model`` on ``images`` against a zero reference."""
    with torch.no_grad():
        logits = model(images)
    top2 = logits.topk(2, dim=1).indices
    explainer = DeepLift(model)
    predicted, delta_predicted = explainer.attribute(
        images, baselines=0.0, target=top2[:, 0], return_convergence_delta=True
    )
    runner_up, delta_runner_up = explainer.attribute(
        images, baselines=0.0, target=top2[:, 1], return_convergence_delta=True
    )
    max_delta = float(torch.cat([delta_predicted, delta_runner_up]).abs().max())
    return DigitExplanation(images, labels, top2[:, 0], top2[:, 1], logits.softmax(1), predicted, runner_up, max_delta)


def digits_figure(explanation: DigitExplanation, path: Path) -> Path:
    """Write each digit beside its DeepLIFT maps for the predicted and the runner-up class."""
    from deltalift.plot import plot_image_attributions

    e = explanation
    titles = [
        f"label {int(y)}, predicted {int(p)}\n(p = {float(e.probabilities[i, p]):.2f})"
        for i, (y, p) in enumerate(zip(e.labels, e.predicted))
    ]
    sums = [a.flatten(1).sum(1).tolist() for a in (e.attributions_predicted, e.attributions_runner_up)]
    map_titles = [
        [
            f"class {int(p)} (predicted)\nsum = Δlogit = {sums[0][i]:.1f}",
            f"class {int(r)} (runner-up)\nsum = Δlogit = {sums[1][i]:.1f}",
        ]
        for i, (p, r) in enumerate(zip(e.predicted, e.runner_up))
    ]
    plot_image_attributions(
        e.images,
        [e.attributions_predicted, e.attributions_runner_up],
        titles,
        path,
        attribution_titles=map_titles,
        title="DeepLIFT vs. a blank image: red raises the class logit, blue lowers it",
        image_cmap="gray_r",
    )
    return path


@dataclass
class DemoResult:
    """What the demo produced."""

    accuracy: float
    max_delta: float
    figure_path: Path
    model_path: Path
    inputs_path: Path
    seconds: float


def run_demo(
    out_dir: str | Path = DEFAULT_OUT,
    epochs: int = 6,
    seed: int = 0,
    n_examples: int = 6,
    show_progress: bool = True,
    echo: Echo = print,
) -> DemoResult:
    """Train a digits CNN, explain ``n_examples`` test digits with DeepLIFT, write a figure.

    Also writes the trained model (``digits_cnn.pt``) and the explained digits
    (``digits_examples.npy``) to ``out_dir``, ready for ``deltalift explain``.  Deterministic
    for a given ``seed``; the global random state and thread count are restored afterwards.
    """
    if epochs < 1:
        raise ValueError(f"epochs must be at least 1, got {epochs}")
    if n_examples < 1:
        raise ValueError(f"n_examples must be at least 1, got {n_examples}")
    started = time.perf_counter()
    out = Path(out_dir)
    data = load_digits_data(seed)
    echo(f"digits: {len(data.train_images)} training and {len(data.test_images)} test images of 8x8 pixels")
    with torch_threads(1):
        model = build_model(seed)
        loss = train_classifier(model, data.train_images, data.train_labels, epochs, seed, show_progress=show_progress)
        test_accuracy = accuracy(model, data.test_images, data.test_labels)
        echo(f"trained {epochs} epochs (last loss {loss:.3f}); test accuracy {test_accuracy:.1%}")
        chosen = pick_examples(data.test_labels, n_examples)
        explanation = explain_digits(model, data.test_images[chosen], data.test_labels[chosen])
    echo(f"DeepLIFT on {len(chosen)} test digits, zero reference: max |convergence delta| {explanation.max_delta:.2e}")
    out.mkdir(parents=True, exist_ok=True)
    figure_path = digits_figure(explanation, out / "digits_deeplift.png")
    model_path, inputs_path = out / "digits_cnn.pt", out / "digits_examples.npy"
    torch.save(model, model_path)
    np.save(inputs_path, explanation.images.numpy())
    echo(f"wrote {figure_path}")
    echo(f"try next: deltalift explain --model {model_path} --inputs {inputs_path} --out {out / 'explain'}")
    seconds = time.perf_counter() - started
    return DemoResult(test_accuracy, explanation.max_delta, figure_path, model_path, inputs_path, seconds)


# ---------------------------------------------------------------------------------------------
# Explaining a saved model
# ---------------------------------------------------------------------------------------------


def _require_file(path: str | Path, what: str) -> Path:
    file = Path(path)
    if not file.exists():
        raise InputFileError(f"{what} file not found: {file}")
    if not file.is_file():
        raise InputFileError(f"{what} path is not a file: {file}")
    return file


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def _is_torchscript(file: Path) -> bool:
    if not zipfile.is_zipfile(file):
        return False
    with zipfile.ZipFile(file) as archive:
        return any(name.endswith("constants.pkl") or "/code/" in name for name in archive.namelist())


def load_model(path: str | Path, device: str = "cpu") -> nn.Module:
    """A model saved whole: ``torch.save(model, path)``, or ``torch.export.save(program, path)`` (``.pt2``).

    The model is put in eval mode.  Loading a pickled module runs code from the file: load only
    files you trust.  Its class must be importable under the name it was saved with.  TorchScript
    files and bare state dicts are refused with a message saying what to save instead.
    """
    file = _require_file(path, "model")
    if _is_torchscript(file):
        raise InputFileError(
            f"{file} is a TorchScript archive; deltalift captures models with torch.export, which cannot "
            "read TorchScript. Save the nn.Module itself: torch.save(model, path)"
        )
    try:
        if file.suffix == ".pt2":  # an exported program keeps the mode it was exported in
            return torch.export.load(file).module().to(device)
        model = torch.load(file, map_location=device, weights_only=False)
    except Exception as exc:  # unpickling raises many types
        hint = ""
        if isinstance(exc, (AttributeError, ModuleNotFoundError)):
            hint = " (the model's class must be importable: define it in a module on the Python path, not in a script)"
        raise InputFileError(f"could not load a model from {file}: {_first_line(exc)}{hint}") from exc
    return _checked_model(model, file).to(device).eval()


def _checked_model(model: Any, file: Path) -> nn.Module:
    if isinstance(model, dict):
        raise InputFileError(
            f"{file} holds a dict (a state_dict or checkpoint), not a model; deltalift needs the whole module: "
            "save it with torch.save(model, path)"
        )
    if not isinstance(model, nn.Module):
        raise InputFileError(f"{file} holds a {type(model).__name__}, not a torch.nn.Module")
    return model


def load_array(path: str | Path, what: str = "inputs") -> Tensor:
    """One tensor from a ``.npy`` file (no pickles) or a ``.pt`` file (``torch.save(tensor)``)."""
    file = _require_file(path, what)
    try:
        if file.suffix == ".npy":
            value: Any = torch.from_numpy(np.load(file, allow_pickle=False))
        elif file.suffix in (".pt", ".pth"):
            value = torch.load(file, map_location="cpu", weights_only=True)
        else:
            raise InputFileError(f"{what} must be a .npy or .pt file, got {file.name}")
    except InputFileError:
        raise
    except Exception as exc:
        raise InputFileError(f"could not read {what} from {file}: {_first_line(exc)}") from exc
    if isinstance(value, np.ndarray):
        value = torch.from_numpy(value)
    if not isinstance(value, torch.Tensor):
        raise InputFileError(f"{file} holds a {type(value).__name__}; {what} must be a single tensor or array")
    return value


def _model_dtype(model: nn.Module) -> torch.dtype:
    for value in list(model.parameters()) + list(model.buffers()):
        if value.is_floating_point():
            return value.dtype
    return torch.get_default_dtype()


def load_inputs(path: str | Path, model: nn.Module, device: str = "cpu") -> Tensor:
    """The inputs of ``path`` as the model's floating dtype; the first axis is the batch."""
    inputs = load_array(path, "inputs")
    if inputs.ndim == 0:
        raise InputFileError(f"{path} holds a single number; inputs need a leading batch axis, shape (N, ...)")
    if inputs.is_complex() or inputs.dtype == torch.bool:
        raise InputFileError(f"{path} holds {inputs.dtype} values; inputs must be real numbers")
    if inputs.is_floating_point() and not torch.isfinite(inputs).all():
        raise InputFileError(f"{path} contains NaN or infinite values")
    return inputs.to(device=device, dtype=_model_dtype(model))


def make_baseline(spec: str, inputs: Tensor) -> float | Tensor:
    """The reference: ``"zero"``, ``"mean"`` (of all inputs, per feature), a number, or a ``.npy``/``.pt`` file."""
    name = spec.strip().lower()
    if name in ("zero", "zeros", "0"):
        return 0.0
    if name == "mean":
        return inputs.mean(dim=0, keepdim=True)
    if name.endswith((".npy", ".pt", ".pth")):
        return load_array(spec, "baseline").to(device=inputs.device, dtype=inputs.dtype)
    try:
        value = float(name)
    except ValueError:
        raise InputFileError(f"--baseline must be 'zero', 'mean', a number or a .npy/.pt file, got {spec!r}") from None
    if not np.isfinite(value):
        raise InputFileError(f"--baseline must be finite, got {spec!r}")
    return value


def output_size(model: nn.Module, batch: Tensor) -> int:
    """Outputs per example of ``model`` (0 for an output of shape ``(N,)``), from a forward on ``batch``."""
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
    """The explained output per example: ``target``, else the predicted class (None for one output)."""
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
    """What :func:`explain_saved_model` computed and wrote."""

    attributions: np.ndarray
    targets: np.ndarray | None
    deltas: np.ndarray
    attributions_path: Path
    figure_path: Path | None

    @property
    def max_delta(self) -> float:
        return float(np.abs(self.deltas).max()) if self.deltas.size else 0.0


def attribute_in_batches(
    model: nn.Module,
    inputs: Tensor,
    baseline: float | Tensor,
    target: int | None,
    batch_size: int,
    show_progress: bool = True,
) -> tuple[Tensor, Tensor | None, Tensor]:
    """DeepLIFT attributions, targets and convergence deltas of ``inputs``, ``batch_size`` at a time."""
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
    """Whether a batch shape is images: ``(N, H, W)`` or ``(N, C, H, W)`` with C 1 or 3, sides >= 4, aspect <= 4."""
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
