"""DeepLift against a plain input gradient and Captum's DeepLift, side by side.

VGG-11 and ResNet-18 (torchvision, random weights), batch 16, 3x64x64, one shared zero
reference, target class 3.  Every tool runs in this one process on the same batch; each figure
is the median of ``--repeats`` timed runs, interleaved across the tools, after one warm-up run
each (which, for deltalift, includes capturing the model with torch.export; the capture is
cached per input signature).

Run:  python benchmarks/bench_deeplift.py [--repeats 7] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from collections.abc import Callable

import torch
import torchvision

from deltalift import DeepLift


def interleaved_medians(fns: dict[str, Callable[[], object]], repeats: int, device: str) -> dict[str, float]:
    """Median seconds of each function, the runs interleaved (one of each per round) so that a
    change of machine load during the benchmark affects every tool alike; one warm-up each."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            if device == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            fn()
            if device == "cuda":
                torch.cuda.synchronize()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def input_gradient(model: torch.nn.Module, x: torch.Tensor, target: int) -> torch.Tensor:
    x = x.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(model(x)[:, target].sum(), x)
    return grad


def captum_deeplift(model: torch.nn.Module, x: torch.Tensor, target: int) -> torch.Tensor:
    from captum.attr import DeepLift as CaptumDeepLift

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return CaptumDeepLift(model).attribute(x, baselines=torch.zeros_like(x), target=target)


def benchmark_row(name: str, args: argparse.Namespace) -> str:
    """One table row: the three timings of one architecture and their ratios."""
    model = getattr(torchvision.models, name)().to(args.device).eval()
    x = torch.randn(args.batch, 3, args.size, args.size, device=args.device)
    method = DeepLift(model)
    fns: dict[str, Callable[[], object]] = {
        "grad": lambda: input_gradient(model, x, 3),
        "deltalift": lambda: method.attribute(x, baselines=0.0, target=3),
    }
    try:
        captum_deeplift(model, x, 3)
        fns["captum"] = lambda: captum_deeplift(model, x, 3)
    except Exception as exc:  # Captum refuses some models (a ReLU module used twice)
        print(f"  (Captum on {name}: {type(exc).__name__}: {str(exc).splitlines()[0][:100]})")
    t = interleaved_medians(fns, args.repeats, args.device)
    captum_text, speedup = f"{'refused':>10}", f"{'-':>10}"
    if "captum" in t:
        captum_text, speedup = f"{t['captum']:10.3f}", f"{t['captum'] / t['deltalift']:9.2f}x"
    return f"{name:<10} {t['grad']:11.3f} {t['deltalift']:10.3f} {captum_text} {t['deltalift'] / t['grad']:7.2f}x {speedup}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, device {args.device}, threads {torch.get_num_threads()}")
    print(f"batch {args.batch} x 3 x {args.size} x {args.size}, zero reference, median of {args.repeats}\n")
    header = f"{'model':<10} {'input grad':>11} {'deltalift':>10} {'captum':>10} {'dl/grad':>8} {'captum/dl':>10}"
    print(header)
    print("-" * len(header))
    for name in ("vgg11", "resnet18"):
        print(benchmark_row(name, args))


if __name__ == "__main__":
    main()
