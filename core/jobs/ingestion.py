"""Ingestion: the writer moves a job's Parquet shards into the store, idempotently."""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow.parquet as pq

from core.jobs.worker import SHARD_TABLES, shard_problem
from core.store import Workspace, derived, runs


def ingest(ws: Workspace, run_id: str) -> int:
    """Move the job's new shards into the store, idempotently. Returns the rows added.

    A shard that cannot be read, or whose bytes do not match its checksum (truncated, corrupt), is
    not ingested at all: it is set aside in ``<job>/corrupt/``, the run gets an error naming it (and
    ends failed: a resume redoes its work), and the rest still goes in.
    """
    shards_dir = ws.jobs_dir / run_id / "shards"
    if not shards_dir.is_dir():
        return 0
    done = runs.ingested_shards(ws, run_id)
    added = _ingest_batches(ws, run_id, shards_dir, done)
    for path in sorted(shards_dir.glob("*.parquet")):  # what the batches left: one by one
        if path.name in done:
            continue
        table = path.name.split("-", 1)[0]
        if table not in SHARD_TABLES:
            continue
        problem = shard_problem(path)
        if problem is None:
            try:
                before, rows = runs.ingest_shard(ws, run_id, table, str(path), path.name)
            except Exception as e:  # duckdb raises IOException/InvalidInputException for bad files
                problem = f"{type(e).__name__}: {str(e)[:300]}"
            else:
                added += rows
                if table == "judgments":
                    derived.after_judgments(ws, [str(path)], before, rows)
                continue
        _set_aside(ws, run_id, path, problem)
    if added:
        derived.after_candidates(ws, run_id)  # `chars` of candidates that came in one by one
    return added


INGEST_BATCH_BYTES = 2 << 30  # Parquet bytes per statement when shards pile up (1M candidates ≈ 0.5 GB)


def _ingest_batches(ws: Workspace, run_id: str, shards_dir: Path, done: set[str]) -> int:
    """The healthy new shards of each table in one statement and one transaction; adds their names to `done`.

    A sampling worker writes a shard per 8 items, and one statement per shard spends its time on
    per-statement overhead (1M candidates = 15,625 shards: ~7 min that way, bench/bench_ingest.py).
    Batches of a few thousand shards were no answer either: each leaves a partly filled row group that
    every later commit rewrites (1.3× the bare INSERT). So everything waiting goes in at once, up to
    INGEST_BATCH_BYTES. A batch that fails is split in halves and retried (a bad shard costs a few
    retries, not the rest of the batch); a lone shard that fails is left to the one-by-one path, which
    reports it and sets it aside. A batched shard's `rows` is the rows it holds.
    """
    by_table: dict[str, list[Path]] = {}
    for path in sorted(shards_dir.glob("*.parquet")):
        table = path.name.split("-", 1)[0]
        if path.name not in done and table in SHARD_TABLES:
            by_table.setdefault(table, []).append(path)
    added = 0
    for table, paths in by_table.items():
        if len(paths) < 2:
            continue  # a lone new shard (a running job, polled): the one-by-one path
        batch, size = [], 0
        for path in paths + [None]:
            if path is None or size >= INGEST_BATCH_BYTES:
                added += _ingest_group(ws, run_id, table, batch, done)
                batch, size = [], 0
            if path is not None and shard_problem(path) is None:
                batch.append(str(path))
                size += path.stat().st_size
    return added


def _ingest_group(ws: Workspace, run_id: str, table: str, batch: list[str], done: set[str]) -> int:
    """One batch in one transaction, or its halves, recursively; returns the rows added."""
    if len(batch) < 2:
        return 0
    rows = _insert_batch(ws, run_id, table, batch)
    if rows is None:
        half = len(batch) // 2
        return _ingest_group(ws, run_id, table, batch[:half], done) + _ingest_group(ws, run_id, table, batch[half:], done)
    done.update(Path(p).name for p in batch)
    return rows


def _insert_batch(ws: Workspace, run_id: str, table: str, batch: list[str]) -> int | None:
    """INSERT … SELECT over the files and their `shards` rows, one transaction; None if it failed (rolled back)."""
    # Shards of one schema are read as they are; a mix (a job resumed by a newer Loopbreak) is matched
    # by column name. union_by_name always would cost ~20% (it maps every file's columns).
    schemas = _schemas(batch)
    if not schemas:
        return None  # unreadable: the batch is split
    columns = set().union(*(s.names for s in schemas))
    # A plain INSERT first: new shards hold new rows, and skipping OR IGNORE's per-row check is
    # ~25% of the time; a duplicate (a shard re-written after a crash) rolls back to OR IGNORE.
    for ignore in (False, True):
        try:
            before, rows = runs.ingest_batch(ws, run_id, table, batch, columns=columns, by_name=len(schemas) > 1,
                                             ignore_duplicates=ignore)
        except Exception as e:  # a bad file, a conflict: the caller splits the batch
            if type(e).__name__ == "ConstraintException" and not ignore:
                continue
            return None
        if table == "judgments":
            derived.after_judgments(ws, batch, before, rows)
        return rows
    return None


def _schemas(batch: list[str], probes: int = 32) -> set:
    """The shards' distinct schemas, judged on the first, the last and evenly spaced ones between; empty
    if one cannot be read.

    A job's schema changes only where a newer Loopbreak resumed it, and stays changed, so the ends
    and a sample tell. (Without union_by_name DuckDB takes the first file's columns: a later file
    missing one is an error, a later file with an extra one would lose it silently.)
    """
    picks = sorted({0, len(batch) - 1, *range(0, len(batch), max(1, len(batch) // probes))})
    try:
        return {pq.read_schema(batch[i]).remove_metadata() for i in picks}
    except Exception:  # unreadable: the batch fails either way and is split
        return set()


def _set_aside(ws: Workspace, run_id: str, path: Path, problem: str) -> None:
    """Move a shard that cannot be ingested to <job>/corrupt/, mark it in `shards` (rows NULL), and say so on the run."""
    corrupt = path.parent.parent / "corrupt"
    try:
        corrupt.mkdir(exist_ok=True)
        os.replace(path, corrupt / path.name)
    except OSError:
        pass  # left in place; the mark below keeps it from being tried again
    names = sorted({*runs.set_aside_shards(ws, run_id), path.name}) if not path.name.startswith("train_metrics-") else [path.name]
    what = f"shard {path.name} was" if len(names) == 1 else f"{len(names)} shards were"
    listed = "" if len(names) == 1 else f": {', '.join(names)}; the last"
    runs.mark_set_aside(ws, run_id, path.name,
                        f"{what} not ingested{listed} ({problem}); nothing of {'it' if len(names) == 1 else 'them'} is in the store. "
                        f"Moved to {corrupt}; resume the run to redo the work")
