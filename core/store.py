"""The workspace and its DuckDB store.

A workspace is a folder: ``loopbreak.duckdb`` (the store), ``jobs/`` (one folder per background
job), ``models/``, ``exports/`` and ``images/``. DuckDB lets exactly one process hold a database
file read-write, and no other process may even read it meanwhile (DESIGN.md). So the app, or the
CLI when the app is not running, is the single writer; background jobs never open the database,
they write Parquet shards that the writer ingests. A second process that finds the file locked
gets :class:`WorkspaceLocked`, whose message names the holder, never a raw traceback.

This module owns the schema. It carries a version; :func:`open_workspace` migrates an older
workspace forward by running the missing steps of :data:`MIGRATIONS` in one transaction.
"""

from __future__ import annotations

import json
import os
import re
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import duckdb

DB_NAME = "loopbreak.duckdb"
DEFAULT_WORKSPACE = "workspace"
STAGES = ("vanilla", "sft", "dpo")

# Each step moves the schema from version i to i + 1. Never edit a released step: add one.
MIGRATIONS: list[list[str]] = [
    # 1: documents, models and runs
    [
        """CREATE TABLE meta (key VARCHAR PRIMARY KEY, value VARCHAR)""",
        """CREATE TABLE items (
            dataset VARCHAR NOT NULL, item_id VARCHAR NOT NULL, split VARCHAR NOT NULL,
            text VARCHAR NOT NULL, reference VARCHAR, image_path VARCHAR, metadata JSON,
            source VARCHAR, imported_at TIMESTAMP NOT NULL,
            PRIMARY KEY (dataset, item_id))""",
        """CREATE TABLE models (
            name VARCHAR PRIMARY KEY, path VARCHAR NOT NULL, family VARCHAR,
            stage VARCHAR, parent VARCHAR, config JSON, created_at TIMESTAMP NOT NULL)""",
        """CREATE TABLE runs (
            run_id VARCHAR PRIMARY KEY, kind VARCHAR NOT NULL, model VARCHAR, dataset VARCHAR,
            split VARCHAR, config JSON, status VARCHAR NOT NULL, error VARCHAR,
            job_dir VARCHAR, created_at TIMESTAMP NOT NULL, finished_at TIMESTAMP)""",
    ],
    # 2: what sampling, judging, mining, review and training produce
    [
        """CREATE TABLE candidates (
            candidate_id VARCHAR PRIMARY KEY, run_id VARCHAR NOT NULL, dataset VARCHAR NOT NULL,
            item_id VARCHAR NOT NULL, sample_index INTEGER NOT NULL, prompt VARCHAR,
            text VARCHAR NOT NULL, n_tokens INTEGER, finish_reason VARCHAR, backend VARCHAR,
            decoding JSON, seed BIGINT, latency_s DOUBLE, degenerate BOOLEAN, has_loop BOOLEAN,
            loops JSON, metrics JSON, created_at TIMESTAMP)""",
        """CREATE TABLE judgments (
            judgment_id VARCHAR PRIMARY KEY, run_id VARCHAR NOT NULL,
            candidate_id VARCHAR NOT NULL, judge VARCHAR NOT NULL, scores JSON,
            overall DOUBLE, rationale VARCHAR, error VARCHAR, created_at TIMESTAMP)""",
        """CREATE TABLE pairs (
            pair_id VARCHAR PRIMARY KEY, run_id VARCHAR NOT NULL, dataset VARCHAR NOT NULL,
            item_id VARCHAR NOT NULL, prompt VARCHAR, chosen_candidate_id VARCHAR,
            rejected_candidate_id VARCHAR, chosen_text VARCHAR, rejected_text VARCHAR,
            status VARCHAR NOT NULL DEFAULT 'pending', provenance JSON,
            version INTEGER NOT NULL DEFAULT 0, updated_by VARCHAR, updated_at TIMESTAMP)""",
        """CREATE TABLE decisions (
            decision_id VARCHAR PRIMARY KEY, pair_id VARCHAR NOT NULL, reviewer VARCHAR,
            action VARCHAR NOT NULL, before JSON, after JSON, created_at TIMESTAMP NOT NULL)""",
        """CREATE TABLE audit_log (
            audit_id VARCHAR PRIMARY KEY, pair_id VARCHAR, reviewer VARCHAR, kind VARCHAR NOT NULL,
            before JSON, after JSON, created_at TIMESTAMP NOT NULL)""",
        """CREATE TABLE train_metrics (
            run_id VARCHAR NOT NULL, step INTEGER NOT NULL, name VARCHAR NOT NULL, value DOUBLE,
            PRIMARY KEY (run_id, step, name))""",
    ],
    # 3: which job shards the writer has ingested (jobs never open the database)
    [
        """CREATE TABLE shards (
            path VARCHAR NOT NULL, run_id VARCHAR NOT NULL, rows BIGINT, ingested_at TIMESTAMP,
            PRIMARY KEY (run_id, path))""",
    ],
    # 4: review — a short lease so concurrent reviewers get different pairs, second reviews, undo
    [
        "ALTER TABLE pairs ADD COLUMN claimed_by VARCHAR",
        "ALTER TABLE pairs ADD COLUMN claimed_at TIMESTAMP",
        "ALTER TABLE pairs ADD COLUMN second_review BOOLEAN DEFAULT false",
        "ALTER TABLE decisions ADD COLUMN round INTEGER DEFAULT 1",
        "ALTER TABLE decisions ADD COLUMN undoes VARCHAR",
        "ALTER TABLE audit_log ADD COLUMN decision_id VARCHAR",
    ],
    # 5: evaluation — each candidate's quality against its item's reference, computed by the worker
    [
        "ALTER TABLE candidates ADD COLUMN quality DOUBLE",
    ],
    # 6: scale — derived columns so the candidate browser never scans texts or aggregates judgments (core/derived.py)
    [
        "ALTER TABLE candidates ADD COLUMN chars INTEGER",
        "ALTER TABLE candidates ADD COLUMN overall DOUBLE",
        "UPDATE candidates SET chars = length(text)",
        """UPDATE candidates c SET overall = j.overall FROM (
             SELECT candidate_id, last(overall ORDER BY created_at) AS overall FROM judgments GROUP BY candidate_id) j
           WHERE c.candidate_id = j.candidate_id""",
        "INSERT OR REPLACE INTO meta VALUES ('overall_at_judgments', (SELECT count(*) FROM judgments)::VARCHAR)",
        # a candidate's judgments by id: the review pane and the candidate browser look them up on every pair / row
        "CREATE INDEX judgments_candidate ON judgments (candidate_id)",
    ],
]
SCHEMA_VERSION = len(MIGRATIONS)

# The tables whose row counts Home shows, in the order of the flow.
TABLES = ("items", "candidates", "judgments", "pairs", "decisions", "models", "runs")


class WorkspaceError(Exception):
    """A workspace problem a user can act on; the CLI prints it without a traceback."""


class WorkspaceLocked(WorkspaceError):
    """Another process holds the database read-write (DuckDB's single-writer rule)."""


def now() -> datetime:
    """UTC, naive: DuckDB's TIMESTAMP (TIMESTAMPTZ would need pytz just to read it back)."""
    return datetime.now(timezone.utc).replace(tzinfo=None)


def resolve_workspace(path: str | os.PathLike | None = None) -> Path:
    """`--workspace`, else `LOOPBREAK_WORKSPACE`, else `./workspace`."""
    return Path(path or os.environ.get("LOOPBREAK_WORKSPACE") or DEFAULT_WORKSPACE).expanduser().resolve()


def _holder(message: str) -> str:
    """Name the process that holds the lock, from DuckDB's message ("... in /usr/bin/python (PID 42)")."""
    m = re.search(r"Conflicting lock is held in (.+?) \(PID (\d+)\)", message)
    if not m:
        return "another process"
    exe, pid = m.group(1), m.group(2)
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        cmd = exe
    return f"process {pid} ({' '.join(cmd.split())[:160] or exe})"


# One read-write connection per database file per process; each caller works on its own cursor.
_roots: dict[Path, duckdb.DuckDBPyConnection] = {}
_roots_lock = threading.Lock()


@dataclass(frozen=True)
class Workspace:
    root: Path

    @property
    def db_path(self) -> Path:
        return self.root / DB_NAME

    @property
    def jobs_dir(self) -> Path:
        return self.root / "jobs"

    @property
    def models_dir(self) -> Path:
        return self.root / "models"

    @property
    def exports_dir(self) -> Path:
        return self.root / "exports"

    @property
    def images_dir(self) -> Path:
        return self.root / "images"

    def cursor(self) -> duckdb.DuckDBPyConnection:
        """A fresh cursor on this process's writer connection: one per script run or thread."""
        return _root_connection(self.db_path).cursor()

    def close(self) -> None:
        """Release the file so another process may open it (tests, CLI hand-over)."""
        with _roots_lock:
            con = _roots.pop(self.db_path, None)
        if con is not None:
            con.close()


def _root_connection(db_path: Path) -> duckdb.DuckDBPyConnection:
    with _roots_lock:
        con = _roots.get(db_path)
        if con is None:
            try:
                con = duckdb.connect(str(db_path))
            except duckdb.IOException as e:
                if "lock" in str(e).lower():
                    raise WorkspaceLocked(
                        f"The workspace {db_path.parent} is open in {_holder(str(e))}. DuckDB allows one "
                        "writer: stop that process (or use the app it belongs to) and try again."
                    ) from None
                raise WorkspaceError(f"Cannot open {db_path}: {e}") from None
            _roots[db_path] = con
        return con


def open_workspace(path: str | os.PathLike | None = None, create: bool = True) -> Workspace:
    """Open (and create or migrate) a workspace; raises WorkspaceLocked if another process holds it."""
    root = resolve_workspace(path)
    if not create and not (root / DB_NAME).exists():
        raise WorkspaceError(f"No workspace at {root} (no {DB_NAME}). Create one with `loopbreak demo --workspace {root}`.")
    for sub in ("", "jobs", "models", "exports", "images"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    ws = Workspace(root)
    migrate(ws.cursor())
    return ws


def schema_version(cur: duckdb.DuckDBPyConnection) -> int:
    has_meta = cur.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = 'meta'"
    ).fetchone()[0]
    if not has_meta:
        return 0
    row = cur.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    return int(row[0]) if row else 0


def migrate(cur: duckdb.DuckDBPyConnection, target: int = SCHEMA_VERSION) -> int:
    """Bring the schema to `target`, all steps in one transaction. Returns the version reached."""
    current = schema_version(cur)
    if current > SCHEMA_VERSION:
        raise WorkspaceError(
            f"This workspace has schema version {current}, newer than this Loopbreak ({SCHEMA_VERSION}). Upgrade Loopbreak."
        )
    if current >= target:
        return current
    cur.execute("BEGIN")
    try:
        for step in MIGRATIONS[current:target]:
            for sql in step:
                cur.execute(sql)
        cur.execute(
            "INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", [str(target)]
        )
        cur.execute("COMMIT")
    except Exception:
        cur.execute("ROLLBACK")
        raise
    return target


# (database file, judgments, candidates) -> candidates with a judgment: a DISTINCT over every judgment
# costs 0.5 s at 800k, and judgments are only ever inserted, so the same counts mean the same answer.
_judged: dict[tuple, int] = {}


def counts(cur: duckdb.DuckDBPyConnection) -> dict[str, int]:
    """Row counts of every flow table, plus the pair review states (Home and the sidebar, every rerun)."""
    out = dict(zip(TABLES, cur.execute("SELECT " + ", ".join(f"(SELECT count(*) FROM {t})" for t in TABLES)).fetchall()[0]))
    out["pairs_pending"], out["pairs_approved"], out["pairs_rejected"] = cur.execute(
        "SELECT count(*) FILTER (status = 'pending'), count(*) FILTER (status = 'approved'), count(*) FILTER (status = 'rejected') FROM pairs"
    ).fetchall()[0]
    path = cur.execute("SELECT path FROM duckdb_databases() WHERE database_name = current_database()").fetchall()[0][0]
    key = (path, out["judgments"], out["candidates"])
    if key not in _judged:
        if len(_judged) > 64:
            _judged.clear()
        _judged[key] = cur.execute("SELECT count(DISTINCT candidate_id) FROM judgments").fetchall()[0][0]
    out["judged_candidates"] = _judged[key]
    return out


def next_step(c: dict[str, int]) -> tuple[str, str]:
    """What the user should do next, read off the counts of the flow (title, how)."""
    if not c["items"]:
        return "Import documents", "On the Data page, upload a JSONL/CSV/Parquet file, or run `loopbreak demo` for the demo set."
    if not c["models"]:
        return "Register a model", "Run `loopbreak demo` to build and register the demo model families."
    if not c["candidates"]:
        return "Sample candidates", "On the Sample page, sample N candidates per item from an SFT model, greedy decode included: loops often appear only there."
    if c["judged_candidates"] < c["candidates"]:
        return "Judge candidates", f"On the Judge page: {c['candidates'] - c['judged_candidates']} candidates have no judgment yet."
    if not c["pairs"]:
        return "Mine pairs", "On the Judge page, mine chosen/rejected pairs: a degenerate candidate as rejected, a judge-validated clean one as chosen."
    if c["pairs_pending"]:
        return "Review pairs", f"{c['pairs_pending']} pairs wait for review."
    return "Train and evaluate", "Train a DPO stage on the approved pairs, then evaluate vanilla, SFT and SFT+DPO."


def register_model(
    cur: duckdb.DuckDBPyConnection,
    *,
    name: str,
    path: str,
    family: str | None = None,
    stage: str | None = None,
    parent: str | None = None,
    config: dict | None = None,
) -> str:
    """Add or update a model in the registry (idempotent by name). Returns the name."""
    if stage is not None and stage not in STAGES and not re.fullmatch(r"(dpo|sft)\d+", stage):
        raise WorkspaceError(f"Unknown stage {stage!r}: use one of {', '.join(STAGES)} "
                             "(or dpo2, dpo3… for later DPO rounds, sft2… for SFT trained further).")
    cur.execute(
        """INSERT INTO models VALUES (?, ?, ?, ?, ?, ?, ?)
           ON CONFLICT (name) DO UPDATE SET path = excluded.path, family = excluded.family,
             stage = excluded.stage, parent = excluded.parent, config = excluded.config""",
        [name, str(path), family, stage, parent, json.dumps(config or {}), now()],
    )
    return name


def resolve_model(cur: duckdb.DuckDBPyConnection, model: str, need_local: bool = True) -> dict:
    """A registered name, else a local path, else (when allowed) a hub id: name, path, family, stage."""
    if not model or not model.strip():
        raise WorkspaceError("choose a model: a registered name, a local path, or a hub id")
    row = cur.execute("SELECT name, path, family, stage FROM models WHERE name = ?", [model]).fetchone()
    if row:
        info = dict(zip(("name", "path", "family", "stage"), row))
        if need_local and not Path(info["path"]).exists() and Path(info["path"]).is_absolute():
            raise WorkspaceError(f"model {model!r} is registered at {info['path']}, which does not exist")
        return info
    path = Path(model).expanduser()
    if path.exists():
        if need_local and not (path / "config.json").exists():
            raise WorkspaceError(f"{path} is not a model folder (no config.json)")
        return {"name": model, "path": str(path.resolve()), "family": None, "stage": None}
    if model.startswith(("/", ".", "~")):
        raise WorkspaceError(f"model path {model!r} does not exist")
    return {"name": model, "path": model, "family": None, "stage": None}  # a hub id


def list_models(cur: duckdb.DuckDBPyConnection) -> list[dict]:
    rows = cur.execute(
        "SELECT name, path, family, stage, parent, created_at FROM models ORDER BY family, created_at, name"
    ).fetchall()
    keys = ("name", "path", "family", "stage", "parent", "created_at")
    return [dict(zip(keys, r)) for r in rows]


def list_datasets(cur: duckdb.DuckDBPyConnection) -> list[dict]:
    """Datasets with their item count per split."""
    rows = cur.execute(
        "SELECT dataset, split, count(*) FROM items GROUP BY dataset, split ORDER BY dataset, split"
    ).fetchall()
    return [{"dataset": d, "split": s, "items": n} for d, s, n in rows]


def search_items(
    cur: duckdb.DuckDBPyConnection,
    *,
    dataset: str | None = None,
    split: str | None = None,
    query: str = "",
    limit: int = 200,
    offset: int = 0,
):
    """Items matching the filters (a case-insensitive substring of id, text or reference), as a DataFrame."""
    where, params = ["1=1"], []
    if dataset:
        where.append("dataset = ?")
        params.append(dataset)
    if split:
        where.append("split = ?")
        params.append(split)
    if query:
        where.append("(item_id ILIKE ? OR text ILIKE ? OR reference ILIKE ?)")
        like = f"%{query}%"
        params += [like, like, like]
    sql = f"""SELECT dataset, split, item_id, length(text) AS chars, image_path IS NOT NULL AS has_image,
                     left(replace(text, chr(10), ' '), 120) AS preview
              FROM items WHERE {' AND '.join(where)}
              ORDER BY dataset, split, item_id LIMIT ? OFFSET ?"""
    total = cur.execute(f"SELECT count(*) FROM items WHERE {' AND '.join(where)}", params).fetchone()[0]
    return cur.execute(sql, params + [limit, offset]).df(), total


def get_item(cur: duckdb.DuckDBPyConnection, dataset: str, item_id: str) -> dict | None:
    row = cur.execute(
        "SELECT dataset, item_id, split, text, reference, image_path, metadata, source, imported_at "
        "FROM items WHERE dataset = ? AND item_id = ?",
        [dataset, item_id],
    ).fetchone()
    if row is None:
        return None
    keys = ("dataset", "item_id", "split", "text", "reference", "image_path", "metadata", "source", "imported_at")
    item = dict(zip(keys, row))
    item["metadata"] = json.loads(item["metadata"]) if item["metadata"] else {}
    return item
