"""The candidate browser's queries."""

from __future__ import annotations

import json

from core.store import derived


def candidate_runs(ws) -> list[str]:
    """Runs that have candidates (the candidate browser's choices), without a DISTINCT over every candidate."""
    return [r[0] for r in ws.cursor().execute(
        "SELECT run_id FROM runs r WHERE EXISTS (SELECT 1 FROM candidates c WHERE c.run_id = r.run_id) ORDER BY 1"
    ).fetchall()]


def candidates_frame(ws, run: str, has_loop: bool | None = None, finish_reasons: list[str] | None = None,
                     score: tuple[float, float] = (0.0, 1.0), chars: tuple[int, int] | None = None, limit: int = 2000):
    """The candidate browser's table: one row per candidate of a run with its latest overall score.

    Every filter reads narrow columns: `chars` and `overall` are derived once by the writer
    (core/derived.py), so a filter over 800k candidates neither scans their texts nor aggregates
    their judgments (3 s → well under 200 ms, bench/bench_candidates.py).
    """
    cur = ws.cursor()
    derived.refresh(cur, run)
    where, params = ["c.run_id = ?"], [run]
    if has_loop is not None:
        where.append("c.has_loop = ?")
        params.append(has_loop)
    if finish_reasons:
        where.append("list_contains(?, c.finish_reason)")
        params.append(finish_reasons)
    if score != (0.0, 1.0):
        where.append("c.overall BETWEEN ? AND ?")
        params += list(score)
    if chars:
        where.append("c.chars BETWEEN ? AND ?")
        params += list(chars)
    return cur.execute(
        f"""SELECT c.candidate_id, c.item_id, c.sample_index, c.has_loop, c.degenerate, c.finish_reason, c.n_tokens,
                   c.chars, c.overall, r.model
            FROM candidates c LEFT JOIN runs r ON r.run_id = c.run_id
            WHERE {' AND '.join(where)} ORDER BY c.item_id, c.sample_index LIMIT ?""",
        params + [limit],
    ).df()


def candidate_judgments(ws, candidate_id: str) -> list[dict]:
    rows = ws.cursor().execute(
        "SELECT run_id, judge, overall, scores, rationale, error FROM judgments WHERE candidate_id = ? ORDER BY created_at", [candidate_id]
    ).fetchall()
    return [{"judge_run": r[0], "judge": r[1], "overall": r[2], "scores": json.loads(r[3]) if r[3] else {}, "rationale": r[4], "error": r[5]}
            for r in rows]
