"""CPU accounting of live processes from /proc (Linux), shared by the benchmarks."""

from __future__ import annotations

import os
from typing import NamedTuple


class ProcCpu(NamedTuple):
    ppid: int
    session: int
    cpu_s: float  # user + system seconds so far


def live_processes() -> dict[int, ProcCpu]:
    """Every live process: parent, session and CPU seconds (fields of /proc/PID/stat)."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[int, ProcCpu] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()  # after the name: state ppid ...
        except OSError:
            continue
        out[int(entry)] = ProcCpu(int(fields[1]), int(fields[3]),
                                  (int(fields[11]) + int(fields[12])) / tick)
    return out
