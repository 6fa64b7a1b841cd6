"""Job workers size torch's thread pool to the idle cores: threads that share a busy core spin at every barrier."""

import os

from core.jobs.worker import cpu_threads


def test_omp_num_threads_wins(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert cpu_threads() == 3


def test_otherwise_between_one_and_the_cores(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert 1 <= cpu_threads() <= len(os.sched_getaffinity(0))
    monkeypatch.setattr(os, "getloadavg", lambda: (99.0, 0, 0))  # a saturated machine: one thread
    assert cpu_threads() == 1
    monkeypatch.setattr(os, "getloadavg", lambda: (0.0, 0, 0))  # an idle one: every core
    assert cpu_threads() == len(os.sched_getaffinity(0))
