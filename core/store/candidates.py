"""Queries of `candidates`: a run's counts, the Sample page's table, one candidate, what a judge reads.

A candidate refers to its prompt by ``prompt_id``; the text is in `prompts`, once per distinct prompt.

The candidate browser's filters read derived columns (`chars`, `overall`, kept by core/store/derived.py),
so a filter over 800k candidates neither scans their texts nor aggregates their judgments.
"""

from __future__ import annotations

import hashlib
import json


def prompt_id(prompt: str) -> str:
    """The key of a prompt in `prompts`: its SHA-256 in hex, as DuckDB's ``sha256()`` gives it (the
    migration and old shards compute it in SQL)."""
    return hashlib.sha256(prompt.encode("utf-8")).hexdigest()


def run_counts(ws, run_id: str) -> dict:
    """Candidates, items, degenerate, with loops, mean tokens and finish reasons of one run."""
    cur = ws.cursor()
    n, items, degenerate, looped, tokens = cur.execute(
        "SELECT count(*), count(DISTINCT item_id), count(*) FILTER (degenerate), count(*) FILTER (has_loop), "
        "coalesce(avg(n_tokens), 0) FROM candidates WHERE run_id = ?", [run_id],
    ).fetchall()[0]
    reasons = dict(cur.execute(
        "SELECT finish_reason, count(*) FROM candidates WHERE run_id = ? GROUP BY 1 ORDER BY 1", [run_id]).fetchall())
    return {"candidates": n, "items": items, "degenerate": degenerate, "with_loops": looped,
            "mean_tokens": round(float(tokens), 1), "finish_reasons": reasons}


def list_candidates(ws, run_id: str, only_degenerate: bool = False, limit: int = 500):
    """The run's candidates for the table on the Sample page (newest items last).

    The page's rows are picked on narrow columns first, then only their texts are read (by primary
    key): a preview column in the ordered query read every text of the run (2.3 s at 800k).
    """
    cur = ws.cursor()
    ids = [r[0] for r in cur.execute(
        "SELECT candidate_id FROM candidates WHERE run_id = ?" + (" AND degenerate" if only_degenerate else "")
        + " ORDER BY item_id, sample_index LIMIT ?", [run_id, limit]).fetchall()]
    return cur.execute(
        "SELECT candidate_id, item_id, sample_index, degenerate, has_loop, finish_reason, n_tokens, "
        "coalesce(chars, length(text)) AS chars, left(replace(text, chr(10), ' '), 100) AS preview FROM candidates "
        f"WHERE candidate_id IN ({', '.join('?' * len(ids)) or 'NULL'}) ORDER BY item_id, sample_index", ids).df()


def get_candidate(ws, candidate_id: str) -> dict | None:
    """One candidate, every column, its prompt's text (``prompt``), its JSON columns parsed, and its item's
    page (``image_path``)."""
    cur = ws.cursor()
    row = cur.execute("SELECT c.*, p.prompt, i.image_path FROM candidates c LEFT JOIN prompts p USING (prompt_id) "
                      "LEFT JOIN items i ON i.dataset = c.dataset AND i.item_id = c.item_id "
                      "WHERE c.candidate_id = ?", [candidate_id]).fetchone()
    if row is None:
        return None
    cand = dict(zip([d[0] for d in cur.description], row))
    for key in ("loops", "metrics", "decoding"):
        cand[key] = json.loads(cand[key]) if cand[key] else ({} if key != "loops" else [])
    return cand


def for_judging(ws, sample_run: str):
    """A run's candidates with their documents and references, as an Arrow table (a judge job's input)."""
    return ws.cursor().sql(
        """SELECT c.candidate_id, c.text, c.degenerate, c.has_loop, i.text AS document, i.reference, i.image_path
           FROM candidates c JOIN items i USING (dataset, item_id) WHERE c.run_id = ? ORDER BY c.candidate_id""",
        params=[sample_run],
    ).to_arrow_table()
