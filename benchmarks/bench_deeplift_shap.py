"""DeepLIFT-SHAP on a BPNet-like model: deltalift against tangermeme and Captum.

BPNet-like: a 21-bp convolution, 8 dilated residual Conv1d layers (64 filters, dilation 2..256),
global average pooling and a dense head; 1000 bp one-hot sequences; random weights.  8 sequences
x 20 dinucleotide-shuffled references, the same references for every tool, in one process;
medians of ``--repeats`` interleaved runs after a warm-up (deltalift's capture happens in the
warm-up).

Run:  python benchmarks/bench_deeplift_shap.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from deltalift import DeepLiftShap


class BPNetLike(nn.Module):
    def __init__(self, filters: int = 64, layers: int = 8, outputs: int = 1) -> None:
        super().__init__()
        self.first = nn.Conv1d(4, filters, 21, padding=10)
        self.dilated = nn.ModuleList(
            nn.Conv1d(filters, filters, 3, padding=2**i, dilation=2**i) for i in range(1, layers + 1)
        )
        self.relus = nn.ModuleList(nn.ReLU() for _ in range(layers + 1))
        self.head = nn.Linear(filters, outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.relus[0](self.first(x))
        for conv, relu in zip(self.dilated, self.relus[1:]):
            h = h + relu(conv(h))
        return self.head(h.mean(-1))


def random_one_hot(n: int, length: int, generator: torch.Generator) -> torch.Tensor:
    return F.one_hot(torch.randint(0, 4, (n, length), generator=generator), 4).transpose(1, 2).float()


def shuffled_references(x: torch.Tensor, k: int, seed: int) -> torch.Tensor:
    """(N, K, 4, L) references: dinucleotide shuffles where deltalift.genomics has them."""
    try:
        from deltalift.genomics import dinucleotide_shuffle

        return dinucleotide_shuffle(x, n=k, random_state=seed).to(x.dtype)
    except ImportError:  # pragma: no cover - before the genomics module existed
        generator = torch.Generator().manual_seed(seed)
        return torch.stack([x[:, :, torch.randperm(x.shape[-1], generator=generator)] for _ in range(k)], 1)


def interleaved_medians(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median seconds of each function, one run of each per round (so that a change of machine
    load affects every tool alike), after one warm-up run each."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def captum_shap(model: nn.Module, x: torch.Tensor, refs: torch.Tensor) -> torch.Tensor:
    """Captum's DeepLiftShap takes one reference set for the batch: run it per sequence."""
    from captum.attr import DeepLiftShap as CaptumDeepLiftShap

    explainer = CaptumDeepLiftShap(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.cat([explainer.attribute(x[i : i + 1], refs[i], target=0) for i in range(x.shape[0])])


def tangermeme_shap(model: nn.Module, x: torch.Tensor, refs: torch.Tensor) -> torch.Tensor:
    from tangermeme.deep_lift_shap import deep_lift_shap

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return deep_lift_shap(model, x, target=0, references=refs, batch_size=len(refs[0]) * len(x), verbose=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--sequences", type=int, default=8)
    parser.add_argument("--references", type=int, default=20)
    parser.add_argument("--length", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=64, help="deltalift's pairs per batch (its default)")
    args = parser.parse_args()
    torch.manual_seed(0)
    model = BPNetLike().eval()
    x = random_one_hot(args.sequences, args.length, torch.Generator().manual_seed(1))
    refs = shuffled_references(x, args.references, seed=2)
    ours = DeepLiftShap(model, batch_size=args.batch_size)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}")
    print(
        f"BPNet-like, {args.sequences} sequences x {args.references} references x {args.length} bp, median of {args.repeats}\n"
    )
    fns: dict[str, Callable[[], object]] = {"deltalift": lambda: ours.attribute(x, refs, target=0)}
    reference_result = ours.attribute(x, refs, target=0)
    for name, fn in (("tangermeme", tangermeme_shap), ("captum", captum_shap)):
        try:
            result = fn(model, x, refs)  # tangermeme projects onto the observed base: compare per position
            difference = (result.sum(1) - reference_result.sum(1)).abs().max().item()
            fns[name] = lambda fn=fn: fn(model, x, refs)
            print(f"  {name}: max |difference| from deltalift per position {difference:.2e}")
        except Exception as exc:  # a peer that is not installed or refuses the model
            print(f"  {name}: not run ({type(exc).__name__}: {str(exc).splitlines()[0][:100]})")
    print()
    timings = interleaved_medians(fns, args.repeats)
    for name, seconds in timings.items():
        ratio = "" if name == "deltalift" else f"   {seconds / timings['deltalift']:.2f}x deltalift's time"
        print(f"{name:<11} {seconds:7.3f} s{ratio}")


if __name__ == "__main__":
    main()
