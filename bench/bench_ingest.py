"""Ingest of 1M candidate rows: `core.jobs.ingestion` against a bare DuckDB INSERT of the same files.

Writes the shards a sampling job of 125,000 items × 8 candidates leaves (bench/gen_workspace.py:
realistic invoice JSON, the prompt stored with each candidate, one shard per 8 items = 15,625 shards,
~0.5 GB of Parquet), then, each into a fresh store with the same schema:

* **baseline** — one bare `INSERT INTO candidates BY NAME SELECT * FROM read_parquet([all files])`;
* **ingest** — the writer's real path, `core.jobs.ingest(ws, run_id)` (checksums, everything waiting in
  one statement and transaction, the derived `chars`, the `shards` bookkeeping);
* optionally (`--one-by-one N`) the one-statement-per-shard path on N shards, extrapolated: what
  ingest did before it batched.

Prints wall and CPU seconds (CPU counts DuckDB's threads too: on a shared 2-core box the wall time
depends on the neighbours), the ratio ingest / baseline, and the figure against the 20 s target.

    .venv/bin/python bench/bench_ingest.py [--items 125000] [--one-by-one 300] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import duckdb

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.gen_workspace import GenConfig, build_pool, has_quality, write_candidate_job  # noqa: E402
from core import jobs  # noqa: E402
from core.store import now, open_workspace  # noqa: E402

TARGET_S = 20.0
RUN = "sample-bench"


def timed(fn):
    t, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - t, time.process_time() - c


def fresh_workspace(root: Path):
    ws = open_workspace(root)
    ws.cursor().execute("INSERT INTO runs (run_id, kind, status, created_at) VALUES (?, 'sample', 'running', ?)", [RUN, now()])
    return ws


def link_shards(src: Path, job_dir: Path) -> None:
    (job_dir / "shards").mkdir(parents=True)
    shutil.copy(src.parent / "spec.json", job_dir / "spec.json")
    for f in src.iterdir():
        os.link(f, job_dir / "shards" / f.name)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=125_000, help="items × 8 candidates = rows (125,000 → 1M)")
    ap.add_argument("--pool", type=int, default=100, help="distinct demo records behind the documents")
    ap.add_argument("--one-by-one", type=int, default=0, help="also time the one-statement-per-shard path on this many shards")
    ap.add_argument("--keep", help="folder for the shards (kept, and reused when it already holds them)")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="loopbreak-bench-ingest-"))
    src_job = Path(args.keep) if args.keep else tmp / "shards-src"
    cfg = GenConfig(items=args.items, pool=args.pool)
    probe = open_workspace(tmp / "probe")
    with_quality = has_quality(probe)  # the store's candidates carry a quality column from schema 5
    probe.close()
    if not (src_job / "shards").is_dir() or not any((src_job / "shards").iterdir()):
        src_job.mkdir(parents=True, exist_ok=True)
        (src_job / "spec.json").write_text(json.dumps({"run_id": RUN, "kind": "sample"}))
        pool = build_pool(cfg)
        written, wall, _ = timed(lambda: write_candidate_job(cfg, pool, src_job, RUN, with_quality=with_quality))
        print(f"generated {written['candidates']:,} candidate rows in {written['candidate_shards']:,} shards in {wall:.1f} s")
    shards = sorted(str(p) for p in (src_job / "shards").glob("candidates-*.parquet"))
    size = sum(os.path.getsize(p) for p in shards)
    print(f"{len(shards):,} shards, {size / 1e6:.0f} MB of Parquet")

    # Baseline: a bare INSERT of all the files into the same schema, one statement.
    base_ws = open_workspace(tmp / "baseline")
    base_ws.close()
    con = duckdb.connect(str(tmp / "baseline" / "loopbreak.duckdb"))
    _, b_wall, b_cpu = timed(lambda: con.execute("INSERT INTO candidates BY NAME SELECT * FROM read_parquet(?)", [shards]).fetchall())
    b_rows = con.execute("SELECT count(*) FROM candidates").fetchall()[0][0]
    con.close()
    print(f"baseline  bare INSERT … read_parquet: {b_rows:,} rows in {b_wall:.1f} s wall, {b_cpu:.1f} s CPU")

    # The product: the writer's ingest of the job folder.
    ws = fresh_workspace(tmp / "ingest")
    link_shards(src_job / "shards", ws.jobs_dir / RUN)
    added, i_wall, i_cpu = timed(lambda: jobs.ingest(ws, RUN))
    rows, recorded = ws.cursor().execute("SELECT (SELECT count(*) FROM candidates), count(*) FROM shards").fetchall()[0]
    err = ws.cursor().execute("SELECT error FROM runs WHERE run_id = ?", [RUN]).fetchall()[0][0]
    assert added == rows == b_rows and recorded == len(shards) and not err, (added, rows, recorded, err)
    again, _, _ = timed(lambda: jobs.ingest(ws, RUN))
    assert again == 0
    ws.close()
    print(f"ingest    core.jobs.ingest:               {rows:,} rows in {i_wall:.1f} s wall, {i_cpu:.1f} s CPU "
          f"({len(shards):,} shards recorded; a second ingest adds {again})")

    if args.one_by_one:
        ws = fresh_workspace(tmp / "one-by-one")
        (ws.jobs_dir / RUN / "shards").mkdir(parents=True)
        shutil.copy(src_job / "spec.json", ws.jobs_dir / RUN / "spec.json")
        for p in shards[: args.one_by_one]:
            os.link(p, ws.jobs_dir / RUN / "shards" / Path(p).name)
        saved, jobs.ingestion.INGEST_BATCH_BYTES = jobs.ingestion.INGEST_BATCH_BYTES, 0
        try:
            _, o_wall, o_cpu = timed(lambda: jobs.ingest(ws, RUN))
        finally:
            jobs.ingestion.INGEST_BATCH_BYTES = saved
        ws.close()
        k = len(shards) / args.one_by_one
        print(f"one by one ({args.one_by_one} shards, one statement each): {o_wall:.1f} s wall, {o_cpu:.1f} s CPU "
              f"→ all {len(shards):,}: ~{o_wall * k:.0f} s wall")

    print(f"ratio ingest / baseline: {i_wall / b_wall:.2f} wall, {i_cpu / b_cpu:.2f} CPU")
    print(f"INGEST of {rows:,} candidate rows = {i_wall:.1f} s (target <= {TARGET_S:.0f} s; {i_wall / TARGET_S:.2f} × target)")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
