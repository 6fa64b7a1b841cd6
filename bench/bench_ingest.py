"""Ingest of 1M candidate rows: `core.jobs.ingestion` against a bare DuckDB INSERT of the same files.

Writes the shards a sampling job of 125,000 items × 8 candidates leaves (bench/gen_workspace.py:
realistic invoice JSON), in these layouts:

* **prompts once** (schema 9, what a worker writes now) — every candidate names its prompt by
  ``prompt_id``, the prompt's text is on each item's first candidate only, and the store keeps each
  distinct prompt once in `prompts`; one shard per 64 items (vllm's default: ~1,960 shards) and per
  8 items (the other backends', and every backend's before: 15,625 shards), ``--shard-items``;
* **legacy** (``--legacy``, what a worker wrote before) — the prompt's text on every candidate, 8
  items a shard.

For each layout, each into a fresh store with the same schema:

* **baseline** — a bare DuckDB insert of all the files: for the new layout the distinct prompts into
  `prompts` and the rest into `candidates` (two statements), for the legacy one a single
  ``INSERT … SELECT * FROM read_parquet([all files])`` into the store as it was (schema 8) — the
  figure the issue started from;
* **ingest** — the writer's real path, `core.jobs.ingest(ws, run_id)` (checksums, everything waiting in
  one transaction, the derived `chars`, the prompts, the `shards` bookkeeping);
* optionally (`--one-by-one N`) the one-statement-per-shard path on N shards, extrapolated: what
  ingest did before it batched.

Prints wall and CPU seconds (CPU counts DuckDB's threads too: on a shared 2-core box the wall time
depends on the neighbours), the ratio ingest / baseline, and the figure against the 20 s target.

    .venv/bin/python bench/bench_ingest.py [--items 125000] [--shard-items 64 8] [--legacy] [--one-by-one 300] [--keep DIR]
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

from bench.gen_workspace import GenConfig, build_pool, write_candidate_job  # noqa: E402
from core import jobs  # noqa: E402
from core.store import now, open_workspace  # noqa: E402
from core.store.schema import SCHEMA_VERSION, migrate  # noqa: E402

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


def link_shards(src: Path, job_dir: Path, shards: list[str]) -> None:
    (job_dir / "shards").mkdir(parents=True)
    shutil.copy(src / "spec.json", job_dir / "spec.json")
    for f in shards:
        os.link(f, job_dir / "shards" / Path(f).name)


def shard_files(cfg: GenConfig, src_job: Path, legacy: bool) -> list[str]:
    """The job's candidate shards in `src_job`, generated unless it already holds them."""
    if not (src_job / "shards").is_dir() or not any((src_job / "shards").iterdir()):
        src_job.mkdir(parents=True, exist_ok=True)
        (src_job / "spec.json").write_text(json.dumps({"run_id": RUN, "kind": "sample"}))
        written, wall, _ = timed(lambda: write_candidate_job(cfg, build_pool(cfg, log=lambda *_: None), src_job, RUN,
                                                             with_quality=True, legacy=legacy))
        print(f"generated {written['candidates']:,} candidate rows in {written['candidate_shards']:,} shards in {wall:.1f} s")
    shards = sorted(str(p) for p in (src_job / "shards").glob("candidates-*.parquet"))
    print(f"{len(shards):,} shards, {sum(os.path.getsize(p) for p in shards) / 1e6:.0f} MB of Parquet")
    return shards


def baseline(root: Path, shards: list[str], legacy: bool) -> tuple[int, float, float]:
    """A bare insert of the files into the store's tables; the legacy layout into the store as it was
    before (schema 8: the prompt a column of candidates, DuckDB's own choice of compression)."""
    root.mkdir(parents=True)
    con = duckdb.connect(str(root / "loopbreak.duckdb"))
    migrate(con, 8 if legacy else SCHEMA_VERSION)
    if legacy:
        sql = ["INSERT INTO candidates BY NAME SELECT * FROM read_parquet(?)"]
    else:
        sql = ["INSERT INTO prompts SELECT prompt_id, any_value(prompt) FROM read_parquet(?) WHERE prompt IS NOT NULL GROUP BY 1",
               "INSERT INTO candidates BY NAME SELECT * EXCLUDE (prompt) FROM read_parquet(?)"]
    _, wall, cpu = timed(lambda: [con.execute(q, [shards]) for q in sql])
    rows = con.execute("SELECT count(*) FROM candidates").fetchall()[0][0]
    con.close()
    return rows, wall, cpu


def measure(cfg: GenConfig, src_job: Path, tmp: Path, legacy: bool, one_by_one: int) -> float:
    """Baseline and ingest of one layout; prints them and returns the ingest's wall seconds."""
    name = "legacy: the prompt on every candidate" if legacy else "prompts once"
    print(f"\n== {name}, {cfg.items_per_shard} items a shard")
    shards = shard_files(cfg, src_job, legacy)
    b_rows, b_wall, b_cpu = baseline(tmp / f"baseline-{src_job.name}", shards, legacy)
    print(f"baseline  bare insert … read_parquet:  {b_rows:,} rows in {b_wall:.1f} s wall, {b_cpu:.1f} s CPU")

    ws = fresh_workspace(tmp / f"ingest-{src_job.name}")
    link_shards(src_job, ws.jobs_dir / RUN, shards)
    added, i_wall, i_cpu = timed(lambda: jobs.ingest(ws, RUN))
    cur = ws.cursor()
    rows, recorded = cur.execute("SELECT (SELECT count(*) FROM candidates), count(*) FROM shards").fetchall()[0]
    prompts, unresolved = cur.execute("SELECT (SELECT count(*) FROM prompts), count(*) FILTER (p.prompt IS NULL) "
                                      "FROM candidates c LEFT JOIN prompts p USING (prompt_id)").fetchall()[0]
    err = cur.execute("SELECT error FROM runs WHERE run_id = ?", [RUN]).fetchall()[0][0]
    assert added == rows == b_rows and recorded == len(shards) and not err and not unresolved, (added, rows, recorded, err, unresolved)
    again, _, _ = timed(lambda: jobs.ingest(ws, RUN))
    assert again == 0
    ws.close()
    size = os.path.getsize(ws.db_path)
    print(f"ingest    core.jobs.ingest:             {rows:,} rows in {i_wall:.1f} s wall, {i_cpu:.1f} s CPU "
          f"({len(shards):,} shards recorded, {prompts:,} distinct prompts stored; a second ingest adds {again})"
          f"; store file {size / 1e6:.0f} MB")

    if one_by_one:
        ws = fresh_workspace(tmp / f"one-by-one-{src_job.name}")
        link_shards(src_job, ws.jobs_dir / RUN, shards[:one_by_one])
        saved, jobs.ingestion.INGEST_BATCH_BYTES = jobs.ingestion.INGEST_BATCH_BYTES, 0
        try:
            _, o_wall, o_cpu = timed(lambda: jobs.ingest(ws, RUN))
        finally:
            jobs.ingestion.INGEST_BATCH_BYTES = saved
        ws.close()
        k = len(shards) / one_by_one
        print(f"one by one ({one_by_one} shards, one statement each): {o_wall:.1f} s wall, {o_cpu:.1f} s CPU "
              f"→ all {len(shards):,}: ~{o_wall * k:.0f} s wall")
    print(f"ratio ingest / baseline: {i_wall / b_wall:.2f} wall, {i_cpu / b_cpu:.2f} CPU")
    return i_wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=125_000, help="items × 8 candidates = rows (125,000 → 1M)")
    ap.add_argument("--pool", type=int, default=100, help="distinct demo records behind the documents")
    ap.add_argument("--shard-items", type=int, nargs="+", default=[64, 8], help="items a shard, one layout each")
    ap.add_argument("--legacy", action="store_true", help="also measure the old layout (the prompt on every candidate, 8 items a shard)")
    ap.add_argument("--one-by-one", type=int, default=0, help="also time the one-statement-per-shard path on this many shards")
    ap.add_argument("--keep", help="folder for the shards (kept, and reused when it already holds them)")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="loopbreak-bench-ingest-"))
    src = Path(args.keep) if args.keep else tmp / "shards-src"
    layouts = [(k, False) for k in args.shard_items] + ([(8, True)] if args.legacy else [])
    walls = {}
    for k, legacy in layouts:
        cfg = GenConfig(items=args.items, pool=args.pool, items_per_shard=k)
        walls[k, legacy] = measure(cfg, src / (f"legacy-{k}" if legacy else f"once-{k}"), tmp, legacy, args.one_by_one)
    rows = args.items * 8
    print()
    for (k, legacy), wall in walls.items():
        print(f"INGEST of {rows:,} candidate rows, {'legacy' if legacy else 'prompts once'}, {k} items a shard: {wall:.1f} s "
              f"(target <= {TARGET_S:.0f} s; {wall / TARGET_S:.2f} × target)")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
