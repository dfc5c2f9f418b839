"""CPU and memory of processes, read from /proc (Linux, as the store is).

CPU % is measured between two readings of the same process: the first call
for a pid reports its average since it started.
"""

from __future__ import annotations

import os
import time

_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


class ProcStat:
    """Keeps the last reading of each pid, to report CPU % since then."""

    def __init__(self) -> None:
        self._last: dict[int, tuple[float, float]] = {}  # pid -> (wall, cpu seconds)
        self._boot = _boot_time()

    def sample(self, pids: list[int]) -> dict[int, dict]:
        """{pid: {"cpu_percent", "rss_bytes"}} for the pids that still exist
        (100% is one core busy)."""
        now = time.time()
        out, seen = {}, {}
        for pid in pids:
            reading = _read(pid)
            if reading is None:
                continue
            cpu, start, rss = reading
            last = self._last.get(pid)
            if last is not None and now > last[0]:
                percent = 100.0 * (cpu - last[1]) / (now - last[0])
            else:
                age = now - (self._boot + start)
                percent = 100.0 * cpu / age if age > 0 else 0.0
            seen[pid] = (now, cpu)
            out[pid] = {"cpu_percent": round(max(0.0, percent), 1), "rss_bytes": rss}
        self._last = seen
        return out


def _read(pid: int) -> tuple[float, float, int] | None:
    """(CPU seconds, start seconds after boot, resident bytes), or None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
        with open(f"/proc/{pid}/statm", "rb") as f:
            statm = f.read().split()
    except OSError:
        return None
    fields = stat[stat.rindex(b")") + 2:].split()  # after "pid (comm) "; comm may hold spaces
    utime, stime, start = int(fields[11]), int(fields[12]), int(fields[19])
    return (utime + stime) / _TICKS, start / _TICKS, int(statm[1]) * _PAGE


def _boot_time() -> float:
    try:
        with open("/proc/stat", "rb") as f:
            for line in f:
                if line.startswith(b"btime "):
                    return float(line.split()[1])
    except OSError:
        pass
    return 0.0
