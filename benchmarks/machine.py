"""The machine a benchmark ran on, as each results table states it."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def describe(*versions: str) -> str:
    """CPU model, cores, memory and Python, then the given versions (e.g. "numpy 2.4.6")."""
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    mem = int(next(line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines()
                   if line.startswith("MemTotal"))) / 2**20
    return ", ".join([cpu, f"{os.cpu_count()} cores", f"{mem:.0f} GiB RAM", f"Python {platform.python_version()}",
                      *versions])
