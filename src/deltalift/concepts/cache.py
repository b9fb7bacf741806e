"""CAVs cached on disk, keyed by everything that determines them.

A CAV depends on the model (its id and a digest of its parameters and buffers), the layer
(and whether its input or output is read), the concepts' examples (their fingerprints, in
order), the classifier and its settings, and the seed.  The key is the SHA-256 of these
settings; the file stores the settings too, and a file whose settings differ from those asked
for is not used.  Files are written with ``torch.save`` and read with ``weights_only=True``
(plain tensors, numbers and strings only).  The folder plays the part of Captum's
``save_path``.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from deltalift.concepts.classifiers import CAVFit

__all__ = ["CAVCache", "model_digest"]


def model_digest(model: nn.Module) -> str:
    """The digest of a module's class, parameters and persistent buffers (names, shapes, dtypes, values).

    :func:`deltalift.runner.digests.module_digest` (BLAKE2b over the state dict's raw bytes, so
    ``bfloat16`` models work too), kept under this name for the CAV cache's keys.
    """
    from deltalift.runner.digests import module_digest

    return module_digest(model)


class CAVCache:
    """A folder of trained CAVs; :attr:`hits` and :attr:`misses` count the look-ups.

    Parameters
    ----------
    directory:
        Where the CAV files go (created when the first one is written).
    """

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(settings: dict[str, Any]) -> str:
        """The SHA-256 of the settings as canonical JSON."""
        return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()

    def path(self, settings: dict[str, Any]) -> Path:
        """The file of the CAV with these settings (readable prefix: concepts and layer)."""
        label = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{settings.get('concepts_key', '')}-{settings.get('layer', '')}")
        return self.directory / f"{label[:80]}-{self.key(settings)[:24]}.pt"

    def load(self, settings: dict[str, Any]) -> CAVFit | None:
        """The cached CAV with exactly these settings, or ``None`` (counted as a miss)."""
        path = self.path(settings)
        if path.exists():
            stored = torch.load(path, weights_only=True)
            if stored.get("settings") == json.dumps(settings, sort_keys=True, default=str):
                self.hits += 1
                return CAVFit(stored["weights"], [int(c) for c in stored["classes"]], dict(stored["stats"]))
        self.misses += 1
        return None

    def save(self, settings: dict[str, Any], fit: CAVFit) -> Path:
        """Write a CAV with its settings; returns the file."""
        path = self.path(settings)
        path.parent.mkdir(parents=True, exist_ok=True)
        stats = {k: float(v) for k, v in fit.stats.items()}
        record = {
            "settings": json.dumps(settings, sort_keys=True, default=str),
            "weights": fit.weights.detach().cpu(),
            "classes": [int(c) for c in fit.classes],
            "stats": stats,
        }
        partial = path.with_suffix(".tmp")
        torch.save(record, partial)
        partial.replace(path)
        return path
