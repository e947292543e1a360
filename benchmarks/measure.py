"""Run one child process and measure it: wall time, CPU time, peak RSS and an RSS timeline.

Peak RSS and CPU time come from ``os.wait4`` (the kernel's ``ru_maxrss`` for that one child), not from
``getrusage(RUSAGE_CHILDREN)``, which is a maximum over every child this process ever waited for
and so could not tell the second run from the first. The timeline (``/proc/<pid>/status`` and
``/proc/<pid>/stat`` polled ten times a second) is what lets a stage's own peak RSS and CPU
seconds be read off its receipt's start and finish times; on a system without ``/proc`` it is
simply empty. CPU seconds matter on a shared machine: when other work competes for the cores,
wall time stretches and CPU time does not.
"""

import os
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

POLL_SECONDS = 0.1


@dataclass
class ProcessRun:
    command: list[str]
    returncode: int
    wall_s: float
    cpu_user_s: float
    cpu_sys_s: float
    peak_rss_kb: int
    started_epoch: float
    samples: list[tuple[float, int, float]] = field(default_factory=list)  # (epoch s, RSS kB, CPU s so far)
    load_before: tuple[float, float, float] = (0.0, 0.0, 0.0)
    load_after: tuple[float, float, float] = (0.0, 0.0, 0.0)

    @property
    def peak_rss_mb(self) -> float:
        return self.peak_rss_kb / 1024

    @property
    def cpu_s(self) -> float:
        return self.cpu_user_s + self.cpu_sys_s

    def peak_rss_between(self, start_epoch: float, end_epoch: float) -> int | None:
        """Highest sampled RSS (kB) in a time window, or None if no sample fell in it."""
        inside = [rss for at, rss, _ in self.samples if start_epoch <= at <= end_epoch]
        return max(inside) if inside else None

    def cpu_between(self, start_epoch: float, end_epoch: float) -> float | None:
        """CPU seconds spent in a time window, from the samples nearest its edges (0.1 s grain)."""
        before = [cpu for at, _, cpu in self.samples if at <= start_epoch]
        until = [cpu for at, _, cpu in self.samples if at <= end_epoch]
        if not until:
            return None
        return until[-1] - (before[-1] if before else 0.0)


def _rss_kb(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status", "rb") as handle:
            for line in handle:
                if line.startswith(b"VmRSS:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _cpu_s(pid: int) -> float | None:
    """utime + stime of a live process, in seconds."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            fields = handle.read().rsplit(b")", 1)[1].split()  # after "(comm)", which may hold spaces
        return (int(fields[11]) + int(fields[12])) / _TICKS  # fields 14 and 15 of proc(5)
    except (OSError, ValueError, IndexError):
        return None


def _load() -> tuple[float, float, float]:
    try:
        return os.getloadavg()
    except OSError:
        return (0.0, 0.0, 0.0)


def run_measured(command: list[str], log_file: Path, env: dict[str, str] | None = None) -> ProcessRun:
    """Run ``command`` to completion and measure it: stdout to ``log_file``, stderr beside it."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    samples: list[tuple[float, int, float]] = []
    done = threading.Event()
    load_before = _load()
    with open(log_file, "wb") as log, open(log_file.with_name(log_file.name + ".stderr"), "wb") as errors:
        started_epoch = time.time()
        started = time.perf_counter()
        proc = subprocess.Popen(command, stdout=log, stderr=errors, env=env)

        def poll() -> None:
            while not done.is_set():
                rss, cpu = _rss_kb(proc.pid), _cpu_s(proc.pid)
                if rss is not None and cpu is not None:
                    samples.append((time.time(), rss, cpu))
                done.wait(POLL_SECONDS)

        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
        done.set()
        poller.join()
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait again
    return ProcessRun(
        command=command,
        returncode=proc.returncode,
        wall_s=wall,
        cpu_user_s=usage.ru_utime,
        cpu_sys_s=usage.ru_stime,
        peak_rss_kb=usage.ru_maxrss,  # kB on Linux
        started_epoch=started_epoch,
        samples=samples,
        load_before=load_before,
        load_after=_load(),
    )


def tree_bytes(path: Path) -> int:
    """Total size of the regular files under ``path`` (0 if it does not exist)."""
    if path.is_file():
        return path.stat().st_size
    if not path.is_dir():
        return 0
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
