"""DeepLIFT-SHAP on a BPNet-like model: deltalift against tangermeme and Captum, each at its best batch size.

BPNet-like: a 21-bp convolution, 8 dilated residual Conv1d layers (64 filters, dilation 2..256),
global average pooling and a dense head; 1000 bp one-hot sequences; random weights.  8 sequences
x 20 dinucleotide-shuffled references, the same references for every tool, in one process.

Each tool's batch size (pairs of a sequence and a reference evaluated at once) is swept over
``--batch-sizes`` first (the median of three timed runs per size after two warm-ups); then the
tools run at their best size, ``--repeats`` times interleaved, and the medians are reported.  Captum's
``DeepLiftShap`` takes one reference set for a whole batch, so with references per sequence it
runs per sequence (20 pairs a call); Captum's ``DeepLift`` on the explicit (sequence, reference)
pairs, averaged per sequence, is the same computation in batches of any size, and is swept.
Outputs are compared per position (tangermeme projects onto the observed base).

A floor is timed beside them: the plain input gradient of the target on the n x k reference rows
(in batches, swept too).  Every exact DeepLIFT-SHAP must evaluate the model at each of the n x k
references and take a backward pass per pair (the multipliers differ per pair), which is what
that gradient costs; the tools' times over it show what the rules and their bookkeeping add.

deltalift runs 1-D convolutions as channels-last 2-D ones (:mod:`deltalift.conv_layout`), which
the model's own forward (and so the peers and the gradient) does not; two more rows separate
what that layout contributes: deltalift with it undone, and the floor with it.

glibc's allocator hands freed tensors of a few MiB back to the kernel and the next ones take
fresh pages (page faults, each zeroed); with ``--keep-freed-memory`` it keeps them, for every
tool alike (:func:`deltalift.runtime.keep_freed_memory`, which deltalift's command line applies).

``--alone TOOL`` times one tool at one batch size in a process of its own, with its page faults.

Run:  python benchmarks/bench_deeplift_shap.py [--repeats 5] [--batch-sizes 5,10,20,40,80,160]
          [--keep-freed-memory] [--alone deltalift|tangermeme|captum]
"""

from __future__ import annotations

import argparse
import copy
import resource
import statistics
import time
import warnings
from collections.abc import Callable
from unittest import mock

import torch
import torch.nn.functional as F
from torch import nn

from deltalift import DeepLiftShap, conv_layout
from deltalift.conv_layout import convolution
from deltalift.runtime import keep_freed_memory
from machine import describe


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


def captum_shap(model: nn.Module, x: torch.Tensor, refs: torch.Tensor, batch_size: int = 0) -> torch.Tensor:
    """Captum's DeepLiftShap takes one reference set for the batch: run it per sequence."""
    from captum.attr import DeepLiftShap as CaptumDeepLiftShap

    explainer = CaptumDeepLiftShap(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.cat([explainer.attribute(x[i : i + 1], refs[i], target=0) for i in range(x.shape[0])])


def captum_pairs(model: nn.Module, x: torch.Tensor, refs: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Captum's DeepLift on the (sequence, reference) pairs, ``batch_size`` pairs a call,
    contributions averaged over each sequence's references (DeepLIFT-SHAP)."""
    from captum.attr import DeepLift as CaptumDeepLift

    n, k = refs.shape[:2]
    inputs = x[:, None].expand_as(refs).reshape(n * k, *x.shape[1:])
    baselines = refs.reshape(n * k, *x.shape[1:])
    explainer = CaptumDeepLift(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        parts = [
            explainer.attribute(inputs[i : i + batch_size], baselines[i : i + batch_size], target=0)
            for i in range(0, n * k, batch_size)
        ]
    return torch.cat(parts).reshape(n, k, *x.shape[1:]).mean(1)


def tangermeme_shap(model: nn.Module, x: torch.Tensor, refs: torch.Tensor, batch_size: int) -> torch.Tensor:
    from tangermeme.deep_lift_shap import deep_lift_shap

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return deep_lift_shap(model, x, target=0, references=refs, batch_size=batch_size, verbose=False)


def gradient_floor(model: nn.Module, x: torch.Tensor, refs: torch.Tensor, batch_size: int) -> torch.Tensor:
    """The input gradient of the target at the n x k reference rows, ``batch_size`` rows a call:
    the model's forward and backward at every pair, without any DeepLIFT rule (not an attribution)."""
    rows = refs.reshape(-1, *x.shape[1:])
    parts = []
    for i in range(0, rows.shape[0], batch_size):
        chunk = rows[i : i + batch_size].detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(model(chunk)[:, 0].sum(), chunk)
        parts.append(grad)
    return torch.cat(parts)


def gradient_floor_length_major(model: nn.Module, x: torch.Tensor, refs: torch.Tensor, batch_size: int) -> torch.Tensor:
    """:func:`gradient_floor` with the model's ``Conv1d`` layers run in deltalift's layout
    (channels-last 2-D convolutions, outputs length-major, :mod:`deltalift.conv_layout`): the
    same floor for a walk that runs them so."""

    def conv1d(h, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):  # type: ignore[no-untyped-def]
        return convolution(h, weight, bias, stride, padding, dilation, False, [0], groups)

    with mock.patch.object(F, "conv1d", conv1d):  # what nn.Conv1d calls
        return gradient_floor(model, x, refs, batch_size)


def deltalift_shap(model: nn.Module, x: torch.Tensor, refs: torch.Tensor, batch_size: int) -> torch.Tensor:
    return DeepLiftShap(model, batch_size=batch_size).attribute(x, refs, target=0)


#: Each model's copy for :func:`deltalift_shap_row_major`, by the model's ``id``.
_row_major_copies: dict[int, nn.Module] = {}


def deltalift_shap_row_major(model: nn.Module, x: torch.Tensor, refs: torch.Tensor, batch_size: int) -> torch.Tensor:
    """deltalift with its 1-D convolutions run as PyTorch runs them (channels-first, row-major
    outputs): what the layout contributes.  On a copy of the model, whose captured and recorded
    programs are its own: the layout is chosen when a program is recorded, so the model's own
    program, recorded length-major, would be replayed here."""
    if id(model) not in _row_major_copies:
        _row_major_copies[id(model)] = copy.deepcopy(model)
    with mock.patch.object(conv_layout, "runs_length_major", lambda x: False):
        return deltalift_shap(_row_major_copies[id(model)], x, refs, batch_size)


Tool = Callable[[nn.Module, torch.Tensor, torch.Tensor, int], torch.Tensor]


def best_batch_size(tool: Tool, model: nn.Module, x: torch.Tensor, refs: torch.Tensor, sizes: list[int]) -> int:
    """The batch size at which ``tool`` was fastest: per size two warm-up runs (deltalift's
    default backend interprets a new batch shape's first call and records its second), then
    the median of three timed runs."""
    times = {}
    for size in sizes:
        for _ in range(2):
            tool(model, x, refs, size)
        runs = []
        for _ in range(3):
            start = time.perf_counter()
            tool(model, x, refs, size)
            runs.append(time.perf_counter() - start)
        times[size] = statistics.median(runs)
    print("    " + ", ".join(f"{size}: {seconds:.2f} s" for size, seconds in times.items()))
    return min(times, key=times.__getitem__)


#: The tools ``--alone`` times, each in a process of its own.
ALONE: dict[str, Tool] = {"deltalift": deltalift_shap, "tangermeme": tangermeme_shap, "captum": captum_pairs}


def time_alone(tool: Tool, model: nn.Module, x: torch.Tensor, refs: torch.Tensor, size: int, repeats: int) -> None:
    """The median time of ``tool`` at ``size`` pairs a call and its minor page faults, in this
    process alone (no other tool has run, so the allocator's state is the tool's own)."""
    for _ in range(3):
        tool(model, x, refs, size)
    seconds, faults = [], []
    for _ in range(repeats):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        start = time.perf_counter()
        tool(model, x, refs, size)
        seconds.append(time.perf_counter() - start)
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    print(f"batch {size}: {statistics.median(seconds):.3f} s, {statistics.median(faults):.0f} minor page faults a call")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--sequences", type=int, default=8)
    parser.add_argument("--references", type=int, default=20)
    parser.add_argument("--length", type=int, default=1000)
    parser.add_argument("--batch-sizes", default="5,10,20,40,80,160", help="pairs per batch, swept for every tool")
    parser.add_argument(
        "--keep-freed-memory",
        action="store_true",
        help="glibc keeps freed memory for reuse, for every tool (deltalift.runtime.keep_freed_memory)",
    )
    parser.add_argument(
        "--alone",
        choices=sorted(ALONE),
        help="time this tool alone at the first of --batch-sizes (three warm-ups), with its page faults",
    )
    args = parser.parse_args()
    if args.keep_freed_memory and not keep_freed_memory():
        parser.error("--keep-freed-memory needs glibc")
    sizes = [int(s) for s in args.batch_sizes.split(",")]
    torch.manual_seed(0)
    model = BPNetLike().eval()
    x = random_one_hot(args.sequences, args.length, torch.Generator().manual_seed(1))
    refs = shuffled_references(x, args.references, seed=2)
    if args.alone:
        time_alone(ALONE[args.alone], model, x, refs, sizes[0], args.repeats)
        return
    print(describe())
    print(
        f"BPNet-like, {args.sequences} sequences x {args.references} references x {args.length} bp, "
        f"batch sizes swept over {sizes}, median of {args.repeats}, "
        f"glibc {'keeps' if args.keep_freed_memory else 'returns'} freed memory\n"
    )
    tools: dict[str, Tool] = {
        "deltalift": deltalift_shap,
        "tangermeme": tangermeme_shap,
        "captum DeepLift on pairs": captum_pairs,
        "captum DeepLiftShap per sequence": captum_shap,
    }
    reference_result = deltalift_shap(model, x, refs, 64)
    fns: dict[str, Callable[[], object]] = {}
    chosen: dict[str, int] = {}
    tools["deltalift, convolutions row-major"] = deltalift_shap_row_major
    tools["floor: input gradient at the n x k reference rows"] = gradient_floor
    tools["floor, convolutions length-major"] = gradient_floor_length_major
    floors = (gradient_floor, gradient_floor_length_major)
    for name, tool in tools.items():
        try:
            result = tool(model, x, refs, sizes[0])
            if tool in floors:
                print(f"  {name} (not an attribution); batch sizes:")
            else:
                difference = (result.sum(1) - reference_result.sum(1)).abs().max().item()
                print(f"  {name}: max |difference| from deltalift per position {difference:.2e}; batch sizes:")
            size = args.references if tool is captum_shap else best_batch_size(tool, model, x, refs, sizes)
            if tool is captum_shap:
                print(f"    {args.references} (one sequence's references a call)")
        except Exception as exc:  # a peer that is not installed or refuses the model
            print(f"  {name}: not run ({type(exc).__name__}: {str(exc).splitlines()[0][:100]})")
            continue
        chosen[name] = size
        fns[name] = lambda tool=tool, size=size: tool(model, x, refs, size)
    print()
    timings = interleaved_medians(fns, args.repeats)
    for name, seconds in timings.items():
        ratio = "" if name == "deltalift" else f"   {seconds / timings['deltalift']:.2f}x deltalift's time"
        print(f"{name:<50} batch {chosen[name]:>4}  {seconds:7.3f} s{ratio}")


if __name__ == "__main__":
    main()
