"""benchmarks/measure: a run's memory and CPU are taken over its whole process tree."""

import sys
import textwrap
from pathlib import Path

import pytest

from benchmarks.measure import run_measured

# The parent holds little; its child holds ~150 MB and burns CPU, then exits; the parent reaps it.
_PARENT = textwrap.dedent(
    """
    import subprocess, sys
    child = "import time; block = bytearray(150 << 20); block[::4096] = b'x' * len(block[::4096]); end = time.process_time() + 1.0\\nwhile time.process_time() < end: pass\\ntime.sleep(0.5)"
    subprocess.run([sys.executable, "-c", child], check=True)
    """
)


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="the tree is read from /proc")
def test_the_peak_and_the_cpu_include_the_child_processes(tmp_path: Path) -> None:
    run = run_measured([sys.executable, "-c", _PARENT], tmp_path / "log")
    assert run.returncode == 0
    assert run.peak_rss_kb >= 150 * 1024  # the child's block, sampled while it lived
    # the kernel's figure is the largest single process: the child's, not the sum
    assert run.largest_process_rss_kb >= 150 * 1024
    assert run.peak_rss_kb >= run.largest_process_rss_kb
    cpu_sampled = run.samples[-1][2]
    assert cpu_sampled >= 0.9  # the child's second of CPU, counted while it ran, then as reaped
    assert all(later[2] >= earlier[2] - 0.02 for earlier, later in zip(run.samples, run.samples[1:]))  # never drops
