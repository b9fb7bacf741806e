"""Any deltalift method over a data set of arrays or images, shard by shard (``deltalift run``).

The inputs are one of:

- a folder of ``.npy`` files, one example each (all of one shape), read in name order;
- one ``.npy`` file ``(N, ...)`` whose rows are the examples (memory-mapped: only a shard's rows are read);
- a folder of PNG/JPEG images, read through :mod:`deltalift.images` with a preprocessing preset.

Each shard's examples are explained with the method class named ``method`` from
:mod:`deltalift.methods` (``DeepLift``, ``IntegratedGradients``, ``Saliency``, ``Occlusion``, ...),
built as ``Method(model, **method_options)`` once per process, and called as Captum's
``attribute(inputs, baselines=..., target=..., **attribute_options)`` in batches of ``batch_size``;
``baselines`` is passed only to methods that take it. ``target=None`` explains the predicted class,
``argmax model(x)``. ``NoiseTunnel`` wraps the method named by its ``method_options["method"]``
(default ``"Saliency"``), built with the other method options. A method that draws random numbers
(``NoiseTunnel``, ``GradientShap``, or any whose ``attribute`` takes ``random_state``) is run one
example at a time, example ``j`` (its index in the inputs) seeded with ``random_state + j``:
torch's and numpy's global generators (restored afterwards) and the method's own ``random_state``
option unless given. This is :func:`deltalift.explain`'s rule (``seed + i``, see
:mod:`deltalift.method_catalog`), so an example's attributions depend neither on the shard size
nor the batch size, a resumed or Ray run gives the same shards, and they equal
``deltalift explain``'s for the same method, options and seed (``smoothgrad`` is ``NoiseTunnel``
over ``Saliency`` with ``abs=False``; ``gradient-shap`` matches given the same background, here
the one ``baseline``). The other methods run under global generators seeded per shard from
``random_state`` and the shard's first item. :func:`attribute_arrays` runs the job (see
:func:`deltalift.runner.run_job`) and writes ``attributions.npy`` (shaped like the inputs), ``targets.npy`` and ``names.txt``.
"""

from __future__ import annotations

import hashlib
import inspect
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from deltalift.files import load_model
from deltalift.runner.digests import model_settings
from deltalift.runner.job import RayOptions, RunSummary, run_job
from deltalift.runner.store import ShardStore

__all__ = ["ArrayAttributionJob", "ArraysResult", "attribute_arrays", "input_names"]

PathLike = str | os.PathLike[str]


def _image_suffixes() -> tuple[str, ...]:
    try:
        from deltalift.images import IMAGE_SUFFIXES
    except ImportError:  # pragma: no cover - images are an optional module
        return ()
    return tuple(IMAGE_SUFFIXES)


def input_names(inputs: PathLike) -> tuple[str, list[str]]:
    """``(kind, names)`` of the examples of ``inputs``: kind ``"stack"`` (rows of one .npy), ``"npy"`` or ``"images"``.

    Raises
    ------
    ValueError
        A missing path, a folder with neither ``.npy`` files nor images (or with both), another file type.
    """
    path = Path(inputs)
    if path.is_file():
        if path.suffix != ".npy":
            raise ValueError(f"inputs must be a .npy file or a folder of .npy files or images, got {path.name}")
        rows = np.load(path, mmap_mode="r", allow_pickle=False).shape
        if len(rows) < 1 or rows[0] < 1:
            raise ValueError(f"{path} holds no examples (shape {rows}); its first axis is the examples")
        return "stack", [f"{path.name}[{i}]" for i in range(rows[0])]
    if not path.is_dir():
        raise ValueError(f"inputs not found: {path}")
    arrays = sorted(p.name for p in path.iterdir() if p.suffix == ".npy")
    images = sorted(p.name for p in path.iterdir() if p.suffix.lower() in _image_suffixes())
    if arrays and images:
        raise ValueError(f"{path} holds both .npy files and images; put them in separate folders")
    if arrays:
        return "npy", arrays
    if images:
        return "images", images
    raise ValueError(f"{path} holds no .npy files or {'/'.join(_image_suffixes()) or 'images'}")


def _digest_files(path: Path, names: list[str], kind: str) -> str:
    """A digest of the inputs: their names, sizes and modification times (not their bytes, for speed)."""
    digest = hashlib.blake2b(kind.encode(), digest_size=16)
    files = [path] if kind == "stack" else [path / name for name in names]
    for file in files:
        stat = file.stat()
        digest.update(f"{file.name}\t{stat.st_size}\t{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def _method_class(name: str) -> type:
    from deltalift import methods

    if name not in methods.__all__ or not inspect.isclass(getattr(methods, name)):
        raise ValueError(f"unknown method {name!r}; deltalift's methods: {', '.join(sorted(methods.__all__))}")
    cls: type = getattr(methods, name)
    return cls


#: deltalift's methods that draw random numbers (besides those whose ``attribute`` takes ``random_state``).
RANDOM_METHODS = ("GradientShap", "NoiseTunnel")


def _build_method(name: str, model: nn.Module, options: Mapping[str, Any]) -> Any:
    """``Method(model, **options)``; ``NoiseTunnel`` wraps ``options["method"]`` (default ``"Saliency"``)."""
    options = dict(options)
    if name == "NoiseTunnel":
        inner = _method_class(str(options.pop("method", "Saliency")))
        return _method_class(name)(inner(model, **options))
    return _method_class(name)(model, **options)


@dataclass
class ArrayAttributionJob:
    """Attributions of a deltalift method for each example of ``inputs`` (see the module docstring)."""

    model: PathLike | nn.Module
    inputs: PathLike
    method: str = "DeepLift"
    method_options: Mapping[str, Any] = field(default_factory=dict)
    attribute_options: Mapping[str, Any] = field(default_factory=dict)
    target: int | None = None
    baseline: str | float = "zero"
    batch_size: int = 32
    preprocess: str = "none"
    random_state: int = 0
    device: str = "cpu"
    kind: str = "arrays"
    _names: list[str] = field(default_factory=list, repr=False)
    _source: str = field(default="", repr=False)
    _explainer: Any = field(default=None, repr=False, compare=False)
    _loaded: nn.Module | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._source, self._names = input_names(self.inputs)
        _method_class(self.method)
        if self.method == "NoiseTunnel":
            _method_class(str(self.method_options.get("method", "Saliency")))
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {self.batch_size!r}")
        if isinstance(self.baseline, str) and self.baseline != "zero" and not self.baseline.endswith(".npy"):
            raise ValueError(f"baseline must be 'zero', a number or a .npy file, got {self.baseline!r}")
        if isinstance(self.model, nn.Module):
            self._loaded = self.model.eval()

    def __len__(self) -> int:
        return len(self._names)

    @property
    def names(self) -> list[str]:
        """The examples' names (file names, or ``x.npy[i]`` for the rows of one file)."""
        return list(self._names)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_explainer"] = None
        if not isinstance(self.model, nn.Module):
            state["_loaded"] = None
        return state

    def settings(self) -> dict[str, Any]:
        path = Path(self.inputs)
        return {
            "model": model_settings(self.model),
            "inputs": {
                "path": str(path.resolve()),
                "count": len(self),
                "digest": _digest_files(path, self._names, self._source),
            },
            "method": self.method,
            "method_options": dict(self.method_options),
            "attribute_options": dict(self.attribute_options),
            "target": self.target,
            "baseline": self.baseline,
            "batch_size": self.batch_size,
            "preprocess": self.preprocess if self._source == "images" else None,
            "random_state": self.random_state,
        }

    def loaded_model(self) -> nn.Module:
        if self._loaded is None:
            assert not isinstance(self.model, nn.Module)
            self._loaded = load_model(Path(self.model), device=self.device)
        return self._loaded

    def examples(self, start: int, stop: int) -> torch.Tensor:
        """The examples ``[start, stop)`` as one float tensor ``(n, ...)`` in the model's dtype."""
        path = Path(self.inputs)
        if self._source == "stack":
            array = np.asarray(np.load(path, mmap_mode="r", allow_pickle=False)[start:stop])
        elif self._source == "npy":
            parts = [np.load(path / name, allow_pickle=False) for name in self._names[start:stop]]
            shapes = {p.shape for p in parts}
            if len(shapes) != 1:
                raise ValueError(f"the .npy files of {path} must share one shape, got {sorted(shapes)}")
            array = np.stack(parts)
        else:
            from PIL import Image

            from deltalift.images import preprocess_image, preset

            tensors = []
            for name in self._names[start:stop]:
                with Image.open(path / name) as image:
                    tensors.append(preprocess_image(image, preset(self.preprocess))[0])
            array = torch.stack(tensors).numpy()
        if not np.issubdtype(array.dtype, np.number) or np.iscomplexobj(array):
            raise ValueError(f"inputs must be real numbers, got {array.dtype}")
        model = self.loaded_model()
        dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
        tensor = torch.from_numpy(np.ascontiguousarray(array)).to(dtype)
        if not torch.isfinite(tensor).all():
            raise ValueError(f"the inputs [{start}, {stop}) contain NaN or infinite values")
        return tensor

    def _baselines(self, x: torch.Tensor) -> torch.Tensor:
        if isinstance(self.baseline, int | float) and not isinstance(self.baseline, bool):
            return torch.full_like(x[:1], float(self.baseline))
        if self.baseline == "zero":
            return torch.zeros_like(x[:1])
        reference = torch.from_numpy(np.load(str(self.baseline), allow_pickle=False)).to(x.dtype)
        if reference.shape == x.shape[1:]:
            reference = reference[None]
        if reference.shape[1:] != x.shape[1:] or reference.shape[0] != 1:
            raise ValueError(
                f"the baseline {self.baseline} has shape {tuple(reference.shape)}; expected {tuple(x.shape[1:])}"
            )
        return reference

    def compute(self, start: int, stop: int) -> dict[str, np.ndarray]:
        model = self.loaded_model()
        if self._explainer is None:
            self._explainer = _build_method(self.method, model, self.method_options)
        parameters = inspect.signature(self._explainer.attribute).parameters
        seed = int.from_bytes(
            hashlib.blake2b(f"{self.random_state}:{start}".encode(), digest_size=8).digest(), "little"
        )
        numpy_state = np.random.get_state()
        try:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                np.random.seed(seed % 2**32)  # Captum-style methods draw from numpy's global generator
                return self._compute(start, stop, model, parameters)
        finally:
            np.random.set_state(numpy_state)

    def _compute(self, start: int, stop: int, model: nn.Module, parameters: Mapping[str, Any]) -> dict[str, np.ndarray]:
        x_all = self.examples(start, stop)
        attributions, targets = [], []
        for first in range(0, len(x_all), self.batch_size):
            x = x_all[first : first + self.batch_size].to(self.device)
            if self.target is None:
                with torch.no_grad():
                    target = model(x).argmax(dim=1)
            else:
                target = torch.full((len(x),), int(self.target), dtype=torch.int64, device=x.device)
            options = dict(self.attribute_options)
            if "baselines" in parameters:
                options["baselines"] = self._baselines(x).to(self.device)
            if self.method in RANDOM_METHODS or "random_state" in parameters:
                result = self._per_example(x, target, start + first, options, "random_state" in parameters)
            else:
                result = self._explainer.attribute(x, target=target, **options)
            attributions.append(result.detach().cpu().to(torch.float32).numpy())
            targets.append(target.cpu().numpy().astype(np.int64))
        return {
            "attributions": np.concatenate(attributions),
            "targets": np.concatenate(targets),
            "index": np.arange(start, stop, dtype=np.int64),
        }

    def _per_example(
        self, x: torch.Tensor, target: torch.Tensor, first: int, options: Mapping[str, Any], takes_state: bool
    ) -> torch.Tensor:
        """Example ``first + i`` explained alone, with the generators seeded ``random_state + first + i``.

        As :mod:`deltalift.method_catalog`'s ``gradient-shap`` and NoiseTunnel methods seed example
        ``i`` with ``seed + i`` (numpy's and torch's global generators, and NoiseTunnel's
        ``random_state``), so that the result does not depend on the batches.
        """
        rows = []
        for i in range(len(x)):
            seed = self.random_state + first + i
            row_options = dict(options)
            if takes_state and "random_state" not in self.attribute_options:
                row_options["random_state"] = seed
            with torch.random.fork_rng(devices=[]):
                np.random.seed(seed % 2**32)
                torch.manual_seed(seed)
                rows.append(self._explainer.attribute(x[i : i + 1], target=target[i : i + 1], **row_options))
        return torch.cat(rows)


@dataclass(frozen=True)
class ArraysResult:
    """What :func:`attribute_arrays` wrote."""

    out: Path
    run: RunSummary
    files: dict[str, Path]


def _finish(store: ShardStore, names: list[str], out: Path) -> dict[str, Path]:
    files = {
        "attributions.npy": out / "attributions.npy",
        "targets.npy": out / "targets.npy",
        "names.txt": out / "names.txt",
    }
    first = store.read(0, "attributions", mmap=True)
    temporary = out / f".attributions.npy.tmp-{os.getpid()}"
    merged = np.lib.format.open_memmap(temporary, mode="w+", dtype=np.float32, shape=(store.n_items, *first.shape[1:]))
    for shard, block in enumerate(store.iter_arrays("attributions")):
        start, stop = store.bounds(shard)
        merged[start:stop] = block
    merged.flush()
    del merged
    os.replace(temporary, files["attributions.npy"])
    np.save(files["targets.npy"], store.concatenate("targets"))
    files["names.txt"].write_text("".join(f"{name}\n" for name in names))
    return files


def attribute_arrays(
    model: PathLike | nn.Module,
    inputs: PathLike,
    out: PathLike,
    method: str = "DeepLift",
    *,
    method_options: Mapping[str, Any] | None = None,
    attribute_options: Mapping[str, Any] | None = None,
    target: int | None = None,
    baseline: str | float = "zero",
    batch_size: int = 32,
    preprocess: str = "none",
    random_state: int = 0,
    device: str = "cpu",
    shard_size: int = 256,
    overwrite: bool = False,
    ray: RayOptions | None = None,
    show_progress: bool = True,
) -> ArraysResult:
    """Explain every example of ``inputs`` with ``method``, resumably, in one process or on Ray.

    Parameters are the fields of :class:`ArrayAttributionJob` and the options of
    :func:`deltalift.runner.run_job`; ``attributions.npy`` is assembled from the shards through a
    memory-mapped file (bounded memory).
    """
    job = ArrayAttributionJob(
        model,
        inputs,
        method,
        dict(method_options or {}),
        dict(attribute_options or {}),
        target=target,
        baseline=baseline,
        batch_size=batch_size,
        preprocess=preprocess,
        random_state=random_state,
        device=device,
    )
    summary = run_job(job, out, shard_size=shard_size, overwrite=overwrite, ray=ray, show_progress=show_progress)
    return ArraysResult(Path(out), summary, _finish(summary.store, job.names, Path(out)))
