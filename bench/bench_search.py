"""The Data page's text search at scale: p50/p95 of search_items (the page and its total) against the
old form measured in the same run (ILIKE on id, text and reference; a count query and a page query).

    .venv/bin/python bench/gen_workspace.py /tmp/ws-search --items 100000 --candidates 1 --no-pairs
    .venv/bin/python bench/bench_search.py /tmp/ws-search [--repeats 20]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

QUERIES = ["Parafuso", "parafuso sextavado", "NOTA FISCAL", "cnpj:60.739", "inv-0004231", "zzzz-not-there", "Ação", "[1]"]


def old_search(cur, dataset, query, limit=100, offset=0):
    """What the page ran before: ILIKE three times, the count and the page as two scans."""
    where = "dataset = ? AND (item_id ILIKE ? OR text ILIKE ? OR reference ILIKE ?)"
    like = f"%{query}%"
    params = [dataset, like, like, like]
    total = cur.execute(f"SELECT count(*) FROM items WHERE {where}", params).fetchone()[0]
    page = cur.execute(f"""SELECT dataset, split, item_id, length(text) AS chars, image_path IS NOT NULL AS has_image,
                              left(replace(text, chr(10), ' '), 120) AS preview FROM items WHERE {where}
                              ORDER BY dataset, split, item_id LIMIT ? OFFSET ?""", params + [limit, offset]).df()
    return page, total


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def main() -> int:
    from core.store import open_workspace
    from core.store.items import search_items

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("workspace")
    p.add_argument("--repeats", type=int, default=20)
    args = p.parse_args()
    ws = open_workspace(args.workspace, create=False)
    cur = ws.cursor()
    n, dataset = cur.execute("SELECT count(*), any_value(dataset) FROM items").fetchone()
    new_t, old_t, by_query = [], [], {q: [] for q in QUERIES}
    for r in range(args.repeats):
        for q in QUERIES:  # interleaved: both see the same machine
            t = time.perf_counter()
            _, total_new = search_items(cur, dataset=dataset, query=q, limit=100)
            new_t.append(time.perf_counter() - t)
            by_query[q].append(new_t[-1])
            t = time.perf_counter()
            _, total_old = old_search(cur, dataset, q)
            old_t.append(time.perf_counter() - t)
            assert total_new == total_old or "Ç" in q or "ç" in q, (q, total_new, total_old)
    print(f"{n:,} items · {len(QUERIES)} queries × {args.repeats}")
    print(f"{'':10} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8}")
    for name, xs in (("search", new_t), ("old ILIKE", old_t)):
        print(f"{name:10} {1000 * statistics.median(xs):8.0f} {1000 * pct(xs, 0.95):8.0f} {1000 * max(xs):8.0f}")
    ascii_ = [x for q, xs in by_query.items() if q.isascii() for x in xs]
    other = [x for q, xs in by_query.items() if not q.isascii() for x in xs]
    print(f"search, ASCII queries: p95 {1000 * pct(ascii_, 0.95):.0f} ms; with accents (RE2's UTF-8 path): p95 {1000 * pct(other, 0.95):.0f} ms")
    print(f"p95 ratio old/new: {pct(old_t, 0.95) / pct(new_t, 0.95):.2f}x (target: p95 <= 200 ms at 100k)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
