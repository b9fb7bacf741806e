"""Helpers for DNA sequence models, in the conventions of that field.

- :mod:`~deltalift.genomics.one_hot`: one-hot ``(N, 4, L)`` in ACGT order, its inverse, FASTA input.
- :mod:`~deltalift.genomics.shuffle`: dinucleotide-shuffled (and plainly shuffled) references.
- :mod:`~deltalift.genomics.hypothetical`: hypothetical contributions, a ``custom_attribution_func``.
- :mod:`~deltalift.genomics.modisco`: ``.npz`` inputs for TF-MoDISco (tfmodisco-lite).
- :mod:`~deltalift.genomics.logo`: sequence logos (needs ``pip install 'deltalift[plot]'``).

A typical run::

    X = one_hot_encode_fasta("peaks.fa")                               # (N, 4, L)
    refs = dinucleotide_shuffle(X, n=20, random_state=0)               # (N, 20, 4, L)
    explainer = DeepLift(model)
    hyp = torch.stack([
        explainer.attribute(X[i].expand(20, -1, -1), baselines=refs[i], target=0,
                            custom_attribution_func=hypothetical_contributions).mean(0)
        for i in range(len(X))
    ])
    save_modisco_inputs(X, hyp, "ohe.npz", "attr.npz")    # modisco motifs -s ohe.npz -a attr.npz -n 2000
"""

from deltalift.genomics.hypothetical import hypothetical_contributions
from deltalift.genomics.logo import plot_logo
from deltalift.genomics.modisco import load_modisco_inputs, save_modisco_inputs
from deltalift.genomics.one_hot import decode_one_hot, one_hot_encode, one_hot_encode_fasta, read_fasta
from deltalift.genomics.shuffle import dinucleotide_shuffle, shuffle

__all__ = [
    "decode_one_hot",
    "dinucleotide_shuffle",
    "hypothetical_contributions",
    "load_modisco_inputs",
    "one_hot_encode",
    "one_hot_encode_fasta",
    "plot_logo",
    "read_fasta",
    "save_modisco_inputs",
    "shuffle",
]
