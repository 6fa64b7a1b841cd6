"""Judging as a background job, and the queries the Judge page reads."""

from __future__ import annotations

import copy
import json
from dataclasses import asdict

from core.judges import JUDGES, make_judge
from core.judges.base import JudgeConfig, rubric_of


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
    cur = ws.cursor()
    if cfg.judge == "llm":
        if not cfg.judge_model:
            raise WorkspaceError("the llm judge needs a judge model")
        if cfg.backend != "openai":
            cfg.judge_model = resolve_model(cur, cfg.judge_model)["path"]
    table = cur.sql(
        """SELECT c.candidate_id, c.text, c.degenerate, c.has_loop, i.text AS document, i.reference
           FROM candidates c JOIN items i USING (dataset, item_id) WHERE c.run_id = ? ORDER BY c.candidate_id""",
        params=[sample_run],
    ).to_arrow_table()
    if table.num_rows == 0:
        raise WorkspaceError(f"run {sample_run!r} has no candidates to judge")
    if cfg.judge == "reference" and table.column("reference").null_count == table.num_rows:
        raise WorkspaceError("these items have no references: use the llm judge")
    dataset = cur.execute("SELECT dataset FROM runs WHERE run_id = ?", [sample_run]).fetchone()
    run_id = jobs.create_job(
        ws, "judge", {"config": asdict(cfg), "source_run": sample_run},
        model=cfg.judge_model or cfg.judge, dataset=dataset[0] if dataset else None, run_id=run_id,
    )
    import pyarrow.parquet as pq

    pq.write_table(table, ws.jobs_dir / run_id / "candidates.parquet")
    jobs.launch(ws, run_id)
    return run_id


def judge_runs_of(ws, sample_run: str) -> list[str]:
    """Judging runs over a sampling run, newest first."""
    rows = ws.cursor().execute(
        "SELECT run_id FROM runs WHERE kind = 'judge' AND json_extract_string(config, '$.source_run') = ? ORDER BY created_at DESC",
        [sample_run],
    ).fetchall()
    return [r[0] for r in rows]


def judgments_frame(ws, judge_run: str, sample: int | None = None):
    """One row per judged candidate: loop flags, overall, each criterion, error (for charts and mining).

    With `sample`, at most that many rows, a fixed random sample: the page's charts are distributions,
    and drawing 800k points (or parsing 800k score objects) took tens of seconds.
    """
    import pandas as pd

    sql = """SELECT j.candidate_id, c.item_id, c.dataset, c.degenerate, c.has_loop, c.finish_reason,
                    j.overall, j.scores, j.rationale, j.error
             FROM judgments j JOIN candidates c USING (candidate_id) WHERE j.run_id = ?"""
    if sample is not None:
        sql = f"SELECT * FROM ({sql}) USING SAMPLE reservoir({int(sample)} ROWS) REPEATABLE (42)"
    df = ws.cursor().execute(f"SELECT * FROM ({sql}) ORDER BY candidate_id", [judge_run]).df()
    scores = pd.json_normalize([json.loads(s) if s else {} for s in df.pop("scores")])
    return pd.concat([df, scores.add_prefix("score_")], axis=1)


_summaries: dict[tuple, dict] = {}


def judge_summary(ws, judge_run: str) -> dict:
    """Counts and mean scores of a judging run, in SQL (800k judgments through pandas took 18 s), kept per
    judgments count: the page reruns it, and judgments are only ever inserted."""
    cur = ws.cursor()
    key = (str(ws.db_path), judge_run, cur.execute("SELECT count(*) FROM judgments").fetchall()[0][0])
    if key not in _summaries:
        if len(_summaries) > 32:
            _summaries.clear()
        _summaries[key] = _judge_summary(cur, judge_run)
    return copy.deepcopy(_summaries[key])


def _judge_summary(cur, judge_run: str) -> dict:
    base = "FROM judgments j JOIN candidates c USING (candidate_id) WHERE j.run_id = ?"
    judged, errors, ok, mean = cur.execute(
        f"SELECT count(*), count(*) FILTER (j.error IS NOT NULL), count(*) FILTER (j.error IS NULL), "
        f"avg(j.overall) FILTER (j.error IS NULL) {base}", [judge_run],
    ).fetchall()[0]
    crit = dict(cur.execute(  # each criterion's mean, in the order the judge wrote them (json_each: names are never paths)
        f"""SELECT je.key, round(avg(TRY_CAST(json_extract_string(je.value, '$') AS DOUBLE)), 4)
            {base.replace("WHERE", ", json_each(j.scores) je WHERE")} AND j.error IS NULL AND j.scores IS NOT NULL
            GROUP BY je.key ORDER BY min(je.id), je.key""", [judge_run],
    ).fetchall())
    by_flag = cur.execute(
        f"SELECT c.degenerate, round(avg(j.overall), 4) {base} AND j.error IS NULL AND c.degenerate IS NOT NULL GROUP BY 1",
        [judge_run],
    ).fetchall()
    return {
        "run_id": judge_run, "judged": judged, "errors": errors,
        "mean_overall": round(float(mean), 4) if ok and mean is not None else None,
        "criteria": crit, "overall_by_degenerate": {str(k).lower(): v for k, v in by_flag},
    }
