"""How many CPUs this process may run on: its affinity mask where the system has one (a container or
`taskset` limits it below the machine's count), else the machine's count."""

from __future__ import annotations

import os


def usable_cpus() -> int:
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)
