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


def test_the_peak_names_the_process_that_made_it():
    with PeakMemory(interval_s=0.05) as peak:
        subprocess.run([sys.executable, "-c", HOLD], check=True)
    seconds, processes = peak.at_peak.split(" s: ", 1)
    assert float(seconds) >= 0
    # the holding child, by its command, with at least its 300 MB
    holder = [p for p in processes.split(" | ") if "-c import numpy" in p]
    assert holder and float(holder[0].split()[-2]) >= 300, peak.at_peak
