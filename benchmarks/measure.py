"""Run one child process and measure it: wall time, CPU time, peak RSS and an RSS timeline.

CPU time comes from ``os.wait4`` (that child and the descendants it waited for), not from
``getrusage(RUSAGE_CHILDREN)``, which adds up every child this process ever waited for and so
could not tell the second run from the first. The run's stages split their work over worker
processes (``lib/workers``), so memory and CPU are taken over the whole process tree: the
timeline polls ``/proc`` ten times a second for the child and every live descendant (RSS
summed: what the run holds at once; CPU: the child's own, the children it has reaped, and the
live ones'). That timeline gives the run's peak RSS and lets a stage's peak RSS and CPU seconds
be read off its receipt's start and finish times. The kernel's ``ru_maxrss`` is kept as the
largest single process. On a system without ``/proc`` the timeline is empty and the peak is
the largest process's. CPU seconds matter on a shared machine: when other work competes for
the cores, wall time stretches and CPU time does not.
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
    largest_process_rss_kb: int  # the kernel's ru_maxrss: the largest single process of the tree
    started_epoch: float
    # (epoch s, RSS kB, CPU s so far), each over the whole process tree
    samples: list[tuple[float, int, float]] = field(default_factory=list)
    load_before: tuple[float, float, float] = (0.0, 0.0, 0.0)
    load_after: tuple[float, float, float] = (0.0, 0.0, 0.0)

    @property
    def peak_rss_kb(self) -> int:
        """The most the run's processes held at once (sampled), else its largest process."""
        return max([rss for _, rss, _ in self.samples] + [self.largest_process_rss_kb])

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


_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _stat_fields(pid: int | str) -> list[bytes] | None:
    """Fields 3.. of ``/proc/<pid>/stat`` (after "(comm)", which may hold spaces)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            return handle.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _rss_kb(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status", "rb") as handle:
            for line in handle:
                if line.startswith(b"VmRSS:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def _descendants(root: int) -> list[int]:
    """Live processes under ``root``: one scan of /proc for parent ids, then the tree from them."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat_fields(entry)
            if fields is not None and len(fields) > 1:
                children.setdefault(int(fields[1]), []).append(int(entry))  # field 4 of proc(5): ppid
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _tree_sample(pid: int) -> tuple[int, float] | None:
    """(RSS kB summed, CPU s) of ``pid`` and its live descendants; None once ``pid`` is gone.
    CPU: each process's utime + stime, plus the root's cutime + cstime (the children it reaped),
    so a worker's CPU is counted once whether it is still running or already joined."""
    fields, rss = _stat_fields(pid), _rss_kb(pid)
    if fields is None or rss is None:
        return None
    try:
        ticks = sum(int(value) for value in fields[11:15])  # fields 14-17 of proc(5)
        for child in _descendants(pid):
            child_fields, child_rss = _stat_fields(child), _rss_kb(child)
            if child_fields is not None and child_rss is not None:  # else it exited meanwhile
                ticks += int(child_fields[11]) + int(child_fields[12])
                rss += child_rss
    except (ValueError, IndexError):
        return None
    return rss, ticks / _TICKS


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
                sample = _tree_sample(proc.pid)
                if sample is not None:
                    samples.append((time.time(), *sample))
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
        largest_process_rss_kb=usage.ru_maxrss,  # kB on Linux
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
