"""The candidate browser: a run's candidates, filtered, and one candidate's judgments."""

from __future__ import annotations

from core.store import derived
from core.store import review as store


def candidate_runs(ws) -> list[str]:
    """Runs that have candidates (the candidate browser's choices)."""
    return store.candidate_runs(ws.cursor())


def candidates_frame(ws, run: str, has_loop: bool | None = None, finish_reasons: list[str] | None = None,
                     score: tuple[float, float] = (0.0, 1.0), chars: tuple[int, int] | None = None, limit: int = 2000):
    """The candidate browser's table: one row per candidate of a run with its latest overall score.

    Every filter reads narrow columns: `chars` and `overall` are derived once by the writer
    (core/store/derived.py), so a filter over 800k candidates neither scans their texts nor aggregates
    their judgments (3 s → well under 200 ms, bench/bench_candidates.py).
    """
    derived.refresh(ws, run)
    return store.candidates_frame(ws.cursor(), run, has_loop, finish_reasons, score, chars, limit)


def candidate_judgments(ws, candidate_id: str) -> list[dict]:
    """Every judgment of one candidate, oldest first."""
    return store.candidate_judgments(ws.cursor(), candidate_id)
