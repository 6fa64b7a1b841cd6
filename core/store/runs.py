"""Queries of `runs` (one row per job: what it was, where its folder is, how it ended) and of `shards`
(which of a job's Parquet files the writer has ingested, so ingesting twice changes nothing).

A run's links are columns, not JSON: ``source_run`` (the sampling run a judging run scored),
``instruction`` (the instruction a sampling or eval run built its prompts with, so an export gives
training the prompt the model was sampled with), ``backend`` and ``model_path``.
"""

from __future__ import annotations

import json

from core.store import write
from core.store.base import now

RUN_COLUMNS = ("run_id", "kind", "model", "dataset", "split", "status", "error", "created_at", "finished_at",
               "source_run", "instruction", "backend", "model_path")


def create_run(ws, run_id: str, kind: str, *, config: dict, job_dir: str, model: str | None = None,
               dataset: str | None = None, split: str | None = None, source_run: str | None = None,
               instruction: str | None = None, backend: str | None = None, model_path: str | None = None) -> None:
    with write(ws) as cur:
        cur.execute(
            "INSERT INTO runs (run_id, kind, model, dataset, split, config, status, job_dir, created_at, "
            "source_run, instruction, backend, model_path) VALUES (?, ?, ?, ?, ?, ?, 'queued', ?, ?, ?, ?, ?, ?)",
            [run_id, kind, model, dataset, split, json.dumps(config, default=str), job_dir, now(),
             source_run, instruction, backend, model_path],
        )


def get_run(ws, run_id: str) -> dict | None:
    """The run's row (its config parsed), or None."""
    cur = ws.cursor()
    rows = cur.execute(f"SELECT {', '.join(RUN_COLUMNS)}, config FROM runs WHERE run_id = ?", [run_id]).fetchall()
    if not rows:
        return None
    run = dict(zip((*RUN_COLUMNS, "config"), rows[0]))
    run["config"] = json.loads(run["config"]) if run["config"] else {}
    return run


def run_kind(ws, run_id: str) -> str | None:
    rows = ws.cursor().execute("SELECT kind FROM runs WHERE run_id = ?", [run_id]).fetchall()
    return rows[0][0] if rows else None


def mark_launched(ws, run_id: str) -> None:
    """A (re)launched run: running again, its old error and set-aside shards forgotten (their work is redone)."""
    with write(ws) as cur:
        cur.execute("DELETE FROM shards WHERE run_id = ? AND rows IS NULL", [run_id])
        cur.execute("UPDATE runs SET status = 'running', error = NULL, finished_at = NULL WHERE run_id = ?", [run_id])


def active_run_ids(ws) -> list[str]:
    """Runs the writer still has to follow (queued or running, with a job folder)."""
    return [r[0] for r in ws.cursor().execute(
        "SELECT run_id FROM runs WHERE status IN ('queued', 'running') AND job_dir IS NOT NULL").fetchall()]


def mark_running(ws, run_id: str) -> None:
    """A queued run whose worker was started by another worker (an evaluation chain)."""
    with write(ws) as cur:
        cur.execute("UPDATE runs SET status = 'running' WHERE run_id = ? AND status = 'queued'", [run_id])


def finish_run(ws, run_id: str, status: str, error: str | None) -> None:
    """The final status; an error already on the run (a set-aside shard) is kept when the job gives none."""
    with write(ws) as cur:
        cur.execute("UPDATE runs SET status = ?, error = coalesce(?, error), finished_at = ? WHERE run_id = ?",
                    [status, error, now(), run_id])


def set_error(ws, run_id: str, error: str) -> None:
    with write(ws) as cur:
        cur.execute("UPDATE runs SET error = ? WHERE run_id = ?", [error, run_id])


def list_runs(ws, kind: str | None = None, limit: int = 50) -> list[dict]:
    """Recent runs, newest first (the columns the runs panels show)."""
    keys = RUN_COLUMNS[:9]
    sql, params = f"SELECT {', '.join(keys)} FROM runs", []
    if kind:
        sql += " WHERE kind = ?"
        params.append(kind)
    rows = ws.cursor().execute(sql + " ORDER BY created_at DESC LIMIT ?", params + [limit]).fetchall()
    return [dict(zip(keys, r)) for r in rows]


def judge_runs_of(ws, sample_run: str) -> list[str]:
    """Judging runs over a sampling run, newest first."""
    return [r[0] for r in ws.cursor().execute(
        "SELECT run_id FROM runs WHERE kind = 'judge' AND source_run = ? ORDER BY created_at DESC", [sample_run]).fetchall()]


def pairs_run(ws, run: str | None) -> str | None:
    """Pairs belong to the sampling run; a judging run's id (what `loopbreak pairs` takes) names its source."""
    if run is None:
        return None
    rows = ws.cursor().execute("SELECT source_run FROM runs WHERE run_id = ? AND kind = 'judge'", [run]).fetchall()
    return rows[0][0] if rows and rows[0][0] else run


def sampled_model(ws, run_id: str) -> dict | None:
    """The model behind a sampling run: its name, the registered path (if registered), the path the job
    loaded, its backend and instruction (what the attractor view needs to score a candidate again)."""
    rows = ws.cursor().execute(
        "SELECT r.model, m.path, r.model_path, r.backend, r.instruction FROM runs r LEFT JOIN models m ON m.name = r.model "
        "WHERE r.run_id = ?", [run_id]).fetchall()
    return dict(zip(("name", "registered_path", "model_path", "backend", "instruction"), rows[0])) if rows else None


def runs_with_candidates(ws) -> list[str]:
    """Runs that have candidates, without a DISTINCT over every candidate."""
    return [r[0] for r in ws.cursor().execute(
        "SELECT run_id FROM runs r WHERE EXISTS (SELECT 1 FROM candidates c WHERE c.run_id = r.run_id) ORDER BY 1").fetchall()]


# ---------------------------------------------------------------- shards (ingestion's bookkeeping)


def ingested_shards(ws, run_id: str) -> set[str]:
    """Names of the run's shards already taken (or set aside)."""
    return {r[0] for r in ws.cursor().execute("SELECT path FROM shards WHERE run_id = ?", [run_id]).fetchall()}


def ingest_shard(ws, run_id: str, table: str, path: str, name: str) -> tuple[int, int]:
    """One shard into its table (INSERT OR IGNORE on the primary key) and its `shards` row, in one transaction.
    Returns (rows before, rows added); raises on a bad file (rolled back)."""
    import pyarrow.parquet as pq

    select, key = shard_select(table, set(pq.read_schema(path).names))
    with write(ws) as cur:
        before = cur.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0]
        if key:
            cur.execute(NEW_PROMPTS.format(key=key, src="read_parquet(?)"), [path])
        cur.execute(f"INSERT OR IGNORE INTO {table} BY NAME SELECT {select} FROM read_parquet(?)", [path])
        rows = cur.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0] - before
        cur.execute("INSERT INTO shards VALUES (?, ?, ?, ?)", [name, run_id, rows, now()])
    return before, rows


def ingest_batch(ws, run_id: str, table: str, batch: list[str], *, columns: set[str], by_name: bool = False,
                 ignore_duplicates: bool = False) -> tuple[int, int]:
    """Shards of one table in one statement and one transaction, with their `shards` rows (each the rows it
    holds). `columns`: the shards' column names (see shard_select); `by_name` matches the files' columns by
    name (shards written by different Loopbreak versions). Returns (rows before, rows added); raises on any
    failure (rolled back).

    Opening a small Parquet file costs DuckDB ~0.25 ms whatever it reads of it, so besides the rows'
    own pass the shards are read once more, not twice: each file's row count and the prompts' texts
    in one side pass (1M candidates in 15,625 shards: 3 s saved)."""
    ubn = ", union_by_name = true" if by_name else ""
    verb = "INSERT OR IGNORE" if ignore_duplicates else "INSERT"
    select, key = shard_select(table, columns)
    side, side_params = f"read_parquet(?, filename = true{ubn})", [batch]  # what the shards' counts are read from
    with write(ws) as cur:
        before = cur.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0]
        if key:
            cur.execute(f"CREATE TEMP TABLE ingest_side AS SELECT filename, {key} AS prompt_id, prompt FROM {side}", side_params)
            cur.execute(NEW_PROMPTS.format(key="prompt_id", src="ingest_side"))
            side, side_params = "ingest_side", []
        # Rows in any order (this cursor only): DuckDB then inserts on every thread, not one — 1M candidates
        # from 15,625 shards went in in 0.65x the time. Queries never rely on the order rows were stored in.
        cur.execute("SET SESSION preserve_insertion_order = false")
        cur.execute(f"{verb} INTO {table} BY NAME SELECT {select} FROM read_parquet(?{ubn})", [batch])
        cur.execute("RESET SESSION preserve_insertion_order")
        rows = cur.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0] - before
        cur.execute(f"INSERT INTO shards SELECT parse_filename(filename), ?, count(*), ? FROM {side} GROUP BY filename",
                    [run_id, now(), *side_params])
        if key:
            cur.execute("DROP TABLE ingest_side")
    return before, rows


# The distinct prompts of `src` that `prompts` does not hold yet (`key`: the SQL of their id).
NEW_PROMPTS = ("INSERT INTO prompts SELECT id, any_value(prompt) FROM (SELECT {key} AS id, prompt FROM {src} "
               "WHERE prompt IS NOT NULL) GROUP BY id HAVING id NOT IN (SELECT prompt_id FROM prompts)")


def shard_select(table: str, columns: set[str]) -> tuple[str, str | None]:
    """(the SELECT list that turns a shard's columns into the table's, the SQL of the prompt's id or None),
    for shards holding ``columns``.

    A candidates shard carries each candidate's ``prompt_id`` and the prompt's text once per item
    (``prompt``, NULL on the item's other candidates): the text goes to `prompts`, once per distinct prompt
    (NEW_PROMPTS), and not into `candidates`. A shard written before schema 9 has the prompt on every row
    and no id: the id is its SHA-256, as prompt_id() computes it. Candidates get their derived `chars` on
    the way in, unless the shards carry them (core/store/derived.py).
    """
    if table != "candidates":
        return "*", None
    has_text, has_id = "prompt" in columns, "prompt_id" in columns
    key = "coalesce(prompt_id, sha256(prompt))" if has_text and has_id else "sha256(prompt)" if has_text else None
    select = "*"
    if key:
        select = f"* EXCLUDE (prompt{', prompt_id' if has_id else ''}), {key} AS prompt_id"
    if "chars" not in columns:
        select += ", length(text) AS chars"
    return select, key


def mark_set_aside(ws, run_id: str, name: str, error: str) -> None:
    """A shard that could not be ingested: recorded with no rows (not tried again until a relaunch), and the
    run's error saying so."""
    with write(ws) as cur:
        cur.execute("INSERT OR REPLACE INTO shards VALUES (?, ?, NULL, ?)", [name, run_id, now()])
        cur.execute("UPDATE runs SET error = ? WHERE run_id = ?", [error, run_id])


def set_aside_shards(ws, run_id: str) -> list[str]:
    """Shards of the run's output set aside since its last launch (metrics shards aside: they are not the product)."""
    return [r[0] for r in ws.cursor().execute(
        "SELECT path FROM shards WHERE run_id = ? AND rows IS NULL AND NOT starts_with(path, 'train_metrics-') ORDER BY path",
        [run_id]).fetchall()]
