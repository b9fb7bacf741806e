"""The first DeepLift call in a fresh Python process, without and with the capture cache on disk.

For each architecture (torchvision, random weights, 224x224), two fresh subprocesses run one after
the other with the same, initially empty, cache folder (``DELTALIFT_CACHE_DIR``, a temporary
folder unless ``--cache-dir`` is given):

- the **first process** captures the model with ``torch.export`` (and stores the graph);
- the **second process** finds the graph on disk.

Each process builds the model, then times its first ``DeepLift(model).attribute(x, baselines=0.0,
target=3)`` call as a whole, the part of it spent in :func:`deltalift.capture.capture` (export and
decompositions, or reading the cache), and one warm call after it.  The attributions of the two
processes are compared (they must be identical), and the ratio second / first of the first call
is printed: the capture cache's target is at most 1/4 on ResNet-50.

Run:  python benchmarks/bench_first_call.py [--models resnet50,vit_b_16] [--batch 2] [--size 224]
          [--threads 2] [--cache-dir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

MODELS = ("resnet50", "vit_b_16")


def child(model_name: str, batch: int, size: int, threads: int, out: Path) -> None:
    """One fresh process: build the model, time the first and a warm DeepLift call."""
    started = time.perf_counter()
    import torch

    import deltalift.capture as capture_module
    from deltalift import DeepLift
    from models import torchvision_model

    imported = time.perf_counter() - started
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = torchvision_model(model_name)
    x = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(1))

    spent: list[float] = []
    real_capture = capture_module.capture

    def timed_capture(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return real_capture(*args, **kwargs)
        finally:
            spent.append(time.perf_counter() - start)

    for module in list(sys.modules.values()):  # every module that imported capture by name
        if getattr(module, "capture", None) is real_capture and module is not capture_module:
            module.capture = timed_capture  # type: ignore[attr-defined]
    capture_module.capture = timed_capture  # type: ignore[assignment]

    explainer = DeepLift(model)
    start = time.perf_counter()
    attributions = explainer.attribute(x, baselines=0.0, target=3)
    first = time.perf_counter() - start
    start = time.perf_counter()
    explainer.attribute(x, baselines=0.0, target=3)
    warm = time.perf_counter() - start
    torch.save(attributions, out.with_suffix(".pt"))
    result = {"import": imported, "first": first, "capture": sum(spent), "warm": warm}
    out.write_text(json.dumps(result))


def run_child(model: str, args: argparse.Namespace, cache_dir: Path, out: Path) -> dict[str, float]:
    env = dict(os.environ, DELTALIFT_CACHE_DIR=str(cache_dir), DELTALIFT_CACHE="1")
    env.setdefault("OMP_NUM_THREADS", str(args.threads))
    command = [sys.executable, __file__, "--child", model, "--batch", str(args.batch), "--size", str(args.size)]
    command += ["--threads", str(args.threads), "--out", str(out)]
    subprocess.run(command, env=env, check=True)
    result: dict[str, float] = json.loads(out.read_text())
    return result


def entries(cache_dir: Path) -> int:
    folder = cache_dir / "captures"
    return len(list(folder.glob("*.pt"))) if folder.is_dir() else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cache-dir", type=Path, default=None, help="an empty folder (default: a temporary one)")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.batch, args.size, args.threads, args.out)
        return

    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from machine import describe

    print(f"# machine: {describe()}")
    print(f"# batch {args.batch}, {args.size}x{args.size}, {args.threads} threads, random weights, zero reference")
    print(
        f"{'model':<12} {'process':<8} {'cache':<6} {'import s':>9} {'first call s':>13} {'capture s':>10} {'warm s':>8}"
    )
    with tempfile.TemporaryDirectory(prefix="deltalift-first-call-") as scratch:
        for model in args.models.split(","):
            cache_dir = args.cache_dir / model if args.cache_dir else Path(scratch) / model / "cache"
            cache_dir.mkdir(parents=True, exist_ok=True)
            if entries(cache_dir):
                raise SystemExit(f"{cache_dir} is not empty: the first process must capture")
            results = []
            for process in (1, 2):
                before = entries(cache_dir)
                out = Path(scratch) / f"{model}-{process}.json"
                result = run_child(model, args, cache_dir, out)
                hit = "hit" if before and entries(cache_dir) == before else "miss"
                results.append(result)
                print(
                    f"{model:<12} {process:<8} {hit:<6} {result['import']:>9.2f} {result['first']:>13.2f} "
                    f"{result['capture']:>10.2f} {result['warm']:>8.2f}",
                    flush=True,
                )
            a = torch.load(Path(scratch) / f"{model}-1.pt")
            b = torch.load(Path(scratch) / f"{model}-2.pt")
            same = "identical" if torch.equal(a, b) else f"differ by {(a - b).abs().max().item():.3g}"
            ratio = results[1]["first"] / results[0]["first"]
            print(f"{model:<12} second/first first call {ratio:.3f}; attributions of the two processes {same}")


if __name__ == "__main__":
    main()
