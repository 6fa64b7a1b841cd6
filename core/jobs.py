"""One job mechanism for every long step: sampling, judging, training, evaluation.

A job is a folder ``<workspace>/jobs/<run_id>/``::

    spec.json       what to do (kind + parameters); the same file runs headless: `loopbreak job run DIR`
    pid             the worker's process id (the leader of its own session / process group)
    heartbeat       touched every few seconds while the worker lives
    progress.json   done / total / rate / ETA / message, rewritten atomically
    log.txt         the worker's stdout and stderr
    shards/*.parquet  output rows, each shard written as .tmp then renamed (never half-visible)
    status.json     the final word: done | failed | cancelled, with the error

The worker never opens the database (DuckDB's single writer, DESIGN.md). The writer — the app, or the
CLI command that launched the job — ingests shards with INSERT OR IGNORE on primary keys, so
ingesting twice changes nothing, and records which shards it took. A job resumes by being launched
again on the same folder: its kind's function skips the work its shards already hold. Cancel is
SIGTERM to the process group. A worker that died (kill -9, OOM, reboot) leaves no status.json and
no live pid: :func:`sync_runs` marks its run failed with that reason, ready to resume.
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import traceback
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pyarrow as pa
import pyarrow.parquet as pq

from core.store import Workspace, WorkspaceError, now

HEARTBEAT_S = 2.0
FINAL = ("done", "failed", "cancelled")

# kind -> "module:function" taking a JobContext; imported lazily so a job loads only what it needs.
JOB_KINDS: dict[str, str] = {
    "sample": "core.sampling:run_sample_job",
    "judge": "core.judge:run_judge_job",
    "train": "core.train_jobs:run_train_job",
}

# kind -> "module:function(ws, run_id)" the writer calls once a job of that kind ends done (idempotent).
ON_DONE: dict[str, str] = {
    "train": "core.train_jobs:finish_training",
}

# Shard name prefix -> the table its rows go into.
SHARD_TABLES = ("candidates", "judgments", "train_metrics")


class JobCancelled(Exception):
    """Raised inside the worker when SIGTERM arrives."""


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, ensure_ascii=False, default=str))
    os.replace(tmp, path)


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def new_run_id(kind: str) -> str:
    return f"{kind}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"


# ---------------------------------------------------------------- worker side


class JobContext:
    """What a job's function gets: its spec, progress reporting, shard writing, and resume state."""

    def __init__(self, job_dir: Path):
        self.dir = Path(job_dir)
        self.spec: dict = json.loads((self.dir / "spec.json").read_text())
        self.shards_dir = self.dir / "shards"
        self.shards_dir.mkdir(exist_ok=True)
        self._started = time.time()
        self._start_done: int | None = None

    @property
    def run_id(self) -> str:
        return self.spec["run_id"]

    def progress(self, done: int, total: int, message: str = "", unit: str = "items") -> None:
        """Rate and ETA count only the work done in this process (a resumed job starts mid-way)."""
        if self._start_done is None:
            self._start_done = done
        elapsed = max(time.time() - self._started, 1e-9)
        rate = (done - self._start_done) / elapsed
        eta = (total - done) / rate if rate > 0 else None
        _write_json(
            self.dir / "progress.json",
            {"done": done, "total": total, "unit": unit, "rate": rate, "eta_s": eta,
             "message": message, "updated_at": time.time()},
        )

    def write_shard(self, table: str, rows: list[dict] | pa.Table) -> Path | None:
        """Write rows for `table` atomically; the shard's name orders shards and names their table."""
        if table not in SHARD_TABLES:
            raise ValueError(f"unknown shard table {table!r}")
        data = rows if isinstance(rows, pa.Table) else pa.Table.from_pylist(rows)
        if data.num_rows == 0:
            return None
        seq = len(list(self.shards_dir.glob(f"{table}-*.parquet")))
        path = self.shards_dir / f"{table}-{seq:06d}-{uuid.uuid4().hex[:6]}.parquet"
        tmp = path.with_name(path.name + ".tmp")
        pq.write_table(data, tmp)
        os.replace(tmp, path)
        return path

    def read_shards(self, table: str, columns: list[str] | None = None) -> pa.Table | None:
        """Everything this job already produced (for resuming); unreadable shards are skipped."""
        parts = []
        for path in sorted(self.shards_dir.glob(f"{table}-*.parquet")):
            try:
                parts.append(pq.read_table(path, columns=columns))
            except (pa.ArrowException, OSError):
                continue
        return pa.concat_tables(parts, promote_options="default") if parts else None

    def log(self, message: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def _heartbeat(job_dir: Path, stop: threading.Event) -> None:
    beat = job_dir / "heartbeat"
    while not stop.is_set():
        beat.write_text(str(time.time()))
        stop.wait(HEARTBEAT_S)


def _load(ref: str) -> Callable:
    """A "module:function" reference, imported on first use."""
    module, func = ref.split(":")
    return getattr(importlib.import_module(module), func)


def _resolve(kind: str) -> Callable[[JobContext], None]:
    if kind not in JOB_KINDS:
        raise WorkspaceError(f"unknown job kind {kind!r}")
    return _load(JOB_KINDS[kind])


def run_job(job_dir: str | Path) -> str:
    """Run a job in this process (the worker, or the CLI's `job run`). Returns the final status."""
    job_dir = Path(job_dir).resolve()
    (job_dir / "status.json").unlink(missing_ok=True)
    (job_dir / "pid").write_text(str(os.getpid()))
    ctx = JobContext(job_dir)

    def on_term(signum, frame):
        raise JobCancelled()

    previous = signal.signal(signal.SIGTERM, on_term)
    stop = threading.Event()
    threading.Thread(target=_heartbeat, args=(job_dir, stop), daemon=True).start()
    status, error = "done", None
    try:
        ctx.log(f"job {ctx.run_id} ({ctx.spec['kind']}) started, pid {os.getpid()}")
        _resolve(ctx.spec["kind"])(ctx)
    except JobCancelled:
        status, error = "cancelled", "cancelled by the user"
    except BaseException as e:  # the reason is the product: record it, whatever it was
        status, error = "failed", f"{type(e).__name__}: {e}".strip()
        traceback.print_exc()
    finally:
        stop.set()
        signal.signal(signal.SIGTERM, previous)
        _write_json(job_dir / "status.json", {"status": status, "error": error, "finished_at": time.time()})
        ctx.log(f"job {ctx.run_id} {status}" + (f": {error}" if error else ""))
    return status


# ---------------------------------------------------------------- writer side


@dataclass
class JobState:
    run_id: str
    dir: Path
    status: str  # queued | running | done | failed | cancelled | died
    error: str | None
    progress: dict
    pid: int | None


def _pid_alive(pid: int | None, job_dir: Path) -> bool:
    """Alive and really our worker (pids get reused): its command line names the job folder."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ProcessLookupError):
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] == "Z":  # a zombie has finished
            return False
    except OSError:
        pass
    return job_dir.name.encode() in cmdline


def job_state(job_dir: Path) -> JobState:
    job_dir = Path(job_dir)
    spec = read_json(job_dir / "spec.json") or {}
    progress = read_json(job_dir / "progress.json") or {}
    final = read_json(job_dir / "status.json")
    pid_text = (job_dir / "pid").read_text().strip() if (job_dir / "pid").exists() else ""
    pid = int(pid_text) if pid_text.isdigit() else None
    if final:
        status, error = final["status"], final.get("error")
    elif _pid_alive(pid, job_dir):
        status, error = "running", None
    elif pid is None and (job_dir / "launching").exists():
        status, error = "queued", None
    else:
        status, error = "died", "the job's process ended without a final status (killed or crashed); resume to continue"
    return JobState(spec.get("run_id", job_dir.name), job_dir, status, error, progress, pid)


def create_job(ws: Workspace, kind: str, params: dict, *, model: str | None = None,
               dataset: str | None = None, split: str | None = None, run_id: str | None = None) -> str:
    """Write the spec and the run row (status queued). Returns the run id."""
    _resolve(kind)
    run_id = run_id or new_run_id(kind)
    job_dir = ws.jobs_dir / run_id
    job_dir.mkdir(parents=True)
    _write_json(job_dir / "spec.json", {"run_id": run_id, "kind": kind, "workspace": str(ws.root), **params})
    ws.cursor().execute(
        "INSERT INTO runs (run_id, kind, model, dataset, split, config, status, job_dir, created_at) "
        "VALUES (?, ?, ?, ?, ?, ?, 'queued', ?, ?)",
        [run_id, kind, model, dataset, split, json.dumps(params, default=str), str(job_dir), now()],
    )
    return run_id


def launch(ws: Workspace, run_id: str) -> int:
    """Start (or resume) the job's worker in its own session, so it outlives the app and the browser."""
    job_dir = ws.jobs_dir / run_id
    state = job_state(job_dir)
    if state.status == "running":
        raise WorkspaceError(f"run {run_id} is already running (pid {state.pid})")
    (job_dir / "status.json").unlink(missing_ok=True)
    (job_dir / "launching").touch()
    log = (job_dir / "log.txt").open("ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "core", "job", "run", str(job_dir)],
        stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    log.close()
    (job_dir / "pid").write_text(str(proc.pid))
    (job_dir / "launching").unlink(missing_ok=True)
    ws.cursor().execute(
        "UPDATE runs SET status = 'running', error = NULL, finished_at = NULL WHERE run_id = ?", [run_id]
    )
    _children.append(proc)  # reaped by sync_runs so a finished worker is not left a zombie
    return proc.pid


_children: list[subprocess.Popen] = []


def cancel(ws: Workspace, run_id: str) -> bool:
    """SIGTERM to the job's process group. Returns False if it was not running."""
    state = job_state(ws.jobs_dir / run_id)
    if state.status != "running" or not state.pid:
        return False
    try:
        os.killpg(state.pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    return True


def ingest(ws: Workspace, run_id: str) -> int:
    """Move the job's new shards into the store, idempotently. Returns the rows added.

    A shard that cannot be read (truncated, corrupt) is not ingested at all: the run gets an
    error naming it, and the rest still goes in.
    """
    cur = ws.cursor()
    shards_dir = ws.jobs_dir / run_id / "shards"
    if not shards_dir.is_dir():
        return 0
    done = {r[0] for r in cur.execute("SELECT path FROM shards WHERE run_id = ?", [run_id]).fetchall()}
    added = 0
    for path in sorted(shards_dir.glob("*.parquet")):
        if path.name in done:
            continue
        table = path.name.split("-", 1)[0]
        if table not in SHARD_TABLES:
            continue
        before = cur.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
        try:
            cur.execute("BEGIN")
            cur.execute(f"INSERT OR IGNORE INTO {table} BY NAME SELECT * FROM read_parquet(?)", [str(path)])
            rows = cur.execute(f"SELECT count(*) FROM {table}").fetchone()[0] - before
            cur.execute("INSERT INTO shards VALUES (?, ?, ?, ?)", [path.name, run_id, rows, now()])
            cur.execute("COMMIT")
            added += rows
        except Exception as e:  # duckdb raises IOException/InvalidInputException for bad files
            cur.execute("ROLLBACK")
            cur.execute(
                "UPDATE runs SET error = ? WHERE run_id = ?",
                [f"shard {path.name} was not ingested: {type(e).__name__}: {str(e)[:300]}", run_id],
            )
    return added


def sync_runs(ws: Workspace, run_ids: list[str] | None = None) -> list[JobState]:
    """Ingest new shards and bring run rows in line with their jobs. The app calls this as it polls."""
    for proc in list(_children):
        if proc.poll() is not None:
            _children.remove(proc)
    cur = ws.cursor()
    if run_ids is None:
        run_ids = [r[0] for r in cur.execute(
            "SELECT run_id FROM runs WHERE status IN ('queued', 'running') AND job_dir IS NOT NULL"
        ).fetchall()]
    states = []
    for run_id in run_ids:
        state = job_state(ws.jobs_dir / run_id)
        ingest(ws, run_id)
        if state.status in FINAL or state.status == "died":
            status = "failed" if state.status == "died" else state.status
            cur.execute(
                "UPDATE runs SET status = ?, error = coalesce(?, error), finished_at = ? WHERE run_id = ?",
                [status, state.error, now(), run_id],
            )
            if status == "done":
                _on_done(ws, run_id)
        states.append(state)
    return states


def _on_done(ws: Workspace, run_id: str) -> None:
    """The kind's ON_DONE hook (e.g. registering a trained model); its failure becomes the run's error."""
    row = ws.cursor().execute("SELECT kind FROM runs WHERE run_id = ?", [run_id]).fetchone()
    if not row or row[0] not in ON_DONE:
        return
    try:
        _load(ON_DONE[row[0]])(ws, run_id)
    except Exception as e:
        ws.cursor().execute("UPDATE runs SET error = ? WHERE run_id = ?", [f"after the job: {type(e).__name__}: {e}", run_id])


def wait(ws: Workspace, run_id: str, on_progress: Callable[[dict], None] | None = None, poll_s: float = 0.5) -> JobState:
    """Block until the job ends, ingesting as it goes (the CLI's way of running a job)."""
    while True:
        (state,) = sync_runs(ws, [run_id])
        if on_progress and state.progress:
            on_progress(state.progress)
        if state.status not in ("running", "queued"):
            return state
        time.sleep(poll_s)


def list_runs(ws: Workspace, kind: str | None = None, limit: int = 50) -> list[dict]:
    """Recent runs with their live progress (read from the job folders)."""
    sql = "SELECT run_id, kind, model, dataset, split, status, error, created_at, finished_at FROM runs"
    params: list = []
    if kind:
        sql += " WHERE kind = ?"
        params.append(kind)
    rows = ws.cursor().execute(sql + " ORDER BY created_at DESC LIMIT ?", params + [limit]).fetchall()
    keys = ("run_id", "kind", "model", "dataset", "split", "status", "error", "created_at", "finished_at")
    out = []
    for r in rows:
        run = dict(zip(keys, r))
        run["progress"] = read_json(ws.jobs_dir / run["run_id"] / "progress.json") or {}
        out.append(run)
    return out


def read_log(ws: Workspace, run_id: str, tail_chars: int = 4000) -> str:
    path = ws.jobs_dir / run_id / "log.txt"
    if not path.exists():
        return ""
    with path.open("rb") as f:
        f.seek(max(0, path.stat().st_size - tail_chars))
        return f.read().decode(errors="replace")
