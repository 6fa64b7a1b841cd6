"""One job mechanism for every long step: sampling, judging, training, evaluation.

Three rooms: ``worker`` (what runs in the job's process), ``control`` (the writer starting, cancelling,
following and reconciling jobs) and ``ingest`` (the writer taking a job's shards into the store).

A job is a folder ``<workspace>/jobs/<run_id>/``::

    spec.json       what to do (kind + parameters); the same file runs headless: `loopbreak job run DIR`
    launching       there from creation (and each relaunch) until a worker's pid is written: the job is queued
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

from core.jobs.control import (  # noqa: F401  the job mechanism's public face
    FINAL, JobState, cancel, cancel_queued, create_job, job_state, launch, list_runs, read_log, spawn, sync_runs, wait,
)
from core.jobs.ingestion import INGEST_BATCH_BYTES, ingest  # noqa: F401
from core.jobs.worker import (  # noqa: F401
    JOB_KINDS, SHARD_TABLES, JobCancelled, JobContext, cpu_threads, new_run_id, read_json, run_job, shard_problem,
)
