"""DeepLift against a plain input gradient and Captum's DeepLift, side by side.

VGG-11 and ResNet-18 (torchvision, random weights), batch 16, 3x64x64, one shared zero
reference, target class 3.  Every tool runs in this one process on the same batch; each figure
is the median of ``--repeats`` timed runs after one warm-up run (which, for deltalift, includes
capturing the model with torch.export; the capture is cached per input signature).

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


def median_seconds(fn: Callable[[], object], repeats: int, device: str) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


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
    grad_s = median_seconds(lambda: input_gradient(model, x, 3), args.repeats, args.device)
    ours_s = median_seconds(lambda: method.attribute(x, baselines=0.0, target=3), args.repeats, args.device)
    try:
        captum_s = median_seconds(lambda: captum_deeplift(model, x, 3), args.repeats, args.device)
        captum_text, speedup = f"{captum_s:10.3f}", f"{captum_s / ours_s:9.2f}x"
    except Exception as exc:  # Captum refuses some models (a ReLU module used twice)
        captum_text, speedup = f"{'refused':>10}", f"{'-':>10}"
        print(f"  (Captum on {name}: {type(exc).__name__}: {str(exc).splitlines()[0][:100]})")
    return f"{name:<10} {grad_s:11.3f} {ours_s:10.3f} {captum_text} {ours_s / grad_s:7.2f}x {speedup}"


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
