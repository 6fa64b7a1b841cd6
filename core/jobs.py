"""One job mechanism for every long step: sampling, judging, training, evaluation.

A job is a folder ``<workspace>/jobs/<run_id>/``::

    spec.json       what to do (kind + parameters); the same file runs headless: `loopbreak job run DIR`
    pid             the worker's process id (the leader of its own session / process group)
    heartbeat       touched every few seconds while the worker lives
    progress.json   done / total / rate / ETA / message, rewritten atomically
    log.txt         the worker's stdout and stderr
    shards/*.parquet  output rows, each shard written as .tmp then renamed (never half-visible); its name
                    ends with the CRC-32 of its bytes, checked before it is ingested
    corrupt/        shards the writer could not ingest (damaged on disk): set aside, their work redone on resume
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
import re
import signal
import subprocess
import sys
import threading
import time
import traceback
import uuid
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pyarrow as pa
import pyarrow.parquet as pq

from core import derived
from core.store import Workspace, WorkspaceError, now

HEARTBEAT_S = 2.0
FINAL = ("done", "failed", "cancelled")

# kind -> "module:function" taking a JobContext; imported lazily so a job loads only what it needs.
JOB_KINDS: dict[str, str] = {
    "sample": "core.sampling:run_sample_job",
    "judge": "core.judge:run_judge_job",
    "train": "core.train_jobs:run_train_job",
    "eval": "core.evaluate:run_eval_job",
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


def _write_text(path: Path, text: str) -> None:
    """Replace a small file at once: a reader never finds it empty or half-written (the pid file is read while workers start)."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
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
        for tmp in self.shards_dir.glob("*.tmp"):  # a shard half-written by a worker that was killed
            tmp.unlink(missing_ok=True)
        self._started = time.time()
        self._start_done: int | None = None
        self._seq: dict[str, int] = {}  # next shard number per table: one listing per job, not one per shard

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
        if table not in self._seq:
            self._seq[table] = len(list(self.shards_dir.glob(f"{table}-*.parquet")))
        seq = self._seq[table]
        self._seq[table] += 1
        sink = pa.BufferOutputStream()
        pq.write_table(data, sink)
        raw = sink.getvalue()
        # The name carries the CRC-32 of the bytes, so a shard damaged on disk is never ingested (see shard_problem).
        path = self.shards_dir / f"{table}-{seq:06d}-{uuid.uuid4().hex[:6]}-c{zlib.crc32(raw):08x}.parquet"
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "wb") as f:
            f.write(raw)
        os.replace(tmp, path)
        return path

    def read_shards(self, table: str, columns: list[str] | None = None) -> pa.Table | None:
        """Everything this job already produced (for resuming); unreadable shards are skipped."""
        parts = []
        for path in sorted(self.shards_dir.glob(f"{table}-*.parquet")):
            if shard_problem(path):
                continue  # its work is done again
            try:
                parts.append(pq.read_table(path, columns=columns))
            except (pa.ArrowException, OSError):
                continue
        return pa.concat_tables(parts, promote_options="default") if parts else None

    def log(self, message: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def shard_problem(path: Path) -> str | None:
    """Why a shard cannot be trusted — its bytes do not match the CRC-32 its name carries — or None.

    A truncated or bit-flipped Parquet file is often still readable (DuckDB read 94% of single-bit
    flips of a test shard without an error, a few with different values), so readability is no proof.
    """
    m = re.search(r"-c([0-9a-f]{8})\.parquet$", path.name)
    if not m:
        return None  # written before shards carried a checksum
    crc = 0
    try:
        with open(path, "rb") as f:
            while chunk := f.read(1 << 22):
                crc = zlib.crc32(chunk, crc)
    except OSError as e:
        return f"unreadable: {e.strerror or e}"
    if crc != int(m.group(1), 16):
        return f"damaged: its {path.stat().st_size:,} bytes do not match the checksum in its name"
    return None


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


def cpu_threads() -> int:
    """Threads for this worker's torch: the cores nobody else is using (at least 1), unless
    OMP_NUM_THREADS says otherwise. OpenMP threads that share a busy core spin at every barrier:
    on a loaded 2-core box, `generate` with 2 threads ran 6x slower than with 1."""
    if os.environ.get("OMP_NUM_THREADS", "").isdigit():
        return int(os.environ["OMP_NUM_THREADS"])
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(cores, round(cores - os.getloadavg()[0])))


def run_job(job_dir: str | Path) -> str:
    """Run a job in this process (the worker, or the CLI's `job run`). Returns the final status."""
    job_dir = Path(job_dir).resolve()
    (job_dir / "status.json").unlink(missing_ok=True)
    _write_text(job_dir / "pid", str(os.getpid()))
    ctx = JobContext(job_dir)
    if "torch" not in sys.modules:  # before torch starts its thread pool
        os.environ["OMP_NUM_THREADS"] = str(cpu_threads())
        os.environ["LOOPBREAK_THREADS_AUTO"] = "1"  # a job this worker starts decides afresh (spawn)
        ctx.log(f"{os.environ['OMP_NUM_THREADS']} CPU thread(s) for torch")

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
    elif (job_dir / "cancel-requested").exists():  # SIGTERM before the worker's handler was installed ends it silently
        status, error = "cancelled", "cancelled by the user"
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
    (job_dir / "cancel-requested").unlink(missing_ok=True)
    ingest(ws, run_id)  # a damaged shard is set aside before the worker looks, so the worker redoes its work
    ws.cursor().execute("DELETE FROM shards WHERE run_id = ? AND rows IS NULL", [run_id])
    proc = spawn(job_dir)
    ws.cursor().execute(
        "UPDATE runs SET status = 'running', error = NULL, finished_at = NULL WHERE run_id = ?", [run_id]
    )
    _children.append(proc)  # reaped by sync_runs so a finished worker is not left a zombie
    return proc.pid


_children: list[subprocess.Popen] = []


def spawn(job_dir: Path) -> subprocess.Popen:
    """Start the worker process for a job folder (no database: a worker may start the next job of a chain)."""
    (job_dir / "launching").touch()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if env.pop("LOOPBREAK_THREADS_AUTO", None):
        env.pop("OMP_NUM_THREADS", None)
    with (job_dir / "log.txt").open("ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "core", "job", "run", str(job_dir)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True, env=env,
        )
    _write_text(job_dir / "pid", str(proc.pid))
    (job_dir / "launching").unlink(missing_ok=True)
    return proc


def cancel_queued(jobs_dir: Path, run_id: str | None, reason: str = "cancelled by the user") -> None:
    """Mark a queued job cancelled, and the queued jobs chained after it (spec ``then``)."""
    while run_id and job_state(jobs_dir / run_id).status == "queued":
        job_dir = jobs_dir / run_id
        (job_dir / "launching").unlink(missing_ok=True)
        _write_json(job_dir / "status.json", {"status": "cancelled", "error": reason, "finished_at": time.time()})
        run_id = (read_json(job_dir / "spec.json") or {}).get("then")


def cancel(ws: Workspace, run_id: str) -> bool:
    """SIGTERM to the job's process group (a queued job is marked cancelled). False if it was not active."""
    state = job_state(ws.jobs_dir / run_id)
    if state.status == "queued":
        cancel_queued(ws.jobs_dir, run_id)
        return True
    if state.status != "running" or not state.pid:
        return False
    (ws.jobs_dir / run_id / "cancel-requested").touch()
    try:
        os.killpg(state.pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    return True


def ingest(ws: Workspace, run_id: str) -> int:
    """Move the job's new shards into the store, idempotently. Returns the rows added.

    A shard that cannot be read, or whose bytes do not match its checksum (truncated, corrupt), is
    not ingested at all: it is set aside in ``<job>/corrupt/``, the run gets an error naming it (and
    ends failed: a resume redoes its work), and the rest still goes in.
    """
    cur = ws.cursor()
    shards_dir = ws.jobs_dir / run_id / "shards"
    if not shards_dir.is_dir():
        return 0
    done = {r[0] for r in cur.execute("SELECT path FROM shards WHERE run_id = ?", [run_id]).fetchall()}
    added = _ingest_batches(ws, run_id, shards_dir, done)
    for path in sorted(shards_dir.glob("*.parquet")):  # what the batches left: one by one
        if path.name in done:
            continue
        table = path.name.split("-", 1)[0]
        if table not in SHARD_TABLES:
            continue
        problem = shard_problem(path)
        if problem is None:
            before = cur.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            try:
                cur.execute("BEGIN")
                cur.execute(f"INSERT OR IGNORE INTO {table} BY NAME SELECT * FROM read_parquet(?)", [str(path)])
                rows = cur.execute(f"SELECT count(*) FROM {table}").fetchone()[0] - before
                cur.execute("INSERT INTO shards VALUES (?, ?, ?, ?)", [path.name, run_id, rows, now()])
                cur.execute("COMMIT")
                added += rows
                if table == "judgments":
                    derived.after_judgments(cur, [str(path)], before, rows)
                continue
            except Exception as e:  # duckdb raises IOException/InvalidInputException for bad files
                cur.execute("ROLLBACK")
                problem = f"{type(e).__name__}: {str(e)[:300]}"
        _set_aside(ws, run_id, path, problem)
    if added:
        derived.after_candidates(cur, run_id)  # `chars` of candidates that came in one by one
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
    cur = ws.cursor()
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
                added += _ingest_group(cur, run_id, table, batch, done)
                batch, size = [], 0
            if path is not None and shard_problem(path) is None:
                batch.append(str(path))
                size += path.stat().st_size
    return added


def _ingest_group(cur, run_id: str, table: str, batch: list[str], done: set[str]) -> int:
    """One batch in one transaction, or its halves, recursively; returns the rows added."""
    if len(batch) < 2:
        return 0
    rows = _insert_batch(cur, run_id, table, batch)
    if rows is None:
        half = len(batch) // 2
        return _ingest_group(cur, run_id, table, batch[:half], done) + _ingest_group(cur, run_id, table, batch[half:], done)
    done.update(Path(p).name for p in batch)
    return rows


def _insert_batch(cur, run_id: str, table: str, batch: list[str]) -> int | None:
    """INSERT … SELECT over the files and their `shards` rows, one transaction; None if it failed (rolled back)."""
    extra = _derived_sql(table, batch[0])  # candidates get their derived `chars` on the way in (core/derived.py)
    # Shards of one schema are read as they are; a mix (a job resumed by a newer Loopbreak) is matched
    # by column name. union_by_name always would cost ~20% (it maps every file's columns).
    ubn = "" if _one_schema(batch) else ", union_by_name = true"
    # A plain INSERT first: new shards hold new rows, and skipping OR IGNORE's per-row check is
    # ~25% of the time; a duplicate (a shard re-written after a crash) rolls back to OR IGNORE.
    for verb in ("INSERT", "INSERT OR IGNORE"):
        try:
            cur.execute("BEGIN")
            before = cur.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0]
            cur.execute(f"{verb} INTO {table} BY NAME SELECT *{extra} FROM read_parquet(?{ubn})", [batch])
            rows = cur.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0] - before
            cur.execute("INSERT INTO shards SELECT parse_filename(filename), ?, count(*), ? "
                        f"FROM read_parquet(?, filename = true{ubn}) GROUP BY filename", [run_id, now(), batch])
            cur.execute("COMMIT")
        except Exception as e:  # a bad file, a conflict: the caller splits the batch
            cur.execute("ROLLBACK")
            if type(e).__name__ == "ConstraintException" and verb == "INSERT":
                continue
            return None
        if table == "judgments":
            derived.after_judgments(cur, batch, before, rows)
        return rows
    return None


def _one_schema(batch: list[str], probes: int = 32) -> bool:
    """Whether the shards share one schema, judged on the first, the last and evenly spaced ones between.

    A job's schema changes only where a newer Loopbreak resumed it, and stays changed, so the ends
    and a sample tell. (Without union_by_name DuckDB takes the first file's columns: a later file
    missing one is an error, a later file with an extra one would lose it silently.)
    """
    picks = sorted({0, len(batch) - 1, *range(0, len(batch), max(1, len(batch) // probes))})
    try:
        schemas = {pq.read_schema(batch[i]).remove_metadata() for i in picks}
    except Exception:  # unreadable: the batch fails either way and is split
        return False
    return len(schemas) == 1


def _derived_sql(table: str, first_shard: str) -> str:
    """Extra SELECT columns a batch computes on the way in (candidates' `chars`), unless the shards carry them."""
    if table != "candidates":
        return ""
    try:
        names = pq.read_schema(first_shard).names
    except Exception:  # unreadable: the batch fails and the one-by-one path reports it
        return ""
    return "" if "chars" in names else ", length(text) AS chars"


def _set_aside(ws: Workspace, run_id: str, path: Path, problem: str) -> None:
    """Move a shard that cannot be ingested to <job>/corrupt/, mark it in `shards` (rows NULL), and say so on the run."""
    corrupt = path.parent.parent / "corrupt"
    try:
        corrupt.mkdir(exist_ok=True)
        os.replace(path, corrupt / path.name)
    except OSError:
        pass  # left in place; the mark below keeps it from being tried again
    cur = ws.cursor()
    cur.execute("INSERT OR REPLACE INTO shards VALUES (?, ?, NULL, ?)", [path.name, run_id, now()])
    names = _set_aside_shards(cur, run_id) if not path.name.startswith("train_metrics-") else [path.name]
    what = f"shard {path.name} was" if len(names) == 1 else f"{len(names)} shards were"
    listed = "" if len(names) == 1 else f": {', '.join(names)}; the last"
    cur.execute(
        "UPDATE runs SET error = ? WHERE run_id = ?",
        [f"{what} not ingested{listed} ({problem}); nothing of {'it' if len(names) == 1 else 'them'} is in the store. "
         f"Moved to {corrupt}; resume the run to redo the work", run_id],
    )


def _set_aside_shards(cur, run_id: str) -> list[str]:
    """Shards of the run's output set aside since its last launch (metrics shards aside: they are not the product)."""
    return [r[0] for r in cur.execute(
        "SELECT path FROM shards WHERE run_id = ? AND rows IS NULL AND NOT starts_with(path, 'train_metrics-') ORDER BY path",
        [run_id],
    ).fetchall()]


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
        if state.status == "running":  # started by another worker (an evaluation chain)
            cur.execute("UPDATE runs SET status = 'running' WHERE run_id = ? AND status = 'queued'", [run_id])
        if state.status in FINAL or state.status == "died":
            status = "failed" if state.status == "died" else state.status
            if status == "done" and _set_aside_shards(cur, run_id):
                status = "failed"  # finished, but part of its output was damaged: the error names it
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
