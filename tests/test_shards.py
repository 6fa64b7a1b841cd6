"""One sampling (or evaluation) job run as K workers: `--prepare-only`, then `loopbreak job run DIR --shard k/K`
per worker, as a scheduler's array job would. Every item once, the candidates of a one-worker run, a killed
worker resumed without loss or duplicates; the writer ingests as for one worker."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core import jobs
from core.jobs.worker import parse_shard
from core.steps.sample import run_summary, start_sampling
from core.store import WorkspaceError, open_workspace
from tests.faults import FakeCompletions, compare, shard_duplicates
from tests.test_faults import fake_cfg

ROOT = Path(__file__).resolve().parents[1]


def worker(job_dir: Path, shard: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "core", "job", "run", str(job_dir), "--shard", shard], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})


def worker_done(job_dir: Path, shard: str) -> int:
    return (jobs.read_json(job_dir / "workers" / shard.replace("/", "-of-") / "progress.json") or {}).get("done", 0)


def test_two_workers_sample_every_item_once_and_a_killed_one_resumes(demo_ws, tmp_path):
    n_items = demo_ws.cursor().execute("SELECT count(*) FROM items").fetchall()[0][0]
    with FakeCompletions() as fast:
        ref = start_sampling(demo_ws, fake_cfg(fast.url))
        assert jobs.wait(demo_ws, ref, poll_s=0.05).status == "done"
    root = demo_ws.root
    demo_ws.close()  # the CLI is the writer while it prepares (one writer per workspace)
    with FakeCompletions(delay_s=0.05) as server:
        out = subprocess.run(
            [sys.executable, "-m", "core", "sample", "-w", str(demo_ws.root), "--model", "fake-model", "--dataset", "demo",
             "--backend", "openai", "--base-url", server.url, "--items-per-shard", "2", "--concurrency", "2", "--n", "2",
             "--max-new-tokens", "48", "--seed", "3", "--prepare-only", "--json"],
            cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        prepared = json.loads(out.stdout.strip().splitlines()[-1])
        run_id, job_dir = prepared["runs"][0], Path(prepared["job_dirs"][0])
        demo_ws = open_workspace(root)
        (state,) = jobs.sync_runs(demo_ws, [run_id])
        assert state.status == "queued"  # nothing launched: it waits for its workers

        w0, w1 = worker(job_dir, "0/2"), worker(job_dir, "1/2")
        deadline = time.time() + 60
        while worker_done(job_dir, "1/2") < 4 and time.time() < deadline:  # worker 1 half-way: kill it
            time.sleep(0.005)
        os.killpg(w1.pid, signal.SIGKILL)
        w1.wait()
        assert w0.wait(120) == 0, w0.stdout.read()
        (state,) = jobs.sync_runs(demo_ws, [run_id])
        assert state.status == "queued" and "waiting for 1/2" in state.progress["message"], state  # not failed: resumable
        w1 = worker(job_dir, "1/2")  # its command again
        assert w1.wait(120) == 0, w1.stdout.read()
    state = jobs.wait(demo_ws, run_id, poll_s=0.05)
    assert state.status == "done" and state.progress["done"] == state.progress["total"] == n_items
    c = compare(demo_ws, "candidates", ref, run_id)
    assert c["rows"] == c["reference"] == 3 * n_items
    assert (c["lost"], c["extra"], c["changed"], c["duplicated"]) == (0, 0, 0, 0), c
    assert shard_duplicates(demo_ws, run_id, "candidates", "candidate_id") == 0
    assert demo_ws.cursor().execute("SELECT status FROM runs WHERE run_id = ?", [run_id]).fetchone()[0] == "done"
    assert run_summary(demo_ws, run_id)["items"] == n_items


def test_a_failed_worker_fails_the_run_with_its_reason(demo_ws):
    run_id = start_sampling(demo_ws, fake_cfg("http://127.0.0.1:9", retries=0), launch=False)
    job_dir = demo_ws.jobs_dir / run_id
    assert jobs.run_job(job_dir, (1, 2)) == "failed"
    (state,) = jobs.sync_runs(demo_ws, [run_id])
    assert state.status == "failed" and state.error.startswith("worker 1/2:") and "cannot reach" in state.error


def test_shard_flag_is_checked_and_training_does_not_take_it(tmp_path):
    assert parse_shard("1/4") == (1, 4) and parse_shard(None) is None
    for bad in ("4/4", "x", "1/0", "-1/2"):
        with pytest.raises(WorkspaceError):
            parse_shard(bad)
    job = tmp_path / "train-x"
    job.mkdir()
    (job / "spec.json").write_text(json.dumps({"run_id": "train-x", "kind": "train"}))
    with pytest.raises(WorkspaceError, match="torchrun"):
        jobs.run_job(job, (0, 2))
