"""Run-time helpers shared by the command line jobs: progress bars, the thread count, output defaults.

- :func:`progress`: an iterable wrapped in a tqdm bar when tqdm is installed (``deltalift[demo]``).
- :func:`torch_threads`: run a block with a given number of intra-op threads, then restore it.
- :func:`keep_freed_memory`: have glibc keep freed memory for reuse rather than hand it back.
- :data:`DEFAULT_OUT`: the folder the jobs write to unless told otherwise.
- :data:`Echo`: how a job reports a line of progress to its caller (``print`` by default).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import torch

__all__ = ["DEFAULT_OUT", "Echo", "keep_freed_memory", "progress", "torch_threads"]

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


#: glibc's ``mallopt`` parameters (``malloc.h``).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


def keep_freed_memory(mmap_threshold: int = 256 * 2**20, trim_threshold: int = 2**30) -> bool:
    """Have glibc serve allocations below ``mmap_threshold`` bytes from its heap and keep up to
    ``trim_threshold`` bytes of freed heap for reuse (``mallopt(M_MMAP_THRESHOLD)`` and
    ``mallopt(M_TRIM_THRESHOLD)``, as the ``MALLOC_MMAP_THRESHOLD_`` and
    ``MALLOC_TRIM_THRESHOLD_`` environment variables do at start-up).  Returns whether it was
    applied: ``False`` off glibc (macOS, Windows, musl).

    By default glibc gives tensors of a few MiB their own pages and returns them when freed, so
    the next tensor of that size takes fresh pages, each zeroed by the kernel on first touch.  A
    DeepLIFT-SHAP call on a BPNet-like model (8 sequences x 20 references x 1000 bp, 2 CPU
    cores, alone in its process) took 75,000 such page faults and 0.588 s, and none and 0.525 s
    after this call; tangermeme's took 1.848 s and 1.663 s, Captum's 2.240 s and 1.998 s.
    The price: memory freed below the thresholds stays with the process (its resident size
    does not shrink after a peak).  It applies to the whole process, so deltalift's command
    line calls it and the library leaves it to the caller.
    """
    if not sys.platform.startswith("linux"):
        return False
    path = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(path or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    limit = 2**31 - 1
    return bool(mallopt(_M_MMAP_THRESHOLD, min(mmap_threshold, limit))) and bool(
        mallopt(_M_TRIM_THRESHOLD, min(trim_threshold, limit))
    )
