"""Throughput of deltalift's dinucleotide shuffle against tangermeme's, on one-hot DNA.

Random ACGT sequences (default 100 x 1000 bp), 20 shuffles each, from one-hot ``(N, 4, L)`` to
one-hot ``(N, n, 4, L)`` float32. Each figure is the median of ``--repeats`` timed runs after one
warm-up run (which, for tangermeme, compiles its numba kernel). tangermeme runs on one thread
(``n_jobs=1``), as deltalift does; it is skipped when not installed.

Run:  python benchmarks/bench_shuffle.py [--sequences 100] [--length 1000] [--shuffles 20] [--repeats 7]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch

from deltalift.genomics import dinucleotide_shuffle, one_hot_encode


def median_seconds(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sequences", type=int, default=100)
    parser.add_argument("--length", type=int, default=1000)
    parser.add_argument("--shuffles", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--with-n", action="store_true", help="put runs of N in the sequences")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    sequences = ["".join(rng.choice(list("ACGT"), args.length)) for _ in range(args.sequences)]
    if args.with_n:
        sequences = [s[:100] + "N" * 20 + s[120:] for s in sequences]
    X = one_hot_encode(sequences)
    print(
        f"{args.sequences} sequences x {args.length} bp x {args.shuffles} shuffles, "
        f"median of {args.repeats}, torch threads {torch.get_num_threads()}"
    )
    ours = median_seconds(lambda: dinucleotide_shuffle(X, n=args.shuffles, random_state=0), args.repeats)
    positions = args.sequences * args.length * args.shuffles
    print(f"deltalift   {ours * 1e3:8.1f} ms   {positions / ours / 1e6:6.1f} M positions/s")
    try:
        from tangermeme.ersatz import dinucleotide_shuffle as tangermeme_shuffle
    except ImportError:
        print("tangermeme  not installed")
        return
    theirs = median_seconds(
        lambda: tangermeme_shuffle(X, n=args.shuffles, random_state=0, allow_N=args.with_n), args.repeats
    )
    print(f"tangermeme  {theirs * 1e3:8.1f} ms   {positions / theirs / 1e6:6.1f} M positions/s")
    print(f"tangermeme / deltalift time ratio: {theirs / ours:.2f}")


if __name__ == "__main__":
    main()
