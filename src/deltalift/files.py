"""Loading the user's files for the command line jobs: a saved model, an inputs or reference array.

- :func:`load_model`: a whole module saved with ``torch.save(model, path)``, an exported
  program saved with ``torch.export.save`` (``.pt2``), or an ONNX file (``.onnx``) converted
  with onnx2torch (``deltalift[onnx]``). TorchScript archives and bare state dicts
  are refused with a message saying what to save instead: deltalift captures models with
  ``torch.export``, which cannot read TorchScript.
- :func:`load_array`: one tensor from a ``.npy`` file (no pickles) or a ``.pt`` file.
- :func:`load_inputs`: :func:`load_array` checked as a batch of real, finite inputs, in the model's
  floating dtype.

Every failure is an :class:`InputFileError` whose message names the file and says what is wrong,
so the command line can print it as one line. Used by ``deltalift explain``
(:mod:`deltalift.explain_files`) and ``deltalift genomics attribute``.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from deltalift.errors import DeltaliftError

__all__ = ["InputFileError", "load_array", "load_inputs", "load_model"]

Tensor = torch.Tensor


class InputFileError(DeltaliftError, ValueError):
    """A model, inputs or baseline file that cannot be used (missing, unreadable, wrong contents)."""


def _require_file(path: str | Path, what: str) -> Path:
    """``path`` as a :class:`~pathlib.Path`, if it names an existing file; ``what`` names it in the error."""
    file = Path(path)
    if not file.exists():
        raise InputFileError(f"{what} file not found: {file}")
    if not file.is_file():
        raise InputFileError(f"{what} path is not a file: {file}")
    return file


def _first_line(exc: BaseException) -> str:
    """``"TypeName: first line of the message"`` (or the type's name alone for an empty message)."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def _is_torchscript(file: Path) -> bool:
    """Whether ``file`` is a TorchScript archive: a zip holding ``constants.pkl`` or a ``code/`` folder.

    ``torch.save`` also writes zip archives, but without either of these.
    """
    if not zipfile.is_zipfile(file):
        return False
    with zipfile.ZipFile(file) as archive:
        return any(name.endswith("constants.pkl") or "/code/" in name for name in archive.namelist())


def load_model(path: str | Path, device: str = "cpu") -> nn.Module:
    """A model saved whole: ``torch.save(model, path)``, or ``torch.export.save(program, path)`` (``.pt2``).

    The model is put in eval mode.  Loading a pickled module runs code from the file: load only
    files you trust.  Its class must be importable under the name it was saved with.  TorchScript
    files and bare state dicts are refused with a message saying what to save instead.

    Parameters
    ----------
    path:
        The model file. A ``.pt2`` suffix is read with ``torch.export.load`` (the program keeps the
        mode it was exported in); ``.onnx`` is converted with ``onnx2torch.convert``; anything else
        is read with ``torch.load(..., weights_only=False)``.
    device:
        The torch device the model is moved to.

    Returns
    -------
    torch.nn.Module
        The model, on ``device``.

    Raises
    ------
    InputFileError
        The file is missing, is TorchScript, cannot be unpickled, or holds no ``nn.Module``.
    """
    file = _require_file(path, "model")
    if _is_torchscript(file):
        raise InputFileError(
            f"{file} is a TorchScript archive; deltalift captures models with torch.export, which cannot "
            "read TorchScript. Save the nn.Module itself: torch.save(model, path)"
        )
    if file.suffix.lower() == ".onnx":
        return _load_onnx(file).to(device).eval()
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


MISSING_ONNX = (
    "reading .onnx models needs onnx and onnx2torch, which are not installed. "
    "Install them with: pip install 'deltalift[onnx]'"
)


def _load_onnx(file: Path) -> nn.Module:
    """An ONNX file converted to an ``nn.Module`` (a ``torch.fx.GraphModule``) with ``onnx2torch.convert``.

    Raises
    ------
    ImportError
        onnx or onnx2torch is missing (naming the extra to install).
    InputFileError
        The file is not a valid ONNX model, or holds an operator (or an attribute of one) that
        onnx2torch cannot convert: the message names it and suggests exporting with the
        TorchScript-based exporter (``torch.onnx.export(..., dynamo=False)``) at opset 17 or less.
    """
    try:
        import onnx
        import onnx2torch
    except ImportError as exc:
        raise ImportError(MISSING_ONNX) from exc
    try:
        proto = onnx.load(str(file))
        onnx.checker.check_model(proto)
    except Exception as exc:
        raise InputFileError(f"{file} is not a valid ONNX model: {_first_line(exc)}") from exc
    try:
        return onnx2torch.convert(proto)
    except NotImplementedError as exc:
        opsets = ", ".join(f"{entry.domain or 'ai.onnx'} {entry.version}" for entry in proto.opset_import)
        raise InputFileError(
            f"onnx2torch cannot convert {file}: {exc} (model opsets: {opsets}). Export the model with "
            "torch.onnx.export(..., dynamo=False, opset_version=17), or save the PyTorch module itself "
            "with torch.save(model, path)"
        ) from exc
    except Exception as exc:
        raise InputFileError(f"onnx2torch failed on {file}: {_first_line(exc)}") from exc


def _checked_model(model: Any, file: Path) -> nn.Module:
    """``model`` if it is an ``nn.Module``; a state dict or anything else is refused."""
    if isinstance(model, dict):
        raise InputFileError(
            f"{file} holds a dict (a state_dict or checkpoint), not a model; deltalift needs the whole module: "
            "save it with torch.save(model, path)"
        )
    if not isinstance(model, nn.Module):
        raise InputFileError(f"{file} holds a {type(model).__name__}, not a torch.nn.Module")
    return model


def load_array(path: str | Path, what: str = "inputs") -> Tensor:
    """One tensor from a ``.npy`` file (no pickles) or a ``.pt`` file (``torch.save(tensor)``).

    Parameters
    ----------
    path:
        A ``.npy`` file (read with ``allow_pickle=False``), or a ``.pt``/``.pth`` file (read with
        ``torch.load(..., weights_only=True)``) holding one tensor or array.
    what:
        What the file is for (``"inputs"``, ``"baseline"``), in error messages.

    Returns
    -------
    Tensor
        On the CPU, with the file's dtype.

    Raises
    ------
    InputFileError
        The file is missing, has another suffix, cannot be read, or holds something else.
    """
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
    """The dtype of the model's first floating parameter or buffer (the default dtype if it has none)."""
    for value in list(model.parameters()) + list(model.buffers()):
        if value.is_floating_point():
            return value.dtype
    return torch.get_default_dtype()


def load_inputs(path: str | Path, model: nn.Module, device: str = "cpu") -> Tensor:
    """The inputs of ``path`` as the model's floating dtype; the first axis is the batch.

    Parameters
    ----------
    path:
        A ``.npy`` or ``.pt`` file, as for :func:`load_array`, of shape ``(N, ...)``.
    model:
        The model the inputs are for; its first floating parameter or buffer gives the dtype.
    device:
        The torch device the inputs are moved to.

    Returns
    -------
    Tensor
        ``(N, ...)``, on ``device``, in the model's floating dtype.

    Raises
    ------
    InputFileError
        The file cannot be read (see :func:`load_array`), holds a single number, complex or boolean
        values, or NaN or infinite values.
    """
    inputs = load_array(path, "inputs")
    if inputs.ndim == 0:
        raise InputFileError(f"{path} holds a single number; inputs need a leading batch axis, shape (N, ...)")
    if inputs.is_complex() or inputs.dtype == torch.bool:
        raise InputFileError(f"{path} holds {inputs.dtype} values; inputs must be real numbers")
    if inputs.is_floating_point() and not torch.isfinite(inputs).all():
        raise InputFileError(f"{path} contains NaN or infinite values")
    return inputs.to(device=device, dtype=_model_dtype(model))
