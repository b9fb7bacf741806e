"""``deltalift senn train``: train a SENN on scikit-learn's 8x8 digits and write its figures.

Writes to the output folder: ``senn_digits.pt`` (the model's ``state_dict`` and its settings),
``prototypes.png`` (each concept's prototype digits; autoencoder concepts), ``explanations.png``
(test digits with their explanations) and ``metrics.json`` (accuracy and the last epoch's
losses).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from deltalift.demo import load_digits_data, pick_examples
from deltalift.runtime import DEFAULT_OUT, Echo, torch_threads
from deltalift.senn.figures import explanations_figure, prototypes_figure
from deltalift.senn.model import SENN, IdentityConceptizer
from deltalift.senn.prototypes import concept_prototypes
from deltalift.senn.train import build_digits_senn, senn_accuracy, train_senn

__all__ = ["SENNJobResult", "load_digits_senn", "run_senn_training"]


@dataclass
class SENNJobResult:
    """What ``deltalift senn train`` produced."""

    model: SENN
    accuracy: float
    model_path: Path
    figures: list[Path]
    seconds: float


def run_senn_training(
    out_dir: str | Path = DEFAULT_OUT,
    epochs: int = 20,
    seed: int = 0,
    n_concepts: int = 5,
    conceptizer: str = "autoencoder",
    robustness_weight: float = 0.1,
    n_examples: int = 6,
    show_progress: bool = True,
    echo: Echo = print,
) -> SENNJobResult:
    """Train a digits SENN, report its test accuracy and write the model and figures."""
    if epochs < 1 or n_examples < 1:
        raise ValueError(f"epochs and n_examples must be at least 1, got {epochs} and {n_examples}")
    started = time.perf_counter()
    out = Path(out_dir)
    data = load_digits_data(seed)
    with torch_threads(1):
        model = build_digits_senn(n_concepts, conceptizer, seed)
        history = train_senn(
            model,
            data.train_images,
            data.train_labels,
            epochs,
            seed,
            robustness_weight=robustness_weight,
            show_progress=show_progress,
        )
        accuracy = senn_accuracy(model, data.test_images, data.test_labels)
    echo(
        f"SENN ({conceptizer} concepts, k = {model.conceptizer.n_concepts}) trained {epochs} epochs: "
        f"test accuracy {accuracy:.1%} on {len(data.test_images)} digits; last robustness loss "
        f"{history.robustness[-1]:.3f}"
    )
    out.mkdir(parents=True, exist_ok=True)
    settings = {"n_concepts": n_concepts, "conceptizer": conceptizer, "seed": seed}
    model_path = out / "senn_digits.pt"
    torch.save({"settings": settings, "state_dict": model.state_dict()}, model_path)
    figures = []
    chosen = pick_examples(data.test_labels, n_examples)
    figures.append(
        explanations_figure(model, data.test_images[chosen], data.test_labels[chosen], out / "explanations.png")
    )
    if not isinstance(model.conceptizer, IdentityConceptizer):
        prototypes = concept_prototypes(model, data.test_images, k=6)
        figures.append(prototypes_figure(data.test_images, prototypes, out / "prototypes.png"))
    paths = [out / "explanations.png"] + ([out / "prototypes.png"] if len(figures) > 1 else [])
    metrics = {
        "test_accuracy": accuracy,
        "epochs": epochs,
        **settings,
        "robustness_weight": robustness_weight,
        "last_epoch": {
            "total": history.total[-1],
            "classification": history.classification[-1],
            "robustness": history.robustness[-1],
            "reconstruction": history.reconstruction[-1],
        },
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    for path in [model_path, *paths]:
        echo(f"wrote {path}")
    return SENNJobResult(model, accuracy, model_path, paths, time.perf_counter() - started)


def load_digits_senn(path: str | Path) -> SENN:
    """A SENN written by :func:`run_senn_training` (a state dict and settings; no code is loaded)."""
    stored = torch.load(path, weights_only=True)
    if not isinstance(stored, dict) or "settings" not in stored or "state_dict" not in stored:
        raise ValueError(f"{path} is not a SENN written by 'deltalift senn train'")
    settings = stored["settings"]
    model = build_digits_senn(int(settings["n_concepts"]), str(settings["conceptizer"]), int(settings["seed"]))
    model.load_state_dict(stored["state_dict"])
    return model.eval()
