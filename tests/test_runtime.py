"""Where training runs: the thread count chosen from the CPUs free now, kept when resuming."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from mnistlab.training.runtime import choose_threads, cpus_available, cpus_busy, run_threads


def test_configured_threads_are_taken_as_given() -> None:
    assert choose_threads(3) == (3, "as configured")


def test_auto_threads_leave_a_busy_cpu_alone() -> None:
    burner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.5)
        busy = cpus_busy(0.3)
        threads, why = choose_threads(0)
    finally:
        burner.kill()
        burner.wait()
    assert busy >= 0.7, busy  # the burner keeps (about) one CPU busy
    assert 1 <= threads <= max(1, int(cpus_available()) - 1)
    assert why.startswith("auto:")


def test_a_resumed_run_keeps_its_recorded_threads(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"kind": "deep", "threads": 1}))
    assert run_threads(0, tmp_path) == (1, "recorded by the interrupted run")
    assert run_threads(2, tmp_path) == (2, "as configured")  # an explicit setting wins
    (tmp_path / "config.json").write_text(json.dumps({"kind": "deep", "threads": True}))
    assert run_threads(0, tmp_path)[1].startswith("auto:")  # a boolean is no thread count
