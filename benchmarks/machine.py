"""A description of the machine a benchmark ran on, printed at the top of every benchmark."""

from __future__ import annotations

import os
import platform

import torch


def describe() -> str:
    """CPU model and count, load average, torch version and threads, and the GPU if one is used."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        if names:
            cpu = names[0]
    except OSError:
        pass
    parts = [
        f"{cpu}, {os.cpu_count()} logical CPUs",
        f"load average {' '.join(f'{v:.1f}' for v in os.getloadavg())}" if hasattr(os, "getloadavg") else "",
        f"torch {torch.__version__}, {torch.get_num_threads()} intra-op threads",
        f"python {platform.python_version()}, {platform.system()} {platform.release()}",
    ]
    if torch.cuda.is_available():
        parts.append(f"GPU {torch.cuda.get_device_name()}")
    return "; ".join(p for p in parts if p)
