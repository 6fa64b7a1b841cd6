"""Scale, the fast variant: bench/gen_workspace.py at 2,000 items × 8 through the real import and
ingest paths, then the Candidates and Home queries checked against the stored rows. The full size
(100k × 8) and its timings live in bench/ (gen_workspace, bench_ingest, bench_candidates,
bench_review, bench_home); no timing is asserted here."""

from __future__ import annotations

import json

import pyarrow.compute as pc
import pytest

from bench.gen_workspace import GenConfig, generate
from core import jobs
from core.policy.detect import analyze
from core.review.browse import candidate_runs, candidates_frame
from core.review.queue import QueueFilter, next_pair, pair_view
from core.store.candidates import get_candidate
from core.store import counts, next_step, open_workspace
from core.store.items import list_datasets
from core.store.models import list_models

CFG = GenConfig(items=2000, candidates=8, pool=40, judge_batch=64)


@pytest.fixture(scope="module")
def scale(tmp_path_factory):
    root = tmp_path_factory.mktemp("scale") / "ws"
    stats = generate(root, CFG, log=lambda *a: None)
    ws = open_workspace(root)
    table = ws.cursor().sql(
        """SELECT c.candidate_id, c.item_id, c.sample_index, c.has_loop, c.degenerate, c.finish_reason, length(c.text) AS chars,
                  c.text, c.loops, j.overall
           FROM candidates c LEFT JOIN judgments j USING (candidate_id) ORDER BY c.item_id, c.sample_index"""
    ).to_arrow_table()
    yield ws, stats, table
    ws.close()


def test_the_generator_fills_the_store_through_the_job_shards(scale):
    ws, stats, table = scale
    cur = ws.cursor()
    n = CFG.items * CFG.candidates
    c = counts(cur)
    assert (c["items"], c["candidates"], c["judgments"], c["judged_candidates"]) == (CFG.items, n, n, n)
    assert c["pairs"] == stats["mining"]["pairs"] > 0 and c["pairs_pending"] == c["pairs"]
    runs = dict(cur.execute("SELECT run_id, status FROM runs WHERE error IS NULL").fetchall())
    assert runs == {stats["run_id"]: "done", stats["judge_run"]: "done"}
    # Every shard the jobs wrote was ingested once and recorded with its rows; ingesting again adds nothing.
    files = {p.name for r in runs for p in (ws.jobs_dir / r / "shards").glob("*.parquet")}
    recorded = dict(cur.execute("SELECT path, rows FROM shards").fetchall())
    assert set(recorded) == files and len(files) == stats["candidate_shards"] + stats["judgment_shards"]
    assert sum(recorded.values()) == 2 * n
    assert jobs.ingest(ws, stats["run_id"]) == 0 and jobs.ingest(ws, stats["judge_run"]) == 0
    # Each item is unique (its id is inside its document, reference and candidates) and realistic in length.
    chars = cur.execute("SELECT count(DISTINCT text), min(length(reference)), max(length(reference)) FROM items").fetchall()[0]
    assert chars[0] == CFG.items and 200 <= chars[1] and chars[2] <= 5000
    texts, per_item = cur.execute("SELECT count(DISTINCT text), count(DISTINCT (item_id, text)) FROM candidates").fetchall()[0]
    assert texts == per_item > CFG.items * 2  # no text shared by two items; several variants per item
    assert cur.execute("SELECT count(*) FROM candidates c JOIN items i USING (dataset, item_id) LEFT JOIN prompts p USING (prompt_id) "
                       "WHERE NOT contains(c.text, c.item_id) OR NOT contains(p.prompt, i.text) OR p.prompt IS NULL").fetchall()[0][0] == 0
    assert cur.execute("SELECT count(*) FROM prompts").fetchall()[0][0] == CFG.items  # each item's prompt once, not 8 times


def test_five_percent_are_loops_that_run_to_the_limit_and_the_detector_flags_them(scale):
    ws, stats, table = scale
    n = table.num_rows
    degenerate = table.filter(table.column("degenerate"))
    assert degenerate.num_rows == stats["loop_candidates"]
    assert 0.04 <= degenerate.num_rows / n <= 0.06
    assert pc.all(pc.equal(degenerate.column("finish_reason"), "length")).as_py()
    assert pc.all(pc.equal(degenerate.column("chars"), CFG.limit_chars)).as_py()
    # The stored verdicts are the detector's on the stored text (computed once per template, valid for every item).
    rows = degenerate.slice(0, 60).to_pylist() + table.filter(pc.invert(table.column("degenerate"))).slice(0, 60).to_pylist()
    for r in rows:
        det = analyze(r["text"], r["finish_reason"])
        assert det.degenerate == r["degenerate"] and det.has_loop == r["has_loop"], r["candidate_id"]
        assert [lp.to_dict() for lp in det.loops] == json.loads(r["loops"]), r["candidate_id"]
    # The loops score low with the judge: the review queue's pairs reject them.
    assert pc.max(degenerate.column("overall")).as_py() < 0.6
    assert ws.cursor().execute("SELECT count(*) FROM pairs WHERE json_extract_string(provenance, '$.rejected_because') = 'degenerate'"
                               ).fetchall()[0][0] > 0


CASES = [
    ({}, lambda r: True),
    ({"has_loop": True}, lambda r: r["has_loop"]),
    ({"has_loop": False}, lambda r: not r["has_loop"]),
    ({"finish_reasons": ["length"]}, lambda r: r["finish_reason"] == "length"),
    ({"finish_reasons": ["stop", "repetition"]}, lambda r: r["finish_reason"] in ("stop", "repetition")),
    ({"score": (0.0, 0.5)}, lambda r: r["overall"] is not None and r["overall"] <= 0.5),
    ({"score": (0.9, 1.0)}, lambda r: r["overall"] is not None and r["overall"] >= 0.9),
    ({"chars": (0, 1000)}, lambda r: r["chars"] <= 1000),
    ({"has_loop": False, "chars": (500, 2500), "score": (0.6, 1.0)},
     lambda r: not r["has_loop"] and 500 <= r["chars"] <= 2500 and r["overall"] is not None and r["overall"] >= 0.6),
    ({"has_loop": True, "finish_reasons": ["length"], "score": (0.0, 0.6)},
     lambda r: r["has_loop"] and r["finish_reason"] == "length" and r["overall"] is not None and r["overall"] <= 0.6),
]


@pytest.mark.parametrize("filters,keep", CASES, ids=[",".join(f) or "any" for f, _ in CASES])
def test_candidate_browser_filters_return_exactly_the_matching_rows_in_order(scale, filters, keep):
    ws, stats, table = scale
    rows = [r for r in table.select(["candidate_id", "item_id", "sample_index", "has_loop", "finish_reason", "chars", "overall"]).to_pylist()
            if keep(r)]
    assert rows, "a filter that matches nothing tests nothing"
    df = candidates_frame(ws, stats["run_id"], **filters, limit=20_000)
    assert list(df["candidate_id"]) == [r["candidate_id"] for r in rows]
    assert list(df["chars"]) == [r["chars"] for r in rows]
    assert df["overall"].tolist() == pytest.approx([r["overall"] for r in rows])
    first = candidates_frame(ws, stats["run_id"], **filters)  # the page's default limit: the first 2,000 in order
    assert list(first["candidate_id"]) == [r["candidate_id"] for r in rows[:2000]]
    assert set(first["model"]) == {CFG.model}


def test_candidate_page_lookups(scale):
    ws, stats, table = scale
    assert candidate_runs(ws) == [stats["run_id"]]
    cid = table.column("candidate_id")[12345].as_py()
    cand = get_candidate(ws, cid)
    assert cand["text"] == table.column("text")[12345].as_py() and isinstance(cand["loops"], list)


def test_home_and_review_on_the_generated_workspace(scale):
    ws, stats, table = scale
    cur = ws.cursor()
    c = counts(cur)
    assert next_step(c) == ("Review pairs", f"{c['pairs']} pairs wait for review.")
    assert list_datasets(cur) == [{"dataset": CFG.dataset, "split": "train", "items": CFG.items}]
    assert [m["name"] for m in list_models(cur)] == [CFG.model]
    # Mining joined each pair's texts and prompt from the store.
    assert cur.execute("""SELECT count(*) FROM pairs p JOIN candidates r ON r.candidate_id = p.rejected_candidate_id
                          JOIN candidates h ON h.candidate_id = p.chosen_candidate_id LEFT JOIN prompts pr ON pr.prompt_id = r.prompt_id
                          WHERE p.rejected_text IS DISTINCT FROM r.text OR p.chosen_text IS DISTINCT FROM h.text
                             OR p.prompt IS DISTINCT FROM pr.prompt OR pr.prompt IS NULL""").fetchall()[0][0] == 0
    pair_id = next_pair(ws, QueueFilter(run=stats["run_id"]), "scale-test")
    v = pair_view(ws, pair_id)
    assert len(v["candidates"]) == CFG.candidates and v["chosen"]["judgment"] and v["rejected"]["judgment"]
    assert v["document"].startswith(f"Documento {v['item_id']}\n")


def _job(ws, run_id: str) -> jobs.JobContext:
    from core.store import now

    ws.cursor().execute("INSERT INTO runs (run_id, kind, status, created_at) VALUES (?, 'sample', 'running', ?)", [run_id, now()])
    (ws.jobs_dir / run_id).mkdir()
    (ws.jobs_dir / run_id / "spec.json").write_text(json.dumps({"run_id": run_id, "kind": "sample"}))
    return jobs.JobContext(ws.jobs_dir / run_id)


def _rows(run_id: str, start: int, n: int) -> list[dict]:
    return [{"candidate_id": f"{run_id}:i{k:03d}:0", "run_id": run_id, "dataset": "d", "item_id": f"i{k:03d}", "sample_index": 0,
             "text": "x" * k, "finish_reason": "stop", "degenerate": False, "has_loop": False} for k in range(start, start + n)]


def test_batched_ingest_isolates_an_unreadable_shard_and_tolerates_duplicates(ws):
    ctx = _job(ws, "r1")
    for i in range(9):
        ctx.write_shard("candidates", _rows("r1", 4 * i, 4))
    # An unreadable shard in the middle (a name without a checksum: only DuckDB can find it bad), and a
    # shard repeating rows of another under a new name (a worker re-writing a shard after a crash).
    (ctx.shards_dir / "candidates-000004-zzzzzz.parquet").write_bytes(b"PAR1 not parquet PAR1")
    dup = ctx.write_shard("candidates", _rows("r1", 32, 6))  # 4 rows already there, 2 new
    assert jobs.ingest(ws, "r1") == 36 + 2
    cur = ws.cursor()
    assert cur.execute("SELECT count(*), count(DISTINCT candidate_id), sum(chars) = sum(length(text)) FROM candidates").fetchall()[0] == (38, 38, True)
    recorded = dict(cur.execute("SELECT path, rows FROM shards").fetchall())
    assert recorded.pop("candidates-000004-zzzzzz.parquet") is None  # set aside, reported on the run
    assert len(recorded) == 10 and recorded[dup.name] in (2, 6)
    assert "candidates-000004-zzzzzz.parquet" in cur.execute("SELECT error FROM runs WHERE run_id = 'r1'").fetchall()[0][0]
    assert jobs.ingest(ws, "r1") == 0


def test_judge_page_summary_and_chart_sample_match_the_full_frame(scale):
    from core.policy.mining import PairPolicy
    from core.steps.judge import judge_summary
    from core.store.judgments import judgments_frame
    from core.steps.pairs import mine_run

    ws, stats, table = scale
    df = judgments_frame(ws, stats["judge_run"])  # every row, through pandas: what the summary used to be computed from
    assert len(df) == CFG.items * CFG.candidates
    ok = df[df["error"].isna()]
    s = judge_summary(ws, stats["judge_run"])
    assert (s["judged"], s["errors"]) == (len(df), 0) and s["mean_overall"] == pytest.approx(ok["overall"].mean(), abs=1e-4)
    assert list(s["criteria"]) == [c[len("score_"):] for c in df.columns if c.startswith("score_")]
    for k, v in s["criteria"].items():
        assert v == pytest.approx(ok[f"score_{k}"].mean(), abs=1e-4)
    assert s["overall_by_degenerate"] == pytest.approx({str(k).lower(): v for k, v in ok.groupby("degenerate")["overall"].mean().items()}, abs=1e-4)
    sample = judgments_frame(ws, stats["judge_run"], sample=1000)
    assert len(sample) == 1000 and set(sample["candidate_id"]) <= set(df["candidate_id"])
    assert list(sample["candidate_id"]) == list(judgments_frame(ws, stats["judge_run"], sample=1000)["candidate_id"])  # repeatable
    # The mining preview is what writing would mine (the pairs are in the store already: none new).
    preview = mine_run(ws, stats["judge_run"], PairPolicy(), write=False)
    assert preview["pairs"] == stats["mining"]["pairs"] and mine_run(ws, stats["judge_run"], PairPolicy())["new"] == 0


def test_batched_ingest_keeps_a_column_only_later_shards_carry(ws):
    # A job resumed by a newer Loopbreak: its later shards carry a column the first ones lack.
    ctx = _job(ws, "r2")
    for i in range(3):
        ctx.write_shard("candidates", _rows("r2", 4 * i, 4))
    for i in range(3, 6):
        ctx.write_shard("candidates", [{**r, "latency_s": 1.5} for r in _rows("r2", 4 * i, 4)])
    assert jobs.ingest(ws, "r2") == 24
    assert ws.cursor().execute("SELECT count(*) FILTER (latency_s = 1.5), count(*) FILTER (latency_s IS NULL) FROM candidates"
                               ).fetchall()[0] == (12, 12)


def test_each_prompt_is_stored_once_from_new_and_old_shards(ws):
    """A worker writes each candidate's prompt id and the prompt's text on its item's first candidate; a shard
    written before schema 9 has the text on every row and no id. Batched or one by one, mixed in one job, every
    candidate ends up pointing at its prompt's one row in `prompts`."""
    from core.store.candidates import prompt_id

    def new(start, n):  # two candidates per item, the text on the first
        return [{**r, "candidate_id": f"r3:i{k:03d}:{j}", "sample_index": j, "prompt_id": prompt_id(f"P{k % 5}"),
                 "prompt": f"P{k % 5}" if j == 0 else None}
                for k, r in zip(range(start, start + n), _rows("r3", start, n)) for j in (0, 1)]

    def old(start, n):
        return [{**r, "prompt": f"P{int(r['item_id'][1:]) % 5}"} for r in _rows("r3", start, n)]

    ctx = _job(ws, "r3")
    for i in range(3):
        ctx.write_shard("candidates", old(4 * i, 4))
    for i in range(3, 6):
        ctx.write_shard("candidates", new(4 * i, 4))
    assert jobs.ingest(ws, "r3") == 12 + 24
    ctx.write_shard("candidates", old(40, 2))  # a lone shard: the one-by-one path
    assert jobs.ingest(ws, "r3") == 2
    ctx.write_shard("candidates", new(50, 1))
    assert jobs.ingest(ws, "r3") == 2
    cur = ws.cursor()
    assert cur.execute("SELECT prompt FROM prompts ORDER BY 1").fetchall() == [(f"P{k}",) for k in range(5)]
    wrong = cur.execute("""SELECT count(*) FROM candidates c LEFT JOIN prompts p USING (prompt_id)
                           WHERE p.prompt IS DISTINCT FROM 'P' || (substr(c.item_id, 2)::INT % 5)""").fetchall()[0][0]
    assert wrong == 0 and cur.execute("SELECT count(*) FROM candidates").fetchall()[0][0] == 40
    assert get_candidate(ws, "r3:i013:1")["prompt"] == "P3" and get_candidate(ws, "r3:i002:0")["prompt"] == "P2"
    assert "prompt" not in {r[0] for r in cur.execute("SELECT column_name FROM information_schema.columns "
                                                      "WHERE table_name = 'candidates'").fetchall()}
