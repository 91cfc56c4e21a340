"""Fixtures shared by the tests/test_robustness_*.py files (imported by each of them)."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """One torch thread for the module: on a shared 2-core machine, two threads mostly
    spin-wait (a PGD run measured 3.6x the CPU time with two threads under load)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
