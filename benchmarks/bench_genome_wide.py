"""Genome-wide DeepLIFT-SHAP throughput on a ChromBPNet-sized model: regions per second, and 330K projected.

The model is bpnet-lite's ChromBPNet at its published size (accessibility BPNet 512 filters x 8
dilated layers, bias BPNet 128 x 4, input 2114 bp, output 1000 bp) with random weights, explained
at its count head (bpnet-lite's CountWrapper), each region against 20 dinucleotide shuffles of itself.
The genome is random (one chromosome); the regions are summit-centred 2114 bp windows.

Measured, each after a warm-up region (deltalift's capture, tangermeme's first call):

- deltalift, one process: :func:`deltalift.runner.genomics.attribute_regions` (reading the genome,
  shards, modisco files and bigWig included), ``--regions`` regions;
- tangermeme's ``deep_lift_shap`` on the same one-hot windows, at each batch size of ``--tangermeme-batches``
  ((sequence, reference) pairs per batch), the best one kept (warm-up: one region, one shuffle);
- deltalift on a local Ray instance with ``--ray-actors`` CPU actors (1 CPU each, one region per
  shard): the wall-clock rate (which includes starting the actors, loading and capturing the model
  in each), and the steady rate from the shards' compute times (what a long run approaches).

The projection for 330,000 regions (one chromosome of 1 kb ChromBPNet windows) is 330000 / rate.
Keep ``--regions`` small on a shared machine; ``--device cuda`` measures on a GPU.

Run:  python benchmarks/bench_genome_wide.py [--regions 4] [--device cpu] [--skip-ray] [--skip-tangermeme]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

WIDTH, N_SHUFFLES, REGIONS_PER_CHROMOSOME = 2114, 20, 330_000


def write_genome(folder: Path, n_regions: int, seed: int = 0) -> tuple[Path, Path]:
    rng = np.random.default_rng(seed)
    size = WIDTH * (n_regions + 2)
    sequence = "".join(rng.choice(list("ACGT"), size))
    fasta = folder / "genome.fa"
    fasta.write_text(">chr1\n" + "\n".join(sequence[i : i + 80] for i in range(0, size, 80)) + "\n")
    bed = folder / "peaks.narrowPeak"
    summits = [WIDTH + i * WIDTH for i in range(n_regions)]
    bed.write_text("".join(f"chr1\t{s - 100}\t{s + 100}\tpeak{i}\t0\t.\t0\t0\t0\t100\n" for i, s in enumerate(summits)))
    return fasta, bed


def line(label: str, regions: int, seconds: float, cpu_seconds: float | None = None) -> float:
    """Print and return the rate; ``cpu_seconds`` (the process's busy time) adds the rate per busy core,
    what an unloaded machine would give a single-threaded run."""
    rate = regions / seconds
    hours = REGIONS_PER_CHROMOSOME / rate / 3600
    text = (
        f"{label:<44} {regions:>3} regions in {seconds:7.1f} s: {rate:7.4f} regions/s -> 330K regions in {hours:8.0f} h"
    )
    if cpu_seconds:
        text += f" (CPU {cpu_seconds:.1f} s: {regions / cpu_seconds:.4f} regions per CPU-second)"
    print(text, flush=True)
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--regions", type=int, default=4, help="regions timed per engine (default 4)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=20, help="deltalift's pairs per batch (default 20)")
    parser.add_argument("--tangermeme-batches", default="10,20,40", help="tangermeme batch sizes swept")
    parser.add_argument("--ray-actors", type=int, default=2)
    parser.add_argument("--skip-ray", action="store_true")
    parser.add_argument("--skip-tangermeme", action="store_true")
    parser.add_argument("--skip-single", action="store_true", help="skip the single-process run (e.g. Ray only)")
    parser.add_argument("--filters", type=int, default=512, help="accessibility filters (512: ChromBPNet's)")
    args = parser.parse_args()

    from deltalift.genomics import Genome
    from deltalift.genomics.models import chrombpnet_sized, sequence_head
    from deltalift.runner import RayOptions
    from deltalift.runner.genomics import attribute_regions, make_windows

    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
        f"threads {torch.get_num_threads()}, device {args.device}, load average {os.getloadavg()[0]:.1f}"
    )
    print(
        f"model: ChromBPNet (accessibility {args.filters} filters x 8 layers, bias 128 x 4), input {WIDTH} bp, "
        f"{N_SHUFFLES} shuffles per region, count head"
    )
    folder = Path(tempfile.mkdtemp(prefix="bench-genome-wide-"))
    chrom = chrombpnet_sized(accessibility_filters=args.filters)
    torch.save(chrom, folder / "chrombpnet.pt")
    fasta, bed = write_genome(folder, args.regions + 1)
    common = {"n_shuffles": N_SHUFFLES, "batch_size": args.batch_size, "head": "count", "device": args.device}

    timed_bed = folder / "timed.bed"
    timed_bed.write_text("\n".join(bed.read_text().splitlines()[: args.regions]) + "\n")
    single = None
    if not args.skip_single:
        # deltalift, one process: a warm-up region (capture), then the timed regions in one shard
        warm_bed = folder / "warm.bed"
        warm_bed.write_text(bed.read_text().splitlines()[-1] + "\n")
        attribute_regions(chrom, fasta, folder / "warm", WIDTH, warm_bed, show_progress=False, **common)
        began, busy = time.perf_counter(), time.process_time()
        attribute_regions(chrom, fasta, folder / "single", WIDTH, timed_bed, show_progress=False, **common)
        seconds, cpu = time.perf_counter() - began, time.process_time() - busy
        single = line("deltalift, 1 process", args.regions, seconds, cpu)

    if not args.skip_tangermeme:
        try:
            from tangermeme.deep_lift_shap import deep_lift_shap as tangermeme_dls
        except ImportError:
            print("tangermeme is not installed: skipped")
        else:
            with Genome(fasta) as genome:
                windows = make_windows(genome, WIDTH, timed_bed)[0]
                X = genome.one_hot(windows)
            head = sequence_head(chrombpnet_sized(accessibility_filters=args.filters), "count")
            best = 0.0
            for batch in (int(b) for b in args.tangermeme_batches.split(",")):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    tangermeme_dls(head, X[:1], n_shuffles=1, batch_size=batch, device=args.device, random_state=0)
                    began, busy = time.perf_counter(), time.process_time()
                    tangermeme_dls(head, X, n_shuffles=N_SHUFFLES, batch_size=batch, device=args.device, random_state=0)
                seconds, cpu = time.perf_counter() - began, time.process_time() - busy
                best = max(best, line(f"tangermeme, batch_size={batch}", len(X), seconds, cpu))
            if single is not None:
                print(f"deltalift / tangermeme at its best batch size: {single / best:.2f}x")

    if not args.skip_ray:
        import ray

        began = time.perf_counter()
        ray.init(num_cpus=args.ray_actors, include_dashboard=False, log_to_driver=False)
        started = time.perf_counter() - began
        options = RayOptions(actors=args.ray_actors)
        try:
            # Ray Data starts a fresh actor pool per run: the wall time includes the actors' start-up,
            # model load and capture; the steady rate comes from the shards' own compute times
            began = time.perf_counter()
            attribute_regions(folder / "chrombpnet.pt", fasta, folder / "ray", WIDTH, timed_bed, shard_size=1,
                              ray=options, show_progress=False, **common)  # fmt: skip
            line(f"deltalift, Ray, {args.ray_actors} CPU actors (wall)", args.regions, time.perf_counter() - began)
            shards = [json.loads(p.read_text()) for p in (folder / "ray" / "shards").glob("*/shard.json")]
            steady = line(
                f"deltalift, Ray, {args.ray_actors} CPU actors (steady)",
                args.regions,
                sum(info["seconds"] for info in shards) / args.ray_actors,
                sum(info["cpu_seconds"] for info in shards),
            )

            print(f"(Ray start-up {started:.1f} s, not counted; steady: the actors' busy time, capture included)")
            if single is not None:
                print(f"Ray steady / one process: {steady / single:.2f}x")
        finally:
            ray.shutdown()


if __name__ == "__main__":
    main()
