"""Judging as a background job: the writer freezes a sampling run's candidates (with documents and
references) into the job folder; the worker scores them with a judge (core.judges) and writes shards."""

from __future__ import annotations

import copy
import json
from dataclasses import asdict

from core.judges import JUDGES, make_judge
from core.judges.base import JudgeConfig, rubric_of
from core.store import candidates as store_candidates
from core.store import judgments as store_judgments
from core.store import runs


def run_job(ctx) -> None:
    import pyarrow.parquet as pq

    from core.store import now

    cfg = JudgeConfig(**ctx.spec["config"])
    cands = pq.read_table(ctx.dir / "candidates.parquet").to_pylist()
    prev = ctx.read_shards("judgments", columns=["candidate_id"])
    done = set(prev.column("candidate_id").to_pylist()) if prev is not None else set()
    todo = [c for c in cands if c["candidate_id"] not in done]
    ctx.progress(len(cands) - len(todo), len(cands), "loading the judge", unit="candidates")
    judge = make_judge(cfg)
    ctx.log(f"{len(todo)} of {len(cands)} candidates to judge with {cfg.judge}")
    finished = len(cands) - len(todo)
    errors = 0
    for start in range(0, len(todo), max(1, cfg.batch_size)):
        batch = todo[start : start + cfg.batch_size]
        rows = []
        for j in judge.judge(batch):
            errors += j.error is not None
            rows.append({
                "judgment_id": f"{ctx.run_id}:{j.candidate_id}", "run_id": ctx.run_id, "candidate_id": j.candidate_id,
                "judge": j.judge, "scores": json.dumps(j.scores), "overall": j.overall, "rationale": j.rationale,
                "error": j.error, "created_at": now(),
            })
        ctx.write_shard("judgments", rows)
        finished += len(batch)
        ctx.progress(finished, len(cands), f"{errors} judge errors" if errors else "", unit="candidates")


def start_judging(ws, sample_run: str, cfg: JudgeConfig, run_id: str | None = None) -> str:
    """Freeze the run's candidates (with their documents and references) into a judge job and launch it."""
    from core import jobs
    from core.store import WorkspaceError
    from core.store.models import resolve_model

    if cfg.judge not in JUDGES:
        raise WorkspaceError(f"unknown judge {cfg.judge!r}: choose one of {', '.join(JUDGES)}")
    try:
        rubric_of(cfg)
    except (TypeError, ValueError) as e:
        raise WorkspaceError(f"bad rubric: {e}") from None
    if cfg.judge == "llm":
        if not cfg.judge_model:
            raise WorkspaceError("the llm judge needs a judge model")
        if cfg.backend != "openai":
            cfg.judge_model = resolve_model(ws.cursor(), cfg.judge_model)["path"]
        if cfg.images not in ("auto", "on", "off"):
            raise WorkspaceError(f"images is auto, on or off (got {cfg.images!r})")
        if cfg.backend == "openai" and cfg.images == "auto":  # a server cannot be asked whether it reads images
            from core.loader import reads_images

            cfg.images = "on" if reads_images(cfg.judge_model) else "off"
    table = store_candidates.for_judging(ws, sample_run)
    if table.num_rows == 0:
        raise WorkspaceError(f"run {sample_run!r} has no candidates to judge")
    if cfg.judge == "reference" and table.column("reference").null_count == table.num_rows:
        raise WorkspaceError("these items have no references: use the llm judge")
    source = runs.get_run(ws, sample_run)
    run_id = jobs.create_job(
        ws, "judge", {"config": asdict(cfg), "source_run": sample_run},
        model=cfg.judge_model or cfg.judge, dataset=source["dataset"] if source else None, run_id=run_id,
        source_run=sample_run, backend=cfg.backend if cfg.judge == "llm" else None,
    )
    import pyarrow.parquet as pq

    pq.write_table(table, ws.jobs_dir / run_id / "candidates.parquet")
    jobs.launch(ws, run_id)
    return run_id


_summaries: dict[tuple, dict] = {}


def judge_summary(ws, judge_run: str) -> dict:
    """Counts and mean scores of a judging run, in SQL (800k judgments through pandas took 18 s), kept per
    judgments count: the page reruns it, and judgments are only ever inserted."""
    key = (str(ws.db_path), judge_run, store_judgments.judgments_count(ws))
    if key not in _summaries:
        if len(_summaries) > 32:
            _summaries.clear()
        _summaries[key] = store_judgments.judge_run_summary(ws, judge_run)
    return copy.deepcopy(_summaries[key])
