"""Columns the writer derives once so that pages filter 800k candidates without scanning their text.

``candidates.chars`` is ``length(text)`` and ``candidates.overall`` is the overall score of the
candidate's latest judgment (``last(overall ORDER BY created_at)``, what the candidate browser
shows). Computing either at query time costs a scan of every text (2.5 s on 800k candidates) or an
aggregation of every judgment (1.5 s); stored, a filter is a scan of a few narrow columns.

They are a cache, kept right three ways:

* the writer fills them as it ingests shards (``after_candidates``, ``after_judgments``: only the
  rows just added);
* ``meta['overall_at_judgments']`` holds the judgments count at which ``overall`` was last known
  right; judgments are only ever inserted, and ingest advances it, so a count that differs means
  judgments came in another way (a test's INSERT, an older Loopbreak) and ``refresh`` recomputes;
* ``refresh`` also fills any ``chars`` still NULL (a no-op scan of the NULL statistics otherwise).

A failure here never fails an ingest: the rows are in; the next ``refresh`` catches up.
"""

from __future__ import annotations

import duckdb

from core.store import write

META_KEY = "overall_at_judgments"
_LATEST = "SELECT candidate_id, last(overall ORDER BY created_at) AS overall FROM judgments {where} GROUP BY candidate_id"


def _synced(cur) -> int | None:
    rows = cur.execute("SELECT value FROM meta WHERE key = ?", [META_KEY]).fetchall()
    return int(rows[0][0]) if rows else None


def _set_synced(cur, n: int) -> None:
    cur.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", [META_KEY, str(n)])


def _quietly(ws, fn) -> bool:
    """Run `fn(cur)` through the write door; a failure rolls it back and is swallowed (the next refresh catches up)."""
    try:
        with write(ws) as cur:
            fn(cur)
        return True
    except duckdb.Error:
        return False


def after_candidates(ws, run_id: str) -> None:
    """Fill `chars` of the run's candidates just ingested (those still NULL)."""
    _quietly(ws, lambda cur: cur.execute(
        "UPDATE candidates SET chars = length(text) WHERE run_id = ? AND chars IS NULL", [run_id]))


def after_judgments(ws, files: list[str], before: int, added: int) -> None:
    """Set `overall` of the candidates the just-ingested judgment shards score; advance the sync mark
    if it was in step before them (else the next refresh recomputes everything)."""
    def work(cur):
        cur.execute(
            f"""UPDATE candidates c SET overall = j.overall FROM ({_LATEST.format(
                where='WHERE candidate_id IN (SELECT candidate_id FROM read_parquet(?))')}) j
                WHERE c.candidate_id = j.candidate_id""",
            [files],
        )
        if _synced(cur) == before:
            _set_synced(cur, before + added)
    _quietly(ws, work)


def refresh(ws, run_id: str | None = None) -> None:
    """Bring the derived columns up to date (cheap when they are: two small reads)."""
    cur = ws.cursor()
    if run_id is not None and cur.execute(
        "SELECT 1 FROM candidates WHERE run_id = ? AND chars IS NULL LIMIT 1", [run_id]
    ).fetchall():
        after_candidates(ws, run_id)
    n = cur.execute("SELECT count(*) FROM judgments").fetchall()[0][0]
    if _synced(cur) != n:
        def work(cur):
            cur.execute(f"""UPDATE candidates c SET overall = j.overall FROM ({_LATEST.format(where='')}) j
                            WHERE c.candidate_id = j.candidate_id AND c.overall IS DISTINCT FROM j.overall""")
            _set_synced(cur, n)
        _quietly(ws, work)
