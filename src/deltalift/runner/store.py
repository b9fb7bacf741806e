"""Numbered shards on disk: the manifest of a job's settings, atomic shard writes, and reading them back.

Layout of an output folder ``OUT``::

    OUT/manifest.json           the job's kind, settings, item count and shard size
    OUT/shards/00000/NAME.npy   one .npy file per result array of shard 0 (items [0, shard_size))
    OUT/shards/00000/shard.json its item range and the wall-clock and CPU seconds it took
    OUT/shards/00001/...

A shard is written into a temporary folder beside its final place and renamed into it once complete
(``os.replace`` of a folder, atomic on POSIX file systems), so a shard folder that exists is always
whole: an interrupted job leaves at most temporary folders, which the next run removes. The
manifest records the settings that determine the results; a rerun with other settings refuses to
mix shards of the two (:class:`SettingsMismatchError`) unless told to overwrite.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from deltalift.errors import DeltaliftError

__all__ = ["MANIFEST", "SettingsMismatchError", "ShardStore"]

MANIFEST = "manifest.json"
FORMAT = "deltalift-shards/1"


class SettingsMismatchError(DeltaliftError, ValueError):
    """An output folder holds shards of a job with other settings."""


def _jsonable(value: Any) -> Any:
    """``value`` through a JSON round trip (tuples become lists), so settings compare as stored."""
    return json.loads(json.dumps(value, sort_keys=True))


class ShardStore:
    """The shards of one job in ``root``: ``n_items`` items cut into shards of ``shard_size``.

    Parameters
    ----------
    root:
        The output folder (created if needed).
    kind:
        What the job is (``"genomics-attribute"``, ``"arrays"``), recorded in the manifest.
    settings:
        JSON-serialisable settings that determine the results (model, inputs, method, seeds, ...).
    n_items, shard_size:
        Shard ``k`` holds items ``[k * shard_size, min((k + 1) * shard_size, n_items))``.
    overwrite:
        Delete the shards of a job with other settings instead of refusing.

    Raises
    ------
    SettingsMismatchError
        ``root`` holds a manifest with another kind, other settings, item count or shard size (the
        differing keys are named), and ``overwrite`` is false.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        kind: str,
        settings: Mapping[str, Any],
        n_items: int,
        shard_size: int,
        overwrite: bool = False,
    ) -> None:
        if isinstance(shard_size, bool) or not isinstance(shard_size, int) or shard_size < 1:
            raise ValueError(f"shard_size must be a positive int, got {shard_size!r}")
        if n_items < 1:
            raise ValueError("the job has no items to compute")
        self.root = Path(root)
        self.shard_dir = self.root / "shards"
        self.n_items, self.shard_size = int(n_items), int(shard_size)
        self.n_shards = -(-self.n_items // self.shard_size)
        self.manifest = _jsonable(
            {
                "format": FORMAT,
                "kind": kind,
                "settings": dict(settings),
                "n_items": self.n_items,
                "shard_size": self.shard_size,
            }
        )
        self._open(overwrite)

    def _open(self, overwrite: bool) -> None:
        path = self.root / MANIFEST
        if path.exists():
            stored = json.loads(path.read_text())
            if stored != self.manifest:
                if not overwrite:
                    raise SettingsMismatchError(
                        f"{self.root} holds shards of a job with other settings ({', '.join(self._differences(stored))}); "
                        "use another output folder, or overwrite (--overwrite) to discard them"
                    )
                shutil.rmtree(self.shard_dir, ignore_errors=True)
                path.unlink()
        self.shard_dir.mkdir(parents=True, exist_ok=True)
        for leftover in self.shard_dir.glob(".tmp-*"):  # an interrupted write
            shutil.rmtree(leftover, ignore_errors=True)
        if not path.exists():
            _write_text_atomically(path, json.dumps(self.manifest, indent=2, sort_keys=True) + "\n")

    def _differences(self, stored: Mapping[str, Any]) -> list[str]:
        keys = []
        for key in sorted(set(stored) | set(self.manifest)):
            if key == "settings":
                old, new = stored.get(key) or {}, self.manifest[key]
                keys += [
                    f"{k}: {old.get(k)!r} -> {new.get(k)!r}"
                    for k in sorted(set(old) | set(new))
                    if old.get(k) != new.get(k)
                ]
            elif stored.get(key) != self.manifest.get(key):
                keys.append(f"{key}: {stored.get(key)!r} -> {self.manifest.get(key)!r}")
        return keys

    def bounds(self, shard: int) -> tuple[int, int]:
        """The item range ``[start, stop)`` of ``shard``."""
        if not 0 <= shard < self.n_shards:
            raise IndexError(f"shard {shard} out of range: the job has {self.n_shards} shards")
        start = shard * self.shard_size
        return start, min(start + self.shard_size, self.n_items)

    def path(self, shard: int) -> Path:
        return self.shard_dir / f"{shard:05d}"

    def is_done(self, shard: int) -> bool:
        return (self.path(shard) / "shard.json").is_file()

    def pending(self) -> list[int]:
        """The shards not yet written, in order."""
        return [k for k in range(self.n_shards) if not self.is_done(k)]

    def write(
        self, shard: int, arrays: Mapping[str, np.ndarray], seconds: float = 0.0, cpu_seconds: float = 0.0
    ) -> None:
        """Write ``shard`` atomically: each array (leading axis = the shard's items) as ``NAME.npy``; the
        wall-clock and CPU seconds it took go to its ``shard.json``."""
        start, stop = self.bounds(shard)
        for name, array in arrays.items():
            if not name.isidentifier():
                raise ValueError(f"a result name must be an identifier, got {name!r}")
            if np.asarray(array).shape[:1] != (stop - start,):
                raise ValueError(
                    f"result {name!r} of shard {shard} has shape {np.asarray(array).shape}; "
                    f"its leading axis must be the shard's {stop - start} items"
                )
        temporary = Path(tempfile.mkdtemp(prefix=f".tmp-{shard:05d}-", dir=self.shard_dir))
        try:
            for name, array in arrays.items():
                np.save(temporary / f"{name}.npy", np.asarray(array), allow_pickle=False)
            info = {
                "shard": shard,
                "start": start,
                "stop": stop,
                "arrays": sorted(arrays),
                "seconds": seconds,
                "cpu_seconds": cpu_seconds,
            }
            (temporary / "shard.json").write_text(json.dumps(info, sort_keys=True) + "\n")
            final = self.path(shard)
            if final.exists():  # written meanwhile by another worker with the same settings
                shutil.rmtree(temporary)
                return
            os.replace(temporary, final)
        except BaseException:
            shutil.rmtree(temporary, ignore_errors=True)
            raise

    def read(self, shard: int, name: str, mmap: bool = False) -> np.ndarray:
        """Array ``name`` of a written shard (memory-mapped with ``mmap``)."""
        file = self.path(shard) / f"{name}.npy"
        if not self.is_done(shard) or not file.is_file():
            raise FileNotFoundError(f"shard {shard} has no result {name!r} in {self.shard_dir}")
        return np.load(file, mmap_mode="r" if mmap else None, allow_pickle=False)

    def iter_arrays(self, name: str) -> Iterator[np.ndarray]:
        """Array ``name`` of every shard in order (each shard loaded in turn: bounded memory)."""
        missing = self.pending()
        if missing:
            raise RuntimeError(f"{len(missing)} of {self.n_shards} shards are not written yet (first: {missing[0]})")
        for shard in range(self.n_shards):
            yield self.read(shard, name)

    def concatenate(self, name: str) -> np.ndarray:
        """Array ``name`` of all shards joined along the items (loads everything)."""
        return np.concatenate(list(self.iter_arrays(name)))


def _write_text_atomically(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    temporary.write_text(text)
    os.replace(temporary, path)
