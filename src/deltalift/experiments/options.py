"""Options of a run beyond the contract's ``quick`` and ``seed``: the MNIST folder of ``--mnist``.

The digits experiments read :func:`mnist_folder`; ``None`` means scikit-learn's bundled digits.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

__all__ = ["mnist_folder", "set_mnist_folder"]

_MNIST: list[Path | None] = [None]


def mnist_folder() -> Path | None:
    """The folder of MNIST IDX files the digits experiments train on, or ``None`` (scikit-learn's digits)."""
    return _MNIST[0]


@contextlib.contextmanager
def set_mnist_folder(folder: Path | str | None) -> Iterator[None]:
    """Within the block, the digits experiments train on MNIST from ``folder`` (``None``: scikit-learn's digits)."""
    if folder is not None and not Path(folder).is_dir():
        raise FileNotFoundError(f"MNIST folder {folder} does not exist")
    before = _MNIST[0]
    _MNIST[0] = None if folder is None else Path(folder)
    try:
        yield
    finally:
        _MNIST[0] = before
