"""Helpers for DNA sequence models, in the conventions of that field.

- :mod:`~deltalift.genomics.one_hot`: one-hot ``(N, 4, L)`` in ACGT order, its inverse, FASTA input.
- :mod:`~deltalift.genomics.shuffle`: dinucleotide shuffles (and plain shuffles) of one-hot sequences.
- :mod:`~deltalift.genomics.references`: DNA references in the form of :mod:`deltalift.references`:
  background frequencies ``(1, 4, L)``, shuffled and dinucleotide-shuffled copies ``(N, n, 4, L)``.
- :mod:`~deltalift.genomics.hypothetical`: hypothetical contributions, a ``custom_attribution_func``.
- :mod:`~deltalift.genomics.modisco`: ``.npz`` inputs for TF-MoDISco (tfmodisco-lite).
- :mod:`~deltalift.genomics.logo`: sequence logos (needs ``pip install 'deltalift[plot]'``).

- :mod:`~deltalift.genomics.attribute`: DeepLIFT-SHAP over dinucleotide shuffles, ``(N, 4, L)``: a drop-in for
  ``tangermeme.deep_lift_shap.deep_lift_shap`` (its signature, its results given the same references).

Genome-wide (``pip install 'deltalift[genomics]'``; docs/genome-wide.md):

- :mod:`~deltalift.genomics.regions`: BED / narrowPeak regions, summit-centred or tiled windows, chromosome
  filters, edges.
- :mod:`~deltalift.genomics.genome`: window sequences from an indexed genome FASTA (pyfaidx), plain or bgzipped.
- :mod:`~deltalift.genomics.bigwig`: per-base contribution tracks (pyBigWig), overlaps averaged or nearest-centre.
- :mod:`~deltalift.genomics.models`: model files and bpnet-lite's count / profile heads.
- :func:`attribute_regions` (:mod:`deltalift.runner.genomics`): all of it in resumable shards, optionally on Ray.

A typical run (or ``deltalift genomics attribute --model m.pt --fasta peaks.fa --out DIR``)::

    X = one_hot_encode_fasta("peaks.fa")                                  # (N, 4, L)
    hyp = deep_lift_shap(model, X, target=0, n_shuffles=20, hypothetical=True, random_state=0)
    save_modisco_inputs(X, hyp, "ohe.npz", "attr.npz")    # modisco motifs -s ohe.npz -a attr.npz -n 2000
"""

from typing import Any as _Any

from deltalift.genomics.attribute import AttributionReferences, ConvergenceThresholdWarning, deep_lift_shap
from deltalift.genomics.bigwig import write_contribution_bigwig
from deltalift.genomics.genome import Genome
from deltalift.genomics.hypothetical import hypothetical_contributions
from deltalift.genomics.logo import plot_logo
from deltalift.genomics.models import load_sequence_model, sequence_head
from deltalift.genomics.modisco import load_modisco_inputs, save_modisco_inputs
from deltalift.genomics.one_hot import decode_one_hot, one_hot_encode, one_hot_encode_fasta, read_fasta
from deltalift.genomics.references import background_frequencies, dinucleotide_shuffled, shuffled
from deltalift.genomics.regions import Region, Window, read_bed, summit_windows, tiled_windows
from deltalift.genomics.shuffle import dinucleotide_shuffle, shuffle


def __getattr__(name: str) -> _Any:
    # attribute_regions lives with the runner, which imports this package: loaded on first use
    if name == "attribute_regions":
        from deltalift.runner.genomics import attribute_regions

        return attribute_regions
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "AttributionReferences",
    "ConvergenceThresholdWarning",
    "Genome",
    "Region",
    "Window",
    "attribute_regions",
    "background_frequencies",
    "decode_one_hot",
    "deep_lift_shap",
    "dinucleotide_shuffle",
    "dinucleotide_shuffled",
    "hypothetical_contributions",
    "load_modisco_inputs",
    "load_sequence_model",
    "one_hot_encode",
    "one_hot_encode_fasta",
    "plot_logo",
    "read_bed",
    "read_fasta",
    "save_modisco_inputs",
    "sequence_head",
    "shuffle",
    "shuffled",
    "summit_windows",
    "tiled_windows",
    "write_contribution_bigwig",
]
