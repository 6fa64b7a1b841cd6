"""Sampling jobs as real subprocesses on a tiny real model: resume after kill -9, cancel, bad input,
and the OpenAI backend against a real HTTP server (with timeouts and 500s)."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from core import jobs
from core.samplers.base import DecodingConfig
from core.steps.sample import SampleConfig, run_summary, start_sampling
from core.store import WorkspaceError
from core.store.models import register_model
from tests.conftest import fill_demo
from tests.models import build_tiny_model

pytestmark = pytest.mark.slow


def cfg(model, **kw):
    dec = dict(n=2, max_new_tokens=24, seed=7, with_greedy=True)
    dec.update(kw.pop("decoding", {}))
    kw = {"split": "train", "items_per_shard": 2, **kw}
    return SampleConfig(model=str(model), dataset="demo", decoding=DecodingConfig(**dec), **kw)


def candidate_set(ws, run_id):
    rows = ws.cursor().execute(
        "SELECT item_id, sample_index, text, finish_reason, n_tokens FROM candidates WHERE run_id = ? ORDER BY 1, 2", [run_id]
    ).fetchall()
    return rows


def test_sample_job_end_to_end(demo_ws, tiny_model):
    register_model(demo_ws.cursor(), name="tiny", path=str(tiny_model), family="llama", stage="sft")
    run_id = start_sampling(demo_ws, cfg("tiny", limit=3))
    state = jobs.wait(demo_ws, run_id)
    assert state.status == "done", jobs.read_log(demo_ws, run_id)
    s = run_summary(demo_ws, run_id)
    assert s["items"] == 3 and s["candidates"] == 9  # greedy + 2 samples per item
    row = demo_ws.cursor().execute(
        "SELECT p.prompt, decoding, backend, seed, loops, metrics FROM candidates JOIN prompts p USING (prompt_id) "
        "WHERE run_id = ? AND sample_index = 0 LIMIT 1", [run_id]
    ).fetchone()
    # each item's prompt is stored once, its three candidates refer to it
    assert demo_ws.cursor().execute("SELECT count(DISTINCT prompt_id), count(*) FILTER (prompt_id IS NULL) FROM candidates "
                                    "WHERE run_id = ?", [run_id]).fetchone() == (3, 0)
    assert demo_ws.cursor().execute("SELECT count(*) FROM prompts").fetchone()[0] == 3
    assert row[0].endswith("JSON:") and json.loads(row[1])["greedy"] is True and row[2] == "transformers"
    assert isinstance(json.loads(row[4]), list) and "compression_ratio" in json.loads(row[5])
    assert demo_ws.cursor().execute("SELECT status, model FROM runs WHERE run_id = ?", [run_id]).fetchone() == ("done", "tiny")
    # ingesting again changes nothing
    assert jobs.ingest(demo_ws, run_id) == 0


def test_kill_9_then_resume_equals_an_uninterrupted_run(demo_ws, tiny_model):
    full = start_sampling(demo_ws, cfg(tiny_model))
    assert jobs.wait(demo_ws, full).status == "done"

    run_id = start_sampling(demo_ws, cfg(tiny_model))
    shards = demo_ws.jobs_dir / run_id / "shards"
    deadline = time.time() + 120
    while not list(shards.glob("candidates-*.parquet")) and time.time() < deadline:
        time.sleep(0.05)
    pid = int((demo_ws.jobs_dir / run_id / "pid").read_text())
    os.killpg(pid, signal.SIGKILL)
    time.sleep(0.5)
    (state,) = jobs.sync_runs(demo_ws, [run_id])
    assert state.status == "died"
    status, error = demo_ws.cursor().execute("SELECT status, error FROM runs WHERE run_id = ?", [run_id]).fetchone()
    assert status == "failed" and "resume" in error
    partial = len(candidate_set(demo_ws, run_id))
    assert 0 < partial < len(candidate_set(demo_ws, full))

    jobs.launch(demo_ws, run_id)
    assert jobs.wait(demo_ws, run_id).status == "done"
    assert candidate_set(demo_ws, run_id) == candidate_set(demo_ws, full)  # nothing lost, nothing twice


def test_cancel_marks_the_run_cancelled(demo_ws, tiny_model):
    # enough work that the job is surely still running a second after it started (200 tokens once finished first)
    run_id = start_sampling(demo_ws, cfg(tiny_model, decoding={"n": 8, "max_new_tokens": 1500}))
    deadline = time.time() + 120
    while jobs.job_state(demo_ws.jobs_dir / run_id).status != "running" and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(1)
    assert jobs.cancel(demo_ws, run_id)
    state = jobs.wait(demo_ws, run_id)
    assert state.status == "cancelled"
    assert demo_ws.cursor().execute("SELECT status FROM runs WHERE run_id = ?", [run_id]).fetchone()[0] == "cancelled"


def test_bad_model_inputs(demo_ws, tmp_path, tiny_model):
    with pytest.raises(WorkspaceError, match="does not exist"):
        start_sampling(demo_ws, cfg(tmp_path / "nowhere"))
    with pytest.raises(WorkspaceError, match="no items"):
        start_sampling(demo_ws, cfg(tiny_model, split="nosuchsplit"))
    # a model folder without a tokenizer: the job fails with the reason, the app goes on
    no_tok = tmp_path / "no-tokenizer"
    no_tok.mkdir()
    for f in tiny_model.iterdir():
        if "token" not in f.name and f.name != "special_tokens_map.json":
            (no_tok / f.name).write_bytes(f.read_bytes())
    run_id = start_sampling(demo_ws, cfg(no_tok, limit=1))
    state = jobs.wait(demo_ws, run_id)
    assert state.status == "failed" and "tokenizer" in state.error
    assert demo_ws.cursor().execute("SELECT error FROM runs WHERE run_id = ?", [run_id]).fetchone()[0] == state.error


def test_prompt_longer_than_context_is_skipped_with_reason(demo_ws, tmp_path):
    short = build_tiny_model(tmp_path / "short-ctx", max_positions=300)
    run_id = start_sampling(demo_ws, cfg(short, limit=4))
    state = jobs.wait(demo_ws, run_id)
    s = run_summary(demo_ws, run_id)
    assert s["skipped"] and all("context" in r for r in s["skipped"].values())
    assert state.status in ("done", "failed")



def test_openai_backend_against_a_real_server(demo_ws, tiny_model):
    from core.serve import CompletionsHandler, CompletionsServer

    seen: dict[str, int] = {}

    class Flaky(CompletionsHandler):
        def do_POST(self):
            length = int(self.headers.get("Content-Length", 0))
            raw = self.rfile.read(length)
            body = json.loads(raw)
            key = f"{body['prompt'][-80:]}|{body['temperature']}"
            seen[key] = seen.get(key, 0) + 1
            if seen[key] == 1:
                return self._send(500, {"error": {"message": "overloaded"}})
            if seen[key] == 2 and body["temperature"] == 0:
                time.sleep(6)  # longer than the client's timeout: a retry must follow
            self.rfile = __import__("io").BytesIO(raw)
            return super().do_POST()

    server = CompletionsServer(str(tiny_model), port=0, model_name="tiny", handler=Flaky)
    server.start_background()
    try:
        url = f"http://127.0.0.1:{server.server_port}"
        run_id = start_sampling(demo_ws, cfg("tiny", backend="openai", base_url=url, limit=2, timeout_s=4, retries=4))
        state = jobs.wait(demo_ws, run_id)
        assert state.status == "done", jobs.read_log(demo_ws, run_id)
        s = run_summary(demo_ws, run_id)
        assert s["candidates"] == 6 and s["skipped"] == {}
        assert set(s["finish_reasons"]) <= {"stop", "length"}
        assert max(seen.values()) >= 2
    finally:
        server.shutdown()


def test_openai_backend_unreachable_server_fails_the_job_with_the_reason(demo_ws):
    run_id = start_sampling(demo_ws, cfg("tiny", backend="openai", base_url="http://127.0.0.1:9", limit=1, retries=1))
    state = jobs.wait(demo_ws, run_id)
    assert state.status == "failed" and "cannot reach" in state.error


def test_cli_sample_json(tmp_path, tiny_model):
    from core.store import open_workspace

    w = open_workspace(tmp_path / "ws")
    fill_demo(w)
    w.close()
    out = subprocess.run(
        [sys.executable, "-m", "core", "sample", "-w", str(tmp_path / "ws"), "--model", str(tiny_model), "--dataset", "demo",
         "--split", "test", "--n", "2", "--max-new-tokens", "16", "--limit", "2", "--early-stop", "--json"],
        capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert summary["status"] == "done" and summary["candidates"] == 6 and summary["run_id"].startswith("sample-")


def test_shard_size_follows_the_backend_unless_set():
    """vllm decodes a shard as one batch (and the writer pays per file): 64 items a shard; the others 8."""
    from core.steps.sample import SampleConfig

    assert SampleConfig(backend="vllm").shard_items() == 64 and SampleConfig().shard_items() == 8
    assert SampleConfig(backend="openai").shard_items() == 8 and SampleConfig(backend="vllm", items_per_shard=3).shard_items() == 3
