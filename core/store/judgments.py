"""Queries of `judgments` (one per judge run and candidate): the Judge page's frame and summary, and what mining reads."""

from __future__ import annotations

import json


def judgments_count(ws) -> int:
    return ws.cursor().execute("SELECT count(*) FROM judgments").fetchall()[0][0]


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


def judge_run_summary(ws, judge_run: str) -> dict:
    """Counts and mean scores of a judging run, in SQL (800k judgments through pandas took 18 s)."""
    cur = ws.cursor()
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


def judged_candidates(ws, judge_run: str):
    """What mining needs of each judged candidate, without its text, as an Arrow table: dataset, item_id,
    candidate_id, overall (NULL when the judgment is an error), degenerate, finish_reason. Through Arrow:
    a Python tuple per row of 800k was most of mining's time; texts are joined in SQL as pairs are written."""
    return ws.cursor().sql(
        """SELECT c.dataset, c.item_id, c.candidate_id, CASE WHEN j.error IS NULL THEN j.overall END AS overall,
                  coalesce(c.degenerate, false) AS degenerate, c.finish_reason
           FROM candidates c JOIN judgments j USING (candidate_id) WHERE j.run_id = $1""",
        params=[judge_run],
    ).to_arrow_table()
