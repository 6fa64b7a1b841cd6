"""Evaluation: interval math, aggregation per family and stage, the report, the CLI, and real chained eval jobs."""

import json
import subprocess
import sys

import pytest

from core import jobs
from core.steps.evaluate import EvalConfig, bootstrap_reduction, eval_results, format_report, report, stage_label, stage_rank, start_eval, wilson_interval
from core.store.models import register_model
from tests.conftest import ROOT, fill_demo
from tests.eval_data import add_eval_runs


def test_wilson_interval_matches_known_values():
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    assert wilson_interval(5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    assert wilson_interval(10, 10) == pytest.approx((0.7225, 1.0), abs=1e-4)
    lo, hi = wilson_interval(3, 300)
    assert 0 < lo < 0.01 < hi < 0.03
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_bootstrap_reduction_is_paired_and_brackets_the_point_estimate():
    base = [1.0] * 10 + [0.0] * 90
    new = [1.0] * 2 + [0.0] * 98
    r = bootstrap_reduction(base, new, n_boot=1000, seed=1)
    assert r["reduction"] == pytest.approx(0.8)
    lo, hi = r["ci95"]
    assert lo < 0.8 < hi <= 1.0 and r["n_items"] == 100
    assert bootstrap_reduction(base, base)["reduction"] == 0
    assert bootstrap_reduction([0.0] * 5, [1.0] * 5)["reduction"] is None  # SFT never looped: no ratio
    worse = bootstrap_reduction(new, base)
    assert worse["reduction"] == pytest.approx(-4.0) and worse["ci95"][1] < 0


def test_stage_order_and_labels():
    stages = ["dpo2", "sft", "vanilla", "dpo", "sft2", "custom"]
    assert sorted(stages, key=stage_rank) == ["vanilla", "sft", "sft2", "dpo", "dpo2", "custom"]
    assert [stage_label(s) for s in ("vanilla", "sft", "dpo", "dpo3", "sft2")] == [
        "Vanilla", "SFT", "SFT+DPO", "SFT+DPO round 3", "SFT longer (sft2)"]


def test_report_aggregates_per_family_and_stage(ws):
    fill_demo(ws, n_test=20)
    add_eval_runs(ws)
    rep = report(ws, "demo", "test")
    assert list(rep["families"]) == ["llama", "qwen2"]
    llama = rep["families"]["llama"]
    assert [r["stage"] for r in llama["stages"]] == ["vanilla", "sft", "dpo"]
    sft, dpo = llama["stages"][1], llama["stages"][2]
    assert (sft["degenerate"], sft["candidates"], sft["rate"]) == (5, 20, 0.25)
    assert (sft["ci_low"], sft["ci_high"]) == pytest.approx(wilson_interval(5, 20))
    assert sft["quality"] == pytest.approx((5 * 0.2 + 15 * 0.6) / 20) and sft["quality_clean"] == pytest.approx(0.6)
    assert (sft["length"], sft["stop"]) == (5, 15)
    assert (dpo["degenerate"], dpo["candidates"]) == (1, 20)
    (red,) = llama["reductions"]
    assert red["stage"] == "dpo" and red["reduction"] == pytest.approx(0.8) and red["n_items"] == 20
    assert red["overlap"] is True  # 5/20 vs 1/20: the Wilson intervals still overlap at this n
    assert rep["families"]["qwen2"]["reductions"][0]["reduction"] == pytest.approx(1.0)
    assert rep["mean_dpo_reduction"] == pytest.approx(0.9)
    text = format_report(rep)
    assert "SFT+DPO vs SFT: reduction 80.0%" in text and "mean relative reduction SFT → SFT+DPO: 90.0%" in text
    assert "intervals overlap" in text
    assert report(ws, "demo", "validation")["families"] == {}  # another split: nothing evaluated there


def test_later_rounds_and_the_control_are_further_stages_each_against_sft(ws):
    fill_demo(ws, n_test=20)
    add_eval_runs(ws, {"llama": {"sft": 6, "dpo": 3, "dpo2": 1, "sft2": 2}})
    add_eval_runs(ws, {"llama": {"sft": 4}})  # a later evaluation of the same stage replaces the earlier one
    llama = report(ws, "demo", "test")["families"]["llama"]
    assert [r["stage"] for r in llama["stages"]] == ["sft", "sft2", "dpo", "dpo2"]
    assert llama["stages"][0]["degenerate"] == 4
    assert {x["stage"]: x["reduction"] for x in llama["reductions"]} == pytest.approx({"sft2": 0.5, "dpo": 0.25, "dpo2": 0.75})


def test_cli_report_prints_the_same_numbers(ws):
    fill_demo(ws, n_test=20)
    add_eval_runs(ws)
    ws.close()
    out = subprocess.run([sys.executable, "-m", "core", "report", "-w", str(ws.root), "--json"], cwd=ROOT,
                         capture_output=True, text=True, check=True)
    rep = json.loads(out.stdout.strip().splitlines()[-1])
    assert rep["mean_dpo_reduction"] == pytest.approx(0.9)
    assert [r["rate"] for r in rep["families"]["llama"]["stages"]] == [0.0, 0.25, 0.05]
    human = subprocess.run([sys.executable, "-m", "core", "report", "-w", str(ws.root)], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout
    assert "llama" in human and "5/20" in human and "25.0%" in human


def test_eval_runs_are_chained_jobs_with_quality(ws, tiny_model):
    fill_demo(ws)
    register_model(ws.cursor(), name="tiny-a", path=str(tiny_model), family="tiny", stage="sft")
    register_model(ws.cursor(), name="tiny-b", path=str(tiny_model), family="tiny", stage="dpo")
    ids = start_eval(ws, EvalConfig(models=["tiny-a", "tiny-b"], dataset="demo", split="test", limit=3, max_new_tokens=8))
    assert len(ids) == 2
    assert jobs.job_state(ws.jobs_dir / ids[1]).status in ("queued", "running")  # waits for the first
    for run_id in ids:
        assert jobs.wait(ws, run_id).status == "done"
    rows = eval_results(ws)
    assert [r["model"] for r in rows] == ["tiny-a", "tiny-b"]
    assert all(r["candidates"] == 3 and r["items"] == 3 and r["decoding"] == "greedy" and r["quality"] is not None for r in rows)
    assert {r[0] for r in ws.cursor().execute("SELECT kind FROM runs WHERE run_id IN (?, ?)", ids).fetchall()} == {"eval"}
    assert all("CPU thread(s) for torch" in (ws.jobs_dir / r / "log.txt").read_text() for r in ids)  # each worker decides


def test_cancelling_a_queued_eval_run_cancels_the_rest_of_its_chain(ws, tiny_model):
    fill_demo(ws)
    for name in ("a", "b", "c"):
        register_model(ws.cursor(), name=name, path=str(tiny_model), family="tiny", stage="sft")
    ids = start_eval(ws, EvalConfig(models=["a", "b", "c"], dataset="demo", split="test", limit=2, max_new_tokens=8))
    assert jobs.cancel(ws, ids[1])
    assert jobs.wait(ws, ids[0]).status == "done"
    assert [jobs.job_state(ws.jobs_dir / r).status for r in ids[1:]] == ["cancelled", "cancelled"]
    jobs.sync_runs(ws, ids)
    assert [r[0] for r in ws.cursor().execute("SELECT status FROM runs ORDER BY created_at").fetchall()] == ["done", "cancelled", "cancelled"]


def test_eval_refuses_an_empty_request(ws):
    from core.store import WorkspaceError

    fill_demo(ws)
    with pytest.raises(WorkspaceError, match="at least one model"):
        start_eval(ws, EvalConfig(models=[], dataset="demo"))
