"""Candidate browser on a big workspace: p95 of the queries the Candidates page runs per filter change.

A filter change reruns the page (and the app's sidebar): the sidebar's counts, the list of runs,
and `candidates_frame` with the filters the user set — loop flag, finish reason, overall score,
length — then, when a row is selected, the candidate and its judgments. Each filter set below is
run `--repeats` times; the script prints p50/p95/max per query and over all, the p95 against the
200 ms target, and, measured in the same run, a floor (a bare `SELECT … WHERE run_id = ? LIMIT 2000`)
and the baseline: the query shape the page used before (`length(text)` and an aggregate over every
judgment, per query), `--old-repeats` times per filter.

    .venv/bin/python bench/bench_candidates.py --workspace /tmp/ws-big     # a workspace from gen_workspace.py
    .venv/bin/python bench/bench_candidates.py --items 100000             # generates one first (minutes)
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.gen_workspace import GenConfig, generate  # noqa: E402
from core.review.browse import candidate_judgments, candidate_runs, candidates_frame  # noqa: E402
from core.store.candidates import get_candidate  # noqa: E402
from core.store import counts, open_workspace  # noqa: E402

TARGET_MS = 200.0
FILTERS = [
    ("any", {}),
    ("looped", {"has_loop": True}),
    ("no loop", {"has_loop": False}),
    ("finish length", {"finish_reasons": ["length"]}),
    ("finish stop", {"finish_reasons": ["stop"]}),
    ("score 0–0.5", {"score": (0.0, 0.5)}),
    ("score 0.8–1", {"score": (0.8, 1.0)}),
    ("≤ 1,000 chars", {"chars": (0, 1000)}),
    ("no loop, ≤ 2,500 chars", {"has_loop": False, "chars": (0, 2500)}),
    ("looped, length, score ≤ 0.6", {"has_loop": True, "finish_reasons": ["length"], "score": (0.0, 0.6)}),
]


def old_frame(cur, run: str, has_loop=None, finish_reasons=None, score=(0.0, 1.0), chars=None, limit=2000):
    """The candidate browser's query before the derived columns (kept here as the baseline)."""
    where, params = ["c.run_id = ?"], [run]
    if has_loop is not None:
        where.append("c.has_loop = ?")
        params.append(has_loop)
    if finish_reasons:
        where.append("list_contains(?, c.finish_reason)")
        params.append(finish_reasons)
    if score != (0.0, 1.0):
        where.append("j.overall BETWEEN ? AND ?")
        params += list(score)
    if chars:
        where.append("length(c.text) BETWEEN ? AND ?")
        params += list(chars)
    return cur.execute(
        f"""SELECT c.candidate_id, c.item_id, c.sample_index, c.has_loop, c.degenerate, c.finish_reason, c.n_tokens,
                   length(c.text) AS chars, j.overall, r.model
            FROM candidates c LEFT JOIN runs r ON r.run_id = c.run_id
            LEFT JOIN (SELECT candidate_id, last(overall ORDER BY created_at) AS overall FROM judgments GROUP BY 1) j USING (candidate_id)
            WHERE {' AND '.join(where)} ORDER BY c.item_id, c.sample_index LIMIT ?""",
        params + [limit],
    ).df()


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[max(0, int(round(q * len(xs))) - 1)]


def ms(fn) -> tuple[float, object]:
    t = time.perf_counter()
    out = fn()
    return (time.perf_counter() - t) * 1000, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workspace", help="an existing workspace (from bench/gen_workspace.py)")
    ap.add_argument("--items", type=int, default=100_000, help="items to generate when no workspace is given")
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--old-repeats", type=int, default=2, help="runs per filter of the old query shape (0: skip)")
    args = ap.parse_args()
    root = Path(args.workspace) if args.workspace else Path(tempfile.mkdtemp(prefix="loopbreak-bench-cands-")) / "ws"
    if not args.workspace:
        generate(root, GenConfig(items=args.items))
    ws = open_workspace(root)
    cur = ws.cursor()
    n = cur.execute("SELECT count(*) FROM candidates").fetchall()[0][0]
    runs = candidate_runs(ws)
    run = runs[0]
    print(f"{n:,} candidates; run {run}")

    floor, frame, rerun, select = [], {name: [] for name, _ in FILTERS}, [], []
    rows: dict[str, int] = {}
    for r in range(args.repeats + 1):  # the first round warms up and is not counted
        for name, f in FILTERS:
            t_floor, _ = ms(lambda: cur.execute("SELECT candidate_id, item_id FROM candidates WHERE run_id = ? LIMIT 2000", [run]).fetchall())
            t_counts, _ = ms(lambda: counts(ws.cursor()))
            t_runs, _ = ms(lambda: candidate_runs(ws))
            t_frame, df = ms(lambda: candidates_frame(ws, run, **f))
            if len(df):
                cid = df.iloc[len(df) // 2]["candidate_id"]
                t_sel, _ = ms(lambda: (get_candidate(ws, cid), candidate_judgments(ws, cid)))
            else:
                t_sel = 0.0
            if r:
                floor.append(t_floor)
                frame[name].append(t_frame)
                rows[name] = len(df)
                rerun.append(t_counts + t_runs + t_frame)
                select.append(t_sel)
    old = []
    for _ in range(args.old_repeats):
        for name, f in FILTERS:
            t_old, df_old = ms(lambda: old_frame(cur, run, **f))
            old.append(t_old)
            assert list(df_old["candidate_id"]) == list(candidates_frame(ws, run, **f)["candidate_id"]), name
    ws.close()
    print(f"{'filter':32s} {'rows':>6s} {'p50 ms':>8s} {'p95 ms':>8s}")
    for name, f in FILTERS:
        print(f"{name:32s} {rows[name]:6d} {statistics.median(frame[name]):8.1f} {pct(frame[name], 0.95):8.1f}")
    allf = [t for ts in frame.values() for t in ts]
    print(f"candidates_frame, all filters: p50 {statistics.median(allf):.1f} ms · p95 {pct(allf, 0.95):.1f} ms · max {max(allf):.1f} ms")
    print(f"page rerun (sidebar counts + runs + frame): p50 {statistics.median(rerun):.1f} ms · p95 {pct(rerun, 0.95):.1f} ms")
    print(f"select a row (candidate + judgments): p50 {statistics.median(select):.1f} ms · p95 {pct(select, 0.95):.1f} ms")
    print(f"floor (bare SELECT … LIMIT 2000): p95 {pct(floor, 0.95):.1f} ms → frame p95 is {pct(allf, 0.95) / pct(floor, 0.95):.1f}× the floor")
    if old:
        print(f"baseline (the old query shape, same filters, same results): p50 {statistics.median(old):.0f} ms · p95 {pct(old, 0.95):.0f} ms "
              f"→ {pct(old, 0.95) / pct(allf, 0.95):.0f}× the p95 now")
    print(f"FILTER p95 = {pct(allf, 0.95):.0f} ms (target <= {TARGET_MS:.0f} ms; {pct(allf, 0.95) / TARGET_MS:.2f} × target); "
          f"whole rerun p95 = {pct(rerun, 0.95):.0f} ms")


if __name__ == "__main__":
    main()
