"""Process control from the writer's side: create, launch, cancel, follow and reconcile jobs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from core.jobs.ingestion import ingest
from core.jobs.worker import step_module, _write_json, _write_text, new_run_id, read_json
from core.store import Workspace, WorkspaceError, runs

FINAL = ("done", "failed", "cancelled")


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


def _one_state(job_dir: Path, state_dir: Path) -> tuple[str, str | None, int | None]:
    """(status, error, pid) of one worker, from the files it keeps in ``state_dir``."""
    final = read_json(state_dir / "status.json")
    pid_text = (state_dir / "pid").read_text().strip() if (state_dir / "pid").exists() else ""
    pid = int(pid_text) if pid_text.isdigit() else None
    if not final and _pid_alive(pid, job_dir):
        return "running", None, pid
    final = final or read_json(state_dir / "status.json")
    if final:
        return final["status"], final.get("error"), pid
    return "died", "its process ended without a final status (killed or crashed)", pid


def _workers_state(job_dir: Path, workers: list[Path]) -> JobState:
    """A job run by K workers (``job run DIR --shard k/K``): running while any runs; done once all K are
    done; failed or cancelled when one is and none runs; else queued, waiting for the missing or killed
    ones to be (re)started. Progress is the sum of theirs."""
    spec = read_json(job_dir / "spec.json") or {}
    k_total = max(int(w.name.split("-of-")[1]) for w in workers)
    states = {w.name: _one_state(job_dir, w) for w in workers if int(w.name.split("-of-")[1]) == k_total}
    parts = [read_json(job_dir / "workers" / name / "progress.json") or {} for name in states]
    done, total = sum(p.get("done", 0) for p in parts), sum(p.get("total", 0) for p in parts)
    rate = sum(p.get("rate") or 0 for p in parts)
    waiting = [f"{n.replace('-of-', '/')}" for n in (f"{k}-of-{k_total}" for k in range(k_total))
               if n not in states or states[n][0] == "died"]
    message = f"{len(states)} of {k_total} workers started" + (f"; waiting for {', '.join(waiting)} (run `loopbreak job run "
                                                               f"{job_dir} --shard k/K` for each)" if waiting else "")
    progress = {"done": done, "total": total, "unit": "items", "rate": rate,
                "eta_s": (total - done) / rate if rate > 0 else None, "message": message}
    pids = [pid for st, _, pid in states.values() if st == "running"]
    ended = [(n, st, err) for n, (st, err, _) in sorted(states.items()) if st in ("failed", "cancelled")]
    if pids:
        status, error = "running", None
    elif ended:
        n, status, err = ended[0]
        error = f"worker {n.replace('-of-', '/')}: {err}"
    elif not waiting and all(st == "done" for st, _, _ in states.values()):
        status, error = "done", None
    else:
        status, error = "queued", None
    return JobState(spec.get("run_id", job_dir.name), job_dir, status, error, progress, pids[0] if pids else None)


def job_state(job_dir: Path) -> JobState:
    job_dir = Path(job_dir)
    workers = [w for w in (job_dir / "workers").glob("*-of-*") if w.is_dir()] if (job_dir / "workers").is_dir() else []
    if workers and not (job_dir / "status.json").exists():
        return _workers_state(job_dir, workers)
    spec = read_json(job_dir / "spec.json") or {}
    progress = read_json(job_dir / "progress.json") or {}
    final = read_json(job_dir / "status.json")
    # `launching` before `pid`: spawn writes the pid, then removes `launching`, so one of the two is always
    # seen (read the other way round, a spawn between the two reads looked like a worker that died at birth)
    launching = (job_dir / "launching").exists()
    pid_text = (job_dir / "pid").read_text().strip() if (job_dir / "pid").exists() else ""
    pid = int(pid_text) if pid_text.isdigit() else None
    alive = not final and _pid_alive(pid, job_dir)
    if not final and not alive:  # the worker writes its status, then exits: read again once it is seen gone
        final = read_json(job_dir / "status.json")
    if final:
        status, error = final["status"], final.get("error")
    elif alive:
        status, error = "running", None
    elif (job_dir / "cancel-requested").exists():  # SIGTERM before the worker's handler was installed ends it silently
        status, error = "cancelled", "cancelled by the user"
    elif launching:  # created, or being (re)launched: an old pid of a resumed job is not its death
        status, error = "queued", None
    else:
        status, error = "died", "the job's process ended without a final status (killed or crashed); resume to continue"
    return JobState(spec.get("run_id", job_dir.name), job_dir, status, error, progress, pid)


def create_job(ws: Workspace, kind: str, params: dict, *, run_id: str | None = None, **links) -> str:
    """Write the spec and the run row (status queued). Returns the run id.

    The folder is marked ``launching`` from the start: queued until a worker (spawned here, a chain's
    previous link, or any launcher's `job run DIR`) writes its pid — a poll between this and the spawn
    took a job not yet started for one that had died.
    `links` are the run's columns (model, dataset, split, source_run, instruction, backend, model_path):
    what later steps ask of the run is read from them, never fished out of the spec's JSON."""
    step_module(kind)
    run_id = run_id or new_run_id(kind)
    job_dir = ws.jobs_dir / run_id
    job_dir.mkdir(parents=True)
    (job_dir / "launching").touch()
    _write_json(job_dir / "spec.json", {"run_id": run_id, "kind": kind, "workspace": str(ws.root), **params})
    runs.create_run(ws, run_id, kind, config=params, job_dir=str(job_dir), **links)
    return run_id


def launch(ws: Workspace, run_id: str) -> int:
    """Start (or resume) the job's worker in its own session, so it outlives the app and the browser."""
    job_dir = ws.jobs_dir / run_id
    state = job_state(job_dir)
    if state.status == "running":
        raise WorkspaceError(f"run {run_id} is already running (pid {state.pid})")
    (job_dir / "launching").touch()  # before the old status goes: a poll in between sees it queued, not died
    (job_dir / "status.json").unlink(missing_ok=True)
    (job_dir / "cancel-requested").unlink(missing_ok=True)
    ingest(ws, run_id)  # a damaged shard is set aside before the worker looks, so the worker redoes its work
    proc = spawn(job_dir)
    runs.mark_launched(ws, run_id)
    _children.append(proc)  # reaped by sync_runs so a finished worker is not left a zombie
    return proc.pid


_children: list[subprocess.Popen] = []


def spawn(job_dir: Path) -> subprocess.Popen:
    """Start the worker process for a job folder (no database: a worker may start the next job of a chain).
    The folder is already marked ``launching`` (by create_job, or by launch for a resume)."""
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
    job_dir = ws.jobs_dir / run_id
    (job_dir / "cancel-requested").touch()
    pids = [_one_state(job_dir, w)[2] for w in job_dir.glob("workers/*-of-*")] or [state.pid]
    sent = False
    for pid in pids:  # K workers: each one of them (those on other machines are their launcher's to stop)
        if pid and _pid_alive(pid, job_dir):
            try:
                os.killpg(pid, signal.SIGTERM)
                sent = True
            except ProcessLookupError:  # started by a shell or scheduler, not the leader of its own group
                os.kill(pid, signal.SIGTERM)
                sent = True
            except PermissionError:
                pass
    return sent


def sync_runs(ws: Workspace, run_ids: list[str] | None = None) -> list[JobState]:
    """Ingest new shards and bring run rows in line with their jobs. The app calls this as it polls."""
    for proc in list(_children):
        if proc.poll() is not None:
            _children.remove(proc)
    if run_ids is None:
        run_ids = runs.active_run_ids(ws)
    states = []
    for run_id in run_ids:
        state = job_state(ws.jobs_dir / run_id)
        ingest(ws, run_id)
        if state.status == "running":  # started by another worker (an evaluation chain)
            runs.mark_running(ws, run_id)
        if state.status in FINAL or state.status == "died":
            status = "failed" if state.status == "died" else state.status
            if status == "done" and runs.set_aside_shards(ws, run_id):
                status = "failed"  # finished, but part of its output was damaged: the error names it
            runs.finish_run(ws, run_id, status, state.error)
            if status == "done":
                _on_done(ws, run_id)
        states.append(state)
    return states


def _on_done(ws: Workspace, run_id: str) -> None:
    """The kind's ``on_done`` hook (e.g. registering a trained model); its failure becomes the run's error."""
    kind = runs.run_kind(ws, run_id)
    hook = getattr(step_module(kind), "on_done", None) if kind else None
    if hook is None:
        return
    try:
        hook(ws, run_id)
    except Exception as e:
        runs.set_error(ws, run_id, f"after the job: {type(e).__name__}: {e}")


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
    out = []
    for run in runs.list_runs(ws, kind, limit):
        job_dir = ws.jobs_dir / run["run_id"]
        run["progress"] = (job_state(job_dir).progress if (job_dir / "workers").is_dir()
                           else read_json(job_dir / "progress.json") or {})
        out.append(run)
    return out


def read_log(ws: Workspace, run_id: str, tail_chars: int = 4000) -> str:
    path = ws.jobs_dir / run_id / "log.txt"
    if not path.exists():
        return ""
    with path.open("rb") as f:
        f.seek(max(0, path.stat().st_size - tail_chars))
        return f.read().decode(errors="replace")
