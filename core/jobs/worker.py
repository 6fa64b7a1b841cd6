"""The worker side of a job: its context (spec, progress, shards), its process entry point, its threads."""

from __future__ import annotations

import importlib
import json
import os
import re
import signal
import sys
import threading
import time
import traceback
import uuid
import zlib
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from core.store import WorkspaceError

HEARTBEAT_S = 2.0


# kind -> the step module that runs it: its ``run_job(ctx)`` does the work in the worker, and its
# optional ``on_done(ws, run_id)`` is what the writer does once such a job ends done (idempotent).
# Imported on first use, so a worker loads only its own step.
JOB_KINDS: dict[str, str] = {
    "sample": "core.steps.sample",
    "judge": "core.steps.judge",
    "train": "core.steps.train_job",
    "eval": "core.steps.evaluate",
}


# Shard name prefix -> the table its rows go into.
SHARD_TABLES = ("candidates", "judgments", "train_metrics")


class JobCancelled(Exception):
    """Raised inside the worker when SIGTERM arrives."""


def _write_json(path: Path, obj: Any) -> None:
    """Replace a JSON file at once; the temporary name is this process's (two writers never share one)."""
    _write_text(path, json.dumps(obj, ensure_ascii=False, default=str))


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


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """``k/K`` (k counted from 0: ``0/2`` and ``1/2``), or ``$SLURM_ARRAY_TASK_ID``-style ``k`` with K; None for none."""
    if not text:
        return None
    try:
        k, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise WorkspaceError(f"--shard is k/K, e.g. 0/2 and 1/2 (got {text!r})") from None
    if not (n >= 1 and 0 <= k < n):
        raise WorkspaceError(f"--shard {text}: k counts from 0 to K-1")
    return k, n


def worker_dir(job_dir: Path, shard: tuple[int, int]) -> Path:
    """Where one of K workers of a job keeps its pid, heartbeat, progress and status (shards stay shared)."""
    return Path(job_dir) / "workers" / f"{shard[0]}-of-{shard[1]}"


class JobContext:
    """What a job's function gets: its spec, progress reporting, shard writing, and resume state.

    ``shard=(k, K)``: this worker is one of K on the job (a scheduler's array job, one per GPU); it does
    the k-th share of the work (:meth:`mine`), writes its own state under ``workers/k-of-K/`` and its rows
    into the job's shared ``shards/``."""

    def __init__(self, job_dir: Path, shard: tuple[int, int] | None = None):
        self.dir = Path(job_dir)
        self.shard = shard
        self.state_dir = worker_dir(self.dir, shard) if shard else self.dir
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.spec: dict = json.loads((self.dir / "spec.json").read_text())
        self.shards_dir = self.dir / "shards"
        self.shards_dir.mkdir(exist_ok=True)
        for tmp in self.shards_dir.glob(f"*.{shard[0] if shard else 'x'}.tmp"):  # half-written by this worker, killed
            tmp.unlink(missing_ok=True)
        self._started = time.time()
        self._start_done: int | None = None
        self._seq: dict[str, int] = {}  # next shard number per table: one listing per job, not one per shard

    @property
    def run_id(self) -> str:
        return self.spec["run_id"]

    def mine(self, unit: int) -> bool:
        """Whether unit number ``unit`` (a shard of items, in the job's fixed order) is this worker's."""
        return self.shard is None or unit % self.shard[1] == self.shard[0]

    def progress(self, done: int, total: int, message: str = "", unit: str = "items") -> None:
        """Rate and ETA count only the work done in this process (a resumed job starts mid-way)."""
        if self._start_done is None:
            self._start_done = done
        elapsed = max(time.time() - self._started, 1e-9)
        rate = (done - self._start_done) / elapsed
        eta = (total - done) / rate if rate > 0 else None
        _write_json(
            self.state_dir / "progress.json",
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
        tmp = path.with_name(f"{path.name}.{self.shard[0] if self.shard else 'x'}.tmp")  # another worker's is not ours to remove
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


def step_module(kind: str):
    """The step module of a job kind (see JOB_KINDS)."""
    if kind not in JOB_KINDS:
        raise WorkspaceError(f"unknown job kind {kind!r}")
    return importlib.import_module(JOB_KINDS[kind])


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def running_workers(job_dir: Path) -> list[str]:
    """The other workers of this workspace running now, by their job folders' live pids. The job that
    chained this one (its spec's ``then`` names us) is left out: it is ending, it started us on its way out."""
    from core.jobs.control import job_state

    job_dir = Path(job_dir)
    others = []
    for d in job_dir.parent.iterdir():
        if d == job_dir or not (d / "pid").exists() or (d / "status.json").exists():
            continue
        if job_state(d).status == "running" and (read_json(d / "spec.json") or {}).get("then") != job_dir.name:
            others.append(d.name)
    return others


def cpu_threads(job_dir: Path | None = None) -> tuple[int, str]:
    """Threads for this worker's torch, and why. OMP_NUM_THREADS set by the user wins; a job that already
    ran keeps the count in its spec (the float order of greedy decoding follows the thread count, so a
    resumed or rerun job reproduces its numbers only with the same count); else the cores divided among
    this worker and the other workers of the workspace running now. Not the load average: it still
    counts a chain's previous link a minute after it ended (every eval link of a chain got 1 thread on an
    idle 2-core box), and it moves with whatever else the machine does, so the same seeds gave other tables.
    OpenMP threads that share a busy core spin at every barrier: on a loaded 2-core box, `generate` with
    2 threads ran 6x slower than with 1, hence the division."""
    user = os.environ.get("OMP_NUM_THREADS", "")
    if user.isdigit() and int(user) > 0 and not os.environ.get("LOOPBREAK_THREADS_AUTO"):
        return int(user), "OMP_NUM_THREADS"
    spec = read_json(Path(job_dir) / "spec.json") if job_dir else None
    if spec and isinstance(spec.get("threads"), int) and spec["threads"] > 0:
        return spec["threads"], "recorded in the job's spec (kept on resume)"
    cores = _cores()
    others = running_workers(Path(job_dir)) if job_dir else []
    threads = max(1, cores // (1 + len(others)))
    by_load = max(1, min(cores, round(cores - os.getloadavg()[0])))
    return threads, (f"{cores} cores, {len(others)} other running worker(s)"
                     + (f" ({', '.join(others[:3])})" if others else "") + f"; the load average would have given {by_load}")


def world() -> tuple[int, int]:
    """(rank, world size) of this process: (0, 1) alone; under torchrun or accelerate launch, from their env."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def run_job(job_dir: str | Path, shard: tuple[int, int] | None = None) -> str:
    """Run a job in this process (the worker, or the CLI's `job run`), or its k-th of K shares. Returns the final status."""
    job_dir = Path(job_dir).resolve()
    if shard and step_module((read_json(job_dir / "spec.json") or {}).get("kind", "")).__dict__.get("SHARDABLE") is not True:
        raise WorkspaceError(f"{job_dir.name}: this kind of job does not split into --shard workers "
                             "(training splits under torchrun or accelerate launch)")
    ctx = JobContext(job_dir, shard)
    rank, size = world()
    if size > 1 and rank > 0:  # torchrun / accelerate: rank 0 is the job; the others keep their state aside
        ctx.state_dir = job_dir / "ranks" / str(rank)
        ctx.state_dir.mkdir(parents=True, exist_ok=True)
    state = ctx.state_dir
    (state / "status.json").unlink(missing_ok=True)
    _write_text(state / "pid", str(os.getpid()))
    if state == job_dir:
        (job_dir / "launching").unlink(missing_ok=True)  # started: from now on a dead pid is a death
    if "torch" not in sys.modules:  # before torch starts its thread pool
        threads, why = cpu_threads(job_dir)
        user = why == "OMP_NUM_THREADS"
        os.environ["OMP_NUM_THREADS"] = str(threads)
        if not user:
            os.environ["LOOPBREAK_THREADS_AUTO"] = "1"  # a job this worker starts decides afresh (spawn)
        if ctx.spec.get("threads") != threads and rank == 0 and shard is None:
            # what a resume or a rerun of this spec uses; K --shard workers (often on machines of their own,
            # sized by their scheduler) would overwrite one another's, so theirs is only logged
            ctx.spec["threads"] = threads
            _write_json(job_dir / "spec.json", ctx.spec)
        ctx.log(f"{threads} CPU thread(s) for torch: {why}")

    def on_term(signum, frame):
        raise JobCancelled()

    previous = signal.signal(signal.SIGTERM, on_term)
    stop = threading.Event()
    threading.Thread(target=_heartbeat, args=(state, stop), daemon=True).start()
    status, error = "done", None
    try:
        ctx.log(f"job {ctx.run_id} ({ctx.spec['kind']}) started, pid {os.getpid()}"
                + (f", worker {shard[0]} of {shard[1]} (0-based)" if shard else "")
                + (f", rank {rank} of world size {size}" if size > 1 else ""))
        step_module(ctx.spec["kind"]).run_job(ctx)
    except JobCancelled:
        status, error = "cancelled", "cancelled by the user"
    except BaseException as e:  # the reason is the product: record it, whatever it was
        status, error = "failed", f"{type(e).__name__}: {e}".strip()
        traceback.print_exc()
    finally:
        stop.set()
        signal.signal(signal.SIGTERM, previous)
        _write_json(state / "status.json", {"status": status, "error": error, "finished_at": time.time()})
        ctx.log(f"job {ctx.run_id} {status}" + (f": {error}" if error else ""))
        if size > 1:
            _leave_process_group()
    return status


def _leave_process_group() -> None:
    """A rank that exits with gloo's process group still up aborts at teardown ("terminate called without an
    active exception", exit -6), failing a run that finished: leave it cleanly."""
    import sys

    dist = sys.modules.get("torch.distributed")
    if dist is not None and dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
