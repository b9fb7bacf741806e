"""Run-time helpers shared by the command line jobs: progress bars, the thread count, output defaults.

- :func:`progress`: an iterable wrapped in a tqdm bar when tqdm is installed (``deltalift[demo]``).
- :func:`torch_threads`: run a block with a given number of intra-op threads, then restore it.
- :data:`DEFAULT_OUT`: the folder the jobs write to unless told otherwise.
- :data:`Echo`: how a job reports a line of progress to its caller (``print`` by default).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import torch

__all__ = ["DEFAULT_OUT", "Echo", "progress", "torch_threads"]

T = TypeVar("T")

#: A callable that shows one line of a job's report (``print``, or ``list.append`` in tests).
Echo = Callable[[str], None]

#: Where :func:`~deltalift.demo.run_demo` and :func:`~deltalift.explain_files.explain_saved_model`
#: write by default (the same folder as the command line's ``--out`` default).
DEFAULT_OUT = Path("deltalift-output")


def progress(iterable: Iterable[T], enabled: bool = True, **options: Any) -> Iterable[T]:
    """``iterable`` wrapped in a tqdm progress bar (on stderr) when tqdm is installed and ``enabled``.

    Parameters
    ----------
    iterable:
        What to iterate over.
    enabled:
        ``False`` returns ``iterable`` itself, as does a missing tqdm.
    options:
        Passed to ``tqdm.auto.tqdm`` (``desc``, ``unit``, ``leave``, ...).

    Returns
    -------
    Iterable
        The same items in the same order; a tqdm bar (with ``set_postfix``) when one is shown.
    """
    if not enabled:
        return iterable
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return iterable
    return tqdm(iterable, **options)


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block with ``n`` intra-op threads (``torch.set_num_threads``), then restore the previous number.

    The demo's model is tiny: synchronising threads costs more than it saves, and on a busy
    machine several threads can make training many times slower.

    Parameters
    ----------
    n:
        Intra-op threads inside the block (``>= 1``).
    """
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
