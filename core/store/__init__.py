"""The workspace and its DuckDB store.

A workspace is a folder: ``loopbreak.duckdb`` (the store), ``jobs/`` (one folder per background
job), ``models/``, ``exports/`` and ``images/``. DuckDB lets exactly one process hold a database
file read-write, and no other process may even read it meanwhile (DESIGN.md). So the app, or the
CLI when the app is not running, is the single writer; background jobs never open the database,
they write Parquet shards that the writer ingests. A second process that finds the file locked
gets :class:`WorkspaceLocked`, whose message names the holder, never a raw traceback.

The package's rooms: ``schema`` (versioned migrations; :func:`open_workspace` migrates an older
workspace forward in one transaction), and one module of queries per group of tables (``items``,
``models``, ``runs``, ``candidates``, ``judgments``, ``pairs``, ``review``). Every write goes through
:func:`write`, the one door: it holds the workspace's write lock and the transaction.
"""

from __future__ import annotations

import os
import re
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator
from pathlib import Path

import duckdb

from core.store.base import WorkspaceError, WorkspaceLocked, now  # noqa: F401  (the store's public face)
from core.store.schema import migrate

DB_NAME = "loopbreak.duckdb"
DEFAULT_WORKSPACE = "workspace"


# The tables whose row counts Home shows, in the order of the flow.
TABLES = ("items", "candidates", "judgments", "pairs", "decisions", "models", "runs")


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


_write_locks: dict[Path, threading.RLock] = {}
_open = threading.local()  # db path -> the cursor of this thread's open write transaction


@contextmanager
def write(ws: "Workspace") -> Iterator[duckdb.DuckDBPyConnection]:
    """The one door for writes: this workspace's write lock, and one transaction on one cursor.

    Every write to the store goes through here (ingestion, mining, decisions, runs, models,
    migrations), so a check-then-write (a decision's version check, a queue's claim) sees every
    earlier write of this process. DuckDB's own write-write conflict detection cannot be relied on:
    with DuckDB 2.0 an ``UPDATE … RETURNING`` on a table with a primary key, run while another
    transaction has updated the same row, silently discarded that transaction's committed update
    (tests/test_concurrency.py caught it). A write inside another joins its transaction; an
    exception rolls the whole of it back.
    """
    with _roots_lock:
        lock = _write_locks.setdefault(ws.db_path, threading.RLock())
    with lock:
        open_ = getattr(_open, "cursors", None)
        if open_ is None:
            open_ = _open.cursors = {}
        if ws.db_path in open_:
            yield open_[ws.db_path]
            return
        cur = ws.cursor()
        cur.execute("BEGIN")
        open_[ws.db_path] = cur
        try:
            yield cur
        except BaseException:
            del open_[ws.db_path]
            cur.execute("ROLLBACK")
            raise
        del open_[ws.db_path]
        cur.execute("COMMIT")


def workspace_of(db) -> "Workspace":
    """The workspace of a Workspace or of a cursor on its database (callers that hold only a cursor)."""
    if isinstance(db, Workspace):
        return db
    path = db.execute("SELECT path FROM duckdb_databases() WHERE database_name = current_database()").fetchall()[0][0]
    return Workspace(Path(path).parent)


def open_workspace(path: str | os.PathLike | None = None, create: bool = True) -> Workspace:
    """Open (and create or migrate) a workspace; raises WorkspaceLocked if another process holds it."""
    root = resolve_workspace(path)
    if not create and not (root / DB_NAME).exists():
        raise WorkspaceError(f"No workspace at {root} (no {DB_NAME}). Create one with `loopbreak demo --workspace {root}`.")
    for sub in ("", "jobs", "models", "exports", "images"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    ws = Workspace(root)
    migrate(ws)
    return ws


# (database file, judgments, candidates) -> candidates with a judgment: a DISTINCT over every judgment
# costs 0.5 s at 800k, and judgments are only ever inserted, so the same counts mean the same answer.
_judged: dict[tuple, int] = {}


def sizes(cur: duckdb.DuckDBPyConnection, *tables: str) -> tuple[int, ...]:
    """Row counts of the given tables, in one statement (cache keys: these tables are only ever inserted into)."""
    return tuple(cur.execute("SELECT " + ", ".join(f"(SELECT count(*) FROM {t})" for t in tables)).fetchall()[0])


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
        # Only what sampling runs drew waits for a judge: evaluation outputs are scored, not judged.
        _judged[key] = cur.execute(
            """SELECT count(DISTINCT candidate_id), (SELECT count(*) FROM candidates c JOIN runs r ON r.run_id = c.run_id
                      WHERE r.kind = 'sample'),
                      (SELECT count(*) FROM candidates c JOIN runs r ON r.run_id = c.run_id
                      WHERE r.kind = 'sample' AND c.candidate_id IN (SELECT candidate_id FROM judgments)) FROM judgments""").fetchall()[0]
    out["judged_candidates"], out["sampled_candidates"], out["judged_sampled"] = _judged[key]
    return out


def next_step(c: dict[str, int]) -> tuple[str, str]:
    """What the user should do next, read off the counts of the flow (title, how)."""
    if not c["items"]:
        return "Import documents", "On the Data page, upload a JSONL/CSV/Parquet file, or run `loopbreak demo` for the demo set."
    if not c["models"]:
        return "Register a model", "Run `loopbreak demo` to build and register the demo model families."
    if not c["candidates"]:
        return "Sample candidates", "On the Sample page, sample N candidates per item from an SFT model, greedy decode included: loops often appear only there."
    if c.get("judged_sampled", c["judged_candidates"]) < c.get("sampled_candidates", c["candidates"]):
        left = c.get("sampled_candidates", c["candidates"]) - c.get("judged_sampled", c["judged_candidates"])
        return "Judge candidates", f"On the Judge page: {left} sampled candidates have no judgment yet."
    if not c["pairs"]:
        return "Mine pairs", "On the Judge page, mine chosen/rejected pairs: a degenerate candidate as rejected, a judge-validated clean one as chosen."
    if c["pairs_pending"]:
        return "Review pairs", f"{c['pairs_pending']} pairs wait for review."
    return "Train and evaluate", "Train a DPO stage on the approved pairs, then evaluate vanilla, SFT and SFT+DPO."
