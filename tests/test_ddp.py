"""Data-parallel training for real: a prepared DPO job under `torchrun --nproc_per_node 2` (gloo, CPU) runs
two ranks, each on half the pairs; rank 0 alone writes metrics, the model and result.json; the app
registers one model; the loss curve is the one process's at the same global batch."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from core import jobs
from core.review.decisions import decide
from core.steps.train_job import TrainJobConfig, read_metrics, start_training, training_summary
from core.store.models import register_model
from tests.review_data import add_review_run

ROOT = Path(__file__).resolve().parents[1]
TORCHRUN = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or shutil.which("torchrun")
# Full batches (8 pairs: 4 per rank × 2 ranks, or 8 in one process): every step sees every pair, so the two
# runs compute the same mean loss and the same averaged gradient; only float summation order differs.
PARAMS = {"num_train_epochs": 3, "max_steps": -1, "learning_rate": 1e-3, "logging_steps": 1, "shuffle": False}
TOLERANCE = 1e-4  # absolute, on each step's loss (seen here: 0.0 on all 3 steps)


@pytest.mark.skipif(TORCHRUN is None, reason="torchrun is not installed")
def test_torchrun_with_two_ranks_splits_the_pairs_and_registers_one_model(demo_ws, tiny_model):
    pairs = add_review_run(demo_ws, 4)
    assert len(pairs) == 8
    register_model(demo_ws.cursor(), name="tiny-sft", path=str(tiny_model), family="llama", stage="sft")
    for p in pairs:
        decide(demo_ws, p, "approve", "ana", 0)

    ddp = start_training(demo_ws, TrainJobConfig(base="tiny-sft", pairs="rs", name="tiny-ddp",
                                                 params={**PARAMS, "per_device_train_batch_size": 4}), launch=False)
    job_dir = demo_ws.jobs_dir / ddp
    out = subprocess.run([TORCHRUN, "--standalone", "--nproc_per_node", "2", "-m", "core", "job", "run", str(job_dir)],
                         cwd=ROOT, capture_output=True, text=True, timeout=600,
                         env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-12000:]
    logs = out.stdout + out.stderr
    for rank in (0, 1):
        assert f"rank {rank} of world size 2" in logs and f"rank {rank} of 2: 4 of 8 examples per epoch" in logs
    state = jobs.wait(demo_ws, ddp, poll_s=0.1)
    assert state.status == "done", state
    assert jobs.read_json(job_dir / "ranks" / "1" / "status.json")["status"] == "done"  # rank 1 kept its state aside

    one = start_training(demo_ws, TrainJobConfig(base="tiny-sft", pairs="rs", name="tiny-one",
                                                 params={**PARAMS, "per_device_train_batch_size": 8}))
    assert jobs.wait(demo_ws, one, poll_s=0.1).status == "done"

    def losses(run_id):
        return [(m["step"], m["loss"], m["epoch"]) for m in read_metrics(demo_ws, run_id) if "loss" in m]

    curve, alone = losses(ddp), losses(one)
    assert [s for s, _, _ in curve] == [1, 2, 3] == [s for s, _, _ in alone]  # 3 epochs of one full batch each
    assert [e for _, _, e in curve] == [1.0, 2.0, 3.0]  # an epoch per step: the pairs were split, not all on each rank
    assert all(abs(a - b) <= TOLERANCE for (_, a, _), (_, b, _) in zip(curve, alone)), (curve, alone)
    assert curve[-1][1] < curve[0][1]  # it learned

    s = training_summary(demo_ws, ddp)
    assert s["model"]["name"] == "tiny-ddp" and s["model"]["stage"] == "dpo"
    assert demo_ws.cursor().execute("SELECT count(*) FROM models WHERE name = 'tiny-ddp'").fetchone()[0] == 1
    stored = demo_ws.cursor().execute("SELECT count(*) FROM train_metrics WHERE run_id = ? AND name = 'loss'", [ddp]).fetchone()[0]
    assert stored == 3  # rank 0 alone wrote metric shards: no step twice
    assert json.loads((job_dir / "result.json").read_text())["saved"] is True
