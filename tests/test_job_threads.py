"""Job workers size torch's thread pool from what is known for sure: the cores, and the other workers of
the workspace running now (threads that share a busy core spin at every barrier); never the load average."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core import jobs
from core.jobs.worker import cpu_threads, read_json

CORES = len(os.sched_getaffinity(0))


@pytest.fixture
def jobs_dir(tmp_path, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("LOOPBREAK_THREADS_AUTO", raising=False)
    monkeypatch.setattr(os, "getloadavg", lambda: (99.0, 99.0, 99.0))  # a load average that would say 1 thread
    d = tmp_path / "jobs"
    for name in ("run-a", "run-b"):
        (d / name).mkdir(parents=True)
        (d / name / "spec.json").write_text(json.dumps({"run_id": name, "kind": "sample"}))
    return d


def a_worker(job_dir):
    """A live process whose command line names the job folder, as a real worker's does."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", str(job_dir)])
    (job_dir / "pid").write_text(str(proc.pid))
    cmdline = Path(f"/proc/{proc.pid}/cmdline")
    for _ in range(500):  # between fork and exec the child still shows the test's command line
        if cmdline.exists() and str(job_dir).encode() in cmdline.read_bytes():
            break
        time.sleep(0.01)
    return proc


def test_user_omp_num_threads_wins_unless_it_was_set_by_a_worker(jobs_dir, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert cpu_threads(jobs_dir / "run-b")[0] == 3
    monkeypatch.setenv("LOOPBREAK_THREADS_AUTO", "1")  # set by the worker that spawned us: decide afresh
    assert cpu_threads(jobs_dir / "run-b")[0] == CORES


def test_the_cores_are_shared_with_the_running_workers_only(jobs_dir):
    assert cpu_threads(jobs_dir / "run-b") == (CORES, cpu_threads(jobs_dir / "run-b")[1])  # idle: all, whatever the load says
    proc = a_worker(jobs_dir / "run-a")
    try:
        threads, why = cpu_threads(jobs_dir / "run-b")
        assert threads == max(1, CORES // 2) and "1 other running worker(s) (run-a)" in why and "load average" in why
        (jobs_dir / "run-a" / "spec.json").write_text(json.dumps({"run_id": "run-a", "kind": "eval", "then": "run-b"}))
        assert cpu_threads(jobs_dir / "run-b")[0] == CORES  # the chain's previous link, on its way out: not counted
    finally:
        proc.kill()
        proc.wait()
    assert cpu_threads(jobs_dir / "run-b")[0] == CORES  # it ended: not counted either


def test_a_recorded_count_is_kept(jobs_dir):
    (jobs_dir / "run-b" / "spec.json").write_text(json.dumps({"run_id": "run-b", "kind": "sample", "threads": 7}))
    assert cpu_threads(jobs_dir / "run-b") == (7, "recorded in the job's spec (kept on resume)")


def test_a_worker_records_its_threads_in_the_spec_and_logs_why(demo_ws):
    from core.steps.sample import start_sampling
    from tests.faults import FakeCompletions
    from tests.test_faults import fake_cfg

    with FakeCompletions() as server:
        run_id = start_sampling(demo_ws, fake_cfg(server.url))
        assert jobs.wait(demo_ws, run_id, poll_s=0.05).status == "done"
    assert read_json(demo_ws.jobs_dir / run_id / "spec.json")["threads"] >= 1
    assert "CPU thread(s) for torch:" in jobs.read_log(demo_ws, run_id)
