"""DeepLift against a plain input gradient (and Captum's DeepLift), per architecture and backend.

torchvision architectures with random weights, one shared zero reference, target class 3, every
tool in this one process on the same batch.  For each architecture:

- the *first call* of each tool, timed on its own (for deltalift it includes capturing the model
  with ``torch.export``; under ``auto``, the default, the first call is interpreted and the
  second records the walk, reported as ``second call``; ``compiled`` compiles at its second);
- ``auto``, the default: the shared zero reference's side of the walk is kept from one call to
  the next (``reuse_reference``'s default for a reference of batch size one; the same reference
  and weights every call, as when a dataset is explained batch by batch against one baseline);
- ``auto-reuse``: the same with ``reuse_reference=False``, what a call costs whose reference or
  weights changed since the last (the reference side computed again);
- *warm calls*: the median of ``--repeats`` timed runs, interleaved across the tools (one run of
  each per round, so that a change of machine load affects every tool alike);
- the outputs of a call after the timed ones compared (so the fast path's are replayed, not the
  recording's own): every tool against deltalift's interpreter (max difference relative to the
  largest contribution), Captum where it accepts the model.

Run:  python benchmarks/bench_deeplift.py [--models resnet50,vit_b_16] [--size 224] [--batch 4]
          [--backends auto,auto-reuse,interpreter] [--no-captum] [--repeats 9] [--device cpu|cuda]
          [--dtype float32|bfloat16]
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from collections.abc import Callable

import torch

from deltalift.engine import DeepLiftOptions, deeplift
from machine import describe
from models import torchvision_model

MODELS = ("resnet50", "efficientnet_b0", "vit_b_16", "convnext_tiny", "mobilenet_v3_large", "vgg11", "resnet18")


def synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def timed(fn: Callable[[], object], device: str) -> float:
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


def interleaved_medians(fns: dict[str, Callable[[], object]], repeats: int, device: str) -> dict[str, float]:
    """Median seconds of each function, one run of each per round."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            times[name].append(timed(fn, device))
    return {name: statistics.median(values) for name, values in times.items()}


def input_gradient(model: torch.nn.Module, x: torch.Tensor, target: int) -> torch.Tensor:
    x = x.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(model(x)[:, target].sum(), x)
    return grad


def deltalift_call(model: torch.nn.Module, x: torch.Tensor, backend: str) -> torch.Tensor:
    """``backend``, or ``"<backend>-reuse"``: with ``reuse_reference=False`` (the reference side
    computed at every call, as when the reference or the weights change between calls)."""
    name, reuse = backend.removesuffix("-reuse"), not backend.endswith("-reuse")
    options = DeepLiftOptions(backend=name, reuse_reference=None if reuse else False)
    return deeplift(model, x, 0.0, 3, None, options).contributions[0]


def captum_deeplift(model: torch.nn.Module, x: torch.Tensor, target: int) -> torch.Tensor:
    from captum.attr import DeepLift as CaptumDeepLift

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return CaptumDeepLift(model).attribute(x, baselines=torch.zeros_like(x), target=target)


def relative_difference(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().float(), b.detach().float()
    return float((a - b).abs().max() / (b.abs().max() + 1e-30))


def benchmark(name: str, args: argparse.Namespace) -> list[str]:
    """The rows of one architecture: first calls, warm medians, ratios to the gradient."""
    torch.manual_seed(0)
    dtype = getattr(torch, args.dtype)
    model = torchvision_model(name).to(args.device, dtype)
    x = torch.randn(args.batch, 3, args.size, args.size, device=args.device, dtype=dtype)
    fns: dict[str, Callable[[], object]] = {"grad": lambda: input_gradient(model, x, 3)}
    for backend in args.backends:
        fns[backend] = lambda backend=backend: deltalift_call(model, x, backend)
    if args.captum:
        fns["captum"] = lambda: captum_deeplift(model, x, 3)
    first: dict[str, float] = {}
    second: dict[str, float] = {}
    for tool, fn in list(fns.items()):
        try:
            first[tool] = timed(fn, args.device)
            second[tool] = timed(fn, args.device)
        except Exception as exc:  # Captum refuses some models (a ReLU module used twice)
            print(f"  ({tool} on {name}: {type(exc).__name__}: {str(exc).splitlines()[0][:100]})")
            del fns[tool]
    warm = interleaved_medians(fns, args.repeats, args.device)
    warm_outputs = {tool: fn() for tool, fn in fns.items() if tool != "grad"}  # replayed, for the fast path
    base = warm_outputs.get("interpreter")
    rows = []
    for tool in fns:
        agreement = ""
        if base is not None and tool not in ("grad", "interpreter"):
            agreement = f"{relative_difference(warm_outputs[tool], base):.1e}"  # type: ignore[arg-type]
        ratio = warm[tool] / warm["grad"]
        per_second = args.batch / warm[tool]
        rows.append(
            f"| {name} | {tool} | {first[tool]:.2f} s | {second[tool]:.2f} s | {warm[tool]:.3f} s | "
            f"{ratio:.2f}x | {per_second:.1f} | {agreement} |"
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--backends", default="auto,auto-reuse,interpreter", help="'-reuse': reuse_reference=False")
    parser.add_argument("--no-captum", dest="captum", action="store_false", help="leave out Captum's DeepLift")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--threads", type=int, default=0, help="intra-op threads (0: torch's default)")
    args = parser.parse_args()
    args.backends = [b for b in args.backends.split(",") if b]
    if args.threads:
        torch.set_num_threads(args.threads)
    print(describe())
    print(
        f"batch {args.batch} x 3 x {args.size} x {args.size}, {args.dtype} on {args.device}, zero reference, "
        f"warm: median of {args.repeats} interleaved runs\n"
    )
    print("| model | tool | first call | second call | warm call | / gradient | attributions/s | vs interpreter |")
    print("|---|---|---|---|---|---|---|---|")
    for name in args.models.split(","):
        for row in benchmark(name, args):
            print(row, flush=True)


if __name__ == "__main__":
    main()
