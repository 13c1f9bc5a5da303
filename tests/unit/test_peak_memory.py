"""A notebook run's peak memory: the processes this one starts are sampled while they run (a child that holds
about 300 MB for a second must show at least that much)."""

import subprocess
import sys

from labkit.notebook.memory import PeakMemory

HOLD = "import numpy as np, time; a = np.ones(300 * 10**6 // 8); time.sleep(1.5)"  # 300 MB, touched


def test_a_child_that_holds_memory_is_counted():
    with PeakMemory(interval_s=0.05) as peak:
        subprocess.run([sys.executable, "-c", HOLD], check=True)
    assert peak.samples > 3
    assert peak.mb >= 300  # MB (1e6 bytes): the array alone
