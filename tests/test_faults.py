"""Faults: sampling and judging jobs killed with SIGKILL at random points and resumed lose and repeat nothing;
an app process killed while it writes decisions leaves no half-written decision; a damaged shard is detected,
reported, set aside, and nothing of it is ingested. bench/bench_faults.py runs the same trials in the 20s."""

from __future__ import annotations

import json
import random
import time

import pyarrow.parquet as pq
import pytest

from core import jobs
from core.judges.base import JudgeConfig
from core.samplers.base import DecodingConfig
from core.steps.judge import start_judging
from core.steps.sample import SampleConfig, start_sampling
from core.store import open_workspace
from tests.conftest import fill_demo
from tests.faults import (
    FakeCompletions,
    compare,
    kill_job,
    kill_resume_trial,
    kill_review_writer,
    review_problems,
)
from tests.review_data import add_review_run

TRIALS = 5


def fake_cfg(url: str, **kw) -> SampleConfig:
    return SampleConfig(model="fake-model", dataset="demo", backend="openai", base_url=url, items_per_shard=2, concurrency=2,
                        decoding=DecodingConfig(n=2, max_new_tokens=48, seed=3, with_greedy=True), **kw)


def run_done(ws, run_id):
    return ws.cursor().execute("SELECT status, error FROM runs WHERE run_id = ?", [run_id]).fetchall()[0]


def timed_run(ws, start) -> tuple[str, float]:
    t0 = time.time()
    run_id = start()
    assert jobs.wait(ws, run_id, poll_s=0.05).status == "done", jobs.read_log(ws, run_id)
    return run_id, time.time() - t0


def test_sampling_killed_at_random_points_resumes_to_the_uninterrupted_run(demo_ws):
    n_items = demo_ws.cursor().execute("SELECT count(*) FROM items").fetchall()[0][0]
    with FakeCompletions() as server:
        ref, span = timed_run(demo_ws, lambda: start_sampling(demo_ws, fake_cfg(server.url)))
        for trial in range(TRIALS):
            run_id = start_sampling(demo_ws, fake_cfg(server.url))
            points, state = kill_resume_trial(demo_ws, run_id, random.Random(trial), n_items, span)
            assert state.status == "done", (points, jobs.read_log(demo_ws, run_id))
            c = compare(demo_ws, "candidates", ref, run_id)
            assert c["rows"] == c["reference"] == 3 * n_items, (points, c)
            assert (c["lost"], c["extra"], c["changed"], c["duplicated"]) == (0, 0, 0, 0), (points, c)
            assert run_done(demo_ws, run_id) == ("done", None)
            assert not list((demo_ws.jobs_dir / run_id / "shards").glob("*.tmp"))


def test_judging_killed_at_random_points_resumes_to_the_uninterrupted_run(demo_ws):
    with FakeCompletions() as server:
        sample_run, _ = timed_run(demo_ws, lambda: start_sampling(demo_ws, fake_cfg(server.url)))
    n = demo_ws.cursor().execute("SELECT count(*) FROM candidates").fetchall()[0][0]
    cfg = JudgeConfig(batch_size=2)
    ref, span = timed_run(demo_ws, lambda: start_judging(demo_ws, sample_run, cfg))
    for trial in range(TRIALS):
        run_id = start_judging(demo_ws, sample_run, cfg)
        points, state = kill_resume_trial(demo_ws, run_id, random.Random(100 + trial), n, span)
        assert state.status == "done", (points, jobs.read_log(demo_ws, run_id))
        c = compare(demo_ws, "judgments", ref, run_id)
        assert c["rows"] == c["reference"] == n, (points, c)
        assert (c["lost"], c["extra"], c["changed"], c["duplicated"]) == (0, 0, 0, 0), (points, c)
        assert run_done(demo_ws, run_id) == ("done", None)


@pytest.mark.slow
def test_transformers_resume_after_a_skipped_item_decodes_the_same_batches(demo_ws, tmp_path):
    """A real model whose context is too short for some documents: those items are skipped, and a resume must
    still cut the same batches (each batch is seeded by its first item), or the sampled candidates change."""
    from tests.models import build_tiny_model

    model = build_tiny_model(tmp_path / "short-ctx", max_positions=300)
    cfg = lambda: SampleConfig(model=str(model), dataset="demo", split="train", items_per_shard=2,
                               decoding=DecodingConfig(n=2, max_new_tokens=12, seed=7, with_greedy=True))
    ref, _ = timed_run(demo_ws, lambda: start_sampling(demo_ws, cfg()))
    skipped = json.loads((demo_ws.jobs_dir / ref / "skipped.json").read_text())
    assert 0 < len(skipped) < 12
    run_id = start_sampling(demo_ws, cfg())
    shards = demo_ws.jobs_dir / run_id / "shards"
    deadline = time.time() + 300
    while not list(shards.glob("candidates-*.parquet")) and time.time() < deadline:
        time.sleep(0.01)
    kill_job(demo_ws, run_id)
    jobs.launch(demo_ws, run_id)
    assert jobs.wait(demo_ws, run_id).status == "done"
    c = compare(demo_ws, "candidates", ref, run_id)
    assert (c["lost"], c["extra"], c["changed"], c["duplicated"]) == (0, 0, 0, 0), c


# ---------------------------------------------------------------- damaged shards


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _empty(path):
    path.write_bytes(b"")


def _garbage(path):
    path.write_bytes(random.Random(0).randbytes(path.stat().st_size))


def _flip_a_bit(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 3] ^= 0x10  # inside the column data: Parquet itself often reads this without an error
    path.write_bytes(bytes(data))


def _no_footer(path):
    data = path.read_bytes()
    path.write_bytes(data[:-8])


DAMAGE = {"truncated": _truncate, "empty": _empty, "garbage": _garbage, "one bit flipped": _flip_a_bit, "footer cut": _no_footer}


def test_damaged_shards_are_reported_set_aside_never_half_ingested_and_resume_redoes_them(demo_ws):
    with FakeCompletions() as server:
        ref, _ = timed_run(demo_ws, lambda: start_sampling(demo_ws, fake_cfg(server.url)))
        run_id = start_sampling(demo_ws, fake_cfg(server.url))
        job_dir = demo_ws.jobs_dir / run_id
        while jobs.job_state(job_dir).status == "running":  # it finishes while the app is not looking: nothing ingested yet
            time.sleep(0.05)
        shards = sorted((job_dir / "shards").glob("candidates-*.parquet"))
        damaged = dict(zip(DAMAGE, shards[1::2]))  # one shard per kind of damage, good ones in between
        lost_items = set()
        for kind, shard in damaged.items():
            lost_items |= set(pq.read_table(shard).column("item_id").to_pylist())
            DAMAGE[kind](shard)

        jobs.sync_runs(demo_ws, [run_id])
        status, error = run_done(demo_ws, run_id)
        assert status == "failed" and "resume" in error and f"{len(DAMAGE)} shards were not ingested" in error, error
        assert all(shard.name in error for shard in damaged.values()), error
        got = {r[0] for r in demo_ws.cursor().execute("SELECT DISTINCT item_id FROM candidates WHERE run_id = ?", [run_id]).fetchall()}
        everything = {r[0] for r in demo_ws.cursor().execute("SELECT item_id FROM items").fetchall()}
        assert not got & lost_items, "rows of a damaged shard were ingested"
        assert got == everything - lost_items  # the good shards went in
        for shard in damaged.values():
            assert (job_dir / "corrupt" / shard.name).exists() and not shard.exists()
        assert jobs.ingest(demo_ws, run_id) == 0  # not tried again

        jobs.launch(demo_ws, run_id)  # resume: the worker redoes the damaged shards' items
        state = jobs.wait(demo_ws, run_id, poll_s=0.05)
        assert state.status == "done", (state, sorted(p.name for p in job_dir.iterdir()), jobs.read_log(demo_ws, run_id))
        assert run_done(demo_ws, run_id) == ("done", None)
        c = compare(demo_ws, "candidates", ref, run_id)
        assert (c["lost"], c["extra"], c["changed"], c["duplicated"]) == (0, 0, 0, 0), c


# ---------------------------------------------------------------- the app killed while it writes decisions


def test_app_killed_while_writing_decisions_leaves_no_half_written_decision(tmp_path):
    w = open_workspace(tmp_path / "ws")
    fill_demo(w, n_train=16, n_validation=0, n_test=0)
    add_review_run(w, 16)  # 32 pending pairs
    w.close()
    total = 0
    for trial in range(TRIALS):
        reported = kill_review_writer(w.root, random.Random(trial), trial)
        w = open_workspace(w.root)  # the restart: DuckDB replays its log
        try:
            assert review_problems(w) == [], f"trial {trial}"
            n = w.cursor().execute("SELECT count(*) FROM decisions").fetchall()[0][0]
            assert n >= total + reported  # what the app reported committed is there
            total = n
        finally:
            w.close()
    assert total > 0


def test_a_shard_the_store_refuses_goes_in_whole_or_not_at_all(demo_ws):
    """A shard that passes its checksum but breaks a constraint (a NULL text) is rolled back whole and set aside;
    a shard written before shards carried a checksum is still ingested."""
    import pyarrow as pa

    run_id = jobs.create_job(demo_ws, "sample", {"config": {}})
    ctx = jobs.JobContext(demo_ws.jobs_dir / run_id)
    row = lambda i, text: {"candidate_id": f"{run_id}:i{i}:0", "run_id": run_id, "dataset": "demo", "item_id": f"i{i}",
                           "sample_index": 0, "text": text}
    good = ctx.write_shard("candidates", [row(0, "a"), row(1, "b")])
    bad = ctx.write_shard("candidates", [row(2, "c"), row(3, None), row(4, "e")])
    legacy = ctx.shards_dir / "candidates-000009-abcdef.parquet"
    pq.write_table(pa.Table.from_pylist([row(5, "f")]), legacy)
    assert jobs.shard_problem(good) is None and jobs.shard_problem(legacy) is None

    assert jobs.ingest(demo_ws, run_id) == 3
    ids = sorted(r[0] for r in demo_ws.cursor().execute("SELECT item_id FROM candidates WHERE run_id = ?", [run_id]).fetchall())
    assert ids == ["i0", "i1", "i5"]  # nothing of the refused shard, not even its valid rows
    error = demo_ws.cursor().execute("SELECT error FROM runs WHERE run_id = ?", [run_id]).fetchall()[0][0]
    assert bad.name in error and "NOT NULL" in error and (ctx.dir / "corrupt" / bad.name).exists()


def test_cancel_right_after_launch_is_a_cancel_not_a_death(demo_ws):
    """SIGTERM can reach a worker before it has installed its handler (Python still starting): it then dies
    without a status, which must still read as the user's cancel."""
    with FakeCompletions() as server:
        for delay in (0.0, 0.05):
            run_id = start_sampling(demo_ws, fake_cfg(server.url))
            time.sleep(delay)
            assert jobs.cancel(demo_ws, run_id)
            assert jobs.wait(demo_ws, run_id, poll_s=0.05).status == "cancelled"
            assert run_done(demo_ws, run_id) == ("cancelled", "cancelled by the user")


def test_a_worker_that_finishes_while_its_state_is_read_is_not_reported_dead(tmp_path, monkeypatch):
    """The worker writes status.json and exits between the reader's two looks (seen on a loaded box:
    a judge run of 20 candidates marked died, then failed): the state read again gives its status."""
    import json

    from core.jobs import control

    job = tmp_path / "judge-x"
    job.mkdir()
    (job / "pid").write_text("999999")

    def finishes_now(pid, job_dir):
        (job / "status.json").write_text(json.dumps({"status": "done", "error": None}))
        return False

    monkeypatch.setattr(control, "_pid_alive", finishes_now)
    state = control.job_state(job)
    assert state.status == "done" and state.error is None


def test_a_job_polled_before_or_while_its_worker_starts_is_queued_not_dead(demo_ws, monkeypatch):
    """The app polls from other sessions' threads while one launches (seen in CI: a training run marked
    'ended without a final status' 24 ms after it was created, then trained and registered its model): a job
    created but not yet spawned, and a resumed one whose old pid is dead while it is relaunched, are queued;
    once the worker has started, a dead pid without a status is a death."""
    from core.jobs import control

    run_id = jobs.create_job(demo_ws, "sample", {"config": {}})
    job = demo_ws.jobs_dir / run_id
    assert jobs.job_state(job).status == "queued"  # between create_job and the spawn
    assert jobs.sync_runs(demo_ws, [run_id])[0].status == "queued" and run_done(demo_ws, run_id)[0] == "queued"

    (job / "pid").write_text("999999")  # the worker ran and was killed: no status, no launching
    (job / "launching").unlink()
    assert jobs.job_state(job).status == "died"

    seen = []
    real_spawn = control.spawn

    def spawn_after_a_poll(job_dir):  # a poll lands between launch's first steps and the new pid
        seen.append(jobs.job_state(job_dir).status)
        return real_spawn(job_dir)

    monkeypatch.setattr(control, "spawn", spawn_after_a_poll)
    (job / "pid").write_text("999999")
    control.launch(demo_ws, run_id)  # a config of {} fails in the worker, which is fine: it started
    assert seen == ["queued"] and jobs.wait(demo_ws, run_id, poll_s=0.05).status == "failed"
    assert not (job / "launching").exists()
