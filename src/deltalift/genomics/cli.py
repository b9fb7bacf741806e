"""``deltalift genomics attribute``: DeepLIFT-SHAP of a sequence model on a FASTA of sequences, or genome-wide.

Two inputs:

- ``--fasta seqs.fa``: sequences of equal length, explained in memory (ohe.npz, attr.npz,
  contributions.npy, deltas.npy);
- ``--genome genome.fa`` with ``--regions peaks.bed`` (or ``--tile`` for whole chromosomes): windows
  of the model's input length read from an indexed genome, explained in resumable shards, in this
  process or on Ray (:func:`deltalift.runner.genomics.attribute_regions`).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

GENOMICS_EPILOG = """Explains each sequence against --n-shuffles dinucleotide-shuffled copies of itself
(DeepLIFT-SHAP) and writes to --out the files TF-MoDISco reads:
  ohe.npz   one-hot sequences (N, 4, L)
  attr.npz  hypothetical contributions (N, 4, L)  ->  modisco motifs -s ohe.npz -a attr.npz -n 2000
With --fasta, also contributions.npy (actual contributions, hypothetical x one-hot) and deltas.npy
(summation-to-delta per sequence and reference, ~0).
With --genome and --regions (BED or narrowPeak; windows of --width centred on each summit, or tiled
with --windows tiled --step), also regions.bed (the windows explained, in the order of the arrays),
deltas.npy, and contributions.bw (per-base contributions; overlapping windows averaged, or
--overlap nearest: the window whose centre is nearest). The work is cut into shards under
--out/shards: rerun the same command after an interruption to resume. --ray runs the shards on a
local Ray instance, --ray-address on a cluster (the --out folder must be shared by all nodes).

examples:
  deltalift genomics attribute --model chrombpnet.pt --head count --genome hg38.fa \\
      --regions peaks.narrowPeak --width 2114 --reverse-complement --out attr/
  deltalift genomics attribute --model model.pt2 --genome hg38.fa.gz --tile --chroms chr20 \\
      --windows tiled --step 1000 --width 2114 --ray-address auto --ray-gpus-per-actor 1"""


def _positive_int(text: str) -> int:
    from deltalift.cli import positive_int

    return positive_int(text)


def _names(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise argparse.ArgumentTypeError("expected comma-separated chromosome names")
    return names


def add_genomics_parser(commands: Any) -> None:
    """Add ``genomics attribute`` to the subcommands ``commands`` of ``deltalift``."""
    from deltalift.cli import _add_common

    genomics = commands.add_parser("genomics", help="DNA sequence models: DeepLIFT-SHAP, TF-MoDISco files, bigWig")
    tasks = genomics.add_subparsers(title="tasks", dest="task", metavar="TASK", required=True)
    attribute = tasks.add_parser(
        "attribute",
        help="explain a sequence model on a FASTA file or on genome regions",
        description="DeepLIFT-SHAP attributions of a saved sequence model for every sequence of a FASTA file, "
        "or for windows of a genome given by a BED / narrowPeak file.",
        epilog=GENOMICS_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    attribute.add_argument(
        "--model", required=True, type=Path, metavar="FILE", help="model file (.pt module, .pt2, bpnet-lite model)"
    )
    source = attribute.add_mutually_exclusive_group(required=True)
    source.add_argument("--fasta", type=Path, metavar="FILE", help="sequences of equal length")
    source.add_argument("--genome", type=Path, metavar="FILE", help="genome FASTA, plain or bgzipped (indexed)")
    where = attribute.add_argument_group("genome windows (with --genome)")
    where.add_argument("--regions", type=Path, metavar="BED", help="regions: BED or narrowPeak (summit column)")
    where.add_argument("--tile", action="store_true", help="tile whole chromosomes (no --regions)")
    where.add_argument("--width", type=_positive_int, default=2114, help="model input length (default: 2114)")
    where.add_argument(
        "--windows", choices=("summit", "tiled"), default="summit", help="summit-centred (default) or tiled windows"
    )
    where.add_argument("--step", type=_positive_int, default=None, help="tile length for --windows tiled")
    where.add_argument("--chroms", type=_names, default=None, metavar="LIST", help="only these chromosomes (a,b,c)")
    where.add_argument(
        "--exclude-chroms", type=_names, default=[], metavar="LIST", help="leave out these chromosomes (chrM,chrY)"
    )
    where.add_argument(
        "--edges",
        choices=("drop", "shift", "pad"),
        default="drop",
        help="windows leaving a chromosome: drop (default), shift inside, or pad with N",
    )
    where.add_argument("--overlap", choices=("mean", "nearest"), default="mean", help="bigWig overlap resolution")
    where.add_argument("--no-bigwig", action="store_true", help="do not write contributions.bw")
    where.add_argument("--shard-size", type=_positive_int, default=256, help="windows per shard (default: 256)")
    where.add_argument("--overwrite", action="store_true", help="discard shards of a run with other settings")
    where.add_argument("--ray", action="store_true", help="run the shards on a local Ray instance")
    where.add_argument("--ray-address", default=None, metavar="ADDRESS", help="run on this Ray cluster ('auto')")
    where.add_argument(
        "--ray-actors", type=_positive_int, default=None, help="Ray actors (default: one per GPU, else 2)"
    )
    where.add_argument("--ray-gpus-per-actor", type=float, default=0.0, metavar="G", help="GPUs per actor (default 0)")
    where.add_argument("--ray-cpus-per-actor", type=float, default=1.0, metavar="C", help="CPUs per actor (default 1)")
    attribute.add_argument("--head", choices=("count", "profile"), default=None, help="bpnet-lite head (default count)")
    attribute.add_argument("--target", type=int, default=0, metavar="INT", help="output index (default: 0)")
    attribute.add_argument(
        "--n-shuffles", type=_positive_int, default=20, metavar="K", help="references per sequence (default: 20)"
    )
    attribute.add_argument(
        "--batch-size",
        type=_positive_int,
        default=None,
        metavar="N",
        help="(sequence, reference) pairs per batch (default: one sequence's shuffles, the fastest on the CPU)",
    )
    attribute.add_argument(
        "--rule", default="rescale", choices=("rescale", "reveal_cancel", "genomics_default"), help="nonlinearity rule"
    )
    attribute.add_argument(
        "--reverse-complement", action="store_true", help="average with the reverse complement's attributions"
    )
    attribute.add_argument("--seed", type=int, default=0, help="seed of the shuffles (default: 0)")
    attribute.add_argument("--device", default="cpu", help="torch device to compute on (default: cpu)")
    _add_common(attribute, "output folder (default: deltalift-output)")
    attribute.set_defaults(run=run_genomics_attribute)


def run_genomics_attribute(args: argparse.Namespace) -> None:
    """Run ``deltalift genomics attribute`` with parsed arguments."""
    if args.genome is None:
        _check_fasta_options(args)
        _attribute_fasta(args)
    else:
        _attribute_genome(args)


def _check_fasta_options(args: argparse.Namespace) -> None:
    genome_only = {
        "--regions": args.regions is not None,
        "--tile": args.tile,
        "--ray": args.ray,
        "--ray-address": args.ray_address is not None,
        "--chroms": args.chroms is not None,
        "--exclude-chroms": bool(args.exclude_chroms),
    }
    given = [name for name, on in genome_only.items() if on]
    if given:
        raise ValueError(f"{', '.join(given)} need --genome (with --fasta the sequences are explained as they are)")


def _explained(model: Any, X: Any, args: argparse.Namespace) -> tuple[Any, Any]:
    """Hypothetical contributions and deltas of ``X`` (averaged with the reverse complement's if asked)."""
    import torch

    from deltalift.genomics import deep_lift_shap
    from deltalift.runner.genomics import pairs_per_call, reverse_complement

    inputs = torch.cat([X, reverse_complement(X)]) if args.reverse_complement else X
    hypothetical, deltas = deep_lift_shap(
        model,
        inputs,
        target=args.target,
        n_shuffles=args.n_shuffles,
        batch_size=pairs_per_call(args.batch_size, args.n_shuffles),
        hypothetical=True,
        random_state=args.seed,
        device=args.device,
        rule=args.rule,
        return_convergence_delta=True,
        show_progress=not args.no_progress,
    )
    if args.reverse_complement:
        n = len(X)
        hypothetical = (hypothetical[:n] + reverse_complement(hypothetical[n:])) / 2
        deltas = deltas.reshape(2 * n, -1)
        deltas = torch.cat([deltas[:n], deltas[n:]], dim=1).flatten()
    return hypothetical, deltas


def _attribute_fasta(args: argparse.Namespace) -> None:
    import numpy as np

    from deltalift.genomics import one_hot_encode_fasta, save_modisco_inputs
    from deltalift.genomics.models import load_sequence_model

    model = load_sequence_model(args.model, args.head, device=args.device)
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), None)
    X = one_hot_encode_fasta(args.fasta).to(device=args.device, dtype=dtype or None)
    hypothetical, deltas = _explained(model, X, args)
    args.out.mkdir(parents=True, exist_ok=True)
    save_modisco_inputs(X.cpu(), hypothetical.cpu(), args.out / "ohe.npz", args.out / "attr.npz")
    np.save(args.out / "contributions.npy", (hypothetical * X.cpu()).cpu().numpy())
    np.save(args.out / "deltas.npy", deltas.cpu().numpy())
    print(f"explained {X.shape[0]} sequences of {X.shape[2]} bp against {args.n_shuffles} shuffles each")
    print(f"max |summation-to-delta error| {deltas.abs().max().item():.2e}")
    print(f"wrote {args.out / 'ohe.npz'}, {args.out / 'attr.npz'}, contributions.npy and deltas.npy")
    print(f"next: modisco motifs -s {args.out / 'ohe.npz'} -a {args.out / 'attr.npz'} -n 2000")


def _attribute_genome(args: argparse.Namespace) -> None:
    import numpy as np

    from deltalift.runner.cli import ray_options
    from deltalift.runner.genomics import attribute_regions

    if (args.regions is None) == (not args.tile):
        raise ValueError("give --regions BED, or --tile to tile whole chromosomes (not both)")
    if args.tile and args.windows != "tiled":
        raise ValueError("--tile needs --windows tiled (and --step)")
    result = attribute_regions(
        args.model,
        args.genome,
        args.out,
        args.width,
        args.regions,
        windows=args.windows,
        step=args.step,
        chroms=args.chroms,
        exclude_chroms=args.exclude_chroms,
        edges=args.edges,
        head=args.head,
        target=args.target,
        n_shuffles=args.n_shuffles,
        batch_size=args.batch_size,
        random_state=args.seed,
        rule=args.rule,
        reverse_complement=args.reverse_complement,
        device=args.device,
        shard_size=args.shard_size,
        overwrite=args.overwrite,
        ray=ray_options(args),
        bigwig=not args.no_bigwig,
        overlap=args.overlap,
        show_progress=not args.no_progress,
    )
    run = result.run
    print(
        f"explained {len(result.windows)} windows of {args.width} bp against {args.n_shuffles} shuffles each "
        f"({run.computed} shards computed, {run.skipped} already done, {result.dropped} windows dropped at edges)"
    )
    deltas = np.load(result.files["deltas.npy"])
    print(f"max |summation-to-delta error| {np.abs(deltas).max():.2e}")
    print(f"wrote {', '.join(sorted(p.name for p in result.files.values()))} to {args.out}")
    print(f"next: modisco motifs -s {result.files['ohe.npz']} -a {result.files['attr.npz']} -n 2000")
