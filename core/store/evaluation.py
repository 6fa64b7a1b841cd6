"""Queries of evaluation runs (runs of kind ``eval`` and their candidates): per run and decoding mode, per item, per loop."""

from __future__ import annotations

MODE_SQL = "CASE WHEN (c.decoding ->> '$.greedy') = 'true' THEN 'greedy' ELSE 'sampled' END"


def run_rows(ws, dataset: str | None = None, split: str | None = None) -> list[dict]:
    """One row per eval run and decoding mode (greedy / sampled): counts, mean quality and length, finish reasons."""
    sql = f"""
        SELECT c.run_id, r.model, coalesce(m.family, r.model) AS family, m.stage, r.dataset, r.split, r.status,
               {MODE_SQL} AS decoding, count(*) AS candidates, count(DISTINCT c.item_id) AS items,
               count(*) FILTER (c.degenerate) AS degenerate, count(*) FILTER (c.has_loop) AS with_loops,
               avg(c.quality) AS quality, avg(c.quality) FILTER (NOT c.degenerate) AS quality_clean,
               avg(c.n_tokens) AS mean_tokens,
               count(*) FILTER (c.finish_reason = 'stop') AS stop,
               count(*) FILTER (c.finish_reason = 'length') AS length,
               count(*) FILTER (c.finish_reason = 'repetition') AS repetition,
               r.created_at
        FROM candidates c JOIN runs r ON r.run_id = c.run_id LEFT JOIN models m ON m.name = r.model
        WHERE r.kind = 'eval'"""
    params: list = []
    if dataset:
        sql += " AND r.dataset = ?"
        params.append(dataset)
    if split:
        sql += " AND r.split = ?"
        params.append(split)
    cur = ws.cursor()
    cur.execute(sql + " GROUP BY ALL ORDER BY r.created_at, decoding", params)
    keys = [d[0] for d in cur.description]
    return [dict(zip(keys, row)) for row in cur.fetchall()]


def item_rates(ws, run_id: str, decoding: str = "greedy") -> dict[str, float]:
    """Per item: the share of its candidates (of that decoding mode) that degenerated."""
    rows = ws.cursor().execute(
        f"SELECT c.item_id, avg(c.degenerate::INT) FROM candidates c WHERE c.run_id = ? AND {MODE_SQL} = ? GROUP BY 1",
        [run_id, decoding],
    ).fetchall()
    return {i: float(v) for i, v in rows}


def degenerate_outputs(ws, run_id: str, limit: int = 200) -> list[dict]:
    """An eval run's degenerate candidates, longest loop first: what the user opens from the chart."""
    cur = ws.cursor()
    cur.execute(
        "SELECT candidate_id, item_id, sample_index, n_tokens, finish_reason, quality, "
        "left(replace(text, chr(10), ' '), 120) AS preview FROM candidates WHERE run_id = ? AND degenerate "
        "ORDER BY n_tokens DESC, item_id LIMIT ?", [run_id, limit],
    )
    keys = [d[0] for d in cur.description]
    return [dict(zip(keys, r)) for r in cur.fetchall()]


def degenerate_loops(ws, run_ids: list[str]) -> list[tuple]:
    """(model, stage, loops JSON) of every degenerate candidate of the runs."""
    return ws.cursor().execute(
        "SELECT r.model, m.stage, c.loops FROM candidates c JOIN runs r ON r.run_id = c.run_id "
        "LEFT JOIN models m ON m.name = r.model WHERE c.degenerate AND list_contains(?, c.run_id)", [run_ids],
    ).fetchall()
