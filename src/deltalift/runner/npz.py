"""One ``.npz`` array written from chunks, so that a result larger than memory can still be saved.

``np.load(path)["arr_0"]`` reads what :func:`write_npz_from_chunks` writes: a zip archive holding
``arr_0.npy`` (numpy's ``.npy`` format, version 1.0 or 2.0 header, C order), deflated, with a fixed
timestamp (1980-01-01) so that the same arrays give the same bytes. Only one chunk is held at a time.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Iterable

import numpy as np

__all__ = ["write_npz_from_chunks"]


def write_npz_from_chunks(
    path: str | os.PathLike[str], chunks: Iterable[np.ndarray], shape: tuple[int, ...], dtype: np.dtype | type
) -> None:
    """Write ``concatenate(chunks)`` (of ``shape`` and ``dtype``) as ``arr_0`` of the ``.npz`` ``path``.

    Raises
    ------
    ValueError
        A chunk's trailing shape differs from ``shape[1:]``, or the chunks' rows do not add up to ``shape[0]``.
    """
    dtype = np.dtype(dtype)
    header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": tuple(shape)}
    info = zipfile.ZipInfo("arr_0.npy", date_time=(1980, 1, 1, 0, 0, 0))
    info.compress_type = zipfile.ZIP_DEFLATED
    temporary = f"{os.fspath(path)}.tmp-{os.getpid()}"
    rows = 0
    try:
        with zipfile.ZipFile(temporary, "w") as archive, archive.open(info, "w", force_zip64=True) as member:
            np.lib.format.write_array_header_2_0(member, header)
            for chunk in chunks:
                chunk = np.ascontiguousarray(chunk, dtype=dtype)
                if chunk.shape[1:] != tuple(shape[1:]):
                    raise ValueError(f"a chunk of shape {chunk.shape} does not fit an array of shape {shape}")
                rows += chunk.shape[0]
                member.write(chunk.tobytes())
        if rows != shape[0]:
            raise ValueError(f"the chunks hold {rows} rows; the array has {shape[0]}")
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
