"""Peak memory of a DeepLift call against a plain input gradient on the same batch, per architecture.

Each measurement runs in a fresh Python process (``--one`` below), so that neither the
allocator's cache nor another tool's buffers are counted: the process builds the model (random
weights) and the batch, makes one warm-up call of the tool at batch 2 (for DeepLift this
captures the model; the captured graph serves every batch size), returns freed memory to the
system (``malloc_trim``), and then samples its resident set size every millisecond from a
second thread while one call at the measured batch runs.  The figure is the call's peak RSS
above the RSS just before it, with glibc's ``MALLOC_MMAP_THRESHOLD_`` fixed at 64 KiB so that
the resident size follows the live tensors (three runs agree to 1 MiB).  With ``--backend auto``
or ``traced`` two more warm-up calls at the measured batch come first, so that the measured calls
replay the recorded program (the default ``interpreter`` measures the walk op by op), and two
calls are measured: the first replay computes the reference side and keeps it for the next call
(``reuse_reference``, for the shared zero reference), the second reuses it; what is kept is live
between the calls, so it is part of the peak, and is also reported on its own (beyond the
weights, of which it keeps views).  On CUDA it is ``torch.cuda.max_memory_allocated`` above the
allocation before the call (``tracemalloc`` does not see torch's CPU allocator).

Run:  python benchmarks/bench_memory.py [--models resnet50,vit_b_16] [--size 224] [--batch 4]
          [--backend interpreter] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import subprocess
import sys
import threading
import time

import torch

from models import torchvision_model

MODELS = ("resnet50", "efficientnet_b0", "vit_b_16", "convnext_tiny", "mobilenet_v3_large", "vgg11", "resnet18")


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def release_freed_memory() -> None:
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:  # not glibc
        pass


def call(tool: str, model: torch.nn.Module, x: torch.Tensor, backend: str) -> None:
    if tool == "grad":
        leaf = x.detach().requires_grad_(True)
        torch.autograd.grad(model(leaf)[:, 3].sum(), leaf)
    else:
        from deltalift.engine import DeepLiftOptions, deeplift

        deeplift(model, x, 0.0, 3, None, DeepLiftOptions(backend=backend))


def kept_bytes(model: torch.nn.Module) -> int:
    """The bytes of the reference side a replayed DeepLIFT program keeps between calls, beyond
    the model's own parameters and buffers (of which it keeps views)."""
    from deltalift import fast_path

    side = fast_path._holder() if fast_path._holder is not None else None
    weights = {t.untyped_storage().data_ptr() for t in [*model.parameters(), *model.buffers()]}
    kept = {v.untyped_storage().data_ptr(): v.untyped_storage().nbytes() for v in (side.values or [])} if side else {}
    return sum(size for pointer, size in kept.items() if pointer not in weights)


def measure_one(tool: str, name: str, size: int, batch: int, backend: str, device: str) -> dict[str, int]:
    """The peak memory of the measured calls above the memory before them, and what DeepLIFT
    keeps between calls (included in the peak), in bytes, measured in this (fresh) process."""
    torch.manual_seed(0)
    model = torchvision_model(name).to(device)
    x = torch.randn(batch, 3, size, size, device=device)
    call(tool, model, x[:2].clone(), backend)  # warm-up: capture, allocator start-up
    # replayed: the first measured call computes the reference side and keeps it, the second reuses it
    measured_calls = 1 if backend == "interpreter" else 2
    if backend != "interpreter":  # the measured calls replay the program recorded at this batch
        for _ in range(2):
            call(tool, model, x, backend)
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        for _ in range(measured_calls):
            call(tool, model, x, backend)
        torch.cuda.synchronize()
        return {"peak": torch.cuda.max_memory_allocated() - before, "kept": kept_bytes(model)}
    release_freed_memory()
    before = rss_bytes()
    peak = [before]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], rss_bytes())
            time.sleep(0.001)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    for _ in range(measured_calls):
        call(tool, model, x, backend)
    peak[0] = max(peak[0], rss_bytes())
    done.set()
    sampler.join()
    return {"peak": peak[0] - before, "kept": kept_bytes(model)}


def measure(tool: str, name: str, args: argparse.Namespace) -> dict[str, int]:
    command = [sys.executable, __file__, "--one", tool, "--models", name, "--size", str(args.size)]
    command += ["--batch", str(args.batch), "--backend", args.backend, "--device", args.device]
    # Every allocation of 64 KiB or more its own mapping, returned to the system when freed: the
    # resident size then follows the live tensors (glibc's adaptive threshold otherwise keeps
    # freed blocks in the heap by chance, which moved VGG-11's figure between 1.3x and 1.8x).
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(64 * 1024)}
    out = subprocess.run(command, check=True, capture_output=True, text=True, env=env).stdout
    return dict(json.loads(out.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--backend", default="interpreter")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure_one(args.one, args.models, args.size, args.batch, args.backend, args.device)))
        return
    sys.path.insert(0, os.path.dirname(__file__))
    from machine import describe

    print(describe())
    print(f"batch {args.batch} x 3 x {args.size} x {args.size}, float32 on {args.device}, backend {args.backend}\n")
    print("| model | input gradient | DeepLift | of which kept between calls | DeepLift / gradient |")
    print("|---|---|---|---|---|")
    mib = 2**20
    for name in args.models.split(","):
        grad = measure("grad", name, args)["peak"]
        ours = measure("deeplift", name, args)
        print(
            f"| {name} | {grad / mib:.0f} MiB | {ours['peak'] / mib:.0f} MiB | {ours['kept'] / mib:.0f} MiB | "
            f"{ours['peak'] / grad:.2f}x |",
            flush=True,
        )


if __name__ == "__main__":
    main()
